"""In-memory stand-ins for tests of the core (and of anything built on it)."""

import itertools

from nea.wire import codec, frames
from nea.wire.frames import Encoding
from nea.wire.profiles import NEA, Profile

_ids = itertools.count(1)


class FakePeer:
    """A `nea.core.peer.Peer` that records what it was sent."""

    def __init__(self, profile: Profile = NEA, encoding: Encoding = Encoding.TEXT,
                 name: str | None = None) -> None:
        """``name``: it has given its name already (a chat-profile client is in the room)."""
        self.id = f"f{next(_ids)}"
        self.name = name or self.id
        self.profile = profile
        self.encoding = encoding
        self.identity = None
        self.peer_address = "127.0.0.1:0"
        self.since = 0.0
        self.named = name is not None
        self.bytes_in = self.bytes_out = 0
        self.lines: list[bytes] = []
        self.closed = False
        self.aborted = False

    def send(self, line: bytes) -> None:
        self.lines.append(line)

    def push(self, push: frames.Push) -> None:
        self.send(codec.encode_push(push, self.encoding, self.profile.room))

    def close(self) -> None:
        self.closed = True

    def abort(self) -> None:
        self.aborted = True

    def ping(self) -> bool:
        if frames.Ping not in self.profile.allowed:
            return False
        self.push(frames.PingPush())
        return True

    @property
    def pushes(self) -> list[frames.Push]:
        return [codec.decode_push(line.rstrip(b"\n")) for line in self.lines]

    def take(self) -> list[frames.Push]:
        """The pushes received since the last call."""
        pushes = self.pushes
        self.lines.clear()
        return pushes
