"""WebSocket clients: the framing on StringTransport and a Clock, then real sockets on
loopback with autobahn's own Twisted client (and a real TLS handshake for wss)."""

import json
import random
import struct

from autobahn.twisted.websocket import WebSocketClientFactory, WebSocketClientProtocol
from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.internet import defer, protocol, reactor
from twisted.internet.defer import DeferredQueue
from twisted.internet.endpoints import TCP4ClientEndpoint, wrapClientTLS
from twisted.internet.error import ConnectionDone
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.python.failure import Failure
from twisted.trial import unittest

from nea.core.bus import LocalBus
from nea.core.hub import Hub, HubConfig
from nea.core.testing import FakePeer
from nea.server.connection import CLOSE_TIMEOUT, ConnectionLimits
from nea.server.listeners import Listen
from nea.server.websocket import (
    MAX_HANDSHAKE,
    MessageSession,
    WebSocketFactory,
    WebSocketSettings,
    origin_allowed,
    parse_origins,
)
from nea.wire import errors, frames, profiles
from tests.support import (
    WAIT,
    client_tls,
    connect,
    next_tick,
    settle,
    start_server,
    tcp_listen,
    ws_listen,
)
from tests.wire_clients import client_frame
from tests.wire_clients import server_frames as wire_frames

TEXT, BINARY, CLOSE = 1, 2, 8

UPGRADE = (
    "GET {path} HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
    "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n{extra}\r\n"
)


def upgrade(path="/", host="127.0.0.1", origin=None) -> bytes:
    extra = f"Origin: {origin}\r\n" if origin else ""
    return UPGRADE.format(path=path, host=host, extra=extra).encode()


def server_frames(data: bytes) -> list[tuple[int, bytes]]:
    """The (opcode, payload) of each unmasked frame the server wrote after its 101."""
    found, _ = wire_frames(data.partition(b"\r\n\r\n")[2])
    return [(opcode, payload) for opcode, _, payload in found]


def make_hub(clock=None, **config):
    return Hub(clock or Clock(), LocalBus("unit"), HubConfig(**config), random.Random(0))


def json_frame(kind: str, payload=None) -> bytes:
    obj = {"type": kind} if payload is None else {"type": kind, "payload": payload}
    return client_frame(json.dumps(obj).encode())


