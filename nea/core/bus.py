"""The bus joins instances into one server.

The hub talks to other instances only through a `Bus`. `LocalBus` is the
single-instance server (no other instances; everything is delivered in-process);
the Redis bus in `nea.cluster` joins instances across processes and hosts
(`nea.core.testing.MemoryCluster` joins several hubs in one process, for tests).
"""

import random
from collections.abc import Callable, Set
from typing import Any
from typing import Protocol as TypingProtocol

import attrs
from twisted.internet import defer

from nea.core.peer import Peer
from nea.core.snapshot import MemberFigures
from nea.wire.frames import BroadcastPush, ChatPush, Presence

#: How many times a relay may bounce off an instance that had no taker before the
#: origin stops asking the cluster and falls back to a local target.
MAX_DELIVERY_ATTEMPTS = 5


class RelayNode(TypingProtocol):
    """The relay side of an instance that a bus calls (`nea.core.broker.RelayBroker`).

    Each step of a relay has one name, the same on the bus and on the node:
    ``deliver`` goes to the target's instance, ``confirm`` (the target's ``ok``)
    and ``reforward`` (the target could not take it, or left) go back to the origin.
    ``relay`` is the id the origin gave the relay: an ok answers that relay only.
    """

    def relay_weight(self) -> int:
        """Relay-capable connections on this instance."""

    def deliver(self, text: str, origin: str, attempt: int, relay: str) -> None:
        """Forward ``message text`` to one local relay-capable connection."""

    def confirm(self, relay: str) -> None:
        """The ``ok`` came back for a relay this instance originated."""

    def reforward(self, relay: str, attempt: int) -> None:
        """A delivery of ``relay`` failed; draw a new target if it is still waited for."""


class RequestNode(TypingProtocol):
    """The request side of an instance that a bus calls (`nea.core.requests.RequestBroker`).

    ``offer`` goes to the target's instance; ``answer`` (the client's reply) and
    ``refuse`` go back to the origin; ``claim`` goes to every other instance.
    """

    def offer(self, offer: Any) -> None:
        """Push a `nea.core.requests.Offer` to the named connection or a member."""

    def answer(self, rid: str, body: Any, instance: str) -> None:
        """The reply to ``rid``, from a client on ``instance``."""

    def refuse(self, rid: str, code: str, instance: str) -> None:
        """``instance`` could not take ``rid``, or its client left before replying."""

    def claim(self, name: str, stamp: float, instance: str) -> None:
        """``name`` was registered on ``instance`` at ``stamp``."""

    def instance_gone(self, instance: str) -> None:
        """``instance`` left the cluster."""

    def holder(self, name: str) -> Peer | None:
        """The local connection registered as ``name``, if any."""

    def has_name(self, name: str) -> float | None:
        """When ``name`` was registered on this instance, or None."""

    def local_names(self) -> dict[str, float]:
        """Every name registered here, with when."""

    def member_weight(self, service: str) -> int:
        """Local members of ``service``."""


class ChatNode(TypingProtocol):
    """The chat side of an instance that a bus calls (`nea.core.chat.ChatRoom`)."""

    def fan_out(self, push: ChatPush | BroadcastPush | Presence) -> int:
        """Chat, an operator broadcast or a room's join or leave from another instance:
        deliver it locally."""

    def checkpoint(self) -> None:
        """The bus completed a round trip (a heartbeat): what was published before has arrived."""

    def outage(self) -> None:
        """The bus is down: what other instances publish meanwhile is lost."""

    def rejoined(self) -> None:
        """The bus is up again after an outage: catch the local clients up."""


#: This instance's figures as the cluster sees them, read when the bus needs them.
Figures = Callable[[], MemberFigures]


class Bus(TypingProtocol):
    instance_id: str

    def attach(
        self, relays: RelayNode, chat: ChatNode, figures: Figures, requests: RequestNode
    ) -> None: ...

    def pick_relay_instance(self, rng: random.Random) -> str | None:
        """An instance, drawn with weight = its relay-capable connections; None if none."""

    def deliver(self, instance: str, text: str, origin: str, attempt: int, relay: str) -> None: ...

    def confirm(self, origin: str, relay: str) -> None: ...

    def reforward(self, origin: str, relay: str, attempt: int) -> None: ...

    def publish(self, push: ChatPush | BroadcastPush | Presence) -> None:
        """Send chat/broadcast/presence to every other instance (the chat room fans out
        locally itself)."""

    def others(self) -> list[MemberFigures]:
        """The other live members, as last announced."""

    def unanswered(self) -> int:
        """Deliveries sent to other instances whose confirmation or re-forward is still due."""

    def register(self, name: str, stamp: float) -> None:
        """``name`` is registered here from ``stamp`` on: record it, and claim it everywhere."""

    def unregister(self, name: str) -> None:
        """``name`` is no longer registered here."""

    def hold_nick(self, nick: str, identity: str) -> None:
        """A client here identified as ``identity`` chats as ``nick``: nobody else may."""

    def release_nick(self, nick: str) -> None:
        """No client here chats as ``nick`` under an identity any more."""

    def nick_identities(self, nick: str) -> defer.Deferred:
        """Fires with the identities that hold ``nick`` on the other instances (a set)."""

    def find_client(self, name: str) -> defer.Deferred:
        """The instance where ``name`` is registered (the newest registration), or None."""

    def name_holder(self, name: str) -> defer.Deferred:
        """Fires with ``(held, identity)``: whether ``name`` is registered anywhere in the
        cluster, and the identity of its newest holder (None: an anonymous client)."""

    def clients(self) -> defer.Deferred:
        """``{name: Holding}`` of every registered name in the cluster."""

    def pick_member_instance(self, service: str, rng: random.Random, skip: Set[str]) -> str | None:
        """An instance not in ``skip``, drawn with weight = its members of ``service``."""

    def offer(self, instance: str, offer: Any) -> None: ...

    def answer(self, origin: str, rid: str, body: Any) -> None: ...

    def refuse(self, origin: str, rid: str, code: str) -> None: ...

    def state(self) -> str:
        """``standalone``, ``connected`` or ``degraded`` (cluster configured, Redis unreachable)."""


