"""Replay a Kineto trace's kernel DAG on a simulated fabric, with modelled communication.

:func:`replay_programs` turns one rank's trace (:mod:`workloads.kineto`), or the per-rank traces of
a job (:class:`~workloads.kineto_ranks.TraceSet`), into programs for
:func:`simulator.engine.simulate`: one program per ``(gpu, stream)``, the stream's kernels in issue
order, cross-stream dependencies as :class:`~simulator.ops.Record`/:class:`~simulator.ops.Wait`
pairs, and every communication kernel as a :class:`~simulator.ops.Collective` whose traffic a
:class:`CommModel` describes. :func:`simulate_replay` runs it and the compute-only variant and
compares them with the trace (:mod:`experiments.replay_command` prints the ``moesim replay`` table).

>>> trace = load_kineto("tests/data/traces/deepseek_profile_train.json.gz")  # doctest: +SKIP
>>> programs = replay_programs(trace, spec, ranks=64, comm=CommModel())  # doctest: +SKIP
>>> simulate(compile_fabric(spec), programs, parse_transport("spray")).completion_time  # doctest: +SKIP

Assumptions
-----------
- **One trace: SPMD.** The trace is one rank of the job. Every one of ``ranks`` GPUs (GPUs
  ``0 .. ranks-1`` of the fabric) runs that rank's recorded kernel sequence with the same measured
  durations, and every communication kernel is a collective over all ``ranks`` GPUs. The trace's
  own rank and world size are not used (``--ranks`` defaults to the world size). Load imbalance
  between ranks, and the stragglers it makes, are therefore not modelled: the measured DeepEP
  kernel times include waiting for the slowest of the 63 peers, the simulated ones do not.
- **A trace set: every rank its own.** GPU r runs rank r's kernels with rank r's measured
  durations and dependencies. The i-th communication kernel of a group (the NCCL process group,
  else the stream; DeepEP kernels form one group) on every rank that has the group is one
  collective over those ranks' GPUs (:func:`workloads.kineto_ranks.match_collectives`), with each
  rank's own message size: the schedule is built for the largest member's size and every message
  scaled by its sender's size over that (a no-op when the sizes agree, as NCCL all-reduce needs).
- **Kernels.** Compute, memcpy and memset ops keep their measured duration (which already includes
  any slowdown from sharing SMs with concurrent kernels; the simulation does not model SM sharing).
  Communication kernels take what the fabric takes to move their traffic, nothing for the GPU work
  inside them (packing, reduction in combine).
- **Dependencies.** Stream order plus ``trace.dependencies`` (the inferred cross-stream edges of
  :mod:`workloads.kineto`): edge ``(before, after)`` becomes ``Record((gpu, "dep", before))`` right
  after ``before``'s op and ``Wait((gpu, "dep", before))`` right before ``after``'s op, per GPU.
- **Launch times.** Ignored by default: a GPU-bound replay, as if the CPU always ran ahead, the
  counterpart of ``critical_path(..., respect_launch=False)``. With ``respect_launch=True`` a CPU
  program per GPU (key ``(gpu, "cpu")``) records ``(gpu, "launch", i)`` at kernel ``i``'s measured
  launch time (clamped at 0) and the kernel waits for it, as ``respect_launch=True`` does. Launch
  times then include CPU stalls on the GPU from the measurement, which a what-if cannot move.
  Ignoring them is wrong for a launch-bound trace, whose GPU sat idle waiting for the CPU: the
  table says which the trace is, with the figures of :mod:`workloads.kineto_launch`.
- **DeepEP dispatch / combine** (``deepep_dispatch``, ``deepep_combine``; the trace carries no
  sizes): a MoE all-to-all of ``tokens`` tokens per rank with balanced routing. Each token picks
  ``top_k`` distinct experts uniformly at random out of ``experts``; the experts are spread evenly
  over the ranks in contiguous blocks (rank r holds ``experts/ranks`` of them); a copy to the
  sender's own GPU costs nothing. The expected copies from rank s to rank d is exactly
  ``tokens * (1 - C(E - e_d, k) / C(E, k))`` with ``e_d`` the experts on d (the chance that a token
  picks at least one of them), and a token goes once to every GPU it picks (DeepEP sends one copy
  per destination GPU). With ``hierarchical`` (DeepEP's internode kernels, the default) a token
  crosses the network once per destination *host*: ``tokens * (1 - C(E - e_h, k) / C(E, k))``
  copies from rank s to host h, to the GPU with s's local index there, which forwards them over
  NVLink to the other picked GPUs of its host; the forward is a second step that starts when the
  NIC step is done (DeepEP pipelines the two, so this is conservative). ``direct`` sends every
  copy straight to its GPU. Node-limited routing (DeepSeek-V3 sends a token to at most 4 nodes) is
  not modelled. A dispatched token is ``hidden * dispatch_bytes_per_element`` plus
  ``scale_bytes`` per ``scale_block`` elements (FP8 with one FP32 scale per 128 elements:
  7,392 bytes for hidden 7168); a combined one ``hidden * combine_bytes_per_element`` (BF16:
  14,336 bytes). Combine is dispatch reversed (NVLink step first, then the NIC). Backward-pass
  kernels are treated as their forward kind (the trace names them ``dispatch``/``combine`` too;
  DeepSeek-V3 dispatches activation gradients in FP8 and combines in BF16 in both passes).
  Defaults: DeepSeek-V3 as profiled (hidden 7168, 4096 tokens per rank, top-8 of 256 experts).
- **DeepEP notify** (``deepep_notify``: ``notify_dispatch``, ``cached_notify``) and any other DeepEP
  kernel (``deepep_other``): a direct all-to-all of ``notify_bytes`` (1 KiB) per pair, so that they
  cost about one message latency, as the counts they exchange are tiny.
- **NCCL kernels**: the collective over the member GPUs with the nccl-tests ``size`` from
  :attr:`Kernel.nbytes` when the trace has message metadata, else ``nccl_size`` (an error if
  neither), and the algorithm and protocol the kernel's name gives (:attr:`Kernel.algorithm`,
  :attr:`Kernel.protocol`; None where the name does not say). Every NCCL op is built by one
  function, ``_nccl_collective``, as :mod:`workloads.nccl` lays it out: the kernel's algorithm
  and protocol where its name gives them (a CollNet kernel, which moesim has no schedule for, as
  an unnamed one), else what NCCL's cost model picks (``auto``), on the channels NCCL would use
  for that size; ``nccl_algorithm: hierarchical`` runs moesim's own all-reduce for kernels that
  name no algorithm. Send/recv is one message to the next rank; an unrecognised NCCL kernel an
  all-reduce. The table says per kernel class which algorithm and protocol the trace's kernels
  used and how they were simulated.
- **DeepEP options** (``tokens``, ``hidden``, ``top_k``, ``experts``, ``hierarchical``, notify
  bytes) matter only when the trace has DeepEP kernels: without them they are neither used nor
  checked (a hierarchical dispatch needs whole hosts only when there is a dispatch to run).
"""

