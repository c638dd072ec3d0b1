"""The annealing in front of the ILP's layer sweeps: its numba moves against plain numpy, its result.

Every move value of the kernel (:func:`placement.anneal._swap_delta`, chained over a chain
segment with :func:`placement.anneal._apply_swap`) is compared with the objective recomputed
from scratch in numpy (:func:`placement.anneal.swap_delta_reference`), and the kernel's
incremental state (``A`` and the GPU loads) with the same state rebuilt from scratch.
"""

from __future__ import annotations

import numpy as np
import pytest

from placement.anneal import (
    _affinity_cost,
    _apply_swap,
    _swap_delta,
    anneal,
    chain_successors,
    swap_delta_reference,
)
from placement.ilp import cost_tiers, ilp_placement, placement_objective
from placement.layout import PlacementError, round_robin
from placement.stats import evaluate, gpu_cost, placement_stats
from topologies.leaf_spine import LeafSpine
from workloads.synthetic_trace import synth_trace


def problem(experts: int, gpus: int, layers: int, gpus_per_host: int, affinity: float, seed: int):
    trace = synth_trace(
        experts=experts, top_k=2, layers=layers, tokens_per_gpu=256, gpus=gpus,
        imbalance=1.0, affinity=affinity, seed=seed,
    )  # fmt: skip
    stats = placement_stats(trace)
    spec = LeafSpine(
        leaves=gpus // gpus_per_host, spines=1, hosts_per_leaf=1, gpus_per_host=gpus_per_host,
        nic_bandwidth=50e9, uplink_bandwidth=50e9, nvlink_bandwidth=450e9,
    )  # fmt: skip
    cost = gpu_cost(spec, gpus)
    load = np.stack([np.asarray(stats.load[layer], dtype=np.float64) for layer in range(layers)])
    pairs = np.asarray(stats.transitions, dtype=np.float64)
    return stats, cost, load, pairs, cost_tiers(cost, gpus).normalised


