"""Defences against hostile and broken clients: each on a Clock where it is about time,
with real sockets on loopback where it is about sockets."""

import random
import socket

from twisted.internet import defer, protocol, reactor
from twisted.internet.endpoints import TCP4ClientEndpoint
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.trial import unittest

from nea.core.bus import LocalBus
from nea.core.hub import Hub, HubConfig
from nea.core.snapshot import status_json
from nea.core.testing import FakePeer
from nea.server.admission import Admission
from nea.server.connection import CLOSE_TIMEOUT, ConnectionLimits, NeaConnection
from nea.tls.server import HandshakeGate, Phase, TLSFiles, TLSServerFactory, server_context
from nea.wire import frames, profiles
from tests.support import (
    WAIT,
    certs,
    connect,
    next_tick,
    settle,
    start_server,
    tcp_listen,
    tls_listen,
)


def make_hub(clock=None, **config):
    return Hub(clock or Clock(), LocalBus("unit"), HubConfig(**config), random.Random(0))


# ---- the TLS layer: deadline and gate, on a Clock ----


def _hello(length: int = 3) -> bytes:
    """The start of a TLS handshake record of ``length`` bytes (content is OpenSSL's problem)."""
    return bytes([0x16, 3, 1]) + length.to_bytes(2, "big")


#: A whole handshake record holding a message of a type that does not exist:
#: OpenSSL refuses it at once, so only a handshake that has begun closes on it.
JUNK_RECORD = _hello(4) + b"\xff\x00\x00\x00"


class TLSLayerTests(unittest.TestCase):
    def setUp(self):
        self.clock = Clock()
        self.gate = HandshakeGate(limit=2)
        d = certs()
        context = server_context(TLSFiles(d / "server-key.pem", d / "server.pem"))
        self.factory = TLSServerFactory(
            protocol.Factory.forProtocol(protocol.Protocol),
            lambda: context,
            self.clock,
            Admission(keepalive=0),
            self.gate,
            handshake_timeout=10,
        )

    def accept(self):
        tls = self.factory.buildProtocol(None)
        transport = StringTransport()
        tls.makeConnection(transport)
        return tls, transport

    def test_an_unfinished_handshake_is_closed_at_the_deadline(self):
        _, transport = self.accept()
        self.assertEqual(self.gate.stats.unfinished, 1)
        self.clock.advance(9.9)
        self.assertFalse(transport.disconnected)
        self.clock.advance(0.2)
        self.assertTrue(transport.disconnected)
        self.assertEqual((self.gate.stats.timed_out, self.gate.stats.unfinished), (1, 0))

    def test_silent_and_half_sent_hellos_hold_no_place_at_the_gate(self):
        silent = [self.accept() for _ in range(5)]
        for tls, _ in silent[:3]:
            tls.dataReceived(_hello(100)[:4])  # not even a whole header
        silent[3][0].dataReceived(_hello(100) + b"x" * 50)  # half a record
        self.assertEqual(self.gate.stats.in_progress, 0)
        self.assertEqual(self.gate.stats.unfinished, 5)

    def test_past_the_limit_newcomers_wait_and_the_newest_goes_first(self):
        holders = [self.accept() for _ in range(2)]
        for tls, _ in holders:
            tls.dataReceived(JUNK_RECORD)  # whole records (of junk): handshakes begin
        self.assertEqual(self.gate.stats.in_progress, 2)
        older, newer = self.accept(), self.accept()
        for tls, _ in (older, newer):
            tls.dataReceived(JUNK_RECORD)
        self.assertEqual((self.gate.stats.in_progress, self.gate.stats.waiting), (2, 2))
        self.assertEqual(older[1].producerState, "producing")  # still read while it waits
        holders[0][0].connectionLost()  # a handshake ends: the newest waiter begins
        # (OpenSSL at once refuses its junk record: only a begun handshake gets that far)
        self.assertTrue(newer[1].disconnecting)
        self.assertFalse(older[1].disconnecting)
        self.assertEqual((self.gate.stats.in_progress, self.gate.stats.waiting), (2, 1))
        for tls, _ in (holders[1], older, newer):
            tls.connectionLost()
        self.assertEqual((self.gate.stats.in_progress, self.gate.stats.waiting), (0, 0))

    def test_a_waiting_connection_that_goes_away_leaves_the_queue(self):
        holders = [self.accept() for _ in range(2)]
        for tls, _ in holders:
            tls.dataReceived(JUNK_RECORD)
        waiting, _ = self.accept()
        waiting.dataReceived(JUNK_RECORD)
        waiting.connectionLost()
        self.assertEqual(self.gate.stats.waiting, 0)
        for tls, _ in holders:
            tls.connectionLost()
        self.assertEqual(self.gate.stats.in_progress, 0)

    def test_the_phases_of_a_handshake_that_waits_its_turn(self):
        holders = [self.accept() for _ in range(2)]
        for tls, _ in holders:
            tls.dataReceived(JUNK_RECORD)
        waiting, _ = self.accept()
        self.assertIs(waiting.phase, Phase.GATHERING_HELLO)
        waiting.dataReceived(JUNK_RECORD[:6])
        self.assertIs(waiting.phase, Phase.GATHERING_HELLO)
        waiting.dataReceived(JUNK_RECORD[6:])
        self.assertIs(waiting.phase, Phase.QUEUED)
        holders[0][0].connectionLost()
        self.assertIs(holders[0][0].phase, Phase.CLOSED)
        self.assertIs(waiting.phase, Phase.HANDSHAKING)  # its turn: OpenSSL refuses the junk
        for tls in (holders[1][0], waiting):
            tls.connectionLost()
        self.assertEqual((self.gate.stats.in_progress, self.gate.stats.unfinished), (0, 0))

    def test_past_the_deadline_nothing_more_is_read(self):
        tls, _ = self.accept()
        self.clock.advance(10.1)
        self.assertIs(tls.phase, Phase.EXPIRED)
        tls.dataReceived(JUNK_RECORD)  # arrived as the abort was under way
        self.assertEqual((self.gate.stats.in_progress, self.gate.stats.unfinished), (0, 0))
        tls.connectionLost()
        self.assertEqual((self.gate.stats.in_progress, self.gate.stats.timed_out), (0, 1))

    def test_a_refused_socket_never_handshakes_and_gives_back_no_place(self):
        admission = self.factory.admission = Admission(keepalive=0, max_per_address=1)
        first, _ = self.accept()
        refused, _ = self.accept()
        self.assertIs(refused.phase, Phase.REFUSED)
        refused.dataReceived(JUNK_RECORD)
        refused.connectionLost()
        self.assertEqual((self.gate.stats.unfinished, self.gate.stats.in_progress), (1, 0))
        self.assertEqual(sum(admission.by_address.values()), 1)  # the first's place only
        first.connectionLost()
        self.assertEqual(sum(admission.by_address.values()), 0)


