"""Addressed requests in the core: names, services, and their semantics, on a Clock.

One instance (`LocalBus`) and several (`MemoryCluster`), with `FakePeer`s; the
Redis side is in test_cluster_bus.py and test_cluster_requests.py.
"""

import random

from twisted.internet.task import Clock
from twisted.trial import unittest

from nea.core.bus import LocalBus
from nea.core.hub import Hub, HubConfig
from nea.core.permissions import Policy, parse_anonymous
from nea.core.requests import MAX_SERVICES
from nea.core.snapshot import status_json
from nea.core.testing import FakePeer, MemoryCluster
from nea.wire import codec, frames
from nea.wire.frames import Encoding
from nea.wire.profiles import NEA, RELAY


def line(hub: Hub, peer: FakePeer, text: str) -> None:
    """``peer`` sends ``text`` as one line."""
    hub.handle(peer, codec.decode_request(text.encode("utf-8"), peer.profile))


def requests_of(peer: FakePeer) -> list[frames.RequestPush]:
    return [p for p in peer.take() if isinstance(p, frames.RequestPush)]


def errors_of(pushes) -> list[str]:
    return [p.code for p in pushes if isinstance(p, frames.ErrorReply)]


class OneInstance(unittest.TestCase):
    def setUp(self):
        self.clock = Clock()
        self.hub = Hub(self.clock, LocalBus("solo"), HubConfig(max_pending=3), rng=random.Random(1))

    def peer(self, encoding: Encoding = Encoding.JSON, profile=NEA) -> FakePeer:
        peer = FakePeer(profile, encoding)
        self.assertTrue(self.hub.join(peer))
        return peer

    def serving(self, service: str, count: int) -> list[FakePeer]:
        members = [self.peer() for _ in range(count)]
        for member in members:
            line(self.hub, member, f"serve {service}")
            member.take()
        return members

    def registered(self, name: str) -> FakePeer:
        device = self.peer()
        line(self.hub, device, f"register {name}")
        self.assertEqual(device.take(), [frames.Registered(name)])
        return device

    def test_a_request_to_a_name_reaches_it_and_its_reply_comes_back(self):
        device = self.registered("lock1")
        asker = self.peer()
        line(self.hub, asker, "ask 7 lock1 status")
        [request] = requests_of(device)
        self.assertEqual((request.body, request.service), ("status", None))
        line(self.hub, device, f"reply {request.id} locked")
        self.assertEqual(asker.take(), [frames.ReplyPush("7", "locked", "solo")])
        self.assertEqual(asker.lines, [])
        self.assertTrue(self.hub.snapshot().addressed.answered == 1)

    def test_json_bodies_are_any_json_value(self):
        device = self.peer(Encoding.JSON)
        line(self.hub, device, '{"type":"register","payload":"lock1"}')
        asker = self.peer(Encoding.JSON)
        body = {"cmd": "lock", "args": [1, 2.5, None, True, {"deep": ["x"]}]}
        self.hub.handle(asker, frames.Ask("a1", "lock1", None, body))
        [request] = requests_of(device)
        self.assertEqual(request.body, body)
        self.hub.handle(device, frames.Reply(request.id, [{"ok": True}, 3]))
        self.assertEqual(asker.take(), [frames.ReplyPush("a1", [{"ok": True}, 3], "solo")])

    def test_a_text_device_sees_a_json_body_as_one_json_line(self):
        device = self.registered("lock1")
        device.encoding = Encoding.TEXT
        self.hub.ask(self.peer(), "a", "lock1", None, {"x": [1, "é"]})
        [raw] = device.lines
        self.assertTrue(raw.startswith(b"request "), raw)
        self.assertTrue(raw.endswith(' {"x":[1,"é"]}\n'.encode()), raw)

    def test_an_unknown_name_is_no_such_client(self):
        asker = self.peer()
        line(self.hub, asker, "ask 9 nobody hello")
        self.assertEqual(errors_of(asker.take()), ["no_such_client"])
        self.assertTrue(self.hub.zero_state(asking=asker))  # nothing is kept for it

    def test_the_error_for_an_ask_carries_its_id_in_json(self):
        asker = self.peer(Encoding.JSON)
        self.hub.handle(asker, frames.Ask("q1", "nobody", None, 1))
        [error] = asker.take()
        self.assertEqual((error.code, error.id), ("no_such_client", "q1"))

    def test_a_device_that_leaves_before_replying_is_client_gone_and_never_sent_again(self):
        device = self.registered("lock1")
        asker = self.peer()
        line(self.hub, asker, "ask 1 lock1 open")
        self.assertEqual(len(requests_of(device)), 1)
        self.hub.leave(device)
        self.assertEqual(errors_of(asker.take()), ["client_gone"])
        again = self.registered("lock1")  # the device is back: the request is not re-sent
        self.clock.advance(60)
        self.assertEqual(requests_of(again), [])
        self.assertEqual(errors_of(asker.take()), [])

    def test_a_newer_registration_takes_the_name_over_and_closes_the_older(self):
        old = self.registered("lock1")
        new = self.registered("lock1")
        self.assertEqual(errors_of(old.take()), ["name_taken_over"])
        self.assertTrue(old.closed)
        asker = self.peer()
        line(self.hub, asker, "ask 1 lock1 hi")
        self.assertEqual(len(requests_of(new)), 1)

    def test_a_second_name_releases_the_first(self):
        device = self.registered("one")
        line(self.hub, device, "register two")
        asker = self.peer()
        line(self.hub, asker, "ask 1 one hi")
        self.assertEqual(errors_of(asker.take()), ["no_such_client"])
        self.assertEqual(self.hub.snapshot().addressed.names, 1)

    def test_thousands_of_registrations_hold_one_name(self):
        device = self.peer()
        for n in range(5000):
            line(self.hub, device, f"register n{n}")
        self.assertEqual(self.hub.snapshot().addressed.names, 1)
        self.hub.leave(device)
        self.assertTrue(self.hub.zero_state())

    def test_a_service_member_that_leaves_has_the_request_sent_to_another(self):
        members = [self.peer(), self.peer()]
        for member in members:
            line(self.hub, member, "serve people")
            self.assertEqual(member.take(), [frames.Serving("people")])
        asker = self.peer()
        line(self.hub, asker, "ask 1 @people who")
        [first] = [m for m in members if m.lines]
        [request] = requests_of(first)
        self.assertEqual(request.service, "people")
        self.hub.leave(first)
        [second] = [m for m in members if m is not first]
        [again] = requests_of(second)
        self.assertEqual(again.body, "who")
        line(self.hub, second, f"reply {again.id} ann, bob")
        self.assertEqual(asker.take(), [frames.ReplyPush("1", "ann, bob", "solo")])
        self.assertEqual(self.hub.snapshot().addressed.redrawn, 1)

    def test_no_member_when_the_service_has_nobody(self):
        member = self.peer()
        line(self.hub, member, "serve people")
        line(self.hub, member, "unserve people")
        self.assertEqual(member.take(), [frames.Serving("people"), frames.Unserved("people")])
        asker = self.peer()
        line(self.hub, asker, "ask 1 @people who")
        self.assertEqual(errors_of(asker.take()), ["no_member"])
        self.assertEqual(member.lines, [])

    def test_the_last_member_leaving_mid_request_is_no_member(self):
        member = self.peer()
        line(self.hub, member, "serve people")
        asker = self.peer()
        line(self.hub, asker, "ask 1 @people who")
        self.hub.leave(member)
        self.assertEqual(errors_of(asker.take()), ["no_member"])

    def test_no_reply_in_time_is_request_timeout_and_a_late_reply_is_unexpected(self):
        device = self.registered("slow")
        asker = self.peer(Encoding.JSON)
        self.hub.handle(asker, frames.Ask("t", "slow", None, "x", timeout=2.0))
        [request] = requests_of(device)
        self.clock.advance(1.9)
        self.assertEqual(asker.take(), [])
        self.clock.advance(0.2)
        self.assertEqual(errors_of(asker.take()), ["request_timeout"])
        line(self.hub, device, f"reply {request.id} too late")
        self.assertEqual(errors_of(device.take()), ["unexpected_reply"])
        self.assertFalse(device.closed)
        self.assertEqual(asker.take(), [])

    def test_outstanding_local_requests_share_one_timer_and_none_once_answered(self):
        # Asked and held on the same instance, a request's held deadline is its ask's too.
        device = self.registered("dev")
        askers = [self.peer(Encoding.TEXT) for _ in range(10)]
        before = len(self.clock.getDelayedCalls())
        for asker in askers:
            line(self.hub, asker, "ask a dev x")
        self.assertEqual(len(self.clock.getDelayedCalls()) - before, 1)
        for request in requests_of(device):
            line(self.hub, device, f"reply {request.id} y")
        self.assertEqual(len(self.clock.getDelayedCalls()), before)

    def test_a_request_drawn_again_keeps_its_deadline(self):
        first, second = self.serving("people", 2)
        asker = self.peer()
        self.hub.handle(asker, frames.Ask("t", None, "people", "x", timeout=2.0))
        drawn, other = (first, second) if requests_of(first) else (second, first)
        self.clock.advance(1.0)
        self.hub.leave(drawn)
        self.assertEqual(len(requests_of(other)), 1)
        self.clock.advance(0.9)
        self.assertEqual(asker.take(), [])
        self.clock.advance(0.2)
        self.assertEqual(errors_of(asker.take()), ["request_timeout"])

    def test_a_request_whose_asker_left_is_still_dropped_at_its_deadline(self):
        device = self.registered("slow")
        asker = self.peer()
        self.hub.handle(asker, frames.Ask("t", "slow", None, "x", timeout=2.0))
        [request] = requests_of(device)
        self.hub.leave(asker)
        self.clock.advance(2.1)
        line(self.hub, device, f"reply {request.id} too late")
        self.assertEqual(errors_of(device.take()), ["unexpected_reply"])
        self.assertEqual(self.hub.snapshot().addressed.in_flight, 0)

    def test_a_shorter_deadline_asked_later_still_comes_first(self):
        device = self.registered("slow")
        patient, hasty = self.peer(Encoding.JSON), self.peer(Encoding.JSON)
        self.hub.handle(patient, frames.Ask("p", "slow", None, "x", timeout=5.0))
        self.clock.advance(1.0)
        self.hub.handle(hasty, frames.Ask("h", "slow", None, "x", timeout=1.0))
        self.clock.advance(1.01)
        self.assertEqual((errors_of(hasty.take()), patient.take()), (["request_timeout"], []))
        self.clock.advance(2.98)
        self.assertEqual(patient.take(), [])
        self.clock.advance(0.02)
        self.assertEqual(errors_of(patient.take()), ["request_timeout"])
        self.assertEqual(len(requests_of(device)), 2)

    def test_a_member_that_missed_a_deadline_is_skipped_until_it_replies_again(self):
        hung, good = self.serving("people", 2)
        asker = self.peer()
        for i in range(50):  # until the hung one has been drawn once
            line(self.hub, asker, f"ask {i} @people who")
            for request in requests_of(good):
                line(self.hub, good, f"reply {request.id} ok")
            missed = requests_of(hung)
            if missed:
                break
        self.assertTrue(missed)
        self.clock.advance(10)
        self.assertEqual(errors_of(asker.take()), ["request_timeout"])
        for i in range(40):
            line(self.hub, asker, f"ask n{i} @people who")
            [request] = requests_of(good)
            line(self.hub, good, f"reply {request.id} ok")
        self.assertEqual(requests_of(hung), [])
        self.assertEqual(self.hub.addressed.services(), {"people": 1})
        line(self.hub, hung, f"reply {missed[0].id} late")  # it answers again
        self.assertEqual(errors_of(hung.take()), ["unexpected_reply"])
        self.assertEqual(self.hub.addressed.services(), {"people": 2})
        # A deadline shorter than the default, chosen by an asker, sets nobody aside.
        self.hub.handle(asker, frames.Ask("short", None, "people", "x", timeout=0.5))
        for member in (hung, good):
            requests_of(member)
        self.clock.advance(0.5)
        self.assertEqual(self.hub.addressed.services(), {"people": 2})
        self.hub.leave(hung)
        self.hub.leave(good)
        self.assertEqual(self.hub.addressed.services(), {})

    def test_a_reply_to_an_unknown_id_is_unexpected_and_keeps_the_connection(self):
        device = self.registered("lock1")
        for n in range(100):
            line(self.hub, device, f"reply bogus{n} x")
        self.assertEqual(errors_of(device.take()), ["unexpected_reply"] * 100)
        self.assertFalse(device.closed)
        self.assertEqual(self.hub.snapshot().errors["unexpected_reply"], 100)

    def test_only_the_connection_that_was_sent_a_request_may_reply_to_it(self):
        device = self.registered("lock1")
        intruder = self.registered("other")
        asker = self.peer()
        line(self.hub, asker, "ask 1 lock1 open")
        [request] = requests_of(device)
        line(self.hub, intruder, f"reply {request.id} forged")
        self.assertEqual(errors_of(intruder.take()), ["unexpected_reply"])
        self.assertEqual(asker.take(), [])

    def test_a_flood_of_asks_is_bounded_by_max_pending(self):
        self.registered("sink")
        asker = self.peer()
        for n in range(100):
            line(self.hub, asker, f"ask {n} sink x")
        self.assertEqual(errors_of(asker.take()), ["too_many_pending"] * 97)
        self.assertEqual(self.hub.snapshot().addressed.pending, 3)

    def test_requests_held_by_one_client_are_bounded_by_max_pending(self):
        device = self.registered("sink")
        askers = [self.peer() for _ in range(5)]
        for n, asker in enumerate(askers):
            line(self.hub, asker, f"ask {n} sink x")
        self.assertEqual(len(requests_of(device)), 3)
        self.assertEqual([errors_of(a.take()) for a in askers[3:]], [["too_many_pending"]] * 2)

    def test_services_per_connection_are_bounded(self):
        member = self.peer()
        for n in range(MAX_SERVICES + 5):
            line(self.hub, member, f"serve s{n}")
        self.assertEqual(errors_of(member.take()), ["too_many_services"] * 5)
        self.assertEqual(self.hub.snapshot().addressed.services, MAX_SERVICES)

    def test_bad_names_and_usage_are_refused(self):
        peer = self.peer()
        for text in (
            "register",
            "register @svc",
            "serve a b",
            "register " + "x" * 65,
            "ask 1",
            "ask 1 @",
            "reply",
            "ask 1 n\u00e9 x",
        ):
            line(self.hub, peer, text)
        self.assertEqual(
            errors_of(peer.take()),
            [
                "bad_name",
                "bad_name",
                "bad_name",
                "bad_name",
                "bad_usage",
                "bad_name",
                "bad_usage",
                "bad_name",
            ],
        )

    def test_a_relay_only_connection_cannot_register(self):
        peer = self.peer(profile=RELAY)
        line(self.hub, peer, "register x")
        self.assertEqual(errors_of(peer.take()), ["not_in_profile"])

    def test_zero_state_after_everyone_leaves_mid_request(self):
        device = self.registered("lock1")
        member = self.peer()
        line(self.hub, member, "serve people")
        asker = self.peer()
        line(self.hub, asker, "ask 1 lock1 a")
        line(self.hub, asker, "ask 2 @people b")
        figures = self.hub.snapshot().addressed
        self.assertEqual(
            (figures.pending, figures.in_flight, figures.names, figures.services), (2, 2, 1, 1)
        )
        self.assertFalse(self.hub.zero_state())
        for peer in (asker, device, member):
            self.hub.leave(peer)
        self.assertTrue(self.hub.zero_state())
        status = status_json(self.hub.snapshot())
        self.assertEqual((status["requests"]["pending"], status["requests"]["in_flight"]), (0, 0))
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_a_half_closed_asker_is_closed_once_its_reply_came(self):
        device = self.registered("lock1")
        asker = self.peer()
        line(self.hub, asker, "ask 1 lock1 a")
        self.hub.input_ended(asker)
        self.assertFalse(asker.closed)
        [request] = requests_of(device)
        line(self.hub, device, f"reply {request.id} done")
        self.assertEqual(asker.take(), [frames.ReplyPush("1", "done", "solo")])
        self.assertTrue(asker.closed)

    def test_a_half_closed_device_can_no_longer_be_asked(self):
        device = self.registered("lock1")
        asker = self.peer()
        line(self.hub, asker, "ask 1 lock1 a")
        self.hub.input_ended(device)
        self.assertEqual(errors_of(asker.take()), ["client_gone"])
        line(self.hub, asker, "ask 2 lock1 b")
        self.assertEqual(errors_of(asker.take()), ["no_such_client"])


