"""A socket-free network for nea-client unit tests (a helper module: it holds no tests).

Clients dial a real `TCP4ClientEndpoint` on a `MemoryReactorClock`, which only
records each connection attempt; the test then accepts it (a `StringTransport`
stands for the socket), refuses it, or drops it. The same reactor is the clock.
"""

from twisted.internet import error
from twisted.internet.endpoints import TCP4ClientEndpoint
from twisted.internet.testing import MemoryReactorClock, StringTransport
from twisted.python.failure import Failure


class FakeNetwork:
    def __init__(self) -> None:
        self.reactor = MemoryReactorClock()
        self.endpoint = TCP4ClientEndpoint(self.reactor, "127.0.0.1", 3443)
        self._answered = 0
        self._protocol = None

    @property
    def dials(self) -> int:
        """Connection attempts made so far."""
        return len(self.reactor.tcpClients)

    def _next_factory(self):
        if self._answered >= self.dials:
            raise AssertionError("the client has not dialled")
        factory = self.reactor.tcpClients[self._answered][2]
        self._answered += 1
        return factory

    def accept(self) -> StringTransport:
        """The pending dial connects; returns the transport standing for the socket."""
        self._protocol = self._next_factory().buildProtocol(None)
        transport = StringTransport()
        self._protocol.makeConnection(transport)
        return transport

    def refuse(self) -> None:
        self._next_factory().clientConnectionFailed(None, Failure(error.ConnectionRefusedError()))

    def receive(self, data: bytes) -> None:
        self._protocol.dataReceived(data)

    def drop(self, reason: Exception | None = None) -> None:
        """The current connection ends (by default: the server closed it)."""
        self._protocol.connectionLost(Failure(reason or error.ConnectionDone()))
