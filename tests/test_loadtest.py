"""Load tests: a short real run against both real servers, answer checks, a tiny sweep, and bad input.

The long runs are benchmarks (make loadtest, make sweep); these runs last a
few seconds and assert behaviour, never speed.
"""

import dataclasses
import json
import os
import subprocess
import sys
from importlib import metadata
from pathlib import Path

import numpy as np
import pytest

from common.cpus import default_server_cpus, parse_server_cpus
from common.errors import UsageError
from common.paths import REPO_ROOT
from common.procs import free_port
from common.targets import NAMES
from loadtests import payloads, summary
from loadtests.config import RunConfig
from loadtests.pinning import plan_cpus
from loadtests.sweep import knee, slo_max
from serving.record import DeployRecord, TfKnobs, TorchKnobs, write_record
from tests.conftest import run_module

ALL = NAMES
SHORT = ("--duration", "5", "--warmup", "1.5", "--users", "2", "--check-every", "1")


def _written(stdout: str, label: str) -> Path:
    """The path a command printed on its last line as '<label>: <path>'."""
    return Path(stdout.strip().splitlines()[-1].split(f"{label}: ", 1)[1].split()[0])


@pytest.fixture(scope="module")
def short_run(deployed):
    env, _ = deployed
    done = run_module("loadtests", "run", *SHORT, "--no-ceiling", env=env)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    path = _written(done.stdout, "summary")
    return done.stdout, json.loads(path.read_text(encoding="utf-8")), path.parent


def test_a_short_real_run_loads_all_four_targets_without_failures(short_run):
    stdout, document, _ = short_run
    summary.validate(document)  # the schema the report relies on
    assert set(document["targets"]) == set(ALL)
    for name, result in document["targets"].items():
        assert result["failures"] == 0 and result["failures_by_kind"] == {}, (name, result["invalid_reasons"])
        assert result["requests"] > 10 and result["checked_responses"] == result["requests"]
        assert 0 < result["latency_ms"]["p50"] <= result["latency_ms"]["p99"] <= result["latency_ms"]["max"]
        assert result["throughput_rps"] > 0 and result["offered"] == {"mode": "closed", "users": 2, "rate_rps": None}
    assert document["targets"]["tf-rest"]["server"]["binary"] == "tf-serving-dropin"
    assert document["targets"]["tf-rest"]["server"]["official"] is False
    assert document["targets"]["torch-grpc"]["server"]["binary"] == "torchserve"
    assert document["targets"]["torch-grpc"]["server"]["knobs"]["batch_size"] == 8
    # the side-by-side table names every target
    for name in ALL:
        assert any(line.startswith(name) for line in stdout.splitlines())


def test_a_run_records_the_environment_and_locust_csvs(short_run):
    _, document, run_dir = short_run
    environment = document["environment"]
    assert environment["generator"]["tool"] == "locust"
    assert environment["packages"]["locust"] == metadata.version("locust")
    assert environment["host"]["logical_cpus"] == os.cpu_count()
    servers = default_server_cpus()
    assert environment["pinning"]["server_cpus"] == servers
    if servers:
        assert environment["pinning"]["applied"] and not set(environment["pinning"]["generator_cpus"]) & set(servers)
    stats = (run_dir / document["targets"]["torch-rest"]["files"]["stats_csv"]).read_text().splitlines()
    assert stats[0].startswith("Type,Name,Request Count") and any(",torch-rest," in line for line in stats)
    history = (run_dir / document["targets"]["tf-grpc"]["files"]["history_csv"]).read_text().splitlines()
    assert len(history) > 3 and any(",tf-grpc," in line for line in history)


def test_a_wrong_expected_label_shows_up_as_failures(deployed, artifacts):
    """Answers are really checked: the same servers, payloads whose expected labels are off by one."""
    from loadtests import runner
    from loadtests.targets import resolve_targets
    from serving.config import DeployConfig

    deploy_cfg = DeployConfig(model="tiny", artifacts=artifacts.root)
    cfg = RunConfig(targets=("tf-rest", "torch-grpc"), users=2, duration_s=4, warmup_s=1, artifacts=artifacts.root,
                    check_every=1, ceiling=False, quiet=True, run_id="wrong-labels")
    good = payloads.prepare(artifacts, "tiny", 1, cfg.run_dir / "good.npz", count=8)
    wrong = cfg.run_dir / "wrong.npz"
    with np.load(good, allow_pickle=False) as data:
        arrays = {name: data[name] for name in data.files}
    arrays["expected"] = (arrays["expected"] + 1) % 10
    with open(wrong, "wb") as handle:
        np.savez(handle, **arrays)
    document = runner.run(cfg, resolve_targets(cfg.targets, deploy_cfg, "127.0.0.1"), wrong)
    summary.validate(document)
    assert not document["valid"]
    for name in cfg.targets:
        result = document["targets"][name]
        assert result["failures_by_kind"].get("wrong_prediction", 0) == result["requests"] > 0, result
        assert not result["valid"] and any("wrong_prediction" in r for r in result["invalid_reasons"])


