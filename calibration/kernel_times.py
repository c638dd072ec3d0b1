"""GPU kernel timings for calibration: a roofline fit to measured GEMMs, kernel times of a profile.

- :func:`fit_roofline` fits the ``efficiency`` (one per dtype) and the ``launch`` time of
  :class:`workloads.kernel_model.RooflineGEMM` to a measured kernel-timing table (as read by
  :func:`workloads.kernel_model.read_kernel_table`), by least squares on the relative error.
- :func:`kineto_kernel_durations` sums the GPU kernel times of a PyTorch profiler (Kineto) trace by
  kernel name and class.

Units: tables and results are in microseconds (``time_us``, ``*_us``); ``launch`` is in seconds, as
in :class:`~workloads.kernel_model.RooflineGEMM`.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from workloads.kernel_model import GPUS, RooflineGEMM
from workloads.kineto import load_kineto

DTYPE_BYTES = {"bf16": 2, "fp16": 2, "fp8": 1, "fp32": 4}
"""Bytes per element of a GEMM operand, by dtype, for the roofline's memory term."""


@dataclass(frozen=True)
class RooflineFit:
    """A roofline GEMM model fitted to measured kernel times.

    Attributes:
        gpu: the :data:`~workloads.kernel_model.GPUS` key the roofline was taken from.
        efficiency: fitted fraction of the roofline reached, per dtype (0 < efficiency <= 1).
        launch: fitted fixed time per kernel, seconds (>= 0).
        mape: mean absolute relative error of the fit over the table, percent.
        per_row: the table's rows (op, m, n, k, dtype) with ``measured_us``, ``predicted_us`` and
            ``rel_error`` ((predicted - measured) / measured).
    """

    gpu: str
    efficiency: dict[str, float]
    launch: float
    mape: float
    per_row: pd.DataFrame = field(compare=False, repr=False)

    def model(self, dtype: str) -> RooflineGEMM:
        """The fitted :class:`RooflineGEMM` for ``dtype``."""
        if dtype not in self.efficiency:
            raise ValueError(f'dtype "{dtype}" was not fitted (fitted: {", ".join(sorted(self.efficiency))})')
        return RooflineGEMM(GPUS[self.gpu], dtype, DTYPE_BYTES[dtype], self.efficiency[dtype], self.launch)


def _bounded_lstsq(a: np.ndarray, b: np.ndarray, lower: np.ndarray) -> np.ndarray:
    """argmin ||a x - b|| subject to x >= lower (few unknowns: every set of active bounds is tried)."""
    n = a.shape[1]
    best, best_cost = None, 0.0
    for size in range(n + 1):
        for fixed in itertools.combinations(range(n), size):
            x = lower.astype(np.float64).copy()
            free = [i for i in range(n) if i not in fixed]
            if free:
                rest = b - a[:, list(fixed)] @ lower[list(fixed)]
                x[free] = np.linalg.lstsq(a[:, free], rest, rcond=None)[0]
            if np.any(x < lower - 1e-12 * np.maximum(1.0, np.abs(lower))):
                continue
            cost = float(np.sum((a @ x - b) ** 2))
            if best is None or cost < best_cost * (1.0 - 1e-12):
                best, best_cost = np.maximum(x, lower), cost
    assert best is not None  # every bound active is always feasible
    return best


