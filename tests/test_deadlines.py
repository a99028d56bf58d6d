"""`nea.core.deadlines.Deadlines`: many deadlines on one timer, on a Clock."""

from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.internet.task import Clock
from twisted.trial import unittest

from nea.core.deadlines import HEAP_SLACK, Deadlines


class DeadlinesTests(unittest.TestCase):
    def setUp(self):
        self.clock = Clock()
        self.expired: list[int] = []
        self.deadlines = Deadlines(self.clock, self.expired.append)

    def add(self, key: int, seconds: float) -> None:
        self.deadlines.add(key, self.clock.seconds() + seconds)

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

    def test_a_discarded_key_never_expires_and_holds_nothing(self):
        for key in range(1000):
            self.add(key, 10.0)
            if key % 100:
                self.deadlines.discard(key)  # settled at once, as most requests are
        self.assertEqual(len(self.deadlines), 10)
        self.clock.advance(10.0)
        self.assertEqual(self.expired, list(range(0, 1000, 100)))

    def test_discarding_the_last_disarms(self):
        self.add(1, 1.0)
        self.add(2, 0.5)  # (out of order: the heap)
        self.deadlines.discard(1)
        self.assertEqual(len(self.clock.getDelayedCalls()), 1)
        self.deadlines.discard(2)
        self.assertEqual((len(self.deadlines), self.clock.getDelayedCalls()), (0, []))

    def test_clear_disarms(self):
        self.add(1, 1.0)
        self.deadlines.clear()
        self.assertEqual((len(self.deadlines), self.clock.getDelayedCalls()), (0, []))

    def test_stale_heap_entries_are_dropped(self):
        self.add(0, 100.0)
        for key in range(1, 10 * HEAP_SLACK):
            self.add(key, 1.0)  # each before the last: the heap
            self.deadlines.discard(key)
        self.assertLessEqual(len(self.deadlines._heap), 2 + HEAP_SLACK)

    def test_an_expiry_may_settle_another_due_at_once(self):
        def expire(key: int) -> None:
            self.expired.append(key)
            self.deadlines.discard(key + 1)

        self.deadlines.expire = expire
        self.add(1, 1.0)
        self.add(2, 1.0)
        self.add(3, 1.0)
        self.clock.advance(1.0)
        self.assertEqual(self.expired, [1, 3])

    def test_an_expiry_may_add_a_later_deadline_without_delaying_an_earlier_one(self):
        def expire(key: int) -> None:
            self.expired.append(key)
            if key == 1:
                self.add(9, 50.0)

        self.deadlines.expire = expire
        self.add(1, 1.0)
        self.add(2, 5.0)
        self.clock.advance(1.0)
        self.clock.advance(4.0)
        self.assertEqual(self.expired, [1, 2])
        self.clock.advance(46.0)
        self.assertEqual(self.expired, [1, 2, 9])


#: Operations on the model: add key after seconds, discard key, or let time pass.
operations = st.lists(
    st.one_of(
        st.tuples(st.just("add"), st.integers(0, 20), st.integers(0, 40)),
        st.tuples(st.just("discard"), st.integers(0, 20)),
        st.tuples(st.just("advance"), st.integers(0, 15)),
    ),
    max_size=60,
)


class DeadlinesModelTests(unittest.TestCase):
    @settings(max_examples=300, deadline=None)
    @given(operations)
    def test_expires_exactly_what_a_plain_table_would(self, ops):
        """Against a dict of key -> when: the same keys expire, each at its time and in
        order of time, whatever order they were added in and however they were discarded."""
        clock = Clock()
        model: dict[int, float] = {}
        expired: list[tuple[float, float, int]] = []
        deadlines = Deadlines(clock, lambda key: expired.append((clock.seconds(), added[key], key)))
        added: dict[int, float] = {}
        expected: list[tuple[float, float, int]] = []
        for op in ops:
            if op[0] == "add" and op[1] not in model:
                model[op[1]] = added[op[1]] = clock.seconds() + op[2] / 4
                deadlines.add(op[1], model[op[1]])
            elif op[0] == "discard":
                model.pop(op[1], None)
                deadlines.discard(op[1])
            elif op[0] == "advance":
                for _ in range(op[1]):  # a tick at a time, so each expiry's time is exact
                    clock.advance(0.25)
                    for key, when in list(model.items()):
                        if when <= clock.seconds():
                            del model[key]
                            expected.append((clock.seconds(), when, key))
            self.assertEqual(len(deadlines), len(model))
        self.assertEqual(sorted(expired), sorted(expected))
        self.assertEqual([when for _, when, _ in expired], sorted(w for _, w, _ in expired))
        if not model:
            self.assertEqual(clock.getDelayedCalls(), [])
