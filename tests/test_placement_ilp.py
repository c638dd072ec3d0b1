"""The ILP expert placement: exact on a brute-forced instance, never worse than its warm start.

The solver tests run with CBC and, when ``highspy`` is installed, with HiGHS; the bound tests
check :func:`lower_bound`, :func:`colocated_bound` and the reported ``best_bound`` against
enumeration on small random instances.
"""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest
from conftest import balanced_assignments

from placement.ilp import (
    IlpReport,
    _cbc_bound,
    _chain_start,
    _Problem,
    colocated_bound,
    cost_tiers,
    ilp_placement,
    lower_bound,
    placement_objective,
)
from placement.layout import Placement, PlacementError, round_robin
from placement.methods import greedy, random_placement
from placement.stats import evaluate, gpu_cost, placement_stats
from topologies.leaf_spine import LeafSpine
from workloads.synthetic_trace import synth_trace

HAS_HIGHS = importlib.util.find_spec("highspy") is not None
SOLVERS = [
    "cbc",
    pytest.param("highs", marks=pytest.mark.skipif(not HAS_HIGHS, reason="highspy not installed")),
]


def fabric(gpus: int, gpus_per_host: int) -> LeafSpine:
    return LeafSpine(
        leaves=gpus // gpus_per_host,
        spines=1,
        hosts_per_leaf=1,
        gpus_per_host=gpus_per_host,
        nic_bandwidth=50e9,
        uplink_bandwidth=50e9,
        nvlink_bandwidth=450e9,
    )


def instance(
    experts: int, gpus: int, layers: int, *, gpus_per_host: int = 2, affinity: float = 0.5, seed: int = 1
):
    trace = synth_trace(
        experts=experts,
        top_k=2,
        layers=layers,
        tokens_per_gpu=256,
        gpus=gpus,
        imbalance=1.0,
        affinity=affinity,
        seed=seed,
    )
    return placement_stats(trace), gpu_cost(fabric(gpus, gpus_per_host), gpus)


def gpu_of(placement: Placement) -> np.ndarray:
    out = np.empty((placement.layers, placement.experts), dtype=np.int64)
    for layer in range(placement.layers):
        out[layer, placement.phy2log[layer]] = placement.gpu_of_slot
    return out


def numpy_objective(assign: np.ndarray, stats, cost: np.ndarray, lam: float) -> float:
    """Σ_l max GPU tokens + λ/G Σ R[l,e,e'] cost[g,h]/max(cost), written out independently of the module."""
    norm = cost / cost.max()
    tail = sum(np.bincount(assign[layer], weights=stats.load[layer], minlength=stats.gpus).max()
               for layer in range(stats.layers))  # fmt: skip
    traffic = sum(
        (stats.transitions[layer] * norm[assign[layer]][:, assign[layer + 1]]).sum()
        for layer in range(stats.layers - 1)
    )
    return float(tail + lam / stats.gpus * traffic)


def brute_force(stats, cost: np.ndarray, lam: float) -> float:
    """The exact optimum over all valid placements of every layer.

    The objective is a chain (per-layer tails plus consecutive-pair traffic), so enumerating all
    combinations of per-layer assignments is done layer by layer (min-plus over the pair table),
    which visits every combination implicitly.
    """
    gpus, experts = stats.gpus, stats.experts
    options = balanced_assignments(experts, gpus)
    onehot = np.eye(gpus)[options].reshape(len(options), experts * gpus)
    norm = cost / cost.max()
    tails = [
        (np.eye(gpus)[options] * np.asarray(stats.load[layer])[None, :, None]).sum(axis=1).max(axis=1)
        for layer in range(stats.layers)
    ]
    best = tails[0]
    for layer in range(stats.layers - 1):
        kernel = np.kron(stats.transitions[layer], norm)  # [(e, g), (f, h)] = R[e, f] * c[g, h]
        pair = lam / gpus * (onehot @ kernel @ onehot.T)
        best = (best[:, None] + pair).min(axis=0) + tails[layer + 1]
    return float(best.min())


@pytest.fixture(scope="module", params=SOLVERS)
def small(request):
    stats, cost = instance(8, 4, 3)
    placement, report = ilp_placement(stats, cost, time_limit=50, solver=request.param)
    return stats, cost, placement, report


def test_optimum_equals_brute_force(small) -> None:
    stats, cost, placement, report = small
    optimum = brute_force(stats, cost, 1.0)
    assert report.status == "optimal"
    assert report.objective == pytest.approx(optimum, rel=1e-6)
    assert numpy_objective(gpu_of(placement), stats, cost, 1.0) == pytest.approx(optimum, rel=1e-6)
    assert placement_objective(placement, stats, cost) == pytest.approx(report.objective, rel=1e-12)
    assert lower_bound(stats, cost) <= optimum + 1e-9
    assert optimum < numpy_objective(gpu_of(greedy(stats)), stats, cost, 1.0)  # the instance is not trivial


