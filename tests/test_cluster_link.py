"""`RedisLink` while Redis is unreachable: capped backoff, no busy loop, one log line.

Driven by a `MemoryReactorClock`: every connection attempt is recorded and then
refused, and 60 seconds of clock time pass in steps.
"""

from twisted.internet import defer
from twisted.internet.error import ConnectionRefusedError
from twisted.internet.testing import MemoryReactorClock
from twisted.logger import globalLogPublisher
from twisted.python.failure import Failure
from twisted.trial import unittest

from nea.cluster.link import RedisLink
from nea.cluster.names import RedisAddress


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
            self.reactor, RedisAddress("127.0.0.1", 1), ["ch"], self.listener,
            interval=0.5, max_backoff=4.0,
        )
        self.events = []
        globalLogPublisher.addObserver(self.events.append)
        self.addCleanup(globalLogPublisher.removeObserver, self.events.append)

    def run_for(self, seconds: float, step: float = 0.1) -> list[float]:
        """Advance the clock, refusing every connection attempt; return the attempt times."""
        attempts = []
        for _ in range(round(seconds / step)):
            while len(attempts) < len(self.reactor.tcpClients):
                attempts.append(self.reactor.seconds())
                factory = self.reactor.tcpClients[len(attempts) - 1][2]
                factory.clientConnectionFailed(None, Failure(ConnectionRefusedError()))
            self.reactor.advance(step)
        return attempts

    def test_attempts_back_off_to_the_cap_and_never_stop(self):
        self.link.start()
        attempts = self.run_for(60)
        gaps = [round(b - a, 1) for a, b in zip(attempts, attempts[1:])]
        # Each wait is at least the interval doubled per failure up to the cap, and at
        # most one tick (0.5 s) and one clock step (0.1 s) longer than the cap.
        for n, gap in enumerate(gaps):
            self.assertGreaterEqual(gap, min(4.0, 0.5 * 2**n) - 0.01, gaps)
            self.assertLessEqual(gap, 4.0 + 0.5 + 0.11, gaps)
        self.assertGreaterEqual(len(attempts), 60 // 4.61)
        self.assertLessEqual(len(attempts), 60 // 4 + 5)
        self.assertFalse(self.link.up)
        self.assertEqual(self.listener.ups, 0)
        # Still trying: the LoopingCall has not died on the failures.
        self.assertTrue(self.link._ticker.running)
        warnings = [e for e in self.events if "unreachable" in e.get("log_format", "")]
        self.assertEqual(len(warnings), 1)

    def test_stop_while_down_ends_the_attempts(self):
        self.link.start()
        self.run_for(3)
        self.successResultOf(self.link.stop())
        before = len(self.reactor.tcpClients)
        self.run_for(30)
        self.assertEqual(len(self.reactor.tcpClients), before)
