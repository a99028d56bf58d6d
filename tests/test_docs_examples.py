"""The shell examples of README.rst and docs/http.rst, run as written against a
daemon started the way ``make run`` starts it.

``make -n run`` gives the exact commands of the recipe (certificates, the admin
token, twistd); they run in a scratch directory, so the checkout's own certs/
are untouched. Two things are substituted, and only these: free ports for 3443
and 3000 (other suites on this machine may hold those; ARGS gives the daemon the
same listeners on the free ports, and the examples' URLs and ports are rewritten
to match), and ``.venv/bin/`` becomes the bin directory of the Python running the
tests. ``nc`` (interactive) and the load test (its own tests) are not run here.
"""

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

from twisted.internet import defer, protocol, reactor, utils
from twisted.trial import unittest

from tests import infra
from tests.support import WAIT, daemon_env

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent


def shell_examples(path: Path, *starts: str) -> list[str]:
    """Lines in ``path``'s literal blocks that start with one of ``starts`` (after the
    indent), backslash continuations joined, "# comments" and "<- ..." notes dropped."""
    commands, pending = [], ""
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if pending:
            pending += " " + line
        elif raw.startswith("    ") and line.startswith(starts):
            pending = line
        else:
            continue
        if pending.endswith("\\"):
            pending = pending[:-1].rstrip()
            continue
        commands.append(re.sub(r"\s+# .*$", "", pending))
        pending = ""
    return commands


def make_run_commands(args: str) -> list[str]:
    """What ``make run ARGS=args`` would run, from ``make -n``."""
    result = subprocess.run(
        ["make", "-s", "-n", "-C", str(ROOT), "run", f"VENV={BIN.parent}", f"ARGS={args}"],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    return [line for line in result.stdout.splitlines() if line.strip()]


class OpenSSLClient(protocol.ProcessProtocol):
    """``openssl s_client -quiet`` with ``hello`` typed; ``answered`` fires on ``olleh``."""

    def __init__(self) -> None:
        self.output = b""
        self.answered = defer.Deferred()
        self.ended = defer.Deferred()

    def connectionMade(self) -> None:
        self.transport.write(b"hello\n")

    def outReceived(self, data: bytes) -> None:
        self.output += data
        if b"olleh\n" in self.output and not self.answered.called:
            self.answered.callback(self.output)

    def processEnded(self, reason) -> None:
        if not self.answered.called:
            self.answered.errback(AssertionError(f"s_client ended: {self.output!r}"))
        self.ended.callback(None)


class DocsExamples(unittest.TestCase):
    timeout = 12 * WAIT

    @defer.inlineCallbacks
    def setUp(self):
        if not (BIN / ".installed").exists() or shutil.which("make") is None:
            raise unittest.SkipTest("needs make and a venv made by `make venv`")
        self.cwd = Path(self.mktemp()).resolve()
        self.cwd.mkdir()
        self.tls, self.http = infra.free_port(), infra.free_port()
        args = (
            f"--listen ssl:{self.tls}:privateKey=certs/server-key.pem:certKey=certs/server.pem"
            f" --http tcp:{self.http}:interface=127.0.0.1"
        )
        *prepare, run = make_run_commands(args)
        self.assertEqual(len(prepare), 2, prepare)  # certificates, admin token
        self.assertIn("nea.tls.devcerts certs", prepare[0])
        self.assertIn("nea.http.devtoken certs/admin-token", prepare[1])
        self.assertIn("--admin-token-file certs/admin-token", run)
        for command in prepare:
            subprocess.run(
                ["bash", "-c", command],
                cwd=self.cwd,
                env=daemon_env(),
                check=True,
                capture_output=True,
                timeout=60,
            )
        self.assertEqual((self.cwd / "certs/admin-token").stat().st_mode & 0o777, 0o600)
        self.daemon = infra.Program(["bash", "-c", "exec " + run], daemon_env(), cwd=str(self.cwd))
        self.daemon.start()
        self.addCleanup(self.daemon.stop)
        yield infra.wait_listening(self.daemon, self.tls, timeout=3 * WAIT)
        yield infra.wait_listening(self.daemon, self.http, timeout=3 * WAIT)

    def substituted(self, command: str) -> str:
        command = command.replace("http://127.0.0.1:3000", f"http://127.0.0.1:{self.http}")
        command = command.replace("localhost:3443", f"localhost:{self.tls}")
        command = command.replace(".venv/bin/", f"{BIN}/")
        if "nea-client" in command:
            command += f" --port {self.tls}"
        return command

    @defer.inlineCallbacks
    def sh(self, command: str) -> str:
        out, err, code = yield utils.getProcessOutputAndValue(
            "bash",
            ["-c", self.substituted(command)],
            env=daemon_env(),
            path=str(self.cwd),
            reactor=reactor,
        ).addTimeout(3 * WAIT, reactor)
        text = out.decode("utf-8", "replace")
        self.assertEqual(code, 0, f"{command}\n{text}\n{err.decode('utf-8', 'replace')}")
        return text

    @defer.inlineCallbacks
    def test_http_rst_curl_examples(self):
        status, healthz, broadcast, relay = shell_examples(ROOT / "docs/http.rst", "curl ")
        self.assertIn('"instance"', (yield self.sh(status)))
        self.assertEqual((yield self.sh(healthz)), "200\n")
        self.assertEqual(json.loads((yield self.sh(broadcast)))["reached"], 0)
        # No client to take the relay: the documented 503, authorized (not a 401).
        self.assertEqual(json.loads((yield self.sh(relay)))["error"], "no_recipient")

    @defer.inlineCallbacks
    def test_readme_curl_and_client_examples(self):
        status, broadcast = shell_examples(ROOT / "README.rst", "curl ")
        self.assertIn('"instance"', (yield self.sh(status)))
        self.assertEqual(json.loads((yield self.sh(broadcast)))["reached"], 0)
        clients = shell_examples(ROOT / "README.rst", ".venv/bin/nea-client status")
        self.assertEqual(len(clients), 1, clients)
        self.assertIn('"instance"', (yield self.sh(clients[0])))

    @defer.inlineCallbacks
    def test_readme_openssl_example(self):
        [command] = shell_examples(ROOT / "README.rst", "openssl s_client")
        argv = ["bash", "-c", "exec " + self.substituted(command)]
        client = OpenSSLClient()
        process = reactor.spawnProcess(client, argv[0], argv, daemon_env(), path=str(self.cwd))
        self.addCleanup(lambda: client.ended)  # cleanups run last first: kill, then wait
        self.addCleanup(lambda: client.ended.called or process.signalProcess("KILL"))
        yield client.answered.addTimeout(WAIT, reactor)
