"""Integer-linear expert placement: balance the busiest GPU and keep consecutive-layer partners close.

:func:`ilp_placement` places every expert of every layer on one GPU (no replicas: the ILP
chooses *where*, not *how many*; use ``eplb`` for replicas) to minimise

    objective = Σ_l T_l  +  λ / G · Σ_l Σ_{e,e'} R[l,e,e'] · ĉ[gpu_l(e), gpu_{l+1}(e')]

- ``T_l``: tokens processed by the busiest GPU in layer ``l`` (the tail that sets the layer time),
  ``T_l >= Σ_e load[l,e] · x[l,e,g]`` for every GPU ``g``.
- ``R[l,e,e']``: the slot-matched transitions of :class:`~placement.stats.PlacementStats` (a
  token at expert ``e`` of layer ``l`` goes next to ``e'``).
- ``ĉ = cost / max(cost)``: the per-byte cost normalised so that one token crossing the slowest
  tier (across hosts) counts 1, one over NVLink ``nic / nvlink`` (1/9 for 50 vs 450 GB/s) and one
  staying on its GPU 0. The traffic is thus in *token-equivalents of the slowest tier*.
- ``/ G`` (G GPUs): the traffic is summed over all GPUs while ``T_l`` is one GPU's load, so the
  traffic term is the *mean per-GPU* token-equivalents. Both terms are then tokens per GPU; λ = 1
  weighs one token of expert compute on the busiest GPU like one token a GPU sends across hosts,
  which is the right order for bf16 hidden vectors of a few thousand elements on 400 Gb/s NICs
  (one token is ~0.1–0.4 µs both ways). :func:`placement_objective` evaluates it in numpy.

Constraints: ``x[l,e,g]`` binary, ``Σ_g x[l,e,g] = 1`` (every expert placed once), ``Σ_e
x[l,e,g] = E / G`` (the memory constraint: every GPU holds the same number of experts per
layer; E not divisible by G raises :class:`PlacementError`).

Compact linearisation of the affinity term
-------------------------------------------
A full product ``y[l,e,e',g,h] = x[l,e,g] · x[l+1,e',h]`` has ``E² G²`` variables per layer pair.
Instead the cost matrix is read as a *hierarchy* (an ultrametric: GPU ⊂ host ⊂ ...; the matrix of
:func:`~placement.stats.gpu_cost` is one; a matrix that is not raises :class:`PlacementError`)
with tier values ``v_0 (same GPU) < v_1 (same host) < ... < v_m = 1``. Then

    ĉ[g,h] = v_m − Σ_j Δ_j · [g, h in the same level-j group],   Δ_j = v_{j+1} − v_j,

so the traffic of a layer pair is ``v_m ΣR − Σ_j Δ_j · C_j`` with ``C_j`` the *co-located
mass*: transitions whose two experts share a GPU (j = 0), a host (j = 1), ... The solver
maximises each ``C_j`` through upper bounds that are exact at integer points, aggregated per
expert and group (never per expert pair):

    w[l,j,e,G]  <= B_j(e) · X[l,e,G]                 (e is not in G: no credit)
    w[l,j,e,G]  <= Σ_e' R[l,e,e'] · X[l+1,e',G]        (the mass of e's partners in G)
    C_j <= Σ_{e,G} w[l,j,e,G],   and the same from the e' side,   C_0 <= C_1 <= ...

with ``X[l,e,G] = Σ_{g∈G} x[l,e,g]`` and ``B_j(e)`` the mass of ``e``'s heaviest ``cap_j``
partners (``cap_j`` experts fit in a level-j group). At an integer point ``w`` equals the partner
mass of ``e`` in its own group, so the model objective equals :func:`placement_objective`
exactly. Size per layer pair: ``2 E Σ_j groups_j`` continuous variables and rows, ``2 nnz(R)
Σ_j groups_j`` nonzeros (64 experts on 16 GPUs in 2 hosts: 2,300 ``w``, 4,600 rows, ~85k nonzeros).
``T_l`` also gets :func:`lower_bound`'s per-layer tail bound as its variable bound.
The LP relaxation of such quadratic-assignment-like models is weak (fractional ``x`` spread over
GPUs gets nearly every credit); the ``B_j`` caps make it credit at most ``cap_j`` partners per
expert. :func:`lower_bound` is always combined with the solver's bound: per layer the tail bound,
per layer pair and level an upper bound on ``C_j``, the smallest of the caps and a spectral bound
(:func:`colocated_bound`: a split of the transitions into a part credited in full, the tokens that
keep their slot's expert rank, and a rest whose co-location is bounded by its top singular values),
and then, summed over all pairs, the joint eigenvalue bound of
:func:`placement.joint_bound.joint_colocated_bound` (one partition per layer serves both of its
pairs: per-pair bounds credit the co-location of the noisy transitions once per pair, while a
placement whose chains stay together has to win it with one partition of the chains). On the 64
experts x 16 GPUs x 8 layers benchmark the caps alone give 4,516, the spectral per-pair bounds
~4,900 and the joint bound ~5,005, against placements of ~5,065: a gap of ~1.2 %. Read ``gap`` as
an honest upper bound on how far from optimal the placement may be.

``coverage`` (default 1.0: all transitions) keeps only the heaviest transitions covering that
share of each layer pair's tokens; dropped pairs are left out of the model entirely (neither
cost nor credit), which keeps the model a valid *relaxation*, so its bound stays a lower bound;
the reported objective is always the exact one over all transitions.

Solvers, determinism, never worse than the warm start
-----------------------------------------------------
``solver="auto"`` uses HiGHS when ``highspy`` is installed (``pip install moesim[highs]``), else
CBC bundled with PuLP; one thread and fixed seeds. CBC is run on PuLP's MPS file directly (not
through ``LpProblem.solve``) with ``-primalS`` for the first LP (CBC's default dual simplex
took 100 s on the root LP of 2 layers × 64 experts × 16 GPUs, the primal simplex 0.1 s) and a
hard wall-clock kill shortly after ``time_limit`` (CBC's ``-sec`` is not checked inside the root
LP). HiGHS gets the model from PuLP's ``HiGHS`` builder and runs in-process under its own
``time_limit`` (checked inside LP solves too). The descent starts from the warm start (default
:func:`placement.methods.greedy`) or from :func:`_chain_start` (experts linked by their heaviest
transitions kept on one GPU across layers), whichever has the lower objective
(``IlpReport.start``). Every solver call gets its incumbent as a MIP start (``-mips`` / HiGHS
``setSolution``), relabelled by a GPU permutation that keeps the objective (GPUs of a host are
interchangeable, and equal hosts when they are the top tier) so that it satisfies the
symmetry-breaking rows on layer 0 (the heaviest experts in canonical order). The best bound is the
solver's where proven (HiGHS: ``mip_dual_bound``; CBC: parsed from its log, only the root LP's
optimum or a bound after branching has started: a CBC stopped inside its root cut loop prints the
value of an unfinished LP), combined with :func:`lower_bound`; ``IlpReport.bound_source`` says
which one was the larger. A solve that finishes within ``time_limit`` is deterministic; one
stopped by the time limit depends on how far the machine got (pass ``max_nodes`` for a
deterministic work limit instead). If the solver returns nothing, or a placement no better than
the warm start (by :func:`placement_objective`), the warm start is returned and
``IlpReport.returned`` is ``"warm_start"``. :func:`lower_bound` is computed first and its time
counts against ``time_limit``; its joint bounds stop after ``BOUND_SHARE`` of it (they then stay
valid, only weaker, and depend on the machine's speed like a time-limited solve; the annealing
does too unless ``anneal_moves`` is given).

Decomposition and size thresholds
---------------------------------
``decompose="auto"`` solves the whole model when it has at most ``MONOLITHIC_BINARIES`` (1,024) x
variables and ``MONOLITHIC_NONZEROS`` (100k) estimated nonzeros: beyond that CBC does not finish
even the root LP within a minute (64 experts × 16 GPUs × 8 layers: 8,192 binaries, 0.6 M nonzeros,
root LP unfinished after 60 s; HiGHS neither, after 45 s). The whole-model solve first polishes the
start with layer sweeps for ``PRESWEEP`` (a quarter) of the time. Larger instances use
``"layers"``: first :func:`placement.anneal.anneal` (simulated annealing with swaps that move whole
chain segments, which the exact layer steps below cannot: moving one expert of a chain breaks its
links on both sides) for ``ANNEAL_SHARE`` of the time left after the bound (or ``anneal_moves``
proposals, a work limit), then block-coordinate descent over layers. With the other layers fixed,
layer ``l``'s affinity traffic is *linear* in ``x[l]`` (its partners' GPUs are known), so each step
is an exact small ILP (an assignment with the ``T_l`` tail: ``E G`` binaries, 16k for 256 experts
on 64 GPUs) that can only lower the objective; sweeps alternate forward and backward, re-solving a
layer only when a neighbour changed, then try sliding windows of two layers (their mutual traffic
in the compact quadratic form above, outer neighbours linear) when such a window has at most
``WINDOW_NONZEROS`` nonzeros, until nothing changes or the time is up (for 64 experts on 16 GPUs a
window, ~94k nonzeros, improved nothing within its ~4 s with either solver). ``"hosts"`` assigns
experts to hosts first (the same model with hosts as the units, the same-GPU credit left out and
``T_l`` the mean GPU load of the busiest host), then solves every host's GPUs independently (the
same model on its experts and GPUs), then polishes with the layer sweeps; its host-level model
grows with ``nnz(R) · hosts`` and suits few hosts. The bound of a decomposed solve is
:func:`lower_bound` (its subproblems' bounds say nothing about the whole)."""

