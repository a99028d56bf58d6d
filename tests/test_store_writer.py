"""The store writer, the trimmer and ``--store`` parsing, on in-memory stores and a Clock."""

from twisted.internet.defer import succeed
from twisted.internet.testing import Clock
from twisted.trial import unittest

from nea.store.lines import Kind, Line, StoredLine, StoreError
from nea.store.memory import MemoryStore, NoStore
from nea.store.testing import GatedStore
from nea.store.trimmer import Trimmer
from nea.store.url import DEFAULT_STORE, parse_store
from nea.store.writer import DEGRADED, OFF, OK, StoreWriter
from tests.store_contract import StoreContract


def line(text: str, name: str | None = "ann") -> Line:
    return Line.at(1_700_000_000.0, Kind.CHAT if name else Kind.BROADCAST, name, text)


class Fanout:
    """Records, in order, what each written line fired with (as the chat room would fan out)."""

    def __init__(self, writer: StoreWriter) -> None:
        self.writer = writer
        self.out: list[Line | StoredLine] = []

    def say(self, *texts: str) -> None:
        for text in texts:
            self.writer.write(line(text)).addCallback(self.out.append)

    @property
    def texts(self) -> list[str]:
        return [said.text for said in self.out]

    @property
    def ids(self) -> list[int | None]:
        return [said.id for said in self.out]


