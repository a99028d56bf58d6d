"""TLS policy and mutual TLS, with real handshakes: nea's own client, OpenSSL's
command-line client, the standard library's ssl and pyOpenSSL."""

import json
import socket
import ssl
import sys
import tempfile
from pathlib import Path

from OpenSSL import SSL
from twisted.internet import defer, protocol, reactor, threads, utils
from twisted.trial import unittest

from nea.tls import devcerts
from tests import infra
from tests.support import (
    WAIT,
    bounded_socket,
    certs,
    connect,
    daemon_env,
    settle,
    start_server,
    tls_listen,
)


def stdlib_handshake(port: int, **tweaks) -> str:
    """Handshake with the standard library's ssl; the negotiated version, or the error."""
    context = ssl.create_default_context(cafile=str(certs() / devcerts.CA_CERT))
    if "maximum_version" in tweaks:
        context.maximum_version = tweaks["maximum_version"]
    if "ciphers" in tweaks:
        context.set_ciphers(tweaks["ciphers"])
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=WAIT) as raw:
            with context.wrap_socket(raw, server_hostname="localhost") as tls:
                return tls.version()
    except (ssl.SSLError, OSError) as e:
        return f"refused: {e}"


def pyopenssl_group(port: int) -> str:
    """The key-exchange group a pyOpenSSL client negotiates with the server."""
    context = SSL.Context(SSL.TLS_CLIENT_METHOD)
    context.load_verify_locations(str(certs() / devcerts.CA_CERT))
    with bounded_socket("127.0.0.1", port) as sock:
        conn = SSL.Connection(context, sock)
        conn.set_tlsext_host_name(b"localhost")
        conn.set_connect_state()
        conn.do_handshake()
        group = conn.get_group_name()
        conn.shutdown()
        return group.decode() if isinstance(group, bytes) else group


class Policy(unittest.TestCase):
    @defer.inlineCallbacks
    def test_tls12_only_with_aead_suites_and_tls13(self):
        service = yield start_server(self, "--listen", tls_listen())
        port = service.ports[0]
        version = yield threads.deferToThread(stdlib_handshake, port)
        self.assertEqual(version, "TLSv1.3")
        version = yield threads.deferToThread(
            stdlib_handshake,
            port,
            maximum_version=ssl.TLSVersion.TLSv1_2,
            ciphers="ECDHE-ECDSA-AES128-GCM-SHA256",
        )
        self.assertEqual(version, "TLSv1.2")
        for cbc in (
            "ECDHE-ECDSA-AES128-SHA",
            "ECDHE-ECDSA-AES256-SHA384",
            "ECDHE-ECDSA-AES128-SHA256",
        ):
            refused = yield threads.deferToThread(
                stdlib_handshake, port, maximum_version=ssl.TLSVersion.TLSv1_2, ciphers=cbc
            )
            self.assertIn("refused", refused, cbc)
        old = yield threads.deferToThread(
            stdlib_handshake, port, maximum_version=ssl.TLSVersion.TLSv1_1
        )
        self.assertIn("refused", old)

    @defer.inlineCallbacks
    def test_min_version_13(self):
        service = yield start_server(self, "--listen", tls_listen(), "--tls-min-version", "1.3")
        port = service.ports[0]
        self.assertEqual((yield threads.deferToThread(stdlib_handshake, port)), "TLSv1.3")
        refused = yield threads.deferToThread(
            stdlib_handshake, port, maximum_version=ssl.TLSVersion.TLSv1_2
        )
        self.assertIn("refused", refused)

    @defer.inlineCallbacks
    def test_the_hybrid_post_quantum_group_is_negotiated_by_a_pyopenssl_client(self):
        service = yield start_server(self, "--listen", tls_listen())
        group = yield threads.deferToThread(pyopenssl_group, service.ports[0])
        if SSL.OpenSSL_version(SSL.OPENSSL_VERSION) < b"OpenSSL 3.5":
            raise unittest.SkipTest(f"this OpenSSL has no ML-KEM (negotiated {group})")
        self.assertEqual(group, "X25519MLKEM768")


