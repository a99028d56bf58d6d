"""The chat page (``GET /chat``) in a real headless Chromium.

Its protocol functions are run in a blank page; its layout is measured at a phone's
width; and the whole page is run against a small chat server written here with
autobahn that speaks the chat profile's JSON frames, which the test cuts off from
the server side to see the page reconnect and recover exactly the lines it missed.
"""

import json
import random
import re
from importlib import resources

from autobahn.twisted.resource import WebSocketResource
from autobahn.twisted.websocket import WebSocketServerFactory, WebSocketServerProtocol
from autobahn.websocket.types import ConnectionDeny
from twisted.internet import defer, reactor
from twisted.internet.task import Clock
from twisted.trial import unittest
from twisted.web.server import Site

from nea.core.bus import LocalBus
from nea.core.hub import Hub, HubConfig
from nea.http.api import Api, ApiSettings
from nea.http.site import build_root
from nea.wire.codec import NICK_PATTERN
from tests.infra import open_page, poll
from tests.support import settle, start_server, tcp_listen
from tests.test_http_api import fetch
from tests.test_permissions import SECRET, sign

STATIC = resources.files("nea.http") / "static"
ASSETS = {
    "/chat": ("chat.html", b"text/html; charset=utf-8"),
    "/static/chat.js": ("chat.js", b"text/javascript"),
    "/static/chat.css": ("chat.css", b"text/css"),
}

#: Runs the protocol functions over a list of events and tells what came of them:
#: ["open"] (a new socket), ["say", TEXT], or ["frame", FRAME] (from the server).
FEED = """((name, events) => {
  let state = chatState(name);
  const sent = [];
  for (const [kind, arg] of events) {
    const result = kind === "open" ? opened(state)
                 : kind === "say" ? said(state, arg, "2026-12-01T19:40:00.000Z")
                 : applyFrame(state, arg);
    state = result.state;
    sent.push(...result.send);
  }
  return {lines: state.lines.map(l => [l.id, l.kind, l.from, l.text, l.own]), sent,
          since: missingSince(state), joined: state.joined,
          error: state.error && state.error.code};
})"""

#: What the tests read off the chat page (null until it is there).
READ_PAGE = """(() => document.getElementById("lines") && ({
  state: document.getElementById("connection").dataset.state,
  connection: document.getElementById("connection").textContent,
  lines: [...document.querySelectorAll("#lines li")].map(li => [
    li.dataset.id === "" ? null : Number(li.dataset.id), li.dataset.kind,
    li.querySelector(".from").textContent, li.querySelector(".text").textContent,
    li.classList.contains("own")]),
  joined: document.getElementById("name-form").hidden,
  focused: document.activeElement && document.activeElement.id,
  elements: document.querySelectorAll("#lines *:not(time, span)").length
            - document.querySelectorAll("#lines li").length,
}))()"""


def history(id, name, text, kind="chat"):
    return {
        "type": "history",
        "payload": {
            "id": id,
            "time": f"2026-12-01T19:40:{id:02}.000Z",
            "kind": kind,
            "from": name,
            "text": text,
        },
    }


def end(last_id, more=False):
    return {"type": "history_end", "payload": {"last_id": last_id, "more": more}}


def live(id, name, text):
    return {
        "type": "chat",
        "payload": {"from": name, "text": text, "id": id, "time": "2026-12-01T19:41:00.000Z"},
    }


def nick(name):
    return {"type": "nick", "payload": name}


def since(last_id):
    return {"type": "since", "payload": last_id}


def joined_with(*frames):
    """A page's first connection: it opens, its name is accepted, the join history."""
    return [["open"], ["frame", nick("alice")], *(["frame", f] for f in frames)]


