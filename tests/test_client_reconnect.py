"""When a client dials again after ``shutting_down`` or ``server_full``, and what it says
(Clock + StringTransport).

A server that served us and then says it is going away is restarting: come back
within about a second, jittered. A server that says so right after every connect
(or is full) did not take us: keep backing off.
"""

import random

from twisted.internet.protocol import ReconnectingClientFactory
from twisted.trial import unittest

from nea.client.redial import DialConfig, Redialer
from nea.wire.backoff import Backoff
from tests.fakes import FakeNetwork

#: Exact delays (no jitter): 0.5, 1, 2, 4, 8, 16, 30, ...; prompt 1.
EXACT = Backoff(initial=0.5, factor=2.0, maximum=30.0, jitter=0.0)
#: The client's defaults: jittered down to half.
JITTERED = Backoff()

GOODBYE = b"error shutting_down the server is shutting down\n"
FULL = b"error server_full the server has reached its maximum\n"


class Dialer(Redialer):
    """Records each retry's delay and reason."""

    __slots__ = ("delays", "whys")

    def __init__(self, *args) -> None:
        super().__init__(*args)
        self.delays: list[float] = []
        self.whys: list[str] = []

    def retrying(self, why: str, delay: float) -> None:
        self.delays.append(delay)
        self.whys.append(why)


class FakeServerMixin:
    """A `Dialer` on a `FakeNetwork`, and the server's side of its sessions."""

    def make(self, backoff=EXACT, tls=False, seed=3) -> Dialer:
        self.net = FakeNetwork()
        self.clock = self.net.reactor
        self.client = Dialer(
            self.net.endpoint, self.clock, DialConfig(tls=tls, backoff=backoff), random.Random(seed)
        )
        self.client.start()
        return self.client

    def fail_dials(self, count: int) -> None:
        """``count`` refused dials in a row, each redialled when due: the backoff grows."""
        for _ in range(count):
            self.net.refuse()
            self.clock.advance(self.client.delays[-1])

    def session(self, held: float, last_words: bytes = GOODBYE) -> float:
        """Accept the pending dial, hold it ``held`` s, end with ``last_words``: the retry delay."""
        self.net.accept()
        self.clock.advance(held)
        self.net.receive(last_words)
        self.net.drop()
        return self.client.delays[-1]


