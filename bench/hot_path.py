"""The server's relay hot path without sockets: CPU per message/ok exchange in nea's own code.

100 relay-profile `NeaConnection`s on in-memory transports share one hub; each
round, every connection sends ``message X`` (one line per read, as a client
without pipelining does), then every chosen target sends ``ok X``. Only the
``dataReceived`` calls are timed (CPU time, so other processes on the machine
do not count). This is the figure the hot-path optimisations are judged by; the
socket-level figure is `relay_throughput.py`'s.

    .venv/bin/python bench/hot_path.py [--exchanges 200000]
"""

import argparse
import random
import time

from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport

from nea.core.bus import LocalBus
from nea.core.hub import Hub
from nea.server.connection import ConnectionLimits, NeaFactory
from nea.wire import profiles


def run(exchanges: int, connections: int = 100) -> float:
    """CPU seconds per exchange."""
    clock = Clock()
    hub = Hub(clock, LocalBus("bench"), rng=random.Random(1))
    # No rate limit: the Clock never moves, so any bucket would run dry and stall reading.
    factory = NeaFactory(hub, profiles.RELAY, ConnectionLimits(max_rate=0))
    peers = []
    for _ in range(connections):
        peer = factory.buildProtocol(None)
        peer.makeConnection(StringTransport())
        peers.append(peer)
    # The end of the reactor turn: held writes go out.
    spent = exchange(peers, exchanges, lambda: clock.advance(0))
    if hub.snapshot().relays.pending or hub.snapshot().relays.in_flight:
        raise RuntimeError("the hot-path bench left relays behind")
    return spent


def exchange(peers: list, exchanges: int, end_turn) -> float:
    """Rounds of ``message X`` from every peer, then ``ok X`` from every target, until
    ``exchanges`` are acked; CPU seconds per exchange spent in ``dataReceived`` and in
    ``end_turn`` (called after each half round: what the reactor would do next)."""
    spent, done, seq = 0.0, 0, 0
    while done < exchanges:
        lines = []
        for _ in peers:
            seq += 1
            lines.append(b"message bench.%d\n" % seq)
        started = time.process_time()
        for peer, line in zip(peers, lines, strict=True):
            peer.dataReceived(line)
        end_turn()
        spent += time.process_time() - started
        acks = []
        for peer in peers:
            for line in peer.transport.value().split(b"\n"):
                if line.startswith(b"message "):
                    acks.append((peer, b"ok " + line[8:] + b"\n"))
            peer.transport.clear()
        started = time.process_time()
        for peer, line in acks:
            peer.dataReceived(line)
        end_turn()
        spent += time.process_time() - started
        for peer in peers:
            peer.transport.clear()
        done += len(acks)
    return spent / done


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--exchanges", type=int, default=200_000)
    p.add_argument("--repeat", type=int, default=3)
    args = p.parse_args()
    figures = sorted(run(args.exchanges) * 1e6 for _ in range(args.repeat))
    print(
        f"hot path: {figures[0]:.2f} us CPU per exchange (best of {args.repeat}; "
        f"all: {', '.join(f'{f:.2f}' for f in figures)})",
        flush=True,
    )


if __name__ == "__main__":
    main()
