"""``makeService``: the service tree of one nea instance."""

from pathlib import Path

from twisted.application.service import MultiService, Service
from twisted.internet import defer, task
from twisted.logger import Logger

from nea.cluster.service import cluster
from nea.core.bus import LocalBus
from nea.core.hub import Hub, HubConfig
from nea.http.site import http_listener
from nea.server.connection import NeaFactory
from nea.server.console import ConsoleService
from nea.server.listeners import ListeningService
from nea.tls import devcerts

log = Logger()


class HubService(Service):
    """Owns the hub's lifetime: on stop it drains the clients, then stops the date loop.

    It is the first child of the tree, so it stops last, after the listeners have
    stopped accepting.
    """

    def __init__(self, hub: Hub, reactor, drain_timeout: float) -> None:
        self.hub = hub
        self.reactor = reactor
        self.drain_timeout = drain_timeout

    def stopService(self):
        super().stopService()
        self.hub.drain()
        return self._drained().addBoth(lambda _: self.hub.dates.stop())

    @defer.inlineCallbacks
    def _drained(self):
        deadline = self.reactor.seconds() + self.drain_timeout
        while len(self.hub.registry) and self.reactor.seconds() < deadline:
            yield task.deferLater(self.reactor, 0.05, lambda: None)
        for peer in self.hub.registry.peers:
            peer.transport.abortConnection()


def ensure_dev_certs(config) -> None:
    """Generate development certificates when an ssl listener wants them and they are missing."""
    dev = Path(config["dev-certs"]).resolve()
    for listen in config["listen"]:
        files = listen.certificate_files()
        missing = [f for f in files if not f.exists()]
        if missing and all(f.resolve().parent == dev for f in files):
            devcerts.generate(dev)
            log.info("generated development certificates in {dir}", dir=str(dev))
            return


def makeService(config, reactor=None) -> MultiService:
    if reactor is None:
        from twisted.internet import reactor
    ensure_dev_certs(config)
    parent = MultiService()
    # In a cluster the hub's service runs under the cluster service, which leaves
    # Redis only after the hub has drained (nea.cluster.service).
    hub_parent = parent
    if config["redis"] is None:
        bus = LocalBus(config["instance-id"])
    else:
        bus, hub_parent = cluster(
            reactor, config["instance-id"], config["redis"], config["cluster-name"],
            config["heartbeat"],
        )
        hub_parent.setServiceParent(parent)
    hub = Hub(
        reactor,
        bus,
        HubConfig(max_clients=config["max-clients"], date_interval=config["date-interval"]),
    )
    parent.hub = hub
    HubService(hub, reactor, config["drain-timeout"]).setServiceParent(hub_parent)
    parent.listeners = []
    for listen in config["listen"]:
        factory = NeaFactory(hub, listen.profile, config["max-line"], config["max-outbound"])
        listener = ListeningService(reactor, listen, config["backlog"], factory)
        listener.setServiceParent(parent)
        parent.listeners.append(listener)
    if config["console"]:
        ConsoleService(hub, reactor).setServiceParent(parent)
    parent.http = None
    if config["http"] is not None:
        parent.http = http_listener(reactor, config, hub, parent.listeners)
        parent.http.setServiceParent(parent)
    return parent
