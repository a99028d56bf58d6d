"""Cluster scaling: one instance against two (one per core) on one Redis, behind HAProxy.

Both setups run the same way: redis-server, the nea instances (``--redis``), and
HAProxy with deploy/haproxy.cfg in front (for one instance both of its server
lines point at it). Measured through the load balancer, per setup:

- relay throughput: persistent plain-TCP connections exchanging message/ok as
  fast as they can (the driver of relay_throughput.py);
- seed-004 rate: nea-loadtest over TLS with more clients than the setup can
  take in the window, so the rate achieved is its capacity.

Printed: the figures, the CPU each process used (instances, Redis, HAProxy,
driver) and the scaling ratio two/one.

    .venv/bin/python bench/cluster.py [--seconds 10] [--clients 4000 --load-window 2]
    .venv/bin/python bench/cluster.py --relay-only --rate 2000 --rounds 3

What a crossing relay costs. With two instances in one cluster half the relays
cross (targets drawn uniformly over all connections, HAProxy splitting them
evenly), so two instances' CPU per exchange is (local + crossing) / 2. The local
relay it is taken against is measured twice:

- on one instance (``one``): the comparison the figures have always had; it also
  charges the crossing with what running two processes instead of one costs;
- on two instances apart (``apart``: the same two processes, Redis and HAProxy,
  each instance its own cluster, ``--cluster-name``, so no relay crosses): the
  same processes and the same load per instance, only the crossing differs.

With ``--rate R`` every connection sends R lines a second (its requests and its
answers), so every setup runs at the same exchange rate, below what the slowest
can do: none then batches more lines per read for being faster. Without it the
connections send as fast as they can, and a setup whose relays take longer also
reads fewer lines at a time. The paced connections send every ``--tick``
seconds (0.01: all at once, a burst every 10 ms; 0.001: nearly evenly). ``--rounds``
runs the setups in turns.

``--cluster-batch-interval`` sets the instances' option of that name (the least
time between two sendings of their messages to the others); given several
values, the two-instance cluster is measured with each, in turns within every
round, so that they are compared in one run (the setups without crossing relays
do not depend on it).

With ``--profile DIR`` every instance runs under cProfile (``profiled.py``),
counting CPU time (six processes share the cores: wall-clock time would charge
functions with waits to run), and writes its statistics to DIR/COUNT-ID.prof
(``2-bench1.prof``: the second of two); the hottest functions of the
two-instance setup are printed. Profiling slows the instances several times
over: their CPU figures are then not comparable with others.

With ``--workers`` the two are one nea-server with ``--workers 2`` (its
supervisor's and workers' CPU counted together), against one instance
``--workers 1``, both still behind HAProxy so that only the workers differ.
"""

import argparse
import os
import pstats
import shutil
import subprocess
import time
from pathlib import Path

import harness
from relay_throughput import NeaDriver, PacedDriver, Pacer, drive, spread
from twisted.internet import defer, reactor, task

from nea.cluster.batch import DEFAULT_BATCH_INTERVAL

HAPROXY_CFG = harness.ROOT / "deploy" / "haproxy.cfg"


