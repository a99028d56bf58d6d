"""seed-004 TLS above the server's handshake capacity, short client timeout, per
``--max-handshakes``.

For each gate value a fresh daemon (``--max-handshakes G``; a TLS ``relay``
listener for the load, a plain-TCP ``nea`` listener for status) and one
nea-loadtest run with a 10 s client timeout. What it prints is what the choice
of the default turns on: whether every client is acked, goodput (acked clients
a second) over time, not only overall, retries, exchange p50/p99, the
handshake figures the server saw, the kernel's listen-queue drops, and both
sides' CPU (so a figure can be blamed on the right process).

    .venv/bin/python bench/handshake_gate.py                       # gates 0 16 64 256
    .venv/bin/python bench/handshake_gate.py --gates 0 64 --clients 12000 --window 12
"""

import argparse
import json
import time
from pathlib import Path

import harness


def listen_drops() -> int:
    """The kernel's count of connections dropped on a full listen queue (TcpExt ListenDrops)."""
    lines = [
        line.split()
        for line in Path("/proc/net/netstat").read_text().splitlines()
        if line.startswith("TcpExt:")
    ]
    return int(dict(zip(lines[0], lines[1], strict=True))["ListenDrops"])


def case(gate: int, args, certs_dir: Path) -> dict:
    listens = (harness.tls("relay", certs_dir), harness.tcp("nea"))
    with harness.Daemon(*listens, extra=("--max-handshakes", str(gate))) as daemon:
        relay, nea = daemon.ports
        drops = listen_drops()
        sampler = harness.Sampler(lambda: harness.status(nea)["handshakes"])
        run = harness.tls_load(relay, certs_dir, args, daemon.pid)
        report = run.finish(args.window + args.limit)
        samples = sampler.stop()
        state = settled(nea)
        result = {
            "gate": gate,
            "completed": report is not None,
            "report": report,
            "goodput": harness.goodput(run.progress),
            "last_progress": run.progress[-1] if run.progress else None,
            "handshakes": state["handshakes"],
            "peak_in_progress": max((s["in_progress"] for _, s in samples), default=None),
            "peak_waiting": max((s["waiting"] for _, s in samples), default=None),
            "zero_state": harness.zero_state(state),
            "listen_drops": listen_drops() - drops,
            "server_rss_mb": round(daemon.rss() / 2**20, 1),
        }
    return result


def settled(port: int, seconds: float = 15.0) -> dict:
    """The status once zero state shows, or the last one after ``seconds``."""
    deadline = time.monotonic() + seconds
    while True:
        state = harness.status(port)
        if harness.zero_state(state) or time.monotonic() > deadline:
            return state
        time.sleep(0.5)


def show(r: dict) -> str:
    hs, rep = r["handshakes"], r["report"]
    head = f"gate {r['gate']:>4}: "
    if rep is None:
        p = r["last_progress"] or {}
        head += (
            f"DID NOT COMPLETE in the time limit: at {p.get('t')} s acked "
            f"{p.get('acked')}, failed {p.get('failed')}, retries {p.get('retries')}"
        )
    else:
        ex = rep["latency_ms"]["exchange"]
        head += (
            f"acked {rep['acked']}/{rep['clients']} lost {rep['lost']} "
            f"retries {rep['retries']} (clients retried {rep['retried_clients']}); "
            f"exchange p50 {ex['p50']} p99 {ex['p99']} ms; "
            f"{rep['rates']['exchanges_per_s']} acked/s over {rep['duration_s']} s\n"
            f"       server {rep['server']['percent_of_a_core']}% of a core "
            f"({rep['server']['cpu_us_per_client']} us/client), generator "
            f"{rep['generator']['percent_of_a_core']}% "
            f"({rep['generator']['cpu_us_per_client']} us/client); CPU limit {rep['limit']}"
        )
    return (
        head + f"\n       handshakes completed {hs['completed']} timed_out {hs['timed_out']} "
        f"failed {hs['failed']}; peak in progress {r['peak_in_progress']}, waiting "
        f"{r['peak_waiting']}; listen-queue drops {r['listen_drops']}; zero state "
        f"{r['zero_state']}; RSS {r['server_rss_mb']} MB\n"
        f"       goodput (acked/s per 5 s, at t): " + " ".join(f"{t}:{v}" for t, v in r["goodput"])
    )


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--gates", type=int, nargs="+", default=[0, 16, 64, 256])
    p.add_argument("--clients", type=int, default=20_000)
    p.add_argument("--window", type=float, default=20.0)
    p.add_argument("--timeout", type=float, default=10.0, help="client timeout (default 10)")
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--max-active", type=int, default=18_000)
    p.add_argument(
        "--limit",
        type=float,
        default=120.0,
        help="seconds past the window a run may take before it is stopped",
    )
    p.add_argument("--json", help="also write every result here")
    args = p.parse_args()
    harness.header(
        f"handshake_gate: {args.clients} TLS clients over {args.window} s, "
        f"timeout {args.timeout} s, gates {args.gates}"
    )
    certs_dir = harness.certs()
    results = []
    for gate in args.gates:
        results.append(case(gate, args, certs_dir))
        print(show(results[-1]), flush=True)
    if args.json:
        Path(args.json).write_text(
            json.dumps({"machine": harness.machine(), "results": results}, indent=2)
        )


if __name__ == "__main__":
    main()
