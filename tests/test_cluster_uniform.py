"""Relay targets (and service members) are uniform over the cluster, not over instances.

A chi-square goodness-of-fit test with fixed seeds (deterministic, so never
flaky): 16 relay-capable connections spread 1/4/11 over three instances, 16,000
relays, each connection expected 1,000 times. With 15 degrees of freedom the
statistic exceeds 37.70 with probability 0.001 under uniformity. The same
statistic over the three instances rejects uniformity by a wide margin, which shows
it can fail, and that nea does not pick an instance first, then a connection.
"""

import random

from twisted.internet.task import Clock
from twisted.trial import unittest

from nea.core.hub import Hub
from nea.core.testing import FakePeer, MemoryCluster
from nea.wire import frames
from nea.wire.profiles import RELAY
from tests.test_cluster_bus import Cluster

SPREAD = {"a": 1, "b": 4, "c": 11}
RELAYS = 16_000
CRITICAL_DF15_P001 = 37.70
CRITICAL_DF2_P001 = 13.82


def chi_square(counts: list[int], total: int) -> float:
    expected = total / len(counts)
    return sum((c - expected) ** 2 / expected for c in counts)


def relay_counts(hubs: dict[str, Hub], joined=lambda: None, flush=lambda: None) -> list[int]:
    """Send RELAYS relays from instance a; count where each lands (acking each at once)."""
    peers = {name: [FakePeer(RELAY) for _ in range(n)] for name, n in SPREAD.items()}
    for name, group in peers.items():
        for peer in group:
            hubs[name].join(peer)
    joined()
    waiter = FakePeer()  # not itself a connection of the cluster
    counts = {peer: 0 for group in peers.values() for peer in group}
    owner = {peer: name for name, group in peers.items() for peer in group}
    for n in range(RELAYS):
        hubs["a"].relay(waiter, f"r{n}")
        flush()
        (target,) = [peer for peer in counts if peer.lines]
        peer_push = target.take()
        counts[target] += 1
        hubs[owner[target]].handle(target, frames.Ack(peer_push[0].text))
        flush()
    assert len(waiter.take()) == RELAYS, "every relay acked"
    return list(counts.values())


def memory_cluster() -> dict[str, Hub]:
    """The instances of `SPREAD` on one `MemoryCluster`, each with a seeded generator."""
    cluster = MemoryCluster()
    return {
        name: Hub(Clock(), cluster.bus(name), rng=random.Random(seed))
        for seed, name in enumerate(SPREAD)
    }


def member_counts(hubs: dict[str, Hub], joined=lambda: None, flush=lambda: None) -> list[int]:
    """Send RELAYS requests to service ``s`` from instance a; count where each lands."""
    members = {name: [FakePeer() for _ in range(n)] for name, n in SPREAD.items()}
    for name, group in members.items():
        for member in group:
            hubs[name].join(member)
            hubs[name].handle(member, frames.Serve("s"))
            member.take()
    joined()
    asker = FakePeer()
    counts = {member: 0 for group in members.values() for member in group}
    owner = {member: name for name, group in members.items() for member in group}
    for n in range(RELAYS):
        hubs["a"].ask(asker, str(n), None, "s", n)
        flush()
        (target,) = [member for member in counts if member.lines]
        [request] = target.take()
        counts[target] += 1
        hubs[owner[target]].handle(target, frames.Reply(request.id, "ok"))
        flush()
    assert len(asker.take()) == RELAYS, "every request answered"
    return list(counts.values())


class Uniformity(unittest.TestCase):
    def test_service_members_are_drawn_uniformly_over_the_cluster(self):
        counts = member_counts(memory_cluster())
        self.assertLess(chi_square(counts, RELAYS), CRITICAL_DF15_P001, counts)

    def test_redis_bus_draws_service_members_uniformly_by_heartbeat(self):
        cluster = Cluster(list(SPREAD), seed=11)
        counts = member_counts(cluster.hubs, cluster.discover, cluster.pubsub.flush)
        self.assertLess(chi_square(counts, RELAYS), CRITICAL_DF15_P001, counts)

    def test_memory_cluster_draws_connections_uniformly(self):
        counts = relay_counts(memory_cluster())
        self.assertLess(chi_square(counts, RELAYS), CRITICAL_DF15_P001, counts)

    def test_redis_bus_weights_by_heartbeat_draw_uniformly(self):
        cluster = Cluster(list(SPREAD), seed=7)
        counts = relay_counts(cluster.hubs, cluster.discover, cluster.pubsub.flush)
        self.assertLess(chi_square(counts, RELAYS), CRITICAL_DF15_P001, counts)

    def test_instances_are_not_drawn_uniformly(self):
        """The same run seen per instance is far from uniform: the chi-square test can fail.

        "Pick an instance, then a connection" would give each instance a third of the
        relays; nea gives them 1/16, 4/16 and 11/16.
        """
        counts = relay_counts(memory_cluster())
        sizes = list(SPREAD.values())
        per_instance = [
            sum(counts[sum(sizes[:i]) : sum(sizes[: i + 1])]) for i in range(len(sizes))
        ]
        self.assertGreater(chi_square(per_instance, RELAYS), 100 * CRITICAL_DF2_P001, per_instance)
