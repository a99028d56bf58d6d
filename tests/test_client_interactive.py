"""Interactive mode without sockets: what is sent for what the user types, how pushes look."""

import random
import typing

import attrs
from twisted.internet import error
from twisted.trial import unittest

from nea.client.interactive import InteractiveClient, format_push
from nea.client.redial import DialConfig
from nea.wire import codec, forms, frames
from nea.wire.backoff import Backoff
from nea.wire.frames import Encoding
from tests.fakes import FakeNetwork

HELLO = b'{"type":"hello"}\n'


class FormatTests(unittest.TestCase):
    SHOWN = [
        (frames.DatePush("2026-11-21"), "[date] 2026-11-21"),
        (frames.ReverseReply("olleh"), "[reverse] olleh"),
        (frames.RelayPush("X"), "[relay] message X"),
        (frames.AckPush("X"), "[ack] ok X"),
        (frames.ChatPush("alice", "hi"), "[chat] alice: hi"),
        (frames.BroadcastPush("maintenance at 5"), "[broadcast] maintenance at 5"),
        (
            frames.HistoryLine(7, "2026-12-01T19:40:00.123Z", "chat", "bo", "hi"),
            "[history 7 2026-12-01T19:40:00.123Z] bo: hi",
        ),
        (frames.HistoryEnd(7, True), "[history end] last id 7, more to ask"),
        (frames.Presence("bo", "joined"), "[presence] bo joined"),
        (frames.NickReply("bob"), "[nick] you are now bob"),
        (
            frames.Welcome("c1", "east-1", "nea"),
            "[welcome] you are c1 on instance east-1 (profile nea)",
        ),
        (frames.StatusReply({"instance": "east-1"}), '[status] {\n  "instance": "east-1"\n}'),
        (frames.ErrorReply("bad_json", "not JSON"), "[error bad_json] not JSON"),
        (frames.Bye(), "[bye]"),
        (frames.PingPush(), "[ping]"),
        (frames.PongPush(), "[pong] the server is there"),
        (frames.Registered("lock1"), "[registered] you are addressable as lock1"),
        (frames.Serving("people"), "[serving] you are a member of people"),
        (frames.Unserved("people"), "[unserved] you left people"),
        (
            frames.RequestPush("r1", {"a": 1}, "people"),
            '[request r1] (service people) {"a":1}  (answer: reply r1 TEXT)',
        ),
        (frames.ReplyPush("7", "locked", "i2"), "[reply 7] locked  (from i2)"),
        (frames.Authenticated("lock1"), "[authenticated] you are lock1"),
        (
            frames.Gap("2026-11-21T10:00:00Z", "2026-11-21T10:01:00Z", 7),
            "[gap] chat between 2026-11-21T10:00:00Z and 2026-11-21T10:01:00Z may have been missed"
            "  (ask: since 7)",
        ),
    ]

    def test_each_kind_of_push_is_labelled(self):
        for push, shown in self.SHOWN:
            self.assertEqual(format_push(push), shown)

    def test_a_push_without_a_label_is_shown_by_its_kind_and_text_form(self):
        @forms.push("scratch_test", body=forms.Body.STRING)
        @attrs.frozen
        class Scratch:
            text: str

        self.addCleanup(forms.PUSHES.pop, Scratch)
        self.assertEqual(format_push(Scratch("hi there")), "[scratch_test] scratch_test hi there")

    def test_what_is_no_push_is_refused(self):
        self.assertRaises(TypeError, format_push, frames.Relay("x"))

    def test_every_push_kind_is_covered(self):
        self.assertEqual({type(push) for push, _ in self.SHOWN}, set(typing.get_args(frames.Push)))

    def test_a_reply_that_looks_like_a_date_is_still_a_reply(self):
        # Why the client speaks JSON: in text the two cannot be told apart.
        line = codec.encode_push(frames.ReverseReply("2026-11-21"), Encoding.JSON)
        self.assertEqual(format_push(codec.decode_push(line.rstrip(b"\n"))), "[reverse] 2026-11-21")


