"""`RedisLink` without Redis: reconnection, batching and timeouts, on fake clocks.

While Redis is unreachable (a `MemoryReactorClock` refusing every connection
attempt while 60 seconds of clock time pass): capped backoff, no busy loop, one
log line. While it is hung (connected, never answering): each wait times out on
the link's clock and the connections are aborted. The real connection is tested
in test_cluster_redis.py; the parsing in test_cluster_redisproto.py.
"""

import itertools

from twisted.internet import defer
from twisted.internet.error import ConnectionLost, ConnectionRefusedError
from twisted.internet.task import Clock
from twisted.internet.testing import MemoryReactorClock, StringTransport
from twisted.logger import globalLogPublisher
from twisted.python.failure import Failure
from twisted.trial import unittest

from nea.cluster.batch import MAX_BATCH, MAX_BATCH_BYTES, Batcher
from nea.cluster.names import RedisAddress
from nea.cluster.redislink import REPLY_TIMEOUT, RedisLink


class Listener:
    def __init__(self) -> None:
        self.ups = 0

    def link_up(self) -> None:
        self.ups += 1

    def link_down(self) -> None:
        raise AssertionError("never up, so never down")

    def received(self, channel, data) -> None:
        raise AssertionError("nothing can arrive")

    def beat(self, redis):
        return defer.succeed(None)

    def leave(self, redis):
        return defer.succeed(None)


