"""The connection subscribed to this instance's channels: SUBSCRIBE, then read pushes.

A subscribed connection only ever receives arrays (Redis's pub/sub pushes:
``message CHANNEL DATA``, and ``subscribe CHANNEL COUNT`` confirming each
channel) and, if a command is refused, an error line. `PushReader` reads just
that: a general RESP parser (txredisapi's, which stays for the command
connection: `nea.cluster.redisproto`) takes several calls, string copies and
reactor turns per bulk string, and this connection carries every message other
instances send here.

Nothing Redis sends is trusted further than the format: anything else, a length
past `MAX_BULK` or a header line past `MAX_HEADER` is logged and the connection
aborted (the link then goes down and reconnects: `nea.cluster.redislink`), so
the buffer never holds more than one push of at most `MAX_BULK` bytes.
"""

from collections.abc import Callable, Iterator

from twisted.internet import defer, protocol
from twisted.logger import Logger

from nea.cluster.connection import LinkConnection, command

log = Logger()

#: Longest bulk string accepted: Redis's default output buffer limit for a subscriber
#: (32 MB); it disconnects a subscriber that falls further behind, so a longer push
#: cannot come from a Redis so configured (nea's batches stay near 1 MB:
#: `nea.cluster.batch`).
MAX_BULK = 32 << 20
#: Longest header line (``*3``, ``$1048576``, ``:2``) or error line accepted.
MAX_HEADER = 1024
#: Most elements in one push (``message`` has 3, ``pmessage`` 4).
MAX_ITEMS = 8

_CRLF = b"\r\n"


class Malformed(ValueError):
    """Not what Redis sends a subscribed connection."""


class RedisError(Exception):
    """An error line from Redis (a refused SUBSCRIBE)."""


Push = list[bytes | int]


class PushReader:
    """RESP arrays of bulk strings and integers, and error lines, from reads cut anywhere."""

    def __init__(self) -> None:
        #: The unparsed rest of the reads so far, kept as chunks until `_wanted` bytes are
        #: there (a long push arriving in many reads is joined once, not once per read).
        self._chunks: list[bytes] = []
        self._size = 0
        self._wanted = 0

    @property
    def buffered(self) -> int:
        """Bytes kept for the push that has not all come yet."""
        return self._size

    def feed(self, data: bytes) -> Iterator[Push | RedisError]:
        """The pushes (and errors) ``data`` completes, in order; then `Malformed` if it
        holds what a subscriber does not receive (the reader is then of no further use)."""
        if self._chunks:
            self._chunks.append(data)
            self._size += len(data)
            if self._size < self._wanted:
                return
            data = b"".join(self._chunks)
            self._chunks, self._size = [], 0
        at, end = 0, len(data)
        while at < end:
            parsed = _push(data, at, end)
            if isinstance(parsed, int):  # incomplete: at least this many bytes from ``at``
                self._chunks, self._size, self._wanted = [data[at:]], end - at, parsed
                return
            push, at = parsed
            yield push


def _push(data: bytes, at: int, end: int) -> tuple[Push | RedisError, int] | int:
    """The push starting at ``at`` and where the next starts, or (an int) the length it
    needs at least when ``data`` ends first."""
    kind = data[at]
    eol = _eol(data, at, end)
    if eol < 0:
        return end - at + 1
    if kind == 45:  # b"-": an error line
        return RedisError(data[at + 1 : eol].decode("utf-8", "replace")), eol + 2
    if kind != 42:  # b"*"
        raise Malformed(f"expected an array, got {data[at : at + 20]!r}")
    count = _count(data, at + 1, eol)
    if not 0 < count <= MAX_ITEMS:
        raise Malformed(f"an array of {count} elements")
    push: Push = []
    start, at = at, eol + 2
    for _ in range(count):
        if at >= end:
            return end - start + 1
        kind = data[at]
        eol = _eol(data, at, end)
        if eol < 0:
            return end - start + 1
        if kind == 36:  # b"$": a bulk string
            size = _count(data, at + 1, eol)
            if size > MAX_BULK:
                raise Malformed(f"a bulk string of {size} bytes")
            stop = eol + 2 + size
            if stop + 2 > end:
                return stop + 2 - start
            if data[stop : stop + 2] != _CRLF:
                raise Malformed("a bulk string longer than announced")
            push.append(data[eol + 2 : stop])
            at = stop + 2
        elif kind == 58:  # b":": an integer (a subscription count)
            push.append(_count(data, at + 1, eol))
            at = eol + 2
        else:
            raise Malformed(f"expected a bulk string or an integer, got {data[at : at + 20]!r}")
    return push, at


def _eol(data: bytes, at: int, end: int) -> int:
    """Where the line starting at ``at`` ends; -1 if it has not come yet."""
    eol = data.find(_CRLF, at, at + MAX_HEADER)
    if eol < 0 and min(end, at + MAX_HEADER) - at >= MAX_HEADER:
        raise Malformed(f"a line longer than {MAX_HEADER} bytes")
    return eol


def _count(data: bytes, start: int, stop: int) -> int:
    digits = data[start:stop]
    if not (digits.isdigit() and len(digits) <= 12):  # ASCII digits only, no sign
        raise Malformed(f"not a count: {digits[:20]!r}")
    return int(digits)


class Subscriber(LinkConnection):
    """A subscribed connection: each message goes to ``on_message(channel, text)``."""

    def __init__(self, on_message: Callable[[str, str], None]) -> None:
        super().__init__()
        self.on_message = on_message
        self._reader = PushReader()
        self._unconfirmed: set[bytes] = set()
        self._subscribed: defer.Deferred | None = None

    def subscribe(self, channels: list[str]) -> defer.Deferred:
        """SUBSCRIBE; fires once Redis has confirmed every channel."""
        assert self.transport is not None and self._subscribed is None
        self._unconfirmed = {channel.encode("utf-8") for channel in channels}
        self._subscribed = defer.Deferred()
        self.transport.write(command("SUBSCRIBE", *channels))
        return self._subscribed

    def dataReceived(self, data: bytes) -> None:
        try:
            for push in self._reader.feed(data):
                if isinstance(push, RedisError):
                    self._refused(push)
                elif push[0] == b"message" and len(push) == 3:
                    self._message(push[1], push[2])
                elif push[0] == b"subscribe" and len(push) == 3:
                    self._confirmed(push[1])
                else:
                    log.warn("ignored a push from redis: {push!r:.200}", push=push)
        except Malformed as e:
            log.warn("redis sent what a subscriber cannot read ({error}): disconnected", error=e)
            assert self.transport is not None
            self.transport.abortConnection()

    def _message(self, channel, data) -> None:
        if not isinstance(channel, bytes) or not isinstance(data, bytes):
            log.warn("ignored a message from redis that is not text")
            return
        name = channel.decode("utf-8", "replace")
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError:
            log.warn("ignored on {channel}: not UTF-8 text", channel=name)
            return
        self.on_message(name, text)

    def _confirmed(self, channel) -> None:
        self._unconfirmed.discard(channel)
        if not self._unconfirmed and self._subscribed is not None and not self._subscribed.called:
            self._subscribed.callback(None)

    def _refused(self, error: RedisError) -> None:
        if self._subscribed is not None and not self._subscribed.called:
            self._subscribed.errback(error)
        else:
            log.warn("redis said: {error}", error=str(error))

    def connectionLost(self, reason=protocol.connectionDone) -> None:
        if self._subscribed is not None and not self._subscribed.called:
            self._subscribed.errback(ConnectionError("connection lost while subscribing"))
        super().connectionLost(reason)
