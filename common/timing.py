"""Timing calls one by one: the loop behind every latency figure measured in-process."""

from __future__ import annotations

import time
from collections.abc import Callable


def time_calls(step: Callable[[], object], warmup: int, iterations: int,
               synchronize: Callable[[], None] = lambda: None) -> list[float]:
    """Wall seconds of each of `iterations` calls of `step`, after `warmup` untimed ones.

    `synchronize` drains asynchronous work (a GPU stream) after the warm-up and inside each timed
    call, so a call's time includes the work it queued.
    """
    for _ in range(warmup):
        step()
    synchronize()
    seconds = []
    for _ in range(iterations):
        start = time.perf_counter()
        step()
        synchronize()
        seconds.append(time.perf_counter() - start)
    return seconds
