"""The HTTP API of a real in-process nea-server, spoken to over HTTP on loopback."""

import json
import random
from io import BytesIO

from prometheus_client import CollectorRegistry, Histogram
from prometheus_client.parser import text_string_to_metric_families
from twisted.internet import defer, reactor
from twisted.internet.error import ConnectionRefusedError
from twisted.internet.protocol import Factory
from twisted.internet.task import Clock
from twisted.python.usage import UsageError
from twisted.trial import unittest
from twisted.web.client import (
    Agent,
    FileBodyProducer,
    HTTPConnectionPool,
    ResponseNeverReceived,
    readBody,
)
from twisted.web.http_headers import Headers

from nea.core.bus import LocalBus
from nea.core.hub import Hub
from nea.core.snapshot import status_json
from nea.core.testing import FakePeer
from nea.http.metrics import RelayTimer
from nea.net.startup import StartupError
from nea.server.service import InstanceService, makeService
from nea.wire import codec, frames, profiles
from nea.wire.profiles import RELAY
from tests.support import WAIT, connect, parse_options, settle, start_server, tcp_listen

TOKEN = "test-admin-token"
#: POST /relay's wait for the ok: far beyond any wait in a test (only `RelayTimeout`
#: wants it to run out).
RELAY_TIMEOUT = 6 * WAIT


@defer.inlineCallbacks
def fetch(
    port: int,
    path: str,
    method: bytes = b"GET",
    body: bytes | None = None,
    token: str | None = None,
    headers: dict[bytes, bytes] | None = None,
):
    """One HTTP request to the API on ``port``: (status code, headers, body bytes)."""
    sent = Headers({name: [value] for name, value in (headers or {}).items()})
    if token is not None:
        sent.setRawHeaders(b"Authorization", [f"Bearer {token}".encode()])
    producer = None if body is None else FileBodyProducer(BytesIO(body))
    response = (
        yield Agent(reactor)
        .request(method, f"http://127.0.0.1:{port}{path}".encode(), sent, producer)
        .addTimeout(WAIT, reactor)
    )
    data = yield readBody(response).addTimeout(WAIT, reactor)
    return response.code, response.headers, data


@defer.inlineCallbacks
def fetch_json(port: int, path: str, **kwargs):
    """(status code, decoded JSON body) of one request; the body must be JSON."""
    code, headers, data = yield fetch(port, path, **kwargs)
    assert headers.getRawHeaders(b"Content-Type") == [b"application/json"], (path, headers)
    return code, json.loads(data)


def post_text(port: int, path: str, text: str, token: str | None = TOKEN):
    return fetch_json(
        port, path, method=b"POST", body=json.dumps({"text": text}).encode(), token=token
    )


@defer.inlineCallbacks
def metrics(port: int) -> dict[str, float]:
    """Every sample of ``/metrics`` as 'name{label="v",...}' -> value, via the official parser."""
    code, headers, data = yield fetch(port, "/metrics")
    assert code == 200 and headers.getRawHeaders(b"Content-Type")[0].startswith(b"text/plain")
    samples = {}
    for family in text_string_to_metric_families(data.decode("utf-8")):
        for sample in family.samples:
            labels = ",".join(f'{k}="{v}"' for k, v in sorted(sample.labels.items()))
            samples[f"{sample.name}{{{labels}}}"] = sample.value
    return samples


def auto_ack(client) -> None:
    """Make ``client`` answer every forwarded ``message X`` with ``ok X``, as relay clients do."""

    def on_line(line: bytes) -> None:
        push = codec.decode_push(line)
        if isinstance(push, frames.RelayPush):
            client.send(f"ok {push.text}")
        client.lines.get().addCallback(on_line)

    client.lines.get().addCallback(on_line)


class ServerCase(unittest.TestCase):
    """A server with one plain-TCP nea listener, its HTTP API and an admin token."""

    server_args: tuple[str, ...] = ()
    relay_timeout = RELAY_TIMEOUT

    @defer.inlineCallbacks
    def setUp(self):
        self.service = yield start_server(
            self,
            "--listen",
            tcp_listen(),
            "--admin-token",
            TOKEN,
            "--relay-timeout",
            str(self.relay_timeout),
            *self.server_args,
        )
        self.hub = self.service.hub
        self.http = self.service.http_port

    def client(self):
        return connect(self, self.service.ports[0], tls=False)

    @defer.inlineCallbacks
    def registered_client(self):
        """A client the hub has admitted (connected on our side is not yet joined on its side)."""
        before = self.hub.snapshot().connections
        client = yield self.client()
        yield settle(lambda: self.hub.snapshot().connections > before)
        return client


