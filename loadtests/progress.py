"""Progress of a long job made of measurements: 'k of N, elapsed, about T left', one line per measurement."""

from __future__ import annotations

import time


def clock(seconds: float) -> str:
    """'1:05' or '1:02:05'."""
    seconds = int(round(seconds))
    hours, rest = divmod(seconds, 3600)
    return f"{hours}:{rest // 60:02d}:{rest % 60:02d}" if hours else f"{rest // 60}:{rest % 60:02d}"


class Progress:
    """Counts measurements against a planned total (which may be revised as a search learns its length)."""

    def __init__(self, planned: int, label: str) -> None:
        self.planned, self.label, self.done = planned, label, 0
        self.started = time.monotonic()

    def replan(self, planned: int) -> None:
        self.planned = max(planned, self.done + 1)

    def begin(self, what: str) -> None:
        """Print the line for the measurement about to start."""
        elapsed = time.monotonic() - self.started
        left = (f", about {clock(elapsed / self.done * (self.planned - self.done))} left" if self.done else "")
        print(f"[{self.label} {self.done + 1} of {self.planned}, {clock(elapsed)} elapsed{left}] {what}", flush=True)

    def end(self) -> None:
        self.done += 1
        self.planned = max(self.planned, self.done)
