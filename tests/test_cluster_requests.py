"""Addressed requests across instances joined by a real redis-server.

In-process instances (real service trees, plain TCP client listeners, HTTP APIs)
for the routing, and nea-server daemons for a kill -9. Every test ends with
zero state everywhere and nothing of the cluster left in Redis.
"""

import json
import random

from twisted.internet import defer, reactor
from twisted.trial import unittest

from nea.wire import codec, frames
from tests import infra
from tests.support import WAIT, connect, next_tick, settle, start_server, tcp_listen
from tests.test_http_api import TOKEN, fetch_json

HEARTBEAT = "0.5"


def on_requests(client, handle) -> list[frames.RequestPush]:
    """Hand every request ``client`` gets to ``handle``; returns the requests it got.

    Other lines queue up as usual.
    """
    got: list[frames.RequestPush] = []
    queue_line = client.lineReceived

    def line_received(line: bytes) -> None:
        push = codec.decode_push(line)
        if isinstance(push, frames.RequestPush):
            got.append(push)
            handle(push)
        else:
            queue_line(line)

    client.lineReceived = line_received
    return got


def answering(client, reply=lambda body: f"answer to {body}") -> list[frames.RequestPush]:
    """Make ``client`` reply to every request at once."""
    return on_requests(client, lambda push: client.send(f"reply {push.id} {reply(push.body)}"))


def holding(client) -> list[frames.RequestPush]:
    """Make ``client`` keep every request it gets without replying."""
    return on_requests(client, lambda push: None)


def post(port: int, path: str, body, timeout: float = 4 * WAIT):
    return fetch_json(
        port,
        path,
        method=b"POST",
        token=TOKEN,
        body=json.dumps({"body": body, "timeout": timeout}).encode(),
    )


def get(port: int, path: str):
    return fetch_json(port, path, token=TOKEN)


@defer.inlineCallbacks
def until_http(port: int, path: str, condition, timeout: float = WAIT):
    """Poll ``GET path`` until ``condition(code, body)`` holds."""
    deadline = reactor.seconds() + timeout
    while True:
        code, body = yield get(port, path)
        if condition(code, body):
            return body
        if reactor.seconds() > deadline:
            raise AssertionError(f"{path} never showed the expected answer: {code} {body}")
        yield next_tick(0.05)


@defer.inlineCallbacks
def command(client, line: str, answer: frames.Push, skip: int = 100):
    """Send ``line`` and wait for ``answer`` (up to ``skip`` other pushes before it)."""
    client.send(line)
    for _ in range(skip):
        push = yield client.next_push()
        if push == answer:
            return
    raise AssertionError(f"no {answer} after {line!r}")


