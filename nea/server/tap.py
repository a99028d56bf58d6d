"""The module twistd and twist load for ``nea-server`` (see twisted/plugins/nea_plugin.py):
the options, what has to exist before the service tree is built, and the tree.
"""

import signal
import sys
from pathlib import Path

from twisted.application.service import Service
from twisted.internet.error import ReactorNotRunning
from twisted.logger import Logger
from twisted.python import usage

from nea.net.startup import StartupError
from nea.server import collector, options, service, workers
from nea.server.settings import ListenerSettings, Settings
from nea.tls import devcerts

__all__ = ["Options", "makeService"]

log = Logger()


class Options(options.Options):
    """The options as the command line parses them: a mistake is one line, not the help.

    twistd and twist answer a usage error with the whole ``--help`` text around
    it; the one line that matters gets lost in it.
    """

    def parseOptions(self, options=None) -> None:
        #: As given: what a --workers supervisor runs its workers with.
        self.arguments = list(sys.argv[1:] if options is None else options)
        try:
            super().parseOptions(options)
        except usage.UsageError as e:
            raise StartupError(f"{e} (--help lists the options)") from None


def makeService(config) -> Service:
    """One instance, or with ``--workers`` above 1 the supervisor of that many."""
    from twisted.internet import reactor

    settings = Settings.from_options(config)
    ensure_dev_certs(settings.listeners)
    top: Service
    if settings.workers.count > 1:
        top = workers.supervisor_service(settings, config.arguments, reactor)
    else:
        top = service.instance_service(settings, reactor)
    reactor.callWhenRunning(TermStops(reactor).install)
    collector.tune()
    reactor.callWhenRunning(collector.freeze_startup)
    return top


def ensure_dev_certs(listeners: ListenerSettings) -> None:
    """Generate the development certificates (in ``listeners.dev_certs``, resolved when the
    options were read) when an ssl listener names files there and some are missing.

    So that ``make run`` serves TLS from a fresh clone; a listener whose files are
    elsewhere never gets any generated (a missing file there is the operator's fault).
    """
    dev: Path = listeners.dev_certs
    for listen in listeners.listen:
        files = listen.certificate_files()
        missing = [f for f in files if not f.exists()]
        if missing and all(f.resolve().parent == dev for f in files):
            try:
                generated = devcerts.generate_missing(dev, files)
            except OSError as e:
                raise StartupError(
                    f"cannot write development certificates in {dev}: {e.strerror}; make it "
                    "writable, or give --dev-certs another directory"
                ) from None
            if generated:
                log.info("generated development certificates in {dir}", dir=str(dev))
            return


class TermStops:
    """SIGTERM stops the reactor, so the instance drains, and the process then exits 0.

    Twisted's own SIGTERM handler remembers the signal, and twist and twistd send
    it to themselves again once the reactor has stopped: a clean drain would end
    as "killed by signal 15", which supervisors and scripts read as a crash.
    SIGTERM is how systemd, container runtimes and operators ask nea to stop, so
    it is answered like a stop that was asked for. Installed once the reactor
    runs, after (and so in place of) Twisted's handler; SIGINT keeps Twisted's.
    """

    def __init__(self, reactor) -> None:
        self.reactor = reactor

    def install(self) -> None:
        signal.signal(signal.SIGTERM, self._received)

    def _received(self, signum, frame) -> None:
        self.reactor.callFromThread(self._stop)

    def _stop(self) -> None:
        try:
            self.reactor.stop()
        except ReactorNotRunning:
            log.info("Received SIGTERM again: already stopping")
        else:
            log.info("Received SIGTERM: draining, then exiting")
