"""`make sweep`: per target, the highest throughput whose p99 stays under the SLO.

Order of work, all recorded in artifacts/results/<sweep-id>/sweep.json (each
measurement is also a run of its own with a summary.json under steps/):

1. calibration: the generator against trivial endpoints (its ceiling here);
2. the in-process ceiling of each framework at batch 1;
3. per server, a small grid of the knobs that matter, each redeployed and
   loaded closed-loop; the best valid throughput per target wins;
4. with the best knobs: open-loop steps at fractions of that closed-loop
   (saturation) throughput, then closed-loop runs at other batch sizes.

The SLO-bounded maximum is the highest throughput of a valid step (no
failures, generator not saturated) whose p99 <= the SLO. The knee is the
highest offered load whose p50 stays within 2x the lowest step's p50.
The deployment found at the start is restored at the end.
"""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime
from pathlib import Path

from common.procs import free_port, stop_group
from loadtests import calibrate, pinning, runner, summary
from loadtests.config import SweepConfig
from loadtests.payloads import prepare
from loadtests.targets import Target, resolve_targets
from serving.config import DeployConfig
from serving.record import read_record

KNEE_FACTOR = 2.0
# Knobs that matter, a small grid each. TF: server-side batching; TorchServe: workers, batch size, delay.
TF_GRID = ({"enable_batching": False},
           {"enable_batching": True, "max_batch_size": 8, "batch_timeout_micros": 1000},
           {"enable_batching": True, "max_batch_size": 32, "batch_timeout_micros": 2000})
TORCH_GRID = ({"workers": 1, "batch_size": 1, "max_batch_delay_ms": 0},
              {"workers": 1, "batch_size": 8, "max_batch_delay_ms": 5},
              {"workers": 2, "batch_size": 8, "max_batch_delay_ms": 5})


def quick(cfg: SweepConfig) -> SweepConfig:
    """The demo's sweep: no knob grid, four load steps, two batch sizes (step length stays the caller's)."""
    return dataclasses.replace(cfg, load_fractions=(0.3, 0.7, 1.0, 1.2), batch_sizes=(1, 8), knob_grid=False)


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


def runs_with(current: dict, wanted: dict) -> bool:
    """Whether a server with `current` knobs already has every knob `wanted` names (a grid entry, or all found)."""
    return all(key in current and current[key] == value for key, value in wanted.items())


def current_knobs(side: str, base: DeployConfig) -> dict:
    """The knobs of the running server, in the grid's terms, from its deploy record ({} when none runs).

    TF: "file" is kept so that restoring the deployment found at the start gives the server that very
    file again; sizes the record does not know (None) are left out, so no grid entry matches them.
    """
    record = read_record(base.run_dir, side)
    if record is None:
        return {}
    knobs = dataclasses.asdict(record.knobs)
    if side == "torch":
        return {key: knobs[key] for key in ("workers", "batch_size", "max_batch_delay_ms")}
    found = {"enable_batching": knobs["enable_batching"], "file": knobs["batching_parameters_file"]}
    if found["enable_batching"]:
        found.update({key: knobs[key] for key in ("max_batch_size", "batch_timeout_micros") if knobs[key] is not None})
    return found