def test_payloads_carry_identical_images_to_every_target_and_the_reference_labels(artifacts, tmp_path):
    from model.checkpoint import load_checkpoint
    from model.reference import build_both

    path = payloads.prepare(artifacts, "tiny", 4, tmp_path / "p.npz", count=3)
    loaded = payloads.load(path)
    checkpoint = load_checkpoint(artifacts.checkpoint_dir("tiny"))
    images, _ = checkpoint.test_set()
    reference = build_both(checkpoint).reference_probabilities(images[:12]).argmax(1)
    assert loaded.expected.tolist() == reference.reshape(3, 4).tolist()
    rest = json.loads(loaded.body("tf-rest", 1))
    assert np.array_equal(np.asarray(rest["instances"], dtype=np.float32), images[4:8])
    assert loaded.body("torch-rest", 1) == loaded.body("tf-rest", 1)
    # the gRPC requests parse with the descriptors the file carries and hold the same images
    request = loaded._classes["tensorflow.serving.PredictRequest"].FromString(loaded.body("tf-grpc", 2))
    tensor = request.inputs["images"]
    assert request.model_spec.name == "tiny" and [d.size for d in tensor.tensor_shape.dim] == [4, 32, 32, 1]
    assert np.array_equal(np.frombuffer(tensor.tensor_content, "<f4").reshape(4, 32, 32, 1), images[8:12])
    torch_request = loaded._classes["org.pytorch.serve.grpc.inference.PredictionsRequest"].FromString(
        loaded.body("torch-grpc", 0))
    assert torch_request.input["body"] == loaded.body("tf-rest", 0)
    # a REST answer is checked by its argmax
    answer = json.dumps({"predictions": np.eye(10)[[3, 1, 4, 1]].tolist()}).encode()
    assert loaded.predicted_classes("tf-rest", answer).tolist() == [3, 1, 4, 1]
    with pytest.raises(ValueError):
        loaded.predicted_classes("torch-rest", b'{"error": "bad"}')
    # a TF gRPC answer is decoded with the descriptors the file carries (no TensorFlow), packed or as float_val
    response = loaded._classes["tensorflow.serving.PredictResponse"]()
    tensor = response.outputs["probabilities"]
    tensor.dtype = 1  # DT_FLOAT
    tensor.tensor_shape.dim.add(size=4)
    tensor.tensor_shape.dim.add(size=10)
    tensor.tensor_content = np.eye(10, dtype="<f4")[[3, 1, 4, 1]].tobytes()
    assert loaded.predicted_classes("tf-grpc", response.SerializeToString()).tolist() == [3, 1, 4, 1]
    tensor.tensor_content = b""
    tensor.float_val.extend(np.eye(10)[[2, 7, 1, 8]].ravel().tolist())
    assert loaded.predicted_classes("tf-grpc", response.SerializeToString()).tolist() == [2, 7, 1, 8]
    tensor.dtype = 3  # DT_INT32
    with pytest.raises(ValueError, match="DT_INT32"):
        loaded.predicted_classes("tf-grpc", response.SerializeToString())


def test_an_open_loop_with_workers_offers_the_rate_once_not_once_per_worker(deployed):
    """Two locust workers share --rate: arrivals in the window (sent or dropped) are about rate x window."""
    env, _ = deployed
    done = run_module("loadtests", "run", "--target", "tf-grpc", "--rate", "40", "--workers", "2", "--users", "4",
                      "--duration", "6", "--warmup", "1.5", "--no-ceiling", env=env)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    document = json.loads(_written(done.stdout, "summary").read_text(encoding="utf-8"))
    result = document["targets"]["tf-grpc"]
    assert document["load"] == {"users": 4, "rate_rps": 40.0, "generator_processes": 2}
    arrivals = result["requests"] + result["dropped"]
    # one worker alone would offer half, each offering the whole rate twice: 0.5 and 2.0
    assert 0.75 < arrivals / (40.0 * result["measured_window_s"]) < 1.3, (arrivals, result["measured_window_s"])


