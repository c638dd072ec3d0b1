"""Cross-stream dependencies of a Kineto trace, from its ``cudaStreamWaitEvent`` calls.

:func:`add_dependencies` fills :attr:`KinetoTrace.dependencies` for :func:`workloads.kineto.load_kineto`.

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
"""

from __future__ import annotations

import bisect
import math
from collections import defaultdict

from workloads.kineto_types import Kernel, KinetoTrace, StreamWait, as_int

ROUNDING_US = 1.0
"""Slack (µs) when comparing a trace's integer-µs end and start times."""
STALL_US = 10.0
"""An op stalled if it started this much (µs) after both its launch and its stream predecessor."""
EXPLAIN_US = 50.0
"""A dependency explains a stall if the op started within this many µs after the dependency ended."""


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


def order_keys(trace: KinetoTrace) -> list[tuple[float, int, int, int]]:
    """Per kernel (start, device, stream, FIFO position): a total order that every edge follows."""
    keys: list[tuple[float, int, int, int]] = [(0.0, 0, 0, 0)] * len(trace.kernels)
    for (device, stream), order in trace.streams.items():
        for pos, i in enumerate(order):
            keys[i] = (trace.kernels[i].start, device, stream, pos)
    return keys


def add_dependencies(
    trace: KinetoTrace,
    waits: list[tuple[float, object, int | None]],
    records: list[float],
    syncs: list[dict],
    runtime: dict[int, tuple[float, object, str, object, float | None]],
) -> None:
    """Fill ``trace.dependencies``, ``dependency_origin`` and ``waits`` (see the module docstring).
    CPU times come in absolute µs."""
    kernels = trace.kernels
    origin = trace.origin_us
    index = _StreamIndex(trace)
    keys = order_keys(trace)
    edges: dict[tuple[int, int], str] = {}

    def forward(x: int, y: int) -> bool:
        return keys[x][1:3] != keys[y][1:3] and keys[x] < keys[y]

    exact: set[int] = set()
    for ev in syncs:  # exact edges from cuda_sync "Stream Wait Event"
        args = ev.get("args") if isinstance(ev.get("args"), dict) else {}
        device = as_int(args.get("device", ev.get("pid")))
        stream, source = as_int(args.get("stream")), as_int(args.get("wait_on_stream"))
        corr = as_int(args.get("correlation"))
        if str(ev.get("name", "")).lower() != "stream wait event" or corr not in runtime:
            continue
        if device is None or stream is None or source is None or source < 0:
            continue
        wait_ts = runtime[corr][0] - origin
        record = runtime.get(as_int(args.get("wait_on_cuda_event_record_corr_id")) or -1)
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
        thread = as_int(runtime[corr][1])
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
        thread = as_int(tid)
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
