"""Many idle client connections in one process, for the memory and fan-out benchmarks.

Plain sockets and the stdlib ``ssl`` module on ``selectors``, not Twisted: the
receiving side of a fan-out should cost as little as possible, so that what is
measured is the server. Driven by a benchmark as a child process:

    python bench/holders.py --port P [--tls CA] --connections N --source 127.0.50.1 MODE

It connects N clients (TLS handshakes completed), prints ``{"ready": N}`` (in
``dates`` mode once what arrived meanwhile has been read and dropped), then:

- ``hold``: keeps them open until stdin closes;
- ``dates``: records when each connection receives each date line, until stdin
  closes, then prints ``{"dates": [[t, ...], ...]}`` (wall-clock times, one list
  per connection);
- ``probe``: one connection (N is ignored) sends a line every 10 ms and times the
  reversed reply, until stdin closes, then prints ``{"probe": [[sent, rtt], ...]}``.
"""

import argparse
import json
import re
import selectors
import socket
import ssl
import sys
import threading
import time

DATE = re.compile(rb"^\d{4}-\d{2}-\d{2}$")


def open_connections(args) -> list:
    context = None
    if args.tls:
        context = ssl.create_default_context(cafile=args.tls)
    connections = []
    for _ in range(args.connections):
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.bind((args.source, 0))
        sock.settimeout(30)
        sock.connect(("127.0.0.1", args.port))
        if context is not None:
            sock = context.wrap_socket(sock, server_hostname="localhost")  # handshake done here
        sock.setblocking(False)
        connections.append(sock)
    return connections


def stdin_closed() -> threading.Event:
    closed = threading.Event()

    def wait() -> None:
        sys.stdin.buffer.read()
        closed.set()

    threading.Thread(target=wait, daemon=True).start()
    return closed


def read_lines(sock, tails: dict) -> list[bytes]:
    try:
        data = sock.recv(65536)
    except (BlockingIOError, ssl.SSLWantReadError):
        return []
    if not data:
        raise ConnectionError("the server closed a connection")
    *lines, tails[sock] = (tails.get(sock, b"") + data).split(b"\n")
    return lines


def drain(connections: list, tails: dict, seconds: float = 300.0) -> None:
    """Read and drop what arrived while the connections were opened (date lines queued
    for the first ones), until 0.2 s pass with nothing more: else those lines would be
    timestamped as if the server had just sent them."""
    selector = selectors.DefaultSelector()
    for sock in connections:
        selector.register(sock, selectors.EVENT_READ)
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        ready = selector.select(0.2)
        if not ready:
            break
        for key, _ in ready:
            read_lines(key.fileobj, tails)
    selector.close()


def dates(connections: list, tails: dict, done: threading.Event) -> list[list[float]]:
    selector = selectors.DefaultSelector()
    arrivals: dict = {}
    for i, sock in enumerate(connections):
        selector.register(sock, selectors.EVENT_READ, i)
        arrivals[i] = []
    while not done.is_set():
        for key, _ in selector.select(0.2):
            now = time.time()
            for line in read_lines(key.fileobj, tails):
                if DATE.match(line.rstrip(b"\r")):
                    arrivals[key.data].append(now)
    return [arrivals[i] for i in range(len(connections))]


def probe(sock, done: threading.Event) -> list[list[float | None]]:
    """[sent, round-trip seconds or None if no answer within 10 s] every 10 ms."""
    sock.setblocking(True)
    sock.settimeout(10)
    samples, tails = [], {}
    while not done.is_set():
        sent = time.time()
        sock.sendall(b"probe-0123456789\n")
        answered = False
        try:
            while not answered:
                answered = b"9876543210-eborp" in read_lines(sock, tails)
        except TimeoutError:
            pass
        samples.append([sent, time.time() - sent if answered else None])
        done.wait(0.01)
    return samples


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--tls", metavar="CA", help="TLS, verifying the server against this CA file")
    p.add_argument("--connections", type=int, default=1)
    p.add_argument("--source", default="127.0.0.1")
    p.add_argument("mode", choices=("hold", "dates", "probe"))
    args = p.parse_args()
    if args.mode == "probe":
        args.connections = 1
    connections = open_connections(args)
    tails: dict = {}
    if args.mode == "dates":
        drain(connections, tails)
    print(json.dumps({"ready": len(connections)}), flush=True)
    done = stdin_closed()
    if args.mode == "hold":
        done.wait()
    elif args.mode == "dates":
        print(json.dumps({"dates": dates(connections, tails, done)}), flush=True)
    else:
        print(json.dumps({"probe": probe(connections[0], done)}), flush=True)
    for sock in connections:
        sock.close()


if __name__ == "__main__":
    main()