class InteractiveTests(unittest.TestCase):
    def setUp(self):
        self.net = FakeNetwork()
        self.clock = self.net.reactor
        self.shown: list[str] = []
        self.done: list[InteractiveClient] = []

    def start(self, auto_ack=False, tls=False):
        dial = DialConfig(tls=tls, backoff=Backoff(initial=1.0, maximum=8.0, jitter=0.0))
        self.client = InteractiveClient(
            self.net.endpoint,
            self.clock,
            dial,
            self.shown.append,
            self.done.append,
            auto_ack=auto_ack,
            rng=random.Random(1),
        )
        self.client.start()

    def connect(self, **kwargs):
        self.start(**kwargs)
        transport = self.net.accept()
        self.assertEqual(transport.value(), HELLO)
        transport.clear()
        return transport

    def test_hello_first_then_lines_exactly_as_typed(self):
        transport = self.connect()
        for line in (b"hello world", b"message m1", b"ok m1", b'{"cmd":"status"}', b"  spaced "):
            self.client.user_line(line)
        self.assertEqual(
            transport.value(), b'hello world\nmessage m1\nok m1\n{"cmd":"status"}\n  spaced \n'
        )

    def test_hello_waits_for_the_tls_handshake(self):
        self.start(tls=True)
        transport = self.net.accept()
        self.assertEqual(transport.value(), b"")
        self.client.link.handshakeCompleted()
        self.assertEqual(transport.value(), HELLO)

    def test_json_pushes_are_shown_labelled(self):
        self.connect()
        self.net.receive(
            b'{"type":"welcome","payload":{"name":"c1","instance":"i1","profile":"nea"}}\n'
            b'{"type":"date","payload":"2026-11-21"}\n'
            b'{"type":"reverse","payload":"2026-11-21"}\n'
            b'{"type":"chat","payload":{"from":"alice","text":"hi"}}\n'
            b'{"type":"error","payload":{"code":"empty_relay","message":"usage: message <text>"}}\n'
        )
        self.assertEqual(
            self.shown,
            [
                "[welcome] you are c1 on instance i1 (profile nea)",
                "[date] 2026-11-21",
                "[reverse] 2026-11-21",
                "[chat] alice: hi",
                "[error empty_relay] usage: message <text>",
            ],
        )

    def test_forwarded_message_is_shown_not_acked(self):
        transport = self.connect()
        self.net.receive(b'{"type":"message","payload":"X"}\n')
        self.assertEqual(self.shown, ["[relay] message X"])
        self.assertEqual(transport.value(), b"")
        self.client.user_line(b"ok X")
        self.assertEqual(transport.value(), b"ok X\n")

    def test_auto_ack_answers_forwarded_messages(self):
        transport = self.connect(auto_ack=True)
        self.net.receive(b'{"type":"message","payload":"X"}\n')
        self.assertEqual(transport.value(), b"ok X\n")
        self.assertEqual(self.shown, ["[relay] message X", "[info] sent ok X"])

    def test_text_only_listener_is_explained_once(self):
        self.connect()
        refusal = b"error not_in_profile the 'relay' profile understands only: exit, message, ok\n"
        self.net.receive(refusal + refusal)
        self.assertEqual(
            self.shown,
            [
                "[info] this listener speaks text only; lines are shown as they come",
                "[error not_in_profile] the 'relay' profile understands only: exit, message, ok",
            ],
        )

    def test_exit_is_sent_and_the_servers_close_ends_the_session(self):
        transport = self.connect()
        self.client.user_line(b"exit")
        self.assertEqual(transport.value(), b"exit\n")
        self.net.receive(b'{"type":"bye"}\n')
        self.net.drop()
        self.assertEqual([c.outcome for c in self.done], ["quit"])
        self.assertEqual(self.shown, ["[bye]"])
        self.clock.advance(60)
        self.assertEqual(self.net.dials, 1)

    def test_end_of_input_says_goodbye_and_waits_for_the_replies(self):
        transport = self.connect()
        self.client.user_line(b"abc")
        self.client.user_done()
        self.assertEqual(transport.value(), b"abc\nexit\n")
        self.net.receive(b'{"type":"reverse","payload":"cba"}\n{"type":"bye"}\n')
        self.assertEqual(self.done, [])
        self.net.drop()
        self.assertEqual(self.shown, ["[reverse] cba", "[bye]"])
        self.assertEqual([c.outcome for c in self.done], ["quit"])

    def test_goodbye_gives_up_on_a_server_that_does_not_close(self):
        transport = self.connect()
        self.client.user_done()
        self.clock.advance(InteractiveClient.GOODBYE_TIMEOUT)
        self.assertTrue(transport.disconnecting)

    def test_lines_typed_before_connecting_are_sent_after_hello(self):
        self.start()
        self.client.user_line(b"first")
        self.client.user_line(b"second")
        self.client.user_done()
        self.assertEqual(self.done, [])
        transport = self.net.accept()
        self.assertEqual(transport.value(), HELLO + b"first\nsecond\nexit\n")
        self.assertEqual(
            self.shown, ["[info] not connected yet; what you type is sent once connected"]
        )

    def test_end_of_input_with_nothing_typed_ends_at_once(self):
        self.start()
        self.net.refuse()
        self.client.user_done()
        self.assertEqual([c.outcome for c in self.done], ["closed"])
        self.clock.advance(60)
        self.assertEqual(self.net.dials, 1)

    def test_exit_while_not_connected_quits(self):
        self.start()
        self.client.user_line(b"quit")
        self.assertEqual([c.outcome for c in self.done], ["quit"])

    def test_waiting_lines_are_bounded(self):
        self.start()
        for n in range(InteractiveClient.MAX_PENDING + 2):
            self.client.user_line(b"line %d" % n)
        self.assertEqual(len(self.shown), 3)  # one "not connected yet", two "dropped"
        sent = self.net.accept().value().splitlines()
        self.assertEqual(len(sent), 1 + InteractiveClient.MAX_PENDING)
        self.assertEqual(sent[-1], b"line %d" % (InteractiveClient.MAX_PENDING - 1))

    def test_lost_connection_is_shown_and_redialled(self):
        self.connect()
        self.net.drop(error.ConnectionLost())
        self.assertEqual(self.shown, ["[info] not connected (connection lost); retrying in 1.0 s"])
        self.clock.advance(1.0)
        self.assertEqual(self.net.dials, 2)
        transport = self.net.accept()
        self.assertEqual(transport.value(), HELLO)
        self.assertEqual(self.done, [])