class ProtocolFunctions(unittest.TestCase):
    """chat.js's protocol part, loaded into a blank page, without any server."""

    timeout = 60

    @defer.inlineCallbacks
    def setUp(self):
        self.page = yield open_page(self, "about:blank")
        yield self.page.evaluate((STATIC / "chat.js").read_text())

    def feed(self, events, name="alice"):
        return self.page.evaluate(f"{FEED}({json.dumps(name)}, {json.dumps(events)})")

    @defer.inlineCallbacks
    def test_history_then_live_lines_are_kept_once_each_in_id_order(self):
        seen = yield self.feed(
            [
                *joined_with(history(1, "bob", "one"), history(2, "carol", "two"), end(2)),
                ["frame", live(4, "bob", "four")],
                ["frame", live(3, "carol", "three")],  # cluster fan-out may come out of order
                ["frame", live(4, "bob", "four")],
                ["frame", history(2, "carol", "two")],
            ]
        )
        self.assertEqual(
            [line[:4] for line in seen["lines"]],
            [
                [1, "chat", "bob", "one"],
                [2, "chat", "carol", "two"],
                [3, "chat", "carol", "three"],
                [4, "chat", "bob", "four"],
            ],
        )
        self.assertEqual(seen["sent"], [nick("alice")])
        self.assertEqual(seen["since"], since(4))
        self.assertTrue(seen["joined"])

    @defer.inlineCallbacks
    def test_a_gap_is_shown_and_what_the_store_has_is_asked_for(self):
        gap = {
            "type": "gap",
            "payload": {
                "since": "2026-12-01T19:40:00.000Z",
                "until": "2026-12-01T19:40:20.000Z",
                "last_id": 2,
            },
        }
        seen = yield self.feed(
            [
                *joined_with(history(2, "bob", "two"), end(2)),
                ["frame", gap],
                ["frame", history(3, "bob", "three")],
                ["frame", end(3)],
            ]
        )
        self.assertEqual(seen["sent"], [nick("alice"), since(2)])
        self.assertEqual(
            [line[:4] for line in seen["lines"]],
            [
                [2, "chat", "bob", "two"],
                [None, "gap", None, "lines said since 2026-12-01T19:40:00.000Z may be missing"],
                [3, "chat", "bob", "three"],
            ],
        )

    @defer.inlineCallbacks
    def test_a_rejoin_asks_since_the_last_line_it_had_not_the_join_historys(self):
        first = joined_with(history(3, "bob", "three"), history(4, "bob", "four"), end(4))
        rejoin = [
            ["open"],
            ["frame", nick("alice")],
            ["frame", history(6, "bob", "six")],
            ["frame", history(7, "bob", "seven")],
            ["frame", end(7)],
        ]
        seen = yield self.feed([*first, *rejoin])
        self.assertEqual(seen["sent"], [nick("alice"), nick("alice"), since(4)])
        # Cut again before the replay came: the next rejoin still starts from 4.
        seen = yield self.feed([*first, *rejoin, *rejoin])
        self.assertEqual(seen["sent"][-2:], [nick("alice"), since(4)])
        self.assertEqual([line[0] for line in seen["lines"]], [3, 4, 6, 7])

        seen = yield self.feed(
            [
                *first,
                *rejoin,
                ["frame", history(5, "bob", "five")],
                ["frame", live(8, "carol", "live meanwhile")],
                ["frame", history(6, "bob", "six")],
                ["frame", end(6, more=True)],
                ["frame", history(7, "bob", "seven")],
                ["frame", end(7)],
            ]
        )
        self.assertEqual(seen["sent"], [nick("alice"), nick("alice"), since(4), since(6)])
        self.assertEqual(
            [line[:4] for line in seen["lines"]],
            [
                [3, "chat", "bob", "three"],
                [4, "chat", "bob", "four"],
                [5, "chat", "bob", "five"],
                [6, "chat", "bob", "six"],
                [7, "chat", "bob", "seven"],
                [8, "chat", "carol", "live meanwhile"],
            ],
        )
        self.assertEqual(seen["since"], since(8))

    @defer.inlineCallbacks
    def test_presence_and_unsaved_lines_are_shown_once_and_own_lines_take_their_id(self):
        seen = yield self.feed(
            [
                *joined_with(end(0)),
                ["frame", {"type": "presence", "payload": {"name": "bob", "event": "joined"}}],
                ["frame", live(None, "bob", "unsaved")],
                ["say", "mine"],
                ["frame", live(1, "bob", "after mine")],
                ["open"],
                ["frame", nick("alice")],
                ["frame", history(1, "bob", "after mine")],
                ["frame", history(2, "alice", "mine")],
                ["frame", end(2)],
                ["frame", history(2, "alice", "mine")],
                ["frame", end(2)],
            ]
        )
        self.assertEqual(
            seen["lines"],
            [
                [None, "presence", "bob", "joined", False],
                [None, "chat", "bob", "unsaved", False],
                [1, "chat", "bob", "after mine", False],
                [2, "chat", "alice", "mine", True],
            ],
        )
        self.assertEqual(
            seen["sent"],
            [nick("alice"), {"type": "chat", "payload": "mine"}, nick("alice"), since(1)],
        )
        self.assertEqual(seen["since"], since(2))

    @defer.inlineCallbacks
    def test_a_live_broadcast_asks_for_its_id_and_is_shown_once(self):
        seen = yield self.feed(
            [
                *joined_with(history(1, "bob", "one"), end(1)),
                ["frame", {"type": "broadcast", "payload": "maintenance at 10"}],
                ["frame", {"type": "broadcast", "payload": "again"}],  # a since is on its way
                ["frame", history(2, None, "maintenance at 10", kind="broadcast")],
                ["frame", history(3, None, "again", kind="broadcast")],
                ["frame", end(3)],
            ]
        )
        self.assertEqual(
            seen["lines"],
            [
                [1, "chat", "bob", "one", False],
                [2, "broadcast", None, "maintenance at 10", False],
                [3, "broadcast", None, "again", False],
            ],
        )
        self.assertEqual(seen["sent"], [nick("alice"), since(1)])

    @defer.inlineCallbacks
    def test_errors(self):
        seen = yield self.feed(
            [
                ["open"],
                [
                    "frame",
                    {
                        "type": "error",
                        "payload": {"code": "bad_nick", "message": "not a valid nick"},
                    },
                ],
            ]
        )
        self.assertEqual((seen["joined"], seen["error"]), (False, "bad_nick"))
        seen = yield self.feed(
            [
                *joined_with(history(1, "bob", "one"), end(1)),
                ["open"],
                ["frame", nick("alice")],
                ["frame", end(1)],
                [
                    "frame",
                    {
                        "type": "error",
                        "payload": {"code": "history_unavailable", "message": "no store"},
                    },
                ],
                ["frame", live(5, "bob", "five")],
            ]
        )
        self.assertEqual((seen["joined"], seen["error"]), (True, "history_unavailable"))
        self.assertEqual(seen["since"], since(5), "after the error the page goes on live")

    @defer.inlineCallbacks
    def test_a_refused_token_or_name_does_not_join(self):
        for code in ("expired_token", "bad_signature", "not_allowed"):
            seen = yield self.feed(
                [
                    ["open"],
                    ["frame", {"type": "error", "payload": {"code": code, "message": ""}}],
                    ["frame", nick("alice")] if code != "not_allowed" else ["open"],
                ]
            )
            self.assertEqual((seen["joined"], seen["error"]), (False, code), code)

    @defer.inlineCallbacks
    def test_old_lines_are_dropped_and_not_taken_back(self):
        lines = [["frame", live(i, "bob", str(i))] for i in range(1, 511)]
        seen = yield self.feed([*joined_with(end(0)), *lines, ["frame", history(3, "bob", "3")]])
        self.assertEqual([line[0] for line in seen["lines"]], list(range(11, 511)))

    @defer.inlineCallbacks
    def test_the_reconnect_delay_doubles_to_15_s_with_jitter(self):
        delays = yield self.page.evaluate(
            "[0, 1, 2, 3, 4, 5, 6, 50].map(n => [backoffDelay(n, 0), backoffDelay(n, 0.999999)])"
        )
        floors = [0.25, 0.5, 1, 2, 4, 7.5, 7.5, 7.5]
        ceilings = [0.5, 1, 2, 4, 8, 15, 15, 15]
        for (low, high), floor, ceiling in zip(delays, floors, ceilings, strict=True):
            self.assertAlmostEqual(low, floor)
            self.assertAlmostEqual(high, ceiling, places=4)

    @defer.inlineCallbacks
    def test_names_are_checked_by_the_servers_rule(self):
        names = [
            "alice",
            "x.y-z_1",
            "a" * 32,
            "a" * 33,
            "José",
            "a b",
            "日本",
            "tab\there",
            "smile😀",
            "semi;colon",
            "@svc",
            "A9",
        ]
        problems = yield self.page.evaluate(f"{json.dumps(names)}.map(nameProblem)")
        for name, problem in zip(names, problems, strict=True):
            self.assertEqual(problem is None, NICK_PATTERN.match(name) is not None, (name, problem))
        self.assertIn('"é": not allowed in a name', problems[names.index("José")])
        self.assertIn("spaces", problems[names.index("a b")])
        self.assertIn("too long", problems[names.index("a" * 33)])