def fit_roofline(table: pd.DataFrame, gpu: str) -> RooflineFit:
    """Fit ``efficiency`` per dtype and ``launch`` of :class:`RooflineGEMM` to measured GEMMs.

    Each row is one GEMM ``[m, k] x [k, n]`` measured ``time_us`` microseconds. The model is
    ``launch + max(2 m n k / peak, (m k + k n + m n) * bytes / bandwidth) / efficiency`` with the peak
    FLOP/s of the dtype and the memory bandwidth of ``GPUS[gpu]`` and ``bytes`` from
    :data:`DTYPE_BYTES` (:meth:`RooflineGEMM.gemm_time`). It is linear in ``launch`` and
    ``1 / efficiency``, so the fit is exact linear least squares on the relative error
    ``(predicted - measured) / measured``, with ``launch >= 0`` and ``efficiency <= 1``.

    Args:
        table: columns m, n, k, dtype, time_us (as :func:`workloads.kernel_model.read_kernel_table`
            returns); other columns are carried into ``per_row``.
        gpu: a key of :data:`workloads.kernel_model.GPUS` (``h100``, ``a100``, ...).

    Raises:
        ValueError: unknown gpu, a dtype the GPU has no peak for, missing columns, non-positive
            sizes or times, or an empty table; the message is one line naming the valid choices.
    """
    if gpu not in GPUS:
        raise ValueError(f'unknown gpu "{gpu}" (valid: {", ".join(sorted(GPUS))})')
    missing = [c for c in ("m", "n", "k", "dtype", "time_us") if c not in table.columns]
    if missing:
        raise ValueError(
            f"the kernel table lacks columns {', '.join(missing)} (need m, n, k, dtype, time_us)"
        )
    if table.empty:
        raise ValueError("the kernel table has no rows")
    model = GPUS[gpu]
    valid = [d for d in model.flops if d in DTYPE_BYTES]
    dtypes = list(dict.fromkeys(str(d) for d in table["dtype"]))
    for dtype in dtypes:
        if dtype not in valid:
            raise ValueError(f'dtype "{dtype}" is not supported on {model.name} (valid: {", ".join(valid)})')
    m, n, k = (table[c].to_numpy(dtype=np.float64) for c in ("m", "n", "k"))
    measured = table["time_us"].to_numpy(dtype=np.float64) * 1e-6
    if not (np.all(m > 0) and np.all(n > 0) and np.all(k > 0) and np.all(measured > 0)):
        raise ValueError("m, n, k and time_us must be positive")
    if not np.all(np.isfinite(measured)):
        raise ValueError("time_us must be finite")

    roof = np.zeros_like(measured)  # seconds at efficiency 1, no launch
    column = np.zeros(len(table), dtype=np.int64)
    kinds = table["dtype"].astype(str).to_numpy()
    for j, dtype in enumerate(dtypes):
        rows = kinds == dtype
        ideal = RooflineGEMM(model, dtype, DTYPE_BYTES[dtype], efficiency=1.0, launch=0.0)
        roof[rows] = ideal.gemm_time(m[rows], n[rows], k[rows])
        column[rows] = j
    # unknowns: launch, then 1/efficiency per dtype; relative residual (launch + roof/eff) / t - 1
    a = np.zeros((len(table), 1 + len(dtypes)))
    a[:, 0] = 1.0 / measured
    a[np.arange(len(table)), 1 + column] = roof / measured
    x = _bounded_lstsq(a, np.ones(len(table)), np.array([0.0] + [1.0] * len(dtypes)))
    launch = float(x[0])
    efficiency = {dtype: float(1.0 / x[1 + j]) for j, dtype in enumerate(dtypes)}

    predicted = np.zeros_like(measured)
    for dtype in dtypes:
        rows = kinds == dtype
        fitted = RooflineGEMM(model, dtype, DTYPE_BYTES[dtype], efficiency[dtype], launch)
        predicted[rows] = fitted.gemm_time(m[rows], n[rows], k[rows])
    rel = (predicted - measured) / measured
    keep = [c for c in table.columns if c != "time_us"]
    per_row = (
        table[keep]
        .reset_index(drop=True)
        .assign(measured_us=measured * 1e6, predicted_us=predicted * 1e6, rel_error=rel)
    )
    return RooflineFit(gpu, efficiency, launch, float(np.mean(np.abs(rel)) * 100.0), per_row)


def kineto_kernel_durations(path: str | Path) -> pd.DataFrame:
    """GPU kernel durations of a Kineto trace, grouped by kernel name and class.

    Reads the trace with :func:`workloads.kineto.load_kineto`; every GPU kernel (memcpy and memset
    ops are not kernels) is classed by :func:`workloads.kineto.classify`: ``kind`` is its
    communication label (``deepep_dispatch``, ``nccl_all_reduce``, ...) or ``compute``.

    Returns:
        Columns name, kind, count, total_us, mean_us, median_us, min_us, max_us (microseconds), one
        row per (name, kind), sorted by total_us descending (then name).

    Raises:
        workloads.kineto.KinetoError: not a usable trace. OSError: unreadable file.
    """
    trace = load_kineto(path)
    records = [
        (k.name, k.comm or k.kind, k.duration * 1e6)
        for k in trace.kernels
        if k.kind in ("compute", "communication")
    ]
    columns = ["name", "kind", "count", "total_us", "mean_us", "median_us", "min_us", "max_us"]
    if not records:
        return pd.DataFrame(columns=columns)
    frame = pd.DataFrame.from_records(records, columns=["name", "kind", "us"])
    grouped = frame.groupby(["name", "kind"], sort=False)["us"]
    out = grouped.agg(
        count="count", total_us="sum", mean_us="mean", median_us="median", min_us="min", max_us="max"
    )
    out = out.reset_index().sort_values(["total_us", "name"], ascending=[False, True], kind="stable")
    return out.reset_index(drop=True)[columns].astype({"count": "int64"})
