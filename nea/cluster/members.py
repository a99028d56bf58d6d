"""Who else is in the cluster: the table of live members as last read from Redis.

Membership is soft state rebuilt from the heartbeat keys at every beat. A member
is gone when its key has expired (killed, or cut off from Redis), when its key
shows a new ``run`` (it restarted, or reconnected to Redis and may have missed
messages meanwhile), when it says it leaves, or when a delivery published to it
reached no subscriber. A run declared dead is not taken back from a stale key.
"""

import attrs

from nea.core.snapshot import MemberFigures


@attrs.frozen
class Member:
    run: str
    figures: MemberFigures
    #: Relay-capable connections as announced; zero after it bounced a delivery, and for a
    #: member whose heartbeat record this instance cannot read.
    weight: int


class MemberTable:
    """The other instances (never this one) that are alive as far as we know."""

    def __init__(self) -> None:
        self.members: dict[str, Member] = {}
        #: ``(id, run)`` declared dead (left, or unreachable) while its key may linger.
        self.dead: set[tuple[str, str]] = set()
        #: `weights`, kept between changes: every relay asks for them.
        self._weights: dict[str, int] | None = None

    def update(self, seen: dict[str, Member]) -> list[str]:
        """Take a fresh discovery; return the ids that are gone (absent, or a new run)."""
        self.dead &= {(name, m.run) for name, m in seen.items()}
        live = {name: m for name, m in seen.items() if (name, m.run) not in self.dead}
        gone = [
            name
            for name, old in self.members.items()
            if name not in live or live[name].run != old.run
        ]
        self.members, self._weights = live, None
        return gone

    def remove(self, name: str, run: str | None = None) -> bool:
        """Declare ``name`` (its current run, or ``run``) dead; True if it was a member."""
        member = self.members.get(name)
        if member is None or (run is not None and member.run != run):
            if run is not None:
                self.dead.add((name, run))
            return False
        self.dead.add((name, member.run))
        del self.members[name]
        self._weights = None
        return True

    def clear(self) -> None:
        """Forget everyone (our own link to Redis is down: we cannot know who lives)."""
        self.members, self._weights = {}, None

    def emptied(self, name: str) -> None:
        """``name`` had no relay-capable connection when asked: stop drawing it until it beats."""
        member = self.members.get(name)
        if member is not None:
            self.members[name] = attrs.evolve(member, weight=0)
            self._weights = None

    def weights(self) -> dict[str, int]:
        """Each member's weight as a relay target (do not change what is returned)."""
        if self._weights is None:
            self._weights = {name: m.weight for name, m in self.members.items()}
        return self._weights

    def figures(self) -> list[MemberFigures]:
        return [m.figures for m in self.members.values()]