from __future__ import annotations

import functools
import math
import os
import re
import subprocess
import sys
import tempfile
import time
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import pulp

from placement.anneal import anneal, chain_successors
from placement.joint_bound import joint_colocated_bound
from placement.layout import Placement, PlacementError
from placement.stats import PlacementStats, gpu_fractions

MONOLITHIC_BINARIES = 1_024
"""``decompose="auto"`` solves the whole model up to this many x variables (layers × experts × GPUs) ..."""
MONOLITHIC_NONZEROS = 100_000
"""... and this many estimated constraint nonzeros; larger instances are decomposed by layers."""
PRESWEEP = 0.25
"""Share of the time limit the whole-model solve first spends polishing the warm start by layer sweeps."""
WINDOW_NONZEROS = 250_000
"""Layer sweeps also solve two-layer windows when such a model has at most this many nonzeros."""
RESERVE = 0.02
"""Share of the time limit (at most 1 s) kept back for the overrun of the last solve and the wrap-up."""
SEED = 1
"""Seed handed to the solver (its other randomness is off with one thread)."""
_REL_GAP = 1e-7  # the solver stops at this relative gap: "optimal" within floating-point noise
_TOL = 1e-9
_POWER = 6  # subspace-iteration steps per subgradient step of colocated_bound
JOINT_EVALUATIONS = 300  # optimiser evaluations of each joint bound (placement.joint_bound)
JOINT_MAX_GROUPS = 8  # levels with more groups keep the per-pair bounds only (a wider eigen subspace)
BOUND_SHARE = 0.25  # share of ilp_placement's time limit the joint bounds may take at most
ANNEAL_SHARE = 0.7  # share of the time left after the bound that the layers decomposition anneals


@dataclass(frozen=True)
class IlpReport:
    """How :func:`ilp_placement` went.

    Attributes:
        objective: :func:`placement_objective` of the returned placement (tokens per GPU).
        best_bound: a valid lower bound on the optimum of the whole problem (same units).
        gap: ``(objective − best_bound) / objective`` (0 when both are 0), >= 0.
        status: ``optimal`` (solved to the bound), ``time_limit``, ``node_limit``,
            ``decomposed`` (a decomposition ran; no optimality claim) or ``no_solution``.
        solve_seconds: wall seconds spent in the solver (model building included).
        solver: ``cbc`` or ``highs``.
        decomposition: ``none``, ``layers`` or ``hosts``.
        bound_source: ``solver`` or ``combinatorial`` (:func:`lower_bound`), whichever was larger.
        warm_objective: :func:`placement_objective` of the warm start.
        returned: ``ilp`` or ``warm_start`` (the solver found nothing better).
        subproblems: ILPs solved.
        start: where the descent started: ``warm_start`` or ``chains`` (:func:`_chain_start`,
            taken when its objective is lower); the result is never worse than the warm start.
        annealed: objective after :func:`placement.anneal.anneal` (``layers`` decomposition;
            NaN when it did not run), before the layer sweeps.
        anneal_moves: proposals the annealing made.
    """

    objective: float
    best_bound: float
    gap: float
    status: str
    solve_seconds: float
    solver: str
    decomposition: str
    bound_source: str = "solver"
    warm_objective: float = math.nan
    returned: str = "ilp"
    subproblems: int = 1
    start: str = "warm_start"
    annealed: float = math.nan
    anneal_moves: int = 0

    def summary(self) -> str:
        """One line for logs."""
        return (
            f"ilp {self.decomposition}/{self.solver}: objective {self.objective:.6g}, "
            f"bound {self.best_bound:.6g} ({self.bound_source}), gap {self.gap:.2%}, {self.status}, "
            f"{self.solve_seconds:.1f} s, "
            f"returned {self.returned} (warm start {self.warm_objective:.6g}, started from {self.start}"
            + (
                f", annealed to {self.annealed:.6g} in {self.anneal_moves:,} moves"
                if math.isfinite(self.annealed)
                else ""
            )
            + ")"
        )


# ----------------------------------------------------------------------------------------------
# the cost hierarchy and the objective


@dataclass(frozen=True)
class Tiers:
    """A GPU cost matrix read as a hierarchy: ``ĉ[g,h] = top − Σ_j credit_j · [same level-j group]``.

    Attributes:
        labels: per level ``j`` the ``(gpus,)`` group id of every GPU (level 0: each GPU alone,
            level 1: hosts, ...), only levels with a positive credit.
        credit: ``(levels,)`` normalised ``Δ_j``.
        top: the normalised cost of the slowest tier (1.0; 0.0 when every cost is 0).
        scale: ``max(cost)`` (seconds/byte), the unit of ``ĉ``.
    """

    labels: list[np.ndarray]
    credit: np.ndarray
    top: float
    scale: float
    normalised: np.ndarray = field(repr=False, default=None)  # type: ignore[assignment]


def cost_tiers(cost: np.ndarray, gpus: int) -> Tiers:
    """Read ``cost`` (``(gpus, gpus)`` seconds/byte) as a hierarchy; :class:`PlacementError` if it is none."""
    c = np.asarray(cost, dtype=np.float64)
    if c.shape != (gpus, gpus):
        raise PlacementError(f"ilp: cost has shape {c.shape} but must be ({gpus}, {gpus}) for {gpus} GPUs")
    if not np.all(np.isfinite(c)) or np.any(c < 0):
        raise PlacementError("ilp: cost must hold finite non-negative seconds per byte")
    if not np.allclose(c, c.T, rtol=1e-9, atol=0.0):
        raise PlacementError("ilp: cost must be symmetric (a hierarchy of GPU, host, ... tiers)")
    off_mask = ~np.eye(gpus, dtype=bool)
    off = c[off_mask]
    diag = np.diag(c)
    scale = float(c.max()) if c.size else 0.0
    if scale <= 0.0:
        return Tiers([], np.zeros(0), 0.0, 1.0, np.zeros_like(c))
    if not np.allclose(diag, diag[0], rtol=1e-9, atol=0.0) or (off.size and diag[0] > off.min() * (1 + 1e-9)):
        raise PlacementError(
            "ilp: cost must be the same on the diagonal for every GPU and no higher than between two GPUs"
        )
    values: list[float] = []
    for v in np.sort(off):
        if not values or v > values[-1] * (1 + 1e-9):
            values.append(float(v))
    tiers = [float(diag[0])] + values  # v_0 < v_1 < ... < v_m
    labels = [np.arange(gpus)]
    for threshold in values[:-1]:
        same = c <= threshold * (1 + 1e-9)
        label = np.argmax(same, axis=1)
        if not np.array_equal(same, label[:, None] == label[None, :]):
            raise PlacementError(
                "ilp: cost is not hierarchical: GPUs that are close to a common GPU must be as close to "
                "each other (an ultrametric: GPU < host < ... tiers, as placement.stats.gpu_cost makes)"
            )
        labels.append(np.unique(label, return_inverse=True)[1])
    credit = np.diff(np.array(tiers)) / scale
    keep = credit > _TOL
    return Tiers(
        [lab for lab, k in zip(labels, keep, strict=True) if k],
        credit[keep],
        tiers[-1] / scale,
        scale,
        c / scale,
    )


