"""Who is connected: admission against the client limit, and the per-role sets."""

import random
from collections.abc import Iterator
from typing import Generic, TypeVar

from nea.core.peer import Peer

T = TypeVar("T")


class IndexedSet(Generic[T]):
    """A set with O(1) add, remove and uniform random choice (swap-remove on a list)."""

    def __init__(self) -> None:
        self._items: list[T] = []
        self._index: dict[T, int] = {}

    def add(self, item: T) -> None:
        if item not in self._index:
            self._index[item] = len(self._items)
            self._items.append(item)

    def discard(self, item: T) -> None:
        i = self._index.pop(item, None)
        if i is None:
            return
        last = self._items.pop()
        if i < len(self._items):
            self._items[i] = last
            self._index[last] = i

    def choice(self, rng: random.Random) -> T | None:
        """A uniformly drawn item; None if it is empty."""
        # random() scaled, not randrange(): one C call instead of three Python ones
        # on the relay hot path; uniform to within 2**-53 for any realistic size.
        items = self._items
        return items[int(rng.random() * len(items))] if items else None

    def __len__(self) -> int:
        return len(self._items)

    def __iter__(self) -> Iterator[T]:
        return iter(list(self._items))

    def __contains__(self, item: object) -> bool:
        return item in self._index


class Registry:
    """The connections of this instance, and which of them take relays, dates and chat.

    ``admit`` enforces ``max_clients``; a refused peer is counted, never registered.
    """

    def __init__(self, max_clients: int) -> None:
        self.max_clients = max_clients
        self.refused_full = 0
        self.peers = IndexedSet[Peer]()
        self.relay_capable = IndexedSet[Peer]()
        self.date_subscribers = IndexedSet[Peer]()
        self.chat_capable = IndexedSet[Peer]()
        #: Chat-profile clients that have given their name: they hear joins and leaves.
        self.room = IndexedSet[Peer]()
        #: Kept up to date on every admission and removal, so status costs O(1).
        self._by_profile: dict[str, int] = {}
        self.identified = 0
        #: Admitted peers that are ending (`stop_targeting`, `retire`): `allow` gives them
        #: nothing back.
        self._retired: set[Peer] = set()

    def admit(self, peer: Peer) -> bool:
        if len(self.peers) >= self.max_clients:
            self.refused_full += 1
            return False
        self.peers.add(peer)
        name = peer.profile.name
        self._by_profile[name] = self._by_profile.get(name, 0) + 1
        if peer.identity is not None:
            self.identified += 1
        if peer.profile.relays:
            self.relay_capable.add(peer)
        if peer.profile.dates:
            self.date_subscribers.add(peer)
        if peer.profile.chat and (peer.profile.naming is None or peer.named):
            self.chat_capable.add(peer)
            if peer.profile.room:
                self.room.add(peer)
        return True

    def enter_room(self, peer: Peer) -> None:
        """A chat-profile client has its name: it takes chat from now on."""
        if peer in self.peers:
            self.chat_capable.add(peer)
            self.room.add(peer)

    def allow(self, peer: Peer, relays: bool, chat: bool) -> None:
        """Whether ``peer`` takes relays and chat, as its permissions say (its profile too)."""
        if peer not in self.peers or peer in self._retired:
            return
        profile = peer.profile
        for members, taken in (
            (self.relay_capable, relays and profile.relays),
            (self.chat_capable, chat and profile.chat and (profile.naming is None or peer.named)),
        ):
            if taken:
                members.add(peer)
            else:
                members.discard(peer)

    def identify(self, peer: Peer, identity: str) -> None:
        """``peer`` is ``identity`` from now on (it presented a token)."""
        if peer in self.peers and peer.identity is None:
            self.identified += 1
        peer.identity = identity

    def stop_targeting(self, peer: Peer) -> None:
        """``peer`` takes no more relays or dates (it can no longer ack; it is ending)."""
        if peer in self.peers:
            self._retired.add(peer)
        self.relay_capable.discard(peer)
        self.date_subscribers.discard(peer)

    def retire(self, peer: Peer) -> None:
        """``peer`` keeps its slot but takes no more relays, dates or chat (it is closing)."""
        if peer in self.peers:
            self._retired.add(peer)
        for members in (self.relay_capable, self.date_subscribers, self.chat_capable, self.room):
            members.discard(peer)

    def remove(self, peer: Peer) -> None:
        if peer not in self.peers:
            return
        self.peers.discard(peer)
        self.retire(peer)
        self._retired.discard(peer)
        name = peer.profile.name
        self._by_profile[name] -= 1
        if not self._by_profile[name]:
            del self._by_profile[name]
        if peer.identity is not None:
            self.identified -= 1

    def __contains__(self, peer: object) -> bool:
        return peer in self.peers

    def __len__(self) -> int:
        return len(self.peers)

    def by_profile(self) -> dict[str, int]:
        return dict(self._by_profile)
