"""`report --baseline`: the verdict figures of two runs side by side, and what may be claimed from them.

figures() reads each target's verdict figures from a sweep.json or a summary.json
as Spreads (common/spread.py), as the verdict reads them. compare()
pairs the figures of two runs: a change is claimed only where common.spread.differ
allows it, and a figure is compared only with the same figure measured under the
same condition (same model, same SLO, the same load), never a sweep's saturation
with a run's throughput.
"""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from common.errors import UsageError
from common.schemas import schema_errors
from common.spread import MIN_REPEATS, Spread, differ
from common.targets import ordered, target_named
from report import fmt
from report.doc import Bullets, Paragraph, Row, Section, Table
from report.load import Loaded, Results, Source
from report.verdict import TargetRow, verdict_from_run, verdict_from_sweep

SAME_LOAD_TOLERANCE = 0.10  # open-loop loads this close count as the same load

SLO_MAX = "SLO max req/s"
SATURATION = "saturation req/s"
THROUGHPUT = "throughput req/s"
P50 = "p50 ms"
P99 = "p99 ms"
FIGURE_ORDER = (SLO_MAX, SATURATION, THROUGHPUT, P50, P99)
HIGHER_IS_BETTER = {SLO_MAX, SATURATION, THROUGHPUT}
DIGITS = {P50: 2, P99: 2}  # as fmt.ms; throughputs as fmt.rps
# why a figure only one kind of run has is not set against the other's
ONLY_ONE_KIND = {
    SLO_MAX: "only a sweep measures it",
    SATURATION: "only a sweep measures it (the most served, not a run's throughput at its own load)",
    THROUGHPUT: "only a load-test run measures it (at its own load, not a sweep's saturation)",
}

BEYOND, WITHIN, NO_CLAIM, NOT_COMPARED = "beyond", "within", "no claim", "not compared"
SCHEMA_OF_KIND = {"sweep": "sweep", "loadtest": "summary"}


# --- the figures of one run -------------------------------------------------------------------------------------

def is_sweep(loaded: Loaded) -> bool:
    return loaded.data["kind"] == "sweep"


def _verdict_rows(loaded: Loaded) -> dict[str, TargetRow]:
    verdict = verdict_from_sweep(loaded) if is_sweep(loaded) else verdict_from_run(loaded)
    return {row.target: row for row in verdict.rows}


def figures(loaded: Loaded) -> dict[str, dict[str, Spread | None]]:
    """Per target, the verdict figures of a sweep (SLO max, saturation, p50/p99 at the common load) or of a
    load-test run (throughput, p50, p99), as the verdict reads them; None where the run has no value."""
    rows = _verdict_rows(loaded)
    if is_sweep(loaded):
        return {t: {SLO_MAX: r.slo_max, SATURATION: r.saturation, P50: r.p50, P99: r.p99} for t, r in rows.items()}
    return {t: {THROUGHPUT: r.saturation, P50: r.p50, P99: r.p99} for t, r in rows.items()}


def invalid_targets(loaded: Loaded) -> dict[str, str]:
    """Targets the verdict labels INVALID, with why: their figures are shown but never claimed."""
    return {target: "; ".join(row.reasons) or "no reason recorded"
            for target, row in _verdict_rows(loaded).items() if not row.valid}


@dataclass(frozen=True)
class Condition:
    """What one figure was measured under; two figures are alike only under the same condition."""

    model: str
    load: str  # shown: "open loop, 400.0 req/s offered"
    key: tuple  # must be equal: ("open",), ("closed", users), ("slo", slo_ms), ...
    offered_rps: float | None = None  # open loop: loads within SAME_LOAD_TOLERANCE count as the same


def _model(loaded: Loaded) -> str:
    model = loaded.data["model"]
    return f"{model['name']} (profile {model['profile']}), batch size {model['batch_size']}"


def _open_loop(model: str, offered: float | None, label: str = "open loop") -> Condition:
    load = f"{label}, {offered:,.1f} req/s offered" if offered is not None else f"{label}: none"
    return Condition(model, load, ("open",), offered)


def _sweep_common_load(loaded: Loaded) -> float | None:
    return loaded.data["common_load_rps"]


