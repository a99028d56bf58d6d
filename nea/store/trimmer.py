"""``--history-max`` and ``--history-max-bytes``: old lines are deleted in the
background, a batch at a time, and their space given back.

Each pass deletes what lies beyond the newest ``keep`` lines, and beyond the
newest lines that hold ``keep_bytes`` of text, in batches of ``most``, so that
one deletion never holds the database (and the appends waiting behind it) for
long; a pass after lowering a bound on a big history takes as many batches as
it needs, up to ``rounds``, and the next pass goes on. A pass that deleted
lines then compacts the store (`HistoryStore.compact`), so that the disk does
not keep what the table no longer holds. A failed pass is logged in one line
and retried at the next interval.
"""

from twisted.internet import defer, task
from twisted.logger import Logger

from nea.store.lines import HistoryStore

log = Logger()

INTERVAL = 60.0
MOST = 5000
ROUNDS = 100
TIMEOUT = 10.0


class Trimmer:
    def __init__(
        self,
        store: HistoryStore,
        keep: int | None,
        reactor,
        interval: float = INTERVAL,
        most: int = MOST,
        rounds: int = ROUNDS,
        timeout: float = TIMEOUT,
        keep_bytes: int | None = None,
    ) -> None:
        """``keep``, ``keep_bytes``: None for no bound of that kind."""
        self.store = store
        self.keep = keep
        self.keep_bytes = keep_bytes
        self.reactor = reactor
        self.most = most
        self.rounds = rounds
        self.timeout = timeout
        self.interval = interval
        self.trimmed = 0
        self.failures = 0
        self._loop = task.LoopingCall(self.trim)
        self._loop.clock = reactor

    def start(self) -> None:
        self._loop.start(self.interval, now=True)

    def stop(self) -> None:
        if self._loop.running:
            self._loop.stop()

    @defer.inlineCallbacks
    def trim(self):
        """One pass; never fails (a failure is counted and logged)."""
        try:
            pass_gone = 0
            for _ in range(self.rounds):
                gone = yield self.store.trim(self.keep, self.most, self.keep_bytes).addTimeout(
                    self.timeout, self.reactor
                )
                self.trimmed += gone
                pass_gone += gone
                if gone < self.most:
                    break
            if pass_gone:
                yield self.store.compact().addTimeout(self.timeout, self.reactor)
        except Exception as e:
            self.failures += 1
            why = "no answer in time" if isinstance(e, defer.TimeoutError) else str(e)
            log.warn("trimming history in {store} failed: {why}", store=self.store.name, why=why)
