"""nea-loadtest's asyncio dialler against real sockets and real TLS handshakes on loopback.

Each test runs its own asyncio event loop (the one a worker runs Twisted's
asyncio reactor on) with a stdlib TLS server on it, and drives Twisted
protocols through `nea.loadtest.dialler.AsyncioEndpoint`.
"""

import asyncio
import ssl
import tempfile
from pathlib import Path

from twisted.internet import error
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IHandshakeListener
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.task import Clock
from twisted.python.failure import Failure
from twisted.trial import unittest
from zope.interface import implementer

from nea.client.redial import DialConfig
from nea.client.relay import RelayClient, RelayConfig, RelayObserver
from nea.loadtest.dialler import AsyncioEndpoint, client_context
from nea.tls import devcerts
from nea.tls.client import verification_failure
from tests import infra
from tests.support import WAIT, certs


@implementer(IHandshakeListener)
class Recorder(Protocol):
    """Records what the endpoint tells a protocol; ``lost`` fires with the reason."""

    def __init__(self) -> None:
        self.events: list[str] = []
        self.data = b""
        self.lost: Deferred = Deferred()

    def connectionMade(self) -> None:
        self.events.append("made")

    def handshakeCompleted(self) -> None:
        self.events.append("handshake")

    def dataReceived(self, data: bytes) -> None:
        self.data += data

    def connectionLost(self, reason: Failure) -> None:
        self.lost.callback(reason)


