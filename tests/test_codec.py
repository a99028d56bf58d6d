"""The pure codec: framing under any chunking, request grammar, push encodings."""

import json
import typing

import attrs
from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.trial import unittest

from nea.wire import codec, errors, forms, frames, profiles
from nea.wire.codec import FrameBuffer, LineBuffer, LineTooLong
from nea.wire.frames import Encoding

# Text that can travel inside one line: no line terminators.
line_text = st.text(
    st.characters(blacklist_categories=("Cs",), blacklist_characters="\r\n"), max_size=200
)
nonempty_text = line_text.filter(bool)
nick = st.from_regex(codec.NICK_PATTERN, fullmatch=True)
# Any JSON value, lone surrogates and deep nesting included.
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3)
    ),
    max_leaves=60,
) | st.integers(30, 200).map(lambda n: json.loads("[" * n + "]" * n))

# What a request or reply body may be: any JSON value nea accepts (finite, valid Unicode).
clean_text = st.text(st.characters(blacklist_categories=("Cs",)), max_size=20)
bodies = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | clean_text,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(clean_text, inner, max_size=3),
    max_leaves=20,
)
names = st.from_regex(codec.NAME_PATTERN, fullmatch=True)
ids = st.from_regex(codec.ID_PATTERN, fullmatch=True)
timeouts = st.none() | st.floats(min_value=0.001, max_value=codec.MAX_REQUEST_TIMEOUT)


def asks(body):
    """Asks to a name or to a service, with ``body`` as their body."""
    return st.one_of(
        st.builds(frames.Ask, ids, names, st.none(), body, timeouts),
        st.builds(frames.Ask, ids, st.none(), names, body, timeouts),
    )


def addressed_requests(body):
    return st.one_of(
        names.map(frames.Register),
        names.map(frames.Serve),
        names.map(frames.Unserve),
        st.builds(frames.Reply, ids, body),
        asks(body),
    )


