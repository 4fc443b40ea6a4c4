"""The comparison report (python -m report), built from recorded results fixtures.

tests/fixtures/results/ is an artifacts root: results/ holds an SLO sweep (four targets, three
repeats each: one INVALID probe in tf-rest, every torch-grpc run INVALID with a saturated
generator, so the sweep file marks itself invalid as loadtests/sweep.py would), a closed-loop run
of three repeats with an INVALID target, edge.json with one flagged format; checkpoints/ holds a
torch and a tf training run of the tiny profile. The numbers are distinctive so each one can only land in one cell.
"""

from __future__ import annotations

import base64
import json
import shutil
from dataclasses import asdict, fields
from html.parser import HTMLParser
from pathlib import Path

import pytest

from common.schemas import row_fields, schema, schema_errors
from common.spread import Spread
from common.targets import target_named
from edge.evaluate import EdgeResult
from loadtests.sweep import common_load, target_reasons
from report.build import build_document, write_report
from report.fmt import knobs as fmt_knobs
from report.load import load_results
from report.verdict import verdict_from_sweep
from serving.gpu_bench import Row as GpuRow
from tests.conftest import run_module

FIXTURES = Path(__file__).parent / "fixtures" / "results"
SWEEP = "results/sweep-20250301T120000Z/sweep.json"
SUMMARY = "results/loadtest-20250228T090000Z/summary.json"
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
SATURATED = ("load generator saturated: a locust process used 97% of a core (limit 90%); "
             "add workers (--workers) or cores")  # loadtests/runner.py's wording


class TableParser(HTMLParser):
    """Tables of a page by id: rows of (row class, cell texts)."""

    def __init__(self) -> None:
        super().__init__()
        self.tables: dict[str, list[tuple[str, list[str]]]] = {}
        self._table: str | None = None
        self._cell: list[str] | None = None

    def handle_starttag(self, tag: str, attrs: list) -> None:
        attributes = dict(attrs)
        if tag == "table":
            self._table = attributes.get("id")
            self.tables[self._table] = []
        elif tag == "tr" and self._table:
            self.tables[self._table].append((attributes.get("class") or "", []))
        elif tag == "td" and self._table:
            self._cell = []

    def handle_endtag(self, tag: str) -> None:
        if tag == "td" and self._cell is not None:
            self.tables[self._table][-1][1].append("".join(self._cell))
            self._cell = None
        elif tag == "table":
            self._table = None

    def handle_data(self, data: str) -> None:
        if self._cell is not None:
            self._cell.append(data)


def copy_fixtures(tmp_path: Path) -> Path:
    root = tmp_path / "artifacts"
    shutil.copytree(FIXTURES, root)
    return root


def edit_json(path: Path, change) -> None:
    data = json.loads(path.read_text())
    change(data)
    path.write_text(json.dumps(data))


def rows_by(table, key_column: str = "target") -> dict[str, dict[str, str]]:
    return {row.cells[table.columns.index(key_column)]: dict(zip(table.columns, row.cells, strict=True))
            for row in table.rows}


def bullets(document, section_id: str) -> str:
    section = next(s for s in document.sections if s.id == section_id)
    return "\n".join(item for block in section.blocks if hasattr(block, "items") for item in block.items)


def section_text(document, section_id: str) -> str:
    section = next(s for s in document.sections if s.id == section_id)
    return "\n".join(block.text for block in section.blocks if hasattr(block, "text"))


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> tuple:
    """The fixture report, built once: (document, output directory)."""
    out = tmp_path_factory.mktemp("report") / "report"
    document = build_document(load_results(FIXTURES))
    write_report(document, out)
    return document, out


def test_fixtures_match_the_schemas():
    sweep = json.loads((FIXTURES / SWEEP).read_text())
    summary = json.loads((FIXTURES / SUMMARY).read_text())
    edge = json.loads((FIXTURES / "results" / "edge.json").read_text())
    assert schema_errors(sweep, "sweep") == [] and schema_errors(summary, "summary") == []
    assert schema_errors(edge, "edge") == []
    del sweep["targets"]["tf-rest"]["steps"][0]["latency_ms"]["p99"]  # the validator does see a broken file
    assert any("p99" in error for error in schema_errors(sweep, "sweep"))
    sweep["targets"]["tf-grpc"]["server"]["knobs"]["workers"] = 2  # a TorchServe knob on the TF server
    assert any("knobs" in error for error in schema_errors(sweep, "sweep"))


