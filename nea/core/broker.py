"""Acknowledged relays: ``message X`` goes to a random connection, ``ok X`` comes back.

Two tables, each owned by the side that holds the connection, so that when every
client has gone both are empty without any sweeping:

- ``waiting``: relay id -> the relay of a local waiter (a connection, or an HTTP
  request) that sent ``message text`` and has not yet had ``ok text``. Dropped
  with the waiter.
- ``held``: local connection -> the deliveries it was sent and has not acked, each
  with the instance and relay id it came from. When the connection leaves, every
  delivery it held is handed back to its origin, which draws a new target if that
  relay is still waited for.

Each ``message X`` is a relay of its own, with an id its origin gives it: the
``ok X`` of a target answers only the relay whose delivery that target was given.
So two senders of the same text each wait for their own recipient, and nobody
completes another's relay by relaying the same text and acking it themselves.

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

A target that has never sent a byte (so never acked either) gets
``first_ack_timeout`` instead (when shorter): a connection that holds a slot but
does not take part (a squatter, an idle client) is found out after one short wait
and withdrawn, so with many of them connected a relay does not travel from idle
target to idle target for ``ack_timeout`` each. A client that has said anything
(a seed-004 client's own ``message`` comes first) has ``ack_timeout``, so a busy
server's slow first acks do not all expire; and every target that acks stays in
the draw: relays are uniform over the targets that answer.
"""

import itertools
import random
import secrets
from collections import deque
from collections.abc import Callable
from typing import Protocol as TypingProtocol

import attrs
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorTime

from nea.core.bus import MAX_DELIVERY_ATTEMPTS, Bus
from nea.core.deadlines import Deadlines
from nea.core.dispatch import Handler
from nea.core.peer import Peer
from nea.core.registry import Registry
from nea.core.snapshot import RelayFigures
from nea.core.waits import Waits
from nea.wire import errors, frames
from nea.wire.codec import LanePush


class Waiter(TypingProtocol):
    """Anything that can be told the outcome of its relay or ask: a `Peer`, or an HTTP
    request. ``close`` ends it after a fatal error (an HTTP request has had its answer)."""

    def push(self, push: frames.Push) -> None: ...

    def push_parts(self, kind: LanePush, *parts) -> None:
        """Push ``kind(*parts)``: the lane's pushes, the value built only if needed."""

    def close(self) -> None: ...


class RelayTimings(TypingProtocol):
    """Hears when a relay (by its id) starts and stops being waited for on this instance
    (metrics time it)."""

    def relay_started(self, relay: str) -> None: ...

    def relay_ended(self, relay: str, acked: bool) -> None: ...


