"""Stay connected: dial, and dial again with backoff, until the client is done.

Clients and servers have no start order: a client that finds no server, or
loses it, keeps redialling with capped exponential backoff and jitter, through
Twisted's `ReconnectingClientFactory` (`RedialFactory`) on the shared policy of
`nea.wire.backoff`. The backoff is reset (``resetDelay``) only when a link is
*ready* (TLS handshake completed): a server that accepts TCP and then fails
every handshake must not be hammered at the shortest delay. A server that
answers ``server_full`` did not really take us either: that counts as a failed
attempt, and the backoff keeps growing. ``stopTrying`` ends it all when the
client is done.

``shutting_down`` from a server that kept the link up for at least the backoff's
``prompt`` delay means a restart: the client comes back after the (jittered)
prompt delay, however long it once had to wait. Said sooner than that, it is a
refusal like ``server_full``. So a server that says ``shutting_down`` right after
every connect is still backed off from, and one that says it later is dialled at
most once per prompt delay plus the time it held the link.

A certificate the client refuses ends the client instead (outcome
``tls_failed``): waiting does not fix a wrong host name or CA.
"""

import random

import attrs
from twisted.internet import defer, error
from twisted.internet.interfaces import IConnector
from twisted.internet.protocol import ClientFactory, ReconnectingClientFactory
from twisted.python.failure import Failure
from zope.interface import implementer

from nea.client.link import LinkFactory, PushReader, ServerLink
from nea.tls.client import verification_failure
from nea.wire import errors, frames
from nea.wire.backoff import Backoff

#: Errors after which the server closes the connection, perhaps without having served us.
_REFUSALS = frozenset({errors.SERVER_FULL.code, errors.SHUTTING_DOWN.code})


@attrs.frozen
class DialConfig:
    """How a client connects; one value shared by any number of clients."""

    #: Whether the endpoint is wrapped in TLS (readiness then waits for the handshake).
    tls: bool = True
    backoff: Backoff = Backoff()
    #: Seconds after `Redialer.start` at which the client stops trying; 0 means never.
    give_up: float = 0.0
    #: The CA file the endpoint's TLS trusts, named when the server's certificate is refused.
    ca: str | None = None


def describe(reason: Failure) -> str:
    """A short human reason for a failed dial or a lost connection."""
    if reason.check(error.ConnectionRefusedError):
        return "connection refused"
    if reason.check(error.TimeoutError):
        return "connect timed out"
    if reason.check(error.ConnectingCancelledError):  # abandoned: the client's own timeout
        return "timeout"
    if reason.check(error.ConnectionDone):
        return "closed by the server"
    if reason.check(error.ConnectionLost):
        return "connection lost"
    return reason.getErrorMessage()


def describe_lost(link: ServerLink, reason: Failure) -> str:
    """Why ``link`` ended, for a person.

    A plain TCP link that the server closed before sending a single byte is
    most likely a TLS listener, which hangs up on what is no TLS handshake.
    """
    why = link.closed_because or describe(reason)
    if not link.tls and not link.heard and reason.check(error.ConnectionDone):
        why += " before it sent anything: if the port wants TLS, leave out --plain"
    return why


@implementer(IConnector)
class EndpointConnector:
    """A client endpoint as the connector `ReconnectingClientFactory` redials through.

    The factory schedules ``connect()`` after each backoff delay and calls
    ``stopConnecting()`` when told to stop trying; a failed dial goes to its
    ``clientConnectionFailed``. Endpoints report no lost connection to a factory,
    so the link's owner tells the factory when to retry after one.
    """

    __slots__ = ("endpoint", "factory", "dialing")

    def __init__(self, endpoint, factory: ClientFactory) -> None:
        self.endpoint = endpoint
        self.factory = factory
        #: The dial under way, until it connects or fails.
        self.dialing: defer.Deferred | None = None

    def connect(self) -> None:
        self.factory.startedConnecting(self)
        self.dialing = dialing = self.endpoint.connect(self.factory)
        dialing.addCallbacks(self._connected, self._failed)

    def _connected(self, link) -> None:
        self.dialing = None

    def _failed(self, reason: Failure) -> None:
        self.dialing = None
        self.factory.clientConnectionFailed(self, reason)

    def stopConnecting(self) -> None:
        if self.dialing is None:
            raise error.NotConnectingError()
        self.dialing.cancel()

    def disconnect(self) -> None:
        """Abandon the dial under way; a connection made is closed by its owner."""
        if self.dialing is not None:
            self.dialing.cancel()

    def getDestination(self):
        return self.endpoint


