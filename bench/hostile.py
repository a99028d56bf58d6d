"""A well-behaved seed-004 TLS load alone, then the same load with hostile clients side by side.

One daemon for both runs (a TLS ``relay`` listener for the load, the silent
sockets, half-sent ClientHellos, non-readers, the relay flooder and the idle
targets that never ack; a TLS ``nea`` listener for the line flooder, the
poison-JSON sender, the 10 MB line, the squatters, the chatters and the chat
readers they try to get dropped; a plain-TCP ``nea`` listener for status; the
HTTP API for the ``/ws`` ping flooder and the keep-alive hoarders, and for a
``/healthz`` probe twice a second while the attacked load runs, whose answers
are counted). Chat history is kept in SQLite (``--store``), so that the
chatters also press on the store. The attackers
(``attackers.py``, one child process) are up ``--warm-up`` seconds (8) before
the second run starts and stay up for all of it, so that the load meets the
attack in its steady state. The onset is bounded by the daemon's
``--ack-timeout`` (5 s): a relay drawn to a target that never acks waits that
long, then goes to another, and that target is not drawn again; ``--warm-up
0`` shows what it costs. What it prints is what the targets ask about: the load
100% acked, the server back in zero state afterwards, the load's exchange p99
attacked against alone, the daemon's RSS (sampled from ``/proc``), no
traceback in its log, and every process's CPU, so a slow figure can be blamed
on the side that ran out.

    .venv/bin/python bench/hostile.py                      # 15,000 clients over 20 s
    .venv/bin/python bench/hostile.py --clients 4000 --window 10

Sized for the 20,000 open files a process may have: the daemon holds the load's
clients at once (at most ``--max-active``) plus about 2,300 attackers and at most
``--http-max-connections`` (256) of the hoarders' HTTP connections.
"""

import argparse
import json
import subprocess
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

import harness

ROOT = Path(__file__).resolve().parent


def load(daemon_ports, args, certs_dir, pid) -> tuple[dict | None, list[dict]]:
    relay = daemon_ports[0]
    run = harness.tls_load(relay, certs_dir, args, pid)
    return run.finish(args.window + args.limit), run.progress


class HealthProbe:
    """``GET /healthz`` every half second, each with a 2 s timeout, until stopped."""

    def __init__(self, port: int) -> None:
        self.url = f"http://127.0.0.1:{port}/healthz"
        self.counts = {"ok": 0, "failed": 0}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(0.5):
            try:
                with urllib.request.urlopen(self.url, timeout=2) as answer:
                    self.counts["ok" if answer.status == 200 else "failed"] += 1
            except OSError:
                self.counts["failed"] += 1

    def stop(self) -> dict:
        self._stop.set()
        self._thread.join(5)
        return self.counts


def settle(port: int, seconds: float = 20.0) -> tuple[dict, float | None]:
    """Status once zero state shows (and after how long), or the last one after ``seconds``."""
    started = time.monotonic()
    while True:
        state = harness.status(port)
        if harness.zero_state(state):
            return state, round(time.monotonic() - started, 1)
        if time.monotonic() - started > seconds:
            return state, None
        time.sleep(0.5)


