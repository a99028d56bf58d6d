"""The PROXY protocol: the header's grammar, any chunking, and real connections that
carry a client's address (over TCP, and before TLS)."""

import socket
import ssl
import struct

from hypothesis import given
from hypothesis import strategies as st
from twisted.internet import defer, protocol, threads
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.trial import unittest

from nea.server.proxyheader import V2_SIGNATURE, BadHeader, ProxyHeaderFactory, parse
from nea.tls import devcerts
from tests.support import WAIT, certs, settle, start_server, tcp_listen, tls_listen

V1 = b"PROXY TCP4 192.0.2.7 127.0.0.1 5555 3443\r\n"


def v2(host: str = "192.0.2.8", port: int = 6666, tlv: bytes = b"") -> bytes:
    body = socket.inet_aton(host) + socket.inet_aton("127.0.0.1") + struct.pack("!HH", port, 3443)
    body += tlv
    return V2_SIGNATURE + bytes([0x21, 0x11]) + struct.pack("!H", len(body)) + body


class Grammar(unittest.TestCase):
    def test_v1(self):
        parsed = parse(V1 + b"rest")
        self.assertEqual(
            (parsed.source.host, parsed.source.port, parsed.length), ("192.0.2.7", 5555, len(V1))
        )
        six = parse(b"PROXY TCP6 2001:db8::1 ::1 7 8\r\n")
        self.assertEqual((six.source.host, six.source.port), ("2001:db8::1", 7))
        self.assertIsNone(parse(b"PROXY UNKNOWN\r\n").source)

    def test_v2(self):
        parsed = parse(v2(tlv=b"\x04\x00\x01x") + b"rest")
        self.assertEqual((parsed.source.host, parsed.source.port), ("192.0.2.8", 6666))
        self.assertEqual(parsed.length, len(v2(tlv=b"\x04\x00\x01x")))
        local = V2_SIGNATURE + bytes([0x20, 0x00, 0, 0])
        self.assertEqual(parse(local).source, None)

    def test_more_is_needed(self):
        for header in (V1, v2()):
            for cut in range(len(header)):
                self.assertIsNone(parse(header[:cut]), cut)

    def test_not_a_header(self):
        for junk in (
            b"hello\n",
            b"\x16\x03\x01\x00\x05hello",
            b"PROXY TCP4 nonsense\r\n",
            b"PROXY " + b"x" * 200,
            V2_SIGNATURE + b"\x11\x11\x00\x00",
            b"\r\nnot the signature",
        ):
            with self.assertRaises(BadHeader, msg=junk):
                parse(junk)


class Recorder(protocol.Protocol):
    def connectionMade(self):
        self.data = b""
        self.peer = self.transport.getPeer()

    def dataReceived(self, data):
        self.data += data


class Wrapper(unittest.TestCase):
    def connect(self, clock=None):
        factory = ProxyHeaderFactory(protocol.Factory.forProtocol(Recorder), clock or Clock(), 5)
        wrapper = factory.buildProtocol(None)
        transport = StringTransport()
        wrapper.makeConnection(transport)
        return wrapper, transport, factory

    @given(
        st.sampled_from([V1, v2()]),
        st.binary(max_size=50),
        st.lists(st.integers(0, 200), max_size=6),
    )
    def test_any_chunking(self, header, payload, cuts):
        wrapper, _, _ = self.connect()
        data = header + payload
        points = sorted({c % (len(data) + 1) for c in cuts}) + [len(data)]
        start = 0
        for point in points:
            wrapper.dataReceived(data[start:point])
            start = point
        inner = wrapper.wrappedProtocol
        self.assertEqual(inner.data, payload)
        self.assertEqual(inner.peer.host, "192.0.2.7" if header == V1 else "192.0.2.8")

    def test_no_header_within_the_deadline_is_closed(self):
        clock = Clock()
        wrapper, transport, factory = self.connect(clock)
        clock.advance(5.1)
        self.assertTrue(transport.disconnected)
        self.assertEqual(factory.rejected, 1)

    def test_a_bad_header_is_closed_and_nothing_reaches_the_protocol(self):
        wrapper, transport, factory = self.connect()
        wrapper.dataReceived(b"hello\n")
        self.assertTrue(transport.disconnected)
        self.assertFalse(hasattr(wrapper.wrappedProtocol, "data"))


def exchange(port: int, data: bytes, tls: bool) -> bytes:
    """Send the PROXY header, then (over TLS when ``tls``) the line; what comes back."""
    with socket.create_connection(("127.0.0.1", port), timeout=WAIT) as sock:
        header, _, line = data.partition(b"||")
        sock.sendall(header)
        if tls:
            context = ssl.create_default_context(cafile=str(certs() / devcerts.CA_CERT))
            with context.wrap_socket(sock, server_hostname="localhost") as wrapped:
                wrapped.sendall(line)
                return wrapped.recv(1000)
        try:
            sock.sendall(line)
            return sock.recv(1000)
        except (ConnectionResetError, BrokenPipeError):  # refused at once (aborted)
            return b""


class RealConnections(unittest.TestCase):
    @defer.inlineCallbacks
    def test_the_clients_address_over_tcp_and_before_tls(self):
        service = yield start_server(
            self,
            "--listen",
            tcp_listen("nea+proxy"),
            "--listen",
            tls_listen("nea+proxy"),
            "--max-clients-per-ip",
            "1",
        )
        tcp, tls = service.ports
        for port, secure, header in ((tcp, False, V1), (tls, True, v2())):
            answer = yield threads.deferToThread(exchange, port, header + b"||hello\n", secure)
            self.assertEqual(answer, b"olleh\n")
        yield settle(lambda: not service.hub.snapshot().connections)

    @defer.inlineCallbacks
    def test_per_ip_limits_count_the_real_clients(self):
        service = yield start_server(
            self, "--listen", tcp_listen("nea+proxy"), "--max-clients-per-ip", "1"
        )
        port = service.ports[0]

        def hold():
            sock = socket.create_connection(("127.0.0.1", port), timeout=WAIT)
            sock.sendall(V1 + b"hello\n")
            return sock, sock.recv(100)

        first, answer = yield threads.deferToThread(hold)
        self.addCleanup(first.close)
        self.assertEqual(answer, b"olleh\n")
        [connection] = service.hub.connections(10)
        self.assertEqual(connection.peer, "192.0.2.7:5555")
        # Another client behind the same proxy is served; the same client again is not.
        other = yield threads.deferToThread(
            exchange, port, b"PROXY TCP4 192.0.2.99 127.0.0.1 1 2\r\n||hi\n", False
        )
        self.assertEqual(other, b"ih\n")
        again = yield threads.deferToThread(exchange, port, V1 + b"||hi\n", False)
        self.assertEqual(again, b"")
