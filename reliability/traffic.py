"""Load in the background while a fault happens: locust, open loop, every request kept with its send time.

A fault's figures come from that timeline: how many requests failed and how, and how long from the fault until
requests succeeded again. Locust runs on the CPUs the servers leave free, as in the load tests.
"""

from __future__ import annotations

import json
import statistics
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from common.procs import log_tail
from loadtests import pinning
from loadtests.config import RunConfig
from loadtests.progress import clock
from loadtests.runner import LOCUST_START_TIMEOUT_S, LocustProcesses, loadtest_options, start_locust
from loadtests.summary import samples_needed
from loadtests.targets import Target

QUIT_GRACE_S = 30.0  # after its run time, locust writes its timeline and quits
PROGRESS_EVERY_S = 30.0  # a run of a minute or more (a soak) says how far it is, this often


@dataclass
class Load:
    """What the generator offers: `rate` arrivals per second (Poisson), or `steps` of (seconds, rate)."""

    rate: float
    duration_s: float
    steps: tuple[tuple[float, float], ...] = ()
    users: int = 8
    timeout_s: float = 10.0  # a request unanswered this long is a failure (the client gives up)

    def describe(self) -> str:
        if self.steps:
            return ", then ".join(f"{rate:g} req/s for {seconds:g} s" for seconds, rate in self.steps)
        return f"{self.rate:g} req/s for {self.duration_s:g} s"


@dataclass(frozen=True)
class Request:
    sent_at: float  # Unix seconds
    latency_ms: float
    outcome: str  # "ok" or the failure kind: "HTTP 503", "UNAVAILABLE", "connection_error", "refused_token", ...

    @property
    def ok(self) -> bool:
        return self.outcome == "ok"

    @property
    def answered_at(self) -> float:
        return self.sent_at + self.latency_ms / 1000.0


@dataclass
class Timeline:
    requests: list[Request]
    started: float  # Unix seconds when the load was started
    dropped: int = 0  # arrivals the generator could not send (its in-flight cap): not the server's doing
    notes: list[str] = field(default_factory=list)

    def between(self, start: float, end: float) -> list[Request]:
        return [r for r in self.requests if start <= r.sent_at < end]

    def failures(self, start: float = 0.0, end: float = float("inf")) -> Counter[str]:
        return _failures(self.between(start, end))

    def recovery_s(self, fault_at: float) -> float | None:
        """Seconds from the fault until the first request from which every later one succeeded.

        0 when nothing failed after the fault; None when the last request still failed (no recovery seen).
        """
        after = sorted((r for r in self.requests if r.answered_at >= fault_at), key=lambda r: r.sent_at)
        failed = [index for index, request in enumerate(after) if not request.ok]
        if not failed:
            return 0.0
        if failed[-1] == len(after) - 1:
            return None
        return round(max(0.0, after[failed[-1] + 1].sent_at - fault_at), 2)

    def first_success_after(self, moment: float) -> float | None:
        """Seconds from `moment` to the first request sent after it that succeeded, or None."""
        return next((round(r.sent_at - moment, 2) for r in self.between(moment, float("inf")) if r.ok), None)

    def latency(self, start: float = 0.0, end: float = float("inf")) -> dict | None:
        """p50 / p99 / max of the successful requests sent in [start, end), in ms; None without any."""
        return _latency(self.between(start, end))

    def summary(self, start: float = 0.0, end: float = float("inf")) -> dict:
        """Requests, failures by kind and latency of those sent in [start, end)."""
        return _summary(self.between(start, end))

    def split_at(self, fault_at: float) -> tuple[dict, dict]:
        """Summaries of the requests answered before the fault, and of the rest.

        A request in flight when the fault struck (a killed worker's batch, a stopped server's open connection)
        counts against the fault, not against the load before it.
        """
        before = [r for r in self.requests if r.answered_at < fault_at]
        after = [r for r in self.requests if r.answered_at >= fault_at]
        return _summary(before), _summary(after)


def _failures(requests: list[Request]) -> Counter[str]:
    return Counter(r.outcome for r in requests if not r.ok)


