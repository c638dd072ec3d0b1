"""Simulated annealing over expert swaps: the primal heuristic in front of the ILP's layer sweeps.

The ILP's block-coordinate descent (:func:`placement.ilp.ilp_placement`, ``decompose="layers"``)
re-solves one layer with its neighbours fixed. That is an exact best response, but a placement
whose chains of affine experts (expert ``e`` of layer ``l`` and the expert most of its tokens go
to next) sit on one GPU is a deep local optimum for it: moving one expert of a chain breaks the
chain's links on both sides. :func:`anneal` therefore searches with moves that keep chains whole:

- **swap**: two experts of one layer trade GPUs (the per-GPU expert count stays equal);
- **chain swap**: two experts of layer ``l`` and their chain successors in layers ``l+1 …
  l+len-1`` trade GPUs layer by layer, so the links inside the segment survive and only its two
  ends change.

It minimises exactly :func:`placement.ilp.placement_objective` (``Σ_l`` busiest GPU's tokens
``+ λ/G ·`` affinity traffic in normalised cost), kept incrementally: ``A[l,e,g]``, the traffic
cost of expert ``e`` of layer ``l`` were it on GPU ``g`` (its transitions to both neighbouring
layers), makes a swap's traffic change four lookups, and applying a swap updates the two
neighbouring layers' ``A`` in ``O(E·G)``. Acceptance is Metropolis with a temperature that falls
geometrically from ``t_start`` to ``t_end`` over ``moves`` proposals; the best placement seen is
returned. The hot loop is a numba kernel; :func:`swap_delta_reference` and
:func:`placement.ilp.placement_objective` are the plain-numpy references the tests compare its
move values and its tracked objective with. The same inputs and seed give the same result (the
kernel draws from numba's own seeded generator); the work is ``moves`` proposals, not a time.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numba
import numpy as np

CHAIN_SHARE = 0.5  # share of proposals that are chain swaps (the rest single swaps)
T_START = 0.1  # first temperature, times the median |change| of a random single swap
T_END = 0.003  # last temperature, the same way
PROBE = 20_000  # proposals timed to set how many fit before a deadline
CHUNK_SECONDS = 1.0  # a deadline is checked between chunks of about this many seconds


@dataclass(frozen=True)
class AnnealResult:
    """What :func:`anneal` returns.

    Attributes:
        gpu_of: ``(layers, experts)`` GPU of every expert, the best placement seen.
        objective: its objective (the kernel's incremental value; tokens per GPU).
        start_objective: the objective of the placement it started from.
        accepted: proposals accepted.
        moves: proposals made.
    """

    gpu_of: np.ndarray
    objective: float
    start_objective: float
    accepted: int
    moves: int


def chain_successors(transitions: np.ndarray) -> np.ndarray:
    """``(layers − 1, experts)`` the chain successor in layer ``l + 1`` of every expert of layer ``l``.

    A greedy maximum-weight matching of each layer pair's transitions (heaviest first, ties by
    index): every expert gets a distinct successor, the partner most of its tokens go to where
    the matching allows.
    """
    r = np.asarray(transitions, dtype=np.float64)
    pairs, experts = r.shape[0], r.shape[1]
    out = np.empty((pairs, experts), dtype=np.int64)
    for layer in range(pairs):
        partner = np.full(experts, -1, dtype=np.int64)
        taken = np.zeros(experts, dtype=bool)
        for flat in np.argsort(-r[layer], axis=None, kind="stable"):
            e, f = divmod(int(flat), experts)
            if partner[e] < 0 and not taken[f]:
                partner[e], taken[f] = f, True
        out[layer] = partner
    return out


@numba.njit(cache=True)
def _affinity_cost(gpu: np.ndarray, r: np.ndarray, c: np.ndarray) -> np.ndarray:
    """``A[l,e,g]``: normalised traffic cost of expert ``e`` of layer ``l`` if it were on GPU ``g``."""
    layers, experts = gpu.shape
    gpus = c.shape[0]
    a = np.zeros((layers, experts, gpus))
    for layer in range(layers - 1):
        for e in range(experts):
            for f in range(experts):
                w = r[layer, e, f]
                if w == 0.0:
                    continue
                gf = gpu[layer + 1, f]
                ge = gpu[layer, e]
                for g in range(gpus):
                    a[layer, e, g] += w * c[g, gf]
                    a[layer + 1, f, g] += w * c[ge, g]
    return a


@numba.njit(cache=True)
def _objective(gpu: np.ndarray, load: np.ndarray, r: np.ndarray, c: np.ndarray, weight: float) -> float:
    layers, experts = gpu.shape
    gpus = c.shape[0]
    total = 0.0
    for layer in range(layers):
        per = np.zeros(gpus)
        for e in range(experts):
            per[gpu[layer, e]] += load[layer, e]
        total += per.max()
    traffic = 0.0
    for layer in range(layers - 1):
        for e in range(experts):
            ge = gpu[layer, e]
            for f in range(experts):
                traffic += r[layer, e, f] * c[ge, gpu[layer + 1, f]]
    return total + weight * traffic


@numba.njit(cache=True)
def _swap_delta(
    gpu: np.ndarray, load: np.ndarray, a: np.ndarray, gl: np.ndarray,
    layer: int, x: int, y: int, weight: float,
) -> float:  # fmt: skip
    """Objective change if experts ``x`` and ``y`` of ``layer`` traded GPUs (state unchanged)."""
    gx = gpu[layer, x]
    gy = gpu[layer, y]
    if gx == gy:
        return 0.0
    traffic = a[layer, x, gy] - a[layer, x, gx] + a[layer, y, gx] - a[layer, y, gy]
    shift = load[layer, y] - load[layer, x]
    old = -np.inf
    new = -np.inf
    for g in range(gl.shape[1]):
        v = gl[layer, g]
        if v > old:
            old = v
        if g == gx:
            v = v + shift
        elif g == gy:
            v = v - shift
        if v > new:
            new = v
    return new - old + weight * traffic


@numba.njit(cache=True)
def _apply_swap(
    gpu: np.ndarray, load: np.ndarray, r: np.ndarray, c: np.ndarray, a: np.ndarray, gl: np.ndarray,
    layer: int, x: int, y: int,
) -> None:  # fmt: skip
    """Trade the GPUs of experts ``x`` and ``y`` of ``layer`` and update loads and ``A``."""
    layers, experts = gpu.shape
    gpus = c.shape[0]
    gx = gpu[layer, x]
    gy = gpu[layer, y]
    if gx == gy:
        return
    shift = load[layer, y] - load[layer, x]
    gl[layer, gx] += shift
    gl[layer, gy] -= shift
    gpu[layer, x] = gy
    gpu[layer, y] = gx
    d = np.empty(gpus)
    for g in range(gpus):
        d[g] = c[g, gy] - c[g, gx]
    if layer + 1 < layers:
        for f in range(experts):
            coef = r[layer, x, f] - r[layer, y, f]
            if coef != 0.0:
                for g in range(gpus):
                    a[layer + 1, f, g] += coef * d[g]
    if layer > 0:
        for e in range(experts):
            coef = r[layer - 1, e, x] - r[layer - 1, e, y]
            if coef != 0.0:
                for g in range(gpus):
                    a[layer - 1, e, g] += coef * d[g]


@numba.njit(cache=True)
def _below(n: int) -> int:
    """A uniform integer in ``[0, n)`` from numba's seeded generator."""
    return np.random.randint(0, n)  # noqa: NPY002