class FakeChatProtocol(WebSocketServerProtocol):
    def onConnect(self, request):
        if self.factory.chat.refusing:
            self.factory.chat.refused += 1
            raise ConnectionDeny(ConnectionDeny.SERVICE_UNAVAILABLE, "refusing for the test")
        if request.params.get("profile") != ["chat"]:
            raise ConnectionDeny(ConnectionDeny.BAD_REQUEST, "not the chat profile")

    def onOpen(self):
        self.name = None
        self.factory.chat.connections.append(self)

    def onMessage(self, payload, isBinary):
        self.factory.chat.received(self, json.loads(payload))

    def onClose(self, wasClean, code, reason):
        self.factory.chat.joined.discard(self)

    def send_frame(self, kind, payload):
        self.sendMessage(json.dumps({"type": kind, "payload": payload}).encode())


class FakeChat:
    """The server side of the chat profile in JSON, as the page needs it, on one process.

    ``since`` answers at most ``page`` lines at a time, so that the page must ask again.
    ``refusing``: new WebSockets are refused (HTTP 503) and counted.
    """

    def __init__(self, history_on_join: int = 2, page: int = 2) -> None:
        self.history_on_join = history_on_join
        self.page = page
        self.lines: list[dict] = []
        self.connections: list[FakeChatProtocol] = []
        self.joined: set[FakeChatProtocol] = set()
        self.sent: list[tuple[int, dict]] = []  # (connection number, frame) from the page
        self.refusing = False
        self.refused = 0

    def store(self, name, text) -> dict:
        line = {
            "id": len(self.lines) + 1,
            "time": f"2026-12-01T19:40:{len(self.lines):02}.000Z",
            "kind": "chat",
            "from": name,
            "text": text,
        }
        self.lines.append(line)
        return line

    def say(self, name, text, sender=None) -> None:
        line = self.store(name, text)
        for client in self.joined - {sender}:
            client.send_frame("chat", {k: line[k] for k in ("from", "text", "id", "time")})

    def cut(self) -> None:
        for client in self.joined:
            client.transport.abortConnection()

    def received(self, client, frame) -> None:
        self.sent.append((self.connections.index(client), frame))
        kind, payload = frame["type"], frame.get("payload")
        if kind == "nick":
            client.name = payload
            client.send_frame("nick", payload)
            self.replay(client, self.lines[-self.history_on_join :], 0, False)
            self.joined.add(client)
        elif kind == "since":
            newer = [line for line in self.lines if line["id"] > payload]
            self.replay(client, newer[: self.page], payload, len(newer) > self.page)
        elif kind == "chat":
            self.say(client.name, payload, sender=client)

    def replay(self, client, lines, asked, more) -> None:
        for line in lines:
            client.send_frame("history", line)
        client.send_frame(
            "history_end", {"last_id": lines[-1]["id"] if lines else asked, "more": more}
        )

    def by_connection(self, number: int) -> list[dict]:
        return [frame for n, frame in self.sent if n == number]


