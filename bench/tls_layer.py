"""nea's own TLS layer against Twisted's TLSMemoryBIOProtocol: server CPU, same run.

Each layer serves an echo protocol (bytes back as they came) in a process of its
own, with the same certificate and OpenSSL; a stdlib ``ssl`` client (blocking
sockets, not Twisted) makes fresh connections, each doing a handshake, a number
of exchanges of a given size one at a time, and a close. The server process's
CPU (utime + stime from /proc) is read around each round; rounds alternate
between the layers, so that both see the same machine. The workload decides
what is compared: small exchanges (the relay and chat traffic), and exchanges
past one TLS record (16 KiB), where each layer must send several records.

    .venv/bin/python bench/tls_layer.py --connections 300 --exchanges 20 --size 64
    .venv/bin/python bench/tls_layer.py --connections 100 --exchanges 20 --size 20000
"""

import argparse
import socket
import ssl
import sys
import time
from pathlib import Path

import harness

LAYERS = ("nea", "twisted")


def serve(layer: str, certs: Path) -> None:
    """Run an echo server behind ``layer``'s TLS on a free port; print the port."""
    from OpenSSL import SSL
    from twisted.internet import reactor
    from twisted.internet.interfaces import IOpenSSLServerConnectionCreator
    from twisted.internet.protocol import Factory, Protocol
    from twisted.protocols.tls import TLSMemoryBIOFactory
    from zope.interface import implementer

    from nea.server.admission import Admission
    from nea.tls.server import HandshakeGate, TLSFiles, TLSServerFactory, server_context

    class Echo(Protocol):
        def dataReceived(self, data: bytes) -> None:
            self.transport.write(data)

    context = server_context(TLSFiles(certs / "server-key.pem", certs / "server.pem"))
    echo = Factory.forProtocol(Echo)
    if layer == "nea":
        factory = TLSServerFactory(echo, lambda: context, reactor, Admission(), HandshakeGate())
    else:

        @implementer(IOpenSSLServerConnectionCreator)
        class SameContext:  # both layers serve from the very same OpenSSL context
            def serverConnectionForTLS(self, protocol):
                return SSL.Connection(context, None)

        factory = TLSMemoryBIOFactory(SameContext(), False, echo)
    port = reactor.listenTCP(0, factory, interface="127.0.0.1", backlog=1024)
    print(port.getHost().port, flush=True)
    reactor.run()


def client(port: int, context: ssl.SSLContext, exchanges: int, payload: bytes) -> None:
    with socket.create_connection(("127.0.0.1", port), timeout=30) as raw:
        raw.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        with context.wrap_socket(raw, server_hostname="localhost") as tls:
            for _ in range(exchanges):
                tls.sendall(payload)
                got = 0
                while got < len(payload):
                    chunk = tls.recv(65536)
                    if not chunk:
                        raise EOFError("closed by the server")
                    got += len(chunk)
            if got != len(payload):
                raise AssertionError(f"{got} bytes back for {len(payload)}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--connections", type=int, default=300, help="per layer and round")
    parser.add_argument("--exchanges", type=int, default=20, help="per connection")
    parser.add_argument("--size", type=int, default=64, help="bytes each way per exchange")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--serve", nargs=2, metavar=("LAYER", "CERTS"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        serve(args.serve[0], Path(args.serve[1]))
        return
    harness.header("TLS layer: nea's against Twisted's TLSMemoryBIOProtocol")
    print(
        f"limits: {args.connections} connections a round, {args.exchanges} exchanges of "
        f"{args.size} bytes each way, one at a time; {args.rounds} rounds"
    )
    certs = harness.certs()
    servers = {}
    for layer in LAYERS:
        process = harness.spawn(
            [sys.executable, __file__, "--serve", layer, str(certs)], stdout=harness.subprocess.PIPE
        )
        servers[layer] = (process, int(harness.readline(process, 30.0)))
    context = ssl.create_default_context(cafile=str(certs / "ca.pem"))
    payload = b"x" * args.size
    cpu = {layer: 0.0 for layer in LAYERS}
    wall = {layer: 0.0 for layer in LAYERS}
    try:
        for _ in range(args.rounds):
            for layer, (process, port) in servers.items():
                before, started = harness.process_cpu(process.pid), time.monotonic()
                for _ in range(args.connections):
                    client(port, context, args.exchanges, payload)
                time.sleep(0.2)  # let the server finish its closes before it is read
                cpu[layer] += harness.process_cpu(process.pid) - before
                wall[layer] += time.monotonic() - started
    finally:
        for process, _ in servers.values():
            harness.stop(process)
    connections = args.connections * args.rounds
    for layer in LAYERS:
        per_connection = cpu[layer] / connections * 1e6
        print(
            f"{layer:8s} server CPU {cpu[layer]:6.2f} s: {per_connection:7.0f} us a connection "
            f"({args.exchanges} exchanges), wall {wall[layer]:5.1f} s"
        )
    print(f"nea / twisted: {cpu['nea'] / cpu['twisted']:.2f}")


if __name__ == "__main__":
    main()
