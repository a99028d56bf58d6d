"""The HTTP API's limits against hostile clients, over real sockets on loopback.

Each client here is a raw TCP socket that writes exactly the bytes it is told to,
so a test can stop after the headers, trickle a request, or never send its body.
Where the limit is about time, the site is built on a `Clock` (its sockets are
still real), so no test waits for a timeout to run out.
"""

import json

from twisted.internet import defer, reactor
from twisted.internet.endpoints import TCP4ClientEndpoint
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.task import Clock
from twisted.python.usage import UsageError
from twisted.trial import unittest

from nea.http import limits
from nea.http.site import api_site
from nea.server.settings import Settings
from tests.support import WAIT, parse_options, settle, start_server, tcp_listen
from tests.test_http_api import TOKEN

#: A declared body no test ever sends: answering it needs reading none of it.
HUGE = 500 * 1024 * 1024
MAX_BODY = 1000


class RawClient(Protocol):
    """Collects every byte the server sends; ``closed`` fires when the connection ends."""

    def __init__(self) -> None:
        self.received = b""
        self.closed = defer.Deferred()
        self._waiting: list[tuple[bytes, int, defer.Deferred]] = []

    def dataReceived(self, data: bytes) -> None:
        self.received += data
        for wanted, count, waiter in list(self._waiting):
            if self.received.count(wanted) >= count:
                self._waiting.remove((wanted, count, waiter))
                waiter.callback(self.received)

    def connectionLost(self, reason) -> None:
        self.closed.callback(self.received)

    def until(self, wanted: bytes, count: int = 1):
        """Fires with everything received once ``wanted`` has been, ``count`` times."""
        if self.received.count(wanted) >= count:
            return defer.succeed(self.received)
        waiter = defer.Deferred()
        self._waiting.append((wanted, count, waiter))
        return waiter.addTimeout(WAIT, reactor)

    def answer(self):
        """(status code, JSON body) of the first response, once the server has closed."""
        return self.closed.addTimeout(WAIT, reactor).addCallback(parse_response)


def parse_response(data: bytes):
    """(status code, header bytes, JSON body) of the one response in ``data`` (the API
    sends its bodies chunked); anything after that response is an error."""
    head, _, rest = data.partition(b"\r\n\r\n")
    assert b"transfer-encoding: chunked" in head.lower(), head
    body = b""
    for _ in range(100):
        size, _, rest = rest.partition(b"\r\n")
        size = int(size, 16)
        body, rest = body + rest[:size], rest[size + 2 :]
        if size == 0:
            break
    assert rest == b"", rest
    return int(head.split(b" ")[1]), head, json.loads(body)


