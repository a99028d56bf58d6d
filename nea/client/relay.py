"""The seed-004 relay client as a reusable state machine: nea-client's and nea-loadtest's.

One `RelayClient` sends ``message TEXT`` and lives until ``ok TEXT`` comes back:

- every forwarded ``message Y`` is answered with ``ok Y``, after a delay drawn
  from ``ok_delay``;
- no ``ok TEXT`` within ``timeout`` of dialling (connect and TLS handshake
  included): abort, reconnect with backoff, resend;
- disconnected before ``ok TEXT`` (server restart, network): reconnect with
  backoff and send ``message TEXT`` again;
- ``no_recipient`` or ``too_many_pending`` (nobody can take the relay, or this
  connection waits for too many answers; both may pass): send again on the same
  connection after a backoff delay;
- an error after which the server closes the connection (``server_full``,
  ``shutting_down``, ...): close, reconnect with backoff, resend;
- an error that says the relay can never succeed there (``not_in_profile``,
  ``empty_relay``, ``bad_utf8``, ``bad_usage``): stop, outcome "refused";
- any other error (``unexpected_ok`` for an ok the sender no longer waited
  for): reported, nothing changes;
- ``ok TEXT``: close the connection politely; the outcome is "acked".

With ``retries`` set, the client gives up (outcome "gave_up") instead of trying
a ``retries + 1``-th time, a resend on the same connection counting as a try.

It reads the text protocol's raw lines (no decoding into frames: a load test
runs thousands of these), so it works on the ``relay`` and ``nea`` profiles. It
prints nothing: what happens is reported to a `RelayObserver`, which one program
(nea-client, nea-loadtest) shares among any number of clients. The clock and the
endpoint are injected, so tests drive it with a `Clock` and a `StringTransport`,
without sockets.
"""

import random

import attrs
from twisted.python.failure import Failure

from nea.client.delays import Constant, Delay
from nea.client.link import ServerLink
from nea.client.redial import DialConfig, Redialer
from nea.wire import errors, frames

#: Sent again after a backoff, on the same connection.
RESEND = frozenset({errors.NO_RECIPIENT.code, errors.TOO_MANY_PENDING.code})
#: Our ``message TEXT`` can never be relayed on this listener: retrying is pointless.
REFUSED = frozenset(
    {
        errors.NOT_IN_PROFILE.code,
        errors.EMPTY_RELAY.code,
        errors.BAD_UTF8.code,
        errors.BAD_USAGE.code,
    }
)
#: After these the server closes the connection.
FATAL = frozenset(e.code for e in errors.ALL if e.fatal)

#: How an attempt (one dial) ended, as `RelayObserver.on_attempt_over` reports it.
ATTEMPT_ENDINGS = (
    "protocol",  # the client closed it after its own ``ok TEXT``: the only good ending
    "timeout",  # no ``ok TEXT`` within the timeout; the client aborted it
    "lost",  # the server or the network closed it before ``ok TEXT``
    "error",  # an error line (server_full, ...) or an over-long line ended it
    "connect_failed",  # never ready: refused, connect timeout, TLS handshake failure
)


@attrs.frozen
class RelayConfig:
    """Everything about relay clients that is not per client; share one value among many."""

    dial: DialConfig = DialConfig()
    #: Seconds from dialling until ``ok TEXT`` must have arrived; 0 means no limit.
    timeout: float = 30.0
    #: The delay before answering a forwarded message (`nea.client.delays`).
    ok_delay: Delay = Constant(0.0)
    #: Tries after the first before giving up; None means no limit.
    retries: int | None = None

    def __attrs_post_init__(self) -> None:
        if self.timeout < 0:
            raise ValueError("timeout must not be negative")
        if self.retries is not None and self.retries < 0:
            raise ValueError("retries must not be negative")


class RelayObserver:
    """What a relay client reports. Override what you need; the defaults do nothing."""

    def on_connected(self, client: "RelayClient") -> None:
        """The link is ready and ``message TEXT`` was just sent (``client.sends`` counts them)."""

    def on_forwarded(self, client: "RelayClient", text: str) -> None:
        """The server forwarded ``message text``; ``ok text`` follows after the ok-delay."""

    def on_acked(self, client: "RelayClient") -> None:
        """``ok TEXT`` arrived (``client.acked_at - client.started_at`` is the latency)."""

    def on_retry(self, client: "RelayClient", why: str, delay: float) -> None:
        """The try failed for ``why``; the next one is in ``delay`` seconds."""

    def on_error(self, client: "RelayClient", error: frames.ErrorReply) -> None:
        """The server sent an error line (what follows is reported on its own)."""

    def on_attempt_over(self, client: "RelayClient", ending: str) -> None:
        """A dial or its connection ended as ``ending`` (one of `ATTEMPT_ENDINGS`)."""

    def on_finished(self, client: "RelayClient") -> None:
        """The client is done and disconnected: ``client.outcome`` is "acked", "gave_up",
        "refused", "tls_failed" or "stopped"; ``client.detail`` may explain."""


_SILENT = RelayObserver()


