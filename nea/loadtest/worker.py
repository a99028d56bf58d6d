"""One worker process: its share of the clients, started at their drawn moments.

The command (`nea.loadtest.cli`) spawns workers as ``python -m nea.loadtest
--worker CONFIG`` and talks to them in JSON lines: a worker says ``ready`` once
it is set up, waits for ``{"go": T0}`` on stdin (T0 is a wall-clock time shared
by all workers, so their windows line up), writes ``progress`` every interval,
and ends with ``result`` (its `Tally`, its own CPU time included).

A worker runs Twisted's asyncio reactor, so that its clients can dial through
`nea.loadtest.dialler` (asyncio sockets and the stdlib ``ssl`` module).
"""

import asyncio
import json
import os
import random
import resource
import time
from collections.abc import Callable
from typing import Any

import attrs
from twisted.internet import defer, stdio
from twisted.internet.interfaces import IReactorTime, IStreamClientEndpoint, ITransport
from twisted.internet.protocol import connectionDone
from twisted.internet.task import LoopingCall
from twisted.protocols.basic import LineReceiver
from twisted.python.failure import Failure

from nea.client import delays
from nea.client.redial import DialConfig
from nea.client.relay import RelayClient, RelayConfig
from nea.loadtest.client import BACKOFF, Tallying
from nea.loadtest.dialler import AsyncioEndpoint, client_context
from nea.loadtest.tally import Tally

#: Clients started in one go when the worker has fallen behind its schedule (a
#: starved CPU): the rest wait for the next reactor turn, so that connections
#: already open keep being served instead of the worker dialling for seconds.
MAX_BURST = 100
#: Seconds between looks while the worker has as many clients active as allowed.
FULL_POLL = 0.01
#: File descriptors a worker keeps for itself (stdio, epoll, ...) below its limit.
FD_RESERVE = 100


@attrs.frozen
class Clients:
    """What the clients of one worker share: how they dial, behave and report."""

    endpoint: IStreamClientEndpoint
    clock: IReactorTime
    config: RelayConfig
    rng: random.Random
    observer: Tallying

    @property
    def tally(self) -> Tally:
        return self.observer.tally

    def start(self, text: str) -> None:
        client = RelayClient(text, self.endpoint, self.clock, self.config, self.observer, self.rng)
        self.observer.start(client)


class Schedule:
    """Starts ``count`` clients at random offsets in [0, window) after ``t0``.

    One pending timer at a time (not one per client): it starts every client that
    is due, then sleeps until the next one. With ``max_active``, a client that is
    due waits while that many are active (so a starved server gets a closed loop
    instead of an ever-growing backlog, and the worker never runs out of file
    descriptors); the report's rates and durations show how late they started.
    """

    def __init__(
        self,
        clients: Clients,
        count: int,
        window: float,
        texts: Callable[[int], str],
        max_active: int | None = None,
    ) -> None:
        self.clients = clients
        self.max_active = max_active
        self.offsets = sorted(clients.rng.uniform(0, window) for _ in range(count))
        self.texts = texts
        self.next = 0
        self.t0 = 0.0
        self.done: defer.Deferred = defer.Deferred()
        clients.tally.count("clients", count)

    def run(self, t0: float) -> defer.Deferred:
        """Start the clients relative to ``t0`` (clock seconds); fires when all have finished."""
        self.t0 = t0
        self._start_due()
        return self.done

    def _start_due(self) -> None:
        clock = self.clients.clock
        elapsed = clock.seconds() - self.t0
        burst = self.next + MAX_BURST
        while self.next < min(burst, len(self.offsets)) and self.offsets[self.next] <= elapsed:
            if self.max_active is not None and self.clients.observer.active >= self.max_active:
                clock.callLater(FULL_POLL, self._start_due)  # late, rather than over the cap
                return
            self.clients.start(self.texts(self.next))
            self.next += 1
        if self.next < len(self.offsets):
            clock.callLater(max(0.0, self.offsets[self.next] - elapsed), self._start_due)
        else:
            self._check_done()

    def _check_done(self) -> None:
        if self.clients.observer.active or self.done.called:
            if not self.done.called:
                self.clients.clock.callLater(0.05, self._check_done)
            return
        self.done.callback(self.clients.tally)

    def progress(self) -> dict[str, Any]:
        counts = self.clients.tally.counts
        return {
            "started": counts["started"],
            "acked": counts["acked"],
            "failed": counts["failed"],
            "active": self.clients.observer.active,
            "retrying": self.clients.observer.retrying,
            "retries": counts["retries"],
        }


