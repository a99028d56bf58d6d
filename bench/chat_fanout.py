"""Chat fan-out to line and WebSocket clients, history off, SQLite and PostgreSQL, in one run.

For each store a fresh daemon with a ``chat`` line listener and a ``chat+ws``
WebSocket listener. ``--ws`` WebSocket clients and ``--lines-clients`` line
clients join the room, held by `chatters.py` children (one per kind) so that
receiving costs the server's process nothing. A sender, a line client of its
own (the room does not echo a line to its sender, so it receives none of them),
joins last; every receiver must have seen it join before the timed part
starts. It then says ``--rate`` lines a second for ``--seconds``, each holding
its send time; every receiver timestamps each arrival. Reported: delivery
latency (send to arrival, over all receivers and lines) p50 and p99, lines
lost and duplicated, the server's CPU per line said (utime + stime from /proc,
from the first line until every receiver has the last), and the store's cost
per line: the server's CPU per line minus that of ``--store none``, the CPU of
the server's threads other than the reactor's (the store's writer thread; nea
reports no write times), and for PostgreSQL the CPU of its own processes.

SQLite is a file in a temporary directory; PostgreSQL a fresh local server with
fsync on (started as in the tests, as ``nobody`` when run as root), over TCP on
127.0.0.1.

    .venv/bin/python bench/chat_fanout.py [--ws 1000] [--line-clients 1000] [--rate 20] \
        [--seconds 20]
"""

import argparse
import json
import os
import queue
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import harness
from twisted.internet import defer, threads

sys.path.insert(0, str(harness.ROOT))  # for tests.infra's PostgreSQL server

from tests import infra  # noqa: E402

SENDER = "bench-sender"


class Chatters:
    """A `chatters.py` child: ``connections`` chat clients on ``port``, named ``name``-i.

    Its answers are read by a thread into a queue: they can come back to back
    (with no clients, all at once), and a buffered pipe would hide the second
    from a ``select`` on it.
    """

    def __init__(
        self, port: int, connections: int, name: str, lines: int, ws: bool, source: str
    ) -> None:
        argv = [
            harness.PYTHON,
            str(harness.ROOT / "bench" / "chatters.py"),
            "--port",
            str(port),
            "--connections",
            str(connections),
            "--name",
            name,
            "--sender",
            SENDER,
            "--lines",
            str(lines),
            "--source",
            source,
            *(["--ws"] if ws else []),
        ]
        self.process = harness.spawn(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE)
        self.answers: queue.Queue[bytes] = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        for line in self.process.stdout:
            self.answers.put(line)
        self.answers.put(b"")  # it exited

    def answer(self, key: str, timeout: float):
        try:
            line = self.answers.get(timeout=timeout)
        except queue.Empty:
            raise TimeoutError(f"no {key} from chatters.py within {timeout:g} s") from None
        if not line:
            raise RuntimeError(f"chatters.py exited with {self.process.wait(10)}")
        return json.loads(line)[key] if key else json.loads(line)

    def report(self, timeout: float) -> dict:
        """Its figures once every client has the last line; after ``timeout``, what it has."""
        try:
            return self.answer("", timeout)
        except TimeoutError:
            self.process.stdin.close()
            return self.answer("", 30)

    def stop(self) -> None:
        if not self.process.stdin.closed:
            self.process.stdin.close()
        harness.stop(self.process)


def join_sender(port: int) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), 30)
    sock.sendall(SENDER.encode() + b"\n")
    welcome, answer = f"* welcome {SENDER}\n".encode(), b""
    while welcome not in answer:
        chunk = sock.recv(4096)
        if not chunk:
            raise RuntimeError(f"the sender was not welcomed: {answer!r}")
        answer += chunk
    return sock


def say(sock: socket.socket, lines: int, rate: float) -> None:
    """``lines`` lines at ``rate`` a second, each ``SEQ SENT`` with the wall-clock send time."""
    start = time.monotonic()
    for seq in range(lines):
        delay = start + seq / rate - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        sock.sendall(f"{seq} {time.time():.6f}\n".encode())


def threads_cpu(pid: int) -> float:
    """utime + stime of the process's threads other than its main (reactor) thread."""
    tasks = [p for p in Path(f"/proc/{pid}/task").iterdir() if p.name != str(pid)]
    return sum(harness.stat_cpu(task / "stat") for task in tasks)


def tree_cpu(root: int | None) -> float:
    """utime + stime of ``root`` and its children (a PostgreSQL server's processes)."""
    if root is None:
        return 0.0
    total = harness.process_cpu(root)
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            if stat.read_text().rsplit(")", 1)[1].split()[1] == str(root):
                total += harness.stat_cpu(stat)
        except (OSError, IndexError):
            pass  # a process that ended meanwhile
    return total


