"""Baseline expert placements fitted on a routing trace's :class:`~placement.stats.PlacementStats`.

- :func:`random_placement`: a seeded random permutation of the experts over the GPU slots, per layer.
- :func:`greedy`: longest-processing-time (LPT) load balancing with equal experts per GPU.
- :func:`eplb` / :func:`eplb_placement`: DeepSeek's Expert Parallelism Load Balancer
  (``rebalance_experts`` of github.com/deepseek-ai/EPLB), re-implemented in numpy from its
  published description: replicate the heaviest experts into spare slots and pack the replicas
  so GPUs (and, hierarchically, hosts) carry balanced loads.
- ``round_robin`` is :func:`placement.layout.round_robin`.

:data:`METHODS` maps each name to a callable ``(stats, *, gpus_per_host, seed, replicas) ->
Placement`` (:func:`place` calls one by name). Only ``eplb`` uses replicas; the others raise
:class:`~placement.layout.PlacementError` when asked for any.

>>> import numpy as np
>>> w = np.array([[90, 132, 40, 61, 104, 165, 39, 4, 73, 56, 183, 86]])
>>> phy2log, log2phy, logcnt = eplb(w, num_replicas=16, num_groups=4, num_nodes=2, num_gpus=8)
>>> phy2log.tolist()
[[5, 6, 5, 7, 8, 4, 3, 4, 10, 9, 10, 2, 0, 1, 11, 1]]
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

import numpy as np

from placement.layout import Placement, PlacementError, round_robin
from placement.stats import PlacementStats

__all__ = [
    "METHODS",
    "PlacementMethod",
    "default_num_groups",
    "eplb",
    "eplb_placement",
    "greedy",
    "place",
    "random_placement",
]


def _need_divisible(method: str, experts: int, gpus: int) -> None:
    if experts % gpus:
        raise PlacementError(
            f"{method}: {experts} experts cannot be split equally over {gpus} GPUs without replicas "
            f"(use a GPU count that divides {experts}, or eplb with replicas)"
        )


# ----------------------------------------------------------------------------------------------
# random and greedy


def random_placement(stats: PlacementStats, seed: int = 0) -> Placement:
    """A seeded uniformly random permutation of the experts over the GPUs, drawn per layer.

    Every GPU gets ``experts / gpus`` experts; the same seed gives the same placement.
    """
    _need_divisible("random", stats.experts, stats.gpus)
    rng = np.random.default_rng(seed)
    phy2log = np.stack([rng.permutation(stats.experts) for _ in range(stats.layers)])
    return Placement(phy2log, stats.gpus, stats.experts, method="random")


def _lpt(weight: np.ndarray, packs: int, dtype: type = np.float64) -> tuple[np.ndarray, np.ndarray]:
    """Longest-processing-time packing of ``weight`` (1-D) into ``packs`` packs of equal size.

    Items go in order of weight, heaviest first (equal weights: lower index first), each to the
    lightest pack that still has room (equal loads: lowest pack index). Loads are summed in
    ``dtype``. Returns ``(pack, rank)``: each item's pack and its position there (0, 1, ... in
    the order the pack received them).
    """
    items = weight.shape[0]
    size = items // packs
    weight = weight.astype(dtype, copy=False)
    order = np.argsort(-weight, kind="stable")
    pack_load = np.zeros(packs, dtype=dtype)
    pack_items = np.zeros(packs, dtype=np.int64)
    pack = np.empty(items, dtype=np.int64)
    rank = np.empty(items, dtype=np.int64)
    for item in order:
        target = int(np.argmin(np.where(pack_items < size, pack_load, np.inf)))
        pack[item] = target
        rank[item] = pack_items[target]
        pack_load[target] += weight[item]
        pack_items[target] += 1
    return pack, rank


def greedy(stats: PlacementStats) -> Placement:
    """Per layer, LPT load balancing with ``experts / gpus`` experts on every GPU.

    Experts are taken by load, heaviest first (equal loads: lower expert id first), each onto
    the GPU with the smallest load among those with a free slot (equal loads: lowest GPU id).
    Within a GPU the slots list its experts in id order. No replicas.
    """
    _need_divisible("greedy", stats.experts, stats.gpus)
    phy2log = np.empty((stats.layers, stats.experts), dtype=np.int64)
    for layer in range(stats.layers):
        gpu, _ = _lpt(np.asarray(stats.load[layer], dtype=np.float64), stats.gpus)
        phy2log[layer] = np.argsort(gpu, kind="stable")  # GPU-major, expert ids ascending
    return Placement(phy2log, stats.gpus, stats.experts, method="greedy")


# ----------------------------------------------------------------------------------------------
# EPLB
#
# The algorithm (DeepSeek EPLB, rebalance_experts) on one layer, hierarchical policy: the
# experts form num_groups groups of consecutive ids. (1) Pack groups onto nodes with the LPT
# packing above (equal groups per node), summing each group's load. Within a node the experts
# are renumbered node-major: a node's groups in the order the node received them, each group's
# experts in id order. (2) Within each node, the node's experts take its first slots in that
# order; each further slot (num_replicas / num_nodes per node) goes to the expert with the
# highest load per replica (equal: lowest renumbered id), replica ranks counting 0, 1, ...
# (3) Pack the node's physical replicas (load = expert load / its replica count) onto the
# node's GPUs with the LPT packing; a replica's slot is gpu * slots_per_gpu + its rank in the
# pack. When every pack gets one item the packing is the identity (item i to pack i). The
# global policy is the same with one group on one node. Loads are float32, as in the reference.


def _eplb_layer(
    weight: np.ndarray, num_replicas: int, num_groups: int, num_nodes: int, num_gpus: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One layer of the hierarchical EPLB policy: ``(phy2log, replica rank, logcnt)``."""
    experts = weight.shape[0]
    group_size = experts // num_groups
    experts_per_node = experts // num_nodes
    slots_per_node = num_replicas // num_nodes
    gpus_per_node = num_gpus // num_nodes
    slots_per_gpu = num_replicas // num_gpus

    # (1) groups onto nodes; node-major renumbering of the experts
    group_load = weight.reshape(num_groups, group_size).sum(axis=1, dtype=np.float32)
    node, rank = _eplb_pack(group_load, num_nodes)
    group_position = node * (num_groups // num_nodes) + rank  # position of each group, node-major
    renumbered = (group_position[:, None] * group_size + np.arange(group_size)).ravel()
    original = np.empty(experts, dtype=np.int64)  # renumbered id -> logical expert
    original[renumbered] = np.arange(experts)

    phy2log = np.empty(num_replicas, dtype=np.int64)
    replica_rank = np.empty(num_replicas, dtype=np.int64)
    count = np.empty(experts, dtype=np.int64)  # by renumbered id
    for n in range(num_nodes):
        local = original[n * experts_per_node : (n + 1) * experts_per_node]
        local_weight = weight[local]
        # (2) replicate within the node
        holder = np.empty(slots_per_node, dtype=np.int64)  # physical replica -> local expert
        holder[:experts_per_node] = np.arange(experts_per_node)
        replica = np.zeros(slots_per_node, dtype=np.int64)
        copies = np.ones(experts_per_node, dtype=np.int64)
        for p in range(experts_per_node, slots_per_node):
            best = int(np.argmax(local_weight / copies.astype(np.float32)))
            holder[p] = best
            replica[p] = copies[best]
            copies[best] += 1
        count[n * experts_per_node : (n + 1) * experts_per_node] = copies
        # (3) replicas onto the node's GPUs
        per_replica = (local_weight / copies.astype(np.float32))[holder]
        gpu, position = _eplb_pack(per_replica, gpus_per_node)
        slot = n * slots_per_node + gpu * slots_per_gpu + position
        phy2log[slot] = local[holder]
        replica_rank[slot] = replica
    logcnt = count[renumbered]
    return phy2log, replica_rank, logcnt


def _eplb_pack(weight: np.ndarray, packs: int) -> tuple[np.ndarray, np.ndarray]:
    if weight.shape[0] == packs:  # one item per pack: the identity, as in the reference
        return np.arange(packs), np.zeros(packs, dtype=np.int64)
    return _lpt(weight, packs, np.float32)


def eplb(
    weight: np.ndarray, num_replicas: int, num_groups: int, num_nodes: int, num_gpus: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """DeepSeek EPLB ``rebalance_experts``: replicate and place experts to balance GPU loads.

    Uses the hierarchical policy when ``num_groups % num_nodes == 0`` (groups of consecutive
    experts packed onto nodes, then replication and packing within each node), else the global
    policy (replication and packing over all GPUs as one node). Physical slot ``p`` lies on GPU
    ``p // (num_replicas / num_gpus)``, GPUs ``num_gpus / num_nodes`` per node, node-major.

    Args:
        weight: ``(layers, experts)`` load of every logical expert.
        num_replicas: physical expert slots in all (experts plus redundant ones); a multiple of
            ``num_gpus``.
        num_groups: expert groups (consecutive ids); must divide ``experts`` in the hierarchical
            policy.
        num_nodes: server nodes (hosts); must divide ``num_gpus``.
        num_gpus: GPUs.

    Returns:
        ``(phy2log, log2phy, logcnt)``: ``(layers, num_replicas)`` logical expert of every
        slot; ``(layers, experts, max logcnt)`` the slots of every expert by replica rank, -1
        padded; ``(layers, experts)`` replicas per expert. All int64.

    Raises:
        PlacementError: a constraint the arguments break (named in the one-line message).
    """
    weight = np.asarray(weight)
    if weight.ndim != 2 or weight.shape[1] < 1:
        raise PlacementError(f"eplb: weight must be (layers, experts), got shape {weight.shape}")
    if not np.all(np.isfinite(weight)) or np.any(weight < 0):
        raise PlacementError("eplb: weight must hold finite non-negative loads")
    layers, experts = weight.shape
    for name, value in (
        ("num_replicas", num_replicas),
        ("num_groups", num_groups),
        ("num_nodes", num_nodes),
        ("num_gpus", num_gpus),
    ):
        if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < 1:
            raise PlacementError(f"eplb: {name} must be a whole number >= 1, got {value!r}")
    if num_gpus % num_nodes:
        raise PlacementError(f"eplb: num_gpus={num_gpus} must be a multiple of num_nodes={num_nodes}")
    if num_replicas < experts:
        raise PlacementError(f"eplb: num_replicas={num_replicas} must be at least the {experts} experts")
    if num_replicas % num_gpus:
        raise PlacementError(
            f"eplb: num_replicas={num_replicas} slots cannot be spread equally over {num_gpus} GPUs "
            f"(use a multiple of {num_gpus})"
        )
    if num_groups % num_nodes:
        num_groups = num_nodes = 1  # the global policy
    elif experts % num_groups:
        raise PlacementError(f"eplb: {experts} experts cannot form num_groups={num_groups} equal groups")
    weight = weight.astype(np.float32)
    phy2log = np.empty((layers, num_replicas), dtype=np.int64)
    rank = np.empty((layers, num_replicas), dtype=np.int64)
    logcnt = np.empty((layers, experts), dtype=np.int64)
    for layer in range(layers):
        phy2log[layer], rank[layer], logcnt[layer] = _eplb_layer(
            weight[layer], num_replicas, num_groups, num_nodes, num_gpus
        )
    width = int(logcnt.max()) if logcnt.size else 1
    log2phy = np.full((layers, experts, width), -1, dtype=np.int64)
    log2phy[np.arange(layers)[:, None], phy2log, rank] = np.arange(num_replicas)
    return phy2log, log2phy, logcnt


def default_num_groups(experts: int, num_nodes: int) -> int:
    """The expert groups :func:`eplb_placement` uses: one expert per group, or 1.

    A routing trace carries no expert groups (DeepSeek-V3's group-limited routing is a model
    property), so every expert is its own group when ``num_nodes`` divides ``experts``: the
    hierarchical policy then packs single experts onto hosts by load before replicating within
    each host. (Groups = hosts would pin consecutive blocks of experts to hosts unbalanced.)
    Otherwise 1, the global policy when there are several hosts.
    """
    return experts if experts % num_nodes == 0 else 1


def eplb_placement(
    stats: PlacementStats, gpus_per_host: int | None, replicas: int, *, num_groups: int | None = None
) -> Placement:
    """:func:`eplb` on the per-layer expert load of ``stats``, as a :class:`Placement`.

    Args:
        stats: the trace statistics (its ``load`` is EPLB's weight).
        gpus_per_host: GPUs per host (EPLB's node); hosts = ``gpus / gpus_per_host`` when that
            divides evenly, else (or with ``None``) all GPUs count as one node.
        replicas: redundant slots wanted on top of one per expert (>= 0). The slot count
            ``experts + replicas`` is rounded *up* to a multiple of ``gpus`` so every GPU gets
            the same number of slots (e.g. 64 experts, 16 GPUs, replicas=8 gives 80 slots).
        num_groups: EPLB expert groups; default :func:`default_num_groups`.

    A replicated expert's tokens are split evenly over its replicas (EPLB's assumption), which
    is :class:`Placement`'s default weight.
    """
    gpus, experts = stats.gpus, stats.experts
    if isinstance(replicas, bool) or not isinstance(replicas, int | np.integer) or replicas < 0:
        raise PlacementError(f"eplb: replicas must be a whole number >= 0, got {replicas!r}")
    if gpus_per_host is not None and (
        isinstance(gpus_per_host, bool)
        or not isinstance(gpus_per_host, int | np.integer)
        or gpus_per_host < 1
    ):
        raise PlacementError(f"eplb: gpus_per_host must be a whole number >= 1, got {gpus_per_host!r}")
    nodes = gpus // gpus_per_host if gpus_per_host and gpus % gpus_per_host == 0 else 1
    slots = -(-(experts + int(replicas)) // gpus) * gpus
    groups = default_num_groups(experts, nodes) if num_groups is None else num_groups
    phy2log, _, _ = eplb(np.asarray(stats.load), slots, groups, nodes, gpus)
    return Placement(phy2log, gpus, experts, method="eplb")


# ----------------------------------------------------------------------------------------------
# registry


class PlacementMethod(Protocol):
    def __call__(
        self, stats: PlacementStats, *, gpus_per_host: int | None = None, seed: int = 0, replicas: int = 0
    ) -> Placement: ...


def _no_replicas(method: str, replicas: int) -> None:
    if replicas:
        raise PlacementError(
            f"{method}: does not place replicas (got replicas={replicas}); use eplb for replicas"
        )


def _round_robin(
    stats: PlacementStats, *, gpus_per_host: int | None = None, seed: int = 0, replicas: int = 0
) -> Placement:
    _no_replicas("round_robin", replicas)
    return round_robin(stats.experts, stats.gpus, stats.layers)


def _random(
    stats: PlacementStats, *, gpus_per_host: int | None = None, seed: int = 0, replicas: int = 0
) -> Placement:
    _no_replicas("random", replicas)
    return random_placement(stats, seed)


def _greedy(
    stats: PlacementStats, *, gpus_per_host: int | None = None, seed: int = 0, replicas: int = 0
) -> Placement:
    _no_replicas("greedy", replicas)
    return greedy(stats)


def _eplb(
    stats: PlacementStats, *, gpus_per_host: int | None = None, seed: int = 0, replicas: int = 0
) -> Placement:
    return eplb_placement(stats, gpus_per_host, replicas)


METHODS: dict[str, Callable[..., Placement]] = {
    "round_robin": _round_robin,
    "random": _random,
    "greedy": _greedy,
    "eplb": _eplb,
}
"""Placement baselines by name: ``(stats, *, gpus_per_host=None, seed=0, replicas=0) -> Placement``."""


def place(
    name: str, stats: PlacementStats, *, gpus_per_host: int | None = None, seed: int = 0, replicas: int = 0
) -> Placement:
    """Run the baseline ``name`` of :data:`METHODS`; an unknown name raises :class:`PlacementError`."""
    if name not in METHODS:
        raise PlacementError(f"placement method {name!r} is unknown (choose from {', '.join(METHODS)})")
    return METHODS[name](stats, gpus_per_host=gpus_per_host, seed=seed, replicas=replicas)
