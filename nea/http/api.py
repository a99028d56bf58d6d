"""The endpoints: each a handler that reads the hub (or drives it) and answers in JSON."""

import datetime
import json
from collections.abc import Callable

import attrs
from twisted.internet.interfaces import IReactorTime
from twisted.python.failure import Failure
from twisted.web import http

from nea.core.hub import Hub
from nea.core.snapshot import status_json
from nea.http import waiter
from nea.http.auth import BearerToken
from nea.http.jsonapi import (
    JSON_TYPE,
    ApiError,
    read_json_object,
    write_body,
    write_error,
    write_json,
)
from nea.http.metrics import Metrics
from nea.http.openapi import openapi
from nea.http.text import max_text_chars, text_field
from nea.wire.codec import DEFAULT_MAX_LINE, MAX_REPLAY

#: The highest id a store gives.
MAX_ID = 2**63 - 1

DEFAULT_RELAY_TIMEOUT = 10.0
DEFAULT_CONNECTIONS_LIMIT = 1000
MAX_CONNECTIONS_LIMIT = 100000


@attrs.frozen
class ApiSettings:
    admin_token: str | None = None
    relay_timeout: float = DEFAULT_RELAY_TIMEOUT
    #: The clients' line limit: texts sent to them must fit in one line.
    max_line: int = DEFAULT_MAX_LINE
    #: Client tokens are taken (``--jwt-key``) as well as the admin token.
    tokens: bool = False


class Api:
    """One instance's HTTP API over its hub.

    ``listening`` tells whether every client listener is up (``/healthz``).
    """

    def __init__(
        self, hub: Hub, clock: IReactorTime, settings: ApiSettings, listening: Callable[[], bool]
    ) -> None:
        self.hub = hub
        self.clock = clock
        self.settings = settings
        self.listening = listening
        self.auth = BearerToken(settings.admin_token, hub if settings.tokens else None)
        self.metrics = Metrics(hub, clock)
        self.max_chars = max_text_chars(settings.max_line)
        # A JSON string may spell a character in up to 12 bytes ("\ud83d\ude00").
        self.max_body = 12 * self.max_chars + 1024
        self.spec = json.dumps(openapi(self.max_chars), indent=1).encode("utf-8")

    def timed(self, endpoint: str, handler: Callable) -> Callable:
        """``handler``, with the time to the end of its answer observed per endpoint and status."""
        histogram = self.metrics.http_duration

        def handle(request) -> None:
            started = self.clock.seconds()
            request.notifyFinish().addBoth(
                lambda _: histogram.labels(endpoint, str(request.code)).observe(
                    self.clock.seconds() - started
                )
            )
            handler(request)

        return handle

    # ---- reading ----

    def status(self, request) -> None:
        write_json(request, http.OK, status_json(self.hub.snapshot()))

    def healthz(self, request) -> None:
        snapshot = self.hub.snapshot()
        if snapshot.draining:
            state = "draining"
        elif not self.listening():
            state = "not_listening"
        else:
            state = "serving"
        write_json(
            request,
            http.OK if state == "serving" else http.SERVICE_UNAVAILABLE,
            # A degraded history store is told, not failed: live chat goes on without it.
            {
                "status": state,
                "instance": snapshot.instance,
                "cluster": snapshot.cluster.state,
                "store": snapshot.store.state,
            },
        )

    def prometheus(self, request) -> None:
        write_body(request, http.OK, self.metrics.content_type, self.metrics.render())

    def openapi(self, request) -> None:
        write_body(request, http.OK, JSON_TYPE, self.spec)

    def connections(self, request) -> None:
        self.auth.check(request)  # it shows who is connected, from where
        limit = self.limit(request)
        listed = [
            {**attrs.asdict(connection), "since": _iso(connection.since)}
            for connection in self.hub.connections(limit)
        ]
        write_json(
            request,
            http.OK,
            {
                "instance": self.hub.instance_id,
                "count": self.hub.snapshot().connections,
                "connections": listed,
            },
        )

    @staticmethod
    def limit(request) -> int:
        """The ``limit`` query argument of a listing, or a 400 `ApiError`."""
        return _limit(request.args.get(b"limit", []))

    def chat_history(self, request) -> None:
        """Stored chat lines after ``since``, oldest first (admin token: it is chat content)."""
        self.auth.check(request)
        since = _integer(request.args.get(b"since", []), "since", 0, MAX_ID, 0)
        limit = _integer(request.args.get(b"limit", []), "limit", 1, MAX_REPLAY, 100)
        gone: list[Failure] = []
        request.notifyFinish().addErrback(gone.append)

        def answer(entries) -> None:
            if not gone:
                more = len(entries) > limit
                entries = entries[:limit]
                write_json(
                    request,
                    http.OK,
                    {
                        "lines": [attrs.asdict(entry) for entry in entries],
                        "last_id": entries[-1].id if entries else since,
                        "more": more,
                    },
                )

        def failed(failure) -> None:
            if not gone:
                write_error(
                    request,
                    ApiError(
                        http.SERVICE_UNAVAILABLE,
                        "history_unavailable",
                        " ".join(str(failure.value).split()),
                    ),
                )

        self.hub.history_since(since, limit + 1).addCallbacks(answer, failed)

    # ---- driving (admin token) ----

    def _text(self, request, permission: str) -> str:
        self.auth.check(request, permission)
        return text_field(read_json_object(request, self.max_body), self.max_chars)

    def broadcast(self, request) -> None:
        broadcasting = self.hub.broadcast(self._text(request, "broadcast"))
        # Stored first: the HTTP client may be gone by the time it is fanned out.
        gone: list[Failure] = []
        request.notifyFinish().addErrback(gone.append)

        def answer(reached: int) -> None:
            if not gone:
                write_json(request, http.OK, {"instance": self.hub.instance_id, "reached": reached})

        broadcasting.addCallback(answer)

    def relay(self, request) -> None:
        outcome = waiter.relay(
            self.hub, self.clock, self._text(request, "relay"), self.settings.relay_timeout
        )

        def failed(failure) -> None:
            failure.trap(ApiError)
            write_error(request, failure.value)

        outcome.addCallbacks(lambda body: write_json(request, http.OK, body), failed)
        # The HTTP client left: withdraw the waiter; nobody is there to answer.
        request.notifyFinish().addErrback(lambda _: outcome.cancel())
        outcome.addErrback(lambda _: None)  # that cancellation is the only other failure


def _limit(values: list[bytes]) -> int:
    if not values:
        return DEFAULT_CONNECTIONS_LIMIT
    try:
        limit = int(values[-1])
    except ValueError:
        limit = 0
    if not 1 <= limit <= MAX_CONNECTIONS_LIMIT:
        raise ApiError(
            http.BAD_REQUEST,
            "bad_limit",
            f"limit must be an integer from 1 to {MAX_CONNECTIONS_LIMIT}",
        )
    return limit


def _integer(values: list[bytes], name: str, low: int, high: int, default: int) -> int:
    if not values:
        return default
    text = values[-1]
    if not (text.isdigit() and len(text) < 20 and low <= int(text) <= high):
        raise ApiError(
            http.BAD_REQUEST, f"bad_{name}", f"{name} must be an integer from {low} to {high}"
        )
    return int(text)


def _iso(seconds: float) -> str:
    return datetime.datetime.fromtimestamp(seconds, datetime.UTC).isoformat()
