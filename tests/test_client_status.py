"""``nea-client status`` without sockets: one question, one answer, and every way it can fail."""

from twisted.internet import defer
from twisted.trial import unittest

from nea.client.status import STATUS_LINE, StatusError, fetch_status
from tests.fakes import FakeNetwork


class FetchStatusTests(unittest.TestCase):
    def setUp(self):
        self.net = FakeNetwork()
        self.result = fetch_status(self.net.endpoint, self.net.reactor, tls=False, timeout=5.0)

    def test_asks_once_skips_dates_and_closes_after_the_answer(self):
        transport = self.net.accept()
        self.assertEqual(transport.value(), STATUS_LINE)
        self.net.receive(b'{"type":"date","payload":"2026-11-21"}\n')
        self.assertNoResult(self.result)
        self.net.receive(b'{"type":"status","payload":{"instance":"i1","connections":1}}\n')
        self.assertEqual(self.successResultOf(self.result), {"instance": "i1", "connections": 1})
        self.assertTrue(transport.disconnecting)

    def test_an_error_reply_fails_with_its_code(self):
        transport = self.net.accept()
        self.net.receive(b"error not_in_profile the 'relay' profile understands only: exit\n")
        failure = self.failureResultOf(self.result, StatusError)
        self.assertIn("[not_in_profile]", str(failure.value))
        self.assertFalse(failure.value.tls_refused)
        self.assertTrue(transport.disconnected)

    def test_no_server_fails_at_once(self):
        self.net.refuse()
        failure = self.failureResultOf(self.result, StatusError)
        self.assertEqual(str(failure.value), "cannot connect: connection refused")

    def test_a_server_that_hangs_up_fails(self):
        self.net.accept()
        self.net.receive(b"2026-11-21\n")
        self.net.drop()
        failure = self.failureResultOf(self.result, StatusError)
        self.assertEqual(str(failure.value), "no status: closed by the server")

    def test_a_server_that_hangs_up_without_a_word_may_want_tls(self):
        self.net.accept()
        self.net.drop()
        failure = self.failureResultOf(self.result, StatusError)
        self.assertEqual(
            str(failure.value),
            "no status: closed by the server before it sent anything: "
            "if the port wants TLS, leave out --plain",
        )

    def test_a_silent_server_times_out_and_is_dropped(self):
        transport = self.net.accept()
        self.net.reactor.advance(4.9)
        self.assertNoResult(self.result)
        self.net.reactor.advance(0.1)
        self.failureResultOf(self.result, defer.TimeoutError)
        self.assertTrue(transport.disconnected)
