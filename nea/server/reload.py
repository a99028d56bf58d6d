"""SIGHUP: read the TLS files again, without dropping anyone and without dying.

Every TLS listener's key, certificate, chain and client CA are loaded anew;
connections made from then on use them, connections already up keep what they
started with. A file that cannot be loaded leaves that listener's current
context in place and is logged in one line. (By default a SIGHUP kills a
process, and ``twist`` installs no handler for it, so one is installed here.)
"""

import signal
from typing import Callable, Iterable

from twisted.application.service import Service
from twisted.logger import Logger

from nea.tls.server import CertificateError, ContextSource

log = Logger()


class Reloader:
    def __init__(self, sources: Callable[[], Iterable[ContextSource]]) -> None:
        self.sources = sources
        self.reloads = 0

    def reload(self) -> None:
        self.reloads += 1
        for source in self.sources():
            try:
                source.reload()
            except CertificateError as e:
                log.error("reload of {certificate} failed, still serving the old one: {why}",
                          certificate=str(source.files.certificate), why=str(e))
            else:
                log.info("reloaded {certificate}", certificate=str(source.files.certificate))


class SignalReloadService(Service):
    """Runs ``reloader.reload`` in the reactor thread on every SIGHUP while running."""

    def __init__(self, reloader: Reloader, reactor) -> None:
        self.reloader = reloader
        self.reactor = reactor
        self._previous = None

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
