"""What every benchmark needs: the daemon in its own process, its CPU and memory,
dev certificates, the machine's description, and nea-loadtest runs.

Benchmarks are scripts (``.venv/bin/python bench/NAME.py``); each one starts
what it needs through this module and stops it on the way out, even on error
(`Daemon` is a context manager, and `stop_all` runs at exit).
"""

import atexit
import datetime
import json
import os
import platform
import re
import select
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from twisted.python.failure import Failure

from nea.net.listening import announced_ports

ROOT = Path(__file__).resolve().parent.parent
PYTHON = sys.executable
_started: list[subprocess.Popen] = []


def env(extra: dict[str, str] | None = None) -> dict[str, str]:
    """The environment for child processes: this checkout first on the path, and ``extra``."""
    e = dict(os.environ)
    e["PYTHONPATH"] = str(ROOT) + os.pathsep + e.get("PYTHONPATH", "")
    e.update(extra or {})
    return e


def certs() -> Path:
    """A fresh directory of development certificates (ECDSA P-256 server key)."""
    directory = Path(tempfile.mkdtemp(prefix="nea-bench-certs-"))
    subprocess.run(
        [PYTHON, "-m", "nea.tls.devcerts", str(directory)],
        env=env(),
        check=True,
        stdout=subprocess.DEVNULL,
    )
    return directory


def tls(profile: str, certs_dir: Path, port: int = 0) -> str:
    return (
        f"{profile}=ssl:{port}:interface=127.0.0.1:privateKey={certs_dir}/server-key.pem"
        f":certKey={certs_dir}/server.pem"
    )


def tcp(profile: str, port: int = 0) -> str:
    return f"{profile}=tcp:{port}:interface=127.0.0.1"


def spawn(argv: list[str], environ: dict[str, str] | None = None, **kwargs) -> subprocess.Popen:
    """Start a child that `stop_all` will stop if the benchmark does not; ``environ`` adds
    to its environment."""
    process = subprocess.Popen(argv, env=env(environ), **kwargs)
    _started.append(process)
    return process


def stop(process: subprocess.Popen, timeout: float = 10.0) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout)
    if process in _started:
        _started.remove(process)


@atexit.register
def stop_all() -> None:
    for process in list(_started):
        stop(process)


class Daemon:
    """``nea-server`` with ``listens`` (``[PROFILE=]ENDPOINT``), as a separate process.

    ``ports`` are the listening ports in ``listens`` order; `cpu` and `rss` read
    /proc for the process. With ``profile`` it runs under cProfile (see
    ``profiled.py``), whose statistics are written to that path when it stops.
    ``environ`` adds to its environment (e.g. ``OPENSSL_CONF``).
    """

    def __init__(
        self,
        *listens: str,
        max_clients: int = 19_000,
        extra: tuple[str, ...] = (),
        profile: str | None = None,
        environ: dict[str, str] | None = None,
    ):
        self.log = tempfile.NamedTemporaryFile(
            prefix="nea-bench-daemon-", suffix=".log", delete=False
        )
        self.profile = profile
        profiler = [str(ROOT / "bench" / "profiled.py"), profile] if profile else ["-m"]
        # No chat history unless ``extra`` names a store (a later option wins): the benches
        # measure relays, and a cluster may not share the default SQLite file.
        argv = [
            PYTHON,
            *profiler,
            "twisted",
            "nea-server",
            "--http",
            "none",
            "--store",
            "none",
            "--max-clients",
            str(max_clients),
            *extra,
        ]
        for listen in listens:
            argv += ["--listen", listen]
        self.process = spawn(
            argv, environ, stdout=self.log, stderr=subprocess.STDOUT, cwd=tempfile.gettempdir()
        )
        self.pid = self.process.pid
        self.ports = self._wait_for_ports(len(listens))

    def _wait_for_ports(self, count: int, timeout: float = 30.0) -> list[int]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            found = announced_ports(Path(self.log.name).read_text())
            if len(found) >= count:
                return found[:count]
            if self.process.poll() is not None:
                break
            time.sleep(0.05)
        output = Path(self.log.name).read_text()[-2000:]
        self.stop()
        raise RuntimeError(f"nea-server did not start: {output}")

    def cpu(self) -> float:
        return process_cpu(self.pid)

    def rss(self) -> int:
        """Resident memory in bytes."""
        return process_rss(self.pid)

    def stop(self) -> None:
        if self.profile and self.process.poll() is None:
            self.process.send_signal(signal.SIGUSR1)
            deadline = time.monotonic() + 30
            while not Path(self.profile).exists() and time.monotonic() < deadline:
                time.sleep(0.1)
            time.sleep(0.5)  # let the write finish
        stop(self.process)
        os.unlink(self.log.name)

    def __enter__(self) -> "Daemon":
        return self

    def __exit__(self, *exc) -> None:
        self.stop()


