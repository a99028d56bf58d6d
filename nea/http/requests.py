"""Addressed requests over HTTP: ask a registered client or a service, and list them.

- ``POST /clients/{name}/requests`` and ``POST /services/{service}/requests`` take
  ``{"body": ANY, "timeout": SECONDS}`` and answer, when the client replies,
  ``{"reply": ANY, "instance": ..., "seconds": ...}``;
- ``GET /clients``, ``GET /clients/{name}`` and ``GET /services``: who is
  addressable in the cluster.

Every one of them needs the admin token: they reach, or expose, the clients; a
client token with the ``ask`` permission for the name or ``@SERVICE`` may ask.
The hub does the asking (`nea.core.hub.Hub.ask`), with the same semantics,
limits and deadline as a client's ``ask``.
"""

import math
from typing import Any

from twisted.web import http
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET

from nea.core.bus import Holding
from nea.http.jsonapi import ApiError, Endpoint, NotFound, read_json_object, write_error, write_json
from nea.http.waiter import HTTPWaiter
from nea.wire import codec, errors, frames

#: The HTTP status each way a request can fail.
STATUS = {
    errors.NO_SUCH_CLIENT.code: http.NOT_FOUND,
    errors.CLIENT_GONE.code: http.SERVICE_UNAVAILABLE,
    errors.NO_MEMBER.code: http.SERVICE_UNAVAILABLE,
    errors.TOO_MANY_PENDING.code: http.SERVICE_UNAVAILABLE,
    errors.REQUEST_TIMEOUT.code: http.GATEWAY_TIMEOUT,
}


def _bad(code: str, message: str) -> ApiError:
    return ApiError(http.BAD_REQUEST, code, message)


def request_body(body: dict[str, Any], default_timeout: float) -> tuple[Any, float]:
    """``(body, timeout)`` from ``{"body": ANY, "timeout": SECONDS}``, or a 400 `ApiError`."""
    unknown = sorted(set(body) - {"body", "timeout"})
    if unknown:
        raise _bad("bad_body", f"unknown field(s): {', '.join(unknown)}")
    if "body" not in body:
        raise _bad("bad_body", "'body' is required (any JSON value)")
    problem = codec.body_problem(body["body"])
    if problem is not None:
        raise _bad("bad_body", problem)
    timeout = body.get("timeout", default_timeout)
    if (
        not isinstance(timeout, (int, float))
        or isinstance(timeout, bool)
        or not math.isfinite(timeout)
        or not 0 < timeout <= codec.MAX_REQUEST_TIMEOUT
    ):
        raise _bad(
            "bad_timeout",
            f"'timeout' must be a number of seconds, more than 0 and at "
            f"most {codec.MAX_REQUEST_TIMEOUT:g}",
        )
    return body["body"], float(timeout)


def _checked_name(segment: bytes) -> str:
    name = segment.decode("utf-8", "replace")
    if not codec.NAME_PATTERN.match(name):
        raise _bad(errors.BAD_NAME.code, f"not a valid name: {name!r}")
    return name