def conditions(loaded: Loaded) -> dict[str, Condition]:
    """The condition each of the run's figures was measured under (the same for all its targets)."""
    model, data = _model(loaded), loaded.data
    if is_sweep(loaded):
        latency = _open_loop(model, _sweep_common_load(loaded), "open loop at the common load")
        return {SLO_MAX: Condition(model, f"p99 <= {data['slo_ms']:g} ms", ("slo", data["slo_ms"])),
                SATURATION: Condition(model, "the most served, best knobs", ("saturation",)),
                P50: latency, P99: latency}
    if data["mode"] == "open":
        run = _open_loop(model, data["load"]["rate_rps"])
    else:
        run = Condition(model, f"closed loop, {data['load']['users']} users", ("closed", data["load"]["users"]))
    return {THROUGHPUT: run, P50: run, P99: run}


def _loads_near(a: float | None, b: float | None) -> bool:
    if a is None or b is None:
        return a is b
    return abs(a - b) <= SAME_LOAD_TOLERANCE * max(a, b)


def unlike(baseline: Condition, current: Condition) -> str | None:
    """Why figures measured under these two conditions cannot be compared; None when they can."""
    if baseline.model != current.model:
        return f"different model (baseline: {baseline.model}; current: {current.model})"
    if baseline.key != current.key or not _loads_near(baseline.offered_rps, current.offered_rps):
        return f"measured under different loads (baseline: {baseline.load}; current: {current.load})"
    return None


# --- two runs compared ------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Side:
    """One run as compare() reads it."""

    figures: dict[str, dict[str, Spread | None]]
    conditions: dict[str, Condition]
    invalid: dict[str, str]

    @classmethod
    def of(cls, loaded: Loaded) -> Side:
        return cls(figures(loaded), conditions(loaded), invalid_targets(loaded))


@dataclass(frozen=True)
class Change:
    """One target's figure in both runs, and what may be said about the difference."""

    target: str
    figure: str
    baseline: Spread | None
    current: Spread | None
    outcome: str  # BEYOND, WITHIN, NO_CLAIM or NOT_COMPARED
    result: str  # the outcome as shown, with its reason
    invalid: bool = False  # the target is INVALID in either run

    @property
    def change(self) -> float | None:
        """Relative change of the medians (current against baseline); None where not compared."""
        if self.outcome == NOT_COMPARED or self.baseline is None or self.current is None or not self.baseline.median:
            return None
        return self.current.median / self.baseline.median - 1.0


def _claim(figure: str, baseline: Spread, current: Spread) -> tuple[str, str]:
    """The claim two alike, valid figures allow (common.spread.differ decides)."""
    if differ(baseline, current):
        better = (current.median > baseline.median) == (figure in HIGHER_IS_BETTER)
        return BEYOND, f"beyond spread: {'better' if better else 'worse'}"
    fewest = min(baseline.n, current.n)
    if fewest < MIN_REPEATS:
        return NO_CLAIM, ("one measurement: no claim" if fewest == 1
                          else f"{fewest} repeats: no claim (needs {MIN_REPEATS})")
    return WITHIN, "within spread"


def _judge(target: str, figure: str, before: Side, after: Side) -> tuple[str, str]:
    """The outcome for one target's figure, most basic reason first."""
    for role, side in (("baseline", before), ("current", after)):
        if target not in side.figures:
            return NOT_COMPARED, f"not compared: not in {role}"
        if figure not in side.conditions:
            return NOT_COMPARED, f"not compared: {ONLY_ONE_KIND[figure]}"
    why = unlike(before.conditions[figure], after.conditions[figure])
    if why:
        return NOT_COMPARED, f"not compared: {why}"
    for role, side in (("baseline", before), ("current", after)):
        if target in side.invalid:
            return NO_CLAIM, f"no claim: INVALID in {role} ({side.invalid[target]})"
    baseline, current = before.figures[target][figure], after.figures[target][figure]
    for role, value in (("baseline", baseline), ("current", current)):
        if value is None:
            return NOT_COMPARED, f"not compared: no value in {role}"
    return _claim(figure, baseline, current)


def compare(baseline: Loaded, current: Loaded) -> list[Change]:
    """Every target in either run, every verdict figure either run has, in the verdict table's order."""
    before, after = Side.of(baseline), Side.of(current)
    rows = []
    for target in ordered({*before.figures, *after.figures}):
        # a target in one run only has that run's figures; one in both, the figures either run has
        sides = [side for side in (before, after) if target in side.figures]
        names = [name for name in FIGURE_ORDER if any(name in side.conditions for side in sides)]
        for name in names:
            outcome, result = _judge(target, name, before, after)
            rows.append(Change(target, name, before.figures.get(target, {}).get(name),
                               after.figures.get(target, {}).get(name), outcome, result,
                               invalid=target in before.invalid or target in after.invalid))
    return rows