def measure(store: str, store_arg: str, args, database_pid: int | None = None) -> dict:
    lines = int(args.rate * args.seconds)
    listens = (harness.tcp("chat"), harness.tcp("chat+ws"), harness.tcp("nea"))
    clients = args.ws + args.line_clients
    # The sender is the one chatter, and its rate is what is measured: no chat limit on it.
    extra = (
        "--store",
        store_arg,
        "--max-rate",
        str(max(1000.0, 2 * args.rate)),
        "--chat-rate",
        "0",
        "--chat-bytes-rate",
        "0",
    )
    with harness.Daemon(*listens, max_clients=clients + 10, extra=extra) as daemon:
        line_port, ws_port, status_port = daemon.ports
        groups = [
            Chatters(ws_port, args.ws, "ws", lines, True, "127.0.80.1"),
            Chatters(line_port, args.line_clients, "line", lines, False, "127.0.81.1"),
        ]
        try:
            joined = [g.answer("joined", 600) for g in groups]
            sender = join_sender(line_port)
            ready = [g.answer("ready", 600) for g in groups]
            assert joined == ready == [args.ws, args.line_clients], (joined, ready)
            before = daemon.cpu(), threads_cpu(daemon.pid), tree_cpu(database_pid)
            say(sender, lines, args.rate)
            reports = [g.report(60) for g in groups]
            after = daemon.cpu(), threads_cpu(daemon.pid), tree_cpu(database_pid)
            figures = harness.status(status_port)["store"]
            sender.close()
        finally:
            for g in groups:
                g.stop()
    latencies = [ms for r in reports for ms in r["latencies"]]
    cpu, store_thread, database = (
        (b - a) / lines * 1000 for a, b in zip(before, after, strict=True)
    )
    return {
        "store": store,
        "lines": lines,
        "deliveries": sum(r["received"] for r in reports),
        "expected": lines * clients,
        "lost": sum(r["missing"] for r in reports),
        "duplicates": sum(r["duplicates"] for r in reports),
        "p50": harness.percentile(latencies, 50) if latencies else None,
        "p99": harness.percentile(latencies, 99) if latencies else None,
        "max": max(latencies, default=None),
        "cpu_ms": cpu,
        "store_thread_ms": store_thread,
        "database_ms": database if database_pid else None,
        "stored": figures["stored"],
        "unsaved": figures["unsaved"],
        "state": figures["state"],
    }


@defer.inlineCallbacks
def run(args):
    """Every case in a thread (they block), while the reactor serves the PostgreSQL server."""
    directory = Path(tempfile.mkdtemp(prefix="nea-bench-chat-"))
    postgresql = infra.PostgreSQLServer(durable=True)
    rows = []
    try:
        for store in args.stores.split(","):
            if store == "postgresql":
                yield postgresql.start()
                case = (postgresql.url, args, postgresql.program.process.pid)
            else:
                case = (f"sqlite:{directory}/history.db" if store == "sqlite" else "none", args)
            rows.append((yield threads.deferToThread(measure, store, *case)))
            print_row(rows[-1], rows[0])
    finally:
        yield postgresql.stop()
        shutil.rmtree(directory, ignore_errors=True)
        shutil.rmtree(postgresql.dir, ignore_errors=True)
    return rows


def print_row(row: dict, baseline: dict) -> None:
    extra = "" if row["database_ms"] is None else f", postgres {row['database_ms']:.2f} ms"
    print(
        f"{row['store']:<10} {row['lines']} lines, {row['deliveries']}/{row['expected']}"
        f" delivered, lost {row['lost']}, duplicated {row['duplicates']};"
        f" latency p50 {row['p50']:.1f} ms, p99 {row['p99']:.1f} ms, max {row['max']:.1f} ms;"
        f" server CPU {row['cpu_ms']:.2f} ms/line"
        f" ({row['cpu_ms'] - baseline['cpu_ms']:+.2f} against none), store thread"
        f" {row['store_thread_ms']:.3f} ms/line{extra}; store {row['state']},"
        f" {row['stored']} stored, {row['unsaved']} unsaved",
        flush=True,
    )


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--ws", type=int, default=1000, help="WebSocket receivers")
    p.add_argument("--line-clients", type=int, default=1000, help="line receivers")
    p.add_argument("--rate", type=float, default=20.0, help="lines said a second")
    p.add_argument("--seconds", type=float, default=20.0, help="how long the sender speaks")
    p.add_argument(
        "--stores",
        default="none,sqlite,postgresql",
        help="the cases, in order; the first is the baseline of the cost per line",
    )
    args = p.parse_args()
    harness.header(
        f"chat fan-out: {args.rate:g} lines/s for {args.seconds:g} s to {args.ws}"
        f" WebSocket and {args.line_clients} line clients"
    )
    harness.run_reactor(lambda: run(args))
    print(f"   load average at the end: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")


if __name__ == "__main__":
    main()
