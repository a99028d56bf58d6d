"""Frames as immutable values.

Requests travel from a client to the server, pushes from the server to a client.
The codec turns bytes into these and back; nothing else in nea looks at bytes.
Each frame declares how it travels (`nea.wire.forms`) just above its class: its
kind (JSON ``type`` and text verb), the shape of its payload and its text form.
"""

import enum
import json
import re
from typing import Any

import attrs

from nea.wire.errors import ErrorCode
from nea.wire.forms import Body, Line, Payload, body_text, push, request, said


class Encoding(enum.Enum):
    """How a connection's frames are written: text lines, or JSON objects one per line."""

    TEXT = "text"
    JSON = "json"


# ---- requests (client -> server) ----


@request("message", Payload.TEXT, Line.VERB)
@attrs.frozen
class Relay:
    """``message X``: forward X to a random relay-capable connection and wait for ``ok X``."""

    text: str


@request("ok", Payload.TEXT, Line.VERB)
@attrs.frozen
class Ack:
    """``ok X``: acknowledge a forwarded ``message X``."""

    text: str


@request("chat", Payload.TEXT, Line.VERB)
@attrs.frozen
class Chat:
    """Say something to every chat-capable client of the cluster."""

    text: str


@request("reverse", Payload.TEXT, Line.PLAIN)
@attrs.frozen
class Reverse:
    """Ask for the text back, reversed by grapheme clusters."""

    text: str


@request("nick", Payload.NAME, Line.VERB)
@attrs.frozen
class Nick:
    """Choose the name shown with this connection's chat lines."""

    name: str


@request("hello", Payload.NONE, Line.JSON)
@attrs.frozen
class Hello:
    """Switch to JSON (by being a JSON frame) and learn this connection's identity."""


@request("status", Payload.NONE, Line.JSON)
@attrs.frozen
class Status:
    """Ask for the status of this instance and its cluster."""


@request("exit", Payload.NONE, Line.WORD, aliases=("quit",))
@attrs.frozen
class Exit:
    """Say goodbye; the server answers ``bye`` and closes the connection."""


@request("ping", Payload.NONE, Line.WORD)
@attrs.frozen
class Ping:
    """Are you there? The server answers ``pong``."""


@request("pong", Payload.NONE, Line.WORD)
@attrs.frozen
class Pong:
    """The answer to the server's ``ping`` (any line shows the client is there as well)."""


@attrs.frozen
class Invalid:
    """A line that could not be understood; answered with an error, never dropped silently."""

    error: ErrorCode
    detail: str = ""


@request("register", Payload.NAME, Line.VERB)
@attrs.frozen
class Register:
    """``register NAME``: make this connection addressable as NAME across the cluster."""

    name: str


@request("serve", Payload.NAME, Line.VERB)
@attrs.frozen
class Serve:
    """``serve SERVICE``: join a service group; requests to it may be drawn to this connection."""

    service: str


@request("unserve", Payload.NAME, Line.VERB)
@attrs.frozen
class Unserve:
    """``unserve SERVICE``: leave a service group."""

    service: str


@request("reply", Payload.OBJECT, Line.VERB)
@attrs.frozen
class Reply:
    """``reply ID BODY``: the answer to a ``request ID`` pushed to this connection."""

    id: str
    body: Any = attrs.field(eq=True, hash=False)


@request("ask", Payload.OBJECT, Line.VERB)
@attrs.frozen
class Ask:
    """``ask ID NAME BODY`` or ``ask ID @SERVICE BODY``: a request from this connection.

    Exactly one of ``name`` and ``service`` is set; ``id`` is the asker's own, echoed in
    the reply (or error) it gets; ``timeout`` in seconds, None for the server's default.
    """

    id: str
    name: str | None
    service: str | None
    body: Any = attrs.field(eq=True, hash=False)
    timeout: float | None = None


# ---- chat history requests ----


@request("history", Payload.COUNT, Line.VERB)
@attrs.frozen
class History:
    """``history N``: the last N stored chat lines, oldest first, then `HistoryEnd`."""

    count: int


@request("since", Payload.COUNT, Line.VERB)
@attrs.frozen
class Since:
    """``since ID``: the stored chat lines after ID, oldest first, then `HistoryEnd`."""

    last_id: int


