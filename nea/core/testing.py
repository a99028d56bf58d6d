"""In-memory stand-ins for tests of the core (and of anything built on it)."""

import itertools
import random
from collections.abc import Set
from typing import Any

from twisted.internet import defer

from nea.core.bus import ChatNode, Figures, RelayNode, RequestNode, held_here, newest, weighted_pick
from nea.core.snapshot import MemberFigures
from nea.wire import codec, frames
from nea.wire.frames import BroadcastPush, ChatPush, Encoding, Presence
from nea.wire.profiles import NEA, Profile

_ids = itertools.count(1)


class FakePeer:
    """A `nea.core.peer.Peer` that records what it was sent."""

    def __init__(
        self, profile: Profile = NEA, encoding: Encoding = Encoding.TEXT, name: str | None = None
    ) -> None:
        """``name``: it has given its name already (a chat-profile client is in the room)."""
        self.id = f"f{next(_ids)}"
        self.name = name or self.id
        self.profile = profile
        self.encoding = encoding
        self.identity = None
        self.token = None
        self.peer_address = "127.0.0.1:0"
        self.since = 0.0
        self.named = name is not None
        self.bytes_in = self.bytes_out = 0
        self.lines: list[bytes] = []
        self.closed = False
        self.aborted = False

    def send(self, line: bytes) -> None:
        self.lines.append(line)

    def push(self, push: frames.Push) -> None:
        self.send(codec.encode_push(push, self.encoding, self.profile.room))

    def push_parts(self, kind: codec.LanePush, *parts) -> None:
        self.send(codec.encode_parts(kind, parts, self.encoding))

    def close(self) -> None:
        self.closed = True

    def abort(self) -> None:
        self.aborted = True

    def ping(self) -> bool:
        if frames.Ping not in self.profile.allowed:
            return False
        self.push(frames.PingPush())
        return True

    @property
    def pushes(self) -> list[frames.Push]:
        return [codec.decode_push(line.rstrip(b"\n")) for line in self.lines]

    def take(self) -> list[frames.Push]:
        """The pushes received since the last call."""
        pushes = self.pushes
        self.lines.clear()
        return pushes


class _Node:
    __slots__ = ("relays", "chat", "figures", "requests")

    def __init__(
        self, relays: RelayNode, chat: ChatNode, figures: Figures, requests: RequestNode
    ) -> None:
        self.relays, self.chat, self.figures, self.requests = relays, chat, figures, requests


class MemoryCluster:
    """Several hubs in one process joined as a cluster, for tests of cluster semantics.

    Counts are read live (no heartbeat lag), so it shows what the Redis bus
    approximates.
    """

    def __init__(self) -> None:
        self.nodes: dict[str, _Node] = {}
        #: Each instance's identified chat nicks: nick -> identity.
        self.nicks: dict[str, dict[str, str]] = {}

    def bus(self, instance_id: str) -> "MemoryBus":
        return MemoryBus(self, instance_id)

    def kill(self, instance_id: str) -> None:
        """``instance_id`` vanishes at once (kill -9): the others hear it is gone."""
        del self.nodes[instance_id]
        for node in list(self.nodes.values()):
            node.requests.instance_gone(instance_id)


class MemoryBus:
    def __init__(self, cluster: MemoryCluster, instance_id: str) -> None:
        self.cluster = cluster
        self.instance_id = instance_id

    def attach(
        self, relays: RelayNode, chat: ChatNode, figures: Figures, requests: RequestNode
    ) -> None:
        self.cluster.nodes[self.instance_id] = _Node(relays, chat, figures, requests)

    def pick_relay_instance(self, rng: random.Random) -> str | None:
        return weighted_pick(
            {name: node.relays.relay_weight() for name, node in self.cluster.nodes.items()}, rng
        )

    def deliver(self, instance: str, text: str, origin: str, attempt: int, relay: str) -> None:
        self.cluster.nodes[instance].relays.deliver(text, origin, attempt, relay)

    def confirm(self, origin: str, relay: str) -> None:
        node = self.cluster.nodes.get(origin)
        if node is not None:
            node.relays.confirm(relay)

    def reforward(self, origin: str, relay: str, attempt: int) -> None:
        node = self.cluster.nodes.get(origin)
        if node is not None:
            node.relays.reforward(relay, attempt)

    def publish(self, push: ChatPush | BroadcastPush | Presence) -> None:
        for name, node in list(self.cluster.nodes.items()):
            if name != self.instance_id:
                node.chat.fan_out(push)

    def others(self) -> list[MemberFigures]:
        return [
            node.figures() for name, node in self.cluster.nodes.items() if name != self.instance_id
        ]

    def unanswered(self) -> int:
        return 0  # calls are direct: what is out is held by the target instance's broker

    def state(self) -> str:
        return "connected"

    def register(self, name: str, stamp: float) -> None:
        for instance, node in list(self.cluster.nodes.items()):
            if instance != self.instance_id:
                node.requests.claim(name, stamp, self.instance_id)

    def unregister(self, name: str) -> None:
        pass

    def hold_nick(self, nick: str, identity: str) -> None:
        self.cluster.nicks.setdefault(self.instance_id, {})[nick] = identity

    def release_nick(self, nick: str) -> None:
        self.cluster.nicks.get(self.instance_id, {}).pop(nick, None)

    def nick_identities(self, nick: str) -> defer.Deferred:
        return defer.succeed(
            {
                nicks[nick]
                for instance, nicks in self.cluster.nicks.items()
                if instance != self.instance_id and nick in nicks
            }
        )

    def find_client(self, name: str) -> defer.Deferred:
        stamps = {
            instance: node.requests.has_name(name) for instance, node in self.cluster.nodes.items()
        }
        found = [(stamp, instance) for instance, stamp in stamps.items() if stamp is not None]
        return defer.succeed(max(found)[1] if found else None)

    def name_holder(self, name: str) -> defer.Deferred:
        held = [
            (stamp, node.requests.holder(name))
            for node in self.cluster.nodes.values()
            if (stamp := node.requests.has_name(name)) is not None
        ]
        if not held:
            return defer.succeed((False, None))
        holder = max(held, key=lambda entry: entry[0])[1]
        assert holder is not None  # a name registered on an instance is held there
        return defer.succeed((True, holder.identity))

    def clients(self) -> defer.Deferred:
        nodes = self.cluster.nodes
        held = newest({instance: node.requests.local_names() for instance, node in nodes.items()})
        return defer.succeed(
            {
                name: held_here(instance, nodes[instance].requests, name)
                for name, instance in held.items()
            }
        )

    def pick_member_instance(self, service: str, rng: random.Random, skip: Set[str]) -> str | None:
        return weighted_pick(
            {
                instance: node.requests.member_weight(service)
                for instance, node in self.cluster.nodes.items()
                if instance not in skip
            },
            rng,
        )

    def offer(self, instance: str, offer: Any) -> None:
        node = self.cluster.nodes.get(instance)
        if node is None:
            self.cluster.nodes[self.instance_id].requests.instance_gone(instance)
        else:
            node.requests.offer(offer)

    def answer(self, origin: str, rid: str, body: Any) -> None:
        node = self.cluster.nodes.get(origin)
        if node is not None:
            node.requests.answer(rid, body, self.instance_id)

    def refuse(self, origin: str, rid: str, code: str) -> None:
        node = self.cluster.nodes.get(origin)
        if node is not None:
            node.requests.refuse(rid, code, self.instance_id)
