"""Stopping: the paced drain on a Clock, and SIGTERM's clean exit under twist and twistd.

A stopping instance tells its clients ``shutting_down`` and closes them in batches
spread over ``--drain-timeout``, so that behind a load balancer they do not all
reconnect to the other instances in the same instant; the process then exits 0.
"""

import collections
import random
from pathlib import Path

from twisted.internet import defer, error
from twisted.internet.task import Clock
from twisted.python.usage import UsageError
from twisted.trial import unittest

from nea.core.bus import LocalBus
from nea.core.hub import Hub, HubConfig
from nea.core.testing import FakePeer
from nea.server.service import DRAIN_GRACE, InstanceService
from nea.wire import frames, profiles
from tests import infra
from tests.support import WAIT, connect, daemon_command, daemon_env, parse_options, twistd_command

#: Clock steps while a drain is watched: finer than its batches.
STEP = 0.01


class LeavingPeer(FakePeer):
    """A client that goes as soon as it is closed, noting when (on ``clock``)."""

    def __init__(self, hub: Hub, clock: Clock) -> None:
        super().__init__(profiles.RELAY)
        self.hub = hub
        self.clock = clock
        self.closed_at: float | None = None

    def close(self) -> None:
        super().close()
        self.closed_at = self.clock.seconds()
        self.hub.leave(self)


def busiest(times: list[float], window: float) -> int:
    """The most of ``times`` in any half-open interval ``window`` long."""
    times = sorted(times)
    most, first = 0, 0
    for last, t in enumerate(times):
        while times[first] <= t - window:
            first += 1
        most = max(most, last - first + 1)
    return most


