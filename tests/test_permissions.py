"""The permission model (nea.core.permissions) and token verification (nea.core.tokens)."""

import json
import time
from pathlib import Path

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.trial import unittest

from nea.core.permissions import (
    EVERYTHING,
    IDENTIFIED,
    NOTHING,
    Permissions,
    Policy,
    needed,
    parse_anonymous,
    parse_policy,
)
from nea.core.tokens import MAX_TOKEN, TokenRefused, TokenVerifier, read_key
from nea.wire import frames

#: An HS256 secret for tests (at least 32 bytes).
SECRET = b"nea-test-secret-0123456789abcdefghij"


def sign(
    claims: dict, key=SECRET, algorithm: str = "HS256", lifetime: float = 300.0, **headers
) -> str:
    """A token with ``claims``, ``exp`` ``lifetime`` seconds from now unless given."""
    claims = {"exp": int(time.time() + lifetime), **claims}
    return jwt.encode(claims, key, algorithm=algorithm, headers=headers or None)


class Model(unittest.TestCase):
    def test_patterns_with_the_identity(self):
        own = Permissions(register=("{sub}", "shared:*"))
        self.assertTrue(own.allows("register", "lock1", "lock1"))
        self.assertTrue(own.allows("register", "shared:x", "lock1"))
        self.assertFalse(own.allows("register", "lock2", "lock1"))
        self.assertFalse(own.allows("register", "lock1", None))  # anonymous: no {sub}

    def test_the_identity_is_no_pattern(self):
        own = Permissions(register=("{sub}",))
        self.assertTrue(own.allows("register", "dev*", "dev*"))
        self.assertFalse(own.allows("register", "device", "dev*"))

    def test_flags(self):
        self.assertTrue(EVERYTHING.allows("relay"))
        self.assertFalse(EVERYTHING.allows("broadcast"))
        self.assertFalse(NOTHING.allows("reverse"))

    def test_from_json_refuses_unknown_keys_and_wrong_types(self):
        self.assertEqual(
            Permissions.from_json({"ask": ["@payments"], "relay": True}),
            Permissions(ask=("@payments",), relay=True),
        )
        for bad in ({"publish": True}, {"relay": "yes"}, {"ask": "@payments"}, []):
            self.assertRaises(ValueError, Permissions.from_json, bad)

    def test_anonymous_shortcut(self):
        self.assertEqual(parse_anonymous("none"), NOTHING)
        self.assertEqual(parse_anonymous("reverse, relay"), Permissions(reverse=True, relay=True))
        self.assertEqual(parse_anonymous("register,serve,ask,reverse,relay,chat"), EVERYTHING)
        for bad in ("", "broadcast", "none,relay", "publish"):
            self.assertRaises(ValueError, parse_anonymous, bad)

    def test_policy_first_matching_identity_wins(self):
        policy = parse_policy(
            json.dumps(
                {
                    "anonymous": {"reverse": True},
                    "identities": {"lock*": {"register": ["{sub}"]}, "*": {"ask": ["lock*"]}},
                }
            )
        )
        self.assertEqual(policy.for_identity(None), Permissions(reverse=True))
        self.assertEqual(policy.for_identity("lock1"), Permissions(register=("{sub}",)))
        self.assertEqual(policy.for_identity("app"), Permissions(ask=("lock*",)))
        self.assertEqual(Policy().for_identity("x"), IDENTIFIED)

    def test_the_file_anonymous_set_wins_over_the_shortcut(self):
        shortcut = parse_anonymous("relay")
        self.assertEqual(parse_policy("{}", shortcut).anonymous, shortcut)
        self.assertEqual(parse_policy('{"anonymous": {}}', shortcut).anonymous, NOTHING)

    def test_bad_files_say_what_is_wrong(self):
        for text in ("[", "[]", '{"anonymous": {"x": 1}}', '{"users": {}}', '{"identities": []}'):
            self.assertRaises(ValueError, parse_policy, text)

    def test_what_each_request_needs(self):
        self.assertEqual(needed(frames.Register("a")), ("register", "a"))
        self.assertEqual(needed(frames.Serve("s")), ("serve", "s"))
        self.assertEqual(needed(frames.Ask("1", None, "pay", "x")), ("ask", "@pay"))
        self.assertEqual(needed(frames.Ask("1", "lock1", None, "x")), ("ask", "lock1"))
        self.assertEqual(needed(frames.Relay("x")), ("relay", None))
        self.assertEqual(needed(frames.Chat("x")), ("chat", None))
        self.assertEqual(needed(frames.Reverse("x")), ("reverse", None))
        for free in (
            frames.Ack("x"),
            frames.Status(),
            frames.Exit(),
            frames.Auth("t"),
            frames.Reply("1", "x"),
            frames.Unserve("s"),
        ):
            self.assertIsNone(needed(free))


def _pem(private) -> bytes:
    return private.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )


