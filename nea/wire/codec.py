"""The pure codec: bytes <-> frames. No I/O, no clock, no state but a frame buffer.

Framing: one frame per line, terminated by LF; a CR before the LF is dropped, so
both ``nc`` (LF) and telnet-style clients (CRLF) work. Where JSON is spoken, a
line that starts with ``{`` is a frame as soon as its object is complete
(`FrameBuffer`), so a program need not end it. A frame longer than the limit
(the terminator excluded) is an error that ends the connection.
"""

import json
import math
import re
from collections.abc import Callable, Iterable, Iterator
from operator import attrgetter
from typing import Any, NamedTuple

import attrs

from nea.wire import errors, frames
from nea.wire.forms import PUSHES, REQUESTS, Body, Line, Payload, PushForm, RequestForm, body_text
from nea.wire.frames import AckPush, Encoding, RelayPush, ReplyPush, RequestPush
from nea.wire.profiles import Profile

DEFAULT_MAX_LINE = 64 * 1024
#: Longest line a client accepts from a server (a cluster's status can be long).
MAX_SERVER_LINE = 4 * 1024 * 1024


class LineTooLong(Exception):
    """The peer sent more than the line limit without a line terminator."""


class LineBuffer:
    """Splits a byte stream into lines, whatever the chunking.

    ``feed`` yields every complete line in the data and keeps the partial tail;
    it raises `LineTooLong` (after the complete lines before it) as soon as a line
    is known to exceed ``max_length``.
    """

    __slots__ = ("max_length", "_tail")  # one per connection: a load test holds 100,000

    def __init__(self, max_length: int = DEFAULT_MAX_LINE) -> None:
        self.max_length = max_length
        self._tail = b""

    def feed(self, data: bytes) -> Iterator[bytes]:
        if self._tail:
            data = self._tail + data
        lines = data.split(b"\n")
        self._tail = lines.pop()
        if len(data) <= self.max_length and b"\r" not in data:
            return iter(lines)  # no line, nor the tail, can be too long; no CR to take off
        return self._checked(lines)

    def _checked(self, lines: list[bytes]) -> Iterator[bytes]:
        for line in lines:
            if line.endswith(b"\r"):
                line = line[:-1]
            if len(line) > self.max_length:
                self._tail = b""
                raise LineTooLong()
            yield line
        # One byte of slack: the tail may hold the CR of a CRLF still to come.
        if len(self._tail) > self.max_length + 1:
            self._tail = b""
            raise LineTooLong()

    def finish(self) -> bytes | None:
        """The end of the stream: the unterminated last line, if the stream ended inside one."""
        tail, self._tail = self._tail, b""
        if tail.endswith(b"\r"):
            tail = tail[:-1]
        return tail or None

    @property
    def pending(self) -> int:
        """Bytes held while waiting for the end of a line."""
        return len(self._tail)


#: What matters to the end of a JSON object, outside and inside its strings.
_OUTSIDE_STRING = re.compile(rb'[{}"\n]')
_INSIDE_STRING = re.compile(rb'["\\\n]')
_LF, _CR, _OPEN, _CLOSE, _QUOTE = 10, 13, ord("{"), ord("}"), ord('"')


