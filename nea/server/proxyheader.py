"""The PROXY protocol (v1 text, v2 binary): the real client's address from a load balancer.

Behind HAProxy every connection comes from HAProxy; with ``send-proxy-v2`` it
first sends a header naming the client. `ProxyHeaderProtocol` reads that header
before anything else (before the TLS ClientHello, when TLS is passed through),
then connects the protocol it wraps, whose transport's ``getPeer`` is from then
on the client's address, so per-address limits and ``/connections`` see the
clients, not the proxy. A connection that sends no valid header within the
deadline is closed: a listener that expects one must not trust a peer that
skips it.
"""

import ipaddress
import struct

import attrs
from twisted.internet import address, interfaces
from twisted.internet.protocol import connectionDone
from twisted.protocols.policies import WrappingFactory
from twisted.python.failure import Failure
from zope.interface import directlyProvides, implementer, providedBy

from nea.net.sending import SendingWrapper, sender_for

V2_SIGNATURE = b"\r\n\r\n\x00\r\nQUIT\n"
#: Longest v1 header (the specification's bound, CRLF included).
V1_MAX = 107
#: Longest v2 header accepted: 16 bytes, IPv6 addresses and room for TLVs.
V2_MAX = 16 + 512


class BadHeader(ValueError):
    """Not a PROXY header (or one nea does not accept)."""


@attrs.frozen
class Parsed:
    #: The client's address, or None for a LOCAL/UNKNOWN header (the proxy's own check).
    source: address.IPv4Address | address.IPv6Address | None
    #: Bytes the header took; what follows belongs to the wrapped protocol.
    length: int


def parse(data: bytes) -> Parsed | None:
    """The header at the start of ``data``; None if more bytes are needed; `BadHeader` if
    not one."""
    if data[:1] == b"P":
        return _parse_v1(data)
    if data[:1] == b"\r":
        return _parse_v2(data)
    if data:
        raise BadHeader("no PROXY header")
    return None


def _parse_v1(data: bytes) -> Parsed | None:
    end = data.find(b"\r\n", 0, V1_MAX)
    if end < 0:
        if len(data) >= V1_MAX or not (data.startswith(b"PROXY ") or b"PROXY ".startswith(data)):
            raise BadHeader("no v1 PROXY header with its CRLF within 107 bytes")
        return None
    fields = data[:end].split(b" ")
    if fields[0] != b"PROXY":
        raise BadHeader("not a v1 PROXY header")
    if fields[1:2] == [b"UNKNOWN"]:
        return Parsed(None, end + 2)
    if len(fields) != 6 or fields[1] not in (b"TCP4", b"TCP6"):
        raise BadHeader("a v1 header is PROXY TCP4|TCP6 SRC DST SPORT DPORT")
    try:
        host = str(ipaddress.ip_address(fields[2].decode("ascii")))
        port = int(fields[4])
    except (ValueError, UnicodeDecodeError):
        raise BadHeader("bad address in v1 header") from None
    kind = address.IPv4Address if fields[1] == b"TCP4" else address.IPv6Address
    return Parsed(kind("TCP", host, port), end + 2)


def _parse_v2(data: bytes) -> Parsed | None:
    if len(data) < 16:
        if not V2_SIGNATURE.startswith(data[:12]):
            raise BadHeader("not a v2 PROXY signature")
        return None
    if data[:12] != V2_SIGNATURE or data[12] >> 4 != 2:
        raise BadHeader("not a v2 PROXY header")
    length = 16 + struct.unpack("!H", data[14:16])[0]
    if length > V2_MAX:
        raise BadHeader("v2 header too long")
    if len(data) < length:
        return None
    command, family = data[12] & 0x0F, data[13]
    body = data[16:length]
    if command == 0 or family >> 4 == 0:  # LOCAL, or UNSPEC: the proxy speaking for itself
        return Parsed(None, length)
    if family == 0x11 and len(body) >= 12:  # TCP over IPv4
        ip4 = ipaddress.IPv4Address(body[:4])
        port = struct.unpack("!H", body[8:10])[0]
        return Parsed(address.IPv4Address("TCP", str(ip4), port), length)
    if family == 0x21 and len(body) >= 36:  # TCP over IPv6
        ip6 = ipaddress.IPv6Address(body[:16])
        port = struct.unpack("!H", body[32:34])[0]
        return Parsed(address.IPv6Address("TCP", str(ip6), port), length)
    raise BadHeader("v2 header for a transport nea does not serve")


# A transport too: the wrapped protocol's, providing what the TCP connection provides.
@implementer(interfaces.IHalfCloseableProtocol, interfaces.ITransport)
class ProxyHeaderProtocol(SendingWrapper):
    """Reads the PROXY header, then connects the wrapped protocol with the client's
    address; what that protocol writes goes to the TCP connection at once where it can."""

    transport: interfaces.ITCPTransport

    def __init__(self, factory: "ProxyHeaderFactory", wrapped) -> None:
        super().__init__(factory, wrapped)
        self._buffer = b""
        self._source: address.IPv4Address | address.IPv6Address | None = None
        self._header_done = False
        self._deadline = None

    def makeConnection(self, transport) -> None:
        # Unlike ProtocolWrapper, the wrapped protocol is connected only after the header.
        directlyProvides(self, providedBy(transport))
        self.factory.registerProtocol(self)
        self.transport = transport
        self.connected = True
        if self.factory.timeout:
            self._deadline = self.factory.clock.callLater(self.factory.timeout, self._expired)

    def dataReceived(self, data: bytes) -> None:
        if self._header_done:
            self.wrappedProtocol.dataReceived(data)
            return
        self._buffer += data
        try:
            parsed = parse(self._buffer)
        except BadHeader:
            self.factory.rejected += 1
            self.transport.abortConnection()
            return
        if parsed is None:
            return
        self._header_done = True
        self._cancel_deadline()
        self._source = parsed.source
        rest, self._buffer = self._buffer[parsed.length :], b""
        self.output = sender_for(self.transport)
        self.wrappedProtocol.makeConnection(self)
        if rest and self.connected:
            self.wrappedProtocol.dataReceived(rest)

    def _expired(self) -> None:
        self._deadline = None
        self.factory.rejected += 1
        self.transport.abortConnection()

    def _cancel_deadline(self) -> None:
        if self._deadline is not None and self._deadline.active():
            self._deadline.cancel()
        self._deadline = None

    def getPeer(self):
        return self._source or self.transport.getPeer()

    def readConnectionLost(self) -> None:
        if self._header_done and interfaces.IHalfCloseableProtocol.providedBy(self.wrappedProtocol):
            self.wrappedProtocol.readConnectionLost()
        else:
            self.transport.loseConnection()

    def writeConnectionLost(self) -> None:
        if self._header_done and interfaces.IHalfCloseableProtocol.providedBy(self.wrappedProtocol):
            self.wrappedProtocol.writeConnectionLost()

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        self._cancel_deadline()
        if self._header_done:
            super().connectionLost(reason)
        else:
            self.connected = False
            self.factory.unregisterProtocol(self)


class ProxyHeaderFactory(WrappingFactory[ProxyHeaderProtocol]):
    """Wraps each connection of ``wrapped`` in `ProxyHeaderProtocol`.

    ``timeout`` seconds (0: none) is how long a peer has to send the header.
    """

    protocol = ProxyHeaderProtocol
    noisy = False

    def __init__(self, wrapped, clock, timeout: float) -> None:
        super().__init__(wrapped)
        self.clock = clock
        self.timeout = timeout
        #: Connections closed for sending no valid header in time.
        self.rejected = 0
