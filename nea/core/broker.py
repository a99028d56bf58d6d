"""Acknowledged relays: ``message X`` goes to a random connection, ``ok X`` comes back.

Two tables, each owned by the side that holds the connection, so that when every
client has gone both are empty without any sweeping:

- ``waiting``: text -> the local waiters (connections, or HTTP requests) that sent
  ``message text`` and have not yet had ``ok text``. Dropped with the waiter.
- ``held``: local connection -> the deliveries it was sent and has not acked, each
  with the instance that originated it. When the connection leaves, every delivery
  it held is handed back to its origin, which draws a new target if anyone there
  still waits.

In a cluster the origin and the target may be different instances; everything
between them goes through the `nea.core.bus.Bus`.

Both sides are bounded by ``max_pending``: a waiter that already waits for that
many texts is refused another (``too_many_pending``), and a connection that holds
that many unacknowledged deliveries is not drawn as a target until it acks one.
So no client can make the tables grow beyond max-clients x max-pending entries.

A target that has not acked a delivery within ``ack_timeout`` seconds (a client
that never reads, or has hung) makes the delivery *expire*: it is handed back to
its origin to be drawn again, as if the target had left, and the target is not
drawn again until it acks something. Its late ``ok`` is still taken and confirmed
(a waiter already answered ignores it), so a slow client is never told it erred.
"""

import random
from collections import deque
from typing import Callable, Protocol as TypingProtocol

import attrs
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IDelayedCall, IReactorTime

from nea.core.bus import MAX_DELIVERY_ATTEMPTS, Bus
from nea.core.peer import Peer
from nea.core.registry import Registry
from nea.core.snapshot import RelayFigures
from nea.core.waits import Waits
from nea.wire import errors, frames


class Waiter(TypingProtocol):
    """Anything that can be told the outcome of its relay: a `Peer`, or an HTTP request."""

    def push(self, push: frames.Push) -> None: ...


class RelayTimings(TypingProtocol):
    """Hears when a text starts and stops being waited for on this instance (metrics time it)."""

    def relay_started(self, text: str) -> None: ...

    def relay_ended(self, text: str, acked: bool) -> None: ...


@attrs.define(slots=True, eq=False)
class Delivery:
    """One forward of ``text`` to ``target``, until the target acks it."""

    origin: str
    target: Peer
    text: str
    deadline: float
    acked: bool = False
    expired: bool = False


@attrs.define
class RelayCounts:
    requested: int = 0
    forwarded: int = 0
    acked: int = 0
    reforwarded: int = 0
    expired: int = 0
    unexpected_ok: int = 0
    no_recipient: int = 0


