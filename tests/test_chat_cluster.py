"""Chat history across a cluster: two in-process instances on a real redis-server
sharing a real PostgreSQL, spoken to over real sockets on loopback."""

import json
from typing import Any

import attrs
from twisted.internet import defer
from twisted.trial import unittest

from tests import infra
from tests.support import connect, next_tick, settle, start_server, tcp_listen
from tests.test_chat_history import lines
from tests.test_http_api import TOKEN, fetch_json, post_text


def said(line: bytes) -> tuple:
    frame = json.loads(line)
    payload = frame["payload"]
    if frame["type"] == "history_end":
        return ("end", payload["last_id"], payload["more"])
    return (frame["type"], payload["id"], payload.get("from"), payload["text"])


@defer.inlineCallbacks
def chat_lines(client, count: int, most: int = 20):
    """The next ``count`` lines that are not presence notices.

    A join on the other instance reaches this one through Redis, so a client that
    joined right after it may still be told of it.
    """
    got = []
    for _ in range(most):
        line = yield client.next()
        if json.loads(line)["type"] != "presence":
            got.append(line)
            if len(got) == count:
                return got
    raise AssertionError(f"only {len(got)} of {count} chat lines")


@defer.inlineCallbacks
def replayed(client, most: int = 50):
    """The replay ``client`` was sent, up to its history_end (live lines left out)."""
    replay = []
    for _ in range(most):
        entry = said((yield client.next()))
        if entry[0] in ("history", "end"):
            replay.append(entry)
        if entry[0] == "end":
            return replay
    raise AssertionError(f"no history_end in {most} lines")


@attrs.frozen
class ChatCluster:
    """Two in-process instances, ``a`` and ``b``, on one redis-server and one PostgreSQL."""

    redis: infra.RedisServer
    pg: infra.PostgreSQLServer
    a: Any
    b: Any


@defer.inlineCallbacks
def chat_cluster(testcase, *args: str) -> ChatCluster:
    """A started `ChatCluster` whose instances see each other; ``args`` go to both.

    Each has a plain ``chat`` line listener (its first port) and the HTTP API (admin
    token `TOKEN`); all is stopped when the test ends.
    """
    redis = yield infra.redis_server(testcase)
    pg = yield infra.postgresql_server(testcase)
    instances = []
    for name in ("a", "b"):
        instances.append(
            (
                yield start_server(
                    testcase,
                    "--instance-id",
                    name,
                    "--listen",
                    tcp_listen("chat"),
                    "--redis",
                    redis.url,
                    "--cluster-name",
                    "chathistory",
                    "--heartbeat",
                    "0.5",
                    "--admin-token",
                    TOKEN,
                    "--store",
                    pg.url,
                    *args,
                )
            )
        )
    a, b = instances
    yield settle(
        lambda: all(
            len(s.hub.snapshot().cluster.members) == 2
            and s.hub.snapshot().cluster.state == "connected"
            for s in (a, b)
        )
    )
    return ChatCluster(redis, pg, a, b)


@defer.inlineCallbacks
def join(testcase, service, name: str):
    """A JSON client of ``service``'s chat listener named ``name``, shown no join history
    (none is asked for, or none is stored yet)."""
    client = yield connect(testcase, service.ports[0], tls=False)
    client.send(json.dumps({"type": "nick", "payload": name}))
    testcase.assertEqual(json.loads((yield client.next())), {"type": "nick", "payload": name})
    testcase.assertEqual(said((yield client.next())), ("end", 0, False))
    return client


