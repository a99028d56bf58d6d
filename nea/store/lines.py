"""History lines as values, and the interface every history store provides.

Joins and leaves are not lines of history: they are presence, announced live.
Keeping them would fill ``history N`` and the newcomer's replay with the churn
of browsers that reconnect, and make every reconnection a database write.
"""

import enum
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import ClassVar, Protocol

import attrs
from twisted.internet.defer import Deferred


class Kind(enum.Enum):
    CHAT = "chat"  #: a client said it; ``name`` is the client's
    BROADCAST = "broadcast"  #: the operator said it (console or ``POST /broadcast``); no name


class StoreError(Exception):
    """The store failed or refused; the message is one line, fit for a log or status."""


class SchemaError(StoreError):
    """The database holds a history schema newer than this nea's: waiting will not help."""


@attrs.frozen
class Line:
    """A line as said, before the store has given it an id.

    The store's writer hands a `Line` back instead of a `StoredLine` when it could
    not store it: ``id`` is None for exactly those lines.
    """

    kind: Kind
    name: str | None
    text: str
    time: datetime  #: when it was said, in UTC
    id: ClassVar[None] = None

    @classmethod
    def at(cls, seconds: float, kind: Kind, name: str | None, text: str) -> "Line":
        """A line said ``seconds`` after the epoch (the reactor's ``seconds()``)."""
        return cls(kind, name, text, datetime.fromtimestamp(seconds, UTC))

    def stored(self, id: int) -> "StoredLine":
        return StoredLine(id, self.kind, self.name, self.text, self.time)


@attrs.frozen
class StoredLine:
    """A line the store holds, under the id it gave it (ids only grow)."""

    id: int
    kind: Kind
    name: str | None
    text: str
    time: datetime


class HistoryStore(Protocol):
    """Where lines are kept. Every method returns a Deferred and never blocks the reactor."""

    #: What the operator named (password left out), for status and logs.
    name: str
    #: False only for the ``none`` store, which keeps nothing.
    enabled: bool
    #: Whether the instances of a cluster may share it (ids stay cluster-wide and ordered).
    cluster_safe: bool

    def open(self) -> Deferred[None]:
        """Connect, and create or migrate the schema (fails with `StoreError` on a newer one)."""

    def append(self, lines: Sequence[Line]) -> Deferred[list[StoredLine]]:
        """Store ``lines`` in one transaction, their ids growing in the order given."""

    def since(self, last_id: int, limit: int) -> Deferred[list[StoredLine]]:
        """Up to ``limit`` lines with an id above ``last_id``, oldest first."""

    def latest(self, count: int) -> Deferred[list[StoredLine]]:
        """The last ``count`` lines, oldest first."""

    def probe(self) -> Deferred[None]:
        """A small write (no line): whether the store takes writes again after failing."""

    def trim(self, keep: int | None, most: int, keep_bytes: int | None = None) -> Deferred[int]:
        """Delete up to ``most`` of the oldest lines beyond the newest ``keep``, and beyond
        the newest that hold ``keep_bytes`` (`octets`); None: no such bound. How many went."""

    def compact(self) -> Deferred[None]:
        """Give the space of deleted lines back (to the disk, or to the table for reuse)."""

    def close(self) -> Deferred[None]:
        """Disconnect; the store may be opened again."""


#: The highest id a store gives (PostgreSQL's BIGINT, SQLite's INTEGER).
MAX_ID = 2**63 - 1


def octets(line: Line | StoredLine) -> int:
    """What a line weighs for ``--history-max-bytes``: its text and name in UTF-8."""
    return len(line.text.encode("utf-8", "surrogatepass")) + len(
        (line.name or "").encode("utf-8", "surrogatepass")
    )


def check_count(what: str, value: int) -> int:
    """``value`` if it is a non-negative int, else ValueError (a count from a client or option)."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError(f"{what} must be a non-negative integer, not {value!r}")
    return value