# ---- one connection's own limits, on a Clock ----


class ConnectionLimitTests(unittest.TestCase):
    def connect(self, hub, profile=profiles.RELAY, **limits):
        connection = NeaConnection(hub, profile, ConnectionLimits(**limits))
        transport = StringTransport()
        connection.makeConnection(transport)
        return connection, transport

    def test_past_its_rate_a_client_is_read_later_and_nothing_is_lost(self):
        clock = Clock()
        hub = make_hub(clock, ack_timeout=0)  # nobody acks here, and the clock runs 8 s
        acker = FakePeer(profiles.RELAY)
        hub.join(acker)
        connection, transport = self.connect(hub, max_rate=10)
        connection.dataReceived(b"".join(b"message m%d\n" % i for i in range(100)))
        self.assertEqual(hub.snapshot().relays.requested, 20)  # the burst: twice the rate
        self.assertEqual(transport.producerState, "paused")
        for _ in range(200):
            if hub.snapshot().relays.requested == 100:
                break
            clock.advance(0.1)
        self.assertEqual(hub.snapshot().relays.requested, 100)
        self.assertGreaterEqual(clock.seconds(), 7.9)  # 80 more at 10 a second
        self.assertEqual(transport.producerState, "producing")
        self.assertGreater(hub.snapshot().throttled, 0)
        self.assertNotIn(b"error", transport.value())

    def test_refused_lines_count_against_the_rate_too(self):
        clock = Clock()
        hub = make_hub(clock)
        connection, transport = self.connect(hub, max_rate=10)
        connection.dataReceived(b"not a relay\n" * 100)  # each answered not_in_profile
        clock.advance(0)  # the end of the turn: the answers are written
        self.assertEqual(transport.value().count(b"error not_in_profile"), 20)
        self.assertEqual(transport.producerState, "paused")

    def test_a_throttled_clients_lines_are_all_answered_in_order(self):
        clock = Clock()
        hub = make_hub(clock)
        connection, transport = self.connect(hub, profiles.NEA, max_rate=10)
        lines = [b"line%03d" % i for i in range(100)]
        data = b"".join(line + b"\n" for line in lines)
        for start in range(0, len(data), 97):  # reads cut mid-line, most while held
            connection.dataReceived(data[start : start + 97])
            clock.advance(0.05)
        for _ in range(200):
            if transport.producerState == "producing":
                break
            clock.advance(0.1)
        self.assertEqual(transport.value().splitlines(), [line[::-1] for line in lines])

    def test_throttled_connections_share_one_timer(self):
        clock = Clock()
        hub = make_hub(clock, date_interval=10**6, ping_interval=10**6)
        held = [self.connect(hub, max_rate=10, profile=profiles.NEA) for _ in range(20)]
        before = len(clock.getDelayedCalls())
        for connection, _ in held:
            connection.dataReceived(b"reversed\n" * 30)
        self.assertEqual([t.producerState for _, t in held], ["paused"] * 20)
        clock.advance(0)  # the end of the turn (its writes out), not yet a resume
        self.assertEqual(len(clock.getDelayedCalls()) - before, 1)

    def test_a_client_gone_while_throttled_is_not_read_again(self):
        clock = Clock()
        hub = make_hub(clock)
        connection, transport = self.connect(hub, max_rate=10)
        connection.dataReceived(b"message m\n" * 30)
        connection.connectionLost(None)
        clock.advance(5)
        self.assertEqual(hub.snapshot().relays.requested, 20)
        self.assertEqual(transport.producerState, "paused")

    def test_after_a_fatal_error_nothing_is_processed_or_counted(self):
        hub = make_hub()
        connection, transport = self.connect(hub, max_line=100)
        for _ in range(50):  # a long line without LF, in many reads
            connection.dataReceived(b"x" * 64)
        connection.dataReceived(b"\nmessage after\n")
        self.assertEqual(hub.snapshot().errors.get("line_too_long", 0), 1)
        self.assertEqual(hub.snapshot().relays.requested, 0)

    def test_a_closed_client_that_never_reads_is_aborted_after_the_close_timeout(self):
        clock = Clock()
        hub = make_hub(clock)
        connection, transport = self.connect(hub)
        connection.close()
        clock.advance(CLOSE_TIMEOUT - 0.1)
        self.assertFalse(transport.disconnected)
        clock.advance(0.2)
        self.assertTrue(transport.disconnected)