def in_process_reference(loaded: Loaded) -> dict[str, float]:
    """Per framework, the in-process ceiling the run measured (calls/s, batch 1, on the servers' CPUs).

    No server and no network: the machine's own pace. When it moved between two runs, the
    servers' figures may have moved with it, whatever the servers did.
    """
    found = {}
    for name, entry in loaded.data["targets"].items():
        if entry.get("ceiling"):
            found[target_named(name).side] = entry["ceiling"]["in_process_rps"]
    return found


def reference_line(baseline: Loaded, current: Loaded) -> str | None:
    """'in-process ceiling ...: tf 1,420 -> 1,247 calls/s (-12.2%); ...' for the frameworks both runs measured."""
    before, after = in_process_reference(baseline), in_process_reference(current)
    sides = [side for side in ("tf", "torch") if side in before and side in after]
    if not sides:
        return None
    changes = "; ".join(fmt.pace(side, before[side], after[side]) for side in sides)
    return (f"The machine's pace, the in-process ceiling (one measurement per run, no claim): {changes}. "
            "Where it moved, the servers' figures may have moved with the machine.")


def summary_line(rows: list[Change]) -> str:
    """'3 figures changed beyond the spread, 9 within it' and what could not be claimed or compared."""
    counts = Counter(row.outcome for row in rows)
    parts = [f"{counts[BEYOND]} figure{'' if counts[BEYOND] == 1 else 's'} changed beyond the spread, "
             f"{counts[WITHIN]} within it"]
    if counts[NO_CLAIM]:
        parts.append(f"{counts[NO_CLAIM]} without a claim (fewer than {MIN_REPEATS} repeats, or INVALID)")
    if counts[NOT_COMPARED]:
        parts.append(f"{counts[NOT_COMPARED]} not compared")
    return "; ".join(parts)


# --- which runs: --baseline and --current -----------------------------------------------------------------------

@dataclass(frozen=True)
class RunComparison:
    """The two runs of `report --baseline` and their rows."""

    baseline: Loaded
    current: Loaded
    current_is_verdict: bool  # --current not given: the run the report's verdict uses
    rows: list[Change]


