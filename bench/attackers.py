"""Hostile clients in one process, for ``hostile.py``: asyncio and the stdlib ``ssl`` module.

    python bench/attackers.py --relay-port R --nea-port N --http-port H --ca CA \
        [--seconds S] [--scale F]

All on 127.0.0.1, side by side, each kept up (reconnecting when the server
closes it) until stdin closes or ``--seconds`` pass:

- ``silent``: 1,000 TCP sockets to the TLS relay port that never send a byte;
- ``half_hello``: 1,000 that send the first half of a real ClientHello and stop;
- ``non_reader``: 100 TLS relay clients that send ``message`` lines (10 a second
  each) and never read a byte of what comes back;
- ``relay_flood``: one TLS relay client sending ``message`` lines as fast as
  the server takes them (it reads, and acks what is forwarded to it);
- ``line_flood``: one TLS ``nea`` client sending ``reverse`` lines as fast as
  the server takes them (it reads the answers);
- ``poison``: one TLS ``nea`` client sending, in turn and one at a time,
  5,000-deep nested JSON, lone surrogates in a payload and invalid UTF-8;
- ``long_line``: one TLS ``nea`` client sending a 10 MB line without LF, over
  and over;
- ``chatty``: one TLS ``nea`` client saying 1 KB chat lines as fast as the
  server takes them (every chat client gets each one);
- ``store_pressure``: one TLS ``nea`` client saying 1,100-byte chat lines, 3,000
  in each write, as fast as the server takes them (the history store's queue);
- ``chat_reader``: not an attacker but its victims: 10 TLS ``nea`` clients that
  read what they are sent as fast as they can and say nothing; each close by
  the server (``slow_consumer``) is a reader the chatters got dropped.
- ``idle_target``: 90 TLS relay clients that read everything (their forwarded
  ``message`` lines included) and never send a byte: relay targets that never ack;
- ``squatter``: 100 TLS ``nea`` clients that read everything and never send a
  byte, not even the ``pong`` to the server's ``ping``: they hold slots;
- ``ws_ping_flood``: one ``/ws`` client sending WebSocket ping frames as fast as
  the server takes them (it reads the pongs);
- ``keepalive_hoarder``: 1,000 HTTP connections to the API, each asking
  ``/healthz`` once and then holding its keep-alive connection idle.

It prints ``{"ready": {...}}`` once the first connections are up, and at the end
``{"result": {...}}``: per attacker what it sent, what came back (by error code)
and how often the server closed it, with how long it held on.
"""

import argparse
import asyncio
import collections
import json
import ssl
import sys
import time

NESTED = b'{"type":"reverse","x":' + b"[" * 5000 + b"]" * 5000 + b"}\n"
POISON = (
    NESTED,
    b'{"type":"reverse","payload":"\\ud800"}\n',
    b'{"type":"message","payload":"\\udc00abc"}\n',
    b'{"type":"reverse","payload":' + b'{"a":' * 3000 + b"1" + b"}" * 3000 + b"}\n",
    b"reverse \xff\xfe\n",
)
LONG_LINE = b"x" * (10 * 1000 * 1000)
WS_UPGRADE = (
    b"GET /ws HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n"
    b"Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
    b"Sec-WebSocket-Version: 13\r\n\r\n"
)
#: An empty ping frame, masked (as a client's must be) with the zero mask.
WS_PING = b"\x89\x80\x00\x00\x00\x00"
HEALTHZ = b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"


class Attack:
    """The shared pieces: where to connect, until when, and the counters."""

    def __init__(self, args) -> None:
        self.args = args
        self.deadline = time.monotonic() + args.seconds
        self.context = ssl.create_default_context(cafile=args.ca)
        self.stats: dict[str, collections.Counter] = collections.defaultdict(collections.Counter)
        self.held: dict[str, list[float]] = collections.defaultdict(list)
        self.stopping = asyncio.Event()

    def left(self) -> float:
        return max(0.0, self.deadline - time.monotonic())

    def over(self) -> bool:
        return self.stopping.is_set() or not self.left()

    async def connect(self, kind: str, port: int, tls: bool, source: str):
        try:
            streams = await asyncio.wait_for(
                asyncio.open_connection(
                    "127.0.0.1",
                    port,
                    local_addr=(source, 0),
                    ssl=self.context if tls else None,
                    server_hostname="localhost" if tls else None,
                ),
                min(30.0, self.left() + 0.1),
            )
        except (TimeoutError, OSError, ssl.SSLError):
            self.stats[kind]["connect_failed"] += 1
            await asyncio.sleep(0.5)
            return None
        self.stats[kind]["opened"] += 1
        return streams

    async def connections(self, kind: str, port: int, tls: bool, source: str):
        """Each connection made until the end, as ``(reader, writer, opened at)``; one is
        aborted when the attacker is done with it, and the next is made."""
        while not self.over():
            streams = await self.connect(kind, port, tls, source)
            if streams is None:
                continue
            reader, writer = streams
            try:
                yield reader, writer, time.monotonic()
            finally:
                writer.transport.abort()

    def closed_by_server(self, kind: str, started: float) -> None:
        """The server closed a connection held since ``started`` (before the end)."""
        if not self.over():
            self.stats[kind]["closed_by_server"] += 1
            self.held[kind].append(time.monotonic() - started)

    async def until_closed(self, kind: str, reader, started: float) -> None:
        """Wait for the server to close (reading nothing it sends), or for the end."""
        try:
            while not self.over():
                if not await asyncio.wait_for(reader.read(1 << 16), self.left() + 0.1):
                    break
            else:
                return
        except TimeoutError:
            return
        except OSError:
            pass
        self.closed_by_server(kind, started)

    def count_reply(self, kind: str, line: bytes) -> None:
        if line.startswith(b"error "):
            self.stats[kind]["error " + line.split()[1].decode("ascii", "replace")] += 1
        elif line.startswith(b'{"type":"error"'):
            code = json.loads(line)["payload"].get("code", "?")
            self.stats[kind]["error " + code] += 1
        else:
            self.stats[kind]["replies"] += 1


