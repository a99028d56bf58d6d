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
from nea.cluster.redisproto import Commands, RedisFactory, Subscriber

MESSAGES = (b"one", b"two", b"three" * 50, b"four")


def pubsub(*messages: bytes, channel: bytes = b"ch") -> bytes:
    """What Redis sends a subscriber for ``messages`` published on ``channel``."""
    return b"".join(
        b"*3\r\n$7\r\nmessage\r\n$%d\r\n%s\r\n$%d\r\n%s\r\n" % (len(channel), channel, len(m), m)
        for m in messages
    )


def bulk(value: bytes) -> bytes:
    return b"$%d\r\n%s\r\n" % (len(value), value)


def connected(kind, dbid=None, on_message=None, factory=None):
    """A protocol built by the factory, on a StringTransport; (protocol, transport)."""
    factory = factory or RedisFactory(kind, dbid, on_message)
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
    def test_every_message_of_a_read_is_delivered_in_that_read(self):
        received = []
        subscriber, _ = connected(
            Subscriber, on_message=lambda ch, data: received.append((ch, data))
        )
        subscriber.dataReceived(pubsub(*MESSAGES))
        self.assertEqual(received, [("ch", m.decode()) for m in MESSAGES])
        self.assertNoGlobalTimers()

    def test_reads_cut_anywhere(self):
        received = []
        subscriber, _ = connected(Subscriber, on_message=lambda ch, data: received.append(data))
        data = pubsub(*MESSAGES)
        for cut in range(0, len(data), 7):
            subscriber.dataReceived(data[cut : cut + 7])
        self.assertEqual(received, [m.decode() for m in MESSAGES])
        self.assertNoGlobalTimers()

    def test_every_reply_of_a_read_is_delivered_in_that_read(self):
        commands, transport = connected(Commands)
        replies = [commands.get(key) for key in ("a", "b", "c")]
        self.assertIn(b"GET", transport.value())
        commands.dataReceived(bulk(b"x" * 100) + b"$-1\r\n" + bulk(b"z"))
        self.assertEqual([self.successResultOf(d) for d in replies], ["x" * 100, None, "z"])
        self.assertNoGlobalTimers()

    def test_the_library_still_defers_the_rest_of_a_read(self):
        # If this fails, txredisapi parses whole reads by itself: WholeReads can go.
        received = []
        plain = txredisapi.SubscriberProtocol()
        plain.messageReceived = lambda pattern, channel, message: received.append(message)
        clock = Clock()
        deferrals = []

        def later(delay, f, *args):  # where it re-feeds: kept off the global reactor
            deferrals.append(delay)
            return clock.callLater(delay, f, *args)

        plain.callLater = later
        plain.makeConnection(StringTransport())
        plain.dataReceived(pubsub(*MESSAGES))
        self.assertLess(len(received), len(MESSAGES))
        clock.advance(0)
        self.assertEqual(len(received), len(MESSAGES))
        # A turn after each bulk string but the read's last: three a message.
        self.assertEqual(len(deferrals), 3 * len(MESSAGES) - 1)

    def test_the_hooks_it_overrides_are_still_there(self):
        for kind in (txredisapi.RedisProtocol, txredisapi.SubscriberProtocol):
            self.assertEqual(str(inspect.signature(kind.setLineMode)), "(self, extra=b'')", kind)
            self.assertEqual(
                str(inspect.signature(kind.dataReceived)), "(self, data, unpause=False)", kind
            )
            self.assertIn("line_mode", vars(txredisapi.LineReceiver))
        self.assertEqual(
            list(inspect.signature(txredisapi.SubscriberProtocol.messageReceived).parameters),
            ["self", "pattern", "channel", "message"],
        )
        # The parser hands the rest of a read to setLineMode, which WholeReads keeps.
        self.assertIn(
            "self.setLineMode(extra=rest)",
            inspect.getsource(txredisapi.BaseRedisProtocol.rawDataReceived),
        )


class TimersTests(GlobalReactorUntouched, unittest.TestCase):
    def test_a_command_without_reply_starts_no_timer(self):
        # The link times every wait on its own reactor (tests/test_cluster_link.py).
        commands, _ = connected(Commands)
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
        commands, _ = connected(Commands)
        self.assertEqual((commands.charset, commands.convertNumbers), ("utf-8", False))


class FactoryTests(GlobalReactorUntouched, unittest.TestCase):
    def test_select_selects_then_connected(self):
        commands, transport = connected(Commands, dbid=3)
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
        commands, transport = connected(Commands, dbid=99)
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
        factory = RedisFactory(Commands, None)
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