from __future__ import annotations

import dataclasses
import math
from collections import defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from simulator.engine import SimResult, simulate
from simulator.ops import Collective, Compute, Op, Record, Schedule, Wait
from simulator.transport import Transport, parse_transport
from topologies.compiled import compile_fabric
from topologies.leaf_spine import LeafSpine
from workloads.kineto import COMM_LABELS, KinetoTrace, critical_path
from workloads.kineto_launch import LaunchProfile, launch_profile
from workloads.kineto_ranks import CollectiveCall, TraceSet, match_collectives
from workloads.replay_comm import (
    CommModel,
    ReplayError,
    check_comm,
    described_schedule,
)

ProgramKey = tuple[int, int | str]


@dataclass
class Replay:
    """Programs of a replay and where each op comes from.

    Attributes:
        programs: ``(gpu, stream)`` -> ops (see :func:`replay_programs`).
        kernels: ``(gpu, stream)`` -> per op, the index of the kernel it runs in GPU ``gpu``'s trace,
            -1 for the record, wait and CPU ops around them.
        collectives: kernel index in GPU 0's trace -> the one :class:`Collective` it joins (one
            trace: every GPU's copy of the kernel joins it).
        traces: per GPU, the trace it runs (one trace: the same object for every GPU).
        member_collectives: ``(gpu, kernel index)`` -> the :class:`Collective` that GPU's kernel
            joins, for every GPU.
        simulated_as: comm label -> how each of its schedules was built (``all_reduce/ring``, ...).
    """

    programs: dict[ProgramKey, list[Op]]
    kernels: dict[ProgramKey, list[int]]
    collectives: dict[int, Collective]
    traces: list[KinetoTrace] = field(default_factory=list)
    member_collectives: dict[tuple[int, int], Collective] = field(default_factory=dict)
    simulated_as: dict[str, list[str]] = field(default_factory=dict)