class Sweep:
    def __init__(self, cfg: SweepConfig) -> None:
        self.cfg = cfg
        self.base = cfg.run
        self.deploy_cfg = DeployConfig(model=self.base.model, artifacts=self.base.artifacts)
        self.dir = self.base.run_dir
        self.payloads: dict[int, Path] = {}

    @property
    def profile(self) -> str:
        from loadtests.payloads import load

        return load(self.payload(1)).meta["profile"]

    def payload(self, batch_size: int) -> Path:
        if batch_size not in self.payloads:
            self.payloads[batch_size] = prepare(self.deploy_cfg.paths, self.base.model, batch_size,
                                                self.dir / f"payloads-b{batch_size}.npz")
        return self.payloads[batch_size]

    def measure(self, target_name: str, label: str, batch_size: int = 1, rate: float | None = None) -> dict:
        """One run of one target (its own run directory and summary.json); the target's result.

        No in-process ceiling per step: the sweep measures it once per framework.
        """
        cfg = dataclasses.replace(self.base, targets=(target_name,), rate=rate, batch_size=batch_size,
                                  run_id=f"{self.base.run_id}/steps/{target_name}-{label}", ceiling=False,
                                  quiet=True)
        target = resolve_targets((target_name,), self.deploy_cfg, cfg.host)[0]
        document = runner.run(cfg, [target], self.payload(batch_size))
        result = document["targets"][target_name]
        result["run_id"] = cfg.run_id
        print(f"  {target_name:<10} {label:<24} {result['throughput_rps']:8.1f} req/s  "
              f"p50 {_ms(result['latency_ms']['p50'])}  p99 {_ms(result['latency_ms']['p99'])}  "
              f"{'valid' if result['valid'] else 'INVALID: ' + '; '.join(result['invalid_reasons'])}", flush=True)
        return result

    def calibrate(self, plan: pinning.CpuPlan) -> dict:
        rest_port, grpc_port = free_port(), free_port()
        endpoints = calibrate.start_endpoints(rest_port, grpc_port, plan.server_cpus, self.dir / "calibration.log")
        figures = {}
        try:
            for name, port in (("tf-rest", rest_port), ("tf-grpc", grpc_port)):
                # Only its address matters: drive() sends the REST or gRPC payloads the target name picks.
                target = Target(name, "127.0.0.1", port, {"identity": "loadtests/calibrate.py trivial endpoint"})
                cfg = dataclasses.replace(self.base, targets=(name,), rate=None, check_every=0, ceiling=False,
                                          run_id=f"{self.base.run_id}/calibration", quiet=True)
                raw = runner.drive(cfg, target, self.payload(1), plan)
                figures[name] = {"rps": len(raw["latencies_ms"]) / (raw["window_s"] or cfg.window_s),
                                 "cpu": raw["cpu_percent"]}
        finally:
            stop_group(endpoints.pid)
        cpu = [f["cpu"] for f in figures.values() if f["cpu"] is not None]
        result = {"rest_rps": figures["tf-rest"]["rps"], "grpc_rps": figures["tf-grpc"]["rps"],
                  "users": self.base.users, "generator_cpu_percent": max(cpu) if cpu else None,
                  "endpoints": "asyncio HTTP/1.1 keep-alive and grpcio generic handler, answering at once"}
        print(f"  calibration: generator ceiling {result['rest_rps']:.0f} req/s REST, "
              f"{result['grpc_rps']:.0f} req/s gRPC ({self.base.users} users)", flush=True)
        return result

    def knob_grid(self, side: str, names: list[str]) -> dict[str, list[dict]]:
        rows: dict[str, list[dict]] = {name: [] for name in names}
        grid = TF_GRID if side == "tf" else TORCH_GRID
        running = read_record(self.deploy_cfg.run_dir, side)
        if self.cfg.knob_grid and running and running.mode == "compose":
            # Redeploying here would restart the native server or the cpu profile, not the running containers.
            print(f"  {side}: knob grid skipped: compose services take their knobs from docker-compose.yml")
            return rows
        for index, knobs in enumerate(grid if self.cfg.knob_grid else ()):
            redeploy(side, knobs, self.deploy_cfg, self.dir)
            for name in names:
                result = self.measure(name, f"knobs{index}-closed")
                rows[name].append({"knobs": knobs, "throughput_rps": result["throughput_rps"],
                                   "latency_ms": result["latency_ms"], "valid": result["valid"],
                                   "run_id": result["run_id"]})
        return rows

    def steps(self, name: str, saturation: float) -> list[dict]:
        steps = []
        for fraction in sorted(self.cfg.load_fractions):
            rate = max(1.0, round(saturation * fraction, 1))
            result = self.measure(name, f"open-{rate:g}rps", rate=rate)
            steps.append({"offered_rps": rate, "throughput_rps": result["throughput_rps"],
                          "latency_ms": result["latency_ms"], "failures": result["failures"],
                          "valid": result["valid"], "invalid_reasons": result["invalid_reasons"],
                          "run_id": result["run_id"]})
        return steps

    def batch_sizes(self, name: str, batch1: dict) -> list[dict]:
        rows = [{"batch_size": 1, "throughput_rps": batch1["throughput_rps"], "images_per_s": batch1["images_per_s"],
                 "latency_ms": batch1["latency_ms"], "valid": batch1["valid"], "run_id": batch1["run_id"]}]
        for batch_size in sorted(set(self.cfg.batch_sizes) - {1}):
            result = self.measure(name, f"closed-b{batch_size}", batch_size=batch_size)
            rows.append({"batch_size": batch_size, "throughput_rps": result["throughput_rps"],
                         "images_per_s": result["images_per_s"], "latency_ms": result["latency_ms"],
                         "valid": result["valid"], "run_id": result["run_id"]})
        return rows


def slo_max(steps: list[dict], slo_ms: float) -> float | None:
    within = [s["throughput_rps"] for s in steps if s["valid"] and s["latency_ms"]["p99"] is not None
              and s["latency_ms"]["p99"] <= slo_ms]
    return max(within) if within else None


def knee(steps: list[dict]) -> float | None:
    valid = [s for s in steps if s["valid"] and s["latency_ms"]["p50"] is not None]
    if not valid:
        return None
    floor = valid[0]["latency_ms"]["p50"]
    within = [s["offered_rps"] for s in valid if s["latency_ms"]["p50"] <= KNEE_FACTOR * floor]
    return max(within) if within else None


def _best(rows: list[dict]) -> dict | None:
    valid = [row for row in rows if row["valid"]]
    return max(valid or rows, key=lambda row: row["throughput_rps"]) if rows else None


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f} ms"


