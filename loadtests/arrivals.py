"""Open-loop arrivals: the gaps between one user's requests (imported by the locustfile, testable without locust)."""

from __future__ import annotations

import itertools
import random
from collections.abc import Iterator


def arrival_gaps(kind: str, mean_s: float, seed: int, slot: int) -> Iterator[float]:
    """One user's seconds between arrivals: exponential with this mean (Poisson), or fixed.

    Each user draws from its own stream, seeded by the run's seed and the user's slot, so a
    run's arrivals are the same every time and the users' Poisson processes are independent
    (together: one Poisson process at the total rate, as MLPerf's Server scenario).
    """
    if kind == "fixed":
        return itertools.repeat(mean_s)
    stream = random.Random(f"{seed}/{slot}")
    return (stream.expovariate(1.0 / mean_s) for _ in itertools.count())


class RateSteps:
    """Open-loop phases: (seconds, rate) in order from the test's start; the last rate holds after them."""

    def __init__(self, steps: list[tuple[float, float]], started: float) -> None:
        self.steps, self.started = steps, started

    @classmethod
    def parse(cls, text: str, started: float) -> RateSteps | None:
        if not text:
            return None
        try:
            steps = [(float(seconds), float(rate)) for seconds, rate in (item.split(":") for item in text.split(","))]
        except ValueError:
            raise ValueError(f"--loadtest-rate-steps {text!r} is not SECONDS:RATE,...") from None
        if any(seconds <= 0 or rate <= 0 for seconds, rate in steps):
            raise ValueError(f"--loadtest-rate-steps {text!r}: every duration and rate must be positive")
        return cls(steps, started)

    def at(self, now: float) -> float:
        elapsed = now - self.started
        for seconds, rate in self.steps:
            if elapsed < seconds:
                return rate
            elapsed -= seconds
        return self.steps[-1][1]
