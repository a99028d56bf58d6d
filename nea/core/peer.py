"""What the core needs from a connection, and the helper that fans a push out."""

from typing import Iterable, Protocol as TypingProtocol

from twisted.logger import Logger

from nea.wire import codec
from nea.wire.frames import Encoding, Push
from nea.wire.profiles import Profile


class Peer(TypingProtocol):
    """A connected client as the core sees it.

    `nea.server.connection.NeaConnection` is the real one; tests use
    `nea.core.testing.FakePeer`.
    """

    id: str
    name: str
    profile: Profile
    encoding: Encoding
    #: Who a verified client certificate says this is (mutual TLS), else None; set before
    #: the peer joins, never changed afterwards.
    identity: str | None
    #: Where it connects from (``host:port``), and when (seconds since the epoch).
    peer_address: str
    since: float
    #: Bytes read from and written to it.
    bytes_in: int
    bytes_out: int

    def send(self, line: bytes) -> None:
        """Write one encoded line (terminator included) to the client."""

    def push(self, push: Push) -> None:
        """Encode ``push`` in this peer's encoding and send it."""

    def close(self) -> None:
        """End the connection once what was sent to it is written."""

    def abort(self) -> None:
        """End the connection now, dropping whatever is unsent."""


log = Logger()


def fan_out(peers: Iterable[Peer], push: Push) -> int:
    """Send ``push`` to every peer, encoding it once per encoding; return how many got it.

    A peer whose ``send`` fails is logged and skipped: the others still get it.
    """
    lines: dict[Encoding, bytes] = {}
    count = 0
    for peer in peers:
        line = lines.get(peer.encoding)
        if line is None:
            line = lines[peer.encoding] = codec.encode_push(push, peer.encoding)
        try:
            peer.send(line)
        except Exception:
            log.failure("sending to {peer} failed", peer=peer.id)
            continue
        count += 1
    return count
