"""One client connection: bytes in, requests to the hub; pushes out, with a bounded buffer.

The protocol parses and delegates; the hub decides. `Session` is what a
connection is whatever its framing; `NeaConnection` frames it in lines (a
WebSocket framing lives in `nea.server.websocket`). What a session guards itself:

- Output is watched: the connection registers itself as a streaming producer on
  its transport, so it hears when the transport's buffer is full. While that
  lasts it counts what is still written to it; past ``max_outbound`` bytes the
  client is a slow consumer and is dropped, so one stalled reader never grows
  the daemon's memory or holds up anyone else.
- Input is rate-limited by backpressure: past ``max_rate`` lines a second
  (bursts of twice that) the connection stops reading until its bucket refills.
  Nothing is lost and nothing is answered with an error; the kernel's buffers,
  then TCP's flow control, hold the client back. Chat lines have a rate of their
  own, in lines and bytes (`nea.server.chatrate`), and wait the same way while
  the history store catches up (`Hub.chat_waits`).
- A close waits for what was written to go out, but not forever: a client that
  never reads is aborted ``CLOSE_TIMEOUT`` seconds after it was closed.
- After a fatal error nothing more from the connection is processed or counted.

End of stream (a FIN, or a TLS close_notify) is not the end of the connection:
the unterminated last line, if any, is still a line; every reply is written;
then the connection closes, as soon as nothing it asked for is still awaited
(its relays), and at the latest after ``HALF_CLOSE_LINGER`` seconds.
"""

import collections
import enum
import itertools
import weakref
from collections.abc import Iterator, Sized
from typing import Generic, Self, TypeVar

import attrs
from twisted.internet import defer
from twisted.internet.interfaces import (
    IConsumer,
    IDelayedCall,
    IHalfCloseableProtocol,
    IPushProducer,
    IReactorTime,
    ISSLTransport,
    ITCPTransport,
)
from twisted.internet.protocol import Factory, Protocol, connectionDone
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from nea.core.hub import Hub
from nea.core.tokens import Token
from nea.net.sending import sender_for
from nea.server.admission import Admission
from nea.server.chatrate import DEFAULT_CHAT_BYTES_RATE, DEFAULT_CHAT_RATE, ChatBucket
from nea.tls.server import peer_identity
from nea.wire import codec, errors, frames
from nea.wire.codec import FrameBuffer, LineBuffer, LineTooLong
from nea.wire.forms import REQUESTS
from nea.wire.frames import Encoding
from nea.wire.profiles import Profile

DEFAULT_MAX_OUTBOUND = 1024 * 1024
DEFAULT_MAX_RATE = 1000.0
#: Seconds a client that ended its stream is still awaited for answers it is owed.
HALF_CLOSE_LINGER = 10.0
#: Seconds a closed connection may take to flush before it is aborted.
CLOSE_TIMEOUT = 10.0
#: A throttled connection reads again once this many seconds' worth of lines is allowed;
#: also the step of the `ThrottleWheel` that resumes throttled connections.
RESUME_AFTER = 0.01
#: Held writes go out once they reach this (a full TLS record's payload): so what a
#: connection holds back stays small, and its transport's backpressure is heard as early
#: as without holding, however many pushes one turn brings (`Outbox`).
HOLD_LIMIT = 16 * 1024


@attrs.frozen
class ConnectionLimits:
    """What one client connection may use; shared by every connection of an instance."""

    max_line: int = codec.DEFAULT_MAX_LINE
    max_outbound: int = DEFAULT_MAX_OUTBOUND
    #: Lines a second a client may send on average (bursts of twice that); 0: no limit.
    max_rate: float = DEFAULT_MAX_RATE
    #: Chat lines, and their bytes, a second a client may say (`nea.server.chatrate`).
    chat_rate: float = DEFAULT_CHAT_RATE
    chat_bytes_rate: float = DEFAULT_CHAT_BYTES_RATE


