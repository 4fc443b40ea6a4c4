"""`make tune`: choose each server's knobs once, by measurement, and leave the servers deployed with them.

A small grid of the knobs that matter (TF: server-side batching; TorchServe:
workers, batch size, delay). In each of `repeats` repeats every point is
deployed in turn (both servers at once: TF_GRID and TORCH_GRID are paired
entry by entry) and every target loaded closed loop; points and targets take
turns in an order rotated from one repeat to the next. Per server the grid runs
from the simplest point, and a later point is chosen only when its throughput,
summed over the server's targets, beats the point chosen so far beyond the
spread (choose_point).

Why a step of its own: when `make sweep` chose the knobs itself, two sweeps in
a row chose differently on one fast repeat, and the SLO maxima moved with the
choice. Tuning once and sweeping with fixed knobs makes two sweeps measure the
same servers. The tuning is recorded in artifacts/results/<tune-id>/tune.json
(every run also a summary.json under steps/), and artifacts/run/tuned.json
names it, so a sweep can say which tuning its knobs came from.
"""

from __future__ import annotations

import dataclasses
import json
from datetime import UTC, datetime
from pathlib import Path

from common.errors import UsageError
from common.spread import Spread, spread_text
from loadtests import pinning, repeats, runner, summary
from loadtests.config import RunConfig, SweepConfig
from loadtests.sweep import TUNED_FILE, Sweep, current_knobs, knobs_text, shown_knobs
from loadtests.targets import resolve_targets
from serving.config import DeployConfig
from serving.record import read_record

TF_GRID = ({"enable_batching": False},
           {"enable_batching": True, "max_batch_size": 8, "batch_timeout_micros": 1000},
           {"enable_batching": True, "max_batch_size": 32, "batch_timeout_micros": 2000})
TORCH_GRID = ({"workers": 1, "batch_size": 1, "max_batch_delay_ms": 0},
              {"workers": 1, "batch_size": 8, "max_batch_delay_ms": 5},
              {"workers": 2, "batch_size": 8, "max_batch_delay_ms": 5})
GRIDS = {"tf": TF_GRID, "torch": TORCH_GRID}  # each from the simplest point; paired entry by entry
KNOB_RULE = ("every point in every repeat; per server the simplest point, unless a later one's throughput summed "
             "over the server's targets beats it beyond the spread (its lowest repeat above the other's highest)")


def throughput_sums(runs: dict[str, list[list[dict]]], names: list[str]) -> list[Spread | None]:
    """Per knob point, the spread over repeats of the throughput summed over `names` (None: a run was invalid)."""
    sums = []
    for point in zip(*(runs[name] for name in names), strict=True):  # point: one list of repeats per target
        per_repeat = list(zip(*point, strict=True))  # one tuple of the targets' runs per repeat
        valid = all(run["valid"] for repeat in per_repeat for run in repeat)
        sums.append(Spread.of([sum(run["throughput_rps"] for run in repeat) for repeat in per_repeat])
                    if valid else None)
    return sums


def choose_point(sums: list[Spread | None]) -> int:
    """The grid point the server keeps: the simplest one (index 0) unless a later one beats it beyond the spread.

    Walking the grid in order, a point replaces the one chosen so far only when its lowest repeat is
    above that one's highest: a configuration earns its complexity by a measurable difference, and a
    tie within the noise always resolves the same way. An invalid point (None) is never chosen over a valid one.
    """
    chosen = 0
    for index, spread in enumerate(sums):
        if spread is not None and (sums[chosen] is None or spread.low > sums[chosen].high):
            chosen = index
    return chosen


def knob_choice(runs: dict[str, list[list[dict]]], points: list[dict[str, dict]], side: str,
                names: list[str]) -> dict:
    """One server's knob points with their summed throughput, and the one chosen (choose_point)."""
    sums = throughput_sums(runs, names)
    chosen = choose_point(sums)
    for index, spread in enumerate(sums):
        print(f"  {side:<5} knobs {knobs_text(points[index][side]):<26} "
              f"{spread_text(spread.as_json() if spread else None):>24} req/s summed over {', '.join(names)}"
              f"{'  <- chosen' if index == chosen else ''}", flush=True)
    return {"rule": KNOB_RULE, "chosen": chosen,
            "points": [{"knobs": shown_knobs(point[side]), "throughput_sum": spread.as_json() if spread else None}
                       for point, spread in zip(points, sums, strict=True)]}


