"""Command line of the load tests.

  python -m loadtests run    [--target T ...] [--users 8 | --rate R [--arrivals poisson|fixed]] [--repeats 3]
                             [--duration 20] [--warmup 5] [--batch-size 1]
                             [--url URL [--host-header H] [--token-file F]]
  python -m loadtests tune   [--target T ...] [--repeats 3] [--duration 12 --warmup 3 per run]
  python -m loadtests sweep  [--slo-ms 100] [--quick] [--repeats 3] [--min-requests 1000]
                             [--duration 12 --warmup 3 per step]
  python -m loadtests prepare --out FILE [--batch-size 1]              payload file only (for locust by hand)

`run` loads each deployed target in turn (make deploy first), --repeats times
with the order rotated, and writes artifacts/results/<run-id>/: locust's CSVs,
summary.json, and prints the targets side by side with each figure's median
and min-max over the repeats. `--url` loads an endpoint deploy did not start
(a compose service, a KServe InferenceService behind its Host header). Every
check of the arguments and of the servers happens before any load is sent.
`tune` measures a small grid of server knobs, closed loop, and leaves the
servers deployed with the knobs it chose; `sweep` measures the servers with
the knobs they have.
"""

from __future__ import annotations

from pathlib import Path

from common.errors import OneLineArgumentParser, UsageError, console_script
from common.paths import default_model
from common.targets import NAMES
from loadtests.config import RunConfig, SweepConfig, new_run_id


def _add_run_options(parser: OneLineArgumentParser) -> None:
    parser.add_argument("--target", action="append", choices=NAMES, help="repeatable; default: all four")
    parser.add_argument("--users", type=int, default=8, help="closed loop: concurrent users, no think time")
    parser.add_argument("--rate", type=float, default=None, help="open loop: arrivals per second (all users)")
    parser.add_argument("--arrivals", choices=("poisson", "fixed"), default="poisson",
                        help="open loop: Poisson arrivals (default, as MLPerf's Server scenario) or fixed gaps")
    parser.add_argument("--seed", type=int, default=0, help="open loop: seed of the Poisson arrivals")
    parser.add_argument("--repeats", type=int, default=3,
                        help="independent repeats per target (fresh locust each, order rotated); claims need 3")
    parser.add_argument("--duration", type=float, default=20.0, help="seconds per target and repeat, warm-up included")
    parser.add_argument("--warmup", type=float, default=5.0, help="seconds not counted at the start")
    parser.add_argument("--batch-size", type=int, default=1)
    parser.add_argument("--model", default=None, help="default: MODEL or PROFILE from the environment, else tiny")
    parser.add_argument("--workers", type=int, default=0, help="locust worker processes beside a master")
    parser.add_argument("--check-every", type=int, default=10, help="decode and check every Nth answer per user")
    parser.add_argument("--no-pin", action="store_true",
                        help="do not pin locust to the CPUs the servers leave free (the servers keep the CPU set "
                             "they were deployed with)")
    parser.add_argument("--no-ceiling", action="store_true", help="skip the in-process ceiling measurement")
    parser.add_argument("--run-id", default="")


def _add_endpoint_options(parser: OneLineArgumentParser) -> None:
    parser.add_argument("--url", default=None,
                        help="load this endpoint instead of a deployed server (one --target: its wire format)")
    parser.add_argument("--host-header", default=None, help="with --url: the Host header (KServe's service host)")
    parser.add_argument("--token-file", type=Path, default=None,
                        help="with --url: bearer token file (the token, or TorchServe's key_file.json)")


