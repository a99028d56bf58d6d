"""``nea-loadtest``: spawn the workers, show progress, check the server, report.

Exit status 0 when every ``message X`` got its ``ok X`` and the server ended in
zero state, 1 on any loss (or when the server was not in zero state), 2 on bad
usage.
"""

import argparse
import asyncio
import ipaddress
import json
import math
import os
import secrets
import sys
from pathlib import Path
from typing import Any

from twisted.internet import defer
from twisted.internet.interfaces import IProcessTransport
from twisted.internet.protocol import ProcessProtocol
from twisted.internet.task import LoopingCall

from nea.client import delays
from nea.loadtest import report, status, worker
from nea.loadtest.tally import Tally
from nea.tls.client import TLSConfigError, client_endpoint, client_tls_options

#: Clients per source address when spreading over 127.0.0.x: well under the
#: ephemeral port range (28,000 ports by default), TIME_WAIT included.
CLIENTS_PER_SOURCE = 10_000
#: Clients per worker process when --workers is not given.
CLIENTS_PER_WORKER = 25_000


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="nea-loadtest",
        description="The relay load test: N relay-mode clients started over a window; "
        "checks that every 'message X' got its 'ok X' and that the server ends in zero state.",
    )
    p.add_argument("--host", default="127.0.0.1", help="server address (default 127.0.0.1)")
    p.add_argument("--port", type=int, default=3443, help="server port (default 3443)")
    p.add_argument("--plain", action="store_true", help="plain TCP instead of TLS")
    p.add_argument(
        "--ca",
        default="certs/ca.pem",
        help="CA certificate that signed the server's (default certs/ca.pem, the development CA)",
    )
    p.add_argument(
        "--server-name", help="name to verify in the server certificate (default: --host)"
    )
    p.add_argument(
        "--clients", type=_positive(int), default=1000, help="number of clients (default 1000)"
    )
    p.add_argument(
        "--window",
        type=_non_negative(float),
        default=10.0,
        help="seconds over which client starts are spread, uniformly at random (default 10)",
    )
    p.add_argument(
        "--ok-delay",
        default="0",
        type=_delay,
        help="delay before answering a forwarded message: 0, SECONDS, uniform:A,B, "
        "exp:MEAN (default 0)",
    )
    p.add_argument(
        "--timeout",
        type=_positive(float),
        default=10.0,
        help="seconds an attempt may take before the client gives up on it and retries "
        "(default 10)",
    )
    p.add_argument(
        "--retries",
        type=_non_negative(int),
        default=10,
        help="reconnect-and-resend attempts after the first (default 10)",
    )
    p.add_argument(
        "--workers",
        type=_non_negative(int),
        default=0,
        help=f"worker processes (default: one per {CLIENTS_PER_WORKER} clients)",
    )
    p.add_argument(
        "--sources",
        type=_non_negative(int),
        default=0,
        help="source addresses 127.x.y.z to spread over when the server is on "
        f"loopback (default: one per {CLIENTS_PER_SOURCE} clients)",
    )
    p.add_argument(
        "--max-active",
        type=_non_negative(int),
        default=0,
        help="clients connected or retrying at once, over all workers; a client "
        "that is due waits for a free slot (default: each worker's open-files "
        "limit)",
    )
    p.add_argument(
        "--status-port",
        type=int,
        help="port of a listener with the nea profile for the status check (default: --port)",
    )
    p.add_argument("--no-status", action="store_true", help="skip the zero-state check")
    p.add_argument(
        "--settle",
        type=_non_negative(float),
        default=5.0,
        help="seconds to wait for zero state after the last client (default 5)",
    )
    p.add_argument("--server-pid", type=int, help="also measure this server process's CPU")
    p.add_argument(
        "--progress",
        type=_positive(float),
        default=1.0,
        help="seconds between progress lines on stderr (default 1)",
    )
    p.add_argument("--seed", type=int, help="random seed (default: random)")
    p.add_argument(
        "--json",
        metavar="PATH",
        help="write the machine-readable report here "
        "('-' for stdout, instead of the summary; default: none)",
    )
    p.add_argument("--worker", help=argparse.SUPPRESS)
    return p


def _positive(kind):
    def convert(text: str):
        value = kind(text)
        if not value > 0:
            raise argparse.ArgumentTypeError(f"must be > 0, got {text}")
        return value

    return convert


