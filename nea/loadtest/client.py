"""One load-test client: the relay-mode exchange, retried until it is acknowledged.

A `RelayClient` owns one unique text X for the whole run. Each attempt opens a
connection, sends ``message X``, answers every forwarded ``message Y`` with
``ok Y`` after a drawn delay, and closes as soon as its own ``ok X`` arrives: the
only ending counted as "closed by the protocol". A timeout, an error reply, a
connection the server closed, or a failed connect ends the attempt; the client
reconnects after a capped, jittered backoff and sends ``message X`` again, up to
``retries`` times, after which X is lost.

This is deliberately leaner than `nea.client.relay.RelayClient` (measured: 197
against 270 us of generator CPU per client, docs/loadtest.rst): it never prints,
compares raw bytes against the two lines it expects instead of decoding every
push into a frame, dials with ``connectTCP`` instead of an endpoint's Deferreds,
and reports how each attempt ended and how long its connect took.
"""

import random
import socket
from typing import Callable

import attrs
from twisted.internet import tcp
from twisted.internet.interfaces import IHandshakeListener, IReactorTCP, IReactorTime
from twisted.internet.protocol import ClientFactory, Protocol
from twisted.protocols.tls import TLSMemoryBIOFactory
from zope.interface import implementer

from nea.loadtest.delays import Delay
from nea.loadtest.tally import Tally
from nea.wire.backoff import Backoff
from nea.wire.codec import MAX_SERVER_LINE, LineBuffer, LineTooLong

#: Between a client's attempts: 0.1 s doubled per retry, at most 2 s, jittered down to half.
BACKOFF = Backoff(initial=0.1, maximum=2.0, jitter=0.5)
#: Linux: bind() takes only the address and the port is picked at connect(), with
#: the whole 4-tuple known; so a source address's ports are shared among servers,
#: and ports in TIME_WAIT towards this server are reused (net.ipv4.tcp_tw_reuse).
#: A plain bind(address, 0) would search for a port no socket holds, TIME_WAIT
#: included: slow, then failing, after some 28,000 closed connections.
IP_BIND_ADDRESS_NO_PORT = getattr(socket, "IP_BIND_ADDRESS_NO_PORT", 24)


@attrs.frozen
class Target:
    """Where and how every client of a worker connects."""

    host: str
    port: int
    tls: object | None  # IOpenSSLClientConnectionCreator, or None for plain TCP
    sources: tuple[str, ...] = ()  # source addresses to spread over; () = kernel's choice


@attrs.frozen
class Behaviour:
    ok_delay: Delay
    timeout: float
    retries: int


class ClientSet:
    """What the clients of one worker share: reactor, target, behaviour, rng, tally."""

    def __init__(
        self,
        reactor: IReactorTCP,
        clock: IReactorTime,
        target: Target,
        behaviour: Behaviour,
        rng: random.Random,
        tally: Tally,
        wall: Callable[[], float],
    ) -> None:
        self.reactor = reactor
        self.clock = clock
        self.target = target
        self.behaviour = behaviour
        self.rng = rng
        self.tally = tally
        self.wall = wall
        self.active = 0  # clients started and not yet finished
        self.retrying = 0  # active clients past their first attempt

    def connect(self, client: "RelayClient", number: int):
        """Open one attempt's connection for ``client``; ``number`` spreads source addresses."""
        target = self.target
        factory = client if target.tls is None else TLSMemoryBIOFactory(target.tls, True, client)
        if not target.sources:
            return self.reactor.connectTCP(target.host, target.port, factory, self.behaviour.timeout)
        source = (target.sources[number % len(target.sources)], 0)
        connector = SourceBoundConnector(
            target.host, target.port, factory, self.behaviour.timeout, source, self.reactor
        )
        connector.connect()
        return connector


class SourceBoundClient(tcp.Client):
    """A TCP client whose socket binds its source address without a port (see above)."""

    def createInternetSocket(self):
        skt = super().createInternetSocket()
        skt.setsockopt(socket.IPPROTO_IP, IP_BIND_ADDRESS_NO_PORT, 1)
        return skt


class SourceBoundConnector(tcp.Connector):
    def _makeTransport(self) -> tcp.Client:
        return SourceBoundClient(self.host, self.port, self.bindAddress, self, self.reactor)


