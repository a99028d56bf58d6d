"""The chat profile and its history on the real service tree: real TLS and TCP
sockets on loopback, SQLite files in the test's directory, the HTTP endpoint."""

import json

from twisted.internet import defer, reactor
from twisted.trial import unittest
from twisted.web.client import Agent, readBody
from twisted.web.http_headers import Headers

from nea.net.startup import StartupError
from nea.server.service import makeService
from tests.support import (
    connect,
    parse_options,
    settle,
    start_server,
    tcp_listen,
    tls_listen,
)
from tests.test_websocket import ws_connect

TOKEN = "t" * 32


@defer.inlineCallbacks
def lines(client, count: int):
    """The next ``count`` lines ``client`` receives."""
    got = []
    for _ in range(count):
        got.append((yield client.next()))
    return got


class TutorialClient(unittest.TestCase):
    """The seed chat's text client, on a chat listener over TLS, history in SQLite."""

    @defer.inlineCallbacks
    def setUp(self):
        self.path = self.mktemp() + ".db"
        self.service = yield start_server(
            self,
            "--listen",
            tls_listen("chat"),
            "--store",
            f"sqlite:{self.path}",
            "--history-on-join",
            "3",
            "--admin-token",
            TOKEN,
        )
        (self.port,) = self.service.ports

    @defer.inlineCallbacks
    def test_transcript(self):
        alice = yield connect(self, self.port)
        alice.send("not a name")
        self.assertTrue((yield alice.next()).startswith(b"error bad_nick "))
        alice.send("alice")
        self.assertEqual((yield alice.next()), b"* welcome alice")
        bob = yield connect(self, self.port)
        bob.send("bob")
        self.assertEqual((yield bob.next()), b"* welcome bob")
        self.assertEqual((yield alice.next()), b"* bob joined")
        alice.send("hello everyone")
        self.assertEqual((yield bob.next()), b"alice: hello everyone")
        bob.send("hi alice")
        self.assertEqual((yield alice.next()), b"bob: hi alice")  # and not its own line back
        carol = yield connect(self, self.port)
        carol.send("carol")
        self.assertEqual(
            (yield lines(carol, 3)),
            [b"* welcome carol", b"alice: hello everyone", b"bob: hi alice"],
        )
        self.assertEqual((yield alice.next()), b"* carol joined")
        self.assertEqual((yield bob.next()), b"* carol joined")
        bob.send("exit")
        self.assertEqual((yield bob.next()), b"bye")
        yield bob.closed
        self.assertEqual((yield alice.next()), b"* bob left")
        self.assertEqual((yield carol.next()), b"* bob left")
        store = self.service.hub.snapshot().store
        self.assertEqual((store.state, store.stored, store.unsaved), ("ok", 2, 0))

    @defer.inlineCallbacks
    def test_http_history_needs_the_token_and_pages_by_id(self):
        alice = yield connect(self, self.port)
        alice.send("alice")
        yield alice.next()
        for n in range(3):
            alice.send(f"line {n}")
        yield settle(lambda: self.service.hub.snapshot().store.stored == 3)
        yield self.service.hub.broadcast("from the operator")
        agent = Agent(reactor)
        url = f"http://127.0.0.1:{self.service.http_port}/chat/history?since=1&limit=2".encode()
        refused = yield agent.request(b"GET", url)
        self.assertEqual(refused.code, 401)
        yield readBody(refused)
        answer = yield agent.request(
            b"GET", url, Headers({b"Authorization": [f"Bearer {TOKEN}".encode()]})
        )
        body = json.loads((yield readBody(answer)))
        self.assertEqual(answer.code, 200)
        self.assertEqual(
            [(e["id"], e["kind"], e["name"], e["text"]) for e in body["lines"]],
            [(2, "chat", "alice", "line 1"), (3, "chat", "alice", "line 2")],
        )
        self.assertEqual((body["last_id"], body["more"]), (3, True))
        url = url.replace(b"since=1", b"since=3")
        answer = yield agent.request(
            b"GET", url, Headers({b"Authorization": [f"Bearer {TOKEN}".encode()]})
        )
        body = json.loads((yield readBody(answer)))
        self.assertEqual(
            [(e["kind"], e["name"], e["text"]) for e in body["lines"]],
            [("broadcast", None, "from the operator")],
        )
        self.assertFalse(body["more"])