class PacedDrain(unittest.TestCase):
    def setUp(self):
        self.clock = Clock()
        self.hub = Hub(self.clock, LocalBus("unit"), HubConfig(max_clients=1000), random.Random(0))

    def stop(self, drain_timeout: float) -> defer.Deferred:
        return InstanceService(self.hub, self.clock, drain_timeout).stopService()

    def join(self, count: int) -> list[LeavingPeer]:
        peers = [LeavingPeer(self.hub, self.clock) for _ in range(count)]
        for peer in peers:
            self.assertTrue(self.hub.join(peer))
        return peers

    def run_clock(self, seconds: float) -> None:
        for _ in range(round(seconds / STEP)):
            self.clock.advance(STEP)

    def test_closes_are_spread_over_the_drain_timeout(self):
        peers = self.join(500)
        stopping = self.stop(5.0)
        self.assertTrue(self.hub.draining)
        self.run_clock(4.9)
        self.assertNoResult(stopping)
        self.run_clock(0.2)
        self.successResultOf(stopping)  # everyone went: the stop does not wait for the grace
        times = [peer.closed_at for peer in peers]
        self.assertNotIn(None, times)
        self.assertEqual({p.pushes[-1].code for p in peers}, {"shutting_down"})
        self.assertEqual(min(times), 0)
        self.assertGreater(max(times), 4.8)
        self.assertLessEqual(max(times), 5.0 + STEP)
        # A batch every tenth of a second, of 10 or 11 clients; in any half second a
        # tenth of them, give or take one batch (the clock is stepped, not exact).
        batches = collections.Counter(times)
        self.assertGreaterEqual(len(batches), 45)
        self.assertLessEqual(max(batches.values()), 11)
        self.assertLessEqual(busiest(times, 0.5), 500 // 10 + 11)
        self.assertFalse([p for p in peers if p.aborted])

    def test_zero_closes_everyone_at_once(self):
        peers = self.join(100)
        stopping = self.stop(0)
        self.successResultOf(stopping)
        self.assertEqual({p.closed_at for p in peers}, {0})
        self.assertEqual({p.pushes[-1].code for p in peers}, {"shutting_down"})

    def test_newcomers_during_the_drain_are_refused(self):
        self.join(10)
        self.stop(5.0)
        self.clock.advance(1.0)
        late = FakePeer(profiles.RELAY)
        self.assertFalse(self.hub.join(late))
        self.assertEqual([p.code for p in late.take()], ["shutting_down"])
        self.assertTrue(late.closed)

    def test_clients_that_leave_on_their_own_do_not_hurry_the_others(self):
        peers = self.join(100)
        stopping = self.stop(5.0)
        leavers = [p for p in peers if p.closed_at is None][:50]  # they go at once, untold
        for peer in leavers:
            self.hub.leave(peer)
        self.run_clock(5.1)
        self.successResultOf(stopping)
        told = [p.closed_at for p in peers if p not in leavers]
        self.assertNotIn(None, told)
        self.assertEqual([p.lines for p in leavers], [[]] * 50)
        self.assertGreater(max(told), 4.0)  # still spread over the whole drain
        self.assertLessEqual(busiest(told, 0.5), 10 + 2)

    def test_whoever_is_still_connected_at_the_end_is_dropped(self):
        stuck = [FakePeer(profiles.RELAY) for _ in range(10)]  # told, never finish closing
        for peer in stuck:
            self.hub.join(peer)
        stopping = self.stop(5.0)
        self.run_clock(4.6)
        self.assertTrue(all(p.closed for p in stuck))  # the last at 4.5 s
        self.run_clock(5.4 - 4.6)
        self.assertNoResult(stopping)  # the last told still has its grace second
        self.assertFalse([p for p in stuck if p.aborted])
        self.run_clock(0.2)
        self.successResultOf(stopping)
        self.assertTrue(all(p.aborted for p in stuck))

    def test_zero_still_gives_the_told_a_grace_to_go(self):
        stuck = FakePeer(profiles.RELAY)
        self.hub.join(stuck)
        stopping = self.stop(0)
        self.assertTrue(stuck.closed)
        self.run_clock(DRAIN_GRACE - 0.1)
        self.assertNoResult(stopping)
        self.run_clock(0.2)
        self.successResultOf(stopping)
        self.assertTrue(stuck.aborted)


class DrainOption(unittest.TestCase):
    def test_zero_is_accepted_and_negative_refused(self):
        self.assertEqual(parse_options("--drain-timeout", "0")["drain-timeout"], 0)
        self.assertEqual(parse_options()["drain-timeout"], 5.0)
        with self.assertRaises(UsageError):
            parse_options("--drain-timeout", "-1")


class SigtermExit(unittest.TestCase):
    """SIGTERM to a real daemon: its client is told ``shutting_down``, the exit status is 0."""

    timeout = 6 * WAIT

    @defer.inlineCallbacks
    def assert_clean_stop(self, command):
        port = infra.free_port()
        cwd = Path(self.mktemp())
        cwd.mkdir()
        program = infra.Program(
            command("--http", "none", "--listen", f"tcp:{port}:interface=127.0.0.1"),
            daemon_env(),
            cwd=str(cwd),
        )
        program.start()
        self.addCleanup(program.kill)
        ended = []
        program.watcher.ended.addCallback(ended.append)
        yield infra.wait_listening(program, port, timeout=3 * WAIT)
        client = yield connect(self, port, tls=False)
        client.send('{"type":"hello"}')
        yield client.next_push()  # welcome: the client is registered
        program.signal("TERM")
        goodbye = yield client.next_push()
        self.assertEqual(goodbye, frames.ErrorReply("shutting_down", "the server is shutting down"))
        yield client.closed
        yield infra.watch(program.watcher.ended, 2 * WAIT)
        [reason] = ended
        self.assertIsInstance(reason, error.ProcessDone, program.output)
        self.assertEqual((reason.exitCode, reason.signal), (0, None), program.output)
        self.assertIn("Received SIGTERM: draining, then exiting", program.output)
        self.assertNotIn("Traceback", program.output)

    def test_twist(self):
        return self.assert_clean_stop(daemon_command)

    def test_twistd(self):
        return self.assert_clean_stop(twistd_command)
