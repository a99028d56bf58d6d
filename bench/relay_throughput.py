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

Every case sets the daemon's limits and prints them with its figures (a line
limit of R lines a second per client caps C connections at C x R / 2 exchanges a
second, each exchange being two lines). The cases, each a fresh daemon:

- ``relay``: relays, ``--max-rate`` as given (default 0, no limit);
- ``throttled``: relays at ``--max-rate`` ``--throttle-rate``, the driver
  sending as fast as it can, so the daemon holds every client at its rate;
- ``paced``: the same relays at the same rate without the limiter: no
  ``--max-rate``, the driver itself sends ``--throttle-rate`` lines a second per
  connection. ``throttled``/``paced`` is what throttling costs per exchange;
- ``svc``: requests to a service (``serve`` / ``ask ID @SVC`` / ``reply``);
- ``name``: requests to a name (``register`` / ``ask ID NAME`` / ``reply``), to a
  connection drawn at random like a relay's target;
- ``relay-tls``: ``relay`` over TLS (the driver's TLS is Twisted's, so it costs
  the driver more);
- ``nats``: nats-server request/reply through a queue group;
- ``floor``: bench/floor_relay.py, the least a relay on CPython and Twisted
  does (no limits, ids, deadlines or errors): the floor under nea's relay;
- ``nats-paced``, ``floor-paced``, ``svc-paced``: those, the driver pacing
  itself as in ``paced``: compared at one exchange rate, where none of them
  batches more lines per read than another.

    .venv/bin/python bench/relay_throughput.py [--seconds 10] [--cases relay,svc]
        [--profile nea.prof]
