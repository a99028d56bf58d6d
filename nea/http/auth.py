"""The admin token that mutating endpoints require: ``Authorization: Bearer <token>``."""

import hmac
from pathlib import Path

from twisted.web import http

from nea.http.jsonapi import ApiError

_CHALLENGE = ((b"WWW-Authenticate", b'Bearer realm="nea"'),)


def read_token_file(path: str) -> str:
    """The token in ``path`` (surrounding whitespace dropped); empty is an error."""
    token = Path(path).read_text(encoding="utf-8").strip()
    if not token:
        raise ValueError(f"the admin token file {path} is empty")
    return token


class BearerToken:
    """Checks requests against the configured token; with none configured, nobody passes."""

    def __init__(self, token: str | None) -> None:
        self._token = token.encode("utf-8") if token else None

    def replace(self, token: str) -> None:
        """From now on ``token`` is the one (SIGHUP re-reads the token file)."""
        self._token = token.encode("utf-8")

    def check(self, request) -> None:
        """Return if ``request`` carries the token, else raise a 401 `ApiError`."""
        if self._token is None:
            raise ApiError(http.UNAUTHORIZED, "unauthorized",
                           "this server has no admin token; start it with --admin-token "
                           "or --admin-token-file", _CHALLENGE)
        scheme, _, given = (request.getHeader(b"Authorization") or b"").partition(b" ")
        # compare_digest: the time taken must not tell how much of a guess was right.
        if scheme.lower() != b"bearer" or not hmac.compare_digest(given.strip(), self._token):
            raise ApiError(http.UNAUTHORIZED, "unauthorized",
                           "send 'Authorization: Bearer <admin token>'", _CHALLENGE)