def _per_sender(schedule: Schedule, sizes: dict[int, float]) -> Schedule:
    """``schedule`` (built for the largest of ``sizes``) with every message scaled by its sender's
    size over the largest: each rank moves its own message size. Unchanged when the sizes agree."""
    top = max(sizes.values())
    if top <= 0 or all(v == top for v in sizes.values()):
        return schedule
    share = np.zeros(max(sizes) + 1)
    share[list(sizes)] = [v / top for v in sizes.values()]
    return dataclasses.replace(schedule, nbytes=schedule.nbytes * share[np.asarray(schedule.src)])


# --------------------------------------------------------------------------------------------------
# programs


def _one_device(trace: KinetoTrace) -> None:
    devices = sorted({device for device, _ in trace.streams})
    if len(devices) != 1:
        where = f"{Path(trace.path).name}: " if trace.path else ""
        raise ReplayError(
            f"{where}the trace has GPU ops on devices {devices}: replay needs one rank's trace (one device)"
        )


def _trace_labels(traces: Iterable[KinetoTrace]) -> set[str]:
    return {str(k.comm) for t in traces for k in t.kernels if k.kind == "communication"}


def _checked_fabric(spec: LeafSpine | None, ranks: int, comm: CommModel, labels: set[str]) -> LeafSpine:
    if spec is None:
        raise ReplayError("a replay with communication needs a fabric")
    if ranks > spec.gpus:
        raise ReplayError(f"ranks: {ranks} ranks but the fabric has only {spec.gpus} GPUs")
    check_comm(comm, ranks, spec.gpus_per_host, labels=labels)
    return spec


def build_replay(
    trace: KinetoTrace | TraceSet,
    spec: LeafSpine | None,
    *,
    ranks: int | None = None,
    comm: CommModel | None = None,
    compute_only: bool = False,
    respect_launch: bool = False,
) -> Replay:
    """The programs of :func:`replay_programs`, with the kernel behind every op (see :class:`Replay`).

    ``trace`` is one rank's trace, replayed SPMD on ``ranks`` GPUs, or a :class:`TraceSet`, whose
    rank r runs on GPU r (``ranks`` then must be None or the number of ranks). With
    ``compute_only`` every communication kernel becomes ``Compute(0)`` at its place (an infinitely
    fast network; of a trace set, a collective of no messages: the ranks still wait for each other);
    ``spec`` and ``comm`` are then not needed.
    """
    if isinstance(trace, TraceSet):
        return _build_set(
            trace, spec, ranks=ranks, comm=comm, compute_only=compute_only, respect_launch=respect_launch
        )
    _one_device(trace)
    if isinstance(ranks, bool) or not isinstance(ranks, int) or ranks < 1:
        raise ReplayError(f"ranks: must be a whole number >= 1, got {ranks!r}")
    zero: dict[str, Compute] = {}
    shared: dict[int, Op] = {}
    simulated_as: dict[str, list[str]] = {}
    if compute_only:
        for k in trace.communication:
            shared[k.index] = zero.setdefault(str(k.comm), Compute(0.0, label=str(k.comm)))
    else:
        comm = CommModel() if comm is None else comm
        spec = _checked_fabric(spec, ranks, comm, _trace_labels([trace]))
        members = np.arange(ranks, dtype=np.int64)
        schedules: dict[tuple[str, float | None, str | None, str | None], Schedule] = {}
        for k in trace.communication:
            key = (str(k.comm), None if k.nbytes is None else float(k.nbytes), k.algorithm, k.protocol)
            if key not in schedules:
                schedules[key], how = described_schedule(key[0], comm, spec, members, *key[1:])
                simulated_as.setdefault(key[0], []).append(how)
            shared[k.index] = Collective(schedules[key], label=key[0])
    replay = _assemble([trace] * ranks, [shared] * ranks, respect_launch)
    replay.simulated_as = simulated_as
    return replay


