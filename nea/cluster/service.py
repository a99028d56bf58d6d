"""Wiring an instance into a cluster: the bus and its link to Redis.

`nea.server.service.InstanceService` owns the link's lifetime: it starts the link
before the hub serves (the hub serves locally until Redis answers), and on stop
it lets the hub drain first (re-forwards from departing clients still travel over
Redis), then stops the link, which withdraws this instance's heartbeat,
publishes a leave notice and closes its connections, so a clean stop leaves no
key and no subscription behind.
"""

from nea.cluster.names import Namespace, RedisAddress
from nea.cluster.redisbus import RedisBus
from nea.cluster.redislink import RedisLink


def cluster(
    reactor,
    instance_id: str,
    address: RedisAddress,
    name: str,
    interval: float,
    batch_interval: float,
) -> tuple[RedisBus, RedisLink]:
    """The bus to give the hub, and the link whose lifetime the instance service owns."""
    bus = RedisBus(instance_id, Namespace(name), interval)
    bus.link = RedisLink(
        reactor, address, bus.channels, bus, interval, batch_interval=batch_interval
    )
    return bus, bus.link
