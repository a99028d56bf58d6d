"""``--workers``: one supervisor, worker processes on its sockets, one cluster over a real
Redis; restarts, SIGHUP and SIGTERM, seen from outside as an operator would."""

import json
import os
import sys
import tempfile
from pathlib import Path

from twisted.internet import defer, error
from twisted.python import usage
from twisted.trial.unittest import TestCase

from nea.cluster.names import Namespace
from nea.server.options import Options
from nea.tls import devcerts
from tests import infra, support


class WorkersOptionsTest(TestCase):
    def test_more_than_one_needs_redis(self) -> None:
        with self.assertRaises(usage.UsageError) as raised:
            Options().parseOptions(["--workers", "2"])
        self.assertIn("--workers 2 needs --redis", str(raised.exception))

    def test_auto_is_one_per_core(self) -> None:
        options = Options()
        options.parseOptions(["--workers", "auto", "--redis", "redis://127.0.0.1:6379"])
        self.assertEqual(options["workers"], os.cpu_count())

    def test_one_is_a_single_instance(self) -> None:
        options = Options()
        options.parseOptions([])
        self.assertEqual(options["workers"], 1)


def events(output: str, namespace: str) -> list[dict]:
    """The JSON log events of ``namespace`` in a program's output."""
    found = []
    for line in output.splitlines():
        try:
            event = json.loads(line)
        except ValueError:
            continue
        if isinstance(event, dict) and event.get("log_namespace") == namespace:
            found.append(event)
    return found


def worker_pids(output: str) -> dict[int, int]:
    """The latest pid of each worker, from the supervisor's "worker K started" lines."""
    return {e["index"]: e["pid"] for e in events(output, "nea.server.workers") if "pid" in e}


def both_members(status: dict) -> bool:
    cluster = status["cluster"]
    names = sorted(m["instance"] for m in cluster["members"])
    return cluster["state"] == "connected" and names == ["box-w1", "box-w2"]


class WorkersTest(TestCase):
    timeout = 180

    @defer.inlineCallbacks
    def setUp(self):
        self.redis = yield infra.redis_server(self)
        self.daemon = infra.NeaDaemon(
            "box", "--workers", "2", "--redis", self.redis.url, "--heartbeat", "0.2"
        )
        self.addCleanup(self.daemon.stop)
        yield self.daemon.start()
        yield infra.until_status(self, self.daemon.port, both_members)

    def output(self) -> str:
        return self.daemon.program.output

    @defer.inlineCallbacks
    def until_output(self, condition, what: str):
        for _ in range(600):  # 30 s at most
            if condition(self.output()):
                return
            if not self.daemon.program.running:
                break
            yield support.next_tick(0.05)
        raise AssertionError(f"{what}: never seen in the output:\n{self.output()[-4000:]}")

    @defer.inlineCallbacks
    def served_by(self, port: int, tries: int = 60) -> defer.Deferred:
        """Which workers answered: up to ``tries`` clients in turn, until both have."""
        seen = set()
        for _ in range(tries):
            found = yield infra.status(self, port)
            seen.add(found["instance"])
            if len(seen) == 2:
                break
        return seen

    @defer.inlineCallbacks
    def test_clients_are_shared_and_a_killed_worker_comes_back(self):
        seen = yield self.served_by(self.daemon.port)
        self.assertEqual(seen, {"box-w1", "box-w2"})
        pids = worker_pids(self.output())
        os.kill(pids[1], 9)
        yield self.until_output(
            lambda out: worker_pids(out).get(1, pids[1]) != pids[1], "worker 1 restarted"
        )
        self.assertIn("worker {index} ended unexpectedly", self.output())
        yield infra.until_status(self, self.daemon.port, both_members)
        seen = yield self.served_by(self.daemon.port)
        self.assertEqual(seen, {"box-w1", "box-w2"})

    @defer.inlineCallbacks
    def test_relays_cross_between_the_workers(self):
        """nea-loadtest's relay clients land on both workers, each worker's relays reach
        the other's clients through its Redis inbox, and every relay is acked."""
        channels = [Namespace("nea").inbox(worker) for worker in ("box-w1", "box-w2")]
        inboxes = []
        for channel in channels:
            inboxes.append((yield self.redis.subscribe(self, channel)))
        report = Path(tempfile.mkdtemp(prefix="nea-load-")) / "report.json"
        clients = 40
        program = infra.Program(
            [sys.executable, "-m", "nea.loadtest", "--port", str(self.daemon.port)]
            + ["--ca", str(support.certs() / devcerts.CA_CERT), "--server-name", "localhost"]
            + ["--clients", str(clients), "--window", "2", "--json", str(report)]
            # Held long enough that the other worker's heartbeat shows them as targets.
            + ["--ok-delay", "uniform:1,2"],
            support.daemon_env(),
        )
        program.start()
        self.addCleanup(program.kill)
        yield infra.watch(program.watcher.ended, 120)
        figures = json.loads(report.read_text())
        self.assertEqual((figures["acked"], figures["lost"]), (clients, 0), figures)
        self.assertTrue(all(inbox.heard.pending for inbox in inboxes))
        for inbox, channel in zip(inboxes, channels, strict=True):
            yield inbox.unsubscribe([channel])

    @defer.inlineCallbacks
    def test_sighup_reaches_every_worker(self):
        def reloaded(out: str) -> int:
            return sum(
                e.get("what", "").startswith("TLS files of")
                for e in events(out, "nea.server.reload")
            )

        self.assertEqual(reloaded(self.output()), 0)
        self.daemon.program.signal("HUP")
        # Two TLS listeners in each of two workers.
        yield self.until_output(lambda out: reloaded(out) >= 4, "a reload in each worker")
        yield infra.until_status(self, self.daemon.port, both_members)

    @defer.inlineCallbacks
    def test_sigterm_drains_the_workers_and_exits_0(self):
        pids = worker_pids(self.output())
        ended = self.daemon.program.watcher.ended
        yield self.daemon.program.stop("TERM", timeout=3 * support.WAIT)
        self.assertIsInstance(ended.result, error.ProcessDone, self.output()[-4000:])
        for pid in pids.values():
            self.assertRaises(ProcessLookupError, os.kill, pid, 0)
        self.assertNotIn("ended unexpectedly", self.output())
