"""nea-client against the real in-process server, over real TLS on loopback."""

import json
import sys
from pathlib import Path

from twisted.internet import defer, reactor
from twisted.internet.endpoints import SSL4ServerEndpoint
from twisted.internet.protocol import ProcessProtocol
from twisted.internet.ssl import Certificate, CertificateOptions, PrivateCertificate
from twisted.trial import unittest

from nea.client.delays import Constant
from nea.client.redial import DialConfig
from nea.client.relay import RelayClient, RelayConfig, RelayObserver
from nea.client.status import StatusError, fetch_status
from nea.server.connection import NeaFactory
from nea.tls import devcerts
from nea.tls.client import client_endpoint, client_tls_options
from nea.wire import profiles
from nea.wire.backoff import Backoff
from tests import infra
from tests.support import WAIT, certs, daemon_env, settle, start_server, tls_listen

#: Short delays so that every reconnect in these tests takes a fraction of a second.
QUICK = DialConfig(tls=True, backoff=Backoff(initial=0.05, maximum=0.3), give_up=WAIT)
QUICK_RELAY = RelayConfig(dial=QUICK, timeout=WAIT)


def tls_endpoint(port: int, hostname: str = "localhost", ca=None, with_cert: bool = False):
    d = certs()
    cert = key = None
    if with_cert:
        cert, key = d / devcerts.CLIENT_CERT, d / devcerts.CLIENT_KEY
    options = client_tls_options(hostname, ca or d / devcerts.CA_CERT, cert, key)
    return client_endpoint(reactor, "127.0.0.1", port, options, timeout=WAIT)


def tls_listen_on(port: int) -> str:
    """Like `tls_listen`, on a given port (to restart a server where its clients expect it)."""
    return tls_listen().replace("ssl:0:", f"ssl:{port}:")


class Watcher(RelayObserver):
    """Deferreds for the moments a test waits for, and a log of retries."""

    def __init__(self) -> None:
        self.forwarded: defer.Deferred = defer.Deferred()
        self.finished: defer.Deferred = defer.Deferred()
        self.retries: list[str] = []
        self.errors: list[str] = []

    def on_forwarded(self, client, text):
        if not self.forwarded.called:
            self.forwarded.callback(text)

    def on_retry(self, client, why, delay):
        self.retries.append(why)

    def on_error(self, client, error):
        self.errors.append(error.code)

    def on_finished(self, client):
        self.finished.callback(client.outcome)


class RelayOverTLS(unittest.TestCase):
    def relay(self, text, port, config=QUICK_RELAY, **endpoint):
        watcher = Watcher()
        client = RelayClient(text, tls_endpoint(port, **endpoint), reactor, config, watcher)
        client.start()
        self.addCleanup(client.stop)
        watcher.finished.addTimeout(WAIT, reactor)
        return client, watcher

    @defer.inlineCallbacks
    def test_two_relay_clients_exchange_message_and_ok(self):
        service = yield start_server(self, "--listen", tls_listen("relay"))
        port = service.ports[0]
        a, seen_a = self.relay("from-a", port)
        b, seen_b = self.relay("from-b", port)
        outcomes = yield defer.gatherResults([seen_a.finished, seen_b.finished])
        self.assertEqual(outcomes, ["acked", "acked"])
        self.assertEqual((a.sends, b.sends), (1, 1))
        relays = service.hub.snapshot().relays
        self.assertEqual((relays.requested, relays.forwarded, relays.acked), (2, 2, 2))
        # Both closed by the protocol: the server is back to zero state.
        yield settle(service.hub.zero_state)

    @defer.inlineCallbacks
    def test_relay_survives_a_server_restart(self):
        first = yield start_server(self, "--listen", tls_listen(), "--drain-timeout", "1")
        port = first.ports[0]
        # The only relay-capable connection, it is forwarded its own message and
        # would ack it after 1 s: the server goes away before that.
        config = RelayConfig(dial=QUICK, timeout=WAIT, ok_delay=Constant(1.0))
        client, watcher = self.relay("survivor", port, config)
        self.assertEqual((yield watcher.forwarded.addTimeout(WAIT, reactor)), "survivor")
        yield first.stopService()
        self.assertEqual(first.hub.snapshot().relays.acked, 0)
        second = yield start_server(self, "--listen", tls_listen_on(port))
        self.assertEqual((yield watcher.finished), "acked")
        self.assertEqual(client.sends, 2)
        self.assertEqual(second.hub.snapshot().relays.acked, 1)
        self.assertIn("shutting_down", watcher.errors)  # the first server said goodbye
        self.assertGreaterEqual(len(watcher.retries), 1)

    @defer.inlineCallbacks
    def test_client_started_before_the_server_waits_for_it(self):
        port = infra.free_port()  # nobody listens there yet
        client, watcher = self.relay("early", port)
        yield settle(lambda: len(watcher.retries) >= 2)
        self.assertEqual(set(watcher.retries), {"connection refused"})
        yield start_server(self, "--listen", tls_listen_on(port))
        self.assertEqual((yield watcher.finished), "acked")

    @defer.inlineCallbacks
    def test_wrong_host_name_is_refused(self):
        service = yield start_server(self, "--listen", tls_listen("relay"))
        client, watcher = self.relay("x", service.ports[0], hostname="wrong.example")
        self.assertEqual((yield watcher.finished), "tls_failed")
        self.assertIn("not valid for wrong.example", client.detail)
        self.assertEqual(client.sends, 0)
        self.assertEqual(service.hub.snapshot().relays.requested, 0)