def fake_chat_server(testcase, chat: FakeChat) -> str:
    """The daemon's own pages (its resource tree) with ``chat`` at /ws; returns the origin."""
    hub = Hub(Clock(), LocalBus("fake"), HubConfig(), random.Random(0))
    root = build_root(Api(hub, Clock(), ApiSettings(), lambda: True))
    factory = WebSocketServerFactory()
    factory.protocol = FakeChatProtocol
    factory.chat = chat
    factory.setProtocolOptions(openHandshakeTimeout=0, closeHandshakeTimeout=0)
    root.putChild(b"ws", WebSocketResource(factory))
    port = reactor.listenTCP(0, Site(root), interface="127.0.0.1")
    testcase.addCleanup(port.stopListening)
    testcase.addCleanup(
        lambda: [c.transport.abortConnection() for c in chat.connections if c.transport is not None]
    )
    return f"http://127.0.0.1:{port.getHost().port}"


@defer.inlineCallbacks
def type_into(page, element_id: str, text: str):
    """Focuses the element and types ``text`` into it."""
    yield page.evaluate(f"document.getElementById({json.dumps(element_id)}).focus()")
    yield page.call("Input.insertText", {"text": text})


@defer.inlineCallbacks
def type_and_enter(page, element_id: str, text: str):
    """Types ``text`` into the element and presses Enter, as a person does."""
    yield type_into(page, element_id, text)
    for kind in ("keyDown", "keyUp"):
        yield page.call(
            "Input.dispatchKeyEvent",
            {
                "type": kind,
                "key": "Enter",
                "code": "Enter",
                "windowsVirtualKeyCode": 13,
                **({"text": "\r"} if kind == "keyDown" else {}),
            },
        )


