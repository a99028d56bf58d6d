"""`RedisBus` logic across hubs in one process, Redis's pub/sub played by a queue.

What Redis does for the bus is small: PUBLISH hands a message to the current
subscribers of a channel and says how many there were; discovery returns the
heartbeat records. `PubSub` below does exactly that (delivering on `flush`, as
Redis delivers later, not inside the publisher's call), and the tests hand
discovery results to the buses directly. The Redis side itself is tested for
real in test_cluster_redis.py.
"""

import json
import random
from collections import deque

from hypothesis import given
from hypothesis import strategies as st
from twisted.internet import defer
from twisted.internet.task import Clock
from twisted.python.usage import UsageError
from twisted.trial import unittest

from nea.cluster import envelope, record
from nea.cluster.members import Member, MemberTable
from nea.cluster.names import Namespace, RedisAddress
from nea.cluster.outstanding import Outstanding
from nea.cluster.redisbus import RedisBus
from nea.core.hub import Hub
from nea.core.snapshot import MemberFigures
from nea.core.testing import FakePeer
from nea.wire import frames
from nea.wire.frames import BroadcastPush, ChatPush, Encoding
from nea.wire.profiles import CHAT
from tests.support import parse_options

NS = Namespace("unit")


class PubSub:
    """Channels and their subscribed buses; published messages wait for `flush`."""

    def __init__(self) -> None:
        self.subscribed: dict[str, list[RedisBus]] = {}
        self.queue: deque = deque()
        self.published = 0
        #: What Redis holds besides channels: the names hashes.
        self.hashes: dict[str, dict[str, str]] = {}

    def publish(self, channel: str, data: str, reached=None) -> None:
        receivers = list(self.subscribed.get(channel, []))
        self.queue.extend((bus.received, (channel, data), bus) for bus in receivers)
        if reached is not None:  # PUBLISH's reply also comes later
            self.queue.append((reached, (len(receivers),), None))
        self.published += 1

    def flush(self) -> None:
        for _ in range(10_000):
            if not self.queue:
                return
            call, args, bus = self.queue.popleft()
            if bus is None or bus.up:  # a subscriber that dropped meanwhile never gets it
                call(*args)
        raise AssertionError("messages keep coming: a delivery loop")


class FakeRedis:
    """The commands the bus keeps its names and nicks hashes with, on hashes shared by
    the cluster.

    Replies come at once (Redis answers in order, and these tests need no more).
    """

    def __init__(self, hashes: dict[str, dict[str, str]]) -> None:
        self.hashes = hashes

    def execute_command(self, op: str, key: str, *args: str):
        fields = self.hashes.setdefault(key, {})
        result: object = 1
        if op == "HSET":
            fields.update(zip(args[::2], args[1::2], strict=True))
        elif op == "HDEL":
            result = sum(fields.pop(name, None) is not None for name in args)
        elif op == "HGET":
            result = fields.get(args[0])
        elif op != "PEXPIRE":
            raise AssertionError(f"unexpected command {op}")
        if not fields:  # Redis drops an empty hash
            del self.hashes[key]
        return defer.succeed(result)

    def delete(self, *keys: str):
        return defer.succeed(sum(self.hashes.pop(key, None) is not None for key in keys))

    def hgetall(self, key: str):
        return defer.succeed(dict(self.hashes.get(key, {})))


class AtOnce:
    """A reactor whose ``callLater`` calls at once: the end of the turn is now."""

    def callLater(self, delay: float, f, *args) -> None:
        f(*args)


class FakeLink:
    def __init__(self, pubsub: PubSub, bus: RedisBus) -> None:
        self.pubsub = pubsub
        self.bus = bus
        self.up = False
        self.redis = FakeRedis(pubsub.hashes)
        self.reactor = AtOnce()

    @property
    def commands(self):
        return self.redis if self.up else None

    def connect(self) -> None:
        self.up = True
        for channel in self.bus.channels:
            self.pubsub.subscribed.setdefault(channel, []).append(self.bus)
        self.bus.link_up()

    def cut(self) -> None:
        """The connections close (kill -9, or Redis unreachable from here)."""
        self.up = False
        for buses in self.pubsub.subscribed.values():
            if self.bus in buses:
                buses.remove(self.bus)

    def publish(self, channel: str, data: str, reached=None) -> None:
        if self.up:
            self.pubsub.publish(channel, data, reached)

    def publish_word(self, channel: str, head: str, word: str) -> None:
        self.publish(channel, f"{head} {word}")  # (a line each: no batches here)


