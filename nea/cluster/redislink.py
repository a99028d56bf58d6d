"""One instance's connection to Redis, kept up through outages.

Three connections: one for commands (heartbeats, names), txredisapi's
(`nea.cluster.redisproto`); one that PUBLISHes (`nea.cluster.publisher`) and
one subscribed to this instance's channels (`nea.cluster.subscriber`), both
nea's own. They are up or down together: losing any drops all, so "up" always
means "subscribed and able to publish". Each writes to the kernel at once,
not on the reactor's next poll (`nea.net.sending`).

A `LoopingCall` ticks every heartbeat interval. While up, a tick runs the
listener's beat; while down, a tick reconnects when the backoff allows (the
interval doubling per failure, capped at ``max_backoff``, not jittered), with
fresh connections, subscribing again. The tick never raises (a LoopingCall that
raises stops for good) and never overlaps a previous tick.

Every Redis wait has a timeout on the link's reactor: connecting, subscribing,
each beat and the leave, and each PUBLISH (a tick finds the oldest unanswered
one older than the timeout). So a hung Redis, or a connection to it that
silently stopped, is an outage like any other, and the connections are aborted.
Transitions are logged once each.
"""

from typing import Protocol as TypingProtocol

from twisted.internet import defer
from twisted.internet.endpoints import HostnameEndpoint
from twisted.internet.task import LoopingCall
from twisted.logger import Logger

from nea.cluster.batch import Batcher, Reached
from nea.cluster.connection import LinkFactory
from nea.cluster.names import RedisAddress
from nea.cluster.publisher import Publisher
from nea.cluster.redisproto import Commands, RedisFactory
from nea.cluster.subscriber import Subscriber
from nea.net.sending import SendingFactory
from nea.wire.backoff import Backoff

log = Logger()

#: Longest wait between two reconnection attempts, in seconds.
MAX_BACKOFF = 5.0
#: Seconds a Redis reply (or a connection attempt) may take before Redis counts as down.
REPLY_TIMEOUT = 3.0


class LinkListener(TypingProtocol):
    """What the link drives (implemented by `nea.cluster.redisbus.RedisBus`)."""

    def link_up(self) -> None: ...

    def link_down(self) -> None: ...

    def received(self, channel: str, data: str) -> None:
        """A message published on ``channel``: a batch (`nea.cluster.batch`)."""

    def beat(self, redis) -> defer.Deferred: ...

    def leave(self, redis) -> defer.Deferred: ...


