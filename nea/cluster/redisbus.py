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
(at least once, never lost); a second ``ok`` finds its relay answered and is quiet.
Each delivery names its relay by the id its origin gave it, so an ``ok`` answers
the one relay whose delivery was acked.

Requests (`nea.core.requests`). A name lives in this instance's names hash
(`nea.cluster.names`), written when it is registered and expiring with the
heartbeat; a registration also publishes a ``claim``, so an older holder of the
name on another instance is told ``name_taken_over`` at once. A request to a
name looks the name up in the live members' hashes (one HGET each, the newest
registration wins) and is offered straight to that instance. A member of a
service is drawn like a relay target, with each instance weighted by its
members of that service (its heartbeat's ``services``). Answers and refusals go
back to the origin's inbox. When an instance is gone, the origin hears it
(`RequestNode.instance_gone`): a request to a name there fails ``client_gone``,
one to a service is drawn again.

Degraded (Redis unreachable): the state is ``degraded``, other instances are
forgotten (their outstanding deliveries are re-forwarded here), targets are drawn
among local connections only, and chat stays local. Every reconnection starts a
new ``run``, so the others also recover what they sent here meanwhile. The chat
node hears each completed heartbeat, the outage and the return, and catches its
clients up on the chat they missed (`nea.core.chat`).
"""

import functools
import random
import uuid
from collections.abc import Set

from twisted.internet import defer
from twisted.logger import Logger

from nea.cluster import envelope, heartbeat, record
from nea.cluster.envelope import Answer, Claim, Event, Leave, Offer, Refuse
from nea.cluster.members import Member, MemberTable
from nea.cluster.names import Namespace
from nea.cluster.outstanding import Outstanding
from nea.cluster.redislink import RedisLink
from nea.core.bus import (
    ChatNode,
    Figures,
    Holding,
    RelayNode,
    RequestNode,
    held_here,
    newest,
    weighted_pick,
)
from nea.core.snapshot import MemberFigures
from nea.wire.frames import BroadcastPush, ChatPush, Presence

log = Logger()


class RedisBus:
    def __init__(
        self, instance_id: str, namespace: Namespace, interval: float, encode_record=record.encode
    ) -> None:
        """``encode_record(run, figures)``: the heartbeat record this instance announces
        (another version's, in tests of mixed-version clusters)."""
        self.instance_id = instance_id
        self.encode_record = encode_record
        self.namespace = namespace
        self.interval = interval
        self.link: RedisLink | None = None  # set by nea.cluster.service
        self.run = ""
        self.table = MemberTable()
        self.outstanding = Outstanding()
        # The hub's nodes, set by attach() before the link starts (nea.core.bus.Bus).
        self._relays: RelayNode
        self._chat: ChatNode
        self._figures: Figures
        self._requests: RequestNode
        #: Names registered (their stamp) or released (None) here, not yet written to Redis.
        self._name_changes: dict[str, float | None] = {}
        #: The identified chat nicks held here (nick -> identity), written again on link_up.
        self._nicks: dict[str, str] = {}
        self._twin_reported = False
        #: ``(member, record version)`` pairs already logged as unreadable.
        self._incompatible_reported: set[tuple[str, int]] = set()
        #: How to send to each member's current run, made once, not per message.
        self._routes: dict[str, _Route] = {}
        self._ack_head = envelope.confirm_head(instance_id)

    @property
    def channels(self) -> list[str]:
        return [self.namespace.inbox(self.instance_id), self.namespace.cluster]

    @property
    def up(self) -> bool:
        return self.link is not None and self.link.up

    # ---- nea.core.bus.Bus ----

    def attach(
        self, relays: RelayNode, chat: ChatNode, figures: Figures, requests: RequestNode
    ) -> None:
        self._relays, self._chat, self._figures = relays, chat, figures
        self._requests = requests

    def pick_relay_instance(self, rng: random.Random) -> str | None:
        here = self._relays.relay_weight()
        if self.up:
            return weighted_pick({**self.table.weights(), self.instance_id: here}, rng)
        return weighted_pick({self.instance_id: here}, rng)

    def deliver(self, instance: str, text: str, origin: str, attempt: int, relay: str) -> None:
        if instance == self.instance_id:
            self._relays.deliver(text, origin, attempt, relay)
            return
        member = self.table.members.get(instance)
        self.outstanding.add(instance, relay)
        link = self.link
        if member is None or link is None or not link.up:
            self._recover(instance)
            return
        route = self._route(instance, member)
        line = envelope.deliver(self.instance_id, text, origin, attempt, relay)
        link.publish(route.inbox, line, route.reached)

    def confirm(self, origin: str, relay: str) -> None:
        if origin == self.instance_id:
            self._relays.confirm(relay)
        else:  # the turn's acks to one origin share a line
            route = self._routes.get(origin)
            inbox = route.inbox if route is not None else self.namespace.inbox(origin)
            self._link().publish_word(inbox, self._ack_head, envelope.word(relay))

    def reforward(self, origin: str, relay: str, attempt: int) -> None:
        if origin == self.instance_id:
            self._relays.reforward(relay, attempt)
        else:
            line = envelope.reforward(self.instance_id, relay, attempt)
            self._link().publish(self.namespace.inbox(origin), line)

    def publish(self, push: ChatPush | BroadcastPush | Presence) -> None:
        if self.up:  # when degraded, local delivery (already done by the hub) is all there is
            self._publish(self.namespace.cluster, Event(push))

    def others(self) -> list[MemberFigures]:
        return self.table.figures() if self.up else []

    def unanswered(self) -> int:
        return len(self.outstanding)

    def state(self) -> str:
        return "connected" if self.up else "degraded"

    # ---- requests ----

    @property
    def _redis(self):
        return self.link.commands if self.link is not None else None

    def register(self, name: str, stamp: float) -> None:
        if self.up:  # else written, and claimed, when the link is up again
            self._name_changed(name, stamp)
            self._publish(self.namespace.cluster, Claim(name, stamp))

    def unregister(self, name: str) -> None:
        if self.up:
            self._name_changed(name, None)

    def hold_nick(self, nick: str, identity: str) -> None:
        self._nicks[nick] = identity
        redis = self._redis
        if self.up and redis is not None:  # else written when the link is up again
            self._write_nicks(redis, {nick: identity})

    def release_nick(self, nick: str) -> None:
        self._nicks.pop(nick, None)
        redis = self._redis
        if self.up and redis is not None:
            _quietly(redis.execute_command("HDEL", self.namespace.nicks(self.instance_id), nick))

    def _write_nicks(self, redis, nicks: dict[str, str]) -> None:
        key = self.namespace.nicks(self.instance_id)
        _quietly(redis.execute_command("HSET", key, *(x for item in nicks.items() for x in item)))
        _quietly(redis.execute_command("PEXPIRE", key, heartbeat.ttl_ms(self.interval)))

    def nick_identities(self, nick: str) -> defer.Deferred:
        instances = sorted(i for i in self.table.members if i != self.instance_id)
        redis = self._redis
        if redis is None or not instances:
            return defer.succeed(set())
        found = defer.gatherResults(
            [redis.execute_command("HGET", self.namespace.nicks(i), nick) for i in instances],
            consumeErrors=True,
        )
        return found.addCallbacks(
            lambda values: {_text(v) for v in values if v is not None}, lambda failure: set()
        )

    def _name_changed(self, name: str, stamp: float | None) -> None:
        """Write the names hash at the end of the reactor turn: a client that registers
        name after name costs one HSET and one HDEL per read, not per line."""
        first = not self._name_changes
        self._name_changes[name] = stamp
        if first:
            assert self.link is not None  # names change only while the link is up
            self.link.reactor.callLater(0, self._write_name_changes)

    def _write_name_changes(self) -> None:
        changes, self._name_changes = self._name_changes, {}
        redis = self._redis
        if redis is None or not changes:
            return  # the link went down: link_up writes the whole hash again
        removed = [name for name, stamp in changes.items() if stamp is None]
        if removed:
            _quietly(
                redis.execute_command("HDEL", self.namespace.names(self.instance_id), *removed)
            )
        added = {name: stamp for name, stamp in changes.items() if stamp is not None}
        if added:
            self._write_names(redis, added)

    def _write_names(self, redis, names: dict[str, float]) -> None:
        """Each name's field holds its registration time, then its holder's identity if any."""
        key = self.namespace.names(self.instance_id)
        fields = [
            item
            for name, stamp in names.items()
            for item in (name, _held(stamp, self._requests.holder(name)))
        ]
        _quietly(redis.execute_command("HSET", key, *fields))
        _quietly(redis.execute_command("PEXPIRE", key, heartbeat.ttl_ms(self.interval)))

    def find_client(self, name: str) -> defer.Deferred:
        if self._requests.has_name(name) is not None:
            return defer.succeed(self.instance_id)
        instances = sorted(self.table.members)
        redis = self._redis
        if redis is None or not instances:
            return defer.succeed(None)
        found = defer.gatherResults(
            [redis.execute_command("HGET", self.namespace.names(i), name) for i in instances],
            consumeErrors=True,
        )

        def newest_live(stamps) -> str | None:
            found_at = {i: _stamp(s) for i, s in zip(instances, stamps, strict=True)}
            held = {i: {name: stamp} for i, stamp in found_at.items() if stamp is not None}
            instance = newest(held).get(name)
            return instance if instance in self.table.members else None

        return found.addCallbacks(newest_live, lambda failure: None)

    def name_holder(self, name: str) -> defer.Deferred:
        holder = self._requests.holder(name)
        if holder is not None:
            return defer.succeed((True, holder.identity))
        instances = sorted(self.table.members)
        redis = self._redis
        if redis is None or not instances:
            return defer.succeed((False, None))
        found = defer.gatherResults(
            [redis.execute_command("HGET", self.namespace.names(i), name) for i in instances],
            consumeErrors=True,
        )

        def newest_holder(values) -> tuple[bool, str | None]:
            held = [(stamp, _identity(v)) for v in values if (stamp := _stamp(v)) is not None]
            return (True, max(held, key=lambda entry: entry[0])[1]) if held else (False, None)

        return found.addCallbacks(newest_holder, lambda failure: (False, None))

    def clients(self) -> defer.Deferred:
        instances = sorted(i for i in self.table.members if i != self.instance_id)
        redis = self._redis
        stamps = {self.instance_id: self._requests.local_names()}
        identities: dict[str, dict[str, str | None]] = {}

        def held(_=None) -> dict[str, Holding]:
            return {
                name: Holding(instance, identities[instance][name])
                if instance in identities
                else held_here(instance, self._requests, name)
                for name, instance in newest(stamps).items()
            }

        if redis is None or not instances:
            return defer.succeed(held())
        found = defer.gatherResults(
            [redis.hgetall(self.namespace.names(i)) for i in instances], consumeErrors=True
        )

        def merged(hashes) -> None:
            for instance, names in zip(instances, hashes, strict=True):
                stamps[instance], identities[instance] = {}, {}
                for name, value in names.items():
                    stamp = _stamp(value)
                    if stamp is not None:
                        stamps[instance][name] = stamp
                        identities[instance][name] = _identity(value)

        return found.addCallbacks(merged, lambda failure: None).addCallback(held)

    def pick_member_instance(self, service: str, rng: random.Random, skip: Set[str]) -> str | None:
        weights = {self.instance_id: self._requests.member_weight(service)}
        if self.up:
            weights.update(
                {name: m.figures.services.get(service, 0) for name, m in self.table.members.items()}
            )
        return weighted_pick({i: w for i, w in weights.items() if i not in skip}, rng)

    def offer(self, instance: str, offer: Offer) -> None:
        if instance == self.instance_id:
            self._requests.offer(offer)
            return
        member = self.table.members.get(instance)
        if member is None or not self.up:
            self._requests.instance_gone(instance)
            return
        self._send(instance, offer, self._route(instance, member).reached)

    def answer(self, origin: str, rid: str, body) -> None:
        if origin == self.instance_id:
            self._requests.answer(rid, body, self.instance_id)
        else:
            self._send(origin, Answer(rid, body))

    def refuse(self, origin: str, rid: str, code: str) -> None:
        if origin == self.instance_id:
            self._requests.refuse(rid, code, self.instance_id)
        else:
            self._send(origin, Refuse(rid, code))

    # ---- sending ----

    def _send(self, instance: str, message: envelope.Message, reached=None) -> None:
        self._publish(self.namespace.inbox(instance), message, reached)

    def _publish(self, channel: str, message: envelope.Message, reached=None) -> None:
        self._link().publish(channel, envelope.encode(self.instance_id, message), reached)

    def _link(self) -> RedisLink:
        # Unsent while the link is down, or lost with it: link_down recovers what was out.
        assert self.link is not None, "nea.cluster.service sets the link before it starts"
        return self.link

    def _route(self, instance: str, member: Member) -> "_Route":
        route = self._routes.get(instance)
        if route is None or route.run != member.run:
            reached = functools.partial(self._check_reached, instance, member.run)
            route = self._routes[instance] = _Route(
                member.run, self.namespace.inbox(instance), reached
            )
        return route

    def _check_reached(self, instance: str, run: str, receivers: int) -> None:
        if receivers == 0 and self.up:
            if self.table.remove(instance, run):
                log.info("cluster member {member} stopped listening: given up", member=instance)
            self._recover(instance)

    def _recover(self, instance: str) -> None:
        """``instance`` is gone: draw new targets for what it had not answered."""
        for relay in self.outstanding.take(instance):
            self._relays.reforward(relay, 0)
        self._requests.instance_gone(instance)

    # ---- nea.cluster.redislink.LinkListener ----

    def link_up(self) -> None:
        self.run = uuid.uuid4().hex[:12]
        self._chat.rejoined()
        # The names registered meanwhile (or before a restart of Redis): written, and claimed.
        names = self._requests.local_names()
        self._name_changes = {}
        redis = self._redis
        _quietly(
            redis.delete(
                self.namespace.names(self.instance_id), self.namespace.nicks(self.instance_id)
            )
        )
        if self._nicks:
            self._write_nicks(redis, self._nicks)
        if names:
            self._write_names(redis, names)
            for name, stamp in names.items():
                self._publish(self.namespace.cluster, Claim(name, stamp))

    def link_down(self) -> None:
        self._chat.outage()
        gone = {*self.table.members, *self.outstanding.instances()}
        self.table.clear()
        for instance in sorted(gone):
            self._recover(instance)

    def received(self, channel: str, data: str) -> None:
        """A PUBLISH from another instance: a batch of messages, one per line (what is not
        UTF-8 never comes here: `nea.cluster.subscriber`)."""
        for line in data.split("\n"):
            try:
                envelope.read(line, self)
            except envelope.Malformed as e:
                log.warn("ignored on {channel}: {error}", channel=channel, error=str(e))
            except Exception:
                log.failure("dropped a cluster message on {channel}", channel=channel)

    # ---- nea.cluster.envelope.Receiver ----

    def delivered(self, sender: str, text: str, origin: str, attempt: int, relay: str) -> None:
        self._relays.deliver(text, origin, attempt, relay)

    def confirmed(self, sender: str, relays: list[str]) -> None:
        answered, confirm = self.outstanding.answered, self._relays.confirm  # once per line
        for relay in relays:
            answered(sender, relay)
            confirm(relay)

    def reforwarded(self, sender: str, relay: str, attempt: int) -> None:
        self.outstanding.answered(sender, relay)
        if attempt > 0:  # it had nobody to take it: stop drawing it until it beats
            self.table.emptied(sender)
        self._relays.reforward(relay, attempt)

    def heard(self, sender: str, message: envelope.Message) -> None:
        if sender == self.instance_id:
            return  # our own chat/broadcast/leave, already handled here
        if isinstance(message, Event):
            self._chat.fan_out(message.push)
        elif isinstance(message, Offer):
            self._requests.offer(message)
        elif isinstance(message, Answer):
            self._requests.answer(message.id, message.body, sender)
        elif isinstance(message, Refuse):
            self._requests.refuse(message.id, message.code, sender)
        elif isinstance(message, Claim):
            self._requests.claim(message.name, message.stamp, sender)
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
        self._chat.checkpoint()
        joined = set(seen) - set(self.table.members)
        for instance in self.table.update(seen):
            log.info("cluster member {member} is gone", member=instance)
            self._recover(instance)
        for instance in self._routes.keys() - self.table.members.keys():
            del self._routes[instance]
        for instance in sorted(joined & set(self.table.members)):
            log.info("cluster member {member} joined", member=instance)

    def _report_incompatible(self, name: str, version: int) -> None:
        if (name, version) not in self._incompatible_reported:
            self._incompatible_reported.add((name, version))
            log.warn(
                "cluster member {member} announces heartbeat record version {version}; this"
                " instance's is {known}: it is kept as a member but sent no relays",
                member=name,
                version=version,
                known=record.VERSION,
            )

    def leave(self, redis):
        """Withdraw this instance's heartbeat, then tell the others: the notice goes
        out on the publishing connection, after what was published before it."""
        withdrawn = heartbeat.withdraw(redis, self.namespace, self.instance_id)
        return withdrawn.addCallback(
            lambda _: self._publish(self.namespace.cluster, Leave(self.run))
        )


class _Route:
    """How this instance sends to one member's run: its inbox, and what a PUBLISH there
    calls with its receiver count (one callable per run, so that a batch of deliveries
    checks once: `nea.cluster.batch`)."""

    __slots__ = ("run", "inbox", "reached")

    def __init__(self, run: str, inbox: str, reached: functools.partial) -> None:
        self.run, self.inbox, self.reached = run, inbox, reached


def _held(stamp: float, holder) -> str:
    """A names hash field: the registration time, and the holder's identity if it has one."""
    identity = holder.identity if holder is not None else None
    return repr(stamp) if identity is None else f"{stamp!r} {identity}"


def _stamp(value) -> float | None:
    """A registration time as read from a names hash; None for none (or garbage)."""
    try:
        return float(value.split()[0]) if value else None
    except (ValueError, AttributeError):
        return None


def _identity(value) -> str | None:
    """The holder's identity as read from a names hash field; None: anonymous."""
    parts = value.split(None, 1)
    return _text(parts[1]) if len(parts) == 2 else None


def _text(value) -> str:
    """A hash field's value as text (txredisapi may hand bytes)."""
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else value


def _quietly(written: defer.Deferred) -> None:
    """A write whose failure needs no handling: the link is going down, and what the
    names hash should hold is written again when it is up (`RedisBus.link_up`)."""
    written.addErrback(lambda failure: None)
