"""Frames as immutable values.

Requests travel from a client to the server, pushes from the server to a client.
The codec turns bytes into these and back; nothing else in nea looks at bytes.
"""

import enum
from typing import Any, Union

import attrs

from nea.wire.errors import ErrorCode


class Encoding(enum.Enum):
    """How a connection's frames are written: text lines, or JSON objects one per line."""

    TEXT = "text"
    JSON = "json"


# ---- requests (client -> server) ----


@attrs.frozen
class Relay:
    """``message X``: forward X to a random relay-capable connection and wait for ``ok X``."""

    text: str


@attrs.frozen
class Ack:
    """``ok X``: acknowledge a forwarded ``message X``."""

    text: str


@attrs.frozen
class Chat:
    """Say something to every chat-capable client of the cluster."""

    text: str


@attrs.frozen
class Reverse:
    """Ask for the text back, reversed by grapheme clusters."""

    text: str


@attrs.frozen
class Nick:
    """Choose the name shown with this connection's chat lines."""

    name: str


@attrs.frozen
class Hello:
    """Switch to JSON (by being a JSON frame) and learn this connection's identity."""


@attrs.frozen
class Status:
    """Ask for the status of this instance and its cluster."""


@attrs.frozen
class Exit:
    """Say goodbye; the server answers ``bye`` and closes the connection."""


@attrs.frozen
class Ping:
    """Are you there? The server answers ``pong``."""


@attrs.frozen
class Pong:
    """The answer to the server's ``ping`` (any line shows the client is there as well)."""


@attrs.frozen
class Invalid:
    """A line that could not be understood; answered with an error, never dropped silently."""

    error: ErrorCode
    detail: str = ""


@attrs.frozen
class Register:
    """``register NAME``: make this connection addressable as NAME across the cluster."""

    name: str


@attrs.frozen
class Serve:
    """``serve SERVICE``: join a service group; requests to it may be drawn to this connection."""

    service: str


@attrs.frozen
class Unserve:
    """``unserve SERVICE``: leave a service group."""

    service: str


@attrs.frozen
class Reply:
    """``reply ID BODY``: the answer to a ``request ID`` pushed to this connection."""

    id: str
    body: Any = attrs.field(eq=True, hash=False)


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


@attrs.frozen
class Auth:
    """``auth TOKEN``: become the identity a JSON Web Token says, with its permissions."""

    token: str = attrs.field(repr=False)  # a secret: never in a log line


# ---- chat history requests ----


@attrs.frozen
class History:
    """``history N``: the last N stored chat lines, oldest first, then `HistoryEnd`."""

    count: int


@attrs.frozen
class Since:
    """``since ID``: the stored chat lines after ID, oldest first, then `HistoryEnd`."""

    last_id: int


Request = Union[
    Relay, Ack, Chat, Reverse, Nick, Hello, Status, Exit, Invalid,
    Register, Serve, Unserve, Reply, Ask, History, Since, Auth, Ping, Pong,
]


# ---- pushes (server -> client) ----


@attrs.frozen
class DatePush:
    """The current date, ``YYYY-MM-DD``, pushed every interval."""

    date: str


@attrs.frozen
class RelayPush:
    """A ``message X`` forwarded to this connection; answer with ``ok X``."""

    text: str


@attrs.frozen
class AckPush:
    """The ``ok X`` for a ``message X`` this connection sent."""

    text: str


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


@attrs.frozen
class BroadcastPush:
    """A message from the operator to every chat-capable client.

    Stored like chat; ``id`` and ``time`` travel between instances, not to clients
    (a live broadcast's JSON payload stays a string).
    """

    text: str
    id: int | None = None
    time: str | None = attrs.field(default=None, eq=False)


@attrs.frozen
class ReverseReply:
    text: str


@attrs.frozen
class NickReply:
    name: str


@attrs.frozen
class Welcome:
    """The answer to ``hello``: who this connection is and where it landed."""

    name: str
    instance: str
    profile: str


@attrs.frozen
class StatusReply:
    status: dict[str, Any] = attrs.field(eq=True, hash=False)


@attrs.frozen
class ErrorReply:
    code: str
    message: str
    #: The asker's id of the ``ask`` this error answers, else None.
    id: str | None = None


@attrs.frozen
class Registered:
    """This connection is now addressable as ``name``."""

    name: str


@attrs.frozen
class Serving:
    service: str


@attrs.frozen
class Unserved:
    service: str


@attrs.frozen
class RequestPush:
    """A request for this connection: answer with ``reply ID BODY``.

    ``service`` is the service it was drawn for, None when it was addressed by name.
    """

    id: str
    body: Any = attrs.field(eq=True, hash=False)
    service: str | None = None


@attrs.frozen
class ReplyPush:
    """The reply to an ``ask`` this connection made; ``instance``: where the answering client is."""

    id: str
    body: Any = attrs.field(eq=True, hash=False)
    instance: str = ""


@attrs.frozen
class Authenticated:
    """The answer to an accepted ``auth``: the connection is now ``subject``."""

    subject: str


@attrs.frozen
class Bye:
    """Sent just before the server closes the connection politely."""


@attrs.frozen
class PingPush:
    """The server has heard nothing from the client for a while: answer ``pong``."""


@attrs.frozen
class PongPush:
    """The answer to the client's ``ping``."""


# ---- chat history and presence pushes ----


@attrs.frozen
class HistoryLine:
    """One stored line replayed by ``history`` or ``since``; ``name`` None for a broadcast."""

    id: int
    time: str
    kind: str  #: ``chat`` or ``broadcast``
    name: str | None
    text: str


@attrs.frozen
class HistoryEnd:
    """The end of a replay: the last id replayed (or the one asked), and whether more follow."""

    last_id: int
    more: bool


@attrs.frozen
class Presence:
    """A chat-profile client joined or left the room."""

    name: str
    event: str  #: ``joined`` or ``left``


@attrs.frozen
class Gap:
    """Chat lines said in the cluster between ``since`` and ``until`` (ISO 8601 UTC) may
    not have reached this client: the instance lost the cluster's bus meanwhile and
    could not catch its clients up from a shared store. ``last_id``: the last stored
    line it delivered (0: none), for a ``since`` once history is there again."""

    since: str
    until: str
    last_id: int


Push = Union[
    HistoryLine,
    Gap,
    HistoryEnd,
    Presence,
    DatePush,
    RelayPush,
    AckPush,
    ChatPush,
    BroadcastPush,
    ReverseReply,
    NickReply,
    Welcome,
    StatusReply,
    ErrorReply,
    Bye,
    PingPush,
    PongPush,
    Registered,
    Serving,
    Unserved,
    RequestPush,
    ReplyPush,
    Authenticated,
]