class RedisLink:
    def __init__(
        self,
        reactor,
        address: RedisAddress,
        channels: list[str],
        listener: LinkListener,
        interval: float,
        max_backoff: float = MAX_BACKOFF,
        batch_interval: float = 0.0,
    ) -> None:
        self.reactor = reactor
        self.address = address
        self.channels = channels
        self.listener = listener
        self.interval = interval
        self.backoff = Backoff(initial=min(interval, max_backoff), maximum=max_backoff, jitter=0.0)
        self.up = False
        self._commands: Commands | None = None
        self._publisher: Publisher | None = None
        self._subscriber: Subscriber | None = None
        self._work: defer.Deferred | None = None
        self._stopping = False
        self._failures = 0
        self._retry_at = 0.0
        self._reported_down = False
        self._batcher = Batcher(reactor, self._publish_now, batch_interval)
        self._ticker = LoopingCall(self._tick)
        self._ticker.clock = reactor

    # ---- life cycle ----

    def start(self) -> None:
        self._ticker.start(self.interval, now=True)

    @defer.inlineCallbacks
    def stop(self):
        """Leave the cluster (if Redis is there to tell) and close the connections."""
        self._stopping = True
        if self._ticker.running:
            self._ticker.stop()
        if self._work is not None:
            yield self._work  # bounded by the reply timeouts; never fails
        if self.up:
            try:
                yield self.listener.leave(self._commands).addTimeout(REPLY_TIMEOUT, self.reactor)
            except Exception as e:  # Redis went away meanwhile: the keys expire by themselves
                log.warn("could not withdraw from the cluster cleanly: {e}", e=e)
            self._batcher.flush()  # what is queued, the leave notice with it: the close sends it
        self.up = False
        self._batcher.discard()
        yield self._close()

    @property
    def commands(self):
        """The command connection while up (for writes other than PUBLISH), else None."""
        return self._commands if self.up else None

    def publish(self, channel: str, data: str, reached: Reached | None = None) -> None:
        """PUBLISH (batched, only while up); ``reached(receivers)`` once it is out."""
        if self.up:
            self._batcher.publish(channel, data, reached)

    def publish_word(self, channel: str, head: str, word: str) -> None:
        """Add ``word`` to the line ``head`` of the next PUBLISH (`Batcher.publish_word`)."""
        if self.up:
            self._batcher.publish_word(channel, head, word)

    def _publish_now(self, channel: str, data: str, told: Reached | None) -> None:
        assert self._publisher is not None  # the batcher sends only while up
        self._publisher.publish(channel, data, told)

    # ---- the tick ----

    def _tick(self) -> None:
        if self._work is not None or self._stopping:
            return
        if not self.up and self.reactor.seconds() < self._retry_at:
            return
        if self.up and self._unanswered_publish():
            self._down(f"no answer to a PUBLISH in {REPLY_TIMEOUT:g}s")
            return
        work = defer.maybeDeferred(self._beat if self.up else self._join)
        work.addErrback(lambda f: self._down(f.getErrorMessage() or f.type.__name__))
        work.addBoth(self._idle)
        if not work.called:
            self._work = work

    def _idle(self, _) -> None:
        self._work = None

    def _unanswered_publish(self) -> bool:
        sent = self._publisher.waiting_since() if self._publisher is not None else None
        return sent is not None and self.reactor.seconds() - sent >= REPLY_TIMEOUT

    @defer.inlineCallbacks
    def _join(self):
        yield self._connect()
        if self._stopping:
            return  # stop() closes the connections
        self.up = True
        self.listener.link_up()
        yield self._beat()
        self._failures = 0
        if self._reported_down:
            log.info("redis {address} is back: rejoined the cluster", address=str(self.address))
        else:
            log.info("joined the cluster on {address}", address=str(self.address))
        self._reported_down = False

    def _beat(self):
        return self.listener.beat(self._commands).addTimeout(REPLY_TIMEOUT, self.reactor)

    def _down(self, reason: str) -> None:
        self._failures += 1
        self._retry_at = self.reactor.seconds() + self.backoff.ceiling(self._failures - 1)
        if not self._reported_down:
            self._reported_down = True
            log.warn(
                "redis {address} unreachable ({error}): degraded, serving local clients only;"
                " retrying every {cap:g}s at most",
                address=str(self.address),
                error=reason,
                cap=self.backoff.maximum,
            )
        self._drop()

    # ---- connections ----

    @defer.inlineCallbacks
    def _connect(self):
        self._commands = yield self._open(RedisFactory(self.address.db))
        self._subscriber = yield self._open(LinkFactory(lambda: Subscriber(self.listener.received)))
        yield self._subscriber.subscribe(self.channels).addTimeout(REPLY_TIMEOUT, self.reactor)
        self._publisher = yield self._open(LinkFactory(lambda: Publisher(self.reactor)))
        for redis in (self._commands, self._subscriber, self._publisher):
            redis.whenDisconnected().addCallback(self._lost)
            if not redis.connected:
                raise ConnectionError("connection lost while subscribing")

    @defer.inlineCallbacks
    def _open(self, factory: RedisFactory | LinkFactory):
        endpoint = HostnameEndpoint(
            self.reactor, self.address.host, self.address.port, timeout=REPLY_TIMEOUT
        )
        redis = (yield endpoint.connect(SendingFactory(factory))).wrappedProtocol
        # Small messages each way: Nagle's algorithm would hold them for delayed ACKs.
        redis.transport.setTcpNoDelay(True)
        try:
            yield redis.whenConnected().addTimeout(REPLY_TIMEOUT, self.reactor)
        except Exception:
            redis.transport.abortConnection()
            raise
        return redis

    def _lost(self, _) -> None:
        if self.up and not self._stopping:
            self._down("connection lost")

    def _drop(self) -> None:
        """Down: abort whatever is still open (Redis may not be reading) and tell the
        listener (once)."""
        was_up, self.up = self.up, False
        self._batcher.discard()
        self._close(abort=True)
        if was_up:
            self.listener.link_down()

    def _close(self, abort: bool = False):
        waits: list[defer.Deferred] = []
        for redis in (self._commands, self._subscriber, self._publisher):
            if redis is not None and redis.transport is not None and redis.connected:
                waits.append(redis.whenDisconnected())
                if abort:
                    redis.transport.abortConnection()
                else:
                    redis.transport.loseConnection()
        self._commands = self._subscriber = self._publisher = None
        return (
            defer.DeferredList(waits)
            .addTimeout(REPLY_TIMEOUT, self.reactor)
            .addErrback(lambda _: None)
        )