def test_the_schemas_rows_are_the_writers_rows():
    """edge and gpu_bench validate what they write; their row dataclasses and the schemas agree field by field."""
    assert row_fields("edge", "result") == [f.name for f in fields(EdgeResult)]
    assert row_fields("gpu-bench", "row") == [f.name for f in fields(GpuRow)]


def test_a_sweep_from_before_the_repeated_knob_grid_still_validates_and_renders(tmp_path):
    """Older sweeps have knob-grid rows without a repeat and no method.knob_choice: shown, not rejected."""
    root = tmp_path / "artifacts"
    shutil.copytree(FIXTURES, root)
    path = root / SWEEP
    document = json.loads(path.read_text())
    del document["method"]["knob_choice"]
    for entry in document["targets"].values():
        for row in entry["knob_grid"]:
            del row["repeat"]
    path.write_text(json.dumps(document))
    assert schema_errors(document, "sweep") == []
    write_report(build_document(load_results(root)), tmp_path / "report")
    text = (tmp_path / "report" / "report.md").read_text()
    assert "knob choice: not recorded by this sweep" in text and "| tf-grpc | " in text


def _as_tuned(document: dict, tune_id: str) -> dict:
    """The fixture sweep as `make tune` + `make sweep` write it now: its knob grid moved into a tune document."""
    tune = {"kind": "tune", "schema_version": 1, "run_id": tune_id, "created": document["created"],
            "model": document["model"], "environment": document["environment"],
            "method": {"repeats": 3, "users": 8, "duration_s": 12.0, "warmup_s": 3.0, "rule": "the tune's rule",
                       "order": document["method"]["order"]},
            "choice": document["method"].pop("knob_choice"), "valid": True, "invalid_reasons": [],
            "targets": {name: {"server": entry["server"], "knob_grid": entry["knob_grid"]}
                        for name, entry in document["targets"].items()}}
    document["method"]["knobs"] = {target_named(name).side: {"knobs": entry["best_knobs"], "tuned_by": tune_id}
                                   for name, entry in document["targets"].items()}
    for entry in document["targets"].values():
        entry["knob_grid"] = []
    return tune


def test_a_sweep_names_the_tuning_that_chose_its_knobs_and_the_report_shows_that_grid(tmp_path):
    root = tmp_path / "artifacts"
    shutil.copytree(FIXTURES, root)
    sweep = json.loads((root / SWEEP).read_text())
    tune = _as_tuned(sweep, "20250301-110000-tune")
    assert schema_errors(sweep, "sweep") == [] and schema_errors(tune, "tune") == []
    (root / SWEEP).write_text(json.dumps(sweep))
    tune_path = root / "results" / "20250301-110000-tune" / "tune.json"
    tune_path.parent.mkdir()
    tune_path.write_text(json.dumps(tune))
    write_report(build_document(load_results(root)), tmp_path / "report")
    text = (tmp_path / "report" / "report.md").read_text()
    assert "Server knobs tried by make tune 20250301-110000-tune" in text and "the tune's rule" in text
    assert "chosen by make tune 20250301-110000-tune" in text  # the method names where the knobs came from
    chosen_rows = [line for line in text.splitlines() if line.startswith("| tf-grpc |") and "| chosen |" in line]
    kept = tune["choice"]["tf"]["points"][tune["choice"]["tf"]["chosen"]]["knobs"]
    assert chosen_rows and all(fmt_knobs(kept) in line for line in chosen_rows)
    tune_path.unlink()  # the tuning named but gone: said, not guessed
    write_report(build_document(load_results(root)), tmp_path / "report2")
    assert "not under results/: 20250301-110000-tune" in (tmp_path / "report2" / "report.md").read_text()


