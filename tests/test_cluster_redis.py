"""Instances joined by a real redis-server (started by the tests on loopback).

The instances are real service trees in this process, each with its own TLS
listener; clients connect over real TLS. Every test ends by stopping the
instances and checking that Redis holds nothing of the cluster any more.
"""

import itertools
import json
import random

import txredisapi
from twisted.internet import defer, reactor
from twisted.trial import unittest

from nea.cluster import envelope, record
from nea.core.snapshot import status_json
from nea.wire import codec, frames
from tests import infra
from tests.support import WAIT, connect, settle, start_server, tls_listen

_names = itertools.count(1)
#: A member is given up after 3 heartbeats without one: 1.5 s here, so that a test
#: process starved for a moment on a busy machine does not see its peers flap.
HEARTBEAT = "0.5"


def auto_ack(client) -> list[str]:
    """Make ``client`` answer every forwarded ``message X`` with ``ok X`` at once.

    Returns the list of texts it was forwarded; other lines queue up as usual.
    """
    forwarded: list[str] = []
    queue_line = client.lineReceived

    def line_received(line: bytes) -> None:
        push = codec.decode_push(line)
        if isinstance(push, frames.RelayPush):
            forwarded.append(push.text)
            client.send(f"ok {push.text}")
        else:
            queue_line(line)

    client.lineReceived = line_received
    return forwarded


@defer.inlineCallbacks
def acks(client, count: int):
    """The texts of the next ``count`` acks ``client`` gets (other pushes skipped)."""
    acked = set()
    for _ in range(100 * count):
        push = yield client.next_push()
        if isinstance(push, frames.AckPush):
            acked.add(push.text)
            if len(acked) == count:
                return acked
    raise AssertionError(f"only {len(acked)} of {count} acks")


class ClusterCase(unittest.TestCase):
    """Starts redis-server, and instances on it under a cluster name of the test's own."""

    @defer.inlineCallbacks
    def setUp(self):
        self.redis = yield infra.redis_server(self)
        self.name = f"t{next(_names)}"
        self.instances = []

    @defer.inlineCallbacks
    def start_instances(self, count: int):
        for _ in range(count):
            service = yield start_server(
                self,
                "--instance-id",
                f"i{len(self.instances) + 1}",
                "--listen",
                tls_listen(),
                "--redis",
                self.redis.url,
                "--cluster-name",
                self.name,
                "--heartbeat",
                HEARTBEAT,
                "--http",
                "none",
            )
            self.instances.append(service)
        yield self.until_members(count)

    def until_members(self, count: int, instances=None):
        """Wait until every instance is connected and sees ``count`` members."""
        instances = instances or self.instances
        return settle(
            lambda: all(
                i.hub.bus.state() == "connected" and len(i.hub.snapshot().cluster.members) == count
                for i in instances
            )
        )

    @defer.inlineCallbacks
    def finish(self, *clients):
        """Close ``clients``; every instance then holds nothing, and stops leaving nothing."""
        for client in clients:
            client.transport.loseConnection()
            yield client.closed
        yield settle(lambda: all(i.hub.zero_state() for i in self.instances))
        yield self.stop_and_check_redis_is_clean()

    @defer.inlineCallbacks
    def stop_and_check_redis_is_clean(self):
        """Stop every instance cleanly; then nothing of the cluster may be left in Redis."""
        for instance in self.instances:
            self.assertTrue(instance.hub.zero_state(), status_json(instance.hub.snapshot()))
        yield defer.gatherResults([i.stopService() for i in self.instances])
        keys, eternal, channels = yield self.redis.leftovers(self.name)
        self.assertEqual((keys, eternal, channels), ([], [], []))


def older_record(run: str, figures) -> str:
    """The record of an instance of the previous version, whose messages are all JSON."""
    return json.dumps({**json.loads(record.encode(run, figures)), "v": record.VERSION - 1})


def future_record(run: str, figures) -> str:
    """A record of a version this code does not know, with figures it must not read."""
    return json.dumps(
        {
            "v": record.VERSION + 1,
            "run": run,
            "version": "99.0",
            "weights": {"relay": figures.relay_weight},
        }
    )


