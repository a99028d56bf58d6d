"""Every byte through every transport: properties over real sockets on loopback.

A real nea serves TCP, TLS, WebSocket and wss listeners in this process; clients
(`tests.wire_clients`: the standard library and pyOpenSSL on blocking sockets, in a
thread) send what hypothesis draws: lines from empty to the max line, around one
TLS record (16 KiB) and past it, ASCII and multi-byte UTF-8, in any chunking,
pipelined or one at a time, and end their stream with a FIN, a TLS close_notify,
a bare FIN under TLS, or a WebSocket close frame. The reply stream must be exactly
the replies, byte for byte, and the server must close once it has written them.
The same holds for what nea pushes: a relayed text, a request body, a chat line and
a history replay at those sizes.
"""

import json
import tempfile

from hypothesis import HealthCheck, Phase, example, given, settings
from hypothesis import strategies as st
from twisted.internet import defer, reactor, threads
from twisted.trial import unittest

from nea.core.reverse import reverse_text
from nea.wire import codec, frames
from nea.wire.frames import Encoding
from tests.support import (
    WAIT,
    listen_on_all,
    settle,
    start_server,
    tcp_listen,
    tls_listen,
)
from tests.wire_clients import (
    CLOSE_NOTIFY,
    FIN,
    WS_CLOSE,
    Stream,
    WebSocket,
    client_frame,
    read_line,
)

MAX_LINE = codec.DEFAULT_MAX_LINE
TLS_RECORD = 16 * 1024
#: Sizes where a transport has edges: one TLS record, two, the max line.
EDGES = (0, 1, TLS_RECORD - 1, TLS_RECORD, TLS_RECORD + 1, 2 * TLS_RECORD, MAX_LINE - 1, MAX_LINE)
#: Characters of 1 to 4 bytes in UTF-8 that no text verb starts with and no reversal joins.
ALPHABET = ("a", "b", " ", "é", "ж", "€", "中", "😀")

