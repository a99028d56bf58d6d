"""Chat and operator broadcasts: every chat-capable client of the cluster, exactly once.

A line is written to history first and fanned out when the writer answers,
with the store's id (None when it went out unsaved); the writer answers in the
order lines were written, so lines keep the order they were said in. The
instance where a line is said delivers it to its own clients and publishes it
on the bus, id and time included; other instances deliver what they receive
from the bus. No instance delivers its own publication twice.

The chat profile's room: a client that has given its name is shown the last
lines of history, then enters, and the room hears ``joined``; when it goes the
room hears ``left``. Lines said while its history is read are held for it and
sent after, unless the replay had them already: no gap, no duplicate.

No silent gaps. Lines published while the bus is down never arrive. The bus
marks each heartbeat it completes (`checkpoint`): the highest id delivered then
has had a heartbeat's time to arrive. When the bus is back (`rejoined`), the
room reads the shared store from the last mark taken before the outage
(`outage`) and delivers what its clients did not get, in id order; live lines
that come meanwhile wait and follow; ids delivered lately are remembered, so
nothing goes out twice. It also publishes again the lines said here since
that mark: an instance whose bus came back earlier has read the store before
they were there. Without a store to read (history off or degraded, or
too much missed), the chat clients are sent a `frames.Gap` instead.
"""

import collections
from collections.abc import Callable
from datetime import UTC, datetime

from twisted.internet.defer import Deferred, inlineCallbacks
from twisted.internet.interfaces import IReactorTime

from nea.core.bus import Bus
from nea.core.dispatch import Handler
from nea.core.history import BROADCAST, CHAT, Entry, History, iso_time
from nea.core.peer import Peer, fan_out
from nea.core.registry import Registry
from nea.core.snapshot import ChatFigures
from nea.wire import errors, frames
from nea.wire.codec import MAX_REPLAY
from nea.wire.frames import BroadcastPush, ChatPush, Encoding, Presence

#: Lines a newcomer to the chat profile's room is shown (``--history-on-join``).
DEFAULT_ON_JOIN = 20
#: Ids of the lines delivered last that are remembered, so that a catch-up sends none twice.
RECENT = 10_000
#: Lines read from the store per read of a catch-up, and at most in all (past it: a gap).
CATCH_UP_PAGE = 1000
MAX_CATCH_UP = 5 * CATCH_UP_PAGE
#: Bytes of text of the lines said here that are kept to be published again after an outage.
SAID_HERE_BYTES = 16 * 1024 * 1024

Reject = Callable[[Peer, errors.ErrorCode, str], None]
Live = ChatPush | BroadcastPush | Presence


