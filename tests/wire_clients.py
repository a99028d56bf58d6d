"""Blocking clients for nea's four transports, as a script or a device would write them.

Each is a plain socket (the standard library), with pyOpenSSL for TLS and a few
lines of RFC 6455 for WebSocket: nothing of Twisted or autobahn, so what they see is
what nea put on the wire. Every socket call is bounded by `support.bounded_socket`.
Run them in threads (``deferToThread``) while the reactor serves.
"""

import base64
import os
import socket
import struct

from OpenSSL import SSL

from tests.support import bounded_socket, certs

#: How a client ends its side: a TCP FIN, a TLS close_notify, a WebSocket close frame.
FIN, CLOSE_NOTIFY, WS_CLOSE = "fin", "close_notify", "ws_close"

TEXT, CLOSE = 1, 8


def tls_context() -> SSL.Context:
    context = SSL.Context(SSL.TLS_CLIENT_METHOD)
    context.load_verify_locations(str(certs() / "ca.pem"))
    context.set_verify(SSL.VERIFY_PEER, lambda *args: args[-1])
    return context


class Stream:
    """A byte stream to nea over TCP, or TLS when ``tls``."""

    def __init__(self, port: int, tls: bool) -> None:
        self.sock = bounded_socket("127.0.0.1", port)
        self.tls = None
        if tls:
            self.tls = SSL.Connection(tls_context(), self.sock)
            self.tls.set_tlsext_host_name(b"localhost")
            self.tls.set_connect_state()
            self.tls.do_handshake()

    def send(self, data: bytes) -> None:
        (self.tls or self.sock).sendall(data)

    def end(self, how: str = FIN) -> None:
        """Send no more: close_notify (TLS), or a bare TCP FIN (TCP, or TLS without notify)."""
        if self.tls is not None and how == CLOSE_NOTIFY:
            self.tls.shutdown()
        else:
            self.sock.shutdown(socket.SHUT_WR)

    def recv(self) -> bytes:
        """Some bytes; b"" once the server has closed."""
        if self.tls is None:
            return self.sock.recv(65536)
        try:
            return self.tls.recv(65536)
        except (SSL.ZeroReturnError, SSL.SysCallError):
            return b""

    def read_exactly(self, count: int) -> bytes:
        data = bytearray()
        for _ in range(100_000):
            if len(data) >= count:
                break
            chunk = self.recv()
            if not chunk:
                break
            data += chunk
        return bytes(data)

    def read_to_end(self, limit: int = 64 * 1024 * 1024) -> bytes:
        data = bytearray()
        for _ in range(100_000):
            chunk = self.recv()
            if not chunk or len(data) > limit:
                break
            data += chunk
        return bytes(data)

    def close(self) -> None:
        self.sock.close()


def read_line(stream: Stream, held: bytearray) -> bytes:
    """The next LF-terminated line (LF included), keeping what follows it in ``held``."""
    for _ in range(100_000):
        end = held.find(b"\n")
        if end >= 0:
            line = bytes(held[: end + 1])
            del held[: end + 1]
            return line
        chunk = stream.recv()
        if not chunk:
            raise ConnectionError(f"closed before a line ended ({len(held)} bytes held)")
        held += chunk
    raise AssertionError("no line within the bound")


def client_frame(
    payload: bytes, opcode: int = TEXT, fin: bool = True, length: int | None = None
) -> bytes:
    """One masked frame, as a client must send it; ``length`` may announce more than
    ``payload`` (a frame whose rest never comes)."""
    head = bytes([(0x80 if fin else 0) | opcode])
    length = len(payload) if length is None else length
    if length < 126:
        head += bytes([0x80 | length])
    elif length < 2**16:
        head += bytes([0x80 | 126]) + struct.pack("!H", length)
    else:
        head += bytes([0x80 | 127]) + struct.pack("!Q", length)
    mask = os.urandom(4)
    size = len(payload)
    masked = (
        (
            int.from_bytes(payload, "big") ^ int.from_bytes((mask * (size // 4 + 1))[:size], "big")
        ).to_bytes(size, "big")
        if size
        else b""
    )
    return head + mask + masked


def server_frames(data: bytes) -> tuple[list[tuple[int, bool, bytes]], bytes]:
    """(opcode, fin, payload) of each whole unmasked frame in ``data``, and the rest."""
    frames, position = [], 0
    while len(data) - position >= 2:
        first, second = data[position], data[position + 1]
        length, head = second & 0x7F, 2
        if length == 126:
            if len(data) - position < 4:
                break
            length, head = struct.unpack("!H", data[position + 2 : position + 4])[0], 4
        elif length == 127:
            if len(data) - position < 10:
                break
            length, head = struct.unpack("!Q", data[position + 2 : position + 10])[0], 10
        if len(data) - position < head + length:
            break
        payload = data[position + head : position + head + length]
        frames.append((first & 0x0F, bool(first & 0x80), payload))
        position += head + length
    return frames, data[position:]


class WebSocket:
    """A WebSocket client over a `Stream` (wss when ``tls``)."""

    def __init__(self, port: int, tls: bool, path: str = "/") -> None:
        self.stream = Stream(port, tls)
        key = base64.b64encode(os.urandom(16)).decode()
        self.stream.send(
            f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\n"
            f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
            "Sec-WebSocket-Version: 13\r\n\r\n".encode()
        )
        held = bytearray()
        for _ in range(1000):
            end = held.find(b"\r\n\r\n")
            if end >= 0:
                break
            chunk = self.stream.recv()
            if not chunk:
                raise ConnectionError(f"no upgrade: {bytes(held)!r}")
            held += chunk
        if not held.startswith(b"HTTP/1.1 101"):
            raise ConnectionError(f"no upgrade: {bytes(held)!r}")
        self._held = bytes(held[end + 4 :])

    def messages_to_end(self) -> tuple[list[bytes], bool]:
        """Every text message until the server closed, and whether a close frame came last."""
        data = self._held + self.stream.read_to_end()
        frames, rest = server_frames(data)
        assert not rest, f"{len(rest)} bytes of a cut frame: {rest[:60]!r}"
        return _messages(frames)

    def next_message(self) -> bytes:
        """The next text message (unfragmented or not)."""
        for _ in range(100_000):
            frames, rest = server_frames(self._held)
            messages, _ = _messages(frames)
            if messages:
                # Keep whatever followed the first message.
                consumed = _frames_length(self._held, frames, 1)
                self._held = self._held[consumed:]
                return messages[0]
            chunk = self.stream.recv()
            if not chunk:
                raise ConnectionError("closed before a message came")
            self._held += chunk
        raise AssertionError("no message within the bound")


def _messages(frames) -> tuple[list[bytes], bool]:
    messages, parts, closed = [], [], False
    for opcode, fin, payload in frames:
        if opcode == CLOSE:
            closed = True
            continue
        if opcode in (TEXT, 0):
            parts.append(payload)
            if fin:
                messages.append(b"".join(parts))
                parts = []
    return messages, closed


def _frames_length(data: bytes, frames, count: int) -> int:
    """Bytes taken by the frames up to the end of the ``count``-th message (no pings here)."""
    position, seen = 0, 0
    for opcode, fin, payload in frames:
        length = len(payload)
        head = 2 if length < 126 else 4 if length < 2**16 else 10
        position += head + length
        if fin and opcode != CLOSE:
            seen += 1
            if seen == count:
                break
    return position