@numba.njit(cache=True)
def _uniform() -> float:
    """A uniform float in ``[0, 1)`` from numba's seeded generator."""
    return np.random.random()  # noqa: NPY002


@numba.njit(cache=True)
def _anneal_kernel(
    gpu: np.ndarray, load: np.ndarray, r: np.ndarray, c: np.ndarray, nxt: np.ndarray, weight: float,
    first: int, moves: int, total: int, t_start: float, t_end: float, chain_share: float, seed: int,
) -> tuple[np.ndarray, float, int]:  # fmt: skip
    """Proposals ``first … first + moves − 1`` of a ``total``-proposal schedule; ``gpu`` moves in place."""
    np.random.seed(seed)  # noqa: NPY002 (seeds numba's own generator, used in nopython mode)
    layers, experts = gpu.shape
    gpus = c.shape[0]
    a = _affinity_cost(gpu, r, c)
    gl = np.zeros((layers, gpus))
    for layer in range(layers):
        for e in range(experts):
            gl[layer, gpu[layer, e]] += load[layer, e]
    current = _objective(gpu, load, r, c, weight)
    best = current
    best_gpu = gpu.copy()
    accepted = 0
    seg_layer = np.empty(layers, dtype=np.int64)
    seg_x = np.empty(layers, dtype=np.int64)
    seg_y = np.empty(layers, dtype=np.int64)
    ratio = t_end / t_start
    for step in range(first, first + moves):
        temp = t_start * ratio ** (step / total)
        if layers > 1 and _uniform() < chain_share:
            # a chain segment: x, y and their successors trade GPUs layer by layer
            span = 2 + _below(layers - 1)
            layer = _below(layers - span + 1)
            x = _below(experts)
            y = _below(experts)
            if x == y:
                continue
            count = 0
            delta = 0.0
            cx = x
            cy = y
            for step_layer in range(layer, layer + span):
                if step_layer > layer:
                    cx = nxt[step_layer - 1, cx]
                    cy = nxt[step_layer - 1, cy]
                if gpu[step_layer, cx] != gpu[step_layer, cy]:
                    delta += _swap_delta(gpu, load, a, gl, step_layer, cx, cy, weight)
                    _apply_swap(gpu, load, r, c, a, gl, step_layer, cx, cy)
                    seg_layer[count] = step_layer
                    seg_x[count] = cx
                    seg_y[count] = cy
                    count += 1
            if count == 0:
                continue
            if delta <= 0.0 or _uniform() < np.exp(-delta / temp):
                current += delta
                accepted += 1
            else:
                for i in range(count - 1, -1, -1):
                    _apply_swap(gpu, load, r, c, a, gl, seg_layer[i], seg_x[i], seg_y[i])
                continue
        else:
            layer = _below(layers)
            x = _below(experts)
            y = _below(experts)
            if gpu[layer, x] == gpu[layer, y]:
                continue
            delta = _swap_delta(gpu, load, a, gl, layer, x, y, weight)
            if delta <= 0.0 or _uniform() < np.exp(-delta / temp):
                _apply_swap(gpu, load, r, c, a, gl, layer, x, y)
                current += delta
                accepted += 1
            else:
                continue
        if current < best - 1e-9:
            best = current
            best_gpu[:, :] = gpu
    return best_gpu, _objective(best_gpu, load, r, c, weight), accepted


