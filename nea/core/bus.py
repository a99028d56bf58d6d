"""The bus joins instances into one server.

The hub talks to other instances only through a `Bus`. `LocalBus` is the
single-instance server (no other instances; everything is delivered in-process);
`MemoryCluster` joins several hubs in one process for tests; the Redis bus in
`nea.cluster` joins instances across processes and hosts.
"""

import random
from typing import Callable, Protocol as TypingProtocol

from nea.core.snapshot import MemberFigures
from nea.wire.frames import BroadcastPush, ChatPush, Presence

#: How many times a relay may bounce off an instance that had no taker before the
#: origin stops asking the cluster and settles for a local target.
MAX_DELIVERY_ATTEMPTS = 5


class RelayNode(TypingProtocol):
    """The relay side of an instance that a bus calls (`nea.core.broker.RelayBroker`).

    Each step of a relay has one name, the same on the bus and on the node:
    ``deliver`` goes to the target's instance, ``confirm`` (the target's ``ok``)
    and ``reforward`` (the target could not take it, or left) go back to the origin.
    """

    def relay_weight(self) -> int:
        """Relay-capable connections on this instance."""

    def deliver(self, text: str, origin: str, attempt: int) -> None:
        """Forward ``message text`` to one local relay-capable connection."""

    def confirm(self, text: str) -> None:
        """``ok text`` came back for relays this instance originated."""

    def reforward(self, text: str, attempt: int) -> None:
        """A delivery of ``text`` failed; draw a new target if someone still waits."""


class ChatNode(TypingProtocol):
    """The chat side of an instance that a bus calls (`nea.core.chat.ChatRoom`)."""

    def fan_out(self, push: ChatPush | BroadcastPush | Presence) -> int:
        """Chat, an operator broadcast or a room's join or leave from another instance:
        deliver it locally."""


#: This instance's figures as the cluster sees them, read when the bus needs them.
Figures = Callable[[], MemberFigures]


class Bus(TypingProtocol):
    instance_id: str

    def attach(self, relays: RelayNode, chat: ChatNode, figures: Figures) -> None: ...

    def pick_relay_instance(self, rng: random.Random) -> str | None:
        """An instance, drawn with weight = its relay-capable connections; None if none."""

    def deliver(self, instance: str, text: str, origin: str, attempt: int) -> None: ...

    def confirm(self, origin: str, text: str) -> None: ...

    def reforward(self, origin: str, text: str, attempt: int) -> None: ...

    def publish(self, push: ChatPush | BroadcastPush | Presence) -> None:
        """Send chat/broadcast/presence to every other instance (the chat room fans out locally itself)."""

    def others(self) -> list[MemberFigures]:
        """The other live members, as last announced."""

    def state(self) -> str:
        """``standalone``, ``connected`` or ``degraded`` (cluster configured, Redis unreachable)."""


class LocalBus:
    """The bus of a single-instance server: this instance is the whole cluster."""

    def __init__(self, instance_id: str) -> None:
        self.instance_id = instance_id
        self._relays: RelayNode | None = None

    def attach(self, relays: RelayNode, chat: ChatNode, figures: Figures) -> None:
        self._relays = relays

    def pick_relay_instance(self, rng: random.Random) -> str | None:
        return self.instance_id if self._relays.relay_weight() else None

    def deliver(self, instance: str, text: str, origin: str, attempt: int) -> None:
        self._relays.deliver(text, origin, attempt)

    def confirm(self, origin: str, text: str) -> None:
        self._relays.confirm(text)

    def reforward(self, origin: str, text: str, attempt: int) -> None:
        self._relays.reforward(text, attempt)

    def publish(self, push: ChatPush | BroadcastPush | Presence) -> None:
        pass

    def others(self) -> list[MemberFigures]:
        return []

    def state(self) -> str:
        return "standalone"


class _Node:
    __slots__ = ("relays", "chat", "figures")

    def __init__(self, relays: RelayNode, chat: ChatNode, figures: Figures) -> None:
        self.relays, self.chat, self.figures = relays, chat, figures


class MemoryCluster:
    """Several hubs in one process joined as a cluster, for tests of cluster semantics.

    Counts are read live (no heartbeat lag), so it shows what the Redis bus
    approximates.
    """

    def __init__(self) -> None:
        self.nodes: dict[str, _Node] = {}

    def bus(self, instance_id: str) -> "MemoryBus":
        return MemoryBus(self, instance_id)


class MemoryBus:
    def __init__(self, cluster: MemoryCluster, instance_id: str) -> None:
        self.cluster = cluster
        self.instance_id = instance_id

    def attach(self, relays: RelayNode, chat: ChatNode, figures: Figures) -> None:
        self.cluster.nodes[self.instance_id] = _Node(relays, chat, figures)

    def pick_relay_instance(self, rng: random.Random) -> str | None:
        return weighted_pick(
            {name: node.relays.relay_weight() for name, node in self.cluster.nodes.items()}, rng
        )

    def deliver(self, instance: str, text: str, origin: str, attempt: int) -> None:
        self.cluster.nodes[instance].relays.deliver(text, origin, attempt)

    def confirm(self, origin: str, text: str) -> None:
        node = self.cluster.nodes.get(origin)
        if node is not None:
            node.relays.confirm(text)

    def reforward(self, origin: str, text: str, attempt: int) -> None:
        node = self.cluster.nodes.get(origin)
        if node is not None:
            node.relays.reforward(text, attempt)

    def publish(self, push: ChatPush | BroadcastPush | Presence) -> None:
        for name, node in list(self.cluster.nodes.items()):
            if name != self.instance_id:
                node.chat.fan_out(push)

    def others(self) -> list[MemberFigures]:
        return [node.figures() for name, node in self.cluster.nodes.items()
                if name != self.instance_id]

    def state(self) -> str:
        return "connected"


def weighted_pick(weights: dict[str, int], rng: random.Random) -> str | None:
    """A key drawn with probability proportional to its weight; None if all are zero.

    Drawing an instance by its share of connections, then a connection uniformly
    within it, draws a connection uniformly over the whole cluster.
    """
    total = sum(w for w in weights.values() if w > 0)
    if total == 0:
        return None
    point = rng.randrange(total)
    for name, weight in sorted(weights.items()):
        if weight <= 0:
            continue
        if point < weight:
            return name
        point -= weight
    raise AssertionError("unreachable: point < total")