class MixedVersions(ClusterCase):
    """Two members that announce different heartbeat record versions, on a real Redis."""

    @defer.inlineCallbacks
    def relays_to(self, sender, texts):
        for text in texts:
            sender.send(f"message {text}")
        return (yield acks(sender, len(texts)))

    @defer.inlineCallbacks
    def relays_stay_away_from(self, encode_record):
        """The second instance announces ``encode_record``'s version: the first lists it as
        incompatible and keeps its relays among its own connections."""
        yield self.start_instances(2)
        current, other = self.instances
        other.hub.bus.encode_record = encode_record
        sender = yield connect(self, current.ports[0])
        receiver = yield connect(self, other.ports[0])
        yield settle(lambda: current.hub.snapshot().cluster.members[-1].state == "incompatible")
        self.assertEqual(current.hub.bus.table.weights(), {"i2": 0})
        at_other = auto_ack(receiver)
        auto_ack(sender)  # the sender is the only target left for its own relays
        texts = [f"stay {n}" for n in range(20)]
        self.assertEqual((yield self.relays_to(sender, texts)), set(texts))
        self.assertEqual(at_other, [])
        return sender, receiver

    @defer.inlineCallbacks
    def test_a_member_with_an_older_record_is_listed_but_sent_no_relays(self):
        sender, receiver = yield self.relays_stay_away_from(older_record)
        yield self.finish(sender, receiver)

    @defer.inlineCallbacks
    def test_a_member_with_a_newer_record_is_listed_but_sent_no_relays(self):
        sender, receiver = yield self.relays_stay_away_from(future_record)
        # The newer member reads this one's record and still relays to it.
        newer = self.instances[1]
        yield settle(lambda: newer.hub.bus.table.weights().get("i1") == 1)
        self.assertEqual(newer.hub.snapshot().cluster.members[-1].state, "serving")
        yield self.finish(sender, receiver)


