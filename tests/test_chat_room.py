"""The chat profile's room and chat history, on the hub with a real writer over an
in-memory store (a `GatedStore` to take it down), on a Clock."""

import random

from twisted.internet import defer
from twisted.internet.task import Clock
from twisted.trial import unittest

from nea.core.bus import LocalBus
from nea.core.hub import Hub, HubConfig
from nea.core.testing import FakePeer
from nea.server.history import Reopening, StoreHistory
from nea.store.lines import Kind, Line, StoreError
from nea.store.testing import GatedStore
from nea.store.writer import StoreWriter
from nea.wire import codec, frames, profiles
from nea.wire.frames import Encoding


def lines(peer: FakePeer) -> list[bytes]:
    got, peer.lines[:] = [line.rstrip(b"\n") for line in peer.lines], []
    return got


class RoomSetup:
    """A hub with a chat room over a real writer and a `GatedStore`."""

    def setUp(self):
        self.clock = Clock()
        self.clock.advance(1_700_000_000)
        self.store = GatedStore()
        self.writer = StoreWriter(Reopening(self.store, opened=False), self.clock)
        self.hub = Hub(
            self.clock,
            LocalBus("unit"),
            HubConfig(history_on_join=2),
            rng=random.Random(0),
            history=StoreHistory(self.writer.store, self.writer, self.clock),
        )

    def client(self, name: str | None = None, encoding: Encoding = Encoding.TEXT) -> FakePeer:
        """A chat-profile client, named by its first line when ``name`` is given."""
        peer = FakePeer(profiles.CHAT, encoding)
        self.hub.join(peer)
        if name is not None:
            self.say(peer, name)
        return peer

    def say(self, peer: FakePeer, line: str) -> None:
        grammar = peer.profile.naming if not peer.named else peer.profile
        self.hub.handle(peer, codec.decode_request(line.encode(), grammar))