def anneal(
    gpu_of: np.ndarray,
    load: np.ndarray,
    transitions: np.ndarray,
    cost: np.ndarray,
    *,
    weight: float,
    moves: int | None = None,
    deadline: float | None = None,
    seed: int = 1,
    t_start: float | None = None,
    t_end: float | None = None,
    chain_share: float = CHAIN_SHARE,
) -> AnnealResult:
    """Anneal ``gpu_of`` (module docstring); every GPU keeps its number of experts per layer.

    Args:
        gpu_of: ``(layers, experts)`` starting GPU of every expert.
        load: ``(layers, experts)`` tokens per expert.
        transitions: ``(layers − 1, experts, experts)`` tokens from expert ``e`` of layer ``l`` to
            expert ``e'`` of layer ``l + 1``.
        cost: ``(gpus, gpus)`` normalised cost of one token between two GPUs (0 on the diagonal).
        weight: the affinity term's weight, ``λ / G``.
        moves: proposals to make: a work limit, so the result does not depend on the machine.
        deadline: instead of ``moves``, a ``time.perf_counter()`` time to stop by: the rate of a
            first chunk of proposals sets how many fit (the result then depends on the machine).
        seed: the kernel's random seed.
        t_start, t_end: the temperature's first and last value in objective units (default: from
            the median size of a sample of single-swap changes, ``0.1×`` and ``0.003×`` of it).
        chain_share: share of proposals that are chain swaps.

    Returns:
        The best placement seen and its objective (:class:`AnnealResult`).
    """
    gpu = np.ascontiguousarray(gpu_of, dtype=np.int64).copy()
    w = np.ascontiguousarray(load, dtype=np.float64)
    r = np.ascontiguousarray(transitions, dtype=np.float64)
    c = np.ascontiguousarray(cost, dtype=np.float64)
    weight = float(weight)
    layers, experts = gpu.shape
    if r.shape[0] == 0:
        r = np.zeros((0, experts, experts))
    nxt = chain_successors(r) if layers > 1 else np.zeros((0, experts), dtype=np.int64)
    start_value = float(_objective(gpu, w, r, c, weight))
    if t_start is None or t_end is None:
        scale = _typical_delta(gpu, w, r, c, weight, seed)
        t_start = T_START * scale if t_start is None else t_start
        t_end = T_END * scale if t_end is None else t_end
    if (moves is None) == (deadline is None):
        raise ValueError("anneal: give exactly one of moves and deadline")
    best_gpu, best_value, accepted, done = gpu.copy(), start_value, 0, 0
    if t_start <= 0 or t_end <= 0:
        return AnnealResult(best_gpu, best_value, start_value, 0, 0)
    if moves is not None:
        total = int(moves)
        chunk = max(total, 1)
    else:
        # one proposal first: the kernel's first call compiles it (seconds) and must not be timed
        _anneal_kernel(gpu.copy(), w, r, c, nxt, weight, 0, 1, PROBE, t_start, t_end, chain_share, seed)
        probe = time.perf_counter()
        _anneal_kernel(gpu.copy(), w, r, c, nxt, weight, 0, PROBE, PROBE, t_start, t_end, chain_share, seed)
        rate = PROBE / max(time.perf_counter() - probe, 1e-6)  # proposals per second (compiled)
        total = int(rate * max(deadline - time.perf_counter(), 0.0))
        chunk = max(int(rate * CHUNK_SECONDS), 1)
    while done < total:
        if deadline is not None and time.perf_counter() >= deadline:
            break
        count = min(chunk, total - done)
        found, value, taken = _anneal_kernel(
            gpu, w, r, c, nxt, weight, done, count, total, t_start, t_end, chain_share, seed + done
        )
        accepted += int(taken)
        done += count
        if value < best_value - 1e-9 * max(1.0, abs(best_value)):
            best_gpu, best_value = found, float(value)
    return AnnealResult(best_gpu, best_value, start_value, accepted, done)