class FrameBuffer(LineBuffer):
    """Lines, and JSON objects that end themselves: a line that starts with ``{`` is a
    frame as soon as its object closes, with or without a line feed.

    What follows an object on its line is skipped while it is blank (spaces, tabs,
    a CR) and one LF after it is the object's own terminator; anything else starts
    the next frame, so objects may follow each other back to back. An LF before
    the object closes ends the frame as a line ends (it is then bad JSON). Text
    lines are split as `LineBuffer` splits them, and the same ``max_length`` holds.

    Scanning is incremental: an object that arrives a byte at a time is scanned
    once, not once per byte.
    """

    __slots__ = ("_depth", "_in_string", "_scanned", "_after_object")

    def __init__(self, max_length: int = DEFAULT_MAX_LINE) -> None:
        super().__init__(max_length)
        #: Within an unfinished object (``_tail`` starts with ``{``): its open braces,
        #: whether the scan stopped inside a string, and where in ``_tail`` it stopped.
        self._depth = 0
        self._in_string = False
        self._scanned = 0
        #: An object just ended: blanks, then one LF, still belong to it.
        self._after_object = False

    def feed(self, data: bytes) -> Iterator[bytes]:
        if not (self._after_object or self._tail[:1] == b"{" or b"{" in data):
            return super().feed(data)  # text only: the fast path
        return self._frames(data)

    def _frames(self, data: bytes) -> Iterator[bytes]:
        buffer = self._tail + data if self._tail else data
        self._tail = b""
        position, end = 0, len(buffer)
        while position < end:
            if self._after_object:
                position = self._skip_blanks(buffer, position)
                continue
            if buffer[position] == _OPEN:
                closed = self._scan(buffer, position)
                if closed < 0:
                    break
                frame, position = buffer[position:closed], closed
                if frame[-1] == _CLOSE:
                    self._after_object = True
                else:  # ended by its LF, as a line
                    frame = frame[:-2] if frame.endswith(b"\r\n") else frame[:-1]
                if len(frame) > self.max_length:
                    raise LineTooLong()
                yield frame
                continue
            newline = buffer.find(b"\n", position)
            if newline < 0:
                break
            line = buffer[position:newline]
            position = newline + 1
            if line.endswith(b"\r"):
                line = line[:-1]
            if len(line) > self.max_length:
                raise LineTooLong()
            yield line
        self._tail = buffer[position:]
        if len(self._tail) > self.max_length + 1:
            self._tail = b""
            raise LineTooLong()

    def _skip_blanks(self, buffer: bytes, position: int) -> int:
        """Past the blanks after an object, and its LF; the end of its tail is the end."""
        end = len(buffer)
        while position < end and buffer[position] in b" \t\r":
            position += 1
        if position < end:
            self._after_object = False
            if buffer[position] == _LF:
                position += 1
        return position

    def _scan(self, buffer: bytes, start: int) -> int:
        """Where the frame that opens at ``start`` ends (just past its ``}`` or its LF),
        or -1 if ``buffer`` ends first (the state is kept for the next read)."""
        position = start + self._scanned if self._scanned else start
        depth, in_string = self._depth, self._in_string
        end = len(buffer)
        while True:
            match = (_INSIDE_STRING if in_string else _OUTSIDE_STRING).search(buffer, position)
            if match is None:
                position = end
                break
            position = match.start()
            byte = buffer[position]
            if byte == _LF:
                self._reset_scan()
                return position + 1
            if in_string:
                if byte == _QUOTE:
                    in_string = False
                elif position + 1 < end:
                    position += 1  # a backslash: the next byte is escaped
                else:
                    break  # the escaped byte has not arrived: rescan from the backslash
            elif byte == _QUOTE:
                in_string = True
            elif byte == _OPEN:
                depth += 1
            else:
                depth -= 1
                if depth == 0:
                    self._reset_scan()
                    return position + 1
            position += 1
        self._depth, self._in_string, self._scanned = depth, in_string, position - start
        return -1

    def _reset_scan(self) -> None:
        self._depth, self._in_string, self._scanned = 0, False, 0

    def finish(self) -> bytes | None:
        self._after_object = False
        self._reset_scan()
        return super().finish()


# ---- requests ----

# The tables below (`_JSON_KINDS`, `_TEXT_VERBS`, ...) are built from the frames'
# declarations (`nea.wire.forms`) at the end of this module.

#: Most lines one ``history N`` or ``since ID`` replays.
MAX_REPLAY = 1000

