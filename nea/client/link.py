"""One connection to a nea server, as seen by a client: lines in, pushes out to an owner.

The link knows framing and TLS, nothing about what the client wants; it reports
to its owner (a `nea.client.redial.Redialer`, or the status query):

- ``link_made(link)``: the TCP connection is up (TLS may still be negotiating);
- ``link_ready(link)``: the connection can be trusted: the TLS handshake has
  completed, or, over plain TCP, at once. Only this proves the server is
  really there, so it is what resets a client's reconnect backoff;
- ``link_line(link, line)``: a line from the server, terminator removed
  (`PushReader` decodes it into a push for owners that want one);
- ``link_lost(link, reason)``: the connection is gone.

Timers started with `later` belong to the connection and die with it, so a
delayed ``ok`` can never be written to a dead connection or to its successor.

The server's ``ping`` (text or JSON) is answered ``pong`` here, in the same form,
and not reported: a client that only listens is not closed as silent.
"""

from collections.abc import Callable
from typing import Any

from twisted.internet.interfaces import IHandshakeListener, ITCPTransport
from twisted.internet.protocol import Factory, Protocol, connectionDone
from twisted.python.failure import Failure
from zope.interface import implementer

from nea.wire import codec, frames
from nea.wire.codec import MAX_SERVER_LINE, LineBuffer, LineTooLong
from nea.wire.frames import Encoding

#: The server's pings, and their answers.
_PONGS = {
    codec.encode_push(frames.PingPush(), encoding).rstrip(b"\n"): codec.encode_request(
        frames.Pong(), encoding
    )
    for encoding in Encoding
}


@implementer(IHandshakeListener)
class ServerLink(Protocol):
    transport: ITCPTransport  # TCP, or TLS over it

    def __init__(self, owner, clock, tls: bool) -> None:
        self.owner = owner
        self.clock = clock
        self.tls = tls
        self.ready = False
        #: Why this side closed the link (e.g. "timeout"); None if the server or network did.
        self.closed_because: str | None = None
        #: Whether the server has sent anything at all.
        self.heard = False
        self._lines = LineBuffer(MAX_SERVER_LINE)
        self._timers: list | None = None

    # ---- Protocol ----

    def connectionMade(self) -> None:
        # Without it, a line written while an earlier one is unacknowledged (an
        # ``ok Y`` after ``message X``) waits for the server's delayed ACK (Nagle).
        if ITCPTransport.providedBy(self.transport):
            self.transport.setTcpNoDelay(True)
        self.owner.link_made(self)
        if not self.tls:
            self._ready()

    def handshakeCompleted(self) -> None:
        self._ready()

    def _ready(self) -> None:
        if self.closed_because is None:
            self.ready = True
            self.owner.link_ready(self)

    def dataReceived(self, data: bytes) -> None:
        self.heard = True
        try:
            for line in self._lines.feed(data):
                if self.closed_because is not None:
                    return
                pong = _PONGS.get(line)
                if pong is not None:
                    self.transport.write(pong)
                    continue
                self.owner.link_line(self, line)
        except LineTooLong:
            self.close("the server sent an over-long line", abort=True)

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        for call in self._timers or ():
            call.cancel()
        self._timers = None
        self.owner.link_lost(self, reason)

    # ---- for the owner ----

    def send(self, request: frames.Request, encoding: Encoding = Encoding.TEXT) -> None:
        self.send_line(codec.encode_request(request, encoding))

    def send_line(self, line: bytes) -> None:
        """Send one line; the terminator is added when missing."""
        if not line.endswith(b"\n"):
            line += b"\n"
        self.transport.write(line)

    def later(self, delay: float, f: Callable[..., Any], *args: Any) -> None:
        """Call ``f(*args)`` after ``delay`` seconds unless the connection is lost first."""
        if self._timers is None:
            self._timers = []
        timers = self._timers

        def fire() -> None:
            timers.remove(call)
            f(*args)

        call = self.clock.callLater(delay, fire)
        timers.append(call)

    def close(self, because: str, abort: bool = False) -> None:
        """Close from this side: politely (TLS close_notify) or, with ``abort``, at once."""
        if self.closed_because is not None:
            return
        self.closed_because = because
        if abort:
            self.transport.abortConnection()
        else:
            self.transport.loseConnection()


class PushReader:
    """For owners that take a server's lines decoded: ``link_push(link, push)``."""

    __slots__ = ()

    def link_line(self, link: ServerLink, line: bytes) -> None:
        self.link_push(link, codec.decode_push(line))

    def link_push(self, link: ServerLink, push: frames.Push) -> None:
        """The server sent ``push``."""


class LinkFactory(Factory):
    """Builds the `ServerLink` for one dial of ``owner``."""

    noisy = False

    def __init__(self, owner, clock, tls: bool) -> None:
        self.owner = owner
        self.clock = clock
        self.tls = tls

    def buildProtocol(self, addr) -> ServerLink:
        return ServerLink(self.owner, self.clock, self.tls)