def _parser() -> OneLineArgumentParser:
    parser = OneLineArgumentParser(prog="python -m loadtests", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True, parser_class=OneLineArgumentParser)
    run = commands.add_parser("run", help="one run against each target")
    _add_run_options(run)
    _add_endpoint_options(run)
    tune = commands.add_parser("tune", help="choose each server's knobs from a small grid; leave them deployed")
    _add_run_options(tune)
    tune.set_defaults(duration=12.0, warmup=3.0)  # per run: the grid is many short closed-loop runs
    sweep = commands.add_parser("sweep", help="saturation, SLO maximum by search, common load, batch sizes")
    _add_run_options(sweep)
    sweep.set_defaults(duration=12.0, warmup=3.0)  # per step: a sweep is many short runs
    sweep.add_argument("--slo-ms", type=float, default=100.0, help="p99 bound (milliseconds)")
    sweep.add_argument("--min-requests", type=int, default=1000,
                       help="requests each SLO probe's p99 rests on (probes last long enough for them)")
    sweep.add_argument("--quick", action="store_true", help="shorter steps and fewer of them (make demo)")
    prepare = commands.add_parser("prepare", help="write a payload file")
    prepare.add_argument("--out", type=Path, required=True)
    prepare.add_argument("--batch-size", type=int, default=1)
    prepare.add_argument("--model", default=None)
    prepare.add_argument("--count", type=int, default=32)
    return parser


def run_config(args) -> RunConfig:
    options = {"users": args.users, "rate": args.rate, "duration_s": args.duration, "warmup_s": args.warmup,
               "batch_size": args.batch_size, "workers": args.workers, "check_every": args.check_every,
               "pin": not args.no_pin, "ceiling": not args.no_ceiling, "run_id": args.run_id,
               "repeats": args.repeats, "arrivals": args.arrivals, "seed": args.seed}
    if args.target:
        options["targets"] = tuple(dict.fromkeys(args.target))
    if args.model:
        options["model"] = args.model
    return RunConfig(**options)


def command_run(args) -> int:
    from loadtests import runner, summary
    from loadtests.payloads import prepare
    from loadtests.targets import external_target, resolve_targets
    from serving.config import DeployConfig

    cfg = run_config(args)
    deploy_cfg = DeployConfig(model=cfg.model, artifacts=cfg.artifacts)
    if args.url:
        targets = [external_target(args.url, args.target, args.host_header, args.token_file)]
        cfg.ceiling = False  # the in-process ceiling describes a server on this machine's CPU set, not a remote one
    else:
        if args.host_header or args.token_file:
            raise UsageError("--host-header and --token-file go with --url (deployed servers bring their own)")
        targets = resolve_targets(cfg.targets, deploy_cfg, cfg.host)  # unreachable: exit 2 before any load
    offered = f"{cfg.rate:g} req/s offered ({cfg.arrivals} arrivals)" if cfg.rate else f"{cfg.users} users"
    print(f"loadtest {cfg.run_id}: {cfg.mode} loop, {offered}, batch {cfg.batch_size}, {cfg.repeats} repeats of "
          f"{cfg.warmup_s:g} s warm-up + {cfg.window_s:g} s window per target", flush=True)
    payload_file = prepare(deploy_cfg.paths, cfg.model, cfg.batch_size, cfg.run_dir / "payloads.npz")
    document = runner.run(cfg, targets, payload_file)
    print(summary.table(document))
    print(f"summary: {cfg.run_dir / 'summary.json'}{'' if document['valid'] else '  (INVALID: see reasons above)'}")
    return 0


def command_sweep(args) -> int:
    from loadtests import sweep

    if not args.run_id:
        args.run_id = new_run_id("sweep")
    cfg = run_config(args)
    sweep_cfg = SweepConfig(run=cfg, slo_ms=args.slo_ms, min_requests=args.min_requests)
    if args.quick:
        sweep_cfg = sweep.quick(sweep_cfg)
    sweep.run_sweep(sweep_cfg)
    return 0


def command_tune(args) -> int:
    from loadtests import tune

    if not args.run_id:
        args.run_id = new_run_id("tune")
    tune.run_tune(run_config(args))
    return 0


def command_prepare(args) -> int:
    from loadtests.payloads import prepare
    from serving.config import DeployConfig

    if args.batch_size < 1 or args.count < 1:
        raise UsageError("batch size and count must be at least 1")
    model = args.model or default_model()
    out = prepare(DeployConfig(model=model).paths, model, args.batch_size, args.out, args.count)
    print(f"payloads: {out} ({args.count} batches of {args.batch_size})")
    return 0


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    commands = {"run": command_run, "tune": command_tune, "sweep": command_sweep, "prepare": command_prepare}
    return commands[args.command](args)


cli = console_script(main)

if __name__ == "__main__":
    cli()