class LivenessTests(unittest.TestCase):
    """Server pings (`nea.core.liveness`) to line clients, on a Clock: any input counts."""

    INTERVAL = 10.0

    def setUp(self):
        self.clock = Clock()
        self.hub = make_hub(self.clock, ping_interval=self.INTERVAL, date_interval=10**6)

    def connect(self, profile=profiles.NEA):
        connection = NeaConnection(self.hub, profile, ConnectionLimits())
        transport = StringTransport()
        connection.makeConnection(transport)
        return connection, transport

    def sweeps(self, count: int) -> None:
        self.clock.pump([self.INTERVAL] * count)

    def test_a_silent_client_is_pinged_twice_then_closed_with_ping_timeout(self):
        connection, transport = self.connect()
        self.sweeps(1)
        self.assertEqual(transport.value(), b"")  # first seen
        self.sweeps(2)
        self.assertEqual(transport.value(), b"ping\nping\n")
        self.assertFalse(transport.disconnecting)
        self.sweeps(1)
        self.assertTrue(transport.value().startswith(b"ping\nping\nerror ping_timeout "))
        self.assertTrue(transport.disconnecting)
        self.assertEqual(self.hub.snapshot().errors, {"ping_timeout": 1})

    def test_a_client_that_answers_pong_stays(self):
        connection, transport = self.connect()
        for _ in range(10):
            self.sweeps(1)
            if transport.value().endswith(b"ping\n"):
                connection.dataReceived(b"pong\n")
        self.assertFalse(transport.disconnecting)
        self.assertEqual(self.hub.snapshot().errors, {})

    def test_an_old_client_that_never_answers_pings_stays_while_it_sends_anything(self):
        connection, transport = self.connect()
        for _ in range(10):
            connection.dataReceived(b"hello\n")  # a reverse, not a pong
            self.sweeps(1)
        self.assertNotIn(b"ping", transport.value())
        self.assertFalse(transport.disconnecting)

    def test_the_client_may_ping_too_and_is_answered_pong_in_text_and_json(self):
        connection, transport = self.connect()
        connection.dataReceived(b'ping\n{"type":"ping"}\n')
        self.clock.advance(0)
        self.assertEqual(transport.value(), b'pong\n{"type":"pong"}\n')

    def test_a_relay_profile_client_is_never_pinged_nor_closed_for_silence(self):
        connection, transport = self.connect(profiles.RELAY)
        self.sweeps(10)
        self.assertEqual(transport.value(), b"")
        self.assertFalse(transport.disconnecting)

    def test_no_sweeps_while_nobody_is_connected(self):
        connection, transport = self.connect(profiles.RELAY)  # (no dates either)
        self.assertEqual(len(self.clock.getDelayedCalls()), 1)
        connection.connectionLost(None)
        self.assertEqual(self.clock.getDelayedCalls(), [])


