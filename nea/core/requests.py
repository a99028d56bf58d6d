"""Addressed requests: to a registered name, or to one member of a service.

A connection registers a name (``register NAME``) or joins services (``serve
SERVICE``); an asker (a connection's ``ask``, or ``POST /clients/{name}/requests``)
sends a body to a name or a service and waits for the one reply. Each step has
one name, the same on the bus, in the envelope and here:

==============  ==================================================================
``ask``         a waiter asks a name or a service (the origin keeps the ask)
``offer``       the request goes to an instance, which pushes ``request ID BODY``
                to the named connection, or to a member drawn uniformly
``reply``       that connection answers ``reply ID BODY``
``answer``      the reply goes back to the origin, which tells the asker
``refuse``      the target's instance cannot take it, or its client left before
                replying: for a name the asker is told (``client_gone``: a request
                to a name is never sent twice); for a service the origin draws
                another member
``claim``       a registration takes its name over everywhere else in the cluster
==============  ==================================================================

State, each table owned by the side that holds the connection, so that when
every client has gone all are empty without sweeping:

- ``asks``: request id -> the ask of a local waiter, until answered, failed or
  timed out (each ask has a deadline on the clock), or until its waiter leaves.
  A waiter may have ``max_pending`` asks at once (``too_many_pending``).
- ``held``: local connection -> the requests pushed to it and not yet replied to,
  each with its origin; dropped at the request's deadline, so a client that never
  replies holds nothing for long. Bounded by ``max_pending`` per connection.
- ``names`` and ``members``: who is addressable here; a connection has one name
  at a time (registering another releases the first) and at most
  `MAX_SERVICES` services, so neither grows beyond the connections.

A connection that left a request unanswered for the whole default timeout (a
hung client) is withdrawn from every service it serves (``stalled``): it is drawn
for none, and its instance's weight in the cluster's draw drops by it, until it
replies again (a late reply counts). So a hung member does not keep its share of
the requests, each waiting the whole timeout, as a relay target that misses its
deadline is not drawn either. A shorter deadline an asker chose does not count:
an asker cannot set healthy members aside by asking with a timeout no client
could meet.
"""

import itertools
import random
from collections.abc import Callable
from typing import Any

import attrs
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger

from nea.core.bus import Bus
from nea.core.deadlines import Deadlines
from nea.core.dispatch import Handler
from nea.core.peer import Peer
from nea.core.registry import IndexedSet
from nea.core.snapshot import RequestFigures
from nea.core.waits import Waits
from nea.wire import errors, frames

log = Logger()

#: Services one connection may serve at once.
MAX_SERVICES = 16
#: Instances a request to a service may be offered to before the asker is told ``no_member``.
MAX_REQUEST_ATTEMPTS = 16

#: ``refuse`` codes that send a request to a service to another member rather than fail it:
#: its member left before replying, or the instance drawn had no member (any more).
MEMBER_GONE = "member_gone"
REDRAW = (MEMBER_GONE, errors.NO_MEMBER.code)
#: What a ``refuse`` code tells the asker otherwise.
_FAILURES = {
    e.code: e
    for e in (errors.CLIENT_GONE, errors.NO_SUCH_CLIENT, errors.NO_MEMBER, errors.TOO_MANY_PENDING)
}


@attrs.frozen
class Offer:
    """A request on its way to the instance that pushes it to a client.

    ``id`` is unique in the cluster and is what the client sees; exactly one of
    ``name`` and ``service`` is set; ``timeout``: seconds the origin still waits.
    """

    id: str
    origin: str
    name: str | None
    service: str | None
    body: object = attrs.field(eq=True, hash=False)
    timeout: float = attrs.field(converter=float)


#: What an ask that has skipped no instance passes as ``skip``.
_NO_SKIP: frozenset[str] = frozenset()


@attrs.define(eq=False)
class _Ask:
    asker: Any
    ref: str
    name: str | None
    service: str | None
    body: Any
    timeout: float
    #: When it times out: ``timeout`` after it was asked.
    deadline: float
    #: Where it was offered last (an answer or refusal from elsewhere is stale).
    instance: str | None = None
    attempts: int = 0
    #: Instances that had no member of the service when offered it (None: none yet).
    skip: set[str] | None = None
    #: Its own deadline is set; until then it is pushed here, and its held deadline is it.
    timed: bool = False