def run_sweep(cfg: SweepConfig) -> dict:
    base = cfg.run
    sweep = Sweep(cfg)
    targets = resolve_targets(base.targets, sweep.deploy_cfg, base.host)  # exit 2 before any load
    sides = sorted({t.side for t in targets})
    found = {side: current_knobs(side, sweep.deploy_cfg) for side in sides}
    sweep.dir.mkdir(parents=True, exist_ok=True)
    created = datetime.now(UTC).isoformat(timespec="seconds")
    print(f"sweep {base.run_id}: SLO p99 <= {cfg.slo_ms:g} ms, {base.users} users, steps of "
          f"{base.duration_s:g} s ({base.warmup_s:g} s warm-up)", flush=True)
    plan = pinning.plan_cpus([t.server["cpus"] for t in targets], base.pin)
    calibration = sweep.calibrate(plan)
    ceilings = {}
    for side in sides:
        ceilings[side] = runner.measure_ceiling(dataclasses.replace(base, batch_size=1), side, plan.server_cpus)
        print(f"  {side}: in-process ceiling {ceilings[side]['calls_per_s']:.0f} calls/s at batch 1", flush=True)
    results = {}
    try:
        for side in sides:
            names = [t.name for t in targets if t.side == side]
            grid = sweep.knob_grid(side, names)
            for name in names:
                results[name] = _sweep_target(sweep, side, name, grid[name], found[side], ceilings[side])
    finally:
        for side in sides:
            redeploy(side, found[side], sweep.deploy_cfg, sweep.dir)
    invalid = [f"{name}: no valid step within the SLO" for name, r in results.items() if r["slo_max_rps"] is None]
    document = {"kind": "sweep", "schema_version": 1, "run_id": base.run_id, "created": created,
                "slo_ms": cfg.slo_ms, "model": {"name": base.model, "profile": sweep.profile, "batch_size": 1},
                "environment": runner.environment_record(plan, base), "calibration": calibration,
                "targets": results, "valid": not invalid, "invalid_reasons": invalid}
    summary.write(sweep.dir / "sweep.json", document, "sweep")
    print(sweep_table(document))
    print(f"sweep: {sweep.dir / 'sweep.json'}")
    return document


def _sweep_target(sweep: Sweep, side: str, name: str, grid: list[dict], found: dict, ceiling: dict) -> dict:
    best = _best(grid)
    knobs = best["knobs"] if best else {k: v for k, v in found.items() if k != "file"}
    redeploy(side, knobs if best else found, sweep.deploy_cfg, sweep.dir)
    closed = sweep.measure(name, "saturation-closed")
    saturation = closed["throughput_rps"]
    steps = sweep.steps(name, saturation)
    server = resolve_targets((name,), sweep.deploy_cfg, sweep.base.host)[0].server
    return {"server": server, "knob_grid": grid, "best_knobs": knobs, "steps": steps,
            "slo_max_rps": slo_max(steps, sweep.cfg.slo_ms), "knee_rps": knee(steps),
            "saturation_rps": saturation, "batch_sizes": sweep.batch_sizes(name, closed),
            "ceiling": {"in_process_rps": ceiling["calls_per_s"], "fraction": saturation / ceiling["calls_per_s"],
                        "runtime": ceiling["runtime"], "batch_size": 1}}


def knobs_text(knobs: dict) -> str:
    """The grid's knobs in a few words: 'batching 8 / 1000 us', 'batching off', '1 worker, batch 8, 5 ms'."""
    if "enable_batching" in knobs:
        if not knobs["enable_batching"]:
            return "batching off"
        return (f"batching {knobs['max_batch_size']} / {knobs['batch_timeout_micros']} us"
                if "max_batch_size" in knobs else "batching on (deploy's file)")
    if "workers" in knobs:
        return (f"{knobs['workers']} worker{'s' if knobs['workers'] > 1 else ''}, batch {knobs['batch_size']}, "
                f"{knobs['max_batch_delay_ms']} ms")
    return ", ".join(f"{k}={v}" for k, v in knobs.items())


def sweep_table(document: dict) -> str:
    lines = [f"{'target':<11}{'best knobs':<26}{'saturation':>11}{'knee':>8}{'SLO max':>9}{'x ceiling':>10}"
             f"{'x generator':>12}"]
    calibration = document["calibration"]
    for name, result in sorted(document["targets"].items()):
        generator = calibration["rest_rps" if name.endswith("rest") else "grpc_rps"]
        lines.append(f"{name:<11}{knobs_text(result['best_knobs']):<26}{result['saturation_rps']:>11.1f}"
                     f"{result['knee_rps'] or 0:>8.1f}{result['slo_max_rps'] or 0:>9.1f}"
                     f"{result['ceiling']['fraction']:>10.2f}{result['saturation_rps'] / generator:>12.2f}")
    return "\n".join(lines)
