"""What an instance looks like at one moment, as frozen values.

`nea.core.hub.Hub.snapshot` is the only way out of the core for figures: the
HTTP status body, the metrics, the status reply on the wire and the service
tree all read a `Snapshot`, never the hub's parts. `status_json` is the one
place that turns it into the JSON status document, so a renamed attribute and a
renamed status key cannot drift apart. The cluster heartbeat is a separate,
versioned record (`nea.cluster.record`), built from `MemberFigures`.
"""

from collections.abc import Mapping
from types import MappingProxyType
from typing import Any

import attrs


def _frozen_mapping(value: Mapping[str, int]) -> Mapping[str, int]:
    return MappingProxyType(dict(value))


@attrs.frozen
class RelayFigures:
    #: Distinct texts a local waiter still waits for.
    pending: int
    #: Deliveries sent to local connections and not yet acked.
    in_flight: int
    requested: int
    forwarded: int
    acked: int
    reforwarded: int
    #: Deliveries not acked within the ack timeout, and so drawn again.
    expired: int
    unexpected_ok: int
    no_recipient: int


@attrs.frozen
class RequestFigures:
    #: Asks of local waiters not yet settled.
    pending: int
    #: Requests pushed to local connections and not yet replied to.
    in_flight: int
    #: Names registered here, and services with a member here.
    names: int
    services: int
    asked: int
    offered: int
    replied: int
    answered: int
    redrawn: int
    failed: int
    timed_out: int
    unexpected_reply: int
    taken_over: int


@attrs.frozen
class ChatFigures:
    said: int
    broadcasts: int


@attrs.frozen
class StoreFigures:
    """The chat history store: ``state`` is ``ok``, ``degraded`` or ``off``."""

    store: str
    state: str
    #: Lines waiting for the store now.
    queued: int
    stored: int
    #: Lines fanned out without being stored (the store failed).
    unsaved: int
    #: Lines stored after their write had been given up (fanned out unsaved too).
    stored_late: int
    #: Why it is degraded, one line.
    error: str | None
    #: The store is behind: chatters are not read until it catches up.
    pushing_back: bool = False


@attrs.frozen
class DateFigures:
    ticks: int
    running: bool


@attrs.frozen
class MemberFigures:
    """One cluster member as the others see it: what its heartbeat announces."""

    instance: str
    version: str
    state: str
    connections: int
    #: Relay-capable connections: the member's weight when a relay target is drawn.
    relay_weight: int
    pending: int
    zero_state: bool
    #: Service -> members here: the member's weight when a member of a service is drawn.
    services: Mapping[str, int] = attrs.field(factory=dict, converter=_frozen_mapping)

    def as_json(self) -> dict[str, Any]:
        return {**attrs.asdict(self), "services": dict(self.services)}


@attrs.frozen
class ClusterFigures:
    #: ``standalone``, ``connected`` or ``degraded``.
    state: str
    #: Every live member, this instance first.
    members: tuple[MemberFigures, ...]

    @property
    def connections(self) -> int:
        return sum(m.connections for m in self.members)

    @property
    def pending(self) -> int:
        return sum(m.pending for m in self.members)

    @property
    def zero_state(self) -> bool:
        return all(m.zero_state for m in self.members)


@attrs.frozen
class ConnectionInfo:
    """One connection as ``GET /connections`` lists it."""

    id: str
    name: str
    peer: str
    identity: str | None
    profile: str
    #: Seconds since the epoch, when it connected.
    since: float
    encoding: str
    bytes_in: int
    bytes_out: int
    #: How its identity was established: ``certificate``, ``token`` or ``anonymous``.
    auth: str = "anonymous"


@attrs.frozen
class AuthFigures:
    """Tokens accepted and refused, and requests refused ``not_allowed`` by permission."""

    auth_ok: int = 0
    auth_failed: int = 0
    not_allowed: Mapping[str, int] = attrs.field(factory=dict, converter=_frozen_mapping)


@attrs.frozen
class Snapshot:
    instance: str
    version: str
    uptime: float
    draining: bool
    connections: int
    relay_capable: int
    profiles: Mapping[str, int] = attrs.field(converter=_frozen_mapping)
    #: Connections with an identity (a verified client certificate, or a token).
    identified: int
    max_clients: int
    refused_full: int
    #: The TLS listeners' handshake figures, None without TLS listeners.
    handshakes: Mapping[str, int] | None = attrs.field(
        converter=attrs.converters.optional(_frozen_mapping)
    )
    #: Times a connection was made to wait for sending too fast.
    throttled: int
    requests: Mapping[str, int] = attrs.field(converter=_frozen_mapping)
    errors: Mapping[str, int] = attrs.field(converter=_frozen_mapping)
    bytes_in: int
    bytes_out: int
    relays: RelayFigures
    #: Addressed requests (to names and services); ``requests`` in the status document.
    addressed: RequestFigures
    chat: ChatFigures
    dates: DateFigures
    #: No connection, nothing waited for, nothing held: all state is gone.
    zero_state: bool
    cluster: ClusterFigures
    store: StoreFigures
    auth: AuthFigures = AuthFigures()

    @property
    def state(self) -> str:
        return "draining" if self.draining else "serving"


def status_json(snapshot: Snapshot) -> dict[str, Any]:
    """The status document: ``GET /status``, ``{"cmd":"status"}``, ``nea-client status``."""
    cluster = snapshot.cluster
    return {
        "instance": snapshot.instance,
        "version": snapshot.version,
        "uptime": round(snapshot.uptime, 3),
        "state": snapshot.state,
        "connections": snapshot.connections,
        "relay_capable": snapshot.relay_capable,
        "profiles": dict(snapshot.profiles),
        "identified": snapshot.identified,
        "max_clients": snapshot.max_clients,
        "refused_full": snapshot.refused_full,
        "handshakes": dict(snapshot.handshakes) if snapshot.handshakes is not None else None,
        "throttled": snapshot.throttled,
        "relays": attrs.asdict(snapshot.relays),
        "requests": attrs.asdict(snapshot.addressed),
        "chat": attrs.asdict(snapshot.chat),
        "dates": attrs.asdict(snapshot.dates),
        "store": attrs.asdict(snapshot.store),
        "errors": dict(snapshot.errors),
        "auth": {**attrs.asdict(snapshot.auth), "not_allowed": dict(snapshot.auth.not_allowed)},
        "zero_state": snapshot.zero_state,
        "cluster": {
            "state": cluster.state,
            "members": [m.as_json() for m in cluster.members],
            "connections": cluster.connections,
            "pending": cluster.pending,
            "zero_state": cluster.zero_state,
        },
    }
