"""`nea.cluster.envelope`: every message kind survives its text form, one line each, and
whatever else arrives is refused with `Malformed` (a ValueError), never another error."""

from hypothesis import example, given
from hypothesis import strategies as st
from twisted.internet.task import Clock
from twisted.trial import unittest

from nea.cluster import envelope
from nea.cluster.batch import Batcher
from nea.wire import frames
from nea.wire.frames import BroadcastPush, ChatPush


class Recorder:
    """An `envelope.Receiver` that keeps what it is handed, as ``(method, args)``."""

    def __init__(self) -> None:
        self.calls: list[tuple] = []

    def delivered(self, sender, text, origin, attempt, relay) -> None:
        self.calls.append(("delivered", sender, text, origin, attempt, relay))

    def confirmed(self, sender, relays) -> None:
        self.calls.append(("confirmed", sender, relays))

    def reforwarded(self, sender, relay, attempt) -> None:
        self.calls.append(("reforwarded", sender, relay, attempt))

    def heard(self, sender, message) -> None:
        self.calls.append(("heard", sender, message))


def ack_line(sender: str, *relays: str) -> str:
    """The ack line a bus publishes for ``relays`` in one turn, made as it makes it."""
    published = []
    batcher = Batcher(Clock(), lambda channel, data, told: published.append(data))
    for relay in relays:
        batcher.publish_word("inbox", envelope.confirm_head(sender), envelope.word(relay))
    batcher.flush()
    [line] = published
    return line


def read(line: str) -> list[tuple]:
    recorder = Recorder()
    envelope.read(line, recorder)
    return recorder.calls


#: Any text, with the characters the compact form escapes or splits on made likely.
texts = st.text(st.sampled_from(' \\\nsn\\ d{}"é\u2028') | st.characters(), max_size=30)
counts = st.integers(min_value=0, max_value=10**30)

JSON_KINDS = [
    envelope.Event(ChatPush("bob", "two\nlines")),
    envelope.Event(BroadcastPush("b")),
    envelope.Event(ChatPush("bob", "stored", 41, "2026-12-01T19:40:00.123Z")),
    envelope.Event(BroadcastPush("stored", 42, "2026-12-01T19:40:00.123Z")),
    envelope.Event(frames.Presence("bob", "left")),
    envelope.Leave("run1"),
    envelope.Answer("7", {"a": [1, "x y"]}),
    envelope.Refuse("7", "client_gone"),
    envelope.Claim("lock 1", 1765000000.5),
]


class CompactKinds(unittest.TestCase):
    """deliver, ack and reforward: one short line each, read with one split."""

    @given(texts, texts, texts, counts, texts)
    @example("i1", "ünïcode text with  spaces ", "i2", 3, "r.1")
    @example("a b", "", "\\", 0, "\n")
    def test_a_delivery_round_trips_on_one_line(self, sender, text, origin, attempt, relay):
        line = envelope.deliver(sender, text, origin, attempt, relay)
        self.assertNotIn("\n", line)
        self.assertEqual(read(line), [("delivered", sender, text, origin, attempt, relay)])

    @given(texts, st.lists(texts, min_size=1, max_size=5))
    def test_acks_round_trip_on_one_line(self, sender, relays):
        line = ack_line(sender, *relays)
        self.assertNotIn("\n", line)
        self.assertEqual(read(line), [("confirmed", sender, relays)])

    @given(texts, texts, counts)
    def test_a_reforward_round_trips_on_one_line(self, sender, relay, attempt):
        line = envelope.reforward(sender, relay, attempt)
        self.assertNotIn("\n", line)
        self.assertEqual(read(line), [("reforwarded", sender, relay, attempt)])

    def test_the_lines_are_short(self):
        self.assertEqual(
            envelope.deliver("i1", "hello world", "i1", 0, "17"), "d i1 i1 0 17 hello world"
        )
        self.assertEqual(ack_line("i2", "17"), "a i2 17")
        self.assertEqual(ack_line("i2", "17", "18"), "a i2 17 18")
        self.assertEqual(envelope.reforward("i2", "17", 1), "r i2 17 1")

    @given(st.lists(st.sampled_from(JSON_KINDS) | st.tuples(texts, texts, counts), max_size=8))
    def test_a_batch_splits_back_into_its_messages(self, messages):
        lines = [
            envelope.reforward(*m) if isinstance(m, tuple) else envelope.encode("me", m)
            for m in messages
        ]
        self.assertEqual("\n".join(lines).split("\n") if lines else [], lines)


