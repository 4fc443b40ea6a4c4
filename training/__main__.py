"""Command line of the training stage.

  python -m training train  [--profile tiny] [--trainer torch|tf] [--data digits|DIR] ...

Bad input exits with code 2 and one line. Exporting the checkpoint is the next stage: python -m export.
"""

from __future__ import annotations

import os
from pathlib import Path

from common.errors import OneLineArgumentParser, console_script
from common.paths import default_artifacts_root


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
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)  # "train" is the only command
    from model.spec import get_spec
    from training.config import TrainConfig
    from training.train import run_training

    get_spec(args.profile)
    cfg = TrainConfig(profile=args.profile, trainer=args.trainer, data=args.data, model_name=args.model_name,
                      epochs=args.epochs, batch_size=args.batch_size, learning_rate=args.learning_rate,
                      seed=args.seed, max_shift=args.max_shift, max_train_images=args.max_train_images,
                      artifacts=args.artifacts)
    run_training(cfg)
    return 0


cli = console_script(main)

if __name__ == "__main__":
    cli()
