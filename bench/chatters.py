"""Many chat-room clients in one process, line or WebSocket, timestamping every line said.

Plain sockets on ``selectors``, as in `holders.py`, and a minimal stdlib
WebSocket client (RFC 6455: the opening handshake, masked frames out, unmasked
frames in) rather than autobahn's: the receiving side of a fan-out should cost
as little CPU as possible on a machine it shares with the server, and one loop
then reads and timestamps both kinds of client alike. Driven by
`chat_fanout.py` as a child process:

    python bench/chatters.py --port P [--ws] --connections N --name r1 --sender S --lines L

Each client gives its name (``r1-0``, ``r1-1``, ...) and waits for its welcome
before the next connects; then it prints ``{"joined": N}``. Once every client
has seen ``S joined`` it prints ``{"ready": N}``: the room announces a join only
to clients already in it, and a client enters only after its join history has
been sent to it, so each is then reading live lines. Then every
line from ``S`` (its text ``SEQ SENT``, SENT a wall-clock time) is timestamped
on arrival, until every client has line ``L - 1`` or stdin closes; it prints
``{"latencies": [ms, ...], "received": R, "missing": M, "duplicates": D}`` and
keeps its clients in the room until stdin closes (their leaving would otherwise
be fanned out while other clients still wait for lines).
"""

import argparse
import base64
import hashlib
import json
import os
import selectors
import socket
import time

from holders import stdin_closed

#: What a server adds to the client's key for Sec-WebSocket-Accept (RFC 6455).
WS_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
TEXT, CLOSE, PING, PONG = 0x1, 0x8, 0x9, 0xA
#: Seconds to wait for one client's welcome.
JOIN_TIMEOUT = 60.0
#: Seconds to wait for the sender to be seen joining: it joins once every child's clients
#: have, and on a loaded machine another child's thousand joins take minutes.
READY_TIMEOUT = 600.0


class Client:
    """One chat-profile client: what it has been told, and the lines it got."""

    def __init__(self, sock: socket.socket, name: str, lines: int) -> None:
        self.sock = sock
        self.name = name
        self.buffer = b""
        self.welcomed = False
        self.seen: set[str] = set()  # names seen joining
        self.got = bytearray(lines)  # times each line arrived
        self.latencies: list[float] = []

    def received(self, kind: str, value, now: float) -> None:
        if kind == "welcome":
            self.welcomed = True
        elif kind == "joined":
            self.seen.add(value)
        elif kind == "chat":
            seq, sent = value.split()
            self.got[int(seq)] += 1
            self.latencies.append(round((now - float(sent)) * 1000, 3))
        elif kind == "error":
            raise RuntimeError(f"{self.name}: {value}")


class LineClient(Client):
    """The chat profile in text: ``* welcome NAME``, ``* NAME joined``, ``NAME: text``."""

    def start(self) -> None:
        self.sock.sendall(self.name.encode() + b"\n")

    def events(self, data: bytes):
        *lines, self.buffer = (self.buffer + data).split(b"\n")
        for raw in lines:
            line = raw.rstrip(b"\r").decode()
            if line.startswith("* welcome "):
                yield "welcome", None
            elif line.startswith("* ") and line.endswith(" joined"):
                yield "joined", line[2:-7]
            elif line.startswith("error "):
                yield "error", line
            elif not line.startswith("* "):
                _, _, text = line.partition(": ")
                yield "chat", text