def placement_objective(
    placement: Placement, stats: PlacementStats, cost: np.ndarray, lam: float = 1.0
) -> float:
    """The ILP's objective of ``placement`` (module docstring), in numpy; replicas split by weight."""
    gpus, layers = stats.gpus, stats.layers
    c = np.asarray(cost, dtype=np.float64)
    scale = float(c.max()) if c.size else 0.0
    norm = c / scale if scale > 0 else np.zeros_like(c)
    fractions = [gpu_fractions(placement, layer) for layer in range(layers)]
    tail = sum(
        float((np.asarray(stats.load[layer], dtype=np.float64) @ fractions[layer]).max())
        for layer in range(layers)
    )
    traffic = 0.0
    for layer in range(layers - 1):
        flow = (
            fractions[layer].T @ np.asarray(stats.transitions[layer], dtype=np.float64) @ fractions[layer + 1]
        )
        traffic += float((flow * norm).sum())
    return tail + lam / gpus * traffic


def _tail_bound(load: np.ndarray, per_unit: int, units: int) -> float:
    """A lower bound on the busiest unit's load when ``units`` units hold ``per_unit`` items each."""
    w = np.sort(np.asarray(load, dtype=np.float64))[::-1]
    best = w.sum() / units
    for j in range(per_unit):  # the top j·units + 1 items put j + 1 of them on one unit
        top = j * units
        if top >= w.size:
            break
        rest = per_unit - j - 1
        smallest = w[top + 1 :][::-1][:rest].sum() if rest else 0.0  # lightest of the others
        best = max(best, (j + 1) * w[top] + smallest)
    return float(best)


def _credit_caps(r: np.ndarray, cap: int) -> float:
    """Σ over rows of the mass of the ``cap`` heaviest entries (a row shares a group with <= cap columns)."""
    if r.size == 0:
        return 0.0
    part = -np.sort(-r, axis=1)[:, :cap]
    return float(part.sum())


def lower_bound(
    stats: PlacementStats,
    cost: np.ndarray,
    lam: float = 1.0,
    iterations: int | None = None,
    joint_evaluations: int | None = None,
    deadline: float | None = None,
) -> float:
    """A valid lower bound on the ILP objective (combinatorial and spectral, no ILP solver).

    The objective is at least ``Σ_l (tail bound of layer l) + λ/G Σ_l (traffic bound of pair l)``:

    - tail: the busiest GPU holds at least the heaviest expert and ``k − 1`` of the lightest
      others (and generally ``j + 1`` of the ``j G + 1`` heaviest), and at least the mean;
    - traffic: ``top · ΣR − Σ_j Δ_j C_j`` with ``C_j`` the co-located mass of level ``j``
      (module docstring), so upper bounds ``U_j >= C_j`` give it. ``U_j`` is the smallest of
      ``ΣR``, the caps (every expert shares its group with ``cap_j`` partners, from either side),
      ``U_{j+1}`` (``C_j <= C_{j+1}``) and the spectral bound :func:`colocated_bound` (groups of
      equal size only). Each layer pair is bounded on its own (each pair's minimum over all
      placements, which the chained optimum cannot beat); then the sum over pairs of each
      level with at most ``JOINT_MAX_GROUPS`` equal groups is also bounded jointly, one
      partition per layer for all pairs (:func:`placement.joint_bound.joint_colocated_bound`),
      and the smaller of the two totals is taken.

    Args:
        stats: the routing-trace statistics.
        cost: ``(gpus, gpus)`` seconds per byte, hierarchical (:func:`cost_tiers`).
        lam: weight λ of the affinity traffic (>= 0).
        iterations: subgradient steps of each :func:`colocated_bound` (default
            :func:`default_iterations`: 150 up to 64 experts, about 1 s for 64 experts x 16 GPUs
            x 8 layers on one core; fewer for more experts; 0: the caps only).
        joint_evaluations: evaluations of each joint bound's optimiser (default
            ``JOINT_EVALUATIONS``; 0: per-pair bounds only).
        deadline: a ``time.perf_counter()`` time by which the joint bounds stop improving
            (shared equally by the levels left); without it the bound is deterministic.

    Returns:
        The bound, in the objective's unit (tokens per GPU).
    """
    gpus, experts = stats.gpus, stats.experts
    if experts % gpus:
        raise PlacementError(_memory_message(experts, gpus))
    k = experts // gpus
    tiers = cost_tiers(cost, gpus)
    if iterations is None:
        iterations = default_iterations(experts)
    total = sum(_tail_bound(stats.load[layer], k, gpus) for layer in range(stats.layers))
    if lam == 0 or tiers.top == 0:
        return total
    if joint_evaluations is None:
        joint_evaluations = JOINT_EVALUATIONS
    pairs = np.asarray(stats.transitions, dtype=np.float64)
    sizes = [np.bincount(labels) for labels in tiers.labels]
    level_caps = np.zeros(len(tiers.labels))  # Σ over pairs of each level's U_j
    mass_total = 0.0
    for r in pairs[: stats.layers - 1]:
        mass = float(r.sum())
        caps = [mass] * (len(tiers.labels) + 1)  # U_j, the last one for the top tier (everything)
        for j in reversed(range(len(tiers.labels))):
            cap = k * int(sizes[j].max())
            bound = min(caps[j + 1], _credit_caps(r, cap), _credit_caps(r.T, cap))
            if iterations > 0 and np.all(sizes[j] == sizes[j][0]) and sizes[j].size > 1:
                bound = min(bound, colocated_bound(r, cap, int(sizes[j].size), iterations))
            caps[j] = bound
        level_caps += caps[:-1]
        mass_total += mass
    joint_levels = [
        j
        for j, size in enumerate(sizes)
        if joint_evaluations > 0 and np.all(size == size[0]) and 1 < size.size <= JOINT_MAX_GROUPS
    ]
    for j in reversed(range(len(tiers.labels))):
        if j in joint_levels:
            share = None
            if deadline is not None:  # the joint levels left share the time left equally
                left = sum(1 for i in joint_levels if i <= j)
                share = time.perf_counter() + (deadline - time.perf_counter()) / left
            joint = joint_colocated_bound(
                pairs[: stats.layers - 1], k * int(sizes[j][0]), int(sizes[j].size), joint_evaluations,
                deadline=share,
            )  # fmt: skip
            level_caps[j] = min(level_caps[j], joint)
        if j + 1 < len(tiers.labels):
            level_caps[j] = min(level_caps[j], level_caps[j + 1])  # C_j <= C_{j+1}, summed over pairs
    traffic = tiers.top * mass_total - float(np.dot(tiers.credit, level_caps))
    return total + lam / gpus * max(traffic, 0.0)


def default_iterations(experts: int) -> int:
    """Subgradient steps of :func:`colocated_bound` in :func:`lower_bound` (each an ``experts²`` SVD)."""
    return int(max(10, min(150, 150 * (64 / max(experts, 1)) ** 3)))


def colocated_bound(r: np.ndarray, size: int, groups: int, iterations: int = 100) -> float:
    """Upper bound on the co-located mass ``Σ_G Σ_{e∈X_G, e'∈Y_G} r[e,e']`` of any two balanced partitions.

    ``X`` partitions the rows and ``Y`` the columns of the square ``r`` (``n = size · groups``
    each) into ``groups`` groups of ``size`` (the experts of two consecutive layers on hosts or
    GPUs). For any split ``r = S + N``, ``C(r) = C(S) + C(N)`` with ``C(S) <= Σ max(S, 0)`` and
    the spectral bound

        C(N) <= size · (ΣN / n + Σ_{i<groups} σ_i(P N P)),   P = I − 11ᵀ/n,

    (the group indicators divided by ``√size`` are orthonormal; rotating them so that one is
    ``1/√n`` leaves ``groups − 1`` orthonormal vectors orthogonal to ``1``, and von Neumann's
    trace inequality bounds their ``N`` products by the top singular values). ``S`` takes the
    structured part (a token keeping its slot's expert rank), ``N`` the rest, whose singular
    values are small; ``S`` starts at each row's heaviest entry and is improved by
    ``iterations`` subgradient steps of this convex bound (the steps use singular values from a
    subspace iteration). Any ``S`` gives a valid bound: the returned one is that of the best
    step's ``S``, with an exact SVD, capped at ``Σ r`` and raised by ``1e-9`` relative for
    rounding. With groups of 2 hosts, 64 experts per layer and the benchmark's synthetic traces
    it lowers the bound on the cross-host co-located mass from ~96 % of the tokens (the caps) to
    ~84 % (a good placement reaches ~79 %).
    """
    r = np.asarray(r, dtype=np.float64)
    n = r.shape[0]
    if r.shape != (n, n) or n != size * groups:
        raise ValueError(
            f"colocated_bound: r has shape {r.shape}, expected ({size * groups}, {size * groups})"
        )
    mass = float(r.sum())
    if groups <= 1 or n == 0:
        return mass
    s = np.zeros_like(r)
    rows = np.arange(n)
    heaviest = np.argmax(r, axis=1)
    s[rows, heaviest] = np.maximum(r[rows, heaviest], 0.0)
    keep = groups - 1

    def centred(split: np.ndarray) -> np.ndarray:
        noise = r - split
        noise = noise - noise.mean(axis=0, keepdims=True)
        return noise - noise.mean(axis=1, keepdims=True)

    def bound(split: np.ndarray, sigma_sum: float) -> float:
        return float(np.maximum(split, 0.0).sum()) + size * (float((r - split).sum()) / n + sigma_sum)

    best_value, best_split = math.inf, s.copy()
    scale = float(np.abs(r).mean()) or 1.0
    basis = np.linalg.qr(centred(s).T[:, :keep] + np.eye(n, keep))[0]
    for step in range(max(1, iterations)):
        m = centred(s)
        # the top singular pairs by subspace iteration warm-started from the last step (small
        # matrix products: LAPACK on the n x n matrix is slow when BLAS threads contend); its
        # values only steer the steps, the returned one is recomputed exactly below
        for _ in range(_POWER):
            basis = np.linalg.qr(m.T @ (m @ basis))[0]
        left, sigma, right = np.linalg.svd(m @ basis, full_matrices=False)
        value = bound(s, float(sigma.sum()))
        if value < best_value:
            best_value, best_split = value, s.copy()
        if step + 1 >= iterations:
            break
        direction = left @ (basis @ right.T).T
        direction -= direction.mean(axis=0, keepdims=True)
        direction -= direction.mean(axis=1, keepdims=True)
        grad = (s > 0) - size / n - size * direction
        top = float(np.abs(grad).max())
        if top <= _TOL:
            break
        s = s - scale / math.sqrt(1 + step) * grad / top
    sigma = np.linalg.svd(centred(best_split), compute_uv=False)
    best = min(mass, bound(best_split, float(sigma[:keep].sum())))
    return best * (1 + 1e-9) + 1e-12


