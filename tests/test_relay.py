"""Relay semantics of SPEC section 4, on one instance and across an in-memory cluster."""

import random

from twisted.internet.task import Clock
from twisted.trial import unittest

from nea.core.bus import LocalBus, weighted_pick
from nea.core.hub import Hub, HubConfig
from nea.core.testing import FakePeer, MemoryCluster
from nea.wire import frames, profiles


def hub_with(*peers, bus=None, seed=0, max_pending=10**6, ack_timeout=5.0, first_ack_timeout=0.0):
    """A hub whose bound on pending relays is out of the way unless a test sets it."""
    config = HubConfig(
        max_pending=max_pending, ack_timeout=ack_timeout, first_ack_timeout=first_ack_timeout
    )
    hub = Hub(Clock(), bus or LocalBus("solo"), config, rng=random.Random(seed))
    for peer in peers:
        assert hub.join(peer)
    return hub


def relays_to(peer):
    return [p.text for p in peer.take() if isinstance(p, frames.RelayPush)]


def acks_to(peer):
    return [p.text for p in peer.take() if isinstance(p, frames.AckPush)]


class SingleInstanceRelayTests(unittest.TestCase):
    def test_message_is_forwarded_and_ok_routed_back(self):
        a, b = FakePeer(profiles.RELAY), FakePeer(profiles.RELAY)
        hub = hub_with(a, b)
        hub.handle(a, frames.Relay("x"))
        got = {peer: relays_to(peer) for peer in (a, b)}
        [target] = [peer for peer, texts in got.items() if texts == ["x"]]
        self.assertEqual(sum(len(texts) for texts in got.values()), 1)
        self.assertEqual((hub.snapshot().relays.pending, hub.snapshot().relays.in_flight), (1, 1))
        hub.handle(target, frames.Ack("x"))
        self.assertEqual(acks_to(a), ["x"])
        self.assertEqual((hub.snapshot().relays.pending, hub.snapshot().relays.in_flight), (0, 0))

    def test_the_sender_itself_may_be_the_target(self):
        a = FakePeer(profiles.RELAY)
        hub = hub_with(a)
        hub.handle(a, frames.Relay("self"))
        self.assertEqual(a.take(), [frames.RelayPush("self")])
        hub.handle(a, frames.Ack("self"))
        self.assertEqual(a.take(), [frames.AckPush("self")])

    def test_targets_are_uniform_over_relay_capable_connections(self):
        peers = [FakePeer(profiles.RELAY) for _ in range(4)] + [FakePeer(profiles.CHAT, name="ann")]
        hub = hub_with(*peers, seed=42)
        for i in range(4000):
            hub.handle(peers[0], frames.Relay(f"m{i}"))
        counts = [len(relays_to(p)) for p in peers]
        self.assertEqual(counts[4], 0)
        self.assertEqual(sum(counts), 4000)
        # chi-square with 3 degrees of freedom; 16.27 is the p=0.001 critical value
        chi2 = sum((c - 1000) ** 2 / 1000 for c in counts[:4])
        self.assertLess(chi2, 16.27, counts)

    def test_an_ok_answers_only_the_relay_its_target_was_given(self):
        """Two senders of one text: the thief relays it too, is its own target (the
        recipient, holding its one allowed delivery, is not drawn), and acks; the victim
        still waits for its own recipient's ok."""
        victim, recipient, thief = FakePeer(), FakePeer(profiles.RELAY), FakePeer(profiles.RELAY)
        hub = hub_with(recipient, max_pending=1)
        hub.relay(victim, "same")  # (an HTTP-like waiter: no target itself)
        self.assertEqual(relays_to(recipient), ["same"])
        assert hub.join(thief)
        hub.handle(thief, frames.Relay("same"))
        self.assertEqual(relays_to(thief), ["same"])
        hub.handle(thief, frames.Ack("same"))
        self.assertEqual(acks_to(thief), ["same"])
        self.assertEqual(acks_to(victim), [])
        self.assertEqual(hub.snapshot().relays.pending, 1)
        hub.handle(recipient, frames.Ack("same"))
        self.assertEqual(acks_to(victim), ["same"])
        self.assertEqual(hub.snapshot().relays.pending, 0)

    def test_the_same_text_sent_twice_is_two_relays_with_an_ok_each(self):
        a = FakePeer(profiles.RELAY)
        hub = hub_with(a)
        hub.handle(a, frames.Relay("x"))
        hub.handle(a, frames.Relay("x"))
        self.assertEqual(relays_to(a), ["x", "x"])
        hub.handle(a, frames.Ack("x"))
        self.assertEqual(acks_to(a), ["x"])
        hub.handle(a, frames.Ack("x"))
        self.assertEqual(acks_to(a), ["x"])
        self.assertTrue(hub.relays.empty)

    def test_a_target_holding_one_text_thrice_hands_back_what_it_did_not_ack(self):
        sender, target = FakePeer(), FakePeer(profiles.RELAY)
        hub = hub_with(target)
        for _ in range(3):
            hub.relay(sender, "x")
        self.assertEqual(relays_to(target), ["x", "x", "x"])
        hub.handle(target, frames.Ack("x"))
        self.assertEqual(acks_to(sender), ["x"])
        hub.leave(target)  # two deliveries of "x" held: both go back, and find nobody
        self.assertEqual([p.code for p in sender.take()], ["no_recipient", "no_recipient"])
        self.assertTrue(hub.relays.empty)

    def test_unexpected_ok_is_an_error_and_keeps_the_connection(self):
        a = FakePeer(profiles.RELAY)
        hub = hub_with(a)
        hub.handle(a, frames.Ack("nobody"))
        [reply] = a.take()
        self.assertEqual(reply.code, "unexpected_ok")
        self.assertFalse(a.closed)
        self.assertEqual(hub.snapshot().relays.unexpected_ok, 1)

    def test_only_the_holder_may_ack(self):
        a, b, c = (FakePeer(profiles.RELAY) for _ in range(3))
        hub = hub_with(a, b, c, seed=3)
        hub.handle(a, frames.Relay("x"))
        holder = next(p for p in (a, b, c) if hub.relays.held.get(p))
        other = next(p for p in (a, b, c) if p is not holder)
        other.take()
        hub.handle(other, frames.Ack("x"))
        self.assertEqual([p.code for p in other.take()], ["unexpected_ok"])
        self.assertEqual(hub.snapshot().relays.pending, 1)

    def test_recipient_leaving_before_ack_gets_the_message_reforwarded(self):
        a, b = FakePeer(profiles.RELAY), FakePeer(profiles.RELAY)
        hub = hub_with(a, b, seed=1)
        for i in range(20):  # enough that b surely holds some
            hub.handle(a, frames.Relay(f"m{i}"))
        held_by_b = sorted(hub.relays.held.get(b, {}))
        self.assertTrue(held_by_b)
        a.take()
        hub.leave(b)
        self.assertEqual(sorted(relays_to(a)), held_by_b)  # a is the only one left
        self.assertEqual(hub.snapshot().relays.reforwarded, len(held_by_b))
        for i in range(20):
            hub.handle(a, frames.Ack(f"m{i}"))
        self.assertEqual(sorted(acks_to(a)), sorted(f"m{i}" for i in range(20)))

    def test_originator_leaving_drops_its_waiting_entries(self):
        a, b = FakePeer(profiles.RELAY), FakePeer(profiles.RELAY)
        hub = hub_with(a, b)
        hub.handle(a, frames.Relay("x"))
        hub.leave(a)
        self.assertEqual(hub.snapshot().relays.pending, 0)
        if hub.relays.held.get(b):  # b holds it: its late ok is accepted and goes nowhere
            hub.handle(b, frames.Ack("x"))
            self.assertNotIn("unexpected_ok", [getattr(p, "code", None) for p in b.take()])
        hub.leave(b)
        self.assertTrue(hub.zero_state())

    def test_zero_state_after_everyone_leaves_mid_relay(self):
        peers = [FakePeer(profiles.RELAY) for _ in range(5)]
        hub = hub_with(*peers, seed=9)
        for i, peer in enumerate(peers * 4):
            hub.handle(peer, frames.Relay(f"t{i}"))
        for peer in peers:
            hub.leave(peer)
        self.assertTrue(hub.zero_state())
        self.assertEqual(hub.snapshot().relays.pending, 0)
        self.assertTrue(hub.snapshot().zero_state)

    def test_http_waiter_with_nobody_to_relay_to_gets_no_recipient(self):
        hub = hub_with(FakePeer(profiles.CHAT, name="ann"))
        waiter = FakePeer()
        hub.relay(waiter, "x")
        self.assertEqual([p.code for p in waiter.take()], ["no_recipient"])
        self.assertEqual(hub.snapshot().relays.pending, 0)


