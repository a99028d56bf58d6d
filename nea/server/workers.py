"""``--workers N``: one supervisor process, N worker processes on the same listening ports.

The supervisor serves nothing itself. For every ``--listen`` endpoint and
``--http`` it binds N sockets on the same address with SO_REUSEPORT, one per
worker, and runs each worker as nea-server again with the same options, its own
instance id (``INSTANCE-ID-wK``) and its sockets as inherited file descriptors,
which it adopts (``--inherited-fds``). The kernel spreads new connections evenly
over the sockets (one shared socket would not: an idle worker that wakes first
takes every connection). The workers meet in one cluster over Redis, so a relay
or a chat line crosses between them as between any two instances, and any of
them answers the cluster-wide status and the HTTP API. The supervisor keeps the
sockets: a restarted worker gets its predecessor's, and connections that arrived
in between wait in its backlog.

SIGTERM stops the supervisor's reactor: it passes SIGTERM on, every worker drains
as a single instance does, and the supervisor exits once they all have. SIGHUP
is passed on, each worker reloading its own files. A worker that ends while the
supervisor runs is restarted, after a delay on the `Backoff` schedule that
grows while restarts come quickly one after another.
"""

import os
import random
import re
import signal
import socket
import sys
from collections.abc import Callable, Sequence

from twisted.application.service import Service
from twisted.internet import defer, error, protocol
from twisted.logger import Logger

from nea.net.listening import cannot_listen, server_endpoint, with_backlog
from nea.net.startup import StartupError
from nea.server.reload import Reloader, ReloadStep, SignalReloadService
from nea.server.settings import Settings
from nea.wire.backoff import Backoff

log = Logger()

#: Between restarts of a worker that keeps dying; no jitter (one supervisor, no crowd).
RESTARTS = Backoff(initial=0.5, maximum=10.0, jitter=0.0)
#: A worker that ran this long before it ended starts the schedule over.
STEADY = 10.0
#: The first inherited descriptor in a worker (0-2 are stdin, stdout, stderr).
FIRST_FD = 3


def bind_sockets(settings: Settings, reactor, count: int) -> list[list[socket.socket]]:
    """``count`` sockets on every ``--listen`` endpoint, then ``--http``: one per worker,
    each worker's in that order. A fault is a `StartupError`, as for a single instance."""
    wanted = [
        ("--listen", listen.endpoint, listen.transport_endpoint(settings.listeners.backlog))
        for listen in settings.listeners.listen
    ]
    if settings.http is not None:
        http = settings.http.endpoint
        wanted.append(("--http", http, with_backlog(http, settings.http.backlog)))
    each = []
    for option, text, endpoint in wanted:
        server_endpoint(reactor, option, text, [], endpoint)  # its faults, in its words
        each.append(reuseport_sockets(option, text, endpoint, count))
        log.info(
            "{option} {endpoint}: port {port} shared by {count} workers",
            option=option,
            endpoint=text,
            port=each[-1][0].getsockname()[1],
            count=count,
        )
    return [list(sockets) for sockets in zip(*each, strict=True)]


#: The ':' that separate an endpoint string's fields (an IPv6 interface escapes its own).
_FIELDS = re.compile(r"(?<!\\):")


def reuseport_sockets(option: str, text: str, endpoint: str, count: int) -> list[socket.socket]:
    """``count`` listening sockets on the address of the tcp endpoint string ``endpoint``,
    bound with SO_REUSEPORT: the kernel spreads new connections evenly over them.

    Port 0 is the port the kernel gives the first; a fault is a `StartupError`.
    """
    kind, *fields = _FIELDS.split(endpoint)
    if kind not in ("tcp", "tcp6"):
        raise StartupError(f"{option} {text}: --workers shares tcp: and ssl: endpoints only")
    named = dict(f.replace("\\:", ":").partition("=")[::2] for f in fields if "=" in f)
    positional = [f for f in fields if "=" not in f]
    host = named.get("interface") or ("::" if kind == "tcp6" else "0.0.0.0")
    port = int(named.get("port") or (positional[0] if positional else 0))
    sockets: list[socket.socket] = []
    try:
        for _ in range(count):
            listening = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET)
            sockets.append(listening)
            listening.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            listening.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            listening.bind((host, port))
            listening.listen(int(named.get("backlog", 50)))
            port = listening.getsockname()[1]
    except OSError as e:
        for listening in sockets:
            listening.close()
        raise StartupError(cannot_listen(option, text, e)) from None
    return sockets


