"""`python -m report --baseline RUN`: two runs side by side, and every report table as CSV.

The pure functions are checked on documents built here (each figure a spread over repeats
beside its median). The CLI is checked on a copy of tests/fixtures/results with a second sweep
added under another run id.
"""

from __future__ import annotations

import csv
import html
import json
import re
import shutil
from pathlib import Path

import pytest

from common.spread import Spread
from report.build import build_document, write_report
from report.compare import (
    BEYOND,
    NO_CLAIM,
    NOT_COMPARED,
    P50,
    P99,
    SATURATION,
    SLO_MAX,
    THROUGHPUT,
    WITHIN,
    compare,
    figures,
    reference_line,
    summary_line,
)
from report.csv_export import all_tables
from report.load import Loaded, Source, load_results
from report.serving_report import VERDICT_COLUMNS
from tests.conftest import run_module

FIXTURES = Path(__file__).parent / "fixtures" / "results"  # as in tests/test_report.py
SWEEP = "results/sweep-20250301T120000Z/sweep.json"
MODEL = {"name": "tiny", "profile": "tiny", "batch_size": 1}
SERVER = {"identity": "torchserve 0.12.0", "binary": "torchserve", "version": "0.12.0", "official": True,
          "knobs": {"workers": 1, "batch_size": 1, "max_batch_delay_ms": 0, "token_auth": True}}


def spread(*values: float) -> dict:
    return Spread.of(list(values)).as_json()


def loaded(data: dict) -> Loaded:
    return Loaded(data, Source(f"results/{data['run_id']}/x.json", data["run_id"], data["created"], "0" * 64,
                               data["created"]))


def step(offered: float, p50: float, p99: float, valid: bool = True) -> dict:
    return {"offered_rps": offered, "throughput_rps": offered, "latency_ms": {"p50": p50, "p99": p99},
            "failures": 0, "valid": valid, "invalid_reasons": [] if valid else ["load generator saturated"],
            "run_id": f"sweep/steps/{offered:g}", "purpose": "common-load", "repeat": 1}


def sweep_target(slo_max: list[float], saturation: list[float], p50: list[float], p99: list[float],
                 offered: float = 400.0) -> dict:
    """A sweep target as loadtests/sweep.py writes it, as far as the verdict reads it: the scalars are medians."""
    return {"server": SERVER, "ceiling": None, "steps": [step(offered, Spread.of(p50).median, Spread.of(p99).median)],
            "saturation_runs": [], "invalid_reasons": [],
            "slo_max_rps": Spread.of(slo_max).median, "saturation_rps": Spread.of(saturation).median,
            "slo_max": spread(*slo_max), "saturation": spread(*saturation),
            "at_common_load": {"offered_rps": offered, "throughput_rps": spread(offered), "p50_ms": spread(*p50),
                               "p99_ms": spread(*p99), "valid": True}}


def sweep(run_id: str, targets: dict[str, dict], common_load: float | None = None, slo_ms: float = 50.0) -> Loaded:
    return loaded({"kind": "sweep", "run_id": run_id, "created": "2026-01-01T00:00:00Z", "slo_ms": slo_ms,
                   "model": MODEL, "method": {"repeats": 3}, "common_load_rps": common_load, "targets": targets,
                   "valid": True, "invalid_reasons": []})


def run_target(throughput: float, p50: float, p99: float, spreads: dict, valid: bool = True) -> dict:
    """A load-test run's target: the medians and their spreads."""
    return {"server": SERVER, "ceiling": None, "throughput_rps": throughput, "latency_ms": {"p50": p50, "p99": p99},
            "offered": {"rate_rps": None}, "failures": 0, "valid": valid,
            "invalid_reasons": [] if valid else ["load generator saturated"], "spread": spreads, "repeats": []}


