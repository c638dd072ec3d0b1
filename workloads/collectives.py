"""Collectives and network test patterns as step schedules of messages.

``size`` follows nccl-tests' ``size`` column for each op, so a simulated run and an nccl-tests log
compare row by row (p = ranks in the communicator):

========================  =========================================  ===================
op                        size means                                 bytes per message
========================  =========================================  ===================
all_to_all (direct)       send buffer per rank, split over p peers   size/p, p-1 peers
all_gather (ring)         the gathered output buffer                 size/p, p-1 steps
reduce_scatter (ring)     the input buffer per rank                  size/p, p-1 steps
all_reduce (ring)         the buffer per rank                        size/p, 2(p-1) steps
send_recv                 bytes each rank sends to the next rank     size
permutation, shift        bytes each sender sends                    size
========================  =========================================  ===================

Closed forms on a non-blocking fabric (α per message incl. propagation, B the bandwidth of the
slowest hop of the ring): ring all-reduce ``2(p-1)α + 2·size·(p-1)/p / B``; ring all-gather and
reduce-scatter ``(p-1)α + size·(p-1)/p / B``; direct all-to-all ``α + (bytes leaving the NIC) / B``.

Hierarchical all-reduce: intra-host ring reduce-scatter, then one ring all-reduce per rail (local
GPU index) across hosts on ``size/g`` bytes, then intra-host ring all-gather.

Pipelined all-reduce (NCCL-like on NVSwitch hosts): the buffer is cut into ``c`` chunks; each
goes through a direct reduce-scatter inside its host (every GPU sends ``1/g`` of the chunk to
each of its ``g-1`` peers at once), a ring all-reduce per rail across the ``h`` hosts (``2(h-1)``
steps of ``chunk/(g·h)``) and a direct all-gather inside the host, and chunk ``j`` enters its
first phase at step ``j``. So NVLink and NIC phases of different chunks overlap, and the time
tends to that of the busiest tier alone. ``c`` is the depth that minimises the pipeline's own
α-β time ``(c + K - 1)(α + T/c)`` (``K`` phases per chunk, ``T`` the bottleneck tier's bytes per
GPU over its bandwidth, α its per-message latency): ``c = sqrt((K - 1)·T/α)``, rounded, between 1
and :data:`MAX_CHUNKS`. A chunk's messages therefore grow with the buffer at every size.
"""

from __future__ import annotations

import math

import numpy as np

from simulator.ops import Collective, Schedule
from topologies.description import DescribedFabric, FabricDescription, as_description

MAX_CHUNKS = 64
"""Most chunks the pipelined all-reduce cuts a buffer into."""

OPS = (
    "all_to_all",
    "all_gather",
    "reduce_scatter",
    "all_reduce",
    "broadcast",
    "reduce",
    "send_recv",
    "permutation",
    "shift",
)


def communicator(spec: FabricDescription, ranks: str = "all") -> np.ndarray:
    """GPU ids of a communicator: ``all`` GPUs, ``one_per_host`` (local GPU 0 of every host) or
    ``rail:i`` (local GPU i of every host)."""
    gpus = np.arange(spec.gpus, dtype=np.int64)
    if ranks == "all":
        return gpus
    if ranks == "one_per_host":
        return gpus[:: spec.gpus_per_host]
    if ranks.startswith("rail:") and ranks[5:].isascii() and ranks[5:].isdigit():
        rail = int(ranks[5:])
        if rail >= spec.gpus_per_host:
            raise ValueError(f'"{ranks}": rail must be below gpus_per_host={spec.gpus_per_host}')
        return gpus[rail :: spec.gpus_per_host]
    raise ValueError(f'"{ranks}" is not a communicator (try all, one_per_host or rail:0)')


