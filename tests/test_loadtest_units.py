"""nea-loadtest's parts without sockets: delays, its clients (nea-client's relay
state machine, tallied), the schedule, the zero-state verdict and the report."""

import random

from twisted.internet.error import ConnectionDone, ConnectionLost
from twisted.internet.interfaces import ITCPTransport
from twisted.internet.testing import MemoryReactorClock, StringTransport
from twisted.python.failure import Failure
from twisted.trial import unittest
from zope.interface import implementer

from nea.client import delays
from nea.client.status import STATUS_LINE, StatusError
from nea.loadtest import report, status
from nea.loadtest.tally import Tally, percentiles
from nea.loadtest.worker import Schedule, make_clients
from nea.tls.client import client_endpoint
from nea.wire.codec import MAX_SERVER_LINE
from tests.fakes import FakeNetwork


class DelayTests(unittest.TestCase):
    def test_forms(self):
        rng = random.Random(1)
        self.assertEqual(delays.parse("0").draw(rng), 0.0)
        self.assertEqual(delays.parse("0.25").draw(rng), 0.25)
        draws = [delays.parse("uniform:1,2").draw(rng) for _ in range(200)]
        self.assertTrue(all(1 <= d <= 2 for d in draws))
        self.assertGreater(max(draws) - min(draws), 0.5)
        mean = sum(delays.parse("exp:0.5").draw(rng) for _ in range(4000)) / 4000
        self.assertTrue(0.45 < mean < 0.55, mean)

    def test_malformed_is_refused(self):
        for text in ("", "x", "uniform:2,1", "uniform:1", "exp:-1", "-1", "nan", "inf", "gauss:1"):
            with self.assertRaises(ValueError, msg=text):
                delays.parse(text)


def client_set(ok_delay="0", timeout=5.0, retries=2):
    """A worker's clients, as `nea.loadtest.worker.run` makes them, on a fake reactor."""
    reactor = MemoryReactorClock()
    config = {
        "tls": False,
        "ca": None,
        "ok_delay": ok_delay,
        "timeout": timeout,
        "retries": retries,
        "seed": 0,
    }
    endpoint = client_endpoint(reactor, "127.0.0.1", 4000, None, timeout)
    clients = make_clients(config, reactor, endpoint)
    clients.observer.wall = reactor.seconds
    return reactor, clients


@implementer(ITCPTransport)
class TCPStringTransport(StringTransport):
    no_delay = False

    def setTcpNoDelay(self, enabled: bool) -> None:
        self.no_delay = enabled


def connect(reactor, index=-1):
    """Complete the most recent (or ``index``-th) dial; the protocol and its transport."""
    factory = reactor.tcpClients[index][2]
    protocol = factory.buildProtocol(None)
    transport = TCPStringTransport()
    protocol.makeConnection(transport)
    return protocol, transport