def test_the_hosts_pace_during_a_sweep_is_shown_and_a_large_move_is_a_caveat(tmp_path):
    root = tmp_path / "artifacts"
    shutil.copytree(FIXTURES, root)
    sweep = json.loads((root / SWEEP).read_text())
    sweep["host_pace"] = {"tf": {"start_calls_per_s": 1420.0, "end_calls_per_s": 1247.0, "change": 1247 / 1420 - 1},
                          "torch": {"start_calls_per_s": 863.0, "end_calls_per_s": 860.0, "change": 860 / 863 - 1}}
    assert schema_errors(sweep, "sweep") == []
    (root / SWEEP).write_text(json.dumps(sweep))
    write_report(build_document(load_results(root)), tmp_path / "moved")
    text = (tmp_path / "moved" / "report.md").read_text()
    assert "tf 1,420 -> 1,247 calls/s (-12.2%); torch 863 -> 860 calls/s (-0.3%)" in text
    assert "The host itself moved during the sweep (in-process ceiling from start to end: tf -12%)" in text
    sweep["host_pace"]["tf"].update(end_calls_per_s=1400.0, change=1400 / 1420 - 1)  # within 5%: shown, no caveat
    (root / SWEEP).write_text(json.dumps(sweep))
    write_report(build_document(load_results(root)), tmp_path / "steady")
    text = (tmp_path / "steady" / "report.md").read_text()
    assert "tf 1,420 -> 1,400 calls/s (-1.4%)" in text and "The host itself moved" not in text


def test_fixture_sweep_holds_only_what_the_writer_computes():
    sweep = json.loads((FIXTURES / SWEEP).read_text())
    target_keys = set(schema("sweep")["properties"]["targets"]["additionalProperties"]["required"])
    for name, entry in sweep["targets"].items():
        assert set(entry) == target_keys, name  # loadtests/sweep.py writes exactly these, no target-level valid
        found = [search["slo_max_rps"] for search in entry["searches"]]
        assert entry["slo_max"] == (Spread.of(found).as_json() if any(found) else None), name
        assert entry["slo_max_rps"] == (Spread.of(found).median if any(found) else None), name
    assert sweep["common_load_rps"] == common_load({n: Spread.from_json(e["slo_max"])
                                                    for n, e in sweep["targets"].items()}) == 390.2
    assert all(not s["valid"] and s["invalid_reasons"] == [SATURATED] for s in sweep["targets"]["torch-grpc"]["steps"])
    assert not sweep["valid"] and sweep["invalid_reasons"] == ["torch-grpc: no SLO maximum found"] + [
        f"torch-grpc: {reason}" for reason in sweep["targets"]["torch-grpc"]["invalid_reasons"]]
    assert sweep["targets"]["torch-grpc"]["invalid_reasons"] == target_reasons(sweep["targets"]["torch-grpc"])


def test_verdict_table_holds_the_sweep_numbers(built):
    document, _ = built
    rows = rows_by(document.tables()["verdict"])
    assert list(rows) == ["tf-rest", "tf-grpc", "torch-rest", "torch-grpc"]
    expected = {  # target: (SLO max, saturation, offered, p50, p99, failures, ceiling), median [min-max]
        "tf-rest": ("398.7 [390.2-405.5]", "655.3 [640.1-670.2]", "390.2", "5.93 [5.80-6.10]",
                    "21.40 [20.90-22.80]", "12", "31.2%"),
        "tf-grpc": ("795.5 [780.0-801.3]", "1,012.4 [990.0-1,030.8]", "390.2", "4.10 [4.00-4.30]",
                    "14.20 [13.90-14.80]", "0", "48.2%"),
        "torch-rest": ("408.3 [400.9-415.0]", "744.0 [730.0-760.5]", "390.2", "7.77 [7.50-8.00]",
                       "33.30 [31.00-35.20]", "0", "35.4%"),
        "torch-grpc": ("—", "2,950.0 [2,900.0-3,010.0]", "390.2", "1.11 [1.05-1.20]", "2.22 [2.10-2.40]", "0",
                       "98.3%"),
    }
    columns = ["SLO max req/s", "saturation req/s", "offered req/s", "p50 ms", "p99 ms", "failures",
               "% of in-process ceiling"]
    for target, values in expected.items():
        assert tuple(rows[target][c] for c in columns) == values, target
    assert rows["tf-rest"]["server"] == "tf-serving-dropin 0.1.0 (drop-in, not the official binary)"
    assert rows["torch-rest"]["server"] == "torchserve 0.12.0 (official)"
    assert "390.2 req/s offered" in document.tables()["verdict"].caption


def test_rendered_tables_equal_the_model(built):
    document, out = built
    parser = TableParser()
    parser.feed((out / "index.html").read_text())
    markdown = (out / "report.md").read_text()
    for table_id, table in document.tables().items():
        assert [cells for _, cells in parser.tables[f"table-{table_id}"][1:]] == [r.cells for r in table.rows]
        for row in table.rows:
            assert "| " + " | ".join(c.replace("|", "\\|") for c in row.cells) + " |" in markdown