@attrs.define(slots=True, eq=False)
class Delivery:
    """One forward of ``text`` (relay ``relay`` of ``origin``) to ``target``, until acked;
    its own deadline's key."""

    origin: str
    relay: str
    target: Peer
    text: str
    deadline: float
    #: Its deadline is the first-ack one (its target had never sent a byte).
    first: bool = False
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

    def __init__(
        self,
        clock: IReactorTime,
        registry: Registry,
        bus: Bus,
        rng: random.Random,
        reject: Callable[[Waiter, errors.ErrorCode, str], None],
        max_pending: int = 1000,
        ack_timeout: float = 0,
        first_ack_timeout: float = 0,
    ) -> None:
        """``ack_timeout``: seconds a target has to ack a delivery (0: as long as it stays);
        ``first_ack_timeout``: as long, for a target that has never sent a byte (0: the
        same)."""
        self.clock = clock
        self.ack_timeout = ack_timeout
        self.first_ack_timeout = first_ack_timeout
        self.registry = registry
        self.bus = bus
        self.rng = rng
        self.reject = reject
        self.max_pending = max_pending
        self.timings: list[RelayTimings] = []
        #: Relay ids are unique per run of this instance: a late ok from a target that
        #: was given a delivery by an earlier run cannot answer a relay of this one.
        self._prefix = f"{secrets.token_hex(4)}."
        self._ids = itertools.count(1)
        #: Relay id -> (its waiter, its text).
        self.waiting: dict[str, tuple[Waiter, str]] = {}
        self._waits = Waits[Waiter, str]()
        #: Per target and text: its one delivery, or (rarely: the same text drawn to the
        #: same target again before its ok) a deque of them in order.
        self.held: dict[Peer, dict[str, Delivery | deque[Delivery]]] = {}
        #: Unacknowledged deliveries per target, and the targets withdrawn from draws: for
        #: holding too many, or for letting one expire.
        self._held_count: dict[Peer, int] = {}
        self._saturated: set[Peer] = set()
        self._stalled: set[Peer] = set()
        #: Every unacknowledged delivery's deadline, on one timer (the shorter first-ack
        #: deadlines come out of order: `Deadlines` keeps those apart).
        self._deadlines = Deadlines[Delivery](clock, self._expired)
        self.counts = RelayCounts()

    def handlers(self) -> dict[type, Handler]:
        """``message X`` and ``ok X`` (`nea.core.dispatch`)."""
        return {
            frames.Relay: lambda peer, r: self.request(peer, r.text),
            frames.Ack: lambda peer, r: self.ack(peer, r.text),
        }

    # ---- the originating side ----

    def request(self, waiter: Waiter, text: str) -> "Deferred[None] | None":
        """``waiter`` sent ``message text``: remember it and send the text on its way.

        Returns what fires once ``waiter`` waits for no relay, if it waited for none
        before (None: refused, or it waited already and was given that then)."""
        self.counts.requested += 1
        relay = f"{self._prefix}{next(self._ids)}"
        settled = self._waits.add(waiter, relay, self.max_pending)
        if settled is False:
            self.reject(waiter, errors.TOO_MANY_PENDING, f"limit is {self.max_pending}")
            return None
        self.waiting[relay] = (waiter, text)
        for timing in self.timings:
            timing.relay_started(relay)
        self._dispatch(relay, text, 0)
        return settled

    def _dispatch(self, relay: str, text: str, attempt: int) -> None:
        here = self.bus.instance_id
        if attempt >= MAX_DELIVERY_ATTEMPTS and len(self.registry.relay_capable):
            # The cluster's counts keep pointing at instances that have nobody; deliver locally.
            self.deliver(text, here, attempt, relay)
            return
        instance = self.bus.pick_relay_instance(self.rng)
        if instance is None:
            self._fail(relay)
        else:
            self.bus.deliver(instance, text, here, attempt, relay)

    def _fail(self, relay: str) -> None:
        self.counts.no_recipient += 1
        dropped = self._drop(relay, False)
        assert dropped is not None  # (only a relay still waited for is dispatched)
        waiter, text = dropped
        self.reject(waiter, errors.NO_RECIPIENT, f"nobody to relay {text!r} to")
        self._waits.done(waiter, relay)

    def confirm(self, relay: str) -> None:
        """The target of ``relay`` acked it: tell its waiter, and forget the relay."""
        dropped = self._drop(relay, True)
        if dropped is None:
            return  # its waiter left, or a late ok of a delivery drawn again
        waiter, text = dropped
        self.counts.acked += 1
        waiter.push_parts(frames.AckPush, text)
        self._waits.done(waiter, relay)

    def reforward(self, relay: str, attempt: int) -> None:
        """A delivery of ``relay`` failed; draw again if it is still waited for."""
        waited = self.waiting.get(relay)
        if waited is not None:
            self.counts.reforwarded += 1
            self._dispatch(relay, waited[1], attempt)

    def _drop(self, relay: str, acked: bool) -> tuple[Waiter, str] | None:
        """Forget ``relay`` (None: it was not waited for); its waiter still waits for it
        until told (`Waits.done`)."""
        waited = self.waiting.pop(relay, None)
        if waited is not None:
            for timing in self.timings:
                timing.relay_ended(relay, acked)
        return waited

    def forget_waiter(self, waiter: Waiter) -> None:
        """The waiter is gone: nobody will be told about its relays."""
        for relay in self._waits.pop(waiter):
            del self.waiting[relay]
            for timing in self.timings:
                timing.relay_ended(relay, False)

    # ---- the delivering side ----

    def relay_weight(self) -> int:
        """Local connections a delivery may go to: this instance's weight in a draw."""
        return len(self.registry.relay_capable)

    def deliver(self, text: str, origin: str, attempt: int, relay: str) -> None:
        """Forward ``message text`` to a local relay-capable connection, drawn uniformly."""
        target = self.registry.relay_capable.choice(self.rng)
        if target is None:
            self.bus.reforward(origin, relay, attempt + 1)
            return
        timeout = self.ack_timeout
        first = bool(timeout) and not target.bytes_in and 0 < self.first_ack_timeout < timeout
        if first:
            timeout = self.first_ack_timeout
        delivery = Delivery(origin, relay, target, text, self.clock.seconds() + timeout, first)
        deliveries = self.held.get(target)
        if deliveries is None:
            self.held[target] = {text: delivery}
        else:
            earlier = deliveries.get(text)
            if earlier is None:
                deliveries[text] = delivery
            elif isinstance(earlier, Delivery):
                deliveries[text] = deque((earlier, delivery))
            else:
                earlier.append(delivery)
        if timeout:
            self._deadlines.add(delivery, delivery.deadline)
        count = self._held_count[target] = self._held_count.get(target, 0) + 1
        if count >= self.max_pending:
            self._saturated.add(target)
            self.registry.relay_capable.discard(target)
        self.counts.forwarded += 1
        target.push_parts(frames.RelayPush, text)

    def _expired(self, delivery: Delivery) -> None:
        """``delivery`` is past its deadline: hand it back to be drawn again."""
        target = delivery.target
        capable = self.registry.relay_capable
        if delivery.first and len(capable) == 1 and target in capable:
            # The only target here (so no squatter keeps others from relays): a newcomer
            # that acks slowly keeps it until the full deadline, as it always did.
            delivery.first = False
            delivery.deadline += self.ack_timeout - self.first_ack_timeout
            self._deadlines.add(delivery, delivery.deadline)
            return
        delivery.expired = True
        self.counts.expired += 1
        if target not in self._stalled:
            self._stalled.add(target)
            self.registry.relay_capable.discard(target)
        self.bus.reforward(delivery.origin, delivery.relay, 0)

    def ack(self, peer: Peer, text: str) -> None:
        """``peer`` sent ``ok text``: it must hold that delivery; confirm it to its origin."""
        deliveries = self.held.get(peer)
        held = deliveries.get(text) if deliveries is not None else None
        if held is None:
            self.counts.unexpected_ok += 1
            self.reject(peer, errors.UNEXPECTED_OK, f"no 'message {text}' was forwarded to you")
            return
        assert deliveries is not None  # (held came from it)
        if isinstance(held, Delivery):
            delivery = held
            del deliveries[text]
        else:
            delivery = held.popleft()
            if not held:
                del deliveries[text]
        if not deliveries:
            del self.held[peer]
        self._deadlines.discard(delivery)
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
        self.bus.confirm(delivery.origin, delivery.relay)

    def forget_target(self, peer: Peer) -> None:
        """``peer`` left (or can ack no more): hand every delivery it held back to its origin."""
        self._saturated.discard(peer)
        self._stalled.discard(peer)
        self._held_count.pop(peer, None)
        for held in self.held.pop(peer, {}).values():
            for delivery in (held,) if isinstance(held, Delivery) else held:
                if not delivery.expired:  # (an expired one was handed back already)
                    self._deadlines.discard(delivery)
                    self.bus.reforward(delivery.origin, delivery.relay, 0)

    # ---- both ----

    def peer_left(self, peer: Peer) -> None:
        self.forget_waiter(peer)
        self.forget_target(peer)

    def stop(self) -> None:
        """No more expiries (the instance is stopping)."""
        self._deadlines.clear()

    @property
    def empty(self) -> bool:
        """Nothing waited for and nothing held: the relay part of zero state."""
        return not self.waiting and not self.held

    def figures(self) -> RelayFigures:
        return RelayFigures(
            pending=len(self.waiting),
            in_flight=sum(self._held_count.values()),
            **attrs.asdict(self.counts),
        )