def _schedule(
    name: str, ranks: np.ndarray, parts: list[tuple[np.ndarray, np.ndarray, np.ndarray, int]]
) -> Schedule:
    """Assemble a schedule from ``(src, dst, nbytes, step)`` parts."""
    if not parts:
        empty = np.zeros(0, dtype=np.int64)
        return Schedule(ranks, empty, empty, np.zeros(0), empty, 1, name)
    src = np.concatenate([p[0] for p in parts])
    dst = np.concatenate([p[1] for p in parts])
    nbytes = np.concatenate([np.broadcast_to(np.asarray(p[2], dtype=np.float64), p[0].shape) for p in parts])
    step = np.concatenate([np.full(p[0].shape[0], p[3], dtype=np.int64) for p in parts])
    return Schedule(ranks, src, dst, nbytes, step, int(step.max()) + 1, name)


def all_to_all(ranks: np.ndarray, size: float) -> Schedule:
    """Direct all-to-all: every rank sends ``size/p`` bytes to each of the other p-1 ranks at once."""
    p = ranks.shape[0]
    src = np.repeat(ranks, p)
    dst = np.tile(ranks, p)
    off = src != dst
    return _schedule("all_to_all/direct", ranks, [(src[off], dst[off], size / p, 0)] if p > 1 else [])


def ring_steps(ranks: np.ndarray, chunk: float, steps: int, first_step: int = 0) -> list:
    """``steps`` ring steps: in each, every rank sends ``chunk`` bytes to the next rank."""
    if ranks.shape[0] < 2:
        return []
    nxt = np.roll(ranks, -1)
    return [(ranks, nxt, chunk, first_step + k) for k in range(steps)]


def all_gather(ranks: np.ndarray, size: float) -> Schedule:
    """Ring all-gather of a ``size``-byte output: p-1 steps of ``size/p``."""
    p = ranks.shape[0]
    return _schedule("all_gather/ring", ranks, ring_steps(ranks, size / p, p - 1))


def reduce_scatter(ranks: np.ndarray, size: float) -> Schedule:
    """Ring reduce-scatter of a ``size``-byte input: p-1 steps of ``size/p``."""
    p = ranks.shape[0]
    return _schedule("reduce_scatter/ring", ranks, ring_steps(ranks, size / p, p - 1))


def host_grid(ranks: np.ndarray, gpus_per_host: int, name: str) -> np.ndarray:
    """``(hosts, ranks per host)`` grid of ``ranks`` (in GPU order, so each row is one host);
    ValueError naming ``name`` unless every host has the same number of ranks."""
    hosts = ranks // gpus_per_host
    host_ids = np.unique(hosts)
    local = np.array([np.sum(hosts == h) for h in host_ids])
    if np.any(local != local[0]):
        raise ValueError(f"{name} needs the same number of ranks on every host")
    return ranks.reshape(host_ids.shape[0], int(local[0]))


def all_reduce(
    ranks: np.ndarray,
    size: float,
    algorithm: str = "ring",
    gpus_per_host: int = 1,
    spec: FabricDescription | None = None,
) -> Schedule:
    """All-reduce of ``size`` bytes per rank: ``ring``, ``hierarchical`` or ``pipelined`` (whose
    chunking follows the fabric ``spec``'s latencies and bandwidths); see the module docstring."""
    p = ranks.shape[0]
    if algorithm == "ring":
        return _schedule("all_reduce/ring", ranks, ring_steps(ranks, size / p, 2 * (p - 1)))
    if algorithm == "pipelined":
        if spec is None:
            raise ValueError("a pipelined all_reduce needs the fabric spec (it sets the chunking)")
        return pipelined_all_reduce(ranks, size, as_description(spec))
    if algorithm != "hierarchical":
        raise ValueError(
            f'"{algorithm}" is not an all_reduce algorithm (try ring, hierarchical or pipelined)'
        )
    grid = host_grid(ranks, gpus_per_host, "hierarchical all_reduce")
    h, g = grid.shape
    parts: list = []
    for row in grid:
        parts += ring_steps(row, size / g, g - 1)
    inter_first = g - 1 if g > 1 else 0
    for rail in range(g):
        parts += ring_steps(grid[:, rail], size / (g * h), 2 * (h - 1), inter_first)
    last_first = inter_first + (2 * (h - 1) if h > 1 else 0)
    for row in grid:
        parts += ring_steps(row, size / g, g - 1, last_first)
    return _schedule("all_reduce/hierarchical", ranks, parts)


