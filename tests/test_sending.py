"""`nea.net.sending.Sender`: writes at once while nothing is queued, in order always;
on a fake socket, then through the real service over plain TCP and TLS."""

import socket

from twisted.internet import defer, main, protocol, reactor
from twisted.internet.abstract import FileDescriptor
from twisted.internet.endpoints import TCP4ClientEndpoint
from twisted.internet.interfaces import IPushProducer
from twisted.internet.testing import MemoryReactorClock, StringTransport
from twisted.trial import unittest
from zope.interface import implementer

from nea.net.sending import Sender, SendingFactory, sender_for
from nea.wire import codec, frames
from tests.support import connect, settle, start_server, tcp_listen, tls_listen


class FakeSocket(FileDescriptor):
    """A connected file descriptor whose socket takes ``room`` bytes at a time."""

    def __init__(self, reactor) -> None:
        super().__init__(reactor)
        self.connected = 1
        self.room = 1 << 30
        self.sent = bytearray()
        self.calls = 0

    def writeSomeData(self, data) -> int:
        self.calls += 1
        taken = bytes(data[: self.room])
        self.sent += taken
        return len(taken)


@implementer(IPushProducer)
class Producer:
    def __init__(self) -> None:
        self.events: list[str] = []

    def pauseProducing(self) -> None:
        self.events.append("pause")

    def resumeProducing(self) -> None:
        self.events.append("resume")

    def stopProducing(self) -> None:
        self.events.append("stop")


class SenderTests(unittest.TestCase):
    def setUp(self):
        self.reactor = MemoryReactorClock()
        self.socket = FakeSocket(self.reactor)
        self.sender = Sender(self.socket)
        self.producer = Producer()
        self.sender.registerProducer(self.producer, True)

    def drain(self) -> None:
        """The reactor finds the socket writable."""
        self.socket.doWrite()

    def test_what_the_socket_takes_goes_at_once_and_nothing_waits_for_a_poll(self):
        self.sender.write(b"hello\n")
        self.assertEqual(bytes(self.socket.sent), b"hello\n")
        self.assertEqual(self.reactor.getWriters(), [])

    def test_the_rest_is_queued_and_later_writes_wait_behind_it(self):
        self.socket.room = 4
        self.sender.write(b"0123456789")
        self.sender.write(b"abc")
        self.assertEqual(bytes(self.socket.sent), b"0123")
        self.assertEqual(self.reactor.getWriters(), [self.socket])
        self.socket.room = 1 << 30
        self.drain()
        self.assertEqual(bytes(self.socket.sent), b"0123456789abc")
        calls = self.socket.calls
        self.sender.write(b"!")  # the queue is empty again: at once
        self.assertEqual((bytes(self.socket.sent[-1:]), self.socket.calls), (b"!", calls + 1))

    def test_its_producer_is_paused_past_the_buffer_size_and_resumed_once_all_is_out(self):
        self.socket.room = 0
        self.sender.write(b"x" * self.socket.bufferSize)
        self.assertEqual(self.producer.events, [])
        self.sender.write(b"y")
        self.assertEqual(self.producer.events, ["pause"])
        self.socket.room = 1 << 30
        self.drain()
        self.assertEqual(self.producer.events, ["pause", "resume"])
        self.assertEqual(len(self.socket.sent), self.socket.bufferSize + 1)

    def test_once_its_producer_unregisters_it_lets_go_of_the_transport(self):
        """So that the transport's loseConnection waits for the queue, and no longer."""
        self.assertIs(self.socket.producer, self.sender)
        self.sender.unregisterProducer()
        self.assertIsNone(self.socket.producer)
        calls = self.socket.calls
        self.sender.write(b"bye\n")
        self.assertEqual(self.socket.calls, calls)  # through the transport's queue
        self.socket.loseConnection()
        self.drain()
        self.assertEqual(bytes(self.socket.sent), b"bye\n")

    def test_a_lost_connection_stops_its_producer_and_writes_nothing_at_once(self):
        self.socket.connectionLost(None)
        self.assertEqual(self.producer.events, ["stop"])
        calls = self.socket.calls
        self.sender.write(b"late\n")
        self.assertEqual(self.socket.calls, calls)

    def test_a_pull_producer_is_handed_to_the_transport_and_writes_queue_from_then_on(self):
        """twisted.web registers one to serve a file: it writes when the transport asks."""
        sender, pull = Sender(self.socket_without_producer()), Producer()
        sender.registerProducer(pull, False)
        self.assertIs(sender.transport.producer, pull)
        sender.write(b"chunk")
        self.assertEqual(
            (sender.transport.calls, self.reactor.getWriters()), (0, [sender.transport])
        )

    def test_a_paused_producer_let_go_is_resumed(self):
        """(The transport pauses it again if its queue is still full.)"""
        self.socket.room = 0
        self.sender.write(b"x" * (self.socket.bufferSize + 1))
        self.sender.unregisterProducer()
        self.assertEqual(self.producer.events, ["pause", "resume"])

    def socket_without_producer(self) -> FakeSocket:
        return FakeSocket(self.reactor)

    def test_a_connection_closed_under_it_closes_once_its_queue_is_out(self):
        self.socket.room = 3
        self.sender.write(b"last words")
        self.socket.loseConnection()
        self.socket.room = 1 << 30
        self.assertIsNone(self.socket.doWrite())  # the queue is out; the sender lets go
        self.assertIs(self.socket.producer, self.producer)
        self.assertEqual(self.reactor.getWriters(), [self.socket])  # for the close
        self.assertEqual(self.socket.doWrite(), main.CONNECTION_DONE)
        self.assertEqual(bytes(self.socket.sent), b"last words")

    def test_a_transport_that_is_no_socket_is_written_as_it_is(self):
        transport = StringTransport()
        self.assertIs(sender_for(transport), transport)
        self.assertIsInstance(sender_for(FakeSocket(self.reactor)), Sender)