def _source(path: Path, root: Path, raw: bytes, data: dict) -> Source:
    shown = path.relative_to(root).as_posix() if path.is_relative_to(root) else str(path)
    modified = datetime.fromtimestamp(path.stat().st_mtime, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    return Source(shown, data.get("run_id"), data.get("created"), hashlib.sha256(raw).hexdigest(), modified)


def read_run(path: Path, root: Path, role: str) -> Loaded:
    """A sweep.json or summary.json named on the command line, validated; a UsageError says what is wrong."""
    try:
        raw = path.read_bytes()
        data = json.loads(raw)
    except (OSError, ValueError) as exc:
        raise UsageError(f"{role} {path} cannot be read as JSON: {exc}") from None
    kind = data.get("kind") if isinstance(data, dict) else None
    if kind not in SCHEMA_OF_KIND:
        raise UsageError(f"{role} {path} is neither a sweep.json nor a summary.json (kind {kind!r})")
    errors = schema_errors(data, SCHEMA_OF_KIND[kind])
    if errors:
        more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
        first = " ".join(errors[0].split())  # one line, whatever the validator's message holds
        raise UsageError(f"{role} {path} does not match {SCHEMA_OF_KIND[kind]}.schema.json: {first}{more}")
    return Loaded(data, _source(path.resolve(), root, raw, data))


def run_file(results: Results, run: str, role: str) -> Path:
    """RUN as given: a path to a sweep.json or summary.json, or a run id (a directory under results/)."""
    given = Path(run)
    if given.is_file():
        return given
    directory = results.root / "results" / run
    for name in ("sweep.json", "summary.json"):
        if (directory / name).is_file():
            return directory / name
    runs = [item.source.run_id for item in (results.sweeps or results.summaries)[:3]]
    known = f"; newest runs there: {', '.join(map(str, runs))}" if runs else ""
    raise UsageError(f"{role} {run!r} is neither a results file nor a run id under {results.root / 'results'} "
                     f"(no sweep.json or summary.json in {directory}){known}")


def run_comparison(results: Results, baseline: str, current: str | None, verdict_run: Loaded | None) -> RunComparison:
    """--baseline RUN [--current RUN]; current defaults to `verdict_run`, the run the report's verdict uses."""
    before = read_run(run_file(results, baseline, "baseline"), results.root, "baseline")
    if current is not None:
        after = read_run(run_file(results, current, "current"), results.root, "current")
    elif verdict_run is not None:
        after = verdict_run
    else:
        raise UsageError(f"no sweep or load-test run under {results.root / 'results'} to compare with the baseline; "
                         "name one with --current RUN")
    return RunComparison(before, after, current is None, compare(before, after))


# --- shown: the report section and the table on stdout ----------------------------------------------------------

COLUMNS = ["target", "figure", "baseline", "current", "change", "result"]


def spread_text(spread: Spread | None, digits: int) -> str:
    """'795.5 [780.0-801.2] n=3'; a single measurement without its (empty) interval."""
    if spread is None:
        return fmt.MISSING
    if spread.n == 1:
        return f"{fmt.number(spread.median, digits)} n=1"
    return f"{spread.text(digits)} n={spread.n}"


def cells(row: Change) -> list[str]:
    digits = DIGITS.get(row.figure, 1)
    change = fmt.MISSING if row.change is None else f"{row.change * 100:+.1f}%"
    return [row.target, row.figure, spread_text(row.baseline, digits), spread_text(row.current, digits), change,
            row.result]


def describe_run(loaded: Loaded) -> str:
    data = loaded.data
    kind = "sweep" if is_sweep(loaded) else f"{data['mode']}-loop load-test run"
    return f"{data['run_id']} ({kind}, created {data['created']})"


def conditions_line(role: str, loaded: Loaded) -> str:
    """'baseline <run>: model ...; SLO max req/s: p99 <= 50 ms; p50 ms, p99 ms: open loop, ...'."""
    by_load: dict[str, list[str]] = {}
    measured = conditions(loaded)
    for name, condition in measured.items():
        by_load.setdefault(condition.load, []).append(name)
    loads = "; ".join(f"{', '.join(names)}: {load}" for load, names in by_load.items())
    return f"{role} {describe_run(loaded)}: model {next(iter(measured.values())).model}; {loads}"


def comparison_table(comparison: RunComparison) -> Table:
    caption = (f"Baseline {comparison.baseline.data['run_id']} against current {comparison.current.data['run_id']}: "
               "median [min-max] over the repeats, n repeats; change of the medians.")
    return Table("baseline-comparison", caption, COLUMNS,
                 [Row(cells(row), invalid=row.invalid) for row in comparison.rows])


def comparison_section(comparison: RunComparison) -> Section:
    baseline, current = comparison.baseline, comparison.current
    section = Section("baseline", f"Compared with baseline {baseline.data['run_id']}",
                      sources=[baseline.source.describe(), current.source.describe()])
    chosen = " (--current not given: the run the verdict above uses)" if comparison.current_is_verdict else ""
    section.add(
        Paragraph(f"Baseline {describe_run(baseline)} against current {describe_run(current)}{chosen}."),
        Bullets([conditions_line("baseline", baseline), conditions_line("current", current)]),
        Paragraph(f"A change is claimed (beyond spread) only where the two min-max intervals do not overlap and both "
                  f"rest on at least {MIN_REPEATS} repeats; a figure from one repeat (n=1) is "
                  "shown but never claimed. A figure is set only against the same figure measured under the same "
                  f"model and load (open-loop loads within {SAME_LOAD_TOLERANCE:.0%}); INVALID targets are shown "
                  "without a claim."),
        Paragraph(summary_line(comparison.rows) + "."),
        *[Paragraph(line) for line in [reference_line(baseline, current)] if line],
        comparison_table(comparison))
    return section


def text_table(columns: list[str], rows: list[list[str]]) -> str:
    """Columns padded to their widest cell, for a terminal."""
    widths = [max(len(line[i]) for line in [columns, *rows]) for i in range(len(columns))]
    return "\n".join("  ".join(cell.ljust(width) for cell, width in zip(line, widths, strict=True)).rstrip()
                     for line in [columns, *rows])


def comparison_text(comparison: RunComparison) -> str:
    """What `report --baseline` prints: both runs, the table, the summary line."""
    reference = reference_line(comparison.baseline, comparison.current)
    return "\n".join([f"baseline {describe_run(comparison.baseline)}", f"current  {describe_run(comparison.current)}",
                      text_table(COLUMNS, [cells(row) for row in comparison.rows]), summary_line(comparison.rows),
                      *([reference] if reference else [])])