def test_latency_is_compared_at_the_lowest_slo_maximum_any_search_found():
    assert common_load({"a": Spread.of([400, 390, 410]), "b": Spread.of([800, 780, 820]), "c": None}) == 390
    assert common_load({"a": None}) is None
    verdict = verdict_from_sweep(load_results(FIXTURES).sweeps[0])
    assert verdict.common_load == 390.2  # tf-rest's second search; torch-grpc (no SLO maximum) does not count
    assert {row.offered_rps for row in verdict.rows} == {390.2}


def test_edge_table_holds_edge_json_numbers(built):
    table = built[0].tables()["edge"]
    assert len(table.columns) == len(row_fields("edge", "result"))  # one column per field the writer records
    rows = rows_by(table, "format")
    assert rows["tflite-int8"].items() >= {
        "format": "tflite-int8", "runtime": "litert", "bytes": "40,321", "x SavedModel": "0.081",
        "accuracy": "95.89%", "change (points)": "-0.36", "top-1 agree": "99.11%", "p50 ms": "0.123",
        "p99 ms": "0.157", "status": "ok", "path": "models/edge/tiny_int8.tflite", "max abs delta": "0.0213",
        "worst sample": "1,377", "tolerance": "—"}.items()
    assert rows["tflite-float32"]["tolerance"] == "1e-05"
    assert rows["executorch-int8"]["status"] == "FLAGGED: loses more than 1 point of accuracy"
    assert rows["executorch-int8"]["change (points)"] == "-2.24"


def test_the_flag_threshold_comes_from_edge_json(tmp_path):
    root = copy_fixtures(tmp_path)
    edit_json(root / "results" / "edge.json", lambda edge: edge.update(accuracy_flag_points=2.5))
    document = build_document(load_results(root))
    assert rows_by(document.tables()["edge"], "format")["executorch-int8"]["status"] == \
        "FLAGGED: loses more than 2.5 points of accuracy"
    text = bullets(document, "choose")
    assert "smallest file within 2.5 points of accuracy" in text
    assert "executorch-int8 (flagged: loses more than 2.5 points of accuracy)" in text


def test_an_edge_file_without_its_flag_threshold_is_left_out_with_the_reason(tmp_path):
    root = copy_fixtures(tmp_path)
    edit_json(root / "results" / "edge.json", lambda edge: edge.pop("accuracy_flag_points"))
    document = build_document(load_results(root))
    status = rows_by(document.tables()["unreadable"], "file")["results/edge.json"]["status"]
    assert status == "INVALID: does not match its schema: at $: 'accuracy_flag_points' is a required property"
    assert "edge" not in document.tables()


def test_training_table_compares_both_trainers(built):
    document, _ = built
    rows = rows_by(document.tables()["training"], "trainer")
    assert (rows["torch"]["mean s/epoch"], rows["torch"]["first epoch s"], rows["torch"]["total s"],
            rows["torch"]["test accuracy"]) == ("0.917", "1.250", "3.25", "97.41%")
    assert (rows["tf"]["mean s/epoch"], rows["tf"]["total s"], rows["tf"]["test accuracy"],
            rows["tf"]["model"]) == ("2.000", "6.50", "96.67%", "tiny-tf")
    assert "the torch trainer is faster, 0.917 s/epoch against 2.000 s/epoch (2.18x)" in bullets(document, "training")


def test_invalid_runs_steps_and_targets_are_labelled(built):
    document, out = built
    tables = document.tables()
    columns = tables["sweep-steps"].columns
    steps = {tuple(r.cells[columns.index(c)] for c in ("target", "repeat", "offered req/s")): r
             for r in tables["sweep-steps"].rows}
    first_probe = steps[("tf-rest", "1", "655.3")]
    assert first_probe.invalid and first_probe.cells[columns.index("outcome")] == "fail"
    assert first_probe.cells[columns.index("status")] == "INVALID: 12 failed requests: HTTP 503 12"
    assert not steps[("tf-rest", "1", "398.7")].invalid
    assert steps[("torch-grpc", "2", "390.2")].cells[columns.index("status")] == f"INVALID: {SATURATED}"
    torch_grpc = rows_by(tables["verdict"])["torch-grpc"]["status"]
    assert torch_grpc.startswith(f"INVALID: torch-grpc-saturation-r1: {SATURATED}; ")
    assert torch_grpc.count(SATURATED) == 6  # three saturation runs, three runs at the common load
    runs = rows_by(tables["runs"])
    assert runs["torch-rest"]["status"] == "INVALID: repeat 2: 57 failed requests: HTTP 503 57"
    assert runs["torch-rest"]["failures"] == "57 (HTTP 503 57)"
    assert runs["tf-rest"]["status"] == "valid"  # the run file is invalid because of torch-rest only
    parser = TableParser()
    parser.feed((out / "index.html").read_text())
    classes = {cells[0]: cls for cls, cells in parser.tables["table-verdict"][1:]}
    assert classes == {"tf-rest": "", "tf-grpc": "", "torch-rest": "", "torch-grpc": "invalid"}
    assert f"torch-grpc is INVALID (torch-grpc-saturation-r1: {SATURATED};" in bullets(document, "choose")


