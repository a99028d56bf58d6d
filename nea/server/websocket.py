"""WebSocket clients: the session of a line connection, framed in WebSocket messages.

autobahn speaks RFC 6455 (the opening handshake, masking, fragments, UTF-8 checks
of text messages, pings, the closing handshake); `nea.server.connection.Session`
does everything after framing exactly as for a line connection of the same
profile: joining and leaving the hub, the rate bucket (past it the socket is no
longer read), the outbound bound (a client that stops reading is dropped),
closing with a timeout. Each text message is one request as a JSON frame, for
every profile; each push is one text message.

What this framing adds to the session:

- The opening handshake must complete within ``handshake_timeout`` of the
  connection (of the TLS handshake's end, for ``wss``), sending no more than
  `MAX_HANDSHAKE` bytes meanwhile; else the socket is closed. Only then does the
  client join the hub.
- A message longer than ``max_line`` is ``line_too_long`` (answered, then the
  connection is closed). Frame headers announce their length, so it is known
  before the payload arrives, and nothing past the limit is kept.
- ``Origin`` is checked: a browser page of another site is refused with HTTP 403
  (`origin_allowed`); and a browser's handshake (one with an ``Origin``) must name
  one of the daemon's own hosts in ``Host`` (``--http-allowed-hosts``), else a page
  that rebound its own domain to this daemon's address would pass as same-origin.
- ``?token=`` on the upgrade URL is presented as ``auth TOKEN`` once the client
  has joined (a browser cannot set headers on a WebSocket).
- The client's close frame is its end of stream: what it is still owed is written,
  then the close is answered. Once autobahn ends the WebSocket on its own (a
  protocol violation), the session closes too, so that a client that then never
  reads is still aborted after the close timeout.
- Ping and pong frames are units of the session like messages: each takes a token
  of the rate bucket (a ping flood is throttled by backpressure as a message
  flood is) and is a sign of life (`nea.core.liveness`); the server's own pings
  are ping frames.

permessage-deflate is not offered: autobahn bounds an inflated message only
together with every message sent (one limit for both), and each compressed
connection holds a zlib window of its own.
"""

from collections.abc import Iterator
from urllib.parse import urlsplit

import attrs
from autobahn.twisted.websocket import WebSocketServerFactory, WebSocketServerProtocol
from autobahn.websocket.types import ConnectionDeny
from twisted.internet.interfaces import (
    IConsumer,
    IDelayedCall,
    IPushProducer,
    ISSLTransport,
    ITCPTransport,
    ITransport,
)
from twisted.internet.protocol import connectionDone
from twisted.protocols.tls import TLSMemoryBIOProtocol
from twisted.python.failure import Failure
from zope.interface import implementer

from nea.core.hub import Hub
from nea.http.hosts import AllowedHosts
from nea.server.admission import Admission
from nea.server.connection import ConnectionLimits, Session
from nea.wire import codec, errors, frames, profiles
from nea.wire.frames import Encoding
from nea.wire.profiles import Profile

#: Bytes a client may send before its opening handshake is complete (twisted.web's
#: bound on a request's headers).
MAX_HANDSHAKE = 16 * 1024
NORMAL_CLOSURE = 1000


@attrs.frozen
class WebSocketSettings:
    """What every WebSocket connection of one listener (or of ``/ws``) gets."""

    profile: Profile
    limits: ConnectionLimits = ConnectionLimits()
    #: Seconds for the opening handshake; 0: no deadline.
    handshake_timeout: float = 10.0
    #: Allowed ``Origin`` values; empty: the request's own host only.
    origins: tuple[str, ...] = ()
    #: The profile is the ``profile`` query parameter's (``/ws`` on the HTTP API).
    choose_profile: bool = False
    #: What a browser's handshake must carry in ``Host``.
    hosts: AllowedHosts = AllowedHosts(frozenset({"*"}))


def origin_allowed(origin: str | None, host: str | None, allowed: tuple[str, ...]) -> bool:
    """Whether a client sending ``Origin: origin`` to ``Host: host`` may connect.

    No Origin (a program, not a browser) is allowed. With ``allowed`` given, the
    Origin must be one of them (``*``: any); else its host and port must be the
    request's Host, so that only pages served by this daemon's host connect.
    """
    if not origin:
        return True
    if allowed:
        return "*" in allowed or origin.rstrip("/").lower() in allowed
    return host is not None and urlsplit(origin).netloc.lower() == host.strip().lower()


def parse_origins(value: str) -> tuple[str, ...]:
    """``--ws-allowed-origins``: comma-separated Origin values, compared case-insensitively."""
    return tuple(o.strip().rstrip("/").lower() for o in value.split(",") if o.strip())


