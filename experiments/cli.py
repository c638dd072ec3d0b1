"""The ``moesim`` command line.

::

    moesim run EXPERIMENT.yaml --out DIR
    moesim validate EXPERIMENT.yaml

Bad input ends with one line on stderr naming the field and the fix, and exit status 2.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from experiments.config import ConfigError, load_experiment
from experiments.runner import run_point
from experiments.store import write_results


class UsageError(ValueError):
    """A bad command line."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # one line, exit 2, as for every bad input
        raise UsageError(f"{self.prog}: {message}")


def _parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="moesim", description="Fluid simulation of MoE and collective traffic on GPU fabrics."
    )
    commands = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    run = commands.add_parser("run", help="run an experiment and write DIR/results.parquet")
    run.add_argument("experiment", type=Path, help="experiment YAML file")
    run.add_argument("--out", type=Path, required=True, help="results directory")
    validate = commands.add_parser("validate", help="check an experiment file without running it")
    validate.add_argument("experiment", type=Path, help="experiment YAML file")
    return parser


def _run(args: argparse.Namespace) -> int:
    plan = load_experiment(args.experiment)
    results = []
    for index, (swept, point) in enumerate(plan.points):
        result = run_point(index, swept, point)
        results.append(result)
        row = result.row
        print(
            f"point {index + 1}/{len(plan.points)}: completion {row['completion_time_s'] * 1e3:.4f} ms, "
            f"max link utilization {row['max_link_utilization']:.3f}, "
            f"max link flows {row['max_link_flows']}, "
            f"{row['flows']} flows, {row['wall_time_s']:.2f} s"
        )
    write_results(args.out, plan.raw, results)
    print(f"wrote {args.out / 'results.parquet'}")
    return 0


def _validate(args: argparse.Namespace) -> int:
    plan = load_experiment(args.experiment)
    print(f"{args.experiment}: valid, {len(plan.points)} point{'s' if len(plan.points) != 1 else ''}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``moesim`` console script; returns the exit status."""
    try:
        args = _parser().parse_args(argv)
        return {"run": _run, "validate": _validate}[args.command](args)
    except (ConfigError, UsageError) as err:
        print(f"moesim: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
