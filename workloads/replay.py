"""Replay a Kineto trace's kernel DAG on a simulated fabric, with modelled communication.

:func:`replay_programs` turns one rank's trace (:mod:`workloads.kineto`) into programs for
:func:`simulator.engine.simulate`: one program per ``(gpu, stream)``, the stream's kernels in issue
order, cross-stream dependencies as :class:`~simulator.ops.Record`/:class:`~simulator.ops.Wait`
pairs, and every communication kernel as a :class:`~simulator.ops.Collective` whose traffic a
:class:`CommModel` describes. :func:`simulate_replay` runs it and the compute-only variant and
compares them with the trace; :func:`main` is the ``moesim replay`` command.

>>> trace = load_kineto("../shared/data/deepseek_profile_train.json")  # doctest: +SKIP
>>> programs = replay_programs(trace, spec, ranks=64, comm=CommModel())  # doctest: +SKIP
>>> simulate(compile_fabric(spec), programs, parse_transport("spray")).completion_time  # doctest: +SKIP

Assumptions
-----------
- **SPMD.** The trace is one rank of an expert-parallel job. Every one of ``ranks`` GPUs (GPUs
  ``0 .. ranks-1`` of the fabric) runs that rank's recorded kernel sequence with the same measured
  durations, and every communication kernel is a collective over all ``ranks`` GPUs. The trace's
  own rank and world size are not used (``--ranks`` defaults to the world size). Load imbalance
  between ranks, and the stragglers it makes, are therefore not modelled: the measured DeepEP
  kernel times include waiting for the slowest of the 63 peers, the simulated ones do not.
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
- **NCCL kernels**: the collective of :mod:`workloads.collectives` over the ``ranks`` GPUs with the
  nccl-tests ``size`` from :attr:`Kernel.nbytes` when the trace has message metadata, else
  ``nccl_size`` (an error if neither). All-reduce runs ``nccl_algorithm`` (ring or hierarchical);
  all-gather, reduce-scatter ring; all-to-all direct; send/recv, broadcast and reduce as a ring
  send/recv of ``size`` (each rank sends ``size`` bytes to the next: what a pipelined ring
  broadcast or reduce moves per link); an unrecognised NCCL kernel as an all-reduce.
"""

from __future__ import annotations

import dataclasses
import math
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import numpy as np

from simulator.engine import SimResult, simulate
from simulator.ops import Collective, Compute, Op, Record, Schedule, Wait
from simulator.transport import Transport, parse_transport
from topologies.compiled import compile_fabric
from topologies.leaf_spine import LeafSpine
from workloads import collectives
from workloads.kineto import COMM_LABELS, Kernel, KinetoTrace, critical_path
from workloads.moe import LayerTraffic, dispatch_schedule, reverse

ProgramKey = tuple[int, int | str]


class ReplayError(ValueError):
    """A trace, fabric and communication model that do not fit together (one-line message)."""


@dataclass(frozen=True)
class CommModel:
    """What the communication kernels of a trace move (see the module docstring). Data only.

    Attributes:
        hidden: model width (elements per token).
        tokens: tokens each rank dispatches per dispatch kernel.
        top_k: experts each token picks.
        experts: routed experts per MoE layer, spread evenly over the ranks.
        dispatch_bytes_per_element: bytes per hidden element in dispatch (FP8: 1).
        scale_bytes: bytes of one quantisation scale in dispatch (FP32: 4; 0 for none).
        scale_block: elements per scale (128).
        combine_bytes_per_element: bytes per hidden element in combine (BF16: 2).
        hierarchical: DeepEP internode (one copy per destination host over the NIC, then NVLink
            forwards) rather than one copy per destination GPU straight to it.
        notify_bytes: bytes per pair of the notify all-to-all.
        nccl_size: nccl-tests ``size`` (bytes) of NCCL kernels whose trace entry has none.
        nccl_algorithm: all-reduce algorithm, ``ring`` or ``hierarchical``.
    """

    hidden: int = 7168
    tokens: int = 4096
    top_k: int = 8
    experts: int = 256
    dispatch_bytes_per_element: float = 1.0
    scale_bytes: float = 4.0
    scale_block: int = 128
    combine_bytes_per_element: float = 2.0
    hierarchical: bool = True
    notify_bytes: float = 1024.0
    nccl_size: float | None = None
    nccl_algorithm: str = "ring"


