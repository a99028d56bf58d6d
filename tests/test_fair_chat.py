"""Chat costs its fan-out, and the history store pushes back: one chatter cannot get
the readers dropped, and no line is lost or silently left unsaved.

Connections on StringTransport and a Clock, then a WebSocket client of a real server.
"""

import random

from twisted.internet import defer
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.trial import unittest

from nea.core.bus import LocalBus
from nea.core.hub import Hub, HubConfig
from nea.server.connection import ConnectionLimits, NeaConnection
from nea.server.history import StoreHistory
from nea.store.testing import GatedStore
from nea.store.writer import StoreWriter
from nea.wire import codec, frames, profiles
from tests.support import start_server, ws_listen
from tests.test_websocket import ws_connect

LINE = 1000  # bytes of text in each chat line


def chat_line(n: int) -> bytes:
    return f"chat {n:04d} {'x' * (LINE - 10)}\n".encode()


class Reader:
    """A chat client that reads at a steady pace: its socket buffer (``window`` bytes)
    is emptied every ``every`` seconds, and is full in between."""

    def __init__(self, hub, window: int, every: float) -> None:
        self.connection = NeaConnection(hub, profiles.NEA, ConnectionLimits(2048, window))
        self.transport = StringTransport()
        self.connection.makeConnection(self.transport)
        self.connection.pauseProducing()
        self.clock = hub.clock
        self.every = every
        self.texts: list[str] = []

    def run(self, seconds: float) -> None:
        for _ in range(round(seconds / self.every)):  # bounded: the clock is the test's
            self.clock.advance(self.every)
            self.read()

    def read(self) -> None:
        for line in self.transport.value().splitlines():
            push = codec.decode_push(line)
            if isinstance(push, frames.ChatPush):
                self.texts.append(push.text)
        self.transport.clear()
        self.connection.resumeProducing()  # it read what was there...
        self.connection.pauseProducing()  # ...and its buffer fills again

    @property
    def dropped(self) -> bool:
        return self.transport.disconnecting or self.connection.closing


def hub_with(history=None) -> Hub:
    return Hub(Clock(), LocalBus("unit"), HubConfig(), random.Random(0), history=history)


def chatter(hub, limits: ConnectionLimits):
    connection = NeaConnection(hub, profiles.NEA, limits)
    transport = StringTransport()
    connection.makeConnection(transport)
    return connection, transport


class ChatRate(unittest.TestCase):
    def test_a_chatter_is_slowed_down_and_a_steady_reader_keeps_up(self):
        hub = hub_with()
        reader = Reader(hub, window=16 * 1024, every=0.25)  # 64 KB/s
        talker, transport = chatter(
            hub,
            ConnectionLimits(2048, 1024 * 1024, max_rate=1000, chat_rate=10, chat_bytes_rate=8192),
        )
        talker.dataReceived(b"".join(chat_line(n) for n in range(200)))  # 200 KB in one write
        self.assertEqual(transport.producerState, "paused")  # not read until the lines fit
        reader.read()
        reader.run(30)  # 200 lines at 8 lines (8 KB) a second, the burst first
        self.assertFalse(reader.dropped)
        self.assertEqual([text[:4] for text in reader.texts], [f"{n:04d}" for n in range(200)])
        self.assertEqual(transport.producerState, "producing")
        self.assertFalse(transport.disconnecting)
        self.assertEqual(hub.snapshot().errors, {})
        self.assertGreater(hub.snapshot().throttled, 0)

    def test_without_a_chat_rate_the_same_reader_is_dropped(self):
        """What the rate prevents: the line rate alone lets the chatter through."""
        hub = hub_with()
        reader = Reader(hub, window=16 * 1024, every=0.25)
        talker, _ = chatter(
            hub, ConnectionLimits(2048, 1024 * 1024, max_rate=1000, chat_rate=0, chat_bytes_rate=0)
        )
        talker.dataReceived(b"".join(chat_line(n) for n in range(200)))
        self.assertTrue(reader.dropped)
        self.assertEqual(hub.snapshot().errors, {"slow_consumer": 1})

    def test_the_bytes_rate_holds_long_lines_back_and_any_line_fits_once(self):
        hub = hub_with()
        talker, transport = chatter(
            hub, ConnectionLimits(8192, 1024 * 1024, max_rate=0, chat_rate=0, chat_bytes_rate=1000)
        )
        big = b"chat " + b"y" * 8000 + b"\n"  # larger than two seconds' worth
        talker.dataReceived(big + big)
        hub.clock.advance(0)  # the end of the turn: what it pushed is written
        pushes = [codec.decode_push(line) for line in transport.value().splitlines()]
        self.assertEqual(len(pushes), 1)
        transport.clear()
        hub.clock.advance(7.8)  # 8,005 bytes less the 187 left over, at 1,000 a second
        self.assertEqual(transport.value(), b"")
        hub.clock.advance(0.1)
        self.assertEqual(len(transport.value().splitlines()), 1)

    @defer.inlineCallbacks
    def test_on_websocket_too(self):
        service = yield start_server(
            self, "--listen", ws_listen(), "--chat-rate", "25", "--chat-bytes-rate", "0"
        )
        ws = yield ws_connect(self, service.ports[0])
        count = 100  # 50 past the burst: at 25 a second, said over 2 s
        for i in range(count):
            ws.send_json("chat", f"{i:04d}")
        said = []
        while len(said) < count:  # one chat push per line said: bounded by ws.next's timeout
            frame = yield ws.next()
            if frame["type"] == "chat":
                said.append(frame["payload"]["text"])
        self.assertEqual(said, [f"{i:04d}" for i in range(count)])
        self.assertGreater(service.hub.snapshot().throttled, 0)
        self.assertEqual(service.hub.snapshot().errors, {})