class Room(RoomSetup, unittest.TestCase):
    def test_the_tutorial_transcript(self):
        ann = self.client()
        self.say(ann, "not a name")
        self.assertEqual(lines(ann)[0].split(b" ")[:2], [b"error", b"bad_nick"])
        self.say(ann, "")
        self.assertEqual(lines(ann)[0].split(b" ")[:2], [b"error", b"bad_nick"])
        self.say(ann, "ann")
        self.assertEqual(lines(ann), [b"* welcome ann"])
        bob = self.client("bob")
        self.assertEqual(lines(bob), [b"* welcome bob"])
        self.assertEqual(lines(ann), [b"* bob joined"])
        self.say(bob, "hello everyone")
        self.assertEqual(lines(ann), [b"bob: hello everyone"])
        self.assertEqual(lines(bob), [])  # not echoed
        self.say(ann, "nick x")  # in text every line after the name is chat
        self.assertEqual(lines(bob), [b"ann: nick x"])
        self.say(bob, "exit")
        self.assertEqual(lines(bob), [b"bye"])
        self.assertTrue(bob.closed)
        self.hub.leave(bob)
        self.assertEqual(lines(ann), [b"* bob left"])

    def test_a_newcomer_is_shown_the_last_lines_then_the_room_hears_it(self):
        ann = self.client("ann")
        for text in ("one", "two", "three"):
            self.say(ann, text)
        self.hub.broadcast("maintenance at noon")
        carl = self.client("carl")
        self.assertEqual(lines(carl), [b"* welcome carl", b"ann: three", b"* maintenance at noon"])
        web = self.client("web", Encoding.JSON)
        pushes = web.take()
        self.assertEqual(pushes[0], frames.NickReply("web"))
        self.assertEqual(
            [(p.id, p.kind, p.name, p.text) for p in pushes[1:3]],
            [(3, "chat", "ann", "three"), (4, "broadcast", None, "maintenance at noon")],
        )
        self.assertEqual(pushes[3], frames.HistoryEnd(4, False))
        self.assertEqual(pushes[1].time, "2023-11-14T22:13:20.000Z")
        self.assertEqual(lines(carl), [b"* web joined"])

    def test_lines_carry_the_store_id_and_since_recovers_exactly_the_missed(self):
        ann, web = self.client("ann"), self.client("web", Encoding.JSON)
        web.take()
        for n in range(5):
            self.say(ann, f"line {n}")
        said = web.take()
        self.assertEqual([p.id for p in said], [1, 2, 3, 4, 5])
        self.hub.handle(web, frames.Since(2))
        replayed = web.take()
        self.assertEqual([p.text for p in replayed[:-1]], ["line 2", "line 3", "line 4"])
        self.assertEqual(replayed[-1], frames.HistoryEnd(5, False))
        self.hub.handle(web, frames.Since(5))
        self.assertEqual(web.take(), [frames.HistoryEnd(5, False)])
        self.hub.handle(web, frames.History(2))
        self.assertEqual([getattr(p, "id", None) for p in web.take()], [4, 5, None])

    def test_since_says_when_there_is_more(self):
        ann, web = self.client("ann"), self.client("web", Encoding.JSON)
        for n in range(codec.MAX_REPLAY + 3):
            self.say(ann, f"{n}")
        web.take()
        self.hub.handle(web, frames.Since(1))
        replayed = web.take()
        self.assertEqual(len(replayed), codec.MAX_REPLAY + 1)
        self.assertEqual(replayed[-1], frames.HistoryEnd(codec.MAX_REPLAY + 1, True))
        self.hub.handle(web, frames.Since(codec.MAX_REPLAY + 1))
        self.assertEqual(
            [p.id for p in web.take()[:-1]], [codec.MAX_REPLAY + 2, codec.MAX_REPLAY + 3]
        )

    def test_a_store_that_is_down_degrades_history_not_chat(self):
        ann, web = self.client("ann"), self.client("web", Encoding.JSON)
        web.take()
        self.store.down = "connection refused"
        self.say(ann, "still here")
        (push,) = web.take()
        self.assertEqual((push.text, push.id), ("still here", None))
        store = self.hub.snapshot().store
        self.assertEqual(
            (store.state, store.unsaved, store.error), ("degraded", 1, "connection refused")
        )
        self.hub.handle(web, frames.Since(0))
        (error,) = web.take()
        self.assertEqual(error.code, "history_unavailable")
        self.store.down = None
        self.clock.advance(self.writer.backoff.initial)  # the probe
        self.say(ann, "back")
        (push,) = web.take()
        self.assertEqual((push.text, push.id), ("back", 1))
        self.assertEqual(self.hub.snapshot().store.state, "ok")

    def test_lines_said_while_join_history_is_read_are_neither_lost_nor_doubled(self):
        ann = self.client("ann")
        self.say(ann, "before")
        reads = []
        read = self.store.latest
        self.store.latest = lambda count: (
            reads.append(read(count))
            or reads[-1].addCallback(lambda got: held.addCallback(lambda _: got))
        )
        held = defer.Deferred()
        web = self.client("web", Encoding.JSON)
        self.say(ann, "during")  # stored as 2 while the newcomer's read (of 1) waits
        self.assertEqual(web.take(), [frames.NickReply("web")])
        held.callback(None)
        pushes = web.take()
        self.assertEqual(
            [(type(p).__name__, getattr(p, "id", None)) for p in pushes],
            [("HistoryLine", 1), ("HistoryEnd", None), ("ChatPush", 2)],
        )

    def test_a_join_history_read_late_holds_only_what_came_before_the_join(self):
        ann = self.client("ann")
        self.say(ann, "before")
        read, held = self.store.latest, defer.Deferred()
        # The read runs only when released: after the lines said meanwhile are stored.
        self.store.latest = lambda count: held.addCallback(lambda _: read(count))
        web = self.client("web")
        self.say(web, "mine, said early")  # stored as 2: never echoed to web
        self.say(ann, "during")  # stored as 3: reaches web once, live
        self.assertEqual(lines(web), [b"* welcome web"])
        held.callback(None)
        # The last 2 stored (2 and 3) came after the join: no join history is left, and
        # the one line of the others reaches web live, once.
        self.assertEqual(lines(web), [b"ann: during"])

    def test_one_history_read_at_a_time(self):
        web = self.client("web", Encoding.JSON)
        web.take()
        read, waiting = self.store.since, defer.Deferred()
        self.store.since = lambda last_id, limit: waiting.addCallback(
            lambda _: read(last_id, limit)
        )
        self.hub.handle(web, frames.Since(0))
        self.hub.handle(web, frames.Since(0))
        (error,) = web.take()
        self.assertEqual(error.code, "too_many_pending")
        waiting.callback(None)
        self.assertEqual(web.take(), [frames.HistoryEnd(0, False)])
        self.store.since = read
        self.hub.handle(web, frames.Since(0))  # the first is answered: the next may come
        self.assertEqual(web.take(), [frames.HistoryEnd(0, False)])

    def test_the_nea_profile_keeps_chat_and_nick(self):
        nea = FakePeer(profiles.NEA)
        self.hub.join(nea)
        ann = self.client("ann")
        lines(ann)
        self.hub.handle(nea, codec.decode_request(b"nick zed", profiles.NEA))
        self.hub.handle(nea, codec.decode_request(b"chat hi", profiles.NEA))
        self.assertEqual(lines(nea), [b"nick zed", b"chat zed: hi"])  # echoed, as before
        self.assertEqual(lines(ann), [b"zed: hi"])
        self.hub.handle(nea, codec.decode_request(b"history 5", profiles.NEA))
        (line, end) = lines(nea)
        self.assertTrue(line.startswith(b"history 1 2023-11-14T22:13:20.000Z zed: hi"))
        self.assertEqual(end, b"history_end 1 0")


