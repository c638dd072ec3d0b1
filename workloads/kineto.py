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
  refine the label and give :attr:`Kernel.nbytes`.
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
*Exact* (traces taken with ``enable_cuda_sync_events``): a ``cuda_sync`` "Stream Wait Event" names
the waiting ``stream``, the recording ``wait_on_stream`` and ``wait_on_cuda_event_record_corr_id``,
the correlation of the ``cudaEventRecord`` call. The edge is X → Y with X the last op launched on
``wait_on_stream`` before that record call (before the wait call if the record is missing) and Y the
first op launched on ``stream`` after the ``cudaStreamWaitEvent`` call.

*Inferred* (every other ``cudaStreamWaitEvent``, e.g. all of the DeepSeek trace). What is known for
sure: a wait at CPU time t makes every op launched on the waiting stream B after t (from any thread)
wait for the completion of everything launched on the recording stream A before the record time
t_r <= t; stream order then makes the first such op, Y_B, the one that matters. Unknown: A, B and
t_r. Each wait becomes one edge X → Y_B, chosen among hypotheses (A, B):

1. Y_B = the first op launched on B after t; X = the last op launched on A before t (the common
   "record, then wait" idiom, ``stream_wait`` in DeepEP, ``wait_stream`` in PyTorch).
2. The measurement must allow it: every op launched on A up to X ended by start(Y_B) (+1 µs of
   rounding). If not, the event was recorded earlier (DeepEP's ``previous_event``, an async event
   waited on later): X steps back to the latest op that passes. With ``cudaEventRecord`` calls in the
   trace, X must also be the last op launched on A before some record call.
3. Among the surviving hypotheses, prefer, in order: (a) one that explains a measured stall: Y_B
   started more than 10 µs after both its launch and its stream predecessor's end, within 50 µs of
   X's end, and no earlier edge explained it; (b) B = the stream of the next op launched by the
   same CPU thread (the wait guards the work that follows it); (c) the most recently launched X.
   An edge already chosen is never chosen twice.

On the DeepSeek trace this yields 54 edges from 56 waits (22 explain a stall, 20 are "record right
before the wait", 12 stepped back; the first wait precedes every launch and nothing is launched after
the last): 7 -> 27 before DeepEP kernels, 27 -> 7 where compute consumes their output, 7 <-> 23
around the weight-gradient GEMMs. Every inferred edge is consistent with the measured times, so the
measured schedule is a feasible schedule of the DAG. Replayed with measured times the DAG spans
128.438 ms against the trace's 129.012 ms (99.56 %); with communication = 0 it spans 125.334 ms
(compute-bound: stream 7 alone is busy 118.2 ms), with every communication kernel twice as long
227.6 ms (stream 27 is busy 114.5 ms, 113.0 ms of it DeepEP kernels, whose measured time includes
waiting for the 63 peers). What cannot be known: whether an edge that never bound in the measurement
exists at all, or which earlier op a stepped-back X really is; a false edge that never bound can
only delay a what-if replay, a missing one can only speed it up.

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
import re
from collections import defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

KINDS = ("compute", "communication", "memcpy", "memset")
COMM_LABELS = (
    "deepep_dispatch",
    "deepep_combine",
    "deepep_notify",
    "deepep_other",
    "nccl_all_reduce",
    "nccl_all_gather",
    "nccl_reduce_scatter",
    "nccl_all_to_all",
    "nccl_send_recv",
    "nccl_broadcast",
    "nccl_reduce",
    "nccl_other",
)

ROUNDING_US = 1.0
"""Slack (µs) when comparing a trace's integer-µs end and start times."""
STALL_US = 10.0
"""An op stalled if it started this much (µs) after both its launch and its stream predecessor."""
EXPLAIN_US = 50.0
"""A dependency explains a stall if the op started within this many µs after the dependency ended."""

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

_DEEPEP = re.compile(r"\b(?:deep_ep|dpsk::ep)::(?:intranode|internode)\w*::(\w+)")
_NCCL = re.compile(r"(?:^|[^A-Za-z0-9])nccl", re.IGNORECASE)
_NCCL_OPS = (  # most specific first: "AllReduce" and "ReduceScatter" both contain "Reduce"
    ("reducescatter", "nccl_reduce_scatter"),
    ("allreduce", "nccl_all_reduce"),
    ("allgather", "nccl_all_gather"),
    ("alltoall", "nccl_all_to_all"),
    ("sendrecv", "nccl_send_recv"),
    ("send", "nccl_send_recv"),
    ("recv", "nccl_send_recv"),
    ("broadcast", "nccl_broadcast"),
    ("reduce", "nccl_reduce"),
)
_DTYPE_BYTES = {
    "float": 4, "float32": 4, "double": 8, "float64": 8, "half": 2, "float16": 2, "bfloat16": 2,
    "long": 8, "int64": 8, "int": 4, "int32": 4, "short": 2, "int16": 2, "char": 1, "int8": 1,
    "byte": 1, "uint8": 1, "bool": 1, "complexfloat": 8, "complexdouble": 16,
}  # fmt: skip