NICK_PATTERN = re.compile(r"[A-Za-z0-9_.\-]{1,32}\Z")
#: A registered name or a service. Not starting with '@', which marks a service in ``ask``;
#: ':' and '@' let a name be a certificate's identity (``device:42``, ``lock@site``).
_NAME = r"[A-Za-z0-9_.:\-][A-Za-z0-9_.:@\-]{0,63}"
NAME_PATTERN = re.compile(_NAME + r"\Z")
#: The id of a request or an ask: up to 64 printable ASCII characters, no space.
_ID = r"[!-~]{1,64}"
ID_PATTERN = re.compile(_ID + r"\Z")
#: ``reply ID TEXT`` and ``ask ID [@]TARGET TEXT`` checked in one match (`_decode_addressed_verb`).
_REPLY_LINE = re.compile(rf"reply ({_ID})(?: (.*))?\Z", re.DOTALL)
_ASK_LINE = re.compile(rf"ask ({_ID}) (@?)({_NAME})(?: (.*))?\Z", re.DOTALL)
#: Longest timeout an ``ask`` may set, in seconds.
MAX_REQUEST_TIMEOUT = 300.0
#: Deepest nesting of arrays and objects a JSON frame may have.
MAX_JSON_DEPTH = 32
#: A lone surrogate (JSON may spell one as "\\ud800"): text that cannot be UTF-8.
_SURROGATE = re.compile("[\ud800-\udfff]")


def decode_request(line: bytes, profile: Profile) -> frames.Request:
    """Turn one line (terminator removed) into the request it makes under ``profile``."""
    # The addressed verbs' fast path by first letter: ask/reply (and reverse, auth: None).
    # (A line connection takes message/ok before this: `nea.server.connection`.)
    first = line[:1]
    if first == b"a" or first == b"r":
        fast = _decode_addressed_verb(line, profile)
        if fast is not None:
            return fast
    try:
        text = line.decode("utf-8")
    except UnicodeDecodeError as e:
        return frames.Invalid(errors.BAD_UTF8, f"invalid byte at offset {e.start}")
    if profile.json and text.startswith("{"):
        request = _decode_json(text)
    else:
        request = _decode_text(text, profile)
    return _checked(request, profile)


def decode_message(payload: bytes, binary: bool, profile: Profile) -> frames.Request:
    """Turn one WebSocket message into the request it makes under ``profile``.

    A message is always a JSON frame, whatever the profile: WebSocket clients are
    programs, and a message needs no text verbs to be told from a push. JSON
    travels in text messages; a binary one, or text that is no JSON object, is
    ``bad_json``, as a malformed JSON line is.
    """
    if binary:
        return frames.Invalid(errors.BAD_JSON, "send JSON frames as text messages, not binary")
    try:
        text = payload.decode("utf-8")
    except UnicodeDecodeError as e:  # only where the WebSocket layer does not check it
        return frames.Invalid(errors.BAD_UTF8, f"invalid byte at offset {e.start}")
    return _checked(_decode_json(text), profile)


def _checked(request: frames.Request, profile: Profile) -> frames.Request:
    if type(request) not in profile.allowed:
        return frames.Invalid(
            errors.NOT_IN_PROFILE, f"the {profile.name!r} profile does not offer this"
        )
    return _validated(request)


def reply_verb(line: bytes) -> tuple[str, str] | None:
    """``reply ID TEXT``, well formed, as ``(id, text)``, without a request value (a line
    connection hands it to the hub's lane); anything else is None, left to the general
    path (which words the error). A body decoded from UTF-8 holds no lone surrogate."""
    try:
        reply = _REPLY_LINE.match(line.decode())
    except UnicodeDecodeError:
        return None
    return (reply[1], reply[2] or "") if reply else None


def ask_verb(line: bytes) -> tuple[str, str | None, str | None, str] | None:
    """``ask ID NAME TEXT`` or ``ask ID @SERVICE TEXT``, well formed, as ``(id, name,
    service, text)``, one of name and service None; otherwise as `reply_verb`."""
    try:
        ask = _ASK_LINE.match(line.decode())
    except UnicodeDecodeError:
        return None
    if ask is None:
        return None
    if ask[2]:
        return ask[1], None, ask[3], ask[4] or ""
    return ask[1], ask[3], None, ask[4] or ""


