"""Assemble the report from the results files and write index.html, report.md, the figure PNGs and table CSVs."""

from __future__ import annotations

from pathlib import Path

from common.errors import UsageError
from common.fsutil import publish, staging_dir
from report import fmt
from report.choose import choose_section
from report.compare import RunComparison, comparison_section, run_comparison
from report.csv_export import write_tables
from report.doc import Document, Paragraph, Row, Section, Table
from report.edge_report import edge_section
from report.gpu_report import gpu_section
from report.html import render_html
from report.load import Results, load_results
from report.markdown import figure_path, render_markdown
from report.reliability_report import reliability_section
from report.serving_report import runs_section, sweep_run_ids, sweep_section, verdict_section
from report.training_report import by_profile, trainer_comparisons, training_section
from report.verdict import choose_verdict

TITLE = "TensorFlow Serving vs TorchServe: measured comparison"
NOTHING_TO_REPORT = ("no results under {where}: run `make loadtest` or `make sweep` (serving, with both servers "
                     "deployed) or `make edge` (on-device formats) first")


def _sources_section(results: Results) -> Section:
    section = Section("sources", "Sources")
    loaded = [*results.sweeps, *results.summaries, *[x for x in (results.edge, results.gpu, results.reliability) if x],
              *results.checkpoints, *([results.manifest] if results.manifest else [])]
    rows = [Row([item.source.path, item.source.run_id or fmt.MISSING, item.source.created or fmt.MISSING,
                 item.source.sha256]) for item in loaded]
    section.add(Table("sources", f"Every file this report read, relative to the artifacts root {results.root}.",
                      ["file", "run id", "created", "sha256"], rows))
    if results.unreadable:
        section.add(Paragraph("Files left out because they could not be read or do not match their schema:",
                              "invalid"),
                    Table("unreadable", "Unreadable results files (INVALID: not used anywhere in this report).",
                          ["file", "status"],
                          [Row([path, f"INVALID: {why}"], invalid=True) for path, why in results.unreadable]))
    return section


def compare_with_baseline(results: Results, baseline: str, current: str | None) -> RunComparison:
    """`--baseline RUN [--current RUN]`; current defaults to the run the verdict uses. UsageError on bad input."""
    verdict = choose_verdict(results.sweeps, results.summaries, sweep_run_ids(results.sweeps + results.tunes))
    return run_comparison(results, baseline, current, verdict.loaded if verdict else None)


def build_document(results: Results, comparison: RunComparison | None = None) -> Document:
    """The report for these results (with `comparison`, a section comparing two runs after the verdict);
    raises UsageError when there is nothing to compare."""
    if not results.has_results:
        raise UsageError(NOTHING_TO_REPORT.format(where=results.root / "results")
                         + (f" ({len(results.unreadable)} results files unreadable: "
                            f"{results.unreadable[0][0]}: {results.unreadable[0][1]})" if results.unreadable else ""))
    in_sweeps = sweep_run_ids(results.sweeps + results.tunes)
    verdict = choose_verdict(results.sweeps, results.summaries, in_sweeps)
    groups = by_profile(results.checkpoints)
    comparisons = trainer_comparisons(groups)
    intro = ["Every number below is read from the results files listed under Sources; nothing was measured or "
             "typed in while building this report. Rows and points marked INVALID (saturated generator, failed "
             "requests, a sweep target with no valid step) are shown with their reasons and excluded from every "
             "winner; each target is judged by its own results, never by another target's.",
             f"Artifacts root: {results.root}."]
    sections = [verdict_section(results, verdict),
                *([comparison_section(comparison)] if comparison else []), edge_section(results.edge),
                choose_section(results, verdict, [f"Training: {line}" for line in comparisons]),
                sweep_section(results, verdict), runs_section(results, in_sweeps),
                reliability_section(results.reliability), gpu_section(results.gpu),
                training_section(results.checkpoints, groups, comparisons),
                _sources_section(results)]
    return Document(TITLE, intro, sections)


def write_report(document: Document, out: Path) -> list[Path]:
    """Write index.html, report.md, figures/ and tables/ into `out`, replacing the previous report as a whole."""
    out = out.resolve()
    with staging_dir(out.parent) as scratch:
        staged = scratch / out.name
        (staged / "figures").mkdir(parents=True)
        for figure in document.figures():
            (staged / figure_path(figure)).write_bytes(figure.png)
        (staged / "index.html").write_text(render_html(document), encoding="utf-8")
        (staged / "report.md").write_text(render_markdown(document), encoding="utf-8")
        write_tables(document, staged)
        publish(staged, out)
    return [out / "index.html", out / "report.md"]


def build_report(root: Path, out: Path) -> list[Path]:
    """Read every results file under the artifacts root and write the report into `out`."""
    return write_report(build_document(load_results(root)), out)