def grid_points(sides: list[str]) -> list[dict[str, dict]]:
    """The knob points to measure, each {side: knobs}: the sides' grids, entry by entry."""
    count = max(len(GRIDS[side]) for side in sides)
    return [{side: GRIDS[side][min(index, len(GRIDS[side]) - 1)] for side in sides} for index in range(count)]


def _batching_file(knobs: dict, directory: Path) -> Path:
    path = directory / f"batching-{knobs['max_batch_size']}-{knobs['batch_timeout_micros']}.config"
    path.write_text(f"max_batch_size {{ value: {knobs['max_batch_size']} }}\n"
                    f"batch_timeout_micros {{ value: {knobs['batch_timeout_micros']} }}\n"
                    "max_enqueued_batches { value: 100 }\nnum_batch_threads { value: 2 }\n", encoding="utf-8")
    return path


def _deploy_config_for(side: str, knobs: dict, base: DeployConfig, directory: Path) -> DeployConfig:
    """The deploy settings that give this server these knobs (TF: a batching file written for them)."""
    if side == "torch":
        return dataclasses.replace(base, ts_workers=knobs["workers"], ts_batch_size=knobs["batch_size"],
                                   ts_max_batch_delay_ms=knobs["max_batch_delay_ms"])
    if not knobs["enable_batching"]:
        return dataclasses.replace(base, tf_enable_batching=False)
    batching_file = Path(knobs["file"]) if knobs.get("file") else _batching_file(knobs, directory)
    return dataclasses.replace(base, tf_enable_batching=True, tf_batching_file=batching_file)


def redeploy(side: str, knobs: dict, base: DeployConfig, directory: Path) -> None:
    """Restart one server with these knobs, unless it already runs with them (deploy's own checks and records)."""
    from serving.deploy import deploy_tf, deploy_torch, undeploy_one

    if read_record(base.run_dir, side) and runs_with(current_knobs(side, base), knobs):
        return
    undeploy_one(base, side)
    (deploy_tf if side == "tf" else deploy_torch)(_deploy_config_for(side, knobs, base, directory))


def redeploy_all(point: dict[str, dict], base: DeployConfig, directory: Path) -> None:
    """Every server of a point {side: knobs} on its knobs."""
    for side, knobs in point.items():
        redeploy(side, knobs, base, directory)


def runs_with(current: dict, wanted: dict) -> bool:
    """Whether a server with `current` knobs already has every knob `wanted` names (a grid entry, or all found)."""
    return all(key in current and current[key] == value for key, value in wanted.items())


def deploy_variables(side: str, knobs: dict) -> str:
    """The `make deploy` environment that gives a server these knobs again."""
    if side == "torch":
        return (f"TS_WORKERS={knobs['workers']} TS_BATCH_SIZE={knobs['batch_size']} "
                f"TS_MAX_BATCH_DELAY_MS={knobs['max_batch_delay_ms']}")
    if not knobs["enable_batching"]:
        return "TF_ENABLE_BATCHING=0"
    return f"TF_ENABLE_BATCHING=1 TF_BATCHING_FILE={knobs['file']}"


