"""`nea.cluster.subscriber`: the subscribed connection's reader and protocol, without Redis.

What Redis sends is built here byte for byte (RESP), cut into reads anywhere;
hostile bytes must end in `Malformed` (a log line and an aborted connection),
never another exception or a buffer past one push. The connection against a
real Redis is tested in test_cluster_redis.py.
"""

from hypothesis import given
from hypothesis import strategies as st
from twisted.internet.error import ConnectionLost
from twisted.internet.testing import StringTransport
from twisted.logger import globalLogPublisher
from twisted.python.failure import Failure
from twisted.trial import unittest

from nea.cluster import subscriber
from nea.cluster.connection import LinkFactory
from nea.cluster.subscriber import (
    MAX_BULK,
    MAX_HEADER,
    Malformed,
    PushReader,
    RedisError,
    Subscriber,
)


def bulk(value: bytes) -> bytes:
    return b"$%d\r\n%s\r\n" % (len(value), value)


def encode(push) -> bytes:
    """What Redis sends for ``push``: an array of bulk strings and integers, or an error."""
    if isinstance(push, RedisError):
        return b"-%s\r\n" % str(push).encode()
    items = [b":%d\r\n" % item if isinstance(item, int) else bulk(item) for item in push]
    return b"*%d\r\n%s" % (len(items), b"".join(items))


def message(channel: bytes, data: bytes) -> bytes:
    return encode([b"message", channel, data])


def cut(data: bytes, cuts: list[int]) -> list[bytes]:
    """``data`` in reads, split at ``cuts`` (positions, any order, any repeats)."""
    points = sorted({0, len(data), *(c % (len(data) + 1) for c in cuts)})
    return [data[a:b] for a, b in zip(points, points[1:], strict=False)]


def fed(reader: PushReader, reads: list[bytes]) -> list:
    pushes = []
    for read in reads:
        pushes.extend(reader.feed(read))
    return pushes


pushes = st.lists(
    st.one_of(
        st.builds(lambda c, d: [b"message", c, d], st.binary(max_size=40), st.binary(max_size=300)),
        st.builds(lambda c, n: [b"subscribe", c, n], st.binary(max_size=20), st.integers(0, 10**6)),
        st.builds(
            RedisError,
            st.text(
                st.characters(blacklist_categories=("Cs",), blacklist_characters="\r\n"),
                min_size=1,
                max_size=30,
            ),
        ),
    ),
    max_size=12,
)


def same(got: list, expected: list) -> list:
    """Comparable forms (errors by their text)."""
    return [str(p) if isinstance(p, RedisError) else p for p in got], [
        str(p) if isinstance(p, RedisError) else p for p in expected
    ]


class PushReaderTests(unittest.TestCase):
    @given(pushes, st.lists(st.integers(0, 10_000), max_size=30))
    def test_pushes_come_out_whole_however_the_reads_are_cut(self, expected, cuts):
        data = b"".join(encode(p) for p in expected)
        self.assertEqual(*same(fed(PushReader(), cut(data, cuts)), expected))

    @given(st.integers(1, 2 << 20), st.integers(100, 70_000))
    def test_a_long_push_in_many_reads(self, size, read):
        data = message(b"ch", b"x" * size)
        reads = [data[at : at + read] for at in range(0, len(data), read)]
        self.assertEqual(fed(PushReader(), reads), [[b"message", b"ch", b"x" * size]])

    def test_a_long_push_is_joined_once_not_once_per_read(self):
        data = message(b"ch", b"x" * (1 << 20))
        reader = PushReader()
        joins = []
        real = subscriber._push

        def counted(data, at, end):
            joins.append(end - at)
            return real(data, at, end)

        self.patch(subscriber, "_push", counted)
        fed(reader, [data[at : at + 1000] for at in range(0, len(data), 1000)])
        # Parsed at the first read (the length is then known) and once it is all there.
        self.assertEqual(len(joins), 2)

    @given(st.binary(max_size=400), st.lists(st.integers(0, 500), max_size=10))
    def test_arbitrary_bytes_parse_wait_or_are_malformed(self, data, cuts):
        reader = PushReader()
        try:
            for read in cut(data, cuts):
                for push in reader.feed(read):
                    self.assertIsInstance(push, (list, RedisError))
        except Malformed:
            pass
        self.assertLessEqual(reader.buffered, len(data))

    @given(
        st.binary(min_size=1, max_size=60).filter(lambda b: b[:1] not in (b"*", b"-")),
        st.binary(max_size=40),
    )
    def test_what_is_not_an_array_or_an_error_is_malformed(self, start, rest):
        data = start + b"\r\n" + rest
        self.assertRaises(Malformed, list, PushReader().feed(data))

    def test_each_malformed_shape(self):
        for data in [
            b"*0\r\n",  # an empty array
            b"*9\r\n",  # more elements than a push has
            b"*-1\r\n",  # a null array
            b"*3x\r\n",
            b"*\r\n",
            b"*1\r\n$-1\r\n",  # a null bulk string
            b"*1\r\n$+3\r\nabc\r\n",
            b"*1\r\n$\xd9\xa3\r\nabc\r\n",  # a non-ASCII digit
            b"*1\r\n$3\r\nabcd\r\n",  # longer than announced
            b"*1\r\n+OK\r\n",  # not a bulk string or an integer
            b"*1\r\n:-1\r\n",
            b"*1\r\n$%d\r\n" % (MAX_BULK + 1),  # refused before anything is buffered
            b"*1\r\n$" + b"1" * 13 + b"\r\n",
        ]:
            self.assertRaises(Malformed, list, PushReader().feed(data))

    def test_a_header_line_never_ends(self):
        reader = PushReader()
        self.assertEqual(list(reader.feed(b"*1\r\n$" + b"1" * (MAX_HEADER - 10))), [])
        self.assertRaises(Malformed, list, reader.feed(b"1" * 20))
        self.assertRaises(Malformed, list, PushReader().feed(b"-" + b"e" * MAX_HEADER))

    def test_the_buffer_holds_at_most_one_push(self):
        reader = PushReader()
        data = message(b"ch", b"x" * 5000)
        self.assertEqual(len(list(reader.feed(data + data[:100]))), 1)
        self.assertEqual(reader.buffered, 100)