class RelayBroker:
    """The relay tables of one instance; see the module docstring.

    It is the bus's relay node (`nea.core.bus.RelayNode`): the bus calls
    `deliver`, `confirm` and `reforward` on it directly. ``reject(waiter, error,
    detail)`` answers with an error (the hub's, which counts it).
    `request` returns a Deferred that fires once, after the waiter was told, it
    waits for no relay any more (a client that ended its stream closes then).
    """

    def __init__(self, clock: IReactorTime, registry: Registry, bus: Bus, rng: random.Random,
                 reject: Callable[[Waiter, errors.ErrorCode, str], None],
                 max_pending: int = 1000, ack_timeout: float = 0) -> None:
        """``ack_timeout``: seconds a target has to ack a delivery (0: as long as it stays)."""
        self.clock = clock
        self.ack_timeout = ack_timeout
        self.registry = registry
        self.bus = bus
        self.rng = rng
        self.reject = reject
        self.max_pending = max_pending
        self.timings: list[RelayTimings] = []
        self.waiting: dict[str, list[Waiter]] = {}
        self._waits = Waits[Waiter, str]()
        self.held: dict[Peer, dict[str, deque[Delivery]]] = {}
        #: Unacknowledged deliveries per target, and the targets withdrawn from draws: for
        #: holding too many, or for letting one expire.
        self._held_count: dict[Peer, int] = {}
        self._saturated: set[Peer] = set()
        self._stalled: set[Peer] = set()
        #: Every delivery with its target, in deadline order (acked ones are skipped when
        #: reached): one timer for all of them, armed only while any is out.
        self._deadlines: deque[Delivery] = deque()
        self._expiry: IDelayedCall | None = None
        self.counts = RelayCounts()

    # ---- the originating side ----

    def request(self, waiter: Waiter, text: str) -> "Deferred[None] | None":
        """``waiter`` sent ``message text``: remember it and send the text on its way.

        Returns what fires once ``waiter`` waits for no relay (None: refused)."""
        self.counts.requested += 1
        waiters = self.waiting.get(text)
        if waiters is None or waiter not in waiters:
            if self._waits.count(waiter) >= self.max_pending:
                self.reject(waiter, errors.TOO_MANY_PENDING, f"limit is {self.max_pending}")
                return None
            if waiters is None:
                waiters = self.waiting[text] = []
                for timing in self.timings:
                    timing.relay_started(text)
            waiters.append(waiter)
        settled = self._waits.add(waiter, text)
        self._dispatch(text, attempt=0)
        return settled

    def _dispatch(self, text: str, attempt: int) -> None:
        if attempt >= MAX_DELIVERY_ATTEMPTS and len(self.registry.relay_capable):
            # The cluster's counts keep pointing at instances that have nobody; deliver locally.
            self.deliver(text, self.bus.instance_id, attempt)
            return
        instance = self.bus.pick_relay_instance(self.rng)
        if instance is None:
            self._fail(text)
        else:
            self.bus.deliver(instance, text, self.bus.instance_id, attempt)

    def _fail(self, text: str) -> None:
        self.counts.no_recipient += 1
        waiters = self._drop(text, acked=False)
        for waiter in waiters:
            self.reject(waiter, errors.NO_RECIPIENT, f"nobody to relay {text!r} to")
        self._settle(waiters)

    def confirm(self, text: str) -> None:
        """``ok text`` came back from a target: tell every local waiter, and forget them."""
        waiters = self._drop(text, acked=True)
        if waiters:
            self.counts.acked += 1
        push = frames.AckPush(text)
        for waiter in waiters:
            waiter.push(push)
        self._settle(waiters)

    def reforward(self, text: str, attempt: int) -> None:
        """A delivery of ``text`` failed; draw again if anyone here still waits for it."""
        if text in self.waiting:
            self.counts.reforwarded += 1
            self._dispatch(text, attempt)

    def _settle(self, waiters: list[Waiter]) -> None:
        for waiter in waiters:
            self._waits.settle(waiter)

    def _drop(self, text: str, acked: bool) -> list[Waiter]:
        waiters = self.waiting.pop(text, [])
        if not waiters:
            return waiters
        for timing in self.timings:
            timing.relay_ended(text, acked)
        for waiter in waiters:
            self._waits.discard(waiter, text)
        return waiters

    def forget_waiter(self, waiter: Waiter) -> None:
        """The waiter is gone: nobody will be told about its relays."""
        for text in self._waits.pop(waiter):
            waiters = self.waiting[text]
            waiters.remove(waiter)
            if not waiters:
                del self.waiting[text]
                for timing in self.timings:
                    timing.relay_ended(text, False)

    # ---- the delivering side ----

    def relay_weight(self) -> int:
        """Local connections a delivery may go to: this instance's weight in a draw."""
        return len(self.registry.relay_capable)

    def deliver(self, text: str, origin: str, attempt: int) -> None:
        """Forward ``message text`` to a local relay-capable connection, drawn uniformly."""
        if not len(self.registry.relay_capable):
            self.bus.reforward(origin, text, attempt + 1)
            return
        target = self.registry.relay_capable.choice(self.rng)
        deliveries = self.held.get(target)
        if deliveries is None:  # (setdefault would build a dict and a deque on every call)
            deliveries = self.held[target] = {}
        held = deliveries.get(text)
        if held is None:
            held = deliveries[text] = deque()
        delivery = Delivery(origin, target, text, self.clock.seconds() + self.ack_timeout)
        held.append(delivery)
        if self.ack_timeout:
            self._deadlines.append(delivery)
            if self._expiry is None:
                self._expiry = self.clock.callLater(self.ack_timeout, self._expire)
        count = self._held_count[target] = self._held_count.get(target, 0) + 1
        if count >= self.max_pending:
            self._saturated.add(target)
            self.registry.relay_capable.discard(target)
        self.counts.forwarded += 1
        target.push(frames.RelayPush(text))

    def _expire(self) -> None:
        """Hand back every delivery past its deadline; wake again at the next one's."""
        self._expiry = None
        now = self.clock.seconds()
        deadlines = self._deadlines
        while deadlines and deadlines[0].deadline <= now:
            delivery = deadlines.popleft()
            target = delivery.target
            if delivery.acked or target not in self.held:
                continue  # acked, or handed back when the target left
            delivery.expired = True
            self.counts.expired += 1
            if target not in self._stalled:
                self._stalled.add(target)
                self.registry.relay_capable.discard(target)
            self.bus.reforward(delivery.origin, delivery.text, 0)
        if deadlines:
            self._expiry = self.clock.callLater(deadlines[0].deadline - now, self._expire)

    def ack(self, peer: Peer, text: str) -> None:
        """``peer`` sent ``ok text``: it must hold that delivery; confirm it to its origin."""
        deliveries = self.held.get(peer)
        held = deliveries.get(text) if deliveries else None
        if not held:
            self.counts.unexpected_ok += 1
            self.reject(peer, errors.UNEXPECTED_OK, f"no 'message {text}' was forwarded to you")
            return
        delivery = held.popleft()
        delivery.acked = True
        if not held:
            del deliveries[text]
            if not deliveries:
                del self.held[peer]
        count = self._held_count[peer] - 1
        if count:
            self._held_count[peer] = count
        else:
            del self._held_count[peer]
        if peer in self._saturated or peer in self._stalled:
            if count < self.max_pending:
                self._saturated.discard(peer)
            self._stalled.discard(peer)  # it acks again
            if peer not in self._saturated:
                self.registry.relay_capable.add(peer)
        self.bus.confirm(delivery.origin, text)

    def forget_target(self, peer: Peer) -> None:
        """``peer`` left (or can ack no more): hand every delivery it held back to its origin."""
        self._saturated.discard(peer)
        self._stalled.discard(peer)
        self._held_count.pop(peer, None)
        for text, held in self.held.pop(peer, {}).items():
            for delivery in held:
                if not delivery.expired:  # (an expired one was handed back already)
                    self.bus.reforward(delivery.origin, text, 0)

    # ---- both ----

    def peer_left(self, peer: Peer) -> None:
        self.forget_waiter(peer)
        self.forget_target(peer)

    def stop(self) -> None:
        """No more expiries (the instance is stopping)."""
        if self._expiry is not None:
            self._expiry.cancel()
            self._expiry = None

    @property
    def empty(self) -> bool:
        """Nothing waited for and nothing held: the relay part of zero state."""
        return not self.waiting and not self.held

    def figures(self) -> RelayFigures:
        return RelayFigures(
            pending=len(self.waiting), in_flight=sum(self._held_count.values()),
            **attrs.asdict(self.counts),
        )
