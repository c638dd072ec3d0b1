"""Where each expert lives: a placement of logical experts on physical expert slots of GPUs.

A placement is, per MoE layer, a row of *physical slots* — ``slots_per_gpu`` slots on each GPU,
slot ``p`` on GPU ``p // slots_per_gpu`` — each holding one logical expert (``phy2log``, as in
DeepSeek's EPLB). An expert held by several slots is replicated; its tokens are split among its
replicas in proportion to ``weight`` (equal shares by default). Every expert must have at least
one slot, and every GPU has the same number of slots (the memory constraint).

>>> p = round_robin(experts=8, gpus=4, layers=2)
>>> p.phy2log[0].tolist(), p.gpu_of_slot.tolist()
([0, 1, 2, 3, 4, 5, 6, 7], [0, 0, 1, 1, 2, 2, 3, 3])
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np


class PlacementError(ValueError):
    """An invalid or infeasible placement; the message is one line naming what fails."""


@dataclass(frozen=True)
class Placement:
    """Experts on GPU slots for every layer.

    Attributes:
        phy2log: ``(layers, gpus * slots_per_gpu)`` logical expert id of every physical slot.
        gpus: number of GPUs (expert-parallel ranks).
        experts: number of logical experts per layer.
        weight: ``(layers, slots)`` share of its expert's tokens each slot takes (sums to 1 per
            expert); equal shares among replicas when not given.
        method: how it was made (``round_robin``, ``ilp``, a file name ...).
    """

    phy2log: np.ndarray
    gpus: int
    experts: int
    weight: np.ndarray = field(default=None)  # type: ignore[assignment]
    method: str = "custom"

    def __post_init__(self) -> None:
        phy2log = np.asarray(self.phy2log, dtype=np.int64)
        if phy2log.ndim != 2:
            raise PlacementError(f"phy2log: must be (layers, slots), got shape {phy2log.shape}")
        layers, slots = phy2log.shape
        if self.gpus < 1 or slots % self.gpus:
            raise PlacementError(f"phy2log: {slots} slots cannot be split equally over {self.gpus} GPUs")
        if phy2log.size and (phy2log.min() < 0 or phy2log.max() >= self.experts):
            raise PlacementError(
                f"phy2log: expert ids must be in [0, {self.experts}), got {phy2log.min()}..{phy2log.max()}"
            )
        for layer in range(layers):
            missing = np.setdiff1d(np.arange(self.experts), phy2log[layer])
            if missing.size:
                raise PlacementError(f"phy2log: layer {layer} places no slot for expert {int(missing[0])}")
        counts = np.stack([np.bincount(row, minlength=self.experts) for row in phy2log]) if layers else None
        if self.weight is None:
            weight = 1.0 / np.take_along_axis(counts, phy2log, axis=1) if layers else np.zeros((0, slots))
        else:
            weight = np.asarray(self.weight, dtype=np.float64)
            if weight.shape != phy2log.shape:
                raise PlacementError(f"weight: shape {weight.shape} must equal phy2log's {phy2log.shape}")
            if np.any(weight < 0):
                raise PlacementError("weight: shares must be non-negative")
            for layer in range(layers):
                total = np.bincount(phy2log[layer], weights=weight[layer], minlength=self.experts)
                if not np.allclose(total, 1.0, atol=1e-9):
                    bad = int(np.argmax(np.abs(total - 1.0)))
                    raise PlacementError(
                        f"weight: layer {layer} expert {bad} shares sum to {total[bad]:.6g}, not 1"
                    )
        object.__setattr__(self, "phy2log", phy2log)
        object.__setattr__(self, "weight", weight)

    @property
    def layers(self) -> int:
        return int(self.phy2log.shape[0])

    @property
    def slots_per_gpu(self) -> int:
        return int(self.phy2log.shape[1]) // self.gpus

    @property
    def gpu_of_slot(self) -> np.ndarray:
        """GPU of every physical slot."""
        return np.arange(self.phy2log.shape[1]) // self.slots_per_gpu

    def replicas(self, layer: int) -> np.ndarray:
        """Number of slots holding each expert in ``layer``."""
        return np.bincount(self.phy2log[layer], minlength=self.experts)

    def to_json(self) -> dict:
        """A JSON-able description (what :func:`load_placement` reads)."""
        return {
            "format": "moesim-placement",
            "version": 1,
            "method": self.method,
            "gpus": self.gpus,
            "experts": self.experts,
            "phy2log": self.phy2log.tolist(),
            "weight": self.weight.tolist(),
        }


def round_robin(experts: int, gpus: int, layers: int) -> Placement:
    """The standard expert-parallel layout: expert ``e`` on GPU ``e // (experts / gpus)``, every layer."""
    if experts % gpus:
        raise PlacementError(
            f"round_robin: {experts} experts cannot be split equally over {gpus} GPUs without replicas "
            f"(use a GPU count that divides {experts}, or a placement file with replicas)"
        )
    return Placement(np.tile(np.arange(experts), (layers, 1)), gpus, experts, method="round_robin")


