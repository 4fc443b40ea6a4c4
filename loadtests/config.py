"""Typed settings of a load-test run and of a sweep, with defaults that run and checks that say what is wrong."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from common.errors import UsageError
from common.paths import ArtifactPaths, default_artifacts_root, default_model
from common.targets import NAMES


def new_run_id(kind: str) -> str:
    return f"{datetime.now(UTC).strftime('%Y%m%d-%H%M%S')}-{kind}"


@dataclass
class RunConfig:
    """One run: every target in turn, each with the whole generator to itself.

    `duration_s` is the whole run per target (locust's --run-time); the first
    `warmup_s` of it are not counted, so the steady-state window is the rest.
    `rate` set means open loop (arrivals per second, Poisson unless `arrivals` is "fixed");
    unset means closed loop. Each target is loaded `repeats` times, each time by a fresh
    locust process, the targets' order rotated from one repeat to the next.
    """

    targets: tuple[str, ...] = NAMES
    users: int = 8
    rate: float | None = None
    duration_s: float = 35.0
    warmup_s: float = 5.0
    batch_size: int = 1
    model: str = field(default_factory=default_model)
    host: str = "127.0.0.1"
    artifacts: Path = field(default_factory=default_artifacts_root)
    run_id: str = ""
    check_every: int = 10
    workers: int = 0  # locust worker processes beside a master; 0 = one local process
    pin: bool = True
    ceiling: bool = True
    timeout_s: float = 10.0
    max_inflight: int = 64
    quiet: bool = False
    repeats: int = 3
    arrivals: str = "poisson"  # open loop: "poisson" or "fixed" gaps between arrivals
    seed: int = 0  # open loop: the Poisson streams' seed; repeat k uses seed + k

    def __post_init__(self) -> None:
        self.validate()
        if not self.run_id:
            self.run_id = new_run_id("open" if self.rate else "closed")

    def validate(self) -> None:
        unknown = [t for t in self.targets if t not in NAMES]
        if unknown or not self.targets:
            raise UsageError(f"unknown target {', '.join(unknown) or '(none)'}; choose from {', '.join(NAMES)}")
        if self.users < 1:
            raise UsageError(f"users must be at least 1, got {self.users}")
        if self.rate is not None and self.rate <= 0:
            raise UsageError(f"rate must be a positive number of requests per second, got {self.rate}")
        if self.warmup_s < 0:
            raise UsageError(f"warm-up must be 0 or more seconds, got {self.warmup_s}")
        if self.duration_s <= self.warmup_s:
            raise UsageError(f"duration ({self.duration_s:g} s) must be longer than the warm-up "
                             f"({self.warmup_s:g} s): the steady-state window is what is left")
        if self.batch_size < 1:
            raise UsageError(f"batch size must be at least 1, got {self.batch_size}")
        if self.check_every < 0:
            raise UsageError(f"check-every must be 0 (never check) or more, got {self.check_every}")
        if self.repeats < 1:
            raise UsageError(f"repeats must be at least 1, got {self.repeats}")
        if self.arrivals not in ("poisson", "fixed"):
            raise UsageError(f"arrivals must be poisson or fixed, got {self.arrivals!r}")
        if self.workers < 0:
            raise UsageError(f"workers must be 0 (one local process) or more, got {self.workers}")

    @property
    def mode(self) -> str:
        return "open" if self.rate else "closed"

    @property
    def window_s(self) -> float:
        return self.duration_s - self.warmup_s

    @property
    def paths(self) -> ArtifactPaths:
        return ArtifactPaths(Path(self.artifacts))

    @property
    def run_dir(self) -> Path:
        return self.paths.results_dir / self.run_id


@dataclass
class SweepConfig:
    """A sweep of the servers as deployed: saturation, SLO maximum by search, latency at a common load, batch sizes.

    `run.repeats` independent repeats of every figure that enters the verdict; each SLO probe
    lasts long enough for `min_requests` requests (its p99 rests on at least 1,000 by default);
    the search stops when its bracket is within `tolerance` of the failing rate.
    """

    run: RunConfig
    slo_ms: float = 100.0
    batch_sizes: tuple[int, ...] = (1, 8, 32)
    min_requests: int = 1000
    tolerance: float = 0.05

    def __post_init__(self) -> None:
        if self.slo_ms <= 0:
            raise UsageError(f"the SLO must be a positive number of milliseconds, got {self.slo_ms}")
        if not self.batch_sizes or min(self.batch_sizes) < 1:
            raise UsageError("batch sizes must be at least 1")
        if self.min_requests < 1:
            raise UsageError(f"min-requests must be at least 1, got {self.min_requests}")
        if not 0 < self.tolerance < 1:
            raise UsageError(f"the search tolerance must be between 0 and 1, got {self.tolerance}")
