"""What the chat room needs of a history store, without knowing one.

The core does not import `nea.store`: it asks a `History` (a `HistoryWriter`
and a `HistoryReader`) for what it needs, with lines as `Entry` values, and
`nea.server.history` adapts the store and its writer to it. `NoHistory` is
``--store none``, and the default of a hub built without a store (tests).
"""

from datetime import UTC, datetime
from typing import Protocol as TypingProtocol

import attrs
from twisted.internet import defer
from twisted.internet.interfaces import IReactorTime

from nea.core.snapshot import StoreFigures

CHAT, BROADCAST = "chat", "broadcast"


@attrs.frozen
class Entry:
    """A chat line or operator broadcast; ``id`` None when it went out unsaved."""

    id: int | None
    kind: str  #: `CHAT` or `BROADCAST`
    name: str | None  #: who said it; None for a broadcast
    text: str
    time: str  #: ISO 8601 UTC with milliseconds, ``2026-12-01T19:40:00.123Z``


def iso_time(moment: datetime) -> str:
    """``moment`` as the wire shows it: UTC, milliseconds, ``Z``."""
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


class Unavailable(Exception):
    """History cannot be read now: it is off, or its store is degraded (the message says)."""


class HistoryWriter(TypingProtocol):
    @property
    def full(self) -> bool:
        """The store is so far behind that a line said now is refused (``history_busy``)."""

    def write(self, kind: str, name: str | None, text: str) -> defer.Deferred:
        """Fires with the `Entry` (stored or not), in the order written; never fails."""

    def caught_up(self) -> defer.Deferred | None:
        """None while chat may be read; else fires once the store has caught up."""


class HistoryReader(TypingProtocol):
    @property
    def available(self) -> bool:
        """Whether reads are served now (history on, and its store not degraded)."""

    def since(self, last_id: int, limit: int) -> defer.Deferred:
        """Up to ``limit`` entries with an id above ``last_id``, oldest first."""

    def latest(self, count: int) -> defer.Deferred:
        """The last ``count`` entries, oldest first."""


class History(HistoryWriter, HistoryReader, TypingProtocol):
    def figures(self) -> StoreFigures: ...


class NoHistory:
    """History off: every line goes out at once, unsaved; nothing can be read back."""

    available = False
    full = False

    def __init__(self, clock: IReactorTime) -> None:
        self.clock = clock

    def write(self, kind: str, name: str | None, text: str) -> defer.Deferred:
        moment = datetime.fromtimestamp(self.clock.seconds(), UTC)
        return defer.succeed(Entry(None, kind, name, text, iso_time(moment)))

    def caught_up(self) -> None:
        return None

    def since(self, last_id: int, limit: int) -> defer.Deferred:
        return defer.succeed([])

    def latest(self, count: int) -> defer.Deferred:
        return defer.succeed([])

    def figures(self) -> StoreFigures:
        return StoreFigures("none", "off", 0, 0, 0, 0, None)
