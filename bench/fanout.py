"""Date fan-out: from a tick until the last of N clients has the line, TCP and TLS.

A fresh daemon per transport ticks every ``--interval`` seconds; N clients are
held by ``--receivers`` `holders.py` children that timestamp every date line. A
tick's fan-out time is its last arrival minus its first (the first client has
the line within a fraction of a millisecond of the tick on loopback). Only ticks
that reached all N clients count. Meanwhile a probe connection sends a line
every 10 ms and times the reply, to show how long other traffic stalls while the
server writes the broadcast.

    .venv/bin/python bench/fanout.py [--clients 10000] [--ticks 5]
"""

import argparse
import time

import harness


def measure(transport: str, args, certs_dir) -> dict:
    listen = harness.tls("nea", certs_dir) if transport == "tls" else harness.tcp("nea")
    ca = certs_dir / "ca.pem" if transport == "tls" else None
    extra = ("--date-interval", str(args.interval))
    with harness.Daemon(listen, max_clients=args.clients + 10, extra=extra) as daemon:
        port = daemon.ports[0]
        share = args.clients // args.receivers
        receivers = [
            harness.Holders(port, share, "dates", ca=ca, source=f"127.0.{60 + i}.1")
            for i in range(args.receivers)
        ]
        held = sum(r.ready() for r in receivers)
        probe = harness.Holders(port, 1, "probe", ca=ca, source="127.0.70.1")
        probe.ready()
        time.sleep(args.interval * args.ticks)
        samples = probe.finish()["probe"]
        arrivals = [a for r in receivers for a in r.finish()["dates"]]
    complete = [g for g in harness.ticks(arrivals, args.interval / 2) if len(g) == held]
    spreads = [(g[-1] - g[0]) * 1000 for g in complete]
    window = [(g[0], g[-1]) for g in complete]
    during = [
        rtt
        for sent, rtt in samples
        if rtt is not None and any(a - 0.05 <= sent <= b for a, b in window)
    ]
    rtts = [rtt for _, rtt in samples if rtt is not None]
    return {
        "transport": transport,
        "clients": held,
        "complete_ticks": len(complete),
        "fanout_ms": sorted(spreads),
        "probe_max_ms_during_fanout": max(during) * 1000 if during else None,
        "probe_max_ms": max(rtts) * 1000 if rtts else None,
        "probe_unanswered": sum(1 for _, rtt in samples if rtt is None),
        "probe_samples": len(samples),
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--clients", type=int, default=10_000)
    p.add_argument("--receivers", type=int, default=2, help="receiving processes")
    p.add_argument("--interval", type=float, default=2.0, help="seconds between date ticks")
    p.add_argument("--ticks", type=int, default=5, help="ticks to observe once all are connected")
    args = p.parse_args()
    harness.header(f"fanout: date line to {args.clients} clients")
    certs_dir = harness.certs()
    for transport in ("tcp", "tls"):
        r = measure(transport, args, certs_dir)
        spreads = ", ".join(f"{s:.0f}" for s in r["fanout_ms"])
        print(
            f"{transport:4} {r['clients']} clients, {r['complete_ticks']} complete ticks: "
            f"last line {spreads} ms after the first; probe round trip max "
            f"{r['probe_max_ms_during_fanout']:.0f} ms during fan-outs, "
            f"{r['probe_max_ms']:.0f} ms overall ({r['probe_samples']} probes, "
            f"{r['probe_unanswered']} unanswered)",
            flush=True,
        )


if __name__ == "__main__":
    main()
