"""The ``moesim`` command line.

::

    moesim run EXPERIMENT.yaml --out DIR [--workers N] [--executor local|dask]
                               [--scheduler ADDRESS] [--resume | --force]
    moesim validate EXPERIMENT.yaml
    moesim report DIR [DIR ...] [--out PAGE.html] [--self-contained]
    moesim trace synth --out T.npz [options]
    moesim trace collect --model PATH --text FILE --out T.npz [options]
    moesim replay TRACE.json --topology EXPERIMENT.yaml [options]
    moesim place --trace T.npz --topology EXPERIMENT.yaml --method M --out placement.json [options]
    moesim calibrate LOGS... --topology EXPERIMENT.yaml --out calibrated.yaml [--holdout ...]
    moesim microbench --out DIR [options]   (on a GPU machine; torchrun for NCCL sweeps)
    moesim [--help | --version]             (no command: the help, exit status 0)

Every error is one line on stderr, ``moesim: error: <what> (<fix>)``. Exit statuses
(:data:`EXIT_STATUSES`): 0 done; 1 a point failed (recorded in its row, the others saved); 2 bad
input or an unusable output path, found before any work, nothing written; 3 the run failed part
way (saving a point, a lost worker or scheduler, unreadable saved points), finished points kept
for ``--resume``; 130 interrupted.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from experiments.arguments import Parser, UsageError, fail, help_status, positive
from experiments.config import ConfigError, Plan, load_experiment
from experiments.execute import ExecutorError, PointDone, RunError, run_experiment
from experiments.output_dir import check_output_dir, check_output_file
from experiments.place_command import main as place_main
from experiments.replay_command import main as replay_main
from experiments.report import ReportError, load_results, write_combined_report, write_report
from experiments.runner import preflight
from experiments.store import moesim_version, note_report
from experiments.trace_commands import collect_main, synth_main

EXIT_STATUSES = {
    0: "done",
    1: "a point failed (recorded in its row of results.parquet; the other points are saved)",
    2: "bad input or an unusable output path, found before any work; nothing written",
    3: "the run failed part way (saving, a lost worker or scheduler); finished points kept (--resume)",
    130: "interrupted; finished points kept, rerun with --resume",
}

PRINT_EVERY_POINT = 50
"""Up to this many points, ``moesim run`` prints a line per point; above it only failed points."""


def _parser() -> argparse.ArgumentParser:
    parser = Parser(
        prog="moesim",
        description="Fluid simulation of MoE and collective traffic on GPU fabrics.",
        epilog="exit status: " + "; ".join(f"{code} {text}" for code, text in EXIT_STATUSES.items()),
    )
    parser.add_argument("--version", action="version", version=f"moesim {moesim_version()}")
    commands = parser.add_subparsers(dest="command", required=True, parser_class=Parser, metavar="COMMAND")
    run = commands.add_parser(
        "run",
        help="run an experiment's points and write DIR/results.parquet",
        description="Run an experiment's points into DIR (results.parquet, detail tables, report.html).",
    )
    run.add_argument("experiment", type=Path, help="experiment YAML file")
    run.add_argument("--out", type=Path, required=True, metavar="DIR", help="results directory")
    run.add_argument("--workers", type=positive, default=None, help="parallel points (default: core count)")
    run.add_argument("--executor", choices=("local", "dask"), default="local", help="where points run")
    run.add_argument("--scheduler", default=None, help="Dask scheduler address (default: a LocalCluster)")
    again = run.add_mutually_exclusive_group()
    again.add_argument(
        "--resume",
        action="store_true",
        help="continue the same experiment in DIR: run only the points not saved, or failed",
    )
    again.add_argument(
        "--force", action="store_true", help="delete the results DIR holds (of any experiment) first"
    )
    validate = commands.add_parser(
        "validate",
        help="check an experiment file without running it",
        description="Check an experiment file.",
    )
    validate.add_argument("experiment", type=Path, help="experiment YAML file")
    report = commands.add_parser(
        "report",
        help="write DIR/report.html from a results directory (or one page of several)",
        description="Write DIR/report.html (and plotly.min.js beside it) from the results of moesim "
        "run; with several directories and --out PAGE.html, one page comparing them.",
    )
    report.add_argument("dirs", type=Path, nargs="+", metavar="DIR", help="results directories")
    report.add_argument(
        "--out", type=Path, default=None, metavar="PAGE.html", help="the page of several runs (needed for 2+)"
    )
    report.add_argument(
        "--self-contained",
        action="store_true",
        help="inline plotly.js (one 1.7 MB file to send) instead of loading plotly.min.js beside the page",
    )
    for name, text in (
        ("place", "compute an expert placement from a trace: 'moesim place --help'"),
        ("calibrate", "fit the fabric to nccl-tests logs: 'moesim calibrate --help'"),
        ("microbench", "measure GEMMs, copies and NCCL on a GPU machine: 'moesim microbench --help'"),
        ("replay", "replay a PyTorch profiler trace on a fabric: 'moesim replay --help'"),
    ):
        commands.add_parser(name, add_help=False, help=text)  # they parse their own arguments
    trace = commands.add_parser(
        "trace",
        help="routing traces: 'moesim trace synth --help', 'moesim trace collect --help'",
        description="Write routing traces: 'moesim trace synth --help', 'moesim trace collect --help'.",
    )
    trace.add_argument(
        "action",
        choices=("synth", "collect"),
        help="synth: generate a trace; collect: record a model's router",
    )
    trace.add_argument("options", nargs=argparse.REMAINDER, help="options of the action")
    return parser


def _swept(swept: dict) -> str:
    return f" [{', '.join(f'{key}={value}' for key, value in swept.items())}]" if swept else ""


def _point_line(done: PointDone) -> str | None:
    """The line printed above the bar for a finished point (None: too many points to list)."""
    row = done.result.row
    if not done.result.failed and done.total > PRINT_EVERY_POINT:
        return None
    head = f"[{done.done}/{done.total}] point {row['point']}{_swept(done.swept)}"
    if done.result.failed:
        return f"{head}: FAILED: {row['error']}"
    return (
        f"{head}: completion {row['completion_time_s'] * 1e3:.4f} ms, "
        f"max link utilization {row['max_link_utilization']:.3f}, "
        f"max link flows {row['max_link_flows']}, {row['flows']} flows, {row['wall_time_s']:.2f} s"
    )


def duration(seconds: float) -> str:
    """``12.3 s``, ``2 min 3 s`` or ``1 h 2 min``."""
    if seconds < 59.95:  # what rounds to 60.0 s reads as 1 min 0 s
        return f"{seconds:.1f} s"
    whole = round(seconds)
    if whole < 3600:
        return f"{whole // 60} min {whole % 60} s"
    return f"{whole // 3600} h {whole % 3600 // 60} min"


def _run(args: argparse.Namespace) -> int:
    if args.scheduler and args.executor != "dask":
        raise UsageError(f"--scheduler {args.scheduler}: needs --executor dask (add --executor dask)")
    check_output_dir(args.out)
    estimates: list = []
    plan = _checked(args.experiment, estimates)
    started = time.perf_counter()
    try:
        outcome = run_experiment(
            plan,
            args.out,
            workers=args.workers,
            executor=args.executor,
            scheduler=args.scheduler,
            resume=args.resume,
            force=args.force,
            on_point=_point_line,
            estimates=estimates,
            report=True,
        )
    except KeyboardInterrupt:
        print(
            f"moesim: interrupted; finished points are saved in {args.out} (rerun with --resume)",
            file=sys.stderr,
        )
        return 130
    n = len(plan.points)
    print(
        f"{n} point{'s' if n != 1 else ''}: {outcome.ran} run, {outcome.skipped} already done, "
        f"{outcome.failed} failed in {duration(time.perf_counter() - started)} "
        f"(combine {duration(outcome.combine_s)}, report {duration(outcome.report_s)}); "
        f"report {outcome.report}"
    )
    return 1 if outcome.failed else 0


def _report(args: argparse.Namespace) -> int:
    for folder in args.dirs:
        if folder.exists():
            check_output_dir(folder, flag="results directory")
    if args.out is None:
        if len(args.dirs) > 1:
            raise UsageError("--out PAGE.html: several results directories go on one page (give its path)")
        page = write_report(args.dirs[0], self_contained=args.self_contained)
        note_report(args.dirs[0], page)
        print(f"wrote {page}")
        return 0
    if args.out.suffix.lower() not in (".html", ".htm"):
        raise UsageError(f"--out {args.out}: give an .html file for the page")
    check_output_file(args.out, flag="--out")
    for folder in args.dirs:
        load_results(folder)  # every directory readable before anything is written
    print(f"wrote {write_combined_report(args.dirs, args.out, self_contained=args.self_contained)}")
    return 0


def _trace(args: argparse.Namespace) -> int:
    if args.action == "collect":
        return collect_main(args.options)
    return synth_main(args.options)


def _checked(path: Path, estimates: list | None = None) -> Plan:
    """Load an experiment and check every point (traces, placements, and that its estimated memory
    fits, see :mod:`experiments.estimate`) before anything runs; ``estimates`` gets each point's."""
    from experiments.estimate import available_memory, check_fits, estimate_point

    plan = load_experiment(path)
    available = available_memory()
    for index, (swept, point) in enumerate(plan.points):
        try:
            preflight(point)
            estimate = estimate_point(point)
            check_fits(index, estimate, available)
        except ConfigError as err:
            where = f" (sweep point {index}: {swept})" if swept else ""
            raise ConfigError(f"{err}{where}") from None
        if estimates is not None:
            estimates.append(estimate)
    return plan


