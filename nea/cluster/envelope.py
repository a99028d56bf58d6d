"""What instances say to each other over Redis pub/sub: its values and its text form.

One message is one line (a line never holds a newline, so a batch of them is
newline-joined: `nea.cluster.batch`). The three kinds of a crossing relay, the
bulk of the traffic, are compact lines read with one split and handed to a
`Receiver` as plain arguments, with no JSON and no value built per message::

    d SENDER ORIGIN ATTEMPT RELAY TEXT   deliver TEXT (relay RELAY of ORIGIN)
    a SENDER RELAY [RELAY ...]           ack: each RELAY, which you originated, was acked
    r SENDER RELAY ATTEMPT               reforward: a delivery of RELAY failed

The acks one instance sends another in one reactor turn share a line (the
batcher's merged lines: `nea.cluster.batch.Batcher.publish_word`).

A field holding a backslash, a newline or a space has them escaped (``\\\\``,
``\\n``, ``\\s``); the text, last on its line, may hold spaces as they are. Every other
kind is one JSON object naming its sender (``from``) and kind (``op``), as values;
chat and broadcast pushes travel in the codec's own JSON encoding so there is one
definition of what a push looks like.

Instances of another format do not read these lines: the heartbeat record's
version (`nea.cluster.record`) changes with the format, so that they never
exchange relays.
"""

import json
import re
from typing import Any
from typing import Protocol as TypingProtocol

import attrs

from nea.core.requests import Offer
from nea.wire import codec
from nea.wire.frames import BroadcastPush, ChatPush, Encoding, Presence


class Malformed(ValueError):
    """Not a well-formed message (and nothing else went wrong)."""


@attrs.frozen
class Event:
    """Chat or an operator broadcast to deliver to your own clients."""

    push: ChatPush | BroadcastPush | Presence


@attrs.frozen
class Leave:
    """I am stopping: forget me now rather than when my heartbeat expires."""

    run: str


@attrs.frozen
class Answer:
    """The reply to request ``id`` you originated (the sender is where the client is)."""

    id: str
    body: object = attrs.field(eq=True, hash=False)


@attrs.frozen
class Refuse:
    """Request ``id`` you originated: I cannot take it, or its client left (``code``)."""

    id: str
    code: str


@attrs.frozen
class Claim:
    """``name`` was registered here at ``stamp``: an older registration of it ends."""

    name: str
    stamp: float


#: `Offer` (``offer``) is the core's own value: a request on its way to a client.
Message = Event | Leave | Offer | Answer | Refuse | Claim


class Receiver(TypingProtocol):
    """What `read` hands each message to (implemented by `nea.cluster.redisbus.RedisBus`)."""

    def delivered(self, sender: str, text: str, origin: str, attempt: int, relay: str) -> None:
        """Forward ``message text`` to one of your relay-capable connections (``relay``: the
        origin's id of the relay, which its confirmation or re-forward names)."""

    def confirmed(self, sender: str, relays: list[str]) -> None:
        """The ``ok`` came back for each of ``relays``, which you originated."""

    def reforwarded(self, sender: str, relay: str, attempt: int) -> None:
        """A delivery of relay ``relay``, which you originated, failed; ``attempt`` > 0
        means ``sender`` had nobody to take it."""

    def heard(self, sender: str, message: Message) -> None:
        """Any other kind of message."""


# ---- the compact kinds ----

_ESCAPE = str.maketrans({"\\": "\\\\", "\n": "\\n", " ": "\\s"})
_UNESCAPE = {"\\\\": "\\", "\\n": "\n", "\\s": " "}
_ESCAPED = re.compile(r"\\.?", re.DOTALL)


def _bare(words: str) -> bool:
    """No field in ``words`` needs an escape (the usual case: checked once per line)."""
    return " " not in words and "\n" not in words and "\\" not in words


def _escaped(*fields: str) -> list[str]:
    """The fields with every space, newline and backslash escaped."""
    return [field.translate(_ESCAPE) for field in fields]


def _plain(field: str) -> str:
    """A field as it was before `_escaped` (KeyError: not an escape of its)."""
    return _ESCAPED.sub(lambda m: _UNESCAPE[m[0]], field) if "\\" in field else field


def _count(field: str) -> int:
    if not (field.isascii() and field.isdigit()):
        raise ValueError(f"not a count: {field!r}")
    return int(field)


def deliver(sender: str, text: str, origin: str, attempt: int, relay: str) -> str:
    if not _bare(f"{sender}{origin}{relay}") or "\n" in text or "\\" in text:
        # the text's spaces too: read unescapes every field alike
        sender, origin, relay, text = _escaped(sender, origin, relay, text)
    return f"d {sender} {origin} {attempt} {relay} {text}"


def confirm_head(sender: str) -> str:
    """What an ack line starts with; its relays follow, each a `word`, space-separated."""
    return f"a {word(sender)}"


