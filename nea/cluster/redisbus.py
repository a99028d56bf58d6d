"""`RedisBus`: the `nea.core.bus.Bus` of an instance in a cluster that shares Redis.

Routing (see `nea.cluster.names` for the key and channel layout):

- A relay target instance is drawn with weight = its relay-capable connections
  (this instance's live count, the others' from their last heartbeat), and the
  instance draws a connection uniformly: uniform over the cluster's connections.
- ``deliver``/``ack``/``reforward`` to another instance are PUBLISHed on its
  inbox channel; to this instance they are direct calls (no Redis hop).
- Chat and broadcasts are published on the cluster channel; the hub has already
  delivered them locally, so an instance ignores its own publications.

Not losing relays. Pub/sub is fire-and-forget, so the origin keeps the deliveries
it published to each other instance (`nea.cluster.outstanding.Outstanding`) until
their ack or re-forward comes back. When that instance is gone (heartbeat
expired or a new run, a leave notice, or PUBLISH reached nobody), the origin
draws new targets for what it still had there. A delivery may so be made twice
(at least once, never lost); a second ``ok`` finds nobody waiting and is quiet.

Degraded (Redis unreachable): the state is ``degraded``, other instances are
forgotten (their outstanding deliveries are re-forwarded here), targets are drawn
among local connections only, and chat stays local. Every reconnection starts a
new ``run``, so the others also recover what they sent here meanwhile.
"""

import functools
import random
import uuid

from twisted.logger import Logger

from nea.cluster import envelope, heartbeat, record
from nea.cluster.envelope import Confirm, Deliver, Event, Leave, Reforward
from nea.cluster.members import Member, MemberTable
from nea.cluster.outstanding import Outstanding
from nea.cluster.names import Namespace
from nea.core.bus import ChatNode, Figures, RelayNode, weighted_pick
from nea.core.snapshot import MemberFigures
from nea.wire.frames import BroadcastPush, ChatPush, Presence

log = Logger()