def _decode_addressed_verb(line: bytes, profile: Profile) -> frames.Reply | frames.Ask | None:
    """``reply ID TEXT`` and ``ask ID TARGET TEXT``, well formed, without the general path:
    the general path's result, or None (a verb the profile lacks, or not well formed)."""
    if line.startswith(b"reply "):
        if "reply" not in profile.verbs or frames.Reply not in profile.allowed:
            return None
        reply = reply_verb(line)
        return frames.Reply(*reply) if reply is not None else None
    if (
        not line.startswith(b"ask ")
        or "ask" not in profile.verbs
        or frames.Ask not in profile.allowed
    ):
        return None
    ask = ask_verb(line)
    return frames.Ask(*ask) if ask is not None else None


def _decode_text(text: str, profile: Profile) -> frames.Request:
    word = _WORDS.get(text.rstrip())
    if word is not None and word in profile.allowed:
        return word()
    verb, space, rest = text.partition(" ")
    if verb in profile.verbs:
        return _TEXT_VERBS[verb](rest)
    if profile.plain is None:
        return frames.Invalid(
            errors.NOT_IN_PROFILE,
            f"the {profile.name!r} profile understands only: "
            + ", ".join(sorted(profile.verbs | {"exit"})),
        )
    return profile.plain(text)


def _text_reply(rest: str) -> frames.Request:
    id, _, body = rest.partition(" ")
    if not id:
        return frames.Invalid(errors.BAD_USAGE, "usage: reply ID TEXT")
    return frames.Reply(id, body)


def _text_ask(rest: str) -> frames.Request:
    parts = rest.split(" ", 2)
    if len(parts) < 2 or not parts[0] or not parts[1]:
        return frames.Invalid(errors.BAD_USAGE, "usage: ask ID NAME TEXT, or ask ID @SERVICE TEXT")
    id, target = parts[0], parts[1]
    body = parts[2] if len(parts) == 3 else ""
    if target.startswith("@"):
        return frames.Ask(id, None, target[1:], body)
    return frames.Ask(id, target, None, body)


def _text_auth(rest: str) -> frames.Request:
    token = rest.strip()
    return frames.Auth(token) if token else frames.Invalid(errors.BAD_USAGE, "usage: auth TOKEN")


def _refuse_constant(name: str):
    raise ValueError(f"{name} is not JSON")


def _decode_json(text: str) -> frames.Request:
    try:
        obj = json.loads(text, parse_constant=_refuse_constant)
    except ValueError as e:
        return frames.Invalid(errors.BAD_JSON, str(e))
    except RecursionError:
        return frames.Invalid(errors.BAD_JSON, f"nested deeper than {MAX_JSON_DEPTH} levels")
    if not isinstance(obj, dict):
        return frames.Invalid(errors.BAD_JSON, "a frame is a JSON object")
    if not _shallow(obj, MAX_JSON_DEPTH):
        return frames.Invalid(errors.BAD_JSON, f"nested deeper than {MAX_JSON_DEPTH} levels")
    kind = obj.get("type", obj.get("cmd"))
    if not isinstance(kind, str) or kind not in _JSON_KINDS:
        return frames.Invalid(
            errors.UNKNOWN_TYPE,
            f"'type' must be one of: {', '.join(_JSON_KINDS)} (got {kind!r})",
        )
    return _JSON_KINDS[kind](kind, obj.get("payload"))


def _json_reader(form: RequestForm) -> Callable[[str, Any], frames.Request]:
    """What reads ``form``'s JSON payload, given the ``type`` it came with."""
    cls, shape = form.cls, form.payload
    if shape is Payload.NONE:
        return lambda kind, payload: cls()
    if shape is Payload.COUNT:
        return lambda kind, payload: _count(form, payload)
    if shape is Payload.OBJECT:
        from_json = _OBJECTS[cls].from_json

        def read_object(kind: str, payload: Any) -> frames.Request:
            if not isinstance(payload, dict):
                return frames.Invalid(errors.BAD_PAYLOAD, f"{kind!r} needs an object 'payload'")
            return from_json(payload)

        return read_object

    def read_string(kind: str, payload: Any) -> frames.Request:
        if not isinstance(payload, str):
            return frames.Invalid(errors.BAD_PAYLOAD, f"{kind!r} needs a string 'payload'")
        if _SURROGATE.search(payload):
            return frames.Invalid(
                errors.BAD_PAYLOAD, "the payload has a lone surrogate (not UTF-8)"
            )
        return cls(payload)

    return read_string