@defer.inlineCallbacks
def type_and_click(page, element_id: str, text: str, button_id: str):
    """Types ``text`` into the element and clicks the button with the mouse, as a person does."""
    yield type_into(page, element_id, text)
    x, y = yield page.evaluate(f"""(button => {{
      button.scrollIntoView({{block: "center"}});
      const box = button.getBoundingClientRect();
      return [box.x + box.width / 2, box.y + box.height / 2];
    }})(document.getElementById({json.dumps(button_id)}))""")
    for kind in ("mousePressed", "mouseReleased"):
        yield page.call(
            "Input.dispatchMouseEvent",
            {"type": kind, "x": x, "y": y, "button": "left", "clickCount": 1},
        )


class ChatPage(unittest.TestCase):
    timeout = 120

    @defer.inlineCallbacks
    def test_the_page_and_its_assets_are_served_with_no_outside_url(self):
        service = yield start_server(self, "--listen", tcp_listen())
        for path, (name, content_type) in ASSETS.items():
            code, headers, body = yield fetch(service.http_port, path)
            self.assertEqual((code, headers.getRawHeaders(b"Content-Type")), (200, [content_type]))
            self.assertEqual(body, (STATIC / name).read_bytes())
            self.assertEqual(re.findall(rb"\b(?:https?|wss?)://", body), [], path)
        origin = f"http://127.0.0.1:{service.http_port}"
        page = yield open_page(self, f"{origin}/chat")
        # The name field has the focus (autofocus applies once the page is first rendered).
        yield poll(
            lambda: page.evaluate(READ_PAGE),
            lambda v: v and v["state"] == "idle" and v["focused"] == "name",
            "the page, before a name, its name field focused",
        )
        fetched = yield page.evaluate("performance.getEntriesByType('resource').map(e => e.name)")
        self.assertEqual(sorted(fetched), [f"{origin}/static/chat.css", f"{origin}/static/chat.js"])
        labelled = yield page.evaluate(
            "[...document.querySelectorAll('input')].map(i => i.labels.length)"
        )
        self.assertEqual(labelled, [1, 1, 1])

    @defer.inlineCallbacks
    def test_a_token_in_the_fragment_signs_the_page_in_under_its_identity(self):
        key = self.mktemp()
        with open(key, "wb") as file:
            file.write(SECRET)
        service = yield start_server(self, "--listen", tcp_listen(), "--jwt-key", key)
        token = sign({"sub": "u:42", "nick": "alice"})
        page = yield open_page(self, f"http://127.0.0.1:{service.http_port}/chat#token={token}")
        shown = yield poll(
            lambda: page.evaluate(READ_PAGE),
            lambda v: v and v["state"] == "connected" and v["joined"],
            "the page, signed in",
        )
        me = yield page.evaluate("[document.getElementById('me').textContent, location.hash]")
        self.assertEqual(me, ["alice", ""])
        [connection] = service.hub.connections(10)
        self.assertEqual(
            (connection.identity, connection.auth, connection.name), ("u:42", "token", "alice")
        )
        self.assertEqual(shown["state"], "connected")

    @defer.inlineCallbacks
    def test_a_name_the_server_would_refuse_is_not_sent_and_the_hint_says_why(self):
        chat = FakeChat()
        page = yield open_page(self, f"{fake_chat_server(self, chat)}/chat")
        hint = """(() => [document.getElementById("name-help").textContent,
                         document.getElementById("name-help").dataset.state,
                         document.getElementById("name").validationMessage])()"""
        yield poll(
            lambda: page.evaluate(READ_PAGE), lambda v: v and v["state"] == "idle", "the page"
        )
        yield type_and_enter(page, "name", "José")
        text, state, message = yield page.evaluate(hint)
        self.assertEqual(state, "refused")
        self.assertIn('"é": not allowed in a name', text)
        self.assertEqual(message, text)  # what the browser shows at the field
        shown = yield page.evaluate(READ_PAGE)
        self.assertEqual((shown["state"], shown["joined"]), ("idle", False))
        self.assertEqual(chat.connections, [])
        # Mended, the name is taken.
        yield page.evaluate('document.getElementById("name").value = ""')
        yield type_and_enter(page, "name", "Jose")
        yield poll(lambda: page.evaluate(READ_PAGE), lambda v: v["joined"], "joined as Jose")
        text, state, message = yield page.evaluate(hint)
        self.assertEqual((state, message), ("", ""))
        self.assertEqual(chat.by_connection(0), [nick("Jose")])

    @defer.inlineCallbacks
    def test_at_360_px_nothing_scrolls_sideways_and_targets_are_large(self):
        chat = FakeChat()
        chat.store("n" * 32, "w" * 400)  # one long word from a longest name
        chat.store("bob", "https://example.invalid/" + "a/" * 100)
        page = yield open_page(self, f"{fake_chat_server(self, chat)}/chat")
        yield page.call(
            "Emulation.setDeviceMetricsOverride",
            {"width": 360, "height": 640, "deviceScaleFactor": 2, "mobile": True},
        )
        yield poll(
            lambda: page.evaluate(READ_PAGE), lambda v: v and v["state"] == "idle", "the page"
        )
        yield type_and_enter(page, "name", "alice")
        yield poll(
            lambda: page.evaluate(READ_PAGE), lambda v: len(v["lines"]) == 2, "the long lines"
        )
        measured = yield page.evaluate("""({
          width: document.documentElement.scrollWidth,
          viewport: window.innerWidth,
          targets: [...document.querySelectorAll("#say-form input, #say-form button")]
            .map(e => e.getBoundingClientRect()).map(r => [r.width, r.height]),
        })""")
        self.assertEqual(measured["viewport"], 360)
        self.assertLessEqual(measured["width"], 360)
        for width, height in measured["targets"]:
            self.assertGreaterEqual(min(width, height), 44)

    @defer.inlineCallbacks
    def test_joins_shows_history_and_live_lines_and_recovers_what_it_missed(self):
        chat = FakeChat(history_on_join=2, page=2)
        chat.store("bob", "one")
        chat.store("carol", '<img src=x onerror="window.owned=1">')
        page = yield open_page(self, f"{fake_chat_server(self, chat)}/chat")

        def read():
            return page.evaluate(READ_PAGE)

        yield poll(read, lambda v: v and v["state"] == "idle", "the page, before a name")
        yield type_and_enter(page, "name", "alice")
        shown = yield poll(read, lambda v: len(v["lines"]) == 2, "the join history")
        self.assertEqual(chat.by_connection(0), [nick("alice")])
        self.assertEqual(
            shown["lines"],
            [
                [1, "chat", "bob", "one", False],
                [2, "chat", "carol", '<img src=x onerror="window.owned=1">', False],
            ],
        )
        self.assertEqual(
            (shown["state"], shown["joined"], shown["focused"]), ("connected", True, "text")
        )
        self.assertEqual(shown["elements"], 0, "a line's text became markup")

        chat.say("bob", "three, live")
        yield poll(read, lambda v: len(v["lines"]) == 3, "the live line")
        yield type_and_enter(page, "text", "mine")
        shown = yield poll(read, lambda v: len(v["lines"]) == 4, "the page's own line")
        self.assertEqual(shown["lines"][-1], [None, "chat", "alice", "mine", True])
        yield settle(lambda: len(chat.lines) == 4)
        self.assertEqual(chat.lines[-1]["text"], "mine")
        self.assertEqual(shown["focused"], "text")

        chat.refusing = True
        chat.cut()
        shown = yield poll(read, lambda v: v["state"] == "reconnecting", "reconnecting")
        self.assertRegex(shown["connection"], r"^reconnecting in \d+ s$")
        for text in ("five", "six", "seven"):
            chat.store("carol", text)  # said while the page was away
        yield settle(lambda: chat.refused >= 1, timeout=30)  # it tried, and will again
        chat.refusing = False

        shown = yield poll(
            read,
            lambda v: v["state"] == "connected" and len(v["lines"]) == 7,
            "the lines it missed",
        )
        # The page had up to 3; its own line (4) is matched to the one it showed. It may
        # show all 7 before it asks for the last page (6 and 7 came with the join).
        yield settle(lambda: len(chat.by_connection(1)) >= 3)
        self.assertEqual(chat.by_connection(1), [nick("alice"), since(3), since(5)])
        self.assertEqual(
            shown["lines"],
            [
                [1, "chat", "bob", "one", False],
                [2, "chat", "carol", '<img src=x onerror="window.owned=1">', False],
                [3, "chat", "bob", "three, live", False],
                [4, "chat", "alice", "mine", True],
                [5, "chat", "carol", "five", False],
                [6, "chat", "carol", "six", False],
                [7, "chat", "carol", "seven", False],
            ],
        )
        owned = yield page.evaluate("window.owned === undefined")
        self.assertTrue(owned)
