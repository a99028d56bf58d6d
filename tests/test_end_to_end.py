"""The real nea-server service tree over real TLS (and TCP) on loopback."""

import json
import random
import subprocess

from hypothesis import Phase, given, settings
from hypothesis import strategies as st
from twisted.internet import defer, reactor
from twisted.internet.protocol import Factory, Protocol
from twisted.trial import unittest

from nea.wire import codec, frames
from tests.support import (
    connect,
    daemon_command,
    daemon_env,
    settle,
    start_server,
    tcp_listen,
    tls_listen,
)


@defer.inlineCallbacks
def seed_relay_client(client, text):
    """The seed-004 client: send ``message text``, ack what is forwarded, close on own ok."""
    client.send(f"message {text}")
    for _ in range(100):
        push = yield client.next_push()
        if isinstance(push, frames.RelayPush):
            client.send(f"ok {push.text}")
        elif push == frames.AckPush(text):
            client.transport.loseConnection()
            yield client.closed
            return
    raise AssertionError(f"no ok {text}")


class TLSEndToEnd(unittest.TestCase):
    @defer.inlineCallbacks
    def setUp(self):
        self.service = yield start_server(
            self,
            "--listen",
            tls_listen(),
            "--listen",
            tls_listen("relay"),
            "--listen",
            tls_listen("chat"),
            "--date-interval",
            "0.2",
        )
        self.nea, self.relay, self.chat = self.service.ports

    @defer.inlineCallbacks
    def test_dates_are_pushed_every_interval(self):
        client = yield connect(self, self.nea)
        for _ in range(3):
            line = yield client.next()
            self.assertIsInstance(codec.decode_push(line), frames.DatePush)
            self.assertRegex(line.decode(), r"^\d{4}-\d{2}-\d{2}$")
        self.assertGreaterEqual(self.service.hub.snapshot().dates.ticks, 3)

    @defer.inlineCallbacks
    def test_reverse(self):
        client = yield connect(self, self.nea)
        client.send("héllo wörld 👍🏽")
        self.assertEqual((yield client.next_push()), frames.ReverseReply("👍🏽 dlröw olléh"))

    @defer.inlineCallbacks
    def test_two_relay_clients_exchange_message_and_ok(self):
        a = yield connect(self, self.relay)
        b = yield connect(self, self.relay)
        yield defer.gatherResults([seed_relay_client(a, "from-a"), seed_relay_client(b, "from-b")])
        yield settle(self.service.hub.zero_state)
        stats = self.service.hub.snapshot().relays
        self.assertEqual((stats.requested, stats.acked), (2, 2))

    @defer.inlineCallbacks
    def test_chat_reaches_every_chat_capable_client(self):
        speaker = yield connect(self, self.nea)
        listener = yield connect(self, self.chat)
        nea_client = yield connect(self, self.nea)
        relay_client = yield connect(self, self.relay)
        listener.send("bob")
        self.assertEqual((yield listener.next()), b"* welcome bob")
        speaker.send("nick ann")
        self.assertEqual((yield speaker.next_push()), frames.NickReply("ann"))
        speaker.send("chat hello everyone")
        for client in (speaker, nea_client):
            self.assertEqual((yield client.next_push()), frames.ChatPush("ann", "hello everyone"))
        self.assertEqual((yield listener.next()), b"ann: hello everyone")
        relay_client.send("exit")
        self.assertEqual((yield relay_client.next_push()), frames.Bye())  # no chat before bye
        yield relay_client.closed

    @defer.inlineCallbacks
    def test_status_in_json(self):
        client = yield connect(self, self.nea)
        client.send('{"cmd":"status"}')
        push = yield client.next_push()
        self.assertIsInstance(push, frames.StatusReply)
        self.assertEqual(push.status["instance"], "test")
        self.assertEqual(push.status["profiles"], {"nea": 1})
        self.assertEqual(push.status["cluster"]["state"], "standalone")
        later = yield client.next()  # from now on this connection receives JSON, dates too
        self.assertEqual(json.loads(later)["type"], "date")


