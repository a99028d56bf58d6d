"""The history store as the chat room sees it: `nea.store` adapted to `nea.core.history`.

`StoreHistory` writes through the `StoreWriter` (bounded, degraded mode) and
reads from the store, turning the store's lines into the core's `Entry` values.
`Reopening` opens a store on first use when it could not be opened at start
(a PostgreSQL that was down): the writer's probes then create the schema the
moment the database answers, and history recovers by itself.
"""

from collections.abc import Sequence

from twisted.internet import defer

from nea.core.history import Entry, iso_time
from nea.core.snapshot import StoreFigures
from nea.store.lines import HistoryStore, Kind, Line
from nea.store.writer import OK, StoreWriter


class StoreHistory:
    """A `nea.core.history.History` on a store and its writer."""

    def __init__(self, store: HistoryStore, writer: StoreWriter, clock) -> None:
        self.store = store
        self.writer = writer
        self.clock = clock

    @property
    def available(self) -> bool:
        return self.writer.state == OK

    @property
    def full(self) -> bool:
        return self.writer.full

    def caught_up(self) -> defer.Deferred | None:
        return self.writer.caught_up()

    def write(self, kind: str, name: str | None, text: str) -> defer.Deferred:
        line = Line.at(self.clock.seconds(), Kind(kind), name, text)
        return self.writer.write(line).addCallback(_entry)

    def since(self, last_id: int, limit: int) -> defer.Deferred:
        return self.store.since(last_id, limit).addCallback(_entries)

    def latest(self, count: int) -> defer.Deferred:
        return self.store.latest(count).addCallback(_entries)

    def figures(self) -> StoreFigures:
        status = self.writer.status
        return StoreFigures(
            status.store,
            status.state,
            status.queued,
            status.stored,
            status.unsaved,
            status.stored_late,
            status.error,
            status.pushing_back,
        )


def _entry(line) -> Entry:
    return Entry(line.id, line.kind.value, line.name, line.text, iso_time(line.time))


def _entries(lines) -> list[Entry]:
    return [_entry(line) for line in lines]


class Reopening:
    """A `HistoryStore` that is opened again before use until an open has succeeded."""

    def __init__(self, store: HistoryStore, opened: bool) -> None:
        self.store = store
        self.opened = opened
        self.name = store.name
        self.enabled = store.enabled
        self.cluster_safe = store.cluster_safe

    def open(self) -> defer.Deferred:
        return self.store.open().addCallback(self._opened)

    def _opened(self, _) -> None:
        self.opened = True

    def _then(self, call, *args) -> defer.Deferred:
        if self.opened:
            return call(*args)
        return self.open().addCallback(lambda _: call(*args))

    def append(self, lines: Sequence[Line]) -> defer.Deferred:
        return self._then(self.store.append, lines)

    def since(self, last_id: int, limit: int) -> defer.Deferred:
        return self._then(self.store.since, last_id, limit)

    def latest(self, count: int) -> defer.Deferred:
        return self._then(self.store.latest, count)

    def probe(self) -> defer.Deferred:
        return self._then(self.store.probe)

    def trim(self, keep: int | None, most: int, keep_bytes: int | None = None) -> defer.Deferred:
        return self._then(self.store.trim, keep, most, keep_bytes)

    def compact(self) -> defer.Deferred:
        return self._then(self.store.compact)

    def close(self) -> defer.Deferred:
        return self.store.close()
