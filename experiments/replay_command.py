"""``moesim replay``: replay a PyTorch profiler trace on a fabric and compare with the measurement.

The library side is :mod:`workloads.replay`; this module parses arguments, reads the topology
from an experiment file and prints the comparison table (:func:`format_outcome`). The trace is one
rank's file (replayed SPMD on ``--ranks`` GPUs) or a directory of per-rank files
(:mod:`workloads.kineto_ranks`: GPU r runs rank r's own kernels).
"""

from __future__ import annotations

import argparse
import dataclasses
import math
from collections.abc import Callable, Sequence
from pathlib import Path

from experiments.arguments import Parser, UsageError, fail, help_status, whole
from simulator.transport import parse_transport
from topologies.leaf_spine import TopologyError, validate
from workloads.kineto import KinetoError, KinetoTrace, load_kineto
from workloads.kineto_ranks import TraceSet, load_trace_set
from workloads.replay import ReplayOutcome, simulate_replay
from workloads.replay_comm import DEEPEP_TRAFFIC, CommModel, ReplayError


def _parser() -> argparse.ArgumentParser:
    parser = Parser(
        prog="moesim replay",
        description="Replay a PyTorch-profiler (Kineto) trace on a simulated fabric and compare with the "
        "measurement. One trace file is replayed SPMD (every rank runs the traced rank's kernels); a "
        "directory of per-rank trace files as one job (GPU r runs rank r's own kernels).",
    )
    parser.add_argument(
        "trace",
        type=Path,
        help="Kineto Chrome trace (.json or .json.gz), or a directory of one trace per rank",
    )
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
    )  # both matter only for traces with DeepEP kernels
    parser.add_argument("--seed", type=whole(0), default=None, help="ECMP hash seed (default: the file's)")
    parser.add_argument(
        "--respect-launch", action="store_true", help="no kernel before its measured CPU launch"
    )
    model = parser.add_argument_group(
        "DeepEP communication model (used only for DeepEP kernels; defaults: DeepSeek-V3 as profiled)"
    )
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
    trace: KinetoTrace | TraceSet
    try:
        trace = load_trace_set(args.trace) if args.trace.is_dir() else load_kineto(args.trace)
    except OSError as err:
        raise ReplayError(f"{args.trace}: cannot read the trace ({err.strerror or err})") from None
    if isinstance(trace, TraceSet):
        if args.ranks is not None and args.ranks != trace.ranks:
            raise ReplayError(
                f"--ranks: {args.trace} holds {trace.ranks} rank traces, one GPU each "
                f"(drop --ranks {args.ranks})"
            )
        ranks = trace.ranks
    else:
        ranks = args.ranks if args.ranks is not None else (trace.world_size or spec.gpus)
    if ranks > spec.gpus:
        raise ReplayError(
            f"--ranks: {ranks} ranks but the fabric of {args.topology.name} has only {spec.gpus} GPUs"
        )
    seed = plan.experiment.seed if args.seed is None else args.seed
    outcome = simulate_replay(
        trace,
        spec,
        ranks=None if isinstance(trace, TraceSet) else ranks,
        comm=comm,
        transport=transport,
        seed=seed,
        respect_launch=args.respect_launch,
    )
    print(format_outcome(outcome))
    return 0


def _launch_line(outcome: ReplayOutcome) -> str:
    worst = outcome.most_launch_bound
    if worst is None:
        return ""
    rank, profile = worst
    line = profile.verdict()
    if outcome.trace_set is not None:
        line = line.replace(":", f" (rank {rank}, the most of {len(outcome.traces)}):", 1)
    if profile.launch_bound:
        if outcome.respect_launch:
            line += ": this replay respects launch times"
        else:
            line += ": this replay ignores launch times and comes out short; rerun with --respect-launch"
    return line