class Limits(unittest.TestCase):
    @defer.inlineCallbacks
    def test_the_101st_client_completes_the_handshake_and_is_refused(self):
        service = yield start_server(self, "--listen", tls_listen("relay"))
        clients = []
        for _ in range(100):
            clients.append((yield connect(self, service.ports[0])))
        yield settle(lambda: service.hub.snapshot().connections == 100)
        extra = yield connect(self, service.ports[0])
        push = yield extra.next_push()
        self.assertEqual(push.code, "server_full")
        yield extra.closed
        self.assertEqual(service.hub.snapshot().refused_full, 1)
        self.assertEqual(service.hub.snapshot().connections, 100)

    @defer.inlineCallbacks
    def test_tls_and_tcp_side_by_side_and_zero_state_after(self):
        service = yield start_server(
            self, "--listen", tls_listen("relay"), "--listen", tcp_listen("relay")
        )
        tls_client = yield connect(self, service.ports[0])
        tcp_client = yield connect(self, service.ports[1], tls=False)
        yield defer.gatherResults(
            [seed_relay_client(tls_client, "over-tls"), seed_relay_client(tcp_client, "over-tcp")]
        )
        yield settle(service.hub.zero_state)

    def test_a_busy_port_fails_loudly(self):
        """The daemon must not start without its listener (Twisted alone would only log it)."""
        busy = reactor.listenTCP(0, Factory.forProtocol(Protocol), interface="127.0.0.1")
        self.addCleanup(busy.stopListening)
        result = subprocess.run(
            daemon_command("--listen", f"tcp:{busy.getHost().port}:interface=127.0.0.1"),
            env=daemon_env(),
            capture_output=True,
            timeout=60,
            text=True,
        )
        self.assertNotEqual(result.returncode, 0)
        self.assertIn("Address already in use", result.stdout + result.stderr)


def hostile_inputs(count: int) -> list[list[bytes]]:
    """Byte streams from hypothesis, each already cut into reads: junk, long lines, bad UTF-8."""
    streams: list[list[bytes]] = []
    junk = st.one_of(
        st.binary(max_size=300),
        st.sampled_from([b"\n", b"\r\n", b"{", b"message", b"ok ", b"\xff\xfe", b"exit\n"]),
        st.text(max_size=50).map(lambda t: t.encode("utf-8")),
    )

    @given(st.lists(junk, min_size=1, max_size=12))
    @settings(max_examples=count, database=None, phases=[Phase.generate], deadline=None)
    def collect(reads):
        streams.append(reads)

    collect()
    return streams


class Robustness(unittest.TestCase):
    """No client input may crash the daemon or disturb other clients."""

    @defer.inlineCallbacks
    def test_random_bytes_then_others_are_still_served(self):
        service = yield start_server(
            self, "--listen", tcp_listen(), "--listen", tls_listen(), "--max-line", "256"
        )
        witness = yield connect(self, service.ports[0], tls=False)
        rng = random.Random(4)
        for reads in hostile_inputs(60):
            attacker = yield connect(self, rng.choice(service.ports), tls=False)
            for data in reads:
                attacker.transport.write(data)
            attacker.transport.loseConnection()
            yield attacker.closed
        # Half-sent garbage closed mid-line; the daemon still serves everyone correctly.
        witness.send("still fine")
        self.assertEqual((yield witness.next_push()), frames.ReverseReply("enif llits"))
        witness.transport.loseConnection()
        yield witness.closed
        # Closed on our side is not yet gone on the server's: wait, so that the relays
        # below are drawn among their two senders alone, the same way every run.
        yield settle(lambda: service.hub.snapshot().connections == 0)
        a = yield connect(self, service.ports[1])
        b = yield connect(self, service.ports[0], tls=False)
        yield defer.gatherResults([seed_relay_client(a, "after"), seed_relay_client(b, "storm")])
        yield settle(service.hub.zero_state)
