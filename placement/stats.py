"""What a placement method needs to know about a routing trace, and how to score a placement.

:func:`placement_stats` condenses a :class:`~workloads.routing_trace.RoutingTrace` into counts
(per-expert load, layer-to-layer transitions, tokens from each source GPU to each expert);
:func:`gpu_cost` gives the seconds per byte of moving a token between two GPUs of a leaf-spine
fabric; :func:`evaluate` scores a :class:`~placement.layout.Placement` on those counts: per
layer the GPU token loads, and per consecutive layer pair the affinity traffic (a token that
goes from expert ``e`` at layer ``l`` to ``e'`` at ``l + 1`` moves from ``e``'s GPU to ``e'``'s)
and its topology-weighted cost. Pure numpy.

>>> import numpy as np
>>> from workloads.routing_trace import RoutingTrace
>>> t = RoutingTrace(experts=np.array([[[0], [1]], [[1], [0]]]), source_gpu=np.array([0, 1]),
...                  num_experts=2, top_k=1, layers=2, gpus=2, hidden=4, bytes_per_element=2)
>>> s = placement_stats(t)
>>> s.load.tolist(), s.transitions[0].tolist(), s.source_tokens[0].tolist()
([[1, 1], [1, 1]], [[0, 1], [1, 0]], [[1, 0], [0, 1]])
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from placement.layout import Placement, PlacementError
from workloads.routing_trace import (
    RoutingTrace,
    expert_load,
    gpu_expert_tokens,
    home_transitions,
    transitions,
)


@dataclass(frozen=True)
class PlacementStats:
    """Counts of a routing trace that placement methods fit on (arrays are read-only).

    Attributes:
        load: ``(layers, experts)`` tokens each expert receives; a token counts once per chosen
            expert.
        transitions: ``(layers - 1, experts, experts)`` slot-matched token counts from expert
            ``e`` at layer ``l`` to ``e'`` at layer ``l + 1`` (``routing_trace.transitions``).
        source_tokens: ``(layers, gpus, experts)`` tokens each source GPU sends to each expert.
        gpus: GPUs (expert-parallel ranks) the tokens start on.
        experts: experts per layer.
        layers: MoE layers.
        top_k: experts chosen per token.
        token_bytes: bytes of one token's hidden vector.
    """

    load: np.ndarray
    transitions: np.ndarray
    source_tokens: np.ndarray
    gpus: int
    experts: int
    layers: int
    top_k: int
    token_bytes: int

    def __post_init__(self) -> None:
        for name in ("gpus", "experts", "layers", "top_k", "token_bytes"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < 1:
                raise ValueError(f"PlacementStats.{name}: must be a whole number >= 1, got {value!r}")
            object.__setattr__(self, name, int(value))
        shapes = {
            "load": (self.layers, self.experts),
            "transitions": (self.layers - 1, self.experts, self.experts),
            "source_tokens": (self.layers, self.gpus, self.experts),
        }
        for name, shape in shapes.items():
            array = np.asarray(getattr(self, name))
            if array.shape != shape:
                raise ValueError(f"PlacementStats.{name}: shape {array.shape} must be {shape}")
            view = array.view()
            view.flags.writeable = False
            object.__setattr__(self, name, view)


def placement_stats(trace: RoutingTrace, affinity: str = "slot") -> PlacementStats:
    """The :class:`PlacementStats` of ``trace`` (all its tokens).

    ``affinity`` says which inter-layer moves ``transitions`` counts: ``slot`` (a token's i-th
    expert to its i-th at the next layer, :func:`~workloads.routing_trace.transitions`) or
    ``home`` (its first expert to each of its next experts,
    :func:`~workloads.routing_trace.home_transitions`: the moves of ``token_home: top_expert``).
    """
    if affinity not in ("slot", "home"):
        raise ValueError(f"placement_stats: affinity must be slot or home, got {affinity!r}")
    e = trace.num_experts
    count = transitions if affinity == "slot" else home_transitions
    pairs = [count(trace, layer) for layer in range(trace.layers - 1)]
    return PlacementStats(
        load=expert_load(trace),
        transitions=np.stack(pairs) if pairs else np.zeros((0, e, e), dtype=np.int64),
        source_tokens=np.stack([gpu_expert_tokens(trace, layer) for layer in range(trace.layers)]),
        gpus=trace.gpus,
        experts=e,
        layers=trace.layers,
        top_k=trace.top_k,
        token_bytes=trace.token_bytes,
    )


def gpu_cost(spec_like: Any, gpus: int) -> np.ndarray:
    """``(gpus, gpus)`` seconds per byte of moving a token from one GPU to another.

    0 on the same GPU, ``1 / nvlink_bandwidth`` between GPUs of one host and ``1 /
    nic_bandwidth`` across hosts; GPU ``g`` sits on host ``g // gpus_per_host``. ``spec_like``
    is a :class:`topologies.leaf_spine.LeafSpine` or anything with ``gpus_per_host``,
    ``nvlink_bandwidth`` and ``nic_bandwidth`` (bytes/s) attributes. Latencies and congestion
    are left out: this is a per-byte weight for ranking placements, not a simulation.
    """
    per_host = getattr(spec_like, "gpus_per_host", None)
    if isinstance(gpus, bool) or not isinstance(gpus, int | np.integer) or gpus < 1:
        raise ValueError(f"gpu_cost: gpus must be a whole number >= 1, got {gpus!r}")
    if isinstance(per_host, bool) or not isinstance(per_host, int | np.integer) or per_host < 1:
        raise ValueError(f"gpu_cost: gpus_per_host must be a whole number >= 1, got {per_host!r}")
    for name in ("nvlink_bandwidth", "nic_bandwidth"):
        value = getattr(spec_like, name, None)
        if not isinstance(value, int | float | np.number) or not np.isfinite(value) or value <= 0:
            raise ValueError(f"gpu_cost: {name} must be a positive number of bytes/s, got {value!r}")
    host = np.arange(gpus) // int(per_host)
    same_host = host[:, None] == host[None, :]
    cost = np.where(same_host, 1.0 / float(spec_like.nvlink_bandwidth), 1.0 / float(spec_like.nic_bandwidth))
    np.fill_diagonal(cost, 0.0)
    return cost


def gpu_fractions(placement: Placement, layer: int) -> np.ndarray:
    """``(experts, gpus)`` share of each expert's tokens that each GPU takes in ``layer``."""
    fractions = np.zeros((placement.experts, placement.gpus))
    np.add.at(fractions, (placement.phy2log[layer], placement.gpu_of_slot), placement.weight[layer])
    return fractions


