"""``Authorization: Bearer``: the admin token, or a client's JSON Web Token.

The admin token opens every endpoint that needs one. A client token (verified
by the hub, `nea.core.tokens`) opens only the endpoints that name a permission
(``ask`` for requests, ``relay``, ``broadcast``), and only as far as the token's
permissions go: else 403 ``not_allowed``.
"""

import hmac
from pathlib import Path
from typing import NoReturn

from twisted.web import http

from nea.core.tokens import TokenRefused
from nea.http.jsonapi import ApiError

_CHALLENGE = ((b"WWW-Authenticate", b'Bearer realm="nea"'),)


def read_token_file(path: str) -> str:
    """The token in ``path`` (surrounding whitespace dropped); empty is an error."""
    token = Path(path).read_text(encoding="utf-8").strip()
    if not token:
        raise ValueError(f"the admin token file {path} is empty")
    return token


class BearerToken:
    """Checks requests against the admin token (with none configured, no admin passes)
    and, given ``hub`` (which verifies them), against client tokens."""

    def __init__(self, token: str | None, hub=None) -> None:
        self._token = token.encode("utf-8") if token else None
        self.hub = hub

    def replace(self, token: str) -> None:
        """From now on ``token`` is the one (SIGHUP re-reads the token file)."""
        self._token = token.encode("utf-8")

    def check(self, request, permission: str | None = None, target: str | None = None) -> None:
        """Return if ``request`` carries the admin token, or a client token with
        ``permission`` (on ``target``); else raise a 401 or 403 `ApiError`."""
        given = self._given(request)
        if self._admin(given):
            return
        if permission is None or self.hub is None or given is None:
            self._refuse()
        token = self._verified(request, given)
        refusal = self.hub.token_refusal(token, _where(request), permission, target)
        if refusal is not None:
            raise ApiError(http.FORBIDDEN, "not_allowed", refusal)

    def screen(self, request) -> None:
        """Before a body is read: the admin token or a valid client token (whose
        permission its endpoint checks), else a 401 `ApiError`."""
        given = self._given(request)
        if self._admin(given):
            return
        if self.hub is None or given is None:
            self._refuse()
        self._verified(request, given)

    @staticmethod
    def _given(request) -> bytes | None:
        scheme, _, given = (request.getHeader(b"Authorization") or b"").partition(b" ")
        return given.strip() if scheme.lower() == b"bearer" else None

    def _admin(self, given: bytes | None) -> bool:
        # compare_digest: the time taken must not tell how much of a guess was right.
        return (
            self._token is not None
            and given is not None
            and hmac.compare_digest(given, self._token)
        )

    def _refuse(self) -> NoReturn:
        if self._token is None and self.hub is None:
            raise ApiError(
                http.UNAUTHORIZED,
                "unauthorized",
                "this server has no admin token; start it with --admin-token or --admin-token-file",
                _CHALLENGE,
            )
        raise ApiError(
            http.UNAUTHORIZED,
            "unauthorized",
            "send 'Authorization: Bearer <admin token>'",
            _CHALLENGE,
        )

    def _verified(self, request, given: bytes):
        """The client token ``given``, verified once per request (screening, then its
        endpoint), or a 401 `ApiError` with the refusal's code."""
        token = getattr(request, "nea_token", None)
        if token is None:
            try:
                token = self.hub.verify_token(given.decode("utf-8", "replace"), _where(request))
            except TokenRefused as refused:
                raise ApiError(
                    http.UNAUTHORIZED,
                    refused.error.code,
                    f"{refused.error.summary}: {refused.detail}"
                    if refused.detail
                    else refused.error.summary,
                    _CHALLENGE,
                ) from None
            request.nea_token = token
        return token


def _where(request) -> str:
    address = request.getClientAddress()
    return f"HTTP {getattr(address, 'host', address)}"
