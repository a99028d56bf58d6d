"""The zero-state check: ask the server for its status in-band and judge it.

The status connection is itself a connection (and, on a ``nea`` listener, a
relay-capable one), so zero state here means: exactly one connection (ours),
no relay pending and none in flight, summed over the cluster's members when
there is a cluster. In a cluster the members' figures are heartbeats that lag,
so `settle` polls, bounded in time, until zero state shows or the time is up.
"""

import json
from typing import Any

import attrs
from twisted.internet import defer, task
from twisted.internet.protocol import Factory, Protocol

from nea.wire.codec import MAX_SERVER_LINE, LineBuffer, LineTooLong

STATUS_REQUEST = b'{"cmd":"status"}\n'


@attrs.frozen
class Verdict:
    zero_state: bool
    connections: int
    pending: int
    in_flight: int
    status: dict[str, Any]


def judge(status: dict[str, Any]) -> Verdict:
    """Zero state of an instance, or of its whole cluster, not counting the asking connection."""
    members = status.get("cluster", {}).get("members") or [status]
    connections = sum(m.get("connections", 0) for m in members)
    pending = sum(m.get("relays", {}).get("pending", 0) for m in members)
    in_flight = sum(m.get("relays", {}).get("in_flight", 0) for m in members)
    return Verdict(connections == 1 and not pending and not in_flight,
                   connections, pending, in_flight, status)


class StatusRefused(Exception):
    """The listener does not answer status (a ``relay`` or ``chat`` profile)."""


class StatusLine(Protocol):
    """Sends the status request and fires ``answer`` with the first JSON reply."""

    def __init__(self) -> None:
        self.answer: defer.Deferred = defer.Deferred()
        self._lines = LineBuffer(MAX_SERVER_LINE)

    def connectionMade(self) -> None:
        self.transport.write(STATUS_REQUEST)

    def dataReceived(self, data: bytes) -> None:
        try:
            for line in self._lines.feed(data):
                self.lineReceived(line)
        except LineTooLong:
            self.transport.abortConnection()  # connectionLost fails ``answer``

    def lineReceived(self, line: bytes) -> None:
        if line.startswith(b"error ") and not self.answer.called:
            self.answer.errback(StatusRefused(
                f"the server refused the status request ({line.decode('utf-8', 'replace')}); "
                "point --status-port at a listener with the nea profile"
            ))
            return
        if not line.startswith(b"{") or self.answer.called:
            return  # a date push (nea profile) or a relay forwarded before we asked
        obj = json.loads(line)
        self.answer.callback(obj.get("payload", obj) if obj.get("type") == "status" else obj)
        self.transport.loseConnection()

    def connectionLost(self, reason) -> None:
        if not self.answer.called:
            self.answer.errback(reason)


@defer.inlineCallbacks
def fetch(reactor, endpoint, timeout: float):
    """The server's status dict, read over a fresh connection from ``endpoint``."""
    protocol = yield endpoint.connect(Factory.forProtocol(StatusLine)).addTimeout(timeout, reactor)
    try:
        status = yield protocol.answer.addTimeout(timeout, reactor)
    finally:
        protocol.transport.loseConnection()
    return status


@defer.inlineCallbacks
def settle(reactor, endpoint, within: float, interval: float = 0.25):
    """Poll until zero state (or ``within`` seconds); the last `Verdict`."""
    deadline = reactor.seconds() + within
    while True:
        verdict = judge((yield fetch(reactor, endpoint, max(1.0, within))))
        if verdict.zero_state or reactor.seconds() >= deadline:
            return verdict
        yield task.deferLater(reactor, interval, lambda: None)
