"""The TLS layer's write path in memory: a real pyOpenSSL client on the other side.

What the real-socket properties (tests/test_stream_integrity.py) cannot make happen
on demand: OpenSSL refusing plaintext until it has read from the peer, which is what
a renegotiation does (nea refuses those, but the layer must not depend on it).
"""

from OpenSSL import SSL
from twisted.internet import protocol
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.trial import unittest

from nea.server.admission import Admission
from nea.tls.server import HandshakeGate, TLSFiles, TLSServerFactory, server_context
from tests.support import certs
from tests.wire_clients import tls_context


class Received(protocol.Protocol):
    def __init__(self) -> None:
        self.data = b""

    def dataReceived(self, data: bytes) -> None:
        self.data += data


class MustReadFirst:
    """An OpenSSL connection that, as in the middle of a renegotiation, takes no
    plaintext (``WantReadError``) until it has been handed bytes from the peer."""

    def __init__(self, real: SSL.Connection) -> None:
        self.real = real
        self.blocked = True

    def __getattr__(self, name: str):
        return getattr(self.real, name)

    def bio_write(self, data: bytes) -> int:
        self.blocked = False
        return self.real.bio_write(data)

    def send(self, data) -> int:
        if self.blocked:
            raise SSL.WantReadError()
        return self.real.send(data)


class WritePath(unittest.TestCase):
    def setUp(self):
        d = certs()
        context = server_context(TLSFiles(d / "server-key.pem", d / "server.pem"))
        factory = TLSServerFactory(
            protocol.Factory.forProtocol(Received),
            lambda: context,
            Clock(),
            Admission(keepalive=0),
            HandshakeGate(),
        )
        self.tls = factory.buildProtocol(None)
        self.transport = StringTransport()
        self.tls.makeConnection(self.transport)
        self.client = SSL.Connection(tls_context(), None)
        self.client.set_tlsext_host_name(b"localhost")
        self.client.set_connect_state()
        for _ in range(10):
            try:
                self.client.do_handshake()
                break
            except SSL.WantReadError:
                self.exchange()
        self.exchange()
        self.assertIsInstance(self.tls.wrapped, Received)  # connected: the handshake is done

    def exchange(self) -> None:
        """Move what each side wrote to the other."""
        try:
            out = self.client.bio_read(1 << 20)
        except SSL.WantReadError:
            out = b""
        if out:
            self.tls.dataReceived(out)
        back = self.transport.value()
        self.transport.clear()
        if back:
            self.client.bio_write(back)

    def plaintext(self) -> bytes:
        received = b""
        for _ in range(1000):
            try:
                received += self.client.recv(1 << 16)
            except (SSL.WantReadError, SSL.ZeroReturnError):
                break
        return received

    def test_a_write_of_many_records_arrives_whole(self):
        data = bytes(range(256)) * 400  # 102,400 bytes: seven records
        self.tls.write(data)
        self.exchange()
        self.assertEqual(self.plaintext(), data)

    def test_what_openssl_cannot_take_yet_waits_in_order_and_the_close_behind_it(self):
        self.tls._tls = MustReadFirst(self.tls._tls)
        self.tls.write(b"a" * 20_000)
        self.tls.write(b"b" * 10)
        self.tls.loseConnection()
        self.assertEqual(self.transport.value(), b"")  # nothing could be encrypted yet
        self.assertFalse(self.transport.disconnecting)  # the close waits behind it
        self.client.send(b"x")  # the peer speaks: OpenSSL has read
        self.exchange()
        self.assertEqual(self.tls.wrapped.data, b"x")
        self.assertEqual(self.plaintext(), b"a" * 20_000 + b"b" * 10)
        self.assertTrue(self.transport.disconnecting)
        self.assertEqual(
            self.client.get_shutdown() & SSL.RECEIVED_SHUTDOWN, SSL.RECEIVED_SHUTDOWN
        )  # close_notify came after the data
