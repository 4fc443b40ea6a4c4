"""The reliability section: bad input, faults under load and soak, side by side for both stacks.

Read from results/reliability.json (python -m reliability matrix | chaos | soak); each part says what is
missing and which command measures it.
"""

from __future__ import annotations

from typing import Any

from report import fmt
from report.doc import Bullets, Paragraph, Row, Section, Table
from report.load import Loaded

STACKS = (("tf", "TensorFlow side"), ("torch", "TorchServe"))
NOT_MEASURED = {"matrix": "bad-input matrix not run yet: `make bad-input` (or `python -m reliability matrix`)",
                "chaos": "faults under load not measured yet: `make chaos`",
                "soak": "soak not measured yet: `make soak`"}


def reliability_section(loaded: Loaded | None) -> Section:
    section = Section("reliability", "Reliability: bad input, faults under load, soak")
    data = loaded.data if loaded else {}
    if loaded:
        section.sources.append(loaded.source.describe())
    for part, build in (("matrix", _matrix_blocks), ("chaos", _chaos_blocks), ("soak", _soak_blocks)):
        if part in data:
            section.add(*build(data[part]))
            section.provenance += _provenance(part, data[part])
        else:
            section.add(Paragraph(NOT_MEASURED[part], "note"))
    return section


def _provenance(part: str, body: dict[str, Any]) -> list[str]:
    servers = body["targets"] if part == "matrix" else body["servers"]  # the matrix's are by target, not stack
    lines = [f"{part} (written {body['written']}): {name}: {fmt.server(record)}"
             for name, record in sorted(servers.items())]
    environment = body.get("environment")
    if environment:
        pinning = f"; pinning {fmt.pinning(environment['pinning'])}" if "pinning" in environment else ""
        lines.append(f"{part}: hardware {fmt.hardware(environment['host'])}{pinning}; "
                     f"packages {fmt.packages(environment['packages'])}")
    return lines


# -- the bad-input matrix ------------------------------------------------------------------------------------

def _matrix_blocks(matrix: dict[str, Any]) -> list:
    targets = sorted({row["target"] for row in matrix["rows"]})
    notes = list(dict.fromkeys(row["note"] for row in matrix["rows"] if row.get("note")))
    by_input: dict[str, dict[str, dict]] = {}
    for row in matrix["rows"]:
        by_input.setdefault(row["input"], {})[row["target"]] = row
    rows = [Row([name, *(_answer(cells.get(target), notes) for target in targets)],
                invalid=any(not cell["ok"] for cell in cells.values()))
            for name, cells in by_input.items()]
    failed = [f"{row['target']} / {row['input']}" for row in matrix["rows"] if not row["ok"]]
    excused = sum(1 for row in matrix["rows"] if row["ok"] and row.get("note"))
    verdict = (f"every row passed: a 4xx or a gRPC client error with a message, or (*n, {excused} rows) an answer the "
               "server cannot be configured out of, noted below; no 5xx, no restart, the next good request answered"
               if not failed else f"FAILED: {len(failed)} of {len(matrix['rows'])}: {', '.join(failed[:8])}")
    caption = (f"{matrix['inputs']} malformed or hostile inputs; each cell is the answer the target gave, then ok when "
               f"the next good request succeeded and no worker restarted. {verdict}.")
    blocks: list = [Table("reliability-matrix", caption, ["input", *targets], rows)]
    if notes:
        blocks.append(Bullets([f"*{number} {note}" for number, note in enumerate(notes, 1)]))
    return blocks


def _answer(row: dict | None, notes: list[str]) -> str:
    if row is None:
        return fmt.MISSING
    text = row["answer"] + (" ok" if row["ok"] else " FAIL")
    if row.get("note"):
        text += f" *{notes.index(row['note']) + 1}"
    if not row["next_good"]:
        text += "; next good request FAILED"
    if row.get("restarted"):
        text += "; restarted"
    return text


# -- faults under load ---------------------------------------------------------------------------------------

def _chaos_blocks(chaos: dict[str, Any]) -> list:
    faults: dict[str, dict[str, dict]] = {}
    for row in chaos["faults"]:
        faults.setdefault(row["fault"], {})[row["stack"]] = row
    rows = [Row([fault, *(_fault_cell(by_stack.get(stack)) for stack, _ in STACKS)])
            for fault, by_stack in faults.items()]
    caption = (f"Faults injected under {chaos['rate_rps']:g} req/s of Poisson load ({chaos['duration_s']:g} s per "
               f"fault, the fault after 5 s; overload: half the saturation rate, twice it for 30 s, half again). "
               "Each cell: of the requests answered after the fault (those in flight when it struck included), how "
               "many failed, by kind (overload: of those sent during it); recovery = from the fault (the end of the "
               f"overload) until every later request succeeded. Run {chaos['run_id']}.")
    return [Table("reliability-chaos", caption, ["fault", *(title for _, title in STACKS)], rows)]


def _fault_cell(row: dict | None) -> str:
    if row is None:
        return fmt.MISSING
    window = row.get("during") or row["after"]
    kinds = ", ".join(f"{kind} x{count}" for kind, count in sorted(window["failure_kinds"].items()))
    recovery = "not within the run" if row["recovery_s"] is None else f"{row['recovery_s']:g} s"
    text = f"{window['failed']:,} of {window['requests']:,} failed" + (f" ({kinds})" if kinds else "")
    text += f"; recovered after {recovery}"
    if row["fault"] == "overload":
        latency = window.get("latency_ms") or {}
        text += (f"; offered {row['phases'][1]['offered_rps']:g} req/s, answered {fmt.rps(window.get('achieved_rps'))}"
                 f" req/s, p50 {fmt.ms(latency.get('p50'))} ms while overloaded; median latency back within 2x"
                 f" of before {_after(row.get('latency_back_s'))}; saturation {row['saturation_rps']:g} req/s, "
                 f"{row['saturation_from']}")
    if row["dropped_by_generator"]:
        text += f"; {row['dropped_by_generator']:,} arrivals the generator could not send"
    return text


def _after(seconds: float | None) -> str:
    return "not within the run" if seconds is None else f"after {seconds:g} s"


# -- soak ----------------------------------------------------------------------------------------------------

def _soak_blocks(soak: dict[str, Any]) -> list:
    rows = []
    for row in soak["targets"]:
        rss = row["rss"] or {}
        rows.append(Row([dict(STACKS)[row["stack"]], row["target"], f"{row['minutes']:g}",
                         f"{row['offered_rps']:g} ({row['rate_from']})", f"{row['failed']:,} of {row['requests']:,}",
                         fmt.number(rss.get("start_mib")), fmt.number(rss.get("end_mib")),
                         fmt.number(rss.get("max_mib")), fmt.number(rss.get("slope_mib_per_min"), 2)],
                        invalid=row["failed"] > 0))
    caption = ("Steady load for minutes; RSS of the server's whole process group (frontend and workers) sampled "
               "every 5 s. Start, end and slope cover the steady part (after the first fifth of the run). "
               f"Run {soak['run_id']}.")
    return [Table("reliability-soak", caption, ["stack", "target", "minutes", "req/s offered", "failed",
                                                 "RSS start MiB", "RSS end MiB", "RSS max MiB", "MiB per minute"],
                  rows)]
