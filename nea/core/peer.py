"""What the core needs from a connection, and the helper that fans a push out."""

from collections.abc import Iterable
from typing import Protocol as TypingProtocol

from twisted.logger import Logger

from nea.core.tokens import Token
from nea.wire import codec
from nea.wire.codec import LanePush
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
    #: Who a verified client certificate (mutual TLS, set before the peer joins) or an
    #: accepted token says this is, else None (anonymous). Once set it never changes.
    identity: str | None
    #: The accepted token it was identified by, else None.
    token: Token | None
    #: When it connected (seconds since the epoch).
    since: float
    #: Whether a client that must give its name first (the chat profile's) has given it.
    named: bool
    #: Bytes read from and written to it.
    bytes_in: int
    bytes_out: int

    @property
    def peer_address(self) -> str:
        """Where it connects from (``host:port``)."""

    def send(self, line: bytes) -> None:
        """Write one encoded line (terminator included) to the client."""

    def push(self, push: Push) -> None:
        """Encode ``push`` in this peer's encoding (and profile's forms) and send it."""

    def push_parts(self, kind: LanePush, *parts) -> None:
        """As ``push(kind(*parts))``, the value built only if its encoding needs it: the
        lane's pushes, two an exchange (`nea.wire.codec.encode_parts`)."""

    def close(self) -> None:
        """End the connection once what was sent to it is written."""

    def abort(self) -> None:
        """End the connection now, dropping whatever is unsent."""

    def ping(self) -> bool:
        """Ask the client to show it is there (`nea.core.liveness`); False if it cannot be
        asked (its profile carries no pings)."""


log = Logger()


def fan_out(peers: Iterable[Peer], push: Push, skip: Peer | None = None) -> int:
    """Send ``push`` to every peer but ``skip``, encoding it once per form; how many got it.

    A peer whose ``send`` fails is logged and skipped: the others still get it.
    """
    lines: dict[tuple[Encoding, bool], bytes] = {}
    count = 0
    for peer in peers:
        if peer is skip:
            continue
        form = (peer.encoding, peer.profile.room)
        line = lines.get(form)
        if line is None:
            line = lines[form] = codec.encode_push(push, *form)
        try:
            peer.send(line)
        except Exception:
            log.failure("sending to {peer} failed", peer=peer.id)
            continue
        count += 1
    return count
