"""The request endpoints of one instance: answers, errors, limits, metrics."""

import json
from pathlib import Path

from twisted.internet import defer
from twisted.trial import unittest

from nea.http.openapi import openapi
from nea.wire import frames
from tests.support import connect, settle, start_server, tcp_listen
from tests.test_cluster_requests import answering, command, get, holding, post
from tests.test_http_api import TOKEN, fetch_json, metrics


class RequestEndpoints(unittest.TestCase):
    @defer.inlineCallbacks
    def setUp(self):
        self.service = yield start_server(
            self,
            "--listen",
            tcp_listen(),
            "--admin-token",
            TOKEN,
            "--max-line",
            "1024",
        )
        self.http = self.service.http_port

    def client(self):
        return connect(self, self.service.ports[0], tls=False)

    @defer.inlineCallbacks
    def test_every_endpoint_needs_the_token(self):
        for method, path in (
            (b"GET", "/clients"),
            (b"GET", "/clients/x"),
            (b"GET", "/services"),
            (b"POST", "/clients/x/requests"),
            (b"POST", "/services/x/requests"),
        ):
            code, body = yield fetch_json(self.http, path, method=method)
            self.assertEqual((code, body["error"]), (401, "unauthorized"), path)

    @defer.inlineCallbacks
    def test_a_reply_of_any_json_value_and_the_listings(self):
        device = yield self.client()
        device.send('{"type":"register","payload":"lock1"}')
        self.assertEqual((yield device.next_push()), frames.Registered("lock1"))
        device.send('{"type":"serve","payload":"locks"}')
        self.assertEqual((yield device.next_push()), frames.Serving("locks"))
        asked = post(self.http, "/clients/lock1/requests", {"cmd": "status"})
        request = yield device.next_push()
        self.assertEqual((request.body, request.service), ({"cmd": "status"}, None))
        reply = {"state": "locked", "battery": [97.5, None, True]}
        device.send(json.dumps({"type": "reply", "payload": {"id": request.id, "body": reply}}))
        code, answer = yield asked
        self.assertEqual((code, answer["reply"], answer["instance"]), (200, reply, "test"))
        self.assertGreaterEqual(answer["seconds"], 0)
        code, listed = yield get(self.http, "/clients")
        self.assertEqual(
            listed,
            {
                "count": 1,
                "clients": [
                    {"name": "lock1", "instance": "test", "identity": None, "auth": "anonymous"}
                ],
            },
        )
        code, listed = yield get(self.http, "/clients?limit=0")
        self.assertEqual((code, listed["error"]), (400, "bad_limit"))
        code, services = yield get(self.http, "/services")
        self.assertEqual(
            services, {"services": [{"service": "locks", "members": 1, "instances": {"test": 1}}]}
        )
        answering(device, lambda body: "from the service")
        code, answer = yield post(self.http, "/services/locks/requests", "hi")
        self.assertEqual((code, answer["reply"]), (200, "from the service"))
        samples = yield metrics(self.http)
        self.assertEqual(samples['nea_request_events_total{event="answered"}'], 2)
        self.assertEqual(samples["nea_registered_names{}"], 1)
        self.assertEqual(samples["nea_requests_pending{}"], 0)
        device.transport.loseConnection()
        yield device.closed
        yield settle(self.service.hub.zero_state)

    @defer.inlineCallbacks
    def test_errors_have_their_codes(self):
        code, body = yield post(self.http, "/clients/nobody/requests", 1)
        self.assertEqual((code, body["error"]), (404, "no_such_client"))
        code, body = yield post(self.http, "/services/nobody/requests", 1)
        self.assertEqual((code, body["error"]), (503, "no_member"))
        code, body = yield get(self.http, "/clients/nobody")
        self.assertEqual((code, body["error"]), (404, "no_such_client"))
        code, body = yield get(self.http, "/clients/@bad")
        self.assertEqual((code, body["error"]), (400, "bad_name"))
        code, body = yield get(self.http, "/clients/x/requests")
        self.assertEqual((code, body["error"]), (405, "method_not_allowed"))
        for sent, error in (
            (b'{"timeout": 1}', "bad_body"),
            (b'{"body": 1, "x": 2}', "bad_body"),
            (b'{"body": 1, "timeout": 0}', "bad_timeout"),
            (b'{"body": 1, "timeout": "5"}', "bad_timeout"),
            (b'{"body": [NaN]}', "bad_body"),
            (b'{"body": "\\ud800"}', "bad_body"),
            (b'{"body": ' + b"[" * 40 + b"]" * 40 + b"}", "bad_body"),
            (b"[1]", "bad_json"),
        ):
            code, body = yield fetch_json(
                self.http, "/services/s/requests", method=b"POST", token=TOKEN, body=sent
            )
            self.assertEqual((code, body["error"]), (400, error), sent[:40])
        huge = json.dumps({"body": "x" * 2000}).encode()
        code, body = yield fetch_json(
            self.http, "/services/s/requests", method=b"POST", token=TOKEN, body=huge
        )
        self.assertEqual((code, body["error"]), (413, "body_too_large"))
        self.assertTrue(self.service.hub.zero_state())

    @defer.inlineCallbacks
    def test_no_reply_in_time_is_504_and_the_device_keeps_nothing(self):
        device = yield self.client()
        yield command(device, "register slow", frames.Registered("slow"))
        held = holding(device)
        code, body = yield post(self.http, "/clients/slow/requests", "x", timeout=0.2)
        self.assertEqual((code, body["error"]), (504, "request_timeout"))
        self.assertEqual(len(held), 1)
        yield settle(lambda: self.service.hub.snapshot().addressed.in_flight == 0)
        device.send(f"reply {held[0].id} late")
        push = yield device.next_push()
        self.assertEqual(push.code, "unexpected_reply")
        device.transport.loseConnection()
        yield device.closed
        yield settle(self.service.hub.zero_state)


class Documented(unittest.TestCase):
    """Every 400 code of the request endpoints is in the OpenAPI document and in docs/http.rst."""

    CODES = ("bad_json", "bad_body", "bad_timeout", "bad_name")

    def test_the_openapi_document_names_each_code(self):
        paths = openapi(4096)["paths"]
        for path in ("/clients/{name}/requests", "/services/{service}/requests"):
            described = paths[path]["post"]["responses"]["400"]["description"]
            for code in self.CODES:
                self.assertIn(code, described, path)

    def test_http_rst_names_each_code(self):
        text = (Path(__file__).resolve().parent.parent / "docs" / "http.rst").read_text()
        for code in self.CODES:
            self.assertIn(f"400 {code}", " ".join(text.split()))
