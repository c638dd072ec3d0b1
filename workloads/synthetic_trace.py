"""Synthetic MoE routing traces with a chosen skew, layer-to-layer affinity and drift over batches.

:func:`synth_trace` builds a :class:`~workloads.routing_trace.RoutingTrace` from a few knobs; its
statistics (``routing_trace.imbalance``, ``routing_trace.affinity``) land on the requested values.

The model, in *rank space* (rank 0 = the most popular expert of a layer):

- **Popularity.** Layer ``l`` picks rank ``r`` with weight ``(r + 1) ** -s_l`` (Zipf). With
  ``zipf=s`` every layer uses ``s``. With ``imbalance=T`` each layer's exponent is calibrated so
  that the realised ``(max − mean) / mean`` of its per-expert load is within 5 % (relative) of
  ``T``. Reachable: ``0 < T <= experts / top_k − 1`` (with ``top_k`` distinct experts per token
  an expert gets at most every token once), and ``T`` above the sampling noise of a uniform
  router, about ``sqrt(2 ln E) · sqrt((E − k) / (N k))`` for ``N`` tokens. ``T = 0`` means
  uniform popularity (``s = 0``); the realised imbalance is then that sampling noise alone.
  Neither ``imbalance`` nor ``zipf``: uniform.
- **Top-k.** Each token draws ``top_k`` distinct ranks, one slot after the other, each ∝
  popularity among the ranks not yet taken (Plackett–Luce, the law of Gumbel-top-k); slot 0 is
  drawn first. A slot draws by inverse CDF from its own uniform; when it hits a taken rank it is
  redrawn exactly from the popularity restricted to the free ranks.
- **Affinity.** For each token and slot, with probability ``q`` the token keeps at layer
  ``l + 1`` the rank it had in that slot at layer ``l``; otherwise the slot is drawn afresh (as
  above, avoiding the kept ranks). In expert ids, the kept expert is ``m_l(e)``, with ``m_l`` the
  fixed permutation taking layer ``l``'s expert of popularity rank ``r`` to layer ``l + 1``'s
  expert of rank ``r``: marginal popularity, hence imbalance, is preserved. ``affinity=A`` is the
  target uncertainty coefficient U of ``routing_trace.affinity``; ``q`` is calibrated per layer
  pair so the realised U is within ``max(0.03, 0.05 · A)`` of ``A``. ``A = 0`` is ``q = 0`` and
  ``A = 1`` is ``q = 1`` (U = 1 exactly). Near ``q = 0`` the realised U is the estimator's
  finite-sample bias (``routing_trace.affinity_noise``); at extreme skew it is higher, because
  slot order itself then tells the expert (slot 0 is nearly always the most popular one). A
  target below that floor raises ``ValueError``. With drift, U is pooled over batches whose
  popular experts move together in both layers, so ``q = 0`` shows some U as well.
- **Experts.** Layer 0's ranking (rank → expert) is a seeded random permutation; layer ``l + 1``'s
  is ``m_l`` applied to layer ``l``'s, so every layer's ranking is a random permutation.
- **Drift.** Tokens are split into ``batches`` nearly equal batches (``batch`` array). With drift
  ``d`` in [0, 1], batch ``b``'s ranking comes from batch ``b − 1``'s: with ``v`` the
  per-expert popularity of batch ``b − 1`` (layer 0's profile) and ``π_b`` a fresh random
  permutation, the experts are re-ranked by ``(1 − d) · v + d · v[π_b]`` (ties kept in the old
  order) and take the profile's values in that order. So the popularity *profile* (and the
  per-batch imbalance) is unchanged; which experts are popular moves: ``d = 0`` keeps every
  batch identical, ``d = 1`` draws an unrelated ranking per batch, and in between two experts
  can trade places only if their popularities differ by less than ``d / (1 − d)`` times the
  gap between the most and the least popular expert. Every layer's ranking moves with
  layer 0's (through the fixed ``m_l``), so affinity keeps its meaning across batches. With
  drift the imbalance target applies per batch (in each batch's own ranking; the whole trace,
  averaging moving experts, is flatter; see ``routing_trace.batch_imbalance``).
- **Tokens.** ``tokens_per_gpu`` tokens start on each of ``gpus`` GPUs; token order is
  batch-major, then GPU.

Calibration: ``s`` and ``q`` are found per layer with a deterministic bracketing search (a first
guess from a closed-form model, stepping out to a bracket, then regula falsi with the Illinois
fix) on the realised statistic of that very layer, using common random numbers (every slot's
uniforms are fixed before the search, so the statistic is a deterministic, nearly monotone
function of ``s`` or ``q``). The search stops within 40 % of the tolerance. Traces of more than
``CALIBRATION_TOKENS`` tokens are calibrated on the first ``CALIBRATION_TOKENS`` tokens of a
seeded random token order (the full trace's draws start with these); the full layer is then
checked, and if it misses half the tolerance the subsample's targets are shifted by the
full-minus-subsample difference and it is calibrated again (twice at most), and as a last resort
on all tokens. The final check is always on the full layer; a target that cannot be met raises
``ValueError``.

Deterministic: the same arguments and seed give bit-identical arrays.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np

from workloads.routing_trace import (
    RoutingTrace,
    uncertainty_coefficient,
    uncertainty_from_joint,
)

IMBALANCE_RTOL = 0.05  # realised imbalance within this relative error of the target
AFFINITY_ATOL = 0.03  # realised affinity within max(ATOL, RTOL * target) of the target
AFFINITY_RTOL = 0.05
CALIBRATION_TOKENS = 65_536  # calibrate on this many tokens, then check the full trace
MAX_EXPONENT = 60.0  # largest Zipf exponent tried: rank 1 is 2**-60 as popular as rank 0
_AIM = 0.4  # calibration aims at this fraction of the tolerance, leaving room for the full trace
_LUT_BITS = 16
_JOINT_LIMIT = 1 << 24  # per-batch joint histograms up to this many cells
_MAX_EVALS = 40

_GOLD = np.uint64(0x9E3779B97F4A7C15)
_M1 = np.uint64(0xBF58476D1CE4E5B9)
_M2 = np.uint64(0x94D049BB133111EB)
_MASK = (1 << 64) - 1
_Fitted = tuple[np.ndarray, float, float]  # a layer's (k, N) ranks, Zipf exponent, keep probability


# ----------------------------------------------------------------------------------------------
# random numbers


def _mix_int(x: int) -> int:
    """splitmix64 of a Python int."""
    x = (x + 0x9E3779B97F4A7C15) & _MASK
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & _MASK
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & _MASK
    return x ^ (x >> 31)


def _hash_uniforms(key: int, counters: np.ndarray) -> np.ndarray:
    """Uniforms in [0, 1) that depend only on (key, counter): splitmix64, wrapping uint64."""
    z = counters.astype(np.uint64)
    z += np.uint64(key)
    z += _GOLD
    z ^= z >> np.uint64(30)
    z *= _M1
    z ^= z >> np.uint64(27)
    z *= _M2
    z ^= z >> np.uint64(31)
    z >>= np.uint64(11)
    return z.astype(np.float64) * 2.0**-53


def _stream(seed: int, tag: int, layer: int = 0, slot: int = 0) -> np.random.Generator:
    return np.random.default_rng([seed, tag, layer, slot])


def _slot_uniforms(seed: int, tag: int, layer: int, n: int, k: int) -> np.ndarray:
    """(k, n) uniforms, one stream per slot: the first n of N tokens get the same values."""
    return np.stack([_stream(seed, tag, layer, slot).random(n) for slot in range(k)])


# ----------------------------------------------------------------------------------------------
# popularity and sampling


def zipf_popularity(exponent: float, experts: int) -> np.ndarray:
    """(experts,) probabilities ∝ (rank + 1) ** -exponent, rank 0 the most popular."""
    logw = -exponent * np.log(np.arange(1, experts + 1, dtype=np.float64))
    w = np.exp(logw - logw.max())
    return w / w.sum()


def _rank_dtype(experts: int) -> type:
    return np.int16 if experts <= np.iinfo(np.int16).max else np.int32


class _InverseCDF:
    """Maps uniforms u in [0, 1) to the first rank whose cumulative probability exceeds u.

    A 2**16-cell lookup table answers the cells that hold one rank; the few cells that straddle
    a boundary fall back to a binary search. Monotone in u, and in the exponent for Zipf.
    """

    def __init__(self, p: np.ndarray) -> None:
        cdf = np.cumsum(p)
        cdf /= cdf[-1]
        cdf[-1] = 1.0
        self.cdf = cdf
        self.last = p.size - 1
        self.cells = 1 << _LUT_BITS
        at = np.searchsorted(cdf, np.arange(self.cells + 1) / self.cells, side="right")
        self.table = np.where(at[:-1] == at[1:], at[:-1], -1).astype(_rank_dtype(p.size))

    def __call__(self, u: np.ndarray) -> np.ndarray:
        cell = (u * self.cells).astype(np.int32)
        np.minimum(cell, self.cells - 1, out=cell)
        ranks = self.table[cell]
        flat = ranks.reshape(-1)
        hard = np.flatnonzero(flat < 0)
        if hard.size:
            exact = np.searchsorted(self.cdf, u.reshape(-1)[hard], side="right")
            flat[hard] = np.minimum(exact, self.last)
        return ranks


def _restricted_draw(icdf: _InverseCDF, p_ext: np.ndarray, u: np.ndarray, taken: np.ndarray) -> np.ndarray:
    """One rank per row ∝ popularity among the ranks not in ``taken`` (row-wise, sentinel = E).

    Inverse CDF over the free ranks without building per-row CDFs: the smallest r with
    ``cdf[r] − (taken mass at ranks <= r) > u · (free mass)``. Found by the fixed-point iteration
    ``r ← icdf(target + taken mass at ranks <= r)``, which rises monotonically to that r (at most
    one step per taken rank) and never lands on a taken rank.
    """
    experts = p_ext.size - 1
    mass = p_ext[taken]
    target = u * (1.0 - mass.sum(axis=1))
    ranks = icdf(target)
    active = np.arange(ranks.size)
    for _ in range(taken.shape[1] + 1):
        below = np.where(taken[active] <= ranks[active, None], mass[active], 0.0).sum(axis=1)
        moved = icdf(target[active] + below)
        changed = moved != ranks[active]
        ranks[active] = moved
        active = active[changed]
        if not active.size:
            break
    bad = np.flatnonzero((taken == ranks[:, None]).any(axis=1))
    if bad.size:  # rounding at a vanishing free mass: take the most popular free rank
        free = np.ones((bad.size, experts + 1), dtype=bool)
        np.put_along_axis(free, taken[bad].astype(np.intp), False, axis=1)
        ranks[bad] = np.argmax(free[:, :experts], axis=1)
    return ranks


def _sample_ranks(
    p: np.ndarray, u: np.ndarray, key: int, prev: np.ndarray | None, mapped: np.ndarray | None
) -> np.ndarray:
    """(k, n) ranks: each token's k distinct ranks, drawn slot by slot ∝ ``p``.

    Args:
        p: (E,) popularity by rank.
        u: (k, n) uniforms, one per slot and token.
        key: seeds the uniforms of redraws (per token and slot, so they do not depend on ``p``).
        prev: (k, n) the previous layer's ranks, kept where ``mapped``.
        mapped: (k, n) bool, the slots that keep ``prev``; None for none.
    """
    icdf = _InverseCDF(p)
    ranks = icdf(u)
    if mapped is not None:
        ranks = np.where(mapped, prev, ranks)
    k = ranks.shape[0]
    p_ext = np.append(p, 0.0)
    for i in range(k):
        clash = _clashes(ranks, mapped, i)
        if clash is None:
            continue
        rows = np.flatnonzero(clash)
        if rows.size:
            taken = ranks[:, rows].T.copy()
            taken[:, i] = p.size
            if mapped is None:
                taken[:, i + 1 :] = p.size
            else:
                taken[:, i + 1 :][~mapped[i + 1 :, rows].T] = p.size
            ranks[i, rows] = _restricted_draw(icdf, p_ext, _hash_uniforms(key, rows * k + i), taken)
    return ranks


def _clashes(ranks: np.ndarray, mapped: np.ndarray | None, i: int) -> np.ndarray | None:
    """Tokens whose freely drawn slot ``i`` repeats an earlier slot or any kept (mapped) slot."""
    clash = None
    for j in range(ranks.shape[0]):
        if j == i or (j > i and mapped is None):
            continue
        same = ranks[i] == ranks[j]
        if j > i:
            same &= mapped[j]
        clash = same if clash is None else np.logical_or(clash, same, out=clash)
    if clash is not None and mapped is not None:
        clash &= ~mapped[i]
    return clash


def _imbalance_of_ranks(ranks: np.ndarray, experts: int) -> float:
    load = np.bincount(ranks.reshape(-1), minlength=experts)
    mean = load.mean()
    return float((load.max() - mean) / mean)


# ----------------------------------------------------------------------------------------------
# closed-form first guesses


def _bisect(g: Callable[[float], float], target: float, lo: float, hi: float) -> float:
    """x in [lo, hi] with g(x) = target for an increasing g (60 halvings)."""
    for _ in range(60):
        mid = 0.5 * (lo + hi)
        lo, hi = (mid, hi) if g(mid) < target else (lo, mid)
    return 0.5 * (lo + hi)


def _exponent_guess(target: float, experts: int, top_k: int) -> float:
    """Zipf exponent whose top expert, drawn k times with replacement, gives ``target`` imbalance."""
    share = min((target + 1.0) * top_k / experts, 1.0 - 1e-9)
    return _bisect(lambda s: 1.0 - (1.0 - zipf_popularity(s, experts)[0]) ** top_k, share, 0.0, MAX_EXPONENT)


def _keep_guess(target: float, p: np.ndarray) -> float:
    """q for which one slot, kept with probability q else redrawn ∝ p, has uncertainty ``target``."""
    nz = p[p > 0]
    h = float(-(nz * np.log(nz)).sum())
    if h <= 0.0:
        return target
    plogp = np.where(p > 0, p * np.log(np.where(p > 0, p, 1.0)), 0.0)

    def u_model(q: float) -> float:
        if q >= 1.0:
            return 1.0
        a = q + (1.0 - q) * p
        rows = -a * np.log(a) - (1.0 - q) * ((1.0 - p) * math.log(1.0 - q) + plogp.sum() - plogp)
        return 1.0 - float((p * rows).sum()) / h

    return _bisect(u_model, target, 0.0, 1.0)


# ----------------------------------------------------------------------------------------------
# calibration search


def _solve(
    f: Callable[[float], float],
    target: float,
    tol: float,
    x0: float,
    lo: tuple[float, float | None],
    hi: tuple[float, float | None],
) -> float:
    """x with |f(x) − target| <= tol for an increasing f on [lo, hi]; else the best x tried.

    ``lo``/``hi`` are (x, f(x) if known without evaluating, else None). Evaluates ``x0``, steps
    out towards the bound on the side of the target until the target is bracketed, then runs
    regula falsi with the Illinois modification. Deterministic; at most 40 evaluations.
    """
    tried: dict[float, float] = {}

    def ev(x: float) -> float:
        if x not in tried:
            tried[x] = f(x)
        return tried[x] - target

    def best() -> float:
        return min(tried, key=lambda x: abs(tried[x] - target))

    g0 = ev(x0)
    if abs(g0) <= tol:
        return x0
    (a, ga), (b, gb) = _bracket(ev, g0, x0, lo, hi, target)
    if ga is None or gb is None or ga > 0 or gb < 0:
        return best()
    side = 0
    while len(tried) < _MAX_EVALS and b - a > 1e-12 * (1.0 + abs(b)):
        x = b - gb * (b - a) / (gb - ga) if gb != ga else 0.5 * (a + b)
        if not a < x < b:
            x = 0.5 * (a + b)
        gx = ev(x)
        if abs(gx) <= tol:
            return x
        if gx < 0:
            a, ga = x, gx
            gb = gb / 2 if side == -1 else gb
            side = -1
        else:
            b, gb = x, gx
            ga = ga / 2 if side == 1 else ga
            side = 1
    return best()


def _bracket(
    ev: Callable[[float], float],
    g0: float,
    x0: float,
    lo: tuple[float, float | None],
    hi: tuple[float, float | None],
    target: float,
) -> tuple[tuple[float, float | None], tuple[float, float | None]]:
    """Step out from x0 (×1.6 per step) until f − target changes sign or the bound is reached."""
    up = g0 < 0
    bound, known = hi if up else lo
    if known is not None:
        end = (bound, known - target)
        return ((x0, g0), end) if up else (end, (x0, g0))
    x, g = x0, g0
    for _ in range(_MAX_EVALS // 2):
        nxt = min(bound, x * 1.6 + 0.1) if up else (x / 1.6 - 0.05 if x / 1.6 - 0.05 > 0.02 else bound)
        gn = ev(nxt)
        if (gn >= 0) == up or nxt == bound:
            return ((x, g), (nxt, gn)) if up else ((nxt, gn), (x, g))
        x, g = nxt, gn
    return (x, None), (x, None)


# ----------------------------------------------------------------------------------------------
# the generator


class _Layer:
    """One layer's fixed random numbers for its first ``n`` virtual tokens, and its statistics."""

    def __init__(self, gen: _Generator, index: int, n: int, prev: np.ndarray | None) -> None:
        self.gen = gen
        self.index = index
        self.n = n
        self.u = _slot_uniforms(gen.seed, 1, index, n, gen.top_k)
        self.prev = prev
        self.key = _mix_int(_mix_int(gen.seed) ^ (index + 1))
        self._w: np.ndarray | None = None
        self._cache: dict[tuple[float, float], np.ndarray] = {}

    def keep_uniforms(self) -> np.ndarray:
        """(k, n) uniforms deciding which slots keep the previous layer's rank (u < q)."""
        if self._w is None:
            self._w = _slot_uniforms(self.gen.seed, 2, self.index, self.n, self.gen.top_k)
        return self._w

    def ranks(self, s: float, q: float) -> np.ndarray:
        """(k, n) ranks for exponent ``s`` and keep probability ``q`` (the last few are memoised)."""
        if (s, q) in self._cache:
            return self._cache[(s, q)]
        if self.prev is not None and q >= 1.0:
            ranks = self.prev.copy()
        else:
            mapped = self.keep_uniforms() < q if self.prev is not None and q > 0.0 else None
            ranks = _sample_ranks(zipf_popularity(s, self.gen.experts), self.u, self.key, self.prev, mapped)
        if len(self._cache) >= 4:
            del self._cache[next(iter(self._cache))]
        self._cache[(s, q)] = ranks
        return ranks

    def imbalance(self, s: float, q: float) -> float:
        return _imbalance_of_ranks(self.ranks(s, q), self.gen.experts)

    def affinity(self, s: float, q: float) -> float:
        """Realised U between the previous layer and this one, in expert ids."""
        x, y = self.prev, self.ranks(s, q)
        experts, frame = self.gen.experts, self.gen.frame
        if frame is None:  # one rank -> expert map per layer: U is the same in ranks
            return uncertainty_coefficient(x, y, experts)
        batches = frame.shape[0]
        if batches * experts * experts > _JOINT_LIMIT:  # drift: rename every pair, then count
            vb = self.gen.vbatch[None, : self.n]
            return uncertainty_coefficient(frame[vb, x], frame[vb, y], experts)
        # drift: rank -> expert depends on the batch; count (x, y) per batch, then rename
        codes = (self.gen.vbatch[: self.n].astype(np.int64) * experts)[None, :] + x
        codes = codes * experts + y
        joint = np.bincount(codes.ravel(), minlength=batches * experts * experts)
        joint = joint.reshape(batches, experts, experts)
        named = np.zeros((experts, experts), dtype=np.int64)
        for b in range(batches):
            named[np.ix_(frame[b], frame[b])] += joint[b]
        return uncertainty_from_joint(named)