def _build_set(
    traces: TraceSet,
    spec: LeafSpine | None,
    *,
    ranks: int | None,
    comm: CommModel | None,
    compute_only: bool,
    respect_launch: bool,
) -> Replay:
    """:func:`build_replay` of a trace set: GPU r runs rank r's trace, collectives matched."""
    n = traces.ranks
    if ranks is not None and ranks != n:
        raise ReplayError(
            f"ranks: {traces.directory} holds {n} rank traces, so the replay runs on {n} GPUs, not "
            f"{ranks} (drop --ranks)"
        )
    for t in traces.traces:
        _one_device(t)
    ops: list[dict[int, Op]] = [{} for _ in range(n)]
    simulated_as: dict[str, list[str]] = {}
    try:
        calls = match_collectives(traces)
    except ValueError as err:
        raise ReplayError(str(err)) from None
    model = CommModel() if comm is None else comm
    fabric = None if compute_only else _checked_fabric(spec, n, model, _trace_labels(traces.traces))
    for call in calls:
        if fabric is None:  # no traffic, but the members still meet: rank r waits for the slowest
            schedule = _barrier(np.array(call.members, dtype=np.int64), call.label)
        else:
            schedule, how = _call_schedule(call, traces, model, fabric)
            simulated_as.setdefault(call.label, []).append(how)
        op = Collective(schedule, label=call.label)
        for r, k in call.kernels.items():
            ops[r][k.index] = op
    replay = _assemble(traces.traces, ops, respect_launch)
    replay.simulated_as = simulated_as
    return replay


def _barrier(members: np.ndarray, label: str) -> Schedule:
    """A collective of no messages over ``members``: it ends as soon as the last member joins."""
    empty = np.zeros(0, dtype=np.int64)
    return Schedule(members, empty, empty, np.zeros(0), empty, 1, label)


def _call_schedule(
    call: CollectiveCall, traces: TraceSet, comm: CommModel, spec: LeafSpine
) -> tuple[Schedule, str]:
    """The schedule of one matched collective of a trace set, each member with its own size."""
    members = np.array(call.members, dtype=np.int64)
    first = call.kernels[call.members[0]]
    if call.label.startswith("deepep"):
        if call.members != list(range(traces.ranks)):
            raise ReplayError(
                f"{traces.paths[call.members[0]]}: DeepEP kernels on ranks {call.members} only: the "
                f"DeepEP model needs them on every rank of the set"
            )
        return described_schedule(call.label, comm, spec, members, None, None, None)
    sizes: dict[int, float] = {}
    for r, k in call.kernels.items():
        size = k.nbytes if k.nbytes is not None else comm.nccl_size
        if size is None:
            raise ReplayError(
                f"{traces.paths[r]}: {k.comm} kernel {k.index} gives no message size: give one "
                f"(--nccl-size 64MiB)"
            )
        sizes[r] = float(size)
    schedule, how = described_schedule(
        call.label, comm, spec, members, max(sizes.values()), first.algorithm, first.protocol
    )
    return _per_sender(schedule, sizes), how


