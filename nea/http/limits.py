"""What the HTTP API enforces while a request is still arriving, below the resources.

twisted.web reads a request's whole body before any resource sees it, and keeps a
connection for as long as bytes trickle in. So the limits sit in the channel and
the request themselves:

- a body is read only from a request that carries the admin token (every endpoint
  that takes a body requires it) and announces no more than ``max_body`` bytes;
  any other is answered at once from its headers (401 or 413), without a
  ``100 Continue`` and without its body, and its connection is closed after the
  answer. A chunked body that outgrows ``max_body`` is answered 413 the same way.
- a connection is *idle* from its accept, and again from the end of each answer,
  until the first line of its next request arrives: it may stay so for
  ``idle_timeout`` seconds, then it is closed. From that first line the request
  must arrive whole within ``request_timeout`` seconds. Bytes received do not move
  either deadline.
- at most ``max_connections`` connections are open at once. When a new one comes
  at the limit, an idle connection is closed to make room (one that holds a slot
  doing nothing must not keep ``/healthz`` out): first the one kept alive idle
  for longest after an answer, else the oldest that has sent nothing since its
  accept, ``FRESH_GRACE`` seconds on (a client that reconnects in a loop must not
  push a newcomer out before its first request is read). Only when none is
  evictable is the new one closed at accept. One address may hold at most
  ``max_per_address`` of them: past it, a new one from that address closes that
  address's own longest idle connection, or is closed at accept; so one client
  reconnecting in a loop churns its own share and never the others'.
- every request must name a host of ``hosts`` in its ``Host`` header
  (`nea.http.hosts`: DNS rebinding), else it is answered 421 ``host_not_allowed``
  from its headers and its connection closed; ``/ws`` is a request like the others.

Each refusal is counted in ``nea_http_refused_total`` by reason.
"""

import collections

import attrs
from twisted.internet.interfaces import ITCPTransport
from twisted.internet.protocol import connectionDone
from twisted.python.failure import Failure
from twisted.web import http
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET, Request, Site

from nea.http.auth import BearerToken
from nea.http.hosts import AllowedHosts
from nea.http.jsonapi import ApiError, body_too_large, write_error
from nea.http.metrics import Metrics

DEFAULT_MAX_BODY = 1024 * 1024
DEFAULT_REQUEST_TIMEOUT = 10.0
DEFAULT_IDLE_TIMEOUT = 5.0
DEFAULT_MAX_CONNECTIONS = 256
DEFAULT_MAX_PER_ADDRESS = 32

#: ``nea_http_refused_total`` reasons besides the answers' own codes.
TIMED_OUT = "request_timeout"
FULL = "too_many_connections"
FULL_ADDRESS = "too_many_from_address"
#: An idle connection closed to make room for a new one.
EVICTED = "idle_evicted"
#: Seconds a new connection may wait for its first request before it may be evicted.
FRESH_GRACE = 1.0
HOST_NOT_ALLOWED = "host_not_allowed"
REFUSED_REASONS = (
    "unauthorized",
    "body_too_large",
    HOST_NOT_ALLOWED,
    TIMED_OUT,
    FULL,
    FULL_ADDRESS,
    EVICTED,
)


@attrs.frozen
class HttpLimits:
    max_body: int = DEFAULT_MAX_BODY
    request_timeout: float = DEFAULT_REQUEST_TIMEOUT
    max_connections: int = DEFAULT_MAX_CONNECTIONS
    idle_timeout: float = DEFAULT_IDLE_TIMEOUT
    hosts: AllowedHosts = AllowedHosts.default_for(None)
    #: Connections one client address may hold at once (0: no limit).
    max_per_address: int = DEFAULT_MAX_PER_ADDRESS


#: RFC 9110's "Misdirected Request" (twisted.web has no name for it).
MISDIRECTED_REQUEST = 421


def host_not_allowed(host: bytes | None) -> ApiError:
    return ApiError(
        MISDIRECTED_REQUEST,
        HOST_NOT_ALLOWED,
        f"this server does not answer for Host {host!r} (--http-allowed-hosts)",
    )