class ReadEndpoints(ServerCase):
    @defer.inlineCallbacks
    def test_status_is_the_hubs_status(self):
        yield self.client()
        yield settle(lambda: self.hub.snapshot().connections == 1)
        code, body = yield fetch_json(self.http, "/status")
        self.assertEqual(code, 200)
        expected = status_json(self.hub.snapshot())
        # Uptime moves between the two reads, and so may the date ticks (a client is
        # subscribed); everything else must be the same.
        self.assertLessEqual(body["dates"]["ticks"], expected["dates"]["ticks"])
        for status in (body, expected):
            status.pop("uptime")
            status["dates"].pop("ticks")
        self.assertEqual(body, expected)
        self.assertEqual((body["instance"], body["connections"]), ("test", 1))

    @defer.inlineCallbacks
    def test_status_matches_what_a_client_is_told(self):
        client = yield self.client()
        client.send('{"cmd":"status"}')
        reply = yield client.next_push()
        code, body = yield fetch_json(self.http, "/status")
        self.assertIsInstance(reply, frames.StatusReply)
        self.assertEqual(set(body), set(reply.status))
        self.assertEqual(body["profiles"], reply.status["profiles"])

    @defer.inlineCallbacks
    def test_healthz_serving_then_draining(self):
        code, body = yield fetch_json(self.http, "/healthz")
        self.assertEqual((code, body["status"], body["cluster"]), (200, "serving", "standalone"))
        self.hub.drain()
        code, body = yield fetch_json(self.http, "/healthz")
        self.assertEqual((code, body["status"]), (503, "draining"))

    @defer.inlineCallbacks
    def test_a_health_checker_kept_connected_sees_503_while_the_server_stops(self):
        pool = HTTPConnectionPool(reactor, persistent=True)
        self.addCleanup(pool.closeCachedConnections)
        agent = Agent(reactor, pool=pool)
        url = f"http://127.0.0.1:{self.http}/healthz".encode()
        codes = []
        for stop in (False, True):
            if stop:
                stopping = self.service.stopService()
            response = yield agent.request(b"GET", url).addTimeout(WAIT, reactor)
            codes.append((response.code, json.loads((yield readBody(response)))["status"]))
        yield stopping
        self.assertEqual(codes, [(200, "serving"), (503, "draining")])

    @defer.inlineCallbacks
    def test_the_api_answers_503_until_the_drain_is_over(self):
        # A drain that cannot time out during the test: only the stuck client's leaving ends it.
        service = yield start_server(self, "--listen", tcp_listen(), "--drain-timeout", "600")
        stuck = FakePeer(profiles.RELAY)  # a client whose connection never finishes closing
        service.hub.join(stuck)
        stopping = service.stopService()
        code, body = yield fetch_json(service.http_port, "/healthz")  # a new connection
        self.assertEqual((code, body["status"]), (503, "draining"))
        self.assertNoResult(stopping)
        service.hub.leave(stuck)
        yield stopping
        self.assertFalse(stuck.aborted)
        yield self.assertFailure(fetch(service.http_port, "/healthz"), ConnectionRefusedError)

    @defer.inlineCallbacks
    def test_healthz_503_when_a_client_listener_is_down(self):
        yield self.service.listeners[0].stopService()
        code, body = yield fetch_json(self.http, "/healthz")
        self.assertEqual((code, body["status"]), (503, "not_listening"))

    @defer.inlineCallbacks
    def test_connections_lists_peer_profile_since_encoding_bytes(self):
        client = yield self.client()
        client.send('{"type":"hello"}')
        welcome = yield client.next_push()
        code, body = yield fetch_json(self.http, "/connections", token=TOKEN)
        self.assertEqual((code, body["count"]), (200, 1))
        [listed] = body["connections"]
        self.assertEqual(listed["name"], welcome.name)
        self.assertEqual(listed["profile"], "nea")
        self.assertEqual(listed["encoding"], "json")
        local = client.transport.getHost()
        self.assertEqual(listed["peer"], f"{local.host}:{local.port}")
        self.assertEqual(listed["bytes_in"], len(b'{"type":"hello"}\n'))
        self.assertGreater(listed["bytes_out"], 0)
        self.assertRegex(listed["since"], r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}")

    @defer.inlineCallbacks
    def test_connections_limit(self):
        for _ in range(3):
            yield self.client()
        yield settle(lambda: self.hub.snapshot().connections == 3)
        code, body = yield fetch_json(self.http, "/connections?limit=2", token=TOKEN)
        self.assertEqual((code, body["count"], len(body["connections"])), (200, 3, 2))
        for bad in ("0", "x", "100001", "-1"):
            code, body = yield fetch_json(self.http, f"/connections?limit={bad}", token=TOKEN)
            self.assertEqual((code, body["error"]), (400, "bad_limit"), bad)

    @defer.inlineCallbacks
    def test_unknown_path_and_wrong_method_are_json_errors(self):
        code, body = yield fetch_json(self.http, "/nope")
        self.assertEqual((code, body["error"]), (404, "not_found"))
        code, body = yield fetch_json(self.http, "/status/extra")
        self.assertEqual(code, 404)
        code, headers, data = yield fetch(self.http, "/status", method=b"DELETE")
        self.assertEqual((code, headers.getRawHeaders(b"Allow")), (405, [b"GET"]))
        self.assertEqual(json.loads(data)["error"], "method_not_allowed")
        code, body = yield fetch_json(self.http, "/broadcast")
        self.assertEqual(code, 405)

    @defer.inlineCallbacks
    def test_openapi_describes_every_endpoint(self):
        code, spec = yield fetch_json(self.http, "/openapi.json")
        self.assertEqual(code, 200)
        self.assertTrue(spec["openapi"].startswith("3."))
        self.assertEqual(
            set(spec["paths"]),
            {
                "/",
                "/chat",
                "/status",
                "/healthz",
                "/metrics",
                "/connections",
                "/broadcast",
                "/relay",
                "/openapi.json",
                "/docs",
                "/clients",
                "/clients/{name}",
                "/services",
                "/clients/{name}/requests",
                "/services/{service}/requests",
                "/chat/history",
            },
        )
        for path, method in (
            ("/broadcast", "post"),
            ("/relay", "post"),
            ("/connections", "get"),
            ("/clients", "get"),
            ("/clients/{name}", "get"),
            ("/services", "get"),
            ("/clients/{name}/requests", "post"),
            ("/services/{service}/requests", "post"),
            ("/chat/history", "get"),
        ):
            operation = spec["paths"][path][method]
            # The endpoints that send to clients take a client token with a permission too.
            clients = [{"clientToken": []}] if method == "post" else []
            self.assertEqual(operation["security"], [{"adminToken": []}, *clients])
            if clients:
                self.assertIn("403", operation["responses"])
            self.assertIn("401", operation["responses"])
            self.assertIn("400", operation["responses"])
        for path in ("/status", "/healthz", "/metrics"):
            self.assertNotIn("security", spec["paths"][path]["get"])

    @defer.inlineCallbacks
    def test_docs_is_swagger_ui_from_this_server_only(self):
        code, headers, page = yield fetch(self.http, "/docs")
        self.assertEqual(code, 200)
        self.assertNotIn(b"http://", page)
        self.assertNotIn(b"https://", page)
        code, _, initializer = yield fetch(self.http, "/docs/nea-initializer.js")
        self.assertEqual(code, 200)
        self.assertIn(b'url: "/openapi.json"', initializer)
        for asset in (
            b"/docs/swagger-ui.css",
            b"/docs/swagger-ui-bundle.js",
            b"/docs/swagger-ui-standalone-preset.js",
        ):
            self.assertIn(asset, page)
            code, _, data = yield fetch(self.http, asset.decode())
            self.assertEqual(code, 200, asset)
            self.assertGreater(len(data), 10000, asset)

    @defer.inlineCallbacks
    def test_status_page_and_its_script(self):
        code, headers, page = yield fetch(self.http, "/")
        self.assertEqual(code, 200)
        self.assertEqual(headers.getRawHeaders(b"Content-Type"), [b"text/html; charset=utf-8"])
        self.assertIn(b'data-field="connections"', page)
        code, _, script = yield fetch(self.http, "/static/status.js")
        self.assertEqual(code, 200)
        self.assertIn(b'fetch("/status"', script)