def _assemble(traces: list[KinetoTrace], comm_ops: list[dict[int, Op]], respect_launch: bool) -> Replay:
    """Programs for GPU g running ``traces[g]``, its communication kernel ``i`` as ``comm_ops[g][i]``
    (SPMD: the same trace and dict for every GPU, so compute ops are shared too)."""
    programs: dict[ProgramKey, list[Op]] = {}
    kernels: dict[ProgramKey, list[int]] = {}
    member: dict[tuple[int, int], Collective] = {}
    made: dict[tuple[int, int], dict[int, Op]] = {}  # (id(trace), id(comm ops)) -> index -> op
    for gpu, (trace, comm) in enumerate(zip(traces, comm_ops, strict=True)):
        shared = made.get((id(trace), id(comm)))
        if shared is None:
            shared = made[(id(trace), id(comm))] = {
                k.index: comm[k.index] if k.kind == "communication" else Compute(k.duration, label=k.kind)
                for k in trace.kernels
            }
        recorded = {before for before, _ in trace.dependencies}
        waits_for: dict[int, list[int]] = defaultdict(list)
        for before, after in trace.dependencies:
            waits_for[after].append(before)
        launches = sorted(
            (max(k.launch, 0.0), k.index) for k in trace.kernels if respect_launch and k.launch is not None
        )
        launched = {i for _, i in launches}
        for (_, stream), order in trace.streams.items():
            ops: list[Op] = []
            which: list[int] = []
            for i in order:
                for before in waits_for.get(i, ()):
                    ops.append(Wait((gpu, "dep", before)))
                    which.append(-1)
                if i in launched:
                    ops.append(Wait((gpu, "launch", i)))
                    which.append(-1)
                ops.append(shared[i])
                which.append(i)
                if isinstance(shared[i], Collective):
                    member[(gpu, i)] = shared[i]  # type: ignore[assignment]
                if i in recorded:
                    ops.append(Record((gpu, "dep", i)))
                    which.append(-1)
            programs[(gpu, stream)] = ops
            kernels[(gpu, stream)] = which
        if launches:
            cpu: list[Op] = []
            now = 0.0
            for when, i in launches:
                if when > now:
                    cpu.append(Compute(when - now, label="cpu"))
                    now = when
                cpu.append(Record((gpu, "launch", i), label="launch"))
            programs[(gpu, "cpu")] = cpu
            kernels[(gpu, "cpu")] = [-1] * len(cpu)
    first = {i: op for (gpu, i), op in member.items() if gpu == 0}
    return Replay(programs, kernels, first, list(traces), member)


def replay_programs(
    trace: KinetoTrace | TraceSet,
    spec: LeafSpine,
    *,
    ranks: int | None = None,
    comm: CommModel,
    compute_only: bool = False,
    respect_launch: bool = False,
) -> dict[ProgramKey, list[Op]]:
    """Programs that replay ``trace`` on GPUs ``0 .. ranks-1`` of ``spec`` (module docstring).

    Keys are ``(gpu, stream)`` with the trace's stream ids (plus ``(gpu, "cpu")`` with
    ``respect_launch``). Per stream, the kernels in issue order: compute, memcpy and memset ops as
    ``Compute(measured duration)`` labelled by kind, communication kernels as one
    :class:`Collective` per collective (labelled by its comm label, traffic from ``comm``), or
    ``Compute(0)`` with ``compute_only``; every cross-stream dependency as a ``Record``/``Wait`` of
    the event ``(gpu, "dep", before)``. A :class:`TraceSet` runs rank r's trace on GPU r.

    Raises:
        ReplayError: more ranks than GPUs, a trace of several devices, an unusable ``comm``, rank
            traces whose communication kernels do not match.
    """
    return build_replay(
        trace, spec, ranks=ranks, comm=comm, compute_only=compute_only, respect_launch=respect_launch
    ).programs


def compute_only_programs(
    trace: KinetoTrace | TraceSet, *, ranks: int | None = None, respect_launch: bool = False
) -> dict[ProgramKey, list[Op]]:
    """The programs of :func:`replay_programs` with every communication kernel taking no time."""
    return build_replay(trace, None, ranks=ranks, compute_only=True, respect_launch=respect_launch).programs


# --------------------------------------------------------------------------------------------------
# running and comparing


