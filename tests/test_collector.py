"""The collector settings nea-server starts with (nea.server.collector)."""

import gc

from twisted.trial import unittest

from nea.server import collector


class CollectorTests(unittest.TestCase):
    def setUp(self):
        threshold = gc.get_threshold()
        self.addCleanup(gc.set_threshold, *threshold)

    def test_young_collections_are_rarer_and_the_older_ratios_kept(self):
        gc.set_threshold(700, 10, 10)
        collector.tune()
        self.assertEqual(gc.get_threshold(), (collector.YOUNG, 10, 10))

    def test_what_exists_at_start_is_never_scanned_again(self):
        self.addCleanup(gc.unfreeze)
        started = [[]]  # something alive when the instance has started (a tracked list)
        self.assertTrue(any(o is started for o in gc.get_objects()))
        collector.freeze_startup()
        self.assertGreater(gc.get_freeze_count(), 0)
        # Tracked still, but in no generation a collection scans:
        self.assertFalse(any(o is started for o in gc.get_objects()))
