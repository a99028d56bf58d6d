"""The hub: one instance's state, and the place where a parsed request is decided.

`nea.server.connection.NeaConnection` parses bytes and calls `join`, `handle` and
`leave`, and reports what it sees through methods (`throttled`, `dropped`,
`reject`); the HTTP API and the console call `broadcast`, `relay`
and `snapshot`. Nothing outside the core reads or writes the hub's parts: the
figures leave it only as a frozen `nea.core.snapshot.Snapshot`.
"""

import collections
import itertools
import random
from collections.abc import Callable, Mapping

import attrs
from twisted.internet import defer
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorTime

import nea
from nea.core import dispatch, reverse
from nea.core.access import Access, established
from nea.core.broker import RelayBroker, RelayTimings, Waiter
from nea.core.bus import Bus
from nea.core.chat import DEFAULT_ON_JOIN, ChatRoom
from nea.core.dates import DateBroadcaster
from nea.core.dispatch import Handler
from nea.core.history import History, NoHistory, Unavailable
from nea.core.lane import Lane
from nea.core.liveness import Liveness
from nea.core.peer import Peer
from nea.core.permissions import Policy
from nea.core.registry import Registry
from nea.core.requests import RequestBroker
from nea.core.snapshot import (
    ClusterFigures,
    ConnectionInfo,
    MemberFigures,
    Snapshot,
    status_json,
)
from nea.core.tokens import Token, TokenVerifier
from nea.wire import errors, frames


@attrs.frozen
class HubConfig:
    max_clients: int = 100
    date_interval: float = 10.0
    #: Relays (and requests) one connection may wait for, and deliveries (and requests)
    #: one may hold unanswered.
    max_pending: int = 1000
    #: Seconds a relay target has to ack a delivery before it is drawn again elsewhere.
    ack_timeout: float = 5.0
    #: As long, for a target that has never sent a byte (0: ``ack_timeout``): squatters
    #: are found out after one short wait.
    first_ack_timeout: float = 0.0
    #: Seconds an ``ask`` waits for its reply unless it says otherwise.
    request_timeout: float = 10.0
    #: Lines of history a chat-profile newcomer is shown (``--history-on-join``).
    history_on_join: int = DEFAULT_ON_JOIN
    #: The permissions of clients without a token (``--anonymous``, ``--permissions``).
    policy: Policy = Policy()
    #: Seconds between liveness sweeps (`nea.core.liveness`); 0: off.
    ping_interval: float = 0.0