def test_a_quick_sweep_finds_an_slo_bounded_maximum(deployed):
    env, _ = deployed
    done = run_module("loadtests", "sweep", "--quick", "--no-knobs", "--target", "tf-grpc", "--duration", "3",
                      "--warmup", "1", "--users", "2", "--slo-ms", "1000", env=env)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    document = json.loads(_written(done.stdout, "sweep").read_text(encoding="utf-8"))
    summary.validate(document, "sweep")
    result = document["targets"]["tf-grpc"]
    offered = [step["offered_rps"] for step in result["steps"]]
    assert len(offered) == 4 and offered == sorted(offered)
    assert offered[-1] == pytest.approx(1.2 * result["saturation_rps"], rel=0.02)
    # The SLO-bounded maximum is a valid step's throughput with p99 within the SLO; no valid step beyond it is.
    chosen = [s for s in result["steps"] if s["throughput_rps"] == result["slo_max_rps"]]
    assert chosen and chosen[0]["valid"] and 0 < chosen[0]["latency_ms"]["p99"] <= 1000.0
    faster = [s for s in result["steps"] if s["valid"] and s["throughput_rps"] > result["slo_max_rps"]]
    assert all(s["latency_ms"]["p99"] > 1000.0 for s in faster)
    assert result["knee_rps"] in offered
    assert [row["batch_size"] for row in result["batch_sizes"]] == [1, 8]
    assert document["calibration"]["rest_rps"] > 0 and document["calibration"]["grpc_rps"] > 0
    assert result["ceiling"]["in_process_rps"] > 0


@pytest.mark.parametrize("args, message", [
    (("--target", "nope"), "invalid choice: 'nope'"),
    (("--users", "0"), "users must be at least 1"),
    (("--users", "-3"), "users must be at least 1"),
    (("--duration", "5", "--warmup", "5"), "must be longer than the warm-up"),  # a window of zero
    (("--rate", "-1"), "rate must be a positive number"),
])
def test_bad_arguments_exit_2_with_one_line_and_send_nothing(args, message, tmp_path):
    done = run_module("loadtests", "run", *args, env={"ARTIFACTS": str(tmp_path)})
    assert done.returncode == 2 and message in done.stderr, done.stderr
    assert len(done.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "results").exists()


def test_an_undeployed_or_unreachable_server_exits_2_before_any_load(tmp_path):
    done = run_module("loadtests", "run", env={"ARTIFACTS": str(tmp_path)})
    assert done.returncode == 2 and "no tf server deployed" in done.stderr and "make deploy" in done.stderr
    # a record whose process is alive (this test's own group) but whose port answers nothing
    port = free_port()
    write_record(tmp_path / "run", DeployRecord("tf", "dropin", "x", "tiny", {"rest": port, "grpc": free_port()},
                                                TfKnobs(False), pgid=os.getpgid(0)))
    done = run_module("loadtests", "run", "--target", "tf-rest", env={"ARTIFACTS": str(tmp_path)})
    assert done.returncode == 2 and f"nothing answers on 127.0.0.1:{port}" in done.stderr, done.stderr
    assert len(done.stderr.strip().splitlines()) == 1 and not (tmp_path / "results").exists()


def test_percentiles_are_exact_over_every_request():
    values = list(np.arange(1, 1001, dtype=float))  # 1..1000 ms
    result = summary.percentiles(values)
    assert result["p50"] == pytest.approx(500.5) and result["p99"] == pytest.approx(990.01)
    assert result["p99.9"] == pytest.approx(999.001) and result["max"] == 1000 and result["mean"] == 500.5
    assert summary.percentiles([])["p99"] is None


def _step(offered, throughput, p50, p99, valid=True):
    return {"offered_rps": offered, "throughput_rps": throughput, "valid": valid,
            "latency_ms": {"p50": p50, "p99": p99}}


def test_slo_maximum_and_knee_follow_the_steps():
    steps = [_step(10, 10, 5, 20), _step(50, 50, 8, 60), _step(90, 88, 9.5, 140), _step(120, 95, 40, 300),
             _step(100, 99, 6, 30, valid=False)]
    assert slo_max(steps, 100) == 50  # 88 breaks the SLO, 99 comes from an invalid step
    assert slo_max(steps, 150) == 88
    assert slo_max(steps, 1) is None
    assert knee(steps) == 90  # p50 within 2x of the first step's 5 ms up to 90 req/s offered


def test_dropped_arrivals_are_one_reason_and_not_requests():
    from loadtests.runner import target_result
    from loadtests.targets import Target

    cfg = RunConfig(run_id="x", rate=50.0, quiet=True)
    raw = {"latencies_ms": [5.0] * 90, "lags_ms": [0.1] * 90, "failures": {"HTTP 503": 2}, "dropped": 8,
           "checked": 9, "window_s": 3.0, "cpu_percent": 10.0, "stop": "duration"}
    result = target_result(cfg, Target("tf-rest", "127.0.0.1", 1, {}), raw, None)
    assert (result["requests"], result["failures"], result["dropped"]) == (92, 2, 8)
    assert result["failures_by_kind"] == {"HTTP 503": 2}
    assert result["measured_window_s"] == 3.0 and result["throughput_rps"] == pytest.approx(30.0)
    assert result["invalid_reasons"] == ["8 arrivals dropped: more than 64 outstanding per user",
                                         "2 failed requests: HTTP 503 2"]


