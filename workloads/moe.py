"""MoE layers as rank programs: dispatch all-to-all, expert compute, combine all-to-all.

For each layer of a routing trace and a placement:

1. **Route.** Every (token, chosen expert) goes to one physical slot holding that expert. With
   replicas, the slot is picked in proportion to the slots' weights, deterministically by token
   id (a low-discrepancy sequence, so shares are met closely and no seed is involved).
2. **Dispatch.** A token's hidden vector (``hidden * bytes_per_element`` bytes) goes once to every
   GPU that holds at least one of its chosen experts (one copy per destination GPU, as DeepEP
   sends); a GPU's own tokens cost no network. ``direct`` sends every copy straight to its GPU.
   ``hierarchical`` (DeepEP internode) sends one copy per destination *host* over the NIC to the
   GPU with the sender's local index there, which forwards it over NVLink to the other target
   GPUs of that host (two steps; the forward starts when the NIC step is done).
3. **Compute.** Each GPU runs its experts on the tokens they received: a grouped GEMM timed by
   the kernel model (:mod:`workloads.kernel_model`).
4. **Combine.** The reverse of dispatch (``combine_bytes_per_element`` per element).

Layers run in sequence; each all-to-all starts when every rank has reached it, so the slowest GPU
sets each layer's time.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from placement.layout import Placement
from simulator.ops import Collective, Compute, Op, Schedule
from topologies.leaf_spine import LeafSpine
from workloads.kernel_model import RooflineGEMM
from workloads.nccl import over_channels
from workloads.routing_trace import RoutingTrace

GOLDEN = 0.6180339887498949


class MoEError(ValueError):
    """A trace, placement and fabric that do not fit together (one-line message)."""


@dataclass(frozen=True)
class LayerTraffic:
    """What one MoE layer moves and computes.

    Attributes:
        dispatch: ``(gpus, gpus)`` token copies sent from each GPU to each GPU (direct; diagonal =
            local, no network).
        host_copies: ``(gpus, hosts)`` token copies each GPU sends to each host (one per token and
            destination host; the sender's own host included).
        slot_tokens: ``(slots,)`` tokens each physical slot's expert processes.
        combine: ``(gpus, gpus)`` output copies sent from each expert GPU to each token's next
            home, when one was given (else None: the combine is the dispatch reversed).
        top_gpu: ``(tokens,)`` the GPU serving each token's first (highest-gate) expert.
    """

    dispatch: np.ndarray
    host_copies: np.ndarray
    slot_tokens: np.ndarray
    combine: np.ndarray | None = None
    top_gpu: np.ndarray | None = None


def route_layer(
    trace: RoutingTrace,
    placement: Placement,
    layer: int,
    gpus_per_host: int,
    home: np.ndarray | None = None,
    next_home: np.ndarray | str | None = None,
) -> LayerTraffic:
    """Route every token of ``layer`` to slots and count the copies and tokens that result.

    ``home`` is the GPU each token is dispatched from (default: its source GPU). With
    ``next_home`` (the GPU each token's output must reach, or ``"top_expert"``: the GPU of its
    first expert), the layer's ``combine`` copy counts are filled in: one copy per (token,
    expert GPU) to ``next_home``.
    """
    experts = np.asarray(trace.experts[layer], dtype=np.int64)  # (tokens, top_k)
    tokens, top_k = experts.shape
    token = np.repeat(np.arange(tokens, dtype=np.int64), top_k)
    chosen = experts.reshape(-1)
    slot = _pick_slots(placement, layer, chosen, token)
    gpu = placement.gpu_of_slot[slot]
    gpus = placement.gpus
    src = np.asarray(trace.source_gpu if home is None else home, dtype=np.int64)
    dispatch = _copies(token, gpu, src, gpus, gpus)  # one copy per (token, destination GPU)
    hosts = -(-gpus // gpus_per_host)
    host_copies = _copies(token, gpu // gpus_per_host, src, gpus, hosts)
    slot_tokens = np.bincount(slot, minlength=placement.phy2log.shape[1])
    top_gpu = gpu.reshape(tokens, top_k)[:, 0]
    combine = None
    if next_home is not None:
        target = top_gpu if isinstance(next_home, str) else np.asarray(next_home, dtype=np.int64)
        combine = _copies(token, gpu, target, gpus, gpus).T.copy()
    return LayerTraffic(dispatch, host_copies, slot_tokens, combine, top_gpu)


def _copies(token: np.ndarray, dest: np.ndarray, src: np.ndarray, gpus: int, dests: int) -> np.ndarray:
    """``(gpus, dests)`` count of distinct (token, destination) pairs by the token's source GPU."""
    present = np.zeros(src.shape[0] * dests, dtype=bool)
    present[token * dests + dest] = True
    pair = np.flatnonzero(present)
    return np.bincount(src[pair // dests] * dests + pair % dests, minlength=gpus * dests).reshape(gpus, dests)


def _pick_slots(placement: Placement, layer: int, expert: np.ndarray, token: np.ndarray) -> np.ndarray:
    """The physical slot serving each (token, expert): replicas in proportion to their weights."""
    row = placement.phy2log[layer]
    order = np.argsort(row, kind="stable")  # slots grouped by expert
    owner = row[order]
    cumulative = np.cumsum(placement.weight[layer][order])
    group_start = np.searchsorted(owner, owner)  # first slot of each slot's expert
    within = cumulative - np.concatenate([[0.0], cumulative])[group_start]
    # Slot j of expert e covers (e + within[j-1], e + within[j]]; an expert's last slot ends at e + 1.
    last = np.r_[owner[1:] != owner[:-1], True]
    edges = np.where(last, owner + 1.0, owner + within)
    u = (token.astype(np.float64) * GOLDEN) % 1.0
    index = np.searchsorted(edges, expert + u, side="right")
    return order[np.minimum(index, order.shape[0] - 1)]


def _pairs(matrix: np.ndarray, ranks: np.ndarray, unit: float, step: int) -> tuple:
    """Messages of a (src, dst) copy-count matrix, diagonal dropped, as a schedule part."""
    src, dst = np.nonzero(matrix)
    keep = src != dst
    src, dst = src[keep], dst[keep]
    return ranks[src], ranks[dst], matrix[src, dst] * unit, np.full(src.shape[0], step, dtype=np.int64)


def _schedule(name: str, ranks: np.ndarray, parts: list[tuple]) -> Schedule:
    src = np.concatenate([p[0] for p in parts])
    dst = np.concatenate([p[1] for p in parts])
    nbytes = np.concatenate([p[2] for p in parts]).astype(np.float64)
    step = np.concatenate([p[3] for p in parts])
    n_steps = int(step.max()) + 1 if step.size else 1
    return Schedule(ranks, src, dst, nbytes, step, n_steps, name)


def dispatch_schedule(
    traffic: LayerTraffic,
    ranks: np.ndarray,
    token_bytes: float,
    gpus_per_host: int,
    hierarchical: bool,
    name: str,
) -> Schedule:
    """The dispatch all-to-all of one layer (see the module docstring)."""
    if not hierarchical:
        return _schedule(name, ranks, [_pairs(traffic.dispatch, ranks, token_bytes, 0)])
    gpus = traffic.dispatch.shape[0]
    if gpus % gpus_per_host:
        raise MoEError(
            f"hierarchical dispatch needs whole hosts: {gpus} GPUs is not a multiple of {gpus_per_host}"
        )
    host = np.arange(gpus) // gpus_per_host
    local = np.arange(gpus) % gpus_per_host
    # Step 0: one copy per remote host to the GPU with the sender's local index there; own host direct.
    nic = np.zeros_like(traffic.dispatch)
    relay = np.arange(traffic.host_copies.shape[1])[None, :] * gpus_per_host + local[:, None]
    remote = np.arange(traffic.host_copies.shape[1])[None, :] != host[:, None]
    np.add.at(
        nic,
        (np.broadcast_to(np.arange(gpus)[:, None], relay.shape)[remote], relay[remote]),
        traffic.host_copies[remote],
    )
    own = np.where(host[:, None] == host[None, :], traffic.dispatch, 0)
    # Step 1: each relay forwards what it received to the other target GPUs of its host (NVLink).
    forward = np.zeros_like(traffic.dispatch)
    s, d = np.nonzero((traffic.dispatch > 0) & (host[:, None] != host[None, :]))
    r = host[d] * gpus_per_host + local[s]
    hop = r != d
    np.add.at(forward, (r[hop], d[hop]), traffic.dispatch[s[hop], d[hop]])
    parts = [
        _pairs(nic, ranks, token_bytes, 0),
        _pairs(own, ranks, token_bytes, 0),
        _pairs(forward, ranks, token_bytes, 1),
    ]
    return _schedule(name, ranks, parts)


def reverse(schedule: Schedule, scale: float, name: str) -> Schedule:
    """The combine of a dispatch: every message back the other way, steps in reverse order, bytes × scale."""
    step = schedule.n_steps - 1 - schedule.step
    return Schedule(
        schedule.ranks, schedule.dst, schedule.src, schedule.nbytes * scale, step, schedule.n_steps, name
    )


def moe_programs(
    trace: RoutingTrace,
    placement: Placement,
    spec: LeafSpine,
    kernel: RooflineGEMM,
    *,
    hidden: int,
    ffn_hidden: int,
    bytes_per_element: float,
    combine_bytes_per_element: float | None = None,
    hierarchical: bool = False,
    layers: int | None = None,
    token_home: str = "source",
    channels: int = 1,
    qps: int = 1,
) -> dict[int, list[Op]]:
    """Per-rank programs of the MoE layers of ``trace`` under ``placement`` on fabric ``spec``.

    The trace's GPUs are the fabric's first ``trace.gpus`` GPUs. Returns GPU id -> ops.

    ``token_home``: ``source`` (every layer dispatches from, and combines back to, the token's
    source GPU) or ``top_expert`` (ExFlow-style affinity execution: a layer combines a token's
    expert outputs on the GPU of its first expert, which dispatches it to the next layer; the
    last layer combines back to the source). Under ``top_expert`` a token that stays with
    experts of one GPU costs no network, so inter-layer affinity pays; its combine is direct.

    ``channels`` and ``qps``: dispatch and combine run over that many channels with that many queue
    pairs per connection (:func:`workloads.nccl.over_channels`); 1 and 1 is one flow per message.
    """
    if token_home not in ("source", "top_expert"):
        raise MoEError(f"token_home: {token_home!r} is not source or top_expert")
    if token_home == "top_expert" and hierarchical:
        raise MoEError("token_home: top_expert combines directly; use it with dispatch: direct")
    if trace.gpus > spec.gpus:
        raise MoEError(
            f"workload: the trace spreads tokens over {trace.gpus} GPUs but the fabric has {spec.gpus}"
        )
    if placement.gpus != trace.gpus:
        raise MoEError(f"placement: made for {placement.gpus} GPUs but the trace has {trace.gpus}")
    n_layers = trace.layers if layers is None else min(layers, trace.layers)
    if placement.layers < n_layers:
        raise MoEError(f"placement: covers {placement.layers} layers, the workload runs {n_layers}")
    ranks = np.arange(trace.gpus, dtype=np.int64)
    token_bytes = float(hidden) * bytes_per_element
    combine_scale = (combine_bytes_per_element or bytes_per_element) / bytes_per_element
    programs: dict[int, list[Op]] = {int(r): [] for r in ranks}
    gpu_of_slot = placement.gpu_of_slot
    source = np.asarray(trace.source_gpu, dtype=np.int64)
    home = source
    for layer in range(n_layers):
        next_home: np.ndarray | str | None = None
        if token_home == "top_expert":
            next_home = source if layer == n_layers - 1 else "top_expert"
        traffic = route_layer(trace, placement, layer, spec.gpus_per_host, home, next_home)
        dispatch = dispatch_schedule(
            traffic, ranks, token_bytes, spec.gpus_per_host, hierarchical, f"moe{layer}/dispatch"
        )
        if traffic.combine is None:
            combine = reverse(dispatch, combine_scale, f"moe{layer}/combine")
        else:
            unit = token_bytes * combine_scale
            combine = _schedule(f"moe{layer}/combine", ranks, [_pairs(traffic.combine, ranks, unit, 0)])
            home = traffic.top_gpu
        dispatch = over_channels(dispatch, channels, qps, spec.gpus)
        combine = over_channels(combine, channels, qps, spec.gpus)
        dispatch_op, combine_op = Collective(dispatch), Collective(combine)
        for r in ranks:
            tokens = traffic.slot_tokens[gpu_of_slot == r]
            programs[int(r)] += [
                dispatch_op,
                Compute(kernel.gpu_time(tokens, hidden, ffn_hidden), label=f"moe{layer}/experts"),
                combine_op,
            ]
    return programs


def moe_metrics(ops: pd.DataFrame, links: pd.DataFrame) -> dict[str, float]:
    """Per-point MoE metrics of a simulated run of :func:`moe_programs` (seconds and bytes).

    Means over the simulated layers of: ``layer_time_s`` (first dispatch start to last combine
    end), ``dispatch_time_s`` and ``combine_time_s`` (first rank in to last rank out of the
    all-to-all), ``a2a_tail_s`` (last rank out minus the median rank out, both all-to-alls),
    ``expert_time_s`` (the slowest GPU's expert compute) and ``expert_time_ratio`` (slowest over
    mean GPU expert compute); and ``cross_host_bytes``, the bytes sent into the network by NICs.
    """
    parts = ops["label"].str.extract(r"^moe(?P<layer>\d+)/(?P<phase>dispatch|experts|combine)$")
    moe = ops.assign(layer=parts["layer"], phase=parts["phase"]).dropna(subset=["layer"])
    if moe.empty:
        raise MoEError("moe_metrics: the ops hold no MoE layer (labels moeN/dispatch|experts|combine)")
    moe = moe.assign(duration=moe["end"] - moe["start"])
    by = moe.groupby(["layer", "phase"])
    span = by["end"].max() - by["start"].min()
    tail = by["end"].max() - by["end"].median()
    layer_time = moe.groupby("layer")["end"].max() - moe.groupby("layer")["start"].min()
    experts = moe[moe["phase"] == "experts"].groupby("layer")["duration"]
    mean_expert = experts.mean()
    ratio = (experts.max() / mean_expert.where(mean_expert > 0)).dropna()
    nic = links["kind"] == "nic_up"
    return {
        "layer_time_s": float(layer_time.mean()),
        "dispatch_time_s": float(span.xs("dispatch", level="phase").mean()),
        "combine_time_s": float(span.xs("combine", level="phase").mean()),
        "a2a_tail_s": float(tail.drop("experts", level="phase").mean()),
        "expert_time_s": float(experts.max().mean()),
        "expert_time_ratio": float(ratio.mean()) if len(ratio) else float("nan"),
        "cross_host_bytes": float(links.loc[nic, "bytes"].sum()),
    }
