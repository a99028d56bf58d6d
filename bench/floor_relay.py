"""The least a Python relay on Twisted can do: the floor under nea's relay path.

    python bench/floor_relay.py PORT

Speaks just enough of the relay profile for the ``relay_throughput.py`` driver:
``message X`` goes to a connection drawn at random, whose ``ok X`` goes back to
the sender. Nothing else: no limits, ids, deadlines, permissions, counters or
errors. What it costs per exchange is what CPython and Twisted cost for the
reads, the line splitting, two dict operations and the writes; nea's relay
cost over this one is what nea's guarantees cost.

Its writes to each connection are gathered and written once per reactor turn,
the best Twisted allows a server that answers other connections than the one
it reads.
"""

import random
import sys
from collections import deque

from twisted.internet import protocol, reactor


class Floor(protocol.Protocol):
    def connectionMade(self) -> None:
        self.transport.setTcpNoDelay(True)  # as nea and nats-server do: no Nagle delays
        self.factory.members.append(self)
        self.tail = b""
        self.held: dict[bytes, deque] = {}
        self.out: list[bytes] = []

    def dataReceived(self, data: bytes) -> None:
        *lines, self.tail = (self.tail + data).split(b"\n")
        members, dirty = self.factory.members, self.factory.dirty
        for line in lines:
            if line.startswith(b"message "):
                target = members[int(random.random() * len(members))]
                text = line[8:]
                target.held.setdefault(text, deque()).append(self)
                target.out.append(line + b"\n")
                dirty.add(target)
            elif line.startswith(b"ok "):
                held = self.held[line[3:]]
                origin = held.popleft()
                if not held:
                    del self.held[line[3:]]
                origin.out.append(line + b"\n")
                dirty.add(origin)
        self.factory.flush_later()

    def connectionLost(self, reason) -> None:
        self.factory.members.remove(self)
        self.factory.dirty.discard(self)


class FloorFactory(protocol.Factory):
    protocol = Floor

    def __init__(self) -> None:
        self.members: list[Floor] = []
        self.dirty: set[Floor] = set()
        self.scheduled = False

    def flush_later(self) -> None:
        if not self.scheduled:
            self.scheduled = True
            reactor.callLater(0, self.flush)

    def flush(self) -> None:
        self.scheduled = False
        dirty, self.dirty = self.dirty, set()
        for member in dirty:
            member.transport.write(b"".join(member.out))
            member.out = []


if __name__ == "__main__":
    reactor.listenTCP(int(sys.argv[1]), FloorFactory(), interface="127.0.0.1")
    reactor.run()
