"""Faults under load: each fault is injected while locust offers a steady rate, and measured on its timeline.

  kill-worker      TorchServe's backend worker is killed (SIGKILL); TorchServe starts another
  rollout          a new model version goes live: TF by a new version directory (the server polls for it),
                   TorchServe through its management API (register v2, make it the default, unregister v1)
  broken-version   TF only: a version directory that does not load; the old version must keep serving
  restart          the whole server is stopped and deployed again
  overload         2x the saturation rate for 30 s between two phases at half of it

Each fault gives one row per stack: requests and failures (by kind) after the fault, the time until every
request succeeded again (recovery_s), and what the fault was meant to change (the new version answering).
Every fault leaves the servers as deploy left them.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from common.errors import UsageError
from loadtests.targets import Target
from reliability.traffic import Load, Timeline, Traffic
from serving.config import DeployConfig

FAULT_AT_S = 5.0  # steady load before the fault, so the row has a "before" to compare with
SETTLE_S = 60.0  # the longest a fault's effect is waited for (a worker restart, a version load)


@dataclass
class Stage:
    """What every fault needs: the deployed targets, the payloads, where timelines go, the steady load."""

    cfg: DeployConfig
    targets: dict[str, Target]
    payload_file: Path
    run_dir: Path
    rate: float
    duration_s: float

    def target(self, name: str) -> Target:
        if name not in self.targets:
            raise UsageError(f"{name} is not deployed; run 'make deploy' first")
        return self.targets[name]

    def traffic(self, target: Target, name: str, load: Load | None = None) -> Traffic:
        key_file = target.record.key_file if target.record and target.side == "torch" else None
        return Traffic(target, load or Load(self.rate, self.duration_s), self.payload_file, self.run_dir,
                       f"{name}-{target.name}", token_file=key_file)


def fault_row(fault: str, target: Target, timeline: Timeline, fault_at: float, **extra: object) -> dict:
    """One row of the chaos table: the load before the fault and after it, and the recovery."""
    before, after = timeline.split_at(fault_at)
    return {"fault": fault, "stack": target.side, "target": target.name,
            "fault_at_s": round(fault_at - timeline.started, 2), "before": before, "after": after,
            "recovery_s": timeline.recovery_s(fault_at), "dropped_by_generator": timeline.dropped, **extra}


def wait_for(condition: Callable[[], object], timeout: float = SETTLE_S, every: float = 0.2) -> float | None:
    """Seconds until condition() is truthy, or None when `timeout` passed first."""
    begun = time.monotonic()
    while time.monotonic() - begun < timeout:
        if condition():
            return round(time.monotonic() - begun, 2)
        time.sleep(every)
    return None


def get_json(url: str, headers: dict[str, str] | None = None) -> object | None:
    """The JSON a local API answers at `url`, or None when it does not answer 200 (yet)."""
    try:
        with urllib.request.urlopen(urllib.request.Request(url, headers=headers or {}), timeout=5) as response:
            return json.load(response)
    except (OSError, ValueError):
        return None


# -- TF: versions come and go as directories ------------------------------------------------------------------

def tf_versions(stage: Stage) -> dict[int, str]:
    """{version: state} from the server's model status API (TF Serving's GET /v1/models/<model>)."""
    port = stage.cfg.ports("tf")["rest"]
    status = get_json(f"http://127.0.0.1:{port}/v1/models/{stage.cfg.model}") or {}
    return {int(v["version"]): v["state"] for v in status.get("model_version_status", [])}


def _serving_version(stage: Stage) -> int | None:
    available = [version for version, state in tf_versions(stage).items() if state == "AVAILABLE"]
    return max(available, default=None)


def _place_version(source: Path, base: Path, version: int) -> Path:
    """Copy a version in under a hidden name, then rename: the poller never sees half a SavedModel."""
    hidden, final = base / f".incoming-{version}", base / str(version)
    shutil.copytree(source, hidden)
    os.replace(hidden, final)
    return final


def _remove_versions(stage: Stage, directories: list[Path], keep: int) -> None:
    for directory in directories:
        shutil.rmtree(directory, ignore_errors=True)
    if wait_for(lambda: _serving_version(stage) == keep) is None:
        raise RuntimeError(f"the TF server did not return to version {keep} after the fault's versions were removed")


def _available_version(stage: Stage) -> int:
    old = _serving_version(stage)
    if old is None:
        raise RuntimeError("the TF server has no AVAILABLE version; deploy it again (make deploy-tf)")
    return old


def _next_version(base: Path) -> int:
    return max(int(p.name) for p in base.iterdir() if p.name.isdigit()) + 1


def tf_rollout(stage: Stage) -> dict:
    """A copy of the serving version placed as the next version: zero failures, and the new one serves."""
    target = stage.target("tf-rest")
    base = stage.cfg.paths.tf_model_base(stage.cfg.model)
    old = _available_version(stage)
    new = _next_version(base)
    placed: list[Path] = []
    try:
        with stage.traffic(target, "rollout") as traffic:
            time.sleep(FAULT_AT_S)
            fault_at = time.time()
            placed.append(_place_version(base / str(old), base, new))
            live_after = wait_for(lambda: _serving_version(stage) == new)
        timeline = traffic.timeline()
        versions = tf_versions(stage)
        return fault_row("rollout", target, timeline, fault_at, new_version=new,
                         new_version_serving_s=live_after, versions_after=_state_text(versions),
                         how="version directory copied in (atomic rename); the server polls every second")
    finally:
        _remove_versions(stage, placed, keep=old)


def tf_broken_version(stage: Stage) -> dict:
    """A version directory whose SavedModel is garbage: it must fail to load and the old version keep serving."""
    target = stage.target("tf-rest")
    base = stage.cfg.paths.tf_model_base(stage.cfg.model)
    old = _available_version(stage)
    broken = base / str(_next_version(base))
    hidden = base / f".incoming-{broken.name}"
    try:
        with stage.traffic(target, "broken-version") as traffic:
            time.sleep(FAULT_AT_S)
            hidden.mkdir()
            (hidden / "saved_model.pb").write_bytes(b"this is not a SavedModel")
            fault_at = time.time()
            os.replace(hidden, broken)
            settled = wait_for(lambda: int(broken.name) in tf_versions(stage))
        timeline = traffic.timeline()
        versions = tf_versions(stage)
        return fault_row("broken-version", target, timeline, fault_at, new_version=int(broken.name),
                         broken_version_seen_s=settled, versions_after=_state_text(versions),
                         old_version_serving=_serving_version(stage) == old)
    finally:
        shutil.rmtree(hidden, ignore_errors=True)
        _remove_versions(stage, [broken], keep=old)


def _state_text(versions: dict[int, str]) -> str:
    return ", ".join(f"v{version} {state}" for version, state in sorted(versions.items())) or "none"


# -- TorchServe: the backend worker ------------------------------------------------------------------------------

def _management(stage: Stage):
    """TorchServe's management API with the management token deploy's key file holds."""
    from serving.smoke import token_for
    from serving.torch.management import Management

    return Management(stage.cfg.ports("torch")["management"], token_for(stage.cfg, "torch-rest", api="management"))


def torch_workers(stage: Stage) -> list[dict]:
    """The model's workers from TorchServe's management API ([] while it does not answer)."""
    from serving.torch.management import ManagementError

    try:
        return _management(stage).workers(stage.cfg.model)
    except (OSError, ValueError, ManagementError):  # not answering yet, or answering 5xx while it restarts
        return []


def kill_worker(stage: Stage) -> dict:
    """SIGKILL the backend worker under load; TorchServe notices and starts a new one."""
    target = stage.target("torch-rest")
    with stage.traffic(target, "kill-worker") as traffic:
        time.sleep(FAULT_AT_S)
        workers = torch_workers(stage)
        if not workers or not workers[0].get("pid"):
            raise RuntimeError("TorchServe's management API lists no worker process to kill")
        killed = int(workers[0]["pid"])
        fault_at = time.time()
        os.kill(killed, signal.SIGKILL)
        back = wait_for(lambda: any(w.get("status") == "READY" and int(w.get("pid") or 0) not in (0, killed)
                                    for w in torch_workers(stage)), every=0.5)
    return fault_row("kill-worker", target, traffic.timeline(), fault_at, killed_pid=killed,
                     new_worker_ready_s=back)


def torch_rollout(stage: Stage) -> dict:
    """Register the next version from the model store, make it the default, unregister the old one, under load.

    The new version is the same model in an archive whose manifest names the next version (TorchServe keys
    versions by it). Afterwards the original archive is rolled out again the same way, and the copy deleted.
    """
    from serving.torch.server import mar_version, mar_with_version

    target, api, model = stage.target("torch-rest"), _management(stage), stage.cfg.model
    original = stage.cfg.paths.torch_model_store / f"{model}.mar"
    old = mar_version(original)
    new = f"{int(float(old)) + 1}.0" if old.replace(".", "", 1).isdigit() else f"{old}-next"
    archive = mar_with_version(original, new, original.with_name(f"{model}-v{new}.mar"))
    knobs = target.server["knobs"]
    sizes = {"workers": knobs["workers"], "batch_size": knobs["batch_size"],
             "max_batch_delay_ms": knobs["max_batch_delay_ms"]}
    try:
        with stage.traffic(target, "rollout") as traffic:
            time.sleep(FAULT_AT_S)
            fault_at = time.time()
            api.roll_out(model, archive.name, **sizes)
            rolled_out_s = round(time.time() - fault_at, 2)
        versions = api.versions(model)
        return fault_row("rollout", target, traffic.timeline(), fault_at, new_version=new,
                         new_version_serving_s=rolled_out_s if versions == {new: True} else None,
                         versions_after=", ".join(f"v{v}{' default' if d else ''}" for v, d in versions.items()),
                         how="management API: register v2 (synchronous), set-default, drain v1's queue, unregister v1")
    finally:
        if api.versions(model) != {old: True}:
            api.roll_out(model, original.name, **sizes)
        archive.unlink(missing_ok=True)


# -- both: restart, overload ---------------------------------------------------------------------------------

def restart(stage: Stage, target_name: str) -> dict:
    """Stop the whole server and deploy it again under load (TorchServe comes back with new tokens)."""
    from serving.deploy import deploy_tf, deploy_torch, undeploy_one

    target = stage.target(target_name)
    with stage.traffic(target, "restart", Load(stage.rate, max(stage.duration_s, 45.0))) as traffic:
        time.sleep(FAULT_AT_S)
        fault_at = time.time()
        undeploy_one(stage.cfg, target.side)
        stopped = time.time()
        (deploy_tf if target.side == "tf" else deploy_torch)(stage.cfg)
        redeployed = time.time()
    timeline = traffic.timeline()
    return fault_row("restart", target, timeline, fault_at, stop_s=round(stopped - fault_at, 2),
                     deploy_s=round(redeployed - stopped, 2),
                     first_success_after_stop_s=timeline.first_success_after(fault_at))


def overload(stage: Stage, target_name: str, saturation_rps: float, seconds: float = 30.0) -> dict:
    """Half the saturation rate, then twice it for `seconds`, then half again: is load shed, and how fast back."""
    target = stage.target(target_name)
    normal, heavy = saturation_rps / 2, saturation_rps * 2
    phases = ((10.0, normal), (seconds, heavy), (20.0, normal))
    load = Load(normal, sum(s for s, _ in phases), steps=phases, users=16)
    with stage.traffic(target, "overload", load) as traffic:
        pass
    timeline = traffic.timeline()
    begin = timeline.started
    overload_at, overload_end = begin + phases[0][0], begin + phases[0][0] + phases[1][0]
    return {"fault": "overload", "stack": target.side, "target": target.name,
            "saturation_rps": round(saturation_rps, 1),
            "phases": [{"seconds": s, "offered_rps": round(r, 1)} for s, r in phases],
            "before": timeline.summary(begin, overload_at),
            "during": {**timeline.summary(overload_at, overload_end),
                       "achieved_rps": _achieved(timeline, overload_at, overload_end)},
            "after": timeline.summary(overload_end),
            "recovery_s": timeline.recovery_s(overload_end),
            "latency_back_s": _latency_back(timeline, overload_at, overload_end, phases[2][0]),
            "dropped_by_generator": timeline.dropped}


def _achieved(timeline: Timeline, start: float, end: float) -> float:
    answered = [r for r in timeline.between(start, end) if r.ok]
    return round(len(answered) / (end - start), 1)


def _latency_back(timeline: Timeline, overload_at: float, overload_end: float, last_phase_s: float) -> float | None:
    """Seconds after the overload until a one-second bin's median latency is within 2x the one before it.

    None when no bin of the last phase (normal load again) got there."""
    before = timeline.latency(timeline.started, overload_at)
    if not before:
        return None
    bound, moment = 2 * before["p50"], overload_end
    while moment < overload_end + last_phase_s:
        window = timeline.latency(moment, moment + 1.0)
        if window and window["p50"] <= bound and not timeline.failures(moment, moment + 1.0):
            return round(moment - overload_end, 1)
        moment += 1.0
    return None


def saturation_for(stage: Stage, target_name: str) -> float:
    """The target's saturation throughput now: 8 users, closed loop, for 12 s, just before the overload.

    Measured here rather than taken from the newest sweep: a sweep measured the servers as they were then, and a
    newer drop-in served twice the sweep's figure on the same machine, so "twice the saturation" was not an
    overload at all (chaos 20261207-095655: tf-rest offered 1,451 req/s against a sweep's 725, answered them all).
    """
    with stage.traffic(stage.target(target_name), "saturation", Load(0.0, 12.0)) as traffic:
        pass
    timeline = traffic.timeline()
    return _achieved(timeline, timeline.started + 4.0, timeline.started + 12.0)


# -- the run -------------------------------------------------------------------------------------------------

def _overload(stage: Stage, target_name: str) -> dict:
    return {**overload(stage, target_name, saturation_for(stage, target_name)),
            "saturation_from": "measured just before (8 users, closed loop, 12 s)"}


# Every fault by name: the targets it runs on, in order, and the function that injects and measures it.
FAULTS: dict[str, tuple[tuple[str, Callable[[Stage], dict]], ...]] = {
    "kill-worker": (("torch-rest", kill_worker),),
    "rollout": (("tf-rest", tf_rollout), ("torch-rest", torch_rollout)),
    "broken-version": (("tf-rest", tf_broken_version),),
    "restart": (("tf-rest", lambda stage: restart(stage, "tf-rest")),
                ("torch-rest", lambda stage: restart(stage, "torch-rest"))),
    "overload": (("tf-rest", lambda stage: _overload(stage, "tf-rest")),
                 ("torch-rest", lambda stage: _overload(stage, "torch-rest"))),
}
SHORT_FAULTS = ("kill-worker", "rollout", "broken-version")  # what `make test` runs: no restart, no overload


def run_chaos(stage: Stage, faults: tuple[str, ...], say: Callable[[str], None] = print) -> list[dict]:
    """Each fault on each of its targets in turn; a row per (fault, target), printed as it completes."""
    rows = []
    plan = [(fault, name, inject) for fault in faults for name, inject in FAULTS[fault]]
    for number, (fault, name, inject) in enumerate(plan, 1):
        say(f"[chaos {number} of {len(plan)}] {fault} on {name} under {stage.rate:g} req/s ...")
        row = inject(stage)
        say("  " + row_text(row))
        rows.append(row)
    return rows


def row_text(row: dict) -> str:
    """One line per fault: failures after it, by kind, and the recovery."""
    after = row.get("during") or row["after"]
    kinds = ", ".join(f"{kind} x{count}" for kind, count in sorted(after["failure_kinds"].items())) or "none"
    recovery = "not seen" if row["recovery_s"] is None else f"{row['recovery_s']:g} s"
    return (f"{row['fault']:<15} {row['target']:<10} {after['failed']:>5} of {after['requests']:>6} failed "
            f"({kinds}); recovered after {recovery}")