def _latency(requests: list[Request]) -> dict | None:
    values = sorted(r.latency_ms for r in requests if r.ok)
    if not values:
        return None
    p99 = float(np.percentile(values, 99)) if len(values) >= samples_needed(99) else None  # the load tests' rule
    return {"p50": round(statistics.median(values), 2), "p99": None if p99 is None else round(p99, 2),
            "max": round(values[-1], 2), "samples": len(values)}


def _summary(requests: list[Request]) -> dict:
    """Requests, failures by kind and latency: what each fault row reports for a window."""
    failures = _failures(requests)
    return {"requests": len(requests), "failed": sum(failures.values()), "failure_kinds": dict(failures),
            "latency_ms": _latency(requests)}


class Traffic:
    """One locust process against one target, writing its timeline; use as a context manager."""

    def __init__(self, target: Target, load: Load, payload_file: Path, run_dir: Path, name: str,
                 token_file: str | None = None) -> None:
        self.target, self.load, self.payload_file, self.name = target, load, payload_file, name
        self.run_dir, self.token_file = run_dir, token_file
        self.timeline_file = run_dir / f"{name}.timeline.json"
        self.log = run_dir / f"{name}.locust.log"
        self.locust: LocustProcesses | None = None
        self.started = 0.0

    def __enter__(self) -> Traffic:
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.timeline_file.unlink(missing_ok=True)
        cfg = RunConfig(targets=(self.target.name,), users=self.load.users, rate=self.load.rate or None,
                        duration_s=self.load.duration_s, warmup_s=0.0, timeout_s=self.load.timeout_s,
                        artifacts=self.run_dir, run_id=self.name, quiet=True, repeats=1)
        options = loadtest_options(cfg, self.target, self.payload_file, self.run_dir / f"{self.name}.record.json")
        options.append(f"--loadtest-timeline={self.timeline_file}")
        if self.load.steps:
            options.append("--loadtest-rate-steps=" + ",".join(f"{s:g}:{r:g}" for s, r in self.load.steps))
        if self.token_file:
            options.append(f"--loadtest-token-file={self.token_file}")
        plan = pinning.plan_cpus([self.target.server.get("cpus")])
        self.locust = start_locust(cfg, self.target, options, self.run_dir / self.name, self.log,
                                   plan.generator_cpus)
        self.wait_until_sending()
        return self

    def wait_until_sending(self) -> None:
        """Until locust's test has begun (its first stats row), so that a fault is injected under load."""
        history = Path(f"{self.run_dir / self.name}_stats_history.csv")
        deadline = time.monotonic() + LOCUST_START_TIMEOUT_S
        while not history.exists():
            if time.monotonic() > deadline or not self.locust.alive():
                self.locust.stop()
                raise RuntimeError(f"{self.name}: locust did not start; its log ends with:\n{log_tail(self.log, 20)}")
            time.sleep(0.2)
        self.started = time.time()

    def __exit__(self, *exc_info: object) -> None:
        """Let the run end on its own (its timeline is written as it quits); stop it on an error."""
        deadline = time.monotonic() + self.load.duration_s + QUIT_GRACE_S
        next_report = time.time() + PROGRESS_EVERY_S
        while exc_info[0] is None and self.locust.alive() and time.monotonic() < deadline:
            time.sleep(0.2)
            if self.load.duration_s >= 2 * PROGRESS_EVERY_S and time.time() >= next_report \
                    and time.time() < self.started + self.load.duration_s - 1:
                self.report_progress()
                next_report += PROGRESS_EVERY_S
        self.locust.stop()

    def report_progress(self) -> None:
        elapsed = time.time() - self.started
        left = max(0.0, self.load.duration_s - elapsed)
        print(f"  {self.name}: {clock(elapsed)} of {clock(self.load.duration_s)}, {clock(left)} left", flush=True)

    def timeline(self) -> Timeline:
        if not self.timeline_file.exists():
            raise RuntimeError(f"{self.name}: locust wrote no timeline; its log ends with:\n{log_tail(self.log, 20)}")
        rows = json.loads(self.timeline_file.read_text(encoding="utf-8"))
        record_file = self.run_dir / f"{self.name}.record.json"
        dropped = json.loads(record_file.read_text(encoding="utf-8")).get("dropped", 0) if record_file.exists() else 0
        return Timeline([Request(*row) for row in rows], self.started, dropped)