def rr_gpu(experts: int, gpus: int, layers: int) -> np.ndarray:
    return np.tile(np.arange(experts) // (experts // gpus), (layers, 1)).astype(np.int64)


def affinity_reference(gpu: np.ndarray, pairs: np.ndarray, c: np.ndarray) -> np.ndarray:
    """``A[l,e,g]`` in numpy: the traffic cost of expert e of layer l were it on GPU g."""
    layers, experts = gpu.shape
    a = np.zeros((layers, experts, c.shape[0]))
    for layer in range(layers - 1):
        a[layer] += pairs[layer] @ c[:, gpu[layer + 1]].T
        a[layer + 1] += pairs[layer].T @ c[gpu[layer]]
    return a


def test_affinity_cost_matches_numpy() -> None:
    _, _, _, pairs, c = problem(16, 8, 4, 4, 0.5, 3)
    gpu = np.random.default_rng(0).permuted(rr_gpu(16, 8, 4), axis=1)
    np.testing.assert_allclose(_affinity_cost(gpu, pairs, c), affinity_reference(gpu, pairs, c), atol=1e-9)


@pytest.mark.parametrize("seed", range(3))
def test_moves_match_the_numpy_objective(seed: int) -> None:
    """Single swaps and chain segments: the kernel's change equals the recomputed objective's."""
    _, _, load, pairs, c = problem(16, 8, 5, 4, 0.6, 10 + seed)
    weight = 1 / 8
    rng = np.random.default_rng(seed)
    gpu = rng.permuted(rr_gpu(16, 8, 5), axis=1)
    a = _affinity_cost(gpu, pairs, c)
    gl = np.stack([np.bincount(gpu[layer], weights=load[layer], minlength=8) for layer in range(5)])
    nxt = chain_successors(pairs)
    for trial in range(60):
        first = int(rng.integers(5))
        span = 1 if trial % 2 == 0 else int(rng.integers(1, 5 - first + 1))
        x, y = (int(v) for v in rng.choice(16, 2, replace=False))
        swaps, delta = [], 0.0
        for layer in range(first, first + span):
            if layer > first:
                x, y = int(nxt[layer - 1, x]), int(nxt[layer - 1, y])
            swaps.append((layer, x, y))
            before = gpu.copy()
            delta += _swap_delta(gpu, load, a, gl, layer, x, y, weight)
            _apply_swap(gpu, load, pairs, c, a, gl, layer, x, y)
            assert sorted(gpu[layer]) == sorted(before[layer])  # counts per GPU kept
        reference = swap_delta_reference(gpu_before := _undo(gpu, swaps), load, pairs, c, weight, swaps)
        assert delta == pytest.approx(reference, abs=1e-7)
        assert np.array_equal(_redo(gpu_before, swaps), gpu)
        np.testing.assert_allclose(a, affinity_reference(gpu, pairs, c), atol=1e-7)
        expected_gl = [np.bincount(gpu[layer], weights=load[layer], minlength=8) for layer in range(5)]
        np.testing.assert_allclose(gl, np.stack(expected_gl), atol=1e-9)


def _undo(gpu: np.ndarray, swaps: list[tuple[int, int, int]]) -> np.ndarray:
    out = gpu.copy()
    for layer, x, y in reversed(swaps):
        out[layer, x], out[layer, y] = out[layer, y], out[layer, x]
    return out


def _redo(gpu: np.ndarray, swaps: list[tuple[int, int, int]]) -> np.ndarray:
    out = gpu.copy()
    for layer, x, y in swaps:
        out[layer, x], out[layer, y] = out[layer, y], out[layer, x]
    return out


def test_chain_successors_are_a_heaviest_first_matching() -> None:
    r = np.array([[[1.0, 9.0, 0.0], [8.0, 7.0, 0.0], [0.0, 0.0, 5.0]]])
    assert chain_successors(r).tolist() == [[1, 0, 2]]
    _, _, _, pairs, _ = problem(16, 8, 4, 4, 0.5, 2)
    for row in chain_successors(pairs):
        assert sorted(row) == list(range(16))  # every expert gets a distinct successor


def test_anneal_improves_keeps_counts_and_reports_the_true_objective() -> None:
    stats, cost, load, pairs, c = problem(32, 8, 4, 4, 0.7, 5)
    start = rr_gpu(32, 8, 4)
    result = anneal(start, load, pairs, c, weight=1 / 8, moves=60_000, seed=3)
    assert result.objective < result.start_objective
    for layer in range(4):
        assert np.bincount(result.gpu_of[layer], minlength=8).tolist() == [4] * 8
    from placement.ilp import _to_placement

    placed = _to_placement(result.gpu_of, 8, 32)
    assert result.objective == pytest.approx(placement_objective(placed, stats, cost), rel=1e-12)
    assert result.start_objective == pytest.approx(
        placement_objective(round_robin(32, 8, 4), stats, cost), rel=1e-12
    )
    ours = evaluate(placed, stats, cost)["total_affinity_cross_host"]
    assert ours < 0.7 * evaluate(round_robin(32, 8, 4), stats, cost)["total_affinity_cross_host"]


def test_anneal_is_deterministic_for_a_number_of_moves() -> None:
    _, _, load, pairs, c = problem(16, 4, 3, 2, 0.5, 7)
    runs = [anneal(rr_gpu(16, 4, 3), load, pairs, c, weight=0.25, moves=20_000, seed=5) for _ in range(2)]
    assert np.array_equal(runs[0].gpu_of, runs[1].gpu_of)
    assert runs[0].objective == runs[1].objective and runs[0].accepted == runs[1].accepted
    none = anneal(rr_gpu(16, 4, 3), load, pairs, c, weight=0.25, moves=0)
    assert np.array_equal(none.gpu_of, rr_gpu(16, 4, 3)) and none.objective == none.start_objective
    with pytest.raises(ValueError, match="exactly one of moves and deadline"):
        anneal(rr_gpu(16, 4, 3), load, pairs, c, weight=0.25)


def test_ilp_layers_anneals_then_sweeps() -> None:
    stats, cost, *_ = problem(16, 4, 3, 2, 0.6, 8)
    runs = [
        ilp_placement(stats, cost, time_limit=30, decompose="layers", anneal_moves=30_000, max_nodes=50)
        for _ in range(2)
    ]
    (first, report), (second, _) = runs
    assert np.isfinite(report.annealed) and report.anneal_moves == 30_000
    assert report.objective <= report.annealed + 1e-9  # the sweeps only polish
    assert report.objective <= report.warm_objective
    assert np.array_equal(first.phy2log, second.phy2log)  # a work limit, not a time limit
    assert "annealed to" in report.summary()
    with pytest.raises(PlacementError, match="anneal_moves"):
        ilp_placement(stats, cost, time_limit=5, anneal_moves=-1)