class Cluster:
    """Hubs on RedisBuses joined by one `PubSub`."""

    def __init__(self, names: list[str], seed: int = 1) -> None:
        self.pubsub = PubSub()
        self.hubs: dict[str, Hub] = {}
        for n, name in enumerate(names):
            bus = RedisBus(name, NS, interval=1.0)
            bus.link = FakeLink(self.pubsub, bus)
            self.hubs[name] = Hub(Clock(), bus, rng=random.Random(seed + n))
            bus.link.connect()
        self.discover()

    def bus(self, name: str) -> RedisBus:
        return self.hubs[name].bus

    def discover(self, *, keys_of: list[str] | None = None) -> None:
        """Every connected bus reads the heartbeat keys of ``keys_of`` (default: all up)."""
        names = keys_of if keys_of is not None else [n for n in self.hubs if self.bus(n).up]
        records = {n: record.encode(self.bus(n).run, self.hubs[n].member()) for n in names}
        for name in self.hubs:
            if self.bus(name).up:
                self.bus(name).discovered(records)

    def peers(self, name: str, count: int, profile=None) -> list[FakePeer]:
        peers = [
            FakePeer(profile, Encoding.JSON, name="ann") if profile else FakePeer()
            for _ in range(count)
        ]
        for peer in peers:
            self.hubs[name].join(peer)
        return peers


def relays(peer: FakePeer) -> list[str]:
    return [p.text for p in peer.take() if isinstance(p, frames.RelayPush)]


def answer(cluster: Cluster, name: str, peers: list[FakePeer]) -> list[str]:
    """Every peer acks what it was forwarded; returns the texts acked."""
    done = []
    for peer in peers:
        for text in relays(peer):
            cluster.hubs[name].handle(peer, frames.Ack(text))
            done.append(text)
    cluster.pubsub.flush()
    return done