def _memory_message(experts: int, gpus: int) -> str:
    return (
        "ilp: memory constraint (every GPU holds experts/gpus experts per layer, no replicas) is "
        f"infeasible: {experts} experts cannot be split equally over {gpus} GPUs"
    )


# ----------------------------------------------------------------------------------------------
# one ILP: experts of some consecutive layers onto units (GPUs or hosts)


@dataclass
class _Sub:
    """A placement ILP on ``units`` (GPUs or hosts) for a run of consecutive layers.

    ``load[i]`` and ``pairs[i]`` are in the subproblem's local expert indices: ``pairs[i]`` is
    the (scaled, λ/G included) transition matrix from layer ``i`` to ``i + 1``; ``levels`` the
    credit levels over units (labels, Δ); ``lin[i]`` optional ``(n_i, units)`` linear costs.
    """

    load: list[np.ndarray]
    units: int
    cap: int
    t_scale: float
    pairs: list[np.ndarray]
    levels: list[tuple[np.ndarray, float]]
    top: float
    lin: list[np.ndarray | None]

    @property
    def symmetric(self) -> bool:
        """Units interchangeable (no per-unit costs): symmetry breaking applies."""
        return all(lin is None for lin in self.lin)

    def symmetry(self) -> tuple[np.ndarray, bool]:
        """``(group of every unit, groups interchangeable)``: units of one group are interchangeable.

        The group is the finest level coarser than single units (all units when none); the groups
        are interchangeable too when that level is the coarsest and all groups are equal.
        """
        identity = np.arange(self.units)
        coarser = [labels for labels, _ in self.levels if not np.array_equal(labels, identity)]
        if not coarser:
            return np.zeros(self.units, dtype=np.int64), False
        group = coarser[0]
        sizes = np.bincount(group)
        return group, len(coarser) == 1 and bool(np.all(sizes == sizes[0]))

    def canonical(self, unit_of: list[np.ndarray]) -> list[np.ndarray]:
        """Relabel units (an automorphism: same objective) to satisfy the symmetry-breaking rows.

        Groups ordered by the heaviest layer-0 expert they hold, units within a group likewise.
        """
        if not self.symmetric or not unit_of:
            return unit_of
        group, across = self.symmetry()
        rank = np.empty(self.load[0].size, dtype=np.int64)
        rank[_heaviest_first(self.load[0])] = np.arange(rank.size)
        first = np.full(self.units, rank.size, dtype=np.int64)
        np.minimum.at(first, unit_of[0], rank)
        groups = int(group.max()) + 1
        members = [np.flatnonzero(group == g) for g in range(groups)]
        group_first = np.array([first[m].min() for m in members])
        target_group = np.argsort(group_first, kind="stable") if across else np.arange(groups)
        perm = np.empty(self.units, dtype=np.int64)
        for new, old in enumerate(target_group):
            slots = members[new]
            perm[members[old][np.argsort(first[members[old]], kind="stable")]] = slots
        return [perm[u] for u in unit_of]

    @property
    def constant(self) -> float:
        return self.top * float(sum(p.sum() for p in self.pairs))

    def value(self, unit_of: list[np.ndarray]) -> float:
        """The model objective of an assignment (local expert -> unit, per layer)."""
        total = self.constant
        for i, units in enumerate(unit_of):
            total += self.t_scale * float(
                np.bincount(units, weights=self.load[i], minlength=self.units).max()
            )
            if self.lin[i] is not None:
                total += float(self.lin[i][np.arange(units.size), units].sum())
        for i, r in enumerate(self.pairs):
            for labels, credit in self.levels:
                same = labels[unit_of[i]][:, None] == labels[unit_of[i + 1]][None, :]
                total -= credit * float(r[same].sum())
        return total

    def nonzeros(self) -> int:
        groups = sum(int(labels.max()) + 1 for labels, _ in self.levels)
        n = sum(load.size * self.units * 3 for load in self.load)
        return n + sum(2 * int(np.count_nonzero(r)) * groups + 4 * r.shape[0] * groups for r in self.pairs)


@dataclass
class _Result:
    unit_of: list[np.ndarray] | None
    status: str
    bound: float  # lower bound on the sub's model objective (constant included); -inf if unknown
    seconds: float


def _heaviest_first(load: np.ndarray) -> np.ndarray:
    return np.lexsort((np.arange(load.size), -np.asarray(load)))


class _Solver:
    def __init__(self, name: str, threads: int = 1) -> None:
        self.name = name
        self.threads = threads

    def solve(self, sub: _Sub, warm: list[np.ndarray], time_limit: float, max_nodes: int | None) -> _Result:
        start = time.perf_counter()
        warm = sub.canonical(warm)
        with warnings.catch_warnings():  # PuLP 3 deprecates LpVariable(...) and PULP_CBC_CMD for 4.0
            warnings.simplefilter("ignore", DeprecationWarning)
            model, x = _build(sub, warm)
            left = time_limit - (time.perf_counter() - start)  # building the model counts too
            if left < 0.1:
                return _Result(None, "no_solution", -math.inf, time.perf_counter() - start)
            if self.name == "highs":
                status, bound = _run_highs(model, left, max_nodes, self.threads)
            else:
                status, bound = _run_cbc(model, left, max_nodes, self.threads)
        unit_of = _read(x, sub) if status != "no_solution" else None
        if unit_of is None and status != "no_solution":
            status = "no_solution"
        return _Result(unit_of, status, bound + sub.constant, time.perf_counter() - start)