class RequestsOnRedis(unittest.TestCase):
    @defer.inlineCallbacks
    def setUp(self):
        self.redis = yield infra.redis_server(self)
        self.name = f"rq{id(self) % 100000}"
        self.a = yield self.instance("i1")
        self.b = yield self.instance("i2")
        self.instances = [self.a, self.b]
        yield settle(
            lambda: all(
                i.hub.bus.state() == "connected" and len(i.hub.snapshot().cluster.members) == 2
                for i in self.instances
            )
        )

    def instance(self, name: str):
        return start_server(
            self,
            "--instance-id",
            name,
            "--listen",
            tcp_listen(),
            "--redis",
            self.redis.url,
            "--cluster-name",
            self.name,
            "--heartbeat",
            HEARTBEAT,
            "--admin-token",
            TOKEN,
        )

    def client(self, instance):
        return connect(self, instance.ports[0], tls=False)

    @defer.inlineCallbacks
    def registered(self, instance, name: str):
        device = yield self.client(instance)
        yield command(device, f"register {name}", frames.Registered(name))
        return device

    @defer.inlineCallbacks
    def finish(self, *clients):
        for client in clients:
            if not client.closed.called:
                client.transport.loseConnection()
            yield client.closed
        yield settle(lambda: all(i.hub.zero_state() for i in self.instances))
        yield defer.gatherResults([i.stopService() for i in self.instances])
        self.assertEqual((yield self.redis.leftovers(self.name)), ([], [], []))

    @defer.inlineCallbacks
    def test_a_device_on_b_answers_a_request_posted_to_a(self):
        device = yield self.registered(self.b, "lock1")
        got = answering(device, lambda body: "locked" if body == '{"cmd":"status"}' else "?")
        found = yield until_http(self.a.http_port, "/clients/lock1", lambda c, _: c == 200)
        self.assertEqual(found, {"name": "lock1", "instance": "i2", "identity": None})
        code, answer = yield post(self.a.http_port, "/clients/lock1/requests", {"cmd": "status"})
        self.assertEqual((code, answer["reply"], answer["instance"]), (200, "locked", "i2"), answer)
        self.assertEqual(len(got), 1)
        code, listed = yield get(self.a.http_port, "/clients")
        self.assertEqual(
            (code, listed),
            (200, {"count": 1, "clients": [{"name": "lock1", "instance": "i2", "identity": None}]}),
        )
        snapshot = self.a.hub.snapshot().addressed
        self.assertEqual((snapshot.asked, snapshot.answered), (1, 1))
        code, missing = yield post(self.a.http_port, "/clients/nobody/requests", 1)
        self.assertEqual((code, missing["error"]), (404, "no_such_client"))
        yield self.finish(device)

    @defer.inlineCallbacks
    def test_a_name_is_taken_over_across_instances(self):
        old = yield self.registered(self.a, "lock1")
        yield until_http(self.b.http_port, "/clients/lock1", lambda c, _: c == 200)
        new = yield self.registered(self.b, "lock1")
        push = yield old.next_push()
        self.assertEqual(push.code, "name_taken_over")
        yield old.closed
        found = yield until_http(
            self.a.http_port, "/clients/lock1", lambda c, body: body.get("instance") == "i2"
        )
        self.assertEqual(found["instance"], "i2")
        asker = yield self.client(self.a)
        answering(new, lambda body: "from the new one")
        asker.send("ask q1 lock1 hello")
        self.assertEqual((yield asker.next_push()), frames.ReplyPush("q1", "from the new one"))
        self.assertEqual(self.a.hub.snapshot().addressed.taken_over, 1)
        yield self.finish(new, asker)

    @defer.inlineCallbacks
    def test_service_members_on_both_instances_are_drawn_uniformly(self):
        """One member on i1, three on i2: each gets a quarter, not i1 a half.

        Seeded generators and asks sent in one go make the draws the same every
        run; 16.27 is the 0.001 point of chi-square with 3 degrees of freedom.
        """
        for seed, instance in enumerate(self.instances):
            instance.hub.addressed.rng = random.Random(seed)
        members = []
        for instance in (self.a, self.b, self.b, self.b):
            members.append((yield self.client(instance)))
        for member in members:
            yield command(member, "serve people", frames.Serving("people"))
        got = [answering(member) for member in members]
        yield settle(lambda: self.a.hub.bus.table.members["i2"].figures.services == {"people": 3})
        code, services = yield get(self.a.http_port, "/services")
        self.assertEqual(
            services,
            {"services": [{"service": "people", "members": 4, "instances": {"i1": 1, "i2": 3}}]},
        )
        asker = yield self.client(self.a)
        for n in range(400):
            asker.send(f"ask {n} @people q{n}")
        replies = set()
        for _ in range(400):
            push = yield asker.next_push()
            self.assertIsInstance(push, frames.ReplyPush)
            replies.add(push.id)
        self.assertEqual(len(replies), 400)
        counts = [len(requests) for requests in got]
        self.assertLess(sum((c - 100) ** 2 / 100 for c in counts), 16.27, counts)
        yield self.finish(asker, *members)

    @defer.inlineCallbacks
    def test_a_member_killed_mid_request_has_it_sent_to_another(self):
        holder = yield self.client(self.b)
        yield command(holder, "serve people", frames.Serving("people"))
        held = holding(holder)
        yield settle(lambda: self.a.hub.bus.table.members["i2"].figures.services == {"people": 1})
        asked = post(self.a.http_port, "/services/people/requests", "who")
        yield settle(lambda: held)
        rescuer = yield self.client(self.a)
        yield command(rescuer, "serve people", frames.Serving("people"))
        answering(rescuer, lambda body: "ann, bob")
        holder.transport.abortConnection()
        code, answer = yield asked
        self.assertEqual((code, answer["reply"], answer["instance"]), (200, "ann, bob", "i1"))
        # Drawn again at least once: i2 may still be announced with its member, and then
        # refuses it too (it has nobody left) before i1's member is drawn.
        self.assertGreaterEqual(self.a.hub.snapshot().addressed.redrawn, 1)
        yield self.finish(rescuer)

    @defer.inlineCallbacks
    def test_a_device_killed_mid_request_is_client_gone(self):
        device = yield self.registered(self.b, "lock1")
        held = holding(device)
        yield until_http(self.a.http_port, "/clients/lock1", lambda c, _: c == 200)
        asked = post(self.a.http_port, "/clients/lock1/requests", "open")
        yield settle(lambda: held)
        device.transport.abortConnection()
        code, answer = yield asked
        self.assertEqual((code, answer["error"]), (503, "client_gone"))
        yield self.finish()

    @defer.inlineCallbacks
    def test_a_flood_from_one_client_stays_bounded(self):
        """Thousands of names, asks and bogus replies: clear codes, nothing kept."""
        hostile = yield self.client(self.a)
        for n in range(2000):
            hostile.send(f"register n{n}")
            hostile.send(f"reply bogus{n} x")
        yield command(hostile, "register last", frames.Registered("last"), skip=4001)
        self.assertEqual(self.a.hub.snapshot().addressed.names, 1)
        yield settle(lambda: self.a.hub.snapshot().errors.get("unexpected_reply") == 2000)
        yield self.finish(hostile)


class KilledInstance(unittest.TestCase):
    @defer.inlineCallbacks
    def test_kill_9_takes_its_names_away_within_seconds(self):
        redis = yield infra.redis_server(self)
        ports = [infra.free_port(), infra.free_port()]
        daemons = [
            infra.NeaDaemon(
                f"d{n}",
                "--redis",
                redis.url,
                "--cluster-name",
                "kr",
                "--heartbeat",
                HEARTBEAT,
                "--admin-token",
                TOKEN,
                "--http",
                f"tcp:{port}:interface=127.0.0.1",
            )
            for n, port in enumerate(ports, 1)
        ]
        for daemon in daemons:
            self.addCleanup(daemon.stop)
            daemon.program.start()
        yield defer.gatherResults([d.listening() for d in daemons])
        survivor, victim = daemons
        device = yield connect(self, victim.port)
        yield command(device, "register dev", frames.Registered("dev"))
        yield until_http(
            ports[0], "/clients/dev", lambda c, body: body.get("instance") == "d2", timeout=3 * WAIT
        )
        # "Within seconds" is the names hash's expiry, which every beat sets again.
        ttl = yield redis.pttl("kr:names:d2")
        self.assertTrue(0 < ttl <= 3 * float(HEARTBEAT) * 1000, ttl)
        yield victim.kill()
        yield device.closed
        gone = yield until_http(ports[0], "/clients/dev", lambda c, _: c == 404, timeout=3 * WAIT)
        self.assertEqual(gone["error"], "no_such_client")
        yield survivor.stop()
        yield infra.until_clean(redis, "kr", within=3 * float(HEARTBEAT) + WAIT)
