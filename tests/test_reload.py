"""SIGHUP reloads the TLS files without dropping anyone, and never kills the daemon.

The daemon runs as a real process, under ``twist`` and under ``twistd -n``.
"""

import json
import re
import shutil
import sys
import tempfile
from io import BytesIO
from pathlib import Path

from twisted.internet import defer, reactor
from twisted.internet.endpoints import TCP4ClientEndpoint, wrapClientTLS
from twisted.internet.protocol import Factory
from twisted.internet.ssl import Certificate, optionsForClientTLS
from twisted.trial import unittest
from twisted.web.client import Agent, FileBodyProducer, readBody
from twisted.web.http_headers import Headers

from nea.tls import devcerts
from nea.wire import frames
from tests import infra
from tests.support import HTTP_ANY_PORT, WAIT, LineClient, daemon_env, settle

#: twist logs JSON lines when its output is not a terminal.
HTTP_PORT = re.compile(r'"http_port": (\d+)')


def post(port: int, path: str, body: dict, token: str) -> defer.Deferred:
    """The HTTP status of ``POST path`` with ``body`` and the bearer ``token``."""
    agent = Agent(reactor)
    answer = agent.request(
        b"POST",
        f"http://127.0.0.1:{port}{path}".encode(),
        Headers(
            {b"Authorization": [f"Bearer {token}".encode()], b"Content-Type": [b"application/json"]}
        ),
        FileBodyProducer(BytesIO(json.dumps(body).encode())),
    )
    return answer.addCallback(
        lambda response: readBody(response).addCallback(lambda _: response.code)
    ).addTimeout(WAIT, reactor)


def fresh_certs() -> Path:
    directory = Path(tempfile.mkdtemp(prefix="nea-reload-"))
    devcerts.generate(directory)
    return directory


@defer.inlineCallbacks
def tls_client(testcase, port: int, ca: Path):
    """A connected line client that trusts only ``ca``; fails if the handshake does."""
    trust = Certificate.loadPEM((ca / devcerts.CA_CERT).read_bytes())
    endpoint = wrapClientTLS(
        optionsForClientTLS("localhost", trust),
        TCP4ClientEndpoint(reactor, "127.0.0.1", port, timeout=WAIT),
    )
    client = yield endpoint.connect(Factory.forProtocol(LineClient))
    testcase.addCleanup(
        lambda: (
            client.closed
            if client.closed.called
            else client.transport.abortConnection() or client.closed
        )
    )
    client.send("hello")
    answer = yield client.next_push()  # (dates skipped)
    testcase.assertEqual(answer, frames.ReverseReply("olleh"))
    return client


class SighupReload(unittest.TestCase):
    timeout = 120

    @defer.inlineCallbacks
    def check(self, runner: list[str]):
        served = fresh_certs()  # the files the daemon is told to serve
        first, second = fresh_certs(), fresh_certs()  # two CAs with their server certs
        for name in (devcerts.SERVER_CERT, devcerts.SERVER_KEY):
            shutil.copy(first / name, served / name)
        port = infra.free_port()
        listen = (
            f"ssl:{port}:interface=127.0.0.1:privateKey={served}/{devcerts.SERVER_KEY}"
            f":certKey={served}/{devcerts.SERVER_CERT}"
        )
        program = infra.Program(
            [*runner, "nea-server", *HTTP_ANY_PORT, "--listen", listen],
            daemon_env(),
            cwd=tempfile.mkdtemp(prefix="nea-daemon-"),
        )
        self.addCleanup(program.stop)
        program.start()
        yield infra.wait_listening(program, port, timeout=3 * WAIT)
        old = yield tls_client(self, port, first)

        for name in (devcerts.SERVER_CERT, devcerts.SERVER_KEY):
            shutil.copy(second / name, served / name)
        program.signal("HUP")
        yield settle(lambda: "reloaded" in program.output, timeout=3 * WAIT)
        yield tls_client(self, port, second)  # newcomers get the new certificate
        # Whichever way the handshake fails (here: no answer in time), it must fail.
        with self.assertRaises(Exception):  # noqa: B017
            yield tls_client(self, port, first)
        old.send("still here")
        self.assertEqual((yield old.next_push()), frames.ReverseReply("ereh llits"))  # not dropped

        (served / devcerts.SERVER_CERT).write_text("not a certificate\n")
        program.signal("HUP")
        yield settle(lambda: "still using the old one" in program.output, timeout=3 * WAIT)
        yield tls_client(self, port, second)
        self.assertTrue(program.running)
        self.assertNotIn("Traceback", program.output)

    @defer.inlineCallbacks
    def test_the_admin_token_file_is_read_again(self):
        directory = Path(tempfile.mkdtemp(prefix="nea-token-"))
        token_file = directory / "admin-token"
        token_file.write_text("first-token\n")
        program = infra.Program(
            [
                sys.executable,
                "-m",
                "twisted",
                "nea-server",
                *HTTP_ANY_PORT,
                "--listen",
                "tcp:0:interface=127.0.0.1",
                "--admin-token-file",
                str(token_file),
            ],
            daemon_env(),
            cwd=tempfile.mkdtemp(prefix="nea-daemon-"),
        )
        self.addCleanup(program.stop)
        program.start()
        yield settle(lambda: HTTP_PORT.search(program.output), timeout=3 * WAIT)
        port = int(HTTP_PORT.search(program.output).group(1))

        def broadcast(token):
            return post(port, "/broadcast", {"text": "hi"}, token)

        self.assertEqual((yield broadcast("first-token")), 200)
        token_file.write_text("second-token\n")
        program.signal("HUP")
        yield settle(lambda: '"log_format": "reloaded {what}"' in program.output, timeout=3 * WAIT)
        self.assertEqual((yield broadcast("first-token")), 401)
        self.assertEqual((yield broadcast("second-token")), 200)
        token_file.unlink()
        program.signal("HUP")
        yield settle(lambda: "still using the old one" in program.output, timeout=3 * WAIT)
        self.assertEqual((yield broadcast("second-token")), 200)  # kept

    def test_under_twist(self):
        return self.check([sys.executable, "-m", "twisted"])

    def test_under_twistd(self):
        twistd = str(Path(sys.executable).parent / "twistd")
        return self.check([twistd, "--nodaemon", "--pidfile=", "--logfile=-"])