def worker_command(
    arguments: Sequence[str], instance_id: str, filenos: int
) -> Callable[[int], list[str]]:
    """The argv of worker ``k``: nea-server with the supervisor's own ``arguments``, as one
    worker named ``INSTANCE-ID-wK`` on ``filenos`` inherited sockets (later options win)."""
    inherited = ",".join(str(FIRST_FD + i) for i in range(filenos))

    def command(k: int) -> list[str]:
        return [
            sys.executable,
            "-m",
            "twisted",
            "nea-server",
            *arguments,
            "--workers",
            "1",
            "--instance-id",
            f"{instance_id}-w{k}",
            "--inherited-fds",
            inherited,
        ]

    return command


class _Worker(protocol.ProcessProtocol):
    """One worker process: tells the supervisor when it ends."""

    def __init__(self, supervisor: "Supervisor", index: int) -> None:
        self.supervisor = supervisor
        self.index = index
        self.ended: defer.Deferred = defer.Deferred()

    def processEnded(self, reason) -> None:
        self.supervisor.ended(self, reason.value)
        self.ended.callback(None)


class Supervisor(Service):
    """Runs a worker (``command(k)``, k from 1) on each list of listening ``sockets``."""

    def __init__(
        self, reactor, command: Callable[[int], list[str]], sockets: list[list[socket.socket]]
    ) -> None:
        self.reactor = reactor
        self.count = len(sockets)
        self.command = command
        self.sockets = sockets
        self.workers: dict[int, _Worker] = {}
        self.started: dict[int, float] = {}
        self.attempts: dict[int, int] = {}
        self.pending: dict[int, object] = {}
        self.reloads = SignalReloadService(
            Reloader([ReloadStep("the workers (SIGHUP passed on)", self.hangup)]), reactor
        )
        self.rng = random.Random()

    def startService(self) -> None:
        super().startService()
        self.reloads.startService()
        for k in range(1, self.count + 1):
            self.spawn(k)

    def spawn(self, k: int) -> None:
        self.pending.pop(k, None)
        worker = _Worker(self, k)
        fds: dict[int, int | str] = {0: "w", 1: 1, 2: 2}
        fds.update({FIRST_FD + i: s.fileno() for i, s in enumerate(self.sockets[k - 1])})
        process = self.reactor.spawnProcess(
            worker, sys.executable, self.command(k), dict(os.environ), childFDs=fds
        )
        self.workers[k] = worker
        self.started[k] = self.reactor.seconds()
        log.info("worker {index} started, pid {pid}", index=k, pid=process.pid)

    def ended(self, worker: _Worker, reason) -> None:
        k = worker.index
        del self.workers[k]
        if not self.running:
            return
        lived = self.reactor.seconds() - self.started[k]
        attempt = 0 if lived >= STEADY else self.attempts.get(k, -1) + 1
        self.attempts[k] = attempt
        delay = RESTARTS.delay(attempt, self.rng)
        log.warn(
            "worker {index} ended unexpectedly ({reason}); restarting it in {delay:.1f} s",
            index=k,
            reason=str(reason),
            delay=delay,
        )
        self.pending[k] = self.reactor.callLater(delay, self.spawn, k)

    def hangup(self) -> None:
        self.signal_all(signal.SIGHUP)

    def signal_all(self, signum: int) -> None:
        for worker in list(self.workers.values()):
            try:
                if worker.transport is not None:
                    worker.transport.signalProcess(signum)
            except error.ProcessExitedAlready:
                pass

    def stopService(self) -> defer.Deferred:
        super().stopService()
        self.reloads.stopService()
        for call in self.pending.values():
            call.cancel()  # type: ignore[attr-defined]
        self.pending.clear()
        ended = [w.ended for w in self.workers.values()]
        log.info(
            "stopping {count} workers: they drain, then this supervisor exits", count=len(ended)
        )
        self.signal_all(signal.SIGTERM)
        return defer.gatherResults(ended).addCallback(lambda _: None)


def supervisor_service(settings: Settings, arguments: Sequence[str], reactor) -> Supervisor:
    """The supervisor of ``settings.workers.count`` workers, run with ``arguments``."""
    sockets = bind_sockets(settings, reactor, settings.workers.count)
    command = worker_command(arguments, settings.cluster.instance_id, len(sockets[0]))
    return Supervisor(reactor, command, sockets)