"""

import argparse
import itertools
import os
import pstats
import random
import shutil
import subprocess
import time

import harness
from twisted.internet import defer, reactor, ssl, task
from twisted.internet.endpoints import TCP4ClientEndpoint, wrapClientTLS
from twisted.internet.protocol import Factory, Protocol


class Counter:
    def __init__(self) -> None:
        self.exchanges = 0
        #: Names registered so far (`NeaNameDriver`).
        self.registered: list[bytes] = []


class Driver(Protocol):
    """One persistent connection of the driver: keeps ``window`` requests outstanding.

    Lines are split per read and the answers to a whole read are written at once,
    so that the driver costs as little as it can per exchange.
    """

    delimiter = b"\n"

    def __init__(self, counter: Counter, name: bytes, window: int, peers: int = 0) -> None:
        self.counter, self.name, self.window, self.peers = counter, name, window, peers
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

    def answered(self) -> None:
        """One of its own lines answers the server (`Paced` counts it)."""

    def completed(self, out: list[bytes]) -> None:
        """One of its requests was answered: the next one goes out."""
        self.counter.exchanges += 1
        out.append(self.request())


class NeaDriver(Driver):
    """nea relay profile: ``message X`` out, ``message Y`` in -> ``ok Y``, ``ok X`` in -> next."""

    def request(self) -> bytes:
        return b"message %s.%d\n" % (self.name, next(self.seq))

    def line(self, line: bytes, out: list[bytes]) -> None:
        if line.startswith(b"message "):
            self.answered()
            out.append(b"ok " + line[8:] + b"\n")
        elif line.startswith(b"ok "):
            self.completed(out)


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
            self.completed(out)
        elif line.startswith(b"error "):
            raise RuntimeError(line.decode())


class NeaNameDriver(NeaServiceDriver):
    """nea requests to a name: every connection registers ``cI`` and, once registered,
    asks names drawn at random from those registered already."""

    def connectionMade(self) -> None:
        self.transport.write(b"register %s\n" % self.name)

    def request(self) -> bytes:
        target = random.choice(self.counter.registered)
        return b"ask %s.%d %s x\n" % (self.name, next(self.seq), target)

    def line(self, line: bytes, out: list[bytes]) -> None:
        if line.startswith(b"registered "):
            self.counter.registered.append(self.name)
            out.extend(self.request() for _ in range(self.window))
        else:
            super().line(line, out)


class Paced(Driver):
    """Mixed into a driver: it sends at most ``rate`` lines a second of its own
    (requests and answers; requests wait their turn, answers never). Against nea it
    is the load of a client the daemon throttles, without the limiter; against every
    server alike, a rate at which to compare them."""

    def __init__(
        self, counter: Counter, name: bytes, window: int, peers: int, rate: float, pacer: "Pacer"
    ) -> None:
        super().__init__(counter, name, window, peers)
        self.rate, self.tokens, self.owed = rate, 0.0, 0
        pacer.drivers.append(self)

    def connectionMade(self) -> None:
        self.transport.write(self.greeting())
        self.owed = self.window

    def answered(self) -> None:
        self.tokens -= 1

    def completed(self, out: list[bytes]) -> None:
        self.counter.exchanges += 1
        self.owed += 1

    def tick(self, seconds: float) -> None:
        self.tokens = min(self.tokens + seconds * self.rate, 2 * self.rate * seconds)
        ready = min(self.owed, max(0, int(self.tokens)))
        if ready:
            self.owed -= ready
            self.tokens -= ready
            self.transport.write(b"".join(self.request() for _ in range(ready)))


class PacedDriver(Paced, NeaDriver):
    """nea relays, paced."""


class PacedServiceDriver(Paced, NeaServiceDriver):
    """nea requests to a service, paced."""

    def line(self, line: bytes, out: list[bytes]) -> None:
        if line.startswith(b"request "):
            self.answered()
        super().line(line, out)


class Pacer:
    """One timer for every `PacedDriver`: each gets its share of lines every ``tick`` s."""

    def __init__(self, tick: float = 0.01) -> None:
        self.drivers: list[PacedDriver] = []
        self.loop = task.LoopingCall(self._tick, tick)
        self.loop.start(tick, now=False)

    def _tick(self, seconds: float) -> None:
        for driver in self.drivers:
            driver.tick(seconds)


class NatsDriver(Driver):
    """NATS: PUB to the queue group with a reply inbox; members answer on the inbox."""

    delimiter = b"\r\n"

    def __init__(self, counter: Counter, name: bytes, window: int, peers: int = 0) -> None:
        super().__init__(counter, name, window, peers)
        self.inbox = b"_INBOX." + name
        self._msg: list[bytes] | None = None  # the MSG header whose payload comes next

    def greeting(self) -> bytes:
        return (
            b'CONNECT {"verbose":false,"pedantic":false}\r\n'
            b"SUB relay workers 1\r\nSUB " + self.inbox + b" 2\r\n"
        )

    def request(self) -> bytes:
        payload = b"%s.%d" % (self.name, next(self.seq))
        return b"PUB relay %s %d\r\n%s\r\n" % (self.inbox, len(payload), payload)

    def line(self, line: bytes, out: list[bytes]) -> None:
        if self._msg is not None:
            header, self._msg = self._msg, None
            if header[2] == b"1":  # a request for the group: answer on its reply subject
                self.answered()
                answer = b"ok " + line
                out.append(b"PUB %s %d\r\n%s\r\n" % (header[3], len(answer), answer))
            else:
                self.completed(out)
        elif line.startswith(b"MSG "):
            self._msg = line.split(b" ")
        elif line == b"PING":
            out.append(b"PONG\r\n")
        elif line.startswith(b"-ERR"):
            raise RuntimeError(line.decode())


class PacedNatsDriver(Paced, NatsDriver):
    """nats-server, paced."""


@defer.inlineCallbacks
def drive(port: int, driver, args, cpu, *extra, rss=None, cap: float | None = None, tls_ca=None):
    """Warm up, then count exchanges and server CPU for ``args.seconds``, and read the
    server's resident memory at the end (``rss``, bytes, if given); ``extra`` is passed
    to each ``driver``. With ``cap`` (exchanges/s the daemon's rate limit allows)
    the warm-up goes on until the clients' bursts are spent: half a second at most 3%
    over ``cap`` (30 s at most)."""
    counter = Counter()
    endpoint = TCP4ClientEndpoint(reactor, "127.0.0.1", port)
    if tls_ca is not None:
        trust = ssl.Certificate.loadPEM(tls_ca.read_bytes())
        endpoint = wrapClientTLS(ssl.optionsForClientTLS("localhost", trust), endpoint)
    connections = []
    for i in range(args.connections):
        factory = Factory.forProtocol(
            lambda i=i: driver(counter, b"c%d" % i, args.window, args.connections, *extra)
        )
        connections.append((yield endpoint.connect(factory)))
    yield task.deferLater(reactor, args.warmup, lambda: None)
    settle = time.monotonic() + 30
    while cap is not None and time.monotonic() < settle:
        count = counter.exchanges
        yield task.deferLater(reactor, 0.5, lambda: None)
        if counter.exchanges - count <= cap * 0.5 * 1.03:
            break
    start, cpu_start, count_start = time.monotonic(), cpu(), counter.exchanges
    driver_start = time.process_time()
    yield task.deferLater(reactor, args.seconds, lambda: None)
    elapsed, cpu_used = time.monotonic() - start, cpu() - cpu_start
    driver_used = time.process_time() - driver_start
    exchanges = counter.exchanges - count_start
    resident = rss() if rss is not None else None
    for connection in connections:
        connection.transport.abortConnection()
    return {
        "exchanges_per_s": exchanges / elapsed,
        "server_us_per_exchange": cpu_used / exchanges * 1e6 if exchanges else None,
        "server_percent_of_a_core": 100 * cpu_used / elapsed,
        "server_rss_mib": resident / 2**20 if resident is not None else None,
        "driver_percent_of_a_core": 100 * driver_used / elapsed,
    }


def nats_server() -> str:
    path = shutil.which("nats-server")
    if path is None:
        subprocess.run(["apt-get", "install", "-y", "-qq", "nats-server"], check=True)
        path = shutil.which("nats-server") or "/usr/sbin/nats-server"
    return path


#: case -> (listener profile, driver, max-rate of the daemon: None for --max-rate).
CASES = {
    "relay": ("relay", NeaDriver, None),
    "relay-tls": ("relay", NeaDriver, None),
    "throttled": ("relay", NeaDriver, "throttle"),
    "paced": ("relay", PacedDriver, 0.0),
    "svc": ("nea", NeaServiceDriver, None),
    "svc-paced": ("nea", PacedServiceDriver, 0.0),
    "name": ("nea", NeaNameDriver, None),
}


#: Servers other than nea: case -> (command given the port, driver, paced driver, limits).
OTHERS = {
    "nats": (
        lambda port: [nats_server(), "-a", "127.0.0.1", "-p", str(port)],
        NatsDriver,
        PacedNatsDriver,
        "nats-server defaults",
    ),
    "floor": (
        lambda port: [harness.PYTHON, str(harness.ROOT / "bench" / "floor_relay.py"), str(port)],
        NeaDriver,
        PacedDriver,
        "none (bench/floor_relay.py)",
    ),
}


@defer.inlineCallbacks
def run_case(case: str, args):
    """One case on a fresh daemon (or other server); its figures, limits included. A
    case named ``X-paced`` is X with every connection sending ``--throttle-rate``
    lines a second."""
    other, paced = case.removesuffix("-paced"), case.endswith("-paced") or case == "paced"
    pacer = Pacer() if paced else None
    extra = (args.throttle_rate, pacer) if pacer is not None else ()
    if other in OTHERS:
        command, driver, paced_driver, limits = OTHERS[other]
        port = harness.free_port()
        server = harness.spawn(command(port), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            harness.wait_listening(port, server)
            result = yield drive(
                port,
                paced_driver if paced else driver,
                args,
                lambda: harness.process_cpu(server.pid),
                *extra,
                rss=lambda: harness.process_rss(server.pid),
            )
        finally:
            harness.stop(server)
        result["limits"] = f"{limits}, clients {args.connections} x {args.window}"
    else:
        profile, driver, rate = CASES[case]
        rate = args.throttle_rate if rate == "throttle" else rate
        certs = harness.certs() if case.endswith("-tls") else None
        listen = harness.tls(profile, certs) if certs else harness.tcp(profile)
        with harness.Daemon(
            listen, profile=args.profile, extra=harness.limit_args(args, rate)
        ) as daemon:
            cap = args.connections * rate / 2 if rate else None
            result = yield drive(
                daemon.ports[0],
                driver,
                args,
                daemon.cpu,
                *extra,
                rss=daemon.rss,
                cap=cap,
                tls_ca=certs / "ca.pem" if certs else None,
            )
        result["limits"] = harness.limits_text(args, rate)
    if pacer is not None:
        pacer.loop.stop()
        result["limits"] += f"; the driver sends {args.throttle_rate:g} lines/s per connection"
    return result


@defer.inlineCallbacks
def run(args):
    """Every case once per round, rounds interleaved, so a change in the machine's load
    falls on every case alike."""
    results: dict[str, list[dict]] = {case: [] for case in args.cases}
    for round_ in range(1, args.rounds + 1):
        for case in args.cases:
            r = yield run_case(case, args)
            r["load"] = " ".join(f"{x:.2f}" for x in os.getloadavg())
            results[case].append(r)
            print(
                f"[{round_}] {case:9} {r['exchanges_per_s']:9.0f} exchanges/s, server "
                f"{r['server_us_per_exchange']:.1f} us CPU per exchange "
                f"({r['server_percent_of_a_core']:.0f}% of a core), "
                f"{r['server_rss_mib']:.0f} MiB resident; driver "
                f"{r['driver_percent_of_a_core']:.0f}% of a core; load {r['load']}; "
                f"limits: {r['limits']}",
                flush=True,
            )
    return results


def spread(values: list[float]) -> str:
    ordered = sorted(values)
    return f"median {ordered[len(ordered) // 2]:.2f} (range {ordered[0]:.2f}-{ordered[-1]:.2f})"


#: Ratios printed when both cases ran: (numerator, denominator).
RATIOS = [
    ("throttled", "paced"),
    ("throttled", "relay"),
    ("svc", "relay"),
    ("name", "relay"),
    ("relay", "nats"),
    ("relay-tls", "relay"),
    ("relay", "floor"),
    ("floor", "nats"),
    ("svc-paced", "paced"),
    ("paced", "nats-paced"),
    ("paced", "floor-paced"),
    ("floor-paced", "nats-paced"),
    ("svc", "nats"),
]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    harness.relay_load_options(p, "requests")
    p.add_argument(
        "--throttle-rate",
        type=float,
        default=1000.0,
        help="lines/s per connection of the throttled and paced cases",
    )
    p.add_argument(
        "--cases",
        type=lambda v: v.split(","),
        default=["relay", "throttled", "paced", "svc", "name", "nats"],
        help=f"comma-separated, of {', '.join([*CASES, *OTHERS, *(f'{o}-paced' for o in OTHERS)])}",
    )
    p.add_argument("--rounds", type=int, default=1, help="every case once per round")
    p.add_argument("--profile", help="run nea under cProfile, write the stats here, print the top")
    args = p.parse_args()
    harness.header(
        f"relay_throughput: {args.connections} connections x {args.window} "
        f"outstanding, {args.seconds} s, {args.rounds} round(s); "
        f"limits: {harness.limits_text(args)}, throttled/paced at "
        f"{args.throttle_rate:g} lines/s per connection"
    )
    results = harness.run_reactor(lambda: run(args))
    for top, bottom in RATIOS:
        if top in results and bottom in results:
            cpu = [
                a["server_us_per_exchange"] / b["server_us_per_exchange"]
                for a, b in zip(results[top], results[bottom], strict=True)
            ]
            rate = [
                a["exchanges_per_s"] / b["exchanges_per_s"]
                for a, b in zip(results[top], results[bottom], strict=True)
            ]
            print(
                f"ratio {top}/{bottom}: server CPU per exchange {spread(cpu)}, "
                f"throughput {spread(rate)}, paired by round",
                flush=True,
            )
    if args.profile:
        pstats.Stats(args.profile).sort_stats("tottime").print_stats(25)


if __name__ == "__main__":
    main()