def _json_reply(payload: dict[str, Any]) -> frames.Request:
    id = payload.get("id")
    if not isinstance(id, str):
        return frames.Invalid(errors.BAD_PAYLOAD, "'reply' needs a string 'id'")
    return frames.Reply(id, payload.get("body"))


def _json_ask(payload: dict[str, Any]) -> frames.Request:
    id, name, service = payload.get("id"), payload.get("to"), payload.get("service")
    timeout = payload.get("timeout")
    if not isinstance(id, str):
        return frames.Invalid(errors.BAD_PAYLOAD, "'ask' needs a string 'id'")
    if (name is None) == (service is None) or not isinstance(name or service, str):
        return frames.Invalid(
            errors.BAD_PAYLOAD, "'ask' needs a string 'to' (a name) or 'service', not both"
        )
    if timeout is not None and (not isinstance(timeout, (int, float)) or isinstance(timeout, bool)):
        return frames.Invalid(errors.BAD_PAYLOAD, "'timeout' must be a number of seconds")
    return frames.Ask(
        id, name, service, payload.get("body"), None if timeout is None else float(timeout)
    )


def _json_auth(payload: dict[str, Any]) -> frames.Request:
    token = payload.get("token")
    if not isinstance(token, str) or not token:
        return frames.Invalid(errors.BAD_PAYLOAD, "'auth' needs a string 'token'")
    return frames.Auth(token)


def body_problem(body: Any, depth: int = MAX_JSON_DEPTH) -> str | None:
    """What makes ``body`` unfit to travel as a request or reply body, or None.

    A body is any JSON value, nested at most ``depth`` deep, with finite numbers
    and no lone surrogate (text that cannot be UTF-8) in any string or key.
    """
    level = [body]
    for _ in range(depth + 1):
        children: list[Any] = []
        for item in level:
            if isinstance(item, str):
                if _SURROGATE.search(item):
                    return "a string in the body has a lone surrogate (not UTF-8)"
            elif isinstance(item, float):
                if not math.isfinite(item):
                    return "a number in the body is not finite"
            elif isinstance(item, dict):
                children.extend(item.keys())
                children.extend(item.values())
            elif isinstance(item, list):
                children.extend(item)
            elif item is not None and not isinstance(item, (bool, int)):
                return f"the body holds a {type(item).__name__}, which is not JSON"
        if not children:
            return None
        level = children
    return f"the body is nested deeper than {depth} levels"


def _count(form: RequestForm, value: Any) -> frames.Request:
    """A COUNT payload (``history N``, ``since ID``): the text after the verb, or JSON's."""
    if isinstance(value, str) and value.isascii() and value.isdigit() and len(value) < 20:
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < 2**63:
        return frames.Invalid(errors.BAD_HISTORY, f"usage: {form.kind} <integer >= 0>")
    if form.cls is frames.History and value > MAX_REPLAY:
        return frames.Invalid(errors.BAD_HISTORY, f"at most {MAX_REPLAY} lines at once")
    return form.cls(value)


def _shallow(value: Any, limit: int) -> bool:
    """Whether ``value`` nests arrays and objects at most ``limit`` deep (iteratively)."""
    level = [value]
    for _ in range(limit):
        level = [
            child
            for item in level
            if isinstance(item, (dict, list))
            for child in (item.values() if isinstance(item, dict) else item)
        ]
        if not level:
            return True
    return not any(isinstance(item, (dict, list)) for item in level)


