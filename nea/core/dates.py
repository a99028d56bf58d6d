"""The date broadcaster: the current date to every subscriber, every interval.

The LoopingCall runs only while someone is subscribed, so an idle server does no
work. A tick that raises would stop a LoopingCall for good, so a tick never raises:
one failing peer is logged and the others still get their date.
"""

import datetime
from collections.abc import Callable

from twisted.internet.interfaces import IReactorTime
from twisted.internet.task import LoopingCall
from twisted.logger import Logger

from nea.core.peer import Peer, fan_out
from nea.core.registry import IndexedSet
from nea.core.snapshot import DateFigures
from nea.wire.frames import DatePush


def utc_today(clock: IReactorTime) -> str:
    return datetime.datetime.fromtimestamp(clock.seconds(), datetime.UTC).date().isoformat()


class DateBroadcaster:
    log = Logger()

    def __init__(
        self,
        clock: IReactorTime,
        interval: float,
        subscribers: IndexedSet[Peer],
        today: Callable[[], str] | None = None,
    ) -> None:
        self.clock = clock
        self.interval = interval
        self.subscribers = subscribers
        self.today = today or (lambda: utc_today(clock))
        self.ticks = 0
        self._loop = LoopingCall(self._tick)
        self._loop.clock = clock

    @property
    def running(self) -> bool:
        return self._loop.running

    def subscribed(self) -> None:
        """Call after a subscriber joined: starts the loop for the first one.

        The first tick is one interval away, never at once: a client that connects
        and sends a line must read its reply first, not a date.
        """
        if not self._loop.running and len(self.subscribers):
            self._loop.start(self.interval, now=False)

    def unsubscribed(self) -> None:
        """Call after a subscriber left: stops the loop when nobody is left."""
        if self._loop.running and not len(self.subscribers):
            self._loop.stop()

    def figures(self) -> DateFigures:
        return DateFigures(self.ticks, self.running)

    def stop(self) -> None:
        if self._loop.running:
            self._loop.stop()

    def _tick(self) -> None:
        self.ticks += 1
        try:
            fan_out(self.subscribers, DatePush(self.today()))
        except Exception:
            self.log.failure("date push failed; the next tick will try again")
