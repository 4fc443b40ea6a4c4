"""The report's reliability section, from a recorded results/reliability.json (matrix, chaos and soak)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from common.schemas import schema_errors
from report.build import build_document
from report.load import load_results

FIXTURES = Path(__file__).parent / "fixtures" / "results"
RELIABILITY = FIXTURES / "results" / "reliability.json"


def reliability_section(root: Path):
    document = build_document(load_results(root))
    return next(section for section in document.sections if section.id == "reliability")


def tables_of(section) -> dict:
    return {block.id: block for block in section.blocks if hasattr(block, "rows")}


def test_the_fixture_matches_its_schema_and_a_broken_one_does_not():
    data = json.loads(RELIABILITY.read_text())
    assert schema_errors(data, "reliability") == []
    data["chaos"]["faults"][0]["stack"] = "onnx"
    assert any("stack" in error or "onnx" in error for error in schema_errors(data, "reliability"))


def test_every_fault_is_one_row_with_both_stacks_as_recorded():
    data = json.loads(RELIABILITY.read_text())
    table = tables_of(reliability_section(FIXTURES))["reliability-chaos"]
    assert table.columns == ["fault", "TensorFlow side", "TorchServe"]
    rows = {row.cells[0]: row.cells for row in table.rows}
    assert set(rows) == {fault["fault"] for fault in data["chaos"]["faults"]}
    for fault in data["chaos"]["faults"]:
        cell = rows[fault["fault"]][1 if fault["stack"] == "tf" else 2]
        window = fault.get("during") or fault["after"]
        assert cell.startswith(f"{window['failed']:,} of {window['requests']:,} failed"), (fault["fault"], cell)
        recovery = "not within the run" if fault["recovery_s"] is None else f"{fault['recovery_s']:g} s"
        assert f"recovered after {recovery}" in cell
        if fault["fault"] == "overload":
            assert f"offered {fault['phases'][1]['offered_rps']:g} req/s" in cell
            assert f"answered {fault['during']['achieved_rps']:,.1f} req/s" in cell
            assert f"back within 2x of before after {fault['latency_back_s']:g} s" in cell


def test_the_matrix_has_a_column_per_target_and_marks_a_failed_input(tmp_path):
    root = tmp_path / "artifacts"
    shutil.copytree(FIXTURES, root)
    data = json.loads(RELIABILITY.read_text())
    first = data["matrix"]["rows"][0]
    first.update(answer="HTTP 503", ok=False, next_good=False)
    data["matrix"]["passed"] = False
    (root / "results" / "reliability.json").write_text(json.dumps(data))
    table = tables_of(reliability_section(root))["reliability-matrix"]
    assert table.columns[1:] == sorted({row["target"] for row in data["matrix"]["rows"]})
    row = next(r for r in table.rows if r.cells[0] == first["input"])
    cell = row.cells[table.columns.index(first["target"])]
    assert row.invalid and cell.startswith("HTTP 503 FAIL") and "next good request FAILED" in cell
    assert "FAILED: 1 of" in table.caption


def test_soak_rows_carry_the_recorded_growth():
    data = json.loads(RELIABILITY.read_text())
    table = tables_of(reliability_section(FIXTURES))["reliability-soak"]
    assert len(table.rows) == len(data["soak"]["targets"])
    for row, recorded in zip(table.rows, data["soak"]["targets"], strict=True):
        cells = dict(zip(table.columns, row.cells, strict=True))
        assert cells["target"] == recorded["target"]
        assert cells["MiB per minute"] == f"{recorded['rss']['slope_mib_per_min']:,.2f}"
        assert cells["failed"] == f"{recorded['failed']:,} of {recorded['requests']:,}"


def test_the_section_names_the_servers_and_what_to_run_when_parts_are_missing(tmp_path):
    section = reliability_section(FIXTURES)
    provenance = "\n".join(section.provenance)
    assert "tf-serving-dropin" in provenance and "drop-in, not the official binary" in provenance
    assert "torchserve" in provenance
    root = tmp_path / "artifacts"
    shutil.copytree(FIXTURES, root)
    data = json.loads(RELIABILITY.read_text())
    del data["chaos"], data["soak"]
    (root / "results" / "reliability.json").write_text(json.dumps(data))
    notes = [block.text for block in reliability_section(root).blocks if getattr(block, "kind", "") == "note"]
    assert any("make chaos" in note for note in notes) and any("make soak" in note for note in notes)


def test_the_cpu_pinning_a_run_recorded_is_named(tmp_path):
    root = tmp_path / "artifacts"
    shutil.copytree(FIXTURES, root)
    data = json.loads(RELIABILITY.read_text())
    data["soak"]["environment"]["pinning"] = {"applied": True, "generator_cpus": [0], "server_cpus": [1]}
    (root / "results" / "reliability.json").write_text(json.dumps(data))
    lines = [line for line in reliability_section(root).provenance if line.startswith("soak: hardware")]
    assert len(lines) == 1 and "pinning applied: generator on CPUs 0, server on CPUs 1" in lines[0], lines
