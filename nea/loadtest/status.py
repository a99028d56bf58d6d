"""The zero-state check: ask the server for its status in-band and read its verdict.

Zero state is the server's to define: the check reads the ``zero_state`` the
server reports for itself and for its cluster (`nea.client.status` fetches it),
which leave out the connection that asks. In a cluster the other members'
figures are heartbeats that lag, so `until_zero_state` polls, bounded in time, until zero
state shows or the time is up.
"""

from typing import Any

import attrs
from twisted.internet import defer, task

from nea.client.status import StatusError, fetch_status


@attrs.frozen
class Verdict:
    zero_state: bool
    #: The figures the report shows: the cluster's connections (ours included) and
    #: relays waited for; deliveries in flight on the instance asked.
    connections: int
    pending: int
    in_flight: int
    status: dict[str, Any]


def judge(status: dict[str, Any]) -> Verdict:
    """The server's verdict on itself and its cluster (the asking connection not
    counted), with the figures behind it."""
    cluster = status["cluster"]
    return Verdict(
        bool(status["zero_state"] and cluster["zero_state"]),
        cluster["connections"],
        cluster["pending"],
        status["relays"]["in_flight"],
        status,
    )


class StatusRefused(Exception):
    """The listener does not answer status (a ``relay`` or ``chat`` profile)."""


@defer.inlineCallbacks
def fetch(reactor, endpoint, tls: bool, timeout: float):
    """The server's status dict, read over a fresh connection from ``endpoint``."""
    try:
        return (yield fetch_status(endpoint, reactor, tls, timeout, until_closed=True))
    except StatusError as e:
        if e.code is None:
            raise
        raise StatusRefused(
            f"{e}; point --status-port at a listener with the nea profile"
        ) from None


@defer.inlineCallbacks
def until_zero_state(reactor, endpoint, tls: bool, within: float, interval: float = 0.25):
    """Poll until zero state (or ``within`` seconds); the last `Verdict`."""
    deadline = reactor.seconds() + within
    while True:
        verdict = judge((yield fetch(reactor, endpoint, tls, max(1.0, within))))
        if verdict.zero_state or reactor.seconds() >= deadline:
            return verdict
        yield task.deferLater(reactor, interval, lambda: None)