class LineBucket:
    """A token bucket of lines, refilled from the clock once per read (not per line)."""

    __slots__ = ("rate", "burst", "tokens", "clock", "_last")

    def __init__(self, rate: float, clock: IReactorTime) -> None:
        self.rate = rate
        self.burst = 2 * rate
        self.tokens = self.burst
        self.clock = clock
        self._last = clock.seconds()

    def refill(self) -> None:
        now = self.clock.seconds()
        self.tokens = min(self.burst, self.tokens + (now - self._last) * self.rate)
        self._last = now

    def wait(self) -> float:
        """Seconds until a useful batch of lines is allowed again."""
        return max(1 - self.tokens, self.rate * RESUME_AFTER) / self.rate


class PerClock:
    """A helper the connections on one clock (the reactor; a Clock in tests) share: `of`
    gives each clock its own. Held weakly: the helper is the value of its clock's entry
    and never keeps its clock alive."""

    _of: "weakref.WeakKeyDictionary[object, Self]"

    def __init_subclass__(cls, **kwargs) -> None:
        super().__init_subclass__(**kwargs)
        cls._of = weakref.WeakKeyDictionary()

    def __init__(self, clock: IReactorTime) -> None:
        self._clock = weakref.ref(clock)

    @classmethod
    def of(cls, clock: IReactorTime) -> Self:
        """The one every connection on ``clock`` shares."""
        shared = cls._of.get(clock)
        if shared is None:
            shared = cls._of[clock] = cls(clock)
        return shared

    @property
    def clock(self) -> IReactorTime:
        clock = self._clock()
        assert clock is not None  # a connection that uses it holds its hub, which holds it
        return clock


