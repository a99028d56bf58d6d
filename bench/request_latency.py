"""Latency of ``POST /clients/{name}/requests``: one at a time, local and across instances.

Two instances share a redis-server. A device (a raw TCP client, ``register dev``,
answering every request at once) is connected to instance B. The driver posts
N requests one after the other over one persistent HTTP connection, first to B
(the device is local), then to A (the request crosses Redis to B and the reply
comes back), and reports p50 and p99 of the whole HTTP round trip.

    .venv/bin/python bench/request_latency.py [--requests 1000] [--cluster-batch-interval S]
"""

import argparse
import http.client
import json
import socket
import statistics
import threading
import time

import harness

from nea.cluster.batch import DEFAULT_BATCH_INTERVAL

TOKEN = "bench-token"


def device(port: int, ready: threading.Event, stop: threading.Event) -> None:
    """Registers as ``dev`` and answers ``request ID TEXT`` with ``reply ID TEXT``."""
    with socket.create_connection(("127.0.0.1", port)) as sock:
        sock.sendall(b"register dev\n")
        sock.settimeout(0.2)
        tail = b""
        while not stop.is_set():
            try:
                data = sock.recv(65536)
            except TimeoutError:
                continue
            if not data:
                return
            *lines, tail = (tail + data).split(b"\n")
            out = []
            for line in lines:
                if line.startswith(b"registered "):
                    ready.set()
                elif line.startswith(b"request "):
                    rid, _, body = line[8:].partition(b" ")
                    out.append(b"reply %s %s\n" % (rid, body))
            if out:
                sock.sendall(b"".join(out))


def post_many(http_port: int, count: int) -> list[float]:
    connection = http.client.HTTPConnection("127.0.0.1", http_port, timeout=30)
    headers = {"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"}
    seconds = []
    for n in range(count):
        body = json.dumps({"body": f"ping {n}", "timeout": 10})
        started = time.perf_counter()
        connection.request("POST", "/clients/dev/requests", body, headers)
        answer = connection.getresponse()
        data = answer.read()
        seconds.append(time.perf_counter() - started)
        if answer.status != 200:
            raise RuntimeError(f"HTTP {answer.status}: {data[:200]!r}")
    connection.close()
    return seconds


def summary(seconds: list[float]) -> str:
    mean = statistics.fmean(seconds) * 1e3
    return f"{harness.ms_percentiles(seconds, 50, 99)}, mean {mean:.2f} ms"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--requests", type=int, default=1000)
    p.add_argument(
        "--cluster-batch-interval",
        dest="batch_interval",
        type=float,
        default=DEFAULT_BATCH_INTERVAL,
        help="the instances' --cluster-batch-interval",
    )
    args = p.parse_args()
    harness.header(
        f"request_latency: {args.requests} sequential POST /clients/dev/requests; "
        f"cluster-batch-interval {args.batch_interval * 1000:g} ms"
    )
    redis, redis_port = harness.redis_server()
    daemons = []
    try:
        http_ports = {}
        for name in ("a", "b"):
            http_ports[name] = harness.free_port()
            daemons.append(
                harness.Daemon(
                    harness.tcp("nea"),
                    extra=(
                        "--instance-id",
                        name,
                        "--redis",
                        f"redis://127.0.0.1:{redis_port}/0",
                        "--heartbeat",
                        "0.5",
                        "--cluster-batch-interval",
                        f"{args.batch_interval:g}",
                        "--admin-token",
                        TOKEN,
                        "--http",
                        f"tcp:{http_ports[name]}:interface=127.0.0.1",
                    ),
                )
            )
        ready, stop = threading.Event(), threading.Event()
        answering = threading.Thread(target=device, args=(daemons[1].ports[0], ready, stop))
        answering.start()
        try:
            if not ready.wait(10):
                raise RuntimeError("the device was not registered")
            time.sleep(2)  # A learns of the name through Redis within a heartbeat or two
            post_many(http_ports["b"], 50)  # warm-up
            for label, name in (
                ("local (device on this instance)", "b"),
                ("across instances (device on the other)", "a"),
            ):
                print(f"{label}: {summary(post_many(http_ports[name], args.requests))}", flush=True)
        finally:
            stop.set()
            answering.join()
    finally:
        for daemon in daemons:
            daemon.stop()
        harness.stop(redis)


if __name__ == "__main__":
    main()