class RelayClient(Redialer):
    """Sends ``message text`` until ``ok text`` comes back; see the module docstring.

    ``endpoint`` is any client endpoint (`nea.tls.client.client_endpoint`);
    ``config.dial.tls`` must say whether it is TLS. Call `start` once, and
    `stop` to abandon the relay early.
    """

    __slots__ = (
        "text",
        "config",
        "observer",
        "sends",
        "retries",
        "dials",
        "forwarded",
        "oks_sent",
        "unexpected",
        "dialled_at",
        "sent_at",
        "acked_at",
        "_message",
        "_own_ok",
        "_timer",
        "_timed_out",
        "_error_closes",
    )

    def __init__(
        self,
        text: str,
        endpoint,
        clock,
        config: RelayConfig = RelayConfig(),
        observer: RelayObserver = _SILENT,
        rng: random.Random | None = None,
    ) -> None:
        if not text or "\n" in text or "\r" in text:
            raise ValueError("a relay text is one non-empty line")
        super().__init__(endpoint, clock, config.dial, rng)
        self.text = text
        self.config = config
        self.observer = observer
        #: How many times ``message TEXT`` was sent.
        self.sends = 0
        #: How many failed tries were followed by another.
        self.retries = 0
        #: Dials made, ``forwarded`` messages received, ``ok`` answers sent, and
        #: lines that are none of the protocol's (dates are).
        self.dials = self.forwarded = self.oks_sent = self.unexpected = 0
        self.dialled_at = self.sent_at = 0.0
        self.acked_at: float | None = None
        self._message = f"message {text}\n".encode()
        self._own_ok = f"ok {text}".encode()
        self._timer = None
        self._timed_out = False
        #: The server sent an error after which it closes the connection.
        self._error_closes = False

    def stop(self) -> None:
        self.finish("stopped", abort=True)

    # ---- Redialer hooks ----

    def dialling(self) -> None:
        self.dials += 1
        self.dialled_at = self.clock.seconds()
        self._timed_out = self._error_closes = False
        if self.config.timeout:
            self._timer = self.clock.callLater(self.config.timeout, self._time_out)

    def ready(self, link: ServerLink) -> None:
        self._send(link)
        self.observer.on_connected(self)

    def link_line(self, link: ServerLink, line: bytes) -> None:
        if line.startswith(b"message "):
            self.forwarded += 1
            self.observer.on_forwarded(self, line[8:].decode("utf-8", "replace"))
            ok = b"ok " + line[8:] + b"\n"
            delay = self.config.ok_delay.draw(self.rng)
            if delay > 0:
                link.later(delay, self._answer, link, ok)
            else:
                self._answer(link, ok)
        elif line == self._own_ok:
            self.acked_at = self.clock.seconds()
            self.observer.on_acked(self)
            self.finish("acked")
        elif line.startswith(b"error "):
            self._error(link, line)
        elif not _is_date(line):
            self.unexpected += 1

    def attempt_over(self, link: ServerLink | None, reason: Failure) -> None:
        if self._timer is not None:
            if self._timer.active():
                self._timer.cancel()
            self._timer = None
        self.observer.on_attempt_over(self, self._ending(link))
        if self.outcome is None and self._out_of_tries():
            self.finish("gave_up", f"no ok after {self.retries + 1} tries")

    def retrying(self, why: str, delay: float) -> None:
        self._retry(why, delay)

    def finished(self) -> None:
        self.observer.on_finished(self)

    # ----

    def _ending(self, link: ServerLink | None) -> str:
        if link is None:
            return "timeout" if self._timed_out else "connect_failed"
        because = link.closed_because
        if because == "acked":
            return "protocol"
        if because == "timeout":
            return "timeout"
        if because is not None or self._error_closes:
            return "error"
        return "lost" if link.ready else "connect_failed"

    def _error(self, link: ServerLink, line: bytes) -> None:
        _, code, message = (line.decode("utf-8", "replace") + " ").split(" ", 2)
        message = message[:-1]
        self.server_error(code)
        self.observer.on_error(self, frames.ErrorReply(code, message))
        if code in RESEND:
            if self._out_of_tries():
                self.finish("gave_up", f"[{code}] after {self.retries + 1} tries", abort=True)
                return
            delay = self.next_delay()
            self._retry(code, delay)
            link.later(delay, self._send, link)
        elif code in REFUSED:
            self.finish("refused", f"[{code}] {message}", abort=True)
        elif code in FATAL:
            self._error_closes = True
            link.close(code)

    def _out_of_tries(self) -> bool:
        return self.config.retries is not None and self.retries >= self.config.retries

    def _time_out(self) -> None:
        self._timer = None
        self._timed_out = True
        self.abandon_attempt()

    def _send(self, link: ServerLink) -> None:
        self.sends += 1
        self.sent_at = self.clock.seconds()
        link.send_line(self._message)

    def _answer(self, link: ServerLink, ok: bytes) -> None:
        self.oks_sent += 1
        link.send_line(ok)

    def _retry(self, why: str, delay: float) -> None:
        self.retries += 1
        self.observer.on_retry(self, why, delay)


def _is_date(line: bytes) -> bool:
    """A date push (``YYYY-MM-DD``), which the ``nea`` profile sends every client."""
    return len(line) == 10 and line[4:5] == b"-" and line[7:8] == b"-"
