"""The garbage collector tuned for a server that allocates a few short-lived objects per line.

CPython's default (a young collection every 700 net allocations) was made for
programs that allocate little; nea allocates a handful of small objects per line
(frames, records, Deferreds), so at tens of thousands of lines a second it
collected the young generation thousands of times a second, each pass also
promoting what was merely in flight to older generations scanned again later:
about a sixth of a relay's CPU (docs/benchmarks.rst, "Relays closer to the floor").

A young generation of `YOUNG` objects is scanned a few dozen times a second at
that rate, in well under a millisecond each. What exists once the instance has
started (modules, classes, the service tree) is frozen: no collection scans it
again.
"""

import gc

#: Net allocations of container objects between two young collections.
YOUNG = 20_000


def tune() -> None:
    """Set the thresholds; the older generations keep CPython's ratios (10 and 10)."""
    _, older, oldest = gc.get_threshold()
    gc.set_threshold(YOUNG, older, oldest)


def freeze_startup() -> None:
    """Call once started: everything alive now is never scanned again (``gc.freeze``)."""
    gc.collect()
    gc.freeze()
