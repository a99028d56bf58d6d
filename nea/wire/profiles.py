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


_ALWAYS = frozenset({frames.Exit, frames.Invalid})

NEA = Profile(
    name="nea",
    verbs=frozenset({"message", "ok", "chat", "nick", "register", "serve", "unserve", "reply",
                     "ask"}),
    plain=frames.Reverse,
    allowed=_ALWAYS
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
    },
    json=True,
    dates=True,
    relays=True,
    chat=True,
)

RELAY = Profile(
    name="relay",
    verbs=frozenset({"message", "ok"}),
    plain=None,
    allowed=_ALWAYS | {frames.Relay, frames.Ack},
    json=False,
    dates=False,
    relays=True,
    chat=False,
)

CHAT = Profile(
    name="chat",
    verbs=frozenset({"nick"}),
    plain=frames.Chat,
    allowed=_ALWAYS | {frames.Chat, frames.Nick, frames.Hello, frames.Status},
    json=True,
    dates=False,
    relays=False,
    chat=True,
)

BY_NAME = {profile.name: profile for profile in (NEA, RELAY, CHAT)}