class AckTimeoutTests(unittest.TestCase):
    """A target that does not ack in time: its deliveries are drawn again elsewhere."""

    def setUp(self):
        self.acked: dict[FakePeer, list[str]] = {}

    def relays(self, peer) -> list[str]:
        """What ``peer`` was sent to relay since last asked; its acks are kept for `acks`."""
        pushes = peer.take()
        self.acked.setdefault(peer, []).extend(
            p.text for p in pushes if isinstance(p, frames.AckPush)
        )
        return [p.text for p in pushes if isinstance(p, frames.RelayPush)]

    def acks(self, peer) -> list[str]:
        self.relays(peer)
        return sorted(self.acked.pop(peer, []))

    def ack_all(self, hub, peer) -> list[str]:
        texts = self.relays(peer)
        for text in texts:
            hub.handle(peer, frames.Ack(text))
        return texts

    def test_an_unacked_delivery_is_drawn_again_and_the_silent_target_withdrawn(self):
        sender, silent = FakePeer(profiles.RELAY), FakePeer(profiles.RELAY)
        hub = hub_with(sender, silent, seed=1, ack_timeout=5)
        texts = [f"m{i}" for i in range(20)]
        for text in texts:
            hub.handle(sender, frames.Relay(text))
        to_silent = self.relays(silent)
        self.assertTrue(to_silent)
        self.ack_all(hub, sender)
        hub.clock.advance(4.9)
        self.assertEqual(self.relays(sender), [])  # not yet
        hub.clock.advance(0.1)
        self.assertEqual(sorted(self.ack_all(hub, sender)), sorted(to_silent))  # the only other
        self.assertEqual(hub.snapshot().relays.expired, len(to_silent))
        more = [f"n{i}" for i in range(20)]
        for text in more:  # the silent one is not drawn while it does not ack
            hub.handle(sender, frames.Relay(text))
        self.assertEqual(self.relays(silent), [])
        self.assertEqual(sorted(self.ack_all(hub, sender)), sorted(more))
        self.assertEqual(self.acks(sender), sorted(texts + more))
        # A late ok is taken without an error, tells nobody twice, and makes it a target again.
        hub.handle(silent, frames.Ack(to_silent[0]))
        self.assertEqual((silent.take(), self.acks(sender)), ([], []))
        for i in range(20):
            hub.handle(sender, frames.Relay(f"p{i}"))
        self.assertTrue(self.relays(silent))
        self.assertEqual(hub.snapshot().relays.unexpected_ok, 0)

    def test_an_expired_delivery_is_not_handed_back_again_when_its_target_leaves(self):
        sender, silent = FakePeer(profiles.RELAY), FakePeer(profiles.RELAY)
        hub = hub_with(sender, silent, seed=1, ack_timeout=5)
        for i in range(20):
            hub.handle(sender, frames.Relay(f"m{i}"))
        to_silent = self.relays(silent)
        self.ack_all(hub, sender)
        hub.clock.advance(5)
        self.assertEqual(hub.snapshot().relays.reforwarded, len(to_silent))
        hub.leave(silent)
        self.assertEqual(hub.snapshot().relays.reforwarded, len(to_silent))
        self.ack_all(hub, sender)
        self.assertEqual(len(self.acks(sender)), 20)
        hub.leave(sender)
        self.assertTrue(hub.zero_state())

    def test_idle_squatters_hold_a_relay_up_for_one_short_first_deadline_each(self):
        """90 idle targets (they never sent a byte) and one that acks: every relay of a
        fresh sender is acked within 15 s, as each squatter costs one first deadline (0.1 s)
        once, not ack_timeout."""
        squatters = [FakePeer(profiles.RELAY) for _ in range(90)]
        worker, sender = FakePeer(profiles.RELAY), FakePeer()
        hub = hub_with(worker, *squatters, seed=4, ack_timeout=5, first_ack_timeout=0.1)
        worker.bytes_in = len(b"message warm-up\n")  # it has said something
        for i in range(4):
            start = hub.clock.seconds()
            hub.relay(sender, f"try{i}")
            for _ in range(400):  # 20 s in steps of 0.05 s
                self.ack_all(hub, worker)
                if self.acks(sender):
                    break
                hub.clock.advance(0.05)
            self.assertLessEqual(hub.clock.seconds() - start, 15, f"try {i}")
        # The worker, having said something, has the full deadline: a slow ack is its own.
        hub.relay(sender, "slow")
        for _ in range(100):
            if self.relays(worker):
                break
            hub.clock.advance(0.05)
        hub.clock.advance(4.5)
        hub.handle(worker, frames.Ack("slow"))
        self.assertEqual(self.acks(sender), ["slow"])

    def test_a_lone_target_that_acks_slowly_keeps_its_first_delivery_to_the_full_deadline(self):
        slow, sender = FakePeer(profiles.RELAY), FakePeer()
        hub = hub_with(slow, ack_timeout=5, first_ack_timeout=0.5)
        hub.relay(sender, "x")
        self.assertEqual(self.relays(slow), ["x"])
        hub.clock.advance(4.9)
        self.assertEqual((self.relays(slow), sender.take()), ([], []))
        hub.handle(slow, frames.Ack("x"))
        self.assertEqual(self.acks(sender), ["x"])
        hub.relay(sender, "y")
        hub.clock.advance(5)  # past the full deadline: drawn again, and nobody is left
        self.assertEqual([p.code for p in sender.take()], ["no_recipient"])
        self.assertEqual(hub.snapshot().relays.expired, 1)

    def test_one_timer_at_most_and_none_once_every_delivery_is_acknowledged(self):
        """An acknowledged delivery is forgotten at once, not kept until its deadline."""
        a, b = FakePeer(profiles.RELAY), FakePeer(profiles.RELAY)
        hub = hub_with(a, b, ack_timeout=5)
        self.assertEqual(hub.clock.getDelayedCalls(), [])
        for i in range(50):
            hub.handle(a, frames.Relay(f"m{i}"))
            hub.clock.advance(0.01)
        self.assertEqual(len(hub.clock.getDelayedCalls()), 1)
        self.ack_all(hub, a)
        self.assertEqual(len(hub.clock.getDelayedCalls()), 1)
        self.ack_all(hub, b)
        self.assertEqual(hub.clock.getDelayedCalls(), [])
        hub.clock.advance(5)
        self.assertEqual(hub.snapshot().relays.expired, 0)

    def test_zero_means_a_target_has_as_long_as_it_stays(self):
        sender, silent = FakePeer(profiles.RELAY), FakePeer(profiles.RELAY)
        hub = hub_with(sender, silent, seed=1, ack_timeout=0)
        for i in range(20):
            hub.handle(sender, frames.Relay(f"m{i}"))
        self.assertTrue(self.relays(silent))
        hub.clock.advance(3600)
        self.assertEqual((hub.snapshot().relays.expired, hub.clock.getDelayedCalls()), (0, []))

    def test_across_instances_the_origin_draws_again(self):
        cluster = MemoryCluster()
        hubs = [
            Hub(Clock(), cluster.bus(name), HubConfig(ack_timeout=5), rng=random.Random(i))
            for i, name in enumerate(["i1", "i2"])
        ]
        sender, silent = FakePeer(profiles.RELAY), FakePeer(profiles.RELAY)
        hubs[0].join(sender)
        hubs[1].join(silent)
        for i in range(30):
            hubs[0].handle(sender, frames.Relay(f"m{i}"))
        to_silent = self.relays(silent)
        self.assertTrue(to_silent)
        self.ack_all(hubs[0], sender)
        hubs[1].clock.advance(5)  # the deadline runs where the target is
        self.assertEqual(sorted(self.ack_all(hubs[0], sender)), sorted(to_silent))
        self.assertEqual(self.acks(sender), sorted(f"m{i}" for i in range(30)))


