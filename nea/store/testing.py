"""A store that tests can make slow or take down, for tests of whatever writes history."""

from collections.abc import Sequence

from twisted.internet import defer

from nea.store.lines import Line, StoreError
from nea.store.memory import MemoryStore


class GatedStore(MemoryStore):
    """A `MemoryStore` that fails while ``down`` is set and holds appends while ``hold`` is.

    ``full`` is a full disk: appends and probes (writes) fail, reads still answer.

    Held appends are stored (in order) by `release`, even those whose caller gave
    up waiting: as a database may commit a write its client has timed out on.
    """

    name = "gated"

    def __init__(self) -> None:
        super().__init__()
        self.down: str | None = None
        self.full = False
        self.hold = False
        self.held: list[tuple[list[Line], defer.Deferred]] = []
        self.appends = 0
        self.probes = 0

    def append(self, lines: Sequence[Line]):
        self.appends += 1
        if self.down or self.full:
            return defer.fail(StoreError(self.down or "database or disk is full"))
        if self.hold:
            waiter: defer.Deferred = defer.Deferred()
            self.held.append((list(lines), waiter))
            return waiter
        return super().append(lines)

    def latest(self, count: int):
        if self.down:
            return defer.fail(StoreError(self.down))
        return super().latest(count)

    def probe(self):
        self.probes += 1
        if self.down or self.full:
            return defer.fail(StoreError(self.down or "database or disk is full"))
        return super().probe()

    def trim(self, keep: int | None, most: int, keep_bytes: int | None = None):
        if self.down:
            return defer.fail(StoreError(self.down))
        return super().trim(keep, most, keep_bytes)

    def release(self) -> None:
        """Store what is held now, and answer whoever still waits."""
        held, self.held = self.held, []
        for lines, waiter in held:
            stored = self.keep(lines)
            if not waiter.called:
                waiter.callback(stored)