class PendingBoundTests(unittest.TestCase):
    def test_a_sender_past_max_pending_is_told_and_stays_connected(self):
        hub = make_hub(max_pending=3)
        sender, target = FakePeer(profiles.RELAY), FakePeer(profiles.RELAY)
        hub.join(target)
        hub.join(sender)
        hub.registry.relay_capable.discard(sender)  # only target takes relays
        for i in range(4):
            hub.handle(sender, frames.Relay(f"m{i}"))
        [error] = [p for p in sender.take() if isinstance(p, frames.ErrorReply)]
        self.assertEqual(error.code, "too_many_pending")
        self.assertFalse(sender.closed)
        self.assertEqual(hub.snapshot().errors.get("too_many_pending", 0), 1)
        self.assertEqual(hub.snapshot().relays.pending, 3)

    def test_a_target_holding_max_pending_is_not_drawn_until_it_acks(self):
        hub = make_hub(max_pending=2)
        hoarder, good, sender = (FakePeer(profiles.RELAY) for _ in range(3))
        for peer in (hoarder, good, sender):
            hub.join(peer)
        hub.registry.relay_capable.discard(sender)
        for i in range(200):
            hub.handle(sender, frames.Relay(f"m{i}"))
            for push in good.take():
                hub.handle(good, frames.Ack(push.text))
        held = [p.text for p in hoarder.take()]
        self.assertEqual(len(held), 2)  # then never drawn again
        self.assertEqual(hub.snapshot().relays.in_flight, 2)
        hub.handle(hoarder, frames.Ack(held[0]))
        self.assertIn(hoarder, hub.registry.relay_capable)


# ---- sockets, on loopback ----


class Silent(protocol.Protocol):
    def __init__(self):
        self.closed = defer.Deferred()

    def connectionLost(self, reason):
        self.closed.callback(None)


@defer.inlineCallbacks
def silent_sockets(testcase, port: int, count: int):
    endpoint = TCP4ClientEndpoint(reactor, "127.0.0.1", port, timeout=WAIT)
    sockets = []
    for _ in range(count):
        s = yield endpoint.connect(protocol.Factory.forProtocol(Silent))
        testcase.addCleanup(_abort, s)
        sockets.append(s)
    return sockets


def _abort(silent: Silent) -> defer.Deferred:
    if not silent.closed.called:
        silent.transport.abortConnection()
    return silent.closed


