"""Faults under load (python -m reliability chaos / soak): the timeline arithmetic, and the short run for real."""

from __future__ import annotations

import json

import jsonschema
import pytest

from loadtests.arrivals import RateSteps
from reliability.baselines import newest_sweep_figure
from reliability.results import read_results, write_section
from reliability.soak import growth
from reliability.traffic import Request, Timeline
from tests.conftest import run_module


def timeline_of(*outcomes: str, every: float = 0.1, latency: float = 5.0) -> Timeline:
    """Requests sent every `every` seconds from t=100, with these outcomes."""
    return Timeline([Request(100 + i * every, latency, outcome) for i, outcome in enumerate(outcomes)], 100.0)


def test_recovery_is_the_first_request_after_the_last_failure():
    timeline = timeline_of("ok", "ok", "HTTP 503", "ok", "UNAVAILABLE", "ok", "ok")
    # the fault at t=100.15: the last failure is request 4 (t=100.4), so every request from t=100.5 succeeded
    assert timeline.recovery_s(100.15) == pytest.approx(0.35)
    assert timeline.failures(100.15) == {"HTTP 503": 1, "UNAVAILABLE": 1}


def test_no_failure_after_the_fault_is_an_immediate_recovery_and_a_last_failure_is_none():
    assert timeline_of("HTTP 503", "ok", "ok").recovery_s(100.05) == 0.0
    assert timeline_of("ok", "ok", "connection_error").recovery_s(100.05) is None


def test_the_summary_counts_only_its_window_and_reports_p99_only_on_1000_samples():
    timeline = timeline_of(*(["ok"] * 999 + ["HTTP 503"]), every=0.01)
    window = timeline.summary(100.0, 100.5)  # the first 50 requests
    assert (window["requests"], window["failed"]) == (50, 0)
    whole = timeline.summary()
    assert whole["failure_kinds"] == {"HTTP 503": 1}
    assert whole["latency_ms"]["samples"] == 999 and whole["latency_ms"]["p99"] is None
    assert timeline_of(*(["ok"] * 1000)).latency()["p99"] == 5.0


def test_a_request_in_flight_at_the_fault_counts_against_the_fault():
    # sent at 100.0 and 100.1, each answered 250 ms later; the fault at t=100.2 cuts the second one off
    timeline = Timeline([Request(100.0, 50.0, "ok"), Request(100.1, 250.0, "HTTP 507"),
                         Request(100.3, 5.0, "ok")], 100.0)
    before, after = timeline.split_at(100.2)
    assert (before["requests"], before["failed"]) == (1, 0)
    assert (after["requests"], after["failed"], after["failure_kinds"]) == (2, 1, {"HTTP 507": 1})
    assert timeline.recovery_s(100.2) == pytest.approx(0.1)  # the in-flight failure counts; the next one succeeded


def test_first_success_after_a_moment():
    timeline = timeline_of("ok", "HTTP 503", "HTTP 503", "ok")
    assert timeline.first_success_after(100.05) == pytest.approx(0.25)
    assert timeline_of("ok", "HTTP 503").first_success_after(100.05) is None


def test_rate_steps_follow_their_phases_and_hold_the_last_rate():
    steps = RateSteps.parse("10:100,30:400,20:100", started=0.0)
    assert [steps.at(t) for t in (0, 9.9, 10, 39.9, 40, 59, 500)] == [100, 100, 400, 400, 100, 100, 100]
    assert RateSteps.parse("", 0.0) is None
    for bad in ("10-100", "10:0", "x:1"):
        with pytest.raises(ValueError, match="rate-steps"):
            RateSteps.parse(bad, 0.0)


def test_growth_is_the_slope_over_the_steady_part():
    # 30 s of allocator warm-up (+100 MiB), then a leak of 2 MiB a minute for 10 minutes
    series = [(0.0, 500.0), (30.0, 600.0)] + [(60.0 + 30 * i, 600.0 + i) for i in range(21)]
    figures = growth(series)
    assert figures["slope_mib_per_min"] == pytest.approx(2.0)
    assert figures["end_mib"] == 620.0 and figures["max_mib"] == 620.0
    flat = growth([(5.0 * i, 800.0) for i in range(12)])
    assert flat["slope_mib_per_min"] == 0.0 and flat["growth_mib"] == 0.0
    assert growth([(0.0, 1.0), (5.0, 2.0)]) is None  # too few samples to say anything


