"""Publications to one channel go out together, as one PUBLISH.

Under load most cross-instance traffic is many small messages to the same few
channels; one PUBLISH per message costs a Redis round trip, a reply to parse and
a wake-up of the receiving instance each. Batching them (newline-separated: a
JSON message never holds a raw newline) divides that cost by the batch size.

A batch leaves at the end of the reactor turn it was opened in, which adds no
latency, unless the link is busy: the last sending of the batches went less than
``interval`` seconds before (``--cluster-batch-interval``) and held more than
one message. Then it leaves once the interval since that sending is up, with
every message that came meanwhile. So a lone message (a request, its answer)
never waits, while a busy link sends at most once an interval however few
messages each turn brings (under light load, most turns bring one or two, and
each PUBLISH costs both instances a wake-up). A full batch leaves at once.

A sender that needs to know whether anyone received its message (a delivery:
nobody means the instance is gone) passes a callback, called with the batch's
receiver count, once per batch however many of its messages passed it. Nothing
is called when a batch cannot be sent or gets no answer: the connection is then
going down, and what was out is recovered by the bus (`nea.cluster.redisbus`).

Many small messages of one kind to one channel (a relay's acks to its origin)
can share a line: `Batcher.publish_word` adds a word to the batch's line with
that head, ``HEAD WORD WORD ...``, which goes out after the batch's other lines.
"""

import functools
import itertools
import math
from collections.abc import Callable

from twisted.logger import Logger

log = Logger()

#: Most messages, and about the most bytes, in one PUBLISH: bounds the receiver's
#: stall, and stays far below Redis's output buffer limit for subscribers (32 MB).
MAX_BATCH = 500
MAX_BATCH_BYTES = 1 << 20
#: Least seconds between two sendings of the batches by default
#: (``--cluster-batch-interval``), and the most it may be: far below the clients' ack
#: timeouts and the link's PUBLISH timeout.
DEFAULT_BATCH_INTERVAL = 0.002
MAX_BATCH_INTERVAL = 0.1

Reached = Callable[[int], None]
#: How a batch is sent: ``send(channel, text, told)``, ``told(receivers)`` (or None)
#: called once its PUBLISH is answered (`nea.cluster.publisher.Publisher.publish`).
Send = Callable[[str, str, Reached | None], None]


class _Batch:
    __slots__ = ("lines", "merged", "count", "size", "reached")

    def __init__(self) -> None:
        self.lines: list[str] = []
        #: Head -> the words of its line (`Batcher.publish_word`).
        self.merged: dict[str, list[str]] = {}
        #: Messages: a line, or a word of a merged line, is one.
        self.count = 0
        self.size = 0
        self.reached: list[Reached] = []

    def text(self) -> str:
        merged = (" ".join([head, *words]) for head, words in self.merged.items())
        return "\n".join(itertools.chain(self.lines, merged))


class Batcher:
    def __init__(self, reactor, send: Send, interval: float = 0.0) -> None:
        self.reactor = reactor
        self.send = send
        #: Least seconds from one sending of the batches to the next (0: every turn's end).
        self.interval = interval
        self._batches: dict[str, _Batch] = {}
        self._scheduled = None
        #: The earliest the next sending may go: an interval after a busy one.
        self._held_until = -math.inf

    def publish(self, channel: str, line: str, reached: Reached | None = None) -> None:
        """Queue ``line`` for ``channel``; ``reached(receivers)`` once its batch is out
        (once per batch, for equal callbacks)."""
        batch = self._batches.get(channel) or self._open(channel)
        batch.lines.append(line)
        batch.size += len(line)
        if reached is not None and reached not in batch.reached:
            batch.reached.append(reached)
        batch.count += 1
        if batch.count >= MAX_BATCH or batch.size >= MAX_BATCH_BYTES:
            self._send(channel, self._batches.pop(channel))

    def publish_word(self, channel: str, head: str, word: str) -> None:
        """Queue ``word`` on the line ``head`` of ``channel``'s batch: ``HEAD WORD ...``."""
        batch = self._batches.get(channel) or self._open(channel)
        words = batch.merged.get(head)
        if words is None:
            words = batch.merged[head] = []
            batch.size += len(head)
        words.append(word)
        batch.size += len(word) + 1
        batch.count += 1
        if batch.count >= MAX_BATCH or batch.size >= MAX_BATCH_BYTES:
            self._send(channel, self._batches.pop(channel))

    def _open(self, channel: str) -> _Batch:
        """A new batch for ``channel``, sent with the others at the end of the turn, or
        when the interval since a busy sending is up; at once if full before."""
        batch = self._batches[channel] = _Batch()
        if self._scheduled is None:
            wait = self._held_until - self.reactor.seconds()
            self._scheduled = self.reactor.callLater(max(0.0, wait), self.flush)
        return batch

    def flush(self) -> None:
        """Send every batch now."""
        if self._scheduled is not None and self._scheduled.active():
            self._scheduled.cancel()  # (called early: by the link when it stops)
        self._scheduled = None
        batches, self._batches = self._batches, {}
        busy = sum(batch.count for batch in batches.values()) > 1
        self._held_until = self.reactor.seconds() + self.interval if busy else -math.inf
        for channel, batch in batches.items():
            self._send(channel, batch)

    def discard(self) -> None:
        """The connection is gone: nothing queued will be sent."""
        if self._scheduled is not None:
            self._scheduled.cancel()
            self._scheduled = None
        self._batches = {}

    def _send(self, channel: str, batch: _Batch) -> None:
        told = functools.partial(_tell, reached=batch.reached) if batch.reached else None
        self.send(channel, batch.text(), told)


def _tell(receivers: int, reached: list[Reached]) -> None:
    for callback in reached:
        try:
            callback(receivers)
        except Exception:
            log.failure("a publication's callback failed")