def chunked(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({c % (len(data) + 1) for c in cuts})
    pieces, start = [], 0
    for point in points + [len(data)]:
        pieces.append(data[start:point])
        start = point
    return pieces


def feed_all(buffer: LineBuffer, pieces: list[bytes]) -> list[bytes]:
    return [line for piece in pieces for line in buffer.feed(piece)]


class LineBufferTests(unittest.TestCase):
    @given(
        st.lists(st.binary(max_size=50).map(lambda b: b.replace(b"\n", b"")), max_size=20),
        st.lists(st.integers(min_value=0, max_value=10_000), max_size=30),
        st.booleans(),
    )
    def test_any_chunking_yields_the_same_lines(self, lines, cuts, crlf):
        """A line split across reads, or many lines in one read: the same lines come out."""
        ending = b"\r\n" if crlf else b"\n"
        data = b"".join(line + ending for line in lines)
        # With LF endings a line's own trailing CR reads as a CRLF terminator.
        expected = [line[:-1] if not crlf and line.endswith(b"\r") else line for line in lines]
        got = feed_all(LineBuffer(max_length=100), chunked(data, cuts))
        self.assertEqual(got, expected)

    def test_crlf_split_between_reads(self):
        buffer = LineBuffer(max_length=5)
        self.assertEqual(list(buffer.feed(b"abcde\r")), [])
        self.assertEqual(list(buffer.feed(b"\nxy\n")), [b"abcde", b"xy"])

    def test_partial_line_is_kept(self):
        buffer = LineBuffer()
        self.assertEqual(list(buffer.feed(b"one\ntw")), [b"one"])
        self.assertEqual(buffer.pending, 2)
        self.assertEqual(list(buffer.feed(b"o\n")), [b"two"])

    @given(st.integers(min_value=1, max_value=300), st.lists(st.integers(0, 2000), max_size=10))
    def test_over_long_line_raises_after_earlier_lines(self, limit, cuts):
        data = b"ok\n" + b"x" * (limit + 2) + b"\nnever\n"
        buffer = LineBuffer(max_length=max(limit, 2))
        got = []
        with self.assertRaises(LineTooLong):
            for piece in chunked(data, cuts):
                for line in buffer.feed(piece):
                    got.append(line)
        self.assertEqual(got, [b"ok"])

    def test_unterminated_flood_raises_before_the_newline(self):
        buffer = LineBuffer(max_length=10)
        list(buffer.feed(b"x" * 11))
        with self.assertRaises(LineTooLong):
            list(buffer.feed(b"x"))

    def test_line_at_the_limit_is_accepted(self):
        self.assertEqual(list(LineBuffer(max_length=4).feed(b"abcd\r\n")), [b"abcd"])


# A unit of a stream that speaks JSON: a text line (with its terminator), or a JSON
# object (strings full of braces, quotes and backslashes) with or without one after it.
text_units = (
    st.text(st.sampled_from('ab {}"\\é'), max_size=30)
    .filter(lambda t: not t.startswith("{"))
    .map(lambda t: (t.encode(), t.encode() + b"\n"))
)
json_units = st.tuples(
    st.recursive(
        st.text(st.sampled_from('ab{}[]"\\\n/'), max_size=10) | st.integers(),
        lambda inner: (
            st.lists(inner, max_size=3)
            | st.dictionaries(st.text(st.sampled_from('{}"\\a'), max_size=4), inner, max_size=3)
        ),
        max_leaves=10,
    ),
    st.sampled_from(["", "\n", "\r\n", "  \n", "\t"]),
).map(
    lambda pair: (
        json.dumps({"payload": pair[0]}).encode(),
        json.dumps({"payload": pair[0]}).encode() + pair[1].encode(),
    )
)


def unambiguous(units):
    """Blanks and one LF after an object without its own LF are its terminator: a text line
    right after one starts with something else here."""
    fixed = []
    for frame, sent in units:
        if (
            fixed
            and fixed[-1][0][:1] == b"{"
            and not fixed[-1][1].endswith(b"\n")
            and frame[:1] != b"{"
        ):
            frame, sent = b"a" + frame, b"a" + sent
        fixed.append((frame, sent))
    return fixed


class FrameBufferTests(unittest.TestCase):
    @given(
        st.lists(text_units | json_units, max_size=12).map(unambiguous),
        st.lists(st.integers(min_value=0, max_value=10_000), max_size=30),
    )
    def test_any_chunking_yields_every_frame(self, units, cuts):
        """Objects end themselves (with or without LF, back to back); lines need their LF."""
        data = b"".join(sent for _, sent in units)
        got = feed_all(FrameBuffer(max_length=1000), chunked(data, cuts))
        self.assertEqual(got, [frame for frame, _ in units])

    def test_an_object_is_a_frame_without_its_lf(self):
        buffer = FrameBuffer()
        self.assertEqual(list(buffer.feed(b'{"cmd":"status"}')), [b'{"cmd":"status"}'])
        self.assertEqual(list(buffer.feed(b"\nabc\n")), [b"abc"])

    def test_an_lf_before_the_object_closes_ends_it_as_a_line(self):
        buffer = FrameBuffer()
        self.assertEqual(list(buffer.feed(b'{"a": \r\n{"b":1}')), [b'{"a": ', b'{"b":1}'])

    def test_an_object_sent_a_byte_at_a_time(self):
        buffer, data = FrameBuffer(), b'{"a":"\\"}{","b":[{}]}'
        got = [frame for i in range(len(data)) for frame in buffer.feed(data[i : i + 1])]
        self.assertEqual(got, [data])

    def test_an_unfinished_object_past_the_limit_raises(self):
        buffer = FrameBuffer(max_length=10)
        self.assertEqual(list(buffer.feed(b'{"a":"12')), [])
        with self.assertRaises(LineTooLong):
            list(buffer.feed(b"34567"))

    def test_a_finished_object_past_the_limit_raises(self):
        with self.assertRaises(LineTooLong):
            list(FrameBuffer(max_length=5).feed(b'{"a":1}'))

    def test_the_end_of_the_stream_gives_the_unfinished_rest(self):
        buffer = FrameBuffer()
        self.assertEqual(list(buffer.feed(b'{"a":1} \t')), [b'{"a":1}'])
        self.assertIsNone(buffer.finish())
        self.assertEqual(list(buffer.feed(b'{"a":')), [])
        self.assertEqual(buffer.finish(), b'{"a":')


requests = st.one_of(
    nonempty_text.map(frames.Relay),
    line_text.map(frames.Ack),
    nonempty_text.map(frames.Chat),
    line_text.map(frames.Reverse),
    nick.map(frames.Nick),
    st.just(frames.Hello()),
    st.just(frames.Status()),
    st.just(frames.Exit()),
    addressed_requests(bodies),
    st.integers(0, codec.MAX_REPLAY).map(frames.History),
    st.integers(0, 2**63 - 1).map(frames.Since),
    ids.map(frames.Auth),
)


class RequestTests(unittest.TestCase):
    @given(requests)
    def test_json_round_trip(self, request):
        line = codec.encode_request(request, Encoding.JSON)
        self.assertTrue(line.endswith(b"\n"))
        self.assertEqual(codec.decode_request(line[:-1], profiles.NEA), request)

    @given(st.one_of(nonempty_text.map(frames.Relay), line_text.map(frames.Ack)))
    def test_text_round_trip_of_relay_verbs(self, request):
        line = codec.encode_request(request, Encoding.TEXT)
        for profile in (profiles.NEA, profiles.RELAY):
            self.assertEqual(codec.decode_request(line[:-1], profile), request)

    @given(
        addressed_requests(line_text).map(
            lambda r: attrs.evolve(r, timeout=None) if isinstance(r, frames.Ask) else r
        )
    )
    def test_text_round_trip_of_addressed_verbs(self, request):
        """In text a body is the rest of the line (a string), and an ask has no timeout."""
        line = codec.encode_request(request, Encoding.TEXT)
        self.assertEqual(line.count(b"\n"), 1)
        self.assertEqual(codec.decode_request(line[:-1], profiles.NEA), request)

    @given(
        st.sampled_from([b"reply ", b"ask "]),
        st.lists(
            st.sampled_from(
                [b" ", b"@", b"r1", b"lock-1", b"\xff", b"\xc3\xa9", b"\t", b"a" * 65, b"x"]
            ),
            max_size=6,
        ).map(b"".join),
        st.sampled_from([profiles.NEA, profiles.RELAY, profiles.CHAT]),
    )
    def test_the_addressed_fast_path_decodes_as_the_general_path(self, verb, rest, profile):
        line = verb + rest
        try:
            text = line.decode("utf-8")
        except UnicodeDecodeError:
            return  # the fast path leaves it to the general path
        general = codec._checked(codec._decode_text(text, profile), profile)
        self.assertEqual(codec.decode_request(line, profile), general)

    def test_addressed_verbs_in_text(self):
        nea = profiles.NEA
        self.assertEqual(codec.decode_request(b"register lock-1", nea), frames.Register("lock-1"))
        self.assertEqual(codec.decode_request(b"serve people", nea), frames.Serve("people"))
        self.assertEqual(codec.decode_request(b"unserve people", nea), frames.Unserve("people"))
        self.assertEqual(
            codec.decode_request(b"reply r.1 a  b ", nea), frames.Reply("r.1", "a  b ")
        )
        self.assertEqual(
            codec.decode_request(b"ask 7 lock-1 status", nea),
            frames.Ask("7", "lock-1", None, "status"),
        )
        self.assertEqual(
            codec.decode_request(b"ask 7 @people who is there", nea),
            frames.Ask("7", None, "people", "who is there"),
        )
        self.assertEqual(
            codec.decode_request(b"ask 7 lock-1", nea), frames.Ask("7", "lock-1", None, "")
        )

    def test_addressed_error_codes(self):
        self.assertIs(self._error(b"register"), errors.BAD_NAME)
        self.assertIs(self._error(b"register a b"), errors.BAD_NAME)
        self.assertIs(self._error(b"serve @x"), errors.BAD_NAME)
        self.assertIs(self._error(b"reply"), errors.BAD_USAGE)
        self.assertIs(self._error(b"ask 1"), errors.BAD_USAGE)
        self.assertIs(self._error(b"ask " + b"x" * 65 + b" n t"), errors.BAD_USAGE)
        self.assertIs(self._error(b'{"type":"reply","payload":"r1"}'), errors.BAD_PAYLOAD)
        self.assertIs(self._error(b'{"type":"reply","payload":{"body":1}}'), errors.BAD_PAYLOAD)
        self.assertIs(
            self._error(b'{"type":"ask","payload":{"id":"1","to":"a","service":"b"}}'),
            errors.BAD_PAYLOAD,
        )
        self.assertIs(
            self._error(b'{"type":"ask","payload":{"id":"1","to":"a","timeout":0}}'),
            errors.BAD_PAYLOAD,
        )
        self.assertIs(
            self._error(b'{"type":"ask","payload":{"id":"1","to":"a","timeout":"5"}}'),
            errors.BAD_PAYLOAD,
        )
        self.assertIs(
            self._error(b'{"type":"reply","payload":{"id":"1","body":"\\udc00"}}'),
            errors.BAD_PAYLOAD,
        )
        self.assertIs(
            self._error(b'{"type":"reply","payload":{"id":"1","body":[Infinity]}}'), errors.BAD_JSON
        )
        self.assertIs(self._error(b"register x", profiles.RELAY), errors.NOT_IN_PROFILE)

    @given(line_text)
    def test_any_other_line_is_reversed_in_the_nea_profile(self, text):
        request = codec.decode_request(text.encode(), profiles.NEA)
        if isinstance(request, frames.Reverse):
            self.assertEqual(request.text, text)
        else:  # it was a verb, a JSON frame, or an error: never silently dropped
            self.assertTrue(
                text.startswith(
                    (
                        "message",
                        "ok",
                        "chat",
                        "nick",
                        "{",
                        "exit",
                        "quit",
                        "register",
                        "serve",
                        "unserve",
                        "reply",
                        "ask",
                        "history",
                        "since",
                    )
                ),
                request,
            )

    def test_verbs(self):
        nea = profiles.NEA
        self.assertEqual(codec.decode_request(b"message hi there", nea), frames.Relay("hi there"))
        self.assertEqual(codec.decode_request(b"ok hi there", nea), frames.Ack("hi there"))
        self.assertEqual(codec.decode_request(b"chat yo", nea), frames.Chat("yo"))
        self.assertEqual(codec.decode_request(b"nick bob", nea), frames.Nick("bob"))
        self.assertEqual(codec.decode_request(b"exit", nea), frames.Exit())
        self.assertEqual(codec.decode_request(b"quit ", nea), frames.Exit())
        self.assertEqual(codec.decode_request(b"messages", nea), frames.Reverse("messages"))

    def test_status_in_the_form_nc_users_know(self):
        self.assertEqual(codec.decode_request(b'{"cmd":"status"}', profiles.NEA), frames.Status())
        self.assertEqual(codec.decode_request(b'{"type":"status"}', profiles.CHAT), frames.Status())

    def test_chat_profile_makes_plain_lines_chat(self):
        chat = profiles.CHAT
        self.assertEqual(codec.decode_request(b"message hi", chat), frames.Chat("message hi"))
        self.assertEqual(codec.decode_request(b"exit", chat), frames.Exit())

    def _error(self, line: bytes, profile=profiles.NEA):
        request = codec.decode_request(line, profile)
        self.assertIsInstance(request, frames.Invalid)
        return request.error

    def test_error_codes(self):
        self.assertIs(self._error(b"message"), errors.EMPTY_RELAY)
        self.assertIs(self._error(b"message "), errors.EMPTY_RELAY)
        self.assertIs(self._error(b'{"type":"message","payload":""}'), errors.EMPTY_RELAY)
        self.assertIs(self._error(b"chat "), errors.EMPTY_CHAT)
        self.assertIs(self._error(b"nick a b"), errors.BAD_NICK)
        self.assertIs(self._error(b"{not json"), errors.BAD_JSON)
        self.assertIs(self._error(b'{"type":"status"} trailing'), errors.BAD_JSON)
        self.assertIs(self._error(b"{}"), errors.UNKNOWN_TYPE)
        self.assertIs(self._error(b'{"type":"dance"}'), errors.UNKNOWN_TYPE)
        self.assertIs(self._error(b'{"type":"message","payload":3}'), errors.BAD_PAYLOAD)
        self.assertIs(self._error(b"caf\xe9"), errors.BAD_UTF8)
        self.assertIs(self._error(b"hello", profiles.RELAY), errors.NOT_IN_PROFILE)
        self.assertIs(self._error(b"chat hi", profiles.RELAY), errors.NOT_IN_PROFILE)
        self.assertIs(
            self._error(b'{"type":"reverse","payload":"x"}', profiles.CHAT), errors.NOT_IN_PROFILE
        )

    @given(st.binary(max_size=200))
    def test_any_bytes_decode_to_a_request(self, line):
        """No input raises: every line becomes a request or an explicit error."""
        for profile in profiles.BY_NAME.values():
            request = codec.decode_request(line, profile)
            self.assertIn(type(request), profile.allowed)

    @given(
        json_values,
        st.sampled_from(["type", "cmd", "payload", "x"]),
        st.sampled_from(
            ["message", "ok", "reverse", "chat", "nick", "status", "register", "reply", "ask"]
        ),
    )
    @settings(max_examples=300)
    def test_any_json_value_anywhere_decodes_to_a_request(self, value, key, kind):
        """Arbitrary JSON (deep, odd types, lone surrogates) as a frame's field never raises."""
        obj = {"type": kind, key: value} if key != "type" else {key: value}
        line = json.dumps(obj).encode()  # ASCII: a lone surrogate travels as a \\u escape
        for profile in profiles.BY_NAME.values():
            request = codec.decode_request(line, profile)
            self.assertIn(type(request), profile.allowed)
            if isinstance(request, (frames.Relay, frames.Ack, frames.Reverse, frames.Chat)):
                request.text.encode("utf-8")  # what was accepted is valid Unicode
            if isinstance(request, (frames.Reply, frames.Ask)):
                self.assertIsNone(codec.body_problem(request.body))

    def test_poison_json_gets_its_code(self):
        deep = b'{"type":"reverse","x":' + b"[" * 5000 + b"]" * 5000 + b"}"
        self.assertIs(self._error(deep), errors.BAD_JSON)
        self.assertIs(self._error(b'{"type":"reverse","x":' + b"[" * 5000), errors.BAD_JSON)
        self.assertIs(self._error(b'{"type":"reverse","payload":"\\ud800"}'), errors.BAD_PAYLOAD)
        nested = b'{"type":"reverse","payload":"","x":' + b"[" * 31 + b"]" * 31 + b"}"
        self.assertEqual(codec.decode_request(nested, profiles.NEA), frames.Reverse(""))

    @given(st.binary(min_size=1, max_size=50))
    def test_invalid_utf8_is_reported_as_such(self, junk):
        try:
            junk.decode("utf-8")
        except UnicodeDecodeError:
            self.assertIs(self._error(junk), errors.BAD_UTF8)


pushes = st.one_of(
    st.dates().map(lambda d: frames.DatePush(d.isoformat())),
    line_text.map(frames.RelayPush),
    line_text.map(frames.AckPush),
    st.builds(frames.ChatPush, nick, line_text),
    line_text.map(frames.BroadcastPush),
    line_text.map(frames.ReverseReply),
    nick.map(frames.NickReply),
    st.builds(frames.Welcome, nick, nick, st.sampled_from(sorted(profiles.BY_NAME))),
    st.dictionaries(nick, st.integers()).map(frames.StatusReply),
    st.builds(frames.ErrorReply, st.sampled_from([e.code for e in errors.ALL]), line_text),
    st.just(frames.Bye()),
    names.map(frames.Registered),
    names.map(frames.Serving),
    names.map(frames.Unserved),
    names.map(frames.Authenticated),
)

addressed_pushes = st.one_of(
    st.builds(frames.RequestPush, ids, bodies, st.none() | names),
    st.builds(frames.ReplyPush, ids, bodies, nick),
    st.builds(
        frames.ErrorReply, st.sampled_from([e.code for e in errors.ALL]), line_text, st.none() | ids
    ),
    st.builds(
        frames.HistoryLine,
        st.integers(1, 2**63 - 1),
        st.datetimes().map(lambda d: d.isoformat(timespec="milliseconds") + "Z"),
        st.just("chat"),
        nick,
        line_text,
    ),
    st.builds(
        frames.HistoryLine,
        st.integers(1, 2**63 - 1),
        st.just("2026-12-01T19:40:00.123Z"),
        st.just("broadcast"),
        st.none(),
        line_text,
    ),
    st.builds(frames.HistoryEnd, st.integers(0, 2**63 - 1), st.booleans()),
    st.builds(
        frames.Gap,
        st.just("2026-12-01T19:40:00.123Z"),
        st.datetimes().map(lambda d: d.isoformat(timespec="milliseconds") + "Z"),
        st.integers(0, 2**63 - 1),
    ),
)

#: Only JSON carries them whole (the text form of presence is for people).
json_only = st.one_of(
    st.builds(frames.Presence, nick, st.sampled_from(["joined", "left"])),
    st.builds(
        frames.ChatPush,
        nick,
        line_text,
        st.none() | st.integers(1, 2**63 - 1),
        st.just("2026-12-01T19:40:00.123Z"),
    ),
)


class HistoryFrameTests(unittest.TestCase):
    def test_the_gap_frame_in_text_and_json(self):
        gap = frames.Gap("2026-12-01T19:40:00.123Z", "2026-12-01T19:40:20.456Z", 41)
        self.assertEqual(
            codec.encode_push(gap, Encoding.TEXT),
            b"gap 2026-12-01T19:40:00.123Z 2026-12-01T19:40:20.456Z 41\n",
        )
        self.assertEqual(
            json.loads(codec.encode_push(gap, Encoding.JSON)),
            {
                "type": "gap",
                "payload": {
                    "since": "2026-12-01T19:40:00.123Z",
                    "until": "2026-12-01T19:40:20.456Z",
                    "last_id": 41,
                },
            },
        )
        for encoding in Encoding:
            self.assertEqual(codec.decode_push(codec.encode_push(gap, encoding)[:-1]), gap)

    @given(json_only)
    def test_json_round_trip_with_id_and_time(self, push):
        decoded = codec.decode_push(codec.encode_push(push, Encoding.JSON)[:-1])
        self.assertEqual(decoded, push)
        self.assertEqual(getattr(decoded, "time", None), getattr(push, "time", None))

    @given(st.integers(0, 2**63 - 1), st.sampled_from(["history", "since"]))
    def test_text_and_json_requests_agree(self, value, verb):
        text = codec.decode_request(f"{verb} {value}".encode(), profiles.NEA)
        json_form = codec.decode_request(
            json.dumps({"type": verb, "payload": value}).encode(), profiles.NEA
        )
        self.assertEqual(text, json_form)
        if verb == "history" and value > codec.MAX_REPLAY:
            self.assertEqual(text.error, errors.BAD_HISTORY)

    def test_bad_counts(self):
        for line in (
            b"history",
            b"history -1",
            b"since x",
            b'{"type":"since","payload":true}',
            b'{"type":"history","payload":"5"}x',
            b'{"type":"since","payload":1.5}',
        ):
            request = codec.decode_request(line, profiles.NEA)
            self.assertIsInstance(request, frames.Invalid, line)

    @given(nick, line_text)
    def test_the_room_text_forms(self, name, text):
        def room(push):
            return codec.encode_push(push, Encoding.TEXT, room=True)

        self.assertEqual(
            room(frames.ChatPush(name, text)), f"{name}: {text}".encode("utf-8", "replace") + b"\n"
        )
        self.assertEqual(
            room(frames.BroadcastPush(text)), f"* {text}".encode("utf-8", "replace") + b"\n"
        )
        self.assertEqual(room(frames.NickReply(name)), f"* welcome {name}".encode() + b"\n")
        self.assertEqual(room(frames.Presence(name, "joined")), f"* {name} joined".encode() + b"\n")
        # the nea profile's forms are unchanged
        self.assertEqual(
            codec.encode_push(frames.ChatPush(name, text), Encoding.TEXT),
            f"chat {name}: {text}".encode("utf-8", "replace") + b"\n",
        )

    def test_the_chat_profile_reads_its_first_line_as_a_name(self):
        naming = profiles.CHAT.naming
        self.assertEqual(codec.decode_request(b"alice", naming), frames.Nick("alice"))
        for bad in (b"", b"two words", b"x" * 33, b"tab\there"):
            self.assertEqual(codec.decode_request(bad, naming).error, errors.BAD_NICK, bad)
        self.assertEqual(codec.decode_request(b"exit", naming), frames.Exit())
        # after it, every text line is chat; history is asked in JSON
        self.assertEqual(
            codec.decode_request(b"history 5", profiles.CHAT), frames.Chat("history 5")
        )
        self.assertEqual(
            codec.decode_request(b'{"type":"since","payload":3}', profiles.CHAT), frames.Since(3)
        )


# Texts a push may carry, line terminators and multi-byte UTF-8 among them.
lane_text = clean_text | st.sampled_from(["a\rb", "line\nbreak", "\r\n", "\r", "é ü"])
lane_body = lane_text | bodies


class PushTests(unittest.TestCase):
    @given(addressed_pushes)
    def test_json_round_trip_of_requests_and_replies(self, push):
        line = codec.encode_push(push, Encoding.JSON)
        self.assertEqual(line.count(b"\n"), 1)
        self.assertEqual(codec.decode_push(line[:-1]), push)

    @given(
        st.one_of(
            st.builds(frames.RequestPush, ids, line_text),
            st.builds(frames.ReplyPush, ids, line_text),
        )
    )
    def test_text_round_trip_of_requests_and_replies(self, push):
        """In text a body is the rest of the line; the service and instance stay in JSON."""
        line = codec.encode_push(push, Encoding.TEXT)
        self.assertEqual(line.count(b"\n"), 1)
        self.assertEqual(codec.decode_push(line[:-1]), push)

    @given(
        st.one_of(
            st.tuples(st.sampled_from([frames.RelayPush, frames.AckPush]), st.tuples(lane_text)),
            st.tuples(st.just(frames.RequestPush), st.tuples(ids, lane_body, st.none() | names)),
            st.tuples(st.just(frames.ReplyPush), st.tuples(ids, lane_body, nick)),
        ),
        st.sampled_from(list(Encoding)),
    )
    def test_the_lanes_pushes_are_encoded_as_their_values(self, kind_parts, encoding):
        """`encode_parts` is `encode_push` of the value, built or not (CR, LF, bodies that
        are no string, both encodings)."""
        kind, parts = kind_parts
        self.assertEqual(
            codec.encode_parts(kind, parts, encoding), codec.encode_push(kind(*parts), encoding)
        )

    @given(bodies)
    def test_a_text_client_sees_a_body_as_one_line_of_json(self, body):
        line = codec.encode_push(frames.RequestPush("r1", body), Encoding.TEXT)
        self.assertEqual(line.count(b"\n"), 1)
        rest = line[len(b"request r1 ") : -1].decode("utf-8")
        if isinstance(body, str):
            self.assertEqual(rest, body.replace("\r", " ").replace("\n", " "))
        else:
            self.assertEqual(json.loads(rest), body)

    @given(pushes)
    def test_json_round_trip(self, push):
        line = codec.encode_push(push, Encoding.JSON)
        self.assertEqual(line.count(b"\n"), 1)
        json.loads(line)
        self.assertEqual(codec.decode_push(line[:-1]), push)

    @given(pushes.filter(lambda p: not isinstance(p, (frames.ReverseReply, frames.StatusReply))))
    @settings(max_examples=300)
    def test_text_round_trip(self, push):
        line = codec.encode_push(push, Encoding.TEXT)
        self.assertEqual(line.count(b"\n"), 1)
        self.assertEqual(codec.decode_push(line[:-1]), push)

    def test_text_forms(self):
        def text(p):
            return codec.encode_push(p, Encoding.TEXT)

        self.assertEqual(text(frames.DatePush("2026-11-21")), b"2026-11-21\n")
        self.assertEqual(text(frames.RelayPush("x y")), b"message x y\n")
        self.assertEqual(text(frames.AckPush("x y")), b"ok x y\n")
        self.assertEqual(text(frames.ChatPush("ann", "hi")), b"chat ann: hi\n")
        self.assertEqual(text(frames.ErrorReply("bad_utf8", "oops")), b"error bad_utf8 oops\n")

    @given(
        st.sampled_from(
            [frames.RelayPush, frames.AckPush, frames.BroadcastPush, frames.ReverseReply]
        ),
        st.text(),
        st.sampled_from(list(Encoding)),
    )
    def test_encoding_any_text_never_raises(self, kind, text, encoding):
        """Lone surrogates included: a push is always one line of valid UTF-8."""
        line = codec.encode_push(kind(text), encoding)
        self.assertEqual(line.count(b"\n"), 1)
        line.decode("utf-8")

    @given(st.text(max_size=50))
    def test_text_encoding_never_splits_a_frame(self, text):
        line = codec.encode_push(frames.BroadcastPush(text), Encoding.TEXT)
        self.assertEqual(line.count(b"\n"), 1)
        self.assertTrue(line.endswith(b"\n"))


class DeclarationTests(unittest.TestCase):
    """Every frame declares how it travels, and profiles name requests by their kind."""

    def test_every_frame_is_declared(self):
        self.assertEqual(
            set(forms.REQUESTS), set(typing.get_args(frames.Request)) - {frames.Invalid}
        )
        self.assertEqual(set(forms.PUSHES), set(typing.get_args(frames.Push)))

    def test_a_profile_names_its_requests_by_kind(self):
        self.assertEqual(
            profiles.RELAY.allowed,
            {frames.Relay, frames.Ack, frames.Exit, frames.Auth, frames.Invalid},
        )
        self.assertIs(profiles.CHAT.plain, frames.Chat)

    def test_a_profile_naming_an_undeclared_kind_is_refused(self):
        with self.assertRaisesRegex(ValueError, "no request is declared as nope"):
            attrs.evolve(profiles.RELAY, offers=profiles.RELAY.offers | {"nope"})

    def test_a_profile_with_a_verb_it_does_not_offer_is_refused(self):
        with self.assertRaisesRegex(ValueError, "verbs it does not offer"):
            attrs.evolve(profiles.RELAY, verbs=profiles.RELAY.verbs | {"chat"})