def run(run_id: str, targets: dict[str, dict], mode: str = "closed", users: int = 32,
        rate: float | None = None) -> Loaded:
    return loaded({"kind": "loadtest", "run_id": run_id, "created": "2026-01-01T00:00:00Z", "mode": mode,
                   "model": MODEL, "load": {"users": users, "rate_rps": rate}, "repeats": {"count": 3},
                   "targets": targets, "valid": True, "invalid_reasons": []})


def row_of(rows, target: str, figure: str):
    return next(row for row in rows if row.target == target and row.figure == figure)


# --- figures of one run -----------------------------------------------------------------------------------------

def test_a_sweep_gives_its_recorded_spreads():
    new = sweep("new", {"tf-rest": sweep_target([390, 400, 410], [650, 655, 660], [3.0, 3.1, 3.4], [9, 10, 12])},
                common_load=400.0)
    got = figures(new)["tf-rest"]
    assert got[SLO_MAX] == Spread(400, 390, 410, (390, 400, 410))
    assert got[SATURATION] == Spread(655, 650, 660, (650, 655, 660))
    assert (got[P50].median, got[P99].low, got[P99].high, got[P99].n) == (3.1, 9, 12, 3)
    new.data["targets"]["tf-rest"]["at_common_load"] = None  # no common load: no target had an SLO maximum
    assert figures(new)["tf-rest"][P99] is None


def test_a_run_gives_its_spreads():
    new = run("new", {"tf-rest": run_target(600.0, 48.0, 99.0, {"throughput_rps": spread(590, 600, 610),
                                                                "p50_ms": spread(47, 48, 49), "p99_ms": None})})
    assert figures(new)["tf-rest"][THROUGHPUT] == Spread(600, 590, 610, (590, 600, 610))
    assert figures(new)["tf-rest"][P99] is None  # no repeat had the requests for a p99


# --- two runs compared ------------------------------------------------------------------------------------------

def two_sweeps(before: dict, after: dict) -> list:
    """compare() of two one-target (tf-rest) sweeps in the new shape, at the same common load."""
    defaults = {"slo_max": [400, 405, 410], "saturation": [650, 655, 660], "p50": [3.0, 3.1, 3.2],
                "p99": [9.0, 9.5, 10.0]}
    return compare(sweep("base", {"tf-rest": sweep_target(**{**defaults, **before})}, 400.0),
                   sweep("cur", {"tf-rest": sweep_target(**{**defaults, **after})}, 400.0))


def test_a_change_beyond_the_spread_is_claimed_with_its_direction():
    rows = two_sweeps({}, {"slo_max": [450, 455, 460], "p99": [12.0, 12.5, 13.0]})
    slo, p99 = row_of(rows, "tf-rest", SLO_MAX), row_of(rows, "tf-rest", P99)
    assert (slo.outcome, slo.result) == (BEYOND, "beyond spread: better")
    assert slo.change == pytest.approx(455 / 405 - 1)
    assert (p99.outcome, p99.result) == (BEYOND, "beyond spread: worse")  # higher latency
    assert row_of(rows, "tf-rest", SATURATION).outcome == WITHIN  # the same figures
    assert summary_line(rows) == "2 figures changed beyond the spread, 2 within it"


def test_the_in_process_ceilings_of_both_runs_show_the_machines_pace_beside_the_figures():
    def with_ceilings(run_id: str, tf: float | None, torch: float) -> Loaded:
        targets = {name: sweep_target([400, 405, 410], [650, 655, 660], [3.0, 3.1, 3.2], [9.0, 9.5, 10.0])
                   for name in ("tf-rest", "torch-grpc")}
        for name, calls in (("tf-rest", tf), ("torch-grpc", torch)):
            targets[name]["ceiling"] = {"in_process_rps": calls, "fraction": 655 / calls} if calls else None
        return sweep(run_id, targets, 400.0)

    line = reference_line(with_ceilings("base", 1420.0, 863.0), with_ceilings("cur", 1247.0, 690.4))
    assert "tf 1,420 -> 1,247 calls/s (-12.2%); torch 863 -> 690 calls/s (-20.0%)" in line
    only_torch = reference_line(with_ceilings("base", None, 863.0), with_ceilings("cur", 1247.0, 863.0))
    assert "tf" not in only_torch.split(": ", 1)[1] and "(+0.0%)" in only_torch  # a framework one run lacks: left out
    assert reference_line(with_ceilings("base", None, 0.0), with_ceilings("cur", None, 0.0)) is None


