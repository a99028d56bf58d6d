"""Who may do what: one small permission model for every transport and the HTTP API.

A connection (or an HTTP request) has `Permissions`: name patterns for
``register``, ``serve`` and ``ask`` (an ``ask`` to a service is matched as
``@SERVICE``), and yes or no for ``reverse``, ``relay``, ``chat`` and
``broadcast``. A pattern is a shell-style glob (``*``, ``?``, ``[...]``) in
which ``{sub}`` stands for the connection's identity, so ``{sub}`` lets a device
register its own name only and ``device:*`` a whole family.

A token brings its own permissions (its ``nea`` claim); everyone else gets them
from the `Policy`: the anonymous set, and the sets for certificate identities
(a permissions file, ``--permissions``). This module is pure: it decides, the
hub refuses and counts.
"""

import fnmatch
import glob
import json
from collections.abc import Callable
from typing import Any

import attrs

from nea.wire import frames

#: The permissions that take name patterns, and those that are yes or no.
PATTERNS = ("register", "serve", "ask")
FLAGS = ("reverse", "relay", "chat", "broadcast")
#: What ``--anonymous`` may list (broadcast is the operator's, never anonymous).
ANONYMOUS_CHOICES = ("reverse", "relay", "chat", "register", "serve", "ask")


def _patterns(value: Any) -> tuple[str, ...]:
    if not isinstance(value, (list, tuple)) or not all(isinstance(p, str) for p in value):
        raise ValueError(f"a list of name patterns, not {value!r}")
    return tuple(value)


def _flag(value: Any) -> bool:
    if not isinstance(value, bool):
        raise ValueError(f"true or false, not {value!r}")
    return value


@attrs.frozen
class Permissions:
    register: tuple[str, ...] = ()
    serve: tuple[str, ...] = ()
    ask: tuple[str, ...] = ()
    reverse: bool = False
    relay: bool = False
    chat: bool = False
    broadcast: bool = False

    @classmethod
    def from_json(cls, obj: Any) -> "Permissions":
        """From ``{"register": [...], "relay": true, ...}``; a missing key is not permitted.

        Raises ValueError naming what is wrong (an unknown key, a wrong type).
        """
        if not isinstance(obj, dict):
            raise ValueError(f"permissions are a JSON object, not {type(obj).__name__}")
        unknown = sorted(set(obj) - set(PATTERNS) - set(FLAGS))
        if unknown:
            raise ValueError(f"unknown permission(s): {', '.join(unknown)}")
        try:
            fields: dict[str, Any] = {
                key: (_patterns if key in PATTERNS else _flag)(value) for key, value in obj.items()
            }
            return cls(**fields)
        except ValueError as e:
            raise ValueError(f"{e} (permissions {sorted(obj)})") from None

    def allows_any_name(self, permission: str) -> bool:
        """Whether ``permission``, one that takes patterns, is granted for every name."""
        return "*" in getattr(self, permission)

    def allows(
        self, permission: str, target: str | None = None, subject: str | None = None
    ) -> bool:
        """Whether ``permission`` is granted, for ``target`` when it takes patterns."""
        if permission in FLAGS:
            return getattr(self, permission)
        assert target is not None, f"{permission} is checked against a name"
        for pattern in getattr(self, permission):
            # "*", the default's every pattern, matches any name: no fnmatch per request.
            if pattern == "*" or _matches(pattern, target, subject):
                return True
        return False


def _matches(pattern: str, target: str, subject: str | None) -> bool:
    if "{sub}" in pattern:
        if subject is None:
            return False  # an anonymous client has no identity to stand in
        pattern = pattern.replace("{sub}", glob.escape(subject))
    return fnmatch.fnmatchcase(target, pattern)


#: Everything a seed's anonymous client does (and what it did before permissions existed).
EVERYTHING = Permissions(("*",), ("*",), ("*",), reverse=True, relay=True, chat=True)
NOTHING = Permissions()
#: An identity without permissions of its own (no file entry, no ``nea`` claim): what
#: certificate holders always could, its own name only.
IDENTIFIED = attrs.evolve(EVERYTHING, register=("{sub}",))


