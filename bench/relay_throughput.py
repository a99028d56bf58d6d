"""Relay throughput: persistent connections exchanging message/ok as fast as they can,
and requests to a service (serve/ask/reply), nea against nats-server (queue-group
request/reply), driven by the same harness.

C connections each keep W requests outstanding. A request goes to a random
member (nea: a random relay-capable connection; NATS: a random member of the
queue group), which answers at once; the answer goes back to the requester,
which sends its next request. Reported per system: exchanges per second, and
the server's CPU per exchange (utime + stime from /proc). The driver is one
Python process; when it, not the server, is the limit (it is for nats-server),
the CPU-per-exchange ratio is the fairer comparison.

    .venv/bin/python bench/relay_throughput.py [--seconds 10] [--profile nea.prof]
"""

import argparse
import itertools
import pstats
import shutil
import subprocess
import time

import harness
from twisted.internet import defer, reactor, task
from twisted.internet.endpoints import TCP4ClientEndpoint
from twisted.internet.protocol import Factory, Protocol


class Counter:
    def __init__(self) -> None:
        self.exchanges = 0


class Driver(Protocol):
    """One persistent connection of the driver: keeps ``window`` requests outstanding.

    Lines are split per read and the answers to a whole read are written at once,
    so that the driver costs as little as it can per exchange.
    """

    delimiter = b"\n"

    def __init__(self, counter: Counter, name: bytes, window: int) -> None:
        self.counter, self.name, self.window = counter, name, window
        self.seq = itertools.count()
        self._tail = b""

    def connectionMade(self) -> None:
        self.transport.write(self.greeting() + b"".join(self.request() for _ in range(self.window)))

    def dataReceived(self, data: bytes) -> None:
        *lines, self._tail = (self._tail + data).split(self.delimiter)
        out: list[bytes] = []
        for line in lines:
            self.line(line, out)
        if out:
            self.transport.write(b"".join(out))

    def greeting(self) -> bytes:
        return b""


class NeaDriver(Driver):
    """nea relay profile: ``message X`` out, ``message Y`` in -> ``ok Y``, ``ok X`` in -> next."""

    def request(self) -> bytes:
        return b"message %s.%d\n" % (self.name, next(self.seq))

    def line(self, line: bytes, out: list[bytes]) -> None:
        if line.startswith(b"message "):
            out.append(b"ok " + line[8:] + b"\n")
        elif line.startswith(b"ok "):
            self.counter.exchanges += 1
            out.append(self.request())


class NeaServiceDriver(Driver):
    """nea requests to a service: every connection serves it and asks it.

    ``ask ID @bench X`` out; the member drawn gets ``request RID X`` and answers
    ``reply RID X``; the asker gets ``reply ID X`` and asks again. The same shape
    as NATS request/reply through a queue group.
    """

    def greeting(self) -> bytes:
        return b"serve bench\n"

    def request(self) -> bytes:
        return b"ask %s.%d @bench x\n" % (self.name, next(self.seq))

    def line(self, line: bytes, out: list[bytes]) -> None:
        if line.startswith(b"request "):
            rid, _, body = line[8:].partition(b" ")
            out.append(b"reply %s %s\n" % (rid, body))
        elif line.startswith(b"reply "):
            self.counter.exchanges += 1
            out.append(self.request())
        elif line.startswith(b"error "):
            raise RuntimeError(line.decode())