class StatusOverTLS(unittest.TestCase):
    @defer.inlineCallbacks
    def test_status_names_the_instance(self):
        service = yield start_server(self, "--listen", tls_listen())
        status = yield fetch_status(tls_endpoint(service.ports[0]), reactor, tls=True)
        self.assertEqual(status["instance"], "test")
        self.assertEqual(status["connections"], 1)

    @defer.inlineCallbacks
    def test_hostname_is_verified(self):
        service = yield start_server(self, "--listen", tls_listen())
        port = service.ports[0]
        # The certificate is for localhost and 127.0.0.1: both pass, another name does not.
        for good in ("localhost", "127.0.0.1"):
            yield fetch_status(tls_endpoint(port, hostname=good), reactor, tls=True)
        failure = yield self.assertFailure(
            fetch_status(tls_endpoint(port, hostname="wrong.example"), reactor, tls=True),
            StatusError,
        )
        self.assertTrue(failure.tls_refused)

    @defer.inlineCallbacks
    def test_another_ca_is_not_trusted(self):
        service = yield start_server(self, "--listen", tls_listen())
        other = self.mktemp()
        devcerts.generate(Path(other))
        ca = f"{other}/{devcerts.CA_CERT}"
        failure = yield self.assertFailure(
            fetch_status(tls_endpoint(service.ports[0], ca=ca), reactor, tls=True, ca=ca),
            StatusError,
        )
        self.assertTrue(failure.tls_refused)
        self.assertIn(f"does not verify against the CA in {ca}", str(failure))

    @defer.inlineCallbacks
    def test_client_certificate_is_presented_when_required(self):
        service = yield start_server(self, "--listen", tls_listen())
        port = yield self.listen_requiring_client_certs(service.hub)
        status = yield fetch_status(tls_endpoint(port, with_cert=True), reactor, tls=True)
        self.assertEqual(status["instance"], "test")
        failure = yield self.assertFailure(
            fetch_status(tls_endpoint(port), reactor, tls=True), StatusError
        )
        self.assertFalse(failure.tls_refused)  # the server refused us, not we the server

    def listen_requiring_client_certs(self, hub):
        """A TLS listener for ``hub`` that demands a certificate signed by the dev CA."""
        d = certs()
        server = PrivateCertificate.loadPEM(
            (d / devcerts.SERVER_CERT).read_bytes() + (d / devcerts.SERVER_KEY).read_bytes()
        )
        ca = Certificate.loadPEM((d / devcerts.CA_CERT).read_bytes())
        options = CertificateOptions(
            privateKey=server.privateKey.original,
            certificate=server.original,
            verify=True,
            requireCertificate=True,
            caCerts=[ca.original],
        )
        endpoint = SSL4ServerEndpoint(reactor, 0, options, interface="127.0.0.1")
        listening = endpoint.listen(NeaFactory(hub, profiles.NEA))

        def started(port):
            self.addCleanup(port.stopListening)
            return port.getHost().port

        return listening.addCallback(started)


class Collect(ProcessProtocol):
    """Feeds ``stdin`` to a child, then closes it; ``ended`` fires with (out, err, code)."""

    def __init__(self, stdin: bytes) -> None:
        self.stdin = stdin
        self.out = self.err = b""
        self.ended: defer.Deferred = defer.Deferred()

    def connectionMade(self) -> None:
        self.transport.write(self.stdin)
        self.transport.closeStdin()

    def outReceived(self, data: bytes) -> None:
        self.out += data

    def errReceived(self, data: bytes) -> None:
        self.err += data

    def processEnded(self, reason) -> None:
        self.ended.callback((self.out, self.err, reason.value.exitCode))

    def kill(self) -> None:
        if not self.ended.called:
            self.transport.signalProcess("KILL")
            return self.ended.addErrback(lambda _: None)


#: ``python -m nea.client``: the console script's twin, runnable without installing.
PYTHON_M = (sys.executable, "-m", "nea.client")


