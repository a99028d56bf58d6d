"""``makeService``: the service tree of one nea instance.

It only builds services: what has to exist before (the development certificates)
is made by `nea.server.tap`, the step twistd runs first.
"""

import itertools

import attrs
from twisted.application.service import MultiService, Service
from twisted.internet import defer, task
from twisted.internet.protocol import Factory
from twisted.logger import Logger

from nea.cluster.names import RedisAddress
from nea.cluster.redislink import RedisLink
from nea.cluster.service import cluster
from nea.core.bus import Bus, LocalBus
from nea.core.hub import Hub
from nea.http.auth import read_token_file
from nea.http.site import HttpListener, http_listener
from nea.net.listening import ListeningService
from nea.net.startup import StartupError
from nea.server import websocket
from nea.server.admission import Admission
from nea.server.connection import NeaFactory
from nea.server.console import ConsoleService
from nea.server.history import Reopening, StoreHistory
from nea.server.listeners import ClientListener
from nea.server.reload import Reloader, ReloadStep, SignalReloadService
from nea.server.settings import Settings, StoreSettings
from nea.server.ws import websocket_endpoint
from nea.store.lines import SchemaError, StoreError
from nea.store.sql import SQLStore
from nea.store.trimmer import Trimmer
from nea.store.url import parse_store
from nea.store.writer import StoreWriter
from nea.tls.server import HandshakeGate

log = Logger()

#: Seconds between two batches of a paced drain.
DRAIN_TICK = 0.1
#: Seconds the last clients told to go have to close before they are dropped.
DRAIN_GRACE = 1.0


class InstanceService(MultiService):
    """One instance: its listeners, console, HTTP API and cluster link around one hub.

    Children start in the order they were added. Stopping (SIGTERM) goes in phases,
    so that nothing in flight is lost and operators can watch it happen:

    1. the client listeners stop accepting and the console stops reading;
    2. the hub drains: newcomers are refused, and the clients are told
       ``shutting_down`` and closed in batches spread evenly over ``drain_timeout``
       (all at once when it is 0), so that they do not all reconnect elsewhere in
       the same instant; whoever is left ``drain_timeout`` after the start, and at
       least `DRAIN_GRACE` after the last batch, is dropped; the date loop stops;
    3. chat history: the trimmer stops, the writer writes what is queued (within
       its timeout), and the store is closed;
    4. the cluster link leaves Redis (re-forwards from departing clients still
       travelled over it during the drain);
    5. the HTTP API stops last, so ``/healthz`` answers 503 throughout the drain.
    """

    def __init__(self, hub: Hub, reactor, drain_timeout: float) -> None:
        super().__init__()
        self.hub = hub
        self.reactor = reactor
        self.drain_timeout = drain_timeout
        self.listeners: list[ClientListener] = []
        self.console: ConsoleService | None = None
        self.http: HttpListener | None = None
        self.reloads: SignalReloadService | None = None
        self.link: RedisLink | None = None
        self.history: StoreHistory | None = None
        self.trimmer: Trimmer | None = None

    def startService(self) -> None:
        if self.link is not None:
            self.link.start()  # the hub serves locally until Redis answers
        if self.trimmer is not None:
            self.trimmer.start()
        super().startService()

    @defer.inlineCallbacks
    def stopService(self):
        Service.stopService(self)
        if self.reloads is not None:
            self.reloads.stopService()
        front = [*self.listeners, *([self.console] if self.console else [])]
        yield defer.gatherResults([defer.maybeDeferred(s.stopService) for s in front])
        yield self._drained()
        self.hub.stop()
        if self.trimmer is not None:
            self.trimmer.stop()
        if self.history is not None:
            yield self.history.writer.stop()
            yield self.history.store.close()
        if self.link is not None:
            yield self.link.stop()
        if self.http is not None:
            yield self.http.stopService()

    @defer.inlineCallbacks
    def _drained(self):
        start = self.reactor.seconds()
        yield self._shed_evenly(start)
        deadline = max(start + self.drain_timeout, self.reactor.seconds() + DRAIN_GRACE)
        while self.hub.snapshot().connections and self.reactor.seconds() < deadline:
            yield self._tick(0.05)
        self.hub.abort_all()

    @defer.inlineCallbacks
    def _shed_evenly(self, start: float):
        """Close the clients in batches, the n-th of N at about (n - 1) / N of the drain."""
        total = self.hub.drain()
        shed = 0
        for tick in itertools.count(1):  # ends once drain_timeout has passed
            elapsed = self.reactor.seconds() - start
            due = total
            if elapsed < self.drain_timeout:
                due = min(total, int(total * elapsed / self.drain_timeout) + 1)
            self.hub.shed(due - shed)
            shed = due
            if shed == total:
                return
            # On the schedule, not after the last batch: a late batch does not delay the rest.
            yield self._tick(start + tick * DRAIN_TICK - self.reactor.seconds())

    def _tick(self, seconds: float) -> defer.Deferred:
        return task.deferLater(self.reactor, max(0.0, seconds), lambda: None)