class StorePushesBack(unittest.TestCase):
    """3,000 lines of 1,100 bytes in one write against a store that stops answering."""

    def setUp(self):
        self.store = GatedStore()
        clock = Clock()
        self.writer = StoreWriter(self.store, clock)
        self.hub = Hub(
            clock,
            LocalBus("unit"),
            HubConfig(),
            random.Random(0),
            history=StoreHistory(self.store, self.writer, clock),
        )
        # Readers with the default bound (1 MiB): a store that gave way would flush more.
        self.readers = [Reader(self.hub, window=1024 * 1024, every=0.1) for _ in range(5)]
        self.talker, self.transport = chatter(
            self.hub,
            ConnectionLimits(2048, 1024 * 1024, max_rate=0, chat_rate=0, chat_bytes_rate=0),
        )

    def test_chatters_wait_for_the_store_and_every_line_is_stored(self):
        self.store.hold = True
        self.talker.dataReceived(
            b"".join(chat_line(n)[:-1] + b"x" * 100 + b"\n" for n in range(3000))
        )
        status = self.writer.status
        self.assertTrue(status.pushing_back)
        self.assertEqual(status.state, "ok")
        self.assertLess(status.queued, 300)  # the byte bound: 256 KiB of lines
        self.assertEqual(self.transport.producerState, "paused")
        for _ in range(100):  # bounded; the store answers a batch per tenth of a second
            self.store.release()
            for reader in self.readers:
                reader.run(0.1)
            if self.writer.status.stored == 3000:
                break
        self.assertEqual(self.writer.status.stored, 3000)
        self.assertEqual(self.writer.status.unsaved, 0)
        for reader in self.readers:
            self.assertFalse(reader.dropped)
            reader.read()
            self.assertEqual([t[:4] for t in reader.texts], [f"{n:04d}" for n in range(3000)])
        self.assertFalse(self.writer.status.pushing_back)
        self.assertEqual(self.transport.producerState, "producing")
        self.assertEqual(self.hub.snapshot().errors, {})

    def test_a_store_that_fails_releases_the_queue_and_the_chatter_goes_on(self):
        self.store.hold = True
        self.talker.dataReceived(b"".join(chat_line(n) for n in range(600)))
        self.assertTrue(self.writer.status.pushing_back)
        self.hub.clock.advance(2.0)  # the write's deadline: degraded
        status = self.writer.status
        self.assertEqual((status.state, status.pushing_back), ("degraded", False))
        self.assertEqual(self.transport.producerState, "producing")
        self.assertEqual(status.unsaved, 600)  # counted, each pushed without an id

    def test_a_line_that_comes_while_the_store_is_far_behind_is_refused_with_a_code(self):
        self.store.hold = True
        for n in range(2 * self.writer.bound):
            self.writer.write(self.store_line(n))
        self.assertTrue(self.writer.full)
        self.hub.handle(self.talker, frames.Chat("one more"))
        self.assertEqual(self.hub.snapshot().errors, {"history_busy": 1})
        self.hub.clock.advance(0)  # the end of the reactor turn: held writes go out
        self.assertIn(b"error history_busy", self.transport.value())

    @staticmethod
    def store_line(n: int):
        from nea.store.lines import Kind, Line

        return Line.at(0.0, Kind.BROADCAST, None, f"queued {n}")
