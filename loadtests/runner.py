"""One load-test run: prepare payloads, pin, drive locust at each target, check validity, write summary.json.

Locust runs as its own process (a master plus workers when asked), on the
generator's CPU set; this process only starts it, prints progress from its
history CSV, samples its CPU use over the steady-state window and turns its
record into the summary.
"""

from __future__ import annotations

import csv
import json
import math
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path

import numpy as np
import psutil

from common.cpus import pin_self
from common.environment import host_record, package_versions
from common.paths import REPO_ROOT
from common.procs import free_port, log_tail, start_group, stop_group
from loadtests import pinning, repeats, summary
from loadtests.config import RunConfig
from loadtests.server_stats import ServerWatch
from loadtests.targets import Target

LOCUSTFILE = REPO_ROOT / "loadtests" / "locustfile.py"
SATURATED_CPU_PERCENT = 90.0  # locust's event loop is one Python thread: past this it is the bottleneck
MAX_SEND_LAG_MS = 10.0  # open loop: arrivals sent this late mean the generator, not the server, set the pace
MIN_ACHIEVED_SHARE = 0.95  # open loop: completing fewer of the arrivals than this means the server fell behind
EARLY_STOP_FAILURE_RATIO = 0.5  # more failures than this after warm-up: the server is down, stop wasting time
PROGRESS_EVERY_S = 5.0
LOCUST_START_TIMEOUT_S = 120.0


@dataclass
class LocustProcesses:
    """Locust's processes, each the leader of its own process group (common.procs.start_group)."""

    processes: list[subprocess.Popen]

    def alive(self) -> bool:
        return self.processes[0].poll() is None

    def cpu_seconds(self) -> list[float]:
        """User + system CPU seconds per process (0 for one that has ended)."""
        seconds = []
        for process in self.processes:
            try:
                times = psutil.Process(process.pid).cpu_times()
                seconds.append(times.user + times.system)
            except psutil.Error:
                seconds.append(0.0)
        return seconds

    def stop(self) -> None:
        """The master first: on SIGTERM it tells its workers to stop, collects their records and writes its own."""
        for process in self.processes:
            stop_group(process.pid, timeout=15)


def loadtest_options(cfg: RunConfig, target: Target, payload_file: Path, record: Path, repeat: int = 0) -> list[str]:
    """The locustfile's own options; master and workers both need them (workers pick their user class)."""
    options = ["--loadtest-target", target.name, "--loadtest-payloads", str(payload_file),
               "--loadtest-model", cfg.model, "--loadtest-warmup", f"{cfg.warmup_s:g}",
               "--loadtest-rate", f"{cfg.rate or 0:g}", "--loadtest-users", str(cfg.users),
               "--loadtest-arrivals", cfg.arrivals, "--loadtest-seed", str(cfg.seed + repeat),
               "--loadtest-processes", str(max(1, cfg.workers)), "--loadtest-check-every", str(cfg.check_every),
               "--loadtest-timeout", f"{cfg.timeout_s:g}", "--loadtest-max-inflight", str(cfg.max_inflight),
               "--loadtest-record", str(record)]
    # "=": a Host header may begin with "-", which argparse would take for an option of its own.
    # The token is not an option: it goes in the environment (locust_environment).
    return options + ([f"--loadtest-host-header={target.host_header}"] if target.host_header else [])


def locust_environment(target: Target) -> dict[str, str]:
    """Locust's environment: this one, with the target's token as LOADTEST_TOKEN ('' when it has none).

    A command-line option would show the token to every local user in `ps`; a process's environment is readable
    by its owner only. configargparse passes it on as '--loadtest-token=<token>', so a leading '-' is safe.
    """
    return {**os.environ, "LOADTEST_TOKEN": target.token or ""}


def start_locust(cfg: RunConfig, target: Target, options: list[str], prefix: Path, log: Path,
                 cpus: list[int] | None) -> LocustProcesses:
    """Locust headless on the generator CPUs: one local process, or a master and cfg.workers workers."""
    locust = [sys.executable, "-m", "locust", "-f", str(LOCUSTFILE)]
    master = [*locust, "--headless", "--only-summary", "--host", target.locust_host, "-u", str(cfg.users),
              "-r", str(cfg.users), "--run-time", f"{math.ceil(cfg.duration_s)}s", "--stop-timeout", "5",
              "--csv", str(prefix), "--csv-full-history", *options]
    commands = [master]
    if cfg.workers:
        port = str(free_port())
        master += ["--master", "--expect-workers", str(cfg.workers), "--master-bind-host", "127.0.0.1",
                   "--master-bind-port", port]
        commands += [[*locust, "--worker", "--master-host", "127.0.0.1", "--master-port", port, *options]] * cfg.workers
    env = locust_environment(target)
    return LocustProcesses([start_group(command, log, cwd=REPO_ROOT, env=env, cpus=cpus) for command in commands])