class RelayClient(ClientFactory):
    """The lifetime of one text X: attempts until ``ok X``, or until retries run out."""

    noisy = False

    def __init__(self, clients: ClientSet, number: int, text: str) -> None:
        self.clients = clients
        self.number = number
        self.message = f"message {text}\n".encode("utf-8")
        self.own_ok = f"ok {text}".encode("utf-8")
        self.attempt = 0
        self.started = 0.0
        self._attempt_started = 0.0
        self._sent = 0.0
        self._connector = None
        self._timer = None
        self._timed_out = False
        self.connection: "RelayConnection | None" = None

    # ---- attempts ----

    def start(self) -> None:
        clients = self.clients
        self.started = clients.clock.seconds()
        clients.active += 1
        clients.tally.count("started")
        self._try()

    def _try(self) -> None:
        clients = self.clients
        self.attempt += 1
        clients.tally.count("attempts")
        if self.attempt > 1:
            clients.tally.count("retries")
        self._timed_out = False
        self._attempt_started = clients.clock.seconds()
        self._timer = clients.clock.callLater(clients.behaviour.timeout, self._time_out)
        self._connector = clients.connect(self, self.number + self.attempt)

    def _time_out(self) -> None:
        self._timer = None
        self._timed_out = True
        if self.connection is not None:
            self.connection.end("timeout", abort=True)
        elif self._connector is not None:
            self._connector.stopConnecting()  # reported through clientConnectionFailed

    def attempt_over(self, kind: str) -> None:
        """One attempt ended ``kind`` (see nea.loadtest.tally.CLOSE_KINDS)."""
        clients = self.clients
        clients.tally.closed(kind)
        self.connection = None
        self._connector = None
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if kind == "protocol":
            self._finish("acked")
        elif self.attempt > clients.behaviour.retries:
            self._finish("failed")
        else:
            if self.attempt == 1:
                clients.retrying += 1
            clients.clock.callLater(BACKOFF.delay(self.attempt - 1, clients.rng), self._try)

    def _finish(self, outcome: str) -> None:
        clients = self.clients
        clients.active -= 1
        if self.attempt > 1:
            clients.retrying -= 1
        tally = clients.tally
        tally.count(outcome)
        now = clients.clock.seconds()
        if outcome == "acked":
            if self.attempt == 1:
                tally.count("acked_first_try")
            tally.sample("total_ms", now - self.started)
        tally.span(clients.wall() - (now - self.started), clients.wall())

    # ---- what the connection reports ----

    def connected(self, connection: "RelayConnection") -> None:
        """TCP is up (with TLS, the handshake is still to come)."""
        self.connection = connection

    def ready(self) -> None:
        """Connected, handshake included: send ``message X``; the exchange is timed from here."""
        now = self.clients.clock.seconds()
        self.clients.tally.sample("connect_ms", now - self._attempt_started)
        self.connection.transport.write(self.message)
        self._sent = now

    def acked(self) -> None:
        self.clients.tally.sample("exchange_ms", self.clients.clock.seconds() - self._sent)

    # ---- ClientFactory ----

    def buildProtocol(self, addr) -> "RelayConnection":
        return RelayConnection(self)

    def clientConnectionFailed(self, connector, reason) -> None:
        self.attempt_over("timeout" if self._timed_out else "connect_failed")


@implementer(IHandshakeListener)
class RelayConnection(Protocol):
    """One attempt's connection: speaks the seed-004 lines for its `RelayClient`."""

    def __init__(self, client: RelayClient) -> None:
        self.client = client
        self._lines = LineBuffer(MAX_SERVER_LINE)
        self._ending: str | None = None
        self._ready = False  # TCP connected and, with TLS, handshake done
        self._oks: list = []  # pending delayed ``ok Y`` calls

    def connectionMade(self) -> None:
        # Without this, Nagle holds an ``ok Y`` written while ``message X`` is
        # unacknowledged until the server's delayed ACK: 40 ms on Linux.
        self.transport.setTcpNoDelay(True)
        self.client.connected(self)
        if self.client.clients.target.tls is None:
            self.handshakeCompleted()

    def handshakeCompleted(self) -> None:
        self._ready = True
        self.client.ready()

    def dataReceived(self, data: bytes) -> None:
        try:
            for line in self._lines.feed(data):
                if self._ending is not None:
                    return
                self._line(line)
        except LineTooLong:  # no line of the protocol: a broken or hostile server
            if self._ending is None:
                self.client.clients.tally.count("unexpected")
                self.end("error", abort=True)

    def _line(self, line: bytes) -> None:
        client = self.client
        tally = client.clients.tally
        if line.startswith(b"message "):
            tally.count("forwarded")
            self._answer(b"ok " + line[8:] + b"\n")
        elif line == client.own_ok:
            client.acked()
            self.end("protocol")
        elif line.startswith(b"error "):
            tally.errors[line.split(b" ", 2)[1].decode("ascii", "replace")] += 1
            self.end("error")
        elif not _is_date(line):
            tally.count("unexpected")

    def _answer(self, ok: bytes) -> None:
        clients = self.client.clients
        delay = clients.behaviour.ok_delay.draw(clients.rng)
        if delay <= 0:
            self._send_ok(ok)
        else:
            self._oks.append(clients.clock.callLater(delay, self._delayed_ok, ok))

    def _delayed_ok(self, ok: bytes) -> None:
        self._oks = [call for call in self._oks if call.active()]
        self._send_ok(ok)

    def _send_ok(self, ok: bytes) -> None:
        self.client.clients.tally.count("oks_sent")
        self.transport.write(ok)

    def end(self, kind: str, abort: bool = False) -> None:
        """End this attempt as ``kind``: close now, account for it when the close completes."""
        if self._ending is None:
            self._ending = kind
            if abort:
                self.transport.abortConnection()
            else:
                self.transport.loseConnection()

    def connectionLost(self, reason) -> None:
        for call in self._oks:
            if call.active():
                call.cancel()
        self._oks = []
        self.client.attempt_over(self._ending or ("lost" if self._ready else "connect_failed"))


def _is_date(line: bytes) -> bool:
    return len(line) == 10 and line[4:5] == b"-" and line[7:8] == b"-"
