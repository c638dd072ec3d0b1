"""The data of a parsed Kineto trace: :class:`Kernel`, :class:`StreamWait`, :class:`KinetoTrace`.

Shared by the modules that read (:mod:`workloads.kineto`), classify (:mod:`workloads.kineto_names`)
and link (:mod:`workloads.kineto_deps`) a trace; :mod:`workloads.kineto` re-exports every name here.
All times are seconds after the trace origin, the start of the first GPU op.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

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
        algorithm: for NCCL kernels whose name says it, NCCL's algorithm in moesim's spelling
            (:data:`workloads.kineto_names.NCCL_ALGORITHMS`: ``ring``, ``tree``, ``nvls``, ...);
            None when the name does not say (``ncclDevKernel_Generic``, ``SendRecv``) and for
            every other op.
        protocol: likewise NCCL's protocol, ``LL``, ``LL128`` or ``Simple``, or None.
        launch_end: end of the launching runtime call (``ts + dur``), seconds after the origin, None
            if unknown (no runtime call, or one without ``dur``).
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
    algorithm: str | None = None
    protocol: str | None = None
    launch_end: float | None = None

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
        distributed: the raw ``distributedInfo`` object (empty if absent).
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
    distributed: dict = field(default_factory=dict, repr=False)

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


def is_number(value: object) -> bool:
    """True for a finite int or float that is not a bool."""
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def as_int(value: object) -> int | None:
    """``value`` as an int when it is one (an integral float, a string of ASCII digits), else None."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, str) and value.strip().lstrip("-").isdigit() and value.strip().isascii():
        return int(value)
    return None