class TwoInstances(ClusterCase):
    @defer.inlineCallbacks
    def test_texts_cross_as_they_are_and_garbage_is_ignored(self):
        """The compact relay lines over a real Redis: spaces, backslashes and unicode
        arrive unchanged; what is not a message (or not UTF-8) is logged and skipped."""
        yield self.start_instances(2)
        a, b = self.instances
        sender = yield connect(self, a.ports[0])
        receiver = yield connect(self, b.ports[0])
        yield settle(lambda: a.hub.bus.table.weights().get("i2") == 1)
        redis = yield txredisapi.Connection("127.0.0.1", self.redis.port, reconnect=False)
        self.addCleanup(redis.disconnect)
        inbox = b.hub.bus.namespace.inbox("i2")
        yield redis.publish(inbox, b"\xff\xfe not UTF-8")
        yield redis.publish(inbox, "d i1 i1 0\na i1\nr i1 x -1\n{]\nd i1 i1 x r1 t")
        at_b = auto_ack(receiver)
        auto_ack(sender)
        awkward = ["two  spaces", "a\\s back\\slash\\", "ünïcödé ✓ 😀", "tail \\"]
        texts = [f"{text} {n}" for n in range(5) for text in awkward]
        for text in texts:
            sender.send(f"message {text}")
        self.assertEqual((yield acks(sender, len(texts))), set(texts))
        self.assertTrue(at_b)  # 20 fair draws all landing on one side: 2 ** -19
        self.assertLessEqual(set(at_b), set(texts))
        yield settle(lambda: not a.hub.bus.outstanding)
        yield self.finish(sender, receiver)

    @defer.inlineCallbacks
    def test_relay_across_instances_and_ack_back(self):
        yield self.start_instances(2)
        a, b = self.instances
        sender = yield connect(self, a.ports[0])
        receiver = yield connect(self, b.ports[0])
        yield settle(lambda: a.hub.bus.table.weights().get("i2") == 1)
        at_b = auto_ack(receiver)
        auto_ack(sender)
        texts = [f"hop {n}" for n in range(20)]
        for text in texts:
            sender.send(f"message {text}")
        acked = yield acks(sender, len(texts))
        self.assertEqual(acked, set(texts))
        # 20 fair draws between two connections all landing on one: 2 ** -19.
        self.assertTrue(at_b)
        self.assertEqual(b.hub.snapshot().relays.forwarded, len(at_b))
        self.assertEqual(a.hub.snapshot().relays.acked, len(texts))
        yield settle(lambda: not a.hub.bus.outstanding)
        yield self.finish(sender, receiver)

    @defer.inlineCallbacks
    def test_targets_are_uniform_over_the_connections_of_both_instances(self):
        """One connection on i1, three on i2: each gets a quarter, not i1 a half.

        Seeded generators and relays sent in one go make the draws the same every
        run; 16.27 is the 0.001 point of chi-square with 3 degrees of freedom.
        """
        yield self.start_instances(2)
        a, b = self.instances
        for seed, instance in enumerate(self.instances):
            instance.hub.relays.rng = random.Random(seed)
        sender = yield connect(self, a.ports[0])
        others = yield defer.gatherResults([connect(self, b.ports[0]) for _ in range(3)])
        got = [auto_ack(client) for client in (sender, *others)]
        yield settle(lambda: a.hub.bus.table.weights().get("i2") == 3)
        for n in range(400):
            sender.send(f"message u{n}")
        yield acks(sender, 400)
        counts = [len(texts) for texts in got]
        self.assertEqual(sum(counts), 400)
        self.assertLess(sum((c - 100) ** 2 / 100 for c in counts), 16.27, counts)
        yield self.finish(sender, *others)

    @defer.inlineCallbacks
    def test_stopping_instance_hands_back_what_its_clients_held(self):
        yield self.start_instances(2)
        a, b = self.instances
        sender = yield connect(self, a.ports[0])
        holder = yield connect(self, b.ports[0])  # takes deliveries, never acks
        auto_ack(sender)
        yield settle(lambda: a.hub.bus.table.weights().get("i2") == 1)
        for n in range(30):  # until one lands on the holder (each try: even odds)
            acked = a.hub.snapshot().relays.acked
            sender.send(f"message held {n}")
            yield settle(
                lambda acked=acked: (
                    b.hub.snapshot().relays.in_flight or a.hub.snapshot().relays.acked > acked
                )
            )
            if b.hub.snapshot().relays.in_flight:
                break
        self.assertEqual(b.hub.snapshot().relays.in_flight, 1)
        yield b.stopService()  # drains the holder, then leaves the cluster
        # The tries before it were acked by the sender itself; then the held one.
        self.assertEqual((yield acks(sender, n + 1)), {f"held {k}" for k in range(n + 1)})
        self.instances.remove(b)
        yield holder.closed
        yield self.finish(sender)

    @defer.inlineCallbacks
    def test_clean_stop_withdraws_at_once(self):
        yield self.start_instances(2)
        a, b = self.instances
        keys, _, channels = yield self.redis.leftovers(self.name)
        self.assertEqual(
            keys, [f"{self.name}:member:i1", f"{self.name}:member:i2", f"{self.name}:members"]
        )
        self.assertEqual(
            channels, [f"{self.name}:cluster", f"{self.name}:to:i1", f"{self.name}:to:i2"]
        )
        run = b.hub.bus.run
        channel = f"{self.name}:cluster"
        listener = yield self.redis.subscribe(self, channel)
        yield b.stopService()
        # Its leave notice went out on the real channel (a's table forgets the dead run
        # again at its next beat that finds the key gone, so that is no proof to wait for).
        heard = yield listener.heard.get().addTimeout(WAIT, reactor)
        self.assertEqual(envelope.decode(heard), ("i2", envelope.Leave(run)))
        yield listener.unsubscribe([channel]).addTimeout(WAIT, reactor)
        yield settle(lambda: [m.instance for m in a.hub.snapshot().cluster.members] == ["i1"])
        keys, _, channels = yield self.redis.leftovers(self.name)
        self.assertNotIn(f"{self.name}:member:i2", keys)
        self.assertNotIn(f"{self.name}:to:i2", channels)
        self.instances.remove(b)
        yield self.stop_and_check_redis_is_clean()


class ThreeInstances(ClusterCase):
    @defer.inlineCallbacks
    def test_chat_reaches_every_instance_once_and_status_shows_members(self):
        yield self.start_instances(3)
        clients = []
        for instance in self.instances:
            for _ in range(2):
                clients.append((yield connect(self, instance.ports[0])))
        yield settle(lambda: all(i.hub.snapshot().cluster.connections == 6 for i in self.instances))
        clients[0].send('{"cmd":"chat","payload":"hello cluster"}')
        self.instances[1].hub.broadcast("from the operator")
        for client in clients:
            got = [(yield client.next_push()), (yield client.next_push())]
            self.assertCountEqual(
                got,
                [frames.ChatPush("c1", "hello cluster"), frames.BroadcastPush("from the operator")],
            )
        status = yield infra.status(self, self.instances[2].ports[0])
        cluster = status["cluster"]
        self.assertEqual(cluster["state"], "connected")
        self.assertEqual(sorted(m["instance"] for m in cluster["members"]), ["i1", "i2", "i3"])
        self.assertEqual(cluster["connections"], 7)  # six chatters and the status client
        # Exactly once: nobody got a third chat line meanwhile.
        for client in clients:
            self.assertEqual(client.lines.pending, [])
        yield self.finish(*clients)


