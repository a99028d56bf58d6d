"""Many deadlines on one timer, for tables where most entries are settled long before.

A broker gives every relay delivery and every request a deadline, and nearly
every one is answered within milliseconds. A ``callLater`` each (and its
``cancel``) costs a timer object, two heap operations in the reactor and, once
enough are cancelled, a rebuild of the reactor's heap. `Deadlines` keeps one
timer, armed for the earliest, and its keys in a dict: what is settled is
discarded from it at once (one dict operation), so nothing settled stays held,
queued or scanned.

Most deadlines are one timeout from now, so they come in order: those stay in
the dict's insertion order, which is their deadline order, and the earliest is
its first entry. The few that come before the last (a shorter timeout, a clock
set back) go into a heap beside it.
"""

import heapq
import itertools
from collections.abc import Callable, Hashable
from typing import Generic, TypeVar

from twisted.internet.interfaces import IDelayedCall, IReactorTime

K = TypeVar("K", bound=Hashable)

#: Stale heap entries (of keys discarded since) tolerated beyond twice the live ones.
HEAP_SLACK = 64


class Deadlines(Generic[K]):
    """``expire(key)`` is called once ``clock`` reaches the time ``key`` was added with,
    unless ``key`` was discarded first. A key is added once, until it is discarded or
    expires."""

    __slots__ = (
        "clock",
        "expire",
        "_ordered",
        "_last",
        "_late",
        "_heap",
        "_seq",
        "_timer",
        "_armed",
    )

    def __init__(self, clock: IReactorTime, expire: Callable[[K], None]) -> None:
        self.clock = clock
        self.expire = expire
        #: key -> when, in order of when; ``_last`` is the latest (-inf while it is empty).
        self._ordered: dict[K, float] = {}
        self._last = float("-inf")
        #: key -> when, for those added out of order, and their heap of (when, count,
        #: key); the count keeps keys from ever being compared. Discarded keys leave
        #: their heap entry behind, skipped when reached.
        self._late: dict[K, float] = {}
        self._heap: list[tuple[float, int, K]] = []
        self._seq = itertools.count()
        #: The timer, and when it fires.
        self._timer: IDelayedCall | None = None
        self._armed = 0.0

    def add(self, key: K, when: float) -> None:
        if when >= self._last:
            self._ordered[key] = self._last = when
        else:
            self._late[key] = when
            heapq.heappush(self._heap, (when, next(self._seq), key))
            if len(self._heap) > 2 * len(self._late) + HEAP_SLACK:
                self._heap = [entry for entry in self._heap if self._is_late(entry)]
                heapq.heapify(self._heap)
        if self._timer is None or when < self._armed:
            self._arm(when)

    def discard(self, key: K) -> None:
        """``key`` is settled: it does not expire."""
        ordered = self._ordered
        if ordered.pop(key, None) is None:
            self._late.pop(key, None)
        if not ordered:
            self._last = float("-inf")
            if not self._late:
                self._disarm()

    def clear(self) -> None:
        """Forget every deadline, and disarm (the owner stops)."""
        self._ordered.clear()
        self._late.clear()
        self._heap.clear()
        self._last = float("-inf")
        self._disarm()

    def __len__(self) -> int:
        return len(self._ordered) + len(self._late)

    def _is_late(self, entry: tuple[float, int, K]) -> bool:
        return self._late.get(entry[2]) == entry[0]

    def _disarm(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _arm(self, when: float) -> None:
        self._disarm()
        self._armed = when
        self._timer = self.clock.callLater(max(0.0, when - self.clock.seconds()), self._fire)

    def _fire(self) -> None:
        """Expire what is due, earliest first, then arm for the next."""
        self._timer = None
        now = self.clock.seconds()
        due = []
        for key, when in self._ordered.items():
            if when > now:
                break
            due.append((when, key))
        heap = self._heap
        while heap and heap[0][0] <= now:
            entry = heapq.heappop(heap)
            if self._is_late(entry):
                due.append((entry[0], entry[2]))
        if len(due) > 1:
            due.sort(key=lambda pair: pair[0])
        for when, key in due:
            # An earlier expiry may have settled this one, so each is checked as reached.
            if self._ordered.get(key) == when:
                del self._ordered[key]
            elif self._late.get(key) == when:
                del self._late[key]
            else:
                continue
            self.expire(key)
        self._rearm()

    def _rearm(self) -> None:
        """Arm for the earliest deadline left, unless an expiry armed for it already."""
        heap = self._heap
        while heap and not self._is_late(heap[0]):
            heapq.heappop(heap)
        if not self._ordered:
            self._last = float("-inf")  # (as `discard` does: late ones stay in the heap)
        first = next(iter(self._ordered.values()), None)
        if heap and (first is None or heap[0][0] < first):
            first = heap[0][0]
        if first is not None and (self._timer is None or first < self._armed):
            self._arm(first)