class SharedHistory(unittest.TestCase):
    @defer.inlineCallbacks
    def setUp(self):
        cluster = yield chat_cluster(self, "--history-on-join", "0")
        self.pg, self.a, self.b = cluster.pg, cluster.a, cluster.b

    @defer.inlineCallbacks
    def test_a_line_said_on_a_is_stored_once_and_recovered_on_b_by_id(self):
        ann = yield join(self, self.a, "ann")
        bob = yield join(self, self.b, "bob")
        yield lines(ann, 1)  # bob joined
        ann.send('{"type":"chat","payload":"hello from a"}')
        (live,) = yield chat_lines(bob, 1)
        kind, id, name, text = said(live)
        self.assertEqual((kind, name, text), ("chat", "ann", "hello from a"))
        self.assertIsInstance(id, int)
        bob.send(json.dumps({"type": "since", "payload": id - 1}))
        self.assertEqual(
            (yield replayed(bob)), [("history", id, "ann", "hello from a"), ("end", id, False)]
        )
        stored = [s.hub.snapshot().store.stored for s in (self.a, self.b)]
        self.assertEqual(stored, [1, 0])  # stored once, where it was said

    @defer.inlineCallbacks
    def test_a_client_that_reconnects_elsewhere_gets_exactly_what_it_missed(self):
        ann = yield join(self, self.a, "ann")
        web = yield join(self, self.a, "web")
        yield lines(ann, 1)
        ann.send('{"type":"chat","payload":"seen"}')
        last_seen = said((yield lines(web, 1))[0])[1]
        web.transport.loseConnection()
        yield web.closed
        yield lines(ann, 1)  # web left
        for n in range(5):
            ann.send(json.dumps({"type": "chat", "payload": f"line {n}"}))
        code, _ = yield post_text(self.b.http_port, "/broadcast", "broadcast", TOKEN)
        self.assertEqual(code, 200)
        yield settle(lambda: self.a.hub.snapshot().store.stored == 6)
        yield settle(lambda: self.b.hub.snapshot().store.stored == 1)
        back = yield join(self, self.b, "web")
        back.send(json.dumps({"type": "since", "payload": last_seen}))
        # Lines may still reach b live (Redis) around the replay: a client dedupes those
        # by id; what it asked for is what ``since`` replays, up to history_end.
        replay = yield replayed(back)
        texts = [entry[3] for entry in replay[:-1]]
        self.assertCountEqual(texts, [f"line {n}" for n in range(5)] + ["broadcast"])
        self.assertEqual(
            [t for t in texts if t.startswith("line ")], [f"line {n}" for n in range(5)]
        )  # in the order said
        ids = [entry[1] for entry in replay[:-1]]
        self.assertEqual(ids, sorted(set(ids)))
        self.assertGreater(ids[0], last_seen)
        self.assertEqual(replay[-1], ("end", ids[-1], False))

    @defer.inlineCallbacks
    def test_the_database_stopped_mid_chat(self):
        ann = yield join(self, self.a, "ann")
        bob = yield join(self, self.b, "bob")
        yield lines(ann, 1)
        flushed = self.flushLoggedErrors
        yield self.pg.stop()
        ann.send('{"type":"chat","payload":"while it is down"}')
        (live,) = yield chat_lines(bob, 1)
        self.assertEqual(said(live)[1:], (None, "ann", "while it is down"))
        code, status = yield fetch_json(self.a.http_port, "/status")
        self.assertEqual((status["store"]["state"], status["store"]["unsaved"]), ("degraded", 1))
        code, health = yield fetch_json(self.a.http_port, "/healthz")
        self.assertEqual((code, health["store"]), (200, "degraded"))
        yield self.pg.start()
        yield settle(lambda: self.a.hub.snapshot().store.state == "ok", timeout=60)
        ann.send('{"type":"chat","payload":"back"}')
        (live,) = yield chat_lines(bob, 1)
        self.assertIsInstance(said(live)[1], int)
        self.assertEqual(flushed(), [])  # no traceback was logged


class DatabaseDownAtStart(unittest.TestCase):
    """A PostgreSQL that is not up yet when nea starts: chat goes on unsaved, and the
    schema is created and lines stored as soon as it answers."""

    @defer.inlineCallbacks
    def test_chat_starts_degraded_and_history_recovers(self):
        pg = yield infra.postgresql_server(self, started=False)
        service = yield start_server(
            self, "--listen", tcp_listen("chat"), "--store", pg.url, "--history-on-join", "0"
        )
        self.assertEqual(service.hub.snapshot().store.state, "degraded")
        ann = yield join(self, service, "ann")
        bob = yield join(self, service, "bob")
        yield lines(ann, 1)  # bob joined
        ann.send('{"type":"chat","payload":"unsaved"}')
        (live,) = yield chat_lines(bob, 1)
        self.assertEqual(said(live)[1:], (None, "ann", "unsaved"))
        yield pg.start()
        yield settle(lambda: service.hub.snapshot().store.state == "ok", timeout=60)
        ann.send('{"type":"chat","payload":"saved"}')
        (live,) = yield chat_lines(bob, 1)
        kind, id, name, text = said(live)
        self.assertEqual((kind, name, text), ("chat", "ann", "saved"))
        bob.send(json.dumps({"type": "since", "payload": 0}))
        self.assertEqual(
            (yield replayed(bob)), [("history", id, "ann", "saved"), ("end", id, False)]
        )
        self.assertEqual(self.flushLoggedErrors(), [])