class OpenSSLClient(protocol.ProcessProtocol):
    """``openssl s_client``: types ``hello`` and ``exit``, collects what it prints."""

    def __init__(self):
        self.output = b""
        self.ended = defer.Deferred()

    def connectionMade(self):
        self.transport.write(b"hello\nexit\n")

    def outReceived(self, data):
        self.output += data

    errReceived = outReceived

    def processEnded(self, reason):
        self.ended.callback(self.output)


def s_client(testcase, port: int, *args: str) -> defer.Deferred:
    argv = [
        "openssl",
        "s_client",
        "-quiet",
        "-connect",
        f"127.0.0.1:{port}",
        "-servername",
        "localhost",
        "-CAfile",
        str(certs() / devcerts.CA_CERT),
        *args,
    ]
    client = OpenSSLClient()
    process = reactor.spawnProcess(client, argv[0], argv)
    testcase.addCleanup(lambda: client.ended.called or process.signalProcess("KILL"))
    return infra.watch(client.ended, WAIT).addCallback(lambda _: client.output)


class MutualTLS(unittest.TestCase):
    @defer.inlineCallbacks
    def server(self, *args):
        self.service = yield start_server(
            self,
            "--listen",
            tls_listen(),
            "--tls-client-ca",
            str(certs() / devcerts.CA_CERT),
            *args,
        )
        return self.service.ports[0]

    @defer.inlineCallbacks
    def test_a_client_with_a_certificate_is_served_and_identified(self):
        port = yield self.server()
        client = yield connect(self, port, client_cert=True)
        client.send("hello")
        self.assertEqual((yield client.next()), b"olleh")
        [connection] = self.service.hub.connections(10)
        self.assertEqual(connection.identity, "nea-client")
        self.assertEqual(self.service.hub.snapshot().identified, 1)

    @defer.inlineCallbacks
    def test_openssl_s_client_with_and_without_a_certificate(self):
        port = yield self.server()
        d = certs()
        out = yield s_client(
            self, port, "-cert", str(d / devcerts.CLIENT_CERT), "-key", str(d / devcerts.CLIENT_KEY)
        )
        self.assertIn(b"olleh", out)
        out = yield s_client(self, port)
        self.assertNotIn(b"olleh", out)
        self.assertEqual(self.service.hub.snapshot().handshakes["failed"], 1)

    @defer.inlineCallbacks
    def test_a_certificate_from_another_ca_is_refused(self):
        port = yield self.server()
        other = Path(tempfile.mkdtemp(prefix="nea-other-ca-"))
        devcerts.generate(other)
        out = yield s_client(
            self,
            port,
            "-cert",
            str(other / devcerts.CLIENT_CERT),
            "-key",
            str(other / devcerts.CLIENT_KEY),
        )
        self.assertNotIn(b"olleh", out)
        yield settle(lambda: self.service.hub.snapshot().handshakes["failed"] == 1)
        self.assertEqual(self.service.hub.snapshot().connections, 0)

    @defer.inlineCallbacks
    def test_optional_serves_a_client_without_a_certificate(self):
        port = yield self.server("--tls-client-cert", "optional")
        client = yield connect(self, port)
        client.send("hello")
        self.assertEqual((yield client.next()), b"olleh")
        [peer] = self.service.hub.registry.peers
        self.assertIsNone(peer.identity)
        self.assertEqual(self.service.hub.snapshot().identified, 0)

    @defer.inlineCallbacks
    def test_nea_client_with_cert_and_key(self):
        port = yield self.server()
        d = certs()
        out, err, code = yield utils.getProcessOutputAndValue(
            sys.executable,
            [
                "-m",
                "nea.client",
                "--port",
                str(port),
                "--ca",
                str(d / devcerts.CA_CERT),
                "--cert",
                str(d / devcerts.CLIENT_CERT),
                "--key",
                str(d / devcerts.CLIENT_KEY),
                "status",
            ],
            env=daemon_env(),
            reactor=reactor,
        ).addTimeout(3 * WAIT, reactor)
        self.assertEqual(code, 0, err)
        self.assertEqual(json.loads(out)["instance"], "test")
