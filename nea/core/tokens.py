"""JSON Web Tokens: what a client presents to be someone, verified with PyJWT.

The key (``--jwt-key PATH``) is a PEM public key, whose type fixes the one
algorithm accepted (EC P-256: ES256, RSA: RS256, Ed25519: EdDSA), or else a
shared secret for HS256. A token must carry ``sub`` and ``exp`` (and the
configured ``aud``, if any); ``nbf`` and ``iat`` are checked when present. Its
``nea`` claim holds its `Permissions`; a ``nick`` claim the chat nick.

Each way a token can be refused has its own error code (`TokenRefused`). The
token itself is never put in an error message or a log line: it is a secret.
"""

from pathlib import Path

import attrs
import jwt
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.hazmat.primitives.asymmetric.types import PublicKeyTypes
from cryptography.hazmat.primitives.serialization import load_pem_public_key

from nea.core.permissions import Permissions
from nea.wire import errors
from nea.wire.codec import NICK_PATTERN

#: Longest token accepted, in characters: real ones are a few hundred.
MAX_TOKEN = 8 * 1024


@attrs.frozen
class Token:
    """A verified token: who it says, what it allows, until when (seconds since the epoch)."""

    subject: str
    #: None: the token has no ``nea`` claim (the policy's ``identified`` set applies).
    permissions: Permissions | None
    #: The chat nick: the ``nick`` claim, else ``sub`` if it is a valid nick, else None.
    nick: str | None
    expires: float


class TokenRefused(Exception):
    """A token that is not accepted; ``error`` says why (its code is what the client sees)."""

    def __init__(self, error: errors.ErrorCode, detail: str = "") -> None:
        super().__init__(error.code, detail)
        self.error = error
        self.detail = detail


def _algorithm(key) -> str:
    if isinstance(key, ec.EllipticCurvePublicKey) and isinstance(key.curve, ec.SECP256R1):
        return "ES256"
    if isinstance(key, rsa.RSAPublicKey):
        return "RS256"
    if isinstance(key, ed25519.Ed25519PublicKey):
        return "EdDSA"
    raise ValueError("the PEM key is not an EC P-256, RSA or Ed25519 public key")


def read_key(path: str | Path) -> tuple[PublicKeyTypes | bytes, str]:
    """``(key, algorithm)`` from a ``--jwt-key`` file; raises OSError or ValueError."""
    data = Path(path).read_bytes()
    if data.lstrip().startswith(b"-----BEGIN"):
        key = load_pem_public_key(data)
        return key, _algorithm(key)
    secret = data.strip()
    if len(secret) < 32:
        raise ValueError("an HS256 secret must be at least 32 bytes")
    return secret, "HS256"


# PyJWT's exceptions, most specific first (several derive from DecodeError), and the
# code each becomes.
_REFUSALS = (
    (jwt.InvalidSignatureError, errors.BAD_SIGNATURE),
    (jwt.ExpiredSignatureError, errors.EXPIRED_TOKEN),
    (jwt.ImmatureSignatureError, errors.TOKEN_NOT_YET_VALID),
    (jwt.InvalidAudienceError, errors.WRONG_AUDIENCE),
    (jwt.InvalidAlgorithmError, errors.BAD_ALGORITHM),
    (jwt.InvalidTokenError, errors.BAD_TOKEN),
)


class TokenVerifier:
    """Verifies tokens against one key; ``audience``: the ``aud`` required, if any."""

    def __init__(self, key, algorithm: str, audience: str | None = None) -> None:
        self.key = key
        self.algorithm = algorithm
        self.audience = audience

    @classmethod
    def from_file(cls, path: str | Path, audience: str | None = None) -> "TokenVerifier":
        return cls(*read_key(path), audience)

    def verify(self, token: str) -> Token:
        """The verified `Token`, or `TokenRefused`."""
        if len(token) > MAX_TOKEN:
            raise TokenRefused(errors.TOKEN_TOO_LARGE, f"{len(token)} characters")
        if not token.isascii():  # a JWT is base64url and dots; this also keeps out surrogates
            raise TokenRefused(errors.BAD_TOKEN, "a token is ASCII")
        try:
            # Read before verifying, only to tell "alg: none" (or a foreign one) apart.
            alg = jwt.get_unverified_header(token).get("alg")
            if alg != self.algorithm:
                raise TokenRefused(
                    errors.BAD_ALGORITHM,
                    f"signed {str(alg)[:16]!r}, this server takes {self.algorithm}",
                )
            claims = jwt.decode(
                token,
                self.key,
                algorithms=[self.algorithm],
                audience=self.audience,
                options={"require": ["sub", "exp"], "verify_aud": self.audience is not None},
            )
        except jwt.PyJWTError as e:
            error = next(code for kind, code in _REFUSALS if isinstance(e, kind))
            raise TokenRefused(error, str(e)[:200]) from None
        return _token(claims)


def _token(claims: dict) -> Token:
    subject = claims["sub"]
    if not isinstance(subject, str) or not subject:
        raise TokenRefused(errors.BAD_TOKEN, "'sub' must be a non-empty string")
    nick = claims.get("nick")
    if nick is None:
        nick = subject if NICK_PATTERN.match(subject) else None
    elif not isinstance(nick, str) or not NICK_PATTERN.match(nick):
        raise TokenRefused(errors.BAD_TOKEN, "'nick' is not a valid chat nick")
    permissions = None
    if "nea" in claims:
        try:
            permissions = Permissions.from_json(claims["nea"])
        except ValueError as e:
            raise TokenRefused(errors.BAD_TOKEN, f"'nea' claim: {e}") from None
    try:
        expires = float(claims["exp"])
    except OverflowError:
        raise TokenRefused(errors.BAD_TOKEN, "'exp' is out of range") from None
    return Token(subject, permissions, nick, expires)
