"""``moesim place``: compute an expert placement from a routing trace and write it as JSON.

::

    moesim place --trace T.npz --topology EXPERIMENT.yaml --method ilp [--time-limit 60s]
                 [--lam 1] [--solver auto|cbc|highs] [--fit 0.5] [--seed N] --out placement.json

The experiment file's ``topology:`` gives the hosts and the per-byte costs the ILP weighs. The
written file is what ``placement: FILE`` reads: the placement, the ILP's report (objective,
bound, gap) and how it scores on the tokens it was fitted on; the same scores on the held-out
tokens are printed when ``--fit`` splits the trace.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence
from pathlib import Path

from experiments.arguments import Parser, UsageError, fail, help_status, non_negative, whole
from experiments.config import ConfigError, IlpConfig, load_experiment, placement_method
from experiments.output_dir import check_output_file
from experiments.placing import fit_and_run_traces, make_placement, placement_document
from experiments.units import UnitError, parse_time
from pages.files import write_atomic
from placement.layout import Placement, PlacementError
from placement.stats import evaluate, placement_stats
from topologies.leaf_spine import LeafSpine
from workloads.routing_trace import RoutingTrace, TraceError, load_trace


def _parser() -> argparse.ArgumentParser:
    parser = Parser(
        prog="moesim place",
        description="Place the experts of a routing trace on the GPUs of a fabric and write the placement.",
    )
    parser.add_argument("--trace", type=Path, required=True, help="routing trace (.npz)")
    parser.add_argument("--topology", type=Path, required=True, help="experiment YAML whose topology: to use")
    parser.add_argument(
        "--method", required=True, help="round_robin, random, greedy, eplb, eplb:N (N spare slots) or ilp"
    )
    parser.add_argument("--out", type=Path, required=True, help="placement JSON to write")
    parser.add_argument("--time-limit", default="60s", help="ilp: solver wall time (default 60s)")
    parser.add_argument("--lam", type=non_negative, default=1.0, help="ilp: weight of affinity traffic")
    parser.add_argument("--solver", choices=("auto", "cbc", "highs"), default="auto", help="ilp: solver")
    parser.add_argument(
        "--decompose", choices=("auto", "none", "layers", "hosts"), default="auto", help="ilp: decomposition"
    )
    parser.add_argument(
        "--fit", type=float, default=None, help="fit on this share of the batches (0-1), score the rest"
    )
    parser.add_argument("--seed", type=whole(0), default=0, help="seed of the random method")
    parser.add_argument(
        "--token-home",
        choices=("source", "top_expert"),
        default="source",
        help="the execution the ILP's affinity term follows (as workload.token_home)",
    )
    return parser


def _scores(label: str, placement: Placement, trace: RoutingTrace, spec: LeafSpine, affinity: str) -> str:
    scored = evaluate(placement, placement_stats(trace, affinity), spec)
    return (
        f"{label}: {trace.tokens} tokens, max/mean GPU load {scored['mean_load_ratio']:.3f} "
        f"(worst layer {scored['max_load_ratio']:.3f}), cross-host affinity copies "
        f"{scored['total_affinity_cross_host']:.0f}, cross-host dispatch copies "
        f"{sum(scored['dispatch_cross_host']):.0f}"
    )


def _run(argv: Sequence[str] | None) -> int:
    args = _parser().parse_args(argv)
    check_output_file(args.out)
    if placement_method(args.method) is None:
        raise UsageError(
            f"--method {args.method!r} is not a method (use round_robin, random, greedy, eplb, eplb:N or ilp)"
        )
    if args.fit is not None and not 0 < args.fit < 1:
        raise UsageError(f"--fit must be between 0 and 1 (exclusive), got {args.fit} (e.g. --fit 0.5)")
    try:
        limit = parse_time(args.time_limit)
    except UnitError as err:
        raise UsageError(f"--time-limit: {err}") from None
    if not limit > 0:
        raise UsageError(f"--time-limit must be > 0, got {args.time_limit} (e.g. --time-limit 60s)")
    spec = load_experiment(args.topology).experiment.topology.spec()
    trace = load_trace(args.trace)
    if trace.gpus > spec.gpus:
        raise ConfigError(
            f"--topology: the trace spreads tokens over {trace.gpus} GPUs but the fabric has {spec.gpus}"
        )
    try:
        fit, held_out = fit_and_run_traces(trace, args.fit)
    except ValueError as err:
        raise UsageError(f"--fit: {err}") from None
    settings = IlpConfig(lam=args.lam, time_limit=limit, solver=args.solver, decompose=args.decompose)
    placement, info = make_placement(
        args.method, fit, spec, seed=args.seed, ilp=settings, token_home=args.token_home
    )
    affinity = "home" if args.token_home == "top_expert" else "slot"
    document = placement_document(placement, info, fit, spec, affinity)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    text = json.dumps(document, indent=1)
    write_atomic(args.out, lambda tmp: tmp.write_text(text))
    if "ilp" in info:
        report = info["ilp"]
        print(
            f"ilp ({report['solver']}, {report['decomposition']}): objective {report['objective']:.6g}, "
            f"bound {report['best_bound']:.6g}, gap {report['gap']:.2%}, {report['status']}, "
            f"{report['solve_seconds']:.1f} s; warm start {report['warm_objective']:.6g}"
        )
    print(_scores("fit" if args.fit is not None else "trace", placement, fit, spec, affinity))
    if args.fit is not None:
        print(_scores("held out", placement, held_out, spec, affinity))
    print(f"wrote {args.out}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """``moesim place ...``; returns the exit status (2 with one line on stderr for bad input)."""
    try:
        return _run(argv)
    except SystemExit as done:  # --help
        return help_status(done)
    except (ConfigError, TraceError, PlacementError, UsageError) as err:
        return fail(err)
