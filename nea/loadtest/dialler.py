"""The load test's dialler: asyncio sockets and the stdlib ``ssl`` module behind
Twisted's client-endpoint interface.

A worker runs Twisted's asyncio reactor on an event loop it shares with this
endpoint, and the `nea.client.relay.RelayClient` state machine (the one
``nea-client relay`` runs) drives connections made here without knowing the
difference: they are Twisted protocols on a small `ITransport` over the asyncio
transport. Why not Twisted's own TCP and TLS client:

- each load-test socket binds its source address without a port
  (`IP_BIND_ADDRESS_NO_PORT`, below), which Twisted's connector has no public
  way to set before it binds;
- the server's name is checked by OpenSSL inside the handshake, where
  Twisted's TLS has service-identity parse the certificate again in Python on
  every connection;
- the client is the system's OpenSSL through Python's ``ssl``, like most
  clients a server meets, rather than the newer one pyOpenSSL bundles.

On two shared cores both clients measured the same CPU per client; most of it
is OpenSSL's handshake and the kernel (docs/benchmarks.rst).

The server is verified as by ``nea-client``: the given CA only, and its name.
"""

import asyncio
import socket
import ssl
from pathlib import Path
from typing import cast

from twisted.internet import defer, error
from twisted.internet.address import IPv4Address
from twisted.internet.interfaces import IStreamClientEndpoint, ITransport
from twisted.internet.protocol import Protocol
from twisted.python.failure import Failure
from zope.interface import implementer

#: Linux: bind() takes only the address and the port is picked at connect(), with
#: the whole 4-tuple known; so a source address's ports are shared among servers,
#: and ports in TIME_WAIT towards this server are reused (net.ipv4.tcp_tw_reuse).
#: A plain bind(address, 0) would search for a port no socket holds, TIME_WAIT
#: included: slow, then failing, after some 28,000 closed connections.
IP_BIND_ADDRESS_NO_PORT = getattr(socket, "IP_BIND_ADDRESS_NO_PORT", 24)


def client_context(ca: str | Path) -> ssl.SSLContext:
    """A stdlib context that trusts only ``ca`` and checks the server's name (TLS 1.2 at least,
    the stdlib's default)."""
    return ssl.create_default_context(cafile=str(ca))


@implementer(IStreamClientEndpoint)
class AsyncioEndpoint:
    """Dials ``host:port`` on ``loop``, from each of ``sources`` in turn, over TLS when
    ``context`` is given (verifying ``server_name``).

    ``timeout`` bounds the TCP connect and the TLS handshake. The returned
    Deferred fires once the protocol is connected, which over TLS is after the
    handshake: the protocol then gets ``handshakeCompleted`` at once.
    """

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        host: str,
        port: int,
        context: ssl.SSLContext | None = None,
        server_name: str | None = None,
        timeout: float = 10.0,
        sources: list[str] | tuple[str, ...] = (),
    ) -> None:
        self.loop = loop
        self.address = (host, port)
        self.context = context
        self.server_name = server_name or host
        self.timeout = timeout
        self.sources = list(sources)
        self._next_source = 0

    def connect(self, factory) -> defer.Deferred:
        source = None
        if self.sources:
            source = self.sources[self._next_source]
            self._next_source = (self._next_source + 1) % len(self.sources)
        connected: defer.Deferred = defer.Deferred(lambda d: self._cancel(d, dial))
        bridge = _Bridge(factory, connected, IPv4Address("TCP", *self.address), self.context)
        dial = self.loop.create_task(self._dial(bridge, source))
        dial.add_done_callback(bridge.dial_done)
        return connected

    def _cancel(self, connected: defer.Deferred, dial: asyncio.Task) -> None:
        dial.cancel()
        connected.errback(Failure(error.ConnectingCancelledError(self.address)))

    async def _dial(self, bridge: "_Bridge", source: str | None) -> None:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        async with asyncio.timeout(self.timeout):
            try:
                sock.setblocking(False)
                # A line written while an earlier one is unacknowledged (``ok Y`` after
                # ``message X``) must not wait for the server's delayed ACK (Nagle).
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                if source is not None:
                    sock.setsockopt(socket.IPPROTO_IP, IP_BIND_ADDRESS_NO_PORT, 1)
                    sock.bind((source, 0))
                await self.loop.sock_connect(sock, self.address)
            except BaseException:
                sock.close()
                raise
            name = self.server_name if self.context is not None else None
            # From here the transport owns the socket, and closes it on failure too.
            await self.loop.create_connection(
                lambda: bridge, sock=sock, ssl=self.context, server_hostname=name
            )


class _Bridge(asyncio.Protocol):
    """The asyncio side of one connection: hands its events to the Twisted protocol."""

    __slots__ = ("factory", "connected", "peer", "tls", "protocol")

    def __init__(self, factory, connected: defer.Deferred, peer: IPv4Address, context) -> None:
        self.factory = factory
        self.connected = connected
        self.peer = peer
        self.tls = context is not None
        self.protocol: Protocol | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        stream = cast(asyncio.Transport, transport)  # what a stream connection is given
        if self.connected.called:  # cancelled while the handshake finished
            stream.abort()
            return
        self.protocol = protocol = self.factory.buildProtocol(self.peer)
        protocol.makeConnection(_Transport(stream, self.peer))
        if self.tls:
            protocol.handshakeCompleted()
        self.connected.callback(protocol)

    def data_received(self, data: bytes) -> None:
        assert self.protocol is not None  # data comes only after connection_made built it
        self.protocol.dataReceived(data)

    def eof_received(self) -> bool:
        return False  # close: the link does not half-close

    def connection_lost(self, exc: Exception | None) -> None:
        if self.protocol is not None:
            reason = error.ConnectionDone() if exc is None else error.ConnectionLost(str(exc))
            self.protocol.connectionLost(Failure(reason))

    def dial_done(self, dial: asyncio.Task) -> None:
        """The dial's task ended: a failure before the protocol was connected fails the dial."""
        if dial.cancelled() or self.connected.called:
            return
        problem = dial.exception()
        if problem is not None:
            self.connected.errback(Failure(_twisted_error(problem, self.peer)))


def _twisted_error(problem: BaseException, peer: IPv4Address) -> BaseException:
    """Failed dials in the terms `nea.client.redial.describe` knows."""
    if isinstance(problem, ConnectionRefusedError):
        return error.ConnectionRefusedError(str(peer.host), peer.port)
    if isinstance(problem, TimeoutError):
        return error.TimeoutError(str(peer.host), "connect or handshake timed out")
    return problem


@implementer(ITransport)
class _Transport:
    """Twisted's `ITransport` over an asyncio transport (what `ServerLink` uses)."""

    __slots__ = ("transport", "peer")

    def __init__(self, transport: asyncio.Transport, peer: IPv4Address) -> None:
        self.transport = transport
        self.peer = peer

    def write(self, data: bytes) -> None:
        self.transport.write(data)

    def writeSequence(self, data) -> None:
        self.transport.writelines(data)

    def loseConnection(self) -> None:
        self.transport.close()

    def abortConnection(self) -> None:
        self.transport.abort()

    def getPeer(self) -> IPv4Address:
        return self.peer

    def getHost(self) -> IPv4Address:
        host, port = self.transport.get_extra_info("sockname")[:2]
        return IPv4Address("TCP", host, port)