class ClusterRelayTests(unittest.TestCase):
    def setUp(self):
        self.cluster = MemoryCluster()
        self.hubs = [
            Hub(Clock(), self.cluster.bus(name), HubConfig(max_pending=10**6), rng=random.Random(i))
            for i, name in enumerate(["i1", "i2", "i3"])
        ]

    def test_relay_and_ack_across_instances(self):
        a, b = FakePeer(profiles.RELAY), FakePeer(profiles.RELAY)
        self.hubs[0].join(a)
        self.hubs[1].join(b)
        for i in range(30):
            self.hubs[0].handle(a, frames.Relay(f"m{i}"))
        remote = relays_to(b)
        self.assertTrue(remote)
        for text in remote:
            self.hubs[1].handle(b, frames.Ack(text))
        self.assertEqual(sorted(acks_to(a)), sorted(remote))

    def test_an_ok_on_another_instance_answers_only_its_own_relay(self):
        victim, thief = FakePeer(), FakePeer(profiles.RELAY)
        recipient = FakePeer(profiles.RELAY)
        self.hubs[1].join(recipient)
        self.hubs[0].relay(victim, "same")  # recipient, the only target, holds it
        self.assertEqual(relays_to(recipient), ["same"])
        self.hubs[1].relays.registry.relay_capable.discard(recipient)  # (drawn no more)
        self.hubs[2].join(thief)
        self.hubs[0].relay(thief, "same")  # from i1, to the thief on i3
        self.assertEqual(relays_to(thief), ["same"])
        self.hubs[2].handle(thief, frames.Ack("same"))
        self.assertEqual((acks_to(thief), acks_to(victim)), (["same"], []))
        self.hubs[1].handle(recipient, frames.Ack("same"))
        self.assertEqual(acks_to(victim), ["same"])
        self.assertTrue(all(hub.relays.empty for hub in self.hubs))

    def test_targets_are_uniform_over_the_clusters_connections(self):
        # 1, 2 and 5 connections: picking an instance first would give each a third
        peers = []
        for hub, n in zip(self.hubs, (1, 2, 5), strict=True):
            for _ in range(n):
                peer = FakePeer(profiles.RELAY)
                hub.join(peer)
                peers.append(peer)
        for i in range(8000):
            self.hubs[0].handle(peers[0], frames.Relay(f"m{i}"))
        counts = [len(relays_to(p)) for p in peers]
        chi2 = sum((c - 1000) ** 2 / 1000 for c in counts)
        self.assertLess(chi2, 24.32, counts)  # 7 degrees of freedom, p=0.001

    def test_reforward_across_instances_when_the_recipient_leaves(self):
        a, b, c = (FakePeer(profiles.RELAY) for _ in range(3))
        self.hubs[0].join(a)
        self.hubs[1].join(b)
        self.hubs[2].join(c)
        for i in range(30):
            self.hubs[0].handle(a, frames.Relay(f"m{i}"))
        held = set(self.hubs[1].relays.held.get(b, {}))
        self.assertTrue(held)
        for peer in (a, c):
            peer.take()
        self.hubs[1].leave(b)
        again = set(relays_to(a)) | set(relays_to(c))
        self.assertEqual(again, held)
        self.assertTrue(self.hubs[1].zero_state())

    def test_chat_reaches_every_instance_once(self):
        listeners = [FakePeer(profiles.NEA) for _ in self.hubs]
        for hub, peer in zip(self.hubs, listeners, strict=True):
            hub.join(peer)
        self.hubs[1].handle(listeners[1], frames.Chat("hello"))
        self.hubs[2].broadcast("from the operator")
        for peer in listeners:
            self.assertEqual(
                peer.take(),
                [
                    frames.ChatPush(listeners[1].name, "hello"),
                    frames.BroadcastPush("from the operator"),
                ],
            )

    def test_status_lists_members(self):
        members = self.hubs[0].snapshot().cluster.members
        self.assertEqual([m.instance for m in members], ["i1", "i2", "i3"])


class WeightedPickTests(unittest.TestCase):
    def test_zero_weights_are_never_picked(self):
        rng = random.Random(0)
        picks = {weighted_pick({"a": 0, "b": 3, "c": 0}, rng) for _ in range(50)}
        self.assertEqual(picks, {"b"})
        self.assertIsNone(weighted_pick({"a": 0}, rng))
