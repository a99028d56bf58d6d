"""End of stream is not the end of the answers: half-closing clients get every reply.

Clients here are written with the standard library and pyOpenSSL on blocking
sockets, in threads, the way ``nc -N`` or a script would talk to nea: send a
request (with or without its LF), shut down the write side (a FIN, or a TLS
close_notify), then read until the server closes.
"""

import socket
from concurrent.futures import ThreadPoolExecutor

from OpenSSL import SSL
from twisted.internet import defer, threads
from twisted.trial import unittest

from nea.wire import codec, frames
from tests.support import (
    bounded_socket,
    certs,
    connect,
    settle,
    start_server,
    tcp_listen,
    tls_listen,
)

CLIENTS = 200
#: Clients talking at once (threads); the rest queue behind them.
PARALLEL = 20


def _tls_context() -> SSL.Context:
    context = SSL.Context(SSL.TLS_CLIENT_METHOD)
    context.load_verify_locations(str(certs() / "ca.pem"))
    context.set_verify(SSL.VERIFY_PEER, lambda *args: args[-1])
    return context


def exchange(port: int, request: bytes, tls: bool) -> bytes:
    """Send ``request``, end the stream, and return everything read until the server closed."""
    sock = bounded_socket("127.0.0.1", port)
    try:
        if not tls:
            sock.sendall(request)
            sock.shutdown(socket.SHUT_WR)
            return _read_all(sock.recv, ())
        conn = SSL.Connection(_tls_context(), sock)
        conn.set_tlsext_host_name(b"localhost")
        conn.set_connect_state()
        conn.do_handshake()
        conn.sendall(request)
        conn.shutdown()  # close_notify: nothing more from us; we go on reading
        return _read_all(conn.recv, (SSL.ZeroReturnError, SSL.SysCallError))
    finally:
        sock.close()


def _read_all(recv, ends) -> bytes:
    received = b""
    for _ in range(10_000):
        try:
            data = recv(65536)
        except ends:
            break
        if not data:
            break
        received += data
    return received


def run_clients(port: int, requests: list[bytes], tls: bool):
    def work():
        with ThreadPoolExecutor(PARALLEL) as pool:
            return list(pool.map(lambda r: exchange(port, r, tls), requests))

    return threads.deferToThread(work)


def lines(data: bytes) -> list[frames.Push]:
    return [codec.decode_push(line) for line in data.split(b"\n") if line]


class HalfClose(unittest.TestCase):
    timeout = 120

    @defer.inlineCallbacks
    def setUp(self):
        self.service = yield start_server(
            self,
            "--max-clients",
            str(CLIENTS + 10),
            "--listen",
            tcp_listen(),
            "--listen",
            tls_listen(),
            "--listen",
            tcp_listen("relay"),
            "--listen",
            tls_listen("relay"),
        )
        self.nea_tcp, self.nea_tls, self.relay_tcp, self.relay_tls = self.service.ports

    @defer.inlineCallbacks
    def check_reverse(self, port: int, tls: bool, terminator: bytes):
        requests = [f"line {i}".encode() + terminator for i in range(CLIENTS)]
        answers = yield run_clients(port, requests, tls)
        for i, answer in enumerate(answers):
            self.assertEqual(lines(answer), [frames.ReverseReply(f"line {i}"[::-1])], answer)
        yield settle(lambda: self.service.hub.zero_state())

    def test_nea_tcp_with_lf(self):
        return self.check_reverse(self.nea_tcp, False, b"\n")

    def test_nea_tcp_without_lf(self):
        return self.check_reverse(self.nea_tcp, False, b"")

    def test_nea_tls_with_lf(self):
        return self.check_reverse(self.nea_tls, True, b"\n")

    def test_nea_tls_without_lf(self):
        return self.check_reverse(self.nea_tls, True, b"")

    @defer.inlineCallbacks
    def test_the_status_probe_without_lf(self):
        """``printf '{"cmd":"status"}' | nc -N host port`` prints the status, every time."""
        answers = yield run_clients(self.nea_tcp, [b'{"cmd":"status"}'] * 20, False)
        for answer in answers:
            [status] = lines(answer)
            self.assertIsInstance(status, frames.StatusReply)
            self.assertEqual(status.status["instance"], "test")

    @defer.inlineCallbacks
    def check_relay(self, port: int, tls: bool, terminator: bytes):
        """Each sender's ``ok`` comes back although it ended its stream at once.

        A witness acks whatever it is forwarded; a half-closed sender can ack
        nothing, so what it was forwarded goes to someone who can.
        """
        witness = yield connect(self, self.nea_tcp, tls=False)
        acking = []

        def ack(line: bytes) -> None:
            push = codec.decode_push(line)
            if isinstance(push, frames.RelayPush):
                witness.send(f"ok {push.text}")
                acking.append(push.text)

        witness.lineReceived = ack
        requests = [f"message r{i}".encode() + terminator for i in range(CLIENTS)]
        answers = yield run_clients(port, requests, tls)
        for i, answer in enumerate(answers):
            # Forwarded relays may come before or after it (it can ack none of them).
            answered = [p for p in lines(answer) if not isinstance(p, frames.RelayPush)]
            self.assertEqual(answered, [frames.AckPush(f"r{i}")], answer)
        self.assertGreaterEqual(len(acking), CLIENTS)
        witness.transport.loseConnection()
        yield witness.closed
        yield settle(lambda: self.service.hub.zero_state())

    def test_relay_tcp_with_lf(self):
        return self.check_relay(self.relay_tcp, False, b"\n")

    def test_relay_tcp_without_lf(self):
        return self.check_relay(self.relay_tcp, False, b"")

    def test_relay_tls_with_lf(self):
        return self.check_relay(self.relay_tls, True, b"\n")

    def test_relay_tls_without_lf(self):
        return self.check_relay(self.relay_tls, True, b"")


class FirstLineIsTheReply(unittest.TestCase):
    """No date is pushed at connect: a client that connects and sends reads its reply first."""

    @defer.inlineCallbacks
    def test_the_first_client_of_an_idle_server(self):
        service = yield start_server(self, "--listen", tls_listen(), "--listen", tcp_listen())
        for port, tls in zip(service.ports, (True, False), strict=True):
            client = yield connect(self, port, tls=tls)
            client.send("hello")
            first = yield client.next()
            self.assertEqual(first, b"olleh")
            self.assertTrue(service.hub.snapshot().dates.running)
            client.transport.loseConnection()
            yield client.closed
            yield settle(lambda: not service.hub.snapshot().connections)