class MetricsEndpoint(ServerCase):
    server_args = ("--date-interval", "0.2")

    @defer.inlineCallbacks
    def test_parses_and_counters_move_with_traffic(self):
        before = yield metrics(self.http)
        self.assertEqual(before['nea_info{instance="test",version="0.1.0"}'], 1)
        self.assertEqual(before['nea_cluster_state{state="standalone"}'], 1)
        self.assertEqual(before['nea_cluster_state{state="degraded"}'], 0)
        self.assertEqual(before['nea_errors_total{code="bad_json"}'], 0)
        client = yield self.client()
        auto_ack(client)
        client.send("{broken")
        client.send("reverse me")
        client.send("message round trip")
        yield settle(
            lambda: (
                self.hub.snapshot().relays.acked == 1
                and self.hub.snapshot().requests["Reverse"] == 1
                and self.hub.snapshot().dates.ticks >= 1
            )
        )
        after = yield metrics(self.http)
        self.assertEqual(after['nea_connections{profile="nea"}'], 1)
        self.assertEqual(after['nea_requests_total{kind="Reverse"}'], 1)
        self.assertEqual(after['nea_requests_total{kind="Relay"}'], 1)
        self.assertEqual(after['nea_errors_total{code="bad_json"}'], 1)
        self.assertEqual(after["nea_throttled_total{}"], 0)
        self.assertEqual(after['nea_tls_handshakes_ended_total{outcome="timed_out"}'], 0)
        self.assertEqual(after['nea_tls_handshakes{state="unfinished"}'], 0)
        self.assertEqual(after['nea_relay_events_total{event="acked"}'], 1)
        self.assertEqual(after["nea_relay_roundtrip_seconds_count{}"], 1)
        self.assertGreaterEqual(after["nea_date_ticks_total{}"], 1)
        self.assertGreater(
            after["nea_received_bytes_total{}"], before["nea_received_bytes_total{}"]
        )
        self.assertGreater(after["nea_sent_bytes_total{}"], before["nea_sent_bytes_total{}"])
        self.assertEqual(
            after['nea_http_request_duration_seconds_count{endpoint="metrics",status="200"}'], 1
        )

    @defer.inlineCallbacks
    def test_refused_clients_are_counted(self):
        self.hub.registry.max_clients = 1
        yield self.registered_client()
        refused = yield self.client()
        yield refused.closed
        samples = yield metrics(self.http)
        self.assertEqual(samples["nea_connections_refused_full_total{}"], 1)
        self.assertEqual(samples['nea_errors_total{code="server_full"}'], 1)