class ClientTests(unittest.TestCase):
    def test_exchange_closed_by_the_protocol(self):
        reactor, clients = client_set(ok_delay="0.5")
        clients.start("X")
        protocol, transport = connect(reactor)
        self.assertEqual(transport.value(), b"message X\n")
        self.assertTrue(transport.no_delay)  # else Nagle holds an ok for a delayed ACK
        transport.clear()
        protocol.dataReceived(b"2026-01-01\nmessage Y\nmess")
        self.assertEqual(transport.value(), b"")  # the ok waits for its delay
        reactor.advance(0.5)
        self.assertEqual(transport.value(), b"ok Y\n")
        protocol.dataReceived(b"age Z\r\nok X\n")
        self.assertTrue(transport.disconnecting)
        protocol.connectionLost(Failure(ConnectionDone()))
        self.assertEqual(len(reactor.getDelayedCalls()), 0)  # ok Z and the timeout are cancelled
        tally = clients.tally
        self.assertEqual(
            (tally.counts["acked"], tally.counts["acked_first_try"], tally.counts["forwarded"]),
            (1, 1, 2),
        )
        self.assertEqual((tally.counts["oks_sent"], tally.counts["unexpected"]), (1, 0))
        self.assertEqual(dict(tally.closes), {"protocol": 1})
        self.assertEqual(len(tally.samples["exchange_ms"]), 1)
        self.assertEqual(clients.observer.active, 0)

    def test_timeout_then_retry_resends(self):
        reactor, clients = client_set(timeout=5.0)
        clients.start("X")
        protocol, transport = connect(reactor)
        reactor.advance(5.0)
        self.assertTrue(transport.disconnected)  # aborted
        protocol.connectionLost(Failure(ConnectionLost()))
        self.assertEqual(dict(clients.tally.closes), {"timeout": 1})
        self.assertEqual(clients.observer.retrying, 1)
        reactor.advance(1.0)  # past the first backoff
        self.assertEqual(len(reactor.tcpClients), 2)
        protocol, transport = connect(reactor)
        self.assertEqual(transport.value(), b"message X\n")
        protocol.dataReceived(b"ok X\n")
        protocol.connectionLost(Failure(ConnectionDone()))
        counts = clients.tally.counts
        self.assertEqual((counts["acked"], counts["acked_first_try"], counts["retries"]), (1, 0, 1))
        self.assertEqual(clients.observer.retrying, 0)

    def test_error_reply_and_lost_connections_until_it_gives_up(self):
        reactor, clients = client_set(retries=1)
        clients.start("X")
        protocol, transport = connect(reactor)
        protocol.dataReceived(b"error server_full the server has reached its maximum\n")
        self.assertTrue(transport.disconnecting)
        protocol.connectionLost(Failure(ConnectionDone()))
        reactor.advance(1.0)
        protocol, _ = connect(reactor)
        protocol.connectionLost(Failure(ConnectionLost()))
        tally = clients.tally
        self.assertEqual(dict(tally.closes), {"error": 1, "lost": 1})
        self.assertEqual(dict(tally.errors), {"server_full": 1})
        self.assertEqual((tally.counts["failed"], tally.counts["acked"]), (1, 0))
        reactor.advance(10.0)
        self.assertEqual(len(reactor.tcpClients), 2)  # no third attempt
        self.assertEqual(clients.observer.active, 0)

    def test_no_recipient_is_sent_again_on_the_same_connection(self):
        """As nea-client does: the attempt goes on, the resend counts as a retry."""
        reactor, clients = client_set(retries=3)
        clients.start("X")
        protocol, transport = connect(reactor)
        transport.clear()
        protocol.dataReceived(b"error no_recipient nobody to relay 'X' to\n")
        self.assertFalse(transport.disconnecting)
        reactor.advance(0.1)  # the longest first backoff
        self.assertEqual(transport.value(), b"message X\n")
        protocol.dataReceived(b"ok X\n")
        protocol.connectionLost(Failure(ConnectionDone()))
        tally = clients.tally
        self.assertEqual(dict(tally.errors), {"no_recipient": 1})
        self.assertEqual(dict(tally.closes), {"protocol": 1})
        self.assertEqual(
            (tally.counts["acked"], tally.counts["retries"], tally.counts["attempts"]), (1, 1, 1)
        )

    def test_failed_connect_is_retried(self):
        reactor, clients = client_set(retries=3)
        clients.start("X")
        factory = reactor.tcpClients[0][2]
        factory.clientConnectionFailed(None, Failure(ConnectionLost()))
        reactor.advance(1.0)
        self.assertEqual(len(reactor.tcpClients), 2)
        self.assertEqual(dict(clients.tally.closes), {"connect_failed": 1})

    def test_retries_wait_the_growing_jittered_backoff(self):
        reactor, clients = client_set(retries=7)
        clients.start("X")
        waits = []
        for _ in range(7):
            reactor.tcpClients[-1][2].clientConnectionFailed(None, Failure(ConnectionLost()))
            failed_at, dials = reactor.seconds(), len(reactor.tcpClients)
            for _ in range(3000):  # 3 s in 1 ms steps, past the 2 s cap
                reactor.advance(0.001)
                if len(reactor.tcpClients) > dials:
                    break
            waits.append(reactor.seconds() - failed_at)
        for wait, ceiling in zip(waits, (0.1, 0.2, 0.4, 0.8, 1.6, 2.0, 2.0), strict=True):
            self.assertTrue(ceiling / 2 - 0.002 <= wait <= ceiling + 0.002, (waits, ceiling))
        ratios = {round(w / c, 2) for w, c in zip(waits[:3], (0.1, 0.2, 0.4), strict=True)}
        self.assertGreater(len(ratios), 1)

    def test_an_endless_line_ends_the_attempt(self):
        reactor, clients = client_set()
        clients.start("X")
        protocol, transport = connect(reactor)
        chunk = b"m" * 65536
        for _ in range(70):  # 4.4 MiB without a newline: more than any server line
            protocol.dataReceived(chunk)
            if transport.disconnected:
                break
        self.assertTrue(transport.disconnected)  # aborted, not left to grow
        protocol.connectionLost(Failure(ConnectionLost()))
        self.assertEqual(dict(clients.tally.closes), {"error": 1})
        self.assertEqual(clients.tally.counts["retries"], 1)  # and it dials again


