"""Load tests: a short real run against both real servers, answer checks, a tiny sweep, and bad input.

The long runs are benchmarks (make loadtest, make sweep); these runs last a
few seconds and assert behaviour, never speed.
"""

import dataclasses
import itertools
import json
import os
import statistics
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
from common.spread import Spread
from common.targets import NAMES
from loadtests import payloads, summary
from loadtests.arrivals import arrival_gaps
from loadtests.config import RunConfig
from loadtests.pinning import plan_cpus
from loadtests.repeats import rotated
from loadtests.search import search_slo_max
from loadtests.sweep import TUNED_FILE, current_knobs, host_pace, shown_knobs, tuned_by
from loadtests.tune import GRIDS, choose_point, throughput_sums
from serving.config import DeployConfig
from serving.record import DeployRecord, TfKnobs, TorchKnobs, write_record
from tests.conftest import run_module

ALL = NAMES
SHORT = ("--duration", "5", "--warmup", "1.5", "--users", "2", "--check-every", "1", "--repeats", "2")


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
    assert document["repeats"]["count"] == 2
    first, second = document["repeats"]["order"]
    assert sorted(first) == sorted(ALL) and second == rotated(first, 1)  # each target in each repeat, order rotated
    for name, result in document["targets"].items():
        assert result["failures"] == 0 and result["failures_by_kind"] == {}, (name, result["invalid_reasons"])
        assert result["requests"] > 10 and result["checked_responses"] == result["requests"]
        assert [r["repeat"] for r in result["repeats"]] == [1, 2]
        assert result["requests"] == sum(r["requests"] for r in result["repeats"])
        throughputs = sorted(r["throughput_rps"] for r in result["repeats"])
        assert result["spread"]["throughput_rps"]["values"] == [r["throughput_rps"] for r in result["repeats"]]
        assert (result["spread"]["throughput_rps"]["low"], result["spread"]["throughput_rps"]["high"]) == \
            (throughputs[0], throughputs[-1])
        assert result["throughput_rps"] == pytest.approx(sum(throughputs) / 2)  # the median of two
        latency = result["latency_ms"]
        assert latency["samples"] == sum(r["latency_ms"]["samples"] for r in result["repeats"])
        assert 0 < latency["p50"] <= latency["max"]
        # p99 is reported only where a repeat's own p99 rests on 1,000 requests
        assert all((r["latency_ms"]["p99"] is None) == (r["latency_ms"]["samples"] < 1000) for r in result["repeats"])
        assert result["offered"] == {"mode": "closed", "users": 2, "rate_rps": None, "arrivals": None}
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
    for repeat in document["targets"]["torch-rest"]["repeats"]:  # each repeat is its own locust process and CSVs
        stats = (run_dir / repeat["files"]["stats_csv"]).read_text().splitlines()
        assert stats[0].startswith("Type,Name,Request Count") and any(",torch-rest," in line for line in stats)
    history = (run_dir / document["targets"]["tf-grpc"]["repeats"][1]["files"]["history_csv"]).read_text()
    assert len(history.splitlines()) > 3 and ",tf-grpc," in history


def test_a_wrong_expected_label_shows_up_as_failures(deployed, artifacts):
    """Answers are really checked: the same servers, payloads whose expected labels are off by one."""
    from loadtests import runner
    from loadtests.targets import resolve_targets
    from serving.config import DeployConfig

    deploy_cfg = DeployConfig(model="tiny", artifacts=artifacts.root)
    cfg = RunConfig(targets=("tf-rest", "torch-grpc"), users=2, duration_s=4, warmup_s=1, artifacts=artifacts.root,
                    check_every=1, ceiling=False, quiet=True, run_id="wrong-labels", repeats=1)
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
                      "--duration", "6", "--warmup", "1.5", "--no-ceiling", "--repeats", "1", env=env)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    document = json.loads(_written(done.stdout, "summary").read_text(encoding="utf-8"))
    result = document["targets"]["tf-grpc"]
    assert document["load"] == {"users": 4, "rate_rps": 40.0, "generator_processes": 2, "arrivals": "poisson"}
    arrivals = result["requests"] + result["dropped"]
    measured = result["repeats"][0]["offered"]["measured_rps"]
    assert measured == pytest.approx(arrivals / result["measured_window_s"], rel=0.1)
    # one worker alone would offer half, each offering the whole rate twice: 0.5 and 2.0
    assert 0.75 < arrivals / (40.0 * result["measured_window_s"]) < 1.3, (arrivals, result["measured_window_s"])


