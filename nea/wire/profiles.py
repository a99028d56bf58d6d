"""Listener profiles: what a connection on a given listener may say and is sent.

A profile is data, not code: the codec reads its grammar, the hub reads what the
connection subscribes to. Adding a profile means adding one value here.
"""

import attrs

from nea.wire import frames


@attrs.frozen
class Profile:
    name: str
    #: text verbs recognised at the start of a line (``message``, ``ok``, ``chat``, ``nick``,
    #: ``register``, ``serve``, ``unserve``, ``reply``, ``ask``)
    verbs: frozenset[str]
    #: what a line that is no verb means: a Reverse or a Chat request (or None: refused)
    plain: type | None
    #: request kinds this profile serves; anything else is answered ``not_in_profile``
    allowed: frozenset[type]
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


#: Every profile takes a token: permissions apply on every listener.
_ALWAYS = frozenset({frames.Exit, frames.Invalid, frames.Auth})
#: Liveness (``ping``/``pong``): every profile but relay's strict seed protocol.
_LIVENESS = frozenset({frames.Ping, frames.Pong})

NEA = Profile(
    name="nea",
    verbs=frozenset({"message", "ok", "chat", "nick", "register", "serve", "unserve", "reply",
                     "ask", "history", "since", "auth"}),
    plain=frames.Reverse,
    allowed=_ALWAYS
    | _LIVENESS
    | {
        frames.Register,
        frames.Serve,
        frames.Unserve,
        frames.Reply,
        frames.Ask,
        frames.Relay,
        frames.Ack,
        frames.Chat,
        frames.Reverse,
        frames.Nick,
        frames.Hello,
        frames.Status,
        frames.History,
        frames.Since,
    },
    json=True,
    dates=True,
    relays=True,
    chat=True,
)

RELAY = Profile(
    name="relay",
    verbs=frozenset({"message", "ok", "auth"}),
    plain=None,
    allowed=_ALWAYS | {frames.Relay, frames.Ack},
    json=False,
    dates=False,
    relays=True,
    chat=False,
)

#: The chat profile before its client has a name: the first line is the name.
CHAT_NAMING = Profile(
    name="chat",
    verbs=frozenset(),
    plain=frames.Nick,
    allowed=_ALWAYS | _LIVENESS | {frames.Nick, frames.Hello, frames.Status},
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
    plain=frames.Chat,
    allowed=_ALWAYS | _LIVENESS | {frames.Chat, frames.Nick, frames.Hello, frames.Status,
                                   frames.History, frames.Since},
    json=True,
    dates=False,
    relays=False,
    chat=True,
    room=True,
    naming=CHAT_NAMING,
)

BY_NAME = {profile.name: profile for profile in (NEA, RELAY, CHAT)}
