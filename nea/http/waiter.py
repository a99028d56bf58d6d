"""``POST /relay``: an HTTP request that waits, like a client, for the ``ok`` of its ``message``."""

from twisted.internet import defer
from twisted.internet.interfaces import IReactorTime
from twisted.web import http

from nea.core.hub import Hub
from nea.http.jsonapi import ApiError
from nea.wire import frames
from nea.wire.codec import LanePush


class HTTPWaiter:
    """A `nea.core.broker.Waiter` for one HTTP request (a relay or an ask): it settles a
    Deferred with the first push it is sent."""

    def __init__(self) -> None:
        self.outcome: defer.Deferred = defer.Deferred()

    def push(self, push: frames.Push) -> None:
        if not self.outcome.called:
            self.outcome.callback(push)

    def push_parts(self, kind: LanePush, *parts) -> None:
        self.push(kind(*parts))

    def close(self) -> None:
        """Nothing to close: the request is answered with the push it was sent."""


def relay(hub: Hub, clock: IReactorTime, text: str, timeout: float) -> defer.Deferred:
    """Relay ``text``; fires with the answer body, or fails with a 503/504 `ApiError`.

    Cancelling the result (the HTTP client went away) withdraws the waiter, as
    the timeout does, so the hub keeps no state for a request nobody waits on.
    """
    waiter = HTTPWaiter()
    started = clock.seconds()

    def settled(push: frames.Push) -> dict:
        if isinstance(push, frames.AckPush):
            return {"text": text, "acked": True, "seconds": round(clock.seconds() - started, 6)}
        # The broker's only error for a waiter is no_recipient: nobody to relay to.
        assert isinstance(push, frames.ErrorReply)
        raise ApiError(http.SERVICE_UNAVAILABLE, push.code, push.message)

    def gave_up(failure):
        hub.forget(waiter)
        failure.trap(defer.TimeoutError)
        raise ApiError(
            http.GATEWAY_TIMEOUT, "relay_timeout", f"no 'ok {text}' came back within {timeout:g} s"
        )

    waiter.outcome.addTimeout(timeout, clock)
    waiter.outcome.addCallbacks(settled, gave_up)
    hub.relay(waiter, text)
    return waiter.outcome