@dataclass(frozen=True)
class CommBytes:
    """Bytes each of ``ranks`` GPUs sends in one communication kernel, by tier.

    Attributes:
        nic: ``(ranks,)`` bytes sent to GPUs on other hosts (through the NIC).
        nvlink: ``(ranks,)`` bytes sent to other GPUs of the same host (NVLink), forwards included.
    """

    nic: np.ndarray
    nvlink: np.ndarray


@dataclass
class Replay:
    """Programs of a replay and where each op comes from.

    Attributes:
        programs: ``(gpu, stream)`` -> ops (see :func:`replay_programs`).
        kernels: ``(gpu, stream)`` -> per op, the index of the trace kernel it runs, -1 for the
            record, wait and CPU ops around them.
        collectives: kernel index -> the one :class:`Collective` every GPU's copy of it joins.
    """

    programs: dict[ProgramKey, list[Op]]
    kernels: dict[ProgramKey, list[int]]
    collectives: dict[int, Collective]


# --------------------------------------------------------------------------------------------------
# traffic


def hit_probability(experts: int, top_k: int, group: int) -> float:
    """Chance that ``top_k`` distinct experts picked uniformly out of ``experts`` include at least one
    of a given ``group`` of them: ``1 - C(experts - group, top_k) / C(experts, top_k)``.

    >>> round(hit_probability(256, 8, 4), 6)  # one of 64 ranks
    0.119934
    """
    return float(1 - Fraction(math.comb(experts - group, top_k), math.comb(experts, top_k)))


def token_bytes(comm: CommModel, label: str) -> float:
    """Bytes of one token copy in a dispatch (``deepep_dispatch``) or combine (``deepep_combine``)."""
    if label == "deepep_dispatch":
        scales = math.ceil(comm.hidden / comm.scale_block) * comm.scale_bytes if comm.scale_bytes else 0.0
        return comm.hidden * comm.dispatch_bytes_per_element + scales
    if label == "deepep_combine":
        return comm.hidden * comm.combine_bytes_per_element
    raise ValueError(f"{label!r} is not deepep_dispatch or deepep_combine")