class RecordingBus(LocalBus):
    """A single instance's bus that records what it was asked to publish."""

    def __init__(self) -> None:
        super().__init__("unit")
        self.published: list = []

    def publish(self, push) -> None:
        self.published.append(push)


class BusOutage(unittest.TestCase):
    """What the chat room does when the bus goes down and comes back (the Redis bus
    calls it so; tests/test_chat_cluster.py has it on a real Redis and PostgreSQL)."""

    def setUp(self):
        self.clock = Clock()
        self.clock.advance(1_700_000_000)
        self.store = GatedStore()
        self.writer = StoreWriter(self.store, self.clock)
        self.bus = RecordingBus()
        self.hub = Hub(
            self.clock,
            self.bus,
            HubConfig(history_on_join=0),
            rng=random.Random(0),
            history=StoreHistory(self.store, self.writer, self.clock),
        )
        self.ann = FakePeer(profiles.NEA, Encoding.JSON)
        self.hub.join(self.ann)
        self.chat = self.hub.chat

    def elsewhere(self, *texts: str) -> list:
        """Lines another instance stored; their pushes as the bus would bring them."""
        stored = self.store.keep(
            [Line.at(self.clock.seconds(), Kind.CHAT, "bob", text) for text in texts]
        )
        return [frames.ChatPush("bob", line.text, line.id) for line in stored]

    def heard(self) -> list:
        return [(p.id, p.text) for p in self.ann.take() if isinstance(p, frames.ChatPush)]

    def test_the_missed_lines_in_id_order_once_and_own_lines_published_again(self):
        (first,) = self.elsewhere("seen")
        self.chat.fan_out(first)
        self.chat.checkpoint()
        self.clock.advance(1)
        self.chat.checkpoint()
        self.clock.advance(1)
        self.hub.handle(self.ann, frames.Chat("said in a stall"))  # id 2: out, published
        missed = self.elsewhere("lost 1", "lost 2")
        self.chat.outage()
        self.hub.handle(self.ann, frames.Chat("said while down"))  # id 5
        self.assertEqual(
            self.heard(), [(1, "seen"), (2, "said in a stall"), (5, "said while down")]
        )
        self.bus.published.clear()
        self.chat.rejoined()
        self.assertEqual(self.heard(), [(3, "lost 1"), (4, "lost 2")])
        self.assertEqual(
            [p.text for p in self.bus.published], ["said in a stall", "said while down"]
        )  # for the others to catch up
        self.chat.fan_out(missed[1])  # it came through after all: not twice
        self.assertEqual(self.heard(), [])
        self.chat.rejoined()  # no outage since: nothing
        self.assertEqual(self.ann.take(), [])

    def test_live_lines_wait_for_the_catch_up_and_follow_it_in_order(self):
        self.chat.checkpoint()
        self.chat.outage()
        self.elsewhere("missed")
        missed = list(self.store.lines)
        reading = defer.Deferred()
        self.store.since = lambda last_id, limit: reading
        self.chat.rejoined()
        live = self.elsewhere("live")
        self.assertEqual(self.chat.fan_out(live[0]), 1)  # it will reach ann...
        self.assertEqual(self.heard(), [])  # ...after what was missed
        reading.callback(missed)
        self.assertEqual(self.heard(), [(1, "missed"), (2, "live")])

    def test_a_store_that_fails_the_catch_up_means_a_gap(self):
        self.chat.checkpoint()
        self.chat.outage()
        self.store.since = lambda last_id, limit: defer.fail(StoreError("gone"))
        self.chat.rejoined()
        (gap,) = [p for p in self.ann.take() if isinstance(p, frames.Gap)]
        self.assertEqual(gap.last_id, 0)

    def test_without_a_store_to_read_the_clients_are_told_of_the_gap(self):
        self.chat.checkpoint()
        self.clock.advance(5)
        self.chat.outage()
        self.store.down = "refused"
        self.hub.handle(self.ann, frames.Chat("unsaved"))  # the store degrades
        self.ann.take()
        self.clock.advance(20)
        self.chat.rejoined()
        self.assertEqual(
            [p for p in self.ann.take() if not isinstance(p, frames.DatePush)],
            [frames.Gap("2023-11-14T22:13:20.000Z", "2023-11-14T22:13:45.000Z", 0)],
        )

    def test_lines_said_here_are_kept_for_publishing_again_only_since_the_older_mark(self):
        self.hub.handle(self.ann, frames.Chat("old"))
        self.clock.advance(1)
        self.chat.checkpoint()
        self.hub.handle(self.ann, frames.Chat("between"))
        self.clock.advance(1)
        self.chat.checkpoint()  # "old" was said before the older mark: everyone has it
        self.chat.outage()
        self.bus.published.clear()
        self.chat.rejoined()
        self.assertEqual([p.text for p in self.bus.published], ["between"])