@attrs.frozen
class Message:
    """One received WebSocket message: the unit of a WebSocket session."""

    payload: bytes
    binary: bool

    def __len__(self) -> int:
        return len(self.payload)


@attrs.frozen
class Control:
    """A received ping (``ping``) or pong frame: a unit too, so it costs its token."""

    payload: bytes
    ping: bool

    def __len__(self) -> int:
        return 2 + len(self.payload)  # (its header too: an empty pong is still heard)


class MessageSession(Session[Message | Control, frames.Request | Control]):
    """A WebSocket client's session; ``socket`` is the autobahn protocol that frames it."""

    def __init__(
        self,
        socket: "WebSocketConnection",
        hub: Hub,
        profile: Profile,
        limits: ConnectionLimits,
        admission: Admission | None,
    ) -> None:
        super().__init__(hub, profile, limits, admission)
        self.socket = socket
        self.encoding = Encoding.JSON

    def units(self, message: Message | Control) -> Iterator[Message | Control]:
        return iter((message,))

    def decode(self, message: Message | Control) -> frames.Request | Control:
        """A message's request; a control frame stays itself (`handle` answers it)."""
        if isinstance(message, Control):
            return message
        return codec.decode_message(message.payload, message.binary, self.grammar)

    def handle(self, unit: frames.Request | Control) -> None:
        if not isinstance(unit, Control):
            self.hub.handle(self, unit)
        elif unit.ping and not self.blocked:
            # (not while the client is not reading: pongs would pile up outside the
            # outbound bound)
            self.socket.pong(unit.payload)

    def ping(self) -> bool:
        self.socket.ping()
        return True

    def write(self, lines: list[bytes]) -> None:
        for line in lines:
            self.socket.deliver(line)

    def shut(self) -> None:
        self.socket.shut()


@implementer(ITransport, ITCPTransport, IConsumer, IPushProducer)
class StreamView:
    """nea's TLS layer as autobahn is to see it: the plain stream it is to a protocol.

    autobahn reads TLS details (the ``tls-unique`` channel binding) only from
    Twisted's own TLS wrapper and fails the connection on any other ISSLTransport;
    nea uses none of them. The session keeps the TLS transport itself (client
    certificates).
    """

    def __init__(self, transport) -> None:
        self._transport = transport

    def __getattr__(self, name: str):
        return getattr(self._transport, name)