class RelayTimerUnit(unittest.TestCase):
    """The round-trip histogram, fed by a real hub's relay timings."""

    def setUp(self):
        self.clock, self.registry = Clock(), CollectorRegistry()
        histogram = Histogram("t_seconds", "t", registry=self.registry, buckets=(1, 10))
        self.timer = RelayTimer(self.clock, histogram)
        self.hub = Hub(self.clock, LocalBus("unit"))
        self.hub.time_relays(self.timer)

    def observed(self):
        return self.registry.get_sample_value("t_seconds_count")

    def test_observes_the_round_trip_of_acked_relays_only(self):
        sender, target = FakePeer(), FakePeer(RELAY)
        self.hub.join(target)
        self.hub.relay(sender, "a")
        self.clock.advance(2)
        self.hub.handle(target, frames.Ack("a"))
        self.assertEqual(self.registry.get_sample_value("t_seconds_sum"), 2)
        self.assertEqual(self.observed(), 1)
        self.hub.leave(target)
        self.hub.relay(sender, "nobody takes it")  # no_recipient: ended, not timed
        self.assertEqual((self.observed(), self.timer.in_progress), (1, 0))

    def test_abandoned_relays_leave_nothing_behind(self):
        target = FakePeer(RELAY)
        self.hub.join(target)
        senders = [FakePeer() for _ in range(50)]
        for n, sender in enumerate(senders):
            self.hub.join(sender)
            self.hub.relay(sender, f"gone {n}")
        self.assertEqual(self.timer.in_progress, 50)
        for sender in senders:  # every originator leaves before the ok
            self.hub.leave(sender)
        self.assertEqual(self.timer.in_progress, 0)
        self.hub.handle(target, frames.Ack("gone 0"))  # the late ok is not timed
        self.assertEqual(self.observed(), 0)


