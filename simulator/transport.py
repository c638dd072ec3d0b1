"""Transports: how a message becomes one or more flows, and which spine each flow takes.

Only messages that cross the spine tier have a choice; messages inside a host (NVLink) or under
one leaf always become one flow on their single path.

- ``ecmp``: one flow; its spine is a hash of (src, dst, message id, seed). Collisions happen and
  are the point: nothing balances them.
- ``spray``: ideal per-packet spraying; one flow spread evenly over every spine (routed on the
  leaf trunks, see :mod:`topologies.compiled`).
- ``split:K``: K equal subflows, each hashed on its own (application-level flow splitting).
- ``ethereal``: the deterministic minimal splitting of Addanki, Goyal and Marinos ("Challenging
  the Need for Packet Spraying in Large-Scale Distributed Training", later "Ethereal"). For each
  (source leaf, destination leaf) pair in a batch of messages that start together, with n equal
  flows over s spines, n = q·s + r and g = gcd(r, s): q whole flows per spine round-robin, and
  each of the r leftover flows cut into s/g equal pieces, r/g pieces per spine, so every uplink
  carries exactly what spraying puts on it (equal pieces, as the paper cuts them; that takes
  r·(s/g − 1) cuts, more than the s − g a wrap-around would need). Unequal sizes use
  McNaughton's wrap-around rule: fill spines in turn up to total/s bytes each, cutting a flow
  only where a spine fills up (at most s-1 cuts per leaf pair).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from topologies.compiled import SPRAY, CompiledFabric

KINDS = ("ecmp", "spray", "split", "ethereal")


@dataclass(frozen=True)
class Transport:
    """A transport by kind, with ``subflows`` for ``split`` (K >= 1)."""

    kind: str
    subflows: int = 1

    def __str__(self) -> str:
        return f"split:{self.subflows}" if self.kind == "split" else self.kind


def parse_transport(text: str) -> Transport:
    """Parse ``ecmp``, ``spray``, ``split:K`` or ``ethereal``; raise ValueError with a hint otherwise."""
    name = str(text).strip()
    if name in ("ecmp", "spray", "ethereal"):
        return Transport(name)
    if name.startswith("split:"):
        count = name.split(":", 1)[1]
        if count.isascii() and count.isdigit() and int(count) >= 1:
            return Transport("split", int(count))
        raise ValueError(f'"{name}" needs a whole number of subflows >= 1 (try split:4)')
    raise ValueError(f'"{name}" is not a transport (try ecmp, spray, split:4 or ethereal)')


_M1 = np.uint64(0xBF58476D1CE4E5B9)
_M2 = np.uint64(0x94D049BB133111EB)
_GOLD = np.uint64(0x9E3779B97F4A7C15)


def _mix(x: np.ndarray) -> np.ndarray:
    """splitmix64 finaliser on uint64 arrays (wrapping arithmetic)."""
    x = (x ^ (x >> np.uint64(30))) * _M1
    x = (x ^ (x >> np.uint64(27))) * _M2
    return x ^ (x >> np.uint64(31))


def ecmp_hash(src: np.ndarray, dst: np.ndarray, flow_id: np.ndarray, seed: int) -> np.ndarray:
    """A 64-bit hash of (src, dst, flow id, seed) per flow, as switches hash a flow's 5-tuple."""
    with np.errstate(over="ignore"):
        h = _mix(np.uint64(seed & 0xFFFFFFFFFFFFFFFF) + _GOLD)
        for part in (src, dst, flow_id):
            h = _mix(h ^ (np.asarray(part).astype(np.uint64) + _GOLD))
    return h


def ecmp_path(src: np.ndarray, dst: np.ndarray, flow_id: np.ndarray, seed: int, n_paths: int) -> np.ndarray:
    """The equal-cost path index (spine) ECMP picks for each flow: hash mod ``n_paths``."""
    return (ecmp_hash(src, dst, flow_id, seed) % np.uint64(max(n_paths, 1))).astype(np.int64)


@dataclass(frozen=True)
class Flows:
    """Flows of a batch of messages: per flow, the index of its message in the batch, its bytes and
    its spine choice (a spine index, or :data:`~topologies.compiled.SPRAY`)."""

    message: np.ndarray
    nbytes: np.ndarray
    choice: np.ndarray