def _typical_delta(
    gpu: np.ndarray, load: np.ndarray, r: np.ndarray, c: np.ndarray, weight: float, seed: int
) -> float:
    """Median ``|Δ|`` of single swaps drawn at random (the temperature's scale); 1.0 if all are 0."""
    rng = np.random.default_rng(seed)
    layers, experts = gpu.shape
    gpus = c.shape[0]
    a = _affinity_cost(gpu, r, c)
    gl = np.zeros((layers, gpus))
    for layer in range(layers):
        np.add.at(gl[layer], gpu[layer], load[layer])
    deltas = []
    for _ in range(512):
        layer, x, y = int(rng.integers(layers)), int(rng.integers(experts)), int(rng.integers(experts))
        if gpu[layer, x] != gpu[layer, y]:
            deltas.append(abs(_swap_delta(gpu, load, a, gl, layer, x, y, weight)))
    positive = [d for d in deltas if d > 0]
    return float(np.median(positive)) if positive else 1.0


def swap_delta_reference(
    gpu_of: np.ndarray, load: np.ndarray, transitions: np.ndarray, cost: np.ndarray, weight: float,
    swaps: list[tuple[int, int, int]],
) -> float:  # fmt: skip
    """Plain-numpy reference: the objective change of applying ``swaps`` ``(layer, x, y)`` in order."""

    def value(gpu: np.ndarray) -> float:
        tail = sum(
            float(np.bincount(gpu[layer], weights=load[layer], minlength=cost.shape[0]).max())
            for layer in range(gpu.shape[0])
        )
        traffic = sum(
            float((transitions[layer] * cost[np.ix_(gpu[layer], gpu[layer + 1])]).sum())
            for layer in range(gpu.shape[0] - 1)
        )
        return tail + weight * traffic

    before = np.asarray(gpu_of).copy()
    after = before.copy()
    for layer, x, y in swaps:
        after[layer, x], after[layer, y] = after[layer, y], after[layer, x]
    return value(after) - value(before)
