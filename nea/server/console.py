"""``--console``: every line typed on the daemon's stdin is an operator broadcast."""

from twisted.application.service import Service
from twisted.internet import stdio
from twisted.protocols.basic import LineReceiver

from nea.core.hub import Hub


class ConsoleProtocol(LineReceiver):
    delimiter = b"\n"

    def __init__(self, hub: Hub) -> None:
        self.hub = hub

    def lineReceived(self, line: bytes) -> None:
        text = line.decode("utf-8", errors="replace").rstrip("\r")
        if text:
            self.hub.broadcast(text).addCallback(
                lambda reached: self.sendLine(f"[broadcast to {reached} local clients]".encode())
            )


class ConsoleService(Service):
    def __init__(self, hub: Hub, reactor) -> None:
        self.hub = hub
        self.reactor = reactor
        self._stdio: stdio.StandardIO | None = None

    def startService(self) -> None:
        super().startService()
        self._stdio = stdio.StandardIO(ConsoleProtocol(self.hub), reactor=self.reactor)

    def stopService(self) -> None:
        super().stopService()
        if self._stdio is not None:
            self._stdio.loseConnection()