class ChatRoom:
    """The bus's chat node (`nea.core.bus.ChatNode`): the bus calls `fan_out` on it directly."""

    def __init__(
        self,
        registry: Registry,
        bus: Bus,
        history: History,
        reject: Reject,
        on_join: int,
        clock: IReactorTime,
    ) -> None:
        self.registry = registry
        self.clock = clock
        self.bus = bus
        self.history = history
        self.reject = reject
        self.on_join = on_join
        self.said = 0
        self.broadcasts = 0
        #: Newcomers whose join history is being read, and the lines said meanwhile (each
        #: with whether the newcomer said it itself).
        self._replaying: dict[Peer, list[tuple[ChatPush | BroadcastPush, bool]]] = {}
        #: Clients with a ``history``/``since`` being read: one at a time each, so that a
        #: client cannot pile reads up in front of the store.
        self._reading: set[Peer] = set()
        self._recent = RecentIds(RECENT)
        #: ``(time, highest id delivered)`` at the last two checkpoints; the older one is
        #: where a catch-up starts (lines up to it have had a heartbeat to arrive).
        self._marks: collections.deque[tuple[float, int]] = collections.deque(maxlen=2)
        #: The mark a catch-up will start from, from the moment the bus went down.
        self._outage: tuple[float, int] | None = None
        #: While catching up: live lines (with who said them), delivered after.
        self._held: list[tuple[ChatPush | BroadcastPush, Peer | None]] | None = None
        #: The stored lines said here since the older mark, with when (and their bytes of
        #: text): published again after an outage.
        self._said_here: collections.deque[tuple[float, ChatPush | BroadcastPush]] = (
            collections.deque()
        )
        self._said_bytes = 0

    def handlers(self) -> dict[type, Handler]:
        """``chat``, ``history`` and ``since`` (`nea.core.dispatch`)."""
        return {
            frames.Chat: lambda peer, r: self.say(peer, r.text),
            frames.History: self.replay,
            frames.Since: self.replay,
        }

    def say(self, sender: Peer, text: str) -> Deferred | None:
        """A client said ``text``; in the room it is not echoed to the sender.

        Fires once the line has gone out (None: refused at once). Connections stop
        reading chatters while the store catches up (`waits`); a line that comes all
        the same once the store is far behind is refused, not dropped.
        """
        if self.history.full:
            self.reject(sender, errors.HISTORY_BUSY, "its store is behind")
            return None
        self.said += 1
        skip = sender if sender.profile.room else None
        return self.history.write(CHAT, sender.name, text).addCallback(
            lambda entry: self._send(_push(entry), skip)
        )

    def broadcast(self, text: str):
        """The operator says ``text`` to everyone; fires with how many local clients got it."""
        self.broadcasts += 1
        return self.history.write(BROADCAST, None, text).addCallback(
            lambda entry: self._send(_push(entry))
        )

    def waits(self):
        """None while chat lines may be read; else a Deferred that fires once the
        history store has caught up (connections hold their chatters until then)."""
        return self.history.caught_up()

    def _send(self, push: Live, skip: Peer | None = None) -> int:
        if not isinstance(push, Presence) and push.id is not None:
            self._said_here.append((self.clock.seconds(), push))
            self._said_bytes += len(push.text)
            self._forget_said(
                lambda said: (
                    self._said_bytes > SAID_HERE_BYTES or len(self._said_here) > MAX_CATCH_UP
                )
            )
        self.bus.publish(push)
        return self.fan_out(push, skip)

    def fan_out(self, push: Live, skip: Peer | None = None) -> int:
        """Deliver ``push`` to this instance's chat clients (but ``skip``); how many got it
        (or will: while catching up, it waits for the lines before it)."""
        if isinstance(push, Presence):
            return fan_out(self.registry.room, push, skip)
        if self._held is not None:
            self._held.append((push, skip))
            return len(self.registry.chat_capable) - (skip in self.registry.chat_capable)
        return self._deliver(push, skip)

    def _deliver(self, push: ChatPush | BroadcastPush, skip: Peer | None = None) -> int:
        if push.id is not None and not self._recent.add(push.id):
            return 0  # delivered already (by a catch-up, or live)
        for newcomer, held in self._replaying.items():
            held.append((push, newcomer is skip))
        return fan_out(self.registry.chat_capable, push, skip)

    # ---- outages of the bus ----

    def checkpoint(self) -> None:
        """The bus completed a heartbeat: lines up to those delivered now have arrived."""
        self._marks.append((self.clock.seconds(), self._recent.highest))
        oldest = self._marks[0][0]  # what was said before it has reached everyone
        self._forget_said(lambda said: said < oldest)

    def _forget_said(self, old: Callable[[float], bool]) -> None:
        """Drop the lines said here from the oldest on, while ``old(when it was said)``."""
        while self._said_here and old(self._said_here[0][0]):
            self._said_bytes -= len(self._said_here.popleft()[1].text)

    def outage(self) -> None:
        """The bus is down: what is published meanwhile is lost to this instance."""
        if self._outage is None:
            self._outage = self._marks[0] if self._marks else (self.clock.seconds(), 0)

    def rejoined(self) -> None:
        """The bus is back: catch the chat clients up, or tell them of the gap."""
        if self._outage is None or self._held is not None:
            return
        since, after = self._outage
        self._outage = None
        self._marks.clear()
        for said, push in self._said_here:
            if said >= since:
                self.bus.publish(push)
        if not self.history.available:
            self._gap(since, after)
            return
        self._held = []
        self._catch_up(since, after).addBoth(self._caught_up)

    @inlineCallbacks
    def _catch_up(self, since: float, after: int):
        read = 0
        try:
            while True:
                entries = yield self.history.since(after, CATCH_UP_PAGE)
                for entry in entries:
                    self._deliver(_push(entry))
                    after = entry.id
                read += len(entries)
                if len(entries) < CATCH_UP_PAGE:
                    return
                if read >= MAX_CATCH_UP:
                    break  # too much to send at once: the clients read the rest with since
        except Exception:  # the store failed: what is missing cannot be known, so say so
            pass
        self._gap(since, after)

    def _caught_up(self, _) -> None:
        held, self._held = self._held, None
        for push, skip in held or ():
            self._deliver(push, skip)

    def _gap(self, since: float, last_id: int) -> None:
        gap = frames.Gap(_iso(since), _iso(self.clock.seconds()), last_id)
        fan_out(self.registry.chat_capable, gap)

    # ---- the room ----

    def enter(self, peer: Peer) -> Deferred | None:
        """``peer`` (chat profile) has its name: its join history, then it is in.

        Returns what fires once it is in (None: at once)."""
        if not (self.on_join and self.history.available):
            self._entered(peer, [])
            return None
        self._replaying[peer] = []
        reading = self.history.latest(self.on_join)
        reading.addErrback(lambda _: [])  # no join history then; live chat goes on
        return reading.addCallback(lambda entries: self._entered(peer, entries))

    def _entered(self, peer: Peer, entries: list[Entry]) -> None:
        held = self._replaying.pop(peer, [])
        if peer not in self.registry:
            return  # it left while its history was read
        # The read may have run after lines said meanwhile were stored: those are not
        # the history before the join but live lines, sent below (its own ones not at
        # all). The join history then holds fewer than --history-on-join lines.
        said_since = [push.id for push, _ in held if push.id is not None]
        if said_since:
            entries = [entry for entry in entries if _stored(entry) < min(said_since)]
        last = _stored(entries[-1]) if entries else 0
        if peer.encoding is Encoding.JSON:
            for entry in entries:
                peer.push(_line(entry))
            peer.push(frames.HistoryEnd(last, False))
        else:
            for entry in entries:
                peer.push(_push(entry))
        for push, own in held:
            if not own and (push.id is None or push.id > last):
                peer.push(push)
        self.registry.enter_room(peer)
        self._send(Presence(peer.name, "joined"), peer)

    def left(self, peer: Peer) -> None:
        """``peer`` is going: if it was in the room, the room hears it."""
        self._replaying.pop(peer, None)
        self._reading.discard(peer)
        if peer in self.registry.room:
            self.registry.room.discard(peer)
            self._send(Presence(peer.name, "left"))

    # ---- replays ----

    def replay(self, peer: Peer, request: frames.History | frames.Since) -> Deferred | None:
        """``history N`` or ``since ID``: the stored lines, then ``history_end``.

        Returns what fires once they are sent (None: refused at once)."""
        if not self.history.available:
            self.reject(peer, errors.HISTORY_UNAVAILABLE, self.history.figures().state)
            return None
        if peer in self._reading:
            self.reject(peer, errors.TOO_MANY_PENDING, "one history read at a time")
            return None
        self._reading.add(peer)
        if isinstance(request, frames.History):
            reading = self.history.latest(request.count)
            asked = 0
        else:
            reading = self.history.since(request.last_id, MAX_REPLAY + 1)
            asked = request.last_id
        reading.addBoth(self._read, peer)
        return reading.addCallbacks(
            self._replayed, self._unreadable, callbackArgs=(peer, asked), errbackArgs=(peer,)
        )

    def _read(self, result, peer: Peer):
        self._reading.discard(peer)
        return result

    def _replayed(self, entries: list[Entry], peer: Peer, asked: int) -> None:
        more = len(entries) > MAX_REPLAY
        entries = entries[:MAX_REPLAY]
        for entry in entries:
            peer.push(_line(entry))
        peer.push(frames.HistoryEnd(_stored(entries[-1]) if entries else asked, more))

    def _unreadable(self, failure, peer: Peer) -> None:
        self.reject(peer, errors.HISTORY_UNAVAILABLE, " ".join(str(failure.value).split()))

    def figures(self) -> ChatFigures:
        return ChatFigures(self.said, self.broadcasts)


