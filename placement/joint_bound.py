"""An eigenvalue bound on the co-located affinity mass of *all* layer pairs at once.

:func:`placement.ilp.colocated_bound` bounds each layer pair on its own: the best pair of
partitions for pair ``(l, l+1)`` and the best for ``(l+1, l+2)`` may put layer ``l+1``'s experts
in different groups. The real placement has one partition per layer, and when most tokens keep
their expert chain (``e`` at layer ``l`` → ``m_l(e)`` at ``l+1``) every layer's partition is
nearly the image of the previous one: the co-location of the remaining, noisy transitions has to
be won by *one* partition of the chains for all pairs together, not by a fresh one per pair.
Summing per-pair bounds credits that noise once per pair. :func:`joint_colocated_bound` bounds
``Σ_l C_l`` over all layers' partitions jointly.

The bound. Stack every layer's group indicators into ``Z`` (``L·n × groups``, ``n`` experts per
layer, ``size`` per group, ``n = size · groups``) and put ``N_l / 2`` and its transpose on the
off-diagonal blocks ``(l, l+1)`` of a symmetric ``W``: ``Σ_l C_l(N) = tr(Zᵀ W Z)``. Every row
of ``Z`` has one 1, so for any vector ``y``, ``tr(Zᵀ Diag(y) Z) = Σ y``. Write ``Z = (size/n)·1
1ᵀ + Z̃``: the cross terms vanish (the groups' indicators sum to ``1``), ``Z̃`` is orthogonal to
every layer's all-ones vector and ``Z̃ Z̃ᵀ = L · size · Π`` with ``Π`` a rank ``groups − 1``
projection. Ky Fan's inequality then gives, with ``M = W − Diag(y)`` and ``P`` the projection
orthogonal to the ``L`` per-layer all-ones vectors,

    Σ_l C_l(N) <= (1 − size/n)·Σ y + (size/n)·Σ N + L · size · Σ_{i<groups} λ_i(P M P |range P).

Transitions split as ``R = S + N`` with ``S`` on each row's heaviest entry (the chain link)
credited in full (``C(S) <= Σ max(S, 0)``). The bound is convex in ``(y, S)``; it is minimised
by L-BFGS with a backtracking line search, the top eigenpairs from a warm-started block Krylov
subspace (Ritz values, a few ``L n × b`` products per step instead of a full eigensolver). The
value returned is recomputed with exact eigenvalues (``numpy.linalg.eigvalsh``) at the best
points, so it is a valid bound whatever the optimiser did. With one layer pair it is the
per-pair spectral bound with a diagonal shift (Donath–Hoffman's bound for graph partitioning,
here bipartite and balanced).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable

import numpy as np

HISTORY = 10  # L-BFGS memory
KRYLOV_STEPS = 4  # block Krylov depth per evaluation
_MARGIN = 1e-9  # relative margin added to the returned bound for rounding


class _Operator:
    """``(y, s) -> (value, gradient)`` of the bound, with a warm-started eigen subspace."""

    def __init__(self, r: np.ndarray, size: int, groups: int, seed: int) -> None:
        self.r = r
        self.layers = r.shape[0] + 1
        self.n = r.shape[1]
        self.size = size
        self.keep = groups - 1
        self.dim = self.layers * self.n
        self.rows = np.arange(self.n)
        self.link = np.argmax(r, axis=2)  # (pairs, n): each row's heaviest column, the S support
        block = self.keep + max(4, self.keep // 2)
        rng = np.random.default_rng(seed)
        self.basis = self._project(rng.standard_normal((self.dim, block)))

    def _project(self, v: np.ndarray) -> np.ndarray:
        """``P v``: remove every layer block's mean."""
        shaped = v.reshape(self.layers, self.n, -1)
        return (shaped - shaped.mean(axis=1, keepdims=True)).reshape(self.dim, -1)

    def split(self, s: np.ndarray) -> np.ndarray:
        """``N = R − S`` for the ``S`` values ``s`` (``(pairs, n)``) on the links."""
        noise = self.r.copy()
        for layer in range(self.layers - 1):
            noise[layer, self.rows, self.link[layer]] -= s[layer]
        return noise

    def product(self, y: np.ndarray, noise: np.ndarray, v: np.ndarray) -> np.ndarray:
        """``M v`` block by block, ``M = W − Diag(y)`` (block tridiagonal: built dense only by ``exact``)."""
        n = self.n
        out = -y[:, None] * v
        for layer in range(self.layers - 1):
            top, bottom = slice(layer * n, (layer + 1) * n), slice((layer + 1) * n, (layer + 2) * n)
            out[top] += noise[layer] @ v[bottom] / 2.0
            out[bottom] += noise[layer].T @ v[top] / 2.0
        return out

    def constant(self, y: np.ndarray, s: np.ndarray, noise: np.ndarray) -> float:
        share = self.size / self.n
        return float(np.maximum(s, 0.0).sum() + (1 - share) * y.sum() + share * noise.sum())

    def top_pairs(self, m: Callable[[np.ndarray], np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
        """Ritz approximations of ``P M P``'s top ``keep`` eigenpairs, refined until they settle.

        One block Krylov pass from the last call's Ritz vectors is usually enough; passes repeat
        (30 at most) while the sum of the top values still moves by more than ``1e-9`` relative.
        """
        last = -math.inf
        for _ in range(30):
            values, vectors = self._krylov(m)
            total = float(values.sum())
            if abs(total - last) <= 1e-9 * max(1.0, abs(total)):
                break
            last = total
        return values, vectors

    def _krylov(self, m: Callable[[np.ndarray], np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
        """One block Krylov pass with Rayleigh–Ritz from the current subspace."""
        blocks = [self.basis]
        for _ in range(KRYLOV_STEPS - 1):
            blocks.append(self._project(m(blocks[-1])))
        q = np.linalg.qr(np.hstack(blocks))[0]
        q = self._project(q)
        q = np.linalg.qr(q)[0]
        h = q.T @ m(q)
        values, vectors = np.linalg.eigh((h + h.T) / 2.0)
        ritz = q @ vectors[:, ::-1]
        self.basis = ritz[:, : self.basis.shape[1]]
        return values[::-1][: self.keep], ritz[:, : self.keep]

    def __call__(self, x: np.ndarray) -> tuple[float, np.ndarray]:
        y, s = x[: self.dim], x[self.dim :].reshape(self.layers - 1, self.n)
        noise = self.split(s)
        values, vectors = self.top_pairs(lambda v: self.product(y, noise, v))
        weight = self.layers * self.size
        value = self.constant(y, s, noise) + weight * float(values.sum())
        share = self.size / self.n
        grad_y = (1 - share) - weight * (vectors**2).sum(axis=1)
        grad_s = np.empty_like(s)
        n = self.n
        for layer in range(self.layers - 1):
            left = vectors[layer * n : (layer + 1) * n]
            right = vectors[(layer + 1) * n : (layer + 2) * n][self.link[layer]]
            grad_noise = share + weight * (left * right).sum(axis=1)
            grad_s[layer] = (s[layer] > 0) - grad_noise
        return value, np.concatenate([grad_y, grad_s.ravel()])

    def exact(self, x: np.ndarray) -> float:
        """The bound at ``x`` with exact eigenvalues (valid for any ``x``)."""
        y, s = x[: self.dim], x[self.dim :].reshape(self.layers - 1, self.n)
        noise = self.split(s)
        pmp = self._project(self._project(self.product(y, noise, np.eye(self.dim))).T)  # P M P
        ones = np.zeros((self.dim, self.layers))
        for layer in range(self.layers):
            ones[layer * self.n : (layer + 1) * self.n, layer] = 1.0 / math.sqrt(self.n)
        shift = 2.0 * float(np.abs(pmp).sum(axis=1).max()) + 1.0  # the all-ones directions go below
        pmp -= shift * (ones @ ones.T)
        values = np.linalg.eigvalsh((pmp + pmp.T) / 2.0)[::-1][: self.keep]
        return self.constant(y, s, noise) + self.layers * self.size * float(values.sum())


def _lbfgs(fun: _Operator, x: np.ndarray, evaluations: int, deadline: float | None) -> list[np.ndarray]:
    """Minimise ``fun`` from ``x`` within ``evaluations`` calls (and ``deadline``); the best points first."""
    value, grad = fun(x)
    kept = [(value, x.copy())]
    history: list[tuple[np.ndarray, np.ndarray, float]] = []
    used = 1
    scale = float(np.abs(fun.r).mean()) or 1.0

    def more() -> bool:
        return used < evaluations and (deadline is None or time.perf_counter() < deadline)

    while more():
        direction = -grad
        alphas = []
        for s_vec, y_vec, rho in reversed(history):
            alpha = rho * float(s_vec @ direction)
            direction = direction - alpha * y_vec
            alphas.append(alpha)
        if history:
            s_vec, y_vec, _ = history[-1]
            direction = direction * float(s_vec @ y_vec) / float(y_vec @ y_vec)
        else:
            direction = direction * scale / max(float(np.abs(direction).max()), 1e-300)
        for (s_vec, y_vec, rho), alpha in zip(history, reversed(alphas), strict=True):
            beta = rho * float(y_vec @ direction)
            direction = direction + (alpha - beta) * s_vec
        slope = float(grad @ direction)
        if slope >= 0:  # not a descent direction: restart from the gradient
            history.clear()
            direction = -grad * scale / max(float(np.abs(grad).max()), 1e-300)
            slope = float(grad @ direction)
        step = 1.0
        accepted = False
        while more():
            trial = x + step * direction
            trial_value, trial_grad = fun(trial)
            used += 1
            if trial_value <= value + 1e-4 * step * slope:
                accepted = True
                break
            step *= 0.5
            if step < 1e-8:
                break
        if not accepted:
            if not history:
                break
            history.clear()
            continue
        s_vec, y_vec = trial - x, trial_grad - grad
        curvature = float(s_vec @ y_vec)
        if curvature > 1e-12 * float(s_vec @ s_vec):
            history.append((s_vec, y_vec, 1.0 / curvature))
            del history[:-HISTORY]
        x, value, grad = trial, trial_value, trial_grad
        kept.append((value, x.copy()))
        kept = sorted(kept, key=lambda item: item[0])[:2]
    return [point for _, point in sorted(kept, key=lambda item: item[0])]


def joint_colocated_bound(
    transitions: np.ndarray,
    size: int,
    groups: int,
    evaluations: int = 300,
    seed: int = 1,
    deadline: float | None = None,
) -> float:
    """Upper bound on ``Σ_l C_l``, the co-located mass of every layer pair under one partition per layer.

    Args:
        transitions: ``(layers − 1, n, n)`` tokens from expert ``e`` of layer ``l`` to ``e'`` of
            layer ``l + 1``.
        size: experts per group (a GPU's or a host's share of a layer), ``n = size · groups``.
        groups: groups per layer (GPUs or hosts); 1 gives the total mass.
        evaluations: bound evaluations the optimiser may spend (each a few ``L n × b`` products).
        seed: seed of the eigen subspace's first vectors.
        deadline: a ``time.perf_counter()`` time after which the optimiser stops early (the
            bound stays valid, only weaker; without it the result is deterministic).

    Returns:
        The bound on the co-located tokens summed over layer pairs; never above the total mass.
    """
    r = np.asarray(transitions, dtype=np.float64)
    if r.ndim != 3 or r.shape[1] != r.shape[2] or r.shape[1] != size * groups:
        raise ValueError(f"joint_colocated_bound: transitions have shape {r.shape}, expected (pairs, n, n)")
    mass = float(r.sum())
    if groups <= 1 or r.shape[0] == 0:
        return mass
    fun = _Operator(r, size, groups, seed)
    s0 = np.zeros((r.shape[0], fun.n))
    x0 = np.zeros(fun.dim + s0.size)  # S = 0: the optimiser moves the links into S where it pays
    points = _lbfgs(fun, x0, max(1, evaluations), deadline)
    best = min(fun.exact(point) for point in points)
    return min(mass, best * (1 + _MARGIN) + 1e-12)
