"""Server memory per idle connection: RSS with N idle clients minus RSS with none.

One fresh daemon per transport (a ``nea``-profile listener, the default); the
clients are held by a `holders.py` child, TLS handshakes completed.

    .venv/bin/python bench/idle_memory.py [--connections 10000]
"""

import argparse
import time

import harness


def measure(transport: str, connections: int, certs_dir) -> dict:
    listen = harness.tls("nea", certs_dir) if transport == "tls" else harness.tcp("nea")
    with harness.Daemon(listen, max_clients=connections + 10) as daemon:
        time.sleep(1.0)  # let start-up allocations settle
        before = daemon.rss()
        holders = harness.Holders(
            daemon.ports[0],
            connections,
            "hold",
            ca=certs_dir / "ca.pem" if transport == "tls" else None,
        )
        held = holders.ready()
        time.sleep(2.0)
        after = daemon.rss()
        holders.finish()
    return {
        "transport": transport,
        "connections": held,
        "rss_before_mb": before / 2**20,
        "rss_after_mb": after / 2**20,
        "per_connection_kb": (after - before) / held / 1024,
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--connections", type=int, default=10_000)
    args = p.parse_args()
    harness.header(f"idle_memory: {args.connections} idle connections")
    certs_dir = harness.certs()
    for transport in ("tcp", "tls"):
        r = measure(transport, args.connections, certs_dir)
        print(
            f"{transport:4} {r['connections']} connections: RSS {r['rss_before_mb']:.1f} -> "
            f"{r['rss_after_mb']:.1f} MB, {r['per_connection_kb']:.2f} KB per connection",
            flush=True,
        )


if __name__ == "__main__":
    main()