def _validate(args: argparse.Namespace) -> int:
    from experiments.estimate import available_memory
    from simulator.footprint import format_bytes

    estimates: list = []
    plan = _checked(args.experiment, estimates)
    largest = max(estimates, key=lambda e: e.peak_bytes)
    print(
        f"{args.experiment}: valid, {len(plan.points)} point{'s' if len(plan.points) != 1 else ''}; "
        f"largest point {largest.flows:,} flows, peak ~{format_bytes(largest.peak_bytes)} "
        f"(MemAvailable {format_bytes(available_memory())})"
    )
    return 0


def _calibrate(argv: Sequence[str]) -> int:
    from experiments.calibrate_command import main as calibrate_main  # imports the fit on demand

    return calibrate_main(argv)


def _microbench(argv: Sequence[str]) -> int:
    from experiments.microbench_command import main as microbench_main  # torch only on demand

    return microbench_main(argv)


# commands that parse all of their own arguments (options first, which REMAINDER would not take)
OWN_PARSERS: dict[str, Callable[[Sequence[str]], int]] = {
    "place": place_main,
    "replay": replay_main,
    "calibrate": _calibrate,
    "microbench": _microbench,
}


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``moesim`` console script; returns the exit status (see ``EXIT_STATUSES``)."""
    argv = sys.argv[1:] if argv is None else list(argv)
    if not argv:  # no command: say what there is
        _parser().print_help()
        return 0
    try:
        if argv[0] in OWN_PARSERS:
            return OWN_PARSERS[argv[0]](argv[1:])
        if argv[0] == "trace" and argv[1:2] == ["synth"]:
            return synth_main(argv[2:])
        if argv[0] == "trace" and argv[1:2] == ["collect"]:
            return collect_main(argv[2:])
        if argv == ["trace"]:  # as moesim alone: what there is
            argv = ["trace", "--help"]
        args = _parser().parse_args(argv)
        commands = {
            "run": _run,
            "validate": _validate,
            "report": _report,
            "trace": _trace,
        }
        return commands[args.command](args)
    except SystemExit as done:  # --help, --version
        return help_status(done)
    except RunError as err:
        return fail(f"{err} (rerun with --resume to run the rest)" if err.resume else str(err), 3)
    except (ConfigError, UsageError, ExecutorError, ReportError) as err:
        return fail(err)


if __name__ == "__main__":
    sys.exit(main())
