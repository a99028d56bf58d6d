"""The lane decides ``message``, ``ok``, ``ask`` and ``reply`` lines as the general path
decides their request values: the same answers, pushes, counts and errors."""

import random

from hypothesis import event, given, settings
from hypothesis import strategies as st
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.trial import unittest

from nea.core.bus import LocalBus
from nea.core.hub import Hub, HubConfig
from nea.core.permissions import EVERYTHING, NOTHING, Permissions, Policy
from nea.server.connection import ConnectionLimits, NeaConnection
from nea.wire import codec, frames, profiles

#: Stands for the id of the last request pushed to the connection (its reply's id).
LAST_REQUEST = b"<last>"

#: Pieces the lines are made of: the lane's verbs, well formed or not, and what follows.
VERBS = [b"message ", b"ok ", b"ask ", b"reply ", b"message", b"ok", b"ask", b"mess", b"o"]
PIECES = [
    b"hi",
    b" ",
    b"a1",
    b"me",
    b"@svc",
    b"@nobody",
    b"ghost",
    LAST_REQUEST,
    b"\xc3\xa9",  # UTF-8 for e-acute
    b"\xff",  # never UTF-8
    b"\r",
    b"\t",
    b"x" * 70,  # longer than an id may be
    b"message",
]
#: Lines the lane takes (where the profile offers them), mixed in with the rest.
WELL_FORMED = [
    b"message hi",
    b"ok hi",
    b"ask a1 @svc body",
    b"ask a2 me body",
    b"ask a3 ghost body",
    b"reply " + LAST_REQUEST + b" yes",
    b"reply " + LAST_REQUEST + b"  two  spaces ",
    b"ask a4 @svc  spaced body ",
    b"message  spaced ",
    b"ok  spaced ",
]
lines = st.lists(
    st.one_of(
        st.sampled_from(WELL_FORMED),
        st.sampled_from(WELL_FORMED),  # (twice: two lines in three are well formed)
        st.tuples(st.sampled_from(VERBS), st.lists(st.sampled_from(PIECES), max_size=5)).map(
            lambda verb_rest: verb_rest[0] + b"".join(verb_rest[1])
        ),
    ),
    min_size=1,
    max_size=12,
)
policies = st.sampled_from(
    [
        EVERYTHING,
        NOTHING,
        Permissions(register=("*",), serve=("*",), ask=("me",), relay=True),
        Permissions(register=("*",), serve=("*",), ask=("@svc",)),
    ]
)


class Setup:
    """One hub and one line connection, alone: its relays and requests come back to it."""

    def __init__(self, profile, anonymous: Permissions) -> None:
        self.hub = Hub(
            Clock(),
            LocalBus("unit"),
            HubConfig(policy=Policy(anonymous=anonymous)),
            random.Random(0),
        )
        self.connection = NeaConnection(self.hub, profile, ConnectionLimits(max_rate=0))
        self.transport = StringTransport()
        self.connection.makeConnection(self.transport)
        self.written: list[bytes] = []
        self.hub.handle(self.connection, frames.Serve("svc"))
        self.hub.handle(self.connection, frames.Register("me"))
        self.turn()

    def turn(self) -> None:
        """End the reactor turn: what it pushed is written; keep it."""
        self.hub.clock.advance(0)
        self.written.extend(self.transport.value().splitlines())
        self.transport.clear()

    def resolved(self, line: bytes) -> bytes:
        requests = [w.split(b" ")[1] for w in self.written if w.startswith(b"request ")]
        return line.replace(LAST_REQUEST, requests[-1] if requests else b"r0")

    def state(self):
        snapshot = self.hub.snapshot()
        return (
            self.written,
            snapshot.requests,
            snapshot.errors,
            snapshot.relays,
            snapshot.addressed,
            snapshot.auth,
        )


class LaneTests(unittest.TestCase):
    @given(st.sampled_from([profiles.NEA, profiles.RELAY, profiles.CHAT]), policies, lines)
    @settings(max_examples=200, deadline=None)
    def test_the_lane_decides_as_the_general_path(self, profile, anonymous, sent):
        lane, general = Setup(profile, anonymous), Setup(profile, anonymous)
        split = codec.LineBuffer()  # as the connection splits them (a CR before LF goes)
        for line in sent:
            lane.connection.dataReceived(lane.resolved(line) + b"\n")
            lane.turn()
            for unit in split.feed(general.resolved(line) + b"\n"):
                request = codec.decode_request(unit, general.connection.grammar)
                general.hub.handle(general.connection, request)
            general.turn()
        self.assertEqual(lane.state(), general.state())
        # The lane took what it took instead of the general path, which took nothing.
        taken = sum(lane.hub.lane.counts().values())
        verbs = (frames.Relay, frames.Ack, frames.Ask, frames.Reply)
        decoded = sum(general.hub.snapshot().requests.get(kind.__name__, 0) for kind in verbs)
        self.assertLessEqual(taken, decoded)
        event(f"lines taken by the lane: {'some' if taken else 'none'}")
        self.assertEqual(sum(general.hub.lane.counts().values()), 0)

    def test_a_relay_and_a_request_on_the_lane_are_answered(self):
        setup = Setup(profiles.NEA, EVERYTHING)
        setup.connection.dataReceived(b"message hi\nask a1 @svc body\n")
        setup.turn()
        self.assertEqual(setup.written[-2:], [b"message hi", setup.written[-1]])
        rid = setup.written[-1].split(b" ")[1]
        self.assertEqual(setup.written[-1], b"request " + rid + b" body")
        setup.connection.dataReceived(b"ok hi\nreply " + rid + b" yes\n")
        setup.turn()
        self.assertEqual(setup.written[-2:], [b"ok hi", b"reply a1 yes"])
        self.assertEqual(
            setup.hub.lane.counts(),
            dict.fromkeys((frames.Relay, frames.Ack, frames.Ask, frames.Reply), 1),
        )
        self.assertTrue(setup.hub.relays.empty)
