"""``--http-allowed-hosts``: the names a browser may use to reach this daemon.

DNS rebinding: a page of an attacker's site makes its own name resolve to this
daemon's address, and then, being same-origin with itself, talks to the daemon
with ``Host`` and ``Origin`` both naming the attacker's domain. Only the ``Host``
header tells such a request apart, so every HTTP request and every WebSocket
opening handshake from a browser must name a host this daemon knows as its own.

An IP address literal cannot be rebound (the page would have to be served from
that address already), so when the HTTP API listens on every interface any IP
literal is allowed besides the names given.
"""

import ipaddress
import re
from urllib.parse import urlsplit

import attrs

#: Names of this machine every default list holds.
LOCAL_NAMES = ("localhost", "127.0.0.1", "::1")
_WILDCARDS = ("", "0.0.0.0", "::")


def host_name(header: str | bytes | None) -> str | None:
    """The host of a ``Host`` header without its port, lower-cased; None if malformed."""
    if header is None:
        return None
    if isinstance(header, bytes):
        header = header.decode("latin-1")
    try:
        host = urlsplit(f"//{header.strip()}").hostname
    except ValueError:  # a bad port, an unbalanced bracket
        return None
    return host.rstrip(".") if host else None


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


@attrs.frozen
class AllowedHosts:
    """The host names requests may carry; ``any_ip``: any IP literal too; ``"*"``: anything."""

    names: frozenset[str]
    any_ip: bool = False

    def allows(self, header: str | bytes | None) -> bool:
        """Whether a request with ``Host: header`` is meant for this daemon."""
        if "*" in self.names:
            return True
        host = host_name(header)
        if host is None:
            return False
        return host in self.names or (self.any_ip and _is_ip(host))

    @classmethod
    def parse(cls, value: str) -> "AllowedHosts":
        """A comma-separated list of names (``*``: any host); ports are ignored."""
        names = set()
        for item in value.split(","):
            item = item.strip().lower()
            if item == "*":
                names.add(item)
            elif item:
                host = host_name(item)
                if host is None:
                    raise ValueError(f"{item!r} is not a host name")
                names.add(host)
        if not names:
            raise ValueError("give at least one host name")
        return cls(frozenset(names))

    @classmethod
    def default_for(cls, endpoint: str | None) -> "AllowedHosts":
        """This machine's names and the ``interface=`` of the HTTP endpoint; with no
        interface (every one), any IP literal as well."""
        interface = ""
        if endpoint is not None:
            found = re.search(r"(?:^|:)interface=((?:\\.|[^:])*)", endpoint)
            if found is not None:
                interface = found.group(1).replace("\\", "").strip("[]").lower()
        names = {*LOCAL_NAMES, *([interface] if interface not in _WILDCARDS else [])}
        return cls(frozenset(names), any_ip=interface in _WILDCARDS)


def parse_allowed_hosts(value: str) -> AllowedHosts:
    """``--http-allowed-hosts``."""
    return AllowedHosts.parse(value)


parse_allowed_hosts.coerceDoc = "Comma-separated host names; '*' allows any."  # type: ignore[attr-defined]  # usage.Options shows it in --help