def evaluate(
    placement: Placement, stats: PlacementStats, cost: Any, *, gpus_per_host: int | None = None
) -> dict[str, Any]:
    """Score ``placement`` on ``stats`` with the per-byte GPU-to-GPU ``cost`` (:func:`gpu_cost`).

    A replicated expert's tokens are split over its slots by the placement's ``weight`` (as
    fractions), both for loads and for traffic. The first ``stats.layers`` layers of the
    placement are scored.

    Args:
        placement: the placement (same GPUs and experts as ``stats``, at least as many layers).
        stats: the trace statistics.
        cost: ``(gpus, gpus)`` seconds per byte between GPUs, or a fabric spec (anything
            :func:`gpu_cost` takes, e.g. a ``LeafSpine``), which also tells the hosts.
        gpus_per_host: which GPUs share a host, for the cross-host counts. ``None`` takes it
            from a spec ``cost``; with a cost matrix it is read off the matrix: when the costs
            between different GPUs take two or more values, the pairs dearer than the cheapest
            are cross-host; when they are all equal (one host, or one GPU per host: ambiguous)
            the cross-host counts are NaN — pass ``gpus_per_host`` then.

    Returns:
        A JSON-able dict. Per layer (lists of ``layers``): ``gpu_load`` (a list of ``gpus``
        token loads), ``max_gpu_load``, ``mean_gpu_load``, ``load_ratio`` (max / mean, NaN
        without tokens), ``dispatch_cross_gpu``, ``dispatch_cross_host`` (token copies whose
        source GPU is not their expert's GPU / host) and ``dispatch_cost`` (their bytes times
        ``cost``, seconds). Per layer pair (lists of ``layers - 1``): ``affinity_tokens`` (all
        slot-matched transitions), ``affinity_cross_gpu``, ``affinity_cross_host`` (token
        copies that change GPU / host between the two layers) and ``affinity_cost`` (Σ
        R[l,e,e'] · cost[gpu(e), gpu(e')] · token_bytes, seconds). Totals: ``max_load_ratio``,
        ``mean_load_ratio``, ``total_affinity_cross_gpu``, ``total_affinity_cross_host``,
        ``total_affinity_cost``, ``total_dispatch_cost``; and ``method``.
    """
    gpus, layers = stats.gpus, stats.layers
    if placement.gpus != gpus:
        raise PlacementError(f"evaluate: placement is for {placement.gpus} GPUs but the stats have {gpus}")
    if placement.experts != stats.experts:
        raise PlacementError(
            f"evaluate: placement is for {placement.experts} experts but the stats have {stats.experts}"
        )
    if placement.layers < layers:
        raise PlacementError(
            f"evaluate: placement covers {placement.layers} layers but the stats have {layers}"
        )
    if hasattr(cost, "gpus_per_host"):
        if gpus_per_host is None:
            gpus_per_host = cost.gpus_per_host
        cost = gpu_cost(cost, gpus)
    cost = np.asarray(cost, dtype=np.float64)
    if cost.shape != (gpus, gpus):
        raise ValueError(f"evaluate: cost has shape {cost.shape} but must be ({gpus}, {gpus})")
    cross_host = _cross_host(cost, gpus_per_host)
    cross_gpu = ~np.eye(gpus, dtype=bool)

    fractions = [gpu_fractions(placement, layer) for layer in range(layers)]
    gpu_load = np.stack([stats.load[layer] @ fractions[layer] for layer in range(layers)])
    mean = gpu_load.mean(axis=1)
    peak = gpu_load.max(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        ratio = np.where(mean > 0, peak / np.where(mean > 0, mean, 1.0), np.nan)

    dispatch = [stats.source_tokens[layer] @ fractions[layer] for layer in range(layers)]
    affinity = [
        fractions[layer].T @ stats.transitions[layer] @ fractions[layer + 1] for layer in range(layers - 1)
    ]

    def total(flows: list[np.ndarray], mask: np.ndarray | None) -> list[float]:
        if mask is None:
            return [float("nan")] * len(flows)
        return [float(flow[mask].sum()) for flow in flows]

    def priced(flows: list[np.ndarray]) -> list[float]:
        return [float((flow * cost).sum() * stats.token_bytes) for flow in flows]

    affinity_cost = priced(affinity)
    dispatch_cost = priced(dispatch)
    finite = ratio[np.isfinite(ratio)]
    return {
        "method": placement.method,
        "gpu_load": gpu_load.tolist(),
        "max_gpu_load": peak.tolist(),
        "mean_gpu_load": mean.tolist(),
        "load_ratio": ratio.tolist(),
        "dispatch_cross_gpu": total(dispatch, cross_gpu),
        "dispatch_cross_host": total(dispatch, cross_host),
        "dispatch_cost": dispatch_cost,
        "affinity_tokens": [float(stats.transitions[layer].sum()) for layer in range(layers - 1)],
        "affinity_cross_gpu": total(affinity, cross_gpu),
        "affinity_cross_host": total(affinity, cross_host),
        "affinity_cost": affinity_cost,
        "max_load_ratio": float(finite.max()) if finite.size else float("nan"),
        "mean_load_ratio": float(finite.mean()) if finite.size else float("nan"),
        "total_affinity_cross_gpu": float(sum(total(affinity, cross_gpu))),
        "total_affinity_cross_host": float(sum(total(affinity, cross_host))),
        "total_affinity_cost": float(sum(affinity_cost)),
        "total_dispatch_cost": float(sum(dispatch_cost)),
    }


def _cross_host(cost: np.ndarray, gpus_per_host: int | None) -> np.ndarray | None:
    """Mask of GPU pairs on different hosts; ``None`` when ``cost`` cannot tell."""
    gpus = cost.shape[0]
    if gpus_per_host is not None:
        if (
            isinstance(gpus_per_host, bool)
            or not isinstance(gpus_per_host, int | np.integer)
            or gpus_per_host < 1
        ):
            raise ValueError(f"evaluate: gpus_per_host must be a whole number >= 1, got {gpus_per_host!r}")
        host = np.arange(gpus) // int(gpus_per_host)
        return host[:, None] != host[None, :]
    off = ~np.eye(gpus, dtype=bool)
    if not off.any():
        return np.zeros((gpus, gpus), dtype=bool)  # one GPU: nothing crosses anything
    if np.unique(cost[off]).size < 2:
        return None
    return off & (cost > cost[off].min())
