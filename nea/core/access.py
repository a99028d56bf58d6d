"""Who each connection is and what it may do: the hub's gate in front of every request.

A connection is anonymous, or identified by its client certificate (set before
it joins) or by a token it presents (``auth TOKEN``, ``?token=`` on a WebSocket,
``Authorization: Bearer`` on HTTP). `Access` verifies tokens, keeps each token
connection's expiry on the clock (``token_expired`` closes it unless a fresh
``auth`` came first), answers what is not permitted with ``not_allowed`` naming
the permission, and counts: ``auth_ok``, ``auth_failed`` and ``not_allowed`` by
permission. Every refusal is logged with the identity and how it was
established, never with a token.
"""

import collections
from collections.abc import Callable

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.logger import Logger

from nea.core.dispatch import Handler
from nea.core.peer import Peer
from nea.core.permissions import GATED, Permissions, Policy, requirement
from nea.core.snapshot import AuthFigures
from nea.core.tokens import Token, TokenRefused, TokenVerifier
from nea.wire import errors, frames

log = Logger()

#: Longest wait of an expiry timer, in seconds: a token's exp may be years away, and a
#: reactor cannot wait that long in one go (its poll timeout would overflow).
MAX_EXPIRY_WAIT = 24 * 3600.0

ANONYMOUS = "anonymous"
CERTIFICATE = "certificate"
TOKEN = "token"


def established(peer) -> str:
    """How ``peer``'s identity was established: token, certificate or anonymous."""
    if peer.token is not None:
        return TOKEN
    return CERTIFICATE if peer.identity is not None else ANONYMOUS


def who(peer) -> str:
    """``peer`` as a log line names it: id, address, and identity with how it has it."""
    if peer.identity is None:
        return f"{peer.id} {peer.peer_address} (anonymous)"
    return f"{peer.id} {peer.peer_address} ({established(peer)} {peer.identity!r})"


