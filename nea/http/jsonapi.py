"""The JSON side of the HTTP API: one error shape, bodies read with limits, methods dispatched.

Every answer the API writes, error or not, is a JSON object; an error is
``{"error": CODE, "message": TEXT}`` with a stable code, so programs match on the
code and people read the message.
"""

import json
from collections.abc import Callable
from http import HTTPStatus
from typing import Any

import attrs
from twisted.web import http
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET

JSON_TYPE = b"application/json"


@attrs.frozen
class ApiError(Exception):
    """An answer other than success: HTTP status, stable code, human message."""

    status: int
    code: str
    message: str
    headers: tuple[tuple[bytes, bytes], ...] = ()


def write_body(request, status: int, content_type: bytes, data: bytes) -> None:
    """Answer ``request`` with ``data`` and finish it (nothing is cached: figures change)."""
    request.setResponseCode(status, HTTPStatus(status).phrase.encode("ascii"))
    request.setHeader(b"Content-Type", content_type)
    request.setHeader(b"Cache-Control", b"no-store")
    request.write(data)
    request.finish()


def write_json(request, status: int, body: dict[str, Any]) -> None:
    """Answer ``request`` with ``body`` as JSON and finish it."""
    data = json.dumps(body, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
    write_body(request, status, JSON_TYPE, data)


def write_error(request, error: ApiError) -> None:
    for name, value in error.headers:
        request.setHeader(name, value)
    write_json(request, error.status, {"error": error.code, "message": error.message})


def body_too_large(max_bytes: int) -> ApiError:
    return ApiError(
        http.REQUEST_ENTITY_TOO_LARGE,
        "body_too_large",
        f"the body is larger than {max_bytes} bytes",
    )


def read_json_object(request, max_bytes: int) -> dict[str, Any]:
    """The request body as a JSON object, or an `ApiError` saying what is wrong with it."""
    body = request.content.read(max_bytes + 1)
    if len(body) > max_bytes:
        raise body_too_large(max_bytes)
    try:
        value = json.loads(body)
    except ValueError as e:  # UnicodeDecodeError is a ValueError too
        raise ApiError(http.BAD_REQUEST, "bad_json", f"the body is not valid JSON: {e}") from e
    except RecursionError:
        raise ApiError(http.BAD_REQUEST, "bad_json", "the body is nested too deep") from None
    if not isinstance(value, dict):
        raise ApiError(
            http.BAD_REQUEST,
            "bad_json",
            f"the body must be a JSON object, not {type(value).__name__}",
        )
    return value


Handler = Callable[[Any], None]


class Endpoint(Resource):
    """A leaf resource whose ``handlers`` map a method to a function answering the request.

    A handler writes its answer (`write_json`) now or later; raising `ApiError`
    answers with that error. HEAD is answered like GET, without a body (twisted.web
    drops it); any other method gets a JSON 405 naming the allowed ones.
    """

    isLeaf = True

    def __init__(self, handlers: dict[bytes, Handler]) -> None:
        super().__init__()
        self.handlers = handlers

    def render(self, request):
        method = b"GET" if request.method == b"HEAD" else request.method
        handler = self.handlers.get(method)
        try:
            if any(request.postpath):
                raise NOT_FOUND
            if handler is None:
                allowed = b", ".join(sorted(self.handlers))
                raise ApiError(
                    http.NOT_ALLOWED,
                    "method_not_allowed",
                    f"allowed here: {allowed.decode()}",
                    ((b"Allow", allowed),),
                )
            handler(request)
        except ApiError as error:
            write_error(request, error)
        return NOT_DONE_YET


NOT_FOUND = ApiError(http.NOT_FOUND, "not_found", "no such endpoint; see /docs")


class NotFound(Resource):
    """What any path the API does not know answers."""

    isLeaf = True

    def render(self, request):
        write_error(request, NOT_FOUND)
        return NOT_DONE_YET
