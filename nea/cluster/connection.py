"""What the Redis link asks of each of its connections that nea speaks itself.

The subscriber and the publisher (`nea.cluster.subscriber`,
`nea.cluster.publisher`) each speak only the part of Redis's protocol their
connection carries. Both offer the link what txredisapi's protocol offers it
(``whenConnected``, ``whenDisconnected``, ``connected``), so that the link holds
its connections alike.
"""

from collections.abc import Callable

from twisted.internet import defer, interfaces, protocol


def command(*words: str) -> bytes:
    """``words`` as a RESP command."""
    encoded = [word.encode("utf-8") for word in words]
    return b"*%d\r\n%s" % (len(encoded), b"".join(b"$%d\r\n%s\r\n" % (len(w), w) for w in encoded))


class LinkConnection(protocol.Protocol):
    """One of the link's connections: says when it is up (at once: no AUTH, no SELECT)
    and when it is gone."""

    transport: interfaces.ITCPTransport | None

    def __init__(self) -> None:
        self._disconnected: list[defer.Deferred] = []

    def whenConnected(self) -> defer.Deferred:
        return defer.succeed(self)

    def whenDisconnected(self) -> defer.Deferred:
        gone: defer.Deferred = defer.Deferred()
        self._disconnected.append(gone)
        return gone

    def connectionLost(self, reason=protocol.connectionDone) -> None:
        self.connected = 0
        self._disconnected, gone = [], self._disconnected
        for waiter in gone:
            waiter.callback(self)


class LinkFactory(protocol.Factory):
    """Builds one kind of `LinkConnection` (``build()``), without logging each."""

    noisy = False

    def __init__(self, build: Callable[[], LinkConnection]) -> None:
        self.build = build

    def buildProtocol(self, addr) -> LinkConnection:
        connection = self.build()
        connection.factory = self
        return connection
