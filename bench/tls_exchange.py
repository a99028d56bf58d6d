"""The seed-004 exchange over TLS, timed by a client that is not nea's: stdlib ``ssl``.

A cross-check of nea-loadtest's exchange latency with a client written
independently of it (blocking sockets, threads, no Twisted). Against a fresh
daemon's ``relay`` TLS listener, an *answerer* stays connected and answers every
``message Y`` with ``ok Y``. Then, one at a time, a fresh connection does the
handshake, sends ``message X`` and waits for ``ok X``; the server forwards X to
one of the two at random (the newcomer answers it too). The time from sending
``message X`` to reading ``ok X`` is split by who answered: when the answerer
did, ``ok X`` is the server's second write to the newcomer after its session
tickets, the case where Nagle's algorithm meets a delayed ACK. Both clients set
``TCP_NODELAY``, so any such delay left is the server's.

    .venv/bin/python bench/tls_exchange.py --exchanges 300
"""

import argparse
import socket
import ssl
import threading
import time

import harness


class Lines:
    """``\\n``-terminated lines from a blocking TLS socket."""

    def __init__(self, sock: ssl.SSLSocket) -> None:
        self.sock = sock
        self.buffer = b""

    def next(self) -> bytes:
        while b"\n" not in self.buffer:
            chunk = self.sock.recv(4096)
            if not chunk:
                raise EOFError("closed by the server")
            self.buffer += chunk
        line, self.buffer = self.buffer.split(b"\n", 1)
        return line


def connect(port: int, context: ssl.SSLContext | None) -> socket.socket:
    """A connection to the daemon on loopback: TLS through ``context``, plain TCP if None."""
    raw = socket.create_connection(("127.0.0.1", port), timeout=10)
    raw.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return raw if context is None else context.wrap_socket(raw, server_hostname="localhost")


def answer(sock: ssl.SSLSocket) -> None:
    """The answerer: ``ok Y`` for every ``message Y``, until the connection ends."""
    lines = Lines(sock)
    try:
        while True:
            verb, _, text = lines.next().partition(b" ")
            if verb == b"message":
                sock.sendall(b"ok " + text + b"\n")
    except (EOFError, OSError):
        pass


def exchange(port: int, context: ssl.SSLContext | None, text: bytes) -> tuple[float, bool]:
    """Seconds from ``message X`` to ``ok X``, and whether the answerer did the ok.

    Any other client's ``message Y`` forwarded here meanwhile is answered too, as
    a seed-004 client does (``client_cost.py`` runs many of these at once).
    """
    with connect(port, context) as sock:
        lines = Lines(sock)
        start = time.perf_counter()
        sock.sendall(b"message " + text + b"\n")
        answered_here = False
        while True:
            line = lines.next()
            if line.startswith(b"message "):
                answered_here = answered_here or line == b"message " + text
                sock.sendall(b"ok " + line[8:] + b"\n")
            elif line == b"ok " + text:
                return time.perf_counter() - start, not answered_here
            else:
                raise RuntimeError(f"unexpected {line!r}")


def summary(samples: list[float]) -> str:
    if not samples:
        return "none"
    slow = sum(1 for s in samples if s >= 0.030)
    return (
        f"n {len(samples)}: {harness.ms_percentiles(samples, 50, 90, 99)}, "
        f"max {max(samples) * 1000:.2f} ms; {slow} took 30 ms or more"
    )


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--exchanges", type=int, default=300)
    args = p.parse_args()
    harness.header(f"tls_exchange: {args.exchanges} exchanges, a fresh connection each")
    certs_dir = harness.certs()
    context = ssl.create_default_context(cafile=str(certs_dir / "ca.pem"))
    with harness.Daemon(harness.tls("relay", certs_dir)) as daemon:
        port = daemon.ports[0]
        answerer = connect(port, context)
        thread = threading.Thread(target=answer, args=(answerer,), daemon=True)
        thread.start()
        samples = [exchange(port, context, b"x%d" % i) for i in range(args.exchanges)]
        answerer.close()
    print(f"ok X via the answerer  {summary([s for s, other in samples if other])}")
    print(f"ok X via the newcomer  {summary([s for s, other in samples if not other])}")
    print(f"all                    {summary([s for s, _ in samples])}")


if __name__ == "__main__":
    main()