def test_a_quick_sweep_finds_the_slo_maximum_by_search_in_three_repeats(deployed):
    env, _ = deployed
    # one fast target: every probe's p99 rests on 1,000 requests, so a slow target's probes would take minutes
    done = run_module("loadtests", "sweep", "--quick", "--target", "tf-grpc", "--duration", "2.5",
                      "--warmup", "1", "--users", "2", "--slo-ms", "1000", "--no-ceiling", env=env)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "[sweep 1 of " in done.stdout and "elapsed" in done.stdout  # progress, measurement by measurement
    table_rows = [line for line in done.stdout.splitlines() if line.startswith("tf-grpc ")]
    assert len(table_rows) == 1 and "[" in table_rows[0], done.stdout[-2000:]  # the final table, with spreads
    document = json.loads(_written(done.stdout, "sweep").read_text(encoding="utf-8"))
    summary.validate(document, "sweep")
    assert document["method"]["order"] == [["tf-grpc"]] * 3 and document["method"]["min_requests"] == 1000
    # the servers keep the knobs they were deployed with; the sweep says so, and that no tuning chose them
    deployed_knobs = document["targets"]["tf-grpc"]["server"]["knobs"]
    assert document["method"]["knobs"] == {"tf": {"knobs": {
        "enable_batching": True, "max_batch_size": deployed_knobs["max_batch_size"],
        "batch_timeout_micros": deployed_knobs["batch_timeout_micros"]}, "tuned_by": None}}
    assert document["targets"]["tf-grpc"]["best_knobs"] == document["method"]["knobs"]["tf"]["knobs"]
    assert document["targets"]["tf-grpc"]["knob_grid"] == []
    assert "(as deployed: no make tune run chose them)" in done.stdout
    for name, result in document["targets"].items():
        assert len(result["saturation_runs"]) == 3 and len(result["searches"]) == 3, name
        maxima = [search["slo_max_rps"] for search in result["searches"]]
        assert result["slo_max"]["values"] == [m for m in maxima if m is not None]
        # the median of the searches that found one (a search the generator could not drive finds none)
        assert result["slo_max_rps"] == statistics.median(result["slo_max"]["values"])
        for search in result["searches"]:
            passed = [p["offered_rps"] for p in search["probes"] if p["outcome"] == "pass"]
            failed = [p["offered_rps"] for p in search["probes"] if p["outcome"] == "fail"]
            if search["slo_max_rps"] is not None:  # the highest passing probe, and every probe above it failed
                assert search["slo_max_rps"] == max(passed) and all(f > max(passed) for f in failed if f > max(passed))
            for probe in search["probes"]:  # a passing probe's p99 rests on >= 1,000 requests
                assert probe["outcome"] != "pass" or (probe["latency_ms"]["samples"] >= 1000
                                                      and probe["latency_ms"]["p99"] <= 1000.0 and probe["valid"])
        assert result["saturation"]["low"] <= result["saturation_rps"] <= result["saturation"]["high"]
        assert [row["batch_size"] for row in result["batch_sizes"]] == [1, 8]
        assert result["ceiling"] is None  # --no-ceiling: not measured, so not written down
    common = document["common_load_rps"]
    assert common == min(r["slo_max"]["low"] for r in document["targets"].values())
    for result in document["targets"].values():
        at_load = result["at_common_load"]
        assert at_load["offered_rps"] == common and len(at_load["p50_ms"]["values"]) == 3
    assert document["calibration"]["rest_rps"] > 0 and document["calibration"]["grpc_rps"] > 0
    assert document["host_pace"] is None  # --no-ceiling: no in-process ceiling at either end


