"""The reconnect schedule (`nea.wire.backoff.Backoff`): growth, cap, jitter, the prompt delay.

Its users (nea-client's redialer, nea-loadtest's client, the cluster link) are
tested for when they call it, in their own modules; what it answers is tested here.
"""

import random

from twisted.trial import unittest

from nea.wire.backoff import Backoff

SEEDS = range(200)


class GrowthTests(unittest.TestCase):
    def test_grows_by_the_factor_then_stays_at_the_cap(self):
        backoff = Backoff(initial=0.5, factor=2.0, maximum=3.0, jitter=0.0)
        rng = random.Random(1)
        self.assertEqual([backoff.delay(n, rng) for n in range(6)], [0.5, 1.0, 2.0, 3.0, 3.0, 3.0])

    def test_another_factor(self):
        backoff = Backoff(initial=1.0, factor=3.0, maximum=100.0, jitter=0.0)
        self.assertEqual([backoff.ceiling(n) for n in range(6)], [1.0, 3.0, 9.0, 27.0, 81.0, 100.0])

    def test_factor_one_is_a_constant_delay(self):
        backoff = Backoff(initial=2.0, factor=1.0, maximum=5.0, jitter=0.0)
        self.assertEqual({backoff.ceiling(n) for n in (0, 1, 10, 10**6)}, {2.0})

    def test_huge_attempt_numbers_stay_capped(self):
        self.assertEqual(Backoff(maximum=30.0).ceiling(10**6), 30.0)

    def test_the_schedules_nea_uses(self):
        # The cluster link: the heartbeat interval doubled per failure, capped at 5 s.
        link = Backoff(initial=1.0, maximum=5.0, jitter=0.0)
        self.assertEqual([link.ceiling(n) for n in range(5)], [1.0, 2.0, 4.0, 5.0, 5.0])
        # nea-loadtest: 0.1 s doubled per retry, capped at 2 s.
        loadtest = Backoff(initial=0.1, maximum=2.0)
        self.assertEqual(
            [round(loadtest.ceiling(n), 9) for n in range(7)], [0.1, 0.2, 0.4, 0.8, 1.6, 2.0, 2.0]
        )


class JitterTests(unittest.TestCase):
    def test_jitter_stays_within_bounds_and_spreads_over_them(self):
        for jitter in (0.0, 0.25, 0.5, 1.0):
            backoff = Backoff(initial=1.0, factor=2.0, maximum=8.0, jitter=jitter)
            for attempt in (0, 1, 2, 3, 10):
                ceiling = backoff.ceiling(attempt)
                delays = [backoff.delay(attempt, random.Random(seed)) for seed in SEEDS]
                low = ceiling * (1 - jitter)
                self.assertTrue(all(low <= d <= ceiling for d in delays), (jitter, attempt))
                if jitter:
                    self.assertGreater(len(set(delays)), len(SEEDS) * 0.9)
                    # Spread over the whole range, not bunched at one end.
                    span = ceiling - low
                    self.assertLess(min(delays), low + span * 0.1)
                    self.assertGreater(max(delays), ceiling - span * 0.1)
                else:
                    self.assertEqual(set(delays), {ceiling})

    def test_jitter_never_exceeds_the_cap(self):
        backoff = Backoff(initial=0.3, maximum=1.0, jitter=0.5)
        rng = random.Random(5)
        self.assertLessEqual(max(backoff.delay(n, rng) for n in range(1000)), 1.0)

    def test_one_draw_per_delay(self):
        # So a client's delays are a function of its generator: reproducible from a seed.
        backoff = Backoff()
        rng, twin = random.Random(9), random.Random(9)
        delays = [backoff.delay(n, rng) for n in range(20)]
        twin_delays = [backoff.ceiling(n) * (1 - 0.5 * twin.random()) for n in range(20)]
        self.assertEqual(delays, twin_delays)


class PromptTests(unittest.TestCase):
    def test_the_prompt_delay_is_jittered_like_the_others(self):
        backoff = Backoff(prompt=1.0, jitter=0.5)
        delays = [backoff.prompt_delay(random.Random(seed)) for seed in SEEDS]
        self.assertTrue(all(0.5 <= d <= 1.0 for d in delays), delays)
        self.assertLess(min(delays), 0.55)
        self.assertGreater(max(delays), 0.95)

    def test_the_prompt_delay_never_exceeds_the_cap(self):
        backoff = Backoff(initial=0.05, maximum=0.3, jitter=0.0)
        self.assertEqual(backoff.prompt_ceiling, 0.3)
        self.assertEqual(backoff.prompt_delay(random.Random(1)), 0.3)


class ValidationTests(unittest.TestCase):
    def test_rejects_nonsense(self):
        for bad in (
            dict(initial=0),
            dict(initial=-1),
            dict(initial=5, maximum=1),
            dict(factor=0.5),
            dict(jitter=1.5),
            dict(jitter=-0.1),
            dict(prompt=0),
        ):
            self.assertRaises(ValueError, Backoff, **bad)

    def test_a_value(self):
        self.assertEqual(Backoff(initial=1.0), Backoff(initial=1.0))
        self.assertRaises(AttributeError, setattr, Backoff(), "initial", 2.0)
