"""Listeners: ``[PROFILE=]ENDPOINT`` strings, the backlog, nea's TLS layer, failing loudly
at start-up, and one log line per listener once it listens.

An ``ssl:`` client endpoint is served as the ``tcp:`` endpoint beneath it with nea's
own TLS layer (`nea.tls.server`) on top, so that a connection joins the hub only
once its handshake has completed and a close_notify is an end of stream like a FIN.
"""

import errno
import json
import re
from pathlib import Path

import attrs
from OpenSSL import SSL, crypto
from twisted.application.service import Service
from twisted.internet import defer
from twisted.internet.address import IPv6Address, UNIXAddress
from twisted.internet.endpoints import serverFromString
from twisted.internet.error import CannotListenError
from twisted.logger import Logger

from nea.server.admission import Admission
from nea.server.proxyheader import ProxyHeaderFactory
from nea.server.startup import StartupError
from nea.tls.server import (
    CertificateError, ContextSource, HandshakeGate, TLSFiles, TLSServerFactory, openssl_reason,
)
from nea.wire import profiles
from nea.wire.profiles import Profile

log = Logger()

DEFAULT_BACKLOG = 1024
DEV_CERTS = Path("certs")
DEFAULT_LISTEN = (
    f"ssl:3443:privateKey={DEV_CERTS}/server-key.pem:certKey={DEV_CERTS}/server.pem"
)

# Endpoint types whose listen(2) backlog Twisted lets a string set (default 50).
_BACKLOG_TYPES = {"tcp", "ssl", "tcp6"}
#: What may follow a profile name, each after a '+'.
_OPTIONS = ("proxy", "ws")
#: The fields of an ``ssl:`` string that belong to its TLS layer, not to its TCP port.
_TLS_FIELDS = ("privateKey", "certKey", "extraCertChain")


def with_backlog(endpoint: str, backlog: int) -> str:
    """``endpoint`` with ``backlog=`` added, for the types that take it and unless it has one."""
    kind = endpoint.partition(":")[0]
    if kind in _BACKLOG_TYPES and ":backlog=" not in endpoint:
        return f"{endpoint}:backlog={backlog}"
    return endpoint


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
                raise ValueError(f"unknown listener option {option!r}; there are: "
                                 + ", ".join(f"+{o}" for o in _OPTIONS))
        return cls(profiles.BY_NAME[name], endpoint, proxy="proxy" in options,
                   websocket="ws" in options)

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




_EXAMPLES = "e.g. tcp:8000:interface=127.0.0.1 or ssl:3443:privateKey=KEY.pem:certKey=CERT.pem"
_ADVICE = {
    errno.EADDRINUSE: "another process holds it (`ss -ltnp` shows which): stop that process "
                      "or give another port with {option}",
    errno.EACCES: "ports below 1024 need privileges: give a higher port with {option}, "
                  "or use systemd socket activation",
    errno.EADDRNOTAVAIL: "the interface is not an address of this machine: fix it in {option}",
}


def server_endpoint(reactor, option: str, text: str, files: list[Path], endpoint: str = ""):
    """The Twisted endpoint for ``endpoint`` (default ``text``, the string as the user
    gave it to ``option``); any fault in it is a `StartupError` that quotes ``text``.

    ``files`` (certificates and keys) are opened first, so that the message names
    the file at fault rather than OpenSSL's decoder.
    """
    where = f"{option} {text}"
    for path in files:
        try:
            path.open("rb").close()
        except OSError as e:
            raise StartupError(f"{where}: cannot read {path}: {e.strerror}; point privateKey= "
                               "and certKey= at readable PEM files") from None
    try:
        return serverFromString(reactor, endpoint or text)
    except OSError as e:  # a file the endpoint names implicitly (server.pem by default, ...)
        raise StartupError(f"{where}: cannot read {e.filename}: {e.strerror}; name existing "
                           "files in the endpoint") from None
    except (crypto.Error, SSL.Error) as e:
        raise StartupError(f"{where}: {', '.join(map(str, files)) or 'the files'} do not hold "
                           f"a matching PEM private key and certificate (OpenSSL: "
                           f"{openssl_reason(e)}); regenerate them or name the right ones") from None
    except (ValueError, TypeError) as e:
        raise StartupError(f"{where}: not a valid endpoint ({_parse_reason(e)}); "
                           f"{_EXAMPLES}") from None


def _parse_reason(e: Exception) -> str:
    unknown = re.search(r"unexpected keyword argument '(\w+)'", str(e))
    return f"unknown parameter {unknown.group(1)!r}" if unknown else str(e)


def cannot_listen(option: str, endpoint: str, error: BaseException) -> str:
    """The one line that says why ``endpoint`` cannot listen, and what to do about it."""
    cause = error.socketError if isinstance(error, CannotListenError) else error
    reason = getattr(cause, "strerror", None) or str(cause)
    advice = _ADVICE.get(getattr(cause, "errno", None), "fix or change {option}")
    return f"cannot listen on {endpoint} ({option}): {reason}; {advice.format(option=option)}"