class DrainTimeout(unittest.TestCase):
    def test_whoever_is_left_when_the_drain_times_out_is_dropped(self):
        clock = Clock()
        hub = Hub(clock, LocalBus("unit"), rng=random.Random(0))
        stuck = FakePeer(profiles.RELAY)  # told to go, never finishes closing
        hub.join(stuck)
        stopping = InstanceService(hub, clock, drain_timeout=1.0).stopService()
        self.assertTrue(stuck.closed)
        clock.advance(0.5)
        self.assertNoResult(stopping)
        self.assertFalse(stuck.aborted)
        clock.advance(0.5)
        self.successResultOf(stopping)
        self.assertTrue(stuck.aborted)


class Auth(ServerCase):
    @defer.inlineCallbacks
    def test_mutating_endpoints_need_the_token(self):
        for path in ("/broadcast", "/relay"):
            for token in (None, "wrong", TOKEN + "x", ""):
                code, body = yield post_text(self.http, path, "hi", token=token)
                self.assertEqual((code, body["error"]), (401, "unauthorized"), (path, token))
            code, headers, _ = yield fetch(
                self.http,
                path,
                method=b"POST",
                body=b"{}",
                headers={b"Authorization": b"Basic eDp5"},
            )
            self.assertEqual(code, 401)
            self.assertEqual(headers.getRawHeaders(b"WWW-Authenticate"), [b'Bearer realm="nea"'])
        self.assertEqual(self.hub.snapshot().chat.broadcasts, 0)
        self.assertEqual(self.hub.snapshot().relays.requested, 0)

    @defer.inlineCallbacks
    def test_connections_need_the_token_and_the_figures_do_not(self):
        yield self.registered_client()
        for token in (None, "wrong"):
            code, body = yield fetch_json(self.http, "/connections", token=token)
            self.assertEqual((code, body["error"]), (401, "unauthorized"), token)
            self.assertNotIn("connections", body)
        code, body = yield fetch_json(self.http, "/connections", token=TOKEN)
        self.assertEqual((code, body["count"]), (200, 1))
        for path in ("/status", "/healthz", "/metrics"):
            code, _, _ = yield fetch(self.http, path)
            self.assertEqual(code, 200, path)

    @defer.inlineCallbacks
    def test_unauthorized_is_checked_before_the_body(self):
        code, body = yield fetch_json(self.http, "/broadcast", method=b"POST", body=b"{nope")
        self.assertEqual(code, 401)


class NoToken(unittest.TestCase):
    @defer.inlineCallbacks
    def test_without_a_configured_token_nobody_may_mutate(self):
        service = yield start_server(self, "--listen", tcp_listen())
        code, body = yield post_text(service.http_port, "/broadcast", "hi", token="anything")
        self.assertEqual(code, 401)
        self.assertIn("--admin-token", body["message"])


class BadBodies(ServerCase):
    @defer.inlineCallbacks
    def test_bad_bodies_get_400_with_a_clear_message(self):
        cases = {
            b"{nope": "bad_json",
            b"\xff\xfe": "bad_json",
            b"": "bad_json",
            b"[1, 2]": "bad_json",
            b'"text"': "bad_json",
            b"{}": "bad_text",
            b'{"text": ""}': "bad_text",
            b'{"text": 5}': "bad_text",
            b'{"text": null}': "bad_text",
            b'{"text": "two\\nlines"}': "bad_text",
            b'{"text": "cr\\r"}': "bad_text",
            b'{"text": "\\ud800"}': "bad_text",
            b'{"text": "x", "extra": 1}': "bad_body",
            json.dumps({"text": "x" * 4097}).encode(): "bad_text",
        }
        for path in ("/broadcast", "/relay"):
            for body, error in cases.items():
                code, answer = yield fetch_json(
                    self.http, path, method=b"POST", body=body, token=TOKEN
                )
                self.assertEqual((code, answer["error"]), (400, error), (path, body))
                self.assertTrue(answer["message"])
        snapshot = self.hub.snapshot()
        self.assertEqual((snapshot.chat.broadcasts, snapshot.relays.requested), (0, 0))

    @defer.inlineCallbacks
    def test_huge_body_is_413(self):
        code, answer = yield fetch_json(
            self.http, "/broadcast", method=b"POST", body=b" " * 200_000, token=TOKEN
        )
        self.assertEqual((code, answer["error"]), (413, "body_too_large"))