def _validated(request: frames.Request) -> frames.Request:
    """Reject requests that parse but carry nothing usable."""
    if isinstance(request, frames.Relay) and not request.text:
        return frames.Invalid(errors.EMPTY_RELAY, "usage: message <text>")
    if isinstance(request, frames.Chat) and not request.text:
        return frames.Invalid(errors.EMPTY_CHAT, "usage: chat <text>")
    if isinstance(request, frames.Nick) and not NICK_PATTERN.match(request.name):
        return frames.Invalid(errors.BAD_NICK, f"not a valid nick: {request.name!r}")
    if isinstance(request, (frames.Register, frames.Serve, frames.Unserve)):
        name = request.name if isinstance(request, frames.Register) else request.service
        if not NAME_PATTERN.match(name):
            return frames.Invalid(errors.BAD_NAME, f"not a valid name: {name!r}")
    if isinstance(request, (frames.Reply, frames.Ask)):
        return _addressed(request)
    return request


def _addressed(request: frames.Reply | frames.Ask) -> frames.Request:
    if not ID_PATTERN.match(request.id):
        return frames.Invalid(
            errors.BAD_USAGE, "an id is 1-64 printable ASCII characters, no space"
        )
    problem = body_problem(request.body)
    if problem is not None:
        return frames.Invalid(errors.BAD_PAYLOAD, problem)
    if isinstance(request, frames.Ask):
        target = request.name if request.name is not None else request.service
        if target is None or not NAME_PATTERN.match(target):
            return frames.Invalid(errors.BAD_NAME, f"not a valid name: {target!r}")
        timeout = request.timeout
        if timeout is not None and not 0 < timeout <= MAX_REQUEST_TIMEOUT:
            return frames.Invalid(
                errors.BAD_PAYLOAD,
                f"'timeout' must be more than 0 and at most {MAX_REQUEST_TIMEOUT:g}",
            )
    return request


def encode_request(request: frames.Request, encoding: Encoding) -> bytes:
    """The line a client sends for ``request`` (used by nea-client and nea-loadtest)."""
    form, payload_of = _REQUEST_KINDS[type(request)]
    kind, payload = form.kind, payload_of(request)
    if encoding is Encoding.JSON:
        obj: dict[str, Any] = {"type": kind}
        if payload is not None:
            obj["payload"] = payload
        return _json_line(obj)
    if form.line is Line.PLAIN:
        return payload.encode("utf-8", "replace") + b"\n"
    if form.payload is Payload.OBJECT:
        text = _OBJECTS[form.cls].to_text(request)
        return _one_line(f"{kind} {text}").encode("utf-8", "replace") + b"\n"
    if isinstance(payload, int):
        return f"{kind} {payload}\n".encode("ascii")
    if payload is None:
        return kind.encode("ascii") + b"\n"
    return f"{kind} {payload}\n".encode("utf-8", "replace")


class _Object(NamedTuple):
    """How an OBJECT payload is read and written, in JSON and as the text after the verb."""

    from_json: Callable[[dict[str, Any]], frames.Request]
    to_json: Callable[[Any], dict[str, Any]]
    from_text: Callable[[str], frames.Request]
    to_text: Callable[[Any], str]


_OBJECTS: dict[type, _Object] = {
    frames.Reply: _Object(
        _json_reply,
        lambda r: {"id": r.id, "body": r.body},
        _text_reply,
        lambda r: f"{r.id} {body_text(r.body)}",
    ),
    frames.Ask: _Object(
        _json_ask,
        lambda r: {
            "id": r.id,
            **({"to": r.name} if r.name is not None else {"service": r.service}),
            "body": r.body,
            **({"timeout": r.timeout} if r.timeout is not None else {}),
        },
        _text_ask,
        lambda r: f"{r.id} {r.name if r.name is not None else '@' + r.service} {body_text(r.body)}",
    ),
    frames.Auth: _Object(_json_auth, lambda r: {"token": r.token}, _text_auth, lambda r: r.token),
}


# ---- pushes ----


def _json_line(obj: dict[str, Any]) -> bytes:
    # "replace": a lone surrogate that got this far (it is refused on the way in)
    # becomes "?" rather than an exception in the middle of a fan-out.
    return (
        json.dumps(obj, ensure_ascii=False, separators=(",", ":")).encode("utf-8", "replace")
        + b"\n"
    )


def _one_line(text: str) -> str:
    # Text that did not come from a line (an operator broadcast) must not split a frame.
    return text.replace("\r", " ").replace("\n", " ")


