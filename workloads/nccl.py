"""NCCL's collective algorithms as step schedules: channels over rails, connections with queue
pairs, and the LL / LL128 / Simple protocols.

Every schedule here runs on ``C`` channels (lanes of :class:`~simulator.ops.Schedule`: a channel
steps on its own), each moving ``1/C`` of the buffer. Connections between hosts open ``qps`` flows
each (NCCL_IB_QPS_PER_CONNECTION), hashed by ECMP on a connection id that stays the same for the
whole call, as a queue pair's 5-tuple does. The fabric is read only through
:class:`~topologies.description.FabricDescription`.

Layouts (p ranks on h hosts, g ranks per host, N NICs per host):

- **ring**: channel ``c`` uses rail ``c mod N`` on every host (the NICs of the host's members, in
  order). Inside a host its ring starts at the GPU that NIC serves and visits the others in local
  order; it leaves the host through the same NIC (the last GPU's send crosses NVLink to the NIC's
  GPU first: PXN), so rings are rail-aligned and ``C >= N`` channels use every NIC. Hosts follow in
  order. all-gather and reduce-scatter: ``p-1`` steps of ``size/(C·p)``; all-reduce ``2(p-1)``.
- **broadcast / reduce** (root: the first member): the channel's ring cut open at the root, a
  chain of ``p-1`` hops pipelined in ``k`` chunks (message ``size/(C·k)``, ``k + p - 2`` steps).
- **tree** (all-reduce): NCCL's double binary tree over hosts (channels alternate between the tree
  and its mirror, or its shift by one for an odd host count, so a host that is a leaf in one is
  inner in the other) joining the hosts' head GPUs (the GPU on the channel's rail), with a chain
  of the other GPUs below each head. Chunks are reduced up and broadcast down, pipelined: chunk
  ``j`` leaves a node at depth ``d`` upwards at step ``j + D - d`` and downwards at ``j + D + d``
  (``D`` the deepest node), ``k + 2D - 1`` steps.
- **nvls** (in one NVLink domain with NVLink SHARP). all-reduce: per chunk, every GPU sends its
  part up to the switch, which reduces it, and receives its reduced ``1/g`` shard back (step
  ``j``); then every GPU pushes its shard up and the switch multicasts it to all (step ``j+1``).
  all-gather: every GPU pushes its block up once (step ``j``) and the switch multicasts the
  other ``g-1`` blocks to it (step ``j+1``); reduce-scatter: the switch reads every GPU's part of
  the others' shards (step ``j``) and returns each GPU its reduced shard (step ``j+1``).
- **nvls_tree** (all-reduce across hosts): NVLS into each host's head, the tree across heads,
  NVLS multicast out of each head.
- **pat** (all-gather / reduce-scatter, one rank per host): ``ceil(log2 p)`` steps; at step ``s``
  a rank sends what it has gathered, ``min(2^s, p - 2^s)`` blocks of ``size/p``, to the rank
  ``2^s`` before it (reduce-scatter runs the steps in reverse). The log-step byte and step
  pattern of NCCL's PAT, not its buffer-bounded aggregation.
- **direct** (all-to-all): every pair's ``size/p`` is cut over the C channels, one connection per
  pair and channel; **pxn** the same, but a message whose destination hangs off another rail
  first crosses NVLink to the local GPU on that rail and leaves through its NIC.

Pipelined chunk counts ``k`` follow :func:`workloads.collectives.pipeline_chunks` (moesim's α-β
optimum, at most :data:`~workloads.collectives.MAX_CHUNKS`), not NCCL's fixed chunk sizes.

Protocols change the per-message α (:meth:`topologies.leaf_spine.LeafSpine.latencies`) and the
share of the bandwidth that carries data (:meth:`~topologies.leaf_spine.LeafSpine.protocol_share`:
by default LL's 4 data bytes per 8-byte line, LL128's 120 per 128, all of it for Simple).
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np

from simulator.ops import Schedule
from topologies.compiled import LEG_DOWN, LEG_UP
from topologies.description import FabricDescription
from workloads import collectives
from workloads.collectives import pipeline_chunks
from workloads.nccl_search import topology_for
from workloads.nccl_tuning import TuningTopology, channels_used, choose

PROTOCOLS = ("LL", "LL128", "Simple")
"""NCCL's protocols."""

