"""`make report` / `python -m report`: build the comparison report from the results files alone.

  python -m report [--artifacts DIR] [--out DIR] [--baseline RUN [--current RUN]]

Reads <artifacts>/results/ (sweep.json, summary.json, edge.json, gpu-bench.json),
<artifacts>/checkpoints/*/checkpoint.json and manifest.json; writes
<out>/index.html (self-contained), <out>/report.md, <out>/figures/*.png and every
table as <out>/tables/<table id>.csv.
With no results at all it exits 2 and says which command makes them.

--baseline RUN sets two runs side by side (printed, and a section of the report):
RUN is a run id (a directory under <artifacts>/results/ holding sweep.json or
summary.json) or the path of such a file; --current defaults to the run the
verdict uses (the newest sweep, else the newest standalone run).
"""

from __future__ import annotations

import os

os.environ.setdefault("MPLBACKEND", "Agg")

from pathlib import Path  # noqa: E402

from common.errors import OneLineArgumentParser, UsageError, console_script  # noqa: E402
from common.paths import default_artifacts_root  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    parser = OneLineArgumentParser(prog="python -m report", description=__doc__.splitlines()[0])
    parser.add_argument("--artifacts", type=Path, default=default_artifacts_root(),
                        help="artifacts root holding results/ and checkpoints/ (default: $ARTIFACTS or artifacts/)")
    parser.add_argument("--out", type=Path, help="output directory (default: <artifacts>/report)")
    parser.add_argument("--baseline", metavar="RUN",
                        help="compare with this run: a run id under <artifacts>/results/ or a sweep.json/summary.json")
    parser.add_argument("--current", metavar="RUN",
                        help="the run set against the baseline (default: the run the verdict uses)")
    args = parser.parse_args(argv)
    if args.current and not args.baseline:
        parser.error("--current needs --baseline RUN")
    if not args.artifacts.is_dir():
        raise UsageError(f"artifacts root {args.artifacts} does not exist; run `make demo` and the measurements first")
    # matplotlib loads only once the arguments are good
    from report.build import build_document, compare_with_baseline, write_report
    from report.compare import comparison_text
    from report.load import load_results

    results = load_results(args.artifacts.resolve())
    # the runs are resolved before anything is written: a bad --baseline leaves no report behind
    comparison = compare_with_baseline(results, args.baseline, args.current) if args.baseline else None
    written = write_report(build_document(results, comparison), args.out or args.artifacts / "report")
    if comparison:
        print(comparison_text(comparison))
    for path in written:
        print(f"written {path}")
    return 0


cli = console_script(main)

if __name__ == "__main__":
    cli()
