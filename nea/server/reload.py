"""SIGHUP: read the TLS files and the admin token file again, dropping nobody, never dying.

Every TLS listener's key, certificate, chain and client CA are loaded anew;
connections made from then on use them, connections already up keep what they
started with. The admin token file is read again. What cannot be loaded is
kept as it was and logged in one line. (By default a SIGHUP kills a process,
and ``twist`` installs no handler for it, so one is installed here.)
"""

import signal
from collections.abc import Callable
from types import FrameType
from typing import Any

import attrs
from twisted.application.service import Service
from twisted.logger import Logger

log = Logger()


@attrs.frozen
class ReloadStep:
    """One thing to read again: what it is (for the log) and how."""

    what: str
    #: Raises OSError or ValueError (CertificateError is one) when it cannot.
    load: Callable[[], None]


class Reloader:
    def __init__(self, steps: list[ReloadStep]) -> None:
        self.steps = steps

    def reload(self) -> None:
        for step in self.steps:
            try:
                step.load()
            except (OSError, ValueError) as e:
                log.error(
                    "reload of {what} failed, still using the old one: {why}",
                    what=step.what,
                    why=str(e),
                )
            else:
                log.info("reloaded {what}", what=step.what)


class SignalReloadService(Service):
    """Runs ``reloader.reload`` in the reactor thread on every SIGHUP while running."""

    def __init__(self, reloader: Reloader, reactor) -> None:
        self.reloader = reloader
        self.reactor = reactor
        self._previous: Callable[[int, FrameType | None], Any] | int | None = None

    def startService(self) -> None:
        super().startService()
        self._previous = signal.signal(signal.SIGHUP, self._hangup)

    def stopService(self) -> None:
        super().stopService()
        if self._previous is not None:
            signal.signal(signal.SIGHUP, self._previous)
            self._previous = None

    def _hangup(self, signum, frame) -> None:
        # In a signal handler: hand over to the reactor, never work here.
        self.reactor.callFromThread(self.reloader.reload)
