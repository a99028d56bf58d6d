"""The client side of nea's TLS: verified connection options and endpoints.

Shared by nea-client and nea-loadtest. The server is always verified: against
the given CA file, with its certificate checked for the expected host name or
IP address (service-identity, through `optionsForClientTLS`).
"""

import re
import ssl
from pathlib import Path

from OpenSSL import SSL, crypto
from service_identity import VerificationError
from twisted.internet.abstract import isIPAddress, isIPv6Address
from twisted.internet.endpoints import (
    HostnameEndpoint,
    TCP4ClientEndpoint,
    TCP6ClientEndpoint,
    wrapClientTLS,
)
from twisted.internet.error import VerifyError
from twisted.internet.interfaces import IOpenSSLClientConnectionCreator, IStreamClientEndpoint
from twisted.internet.ssl import Certificate, PrivateCertificate, optionsForClientTLS
from twisted.python.failure import Failure

DEFAULT_CA = Path("certs") / "ca.pem"


class TLSConfigError(Exception):
    """A CA, certificate or key file is missing or unreadable (a usage error, not a network one)."""


def _read(path: str | Path, what: str, fix: str) -> bytes:
    try:
        return Path(path).read_bytes()
    except OSError as e:
        raise TLSConfigError(f"cannot read the {what} {path}: {e.strerror}; {fix}") from None


def client_tls_options(
    hostname: str,
    ca: str | Path = DEFAULT_CA,
    cert: str | Path | None = None,
    key: str | Path | None = None,
) -> IOpenSSLClientConnectionCreator:
    """Options that trust only ``ca`` and require the server to be ``hostname``.

    ``cert``/``key`` give a client certificate for servers that ask for one; the
    key may sit in the certificate file (then ``key`` is omitted).
    """
    pem = _read(ca, "CA file", "name the CA that signed the server's certificate with --ca FILE")
    try:
        trust = Certificate.loadPEM(pem)
    except crypto.Error:
        raise TLSConfigError(
            f"{ca} is not a PEM certificate (--ca needs the CA's certificate in PEM)"
        ) from None
    own = None
    if cert is not None:
        pem = _read(cert, "client certificate", "check --cert")
        if key is not None:
            pem += b"\n" + _read(key, "client key", "check --key")
        try:
            own = PrivateCertificate.loadPEM(pem)
        except (crypto.Error, VerifyError):
            files = f"{cert} and {key} are" if key is not None else f"{cert} is"
            raise TLSConfigError(f"{files} not a PEM certificate with its key") from None
    return optionsForClientTLS(hostname, trust, own)


def client_endpoint(
    reactor,
    host: str,
    port: int,
    tls: IOpenSSLClientConnectionCreator | None = None,
    timeout: float = 10.0,
    bind: str | None = None,
) -> IStreamClientEndpoint:
    """An endpoint to ``host:port``, wrapped in ``tls`` unless it is None.

    An IP address is dialled directly (no resolver call per connection, which
    matters for a load test's thousands of dials); a name goes through
    `HostnameEndpoint`, which tries every address the name resolves to.
    ``bind`` is a local source address.
    """
    source = (bind, 0) if bind else None
    endpoint: IStreamClientEndpoint
    if isIPAddress(host):
        endpoint = TCP4ClientEndpoint(reactor, host, port, timeout, source)
    elif isIPv6Address(host):
        endpoint = TCP6ClientEndpoint(reactor, host, port, timeout, source)
    else:
        endpoint = HostnameEndpoint(reactor, host, port, timeout, source)
    return endpoint if tls is None else wrapClientTLS(tls, endpoint)


def verification_failure(reason: Failure, ca: str | Path | None = None) -> str | None:
    """Why the server's certificate was refused, if that is what ended a connection.

    ``ca`` is the CA file trusted, to name it when the certificate does not
    verify against it. Both of pyOpenSSL's errors (Twisted's TLS, with
    service-identity checking the name) and the stdlib's (`ssl`, where OpenSSL
    checks it) are understood.
    """
    if reason.check(VerificationError):
        return _not_valid_for(", ".join(_expected_name(e) for e in reason.value.errors))
    if reason.check(ssl.SSLCertVerificationError):
        mismatch = _STDLIB_MISMATCH.search(reason.value.verify_message or "")
        if mismatch is not None:
            return _not_valid_for(mismatch.group(1))
        return _does_not_verify(ca)
    if reason.check(SSL.Error) and "certificate verify failed" in str(reason.value):
        return _does_not_verify(ca)
    return None


#: How the stdlib's verification error names the host or address it expected.
_STDLIB_MISMATCH = re.compile(r"mismatch, certificate is not valid for '([^']*)'")


def _not_valid_for(names: str) -> str:
    return (
        f"the server's certificate is not valid for {names} "
        "(its CA is trusted; --server-name sets the name to expect)"
    )


def _does_not_verify(ca: str | Path | None) -> str:
    # OpenSSL's finer reason is not in pyOpenSSL's error; these are the likely ones.
    trusted = f"the CA in {ca}" if ca is not None else "the trusted CA"
    return (
        f"the server's certificate does not verify against {trusted} "
        "(signed by another CA, or out of date)"
    )


def _expected_name(mismatch) -> str:
    """The name or address a service-identity mismatch was looking for."""
    wanted = mismatch.mismatched_id
    name = getattr(wanted, "hostname", None) or getattr(wanted, "ip", None) or wanted
    return name.decode("ascii", "replace") if isinstance(name, bytes) else str(name)