def client_hello() -> bytes:
    """The first flight of a real TLS client: one record holding a ClientHello."""
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    tls = ssl.create_default_context().wrap_bio(incoming, outgoing, server_hostname="localhost")
    try:
        tls.do_handshake()
    except ssl.SSLWantReadError:
        pass
    return outgoing.read()


async def idle(attack: Attack, kind: str, payload: bytes, source: str) -> None:
    async for reader, writer, started in attack.connections(
        kind, attack.args.relay_port, False, source
    ):
        if payload:
            writer.write(payload)
        await attack.until_closed(kind, reader, started)


async def non_reader(attack: Attack, index: int) -> None:
    kind, sent = "non_reader", 0
    async for _, writer, started in attack.connections(
        kind, attack.args.relay_port, True, "127.0.61.3"
    ):
        writer.transport.pause_reading()
        try:
            while not attack.over():
                writer.write(f"message nr-{index}-{sent}\n".encode())
                sent += 1
                attack.stats[kind]["sent"] += 1
                await asyncio.wait_for(writer.drain(), attack.left() + 0.1)
                await asyncio.sleep(0.1)
        except (TimeoutError, OSError):
            attack.closed_by_server(kind, started)


async def flood(attack: Attack, kind: str, port: int, line, answer, batch: int = 500) -> None:
    """Write ``line(k)`` as fast as the server takes it, ``batch`` lines a write; read what
    comes back with ``answer``."""
    async for reader, writer, started in attack.connections(kind, port, True, "127.0.61.4"):

        async def read(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            while True:
                got = await reader.readline()
                if not got:
                    return
                reply = answer(got)
                if reply:
                    writer.write(reply)
                attack.count_reply(kind, got)

        reading = asyncio.ensure_future(read(reader, writer))
        try:
            while not attack.over() and not reading.done():
                base = attack.stats[kind]["sent"]
                writer.write(b"".join(line(base + k) for k in range(batch)))
                attack.stats[kind]["sent"] += batch
                await asyncio.wait_for(writer.drain(), attack.left() + 0.1)
        except (TimeoutError, OSError):
            pass
        if reading.done():
            attack.closed_by_server(kind, started)
        reading.cancel()


def ack_forwarded(line: bytes) -> bytes | None:
    return b"ok " + line[8:] if line.startswith(b"message ") else None


async def one_at_a_time(attack: Attack, kind: str, frames, source: str = "127.0.61.5") -> None:
    """Send each frame in turn, wait for its answer (or the close), reconnect after a close."""
    turn = 0
    async for reader, writer, started in attack.connections(
        kind, attack.args.nea_port, True, source
    ):
        try:
            while not attack.over():
                writer.write(frames[turn % len(frames)])
                turn += 1
                attack.stats[kind]["sent"] += 1
                await asyncio.wait_for(writer.drain(), attack.left() + 0.1)
                got = await asyncio.wait_for(reader.readline(), min(30.0, attack.left() + 0.1))
                if not got:
                    raise ConnectionResetError
                while got.startswith((b"date ", b'{"type":"date"')):  # a push, not the answer
                    got = await asyncio.wait_for(reader.readline(), 30.0)
                attack.count_reply(kind, got)
        except (TimeoutError, OSError, asyncio.IncompleteReadError, ValueError):
            attack.closed_by_server(kind, started)
        writer.transport.abort()
        await asyncio.sleep(0.2)


async def quiet(
    attack: Attack, kind: str, port: int, tls: bool, source: str, greeting: bytes = b""
) -> None:
    """Connect (TLS handshake done, or ``greeting`` sent), then read everything the server
    sends and never send a byte more; reconnect when closed."""
    while not attack.over():
        streams = await attack.connect(kind, port, tls, source)
        if streams is None:
            continue
        reader, writer = streams
        if greeting:
            writer.write(greeting)
        await attack.until_closed(kind, reader, time.monotonic())
        writer.transport.abort()


def chat(size: int):
    """``chat`` lines of ``size`` bytes of text, numbered."""
    return lambda k: b"chat %-*d\n" % (size, k)


async def ws_ping_flood(attack: Attack) -> None:
    kind = "ws_ping_flood"
    while not attack.over():
        streams = await attack.connect(kind, attack.args.http_port, False, "127.0.61.7")
        if streams is None:
            continue
        reader, writer = streams
        started = time.monotonic()
        try:
            writer.write(WS_UPGRADE)
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 30.0)
            if b" 101 " not in head.split(b"\r\n", 1)[0]:
                attack.stats[kind]["refused " + head.split(b" ")[1].decode("ascii", "replace")] += 1
                raise ConnectionResetError

            async def read(reader: asyncio.StreamReader) -> None:
                while True:
                    got = await reader.read(1 << 16)
                    if not got:
                        return
                    attack.stats[kind]["bytes_back"] += len(got)

            reading = asyncio.ensure_future(read(reader))
            while not attack.over() and not reading.done():
                writer.write(WS_PING * 500)
                attack.stats[kind]["sent"] += 500
                await asyncio.wait_for(writer.drain(), attack.left() + 0.1)
            if reading.done() and not attack.over():
                attack.stats[kind]["closed_by_server"] += 1
                attack.held[kind].append(time.monotonic() - started)
            reading.cancel()
        except (TimeoutError, OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError):
            await asyncio.sleep(0.2)
        writer.transport.abort()


