"""nea-server's identity options: --jwt-key, --jwt-audience, --permissions, --anonymous,
and the permissions file read again on SIGHUP."""

import json
from pathlib import Path

from twisted.internet import defer
from twisted.logger import formatEvent, globalLogPublisher
from twisted.python import usage
from twisted.trial import unittest

from nea.core.permissions import EVERYTHING, NOTHING, Permissions
from nea.tls import devcerts
from nea.wire import frames
from tests.support import certs, connect, parse_options, start_server, tcp_listen
from tests.test_http_api import fetch
from tests.test_permissions import SECRET, sign
from tests.test_websocket import ws_connect


class Options(unittest.TestCase):
    def setUp(self):
        self.directory = Path(self.mktemp())
        self.directory.mkdir()

    def file(self, name: str, data: str | bytes) -> str:
        path = self.directory / name
        path.write_bytes(data if isinstance(data, bytes) else data.encode())
        return str(path)

    def test_defaults_keep_every_anonymous_flow(self):
        config = parse_options()
        self.assertEqual(config["policy"].anonymous, EVERYTHING)
        self.assertIsNone(config["tokens"])

    def test_client_certificates_leave_anonymous_clients_reverse_only(self):
        for mode in ("required", "optional"):
            config = parse_options(
                "--tls-client-ca", str(certs() / devcerts.CA_CERT), "--tls-client-cert", mode
            )
            self.assertEqual(config["policy"].anonymous, Permissions(reverse=True))
        config = parse_options(
            "--tls-client-ca", str(certs() / devcerts.CA_CERT), "--anonymous", "relay,chat"
        )
        self.assertEqual(config["policy"].anonymous, Permissions(relay=True, chat=True))

    def test_anonymous_and_permissions(self):
        self.assertEqual(parse_options("--anonymous", "none")["policy"].anonymous, NOTHING)
        path = self.file("p.json", json.dumps({"identities": {"lock*": {"register": ["{sub}"]}}}))
        policy = parse_options("--permissions", path, "--anonymous", "reverse")["policy"]
        self.assertEqual(policy.anonymous, Permissions(reverse=True))
        self.assertEqual(policy.for_identity("lock1"), Permissions(register=("{sub}",)))

    def test_bad_values_are_one_line_usage_errors(self):
        bad = [
            ("--anonymous", "everything"),
            ("--permissions", str(self.directory / "missing.json")),
            ("--permissions", self.file("bad.json", '{"anonymous": {"fly": true}}')),
            ("--jwt-key", str(self.directory / "missing.pem")),
            ("--jwt-key", self.file("short", "secret")),
            ("--jwt-key", self.file("bad.pem", "-----BEGIN PUBLIC KEY-----\nxx\n")),
        ]
        for args in bad:
            with self.assertRaises(usage.UsageError, msg=args) as caught:
                parse_options(*args)
            self.assertNotIn("\n", str(caught.exception))

    def test_a_key_and_an_audience(self):
        config = parse_options("--jwt-key", self.file("secret", SECRET), "--jwt-audience", "nea")
        self.assertEqual((config["tokens"].algorithm, config["tokens"].audience), ("HS256", "nea"))


class Reload(unittest.TestCase):
    @defer.inlineCallbacks
    def test_the_permissions_file_is_read_again_and_a_broken_one_is_not_taken(self):
        path = Path(self.mktemp())
        path.write_text(json.dumps({"anonymous": {"serve": ["*"]}}))
        service = yield start_server(self, "--listen", tcp_listen(), "--permissions", str(path))
        logged = []
        globalLogPublisher.addObserver(logged.append)
        self.addCleanup(globalLogPublisher.removeObserver, logged.append)
        client = yield connect(self, service.ports[0], tls=False)
        client.send("serve payments")
        self.assertEqual((yield client.next_push()), frames.Serving("payments"))

        path.write_text(json.dumps({"anonymous": {}}))
        service.reloads.reloader.reload()  # what SIGHUP runs (tests/test_reload.py sends one)
        client.send("serve refunds")
        self.assertEqual((yield client.next_push()).code, "not_allowed")

        path.write_text("{broken")
        service.reloads.reloader.reload()
        client.send("serve refunds")
        self.assertEqual((yield client.next_push()).code, "not_allowed")  # the last good one
        text = "\n".join(formatEvent(event) for event in logged)
        self.assertIn(f"reload of permissions file {path} failed, still using the old one", text)


class AccessLog(unittest.TestCase):
    @defer.inlineCallbacks
    def test_a_token_in_a_url_is_not_written_to_the_access_log(self):
        path = Path(self.mktemp()).resolve()
        key = self.mktemp()
        Path(key).write_bytes(SECRET)
        service = yield start_server(
            self, "--listen", tcp_listen(), "--jwt-key", key, "--http-access-log", str(path)
        )
        token = sign({"sub": "web"})
        yield fetch(service.http_port, f"/status?token={token}&x=1")
        client = yield ws_connect(self, service.http_port, f"/ws?token={token}")
        self.assertEqual((yield client.next())["type"], "authenticated")
        logged = path.read_text()
        self.assertIn('"GET /status?token=-&x=1 HTTP/1.1" 200', logged)
        self.assertNotIn(token.split(".")[-1], logged)
