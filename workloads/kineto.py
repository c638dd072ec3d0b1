"""PyTorch-profiler (Kineto) Chrome traces as a DAG of GPU kernels, for replay on a simulated fabric.

``load_kineto(path)`` reads one rank's trace (``.json`` or gzipped ``.json.gz``) and returns a
:class:`KinetoTrace`: every GPU op (``cat`` ``kernel``, ``gpu_memcpy``, ``gpu_memset``) as a
:class:`Kernel` with its measured start and duration, the per-stream FIFO order, the CPU launch time
of each op, and cross-stream dependencies. :func:`critical_path` replays that DAG with measured
compute times and a chosen time for every communication kernel (DeepEP dispatch/combine/notify, NCCL
collectives): with measured times it reproduces the trace's own span; with ``comm_time=lambda k: 0.0``
it gives the compute-only critical path (an infinitely fast network).

Units: the trace's ``ts`` and ``dur`` are µs; everything public here is in **seconds**. Times
(``Kernel.start``, ``Kernel.launch``) are relative to the trace origin, the start of the first GPU
op (``KinetoTrace.origin_us`` keeps its absolute ``ts``), so the first op starts at 0.

What a Kineto trace holds (checked on ``deepseek_profile_train.json``: DeepSeek-V3 training on H800,
EP64, rank 0, 14,240 events)
--------------------------------------------------------------------------------------------------
- GPU ops: ``ph: X`` events with ``ts``/``dur`` (µs) and ``args`` ``device``, ``stream``,
  ``correlation``, ``grid``, ``block``, occupancy; memcpy/memset ops add ``bytes``. That trace has
  963 kernels and 20 memcpy/memset ops on device 0 and three streams: 7 (compute, 907 kernels), 27
  (DeepEP communication plus FP8 casts, 40) and 23 (a side stream for weight-gradient grouped GEMMs,
  16). No NCCL kernel appears. The DeepEP kernels are named ``dpsk::ep::internode::dispatch<...>``,
  ``...::combine<...>``, ``...::notify_dispatch<...>`` and ``...::cached_notify<...>`` (the public
  library's namespace is ``deep_ep::``); ``dpsk::ep::cuda::get_dispatch_layout`` is a local compute
  kernel. **No message sizes**: kernels carry launch geometry only, ``cpu_op`` events were recorded
  without shapes, only memcpy/memset carry ``bytes``. Newer traces give NCCL kernels ``Collective
  name``, ``In msg nelems``, ``Out msg nelems``, ``dtype`` and ``Group size``: when present they
  refine the label and give :attr:`Kernel.nbytes`. NCCL kernel names say the algorithm and
  protocol (``ncclKernel_AllReduce_RING_LL_Sum_float``: :attr:`Kernel.algorithm` ``ring``,
  :attr:`Kernel.protocol` ``LL``; see :mod:`workloads.kineto_names`).
- CPU side: ``cuda_runtime``/``cuda_driver`` events (``cudaLaunchKernel``, ``cudaLaunchKernelExC``,
  ``cuLaunchKernel``, ``cudaMemcpyAsync``, ...) whose ``args.correlation`` equals the GPU op's
  ``args.correlation``; ``ac2g`` flow events (``s`` on the runtime call, ``f`` on the GPU op, ``id`` =
  correlation) say the same and are used when an op lacks ``correlation``. Launches there come from
  two CPU threads (the main thread and the autograd thread). The runtime events carry only
  ``correlation`` and ``cbid``: **no stream and no event handle**. The trace has 56
  ``cudaStreamWaitEvent`` calls and **no ``cudaEventRecord`` at all** (older Kineto filtered it),
  and no ``cuda_sync`` events.

Cross-stream dependencies
-------------------------
Stream order plus one edge per ``cudaStreamWaitEvent`` call: exact from ``cuda_sync`` events where
the trace has them, otherwise inferred from the launch order and the measured times. The rules, and
what they give on the DeepSeek trace, are in :mod:`workloads.kineto_deps`; the NCCL kernel names
(algorithm, protocol) in :mod:`workloads.kineto_names`; whether the trace is bound by CPU launches
in :mod:`workloads.kineto_launch`; traces of several ranks in :mod:`workloads.kineto_ranks`.

Not modelled: SMs shared between concurrent kernels (a kernel on one stream slowed or held back by a
kernel on another; measured durations already include the slowdown), GPU-to-CPU synchronisation
(the CPU waiting on the GPU, e.g. DeepEP's host-side wait for ``notify_dispatch`` counts, shows up
only as late launch times), and the launch latency (a kernel may start at its launch time). With
``respect_launch=True`` every op starts no earlier than its measured launch, which includes those
CPU stalls; ``respect_launch=False`` drops the CPU entirely.
"""

