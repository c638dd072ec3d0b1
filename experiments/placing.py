"""Placements of experiment points: fitted on part of a trace, solved once per run, saved with it.

A MoE point names its placement by method (``round_robin``, ``greedy``, ``eplb:N``, ``ilp`` ...)
or by file. With ``placement_fit: F`` the method sees only the first share ``F`` of the trace's
batches (:func:`workloads.routing_trace.split_by_batch`) and the point simulates the held-out
rest, so a placement is judged on tokens it was not fitted on.

The ILP stops at a wall-clock limit, so two solves need not agree. A run therefore solves each
distinct ILP placement once, in the parent process, before any point runs (:func:`presolve`),
and saves it as ``DIR/placements/ilp-<key>.json`` (the placement, the solver's report and the
fit statistics); every point that needs it, on any worker, reads that file, and ``--resume``
reuses it. So the points of one run agree, and a rerun of the saved results is reproducible.
"""

from __future__ import annotations

import functools
import hashlib
import json
from pathlib import Path
from typing import Any

from experiments.config import Experiment, IlpConfig, SynthConfig, placement_method
from placement.ilp import ilp_placement
from placement.layout import Placement, load_placement, round_robin
from placement.methods import place
from placement.stats import evaluate, gpu_cost, placement_stats
from topologies.leaf_spine import LeafSpine
from workloads.routing_trace import RoutingTrace, load_trace, split_by_batch
from workloads.synthetic_trace import synth_trace


def fit_and_run_traces(trace: RoutingTrace, fit: float | None) -> tuple[RoutingTrace, RoutingTrace]:
    """``(fit, simulated)``: the trace split by ``fit`` (share of batches to fit on), or it twice."""
    if fit is None:
        return trace, trace
    return split_by_batch(trace, fit)


def make_placement(
    method: str,
    trace: RoutingTrace,
    spec: LeafSpine,
    *,
    seed: int = 0,
    ilp: IlpConfig | None = None,
    token_home: str = "source",
) -> tuple[Placement, dict[str, Any]]:
    """Run placement ``method`` (a name of :data:`experiments.config.PLACEMENT_METHODS`, ``eplb:N``)
    on the statistics of ``trace`` for fabric ``spec``. With ``token_home: top_expert`` the ILP's
    affinity term counts the moves that execution makes (first expert to every next expert,
    ``placement_stats(affinity="home")``); otherwise slot-matched transitions.

    Returns ``(placement, info)``; ``info`` is JSON-able: for ``ilp`` the solver's report
    (objective, best bound, gap, status, seconds ...), else empty.

    Raises:
        PlacementError: an infeasible request (one line naming the constraint).
        ValueError: ``method`` is not a placement method.
    """
    parsed = placement_method(method)
    if parsed is None:
        raise ValueError(f"{method!r} is not a placement method")
    name, replicas = parsed
    if name == "round_robin":
        return round_robin(trace.num_experts, trace.gpus, trace.layers), {}
    stats = placement_stats(trace, "home" if token_home == "top_expert" else "slot")
    if name == "ilp":
        settings = ilp or IlpConfig()
        placement, report = ilp_placement(
            stats,
            gpu_cost(spec, trace.gpus),
            lam=settings.lam,
            time_limit=settings.time_limit,
            solver=settings.solver,
            decompose=settings.decompose,
        )
        return placement, {"ilp": report.__dict__.copy()}
    if replicas is None:
        replicas = trace.gpus if name == "eplb" else 0
    return place(name, stats, gpus_per_host=spec.gpus_per_host, seed=seed, replicas=replicas), {}


def placement_document(
    placement: Placement, info: dict[str, Any], fit: RoutingTrace, spec: LeafSpine, affinity: str = "slot"
) -> dict[str, Any]:
    """The JSON written for a solved placement: :meth:`Placement.to_json` plus ``info`` and how it
    scores on the trace it was fitted on (max/mean GPU load, cross-host token copies)."""
    scored = evaluate(placement, placement_stats(fit, affinity), spec)
    keep = (
        "max_load_ratio",
        "mean_load_ratio",
        "total_affinity_cross_host",
        "total_affinity_cross_gpu",
        "total_dispatch_cost",
    )
    return {
        **placement.to_json(),
        **info,
        "fit": {"tokens": fit.tokens, **{key: scored[key] for key in keep}},
    }