class GuardedRequest(Request):
    """A request that keeps no more body than the limit and knows when it was refused.

    ``refusal`` is the answer it gets instead of its resource's; ``dispatched``
    tells whether it has been handed on to be answered.
    """

    channel: "GuardedChannel"
    refusal: ApiError | None = None
    dispatched = False
    received = 0

    def handleContentChunk(self, data: bytes) -> None:
        if self.refusal is not None:  # answered already: the rest of the body is dropped
            return
        self.received += len(data)
        limit = self.channel.site.limits.max_body
        if self.received > limit:  # only a chunked body can get here
            self.channel.site.refused(self, body_too_large(limit))
            self.channel.answer_now()
            return
        super().handleContentChunk(data)

    def requestReceived(self, command, path, version) -> None:
        self.dispatched = True
        super().requestReceived(command, path, version)


class GuardedChannel(http.HTTPChannel):
    """An HTTP/1.1 channel that screens each request's headers before reading its body,
    and whose timeouts are deadlines (for an idle spell, for a whole request), not idle
    timers."""

    site: "GuardedSite"  # set by Site.buildProtocol
    #: The client's address (host), set by `GuardedSite.buildProtocol`.
    address: str | None = None

    def connectionMade(self) -> None:
        self.site.opened(self)
        super().connectionMade()
        self._idle()

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        self.site.forget(self)
        super().connectionLost(reason)

    def resetTimeout(self) -> None:
        """Bytes received do not push the deadline back (one byte every few seconds
        would keep a connection forever): see `_idle` and `lineReceived`."""

    def _idle(self, answered: bool = False) -> None:
        """Nothing asked of it: it has ``idle_timeout`` for its next request's first line."""
        self.site.idle(self, answered)
        self.setTimeout(self.site.limits.idle_timeout)

    def lineReceived(self, line: bytes) -> None:
        if self.site.busy(self):  # a request's first line: it has request_timeout for the rest
            self.setTimeout(self.site.limits.request_timeout)
        super().lineReceived(line)

    def requestDone(self, request) -> None:
        self._idle(answered=True)  # (before: the next pipelined request is read in there)
        super().requestDone(request)
        if self.site.is_idle(self) and self.persistent:
            self.setTimeout(self.site.limits.idle_timeout)

    def timeoutConnection(self) -> None:
        self.site.metrics.http_refused.labels(TIMED_OUT).inc()
        super().timeoutConnection()

    def allHeadersReceived(self) -> None:
        request = self.requests[-1]
        refusal = self.site.screen(request, self.length)
        if refusal is not None:
            self.site.refused(request, refusal)
            # Dispatched now with an empty body: nothing more is read, no 100 Continue.
            request.requestHeaders.removeHeader(b"Expect")
            self.length = 0
        super().allHeadersReceived()
        if refusal is not None:
            self.persistent = False

    def answer_now(self) -> None:
        """Answer the request whose body is arriving without reading the rest; then close."""
        self.persistent = False
        self.allContentReceived()

    def allContentReceived(self) -> None:
        # A body answered early (answer_now) may still end in the data at hand:
        # that end is no request.
        if self.requests and not self.requests[-1].dispatched:
            super().allContentReceived()


class Refused(Resource):
    """The answer to a request refused from its headers or its body's size."""

    isLeaf = True

    def __init__(self, error: ApiError) -> None:
        super().__init__()
        self.error = error

    def render(self, request):
        request.setHeader(b"Connection", b"close")
        write_error(request, self.error)
        return NOT_DONE_YET