def _build(sub: _Sub, warm: list[np.ndarray]) -> tuple[pulp.LpProblem, list[list[list[pulp.LpVariable]]]]:
    model = pulp.LpProblem("placement", pulp.LpMinimize)
    cons: list[pulp.LpConstraint] = []
    objective: list[tuple[pulp.LpVariable, float]] = []
    nlayers = len(sub.load)
    units = range(sub.units)
    x = [
        [
            [pulp.LpVariable(f"x_{i}_{e}_{u}", cat=pulp.LpBinary) for u in units]
            for e in range(sub.load[i].size)
        ]
        for i in range(nlayers)
    ]
    for i in range(nlayers):
        n = sub.load[i].size
        for e in range(n):
            cons.append(pulp.LpConstraint(pulp.LpAffineExpression([(v, 1.0) for v in x[i][e]]), 0, rhs=1))
            x[i][e][int(warm[i][e])].setInitialValue(1)
            for u in units:
                if u != warm[i][e]:
                    x[i][e][u].setInitialValue(0)
        for u in units:
            cons.append(
                pulp.LpConstraint(
                    pulp.LpAffineExpression([(x[i][e][u], 1.0) for e in range(n)]), 0, rhs=sub.cap
                )
            )
        floor = sub.t_scale * _tail_bound(sub.load[i], sub.cap, sub.units)
        tail = pulp.LpVariable(f"T_{i}", lowBound=floor)
        loads = np.bincount(warm[i], weights=sub.load[i], minlength=sub.units)
        tail.setInitialValue(sub.t_scale * float(loads.max()))
        objective.append((tail, 1.0))
        for u in units:
            terms = [
                (x[i][e][u], sub.t_scale * float(sub.load[i][e])) for e in range(n) if sub.load[i][e] > 0
            ]
            terms.append((tail, -1.0))
            cons.append(pulp.LpConstraint(pulp.LpAffineExpression(terms), pulp.LpConstraintLE, rhs=0))
        if sub.lin[i] is not None:
            lin = sub.lin[i]
            objective.extend(
                (x[i][e][u], float(lin[e, u])) for e in range(n) for u in units if lin[e, u] != 0
            )
    if sub.symmetric and nlayers:  # symmetry breaking on layer 0 (module docstring of canonical)
        group, across = sub.symmetry()
        order = _heaviest_first(sub.load[0])
        for g in range(int(group.max()) + 1):
            members = np.flatnonzero(group == g)
            for j, u in enumerate(members):
                for i in range(min(j, order.size)):
                    x[0][order[i]][u].upBound = 0
            if across:
                for u in members:
                    for i in range(min(g, order.size)):
                        x[0][order[i]][u].upBound = 0
    # group aggregates X[i][level][e][G] for the levels coarser than the units
    agg: dict[tuple[int, int], list[list]] = {}
    for i in range(nlayers if sub.pairs else 0):
        for j, (labels, _) in enumerate(sub.levels):
            if np.array_equal(labels, np.arange(sub.units)):
                agg[i, j] = [[x[i][e][u] for u in units] for e in range(sub.load[i].size)]
                continue
            groups = int(labels.max()) + 1
            rows = []
            for e in range(sub.load[i].size):
                row = []
                for grp in range(groups):
                    var = pulp.LpVariable(f"X_{i}_{j}_{e}_{grp}", lowBound=0, upBound=1)
                    var.setInitialValue(1.0 if labels[warm[i][e]] == grp else 0.0)
                    members = [(x[i][e][u], 1.0) for u in np.flatnonzero(labels == grp)]
                    cons.append(pulp.LpConstraint(pulp.LpAffineExpression([*members, (var, -1.0)]), 0, rhs=0))
                    row.append(var)
                rows.append(row)
            agg[i, j] = rows
    for i, r in enumerate(sub.pairs):
        previous = None
        for j, (labels, credit) in enumerate(sub.levels):
            groups = int(labels.max()) + 1
            cap = sub.cap * int(np.bincount(labels).max())
            mass = pulp.LpVariable(f"C_{i}_{j}", lowBound=0, upBound=float(r.sum()))
            same = labels[warm[i]][:, None] == labels[warm[i + 1]][None, :]
            mass.setInitialValue(float(r[same].sum()))
            objective.append((mass, -float(credit)))
            for side, (mat, src, dst, src_warm, dst_warm) in enumerate(
                (
                    (r, agg[i, j], agg[i + 1, j], warm[i], warm[i + 1]),
                    (r.T, agg[i + 1, j], agg[i, j], warm[i + 1], warm[i]),
                )
            ):
                caps = -np.sort(-mat, axis=1)[:, :cap].sum(axis=1)
                total: list[tuple[pulp.LpVariable, float]] = []
                for e in np.flatnonzero(caps > 0):
                    partners = np.flatnonzero(mat[e])
                    own = labels[src_warm[e]]
                    for grp in range(groups):
                        w = pulp.LpVariable(f"w_{i}_{j}_{side}_{e}_{grp}", lowBound=0)
                        if grp == own:
                            got = float(mat[e, partners][labels[dst_warm[partners]] == grp].sum())
                            w.setInitialValue(min(got, float(caps[e])))
                        else:
                            w.setInitialValue(0.0)
                        cons.append(
                            pulp.LpConstraint(
                                pulp.LpAffineExpression([(w, 1.0), (src[e][grp], -float(caps[e]))]),
                                pulp.LpConstraintLE,
                                rhs=0,
                            )
                        )
                        terms = [(dst[p][grp], -float(mat[e, p])) for p in partners]
                        terms.append((w, 1.0))
                        cons.append(
                            pulp.LpConstraint(pulp.LpAffineExpression(terms), pulp.LpConstraintLE, rhs=0)
                        )
                        total.append((w, -1.0))
                total.append((mass, 1.0))
                cons.append(pulp.LpConstraint(pulp.LpAffineExpression(total), pulp.LpConstraintLE, rhs=0))
            if previous is not None:
                cons.append(
                    pulp.LpConstraint(
                        pulp.LpAffineExpression([(previous, 1.0), (mass, -1.0)]), pulp.LpConstraintLE, rhs=0
                    )
                )
            previous = mass
    model.setObjective(pulp.LpAffineExpression(objective))
    for number, con in enumerate(cons):
        model.addConstraint(con, f"c{number}")
    return model, x


def _read(x: list[list[list[pulp.LpVariable]]], sub: _Sub) -> list[np.ndarray] | None:
    """The solver's assignment per layer, or None unless it is integral and meets every constraint."""
    unit_of = []
    for rows in x:
        values = np.array([[v.varValue if v.varValue is not None else np.nan for v in row] for row in rows])
        if values.size and (np.isnan(values).any() or np.abs(values - np.round(values)).max() > 1e-4):
            return None
        chosen = np.round(values).astype(np.int64)
        if values.size and (np.any(chosen.sum(axis=1) != 1) or np.any(chosen.sum(axis=0) != sub.cap)):
            return None
        unit_of.append(np.argmax(chosen, axis=1) if values.size else np.zeros(0, dtype=np.int64))
    return unit_of


_CBC_STATUS = (
    ("Optimal solution found", "optimal"),
    ("Stopped on time", "time_limit"),
    ("Stopped on node", "node_limit"),
    ("Stopped on iterations", "node_limit"),
)


def _run_cbc(
    model: pulp.LpProblem, time_limit: float, max_nodes: int | None, threads: int
) -> tuple[str, float]:
    """Solve with CBC; (status, best bound of the model objective) parsed from CBC's log.

    CBC is run here rather than through ``LpProblem.solve`` so that its wall time is bounded:
    CBC checks ``-sec`` only between nodes, and a large root LP can run far past it. CBC gets
    ``-sec`` at 85 % of ``time_limit``; a run still going at ``time_limit`` + 5 s is killed (and
    counts as no solution). The initial LP uses the primal simplex, which is much faster than
    CBC's default dual simplex on these degenerate models.
    """
    cbc = pulp.PULP_CBC_CMD(msg=False)
    if not cbc.available():
        raise PlacementError("ilp: the CBC binary bundled with PuLP cannot be run on this machine")
    with tempfile.TemporaryDirectory(prefix="moesim-ilp-") as tmp:
        mps, mst, sol, log = (os.path.join(tmp, name) for name in ("m.mps", "m.mst", "m.sol", "cbc.log"))
        variables, names, rows, _ = model.writeMPS(mps, rename=1)
        cbc.writesol(mst, model, variables, names, rows)
        args = [
            cbc.path,
            mps,
            "-mips",
            mst,
            "-sec",
            f"{max(1.0, 0.85 * time_limit):.1f}",
            "-timeMode",
            "elapsed",
        ]
        args += ["-ratio", str(_REL_GAP), "-threads", str(threads), "-randomCbcSeed", str(SEED)]
        args += ["-randomSeed", str(SEED), "-primalS", "-solve", "-printingOptions", "all", "-solution", sol]
        if max_nodes is not None:
            args[-6:-6] = ["-maxNodes", str(int(max_nodes))]
        with open(log, "w") as out:
            process = subprocess.Popen(
                args, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, cwd=tmp
            )
            try:
                process.wait(timeout=time_limit + 5.0)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
                return "no_solution", -math.inf
        text = open(log).read()
        if process.returncode != 0 or not os.path.exists(sol):
            return "no_solution", -math.inf
        status_code, values, *_ = cbc.readsol_MPS(sol, model, variables, names, rows)
    status = "time_limit"
    for needle, name in _CBC_STATUS:
        if f"Result - {needle}" in text:
            status = name
            break
    bound = _cbc_bound(text, status)
    if not re.search(r"^Objective value:", text, re.MULTILINE) or status_code == pulp.LpStatusInfeasible:
        return "no_solution", bound  # e.g. stopped inside the root LP: the values are no placement
    model.assignVarsVals(values)
    return status, bound