class WebSocketAndLines(unittest.TestCase):
    """A browser-like client (autobahn's) at /ws?profile=chat and a tutorial line client."""

    @defer.inlineCallbacks
    def test_they_chat_together(self):
        service = yield start_server(
            self, "--listen", tcp_listen("chat"), "--store", f"sqlite:{self.mktemp()}.db"
        )
        line = yield connect(self, service.ports[0], tls=False)
        line.send("liner")
        yield line.next()
        line.send("before the browser")
        yield settle(lambda: service.hub.snapshot().store.stored == 1)
        ws = yield ws_connect(self, service.http_port, "/ws?profile=chat")
        ws.send_json("nick", "webby")
        self.assertEqual((yield ws.next()), {"type": "nick", "payload": "webby"})
        replay = yield ws.next()
        self.assertEqual(
            (replay["type"], replay["payload"]["id"], replay["payload"]["text"]),
            ("history", 1, "before the browser"),
        )
        self.assertEqual(
            (yield ws.next()), {"type": "history_end", "payload": {"last_id": 1, "more": False}}
        )
        self.assertEqual((yield line.next()), b"* webby joined")
        line.send("hello browser")
        live = (yield ws.next())["payload"]
        self.assertEqual((live["from"], live["text"], live["id"]), ("liner", "hello browser", 2))
        ws.send_json("chat", "hello line")
        self.assertEqual((yield line.next()), b"webby: hello line")
        ws.send_json("since", 1)
        # its own line too: it was not echoed live, and has an id only from here
        for id, text in ((2, "hello browser"), (3, "hello line")):
            replayed = (yield ws.next())["payload"]
            self.assertEqual((replayed["id"], replayed["text"]), (id, text))
        self.assertEqual((yield ws.next())["payload"], {"last_id": 3, "more": False})
        ws.sendClose(1000)
        yield ws.closed
        self.assertEqual((yield line.next()), b"* webby left")


class Restart(unittest.TestCase):
    @defer.inlineCallbacks
    def test_sqlite_history_survives_a_restart(self):
        path = self.mktemp() + ".db"
        args = ("--listen", tcp_listen("chat"), "--store", f"sqlite:{path}")
        first = yield start_server(self, *args)
        ann = yield connect(self, first.ports[0], tls=False)
        ann.send("ann")
        yield ann.next()
        ann.send("remember me")
        yield settle(lambda: first.hub.snapshot().store.stored == 1)
        yield first.hub.broadcast("and me")
        ann.transport.loseConnection()
        yield ann.closed
        yield first.stopService()
        second = yield start_server(self, *args)
        bob = yield connect(self, second.ports[0], tls=False)
        bob.send("bob")
        self.assertEqual(
            (yield lines(bob, 3)), [b"* welcome bob", b"ann: remember me", b"* and me"]
        )
        bob.send('{"type":"since","payload":1}')  # the first JSON frame: JSON from now on
        replay = [json.loads(line) for line in (yield lines(bob, 2))]
        self.assertEqual(replay[0]["payload"]["text"], "and me")
        self.assertEqual(
            replay[1], {"type": "history_end", "payload": {"last_id": 2, "more": False}}
        )


class Refused(unittest.TestCase):
    def test_redis_with_sqlite_is_refused_in_one_line(self):
        config = parse_options(
            "--redis", "redis://127.0.0.1:6379/0", "--store", f"sqlite:{self.mktemp()}.db"
        )
        with self.assertRaises(StartupError) as caught:
            makeService(config, reactor)
        message = str(caught.exception)
        self.assertIn("cannot be shared by a cluster", message)
        self.assertNotIn("\n", message)

    def test_a_bad_store_is_refused_in_one_line(self):
        for value, says in (
            ("mysql://x", "unknown store"),
            ("sqlite:", "no file path"),
            (f"sqlite:{self.mktemp()}/missing/\0/x.db", "--store"),
        ):
            with self.assertRaises(StartupError) as caught:
                makeService(parse_options("--store", value), reactor)
            self.assertIn(says, str(caught.exception))
            self.assertNotIn("\n", str(caught.exception))