class NatsDriver(Driver):
    """NATS: PUB to the queue group with a reply inbox; members answer on the inbox."""

    delimiter = b"\r\n"

    def __init__(self, counter: Counter, name: bytes, window: int) -> None:
        super().__init__(counter, name, window)
        self.inbox = b"_INBOX." + name
        self._msg: list[bytes] | None = None  # the MSG header whose payload comes next

    def greeting(self) -> bytes:
        return (b'CONNECT {"verbose":false,"pedantic":false}\r\n'
                b"SUB relay workers 1\r\nSUB " + self.inbox + b" 2\r\n")

    def request(self) -> bytes:
        payload = b"%s.%d" % (self.name, next(self.seq))
        return b"PUB relay %s %d\r\n%s\r\n" % (self.inbox, len(payload), payload)

    def line(self, line: bytes, out: list[bytes]) -> None:
        if self._msg is not None:
            header, self._msg = self._msg, None
            if header[2] == b"1":  # a request for the group: answer on its reply subject
                answer = b"ok " + line
                out.append(b"PUB %s %d\r\n%s\r\n" % (header[3], len(answer), answer))
            else:
                self.counter.exchanges += 1
                out.append(self.request())
        elif line.startswith(b"MSG "):
            self._msg = line.split(b" ")
        elif line == b"PING":
            out.append(b"PONG\r\n")
        elif line.startswith(b"-ERR"):
            raise RuntimeError(line.decode())


@defer.inlineCallbacks
def drive(port: int, driver, args, cpu):
    """Warm up, then count exchanges and server CPU for ``args.seconds``."""
    counter = Counter()
    endpoint = TCP4ClientEndpoint(reactor, "127.0.0.1", port)
    connections = []
    for i in range(args.connections):
        factory = Factory.forProtocol(lambda i=i: driver(counter, b"c%d" % i, args.window))
        connections.append((yield endpoint.connect(factory)))
    yield task.deferLater(reactor, args.warmup, lambda: None)
    start, cpu_start, count_start = time.monotonic(), cpu(), counter.exchanges
    yield task.deferLater(reactor, args.seconds, lambda: None)
    elapsed, cpu_used = time.monotonic() - start, cpu() - cpu_start
    exchanges = counter.exchanges - count_start
    for connection in connections:
        connection.transport.abortConnection()
    return {"exchanges_per_s": exchanges / elapsed, "server_us_per_exchange":
            cpu_used / exchanges * 1e6 if exchanges else None,
            "server_percent_of_a_core": 100 * cpu_used / elapsed}


def nats_server() -> str:
    path = shutil.which("nats-server")
    if path is None:
        subprocess.run(["apt-get", "install", "-y", "-qq", "nats-server"], check=True)
        path = shutil.which("nats-server") or "/usr/sbin/nats-server"
    return path


@defer.inlineCallbacks
def run(args):
    results = {}
    with harness.Daemon(harness.tcp("relay"), profile=args.profile) as daemon:
        results["nea"] = yield drive(daemon.ports[0], NeaDriver, args, daemon.cpu)
    with harness.Daemon(harness.tcp("nea"), profile=args.profile) as daemon:
        results["nea-svc"] = yield drive(daemon.ports[0], NeaServiceDriver, args, daemon.cpu)
    port = harness.free_port()
    nats = harness.spawn([nats_server(), "-a", "127.0.0.1", "-p", str(port)],
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        harness.wait_listening(port, nats)
        results["nats"] = yield drive(port, NatsDriver, args,
                                      lambda: harness.process_cpu(nats.pid))
    finally:
        harness.stop(nats)
    return results


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    harness.relay_load_options(p, "requests")
    p.add_argument("--profile", help="run nea under cProfile, write the stats here, print the top")
    args = p.parse_args()
    harness.header(f"relay_throughput: {args.connections} connections x {args.window} "
                   f"outstanding, {args.seconds} s")
    results = harness.run_reactor(lambda: run(args))
    for name, r in results.items():
        print(f"{name:7} {r['exchanges_per_s']:9.0f} exchanges/s, server "
              f"{r['server_us_per_exchange']:.1f} us CPU per exchange "
              f"({r['server_percent_of_a_core']:.0f}% of a core)")
    nats = results["nats"]
    for name in ("nea", "nea-svc"):
        r = results[name]
        print(f"ratio {name}/nats: "
              f"throughput {r['exchanges_per_s'] / nats['exchanges_per_s']:.2f}, "
              f"server CPU per exchange "
              f"{r['server_us_per_exchange'] / nats['server_us_per_exchange']:.1f}x", flush=True)
    if args.profile:
        pstats.Stats(args.profile).sort_stats("tottime").print_stats(25)


if __name__ == "__main__":
    main()