def expected_copies(comm: CommModel, ranks: int, gpus_per_host: int) -> LayerTraffic:
    """Expected token copies under balanced routing (module docstring): ``dispatch[s, d]`` from rank
    s to rank d (diagonal: local) and ``host_copies[s, h]`` from rank s to host h."""
    per_rank = np.array([len(a) for a in np.array_split(np.arange(comm.experts), ranks)])
    hosts = -(-ranks // gpus_per_host)
    per_host = np.bincount(np.arange(ranks) // gpus_per_host, weights=per_rank, minlength=hosts)
    p_rank = np.array([hit_probability(comm.experts, comm.top_k, int(n)) for n in per_rank])
    p_host = np.array([hit_probability(comm.experts, comm.top_k, int(n)) for n in per_host])
    dispatch = np.broadcast_to(comm.tokens * p_rank, (ranks, ranks)).copy()
    host_copies = np.broadcast_to(comm.tokens * p_host, (ranks, hosts)).copy()
    return LayerTraffic(dispatch, host_copies, np.zeros(0))


def check_comm(comm: CommModel, ranks: int, gpus_per_host: int) -> None:
    """Raise :class:`ReplayError` naming the first field of ``comm`` that cannot work on ``ranks``."""
    for name in ("hidden", "tokens", "top_k", "experts", "scale_block"):
        value = getattr(comm, name)
        least = 0 if name == "tokens" else 1
        if isinstance(value, bool) or not isinstance(value, int) or value < least:
            raise ReplayError(f"{name}: must be a whole number >= {least}, got {value!r}")
    if comm.top_k > comm.experts:
        raise ReplayError(f"top_k: {comm.top_k} experts per token but only {comm.experts} experts")
    for name in ("dispatch_bytes_per_element", "scale_bytes", "combine_bytes_per_element", "notify_bytes"):
        value = getattr(comm, name)
        if not (isinstance(value, int | float) and math.isfinite(value) and value >= 0):
            raise ReplayError(f"{name}: must be a number of bytes >= 0, got {value!r}")
    if comm.nccl_size is not None and not (math.isfinite(comm.nccl_size) and comm.nccl_size >= 0):
        raise ReplayError(f"nccl_size: must be a number of bytes >= 0, got {comm.nccl_size!r}")
    if comm.nccl_algorithm not in ("ring", "hierarchical"):
        raise ReplayError(f'nccl_algorithm: "{comm.nccl_algorithm}" is not ring or hierarchical')
    if comm.hierarchical and ranks % gpus_per_host:
        raise ReplayError(
            f"hierarchical dispatch needs whole hosts: {ranks} ranks is not a multiple of "
            f"gpus_per_host={gpus_per_host} (use --direct or another --ranks)"
        )


_NCCL_OPS = {
    "nccl_all_reduce": "all_reduce",
    "nccl_all_gather": "all_gather",
    "nccl_reduce_scatter": "reduce_scatter",
    "nccl_all_to_all": "all_to_all",
    "nccl_send_recv": "send_recv",
    "nccl_broadcast": "send_recv",
    "nccl_reduce": "send_recv",
    "nccl_other": "all_reduce",
}


def comm_schedule(
    label: str, comm: CommModel, spec: LeafSpine, ranks: int, nbytes: float | None = None
) -> Schedule:
    """The schedule of one communication kernel with label ``label`` (:data:`COMM_LABELS`) over GPUs
    ``0 .. ranks-1`` of ``spec``; ``nbytes`` is the kernel's NCCL size when the trace has one."""
    members = np.arange(ranks, dtype=np.int64)
    g = spec.gpus_per_host
    if label in ("deepep_dispatch", "deepep_combine"):
        traffic = expected_copies(comm, ranks, g)
        if label == "deepep_dispatch":
            return dispatch_schedule(traffic, members, token_bytes(comm, label), g, comm.hierarchical, label)
        forward = dispatch_schedule(traffic, members, token_bytes(comm, label), g, comm.hierarchical, label)
        return reverse(forward, 1.0, label)
    if label in ("deepep_notify", "deepep_other"):
        return dataclasses.replace(collectives.all_to_all(members, comm.notify_bytes * ranks), name=label)
    if label in _NCCL_OPS:
        size = nbytes if nbytes is not None else comm.nccl_size
        if size is None:
            raise ReplayError(f"{label}: the trace gives no message size: give one (--nccl-size 64MiB)")
        op = _NCCL_OPS[label]
        if op == "all_reduce":
            schedule = collectives.all_reduce(members, float(size), comm.nccl_algorithm, g)
        else:
            schedule = getattr(collectives, op)(members, float(size))
        return dataclasses.replace(schedule, name=label)
    raise ReplayError(f"{label!r} is not a communication label (one of {', '.join(COMM_LABELS)})")


def comm_bytes(
    label: str, comm: CommModel, spec: LeafSpine, ranks: int, nbytes: float | None = None
) -> CommBytes:
    """Bytes each rank sends in one ``label`` kernel (:func:`comm_schedule`), NIC and NVLink apart.

    Under the default model a DeepEP dispatch sends, per rank, ``T * b * (H - 1) * p_host`` bytes
    through its NIC (hierarchical; ``T * b * (R - G) * p_rank`` direct) and ``T * b * (G - 1) * H *
    p_rank`` over NVLink (direct: ``T * b * (G - 1) * p_rank``), with T tokens, b :func:`token_bytes`,
    R ranks on H hosts of G GPUs, and p the :func:`hit_probability` of a rank's or host's experts.
    """
    schedule = comm_schedule(label, comm, spec, ranks, nbytes)
    src, dst = np.asarray(schedule.src), np.asarray(schedule.dst)
    g = spec.gpus_per_host
    remote = src // g != dst // g
    nic = np.bincount(src[remote], weights=schedule.nbytes[remote], minlength=ranks)
    nvlink = np.bincount(src[~remote], weights=schedule.nbytes[~remote], minlength=ranks)
    return CommBytes(nic, nvlink)


# --------------------------------------------------------------------------------------------------
# programs


def build_replay(
    trace: KinetoTrace,
    spec: LeafSpine | None,
    *,
    ranks: int,
    comm: CommModel | None = None,
    compute_only: bool = False,
    respect_launch: bool = False,
) -> Replay:
    """The programs of :func:`replay_programs`, with the kernel behind every op (see :class:`Replay`).

    With ``compute_only`` every communication kernel becomes ``Compute(0)`` at its place (an
    infinitely fast network); ``spec`` and ``comm`` are then not needed.
    """
    devices = sorted({device for device, _ in trace.streams})
    if len(devices) != 1:
        raise ReplayError(
            f"the trace has GPU ops on devices {devices}: replay needs one rank's trace (one device)"
        )
    if isinstance(ranks, bool) or not isinstance(ranks, int) or ranks < 1:
        raise ReplayError(f"ranks: must be a whole number >= 1, got {ranks!r}")
    make_comm: Callable[[Kernel], Op]
    if compute_only:
        zero: dict[str, Compute] = {}

        def make_comm(k: Kernel) -> Op:
            return zero.setdefault(str(k.comm), Compute(0.0, label=str(k.comm)))

    else:
        if spec is None:
            raise ReplayError("a replay with communication needs a fabric")
        if ranks > spec.gpus:
            raise ReplayError(f"ranks: {ranks} ranks but the fabric has only {spec.gpus} GPUs")
        comm = CommModel() if comm is None else comm
        check_comm(comm, ranks, spec.gpus_per_host)
        schedules: dict[tuple[str, float | None], Schedule] = {}

        def make_comm(k: Kernel) -> Op:
            key = (str(k.comm), None if k.nbytes is None else float(k.nbytes))
            if key not in schedules:
                schedules[key] = comm_schedule(key[0], comm, spec, ranks, key[1])
            return Collective(schedules[key], label=key[0])

    recorded = {before for before, _ in trace.dependencies}
    waits_for: dict[int, list[int]] = defaultdict(list)
    for before, after in trace.dependencies:
        waits_for[after].append(before)
    shared: dict[int, Op] = {}  # compute ops and collectives, the same object on every GPU
    collectives_of: dict[int, Collective] = {}
    for k in trace.kernels:
        if k.kind == "communication":
            shared[k.index] = make_comm(k)
            if isinstance(shared[k.index], Collective):
                collectives_of[k.index] = shared[k.index]  # type: ignore[assignment]
        else:
            shared[k.index] = Compute(k.duration, label=k.kind)
    launches = sorted(
        (max(k.launch, 0.0), k.index) for k in trace.kernels if respect_launch and k.launch is not None
    )
    launched = {i for _, i in launches}

    programs: dict[ProgramKey, list[Op]] = {}
    kernels: dict[ProgramKey, list[int]] = {}
    for gpu in range(ranks):
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
    return Replay(programs, kernels, collectives_of)


def replay_programs(
    trace: KinetoTrace,
    spec: LeafSpine,
    *,
    ranks: int,
    comm: CommModel,
    compute_only: bool = False,
    respect_launch: bool = False,
) -> dict[ProgramKey, list[Op]]:
    """Programs that replay ``trace`` on GPUs ``0 .. ranks-1`` of ``spec`` (SPMD, module docstring).

    Keys are ``(gpu, stream)`` with the trace's stream ids (plus ``(gpu, "cpu")`` with
    ``respect_launch``). Per stream, the kernels in issue order: compute, memcpy and memset ops as
    ``Compute(measured duration)`` labelled by kind, communication kernels as one
    :class:`Collective` over all ranks per kernel index (labelled by its comm label, traffic from
    ``comm``), or ``Compute(0)`` with ``compute_only``; every cross-stream dependency as a
    ``Record``/``Wait`` of the event ``(gpu, "dep", before)``.

    Raises:
        ReplayError: more ranks than GPUs, a trace of several devices, an unusable ``comm``.
    """
    return build_replay(
        trace, spec, ranks=ranks, comm=comm, compute_only=compute_only, respect_launch=respect_launch
    ).programs


def compute_only_programs(
    trace: KinetoTrace, *, ranks: int, respect_launch: bool = False
) -> dict[ProgramKey, list[Op]]:
    """The programs of :func:`replay_programs` with every communication kernel taking no time."""
    return build_replay(trace, None, ranks=ranks, compute_only=True, respect_launch=respect_launch).programs


# --------------------------------------------------------------------------------------------------
# running and comparing


@dataclass(frozen=True)
class LabelTimes:
    """Per communication label: kernels per rank, mean measured and mean simulated time (seconds)."""

    label: str
    count: int
    measured: float
    simulated: float


@dataclass
class ReplayOutcome:
    """A replay simulated and compared with its trace. Times in seconds.

    Attributes:
        measured_span: the trace's span.
        dag_span: critical path of the trace's DAG with measured times, launch times treated as in
            the simulation.
        dag_launch_span: the same with launch times respected.
        dag_compute_only: the DAG's critical path with communication = 0 (same launch treatment).
        simulated_span: span of the simulated replay.
        compute_only_span: span of the simulated replay with communication = 0 (simulated on one
            GPU: without collectives the GPUs never interact and all run the same program).
        labels: per communication label, mean measured vs simulated kernel time; a simulated
            kernel lasts from its GPU reaching it to its GPU's part being delivered, so, as in the
            measurement, it includes waiting for the last member to arrive.
        result, compute_only: the two simulations.
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

    @property
    def error(self) -> float:
        """Relative error of the simulated span against the measured span (0.01 = 1 % long)."""
        return self.simulated_span / self.measured_span - 1.0

    @property
    def exposed(self) -> float:
        """Communication time on the simulated critical path: simulated minus compute-only span."""
        return self.simulated_span - self.compute_only_span


def kernel_span(result: SimResult) -> float:
    """First kernel start to last kernel end of a replay simulation (record/wait/CPU ops aside)."""
    ops = result.ops
    kernels = ops[~ops["label"].isin(("record", "wait", "launch", "cpu"))]
    return float(kernels["end"].max() - kernels["start"].min()) if len(kernels) else 0.0


def simulate_replay(
    trace: KinetoTrace,
    spec: LeafSpine,
    *,
    ranks: int,
    comm: CommModel | None = None,
    transport: str | Transport = "ecmp",
    seed: int = 0,
    respect_launch: bool = False,
) -> ReplayOutcome:
    """Simulate the replay of ``trace`` on ``spec`` and its compute-only variant; compare with the trace."""
    comm = CommModel() if comm is None else comm
    transport = parse_transport(transport) if isinstance(transport, str) else transport
    fabric = compile_fabric(spec)
    replay = build_replay(trace, spec, ranks=ranks, comm=comm, respect_launch=respect_launch)
    result = simulate(fabric, replay.programs, transport, seed)
    # Without collectives the GPUs never interact and all run the same program: one is enough.
    alone = compute_only_programs(trace, ranks=1, respect_launch=respect_launch)
    compute_only = simulate(fabric, alone, transport, seed)
    ops = result.ops
    labels = []
    for label in [x for x in COMM_LABELS if any(k.comm == x for k in trace.kernels)]:
        measured = [k.duration for k in trace.kernels if k.comm == label]
        rows = ops[ops["label"] == label]
        simulated = float((rows["end"] - rows["start"]).mean()) if len(rows) else math.nan
        labels.append(LabelTimes(label, len(measured), float(np.mean(measured)), simulated))
    return ReplayOutcome(
        trace=trace,
        spec=spec,
        ranks=ranks,
        transport=transport,
        comm=comm,
        respect_launch=respect_launch,
        measured_span=trace.span,
        dag_span=critical_path(trace, respect_launch=respect_launch),
        dag_launch_span=critical_path(trace, respect_launch=True),
        dag_compute_only=critical_path(trace, lambda k: 0.0, respect_launch=respect_launch),
        simulated_span=kernel_span(result),
        compute_only_span=kernel_span(compute_only),
        labels=labels,
        result=result,
        compute_only=compute_only,
    )


def format_outcome(outcome: ReplayOutcome) -> str:
    """The ``moesim replay`` table."""
    o = outcome
    trace = o.trace
    who = f"rank {trace.rank} of {trace.world_size}" if trace.rank is not None else "rank unknown"
    name = Path(trace.path).name if trace.path else "trace"
    launch = "launch times respected" if o.respect_launch else "launch times ignored (GPU-bound)"
    dispatch = "hierarchical" if o.comm.hierarchical else "direct"
    spec = o.spec
    head = [
        f"replay of {name} ({who}, {len(trace.kernels)} GPU ops on {len(trace.streams)} streams)",
        f"on {o.ranks} of {spec.gpus} GPUs ({spec.hosts} hosts x {spec.gpus_per_host}), NIC "
        f"{spec.nic_bandwidth * 8 / 1e9:g} Gb/s, transport {o.transport}, {dispatch} DeepEP, {launch}",
    ]
    dag_note = f"{o.dag_span / o.measured_span - 1:+.2%} vs trace"
    if not o.respect_launch:
        dag_note += f" ({o.dag_launch_span * 1e3:.3f} ms respecting launch times)"
    ms = "{:10.3f} ms".format
    rows = [
        ("measured span (trace)", ms(o.measured_span * 1e3), ""),
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
    if o.labels:
        lines += ["", f"{'communication kernel':<20}  count  measured ms  simulated ms  ratio"]
        for t in o.labels:
            ratio = t.simulated / t.measured if t.measured > 0 else math.nan
            times = f"{t.measured * 1e3:11.3f}  {t.simulated * 1e3:12.3f}"
            lines.append(f"{t.label:<20}  {t.count:>5}  {times}  {ratio:5.2f}")
    return "\n".join(lines)