def test_overlapping_intervals_are_not_claimed_however_far_the_medians_move():
    rows = two_sweeps({"slo_max": [400, 420, 500]}, {"slo_max": [495, 520, 530]})
    slo = row_of(rows, "tf-rest", SLO_MAX)
    assert (slo.outcome, slo.result) == (WITHIN, "within spread")
    assert slo.change == pytest.approx(520 / 420 - 1)


@pytest.mark.parametrize(("before", "after", "result"), [
    ([400], [800], "one measurement: no claim"),
    ([400, 401], [800, 801], "2 repeats: no claim (needs 3)"),
    ([400, 401, 402], [800], "one measurement: no claim"),
])
def test_fewer_than_three_repeats_are_never_claimed(before, after, result):
    rows = two_sweeps({"slo_max": before}, {"slo_max": after})
    slo = row_of(rows, "tf-rest", SLO_MAX)
    assert (slo.outcome, slo.result) == (NO_CLAIM, result)
    assert slo.change is not None  # the change is still shown


def test_a_target_in_one_run_only_is_missing_on_the_other_side():
    target = sweep_target([400, 405, 410], [650, 655, 660], [3.0, 3.1, 3.2], [9.0, 9.5, 10.0])
    rows = compare(sweep("base", {"tf-rest": target, "torch-grpc": target}, 400.0),
                   sweep("cur", {"tf-rest": target}, 400.0))
    missing = [row for row in rows if row.target == "torch-grpc"]
    assert [row.figure for row in missing] == [SLO_MAX, SATURATION, P50, P99]
    assert all(row.baseline is not None and row.current is None and row.outcome == NOT_COMPARED
               and row.result == "not compared: not in current" for row in missing)
    assert summary_line(rows) == "0 figures changed beyond the spread, 4 within it; 4 not compared"


def test_an_invalid_target_is_shown_without_a_claim():
    base = sweep("base", {"tf-rest": sweep_target([400, 405, 410], [650, 655, 660], [3.0, 3.1, 3.2],
                                                      [9.0, 9.5, 10.0])}, 400.0)
    cur = sweep("cur", {"tf-rest": sweep_target([800, 805, 810], [650, 655, 660], [3.0, 3.1, 3.2],
                                                     [9.0, 9.5, 10.0])}, 400.0)
    cur.data["targets"]["tf-rest"]["invalid_reasons"] = ["tf-rest-common-r1-400rps: load generator saturated"]
    slo = row_of(compare(base, cur), "tf-rest", SLO_MAX)
    assert slo.outcome == NO_CLAIM and slo.invalid
    assert slo.result == "no claim: INVALID in current (tf-rest-common-r1-400rps: load generator saturated)"