class Broadcast(ServerCase):
    @defer.inlineCallbacks
    def test_reaches_every_chat_capable_client(self):
        clients = yield defer.gatherResults([self.client() for _ in range(2)])
        yield settle(lambda: self.hub.snapshot().connections == 2)
        code, body = yield post_text(self.http, "/broadcast", "maintenance at noon ✓")
        self.assertEqual((code, body), (200, {"instance": "test", "reached": 2}))
        for client in clients:
            push = yield client.next_push()
            self.assertEqual(push, frames.BroadcastPush("maintenance at noon ✓"))


class Relay(ServerCase):
    @defer.inlineCallbacks
    def test_acked_relay_answers_200(self):
        client = yield self.registered_client()
        auto_ack(client)
        code, body = yield post_text(self.http, "/relay", "ping over http")
        self.assertEqual(code, 200)
        self.assertEqual((body["text"], body["acked"]), ("ping over http", True))
        self.assertGreaterEqual(body["seconds"], 0)
        self.assertEqual(self.hub.snapshot().relays.pending, 0)

    @defer.inlineCallbacks
    def test_nobody_to_relay_to_is_503(self):
        code, body = yield post_text(self.http, "/relay", "into the void")
        self.assertEqual((code, body["error"]), (503, "no_recipient"))
        self.assertTrue(self.hub.zero_state())

    @defer.inlineCallbacks
    def test_http_client_leaving_withdraws_its_waiter(self):
        yield self.registered_client()
        pending = post_text(self.http, "/relay", "caller hangs up")
        yield settle(lambda: self.hub.snapshot().relays.pending == 1)
        pending.cancel()
        yield self.assertFailure(pending, defer.CancelledError, ResponseNeverReceived)
        # Withdrawn by the caller's leaving: the relay timeout is far off (RELAY_TIMEOUT).
        yield settle(lambda: self.hub.snapshot().relays.pending == 0)


class RelayTimeout(ServerCase):
    relay_timeout = 0.5

    @defer.inlineCallbacks
    def test_no_ok_in_time_is_504_and_leaves_no_waiter(self):
        client = yield self.registered_client()
        code, body = yield post_text(self.http, "/relay", "never acked")
        self.assertEqual((code, body["error"]), (504, "relay_timeout"))
        forwarded = yield client.next_push()
        self.assertEqual(forwarded, frames.RelayPush("never acked"))
        self.assertEqual(self.hub.snapshot().relays.pending, 0)
        # The late ok finds nobody waiting, and the server ends in zero state.
        client.send("ok never acked")
        client.transport.loseConnection()
        yield client.closed
        yield settle(self.hub.zero_state)


class OptionsParsing(unittest.TestCase):
    def test_defaults(self):
        config = parse_options()
        self.assertEqual(config["http"], "tcp:3000:interface=127.0.0.1")
        self.assertIsNone(config["admin-token"])
        self.assertEqual(config["relay-timeout"], 10.0)
        for name in ("http", "admin-token", "admin-token-file", "relay-timeout"):
            self.assertIn(f"--{name}", str(config))

    def test_http_none_disables_it(self):
        self.assertIsNone(parse_options("--http", "none")["http"])

    def test_token_file(self):
        path = self.mktemp()
        with open(path, "w") as f:
            f.write("  s3cret\n")
        self.assertEqual(parse_options("--admin-token-file", path)["admin-token"], "s3cret")

    def test_token_file_errors(self):
        empty = self.mktemp()
        open(empty, "w").close()
        for args in (
            ["--admin-token-file", empty],
            ["--admin-token-file", empty + "-missing"],
            ["--admin-token", "a", "--admin-token-file", empty],
            ["--relay-timeout", "0"],
        ):
            self.assertRaises(UsageError, parse_options, *args)

    def test_a_busy_http_port_fails_loudly(self):
        busy = reactor.listenTCP(0, Factory(), interface="127.0.0.1")
        self.addCleanup(busy.stopListening)
        config = parse_options(
            "--listen", tcp_listen(), "--http", f"tcp:{busy.getHost().port}:interface=127.0.0.1"
        )
        service = makeService(config, reactor)
        self.addCleanup(service.stopService)
        error = self.assertRaises(StartupError, service.startService)
        self.assertIn("cannot listen on", str(error.code))
        self.assertIn("(--http)", str(error.code))

    @defer.inlineCallbacks
    def test_no_http_listener_with_none(self):
        service = yield start_server(self, "--listen", tcp_listen(), "--http", "none")
        self.assertIsNone(service.http)
        self.assertIsNone(service.http_port)
