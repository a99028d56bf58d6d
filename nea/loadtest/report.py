"""The run's verdict: a JSON-able report from the merged tally, and its human summary."""

import os
from typing import Any

from nea.loadtest.status import Verdict
from nea.loadtest.tally import CLOSE_KINDS, Tally, percentiles


def build(
    tally: Tally,
    config: dict[str, Any],
    wall_seconds: float,
    verdict: Verdict | None,
    server_cpu: float | None,
) -> dict[str, Any]:
    counts = tally.counts
    clients = counts["clients"]
    first, last = tally.first_start, tally.last_end
    duration = (last - first) if first is not None and last is not None else 0.0
    per_second = (lambda n: round(n / duration, 1)) if duration > 0 else (lambda n: None)
    lost = clients - counts["acked"]
    zero_state = verdict.zero_state if verdict is not None else None
    report: dict[str, Any] = {
        "ok": lost == 0 and zero_state is not False,
        "lost": lost,
        "config": config,
        "clients": clients,
        "acked": counts["acked"],
        "acked_first_try": counts["acked_first_try"],
        "failed": counts["failed"],
        "retried_clients": clients - counts["acked_first_try"],
        "retries": counts["retries"],
        "attempts": counts["attempts"],
        "closes": {kind: tally.closes[kind] for kind in CLOSE_KINDS},
        "errors": dict(tally.errors),
        "forwarded": counts["forwarded"],
        "oks_sent": counts["oks_sent"],
        "unexpected_lines": counts["unexpected"],
        "duration_s": round(duration, 3),
        "wall_s": round(wall_seconds, 3),
        "rates": {
            "connects_per_s": per_second(len(tally.samples["connect_ms"])),
            "exchanges_per_s": per_second(counts["acked"]),
        },
        "latency_ms": {
            "connect": percentiles(tally.samples["connect_ms"]),
            "exchange": percentiles(tally.samples["exchange_ms"]),
            "total": percentiles(tally.samples["total_ms"]),
        },
        "generator": _cpu(tally.cpu_seconds, clients, wall_seconds),
        "server": _cpu(server_cpu, clients, wall_seconds) if server_cpu is not None else None,
        "zero_state": None
        if verdict is None
        else {
            "zero_state": verdict.zero_state,
            "connections_besides_ours": verdict.connections - 1,
            "pending": verdict.pending,
            "in_flight": verdict.in_flight,
        },
    }
    report["limit"] = limit(report, config.get("workers", 1))
    return report


#: Share of a core past which a process is taken to have been the bottleneck.
BUSY = 85.0


def limit(report: dict[str, Any], workers: int, cores: int | None = None) -> str:
    """Which side ran out of CPU: "server", "generator", "both", "machine", "neither", "unknown".

    The server is one process (one core at most); each worker is one process too,
    so the generator is saturated when its workers average more than BUSY. When
    neither is, but together they kept every core of this machine busy (server
    and generator on one host), the machine was the limit.
    """
    generator_share = report["generator"]["percent_of_a_core"] or 0
    generator = generator_share / max(1, workers) >= BUSY
    if report["server"] is None:
        return "generator" if generator else "unknown"
    server_share = report["server"]["percent_of_a_core"] or 0
    server = server_share >= BUSY
    if server or generator:
        return {(True, True): "both", (True, False): "server"}.get((server, generator), "generator")
    cores = cores or os.cpu_count() or 1
    return "machine" if server_share + generator_share >= BUSY * cores else "neither"


def _cpu(seconds: float, clients: int, wall: float) -> dict[str, Any]:
    return {
        "cpu_s": round(seconds, 3),
        "cpu_us_per_client": round(seconds / clients * 1e6, 1) if clients else None,
        "percent_of_a_core": round(100 * seconds / wall, 1) if wall > 0 else None,
    }


def _ms(p: dict[str, float | None]) -> str:
    def one(v: float | None) -> str:
        return "-" if v is None else f"{v:.1f}"

    return f"p50 {one(p['p50'])}  p90 {one(p['p90'])}  p99 {one(p['p99'])}  max {one(p['max'])} ms"


def summary(report: dict[str, Any]) -> str:
    """What a person reads at the end of a run."""
    c, closes, rates = report["config"], report["closes"], report["rates"]
    lat = report["latency_ms"]
    zs = report["zero_state"]
    lines = [
        f"nea-loadtest: {report['clients']} clients over {c['window']} s, "
        f"{'TLS' if c['tls'] else 'TCP'} to {c['host']}:{c['port']}, ok-delay {c['ok_delay']}, "
        f"{c['workers']} worker(s)",
        f"  acked      {report['acked']}/{report['clients']}  "
        f"(first try {report['acked_first_try']}, "
        f"lost {report['lost']}, gave up {report['failed']})",
        f"  retries    {report['retries']} by {report['retried_clients']} client(s)",
        "  closes     " + ", ".join(f"{k} {v}" for k, v in closes.items()),
        "  errors     " + (", ".join(f"{k} {v}" for k, v in report["errors"].items()) or "none"),
        f"  relayed    {report['forwarded']} forwarded to clients, {report['oks_sent']} ok sent, "
        f"{report['unexpected_lines']} unexpected line(s)",
        f"  rates      {rates['connects_per_s']} connects/s, "
        f"{rates['exchanges_per_s']} exchanges/s over {report['duration_s']} s",
        f"  connect    {_ms(lat['connect'])}",
        f"  exchange   {_ms(lat['exchange'])}",
        f"  total      {_ms(lat['total'])}",
        f"  generator  {_cpu_line(report['generator'])}",
    ]
    if report["server"] is not None:
        lines.append(f"  server     {_cpu_line(report['server'])}")
    lines.append(
        f"  CPU limit  {report['limit']} (a process past {BUSY:.0f}% of a core, or all "
        "cores busy between them)"
    )
    if zs is None:
        lines.append("  zero state not checked")
    else:
        lines.append(
            f"  zero state {'yes' if zs['zero_state'] else 'NO'} (other connections "
            f"{zs['connections_besides_ours']}, pending {zs['pending']}, "
            f"in flight {zs['in_flight']})"
        )
    lines.append("  result     " + ("OK: nothing lost" if report["ok"] else "FAILED"))
    return "\n".join(lines)


def _cpu_line(cpu: dict[str, Any]) -> str:
    return (
        f"{cpu['cpu_s']} s CPU, {cpu['cpu_us_per_client']} us/client, "
        f"{cpu['percent_of_a_core']}% of a core"
    )