def format_outcome(outcome: ReplayOutcome) -> str:
    """The ``moesim replay`` table."""
    o = outcome
    trace = o.trace
    launch = "launch times respected" if o.respect_launch else "launch times ignored (as if GPU-bound)"
    labels = {t.label for t in o.labels}
    dispatch = ""
    if labels & set(DEEPEP_TRAFFIC):
        dispatch = f", {'hierarchical' if o.comm.hierarchical else 'direct'} DeepEP"
    spec = o.spec
    ops = sum(len(t.kernels) for t in o.traces)
    streams = sum(len(t.streams) for t in o.traces)
    if o.trace_set is not None:
        what = (
            f"replay of {o.trace_set.directory.name}/ ({o.trace_set.ranks} rank traces, {ops} GPU ops on "
            f"{streams} streams; GPU r runs rank r's own kernels)"
        )
    else:
        who = f"rank {trace.rank} of {trace.world_size}" if trace.rank is not None else "rank unknown"
        name = Path(trace.path).name if trace.path else "trace"
        what = f"replay of {name} ({who}, {ops} GPU ops on {streams} streams)"
    head = [
        what,
        f"on {o.ranks} of {spec.gpus} GPUs ({spec.hosts} hosts x {spec.gpus_per_host}), NIC "
        f"{spec.nic_bandwidth * 8 / 1e9:g} Gb/s, transport {o.transport}{dispatch}, {launch}",
    ]
    dag_note = f"{o.dag_span / o.measured_span - 1:+.2%} vs trace"
    if not o.respect_launch:
        dag_note += f" ({o.dag_launch_span * 1e3:.3f} ms respecting launch times)"
    ms = "{:10.3f} ms".format
    rows = [
        (
            "measured span (trace)" if o.trace_set is None else "measured span (longest rank)",
            ms(o.measured_span * 1e3),
            "",
        ),
        ("DAG critical path, measured times", ms(o.dag_span * 1e3), dag_note),
        ("DAG critical path, communication = 0", ms(o.dag_compute_only * 1e3), ""),
        ("simulated span", ms(o.simulated_span * 1e3), ""),
        ("error, simulated vs measured span", f"{o.error * 100:+10.2f} %", ""),
        ("simulated compute-only span (infinitely fast network)", ms(o.compute_only_span * 1e3), ""),
        (
            "exposed communication (simulated - compute-only)",
            ms(o.exposed * 1e3),
            f"{o.exposed / o.simulated_span:.1%} of the simulated span" if o.simulated_span > 0 else "",
        ),
    ]
    width = max(len(r[0]) for r in rows)
    lines = [*head, ""]
    lines += [f"{label:<{width}}  {value}  {note}".rstrip() for label, value, note in rows]
    verdict = _launch_line(o)
    if verdict:
        lines += ["", verdict]
    if o.labels:
        ap = max(len("algo/proto"), *(len(t.algo_proto) for t in o.labels))
        sim = max(len("simulated as"), *(len(t.simulated_as) for t in o.labels))
        lines += [
            "",
            f"{'communication kernel':<20}  count  {'algo/proto':<{ap}}  {'simulated as':<{sim}}  "
            f"measured ms  simulated ms  ratio",
        ]
        for t in o.labels:
            ratio = t.simulated / t.measured if t.measured > 0 else math.nan
            times = f"{t.measured * 1e3:11.3f}  {t.simulated * 1e3:12.3f}"
            named = f"{t.algo_proto:<{ap}}  {t.simulated_as:<{sim}}"
            lines.append(f"{t.label:<20}  {t.count:>5}  {named}  {times}  {ratio:5.2f}")
    if o.trace_set is not None:
        lines += _rank_rows(o)
    return "\n".join(lines)


_RANK_ROWS = 16
"""Most per-rank rows the table prints (the first ones; the rest are summarised)."""


def _rank_rows(o: ReplayOutcome) -> list[str]:
    assert o.trace_set is not None
    names = [p.name for p in o.trace_set.paths]
    width = max(len("file"), *(len(n) for n in names[:_RANK_ROWS]))
    lines = ["", f"rank  {'file':<{width}}  GPU ops  measured span ms  simulated span ms"]
    for r, ((measured, simulated), t) in enumerate(zip(o.rank_spans, o.traces, strict=True)):
        if r == _RANK_ROWS:
            lines.append(f"... {len(o.traces) - _RANK_ROWS} more ranks")
            break
        spans = f"{measured * 1e3:16.3f}  {simulated * 1e3:17.3f}"
        lines.append(f"{r:>4}  {names[r]:<{width}}  {len(t.kernels):>7}  {spans}")
    return lines


def main(argv: Sequence[str] | None = None) -> int:
    """``moesim replay TRACE|DIR --topology EXPERIMENT.yaml [options]``; returns the exit status.

    Bad input (a bad trace or experiment file, a bad option, more ranks than GPUs, a trace set
    whose ranks or communication kernels do not match) prints one line ``moesim: error: ...`` on
    stderr and returns 2.
    """
    from experiments.config import ConfigError

    try:
        return _run(argv)
    except SystemExit as done:  # --help
        return help_status(done)
    except (ConfigError, KinetoError, ReplayError, UsageError) as err:
        return fail(err)