class KinetoError(ValueError):
    """A trace file that is not a usable Kineto trace; the message is one line."""


@dataclass(frozen=True)
class Kernel:
    """One GPU op of the trace: a kernel, a memcpy or a memset.

    Attributes:
        index: global id, the position in :attr:`KinetoTrace.kernels`.
        name: the op's name as in the trace (demangled kernel signature, ``Memcpy DtoD ...``).
        device: GPU index (``args.device``).
        stream: CUDA stream id (``args.stream``).
        start: measured start, seconds after the trace origin (the first GPU op's start).
        duration: measured duration, seconds.
        kind: ``compute``, ``communication``, ``memcpy`` or ``memset``.
        comm: for communication kernels a short label (:data:`COMM_LABELS`), else None.
        correlation: ``args.correlation``, the id shared with the CPU runtime call that launched it.
        args: the raw ``args`` of the event.
        launch: CPU time of the launching runtime call (its ``ts``), seconds after the trace origin
            (negative when it precedes the first GPU op), None if no runtime call matches.
        thread: CPU thread id (``tid``) of the launching call, None if unknown.
        nbytes: bytes moved, when the trace says: ``bytes`` of a memcpy/memset; for NCCL kernels with
            message metadata, the nccl-tests ``size`` of the op (all-gather: the gathered output,
            otherwise the input buffer). None otherwise (DeepEP kernels never carry sizes).
        annotation: innermost ``user_annotation`` (``record_function``) around the launch, if any.
    """

    index: int
    name: str
    device: int
    stream: int
    start: float
    duration: float
    kind: str
    comm: str | None
    correlation: int | None
    args: dict = field(default_factory=dict, compare=False, repr=False)
    launch: float | None = None
    thread: int | None = None
    nbytes: int | None = None
    annotation: str | None = None

    @property
    def end(self) -> float:
        """Measured end, seconds after the trace origin."""
        return self.start + self.duration


@dataclass(frozen=True)
class StreamWait:
    """One ``cudaStreamWaitEvent`` call and the dependency it was turned into.

    Attributes:
        time: CPU time of the call, seconds after the trace origin.
        thread: CPU thread id of the call.
        correlation: the call's ``args.correlation``.
        edge: ``(before, after)`` kernel indices, or None if no hypothesis survived.
        origin: ``cuda_sync`` (exact), ``inferred`` (record right before the wait), ``stepped_back``
            (the record must have been earlier), ``stall`` (the edge explains a measured stall), or
            ``none``.
    """

    time: float
    thread: int | None
    correlation: int | None
    edge: tuple[int, int] | None
    origin: str


@dataclass
class KinetoTrace:
    """A parsed Kineto trace: GPU ops, stream order and cross-stream dependencies (seconds).

    Attributes:
        kernels: every GPU op, sorted by (device, stream, start); ``kernels[i].index == i``.
        streams: (device, stream) -> kernel indices in issue (FIFO) order, which is start order.
        dependencies: cross-stream edges ``(before, after)``: ``after`` may not start before
            ``before`` ends. Stream order is not repeated here.
        dependency_origin: per edge, how it was found (see :class:`StreamWait`).
        waits: every ``cudaStreamWaitEvent`` call in time order, with its edge.
        rank, world_size: from ``distributedInfo``, None if absent.
        device_properties: ``deviceProperties`` keyed by device id.
        span: first GPU op start to last GPU op end, seconds.
        origin_us: absolute ``ts`` (µs) of the first GPU op: the time origin.
        path: the file read, if any.
    """

    kernels: list[Kernel]
    streams: dict[tuple[int, int], list[int]]
    dependencies: list[tuple[int, int]]
    rank: int | None
    world_size: int | None
    device_properties: dict[int, dict]
    span: float
    origin_us: float
    dependency_origin: list[str] = field(default_factory=list)
    waits: list[StreamWait] = field(default_factory=list)
    path: str | None = None

    @property
    def communication(self) -> list[Kernel]:
        """The communication kernels, in :attr:`kernels` order."""
        return [k for k in self.kernels if k.kind == "communication"]

    def predecessors(self) -> list[list[int]]:
        """Per kernel, the kernels it waits for: its stream predecessor and its dependencies."""
        preds: list[list[int]] = [[] for _ in self.kernels]
        for order in self.streams.values():
            for a, b in zip(order, order[1:], strict=False):
                preds[b].append(a)
        for a, b in self.dependencies:
            preds[b].append(a)
        return preds