def pipeline_chunks(phases: int, bottleneck_time: float, alpha: float) -> int:
    """The pipeline depth minimising ``(c + phases - 1)(alpha + bottleneck_time / c)``, rounded and
    clamped to ``[1, MAX_CHUNKS]`` (``MAX_CHUNKS`` when ``alpha`` is 0)."""
    if phases <= 1 or bottleneck_time <= 0:
        return 1
    if alpha <= 0:
        return MAX_CHUNKS
    return int(min(MAX_CHUNKS, max(1, round(math.sqrt((phases - 1) * bottleneck_time / alpha)))))


def pipelined_all_reduce(ranks: np.ndarray, size: float, spec: FabricDescription) -> Schedule:
    """Pipelined hierarchical all-reduce of ``size`` bytes per rank on ``spec`` (module docstring)."""
    grid = host_grid(ranks, spec.gpus_per_host, "pipelined all_reduce")
    h, g = grid.shape
    inter = 2 * (h - 1)
    phases = inter + (2 if g > 1 else 0)
    nvlink_time = 2 * size * (g - 1) / g / spec.nvlink_bandwidth
    nic_time = 2 * size * (h - 1) / (g * h) / spec.nic_bandwidth
    if nic_time >= nvlink_time:
        chunks = pipeline_chunks(phases, nic_time, spec.message_latency)
    else:
        chunks = pipeline_chunks(phases, nvlink_time, spec.nvlink_message_latency)
    piece = size / chunks
    pairs_src = np.repeat(grid, g, axis=1).reshape(-1)  # every ordered pair inside each host
    pairs_dst = np.tile(grid, (1, g)).reshape(-1)
    off = pairs_src != pairs_dst
    pairs_src, pairs_dst = pairs_src[off], pairs_dst[off]
    inter = 2 * (h - 1)
    parts: list = []
    for j in range(chunks):
        step = j
        if g > 1:
            parts.append((pairs_src, pairs_dst, piece / g, step))
            step += 1
        for rail in range(g):
            parts += ring_steps(grid[:, rail], piece / (g * h), inter, step)
        step += inter
        if g > 1:
            parts.append((pairs_src, pairs_dst, piece / g, step))
    return _schedule("all_reduce/pipelined", ranks, parts)


def send_recv(ranks: np.ndarray, size: float) -> Schedule:
    """Every rank sends ``size`` bytes to the next rank (wrapping), as nccl-tests' sendrecv_perf."""
    return _schedule("send_recv", ranks, ring_steps(ranks, size, 1))


def host_mapping(ranks: np.ndarray, gpus_per_host: int, target_host: np.ndarray) -> np.ndarray:
    """Destination rank per member: the member with the same local index on ``target_host[host]``."""
    hosts = ranks // gpus_per_host
    host_ids = np.unique(hosts)
    index = {int(h): i for i, h in enumerate(host_ids)}
    dst_host = host_ids[target_host[[index[int(x)] for x in hosts]]]
    return dst_host * gpus_per_host + ranks % gpus_per_host


