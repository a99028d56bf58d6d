"""The relay client's state machine, without sockets (Clock + StringTransport)."""

import random

from service_identity import VerificationError
from twisted.internet import error
from twisted.trial import unittest

from nea.client.delays import Constant, Uniform
from nea.client.redial import DialConfig
from nea.client.relay import RelayClient, RelayConfig, RelayObserver
from nea.wire.backoff import Backoff
from tests.fakes import FakeNetwork

#: No jitter, so that delays are exact: 1, 2, 4, 4, ...
STEADY = Backoff(initial=1.0, factor=2.0, maximum=4.0, jitter=0.0)


class Recorder(RelayObserver):
    """Remembers every event, in order."""

    def __init__(self) -> None:
        self.events: list[tuple] = []

    def on_connected(self, client):
        self.events.append(("connected", client.sends))

    def on_forwarded(self, client, text):
        self.events.append(("forwarded", text))

    def on_acked(self, client):
        self.events.append(("acked",))

    def on_retry(self, client, why, delay):
        self.events.append(("retry", why, delay))

    def on_error(self, client, error):
        self.events.append(("error", error.code))

    def on_attempt_over(self, client, ending):
        self.events.append(("over", ending))

    def on_finished(self, client):
        self.events.append(("finished", client.outcome))

    def retries(self) -> list[tuple]:
        return [e[1:] for e in self.events if e[0] == "retry"]

    def endings(self) -> list[str]:
        return [e[1] for e in self.events if e[0] == "over"]


