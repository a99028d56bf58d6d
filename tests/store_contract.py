"""What every history store must do, as a mixin for each store's TestCase (it holds no tests).

The TestCase's setUp opens ``self.store``.
"""

from datetime import UTC, datetime

from twisted.internet import defer

from nea.store.lines import Kind, Line

SAID = datetime(2024, 5, 6, 7, 8, 9, 123456, tzinfo=UTC)


def lines(*texts: str) -> list[Line]:
    return [Line(Kind.CHAT, "ann", text, SAID) for text in texts]


class StoreContract:
    @defer.inlineCallbacks
    def fill(self, count: int):
        stored = yield self.store.append(lines(*map(str, range(1, count + 1))))
        return [line.id for line in stored]

    @defer.inlineCallbacks
    def test_lines_round_trip_with_growing_ids(self):
        said = [
            Line(Kind.CHAT, "zoë", "héllo 🌍 'quoted' %s ?", SAID),
            Line(Kind.BROADCAST, None, "maintenance at noon", SAID),
        ]
        first = yield self.store.append(said)
        second = yield self.store.append(lines("third"))
        ids = [line.id for line in first + second]
        self.assertEqual(ids, sorted(set(ids)))
        written = said + lines("third")
        self.assertEqual(
            [line.stored(id) for line, id in zip(written, ids, strict=True)], first + second
        )
        back = yield self.store.since(0, 10)
        self.assertEqual(back, first + second)
        self.assertEqual(back[0].time.utcoffset().total_seconds(), 0)

    @defer.inlineCallbacks
    def test_any_text_is_stored_and_read_back_as_it_was_answered(self):
        odd = [Line(Kind.CHAT, "nul\x00name", "nul \x00 and a lone surrogate \ud800", SAID)]
        stored = yield self.store.append(odd + lines("next"))
        self.assertEqual((yield self.store.since(0, 10)), stored)
        self.assertEqual(stored[0].text[:4], "nul ")
        self.assertEqual(stored[1].text, "next")

    @defer.inlineCallbacks
    def test_since_gives_exactly_the_lines_after_the_id(self):
        ids = yield self.fill(10)
        got = yield self.store.since(ids[2], 4)
        self.assertEqual([line.id for line in got], ids[3:7])
        got = yield self.store.since(ids[7], 100)
        self.assertEqual([line.id for line in got], ids[8:])
        self.assertEqual((yield self.store.since(ids[-1], 5)), [])
        self.assertEqual((yield self.store.since(0, 0)), [])
        self.assertEqual((yield self.store.since(2**64, 5)), [])  # past any id: nothing, no error

    @defer.inlineCallbacks
    def test_latest_gives_the_newest_oldest_first(self):
        ids = yield self.fill(5)
        got = yield self.store.latest(3)
        self.assertEqual([line.id for line in got], ids[2:])
        self.assertEqual(len((yield self.store.latest(100))), 5)
        self.assertEqual((yield self.store.latest(0)), [])

    @defer.inlineCallbacks
    def test_trim_keeps_the_newest_and_ids_are_never_reused(self):
        ids = yield self.fill(10)
        self.assertEqual((yield self.store.trim(4, 2)), 2)  # at most ``most`` at a time
        self.assertEqual((yield self.store.trim(4, 100)), 4)
        self.assertEqual((yield self.store.trim(4, 100)), 0)
        self.assertEqual([line.id for line in (yield self.store.since(0, 100))], ids[6:])
        self.assertEqual((yield self.store.trim(0, 100)), 4)
        [after] = yield self.store.append(lines("after"))
        self.assertGreater(after.id, ids[-1])

    def test_counts_are_checked(self):
        for call in [
            lambda: self.store.since(0, -1),
            lambda: self.store.latest(-2),
            lambda: self.store.trim(-1, 5),
            lambda: self.store.since(0, True),
            lambda: self.store.since(-1, 5),
        ]:
            self.assertRaises(ValueError, call)

    @defer.inlineCallbacks
    def test_trim_keeps_the_newest_bytes(self):
        said = [Line(Kind.CHAT, "ann", "é" * 50, SAID) for _ in range(10)]  # 103 bytes each
        stored = yield self.store.append(said)
        ids = [line.id for line in stored]
        self.assertEqual((yield self.store.trim(None, 100, keep_bytes=350)), 7)
        self.assertEqual([line.id for line in (yield self.store.since(0, 100))], ids[7:])
        self.assertEqual((yield self.store.trim(None, 100, keep_bytes=309)), 0)  # 3 fit exactly
        self.assertEqual((yield self.store.trim(5, 100, keep_bytes=1000)), 0)
        self.assertEqual((yield self.store.trim(1, 100, keep_bytes=1000)), 2)  # the tighter bound
        yield self.store.compact()
        self.assertEqual([line.id for line in (yield self.store.since(0, 100))], ids[9:])
