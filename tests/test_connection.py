"""NeaConnection without sockets: StringTransport for bytes, iosim for a client pair."""

import random

from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.protocols.basic import LineReceiver
from twisted.test import iosim
from twisted.trial import unittest

from nea.core.bus import LocalBus
from nea.core.hub import Hub, HubConfig
from nea.server.connection import (
    HALF_CLOSE_LINGER,
    HOLD_LIMIT,
    ConnectionLimits,
    NeaConnection,
    Stream,
)
from nea.wire import codec, frames, profiles


def make_hub(**config):
    return Hub(Clock(), LocalBus("unit"), HubConfig(**config), random.Random(0))


def connected(hub, profile=profiles.NEA, max_line=1000, max_outbound=10_000):
    connection = NeaConnection(hub, profile, ConnectionLimits(max_line, max_outbound))
    transport = StringTransport()
    connection.makeConnection(transport)
    return connection, transport


def replies(transport, hub, skip_dates=True):
    """What ``transport`` was written once the reactor turn has ended (`Outbox`)."""
    hub.clock.advance(0)
    lines = transport.value().splitlines()
    transport.clear()
    pushes = [codec.decode_push(line) for line in lines]
    return [p for p in pushes if not (skip_dates and isinstance(p, frames.DatePush))]


class ConnectionTests(unittest.TestCase):
    def setUp(self):
        self.hub = make_hub()

    def test_lf_and_crlf_lines(self):
        _, transport = connected(self.hub)
        _.dataReceived(b"abc\ndef\r\n")
        self.assertEqual(
            replies(transport, self.hub),
            [frames.ReverseReply("cba"), frames.ReverseReply("fed")],
        )

    @given(st.lists(st.integers(1, 40), max_size=10))
    @settings(max_examples=50)
    def test_a_line_split_across_reads(self, cuts):
        hub = make_hub()
        connection, transport = connected(hub)
        data = b"message hello there\nwhat\n"
        start = 0
        for cut in sorted(set(cuts)) + [len(data)]:
            connection.dataReceived(data[start:cut])
            start = max(start, cut)
        got = replies(transport, hub)
        self.assertEqual(got, [frames.RelayPush("hello there"), frames.ReverseReply("tahw")])

    def test_a_json_frame_switches_the_connection_to_json(self):
        connection, transport = connected(self.hub)
        connection.dataReceived(b"ab\n")
        self.assertEqual(replies(transport, self.hub), [frames.ReverseReply("ba")])
        connection.dataReceived(b'{"type":"reverse","payload":"xy"}\nab\n')
        self.hub.clock.advance(0)
        self.assertEqual(
            transport.value(),
            b'{"type":"reverse","payload":"yx"}\n{"type":"reverse","payload":"ba"}\n',
        )

    def test_malformed_json_does_not_switch(self):
        connection, transport = connected(self.hub, profiles.CHAT)
        connection.dataReceived(b"{oops\n")
        self.hub.clock.advance(0)
        self.assertTrue(transport.value().startswith(b"error bad_json "))
        self.assertFalse(transport.disconnecting)

    def test_bad_utf8_keeps_the_connection(self):
        connection, transport = connected(self.hub)
        connection.dataReceived(b"\xff\xfe\nok\xc3\n")
        codes = [p.code for p in replies(transport, self.hub)]
        self.assertEqual(codes, ["bad_utf8", "bad_utf8"])
        self.assertFalse(transport.disconnecting)
        connection.dataReceived(b"still here\n")
        self.assertEqual(replies(transport, self.hub), [frames.ReverseReply("ereh llits")])

    def test_over_long_line_is_an_error_and_ends_the_connection(self):
        connection, transport = connected(self.hub, max_line=10)
        connection.dataReceived(b"short\n" + b"x" * 11 + b"\nnever\n")
        got = replies(transport, self.hub)
        self.assertEqual(got[0], frames.ReverseReply("trohs"))
        self.assertEqual([p.code for p in got[1:]], ["line_too_long"])
        self.assertTrue(transport.disconnecting)
        self.assertEqual(self.hub.snapshot().errors.get("line_too_long", 0), 1)

    def test_nothing_is_handled_after_exit(self):
        connection, transport = connected(self.hub)
        connection.dataReceived(b"exit\nmessage late\n")
        self.assertEqual(replies(transport, self.hub), [frames.Bye()])
        self.assertTrue(transport.disconnecting)
        self.assertEqual(self.hub.snapshot().relays.pending, 0)

    def test_leaving_releases_everything(self):
        connection, transport = connected(self.hub)
        connection.dataReceived(b"message x\n")
        self.assertEqual(self.hub.snapshot().relays.pending, 1)
        connection.connectionLost(None)
        self.assertTrue(self.hub.zero_state())

    def test_the_replies_to_one_read_are_one_write(self):
        connection, transport = connected(self.hub)
        writes = []
        transport.write = writes.append
        connection.dataReceived(b"ab\ncd\nef\n")
        self.hub.clock.advance(0)  # the end of the turn
        self.assertEqual(writes, [b"ba\ndc\nfe\n"])  # over TLS: one record, not three
        connection.dataReceived(b"exit\nignored\n")
        self.assertEqual(writes[1:], [b"bye\n"])  # written before the close, nothing after
        self.assertTrue(transport.disconnecting)

    def test_pushes_to_another_connection_in_one_turn_are_one_write(self):
        relays = make_hub()
        sender, _ = connected(relays, profiles.RELAY)
        target, transport = connected(relays, profiles.RELAY)
        relays.registry.relay_capable.discard(sender)  # so that every relay goes to target
        writes = []
        transport.write = writes.append
        for n in range(3):  # three reads of the sender in one reactor turn
            sender.dataReceived(b"message %d\nmessage %d.5\n" % (n, n))
        self.assertEqual(writes, [])
        relays.clock.advance(0)  # the end of the turn
        self.assertEqual(len(writes), 1)
        self.assertEqual(
            writes[0].splitlines(), [b"message %s" % t for t in b"0 0.5 1 1.5 2 2.5".split()]
        )

    def test_a_write_that_fails_at_the_end_of_a_turn_strands_no_other_connection(self):
        hub = make_hub()
        broken, broken_transport = connected(hub)
        other, other_transport = connected(hub)

        def fail(data):
            raise OSError("broken transport")

        broken_transport.write = fail
        hub.broadcast("first")  # both hold it, the broken one first
        hub.clock.advance(0)
        self.assertEqual([p.text for p in replies(other_transport, hub)], ["first"])
        self.assertEqual(len(self.flushLoggedErrors(OSError)), 1)

    def test_held_replies_go_out_once_they_fill_a_record(self):
        connection, transport = connected(self.hub, max_line=20_000)
        writes = []
        transport.write = writes.append
        line = b"x" * 6000 + b"\n"
        connection.dataReceived(line * 7)  # 42 KB of replies from one read
        self.hub.clock.advance(0)
        self.assertEqual([len(w) for w in writes], [3 * len(line), 3 * len(line), len(line)])
        self.assertLessEqual(max(len(w) for w in writes), HOLD_LIMIT + len(line))

    def test_server_full(self):
        hub = make_hub(max_clients=1)
        connected(hub)
        _, transport = connected(hub)
        self.assertEqual([p.code for p in replies(transport, hub)], ["server_full"])
        self.assertTrue(transport.disconnecting)