class JsonKinds(unittest.TestCase):
    def test_every_other_kind_round_trips_as_json(self):
        for message in JSON_KINDS:
            line = envelope.encode("me", message)
            self.assertTrue(line.startswith("{"))
            self.assertNotIn("\n", line)
            self.assertEqual(read(line), [("heard", "me", message)])
            push = getattr(message, "push", None)
            if push is not None and not isinstance(push, frames.Presence):
                # id and time travel with the line (time is not part of a push's equality)
                [(_, _, decoded)] = read(line)
                self.assertEqual((decoded.push.id, decoded.push.time), (push.id, push.time))

    def test_the_relay_kinds_have_no_json_form(self):
        """One definition per kind: the JSON ops of the earlier format are refused."""
        for line in [
            '{"op":"deliver","from":"a","text":"t","origin":"o","attempt":0,"relay":"1"}',
            '{"op":"ack","from":"a","relay":"1"}',
            '{"op":"reforward","from":"a","relay":"1","attempt":0}',
        ]:
            with self.assertRaises(envelope.Malformed):
                read(line)


#: Pieces of well-formed and almost well-formed lines, for hostile input.
PIECES = st.sampled_from(
    ["d ", "a ", "r ", "d", " ", "\\", "\\s", "\\n", "\\x", "0", "-1", "१", "99" * 3000, "é"]
    + ['{"op":', '"event"', '"leave"', '"from":', '"run":', "1", "null", "}", "[", ","]
)


class HostileInput(unittest.TestCase):
    """Whatever a line holds, reading it hands on one well-typed message or raises
    `Malformed`; nothing else escapes."""

    def check(self, line: str) -> None:
        try:
            calls = read(line)
        except envelope.Malformed:
            return
        [call] = calls
        kind, sender, *rest = call
        self.assertIsInstance(sender, str)
        if kind == "delivered":
            text, origin, attempt, relay = rest
            self.assertEqual([type(text), type(origin), type(relay)], [str, str, str])
            self.assertIsInstance(attempt, int)
            self.assertGreaterEqual(attempt, 0)
        elif kind == "confirmed":
            self.assertTrue(rest[0])
            self.assertTrue(all(isinstance(relay, str) for relay in rest[0]))
        elif kind == "reforwarded":
            self.assertIsInstance(rest[0], str)
            self.assertIsInstance(rest[1], int)

    @given(st.text())
    @example("")
    @example("d")
    @example("d a b c d")
    @example("d a b -1 d e")
    @example("a x\\")
    @example("a x\\q")
    @example("r a b 1 2")
    @example("r a b ")
    @example('{"op":"leave","from":"a"}')
    @example('{"op":"event","from":"a","push":5}')
    @example("[1]")
    @example("[" * 100_000)
    @example('{"op":"answer","from":"a","id":"1","body":' + "[" * 100_000 + "}")
    def test_any_text(self, line):
        self.check(line)

    @given(st.lists(PIECES, max_size=12).map("".join))
    def test_pieces_of_lines(self, line):
        self.check(line)

    @given(st.sampled_from(JSON_KINDS), texts, counts, st.integers(0, 200), st.text(max_size=3))
    def test_cut_or_spliced_lines(self, message, text, attempt, at, splice):
        for line in [
            envelope.encode("me", message),
            envelope.deliver("me", text, "you", attempt, "r1"),
            envelope.reforward("me", text, attempt),
        ]:
            self.check(line[:at])
            self.check(line[:at] + splice + line[at:])