def test_placement_valid_and_report_sane(small) -> None:
    stats, cost, placement, report = small
    assert isinstance(report, IlpReport)
    assert placement.method == "ilp" and report.returned == "ilp"
    assert placement.gpus == 4 and placement.experts == 8 and placement.layers == 3
    for layer in range(3):
        assert sorted(placement.phy2log[layer].tolist()) == list(range(8))  # each expert once
    assert np.all(np.bincount(gpu_of(placement).ravel(), minlength=4) == 3 * 2)  # 2 per GPU per layer
    assert report.gap >= 0 and report.best_bound <= report.objective + 1e-9
    assert report.gap == pytest.approx(0.0, abs=1e-6)
    assert report.solver in ("cbc", "highs") and report.decomposition == "none"
    assert report.bound_source == "solver" and report.start in ("warm_start", "chains")
    assert report.objective <= report.warm_objective
    assert report.solve_seconds > 0


def test_deterministic(small) -> None:
    stats, cost, placement, report = small
    again, second = ilp_placement(stats, cost, time_limit=50, solver=report.solver)
    assert second.solver == report.solver
    assert np.array_equal(again.phy2log, placement.phy2log)
    assert second.objective == report.objective


@pytest.mark.parametrize("solver", SOLVERS)
@pytest.mark.parametrize("seed", [2, 3])
def test_never_worse_than_warm_start(seed: int, solver: str) -> None:
    stats, cost = instance(16, 4, 3, seed=seed)
    for warm in (greedy(stats), random_placement(stats, seed=seed)):
        placement, report = ilp_placement(
            stats, cost, time_limit=2, warm_start=warm, max_nodes=50, solver=solver
        )
        assert report.solver == solver
        warm_value = numpy_objective(gpu_of(warm), stats, cost, 1.0)
        value = numpy_objective(gpu_of(placement), stats, cost, 1.0)
        assert value <= warm_value + 1e-9
        assert report.objective == pytest.approx(value, rel=1e-9)
        assert report.warm_objective == pytest.approx(warm_value, rel=1e-9)
        assert report.best_bound <= report.objective + 1e-9 and report.gap >= 0
        if report.returned == "warm_start":
            assert np.array_equal(placement.phy2log, warm.phy2log)


def test_returns_warm_start_when_nothing_is_better(small) -> None:
    stats, cost, best, first = small
    placement, report = ilp_placement(stats, cost, time_limit=30, warm_start=best, solver=first.solver)
    assert report.returned == "warm_start" and placement is best
    assert report.objective == pytest.approx(report.warm_objective)


@pytest.mark.parametrize("mode", ["layers", "hosts"])
def test_decompositions_valid_and_no_worse(mode: str) -> None:
    stats, cost = instance(16, 8, 3, gpus_per_host=4)
    placement, report = ilp_placement(stats, cost, time_limit=6, decompose=mode)
    assert report.decomposition == mode and report.status == "decomposed"
    assert report.bound_source == "combinatorial"
    assert report.objective <= report.warm_objective + 1e-9
    assert report.best_bound <= report.objective and 0 <= report.gap < 1
    assert np.all(np.bincount(gpu_of(placement).ravel(), minlength=8) == 3 * 2)


def test_infeasible_memory_constraint() -> None:
    stats, cost = instance(8, 4, 2)
    odd = placement_stats(synth_trace(experts=10, top_k=2, layers=2, tokens_per_gpu=64, gpus=4, seed=0))
    with pytest.raises(PlacementError) as err:
        ilp_placement(odd, gpu_cost(fabric(4, 2), 4))
    message = str(err.value)
    assert "\n" not in message and "memory constraint" in message and "10 experts" in message
    with pytest.raises(PlacementError, match="lam"):
        ilp_placement(stats, cost, lam=-1)
    with pytest.raises(PlacementError, match="solver"):
        ilp_placement(stats, cost, solver="gurobi")


def test_cost_must_be_hierarchical() -> None:
    tiers = cost_tiers(gpu_cost(fabric(8, 4), 8), 8)
    assert tiers.top == 1.0 and len(tiers.labels) == 2
    assert tiers.labels[1].tolist() == [0, 0, 0, 0, 1, 1, 1, 1]
    assert tiers.credit.tolist() == pytest.approx([50e9 / 450e9, 1 - 50e9 / 450e9])
    ring = np.array([[0, 1, 2, 1], [1, 0, 1, 2], [2, 1, 0, 1], [1, 2, 1, 0]], dtype=float)
    with pytest.raises(PlacementError, match="not hierarchical"):
        cost_tiers(ring, 4)