class StreamStateTests(unittest.TestCase):
    """The stream only moves forward: OPEN, INPUT_ENDED, CLOSING, CLOSED."""

    def test_end_of_input_then_close_then_lost(self):
        hub = make_hub()
        connection, transport = connected(hub)
        connected(hub)  # the relay's target, which does not ack
        self.assertIs(connection.stream, Stream.OPEN)
        connection.dataReceived(b"message hi")
        connection.readConnectionLost()  # the relay is still awaited: the client lingers
        self.assertIs(connection.stream, Stream.INPUT_ENDED)
        self.assertFalse(connection.closing)
        hub.clock.advance(HALF_CLOSE_LINGER)
        self.assertIs(connection.stream, Stream.CLOSING)
        self.assertTrue(connection.closing)
        connection.connectionLost(None)
        self.assertIs(connection.stream, Stream.CLOSED)

    def test_a_lost_connection_stays_lost(self):
        connection, _ = connected(make_hub())
        connection.connectionLost(None)
        for late in (connection.abort, connection.stopProducing, connection.readConnectionLost):
            late()
            self.assertIs(connection.stream, Stream.CLOSED)
        connection.dataReceived(b"ab\n")
        self.assertEqual(connection.bytes_in, 0)


class SlowConsumerTests(unittest.TestCase):
    def test_a_client_that_stops_reading_is_dropped_past_the_limit(self):
        hub = make_hub()
        connection, transport = connected(hub, profiles.NEA, max_outbound=1000)
        other, other_transport = connected(hub, profiles.NEA)
        connection.pauseProducing()  # what the transport says when its buffer is full
        for i in range(50):
            hub.broadcast(f"news {i:02d}" + "." * 20)
        hub.clock.advance(0)  # the end of the turn: what the others were sent goes out
        self.assertTrue(transport.disconnected)  # aborted, not politely closed
        self.assertEqual(hub.snapshot().errors.get("slow_consumer", 0), 1)
        self.assertEqual(len(replies(other_transport, hub)), 50)  # the others are unaffected

    def test_resume_resets_the_count(self):
        hub = make_hub()
        connection, transport = connected(hub, profiles.NEA, max_outbound=1000)
        for _ in range(5):
            connection.pauseProducing()
            for _ in range(10):
                hub.broadcast("x" * 50)
            connection.resumeProducing()
        self.assertFalse(transport.disconnected)


class Client(LineReceiver):
    delimiter = b"\n"

    def __init__(self):
        self.lines = []

    def lineReceived(self, line):
        self.lines.append(line)


class PairTests(unittest.TestCase):
    def test_two_clients_relay_through_iosim(self):
        hub = make_hub()
        pairs = [
            iosim.connectedServerAndClient(
                lambda: NeaConnection(hub, profiles.RELAY, ConnectionLimits(1000, 10_000)), Client
            )
            for _ in range(2)
        ]
        (a, _, pump_a), (b, _, pump_b) = pairs
        a.sendLine(b"message ping")
        for _ in range(3):
            hub.clock.advance(0)  # the end of a reactor turn: held writes go out
            pump_a.flush()
            pump_b.flush()
        holder = a if a.lines == [b"message ping"] else b
        self.assertEqual((a.lines + b.lines).count(b"message ping"), 1)
        holder.sendLine(b"ok ping")
        for _ in range(3):
            hub.clock.advance(0)  # the end of a reactor turn: held writes go out
            pump_a.flush()
            pump_b.flush()
        self.assertEqual(a.lines[-1], b"ok ping")