def test_tune_measures_every_knob_point_in_every_repeat_and_leaves_the_choice_deployed(deployed):
    env, _ = deployed
    run_dir = DeployConfig(artifacts=Path(env["ARTIFACTS"])).run_dir
    try:
        done = run_module("loadtests", "tune", "--target", "tf-grpc", "--target", "torch-grpc", "--repeats", "2",
                          "--duration", "2", "--warmup", "0.5", "--users", "2", env=env)
        assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
        assert "[tune 1 of 12, " in done.stdout  # 3 points x 2 targets x 2 repeats, each announced
        document = json.loads(_written(done.stdout, "tune").read_text(encoding="utf-8"))
        summary.validate(document, "tune")
        assert document["method"]["order"] == [["tf-grpc", "torch-grpc"], ["torch-grpc", "tf-grpc"]]
        for side, name in (("tf", "tf-grpc"), ("torch", "torch-grpc")):
            choice, grid = document["choice"][side], document["targets"][name]["knob_grid"]
            assert [point["knobs"] for point in choice["points"]] == [shown_knobs(k) for k in GRIDS[side]]
            for point in choice["points"]:  # every point in every repeat; the sums are those runs'
                rows = [row for row in grid if row["knobs"] == point["knobs"]]
                assert sorted(row["repeat"] for row in rows) == [1, 2], name
                if point["throughput_sum"] is not None:
                    assert sorted(point["throughput_sum"]["values"]) == sorted(r["throughput_rps"] for r in rows)
            sums = [Spread.from_json(p["throughput_sum"]) if p["throughput_sum"] else None for p in choice["points"]]
            assert choice["chosen"] == choose_point(sums)
            # the server now runs with the chosen point, and the sweep will name this tuning as its origin
            kept = choice["points"][choice["chosen"]]["knobs"]
            running = current_knobs(side, DeployConfig(artifacts=Path(env["ARTIFACTS"])))
            assert shown_knobs(running) == kept
            server_knobs = document["targets"][name]["server"]["knobs"]  # recorded as chosen, not as found
            assert all(server_knobs[key] == value for key, value in kept.items()), (server_knobs, kept)
            assert tuned_by(run_dir, side, running) == document["run_id"]
            assert tuned_by(run_dir, side, {**running, "max_batch_delay_ms": -1, "enable_batching": None}) is None
            assert f"  {side}: deployed with " in done.stdout and "make deploy" in done.stdout
    finally:
        (run_dir / TUNED_FILE).unlink(missing_ok=True)
        run_module("serving", "undeploy", env=env)  # the session's deployment as the fixture made it
        restored = run_module("serving", "deploy", env=env)
        assert restored.returncode == 0, restored.stdout[-3000:] + restored.stderr[-3000:]


def test_any_endpoint_is_loaded_by_url_with_a_host_header_and_a_token_file(deployed, tmp_path):
    """--url: what deploy did not start (here the deployed servers, addressed as a user outside would)."""
    env, _ = deployed
    key_file = Path(env["ARTIFACTS"]) / "run" / "torchserve" / "key_file.json"
    token_file = tmp_path / "token"
    token_file.write_text(json.loads(key_file.read_text())["inference"]["key"] + "\n")
    common = ("--duration", "3", "--warmup", "1", "--users", "2", "--check-every", "1", "--repeats", "1")
    for target, url, extra in (
            ("tf-rest", f"http://127.0.0.1:{env['TF_REST_PORT']}", ("--host-header", "tiny.default.example.com")),
            ("torch-grpc", f"127.0.0.1:{env['TS_GRPC_PORT']}", ("--token-file", str(key_file))),
            ("torch-rest", f"http://127.0.0.1:{env['TS_INFERENCE_PORT']}", ("--token-file", str(token_file)))):
        done = run_module("loadtests", "run", "--url", url, "--target", target, *extra, *common, env=env)
        assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
        result = json.loads(_written(done.stdout, "summary").read_text(encoding="utf-8"))["targets"][target]
        assert result["valid"] and result["requests"] > 10 and result["checked_responses"] == result["requests"]
        assert result["server"]["binary"] == "external" and url in result["server"]["identity"]
        assert result["ceiling"] is None and result["repeats"][0]["server_side"]["unavailable"]
    # without the token TorchServe refuses every request: the run is invalid, not silently fast
    done = run_module("loadtests", "run", "--url", f"http://127.0.0.1:{env['TS_INFERENCE_PORT']}", "--target",
                      "torch-rest", *common, env=env)
    result = json.loads(_written(done.stdout, "summary").read_text(encoding="utf-8"))["targets"]["torch-rest"]
    assert not result["valid"] and set(result["failures_by_kind"]) == {"refused_token"}, result["failures_by_kind"]


