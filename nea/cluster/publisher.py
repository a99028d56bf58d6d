"""The connection that PUBLISHes the link's batches: nea's own, as the subscriber is.

Through txredisapi a PUBLISH cost about 20 us of CPU: the command built as any
command is, its answer handed through a queue and two Deferreds. This connection
writes each PUBLISH as one formatted command and reads back only what Redis
answers one: an integer, the number of subscribers that received it. Answers come
in the order of the PUBLISHes; each goes to the callback given with its PUBLISH,
if any (`nea.cluster.batch`: the batch's receivers).

Anything else (an error line, a PUBLISH refused; an answer to nothing; a line past
`MAX_LINE`) is logged and the connection aborted: the link then goes down and
reconnects as after any outage, and the bus recovers what was out. So the buffer
never holds more than a short line, and what is unanswered is timed by the link
(`waiting_since`).
"""

from collections import deque

from twisted.internet import protocol
from twisted.logger import Logger

from nea.cluster.batch import Reached
from nea.cluster.connection import LinkConnection, command

log = Logger()

#: Longest line a PUBLISH's answer takes (``:`` and a count, CRLF).
MAX_LINE = 24


class Publisher(LinkConnection):
    """PUBLISH, and the answers, to each PUBLISH's ``told``."""

    def __init__(self, clock) -> None:
        super().__init__()
        self.clock = clock
        #: (when sent, told) per PUBLISH not yet answered, oldest first.
        self._waiting: deque[tuple[float, Reached | None]] = deque()
        self._rest = b""

    def publish(self, channel: str, data: str, told: Reached | None = None) -> None:
        assert self.transport is not None
        self._waiting.append((self.clock.seconds(), told))
        self.transport.write(command("PUBLISH", channel, data))

    def waiting_since(self) -> float | None:
        """When the oldest PUBLISH still unanswered was sent; None if none is."""
        return self._waiting[0][0] if self._waiting else None

    def dataReceived(self, data: bytes) -> None:
        *lines, self._rest = (self._rest + data).split(b"\r\n")
        for line in lines:
            if not (line[:1] == b":" and line[1:].isdigit() and len(line) < MAX_LINE):
                return self._abort(f"answered a PUBLISH with {line[:80]!r}")
            if not self._waiting:
                return self._abort("answered a PUBLISH never sent")
            _, told = self._waiting.popleft()
            if told is not None:
                told(int(line[1:]))
        if len(self._rest) >= MAX_LINE:
            self._abort(f"sent a line longer than {MAX_LINE} bytes")

    def _abort(self, what: str) -> None:
        log.warn("redis {what}: disconnected", what=what)
        self._waiting.clear()  # nothing more is told: the bus recovers what was out
        self._rest = b""
        assert self.transport is not None
        self.transport.abortConnection()

    def connectionLost(self, reason=protocol.connectionDone) -> None:
        self._waiting.clear()
        super().connectionLost(reason)