class BusOutage(unittest.TestCase):
    """Redis hangs (SIGSTOP) or dies while two instances chat: every line said meanwhile
    reaches the other instance's clients once back, or those clients are told ``gap``."""

    @defer.inlineCallbacks
    def chatting(self, *args: str):
        cluster = yield chat_cluster(self, "--history-on-join", "0", *args)
        ann = yield join(self, cluster.a, "ann")
        bob = yield join(self, cluster.b, "bob")
        yield lines(ann, 1)  # bob joined
        ann.send('{"type":"chat","payload":"before"}')
        self.assertEqual(said((yield chat_lines(bob, 1))[0])[3], "before")
        return cluster, ann, bob

    @defer.inlineCallbacks
    def outage(self, cluster, ann, hang: bool):
        """Redis hangs (or is killed), ann says lines meanwhile, and it comes back."""
        instances = (cluster.a, cluster.b)
        if hang:
            cluster.redis.program.signal("STOP")
            self.addCleanup(cluster.redis.program.signal, "CONT")
        else:
            yield cluster.redis.stop()
        for n in range(3):  # into a Redis that hangs, or none: published to nobody
            ann.send(json.dumps({"type": "chat", "payload": f"lost {n}"}))
        yield settle(
            lambda: all(s.hub.snapshot().cluster.state == "degraded" for s in instances), timeout=30
        )
        for n in range(3):
            ann.send(json.dumps({"type": "chat", "payload": f"down {n}"}))
        yield next_tick(0.2)
        if hang:
            cluster.redis.program.signal("CONT")
        else:
            yield cluster.redis.start()
        yield settle(
            lambda: all(len(s.hub.snapshot().cluster.members) == 2 for s in instances), timeout=30
        )

    @defer.inlineCallbacks
    def assert_caught_up(self, ann, bob):
        ann.send('{"type":"chat","payload":"after"}')
        got = [said(line) for line in (yield chat_lines(bob, 7))]
        self.assertEqual(
            [entry[3] for entry in got],
            [f"lost {n}" for n in range(3)] + [f"down {n}" for n in range(3)] + ["after"],
        )
        ids = [entry[1] for entry in got]
        self.assertEqual(ids, sorted(set(ids)))  # in id order, none twice
        self.assertEqual(self.flushLoggedErrors(), [])

    @defer.inlineCallbacks
    def test_redis_hangs_and_the_clients_are_caught_up_from_the_shared_store(self):
        cluster, ann, bob = yield self.chatting()
        yield self.outage(cluster, ann, hang=True)
        yield self.assert_caught_up(ann, bob)

    @defer.inlineCallbacks
    def test_redis_restarts_and_the_clients_are_caught_up_from_the_shared_store(self):
        cluster, ann, bob = yield self.chatting()
        yield self.outage(cluster, ann, hang=False)
        yield self.assert_caught_up(ann, bob)

    @defer.inlineCallbacks
    def test_without_a_shared_store_the_clients_are_told_of_the_gap(self):
        cluster, ann, bob = yield self.chatting("--store", "none")
        yield self.outage(cluster, ann, hang=True)
        frame = json.loads((yield chat_lines(bob, 1))[0])
        self.assertEqual(frame["type"], "gap")
        gap = frame["payload"]
        self.assertLess(gap["since"], gap["until"])
        self.assertEqual(gap["last_id"], 0)  # nothing is stored: no since to ask
        ann.send('{"type":"chat","payload":"after"}')
        self.assertEqual(said((yield chat_lines(bob, 1))[0])[2:], ("ann", "after"))