# --------------------------------------------------------------------------------------------------
# classification


def classify(name: str) -> tuple[str, str | None]:
    """The ``(kind, comm)`` of a GPU op from its name alone.

    ``kind`` is ``communication`` for DeepEP kernels in an ``intranode``/``internode``/
    ``internode_ll`` namespace (``deep_ep::`` or ``dpsk::ep::``; ``get_dispatch_layout`` is local
    compute) and for NCCL/RCCL kernels; ``memcpy``/``memset`` for ``Memcpy ...``/``Memset ...``;
    otherwise ``compute``.

    >>> classify("void dpsk::ep::internode::combine<false, 8>(int4*, float*)")
    ('communication', 'deepep_combine')
    >>> classify("ncclDevKernel_AllGather_RING_LL(ncclDevKernelArgsStorage<4096ul>)")
    ('communication', 'nccl_all_gather')
    >>> classify("Memcpy DtoD (Device -> Device)")
    ('memcpy', None)
    """
    if name.startswith("Memcpy"):
        return "memcpy", None
    if name.startswith("Memset"):
        return "memset", None
    head = name.replace("(anonymous namespace)", "").split("(", 1)[0]  # the function, not its arguments
    match = _DEEPEP.search(head)
    if match:
        func = match.group(1)
        if func == "get_dispatch_layout":
            return "compute", None
        if func == "dispatch":
            return "communication", "deepep_dispatch"
        if func == "combine":
            return "communication", "deepep_combine"
        if "notify" in func or "barrier" in func or "clean" in func:
            return "communication", "deepep_notify"
        return "communication", "deepep_other"
    if _NCCL.search(head):
        for token, label in _NCCL_OPS:
            if token in head.lower():
                return "communication", label
        return "communication", "nccl_other"
    return "compute", None


def _nccl_label(collective: str) -> str | None:
    """Label from PyTorch's ``Collective name`` (``all_reduce``, ``_allgather_base``, ...)."""
    key = collective.lower().replace("_", "")
    if key.startswith("barrier"):
        return "nccl_all_reduce"
    for token, label in _NCCL_OPS:
        if token in key:
            return label
    return None


def _nccl_nbytes(args: dict, label: str | None) -> int | None:
    """nccl-tests ``size`` of an NCCL kernel from its message metadata, None when absent."""
    elem = _DTYPE_BYTES.get(str(args.get("dtype", "")).lower())
    if elem is None and str(args.get("dtype", "")).lower().startswith("float8"):
        elem = 1
    key = "Out msg nelems" if label == "nccl_all_gather" else "In msg nelems"
    nelems = args.get(key)
    if elem is None or not _is_number(nelems) or nelems < 0:
        return None
    return int(nelems) * elem


# --------------------------------------------------------------------------------------------------
# loading


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _as_int(value: object) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, str) and value.strip().lstrip("-").isdigit() and value.strip().isascii():
        return int(value)
    return None


def _device_id(props: object) -> int | None:
    return _as_int(props.get("id")) if isinstance(props, dict) else None


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