def word(field: str) -> str:
    """``field`` as one space-free word of a line (the relays of an ack line are words
    the batcher appends to its head: `nea.cluster.batch.Batcher.publish_word`)."""
    return field if _bare(field) else field.translate(_ESCAPE)


def reforward(sender: str, relay: str, attempt: int) -> str:
    if not _bare(f"{sender}{relay}"):
        sender, relay = _escaped(sender, relay)
    return f"r {sender} {relay} {attempt}"


def read(line: str, receiver: Receiver) -> None:
    """Hand the message ``line`` holds to ``receiver``; `Malformed` (a ValueError) for
    anything that is not a well-formed message, and then nothing is handed on."""
    op = line[:2]
    if op not in _COMPACT:
        receiver.heard(*decode(line))
        return
    try:
        fields = line.split(" ", 5) if op == "d " else line.split(" ")
        if "\\" in line:
            fields = [_plain(field) for field in fields]
        if op == "d ":
            _, sender, origin, attempt, relay, text = fields
        elif op == "a ":
            _, sender, *relays = fields
            if not relays:
                raise ValueError("an ack of nothing")
        else:
            _, sender, relay, attempt = fields
        # Nearly every attempt is a first one.
        count = 0 if op == "a " or attempt == "0" else _count(attempt)
    except (ValueError, KeyError) as e:
        raise Malformed(f"malformed cluster message {line!r:.200}: {e}") from None
    # Outside the try: what the receiver raises is its own.
    if op == "d ":
        receiver.delivered(sender, text, origin, count, relay)
    elif op == "a ":
        receiver.confirmed(sender, relays)
    else:
        receiver.reforwarded(sender, relay, count)


_COMPACT = frozenset(["d ", "a ", "r "])


# ---- the JSON kinds ----

#: The op names are what instances of every version exchange: never rename one.
_OPS: dict[type, str] = {
    Event: "event",
    Leave: "leave",
    Offer: "offer",
    Answer: "answer",
    Refuse: "refuse",
    Claim: "claim",
}
_KINDS = {op: kind for kind, op in _OPS.items()}
# json.dumps with arguments builds an encoder per call; this one is built once.
_JSON = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"))


#: The plain (non-Event) kinds' fields and their types, looked up once, not per message.
_FIELDS: dict[type, list[tuple[str, type]]] = {
    kind: [(field.name, field.type) for field in attrs.fields(kind)]
    for kind in _OPS
    if kind is not Event
}


def encode(sender: str, message: Message) -> str:
    fields: dict[str, Any] = {"op": _OPS[type(message)], "from": sender}
    if isinstance(message, Event):
        fields["push"] = codec.encode_push(message.push, Encoding.JSON).decode("utf-8")
        if isinstance(message.push, BroadcastPush):
            # A broadcast's JSON payload is its bare text: its history id travels beside it.
            fields["id"], fields["time"] = message.push.id, message.push.time
    else:
        for name, _ in _FIELDS[type(message)]:
            fields[name] = getattr(message, name)
    return _JSON.encode(fields)


def decode(data: str | bytes) -> tuple[str, Message]:
    """``(sender, message)`` of a JSON kind; `Malformed` for anything else."""
    try:
        fields = json.loads(data)
        op, sender = fields.pop("op"), fields.pop("from")
        if op == "event":
            push = codec.decode_push(fields["push"].rstrip("\n").encode("utf-8"))
            if not isinstance(push, (ChatPush, BroadcastPush, Presence)):
                raise TypeError(f"not a chat, broadcast or presence push: {push!r}")
            if isinstance(push, BroadcastPush):
                push = attrs.evolve(
                    push,
                    id=_optional(fields.get("id"), int),
                    time=_optional(fields.get("time"), str),
                )
            message: Message = Event(push)
        else:
            kind = _KINDS[op]
            message = kind(**fields)
            _check_types(message)
        if not isinstance(sender, str):
            raise TypeError("sender must be a string")
        return sender, message
    except (ValueError, KeyError, TypeError, AttributeError, RecursionError) as e:
        # RecursionError: JSON nested deeper than the parser goes
        raise Malformed(f"malformed cluster message {data!r:.200}: {e}") from None


def _optional(value, kind: type):
    if value is not None and (not isinstance(value, kind) or isinstance(value, bool)):
        raise TypeError(f"{value!r} is not {kind.__name__}")
    return value


def _check_types(message: Message) -> None:
    for name, kind in _FIELDS[type(message)]:
        value = getattr(message, name)
        if kind is object:  # a body: any JSON value
            continue
        if kind is float and isinstance(value, int) and not isinstance(value, bool):
            continue  # JSON does not tell 5 from 5.0
        if not isinstance(value, kind) or isinstance(value, bool):
            raise TypeError(f"{name} must be {getattr(kind, '__name__', kind)}")