def _cbc_bound(text: str, status: str) -> float:
    """The model's best bound from CBC's log, only where the log proves it (else ``-inf``).

    Proven: the objective when CBC says optimal (less the relative gap it stops at); the root
    LP optimum (``Continuous objective value``); CBC's ``Lower bound`` / ``best possible`` only
    once branch and bound has enumerated a node. A CBC stopped by the time limit inside the
    root cut loop prints the value of an unfinished LP there (seen: ``6.3e10`` above an
    incumbent of 707), which bounds nothing. Any bound above the incumbent is dropped too.
    """
    number = r"([-+]?(?:\d+\.?\d*(?:[eE][-+]?\d+)?|inf(?:inity)?))"
    incumbent = math.inf
    match = re.search(r"^Objective value:\s+" + number, text, re.MULTILINE)
    if match:
        incumbent = float(match.group(1))
        if status == "optimal":
            return incumbent - abs(incumbent) * _REL_GAP
    bound = -math.inf
    match = re.search(r"^Continuous objective value is " + number, text, re.MULTILINE)
    if match:
        bound = float(match.group(1))
    nodes = re.search(r"^Enumerated nodes:\s+(\d+)", text, re.MULTILINE)
    if nodes and int(nodes.group(1)) > 0:
        match = re.search(r"^Lower bound:\s+" + number, text, re.MULTILINE | re.IGNORECASE)
        found = [match.group(1)] if match else re.findall(r"best possible " + number, text)
        if found:
            bound = max(bound, float(found[-1]))
    if bound > incumbent + 1e-9 * max(1.0, abs(incumbent)):
        return -math.inf
    return bound


def highs_available() -> bool:
    """HiGHS through ``highspy`` (``pip install highspy``, the ``highs`` extra) can be used."""
    try:
        if not pulp.HiGHS(msg=False).available():
            return False
        _silence_highs_banner()
        return True
    except Exception:  # noqa: BLE001 - a broken optional solver counts as absent
        return False


@functools.cache
def _silence_highs_banner() -> None:
    """Make the process's first ``highspy.Highs()``, which prints a copyright banner straight to file
    descriptor 1 (before any option can turn output off), with that descriptor sent to /dev/null:
    the command line's output stays ours."""
    import highspy

    sys.stdout.flush()
    saved = os.dup(1)
    try:
        with open(os.devnull, "w") as sink:
            os.dup2(sink.fileno(), 1)
            highspy.Highs()
    finally:
        os.dup2(saved, 1)
        os.close(saved)


def _run_highs(
    model: pulp.LpProblem, time_limit: float, max_nodes: int | None, threads: int
) -> tuple[str, float]:
    """Solve with HiGHS (``highspy``, through PuLP's ``HiGHS`` model builder); (status, best bound).

    The warm start (the variables' initial values) goes in with ``setSolution``; HiGHS checks
    it and starts from it as its incumbent. ``time_limit`` is HiGHS's own ``time_limit`` (it is
    checked inside the LP solves too); ``max_nodes`` is ``mip_max_nodes``. The bound is
    ``mip_dual_bound`` (``-inf`` when HiGHS stopped before it had one). The solution is read
    from HiGHS directly (not PuLP's status table, which lacks the node-limit status).
    """
    import highspy

    _silence_highs_banner()
    options: dict[str, float | int] = {"random_seed": SEED, "mip_rel_gap": _REL_GAP}
    if max_nodes is not None:
        options["mip_max_nodes"] = int(max_nodes)
    api = pulp.HiGHS(msg=False, timeLimit=max(0.1, float(time_limit)), threads=threads, **options)
    api.createAndConfigureSolver(model)
    api.buildSolverModel(model)
    h = model.solverModel
    variables = model.variables()
    start = np.zeros(len(variables))
    for var in variables:
        start[var.index] = 0.0 if var.varValue is None else float(var.varValue)
    solution = highspy.HighsSolution()
    solution.col_value = start.tolist()
    solution.value_valid = True
    h.setSolution(solution)
    h.run()
    code = h.getModelStatus()
    info = h.getInfo()
    bound = float(info.mip_dual_bound)
    if not math.isfinite(bound) or bound <= -highspy.kHighsInf:
        bound = -math.inf
    statuses = {
        highspy.HighsModelStatus.kOptimal: "optimal",
        highspy.HighsModelStatus.kTimeLimit: "time_limit",
        highspy.HighsModelStatus.kSolutionLimit: "node_limit",  # mip_max_nodes ends here
        highspy.HighsModelStatus.kIterationLimit: "node_limit",
        highspy.HighsModelStatus.kInterrupt: "time_limit",
    }
    status = statuses.get(code, "no_solution")
    if int(info.primal_solution_status) != 2:  # kSolutionStatusFeasible (enum's home moved)
        return "no_solution", bound
    values = h.getSolution().col_value
    for var in variables:
        var.varValue = float(values[var.index])
    return (status if status != "no_solution" else "time_limit"), bound


# ----------------------------------------------------------------------------------------------
# drivers


def _gpu_of(placement: Placement) -> np.ndarray:
    out = np.empty((placement.layers, placement.experts), dtype=np.int64)
    for layer in range(placement.layers):
        out[layer, placement.phy2log[layer]] = placement.gpu_of_slot
    return out


def _to_placement(gpu_of: np.ndarray, gpus: int, experts: int) -> Placement:
    phy2log = np.stack([np.lexsort((np.arange(experts), row)) for row in gpu_of])
    return Placement(phy2log, gpus, experts, method="ilp")


def _prune(r: np.ndarray, coverage: float) -> np.ndarray:
    """Keep the heaviest entries of ``r`` covering ``coverage`` of its mass (ties: all kept)."""
    if coverage >= 1.0 or r.sum() == 0:
        return r
    flat = np.sort(r.ravel())[::-1]
    cut = flat[min(int(np.searchsorted(np.cumsum(flat), coverage * flat.sum())), flat.size - 1)]
    return np.where(r >= cut, r, 0.0)


class _Problem:
    """The whole instance: stats, normalised tiers, scaled transitions."""

    def __init__(self, stats: PlacementStats, cost: np.ndarray, lam: float, coverage: float) -> None:
        self.stats = stats
        self.gpus, self.experts, self.layers = stats.gpus, stats.experts, stats.layers
        self.k = self.experts // self.gpus
        self.tiers = cost_tiers(cost, self.gpus)
        self.lam = lam
        self.coef = lam / self.gpus
        self.load = [np.asarray(stats.load[layer], dtype=np.float64) for layer in range(self.layers)]
        self.pairs = [
            self.coef * _prune(np.asarray(stats.transitions[layer], dtype=np.float64), coverage)
            for layer in range(self.layers - 1)
        ]
        if self.tiers.top == 0.0 or lam == 0.0:
            self.pairs = [np.zeros_like(p) for p in self.pairs]

    def levels(self) -> list[tuple[np.ndarray, float]]:
        return list(zip(self.tiers.labels, (float(c) for c in self.tiers.credit), strict=True))

    def exact_load(self) -> np.ndarray:
        """``(layers, experts)`` tokens per expert."""
        return np.stack(self.load)

    def exact_pairs(self) -> np.ndarray:
        """``(layers − 1, experts, experts)`` all transitions, unscaled and unpruned (the objective's)."""
        if self.layers < 2:
            return np.zeros((0, self.experts, self.experts))
        return np.stack([np.asarray(t, dtype=np.float64) for t in self.stats.transitions[: self.layers - 1]])

    def whole(self) -> _Sub:
        return _Sub(
            load=self.load,
            units=self.gpus,
            cap=self.k,
            t_scale=1.0,
            pairs=self.pairs,
            levels=self.levels(),
            top=self.tiers.top,
            lin=[None] * self.layers,
        )

    def _linear(self, layer: int, gpu_of: np.ndarray, before: bool, after: bool) -> np.ndarray:
        """``(experts, gpus)`` traffic cost of each expert of ``layer`` on each GPU, neighbours fixed."""
        norm = self.tiers.normalised
        lin = np.zeros((self.experts, self.gpus))
        if self.tiers.top > 0:
            if before and layer > 0:  # tokens arriving from layer - 1: Σ_p R[p, e] ĉ[g(p), g]
                lin += self.pairs[layer - 1].T @ norm[gpu_of[layer - 1]]
            if after and layer < self.layers - 1:  # tokens leaving to layer + 1: Σ_n R[e, n] ĉ[g, g(n)]
                lin += self.pairs[layer] @ norm[:, gpu_of[layer + 1]].T
        return lin

    def layer_sub(self, layer: int, gpu_of: np.ndarray) -> _Sub:
        """Layer ``layer`` alone, its neighbours fixed at ``gpu_of``: affinity traffic is linear."""
        return _Sub(
            load=[self.load[layer]],
            units=self.gpus,
            cap=self.k,
            t_scale=1.0,
            pairs=[],
            levels=[],
            top=0.0,
            lin=[self._linear(layer, gpu_of, True, True)],
        )

    def window_sub(self, first: int, gpu_of: np.ndarray) -> _Sub:
        """Layers ``first`` and ``first + 1`` together, the layers around them fixed at ``gpu_of``."""
        return _Sub(
            load=[self.load[first], self.load[first + 1]],
            units=self.gpus,
            cap=self.k,
            t_scale=1.0,
            pairs=[self.pairs[first]],
            levels=self.levels(),
            top=self.tiers.top,
            lin=[self._linear(first, gpu_of, True, False), self._linear(first + 1, gpu_of, False, True)],
        )

    def hosts(self) -> np.ndarray:
        """Host of every GPU: the finest level coarser than single GPUs (one host when none)."""
        identity = np.arange(self.gpus)
        coarser = [labels for labels in self.tiers.labels if not np.array_equal(labels, identity)]
        return coarser[0] if coarser else np.zeros(self.gpus, dtype=np.int64)