class WriterTests(unittest.TestCase):
    def setUp(self):
        self.clock = Clock()
        self.store = GatedStore()
        self.writer = StoreWriter(
            self.store, self.clock, bound=5, batch=2, timeout=2.0, retry_first=0.5, retry_max=4.0
        )
        self.chat = Fanout(self.writer)

    def test_lines_are_stored_then_fanned_out_with_the_store_ids(self):
        self.chat.say("a", "b", "c")
        self.assertEqual(self.chat.ids, [1, 2, 3])
        self.assertEqual([line.text for line in self.store.lines], ["a", "b", "c"])
        self.assertEqual(self.writer.status.state, OK)
        self.assertEqual(self.writer.status.stored, 3)

    def test_a_line_waits_for_its_id_and_order_holds_across_batches(self):
        self.store.hold = True
        self.chat.say("a", "b", "c", "d", "e")
        self.assertEqual(self.chat.out, [])
        self.assertEqual(self.writer.status.queued, 5)
        batches = []
        for _ in range(3):  # one batch at a time: the first line alone, then what waited
            batches += [len(lines) for lines, _ in self.store.held]
            self.store.release()
        self.assertEqual(batches, [1, 2, 2])
        self.assertEqual(self.chat.texts, ["a", "b", "c", "d", "e"])
        self.assertEqual(self.chat.ids, [1, 2, 3, 4, 5])

    def test_a_failed_write_degrades_and_later_lines_pass_unsaved_at_once(self):
        self.store.down = "connection refused"
        self.chat.say("a")
        self.assertEqual(self.chat.ids, [None])
        self.chat.say("b", "c")
        self.assertEqual(self.chat.texts, ["a", "b", "c"])
        self.assertEqual(self.chat.ids, [None, None, None])
        self.assertEqual(self.store.appends, 1)  # degraded: no write is tried per line
        status = self.writer.status
        self.assertEqual(
            (status.state, status.unsaved, status.stored, status.error),
            (DEGRADED, 3, 0, "connection refused"),
        )

    def test_a_write_that_times_out_releases_the_queue_unsaved_in_order(self):
        self.store.hold = True
        self.chat.say("a", "b", "c")
        self.clock.advance(1.99)
        self.assertEqual(self.chat.out, [])
        self.clock.advance(0.01)
        self.assertEqual(self.chat.texts, ["a", "b", "c"])
        self.assertEqual(self.chat.ids, [None, None, None])
        self.assertEqual(self.writer.status.error, "no answer within 2 s")
        # The database committed the abandoned batch after all: counted, not fanned out again.
        self.store.release()
        self.assertEqual(self.writer.status.stored_late, 1)
        self.assertEqual(len(self.chat.out), 3)

    def test_past_the_bound_the_writer_pushes_back_and_gives_nothing_away(self):
        self.store.hold = True
        self.chat.say("1", "2", "3", "4")
        self.assertIsNone(self.writer.caught_up())
        self.chat.say("5")
        caught_up = self.writer.caught_up()
        self.assertFalse(caught_up.called)
        self.chat.say("6", "7", "8", "9")
        status = self.writer.status
        self.assertEqual(
            (status.state, status.queued, status.unsaved, status.pushing_back), (OK, 9, 0, True)
        )
        self.assertFalse(self.writer.full)
        self.chat.say("10")
        self.assertTrue(self.writer.full)  # twice the bound: the chat room refuses lines
        self.store.release()  # "1": 9 wait, still past half the bound
        self.store.release()  # "2", "3": 7
        self.store.release()  # "4", "5": 5
        self.store.release()  # "6", "7": 3
        self.assertFalse(caught_up.called)
        self.store.release()  # "8", "9": 1, under half: chatters are read again
        self.assertTrue(caught_up.called)
        self.assertFalse(self.writer.status.pushing_back)
        self.store.hold = False
        self.store.release()
        self.assertEqual(self.chat.ids, list(range(1, 11)))
        self.assertEqual(self.writer.status.unsaved, 0)

    def test_the_bound_in_bytes(self):
        writer = StoreWriter(self.store, self.clock, bound=1000, bound_bytes=1000)
        self.store.hold = True
        writer.write(line("x" * 997))  # and the name, "ann"
        self.assertTrue(writer.pushing_back)

    def test_a_full_disk_degrades_once_and_stays_degraded(self):
        """Reads still answer on a full disk; the probe writes, so status does not flip."""
        self.store.full = True
        states = []
        for tick in range(250):  # 25 s, a line every 1/10 s
            self.chat.say(str(tick))
            self.clock.advance(0.1)
            if not states or states[-1] != self.writer.status.state:
                states.append(self.writer.status.state)
        self.assertEqual(states, [DEGRADED])
        self.assertEqual(self.writer.status.unsaved, 250)
        self.store.full = False
        self.clock.advance(4.0)
        self.assertEqual(self.writer.status.state, OK)

    def test_probes_back_off_and_the_writer_recovers_by_itself(self):
        self.store.down = "refused"
        self.chat.say("a")
        probes_at = []
        for tick in range(1, 101):  # 12.5 s in steps of 1/8 s (exact in binary)
            before = self.store.probes
            self.clock.advance(0.125)
            if self.store.probes > before:
                probes_at.append(tick * 0.125)
        # 0.5 s after the failure, then 1, 2, 4 and 4 (the cap) s apart
        self.assertEqual(probes_at, [0.5, 1.5, 3.5, 7.5, 11.5])
        self.store.down = None
        self.clock.advance(4.0)
        self.assertEqual(self.writer.status.state, OK)
        self.assertIsNone(self.writer.status.error)
        self.chat.say("b")
        self.assertEqual(self.chat.ids, [None, 1])
        self.assertEqual([line.text for line in self.store.lines], ["b"])

    def test_a_callback_that_writes_again_cannot_jump_the_queue(self):
        self.store.hold = True
        first = self.writer.write(line("a"))
        first.addCallback(lambda _: self.chat.say("c"))
        first.addCallback(lambda _: None)
        self.chat.say("b")
        self.store.hold = False
        self.store.release()
        self.assertEqual(self.chat.texts, ["b", "c"])
        self.assertEqual(self.chat.ids, [2, 3])

    def test_lines_released_unsaved_keep_their_order_when_callbacks_write(self):
        self.store.hold = True
        first = self.writer.write(line("a"))
        first.addCallback(lambda said: self.chat.out.append(said) or self.chat.say("z"))
        self.chat.say("b", "c")
        self.clock.advance(2.0)
        self.assertEqual(self.chat.texts, ["a", "b", "c", "z"])

    def test_the_none_store_passes_lines_through_uncounted(self):
        writer = StoreWriter(NoStore(), self.clock)
        chat = Fanout(writer)
        chat.say("a", "b")
        self.assertEqual(chat.ids, [None, None])
        self.assertEqual((writer.status.state, writer.status.unsaved), (OFF, 0))

    def test_stop_waits_for_the_queue(self):
        self.store.hold = True
        self.chat.say("a", "b")
        stopped = self.writer.stop()
        self.chat.say("c")  # the last words of a client as the daemon stops
        self.assertFalse(stopped.called)
        self.store.hold = False
        self.store.release()
        self.assertTrue(stopped.called)
        self.assertEqual(self.chat.ids, [1, 2, 3])

    def test_stop_gives_up_at_its_deadline(self):
        self.store.hold = True
        self.chat.say("a")
        stopped = self.writer.stop()
        self.clock.advance(2.0)
        self.assertTrue(stopped.called)
        self.assertEqual(self.chat.ids, [None])
        self.assertEqual(self.clock.getDelayedCalls(), [])  # no probe after stop