class RelayAcrossInstances(unittest.TestCase):
    def setUp(self):
        self.cluster = Cluster(["a", "b", "c"])
        # Not a connection (like an HTTP relay request): never a relay target itself.
        self.waiter = FakePeer()
        self.a = self.cluster.hubs["a"]

    def test_delivery_to_another_instance_and_ack_back(self):
        (target,) = self.cluster.peers("b", 1)
        self.cluster.discover()
        self.a.relay(self.waiter, "hello")
        self.cluster.pubsub.flush()
        self.assertEqual(answer(self.cluster, "b", [target]), ["hello"])
        self.assertEqual(self.waiter.take(), [frames.AckPush("hello")])
        for hub in self.cluster.hubs.values():
            self.assertEqual((hub.relays.waiting, hub.relays.held), ({}, {}))
        self.assertEqual(len(self.cluster.bus("a").outstanding), 0)

    def test_recipient_leaving_before_ack_gets_it_reforwarded(self):
        first, second = self.cluster.peers("b", 2)
        self.cluster.discover()
        self.a.relay(self.waiter, "x")
        self.cluster.pubsub.flush()
        holder, other = (first, second) if relays(first) else (second, first)
        self.cluster.hubs["b"].leave(holder)
        self.cluster.pubsub.flush()
        self.assertEqual(answer(self.cluster, "b", [other]), ["x"])
        self.assertEqual(self.waiter.take(), [frames.AckPush("x")])

    def test_killed_member_is_given_up_when_its_heartbeat_expires(self):
        (doomed,) = self.cluster.peers("b", 1)
        self.cluster.discover()
        self.a.relay(self.waiter, "y")
        self.cluster.pubsub.flush()
        self.assertEqual(relays(doomed), ["y"])
        self.cluster.bus("b").link.cut()  # kill -9: no re-forward will ever come
        (rescuer,) = self.cluster.peers("c", 1)
        self.cluster.discover(keys_of=["a", "c"])
        self.cluster.pubsub.flush()
        self.assertEqual(answer(self.cluster, "c", [rescuer]), ["y"])
        self.assertEqual(self.waiter.take(), [frames.AckPush("y")])
        self.assertNotIn("b", self.cluster.bus("a").table.members)

    def test_delivery_reaching_nobody_gives_the_member_up_at_once(self):
        self.cluster.peers("b", 1)
        (rescuer,) = self.cluster.peers("c", 1)
        self.cluster.discover()
        self.cluster.bus("b").link.cut()  # killed; its key lingers for 3 heartbeats
        for n in range(8):
            self.a.relay(self.waiter, f"z{n}")
        self.cluster.pubsub.flush()
        self.assertEqual(sorted(answer(self.cluster, "c", [rescuer])), [f"z{n}" for n in range(8)])
        # The stale key does not bring the dead run back.
        self.cluster.discover(keys_of=["a", "b", "c"])
        self.assertEqual(sorted(self.cluster.bus("a").table.members), ["c"])

    def test_leave_notice_recovers_deliveries_at_once(self):
        (leaving,) = self.cluster.peers("b", 1)
        (rescuer,) = self.cluster.peers("c", 1)
        self.cluster.discover()
        self.cluster.bus("b").table.members.clear()  # b never draws elsewhere
        texts = [f"l{n}" for n in range(6)]
        for text in texts:
            self.a.relay(self.waiter, text)
        self.cluster.pubsub.flush()
        at_b = relays(leaving)
        self.assertTrue(at_b)
        bus_b = self.cluster.bus("b")
        self.cluster.pubsub.publish(NS.cluster, envelope.encode("b", envelope.Leave(bus_b.run)))
        bus_b.link.cut()
        self.cluster.pubsub.flush()
        self.assertEqual(sorted(answer(self.cluster, "c", [rescuer])), texts)
        self.assertEqual(len(self.cluster.bus("a").outstanding), 0)

    def test_instance_with_nobody_is_not_drawn_again_until_it_beats(self):
        self.cluster.peers("b", 1)
        self.cluster.discover()
        self.cluster.hubs["b"].leave(next(iter(self.cluster.hubs["b"].registry.peers)))
        published = self.cluster.pubsub.published
        self.a.relay(self.waiter, "nobody")
        self.cluster.pubsub.flush()
        # One delivery, one bounce; then nobody is left to draw: an error, not a ping-pong.
        self.assertEqual(self.cluster.pubsub.published - published, 2)
        (error,) = self.waiter.take()
        self.assertEqual(error.code, "no_recipient")
        self.assertEqual(self.cluster.bus("a").table.weights()["b"], 0)

    def test_chat_reaches_every_instance_exactly_once(self):
        listeners = {name: self.cluster.peers(name, 2, CHAT) for name in self.cluster.hubs}
        self.cluster.hubs["b"].chat.say(FakePeer(name="bob"), "hi all")
        self.cluster.hubs["c"].broadcast("maintenance at noon")
        self.cluster.pubsub.flush()
        for peers in listeners.values():
            for peer in peers:
                self.assertCountEqual(
                    peer.take(), [ChatPush("bob", "hi all"), BroadcastPush("maintenance at noon")]
                )

    def test_garbage_on_a_channel_is_ignored(self):
        (target,) = self.cluster.peers("b", 1)
        for junk in ["", "{", '{"op":"deliver"}', '{"op":"nope","from":"x"}', "[1]"]:
            self.cluster.pubsub.publish(NS.inbox("a"), junk)
        self.cluster.pubsub.flush()
        self.cluster.discover()
        self.a.relay(self.waiter, "still fine")
        self.cluster.pubsub.flush()
        self.assertEqual(answer(self.cluster, "b", [target]), ["still fine"])


