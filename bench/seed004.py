"""seed-004 at scale: N clients over a window, TCP and TLS, ok-delays 0 and uniform 0..1 s.

Each case gets a fresh daemon (a relay listener for the load, a nea listener for
the status check) and one nea-loadtest run; prints what the targets ask about:
acked, zero state, exchange latency, server CPU (share of a core, per client)
and the generator's own CPU, so a miss can be blamed on the right side.

    .venv/bin/python bench/seed004.py                      # 100,000 clients over 60 s
    .venv/bin/python bench/seed004.py --clients 5000 --window 5 --only tcp
"""

import argparse
import json

import harness

DELAYS = ("0", "uniform:0,1")


TIMEOUTS = {"tcp": 10.0, "tls": 60.0}


def case(transport: str, delay: str, args, certs_dir) -> dict:
    if transport == "tls":
        listens = (harness.tls("relay", certs_dir), harness.tls("nea", certs_dir))
        security = ["--ca", str(certs_dir / "ca.pem"), "--server-name", "localhost"]
    else:
        listens = (harness.tcp("relay"), harness.tcp("nea"))
        security = ["--plain"]
    with harness.Daemon(*listens) as daemon:
        relay, nea = daemon.ports
        report = harness.loadtest(
            "--port",
            str(relay),
            "--status-port",
            str(nea),
            *security,
            "--clients",
            str(args.clients),
            "--window",
            str(args.window),
            "--ok-delay",
            delay,
            "--workers",
            str(args.workers),
            "--timeout",
            str(args.timeout or TIMEOUTS[transport]),
            "--max-active",
            str(args.max_active),
            "--server-pid",
            str(daemon.pid),
            "--progress",
            "10",
        )
        report["server_rss_mb"] = round(daemon.rss() / 2**20, 1)
    return report


def line(transport: str, delay: str, r: dict) -> str:
    zs = r["zero_state"]["zero_state"] if r["zero_state"] else None
    cpu = harness.load_cpu(
        r, f", RSS {r['server_rss_mb']} MB", f", {r['config']['workers']} workers"
    )
    return (
        f"{transport:4} ok-delay {delay:12} {harness.load_counts(r)} zero_state {zs}\n"
        f"     {harness.load_latency(r)}; {r['rates']['exchanges_per_s']} exchanges/s\n"
        f"     {r['duration_s']} s from first start to last ack; CPU limit: {r['limit']}\n"
        f"     {cpu}"
    )


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--clients", type=int, default=100_000)
    p.add_argument("--window", type=float, default=60.0)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument(
        "--timeout",
        type=float,
        help="seconds a client waits for its ok "
        "(default 10 for TCP, 60 for TLS: shorter than the handshake queue under "
        "overload, a TLS timeout makes clients retry into a collapse)",
    )
    p.add_argument(
        "--max-active",
        type=int,
        default=18_000,
        help="clients at once (below the daemon's --max-clients 19,000, so that an "
        "overloaded server is queued for, not refused)",
    )
    p.add_argument("--only", choices=("tcp", "tls"))
    p.add_argument("--delays", nargs="+", default=list(DELAYS))
    p.add_argument("--json", help="also write every report here")
    args = p.parse_args()
    harness.header(f"seed004: {args.clients} clients over {args.window} s")
    certs_dir = harness.certs()
    reports = {}
    for transport in ("tcp", "tls"):
        if args.only and transport != args.only:
            continue
        for delay in args.delays:
            report = case(transport, delay, args, certs_dir)
            reports[f"{transport} {delay}"] = report
            print(line(transport, delay, report), flush=True)
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"machine": harness.machine(), "reports": reports}, f, indent=2)


if __name__ == "__main__":
    main()