class RedisOutage(ClusterCase):
    @defer.inlineCallbacks
    def test_instances_serve_locally_while_redis_is_down_and_rejoin(self):
        yield self.start_instances(2)
        a, b = self.instances
        yield self.redis.stop()
        yield settle(lambda: all(i.hub.bus.state() == "degraded" for i in self.instances))
        self.assertEqual([m.instance for m in a.hub.snapshot().cluster.members], ["i1"])
        # Local-only serving: a lone client on a relays to itself and gets its ok.
        client = yield connect(self, a.ports[0])
        auto_ack(client)
        client.send("message while redis is down")
        self.assertEqual((yield acks(client, 1)), {"while redis is down"})
        status = yield infra.status(self, b.ports[0])
        self.assertEqual(status["cluster"]["state"], "degraded")
        yield self.redis.start()
        yield self.until_members(2)
        # Rejoined: b's client now takes relays from a.
        other = yield connect(self, b.ports[0])
        at_b = auto_ack(other)
        yield settle(lambda: a.hub.bus.table.weights().get("i2") == 1)
        for n in range(20):
            client.send(f"message after {n}")
        self.assertEqual(len((yield acks(client, 20))), 20)
        self.assertTrue(at_b)
        yield self.finish(client, other)

    @defer.inlineCallbacks
    def test_relays_cross_between_all_three(self):
        yield self.start_instances(3)
        clients = yield defer.gatherResults([connect(self, i.ports[0]) for i in self.instances])
        forwarded = [auto_ack(client) for client in clients]
        yield settle(
            lambda: all(
                len(i.hub.bus.table.weights()) == 2
                and all(w == 1 for w in i.hub.bus.table.weights().values())
                for i in self.instances
            )
        )
        for n, client in enumerate(clients):
            for k in range(12):
                client.send(f"message from {n} #{k}")
        for n, client in enumerate(clients):
            self.assertEqual((yield acks(client, 12)), {f"from {n} #{k}" for k in range(12)})
        # One client per instance: a text from another client crossed instances. Each
        # client gets about 12 of the 36 texts; none from the others: p ~ 3 ** -12.
        for n, texts in enumerate(forwarded):
            self.assertTrue([t for t in texts if not t.startswith(f"from {n} ")], texts)
        yield self.finish(*clients)


class StartWithoutRedis(unittest.TestCase):
    @defer.inlineCallbacks
    def test_serves_alone_until_redis_comes_then_joins(self):
        redis = infra.RedisServer()  # not started yet
        self.addCleanup(redis.stop)
        instance = yield start_server(
            self,
            "--instance-id",
            "early",
            "--listen",
            tls_listen(),
            "--http",
            "none",
            "--redis",
            redis.url,
            "--cluster-name",
            "early",
            "--heartbeat",
            HEARTBEAT,
        )
        self.assertEqual(instance.hub.bus.state(), "degraded")
        client = yield connect(self, instance.ports[0])
        auto_ack(client)
        client.send("message before redis")
        self.assertEqual((yield acks(client, 1)), {"before redis"})
        yield redis.start()
        yield settle(lambda: instance.hub.bus.state() == "connected")
        keys, _, channels = yield redis.leftovers("early")
        self.assertEqual(keys, ["early:member:early", "early:members"])
        self.assertEqual(channels, ["early:cluster", "early:to:early"])
        client.transport.loseConnection()
        yield client.closed
        yield settle(instance.hub.zero_state)
        yield instance.stopService()
        self.assertEqual((yield redis.leftovers("early")), ([], [], []))


class KilledInstance(unittest.TestCase):
    @defer.inlineCallbacks
    def test_kill_9_disappears_within_three_heartbeats(self):
        redis = yield infra.redis_server(self)
        survivor, victim = yield infra.nea_daemons(
            self,
            2,
            "--redis",
            redis.url,
            "--cluster-name",
            "k",
            "--heartbeat",
            HEARTBEAT,
            "--http",
            "none",
        )
        yield infra.until_status(self, survivor.port, lambda s: len(s["cluster"]["members"]) == 2)
        # "Within three heartbeats" is the expiry of the victim's key, which every beat
        # sets again; read from Redis, not measured on a clock a busy machine would skew.
        ttl = yield redis.pttl(f"k:member:{victim.instance_id}")
        self.assertTrue(0 < ttl <= 3 * float(HEARTBEAT) * 1000, ttl)
        yield victim.kill()
        yield infra.until_status(self, survivor.port, lambda s: len(s["cluster"]["members"]) == 1)
        yield survivor.stop()
        # The victim's key outlives it by up to 3 heartbeats; nothing else may stay.
        yield infra.until_clean(redis, "k", within=3 * float(HEARTBEAT) + WAIT)