class Tokens(unittest.TestCase):
    def setUp(self):
        self.verifier = TokenVerifier(SECRET, "HS256")

    def refusal(self, token, verifier=None) -> str:
        with self.assertRaises(TokenRefused) as caught:
            (verifier or self.verifier).verify(token)
        self.assertNotIn(token[:40], str(caught.exception.detail))  # never the token itself
        return caught.exception.error.code

    def test_a_good_token(self):
        token = self.verifier.verify(sign({"sub": "lock1", "nea": {"register": ["{sub}"]}}))
        self.assertEqual(
            (token.subject, token.nick, token.permissions),
            ("lock1", "lock1", Permissions(register=("{sub}",))),
        )
        self.assertIsNone(self.verifier.verify(sign({"sub": "x"})).permissions)

    def test_nick_claim_and_subjects_that_are_no_nick(self):
        self.assertEqual(self.verifier.verify(sign({"sub": "u:1", "nick": "alice"})).nick, "alice")
        self.assertIsNone(self.verifier.verify(sign({"sub": "lock@site"})).nick)
        self.assertEqual(self.refusal(sign({"sub": "u", "nick": "a b"})), "bad_token")

    def test_each_bad_token_has_its_code(self):
        self.assertEqual(self.refusal(sign({"sub": "a"}, key=b"x" * 40)), "bad_signature")
        self.assertEqual(
            self.refusal(sign({"sub": "a"}, key=None, algorithm="none")), "bad_algorithm"
        )
        self.assertEqual(self.refusal(sign({"sub": "a"}, lifetime=-10)), "expired_token")
        self.assertEqual(
            self.refusal(sign({"sub": "a", "nbf": int(time.time()) + 300})), "token_not_yet_valid"
        )
        self.assertEqual(self.refusal("a" * (1024 * 1024)), "token_too_large")
        self.assertEqual(self.refusal("x" * (MAX_TOKEN + 1)), "token_too_large")
        self.assertEqual(self.refusal("not.a.jwt"), "bad_token")
        self.assertEqual(self.refusal("\ud800.\ud800.x"), "bad_token")  # JSON can spell it
        self.assertEqual(self.refusal(sign({"sub": "a", "iat": "x"})), "bad_token")
        self.assertEqual(self.refusal(sign({"sub": "a", "exp": 10**400})), "bad_token")
        self.assertEqual(self.refusal(jwt.encode({"sub": "a"}, SECRET, "HS256")), "bad_token")
        self.assertEqual(self.refusal(sign({"exp": int(time.time()) + 60})), "bad_token")
        self.assertEqual(self.refusal(sign({"sub": "a", "nea": {"relay": 1}})), "bad_token")

    @settings(max_examples=300, deadline=None)
    @given(
        st.text(max_size=200),
        st.dictionaries(
            st.sampled_from(["sub", "exp", "nbf", "iat", "aud", "nea", "nick"]),
            st.recursive(
                st.none()
                | st.booleans()
                | st.integers()
                | st.floats(allow_nan=False)
                | st.text(max_size=20),
                lambda inner: (
                    st.lists(inner, max_size=3)
                    | st.dictionaries(st.text(max_size=8), inner, max_size=3)
                ),
                max_leaves=8,
            ),
        ),
    )
    def test_any_input_is_a_token_or_a_refusal(self, text, claims):
        for token in (text, jwt.encode(claims, SECRET, "HS256")):
            try:
                self.verifier.verify(token)
            except TokenRefused:
                pass

    def test_the_audience(self):
        verifier = TokenVerifier(SECRET, "HS256", "nea-prod")
        self.assertEqual(verifier.verify(sign({"sub": "a", "aud": "nea-prod"})).subject, "a")
        self.assertEqual(
            self.refusal(sign({"sub": "a", "aud": "other"}), verifier), "wrong_audience"
        )
        self.assertEqual(self.refusal(sign({"sub": "a"}), verifier), "bad_token")

    def test_public_keys_fix_the_algorithm(self):
        directory = Path(self.mktemp())
        directory.mkdir()
        for private, algorithm in (
            (ec.generate_private_key(ec.SECP256R1()), "ES256"),
            (rsa.generate_private_key(65537, 2048), "RS256"),
            (ed25519.Ed25519PrivateKey.generate(), "EdDSA"),
        ):
            path = directory / f"{algorithm}.pem"
            path.write_bytes(_pem(private))
            verifier = TokenVerifier.from_file(path)
            self.assertEqual(verifier.algorithm, algorithm)
            self.assertEqual(verifier.verify(sign({"sub": "a"}, private, algorithm)).subject, "a")
            # An HS256 token signed with the public key's bytes: the classic confusion.
            self.assertEqual(self.refusal(sign({"sub": "a"}, b"k" * 40), verifier), "bad_algorithm")

    def test_key_files(self):
        directory = Path(self.mktemp())
        directory.mkdir()
        (directory / "short").write_bytes(b"too short\n")
        self.assertRaises(ValueError, read_key, directory / "short")
        (directory / "secret").write_bytes(SECRET + b"\n")
        self.assertEqual(read_key(directory / "secret"), (SECRET, "HS256"))
        self.assertRaises(OSError, read_key, directory / "missing")