def _non_negative(kind):
    def convert(text: str):
        value = kind(text)
        if not value >= 0:
            raise argparse.ArgumentTypeError(f"must be >= 0, got {text}")
        return value

    return convert


def _delay(text: str) -> str:
    try:
        delays.parse(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from e
    return text


def tls_options(config: dict[str, Any]):
    """Client TLS verifying the server against ``--ca`` (None for ``--plain``)."""
    return client_tls_options(config["server_name"], Path(config["ca"])) if config["tls"] else None


def plan(args: argparse.Namespace) -> list[dict[str, Any]]:
    """One config per worker: its share of clients and its own source addresses."""
    workers = args.workers or max(1, math.ceil(args.clients / CLIENTS_PER_WORKER))
    workers = min(workers, args.clients)
    loopback = _is_loopback(args.host)
    sources = args.sources or math.ceil(args.clients / CLIENTS_PER_SOURCE)
    per_worker = max(1, math.ceil(sources / workers)) if loopback else 0
    run_id = secrets.token_hex(4)
    seed = args.seed if args.seed is not None else secrets.randbits(32)
    # A second octet of its own per run, so that a run does not meet the previous
    # run's TIME_WAIT sockets on the same source addresses.
    net = 1 + secrets.randbelow(250)
    base = {
        "host": args.host,
        "port": args.port,
        "tls": not args.plain,
        "ca": args.ca,
        "server_name": args.server_name or args.host,
        "window": args.window,
        "ok_delay": args.ok_delay,
        "timeout": args.timeout,
        "retries": args.retries,
        "progress": args.progress,
        "max_active": math.ceil(args.max_active / workers) if args.max_active else 0,
        "workers": workers,
        "run_id": run_id,
    }
    return [
        {
            **base,
            "index": i,
            "clients": args.clients // workers + (1 if i < args.clients % workers else 0),
            "seed": seed + i,
            # 127.NET.(10+i).(1..n): every worker its own addresses, none the server's.
            "sources": [f"127.{net}.{10 + i}.{j + 1}" for j in range(per_worker)],
        }
        for i in range(workers)
    ]


def _is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback and ipaddress.ip_address(host).version == 4
    except ValueError:
        return False


class WorkerProcess(ProcessProtocol):
    """The command's side of one worker: its JSON lines, and when it ends."""

    transport: IProcessTransport

    def __init__(self, config: dict[str, Any]) -> None:
        self.config = config
        self.ready: defer.Deferred = defer.Deferred()
        self.result: defer.Deferred = defer.Deferred()
        #: Fires once the process has exited and been reaped.
        self.ended: defer.Deferred = defer.Deferred()
        self.progress: dict[str, Any] = {}
        self._tail = b""

    def outReceived(self, data: bytes) -> None:
        *lines, self._tail = (self._tail + data).split(b"\n")
        for line in lines:
            message = json.loads(line)
            kind = message.pop("type")
            if kind == "ready":
                self.ready.callback(self)
            elif kind == "progress":
                self.progress = message
            elif kind == "result":
                self.result.callback(message["tally"])

    def go(self, t0: float) -> None:
        self.transport.write(json.dumps({"go": t0}).encode() + b"\n")

    def processEnded(self, reason) -> None:
        failure = RuntimeError(f"worker {self.config['index']} ended early: {reason.value}")
        for d in (self.ready, self.result):
            if not d.called:
                d.errback(failure)
        self.ended.callback(None)


def spawn(reactor, config: dict[str, Any]) -> WorkerProcess:
    process = WorkerProcess(config)
    argv = [sys.executable, "-m", "nea.loadtest", "--worker", json.dumps(config)]
    reactor.spawnProcess(
        process, sys.executable, argv, env=dict(os.environ), childFDs={0: "w", 1: "r", 2: 2}
    )
    return process


def process_cpu(pid: int) -> float:
    """utime + stime of process ``pid``, in seconds, from /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class Progress:
    """A line on stderr every interval: clients started/finished/retrying and the rate."""

    def __init__(self, reactor, processes: list[WorkerProcess], total: int, t0: float) -> None:
        self.reactor = reactor
        self.processes = processes
        self.total = total
        self.t0 = t0
        self._last = (t0, 0)

    def show(self) -> None:
        now = self.reactor.seconds()
        sums: dict[str, int] = {}
        for process in self.processes:
            for key, value in process.progress.items():
                if key != "index":
                    sums[key] = sums.get(key, 0) + value
        finished = sums.get("acked", 0) + sums.get("failed", 0)
        then, before = self._last
        rate = (finished - before) / (now - then) if now > then else 0.0
        self._last = (now, finished)
        sys.stderr.write(
            f"[{now - self.t0:6.1f}s] started {sums.get('started', 0)}/{self.total}"
            f"  acked {sums.get('acked', 0)}  failed {sums.get('failed', 0)}"
            f"  active {sums.get('active', 0)}  retrying {sums.get('retrying', 0)}"
            f"  retries {sums.get('retries', 0)}  {rate:.0f}/s\n"
        )


@defer.inlineCallbacks
def orchestrate(reactor, args: argparse.Namespace):
    """The whole run; fires with the report."""
    configs = plan(args)
    processes = [spawn(reactor, config) for config in configs]
    yield defer.gatherResults([p.ready for p in processes], consumeErrors=True).addTimeout(
        60, reactor
    )
    server_cpu_before = process_cpu(args.server_pid) if args.server_pid else None
    t0 = reactor.seconds() + 0.1
    for process in processes:
        process.go(t0)
    progress = Progress(reactor, processes, args.clients, t0)
    ticker = LoopingCall(progress.show)
    ticker.clock = reactor
    ticker.start(args.progress, now=False)
    try:
        results = yield defer.gatherResults([p.result for p in processes], consumeErrors=True)
    finally:
        ticker.stop()
    progress.show()
    wall = reactor.seconds() - t0
    server_cpu = (
        process_cpu(args.server_pid) - server_cpu_before if server_cpu_before is not None else None
    )
    # Reaped workers count in this process's children's CPU time, so that
    # /usr/bin/time or a shell's ``time`` sees the whole generator.
    yield defer.gatherResults([p.ended for p in processes]).addTimeout(30, reactor)
    tally = Tally()
    for result in results:
        tally.merge_json(result)
    verdict = None
    if not args.no_status:
        verdict = yield status.until_zero_state(
            reactor, status_endpoint(reactor, args, configs[0]), configs[0]["tls"], args.settle
        )
    shown = {
        k: configs[0][k]
        for k in ("host", "port", "tls", "window", "ok_delay", "timeout", "retries", "workers")
    }
    shown["max_active"] = args.max_active or None
    shown.update(clients=args.clients, sources=sum(len(c["sources"]) for c in configs))
    return report.build(tally, shown, wall, verdict, server_cpu)


def status_endpoint(reactor, args: argparse.Namespace, config: dict[str, Any]):
    return client_endpoint(reactor, args.host, args.status_port or args.port, tls_options(config))


def _run(start) -> Any:
    """Run the reactor until the Deferred from ``start(reactor)`` fires; its result or Failure."""
    from twisted.internet import reactor

    outcome: list = []

    def begin() -> None:
        d = start(reactor)
        d.addBoth(outcome.append)
        d.addBoth(lambda _: reactor.stop())

    reactor.callWhenRunning(begin)
    reactor.run()
    return outcome[0] if outcome else None


def run_worker(config_json: str) -> int:
    config = json.loads(config_json)
    loop = asyncio.new_event_loop()
    # Installed before anything imports the default reactor (see nea.loadtest.dialler).
    from twisted.internet import asyncioreactor

    asyncioreactor.install(loop)
    result = _run(lambda reactor: worker.run(reactor, loop, config))
    if not isinstance(result, Tally):
        sys.stderr.write(f"nea-loadtest worker {config['index']} failed: {result}\n")
        return 1
    return 0


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    if args.worker:
        return run_worker(args.worker)
    if not args.plain:
        try:
            client_tls_options(args.server_name or args.host, Path(args.ca))
        except TLSConfigError as e:
            parser().error(f"{e} (use --plain for TCP)")
    result = _run(lambda reactor: orchestrate(reactor, args))
    if not isinstance(result, dict):
        problem = result.getErrorMessage() if result is not None else "interrupted"
        sys.stderr.write(f"nea-loadtest: the run did not complete: {problem}\n")
        return 1
    if args.json:
        text = json.dumps(result, indent=2) + "\n"
        if args.json == "-":
            sys.stdout.write(text)
        else:
            Path(args.json).write_text(text)
    if args.json != "-":
        print(report.summary(result))
    return 0 if result["ok"] else 1
