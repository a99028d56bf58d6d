"""``GET /metrics``: the hub's own counters read at scrape time, plus latency histograms.

The core keeps plain counters (requests, errors, relay figures, date ticks,
bytes) and knows nothing of Prometheus; `HubCollector` turns the hub's snapshot
into metric families when Prometheus asks. Latencies cannot be read after the
fact, so they are observed as they happen: `RelayTimer` hears relays start and
end through the hub, and the HTTP layer times its own requests.

Each site has its own `CollectorRegistry`, so several servers in one process
(tests) never share or clash on metrics.
"""

from collections.abc import Iterator, Mapping

import attrs
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, ProcessCollector
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, InfoMetricFamily
from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest
from twisted.internet.interfaces import IReactorTime

from nea.core.hub import Hub
from nea.core.snapshot import RelayFigures, RequestFigures
from nea.wire import errors

CLUSTER_STATES = ("standalone", "connected", "degraded")
#: The relay and request figures that are gauges (each its own metric); every other
#: figure counts events, one label of ``nea_relay_events`` or ``nea_request_events``.
RELAY_GAUGES = frozenset({"pending", "in_flight"})
REQUEST_GAUGES = frozenset({"pending", "in_flight", "names", "services"})
RELAY_EVENTS = tuple(f.name for f in attrs.fields(RelayFigures) if f.name not in RELAY_GAUGES)
REQUEST_EVENTS = tuple(f.name for f in attrs.fields(RequestFigures) if f.name not in REQUEST_GAUGES)
#: Seconds: from a loopback round trip (sub-millisecond) to a client that acks late.
LATENCY_BUCKETS = (
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1,
    2.5,
    5,
    10,
    30,
)


class HubCollector:
    """A Prometheus collector that reads the hub's figures on every scrape."""

    def __init__(self, hub: Hub) -> None:
        self.hub = hub

    def collect(self) -> Iterator:
        snapshot = self.hub.snapshot()
        info = InfoMetricFamily("nea", "This instance.")
        info.add_metric([], {"instance": snapshot.instance, "version": snapshot.version})
        yield info
        yield _gauge("nea_uptime_seconds", "Seconds since this instance started.", snapshot.uptime)
        yield _gauge(
            "nea_draining", "1 while the instance drains before stopping.", int(snapshot.draining)
        )
        connections = GaugeMetricFamily(
            "nea_connections", "Connected clients, by listener profile.", labels=["profile"]
        )
        for profile, count in sorted(snapshot.profiles.items()):
            connections.add_metric([profile], count)
        yield connections
        yield _gauge(
            "nea_max_clients", "Most clients this instance serves at once.", snapshot.max_clients
        )
        yield _counter(
            "nea_connections_refused_full",
            "Clients refused because the instance was full.",
            snapshot.refused_full,
        )
        handshakes = snapshot.handshakes
        if handshakes is not None:
            now = GaugeMetricFamily(
                "nea_tls_handshakes",
                "TLS connections not yet through their handshake, by state.",
                labels=["state"],
            )
            for state in ("unfinished", "in_progress", "waiting"):
                now.add_metric([state], handshakes[state])
            yield now
            yield _labelled_counter(
                "nea_tls_handshakes_ended",
                "TLS handshakes, by how they ended.",
                "outcome",
                {o: handshakes[o] for o in ("completed", "timed_out", "failed")},
            )
        yield _counter(
            "nea_throttled",
            "Times a client was made to wait for sending too fast.",
            snapshot.throttled,
        )
        yield _labelled_counter(
            "nea_requests", "Requests from clients, by kind.", "kind", snapshot.requests
        )
        yield _labelled_counter(
            "nea_errors",
            "Error replies sent to clients, by code.",
            "code",
            {**{e.code: 0 for e in errors.ALL}, **snapshot.errors},
        )
        relays = snapshot.relays
        yield _labelled_counter(
            "nea_relay_events",
            "Relay events on this instance.",
            "event",
            {event: getattr(relays, event) for event in RELAY_EVENTS},
        )
        yield _gauge(
            "nea_relays_pending",
            "Relayed texts whose ok some local waiter still waits for.",
            relays.pending,
        )
        yield _gauge(
            "nea_relays_in_flight",
            "Relays forwarded to local clients and not yet acked.",
            relays.in_flight,
        )
        requests = snapshot.addressed
        yield _labelled_counter(
            "nea_request_events",
            "Addressed request events on this instance.",
            "event",
            {event: getattr(requests, event) for event in REQUEST_EVENTS},
        )
        yield _gauge(
            "nea_requests_pending",
            "Requests a local asker still waits for the reply of.",
            requests.pending,
        )
        yield _gauge(
            "nea_requests_in_flight",
            "Requests pushed to local clients, not yet replied to.",
            requests.in_flight,
        )
        yield _gauge(
            "nea_registered_names", "Client names registered on this instance.", requests.names
        )
        yield _gauge("nea_services", "Services with a member on this instance.", requests.services)
        auth = snapshot.auth
        yield _labelled_counter(
            "nea_auth",
            "Client tokens presented, by outcome.",
            "outcome",
            {"ok": auth.auth_ok, "failed": auth.auth_failed},
        )
        yield _labelled_counter(
            "nea_not_allowed",
            "Requests refused not_allowed, by the permission missing.",
            "permission",
            auth.not_allowed,
        )
        yield _counter(
            "nea_chat_messages", "Chat lines said by clients of this instance.", snapshot.chat.said
        )
        yield _counter(
            "nea_broadcasts", "Operator broadcasts made on this instance.", snapshot.chat.broadcasts
        )
        yield _counter("nea_date_ticks", "Date pushes fanned out.", snapshot.dates.ticks)
        yield _counter("nea_received_bytes", "Bytes received from clients.", snapshot.bytes_in)
        yield _counter("nea_sent_bytes", "Bytes written to clients.", snapshot.bytes_out)
        cluster = snapshot.cluster
        states = GaugeMetricFamily(
            "nea_cluster_state",
            "1 for the cluster (Redis) state this instance is in.",
            labels=["state"],
        )
        for name in sorted({*CLUSTER_STATES, cluster.state}):
            states.add_metric([name], int(name == cluster.state))
        yield states
        yield _gauge(
            "nea_cluster_members",
            "Live instances in the cluster, this one included.",
            len(cluster.members),
        )
        yield from _store_metrics(snapshot.store)