def ilp_placement_key(point: Experiment) -> str:
    """What an ILP placement depends on: the trace, the fit share, the fabric, the ILP settings."""
    relevant = point.model_dump(mode="json", include={"workload", "topology", "placement_fit", "ilp"})
    work = point.workload
    if getattr(work, "synth", None) is not None and work.synth.seed is None:
        relevant["seed"] = point.seed  # a synthetic trace follows the point's seed
    if getattr(work, "trace", None) is not None:
        relevant["trace_mtime_ns"] = Path(work.trace).stat().st_mtime_ns
    text = json.dumps(relevant, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def presolve(points: list[Experiment], out: Path) -> list[Experiment]:
    """Solve each distinct ILP placement of ``points`` once into ``out/placements/`` (kept if already
    there) and return the points with ``placement_file`` set for those that use one."""
    from pages.files import write_atomic

    solved: list[Experiment] = []
    for point in points:
        if point.workload.kind != "moe" or placement_method(point.placement) != ("ilp", None):
            solved.append(point)
            continue
        path = Path(out) / "placements" / f"ilp-{ilp_placement_key(point)}.json"
        if not path.is_file():
            spec = point.topology.spec()
            fit, _ = point_traces(point)
            placement, info = make_placement(
                "ilp", fit, spec, seed=point.seed, ilp=point.ilp, token_home=point.workload.token_home
            )
            affinity = "home" if point.workload.token_home == "top_expert" else "slot"
            document = placement_document(placement, info, fit, spec, affinity)
            path.parent.mkdir(parents=True, exist_ok=True)
            text = json.dumps(document, indent=1)
            write_atomic(path, lambda tmp, text=text: tmp.write_text(text))
        copy = point.model_copy()
        copy._placement_file = str(path)
        solved.append(copy)
    return solved


def saved_placement(point: Experiment, trace: RoutingTrace) -> Placement | None:
    """The placement :func:`presolve` saved for ``point``, if any."""
    if point._placement_file is None:
        return None
    return load_placement(point._placement_file, trace.num_experts, trace.layers, trace.gpus)


@functools.lru_cache(maxsize=8)
def _load_trace(path: str, mtime_ns: int) -> RoutingTrace:
    return load_trace(path)


@functools.lru_cache(maxsize=8)
def _synth_trace(
    config: SynthConfig, gpus: int, hidden: int, bytes_per_element: float, seed: int
) -> RoutingTrace:
    return synth_trace(
        experts=config.experts,
        top_k=config.top_k,
        layers=config.layers,
        tokens_per_gpu=config.tokens_per_gpu,
        gpus=gpus,
        imbalance=config.imbalance,
        zipf=config.zipf,
        affinity=config.affinity,
        drift=config.drift,
        batches=config.batches,
        hidden=hidden,
        bytes_per_element=int(bytes_per_element),
        seed=seed,
    )


def point_trace(point: Experiment) -> RoutingTrace:
    """The routing trace of a MoE point: read from its file, or generated (cached per process)."""
    work = point.workload
    if work.trace is not None:
        return _load_trace(str(work.trace), work.trace.stat().st_mtime_ns)
    synth = work.synth
    seed = point.seed if synth.seed is None else synth.seed
    return _synth_trace(synth, point.topology.spec().gpus, work.hidden, work.bytes_per_element, seed)


@functools.lru_cache(maxsize=8)
def _split(trace: RoutingTrace, fit: float | None) -> tuple[RoutingTrace, RoutingTrace]:
    return fit_and_run_traces(trace, fit)


def point_traces(point: Experiment) -> tuple[RoutingTrace, RoutingTrace]:
    """``(fit, simulated)`` traces of a MoE point: split by ``placement_fit``, or the whole trace twice."""
    return _split(point_trace(point), point.placement_fit)
