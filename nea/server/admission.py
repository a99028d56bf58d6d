"""Admission: what every accepted socket gets before it may cost the daemon anything.

The outermost protocol of a connection (nea's TLS layer, or the nea connection
itself on plain TCP) calls `Admission.admit` at accept and `Admission.release`
when the socket is gone:

- socket options: TCP keepalive (a peer that vanished is noticed and loses its
  slot and its relays), and TCP_NODELAY (small replies are not held back by
  Nagle's algorithm waiting for the peer's delayed ACK);
- a per-address connection limit, counted from accept, so that one host cannot
  hold every socket (handshakes included).
"""

import collections
import socket


class Admission:
    """Socket options and the per-address limit for one instance's client listeners."""

    def __init__(self, keepalive: float = 60.0, max_per_address: int = 0) -> None:
        #: Seconds of silence before the kernel probes the peer; 0 leaves keepalive off.
        self.keepalive = keepalive
        #: Most connections one address may hold at once; 0 means no limit.
        self.max_per_address = max_per_address
        self.by_address: collections.Counter[str] = collections.Counter()
        #: Connections closed at accept because their address had too many.
        self.refused = 0

    def admit(self, transport) -> bool:
        """Set up a just-accepted socket; False (it is then closed) if its address is over
        the limit."""
        host = _host(transport)
        if self.max_per_address and self.by_address[host] >= self.max_per_address:
            self.refused += 1
            transport.abortConnection()
            return False
        self.by_address[host] += 1
        self._socket_options(transport)
        return True

    def release(self, transport) -> None:
        host = _host(transport)
        left = self.by_address[host] - 1
        if left > 0:
            self.by_address[host] = left
        else:
            del self.by_address[host]

    def _socket_options(self, transport) -> None:
        if not hasattr(transport, "setTcpNoDelay"):
            return  # not a TCP socket (a UNIX one, or a test's transport)
        transport.setTcpNoDelay(True)
        if not self.keepalive:
            return
        transport.setTcpKeepAlive(True)
        handle = transport.getHandle()
        idle = max(1, int(self.keepalive))
        # Probe after ``idle`` s of silence, then every idle/3 s; give up after 3 unanswered.
        for option, value in (
            ("TCP_KEEPIDLE", idle),
            ("TCP_KEEPINTVL", max(1, idle // 3)),
            ("TCP_KEEPCNT", 3),
        ):
            if hasattr(socket, option):
                handle.setsockopt(socket.IPPROTO_TCP, getattr(socket, option), value)


def _host(transport) -> str:
    address = transport.getPeer()
    return getattr(address, "host", None) or str(address)