from __future__ import annotations

import bisect
import gzip
import json
import math
from collections import defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

from workloads.kineto_deps import EXPLAIN_US, ROUNDING_US, STALL_US, add_dependencies, order_keys
from workloads.kineto_launch import launch_profile
from workloads.kineto_names import (
    NCCL_ALGORITHMS,
    NCCL_PROTOCOLS,
    NcclKernelName,
    classify,
    nccl_kernel,
    nccl_label,
    nccl_nbytes,
)
from workloads.kineto_types import (
    COMM_LABELS,
    KINDS,
    Kernel,
    KinetoError,
    KinetoTrace,
    StreamWait,
    as_int,
    is_number,
)

__all__ = [
    "COMM_LABELS",
    "EXPLAIN_US",
    "KINDS",
    "NCCL_ALGORITHMS",
    "NCCL_PROTOCOLS",
    "ROUNDING_US",
    "STALL_US",
    "Kernel",
    "KinetoError",
    "KinetoTrace",
    "NcclKernelName",
    "StreamWait",
    "classify",
    "critical_chain",
    "critical_path",
    "load_kineto",
    "nccl_kernel",
    "replay",
    "summary",
]

_GPU_CATS = {
    "kernel": "kernel",
    "gpu_memcpy": "memcpy",
    "memcpy": "memcpy",
    "gpu_memset": "memset",
    "memset": "memset",
}
_RUNTIME_CATS = {"cuda_runtime", "cuda_driver", "runtime", "driver", "hip_runtime"}
_WAIT_CALLS = {"cudaStreamWaitEvent", "cuStreamWaitEvent", "hipStreamWaitEvent"}
_RECORD_CALLS = {"cudaEventRecord", "cudaEventRecordWithFlags", "cuEventRecord", "hipEventRecord"}
_ANNOTATION_CATS = {"user_annotation"}


# --------------------------------------------------------------------------------------------------
# loading


def _device_id(props: object) -> int | None:
    return as_int(props.get("id")) if isinstance(props, dict) else None


def _read_json(path: Path) -> object:
    raw = path.read_bytes()
    if raw[:2] == b"\x1f\x8b":
        try:
            raw = gzip.decompress(raw)
        except (OSError, EOFError) as exc:
            raise KinetoError(f"{path}: broken gzip data ({exc})") from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise KinetoError(f"{path}: not UTF-8 text (byte {exc.start})") from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise KinetoError(f"{path}: not JSON: {exc.msg} at line {exc.lineno} column {exc.colno}") from None


@dataclass
class _Op:
    """A GPU op while loading (µs)."""

    event: int
    name: str
    cat: str
    device: int
    stream: int
    ts: float
    dur: float
    args: dict
    correlation: int | None
    launch: float | None = None
    thread: int | None = None
    pid: object = None
    launch_end: float | None = None


