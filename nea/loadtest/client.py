"""The load test's clients: nea-client's `RelayClient`, dialled and tallied for a worker.

Each load-test client is one `nea.client.relay.RelayClient` (the same state
machine as ``nea-client relay``) for one unique text X. What is particular to
the load test lives here: `Tallying`, the one observer a worker's clients share,
which turns their reports into the worker's `Tally`; and `source_endpoint`,
which dials from a spread of loopback source addresses so that a run's
connections do not run out of ephemeral ports.
"""

import socket
from typing import Callable

from twisted.internet import tcp
from twisted.internet.interfaces import IStreamClientEndpoint
from zope.interface import implementer

from nea.client.relay import RelayClient, RelayObserver
from nea.loadtest.tally import Tally
from nea.tls.client import client_endpoint
from nea.wire.backoff import Backoff

#: Between a client's tries: 0.1 s doubled per retry, at most 2 s, jittered down to half.
BACKOFF = Backoff(initial=0.1, maximum=2.0, jitter=0.5)
#: Linux: bind() takes only the address and the port is picked at connect(), with
#: the whole 4-tuple known; so a source address's ports are shared among servers,
#: and ports in TIME_WAIT towards this server are reused (net.ipv4.tcp_tw_reuse).
#: A plain bind(address, 0) would search for a port no socket holds, TIME_WAIT
#: included: slow, then failing, after some 28,000 closed connections.
IP_BIND_ADDRESS_NO_PORT = getattr(socket, "IP_BIND_ADDRESS_NO_PORT", 24)


class Tallying(RelayObserver):
    """What the clients of one worker share: the tally, and how many are active or retrying."""

    def __init__(self, tally: Tally, wall: Callable[[], float]) -> None:
        self.tally = tally
        self.wall = wall
        self.active = 0  # clients started and not yet finished
        self.retrying = 0  # active clients past their first try

    def start(self, client: RelayClient) -> None:
        self.active += 1
        self.tally.count("started")
        client.start()

    def on_connected(self, client: RelayClient) -> None:
        self.tally.sample("connect_ms", client.sent_at - client.dialled_at)

    def on_acked(self, client: RelayClient) -> None:
        self.tally.sample("exchange_ms", client.acked_at - client.sent_at)

    def on_retry(self, client: RelayClient, why: str, delay: float) -> None:
        self.tally.count("retries")
        if client.retries == 1:
            self.retrying += 1

    def on_error(self, client: RelayClient, error) -> None:
        self.tally.errors[error.code] += 1

    def on_attempt_over(self, client: RelayClient, ending: str) -> None:
        self.tally.closed(ending)

    def on_finished(self, client: RelayClient) -> None:
        tally = self.tally
        self.active -= 1
        if client.retries:
            self.retrying -= 1
        counts = tally.counts
        counts["attempts"] += client.dials
        counts["forwarded"] += client.forwarded
        counts["oks_sent"] += client.oks_sent
        counts["unexpected"] += client.unexpected
        if client.outcome == "acked":
            tally.count("acked")
            if client.retries == 0:
                tally.count("acked_first_try")
            tally.sample("total_ms", client.acked_at - client.started_at)
        else:
            tally.count("failed")
        wall = self.wall()
        tally.span(wall - (client.clock.seconds() - client.started_at), wall)


class SourceBoundClient(tcp.Client):
    """A TCP client whose socket binds its source address without a port (see above)."""

    def createInternetSocket(self):
        skt = super().createInternetSocket()
        skt.setsockopt(socket.IPPROTO_IP, IP_BIND_ADDRESS_NO_PORT, 1)
        return skt


class SourceBoundConnector(tcp.Connector):
    def _makeTransport(self) -> tcp.Client:
        return SourceBoundClient(self.host, self.port, self.bindAddress, self, self.reactor)


class SourceBoundReactor:
    """The part of a reactor an endpoint dials through, binding sockets as above."""

    def __init__(self, reactor) -> None:
        self.reactor = reactor

    def connectTCP(self, host, port, factory, timeout=30, bindAddress=None):
        connector = SourceBoundConnector(host, port, factory, timeout, bindAddress, self.reactor)
        connector.connect()
        return connector


@implementer(IStreamClientEndpoint)
class RoundRobin:
    """Dials through each of ``endpoints`` in turn."""

    def __init__(self, endpoints: list) -> None:
        self.endpoints = endpoints
        self.next = 0

    def connect(self, factory):
        endpoint = self.endpoints[self.next]
        self.next = (self.next + 1) % len(self.endpoints)
        return endpoint.connect(factory)


def source_endpoint(reactor, host: str, port: int, tls, timeout: float, sources=()):
    """The endpoint a worker's clients dial: from ``sources`` in turn, else the kernel's choice."""
    if not sources:
        return client_endpoint(reactor, host, port, tls, timeout)
    bound = SourceBoundReactor(reactor)
    return RoundRobin([client_endpoint(bound, host, port, tls, timeout, s) for s in sources])
