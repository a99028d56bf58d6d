"""Between the chat room and the store: lines are stored in order, a slow store slows chatters down.

The chat room hands each line to `StoreWriter.write` and fans it out when the
Deferred fires: with a `StoredLine` (stored, with the store's id) or with the
`Line` itself (``id`` None: not stored). Deferreds fire in the order the lines
were written, so lines said on one instance are fanned out in the order said.

Lines wait in a queue, written in batches (one transaction each) with a
deadline. A store that falls behind is not given way to: once ``bound`` lines or
``bound_bytes`` bytes wait, the writer *pushes back* (`caught_up` hands out a
Deferred): the connections stop reading their chatters until the queue is down
to half of both, so that the state changes twice per episode, not once per line.
Twice the bound is `full`: the chat room then refuses a line (``history_busy``)
rather than queue it. A full queue is never released unsaved.

When a write fails or times out, the writer is *degraded*: every line in the
queue is released unsaved at once, in order, and so is every later line, without
waiting, until a probe of the store succeeds. The probe is a small write (a
store that answers reads but cannot write, as on a full disk, stays degraded),
retried on the injected reactor with the exponential backoff of `nea.wire.backoff`
(unjittered); the backoff starts
over only once a batch of lines has been stored, so a store that fails again
right after a probe is probed less and less often. Unsaved lines are counted
(status), and go out without an id; nothing is kept for later.

A write abandoned at its deadline may still commit: those lines were fanned out
unsaved and are then in history too. The writer counts them (``stored_late``)
when the store answers after all.
"""

import collections
import itertools

import attrs
from twisted.internet import defer
from twisted.logger import Logger

from nea.store.lines import HistoryStore, Line, StoredLine
from nea.wire.backoff import Backoff

log = Logger()

OK, DEGRADED, OFF = "ok", "degraded", "off"
#: Lines, and bytes of text, that may wait for the store before the writer pushes back.
BOUND = 1000
BOUND_BYTES = 256 * 1024
#: Lines per append (one transaction).
BATCH = 100
#: Seconds a write, or a probe, may take.
TIMEOUT = 2.0
#: Seconds before the first probe after a failure, and at most between probes.
RETRY_FIRST, RETRY_MAX = 0.5, 30.0


@attrs.frozen
class StoreStatus:
    """What status and health checks show of the history store."""

    store: str
    state: str  #: `OK`, `DEGRADED`, or `OFF` (``--store none``)
    queued: int  #: lines waiting for the store now
    stored: int
    unsaved: int  #: lines fanned out without being stored (degraded, or queue full)
    stored_late: int  #: lines stored after their write had been given up
    error: str | None  #: why it is degraded, one line
    pushing_back: bool = False  #: chatters are not read until the store catches up


