"""The attacks identities and permissions stop, each tried over TCP, TLS, ws and wss.

Each scenario runs against a real server listening on all four transports;
`every_transport` runs it once per transport, so a gate missing on one of them
fails the test. The production configuration is the one docs/security.rst gives.
"""

import json
import re
import time
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from twisted.internet import defer
from twisted.logger import formatEvent, globalLogPublisher
from twisted.trial import unittest

from nea.tls import devcerts
from nea.wire import codec, frames
from nea.wire.frames import Encoding
from tests import infra
from tests.support import (
    certs,
    connect,
    listen_on_all,
    next_tick,
    settle,
    start_server,
)
from tests.test_http_api import TOKEN, fetch_json, metrics
from tests.test_permissions import sign
from tests.test_websocket import ws_connect

TRANSPORTS = ("tcp", "tls", "ws", "wss")
ROOT = Path(__file__).resolve().parent.parent
AUDIENCE = "nea.example.com"


class Lines:
    """A line client (TCP or TLS) that speaks JSON frames."""

    def __init__(self, client) -> None:
        self.client = client
        self.closed = client.closed

    def send(self, request: frames.Request) -> None:
        self.write(codec.encode_request(request, Encoding.JSON).rstrip(b"\n"))

    def write(self, frame: bytes) -> None:
        self.client.send(frame)

    def next(self):
        return self.client.next_push()


class Messages(Lines):
    """A WebSocket client (ws or wss): one JSON frame per message."""

    def write(self, frame: bytes) -> None:
        self.client.sendMessage(frame)

    @defer.inlineCallbacks
    def next(self):
        message = yield self.client.next()
        return codec.decode_push(json.dumps(message).encode())


@defer.inlineCallbacks
def every_transport(scenario):
    """Run ``scenario(transport)`` over each transport in turn, saying which one failed."""
    for transport in TRANSPORTS:
        try:
            yield scenario(transport)
        except Exception as e:
            raise AssertionError(f"over {transport}: {e!r}") from e


def production_options(directory: Path, key: Path) -> list[str]:
    """The options of docs/security.rst's production configuration, its files put in
    ``directory`` (the permissions file is the page's own), its listeners left out."""
    text = (ROOT / "docs" / "security.rst").read_text()
    command = re.search(r"    twistd -n nea-server \\\n((?:        .*\n)+)", text).group(1)
    permissions = re.search(r".. code-block:: json\n\n((?:    .*\n|\n)+)", text).group(1)
    (directory / "permissions.json").write_text(permissions)
    (directory / "admin-token").write_text(TOKEN)
    files = {
        "clients-ca.pem": certs() / devcerts.CA_CERT,
        "jwt-es256.pem": key,
        "permissions.json": directory / "permissions.json",
        "admin-token": directory / "admin-token",
    }
    words = command.replace("\\\n", " ").split()
    options = []
    for option, value in zip(words[::2], words[1::2], strict=True):
        if option != "--listen":
            if value.startswith("/etc/nea/"):
                value = str(files[value.removeprefix("/etc/nea/")])
            options += [option, value]
    return options