ALGORITHMS: dict[str, tuple[str, ...]] = {
    "all_reduce": ("ring", "tree", "nvls", "nvls_tree"),
    "all_gather": ("ring", "pat", "nvls"),
    "reduce_scatter": ("ring", "pat", "nvls"),
    "broadcast": ("ring",),
    "reduce": ("ring",),
    "all_to_all": ("direct", "pxn"),
}
"""NCCL-style algorithms per op (besides moesim's own ``hierarchical`` and ``pipelined``)."""


class AlgorithmError(ValueError):
    """An algorithm, protocol or channel count that does not apply: ``field`` names the setting."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field


@dataclasses.dataclass(frozen=True)
class _Parts:
    """Messages collected while building a schedule (lists of equal-length arrays)."""

    src: list
    dst: list
    nbytes: list
    step: list
    lane: list
    via: list
    key: list
    leg: list

    @classmethod
    def empty(cls) -> _Parts:
        return cls([], [], [], [], [], [], [], [])

    def add(
        self,
        src: np.ndarray,
        dst: np.ndarray,
        nbytes: float,
        step: int | np.ndarray,
        lane: int,
        via: np.ndarray | None = None,
        key: np.ndarray | None = None,
        leg: int = 0,
    ) -> None:
        src = np.asarray(src, dtype=np.int64)
        n = src.shape[0]
        self.src.append(src)
        self.dst.append(np.asarray(dst, dtype=np.int64))
        self.nbytes.append(np.full(n, float(nbytes)))
        self.step.append(np.broadcast_to(np.asarray(step, dtype=np.int64), (n,)))
        self.lane.append(np.full(n, lane, dtype=np.int64))
        self.via.append(np.full(n, -1, dtype=np.int64) if via is None else np.asarray(via, dtype=np.int64))
        self.key.append(np.full(n, -1, dtype=np.int64) if key is None else np.asarray(key, dtype=np.int64))
        self.leg.append(np.full(n, leg, dtype=np.int8))

    def schedule(
        self, name: str, ranks: np.ndarray, algorithm: str, protocol: str, channels: int, qps: int, gpus: int
    ) -> Schedule:
        if not self.src:
            empty = np.zeros(0, dtype=np.int64)
            return Schedule(
                ranks, empty, empty, np.zeros(0), empty, 1, name, algorithm=algorithm, channels=channels
            )
        src, dst = np.concatenate(self.src), np.concatenate(self.dst)
        step = np.concatenate(self.step)
        lane = np.concatenate(self.lane)
        key = np.concatenate(self.key)
        # A connection is a (channel, sender, receiver) triple unless the builder named one.
        own = key < 0
        key = np.where(own, (lane * gpus + src) * gpus + dst, key)
        return Schedule(
            ranks,
            src,
            dst,
            np.concatenate(self.nbytes),
            step,
            int(step.max()) + 1,
            name,
            lane=lane,
            via=np.concatenate(self.via),
            key=key,
            leg=np.concatenate(self.leg),
            qps=qps,
            protocol=protocol,
            algorithm=algorithm,
            channels=channels,
            launch="p2p" if algorithm in ("direct", "pxn") else "collective",
        )


def host_rows(fabric: FabricDescription, members: np.ndarray) -> list[np.ndarray]:
    """The members of each host that has any, hosts in order, members in local order."""
    members = np.sort(np.asarray(members, dtype=np.int64))
    hosts = fabric.host_of(members)
    return [members[hosts == host] for host in np.unique(hosts)]


def _rails(fabric: FabricDescription, row: np.ndarray) -> np.ndarray:
    """The NICs serving a host's members, in order of first use."""
    nics = fabric.nic_of(row)
    _, first = np.unique(nics, return_index=True)
    return nics[np.sort(first)]