class ConsoleScript(unittest.TestCase):
    """The real command, as a separate process."""

    def run_client(self, port, *args, stdin: bytes = b"", command=PYTHON_M, ca=None, cwd=None):
        """(stdout, stderr, exit code) of ``nea-client --port PORT --ca CA ARGS``.

        ``ca`` defaults to the dev CA; ``ca=""`` leaves ``--ca`` out.
        """
        ca = str(certs() / devcerts.CA_CERT) if ca is None else ca
        argv = [*command, "--port", str(port), *(["--ca", ca] if ca else []), *args]
        process = Collect(stdin)
        reactor.spawnProcess(process, argv[0], argv, env=daemon_env(), path=cwd)
        self.addCleanup(process.kill)
        # A fresh Python importing Twisted: slow on a loaded machine, hence the wide bound.
        return process.ended.addTimeout(3 * WAIT, reactor)

    @defer.inlineCallbacks
    def test_status_prints_json(self):
        # The console script pip installed from setup.cfg, next to this Python.
        script = Path(sys.executable).parent / "nea-client"
        if not script.exists():
            raise unittest.SkipTest(f"{script} is not installed (pip install -e .)")
        service = yield start_server(self, "--listen", tls_listen())
        out, err, code = yield self.run_client(service.ports[0], "status", command=[str(script)])
        self.assertEqual(code, 0, err)
        self.assertEqual(json.loads(out)["instance"], "test")

    @defer.inlineCallbacks
    def test_relay_mode_exits_zero_once_acked(self):
        service = yield start_server(self, "--listen", tls_listen("relay"))
        out, err, code = yield self.run_client(service.ports[0], "relay", "from", "a", "script")
        self.assertEqual(code, 0, err)
        self.assertEqual(out, b"ok from a script\n")
        self.assertEqual(service.hub.snapshot().relays.acked, 1)

    @defer.inlineCallbacks
    def test_wrong_host_name_exits_3(self):
        service = yield start_server(self, "--listen", tls_listen())
        out, err, code = yield self.run_client(
            service.ports[0], "--host", "127.0.0.1", "--server-name", "wrong.example", "status"
        )
        self.assertEqual((code, out), (3, b""))
        self.assertIn(
            b"the server's certificate is not valid for wrong.example (its CA is trusted; "
            b"--server-name sets the name to expect)",
            err,
        )

    @defer.inlineCallbacks
    def test_outside_the_checkout_the_missing_default_ca_points_at_ca(self):
        elsewhere = self.mktemp()
        Path(elsewhere).mkdir()
        out, err, code = yield self.run_client(3443, "status", ca="", cwd=elsewhere)
        self.assertEqual((code, out), (2, b""))
        self.assertEqual(
            err.decode(),
            "nea-client: cannot read the CA file certs/ca.pem: No such file or directory; "
            "name the CA that signed the server's certificate with --ca FILE\n",
        )

    @defer.inlineCallbacks
    def test_a_ca_file_that_is_no_certificate_is_named(self):
        readme = Path(__file__).resolve().parent.parent / "README.rst"
        out, err, code = yield self.run_client(3443, "status", ca=str(readme))
        self.assertEqual((code, out), (2, b""))
        self.assertEqual(
            err.decode(),
            f"nea-client: {readme} is not a PEM certificate "
            "(--ca needs the CA's certificate in PEM)\n",
        )

    @defer.inlineCallbacks
    def test_plain_status_against_a_tls_port_hints_at_tls(self):
        service = yield start_server(self, "--listen", tls_listen())
        out, err, code = yield self.run_client(service.ports[0], "--plain", "status")
        self.assertEqual((code, out), (1, b""))
        self.assertEqual(
            err.decode(),
            "nea-client: no status: closed by the server before it sent anything: "
            "if the port wants TLS, leave out --plain\n",
        )

    @defer.inlineCallbacks
    def test_a_wrong_ca_is_named_and_what_failed_said(self):
        service = yield start_server(self, "--listen", tls_listen("relay"))
        other = self.mktemp()
        devcerts.generate(Path(other))
        ca = f"{other}/{devcerts.CA_CERT}"
        for mode in (["status"], ["relay", "x"]):
            out, err, code = yield self.run_client(service.ports[0], *mode, ca=ca)
            self.assertEqual((code, out), (3, b""), mode)
            self.assertIn(
                f"the server's certificate does not verify against the CA in {ca} "
                "(signed by another CA, or out of date)\n",
                err.decode(),
            )
        self.assertEqual(service.hub.snapshot().relays.requested, 0)

    @defer.inlineCallbacks
    def test_unreadable_ca_file_exits_2(self):
        out, err, code = yield self.run_client(1, "status", ca=self.mktemp())
        self.assertEqual((code, out), (2, b""))
        self.assertIn(b"cannot read the CA file", err)
        self.assertIn(b"with --ca FILE", err)

    @defer.inlineCallbacks
    def test_interactive_mode_over_a_pipe(self):
        service = yield start_server(self, "--listen", tls_listen())
        out, err, code = yield self.run_client(
            service.ports[0], stdin="héllo\nmessage m1\n{oops\n".encode()
        )
        self.assertEqual(code, 0, err)
        shown = out.decode().splitlines()
        for expected in (
            "[welcome] you are c1 on instance test (profile nea)",
            "[reverse] olléh",
            "[relay] message m1",
            "[bye]",
        ):
            self.assertIn(expected, shown)
        self.assertTrue(any(line.startswith("[error bad_json] ") for line in shown), shown)
        self.assertEqual(shown[-1], "[bye]")