def test_a_sweep_and_a_run_compare_only_like_with_like():
    target = sweep_target([400, 405, 410], [650, 655, 660], [3.0, 3.1, 3.2], [9.0, 9.5, 10.0])
    the_sweep = sweep("base", {"tf-rest": target}, common_load=400.0)
    spreads = {"throughput_rps": spread(405, 410, 415), "p50_ms": spread(4.0, 4.1, 4.2), "p99_ms": spread(9, 9.6, 11)}
    open_run = run("cur", {"tf-rest": run_target(410, 4.1, 9.6, spreads)}, mode="open", rate=420.0)
    rows = compare(the_sweep, open_run)
    assert [(row.figure, row.outcome) for row in rows] == [
        (SLO_MAX, NOT_COMPARED), (SATURATION, NOT_COMPARED), (THROUGHPUT, NOT_COMPARED),
        (P50, BEYOND), (P99, WITHIN)]  # 420 req/s offered is within 10% of the sweep's common load
    assert row_of(rows, "tf-rest", SLO_MAX).result == "not compared: only a sweep measures it"
    assert "not a run's throughput" in row_of(rows, "tf-rest", SATURATION).result
    assert "not a sweep's saturation" in row_of(rows, "tf-rest", THROUGHPUT).result
    assert row_of(rows, "tf-rest", THROUGHPUT).change is None  # never a change between unlike figures

    closed_run = run("cur", {"tf-rest": run_target(410, 4.1, 9.6, spreads)}, users=32)
    p99 = row_of(compare(the_sweep, closed_run), "tf-rest", P99)
    assert p99.outcome == NOT_COMPARED
    assert p99.result == ("not compared: measured under different loads (baseline: open loop at the common load, "
                          "400.0 req/s offered; current: closed loop, 32 users)")


def test_a_different_model_or_load_is_not_compared():
    target = sweep_target([400, 405, 410], [650, 655, 660], [3.0, 3.1, 3.2], [9.0, 9.5, 10.0])
    other_model = sweep("cur", {"tf-rest": target}, 400.0)
    other_model.data["model"] = {**MODEL, "batch_size": 8}
    rows = compare(sweep("base", {"tf-rest": target}, 400.0), other_model)
    assert all(row.outcome == NOT_COMPARED and row.result.startswith("not compared: different model") for row in rows)
    rows = compare(sweep("base", {"tf-rest": target}, 400.0), sweep("cur", {"tf-rest": target}, 800.0))
    assert [row.outcome for row in rows] == [WITHIN, WITHIN, NOT_COMPARED, NOT_COMPARED]  # latency at 400 vs 800


# --- the command line -------------------------------------------------------------------------------------------

BASELINE = "sweep-20250301T120000Z"
CURRENT = "sweep-20250302T120000Z"
# per target: slo_max, saturation, p50, p99 (each three repeats), baseline then current
FIGURES = {
    "tf-rest": ([390, 399, 402], [650, 655, 660], [5.8, 5.9, 6.0], [20, 21, 23]),
    "tf-grpc": ([780, 795, 800], [1000, 1012, 1020], [4.0, 4.1, 4.2], [14, 14.2, 15]),
    "torch-rest": ([400, 408, 415], [740, 744, 750], [7.7, 7.8, 7.9], [33, 33.3, 34]),
    "torch-grpc": ([100, 110, 120], [2900, 2950, 3000], [1.1, 1.1, 1.2], [2.2, 2.2, 2.3]),
}
CURRENT_SLO_MAX = {"tf-grpc": [880, 890, 905], "torch-rest": [405, 412, 420]}  # beyond; within


def set_figures(sweep_file: Path, run_id: str, created: str, slo_max: dict[str, list[float]]) -> None:
    """Give every target of a sweep the spreads above (the new fields), `slo_max` overriding the SLO maxima."""
    data = json.loads(sweep_file.read_text())
    data.update(run_id=run_id, created=created, common_load_rps=400.0)
    for target, entry in data["targets"].items():
        slo, saturation, p50, p99 = FIGURES[target]
        slo = slo_max.get(target, slo)
        entry.update(slo_max=spread(*slo), slo_max_rps=Spread.of(slo).median, saturation=spread(*saturation),
                     saturation_rps=Spread.of(saturation).median,
                     at_common_load={"offered_rps": 400.0, "throughput_rps": spread(400, 400, 400),
                                     "p50_ms": spread(*p50), "p99_ms": spread(*p99), "valid": True})
    sweep_file.write_text(json.dumps(data))


