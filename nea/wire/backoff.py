"""The reconnect schedule: capped exponential backoff with jitter.

The protocol asks every client that loses its server, or finds none, to come
back on this schedule, growing per failed attempt up to a cap, and jittered so
that clients cut off together (a server restart) do not all return in the same
instant; a server that says ``shutting_down`` after serving is restarting, so
its clients come back after the short ``prompt`` delay instead. nea-client and
nea-loadtest follow it (through Twisted's ``ReconnectingClientFactory``), and,
without jitter, the cluster link uses it between attempts to reach Redis and the
store writer between probes of a store that is down. It is the one backoff of nea.

The policy is immutable and holds no per-client state; each client keeps only
its own attempt counter, so a load test's thousands of clients share one policy.
"""

import random

import attrs


@attrs.frozen
class Backoff:
    """Delay before retry number ``attempt`` (0 for the first retry).

    The delay is ``initial * factor ** attempt`` capped at ``maximum``, then
    scaled down by a random factor in ``[1 - jitter, 1]`` so that clients cut off
    together (a server restart) do not all come back in the same instant. The
    cap is never exceeded.

    ``prompt`` is the (jittered, capped) delay after a server that served us
    said it is going away: it is restarting, so come back soon, whatever the
    attempt count.
    """

    initial: float = 0.5
    factor: float = 2.0
    maximum: float = 30.0
    jitter: float = 0.5
    prompt: float = 1.0

    def __attrs_post_init__(self) -> None:
        if not 0 < self.initial <= self.maximum:
            raise ValueError("backoff needs 0 < initial <= maximum")
        if not self.prompt > 0:
            raise ValueError("backoff prompt must be positive")
        if self.factor < 1:
            raise ValueError("backoff factor must be at least 1")
        if not 0 <= self.jitter <= 1:
            raise ValueError("backoff jitter must be between 0 and 1")

    def ceiling(self, attempt: int) -> float:
        """The delay for ``attempt`` before jitter."""
        delay = self.initial
        if self.factor == 1:
            return delay
        for _ in range(attempt):  # ends once the cap is reached: a few dozen steps at most
            delay *= self.factor
            if delay >= self.maximum:
                return self.maximum
        return delay

    def delay(self, attempt: int, rng: random.Random) -> float:
        return self._jittered(self.ceiling(attempt), rng)

    @property
    def prompt_ceiling(self) -> float:
        """``prompt``, but never above the cap."""
        return min(self.prompt, self.maximum)

    def prompt_delay(self, rng: random.Random) -> float:
        """The delay before coming back to a server that said it is going away."""
        return self._jittered(self.prompt_ceiling, rng)

    def _jittered(self, ceiling: float, rng: random.Random) -> float:
        return ceiling * (1 - self.jitter * rng.random())
