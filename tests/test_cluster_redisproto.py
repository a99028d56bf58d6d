"""What `nea.cluster.redisproto` relies on in txredisapi, pinned down so that a new
txredisapi that changes it fails here, not under load in a cluster.

Each test names the workaround it guards; StringTransport connections, no Redis.
"""

import configparser
import importlib.metadata
import inspect
import re
from pathlib import Path

import txredisapi
from twisted.internet import reactor
from twisted.internet.error import ConnectionLost
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.logger import globalLogPublisher
from twisted.python.failure import Failure
from twisted.trial import unittest

from nea.cluster import redisproto
from nea.cluster.redisproto import RedisFactory

REPLIES = (b"one", b"two", b"three" * 50, b"four")


def bulk(value: bytes) -> bytes:
    return b"$%d\r\n%s\r\n" % (len(value), value)


def connected(dbid=None):
    """A protocol built by the factory, on a StringTransport; (protocol, transport)."""
    factory = RedisFactory(dbid)
    redis = factory.buildProtocol(None)
    transport = StringTransport()
    redis.makeConnection(transport)
    return redis, transport


class GlobalReactorUntouched:
    """Fails the test if the global reactor got a timer from txredisapi meanwhile."""

    def setUp(self):
        self.timers_before = set(reactor.getDelayedCalls())

    def assertNoGlobalTimers(self):
        self.assertEqual(set(reactor.getDelayedCalls()) - self.timers_before, set())


class WholeReadsTests(GlobalReactorUntouched, unittest.TestCase):
    def test_replies_cut_anywhere(self):
        commands, _ = connected()
        replies = [commands.get(str(n)) for n in range(len(REPLIES))]
        data = b"".join(bulk(r) for r in REPLIES)
        for cut in range(0, len(data), 7):
            commands.dataReceived(data[cut : cut + 7])
        self.assertEqual([self.successResultOf(d) for d in replies], [r.decode() for r in REPLIES])
        self.assertNoGlobalTimers()

    def test_every_reply_of_a_read_is_delivered_in_that_read(self):
        commands, transport = connected()
        replies = [commands.get(key) for key in ("a", "b", "c")]
        self.assertIn(b"GET", transport.value())
        commands.dataReceived(bulk(b"x" * 100) + b"$-1\r\n" + bulk(b"z"))
        self.assertEqual([self.successResultOf(d) for d in replies], ["x" * 100, None, "z"])
        self.assertNoGlobalTimers()

    def test_the_library_still_defers_the_rest_of_a_read(self):
        # If this fails, txredisapi parses whole reads by itself: WholeReads can go.
        plain = txredisapi.RedisProtocol(replyTimeout=None)
        clock = Clock()
        deferrals = []

        def later(delay, f, *args):  # where it re-feeds: kept off the global reactor
            deferrals.append(delay)
            return clock.callLater(delay, f, *args)

        plain.callLater = later
        plain.makeConnection(StringTransport())
        replies = [plain.get(str(n)) for n in range(len(REPLIES))]
        plain.dataReceived(b"".join(bulk(r) for r in REPLIES))
        self.assertLess(sum(d.called for d in replies), len(REPLIES))
        clock.advance(0)
        self.assertTrue(all(d.called for d in replies))
        # A turn after each reply but the read's last.
        self.assertEqual(len(deferrals), len(REPLIES) - 1)

    def test_the_hooks_it_overrides_are_still_there(self):
        kind = txredisapi.RedisProtocol
        self.assertEqual(str(inspect.signature(kind.setLineMode)), "(self, extra=b'')")
        self.assertEqual(str(inspect.signature(kind.dataReceived)), "(self, data, unpause=False)")
        self.assertIn("line_mode", vars(txredisapi.LineReceiver))
        # The parser hands the rest of a read to setLineMode, which WholeReads keeps.
        self.assertIn(
            "self.setLineMode(extra=rest)",
            inspect.getsource(txredisapi.BaseRedisProtocol.rawDataReceived),
        )


class TimersTests(GlobalReactorUntouched, unittest.TestCase):
    def test_a_command_without_reply_starts_no_timer(self):
        # The link times every wait on its own reactor (tests/test_cluster_link.py).
        commands, _ = connected()
        self.assertIsNone(commands.replyTimeout)
        reply = commands.publish("ch", "data")
        self.assertNoResult(reply)
        self.assertNoGlobalTimers()
        commands.connectionLost(Failure(ConnectionLost()))
        self.failureResultOf(reply, txredisapi.ConnectionError)

    def test_the_protocols_are_built_as_the_link_expects(self):
        signature = inspect.signature(txredisapi.BaseRedisProtocol.__init__)
        for name in ("charset", "replyTimeout", "dbid", "convertNumbers"):
            self.assertIn(name, signature.parameters)
        commands, _ = connected()
        self.assertEqual((commands.charset, commands.convertNumbers), ("utf-8", False))


class FactoryTests(GlobalReactorUntouched, unittest.TestCase):
    def test_select_selects_then_connected(self):
        commands, transport = connected(dbid=3)
        self.assertEqual(transport.value(), b"*2\r\n$6\r\nSELECT\r\n$1\r\n3\r\n")
        ready = commands.whenConnected()
        self.assertNoResult(ready)
        commands.dataReceived(b"+OK\r\n")
        self.assertIs(self.successResultOf(ready), commands)
        self.assertTrue(commands.connected)
        gone = commands.whenDisconnected()
        commands.connectionLost(Failure(ConnectionLost()))
        self.successResultOf(gone)
        self.assertFalse(commands.connected)

    def test_a_refused_select_is_reported_through_the_factory(self):
        events = []
        globalLogPublisher.addObserver(events.append)
        self.addCleanup(globalLogPublisher.removeObserver, events.append)
        commands, transport = connected(dbid=99)
        ready = commands.whenConnected()
        commands.dataReceived(b"-ERR DB index is out of range\r\n")
        self.assertTrue(transport.disconnecting)
        self.assertNoResult(ready)
        refused = [e for e in events if "refused the connection" in e.get("log_format", "")]
        self.assertEqual(len(refused), 1)
        self.assertIn("out of range", refused[0]["why"])
        self.assertNoGlobalTimers()

    def test_the_factory_offers_what_the_protocols_call(self):
        source = inspect.getsource(txredisapi.BaseRedisProtocol.connectionMade)
        used = set(re.findall(r"self\.factory\.(\w+)", source))
        self.assertEqual(used, {"stopTrying", "connectionError", "isLazy"})
        factory = RedisFactory(None)
        for name in used:
            self.assertTrue(hasattr(factory, name), name)
        self.assertIs(factory.isLazy, False)


class PinTests(unittest.TestCase):
    def test_the_checked_version_is_pinned_and_installed(self):
        setup = configparser.ConfigParser()
        setup.read(Path(__file__).parent.parent / "setup.cfg")
        pins = [
            line
            for line in setup["options"]["install_requires"].split("\n")
            if line.strip().startswith("txredisapi")
        ]
        self.assertEqual(len(pins), 1)
        pinned = re.fullmatch(r"txredisapi\s*==\s*([\d.]+)", pins[0].strip()).group(1)
        self.assertEqual(importlib.metadata.version("txredisapi"), pinned)
        # A new pin means checking the workarounds again, and saying so in their docstring.
        self.assertIn(f"Checked against txredisapi {pinned},", redisproto.__doc__)
