"""txredisapi's command protocol as the cluster link uses it: all that relies on its insides.

(The subscribed and the publishing connections are nea's own: `nea.cluster.subscriber`,
`nea.cluster.publisher`.)

Checked against txredisapi 1.6.0, the version setup.cfg pins;
tests/test_cluster_redisproto.py fails if the library changes under any of this:

- **Whole reads** (`WholeReads`). After each bulk string, txredisapi's parser
  calls ``setLineMode(extra)`` with the rest of the read, which pauses the
  protocol and feeds the rest again in a later reactor turn (``callLater(0,
  ...)``, to avoid recursing): a turn per bulk string but the read's last (the
  replies to a beat's commands arrive so). Here ``setLineMode`` only keeps the
  rest, and ``dataReceived`` feeds it back through the parser in a loop.
- **No global reactor.** txredisapi's timers (that re-feed, and the per-command
  ``replyTimeout``) run on the reactor it imports, not the one the link is
  given. With whole reads and ``replyTimeout=None`` it schedules nothing:
  every wait on Redis is timed by `nea.cluster.redislink.RedisLink` on its own
  reactor (a hung Redis is an outage like any other; a Clock in tests).
- **The factory** (`RedisFactory`). txredisapi's protocol calls
  ``factory.stopTrying()`` and ``factory.connectionError(why)``, and read
  ``factory.isLazy``, when AUTH or SELECT fails; it expects txredisapi's
  pooled, reconnecting factory, which the link does not use (it makes fresh
  connections itself). This factory offers just those three.
"""

import txredisapi
from twisted.internet import interfaces, protocol
from twisted.logger import Logger

log = Logger()


class WholeReads(protocol.Protocol):
    """Parse everything a read brought, in that read (see above); mixed in before
    txredisapi's protocol, which is a Twisted protocol too."""

    transport: interfaces.ITCPTransport | None

    _unparsed = b""

    def setLineMode(self, extra=b"") -> None:
        self.line_mode = 1
        self._unparsed = extra

    def dataReceived(self, data, unpause=False) -> None:
        while data:
            self._unparsed = b""
            super().dataReceived(data)
            data = self._unparsed


class Commands(WholeReads, txredisapi.RedisProtocol):
    """A connection for commands (heartbeats, the names and nicks hashes)."""


class RedisFactory(protocol.Factory):
    """Builds a `Commands`, with what txredisapi asks of a factory."""

    #: Read by txredisapi when AUTH or SELECT fails: not lazy, so it reports through
    #: connectionError.
    isLazy = False
    noisy = False

    def __init__(self, dbid: int | None) -> None:
        self.dbid = dbid

    def buildProtocol(self, addr):
        redis = Commands(charset="utf-8", replyTimeout=None, dbid=self.dbid, convertNumbers=False)
        redis.factory = self
        return redis

    def stopTrying(self) -> None:
        """txredisapi calls this when SELECT fails; the link does its own retrying."""

    def connectionError(self, why: str) -> None:
        log.error("redis refused the connection: {why}", why=why)