def load_kineto(path: str | Path) -> KinetoTrace:
    """Read a Kineto Chrome trace (``.json``, or gzipped) into a :class:`KinetoTrace`.

    Raises:
        KinetoError: not JSON, no ``traceEvents`` list, a GPU op without numeric ``ts``/``dur`` or
            integer ``args.stream``, or no GPU op at all. The message is one line and names the
            event as ``traceEvents[i]``.
        OSError: the file cannot be read.

    >>> trace = load_kineto("tests/data/traces/deepseek_profile_train.json.gz")  # doctest: +SKIP
    >>> trace.span  # doctest: +SKIP
    0.129012
    """
    path = Path(path)
    data = _read_json(path)
    return _from_data(data, str(path))


def _from_data(data: object, where: str) -> KinetoTrace:
    if not isinstance(data, dict):
        raise KinetoError(f"{where}: expected a JSON object with 'traceEvents', got {type(data).__name__}")
    if "traceEvents" not in data:
        raise KinetoError(f"{where}: no 'traceEvents' (not a Chrome/Kineto trace)")
    events = data["traceEvents"]
    if not isinstance(events, list):
        raise KinetoError(f"{where}: 'traceEvents' is {type(events).__name__}, not a list")

    ops: list[_Op] = []
    # correlation -> (ts, tid, name, pid, end) of the runtime call
    runtime: dict[int, tuple[float, object, str, object, float | None]] = {}
    waits: list[tuple[float, object, int | None]] = []
    records: list[float] = []
    syncs: list[dict] = []
    flow_start: dict[object, tuple[float, object, object]] = {}
    flow_end: dict[tuple[object, object, float], object] = {}
    annotations: list[tuple[float, float, object, object, str]] = []

    for i, ev in enumerate(events):
        if not isinstance(ev, dict):
            raise KinetoError(f"{where}: traceEvents[{i}] is {type(ev).__name__}, not an object")
        cat = ev.get("cat")
        cat = cat.lower() if isinstance(cat, str) else ""
        if cat in _GPU_CATS and ev.get("ph", "X") == "X":
            ops.append(_gpu_op(ev, i, _GPU_CATS[cat], where))
        elif cat in _RUNTIME_CATS:
            ts = ev.get("ts")
            if not is_number(ts):
                raise KinetoError(f"{where}: traceEvents[{i}] ({cat} {ev.get('name')!r}) has no numeric 'ts'")
            args = ev.get("args") if isinstance(ev.get("args"), dict) else {}
            corr = as_int(args.get("correlation"))
            name = str(ev.get("name", ""))
            if corr is not None:
                end = float(ts) + float(ev["dur"]) if is_number(ev.get("dur")) else None
                runtime[corr] = (float(ts), ev.get("tid"), name, ev.get("pid"), end)
            if name in _WAIT_CALLS:
                waits.append((float(ts), ev.get("tid"), corr))
            elif name in _RECORD_CALLS:
                records.append(float(ts))
        elif cat == "cuda_sync":
            syncs.append(ev)
        elif cat == "ac2g" and is_number(ev.get("ts")):
            if ev.get("ph") == "s":
                flow_start[ev.get("id")] = (float(ev["ts"]), ev.get("tid"), ev.get("pid"))
            elif ev.get("ph") == "f":
                flow_end[(ev.get("pid"), ev.get("tid"), float(ev["ts"]))] = ev.get("id")
        elif cat in _ANNOTATION_CATS and is_number(ev.get("ts")) and is_number(ev.get("dur")):
            ts = float(ev["ts"])
            annotations.append((ts, ts + float(ev["dur"]), ev.get("pid"), ev.get("tid"), str(ev.get("name"))))

    if not any(op.cat == "kernel" for op in ops):
        raise KinetoError(f"{where}: no GPU kernel events (cat 'kernel') in {len(events)} trace events")

    for op in ops:  # link each GPU op to the CPU call that launched it
        call = runtime.get(op.correlation) if op.correlation is not None else None
        if call is not None:
            op.launch, op.thread, op.pid, op.launch_end = call[0], as_int(call[1]), call[3], call[4]
            continue
        flow = flow_end.get((op.pid, op.stream, op.ts))
        if flow is not None and flow in flow_start:
            op.launch, tid, op.pid = flow_start[flow]
            op.thread = as_int(tid)

    origin = min(op.ts for op in ops)
    ops.sort(key=lambda o: (o.device, o.stream, o.ts, math.inf if o.launch is None else o.launch, o.event))
    annotate = _annotator(annotations)
    kernels: list[Kernel] = []
    streams: dict[tuple[int, int], list[int]] = {}
    for index, op in enumerate(ops):
        if op.cat == "kernel":
            kind, comm = classify(op.name)
            if kind in ("memcpy", "memset"):  # a kernel event whose name merely starts so
                kind, comm = "compute", None
        else:
            kind, comm = op.cat, None
        nbytes = as_int(op.args.get("bytes")) if kind in ("memcpy", "memset") else None
        algorithm = protocol = None
        if comm is not None and comm.startswith("nccl"):
            named = nccl_kernel(op.name)
            if named is not None:
                algorithm, protocol = named.algorithm, named.protocol
            collective = op.args.get("Collective name")
            if isinstance(collective, str):
                comm = nccl_label(collective) or comm
            nbytes = nccl_nbytes(op.args, comm)
        kernels.append(
            Kernel(
                index=index,
                name=op.name,
                device=op.device,
                stream=op.stream,
                start=(op.ts - origin) * 1e-6,
                duration=op.dur * 1e-6,
                kind=kind,
                comm=comm,
                correlation=op.correlation,
                args=op.args,
                launch=None if op.launch is None else (op.launch - origin) * 1e-6,
                thread=op.thread,
                nbytes=nbytes,
                annotation=None if op.launch is None else annotate(op.launch, op.pid, op.thread),
                algorithm=algorithm,
                protocol=protocol,
                launch_end=None if op.launch_end is None else (op.launch_end - origin) * 1e-6,
            )
        )
        streams.setdefault((op.device, op.stream), []).append(index)

    span = max(k.end for k in kernels) - min(k.start for k in kernels)
    distributed = data.get("distributedInfo") if isinstance(data.get("distributedInfo"), dict) else {}
    props = data.get("deviceProperties") if isinstance(data.get("deviceProperties"), list) else []
    trace = KinetoTrace(
        kernels=kernels,
        streams=streams,
        dependencies=[],
        rank=as_int(distributed.get("rank")),
        world_size=as_int(distributed.get("world_size")),
        device_properties={as_int(p.get("id")): p for p in props if _device_id(p) is not None},
        span=span,
        origin_us=float(origin),
        path=where,
        distributed=dict(distributed),
    )
    add_dependencies(trace, waits, records, syncs, runtime)
    return trace


