"""The lane: the four verbs most lines carry, decided without a request value.

A relay client's lines are nearly all ``message X`` and ``ok X``, a service's and
its askers' ``ask`` and ``reply``. A line connection (`nea.server.connection`)
reads those itself and hands their parts here; everything else goes through
`nea.core.hub.Hub.handle` as a request value. The lane decides each verb as
`Hub.handle` decides its value: the same permission, the same broker call, the
same count and the same answer owed (what a connection that ended its stream
waits for before it closes). It only skips what the value costs: building it,
dispatching on its class, and the gate and handler wrapped around the broker.
"""

from collections.abc import Callable
from typing import Any

from twisted.internet.defer import Deferred

from nea.core.access import Access
from nea.core.broker import RelayBroker
from nea.core.peer import Peer
from nea.core.permissions import ask_target
from nea.core.requests import RequestBroker
from nea.wire import frames

#: What a request owes its connection: the hub keeps it (`nea.core.hub.Hub.owe`).
Owe = Callable[[Peer, Deferred], None]


class Lane:
    """``message``, ``ok``, ``ask`` and ``reply`` of line connections; see the module docstring."""

    __slots__ = ("_access", "_relays", "_requests", "_owe", "messages", "oks", "asks", "replies")

    def __init__(
        self, access: Access, relays: RelayBroker, requests: RequestBroker, owe: Owe
    ) -> None:
        self._access = access
        self._relays = relays
        self._requests = requests
        self._owe = owe
        #: Each verb taken here, counted with the hub's requests (`counts`).
        self.messages = self.oks = self.asks = self.replies = 0

    def message(self, peer: Peer, text: str) -> None:
        """``message text``: a `frames.Relay`."""
        self.messages += 1
        if self._access.allowed(peer, "relay"):
            owed = self._relays.request(peer, text)
            if owed is not None:
                self._owe(peer, owed)

    def ok(self, peer: Peer, text: str) -> None:
        """``ok text``: a `frames.Ack`."""
        self.oks += 1
        self._relays.ack(peer, text)

    def ask(self, peer: Peer, id: str, name: str | None, service: str | None, body: str) -> None:
        """``ask id name body`` or ``ask id @service body``: a `frames.Ask`."""
        self.asks += 1
        if self._access.allowed_target(peer, "ask", ask_target, name, service):
            owed = self._requests.ask(peer, id, name, service, body)
            if owed is not None:
                self._owe(peer, owed)

    def reply(self, peer: Peer, id: str, body: Any) -> None:
        """``reply id body``: a `frames.Reply`."""
        self.replies += 1
        self._requests.reply(peer, id, body)

    def counts(self) -> dict[type, int]:
        """How many of each request class the lane took."""
        return {
            frames.Relay: self.messages,
            frames.Ack: self.oks,
            frames.Ask: self.asks,
            frames.Reply: self.replies,
        }
