"""``--chat-rate`` and ``--chat-bytes-rate``: what one client's chat may cost the others.

Every chat line is sent to every chat-capable client, so one chatter's line rate
and size multiply by the number of readers. `ChatBucket` holds a client to lines
and bytes a second (each bucket holding two seconds' worth; the bytes one at
least a longest line, so that any line can be said). A line that does not fit is
not refused: the connection stops reading its client until it fits, as for
``--max-rate``, so a chatter is slowed down and nothing is lost.
"""

DEFAULT_CHAT_RATE = 10.0
DEFAULT_CHAT_BYTES_RATE = 16 * 1024


class ChatBucket:
    """Two token buckets, lines and bytes, refilled from the clock when a line comes.

    A rate of 0 is no limit on that count.
    """

    __slots__ = (
        "lines_rate",
        "bytes_rate",
        "lines_burst",
        "bytes_burst",
        "lines",
        "bytes",
        "clock",
        "_last",
    )

    def __init__(self, lines_rate: float, bytes_rate: float, longest: int, clock) -> None:
        self.lines_rate = lines_rate
        self.bytes_rate = bytes_rate
        self.lines_burst = 2 * lines_rate
        self.bytes_burst = max(2 * bytes_rate, longest)
        # Tokens left: fractions refill with time.
        self.lines: float = self.lines_burst
        self.bytes: float = self.bytes_burst
        self.clock = clock
        self._last = clock.seconds()

    def take(self, size: int) -> float:
        """0 when a line of ``size`` bytes may be said now (it is counted); else the
        seconds until it may."""
        now = self.clock.seconds()
        elapsed, self._last = now - self._last, now
        self.lines = min(self.lines_burst, self.lines + elapsed * self.lines_rate)
        self.bytes = min(self.bytes_burst, self.bytes + elapsed * self.bytes_rate)
        cost = min(size, self.bytes_burst)
        wait = max(
            (1 - self.lines) / self.lines_rate if self.lines_rate else 0.0,
            (cost - self.bytes) / self.bytes_rate if self.bytes_rate else 0.0,
        )
        if wait > 1e-9:  # not a rounding error's worth
            return wait
        self.lines -= 1
        self.bytes -= cost
        return 0.0
