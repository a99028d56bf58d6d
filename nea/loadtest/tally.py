"""What a run counts: outcomes, how connections ended, and latency samples.

A worker fills one `Tally`; the command merges the workers' tallies (sent as
JSON) into one and the report reads it.
"""

import collections
import math
from array import array
from typing import Any

#: How a connection attempt ended.
CLOSE_KINDS = (
    "protocol",  # the client closed it after its own ``ok X``: the only good ending
    "timeout",  # no ``ok X`` within the timeout; the client aborted it
    "lost",  # the server or the network closed it before ``ok X``
    "error",  # the server answered with an error (server_full, ...); the client closed it
    "connect_failed",  # never connected (refused, connect timeout, TLS handshake failure)
)

COUNTERS = (
    "clients",  # assigned to this tally
    "started",  # made their first attempt
    "acked",  # got their ``ok X``
    "acked_first_try",
    "failed",  # gave up after the last retry: a loss
    "attempts",  # connection attempts (first tries plus retries)
    "retries",
    "forwarded",  # ``message Y`` lines received from the server
    "oks_sent",
    "unexpected",  # lines that are neither a forwarded message, our ok, a date nor an error
)

SAMPLES = ("connect_ms", "exchange_ms", "total_ms")


class Tally:
    def __init__(self) -> None:
        self.counts: collections.Counter[str] = collections.Counter()
        self.closes: collections.Counter[str] = collections.Counter()
        self.errors: collections.Counter[str] = collections.Counter()
        self.samples: dict[str, array] = {name: array("d") for name in SAMPLES}
        self.cpu_seconds = 0.0
        self.first_start: float | None = None
        self.last_end: float | None = None

    def count(self, name: str, n: int = 1) -> None:
        self.counts[name] += n

    def closed(self, kind: str) -> None:
        self.closes[kind] += 1

    def sample(self, name: str, seconds: float) -> None:
        self.samples[name].append(seconds * 1000.0)

    def span(self, start: float, end: float) -> None:
        """Widen the run's wall-clock span to cover [start, end] (epoch seconds)."""
        self.first_start = start if self.first_start is None else min(self.first_start, start)
        self.last_end = end if self.last_end is None else max(self.last_end, end)

    # ---- JSON across processes ----

    def to_json(self) -> dict[str, Any]:
        return {
            "counts": dict(self.counts),
            "closes": dict(self.closes),
            "errors": dict(self.errors),
            "samples": {k: [round(v, 3) for v in a] for k, a in self.samples.items()},
            "cpu_seconds": self.cpu_seconds,
            "first_start": self.first_start,
            "last_end": self.last_end,
        }

    def merge_json(self, data: dict[str, Any]) -> None:
        self.counts.update(data["counts"])
        self.closes.update(data["closes"])
        self.errors.update(data["errors"])
        for name, values in data["samples"].items():
            self.samples[name].extend(values)
        self.cpu_seconds += data["cpu_seconds"]
        if data["first_start"] is not None:
            self.span(data["first_start"], data["last_end"])


def percentiles(values, points=(50, 90, 99)) -> dict[str, float | None]:
    """Nearest-rank percentiles and the maximum, in the values' unit; None when empty."""
    ordered = sorted(values)
    result: dict[str, float | None] = {}
    for p in points:
        result[f"p{p}"] = (
            ordered[max(0, math.ceil(p / 100 * len(ordered)) - 1)] if ordered else None
        )
    result["max"] = ordered[-1] if ordered else None
    return result
