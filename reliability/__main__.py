"""Command line of the reliability suite (make deploy first; every command loads the deployed servers).

  python -m reliability matrix [--target T ...]     every bad input to every target; the next good one must pass
  python -m reliability chaos  [--fault F ...] [--rate 50] [--duration 25] [--short]
                                                    faults under load: kill-worker, rollout, broken-version,
                                                    restart, overload (chaos.py says what each does)
  python -m reliability soak   [--target T ...] [--minutes 5] [--rate R]
                                                    steady load at 70 % of the newest sweep's SLO maximum;
                                                    the server's memory growth

Each command prints its table and replaces its own section of artifacts/results/reliability.json, which the
report shows side by side for both stacks.
"""

from __future__ import annotations

import sys

from common.errors import OneLineArgumentParser, UsageError, run_cli
from common.paths import default_artifacts_root, default_model
from common.targets import NAMES

FAULT_NAMES = ("kill-worker", "rollout", "broken-version", "restart", "overload")  # reliability.chaos.FAULTS


def _parser() -> OneLineArgumentParser:
    parser = OneLineArgumentParser(prog="python -m reliability", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True, parser_class=OneLineArgumentParser)
    matrix = commands.add_parser("matrix", help="every bad input to every deployed target")
    matrix.add_argument("--target", action="append", choices=NAMES, help="repeatable; default: all four")
    chaos = commands.add_parser("chaos", help="faults under load, one row per fault and stack")
    chaos.add_argument("--fault", action="append", choices=sorted(FAULT_NAMES),
                       help="repeatable; default: all of them (--short: kill-worker, rollout, broken-version)")
    chaos.add_argument("--rate", type=float, default=50.0, help="the steady load during a fault (req/s, Poisson)")
    chaos.add_argument("--duration", type=float, default=25.0,
                       help="seconds of load per fault (the fault comes after 5 s; a new TorchServe worker took up "
                            "to 10.3 s on the development machine; restart takes at least 45)")
    chaos.add_argument("--short", action="store_true", help="only the faults make test runs")
    soak = commands.add_parser("soak", help="minutes of steady load; the servers' memory over time")
    soak.add_argument("--target", action="append", choices=NAMES,
                      help="repeatable; default: tf-rest and torch-rest (one per stack, the same bytes)")
    soak.add_argument("--minutes", type=float, default=5.0, help="per target")
    soak.add_argument("--rate", type=float, default=None,
                      help="req/s to hold; default 70 %% of the newest sweep's SLO-bounded maximum")
    return parser


def _deployed_targets(names: list[str] | None):
    from loadtests.targets import resolve_targets
    from serving.config import DeployConfig

    cfg = DeployConfig(model=default_model(), artifacts=default_artifacts_root())
    return cfg, resolve_targets(tuple(dict.fromkeys(names or NAMES)), cfg, "127.0.0.1")


def command_matrix(args) -> int:
    from reliability.matrix import matrix_table, run_matrix
    from reliability.results import results_file, write_section

    cfg, targets = _deployed_targets(args.target)
    section = run_matrix(targets)
    print(matrix_table(section))
    path = write_section(results_file(cfg.paths.results_dir), "matrix", section)
    print(f"results: {path}")
    return 0 if section["passed"] else 1


def _stage(target_names: tuple[str, ...], rate: float, duration_s: float, kind: str):
    from loadtests.config import new_run_id
    from loadtests.payloads import prepare
    from reliability.chaos import Stage

    cfg, targets = _deployed_targets(list(target_names))
    run_dir = cfg.paths.results_dir / new_run_id(kind)
    payload_file = prepare(cfg.paths, cfg.model, 1, run_dir / "payloads.npz")
    return Stage(cfg, {t.name: t for t in targets}, payload_file, run_dir, rate, duration_s)


def command_chaos(args) -> int:
    from reliability.chaos import FAULTS, SHORT_FAULTS, run_chaos
    from reliability.results import results_file, write_section

    faults = tuple(dict.fromkeys(args.fault or (SHORT_FAULTS if args.short else FAULTS)))
    duration = args.duration
    if args.rate <= 0 or duration < 10:
        raise UsageError("--rate must be positive and --duration at least 10 s (the fault comes after 5 s)")
    names = tuple(dict.fromkeys(name for fault in faults for name, _ in FAULTS[fault]))
    stage = _stage(names, args.rate, duration, "chaos")
    print(f"chaos {stage.run_dir.name}: {', '.join(faults)}; {args.rate:g} req/s Poisson, {duration:g} s per fault",
          flush=True)
    rows = run_chaos(stage, faults, lambda line: print(line, flush=True))
    section = {"run_id": stage.run_dir.name, "rate_rps": args.rate, "duration_s": duration,
               "servers": {t.side: t.server for t in stage.targets.values()}, "environment": _environment(stage),
               "faults": rows}
    path = write_section(results_file(stage.cfg.paths.results_dir), "chaos", section)
    print(f"results: {path}")
    return 0


def command_soak(args) -> int:
    from reliability.results import results_file, write_section
    from reliability.soak import soak

    if args.minutes <= 0 or (args.rate is not None and args.rate <= 0):
        raise UsageError("--minutes and --rate must be positive")
    names = tuple(dict.fromkeys(args.target or ("tf-rest", "torch-rest")))
    stage = _stage(names, args.rate or 0.0, args.minutes * 60.0, "soak")
    rows = []
    for number, name in enumerate(names, 1):
        print(f"[soak {number} of {len(names)}] {name} for {args.minutes:g} min ...", flush=True)
        row = soak(stage, name, args.minutes, args.rate)
        growth = row["rss"] or {}
        print(f"  {name}: {row['offered_rps']:g} req/s ({row['rate_from']}), {row['failed']} of {row['requests']} "
              f"failed; RSS {growth.get('start_mib')} -> {growth.get('end_mib')} MiB, "
              f"{growth.get('slope_mib_per_min')} MiB/min", flush=True)
        rows.append(row)
    section = {"run_id": stage.run_dir.name, "servers": {t.side: t.server for t in stage.targets.values()},
               "environment": _environment(stage), "targets": rows}
    path = write_section(results_file(stage.cfg.paths.results_dir), "soak", section)
    print(f"results: {path}")
    return 0


def _environment(stage) -> dict:
    """The machine, package versions, CPU pinning and what sent the load (as a load test records them)."""
    from loadtests import pinning
    from loadtests.config import RunConfig
    from loadtests.runner import environment_record

    plan = pinning.plan_cpus([target.server.get("cpus") for target in stage.targets.values()])
    return environment_record(plan, RunConfig())


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    return {"matrix": command_matrix, "chaos": command_chaos, "soak": command_soak}[args.command](args)


if __name__ == "__main__":
    run_cli(main, sys.argv[1:])