@pytest.fixture(scope="module")
def two_runs(tmp_path_factory) -> Path:
    """The fixtures with the spreads set, and a later sweep whose tf-grpc SLO maximum rose beyond its spread."""
    root = copy_fixtures(tmp_path_factory.mktemp("compare"))
    set_figures(root / SWEEP, BASELINE, "2025-03-01T12:00:00Z", {})
    (root / "results" / CURRENT).mkdir()
    shutil.copy(root / SWEEP, root / "results" / CURRENT / "sweep.json")
    set_figures(root / "results" / CURRENT / "sweep.json", CURRENT, "2025-03-02T12:00:00Z", CURRENT_SLO_MAX)
    return root


@pytest.fixture(scope="module")
def compared(two_runs):
    """`python -m report --baseline <first sweep>`: the current run defaults to the newest sweep."""
    out = two_runs / "report"
    done = run_module("report", "--artifacts", str(two_runs), "--baseline", BASELINE)
    assert done.returncode == 0, done.stderr
    return done.stdout, out


def read_csv(path: Path) -> list[list[str]]:
    with path.open(newline="", encoding="utf-8") as handle:
        return list(csv.reader(handle))


def copy_fixtures(tmp_path: Path) -> Path:
    root = tmp_path / "artifacts"
    shutil.copytree(FIXTURES, root)
    return root


def html_rows(out: Path, table_id: str) -> list[list[str]]:
    """The body rows of one table of index.html, cell texts unescaped (report/html.py writes cells as text)."""
    page = (out / "index.html").read_text()
    body = re.search(rf'<table id="table-{table_id}">.*?<tbody>(.*?)</tbody>', page, re.DOTALL).group(1)
    return [[html.unescape(cell) for cell in re.findall(r"<td>(.*?)</td>", row, re.DOTALL)]
            for row in re.findall(r"<tr[^>]*>(.*?)</tr>", body, re.DOTALL)]


def test_cli_prints_the_comparison_and_the_report_shows_it(compared):
    stdout, out = compared
    lines = stdout.splitlines()
    assert lines[0] == f"baseline {BASELINE} (sweep, created 2025-03-01T12:00:00Z)"
    assert lines[1] == f"current  {CURRENT} (sweep, created 2025-03-02T12:00:00Z)"
    printed = [re.split(r"\s{2,}", line.strip()) for line in lines[2:]]
    assert printed[0] == ["target", "figure", "baseline", "current", "change", "result"]
    rows = read_csv(out / "tables" / "baseline-comparison.csv")
    assert printed[1:len(rows)] == rows[1:]  # the printed table is the report's table
    by_key = {(row[0], row[1]): row for row in rows[1:]}
    assert by_key["tf-grpc", SLO_MAX] == ["tf-grpc", SLO_MAX, "795.0 [780.0-800.0] n=3", "890.0 [880.0-905.0] n=3",
                                          "+11.9%", "beyond spread: better"]
    assert by_key["torch-rest", SLO_MAX] == ["torch-rest", SLO_MAX, "408.0 [400.0-415.0] n=3",
                                             "412.0 [405.0-420.0] n=3", "+1.0%", "within spread"]
    assert by_key["tf-grpc", P99] == ["tf-grpc", P99, "14.20 [14.00-15.00] n=3", "14.20 [14.00-15.00] n=3",
                                      "+0.0%", "within spread"]
    beyond = sum(row[5].startswith("beyond spread") for row in rows[1:])
    within = sum(row[5] == "within spread" for row in rows[1:])
    assert f"{beyond} figure{'' if beyond == 1 else 's'} changed beyond the spread, {within} within it" in lines[-4]
    assert lines[-3].startswith("The machine's pace, the in-process ceiling") and "tf 2,100 -> 2,100" in lines[-3]
    assert lines[-2:] == [f"written {out / 'index.html'}", f"written {out / 'report.md'}"]
    assert html_rows(out, "baseline-comparison") == rows[1:]
    markdown = (out / "report.md").read_text()
    assert f"## Compared with baseline {BASELINE}" in markdown and "The machine's pace" in markdown
    assert "| tf-grpc | SLO max req/s | 795.0 [780.0-800.0] n=3 | 890.0 [880.0-905.0] n=3 | +11.9% | beyond spread: " \
           "better |" in markdown


