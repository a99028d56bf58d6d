"""Wiring an instance into a cluster: the bus, its link to Redis, and their lifetime.

The cluster service is the parent of the hub's service: it starts the link before
the hub serves (the hub serves locally until Redis answers), and on stop it lets
the hub drain first (re-forwards from departing clients still travel over Redis),
then withdraws this instance's heartbeat, publishes a leave notice and closes its
connections, so a clean stop leaves no key and no subscription behind.
"""

from twisted.application.service import MultiService

from nea.cluster.bus import RedisBus
from nea.cluster.link import RedisLink
from nea.cluster.names import Namespace, RedisAddress


class ClusterService(MultiService):
    def __init__(self, link: RedisLink) -> None:
        super().__init__()
        self.link = link

    def startService(self) -> None:
        self.link.start()
        super().startService()

    def stopService(self):
        stopped = super().stopService()
        return stopped.addBoth(lambda _: self.link.stop())


def cluster(
    reactor, instance_id: str, address: RedisAddress, name: str, interval: float
) -> tuple[RedisBus, ClusterService]:
    """The bus to give the hub, and the service to put the hub's service under."""
    bus = RedisBus(instance_id, Namespace(name), interval)
    bus.link = RedisLink(reactor, address, bus.channels, bus, interval)
    return bus, ClusterService(bus.link)