class TrimmerTests(unittest.TestCase):
    def setUp(self):
        self.clock = Clock()
        self.store = GatedStore()
        self.store.keep([line(str(i)) for i in range(12_000)])

    def test_a_pass_trims_in_batches_down_to_the_newest_lines(self):
        trimmer = Trimmer(self.store, keep=1000, reactor=self.clock, interval=60, most=5000)
        trimmer.start()
        self.addCleanup(trimmer.stop)
        self.assertEqual(trimmer.trimmed, 11_000)
        self.assertEqual([kept.id for kept in self.store.lines], list(range(11_001, 12_001)))
        self.store.keep([line("more")] * 10)
        self.clock.advance(59)
        self.assertEqual(len(self.store.lines), 1010)
        self.clock.advance(1)
        self.assertEqual(len(self.store.lines), 1000)
        self.assertEqual(self.store.lines[-1].text, "more")

    def test_a_pass_is_bounded_and_the_next_goes_on(self):
        trimmer = Trimmer(self.store, keep=0, reactor=self.clock, interval=60, most=1000, rounds=3)
        trimmer.start()
        self.addCleanup(trimmer.stop)
        self.assertEqual(len(self.store.lines), 9000)
        self.clock.advance(60)
        self.assertEqual(len(self.store.lines), 6000)

    def test_a_pass_keeps_the_newest_bytes_and_then_compacts(self):
        compacted = []
        self.store.compact = lambda: compacted.append(len(self.store.lines)) or succeed(None)
        trimmer = Trimmer(
            self.store, None, reactor=self.clock, interval=60, keep_bytes=40
        )  # "ann" and 4-5 digits: 5 lines
        trimmer.start()
        self.addCleanup(trimmer.stop)
        self.assertEqual(
            [kept.text for kept in self.store.lines], [str(i) for i in range(11_995, 12_000)]
        )
        self.assertEqual(compacted, [5])
        self.clock.advance(60)
        self.assertEqual(compacted, [5])  # nothing deleted, nothing to give back

    def test_a_failing_store_is_counted_and_retried(self):
        self.store.down = "refused"
        trimmer = Trimmer(self.store, keep=10, reactor=self.clock, interval=60)
        trimmer.start()
        self.addCleanup(trimmer.stop)
        self.assertEqual((trimmer.failures, len(self.store.lines)), (1, 12_000))
        self.store.down = None
        self.clock.advance(60)
        self.assertEqual((trimmer.failures, len(self.store.lines)), (1, 10))


class ParseStoreTests(unittest.TestCase):
    def test_the_three_kinds(self):
        self.assertEqual(parse_store("none", Clock()).enabled, False)
        sqlite = parse_store("sqlite:var/x.db", Clock())
        self.assertEqual((sqlite.name, sqlite.cluster_safe), ("sqlite:var/x.db", False))
        pg = parse_store("postgresql://nea:secret@db.example:5433/chat?sslmode=require", Clock())
        self.assertEqual(
            (pg.name, pg.cluster_safe), ("postgresql://nea@db.example:5433/chat", True)
        )
        self.assertTrue(DEFAULT_STORE.startswith("sqlite:var/"))

    def test_anything_else_is_refused_in_one_line(self):
        for value in [
            "redis://localhost",
            "sqlite:",
            "mysql://x/y",
            "",
            "postgresql://h:99999/db",
            "postgresql://h/db?nosuch=1",
        ]:
            with self.assertRaises(StoreError) as caught:
                parse_store(value, Clock())
            message = str(caught.exception)
            self.assertIn("--store", message)
            self.assertNotIn("\n", message)


class MemoryStoreTests(StoreContract, unittest.TestCase):
    """The contract every store keeps, on the in-memory one (SQL stores run it too)."""

    def setUp(self):
        self.store = MemoryStore()
        return self.store.open()
