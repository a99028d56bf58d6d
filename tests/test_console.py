"""--console: lines typed on stdin become operator broadcasts."""

import random

from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.trial import unittest

from nea.core.bus import LocalBus
from nea.core.hub import Hub
from nea.core.testing import FakePeer
from nea.server.console import ConsoleProtocol
from nea.wire import frames, profiles
from nea.wire.frames import Encoding


class ConsoleTests(unittest.TestCase):
    def test_typed_lines_are_broadcast(self):
        hub = Hub(Clock(), LocalBus("unit"), rng=random.Random(0))
        listeners = [FakePeer(profiles.CHAT, Encoding.JSON, name="ann") for _ in range(2)]
        relay_only = FakePeer(profiles.RELAY)
        for peer in listeners + [relay_only]:
            hub.join(peer)
        console = ConsoleProtocol(hub)
        terminal = StringTransport()
        console.makeConnection(terminal)
        console.dataReceived(b"maintenance at noon\r\n\n")
        for peer in listeners:
            self.assertEqual(peer.take(), [frames.BroadcastPush("maintenance at noon")])
        self.assertEqual(relay_only.take(), [])
        self.assertEqual(terminal.value(), b"[broadcast to 2 local clients]\n")
        self.assertEqual(hub.snapshot().chat.broadcasts, 1)