def load_placement(path: str | Path, experts: int, layers: int, gpus: int) -> Placement:
    """Read a placement file: moesim JSON (:meth:`Placement.to_json`) or an ExFlow-style CSV.

    The CSV has a header ``Expert,Node`` and one row per (layer, expert): ``Expert = layer *
    experts + e`` and ``Node`` the GPU. It has one slot per expert, so every GPU must end up
    with the same number of experts in every layer.
    """
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as err:
        raise PlacementError(f"{path}: cannot read the placement file ({err.strerror})") from None
    if path.suffix.lower() == ".csv":
        placement = _from_exflow_csv(text, path, experts, gpus)
    else:
        try:
            data = json.loads(text)
        except json.JSONDecodeError as err:
            raise PlacementError(f"{path}: not JSON (line {err.lineno}: {err.msg})") from None
        if not isinstance(data, dict) or "phy2log" not in data:
            raise PlacementError(f"{path}: a placement JSON needs a phy2log list per layer")
        placement = Placement(
            np.asarray(data["phy2log"]),
            int(data.get("gpus", gpus)),
            int(data.get("experts", experts)),
            np.asarray(data["weight"]) if data.get("weight") is not None else None,
            method=str(data.get("method", path.stem)),
        )
    _check_shape(placement, path, experts, layers, gpus)
    return placement


def _from_exflow_csv(text: str, path: Path, experts: int, gpus: int) -> Placement:
    rows = [line.strip() for line in text.splitlines() if line.strip()]
    if not rows or rows[0].replace(" ", "").lower() != "expert,node":
        raise PlacementError(f"{path}: line 1 must be the header Expert,Node")
    pairs = []
    for number, line in enumerate(rows[1:], start=2):
        parts = line.split(",")
        if len(parts) != 2 or not all(p.strip().isdigit() for p in parts):
            raise PlacementError(
                f"{path}: line {number}: expected two whole numbers Expert,Node, got {line!r}"
            )
        pairs.append((int(parts[0]), int(parts[1])))
    ids = np.array(pairs, dtype=np.int64)
    layers = int(ids[:, 0].max()) // experts + 1
    node = np.full((layers, experts), -1, dtype=np.int64)
    node[ids[:, 0] // experts, ids[:, 0] % experts] = ids[:, 1]
    if np.any(node < 0):
        layer, expert = map(int, np.argwhere(node < 0)[0])
        raise PlacementError(f"{path}: no row for layer {layer} expert {expert}")
    if node.max() + 1 != gpus:
        raise PlacementError(f"{path}: placement is for {int(node.max()) + 1} GPUs but the trace has {gpus}")
    per_gpu = np.stack([np.bincount(row, minlength=gpus) for row in node])
    if np.any(per_gpu != per_gpu[0, 0]):
        layer = int(np.argwhere(per_gpu != per_gpu[0, 0])[0, 0])
        raise PlacementError(
            f"{path}: layer {layer} puts {per_gpu[layer].min()}..{per_gpu[layer].max()} experts on a GPU "
            "(every GPU must hold the same number)"
        )
    phy2log = np.argsort(node, axis=1, kind="stable")  # slots ordered by GPU, experts in id order
    return Placement(phy2log, gpus, experts, method=path.stem)


def _check_shape(placement: Placement, path: Path, experts: int, layers: int, gpus: int) -> None:
    if placement.gpus != gpus:
        raise PlacementError(f"{path}: placement is for {placement.gpus} GPUs but the fabric has {gpus}")
    if placement.experts != experts:
        raise PlacementError(
            f"{path}: placement is for {placement.experts} experts but the trace has {experts}"
        )
    if placement.layers < layers:
        raise PlacementError(f"{path}: placement covers {placement.layers} layers but the trace has {layers}")