class DiallerTests(unittest.TestCase):
    def setUp(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.addCleanup(self.loop.close)
        self.peers: list[str] = []
        self.server_saw_eof = asyncio.Event()

    def run_until(self, d: Deferred):
        """The loop runs until ``d`` fires (at most WAIT seconds); its result, or its Failure."""
        outcome: list = []
        d.addBoth(outcome.append)
        future = self.loop.create_future()
        d.addBoth(lambda _: future.done() or future.set_result(None))
        self.loop.run_until_complete(asyncio.wait_for(future, WAIT))
        return outcome[0]

    def run_while(self, condition) -> None:
        """The loop runs while ``condition()`` holds; fail if it still does after WAIT seconds."""

        async def waiting() -> None:
            while condition():
                await asyncio.sleep(0.01)

        self.loop.run_until_complete(asyncio.wait_for(waiting(), WAIT))

    def serve(self, handler, tls: bool = True) -> int:
        """A server on the loop; ``handler(reader, writer)`` serves each connection."""
        context = None
        if tls:
            context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            context.load_cert_chain(certs() / devcerts.SERVER_CERT, certs() / devcerts.SERVER_KEY)

        async def connected(reader, writer):
            self.peers.append(writer.get_extra_info("peername")[0])
            try:
                await handler(reader, writer)
            finally:
                writer.close()

        server = self.loop.run_until_complete(
            asyncio.start_server(connected, "127.0.0.1", 0, ssl=context)
        )
        self.addCleanup(lambda: self.loop.run_until_complete(server.wait_closed()))
        self.addCleanup(server.close)
        return server.sockets[0].getsockname()[1]

    def endpoint(self, port: int, **kwargs) -> AsyncioEndpoint:
        kwargs.setdefault("context", client_context(certs() / devcerts.CA_CERT))
        kwargs.setdefault("server_name", "localhost")
        return AsyncioEndpoint(self.loop, "127.0.0.1", port, **kwargs)

    async def greet_and_close(self, reader, writer):
        writer.write(b"hello\n")
        await writer.drain()

    async def echo_a_line(self, reader, writer):
        writer.write(await reader.readline())
        await writer.drain()
        await reader.read()  # until the client closes

    async def silent(self, reader, writer):
        await reader.read()  # whatever the client sends, until it closes
        self.server_saw_eof.set()

    def test_tls_protocol_is_connected_after_the_handshake(self):
        port = self.serve(self.greet_and_close)
        protocol = self.run_until(self.endpoint(port).connect(Factory.forProtocol(Recorder)))
        self.assertIsInstance(protocol, Recorder)
        self.assertEqual(protocol.events, ["made", "handshake"])
        reason = self.run_until(protocol.lost)
        self.assertEqual(protocol.data, b"hello\n")
        reason.trap(error.ConnectionDone)

    def test_plain_tcp_gets_no_handshake(self):
        port = self.serve(self.greet_and_close, tls=False)
        protocol = self.run_until(
            self.endpoint(port, context=None).connect(Factory.forProtocol(Recorder))
        )
        self.assertEqual(protocol.events, ["made"])
        self.run_until(protocol.lost)
        self.assertEqual(protocol.data, b"hello\n")

    def test_writes_reach_the_server_and_abort_closes(self):
        port = self.serve(self.echo_a_line)
        protocol = self.run_until(self.endpoint(port).connect(Factory.forProtocol(Recorder)))
        protocol.transport.write(b"ping\n")
        self.run_while(lambda: protocol.data != b"ping\n")
        protocol.transport.abortConnection()
        self.run_until(protocol.lost).trap(error.ConnectionDone, error.ConnectionLost)

    def test_sources_are_bound_in_turn(self):
        port = self.serve(self.greet_and_close)
        endpoint = self.endpoint(port, sources=("127.0.10.1", "127.0.10.2"))
        for _ in range(3):
            protocol = self.run_until(endpoint.connect(Factory.forProtocol(Recorder)))
            self.run_until(protocol.lost)
        self.assertEqual(self.peers, ["127.0.10.1", "127.0.10.2", "127.0.10.1"])

    def test_another_ca_is_named(self):
        other = Path(tempfile.mkdtemp(prefix="nea-test-other-ca-"))
        devcerts.generate(other)
        port = self.serve(self.greet_and_close)
        ca = other / devcerts.CA_CERT
        failure = self.run_until(
            self.endpoint(port, context=client_context(ca)).connect(Factory.forProtocol(Recorder))
        )
        self.assertIsInstance(failure, Failure)
        self.assertIn(f"does not verify against the CA in {ca}", verification_failure(failure, ca))

    def test_a_wrong_name_is_named(self):
        port = self.serve(self.greet_and_close)
        failure = self.run_until(
            self.endpoint(port, server_name="nea.example").connect(Factory.forProtocol(Recorder))
        )
        self.assertIn("not valid for nea.example", verification_failure(failure))

    def test_a_refused_certificate_ends_a_relay_client(self):
        port = self.serve(self.greet_and_close)
        clock = Clock()
        config = RelayConfig(dial=DialConfig(tls=True, ca="the-ca.pem"), timeout=0)
        finished: Deferred = Deferred()

        class Observer(RelayObserver):
            def on_finished(self, client: RelayClient) -> None:
                finished.callback(client.outcome)

        endpoint = self.endpoint(port, server_name="nea.example")
        client = RelayClient("X", endpoint, clock, config, Observer())
        client.start()
        self.assertEqual(self.run_until(finished), "tls_failed")
        self.assertIn("not valid for nea.example", client.detail)
        self.assertEqual(clock.getDelayedCalls(), [])  # no redial

    def test_refused_connection(self):
        port = self.serve(self.greet_and_close)
        self.loop.run_until_complete(asyncio.sleep(0))
        probe = self.endpoint(port)
        probe.address = ("127.0.0.1", infra.free_port())
        failure = self.run_until(probe.connect(Factory.forProtocol(Recorder)))
        failure.trap(error.ConnectionRefusedError)

    def test_cancelled_during_the_handshake(self):
        port = self.serve(self.silent, tls=False)  # accepts, never answers the ClientHello
        connecting = self.endpoint(port).connect(Factory.forProtocol(Recorder))
        self.run_while(lambda: not self.peers)
        connecting.cancel()
        self.run_until(connecting).trap(error.ConnectingCancelledError)
        self.loop.run_until_complete(asyncio.wait_for(self.server_saw_eof.wait(), WAIT))

    def test_handshake_timeout(self):
        port = self.serve(self.silent, tls=False)
        failure = self.run_until(
            self.endpoint(port, timeout=0.2).connect(Factory.forProtocol(Recorder))
        )
        failure.trap(error.TimeoutError)
        self.loop.run_until_complete(asyncio.wait_for(self.server_saw_eof.wait(), WAIT))
