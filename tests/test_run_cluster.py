"""``make run-cluster`` (deploy/run_cluster.py): started as a user would, used through
HAProxy, stopped with Ctrl-C (SIGINT), after which nothing it started is left."""

import glob
import os
import re
import shutil
import socket
import sys
from pathlib import Path

from twisted.internet import defer, error
from twisted.trial import unittest

from nea.http import devtoken
from tests import infra, support
from tests.support import WAIT

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "deploy" / "run_cluster.py"


def refused(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=WAIT).close()
    except ConnectionRefusedError:
        return True
    return False


class RunCluster(unittest.TestCase):
    timeout = 12 * WAIT

    @defer.inlineCallbacks
    def test_serves_through_haproxy_and_ctrl_c_stops_everything(self):
        for program in ("redis-server", "haproxy"):
            if shutil.which(program) is None:
                raise unittest.SkipTest(f"needs {program} (make system-packages installs it)")
        ports = [infra.free_port() for _ in range(7)]
        proxy, one, two, http1, http2, redis, postgresql = ports
        token = Path(self.mktemp())
        devtoken.ensure(token)
        program = infra.Program(
            [
                sys.executable,
                str(SCRIPT),
                "--port",
                str(proxy),
                "--instance-ports",
                str(one),
                str(two),
                "--http-ports",
                str(http1),
                str(http2),
                "--redis-port",
                str(redis),
                "--postgresql-port",
                str(postgresql),
                "--certs",
                str(support.certs()),
                "--admin-token-file",
                str(token),
                "--logs",
                self.mktemp(),
            ],
            support.daemon_env(),
        )
        program.start()
        self.addCleanup(program.stop, "INT", 3 * WAIT)
        for _ in range(int(6 * WAIT / 0.05)):  # initdb and five programs on a shared machine
            if "Ctrl-C stops it all" in program.output or not program.running:
                break
            yield support.next_tick(0.05)
        self.assertIn("Ctrl-C stops it all", program.output)
        self.assertIn(f"127.0.0.1:{proxy}", program.output)
        self.assertIn(f"http://127.0.0.1:{http1}/chat", program.output)

        status = yield infra.status(self, proxy)  # TLS through HAProxy to an instance
        self.assertEqual(
            sorted(m["instance"] for m in status["cluster"]["members"]), ["nea1", "nea2"]
        )
        with_postgresql = bool(glob.glob(f"{infra.POSTGRESQL_BINS}/postgres"))
        expected = (
            f"postgresql://nea@127.0.0.1:{postgresql}/postgres" if with_postgresql else "none"
        )
        self.assertEqual(status["store"]["store"], expected)

        pids = [
            int(pid)
            for pid in re.findall(r"\w (\d+)", program.output.split("pids")[-1].splitlines()[0])
        ]
        self.assertEqual(len(pids), 5 if with_postgresql else 4, program.output)
        ended = []
        program.watcher.ended.addCallback(lambda reason: ended.append(reason) or reason)
        program.signal("INT")
        yield infra.watch(program.watcher.ended, 3 * WAIT)
        self.assertIsInstance(ended[0], error.ProcessDone, program.output)  # exit status 0
        for name in ("haproxy", "nea1", "nea2", "redis-server"):
            self.assertIn(f"stopped {name}", program.output)
        for pid in pids:
            self.assertRaises(ProcessLookupError, os.kill, pid, 0)
        for port in (proxy, one, two, http1, http2, redis):
            self.assertTrue(refused(port), port)