def free_port() -> int:
    """A port nothing listens on now, on 127.0.0.1 (for servers that cannot report theirs)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_listening(port: int, process: subprocess.Popen, timeout: float = 30.0) -> None:
    """Poll until something accepts on 127.0.0.1:``port``; fail if ``process`` exits first."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{process.args[0]} exited with {process.returncode}")
        try:
            socket.create_connection(("127.0.0.1", port), 0.2).close()
            return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"nothing listens on {port}")


def redis_server() -> tuple[subprocess.Popen, int]:
    """A throw-away redis-server (no persistence) on a free loopback port, listening."""
    port = free_port()
    process = spawn(
        [
            shutil.which("redis-server"),
            "--port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            tempfile.gettempdir(),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    wait_listening(port, process)
    return process, port


def process_rss(pid: int) -> int:
    """Resident memory of ``pid`` in bytes (VmRSS)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError("no VmRSS")


def process_cpu(pid: int) -> float:
    """utime + stime of ``pid`` in seconds."""
    return stat_cpu(Path(f"/proc/{pid}/stat"))


def stat_cpu(stat: Path) -> float:
    """utime + stime in seconds from a /proc ``stat`` file (a process's or a thread's)."""
    fields = stat.read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def group_cpu(pgid: int) -> dict[int, float]:
    """utime + stime, in seconds, of every process in group ``pgid``, by pid."""
    found = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:  # gone meanwhile
            continue
        if int(fields[2]) == pgid:
            found[int(entry.name)] = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return found


def machine() -> dict[str, str]:
    model = next(
        (
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        ),
        platform.processor(),
    )
    return {
        "date": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "nproc": str(os.cpu_count()),
        "cpu": model,
        "python": platform.python_version(),
        "load_average": " ".join(f"{x:.2f}" for x in os.getloadavg()),
    }


def loadtest(*args: str, timeout: float = 900.0, environ: dict[str, str] | None = None) -> dict:
    """Run nea-loadtest with ``args`` (``environ`` added to its environment); its JSON report
    (whatever the exit code)."""
    report = Path(tempfile.mkstemp(prefix="nea-bench-loadtest-", suffix=".json")[1])
    try:
        process = spawn(
            [PYTHON, "-m", "nea.loadtest", "--json", str(report), *args],
            environ,
            stdout=subprocess.DEVNULL,
        )
        process.wait(timeout)
        _started.remove(process)
        return json.loads(report.read_text())
    finally:
        report.unlink(missing_ok=True)


def relay_load_options(parser, outstanding: str) -> None:
    """The options of a persistent-connection relay load (relay_throughput, cluster),
    the daemon's limits among them: every run sets them rather than inherit defaults."""
    parser.add_argument("--connections", type=int, default=50)
    parser.add_argument(
        "--window", type=int, default=20, help=f"{outstanding} outstanding per connection"
    )
    parser.add_argument("--warmup", type=float, default=2.0)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument(
        "--max-rate",
        type=float,
        default=0.0,
        help="the daemon's --max-rate, lines a second per client (0: no limit)",
    )
    parser.add_argument(
        "--max-pending",
        type=int,
        default=1000,
        help="the daemon's --max-pending, relays or asks one client may await",
    )


def limit_args(args, max_rate: float | None = None) -> tuple[str, ...]:
    """The daemon options that set the limits of a relay load (``max_rate`` overrides)."""
    rate = args.max_rate if max_rate is None else max_rate
    return ("--max-rate", f"{rate:g}", "--max-pending", str(args.max_pending))


def limits_text(args, max_rate: float | None = None) -> str:
    """The limits a relay load runs under, as its figures state them."""
    rate = args.max_rate if max_rate is None else max_rate
    return (
        f"max-rate {f'{rate:g} lines/s' if rate else 'off'}, max-pending "
        f"{args.max_pending}, clients {args.connections} x {args.window} outstanding"
    )


def percentile(values: list[float], p: float) -> float:
    """The ``p``-th percentile (0-100) of ``values``, nearest rank: one definition for
    every bench."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(p / 100 * len(ordered)))]


def ms_percentiles(seconds: list[float], *ps: float) -> str:
    """``"p50 1.13 p99 2.20 ms"``: the ``ps``-th percentiles of ``seconds``, in milliseconds."""
    return " ".join(f"p{p:g} {percentile(seconds, p) * 1e3:.2f}" for p in ps) + " ms"


def load_counts(report: dict) -> str:
    """How a nea-loadtest report's clients fared, as one line says it."""
    return (
        f"acked {report['acked']}/{report['clients']} lost {report['lost']} "
        f"retries {report['retries']} closes {report['closes']}"
    )


def load_latency(report: dict) -> str:
    """A nea-loadtest report's exchange and connect latency, as one line says them."""
    ex = report["latency_ms"]["exchange"]
    return (
        f"exchange p50 {ex['p50']} p90 {ex['p90']} p99 {ex['p99']} max {ex['max']} ms; "
        f"connect p99 {report['latency_ms']['connect']['p99']} ms"
    )


def load_cpu(report: dict, server: str = "", generator: str = "") -> str:
    """A nea-loadtest report's server and generator CPU; ``server`` and ``generator`` are
    added inside each one's parentheses."""
    return (
        f"server {report['server']['percent_of_a_core']}% of a core "
        f"({report['server']['cpu_us_per_client']} us/client{server}), generator "
        f"{report['generator']['percent_of_a_core']}% "
        f"({report['generator']['cpu_us_per_client']} us/client{generator})"
    )


def ticks(arrivals: list[list[float]], gap: float) -> list[list[float]]:
    """All date-line arrival times (one list per connection, as `holders.py` ``dates``
    reports them) grouped into ticks: a silence longer than ``gap`` separates two."""
    times = sorted(t for per_client in arrivals for t in per_client)
    groups: list[list[float]] = []
    for t in times:
        if groups and t - groups[-1][-1] < gap:
            groups[-1].append(t)
        else:
            groups.append([t])
    return groups


def run_reactor(make):
    """Run the reactor until the Deferred ``make()`` returns fires; return its result or raise."""
    from twisted.internet import reactor

    outcome = []
    reactor.callWhenRunning(
        lambda: make().addBoth(outcome.append).addBoth(lambda _: reactor.stop())
    )
    reactor.run()
    if isinstance(outcome[0], Failure):
        outcome[0].raiseException()
    return outcome[0]


def header(title: str) -> None:
    print(f"== {title}")
    print("   " + ", ".join(f"{k}: {v}" for k, v in machine().items()))
    sys.stdout.flush()


class Holders:
    """A `holders.py` child holding ``connections`` open in ``mode`` (see that script)."""

    def __init__(
        self,
        port: int,
        connections: int,
        mode: str,
        ca: Path | None = None,
        source: str = "127.0.50.1",
    ) -> None:
        argv = [
            PYTHON,
            str(ROOT / "bench" / "holders.py"),
            "--port",
            str(port),
            "--connections",
            str(connections),
            "--source",
            source,
            mode,
        ]
        if ca is not None:
            argv[2:2] = ["--tls", str(ca)]
        self.process = spawn(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE)

    def ready(self, timeout: float = 300.0) -> int:
        """Wait until every connection is up (handshakes done); how many there are."""
        line = readline(self.process, timeout)
        return json.loads(line)["ready"]

    def finish(self, timeout: float = 120.0) -> dict:
        """Close its stdin (the signal to stop); what it printed last, parsed."""
        self.process.stdin.close()
        line = readline(self.process, timeout)
        self.process.wait(timeout)
        _started.remove(self.process)
        return json.loads(line) if line else {}


def readline(process: subprocess.Popen, timeout: float) -> bytes:
    ready, _, _ = select.select([process.stdout], [], [], timeout)
    if not ready:
        raise TimeoutError(f"no answer from {process.args[1]} within {timeout} s")
    return process.stdout.readline()


def status(port: int, timeout: float = 10.0) -> dict:
    """The daemon's status, asked over a fresh plain-TCP connection to a ``nea`` listener.

    That connection can take relays, so lines other than the status reply
    (``message X`` pushes) may come first; they are skipped.
    """
    with socket.create_connection(("127.0.0.1", port), timeout) as s:
        s.sendall(b'{"cmd":"status"}\n')
        data = b""
        while True:
            while b"\n" not in data:
                chunk = s.recv(1 << 16)
                if not chunk:
                    raise OSError("the daemon closed the status connection")
                data += chunk
            line, data = data.split(b"\n", 1)
            if line.startswith(b'{"type":"status"'):
                return json.loads(line)["payload"]


def zero_state(state: dict) -> bool:
    """Nothing left but the asking connection: no relay, no handshake under way."""
    return (
        state["connections"] == 1
        and not state["relays"]["pending"]
        and not state["relays"]["in_flight"]
        and not state["handshakes"]["unfinished"]
    )


class Sampler:
    """Calls ``read()`` every ``interval`` seconds in a thread; keeps ``(t, value)`` pairs."""

    def __init__(self, read, interval: float = 1.0) -> None:
        import threading

        self.read = read
        self.interval = interval
        self.samples: list[tuple[float, object]] = []
        self._stop = threading.Event()
        self._t0 = time.monotonic()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                self.samples.append((round(time.monotonic() - self._t0, 1), self.read()))
            except (OSError, ValueError, KeyError, RuntimeError):
                pass  # the daemon is busy or gone: a missing sample, not a failure

    def stop(self) -> list[tuple[float, object]]:
        self._stop.set()
        self._thread.join(self.interval + 15)
        return self.samples


_PROGRESS = re.compile(
    r"\[\s*([\d.]+)s\] started (\d+)/\d+\s+acked (\d+)\s+failed (\d+)\s+active (\d+)"
    r"\s+retrying (\d+)\s+retries (\d+)"
)


def tls_load(port: int, certs_dir: Path, args, server_pid: int) -> "LoadRun":
    """nea-loadtest's seed-004 TLS load as ``hostile.py`` and ``handshake_gate.py`` run it:
    ``args`` gives clients, window, timeout, workers and max_active."""
    return LoadRun(
        "--port", str(port), "--ca", str(certs_dir / "ca.pem"), "--server-name", "localhost",
        "--clients", str(args.clients), "--window", str(args.window),
        "--timeout", str(args.timeout), "--workers", str(args.workers),
        "--max-active", str(args.max_active), "--no-status", "--server-pid", str(server_pid),
    )  # fmt: skip


class LoadRun:
    """nea-loadtest in its own process group, its progress lines kept as they come.

    ``progress`` holds ``{t, started, acked, failed, active, retrying, retries}``
    per progress line, so goodput over time can be told from the total. `finish`
    waits at most ``limit`` seconds; past it the whole group is killed and the
    report is None (the run did not complete).
    """

    def __init__(self, *args: str, environ: dict[str, str] | None = None) -> None:
        import threading

        self.report_path = Path(tempfile.mkstemp(prefix="nea-bench-loadtest-", suffix=".json")[1])
        self.process = spawn(
            [
                PYTHON,
                "-m",
                "nea.loadtest",
                "--json",
                str(self.report_path),
                "--progress",
                "1",
                *args,
            ],
            environ,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            start_new_session=True,
        )
        self.progress: list[dict] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        keys = ("t", "started", "acked", "failed", "active", "retrying", "retries")
        for raw in self.process.stderr:
            found = _PROGRESS.search(raw.decode("utf-8", "replace"))
            if found:
                values = [float(found.group(1)), *map(int, found.groups()[1:])]
                self.progress.append(dict(zip(keys, values, strict=True)))

    def finish(self, limit: float) -> dict | None:
        try:
            self.process.wait(limit)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(10)
        self._reader.join(10)
        _started.remove(self.process)
        try:
            text = self.report_path.read_text()
            return json.loads(text) if text else None
        finally:
            self.report_path.unlink(missing_ok=True)


def goodput(progress: list[dict], step: float = 5.0) -> list[tuple[float, float]]:
    """Acked clients per second in each ``step``-second interval of a run's progress."""
    points, last_t, last_acked = [], 0.0, 0
    for p in progress:
        if p["t"] - last_t >= step - 0.05:
            points.append((round(p["t"]), round((p["acked"] - last_acked) / (p["t"] - last_t))))
            last_t, last_acked = p["t"], p["acked"]
    if progress and progress[-1]["t"] - last_t > 0.5:  # the last, shorter interval
        p = progress[-1]
        points.append((round(p["t"]), round((p["acked"] - last_acked) / (p["t"] - last_t))))
    return points
