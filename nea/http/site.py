"""The HTTP API's resource tree and its listener, served by the daemon itself.

Pages and scripts are package data (``nea/http/static``); Swagger UI's files come
from the installed ``swagger_ui_bundle`` package, so nothing is fetched from a CDN.
"""

import re
from collections.abc import Sequence
from importlib import resources
from pathlib import Path

import attrs
from swagger_ui_bundle import swagger_ui_path
from twisted.web import http
from twisted.web.iweb import IAccessLogFormatter
from twisted.web.resource import IResource, Resource
from twisted.web.static import File
from zope.interface import provider

from nea.core.hub import Hub
from nea.http.api import Api, ApiSettings
from nea.http.jsonapi import Endpoint, NotFound, write_body
from nea.http.limits import GuardedSite, HttpLimits
from nea.http.requests import resources as addressed_resources
from nea.net.listening import DEFAULT_BACKLOG, ListeningService, server_endpoint, with_backlog

_STATIC = resources.files("nea.http") / "static"
#: Swagger UI's own files that /docs uses (the rest of the bundle is not served).
_SWAGGER_FILES = ("swagger-ui.css", "swagger-ui-bundle.js", "swagger-ui-standalone-preset.js")


def _page(name: str, content_type: bytes) -> Endpoint:
    data = (_STATIC / name).read_bytes()
    return Endpoint({b"GET": lambda request: write_body(request, http.OK, content_type, data)})


class Branch(Resource):
    """A resource with fixed children; anything else is a JSON 404.

    ``index``, if given, answers for the branch itself (``/docs`` as well as ``/docs/``).
    """

    def __init__(self, children: dict[bytes, Resource], index: Resource | None = None) -> None:
        super().__init__()
        self.index = index or NotFound()
        for name, child in children.items():
            self.putChild(name, child)
        if index is not None:
            self.putChild(b"", index)

    def getChild(self, path, request):
        return NotFound()

    def render(self, request):
        return self.index.render(request)


def build_root(api: Api) -> Resource:
    html = b"text/html; charset=utf-8"
    docs = Branch(
        {
            b"nea-initializer.js": _page("docs-initializer.js", b"text/javascript"),
            **{name.encode(): File(str(Path(swagger_ui_path) / name)) for name in _SWAGGER_FILES},
        },
        index=_page("docs.html", html),
    )
    return Branch(
        {
            b"": _page("status.html", html),
            b"static": Branch(
                {
                    b"status.js": _page("status.js", b"text/javascript"),
                    b"status.css": _page("status.css", b"text/css"),
                    b"chat.js": _page("chat.js", b"text/javascript"),
                    b"chat.css": _page("chat.css", b"text/css"),
                }
            ),
            b"docs": docs,
            b"status": Endpoint({b"GET": api.timed("status", api.status)}),
            b"healthz": Endpoint({b"GET": api.timed("healthz", api.healthz)}),
            b"metrics": Endpoint({b"GET": api.timed("metrics", api.prometheus)}),
            b"connections": Endpoint({b"GET": api.timed("connections", api.connections)}),
            b"broadcast": Endpoint({b"POST": api.timed("broadcast", api.broadcast)}),
            b"relay": Endpoint({b"POST": api.timed("relay", api.relay)}),
            **addressed_resources(api),
            b"openapi.json": Endpoint({b"GET": api.openapi}),
            b"chat": Branch(
                {
                    b"history": Endpoint({b"GET": api.timed("chat_history", api.chat_history)}),
                },
                index=_page("chat.html", html),
            ),
        }
    )


def listening(listeners: Sequence[ListeningService]) -> bool:
    """Whether every client listener is started and has its port."""
    return all(listener.listening() for listener in listeners)


def _url_host(address) -> str:
    """A host to put in a URL: "localhost" for a wildcard address, IPv6 in brackets."""
    if address.host in ("0.0.0.0", "::"):
        return "localhost"
    return f"[{address.host}]" if ":" in address.host else address.host


class HttpListener(ListeningService):
    """The HTTP API's listener (``--http``); it says where the status page and docs are."""

    def __init__(self, reactor, endpoint: str, backlog: int, site: GuardedSite) -> None:
        parsed = server_endpoint(reactor, "--http", endpoint, [], with_backlog(endpoint, backlog))
        super().__init__(reactor, "--http", endpoint, parsed, site)
        self.site = site

    def announce(self, address) -> None:
        if not hasattr(address, "port"):  # a unix socket: no URL to give
            return super().announce(address)
        base = f"http://{_url_host(address)}:{address.port}"
        self.announce_as(
            "HTTP API on {address}: status page {base}/ , API docs {base}/docs",
            address,
            base=base,
            http_port=address.port,
        )


#: A token in a URL (``/ws?token=...``, the WebSocket sign-in): its value, up to the next
#: parameter or the end of the URL.
_TOKEN_IN_URL = re.compile(r"(token=)[^&\s\"]+")


@provider(IAccessLogFormatter)
def access_log_line(timestamp, request) -> str:
    """Twisted's combined log line, with any token in the URL blanked: a token is a secret."""
    return _TOKEN_IN_URL.sub(r"\1-", http.combinedLogFormatter(timestamp, request))


class ApiSite(GuardedSite):
    """The API's site: an access log only when asked for one (``--http-access-log FILE``).

    Twisted's default logs every request to the daemon's log, where an open status
    page alone adds a line every 2 s.
    """

    def log(self, request) -> None:
        if self.logPath is not None:
            super().log(request)


@attrs.frozen
class HttpSettings:
    """What the daemon gives its HTTP API: where it listens, and what it allows."""

    #: A Twisted endpoint string (``--http``).
    endpoint: str
    backlog: int = DEFAULT_BACKLOG
    api: ApiSettings = ApiSettings()
    limits: HttpLimits = HttpLimits()
    #: The access log's file; None: requests are not logged.
    access_log: str | None = None


def api_site(
    clock,
    settings: HttpSettings,
    hub: Hub,
    listeners: Sequence[ListeningService],
    more: dict[bytes, IResource] | None = None,
) -> ApiSite:
    """The HTTP API for ``settings``, timed by ``clock``.

    ``more``: resources the daemon serves beside the API's own (``/ws``, its
    WebSocket clients), built by the daemon, which knows its connections.
    """
    api = Api(hub, clock, settings.api, lambda: listening(listeners))
    root = build_root(api)
    for name, resource in (more or {}).items():
        root.putChild(name, resource)
    site = ApiSite(
        root,
        api.auth,
        settings.limits,
        api.metrics,
        logPath=settings.access_log,
        logFormatter=access_log_line,
        reactor=clock,
    )
    site.displayTracebacks = False
    return site


def http_listener(
    reactor,
    settings: HttpSettings,
    hub: Hub,
    listeners: Sequence[ListeningService],
    more: dict[bytes, IResource] | None = None,
) -> HttpListener:
    """The HTTP API's listener for ``settings``, with ``more`` as in `api_site`.

    Like the client listeners it fails loudly when it cannot listen.
    """
    site = api_site(reactor, settings, hub, listeners, more)
    return HttpListener(reactor, settings.endpoint, settings.backlog, site)
