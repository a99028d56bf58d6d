"""The crossing relay's path without sockets or Redis: CPU per exchange in nea's own code.

Like `hot_path.py`, relay-profile `NeaConnection`s on in-memory transports send
``message X`` and their targets ``ok X``, and only nea's own calls are timed (CPU
time, so other processes on the machine do not count). Two setups, in turns:

- one: one hub on a `RedisBus` alone in its cluster, all the connections on it,
  so every relay is local (the bus as ``--redis`` runs it);
- two: two hubs on `RedisBus`es, half the connections each, whose links pass
  each PUBLISH (a batch, `nea.cluster.batch`, flushed at the end of the turn)
  straight to the other bus's ``received``; targets are drawn over both, so half
  the relays cross.

A crossing relay costs 2 x two - one, as in `cluster.py`; what it adds to a local
one here is the bus, the envelope and the batches, without txredisapi, the
sockets and Redis (measured by `cluster.py`).

    .venv/bin/python bench/crossing_path.py [--exchanges 100000] [--repeat 3]
        [--connections 50 --per-read 20]
"""

import argparse
import random

from hot_path import exchange
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport

from nea.cluster import record
from nea.cluster.batch import Batcher
from nea.cluster.names import Namespace
from nea.cluster.redisbus import RedisBus
from nea.core.hub import Hub
from nea.server.connection import ConnectionLimits, NeaFactory
from nea.wire import profiles

NS = Namespace("bench")


class MemoryLink:
    """A `RedisLink` whose PUBLISHes land in ``wire``, batched per turn of ``clock``."""

    def __init__(self, clock: Clock, wire: list) -> None:
        self.up = True
        self.reactor = clock
        self.wire = wire
        self._batcher = Batcher(clock, self._send)

    def publish(self, channel: str, data: str, reached=None) -> None:
        self._batcher.publish(channel, data, reached)

    def publish_word(self, channel: str, head: str, word: str) -> None:
        self._batcher.publish_word(channel, head, word)

    def _send(self, channel: str, data: str, told) -> None:
        self.wire.append((channel, data))
        if told is not None:
            told(1)


class Setup:
    """``count`` hubs on RedisBuses, ``connections`` relay connections spread over them."""

    def __init__(self, count: int, connections: int) -> None:
        self.wire: list[tuple[str, str]] = []
        self.clocks = [Clock() for _ in range(count)]
        self.buses = [RedisBus(f"bench{i}", NS, interval=1.0) for i in range(count)]
        self.hubs = []
        for i, (clock, bus) in enumerate(zip(self.clocks, self.buses, strict=True)):
            bus.link = MemoryLink(clock, self.wire)
            self.hubs.append(Hub(clock, bus, rng=random.Random(i + 1)))
        self.inboxes = {NS.inbox(bus.instance_id): bus for bus in self.buses}
        self.peers = []
        for n in range(connections):
            # No rate limit: the Clock never moves, so any bucket would run dry.
            factory = NeaFactory(self.hubs[n % count], profiles.RELAY, ConnectionLimits(max_rate=0))
            peer = factory.buildProtocol(None)
            peer.makeConnection(StringTransport())
            self.peers.append(peer)
        records = {b.instance_id: record.encode(b.run, h.member()) for b, h in self._pairs()}
        for bus in self.buses:
            bus.discovered(records)

    def _pairs(self):
        return zip(self.buses, self.hubs, strict=True)

    def end_turn(self) -> None:
        """Every hub's turn ends (held writes and batches leave) and what they published
        arrives, until nothing more is published (a few turns at most)."""
        for _ in range(10):
            for clock in self.clocks:
                clock.advance(0)
            if not self.wire:
                return
            published, self.wire[:] = list(self.wire), []
            for channel, data in published:
                self.inboxes[channel].received(channel, data)
        raise RuntimeError("messages keep coming: a delivery loop")

    def pending(self) -> int:
        return sum(h.snapshot().relays.pending + h.snapshot().relays.in_flight for h in self.hubs)


def run(count: int, exchanges: int, connections: int = 100, per_read: int = 1) -> float:
    """CPU seconds per exchange."""
    setup = Setup(count, connections)
    spent = exchange(setup.peers, exchanges, setup.end_turn, per_read)
    if setup.pending():
        raise RuntimeError("the crossing-path bench left relays behind")
    return spent


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--exchanges", type=int, default=100_000)
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--connections", type=int, default=100)
    p.add_argument("--per-read", type=int, default=1, help="messages a connection sends a read")
    args = p.parse_args()
    figures: dict[int, list[float]] = {1: [], 2: []}
    for _ in range(args.repeat):
        for count in figures:
            figures[count].append(run(count, args.exchanges, args.connections, args.per_read) * 1e6)
    one, two = min(figures[1]), min(figures[2])
    print(
        f"crossing path ({args.connections} connections, {args.per_read} a read): "
        f"{one:.2f} us CPU per exchange on one hub, {two:.2f} us on two; a "
        f"crossing relay {2 * two - one:.2f} us, {(2 * two - one) / one:.2f}x a local one "
        f"(best of {args.repeat}; one: {', '.join(f'{f:.2f}' for f in figures[1])}; two: "
        f"{', '.join(f'{f:.2f}' for f in figures[2])})",
        flush=True,
    )


if __name__ == "__main__":
    main()