def _channel_row(fabric: FabricDescription, row: np.ndarray, channel: int) -> tuple[np.ndarray, int]:
    """One host's members in channel ``channel``'s order (starting at the GPU its rail serves) and
    the GPU whose NIC the channel uses there."""
    rails = _rails(fabric, row)
    nic = int(rails[channel % rails.shape[0]])
    entry = int(np.flatnonzero(fabric.nic_of(row) == nic)[0])
    port = int(fabric.port_gpu(np.array([fabric.host_of(row[:1])[0]]), np.array([nic]))[0])
    return np.roll(row, -entry), port


def channel_ring(
    fabric: FabricDescription, members: np.ndarray, channel: int
) -> tuple[np.ndarray, np.ndarray]:
    """Channel ``channel``'s ring: ``(order, via)``, the members in ring order and, per position
    ``i``, the GPU whose NIC the send from ``order[i]`` to ``order[i+1]`` leaves through (-1: its
    own, or no NIC)."""
    rows = host_rows(fabric, members)
    laid = [_channel_row(fabric, row, channel) for row in rows]
    order = np.concatenate([row for row, _ in laid])
    via = np.full(order.shape[0], -1, dtype=np.int64)
    if len(rows) > 1:
        end = np.cumsum([row.shape[0] for row, _ in laid]) - 1
        for (row, port), last in zip(laid, end, strict=True):
            if port != row[-1]:
                via[last] = port
    return order, via


def _ring_steps(
    parts: _Parts, order: np.ndarray, via: np.ndarray, chunk: float, steps: int, lane: int
) -> None:
    nxt = np.roll(order, -1)
    for step in range(steps):
        parts.add(order, nxt, chunk, step, lane, via)


def _chain(parts: _Parts, order: np.ndarray, via: np.ndarray, piece: float, chunks: int, lane: int) -> None:
    """Pipelined chain ``order[0] -> order[1] -> ... -> order[-1]``: chunk ``j`` crosses hop ``i`` at
    step ``j + i``."""
    hops = order.shape[0] - 1
    for j in range(chunks):
        parts.add(order[:-1], order[1:], piece, np.arange(hops) + j, lane, via[:-1])


def _tier(fabric: FabricDescription, members: np.ndarray) -> tuple[float, float]:
    """``(bandwidth, α)`` of the slowest tier the members span: NIC if more than one host."""
    if np.unique(fabric.host_of(members)).shape[0] > 1:
        return fabric.nic_bandwidth, fabric.message_latency
    return fabric.nvlink_bandwidth, fabric.nvlink_message_latency


def btree_parent(n: int) -> np.ndarray:
    """Parents of NCCL's binary tree over ``n`` nodes (-1 for the root, node 0): node ``r``'s parent
    flips its lowest set bit ``b`` and sets ``2b``, or just flips ``b`` if that lands past the end.
    Odd nodes are leaves."""
    parent = np.full(n, -1, dtype=np.int64)
    for r in range(1, n):
        bit = r & -r
        up = (r ^ bit) | (bit << 1)
        parent[r] = up if up < n else r ^ bit
    return parent


def double_tree(n: int) -> tuple[np.ndarray, np.ndarray]:
    """The two trees of NCCL's double binary tree over ``n`` nodes, as parent arrays: the binary
    tree, and its mirror (``n`` even) or its shift by one (``n`` odd)."""
    first = btree_parent(n)
    nodes = np.arange(n)
    image = (n - 1 - nodes) if n % 2 == 0 else (nodes + 1) % n
    second = np.full(n, -1, dtype=np.int64)
    has = first >= 0
    second[image[has]] = image[first[has]]
    return first, second


