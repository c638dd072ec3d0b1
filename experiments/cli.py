"""The ``moesim`` command line.

::

    moesim run EXPERIMENT.yaml --out DIR [--workers N] [--executor local|dask]
                               [--scheduler ADDRESS] [--resume]
    moesim validate EXPERIMENT.yaml
    moesim report DIR
    moesim trace synth --out T.npz [options]
    moesim trace collect --model PATH --text FILE --out T.npz [options]
    moesim replay TRACE.json --topology EXPERIMENT.yaml [options]
    moesim place --trace T.npz --topology EXPERIMENT.yaml --method M --out placement.json [options]
    moesim calibrate LOGS... --topology EXPERIMENT.yaml --out calibrated.yaml [--holdout ...]
    moesim microbench --out DIR [options]   (on a GPU machine; torchrun for NCCL sweeps)

Bad input ends with one line on stderr naming the field and the fix, and exit status 2. A run
whose points all succeed exits 0; one where some point failed exits 1 (the others are saved).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from experiments.arguments import Parser, UsageError, positive
from experiments.config import ConfigError, Plan, load_experiment
from experiments.execute import ExecutorError, run_experiment
from experiments.place_command import main as place_main
from experiments.replay_command import main as replay_main
from experiments.report import ReportError, write_report
from experiments.runner import PointResult, preflight
from experiments.trace_commands import collect_main, synth_main


def _parser() -> argparse.ArgumentParser:
    parser = Parser(
        prog="moesim", description="Fluid simulation of MoE and collective traffic on GPU fabrics."
    )
    commands = parser.add_subparsers(dest="command", required=True, parser_class=Parser)
    run = commands.add_parser("run", help="run an experiment's points and write DIR/results.parquet")
    run.add_argument("experiment", type=Path, help="experiment YAML file")
    run.add_argument("--out", type=Path, required=True, help="results directory")
    run.add_argument("--workers", type=positive, default=None, help="parallel points (default: core count)")
    run.add_argument("--executor", choices=("local", "dask"), default="local", help="where points run")
    run.add_argument("--scheduler", default=None, help="Dask scheduler address (default: a LocalCluster)")
    run.add_argument("--resume", action="store_true", help="skip points already saved in DIR")
    validate = commands.add_parser("validate", help="check an experiment file without running it")
    validate.add_argument("experiment", type=Path, help="experiment YAML file")
    report = commands.add_parser("report", help="write DIR/report.html from a results directory")
    report.add_argument("out", type=Path, help="results directory")
    for name, text in (
        ("place", "compute an expert placement from a trace: 'moesim place --help'"),
        ("calibrate", "fit the fabric to nccl-tests logs: 'moesim calibrate --help'"),
        ("microbench", "measure GEMMs, copies and NCCL on a GPU machine: 'moesim microbench --help'"),
    ):
        commands.add_parser(name, add_help=False, help=text)
    replay = commands.add_parser(
        "replay", add_help=False, help="replay a PyTorch profiler trace on a fabric: 'moesim replay --help'"
    )
    replay.add_argument("options", nargs=argparse.REMAINDER, help="TRACE.json --topology EXPERIMENT.yaml ...")
    trace = commands.add_parser("trace", help="routing traces: 'moesim trace synth --help'")
    trace.add_argument(
        "action",
        choices=("synth", "collect"),
        help="synth: generate a trace; collect: record a model's router",
    )
    trace.add_argument("options", nargs=argparse.REMAINDER, help="options of the action")
    return parser


def _print_point(result: PointResult) -> None:
    row = result.row
    if result.failed:
        print(f"point {row['point']}: FAILED: {row['error']}")
        return
    print(
        f"point {row['point']}: completion {row['completion_time_s'] * 1e3:.4f} ms, "
        f"max link utilization {row['max_link_utilization']:.3f}, "
        f"max link flows {row['max_link_flows']}, {row['flows']} flows, {row['wall_time_s']:.2f} s"
    )


def _run(args: argparse.Namespace) -> int:
    if args.scheduler and args.executor != "dask":
        raise UsageError("moesim run: --scheduler needs --executor dask")
    plan = _checked(args.experiment)
    try:
        outcome = run_experiment(
            plan,
            args.out,
            workers=args.workers,
            executor=args.executor,
            scheduler=args.scheduler,
            resume=args.resume,
            on_point=_print_point if len(plan.points) <= 50 else None,
        )
    except KeyboardInterrupt:
        print(
            f"moesim: interrupted; finished points are saved in {args.out} (rerun with --resume)",
            file=sys.stderr,
        )
        return 130
    report = write_report(args.out)
    print(
        f"{len(plan.points)} points: {outcome.ran} run, {outcome.skipped} already done, "
        f"{outcome.failed} failed; "
        f"wrote {args.out / 'results.parquet'} and {report}"
    )
    return 1 if outcome.failed else 0


def _report(args: argparse.Namespace) -> int:
    print(f"wrote {write_report(args.out)}")
    return 0


def _trace(args: argparse.Namespace) -> int:
    if args.action == "collect":
        return collect_main(args.options)
    return synth_main(args.options)


def _checked(path: Path) -> Plan:
    """Load an experiment and check every point (traces, placements) before anything runs."""
    plan = load_experiment(path)
    for index, (swept, point) in enumerate(plan.points):
        try:
            preflight(point)
        except ConfigError as err:
            where = f" (sweep point {index}: {swept})" if swept else ""
            raise ConfigError(f"{err}{where}") from None
    return plan


def _validate(args: argparse.Namespace) -> int:
    plan = _checked(args.experiment)
    print(f"{args.experiment}: valid, {len(plan.points)} point{'s' if len(plan.points) != 1 else ''}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``moesim`` console script; returns the exit status."""
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == ["place"]:  # all of its arguments are options, which REMAINDER would not take
        return place_main(argv[1:])
    if argv[:1] == ["replay"]:  # "replay --help" too: REMAINDER cannot start with an option
        return replay_main(argv[1:])
    if argv[:1] == ["calibrate"]:
        from experiments.calibrate_command import main as calibrate_main

        return calibrate_main(argv[1:])
    if argv[:1] == ["microbench"]:
        from experiments.microbench_command import main as microbench_main

        return microbench_main(argv[1:])
    try:
        args = _parser().parse_args(argv)
        commands = {
            "run": _run,
            "validate": _validate,
            "report": _report,
            "trace": _trace,
        }
        return commands[args.command](args)
    except (ConfigError, UsageError, ExecutorError, ReportError) as err:
        print(f"moesim: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