class Requests:
    """The handlers, over the API's hub, clock, token and settings (`nea.http.api.Api`)."""

    def __init__(self, api) -> None:
        self.api = api
        self.hub = api.hub
        self.clock = api.clock
        # A body goes to a client in one line: it must fit in the clients' line limit.
        self.max_body = api.settings.max_line

    def ask(self, request, name: str | None, service: str | None) -> None:
        self.api.auth.check(request, "ask", name if name is not None else f"@{service}")
        body, timeout = request_body(
            read_json_object(request, self.max_body), self.api.settings.relay_timeout
        )
        waiter = HTTPWaiter()
        started = self.clock.seconds()

        def settled(push: frames.Push) -> None:
            if isinstance(push, frames.ReplyPush):
                write_json(
                    request,
                    http.OK,
                    {
                        "reply": push.body,
                        "instance": push.instance,
                        "seconds": round(self.clock.seconds() - started, 6),
                    },
                )
            else:
                assert isinstance(push, frames.ErrorReply)  # a ReplyPush, or the reason for none
                status = STATUS.get(push.code, http.SERVICE_UNAVAILABLE)
                write_error(request, ApiError(status, push.code, push.message))

        waiter.outcome.addCallback(settled)
        # The HTTP client left: withdraw the ask; nobody is there to answer.
        request.notifyFinish().addErrback(lambda _: self.hub.forget(waiter))
        self.hub.ask(waiter, "http", name, service, body, timeout)

    def clients(self, request) -> None:
        self.api.auth.check(request)
        limit = self.api.limit(request)
        found = self.hub.clients()

        def listed(names: dict[str, Holding]) -> None:
            clients = [
                {
                    "name": name,
                    "instance": held.instance,
                    "identity": held.identity,
                    **(self.hub.holder(name) or {}),
                }
                for name, held in list(names.items())[:limit]
            ]
            write_json(request, http.OK, {"count": len(names), "clients": clients})

        found.addCallback(listed)

    def client(self, request, name: str) -> None:
        self.api.auth.check(request)
        found = self.hub.find_client(name)

        def answered(instance: str | None) -> None:
            if instance is None:
                write_error(
                    request,
                    ApiError(
                        http.NOT_FOUND,
                        errors.NO_SUCH_CLIENT.code,
                        f"nobody is registered as {name!r}",
                    ),
                )
                return
            here = self.hub.holder(name)
            if here is not None:
                write_json(request, http.OK, {"name": name, "instance": instance, **here})
                return
            self.hub.name_holder(name).addCallback(
                lambda held: write_json(
                    request, http.OK, {"name": name, "instance": instance, "identity": held[1]}
                )
            )

        found.addCallback(answered)

    def services(self, request) -> None:
        self.api.auth.check(request)
        members: dict[str, dict[str, int]] = {}
        for member in self.hub.snapshot().cluster.members:
            for service, count in member.services.items():
                if count:
                    members.setdefault(service, {})[member.instance] = count
        write_json(
            request,
            http.OK,
            {
                "services": [
                    {"service": service, "members": sum(by.values()), "instances": by}
                    for service, by in sorted(members.items())
                ]
            },
        )


class _Addressee(Resource):
    """``/clients/{name}`` or ``/services/{service}``, and its ``requests`` below it."""

    def __init__(self, index: Endpoint | None, requests: Endpoint) -> None:
        super().__init__()
        self.index = index
        self.requests = requests

    def getChild(self, path, request):
        if path == b"requests" and not any(request.postpath):
            return self.requests
        if path == b"" and self.index is not None and not any(request.postpath):
            return self.index
        return NotFound()

    def render(self, request):
        if self.index is None:
            return NotFound().render(request)
        return self.index.render(request)


class _Collection(Resource):
    """``/clients`` or ``/services``: its own listing, and one child per name."""

    def __init__(self, listing: Endpoint, child) -> None:
        super().__init__()
        self.listing = listing
        self.child = child

    def getChild(self, path, request):
        if path == b"":
            return self.listing
        try:
            name = _checked_name(path)
        except ApiError as error:
            return _Refusal(error)
        return self.child(name)

    def render(self, request):
        return self.listing.render(request)


class _Refusal(Resource):
    isLeaf = True

    def __init__(self, error: ApiError) -> None:
        super().__init__()
        self.error = error

    def render(self, request):
        write_error(request, self.error)
        return NOT_DONE_YET


def resources(api) -> dict[bytes, Resource]:
    """The children of the API's root for addressed requests."""
    handlers = Requests(api)
    timed = api.timed

    def client(name: str) -> _Addressee:
        return _Addressee(
            Endpoint({b"GET": timed("client", lambda r: handlers.client(r, name))}),
            Endpoint({b"POST": timed("client_request", lambda r: handlers.ask(r, name, None))}),
        )

    def service(name: str) -> _Addressee:
        return _Addressee(
            None,
            Endpoint({b"POST": timed("service_request", lambda r: handlers.ask(r, None, name))}),
        )

    return {
        b"clients": _Collection(Endpoint({b"GET": timed("clients", handlers.clients)}), client),
        b"services": _Collection(Endpoint({b"GET": timed("services", handlers.services)}), service),
    }