def cpu_seconds() -> float:
    times = os.times()
    return times.user + times.system


def raise_fd_limit() -> int:
    """Lift the soft open-files limit to the hard one; the limit now in force."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def make_clients(config: dict[str, Any], reactor, endpoint) -> Clients:
    """A worker's `Clients`, dialling through ``endpoint``."""
    dial = DialConfig(
        tls=config["tls"], backoff=BACKOFF, ca=config["ca"] if config["tls"] else None
    )
    relay = RelayConfig(
        dial=dial,
        timeout=config["timeout"],
        ok_delay=delays.parse(config["ok_delay"]),
        retries=config["retries"],
    )
    return Clients(
        endpoint, reactor, relay, random.Random(config["seed"]), Tallying(Tally(), time.time)
    )


class Control(LineReceiver):
    """The worker's stdio: JSON lines out to the command, the ``go`` line in."""

    transport: ITransport  # twisted.internet.stdio.StandardIO

    delimiter = b"\n"

    def __init__(self) -> None:
        self.go: defer.Deferred = defer.Deferred()
        self.closed: defer.Deferred = defer.Deferred()

    def emit(self, kind: str, **fields: Any) -> None:
        self.sendLine(json.dumps({"type": kind, **fields}).encode())

    def lineReceived(self, line: bytes) -> None:
        if not self.go.called:
            self.go.callback(json.loads(line)["go"])

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        if not self.go.called:
            self.go.errback(reason)
        self.closed.callback(None)


def dial_endpoint(config: dict[str, Any], loop: asyncio.AbstractEventLoop) -> AsyncioEndpoint:
    """Where a worker's clients dial; the attempt's timeout also bounds each connect."""
    context = client_context(config["ca"]) if config["tls"] else None
    return AsyncioEndpoint(
        loop,
        config["host"],
        config["port"],
        context,
        config["server_name"],
        config["timeout"],
        config["sources"],
    )


@defer.inlineCallbacks
def run(reactor, loop: asyncio.AbstractEventLoop, config: dict[str, Any]):
    """The worker's whole life, as driven by the command; ``reactor`` runs on ``loop``."""
    fds = raise_fd_limit()
    clients = make_clients(config, reactor, dial_endpoint(config, loop))
    index, workers, run_id = config["index"], config["workers"], config["run_id"]
    schedule = Schedule(
        clients,
        config["clients"],
        config["window"],
        texts=lambda i: f"{run_id}.{index + i * workers}",
        # One socket per active client: never more than the process may open.
        max_active=min(config["max_active"] or fds, fds - FD_RESERVE),
    )
    control = Control()
    stdio.StandardIO(control, reactor=reactor)
    emit = control.emit
    emit("ready", index=index)
    t0 = yield control.go
    cpu_before = cpu_seconds()
    ticker = LoopingCall(lambda: emit("progress", index=index, **schedule.progress()))
    ticker.clock = reactor
    ticker.start(config["progress"], now=False)
    tally = yield schedule.run(t0)
    ticker.stop()
    tally.cpu_seconds = cpu_seconds() - cpu_before
    emit("progress", index=index, **schedule.progress())
    emit("result", index=index, tally=tally.to_json())
    control.transport.loseConnection()  # flushes the result before the reactor stops
    yield control.closed
    return tally
