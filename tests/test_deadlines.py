"""`nea.core.deadlines.Deadlines`: many deadlines on one timer, on a Clock."""

from twisted.internet.task import Clock
from twisted.trial import unittest

from nea.core.deadlines import COMPACT_FLOOR, Deadlines


class DeadlinesTests(unittest.TestCase):
    def setUp(self):
        self.clock = Clock()
        self.waiting: set[int] = set()
        self.expired: list[int] = []
        self.deadlines = Deadlines(self.clock, self.expire, self.waiting.__contains__)

    def expire(self, key: int) -> None:
        if key in self.waiting:
            self.waiting.discard(key)
            self.expired.append(key)

    def add(self, key: int, seconds: float) -> None:
        self.waiting.add(key)
        self.deadlines.add(self.clock.seconds() + seconds, key)

    def test_each_expires_at_its_time_in_order_on_one_timer(self):
        for key, seconds in ((1, 3.0), (2, 1.0), (3, 2.0), (4, 1.0)):
            self.add(key, seconds)
        self.assertEqual(len(self.clock.getDelayedCalls()), 1)
        self.clock.advance(0.99)
        self.assertEqual(self.expired, [])
        self.clock.advance(0.01)
        self.assertEqual(self.expired, [2, 4])
        self.clock.advance(2.0)
        self.assertEqual(self.expired, [2, 4, 3, 1])
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_settled_entries_are_compacted_away(self):
        for key in range(10 * COMPACT_FLOOR):
            self.add(key, 10.0)
            if key % 100:
                self.waiting.discard(key)  # settled at once, as most requests are
        self.assertLessEqual(len(self.deadlines), 2 * COMPACT_FLOOR)
        self.clock.advance(10.0)
        self.assertEqual(self.expired, list(range(0, 10 * COMPACT_FLOOR, 100)))

    def test_clear_disarms(self):
        self.add(1, 1.0)
        self.deadlines.clear()
        self.assertEqual((len(self.deadlines), self.clock.getDelayedCalls()), (0, []))
