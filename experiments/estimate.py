"""How many messages and flows a point makes and how much memory simulating it takes, estimated
before anything big is built, so that ``moesim validate`` and ``moesim run`` refuse a point that
cannot fit (see :func:`check_fits`).

Counts come from the workload's configuration:

- collective, fabric up to :data:`EXACT_GPUS` GPUs and at most :data:`EXACT_MESSAGES` messages
  by the formula: the schedule itself is built (cheap at that size) and its messages are turned
  into flow counts by the transport's rules (qps per connection between hosts, ``split:K`` × K
  across the spine tier, ``ethereal``'s pieces per leaf pair and step; ``ecmp`` and ``spray``
  keep one flow per message);
- a larger collective by formula (upper bounds): ring ``steps × ranks × channels``
  (``2(p-1)`` steps for all_reduce, ``p-1`` otherwise), all_to_all ``p(p-1) × channels``, tree
  ``2(p-1) × chunks × channels``, PAT ``ceil(log2 p) × p × channels``, NVLS ``4p × chunks ×
  channels``, the patterns ``p``; every message counted as crossing the spine tier except the
  all-to-all's, whose share of pairs inside a host and under a leaf is known;
- MoE: per layer, dispatch and combine each at most ``min(G(G-1), tokens × top_k)`` messages
  (direct) or ``G(H-1) + 2G(g-1)`` (hierarchical), × channels, plus the routing transients;
- replay: the programs are built (their size is the trace's) and their schedules counted.

Bytes are :mod:`simulator.footprint`'s formulas. :func:`check_fits` refuses a point whose
estimate times :data:`SAFETY` plus :data:`PROCESS_BYTES` exceeds the available memory.
"""

from __future__ import annotations

import functools
import math
import os
from dataclasses import dataclass

import numpy as np

from experiments.config import CollectiveWorkload, ConfigError, Experiment, TopologyConfig
from simulator.footprint import Counts, Footprint, footprint, format_bytes
from simulator.ops import Collective, Schedule
from simulator.transport import parse_transport
from topologies.leaf_spine import LeafSpine

EXACT_GPUS = 8192
"""Largest fabric (GPUs) on which a collective's schedule is built to count its messages."""
EXACT_MESSAGES = 2_000_000
"""Largest formula message count for which the schedule is built (about 120 MB of arrays)."""
SAFETY = 1.5
"""A point is refused when SAFETY × its estimated peak + PROCESS_BYTES exceeds the available
memory: the estimate holds within 2× of measured peaks (tests/test_footprint.py), mostly above,
and the margin leaves room for what it does not count (allocator slack, other processes)."""
PROCESS_BYTES = 300 * 2**20
"""Resident bytes of a point's process before it simulates (Python, numpy, pandas, numba, SimPy)."""
MAX_CHUNKS = 64
"""Most pipeline chunks a tree, NVLS or chain schedule cuts a buffer into (workloads.collectives)."""


@dataclass(frozen=True)
class Estimate:
    """A point's estimated size.

    Attributes:
        messages, flows: over the whole run. peak_bytes: estimated peak memory, bytes.
        exact: counts from the built schedule (else upper bounds by formula).
        breakdown: the largest parts, e.g. ``messages 1.1 GiB, flows 800 MiB, admission 200 MiB``.
        field: the experiment field to change when it is too big, and fix: how.
        footprint: the parts in bytes.
    """

    messages: int
    flows: int
    peak_bytes: int
    exact: bool
    breakdown: str
    field: str
    fix: str
    footprint: Footprint


# ------------------------------------------------------------------------------- fabric


def _leaf_of(spec: LeafSpine, gpu: np.ndarray) -> np.ndarray:
    host, local = np.divmod(gpu, spec.gpus_per_host)
    if not spec.rail_optimized:
        return host // spec.hosts_per_leaf
    return host // (spec.hosts_per_leaf * spec.gpus_per_host) * spec.gpus_per_host + local


def _tier_spines(spec: LeafSpine) -> int:
    return spec.spines if spec.leaves > 1 else 0


# ------------------------------------------------------------------------ counting flows