class WebSocketConnection(WebSocketServerProtocol):
    """autobahn's side of one client: it frames; its `session` does the rest."""

    transport: ITCPTransport  # TCP, or TLS over it

    def __init__(
        self, hub: Hub, settings: WebSocketSettings, admission: Admission | None = None
    ) -> None:
        super().__init__()
        self.hub = hub
        self.settings = settings
        self.admission = admission
        self.session: MessageSession  # from makeConnection, which precedes all else
        self._deadline: IDelayedCall | None = None
        self._opened = False
        self._handshake_bytes = 0
        #: The client's close frame (code, reason), held until its answers are written.
        self._remote_close: tuple | None = None
        #: The message being received: its parts, or None while one is dropped.
        self._parts: list[bytes] | None = None
        self._size = 0
        self._binary = False
        #: The ``?token=`` of the upgrade URL, presented once the client has joined.
        self._token: str | None = None

    # ---- the connection ----

    def makeConnection(self, transport) -> None:
        self.session = MessageSession(
            self, self.hub, self.settings.profile, self.settings.limits, self.admission
        )
        self.session.makeConnection(transport)
        if ISSLTransport.providedBy(transport) and not isinstance(transport, TLSMemoryBIOProtocol):
            transport = StreamView(transport)
        super().makeConnection(transport)

    def connectionMade(self) -> None:
        super().connectionMade()
        if self.session.admit() and self.settings.handshake_timeout:
            self._deadline = self.hub.clock.callLater(
                self.settings.handshake_timeout, self._expired
            )

    def dataReceived(self, data: bytes) -> None:
        if self.session.closing and not self._opened:
            return  # refused at admission (``/ws`` hands its request over at once)
        if self.state == self.STATE_CONNECTING:
            self._handshake_bytes += len(data)
            if self._handshake_bytes > MAX_HANDSHAKE:
                self.transport.abortConnection()
                return
        super().dataReceived(data)
        if self._opened and self.state in (self.STATE_CLOSING, self.STATE_CLOSED):
            self.session.close()  # a close frame or a violation: autobahn is ending it

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        self._cancel_deadline()
        super().connectionLost(reason)
        self.session.connectionLost(reason)

    def _expired(self) -> None:
        self._deadline = None
        self.transport.abortConnection()

    def _cancel_deadline(self) -> None:
        if self._deadline is not None and self._deadline.active():
            self._deadline.cancel()
        self._deadline = None

    # ---- the opening handshake ----

    def onConnect(self, request):
        """Refuse a foreign Origin or Host (403) and, on ``/ws``, an unknown profile (400)."""
        host = request.headers.get("host")
        if not origin_allowed(request.origin, host, self.settings.origins):
            raise ConnectionDeny(ConnectionDeny.FORBIDDEN, "origin not allowed")
        if request.origin and not self.settings.hosts.allows(host):
            raise ConnectionDeny(ConnectionDeny.FORBIDDEN, "host not allowed")
        if self.settings.choose_profile:
            names = request.params.get("profile", [profiles.NEA.name])
            profile = profiles.BY_NAME.get(names[0]) if len(names) == 1 else None
            if profile is None:
                raise ConnectionDeny(
                    ConnectionDeny.BAD_REQUEST,
                    f"unknown profile; choose one of {', '.join(profiles.BY_NAME)}",
                )
            self.session.profile = profile
        tokens = request.params.get("token", [])
        if len(tokens) == 1:
            self._token = tokens[0]
        return None

    def onOpen(self) -> None:
        self._cancel_deadline()
        self._opened = True
        self.session.start()
        if self._token is not None and not self.session.closing:
            self.hub.authenticate(self.session, self._token)
            self._token = None

    # ---- receiving: messages counted as their frames arrive ----

    def onMessageBegin(self, isBinary: bool) -> None:
        self._parts, self._size, self._binary = [], 0, isBinary

    def onMessageFrameBegin(self, length: int) -> None:
        self._size += length
        if self._parts is not None and self._size > self.session.max_line:
            self._parts = None
            if not self.session.closing:
                self.hub.reject(
                    self.session, errors.LINE_TOO_LONG, f"limit is {self.session.max_line} bytes"
                )

    def onMessageFrameData(self, payload: bytes) -> None:
        if self._parts is not None:
            self._parts.append(payload)

    def onMessageFrameEnd(self) -> None:
        """Nothing: a message is handled whole."""

    def onMessageEnd(self) -> None:
        if self._parts is not None and self._remote_close is None:
            self.session.received(Message(b"".join(self._parts), self._binary))
        self._parts = None

    def onCloseFrame(self, code, reasonRaw):
        """The client's close frame is its end of stream: its answers go out, then our close.

        autobahn would answer it at once and drop what the session still owes."""
        if self.state != self.STATE_OPEN or self.session.closing or self._remote_close is not None:
            return super().onCloseFrame(code, reasonRaw)
        self._remote_close = (code, reasonRaw)
        self.session.end_of_input()
        return None

    def onPing(self, payload: bytes) -> None:
        """Answered by the session, at its rate."""
        self.session.received(Control(payload, ping=True))

    def onPong(self, payload: bytes) -> None:
        self.session.received(Control(payload, ping=False))

    # ---- sending (the session's) ----

    def deliver(self, line: bytes) -> None:
        """One encoded push as one text message (its line terminator is the line framing's)."""
        if self.state == self.STATE_OPEN:
            self.sendMessage(line[:-1])

    def ping(self) -> None:
        if self.state == self.STATE_OPEN:
            self.sendPing()

    def pong(self, payload: bytes) -> None:
        if self.state == self.STATE_OPEN:
            self.sendPong(payload)

    def shut(self) -> None:
        if self.state != self.STATE_OPEN:
            return
        if self._remote_close is not None:
            super().onCloseFrame(*self._remote_close)  # the reply to the client's close
        else:
            self.sendClose(NORMAL_CLOSURE)


class WebSocketFactory(WebSocketServerFactory):
    """Builds WebSocket connections for one listener (or for ``/ws``), sharing the hub.

    ``admission`` is given when these connections are the outermost protocol
    (plain TCP); under TLS the TLS layer admits the socket instead.
    """

    noisy = False

    def __init__(
        self, hub: Hub, settings: WebSocketSettings, admission: Admission | None = None
    ) -> None:
        super().__init__(server="nea", reactor=hub.clock)
        # nea keeps the deadlines (on the hub's clock) and the size limit itself.
        self.setProtocolOptions(
            webStatus=False,
            openHandshakeTimeout=0,
            closeHandshakeTimeout=0,
            failByDrop=False,
        )
        self.hub = hub
        self.settings = settings
        self.admission = admission

    def buildProtocol(self, addr) -> WebSocketConnection:
        protocol = WebSocketConnection(self.hub, self.settings, self.admission)
        protocol.factory = self
        return protocol


def listener_factory(
    hub: Hub, profile: Profile, settings: WebSocketSettings, admission: Admission | None
) -> WebSocketFactory:
    """The factory of a ``PROFILE+ws=ENDPOINT`` listener: ``settings`` for its profile."""
    return WebSocketFactory(hub, attrs.evolve(settings, profile=profile), admission)