def summary(name: str, report: dict | None, rss: list, settled_after, state: dict) -> str:
    peak = max(v for _, v in rss) / 2**20 if rss else 0
    if report is None:
        return f"{name}: DID NOT COMPLETE within the time limit; RSS peak {peak:.1f} MB"
    return (
        f"{name}: {harness.load_counts(report)}\n"
        f"     {harness.load_latency(report)}; "
        f"{report['rates']['exchanges_per_s']} acked/s over {report['duration_s']} s\n"
        f"     {harness.load_cpu(report)}; CPU limit {report['limit']}\n"
        f"     RSS peak {peak:.1f} MB; zero state "
        f"{'after ' + str(settled_after) + ' s' if settled_after is not None else 'NOT reached'}"
        f" (connections {state['connections']}, pending {state['relays']['pending']}, "
        f"in flight {state['relays']['in_flight']}, handshakes {state['handshakes']})"
    )


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--clients", type=int, default=15_000)
    p.add_argument("--window", type=float, default=20.0)
    p.add_argument("--timeout", type=float, default=60.0, help="client timeout (default 60)")
    p.add_argument("--workers", type=int, default=2)
    p.add_argument(
        "--max-active",
        type=int,
        default=15_000,
        help="the load's clients at once (default 15,000: with ~2,100 attackers "
        "under the daemon's 20,000 open files)",
    )
    p.add_argument(
        "--limit",
        type=float,
        default=240.0,
        help="seconds past the window a run may take before it is stopped",
    )
    p.add_argument("--scale", type=float, default=1.0, help="fraction of the attackers' counts")
    p.add_argument(
        "--warm-up",
        type=float,
        default=8.0,
        help="seconds between the attackers being up and the attacked load (default "
        "8: past the daemon's 5 s --ack-timeout, after which the targets that never "
        "ack have each missed a deadline and are no longer drawn)",
    )
    p.add_argument(
        "--max-rate",
        type=int,
        help="the daemon's --max-rate, lines a second per "
        "connection (default: the daemon's, 1,000): what a flooder may cost it",
    )
    p.add_argument(
        "--store", help="the daemon's --store (default: SQLite in a temporary directory)"
    )
    p.add_argument("--json", help="also write the results here")
    args = p.parse_args()
    harness.header(f"hostile: {args.clients} TLS clients over {args.window} s, alone and attacked")
    certs_dir = harness.certs()
    listens = (harness.tls("relay", certs_dir), harness.tls("nea", certs_dir), harness.tcp("nea"))
    results = {}
    http = harness.free_port()
    extra = (
        "--http",
        f"tcp:{http}:interface=127.0.0.1",
        *(("--max-rate", str(args.max_rate)) if args.max_rate is not None else ()),
    )
    store = args.store or f"sqlite:{tempfile.mkdtemp(prefix='nea-hostile-')}/history.db"
    extra = (*extra, "--store", store)
    with harness.Daemon(*listens, max_clients=17_500, extra=extra) as daemon:
        relay, nea_tls, nea = daemon.ports
        rss = harness.Sampler(daemon.rss, 0.5)
        results["idle_rss_mb"] = round(daemon.rss() / 2**20, 1)

        cpu0 = daemon.cpu()
        report, progress = load(daemon.ports, args, certs_dir, daemon.pid)
        state, after = settle(nea)
        alone_rss = rss.stop()
        print(summary("alone   ", report, alone_rss, after, state), flush=True)
        results["alone"] = {
            "report": report,
            "goodput": harness.goodput(progress),
            "settled_after_s": after,
            "status": state,
            "rss_peak_mb": round(max(v for _, v in alone_rss) / 2**20, 1),
        }

        rss = harness.Sampler(daemon.rss, 0.5)
        attackers = harness.spawn(
            [
                harness.PYTHON,
                str(ROOT / "attackers.py"),
                "--relay-port",
                str(relay),
                "--nea-port",
                str(nea_tls),
                "--http-port",
                str(http),
                "--ca",
                str(certs_dir / "ca.pem"),
                "--seconds",
                str(args.window + args.limit + 60),
                "--scale",
                str(args.scale),
            ],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
        )
        ready = json.loads(harness.readline(attackers, 90))
        print(f"attackers up: {ready['ready']}", flush=True)
        time.sleep(args.warm_up)
        under_attack = harness.status(nea)
        attackers_cpu0 = harness.process_cpu(attackers.pid)
        probe = HealthProbe(http)
        report, progress = load(daemon.ports, args, certs_dir, daemon.pid)
        health = probe.stop()
        if daemon.process.poll() is not None:
            log = Path(daemon.log.name).read_text(errors="replace")
            raise SystemExit(
                f"the daemon EXITED during the attack (status "
                f"{daemon.process.returncode}); its log ends:\n{log[-6000:]}"
            )
        during = harness.status(nea)
        attackers_cpu = harness.process_cpu(attackers.pid) - attackers_cpu0
        attackers.stdin.close()
        line = harness.readline(attackers, 60)
        attackers.wait(30)
        harness.stop(attackers)
        attack = json.loads(line)["result"] if line else {}
        state, after = settle(nea)
        attacked_rss = rss.stop()
        print(summary("attacked", report, attacked_rss, after, state), flush=True)
        print(
            f"     attackers' CPU {attackers_cpu:.1f} s; status with attackers up, before the "
            f"load: connections {under_attack['connections']}, handshakes "
            f"{under_attack['handshakes']}",
            flush=True,
        )
        print(
            f"     at the end of the load: errors {during['errors']}, throttled "
            f"{during['throttled']}, relays {during['relays']}",
            flush=True,
        )
        print(f"     /healthz during the attacked load: {health}", flush=True)
        print(f"     attackers: {json.dumps(attack)}", flush=True)
        log = Path(daemon.log.name).read_text(errors="replace")
        tracebacks = log.count("Traceback")
        print(
            f"daemon log: {len(log)} bytes, {tracebacks} 'Traceback', "
            f"{log.count('log_failure')} logged failures; daemon CPU {daemon.cpu() - cpu0:.1f} s",
            flush=True,
        )
        results["attacked"] = {
            "report": report,
            "goodput": harness.goodput(progress),
            "settled_after_s": after,
            "status": state,
            "during": during,
            "attackers": attack,
            "attackers_cpu_s": attackers_cpu,
            "healthz": health,
            "rss_peak_mb": round(max(v for _, v in attacked_rss) / 2**20, 1),
        }
        results["log"] = {"bytes": len(log), "tracebacks": tracebacks}
        if results["alone"]["report"] and report:
            ratio = (
                report["latency_ms"]["exchange"]["p99"]
                / results["alone"]["report"]["latency_ms"]["exchange"]["p99"]
            )
            print(f"exchange p99 attacked / alone: {ratio:.2f} (target <= 2)", flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps({"machine": harness.machine(), **results}, indent=2))


if __name__ == "__main__":
    main()
