"""Start-up: every failure is one line and a non-zero exit, under twist and twistd
alike (each run as a real process); a started daemon says where it listens."""

from pathlib import Path

from twisted.internet import defer, reactor, utils
from twisted.internet.endpoints import TCP4ClientEndpoint, wrapClientTLS
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.ssl import Certificate, optionsForClientTLS
from twisted.internet.testing import MemoryReactorClock
from twisted.logger import formatEvent, globalLogPublisher
from twisted.trial import unittest

from nea.client.status import fetch_status
from nea.net.listening import ListeningService
from nea.net.startup import StartupError
from tests import infra
from tests.support import (
    WAIT,
    certs,
    daemon_command,
    daemon_env,
    settle,
    start_server,
    tcp_listen,
    tls_listen,
    twistd_command,
)
from tests.test_http_api import fetch

RUNNERS = {"twist": daemon_command, "twistd": twistd_command}


@defer.inlineCallbacks
def run_failing(testcase, *args: str):
    """Run nea-server with ``args`` under each runner; {runner: (exit code, output lines)}."""
    cwd = testcase.mktemp()
    Path(cwd).mkdir()
    argvs = [command(*args) for command in RUNNERS.values()]
    runs = [
        utils.getProcessOutputAndValue(
            argv[0], argv[1:], env=daemon_env(), path=cwd, reactor=reactor
        ).addTimeout(6 * WAIT, reactor)
        for argv in argvs
    ]
    results = yield defer.gatherResults(runs)
    return {
        name: (code, (out + err).decode("utf-8", "replace").splitlines())
        for name, (out, err, code) in zip(RUNNERS, results, strict=True)
    }


class StartupFailures(unittest.TestCase):
    """Each failure the operator can cause: one line saying what, where, what to do."""

    timeout = 12 * WAIT

    @defer.inlineCallbacks
    def assertOneLine(self, args, *fragments: str):
        for runner, (code, lines) in (yield run_failing(self, *args)).items():
            said = [line for line in lines if "nea-server:" in line]
            context = f"{runner} {' '.join(args)}:\n" + "\n".join(lines)
            self.assertNotEqual(code, 0, context)
            self.assertEqual(len(said), 1, context)
            self.assertFalse([line for line in lines if "Traceback" in line], context)
            for fragment in fragments:
                self.assertIn(fragment, said[0], context)

    def busy_port(self) -> int:
        busy = reactor.listenTCP(0, Factory.forProtocol(Protocol), interface="127.0.0.1")
        self.addCleanup(busy.stopListening)
        return busy.getHost().port

    def test_a_busy_client_port(self):
        port = self.busy_port()
        return self.assertOneLine(
            ["--listen", f"tcp:{port}:interface=127.0.0.1"],
            f"cannot listen on tcp:{port}",
            "Address already in use",
            "another port with --listen",
        )

    def test_a_busy_http_port(self):
        port = self.busy_port()
        return self.assertOneLine(
            ["--listen", tcp_listen(), "--http", f"tcp:{port}:interface=127.0.0.1"],
            f"cannot listen on tcp:{port}",
            "(--http)",
            "another port with --http",
        )

    def test_a_missing_certificate(self):
        missing = Path(self.mktemp()).resolve() / "server.pem"
        return self.assertOneLine(
            ["--listen", f"ssl:0:privateKey={certs()}/server-key.pem:certKey={missing}"],
            f"cannot read {missing}",
            "No such file or directory",
            "point privateKey=",
        )

    def test_an_unreadable_key(self):
        # A directory: unreadable as a file even for root, who ignores mode bits.
        unreadable = Path(self.mktemp()).resolve()
        unreadable.mkdir()
        return self.assertOneLine(
            ["--listen", f"ssl:0:privateKey={unreadable}:certKey={certs()}/server.pem"],
            f"cannot read {unreadable}",
            "Is a directory",
        )

    def test_a_key_that_is_not_pem(self):
        garbage = Path(self.mktemp()).resolve()
        garbage.write_text("not a key\n")
        return self.assertOneLine(
            ["--listen", f"ssl:0:privateKey={garbage}:certKey={certs()}/server.pem"],
            f"{garbage} is not a PEM private key",
            "point privateKey=",
        )

    def test_an_unknown_endpoint_type(self):
        return self.assertOneLine(
            ["--listen", "tpc:8000"],
            "--listen tpc:8000",
            "not a valid endpoint",
            "Unknown endpoint type",
            "e.g. tcp:8000",
        )

    def test_an_unknown_endpoint_parameter(self):
        return self.assertOneLine(
            ["--http", "tcp:0:interfase=127.0.0.1"],
            "--http tcp:0:interfase=127.0.0.1",
            "unknown parameter 'interfase'",
        )

    def test_a_missing_token_file(self):
        missing = str(Path(self.mktemp()).resolve())
        return self.assertOneLine(
            ["--listen", tcp_listen(), "--admin-token-file", missing],
            f"--admin-token-file {missing}",
            "No such file or directory",
            "create it",
        )

    def test_an_empty_token_file(self):
        empty = Path(self.mktemp()).resolve()
        empty.write_text("\n")
        return self.assertOneLine(
            ["--listen", tcp_listen(), "--admin-token-file", str(empty)],
            "is empty",
        )

    def test_a_bad_redis_url(self):
        return self.assertOneLine(
            ["--listen", tcp_listen(), "--redis", "localhost:6379"],
            "expected redis://host[:port][/db]",
            "--redis redis://127.0.0.1:6379/0",
        )


