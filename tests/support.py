"""Shared test helpers: real servers on loopback, real TLS, and a line client.

Everything binds 127.0.0.1 on a port the kernel picks; every wait has a timeout.
"""

import os
import socket
import struct
import sys
import tempfile
from pathlib import Path

from twisted.internet import defer, reactor, task
from twisted.internet.defer import DeferredQueue
from twisted.internet.endpoints import TCP4ClientEndpoint, wrapClientTLS
from twisted.internet.protocol import Factory
from twisted.internet.ssl import Certificate, PrivateCertificate, optionsForClientTLS
from twisted.protocols.basic import LineReceiver

from nea.server.options import Options
from nea.server.service import makeService
from nea.tls import devcerts
from nea.wire import codec

#: Seconds any single wait in a test may take before the test fails.
WAIT = 10.0

_certs: Path | None = None

#: Test servers' HTTP API listens on a free port, not the default 3000 (a later
#: ``--http`` in a test's own arguments wins).
HTTP_ANY_PORT = ("--http", "tcp:0:interface=127.0.0.1")


def certs() -> Path:
    """A directory of development certificates, generated once per test process."""
    global _certs
    if _certs is None:
        _certs = Path(tempfile.mkdtemp(prefix="nea-test-certs-"))
        devcerts.generate(_certs)
    return _certs


def tls_listen(profile: str = "nea") -> str:
    d = certs()
    return (
        f"{profile}=ssl:0:interface=127.0.0.1:privateKey={d}/server-key.pem:certKey={d}/server.pem"
    )


def tcp_listen(profile: str = "nea") -> str:
    return f"{profile}=tcp:0:interface=127.0.0.1"


def ws_listen(profile: str = "nea", tls: bool = False) -> str:
    return (tls_listen if tls else tcp_listen)(f"{profile}+ws")


def listen_on_all(profile: str = "nea") -> list[str]:
    """``--listen`` options for ``profile`` over TCP, TLS, ws and wss, in that order."""
    listens = [
        tcp_listen(profile),
        tls_listen(profile),
        ws_listen(profile),
        ws_listen(profile, tls=True),
    ]
    return [arg for listen in listens for arg in ("--listen", listen)]


def client_tls(hostname: str = "localhost", client_cert: bool = False):
    d = certs()
    ca = Certificate.loadPEM((d / devcerts.CA_CERT).read_bytes())
    own = None
    if client_cert:
        own = PrivateCertificate.loadPEM(
            (d / devcerts.CLIENT_CERT).read_bytes() + (d / devcerts.CLIENT_KEY).read_bytes()
        )
    return optionsForClientTLS(hostname, ca, own)


def parse_options(*args: str) -> Options:
    """``nea-server`` options parsed from ``args``, as twistd would; history is off
    (``--store none``) unless ``args`` name a store, so tests do not share a file."""
    config = Options()
    config.parseOptions(list(without_history(args)))
    return config


@defer.inlineCallbacks
def start_server(testcase, *args: str):
    """Start the real nea-server service tree in this process with ``args``.

    Returns the service; ``service.ports`` lists the listening port numbers in
    ``--listen`` order, ``service.http_port`` is the HTTP API's (None with
    ``--http none``). The service is stopped when the test ends.
    """
    config = parse_options("--instance-id", "test", *HTTP_ANY_PORT, *args)
    service = makeService(config, reactor)
    service.startService()
    testcase.addCleanup(service.stopService)
    ports = yield defer.gatherResults([listener.port() for listener in service.listeners])
    service.ports = [port.getHost().port for port in ports]
    service.http_port = None
    if service.http is not None:
        # Through gatherResults: yielding the listener's own Deferred would eat its port.
        [http] = yield defer.gatherResults([service.http.port()])
        service.http_port = http.getHost().port
    return service