class RedialFactory(LinkFactory, ReconnectingClientFactory):
    """Twisted's reconnecting factory, with nea's backoff policy for its delays.

    `ReconnectingClientFactory` counts the failed attempts (``retries``), starts
    over on `resetDelay`, schedules the next dial on the injected clock, and stops
    for good on `stopTrying`. The delay before each dial comes from the
    `Backoff` (capped, jittered downwards), so the factory's own growth and
    jitter are off.
    """

    factor = 1.0
    jitter = 0.0

    def __init__(self, owner, clock, dial: DialConfig, rng: random.Random) -> None:
        super().__init__(owner, clock, dial.tls)
        self.backoff = dial.backoff
        self.rng = rng
        # Twisted infers int from its default; any number of seconds works.
        self.maxDelay = dial.backoff.maximum  # type: ignore[assignment]
        #: The next retry returns to a server that said it is restarting.
        self.prompt = False
        #: The delay before the dial that `retry` scheduled last.
        self.scheduled = 0.0
        self._retries_before_reset = 0

    def startedConnecting(self, connector) -> None:
        self.connector = connector
        self.owner.dialling()

    def clientConnectionFailed(self, connector, reason: Failure) -> None:
        self.owner.dial_failed(reason)

    def resetDelay(self) -> None:
        self._retries_before_reset = self.retries
        super().resetDelay()

    def refused(self) -> None:
        """The server did not take us after all: undo the reset (the loss counts as failed)."""
        self.retries = self._retries_before_reset

    def next_delay(self) -> float:
        """The next backoff delay; each call counts as one more failed attempt."""
        delay = self.backoff.delay(self.retries, self.rng)
        self.retries += 1
        return delay

    def retry(self, connector=None) -> None:
        retries = self.retries
        if self.prompt:
            self.delay = self.backoff.prompt_delay(self.rng)
        else:
            self.delay = self.backoff.delay(retries, self.rng)
        self.scheduled = self.delay
        super().retry(connector)
        if self.prompt:  # coming back to a restarting server is no failed attempt
            self.retries = retries
        self.prompt = False


