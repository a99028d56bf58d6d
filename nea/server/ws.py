"""``/ws``: WebSocket clients on the HTTP API's port, of the profile ``?profile=`` names.

The opening handshake arrives as an HTTP request; autobahn's `WebSocketResource`
then takes the socket over from twisted.web, and from there on it is a client
connection like any other (`nea.server.websocket`), counted by the hub, no longer
one of the API's HTTP connections, and counted against the per-address limit
(``--max-clients-per-ip``) like the client listeners' connections: one over it
is closed. The daemon hangs it on the API's resource tree
(`nea.http.site.api_site`), which knows nothing of connections.
"""

import attrs
from autobahn.twisted.resource import WebSocketResource

from nea.core.hub import Hub
from nea.server.admission import Admission
from nea.server.websocket import WebSocketFactory, WebSocketSettings


class WebSocketEndpoint(WebSocketResource):
    def render(self, request):
        channel = request.channel
        channel.site.hand_over(channel)
        if channel.transport is not None:
            # The WebSocket session watches the socket's buffer in the channel's place.
            channel.transport.unregisterProducer()
        return super().render(request)


def websocket_endpoint(
    hub: Hub, settings: WebSocketSettings, admission: Admission | None = None
) -> WebSocketEndpoint:
    """``/ws`` with ``settings`` (their profile the default, ``?profile=`` may choose
    another), its clients admitted by ``admission`` (the client listeners')."""
    settings = attrs.evolve(settings, choose_profile=True)
    return WebSocketEndpoint(WebSocketFactory(hub, settings, admission))