class StoreWriter:
    def __init__(
        self,
        store: HistoryStore,
        reactor,
        bound: int = BOUND,
        batch: int = BATCH,
        timeout: float = TIMEOUT,
        retry_first: float = RETRY_FIRST,
        retry_max: float = RETRY_MAX,
        bound_bytes: int = BOUND_BYTES,
    ) -> None:
        self.store = store
        self.reactor = reactor
        self.bound = bound
        self.bound_bytes = bound_bytes
        self.batch = batch
        self.timeout = timeout
        self.backoff = Backoff(initial=retry_first, maximum=retry_max, jitter=0.0)
        self.state = OK if store.enabled else OFF
        self.error: str | None = None
        self.stored = self.unsaved = self.stored_late = 0
        self._queue: collections.deque[tuple[Line, defer.Deferred]] = collections.deque()
        self._queued_bytes = 0
        self.pushing_back = False
        #: Who waits for the store to catch up (`caught_up`).
        self._waiters: list[defer.Deferred] = []
        self._writing = 0  # lines at the head of the queue being written now
        self._attempt = 0  # bumped when the writer gives up, so late answers are told apart
        self._probes = 0  # failed probes since the store last worked
        self._probe_call = None
        self._stopping: defer.Deferred | None = None
        # Every write's Deferred fires from here, first in first out, even when a
        # callback writes again: ordering cannot depend on who calls back whom.
        self._outbox: collections.deque[tuple[defer.Deferred, Line | StoredLine]] = (
            collections.deque()
        )
        self._releasing = False

    def write(self, line: Line) -> defer.Deferred:
        """Fires, in order, with the `StoredLine`, or with ``line`` when it was not stored."""
        waiter: defer.Deferred = defer.Deferred()
        if self.state == OK:
            self._queue.append((line, waiter))
            self._queued_bytes += _size(line)
            if self._behind(1):
                self.pushing_back = True
            self._pump()
        else:
            self.unsaved += self.state != OFF
            self._release([(waiter, line)])
        return waiter

    @property
    def full(self) -> bool:
        """Twice the bound waits: a line said now would wait too long; refuse it."""
        return self._behind(2)

    def caught_up(self) -> defer.Deferred | None:
        """None while lines may be written; else a Deferred that fires once the queue
        is down to half the bound (or released: the store failed)."""
        if not self.pushing_back:
            return None
        waiter: defer.Deferred = defer.Deferred()
        self._waiters.append(waiter)
        return waiter

    def _behind(self, times: float) -> bool:
        return (
            len(self._queue) >= times * self.bound or self._queued_bytes >= times * self.bound_bytes
        )

    def _dequeued(self) -> None:
        """Lines left the queue: the push-back ends once it is down to half the bound."""
        if self.pushing_back and not self._behind(0.5):
            self.pushing_back = False
            waiters, self._waiters = self._waiters, []
            for waiter in waiters:
                waiter.callback(None)

    def down(self, reason: str) -> None:
        """The store is known to be down (it could not be opened at start): degrade, and probe."""
        if self.state == OK:
            self._degrade(reason)

    @property
    def status(self) -> StoreStatus:
        return StoreStatus(
            self.store.name,
            self.state,
            len(self._queue),
            self.stored,
            self.unsaved,
            self.stored_late,
            self.error,
            self.pushing_back,
        )

    def stop(self) -> defer.Deferred:
        """Wait, within the timeout, for the queue to be written; then probe no more."""
        if self._probe_call is not None and self._probe_call.active():
            self._probe_call.cancel()
        self._stopping = defer.Deferred()
        self._drained()
        return self._stopping.addTimeout(self.timeout, self.reactor).addErrback(self._late_stop)

    def _late_stop(self, failure) -> None:
        failure.trap(defer.TimeoutError)
        self._degrade("stopped before the store answered")

    def _pump(self) -> None:
        if self._writing or not self._queue or self.state != OK:
            return
        lines = [line for line, _ in itertools.islice(self._queue, self.batch)]
        self._writing = len(lines)
        attempt = self._attempt
        # A deadline of our own rather than cancelling the write: a late answer is still told.
        deadline = self.reactor.callLater(
            self.timeout, self._give_up, attempt, f"no answer within {self.timeout:g} s"
        )
        writing = defer.maybeDeferred(self.store.append, lines)
        writing.addBoth(_disarm, deadline)
        writing.addCallbacks(
            self._written, self._failed, callbackArgs=(attempt,), errbackArgs=(attempt,)
        )

    def _written(self, stored: list[StoredLine], attempt: int) -> None:
        if attempt != self._attempt:
            self.stored_late += len(stored)
            return
        done = [self._queue.popleft() for _ in range(self._writing)]
        self._queued_bytes -= sum(_size(line) for line, _ in done)
        self._writing = 0
        self._probes = 0
        self.stored += len(done)
        self._release([(waiter, line) for (_, waiter), line in zip(done, stored, strict=True)])
        self._pump()
        self._dequeued()
        self._drained()

    def _failed(self, failure, attempt: int) -> None:
        self._give_up(attempt, _reason(failure, self.timeout))

    def _give_up(self, attempt: int, reason: str) -> None:
        if attempt == self._attempt:
            self._degrade(reason)

    def _degrade(self, reason: str) -> None:
        """Give up on the queue: release it unsaved, and probe the store later."""
        self._attempt += 1
        self._writing = 0
        released = list(self._queue)
        self._queue.clear()
        self._queued_bytes = 0
        self.unsaved += len(released)
        self.error = reason
        if self.state == OK:
            log.warn(
                "history store {store} degraded, chat goes on unsaved: {reason}",
                store=self.store.name,
                reason=reason,
            )
        self.state = DEGRADED
        if self._stopping is None:
            self._probe_later()
        self._release([(waiter, line) for line, waiter in released])
        self._dequeued()
        self._drained()

    def _release(self, results: list[tuple[defer.Deferred, Line | StoredLine]]) -> None:
        self._outbox.extend(results)
        if self._releasing:
            return
        self._releasing = True
        try:
            while self._outbox:
                waiter, result = self._outbox.popleft()
                waiter.callback(result)
        finally:
            self._releasing = False

    def _probe_later(self) -> None:
        self._probe_call = self.reactor.callLater(self.backoff.ceiling(self._probes), self._probe)
        self._probes += 1

    def _probe(self) -> None:
        probing = defer.maybeDeferred(self.store.probe)
        probing.addTimeout(self.timeout, self.reactor)
        probing.addCallbacks(self._recovered, self._still_down)

    def _recovered(self, _) -> None:
        if self._stopping is None:
            self.state, self.error = OK, None
            log.info("history store {store} recovered", store=self.store.name)

    def _still_down(self, failure) -> None:
        self.error = _reason(failure, self.timeout)
        if self._stopping is None:
            self._probe_later()

    def _drained(self) -> None:
        if self._stopping is not None and not self._queue and not self._stopping.called:
            self._stopping.callback(None)


def _size(line: Line) -> int:
    """What a line weighs in the queue: its text and name (characters: close enough)."""
    return len(line.text) + len(line.name or "")


def _disarm(result, deadline):
    if deadline.active():
        deadline.cancel()
    return result


def _reason(failure, timeout: float) -> str:
    if failure.check(defer.TimeoutError):
        return f"no answer within {timeout:g} s"
    return " ".join(str(failure.value).split()) or failure.type.__name__