class RecentIds:
    """The last ``size`` ids added, and the highest ever added."""

    def __init__(self, size: int) -> None:
        self.size = size
        self.highest = 0
        self._ids: set[int] = set()
        self._order: collections.deque[int] = collections.deque()

    def add(self, id: int) -> bool:
        """Remember ``id``; False if it is remembered already."""
        if id in self._ids:
            return False
        self._ids.add(id)
        self._order.append(id)
        if len(self._order) > self.size:
            self._ids.discard(self._order.popleft())
        self.highest = max(self.highest, id)
        return True


def _iso(seconds: float) -> str:
    return iso_time(datetime.fromtimestamp(seconds, UTC))


def _push(entry: Entry) -> ChatPush | BroadcastPush:
    if entry.kind == BROADCAST or entry.name is None:
        return BroadcastPush(entry.text, entry.id, entry.time)
    return ChatPush(entry.name, entry.text, entry.id, entry.time)


def _stored(entry: Entry) -> int:
    """The id of an entry read back from history: what a store reads was stored."""
    if entry.id is None:
        raise ValueError(f"history returned an unsaved line: {entry!r}")
    return entry.id


def _line(entry: Entry) -> frames.HistoryLine:
    return frames.HistoryLine(_stored(entry), entry.time, entry.kind, entry.name, entry.text)
