import random

from hypothesis import given
from hypothesis import strategies as st
from twisted.trial import unittest

from nea.core.registry import IndexedSet, Registry
from nea.core.testing import FakePeer
from nea.wire import profiles


class IndexedSetTests(unittest.TestCase):
    @given(st.lists(st.tuples(st.booleans(), st.integers(0, 20)), max_size=100))
    def test_behaves_like_a_set(self, operations):
        indexed, model = IndexedSet(), set()
        for add, item in operations:
            if add:
                indexed.add(item)
                model.add(item)
            else:
                indexed.discard(item)
                model.discard(item)
            self.assertEqual(set(indexed), model)
            self.assertEqual(len(indexed), len(model))
        if model:
            self.assertIn(indexed.choice(random.Random(1)), model)

    def test_choice_reaches_every_member(self):
        members = IndexedSet()
        for i in range(5):
            members.add(i)
        rng = random.Random(7)
        self.assertEqual({members.choice(rng) for _ in range(200)}, set(range(5)))


class RegistryTests(unittest.TestCase):
    def test_admits_up_to_the_limit_and_counts_refusals(self):
        registry = Registry(max_clients=2)
        a, b, c = FakePeer(), FakePeer(), FakePeer()
        self.assertTrue(registry.admit(a))
        self.assertTrue(registry.admit(b))
        self.assertFalse(registry.admit(c))
        self.assertEqual(registry.refused_full, 1)
        self.assertNotIn(c, registry)
        registry.remove(a)
        self.assertTrue(registry.admit(c))

    def test_roles_follow_the_profile(self):
        registry = Registry(max_clients=10)
        nea, relay, chat = (
            FakePeer(p, name="ann") for p in (profiles.NEA, profiles.RELAY, profiles.CHAT)
        )
        for peer in (nea, relay, chat):
            registry.admit(peer)
        self.assertEqual(set(registry.relay_capable), {nea, relay})
        self.assertEqual(set(registry.date_subscribers), {nea})
        self.assertEqual(set(registry.chat_capable), {nea, chat})
        self.assertEqual(registry.by_profile(), {"nea": 1, "relay": 1, "chat": 1})
        registry.remove(relay)
        self.assertEqual(set(registry.relay_capable), {nea})