#: Replies the server writes to a client that does not read, well past what the kernel
#: buffers (the client's receive buffer is held at 64 KiB; the server's send buffer grows
#: to 4 MiB at most): the rest waits in the server's queue.
class Collector(protocol.Protocol):
    """The far end: what arrived once the connection closes."""

    def __init__(self, done: defer.Deferred) -> None:
        self.done, self.received = done, b""

    def dataReceived(self, data: bytes) -> None:
        self.received += data

    def connectionLost(self, reason=main.CONNECTION_DONE) -> None:
        self.done.callback(self.received)


class SendingFactoryOverTCP(unittest.TestCase):
    """A protocol that writes to its transport itself (as the Redis client does),
    wrapped in a `SendingFactory`, over a real loopback connection."""

    @defer.inlineCallbacks
    def test_what_it_writes_goes_at_once_and_arrives_in_order(self):
        done: defer.Deferred = defer.Deferred()
        port = reactor.listenTCP(
            0, protocol.Factory.forProtocol(lambda: Collector(done)), interface="127.0.0.1"
        )
        self.addCleanup(port.stopListening)
        endpoint = TCP4ClientEndpoint(reactor, "127.0.0.1", port.getHost().port)
        wrapper = yield endpoint.connect(
            SendingFactory(protocol.Factory.forProtocol(protocol.Protocol))
        )
        written = wrapper.wrappedProtocol.transport
        written.write(b"a" * 1000)
        written.writeSequence([b"b", b"c"])
        # Nothing waits for the reactor's next poll: the socket is not registered for it.
        self.assertNotIn(wrapper.transport, reactor.getWriters())
        written.loseConnection()
        self.assertEqual((yield done), b"a" * 1000 + b"bc")


LINES = 1500
LINE = "ab" * 2000


class ThroughTheServer(unittest.TestCase):
    """Over plain TCP; `ThroughTheServerOverTLS` runs the same over TLS."""

    timeout = 60
    tls = False

    @defer.inlineCallbacks
    def client_that_stops_reading(self, *args: str):
        listen = tls_listen() if self.tls else tcp_listen()
        self.service = yield start_server(
            self, "--listen", listen, "--max-rate", "0", "--date-interval", "3600", *args
        )
        client = yield connect(self, self.service.ports[0], tls=self.tls)
        client.send("ready")  # the server has its side of the handshake done: it answers
        self.assertEqual((yield client.next()), b"ydaer")
        tcp = client.transport.transport if self.tls else client.transport  # (under TLS)
        tcp.getHandle().setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)
        client.transport.pauseProducing()
        for i in range(LINES):
            client.send(f"{i:05d}{LINE}")
        return client

    @defer.inlineCallbacks
    def test_a_client_that_reads_late_gets_every_byte_in_order(self):
        client = yield self.client_that_stops_reading("--max-outbound", str(64 * 2**20))
        peers = self.service.hub.registry.peers
        yield settle(lambda: any(peer.blocked for peer in peers), timeout=30)
        client.transport.resumeProducing()
        replies = []
        for _ in range(LINES + 10):
            push = codec.decode_push((yield client.next(timeout=30)))
            if isinstance(push, frames.ReverseReply):
                replies.append(push.text)
                if len(replies) == LINES:
                    break
        self.assertEqual(replies, [f"{i:05d}{LINE}"[::-1] for i in range(LINES)])

    @defer.inlineCallbacks
    def test_a_client_that_never_reads_is_dropped_as_a_slow_consumer(self):
        yield self.client_that_stops_reading("--max-outbound", str(2**20))
        hub = self.service.hub
        yield settle(lambda: hub.snapshot().errors.get("slow_consumer", 0) == 1, timeout=30)
        yield settle(lambda: not list(hub.registry.peers))  # (the client, not reading, never knows)


class ThroughTheServerOverTLS(ThroughTheServer):
    tls = True
