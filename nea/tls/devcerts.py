"""Development certificates: a private CA, an ECDSA P-256 server certificate for
localhost/127.0.0.1/::1, and a client certificate for mutual TLS.

Run as ``python -m nea.tls.devcerts [DIR]`` (what ``make certs`` does). Keys are
written with mode 0600 and are never committed; production deployments bring
their own certificates.
"""

import datetime
import fcntl
import ipaddress
import os
import sys
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

CA_CERT = "ca.pem"
CA_KEY = "ca-key.pem"
SERVER_CERT = "server.pem"
SERVER_KEY = "server-key.pem"
CLIENT_CERT = "client.pem"
CLIENT_KEY = "client-key.pem"
#: Held while a set is generated (git-ignored, like the keys).
LOCK = ".generating.lock"
FILES = (CA_CERT, CA_KEY, SERVER_CERT, SERVER_KEY, CLIENT_CERT, CLIENT_KEY)

VALIDITY = datetime.timedelta(days=825)


def _name(common_name: str) -> x509.Name:
    return x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "nea development"),
            x509.NameAttribute(NameOID.COMMON_NAME, common_name),
        ]
    )


def _write_key(path: Path, key: ec.EllipticCurvePrivateKey) -> None:
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(pem)


def _write_cert(path: Path, cert: x509.Certificate) -> None:
    path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))


def _issue(subject, public_key, issuer, issuer_key, now, extensions) -> x509.Certificate:
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer)
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + VALIDITY)
    )
    for extension, critical in extensions:
        builder = builder.add_extension(extension, critical=critical)
    return builder.sign(issuer_key, hashes.SHA256())


def _leaf(common_name, purpose, alt_names, ca_name, ca_key, now):
    """A fresh P-256 key and its certificate, signed by the CA, for one ``purpose``."""
    key = ec.generate_private_key(ec.SECP256R1())
    usage = x509.KeyUsage(
        digital_signature=True,
        key_agreement=True,
        key_cert_sign=False,
        crl_sign=False,
        content_commitment=False,
        key_encipherment=False,
        data_encipherment=False,
        encipher_only=False,
        decipher_only=False,
    )
    extensions = [
        (x509.BasicConstraints(ca=False, path_length=None), True),
        (usage, True),
        (x509.ExtendedKeyUsage([purpose]), False),
        (x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), False),
    ]
    if alt_names:
        extensions.append((x509.SubjectAlternativeName(alt_names), False))
    return key, _issue(_name(common_name), key.public_key(), ca_name, ca_key, now, extensions)


def generate_missing(directory: Path, wanted: list[Path]) -> bool:
    """Generate the set in ``directory`` unless every ``wanted`` file exists; True if it did.

    Under a lock: two daemons starting at once in one directory would otherwise
    each write a key pair, and serve one's key with the other's certificate.
    """
    directory.mkdir(parents=True, exist_ok=True)
    with open(directory / LOCK, "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if all(path.exists() for path in wanted):
            return False
        generate(directory)
        return True


def generate(directory: Path) -> None:
    """Write a fresh CA, server and client certificate with their keys into ``directory``."""
    directory.mkdir(parents=True, exist_ok=True)
    now = datetime.datetime.now(datetime.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = _name("nea development CA")
    ca = _issue(
        ca_name,
        ca_key.public_key(),
        ca_name,
        ca_key,
        now,
        [
            (x509.BasicConstraints(ca=True, path_length=0), True),
            (
                x509.KeyUsage(
                    digital_signature=True,
                    key_cert_sign=True,
                    crl_sign=True,
                    content_commitment=False,
                    key_encipherment=False,
                    data_encipherment=False,
                    key_agreement=False,
                    encipher_only=False,
                    decipher_only=False,
                ),
                True,
            ),
            (x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), False),
        ],
    )
    server_key, server = _leaf(
        "localhost",
        ExtendedKeyUsageOID.SERVER_AUTH,
        [
            x509.DNSName("localhost"),
            x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
            x509.IPAddress(ipaddress.ip_address("::1")),
        ],
        ca_name,
        ca_key,
        now,
    )
    client_key, client = _leaf(
        "nea-client", ExtendedKeyUsageOID.CLIENT_AUTH, [], ca_name, ca_key, now
    )
    _write_key(directory / CA_KEY, ca_key)
    _write_cert(directory / CA_CERT, ca)
    _write_key(directory / SERVER_KEY, server_key)
    _write_cert(directory / SERVER_CERT, server)
    _write_key(directory / CLIENT_KEY, client_key)
    _write_cert(directory / CLIENT_CERT, client)


def ensure(directory: Path) -> bool:
    """Generate the development certificates unless all are there; True if it generated."""
    if all((directory / name).exists() for name in FILES):
        return False
    generate(directory)
    return True


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    directory = Path(args[0] if args else "certs")
    if ensure(directory):
        print(f"wrote a development CA and certificates to {directory}/")
    else:
        print(f"development certificates already in {directory}/ (delete them to renew)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