# ---- identity (declared last: ``unknown_type`` lists the kinds in declaration order) ----


@request("auth", Payload.OBJECT, Line.VERB)
@attrs.frozen
class Auth:
    """``auth TOKEN``: become the identity a JSON Web Token says, with its permissions."""

    token: str = attrs.field(repr=False)  # a secret: never in a log line


Request = (
    Relay
    | Ack
    | Chat
    | Reverse
    | Nick
    | Hello
    | Status
    | Exit
    | Invalid
    | Register
    | Serve
    | Unserve
    | Reply
    | Ask
    | History
    | Since
    | Auth
    | Ping
    | Pong
)


# ---- pushes (server -> client) ----

_DATE = re.compile(r"\d{4}-\d{2}-\d{2}\Z")


@push(
    "date",
    lambda p: p.date,
    body=Body.STRING,
    verb=None,
    parse=lambda line: DatePush(line) if _DATE.match(line) else None,
)
@attrs.frozen
class DatePush:
    """The current date, ``YYYY-MM-DD``, pushed every interval."""

    date: str


@push("message", body=Body.STRING)
@attrs.frozen
class RelayPush:
    """A ``message X`` forwarded to this connection; answer with ``ok X``."""

    text: str


@push("ok", body=Body.STRING)
@attrs.frozen
class AckPush:
    """The ``ok X`` for a ``message X`` this connection sent."""

    text: str


def _chat_push(rest: str) -> "ChatPush | None":
    sender, said_, text = rest.partition(": ")
    return ChatPush(sender, text) if said_ else None


@push(
    "chat",
    lambda p: f"chat {p.sender}: {p.text}",
    keys={"sender": "from"},
    parse=_chat_push,
    room=lambda p: said(p.sender, p.text),
)
@attrs.frozen
class ChatPush:
    """A chat line and the name of whoever said it.

    ``id`` is the history store's (None: it went out unsaved), ``time`` when it
    was said (ISO 8601 UTC); both travel in JSON only.
    """

    sender: str
    text: str
    id: int | None = None
    #: Not part of a push's identity: the same line compares equal whenever it was said.
    time: str | None = attrs.field(default=None, eq=False)


@push("broadcast", body=Body.STRING, room=lambda p: said(None, p.text))
@attrs.frozen
class BroadcastPush:
    """A message from the operator to every chat-capable client.

    Stored like chat; ``id`` and ``time`` travel between instances, not to clients
    (a live broadcast's JSON payload stays a string).
    """

    text: str
    id: int | None = None
    time: str | None = attrs.field(default=None, eq=False)


@push("reverse", lambda p: p.text, body=Body.STRING, verb=None)  # what no other push is
@attrs.frozen
class ReverseReply:
    text: str


@push("nick", body=Body.STRING, room=lambda p: f"* welcome {p.name}")
@attrs.frozen
class NickReply:
    name: str


@push(
    "welcome",
    lambda p: f"welcome {p.name} {p.instance} {p.profile}",
    parse=lambda rest: Welcome(*rest.split(" ")) if rest.count(" ") == 2 else None,
)
@attrs.frozen
class Welcome:
    """The answer to ``hello``: who this connection is and where it landed."""

    name: str
    instance: str
    profile: str


@push("status", lambda p: json.dumps(p.status, separators=(",", ":")), body=Body.MAPPING, verb=None)
@attrs.frozen
class StatusReply:
    status: dict[str, Any] = attrs.field(eq=True, hash=False)


@push(
    "error",
    lambda p: f"error {p.code} {p.message}",
    omit_none=("id",),
    parse=lambda rest: ErrorReply(*rest.partition(" ")[::2]),
)
@attrs.frozen
class ErrorReply:
    code: str
    message: str
    #: The asker's id of the ``ask`` this error answers, else None.
    id: str | None = None


@push("registered", body=Body.STRING)
@attrs.frozen
class Registered:
    """This connection is now addressable as ``name``."""

    name: str


@push("serving", body=Body.STRING)
@attrs.frozen
class Serving:
    service: str


@push("unserved", body=Body.STRING)
@attrs.frozen
class Unserved:
    service: str