class Redialer(PushReader):
    """Keeps one link to ``endpoint`` until `finish` is called.

    Subclasses fill in the hooks `dialling`, `made`, `ready`, `received`,
    `attempt_over`, `retrying` and `finished` (or take the server's raw lines by
    overriding `link_line`, calling `server_error` for each error line). ``outcome`` is
    None while running, then the reason it finished
    ("gave_up", "tls_failed", or whatever the subclass passed to `finish`).
    The dialling and the waiting in between are a `RedialFactory`'s.
    """

    __slots__ = (
        "endpoint",
        "clock",
        "dial",
        "rng",
        "link",
        "outcome",
        "detail",
        "started_at",
        "factory",
        "connector",
        "_ready_at",
        "_prompt",
        "_give_up_call",
    )

    def __init__(self, endpoint, clock, dial: DialConfig, rng: random.Random | None = None) -> None:
        self.endpoint = endpoint
        self.clock = clock
        self.dial = dial
        #: Draws the backoff's jitter (and subclasses' random choices); seeded in tests.
        self.rng = random.Random() if rng is None else rng
        self.link: ServerLink | None = None
        self.outcome: str | None = None
        #: A human explanation of the outcome, when there is more to say.
        self.detail = ""
        self.started_at: float | None = None
        self.factory = RedialFactory(self, clock, dial, self.rng)
        self.connector = EndpointConnector(endpoint, self.factory)
        #: When the current link became ready (None: not ready yet).
        self._ready_at: float | None = None
        #: The current link's server said it is going away after serving us.
        self._prompt = False
        self._give_up_call = None

    # ---- driving ----

    def start(self) -> None:
        self.started_at = self.clock.seconds()
        if self.dial.give_up:
            self._give_up_call = self.clock.callLater(self.dial.give_up, self._give_up)
        self.connector.connect()

    def finish(self, outcome: str, detail: str = "", abort: bool = False) -> None:
        """Stop for good; `finished` runs once the link (if any) is closed."""
        if self.outcome is not None:
            return
        self.outcome = outcome
        self.detail = detail
        if self._give_up_call is not None and self._give_up_call.active():
            self._give_up_call.cancel()
        self._give_up_call = None
        self.factory.stopTrying()  # no more dials; one under way is cancelled
        if self.link is not None:
            self.link.close(outcome, abort=abort)
        else:
            self.finished()

    def next_delay(self) -> float:
        """The next backoff delay; each call counts as one more failed attempt."""
        return self.factory.next_delay()

    def abandon_attempt(self) -> None:
        """Give up on the current dial or link (aborted); the next comes after the backoff."""
        if self.link is not None:
            self.link.close("timeout", abort=True)
        else:
            self.connector.disconnect()

    def dial_failed(self, reason: Failure) -> None:
        """The dial failed (from the factory)."""
        running = self.outcome is None
        self.attempt_over(None, reason)
        # An endpoint that connects only once the handshake is done (asyncio's)
        # fails the dial itself on a refused certificate.
        if running and self.outcome is None and not self._refused(reason):
            self._redial(describe(reason))

    def _refused(self, reason: Failure) -> bool:
        """If ``reason`` is the server's certificate being refused, finish (tls_failed)."""
        refused = verification_failure(reason, self.dial.ca)
        if refused is not None:
            self.finish("tls_failed", refused)
        return refused is not None

    def _redial(self, why: str, prompt: bool = False) -> None:
        self.factory.prompt = prompt
        self.factory.retry(self.connector)
        self.retrying(why, self.factory.scheduled)

    def _give_up(self) -> None:
        self._give_up_call = None
        self.finish("gave_up", f"no success within {self.dial.give_up:g} s", abort=True)

    # ---- from the link ----

    def link_made(self, link: ServerLink) -> None:
        self.link = link
        self.made(link)

    def link_ready(self, link: ServerLink) -> None:
        self.factory.resetDelay()  # the handshake is done: the server is really there
        self._ready_at = self.clock.seconds()
        self.ready(link)

    def link_push(self, link: ServerLink, push: frames.Push) -> None:
        if isinstance(push, frames.ErrorReply):
            self.server_error(push.code)
        self.received(link, push)

    def server_error(self, code: str) -> None:
        """The server sent ``error code``: a refusal counts as a failed attempt."""
        if code in _REFUSALS:
            if code == errors.SHUTTING_DOWN.code and self._served():
                self._prompt = True
            else:
                self.factory.refused()

    def _served(self) -> bool:
        """Whether the current link has been ready for at least the prompt delay."""
        if self._ready_at is None:
            return False
        return self.clock.seconds() - self._ready_at >= self.dial.backoff.prompt_ceiling

    def link_lost(self, link: ServerLink, reason: Failure) -> None:
        if link is self.link:
            self.link = None
        prompt, self._prompt, self._ready_at = self._prompt, False, None
        running = self.outcome is None
        self.attempt_over(link, reason)
        if not running:
            self.finished()
            return
        if self.outcome is not None:  # attempt_over finished the client
            return
        if not self._refused(reason):
            self._redial(describe_lost(link, reason), prompt)

    # ---- hooks ----

    def dialling(self) -> None:
        """A dial is about to start (the first, or a retry)."""

    def attempt_over(self, link: ServerLink | None, reason: Failure) -> None:
        """A dial failed (``link`` None) or a link ended, for ``reason``. Calling
        `finish` here ends the client instead of dialling again."""

    def made(self, link: ServerLink) -> None:
        """The TCP connection is up (the handshake may still be under way)."""

    def ready(self, link: ServerLink) -> None:
        """The link is ready: talk."""

    def received(self, link: ServerLink, push: frames.Push) -> None:
        """The server sent ``push``."""

    def retrying(self, why: str, delay: float) -> None:
        """The link failed or was lost for ``why``; the next dial is in ``delay`` seconds."""

    def finished(self) -> None:
        """Done for good (see ``outcome``); nothing is connected any more."""