def test_every_table_is_written_as_csv_and_named_beside_it(compared):
    _, out = compared
    header, *rows = read_csv(out / "tables" / "verdict.csv")
    assert header == VERDICT_COLUMNS
    assert rows == html_rows(out, "verdict")
    assert [row[0] for row in rows] == ["tf-rest", "tf-grpc", "torch-rest", "torch-grpc"]
    html, markdown = (out / "index.html").read_text(), (out / "report.md").read_text()
    for path in sorted((out / "tables").glob("*.csv")):
        name = f"tables/{path.name}"
        assert f'<a href="{name}">{name}</a>' in html and f"CSV: [{name}]({name})" in markdown


def test_the_csv_files_are_the_documents_tables(tmp_path):
    document = build_document(load_results(FIXTURES))
    write_report(document, tmp_path / "report")
    tables = all_tables(document)
    assert sorted(path.stem for path in (tmp_path / "report" / "tables").glob("*.csv")) == \
        sorted(table.id for table in tables)
    for table in tables:
        assert read_csv(tmp_path / "report" / "tables" / f"{table.id}.csv") == \
            [table.columns, *(row.cells for row in table.rows)]


def test_cli_takes_a_file_path_and_an_explicit_current_run(two_runs, tmp_path):
    summary = two_runs / "results" / "loadtest-20250228T090000Z" / "summary.json"
    out = tmp_path / "out"
    done = run_module("report", "--artifacts", str(two_runs), "--out", str(out), "--baseline", str(summary),
                      "--current", CURRENT)
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines()[1] == f"current  {CURRENT} (sweep, created 2025-03-02T12:00:00Z)"
    rows = {(row[0], row[1]): row for row in read_csv(out / "tables" / "baseline-comparison.csv")[1:]}
    assert rows["tf-rest", THROUGHPUT][5] == \
        "not compared: only a load-test run measures it (at its own load, not a sweep's saturation)"
    assert rows["tf-rest", P99][5].startswith("not compared: measured under different loads (baseline: closed loop")
    assert rows["tf-grpc", SLO_MAX][5] == "not compared: not in baseline"


def break_schema(root: Path) -> str:
    edited = json.loads((root / SWEEP).read_text())
    del edited["targets"]
    (root / "results" / "broken").mkdir()
    (root / "results" / "broken" / "sweep.json").write_text(json.dumps(edited))
    return "broken"


def not_json(root: Path) -> str:
    (root / "garbage.json").write_text("{not json")
    return str(root / "garbage.json")


@pytest.mark.parametrize(("make_run", "message"), [
    (lambda root: "no-such-run", "'no-such-run' is neither a results file nor a run id"),
    (not_json, "cannot be read as JSON"),
    (break_schema, "does not match sweep.schema.json: at $: "),
])
def test_a_bad_baseline_exits_2_with_one_line_and_writes_nothing(tmp_path, make_run, message):
    root = copy_fixtures(tmp_path)
    done = run_module("report", "--artifacts", str(root), "--baseline", make_run(root))
    assert done.returncode == 2 and done.stdout == ""
    assert len(done.stderr.strip().splitlines()) == 1 and "baseline" in done.stderr and message in done.stderr
    assert not (root / "report").exists()


def test_current_without_a_baseline_exits_2(tmp_path):
    done = run_module("report", "--artifacts", str(FIXTURES), "--out", str(tmp_path / "out"), "--current", BASELINE)
    assert done.returncode == 2 and "--current needs --baseline" in done.stderr
    assert not (tmp_path / "out").exists()
