"""Publications made in one reactor turn to one channel go out as one PUBLISH.

Under load most cross-instance traffic is many small messages to the same few
channels; one PUBLISH per message costs a Redis round trip, a reply to parse and
a Deferred each. Batching them (newline-separated: a JSON message never holds a
raw newline) divides that cost by the batch size without adding latency: the
batch leaves at the end of the current reactor turn, or at once when full.

A sender that needs to know whether anyone received its message (a delivery:
nobody means the instance is gone) passes a callback, called with the batch's
receiver count, once per batch however many of its messages passed it. Nothing
is called when a batch cannot be sent: the connection is then going down, and
what was out is recovered by the bus (`nea.cluster.redisbus`).
"""

from collections.abc import Callable

from twisted.internet import defer
from twisted.logger import Logger

log = Logger()

#: Most messages, and about the most bytes, in one PUBLISH: bounds the receiver's
#: stall, and stays far below Redis's output buffer limit for subscribers (32 MB).
MAX_BATCH = 500
MAX_BATCH_BYTES = 1 << 20

Reached = Callable[[int], None]


class _Batch:
    __slots__ = ("lines", "size", "reached")

    def __init__(self) -> None:
        self.lines: list[str] = []
        self.size = 0
        self.reached: list[Reached] = []


class Batcher:
    def __init__(self, reactor, send: Callable[[str, str], defer.Deferred]) -> None:
        self.reactor = reactor
        self.send = send
        self._batches: dict[str, _Batch] = {}
        self._scheduled = None

    def publish(self, channel: str, line: str, reached: Reached | None = None) -> None:
        """Queue ``line`` for ``channel``; ``reached(receivers)`` once its batch is out
        (once per batch, for equal callbacks)."""
        batch = self._batches.get(channel)
        if batch is None:
            batch = self._batches[channel] = _Batch()
        batch.lines.append(line)
        batch.size += len(line)
        if reached is not None and reached not in batch.reached:
            batch.reached.append(reached)
        if len(batch.lines) >= MAX_BATCH or batch.size >= MAX_BATCH_BYTES:
            self._send(channel, self._batches.pop(channel))
        elif self._scheduled is None:
            self._scheduled = self.reactor.callLater(0, self.flush)

    def flush(self) -> None:
        self._scheduled = None
        batches, self._batches = self._batches, {}
        for channel, batch in batches.items():
            self._send(channel, batch)

    def discard(self) -> None:
        """The connection is gone: nothing queued will be sent."""
        if self._scheduled is not None:
            self._scheduled.cancel()
            self._scheduled = None
        self._batches = {}

    def _send(self, channel: str, batch: _Batch) -> None:
        sent = defer.maybeDeferred(self.send, channel, "\n".join(batch.lines))
        if batch.reached:
            sent.addCallback(_tell, batch.reached)
        sent.addErrback(lambda failure: None)  # the link is going down (see above)


def _tell(receivers: int, reached: list[Reached]) -> None:
    for callback in reached:
        try:
            callback(receivers)
        except Exception:
            log.failure("a publication's callback failed")