@dataclass(frozen=True)
class _Tally:
    messages: int = 0
    flows: int = 0
    batch: int = 0
    groups: int = 0
    events: int = 0

    def __add__(self, other: _Tally) -> _Tally:
        return _Tally(
            self.messages + other.messages,
            self.flows + other.flows,
            max(self.batch, other.batch),
            self.groups + other.groups,
            self.events + other.events,
        )


def schedule_tally(spec: LeafSpine, schedule: Schedule, transport: str, uniform: bool = True) -> _Tally:
    """Messages, flows, largest step (flows), groups and events of one schedule on ``spec``, by
    the transport's rules (no fabric compiled). ``uniform``: messages of a step have equal sizes,
    so completions bunch (events ≈ 2 × members × steps × channels at most)."""
    n = int(schedule.src.shape[0])
    groups = int(schedule.ranks.shape[0]) * schedule.n_lanes * max(schedule.n_steps, 1)
    if n == 0:
        return _Tally(groups=groups)
    src = np.asarray(schedule.src, dtype=np.int64)
    dst = np.asarray(schedule.dst, dtype=np.int64)
    if schedule.via is not None:
        src = np.where(schedule.via >= 0, schedule.via, src)
    remote = src // spec.gpus_per_host != dst // spec.gpus_per_host
    cross = remote & (_leaf_of(spec, src) != _leaf_of(spec, dst)) & (_tier_spines(spec) > 0)
    per = np.where(remote, schedule.qps, 1).astype(np.int64)
    kind = parse_transport(transport)
    if kind.kind == "split":
        per = np.where(cross, per * kind.subflows, per)
    step = np.asarray(schedule.step, dtype=np.int64)
    flows_by_step = np.bincount(step, weights=per)
    flows = int(per.sum())
    if kind.kind == "ethereal" and cross.any():
        flows += _ethereal_extra(spec, src[cross], dst[cross], step[cross], per[cross])
    events = _events(spec, kind.kind, flows, groups, max(schedule.n_steps, 1) * schedule.n_lanes, uniform)
    return _Tally(n, flows, int(flows_by_step.max()), groups, events)


def _events(spec: LeafSpine, transport: str, flows: int, groups: int, sequences: int, uniform: bool) -> int:
    """Simulation events (admissions and completions), a heuristic fitted on measured runs: with
    messages of equal sizes in a step, completions bunch by member and step (at most two events
    per group); under ``spray`` they bunch by host too (two per host, step and channel); uneven
    messages (MoE, replay) finish one by one (an event per flow)."""
    if not uniform:
        return flows
    events = min(flows, 2 * groups)
    if transport == "spray":
        events = min(events, 2 * sequences * spec.hosts)
    return events


