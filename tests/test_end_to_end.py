"""The real nea-server service over real TLS on loopback."""

from twisted.internet import defer
from twisted.trial import unittest

from nea.wire import frames
from tests.support import connect, start_server, tls_listen


class TLSEndToEnd(unittest.TestCase):
    @defer.inlineCallbacks
    def test_date_then_reverse(self):
        service = yield start_server(self, "--listen", tls_listen())
        client = yield connect(self, service.ports[0])
        first = yield client.next()
        self.assertRegex(first.decode(), r"^\d{4}-\d{2}-\d{2}$")
        client.send("héllo wörld")
        reply = yield client.next_push()
        self.assertEqual(reply, frames.ReverseReply("dlröw olléh"))