def parse_anonymous(value: str) -> Permissions:
    """``--anonymous``: a comma list of `ANONYMOUS_CHOICES`, or ``none``."""
    words = [w.strip() for w in value.split(",") if w.strip()]
    if words == ["none"]:
        return NOTHING
    unknown = sorted(set(words) - set(ANONYMOUS_CHOICES))
    if unknown or not words:
        raise ValueError(f"a comma list of {', '.join(ANONYMOUS_CHOICES)}, or none; got {value!r}")
    fields: dict[str, Any] = {w: ("*",) if w in PATTERNS else True for w in words}
    return Permissions(**fields)


@attrs.frozen
class Policy:
    """The permissions of clients without a token: anonymous ones, and certificate identities.

    ``identities``: (identity pattern, permissions), the first match wins; an
    identity that matches none gets ``identified``.
    """

    anonymous: Permissions = EVERYTHING
    identities: tuple[tuple[str, Permissions], ...] = ()
    identified: Permissions = IDENTIFIED

    def for_identity(self, identity: str | None) -> Permissions:
        if identity is None:
            return self.anonymous
        for pattern, permissions in self.identities:
            if fnmatch.fnmatchcase(identity, pattern):
                return permissions
        return self.identified


def parse_policy(text: str, anonymous: Permissions | None = None) -> Policy:
    """A permissions file: ``{"anonymous": {...}, "identities": {"PATTERN": {...}, ...},
    "identified": {...}}``, every key optional.

    ``anonymous``, when given (``--anonymous``), is the anonymous set unless the
    file sets one. Raises ValueError saying what is wrong.
    """
    try:
        obj = json.loads(text)
    except ValueError as e:
        raise ValueError(f"not JSON: {e}") from None
    if not isinstance(obj, dict):
        raise ValueError("the permissions file holds a JSON object")
    unknown = sorted(set(obj) - {"anonymous", "identities", "identified"})
    if unknown:
        raise ValueError(f"unknown key(s): {', '.join(unknown)}")
    identities = obj.get("identities", {})
    if not isinstance(identities, dict):
        raise ValueError("'identities' maps identity patterns to permissions")
    default = Policy(anonymous if anonymous is not None else EVERYTHING)
    return Policy(
        Permissions.from_json(obj["anonymous"]) if "anonymous" in obj else default.anonymous,
        tuple((pattern, Permissions.from_json(p)) for pattern, p in identities.items()),
        Permissions.from_json(obj["identified"]) if "identified" in obj else default.identified,
    )


def needed(request: frames.Request) -> tuple[str, str | None] | None:
    """The permission ``request`` needs, and the name it is checked against; None: none."""
    kind = type(request)
    if kind not in GATED:
        return None
    permission, name_of = requirement(kind)
    return permission, name_of(request) if name_of is not None else None


def requirement(kind: type) -> tuple[str, "Callable[[Any], str] | None"]:
    """The permission every request of class ``kind`` (one of `GATED`) needs, and how to
    read the name it is checked against (None: a yes or no); known once per class."""
    named = _NAMED.get(kind)
    return named if named is not None else (_FLAGGED[kind], None)


def ask_target(name: str | None, service: str | None) -> str:
    """What the ``ask`` permission of a request to ``name`` or to ``service`` is checked
    against: the name, or ``@SERVICE``."""
    return name if name is not None else f"@{service}"


#: Requests that need a permission checked against the name they hold, and that name.
_NAMED: dict[type, tuple[str, "Callable[[Any], str]"]] = {
    frames.Register: ("register", lambda r: r.name),
    frames.Serve: ("serve", lambda r: r.service),
    frames.Ask: ("ask", lambda r: ask_target(r.name, r.service)),
}

#: Requests that need a yes-or-no permission. Reading chat history is chat; so is a nick.
_FLAGGED = {
    frames.Relay: "relay",
    frames.Reverse: "reverse",
    frames.Chat: "chat",
    frames.Nick: "chat",
    frames.History: "chat",
    frames.Since: "chat",
}

#: Every request kind that needs a permission.
GATED = frozenset({*_NAMED, *_FLAGGED})