class WebSocketClient(Client):
    """The chat profile in JSON frames, one per WebSocket text message."""

    def start(self) -> None:
        key = base64.b64encode(os.urandom(16))
        host = "{}:{:d}".format(*self.sock.getpeername())
        self.sock.sendall(
            b"GET / HTTP/1.1\r\nHost: " + host.encode() + b"\r\nUpgrade: websocket"
            b"\r\nConnection: Upgrade\r\nSec-WebSocket-Key: "
            + key
            + b"\r\nSec-WebSocket-Version: 13\r\n\r\n"
        )
        answer = b""
        while b"\r\n\r\n" not in answer:
            chunk = self.sock.recv(4096)
            if not chunk:
                raise ConnectionError("the server closed the opening handshake")
            answer += chunk
        head, _, self.buffer = answer.partition(b"\r\n\r\n")
        accept = base64.b64encode(hashlib.sha1(key + WS_GUID).digest())
        if not head.startswith(b"HTTP/1.1 101") or accept not in head:
            raise ConnectionError(f"WebSocket handshake refused: {head[:200]!r}")
        self.send(TEXT, json.dumps({"type": "nick", "payload": self.name}).encode())

    def send(self, opcode: int, payload: bytes) -> None:
        """One masked frame (a client must mask), payloads under 126 bytes only."""
        mask = os.urandom(4)
        masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
        self.sock.sendall(bytes([0x80 | opcode, 0x80 | len(payload)]) + mask + masked)

    def events(self, data: bytes):
        self.buffer += data
        while len(self.buffer) >= 2:
            first, second = self.buffer[0], self.buffer[1]
            size, start = second & 0x7F, 2
            if size == 126:
                start = 4
            elif size == 127:
                start = 10
            if len(self.buffer) < start:
                return
            if start > 2:
                size = int.from_bytes(self.buffer[2:start], "big")
            if len(self.buffer) < start + size:
                return
            payload, self.buffer = self.buffer[start : start + size], self.buffer[start + size :]
            opcode = first & 0x0F
            if not first & 0x80 or second & 0x80:
                raise ConnectionError("a fragmented or masked frame from the server")
            if opcode == CLOSE:
                raise ConnectionError(f"the server closed: {payload!r}")
            if opcode == PING:
                self.send(PONG, payload)
            elif opcode == TEXT:
                yield from self.frame(json.loads(payload))

    @staticmethod
    def frame(frame: dict):
        kind, payload = frame["type"], frame["payload"]
        if kind == "nick":
            yield "welcome", None
        elif kind == "presence" and payload["event"] == "joined":
            yield "joined", payload["name"]
        elif kind == "chat":
            yield "chat", payload["text"]
        elif kind == "error":
            yield "error", payload


class Room:
    """The clients on one selector; `pump` reads whatever has come."""

    def __init__(self) -> None:
        self.selector = selectors.DefaultSelector()
        self.clients: list[Client] = []

    def add(self, client: Client) -> None:
        client.sock.setblocking(False)
        self.selector.register(client.sock, selectors.EVENT_READ, client)
        self.clients.append(client)
        if client.buffer:  # what came with the opening handshake's answer
            pending, client.buffer = client.buffer, b""
            self.feed(client, pending, time.time())

    def pump(self, timeout: float) -> None:
        for key, _ in self.selector.select(timeout):
            now = time.time()
            try:
                data = key.fileobj.recv(1 << 16)
            except BlockingIOError:
                continue
            if not data:
                raise ConnectionError(f"the server closed {key.data.name}")
            self.feed(key.data, data, now)

    @staticmethod
    def feed(client: Client, data: bytes, now: float) -> None:
        for kind, value in client.events(data):
            client.received(kind, value, now)

    def until(self, condition, what: str, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while not condition():
            if time.monotonic() > deadline:
                raise TimeoutError(f"{what} not within {timeout:g} s")
            self.pump(0.05)


def join(args, room: Room) -> None:
    kind = WebSocketClient if args.ws else LineClient
    for i in range(args.connections):
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.bind((args.source, 0))
        sock.settimeout(JOIN_TIMEOUT)
        sock.connect(("127.0.0.1", args.port))
        client = kind(sock, f"{args.name}-{i}", args.lines)
        client.start()
        room.add(client)
        room.until(lambda client=client: client.welcomed, f"{client.name}'s welcome", JOIN_TIMEOUT)


def report(clients: list[Client]) -> dict:
    counts = [n for c in clients for n in c.got]
    return {
        "latencies": [ms for c in clients for ms in c.latencies],
        "received": sum(counts),
        "missing": counts.count(0),
        "duplicates": sum(n - 1 for n in counts if n > 1),
    }


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--ws", action="store_true", help="WebSocket clients (else line clients)")
    p.add_argument("--connections", type=int, default=1)
    p.add_argument("--source", default="127.0.0.1")
    p.add_argument("--name", required=True, help="the clients' names are NAME-0, NAME-1, ...")
    p.add_argument("--sender", required=True, help="the name whose lines are timed")
    p.add_argument("--lines", type=int, required=True, help="lines the sender will say")
    args = p.parse_args()
    room = Room()
    join(args, room)
    print(json.dumps({"joined": len(room.clients)}), flush=True)
    room.until(
        lambda: all(args.sender in c.seen for c in room.clients),
        f"{args.sender} joining",
        READY_TIMEOUT,
    )
    print(json.dumps({"ready": len(room.clients)}), flush=True)
    done = stdin_closed()
    last = args.lines - 1
    waiting = list(room.clients)
    while waiting and not done.is_set():
        room.pump(0.2)
        waiting = [c for c in waiting if not c.got[last]]
    print(json.dumps(report(room.clients)), flush=True)
    while not done.wait(1.0):
        room.pump(0)  # keep reading (leaves of the other children's clients)
    for client in room.clients:
        client.sock.close()


if __name__ == "__main__":
    main()
