"""Benchmark: what the TF Serving drop-in's front ends cost, against the in-process ceiling and beside TorchServe.

  python -m loadtests.bench_dropin [--models tiny,mobilenet] [--users 8] [--repeats 3] [--duration 20] [--warmup 5]

For each model (trained and exported first: make train export PROFILE=<model>), on
one CPU set: deploy both servers as `make deploy` does (the drop-in with
server-side batching on, TorchServe natively, both pinned to SERVER_CPUSET), then
`--repeats` times run `python -m loadtests run` (locust, closed loop, batch 1 per
request, pinned to the other CPUs), which measures each framework's in-process
ceiling and then every target in its own 3 rotated repeats, reporting their median;
then undeploy. Prints, per target, the median
req/s with its min-max over the repeats, the ratio to the in-process ceiling,
p50, and the p50 the server adds over one in-process call; a repeat whose load
generator saturated or that failed requests is left out and said so. Writes
artifacts/results/bench-dropin-<stamp>.json. Figures hold for this machine only.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
from datetime import UTC, datetime

from common.environment import host_record, package_versions, source_revision
from common.errors import OneLineArgumentParser, UsageError, run_cli
from common.fsutil import write_results_file
from common.paths import REPO_ROOT, ArtifactPaths, default_artifacts_root
from common.procs import free_port
from common.targets import NAMES
from serving.config import PORT_VARIABLES
from serving.record import read_record

# The issue's goals for the drop-in on `tiny`: its throughput as a fraction of TensorFlow in-process.
GOALS = {"tf-grpc": 0.8, "tf-rest": 0.6}


def _stage(env: dict[str, str], *args: str) -> None:
    """Run `python -m <args>` with the benchmark's environment; its output goes to the console."""
    done = subprocess.run([sys.executable, "-m", *args], cwd=REPO_ROOT, env=env, timeout=3600)
    if done.returncode != 0:
        raise UsageError(f"bench-dropin: 'python -m {' '.join(args)}' failed (exit {done.returncode}); see above")


def _environment(paths: ArtifactPaths, model: str) -> dict[str, str]:
    """Deploy's environment: the drop-in and native TorchServe on free ports, batching on (deploy's default)."""
    return {**os.environ, "ARTIFACTS": str(paths.root), "MODEL": model, "TF_SERVER": "dropin", "TS_SERVER": "native",
            **{name: str(free_port()) for name in PORT_VARIABLES}}


def _check_ready(paths: ArtifactPaths, model: str) -> None:
    if read_record(paths.run_dir, "tf") or read_record(paths.run_dir, "torch"):
        raise UsageError("bench-dropin deploys servers of its own; stop the running ones first (make undeploy)")
    if not (paths.torch_model_store / f"{model}.mar").is_file() or not paths.tf_model_base(model).is_dir():
        raise UsageError(f"no exported model {model!r}; run 'make train export PROFILE={model}' first")


def measure_model(paths: ArtifactPaths, model: str, args) -> list[dict]:
    """Deploy, run the load test `args.repeats` times, undeploy; the summaries of the runs."""
    env = _environment(paths, model)
    stamp = datetime.now(UTC).strftime("%Y%m%d-%H%M%S")
    summaries = []
    _stage(env, "serving", "deploy", "--target", "all")
    try:
        for repeat in range(1, args.repeats + 1):
            print(f"bench-dropin: {model}: repeat {repeat} of {args.repeats}", flush=True)
            run_id = f"bench-dropin-{model}-{stamp}-r{repeat}"
            _stage(env, "loadtests", "run", "--users", str(args.users), "--duration", f"{args.duration:g}",
                   "--warmup", f"{args.warmup:g}", "--model", model, "--run-id", run_id)  # all four targets
            summaries.append(json.loads((paths.results_dir / run_id / "summary.json").read_text()))
    finally:
        _stage(env, "serving", "undeploy")
    return summaries


def _spread(values: list[float]) -> dict | None:
    return {"median": statistics.median(values), "min": min(values), "max": max(values), "n": len(values)} \
        if values else None


def aggregate(summaries: list[dict]) -> dict:
    """Per target, over the valid repeats: req/s, fraction of the ceiling, p50 and p50 added over in-process."""
    table = {}
    for name in NAMES:
        runs = [s["targets"][name] for s in summaries if name in s["targets"]]
        valid = [r for r in runs if r["valid"] and r["ceiling"]]
        table[name] = {
            "server": runs[0]["server"]["identity"] if runs else None,
            "throughput_rps": _spread([r["throughput_rps"] for r in valid]),
            "fraction_of_in_process": _spread([r["ceiling"]["fraction"] for r in valid]),
            "in_process_rps": _spread([r["ceiling"]["in_process_rps"] for r in valid]),
            "p50_ms": _spread([r["latency_ms"]["p50"] for r in valid]),
            "added_p50_ms": _spread([r["latency_ms"]["p50"] - r["ceiling"]["in_process_p50_ms"] for r in valid]),
            "left_out": [f"{s['run_id']}: {'; '.join(s['targets'][name]['invalid_reasons'])}"
                         for s in summaries if name in s["targets"] and not s["targets"][name]["valid"]],
        }
    return table