def address_text(address) -> str:
    """``host:port`` (``[host]:port`` for IPv6) or a unix socket's path."""
    if isinstance(address, UNIXAddress):
        return address.name.decode() if isinstance(address.name, bytes) else str(address.name)
    host = f"[{address.host}]" if isinstance(address, IPv6Address) else address.host
    return f"{host}:{address.port}"


class ListeningService(Service):
    """Listens on one endpoint while running; a daemon that cannot listen does not start.

    (Twisted's StreamServerEndpointService only logs a failed listen and runs on
    without the port: a daemon that is "running" but unreachable is worse than one
    that will not start.) The listen happens in ``privilegedStartService``, before
    twistd drops privileges, or in ``startService`` for runners that call only that
    (twist, tests). Every endpoint string listens at once, so a failure is raised
    there as a `StartupError`; an endpoint that answered later would log its
    failure and stop the reactor. Subclasses say what listens in `announce`.
    """

    def __init__(self, reactor, option: str, text: str, endpoint, factory) -> None:
        self.reactor = reactor
        self.option = option
        self.text = text
        self._endpoint = endpoint
        # The listener announces itself; the factory's own "starting on" lines are noise.
        factory.noisy = False
        self._factory = factory
        self.listening_port = None
        self._listening: defer.Deferred | None = None
        self._waiting: list[defer.Deferred] = []

    def announce(self, address) -> None:
        log.info("{option} listening on {address}", option=self.option,
                 address=address_text(address))

    def listening(self) -> bool:
        """Whether the service runs and holds its port."""
        return self.running and self.listening_port is not None

    def port(self) -> defer.Deferred:
        """A Deferred firing with the listening port once there is one."""
        if self.listening_port is not None:
            return defer.succeed(self.listening_port)
        waiter = defer.Deferred()
        self._waiting.append(waiter)
        return waiter

    def privilegedStartService(self) -> None:
        super().privilegedStartService()
        self._listen()

    def startService(self) -> None:
        super().startService()
        self._listen()

    def stopService(self):
        super().stopService()
        port, self.listening_port, self._listening = self.listening_port, None, None
        return port.stopListening() if port is not None else None

    def _listen(self) -> None:
        if self._listening is not None:
            return
        listening = self._endpoint.listen(self._factory).addCallback(self._listened)
        if listening.called:
            failed: list = []
            listening.addErrback(failed.append)
            if failed:
                raise StartupError(cannot_listen(self.option, self.text, failed[0].value))
        else:
            listening.addErrback(self._failed_later)
        self._listening = listening

    def _listened(self, port):
        self.listening_port = port
        self.announce(port.getHost())
        waiting, self._waiting = self._waiting, []
        for waiter in waiting:
            waiter.callback(port)

    def _failed_later(self, failure) -> None:
        log.critical("{why}", why=cannot_listen(self.option, self.text, failure.value))
        self.reactor.stop()


class ClientListener(ListeningService):
    """A listener for clients of one profile (``--listen``).

    ``factory`` serves plaintext. Under an ``ssl:`` listener nea's TLS layer
    admits each socket (``admission``) and gives its handshake a turn at ``gate``.
    """

    def __init__(self, reactor, listen: Listen, backlog: int, factory,
                 admission: Admission | None = None, gate: HandshakeGate | None = None,
                 handshake_timeout: float = 0.0, tls_policy: dict | None = None) -> None:
        """``tls_policy``: `TLSFiles` fields (client CA, minimum version) for every TLS listener.
        A ``+proxy`` listener reads each connection's PROXY header first (before TLS)."""
        files = listen.tls_files()
        self.contexts = None
        if files is not None:
            try:
                self.contexts = ContextSource(attrs.evolve(files, **(tls_policy or {})))
            except CertificateError as e:
                raise StartupError(f"--listen {listen.endpoint}: {e}; point privateKey= and "
                                   "certKey= at a matching PEM key and certificate") from None
            factory = TLSServerFactory(factory, self.contexts, reactor, admission or Admission(),
                                       gate or HandshakeGate(), handshake_timeout)
        if listen.proxy:
            factory = ProxyHeaderFactory(factory, reactor, handshake_timeout)
        endpoint = server_endpoint(reactor, "--listen", listen.endpoint, [],
                                   listen.transport_endpoint(backlog))
        super().__init__(reactor, "--listen", listen.endpoint, endpoint, factory)
        self.listen = listen

    def announce(self, address) -> None:
        log.info("listening: profile {profile}, {transport} on {address}",
                 profile=self.listen.profile.name,
                 transport=self.listen.transport + ("+ws" if self.listen.websocket else ""),
                 address=address_text(address), port=getattr(address, "port", None))


def announced_ports(json_log: str) -> list[int]:
    """The client listeners' ports, in ``--listen`` order, from a JSON log (what twist
    writes when stdout is not a terminal): how tools that start nea-server on port 0
    learn where it listens."""
    ports = []
    for line in json_log.splitlines():
        if '"listening: profile' not in line:
            continue
        try:
            event = json.loads(line)
        except ValueError:  # a line still being written
            continue
        if event.get("log_namespace") == __name__ and "profile" in event:
            ports.append(event["port"])
    return ports
