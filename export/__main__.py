"""Command line of the export stage.

  python -m export [--model tiny] [--version 1] [--max-batch 256] [--tolerance 1e-5]

Writes the SavedModel (TF Serving layout), the TorchServe .mar, the float32
TFLite and the reference answers (models/reference/<model>.npz) from one
checkpoint, each format gated on parity against the reference model. Bad input
exits with code 2 and one line; a format failing the parity gate exits 1 and
publishes nothing.
"""

from __future__ import annotations

import sys
from pathlib import Path

from common.errors import OneLineArgumentParser, console_script
from common.paths import default_artifacts_root, default_model
from model.parity import FLOAT_TOLERANCE


def _parser() -> OneLineArgumentParser:
    parser = OneLineArgumentParser(prog="python -m export", description=__doc__.splitlines()[0])
    parser.add_argument("--artifacts", type=Path, default=default_artifacts_root(),
                        help="artifacts root (default: $ARTIFACTS or ./artifacts)")
    parser.add_argument("--model", default=default_model(),
                        help="model name of the checkpoint to export (default: the profile)")
    parser.add_argument("--version", type=int, default=1, help="TF Serving version directory (default 1)")
    parser.add_argument("--max-batch", type=int, default=256, help="largest batch the servers accept")
    parser.add_argument("--tolerance", type=float, default=FLOAT_TOLERANCE, help="max |delta| of probabilities")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    from export.config import ExportConfig
    from model.checkpoint import load_checkpoint

    cfg = ExportConfig(model_name=args.model, version=args.version, max_batch=args.max_batch,
                       tolerance=args.tolerance, artifacts=args.artifacts)
    load_checkpoint(cfg.paths.checkpoint_dir(cfg.model_name))  # a clear error before the frameworks load
    from export.run import format_table, run_export
    from model.parity import ParityError

    try:
        entries = run_export(cfg)
    except ParityError as exc:
        print(f"export stopped: {exc}", file=sys.stderr)
        return 1
    print(format_table(entries))
    print(f"manifest: {cfg.paths.manifest}")
    return 0


cli = console_script(main)

if __name__ == "__main__":
    cli()