class ReconnectTests(FakeServerMixin, unittest.TestCase):
    def test_goodbye_after_a_long_session_comes_back_within_a_second(self):
        client = self.make()
        self.fail_dials(7)  # the next backoff would be 30 s
        self.assertEqual(client.delays[-1], 30.0)
        self.assertEqual(self.session(held=60.0), 1.0)
        dials = self.net.dials
        self.clock.advance(0.999)
        self.assertEqual(self.net.dials, dials)
        self.clock.advance(0.001)
        self.assertEqual(self.net.dials, dials + 1)

    def test_the_prompt_reconnect_is_jittered(self):
        delays = []
        for seed in range(40):
            client = self.make(backoff=JITTERED, seed=seed)
            self.fail_dials(7)
            self.session(held=60.0)
            delays.append(client.delays[-1])
        self.assertTrue(all(0.5 <= d <= 1.0 for d in delays), delays)
        self.assertGreater(len(set(delays)), 30)  # spread, not one instant for all
        self.assertLess(min(delays), 0.6)
        self.assertGreater(max(delays), 0.9)

    def test_a_failed_prompt_reconnect_backs_off_from_the_start(self):
        client = self.make()
        self.fail_dials(7)
        self.clock.advance(self.session(held=60.0))
        self.fail_dials(3)  # the restarted server is not listening yet
        self.assertEqual(client.delays[-4:], [1.0, 0.5, 1.0, 2.0])

    def test_goodbye_right_after_every_connect_still_backs_off(self):
        client = self.make()
        for _ in range(9):
            self.clock.advance(self.session(held=0.0))
        self.assertEqual(client.delays, [0.5, 1.0, 2.0, 4.0, 8.0, 16.0, 30.0, 30.0, 30.0])

    def test_goodbye_just_short_of_the_prompt_delay_is_a_refusal(self):
        client = self.make()
        self.fail_dials(3)
        self.assertEqual(self.session(held=0.999), 4.0)
        self.assertEqual(client.delays, [0.5, 1.0, 2.0, 4.0])

    def test_a_server_that_holds_each_link_for_the_prompt_delay_is_dialled_at_a_bounded_rate(self):
        self.make(backoff=JITTERED)
        for _ in range(100):
            self.clock.advance(self.session(held=1.0))
        # Each cycle: held 1 s, then at least 0.5 s of jittered wait.
        self.assertGreaterEqual(self.clock.seconds(), 100 * 1.5)
        self.assertLessEqual(self.clock.seconds(), 100 * 2.0)

    def test_the_session_counts_from_the_tls_handshake_not_the_tcp_connect(self):
        client = self.make(tls=True)
        self.fail_dials(3)
        self.net.accept()
        self.clock.advance(5.0)  # TCP up, handshake still going
        client.link.handshakeCompleted()
        self.net.receive(GOODBYE)
        self.net.drop()
        self.assertEqual(client.delays[-1], 4.0)  # refused, not served: keeps growing

    def test_server_full_keeps_the_backoff_growing_however_long_the_link_was_up(self):
        client = self.make()
        self.fail_dials(3)
        self.assertEqual(self.session(held=60.0, last_words=FULL), 4.0)
        self.clock.advance(4.0)
        self.assertEqual(self.session(held=0.0, last_words=FULL), 8.0)
        self.assertEqual(client.delays, [0.5, 1.0, 2.0, 4.0, 8.0])

    def test_a_link_lost_after_a_session_starts_the_backoff_over(self):
        client = self.make()
        self.fail_dials(5)
        self.net.accept()
        self.clock.advance(60.0)
        self.net.drop()
        self.assertEqual(client.delays[-1], 0.5)


class FactoryTests(FakeServerMixin, unittest.TestCase):
    """The redialling is Twisted's `ReconnectingClientFactory`'s."""

    def test_failed_dials_are_the_factorys_retries_until_the_handshake_completes(self):
        client = self.make(tls=True)
        self.assertIsInstance(client.factory, ReconnectingClientFactory)
        self.fail_dials(3)
        self.assertEqual(client.factory.retries, 3)
        self.net.accept()
        self.assertEqual(client.factory.retries, 3)  # TCP is up, the handshake is not done
        client.link.handshakeCompleted()
        self.assertEqual(client.factory.retries, 0)  # resetDelay()

    def test_finish_stops_trying(self):
        client = self.make()
        self.net.refuse()  # a redial is now pending
        client.finish("stopped")
        self.assertFalse(client.factory.continueTrying)
        self.assertEqual(self.clock.getDelayedCalls(), [])
        self.clock.advance(60.0)
        self.assertEqual(self.net.dials, 1)

    def test_finish_cancels_a_dial_under_way(self):
        client = self.make()
        client.finish("stopped")
        self.assertFalse(client.factory.continueTrying)
        self.assertTrue(self.net.reactor.connectors[0].stoppedConnecting)
        self.assertIsNone(client.connector.dialing)

    def test_server_full_is_a_failed_attempt(self):
        client = self.make()
        self.fail_dials(2)
        self.net.accept()
        self.assertEqual(client.factory.retries, 0)
        self.net.receive(FULL)
        self.assertEqual(client.factory.retries, 2)
        self.net.drop()
        self.assertEqual(client.factory.retries, 3)


class GeneratorTests(unittest.TestCase):
    def test_each_client_has_its_own_generator_unless_given_one(self):
        net = FakeNetwork()
        dial = DialConfig(tls=False)
        one = Redialer(net.endpoint, net.reactor, dial)
        other = Redialer(net.endpoint, net.reactor, dial)
        self.assertIsInstance(one.rng, random.Random)
        self.assertIsNot(one.rng, other.rng)
        rng = random.Random(1)
        self.assertIs(Redialer(net.endpoint, net.reactor, dial, rng).rng, rng)