def _latest_history(prefix: Path, name: str) -> dict | None:
    path = Path(f"{prefix}_stats_history.csv")
    try:
        with open(path, newline="", encoding="utf-8") as handle:
            rows = [row for row in csv.DictReader(handle) if row.get("Name") == name]
    except OSError:
        return None
    return rows[-1] if rows else None


def file_stem(target_name: str, repeat: int) -> str:
    """The name of one repeat's locust files: '<target>-r<k>' (k from 1)."""
    return f"{target_name}-r{repeat + 1}"


def drive(cfg: RunConfig, target: Target, payload_file: Path, plan: pinning.CpuPlan, repeat: int = 0) -> dict:
    """Run locust against one target; the raw record plus generator CPU use and how the run ended."""
    cfg.run_dir.mkdir(parents=True, exist_ok=True)
    stem = file_stem(target.name, repeat)
    prefix, record_file = cfg.run_dir / stem, cfg.run_dir / f"{stem}.record.json"
    log = cfg.run_dir / f"{stem}.locust.log"
    options = loadtest_options(cfg, target, payload_file, record_file, repeat)
    locust = start_locust(cfg, target, options, prefix, log, plan.generator_cpus)
    watch = ServerWatch(target.record, target.host)  # the server's side of the same window
    launched, started = time.monotonic(), None  # started: when locust's test began (its first CSV row)
    cpu_at_warm = wall_at_warm = cpu_at_end = wall_at_end = None
    stop, printed = "duration", -PROGRESS_EVERY_S
    try:
        while locust.alive():
            time.sleep(0.5)
            now = time.monotonic()
            if started is None:
                if Path(f"{prefix}_stats_history.csv").exists():
                    started = now
                elif now - launched > LOCUST_START_TIMEOUT_S:
                    stop = f"early stop: locust did not start within {LOCUST_START_TIMEOUT_S:g} s"
                    break
                continue
            elapsed = now - started
            if cfg.warmup_s <= elapsed <= cfg.duration_s:  # CPU use over the steady window only
                sample = locust.cpu_seconds(), now
                watch.start()  # once: at the first sample of the window
                if cpu_at_warm is None:
                    cpu_at_warm, wall_at_warm = sample
                else:
                    cpu_at_end, wall_at_end = sample
            row = _latest_history(prefix, target.name)
            if not cfg.quiet and elapsed - printed >= PROGRESS_EVERY_S:
                printed = elapsed
                _progress(target.name, elapsed, cfg, row, repeat)
            if row and elapsed > cfg.warmup_s + 3 and _mostly_failing(row):
                stop = "early stop: more than half the requests failed"
                break
            if elapsed > cfg.duration_s + 60:
                stop = "early stop: locust did not end 60 s after its run time"
                break
    finally:
        locust.stop()
        server_side = watch.stop(settle_s=2.0)  # TorchServe updates its counters just after answering
    if not record_file.exists():
        raise RuntimeError(f"{target.name}: locust wrote no record; its log ends with:\n{log_tail(log, 25)}")
    raw = json.loads(record_file.read_text(encoding="utf-8"))
    raw["cpu_percent"] = _busiest_cpu_percent(cpu_at_warm, wall_at_warm, cpu_at_end, wall_at_end)
    raw["stop"] = stop
    raw["server_side"] = server_side
    return raw


def _mostly_failing(row: dict) -> bool:
    requests, failures = float(row.get("Total Request Count") or 0), float(row.get("Total Failure Count") or 0)
    return requests >= 20 and failures / requests > EARLY_STOP_FAILURE_RATIO


def _busiest_cpu_percent(before: list[float] | None, t0: float | None, after: list[float] | None,
                         t1: float | None) -> float | None:
    if before is None or after is None or t0 is None or t1 is None or t1 <= t0:
        return None
    return max(100.0 * (end - start) / (t1 - t0) for start, end in zip(before, after, strict=True))


