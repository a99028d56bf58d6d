"""Listener profiles: what a connection on a given listener may say and is sent.

A profile is data, not code: the codec reads its grammar, the hub reads what the
connection subscribes to. Adding a profile means adding one value here. Requests
are named by their kind, as their classes declare it (`nea.wire.forms`).
"""

import attrs

from nea.wire import frames
from nea.wire.forms import REQUESTS

#: Request kind -> its class (``quit`` is ``exit``).
_BY_KIND = {kind: form.cls for form in REQUESTS.values() for kind in (form.kind, *form.aliases)}


def _classes(kinds: frozenset[str]) -> frozenset[type]:
    unknown = sorted(kinds - _BY_KIND.keys())
    if unknown:
        raise ValueError(f"no request is declared as {', '.join(unknown)}")
    return frozenset(_BY_KIND[kind] for kind in kinds)


@attrs.frozen
class Profile:
    name: str
    #: text verbs recognised at the start of a line (``message``, ``ok``, ``chat``, ``nick``,
    #: ``register``, ``serve``, ``unserve``, ``reply``, ``ask``)
    verbs: frozenset[str]
    #: the kind of request a line that is no verb makes: ``reverse`` or ``chat`` (or None:
    #: refused)
    plain_kind: str | None
    #: request kinds this profile serves (text verbs or not); anything else is answered
    #: ``not_in_profile``
    offers: frozenset[str]
    json: bool
    #: pushed the date every interval
    dates: bool
    #: may be chosen as a relay target (and may send relays)
    relays: bool
    #: receives chat lines and operator broadcasts
    chat: bool
    #: the chat room of the chat profile: lines shown as ``NAME: text``, presence announced,
    #: a client's own lines not echoed
    room: bool = False
    #: the grammar before the client has a name (its first line is the name), if it needs one
    naming: "Profile | None" = None
    #: the request classes it serves (`offers`; an invalid line is always answered)
    allowed: frozenset[type] = attrs.field(init=False)
    #: the request class of `plain_kind`
    plain: type | None = attrs.field(init=False)

    @allowed.default
    def _allowed(self) -> frozenset[type]:
        if not self.verbs <= self.offers:
            raise ValueError(f"{self.name}: verbs it does not offer: {self.verbs - self.offers}")
        return _classes(self.offers) | {frames.Invalid}

    @plain.default
    def _plain(self) -> type | None:
        return None if self.plain_kind is None else _BY_KIND[self.plain_kind]


#: Every profile takes a token: permissions apply on every listener.
_ALWAYS = frozenset({"exit", "auth"})
#: Liveness (``ping``/``pong``): every profile but relay's strict seed protocol.
_LIVENESS = frozenset({"ping", "pong"})

NEA = Profile(
    name="nea",
    verbs=frozenset(
        {
            "message",
            "ok",
            "chat",
            "nick",
            "register",
            "serve",
            "unserve",
            "reply",
            "ask",
            "history",
            "since",
            "auth",
        }
    ),
    plain_kind="reverse",
    offers=_ALWAYS
    | _LIVENESS
    | {
        "register",
        "serve",
        "unserve",
        "reply",
        "ask",
        "message",
        "ok",
        "chat",
        "reverse",
        "nick",
        "hello",
        "status",
        "history",
        "since",
    },
    json=True,
    dates=True,
    relays=True,
    chat=True,
)

RELAY = Profile(
    name="relay",
    verbs=frozenset({"message", "ok", "auth"}),
    plain_kind=None,
    offers=_ALWAYS | {"message", "ok"},
    json=False,
    dates=False,
    relays=True,
    chat=False,
)

#: The chat profile before its client has a name: the first line is the name.
CHAT_NAMING = Profile(
    name="chat",
    verbs=frozenset(),
    plain_kind="nick",
    offers=_ALWAYS | _LIVENESS | {"nick", "hello", "status"},
    json=True,
    dates=False,
    relays=False,
    chat=False,
    room=True,
)

#: In text every line after the name is chat (but ``exit``); history is asked in JSON.
CHAT = Profile(
    name="chat",
    verbs=frozenset(),
    plain_kind="chat",
    offers=_ALWAYS | _LIVENESS | {"chat", "nick", "hello", "status", "history", "since"},
    json=True,
    dates=False,
    relays=False,
    chat=True,
    room=True,
    naming=CHAT_NAMING,
)

BY_NAME = {profile.name: profile for profile in (NEA, RELAY, CHAT)}