class GuardedSite(Site):
    """A site whose connections and requests are held to ``limits``."""

    # Twisted types this as its HTTP/2-negotiating wrapper; an HTTP/1.1 channel is
    # all buildProtocol needs.
    protocol = GuardedChannel  # type: ignore[assignment]
    requestFactory = GuardedRequest

    def __init__(
        self, resource, token: BearerToken, limits: HttpLimits, metrics: Metrics, **kwargs
    ) -> None:
        super().__init__(resource, timeout=limits.request_timeout, **kwargs)
        self.token = token
        self.limits = limits
        self.metrics = metrics
        #: The open connections' channels; of those idle, the ones kept alive after an
        #: answer, longest idle first, and the new ones (with when they came), oldest first.
        self.channels: set[GuardedChannel] = set()
        self._kept: collections.OrderedDict[GuardedChannel, None] = collections.OrderedDict()
        self._new: collections.OrderedDict[GuardedChannel, float] = collections.OrderedDict()
        self._per_address: collections.Counter[str | None] = collections.Counter()
        metrics.http_connections.set_function(lambda: self.connections)
        for reason in REFUSED_REASONS:
            metrics.http_refused.labels(reason)

    @property
    def connections(self) -> int:
        return len(self.channels)

    def buildProtocol(self, addr):
        address = getattr(addr, "host", None)
        limit = self.limits.max_per_address
        if limit and self._per_address[address] >= limit:
            if not self._make_room(self._evictable_of(address), FULL_ADDRESS):
                return None
        elif self.connections >= self.limits.max_connections:
            if not self._make_room(self._evictable(), FULL):
                return None
        channel = super().buildProtocol(addr)
        channel.address = address
        return channel

    def _make_room(self, victim: "GuardedChannel | None", refusal: str) -> bool:
        """Close ``victim`` for a newcomer; without one the newcomer is refused."""
        if victim is None:
            self.metrics.http_refused.labels(refusal).inc()
            return False  # the listening port closes the new socket at once
        self.forget(victim)
        self.metrics.http_refused.labels(EVICTED).inc()
        ITCPTransport(victim.transport).abortConnection()
        return True

    def _evictable(self) -> GuardedChannel | None:
        if self._kept:
            return next(iter(self._kept))
        if self._new:
            oldest, came = next(iter(self._new.items()))
            if self.reactor.seconds() - came >= FRESH_GRACE:
                return oldest
        return None

    def _evictable_of(self, address: str | None) -> GuardedChannel | None:
        """``address``'s own longest idle connection (it is over its share: no grace)."""
        for idle in (self._kept, self._new):
            for channel in idle:
                if channel.address == address:
                    return channel
        return None

    def opened(self, channel: GuardedChannel) -> None:
        self.channels.add(channel)
        self._per_address[channel.address] += 1

    def idle(self, channel: GuardedChannel, answered: bool) -> None:
        """``channel`` waits for a request: its first (``answered`` False), or another."""
        if answered:
            self._new.pop(channel, None)
            self._kept[channel] = None
        elif channel not in self._kept:
            self._new.setdefault(channel, self.reactor.seconds())

    def busy(self, channel: GuardedChannel) -> bool:
        """A request's first line came: ``channel`` is not idle; whether it was."""
        return self._kept.pop(channel, False) is None or self._new.pop(channel, None) is not None

    def is_idle(self, channel: GuardedChannel) -> bool:
        return channel in self._kept or channel in self._new

    def forget(self, channel: GuardedChannel) -> None:
        """``channel`` is closed, or closing: it no longer counts."""
        if channel in self.channels:
            self.channels.discard(channel)
            self._per_address[channel.address] -= 1
            if not self._per_address[channel.address]:
                del self._per_address[channel.address]
        self._kept.pop(channel, None)
        self._new.pop(channel, None)

    def hand_over(self, channel: GuardedChannel) -> None:
        """``channel``'s socket now belongs to another protocol (a WebSocket client):
        it no longer counts as an HTTP connection."""
        self.forget(channel)

    def screen(self, request, length: int | None) -> ApiError | None:
        """None if the request may go on and the body its headers announce (``length``
        bytes, None: chunked) may be read, else the answer to give at once instead."""
        host = request.getHeader(b"host")
        if not self.limits.hosts.allows(host):
            return host_not_allowed(host)
        if length == 0:
            return None
        try:
            self.token.screen(request)
        except ApiError as error:
            return error
        if length is not None and length > self.limits.max_body:
            return body_too_large(self.limits.max_body)
        return None

    def refused(self, request: GuardedRequest, error: ApiError) -> None:
        request.refusal = error
        self.metrics.http_refused.labels(error.code).inc()

    def getResourceFor(self, request):
        if request.refusal is not None:
            return Refused(request.refusal)
        return super().getResourceFor(request)
