"""Concurrent TLS clients: 100,000 held on one machine by a cluster of nea instances.

A process may have 20,000 open files here, so one process holds at most 17,000
connections: ``--instances`` nea instances share one redis-server (the cluster,
``--redis``), each with ``--max-clients`` set to the clients it must hold, and
``--holders`` `holders.py` children hold the TLS clients, each from its own
source address (127.1.X.Y, so that ephemeral ports do not run out) and to one
instance (holder i to instance i mod N). The holders connect at once, each
one client after the other (handshake done before the next connect), which
paces the connect phase so that no handshake waits out --handshake-timeout.

Once every client is connected (and 2 s more, for the date lines that queued
up meanwhile to be read), the measured period lasts ``--ticks`` date
intervals; the holders stay one interval longer, so that a tick begun in the
period reaches everyone. Each instance ticks on its own clock; its ticks are its
connections' arrival times grouped (a silence of half an interval separates
two), and the ticks measured are those whose first arrival falls in the period.
Reported:

- every tick, every connection: how many connections missed a measured tick of
  their instance (must be 0) or had one twice, and how many ticks reached nobody
  (two measured ticks of an instance more than an interval apart);
- memory per connection: the sum over instances of (RSS held - RSS before any
  client) over the clients, from /proc VmRSS; the holders' RSS less that of an
  empty holder (one with no connection) over their connections, separately, as
  the generator's;
- a tick's time to the last client, per instance and tick (last arrival minus
  first): p50 and max over ticks, and the max over instances;
- CPU per tick: the instances' utime+stime over the period divided by the
  ticks (idle time between ticks included: heartbeats, Redis), in total and per
  1,000 clients, beside what the instances use in an interval with no client
  (read over an interval, 2 s at least, before the clients connect), and Redis's
  CPU over the period (/proc counts CPU in 10 ms steps: small runs read coarse);
- the connect phase: its length, the instances' CPU per TLS handshake (ticks
  meanwhile included) and the holders' per connection;
- the machine and its load average, at the start and at the end.

    .venv/bin/python bench/concurrent_clients.py [--clients 100000] [--instances 6] [--holders N]
        [--interval 10] [--ticks 3] [--json PATH]
"""

import argparse
import bisect
import itertools
import json
import math
import resource
import time
from pathlib import Path

import harness

#: Connections one process is given at most: under the 20,000 open files a process may have.
PER_PROCESS = 17_000
#: Open files a process needs beside its connections (interpreter, logs, Redis, listeners).
SPARE_FILES = 1_000
#: Seconds after the last client is connected before the measured period starts.
SETTLE = 2.0
#: Seconds (at least; one interval if longer) over which the instances' CPU is read with
#: no client, for comparison: /proc counts in 10 ms steps.
IDLE = 2.0
#: Seconds one holder may take per connection before it counts as stuck (bounds the wait).
CONNECT_SECONDS_PER_CLIENT = 0.05