def _choose(problem: _Problem, decompose: str) -> str:
    if decompose != "auto":
        return decompose
    sub = problem.whole()
    binaries = problem.layers * problem.experts * problem.gpus
    if binaries <= MONOLITHIC_BINARIES and sub.nonzeros() <= MONOLITHIC_NONZEROS:
        return "none"
    return "layers"


def ilp_placement(
    stats: PlacementStats,
    cost: np.ndarray,
    *,
    lam: float = 1.0,
    time_limit: float = 60.0,
    solver: str = "auto",
    decompose: str = "auto",
    warm_start: Placement | None = None,
    coverage: float = 1.0,
    max_nodes: int | None = None,
    anneal_moves: int | None = None,
) -> tuple[Placement, IlpReport]:
    """The ILP placement of ``stats`` on GPUs with per-byte ``cost`` (module docstring).

    Args:
        stats: the routing-trace statistics (:func:`placement.stats.placement_stats`).
        cost: ``(gpus, gpus)`` seconds per byte (:func:`placement.stats.gpu_cost`), hierarchical.
        lam: weight λ of the affinity traffic against the busiest GPU's tokens (>= 0).
        time_limit: wall seconds for the whole call (bound, start and all solves; ``RESERVE`` of it
            kept back for the last solve's overrun), > 0.
        solver: ``auto``, ``cbc`` or ``highs``.
        decompose: ``auto``, ``none``, ``layers`` or ``hosts``.
        warm_start: the incumbent to start from and never to be worse than (default greedy).
        coverage: share of each layer pair's transitions kept in the model, in (0, 1].
        max_nodes: a branch-and-bound node limit per subproblem (deterministic work limit).
        anneal_moves: proposals of the annealing in the ``layers`` decomposition (a deterministic
            work limit; 0 skips it); default: ``ANNEAL_SHARE`` of the time left after the bound.

    Returns:
        ``(placement, report)``; ``placement.method`` is ``ilp`` (or the warm start's own).

    Raises:
        PlacementError: an infeasible or invalid request (one line naming the constraint).
    """
    from placement.methods import greedy

    gpus, experts = stats.gpus, stats.experts
    if experts % gpus:
        raise PlacementError(_memory_message(experts, gpus))
    if not (isinstance(lam, int | float) and math.isfinite(lam) and lam >= 0):
        raise PlacementError(f"ilp: lam must be a finite number >= 0, got {lam!r}")
    if not (isinstance(time_limit, int | float) and time_limit > 0):
        raise PlacementError(f"ilp: time_limit must be a number of seconds > 0, got {time_limit!r}")
    if not (isinstance(coverage, int | float) and 0 < coverage <= 1):
        raise PlacementError(f"ilp: coverage must be in (0, 1], got {coverage!r}")
    if solver not in ("auto", "cbc", "highs"):
        raise PlacementError(f"ilp: solver must be auto, cbc or highs, got {solver!r}")
    if decompose not in ("auto", "none", "layers", "hosts"):
        raise PlacementError(f"ilp: decompose must be auto, none, layers or hosts, got {decompose!r}")
    name = solver
    if solver == "auto":
        name = "highs" if highs_available() else "cbc"
    elif solver == "highs" and not highs_available():
        raise PlacementError("ilp: solver highs is not installed (pip install highspy), use cbc or auto")
    problem = _Problem(stats, cost, float(lam), float(coverage))
    warm = greedy(stats) if warm_start is None else warm_start
    if warm.gpus != gpus or warm.experts != experts or warm.layers < stats.layers:
        raise PlacementError(
            f"ilp: warm_start is for {warm.gpus} GPUs, {warm.experts} experts and {warm.layers} layers; "
            f"the stats have {gpus}, {experts} and {stats.layers}"
        )
    if np.any(np.stack([warm.replicas(layer) for layer in range(stats.layers)]) != 1):
        raise PlacementError("ilp: warm_start has replicas; the ILP places every expert exactly once")
    warm_gpu = _gpu_of(warm)[: stats.layers]
    warm_value = placement_objective(warm, stats, cost, lam)
    mode = _choose(problem, decompose)
    if anneal_moves is not None and not (isinstance(anneal_moves, int) and anneal_moves >= 0):
        raise PlacementError(f"ilp: anneal_moves must be an integer >= 0, got {anneal_moves!r}")
    annealed, anneal_count = math.nan, 0
    engine = _Solver(name)
    start = time.perf_counter()
    # the last solve can end a little late (model building, the solver's own clock): keep a reserve
    deadline = start + float(time_limit) - min(1.0, RESERVE * float(time_limit))
    # first: its seconds count against time_limit (the joint bounds get BOUND_SHARE of it)
    combinatorial = lower_bound(stats, cost, lam, deadline=start + BOUND_SHARE * float(time_limit))
    begin, begin_name = warm_gpu, "warm_start"
    chained = _chain_start(problem)
    if placement_objective(_to_placement(chained, gpus, experts), stats, cost, lam) < warm_value:
        begin, begin_name = chained, "chains"  # the descent starts from the better of the two
    if mode == "none":  # polish the incumbent by layer sweeps (a quarter of the time), then the whole ILP
        presweep = time.perf_counter() + PRESWEEP * (deadline - time.perf_counter())
        polished, count = _sweep(problem, begin.copy(), engine, presweep, max_nodes)
        result = engine.solve(
            problem.whole(), list(polished), max(1.0, deadline - time.perf_counter()), max_nodes
        )
        count += 1
        gpu_of = polished if result.unit_of is None else np.stack(result.unit_of)
        status, solver_bound = result.status, result.bound
        if status == "no_solution":
            status = "time_limit"  # the whole ILP found nothing: the polished incumbent stands
    elif mode == "layers":
        # anneal with chain-keeping swaps first (the sweeps' single-layer moves cannot move a
        # chain), then polish with the exact layer sweeps
        now = time.perf_counter()
        stop = now + ANNEAL_SHARE * (deadline - now) if anneal_moves is None else None
        annealing = anneal(
            begin, problem.exact_load(), problem.exact_pairs(), problem.tiers.normalised,
            weight=float(lam) / gpus, moves=anneal_moves, deadline=stop, seed=SEED,
        )  # fmt: skip
        annealed, anneal_count = annealing.objective, annealing.moves
        if annealing.objective < annealing.start_objective:
            begin = annealing.gpu_of
        gpu_of, count = _sweep(problem, begin.copy(), engine, deadline, max_nodes)
        status, solver_bound = "decomposed", -math.inf
    else:
        gpu_of, count = _hosts_first(problem, begin.copy(), engine, deadline, max_nodes)
        status, solver_bound = "decomposed", -math.inf
    seconds = time.perf_counter() - start

    bound, source = (
        (solver_bound, "solver") if solver_bound >= combinatorial else (combinatorial, "combinatorial")
    )
    placement, value, returned = warm, warm_value, "warm_start"
    if gpu_of is not None:
        candidate = _to_placement(gpu_of, gpus, experts)
        candidate_value = placement_objective(candidate, stats, cost, lam)
        if candidate_value < warm_value - 1e-9 * max(1.0, abs(warm_value)):
            placement, value, returned = candidate, candidate_value, "ilp"
    bound = min(bound, value)  # rounding noise: a bound never exceeds a feasible objective
    gap = 0.0 if value <= 0 else max(0.0, (value - bound) / value)
    report = IlpReport(
        objective=value,
        best_bound=bound,
        gap=gap,
        status=status,
        solve_seconds=seconds,
        solver=name,
        decomposition=mode,
        bound_source=source,
        warm_objective=warm_value,
        returned=returned,
        subproblems=count,
        start=begin_name,
        annealed=annealed,
        anneal_moves=anneal_count,
    )
    return placement, report


