"""nea-loadtest's own CPU per client, TCP and TLS, from its report and from outside.

    python bench/generator_cost.py [--clients 3000] [--window 10] [--workers 1] [--profile DIR]

A fresh daemon (a ``relay`` listener and a ``nea`` one for the status
check, each over plain TCP and over TLS) serves one nea-loadtest run per transport. Each
run goes under ``/usr/bin/time -v``, so the generator's CPU is read twice: the
report's ``generator.cpu_us_per_client`` (its workers, from go to the last
client) and the whole command's user + system time (start-up, workers, status
check), less that of a run with one client per worker (the start-up, some
0.7 s, that no per-client figure should carry), per client. CPU, not latency, is
the figure: the two cores are shared.
With ``--baseline DIR`` each transport is also run with another checkout's
``nea`` package, alternating, so that before and after share the machine's load.

CPU per client depends on the machine as much as on the client, so each
transport also gets two references measured in the same run, against the same
daemon: ``--references`` clients of a minimal stdlib client doing the same
exchange one at a time (blocking ``socket``/``ssl``, no event loop:
``tls_exchange.exchange``), and for TLS ``openssl s_time -new`` (OpenSSL's own
compiled client, handshake and close only, as fast as it goes).
"""

import argparse
import itertools
import json
import re
import ssl
import subprocess
import tempfile
from pathlib import Path

import client_cost
import harness
import tls_exchange


def tree_env(tree: str | None) -> dict:
    """The children's environment; with ``tree``, its ``nea`` package comes first."""
    env = harness.env()
    if tree:
        env["PYTHONPATH"] = tree + ":" + env["PYTHONPATH"]
    return env


def timed_loadtest(args: list[str], env: dict) -> tuple[dict, float]:
    """One nea-loadtest run under /usr/bin/time -v: its report and user+system seconds."""
    report = Path(tempfile.mkstemp(prefix="nea-bench-gen-", suffix=".json")[1])
    try:
        done = subprocess.run(
            [
                "/usr/bin/time",
                "-v",
                harness.PYTHON,
                "-m",
                "nea.loadtest",
                "--json",
                str(report),
                *args,
            ],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
            timeout=900,
        )
        if not report.read_text():
            raise RuntimeError(f"nea-loadtest failed: {done.stderr[-3000:]}")
        times = {
            k: float(re.search(rf"{k} time \(seconds\): ([\d.]+)", done.stderr).group(1))
            for k in ("User", "System")
        }
        return json.loads(report.read_text()), times["User"] + times["System"]
    finally:
        report.unlink(missing_ok=True)


def stdlib_reference(port: int, context: ssl.SSLContext | None, count: int) -> float:
    """This process's CPU seconds per exchange for ``count`` minimal clients, one at a time."""
    before = client_cost.own_cpu()
    for i in range(count):
        tls_exchange.exchange(port, context, b"reference-%d" % i)
    return (client_cost.own_cpu() - before) / count


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clients", type=int, default=3000)
    parser.add_argument("--window", type=float, default=10.0)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument(
        "--references",
        type=int,
        default=2000,
        help="minimal stdlib clients per transport, for reference (0: none)",
    )
    parser.add_argument(
        "--baseline",
        metavar="DIR",
        help="also run the nea package in DIR "
        "(e.g. `git archive main nea | tar -x -C DIR`), alternating, for a "
        "before/after in the same run",
    )
    options = parser.parse_args()
    certs = harness.certs()
    trees = [("this tree", None)] + ([("baseline", options.baseline)] if options.baseline else [])
    harness.header(
        f"nea-loadtest CPU per client: {options.clients} clients over "
        f"{options.window:g} s, {options.workers} worker(s)"
    )
    with harness.Daemon(
        harness.tcp("relay"),
        harness.tcp("nea"),
        harness.tls("relay", certs),
        harness.tls("nea", certs),
        max_clients=options.clients + 100,
    ) as daemon:
        tcp, tcp_status, tls, tls_status = map(str, daemon.ports)
        transports = (
            ("TCP", ["--plain", "--port", tcp, "--status-port", tcp_status]),
            (
                "TLS",
                [
                    "--port",
                    tls,
                    "--status-port",
                    tls_status,
                    "--ca",
                    str(certs / "ca.pem"),
                    "--server-name",
                    "localhost",
                ],
            ),
        )
        if options.references:
            context = ssl.create_default_context(cafile=str(certs / "ca.pem"))
            for name, port, tls_context in (("TCP", tcp, None), ("TLS", tls, context)):
                cpu = stdlib_reference(int(port), tls_context, options.references)
                print(
                    f"{name}, minimal stdlib client, one at a time: {cpu * 1e6:.0f} us/client "
                    f"({options.references} exchanges)",
                    flush=True,
                )
            done, cpu = client_cost.s_time(int(tls_status), certs, 10)
            print(
                f"TLS, openssl s_time -new (handshake and close only): {cpu / done * 1e6:.0f} "
                f"us/connection ({done} in 10 s)",
                flush=True,
            )
        for (name, transport), (label, tree) in itertools.product(transports, trees):
            env = tree_env(tree)
            common = [
                *transport,
                "--workers",
                str(options.workers),
                "--server-pid",
                str(daemon.pid),
            ]
            _, fixed = timed_loadtest(
                [*common, "--clients", str(options.workers), "--window", "0"], env
            )
            report, outside = timed_loadtest(
                [
                    *common,
                    "--clients",
                    str(options.clients),
                    "--window",
                    str(options.window),
                    "--seed",
                    "1",
                ],
                env,
            )
            clients = report["clients"]
            print(
                f"{name}, {label}: acked {report['acked']}/{clients}, "
                f"retries {report['retries']}, "
                f"generator {report['generator']['cpu_us_per_client']} us/client (report); "
                f"/usr/bin/time: {outside:.2f} s in all, {fixed:.2f} s for a run of one client "
                f"per worker (start-up), {(outside - fixed) / clients * 1e6:.0f} us/client "
                "beyond it; "
                f"server {report['server']['cpu_us_per_client']} us/client, "
                f"exchange p99 {report['latency_ms']['exchange']['p99']} ms",
                flush=True,
            )


if __name__ == "__main__":
    main()