class EndOfInput(RoomSetup, unittest.TestCase):
    """A client that ended its stream is closed only once every answer it is owed is out."""

    def hold_reads(self) -> defer.Deferred:
        """Hold every store read until the returned Deferred fires."""
        held = defer.Deferred()
        for name in ("latest", "since"):
            read = getattr(self.store, name)
            setattr(
                self.store,
                name,
                lambda *args, read=read: held.addCallback(lambda _: None).addCallback(
                    lambda _: read(*args)
                ),
            )
        return held

    def test_a_history_read_is_written_before_the_close(self):
        ann = self.client("ann")
        self.say(ann, "one")
        reader = FakePeer(profiles.NEA)
        self.hub.join(reader)
        held = self.hold_reads()
        self.hub.handle(reader, codec.decode_request(b"history 1", profiles.NEA))
        self.hub.input_ended(reader)
        self.assertFalse(reader.closed)
        held.callback(None)
        pushes = reader.take()
        self.assertEqual([type(p).__name__ for p in pushes], ["HistoryLine", "HistoryEnd"])
        self.assertEqual(pushes[0].text, "one")
        self.assertTrue(reader.closed)

    def test_a_named_chatter_that_leaves_at_once_is_heard_in_order(self):
        """``printf 'kay\\nhello\\n' | nc -N``: its join history, then joined, hello, left."""
        ann = self.client("ann")
        self.say(ann, "before")
        lines(ann)
        held = self.hold_reads()
        kay = self.client("kay")
        self.say(kay, "hello")
        self.hub.input_ended(kay)
        self.assertFalse(kay.closed)
        held.callback(None)
        self.assertEqual(lines(kay), [b"* welcome kay", b"ann: before"])
        self.assertEqual(lines(ann), [b"kay: hello", b"* kay joined", b"* kay left"])
        self.assertTrue(kay.closed)

    def test_its_own_chat_line_is_echoed_before_the_close(self):
        self.store.hold = True
        web = FakePeer(profiles.NEA)
        self.hub.join(web)
        self.hub.handle(web, codec.decode_request(b"chat hi", profiles.NEA))
        self.hub.input_ended(web)
        self.assertFalse(web.closed)
        self.store.release()
        self.assertEqual([p.text for p in web.take()], ["hi"])
        self.assertTrue(web.closed)

    def test_a_client_owed_nothing_closes_at_once(self):
        web = FakePeer(profiles.NEA)
        self.hub.join(web)
        self.hub.handle(web, codec.decode_request(b"abc", profiles.NEA))
        self.hub.input_ended(web)
        self.assertEqual(web.take(), [frames.ReverseReply("cba")])
        self.assertTrue(web.closed)
