"""How each frame travels, declared once, beside its class in `nea.wire.frames`.

A request declares its kind (its JSON ``type``, and its verb in text), the shape
of its payload and where its text form is recognised; a push declares its kind,
the shape of its JSON payload, its text form and how that text is read back.
`nea.wire.codec` builds every table it dispatches on from these declarations,
and `nea.wire.profiles` names requests by kind. Nothing here looks at bytes.
"""

import enum
import json
from collections.abc import Callable, Mapping
from operator import attrgetter
from typing import Any

import attrs


class Payload(enum.Enum):
    """A request's payload as the codec reads it (JSON ``payload``, or the text after the verb)."""

    NONE = "none"  #: nothing: the verb alone
    TEXT = "text"  #: a string; in text, the rest of the line as it is
    NAME = "name"  #: a string; in text, the rest of the line without surrounding blanks
    COUNT = "count"  #: a count of stored chat lines, an integer >= 0
    OBJECT = "object"  #: a JSON object the codec reads field by field (its own reader)


class Line(enum.Enum):
    """Where a request's text form is recognised."""

    VERB = "verb"  #: ``VERB payload`` starts a line, in a profile that names the verb
    WORD = "word"  #: the verb is the whole line, in a profile that offers the request
    PLAIN = "plain"  #: a line that is no verb, in a profile whose plain request it is
    JSON = "json"  #: nowhere: JSON only


class Body(enum.Enum):
    """A push's JSON payload."""

    NONE = "none"  #: no payload
    STRING = "string"  #: the push's one field, a string
    MAPPING = "mapping"  #: the push's one field, a JSON object
    FIELDS = "fields"  #: an object of the push's fields, in their order


@attrs.frozen
class RequestForm:
    cls: type
    #: The JSON ``type``, and the verb of the text form; `aliases` mean the same.
    kind: str
    payload: Payload
    line: Line
    aliases: tuple[str, ...] = ()

    @property
    def field(self) -> str:
        """The attribute a one-value payload (TEXT, NAME, COUNT) fills."""
        return attrs.fields(self.cls)[0].name


@attrs.frozen
class PushForm:
    cls: type
    #: The JSON ``type``.
    kind: str
    body: Body
    #: The text line, terminator excluded.
    text: Callable[[Any], str]
    #: The first word of the text form, which `parse` reads on from; None: it has none.
    verb: str | None
    #: The push, from the text after `verb` (or the whole line when `verb` is None), or
    #: None when the line is not this push; None: the text form is not read back (a
    #: push without fields is read as its whole line, its kind).
    parse: Callable[[str], Any] | None = None
    #: The text form in the chat profile's room, where it differs.
    room: Callable[[Any], str] | None = None
    #: FIELDS: the JSON key of each field, in order, and those left out when None.
    keys: tuple[tuple[str, str], ...] = ()
    omit_none: frozenset[str] = frozenset()


#: Every declared request and push, by class, in the order of their declarations.
REQUESTS: dict[type, RequestForm] = {}
PUSHES: dict[type, PushForm] = {}


def request(kind: str, payload: Payload, line: Line, aliases: tuple[str, ...] = ()):
    """Class decorator: declare a request frame (see `RequestForm`)."""

    def declare(cls: type) -> type:
        REQUESTS[cls] = RequestForm(cls, kind, payload, line, aliases)
        return cls

    return declare


def push(
    kind: str,
    text: Callable[[Any], str] | None = None,
    *,
    body: Body | None = None,
    verb: str | None = "",
    parse: Callable[[str], Any] | None = None,
    room: Callable[[Any], str] | None = None,
    keys: Mapping[str, str] | None = None,
    omit_none: tuple[str, ...] = (),
):
    """Class decorator: declare a push frame (see `PushForm`).

    The defaults: ``body`` FIELDS (NONE for a push without fields); ``verb`` the
    kind; ``text`` the kind alone (NONE) or ``KIND value`` (STRING), else required;
    ``parse`` ``cls(rest)`` for a STRING push; ``keys`` renames fields in JSON.
    """

    def declare(cls: type) -> type:
        fields = [field.name for field in attrs.fields(cls)]
        shape = body if body is not None else Body.FIELDS if fields else Body.NONE
        word = kind if verb == "" else verb
        reader = parse if parse is not None or shape is not Body.STRING or word is None else cls
        PUSHES[cls] = PushForm(
            cls,
            kind,
            shape,
            text if text is not None else _default_text(kind, shape, fields),
            word,
            reader,
            room,
            tuple(((keys or {}).get(name, name), name) for name in fields),
            frozenset(omit_none),
        )
        return cls

    return declare


def _default_text(kind: str, shape: Body, fields: list[str]) -> Callable[[Any], str]:
    if shape is Body.NONE:
        return lambda push: kind
    if shape is Body.STRING:
        value = attrgetter(fields[0])
        return lambda push: f"{kind} {value(push)}"
    raise TypeError(f"the push {kind!r} needs its text form")


def body_text(body: Any) -> str:
    """A body as the text form carries it: a string as it is, any other value as JSON."""
    return (
        body
        if isinstance(body, str)
        else json.dumps(body, ensure_ascii=False, separators=(",", ":"))
    )


def said(name: str | None, text: str) -> str:
    """A line as the chat room shows it: ``NAME: text``, or ``* text`` for the operator's."""
    return f"* {text}" if name is None else f"{name}: {text}"
