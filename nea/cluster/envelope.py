"""What instances say to each other over Redis pub/sub, as values, and its JSON form.

Every publication is one JSON object naming its sender (``from``) and kind (``op``);
chat and broadcast pushes travel in the codec's own JSON encoding so there is one
definition of what a push looks like.
"""

import json
from typing import Any

import attrs

from nea.core.requests import Offer
from nea.wire import codec
from nea.wire.frames import BroadcastPush, ChatPush, Encoding, Presence


@attrs.frozen
class Deliver:
    """Forward ``message text`` to one of your relay-capable connections (``relay``: the
    origin's id of the relay, which its confirmation or re-forward names)."""

    text: str
    origin: str
    attempt: int
    relay: str


@attrs.frozen
class Confirm:
    """The ``ok`` came back for relay ``relay``, which you originated."""

    relay: str


@attrs.frozen
class Reforward:
    """A delivery of relay ``relay``, which you originated, failed; ``attempt`` > 0 means
    I had nobody to take it."""

    relay: str
    attempt: int


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
Message = Deliver | Confirm | Reforward | Event | Leave | Offer | Answer | Refuse | Claim

#: The op names are what instances of every version exchange: never rename one.
_OPS: dict[type, str] = {
    Deliver: "deliver",
    Confirm: "ack",
    Reforward: "reforward",
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
    """``(sender, message)``; ValueError for anything that is not a well-formed message."""
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
    except (ValueError, KeyError, TypeError, AttributeError) as e:
        raise ValueError(f"malformed cluster message {data!r}: {e}") from None


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