def run_tune(cfg: RunConfig) -> dict:
    if cfg.rate is not None:
        raise UsageError("tune loads closed loop (--users); --rate belongs to `run` and the sweep's search")
    harness = Sweep(SweepConfig(run=cfg), "tune")  # the sweep's way of measuring, without its steps
    targets = resolve_targets(cfg.targets, harness.deploy_cfg, cfg.host)  # exit 2 before any load
    names, sides = [t.name for t in targets], sorted({t.side for t in targets})
    compose = [side for side in sides if read_record(harness.deploy_cfg.run_dir, side).mode == "compose"]
    if compose:
        raise UsageError(f"{', '.join(compose)}: compose services take their knobs from docker-compose.yml; "
                         "tune redeploys native servers (TF_SERVER=dropin TS_SERVER=native make deploy)")
    found = {side: current_knobs(side, harness.deploy_cfg) for side in sides}
    points = grid_points(sides)
    harness.dir.mkdir(parents=True, exist_ok=True)
    created = datetime.now(UTC).isoformat(timespec="seconds")
    print(f"tune {cfg.run_id}: {len(points)} knob points x {len(names)} targets x {cfg.repeats} repeats, closed loop, "
          f"{cfg.users} users, {cfg.duration_s:g} s per run ({cfg.warmup_s:g} s warm-up)", flush=True)
    harness.progress.replan(len(points) * len(names) * cfg.repeats)
    plan = pinning.plan_cpus([t.server["cpus"] for t in targets], cfg.pin)
    try:
        runs = harness.closed_loop(names, points, lambda point: redeploy_all(point, harness.deploy_cfg, harness.dir))
    except BaseException:
        redeploy_all(found, harness.deploy_cfg, harness.dir)  # an interrupted tuning leaves the deployment it found
        raise
    choice = {side: knob_choice(runs, points, side, [t.name for t in targets if t.side == side]) for side in sides}
    chosen = {side: points[choice[side]["chosen"]][side] for side in sides}
    redeploy_all(chosen, harness.deploy_cfg, harness.dir)
    chosen = {side: current_knobs(side, harness.deploy_cfg) for side in sides}  # as deployed: TF's file included
    servers = {t.name: t.server for t in resolve_targets(tuple(names), harness.deploy_cfg, cfg.host)}  # as chosen
    invalid = [f"{name}: {reason}" for name in names for point in runs[name] for run in point
               for reason in run["invalid_reasons"]]
    document = {"kind": "tune", "schema_version": 1, "run_id": cfg.run_id, "created": created,
                "model": {"name": cfg.model, "profile": harness.profile, "batch_size": 1},
                "method": {"repeats": cfg.repeats, "users": cfg.users, "duration_s": cfg.duration_s,
                           "warmup_s": cfg.warmup_s, "rule": KNOB_RULE,
                           "order": [repeats.rotated(names, r) for r in range(cfg.repeats)]},
                "environment": runner.environment_record(plan, cfg), "choice": choice,
                "targets": {t.name: {"server": servers[t.name], "knob_grid": _grid_rows(runs[t.name], points, t.side)}
                            for t in targets},
                "valid": not invalid, "invalid_reasons": invalid}
    summary.write(harness.dir / "tune.json", document, "tune")
    _record_choice(harness.deploy_cfg.run_dir, cfg.run_id, chosen)
    for side in sides:
        print(f"  {side}: deployed with {knobs_text(chosen[side])}; to deploy it so again: "
              f"{deploy_variables(side, chosen[side])} make deploy", flush=True)
    print(f"tune: {harness.dir / 'tune.json'}  (make sweep now measures these knobs)")
    return document


def _grid_rows(runs: list[list[dict]], points: list[dict[str, dict]], side: str) -> list[dict]:
    """A target's knob-grid record: every closed-loop run at every point, with the point's knobs."""
    return [{"knobs": shown_knobs(point[side]), **run}
            for point, point_runs in zip(points, runs, strict=True) for run in point_runs]


def _record_choice(run_dir: Path, run_id: str, chosen: dict[str, dict]) -> None:
    """artifacts/run/tuned.json: which tuning chose the knobs the servers now run with (read by the sweep)."""
    path = run_dir / TUNED_FILE
    # a side this run did not tune keeps the entry of the run that did
    record = json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}
    record.update({side: {"run_id": run_id, "knobs": shown_knobs(knobs)} for side, knobs in chosen.items()})
    path.write_text(json.dumps(record, indent=2, sort_keys=True) + "\n", encoding="utf-8")