def _gpu_op(ev: dict, i: int, cat: str, where: str) -> _Op:
    name = ev.get("name")
    label = f"traceEvents[{i}] ({cat} {str(name)[:60]!r})"
    for key in ("ts", "dur"):
        if key not in ev:
            raise KinetoError(f"{where}: {label} has no '{key}'")
        if not is_number(ev[key]):
            raise KinetoError(f"{where}: {label} has a non-numeric '{key}': {ev[key]!r}")
    if ev["dur"] < 0:
        raise KinetoError(f"{where}: {label} has a negative 'dur': {ev['dur']!r}")
    args = ev.get("args")
    if not isinstance(args, dict):
        raise KinetoError(f"{where}: {label} has no 'args' object (needs args.stream)")
    if "stream" not in args:
        raise KinetoError(f"{where}: {label} has no 'args.stream'")
    stream = as_int(args["stream"])
    if stream is None:
        raise KinetoError(f"{where}: {label} has a non-integer 'args.stream': {args['stream']!r}")
    device = as_int(args.get("device", ev.get("pid")))
    if device is None:
        raise KinetoError(f"{where}: {label} has no integer 'args.device' (nor an integer pid)")
    return _Op(
        event=i,
        name=str(name),
        cat=cat,
        device=device,
        stream=stream,
        ts=float(ev["ts"]),
        dur=float(ev["dur"]),
        args=args,
        correlation=as_int(args.get("correlation")),
        pid=ev.get("pid"),
    )


