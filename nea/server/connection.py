"""One client connection: bytes in, requests to the hub; pushes out, with a bounded buffer.

The protocol parses and delegates; the hub decides. Output is watched: the
connection registers itself as a streaming producer on its transport, so it
hears when the transport's buffer is full. While that lasts it counts what is
still written to it (replies to its own requests and pushes from others); past
``max_outbound`` bytes the client is a slow consumer and is dropped, so one
stalled reader never grows the daemon's memory or holds up anyone else. (It does
not stop reading: TLS pauses producers during its handshake, and a connection
that stopped reading then would never finish it.)
"""

import time

from twisted.internet.interfaces import IPushProducer, ITCPTransport
from twisted.internet.protocol import Factory, Protocol
from twisted.logger import Logger
from zope.interface import implementer

from nea.core.hub import Hub
from nea.wire import codec, errors, frames
from nea.wire.codec import LineBuffer, LineTooLong
from nea.wire.frames import Encoding
from nea.wire.profiles import Profile

DEFAULT_MAX_OUTBOUND = 1024 * 1024


@implementer(IPushProducer)
class NeaConnection(Protocol):
    log = Logger()

    def __init__(self, hub: Hub, profile: Profile, max_line: int, max_outbound: int) -> None:
        self.hub = hub
        self.profile = profile
        self.max_outbound = max_outbound
        self.encoding = Encoding.TEXT
        self.id = hub.next_id()
        self.name = self.id
        self.since = time.time()
        self.bytes_in = 0
        self.bytes_out = 0
        self._lines = LineBuffer(max_line)
        self._closing = False
        self._paused = False
        self._unflushed = 0

    # ---- Protocol ----

    def connectionMade(self) -> None:
        if ITCPTransport.providedBy(self.transport):  # replies must not wait for ACKs (Nagle)
            self.transport.setTcpNoDelay(True)
        self.transport.registerProducer(self, True)
        self.hub.join(self)

    def dataReceived(self, data: bytes) -> None:
        self.bytes_in += len(data)
        self.hub.bytes_in += len(data)
        try:
            for line in self._lines.feed(data):
                if self._closing:
                    return
                self._handle(line)
        except LineTooLong:
            self.hub.reject(self, errors.LINE_TOO_LONG, f"limit is {self._lines.max_length} bytes")

    def _handle(self, line: bytes) -> None:
        request = codec.decode_request(line, self.profile)
        if (
            self.encoding is Encoding.TEXT
            and self.profile.json
            and line[:1] == b"{"
            and not (isinstance(request, frames.Invalid) and request.error is errors.BAD_JSON)
        ):
            self.encoding = Encoding.JSON
        self.hub.handle(self, request)

    def connectionLost(self, reason) -> None:
        self._closing = True
        self.hub.leave(self)

    # ---- nea.core.peer.Peer ----

    @property
    def peer_address(self) -> str:
        address = self.transport.getPeer()
        host, port = getattr(address, "host", None), getattr(address, "port", None)
        return f"{host}:{port}" if host is not None else str(address)

    def send(self, line: bytes) -> None:
        if self._closing:
            return
        self.bytes_out += len(line)
        self.hub.bytes_out += len(line)
        if self._paused:
            self._unflushed += len(line)
            if self._unflushed > self.max_outbound:
                self._drop_slow_consumer()
                return
        self.transport.write(line)

    def push(self, push: frames.Push) -> None:
        self.send(codec.encode_push(push, self.encoding))

    def close(self) -> None:
        if not self._closing:
            self._closing = True
            # TLS will not start its shutdown while a producer is registered.
            self.transport.unregisterProducer()
            self.transport.loseConnection()

    def abort(self) -> None:
        self._closing = True
        self.transport.abortConnection()

    def _drop_slow_consumer(self) -> None:
        self.log.info(
            "dropping slow consumer {peer} ({n} bytes unread)", peer=self.peer_address, n=self._unflushed
        )
        self.hub.errors[errors.SLOW_CONSUMER.code] += 1
        self.abort()

    # ---- IPushProducer: the transport tells us when its buffer is full ----

    def pauseProducing(self) -> None:
        self._paused = True

    def resumeProducing(self) -> None:
        self._paused = False
        self._unflushed = 0

    def stopProducing(self) -> None:
        self._closing = True


class NeaFactory(Factory):
    """Builds connections for one listener, all sharing the instance's hub."""

    noisy = False

    def __init__(
        self,
        hub: Hub,
        profile: Profile,
        max_line: int = codec.DEFAULT_MAX_LINE,
        max_outbound: int = DEFAULT_MAX_OUTBOUND,
    ) -> None:
        self.hub = hub
        self.profile = profile
        self.max_line = max_line
        self.max_outbound = max_outbound

    def buildProtocol(self, addr) -> NeaConnection:
        return NeaConnection(self.hub, self.profile, self.max_line, self.max_outbound)