class Degraded(unittest.TestCase):
    def setUp(self):
        self.cluster = Cluster(["a", "b"])
        self.a = self.cluster.hubs["a"]

    def test_redis_unreachable_means_local_only(self):
        (local,) = self.cluster.peers("a", 1)
        remote = self.cluster.peers("b", 5)
        chat = self.cluster.peers("b", 1, CHAT)[0]
        self.cluster.discover()
        self.cluster.bus("a").link.cut()
        self.cluster.bus("a").link_down()
        self.assertEqual(self.cluster.bus("a").state(), "degraded")
        self.assertEqual([m.instance for m in self.a.snapshot().cluster.members], ["a"])
        for n in range(10):
            self.a.relay(local, f"d{n}")
        self.a.chat.say(FakePeer(name="alice"), "anyone?")
        self.cluster.pubsub.flush()
        self.assertEqual(len(answer(self.cluster, "a", [local])), 10)
        self.assertEqual(sum(len(relays(p)) for p in remote), 0)
        self.assertEqual(chat.take(), [])
        self.assertEqual(self.cluster.pubsub.published, 0)

    def test_deliveries_out_when_redis_goes_are_served_locally(self):
        (local,) = self.cluster.peers("a", 1)
        self.cluster.peers("b", 50)
        self.cluster.discover()
        waiter = FakePeer()
        for n in range(20):
            self.a.relay(waiter, f"o{n}")
        out = len(self.cluster.bus("a").outstanding)
        self.assertGreater(out, 0)
        self.cluster.bus("a").link.cut()
        self.cluster.bus("a").link_down()
        self.assertEqual(len(relays(local)), 20)
        self.assertEqual(len(self.cluster.bus("a").outstanding), 0)

    def test_reconnection_is_a_new_run_that_the_others_recover_from(self):
        (target,) = self.cluster.peers("b", 1)
        self.cluster.discover()
        waiter = FakePeer()
        self.a.relay(waiter, "lost in the outage")
        bus_b = self.cluster.bus("b")
        bus_b.link.cut()  # b's subscriber drops before the delivery arrives
        self.cluster.pubsub.flush()
        old_run = bus_b.run
        bus_b.link.connect()
        self.assertNotEqual(bus_b.run, old_run)
        self.cluster.discover()
        self.cluster.pubsub.flush()
        self.assertEqual(answer(self.cluster, "b", [target]), ["lost in the outage"])
        self.assertEqual(waiter.take(), [frames.AckPush("lost in the outage")])


def figures(instance: str = "x", weight: int = 1) -> MemberFigures:
    return MemberFigures(instance, "9.9", "serving", weight + 1, weight, 0, False)


def member(run: str, weight: int) -> Member:
    return Member(run, figures(weight=weight), weight)


class Records(unittest.TestCase):
    """The heartbeat record: versioned, and read by members of other versions."""

    def test_round_trip(self):
        announced = record.decode("x", record.encode("r1", figures("x", 3)))
        self.assertEqual(announced, record.Announcement("r1", figures("x", 3)))

    def test_unknown_fields_are_ignored(self):
        data = record.encode("r1", figures("x", 3))[:-1] + ',"new_field":[1,2]}'
        self.assertEqual(record.decode("x", data).figures, figures("x", 3))

    def test_an_older_version_is_tracked_but_unreadable(self):
        """Version 1 (every message JSON) and the form before versions (the status
        document) do not read the compact relay lines: never drawn as a relay target."""
        status = {"version": "0.0.9", "state": "draining", "relay_capable": 5}
        older = json.loads(record.encode("r1", figures("old", 3)))
        for version, data in [
            (0, json.dumps({"run": "r1", "summary": status})),
            (1, json.dumps({**older, "v": 1, "version": "0.0.9"})),
        ]:
            announced = record.decode("old", data)
            self.assertEqual((announced.run, announced.record_version), ("r1", version))
            self.assertFalse(announced.compatible)
            self.assertEqual(
                (announced.figures.state, announced.figures.relay_weight), ("incompatible", 0)
            )
        self.assertEqual(announced.figures.version, "0.0.9")

    def test_a_newer_version_is_tracked_but_unreadable(self):
        data = json.dumps(
            {"v": record.VERSION + 1, "run": "r9", "version": "2.0", "relay_weight": "lots"}
        )
        announced = record.decode("new", data)
        self.assertFalse(announced.compatible)
        self.assertEqual((announced.run, announced.record_version), ("r9", record.VERSION + 1))
        self.assertEqual(
            (announced.figures.state, announced.figures.relay_weight), ("incompatible", 0)
        )

    def test_malformed_records_are_refused(self):
        good = json.loads(record.encode("r", figures()))
        for data in [
            "",
            "[]",
            "{}",
            '{"run":1,"v":1}',
            '{"run":"r","v":-1}',
            '{"run":"r","v":true}',
            json.dumps({**good, "relay_weight": -1}),
            json.dumps({**good, "connections": True}),
            json.dumps({**good, "zero_state": 0}),
        ]:
            with self.assertRaises(ValueError, msg=data):
                record.decode("x", data)


