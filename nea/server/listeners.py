"""Listeners: ``[PROFILE=]ENDPOINT`` strings, the backlog, and failing loudly on a busy port."""

from pathlib import Path

import attrs
from twisted.application.internet import StreamServerEndpointService
from twisted.internet.endpoints import serverFromString

from nea.wire import profiles
from nea.wire.profiles import Profile

DEFAULT_BACKLOG = 1024
DEV_CERTS = Path("certs")
DEFAULT_LISTEN = (
    f"ssl:3443:privateKey={DEV_CERTS}/server-key.pem:certKey={DEV_CERTS}/server.pem"
)

# Endpoint types whose listen(2) backlog Twisted lets a string set (default 50).
_BACKLOG_TYPES = {"tcp", "ssl", "tcp6"}


@attrs.frozen
class Listen:
    profile: Profile
    endpoint: str

    @classmethod
    def parse(cls, value: str) -> "Listen":
        """``relay=tcp:8001`` -> profile relay on tcp:8001; a bare endpoint is profile nea.

        An endpoint type never contains '=', so an '=' in the first ':'-separated
        field can only be the profile prefix.
        """
        head, _, _ = value.partition(":")
        if "=" in head:
            name, _, endpoint = value.partition("=")
            if name not in profiles.BY_NAME:
                raise ValueError(
                    f"unknown profile {name!r}; choose one of {', '.join(profiles.BY_NAME)}"
                )
            return cls(profiles.BY_NAME[name], endpoint)
        return cls(profiles.NEA, value)

    def with_backlog(self, backlog: int) -> str:
        kind = self.endpoint.partition(":")[0]
        if kind in _BACKLOG_TYPES and ":backlog=" not in self.endpoint:
            return f"{self.endpoint}:backlog={backlog}"
        return self.endpoint

    def certificate_files(self) -> list[Path]:
        """The key and certificate files an ``ssl:`` endpoint names."""
        if not self.endpoint.startswith("ssl:"):
            return []
        files = []
        for field in self.endpoint.split(":")[1:]:
            key, _, value = field.partition("=")
            if key in ("privateKey", "certKey"):
                files.append(Path(value))
        return files


class ListeningService(StreamServerEndpointService):
    """A listener that makes twistd fail at start-up when it cannot listen.

    Twisted's service only logs a failed listen and carries on without the port;
    a daemon that is "running" but unreachable is worse than one that will not start.
    """

    _raiseSynchronously = True

    def __init__(self, reactor, listen: Listen, backlog: int, factory) -> None:
        super().__init__(serverFromString(reactor, listen.with_backlog(backlog)), factory)
        self.listen = listen

    def port(self):
        """A Deferred firing with the listening port (tests read the chosen port from it)."""
        return self._waitingForPort
