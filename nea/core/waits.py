"""What each waiter waits for, and a Deferred that fires when it waits for nothing.

The relay and request brokers keep their waiters here. A hub handler returns the
Deferred `add` gives it, once each time a waiter starts waiting, like any other
answer still owed (`nea.core.hub.Hub.handle`), so a connection that ended its
stream closes only once its relays and asks are answered, by the same rule as
every other kind of answer.
"""

from typing import Generic, Literal, TypeVar

from twisted.internet.defer import Deferred

#: A waiter, and what it waits for: both are dict keys (hashable).
W = TypeVar("W")
K = TypeVar("K")


class Waits(Generic[W, K]):
    """Waiters and the keys (texts, request ids) each waits for.

    The broker calls `done` once it has told the waiter, so that its answer is
    written before its Deferred fires and anything closes the waiter.
    """

    __slots__ = ("_keys", "_settled")

    def __init__(self) -> None:
        self._keys: dict[W, set[K]] = {}
        self._settled: dict[W, Deferred[None]] = {}

    def add(self, waiter: W, key: K, limit: int) -> "Deferred[None] | None | Literal[False]":
        """``waiter`` waits for ``key`` too, unless it waits for ``limit`` (at least 1) keys
        already: False. Else the Deferred that fires once it waits for nothing, if it
        waited for nothing before; None if it waited already (its Deferred was given then)."""
        keys = self._keys.get(waiter)
        if keys is None:
            self._keys[waiter] = {key}
            settled = self._settled[waiter] = Deferred()
            return settled
        if len(keys) >= limit:
            return False
        keys.add(key)
        return None

    def keys(self, waiter: W) -> frozenset[K]:
        return frozenset(self._keys.get(waiter, ()))

    def done(self, waiter: W, key: K) -> None:
        """``waiter`` has been told about ``key``: fire its Deferred if that was its last."""
        keys = self._keys.get(waiter)
        if keys is not None:
            keys.discard(key)
            if keys:
                return
            del self._keys[waiter]
        self._settle(waiter)

    def pop(self, waiter: W) -> set[K]:
        """Forget ``waiter`` (it is gone) and settle it; what it waited for."""
        keys = self._keys.pop(waiter, set())
        self._settle(waiter)
        return keys

    def _settle(self, waiter: W) -> None:
        settled = self._settled.pop(waiter, None)
        if settled is not None:
            settled.callback(None)

    def __contains__(self, waiter: object) -> bool:
        return waiter in self._keys