def _annotator(
    annotations: list[tuple[float, float, object, object, str]],
) -> Callable[[float, object, int | None], str | None]:
    """A function (µs, pid, tid) -> innermost annotation around it, same thread first, then process."""
    by_thread: dict[tuple[object, object], list[tuple[float, float, str]]] = defaultdict(list)
    by_process: dict[object, list[tuple[float, float, str]]] = defaultdict(list)
    for start, end, pid, tid, name in sorted(annotations):
        by_thread[(pid, as_int(tid))].append((start, end, name))
        by_process[pid].append((start, end, name))
    starts_t = {key: [a[0] for a in v] for key, v in by_thread.items()}
    starts_p = {key: [a[0] for a in v] for key, v in by_process.items()}

    def innermost(items: list[tuple[float, float, str]], starts: list[float], t: float) -> str | None:
        for j in range(bisect.bisect_right(starts, t) - 1, -1, -1):
            if items[j][1] >= t:
                return items[j][2]
        return None

    def annotate(t: float, pid: object, tid: int | None) -> str | None:
        key = (pid, tid)
        found = innermost(by_thread[key], starts_t[key], t) if key in by_thread else None
        if found is None and pid in by_process:
            found = innermost(by_process[pid], starts_p[pid], t)
        return found

    return annotate


# --------------------------------------------------------------------------------------------------
# replay


def _durations(trace: KinetoTrace, comm_time: Callable[[Kernel], float] | None) -> list[float]:
    out = []
    for k in trace.kernels:
        if comm_time is not None and k.kind == "communication":
            d = comm_time(k)
            if not is_number(d) or d < 0:
                raise ValueError(
                    f"comm_time gave {d!r} s for kernel {k.index} ({k.comm}): need a finite s >= 0"
                )
            out.append(float(d))
        else:
            out.append(k.duration)
    return out


def _topological(trace: KinetoTrace) -> list[int]:
    """Kernel indices in :func:`workloads.kineto_deps.order_keys` order: every predecessor comes first."""
    keys = order_keys(trace)
    return sorted(range(len(trace.kernels)), key=keys.__getitem__)


def replay(
    trace: KinetoTrace,
    comm_time: Callable[[Kernel], float] | None = None,
    *,
    respect_launch: bool = True,
) -> tuple[list[float], list[float]]:
    """Earliest start and end (seconds after the origin) of every kernel in the DAG.

    A kernel starts when its stream predecessor and its dependencies have ended, not before 0, and
    with ``respect_launch`` not before its measured CPU launch. Compute, memcpy and memset ops keep
    their measured duration; communication kernels take ``comm_time(kernel)`` seconds (measured when
    ``comm_time`` is None).
    """
    durations = _durations(trace, comm_time)
    preds = trace.predecessors()
    start = [0.0] * len(trace.kernels)
    end = [0.0] * len(trace.kernels)
    for i in _topological(trace):
        t = max((end[p] for p in preds[i]), default=0.0)
        launch = trace.kernels[i].launch
        if respect_launch and launch is not None and launch > t:
            t = launch
        start[i] = max(t, 0.0)
        end[i] = start[i] + durations[i]
    return start, end


def critical_path(
    trace: KinetoTrace,
    comm_time: Callable[[Kernel], float] | None = None,
    *,
    respect_launch: bool = True,
) -> float:
    """Span (seconds) of the replayed DAG: first start to last end (see :func:`replay`).

    With measured times this reproduces :attr:`KinetoTrace.span` up to what the DAG does not model
    (about 0.4 % short on the DeepSeek trace); ``comm_time=lambda k: 0.0`` gives the compute-only
    critical path.

    >>> critical_path(trace) / trace.span  # doctest: +SKIP
    0.9956
    """
    start, end = replay(trace, comm_time, respect_launch=respect_launch)
    return max(end) - min(start)


