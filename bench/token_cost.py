"""What verifying a client's token costs per connection, against the TLS handshake, in one run.

- handshake: the server side of a bare pyOpenSSL handshake with the daemon's
  ECDSA P-256 certificate (`tls_handshake.bare`), CPU per handshake;
- verify: `nea.core.tokens.TokenVerifier.verify` of one token (PyJWT), CPU per
  token, for each key type ``--jwt-key`` takes;
- auth: ``auth TOKEN`` through the hub (verify, identify, the expiry timer, the
  answer), ES256, CPU per connection.

Each token is verified once per connection (and once per fresh ``auth``), so
these are per-connection figures.

    .venv/bin/python bench/token_cost.py [--count 2000]
"""

import argparse
import functools
import time

import harness
import jwt
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from tls_handshake import bare
from twisted.internet.task import Clock

from nea.core.bus import LocalBus
from nea.core.hub import Hub
from nea.core.testing import FakePeer
from nea.core.tokens import TokenVerifier
from nea.wire import frames

SECRET = b"a shared HS256 secret of 32 bytes or more"


def _keys():
    """(algorithm, signing key, verifying key) for each kind of --jwt-key."""
    es = ec.generate_private_key(ec.SECP256R1())
    rs = rsa.generate_private_key(65537, 2048)
    ed = ed25519.Ed25519PrivateKey.generate()
    return [
        ("ES256", es, es.public_key()),
        ("RS256", rs, rs.public_key()),
        ("EdDSA", ed, ed.public_key()),
        ("HS256", SECRET, SECRET),
    ]


def _token(key, algorithm: str) -> str:
    claims = {
        "sub": "device:1",
        "exp": int(time.time()) + 3600,
        "nea": {"register": ["{sub}"], "ask": ["@payments"], "relay": True},
    }
    return jwt.encode(claims, key, algorithm=algorithm)


def cpu_per_call(call, count: int) -> float:
    started = time.process_time()
    for _ in range(count):
        call()
    return (time.process_time() - started) / count


def through_the_hub(verifier: TokenVerifier, token: str, count: int) -> float:
    clock = Clock()
    clock.advance(time.time())
    hub = Hub(clock, LocalBus("bench"), tokens=verifier)
    peers = [FakePeer() for _ in range(count)]
    for peer in peers:
        hub.join(peer)
    started = time.process_time()
    for peer in peers:
        hub.handle(peer, frames.Auth(token))
    return (time.process_time() - started) / count


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--count", type=int, default=2000)
    args = p.parse_args()
    harness.header(f"token_cost: {args.count} of each")
    server, _ = bare(harness.certs(), args.count)
    print(f"TLS handshake, server side (ECDSA P-256): {server * 1e6:.0f} us")
    for algorithm, private, public in _keys():
        verifier = TokenVerifier(public, algorithm)
        token = _token(private, algorithm)
        verify = cpu_per_call(functools.partial(verifier.verify, token), args.count)
        print(f"verify {algorithm}: {verify * 1e6:.0f} us ({verify / server:.2f}x the handshake)")
        if algorithm == "ES256":
            auth = through_the_hub(verifier, token, args.count)
            print(
                f"auth through the hub, {algorithm}: {auth * 1e6:.0f} us "
                f"({auth / server:.2f}x the handshake)"
            )
    print("", flush=True)


if __name__ == "__main__":
    main()