class LineClient(LineReceiver):
    """Collects every line from the server; ``next`` waits for the next one."""

    delimiter = b"\n"
    MAX_LENGTH = 1024 * 1024

    def __init__(self) -> None:
        self.lines: DeferredQueue = DeferredQueue()
        self.closed = defer.Deferred()

    def lineReceived(self, line: bytes) -> None:
        self.lines.put(line)

    def connectionLost(self, reason) -> None:
        self.closed.callback(None)

    def send(self, line: str | bytes) -> None:
        if isinstance(line, str):
            line = line.encode("utf-8")
        self.transport.write(line + b"\n")

    def next(self, timeout: float = WAIT):
        """The next line, as bytes."""
        return self.lines.get().addTimeout(timeout, reactor)

    @defer.inlineCallbacks
    def next_push(self, skip_dates: bool = True, timeout: float = WAIT):
        """The next decoded push, skipping date pushes unless asked not to."""
        for _ in range(1000):
            push = codec.decode_push((yield self.next(timeout)))
            if not (skip_dates and type(push).__name__ == "DatePush"):
                return push
        raise AssertionError("only date pushes arrived")


@defer.inlineCallbacks
def connect(
    testcase, port: int, tls: bool = True, client_cert: bool = False, timeout: float = WAIT
):
    """A connected `LineClient` (TLS handshake done when ``tls``); closed at test end."""
    endpoint = TCP4ClientEndpoint(reactor, "127.0.0.1", port, timeout=timeout)
    if tls:
        endpoint = wrapClientTLS(client_tls(client_cert=client_cert), endpoint)
    client = yield endpoint.connect(Factory.forProtocol(LineClient)).addTimeout(timeout, reactor)
    testcase.addCleanup(_close, client)
    return client


def _close(client: LineClient):
    if not client.closed.called:
        client.transport.abortConnection()
    return client.closed


def bounded_socket(host: str, port: int) -> "socket.socket":
    """A blocking socket (as pyOpenSSL and plain scripts need) whose every call the kernel
    times out after ``WAIT`` seconds, for clients run in threads."""
    sock = socket.create_connection((host, port), timeout=WAIT)
    sock.settimeout(None)
    bound = struct.pack("ll", int(WAIT), 0)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO, bound)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDTIMEO, bound)
    return sock


def next_tick(seconds: float = 0.01):
    return task.deferLater(reactor, seconds, lambda: None)


@defer.inlineCallbacks
def settle(condition, timeout: float = WAIT):
    """Wait until ``condition()`` holds, polling the reactor; fail after ``timeout`` seconds."""
    deadline = reactor.seconds() + timeout
    while not condition():
        if reactor.seconds() > deadline:
            raise AssertionError(f"{condition} did not hold within {timeout} s")
        yield next_tick()


def without_history(args) -> tuple[str, ...]:
    """``args``, with ``--store none`` unless they name a store: tests share no history file."""
    if any(arg == "--store" or arg.startswith("--store=") for arg in args):
        return tuple(args)
    return (*args, "--store", "none")


def daemon_command(*args: str) -> list[str]:
    """argv that runs nea-server in the foreground as a separate process."""
    return [sys.executable, "-m", "twisted", "nea-server", *HTTP_ANY_PORT, *without_history(args)]


def twistd_command(*args: str) -> list[str]:
    """argv that runs nea-server as ``twistd -n --pidfile= nea-server`` (as ``make run`` does)."""
    return [
        sys.executable,
        "-c",
        "from twisted.scripts.twistd import run; run()",
        "--nodaemon",
        "--pidfile=",
        "nea-server",
        *HTTP_ANY_PORT,
        *without_history(args),
    ]


def daemon_env() -> dict[str, str]:
    """Environment for a daemon subprocess: this checkout first on its path."""
    env = dict(os.environ)
    root = str(Path(__file__).resolve().parent.parent)
    env["PYTHONPATH"] = root + os.pathsep + env.get("PYTHONPATH", "")
    return env