class SocketDefences(unittest.TestCase):
    @defer.inlineCallbacks
    def test_silent_sockets_take_no_client_slot(self):
        service = yield start_server(
            self, "--max-clients", "5", "--listen", tls_listen(), "--handshake-timeout", "60"
        )
        yield silent_sockets(self, service.ports[0], 20)
        yield settle(lambda: service.hub.snapshot().handshakes["unfinished"] == 20)
        client = yield connect(self, service.ports[0])
        client.send("still served")
        self.assertEqual((yield client.next()), b"devres llits")
        status = status_json(service.hub.snapshot())
        self.assertEqual((status["connections"], status["handshakes"]["unfinished"]), (1, 20))

    @defer.inlineCallbacks
    def test_an_unfinished_handshake_is_closed_by_the_server(self):
        service = yield start_server(self, "--listen", tls_listen(), "--handshake-timeout", "0.5")
        [s] = yield silent_sockets(self, service.ports[0], 1)
        yield s.closed.addTimeout(WAIT, reactor)
        self.assertEqual(service.hub.snapshot().handshakes["timed_out"], 1)

    @defer.inlineCallbacks
    def test_accepted_sockets_have_keepalive_and_nodelay(self):
        service = yield start_server(
            self, "--listen", tls_listen(), "--listen", tcp_listen(), "--keepalive", "42"
        )
        for port, tls in zip(service.ports, (True, False), strict=True):
            client = yield connect(self, port, tls=tls)
            client.send("x")
            yield client.next()
        for peer in service.hub.registry.peers:
            handle = peer.transport.getHandle()
            self.assertEqual(handle.getsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE), 1)
            self.assertEqual(handle.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE), 42)
            self.assertEqual(handle.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY), 1)

    @defer.inlineCallbacks
    def test_keepalive_zero_turns_it_off(self):
        service = yield start_server(self, "--listen", tcp_listen(), "--keepalive", "0")
        client = yield connect(self, service.ports[0], tls=False)
        client.send("x")
        yield client.next()
        [peer] = service.hub.registry.peers
        self.assertEqual(
            peer.transport.getHandle().getsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE), 0
        )

    @defer.inlineCallbacks
    def test_per_ip_limit(self):
        service = yield start_server(
            self, "--listen", tcp_listen(), "--listen", tls_listen(), "--max-clients-per-ip", "2"
        )
        kept = yield silent_sockets(self, service.ports[1], 2)  # TLS, mid-handshake: they count
        refused = yield silent_sockets(self, service.ports[0], 1)
        yield refused[0].closed.addTimeout(WAIT, reactor)
        self.assertFalse(any(s.closed.called for s in kept))
        yield defer.gatherResults([_abort(s) for s in kept])
        yield settle(lambda: not service.hub.snapshot().handshakes["unfinished"])
        client = yield connect(self, service.ports[0], tls=False)  # room again
        client.send("x")
        self.assertEqual((yield client.next()), b"x")

    @defer.inlineCallbacks
    def test_idle_tls_squatters_are_pinged_and_closed_an_active_client_stays(self):
        service = yield start_server(
            self, "--listen", tls_listen(), "--ping-interval", "0.2", "--date-interval", "1000"
        )
        squatter = yield connect(self, service.ports[0])
        active = yield connect(self, service.ports[0])
        for i in range(40):  # about 2 s: 10 intervals; the squatter goes after 3 to 4
            active.send(f"x{i}")
            reply = yield active.next()
            while reply == b"ping":  # (it may have been pinged before its first line)
                reply = yield active.next()
            self.assertEqual(reply, f"x{i}".encode()[::-1])
            yield next_tick(0.05)
            if squatter.closed.called:
                break
        yield squatter.closed.addTimeout(WAIT, reactor)
        self.assertEqual((yield squatter.next()), b"ping")
        self.assertEqual((yield squatter.next()), b"ping")
        self.assertTrue((yield squatter.next()).startswith(b"error ping_timeout "))
        self.assertFalse(active.closed.called)
        self.assertEqual(service.hub.snapshot().connections, 1)

    @defer.inlineCallbacks
    def test_a_10_mb_line_over_tls_is_one_error(self):
        service = yield start_server(self, "--listen", tls_listen())
        client = yield connect(self, service.ports[0])
        client.transport.write(b"x" * (10 * 1024 * 1024))
        push = yield client.next_push()
        self.assertEqual(push.code, "line_too_long")
        yield client.closed.addTimeout(WAIT, reactor)
        self.assertEqual(service.hub.snapshot().errors.get("line_too_long", 0), 1)

    @defer.inlineCallbacks
    def test_poison_json_is_answered_counted_and_the_connection_stays(self):
        service = yield start_server(self, "--listen", tcp_listen())
        client = yield connect(self, service.ports[0], tls=False)
        client.send(b'{"type":"reverse","x":' + b"[" * 5000 + b"]" * 5000 + b"}")
        client.send(b'{"type":"reverse","payload":"\\ud800"}')
        client.send(b'{"type":"reverse","payload":"ok"}')
        codes = []
        for _ in range(3):
            push = yield client.next_push()
            codes.append(getattr(push, "code", None) or push.text)
        self.assertEqual(codes, ["bad_json", "bad_payload", "ko"])
        self.assertEqual(service.hub.snapshot().errors, {"bad_json": 1, "bad_payload": 1})
