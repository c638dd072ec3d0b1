"""Max-min fair rates of flows on capacitated links, by progressive filling.

A flow is a row of ``paths`` (link ids, padded with -1); every link's capacity is in bytes/s.
Max-min fairness: no flow's rate can grow without shrinking a flow whose rate is no larger.
Equivalently, every flow crosses a *saturated* link on which no other flow has a larger rate.

:func:`max_min_rates` is the numba kernel used on the hot path. It works bottleneck by bottleneck:
the link with the smallest fair share ``remaining capacity / unfrozen flows`` fixes the rate of
all its unfrozen flows at that share; those flows' rates are subtracted from every link they
cross; repeat. Links whose share ties the minimum (within 1e-12 relative) are settled in the same
round. Cost: O(F·H) to index flows by link, plus O(L) per round.

:func:`max_min_rates_reference` is the textbook water-filling in plain numpy (all unfrozen rates
rise together until a link saturates) on a dense incidence matrix; it exists to check the kernel.
"""

from __future__ import annotations

import numba
import numpy as np

TIE = 1e-12
"""Relative tolerance within which two links' fair shares are settled in one round."""


@numba.njit(cache=True)
def _fill(paths: np.ndarray, flows: np.ndarray, residual: np.ndarray, rate: np.ndarray) -> None:
    """Progressive filling of ``flows`` (row indices of ``paths``) on ``residual`` link capacity.

    Writes each flow's rate into ``rate``; ``residual`` is consumed (left with the spare capacity).
    """
    hops = paths.shape[1]
    n_links = residual.shape[0]
    count = np.zeros(n_links, np.int64)
    for i in range(flows.shape[0]):
        f = flows[i]
        for h in range(hops):
            link = paths[f, h]
            if link < 0:
                break
            count[link] += 1
    start = np.zeros(n_links + 1, np.int64)
    for link in range(n_links):
        start[link + 1] = start[link] + count[link]
    fill = start[:-1].copy()
    members = np.empty(start[n_links], np.int64)
    for i in range(flows.shape[0]):
        f = flows[i]
        for h in range(hops):
            link = paths[f, h]
            if link < 0:
                break
            members[fill[link]] = f
            fill[link] += 1
    frozen = np.zeros(paths.shape[0], np.bool_)
    active = np.empty(n_links, np.int64)
    bottlenecks = np.empty(n_links, np.int64)
    n_active = 0
    for link in range(n_links):
        if count[link] > 0:
            active[n_active] = link
            n_active += 1
    while n_active > 0:
        share = np.inf
        for i in range(n_active):
            link = active[i]
            s = residual[link] / count[link]
            if s < share:
                share = s
        if share < 0.0:
            share = 0.0
        threshold = share * (1.0 + TIE)
        n_bottlenecks = 0
        for i in range(n_active):
            link = active[i]
            if residual[link] <= threshold * count[link]:
                bottlenecks[n_bottlenecks] = link
                n_bottlenecks += 1
        for j in range(n_bottlenecks):
            link = bottlenecks[j]
            for k in range(start[link], start[link + 1]):
                f = members[k]
                if frozen[f]:
                    continue
                frozen[f] = True
                rate[f] = share
                for h in range(hops):
                    other = paths[f, h]
                    if other < 0:
                        break
                    residual[other] -= share
                    count[other] -= 1
        kept = 0
        for i in range(n_active):
            link = active[i]
            if count[link] > 0:
                active[kept] = link
                kept += 1
        n_active = kept


