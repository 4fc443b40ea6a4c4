"""`make report` / `python -m report`: build the comparison report from the results files alone.

  python -m report [--artifacts DIR] [--out DIR]

Reads <artifacts>/results/ (sweep.json, summary.json, edge.json, gpu-bench.json),
<artifacts>/checkpoints/*/checkpoint.json and manifest.json; writes
<out>/index.html (self-contained), <out>/report.md and <out>/figures/*.png.
With no results at all it exits 2 and says which command makes them.
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
    args = parser.parse_args(argv)
    if not args.artifacts.is_dir():
        raise UsageError(f"artifacts root {args.artifacts} does not exist; run `make demo` and the measurements first")
    from report.build import build_report  # matplotlib loads only once the arguments are good

    for path in build_report(args.artifacts.resolve(), args.out or args.artifacts / "report"):
        print(f"written {path}")
    return 0


cli = console_script(main)

if __name__ == "__main__":
    cli()
