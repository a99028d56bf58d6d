"""The hub's gate (nea.core.access): tokens, expiry, not_allowed, takeovers, nicks, counters."""

import json
import time

from twisted.internet.task import Clock
from twisted.logger import formatEvent, globalLogPublisher
from twisted.trial import unittest

from nea.core.bus import LocalBus
from nea.core.hub import Hub, HubConfig
from nea.core.permissions import Policy, parse_anonymous
from nea.core.snapshot import status_json
from nea.core.testing import FakePeer
from nea.core.tokens import TokenVerifier
from nea.wire import codec, frames
from tests.test_permissions import SECRET, sign

DEFAULT_POLICY = Policy()
VERIFIER = TokenVerifier(SECRET, "HS256")


def line(hub, peer, text: str) -> None:
    hub.handle(peer, codec.decode_request(text.encode(), peer.profile))


def errors_of(pushes) -> list[str]:
    return [p.code for p in pushes if isinstance(p, frames.ErrorReply)]


class Gate(unittest.TestCase):
    def setUp(self):
        self.clock = Clock()
        self.clock.advance(time.time())  # tokens' times are the wall clock's
        self.hub = self.make_hub()
        self.logged = []
        globalLogPublisher.addObserver(self.logged.append)
        self.addCleanup(globalLogPublisher.removeObserver, self.logged.append)

    def make_hub(self, policy=DEFAULT_POLICY, tokens=VERIFIER):
        return Hub(self.clock, LocalBus("solo"), HubConfig(policy=policy), tokens=tokens)

    def peer(self, hub=None) -> FakePeer:
        peer = FakePeer()
        (hub or self.hub).join(peer)
        return peer

    def authed(self, sub: str, hub=None, **claims) -> FakePeer:
        peer = self.peer(hub)
        line(hub or self.hub, peer, f"auth {sign({'sub': sub, **claims})}")
        self.assertEqual(peer.take(), [frames.Authenticated(sub)])
        return peer

    def auth_figures(self) -> dict:
        return status_json(self.hub.snapshot())["auth"]

    def log_text(self) -> str:
        return "\n".join(formatEvent(event) for event in self.logged)

    def test_auth_identifies_the_connection(self):
        peer = self.authed("lock1")
        self.assertEqual(peer.identity, "lock1")
        [info] = self.hub.connections(10)
        self.assertEqual((info.identity, info.auth), ("lock1", "token"))
        self.assertEqual(self.auth_figures(), {"auth_ok": 1, "auth_failed": 0, "not_allowed": {}})
        self.assertEqual(self.hub.snapshot().identified, 1)

    def test_auth_in_json(self):
        peer = self.peer()
        token = sign({"sub": "lock1"})
        self.hub.handle(
            peer,
            codec.decode_request(
                json.dumps({"type": "auth", "payload": {"token": token}}).encode(), peer.profile
            ),
        )
        self.assertEqual(peer.take(), [frames.Authenticated("lock1")])

    def test_auth_without_a_token_is_bad_usage(self):
        peer = self.peer()
        line(self.hub, peer, "auth")
        line(self.hub, peer, '{"type":"auth","payload":{"token":7}}')
        self.assertEqual(errors_of(peer.take()), ["bad_usage", "bad_payload"])
        self.assertEqual(self.auth_figures()["auth_failed"], 0)

    def test_a_bad_token_is_counted_once_logged_without_it_and_the_connection_stays(self):
        peer = self.peer()
        token = sign({"sub": "a"}, key=b"w" * 40)
        line(self.hub, peer, f"auth {token}")
        self.assertEqual(errors_of(peer.take()), ["bad_signature"])
        self.assertFalse(peer.closed)
        self.assertEqual(self.auth_figures()["auth_failed"], 1)
        self.assertEqual(self.hub.snapshot().errors["bad_signature"], 1)
        self.assertIn("bad_signature", self.log_text())
        self.assertNotIn(token.split(".")[2], self.log_text())
        self.assertIsNone(peer.identity)

    def test_no_key_no_tokens(self):
        hub = self.make_hub(tokens=None)
        peer = self.peer(hub)
        line(hub, peer, f"auth {sign({'sub': 'a'})}")
        self.assertEqual(errors_of(peer.take()), ["auth_unavailable"])

    def test_an_expired_token_closes_its_connection(self):
        peer = self.authed("lock1", exp=int(self.clock.seconds()) + 60)
        self.clock.advance(59)
        self.assertFalse(peer.closed)
        self.clock.advance(1)
        self.assertEqual(errors_of(peer.take()), ["token_expired"])
        self.assertTrue(peer.closed)

    def test_a_token_good_for_years_is_waited_for_a_day_at_a_time(self):
        peer = self.authed("lock1", exp=int(self.clock.seconds()) + 3 * 365 * 86400)
        waits = [call.getTime() - self.clock.seconds() for call in self.clock.getDelayedCalls()]
        self.assertLessEqual(max(waits), 86400)
        self.clock.pump([86400] * (3 * 365 - 1))
        self.assertFalse(peer.closed)
        self.clock.pump([86400] * 2)
        self.assertTrue(peer.closed)

    def test_a_fresh_token_in_time_keeps_it(self):
        now = int(self.clock.seconds())
        peer = self.authed("lock1", exp=now + 60)
        self.clock.advance(30)
        line(self.hub, peer, f"auth {sign({'sub': 'lock1', 'exp': now + 120})}")
        self.clock.advance(40)
        self.assertFalse(peer.closed)
        self.assertIn(frames.Authenticated("lock1"), peer.take())
        self.clock.advance(50)
        self.assertTrue(peer.closed)

    def test_a_connection_keeps_its_identity(self):
        peer = self.authed("lock1")
        line(self.hub, peer, f"auth {sign({'sub': 'lock2'})}")
        self.assertEqual(errors_of(peer.take()), ["bad_token"])
        self.assertEqual(peer.identity, "lock1")

    def test_leaving_cancels_the_expiry(self):
        peer = self.authed("lock1", exp=int(self.clock.seconds()) + 60)
        self.hub.leave(peer)
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_not_allowed_names_the_permission_and_the_connection_stays(self):
        hub = self.hub = self.make_hub(Policy(anonymous=parse_anonymous("reverse")))
        peer = self.peer(hub)
        line(hub, peer, "serve payments")
        line(hub, peer, "ask 1 lock1 unlock")
        line(hub, peer, "message hello")
        line(hub, peer, "chat hi")
        line(hub, peer, "olleh")
        pushes = peer.take()
        self.assertEqual(errors_of(pushes), ["not_allowed"] * 4)
        self.assertIn("serve 'payments' needs the 'serve' permission", pushes[0].message)
        self.assertEqual(pushes[-1], frames.ReverseReply("hello"))
        self.assertFalse(peer.closed)
        self.assertEqual(
            self.auth_figures()["not_allowed"], {"serve": 1, "ask": 1, "relay": 1, "chat": 1}
        )
        self.assertIn("not_allowed: f", self.log_text())
        self.assertIn("(anonymous) may not serve 'payments'", self.log_text())

    def test_the_token_claim_gives_the_permissions(self):
        hub = self.hub = self.make_hub(Policy(anonymous=parse_anonymous("none")))
        peer = self.authed("lock1", hub, nea={"register": ["{sub}"], "relay": True})
        line(hub, peer, "register lock2")
        line(hub, peer, "register lock1")
        line(hub, peer, "serve payments")
        pushes = peer.take()
        self.assertEqual(pushes[1], frames.Registered("lock1"))
        self.assertEqual(errors_of(pushes), ["not_allowed", "not_allowed"])
        self.assertIn("token 'lock1'", self.log_text())

    def test_a_name_of_an_identity_is_taken_over_by_it_only(self):
        device = self.authed("lock1")
        line(self.hub, device, "register lock1")
        device.take()
        anonymous = self.peer()
        line(self.hub, anonymous, "register lock1")
        other = self.authed("mallory", nea={"register": ["*"]})
        line(self.hub, other, "register lock1")
        self.assertEqual(errors_of(anonymous.take() + other.take()), ["not_allowed"] * 2)
        self.assertEqual(device.take(), [])
        again = self.authed("lock1")
        line(self.hub, again, "register lock1")
        self.assertEqual(again.take(), [frames.Registered("lock1")])
        self.assertEqual(errors_of(device.take()), ["name_taken_over"])

    def test_anonymous_names_stay_first_come(self):
        first, second = self.peer(), self.peer()
        line(self.hub, first, "register lock1")
        line(self.hub, second, "register lock1")
        self.assertEqual(second.take(), [frames.Registered("lock1")])
        self.assertEqual(errors_of(first.take()), ["name_taken_over"])

    def test_an_identified_nick_is_nobody_elses(self):
        alice = self.authed("alice")
        self.assertEqual(alice.name, "alice")
        line(self.hub, alice, "nick queen")
        self.assertEqual(alice.take(), [frames.NickReply("alice")])
        impostor = self.peer()
        line(self.hub, impostor, "nick alice")
        self.assertEqual(errors_of(impostor.take()), ["not_allowed"])
        line(self.hub, alice, "chat hello")
        self.assertIn(frames.ChatPush("alice", "hello"), impostor.take())
        self.hub.leave(alice)
        line(self.hub, impostor, "nick alice")
        self.assertEqual(impostor.take(), [frames.NickReply("alice")])

    def test_the_nick_claim(self):
        peer = self.authed("u:17", nick="bob")
        line(self.hub, peer, "nick x")
        self.assertEqual(peer.take(), [frames.NickReply("bob")])

    def test_who_may_not_relay_is_no_relay_target_and_hears_no_chat(self):
        hub = self.hub = self.make_hub(Policy(anonymous=parse_anonymous("reverse")))
        anonymous = self.peer(hub)
        sender = self.authed("app", hub)
        for n in range(20):
            line(hub, sender, f"message m{n}")
        line(hub, sender, "chat hello")
        self.assertEqual(anonymous.take(), [])
        self.assertEqual(hub.snapshot().relay_capable, 1)

    def test_a_reloaded_policy_applies_at_once(self):
        peer = self.peer()
        line(self.hub, peer, "serve payments")
        self.assertEqual(peer.take(), [frames.Serving("payments")])
        self.hub.reload_policy(Policy(anonymous=parse_anonymous("reverse")))
        line(self.hub, peer, "serve refunds")
        self.assertEqual(errors_of(peer.take()), ["not_allowed"])
        self.assertEqual(self.hub.snapshot().relay_capable, 0)

    def test_a_reload_takes_no_closing_client_back(self):
        peer = self.peer()
        self.hub.input_ended(peer)  # closing; it leaves once its transport is gone
        self.hub.reload_policy(Policy())
        self.assertEqual(self.hub.snapshot().relay_capable, 0)