def test_verdict_names_winners_from_valid_targets_only(built):
    text = bullets(built[0], "choose")
    # torch-grpc's 2.22 ms is INVALID; tf-grpc's interval lies below tf-rest's: a claim
    assert "Low latency: choose tf-grpc" in text and "p99 14.20 [13.90-14.80] ms" in text
    assert "next tf-rest at p99 21.40 [20.90-22.80] ms" in text
    assert "High throughput: choose tf-grpc" in text and "795.5 [780.0-801.3] req/s within the p99 SLO of 50 ms" in text
    assert "tf-grpc serves 1.95x [1.88-2.00] the throughput of torch-rest" in text
    assert "On the device: tflite-int8 is the smallest file within 1 point" in text  # executorch-int8 is flagged
    assert "Not an official binary: tf-serving-dropin 0.1.0 (not the official binary) served some targets" in text


def test_verdict_follows_the_numbers(tmp_path):
    root = copy_fixtures(tmp_path)

    def faster_torch_rest(sweep):
        target = sweep["targets"]["torch-rest"]
        target["slo_max"] = Spread.of([900.0, 890.0, 910.0]).as_json()
        target["at_common_load"]["p99_ms"] = Spread.of([9.1, 9.0, 9.3]).as_json()

    edit_json(root / SWEEP, faster_torch_rest)
    text = bullets(build_document(load_results(root)), "choose")
    assert "Low latency: choose torch-rest" in text and "p99 9.10 [9.00-9.30] ms" in text
    assert "High throughput: choose torch-rest" in text
    assert "PyTorch's best target leads" in text


def test_overlapping_intervals_or_too_few_repeats_name_no_winner(tmp_path):
    root = copy_fixtures(tmp_path)

    def close_race(sweep):
        sweep["targets"]["torch-rest"]["slo_max"] = Spread.of([790.0, 770.0, 805.0]).as_json()  # overlaps tf-grpc
        sweep["targets"]["tf-rest"]["at_common_load"]["p99_ms"] = Spread.of([14.5, 14.0]).as_json()  # two repeats

    edit_json(root / SWEEP, close_race)
    text = bullets(build_document(load_results(root)), "choose")
    assert ("High throughput: no measurable difference on this machine between tf-grpc (795.5 [780.0-801.3] req/s "
            "within the p99 SLO of 50 ms) and torch-rest (790.0 [770.0-805.0] req/s): their intervals overlap, so "
            "neither is named.") in text
    assert ("Low latency: no measurable difference on this machine between tf-grpc (p99 14.20 [13.90-14.80] ms) and "
            "tf-rest (p99 14.25 [14.00-14.50] ms): fewer than 3 repeats, so neither is named") in text
    assert ("Framework against framework: no measurable difference on this machine: tf-grpc against torch-rest, "
            "795.5 [780.0-801.3] against 790.0 [770.0-805.0] req/s, SLO-bounded; ratio 1.01x [0.97-1.04] "
            "(their intervals overlap).") in text
    assert "choose tf-grpc" not in text and "choose torch-rest" not in text


