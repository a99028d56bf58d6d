"""Which handler decides each request, and the contract every handler keeps.

Each feature of the core names the requests it decides, in the module that owns
it: its ``handlers()`` returns ``{request class: handler}``. A handler is called
as ``handler(peer, request)``; it answers at once (and returns None), or returns
the Deferred of the work that will answer (a store read, an awaited ack or
reply). The hub keeps that Deferred per connection (`nea.core.hub.Hub.handle`),
so a connection that ended its stream closes only once it is owed nothing.
"""

from collections.abc import Callable, Iterable, Mapping
from typing import Any, Protocol

from twisted.internet.defer import Deferred

from nea.core.peer import Peer
from nea.wire import frames
from nea.wire.forms import REQUESTS

Handler = Callable[[Peer, Any], "Deferred | None"]


class Feature(Protocol):
    """A part of the core that decides some requests."""

    def handlers(self) -> Mapping[type, Handler]: ...


def table(features: Iterable[Feature]) -> dict[type, Handler]:
    """The handler of every request class, from ``features``: a class claimed twice, or a
    declared request that none decides, is a mistake found when the hub is built."""
    handlers: dict[type, Handler] = {}
    for feature in features:
        for kind, handler in feature.handlers().items():
            if kind in handlers:
                raise ValueError(f"{kind.__name__} has two handlers")
            handlers[kind] = handler
    missing = {*REQUESTS, frames.Invalid} - handlers.keys()
    if missing:
        raise ValueError(f"no handler for {', '.join(sorted(k.__name__ for k in missing))}")
    return handlers
