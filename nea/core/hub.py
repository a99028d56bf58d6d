"""The hub: one instance's state, and the place where a parsed request is decided.

`nea.server.connection.NeaConnection` parses bytes and calls `join`, `handle` and
`leave`; the HTTP API and the console call `broadcast`, `relay` and `status`.
"""

import collections
import itertools
import random
from typing import Any, Callable, Protocol as TypingProtocol

import attrs
from twisted.internet.interfaces import IReactorTime

import nea
from nea.core.bus import Bus
from nea.core.chat import ChatRoom
from nea.core.dates import DateBroadcaster
from nea.core.peer import Peer
from nea.core.registry import Registry
from nea.core.relay import RelayBroker, Waiter
from nea.core.reverse import reverse_text
from nea.wire import errors, frames
from nea.wire.frames import BroadcastPush, ChatPush


class RelayObserver(TypingProtocol):
    """Hears relays this instance originates start and get acked (metrics time the round trip)."""

    def relay_started(self, text: str) -> None: ...

    def relay_acked(self, text: str) -> None: ...


@attrs.frozen
class HubConfig:
    max_clients: int = 100
    date_interval: float = 10.0
    #: Relays one connection may wait for, and deliveries one may hold unacknowledged.
    max_pending: int = 1000


class Hub:
    def __init__(
        self,
        clock: IReactorTime,
        bus: Bus,
        config: HubConfig = HubConfig(),
        rng: random.Random | None = None,
        today: Callable[[], str] | None = None,
        handshakes: Any = None,
    ) -> None:
        """``handshakes``: the TLS listeners' handshake figures (attrs), shown in status."""
        self.clock = clock
        self.handshakes = handshakes
        self.bus = bus
        self.config = config
        self.instance_id = bus.instance_id
        self.started = clock.seconds()
        self.draining = False
        #: The clients a drain has still to tell ``shutting_down``, in the order it tells them.
        self._to_shed: collections.deque[Peer] = collections.deque()
        self.registry = Registry(config.max_clients)
        self.rng = rng or random.Random()
        self.relays = RelayBroker(
            self.registry, bus, self.rng, self.reject, self._settled,
            config.max_pending,
        )
        #: Connections that ended their stream and close once their relays are settled.
        self._ending: set[Peer] = set()
        self.chat = ChatRoom(self.registry, bus)
        self.dates = DateBroadcaster(
            clock, config.date_interval, self.registry.date_subscribers, today
        )
        self.errors: collections.Counter[str] = collections.Counter()
        #: Times a connection was made to wait for sending too fast.
        self.throttled = 0
        self.requests: collections.Counter[str] = collections.Counter()
        #: Bytes from and to every connection since start (connections add to them).
        self.bytes_in = 0
        self.bytes_out = 0
        self.relay_observers: list[RelayObserver] = []
        self._ids = itertools.count(1)
        self._handlers: dict[type, Callable[[Peer, Any], None]] = {
            frames.Relay: lambda peer, r: self.relay(peer, r.text),
            frames.Ack: lambda peer, r: self.relays.ack(peer, r.text),
            frames.Chat: lambda peer, r: self.chat.say(peer.name, r.text),
            frames.Reverse: lambda peer, r: peer.push(frames.ReverseReply(reverse_text(r.text))),
            frames.Nick: self._nick,
            frames.Hello: lambda peer, r: peer.push(
                frames.Welcome(peer.name, self.instance_id, peer.profile.name)
            ),
            frames.Status: lambda peer, r: peer.push(frames.StatusReply(self.status())),
            frames.Exit: self._exit,
            frames.Invalid: lambda peer, r: self.reject(peer, r.error, r.detail),
        }
        bus.attach(self)

    # ---- connections ----

    def next_id(self) -> str:
        return f"c{next(self._ids)}"

    def join(self, peer: Peer) -> bool:
        """Admit ``peer``, or tell it the server is full and close it."""
        if self.draining:
            self.reject(peer, errors.SHUTTING_DOWN)
            return False
        if not self.registry.admit(peer):
            self.reject(peer, errors.SERVER_FULL, f"limit is {self.config.max_clients} clients")
            return False
        self.dates.subscribed()
        return True

    def input_ended(self, peer: Peer) -> None:
        """``peer`` sends nothing more (FIN, close_notify) but may still read.

        It can no longer ack, so it is no target any more and what it held goes
        elsewhere; it is closed once no relay it sent is still awaited.
        """
        if peer not in self.registry:
            return
        self.registry.retire(peer)
        self.dates.unsubscribed()
        self.relays.forget_target(peer)
        if self.relays.waits(peer):
            self._ending.add(peer)
        else:
            peer.close()

    def _settled(self, waiter) -> None:
        if waiter in self._ending:
            self._ending.discard(waiter)
            waiter.close()

    def leave(self, peer: Peer) -> None:
        self._ending.discard(peer)
        if peer not in self.registry:
            return
        self.registry.remove(peer)
        self.relays.peer_left(peer)
        self.dates.unsubscribed()

    def handle(self, peer: Peer, request: frames.Request) -> None:
        self.requests[type(request).__name__] += 1
        self._handlers[type(request)](peer, request)

    def reject(self, peer: Waiter, error: errors.ErrorCode, detail: str = "") -> None:
        """Answer with ``error``, counted under its code; close the connection if it is fatal.

        Every error a client is sent goes through here, so the counters miss none.
        """
        self.errors[error.code] += 1
        message = f"{error.summary}: {detail}" if detail else error.summary
        peer.push(frames.ErrorReply(error.code, message))
        if error.fatal:
            peer.close()

    def note_throttled(self) -> None:
        """A connection sent faster than its rate and stops being read for a while."""
        self.throttled += 1

    def _nick(self, peer: Peer, request: frames.Nick) -> None:
        peer.name = request.name
        peer.push(frames.NickReply(request.name))

    def _exit(self, peer: Peer, request: frames.Exit) -> None:
        peer.push(frames.Bye())
        peer.close()

    # ---- operators (HTTP API, console) ----

    def broadcast(self, text: str) -> int:
        return self.chat.broadcast(text)

    def relay(self, waiter: Waiter, text: str) -> None:
        """Relay ``text`` for a connection, or for a waiter that is not one (HTTP ``POST /relay``)."""
        for observer in self.relay_observers:
            observer.relay_started(text)
        self.relays.request(waiter, text)

    def forget(self, waiter: Waiter) -> None:
        """A non-connection waiter gave up (timed out)."""
        self.relays.forget_waiter(waiter)

    def drain(self) -> int:
        """Refuse newcomers from now on; return how many clients `shed` has to close.

        The clients go in batches (`shed`) so that they do not all reconnect
        elsewhere in the same instant, in random order: no group of them (the
        oldest, those of one listener) is always the first to be sent away.
        """
        self.draining = True
        peers = list(self.registry.peers)
        self.rng.shuffle(peers)
        self._to_shed = collections.deque(peers)
        return len(self._to_shed)

    def shed(self, count: int) -> None:
        """Tell the next ``count`` clients of the drain the server is going, and close them.

        A client that left on its own meanwhile still counts, so the pace holds.
        """
        for _ in range(min(count, len(self._to_shed))):
            peer = self._to_shed.popleft()
            if peer in self.registry:
                self.reject(peer, errors.SHUTTING_DOWN)

    # ---- the bus side (nea.core.bus.BusNode) ----

    def relay_count(self) -> int:
        return len(self.registry.relay_capable)

    def on_deliver(self, text: str, origin: str, attempt: int) -> None:
        self.relays.deliver(text, origin, attempt)

    def on_ack(self, text: str) -> None:
        if text in self.relays.waiting:
            for observer in self.relay_observers:
                observer.relay_acked(text)
        self.relays.acked(text)

    def on_reforward(self, text: str, attempt: int) -> None:
        self.relays.redeliver(text, attempt)

    def on_event(self, push: ChatPush | BroadcastPush) -> None:
        self.chat.deliver(push)

    # ---- status ----

    def summary(self) -> dict[str, Any]:
        """This instance's figures (also what it announces to the cluster)."""
        relays = self.relays
        return {
            "instance": self.instance_id,
            "version": nea.__version__,
            "uptime": round(self.clock.seconds() - self.started, 3),
            "state": "draining" if self.draining else "serving",
            "connections": len(self.registry),
            "relay_capable": len(self.registry.relay_capable),
            "profiles": self.registry.by_profile(),
            # connections whose client certificate was verified (mutual TLS)
            "identified": sum(1 for peer in self.registry.peers if peer.identity is not None),
            "max_clients": self.config.max_clients,
            "refused_full": self.registry.refused_full,
            "handshakes": attrs.asdict(self.handshakes) if self.handshakes is not None else None,
            "throttled": self.throttled,
            "relays": {
                "pending": relays.pending,
                "in_flight": relays.in_flight,
                "requested": relays.stats.requested,
                "forwarded": relays.stats.forwarded,
                "acked": relays.stats.acked,
                "reforwarded": relays.stats.reforwarded,
                "unexpected_ok": relays.stats.unexpected_ok,
                "no_recipient": relays.stats.no_recipient,
            },
            "chat": {"said": self.chat.said, "broadcasts": self.chat.broadcasts},
            "dates": {"ticks": self.dates.ticks, "running": self.dates.running},
            "errors": dict(self.errors),
            "zero_state": self.zero_state(),
        }

    def zero_state(self) -> bool:
        return not len(self.registry) and not self.relays.waiting and not self.relays.held

    def status(self) -> dict[str, Any]:
        """What ``{"cmd":"status"}``, ``GET /status`` and ``nea-client status`` show."""
        members = self.bus.members()
        status = self.summary()
        status["cluster"] = {
            "state": self.bus.state(),
            "members": members,
            "connections": sum(m.get("connections", 0) for m in members),
            "pending": sum(m.get("relays", {}).get("pending", 0) for m in members),
            "zero_state": all(m.get("zero_state", False) for m in members),
        }
        return status
