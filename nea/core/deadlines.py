"""Many deadlines on one timer, for tables where most entries are settled long before.

A request broker gives every request a deadline, and nearly every request is
answered within milliseconds. A ``callLater`` per request (and its ``cancel``)
costs a timer object, two heap operations in the reactor and, once enough are
cancelled, a rebuild of the reactor's heap. `Deadlines` keeps its own queue of
``(when, key)`` and one timer, armed for the earliest; nothing is cancelled: when
a deadline comes, ``expire(key)`` decides whether the entry is still there. As
most deadlines are the default timeout from now, they come in order: those go
on the end of a deque (no heap operation), and only one that comes before the
last goes into a heap.
What is settled meanwhile is dropped in bulk (`clear`, when the owner's table is
empty; `compact`, when the settled entries outnumber the live ones), so the heap
stays within twice the live entries.
"""

import collections
import heapq
import itertools
from collections.abc import Callable
from typing import Generic, TypeVar

from twisted.internet.interfaces import IDelayedCall, IReactorTime

K = TypeVar("K")

#: Below this many entries a heap is never compacted: the scan would cost more than it saves.
COMPACT_FLOOR = 4096


class Deadlines(Generic[K]):
    """``expire(key)`` is called once ``clock`` reaches the time ``key`` was added with.

    ``live(key)`` says whether ``key`` is still waiting; `compact` keeps those only.
    """

    __slots__ = (
        "clock",
        "expire",
        "live",
        "_queue",
        "_heap",
        "_seq",
        "_timer",
        "_armed",
        "_compact_at",
    )

    def __init__(
        self, clock: IReactorTime, expire: Callable[[K], None], live: Callable[[K], bool]
    ) -> None:
        self.clock = clock
        self.expire = expire
        self.live = live
        #: (when, tie-breaker, key), in order of when; the count keeps keys from ever
        #: being compared. Those added in order go on the deque, the others on the heap.
        self._queue: collections.deque[tuple[float, int, K]] = collections.deque()
        self._heap: list[tuple[float, int, K]] = []
        self._seq = itertools.count()
        self._timer: IDelayedCall | None = None
        self._armed = 0.0
        self._compact_at = COMPACT_FLOOR

    def add(self, when: float, key: K) -> None:
        queue = self._queue
        if not queue or queue[-1][0] <= when:
            queue.append((when, next(self._seq), key))
        else:
            heapq.heappush(self._heap, (when, next(self._seq), key))
        if self._timer is None or when < self._armed:
            self._arm(when)
        elif len(queue) + len(self._heap) >= self._compact_at:
            self.compact()

    def clear(self) -> None:
        """Nothing waits any more: forget every deadline, disarm."""
        self._queue.clear()
        self._heap.clear()
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._compact_at = COMPACT_FLOOR

    def compact(self) -> None:
        """Forget the deadlines of what no longer waits."""
        live = self.live
        self._queue = collections.deque(entry for entry in self._queue if live(entry[2]))
        self._heap = [entry for entry in self._heap if live(entry[2])]
        heapq.heapify(self._heap)
        self._compact_at = max(COMPACT_FLOOR, 2 * len(self))

    def __len__(self) -> int:
        return len(self._queue) + len(self._heap)

    def _first(self) -> tuple[float, int, K] | None:
        """The earliest entry (left where it is), or None."""
        queue, heap = self._queue, self._heap
        if queue and (not heap or queue[0] < heap[0]):
            return queue[0]
        return heap[0] if heap else None

    def _arm(self, when: float) -> None:
        if self._timer is not None:
            self._timer.cancel()
        self._armed = when
        self._timer = self.clock.callLater(max(0.0, when - self.clock.seconds()), self._fire)

    def _fire(self) -> None:
        self._timer = None
        now = self.clock.seconds()
        first = self._first()
        while first is not None and first[0] <= now:  # ``expire`` may clear both
            if self._queue and first is self._queue[0]:
                self._queue.popleft()
            else:
                heapq.heappop(self._heap)
            self.expire(first[2])
            first = self._first()
        if first is not None and self._timer is None:
            self._arm(first[0])