def test_the_newest_sweep_with_the_figure_wins(tmp_path):
    def sweep(run_id: str, created: str, slo_max: float | None, kind: str = "sweep") -> None:
        (tmp_path / run_id).mkdir()
        figure = {"median": slo_max, "low": slo_max, "high": slo_max, "values": []} if slo_max else None
        document = {"kind": kind, "created": created, "targets": {"tf-rest": {"slo_max": figure}}}
        (tmp_path / run_id / "sweep.json").write_text(json.dumps(document))

    sweep("20260101-000000-sweep", "2026-01-01T00:00:00+00:00", 300.0)
    sweep("my-own-id", "2026-01-02T00:00:00+00:00", 250.0)  # named with --run-id: its time tells its age
    sweep("20260103-000000-sweep", "2026-01-03T00:00:00+00:00", None)  # found no SLO maximum: the one before counts
    sweep("20260104-000000-sweep", "2026-01-04T00:00:00+00:00", 999.0, kind="loadtest")  # not a sweep
    assert newest_sweep_figure(tmp_path, "tf-rest", "slo_max") == (250.0, "my-own-id")
    assert newest_sweep_figure(tmp_path, "torch-rest", "slo_max") is None


def chaos_section(run_id: str) -> dict:
    return {"run_id": run_id, "rate_rps": 30.0, "duration_s": 15.0, "servers": {},
            "environment": {"host": {}, "packages": {}}, "faults": []}


def test_a_section_replaces_only_itself_and_a_bad_one_writes_nothing(tmp_path):
    path = tmp_path / "reliability.json"
    write_section(path, "matrix", {"targets": {}, "inputs": 0, "rows": [], "passed": True})
    write_section(path, "chaos", chaos_section("first"))
    write_section(path, "chaos", chaos_section("second"))
    document = read_results(path)
    assert document["matrix"]["passed"] is True and document["chaos"]["run_id"] == "second"
    assert document["schema_version"] == 1 and "written" in document["chaos"]
    before = path.read_bytes()
    with pytest.raises(ValueError, match="unknown reliability section"):
        write_section(path, "nope", {})
    with pytest.raises(jsonschema.ValidationError, match="-1"):
        write_section(path, "chaos", {**chaos_section("third"), "rate_rps": -1})
    assert path.read_bytes() == before


def test_chaos_short_against_both_real_servers(deployed):
    """Kill TorchServe's worker, roll out a version on each stack and a broken one on TF, all under load."""
    env, _ = deployed
    done = run_module("reliability", "chaos", "--short", "--rate", "30", env=env)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    from pathlib import Path

    section = read_results(Path(env["ARTIFACTS"]) / "results" / "reliability.json")["chaos"]
    rows = {(row["fault"], row["stack"]): row for row in section["faults"]}
    assert set(rows) == {("kill-worker", "torch"), ("rollout", "tf"), ("rollout", "torch"), ("broken-version", "tf")}
    for row in rows.values():
        assert row["before"]["failed"] == 0 and row["before"]["requests"] > 0, row
    killed = rows["kill-worker", "torch"]
    assert killed["new_worker_ready_s"] is not None and killed["recovery_s"] is not None, killed
    for key in (("rollout", "tf"), ("broken-version", "tf")):
        assert rows[key]["after"]["failed"] == 0, rows[key]  # a rollout must not fail a single request
    # TorchServe 0.12 on one CPU reads no request while the next version's worker loads, then overflows the
    # serving version's queue (503: measured, see the README's reliability section): the rollout must complete
    # and the server recover. v1 is drained before it is unregistered, so no request fails with a 500 there
    torch_rollout = rows["rollout", "torch"]
    assert torch_rollout["new_version_serving_s"] is not None and torch_rollout["recovery_s"] is not None
    assert set(torch_rollout["after"]["failure_kinds"]) <= {"HTTP 503"}, torch_rollout
    assert rows["rollout", "tf"]["new_version_serving_s"] is not None
    assert rows["broken-version", "tf"]["old_version_serving"] is True
    assert section["servers"]["tf"]["binary"] == "tf-serving-dropin"
    # the servers are as deploy left them: every transport still answers correctly
    assert run_module("serving", "smoke", "--target", "all", env=env).returncode == 0


def test_the_command_line_offers_exactly_the_faults_there_are():
    from reliability.__main__ import FAULT_NAMES
    from reliability.chaos import FAULTS, SHORT_FAULTS

    assert set(FAULT_NAMES) == set(FAULTS) and set(SHORT_FAULTS) <= set(FAULTS)
