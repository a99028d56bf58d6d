"""The hub's decisions: admission, dates, chat, reverse, errors, exit, status."""

import random

from twisted.internet.task import Clock
from twisted.trial import unittest

from nea.core import dispatch
from nea.core.bus import LocalBus
from nea.core.hub import Hub, HubConfig
from nea.core.reverse import reverse_text
from nea.core.testing import FakePeer
from nea.wire import codec, errors, frames, profiles
from nea.wire.frames import Encoding


class InOrder(random.Random):
    """An rng that leaves a drain's order alone: the clients go in the order they came."""

    def shuffle(self, x) -> None:
        pass


def make_hub(clock=None, **config):
    return Hub(clock or Clock(), LocalBus("unit"), HubConfig(**config), random.Random(0))


class DispatchTests(unittest.TestCase):
    def test_a_request_with_two_handlers_is_refused(self):
        liveness = make_hub().liveness
        with self.assertRaisesRegex(ValueError, "Ping has two handlers"):
            dispatch.table([liveness, liveness])

    def test_a_declared_request_without_a_handler_is_refused(self):
        with self.assertRaisesRegex(ValueError, "no handler for .*Relay"):
            dispatch.table([make_hub().liveness])

    def test_the_hub_handles_every_request_a_profile_offers(self):
        hub = make_hub()
        for kind in profiles.NEA.allowed | profiles.CHAT.allowed | profiles.RELAY.allowed:
            self.assertIn(kind, hub._handlers)


class AdmissionTests(unittest.TestCase):
    def test_the_client_past_the_limit_is_told_and_closed(self):
        hub = make_hub(max_clients=2)
        peers = [FakePeer(profiles.RELAY) for _ in range(3)]
        results = [hub.join(p) for p in peers]
        self.assertEqual(results, [True, True, False])
        [reply] = peers[2].take()
        self.assertEqual(reply.code, "server_full")
        self.assertTrue(peers[2].closed)
        self.assertEqual(hub.snapshot().refused_full, 1)
        self.assertEqual(hub.snapshot().connections, 2)

    def test_draining_refuses_newcomers_and_sheds_the_others_in_batches(self):
        hub = Hub(Clock(), LocalBus("unit"), rng=InOrder())
        peers = [FakePeer(profiles.RELAY) for _ in range(5)]
        for peer in peers:
            hub.join(peer)
        self.assertEqual(hub.drain(), 5)
        self.assertEqual(hub.snapshot().state, "draining")
        late = FakePeer(profiles.RELAY)
        self.assertFalse(hub.join(late))
        self.assertEqual([p.code for p in late.take()], ["shutting_down"])
        self.assertEqual([p.closed for p in peers], [False] * 5)  # drain() alone closes nobody
        hub.shed(2)
        self.assertEqual([p.closed for p in peers], [True, True, False, False, False])
        self.assertEqual([p.code for p in peers[0].take()], ["shutting_down"])
        hub.leave(peers[2])  # left on its own: skipped, but it counts as one of the next batch
        hub.shed(2)
        self.assertEqual([p.closed for p in peers], [True, True, False, True, False])
        self.assertEqual(peers[2].take(), [])
        hub.shed(10)  # more than are left
        self.assertTrue(peers[4].closed)
        # four shed and the late one
        self.assertEqual(hub.snapshot().errors.get("shutting_down", 0), 5)

    def test_the_drain_sheds_everyone_once_in_random_order(self):
        hub = make_hub()
        peers = [FakePeer(profiles.RELAY) for _ in range(50)]
        for peer in peers:
            hub.join(peer)
        hub.drain()
        order = []
        for _ in range(50):
            hub.shed(1)
            order += [p for p in peers if p.closed and p not in order]
        self.assertEqual(sorted(p.id for p in order), sorted(p.id for p in peers))
        self.assertNotEqual(order, peers)  # not join order (1 chance in 50! to fail)
        self.assertEqual({len(p.take()) for p in peers}, {1})


class DateTests(unittest.TestCase):
    def test_dates_run_only_while_subscribers_are_connected(self):
        clock = Clock()
        clock.advance(86400 * 365 * 56 + 86400 * 14)  # some day in 2026
        hub = make_hub(clock, date_interval=10)
        self.assertFalse(hub.snapshot().dates.running)
        relay_only = FakePeer(profiles.RELAY)
        hub.join(relay_only)
        self.assertFalse(hub.snapshot().dates.running)  # relay profile gets no dates
        first = FakePeer()
        hub.join(first)
        self.assertTrue(hub.snapshot().dates.running)
        self.assertEqual(first.take(), [])  # no date at connect: its reply comes first
        clock.advance(4)
        second = FakePeer()
        hub.join(second)
        self.assertEqual(second.take(), [])
        clock.advance(6)  # every client has its first date within one interval
        [date] = first.take()
        self.assertEqual(date, frames.DatePush(hub.dates.today()))
        self.assertRegex(date.date, r"^\d{4}-\d{2}-\d{2}$")
        self.assertEqual(second.take(), [date])
        clock.advance(10)
        self.assertEqual(len(first.take()), 1)
        self.assertEqual(len(second.take()), 1)
        self.assertEqual(relay_only.take(), [])
        hub.leave(first)
        hub.leave(second)
        self.assertFalse(hub.snapshot().dates.running)
        clock.advance(100)
        self.assertEqual(first.take() + second.take(), [])

    def test_the_date_is_utc_of_the_clock(self):
        clock = Clock()
        clock.advance(1_795_219_200)  # 2026-11-21T00:00:00Z
        self.assertEqual(make_hub(clock).dates.today(), "2026-11-21")

    def test_a_failing_peer_does_not_stop_the_loop(self):
        clock = Clock()
        hub = make_hub(clock, date_interval=1)

        class Broken(FakePeer):
            def send(self, line):
                raise RuntimeError("boom")

        good, broken = FakePeer(), Broken()
        hub.join(broken)
        hub.join(good)
        self.flushLoggedErrors(RuntimeError)
        good.take()
        clock.advance(1)
        clock.advance(1)
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 2)
        self.assertTrue(hub.snapshot().dates.running)
        self.assertEqual(hub.snapshot().dates.ticks, 2)
        self.assertEqual(len(good.take()), 2)


