"""Server CPU per TLS client, by client: the stdlib ``ssl`` client against nea-loadtest.

In one run, each case against a fresh daemon (a ``relay`` and a ``nea`` TLS
listener), clients started at a fixed rate:

- ``stdlib line``: Python's ``ssl`` (the system OpenSSL), CA and host-name
  verification, in threads: connect, send one line to the ``nea`` listener, read
  its reversed reply, close (no close_notify, like most clients); and the same
  with a close_notify exchange first, as Twisted's TLS does;
- ``stdlib seed-004``: the same client doing nea-loadtest's exchange on the
  ``relay`` listener (``bench/tls_exchange.py``'s);
- ``loadtest``: nea-loadtest (Twisted and pyOpenSSL), ok-delay 0;
- ``s_time``: ``openssl s_time -new`` (the system OpenSSL's own client) as fast
  as it goes: handshake and close, a second independent client;
- the same against a daemon that sends no TLS 1.3 session tickets, set through
  ``OPENSSL_CONF`` for its process (pyOpenSSL has no call for it);
- ``bare handshake``: `tls_handshake.bare` with one key-exchange group allowed
  (``OPENSSL_CONF`` again), so that the group's own cost is seen without the
  daemon's noise.

For every daemon case: the daemon's CPU (utime + stime, /proc) over the case
divided by the clients completed, and the generator's own CPU per client, from
outside (its processes' /proc, its rusage, or this process's for the
in-process stdlib client). Record the load average with every run: the cores
are shared.

    .venv/bin/python bench/client_cost.py [--rate 300] [--seconds 20]
"""

import argparse
import concurrent.futures
import os
import re
import resource
import ssl
import statistics
import subprocess
import tempfile
import time

import harness
import tls_exchange

#: An OpenSSL configuration that changes one SSL setting of every context (OpenSSL 3 and 4).
_CONF = """openssl_conf = nea_bench
[nea_bench]
ssl_conf = nea_bench_ssl
[nea_bench_ssl]
system_default = nea_bench_defaults
[nea_bench_defaults]
{setting}
"""


def openssl_conf(setting: str) -> dict[str, str]:
    """The environment for a child whose OpenSSL contexts all get ``setting``
    (e.g. ``Groups = X25519``, ``NumTickets = 0``)."""
    path = tempfile.NamedTemporaryFile("w", prefix="nea-bench-", suffix=".cnf", delete=False)
    with path:
        path.write(_CONF.format(setting=setting))
    return {"OPENSSL_CONF": path.name}


#: The key-exchange groups compared: OpenSSL 4's first choice, OpenSSL 3.0's, and P-256
#: (what `nea.tls.client.ClassicalKeyExchange` offers).
GROUPS = ("X25519MLKEM768", "X25519", "P-256")


def children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def own_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def line_client(port: int, context: ssl.SSLContext, text: bytes, close_notify: bool) -> None:
    """Connect, one line, its reversed reply, close (after a close_notify exchange if asked)."""
    with tls_exchange.connect(port, context) as sock:
        sock.sendall(text + b"\n")
        reply = tls_exchange.Lines(sock).next()
        if reply != text[::-1]:
            raise RuntimeError(f"unexpected {reply!r}")
        if close_notify:
            sock.unwrap()


def paced(call, rate: float, seconds: float) -> int:
    """``call(i)`` for ``rate * seconds`` clients started at a fixed rate, in threads; how
    many completed."""
    count = int(rate * seconds)
    started = time.monotonic()
    with concurrent.futures.ThreadPoolExecutor(64) as pool:
        futures = []
        for i in range(count):
            delay = started + i / rate - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            futures.append(pool.submit(call, i))
    return sum(1 for f in futures if f.exception() is None)


def stdlib(kind: str, daemon, certs_dir, args) -> tuple[int, float]:
    """(clients completed, generator CPU seconds) for the stdlib client."""
    context = ssl.create_default_context(cafile=str(certs_dir / "ca.pem"))
    relay, nea = daemon.ports
    if kind in ("line", "line+close_notify"):

        def call(i):
            line_client(nea, context, b"line-%d" % i, kind == "line+close_notify")
    else:

        def call(i):
            tls_exchange.exchange(relay, context, b"x%d" % i)

    before = own_cpu()
    done = paced(call, args.rate, args.seconds)
    return done, own_cpu() - before


def loadtest(daemon, certs_dir, args, environ=None) -> tuple[int, float]:
    """nea-loadtest's clients acked, and its processes' CPU read from /proc every 0.2 s
    (the workers are not reaped into its rusage)."""
    run = harness.LoadRun(
        "--port",
        str(daemon.ports[0]),
        "--ca",
        str(certs_dir / "ca.pem"),
        "--server-name",
        "localhost",
        "--clients",
        str(int(args.rate * args.seconds)),
        "--window",
        str(args.seconds),
        "--workers",
        "1",
        "--timeout",
        "60",
        "--no-status",
        environ=environ,
    )
    seen: dict[int, float] = {}
    while run.process.poll() is None:
        seen.update(harness.group_cpu(run.process.pid))
        time.sleep(0.2)
    report = run.finish(60)
    print(
        f"   (nea-loadtest's own report: generator {report['generator']['cpu_us_per_client']}"
        f" us/client)"
    )
    return report["acked"], sum(seen.values())