class Access:
    """The identities and permissions of one instance's connections; see the module docstring.

    ``reject(peer, error, detail)`` answers with an error (the hub's, which counts it
    by code); ``verifier`` None: no tokens are taken (``auth_unavailable``);
    ``identified(peer, token)`` makes a connection the identity of the token it
    presented (the hub's: its name, nick and permissions follow).
    """

    def __init__(
        self,
        clock: IReactorTime,
        policy: Policy,
        verifier: TokenVerifier | None,
        reject: Callable[..., None],
        identified: Callable[[Peer, Token], None],
    ) -> None:
        self.clock = clock
        self.policy = policy
        self.verifier = verifier
        self.reject = reject
        self.identified = identified
        self.ok = 0
        self.failed = 0
        self.refused: collections.Counter[str] = collections.Counter()
        self._expiries: dict[Peer, IDelayedCall] = {}

    def permissions(self, peer) -> Permissions:
        """What ``peer`` may do now: its token's, else the policy's for its identity."""
        if peer.token is None and peer.identity is None:  # (most clients, every request)
            return self.policy.anonymous
        return self._permissions(peer.identity, peer.token)

    def _permissions(self, identity: str | None, token: Token | None) -> Permissions:
        if token is not None and token.permissions is not None:
            return token.permissions
        return self.policy.for_identity(identity)

    def handlers(self) -> dict[type, Handler]:
        """``auth TOKEN`` (`nea.core.dispatch`)."""
        return {frames.Auth: lambda peer, r: self.authenticate(peer, r.token)}

    def gate(self, handlers: dict[type, Handler]) -> None:
        """Put the check of the permission each request needs in front of its handler."""
        for kind in GATED:
            handlers[kind] = self._gated(kind, handlers[kind])

    def _gated(self, kind: type, handler: Handler) -> Handler:
        """``handler``, run only if the peer has the permission its request needs: a yes
        or no, or one checked against the name the request holds, which is read only if
        not every name is allowed."""
        permission, name_of = requirement(kind)
        if name_of is None:

            def flagged(peer: Peer, request) -> Deferred | None:
                return handler(peer, request) if self.allowed(peer, permission) else None

            return flagged

        def named(peer: Peer, request) -> Deferred | None:
            allowed = self.allowed_target(peer, permission, name_of, request)
            return handler(peer, request) if allowed else None

        return named

    def allowed_target(
        self, peer: Peer, permission: str, target: Callable[..., str], *parts
    ) -> bool:
        """Whether ``peer`` has ``permission``, one that takes name patterns, for the name
        ``target(*parts)`` gives (called only if not every name is allowed); if not it
        is refused."""
        permissions = self.permissions(peer)
        if permissions.allows_any_name(permission):
            return True
        name = target(*parts)
        if permissions.allows(permission, name, peer.identity):
            return True
        self.refuse(peer, permission, name)
        return False

    def allowed(self, peer: Peer, permission: str) -> bool:
        """Whether ``peer`` has the yes-or-no ``permission``; if not it is refused."""
        if self.permissions(peer).allows(permission):
            return True
        self.refuse(peer, permission)
        return False

    def refuse(self, peer, permission: str, target: str | None = None, detail: str = "") -> None:
        """Answer ``not_allowed`` for ``permission`` (on ``target``), counted and logged."""
        self.reject(peer, errors.NOT_ALLOWED, self._refusal(who(peer), permission, target, detail))

    def judge(
        self, token: Token, where: str, permission: str, target: str | None = None
    ) -> str | None:
        """None if ``token`` (an HTTP request's) permits, else why not (counted and logged)."""
        if self._permissions(token.subject, token).allows(permission, target, token.subject):
            return None
        return self._refusal(f"{where} (token {token.subject!r})", permission, target)

    def _refusal(self, who: str, permission: str, target: str | None, detail: str = "") -> str:
        self.refused[permission] += 1
        what = f"{permission} {target!r}" if target is not None else permission
        log.info(
            "not_allowed: {who} may not {what}{detail}",
            who=who,
            what=what,
            detail=f" ({detail})" if detail else "",
        )
        return f"{what}: {detail}" if detail else f"{what} needs the {permission!r} permission"

    def verify(self, token: str, where: str, identity: str | None = None) -> Token:
        """The verified token, counted; or `TokenRefused`, counted and logged (``where``:
        who presented it, for the log line). ``identity``: the one it must be for."""
        try:
            if self.verifier is None:
                raise TokenRefused(errors.AUTH_UNAVAILABLE, "start nea-server with --jwt-key")
            verified = self.verifier.verify(token)
            if identity not in (None, verified.subject):
                raise TokenRefused(
                    errors.BAD_TOKEN,
                    f"this connection is {identity!r}; a token must be for that identity",
                )
        except TokenRefused as refused:
            self.failed += 1
            log.info(
                "token refused for {where}: {code} {detail}",
                where=where,
                code=refused.error.code,
                detail=refused.detail,
            )
            raise
        self.ok += 1
        return verified

    def authenticate(self, peer, token: str) -> None:
        """``peer`` presents ``token``: on success it is its identity until it expires."""
        try:
            verified = self.verify(token, who(peer), peer.identity)
        except TokenRefused as refused:
            self.reject(peer, refused.error, refused.detail)
            return
        self._cancel(peer)
        self._expire_at(peer, verified.expires)
        self.identified(peer, verified)

    def _expire_at(self, peer, expires: float) -> None:
        left = min(max(0.0, expires - self.clock.seconds()), MAX_EXPIRY_WAIT)
        self._expiries[peer] = self.clock.callLater(left, self._expired, peer, expires)

    def _expired(self, peer, expires: float) -> None:
        if expires > self.clock.seconds():
            self._expire_at(peer, expires)  # a long-lived token: wait on
            return
        del self._expiries[peer]
        log.info("token of {peer} expired: closing it", peer=who(peer))
        self.reject(peer, errors.TOKEN_EXPIRED)

    def _cancel(self, peer) -> None:
        timer = self._expiries.pop(peer, None)
        if timer is not None and timer.active():
            timer.cancel()

    def left(self, peer) -> None:
        self._cancel(peer)

    def figures(self) -> AuthFigures:
        return AuthFigures(self.ok, self.failed, dict(self.refused))