class RedisBus:
    def __init__(self, instance_id: str, namespace: Namespace, interval: float,
                 encode_record=record.encode) -> None:
        """``encode_record(run, figures)``: the heartbeat record this instance announces
        (another version's, in tests of mixed-version clusters)."""
        self.instance_id = instance_id
        self.encode_record = encode_record
        self.namespace = namespace
        self.interval = interval
        self.link = None  # a nea.cluster.redislink.RedisLink, set by nea.cluster.service
        self.run = ""
        self.table = MemberTable()
        self.outstanding = Outstanding()
        self._relays: RelayNode | None = None
        self._chat: ChatNode | None = None
        self._figures: Figures | None = None
        self._twin_reported = False
        #: ``(member, record version)`` pairs already logged as unreadable.
        self._incompatible_reported: set[tuple[str, int]] = set()

    @property
    def channels(self) -> list[str]:
        return [self.namespace.inbox(self.instance_id), self.namespace.cluster]

    @property
    def up(self) -> bool:
        return self.link is not None and self.link.up

    # ---- nea.core.bus.Bus ----

    def attach(self, relays: RelayNode, chat: ChatNode, figures: Figures) -> None:
        self._relays, self._chat, self._figures = relays, chat, figures

    def pick_relay_instance(self, rng: random.Random) -> str | None:
        weights = {self.instance_id: self._relays.relay_weight()}
        if self.up:
            weights.update(self.table.weights())
        return weighted_pick(weights, rng)

    def deliver(self, instance: str, text: str, origin: str, attempt: int) -> None:
        if instance == self.instance_id:
            self._relays.deliver(text, origin, attempt)
            return
        member = self.table.members.get(instance)
        self.outstanding.add(instance, text)
        if member is None or not self.up:
            self._recover(instance)
            return
        self._send(instance, Deliver(text, origin, attempt),
                   functools.partial(self._check_reached, instance, member.run))

    def confirm(self, origin: str, text: str) -> None:
        if origin == self.instance_id:
            self._relays.confirm(text)
        else:
            self._send(origin, Confirm(text))

    def reforward(self, origin: str, text: str, attempt: int) -> None:
        if origin == self.instance_id:
            self._relays.reforward(text, attempt)
        else:
            self._send(origin, Reforward(text, attempt))

    def publish(self, push: ChatPush | BroadcastPush | Presence) -> None:
        if self.up:  # when degraded, local delivery (already done by the hub) is all there is
            self._publish(self.namespace.cluster, Event(push))

    def others(self) -> list[MemberFigures]:
        return self.table.figures() if self.up else []

    def state(self) -> str:
        return "connected" if self.up else "degraded"

    # ---- sending ----

    def _send(self, instance: str, message: envelope.Message, reached=None) -> None:
        self._publish(self.namespace.inbox(instance), message, reached)

    def _publish(self, channel: str, message: envelope.Message, reached=None) -> None:
        # Unsent while the link is down, or lost with it: link_down recovers what was out.
        self.link.publish(channel, envelope.encode(self.instance_id, message), reached)

    def _check_reached(self, instance: str, run: str, receivers: int) -> None:
        if receivers == 0 and self.up:
            if self.table.remove(instance, run):
                log.info("cluster member {member} stopped listening: given up", member=instance)
            self._recover(instance)

    def _recover(self, instance: str) -> None:
        """``instance`` is gone: draw new targets for what it had not settled."""
        for text in self.outstanding.take(instance):
            self._relays.reforward(text, 0)

    # ---- nea.cluster.redislink.LinkListener ----

    def link_up(self) -> None:
        self.run = uuid.uuid4().hex[:12]

    def link_down(self) -> None:
        self.table.clear()
        for instance in self.outstanding.instances():
            self._recover(instance)

    def received(self, channel: str, data: str) -> None:
        try:
            sender, message = envelope.decode(data)
        except ValueError as e:
            log.warn("ignored on {channel}: {error}", channel=channel, error=str(e))
            return
        if sender == self.instance_id:
            return  # our own chat/broadcast/leave, already handled here
        if isinstance(message, Deliver):
            self._relays.deliver(message.text, message.origin, message.attempt)
        elif isinstance(message, Confirm):
            self.outstanding.answered(sender, message.text)
            self._relays.confirm(message.text)
        elif isinstance(message, Reforward):
            self.outstanding.answered(sender, message.text)
            if message.attempt > 0:  # it had nobody to take it: stop drawing it until it beats
                self.table.emptied(sender)
            self._relays.reforward(message.text, message.attempt)
        elif isinstance(message, Event):
            self._chat.fan_out(message.push)
        elif isinstance(message, Leave):
            if self.table.remove(sender, message.run):
                log.info("cluster member {member} left", member=sender)
            self._recover(sender)

    def beat(self, redis):
        """Announce this instance and refresh the member table (one heartbeat)."""
        announced = self.encode_record(self.run, self._figures())
        found = heartbeat.beat(redis, self.namespace, self.instance_id, announced, self.interval)
        return found.addCallback(self.discovered)

    def discovered(self, records: dict[str, str]) -> None:
        """Take the records a beat read from Redis: who joined, who is gone."""
        seen = {}
        for name, data in records.items():
            try:
                announced = record.decode(name, data)
            except ValueError as e:
                log.warn("ignored member {member}: {error}", member=name, error=str(e))
                continue
            if name == self.instance_id:
                if announced.run != self.run and not self._twin_reported:
                    self._twin_reported = True
                    log.error("another instance also calls itself {member}", member=name)
                continue
            if not announced.compatible:
                self._report_incompatible(name, announced.record_version)
            weight = announced.figures.relay_weight if announced.compatible else 0
            seen[name] = Member(announced.run, announced.figures, weight)
        joined = set(seen) - set(self.table.members)
        for instance in self.table.update(seen):
            log.info("cluster member {member} is gone", member=instance)
            self._recover(instance)
        for instance in sorted(joined & set(self.table.members)):
            log.info("cluster member {member} joined", member=instance)

    def _report_incompatible(self, name: str, version: int) -> None:
        if (name, version) not in self._incompatible_reported:
            self._incompatible_reported.add((name, version))
            log.warn(
                "cluster member {member} announces heartbeat record version {version}; this"
                " instance reads up to {known}: it is kept as a member but sent no relays",
                member=name, version=version, known=record.VERSION,
            )

    def leave(self, redis):
        """Withdraw this instance's heartbeat and tell the others at once."""
        withdrawn = heartbeat.withdraw(redis, self.namespace, self.instance_id)
        return withdrawn.addCallback(
            lambda _: redis.publish(self.namespace.cluster, self._leave_notice())
        )

    def _leave_notice(self) -> str:
        return envelope.encode(self.instance_id, Leave(self.run))