class Tables(unittest.TestCase):
    def test_member_table_gone_new_run_and_dead_runs(self):
        table = MemberTable()
        one = member("r1", 2)
        self.assertEqual(table.update({"x": one, "y": one}), [])
        self.assertEqual(table.weights(), {"x": 2, "y": 2})
        restarted = member("r2", 0)
        self.assertEqual(sorted(table.update({"x": restarted})), ["x", "y"])
        self.assertTrue(table.remove("x"))
        self.assertEqual(table.update({"x": restarted}), [])
        self.assertEqual(table.weights(), {})
        self.assertEqual(table.update({}), [])  # key gone: the dead run is forgotten
        self.assertEqual(table.dead, set())

    @given(
        st.lists(
            st.tuples(
                st.sampled_from(["update", "remove", "emptied", "clear"]),
                st.dictionaries(st.sampled_from("xyz"), st.sampled_from(["r1", "r2"])),
                st.sampled_from("xyz"),
            ),
            max_size=12,
        )
    )
    def test_member_weights_follow_every_change(self, steps):
        """The weights a relay draws with are kept between changes, never stale."""
        table = MemberTable()
        for step, seen, name in steps:
            if step == "update":
                table.update({n: member(run, 1 + len(n)) for n, run in seen.items()})
            elif step == "clear":
                table.clear()
            else:
                getattr(table, step)(name)
            expected = {n: m.weight for n, m in table.members.items()}
            self.assertEqual(table.weights(), expected)

    def test_outstanding_counts_repeats(self):
        out = Outstanding()
        out.add("b", "t")
        out.add("b", "t")
        out.add("c", "u")
        out.answered("b", "t")
        out.answered("b", "never sent")
        self.assertEqual(out.take("b"), ["t"])
        self.assertEqual(out.take("b"), [])
        self.assertEqual(len(out), 1)

    @given(
        st.lists(
            st.tuples(
                st.sampled_from(["add", "answered", "take"]),
                st.sampled_from("bc"),
                st.sampled_from("tu"),
            )
        )
    )
    def test_outstanding_count_is_what_is_held(self, steps):
        out = Outstanding()
        for step, name, text in steps:
            if step == "take":
                out.take(name)
            else:
                getattr(out, step)(name, text)
        counted = len(out)
        held = sum(len(out.take(name)) for name in out.instances())
        self.assertEqual(counted, held)
        self.assertEqual(len(out), 0)

    def test_redis_option_is_validated(self):
        config = parse_options("--redis", "redis://127.0.0.1:7000/2", "--cluster-name", "x")
        self.assertEqual(config["redis"], RedisAddress("127.0.0.1", 7000, 2))
        with self.assertRaises(UsageError):
            parse_options("--redis", "127.0.0.1:6379")

    def test_redis_address(self):
        self.assertEqual(RedisAddress.parse("redis://h"), RedisAddress("h", 6379, 0))
        self.assertEqual(
            RedisAddress.parse("redis://10.0.0.1:7000/3"), RedisAddress("10.0.0.1", 7000, 3)
        )
        for bad in ["http://h", "redis://", "redis://h/x", "redis://u:p@h", "h:6379"]:
            with self.assertRaises(ValueError):
                RedisAddress.parse(bad)