class FirstRun(unittest.TestCase):
    """From a directory without certificates (a fresh clone), the daemon makes its
    development certificates before it builds its listeners, and serves them."""

    @defer.inlineCallbacks
    def test_generates_and_serves_development_certificates(self):
        home = Path(self.mktemp()).resolve()
        home.mkdir()
        port = infra.free_port()
        program = infra.Program(
            daemon_command(
                "--listen",
                f"ssl:{port}:interface=127.0.0.1:privateKey=certs/server-key.pem"
                ":certKey=certs/server.pem",
            ),
            env=daemon_env(),
            cwd=str(home),
        )
        program.start()
        self.addCleanup(program.stop)
        yield infra.wait_listening(program, port, timeout=3 * WAIT)
        # Its log line was written before it listened, but reaches us through a pipe this
        # reactor may read after the connection it polled with succeeded.
        yield settle(lambda: "generated development certificates" in program.output)
        ca = Certificate.loadPEM((home / "certs" / "ca.pem").read_bytes())
        endpoint = wrapClientTLS(
            optionsForClientTLS("localhost", ca),
            TCP4ClientEndpoint(reactor, "127.0.0.1", port, timeout=WAIT),
        )
        status = yield fetch_status(endpoint, reactor, tls=True, timeout=3 * WAIT)
        self.assertEqual(status["connections"], 1)


class Announcements(unittest.TestCase):
    """A started daemon logs one line per listener and the HTTP API's URLs."""

    def setUp(self):
        self.lines: list[str] = []
        observer = lambda event: self.lines.append(formatEvent(event))  # noqa: E731
        globalLogPublisher.addObserver(observer)
        self.addCleanup(globalLogPublisher.removeObserver, observer)

    @defer.inlineCallbacks
    def test_listeners_and_urls(self):
        service = yield start_server(
            self, "--listen", tls_listen("relay"), "--listen", tcp_listen()
        )
        relay, nea = service.ports
        base = f"http://127.0.0.1:{service.http_port}"
        self.assertIn(f"listening: profile relay, tls on 127.0.0.1:{relay}", self.lines)
        self.assertIn(f"listening: profile nea, tcp on 127.0.0.1:{nea}", self.lines)
        self.assertIn(
            f"HTTP API on 127.0.0.1:{service.http_port}: status page {base}/ , "
            f"API docs {base}/docs",
            self.lines,
        )

    @defer.inlineCallbacks
    def test_a_proxy_listener_says_proxy(self):
        service = yield start_server(self, "--listen", tls_listen("nea+proxy"))
        [port] = service.ports
        self.assertIn(
            f"listening: profile nea, tls on 127.0.0.1:{port}, proxy: each connection"
            " starts with a PROXY header",
            self.lines,
        )

    @defer.inlineCallbacks
    def test_no_access_log_by_default(self):
        service = yield start_server(self, "--listen", tcp_listen())
        yield fetch(service.http_port, "/healthz")
        self.assertFalse([line for line in self.lines if "/healthz" in line], self.lines)

    @defer.inlineCallbacks
    def test_access_log_to_a_file(self):
        path = Path(self.mktemp()).resolve()
        service = yield start_server(self, "--listen", tcp_listen(), "--http-access-log", str(path))
        yield fetch(service.http_port, "/healthz")
        self.assertIn('"GET /healthz HTTP/1.1" 200', path.read_text())
        self.assertFalse([line for line in self.lines if "/healthz" in line], self.lines)


class LaterFailure(unittest.TestCase):
    """An endpoint that fails after listen() returned: logged as one line, reactor stopped."""

    def test_reactor_stopped(self):
        pending = defer.Deferred()

        class Later:
            def listen(self, factory):
                return pending

        fake = MemoryReactorClock()
        lines: list[str] = []
        observer = lambda event: lines.append(formatEvent(event))  # noqa: E731
        globalLogPublisher.addObserver(observer)
        self.addCleanup(globalLogPublisher.removeObserver, observer)
        service = ListeningService(fake, "--listen", "later:1", Later(), Factory())
        service.startService()  # no StartupError: nothing has failed yet
        self.assertFalse(fake.hasStopped)
        pending.errback(OSError(98, "Address already in use"))
        self.assertTrue(fake.hasStopped)
        self.assertIn(
            "cannot listen on later:1 (--listen): Address already in use; another "
            "process holds it (`ss -ltnp` shows which): stop that process or give "
            "another port with --listen",
            lines,
        )

    def test_startup_error_is_a_clean_exit(self):
        error = StartupError("x failed")
        self.assertIsInstance(error, SystemExit)
        self.assertEqual(error.code, "nea-server: x failed")