class RelayClientTests(unittest.TestCase):
    def make(self, text="hello", tls=False, give_up=0.0, **config):
        self.net = FakeNetwork()
        self.clock = self.net.reactor
        self.seen = Recorder()
        dial = DialConfig(tls=tls, backoff=STEADY, give_up=give_up)
        config.setdefault("timeout", 0.0)
        self.client = RelayClient(
            text,
            self.net.endpoint,
            self.clock,
            RelayConfig(dial=dial, **config),
            self.seen,
            random.Random(3),
        )
        self.client.start()
        return self.client

    def test_sends_message_once_connected(self):
        self.make()
        self.assertEqual(self.net.dials, 1)
        transport = self.net.accept()
        self.assertEqual(transport.value(), b"message hello\n")
        self.assertEqual(self.seen.events, [("connected", 1)])
        self.assertEqual(self.client.sent_at - self.client.dialled_at, 0.0)

    def test_waits_for_the_tls_handshake_before_sending(self):
        self.make(tls=True)
        transport = self.net.accept()
        self.assertEqual(transport.value(), b"")
        self.client.link.handshakeCompleted()
        self.assertEqual(transport.value(), b"message hello\n")

    def test_its_own_ok_closes_politely_and_finishes(self):
        self.make()
        transport = self.net.accept()
        self.clock.advance(0.25)
        self.net.receive(b"2026-11-21\nok someone-else\n")
        self.assertFalse(transport.disconnecting)
        self.net.receive(b"ok hello\n")
        self.assertTrue(transport.disconnecting)
        self.assertFalse(transport.disconnected)  # loseConnection, not an abort
        self.assertEqual(self.client.acked_at - self.client.started_at, 0.25)
        self.net.drop()
        self.assertEqual(self.client.outcome, "acked")
        self.assertEqual(
            self.seen.events[-3:], [("acked",), ("over", "protocol"), ("finished", "acked")]
        )
        self.clock.advance(100)
        self.assertEqual(self.net.dials, 1)
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_forwarded_message_is_acked_after_the_delay(self):
        self.make(ok_delay=Constant(1.5))
        transport = self.net.accept()
        transport.clear()
        self.net.receive(b"message from-x\r\n")
        self.assertEqual(self.seen.events[-1], ("forwarded", "from-x"))
        self.clock.advance(1.4)
        self.assertEqual(transport.value(), b"")
        self.clock.advance(0.1)
        self.assertEqual(transport.value(), b"ok from-x\n")

    def test_forwarded_message_without_delay_is_acked_at_once(self):
        self.make()
        transport = self.net.accept()
        transport.clear()
        self.net.receive(b"message a\nmessage b\n")
        self.assertEqual(transport.value(), b"ok a\nok b\n")

    def test_random_ok_delay_stays_within_its_bounds(self):
        self.make(ok_delay=Uniform(1.0, 2.0))
        transport = self.net.accept()
        transport.clear()
        self.net.receive(b"".join(b"message m%d\n" % i for i in range(20)))
        self.clock.advance(0.999)
        self.assertEqual(transport.value(), b"")
        self.clock.advance(1.002)
        self.assertEqual(transport.value().count(b"\n"), 20)

    def test_pending_ok_dies_with_its_connection(self):
        self.make(ok_delay=Constant(1.0))
        old = self.net.accept()
        old.clear()
        self.net.receive(b"message y\n")
        self.net.drop()
        self.clock.advance(1.0)  # the ok's time, and the redial's
        self.assertEqual(old.value(), b"")
        new = self.net.accept()
        self.clock.advance(5)
        self.assertEqual(new.value(), b"message hello\n")

    def test_timeout_reconnects_and_sends_again(self):
        self.make(timeout=5.0)
        first = self.net.accept()
        self.clock.advance(4.9)
        self.assertFalse(first.disconnected)
        self.clock.advance(0.1)
        self.assertTrue(first.disconnected)  # aborted: no polite wait for a stuck server
        self.net.drop(error.ConnectionAborted())
        self.assertEqual(self.seen.retries(), [("timeout", 1.0)])
        self.clock.advance(1.0)
        self.assertEqual(self.net.dials, 2)
        second = self.net.accept()
        self.assertEqual(second.value(), b"message hello\n")
        self.assertEqual(self.client.sends, 2)
        self.net.receive(b"ok hello\n")
        self.net.drop()
        self.assertEqual(self.client.outcome, "acked")

    def test_timeout_also_covers_a_handshake_that_never_ends(self):
        self.make(tls=True, timeout=2.0)
        transport = self.net.accept()
        self.clock.advance(2.0)
        self.assertTrue(transport.disconnected)

    def test_disconnect_before_ack_reconnects_and_sends_again(self):
        self.make()
        self.net.accept()
        self.net.drop(error.ConnectionLost())
        self.assertEqual(self.seen.retries(), [("connection lost", 1.0)])
        self.clock.advance(1.0)
        transport = self.net.accept()
        self.assertEqual(transport.value(), b"message hello\n")
        self.assertEqual((self.client.sends, self.client.retries), (2, 1))

    def test_refused_dials_back_off_exponentially_up_to_the_cap(self):
        self.make()
        for _ in range(5):
            self.net.refuse()
            self.clock.advance(self.seen.retries()[-1][1])
        self.assertEqual([delay for _, delay in self.seen.retries()], [1.0, 2.0, 4.0, 4.0, 4.0])
        self.assertEqual({why for why, _ in self.seen.retries()}, {"connection refused"})
        self.assertEqual(self.net.dials, 6)

    def test_backoff_resets_only_after_the_tls_handshake(self):
        self.make(tls=True)
        self.net.refuse()  # retry in 1
        self.clock.advance(1)
        self.net.accept()
        self.net.drop(error.ConnectionLost())  # TCP up, no handshake: still failing, retry in 2
        self.clock.advance(2)
        self.net.accept()
        self.client.link.handshakeCompleted()
        self.net.drop(error.ConnectionLost())  # a real session ended: back to 1
        self.assertEqual([d for _, d in self.seen.retries()], [1.0, 2.0, 1.0])

    def test_server_full_does_not_count_as_a_success(self):
        self.make()
        self.net.refuse()  # 1
        self.clock.advance(1)
        self.net.accept()
        self.net.receive(b"error server_full the server has reached its maximum\n")
        self.net.drop()  # 2, not 1: the handshake alone did not get us served
        self.clock.advance(2)
        self.net.accept()
        self.net.receive(b"error server_full the server has reached its maximum\n")
        self.net.drop()  # 4
        self.assertEqual([d for _, d in self.seen.retries()], [1.0, 2.0, 4.0])
        self.assertIn(("error", "server_full"), self.seen.events)

    def test_no_recipient_and_too_many_pending_send_again_after_a_backoff_on_one_connection(self):
        for code in ("no_recipient", "too_many_pending"):
            self.make()
            transport = self.net.accept()
            transport.clear()
            self.net.receive(b"error %s nobody can take it now\n" % code.encode())
            self.assertEqual(self.seen.retries(), [(code, 1.0)])
            self.clock.advance(1.0)
            self.assertEqual(transport.value(), b"message hello\n")
            self.assertEqual((self.client.sends, self.net.dials), (2, 1))

    def test_gives_up_when_nothing_works(self):
        self.make(give_up=3.5)
        for _ in range(2):
            self.net.refuse()
            self.clock.advance(self.seen.retries()[-1][1])
        self.net.refuse()  # next dial at 3 + 4
        self.assertIsNone(self.client.outcome)
        self.clock.advance(3.5 - self.clock.seconds())
        self.assertEqual(self.client.outcome, "gave_up")
        self.assertEqual(self.seen.events[-1], ("finished", "gave_up"))
        dials = self.net.dials
        self.clock.advance(100)
        self.assertEqual(self.net.dials, dials)

    def test_giving_up_while_connected_aborts_and_finishes_once_closed(self):
        self.make(give_up=3.0)
        transport = self.net.accept()
        self.clock.advance(3.0)
        self.assertTrue(transport.disconnected)
        self.assertNotIn(("finished", "gave_up"), self.seen.events)
        self.net.drop(error.ConnectionAborted())
        self.assertEqual(self.seen.events[-1], ("finished", "gave_up"))
        self.assertEqual(self.seen.retries(), [])

    def test_a_refused_certificate_ends_the_client(self):
        self.make(tls=True)
        self.net.accept()
        self.net.drop(VerificationError(errors=[]))
        self.assertEqual(self.client.outcome, "tls_failed")
        self.assertEqual(self.seen.retries(), [])
        self.clock.advance(100)
        self.assertEqual(self.net.dials, 1)

    def test_stop_abandons_a_pending_redial(self):
        self.make()
        self.net.refuse()
        self.client.stop()
        self.assertEqual(self.seen.events[-1], ("finished", "stopped"))
        self.clock.advance(100)
        self.assertEqual(self.net.dials, 1)

    def test_other_errors_are_reported_and_change_nothing(self):
        self.make()
        transport = self.net.accept()
        transport.clear()
        self.net.receive(b"error unexpected_ok nobody waits for this 'ok'\n")
        self.assertEqual(self.seen.events[-1], ("error", "unexpected_ok"))
        self.assertEqual(transport.value(), b"")
        self.assertIsNone(self.client.outcome)

    def test_text_must_be_one_nonempty_line(self):
        net = FakeNetwork()
        for bad in ("", "two\nlines", "cr\r"):
            self.assertRaises(ValueError, RelayClient, bad, net.endpoint, net.reactor)

    def test_an_error_that_no_retry_fixes_ends_the_client(self):
        self.make()
        transport = self.net.accept()
        self.net.receive(b"error not_in_profile the 'chat' profile does not offer that\n")
        self.assertTrue(transport.disconnected)
        self.net.drop(error.ConnectionAborted())
        self.assertEqual(self.client.outcome, "refused")
        self.assertIn("not_in_profile", self.client.detail)
        self.assertEqual(self.seen.endings(), ["error"])
        self.clock.advance(100)
        self.assertEqual(self.net.dials, 1)

    def test_a_fatal_error_closes_and_redials(self):
        self.make()
        transport = self.net.accept()
        self.net.receive(b"error slow_consumer the client stopped reading\n")
        self.assertTrue(transport.disconnecting)  # politely: the server closes anyway
        self.net.drop()
        self.assertEqual(self.seen.endings(), ["error"])
        self.assertEqual(self.seen.retries(), [("slow_consumer", 1.0)])

    def test_retries_run_out(self):
        self.make(retries=2)
        self.net.refuse()
        self.clock.advance(1.0)
        self.net.accept()
        self.net.receive(b"error no_recipient nobody to relay 'hello' to\n")
        self.clock.advance(2.0)  # sent again on the same connection: the third try
        self.net.receive(b"error no_recipient nobody to relay 'hello' to\n")
        self.assertEqual(self.client.outcome, "gave_up")
        self.assertEqual((self.client.retries, self.client.sends, self.net.dials), (2, 2, 2))
        self.net.drop(error.ConnectionAborted())
        self.assertEqual(self.seen.events[-1], ("finished", "gave_up"))
        self.assertEqual(self.seen.endings(), ["connect_failed", "error"])

    def test_the_timeout_covers_a_connect_that_never_completes(self):
        self.make(timeout=2.0)
        self.clock.advance(2.0)  # the dial is still pending: abandoned
        self.assertEqual(self.seen.endings(), ["timeout"])
        self.assertEqual(self.seen.retries(), [("timeout", 1.0)])
        self.clock.advance(1.0)
        self.assertEqual(self.net.dials, 2)

    def test_endings_tell_lost_from_never_ready(self):
        self.make(tls=True)
        self.net.accept()
        self.net.drop(error.ConnectionLost())  # before the handshake completed
        self.clock.advance(1.0)
        self.net.accept()
        self.client.link.handshakeCompleted()
        self.net.drop(error.ConnectionLost())
        self.clock.advance(2.0)
        self.net.accept()
        self.client.link.handshakeCompleted()
        self.net.receive(b"ok hello\n")
        self.net.drop()
        self.assertEqual(self.seen.endings(), ["connect_failed", "lost", "protocol"])
        self.assertEqual(self.client.dials, 3)


class ServerPingTests(unittest.TestCase):
    def test_the_link_answers_the_servers_ping_in_its_form_and_reports_it_not(self):
        from twisted.internet.task import Clock
        from twisted.internet.testing import StringTransport

        from nea.client.link import ServerLink

        class Owner:
            lines: list = []

            def link_made(self, link):
                pass

            def link_ready(self, link):
                pass

            def link_line(self, link, line):
                self.lines.append(line)

        owner = Owner()
        link = ServerLink(owner, Clock(), tls=False)
        transport = StringTransport()
        link.makeConnection(transport)
        link.dataReceived(b'ping\n{"type":"ping"}\nmessage x\n')
        self.assertEqual(transport.value(), b'pong\n{"type":"pong"}\n')
        self.assertEqual(owner.lines, [b"message x"])