def s_time(port: int, certs_dir, seconds: float) -> tuple[int, float]:
    """``openssl s_time -new`` against ``port`` for ``seconds``: (handshakes, its CPU seconds)."""
    before = children_cpu()
    out = subprocess.run(
        [
            "openssl",
            "s_time",
            "-connect",
            f"127.0.0.1:{port}",
            "-new",
            "-CAfile",
            str(certs_dir / "ca.pem"),
            "-verify",
            "1",
            "-time",
            str(int(seconds)),
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    done = int(re.search(r"(\d+) connections in [\d.]+s", out).group(1))
    return done, children_cpu() - before


def bare_handshake(groups: str, certs_dir, args) -> dict:
    """`tls_handshake.bare` in a child whose OpenSSL offers and accepts only ``groups``:
    CPU per handshake, server side and client side, without sockets or Python around it."""
    code = (
        "import pathlib, sys, tls_handshake; "
        "print(*tls_handshake.bare(pathlib.Path(sys.argv[1]), int(sys.argv[2])))"
    )
    environ = harness.env(openssl_conf(f"Groups = {groups}"))
    out = subprocess.run(
        [harness.PYTHON, "-c", code, str(certs_dir), str(args.bare)],
        cwd=harness.ROOT / "bench",
        env=environ,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    server, client = map(float, out.split())
    result = {
        "case": f"bare handshake, {groups}",
        "server_us": server * 1e6,
        "generator_us": client * 1e6,
        "load": os.getloadavg()[0],
    }
    print(
        f"{result['case']:44} server {result['server_us']:5.0f} us/handshake  client "
        f"{result['generator_us']:5.0f} us  (load {result['load']:.2f})",
        flush=True,
    )
    return result


def case(name: str, generate, certs_dir, daemon_environ=None) -> dict:
    """One generator against a fresh daemon: the daemon's and the generator's CPU per client."""
    listens = (harness.tls("relay", certs_dir), harness.tls("nea", certs_dir))
    with harness.Daemon(*listens, environ=daemon_environ) as daemon:
        time.sleep(0.5)
        before, started = daemon.cpu(), time.monotonic()
        clients, generator = generate(daemon)
        took = time.monotonic() - started
        time.sleep(1.0)  # the daemon handles the last closes
        server = daemon.cpu() - before
    result = {
        "case": name,
        "clients": clients,
        "load": os.getloadavg()[0],
        "seconds": took,
        "server_us": server / clients * 1e6,
        "generator_us": generator / clients * 1e6,
    }
    print(
        f"{name:44} {clients:6} clients  server {result['server_us']:5.0f} us/client  "
        f"generator {result['generator_us']:5.0f} us/client  ({took:.1f} s, load "
        f"{result['load']:.2f})",
        flush=True,
    )
    return result


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--rate", type=float, default=300.0, help="clients started per second")
    p.add_argument("--seconds", type=float, default=20.0)
    p.add_argument("--rounds", type=int, default=1, help="run every case this many times")
    p.add_argument("--bare", type=int, default=2000, help="bare handshakes per group")
    p.add_argument(
        "--only", nargs="+", metavar="WORDS", help="only the cases whose name contains one of these"
    )
    args = p.parse_args()
    harness.header(f"client_cost: {args.rate:g} clients/s for {args.seconds:g} s per case")
    certs_dir = harness.certs()
    no_tickets = openssl_conf("NumTickets = 0")
    cases = [
        ("stdlib line", lambda d: stdlib("line", d, certs_dir, args), None),
        (
            "stdlib line, close_notify both ways",
            lambda d: stdlib("line+close_notify", d, certs_dir, args),
            None,
        ),
        ("stdlib seed-004", lambda d: stdlib("exchange", d, certs_dir, args), None),
        ("loadtest seed-004", lambda d: loadtest(d, certs_dir, args), None),
        ("s_time handshake-close", lambda d: s_time(d.ports[1], certs_dir, args.seconds), None),
        (
            "stdlib line, server NumTickets 0",
            lambda d: stdlib("line", d, certs_dir, args),
            no_tickets,
        ),
        (
            "loadtest seed-004, server NumTickets 0",
            lambda d: loadtest(d, certs_dir, args),
            no_tickets,
        ),
        (
            "s_time handshake-close, server NumTickets 0",
            lambda d: s_time(d.ports[1], certs_dir, args.seconds),
            no_tickets,
        ),
    ]
    if args.only:
        cases = [c for c in cases if any(word in c[0] for word in args.only)]
    results: dict[str, list[dict]] = {}
    for _ in range(args.rounds):
        for name, generate, daemon_environ in cases:
            results.setdefault(name, []).append(case(name, generate, certs_dir, daemon_environ))
        for groups in GROUPS:
            result = bare_handshake(groups, certs_dir, args)
            results.setdefault(result["case"], []).append(result)
    baseline = statistics.median(r["server_us"] for r in results[cases[0][0]])
    print(f"medians over {args.rounds} round(s); server ratio to {cases[0][0]!r}:")
    for name, runs in results.items():
        server = statistics.median(r["server_us"] for r in runs)
        generator = statistics.median(r["generator_us"] for r in runs)
        print(
            f"{name:48} server {server:5.0f} us  ({server / baseline:.2f}x)  "
            f"generator {generator:5.0f} us"
        )


if __name__ == "__main__":
    main()
