"""Client listeners: ``[PROFILE[+proxy]=]ENDPOINT`` strings and nea's TLS layer, on the
generic listening service of `nea.net.listening`.

An ``ssl:`` client endpoint is served as the ``tcp:`` endpoint beneath it with nea's
own TLS layer (`nea.tls.server`) on top, so that a connection joins the hub only
once its handshake has completed and a close_notify is an end of stream like a FIN.
"""

from pathlib import Path

import attrs

from nea.net.listening import ListeningService, server_endpoint, with_backlog
from nea.net.sending import sender_for
from nea.net.startup import StartupError
from nea.server.admission import Admission
from nea.server.proxyheader import ProxyHeaderFactory
from nea.tls import devcerts
from nea.tls.server import (
    CertificateError,
    ContextSource,
    HandshakeGate,
    TLSFiles,
    TLSServerFactory,
)
from nea.wire import profiles
from nea.wire.profiles import Profile


def default_listen(dev_certs: Path) -> str:
    """The listener without ``--listen``: TLS on 3443 with the development certificates."""
    return (
        f"ssl:3443:privateKey={dev_certs / devcerts.SERVER_KEY}"
        f":certKey={dev_certs / devcerts.SERVER_CERT}"
    )


#: What may follow a profile name, each after a '+'.
_OPTIONS = ("proxy", "ws")
#: The fields of an ``ssl:`` string that belong to its TLS layer, not to its TCP port.
_TLS_FIELDS = ("privateKey", "certKey", "extraCertChain")


@attrs.frozen
class Listen:
    profile: Profile
    endpoint: str
    #: Each connection starts with a PROXY header (the listener is behind a load balancer).
    proxy: bool = False
    #: Clients speak WebSocket (``ws://``, ``wss://`` on an ``ssl:`` endpoint), not lines.
    websocket: bool = False

    @classmethod
    def parse(cls, value: str) -> "Listen":
        """``relay=tcp:8001`` -> profile relay on tcp:8001; a bare endpoint is profile nea;
        ``relay+proxy=...`` also reads a PROXY header first; ``chat+ws=...`` serves
        WebSocket clients (options combine: ``chat+proxy+ws=...``).

        An endpoint type never contains '=', so an '=' in the first ':'-separated
        field can only be the profile prefix.
        """
        head, _, _ = value.partition(":")
        if "=" not in head:
            return cls(profiles.NEA, value)
        prefix, _, endpoint = value.partition("=")
        name, *options = prefix.split("+")
        if name not in profiles.BY_NAME:
            raise ValueError(
                f"unknown profile {name!r}; choose one of {', '.join(profiles.BY_NAME)}"
            )
        for option in options:
            if option not in _OPTIONS:
                raise ValueError(
                    f"unknown listener option {option!r}; there are: "
                    + ", ".join(f"+{o}" for o in _OPTIONS)
                )
        return cls(
            profiles.BY_NAME[name], endpoint, proxy="proxy" in options, websocket="ws" in options
        )

    def with_backlog(self, backlog: int) -> str:
        return with_backlog(self.endpoint, backlog)

    @property
    def transport(self) -> str:
        """``tls`` for an ``ssl:`` endpoint, else ``tcp`` (``unix`` for a unix socket)."""
        kind = self.endpoint.partition(":")[0]
        return {"ssl": "tls", "unix": "unix"}.get(kind, "tcp")

    def tls_files(self) -> TLSFiles | None:
        """What an ``ssl:`` endpoint's TLS layer serves (None for any other kind).

        As with Twisted's own ``ssl:``, the certificate defaults to the key file.
        """
        if self.transport != "tls":
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
        if self.transport != "tls":
            return endpoint
        fields = [f for f in endpoint.split(":")[1:] if f.partition("=")[0] not in _TLS_FIELDS]
        return ":".join(["tcp", *fields])


@attrs.frozen
class TlsPolicy:
    """What every TLS listener asks of its clients (`TLSFiles` fields)."""

    client_ca: Path | None = None
    client_cert_required: bool = True
    min_version: str = "1.2"


class ClientListener(ListeningService):
    """A listener for clients of one profile (``--listen``).

    ``factory`` serves plaintext. Under an ``ssl:`` listener nea's TLS layer
    admits each socket (``admission``) and gives its handshake a turn at ``gate``.
    """

    def __init__(
        self,
        reactor,
        listen: Listen,
        backlog: int,
        factory,
        admission: Admission | None = None,
        gate: HandshakeGate | None = None,
        handshake_timeout: float = 0.0,
        tls_policy: TlsPolicy = TlsPolicy(),
    ) -> None:
        """``tls_policy``: what every TLS listener asks of clients (client CA, minimum version).
        A ``+proxy`` listener reads each connection's PROXY header first (before TLS)."""
        files = listen.tls_files()
        self.contexts = None
        if files is not None:
            try:
                policy = attrs.asdict(tls_policy, recurse=False)
                self.contexts = ContextSource(attrs.evolve(files, **policy))
            except CertificateError as e:
                raise StartupError(
                    f"--listen {listen.endpoint}: {e}; point privateKey= and "
                    "certKey= at a matching PEM key and certificate"
                ) from None
            factory = TLSServerFactory(
                factory,
                self.contexts,
                reactor,
                admission or Admission(),
                gate or HandshakeGate(),
                handshake_timeout,
                sender_for,
            )
        if listen.proxy:
            factory = ProxyHeaderFactory(factory, reactor, handshake_timeout)
        endpoint = server_endpoint(
            reactor, "--listen", listen.endpoint, [], listen.transport_endpoint(backlog)
        )
        super().__init__(reactor, "--listen", listen.endpoint, endpoint, factory)
        self.listen = listen

    def announce(self, address) -> None:
        # A +proxy listener refuses what does not start with a PROXY header: say so up front.
        proxy = ", proxy: each connection starts with a PROXY header" if self.listen.proxy else ""
        self.announce_as(
            "listening: profile {profile}, {transport} on {address}{proxy}",
            address,
            profile=self.listen.profile.name,
            transport=self.listen.transport + ("+ws" if self.listen.websocket else ""),
            proxy=proxy,
        )