def test_strong_affinity_colocates_partners() -> None:
    stats, cost = instance(16, 4, 3, affinity=0.9, seed=4)
    placement, report = ilp_placement(stats, cost, lam=20.0, time_limit=15, decompose="layers")
    ours = evaluate(placement, stats, cost)["total_affinity_cross_host"]
    baseline = evaluate(round_robin(16, 4, 3), stats, cost)["total_affinity_cross_host"]
    assert ours < 0.5 * baseline
    assert report.objective <= report.warm_objective


def enumerate_colocated(r: np.ndarray, groups: int) -> float:
    """max over balanced row and column partitions of the co-located mass, by enumeration."""
    options = balanced_assignments(r.shape[0], groups)
    onehot = np.eye(groups)[options].reshape(len(options), -1)  # index e * groups + g
    return float((onehot @ np.kron(r, np.eye(groups)) @ onehot.T).max())


@pytest.mark.parametrize("n,groups", [(8, 2), (8, 4), (6, 3)])
def test_colocated_bound_is_an_upper_bound(n: int, groups: int) -> None:
    rng = np.random.default_rng(n * 10 + groups)
    for trial in range(8):
        r = rng.poisson(3.0, (n, n)).astype(float)
        if trial % 4 == 1:  # a strong matching on noise, like a synthetic trace's affinity
            r += 20 * np.eye(n)[rng.permutation(n)]
        elif trial % 4 == 2:  # rank one: popularity without affinity
            r = 10 * np.outer(rng.random(n), rng.random(n))
        elif trial % 4 == 3:  # sparse
            r = (rng.random((n, n)) < 0.3) * rng.random((n, n))
        exact = enumerate_colocated(r, groups)
        bound = colocated_bound(r, n // groups, groups, iterations=40)
        assert exact - 1e-9 <= bound <= r.sum() * (1 + 1e-8) + 1e-9


@pytest.mark.parametrize("seed", range(6))
def test_lower_bound_below_brute_force(seed: int) -> None:
    lam = [1.0, 5.0, 0.3][seed % 3]
    stats, cost = instance(8, 4, 3, affinity=[0.3, 0.6, 0.9][seed % 3], seed=10 + seed)
    optimum = brute_force(stats, cost, lam)
    bound = lower_bound(stats, cost, lam)
    assert lower_bound(stats, cost, lam, iterations=0) <= bound <= optimum + 1e-9


@pytest.mark.parametrize("solver", SOLVERS)
def test_reported_bound_below_brute_force(solver: str) -> None:
    for seed in (20, 21):  # short limits: the solver stops early, its partial bound must hold
        stats, cost = instance(8, 4, 3, affinity=0.8, seed=seed)
        optimum = brute_force(stats, cost, 5.0)
        for limit, nodes in ((1.0, 1), (0.5, None)):
            _, report = ilp_placement(stats, cost, lam=5.0, time_limit=limit, max_nodes=nodes, solver=solver)
            assert report.best_bound <= optimum + 1e-6 * optimum
            assert report.objective >= optimum - 1e-6 * optimum


def test_cbc_bound_only_where_proven() -> None:
    stopped_in_root_cuts = """Continuous objective value is 640.51344 - 0.01 seconds
Cbc0005I Partial search - best objective 707 (best possible 6.294817e+10), took 658 iterations and 0 nodes
Result - Stopped on time limit

Objective value:                707.00000000
Lower bound:                    62948169556.795
Enumerated nodes:               0
"""
    assert _cbc_bound(stopped_in_root_cuts, "time_limit") == pytest.approx(640.51344)
    branched = stopped_in_root_cuts.replace("62948169556.795", "650.5").replace(
        "nodes:               0", "nodes: 12"
    )
    assert _cbc_bound(branched, "time_limit") == pytest.approx(650.5)
    assert _cbc_bound("Result - Stopped on time limit\n", "time_limit") == -np.inf
    assert _cbc_bound("Objective value:  707\n", "optimal") == pytest.approx(707, rel=1e-6)


def test_chain_start_keeps_partners_together() -> None:
    stats, cost = instance(16, 4, 3, affinity=0.9, seed=4)
    problem = _Problem(stats, cost, 1.0, 1.0)
    chained = _chain_start(problem)
    for layer in range(3):
        assert np.all(np.bincount(chained[layer], minlength=4) == 4)
    heaviest = [np.argmax(stats.transitions[layer], axis=1) for layer in range(2)]
    together = np.mean([np.mean(chained[layer + 1][heaviest[layer]] == chained[layer]) for layer in range(2)])
    assert together > 0.9
    _, report = ilp_placement(stats, cost, time_limit=3, decompose="layers", solver="cbc")
    assert report.start == "chains" and report.objective <= report.warm_objective
