"""The server's hot paths without sockets: CPU per exchange in nea's own code.

``--connections`` `NeaConnection`s on in-memory transports share one hub; each
round, every connection sends ``--per-read`` requests in one read (1: a client
without pipelining; the socket bench's driver sends about 20), then every
connection answers, in one read, what it was pushed. Only the ``dataReceived``
calls and the end of each reactor turn are timed (CPU time, so other processes
on the machine do not count). This is the figure the hot-path changes are
judged by; the socket-level figure is `relay_throughput.py`'s. Cases:

- ``relay``: ``message X`` / ``ok X`` (the relay profile);
- ``svc``: every connection serves ``bench`` and asks it, ``ask ID @bench x`` /
  ``reply RID x``;
- ``name``: every connection registers ``cI`` and asks names drawn at random.

    .venv/bin/python bench/hot_path.py [--exchanges 200000] [--per-read 20] [--case svc]
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

CASES = ("relay", "svc", "name")


def run(exchanges: int, connections: int = 100, per_read: int = 1, case: str = "relay") -> float:
    """CPU seconds per exchange."""
    clock = Clock()
    hub = Hub(clock, LocalBus("bench"), rng=random.Random(1))
    # No rate limit: the Clock never moves, so any bucket would run dry and stall reading.
    profile = profiles.RELAY if case == "relay" else profiles.NEA
    factory = NeaFactory(hub, profile, ConnectionLimits(max_rate=0))
    peers = []
    for n in range(connections):
        peer = factory.buildProtocol(None)
        peer.makeConnection(StringTransport())
        if case != "relay":
            peer.dataReceived(b"serve bench\n" if case == "svc" else b"register c%d\n" % n)
        peers.append(peer)
    clock.advance(0)  # the end of the turn: what it pushed is written
    for peer in peers:
        peer.transport.clear()
    spent = exchange(peers, exchanges, lambda: clock.advance(0), per_read, case)
    if hub.snapshot().relays.pending or hub.snapshot().addressed.pending:
        raise RuntimeError("the hot-path bench left requests behind")
    return spent


def exchange(
    peers: list, exchanges: int, end_turn, per_read: int = 1, case: str = "relay"
) -> float:
    """Rounds of ``per_read`` requests from every peer in one read, then every peer's
    answers in one read, until ``exchanges`` are answered; CPU seconds per exchange
    spent in ``dataReceived`` and in ``end_turn`` (called after each half round: what
    the reactor would do next)."""
    draw = random.Random(2)
    spent, done, seq = 0.0, 0, 0
    while done < exchanges:
        reads = []
        for _ in peers:
            lines = []
            for _ in range(per_read):
                seq += 1
                lines.append(_request(case, seq, draw, len(peers)))
            reads.append(b"".join(lines))
        started = time.process_time()
        for peer, data in zip(peers, reads, strict=True):
            peer.dataReceived(data)
        end_turn()
        spent += time.process_time() - started
        answers = []
        for peer in peers:
            answer = b"".join(_answer(line) for line in peer.transport.value().split(b"\n"))
            peer.transport.clear()
            if answer:
                answers.append((peer, answer))
        started = time.process_time()
        for peer, data in answers:
            peer.dataReceived(data)
        end_turn()
        spent += time.process_time() - started
        for peer in peers:
            done += peer.transport.value().count(b"ok " if case == "relay" else b"reply ")
            peer.transport.clear()
    return spent / done


def _request(case: str, seq: int, draw: random.Random, peers: int) -> bytes:
    if case == "relay":
        return b"message bench.%d\n" % seq
    target = b"@bench" if case == "svc" else b"c%d" % draw.randrange(peers)
    return b"ask a.%d %s x\n" % (seq, target)


def _answer(line: bytes) -> bytes:
    """What a client answers to ``line`` it was pushed (nothing to an answer or a date)."""
    if line.startswith(b"message "):
        return b"ok " + line[8:] + b"\n"
    if line.startswith(b"request "):
        return b"reply " + line[8:] + b"\n"
    if line.startswith(b"error "):
        raise RuntimeError(line.decode())
    return b""


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--exchanges", type=int, default=200_000)
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--connections", type=int, default=100)
    p.add_argument("--per-read", type=int, default=1, help="requests a connection sends a read")
    p.add_argument("--case", choices=CASES, default="relay")
    args = p.parse_args()
    figures = sorted(
        run(args.exchanges, args.connections, args.per_read, args.case) * 1e6
        for _ in range(args.repeat)
    )
    print(
        f"hot path ({args.case}, {args.connections} connections, {args.per_read} a read): "
        f"{figures[0]:.2f} us CPU per exchange (best of {args.repeat}; "
        f"all: {', '.join(f'{f:.2f}' for f in figures)})",
        flush=True,
    )


if __name__ == "__main__":
    main()
