"""The seed-004 relay client as a reusable state machine.

One `RelayClient` sends ``message TEXT`` and lives until ``ok TEXT`` comes back:

- every forwarded ``message Y`` is answered with ``ok Y``, after ``ok_delay``;
- no ``ok TEXT`` within ``timeout`` of connecting: disconnect, reconnect, resend;
- disconnected before ``ok TEXT`` (server restart, network): reconnect with
  backoff and send ``message TEXT`` again;
- ``no_recipient`` from the server: send again after a backoff delay;
- ``ok TEXT``: close the connection politely; the outcome is "acked".

It speaks the text protocol, so it works on the ``relay`` and ``nea`` profiles.
It prints nothing: what happens is reported to a `RelayObserver`, which one
program (nea-client, nea-loadtest) may share among any number of clients. The
clock and the endpoint are injected, so tests drive it with a `Clock` and a
`StringTransport`, without sockets.
"""

import random

import attrs

from nea.client.link import ServerLink
from nea.client.redial import DialConfig, Redialer
from nea.wire import errors, frames


@attrs.frozen
class RelayConfig:
    """Everything about relay clients that is not per client; share one value among many."""

    dial: DialConfig = DialConfig()
    #: Seconds from connecting until ``ok TEXT`` must have arrived; 0 means no limit.
    timeout: float = 30.0
    #: Bounds of the uniformly drawn delay before answering a forwarded message.
    ok_delay: tuple[float, float] = (0.0, 0.0)

    def __attrs_post_init__(self) -> None:
        low, high = self.ok_delay
        if not 0 <= low <= high:
            raise ValueError("ok_delay needs 0 <= low <= high")
        if self.timeout < 0:
            raise ValueError("timeout must not be negative")


class RelayObserver:
    """What a relay client reports. Override what you need; the defaults do nothing."""

    def on_connected(self, client: "RelayClient") -> None:
        """The link is ready and ``message TEXT`` was just sent (``client.sends`` counts them)."""

    def on_forwarded(self, client: "RelayClient", text: str) -> None:
        """The server forwarded ``message text``; ``ok text`` follows after the ok-delay."""

    def on_acked(self, client: "RelayClient") -> None:
        """``ok TEXT`` arrived (``client.acked_at - client.started_at`` is the latency)."""

    def on_retry(self, client: "RelayClient", why: str, delay: float) -> None:
        """The attempt failed for ``why``; the next one is in ``delay`` seconds."""

    def on_error(self, client: "RelayClient", error: frames.ErrorReply) -> None:
        """The server sent an error that needs no action (e.g. ``unexpected_ok``)."""

    def on_finished(self, client: "RelayClient") -> None:
        """The client is done and disconnected: ``client.outcome`` is "acked", "gave_up",
        "tls_failed" or "stopped"; ``client.detail`` may explain."""


_SILENT = RelayObserver()


class RelayClient(Redialer):
    """Sends ``message text`` until ``ok text`` comes back; see the module docstring.

    ``endpoint`` is any client endpoint (`nea.tls.client.client_endpoint`);
    ``config.dial.tls`` must say whether it is TLS. Call `start` once, and
    `stop` to abandon the relay early.
    """

    __slots__ = ("text", "config", "observer", "sends", "retries", "acked_at")

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
        #: How many failed attempts were followed by another.
        self.retries = 0
        self.acked_at: float | None = None

    def stop(self) -> None:
        self.finish("stopped", abort=True)

    # ---- Redialer hooks ----

    def made(self, link: ServerLink) -> None:
        if self.config.timeout:
            link.later(self.config.timeout, link.close, "timeout", True)

    def ready(self, link: ServerLink) -> None:
        self._send(link)
        self.observer.on_connected(self)

    def received(self, link: ServerLink, push: frames.Push) -> None:
        if isinstance(push, frames.AckPush) and push.text == self.text:
            self.acked_at = self.clock.seconds()
            self.observer.on_acked(self)
            self.finish("acked")
        elif isinstance(push, frames.RelayPush):
            self.observer.on_forwarded(self, push.text)
            low, high = self.config.ok_delay
            delay = low if low == high else self.rng.uniform(low, high)
            if delay > 0:
                link.later(delay, link.send, frames.Ack(push.text))
            else:
                link.send(frames.Ack(push.text))
        elif isinstance(push, frames.ErrorReply):
            if push.code == errors.NO_RECIPIENT.code:
                delay = self.next_delay()
                self._retry(errors.NO_RECIPIENT.code, delay)
                link.later(delay, self._send, link)
            else:
                self.observer.on_error(self, push)

    def retrying(self, why: str, delay: float) -> None:
        self._retry(why, delay)

    def finished(self) -> None:
        self.observer.on_finished(self)

    # ----

    def _send(self, link: ServerLink) -> None:
        self.sends += 1
        link.send(frames.Relay(self.text))

    def _retry(self, why: str, delay: float) -> None:
        self.retries += 1
        self.observer.on_retry(self, why, delay)