def load_kineto(path: str | Path) -> KinetoTrace:
    """Read a Kineto Chrome trace (``.json``, or gzipped) into a :class:`KinetoTrace`.

    Raises:
        KinetoError: not JSON, no ``traceEvents`` list, a GPU op without numeric ``ts``/``dur`` or
            integer ``args.stream``, or no GPU op at all. The message is one line and names the
            event as ``traceEvents[i]``.
        OSError: the file cannot be read.

    >>> trace = load_kineto("../shared/data/deepseek_profile_train.json")  # doctest: +SKIP
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
    runtime: dict[int, tuple[float, object, str, object]] = {}  # correlation -> (ts, tid, name, pid)
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
            if not _is_number(ts):
                raise KinetoError(f"{where}: traceEvents[{i}] ({cat} {ev.get('name')!r}) has no numeric 'ts'")
            args = ev.get("args") if isinstance(ev.get("args"), dict) else {}
            corr = _as_int(args.get("correlation"))
            name = str(ev.get("name", ""))
            if corr is not None:
                runtime[corr] = (float(ts), ev.get("tid"), name, ev.get("pid"))
            if name in _WAIT_CALLS:
                waits.append((float(ts), ev.get("tid"), corr))
            elif name in _RECORD_CALLS:
                records.append(float(ts))
        elif cat == "cuda_sync":
            syncs.append(ev)
        elif cat == "ac2g" and _is_number(ev.get("ts")):
            if ev.get("ph") == "s":
                flow_start[ev.get("id")] = (float(ev["ts"]), ev.get("tid"), ev.get("pid"))
            elif ev.get("ph") == "f":
                flow_end[(ev.get("pid"), ev.get("tid"), float(ev["ts"]))] = ev.get("id")
        elif cat in _ANNOTATION_CATS and _is_number(ev.get("ts")) and _is_number(ev.get("dur")):
            ts = float(ev["ts"])
            annotations.append((ts, ts + float(ev["dur"]), ev.get("pid"), ev.get("tid"), str(ev.get("name"))))

    if not any(op.cat == "kernel" for op in ops):
        raise KinetoError(f"{where}: no GPU kernel events (cat 'kernel') in {len(events)} trace events")

    for op in ops:  # link each GPU op to the CPU call that launched it
        call = runtime.get(op.correlation) if op.correlation is not None else None
        if call is not None:
            op.launch, op.thread, op.pid = call[0], _as_int(call[1]), call[3]
            continue
        flow = flow_end.get((op.pid, op.stream, op.ts))
        if flow is not None and flow in flow_start:
            op.launch, tid, op.pid = flow_start[flow]
            op.thread = _as_int(tid)

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
        nbytes = _as_int(op.args.get("bytes")) if kind in ("memcpy", "memset") else None
        if comm is not None and comm.startswith("nccl"):
            collective = op.args.get("Collective name")
            if isinstance(collective, str):
                comm = _nccl_label(collective) or comm
            nbytes = _nccl_nbytes(op.args, comm)
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
        rank=_as_int(distributed.get("rank")),
        world_size=_as_int(distributed.get("world_size")),
        device_properties={_as_int(p.get("id")): p for p in props if _device_id(p) is not None},
        span=span,
        origin_us=float(origin),
        path=where,
    )
    _add_dependencies(trace, waits, records, syncs, runtime)
    return trace


def _gpu_op(ev: dict, i: int, cat: str, where: str) -> _Op:
    name = ev.get("name")
    label = f"traceEvents[{i}] ({cat} {str(name)[:60]!r})"
    for key in ("ts", "dur"):
        if key not in ev:
            raise KinetoError(f"{where}: {label} has no '{key}'")
        if not _is_number(ev[key]):
            raise KinetoError(f"{where}: {label} has a non-numeric '{key}': {ev[key]!r}")
    if ev["dur"] < 0:
        raise KinetoError(f"{where}: {label} has a negative 'dur': {ev['dur']!r}")
    args = ev.get("args")
    if not isinstance(args, dict):
        raise KinetoError(f"{where}: {label} has no 'args' object (needs args.stream)")
    if "stream" not in args:
        raise KinetoError(f"{where}: {label} has no 'args.stream'")
    stream = _as_int(args["stream"])
    if stream is None:
        raise KinetoError(f"{where}: {label} has a non-integer 'args.stream': {args['stream']!r}")
    device = _as_int(args.get("device", ev.get("pid")))
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
        correlation=_as_int(args.get("correlation")),
        pid=ev.get("pid"),
    )


def _annotator(
    annotations: list[tuple[float, float, object, object, str]],
) -> Callable[[float, object, int | None], str | None]:
    """A function (µs, pid, tid) -> innermost annotation around it, same thread first, then process."""
    by_thread: dict[tuple[object, object], list[tuple[float, float, str]]] = defaultdict(list)
    by_process: dict[object, list[tuple[float, float, str]]] = defaultdict(list)
    for start, end, pid, tid, name in sorted(annotations):
        by_thread[(pid, _as_int(tid))].append((start, end, name))
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
# dependencies


class _StreamIndex:
    """Per (device, stream): launched ops in FIFO order with running maxima of launch and end (µs
    after the origin), so that "launched before/after t" and "ended by t" are binary searches."""

    def __init__(self, trace: KinetoTrace) -> None:
        self.ops: dict[tuple[int, int], list[int]] = {}
        self.launch_max: dict[tuple[int, int], list[float]] = {}
        self.end_max: dict[tuple[int, int], list[float]] = {}
        for key, order in trace.streams.items():
            launched = [i for i in order if trace.kernels[i].launch is not None]
            lmax, emax, lm, em = [], [], -math.inf, -math.inf
            for i in launched:
                k = trace.kernels[i]
                lm = max(lm, k.launch * 1e6)  # type: ignore[operator]
                em = max(em, k.end * 1e6)
                lmax.append(lm)
                emax.append(em)
            self.ops[key], self.launch_max[key], self.end_max[key] = launched, lmax, emax

    def first_after(self, key: tuple[int, int], t: float) -> int | None:
        """The first op launched on ``key`` after ``t`` (µs), or None."""
        j = bisect.bisect_right(self.launch_max[key], t)
        return self.ops[key][j] if j < len(self.ops[key]) else None

    def last_before(self, key: tuple[int, int], t: float) -> int:
        """Position in ``ops[key]`` of the last op launched before ``t`` (µs); -1 if none."""
        return bisect.bisect_left(self.launch_max[key], t) - 1

    def last_ended_by(self, key: tuple[int, int], t: float) -> int:
        """Position in ``ops[key]`` of the last op such that it and all before it ended by ``t``."""
        return bisect.bisect_right(self.end_max[key], t) - 1


def _order_keys(trace: KinetoTrace) -> list[tuple[float, int, int, int]]:
    """Per kernel (start, device, stream, FIFO position): a total order that every edge follows."""
    keys: list[tuple[float, int, int, int]] = [(0.0, 0, 0, 0)] * len(trace.kernels)
    for (device, stream), order in trace.streams.items():
        for pos, i in enumerate(order):
            keys[i] = (trace.kernels[i].start, device, stream, pos)
    return keys


def _add_dependencies(
    trace: KinetoTrace,
    waits: list[tuple[float, object, int | None]],
    records: list[float],
    syncs: list[dict],
    runtime: dict[int, tuple[float, object, str, object]],
) -> None:
    """Fill ``trace.dependencies``, ``dependency_origin`` and ``waits`` (see the module docstring).
    CPU times come in absolute µs."""
    kernels = trace.kernels
    origin = trace.origin_us
    index = _StreamIndex(trace)
    keys = _order_keys(trace)
    edges: dict[tuple[int, int], str] = {}

    def forward(x: int, y: int) -> bool:
        return keys[x][1:3] != keys[y][1:3] and keys[x] < keys[y]

    exact: set[int] = set()
    for ev in syncs:  # exact edges from cuda_sync "Stream Wait Event"
        args = ev.get("args") if isinstance(ev.get("args"), dict) else {}
        device = _as_int(args.get("device", ev.get("pid")))
        stream, source = _as_int(args.get("stream")), _as_int(args.get("wait_on_stream"))
        corr = _as_int(args.get("correlation"))
        if str(ev.get("name", "")).lower() != "stream wait event" or corr not in runtime:
            continue
        if device is None or stream is None or source is None or source < 0:
            continue
        wait_ts = runtime[corr][0] - origin
        record = runtime.get(_as_int(args.get("wait_on_cuda_event_record_corr_id")) or -1)
        record_ts = record[0] - origin if record is not None else wait_ts
        a_key, b_key = (device, source), (device, stream)
        if a_key not in index.ops or b_key not in index.ops:
            continue
        exact.add(corr)
        y = index.first_after(b_key, wait_ts)
        jx = index.last_before(a_key, record_ts)
        edge = None
        if y is not None and jx >= 0 and forward(index.ops[a_key][jx], y):
            edge = (index.ops[a_key][jx], y)
            edges.setdefault(edge, "cuda_sync")
        thread = _as_int(runtime[corr][1])
        trace.waits.append(StreamWait(wait_ts * 1e-6, thread, corr, edge, "cuda_sync" if edge else "none"))

    by_thread: dict[int | None, list[tuple[float, int]]] = defaultdict(list)
    for k in kernels:
        if k.launch is not None:
            by_thread[k.thread].append((k.launch * 1e6, k.index))
    for launches in by_thread.values():
        launches.sort()
    records = sorted(r - origin for r in records)
    stalled = _stalls(trace)
    explained: set[int] = set()
    for ts_abs, tid, corr in sorted(waits, key=lambda w: w[0]):
        if corr is not None and corr in exact:
            continue
        ts = ts_abs - origin
        thread = _as_int(tid)
        launches = by_thread.get(thread, [])
        j = bisect.bisect_right(launches, (ts, math.inf))
        nxt = kernels[launches[j][1]] if j < len(launches) else None
        near = nxt or (kernels[launches[j - 1][1]] if j > 0 else None)
        best = None
        if near is not None:
            best = _best_hypothesis(trace, index, near.device, ts, nxt, records, stalled, explained, edges)
        if best is not None and not forward(best[0], best[1]):
            best = None
        if best is None:
            trace.waits.append(StreamWait(ts * 1e-6, thread, corr, None, "none"))
            continue
        x, y, how = best
        if how == "stall":
            explained.add(y)
        edges[(x, y)] = how
        trace.waits.append(StreamWait(ts * 1e-6, thread, corr, (x, y), how))

    trace.waits.sort(key=lambda w: w.time)
    ordered = sorted(edges, key=lambda e: (keys[e[1]], keys[e[0]]))
    trace.dependencies = ordered
    trace.dependency_origin = [edges[e] for e in ordered]


def _stalls(trace: KinetoTrace) -> set[int]:
    """Ops that started more than STALL_US after both their launch and their stream predecessor."""
    out = set()
    for order in trace.streams.values():
        prev_end = -math.inf
        for i in order:
            k = trace.kernels[i]
            ready = prev_end if k.launch is None else max(prev_end, k.launch)
            if (k.start - ready) * 1e6 > STALL_US:
                out.add(i)
            prev_end = max(prev_end, k.end)
    return out


def _best_hypothesis(
    trace: KinetoTrace,
    index: _StreamIndex,
    device: int,
    ts: float,
    nxt: Kernel | None,
    records: list[float],
    stalled: set[int],
    explained: set[int],
    edges: dict[tuple[int, int], str],
) -> tuple[int, int, str] | None:
    """The (X, Y, origin) that a wait at CPU time ``ts`` (µs after the origin) most plausibly
    stands for, or None; the rules are those of the module docstring."""
    kernels = trace.kernels
    keys = [key for key in index.ops if key[0] == device]
    next_key = None if nxt is None else (nxt.device, nxt.stream)
    best: tuple[tuple[bool, bool, float], int, int, str] | None = None
    for b_key in keys:
        y = index.first_after(b_key, ts)
        if y is None:
            continue
        for a_key in keys:
            if a_key == b_key:
                continue
            top = index.last_before(a_key, ts)
            ended = index.last_ended_by(a_key, kernels[y].start * 1e6 + ROUNDING_US)
            pos = _recorded(index, a_key, min(top, ended), ts, records)
            if pos < 0:
                continue
            x = index.ops[a_key][pos]
            if (x, y) in edges:
                continue
            stall = (
                y in stalled
                and y not in explained
                and (kernels[y].start - kernels[x].end) * 1e6 <= EXPLAIN_US
            )
            how = "stall" if stall else ("inferred" if pos == top else "stepped_back")
            score = (stall, b_key == next_key, index.launch_max[a_key][pos])
            if best is None or score > best[0]:
                best = (score, x, y, how)
    return None if best is None else best[1:]


def _recorded(index: _StreamIndex, key: tuple[int, int], pos: int, ts: float, records: list[float]) -> int:
    """Step ``pos`` back until the op there is the last one launched on ``key`` before some
    ``cudaEventRecord`` call made before ``ts``; unchanged when the trace has no record calls."""
    if not records:
        return pos
    launch_max = index.launch_max[key]
    while pos >= 0:
        hi = min(launch_max[pos + 1] if pos + 1 < len(launch_max) else math.inf, ts)
        j = bisect.bisect_left(records, launch_max[pos])
        if j < len(records) and records[j] < hi:
            return pos
        pos -= 1
    return -1


# --------------------------------------------------------------------------------------------------
# replay


def _durations(trace: KinetoTrace, comm_time: Callable[[Kernel], float] | None) -> list[float]:
    out = []
    for k in trace.kernels:
        if comm_time is not None and k.kind == "communication":
            d = comm_time(k)
            if not _is_number(d) or d < 0:
                raise ValueError(
                    f"comm_time gave {d!r} s for kernel {k.index} ({k.comm}): need a finite s >= 0"
                )
            out.append(float(d))
        else:
            out.append(k.duration)
    return out


def _topological(trace: KinetoTrace) -> list[int]:
    """Kernel indices in :func:`_order_keys` order: every predecessor comes first."""
    keys = _order_keys(trace)
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
    replayed critical paths and how much communication time the critical path exposes."""
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
    return "\n".join(lines)
