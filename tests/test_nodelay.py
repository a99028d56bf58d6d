"""Both ends of a nea connection set TCP_NODELAY, over TCP and TLS (real sockets on loopback).

Without it, a line written while the peer has not yet acknowledged an earlier
segment (an ``ok X`` after the TLS session tickets) waits for the peer's delayed
ACK: a 40 ms step in the exchange latency.
"""

from twisted.internet import defer, reactor
from twisted.trial import unittest

from nea.client.link import LinkFactory, PushReader
from nea.tls.client import client_endpoint
from nea.wire import frames
from tests.support import WAIT, client_tls, start_server, tcp_listen, tls_listen


class FirstPush(PushReader):
    """A link owner that asks for the status once ready and fires ``pushed`` with the link."""

    def __init__(self) -> None:
        self.pushed: defer.Deferred = defer.Deferred()

    def link_made(self, link) -> None:
        pass

    def link_ready(self, link) -> None:
        link.send(frames.Status())

    def link_push(self, link, push) -> None:
        if not self.pushed.called:
            self.pushed.callback(link)

    def link_lost(self, link, reason) -> None:
        if not self.pushed.called:
            self.pushed.errback(reason)


class NoDelay(unittest.TestCase):
    @defer.inlineCallbacks
    def check(self, listen: str, tls: bool):
        service = yield start_server(self, "--listen", listen)
        endpoint = client_endpoint(
            reactor, "127.0.0.1", service.ports[0], client_tls() if tls else None, WAIT
        )
        owner = FirstPush()
        yield endpoint.connect(LinkFactory(owner, reactor, tls))
        link = yield owner.pushed.addTimeout(WAIT, reactor)  # the server has this connection now
        self.addCleanup(link.close, "done", True)
        self.assertTrue(link.transport.getTcpNoDelay())  # reads the socket option
        [peer] = service.hub.registry.peers
        self.assertTrue(peer.transport.getTcpNoDelay())

    def test_over_tls(self):
        return self.check(tls_listen(), tls=True)

    def test_over_tcp(self):
        return self.check(tcp_listen(), tls=False)
