"""Server CPU per line for a TLS client that sends its lines in batches.

One stdlib ``ssl`` client (the system's OpenSSL) sends ``--lines`` plain lines
to a fresh daemon's TLS ``nea`` listener (``--max-rate 0``: no throttling),
``--batch`` lines per write, and reads every reversed reply before the next
batch. The figure is the daemon's CPU (utime + stime from ``/proc``) over the
lines divided by the lines. It shows what the daemon pays per answer when many
arrive in one read: a client that pipelines, or a flooder. With ``--baseline
DIR`` the same runs use another checkout's ``nea`` package too, in turns, so
that before and after share the machine's load::

    git archive HEAD~1 nea | tar -x -C /tmp/base
    .venv/bin/python bench/line_batches.py --baseline /tmp/base
"""

import argparse
import ssl

import harness
import tls_exchange


def cost(certs, lines: int, batch: int, tree: str | None) -> float:
    """The daemon's CPU microseconds per line; ``tree``'s ``nea`` package if given."""
    environ = {"PYTHONPATH": f"{tree}:{harness.ROOT}"} if tree else None
    context = ssl.create_default_context(cafile=str(certs / "ca.pem"))
    with harness.Daemon(
        harness.tls("nea", certs), extra=("--max-rate", "0"), environ=environ
    ) as daemon:
        with tls_exchange.connect(daemon.ports[0], context) as sock:
            replies = tls_exchange.Lines(sock)
            sock.sendall(b"warm-up\n")
            replies.next()
            payload = b"".join(b"line-%05d\n" % i for i in range(batch))
            before = daemon.cpu()
            for _ in range(lines // batch):
                sock.sendall(payload)
                for _ in range(batch):
                    replies.next()
            spent = daemon.cpu() - before
    return spent / (lines // batch * batch) * 1e6


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--lines", type=int, default=20_000)
    p.add_argument(
        "--batch", type=int, nargs="+", default=[1, 10], help="lines per write (default: 1 and 10)"
    )
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--baseline", metavar="DIR", help="another checkout's nea package, in turns")
    args = p.parse_args()
    harness.header(f"line_batches: {args.lines} lines over TLS, batches of {args.batch}")
    certs = harness.certs()
    trees = [("this tree", None)] + ([("baseline", args.baseline)] if args.baseline else [])
    for batch in args.batch:
        for _ in range(args.rounds):
            for label, tree in trees:
                print(
                    f"batch {batch:3}, {label:9}: {cost(certs, args.lines, batch, tree):6.1f} "
                    "us of server CPU per line",
                    flush=True,
                )


if __name__ == "__main__":
    main()