def _named(values: Iterable[str | None]) -> str | None:
    """The one value every kernel named, ``mixed`` if they differ (or some do not say), None if none says."""
    seen = set(values)
    if seen == {None}:
        return None
    return seen.pop() if len(seen) == 1 else "mixed"


@dataclass(frozen=True)
class LabelTimes:
    """Per communication label: kernels per rank, mean measured and mean simulated time (seconds),
    and what the trace's kernels of it say.

    Attributes:
        label: the comm label (:data:`COMM_LABELS`).
        count: kernels of the label per rank (the most on any rank of a trace set).
        measured: mean measured duration, seconds (over every rank's kernels of a trace set).
        simulated: mean simulated duration, seconds, over every GPU's copy.
        algorithm: the NCCL algorithm all of the label's kernels name, ``mixed`` when they differ
            (or only some name one), None when none does or for DeepEP.
        protocol: likewise the NCCL protocol.
        simulated_as: how the replay built them, e.g. ``all_reduce/ring`` (several joined by ``+``).
    """

    label: str
    count: int
    measured: float
    simulated: float
    algorithm: str | None = None
    protocol: str | None = None
    simulated_as: str = ""

    @property
    def algo_proto(self) -> str:
        """``algorithm/protocol`` as the trace names them: ``ring/LL``, ``mixed``, ``?/?`` (not named
        by the kernel names, e.g. ``ncclDevKernel_Generic``), ``-`` for DeepEP kernels."""
        if not self.label.startswith("nccl"):
            return "-"
        if self.algorithm == self.protocol == "mixed":
            return "mixed"
        return f"{self.algorithm or '?'}/{self.protocol or '?'}"


@dataclass
class ReplayOutcome:
    """A replay simulated and compared with its trace. Times in seconds.

    Attributes:
        trace: the trace replayed (a trace set: rank 0's).
        measured_span: the trace's span (a trace set: the longest rank's).
        dag_span: critical path of the trace's DAG with measured times, launch times treated as in
            the simulation (a trace set: the longest rank's).
        dag_launch_span: the same with launch times respected.
        dag_compute_only: the DAG's critical path with communication = 0 (same launch treatment).
        simulated_span: span of the simulated replay.
        compute_only_span: span of the simulated replay with communication = 0 (one trace:
            simulated on one GPU, as without traffic the GPUs all run the same program; a trace set:
            every rank, its collectives kept as barriers).
        labels: per communication label, mean measured vs simulated kernel time and the NCCL
            algorithm/protocol the trace names; a simulated kernel lasts from its GPU reaching it to
            its GPU's part being delivered, so, as in the measurement, it includes waiting for the
            last member to arrive.
        result, compute_only: the two simulations.
        traces: the per-rank traces (one trace: just it).
        trace_set: the trace set replayed, None for one trace.
        launch: per trace in ``traces``, how much its GPU waited for CPU launches.
        rank_spans: for a trace set, per rank ``(measured span, simulated kernel span)``.
    """

    trace: KinetoTrace
    spec: LeafSpine
    ranks: int
    transport: Transport
    comm: CommModel
    respect_launch: bool
    measured_span: float
    dag_span: float
    dag_launch_span: float
    dag_compute_only: float
    simulated_span: float
    compute_only_span: float
    labels: list[LabelTimes]
    result: SimResult
    compute_only: SimResult
    traces: list[KinetoTrace] = field(default_factory=list)
    trace_set: TraceSet | None = None
    launch: list[LaunchProfile] = field(default_factory=list)
    rank_spans: list[tuple[float, float]] = field(default_factory=list)

    @property
    def error(self) -> float:
        """Relative error of the simulated span against the measured span (0.01 = 1 % long)."""
        return self.simulated_span / self.measured_span - 1.0

    @property
    def exposed(self) -> float:
        """Communication time on the simulated critical path: simulated minus compute-only span."""
        return self.simulated_span - self.compute_only_span

    @property
    def most_launch_bound(self) -> tuple[int, LaunchProfile] | None:
        """The rank (index in :attr:`traces`) whose GPU waited longest for launches, and its profile."""
        if not self.launch:
            return None
        i = max(range(len(self.launch)), key=lambda j: self.launch[j].wait_fraction)
        return i, self.launch[i]