@pytest.mark.parametrize("args, message", [
    (("--target", "nope"), "invalid choice: 'nope'"),
    (("--users", "0"), "users must be at least 1"),
    (("--users", "-3"), "users must be at least 1"),
    (("--duration", "5", "--warmup", "5"), "must be longer than the warm-up"),  # a window of zero
    (("--rate", "-1"), "rate must be a positive number"),
    (("--repeats", "0"), "repeats must be at least 1"),
    (("--url", "http://127.0.0.1:1"), "exactly one --target"),
    (("--url", "127.0.0.1:1", "--target", "tf-rest"), "is not a http address for tf-rest"),
    (("--token-file", "/nonexistent"), "--host-header and --token-file go with --url"),
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
    assert result["max"] == 1000 and result["mean"] == 500.5 and result["samples"] == 1000
    # a percentile needs 10 requests beyond it: p99 1,000 requests, p99.9 10,000
    assert result["p99.9"] is None and summary.percentiles(values[:999])["p99"] is None
    assert summary.percentiles(values * 10)["p99.9"] == pytest.approx(999.001)
    assert summary.percentiles([])["p99"] is None


def _probe_at(capacity: float, p99_at, reasons_at=lambda rate: [], failures_at=lambda rate: {}):
    """A fake server for the search: a probe's record as the runner would write it."""
    def probe(rate):
        reasons = reasons_at(rate) or (["server fell behind the offered load"] if rate > capacity else [])
        return {"offered_rps": rate, "throughput_rps": min(rate, capacity), "valid": not reasons,
                "invalid_reasons": reasons, "latency_ms": {"p50": 1.0, "p99": p99_at(rate)},
                "failures_by_kind": failures_at(rate)}
    return probe


def _closed(throughput: float, valid: bool = True) -> dict:
    return {"throughput_rps": throughput, "valid": valid}


def test_a_later_knob_point_is_chosen_only_when_it_beats_the_simpler_one_beyond_the_spread():
    # per target: one list of repeats per knob point; the server's choice rests on the sums per repeat
    runs = {"tf-rest": [[_closed(100), _closed(120), _closed(110)],    # point 0: sums 300, 330, 310
                        [_closed(130), _closed(125), _closed(135)],    # point 1: sums 340, 335, 345 (overlaps 2)
                        [_closed(140), _closed(110), _closed(150)]],   # point 2: sums 350, 320, 360 (overlaps 0)
            "tf-grpc": [[_closed(200), _closed(210), _closed(200)],
                        [_closed(210), _closed(210), _closed(210)],
                        [_closed(210), _closed(210), _closed(210)]]}
    sums = throughput_sums(runs, ["tf-rest", "tf-grpc"])
    assert [s.values for s in sums] == [(300, 330, 310), (340, 335, 345), (350, 320, 360)]
    # point 2 has the highest median, but only point 1 clears point 0's spread, and 2 does not clear 1's
    assert choose_point(sums) == 1
    # within the noise everywhere: the simplest point, whatever the medians say
    assert choose_point([Spread.of([300, 330, 310]), Spread.of([320, 305, 340])]) == 0
    # an invalid point is never chosen, and a valid one replaces an invalid simplest point
    runs["tf-grpc"][1][2] = _closed(210, valid=False)
    assert throughput_sums(runs, ["tf-rest", "tf-grpc"])[1] is None
    assert choose_point([None, Spread.of([1, 1, 1]), None]) == 1


def test_the_hosts_pace_is_the_change_of_each_frameworks_in_process_ceiling_from_start_to_end():
    start = {"tf": {"calls_per_s": 1525.0}, "torch": {"calls_per_s": 926.0}}
    end = {"tf": {"calls_per_s": 1308.5}, "torch": {"calls_per_s": 926.0}}
    pace = host_pace(start, end)
    assert pace["tf"] == {"start_calls_per_s": 1525.0, "end_calls_per_s": 1308.5, "change": 1308.5 / 1525.0 - 1}
    assert pace["torch"]["change"] == 0.0
    assert host_pace({}, {}) is None  # --no-ceiling: nothing measured, nothing claimed


def test_the_slo_search_brackets_then_bisects_to_within_the_tolerance():
    # p99 crosses 100 ms at 160 req/s: the search starts at saturation (300), halves to 150, bisects up.
    found = search_slo_max(_probe_at(300, lambda rate: rate * 100 / 160), 300, 100.0, tolerance=0.05)
    rates = [p["offered_rps"] for p in found.probes]
    assert rates[:2] == [300, 150] and [p["outcome"] for p in found.probes][:2] == ["fail", "pass"]
    assert 150 <= found.slo_max_rps <= 160 and found.slo_max_rps in rates
    failing_above = min(r for r, p in zip(rates, found.probes, strict=True) if p["outcome"] == "fail")
    assert (failing_above - found.slo_max_rps) <= 0.05 * failing_above
    # Where saturation itself meets the SLO, it grows by 25% until a probe falls behind the offered load.
    found = search_slo_max(_probe_at(330, lambda rate: 10.0), 300, 100.0)
    assert [p["offered_rps"] for p in found.probes][:2] == [300, 375] and 300 <= found.slo_max_rps <= 330
    # A p99 not reported (too few requests) never passes; no rate meeting the SLO gives None and says so.
    found = search_slo_max(_probe_at(300, lambda rate: None), 300, 100.0)
    assert found.slo_max_rps is None and "no rate down to" in found.note


def test_a_probe_the_generator_could_not_drive_ends_the_search_as_a_lower_bound():
    saturated = ["load generator saturated: a locust process used 97% of a core (limit 90%)"]
    found = search_slo_max(_probe_at(1000, lambda rate: 5.0, lambda rate: saturated if rate > 320 else []),
                           300, 100.0)
    assert found.probes[-1]["outcome"] == "generator" and found.slo_max_rps == 300
    assert "lower bound" in found.note


def test_a_server_that_errs_or_falls_behind_fails_a_probe_even_when_the_generator_sent_late():
    # Seen in a sweep: TorchServe overloaded at 574 req/s answered 430 requests with 503 while the one
    # locust core sent late. A late sender offers less load, not more: the 503s are the server's.
    late = ["open loop fell behind: p99 send lag 15.0 ms (limit 10 ms)"]
    found = search_slo_max(_probe_at(1000, lambda rate: 5.0, lambda rate: late if rate > 320 else [],
                                     lambda rate: {"HTTP 503": 430} if rate > 320 else {}), 300, 100.0)
    assert [p["outcome"] for p in found.probes][:2] == ["pass", "fail"] and "lower bound" not in found.note
    assert 300 <= found.slo_max_rps <= 320 and "bracketed" in found.note
    # Client-side deadlines are what a stalled client causes on its own: still the generator's probe.
    found = search_slo_max(_probe_at(1000, lambda rate: 5.0, lambda rate: late if rate > 320 else [],
                                     lambda rate: {"DEADLINE_EXCEEDED": 3} if rate > 320 else {}), 300, 100.0)
    assert found.probes[-1]["outcome"] == "generator" and "lower bound" in found.note
    # Seen in the next sweep: the drop-in at 732 req/s answered 68% of the arrivals and 1,498 were dropped
    # (64 outstanding per user) while the send lag was 11.8 ms: the server fell behind, the probe failed.
    behind = [*late, "server fell behind the offered load: achieved 501.6 req/s, 68% of the 735.7 req/s offered",
              "1498 arrivals dropped: more than 64 outstanding per user"]
    found = search_slo_max(_probe_at(1000, lambda rate: 5.0, lambda rate: behind if rate > 320 else []), 300, 100.0)
    assert [p["outcome"] for p in found.probes][:2] == ["pass", "fail"] and 300 <= found.slo_max_rps <= 320


def test_an_open_loop_step_that_achieves_under_95_percent_of_its_arrivals_is_invalid():
    from loadtests.runner import target_result
    from loadtests.targets import Target

    cfg = RunConfig(run_id="x", rate=100.0, quiet=True)
    raw = {"latencies_ms": [5.0] * 940, "lags_ms": [0.1] * 1000, "failures": {}, "dropped": 0, "arrivals": 1000,
           "checked": 94, "window_s": 10.0, "cpu_percent": 10.0, "stop": "duration"}
    result = target_result(cfg, Target("tf-grpc", "127.0.0.1", 1, {}), raw, None)
    assert not result["valid"] and result["offered"]["measured_rps"] == 100.0
    assert result["invalid_reasons"] == ["server fell behind the offered load: achieved 94.0 req/s, 94% of the "
                                         "100.0 req/s offered (940 of 1000 arrivals answered; at least 95% needed)"]
    raw["latencies_ms"] = [5.0] * 950
    assert target_result(cfg, Target("tf-grpc", "127.0.0.1", 1, {}), raw, None)["valid"]


def test_poisson_arrivals_are_exponential_seeded_and_independent_per_user():
    gaps = list(itertools.islice(arrival_gaps("poisson", 0.01, seed=7, slot=3), 20000))
    mean = statistics.fmean(gaps)
    assert mean == pytest.approx(0.01, rel=0.03)
    assert statistics.stdev(gaps) / mean == pytest.approx(1.0, rel=0.05)  # exponential: stdev equals the mean
    assert gaps[:50] == list(itertools.islice(arrival_gaps("poisson", 0.01, seed=7, slot=3), 50))  # seeded
    assert gaps[:50] != list(itertools.islice(arrival_gaps("poisson", 0.01, seed=7, slot=4), 50))  # own stream
    assert gaps[:50] != list(itertools.islice(arrival_gaps("poisson", 0.01, seed=8, slot=3), 50))
    assert list(itertools.islice(arrival_gaps("fixed", 0.01, seed=7, slot=3), 3)) == [0.01] * 3


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


def test_the_token_reaches_locust_through_its_environment_never_its_command_line(tmp_path, monkeypatch):
    """A command line is visible to every local user (`ps`); TorchServe's random tokens may also begin with '-'
    (passed as '--opt value', argparse took it for an option), as may a Host header."""
    from loadtests.runner import loadtest_options, locust_environment
    from loadtests.targets import Target

    target = Target("torch-rest", "127.0.0.1", 1, {}, token="-Xk9_token", host_header="-odd.example")
    options = loadtest_options(RunConfig(run_id="x", quiet=True), target, tmp_path / "p.npz", tmp_path / "r.json")
    assert not any("Xk9_token" in option for option in options)
    # the locustfile's own option declarations, parsed as locust parses them (configargparse), in a child process:
    # importing locust patches the interpreter (gevent)
    parse = ("import configargparse, json, sys\n"
             "from loadtests.locustfile import _options\n"
             "parser = configargparse.ArgumentParser()\n"
             "_options(parser)\n"
             "parsed, _ = parser.parse_known_args(sys.argv[1:])\n"
             "print(json.dumps([parsed.loadtest_token, parsed.loadtest_host_header]))\n")
    done = subprocess.run([sys.executable, "-c", parse, *options], env=locust_environment(target), cwd=REPO_ROOT,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert json.loads(done.stdout.strip().splitlines()[-1]) == ["-Xk9_token", "-odd.example"]
    monkeypatch.setenv("LOADTEST_TOKEN", "the-callers-own")  # a target without a token sends none
    assert locust_environment(Target("tf-rest", "127.0.0.1", 1, {}))["LOADTEST_TOKEN"] == ""
