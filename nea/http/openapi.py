"""``GET /openapi.json``: the OpenAPI 3 description of the HTTP API.

Built as data at start-up, with this server's own text limit, so that what the
document promises is what the server checks (a property test holds it to that).
"""

from typing import Any

import attrs

import nea
from nea.core.snapshot import ChatFigures, RelayFigures, RequestFigures


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _json(schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _error(description: str) -> dict[str, Any]:
    return _json(_ref("Error"), description)


_COUNT = {"type": "integer", "minimum": 0}
_COUNTS = {"type": "object", "additionalProperties": _COUNT}


def _figures(kind: type, description: str | None = None) -> dict[str, Any]:
    """An object of counts: every field of ``kind``, a snapshot's figures class."""
    names = [field.name for field in attrs.fields(kind)]
    schema: dict[str, Any] = {"type": "object"}
    if description is not None:
        schema["description"] = description
    return {**schema, "required": names, "properties": {name: _COUNT for name in names}}


_NAME = {"type": "string", "pattern": "^[A-Za-z0-9_.:-][A-Za-z0-9_.:@-]{0,63}$"}

_SCHEMAS: dict[str, Any] = {
    "Error": {
        "type": "object",
        "required": ["error", "message"],
        "properties": {
            "error": {"type": "string", "description": "A stable code to match on."},
            "message": {"type": "string", "description": "What went wrong, for people."},
        },
    },
    "Member": {
        "type": "object",
        "description": "One cluster member, as its heartbeat announces it (this instance: now).",
        "required": [
            "instance",
            "version",
            "state",
            "connections",
            "relay_weight",
            "pending",
            "zero_state",
        ],
        "properties": {
            "instance": {"type": "string"},
            "version": {"type": "string"},
            "state": {
                "type": "string",
                "enum": ["serving", "draining", "incompatible"],
                "description": "incompatible: it announces a heartbeat record this "
                "instance cannot read; it is sent no relays.",
            },
            "connections": _COUNT,
            "relay_weight": {**_COUNT, "description": "Relay-capable connections."},
            "pending": _COUNT,
            "zero_state": {"type": "boolean"},
            "services": {**_COUNTS, "description": "Each service's members on it."},
        },
    },
    "Status": {
        "type": "object",
        "description": "This instance's figures and its view of the cluster "
        '(the same object {"cmd":"status"} answers).',
        "required": [
            "instance",
            "version",
            "uptime",
            "state",
            "connections",
            "relay_capable",
            "profiles",
            "identified",
            "max_clients",
            "refused_full",
            "handshakes",
            "throttled",
            "relays",
            "requests",
            "chat",
            "dates",
            "errors",
            "zero_state",
            "cluster",
            "store",
            "auth",
        ],
        "properties": {
            "instance": {"type": "string"},
            "version": {"type": "string"},
            "uptime": {"type": "number", "minimum": 0},
            "state": {"type": "string", "enum": ["serving", "draining"]},
            "connections": _COUNT,
            "relay_capable": _COUNT,
            "profiles": _COUNTS,
            "identified": _COUNT,
            "max_clients": _COUNT,
            "refused_full": _COUNT,
            "handshakes": {
                "type": ["object", "null"],
                "description": "TLS listeners: accepted connections whose handshake has not "
                "completed (unfinished), handshakes under way (in_progress) and "
                "waiting for their turn (waiting), and how handshakes ended.",
                "properties": {
                    name: _COUNT
                    for name in (
                        "unfinished",
                        "in_progress",
                        "waiting",
                        "completed",
                        "timed_out",
                        "failed",
                    )
                },
            },
            "throttled": _COUNT,
            "relays": _figures(RelayFigures),
            "requests": _figures(
                RequestFigures,
                "Addressed requests: asks waited for here (pending), requests "
                "pushed to clients here (in_flight), names and services here, "
                "and counters.",
            ),
            "chat": _figures(ChatFigures),
            "store": _ref("Store"),
            "dates": {
                "type": "object",
                "required": ["ticks", "running"],
                "properties": {"ticks": _COUNT, "running": {"type": "boolean"}},
            },
            "errors": _COUNTS,
            "auth": {
                "type": "object",
                "description": "Client tokens accepted and refused (over every transport and "
                "HTTP), and requests refused not_allowed, by permission.",
                "required": ["auth_ok", "auth_failed", "not_allowed"],
                "properties": {"auth_ok": _COUNT, "auth_failed": _COUNT, "not_allowed": _COUNTS},
            },
            "zero_state": {
                "type": "boolean",
                "description": "No connection (but the asking one, on the wire) "
                "and no relay waited for or held.",
            },
            "cluster": {
                "type": "object",
                "required": ["state", "members", "connections", "pending", "zero_state"],
                "properties": {
                    "state": {"type": "string", "enum": ["standalone", "connected", "degraded"]},
                    "members": {"type": "array", "items": _ref("Member")},
                    "connections": _COUNT,
                    "pending": _COUNT,
                    "zero_state": {"type": "boolean"},
                },
            },
        },
    },
    "Health": {
        "type": "object",
        "required": ["status", "instance"],
        "properties": {
            "status": {"type": "string", "enum": ["serving", "draining", "not_listening"]},
            "instance": {"type": "string"},
            "cluster": {"type": "string"},
            "store": {
                "type": "string",
                "enum": ["ok", "degraded", "off"],
                "description": "The chat history store; degraded is still 200: live "
                "chat goes on unsaved.",
            },
        },
    },
    # ---- chat history ----
    "Store": {
        "type": "object",
        "description": "The chat history store: lines queued for it, stored, and fanned out "
        "unsaved (it failed).",
        "required": [
            "store",
            "state",
            "queued",
            "stored",
            "unsaved",
            "stored_late",
            "error",
            "pushing_back",
        ],
        "properties": {
            "store": {"type": "string", "description": "--store, without its password."},
            "state": {"type": "string", "enum": ["ok", "degraded", "off"]},
            "queued": _COUNT,
            "stored": _COUNT,
            "unsaved": _COUNT,
            "stored_late": _COUNT,
            "error": {"type": ["string", "null"], "description": "Why it is degraded."},
            "pushing_back": {
                "type": "boolean",
                "description": "The store is behind: chat "
                "clients are not read until it catches up.",
            },
        },
    },
    "HistoryLine": {
        "type": "object",
        "required": ["id", "kind", "name", "text", "time"],
        "properties": {
            "id": {"type": "integer", "minimum": 1},
            "kind": {"type": "string", "enum": ["chat", "broadcast"]},
            "name": {"type": ["string", "null"], "description": "Null for a broadcast."},
            "text": {"type": "string"},
            "time": {"type": "string", "description": "ISO 8601 UTC, milliseconds."},
        },
    },
    "History": {
        "type": "object",
        "required": ["lines", "last_id", "more"],
        "properties": {
            "lines": {"type": "array", "items": _ref("HistoryLine")},
            "last_id": {
                "type": "integer",
                "minimum": 0,
                "description": "The last id listed, or since when none is.",
            },
            "more": {"type": "boolean", "description": "Lines after last_id remain: ask again."},
        },
    },
    "Connection": {
        "type": "object",
        "required": ["id", "name", "peer", "profile", "since", "encoding", "bytes_in", "bytes_out"],
        "properties": {
            "id": {"type": "string"},
            "name": {"type": "string"},
            "peer": {"type": "string", "description": "The client's address, host:port."},
            "identity": {
                "type": ["string", "null"],
                "description": "The verified client certificate's subject CN (else "
                "its first DNS or URI name), or the sub of the token "
                "it presented; null for an anonymous client.",
            },
            "auth": {
                "type": "string",
                "enum": ["certificate", "token", "anonymous"],
                "description": "How its identity was established.",
            },
            "profile": {"type": "string", "enum": ["nea", "relay", "chat"]},
            "since": {"type": "string", "format": "date-time"},
            "encoding": {"type": "string", "enum": ["text", "json"]},
            "bytes_in": _COUNT,
            "bytes_out": _COUNT,
        },
    },
    "Connections": {
        "type": "object",
        "required": ["instance", "count", "connections"],
        "properties": {
            "instance": {"type": "string"},
            "count": {
                **_COUNT,
                "description": "All current connections (the list may be cut at limit).",
            },
            "connections": {"type": "array", "items": _ref("Connection")},
        },
    },
    "Broadcasted": {
        "type": "object",
        "required": ["instance", "reached"],
        "properties": {
            "instance": {"type": "string"},
            "reached": {
                **_COUNT,
                "description": "Clients of this instance that were sent it "
                "(other instances deliver to their own).",
            },
        },
    },
    "Replied": {
        "type": "object",
        "required": ["reply", "instance", "seconds"],
        "properties": {
            "reply": {
                "description": "The client's reply: any JSON value (a string from a text client)."
            },
            "instance": {"type": "string", "description": "Where the client that replied is."},
            "seconds": {"type": "number", "minimum": 0, "description": "Request to reply."},
        },
    },
    "Client": {
        "type": "object",
        "required": ["name", "instance"],
        "description": "identity is given for every name; auth for names held on the "
        "instance asked.",
        "properties": {
            "name": _NAME,
            "instance": {"type": "string"},
            "identity": {
                "type": ["string", "null"],
                "description": "Who holds the name (certificate or token identity); "
                "null: an anonymous client.",
            },
            "auth": {"type": "string", "enum": ["certificate", "token", "anonymous"]},
        },
    },
    "Clients": {
        "type": "object",
        "required": ["count", "clients"],
        "properties": {
            "count": {
                **_COUNT,
                "description": "Every registered name (the list may be cut at limit).",
            },
            "clients": {"type": "array", "items": _ref("Client")},
        },
    },
    "Services": {
        "type": "object",
        "required": ["services"],
        "properties": {
            "services": {
                "type": "array",
                "items": {
                    "type": "object",
                    "required": ["service", "members", "instances"],
                    "properties": {
                        "service": _NAME,
                        "members": _COUNT,
                        "instances": {
                            **_COUNTS,
                            "description": "Members per instance, as last announced.",
                        },
                    },
                },
            }
        },
    },
    "Relayed": {
        "type": "object",
        "required": ["text", "acked", "seconds"],
        "properties": {
            "text": {"type": "string"},
            "acked": {"type": "boolean", "enum": [True]},
            "seconds": {"type": "number", "minimum": 0, "description": "Request to ok."},
        },
    },
}


def _text_body(max_chars: int, what: str) -> dict[str, Any]:
    return {
        "required": True,
        "content": {
            "application/json": {
                "schema": {
                    "type": "object",
                    "required": ["text"],
                    "additionalProperties": False,
                    "properties": {
                        "text": {
                            "type": "string",
                            "minLength": 1,
                            "maxLength": max_chars,
                            "pattern": "^[^\\r\\n]+$",
                            "description": what,
                        }
                    },
                },
                "example": {"text": "hello everyone"},
            }
        },
    }


_UNAUTHORIZED = _error("No or wrong 'Authorization: Bearer <admin token>'.")
#: Endpoints that also take a client token (a JWT, --jwt-key) with a permission.
_TOKEN_REFUSED = _error(
    "No or wrong 'Authorization: Bearer': the admin token, or a client token (a JWT); a "
    "refused client token is answered its own code: bad_token, token_too_large, "
    "bad_signature, bad_algorithm, expired_token, token_not_yet_valid, wrong_audience, "
    "auth_unavailable."
)
_SECURITY: list[dict[str, list[str]]] = [{"adminToken": []}, {"clientToken": []}]


def _not_allowed(permission: str) -> dict[str, Any]:
    return _error(
        f"A client token without the {permission!r} permission (not_allowed; the message names it)."
    )


def _mutating(
    summary: str, description: str, body: dict[str, Any], responses: dict[str, Any], permission: str
) -> dict[str, Any]:
    return {
        "post": {
            "summary": summary,
            "description": f"{description} The admin token, or a client token with the "
            f"{permission!r} permission.",
            "security": _SECURITY,
            "requestBody": body,
            "responses": {
                **responses,
                "400": _error('The body is not JSON, or not {"text": one non-empty line}.'),
                "401": _TOKEN_REFUSED,
                "403": _not_allowed(permission),
                "413": _error(
                    "The body is too large (larger than the text limit allows, or "
                    "than --http-max-body; the connection is then closed)."
                ),
            },
        }
    }


_REQUEST_BODY = {
    "required": True,
    "content": {
        "application/json": {
            "schema": {
                "type": "object",
                "required": ["body"],
                "additionalProperties": False,
                "properties": {
                    "body": {
                        "description": "Any JSON value; a text client sees a string as it "
                        "is and anything else as one line of JSON."
                    },
                    "timeout": {
                        "type": "number",
                        "minimum": 0,
                        "exclusiveMinimum": True,
                        "maximum": 300,
                        "description": "Seconds to wait for the reply (default: --relay-timeout).",
                    },
                },
            },
            "example": {"body": {"cmd": "status"}, "timeout": 5},
        }
    },
}


def _ask(summary: str, description: str, parameter: str, failures: dict[str, str]) -> dict:
    return {
        "post": {
            "summary": summary,
            "description": f"{description} The admin token, or a client token whose 'ask' "
            "permission matches the name (a service as @SERVICE).",
            "security": _SECURITY,
            "parameters": [{"name": parameter, "in": "path", "required": True, "schema": _NAME}],
            "requestBody": _REQUEST_BODY,
            "responses": {
                "200": _json(_ref("Replied"), "The reply came back."),
                **{code: _error(text) for code, text in failures.items()},
                "400": _error(
                    "bad_json: the body is not a JSON object; bad_body: it is not "
                    '{"body": ANY, "timeout": SECONDS}, or its body cannot be sent; '
                    "bad_timeout: the timeout is not a number of seconds above 0 and at "
                    "most 300; bad_name: the name is not valid."
                ),
                "401": _TOKEN_REFUSED,
                "403": _not_allowed("ask"),
                "413": _error("The body is larger than a client's line."),
                "504": _error("No reply within the timeout (request_timeout)."),
            },
        }
    }


def _listing(
    summary: str, schema: str, parameters: list | None = None, more: dict | None = None
) -> dict:
    return {
        "get": {
            "summary": summary,
            "security": [{"adminToken": []}],
            "parameters": parameters or [],
            "responses": {
                "200": _json(_ref(schema), summary),
                "400": _error("Bad parameter."),
                "401": _UNAUTHORIZED,
                **(more or {}),
            },
        }
    }


def _page(summary: str, description: str) -> dict[str, Any]:
    html = {"text/html": {"schema": {"type": "string"}}}
    return {
        "get": {
            "summary": summary,
            "description": description,
            "responses": {"200": {"description": "An HTML page.", "content": html}},
        }
    }


def openapi(max_chars: int) -> dict[str, Any]:
    """The whole document, for a server that accepts texts of at most ``max_chars``."""
    return {
        "openapi": "3.0.3",
        "info": {
            "title": "nea HTTP API",
            "version": nea.__version__,
            "description": "See and drive a running nea instance (and its cluster).",
        },
        "paths": {
            "/": _page(
                "Status page",
                "The status of this instance and its cluster, for people; "
                "it refreshes itself from /status.",
            ),
            "/chat": _page(
                "Chat page",
                "The chat room in a browser: join with a name, see the "
                "history and new lines; it reconnects by itself and "
                "recovers the lines it missed.",
            ),
            "/status": {
                "get": {
                    "summary": "Status as JSON",
                    "responses": {"200": _json(_ref("Status"), "This instance and its cluster.")},
                }
            },
            "/healthz": {
                "get": {
                    "summary": "Health check",
                    "description": "200 while the instance serves; 503 while it drains or when "
                    "a client listener is not listening.",
                    "responses": {
                        "200": _json(_ref("Health"), "Serving."),
                        "503": _json(_ref("Health"), "Not serving."),
                    },
                }
            },
            "/metrics": {
                "get": {
                    "summary": "Prometheus metrics",
                    "responses": {
                        "200": {
                            "description": "Prometheus text format 0.0.4.",
                            "content": {"text/plain": {"schema": {"type": "string"}}},
                        }
                    },
                }
            },
            "/connections": {
                "get": {
                    "summary": "Current connections of this instance",
                    "description": "Who is connected, from where: it needs the admin token.",
                    "security": [{"adminToken": []}],
                    "parameters": [
                        {
                            "name": "limit",
                            "in": "query",
                            "required": False,
                            "description": "List at most this many connections.",
                            "schema": {
                                "type": "integer",
                                "minimum": 1,
                                "maximum": 100000,
                                "default": 1000,
                            },
                        }
                    ],
                    "responses": {
                        "200": _json(_ref("Connections"), "The connections."),
                        "400": _error("limit is not an integer from 1 to 100000."),
                        "401": _UNAUTHORIZED,
                    },
                }
            },
            "/chat/history": {
                "get": {
                    "summary": "Stored chat lines after an id",
                    "description": "Chat lines and operator broadcasts with an id above since, "
                    "oldest first. Chat content: it needs the admin token.",
                    "security": [{"adminToken": []}],
                    "parameters": [
                        {
                            "name": "since",
                            "in": "query",
                            "required": False,
                            "description": "List lines after this id (0: from the first).",
                            "schema": {"type": "integer", "minimum": 0, "default": 0},
                        },
                        {
                            "name": "limit",
                            "in": "query",
                            "required": False,
                            "description": "List at most this many lines.",
                            "schema": {
                                "type": "integer",
                                "minimum": 1,
                                "maximum": 1000,
                                "default": 100,
                            },
                        },
                    ],
                    "responses": {
                        "200": _json(_ref("History"), "The lines."),
                        "400": _error("since or limit out of range."),
                        "401": _UNAUTHORIZED,
                        "503": _error(
                            "History is off (--store none) or its store "
                            "is degraded (history_unavailable)."
                        ),
                    },
                }
            },
            "/broadcast": _mutating(
                "Operator broadcast",
                "Sends the text to every chat-capable client of the cluster.",
                _text_body(max_chars, "One line, sent to every client as 'broadcast TEXT'."),
                {"200": _json(_ref("Broadcasted"), "Sent.")},
                "broadcast",
            ),
            "/relay": _mutating(
                "Relay a message and wait for its ok",
                "Sends 'message TEXT' to a random relay-capable client of the cluster and "
                "answers when that client sends 'ok TEXT' back.",
                _text_body(max_chars, "The text to relay."),
                {
                    "200": _json(_ref("Relayed"), "The ok came back."),
                    "503": _error("No client can take a relay (error no_recipient)."),
                    "504": _error("No ok came back within the relay timeout."),
                },
                "relay",
            ),
            "/clients": _listing(
                "Registered clients of the cluster",
                "Clients",
                [
                    {
                        "name": "limit",
                        "in": "query",
                        "required": False,
                        "description": "List at most this many names.",
                        "schema": {
                            "type": "integer",
                            "minimum": 1,
                            "maximum": 100000,
                            "default": 1000,
                        },
                    }
                ],
            ),
            "/clients/{name}": _listing(
                "Where a name is registered",
                "Client",
                [{"name": "name", "in": "path", "required": True, "schema": _NAME}],
                {"404": _error("Nobody is registered under that name (no_such_client).")},
            ),
            "/services": _listing("Services and their members, cluster-wide", "Services"),
            "/clients/{name}/requests": _ask(
                "Send a request to a registered client and wait for its reply",
                "Pushes 'request ID BODY' to the client registered as NAME, wherever it is "
                "connected, at most once.",
                "name",
                {
                    "404": "Nobody is registered under that name (no_such_client).",
                    "503": "The client left before replying (client_gone), or already holds "
                    "as many requests as it may (too_many_pending).",
                },
            ),
            "/services/{service}/requests": _ask(
                "Send a request to a member of a service and wait for its reply",
                "Pushes 'request ID BODY' to one member of SERVICE drawn uniformly among the "
                "cluster's members; if it leaves before replying, another member is drawn.",
                "service",
                {
                    "503": "The service has no member (no_member), or it is overloaded "
                    "(too_many_pending)."
                },
            ),
            "/openapi.json": {
                "get": {
                    "summary": "This document",
                    "responses": {
                        "200": {
                            "description": "OpenAPI 3.",
                            "content": {"application/json": {"schema": {"type": "object"}}},
                        }
                    },
                }
            },
            "/docs": _page("API documentation", "Swagger UI for this document, served offline."),
        },
        "components": {
            "schemas": _SCHEMAS,
            "securitySchemes": {
                "adminToken": {
                    "type": "http",
                    "scheme": "bearer",
                    "description": "--admin-token or --admin-token-file",
                },
                "clientToken": {
                    "type": "http",
                    "scheme": "bearer",
                    "bearerFormat": "JWT",
                    "description": "A client's JSON Web Token, verified against "
                    "--jwt-key; its 'nea' claim holds its "
                    "permissions (docs/security.rst).",
                },
            },
        },
    }