class LocalBus:
    """The bus of a single-instance server: this instance is the whole cluster."""

    def __init__(self, instance_id: str) -> None:
        self.instance_id = instance_id
        # The hub's nodes, set by attach() before any use (the Bus protocol).
        self._relays: RelayNode
        self._requests: RequestNode

    def attach(
        self, relays: RelayNode, chat: ChatNode, figures: Figures, requests: RequestNode
    ) -> None:
        self._relays, self._requests = relays, requests

    def pick_relay_instance(self, rng: random.Random) -> str | None:
        return self.instance_id if self._relays.relay_weight() else None

    def deliver(self, instance: str, text: str, origin: str, attempt: int, relay: str) -> None:
        self._relays.deliver(text, origin, attempt, relay)

    def confirm(self, origin: str, relay: str) -> None:
        self._relays.confirm(relay)

    def reforward(self, origin: str, relay: str, attempt: int) -> None:
        self._relays.reforward(relay, attempt)

    def publish(self, push: ChatPush | BroadcastPush | Presence) -> None:
        pass

    def others(self) -> list[MemberFigures]:
        return []

    def unanswered(self) -> int:
        return 0

    def state(self) -> str:
        return "standalone"

    def register(self, name: str, stamp: float) -> None:
        pass

    def unregister(self, name: str) -> None:
        pass

    def hold_nick(self, nick: str, identity: str) -> None:
        pass

    def release_nick(self, nick: str) -> None:
        pass

    def nick_identities(self, nick: str) -> defer.Deferred:
        return defer.succeed(set())  # there are no other instances

    def find_client(self, name: str) -> defer.Deferred:
        here = self._requests.has_name(name) is not None
        return defer.succeed(self.instance_id if here else None)

    def name_holder(self, name: str) -> defer.Deferred:
        holder = self._requests.holder(name)
        return defer.succeed((holder is not None, holder.identity if holder else None))

    def clients(self) -> defer.Deferred:
        return defer.succeed(
            {
                name: held_here(self.instance_id, self._requests, name)
                for name in self._requests.local_names()
            }
        )

    def pick_member_instance(self, service: str, rng: random.Random, skip: Set[str]) -> str | None:
        if self.instance_id in skip or not self._requests.member_weight(service):
            return None
        return self.instance_id

    def offer(self, instance: str, offer: Any) -> None:
        self._requests.offer(offer)

    def answer(self, origin: str, rid: str, body: Any) -> None:
        self._requests.answer(rid, body, self.instance_id)

    def refuse(self, origin: str, rid: str, code: str) -> None:
        self._requests.refuse(rid, code, self.instance_id)


@attrs.frozen
class Holding:
    """Where a registered name is held in the cluster, and by whom (None: anonymous)."""

    instance: str
    identity: str | None = None


def held_here(instance: str, requests: "RequestNode", name: str) -> Holding:
    holder = requests.holder(name)
    return Holding(instance, holder.identity if holder is not None else None)


def newest(names_of: dict[str, dict[str, float]]) -> dict[str, str]:
    """``{name: instance}`` from each instance's ``{name: registered at}``: where a name is
    registered twice (a takeover on its way), the newer registration."""
    best: dict[str, tuple[float, str]] = {}
    for instance, names in names_of.items():
        for name, stamp in names.items():
            if name not in best or best[name] < (stamp, instance):
                best[name] = (stamp, instance)
    return {name: instance for name, (_, instance) in sorted(best.items())}


def weighted_pick(weights: dict[str, int], rng: random.Random) -> str | None:
    """A key drawn with probability proportional to its weight; None if all are zero.

    Drawing an instance by its share of connections, then a connection uniformly
    within it, draws a connection uniformly over the whole cluster.
    """
    total = 0
    for weight in weights.values():
        if weight > 0:
            total += weight
    if total == 0:
        return None
    # Once per relay in a cluster: random() scaled (as `IndexedSet.choice`), in the
    # dict's own order, not randrange() over a sorted copy.
    point = int(rng.random() * total)
    for name, weight in weights.items():
        if weight > 0:
            if point < weight:
                return name
            point -= weight
    raise AssertionError("unreachable: point < total")
