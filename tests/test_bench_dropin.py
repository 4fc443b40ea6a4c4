"""make bench-dropin's arithmetic: spreads over repeats, invalid repeats left out, claims only without overlap."""

import subprocess

from loadtests.bench_dropin import aggregate, verdicts


def _target(rps: float, p50: float, in_process_rps: float = 1000.0, in_process_p50: float = 1.0,
            valid: bool = True) -> dict:
    return {"server": {"identity": "x"}, "throughput_rps": rps, "valid": valid,
            "invalid_reasons": [] if valid else ["load generator saturated"],
            "latency_ms": {"p50": p50},
            "ceiling": {"in_process_rps": in_process_rps, "fraction": rps / in_process_rps,
                        "in_process_p50_ms": in_process_p50}}


def _summary(run_id: str, tf_grpc: dict, torch_grpc: dict) -> dict:
    return {"run_id": run_id, "targets": {"tf-grpc": tf_grpc, "torch-grpc": torch_grpc}}


def test_medians_and_spreads_leave_invalid_repeats_out():
    summaries = [_summary("r1", _target(800, 5), _target(300, 20)),
                 _summary("r2", _target(900, 6), _target(310, 21)),
                 _summary("r3", _target(100, 50, valid=False), _target(320, 22))]
    table = aggregate(summaries)
    assert table["tf-grpc"]["throughput_rps"] == {"median": 850.0, "min": 800, "max": 900, "n": 2}
    assert table["tf-grpc"]["added_p50_ms"] == {"median": 4.5, "min": 4.0, "max": 5.0, "n": 2}
    assert table["tf-grpc"]["left_out"] == ["r3: load generator saturated"]
    assert table["torch-grpc"]["fraction_of_in_process"]["n"] == 3
    assert table["tf-rest"]["throughput_rps"] is None  # a target no repeat measured


def test_a_goal_or_a_difference_is_claimed_only_when_the_repeats_do_not_straddle_it():
    apart = aggregate([_summary(f"r{i}", _target(850 + i, 5 + i), _target(300, 20 + i)) for i in range(3)])
    lines = verdicts("tiny", apart)
    assert any(line.startswith("goal tf-grpc >= 0.8 x in-process: met") for line in lines)
    assert any("below TorchServe's" in line for line in lines if line.startswith("grpc:"))
    close = aggregate([_summary(f"r{i}", _target(750 + 100 * i, 20 + i), _target(300, 19 + 2 * i))
                       for i in range(3)])
    lines = verdicts("tiny", close)
    assert any("not decided" in line for line in lines if line.startswith("goal tf-grpc"))
    assert any("no measurable difference" in line for line in lines if line.startswith("grpc:"))
    assert not [line for line in verdicts("mobilenet", close) if line.startswith("goal")]  # goals are tiny's


def test_the_record_names_the_commit_and_whether_the_tree_differed_from_it(tmp_path):
    from common.environment import source_revision

    assert source_revision(tmp_path) is None  # not a checkout
    git = ["git", "-c", "user.name=t", "-c", "user.email=t@example.org"]
    subprocess.run([*git, "init", "-q"], cwd=tmp_path, check=True)
    (tmp_path / "a.py").write_text("x = 1\n")
    subprocess.run([*git, "add", "a.py"], cwd=tmp_path, check=True)
    subprocess.run([*git, "commit", "-qm", "one"], cwd=tmp_path, check=True)
    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=tmp_path, capture_output=True, text=True).stdout.strip()
    assert source_revision(tmp_path) == head
    (tmp_path / "a.py").write_text("x = 2\n")
    assert source_revision(tmp_path) == f"{head}+changes"