class _Generator:
    """Holds one synth_trace call's parameters and the layout shared by its layers."""

    def __init__(
        self,
        *,
        experts: int,
        top_k: int,
        layers: int,
        tokens_per_gpu: int,
        gpus: int,
        imbalance: float | None,
        zipf: float | None,
        affinity: float,
        drift: float,
        batches: int,
        seed: int,
    ) -> None:
        self.experts, self.top_k, self.layers = experts, top_k, layers
        self.tokens_per_gpu, self.gpus, self.batches, self.seed = tokens_per_gpu, gpus, batches, seed
        self.imbalance, self.zipf, self.affinity, self.drift = imbalance, zipf, affinity, drift
        self.source_gpu, self.batch = _token_layout(self.tokens_per_gpu, self.gpus, self.batches)
        self.n = self.source_gpu.size
        master = _stream(self.seed, 0)
        self.maps = [master.permutation(self.experts) for _ in range(self.layers - 1)]
        self.sigma0 = master.permutation(self.experts)
        moving = self.drift > 0 and self.batches > 1
        self.drift_perms = (
            [master.permutation(self.experts) for _ in range(self.batches - 1)] if moving else []
        )
        self.order = master.permutation(self.n)
        self.inverse = np.empty_like(self.order)
        self.inverse[self.order] = np.arange(self.n)
        self.vbatch = self.batch[self.order]
        self.frame: np.ndarray | None = None  # (batches, E) rank -> expert of layer 0, with drift only
        self.exponents: list[float] = []
        self.keeps: list[float] = []

    # tolerances ------------------------------------------------------------------------------

    def imbalance_ok(self, value: float, aim: float = 1.0) -> bool:
        t = self.imbalance
        return t is None or t == 0 or abs(value - t) <= aim * IMBALANCE_RTOL * t

    def affinity_ok(self, value: float, aim: float = 1.0) -> bool:
        a = self.affinity
        return abs(value - a) <= aim * max(AFFINITY_ATOL, AFFINITY_RTOL * a)

    # fitting ---------------------------------------------------------------------------------

    def fit(self, layer: _Layer, s: float, q: float, imb: float | None, aff: float) -> tuple[float, float]:
        """Calibrate (s, q) on ``layer``'s tokens to the targets ``imb`` and ``aff``, alternating.

        The search tolerances are ``_AIM`` times the final ones (of the user's targets), so a
        subsample fit leaves room for the full trace to differ a little.
        """
        free_s = self.imbalance is not None and self.imbalance > 0
        free_q = layer.prev is not None and 0.0 < self.affinity < 1.0
        tol_q = _AIM * max(AFFINITY_ATOL, AFFINITY_RTOL * self.affinity)
        for _ in range(3):
            if free_q:
                q = _solve(lambda x, s=s: layer.affinity(s, x), aff, tol_q, q, (0.0, 0.0), (1.0, 1.0))
            if free_s and (layer.prev is None or q < 1.0):
                tol_s = _AIM * IMBALANCE_RTOL * self.imbalance
                bounds = (0.0, None), (MAX_EXPONENT, None)
                s = _solve(lambda x, q=q: layer.imbalance(x, q), imb, tol_s, s, *bounds)
            if not free_q or not free_s or abs(layer.affinity(s, q) - aff) <= tol_q:
                break
        return s, q

    def accept(self, layer: _Layer, s: float, q: float, aim: float = 1.0) -> bool:
        """Whether ``layer`` sampled with (s, q) is within ``aim`` times the final tolerances."""
        ok = self.imbalance_ok(layer.imbalance(s, q), aim)
        if layer.prev is None or self.affinity <= 0:
            return ok
        return ok and self.affinity_ok(layer.affinity(s, q), aim)

    def layer(self, index: int, prev: np.ndarray | None, s: float, q: float) -> _Fitted:
        """Calibrate layer ``index``; its full (k, N) ranks, s and q.

        Large traces are fitted on a subsample; when the full layer then misses half the
        tolerance, the subsample's targets are shifted by the full-minus-subsample difference and
        it is fitted again (twice at most). Failing that, the full layer is fitted directly.
        """
        full = _Layer(self, index, self.n, prev)
        imb, aff = self.imbalance, self.affinity
        n_cal = min(self.n, CALIBRATION_TOKENS)
        if n_cal < self.n:
            sub = _Layer(self, index, n_cal, None if prev is None else prev[:, :n_cal])
            for _ in range(3):
                s, q = self.fit(sub, s, q, imb, aff)
                if self.accept(full, s, q, 0.5):
                    return full.ranks(s, q), s, q
                if imb:
                    imb = max(imb + self.imbalance - full.imbalance(s, q), 1e-9)
                if prev is not None and 0.0 < aff < 1.0:
                    aff = min(max(aff + self.affinity - full.affinity(s, q), 1e-9), 1.0 - 1e-9)
            if self.accept(full, s, q):
                return full.ranks(s, q), s, q
        s, q = self.fit(full, s, q, self.imbalance, self.affinity)
        if self.accept(full, s, q):
            return full.ranks(s, q), s, q
        raise ValueError(self._miss(index, full, s, q))

    def _miss(self, index: int, layer: _Layer, s: float, q: float) -> str:
        if not self.imbalance_ok(layer.imbalance(s, q)):
            mean = self.n * self.top_k / self.experts
            return (
                f"imbalance={self.imbalance:g} not reached in layer {index}: the closest is "
                f"{layer.imbalance(s, q):.4g} (tolerance {IMBALANCE_RTOL:.0%}); with {mean:.0f} tokens per "
                "expert on average the target is below the sampling noise or too coarse: use more tokens, "
                "imbalance=0, or a larger target"
            )
        return (
            f"affinity={self.affinity:g} not reached between layers {index - 1} and {index}: the closest is "
            f"{layer.affinity(s, q):.4g} (tolerance {max(AFFINITY_ATOL, AFFINITY_RTOL * self.affinity):g}); "
            "independent layers already show some U (finite-sample bias in small traces, slot order at "
            "extreme skew): use more tokens or a larger target"
        )

    def run(self) -> np.ndarray:
        """(layers, N, k) expert ids in token order."""
        out = np.empty((self.layers, self.n, self.top_k), dtype=_rank_dtype(self.experts))
        s = self._first_exponent()
        q = self.affinity if self.affinity in (0.0, 1.0) else -1.0  # -1: guess when layer 1 comes
        table, prev = self.sigma0, None
        for index in range(self.layers):
            if prev is not None and q < 0:
                q = _keep_guess(self.affinity, zipf_popularity(s, self.experts))
            ranks, s, q = self.layer(index, prev, s, q)
            self.exponents.append(s)
            if prev is not None:
                self.keeps.append(q)
            if index == 0 and self.drift_perms:
                self.frame = _drift_frames(
                    zipf_popularity(s, self.experts), self.sigma0, self.drift_perms, self.drift
                )
            real = ranks[:, self.inverse]  # virtual token order -> token order
            if self.frame is None:
                out[index] = table[real].T
            else:
                out[index] = self.frame.ravel()[(self.batch * self.experts)[None, :] + real].T
                self.frame = self.maps[index][self.frame] if index < self.layers - 1 else self.frame
            table = self.maps[index][table] if index < self.layers - 1 else table
            prev = ranks
        return out

    def _first_exponent(self) -> float:
        if self.zipf is not None:
            return float(self.zipf)
        if not self.imbalance:
            return 0.0
        return _exponent_guess(self.imbalance, self.experts, self.top_k)


