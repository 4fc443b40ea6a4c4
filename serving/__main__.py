"""Command line of the serving stage.

  python -m serving deploy   [--target tf|torch|all]   start servers in the background, smoke them
  python -m serving undeploy                            stop exactly what deploy started
  python -m serving smoke    [--target tf|torch|all]   predict test images on every transport
  python -m serving status                              what runs, from artifacts/run/*.json
  python -m serving predict  --target tf-grpc --image digit.png   one prediction, for humans

Knobs are environment variables (MODEL, TF_REST_PORT, TS_WORKERS, ...): see README.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from common.errors import OneLineArgumentParser, UsageError, console_script
from common.targets import NAMES, SIDES, names_of


def _parser() -> OneLineArgumentParser:
    parser = OneLineArgumentParser(prog="python -m serving", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True, parser_class=OneLineArgumentParser)
    for name in ("deploy", "smoke"):
        sub = commands.add_parser(name)
        sub.add_argument("--target", choices=(*SIDES, "all"), default="all")
    commands.add_parser("undeploy")
    commands.add_parser("status")
    predict = commands.add_parser("predict")
    predict.add_argument("--target", required=True, choices=NAMES)
    predict.add_argument("--image", required=True, type=Path, help="an image file (PNG, JPEG, ...)")
    predict.add_argument("--port", type=int, help="default: the deployed port of the target")
    predict.add_argument("--timeout", type=float, default=30.0)
    return parser


def _deploy(cfg, which: str) -> int:
    from serving.deploy import deploy_tf, deploy_torch, undeploy_one
    from serving.smoke import smoke

    started = []
    try:
        if which in ("tf", "all"):
            deploy_tf(cfg)
            started.append("tf")
        if which in ("torch", "all"):
            deploy_torch(cfg)
            started.append("torch")
        smoke(cfg, names_of(which))
    except Exception:
        for server in started:
            undeploy_one(cfg, server)
        raise
    return 0


def _predict(cfg, args) -> int:
    import numpy as np

    from model.checkpoint import load_checkpoint
    from serving.clients import make_client
    from serving.smoke import token_for
    from training.data import load_image

    if not args.image.is_file():
        raise UsageError(f"image {args.image} does not exist")
    meta = load_checkpoint(cfg.paths.checkpoint_dir(cfg.model)).meta
    height, width, channels = meta["input_shape"]
    image = load_image(args.image, (height, width), channels)[None]
    with make_client(args.target, host="127.0.0.1", port=args.port or cfg.port_of(args.target), model=cfg.model,
                     token=token_for(cfg, args.target), timeout=args.timeout) as client:
        probabilities = np.asarray(client.predict(image))[0]
    best = int(probabilities.argmax())
    print(json.dumps({"target": args.target, "label": meta["labels"][best], "probability": float(probabilities[best]),
                      "probabilities": [round(float(p), 6) for p in probabilities]}))
    return 0


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    from serving.clients import ClientError
    from serving.config import DeployConfig
    from serving.torch.server import ServerError

    cfg = DeployConfig()
    try:
        if args.command == "deploy":
            return _deploy(cfg, args.target)
        if args.command == "smoke":
            from serving.smoke import smoke

            smoke(cfg, names_of(args.target))
            return 0
        if args.command == "undeploy":
            from serving.deploy import undeploy

            undeploy(cfg)
            return 0
        if args.command == "status":
            from serving.record import read_record

            records = {server: read_record(cfg.run_dir, server) for server in ("tf", "torch")}
            print(json.dumps({server: r and r.as_json() for server, r in records.items()}, indent=2))
            return 0
        return _predict(cfg, args)
    except (ServerError, ClientError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1


cli = console_script(main)

if __name__ == "__main__":
    cli()