def _depths(parent: np.ndarray) -> np.ndarray:
    depth = np.zeros(parent.shape[0], dtype=np.int64)
    for node in range(parent.shape[0]):
        up, d = parent[node], 0
        while up >= 0:
            up, d = parent[up], d + 1
        depth[node] = d
    return depth


def _tree_edges(
    fabric: FabricDescription, members: np.ndarray, channel: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Channel ``channel``'s tree over GPUs: ``(child, parent, child depth, heads)``."""
    rows = host_rows(fabric, members)
    laid = [_channel_row(fabric, row, channel)[0] for row in rows]
    heads = np.array([row[0] for row in laid], dtype=np.int64)
    host_parent = double_tree(len(rows))[channel % 2]
    host_depth = _depths(host_parent)
    child, parent, depth = [], [], []
    for index, row in enumerate(laid):
        if host_parent[index] >= 0:
            child.append(row[0])
            parent.append(heads[host_parent[index]])
            depth.append(host_depth[index])
        for k in range(1, row.shape[0]):  # the chain below the head
            child.append(row[k])
            parent.append(row[k - 1])
            depth.append(host_depth[index] + k)
    return np.array(child, np.int64), np.array(parent, np.int64), np.array(depth, np.int64), heads


def _tree_reduce_broadcast(
    parts: _Parts,
    child: np.ndarray,
    parent: np.ndarray,
    depth: np.ndarray,
    piece: float,
    chunks: int,
    lane: int,
    first_step: int = 0,
) -> int:
    """Reduce ``chunks`` chunks up the tree and broadcast them down, pipelined; returns the steps
    used (``chunks + 2D - 1``, ``D`` the deepest child's depth; 0 for an empty tree)."""
    if child.shape[0] == 0:
        return 0
    deepest = int(depth.max())
    for j in range(chunks):
        parts.add(child, parent, piece, first_step + j + deepest - depth, lane)
        parts.add(parent, child, piece, first_step + j + deepest + depth - 1, lane)
    return chunks + 2 * deepest - 1


def ring_schedule(
    fabric: FabricDescription, op: str, members: np.ndarray, size: float, channels: int
) -> _Parts:
    """all_gather, reduce_scatter or all_reduce on ``channels`` rail-aligned rings."""
    p = members.shape[0]
    parts = _Parts.empty()
    if p < 2:
        return parts
    steps = 2 * (p - 1) if op == "all_reduce" else p - 1
    for c in range(channels):
        order, via = channel_ring(fabric, members, c)
        _ring_steps(parts, order, via, size / (channels * p), steps, c)
    return parts


def chain_schedule(
    fabric: FabricDescription, op: str, members: np.ndarray, size: float, channels: int
) -> _Parts:
    """broadcast (from the first member) or reduce (to it) along each channel's ring, pipelined."""
    p = members.shape[0]
    parts = _Parts.empty()
    if p < 2:
        return parts
    bandwidth, alpha = _tier(fabric, members)
    chunks = pipeline_chunks(p - 1, size / channels / bandwidth, alpha)
    root = int(np.min(members))
    for c in range(channels):
        order, via = channel_ring(fabric, members, c)
        # broadcast starts the chain at the root, reduce ends it there; both use the ring's edges
        shift = int(np.flatnonzero(order == root)[0]) + (1 if op == "reduce" else 0)
        order, via = np.roll(order, -shift), np.roll(via, -shift)
        _chain(parts, order, via, size / (channels * chunks), chunks, c)
    return parts


def tree_schedule(fabric: FabricDescription, members: np.ndarray, size: float, channels: int) -> _Parts:
    """all_reduce on NCCL's double binary tree across hosts, chains inside them."""
    parts = _Parts.empty()
    if members.shape[0] < 2:
        return parts
    bandwidth, alpha = _tier(fabric, members)
    for c in range(channels):
        child, parent, depth, _ = _tree_edges(fabric, members, c)
        chunks = pipeline_chunks(2 * int(depth.max()), size / channels / bandwidth, alpha)
        _tree_reduce_broadcast(parts, child, parent, depth, size / (channels * chunks), chunks, c)
    return parts


def nvls_gather_scatter(
    op: str, members: np.ndarray, size: float, channels: int, fabric: FabricDescription
) -> _Parts:
    """all_gather or reduce_scatter by NVLink SHARP in one host (``size`` the whole buffer)."""
    parts = _Parts.empty()
    g = members.shape[0]
    bandwidth, alpha = _tier(fabric, members)
    share = size / channels
    chunks = pipeline_chunks(2, share * (g - 1) / g / bandwidth, alpha)
    piece = share / chunks
    first, second = (
        (piece / g, piece * (g - 1) / g) if op == "all_gather" else (piece * (g - 1) / g, piece / g)
    )
    for c in range(channels):
        for j in range(chunks):
            parts.add(members, members, first, j, c, leg=LEG_UP)
            parts.add(members, members, second, j + 1, c, leg=LEG_DOWN)
    return parts


def nvls_schedule(
    fabric: FabricDescription, members: np.ndarray, size: float, channels: int, across: bool
) -> _Parts:
    """all_reduce by NVLink SHARP inside each host; ``across``: joined by the tree over hosts."""
    parts = _Parts.empty()
    rows = host_rows(fabric, members)
    g = rows[0].shape[0]
    bandwidth, alpha = _tier(fabric, members)
    for c in range(channels):
        share = size / channels
        if not across:
            chunks = pipeline_chunks(2, share * (1 + 1 / g) / bandwidth, alpha)
            piece = share / chunks
            for j in range(chunks):
                parts.add(members, members, piece, j, c, leg=LEG_UP)  # reduce: pull every shard
                parts.add(members, members, piece / g, j, c, leg=LEG_DOWN)  # its reduced shard back
                parts.add(members, members, piece / g, j + 1, c, leg=LEG_UP)  # push the shard
                parts.add(members, members, piece, j + 1, c, leg=LEG_DOWN)  # multicast to all
            continue
        child, parent, depth, heads = _tree_edges(fabric, members, c)
        host_child = np.isin(child, heads)  # NVLS replaces the chains inside hosts
        child, parent, depth = child[host_child], parent[host_child], depth[host_child]
        deepest = int(depth.max()) if depth.size else 0
        chunks = pipeline_chunks(2 * deepest + 2, share / bandwidth, alpha)
        piece = share / chunks
        for j in range(chunks):
            parts.add(members, members, piece, j, c, leg=LEG_UP)  # into the switch, reduced
            parts.add(heads, heads, piece, j, c, leg=LEG_DOWN)  # the host's sum to its head
            last = j + 1
            if child.size:
                parts.add(child, parent, piece, j + 1 + deepest - depth, c)
                parts.add(parent, child, piece, j + deepest + depth, c)
                last = j + 2 * deepest + 1
            parts.add(heads, heads, piece, last, c, leg=LEG_UP)  # the total back into the switch
            parts.add(members, members, piece, last, c, leg=LEG_DOWN)  # multicast to the host
    return parts


def pat_schedule(op: str, members: np.ndarray, size: float, channels: int) -> _Parts:
    """all_gather or reduce_scatter in ``ceil(log2 p)`` steps (one rank per host)."""
    p = members.shape[0]
    parts = _Parts.empty()
    if p < 2:
        return parts
    rounds = math.ceil(math.log2(p))
    block = size / (channels * p)
    order = range(rounds) if op == "all_gather" else reversed(range(rounds))
    for c in range(channels):
        for step, s in enumerate(order):
            distance = 1 << s
            blocks = min(distance, p - distance)
            parts.add(members, np.roll(members, distance), blocks * block, step, c)
    return parts


def all_to_all_schedule(
    fabric: FabricDescription, members: np.ndarray, size: float, channels: int, pxn: bool
) -> _Parts:
    """Grouped send/recv: every pair's ``size/p`` over ``channels`` connections; ``pxn`` sends a
    cross-rail message through the local GPU on the destination's rail."""
    p = members.shape[0]
    parts = _Parts.empty()
    if p < 2:
        return parts
    src = np.repeat(members, p)
    dst = np.tile(members, p)
    off = src != dst
    src, dst = src[off], dst[off]
    via = None
    if pxn:
        remote = fabric.host_of(src) != fabric.host_of(dst)
        rail = fabric.nic_of(dst)
        proxy = fabric.port_gpu(fabric.host_of(src), rail)
        via = np.where(remote & (fabric.nic_of(src) != rail) & (proxy != src), proxy, -1)
    for c in range(channels):
        parts.add(src, dst, size / (p * channels), 0, c, via)
    return parts


def over_channels(schedule: Schedule, channels: int, qps: int, gpus: int) -> Schedule:
    """``schedule`` (one channel, no connections) with every message cut over ``channels``
    channels, one connection per (channel, sender, receiver) with ``qps`` queue pairs: how NCCL's
    grouped send/recv (and DeepEP-style dispatch over NCCL-like channels) moves a step's messages.
    One channel and one QP return ``schedule`` itself."""
    if channels == 1 and qps == 1:
        return schedule
    n = schedule.src.shape[0]
    lane = np.repeat(np.arange(channels, dtype=np.int64), n)
    src, dst = np.tile(schedule.src, channels), np.tile(schedule.dst, channels)
    return dataclasses.replace(
        schedule,
        src=src,
        dst=dst,
        nbytes=np.tile(schedule.nbytes / channels, channels),
        step=np.tile(schedule.step, channels),
        lane=lane,
        via=None if schedule.via is None else np.tile(schedule.via, channels),
        leg=None if schedule.leg is None else np.tile(schedule.leg, channels),
        key=(lane * gpus + src) * gpus + dst,
        qps=qps,
        channels=channels,
    )


def check_algorithm(fabric: FabricDescription, op: str, members: np.ndarray, algorithm: str) -> None:
    """Raise :class:`AlgorithmError` (field ``algorithm``) unless ``algorithm`` applies to ``op`` on
    this communicator and fabric, saying what would."""
    allowed = ALGORITHMS.get(op)
    if allowed is None:
        raise AlgorithmError("op", f"{op} has no NCCL algorithms (try one of {', '.join(ALGORITHMS)})")
    if algorithm not in allowed:
        raise AlgorithmError("algorithm", f"{algorithm} does not apply to {op} (try {' or '.join(allowed)})")
    rows = host_rows(fabric, members)
    per_host = {row.shape[0] for row in rows}
    if algorithm in ("nvls", "nvls_tree"):
        if not fabric.nvls:
            raise AlgorithmError(
                "algorithm",
                f"{algorithm} needs an NVLink domain with NVLink SHARP (Hopper-class NVSwitch, gpu: H100); "
                f"this fabric has {fabric.gpu} with {fabric.gpus_per_host} GPUs per host (try ring or tree)",
            )
        if len(per_host) != 1 or per_host == {1}:
            raise AlgorithmError(
                "algorithm", f"{algorithm} needs the same number (> 1) of ranks on every host (try ring)"
            )
        if algorithm == "nvls" and len(rows) > 1:
            hint = "try nvls_tree" if op == "all_reduce" else "try ring"
            raise AlgorithmError("algorithm", f"nvls works inside one NVLink domain; across hosts {hint}")
        if algorithm == "nvls_tree" and len(rows) < 2:
            raise AlgorithmError("algorithm", "nvls_tree joins several hosts; inside one host try nvls")
    if algorithm == "pat" and per_host != {1}:
        raise AlgorithmError(
            "algorithm", f"pat needs one rank per host (this communicator has {max(per_host)}; try ring)"
        )


def nccl_schedule(
    fabric: FabricDescription,
    op: str,
    members: np.ndarray,
    size: float,
    algorithm: str,
    protocol: str,
    channels: int,
    qps: int = 1,
) -> Schedule:
    """The schedule of ``op`` over ``members`` (GPU ids) with an NCCL algorithm and protocol.

    ``size`` follows nccl-tests (:mod:`workloads.collectives`); ``channels`` >= 1; ``qps`` flows
    per connection between hosts. ``ring`` and ``direct`` with one channel, one QP and Simple are
    :mod:`workloads.collectives`' schedules, message for message.
    """
    members = np.asarray(members, dtype=np.int64)
    check_algorithm(fabric, op, members, algorithm)
    if protocol not in PROTOCOLS:
        raise AlgorithmError("protocol", f"{protocol} is not a protocol (try LL, LL128 or Simple)")
    if channels < 1 or qps < 1:
        raise AlgorithmError(
            "channels", f"channels and qps_per_connection must be >= 1, got {channels} and {qps}"
        )
    name = f"{op}/{algorithm}"
    if (
        channels == 1
        and qps == 1
        and algorithm in ("ring", "direct")
        and op != "broadcast"
        and op != "reduce"
    ):
        legacy = {
            "all_gather": collectives.all_gather,
            "reduce_scatter": collectives.reduce_scatter,
            "all_to_all": collectives.all_to_all,
        }.get(op)
        base = legacy(members, size) if legacy else collectives.all_reduce(members, size, "ring")
        return dataclasses.replace(
            base,
            name=name,
            protocol=protocol,
            algorithm=algorithm,
            channels=1,
            launch="p2p" if algorithm == "direct" else "collective",
        )
    if algorithm == "ring" and op in ("broadcast", "reduce"):
        parts = chain_schedule(fabric, op, members, size, channels)
    elif algorithm == "ring":
        parts = ring_schedule(fabric, op, members, size, channels)
    elif algorithm == "tree":
        parts = tree_schedule(fabric, members, size, channels)
    elif algorithm == "nvls" and op != "all_reduce":
        parts = nvls_gather_scatter(op, members, size, channels, fabric)
    elif algorithm in ("nvls", "nvls_tree"):
        parts = nvls_schedule(fabric, members, size, channels, algorithm == "nvls_tree")
    elif algorithm == "pat":
        parts = pat_schedule(op, members, size, channels)
    else:
        parts = all_to_all_schedule(fabric, members, size, channels, algorithm == "pxn")
    return parts.schedule(name, members, algorithm, protocol, channels, qps, fabric.gpus)


NCCL_NVLINK = {"A100": 240e9, "H100": 370.8e9, "H200": 370.8e9}
"""Per-GPU NVLink bandwidth NCCL's topology code assumes, bytes/s (links × per-link speed in
``src/graph/topo.h``: 12 × 20 GB/s on A100, 18 × 20.6 GB/s on H100 and H200)."""

P2P_LL_THRESHOLD = 16384
"""NCCL sends a peer message of at most this many bytes with LL (NCCL_P2P_LL_THRESHOLD)."""

P2P_CHANNELS = 2
"""Channels per remote peer of NCCL's send/recv (NCCL_NCHANNELS_PER_NET_PEER's default)."""


def tuning_topology(fabric: FabricDescription, members: np.ndarray) -> TuningTopology:
    """What NCCL's tuner sees of the communicator ``members`` on ``fabric`` (NCCL's own link
    speeds, the fabric's NIC line rate; a communicator with more ranks on some hosts than others
    as if every host had as many as the fullest); AlgorithmError where the search is not emulated."""
    rows = host_rows(fabric, members)
    rows = sorted(rows, key=len, reverse=True)  # uneven hosts: tuned as if all were the fullest
    if fabric.gpu not in NCCL_NVLINK:
        raise AlgorithmError(
            "algorithm",
            f"auto knows NCCL's choice on {', '.join(NCCL_NVLINK)} only, not {fabric.gpu} (pin one)",
        )
    nics = len(np.unique(fabric.nic_of(rows[0])))
    try:
        return topology_for(
            len(rows),
            rows[0].shape[0],
            nics,
            fabric.gpu,
            fabric.nic_line_rate or fabric.nic_bandwidth,
            NCCL_NVLINK[fabric.gpu],
        )
    except NotImplementedError as err:
        raise AlgorithmError(
            "algorithm", f"auto cannot emulate NCCL's search here ({err}); pin one"
        ) from None


def _auto_all_to_all(
    fabric: FabricDescription, members: np.ndarray, size: float, algorithm: str, protocol: str
) -> tuple[str, str, int]:
    """NCCL's send/recv choices: PXN across hosts, LL for small peer messages, two channels per
    remote peer (one inside a host)."""
    multi = len(host_rows(fabric, members)) > 1
    if algorithm == "auto":
        algorithm = "pxn" if multi else "direct"
    if protocol == "auto":
        protocol = "LL" if size / max(members.shape[0], 1) <= P2P_LL_THRESHOLD else "Simple"
    return algorithm, protocol, P2P_CHANNELS if multi else 1


def resolve(
    fabric: FabricDescription,
    op: str,
    members: np.ndarray,
    size: float,
    algorithm: str,
    protocol: str | None,
    channels: int | None,
) -> tuple[str, str, int]:
    """``(algorithm, protocol, channels)`` with ``auto`` and defaults filled in.

    ``auto`` (algorithm or protocol) is what NCCL's cost model picks (:func:`workloads.nccl_tuning.choose`
    on :func:`tuning_topology`), restricted to the given algorithm or protocol as NCCL_ALGO and
    NCCL_PROTO restrict it. Channels default to what NCCL runs the choice on
    (:func:`workloads.nccl_tuning.channels_used`: fewer for small messages; one ring per NIC, at
    least two, where NCCL's search is not emulated). ``protocol`` None is ``auto`` under
    ``algorithm: auto``, else Simple.
    """
    members = np.asarray(members, dtype=np.int64)
    if protocol is None:
        protocol = "auto" if algorithm == "auto" else "Simple"
    if op == "all_to_all":
        algo, proto, default = _auto_all_to_all(fabric, members, size, algorithm, protocol)
        return algo, proto, default if channels is None else channels
    if algorithm != "auto":
        check_algorithm(fabric, op, members, algorithm)
    if algorithm != "auto" and protocol != "auto":
        if channels is not None:
            return algorithm, protocol, channels
        try:
            topo = tuning_topology(fabric, members)
        except AlgorithmError:  # no emulated search: a ring per NIC, at least two
            return algorithm, protocol, max(2, fabric.nics_per_host)
        return algorithm, protocol, channels_used(op, algorithm, protocol, size, topo)
    topo = tuning_topology(fabric, members)
    if algorithm == "auto" or protocol == "auto":
        usable = tuple(a for a in ALGORITHMS[op] if applies(fabric, op, members, a))
        try:
            algorithm, protocol, _ = choose(
                op,
                size,
                topo,
                algorithms=usable if algorithm == "auto" else (algorithm,),
                protocols=None if protocol == "auto" else (protocol,),
            )
        except ValueError as err:
            raise AlgorithmError("protocol", f"NCCL would not run this ({err})") from None
    if channels is None:
        channels = channels_used(op, algorithm, protocol, size, topo)
    return algorithm, protocol, channels


def applies(fabric: FabricDescription, op: str, members: np.ndarray, algorithm: str) -> bool:
    """Whether ``algorithm`` applies to ``op`` over ``members`` on ``fabric`` (:func:`check_algorithm`)."""
    try:
        check_algorithm(fabric, op, members, algorithm)
    except AlgorithmError:
        return False
    return True