def head(method: str, path: str, *headers: str, token: str | None = None) -> bytes:
    lines = [f"{method} {path} HTTP/1.1", "Host: 127.0.0.1", *headers]
    if token is not None:
        lines.append(f"Authorization: Bearer {token}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


@defer.inlineCallbacks
def raw_client(testcase, port: int, source: str | None = None):
    """A raw HTTP client; ``source``: the loopback address it connects from."""
    endpoint = TCP4ClientEndpoint(
        reactor, "127.0.0.1", port, timeout=WAIT, bindAddress=(source, 0) if source else None
    )
    client = yield endpoint.connect(Factory.forProtocol(RawClient)).addTimeout(WAIT, reactor)

    def close():
        if not client.closed.called:
            client.transport.abortConnection()
        return client.closed

    testcase.addCleanup(close)
    return client


def refused(site, reason: str) -> float:
    return site.metrics.registry.get_sample_value("nea_http_refused_total", {"reason": reason})


class ServerCase(unittest.TestCase):
    """A real in-process server with an admin token and a small body limit."""

    server_args: tuple[str, ...] = ("--http-max-body", str(MAX_BODY))

    @defer.inlineCallbacks
    def setUp(self):
        self.service = yield start_server(
            self, "--listen", tcp_listen(), "--admin-token", TOKEN, *self.server_args
        )
        self.hub = self.service.hub
        self.site = self.service.http.site

    def client(self):
        return raw_client(self, self.service.http_port)


class TokenBeforeBody(ServerCase):
    @defer.inlineCallbacks
    def test_401_from_the_headers_alone_and_the_connection_closes(self):
        for path in ("/broadcast", "/relay"):
            for token in (None, "wrong"):
                client = yield self.client()
                client.transport.write(
                    head(
                        "POST",
                        path,
                        f"Content-Length: {HUGE}",
                        "Content-Type: application/json",
                        token=token,
                    )
                )
                # Nothing of the body is ever sent: the answer cannot have waited for it.
                status, headers, body = yield client.answer()
                self.assertEqual((status, body["error"]), (401, "unauthorized"), (path, token))
                self.assertIn(b"Bearer realm", headers)
                self.assertIn(b"Connection: close", headers)
        self.assertEqual(refused(self.site, "unauthorized"), 4)
        snapshot = self.hub.snapshot()
        self.assertEqual((snapshot.chat.broadcasts, snapshot.relays.requested), (0, 0))

    @defer.inlineCallbacks
    def test_no_100_continue_without_the_token(self):
        client = yield self.client()
        client.transport.write(
            head("POST", "/broadcast", f"Content-Length: {HUGE}", "Expect: 100-continue")
        )
        status, headers, body = yield client.answer()
        self.assertEqual(status, 401)
        self.assertNotIn(b"100 Continue", client.received)

    @defer.inlineCallbacks
    def test_an_unauthorised_chunked_body_is_not_read_either(self):
        client = yield self.client()
        client.transport.write(head("POST", "/broadcast", "Transfer-Encoding: chunked"))
        status, _, body = yield client.answer()
        self.assertEqual((status, body["error"]), (401, "unauthorized"))

    @defer.inlineCallbacks
    def test_with_the_token_100_continue_then_the_body_is_read(self):
        client = yield self.client()
        body = json.dumps({"text": "after continue"}).encode()
        client.transport.write(
            head(
                "POST",
                "/broadcast",
                f"Content-Length: {len(body)}",
                "Content-Type: application/json",
                "Expect: 100-continue",
                token=TOKEN,
            )
        )
        yield client.until(b"HTTP/1.1 100 Continue\r\n\r\n")
        self.assertNotIn(b"200", client.received)  # nothing but the 100 before the body
        client.transport.write(body)
        received = yield client.until(b'"reached"')
        self.assertIn(b"HTTP/1.1 200 OK", received)
        self.assertEqual(self.hub.snapshot().chat.broadcasts, 1)

    @defer.inlineCallbacks
    def test_a_body_less_request_keeps_its_connection(self):
        # Nothing to leave unread: the 401 comes from the endpoint, and keep-alive holds.
        client = yield self.client()
        client.transport.write(head("POST", "/broadcast", "Content-Length: 0") * 2)
        received = yield client.until(b'"unauthorized"', count=2)
        self.assertEqual(received.count(b"HTTP/1.1 401"), 2)
        self.assertFalse(client.closed.called)
        self.assertEqual(refused(self.site, "unauthorized"), 0)


class BodyLimit(ServerCase):
    @defer.inlineCallbacks
    def test_a_larger_content_length_is_413_at_once(self):
        client = yield self.client()
        client.transport.write(
            head(
                "POST",
                "/broadcast",
                f"Content-Length: {MAX_BODY + 1}",
                "Expect: 100-continue",
                token=TOKEN,
            )
        )
        status, _, body = yield client.answer()
        self.assertEqual((status, body["error"]), (413, "body_too_large"))
        self.assertNotIn(b"100 Continue", client.received)
        self.assertEqual(refused(self.site, "body_too_large"), 1)

    @defer.inlineCallbacks
    def test_a_chunked_body_that_outgrows_the_limit_is_413_mid_way(self):
        client = yield self.client()
        client.transport.write(
            head("POST", "/broadcast", "Transfer-Encoding: chunked", token=TOKEN)
        )
        chunk = b" " * 600
        # Two chunks and no end: the answer comes while the body is still arriving.
        client.transport.write(b"%x\r\n%s\r\n" % (len(chunk), chunk) * 2)
        status, _, body = yield client.answer()
        self.assertEqual((status, body["error"]), (413, "body_too_large"))
        self.assertEqual(refused(self.site, "body_too_large"), 1)
        self.assertEqual(self.hub.snapshot().chat.broadcasts, 0)

    @defer.inlineCallbacks
    def test_the_end_of_an_outgrown_body_in_the_same_read_is_no_second_request(self):
        client = yield self.client()
        chunk = b" " * (MAX_BODY + 1)
        client.transport.write(
            head("POST", "/broadcast", "Transfer-Encoding: chunked", token=TOKEN)
            + b"%x\r\n%s\r\n0\r\n\r\n" % (len(chunk), chunk)
            + head("POST", "/broadcast", "Content-Length: 0", token=TOKEN)
        )
        data = yield client.closed.addTimeout(WAIT, reactor)
        self.assertEqual(data.count(b"HTTP/1.1"), 1)
        self.assertEqual(parse_response(data)[0], 413)
        self.assertEqual(self.hub.snapshot().chat.broadcasts, 0)

    @defer.inlineCallbacks
    def test_a_chunked_body_within_the_limit_is_served(self):
        client = yield self.client()
        body = json.dumps({"text": "in chunks"}).encode()
        client.transport.write(
            head("POST", "/broadcast", "Transfer-Encoding: chunked", token=TOKEN)
            + b"".join(b"%x\r\n%s\r\n" % (len(part), part) for part in (body[:5], body[5:]))
            + b"0\r\n\r\n"
        )
        received = yield client.until(b'"reached"')
        self.assertIn(b"HTTP/1.1 200 OK", received)


class ConnectionLimit(ServerCase):
    server_args = ("--http-max-connections", "3")

    @defer.inlineCallbacks
    def kept_client(self):
        """A client the server has accepted and answered, whose connection stays open."""
        client = yield self.client()
        client.transport.write(head("GET", "/healthz"))
        yield client.until(b"serving")
        return client

    @defer.inlineCallbacks
    def test_at_the_limit_the_longest_idle_connection_makes_room(self):
        """Idle keep-alive hoarders hold every slot: /healthz is still answered, each new
        connection closing the one idle for longest."""
        kept = []
        for _ in range(3):
            kept.append((yield self.kept_client()))
        self.assertEqual(self.site.connections, 3)
        for i in range(3):
            newcomer = yield self.kept_client()
            data = yield kept[i].closed.addTimeout(WAIT, reactor)
            self.assertEqual(data.count(b"serving"), 1)  # its own answer, then the close
            self.assertFalse(newcomer.closed.called)
        self.assertEqual(self.site.connections, 3)
        self.assertEqual(refused(self.site, "idle_evicted"), 3)
        self.assertEqual(refused(self.site, "too_many_connections"), 0)

    @defer.inlineCallbacks
    def test_a_newcomer_is_not_pushed_out_by_hoarders_that_reconnect(self):
        """A client that reconnects in a loop (ask once, then hold) must not push out a
        connection whose first request is not read yet: kept-alive idlers go first."""
        kept = []
        for _ in range(2):
            kept.append((yield self.kept_client()))
        probe = yield self.client()  # accepted; its request not sent yet
        yield settle(lambda: self.site.connections == 3)
        for i in range(4):
            hoarder = yield self.kept_client()
            kept.append(hoarder)
            yield kept[i].closed.addTimeout(WAIT, reactor)
        self.assertFalse(probe.closed.called)
        probe.transport.write(head("GET", "/healthz"))
        yield probe.until(b"serving")
        self.assertEqual(refused(self.site, "idle_evicted"), 4)

    @defer.inlineCallbacks
    def test_a_silent_new_connection_makes_room_once_its_grace_is_over(self):
        self.patch(limits, "FRESH_GRACE", 0.0)  # (its length is not what is tested)
        silent = []
        for _ in range(3):
            silent.append((yield self.client()))
        yield settle(lambda: self.site.connections == 3)
        newcomer = yield self.kept_client()
        yield silent[0].closed.addTimeout(WAIT, reactor)
        self.assertFalse(newcomer.closed.called)
        self.assertEqual(refused(self.site, "idle_evicted"), 1)

    @defer.inlineCallbacks
    def test_past_the_limit_with_nobody_idle_new_connections_are_closed_at_accept(self):
        busy = []
        for _ in range(3):
            client = yield self.client()
            client.transport.write(b"GET /healthz HTTP/1.1\r\n")  # begun, never finished
            busy.append(client)
        yield settle(
            lambda: (
                self.site.connections == 3
                and not any(self.site.is_idle(c) for c in self.site.channels)
            )
        )
        for _ in range(2):
            extra = yield self.client()
            extra.transport.write(head("GET", "/healthz"))
            data = yield extra.closed.addTimeout(WAIT, reactor)
            self.assertEqual(data, b"")
        self.assertEqual(refused(self.site, "too_many_connections"), 2)
        busy[0].transport.write(b"Host: 127.0.0.1\r\n\r\n")
        yield busy[0].until(b"serving")  # answered, so idle: the next newcomer takes its place
        yield self.kept_client()
        yield busy[0].closed.addTimeout(WAIT, reactor)
        self.assertEqual(refused(self.site, "idle_evicted"), 1)


class PerAddressLimit(ServerCase):
    server_args = ("--http-max-connections", "6", "--http-max-connections-per-ip", "2")

    @defer.inlineCallbacks
    def kept_client(self, source: str):
        client = yield raw_client(self, self.service.http_port, source)
        client.transport.write(head("GET", "/healthz"))
        yield client.until(b"serving")
        return client

    @defer.inlineCallbacks
    def test_one_address_reconnecting_in_a_loop_churns_its_own_share_only(self):
        other = yield raw_client(self, self.service.http_port, "127.0.0.3")  # sends nothing yet
        hoarded = []
        for _ in range(8):
            hoarded.append((yield self.kept_client("127.0.0.2")))
        for client in hoarded[:6]:  # each newcomer past 2 closed its own address's oldest
            yield client.closed.addTimeout(WAIT, reactor)
        self.assertFalse(any(client.closed.called for client in hoarded[6:]))
        self.assertFalse(other.closed.called)
        other.transport.write(head("GET", "/healthz"))
        yield other.until(b"serving")
        self.assertEqual(refused(self.site, "idle_evicted"), 6)
        self.assertEqual(refused(self.site, "too_many_connections"), 0)

    @defer.inlineCallbacks
    def test_an_address_busy_to_its_limit_is_refused_a_third(self):
        for _ in range(2):
            busy = yield raw_client(self, self.service.http_port, "127.0.0.2")
            busy.transport.write(b"GET /healthz HTTP/1.1\r\n")  # begun, never finished
        yield settle(
            lambda: (
                self.site.connections == 2
                and not any(self.site.is_idle(c) for c in self.site.channels)
            )
        )
        extra = yield raw_client(self, self.service.http_port, "127.0.0.2")
        self.assertEqual((yield extra.closed.addTimeout(WAIT, reactor)), b"")
        self.assertEqual(refused(self.site, "too_many_from_address"), 1)


class AllowedHosts(ServerCase):
    """DNS rebinding: a page of another site that made its name resolve to this daemon."""

    @defer.inlineCallbacks
    def test_a_request_for_another_host_is_421_from_its_headers(self):
        client = yield self.client()
        client.transport.write(
            b"GET /status HTTP/1.1\r\nHost: attacker.example:3000\r\n"
            b"Origin: http://attacker.example:3000\r\n\r\n"
        )
        status, _, body = yield client.answer()
        self.assertEqual((status, body["error"]), (421, "host_not_allowed"))
        self.assertEqual(refused(self.site, "host_not_allowed"), 1)

    @defer.inlineCallbacks
    def test_the_websocket_handshake_on_ws_is_refused_alike(self):
        client = yield self.client()
        client.transport.write(
            b"GET /ws HTTP/1.1\r\nHost: attacker.example:3000\r\n"
            b"Origin: http://attacker.example:3000\r\nUpgrade: websocket\r\n"
            b"Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
            b"Sec-WebSocket-Version: 13\r\n\r\n"
        )
        status, _, body = yield client.answer()
        self.assertEqual((status, body["error"]), (421, "host_not_allowed"))
        self.assertEqual(len(self.hub.registry), 0)

    @defer.inlineCallbacks
    def test_its_own_names_are_served(self):
        for host in (b"127.0.0.1:%d" % self.service.http_port, b"localhost", b"[::1]:1"):
            client = yield self.client()
            client.transport.write(
                b"GET /healthz HTTP/1.1\r\nHost: " + host + b"\r\nConnection: close\r\n\r\n"
            )
            status, _, _ = yield client.answer()
            self.assertEqual(status, 200, host)


class RequestDeadline(unittest.TestCase):
    """The API's site on a Clock, listening on a real loopback port."""

    TIMEOUT = 10.0
    IDLE = 3.0

    @defer.inlineCallbacks
    def setUp(self):
        server = yield start_server(self, "--listen", tcp_listen(), "--admin-token", TOKEN)
        self.clock = Clock()
        config = parse_options(
            "--admin-token",
            TOKEN,
            "--http-request-timeout",
            str(self.TIMEOUT),
            "--http-idle-timeout",
            str(self.IDLE),
        )
        self.site = api_site(self.clock, Settings.from_options(config).http, server.hub, [])
        port = reactor.listenTCP(0, self.site, interface="127.0.0.1")
        self.addCleanup(port.stopListening)
        self.port = port.getHost().port

    @defer.inlineCallbacks
    def accepted(self):
        """A client the site has accepted, and its channel on the server's side."""
        before = set(self.site.channels)
        client = yield raw_client(self, self.port)
        yield settle(lambda: len(self.site.channels) > len(before))
        [channel] = set(self.site.channels) - before
        return client, channel

    def timed_out(self) -> float:
        return refused(self.site, "request_timeout")

    @defer.inlineCallbacks
    def test_a_trickled_request_is_closed_at_the_deadline(self):
        client, channel = yield self.accepted()
        client.transport.write(b"GET /status HTTP/1.1\r\n")
        yield settle(lambda: channel.requests)
        # One header line every 5 s, each seen by the server: none moves the deadline.
        for i in range(2):
            self.clock.advance(4.9)
            client.transport.write(f"X-Slow-{i}: 1\r\n".encode())
            if i:
                yield settle(lambda i=i: channel.requests[0].getHeader(f"X-Slow-{i - 1}"))
        self.clock.advance(self.TIMEOUT - 2 * 4.9 - 0.01)
        self.assertEqual(self.timed_out(), 0)
        self.clock.advance(0.01)
        self.assertEqual(self.timed_out(), 1)
        data = yield client.closed.addTimeout(WAIT, reactor)
        self.assertEqual(data, b"")

    @defer.inlineCallbacks
    def test_a_slow_body_is_closed_at_the_deadline(self):
        client, channel = yield self.accepted()
        client.transport.write(head("POST", "/broadcast", "Content-Length: 100", token=TOKEN))
        yield settle(lambda: channel.requests)
        self.clock.advance(self.TIMEOUT)
        self.assertEqual(self.timed_out(), 1)
        yield client.closed.addTimeout(WAIT, reactor)

    @defer.inlineCallbacks
    def test_an_idle_keep_alive_connection_is_closed_after_the_idle_timeout(self):
        client, _ = yield self.accepted()
        self.clock.advance(self.IDLE - 1)
        client.transport.write(head("GET", "/healthz"))
        yield client.until(b"serving")  # in time: answered, and idle again
        self.clock.advance(self.IDLE - 0.01)
        self.assertEqual(self.timed_out(), 0)
        self.assertFalse(client.closed.called)
        self.clock.advance(0.01)
        self.assertEqual(self.timed_out(), 1)
        data = yield client.closed.addTimeout(WAIT, reactor)
        self.assertEqual(data.count(b"HTTP/1.1 200"), 1)

    @defer.inlineCallbacks
    def test_a_connection_that_never_sends_a_line_is_closed_after_the_idle_timeout(self):
        client, _ = yield self.accepted()
        client.transport.write(b"GET /status HT")  # no line yet: still idle
        self.clock.advance(self.IDLE)
        self.assertEqual(self.timed_out(), 1)
        yield client.closed.addTimeout(WAIT, reactor)


class LimitOptions(unittest.TestCase):
    def test_defaults_and_bad_values(self):
        config = parse_options()
        self.assertEqual(
            (
                config["http-max-body"],
                config["http-request-timeout"],
                config["http-max-connections"],
                config["http-idle-timeout"],
            ),
            (1024 * 1024, 10.0, 256, 5.0),
        )
        for name in (
            "http-max-body",
            "http-request-timeout",
            "http-max-connections",
            "http-idle-timeout",
        ):
            self.assertIn(f"--{name}", str(config))
            self.assertRaises(UsageError, parse_options, f"--{name}", "0")
