"""``moesim replay``: replay a PyTorch profiler trace on a fabric and compare with the measurement.

The library side is :mod:`workloads.replay`; this module parses arguments, reads the topology
from an experiment file and prints the comparison table.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from experiments.arguments import Parser, UsageError, whole
from simulator.transport import parse_transport
from topologies.leaf_spine import TopologyError, validate
from workloads.kineto import KinetoError, load_kineto
from workloads.replay import CommModel, ReplayError, format_outcome, simulate_replay


def _parser() -> argparse.ArgumentParser:
    parser = Parser(
        prog="moesim replay",
        description="Replay a PyTorch-profiler (Kineto) trace on a simulated fabric (SPMD: every rank "
        "runs the traced rank's kernels) and compare with the measurement.",
    )
    parser.add_argument("trace", type=Path, help="Kineto Chrome trace (.json or .json.gz)")
    parser.add_argument("--topology", type=Path, required=True, help="experiment YAML whose topology: to use")
    parser.add_argument(
        "--transport", default=None, help="ecmp, spray, split:K or ethereal (default: the file's)"
    )
    parser.add_argument("--ranks", type=whole(1), default=None, help="GPUs (default: the trace's world size)")
    parser.add_argument(
        "--nic-bandwidth", default=None, help="override topology.nic_bandwidth (e.g. 200Gbps)"
    )
    parser.add_argument("--uplink-bandwidth", default=None, help="override topology.uplink_bandwidth")
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument(
        "--hierarchical",
        dest="hierarchical",
        action="store_true",
        default=True,
        help="DeepEP internode: one copy per destination host, then NVLink (default)",
    )
    mode.add_argument(
        "--direct", dest="hierarchical", action="store_false", help="one copy per destination GPU"
    )
    parser.add_argument("--seed", type=whole(0), default=None, help="ECMP hash seed (default: the file's)")
    parser.add_argument(
        "--respect-launch", action="store_true", help="no kernel before its measured CPU launch"
    )
    model = parser.add_argument_group("communication model (defaults: DeepSeek-V3 as profiled)")
    model.add_argument(
        "--tokens", type=whole(0), default=CommModel.tokens, help="tokens per rank per dispatch"
    )
    model.add_argument("--hidden", type=whole(1), default=CommModel.hidden, help="hidden size")
    model.add_argument("--top-k", type=whole(1), default=CommModel.top_k, help="experts per token")
    model.add_argument("--experts", type=whole(1), default=CommModel.experts, help="routed experts")
    model.add_argument("--notify-bytes", default="1KiB", help="bytes per pair of a notify kernel")
    model.add_argument("--nccl-size", default=None, help="size of NCCL kernels without one in the trace")
    return parser


def _unit(parse: Callable[[str], float], flag: str, text: str) -> float:
    from experiments.units import UnitError

    try:
        return parse(text)
    except UnitError as err:
        raise ReplayError(f"{flag}: {err}") from None


def _run(argv: Sequence[str] | None) -> int:
    from experiments.config import load_experiment
    from experiments.units import parse_bandwidth, parse_size

    args = _parser().parse_args(argv)
    plan = load_experiment(args.topology)
    spec = plan.experiment.topology.spec()
    overrides = {}
    if args.nic_bandwidth is not None:
        overrides["nic_bandwidth"] = _unit(parse_bandwidth, "--nic-bandwidth", args.nic_bandwidth)
    if args.uplink_bandwidth is not None:
        overrides["uplink_bandwidth"] = _unit(parse_bandwidth, "--uplink-bandwidth", args.uplink_bandwidth)
    spec = dataclasses.replace(spec, **overrides)
    try:
        validate(spec)
    except TopologyError as err:
        raise ReplayError(f"topology.{err}") from None
    try:
        transport = parse_transport(args.transport or plan.experiment.transport)
    except ValueError as err:
        raise ReplayError(f"--transport: {err}") from None
    comm = CommModel(
        hidden=args.hidden,
        tokens=args.tokens,
        top_k=args.top_k,
        experts=args.experts,
        hierarchical=args.hierarchical,
        notify_bytes=float(_unit(parse_size, "--notify-bytes", args.notify_bytes)),
        nccl_size=None if args.nccl_size is None else float(_unit(parse_size, "--nccl-size", args.nccl_size)),
    )
    try:
        trace = load_kineto(args.trace)
    except OSError as err:
        raise ReplayError(f"{args.trace}: cannot read the trace ({err.strerror or err})") from None
    ranks = args.ranks if args.ranks is not None else (trace.world_size or spec.gpus)
    if ranks > spec.gpus:
        raise ReplayError(
            f"--ranks: {ranks} ranks but the fabric of {args.topology.name} has only {spec.gpus} GPUs"
        )
    seed = plan.experiment.seed if args.seed is None else args.seed
    outcome = simulate_replay(
        trace,
        spec,
        ranks=ranks,
        comm=comm,
        transport=transport,
        seed=seed,
        respect_launch=args.respect_launch,
    )
    print(format_outcome(outcome))
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """``moesim replay TRACE --topology EXPERIMENT.yaml [options]``; returns the exit status.

    Bad input (a bad trace or experiment file, a bad option, more ranks than GPUs) prints one line
    ``moesim: error: ...`` on stderr and returns 2.
    """
    from experiments.config import ConfigError

    try:
        return _run(argv)
    except (ConfigError, KinetoError, ReplayError, UsageError) as err:
        print(f"moesim: error: {err}", file=sys.stderr)
        return 2