def critical_chain(
    trace: KinetoTrace,
    comm_time: Callable[[Kernel], float] | None = None,
    *,
    respect_launch: bool = True,
) -> list[int]:
    """Kernel indices of one critical chain of the replay, first to last: from the last kernel to
    end, repeatedly the predecessor whose end set its start, until a start set by a launch or 0."""
    start, end = replay(trace, comm_time, respect_launch=respect_launch)
    preds = trace.predecessors()
    i = max(range(len(end)), key=lambda j: (end[j], -j))
    chain = [i]
    while True:
        binding = [p for p in preds[i] if end[p] >= start[i] - 1e-12 and end[p] > 0.0]
        if not binding:
            break
        i = max(binding, key=lambda p: end[p])
        chain.append(i)
    return chain[::-1]


# --------------------------------------------------------------------------------------------------
# summary


def _labels(kernels: Iterable[Kernel]) -> list[str]:
    seen = {k.comm or k.kind for k in kernels}
    return [x for x in ("compute", *COMM_LABELS, "memcpy", "memset") if x in seen]


def summary(trace: KinetoTrace) -> str:
    """A small table: per stream the op count and busy time (ms) by kind/label, then the span, the
    replayed critical paths, how much communication time the critical path exposes, and whether
    the GPU waited for CPU launches (:func:`workloads.kineto_launch.launch_profile`)."""
    labels = _labels(trace.kernels)
    head = ["stream", "ops", "busy ms", *labels]
    rows = []
    for (device, stream), order in sorted(trace.streams.items()):
        ks = [trace.kernels[i] for i in order]
        busy = defaultdict(float)
        for k in ks:
            busy[k.comm or k.kind] += k.duration
        row = [f"dev{device}/s{stream}", str(len(ks)), f"{sum(busy.values()) * 1e3:.3f}"]
        rows.append(row + [f"{busy[x] * 1e3:.3f}" if x in busy else "-" for x in labels])
    widths = [max(len(r[c]) for r in [head, *rows]) for c in range(len(head))]
    fmt = "  ".join(f"{{:<{w}}}" if c == 0 else f"{{:>{w}}}" for c, w in enumerate(widths))
    comm_total = sum(k.duration for k in trace.kernels if k.kind == "communication")
    measured = critical_path(trace)
    no_comm = critical_path(trace, lambda k: 0.0)
    exposed = max(measured - no_comm, 0.0)
    origins = defaultdict(int)
    for o in trace.dependency_origin:
        origins[o] += 1
    who = f"rank {trace.rank} of {trace.world_size}" if trace.rank is not None else "rank unknown"
    lines = [
        f"Kineto trace ({who}): {len(trace.kernels)} GPU ops on {len(trace.streams)} streams, "
        f"span {trace.span * 1e3:.3f} ms",
        fmt.format(*head),
        *(fmt.format(*r) for r in rows),
        f"cross-stream dependencies: {len(trace.dependencies)} from {len(trace.waits)} stream waits "
        f"({', '.join(f'{n} {o}' for o, n in sorted(origins.items())) or 'none'})",
        f"critical path, measured times: {measured * 1e3:.3f} ms ({measured / trace.span:.2%} of the span)",
        f"critical path, communication = 0: {no_comm * 1e3:.3f} ms",
    ]
    if comm_total > 0:
        lines.append(
            f"communication exposed on the critical path: {exposed * 1e3:.3f} ms = "
            f"{exposed / comm_total:.1%} of {comm_total * 1e3:.3f} ms communication time "
            f"({exposed / measured:.1%} of the critical path)"
        )
    else:
        lines.append("no communication kernels")
    lines.append(launch_profile(trace).verdict())
    return "\n".join(lines)