class Connection:
    """A Subscriber on a StringTransport, what it hands on, and what is logged."""

    def __init__(self, case: unittest.TestCase) -> None:
        self.messages: list[tuple[str, str]] = []
        self.events: list[dict] = []
        globalLogPublisher.addObserver(self.events.append)
        case.addCleanup(globalLogPublisher.removeObserver, self.events.append)
        self.protocol = LinkFactory(
            lambda: Subscriber(lambda c, d: self.messages.append((c, d)))
        ).buildProtocol(None)
        self.transport = StringTransport()
        self.protocol.makeConnection(self.transport)

    def logged(self, text: str) -> list[dict]:
        return [e for e in self.events if text in e.get("log_format", "")]


class SubscriberTests(unittest.TestCase):
    def test_subscribes_and_fires_once_every_channel_is_confirmed(self):
        c = Connection(self)
        self.successResultOf(c.protocol.whenConnected())
        done = c.protocol.subscribe(["a:to:1", "a:cluster"])
        self.assertEqual(c.transport.value(), encode([b"SUBSCRIBE", b"a:to:1", b"a:cluster"]))
        c.protocol.dataReceived(encode([b"subscribe", b"a:to:1", 1]))
        self.assertNoResult(done)
        c.protocol.dataReceived(encode([b"subscribe", b"a:cluster", 2]))
        self.successResultOf(done)

    def test_a_refused_subscribe_fails(self):
        c = Connection(self)
        done = c.protocol.subscribe(["ch"])
        c.protocol.dataReceived(b"-NOPERM this user has no permissions to access the channel\r\n")
        self.assertIn("NOPERM", str(self.failureResultOf(done, RedisError).value))

    def test_a_connection_lost_while_subscribing_fails_it(self):
        c = Connection(self)
        done = c.protocol.subscribe(["ch"])
        gone = c.protocol.whenDisconnected()
        c.protocol.connectionLost(Failure(ConnectionLost()))
        self.failureResultOf(done, ConnectionError)
        self.assertIs(self.successResultOf(gone), c.protocol)
        self.assertFalse(c.protocol.connected)

    def test_messages_of_a_read_are_handed_on_as_text(self):
        c = Connection(self)
        c.protocol.subscribe(["ch"])
        c.protocol.dataReceived(
            encode([b"subscribe", b"ch", 1])
            + message(b"ch", "d a b 0 r1 ünï\\s ✓".encode())
            + message(b"ch", b"line\nline")
        )
        self.assertEqual(c.messages, [("ch", "d a b 0 r1 ünï\\s ✓"), ("ch", "line\nline")])

    def test_what_is_not_utf8_is_logged_and_skipped(self):
        c = Connection(self)
        c.protocol.dataReceived(message(b"ch", b"\xff\xfe") + message(b"ch", b"next"))
        self.assertEqual(c.messages, [("ch", "next")])
        self.assertEqual(len(c.logged("not UTF-8")), 1)
        self.assertFalse(c.transport.disconnecting)

    def test_other_pushes_are_logged_and_skipped(self):
        c = Connection(self)
        c.protocol.dataReceived(
            encode([b"pmessage", b"p*", b"ch", b"x"])
            + encode([7])
            + encode([b"message", 1, 2])
            + message(b"ch", b"y")
        )
        self.assertEqual(c.messages, [("ch", "y")])
        self.assertEqual(len(c.logged("ignored a push")), 2)
        self.assertEqual(len(c.logged("not text")), 1)

    def test_garbage_is_logged_and_aborts_the_connection(self):
        c = Connection(self)
        c.protocol.dataReceived(message(b"ch", b"ok") + b"HTTP/1.1 400 Bad Request\r\n")
        self.assertEqual(c.messages, [("ch", "ok")])
        self.assertTrue(c.transport.disconnected)
        self.assertEqual(len(c.logged("cannot read")), 1)

    @given(st.binary(max_size=300), st.lists(st.integers(0, 400), max_size=8))
    def test_hostile_bytes_never_raise(self, data, cuts):
        c = Connection(self)
        for read in cut(b"*3\r\n$7\r\nmessage\r\n" + data, cuts):
            if c.transport.disconnected:
                break  # aborted: the reactor reads no more
            c.protocol.dataReceived(read)
        # An abort always comes with its log line; whatever was handed on is text.
        self.assertEqual(len(c.logged("cannot read")), int(c.transport.disconnected))
        self.assertTrue(all(isinstance(text, str) for _, text in c.messages))

    def test_an_error_after_subscribing_is_logged(self):
        c = Connection(self)
        done = c.protocol.subscribe(["ch"])
        c.protocol.dataReceived(encode([b"subscribe", b"ch", 1]) + b"-ERR something\r\n")
        self.successResultOf(done)
        self.assertEqual(len(c.logged("redis said")), 1)