def shares(total: int, parts: int) -> list[int]:
    """``total`` split into ``parts`` counts that differ by one at most."""
    return [total // parts + (1 if i < total % parts else 0) for i in range(parts)]


def plan(args) -> tuple[list[int], list[int]]:
    """Connections per holder and per instance (holder i on instance i mod --instances)."""
    holders = args.holders or max(args.instances, math.ceil(args.clients / PER_PROCESS))
    if holders < args.instances:
        raise SystemExit(
            f"--holders {holders}: every instance needs a holder "
            f"(at least --instances {args.instances})"
        )
    per_holder = shares(args.clients, holders)
    per_instance = [sum(per_holder[i :: args.instances]) for i in range(args.instances)]
    limit = resource.getrlimit(resource.RLIMIT_NOFILE)[0] - SPARE_FILES
    for kind, counts, option in (
        ("holder", per_holder, "--holders"),
        ("instance", per_instance, "--instances"),
    ):
        if max(counts) > limit:
            raise SystemExit(
                f"{max(counts)} connections on one {kind}: more than {limit} (a "
                f"process's open-files limit less {SPARE_FILES}); raise {option}"
            )
    return per_holder, per_instance


def source(i: int) -> str:
    """Holder ``i``'s own loopback source address."""
    return f"127.1.{i // 250}.{1 + i % 250}"


def tick_check(connections: list[list[float]], start: float, end: float, interval: float) -> dict:
    """One instance's measured ticks (first arrival in [start, end)), who missed any, and
    the ticks that reached nobody (two measured ticks more than an interval apart)."""
    measured = [g for g in harness.ticks(connections, interval / 2) if start <= g[0] < end]
    firsts = [g[0] for g in measured]
    lasts = [g[-1] for g in measured]
    missed = twice = 0
    for arrivals in connections:
        got = [0] * len(measured)
        for t in arrivals:
            i = bisect.bisect_right(firsts, t) - 1
            if i >= 0 and t <= lasts[i]:
                got[i] += 1
        missed += any(n == 0 for n in got)
        twice += any(n > 1 for n in got)
    lost = sum(round((b - a) / interval) - 1 for a, b in itertools.pairwise(firsts))
    spreads = [(g[-1] - g[0]) * 1000 for g in measured]
    return {
        "ticks": len(measured),
        "missed": missed,
        "twice": twice,
        "lost": lost,
        "spreads_ms": spreads,
    }


def cpu(pids: list[int]) -> float:
    return sum(harness.process_cpu(pid) for pid in pids)


def measure(args, per_holder: list[int], per_instance: list[int]) -> dict:
    certs_dir = harness.certs()
    redis, redis_port = harness.redis_server()
    daemons, holders = [], []
    try:
        for k, clients in enumerate(per_instance):
            daemons.append(
                harness.Daemon(
                    harness.tls("nea", certs_dir),
                    max_clients=clients,
                    extra=(
                        "--redis",
                        f"redis://127.0.0.1:{redis_port}/0",
                        "--instance-id",
                        f"concurrent{k}",
                        "--date-interval",
                        str(args.interval),
                    ),
                )
            )
        servers = [d.pid for d in daemons]
        time.sleep(2.0)  # heartbeats: every member sees the others; start-up allocations settle
        rss_before = [d.rss() for d in daemons]
        idle_start, idle_cpu = time.monotonic(), cpu(servers)
        empty = harness.Holders(
            daemons[0].ports[0], 0, "hold", ca=certs_dir / "ca.pem", source=source(len(per_holder))
        )
        empty.ready()
        generator_base = harness.process_rss(empty.process.pid)  # a holder with no connection
        empty.finish()
        time.sleep(max(0.0, max(IDLE, args.interval) - (time.monotonic() - idle_start)))
        idle = (cpu(servers) - idle_cpu) / (time.monotonic() - idle_start)

        cpu_before, connect_start = cpu(servers), time.monotonic()
        for i, connections in enumerate(per_holder):
            port = daemons[i % len(daemons)].ports[0]
            holders.append(
                harness.Holders(
                    port, connections, "dates", ca=certs_dir / "ca.pem", source=source(i)
                )
            )
        held = 0
        for i, (holder, connections) in enumerate(zip(holders, per_holder, strict=True)):
            try:
                held += holder.ready(timeout=60 + connections * CONNECT_SECONDS_PER_CLIENT)
            except ValueError:  # it printed nothing: it failed
                raise RuntimeError(
                    f"holder {i} failed (exit code {holder.process.poll()})"
                ) from None
        connect = {
            "seconds": time.monotonic() - connect_start,
            "server_ms_per_handshake": 1000 * (cpu(servers) - cpu_before) / held,
            "generator_ms_per_connection": 1000 * cpu([h.process.pid for h in holders]) / held,
        }

        time.sleep(SETTLE)
        start, cpu_start, redis_start = time.time(), cpu(servers), harness.process_cpu(redis.pid)
        time.sleep(args.ticks * args.interval)
        end, cpu_end, redis_end = time.time(), cpu(servers), harness.process_cpu(redis.pid)
        rss_held = [d.rss() for d in daemons]
        generator_rss = sum(harness.process_rss(h.process.pid) for h in holders)
        time.sleep(args.interval)  # a tick begun in the period reaches everyone
        dates = [holder.finish()["dates"] for holder in holders]
    finally:
        for holder in holders:
            harness.stop(holder.process)
        for daemon in daemons:
            daemon.stop()
        harness.stop(redis)

    instances = []
    for k in range(len(daemons)):
        connections = [
            arrivals for i in range(k, len(dates), len(daemons)) for arrivals in dates[i]
        ]
        check = tick_check(connections, start, end, args.interval)
        instances.append(
            {
                "clients": len(connections),
                "rss_before": rss_before[k],
                "rss_held": rss_held[k],
                **check,
            }
        )
    period = {
        "seconds": end - start,
        "server_cpu": cpu_end - cpu_start,
        "redis_cpu": redis_end - redis_start,
        "server_idle_cpu_per_s": idle,
    }
    return {
        "held": held,
        "connect": connect,
        "period": period,
        "instances": instances,
        "generator_rss": generator_rss - len(holders) * generator_base,
    }


def summary(args, r: dict) -> dict:
    held, instances = r["held"], r["instances"]
    spreads = [s for i in instances for s in i["spreads_ms"]]
    per_tick = r["period"]["server_cpu"] / args.ticks
    return {
        "clients": held,
        "instances": len(instances),
        "holders": args.holders,
        "interval_s": args.interval,
        "ticks": args.ticks,
        "ticks_measured": [i["ticks"] for i in instances],
        "connections_missing_a_tick": sum(i["missed"] for i in instances),
        "connections_with_a_tick_twice": sum(i["twice"] for i in instances),
        "complete": (
            all(i["ticks"] == args.ticks for i in instances)
            and not any(i["missed"] or i["lost"] for i in instances)
        ),
        "ticks_that_reached_nobody": sum(i["lost"] for i in instances),
        "tick_to_last_client_ms": [
            {"p50": harness.percentile(i["spreads_ms"], 50), "max": max(i["spreads_ms"])}
            if i["spreads_ms"]
            else None
            for i in instances
        ],
        "tick_to_last_client_max_ms": max(spreads) if spreads else None,
        "server_kb_per_connection": sum(i["rss_held"] - i["rss_before"] for i in instances)
        / held
        / 1024,
        "generator_kb_per_connection": r["generator_rss"] / held / 1024,
        "rss_mb": [
            {"before": i["rss_before"] / 2**20, "held": i["rss_held"] / 2**20} for i in instances
        ],
        "server_ms_per_tick": 1000 * per_tick,
        "server_ms_per_tick_per_1000_clients": 1000 * per_tick / (held / 1000),
        "server_idle_ms_per_interval": 1000 * r["period"]["server_idle_cpu_per_s"] * args.interval,
        "redis_ms_per_tick": 1000 * r["period"]["redis_cpu"] / args.ticks,
        "period_s": r["period"]["seconds"],
        "connect_s": r["connect"]["seconds"],
        "connects_per_s": held / r["connect"]["seconds"],
        "server_ms_per_handshake": r["connect"]["server_ms_per_handshake"],
        "generator_ms_per_connection": r["connect"]["generator_ms_per_connection"],
        "machine_at_end": harness.machine(),
    }


def report(s: dict) -> None:
    print(
        f"connect: {s['clients']:,} clients in {s['connect_s']:.1f} s "
        f"({s['connects_per_s']:.0f}/s); instances {s['server_ms_per_handshake']:.2f} ms CPU "
        f"per TLS handshake, generator {s['generator_ms_per_connection']:.2f} ms per connection"
    )
    for k, (spread, rss) in enumerate(zip(s["tick_to_last_client_ms"], s["rss_mb"], strict=True)):
        last = f"{spread['p50']:.0f} / {spread['max']:.0f} ms" if spread else "-"
        print(
            f"instance {k}: {s['ticks_measured'][k]} ticks, last client {last} after the "
            f"first (p50 / max), RSS {rss['before']:.1f} -> {rss['held']:.1f} MB"
        )
    print(
        f"ticks: {s['connections_missing_a_tick']} of {s['clients']:,} connections missed a "
        f"tick, {s['connections_with_a_tick_twice']} had one twice, "
        f"{s['ticks_that_reached_nobody']} ticks reached nobody (ticks measured per "
        f"instance: {', '.join(map(str, s['ticks_measured']))}, {s['ticks']} expected; a date "
        f"every {s['interval_s']:g} s): "
        f"{'every client had every tick' if s['complete'] else 'INCOMPLETE'}"
    )
    worst = s["tick_to_last_client_max_ms"]
    print(
        f"tick to the last client: max over instances {worst:.0f} ms"
        if worst is not None
        else "tick to the last client: no tick measured"
    )
    print(
        f"memory: server {s['server_kb_per_connection']:.2f} KB per connection (RSS held - "
        f"before, all instances); generator {s['generator_kb_per_connection']:.2f} KB per "
        f"connection (holders' RSS less an empty holder's each)"
    )
    print(
        f"CPU per tick: instances {s['server_ms_per_tick']:.1f} ms in total, "
        f"{s['server_ms_per_tick_per_1000_clients']:.2f} ms per 1,000 clients (with no client "
        f"they use {s['server_idle_ms_per_interval']:.1f} ms an interval); Redis "
        f"{s['redis_ms_per_tick']:.1f} ms (over {s['period_s']:.1f} s)"
    )
    print(f"load average at the end: {s['machine_at_end']['load_average']}", flush=True)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--clients", type=int, default=100_000)
    p.add_argument("--instances", type=int, default=6, help="nea instances on one Redis")
    p.add_argument(
        "--holders",
        type=int,
        default=0,
        help=f"holder processes (default: enough that each holds <= {PER_PROCESS:,}, "
        f"and one an instance at least)",
    )
    p.add_argument("--interval", type=float, default=10.0, help="seconds between date ticks")
    p.add_argument("--ticks", type=int, default=3, help="ticks measured once all are connected")
    p.add_argument("--json", metavar="PATH", help="also write the figures here")
    args = p.parse_args()
    if min(args.clients, args.instances, args.ticks) < 1 or args.interval <= 0:
        p.error("--clients, --instances, --ticks and --interval must be positive")
    per_holder, per_instance = plan(args)
    args.holders = len(per_holder)
    at_start = harness.machine()
    harness.header(
        f"concurrent: {args.clients:,} TLS clients on {args.instances} instances "
        f"(one Redis), {args.holders} holders, a date every {args.interval:g} s, "
        f"{args.ticks} ticks measured"
    )
    s = summary(args, measure(args, per_holder, per_instance))
    report(s)
    if args.json:
        Path(args.json).write_text(json.dumps({"machine": at_start, **s}, indent=1))


if __name__ == "__main__":
    main()
