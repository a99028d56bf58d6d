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
"""

from typing import Callable

from twisted.internet.defer import Deferred

from nea.core.bus import Bus
from nea.core.history import BROADCAST, CHAT, Entry, History
from nea.core.peer import Peer, fan_out
from nea.core.registry import Registry
from nea.core.snapshot import ChatFigures
from nea.wire import errors, frames
from nea.wire.codec import MAX_REPLAY
from nea.wire.frames import BroadcastPush, ChatPush, Encoding, Presence

#: Lines a newcomer to the chat profile's room is shown (``--history-on-join``).
DEFAULT_ON_JOIN = 20

Reject = Callable[[Peer, errors.ErrorCode, str], None]
Live = ChatPush | BroadcastPush | Presence


class ChatRoom:
    """The bus's chat node (`nea.core.bus.ChatNode`): the bus calls `fan_out` on it directly."""

    def __init__(self, registry: Registry, bus: Bus, history: History, reject: Reject,
                 on_join: int = DEFAULT_ON_JOIN) -> None:
        self.registry = registry
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

    def say(self, sender: Peer, text: str) -> Deferred:
        """A client said ``text``; in the room it is not echoed to the sender.

        Fires once the line has gone out."""
        self.said += 1
        skip = sender if sender.profile.room else None
        return self.history.write(CHAT, sender.name, text).addCallback(
            lambda entry: self._send(_push(entry), skip))

    def broadcast(self, text: str):
        """The operator says ``text`` to everyone; fires with how many local clients got it."""
        self.broadcasts += 1
        return self.history.write(BROADCAST, None, text).addCallback(
            lambda entry: self._send(_push(entry)))

    def _send(self, push: Live, skip: Peer | None = None) -> int:
        self.bus.publish(push)
        return self.fan_out(push, skip)

    def fan_out(self, push: Live, skip: Peer | None = None) -> int:
        """Deliver ``push`` to this instance's chat clients (but ``skip``); how many got it."""
        if isinstance(push, Presence):
            return fan_out(self.registry.room, push, skip)
        for newcomer, held in self._replaying.items():
            held.append((push, newcomer is skip))
        return fan_out(self.registry.chat_capable, push, skip)

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
            entries = [entry for entry in entries if entry.id < min(said_since)]
        last = entries[-1].id if entries else 0
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
        return reading.addCallbacks(self._replayed, self._unreadable,
                                    callbackArgs=(peer, asked), errbackArgs=(peer,))

    def _read(self, result, peer: Peer):
        self._reading.discard(peer)
        return result

    def _replayed(self, entries: list[Entry], peer: Peer, asked: int) -> None:
        more = len(entries) > MAX_REPLAY
        entries = entries[:MAX_REPLAY]
        for entry in entries:
            peer.push(_line(entry))
        peer.push(frames.HistoryEnd(entries[-1].id if entries else asked, more))

    def _unreadable(self, failure, peer: Peer) -> None:
        self.reject(peer, errors.HISTORY_UNAVAILABLE, " ".join(str(failure.value).split()))

    def figures(self) -> ChatFigures:
        return ChatFigures(self.said, self.broadcasts)


def _push(entry: Entry) -> ChatPush | BroadcastPush:
    if entry.kind == BROADCAST:
        return BroadcastPush(entry.text, entry.id, entry.time)
    return ChatPush(entry.name, entry.text, entry.id, entry.time)


def _line(entry: Entry) -> frames.HistoryLine:
    return frames.HistoryLine(entry.id, entry.time, entry.kind, entry.name, entry.text)