class RequestTests(unittest.TestCase):
    def setUp(self):
        self.hub = make_hub()
        self.peer = FakePeer(profiles.RELAY)  # no date noise
        self.hub.join(self.peer)

    def test_reverse(self):
        self.hub.handle(self.peer, frames.Reverse("abc"))
        self.assertEqual(self.peer.take(), [frames.ReverseReply("cba")])

    def test_nick_and_chat(self):
        listener = FakePeer(profiles.NEA)
        self.hub.join(listener)
        speaker = FakePeer(profiles.NEA)
        self.hub.join(speaker)
        self.hub.handle(speaker, frames.Nick("ann"))
        self.assertEqual(speaker.take(), [frames.NickReply("ann")])
        self.hub.handle(speaker, frames.Chat("hi all"))
        said = [p for p in listener.take() if isinstance(p, frames.ChatPush)]
        self.assertEqual([(p.sender, p.text, p.id) for p in said], [("ann", "hi all", None)])
        # The nea profile echoes a line to its sender (the chat profile's room does not).
        self.assertEqual([p.text for p in speaker.take()], ["hi all"])
        self.assertEqual(self.peer.take(), [])  # the relay profile is not in the chat

    def test_exit_says_bye_and_closes(self):
        self.hub.handle(self.peer, frames.Exit())
        self.assertEqual(self.peer.take(), [frames.Bye()])
        self.assertTrue(self.peer.closed)

    def test_hello_and_status(self):
        self.hub.handle(self.peer, frames.Hello())
        self.assertEqual(self.peer.take(), [frames.Welcome(self.peer.name, "unit", "relay")])
        self.peer.encoding = Encoding.JSON  # status has no text form a client can parse
        self.hub.handle(self.peer, frames.Status())
        [status] = self.peer.take()
        self.assertEqual(status.status["instance"], "unit")
        self.assertEqual(status.status["connections"], 1)
        self.assertEqual(status.status["cluster"]["state"], "standalone")

    def test_every_error_code_is_answered_and_counted(self):
        for error in errors.ALL:
            peer = FakePeer(profiles.RELAY)
            self.hub.join(peer)
            self.hub.handle(peer, frames.Invalid(error, "detail"))
            [reply] = peer.take()
            self.assertEqual(reply.code, error.code)
            self.assertIn("detail", reply.message)
            self.assertEqual(peer.closed, error.fatal, error.code)
            self.assertEqual(self.hub.snapshot().errors[error.code], 1)

    def test_errors_from_relays_are_counted_under_their_code(self):
        lonely = make_hub()
        peer = FakePeer(profiles.NEA)
        lonely.handle(peer, frames.Relay("to nobody"))  # not joined: nobody to relay to
        lonely.join(peer)
        lonely.handle(peer, frames.Ack("never forwarded"))
        codes = [reply.code for reply in peer.take()]
        self.assertEqual(codes, ["no_recipient", "unexpected_ok"])
        self.assertEqual(lonely.snapshot().errors, {"no_recipient": 1, "unexpected_ok": 1})


class EndOfStreamTests(unittest.TestCase):
    """A client that ended its stream can still be answered, then it is closed."""

    def test_closed_at_once_when_it_waits_for_nothing(self):
        hub = make_hub()
        peer = FakePeer(profiles.RELAY)
        hub.join(peer)
        hub.input_ended(peer)
        self.assertTrue(peer.closed)

    def test_closed_once_its_relay_is_acked_and_never_drawn_again(self):
        hub = make_hub()
        sender, acker = FakePeer(profiles.RELAY), FakePeer(profiles.RELAY)
        hub.join(sender)
        hub.handle(sender, frames.Relay("x"))  # sender alone: forwarded to itself
        self.assertEqual(sender.take(), [frames.RelayPush("x")])
        hub.join(acker)
        hub.input_ended(sender)  # it cannot ack now: its delivery goes to the acker
        self.assertFalse(sender.closed)
        self.assertEqual(acker.take(), [frames.RelayPush("x")])
        for _ in range(50):
            hub.handle(acker, frames.Relay("y"))
            hub.handle(acker, frames.Ack("y"))
        self.assertEqual(sender.take(), [])  # never a target again
        hub.handle(acker, frames.Ack("x"))
        self.assertEqual(sender.take(), [frames.AckPush("x")])
        self.assertTrue(sender.closed)


class ReverseTests(unittest.TestCase):
    def test_graphemes_stay_whole(self):
        self.assertEqual(reverse_text("abc"), "cba")
        self.assertEqual(reverse_text("e\u0301x"), "xe\u0301")  # combining accent stays on e
        self.assertEqual(reverse_text("🇫🇷🇩🇪"), "🇩🇪🇫🇷")  # flags are not split
        self.assertEqual(reverse_text("👍🏽!"), "!👍🏽")
        self.assertEqual(reverse_text(""), "")


class JsonPeerTests(unittest.TestCase):
    def test_json_peers_get_json_pushes(self):
        hub = make_hub()
        peer = FakePeer(profiles.RELAY, Encoding.JSON)
        hub.join(peer)
        hub.handle(peer, frames.Reverse("ab"))
        self.assertEqual(peer.lines, [codec.encode_push(frames.ReverseReply("ba"), Encoding.JSON)])