class ThrottleWheel(PerClock):
    """Resumes throttled connections on their buckets' schedule, with one timer for all.

    A connection held for some seconds goes into the slot of the first step
    (``tick`` seconds) at or after its time; one timer is armed for the earliest
    slot, and when it fires every connection of every slot due is resumed in that
    turn. So a thousand connections held at their rate cost one timer a step, not
    one ``callLater`` (and its cancelled twin) a pause each. A connection that
    closed meanwhile is skipped when its slot comes (`Session.resume`).
    """

    def __init__(self, clock: IReactorTime, tick: float = RESUME_AFTER) -> None:
        super().__init__(clock)
        self.tick = tick
        self._slots: dict[int, list[Session]] = {}
        self._call: IDelayedCall | None = None
        self._armed: int | None = None

    def hold(self, session: "Session", seconds: float) -> None:
        """Call ``session.resume()`` at the first step at least ``seconds`` from now."""
        clock = self.clock
        slot = -int(-(clock.seconds() + seconds) // self.tick)  # rounded up
        held = self._slots.get(slot)
        if held is None:
            held = self._slots[slot] = []
            if self._armed is None or slot < self._armed:
                self._arm(clock, slot)
        held.append(session)

    def _arm(self, clock: IReactorTime, slot: int) -> None:
        if self._call is not None:
            self._call.cancel()
        self._armed = slot
        self._call = clock.callLater(max(0.0, slot * self.tick - clock.seconds()), self._turn, slot)

    def _turn(self, armed: int) -> None:
        clock = self.clock
        due = max(armed, int(clock.seconds() // self.tick))
        self._call = self._armed = None
        for slot in sorted(slot for slot in self._slots if slot <= due):
            for session in self._slots.pop(slot):
                session.resume()
        if self._slots and self._call is None:
            self._arm(clock, min(self._slots))


class Outbox(PerClock):
    """Gathers what is written to connections in one reactor turn; writes each once, at its end.

    A read may bring many lines, each answered on its own connection or pushed to
    another (a relay's target, a request's member); one turn handles many reads.
    Written as they come, each push is a transport write (and over TLS a record);
    gathered, a connection gets one write a turn however many pushes it had
    (`Session.send`; for WebSocket, its messages one after another). The turn's
    end comes before the reactor polls again, which is when Twisted's own write
    would have sent each push (`nea.net.sending` sends at once from there). A
    connection also writes what it holds once that is a TLS record's worth
    (`HOLD_LIMIT`), and before it closes.
    """

    def __init__(self, clock: IReactorTime) -> None:
        super().__init__(clock)
        self._holding: list[Session] = []

    def holding(self, connection: "Session") -> None:
        """``connection`` has started to hold writes: write them at the end of the turn."""
        if not self._holding:
            self.clock.callLater(0, self._flush)
        self._holding.append(connection)

    def _flush(self) -> None:
        holding, self._holding = self._holding, []
        for connection in holding:
            try:
                connection.flush()
            except Exception:  # (one connection's fault must not strand the others' writes)
                connection.log.failure("writing to {peer} failed", peer=connection.peer_address)


class Stream(enum.IntEnum):
    """Where a client connection's stream is; it only moves forward (`Session._to`).

    OPEN -> INPUT_ENDED (the client sends no more; its answers are still written)
    -> CLOSING (nea ends it: nothing more from it is processed) -> CLOSED (lost).
    Any of them may be skipped: a refused or aborted connection goes straight to
    CLOSING, a vanished one to CLOSED.
    """

    OPEN = 0
    INPUT_ENDED = 1
    CLOSING = 2
    CLOSED = 3


class ISessionTransport(ITCPTransport, IConsumer, IPushProducer):
    """A session's transport: TCP, or TLS over it, which takes a producer (the
    session) and can be paused itself. Twisted's TCP and TLS transports provide
    all of it without naming this union, which is for type checking."""


#: A framing's unit: what it hands to `Session.received`, and what `Session.units` yields.
U = TypeVar("U", bound=Sized)
#: What a framing's unit decodes to (`Session.decode`), for its `Session.handle`.
D = TypeVar("D")


@implementer(IPushProducer)
class Session(Protocol, Generic[U, D]):
    """What a client connection does whatever its framing: admission, joining and
    leaving the hub, the rate bucket, the outbound bound, closing.

    A framing (`NeaConnection` for lines, `nea.server.websocket` for WebSocket
    messages) hands what it receives to `received`, and says how that becomes
    units (`units`), how a unit becomes a request (`decode`), how it is acted on
    (`handle`), how an encoded push goes out (`write`) and how the connection
    ends (`shut`).

    Its life is a `Stream` state. Apart from it, because they come and go in any
    state: whether it holds a place at admission, whether the transport's buffer
    is full (``_paused``), and whether its input waits for the rate (``_throttled``).
    """

    log = Logger()
    transport: ISessionTransport  # from makeConnection, which precedes all else
    output: IConsumer  # from start (`consumer`), which precedes every write

    def __init__(
        self,
        hub: Hub,
        profile: Profile,
        limits: ConnectionLimits,
        admission: Admission | None = None,
    ) -> None:
        self.hub = hub
        self.profile = profile
        self.max_line = limits.max_line
        self.max_outbound = limits.max_outbound
        #: Set when this connection is the outermost protocol (plain TCP): it admits itself.
        self.admission = admission
        self.encoding = Encoding.TEXT
        self.id = hub.next_id()
        self.name = self.id
        self.since = hub.clock.seconds()
        self.bytes_in = 0
        self.bytes_out = 0
        #: The verified client certificate's identity (mutual TLS), else None.
        self.identity: str | None = None
        #: The token it presented and was accepted (``auth``), else None.
        self.token: Token | None = None
        #: Set by the hub once a chat-profile client has given its name.
        self.named = False
        self._bucket = LineBucket(limits.max_rate, hub.clock) if limits.max_rate else None
        self._chat = (
            ChatBucket(limits.chat_rate, limits.chat_bytes_rate, limits.max_line, hub.clock)
            if limits.chat_rate or limits.chat_bytes_rate
            else None
        )
        #: While throttled: the lines still to handle, and reads that came meanwhile.
        self._throttled: Iterator[U] | None = None
        self._held: collections.deque[U] = collections.deque()
        self.stream = Stream.OPEN
        #: ``stream`` is CLOSING or CLOSED: read once per line, so a plain attribute,
        #: kept in step by `_to` alone.
        self._closing = False
        #: The admission it holds a place at, if any.
        self._admitted: Admission | None = None
        self._paused = False
        self._unflushed = 0
        self._timer: IDelayedCall | None = None
        #: What was sent this turn, to be written at its end (`Outbox`), and its size.
        self._outbox = Outbox.of(hub.clock)
        self._holding: list[bytes] | None = None
        self._held_size = 0

    def _to(self, stream: Stream) -> None:
        """Move the stream on to ``stream``; never back (a lost connection stays lost)."""
        if stream > self.stream:
            self.stream = stream
            self._closing = stream >= Stream.CLOSING

    # ---- what a framing provides ----

    def units(self, data: U) -> Iterator[U]:
        """The units (lines, messages) in what was received; may raise `LineTooLong`."""
        raise NotImplementedError

    def finish(self) -> U | None:
        """The last, unterminated unit once the client has ended its stream, if any."""
        return None

    def take(self, unit: U) -> bool:
        """Act on ``unit`` at once if the framing has a lane of its own for it (no request
        value); False: it is decoded and handled."""
        return False

    def decode(self, unit: U) -> D:
        raise NotImplementedError

    def handle(self, request: D) -> None:
        """Act on one decoded unit, its token taken: the hub decides, unless the framing
        knows better (a WebSocket control frame)."""
        raise NotImplementedError

    def write(self, lines: list[bytes]) -> None:
        """Put encoded pushes (terminators included) on the wire, in order."""
        raise NotImplementedError

    def shut(self) -> None:
        """End the connection once what was written is out."""
        raise NotImplementedError

    # ---- the session ----

    @property
    def grammar(self) -> Profile:
        """The profile its next unit is read under: a chat client's first line is its name."""
        naming = self.profile.naming
        return naming if naming is not None and not self.named else self.profile

    @property
    def closing(self) -> bool:
        """Whether the connection is ending: nothing more from it is processed."""
        return self._closing

    @property
    def blocked(self) -> bool:
        """Whether the transport's buffer is full (the client is not reading)."""
        return self._paused

    def admit(self) -> bool:
        """Admit the socket when this is its outermost protocol; False: refused (closed)."""
        if self.admission is not None:
            if not self.admission.admit(self.transport):
                self._to(Stream.CLOSING)
                return False
            self._admitted = self.admission
        return True

    def start(self) -> None:
        """The client is connected (its handshakes done): watch output, join the hub."""
        if ISSLTransport.providedBy(self.transport):
            self.identity = peer_identity(self.transport.getPeerCertificate())
        self.output = self.consumer()
        self.output.registerProducer(self, True)
        self.hub.join(self)

    def consumer(self) -> IConsumer:
        """Where output goes, and whose buffer pauses this session: the transport, which
        others may write to too (WebSocket's framing writes its own frames)."""
        return self.transport

    def received(self, data: U) -> None:
        if self._closing:
            return
        self.bytes_in += len(data)
        if self._throttled is not None:
            self._held.append(data)  # a TLS layer may still hand over what it decrypted
            return
        self._consume(self.units(data))

    def _consume(self, lines: Iterator[U]) -> None:
        """Handle lines while the bucket allows; past it, keep the rest and stop reading.

        The replies to what one read brought go out with everything else this turn
        pushed to the connection, in one write at its end (`Outbox`).
        """
        bucket = self._bucket
        if bucket is not None:
            bucket.refill()
        try:
            for line in lines:
                if self._closing:
                    return
                if bucket is not None and bucket.tokens < 1:
                    self._throttle(itertools.chain((line,), lines), bucket.wait())
                    return
                if not self.take(line):
                    request = self.decode(line)
                    if isinstance(request, frames.Chat):
                        resume = self._chat_resume(len(line))
                        if resume is not None:
                            self._throttle(itertools.chain((line,), lines), resume)
                            return
                    self.handle(request)
                if bucket is not None:
                    bucket.tokens -= 1
        except LineTooLong:
            self.hub.reject(self, errors.LINE_TOO_LONG, f"limit is {self.max_line} bytes")

    def _chat_resume(self, size: int) -> float | defer.Deferred | None:
        """None when a chat line of ``size`` bytes may be said now; else when to try it
        again: a Deferred while the history store catches up, or the seconds its
        client's chat rate makes it wait."""
        waiting = self.hub.chat_waits()
        if waiting is not None:
            return waiting
        wait = self._chat.take(size) if self._chat is not None else 0.0
        return wait or None

    def _throttle(self, rest: Iterator[U], resume: float | defer.Deferred) -> None:
        """Stop reading; go on with ``rest`` after ``resume`` seconds, or when the
        Deferred ``resume`` fires."""
        self._throttled = rest
        self.hub.throttled()
        self.transport.pauseProducing()
        if isinstance(resume, defer.Deferred):
            resume.addCallback(self._caught_up)
        else:
            ThrottleWheel.of(self.hub.clock).hold(self, resume)

    def _caught_up(self, _) -> None:
        self.resume()

    def resume(self) -> None:
        """Its wait is over: go on with what it sent, unless it closed meanwhile."""
        rest = self._throttled
        if rest is not None and not self._closing:
            self._unthrottle(rest)

    def _unthrottle(self, rest: Iterator[U]) -> None:
        self._throttled = None
        self._consume(rest)
        while self._held and self._throttled is None and not self._closing:
            self._consume(self.units(self._held.popleft()))
        if self._throttled is None and not self._closing:
            self.transport.resumeProducing()
            if self.stream is Stream.INPUT_ENDED:
                self._end_of_input()

    def end_of_input(self) -> None:
        """The client sends no more: finish its last unit, answer, then close."""
        self._to(Stream.INPUT_ENDED)
        if self._throttled is None:
            self._end_of_input()

    def _end_of_input(self) -> None:
        last = self.finish()
        if last is not None and not self._closing:
            self._consume(iter((last,)))
        if self._throttled is not None or self._closing:
            return
        self.hub.input_ended(self)
        if not self._closing:
            self._timer = self.hub.clock.callLater(HALF_CLOSE_LINGER, self.close)

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        self._to(Stream.CLOSED)
        self._throttled = None
        self._held.clear()
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        if self._admitted is not None:
            self._admitted.release(self.transport)
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
        size = len(line)
        self.bytes_out += size
        if self._paused:
            self._unflushed += size
            if self._unflushed > self.max_outbound:
                self._drop_slow_consumer()
                return
        holding = self._holding
        if holding is None:
            self._holding = [line]
            self._held_size = size
            self._outbox.holding(self)
        else:
            holding.append(line)
            self._held_size += size
        if self._held_size >= HOLD_LIMIT:
            self.flush()

    def flush(self) -> None:
        """Write what was sent and is held (`Outbox`)."""
        holding = self._holding
        if holding is not None:
            self._holding = None
            if self.stream is not Stream.CLOSED:
                self.write(holding)

    def push(self, push: frames.Push) -> None:
        self.send(codec.encode_push(push, self.encoding, self.profile.room))

    def push_parts(self, kind: codec.LanePush, *parts) -> None:
        self.send(codec.encode_parts(kind, parts, self.encoding))

    def ping(self) -> bool:
        """A ``ping`` line, unless the profile carries none (relay's strict protocol)."""
        if frames.Ping not in self.profile.allowed:
            return False
        self.push(frames.PingPush())
        return True

    def close(self) -> None:
        if self._closing:
            return
        self._to(Stream.CLOSING)
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        self.flush()
        self.shut()
        self._timer = self.hub.clock.callLater(CLOSE_TIMEOUT, self.transport.abortConnection)

    def abort(self) -> None:
        self._to(Stream.CLOSING)
        self.transport.abortConnection()

    def _drop_slow_consumer(self) -> None:
        self.log.info(
            "dropping slow consumer {peer} ({n} bytes unread)",
            peer=self.peer_address,
            n=self._unflushed,
        )
        self.hub.dropped(errors.SLOW_CONSUMER)
        self.abort()

    # ---- IPushProducer: the transport tells us when its buffer is full ----

    def pauseProducing(self) -> None:
        self._paused = True

    def resumeProducing(self) -> None:
        self._paused = False
        self._unflushed = 0

    def stopProducing(self) -> None:
        self._to(Stream.CLOSING)


def _offers(profile: Profile, *kinds: type) -> bool:
    """Whether every line of ``kinds`` is read as that request under ``profile``."""
    if profile.naming is not None:
        return False  # (its first line is a name, whatever it says)
    return all(kind in profile.allowed and REQUESTS[kind].kind in profile.verbs for kind in kinds)


@implementer(IHalfCloseableProtocol)
class NeaConnection(Session[bytes, frames.Request]):
    """The line framing: one request per line, one push per line."""

    def __init__(
        self,
        hub: Hub,
        profile: Profile,
        limits: ConnectionLimits,
        admission: Admission | None = None,
    ) -> None:
        super().__init__(hub, profile, limits, admission)
        #: Where JSON is spoken a ``{`` line ends with its object; elsewhere lines are lines.
        self._lines = (FrameBuffer if profile.json else LineBuffer)(limits.max_line)
        #: Whether ``message``/``ok`` and ``ask``/``reply`` lines take the lane (`take`).
        self._lane = hub.lane
        self._relay_lane = _offers(profile, frames.Relay, frames.Ack)
        self._request_lane = _offers(profile, frames.Ask, frames.Reply)

    def connectionMade(self) -> None:
        if self.admit():
            self.start()

    def dataReceived(self, data: bytes) -> None:
        self.received(data)

    def readConnectionLost(self) -> None:
        self.end_of_input()

    def writeConnectionLost(self) -> None:
        """Not called: nea never half-closes its own side."""

    def units(self, data: bytes) -> Iterator[bytes]:
        return self._lines.feed(data)

    def finish(self) -> bytes | None:
        return self._lines.finish()

    def take(self, line: bytes) -> bool:
        """``message X``, ``ok X``, ``ask`` and ``reply``, most lines of relay clients and
        services, go to the hub's lane, without a request value (`nea.core.lane`).
        Anything else, or one of them not well formed (nothing after the verb, a bad
        id, bad UTF-8), is decoded: the general path reads it the same way, and words
        its error."""
        first = line[:1]
        if first == b"m" or first == b"o":
            if not self._relay_lane:
                return False
            if line.startswith(b"message "):
                entry, text = self._lane.message, line[8:]
            elif line.startswith(b"ok "):
                entry, text = self._lane.ok, line[3:]
            else:
                return False
            try:
                decoded = text.decode()  # (UTF-8, strictly)
            except UnicodeDecodeError:
                return False
            if not decoded:
                return False
            entry(self, decoded)
            return True
        if (first == b"r" or first == b"a") and self._request_lane:
            if first == b"r":
                reply = codec.reply_verb(line)
                if reply is not None:
                    self._lane.reply(self, *reply)
                    return True
            else:
                ask = codec.ask_verb(line)
                if ask is not None:
                    self._lane.ask(self, *ask)
                    return True
        return False

    def decode(self, line: bytes) -> frames.Request:
        request = codec.decode_request(line, self.grammar)
        if (
            self.encoding is Encoding.TEXT
            and self.profile.json
            and line[:1] == b"{"
            and not (isinstance(request, frames.Invalid) and request.error is errors.BAD_JSON)
        ):
            self.encoding = Encoding.JSON
        return request

    def handle(self, request: frames.Request) -> None:
        self.hub.handle(self, request)

    def consumer(self) -> IConsumer:
        # Only this connection writes to its transport: on plain TCP, send at once.
        return sender_for(self.transport)

    def write(self, lines: list[bytes]) -> None:
        self.output.write(b"".join(lines))

    def shut(self) -> None:
        # TLS will not start its shutdown while a producer is registered, nor TCP its close.
        self.output.unregisterProducer()
        self.transport.loseConnection()


class NeaFactory(Factory):
    """Builds connections for one listener, all sharing the instance's hub.

    ``admission`` is given when these connections are the outermost protocol
    (plain TCP); under TLS the TLS layer admits the socket instead.
    """

    noisy = False

    def __init__(
        self,
        hub: Hub,
        profile: Profile,
        limits: ConnectionLimits = ConnectionLimits(),
        admission: Admission | None = None,
    ) -> None:
        self.hub = hub
        self.profile = profile
        self.limits = limits
        self.admission = admission

    def buildProtocol(self, addr) -> NeaConnection:
        return NeaConnection(self.hub, self.profile, self.limits, self.admission)