def permutation(ranks: np.ndarray, size: float, gpus_per_host: int, seed: int) -> Schedule:
    """A seeded random permutation of hosts with no fixed point; each member sends ``size`` bytes to
    the member with the same local index on its host's image."""
    h = np.unique(ranks // gpus_per_host).shape[0]
    if h < 2:
        return _schedule("permutation", ranks, [])
    rng = np.random.default_rng(seed)
    while True:
        perm = rng.permutation(h)
        if not np.any(perm == np.arange(h)):
            break
    return _schedule("permutation", ranks, [(ranks, host_mapping(ranks, gpus_per_host, perm), size, 0)])


def shift(ranks: np.ndarray, size: float, gpus_per_host: int, k: int) -> Schedule:
    """Every host sends to the host ``k`` positions on (wrapping); each member sends ``size`` bytes to
    the member with the same local index there. ``k = hosts_per_leaf`` is the same slot one rack on."""
    h = np.unique(ranks // gpus_per_host).shape[0]
    if h < 2 or k % h == 0:
        return _schedule(f"shift:{k}", ranks, [])
    target = (np.arange(h) + k) % h
    return _schedule(f"shift:{k}", ranks, [(ranks, host_mapping(ranks, gpus_per_host, target), size, 0)])


def collective_schedule(
    spec: FabricDescription | DescribedFabric,
    op: str,
    size: float,
    algorithm: str | None = None,
    ranks: str = "all",
    k: int | None = None,
    seed: int = 0,
    protocol: str | None = None,
    channels: int | None = None,
    qps: int = 1,
) -> Schedule:
    """The schedule of one collective or pattern on the fabric ``spec`` (see module docstring).

    ``algorithm`` None is moesim's own schedule of this module (one flow per message, the fabric's
    tier α); ``auto`` or an NCCL algorithm name (:data:`workloads.nccl.ALGORITHMS`) is NCCL's, on
    ``channels`` channels (None: NCCL's default for the fabric) with ``qps`` queue pairs per
    connection, under ``protocol`` (``auto``, ``LL``, ``LL128``, ``Simple``; None: ``auto`` with
    ``algorithm: auto``, else Simple). ``hierarchical`` and ``pipelined`` are moesim's own
    all-reduces. Raises ValueError (:class:`workloads.nccl.AlgorithmError` for settings that do not
    apply) with a one-line message.
    """
    from workloads import nccl  # nccl builds on this module's schedules

    fabric = as_description(spec)
    members = communicator(fabric, ranks)
    g = fabric.gpus_per_host
    if algorithm is not None and algorithm not in ("hierarchical", "pipelined") and op in nccl.ALGORITHMS:
        algorithm, protocol, channels = nccl.resolve(fabric, op, members, size, algorithm, protocol, channels)
        return nccl.nccl_schedule(fabric, op, members, size, algorithm, protocol, channels, qps)
    if protocol is not None or channels is not None or qps != 1:
        raise ValueError(
            "algorithm: protocol, channels and qps_per_connection need an NCCL algorithm (try auto)"
        )
    if algorithm == "auto":  # no NCCL algorithm for this op: its one schedule
        algorithm = None
    if op == "all_to_all":
        if algorithm not in (None, "direct"):
            raise ValueError(f'"{algorithm}" is not an all_to_all algorithm (try direct)')
        return all_to_all(members, size)
    if op in ("all_gather", "reduce_scatter"):
        if algorithm not in (None, "ring"):
            raise ValueError(f'"{algorithm}" is not an {op} algorithm (try ring)')
        return all_gather(members, size) if op == "all_gather" else reduce_scatter(members, size)
    if op == "all_reduce":
        return all_reduce(members, size, algorithm or "ring", g, fabric)
    if op in ("broadcast", "reduce"):
        algorithm, protocol, channels = nccl.resolve(fabric, op, members, size, "ring", "Simple", None)
        return nccl.nccl_schedule(fabric, op, members, size, algorithm, protocol, channels, qps)
    if op == "send_recv":
        return send_recv(members, size)
    if op == "permutation":
        return permutation(members, size, g, seed)
    if op == "shift":
        return shift(members, size, g, fabric.hosts_per_leaf if k is None else k)
    raise ValueError(f'"{op}" is not a collective (try one of {", ".join(OPS)})')


def collective_programs(schedule: Schedule) -> dict[int, list[Collective]]:
    """Per-rank programs that each run the one collective ``schedule``."""
    op = Collective(schedule)
    return {int(gpu): [op] for gpu in schedule.ranks}
