"""`nea.cluster.publisher.Publisher`: PUBLISHes written, their answers told in order;
anything else aborts the connection. StringTransport and Clock; the real Redis is in
test_cluster_redis.py."""

from hypothesis import given
from hypothesis import strategies as st
from twisted.internet.error import ConnectionLost
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.logger import globalLogPublisher
from twisted.python.failure import Failure
from twisted.trial import unittest

from nea.cluster.connection import LinkFactory
from nea.cluster.publisher import MAX_LINE, Publisher


class Connection:
    def __init__(self, case: unittest.TestCase) -> None:
        self.clock = Clock()
        self.publisher = LinkFactory(lambda: Publisher(self.clock)).buildProtocol(None)
        self.transport = StringTransport()
        self.publisher.makeConnection(self.transport)
        self.events: list[dict] = []
        globalLogPublisher.addObserver(self.events.append)
        case.addCleanup(globalLogPublisher.removeObserver, self.events.append)

    def warned(self) -> list[str]:
        return [e["what"] for e in self.events if "what" in e]


def cut(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({c % (len(data) + 1) for c in cuts} | {0, len(data)})
    return [data[a:b] for a, b in zip(points, points[1:], strict=False)]


class PublisherTests(unittest.TestCase):
    def test_a_publish_is_one_command_its_lengths_in_bytes(self):
        c = Connection(self)
        c.publisher.publish("inbox:é", "d a b 0 r1 héllo wörld")
        data = "d a b 0 r1 héllo wörld".encode()
        self.assertEqual(
            c.transport.value(),
            b"*3\r\n$7\r\nPUBLISH\r\n$8\r\ninbox:\xc3\xa9\r\n$%d\r\n%s\r\n" % (len(data), data),
        )

    @given(
        counts=st.lists(st.integers(0, 10**9), min_size=1, max_size=30),
        untold=st.sets(st.integers(0, 29)),
        cuts=st.lists(st.integers(0, 10**4), max_size=20),
    )
    def test_each_answer_goes_to_its_publish_in_order_however_the_reads_are_cut(
        self, counts, untold, cuts
    ):
        c = Connection(self)
        told: list[tuple[int, int]] = []
        for n in range(len(counts)):
            callback = None if n in untold else (lambda receivers, n=n: told.append((n, receivers)))
            c.publisher.publish("ch", f"m{n}", callback)
        for chunk in cut(b"".join(b":%d\r\n" % count for count in counts), cuts):
            c.publisher.dataReceived(chunk)
        expected = [(n, count) for n, count in enumerate(counts) if n not in untold]
        self.assertEqual(told, expected)
        self.assertIsNone(c.publisher.waiting_since())
        self.assertFalse(c.transport.disconnecting)

    def test_waiting_since_is_the_oldest_unanswered(self):
        c = Connection(self)
        self.assertIsNone(c.publisher.waiting_since())
        c.clock.advance(5)
        c.publisher.publish("ch", "a")
        c.clock.advance(1)
        c.publisher.publish("ch", "b")
        self.assertEqual(c.publisher.waiting_since(), 5)
        c.publisher.dataReceived(b":1\r\n")
        self.assertEqual(c.publisher.waiting_since(), 6)

    def test_what_is_not_an_answer_is_logged_and_aborts_the_connection(self):
        for garbage in (b"-ERR refused\r\n", b"+OK\r\n", b":-1\r\n", b":\r\n", b"$1\r\nx\r\n"):
            c = Connection(self)
            told: list[int] = []
            c.publisher.publish("ch", "a", told.append)
            c.publisher.publish("ch", "b", told.append)
            c.publisher.dataReceived(garbage + b":1\r\n")
            self.assertEqual(told, [], garbage)
            self.assertTrue(c.transport.disconnecting, garbage)
            self.assertIsNone(c.publisher.waiting_since())
            [what] = c.warned()
            self.assertIn("answered a PUBLISH with", what)

    def test_an_answer_to_nothing_aborts_the_connection(self):
        c = Connection(self)
        c.publisher.dataReceived(b":1\r\n")
        self.assertTrue(c.transport.disconnecting)
        self.assertEqual(c.warned(), ["answered a PUBLISH never sent"])

    def test_a_line_that_never_ends_aborts_the_connection_the_buffer_stays_short(self):
        c = Connection(self)
        c.publisher.publish("ch", "a")
        c.publisher.dataReceived(b":" + b"1" * (MAX_LINE - 2))
        self.assertFalse(c.transport.disconnecting)  # (an answer may yet end)
        c.publisher.dataReceived(b"1")
        self.assertTrue(c.transport.disconnecting)
        self.assertEqual(c.warned(), [f"sent a line longer than {MAX_LINE} bytes"])

    def test_nothing_is_told_once_the_connection_is_lost(self):
        c = Connection(self)
        told: list[int] = []
        c.publisher.publish("ch", "a", told.append)
        gone = c.publisher.whenDisconnected()
        c.publisher.connectionLost(Failure(ConnectionLost()))
        self.assertIs(self.successResultOf(gone), c.publisher)
        self.assertFalse(c.publisher.connected)
        self.assertIsNone(c.publisher.waiting_since())
        self.assertEqual(told, [])

    @given(data=st.binary(max_size=300), cuts=st.lists(st.integers(0, 400), max_size=10))
    def test_arbitrary_bytes_never_raise_and_are_answers_or_abort(self, data, cuts):
        c = Connection(self)
        told: list[int] = []
        for _ in range(5):
            c.publisher.publish("ch", "m", told.append)
        for chunk in cut(data, cuts):
            if c.transport.disconnecting:
                break  # (a real transport reads no more once aborted)
            c.publisher.dataReceived(chunk)
        answers = data.split(b"\r\n")[:-1]
        if not c.transport.disconnecting:
            self.assertEqual(told, [int(a[1:]) for a in answers])
        self.assertLessEqual(len(told), 5)