def _ethereal_extra(
    spec: LeafSpine, src: np.ndarray, dst: np.ndarray, step: np.ndarray, per: np.ndarray
) -> int:
    """Pieces beyond one per flow that ethereal cuts: per (step, leaf pair) with n equal flows over
    s spines, r = n mod s leftover flows each become s/gcd(r, s) pieces."""
    s = _tier_spines(spec)
    pair = (step * spec.leaves + _leaf_of(spec, src)) * spec.leaves + _leaf_of(spec, dst)
    group = np.unique(pair, return_inverse=True)[1]
    flows = np.bincount(group, weights=per).astype(np.int64)  # flows per (step, leaf pair)
    r = flows % s
    g = np.gcd(r, s)
    return int(np.sum(np.where(r > 0, r * (s // np.maximum(g, 1) - 1), 0)))


# ---------------------------------------------------------------------------- collectives


def _members(spec: LeafSpine, ranks: str) -> tuple[int, int]:
    """``(members, members per host)`` of a communicator."""
    if ranks == "all":
        return spec.gpus, spec.gpus_per_host
    return spec.hosts, 1


def _collective_bound(point: Experiment) -> tuple[int, int, int, int, str]:
    """``(messages, flows, largest step's flows, groups, algorithm)`` by formula (upper bounds)."""
    spec = point.topology.spec()
    work = point.workload
    p, per_host = _members(spec, work.ranks)
    hosts = max(p // per_host, 1)
    op, algorithm = work.op, work.algorithm
    nccl = algorithm is not None and algorithm not in ("hierarchical", "pipelined")
    channels = work.channels or (
        (2 if hosts > 1 else 1) if op == "all_to_all" else max(2, spec.gpus_per_host)
    )
    if not nccl and op not in ("broadcast", "reduce"):
        channels = 1
    if algorithm == "auto":
        algorithm = {"all_to_all": "pxn" if hosts > 1 else "direct"}.get(op, "ring")
    qps = work.qps_per_connection
    if p < 2:
        return 0, 0, 0, p, algorithm or ""
    ring_steps = 2 * (p - 1) if op == "all_reduce" else p - 1
    if op == "all_to_all":
        messages, steps = p * (p - 1) * channels, 1
    elif op in ("send_recv", "permutation", "shift"):
        messages, steps = p, 1
    elif op in ("broadcast", "reduce"):
        messages, steps = (p - 1) * MAX_CHUNKS * channels, p - 1 + MAX_CHUNKS
    elif algorithm == "tree":
        messages, steps = 2 * (p - 1) * MAX_CHUNKS * channels, 2 * p + MAX_CHUNKS
    elif algorithm == "pat":
        rounds = math.ceil(math.log2(p))
        messages, steps = rounds * p * channels, rounds
    elif algorithm in ("nvls", "nvls_tree"):
        messages, steps = 4 * (p + hosts) * MAX_CHUNKS * channels, 2 * hosts + MAX_CHUNKS
    elif algorithm == "hierarchical":
        g = per_host
        messages = 2 * hosts * g * (g - 1) + 2 * g * hosts * (hosts - 1)
        steps = 2 * (g - 1) + 2 * (hosts - 1)
    elif algorithm == "pipelined":
        messages = MAX_CHUNKS * (2 * p * (per_host - 1) + 2 * p * (hosts - 1))
        steps = MAX_CHUNKS + 2 * hosts
    else:  # ring
        messages, steps = ring_steps * p * channels, ring_steps
    transport = parse_transport(point.transport)
    subflows = transport.subflows if transport.kind == "split" else 2 if transport.kind == "ethereal" else 1
    if op == "all_to_all":
        leaf_members = spec.hosts_per_leaf * per_host if not spec.rail_optimized else p // max(spec.leaves, 1)
        remote = (p - per_host) / (p - 1)
        cross = max(p - leaf_members, 0) / (p - 1) if spec.leaves > 1 else 0.0
        factor = (1 - remote) + (remote - cross) * qps + cross * qps * subflows
    else:
        factor = qps * subflows
    flows = int(math.ceil(messages * factor))
    groups = p * channels * steps
    return messages, flows, int(math.ceil(flows / steps)), groups, algorithm or ""


@functools.lru_cache(maxsize=2)
def _schedule(topology: str, workload: str, seed: int) -> Schedule:
    """A collective point's schedule, by its topology and workload (as JSON) and seed: the points
    of a sweep over transports or record settings share it."""
    from experiments.runner import workload_schedule

    spec = TopologyConfig.model_validate_json(topology).spec()
    return workload_schedule(spec, CollectiveWorkload.model_validate_json(workload), seed)


@functools.lru_cache(maxsize=64)
def _exact(topology: str, workload: str, seed: int, transport: str) -> tuple[_Tally, int, bool, bool, bool]:
    """:func:`_collective`'s answer from the built schedule (cached: sweeps repeat points)."""
    schedule = _schedule(topology, workload, seed)
    spec = TopologyConfig.model_validate_json(topology).spec()
    tally = schedule_tally(spec, schedule, transport)
    members = int(schedule.ranks.shape[0])
    return tally, members, True, schedule.lane is None, schedule.n_steps == 1


def _collective(point: Experiment) -> tuple[_Tally, int, bool, bool, bool]:
    """``(tally, ops, exact, plain, one_batch)`` of a collective point (``plain``: schedule without
    lanes; ``one_batch``: one step, so every table grows in one append)."""
    spec = point.topology.spec()
    work = point.workload
    bound = _collective_bound(point)
    if spec.gpus <= EXACT_GPUS and bound[0] <= EXACT_MESSAGES:
        seed = point.seed if work.op == "permutation" else 0  # the only seeded schedule
        try:
            return _exact(point.topology.model_dump_json(), work.model_dump_json(), seed, point.transport)
        except ValueError:  # the run records this point's error; estimate it by formula
            pass
    messages, flows, batch, groups, _ = bound
    p, _ = _members(spec, work.ranks)
    steps = max(groups // max(p * (work.channels or 1), 1), 1)
    events = _events(spec, parse_transport(point.transport).kind, flows, groups, steps, True)
    tally = _Tally(messages, flows, batch, groups, events)
    return tally, p, False, False, work.op in ("all_to_all", "send_recv", "permutation", "shift")


# ----------------------------------------------------------------------------------- moe


def _moe(point: Experiment) -> tuple[_Tally, int, int]:
    """``(tally, ops, workload bytes)`` of a MoE point, by formula."""
    from simulator.footprint import moe_routing_bytes

    spec = point.topology.spec()
    work = point.workload
    if work.trace is not None:
        from experiments.placing import point_trace

        trace = point_trace(point)  # read (and cached) by preflight already
        gpus, layers, top_k, tokens, synth = trace.gpus, trace.layers, trace.top_k, trace.tokens, False
    else:
        gpus, layers, top_k = spec.gpus, work.synth.layers, work.synth.top_k
        tokens, synth = gpus * work.synth.tokens_per_gpu, True
    layers = min(layers, work.layers or layers)
    g = spec.gpus_per_host
    hosts = -(-gpus // g)
    hierarchical = work.dispatch == "hierarchical"
    pairs = gpus * (hosts - 1) + 2 * gpus * (g - 1) if hierarchical else gpus * (gpus - 1)
    per_collective = min(pairs, tokens * top_k * (2 if hierarchical else 1)) * work.channels
    messages = 2 * layers * per_collective
    remote = (gpus - g) / max(gpus - 1, 1) if not hierarchical else 1.0
    leaf_gpus = spec.hosts_per_leaf * g
    cross = max(gpus - leaf_gpus, 0) / max(gpus - 1, 1) if spec.leaves > 1 else 0.0
    transport = parse_transport(point.transport)
    subflows = transport.subflows if transport.kind == "split" else 2 if transport.kind == "ethereal" else 1
    qps = work.qps_per_connection
    factor = (1 - remote) + (remote - cross) * qps + cross * qps * subflows
    per_flows = int(math.ceil(per_collective * factor))
    steps = 2 if hierarchical else 1
    groups = 2 * layers * gpus * work.channels * steps
    tally = _Tally(messages, 2 * layers * per_flows, per_flows, groups, 2 * layers * per_flows)
    routing = moe_routing_bytes(gpus, hosts, tokens, top_k, layers, synth, hierarchical)
    return tally, 3 * layers * gpus, routing


# -------------------------------------------------------------------------------- replay


def _replay(point: Experiment) -> tuple[_Tally, int]:
    """``(tally, ops)`` of a replay point: its programs built and their schedules counted."""
    from experiments.runner import point_programs

    spec = point.topology.spec()
    try:
        programs = point_programs(point)
    except ValueError:  # the run records this point's error
        return _Tally(), 0
    seen: dict[int, Schedule] = {}
    ops = 0
    for program in programs.values():
        ops += len(program)
        for op in program:
            if isinstance(op, Collective):
                seen.setdefault(id(op), op.schedule)
    tally = _Tally()
    for schedule in seen.values():
        tally = tally + schedule_tally(spec, schedule, point.transport, uniform=False)
    return tally, ops


# ------------------------------------------------------------------------------ estimate


def estimate_point(point: Experiment) -> Estimate:
    """Estimate a point's messages, flows and peak memory without simulating it (and, on large
    fabrics, without building its schedule or compiling its fabric)."""
    spec = point.topology.spec()
    work = point.workload
    workload_bytes, exact, plain, one_batch = 0, True, False, False
    if work.kind == "collective":
        tally, ops, exact, plain, one_batch = _collective(point)
    elif work.kind == "moe":
        tally, ops, workload_bytes = _moe(point)
        exact = False
    else:
        tally, ops = _replay(point)
    counts = Counts(
        gpus=spec.gpus,
        hosts=spec.hosts,
        leaves=spec.leaves,
        spines=_tier_spines(spec),
        messages=tally.messages,
        flows=tally.flows,
        alive=tally.batch,
        batch=tally.batch,
        groups=tally.groups,
        ops=ops,
        events=tally.events,
        record_flows=point.record.flows,
        timeline=point.record.timeline,
        timeline_links=point.record.timeline_links,
        timeline_bins=point.record.timeline_bins,
        plain_schedules=plain,
        one_batch=one_batch,
        workload_bytes=workload_bytes,
    )
    parts = footprint(counts)
    field, fix = _culprit(point, parts)
    return Estimate(tally.messages, tally.flows, parts.peak, exact, parts.breakdown(), field, fix, parts)


def _culprit(point: Experiment, parts: Footprint) -> tuple[str, str]:
    """The field to change when ``parts`` is too big, and how: the one behind its largest part."""
    every = {**parts.kept, **parts.phases}
    largest = max(every, key=every.__getitem__)
    if largest == "results":  # the bigger of what recording adds, if it is most of it
        largest = max(parts.detail, key=parts.detail.__getitem__)
        if 2 * parts.detail[largest] < every["results"]:
            largest = "fabric"
    if largest in ("timeline log", "timeline"):
        return "record.timeline", "set record.timeline: false or use a smaller fabric"
    if largest == "flow records":
        return "record.flows", "set record.flows: false or use a smaller fabric"
    if largest == "workload":
        source = "workload.trace" if point.workload.trace is not None else "workload.synth.tokens_per_gpu"
        return source, "use fewer tokens or a smaller fabric"
    transport = parse_transport(point.transport)
    if transport.kind == "split" and transport.subflows > 4 and largest in ("flows", "admission"):
        return "transport", "use fewer subflows or a smaller fabric"
    return "topology.leaves", "use a smaller fabric"


def available_memory(limit: int | None = None) -> int:
    """Bytes a point may use: ``MemAvailable`` of ``/proc/meminfo`` (the physical memory where it
    cannot be read), or ``limit`` when that is smaller (e.g. a Dask worker's memory limit)."""
    available = None
    try:
        with open("/proc/meminfo") as meminfo:
            for line in meminfo:
                if line.startswith("MemAvailable:"):
                    available = int(line.split()[1]) * 1024
                    break
    except OSError:
        pass
    if available is None:
        try:
            available = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
        except (OSError, ValueError):
            available = 2**63 - 1
    return available if limit is None else min(available, int(limit))


def needed_bytes(estimate: Estimate) -> int:
    """Bytes a point needs to run with the safety margin: SAFETY × peak + PROCESS_BYTES."""
    return int(SAFETY * estimate.peak_bytes) + PROCESS_BYTES


def check_fits(index: int, estimate: Estimate, available: int, where: str = "") -> None:
    """Raise :class:`ConfigError` (one line naming the field, the estimate and the fix) when point
    ``index`` needs more than ``available`` bytes (see :data:`SAFETY`); ``where`` says whose memory
    that is (e.g. `` (a Dask worker's memory limit)``)."""
    if needed_bytes(estimate) <= available:
        return
    kind = "estimated" if estimate.exact else "bound"
    raise ConfigError(
        f"{estimate.field}: point {index} needs ~{format_bytes(estimate.peak_bytes)} "
        f"({kind}: {estimate.flows:.3g} flows, {estimate.messages:.3g} messages; {estimate.breakdown}) "
        f"but {format_bytes(available)} is available{where}; {estimate.fix}"
    )


def workers_that_fit(needs: list[int], workers: int, available: int) -> int:
    """The most points (≤ ``workers``) that may run at once on one machine: the largest count k
    whose k biggest ``needs`` (bytes, see :func:`needed_bytes`) sum to at most ``available``."""
    biggest = sorted(needs, reverse=True)
    total = k = 0
    for need in biggest[: max(workers, 1)]:
        if total + need > available:
            break
        total += need
        k += 1
    return k


def check_workers_fit(needs: list[int], workers: int, available: int) -> None:
    """Raise :class:`ConfigError` naming ``--workers`` when ``workers`` local processes, each
    running one of the biggest points at the same time, need more than ``available`` bytes."""
    running = min(workers, len(needs))
    fit = workers_that_fit(needs, running, available)
    if fit >= running:
        return
    biggest = sum(sorted(needs, reverse=True)[:running])
    raise ConfigError(
        f"--workers {workers}: {running} of the largest points at once need ~{format_bytes(biggest)} "
        f"with the safety margin but {format_bytes(available)} is available; "
        f"use --workers {max(fit, 1)}"
    )