def encode_push(push: frames.Push, encoding: Encoding, room: bool = False) -> bytes:
    """The line sent to a client for ``push``, terminator included.

    ``room``: the client is in the chat profile's room, whose text forms are the
    seed chat's (``NAME: text``); its JSON is everyone's.
    """
    if room and encoding is Encoding.TEXT and type(push) in _ROOM_TEXT:
        return _one_line(_ROOM_TEXT[type(push)](push)).encode("utf-8", "replace") + b"\n"
    if encoding is Encoding.JSON:
        kind, payload_of = _PUSH_JSON[type(push)]
        payload = payload_of(push)
        obj: dict[str, Any] = {"type": kind}
        if payload is not None:
            obj["payload"] = payload
        return _json_line(obj)
    return _one_line(_PUSH_TEXT[type(push)](push)).encode("utf-8", "replace") + b"\n"


#: The lane's pushes (`encode_parts`): a relay's delivery and its ok, a request and its
#: reply; each text line is its declared kind, then one text, or an id and a body.
_LANE_VERBS = {
    cls: PUSHES[cls].kind.encode("ascii") + b" "
    for cls in (RelayPush, AckPush, RequestPush, ReplyPush)
}
#: (A module name is read faster than an enum member: this is read twice an exchange.)
_TEXT = Encoding.TEXT

LanePush = type[RelayPush] | type[AckPush] | type[RequestPush] | type[ReplyPush]


def encode_parts(kind: LanePush, parts: tuple, encoding: Encoding) -> bytes:
    """``encode_push(kind(*parts), encoding)``, the value built only where it is needed:
    not for the text lines of the lane's pushes (`nea.core.lane`), two an exchange."""
    if encoding is _TEXT:
        if len(parts) == 1:
            text = parts[0]
        elif type(parts[1]) is str:  # (an id is validated printable ASCII)
            text = f"{parts[0]} {parts[1]}"
        else:
            text = None
        if text is not None and "\n" not in text and "\r" not in text:
            return _LANE_VERBS[kind] + text.encode("utf-8", "replace") + b"\n"
    return encode_push(kind(*parts), encoding)


def decode_push(line: bytes) -> frames.Push:
    """What a client makes of a line from the server (terminator removed).

    JSON lines decode exactly. Text lines are classified by their first word; a
    reversed reply that happens to look like a push cannot be told apart, which is
    why programs should speak JSON.
    """
    text = line.decode("utf-8", errors="replace")
    if text.startswith("{"):
        try:
            return _decode_json_push(json.loads(text))
        except (ValueError, KeyError, TypeError, AttributeError):
            pass
    return _decode_text_push(text)


def _decode_json_push(obj: dict[str, Any]) -> frames.Push:
    return _PUSH_KINDS[obj["type"]](obj.get("payload"))


def _decode_text_push(text: str) -> frames.Push:
    for parse in _LINE_PUSHES:
        push = parse(text)
        if push is not None:
            return push
    if text in _BARE_PUSHES:
        return _BARE_PUSHES[text]()
    verb, _, rest = text.partition(" ")
    parse_rest = _TEXT_PUSHES.get(verb)
    if parse_rest is not None:
        push = parse_rest(rest)
        if push is not None:
            return push
    return frames.ReverseReply(text)


# ---- the tables, from the frames' declarations ----


def _unique(pairs: Iterable[tuple[str, Any]]) -> dict[str, Any]:
    """A table by kind or verb; two declarations that claim one are a mistake."""
    table: dict[str, Any] = {}
    for key, value in pairs:
        if key in table:
            raise ValueError(f"{key!r} is declared twice")
        table[key] = value
    return table


def _text_verb(form: RequestForm) -> Callable[[str], frames.Request]:
    """What reads the text after ``form``'s verb."""
    if form.payload is Payload.TEXT:
        return form.cls
    if form.payload is Payload.NAME:
        return lambda rest: form.cls(rest.strip())
    if form.payload is Payload.COUNT:
        return lambda rest: _count(form, rest.strip())
    return _OBJECTS[form.cls].from_text