class Hub:
    def __init__(
        self,
        clock: IReactorTime,
        bus: Bus,
        config: HubConfig = HubConfig(),
        rng: random.Random | None = None,
        today: Callable[[], str] | None = None,
        handshakes: Callable[[], Mapping[str, int]] | None = None,
        history: History | None = None,
        tokens: TokenVerifier | None = None,
    ) -> None:
        """``handshakes``: reads the TLS listeners' handshake figures, shown in status.
        ``history``: where chat lines are kept (default: nowhere).
        ``tokens``: verifies the tokens clients present (default: none are taken)."""
        self.clock = clock
        self._handshakes = handshakes
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
            clock,
            self.registry,
            bus,
            self.rng,
            self.reject,
            config.max_pending,
            config.ack_timeout,
            config.first_ack_timeout,
        )
        self.addressed = RequestBroker(
            clock,
            bus,
            self.rng,
            self.reject,
            config.max_pending,
            config.request_timeout,
        )
        #: Answers each connection is still owed (see `handle`), and the connections that
        #: ended their stream and close once they are owed nothing.
        self._owed: dict[Peer, set[Deferred]] = {}
        self._ending: set[Peer] = set()
        self._history = history if history is not None else NoHistory(clock)
        self.chat = ChatRoom(
            self.registry, bus, self._history, self.reject, config.history_on_join, clock
        )
        self.dates = DateBroadcaster(
            clock, config.date_interval, self.registry.date_subscribers, today
        )
        self.liveness = Liveness(
            clock, config.ping_interval, lambda: self.registry.peers, self.reject
        )
        self._errors: collections.Counter[str] = collections.Counter()
        self._throttled = 0
        #: By request class, named only in a snapshot: one lookup less a line.
        self._requests: collections.Counter[type] = collections.Counter()
        #: Bytes from and to the connections that have left; the live ones keep their own,
        #: added at snapshot time, so that no read or write pays for a shared counter.
        self._left_bytes_in = 0
        self._left_bytes_out = 0
        self._ids = itertools.count(1)
        self.access = Access(clock, config.policy, tokens, self.reject, self._identified)
        #: Chat nicks of token connections: nick -> {connection: identity}.
        self._nicks: dict[str, dict[Peer, str]] = {}
        #: Each request class's handler, as its feature names it, behind its permission.
        self._handlers = dispatch.table(
            (self.relays, self.addressed, self.chat, self.liveness, self.access, reverse, self)
        )
        self.access.gate(self._handlers)
        #: What line connections decide without request values (`nea.core.lane`).
        self.lane = Lane(self.access, self.relays, self.addressed, self.owe)
        bus.attach(self.relays, self.chat, self.member, self.addressed)

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
        self._allow(peer)
        self.liveness.joined()
        return True

    def input_ended(self, peer: Peer) -> None:
        """``peer`` sends nothing more (FIN, close_notify) but may still read.

        It can no longer ack or reply, so it is no target any more and what it held
        goes elsewhere (or fails); it is closed once it is owed no answer.
        """
        if peer not in self.registry or peer in self._ending:
            return
        self._ending.add(peer)
        self.registry.stop_targeting(peer)
        self.dates.unsubscribed()
        self.relays.forget_target(peer)
        self.addressed.forget_target(peer)
        if peer not in self._owed:
            self._ended(peer)

    def _ended(self, peer: Peer) -> None:
        """An ending connection is owed nothing more: it leaves the room, and closes."""
        self._ending.discard(peer)
        self.chat.left(peer)
        self.registry.retire(peer)
        peer.close()

    def leave(self, peer: Peer) -> None:
        self.access.left(peer)
        self._disown_nick(peer)
        self._left_bytes_in += peer.bytes_in
        self._left_bytes_out += peer.bytes_out
        self._ending.discard(peer)
        self._owed.pop(peer, None)
        if peer not in self.registry:
            return
        self.chat.left(peer)
        self.registry.remove(peer)
        self.relays.peer_left(peer)
        self.addressed.peer_left(peer)
        self.dates.unsubscribed()
        if not len(self.registry):
            self.liveness.stop()

    def handle(self, peer: Peer, request: frames.Request) -> None:
        """Decide ``request``; what its handler still owes ``peer`` is kept until it fires.

        A handler answers at once (and returns None), or returns the Deferred of the
        work that will answer (a store read, an awaited ack or reply). That is the one
        rule by which a connection that ended its stream is closed only once every
        answer it is owed has been written, whatever the verb.
        """
        self._requests[type(request)] += 1
        owed = self._handlers[type(request)](peer, request)
        if owed is not None:
            self.owe(peer, owed)

    def owe(self, peer: Peer, answer: Deferred) -> None:
        """``peer`` is owed what ``answer`` brings: it closes, once its stream ended, only
        after ``answer`` has fired (`handle`; the lane's verbs, `nea.core.lane`)."""
        if answer.called and not answer.paused:  # (paused: on an inner one)
            return
        answers = self._owed.get(peer)
        if answers is None:
            answers = self._owed[peer] = set()
        elif answer in answers:
            return  # one Deferred may stand for several requests (a waiter's relays)
        answers.add(answer)
        answer.addBoth(self._answered, peer, answer)

    def _answered(self, result, peer: Peer, answer: Deferred):
        answers = self._owed.get(peer)
        if answers is not None:
            answers.discard(answer)
            if not answers:
                del self._owed[peer]
                if peer in self._ending:
                    self._ended(peer)
        return result

    def reject(
        self, peer: Waiter, error: errors.ErrorCode, detail: str = "", id: str | None = None
    ) -> None:
        """Answer with ``error``, counted under its code; close the connection if it is fatal.

        ``id``: the asker's id of the ``ask`` it answers. Every error a client is sent
        goes through here, so the counters miss none.
        """
        self._errors[error.code] += 1
        message = f"{error.summary}: {detail}" if detail else error.summary
        if id is not None:
            message = f"{message} (ask {id})"
        peer.push(frames.ErrorReply(error.code, message, id))
        if error.fatal:
            peer.close()

    def dropped(self, error: errors.ErrorCode) -> None:
        """A connection was cut for ``error`` without being told (it would not read it)."""
        self._errors[error.code] += 1

    def chat_waits(self):
        """None while a chat line may be handled; else a Deferred that fires once the
        history store has caught up: the connection reads its chatter no more till then."""
        return self.chat.waits()

    def throttled(self) -> None:
        """A connection sent faster than its rate and stops being read for a while."""
        self._throttled += 1

    # ---- the requests the hub decides itself ----

    def handlers(self) -> dict[type, Handler]:
        """The session's own requests, and those that weigh identities against names held
        (``nick``, ``register``); every other feature names its own (`nea.core.dispatch`)."""
        return {
            frames.Hello: self._hello,
            frames.Status: self._status,
            frames.Exit: self._exit,
            frames.Invalid: self._invalid,
            frames.Nick: self._nick,
            frames.Register: self._register,
        }

    def _hello(self, peer: Peer, request: frames.Hello) -> None:
        peer.push(frames.Welcome(peer.name, self.instance_id, peer.profile.name))

    def _status(self, peer: Peer, request: frames.Status) -> None:
        peer.push(frames.StatusReply(status_json(self.snapshot(asking=peer))))

    def _exit(self, peer: Peer, request: frames.Exit) -> None:
        peer.push(frames.Bye())
        peer.close()

    def _invalid(self, peer: Peer, request: frames.Invalid) -> None:
        self.reject(peer, request.error, request.detail)

    # ---- identities and permissions ----

    def _allow(self, peer: Peer) -> None:
        """Whether ``peer`` is drawn for relays and hears chat follows its permissions too."""
        permissions = self.access.permissions(peer)
        self.registry.allow(peer, permissions.relay, permissions.chat)

    def authenticate(self, peer: Peer, token: str) -> None:
        """``?token=`` on a WebSocket (``auth TOKEN`` is `Access`'s own request)."""
        self.access.authenticate(peer, token)

    def _identified(self, peer: Peer, verified: Token) -> None:
        """``peer`` is who its verified token says: its name, nick and permissions follow."""
        self._disown_nick(peer)
        peer.token = verified
        self.registry.identify(peer, verified.subject)
        if verified.nick is not None:
            peer.name = verified.nick
            self._nicks.setdefault(verified.nick, {})[peer] = verified.subject
            self.bus.hold_nick(verified.nick, verified.subject)
        self._allow(peer)
        peer.push(frames.Authenticated(verified.subject))

    def verify_token(self, token: str, where: str) -> Token:
        """An HTTP client's bearer token, verified and counted (``where``: who sent it, for
        the log); raises `nea.core.tokens.TokenRefused`."""
        return self.access.verify(token, where)

    def token_refusal(
        self, token: Token, where: str, permission: str, target: str | None = None
    ) -> str | None:
        """None if ``token`` has ``permission`` (on ``target``), else why not (counted)."""
        return self.access.judge(token, where, permission, target)

    def reload_policy(self, policy: Policy) -> None:
        """The permissions file was read again (SIGHUP): it applies from now on."""
        self.access.policy = policy
        for peer in self.registry.peers:
            self._allow(peer)

    def _disown_nick(self, peer: Peer) -> None:
        nick = peer.token.nick if peer.token is not None else None
        if nick is None:
            return
        holders = self._nicks.get(nick)
        if holders is not None:
            holders.pop(peer, None)
            if not holders:
                del self._nicks[nick]
                self.bus.release_nick(nick)

    def _register(self, peer: Peer, request: frames.Register) -> Deferred | None:
        """A name held by an identity is taken over by that identity only, wherever in the
        cluster it is held: a name not held here is looked up on the bus first."""
        if self.addressed.holder(request.name) is not None:
            self._register_unless_held((False, None), peer, request.name)
            return None
        looked_up = self.bus.name_holder(request.name)
        looked_up.addCallback(self._register_unless_held, peer, request.name)
        return looked_up

    def _register_unless_held(self, found: tuple[bool, str | None], peer: Peer, name: str) -> None:
        """``found``: who holds ``name`` elsewhere; a holder here is the one that counts."""
        if peer not in self.registry:
            return  # it left meanwhile
        held, identity = found
        local = self.addressed.holder(name)
        if local is not None:
            held, identity = True, local.identity
        if held and identity is not None and identity != peer.identity:
            self._held_by_another(peer, name)
        else:
            self.addressed.register(peer, name)

    def _held_by_another(self, peer: Peer, name: str) -> None:
        self.access.refuse(peer, "register", name, "the name is held by another identity")

    def _nick(self, peer: Peer, request: frames.Nick) -> Deferred | None:
        """A nick an identified user holds, here or on another instance, is nobody else's."""
        token = peer.token
        if token is not None and token.nick is not None:
            return self._take_nick(peer, token.nick)  # a token's nick is the identity's
        if self._nick_held(peer, request.name, set()):
            return None
        looked_up = self.bus.nick_identities(request.name)
        return looked_up.addCallback(self._nick_unless_held, peer, request.name)

    def _nick_held(self, peer: Peer, nick: str, elsewhere: set[str]) -> bool:
        """Whether an identity other than ``peer``'s holds ``nick``; if so it is refused."""
        holders = {*self._nicks.get(nick, {}).values(), *elsewhere}
        if any(identity != peer.identity for identity in holders):
            self.access.refuse(peer, "chat", None, f"the nick {nick!r} is an identified user's")
            return True
        return False

    def _nick_unless_held(self, elsewhere: set[str], peer: Peer, nick: str) -> Deferred | None:
        if peer not in self.registry or self._nick_held(peer, nick, elsewhere):
            return None  # it left meanwhile, or the nick is another's
        return self._take_nick(peer, nick)

    def _take_nick(self, peer: Peer, nick: str) -> Deferred | None:
        peer.name = nick
        peer.push(frames.NickReply(nick))
        if peer.profile.naming is not None and not peer.named:
            peer.named = True  # its first line: it enters the chat room
            return self.chat.enter(peer)
        return None

    # ---- operators (HTTP API, console) ----

    def broadcast(self, text: str):
        """Fires with how many local clients got it, once history has answered."""
        return self.chat.broadcast(text)

    def history_since(self, last_id: int, limit: int):
        """Up to ``limit`` stored lines after ``last_id`` (``GET /chat/history``); fails with
        `Unavailable` when history is off or its store degraded."""
        if not self._history.available:
            return defer.fail(Unavailable(f"chat history is {self._history.figures().state}"))
        return self._history.since(last_id, limit)

    def relay(self, waiter: Waiter, text: str) -> None:
        """Relay ``text`` for a waiter that is not a connection (HTTP ``POST /relay``)."""
        self.relays.request(waiter, text)

    def forget(self, waiter: Waiter) -> None:
        """A non-connection waiter gave up (timed out, or its HTTP client left)."""
        self.relays.forget_waiter(waiter)
        self.addressed.forget_waiter(waiter)

    def ask(
        self,
        waiter: Waiter,
        ref: str,
        name: str | None,
        service: str | None,
        body,
        timeout: float | None = None,
    ) -> None:
        """Send ``body`` to the client registered as ``name``, or to a member of ``service``;
        ``waiter`` is pushed the `frames.ReplyPush` or the `frames.ErrorReply` for ``ref``."""
        self.addressed.ask(waiter, ref, name, service, body, timeout)

    def find_client(self, name: str):
        """A Deferred: the instance where ``name`` is registered in the cluster, or None."""
        return self.bus.find_client(name)

    def clients(self):
        """A Deferred: ``{name: instance}`` of every name registered in the cluster."""
        return self.bus.clients()

    def name_holder(self, name: str) -> Deferred:
        """Fires with ``(held, identity)`` for ``name`` anywhere in the cluster."""
        return self.bus.name_holder(name)

    def holder(self, name: str) -> dict[str, str | None] | None:
        """Who holds ``name`` here, ``{"identity", "auth"}``; None if it is not held here."""
        peer = self.addressed.holder(name)
        return None if peer is None else {"identity": peer.identity, "auth": established(peer)}

    def time_relays(self, timings: RelayTimings) -> None:
        """Tell ``timings`` when each relay starts and ends being waited for (metrics)."""
        self.relays.timings.append(timings)

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

    def abort_all(self) -> None:
        """Drop every connection still there (the end of a drain)."""
        for peer in self.registry.peers:
            peer.abort()

    def stop(self) -> None:
        """The instance stops: no more dates, pings or ack deadlines."""
        self.dates.stop()
        self.liveness.stop()
        self.relays.stop()

    # ---- what it looks like ----

    def connections(self, limit: int) -> tuple[ConnectionInfo, ...]:
        """Up to ``limit`` of the connections, as values (``GET /connections``)."""
        return tuple(
            ConnectionInfo(
                peer.id,
                peer.name,
                peer.peer_address,
                peer.identity,
                peer.profile.name,
                peer.since,
                peer.encoding.value,
                peer.bytes_in,
                peer.bytes_out,
                established(peer),
            )
            for peer in itertools.islice(self.registry.peers, limit)
        )

    def zero_state(self, asking: Peer | None = None) -> bool:
        """No connection (but ``asking``, the one that asks), no relay or request waited
        for or held here, and no delivery out at another instance unanswered: what a clean
        end of a load leaves. The one definition: every other reads this flag."""
        others = len(self.registry) - (asking is not None and asking in self.registry)
        return (
            not others and self.relays.empty and self.addressed.empty and not self.bus.unanswered()
        )

    def member(self, asking: Peer | None = None) -> MemberFigures:
        """This instance's figures as the cluster sees them (what a heartbeat announces)."""
        return self._member(self.zero_state(asking))

    def _member(self, zero_state: bool) -> MemberFigures:
        return MemberFigures(
            instance=self.instance_id,
            version=nea.__version__,
            state="draining" if self.draining else "serving",
            connections=len(self.registry),
            relay_weight=self.relays.relay_weight(),
            pending=len(self.relays.waiting),
            zero_state=zero_state,
            services=self.addressed.services(),
        )

    def _request_counts(self) -> collections.Counter[str]:
        counts = self._requests + collections.Counter(self.lane.counts())
        return collections.Counter({kind.__name__: count for kind, count in counts.items()})

    def snapshot(self, asking: Peer | None = None) -> Snapshot:
        """This instance's figures now, with the other members' as last heard.

        ``asking``: the connection that asks for them (``{"cmd":"status"}``); it is not
        counted against zero state, so a client can see everyone else has gone.
        """
        registry = self.registry
        zero_state = self.zero_state(asking)  # once: it is this instance's member figure too
        return Snapshot(
            instance=self.instance_id,
            version=nea.__version__,
            uptime=self.clock.seconds() - self.started,
            draining=self.draining,
            connections=len(registry),
            relay_capable=len(registry.relay_capable),
            profiles=registry.by_profile(),
            identified=registry.identified,
            max_clients=registry.max_clients,
            refused_full=registry.refused_full,
            handshakes=self._handshakes() if self._handshakes is not None else None,
            throttled=self._throttled,
            requests=self._request_counts(),
            errors=self._errors,
            bytes_in=self._left_bytes_in + sum(peer.bytes_in for peer in registry.peers),
            bytes_out=self._left_bytes_out + sum(peer.bytes_out for peer in registry.peers),
            relays=self.relays.figures(),
            addressed=self.addressed.figures(),
            chat=self.chat.figures(),
            dates=self.dates.figures(),
            zero_state=zero_state,
            cluster=ClusterFigures(
                self.bus.state(), (self._member(zero_state), *self.bus.others())
            ),
            store=self._history.figures(),
            auth=self.access.figures(),
        )