def test_plots_are_pngs_embedded_in_the_page_and_beside_the_markdown(built):
    document, out = built
    html = (out / "index.html").read_text()
    markdown = (out / "report.md").read_text()
    ids = [figure.id for figure in document.figures()]
    assert ids == ["p99-per-target", "edge-frontier", "latency-vs-load", "throughput-vs-batch", "training-time"]
    embedded = html.split('src="data:image/png;base64,')[1:]
    assert len(embedded) == len(ids)
    for figure, chunk in zip(document.figures(), embedded, strict=True):
        png = base64.b64decode(chunk.split('"', 1)[0])
        assert png.startswith(PNG_SIGNATURE) and png == (out / "figures" / f"{figure.id}.png").read_bytes()
        assert f"](figures/{figure.id}.png)" in markdown
    results = load_results(FIXTURES)
    sweep, edge, torch_checkpoint = (results.sweeps[0].source.describe(), results.edge.source.describe(),
                                     results.checkpoints[0].source.describe())
    assert sweep.startswith(f"{SWEEP}, run sweep-20250301T120000Z, created ")
    assert edge.startswith("results/edge.json, file dated ")
    expected = {"p99-per-target": sweep, "latency-vs-load": sweep, "throughput-vs-batch": sweep,
                "edge-frontier": edge, "training-time": torch_checkpoint}
    for figure in document.figures():
        assert expected[figure.id] in figure.provenance[0], figure.id


def test_figures_carry_server_hardware_and_pinning(built):
    latency = next(f for f in built[0].figures() if f.id == "latency-vs-load")
    text = "\n".join(latency.provenance)
    for fact in ("created 2025-03-01T12:00:00Z", "Fixture EPYC 7B13, 16 logical CPUs", "pinning applied",
                 "tf-serving-dropin 0.1.0 (drop-in, not the official binary)", "torchserve 0.12.0 (official)",
                 "max_batch_size=32", "profile tiny"):
        assert fact in text


def test_same_results_give_the_same_report(built, tmp_path):
    document, out = built
    write_report(build_document(load_results(FIXTURES)), tmp_path / "again")
    assert (tmp_path / "again" / "index.html").read_bytes() == (out / "index.html").read_bytes()


def test_no_results_at_all_exits_2_with_one_line(tmp_path):
    (tmp_path / "empty").mkdir()
    result = run_module("report", "--artifacts", str(tmp_path / "empty"))
    assert result.returncode == 2
    assert len(result.stderr.strip().splitlines()) == 1
    for command in ("make loadtest", "make sweep", "make edge"):
        assert command in result.stderr
    assert not (tmp_path / "empty" / "report").exists()


@pytest.mark.parametrize("args", [["--bogus"], ["--artifacts", "/nonexistent/artifacts"]])
def test_bad_arguments_exit_2_with_one_line(args):
    result = run_module("report", *args)
    assert result.returncode == 2 and len(result.stderr.strip().splitlines()) == 1, result.stderr


def test_cli_writes_both_files(tmp_path):
    out = tmp_path / "out"
    result = run_module("report", "--artifacts", str(FIXTURES), "--out", str(out))
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == [f"written {out / 'index.html'}", f"written {out / 'report.md'}"]
    assert (out / "index.html").is_file()
    assert "| tf-grpc | tf-serving-dropin 0.1.0 (drop-in, not the official binary) | 795.5 [780.0-801.3] |" in \
        (out / "report.md").read_text()


def test_missing_edge_results_give_a_note_not_a_crash(tmp_path):
    root = copy_fixtures(tmp_path)
    (root / "results" / "edge.json").unlink()
    document = build_document(load_results(root))
    assert "not measured yet: run `make edge`" in section_text(document, "edge")
    assert "edge" not in document.tables()
    assert "On the device: not measured yet" in bullets(document, "choose")
    assert "verdict" in document.tables()


def test_one_trainer_only_says_run_train_both(tmp_path):
    root = copy_fixtures(tmp_path)
    shutil.rmtree(root / "checkpoints" / "tiny-tf")
    text = section_text(build_document(load_results(root)), "training")
    assert "only the torch trainer's checkpoint exists; run `make train-both`" in text


def test_without_a_sweep_the_newest_closed_loop_run_is_used_and_said(tmp_path):
    root = copy_fixtures(tmp_path)
    shutil.rmtree(root / SWEEP.rsplit("/", 1)[0])
    document = build_document(load_results(root))
    assert "No SLO sweep found: this verdict uses the newest closed-loop run, loadtest-20250228T090000Z" in \
        section_text(document, "verdict")
    rows = rows_by(document.tables()["verdict"])
    assert (rows["torch-rest"]["p99 ms"], rows["torch-rest"]["SLO max req/s"]) == ("123.45 [120.10-130.00]", "—")
    assert rows["torch-rest"]["status"] == "INVALID: repeat 2: 57 failed requests: HTTP 503 57"
    assert rows["tf-rest"]["status"] == "valid"  # the run file is invalid because of torch-rest alone
    text = bullets(document, "choose")
    assert "Low latency: choose tf-rest" in text and "p99 97.75 [95.20-101.30] ms" in text
    assert "High throughput: choose tf-rest" in text and \
        "616.9 [601.2-630.4] req/s (closed loop, 32 users, 3 repeats; no SLO sweep yet)" in text
    assert "not measured yet: run `make sweep`" in section_text(document, "sweep")