class ScheduleTests(unittest.TestCase):
    def test_starts_spread_over_the_window_then_fires(self):
        reactor, clients = client_set(timeout=60.0)  # no dial times out meanwhile
        reactor.advance(100.0)
        schedule = Schedule(clients, 50, 10.0, texts=lambda i: f"t{i}")
        done = schedule.run(reactor.seconds())
        starts = []
        for _ in range(20):
            starts.append(len(reactor.tcpClients))
            reactor.advance(0.5)
        self.assertEqual(starts[0], 0)
        self.assertEqual(len(reactor.tcpClients), 50)
        self.assertTrue(0 < starts[10] < 50)  # some, not all, by the middle of the window
        self.assertNoResult(done)
        for index in range(50):
            protocol, _ = connect(reactor, index)
            protocol.dataReceived(f"ok t{index}\n".encode())
            protocol.connectionLost(Failure(ConnectionDone()))
        reactor.advance(0.1)
        self.assertIs(self.successResultOf(done), clients.tally)
        self.assertEqual(clients.tally.counts["acked"], 50)

    def test_max_active_holds_back_due_clients(self):
        reactor, clients = client_set()
        schedule = Schedule(clients, 20, 0.001, texts=lambda i: f"t{i}", max_active=5)
        schedule.run(reactor.seconds())
        reactor.advance(0.1)
        self.assertEqual(len(reactor.tcpClients), 5)
        protocol, _ = connect(reactor, 0)
        protocol.dataReceived(b"ok t0\n")
        protocol.connectionLost(Failure(ConnectionDone()))
        reactor.advance(0.1)
        self.assertEqual(len(reactor.tcpClients), 6)  # one finished, one more started


class VerdictTests(unittest.TestCase):
    def status(self, zero_state, cluster_zero_state, in_flight=0):
        cluster = {"members": [], "connections": 3, "pending": 2, "zero_state": cluster_zero_state}
        return {
            "zero_state": zero_state,
            "relays": {"pending": 0, "in_flight": in_flight},
            "cluster": cluster,
        }

    def test_the_servers_own_verdict_on_itself_and_its_cluster_is_taken(self):
        self.assertTrue(status.judge(self.status(True, True)).zero_state)
        self.assertFalse(status.judge(self.status(False, True)).zero_state)
        self.assertFalse(status.judge(self.status(True, False)).zero_state)

    def test_the_figures_come_with_it(self):
        verdict = status.judge(self.status(False, False, in_flight=4))
        self.assertEqual((verdict.connections, verdict.pending, verdict.in_flight), (3, 2, 4))


