"""Command line of the training stage.

  python -m training train  [--profile tiny] [--trainer torch|tf] [--data digits|DIR] ...
  python -m training export [--model tiny] [--version 1] ...

Bad input exits with code 2 and one line; a format failing the parity gate exits 1.
"""

from __future__ import annotations

import os

# Quiet TensorFlow's C++ start-up chatter before it is imported anywhere.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import sys  # noqa: E402
from pathlib import Path  # noqa: E402

from common.errors import OneLineArgumentParser, run_cli  # noqa: E402
from common.paths import default_artifacts_root, default_model  # noqa: E402
from training.parity import FLOAT_TOLERANCE  # noqa: E402


def _parser() -> OneLineArgumentParser:
    parser = OneLineArgumentParser(prog="python -m training", description=__doc__.splitlines()[0])
    parser.add_argument("--artifacts", type=Path, default=default_artifacts_root(),
                        help="artifacts root (default: $ARTIFACTS or ./artifacts)")
    commands = parser.add_subparsers(dest="command", required=True, parser_class=OneLineArgumentParser)

    train = commands.add_parser("train", help="train one profile in one framework and write a checkpoint")
    train.add_argument("--profile", default=os.environ.get("PROFILE", "tiny"), help="tiny (default) or mobilenet")
    train.add_argument("--trainer", default=os.environ.get("TRAINER", "torch"), help="torch (default) or tf")
    train.add_argument("--data", default="digits",
                       help="'digits' (bundled) or an image folder, one subfolder per class")
    train.add_argument("--model-name", help="name of the model in every artifact (default: the profile)")
    train.add_argument("--epochs", type=int, help="epochs (default per profile: tiny 20, mobilenet 1)")
    train.add_argument("--batch-size", type=int, default=32)
    train.add_argument("--learning-rate", type=float, default=2e-3, help="peak of the cosine schedule")
    train.add_argument("--seed", type=int, default=0)
    train.add_argument("--max-shift", type=int, default=2,
                       help="augmentation: pixels a training batch may move each way (0: none)")
    train.add_argument("--max-train-images", type=int, help="train on at most this many images")

    export = commands.add_parser("export", help="export SavedModel, .mar and TFLite, gated on parity")
    export.add_argument("--model", default=default_model(),
                        help="model name of the checkpoint to export (default: the profile)")
    export.add_argument("--version", type=int, default=1, help="TF Serving version directory (default 1)")
    export.add_argument("--max-batch", type=int, default=256, help="largest batch the servers accept")
    export.add_argument("--tolerance", type=float, default=FLOAT_TOLERANCE, help="max |delta| of probabilities")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.command == "train":
        from training.config import TrainConfig
        from training.spec import get_spec
        from training.train import run_training

        get_spec(args.profile)
        cfg = TrainConfig(profile=args.profile, trainer=args.trainer, data=args.data, model_name=args.model_name,
                          epochs=args.epochs, batch_size=args.batch_size, learning_rate=args.learning_rate,
                          seed=args.seed, max_shift=args.max_shift, max_train_images=args.max_train_images,
                          artifacts=args.artifacts)
        run_training(cfg)
        return 0

    from training.checkpoint import load_checkpoint
    from training.config import ExportConfig

    cfg = ExportConfig(model_name=args.model, version=args.version, max_batch=args.max_batch,
                       tolerance=args.tolerance, artifacts=args.artifacts)
    load_checkpoint(cfg.paths.checkpoint_dir(cfg.model_name))  # a clear error before the frameworks load
    from training.export import format_table, run_export
    from training.parity import ParityError

    try:
        entries = run_export(cfg)
    except ParityError as exc:
        print(f"export stopped: {exc}", file=sys.stderr)
        return 1
    print(format_table(entries))
    print(f"manifest: {cfg.paths.manifest}")
    return 0


if __name__ == "__main__":
    run_cli(main)