def reload_steps(settings: Settings, instance: InstanceService) -> list[ReloadStep]:
    """What a SIGHUP reads again: every TLS listener's files, and the admin token file."""
    steps = [
        ReloadStep(f"TLS files of {listener.listen.endpoint}", listener.contexts.reload)
        for listener in instance.listeners
        if listener.contexts is not None
    ]
    auth = settings.auth
    if auth.permissions is not None:
        steps.append(
            ReloadStep(
                f"permissions file {auth.permissions}",
                lambda: instance.hub.reload_policy(auth.read_policy()),
            )
        )
    path = auth.admin_token_file
    if path is not None and instance.http is not None:
        token = instance.http.site.token
        steps.append(
            ReloadStep(f"admin token file {path}", lambda: token.replace(read_token_file(path)))
        )
    return steps


def open_history(
    settings: StoreSettings, redis: RedisAddress | None, reactor
) -> tuple[StoreHistory, Trimmer | None]:
    """The store ``--store`` names, its schema created or migrated now, with its writer.

    A bad ``--store``, ``--redis`` with a store instances cannot share, a newer
    schema, or a SQLite file that cannot be opened stop the start in one line. A
    PostgreSQL that does not answer does not: nea starts with history degraded,
    and its writer's probes open the store (the schema too) once it answers.
    """
    try:
        store = parse_store(settings.url, reactor)
    except StoreError as e:
        raise StartupError(str(e)) from None
    if redis is not None and not store.cluster_safe:
        raise StartupError(
            f"--store {store.name} cannot be shared by a cluster (--redis): give every "
            "instance the same --store postgresql://..., or --store none"
        )
    down = None
    if isinstance(store, SQLStore):  # what parse_store gives unless the store is none
        try:
            store.open_now()
        except SchemaError as e:
            raise StartupError(str(e)) from None
        except StoreError as e:
            if not store.cluster_safe:
                raise StartupError(f"--store: {e}") from None
            down = str(e)
    writer = StoreWriter(Reopening(store, opened=False), reactor)
    if down is not None:
        log.warn(
            "history store {store} did not answer at start, chat goes on unsaved until"
            " it does: {reason}",
            store=store.name,
            reason=down,
        )
        writer.down(down)
    trimmer = None
    if store.enabled and (settings.history_max or settings.history_max_bytes):
        trimmer = Trimmer(
            writer.store,
            settings.history_max or None,
            reactor,
            keep_bytes=settings.history_max_bytes or None,
        )
    return StoreHistory(writer.store, writer, reactor), trimmer


def makeService(config, reactor=None) -> InstanceService:
    """The service tree for parsed nea-server options ``config`` (the plugin's entry)."""
    return instance_service(Settings.from_options(config), reactor)


def instance_service(settings: Settings, reactor=None) -> InstanceService:
    """The service tree of one instance configured by ``settings``."""
    if reactor is None:
        from twisted.internet import reactor
    link: RedisLink | None = None
    bus: Bus
    cluster_settings = settings.cluster
    if cluster_settings.redis is None:
        bus = LocalBus(cluster_settings.instance_id)
    else:
        bus, link = cluster(
            reactor,
            cluster_settings.instance_id,
            cluster_settings.redis,
            cluster_settings.name,
            cluster_settings.heartbeat,
            cluster_settings.batch_interval,
        )
    history, trimmer = open_history(settings.store, cluster_settings.redis, reactor)
    front = settings.listeners
    gate = HandshakeGate(front.max_handshakes)
    hub = Hub(
        reactor,
        bus,
        settings.hub,
        handshakes=lambda: attrs.asdict(gate.stats),
        history=history,
        tokens=settings.auth.tokens,
    )
    instance = InstanceService(hub, reactor, settings.drain_timeout)
    instance.link = link
    instance.history, instance.trimmer = history, trimmer
    admission = Admission(front.keepalive, front.max_clients_per_ip)
    for listen in front.listen:
        tls = listen.tls_files() is not None
        factory: Factory
        if listen.websocket:
            factory = websocket.listener_factory(
                hub, listen.profile, settings.websocket, None if tls else admission
            )
        else:
            factory = NeaFactory(hub, listen.profile, settings.limits, None if tls else admission)
        listener = ClientListener(
            reactor,
            listen,
            front.backlog,
            factory,
            admission,
            gate,
            front.handshake_timeout,
            front.tls,
        )
        listener.setServiceParent(instance)
        instance.listeners.append(listener)
    if front.console:
        instance.console = ConsoleService(hub, reactor)
        instance.console.setServiceParent(instance)
    if settings.http is not None:
        instance.http = http_listener(
            reactor,
            settings.http,
            hub,
            instance.listeners,
            {b"ws": websocket_endpoint(hub, settings.websocket, admission)},
        )
        instance.http.setServiceParent(instance)
    if settings.workers.inherited is not None:
        listening: list[ListeningService] = [
            *instance.listeners,
            *([instance.http] if instance.http else []),
        ]
        for adopting, fileno in zip(listening, settings.workers.inherited, strict=True):
            adopting.adopt(fileno)
    instance.reloads = SignalReloadService(Reloader(reload_steps(settings, instance)), reactor)
    instance.reloads.setServiceParent(instance)
    return instance