class Attacks(unittest.TestCase):
    def setUp(self):
        self.directory = Path(self.mktemp())
        self.directory.mkdir()
        self.key = ec.generate_private_key(ec.SECP256R1())
        self.public = self.directory / "jwt.pem"
        self.public.write_bytes(
            self.key.public_key().public_bytes(
                serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
            )
        )
        self.logged = []
        globalLogPublisher.addObserver(self.logged.append)
        self.addCleanup(globalLogPublisher.removeObserver, self.logged.append)

    def token(self, sub: str, **claims) -> str:
        return sign({"sub": sub, "aud": AUDIENCE, **claims}, self.key, "ES256")

    @defer.inlineCallbacks
    def start(self, *args: str):
        self.service = yield start_server(self, *listen_on_all(), *args)
        self.http = self.service.http_port

    def production(self):
        return self.start(*production_options(self.directory, self.public))

    def default(self):
        return self.start("--jwt-key", str(self.public), "--admin-token", TOKEN)

    @defer.inlineCallbacks
    def dial(self, transport: str, token: str | None = None, path: str = "/"):
        """A client over ``transport``; with ``token`` it has presented it (``auth`` on
        lines, ``?token=`` on WebSocket) and been answered ``authenticated``."""
        port = self.service.ports[TRANSPORTS.index(transport)]
        if transport in ("tcp", "tls"):
            client = Lines((yield connect(self, port, tls=transport == "tls")))
            if token is not None:
                client.send(frames.Auth(token))
        else:
            if token is not None:
                path = f"{path}{'&' if '?' in path else '?'}token={token}"
            client = Messages((yield ws_connect(self, port, path, tls=transport == "wss")))
        if token is not None:
            self.assertIsInstance((yield client.next()), frames.Authenticated)
        return client

    @defer.inlineCallbacks
    def registered(self, transport: str, name: str):
        """A device over ``transport`` identified as ``name`` by a token, registered as it."""
        device = yield self.dial(transport, self.token(name))
        yield self.done(device, frames.Register(name), frames.Registered(name))
        return device

    @defer.inlineCallbacks
    def done(self, client, request: frames.Request, answer: frames.Push):
        client.send(request)
        self.assertEqual((yield client.next()), answer)

    @defer.inlineCallbacks
    def refused(self, client, request: frames.Request, permission: str):
        """``request`` is answered ``not_allowed`` naming ``permission``; the client stays."""
        client.send(request)
        push = yield client.next()
        self.assertEqual(push.code, "not_allowed", push)
        self.assertIn(permission, push.message)
        client.send(frames.Status())
        self.assertIsInstance((yield client.next()), frames.StatusReply)

    def ask_over_http(self, path: str, body, token: str = TOKEN):
        return fetch_json(
            self.http,
            path,
            method=b"POST",
            token=token,
            body=json.dumps({"body": body, "timeout": 10}).encode(),
        )

    @defer.inlineCallbacks
    def answers(self, member, text: str):
        """``member`` is pushed a request, and answers it ``text``."""
        request = yield member.next()
        self.assertIsInstance(request, frames.RequestPush)
        member.send(frames.Reply(request.id, text))

    def status(self):
        return self.service.hub.snapshot()

    # ---- device hijack ----

    @defer.inlineCallbacks
    def hijack_refused(self, transport: str, name: str, device):
        """An anonymous client and another identity try to register ``name`` over
        ``transport``: both refused, and a request to ``name`` still reaches ``device``.
        Returns what ``GET /clients/NAME`` says of it."""
        attacker = yield self.dial(transport)
        yield self.refused(attacker, frames.Register(name), "register")
        other = yield self.dial(transport, self.token("mallory", nea={"register": ["*"]}))
        yield self.refused(other, frames.Register(name), "register")
        asked = self.ask_over_http(f"/clients/{name}/requests", "unlock")
        yield self.answers(device, "unlocked")
        self.assertEqual((yield asked)[1]["reply"], "unlocked")
        _, held = yield fetch_json(self.http, f"/clients/{name}", token=TOKEN)
        return held

    @defer.inlineCallbacks
    def test_an_anonymous_client_cannot_take_an_identified_device_s_name(self):
        yield self.default()

        @defer.inlineCallbacks
        def scenario(transport):
            name = f"lock-{transport}"
            device = yield self.registered(transport, name)
            held = yield self.hijack_refused(transport, name, device)
            self.assertEqual((held["identity"], held["auth"]), (name, "token"))

        yield every_transport(scenario)
        self.assertEqual(dict(self.status().auth.not_allowed), {"register": 8})

    @defer.inlineCallbacks
    def two_instances(self):
        """Two instances ``a`` and ``b`` on one real redis-server, with tokens."""
        redis = yield infra.redis_server(self)
        cluster = (
            "--redis",
            redis.url,
            "--cluster-name",
            f"auth{id(self) % 100000}",
            "--heartbeat",
            "0.5",
            "--jwt-key",
            str(self.public),
            "--admin-token",
            TOKEN,
        )
        yield self.start("--instance-id", "a", *cluster)
        a = self.service
        yield self.start("--instance-id", "b", *cluster)
        b = self.service
        yield settle(lambda: all(len(i.hub.snapshot().cluster.members) == 2 for i in (a, b)))
        return a, b

    @defer.inlineCallbacks
    def test_across_the_cluster_an_identified_device_s_name_stays_its_own(self):
        """The device holds its name on one instance; the attacker registers it on another
        (as a round-robin balancer would send it there): refused, and requests reach the
        device."""
        holding, elsewhere = yield self.two_instances()

        @defer.inlineCallbacks
        def scenario(transport):
            name = f"lock-{transport}"
            self.service = holding
            device = yield self.registered(transport, name)
            for _ in range(500):  # until its name is in Redis (written at the end of a turn)
                if (yield elsewhere.hub.bus.find_client(name)) == "a":
                    break
                yield next_tick()
            self.service, self.http = elsewhere, elsewhere.http_port
            held = yield self.hijack_refused(transport, name, device)
            self.assertEqual((held["instance"], held["identity"]), ("a", name))
            _, listed = yield fetch_json(self.http, "/clients", token=TOKEN)
            self.assertIn({"name": name, "instance": "a", "identity": name}, listed["clients"])
            again = yield self.dial(transport, self.token(name))
            yield self.done(again, frames.Register(name), frames.Registered(name))
            self.assertEqual((yield device.next()).code, "name_taken_over")

        yield every_transport(scenario)
        self.assertEqual(dict(elsewhere.hub.snapshot().auth.not_allowed), {"register": 8})

    @defer.inlineCallbacks
    def test_production_nothing_anonymous_registers_serves_or_asks(self):
        yield self.production()
        worker = yield self.dial("tls", self.token("worker:7", nea={"serve": ["payments"]}))
        yield self.done(worker, frames.Serve("payments"), frames.Serving("payments"))

        @defer.inlineCallbacks
        def scenario(transport):
            attacker = yield self.dial(transport)
            yield self.refused(attacker, frames.Register("lock1"), "register")
            yield self.refused(attacker, frames.Serve("payments"), "serve")
            yield self.refused(attacker, frames.Ask("1", None, "payments", "x"), "ask")
            yield self.refused(attacker, frames.Ask("2", "worker:7", None, "x"), "ask")
            yield self.refused(attacker, frames.Relay("x"), "relay")
            yield self.refused(attacker, frames.Chat("x"), "chat")
            # A token without the serve permission is no member either.
            web = yield self.dial(transport, self.token("web", nea={"ask": ["@payments"]}))
            yield self.refused(web, frames.Serve("payments"), "serve")
            for n in range(3):
                web.send(frames.Ask(str(n), None, "payments", n))
                yield self.answers(worker, f"paid {n}")
                reply = yield web.next()
                self.assertEqual((reply.id, reply.body), (str(n), f"paid {n}"))

        yield every_transport(scenario)
        self.assertEqual(
            dict(self.status().auth.not_allowed),
            {"register": 4, "serve": 8, "ask": 8, "relay": 4, "chat": 4},
        )

    # ---- mutual TLS used to gate only register ----

    @defer.inlineCallbacks
    def test_with_client_certificates_a_client_without_one_may_do_nothing_but_reverse(self):
        yield self.start(
            "--tls-client-ca",
            str(certs() / devcerts.CA_CERT),
            "--tls-client-cert",
            "optional",
            "--admin-token",
            TOKEN,
        )
        device = Lines((yield connect(self, self.service.ports[1], client_cert=True)))
        yield self.done(device, frames.Register("nea-client"), frames.Registered("nea-client"))
        yield self.done(device, frames.Serve("payments"), frames.Serving("payments"))

        @defer.inlineCallbacks
        def scenario(transport):
            attacker = yield self.dial(transport)
            yield self.refused(attacker, frames.Serve("payments"), "serve")
            yield self.refused(attacker, frames.Ask("1", "nea-client", None, "unlock"), "ask")
            yield self.refused(attacker, frames.Chat("hi"), "chat")
            yield self.refused(attacker, frames.Relay("hi"), "relay")
            for _ in range(3):
                asked = self.ask_over_http("/services/payments/requests", "pay")
                yield self.answers(device, "paid by the device")
                self.assertEqual((yield asked)[1]["reply"], "paid by the device")

        yield every_transport(scenario)
        code, listed = yield fetch_json(self.http, "/connections", token=TOKEN)
        self.assertEqual(
            {(c["identity"], c["auth"]) for c in listed["connections"]},
            {("nea-client", "certificate"), (None, "anonymous")},
        )

    @defer.inlineCallbacks
    def test_with_required_certificates_plain_listeners_and_ws_are_gated_too(self):
        yield self.start(
            "--tls-client-ca", str(certs() / devcerts.CA_CERT), "--tls-client-cert", "required"
        )
        attackers = [
            (yield self.dial("tcp")),
            (yield self.dial("ws")),
            Messages((yield ws_connect(self, self.http, "/ws"))),
        ]
        for attacker in attackers:
            yield self.refused(attacker, frames.Serve("payments"), "serve")
            yield self.refused(attacker, frames.Ask("1", "nea-client", None, "unlock"), "ask")
            yield self.refused(attacker, frames.Chat("hi"), "chat")
            yield self.refused(attacker, frames.Relay("hi"), "relay")
            yield self.refused(attacker, frames.Register("nea-client"), "register")

    # ---- /ws, and HTTP with client tokens ----

    @defer.inlineCallbacks
    def test_ws_on_the_http_port_is_gated_like_every_transport(self):
        yield self.production()
        device = yield self.registered("tls", "device:1")
        port = self.http
        attacker = Messages((yield ws_connect(self, port, "/ws")))
        yield self.refused(attacker, frames.Ask("1", "device:1", None, "unlock"), "ask")
        yield self.refused(attacker, frames.Relay("x"), "relay")
        app = Messages(
            (
                yield ws_connect(
                    self, port, f"/ws?token={self.token('web', nea={'ask': ['device:*']})}"
                )
            )
        )
        self.assertEqual((yield app.next()), frames.Authenticated("web"))
        app.send(frames.Ask("1", "device:1", None, "unlock"))
        yield self.answers(device, "unlocked")
        self.assertEqual((yield app.next()).body, "unlocked")

    @defer.inlineCallbacks
    def test_http_takes_client_tokens_as_far_as_their_permissions_go(self):
        yield self.production()
        device = yield self.registered("tcp", "device:1")
        app = self.token("web", nea={"ask": ["device:*"]})
        asked = self.ask_over_http("/clients/device:1/requests", "unlock", app)
        yield self.answers(device, "unlocked")
        code, body = yield asked
        self.assertEqual((code, body["reply"]), (200, "unlocked"))
        code, body = yield self.ask_over_http("/services/payments/requests", "x", app)
        self.assertEqual((code, body["error"]), (403, "not_allowed"))
        code, body = yield self.ask_over_http(
            "/clients/device:1/requests", "x", self.token("web", exp=int(time.time()) - 5)
        )
        self.assertEqual((code, body["error"]), (401, "expired_token"))
        code, body = yield fetch_json(
            self.http, "/relay", method=b"POST", token=app, body=b'{"text": "x"}'
        )
        self.assertEqual((code, body["error"]), (403, "not_allowed"))
        code, body = yield fetch_json(self.http, "/connections", token=app)
        self.assertEqual((code, body["error"]), (401, "unauthorized"))
        auth = self.status().auth
        self.assertEqual((auth.auth_ok, auth.auth_failed), (4, 1))  # device, 3 app requests
        self.assertEqual(dict(auth.not_allowed), {"ask": 1, "relay": 1})
        samples = yield metrics(self.http)
        self.assertEqual(
            (
                samples['nea_auth_total{outcome="ok"}'],
                samples['nea_not_allowed_total{permission="ask"}'],
            ),
            (4, 1),
        )

    # ---- chat names ----

    @defer.inlineCallbacks
    def test_an_identified_nick_is_nobody_else_s(self):
        yield self.default()

        @defer.inlineCallbacks
        def scenario(transport):
            nick = f"alice_{transport}"
            alice = yield self.dial(transport, self.token(f"u:{transport}", nick=nick))
            impostor = yield self.dial(transport)
            yield self.refused(impostor, frames.Nick(nick), "chat")
            alice.send(frames.Chat("it is me"))
            for _ in range(5):
                push = yield impostor.next()
                if isinstance(push, frames.ChatPush) and push.text == "it is me":
                    break
            self.assertEqual(push.sender, nick)

        yield every_transport(scenario)

    @defer.inlineCallbacks
    def test_across_the_cluster_an_identified_nick_is_nobody_else_s(self):
        """Alice chats on one instance; an impostor on the other may not take her nick,
        until she has gone."""
        holding, elsewhere = yield self.two_instances()

        @defer.inlineCallbacks
        def scenario(transport):
            nick = f"alice_{transport}"
            self.service = holding
            alice = yield self.dial(transport, self.token(f"u:{transport}", nick=nick))
            self.service = elsewhere
            impostor = yield self.dial(transport)
            for _ in range(500):  # until the nick is in Redis
                if (yield elsewhere.hub.bus.nick_identities(nick)):
                    break
                yield next_tick()
            yield self.refused(impostor, frames.Nick(nick), "chat")
            alice.client.transport.loseConnection()
            yield alice.closed
            for _ in range(500):  # until she has left
                if not (yield elsewhere.hub.bus.nick_identities(nick)):
                    break
                yield next_tick()
            yield self.done(impostor, frames.Nick(nick), frames.NickReply(nick))

        yield every_transport(scenario)

    # ---- bad tokens ----

    @defer.inlineCallbacks
    def test_bad_tokens_each_have_their_code_are_counted_once_and_never_logged(self):
        yield self.default()
        now = int(time.time())
        bad = {
            "bad_signature": sign(
                {"sub": "a", "aud": AUDIENCE}, ec.generate_private_key(ec.SECP256R1()), "ES256"
            ),
            "bad_algorithm": sign({"sub": "a"}, None, "none"),
            "expired_token": self.token("a", exp=now - 5),
            "token_not_yet_valid": self.token("a", nbf=now + 300),
            "token_too_large": self.token("a", padding="x" * 9000),
        }

        @defer.inlineCallbacks
        def scenario(transport):
            client = yield self.dial(transport)
            for code, token in bad.items():
                client.send(frames.Auth(token))
                self.assertEqual((yield client.next()).code, code)
            client.send(frames.Auth("x" * (1024 * 1024)))
            self.assertEqual((yield client.next()).code, "line_too_long")
            yield client.closed

        yield every_transport(scenario)
        status = self.status()
        self.assertEqual(status.auth.auth_failed, 4 * len(bad))
        self.assertEqual({code: status.errors[code] for code in bad}, dict.fromkeys(bad, 4))
        logged = "\n".join(formatEvent(event) for event in self.logged)
        self.assertNotIn("Traceback", logged)
        for token in bad.values():
            self.assertNotIn(token.split(".")[-1][:20] or token, logged)

    @defer.inlineCallbacks
    def test_a_wrong_audience_and_the_end_of_a_token(self):
        yield self.start("--jwt-key", str(self.public), "--jwt-audience", AUDIENCE)
        clients = []
        for transport in TRANSPORTS:
            client = yield self.dial(transport)
            client.send(frames.Auth(sign({"sub": "a", "aud": "elsewhere"}, self.key, "ES256")))
            self.assertEqual((yield client.next()).code, "wrong_audience")
            client.send(frames.Auth(self.token("a", exp=int(time.time()) + 2)))
            self.assertEqual((yield client.next()), frames.Authenticated("a"))
            clients.append(client)
        for client in clients:  # all four expire within the same two seconds
            self.assertEqual((yield client.next()).code, "token_expired")
            yield client.closed