def test_a_sweep_with_no_slo_figure_says_so_not_that_there_is_no_sweep(tmp_path):
    root = copy_fixtures(tmp_path)
    edit_json(root / SWEEP, lambda sweep: [t.update(slo_max_rps=None, slo_max=None) for t in sweep["targets"].values()])
    text = bullets(build_document(load_results(root)), "choose")
    assert ("High throughput: choose tf-grpc (tf-serving-dropin 0.1.0 (drop-in, not the official binary)): "
            "1,012.4 [990.0-1,030.8] req/s closed-loop saturation (no valid target stayed within the p99 SLO of 50 ms "
            "in the sweep).") \
        in text
    assert "no SLO sweep yet" not in text


def test_a_file_breaking_its_schema_is_listed_and_left_out(tmp_path):
    root = copy_fixtures(tmp_path)
    broken = root / "results" / "sweep-broken" / "sweep.json"
    broken.parent.mkdir()
    broken.write_text(json.dumps({"kind": "sweep", "created": "2099-01-01T00:00:00Z"}))
    document = build_document(load_results(root))
    unreadable = rows_by(document.tables()["unreadable"], "file")
    assert unreadable["results/sweep-broken/sweep.json"]["status"].startswith("INVALID: does not match its schema")
    assert rows_by(document.tables()["verdict"])["tf-grpc"]["p99 ms"] == "14.20 [13.90-14.80]"  # the good one counts


def gpu_bench_document() -> dict:
    """A gpu-bench.json as serving/gpu_bench.py writes it, with one row."""
    rows = [asdict(GpuRow("torch", "float16", 64, 50, 12345.678, 5.1842, 6.75))]
    return {"kind": "gpu-bench", "model": "tiny", "profile": "tiny", "input_shape": [28, 28, 1],
            "multiply_accumulates": 905472, "date": "2025-03-02T10:00:00+00:00", "frameworks": ["torch"],
            "gpu": {"name": "Fixture GPU", "driver_version": "550.1"}, "rows": rows,
            "top1_agreement": {"torch": {"float32": 1.0, "float16": 0.99609375}}, "skipped": [],
            "versions": {"torch": "2.13.0"}, "host": {"cpu_model": "Fixture Xeon", "logical_cpus": 8, "os": "Linux"},
            "method": {"warmup": 10, "iterations": 50}}


def test_gpu_rows_hardware_and_agreement_are_shown(tmp_path):
    root = copy_fixtures(tmp_path)
    (root / "results" / "gpu-bench.json").write_text(json.dumps(gpu_bench_document()))
    document = build_document(load_results(root))
    table = document.tables()["gpu"]
    assert table.columns == [f.name for f in fields(GpuRow)]
    assert table.rows[0].cells == ["torch", "float16", "64", "50", "12,345.68", "5.18", "6.75"]
    assert rows_by(document.tables()["gpu-agreement"], "dtype")["float16"] == {
        "framework": "torch", "dtype": "float16", "top-1 agreement with float32": "99.61%"}
    provenance = next(s for s in document.sections if s.id == "gpu").provenance
    for line in ("GPU: driver_version=550.1, name=Fixture GPU", "hardware: Fixture Xeon, 8 logical CPUs, Linux",
                 "packages: torch 2.13.0", "frameworks on the GPU: torch"):
        assert line in provenance


def test_a_gpu_file_whose_rows_break_the_schema_is_left_out(tmp_path):
    root = copy_fixtures(tmp_path)
    broken = gpu_bench_document()
    del broken["rows"][0]["p99_ms"]
    (root / "results" / "gpu-bench.json").write_text(json.dumps(broken))
    document = build_document(load_results(root))
    assert rows_by(document.tables()["unreadable"], "file")["results/gpu-bench.json"]["status"] == \
        "INVALID: does not match its schema: at $.rows[0]: 'p99_ms' is a required property"
    assert "gpu" not in document.tables()