@attrs.define(eq=False)
class _Held:
    """A request pushed to ``target``, until it replies; its own deadline's key."""

    rid: str
    target: Peer
    origin: str
    service: str | None
    #: The origin gave it the whole default timeout (a miss stalls the member).
    full: bool


@attrs.define
class RequestCounts:
    asked: int = 0
    offered: int = 0
    replied: int = 0
    answered: int = 0
    redrawn: int = 0
    failed: int = 0
    timed_out: int = 0
    unexpected_reply: int = 0
    taken_over: int = 0


class RequestBroker:
    """The request tables of one instance; see the module docstring.

    It is the bus's request node (`nea.core.bus.RequestNode`). ``reject(waiter,
    error, detail, id)`` answers with an error (the hub's, which counts it);
    `ask` returns a Deferred that fires once the asker's last ask is answered. Who
    may register what is decided before (`nea.core.access`).
    """

    def __init__(
        self,
        clock: IReactorTime,
        bus: Bus,
        rng: random.Random,
        reject: Callable[..., None],
        max_pending: int = 1000,
        timeout: float = 10.0,
    ) -> None:
        self.clock = clock
        self.bus = bus
        #: This instance, as the bus names it (an origin, and where an offer goes).
        self.here = bus.instance_id
        self.rng = rng
        self.reject = reject
        self.max_pending = max_pending
        self.timeout = timeout
        # Request ids are unique in the cluster: a random prefix per run, then a count.
        self._prefix = f"{rng.getrandbits(48):012x}."
        self._ids = itertools.count(1)
        self.asks: dict[str, _Ask] = {}
        self._asks_of = Waits[Any, str]()
        self.held: dict[Peer, dict[str, _Held]] = {}
        #: The asks' and the held requests' deadlines, each on one timer.
        self._ask_deadlines = Deadlines[str](clock, self._ask_due)
        self._held_deadlines = Deadlines[_Held](clock, self._held_due)
        #: name -> (connection, registration time), and each connection's name.
        self.names: dict[str, tuple[Peer, float]] = {}
        self._name_of: dict[Peer, str] = {}
        self.members: dict[str, IndexedSet[Peer]] = {}
        self._services_of: dict[Peer, set[str]] = {}
        #: Members withdrawn from their services for missing a deadline, until they reply.
        self._stalled: set[Peer] = set()
        self.counts = RequestCounts()

    def handlers(self) -> dict[type, Handler]:
        """``serve``, ``unserve``, ``ask`` and ``reply`` (`nea.core.dispatch`); ``register``
        is the hub's, which first weighs who holds the name."""
        return {
            frames.Serve: lambda peer, r: self.serve(peer, r.service),
            frames.Unserve: lambda peer, r: self.unserve(peer, r.service),
            frames.Reply: lambda peer, r: self.reply(peer, r.id, r.body),
            frames.Ask: lambda peer, r: self.ask(peer, r.id, r.name, r.service, r.body, r.timeout),
        }

    # ---- names and services ----

    def register(self, peer: Peer, name: str) -> None:
        """``peer`` sent ``register name``: it takes the name over, here and everywhere."""
        if self._name_of.get(peer) != name:
            self._release(peer)
            holder = self.names.get(name)
            if holder is not None:
                self._take_over(name)
            stamp = self.clock.seconds()
            self.names[name] = (peer, stamp)
            self._name_of[peer] = name
            self.bus.register(name, stamp)
        peer.push(frames.Registered(name))

    def claim(self, name: str, stamp: float, instance: str) -> None:
        """``name`` was registered on ``instance`` at ``stamp``: if ours is older, it goes."""
        holder = self.names.get(name)
        if holder is not None and (holder[1], self.bus.instance_id) < (stamp, instance):
            self._take_over(name)
            self.bus.unregister(name)

    def _take_over(self, name: str) -> None:
        peer, _ = self.names.pop(name)
        del self._name_of[peer]
        self.counts.taken_over += 1
        self.reject(peer, errors.NAME_TAKEN_OVER, f"{name!r} was registered again")

    def _release(self, peer: Peer) -> None:
        name = self._name_of.pop(peer, None)
        if name is not None:
            del self.names[name]
            self.bus.unregister(name)

    def serve(self, peer: Peer, service: str) -> None:
        services = self._services_of.get(peer)
        if services is None:
            services = self._services_of[peer] = set()
        if service not in services:
            if len(services) >= MAX_SERVICES:
                self.reject(peer, errors.TOO_MANY_SERVICES, f"limit is {MAX_SERVICES}")
                return
            services.add(service)
            if peer not in self._stalled:
                self._join_service(peer, service)
        peer.push(frames.Serving(service))

    def _join_service(self, peer: Peer, service: str) -> None:
        members = self.members.get(service)
        if members is None:
            members = self.members[service] = IndexedSet()
        members.add(peer)

    def unserve(self, peer: Peer, service: str) -> None:
        services = self._services_of.get(peer, set())
        if service in services:
            services.discard(service)
            if not services:
                del self._services_of[peer]
                self._stalled.discard(peer)
            self._leave_service(peer, service)
        peer.push(frames.Unserved(service))

    def _leave_service(self, peer: Peer, service: str) -> None:
        members = self.members.get(service)
        if members is None:
            return  # (it was the last member, and is stalled)
        members.discard(peer)
        if not members:
            del self.members[service]

    def holder(self, name: str) -> Peer | None:
        """The local connection registered as ``name``, if any."""
        holder = self.names.get(name)
        return holder[0] if holder is not None else None

    def _stall(self, peer: Peer) -> None:
        """``peer`` missed a deadline: it is drawn for none of its services until it replies."""
        services = self._services_of.get(peer)
        if services and peer not in self._stalled:
            self._stalled.add(peer)
            for service in services:
                self._leave_service(peer, service)

    def _revive(self, peer: Peer) -> None:
        """``peer`` replied: if it was stalled, it is a member of its services again."""
        if peer in self._stalled:
            self._stalled.discard(peer)
            for service in self._services_of[peer]:
                self._join_service(peer, service)

    def has_name(self, name: str) -> float | None:
        """When ``name`` was registered here, or None if it is not."""
        holder = self.names.get(name)
        return holder[1] if holder is not None else None

    def local_names(self) -> dict[str, float]:
        return {name: stamp for name, (_, stamp) in self.names.items()}

    def member_weight(self, service: str) -> int:
        """Local members of ``service``: this instance's weight when a member is drawn."""
        members = self.members.get(service)
        return len(members) if members is not None else 0

    def services(self) -> dict[str, int]:
        return {service: len(members) for service, members in self.members.items()}

    # ---- the asking side ----

    def ask(
        self,
        asker,
        ref: str,
        name: str | None,
        service: str | None,
        body: Any,
        timeout: float | None = None,
    ) -> "Deferred[None] | None":
        """``asker`` asks ``name`` (or a member of ``service``); it is told the reply as
        ``ReplyPush(ref, ...)`` or an error carrying ``ref``.

        Returns what fires once ``asker`` waits for no reply, if it waited for none
        before (None: refused at once, or it waited already and was given that then)."""
        self.counts.asked += 1
        rid = f"{self._prefix}{next(self._ids)}"
        settled = self._asks_of.add(asker, rid, self.max_pending)
        if settled is False:
            self.reject(asker, errors.TOO_MANY_PENDING, f"limit is {self.max_pending}", ref)
            return None
        timeout = timeout or self.timeout
        now = self.clock.seconds()
        ask = self.asks[rid] = _Ask(asker, ref, name, service, body, timeout, now + timeout)
        if name is not None and name in self.names:
            self._offer(rid, ask, self.here, now)  # where every bus would find it
        elif name is not None:
            self._time(rid, ask)
            found = self.bus.find_client(name)
            found.addErrback(
                lambda failure: log.failure("looking up {name} failed", failure, name=name)
            )
            found.addCallback(self._found, rid)
        elif service is not None:  # always, by here: an ask names a client or a service
            self._draw(rid, ask, service, now)
        return settled

    def _found(self, instance: str | None, rid: str) -> None:
        ask = self.asks.get(rid)
        if ask is None:
            return  # timed out, or its asker left, meanwhile
        if instance is None:
            self._fail(rid, errors.NO_SUCH_CLIENT, f"nobody is registered as {ask.name!r}")
        else:
            self._offer(rid, ask, instance, self.clock.seconds())

    def _draw(self, rid: str, ask: _Ask, service: str, now: float) -> None:
        instance = None
        if ask.attempts < MAX_REQUEST_ATTEMPTS:
            instance = self.bus.pick_member_instance(service, self.rng, ask.skip or _NO_SKIP)
        if instance is None:
            self._fail(rid, errors.NO_MEMBER, f"no member of {service!r} can take it")
        else:
            self._offer(rid, ask, instance, now)

    def _offer(self, rid: str, ask: _Ask, instance: str, now: float) -> None:
        """Offer ``ask`` to ``instance``. Pushed here, it needs no deadline of its own
        until it is offered elsewhere: its held deadline falls at the same time and
        times it out too (`_held_due`), one timer entry a request rather than two."""
        ask.instance = instance
        ask.attempts += 1
        left = max(0.001, ask.deadline - now)
        if instance == self.here:  # where every bus would hand it: no envelope
            self._push(rid, instance, ask.name, ask.service, ask.body, left, now)
        else:
            self._time(rid, ask)
            self.bus.offer(instance, Offer(rid, self.here, ask.name, ask.service, ask.body, left))

    def _time(self, rid: str, ask: _Ask) -> None:
        """``ask`` may wait elsewhere than in a local client's hold: give it its deadline."""
        if not ask.timed:
            ask.timed = True
            self._ask_deadlines.add(rid, ask.deadline)

    def answer(self, rid: str, body: Any, instance: str) -> None:
        """The reply to ``rid`` came back from a client on ``instance``."""
        ask = self.asks.get(rid)
        if ask is None or ask.instance != instance:
            return  # settled already (timed out, asker gone)
        self._drop(rid)
        self.counts.answered += 1
        ask.asker.push_parts(frames.ReplyPush, ask.ref, body, instance)
        self._asks_of.done(ask.asker, rid)

    def refuse(self, rid: str, code: str, instance: str) -> None:
        """``instance`` could not take ``rid``, or its client left before replying."""
        ask = self.asks.get(rid)
        if ask is None or ask.instance != instance:
            return
        if ask.service is not None and code in REDRAW:
            if code != MEMBER_GONE:
                if ask.skip is None:
                    ask.skip = set()
                ask.skip.add(instance)
            self.counts.redrawn += 1
            self._draw(rid, ask, ask.service, self.clock.seconds())
            return
        error = _FAILURES.get(code, errors.CLIENT_GONE)
        self._fail(rid, error, f"{ask.name or ask.service!r} on {instance}")

    def instance_gone(self, instance: str) -> None:
        """``instance`` left the cluster: what it was offered gets no reply from there."""
        for rid, ask in list(self.asks.items()):
            if ask.instance == instance:
                self.refuse(
                    rid,
                    MEMBER_GONE if ask.service is not None else errors.CLIENT_GONE.code,
                    instance,
                )

    def _ask_due(self, rid: str) -> None:
        ask = self.asks[rid]  # (a deadline goes with its ask: `_drop`)
        self.counts.timed_out += 1
        self._fail(rid, errors.REQUEST_TIMEOUT, f"no reply within {ask.timeout:g} s")

    def _fail(self, rid: str, error: errors.ErrorCode, detail: str) -> None:
        ask = self._drop(rid)
        self.counts.failed += 1
        self.reject(ask.asker, error, detail, ask.ref)
        self._asks_of.done(ask.asker, rid)

    def _drop(self, rid: str) -> _Ask:
        """Forget ``rid``; its asker still waits for it until told (`Waits.done`)."""
        ask = self.asks.pop(rid)
        if ask.timed:
            self._ask_deadlines.discard(rid)
        return ask

    def forget_waiter(self, asker) -> None:
        """``asker`` is gone: nobody will be told about its asks (a late answer is dropped)."""
        for rid in self._asks_of.pop(asker):
            self._drop(rid)

    # ---- the serving side ----

    def offer(self, offer: Offer) -> None:
        """Push ``offer`` to the named local connection, or to a member drawn uniformly."""
        self._push(
            offer.id,
            offer.origin,
            offer.name,
            offer.service,
            offer.body,
            offer.timeout,
            self.clock.seconds(),
        )

    def _push(
        self,
        rid: str,
        origin: str,
        name: str | None,
        service: str | None,
        body: Any,
        timeout: float,
        now: float,
    ) -> None:
        if name is not None:
            holder = self.names.get(name)
            target = holder[0] if holder is not None else None
            missing = errors.NO_SUCH_CLIENT.code
        else:  # a service, unless a malformed offer named neither: then nobody has it
            members = self.members.get(service) if service is not None else None
            target = members.choice(self.rng) if members is not None else None
            missing = errors.NO_MEMBER.code
        if target is None:
            self.bus.refuse(origin, rid, missing)
            return
        held = self.held.get(target)
        if held is None:
            held = self.held[target] = {}
        elif len(held) >= self.max_pending:
            self.bus.refuse(origin, rid, errors.TOO_MANY_PENDING.code)
            return
        entry = held[rid] = _Held(rid, target, origin, service, timeout >= self.timeout)
        self._held_deadlines.add(entry, now + timeout)
        self.counts.offered += 1
        target.push_parts(frames.RequestPush, rid, body, service)

    def reply(self, peer: Peer, rid: str, body: Any) -> None:
        """``peer`` sent ``reply rid body``: it must hold that request; answer its origin."""
        if self._stalled:
            self._revive(peer)
        held = self._unhold(peer, rid)
        if held is None:
            self.counts.unexpected_reply += 1
            self.reject(
                peer,
                errors.UNEXPECTED_REPLY,
                f"no 'request {rid}' waits for your reply (answered, or timed out)",
            )
            return
        self.counts.replied += 1
        if held.origin == self.here:
            self.answer(rid, body, held.origin)  # where every bus would hand it
        else:
            self.bus.answer(held.origin, rid, body)

    def _unhold(self, peer: Peer, rid: str) -> _Held | None:
        requests = self.held.get(peer)
        if requests is None or rid not in requests:
            return None
        held = requests.pop(rid)
        if not requests:
            del self.held[peer]
        self._held_deadlines.discard(held)
        return held

    def _held_due(self, held: _Held) -> None:
        """The origin has given up on the request by now: a later reply is unexpected;
        and when it had the whole default timeout, its client is drawn for no service
        until it replies. Asked here, the ask times out now too (`_offer`)."""
        rid = held.rid
        self._unhold(held.target, rid)
        if held.full:
            self._stall(held.target)
        if rid in self.asks and held.origin == self.here:
            self._ask_due(rid)

    def forget_target(self, peer: Peer) -> None:
        """``peer`` left (or can reply no more): it is no longer addressable, and what it
        held is refused back: a request to a name fails, one to a service is drawn again."""
        self._release(peer)
        self._stalled.discard(peer)
        for service in self._services_of.pop(peer, ()):
            self._leave_service(peer, service)
        for rid, held in self.held.pop(peer, {}).items():
            self._held_deadlines.discard(held)
            code = MEMBER_GONE if held.service is not None else errors.CLIENT_GONE.code
            self.bus.refuse(held.origin, rid, code)

    # ---- both ----

    def peer_left(self, peer: Peer) -> None:
        self.forget_waiter(peer)
        self.forget_target(peer)

    @property
    def empty(self) -> bool:
        """Nothing asked, held, registered or served: the request part of zero state."""
        return not (self.asks or self.held or self.names or self.members)

    def figures(self) -> RequestFigures:
        return RequestFigures(
            pending=len(self.asks),
            in_flight=sum(len(h) for h in self.held.values()),
            names=len(self.names),
            services=len(self.members),
            **attrs.asdict(self.counts),
        )