@numba.njit(cache=True)
def _max_min_kernel(paths: np.ndarray, capacity: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    n_flows, hops = paths.shape
    rate = np.zeros(n_flows)
    _fill(paths, np.arange(n_flows), capacity.copy(), rate)
    load = np.zeros(capacity.shape[0])
    count = np.zeros(capacity.shape[0], np.int64)
    for f in range(n_flows):
        for h in range(hops):
            link = paths[f, h]
            if link < 0:
                break
            load[link] += rate[f]
            count[link] += 1
    return rate, load, count


@numba.njit(cache=True)
def resolve_above(
    paths: np.ndarray,
    alive: np.ndarray,
    rate: np.ndarray,
    load: np.ndarray,
    capacity: np.ndarray,
    level: float,
    left: np.ndarray,
    anchor: np.ndarray,
    finish: np.ndarray,
    now: float,
) -> int:
    """Re-solve max-min rates in place after flows left, touching only flows at or above ``level``.

    Progressive filling below water level ``level`` does not depend on flows whose rate was at
    least ``level``: if the flows that finished all had rates >= ``level``, every flow below it
    keeps its rate. So only alive flows with ``rate >= level`` (within 1e-9, to keep ties together)
    are re-filled, on the capacity the others leave. ``level <= 0`` re-solves everything (needed
    after flows are added) and recomputes ``load`` exactly.

    Arrays (one row per flow slot; dead slots have ``alive`` False): ``rate`` bytes/s,
    ``left`` bytes left at time ``anchor`` (s), ``finish`` projected finish time (s, inf if dead);
    per link ``load`` (sum of alive rates, bytes/s) and ``capacity``. Re-solved flows are
    re-anchored at ``now`` with their old rate before their new rate is set.
    Returns the number of flows re-solved.
    """
    n = paths.shape[0]
    hops = paths.shape[1]
    full = level <= 0.0
    cut = level * (1.0 - 1e-9)
    m = 0
    for f in range(n):
        if alive[f] and (full or rate[f] >= cut):
            m += 1
    if m == 0 and not full:  # nothing at or above the level: every rate stands (same load, no fill)
        load[:] = capacity - (capacity - load)
        return 0
    chosen = np.empty(m, np.int64)
    m = 0
    for f in range(n):
        if alive[f] and (full or rate[f] >= cut):
            chosen[m] = f
            m += 1
    flows = chosen
    if full:
        residual = capacity.copy()
    else:
        residual = capacity - load
        for i in range(m):
            f = flows[i]
            for h in range(hops):
                link = paths[f, h]
                if link < 0:
                    break
                residual[link] += rate[f]
    for i in range(m):
        f = flows[i]
        left[f] -= rate[f] * (now - anchor[f])
        anchor[f] = now
    _fill(paths, flows, residual, rate)
    if full:
        load[:] = 0.0
        for f in range(n):
            if alive[f]:
                for h in range(hops):
                    link = paths[f, h]
                    if link < 0:
                        break
                    load[link] += rate[f]
    else:
        load[:] = capacity - residual
    for i in range(m):
        f = flows[i]
        finish[f] = now + max(left[f], 0.0) / rate[f] if rate[f] > 0.0 else np.inf
    return m


@numba.njit(cache=True)
def remove_flows(
    paths: np.ndarray,
    alive: np.ndarray,
    rate: np.ndarray,
    load: np.ndarray,
    count: np.ndarray,
    finish: np.ndarray,
    flows: np.ndarray,
) -> float:
    """Take ``flows`` out: subtract their rates from ``load`` and one from ``count`` on their links.
    Returns the smallest rate among them (the level from which :func:`resolve_above` must re-solve)."""
    hops = paths.shape[1]
    level = np.inf
    for i in range(flows.shape[0]):
        f = flows[i]
        alive[f] = False
        finish[f] = np.inf
        if rate[f] < level:
            level = rate[f]
        for h in range(hops):
            link = paths[f, h]
            if link < 0:
                break
            load[link] -= rate[f]
            count[link] -= 1
        rate[f] = 0.0
    return level


def max_min_rates(paths: np.ndarray, capacity: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Max-min fair rates of the flows in ``paths`` over links of ``capacity`` (bytes/s).

    Args:
        paths: ``(F, H)`` integer array of link ids per flow, padded at the end with -1.
            Every flow must cross at least one link.
        capacity: ``(L,)`` float array, bytes per second.

    Returns:
        ``(rate, load, count)``: per-flow rate (bytes/s); per-link total rate (bytes/s);
        per-link number of flows.
    """
    paths = np.ascontiguousarray(paths, dtype=np.int32)
    capacity = np.ascontiguousarray(capacity, dtype=np.float64)
    if paths.ndim != 2:
        raise ValueError("paths must be a 2-D array (flows x hops)")
    return _max_min_kernel(paths, capacity)


def max_min_rates_reference(
    paths: np.ndarray, capacity: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Plain-numpy water-filling: the reference :func:`max_min_rates` is tested against.

    All unfrozen flows' rates rise by the same amount until some link is full; flows on full
    links freeze; repeat. Dense ``(F, L)`` incidence, so only for small inputs.
    """
    paths = np.asarray(paths, dtype=np.int64)
    capacity = np.asarray(capacity, dtype=np.float64)
    n_flows, n_links = paths.shape[0], capacity.shape[0]
    incidence = np.zeros((n_flows, n_links), dtype=bool)
    rows, cols = np.nonzero(paths >= 0)
    incidence[rows, paths[rows, cols]] = True
    count = incidence.sum(axis=0)
    rate = np.zeros(n_flows)
    frozen = np.zeros(n_flows, dtype=bool)
    while not frozen.all():
        load = rate @ incidence
        unfrozen_on = (~frozen).astype(np.float64) @ incidence
        used = unfrozen_on > 0
        headroom = np.where(used, (capacity - load) / np.where(used, unfrozen_on, 1.0), np.inf)
        step = max(float(headroom.min()), 0.0)
        rate[~frozen] += step
        load = rate @ incidence
        full = used & (load >= capacity * (1.0 - 1e-12))
        newly = incidence[:, full].any(axis=1) & ~frozen
        if not newly.any():  # numerical corner: freeze the flows of the tightest link
            newly = incidence[:, int(np.argmin(headroom))] & ~frozen
        frozen |= newly
    return rate, rate @ incidence, count