class Framing(unittest.TestCase):
    """One WebSocket connection on a StringTransport, its time on a Clock."""

    def setUp(self):
        self.clock = Clock()
        self.hub = make_hub(self.clock)

    def connect(self, profile=profiles.NEA, handshake=True, **limits):
        settings_ = WebSocketSettings(profile, ConnectionLimits(**limits), handshake_timeout=10)
        connection = WebSocketFactory(self.hub, settings_).buildProtocol(None)
        transport = StringTransport()
        connection.makeConnection(transport)
        if handshake:
            connection.dataReceived(upgrade())
        return connection, transport

    def messages(self, transport) -> list[dict]:
        """What ``transport`` was written once the reactor turn has ended (`Outbox`)."""
        self.clock.advance(0)
        found = [json.loads(p) for op, p in server_frames(transport.value()) if op == TEXT]
        return [m for m in found if m["type"] != "date"]

    def test_the_client_joins_once_the_opening_handshake_is_done(self):
        connection, transport = self.connect(handshake=False)
        self.assertEqual(self.hub.snapshot().connections, 0)
        connection.dataReceived(upgrade())
        self.assertIn(b"101 Switching Protocols", transport.value())
        self.assertEqual(self.hub.snapshot().connections, 1)
        self.assertEqual(list(self.hub.registry.peers), [connection.session])

    def test_each_text_message_is_one_request_each_push_one_message(self):
        connection, transport = self.connect()
        connection.dataReceived(json_frame("reverse", "abc") + json_frame("status"))
        [reverse, status] = self.messages(transport)
        self.assertEqual(reverse, {"type": "reverse", "payload": "cba"})
        self.assertEqual(status["type"], "status")

    def test_a_fragmented_message_is_one_request(self):
        connection, transport = self.connect()
        data = json.dumps({"type": "reverse", "payload": "fragments"}).encode()
        connection.dataReceived(
            client_frame(data[:5], fin=False) + client_frame(data[5:], opcode=0)
        )
        self.assertEqual(self.messages(transport), [{"type": "reverse", "payload": "stnemgarf"}])

    def test_text_that_is_no_json_object_and_binary_messages_are_bad_json(self):
        connection, transport = self.connect()
        for frame in (
            client_frame(b"message hello"),
            client_frame(b"[1]"),
            client_frame(b'{"type":"reverse","payload":"x"}', opcode=BINARY),
        ):
            connection.dataReceived(frame)
        replies = self.messages(transport)
        self.assertEqual([r["payload"]["code"] for r in replies], ["bad_json"] * 3)
        self.assertEqual(self.hub.snapshot().errors.get("bad_json", 0), 3)
        self.assertFalse(transport.disconnecting)  # not a limit: the connection stays

    def test_the_relay_profile_takes_json_too(self):
        connection, transport = self.connect(profiles.RELAY)
        target = FakePeer(profiles.RELAY)
        self.hub.join(target)
        self.hub.registry.relay_capable.discard(connection.session)
        connection.dataReceived(json_frame("message", "hi") + json_frame("reverse", "x"))
        self.assertEqual(target.take(), [frames.RelayPush("hi")])
        self.hub.handle(target, frames.Ack("hi"))
        [refused, ok] = sorted(self.messages(transport), key=lambda m: m["type"])
        self.assertEqual(ok, {"type": "ok", "payload": "hi"})
        self.assertEqual(refused["payload"]["code"], "not_in_profile")

    def test_an_over_long_message_is_an_error_then_a_close(self):
        connection, transport = self.connect(max_line=100)
        # Announced longer than the limit: refused from the frame header, before its payload.
        connection.dataReceived(client_frame(b"x" * 50, length=10_000))
        [error] = self.messages(transport)
        self.assertEqual(error["payload"]["code"], "line_too_long")
        self.assertIn(CLOSE, [op for op, _ in server_frames(transport.value())])
        connection.dataReceived(b"y" * 20_000 + json_frame("reverse", "late"))
        self.assertEqual(self.hub.snapshot().errors.get("line_too_long", 0), 1)
        self.assertEqual(len(self.messages(transport)), 1)  # nothing after it handled
        self.clock.advance(CLOSE_TIMEOUT + 0.1)  # a client that never answers the close
        self.assertTrue(transport.disconnected)

    def test_fragments_that_add_up_past_the_limit(self):
        connection, transport = self.connect(max_line=100)
        connection.dataReceived(client_frame(b"x" * 60, fin=False))
        self.assertEqual(self.hub.snapshot().errors.get("line_too_long", 0), 0)
        for _ in range(3):
            connection.dataReceived(client_frame(b"x" * 60, opcode=0, fin=False))
        self.assertEqual(self.hub.snapshot().errors.get("line_too_long", 0), 1)
        self.assertEqual(self.messages(transport)[0]["payload"]["code"], "line_too_long")

    def test_an_unfinished_opening_handshake_is_closed_at_the_deadline(self):
        connection, transport = self.connect(handshake=False)
        connection.dataReceived(upgrade()[:30])
        self.clock.advance(9.9)
        self.assertFalse(transport.disconnected)
        self.clock.advance(0.2)
        self.assertTrue(transport.disconnected)
        connection.connectionLost(Failure(ConnectionDone()))
        self.assertTrue(self.hub.zero_state())

    def test_an_endless_handshake_is_cut_off(self):
        connection, transport = self.connect(handshake=False)
        for _ in range(MAX_HANDSHAKE // 1000 + 2):
            connection.dataReceived(b"X-Junk: " + b"j" * 990 + b"\r\n")
        self.assertTrue(transport.disconnected)

    def test_past_its_rate_the_socket_is_not_read_and_nothing_is_lost(self):
        connection, transport = self.connect(max_rate=10)
        connection.dataReceived(b"".join(json_frame("reverse", f"{i:03d}") for i in range(60)))
        self.assertEqual(len(self.messages(transport)), 20)  # the burst: twice the rate
        self.assertEqual(transport.producerState, "paused")
        for _ in range(100):
            if transport.producerState == "producing":
                break
            self.clock.advance(0.1)
        texts = [m["payload"] for m in self.messages(transport)]
        self.assertEqual(texts, [f"{i:03d}"[::-1] for i in range(60)])
        self.assertGreater(self.hub.snapshot().throttled, 0)

    def test_a_client_that_stops_reading_is_dropped_past_the_limit(self):
        connection, transport = self.connect(profiles.NEA, max_outbound=1000)
        other = FakePeer(profiles.CHAT, name="ann")
        self.hub.join(other)
        connection.session.pauseProducing()  # what the transport says when its buffer is full
        for i in range(50):
            self.hub.broadcast(f"news {i:02d}" + "." * 20)
        self.assertTrue(transport.disconnected)
        self.assertEqual(self.hub.snapshot().errors.get("slow_consumer", 0), 1)
        self.assertEqual(len(other.take()), 50)

    def test_pings_are_answered_unless_the_client_stopped_reading(self):
        connection, transport = self.connect(max_rate=0)
        connection.dataReceived(client_frame(b"p1", opcode=9))
        self.assertIn((10, b"p1"), server_frames(transport.value()))
        connection.session.pauseProducing()
        connection.dataReceived(b"".join(client_frame(b"p2", opcode=9) for _ in range(100)))
        self.assertNotIn((10, b"p2"), server_frames(transport.value()))

    def test_ping_and_pong_frames_take_tokens_of_the_rate(self):
        connection, transport = self.connect(max_rate=10)
        connection.dataReceived(
            b"".join(client_frame(b"p%d" % i, opcode=9) for i in range(30))
            + b"".join(client_frame(b"", opcode=10) for _ in range(30))
        )
        pongs = [p for op, p in server_frames(transport.value()) if op == 10]
        self.assertEqual(pongs, [b"p%d" % i for i in range(20)])  # the burst, then throttled
        self.assertEqual(transport.producerState, "paused")
        self.assertEqual(self.hub.snapshot().throttled, 1)
        for _ in range(100):
            if transport.producerState == "producing":
                break
            self.clock.advance(0.1)
        pongs = [p for op, p in server_frames(transport.value()) if op == 10]
        self.assertEqual(pongs, [b"p%d" % i for i in range(30)])  # late, but every one
        self.assertGreaterEqual(self.clock.seconds(), 3.0)  # 60 frames at 10 a second, less 20

    def test_a_silent_client_is_pinged_with_frames_and_closed_after_two_missed_pongs(self):
        self.hub = make_hub(self.clock, ping_interval=10)
        connection, transport = self.connect()
        self.clock.advance(10)  # first sweep: seen
        self.clock.advance(10)  # silent since: pinged
        pings = lambda: [op for op, _ in server_frames(transport.value()) if op == 9]  # noqa: E731
        self.assertEqual(pings(), [9])
        connection.dataReceived(client_frame(b"", opcode=10))  # it answers
        self.clock.pump([10] * 3)  # seen again, then pinged twice
        self.assertEqual(pings(), [9, 9, 9])
        self.assertFalse(transport.disconnecting)
        self.clock.advance(10)  # two pings missed since its pong
        messages = self.messages(transport)
        self.assertEqual(messages[-1]["payload"]["code"], "ping_timeout")
        self.assertEqual(self.hub.snapshot().errors, {"ping_timeout": 1})

    def test_the_clients_close_frame_ends_the_session(self):
        connection, transport = self.connect()
        connection.dataReceived(client_frame(struct.pack("!H", 1000), opcode=CLOSE))
        self.assertIn(CLOSE, [op for op, _ in server_frames(transport.value())])
        self.hub.broadcast("after the close")  # not sent: the WebSocket is closed
        self.assertEqual(self.messages(transport), [])
        self.clock.advance(CLOSE_TIMEOUT + 0.1)
        self.assertTrue(transport.disconnected)
        connection.connectionLost(Failure(ConnectionDone()))
        self.assertTrue(self.hub.zero_state())

    def test_a_protocol_violation_closes_and_leaves(self):
        connection, transport = self.connect()
        connection.dataReceived(bytes([0x81, 0x05]) + b"hello")  # unmasked: not a client's
        self.clock.advance(CLOSE_TIMEOUT + 0.1)
        self.assertTrue(transport.disconnected)
        connection.connectionLost(Failure(ConnectionDone()))
        self.assertTrue(self.hub.zero_state())

    @settings(max_examples=150, deadline=None)
    @given(
        value=st.recursive(
            st.none() | st.booleans() | st.integers() | st.floats() | st.text(),
            lambda children: (
                st.lists(children, max_size=4)
                | st.dictionaries(
                    st.sampled_from(["type", "cmd", "payload"]) | st.text(max_size=5),
                    children,
                    max_size=4,
                )
            ),
            max_leaves=12,
        ),
        profile=st.sampled_from(list(profiles.BY_NAME.values())),
    )
    def test_any_json_value_gets_an_allowed_reply_or_error(self, value, profile):
        self._one_message(json.dumps(value).encode(), profile)

    @settings(max_examples=150, deadline=None)
    @given(text=st.text(max_size=200), profile=st.sampled_from(list(profiles.BY_NAME.values())))
    def test_any_text_gets_an_allowed_reply_or_error(self, text, profile):
        self._one_message(text.encode("utf-8", "surrogatepass"), profile)

    def _one_message(self, payload: bytes, profile) -> None:
        """Whatever a client sends, it gets a known push or error, nothing fails, and
        the session stays or is closed by a known error."""
        hub = make_hub()
        settings_ = WebSocketSettings(profile, handshake_timeout=0)
        connection = WebSocketFactory(hub, settings_).buildProtocol(None)
        transport = StringTransport()
        connection.makeConnection(transport)
        connection.dataReceived(upgrade())
        connection.dataReceived(client_frame(payload))
        known = {
            "reverse",
            "status",
            "chat",
            "nick",
            "error",
            "bye",
            "ok",
            "message",
            "welcome",
            "date",
            "broadcast",
            "pong",
        }
        codes = {e.code for e in errors.ALL}
        for op, data in server_frames(transport.value()):
            if op == CLOSE:
                continue
            self.assertEqual(op, TEXT)
            reply = json.loads(data)
            self.assertIn(reply["type"], known)
            if reply["type"] == "error":
                self.assertIn(reply["payload"]["code"], codes)
        connection.connectionLost(Failure(ConnectionDone()))
        self.assertTrue(hub.zero_state())


class Origins(unittest.TestCase):
    def test_no_origin_is_a_program_and_allowed(self):
        self.assertTrue(origin_allowed(None, "example.com", ()))
        self.assertTrue(origin_allowed("", None, ()))

    def test_by_default_only_the_requests_own_host(self):
        self.assertTrue(origin_allowed("http://127.0.0.1:3000", "127.0.0.1:3000", ()))
        self.assertTrue(origin_allowed("https://Chat.Example.com", "chat.example.com", ()))
        self.assertFalse(origin_allowed("http://127.0.0.1:3001", "127.0.0.1:3000", ()))
        self.assertFalse(origin_allowed("null", "127.0.0.1:3000", ()))

    def test_a_list_replaces_the_default(self):
        allowed = parse_origins("https://a.example, https://B.example/")
        self.assertEqual(allowed, ("https://a.example", "https://b.example"))
        self.assertTrue(origin_allowed("https://b.example", "nea.local", allowed))
        self.assertFalse(origin_allowed("https://nea.local", "nea.local", allowed))
        self.assertTrue(origin_allowed("https://any.example", "x", parse_origins("*")))


# ---- real sockets ----


class WSClient(WebSocketClientProtocol):
    """Collects every message (decoded JSON); ``next`` waits for the next non-date one."""

    def __init__(self):
        super().__init__()
        self.messages: DeferredQueue = DeferredQueue()
        self.opened = defer.Deferred()
        self.closed = defer.Deferred()

    def onOpen(self):
        self.opened.callback(self)

    def onMessage(self, payload, isBinary):
        self.messages.put(json.loads(payload))

    def onClose(self, wasClean, code, reason):
        if not self.opened.called:
            self.opened.errback(ConnectionError(reason))
        self.closed.callback(code)

    def send_json(self, kind, payload=None):
        obj = {"type": kind} if payload is None else {"type": kind, "payload": payload}
        self.sendMessage(json.dumps(obj).encode())

    @defer.inlineCallbacks
    def next(self, timeout=WAIT):
        for _ in range(1000):
            message = yield self.messages.get().addTimeout(timeout, reactor)
            if message["type"] != "date":
                return message
        raise AssertionError("only dates arrived")


@defer.inlineCallbacks
def ws_connect(testcase, port, path="/", tls=False):
    scheme = "wss" if tls else "ws"
    factory = WebSocketClientFactory(f"{scheme}://localhost:{port}{path}")
    factory.protocol = WSClient
    # No autobahn timers of its own in tests: the tests' waits are bounded already.
    factory.setProtocolOptions(
        openHandshakeTimeout=0, closeHandshakeTimeout=0, serverConnectionDropTimeout=0
    )
    endpoint = TCP4ClientEndpoint(reactor, "127.0.0.1", port, timeout=WAIT)
    if tls:
        endpoint = wrapClientTLS(client_tls(), endpoint)
    client = yield endpoint.connect(factory).addTimeout(WAIT, reactor)
    testcase.addCleanup(_close, client)
    yield client.opened.addTimeout(WAIT, reactor)
    return client


def _close(client):
    if not client.closed.called:
        client.transport.abortConnection()
    return client.closed


class Raw(protocol.Protocol):
    """Bytes in, kept; ``closed`` fires when the server ends the connection."""

    def __init__(self):
        self.data = b""
        self.closed = defer.Deferred()

    def dataReceived(self, data):
        self.data += data

    def connectionLost(self, reason):
        self.closed.callback(self.data)


@defer.inlineCallbacks
def raw_connect(testcase, port):
    endpoint = TCP4ClientEndpoint(reactor, "127.0.0.1", port, timeout=WAIT)
    raw = yield endpoint.connect(protocol.Factory.forProtocol(Raw))
    testcase.addCleanup(
        lambda: (
            raw.closed if raw.closed.called else (raw.transport.abortConnection(), raw.closed)[1]
        )
    )
    return raw


def ws_session(hub) -> MessageSession:
    [session] = [p for p in hub.registry.peers if isinstance(p, MessageSession)]
    return session


class OnLoopback(unittest.TestCase):
    @defer.inlineCallbacks
    def setUp(self):
        self.service = yield start_server(
            self,
            "--listen",
            tcp_listen(),
            "--listen",
            ws_listen(),
            "--listen",
            ws_listen(tls=True),
            "--listen",
            tcp_listen("relay"),
            "--listen",
            ws_listen("relay"),
            "--handshake-timeout",
            "1",
        )
        self.line, self.ws, self.wss, self.relay_line, self.relay_ws = self.service.ports
        self.hub = self.service.hub

    @defer.inlineCallbacks
    def test_a_websocket_and_a_line_client_chat(self):
        for port, tls in ((self.ws, False), (self.wss, True), (self.service.http_port, False)):
            ws = yield ws_connect(
                self, port, "/ws" if port == self.service.http_port else "/", tls=tls
            )
            line = yield connect(self, self.line, tls=False)
            ws.send_json("nick", "webby")
            self.assertEqual((yield ws.next()), {"type": "nick", "payload": "webby"})
            line.send("chat hello from a line")
            said = (yield ws.next())["payload"]
            self.assertEqual(
                (said["from"], said["text"], said["id"]),
                (line_name(self.hub), "hello from a line", None),
            )
            ws.send_json("chat", "hello from a browser")
            for _ in range(3):  # its own line first, then the WebSocket's
                push = yield line.next_push()
                if push.text == "hello from a browser":
                    break
            self.assertEqual(push, frames.ChatPush("webby", "hello from a browser"))
            ws.sendClose(1000)
            line.transport.loseConnection()
            yield defer.gatherResults([ws.closed, line.closed])
            yield settle(self.hub.zero_state)

    @defer.inlineCallbacks
    def test_relay_between_a_websocket_and_a_line_client(self):
        ws = yield ws_connect(self, self.relay_ws)
        line = yield connect(self, self.relay_line, tls=False)
        yield settle(lambda: self.hub.snapshot().connections == 2)
        # Each sender is taken out of the draw, so that the other one is the target.
        self.hub.registry.relay_capable.discard(ws_session(self.hub))
        ws.send_json("message", "from the web")
        self.assertEqual((yield line.next()), b"message from the web")
        line.send("ok from the web")
        self.assertEqual((yield ws.next()), {"type": "ok", "payload": "from the web"})
        self.hub.registry.relay_capable.add(ws_session(self.hub))
        self.hub.registry.relay_capable.discard(
            next(p for p in self.hub.registry.peers if not isinstance(p, MessageSession))
        )
        line.send("message from a line")
        self.assertEqual((yield ws.next()), {"type": "message", "payload": "from a line"})
        ws.send_json("ok", "from a line")
        self.assertEqual((yield line.next()), b"ok from a line")
        self.assertEqual(self.hub.snapshot().relays.acked, 2)

    @defer.inlineCallbacks
    def test_status_over_wss(self):
        ws = yield ws_connect(self, self.wss, tls=True)
        ws.send_json("status")
        status = yield ws.next()
        self.assertEqual(status["type"], "status")
        self.assertEqual(status["payload"]["profiles"]["nea"], 1)

    @defer.inlineCallbacks
    def test_errors_are_the_line_connections(self):
        ws = yield ws_connect(self, self.ws)
        ws.sendMessage(b"{not json")
        ws.sendMessage(b'{"type":"reverse","payload":"x"}', isBinary=True)
        ws.send_json("nope")
        codes = []
        for _ in range(3):
            codes.append((yield ws.next())["payload"]["code"])
        self.assertEqual(codes, ["bad_json", "bad_json", "unknown_type"])
        ws.send_json("reverse", "still up")
        self.assertEqual((yield ws.next()), {"type": "reverse", "payload": "pu llits"})

    @defer.inlineCallbacks
    def test_an_over_long_message_is_one_error_and_a_close(self):
        ws = yield ws_connect(self, self.wss, tls=True)
        ws.sendMessage(b"x" * (200 * 1024))
        error = yield ws.next()
        self.assertEqual(error["payload"]["code"], "line_too_long")
        yield ws.closed.addTimeout(WAIT, reactor)
        self.assertEqual(self.hub.snapshot().errors.get("line_too_long", 0), 1)
        yield settle(self.hub.zero_state)

    @defer.inlineCallbacks
    def test_a_client_that_never_completes_the_opening_handshake_is_closed(self):
        silent = yield raw_connect(self, self.ws)
        half = yield raw_connect(self, self.ws)
        half.transport.write(upgrade()[:40])
        yield defer.gatherResults([silent.closed, half.closed]).addTimeout(WAIT, reactor)
        self.assertEqual(self.hub.snapshot().connections, 0)

    @defer.inlineCallbacks
    def test_a_foreign_origin_is_refused_with_403_on_both_paths(self):
        for port, path in ((self.ws, "/"), (self.service.http_port, "/ws")):
            raw = yield raw_connect(self, port)
            raw.transport.write(
                upgrade(path, host=f"127.0.0.1:{port}", origin="https://evil.example")
            )
            answer = yield raw.closed.addTimeout(WAIT, reactor)
            self.assertTrue(answer.startswith(b"HTTP/1.1 403"), answer[:60])
        raw = yield raw_connect(self, self.service.http_port)  # the page's own origin is fine
        raw.transport.write(
            upgrade(
                "/ws",
                host=f"127.0.0.1:{self.service.http_port}",
                origin=f"http://127.0.0.1:{self.service.http_port}",
            )
        )
        yield settle(lambda: b"\r\n\r\n" in raw.data)
        self.assertTrue(raw.data.startswith(b"HTTP/1.1 101"))

    @defer.inlineCallbacks
    def test_dns_rebinding_host_and_origin_both_foreign_is_refused_on_both_paths(self):
        for port, path in ((self.ws, "/"), (self.service.http_port, "/ws")):
            raw = yield raw_connect(self, port)
            raw.transport.write(
                upgrade(
                    path, host=f"rebound.example:{port}", origin=f"http://rebound.example:{port}"
                )
            )
            answer = yield raw.closed.addTimeout(WAIT, reactor)
            self.assertRegex(answer[:20], rb"HTTP/1.1 4(03|21)", answer[:60])
        self.assertEqual(self.hub.snapshot().connections, 0)

    @defer.inlineCallbacks
    def test_ws_profile_query_parameter(self):
        yield ws_connect(self, self.service.http_port, "/ws?profile=chat")
        yield settle(lambda: self.hub.snapshot().connections == 1)
        self.assertEqual(ws_session(self.hub).profile, profiles.CHAT)
        raw = yield raw_connect(self, self.service.http_port)
        raw.transport.write(upgrade("/ws?profile=nope", host="127.0.0.1"))
        answer = yield raw.closed.addTimeout(WAIT, reactor)
        self.assertTrue(answer.startswith(b"HTTP/1.1 400"), answer[:60])
        self.assertEqual(self.service.http.site.connections, 0)  # handed over, not held

    @defer.inlineCallbacks
    def test_ws_obeys_the_per_ip_limit(self):
        service = yield start_server(self, "--listen", tcp_listen(), "--max-clients-per-ip", "2")
        kept = []
        for _ in range(2):
            kept.append((yield ws_connect(self, service.http_port, "/ws")))
        yield settle(lambda: service.hub.snapshot().connections == 2)
        raw = yield raw_connect(self, service.http_port)
        raw.transport.write(upgrade("/ws", host="127.0.0.1"))
        answer = yield raw.closed.addTimeout(WAIT, reactor)
        self.assertNotIn(b"101", answer)
        line = yield connect(self, service.ports[0], tls=False)  # every transport: one limit
        yield line.closed.addTimeout(WAIT, reactor)
        self.assertEqual(service.hub.snapshot().connections, 2)
        kept[0].transport.abortConnection()
        yield settle(lambda: service.hub.snapshot().connections == 1)
        yield ws_connect(self, service.http_port, "/ws")  # room again

    @defer.inlineCallbacks
    def test_vanishing_clients_leave_zero_state(self):
        for n, close in enumerate(("abort", "fin", "close_frame"), 1):
            ws = yield ws_connect(self, self.ws)
            ws.send_json("message", "pending")  # a relay it waits for
            yield settle(lambda n=n: self.hub.snapshot().relays.requested == n)
            if close == "abort":
                ws.transport.abortConnection()
            elif close == "fin":
                ws.transport.loseWriteConnection()
            else:
                ws.sendClose(1000)
            yield settle(self.hub.zero_state)


def line_name(hub) -> str:
    return next(p.name for p in hub.registry.peers if not isinstance(p, MessageSession))


class Limits(unittest.TestCase):
    @defer.inlineCallbacks
    def test_a_flood_is_read_at_the_rate_and_nothing_is_lost(self):
        service = yield start_server(self, "--listen", ws_listen(), "--max-rate", "50")
        ws = yield ws_connect(self, service.ports[0])
        count = 300  # 200 past the burst: at 50 a second, read over 4 s
        for i in range(count):
            ws.send_json("reverse", f"{i:04d}")
        replies = []
        for _ in range(count):
            replies.append((yield ws.next()))
        self.assertEqual([r["payload"] for r in replies], [f"{i:04d}"[::-1] for i in range(count)])
        self.assertGreater(service.hub.snapshot().throttled, 0)
        self.assertEqual(service.hub.snapshot().errors, {})

    @defer.inlineCallbacks
    def test_a_client_that_never_reads_is_dropped_as_a_slow_consumer(self):
        service = yield start_server(
            self, "--listen", ws_listen(tls=True), "--max-outbound", "65536"
        )
        ws = yield ws_connect(self, service.ports[0], tls=True)
        yield settle(lambda: service.hub.snapshot().connections == 1)
        ws.transport.pauseProducing()  # never reads again
        for _ in range(5000):  # the kernel's buffers first, then nea's bound
            if service.hub.snapshot().errors.get("slow_consumer", 0):
                break
            service.hub.broadcast("x" * 60_000)
            yield next_tick(0.001)
        self.assertEqual(service.hub.snapshot().errors.get("slow_consumer", 0), 1)
        yield settle(service.hub.zero_state)


class ListenerSyntax(unittest.TestCase):
    def test_ws_after_the_profile_and_with_proxy(self):
        listen = Listen.parse("chat+proxy+ws=ssl:8443:privateKey=k.pem:certKey=c.pem")
        self.assertEqual(
            (listen.profile, listen.proxy, listen.websocket, listen.transport),
            (profiles.CHAT, True, True, "tls"),
        )
        self.assertFalse(Listen.parse("relay+proxy=tcp:1").websocket)
        with self.assertRaisesRegex(ValueError, r"unknown listener option 'wss'.*\+proxy, \+ws"):
            Listen.parse("nea+wss=tcp:1")