#: No shrinking: over real sockets a failing example can cost a timeout per step, and
#: the example that failed first is reported as it is.
EXAMPLES = settings(
    max_examples=12,
    deadline=None,
    database=None,
    phases=(Phase.explicit, Phase.generate),
    suppress_health_check=list(HealthCheck),
)
#: One line past a TLS record and one at the max line, in every run.
PAST_A_RECORD = "é" * (TLS_RECORD // 2) + "a" * 3
AT_THE_LIMIT = "€" * (MAX_LINE // 3) + "a"


@st.composite
def texts(draw, limit: int = MAX_LINE) -> str:
    """Text of a drawn size in bytes (an edge or any size up to ``limit``) from ``ALPHABET``."""
    size = min(limit, draw(st.one_of(st.sampled_from(EDGES), st.integers(0, limit))))
    pattern = draw(st.lists(st.sampled_from(ALPHABET), min_size=1, max_size=6))
    text = "".join(pattern) * (size // len("".join(pattern).encode()) + 1)
    encoded = text.encode()[:size].decode("utf-8", "ignore")  # cut on a character
    text = encoded + "a" * (size - len(encoded.encode()))
    if text[:1] == " ":  # a leading blank would be trimmed from some verbs' forms
        text = "a" + text[1:]
    return text


chunkings = st.lists(st.integers(1, 70_000), min_size=1, max_size=8)


def chunked(data: bytes, sizes: list[int]):
    position, i = 0, 0
    while position < len(data):
        size = sizes[i % len(sizes)]
        yield data[position : position + size]
        position += size
        i += 1


def reversed_line(text: str) -> bytes:
    return reverse_text(text).encode() + b"\n"


class Integrity(unittest.TestCase):
    """One server with every transport; hypothesis draws what the clients send."""

    timeout = 600

    @defer.inlineCallbacks
    def setUp(self):
        store = tempfile.mkdtemp(prefix="nea-integrity-")
        self.service = yield start_server(
            self,
            *listen_on_all(),
            "--listen",
            tcp_listen("chat"),
            "--listen",
            tls_listen("chat"),
            "--date-interval",
            "3600",
            "--chat-rate",
            "0",
            "--chat-bytes-rate",
            "0",
            "--store",
            f"sqlite:{store}/history.db",
            "--max-clients",
            "1000",
        )
        self.tcp, self.tls, self.ws, self.wss, self.chat_tcp, self.chat_tls = self.service.ports
        self.hub = self.service.hub

    def in_thread(self, test):
        """Run the hypothesis ``test`` off the reactor; the server is served meanwhile."""
        return threads.deferToThread(test).addCallback(
            lambda _: settle(lambda: self.hub.zero_state())
        )

    # ---- what a client sends, and the replies ----

    def lines_property(self, port: int, tls: bool, ending: str):
        @EXAMPLES
        @given(st.lists(texts(), min_size=1, max_size=4), chunkings, st.booleans(), st.booleans())
        @example([PAST_A_RECORD, AT_THE_LIMIT, ""], [70_000], True, False)
        def replies_are_exact(lines, sizes, pipelined, last_lf):
            stream = Stream(port, tls)
            try:
                requests = [text.encode() + b"\n" for text in lines]
                if not last_lf and lines[-1]:
                    requests[-1] = requests[-1][:-1]  # the end of stream ends the last line
                expected = b"".join(reversed_line(text) for text in lines)
                if pipelined:
                    for chunk in chunked(b"".join(requests), sizes):
                        stream.send(chunk)
                    stream.end(ending)
                    got = stream.read_to_end()
                else:
                    got = b""
                    for request, text in zip(requests[:-1], lines[:-1], strict=True):
                        for chunk in chunked(request, sizes):
                            stream.send(chunk)
                        got += stream.read_exactly(len(reversed_line(text)))
                    for chunk in chunked(requests[-1], sizes):
                        stream.send(chunk)
                    stream.end(ending)
                    got += stream.read_to_end()
                assert got == expected, (len(got), len(expected), got[:80], expected[:80])
            finally:
                stream.close()

        return self.in_thread(replies_are_exact)

    def test_tcp_lines_then_fin(self):
        return self.lines_property(self.tcp, False, FIN)

    def test_tls_lines_then_close_notify(self):
        return self.lines_property(self.tls, True, CLOSE_NOTIFY)

    def test_tls_lines_then_bare_fin(self):
        return self.lines_property(self.tls, True, FIN)

    def json_property(self, port: int, tls: bool, ending: str):
        """JSON frames: each object ends itself, with or without its LF, back to back too."""

        @EXAMPLES
        @given(
            st.lists(
                st.tuples(texts(limit=MAX_LINE - 40), st.sampled_from(["", "\n", "\r\n"])),
                min_size=1,
                max_size=4,
            ),
            chunkings,
        )
        @example([(PAST_A_RECORD, ""), ("a", "\n")], [1, 70_000])
        def replies_are_exact(frames_, sizes):
            stream = Stream(port, tls)
            try:
                data = b"".join(_json("reverse", text) + end.encode() for text, end in frames_)
                expected = b"".join(
                    codec.encode_push(frames.ReverseReply(reverse_text(text)), Encoding.JSON)
                    for text, _ in frames_
                )
                for chunk in chunked(data, sizes):
                    stream.send(chunk)
                stream.end(ending)
                got = stream.read_to_end()
                assert got == expected, (len(got), len(expected), got[:80], expected[:80])
            finally:
                stream.close()

        return self.in_thread(replies_are_exact)

    def test_tcp_json_frames(self):
        return self.json_property(self.tcp, False, FIN)

    def test_tls_json_frames(self):
        return self.json_property(self.tls, True, CLOSE_NOTIFY)

    def websocket_property(self, port: int, tls: bool):
        @EXAMPLES
        @given(
            st.lists(texts(limit=MAX_LINE - 40), min_size=1, max_size=4),
            chunkings,
            st.integers(1, 3),
        )
        @example([PAST_A_RECORD, "a"], [70_000], 1)
        def replies_are_exact(lines, sizes, fragments):
            socket = WebSocket(port, tls)
            try:
                data = b""
                for text in lines:
                    message = _json("reverse", text)
                    cut = max(1, len(message) // fragments)
                    parts = [message[i : i + cut] for i in range(0, len(message), cut)]
                    for i, part in enumerate(parts):
                        data += client_frame(
                            part, opcode=1 if i == 0 else 0, fin=i == len(parts) - 1
                        )
                data += client_frame(b"\x03\xe8", opcode=8)  # close, 1000
                for chunk in chunked(data, sizes):
                    socket.stream.send(chunk)
                messages, closed = socket.messages_to_end()
                expected = [
                    codec.encode_push(frames.ReverseReply(reverse_text(text)), Encoding.JSON)[:-1]
                    for text in lines
                ]
                assert messages == expected, (
                    [len(m) for m in messages],
                    [len(m) for m in expected],
                )
                assert closed, "no close frame after the replies"
            finally:
                socket.stream.close()

        return self.in_thread(replies_are_exact)

    def test_ws_messages_then_close(self):
        return self.websocket_property(self.ws, False)

    def test_wss_messages_then_close(self):
        return self.websocket_property(self.wss, True)

    # ---- answers that need a wait, owed when the stream ends ----

    @defer.inlineCallbacks
    def owed_after_the_end(self, port: int, tls: bool, ending: str, websocket: bool = False):
        """``history``, a chat line's echo and a status, sent with the end of the stream at
        once: every answer is written before the close, however long it is."""
        said = ["é" * 10_000 + "a", "short", "€" * 21_000]
        for text in said:
            yield self.hub.broadcast(text)

        def exchange():
            if websocket:
                socket = WebSocket(port, tls)
                socket.stream.send(
                    client_frame(_json("history", 3))
                    + client_frame(_json("chat", "bye " * 5_000))
                    + client_frame(b'{"type":"status"}')
                    + client_frame(b"\x03\xe8", opcode=8)
                )
                messages, closed = socket.messages_to_end()
                socket.stream.close()
                assert closed, "no close frame after the answers"
                return [codec.decode_push(m) for m in messages]
            stream = Stream(port, tls)
            stream.send(("history 3\nchat " + "bye " * 5_000 + '\n{"cmd":"status"}').encode())
            stream.end(ending)
            data = stream.read_to_end()
            stream.close()
            assert data.endswith(b"\n"), data[-80:]
            return [codec.decode_push(line) for line in data.split(b"\n")[:-1]]

        pushes = yield threads.deferToThread(exchange)
        kinds = [type(push).__name__ for push in pushes]
        self.assertEqual(
            sorted(kinds),
            sorted(["HistoryLine"] * 3 + ["HistoryEnd", "ChatPush", "StatusReply"]),
            kinds,
        )
        [chat] = [p for p in pushes if isinstance(p, frames.ChatPush)]
        self.assertEqual(chat.text, "bye " * 5_000)
        # The read may run before or after the chat line is stored: the last 3 either way.
        self.assertIn(
            [p.text for p in pushes if isinstance(p, frames.HistoryLine)],
            [said, said[1:] + [chat.text]],
        )
        yield settle(lambda: self.hub.zero_state())

    def test_owed_answers_tcp_fin(self):
        return self.owed_after_the_end(self.tcp, False, FIN)

    def test_owed_answers_tls_close_notify(self):
        return self.owed_after_the_end(self.tls, True, CLOSE_NOTIFY)

    def test_owed_answers_tls_bare_fin(self):
        return self.owed_after_the_end(self.tls, True, FIN)

    def test_owed_answers_ws_close(self):
        return self.owed_after_the_end(self.ws, False, WS_CLOSE, websocket=True)

    def test_owed_answers_wss_close(self):
        return self.owed_after_the_end(self.wss, True, WS_CLOSE, websocket=True)

    @defer.inlineCallbacks
    def room_join_then_leave(self, port: int, tls: bool, ending: str):
        """``printf 'kay\\nhello\\n' | nc -N`` on a chat listener: kay is shown its join
        history (a line past one TLS record among it); the room hears joined, hello, left."""
        long_line = "ж" * 9_000
        yield self.hub.broadcast(long_line)
        listener = yield threads.deferToThread(Stream, port, tls)
        self.addCleanup(listener.close)
        yield threads.deferToThread(listener.send, b"ann\n")
        held = bytearray()
        welcome = yield threads.deferToThread(lambda: [read_line(listener, held) for _ in range(2)])
        self.assertEqual(welcome, [b"* welcome ann\n", b"* " + long_line.encode() + b"\n"])
        yield settle(lambda: len(self.hub.registry.room) == 1)

        def kay():
            stream = Stream(port, tls)
            stream.send(b"kay\nhello\n")
            stream.end(ending)
            data = stream.read_to_end()
            stream.close()
            return data

        data = yield threads.deferToThread(kay)
        self.assertTrue(data.startswith(b"* welcome kay\n"), data[:80])
        self.assertIn(long_line.encode() + b"\n", data)
        heard = yield threads.deferToThread(lambda: [read_line(listener, held) for _ in range(3)])
        self.assertEqual(
            sorted(heard), sorted([b"* kay joined\n", b"kay: hello\n", b"* kay left\n"])
        )
        self.assertEqual(heard[-1], b"* kay left\n")

    def test_room_tcp_fin(self):
        return self.room_join_then_leave(self.chat_tcp, False, FIN)

    def test_room_tls_close_notify(self):
        return self.room_join_then_leave(self.chat_tls, True, CLOSE_NOTIFY)

    # ---- what nea pushes ----

    def pushes_property(self, port: int, tls: bool, websocket: bool):
        """A relayed text, a request body, a chat line and its history replay arrive whole."""
        hub = self.hub

        def call(f, *args):
            return threads.blockingCallFromThread(reactor, f, *args)

        @EXAMPLES
        @given(texts(limit=MAX_LINE - 200).map(lambda text: text.strip() or "a"))
        @example(PAST_A_RECORD)
        def pushes_are_exact(text):
            client = _PushClient(port, tls, websocket)
            try:
                client.send("register", "probe")
                assert client.next() == frames.Registered("probe")
                waiter = _Waiter()
                call(hub.relay, waiter, text)
                line = client.next_raw()
                assert line == client.encode(frames.RelayPush(text)), (len(line), line[:60])
                client.send("ok", text)
                call(waiter.told, 1)
                assert waiter.pushes == [frames.AckPush(text)], waiter.pushes

                call(hub.ask, waiter, "q1", "probe", None, text)
                line = client.next_raw()
                request = client.decode(line)
                assert request.body == text and line == client.encode(request), len(line)
                client.send(
                    "reply",
                    {"id": request.id, "body": "done"} if websocket else f"{request.id} done",
                )
                call(waiter.told, 2)
                assert waiter.pushes[1] == frames.ReplyPush("q1", "done", "test"), waiter.pushes

                call(hub.broadcast, text)
                line = client.next_raw()
                said = client.decode(line)
                assert said.text == text and line == client.encode(said), len(line)

                client.send("history", 1)
                line = client.next_raw()
                stored = client.decode(line)
                assert stored.text == text and line == client.encode(stored), len(line)
                assert isinstance(client.next(), frames.HistoryEnd)
            finally:
                client.close()

        return self.in_thread(pushes_are_exact)

    def test_tcp_pushes(self):
        return self.pushes_property(self.tcp, False, False)

    def test_tls_pushes(self):
        return self.pushes_property(self.tls, True, False)

    def test_ws_pushes(self):
        return self.pushes_property(self.ws, False, True)

    def test_wss_pushes(self):
        return self.pushes_property(self.wss, True, True)


def _json(kind: str, payload) -> bytes:
    return json.dumps({"type": kind, "payload": payload}, ensure_ascii=False).encode()


class _Waiter:
    """An in-process relay and request waiter (as an HTTP request is)."""

    def __init__(self) -> None:
        self.pushes: list = []
        self._waiting: list[tuple[int, defer.Deferred]] = []

    def push(self, push) -> None:
        self.pushes.append(push)
        for entry in [e for e in self._waiting if e[0] <= len(self.pushes)]:
            self._waiting.remove(entry)
            entry[1].callback(None)

    def push_parts(self, kind, *parts) -> None:
        self.push(kind(*parts))

    def told(self, count: int) -> defer.Deferred:
        """Fires once it has been pushed ``count`` answers (call it in the reactor)."""
        if len(self.pushes) >= count:
            return defer.succeed(None)
        waiting = defer.Deferred()
        self._waiting.append((count, waiting))
        return waiting.addTimeout(WAIT, reactor)


class _PushClient:
    """A nea-profile client over lines (text) or WebSocket (JSON), for pushes."""

    def __init__(self, port: int, tls: bool, websocket: bool) -> None:
        self.websocket = WebSocket(port, tls) if websocket else None
        self.stream = self.websocket.stream if websocket else Stream(port, tls)
        self.encoding = Encoding.JSON if websocket else Encoding.TEXT
        self._held = bytearray()

    def send(self, verb: str, payload) -> None:
        if self.websocket is not None:
            self.stream.send(client_frame(_json(verb, payload)))
        else:
            self.stream.send(f"{verb} {payload}\n".encode())

    def next_raw(self) -> bytes:
        """The next push as it came: a line with its LF, or a message."""
        if self.websocket is not None:
            return self.websocket.next_message()
        return read_line(self.stream, self._held)

    def next(self):
        return self.decode(self.next_raw())

    def decode(self, raw: bytes):
        return codec.decode_push(raw[:-1] if self.websocket is None else raw)

    def encode(self, push) -> bytes:
        line = codec.encode_push(push, self.encoding)
        return line if self.websocket is None else line[:-1]

    def close(self) -> None:
        self.stream.close()
