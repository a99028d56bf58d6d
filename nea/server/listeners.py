"""Listeners: ``[PROFILE=]ENDPOINT`` strings, the backlog, nea's TLS layer, failing loudly.

An ``ssl:`` endpoint is served as the ``tcp:`` endpoint beneath it with nea's own
TLS layer (`nea.tls.server`) on top, so that a connection joins the hub only once
its handshake has completed and a close_notify is an end of stream like a FIN.
"""

from pathlib import Path

import attrs
from twisted.application.internet import StreamServerEndpointService
from twisted.internet.endpoints import serverFromString

from nea.server.admission import Admission
from nea.tls.server import HandshakeGate, TLSServerFactory, server_context
from nea.wire import profiles
from nea.wire.profiles import Profile

DEFAULT_BACKLOG = 1024
DEV_CERTS = Path("certs")
DEFAULT_LISTEN = (
    f"ssl:3443:privateKey={DEV_CERTS}/server-key.pem:certKey={DEV_CERTS}/server.pem"
)

# Endpoint types whose listen(2) backlog Twisted lets a string set (default 50).
_BACKLOG_TYPES = {"tcp", "ssl", "tcp6"}
#: The fields of an ``ssl:`` string that belong to its TLS layer, not to its TCP port.
_TLS_FIELDS = ("privateKey", "certKey", "extraCertChain")


@attrs.frozen
class TLSFiles:
    """The files an ``ssl:`` listener serves: key, certificate, optional chain."""

    private_key: Path
    certificate: Path
    chain: Path | None = None


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

    @property
    def kind(self) -> str:
        return self.endpoint.partition(":")[0]

    def with_backlog(self, backlog: int) -> str:
        if self.kind in _BACKLOG_TYPES and ":backlog=" not in self.endpoint:
            return f"{self.endpoint}:backlog={backlog}"
        return self.endpoint

    def tls_files(self) -> TLSFiles | None:
        """What an ``ssl:`` endpoint's TLS layer serves (None for any other kind).

        As with Twisted's own ``ssl:``, the certificate defaults to the key file.
        """
        if self.kind != "ssl":
            return None
        fields = dict(f.partition("=")[::2] for f in self.endpoint.split(":")[1:] if "=" in f)
        key = Path(fields.get("privateKey", "server.pem"))
        chain = fields.get("extraCertChain")
        return TLSFiles(key, Path(fields.get("certKey", key)), Path(chain) if chain else None)

    def certificate_files(self) -> list[Path]:
        """The key and certificate files an ``ssl:`` endpoint names."""
        files = self.tls_files()
        return [] if files is None else [files.private_key, files.certificate]

    def transport_endpoint(self, backlog: int) -> str:
        """The endpoint string that listens: an ``ssl:`` one becomes the ``tcp:`` beneath it."""
        endpoint = self.with_backlog(backlog)
        if self.kind != "ssl":
            return endpoint
        fields = [f for f in endpoint.split(":")[1:] if f.partition("=")[0] not in _TLS_FIELDS]
        return ":".join(["tcp", *fields])


class ListeningService(StreamServerEndpointService):
    """A listener that makes twistd fail at start-up when it cannot listen.

    Twisted's service only logs a failed listen and carries on without the port;
    a daemon that is "running" but unreachable is worse than one that will not start.
    """

    _raiseSynchronously = True

    def __init__(self, reactor, listen: Listen, backlog: int, factory,
                 admission: Admission | None = None, gate: HandshakeGate | None = None,
                 handshake_timeout: float = 0.0) -> None:
        """``factory`` serves plaintext; an ``ssl:`` listener puts nea's TLS layer under it,
        which admits each socket (``admission``) and takes its turn at ``gate``."""
        files = listen.tls_files()
        self.gate = None
        if files is not None:
            context = server_context(files.private_key, files.certificate, files.chain)
            self.gate = gate or HandshakeGate()
            factory = TLSServerFactory(factory, lambda: context, reactor,
                                       admission or Admission(), self.gate, handshake_timeout)
        super().__init__(serverFromString(reactor, listen.transport_endpoint(backlog)), factory)
        self.listen = listen

    def privilegedStartService(self) -> None:
        super().privilegedStartService()
        if self.gate is not None:
            self.port().addCallback(self._gated)

    def _gated(self, port):
        self.gate.ports.append(port)
        return port

    def _ungated(self, port):
        if port in self.gate.ports:
            self.gate.ports.remove(port)  # a stopped port must never be resumed
        return port

    def stopService(self):
        if self.gate is not None:
            self.port().addCallback(self._ungated)
        return super().stopService()

    def port(self):
        """A Deferred firing with the listening port (tests read the chosen port from it)."""
        return self._waitingForPort
