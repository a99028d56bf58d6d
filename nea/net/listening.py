"""A service that listens on a Twisted endpoint string, fails loudly at start-up, and
says where it listens once it does.

Every fault is one line that quotes the string as the user gave it and says what
to do (a `StartupError`); a port taken later, once the reactor runs, stops the
daemon with that line in the log.
"""

import errno
import json
import re
import socket
from pathlib import Path

from OpenSSL import SSL, crypto
from twisted.application.service import Service
from twisted.internet import defer
from twisted.internet.address import IPv6Address, UNIXAddress
from twisted.internet.endpoints import AdoptedStreamServerEndpoint, serverFromString
from twisted.internet.error import CannotListenError
from twisted.logger import Logger

from nea.net.startup import StartupError
from nea.tls.server import openssl_reason

log = Logger()

DEFAULT_BACKLOG = 1024
# Endpoint types whose listen(2) backlog Twisted lets a string set (default 50).
_BACKLOG_TYPES = {"tcp", "ssl", "tcp6"}


def with_backlog(endpoint: str, backlog: int) -> str:
    """``endpoint`` with ``backlog=`` added, for the types that take it and unless it has one."""
    kind = endpoint.partition(":")[0]
    if kind in _BACKLOG_TYPES and ":backlog=" not in endpoint:
        return f"{endpoint}:backlog={backlog}"
    return endpoint


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
            raise StartupError(
                f"{where}: cannot read {path}: {e.strerror}; point privateKey= "
                "and certKey= at readable PEM files"
            ) from None
    try:
        return serverFromString(reactor, endpoint or text)
    except OSError as e:  # a file the endpoint names implicitly (server.pem by default, ...)
        raise StartupError(
            f"{where}: cannot read {e.filename}: {e.strerror}; name existing files in the endpoint"
        ) from None
    except (crypto.Error, SSL.Error) as e:
        raise StartupError(
            f"{where}: {', '.join(map(str, files)) or 'the files'} do not hold "
            f"a matching PEM private key and certificate (OpenSSL: "
            f"{openssl_reason(e)}); regenerate them or name the right ones"
        ) from None
    except (ValueError, TypeError) as e:
        raise StartupError(
            f"{where}: not a valid endpoint ({_parse_reason(e)}); {_EXAMPLES}"
        ) from None


def _parse_reason(e: Exception) -> str:
    unknown = re.search(r"unexpected keyword argument '(\w+)'", str(e))
    return f"unknown parameter {unknown.group(1)!r}" if unknown else str(e)


def cannot_listen(option: str, endpoint: str, error: BaseException) -> str:
    """The one line that says why ``endpoint`` cannot listen, and what to do about it."""
    cause = error.socketError if isinstance(error, CannotListenError) else error
    reason = getattr(cause, "strerror", None) or str(cause)
    code = getattr(cause, "errno", None) or 0  # 0: not an OS error, no advice of its own
    advice = _ADVICE.get(code, "fix or change {option}")
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
        self.announce_as("{listener} listening on {address}", address)

    def adopt(self, fileno: int) -> None:
        """Listen on the socket ``fileno``, already bound and listening, instead of binding
        the endpoint: how worker processes share the sockets their supervisor bound."""
        with socket.socket(fileno=fileno) as probe:  # (only to learn its family)
            family = probe.family
            probe.detach()
        self._endpoint = AdoptedStreamServerEndpoint(self.reactor, fileno, family)

    def announce_as(self, format: str, address, **fields) -> None:
        """Log ``format`` once listening on ``address``: ``{listener}`` (the option) and
        ``{address}`` are filled in, and the port goes with the event for `announced_ports`."""
        log.info(
            format,
            listener=self.option,
            address=address_text(address),
            port=getattr(address, "port", None),
            **fields,
        )

    def listening(self) -> bool:
        """Whether the service runs and holds its port."""
        return bool(self.running) and self.listening_port is not None

    def port(self) -> defer.Deferred:
        """A Deferred firing with the listening port once there is one."""
        if self.listening_port is not None:
            return defer.succeed(self.listening_port)
        waiter: defer.Deferred = defer.Deferred()
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


def announced_ports(json_log: str, option: str = "--listen") -> list[int]:
    """The ports the listeners of ``option`` announced, in the order they did, from a JSON
    log (what twist writes when stdout is not a terminal): how tools that start
    nea-server on port 0 learn where it listens."""
    ports = []
    for line in json_log.splitlines():
        if '"listener"' not in line:
            continue
        try:
            event = json.loads(line)
        except ValueError:  # a line still being written
            continue
        if event.get("log_namespace") == __name__ and event.get("listener") == option:
            ports.append(event["port"])
    return ports
