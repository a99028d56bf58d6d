"""The history store's cost per line: memory, SQLite and PostgreSQL in the same run.

Each line goes through the `StoreWriter` as the chat room's lines do (batches
of up to 100 lines per transaction, a queue of 1,000), and its latency is the
time from ``write`` to the Deferred firing with the stored line, that is, how
long a line waits before it may be fanned out. Two loads per store:

- serial: one line at a time (a quiet room): latency p50/p99;
- window: ``--window`` lines outstanding at all times (a busy room): lines per
  second, and latency p50/p99.

SQLite is a file in a temporary directory (WAL, synchronous=NORMAL, as nea runs
it); PostgreSQL is a fresh local server with fsync on (started as in the tests,
as ``nobody`` when run as root), reached over TCP on 127.0.0.1.

    .venv/bin/python bench/history_store.py [--serial 2000] [--lines 20000] [--window 200]
"""

import argparse
import shutil
import sys
import tempfile
import time
from pathlib import Path

import harness
from twisted.internet import defer, reactor

sys.path.insert(0, str(harness.ROOT))  # for tests.infra's PostgreSQL server

from nea.store.lines import Kind, Line  # noqa: E402
from nea.store.memory import MemoryStore  # noqa: E402
from nea.store.url import parse_store  # noqa: E402
from nea.store.writer import StoreWriter  # noqa: E402
from tests import infra  # noqa: E402


def said(i: int) -> Line:
    return Line.at(time.time(), Kind.CHAT, "bench", f"line {i} of the history benchmark")


@defer.inlineCallbacks
def serial(writer: StoreWriter, count: int):
    latencies = []
    for i in range(count):
        start = time.perf_counter()
        line = yield writer.write(said(i))
        latencies.append(time.perf_counter() - start)
        if line.id is None:
            raise RuntimeError(f"line {i} went unsaved: {writer.status}")
    return latencies


def windowed(writer: StoreWriter, count: int, window: int):
    """Keep ``window`` writes outstanding until ``count`` are done; their latencies."""
    done = defer.Deferred()
    latencies: list[float] = []
    state = {"sent": 0, "outstanding": 0, "filling": False}

    def finished(line, start):
        latencies.append(time.perf_counter() - start)
        state["outstanding"] -= 1
        if line.id is None and not done.called:
            done.errback(RuntimeError(f"a line went unsaved: {writer.status}"))
        fill()

    def fill():
        if state["filling"]:
            return  # a write that completed at once: the loop below goes on
        state["filling"] = True
        while state["outstanding"] < window and state["sent"] < count:
            state["sent"] += 1
            state["outstanding"] += 1
            writer.write(said(state["sent"])).addCallback(finished, time.perf_counter())
        state["filling"] = False
        if len(latencies) == count and not done.called:
            done.callback(latencies)

    fill()
    return done


@defer.inlineCallbacks
def measure(name: str, store, args):
    yield store.open()
    writer = StoreWriter(store, reactor, timeout=30.0)
    try:
        quiet = yield serial(writer, args.serial)
        start = time.perf_counter()
        busy = yield windowed(writer, args.lines, args.window)
        elapsed = time.perf_counter() - start
    finally:
        yield writer.stop()
        yield store.close()
    ms = 1000.0
    print(
        f"{name:<12} serial p50 {harness.percentile(quiet, 50) * ms:7.3f} ms  p99"
        f" {harness.percentile(quiet, 99) * ms:7.3f} ms | window {args.window}:"
        f" {args.lines / elapsed:9,.0f} lines/s  p50 {harness.percentile(busy, 50) * ms:7.2f} ms"
        f"  p99 {harness.percentile(busy, 99) * ms:7.2f} ms"
    )
    sys.stdout.flush()


@defer.inlineCallbacks
def run(args):
    directory = Path(tempfile.mkdtemp(prefix="nea-bench-history-"))
    postgresql = infra.PostgreSQLServer(durable=True)
    try:
        yield measure("memory", MemoryStore(), args)
        yield measure("sqlite", parse_store(f"sqlite:{directory}/history.db", reactor), args)
        yield postgresql.start()
        yield measure("postgresql", parse_store(postgresql.url, reactor), args)
    finally:
        yield postgresql.stop()
        shutil.rmtree(directory, ignore_errors=True)
        shutil.rmtree(postgresql.dir, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--serial", type=int, default=2000, help="lines written one at a time")
    parser.add_argument("--lines", type=int, default=20000, help="lines written with a window")
    parser.add_argument("--window", type=int, default=200, help="lines outstanding at once")
    args = parser.parse_args()
    harness.header("history store: cost per line through the writer")
    harness.run_reactor(lambda: run(args))


if __name__ == "__main__":
    main()