def _progress(name: str, elapsed: float, cfg: RunConfig, row: dict | None, repeat: int) -> None:
    phase = "warm-up" if elapsed < cfg.warmup_s else "steady"
    counted_s = elapsed if elapsed < cfg.warmup_s else max(elapsed - cfg.warmup_s, 0.5)  # stats restart at warm-up
    rps = (f"{float(row['Total Request Count']) / counted_s:7.1f} req/s  failures {row['Total Failure Count']}"
           if row else "starting")
    print(f"  {name:<10} repeat {repeat + 1}/{cfg.repeats} {phase:<7} {min(elapsed, cfg.duration_s):5.1f}/"
          f"{cfg.duration_s:g} s  {rps}", flush=True)


def validity(cfg: RunConfig, raw: dict, requests: int) -> list[str]:
    """Why a target's figures cannot be trusted, each reason once; empty when they can."""
    reasons = []
    arrivals, completed = raw.get("arrivals") or 0, len(raw["latencies_ms"])
    if cfg.rate and arrivals and completed < MIN_ACHIEVED_SHARE * arrivals:
        window = raw["window_s"] or cfg.window_s
        reasons.append(f"server fell behind the offered load: achieved {completed / window:.1f} req/s, "
                       f"{completed / arrivals:.0%} of the {arrivals / window:.1f} req/s offered "
                       f"({completed} of {arrivals} arrivals answered; at least {MIN_ACHIEVED_SHARE:.0%} needed)")
    cpu = raw.get("cpu_percent")
    if cpu is not None and cpu >= SATURATED_CPU_PERCENT:
        reasons.append(f"load generator saturated: a locust process used {cpu:.0f}% of a core "
                       f"(limit {SATURATED_CPU_PERCENT:.0f}%); add workers (--workers) or cores")
    lags = raw.get("lags_ms") or []
    if cfg.rate and lags and float(np.percentile(lags, 99)) > MAX_SEND_LAG_MS:
        reasons.append(f"open loop fell behind: p99 send lag {np.percentile(lags, 99):.1f} ms "
                       f"(limit {MAX_SEND_LAG_MS:g} ms)")
    dropped = raw["dropped"]
    if dropped:
        reasons.append(f"{dropped} arrivals dropped: more than {cfg.max_inflight} outstanding per user")
    failures = sum(raw["failures"].values())
    if failures:
        reasons.append(f"{failures} failed requests: {', '.join(f'{k} {v}' for k, v in raw['failures'].items())}")
    if requests == 0:
        reasons.append("no request completed in the steady-state window")
    if raw["stop"] != "duration":
        reasons.append(raw["stop"])
    return reasons


def target_result(cfg: RunConfig, target: Target, raw: dict, ceiling: dict | None, repeat: int = 0) -> dict:
    """One repeat of one target. Requests are the ones sent: dropped arrivals are counted apart."""
    latencies = raw["latencies_ms"]
    failures = sum(raw["failures"].values())
    requests = len(latencies) + failures
    # The window locust really recorded (it can end a little before the planned one); 0 if it never started.
    window_s = raw["window_s"]
    throughput = len(latencies) / window_s if window_s > 0 else 0.0
    lags = raw.get("lags_ms") or []
    reasons = validity(cfg, raw, requests)
    arrivals = raw.get("arrivals") or 0
    stem = file_stem(target.name, repeat)
    return {
        "target": target.name, "framework": target.framework, "transport": target.transport,
        "server": target.server, "repeat": repeat + 1, "requests": requests, "failures": failures,
        "failures_by_kind": dict(sorted(raw["failures"].items())), "dropped": raw["dropped"],
        "checked_responses": raw["checked"], "measured_window_s": window_s,
        "throughput_rps": throughput, "images_per_s": throughput * cfg.batch_size,
        "offered": {"mode": cfg.mode, "users": cfg.users, "rate_rps": cfg.rate,
                    "arrivals": cfg.arrivals if cfg.rate else None, "seed": cfg.seed + repeat if cfg.rate else None,
                    "measured_rps": arrivals / window_s if cfg.rate and window_s > 0 else None},
        "latency_ms": summary.percentiles(latencies),
        "generator": {"cpu_percent": raw.get("cpu_percent"),
                      "saturated": any(r.startswith("load generator saturated") for r in reasons),
                      "send_lag_ms_p99": float(np.percentile(lags, 99)) if lags else None},
        "ceiling": ({"in_process_rps": ceiling["calls_per_s"], "fraction": throughput / ceiling["calls_per_s"],
                     "in_process_p50_ms": ceiling["p50_ms"], "runtime": ceiling["runtime"]} if ceiling else None),
        "server_side": raw.get("server_side"),
        "valid": not reasons, "invalid_reasons": reasons,
        "files": {"stats_csv": f"{stem}_stats.csv", "history_csv": f"{stem}_stats_history.csv",
                  "failures_csv": f"{stem}_failures.csv", "locust_log": f"{stem}.locust.log"},
    }