def to_flows(
    fabric: CompiledFabric,
    transport: Transport,
    src: np.ndarray,
    dst: np.ndarray,
    nbytes: np.ndarray,
    message_id: np.ndarray,
    seed: int,
    via: np.ndarray | None = None,
    qps: np.ndarray | None = None,
) -> Flows:
    """Turn a batch of messages that start together into flows under ``transport``.

    Args:
        fabric: the compiled fabric (for leaves and spine count).
        src, dst: GPU ids per message. nbytes: bytes per message (> 0).
        message_id: a stable id per message (or per connection), hashed by ECMP and ``split``.
        seed: the experiment seed; it changes ECMP hashing and nothing else.
        via: per message, the GPU whose NIC it leaves through (PXN), -1 for its own; hashing and
            leaf pairs then use that GPU.
        qps: per message, the queue pairs of its connection: a message between two hosts becomes
            that many equal flows (hashed on ``message_id * qps + j``) before ``transport`` acts on
            each (``split:K`` cuts every one into K). None or 1 = one flow per message.
    """
    src = np.asarray(src, dtype=np.int64)
    dst = np.asarray(dst, dtype=np.int64)
    nbytes = np.asarray(nbytes, dtype=np.float64)
    message_id = np.asarray(message_id, dtype=np.int64)
    n = src.shape[0]
    if via is not None:
        via = np.asarray(via, dtype=np.int64)
        src = np.where(via >= 0, via, src)
    if qps is not None and n:
        qps = np.where(fabric.gpu_host[src] != fabric.gpu_host[dst], np.asarray(qps, dtype=np.int64), 1)
        if np.any(qps > 1):
            rep = np.repeat(np.arange(n, dtype=np.int64), qps)
            first = np.cumsum(qps) - qps
            j = np.arange(rep.shape[0], dtype=np.int64) - first[rep]
            key = message_id[rep] * qps[rep] + j
            part = to_flows(fabric, transport, src[rep], dst[rep], nbytes[rep] / qps[rep], key, seed)
            return Flows(rep[part.message], part.nbytes, part.choice)
    cross = fabric.crosses_spine(src, dst) if n else np.zeros(0, dtype=bool)
    spines = fabric.n_spines
    index = np.arange(n, dtype=np.int64)
    if transport.kind == "ecmp" or not cross.any():
        choice = np.where(cross, ecmp_path(src, dst, message_id, seed, spines), 0)
        return Flows(index, nbytes, choice)
    if transport.kind == "spray":
        return Flows(index, nbytes, np.where(cross, SPRAY, 0))
    if transport.kind == "split":
        k = transport.subflows
        local = index[~cross]
        remote = index[cross]
        sub = np.tile(np.arange(k, dtype=np.int64), remote.shape[0])
        rep = np.repeat(remote, k)
        key = message_id[rep] * k + sub
        choice = ecmp_path(src[rep], dst[rep], key, seed, spines)
        message = np.concatenate([local, rep])
        size = np.concatenate([nbytes[local], nbytes[rep] / k])
        return _sorted(Flows(message, size, np.concatenate([np.zeros(local.shape[0], np.int64), choice])))
    if transport.kind == "ethereal":
        return _ethereal(fabric, src, dst, nbytes, message_id, cross)
    raise ValueError(f"unknown transport {transport}")


def _sorted(flows: Flows) -> Flows:
    order = np.argsort(flows.message, kind="stable")
    return Flows(flows.message[order], flows.nbytes[order], flows.choice[order])


def ethereal_assignment(sizes: np.ndarray, n_paths: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Split flows of one (source leaf, destination leaf) pair over ``n_paths`` uplinks.

    Returns ``(flow, nbytes, path)`` per piece: which input flow it comes from, its bytes and its
    uplink. Every uplink ends with ``sizes.sum() / n_paths`` bytes (exactly for equal sizes).
    """
    sizes = np.asarray(sizes, dtype=np.float64)
    n, s = sizes.shape[0], n_paths
    if n == 0:
        return np.zeros(0, np.int64), np.zeros(0), np.zeros(0, np.int64)
    if np.all(sizes == sizes[0]):
        q, r = divmod(n, s)
        whole = np.arange(q * s, dtype=np.int64)
        flow = [whole]
        path = [whole % s]
        nbytes = [sizes[whole]]
        if r:
            g = math.gcd(r, s)
            pieces_per_flow = s // g
            piece = np.arange(r * pieces_per_flow, dtype=np.int64)
            flow.append(q * s + piece // pieces_per_flow)
            path.append(piece % s)
            nbytes.append(np.full(piece.shape[0], sizes[0] / pieces_per_flow))
        return np.concatenate(flow), np.concatenate(nbytes), np.concatenate(path)
    return _mcnaughton(sizes, s)


def _mcnaughton(sizes: np.ndarray, s: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    target = sizes.sum() / s
    order = np.argsort(-sizes, kind="stable")
    flow: list[int] = []
    nbytes: list[float] = []
    path: list[int] = []
    uplink, room = 0, target
    for f in order:
        left = float(sizes[f])
        while left > 0.0:
            last = uplink == s - 1
            take = left if (last or left <= room * (1.0 + 1e-12)) else room
            flow.append(int(f))
            nbytes.append(take)
            path.append(uplink)
            left -= take
            room -= take
            if room <= target * 1e-12 and not last:
                uplink, room = uplink + 1, target
            if left <= sizes[f] * 1e-12:
                left = 0.0
    return np.asarray(flow, np.int64), np.asarray(nbytes), np.asarray(path, np.int64)


def _ethereal(
    fabric: CompiledFabric,
    src: np.ndarray,
    dst: np.ndarray,
    nbytes: np.ndarray,
    message_id: np.ndarray,
    cross: np.ndarray,
) -> Flows:
    index = np.arange(src.shape[0], dtype=np.int64)
    messages = [index[~cross]]
    sizes = [nbytes[~cross]]
    choices = [np.zeros(messages[0].shape[0], np.int64)]
    remote = index[cross]
    leaves = fabric.gpu_leaf.max() + 1
    pair = fabric.gpu_leaf[src[remote]] * leaves + fabric.gpu_leaf[dst[remote]]
    order = np.lexsort((message_id[remote], pair))
    remote, pair = remote[order], pair[order]
    bounds = np.flatnonzero(np.diff(pair)) + 1
    for group in np.split(remote, bounds):
        flow, size, path = ethereal_assignment(nbytes[group], fabric.n_spines)
        messages.append(group[flow])
        sizes.append(size)
        choices.append(path)
    return _sorted(Flows(np.concatenate(messages), np.concatenate(sizes), np.concatenate(choices)))