class FetchTests(unittest.TestCase):
    def setUp(self):
        self.net = FakeNetwork()
        self.answer = status.fetch(self.net.reactor, self.net.endpoint, tls=False, timeout=5.0)
        self.transport = self.net.accept()
        self.assertEqual(self.transport.value(), STATUS_LINE)

    def test_the_answer_comes_once_the_asking_connection_is_closed(self):
        self.net.receive(b'2026-01-01\n{"type":"status","payload":{"connections":1}}\n')
        self.assertTrue(self.transport.disconnecting)
        self.assertNoResult(self.answer)
        self.net.drop()
        self.assertEqual(self.successResultOf(self.answer), {"connections": 1})

    def test_a_listener_without_status_is_a_clear_error(self):
        self.net.receive(b"error not_in_profile the 'relay' profile understands only\n")
        refused = self.failureResultOf(self.answer, status.StatusRefused)
        self.assertIn("--status-port", str(refused.value))

    def test_a_reply_split_over_reads(self):
        for part in (b'{"type":"sta', b'tus","payload":{"connections":2}}', b"\r\n"):
            self.net.receive(part)
        self.net.drop()
        self.assertEqual(self.successResultOf(self.answer), {"connections": 2})

    def test_an_endless_line_fails_the_answer(self):
        self.net.receive(b"{" + b"x" * MAX_SERVER_LINE + b"\n")
        self.assertTrue(self.transport.disconnected)  # aborted
        self.net.drop(ConnectionLost())
        self.assertIn("over-long line", str(self.failureResultOf(self.answer, StatusError).value))


class ReportTests(unittest.TestCase):
    def tally(self, acked):
        tally = Tally()
        tally.count("clients", 10)
        tally.count("acked", acked)
        for ms in range(acked):
            tally.sample("exchange_ms", ms / 1000)
        tally.span(100.0, 102.0)
        return tally

    def verdict(self, zero):
        return status.Verdict(zero, 1 if zero else 3, 0, 0, {})

    def build(self, tally, verdict):
        config = {"host": "h", "port": 1, "tls": False, "window": 1, "ok_delay": "0", "workers": 1}
        return report.build(tally, config, 2.0, verdict, 1.0)

    def test_verdicts(self):
        good = self.build(self.tally(10), self.verdict(True))
        self.assertTrue(good["ok"])
        self.assertEqual(good["rates"]["exchanges_per_s"], 5.0)
        self.assertEqual(good["latency_ms"]["exchange"]["max"], 9.0)
        self.assertEqual(good["server"]["cpu_us_per_client"], 100000.0)
        self.assertEqual(good["limit"], "neither")  # 1 s of CPU in 2 s of wall time: 50%
        self.assertIn("OK: nothing lost", report.summary(good))
        lossy = self.build(self.tally(9), self.verdict(True))
        self.assertEqual((lossy["ok"], lossy["lost"]), (False, 1))
        leaky = self.build(self.tally(10), self.verdict(False))
        self.assertFalse(leaky["ok"])
        self.assertIn("zero state NO", report.summary(leaky))

    def test_limit_names_the_saturated_side(self):
        def shares(server, generator, workers=2):
            figures = {
                "server": {"percent_of_a_core": server},
                "generator": {"percent_of_a_core": generator},
            }
            return report.limit(figures, workers, cores=2)

        self.assertEqual(shares(95, 60), "server")
        self.assertEqual(shares(40, 180), "generator")  # two workers at 90% each
        self.assertEqual(shares(40, 120), "neither")
        self.assertEqual(shares(99, 190), "both")
        self.assertEqual(shares(69, 123), "machine")  # 192% of two cores between them

    def test_percentiles(self):
        self.assertEqual(percentiles(range(1, 101)), {"p50": 50, "p90": 90, "p99": 99, "max": 100})
        self.assertEqual(percentiles([]), {"p50": None, "p90": None, "p99": None, "max": None})

    def test_tally_round_trip(self):
        one, two = self.tally(10), Tally()
        two.merge_json(one.to_json())
        two.merge_json(one.to_json())
        self.assertEqual(two.counts["acked"], 20)
        self.assertEqual(len(two.samples["exchange_ms"]), 20)
        self.assertEqual((two.first_start, two.last_end), (100.0, 102.0))