def _token_layout(tokens_per_gpu: int, gpus: int, batches: int) -> tuple[np.ndarray, np.ndarray]:
    """(source_gpu, batch) in token order, batch-major then GPU; batch sizes differ by <= 1 token per GPU."""
    per_batch = np.diff(np.arange(batches + 1) * tokens_per_gpu // batches)
    batch = np.repeat(np.arange(batches, dtype=np.int32), per_batch * gpus)
    source = np.repeat(np.tile(np.arange(gpus, dtype=np.int32), batches), np.repeat(per_batch, gpus))
    return source, batch


def _drift_frames(p: np.ndarray, sigma0: np.ndarray, perms: list[np.ndarray], drift: float) -> np.ndarray:
    """(batches, E): rank -> expert of every batch; batch b re-ranks batch b − 1 (module docstring)."""
    frames = [sigma0]
    for perm in perms:
        prev = frames[-1]
        rank_of = np.empty_like(prev)
        rank_of[prev] = np.arange(prev.size)
        v = p[rank_of]
        moved = (1.0 - drift) * v + drift * v[perm]
        frames.append(np.lexsort((rank_of, -moved)))
    return np.stack(frames)


def _check_args(
    experts: int,
    top_k: int,
    layers: int,
    tokens_per_gpu: int,
    gpus: int,
    imbalance: float | None,
    zipf: float | None,
    affinity: float,
    drift: float,
    batches: int,
    hidden: int,
    bytes_per_element: int,
    seed: int,
) -> None:
    whole = dict(
        experts=experts,
        top_k=top_k,
        layers=layers,
        tokens_per_gpu=tokens_per_gpu,
        gpus=gpus,
        batches=batches,
        hidden=hidden,
        bytes_per_element=bytes_per_element,
    )
    for name, value in whole.items():
        if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < 1:
            raise ValueError(f"{name} must be a whole number >= 1, got {value!r}")
    if isinstance(seed, bool) or not isinstance(seed, int | np.integer) or seed < 0:
        raise ValueError(f"seed must be a whole number >= 0, got {seed!r}")
    if top_k > experts:
        raise ValueError(f"top_k={top_k} > experts={experts}: a token picks top_k distinct experts")
    if batches > tokens_per_gpu:
        raise ValueError(f"batches={batches} > tokens_per_gpu={tokens_per_gpu}: every batch needs tokens")
    for name, value, high in (("affinity", affinity, 1.0), ("drift", drift, 1.0), ("zipf", zipf, math.inf)):
        if value is not None and not (isinstance(value, int | float | np.number) and 0.0 <= value <= high):
            raise ValueError(f"{name} must be a number in [0, {high:g}], got {value!r}")
    if imbalance is not None and zipf is not None:
        raise ValueError("give imbalance or zipf, not both")
    if imbalance is not None:
        most = experts / top_k - 1.0
        if not (isinstance(imbalance, int | float | np.number) and 0.0 <= imbalance <= most):
            raise ValueError(
                f"imbalance={imbalance!r} is unreachable: with top_k={top_k} distinct experts out of "
                f"{experts}, an expert receives at most every token once, so (max - mean)/mean <= "
                f"experts/top_k - 1 = {most:g}"
            )
    if affinity > 0 and experts < 2 and layers > 1:
        raise ValueError("affinity > 0 needs experts >= 2 (with one expert the next one tells nothing)")


def synth_trace(
    *,
    experts: int,
    top_k: int,
    layers: int,
    tokens_per_gpu: int,
    gpus: int,
    imbalance: float | None = None,
    zipf: float | None = None,
    affinity: float = 0.0,
    drift: float = 0.0,
    batches: int = 1,
    hidden: int = 4096,
    bytes_per_element: int = 2,
    seed: int = 0,
    model: str = "synthetic",
) -> RoutingTrace:
    """A synthetic routing trace (the model is described in the module docstring).

    Args:
        experts: experts per layer.
        top_k: distinct experts each token picks.
        layers: MoE layers.
        tokens_per_gpu: tokens starting on each GPU (over all batches).
        gpus: GPUs (expert-parallel ranks).
        imbalance: target (max − mean) / mean of per-expert load per layer, in
            [0, experts / top_k − 1]; each layer's realised value lands within 5 % (per batch
            with drift). Exclusive with ``zipf``.
        zipf: a fixed Zipf exponent for every layer instead. Neither: uniform popularity.
        affinity: target uncertainty coefficient U between consecutive layers, in [0, 1];
            realised within max(0.03, 0.05 · affinity).
        drift: in [0, 1], how far each batch's popularity ranking moves from the previous one.
        batches: number of batches (steps) the tokens are split into.
        hidden: hidden size, elements per token.
        bytes_per_element: bytes per element (2 for bf16).
        seed: the random seed (>= 0); same arguments and seed give identical arrays.
        model: the name stored in the trace.

    Raises:
        ValueError: a bad argument, or a target this trace cannot reach (the message says why).

    Example::

        >>> t = synth_trace(experts=16, top_k=2, layers=2, tokens_per_gpu=2048, gpus=4, imbalance=1.0)
        >>> from workloads.routing_trace import imbalance
        >>> bool(abs(imbalance(t) - 1.0).max() <= 0.05)
        True
    """
    _check_args(
        experts, top_k, layers, tokens_per_gpu, gpus, imbalance, zipf, affinity, drift, batches, hidden,
        bytes_per_element, seed,
    )  # fmt: skip
    gen = _Generator(
        experts=int(experts),
        top_k=int(top_k),
        layers=int(layers),
        tokens_per_gpu=int(tokens_per_gpu),
        gpus=int(gpus),
        imbalance=None if imbalance is None else float(imbalance),
        zipf=None if zipf is None else float(zipf),
        affinity=float(affinity),
        drift=float(drift),
        batches=int(batches),
        seed=int(seed),
    )
    ids = gen.run()
    notes = (
        f"synth_trace(imbalance={imbalance}, zipf={zipf}, affinity={affinity}, drift={drift}, "
        f"batches={batches}, seed={seed}); zipf exponent per layer {[round(s, 6) for s in gen.exponents]}; "
        f"keep probability per layer pair {[round(q, 6) for q in gen.keeps]}"
    )
    return RoutingTrace(
        experts=ids,
        source_gpu=gen.source_gpu,
        batch=gen.batch,
        num_experts=int(experts),
        top_k=int(top_k),
        layers=int(layers),
        gpus=int(gpus),
        hidden=int(hidden),
        bytes_per_element=int(bytes_per_element),
        model=model,
        source="moesim synthetic_trace",
        notes=notes,
    )