class UnreachableRedis(unittest.TestCase):
    def setUp(self):
        self.reactor = MemoryReactorClock()
        self.listener = Listener()
        self.link = RedisLink(
            self.reactor,
            RedisAddress("127.0.0.1", 1),
            ["ch"],
            self.listener,
            interval=0.5,
            max_backoff=4.0,
        )
        self.refused = 0  # connection attempts refused so far
        self.events = []
        globalLogPublisher.addObserver(self.events.append)
        self.addCleanup(globalLogPublisher.removeObserver, self.events.append)

    def run_for(self, seconds: float, step: float = 0.1) -> list[float]:
        """Advance the clock, refusing every connection attempt; return the attempts' times."""
        attempts = []
        for _ in range(round(seconds / step)):
            while self.refused < len(self.reactor.tcpClients):
                attempts.append(self.reactor.seconds())
                factory = self.reactor.tcpClients[self.refused][2]
                self.refused += 1
                factory.clientConnectionFailed(None, Failure(ConnectionRefusedError()))
            self.reactor.advance(step)
        return attempts

    def test_attempts_back_off_to_the_cap_and_never_stop(self):
        self.link.start()
        attempts = self.run_for(60)
        gaps = [round(b - a, 1) for a, b in itertools.pairwise(attempts)]
        # Each wait is at least the interval doubled per failure up to the cap, and at
        # most one tick (0.5 s) and one clock step (0.1 s) longer than the cap.
        for n, gap in enumerate(gaps):
            self.assertGreaterEqual(gap, min(4.0, 0.5 * 2**n) - 0.01, gaps)
            self.assertLessEqual(gap, 4.0 + 0.5 + 0.11, gaps)
        self.assertGreaterEqual(len(attempts), 60 // 4.61)
        self.assertLessEqual(len(attempts), 60 // 4 + 5)
        self.assertFalse(self.link.up)
        self.assertEqual(self.listener.ups, 0)
        # Still trying: the ticks have not died on the failures.
        self.assertGreaterEqual(len(self.run_for(10)), 2)
        warnings = [e for e in self.events if "unreachable" in e.get("log_format", "")]
        self.assertEqual(len(warnings), 1)

    def test_stop_while_down_ends_the_attempts(self):
        self.link.start()
        self.run_for(3)
        self.successResultOf(self.link.stop())
        before = len(self.reactor.tcpClients)
        self.run_for(30)
        self.assertEqual(len(self.reactor.tcpClients), before)


class Batching(unittest.TestCase):
    def setUp(self):
        self.clock = Clock()
        self.sent = []
        self.replies = []
        self.batcher = Batcher(self.clock, self.send)

    def send(self, channel, payload, told):
        self.sent.append((channel, payload.split("\n")))
        self.replies.append(told)

    def test_one_publish_per_channel_and_turn(self):
        results, others = [], []
        for n in range(3):
            self.batcher.publish("a", f"m{n}", results.append)
        self.batcher.publish("a", "m3", others.append)
        self.batcher.publish("b", "only")
        self.assertEqual(self.sent, [])
        self.clock.advance(0)
        self.assertEqual(self.sent, [("a", ["m0", "m1", "m2", "m3"]), ("b", ["only"])])
        self.assertIsNone(self.replies[1])  # nobody to tell
        self.replies[0](2)
        # Told once per batch: equal callbacks (one member's check) are not called again.
        self.assertEqual((results, others), ([2], [2]))

    def test_words_under_one_head_share_a_line_after_the_others(self):
        self.batcher.publish_word("a", "ack i1", "r1")
        self.batcher.publish("a", "line")
        self.batcher.publish_word("a", "ack i2", "r9")
        self.batcher.publish_word("a", "ack i1", "r2")
        self.clock.advance(0)
        self.assertEqual(self.sent, [("a", ["line", "ack i1 r1 r2", "ack i2 r9"])])

    def test_every_word_counts_toward_a_full_batch(self):
        for n in range(MAX_BATCH):
            self.batcher.publish_word("a", "ack", str(n))
        [(_, [line])] = self.sent
        self.assertEqual(line.split(), ["ack", *map(str, range(MAX_BATCH))])

    def test_a_full_batch_leaves_at_once(self):
        for n in range(MAX_BATCH):
            self.batcher.publish("a", str(n))
        self.assertEqual(len(self.sent), 1)
        self.assertEqual(len(self.sent[0][1]), MAX_BATCH)

    def test_a_batch_of_big_lines_leaves_before_a_megabyte(self):
        line = "x" * (MAX_BATCH_BYTES // 3 + 1)
        for _ in range(3):
            self.batcher.publish("a", line)
        self.assertEqual([len(lines) for _, lines in self.sent], [3])

    def test_lone_messages_never_wait(self):
        batcher = Batcher(self.clock, self.send, interval=0.002)
        for n in range(3):
            batcher.publish("a", f"m{n}")
            self.clock.advance(0)  # the turn's end
            self.assertEqual(self.sent[n:], [("a", [f"m{n}"])])
            self.clock.advance(0.0005)

    def test_a_busy_link_sends_once_an_interval_until_it_is_idle(self):
        batcher = Batcher(self.clock, self.send, interval=0.002)
        batcher.publish("a", "m0")
        batcher.publish("b", "m1")
        self.clock.advance(0)
        self.assertEqual(len(self.sent), 2)  # nothing went before: no wait
        self.clock.advance(0.0005)
        batcher.publish("a", "m2")
        self.clock.advance(0)
        self.clock.advance(0.001)
        batcher.publish_word("b", "ack", "r1")
        self.assertEqual(len(self.sent), 2)
        self.clock.advance(0.0005)  # the interval since the busy sending is up
        self.assertEqual(self.sent[2:], [("a", ["m2"]), ("b", ["ack r1"])])
        self.clock.advance(0.003)  # more than an interval later: it goes at the turn's end
        batcher.publish("a", "m3")
        self.clock.advance(0)
        self.assertEqual(self.sent[4:], [("a", ["m3"])])
        batcher.publish("a", "m4")  # the last sending held one message: no wait
        self.clock.advance(0)
        self.assertEqual(self.sent[5:], [("a", ["m4"])])

    def test_a_full_batch_does_not_wait_for_the_interval(self):
        batcher = Batcher(self.clock, self.send, interval=0.05)
        batcher.publish("a", "busy")
        batcher.publish("a", "link")
        self.clock.advance(0)
        for n in range(MAX_BATCH + 1):
            batcher.publish("a", str(n))
        self.assertEqual([len(lines) for _, lines in self.sent], [2, MAX_BATCH])
        self.clock.advance(0.05)
        self.assertEqual([len(lines) for _, lines in self.sent], [2, MAX_BATCH, 1])

    def test_flushing_early_sends_everything_and_cancels_the_wait(self):
        batcher = Batcher(self.clock, self.send, interval=0.002)
        batcher.publish("a", "m0")
        batcher.publish("a", "m1")
        self.clock.advance(0)
        batcher.publish("a", "m2")
        batcher.flush()  # a stopping link
        self.assertEqual(self.sent[1:], [("a", ["m2"])])
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_nothing_is_sent_or_told_once_discarded(self):
        told = []
        self.batcher.publish("a", "lost", told.append)
        self.batcher.discard()
        self.clock.advance(0)
        self.assertEqual((self.sent, told), ([], []))

    def test_a_callback_that_raises_is_logged_and_the_others_are_told(self):
        told, events = [], []
        globalLogPublisher.addObserver(events.append)
        self.addCleanup(globalLogPublisher.removeObserver, events.append)
        self.batcher.publish("a", "m0", lambda receivers: 1 / 0)
        self.batcher.publish("a", "m1", told.append)
        self.clock.advance(0)
        self.replies[0](1)
        self.assertEqual(told, [1])
        self.assertEqual(len([e for e in events if e.get("log_failure")]), 1)
        self.flushLoggedErrors(ZeroDivisionError)


class TCPTransport(StringTransport):
    def setTcpNoDelay(self, enabled: bool) -> None:
        self.no_delay = enabled


class Beating(Listener):
    """Beats with a real command, so a Redis that stops answering hangs the beat."""

    def __init__(self) -> None:
        super().__init__()
        self.downs = 0

    def link_down(self) -> None:
        self.downs += 1

    def beat(self, redis):
        return redis.ping()


class HungRedis(unittest.TestCase):
    """Redis accepts, then stops answering: timed out on the link's own clock, aborted."""

    def setUp(self):
        self.reactor = MemoryReactorClock()
        self.listener = Beating()
        self.link = RedisLink(
            self.reactor,
            RedisAddress("127.0.0.1", 1),
            ["ch"],
            self.listener,
            interval=0.5,
        )
        self.transports = []

    def accept(self):
        """Complete the latest connection attempt; its protocol (endpoint-wrapped)."""
        factory = self.reactor.tcpClients[-1][2]
        wrapper = factory.buildProtocol(None)
        transport = TCPTransport()
        wrapper.makeConnection(transport)
        self.transports.append(transport)
        return wrapper, transport

    def join(self):
        """Start the link and answer until it is up: SELECT, then SUBSCRIBE, then the
        publisher's connection; the three protocols."""
        self.link.start()
        commands, transport = self.accept()
        self.assertIn(b"SELECT", transport.value())
        commands.dataReceived(b"+OK\r\n")
        subscriber, transport = self.accept()
        self.assertIn(b"SUBSCRIBE", transport.value())
        subscriber.dataReceived(b"*3\r\n$9\r\nsubscribe\r\n$2\r\nch\r\n:1\r\n")
        publisher, _ = self.accept()
        self.assertTrue(self.link.up)
        return commands, subscriber, publisher

    def test_a_beat_without_reply_takes_the_link_down_after_the_reply_timeout(self):
        connections = self.join()
        self.assertIn(b"PING", self.transports[0].value())  # the first beat, never answered
        self.reactor.advance(REPLY_TIMEOUT - 0.01)
        self.assertTrue(self.link.up)
        self.reactor.advance(0.01)
        self.assertFalse(self.link.up)
        self.assertEqual((self.listener.ups, self.listener.downs), (1, 1))
        self.assertTrue(all(t.disconnected for t in self.transports))  # aborted: Redis may not read
        for protocol in connections:
            protocol.connectionLost(Failure(ConnectionLost()))
        dials = len(self.reactor.tcpClients)
        self.reactor.advance(0.5)  # the first backoff: one interval
        self.assertEqual(len(self.reactor.tcpClients), dials + 1)

    def test_a_select_without_reply_is_a_failed_attempt(self):
        self.link.start()
        commands, transport = self.accept()
        self.reactor.advance(REPLY_TIMEOUT)
        self.assertTrue(transport.disconnected)
        self.assertFalse(self.link.up)
        self.assertEqual(self.listener.ups, 0)
        commands.connectionLost(Failure(ConnectionLost()))
        self.reactor.advance(0.5)
        self.assertEqual(len(self.reactor.tcpClients), 2)  # tried again after the backoff

    def test_a_publish_without_answer_takes_the_link_down_after_the_reply_timeout(self):
        commands, subscriber, publisher = self.join()
        commands.dataReceived(b"+PONG\r\n")
        reached = []
        self.link.publish("ch", "data", reached.append)
        self.reactor.advance(0)
        self.assertIn(b"PUBLISH", self.transports[2].value())
        for _ in range(round(REPLY_TIMEOUT / 0.5) - 1):  # beats answered, the PUBLISH not
            self.reactor.advance(0.5)
            commands.dataReceived(b"+PONG\r\n")
        self.assertTrue(self.link.up)
        self.reactor.advance(0.5)  # the first tick at least REPLY_TIMEOUT after it
        self.assertFalse(self.link.up)
        self.assertTrue(self.transports[2].disconnected)
        for protocol in (commands, subscriber, publisher):
            protocol.connectionLost(Failure(ConnectionLost()))
        self.assertEqual(reached, [])  # no receiver count for a PUBLISH that got no answer
        self.assertEqual(self.listener.downs, 1)

    def test_answered_publishes_keep_the_link_up(self):
        commands, _, publisher = self.join()
        reached = []
        for _ in range(round(3 * REPLY_TIMEOUT / 0.5)):
            self.link.publish("ch", "data", reached.append)
            self.reactor.advance(0.5)
            commands.dataReceived(b"+PONG\r\n")
            publisher.dataReceived(b":1\r\n")
        self.assertTrue(self.link.up)
        self.assertEqual(reached, [1] * round(3 * REPLY_TIMEOUT / 0.5))