async def stdin_closed(attack: Attack) -> None:
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.buffer.read)
    attack.stopping.set()


async def main(args) -> None:
    attack = Attack(args)
    hello = client_hello()
    n = lambda count: max(1, int(count * args.scale))  # noqa: E731
    tasks = [idle(attack, "silent", b"", "127.0.61.1") for _ in range(n(1000))]
    tasks += [
        idle(attack, "half_hello", hello[: len(hello) // 2], "127.0.61.2") for _ in range(n(1000))
    ]
    tasks += [non_reader(attack, i) for i in range(n(100))]
    tasks += [
        flood(
            attack,
            "relay_flood",
            args.relay_port,
            lambda k: b"message flood-%d\n" % k,
            ack_forwarded,
        ),
        flood(
            attack,
            "line_flood",
            args.nea_port,
            lambda k: b"reverse line-flood-%d\n" % k,
            lambda _: None,
        ),
        one_at_a_time(attack, "poison", POISON),
        one_at_a_time(attack, "long_line", (LONG_LINE,), "127.0.61.6"),
        flood(attack, "chatty", args.nea_port, chat(1000), lambda _: None),
        flood(attack, "store_pressure", args.nea_port, chat(1100), lambda _: None, batch=3000),
        ws_ping_flood(attack),
    ]
    tasks += [
        quiet(attack, "chat_reader", args.nea_port, True, "127.0.61.11") for _ in range(n(10))
    ]
    tasks += [
        quiet(attack, "idle_target", args.relay_port, True, "127.0.61.9") for _ in range(n(90))
    ]
    tasks += [quiet(attack, "squatter", args.nea_port, True, "127.0.61.10") for _ in range(n(100))]
    tasks += [
        quiet(attack, "keepalive_hoarder", args.http_port, False, "127.0.61.8", HEALTHZ)
        for _ in range(n(1000))
    ]
    running = [asyncio.ensure_future(t) for t in tasks]
    watcher = asyncio.ensure_future(stdin_closed(attack))
    ready_by = time.monotonic() + 60
    while time.monotonic() < ready_by and sum(s["opened"] for s in attack.stats.values()) < len(
        tasks
    ):
        await asyncio.sleep(0.2)
    print(json.dumps({"ready": {k: v["opened"] for k, v in attack.stats.items()}}), flush=True)
    await asyncio.wait(
        [watcher, asyncio.ensure_future(asyncio.sleep(attack.left()))],
        return_when=asyncio.FIRST_COMPLETED,
    )
    attack.stopping.set()
    await asyncio.wait(running, timeout=30)
    for task in running:
        task.cancel()
    held = {
        k: {"n": len(v), "median_s": round(sorted(v)[len(v) // 2], 2), "max_s": round(max(v), 2)}
        for k, v in attack.held.items()
        if v
    }
    print(json.dumps({"result": {"stats": attack.stats, "held": held}}), flush=True)


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--relay-port", type=int, required=True)
    p.add_argument("--nea-port", type=int, required=True)
    p.add_argument("--http-port", type=int, required=True)
    p.add_argument("--ca", required=True)
    p.add_argument("--seconds", type=float, default=300.0, help="at most this long (default 300)")
    p.add_argument("--scale", type=float, default=1.0, help="fraction of the connection counts")
    asyncio.run(main(p.parse_args()))