STORE_STATES = ("ok", "degraded", "off")


def _store_metrics(store) -> Iterator:
    state = GaugeMetricFamily(
        "nea_store_state", "1 for the chat history store's state.", labels=["state"]
    )
    for name in STORE_STATES:
        state.add_metric([name], int(name == store.state))
    yield state
    yield _gauge("nea_store_queued", "Chat lines waiting for the history store.", store.queued)
    yield _gauge(
        "nea_store_pushing_back",
        "1 while chat clients are not read because the history store is behind.",
        int(store.pushing_back),
    )
    yield _counter("nea_store_stored", "Chat lines stored by this instance.", store.stored)
    yield _counter(
        "nea_store_unsaved", "Chat lines fanned out without being stored.", store.unsaved
    )
    yield _counter(
        "nea_store_stored_late",
        "Chat lines stored after their write was given up.",
        store.stored_late,
    )


def _gauge(name: str, documentation: str, value: float) -> GaugeMetricFamily:
    return GaugeMetricFamily(name, documentation, value=value)


def _counter(name: str, documentation: str, value: float) -> CounterMetricFamily:
    return CounterMetricFamily(name, documentation, value=value)


def _labelled_counter(
    name: str, documentation: str, label: str, values: Mapping[str, float]
) -> CounterMetricFamily:
    family = CounterMetricFamily(name, documentation, labels=[label])
    for key, value in sorted(values.items()):
        family.add_metric([key], value)
    return family


class RelayTimer:
    """`nea.core.broker.RelayTimings`: the round trip from ``message X`` to its ``ok X``.

    The hub says when each text starts and stops being waited for, so the starts
    kept here are exactly the relays still in progress: bounded by the live relays.
    """

    def __init__(self, clock: IReactorTime, histogram: Histogram) -> None:
        self.clock = clock
        self.histogram = histogram
        self._started: dict[str, float] = {}

    @property
    def in_progress(self) -> int:
        """Relays being timed now."""
        return len(self._started)

    def relay_started(self, text: str) -> None:
        self._started[text] = self.clock.seconds()

    def relay_ended(self, text: str, acked: bool) -> None:
        started = self._started.pop(text, None)
        if acked and started is not None:
            self.histogram.observe(self.clock.seconds() - started)


class Metrics:
    """One instance's metric registry: the hub collector, latency histograms, the process."""

    content_type = CONTENT_TYPE_LATEST.encode("ascii")

    def __init__(self, hub: Hub, clock: IReactorTime) -> None:
        self.registry = CollectorRegistry()
        self.registry.register(HubCollector(hub))
        ProcessCollector(registry=self.registry)
        relay_roundtrip = Histogram(
            "nea_relay_roundtrip_seconds",
            "From a relay request on this instance to its ok coming back.",
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.http_duration = Histogram(
            "nea_http_request_duration_seconds",
            "HTTP API requests, by endpoint and status.",
            ["endpoint", "status"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.http_connections = Gauge(
            "nea_http_connections",
            "Open connections to the HTTP API.",
            registry=self.registry,
        )
        self.http_refused = Counter(
            "nea_http_refused",
            "HTTP requests answered from their headers or cut short, and "
            "HTTP connections closed, by reason: unauthorized (a body without the admin token), "
            "body_too_large, request_timeout, too_many_connections.",
            ["reason"],
            registry=self.registry,
        )
        self.relay_timer = RelayTimer(clock, relay_roundtrip)
        hub.time_relays(self.relay_timer)

    def render(self) -> bytes:
        return generate_latest(self.registry)
