"""The chat page in a real headless Chromium, on a real cluster: two in-process
instances sharing a redis-server and a PostgreSQL history store, each serving its own
``/chat`` page and ``/ws``.

A line typed on one page appears on the other. Then the other page's socket is cut
from the server side; lines are said while it is away; and it must come back by
itself with exactly the lines it missed, each with the store's id.
"""

import re

from twisted.internet import defer
from twisted.trial import unittest

from tests.infra import open_page, poll
from tests.support import settle
from tests.test_chat_cluster import chat_cluster, join
from tests.test_chat_page import READ_PAGE, type_and_click, type_and_enter
from tests.test_http_api import TOKEN, fetch_json, post_text
from tests.test_websocket import ws_session

#: Fewer lines than the page misses: its join history alone would leave a gap.
ON_JOIN = 2


def chat_lines(shown) -> list:
    """A page's lines but presence notices, which the other instance may send at any time."""
    return [line for line in shown["lines"] if line[1] != "presence"]


def as_shown(entry: dict) -> list:
    """A line of ``GET /chat/history`` as READ_PAGE reads it on a page it is not one's own."""
    return [
        entry["id"],
        entry["kind"],
        entry["name"] if entry["kind"] == "chat" else "*",
        entry["text"],
        False,
    ]


class PagesOnTwoInstances(unittest.TestCase):
    timeout = 180

    @defer.inlineCallbacks
    def setUp(self):
        self.cluster = yield chat_cluster(self, "--history-on-join", str(ON_JOIN))

    @defer.inlineCallbacks
    def joined_page(self, service, name: str):
        """Chromium showing ``service``'s own /chat page, joined as ``name`` (typed in)."""
        page = yield open_page(self, f"http://127.0.0.1:{service.http_port}/chat")
        yield poll(
            lambda: page.evaluate(READ_PAGE),
            lambda v: v and v["state"] == "idle",
            f"{name}'s page, before a name",
        )
        yield type_and_enter(page, "name", name)
        yield poll(
            lambda: page.evaluate(READ_PAGE),
            lambda v: v["state"] == "connected" and v["joined"],
            f"{name} joined",
        )
        return page

    @defer.inlineCallbacks
    def stored(self):
        """Every stored line, oldest first, as a page other than its sayer's shows it."""
        code, body = yield fetch_json(
            self.cluster.a.http_port, "/chat/history?since=0&limit=1000", token=TOKEN
        )
        self.assertEqual((code, body["more"]), (200, False))
        return [as_shown(entry) for entry in body["lines"]]

    @defer.inlineCallbacks
    def test_a_page_cut_off_by_its_server_recovers_exactly_the_lines_it_missed(self):
        a, b = self.cluster.a, self.cluster.b
        carl = yield join(self, a, "carl")  # a line client, before any line is stored
        ann = yield self.joined_page(a, "ann")
        bea = yield self.joined_page(b, "bea")

        def read_bea():
            return bea.evaluate(READ_PAGE)

        yield type_and_enter(ann, "text", "hello from a")
        shown = yield poll(read_bea, lambda v: chat_lines(v), "ann's line on bea's page")
        self.assertEqual(chat_lines(shown), (yield self.stored()))
        self.assertEqual(chat_lines(shown)[0][1:], ["chat", "ann", "hello from a", False])
        self.assertIsInstance(chat_lines(shown)[0][0], int)

        # b stops accepting: bea's reconnects wait in its listen backlog until it reads
        # again, so every line below is said while she is away, however fast she retries.
        listening = b.http.listening_port
        listening.stopReading()
        session = ws_session(b.hub)
        self.assertEqual(
            [(c.id, c.name, c.profile) for c in b.hub.connections(10)],
            [(session.id, "bea", "chat")],
        )
        session.abort()  # the server drops its socket: no close frame, as a crash would
        away = yield poll(read_bea, lambda v: v["state"] != "connected", "bea cut off")
        self.assertRegex(away["connection"], re.compile(r"^(reconnecting in \d+ s|connecting…)$"))
        yield settle(lambda: not b.hub.connections(10))

        yield type_and_enter(ann, "text", "while away 1")
        yield type_and_click(ann, "text", "while away 2", "send")
        carl.send('{"type":"chat","payload":"from a line client"}')
        code, _ = yield post_text(a.http_port, "/broadcast", "maintenance at ten")
        self.assertEqual(code, 200)
        yield type_and_enter(ann, "text", "while away 3")
        yield settle(lambda: a.hub.snapshot().store.stored == 6)
        missed = (yield self.stored())[1:]
        self.assertEqual(len(missed), 5)
        self.assertGreater(len(missed), ON_JOIN)
        still = yield read_bea()
        self.assertNotEqual(still["state"], "connected")
        self.assertEqual(chat_lines(still), chat_lines(shown))

        listening.startReading()
        back = yield poll(
            read_bea,
            lambda v: v["state"] == "connected" and len(chat_lines(v)) >= 1 + len(missed),
            "bea back",
        )
        self.assertEqual(chat_lines(back), chat_lines(shown) + missed)
        ids = [line[0] for line in chat_lines(back)]
        self.assertEqual(ids, sorted(set(ids)))

        # Live again on the new socket, and nothing of the replay comes late.
        yield type_and_enter(ann, "text", "after")
        stored = yield poll(self.stored, lambda lines: len(lines) == 7, "the last line stored")
        final = yield poll(read_bea, lambda v: len(chat_lines(v)) >= 7, "the last line")
        self.assertEqual(chat_lines(final), stored)
        self.assertEqual(final["state"], "connected")