def haproxy(servers: list[int]) -> tuple[subprocess.Popen, int]:
    """deploy/haproxy.cfg in front of ``servers`` (two server lines, as the file has)."""
    port = harness.free_port()
    env = dict(
        harness.env(),
        NEA_BIND=f"127.0.0.1:{port}",
        NEA_MAXCONN="9000",
        NEA_SERVER1=f"127.0.0.1:{servers[0]}",
        NEA_SERVER2=f"127.0.0.1:{servers[-1]}",
    )
    process = subprocess.Popen(
        [shutil.which("haproxy"), "-db", "-f", str(HAPROXY_CFG)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    harness._started.append(process)
    harness.wait_listening(port, process)
    return process, port


class Setup:
    """redis-server, ``count`` clustered instances (plain and TLS listeners) and two HAProxies."""

    def __init__(
        self,
        count: int,
        certs_dir: Path,
        limits: tuple[str, ...],
        workers: bool = False,
        profile: Path | None = None,
        apart: bool = False,
        batch_interval: float = DEFAULT_BATCH_INTERVAL,
    ) -> None:
        """``apart``: each instance its own cluster (on the same Redis); ``batch_interval``:
        their ``--cluster-batch-interval``."""
        self.redis, redis_port = harness.redis_server()
        if workers:  # one nea-server, ``count`` worker processes
            limits = (*limits, "--workers", str(count))
            count = 1
        profiles = [
            str(profile / f"{count}-bench{i}.prof") if profile else None for i in range(count)
        ]
        self.instances = [
            # deploy/haproxy.cfg sends a PROXY header first: the listeners behind it read it
            harness.Daemon(
                harness.tcp("nea+proxy"),
                harness.tls("nea+proxy", certs_dir),
                extra=(
                    "--redis",
                    f"redis://127.0.0.1:{redis_port}/0",
                    "--instance-id",
                    f"bench{i}",
                    *(("--cluster-name", f"apart{i}") if apart else ()),
                    "--cluster-batch-interval",
                    f"{batch_interval:g}",
                    *limits,
                ),
                profile=profiles[i],
                environ={"NEA_PROFILE_CLOCK": "cpu"} if profile else None,
            )
            for i in range(count)
        ]
        self.plain, self.plain_port = haproxy([d.ports[0] for d in self.instances])
        self.tls, self.tls_port = haproxy([d.ports[1] for d in self.instances])
        time.sleep(2.0)  # heartbeats: every instance sees the others before load starts

    def cpu(self) -> dict[str, float]:
        return {
            "instances": sum(tree_cpu(d.pid) for d in self.instances),
            "redis": harness.process_cpu(self.redis.pid),
            "haproxy": harness.process_cpu(self.plain.pid) + harness.process_cpu(self.tls.pid),
            "driver": harness.process_cpu(os.getpid()),
        }

    def stop(self) -> None:
        for process in (self.plain, self.tls):
            harness.stop(process)
        for daemon in self.instances:
            daemon.stop()
        harness.stop(self.redis)


def tree_cpu(pid: int) -> float:
    """CPU seconds of ``pid`` and of its live children (a supervisor's workers)."""
    children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    return harness.process_cpu(pid) + sum(harness.process_cpu(int(c)) for c in children)


def cpu_shares(before: dict[str, float], after: dict[str, float], seconds: float) -> dict:
    return {k: round(100 * (after[k] - before[k]) / seconds) for k in before}


#: The setups measured, in turn: name -> (instances, each its own cluster).
SETUPS = {"one": (1, False), "apart": (2, True), "two": (2, False)}


@defer.inlineCallbacks
def measure(name: str, args, certs_dir: Path, batch_interval: float):
    count, apart = SETUPS[name]
    setup = Setup(
        count,
        certs_dir,
        harness.limit_args(args),
        args.workers,
        args.profile,
        apart,
        batch_interval,
    )
    try:
        pacer = Pacer(args.tick) if args.rate else None
        driver, extra = (PacedDriver, (args.rate, pacer)) if pacer else (NeaDriver, ())
        before, start = setup.cpu(), time.monotonic()
        try:
            relay = yield drive(
                setup.plain_port, driver, args, lambda: setup.cpu()["instances"], *extra
            )
        finally:
            if pacer is not None:
                pacer.loop.stop()
        relay["percent_of_a_core"] = cpu_shares(before, setup.cpu(), time.monotonic() - start)
        if args.relay_only or apart:
            return {"relay": relay}
        # The driver aborted its connections; the reactor must run to close them
        # before nea-loadtest blocks this process (or they stay, relay targets that never ack).
        yield task.deferLater(reactor, 1.0, lambda: None)
        before, start = setup.cpu(), time.monotonic()
        load = yield defer.maybeDeferred(
            harness.loadtest,
            "--port",
            str(setup.tls_port),
            "--ca",
            str(certs_dir / "ca.pem"),
            "--server-name",
            "localhost",
            "--clients",
            str(args.clients),
            "--window",
            str(args.load_window),
            "--timeout",
            "60",
            "--progress",
            "30",
        )
        seed = {
            "acked": load["acked"],
            "clients": load["clients"],
            "lost": load["lost"],
            "exchanges_per_s": load["rates"]["exchanges_per_s"],
            "exchange_p50_ms": load["latency_ms"]["exchange"]["p50"],
            "zero_state": (load["zero_state"] or {}).get("zero_state"),
            "percent_of_a_core": cpu_shares(before, setup.cpu(), time.monotonic() - start),
            # TLS handshake, relay and close, all instances together: what a client costs.
            "instances_ms_per_client": round(
                1000 * (setup.cpu()["instances"] - before["instances"]) / load["clients"], 2
            ),
        }
        # The generator is its own process, which reports its own CPU.
        seed["percent_of_a_core"]["driver"] = load["generator"]["percent_of_a_core"]
        return {"relay": relay, "seed004": seed}
    finally:
        setup.stop()


@defer.inlineCallbacks
def run(args):
    """Every setup once per round, in turns, the cluster once per batch interval; the rounds'
    results per setup (`clustered` names the cluster's)."""
    certs_dir = harness.certs()
    runs = [
        (name, interval)
        for name in SETUPS
        if name != "apart" or not (args.workers or args.profile)
        for interval in (args.batch_interval if name == "two" else args.batch_interval[:1])
    ]
    results: dict[str, list[dict]] = {}
    for round_ in range(1, args.rounds + 1):
        for name, interval in runs:
            label = clustered(args, interval) if name == "two" else name
            result = yield measure(name, args, certs_dir, interval)
            relay = result["relay"]
            print(
                f"[{round_}] {label:5} {relay['exchanges_per_s']:7.0f} exchanges/s, instances "
                f"{relay['server_us_per_exchange']:.2f} us CPU per exchange; % of a core: "
                f"{relay['percent_of_a_core']}",
                flush=True,
            )
            results.setdefault(label, []).append(result)
    return results


def clustered(args, interval: float) -> str:
    """The two-instance cluster's name in the results: ``two``, or ``two@L`` (ms) when
    several batch intervals are measured."""
    return "two" if len(args.batch_interval) == 1 else f"two@{interval * 1000:g}ms"


def crossing(two: float, local: float) -> float:
    """A crossing relay's cost from two instances' (half the relays cross) and a local one's."""
    return 2 * two - local


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    harness.relay_load_options(p, "relays")
    p.add_argument("--clients", type=int, default=4000, help="seed-004 clients")
    p.add_argument(
        "--load-window",
        dest="load_window",
        type=float,
        default=2.0,
        help="seconds over which the seed-004 clients start",
    )
    p.add_argument(
        "--relay-only", action="store_true", help="the relay throughput only, no seed-004 run"
    )
    p.add_argument(
        "--workers",
        action="store_true",
        help="two as one nea-server --workers 2 instead of two instances",
    )
    p.add_argument(
        "--profile",
        type=Path,
        help="run the instances under cProfile, their statistics written in this directory",
    )
    p.add_argument(
        "--rate",
        type=float,
        default=0.0,
        help="lines a second each connection sends (0: as fast as it can)",
    )
    p.add_argument(
        "--tick", type=float, default=0.01, help="seconds between a paced connection's sends"
    )
    p.add_argument(
        "--cluster-batch-interval",
        dest="batch_interval",
        type=float,
        nargs="+",
        default=[DEFAULT_BATCH_INTERVAL],
        help="the instances' --cluster-batch-interval (several: the cluster measured with each)",
    )
    p.add_argument("--rounds", type=int, default=1, help="every setup once per round")
    args = p.parse_args()
    if args.profile:
        args.profile.mkdir(parents=True, exist_ok=True)
    seed = (
        "no seed-004"
        if args.relay_only
        else f"seed-004 {args.clients} TLS clients over {args.load_window} s"
    )
    harness.header(
        f"cluster: 1 vs 2 {'workers' if args.workers else 'instances'} behind HAProxy on one "
        f"Redis; relay {args.connections}x{args.window} for {args.seconds} s, {pace(args)}; "
        f"{seed}; {args.rounds} round(s); limits: {harness.limits_text(args)}; {intervals(args)}"
    )
    results = harness.run_reactor(lambda: run(args))
    cost = {
        name: [r["relay"]["server_us_per_exchange"] for r in rounds]
        for name, rounds in results.items()
    }
    for label in [clustered(args, interval) for interval in args.batch_interval]:
        summarize(args, cost, label)
    if args.profile:
        two = [str(args.profile / f"2-bench{i}.prof") for i in range(2)]
        pstats.Stats(*two).sort_stats("tottime").print_stats(30)
    if args.relay_only:
        return
    last = {1: results["one"][-1], 2: results[clustered(args, args.batch_interval[-1])][-1]}
    for count, r in last.items():
        relay, seed = r["relay"], r["seed004"]
        print(
            f"{count} instance(s): relay {relay['exchanges_per_s']:8.0f} exchanges/s "
            f"(instances {relay['server_us_per_exchange']:.1f} us CPU per exchange, "
            f"{relay['server_percent_of_a_core']:.0f}% of a core; over the run with "
            f"warm-up, % of a core: {relay['percent_of_a_core']}); seed-004 "
            f"{seed['exchanges_per_s']} exchanges/s, {seed['acked']}/{seed['clients']} acked, "
            f"p50 {seed['exchange_p50_ms']} ms, zero state {seed['zero_state']}, "
            f"instances {seed['instances_ms_per_client']} ms CPU per client "
            f"(% of a core {seed['percent_of_a_core']})"
        )
    ratio = {
        kind: last[2][kind]["exchanges_per_s"] / last[1][kind]["exchanges_per_s"]
        for kind in ("relay", "seed004")
    }
    print(
        f"scaling two/one: relay {ratio['relay']:.2f}, seed-004 {ratio['seed004']:.2f}", flush=True
    )


def summarize(args, cost: dict[str, list[float]], label: str) -> None:
    """Each round's crossing relay in the cluster ``label``, and their spread."""
    for round_ in range(args.rounds):
        one, two = cost["one"][round_], cost[label][round_]
        line = (
            f"[{round_ + 1}] relay: local {one:.2f} us on one instance; {label} in one cluster "
            f"{two:.2f}: a crossing relay {crossing(two, one):.2f} us, "
            f"{crossing(two, one) / one:.2f}x a local one on one instance"
        )
        if "apart" in cost:
            apart = cost["apart"][round_]
            line += (
                f"; local {apart:.2f} us on two apart: a crossing relay "
                f"{crossing(two, apart) / apart:.2f}x a local one on two instances"
            )
        print(line, flush=True)
    against = {
        name: [crossing(t, o) / o for t, o in zip(cost[label], cost[name], strict=True)]
        for name in ("one", "apart")
        if name in cost
    }
    print(
        f"{label}: crossing / local over {args.rounds} round(s): "
        + "; ".join(f"against {name} {spread(v)}" for name, v in against.items())
        + f" ({pace(args)}; limits: {harness.limits_text(args)}; {intervals(args)})",
        flush=True,
    )


def pace(args) -> str:
    if not args.rate:
        return "as fast as they can"
    return f"{args.rate:g} lines/s per connection, sent every {args.tick * 1000:g} ms"


def intervals(args) -> str:
    return "cluster-batch-interval " + ", ".join(f"{v * 1000:g} ms" for v in args.batch_interval)


if __name__ == "__main__":
    main()