class CertificateNames(unittest.TestCase):
    def test_with_required_certificates_a_name_must_be_the_identity(self):
        policy = Policy(anonymous=parse_anonymous("reverse"))  # as --tls-client-ca sets it
        hub = Hub(Clock(), LocalBus("solo"), HubConfig(policy=policy))
        peer = FakePeer()
        peer.identity = "device-7"
        hub.join(peer)
        line(hub, peer, "register device-8")
        self.assertEqual(errors_of(peer.take()), ["not_allowed"])
        line(hub, peer, "register device-7")
        self.assertEqual(peer.take(), [frames.Registered("device-7")])
        anonymous = FakePeer()
        hub.join(anonymous)
        line(hub, anonymous, "register device-7")
        self.assertEqual(errors_of(anonymous.take()), ["not_allowed"])


class Cluster(unittest.TestCase):
    def setUp(self):
        self.cluster = MemoryCluster()
        self.hubs = {
            name: Hub(Clock(), self.cluster.bus(name), rng=random.Random(n))
            for n, name in enumerate("abc")
        }

    def peer(self, instance: str) -> FakePeer:
        peer = FakePeer(encoding=Encoding.JSON)
        self.hubs[instance].join(peer)
        return peer

    def test_a_name_on_another_instance_answers_with_its_instance(self):
        device = self.peer("b")
        line(self.hubs["b"], device, "register lock1")
        asker = self.peer("a")
        line(self.hubs["a"], asker, "ask 1 lock1 open")
        [request] = requests_of(device)
        line(self.hubs["b"], device, f"reply {request.id} opened")
        self.assertEqual(asker.take(), [frames.ReplyPush("1", "opened", "b")])

    def test_a_registration_on_another_instance_takes_the_name_over(self):
        old = self.peer("a")
        line(self.hubs["a"], old, "register lock1")
        self.hubs["b"].clock.advance(1)  # registered later
        new = self.peer("b")
        line(self.hubs["b"], new, "register lock1")
        self.assertEqual(errors_of(old.take()), ["name_taken_over"])
        self.assertTrue(old.closed)
        asker = self.peer("c")
        line(self.hubs["c"], asker, "ask 1 lock1 hi")
        self.assertEqual(len(requests_of(new)), 1)

    def test_an_instance_killed_mid_request(self):
        device = self.peer("b")
        line(self.hubs["b"], device, "register lock1")
        members = [self.peer("b"), self.peer("c")]
        for member, instance in zip(members, "bc", strict=True):
            line(self.hubs[instance], member, "serve people")
        asker = self.peer("a")
        line(self.hubs["a"], asker, "ask 1 lock1 a")
        self.hubs["a"].rng = random.Random(0)
        for n in range(20):  # until one lands on b's member
            line(self.hubs["a"], asker, f"ask s{n} @people b")
            if requests_of(members[0]):
                break
            [request] = requests_of(members[1])
            line(self.hubs["c"], members[1], f"reply {request.id} from c")
        self.cluster.kill("b")
        pushes = asker.take()
        self.assertIn("client_gone", errors_of(pushes))  # the name: never re-sent
        [request] = requests_of(members[1])  # the service: drawn again, on c
        line(self.hubs["c"], members[1], f"reply {request.id} from c")
        self.assertEqual(asker.take(), [frames.ReplyPush(f"s{n}", "from c", "c")])