def _sweep(
    problem: _Problem, gpu_of: np.ndarray, engine: _Solver, deadline: float, max_nodes: int | None
) -> tuple[np.ndarray, int]:
    """Block-coordinate descent over layers: each layer re-solved exactly with its neighbours fixed.

    Sweeps go forward, then backward, ...; a layer is solved again only when a neighbour changed
    since its last solve (else it would give the same answer). When no single layer improves,
    windows of two consecutive layers are solved (their mutual traffic quadratic as in the whole
    model, the outer neighbours linear) if such a model has at most ``WINDOW_NONZEROS``
    nonzeros. Each solve gets at most a ``1 / (2 · layers)`` share of the time left at the
    start (3 s at least).
    """
    count = 0
    layers = problem.layers
    share = max(3.0, (deadline - time.perf_counter()) / (2 * layers))
    stale = np.ones(layers, dtype=bool)
    window_stale = np.ones(max(layers - 1, 0), dtype=bool)
    windows = layers > 1 and problem.window_sub(0, gpu_of).nonzeros() <= WINDOW_NONZEROS
    order: Sequence[int] = range(layers)

    def changed(first: int, last: int) -> None:
        stale[max(first - 1, 0) : last + 2] = True
        window_stale[max(first - 2, 0) : last + 2] = True

    while True:
        while stale.any():
            for layer in order:
                left = deadline - time.perf_counter()
                if left <= 0.5:
                    return gpu_of, count
                if not stale[layer]:
                    continue
                stale[layer] = False
                better = _improve(
                    engine, problem.layer_sub(layer, gpu_of), [gpu_of[layer]], min(left, share), max_nodes
                )
                count += 1
                if better is not None:
                    gpu_of[layer] = better[0]
                    changed(layer, layer)
                    stale[layer] = False
            order = list(reversed(list(order)))
        if not windows or not window_stale.any():
            return gpu_of, count
        for first in range(layers - 1):
            left = deadline - time.perf_counter()
            if left <= 0.5:
                return gpu_of, count
            if not window_stale[first]:
                continue
            window_stale[first] = False
            current = [gpu_of[first], gpu_of[first + 1]]
            better = _improve(engine, problem.window_sub(first, gpu_of), current, min(left, share), max_nodes)
            count += 1
            if better is not None:
                gpu_of[first], gpu_of[first + 1] = better
                changed(first, first + 1)
                window_stale[first] = False


def _improve(
    engine: _Solver, sub: _Sub, current: list[np.ndarray], seconds: float, max_nodes: int | None
) -> list[np.ndarray] | None:
    """Solve ``sub`` from ``current``; the solver's placement if it is strictly better, else ``None``."""
    result = engine.solve(sub, current, seconds, max_nodes)
    now = sub.value(current)
    if result.unit_of is not None and sub.value(result.unit_of) < now - 1e-9 * max(1.0, abs(now)):
        return result.unit_of
    return None


def _hosts_first(
    problem: _Problem, gpu_of: np.ndarray, engine: _Solver, deadline: float, max_nodes: int | None
) -> tuple[np.ndarray, int]:
    """Experts onto hosts (host-level ILP), then each host's GPUs (independent ILPs), then layer sweeps."""
    hosts = problem.hosts()
    nhosts = int(hosts.max()) + 1
    per_host = np.bincount(hosts)
    if nhosts == 1 or np.any(per_host != per_host[0]):
        return _sweep(problem, gpu_of, engine, deadline, max_nodes)
    gph = int(per_host[0])
    host_levels = []
    levels = problem.levels()
    above = levels[1:] if levels and np.array_equal(levels[0][0], np.arange(problem.gpus)) else levels
    for labels, credit in above:  # levels at or above hosts, relabelled on hosts
        host_label = np.zeros(nhosts, dtype=np.int64)
        host_label[hosts] = labels
        host_levels.append((host_label, credit))
    levels = problem.levels()
    gpu_level = bool(levels) and np.array_equal(levels[0][0], np.arange(problem.gpus))
    credit_gpu = levels[0][1] if gpu_level else 0.0
    top = problem.tiers.top
    budget = deadline - time.perf_counter()
    count = 0
    warm_host = [hosts[row] for row in gpu_of]
    host_sub = _Sub(
        load=problem.load,
        units=nhosts,
        cap=problem.k * gph,
        t_scale=1.0 / gph,
        pairs=problem.pairs,
        levels=host_levels,
        top=top - credit_gpu,  # same-GPU credit is decided later, inside the hosts
        lin=[None] * problem.layers,
    )
    result = engine.solve(host_sub, warm_host, 0.5 * budget, max_nodes)
    count += 1
    host_of = warm_host if result.unit_of is None else result.unit_of
    new = gpu_of.copy()
    local_gpus = [np.flatnonzero(hosts == h) for h in range(nhosts)]
    for h in range(nhosts):
        members = [np.flatnonzero(host_of[layer] == h) for layer in range(problem.layers)]
        sub = _Sub(
            load=[problem.load[layer][members[layer]] for layer in range(problem.layers)],
            units=gph,
            cap=problem.k,
            t_scale=1.0,
            pairs=[
                problem.pairs[layer][np.ix_(members[layer], members[layer + 1])]
                for layer in range(problem.layers - 1)
            ],
            levels=[(np.arange(gph), credit_gpu)] if credit_gpu > 0 else [],
            top=0.0,
            lin=[None] * problem.layers,
        )
        warm_local = []
        for layer in range(problem.layers):
            old = gpu_of[layer][members[layer]]
            if np.all(hosts[old] == h):
                warm_local.append(np.searchsorted(local_gpus[h], old))
            else:
                warm_local.append(_lpt(sub.load[layer], gph))
        left = deadline - time.perf_counter()
        result = engine.solve(sub, warm_local, max(1.0, left / (nhosts - h) * 0.8), max_nodes)
        count += 1
        chosen = warm_local if result.unit_of is None else result.unit_of
        for layer in range(problem.layers):
            new[layer][members[layer]] = local_gpus[h][chosen[layer]]
    polished, more = _sweep(problem, new, engine, deadline, max_nodes)
    return polished, count + more


def _chain_start(problem: _Problem) -> np.ndarray:
    """``(layers, experts)`` GPU of every expert: chains of affine experts kept on one GPU.

    Per layer pair a greedy maximum-weight matching of the transitions
    (:func:`placement.anneal.chain_successors`) links every expert of layer ``l`` to one of layer
    ``l + 1``; the links make ``experts`` chains, one expert per layer each. The chains are packed
    heaviest first (total load), ``experts / gpus`` per GPU, each onto the GPU with room whose
    per-layer loads overlap its own the least (the smallest ``Σ_l load_l(g) · chain_l``: the
    lightest GPU when there is one layer). The matched tokens then never leave their GPU; the layer
    sweeps balance the loads.
    """
    layers, experts, gpus = problem.layers, problem.experts, problem.gpus
    chain = np.empty((layers, experts), dtype=np.int64)
    chain[0] = np.arange(experts)
    if layers > 1:
        successor = chain_successors(np.stack(problem.pairs))
        for layer in range(layers - 1):
            chain[layer + 1] = successor[layer][chain[layer]]
    weight = np.stack([problem.load[layer][chain[layer]] for layer in range(layers)], axis=1)
    gpu_load = np.zeros((gpus, layers))
    room = np.full(gpus, problem.k)
    gpu_of_chain = np.empty(experts, dtype=np.int64)
    for c in np.lexsort((np.arange(experts), -weight.sum(axis=1))):
        overlap = np.where(room > 0, gpu_load @ weight[c], np.inf)
        g = int(np.argmin(overlap))
        gpu_of_chain[c] = g
        gpu_load[g] += weight[c]
        room[g] -= 1
    out = np.empty((layers, experts), dtype=np.int64)
    for layer in range(layers):
        out[layer, chain[layer]] = gpu_of_chain
    return out


def _lpt(load: np.ndarray, units: int) -> np.ndarray:
    """Heaviest first onto the lightest unit with room (equal items per unit)."""
    size = load.size // units
    unit_load = np.zeros(units)
    room = np.full(units, size)
    out = np.empty(load.size, dtype=np.int64)
    for e in np.argsort(-load, kind="stable"):
        u = int(np.argmin(np.where(room > 0, unit_load, np.inf)))
        out[e] = u
        unit_load[u] += load[e]
        room[u] -= 1
    return out