def test_cpu_plans_keep_generator_and_servers_apart():
    assert default_server_cpus([0, 1]) == [1] and default_server_cpus([0]) is None
    assert default_server_cpus(list(range(8))) == [2, 3, 4, 5, 6, 7]
    assert parse_server_cpus("1-2,0", [0, 1, 2, 3]) == [0, 1, 2] and parse_server_cpus("all", [0, 1]) is None
    with pytest.raises(UsageError, match="may not use"):
        parse_server_cpus("7", [0, 1])
    with pytest.raises(UsageError, match="CPU list"):
        parse_server_cpus("one", [0, 1])
    with pytest.raises(UsageError, match="runs backwards"):  # not an empty set, which would turn pinning off
        parse_server_cpus("1-0", [0, 1])
    plan = plan_cpus([[1], [1]], available=[0, 1])
    assert plan.applied and plan.generator_cpus == [0] and plan.server_cpus == [1]
    assert not plan_cpus([None, None], available=[0, 1]).applied
    assert not plan_cpus([[0, 1], [0, 1]], available=[0, 1]).applied  # nothing left for the generator
    assert "WARNING" in plan_cpus([[1], [2]], available=[0, 1, 2, 3]).note


WITHOUT_AFFINITY = """
import os
import subprocess
import sys
del os.sched_getaffinity, os.sched_setaffinity  # as on macOS
from common.cpus import available_cpus, parse_server_cpus, pin_self
from common.environment import host_record
from loadtests.pinning import plan_cpus
pin_self([0])
print(available_cpus() == list(range(os.cpu_count())), parse_server_cpus("auto"), parse_server_cpus("1"),
      host_record()["cpu_affinity"], plan_cpus([None, None]).applied)
"""


def test_without_sched_affinity_nothing_is_pinned_and_a_line_says_so():
    done = subprocess.run([sys.executable, "-c", WITHOUT_AFFINITY], cwd=REPO_ROOT, capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["True", "None", "None", "None", "False"]
    said = [line for line in done.stderr.splitlines() if line.startswith("cpus:")]
    assert len(said) == 1 and "not pinned" in said[0]  # once, not once per call


def test_the_in_process_ceiling_runs_the_served_model(artifacts):
    done = run_module("loadtests.ceiling", "--framework", "torch", "--model", "tiny", "--batch-size", "4",
                      "--seconds", "0.5", "--artifacts", str(artifacts.root))
    assert done.returncode == 0, done.stderr[-2000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["batch_size"] == 4 and result["calls"] > 0
    assert len(result["window_calls_per_s"]) == 3 and result["calls_per_s"] == max(result["window_calls_per_s"])


@pytest.mark.parametrize("fields, binary, official, version", [
    (("tf", "dropin", "tf-serving-dropin (...)"), "tf-serving-dropin", False,
     f"on tensorflow {metadata.version('tensorflow')}"),
    (("tf", "binary", "official tensorflow_model_server (2.20.0)"), "tensorflow_model_server", True,
     "official tensorflow_model_server (2.20.0)"),
    (("tf", "compose", "official TF Serving image"), "tensorflow/serving image", True,
     "image tensorflow/serving:2.20.0"),
    (("torch", "compose", "official TorchServe image"), "torchserve", True, "image pytorch/torchserve:0.12.0-cpu"),
    (("torch", "native", "TorchServe (pip package)"), "torchserve", True, metadata.version("torchserve")),
])
def test_results_name_the_server_that_produced_them(fields, binary, official, version):
    from loadtests.targets import server_record

    server_side, mode, identity = fields
    knobs = TfKnobs(True, "b.config", 8, 1000) if server_side == "tf" else TorchKnobs(2, 8, 5, True)
    service = {"tf": "tf-serving", "torch": "torchserve"}[server_side] if mode == "compose" else None
    server = server_record(DeployRecord(server_side, mode, identity, "tiny", {}, knobs, cpus=[1], service=service))
    assert (server["binary"], server["official"], server["version"]) == (binary, official, version)
    assert server["identity"] == identity and server["cpus"] == [1]
    assert server["knobs"] == dataclasses.asdict(knobs)  # every knob in effect, as deploy recorded it