def kernel_span(result: SimResult, rank: int | None = None) -> float:
    """First kernel start to last kernel end of a replay simulation (record/wait/CPU ops aside), in
    seconds; of GPU ``rank`` only when given."""
    ops = result.ops
    kernels = ops[~ops["label"].isin(("record", "wait", "launch", "cpu"))]
    if rank is not None:
        kernels = kernels[kernels["rank"] == rank]
    return float(kernels["end"].max() - kernels["start"].min()) if len(kernels) else 0.0


def _label_times(
    traces: list[KinetoTrace], result: SimResult, simulated_as: dict[str, list[str]]
) -> list[LabelTimes]:
    ops = result.ops
    out = []
    present = _trace_labels(traces)
    for label in [x for x in COMM_LABELS if x in present]:
        kernels = [k for t in traces for k in t.kernels if k.comm == label]
        count = max(sum(k.comm == label for k in t.kernels) for t in traces)
        rows = ops[ops["label"] == label]
        simulated = float((rows["end"] - rows["start"]).mean()) if len(rows) else math.nan
        nccl = label.startswith("nccl")
        out.append(
            LabelTimes(
                label,
                count,
                float(np.mean([k.duration for k in kernels])),
                simulated,
                _named(k.algorithm for k in kernels) if nccl else None,
                _named(k.protocol for k in kernels) if nccl else None,
                "+".join(dict.fromkeys(simulated_as.get(label, []))),
            )
        )
    return out


def simulate_replay(
    trace: KinetoTrace | TraceSet,
    spec: LeafSpine,
    *,
    ranks: int | None = None,
    comm: CommModel | None = None,
    transport: str | Transport = "ecmp",
    seed: int = 0,
    respect_launch: bool = False,
) -> ReplayOutcome:
    """Simulate the replay of ``trace`` on ``spec`` and its compute-only variant; compare with the
    trace. One trace runs SPMD on ``ranks`` GPUs (default: its world size); a :class:`TraceSet` runs
    rank r on GPU r."""
    comm = CommModel() if comm is None else comm
    transport = parse_transport(transport) if isinstance(transport, str) else transport
    fabric = compile_fabric(spec)
    if isinstance(trace, TraceSet):
        traces, n, trace_set = list(trace.traces), trace.ranks, trace
    else:
        traces, trace_set = [trace], None
        n = ranks if ranks is not None else (trace.world_size or 1)
    replay = build_replay(
        trace, spec, ranks=ranks if trace_set else n, comm=comm, respect_launch=respect_launch
    )
    result = simulate(fabric, replay.programs, transport, seed)
    # Without collectives the GPUs never interact; one trace: all run the same program, one is enough.
    alone = compute_only_programs(trace, ranks=None if trace_set else 1, respect_launch=respect_launch)
    compute_only = simulate(fabric, alone, transport, seed)

    def longest(f: Callable[[KinetoTrace], float]) -> float:
        return max(f(t) for t in traces)

    return ReplayOutcome(
        trace=traces[0],
        spec=spec,
        ranks=n,
        transport=transport,
        comm=comm,
        respect_launch=respect_launch,
        measured_span=longest(lambda t: t.span),
        dag_span=longest(lambda t: critical_path(t, respect_launch=respect_launch)),
        dag_launch_span=longest(lambda t: critical_path(t, respect_launch=True)),
        dag_compute_only=longest(lambda t: critical_path(t, lambda k: 0.0, respect_launch=respect_launch)),
        simulated_span=kernel_span(result),
        compute_only_span=kernel_span(compute_only),
        labels=_label_times(traces, result, replay.simulated_as),
        result=result,
        compute_only=compute_only,
        traces=traces,
        trace_set=trace_set,
        launch=[launch_profile(t) for t in traces],
        rank_spans=[(t.span, kernel_span(result, r)) for r, t in enumerate(traces)] if trace_set else [],
    )