def measure_ceiling(cfg: RunConfig, framework_side: str, cpus: list[int] | None, seconds: float = 5.0) -> dict:
    """The in-process ceiling in a fresh process on the servers' CPU set (the framework's own speed)."""
    command = [sys.executable, "-m", "loadtests.ceiling", "--framework", framework_side, "--model", cfg.model,
               "--batch-size", str(cfg.batch_size), "--seconds", f"{seconds:g}", "--artifacts", str(cfg.artifacts)]
    done = subprocess.run(command, cwd=REPO_ROOT, capture_output=True, text=True, timeout=600,
                          preexec_fn=lambda: pin_self(cpus))
    if done.returncode != 0:
        raise RuntimeError(f"in-process ceiling ({framework_side}) failed:\n{done.stderr[-1500:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def environment_record(plan: pinning.CpuPlan, cfg: RunConfig) -> dict:
    return {"host": host_record(), "packages": package_versions(),
            "pinning": plan.record(),
            "generator": {"tool": "locust", "version": metadata.version("locust"),
                          "processes": max(1, cfg.workers), "distributed": bool(cfg.workers),
                          "check_every": cfg.check_every}}


def run(cfg: RunConfig, targets: list[Target], payload_file: Path) -> dict:
    """Every target, cfg.repeats times in rotating order; summary.json written, validated and returned."""
    from loadtests.payloads import load as load_payloads

    cfg.run_dir.mkdir(parents=True, exist_ok=True)
    meta = load_payloads(payload_file).meta
    plan = pinning.plan_cpus([t.server["cpus"] for t in targets], cfg.pin)
    created = datetime.now(UTC).isoformat(timespec="seconds")
    by_target: dict[str, list[dict]] = {t.name: [] for t in targets}
    ceilings, stops, order = {}, {}, []
    for repeat in range(cfg.repeats):
        turn = repeats.rotated(targets, repeat)
        order.append([t.name for t in turn])
        for target in turn:
            if cfg.ceiling and target.side not in ceilings:
                say(cfg, f"  {target.framework}: in-process ceiling at batch {cfg.batch_size} ...")
                ceilings[target.side] = measure_ceiling(cfg, target.side, plan.server_cpus)
            raw = drive(cfg, target, payload_file, plan, repeat)
            by_target[target.name].append(target_result(cfg, target, raw, ceilings.get(target.side), repeat))
            if raw["stop"] != "duration":
                stops[f"{target.name} repeat {repeat + 1}"] = raw["stop"]
    results = {name: repeats.fold(measured) for name, measured in by_target.items()}
    invalid = [f"{name}: {reason}" for name, result in results.items() for reason in result["invalid_reasons"]]
    document = {
        "kind": "loadtest", "schema_version": 2, "run_id": cfg.run_id, "created": created, "mode": cfg.mode,
        "model": {"name": cfg.model, "profile": meta["profile"], "batch_size": cfg.batch_size,
                  "multiply_accumulates": meta.get("multiply_accumulates")},
        "window": {"warmup_s": cfg.warmup_s, "duration_s": cfg.window_s,  # planned; measured: per target
                   "stop": "; ".join(f"{name}: {stop}" for name, stop in stops.items()) or "duration"},
        "load": {"users": cfg.users, "rate_rps": cfg.rate, "generator_processes": max(1, cfg.workers),
                 "arrivals": cfg.arrivals if cfg.rate else None},
        "repeats": {"count": cfg.repeats, "order": order},
        "environment": environment_record(plan, cfg),
        "valid": not invalid, "invalid_reasons": invalid, "targets": results,
    }
    summary.write(cfg.run_dir / "summary.json", document)
    return document


def say(cfg: RunConfig, message: str) -> None:
    if not cfg.quiet:
        print(message, flush=True)
