"""The delay before a client answers a forwarded ``message Y`` with ``ok Y``.

Shared by nea-client and nea-loadtest. Written on nea-loadtest's command line
as ``0`` (answer at once), ``0.25`` (always that many seconds), ``uniform:A,B``
or ``exp:MEAN`` (seconds).
"""

import random

import attrs


@attrs.frozen
class Constant:
    seconds: float

    def draw(self, rng: random.Random) -> float:
        return self.seconds


@attrs.frozen
class Uniform:
    low: float
    high: float

    def draw(self, rng: random.Random) -> float:
        return rng.uniform(self.low, self.high)


@attrs.frozen
class Exponential:
    mean: float

    def draw(self, rng: random.Random) -> float:
        return rng.expovariate(1.0 / self.mean) if self.mean > 0 else 0.0


Delay = Constant | Uniform | Exponential


def parse(text: str) -> Delay:
    """``"0"``, ``"0.5"``, ``"uniform:0,2"``, ``"exp:0.5"`` -> a delay; ValueError if malformed."""
    kind, colon, args = text.partition(":")
    delay: Delay
    try:
        if not colon:
            seconds = float(kind)
            delay, numbers = Constant(seconds), [seconds]
        elif kind == "uniform":
            low, high = (float(a) for a in args.split(","))
            if low > high:
                raise ValueError(f"uniform needs A <= B, got {args}")
            delay, numbers = Uniform(low, high), [low, high]
        elif kind == "exp":
            mean = float(args)
            delay, numbers = Exponential(mean), [mean]
        else:
            raise ValueError(f"unknown distribution {kind!r}")
    except ValueError as e:
        raise ValueError(
            f"bad delay {text!r} ({e}); use 0, SECONDS, uniform:A,B or exp:MEAN"
        ) from None
    if any(n < 0 or n != n or n == float("inf") for n in numbers):
        raise ValueError(f"bad delay {text!r}: seconds must be finite and >= 0")
    return delay