@push(
    "request",
    lambda p: f"request {p.id} {body_text(p.body)}",
    parse=lambda rest: RequestPush(*rest.partition(" ")[::2]) if rest else None,
)
@attrs.frozen
class RequestPush:
    """A request for this connection: answer with ``reply ID BODY``.

    ``service`` is the service it was drawn for, None when it was addressed by name.
    """

    id: str
    body: Any = attrs.field(eq=True, hash=False)
    service: str | None = None


@push(
    "reply",
    lambda p: f"reply {p.id} {body_text(p.body)}",
    parse=lambda rest: ReplyPush(*rest.partition(" ")[::2]) if rest else None,
)
@attrs.frozen
class ReplyPush:
    """The reply to an ``ask`` this connection made; ``instance``: where the answering client is."""

    id: str
    body: Any = attrs.field(eq=True, hash=False)
    instance: str = ""


@push(
    "authenticated",
    lambda p: f"authenticated {p.subject}",
    keys={"subject": "sub"},
    parse=lambda rest: Authenticated(rest) if rest else None,
)
@attrs.frozen
class Authenticated:
    """The answer to an accepted ``auth``: the connection is now ``subject``."""

    subject: str


@push("bye")
@attrs.frozen
class Bye:
    """Sent just before the server closes the connection politely."""


@push("ping")
@attrs.frozen
class PingPush:
    """The server has heard nothing from the client for a while: answer ``pong``."""


@push("pong")
@attrs.frozen
class PongPush:
    """The answer to the client's ``ping``."""


# ---- chat history and presence pushes ----


@push(
    "history",
    lambda p: f"history {p.id} {p.time} {said(p.name, p.text)}",
    keys={"name": "from"},
    parse=lambda rest: _history_line(rest),
)
@attrs.frozen
class HistoryLine:
    """One stored line replayed by ``history`` or ``since``; ``name`` None for a broadcast."""

    id: int
    time: str
    kind: str  #: ``chat`` or ``broadcast``
    name: str | None
    text: str


@push(
    "history_end",
    lambda p: f"history_end {p.last_id} {int(p.more)}",
    parse=lambda rest: (
        HistoryEnd(int(rest[:-2]), rest[-1] == "1") if re.fullmatch(r"\d+ [01]", rest) else None
    ),
)
@attrs.frozen
class HistoryEnd:
    """The end of a replay: the last id replayed (or the one asked), and whether more follow."""

    last_id: int
    more: bool


@push("presence", lambda p: f"* {p.name} {p.event}", verb=None)  # not read back
@attrs.frozen
class Presence:
    """A chat-profile client joined or left the room."""

    name: str
    event: str  #: ``joined`` or ``left``


def _gap(rest: str) -> "Gap | None":
    found = re.fullmatch(r"(\S+) (\S+) (\d+)", rest)
    return Gap(found[1], found[2], int(found[3])) if found else None


@push("gap", lambda p: f"gap {p.since} {p.until} {p.last_id}", parse=_gap)
@attrs.frozen
class Gap:
    """Chat lines said in the cluster between ``since`` and ``until`` (ISO 8601 UTC) may
    not have reached this client: the instance lost the cluster's bus meanwhile and
    could not catch its clients up from a shared store. ``last_id``: the last stored
    line it delivered (0: none), for a ``since`` once history is there again."""

    since: str
    until: str
    last_id: int


def _history_line(rest: str) -> HistoryLine | None:
    """``ID TIME NAME: text`` or ``ID TIME * text`` (the operator's)."""
    id, _, rest = rest.partition(" ")
    time, _, line = rest.partition(" ")
    if not id.isdigit():
        return None
    if line.startswith("* "):
        return HistoryLine(int(id), time, "broadcast", None, line[2:])
    name, _, line = line.partition(": ")
    return HistoryLine(int(id), time, "chat", name, line)


Push = (
    HistoryLine
    | Gap
    | HistoryEnd
    | Presence
    | DatePush
    | RelayPush
    | AckPush
    | ChatPush
    | BroadcastPush
    | ReverseReply
    | NickReply
    | Welcome
    | StatusReply
    | ErrorReply
    | Bye
    | PingPush
    | PongPush
    | Registered
    | Serving
    | Unserved
    | RequestPush
    | ReplyPush
    | Authenticated
)
