"""The bus joins instances into one server.

The hub talks to other instances only through a `Bus`. `LocalBus` is the
single-instance server (no other instances; everything is delivered in-process);
`MemoryCluster` joins several hubs in one process for tests; the Redis bus in
`nea.cluster` joins instances across processes and hosts.
"""

import random
from typing import Any, Protocol as TypingProtocol

from nea.wire.frames import BroadcastPush, ChatPush

#: How many times a relay may bounce off an instance that had no taker before the
#: origin stops asking the cluster and settles for a local target.
MAX_DELIVERY_ATTEMPTS = 5


class BusNode(TypingProtocol):
    """The side of a hub that a bus delivers to (implemented by `nea.core.hub.Hub`)."""

    instance_id: str

    def relay_count(self) -> int:
        """Relay-capable connections on this instance."""

    def summary(self) -> dict[str, Any]:
        """This instance's figures, announced to the other members."""

    def on_deliver(self, text: str, origin: str, attempt: int) -> None:
        """Forward ``message text`` to one local relay-capable connection."""

    def on_ack(self, text: str) -> None:
        """``ok text`` came back for relays this instance originated."""

    def on_reforward(self, text: str, attempt: int) -> None:
        """A delivery of ``text`` failed; draw a new target if someone still waits."""

    def on_event(self, push: ChatPush | BroadcastPush) -> None:
        """Chat or an operator broadcast from another instance: deliver it locally."""


class Bus(TypingProtocol):
    instance_id: str

    def attach(self, node: BusNode) -> None: ...

    def pick_relay_instance(self, rng: random.Random) -> str | None:
        """An instance, drawn with weight = its relay-capable connections; None if none."""

    def deliver(self, instance: str, text: str, origin: str, attempt: int) -> None: ...

    def ack(self, origin: str, text: str) -> None: ...

    def reforward(self, origin: str, text: str, attempt: int) -> None: ...

    def publish(self, push: ChatPush | BroadcastPush) -> None:
        """Send chat/broadcast to every other instance (the hub delivers locally itself)."""

    def members(self) -> list[dict[str, Any]]:
        """The live members with their last announced summaries, this one included."""

    def state(self) -> str:
        """``standalone``, ``connected`` or ``degraded`` (cluster configured, Redis unreachable)."""


class LocalBus:
    """The bus of a single-instance server: this instance is the whole cluster."""

    def __init__(self, instance_id: str) -> None:
        self.instance_id = instance_id
        self._node: BusNode | None = None

    def attach(self, node: BusNode) -> None:
        self._node = node

    def pick_relay_instance(self, rng: random.Random) -> str | None:
        return self.instance_id if self._node.relay_count() else None

    def deliver(self, instance: str, text: str, origin: str, attempt: int) -> None:
        self._node.on_deliver(text, origin, attempt)

    def ack(self, origin: str, text: str) -> None:
        self._node.on_ack(text)

    def reforward(self, origin: str, text: str, attempt: int) -> None:
        self._node.on_reforward(text, attempt)

    def publish(self, push: ChatPush | BroadcastPush) -> None:
        pass

    def members(self) -> list[dict[str, Any]]:
        return [self._node.summary()]

    def state(self) -> str:
        return "standalone"


class MemoryCluster:
    """Several hubs in one process joined as a cluster, for tests of cluster semantics.

    Counts are read live (no heartbeat lag), so it shows what the Redis bus
    approximates.
    """

    def __init__(self) -> None:
        self.nodes: dict[str, BusNode] = {}

    def bus(self, instance_id: str) -> "MemoryBus":
        return MemoryBus(self, instance_id)


class MemoryBus:
    def __init__(self, cluster: MemoryCluster, instance_id: str) -> None:
        self.cluster = cluster
        self.instance_id = instance_id

    def attach(self, node: BusNode) -> None:
        self.cluster.nodes[self.instance_id] = node

    def pick_relay_instance(self, rng: random.Random) -> str | None:
        return weighted_pick(
            {name: node.relay_count() for name, node in self.cluster.nodes.items()}, rng
        )

    def deliver(self, instance: str, text: str, origin: str, attempt: int) -> None:
        self.cluster.nodes[instance].on_deliver(text, origin, attempt)

    def ack(self, origin: str, text: str) -> None:
        node = self.cluster.nodes.get(origin)
        if node is not None:
            node.on_ack(text)

    def reforward(self, origin: str, text: str, attempt: int) -> None:
        node = self.cluster.nodes.get(origin)
        if node is not None:
            node.on_reforward(text, attempt)

    def publish(self, push: ChatPush | BroadcastPush) -> None:
        for name, node in list(self.cluster.nodes.items()):
            if name != self.instance_id:
                node.on_event(push)

    def members(self) -> list[dict[str, Any]]:
        return [node.summary() for node in self.cluster.nodes.values()]

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