def _request_payload(form: RequestForm) -> Callable[[Any], Any]:
    """What gives ``form``'s JSON payload (None: it has none)."""
    if form.payload is Payload.NONE:
        return lambda request: None
    if form.payload is Payload.OBJECT:
        return _OBJECTS[form.cls].to_json
    return attrgetter(form.field)


def _push_payload(form: PushForm) -> Callable[[Any], Any]:
    """What gives ``form``'s JSON payload (None: it has none)."""
    if form.body is Body.NONE:
        return lambda push: None
    if form.body is not Body.FIELDS:
        return attrgetter(form.keys[0][1])
    items = ", ".join(
        f"**({{{key!r}: push.{name}}} if push.{name} is not None else {{}})"
        if name in form.omit_none
        else f"{key!r}: push.{name}"
        for key, name in form.keys
    )
    return _compiled(f"lambda push: {{{items}}}", {})


def _compiled(source: str, names: dict[str, Any]) -> Callable[[Any], Any]:
    """A lambda made from declarations, as dataclasses and attrs make their methods: a dict
    display or a call written out runs three times as fast as a loop over the fields, and
    fan-outs and loads run these once per frame. ``source`` holds only declared names."""
    return eval(source, names)  # noqa: S307


def _push_reader(form: PushForm) -> Callable[[Any], frames.Push]:
    """What makes the push from ``form``'s JSON payload (raises when it is not one)."""
    cls = form.cls
    if form.body is Body.NONE:
        return lambda payload: cls()
    if form.body is Body.MAPPING:
        return lambda payload: cls(dict(payload))
    if form.body is Body.STRING:

        def string(payload: Any) -> frames.Push:
            if not isinstance(payload, str):
                raise TypeError(form.kind)
            return cls(payload)

        return string
    defaults = {field.name: field.default for field in attrs.fields(cls)}
    args = ", ".join(
        f"{name}=payload[{key!r}]"
        if defaults[name] is attrs.NOTHING
        else f"{name}=payload.get({key!r}, default_{name})"
        for key, name in form.keys
    )
    names = {f"default_{name}": default for name, default in defaults.items()}
    return _compiled(f"lambda payload: cls({args})", {"cls": cls, **names})


_REQUEST_KINDS = {cls: (form, _request_payload(form)) for cls, form in REQUESTS.items()}
#: JSON ``type`` -> what reads its payload; its order is the one ``unknown_type`` lists.
_JSON_KINDS = _unique(
    (kind, _json_reader(form)) for form in REQUESTS.values() for kind in (form.kind, *form.aliases)
)
#: Text verb -> what reads the rest of the line (where the profile names the verb).
_TEXT_VERBS = _unique(
    (form.kind, _text_verb(form)) for form in REQUESTS.values() if form.line is Line.VERB
)
#: Whole lines that are a request (``exit``, ``ping``), where the profile offers it.
_WORDS = _unique(
    (kind, form.cls)
    for form in REQUESTS.values()
    if form.line is Line.WORD
    for kind in (form.kind, *form.aliases)
)

_PUSH_JSON = {cls: (form.kind, _push_payload(form)) for cls, form in PUSHES.items()}
_PUSH_TEXT = {cls: form.text for cls, form in PUSHES.items()}
#: The chat room's text forms (the chat profile), where they differ from `_PUSH_TEXT`.
_ROOM_TEXT = {cls: form.room for cls, form in PUSHES.items() if form.room is not None}
_PUSH_KINDS = _unique((form.kind, _push_reader(form)) for form in PUSHES.values())
#: Pushes read from their whole text line (a date), then those that are one word (``bye``),
#: then those read by their first word.
_LINE_PUSHES = tuple(
    form.parse for form in PUSHES.values() if form.verb is None and form.parse is not None
)
_BARE_PUSHES = _unique((form.kind, form.cls) for form in PUSHES.values() if form.body is Body.NONE)
_TEXT_PUSHES = _unique(
    (form.verb, form.parse)
    for form in PUSHES.values()
    if form.verb is not None and form.parse is not None
)
