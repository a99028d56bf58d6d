"""Who else is in the cluster: the table of live members as last read from Redis.

Membership is soft state rebuilt from the heartbeat keys at every beat. A member
is gone when its key has expired (killed, or cut off from Redis), when its key
shows a new ``run`` (it restarted, or reconnected to Redis and may have missed
messages meanwhile), when it says it leaves, or when a delivery published to it
reached no subscriber. A run declared dead is not taken back from a stale key.
"""

import json
from typing import Any

import attrs


@attrs.frozen
class Member:
    run: str
    summary: dict[str, Any]
    #: Relay-capable connections as announced; zero after it bounced a delivery.
    weight: int


def parse_record(data: str) -> Member:
    """A heartbeat record ``{"run": ..., "summary": {...}}``; ValueError if malformed."""
    try:
        record = json.loads(data)
        run, summary = record["run"], record["summary"]
        weight = summary["relay_capable"]
        if not isinstance(run, str) or not isinstance(weight, int) or weight < 0:
            raise TypeError("bad run or relay_capable")
        return Member(run, summary, weight)
    except (ValueError, KeyError, TypeError) as e:
        raise ValueError(f"malformed heartbeat record {data!r}: {e}") from None


def record(run: str, summary: dict[str, Any]) -> str:
    return json.dumps({"run": run, "summary": summary}, separators=(",", ":"))


class MemberTable:
    """The other instances (never this one) that are alive as far as we know."""

    def __init__(self) -> None:
        self.members: dict[str, Member] = {}
        #: ``(id, run)`` declared dead (left, or unreachable) while its key may linger.
        self.dead: set[tuple[str, str]] = set()

    def update(self, seen: dict[str, Member]) -> list[str]:
        """Take a fresh discovery; return the ids that are gone (absent, or a new run)."""
        self.dead &= {(name, m.run) for name, m in seen.items()}
        live = {name: m for name, m in seen.items() if (name, m.run) not in self.dead}
        gone = [
            name
            for name, old in self.members.items()
            if name not in live or live[name].run != old.run
        ]
        self.members = live
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
        return True

    def clear(self) -> None:
        """Forget everyone (our own link to Redis is down: we cannot know who lives)."""
        self.members = {}

    def emptied(self, name: str) -> None:
        """``name`` had no relay-capable connection when asked: stop drawing it until it beats."""
        member = self.members.get(name)
        if member is not None:
            self.members[name] = attrs.evolve(member, weight=0)

    def weights(self) -> dict[str, int]:
        return {name: m.weight for name, m in self.members.items()}

    def summaries(self) -> list[dict[str, Any]]:
        return [m.summary for m in self.members.values()]