class RequestsAcrossInstances(unittest.TestCase):
    """Names and services over `RedisBus`: the names hashes, claims, offers and answers."""

    def setUp(self):
        self.cluster = Cluster(["a", "b", "c"])
        self.hubs = self.cluster.hubs

    def peer(self, name: str) -> FakePeer:
        peer = FakePeer(encoding=frames.Encoding.JSON)
        self.hubs[name].join(peer)
        return peer

    def requests(self, peer: FakePeer) -> list[frames.RequestPush]:
        return [p for p in peer.take() if isinstance(p, frames.RequestPush)]

    def test_a_name_is_found_in_its_instances_hash_and_answers_from_there(self):
        device = self.peer("b")
        self.hubs["b"].handle(device, frames.Register("lock1"))
        self.assertEqual(list(self.cluster.pubsub.hashes), [f"{NS.name}:names:b"])
        asker = self.peer("a")
        self.hubs["a"].handle(asker, frames.Ask("1", "lock1", None, {"cmd": "open"}))
        self.cluster.pubsub.flush()
        [request] = self.requests(device)
        self.assertEqual(request.body, {"cmd": "open"})
        self.hubs["b"].handle(device, frames.Reply(request.id, "opened"))
        self.cluster.pubsub.flush()
        self.assertEqual(asker.take(), [frames.ReplyPush("1", "opened", "b")])
        self.hubs["b"].leave(device)
        self.assertEqual(self.cluster.pubsub.hashes, {})

    def test_a_claim_takes_the_name_over_on_another_instance(self):
        old = self.peer("a")
        self.hubs["a"].handle(old, frames.Register("lock1"))
        self.hubs["b"].clock.advance(5)
        new = self.peer("b")
        self.hubs["b"].handle(new, frames.Register("lock1"))
        self.cluster.pubsub.flush()
        self.assertEqual(
            [p.code for p in old.take() if isinstance(p, frames.ErrorReply)], ["name_taken_over"]
        )
        self.assertTrue(old.closed)
        self.assertEqual(list(self.cluster.pubsub.hashes), [f"{NS.name}:names:b"])
        found = []
        self.hubs["c"].find_client("lock1").addCallback(found.append)
        self.assertEqual(found, ["b"])

    def test_an_instance_gone_fails_its_names_requests_and_redraws_its_services(self):
        device = self.peer("b")
        self.hubs["b"].handle(device, frames.Register("lock1"))
        member = self.peer("b")
        self.hubs["b"].handle(member, frames.Serve("people"))
        self.cluster.discover()
        asker = self.peer("a")
        self.hubs["a"].handle(asker, frames.Ask("n", "lock1", None, 1))
        self.hubs["a"].handle(asker, frames.Ask("s", None, "people", 2))
        self.cluster.pubsub.flush()
        self.assertEqual(len(self.requests(device)) + len(self.requests(member)), 2)
        rescuer = self.peer("c")
        self.hubs["c"].handle(rescuer, frames.Serve("people"))
        self.cluster.bus("b").link.cut()  # kill -9
        self.cluster.discover(keys_of=["a", "c"])
        self.cluster.pubsub.flush()
        self.assertEqual([(p.code, p.id) for p in asker.take()], [("client_gone", "n")])
        [request] = self.requests(rescuer)
        self.assertEqual(request.body, 2)
        self.hubs["c"].handle(rescuer, frames.Reply(request.id, "from c"))
        self.cluster.pubsub.flush()
        self.assertEqual(asker.take(), [frames.ReplyPush("s", "from c", "c")])
        # b's names are no longer found, though its hash lingers until it expires.
        found = []
        self.hubs["a"].find_client("lock1").addCallback(found.append)
        self.assertEqual(found, [None])

    def test_an_instance_that_lost_its_member_has_the_request_drawn_elsewhere(self):
        member = self.peer("b")
        self.hubs["b"].handle(member, frames.Serve("people"))
        self.cluster.discover()  # a now thinks b has a member
        self.hubs["b"].handle(member, frames.Unserve("people"))
        other = self.peer("c")
        self.hubs["c"].handle(other, frames.Serve("people"))
        self.cluster.discover(keys_of=["c"])  # a has not heard b's newer beat
        asker = self.peer("a")
        for n in range(10):
            self.hubs["a"].handle(asker, frames.Ask(str(n), None, "people", n))
        self.cluster.pubsub.flush()
        self.assertEqual(sorted(r.body for r in self.requests(other)), list(range(10)))

    def test_names_registered_while_degraded_are_written_when_redis_is_back(self):
        bus = self.cluster.bus("a")
        bus.link.cut()
        bus.link_down()
        device = self.peer("a")
        self.hubs["a"].handle(device, frames.Register("lock1"))
        self.assertEqual(self.cluster.pubsub.hashes, {})
        bus.link.connect()
        self.assertEqual(list(self.cluster.pubsub.hashes[f"{NS.name}:names:a"]), ["lock1"])