def _cell(spread: dict | None, fmt: str) -> str:
    if spread is None:
        return "-"
    return f"{spread['median']:{fmt}} [{spread['min']:{fmt}}-{spread['max']:{fmt}}]"


def verdicts(model: str, table: dict) -> list[str]:
    """The goals and the p50 comparison, claimed only where the repeats' ranges allow it."""
    lines = []
    for name, goal in GOALS.items():
        fraction = table[name]["fraction_of_in_process"]
        if model != "tiny" or fraction is None:
            continue
        state = ("met" if fraction["min"] >= goal else "not met" if fraction["max"] < goal
                 else "not decided (the repeats straddle it)")
        lines.append(f"goal {name} >= {goal:g} x in-process: {state} ({_cell(fraction, '.2f')})")
    for transport in ("grpc", "rest"):
        tf, torch = table[f"tf-{transport}"]["added_p50_ms"], table[f"torch-{transport}"]["added_p50_ms"]
        if tf is None or torch is None:
            continue
        if tf["max"] < torch["min"]:
            word = "below TorchServe's"
        elif tf["min"] > torch["max"]:
            word = "above TorchServe's"
        else:
            word = "no measurable difference from TorchServe's"
        lines.append(f"{transport}: p50 added over in-process by the drop-in {_cell(tf, '.2f')} ms, {word} "
                     f"{_cell(torch, '.2f')} ms")
    return lines


def print_table(model: str, table: dict, summaries: list[dict]) -> None:
    pinning = summaries[0]["environment"]["pinning"] if summaries else {}
    print(f"\nmodel {model}: batch 1 per request, closed loop, {summaries[0]['load']['users'] if summaries else '?'} "
          f"users, {len(summaries)} repeats; median [min-max] over the valid repeats; pinning: {pinning}")
    print(f"{'target':<11} {'req/s':>24} {'x in-process':>20} {'in-process/s':>22} {'p50 ms':>20} "
          f"{'+p50 ms':>20}")
    for name, row in table.items():
        print(f"{name:<11} {_cell(row['throughput_rps'], '.1f'):>24} {_cell(row['fraction_of_in_process'], '.2f'):>20} "
              f"{_cell(row['in_process_rps'], '.1f'):>22} {_cell(row['p50_ms'], '.2f'):>20} "
              f"{_cell(row['added_p50_ms'], '.2f'):>20}")
        for reason in row["left_out"]:
            print(f"  left out: {reason}")
    for line in verdicts(model, table):
        print(line)


def main(argv: list[str] | None = None) -> int:
    parser = OneLineArgumentParser(prog="python -m loadtests.bench_dropin", description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="tiny,mobilenet", help="comma-separated; each must be exported")
    parser.add_argument("--users", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--duration", type=float, default=20.0, help="seconds per target, warm-up included")
    parser.add_argument("--warmup", type=float, default=5.0)
    args = parser.parse_args(argv)
    if args.users < 1 or args.repeats < 1 or args.duration <= args.warmup or args.warmup < 0:
        raise UsageError("--users and --repeats must be at least 1, and --duration longer than --warmup")
    paths = ArtifactPaths(default_artifacts_root())
    models = [m.strip() for m in args.models.split(",") if m.strip()]
    for model in models:
        _check_ready(paths, model)
    record = {"kind": "bench-dropin", "created": datetime.now(UTC).isoformat(timespec="seconds"),
              "server": "tf-serving-dropin (not the official binary) and TorchServe (native)",
              "users": args.users, "repeats": args.repeats, "duration_s": args.duration, "warmup_s": args.warmup,
              "host": host_record(), "packages": package_versions(), "source": source_revision(), "models": {}}
    for model in models:
        summaries = measure_model(paths, model, args)
        table = aggregate(summaries)
        print_table(model, table, summaries)
        record["models"][model] = {"targets": table, "verdicts": verdicts(model, table),
                                   "runs": [s["run_id"] for s in summaries]}
    out = write_results_file(paths.results_dir, f"bench-dropin-{datetime.now(UTC):%Y%m%d-%H%M%S}.json", record)
    print(f"written {out}")
    return 0


if __name__ == "__main__":
    run_cli(main)
