"""Stay connected: dial, and dial again with backoff, until the client is done.

Clients and servers have no start order: a client that finds no server, or
loses it, keeps redialling with capped exponential backoff and jitter. The
backoff is reset only when a link is *ready* (TLS handshake completed): a server
that accepts TCP and then fails every handshake must not be hammered at the
shortest delay. A server that answers ``server_full`` did not really take us
either, so that undoes the reset and the backoff keeps growing.

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
from twisted.internet import error
from twisted.python.failure import Failure

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


class Redialer(PushReader):
    """Keeps one link to ``endpoint`` until `finish` is called.

    Subclasses fill in the hooks `dialling`, `made`, `ready`, `received`,
    `attempt_over`, `retrying` and `finished` (or take the server's raw lines by
    overriding `link_line`, calling `server_error` for each error line). ``outcome`` is None while running, then the reason it finished
    ("gave_up", "tls_failed", or whatever the subclass passed to `finish`).
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
        "_attempt",
        "_attempt_before_ready",
        "_ready_at",
        "_prompt",
        "_dialing",
        "_redial_call",
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
        self._attempt = 0
        self._attempt_before_ready = 0
        #: When the current link became ready (None: not ready yet).
        self._ready_at: float | None = None
        #: The current link's server said it is going away after serving us.
        self._prompt = False
        self._dialing = None
        self._redial_call = None
        self._give_up_call = None

    # ---- driving ----

    def start(self) -> None:
        self.started_at = self.clock.seconds()
        if self.dial.give_up:
            self._give_up_call = self.clock.callLater(self.dial.give_up, self._give_up)
        self._connect()

    def finish(self, outcome: str, detail: str = "", abort: bool = False) -> None:
        """Stop for good; `finished` runs once the link (if any) is closed."""
        if self.outcome is not None:
            return
        self.outcome = outcome
        self.detail = detail
        for call in (self._give_up_call, self._redial_call):
            if call is not None and call.active():
                call.cancel()
        self._give_up_call = self._redial_call = None
        if self._dialing is not None:
            self._dialing.cancel()
        if self.link is not None:
            self.link.close(outcome, abort=abort)
        else:
            self.finished()

    def next_delay(self) -> float:
        """The next backoff delay; each call counts as one more failed attempt."""
        delay = self.dial.backoff.delay(self._attempt, self.rng)
        self._attempt += 1
        return delay

    def abandon_attempt(self) -> None:
        """Give up on the current dial or link (aborted); the next comes after the backoff."""
        if self.link is not None:
            self.link.close("timeout", abort=True)
        elif self._dialing is not None:
            self._dialing.cancel()

    def _connect(self) -> None:
        self._redial_call = None
        self.dialling()
        self._dialing = self.endpoint.connect(LinkFactory(self, self.clock, self.dial.tls))
        self._dialing.addCallbacks(self._dialled, self._dial_failed)

    def _dialled(self, link) -> None:
        self._dialing = None

    def _dial_failed(self, reason: Failure) -> None:
        self._dialing = None
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
        delay = self.dial.backoff.prompt_delay(self.rng) if prompt else self.next_delay()
        self.retrying(why, delay)
        self._redial_call = self.clock.callLater(delay, self._connect)

    def _give_up(self) -> None:
        self._give_up_call = None
        self.finish("gave_up", f"no success within {self.dial.give_up:g} s", abort=True)

    # ---- from the link ----

    def link_made(self, link: ServerLink) -> None:
        self.link = link
        self.made(link)

    def link_ready(self, link: ServerLink) -> None:
        self._attempt_before_ready = self._attempt
        self._attempt = 0
        self._ready_at = self.clock.seconds()
        self.ready(link)

    def link_push(self, link: ServerLink, push: frames.Push) -> None:
        if isinstance(push, frames.ErrorReply):
            self.server_error(push.code)
        self.received(link, push)

    def server_error(self, code: str) -> None:
        """The server sent ``error code``: a refusal undoes the backoff's reset."""
        if code in _REFUSALS:
            if code == errors.SHUTTING_DOWN.code and self._served():
                self._prompt = True
            else:
                self._attempt = self._attempt_before_ready

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
