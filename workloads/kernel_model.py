"""How long a GPU takes to run its experts: a roofline model of the expert feed-forward GEMMs.

An expert is a gated MLP (SwiGLU, as in Mixtral, Qwen-MoE, DeepSeek-MoE): for ``t`` tokens of
width ``hidden`` and an expert width ``ffn``, three GEMMs (gate and up ``[t, hidden] x [hidden,
ffn]``, down ``[t, ffn] x [ffn, hidden]``) do ``6 * t * hidden * ffn`` FLOPs and move at least
the weights ``3 * hidden * ffn`` plus the activations ``t * (2 * hidden + 3 * ffn)`` elements.
The roofline time is ``max(flops / peak, bytes / bandwidth) / efficiency``; a grouped GEMM over a
GPU's experts costs the sum over its experts plus one launch overhead. An expert with no token
costs nothing.

Peak numbers are the vendors' dense (no sparsity) datasheet figures per GPU; ``efficiency`` is
the fraction of the roofline a real kernel reaches (calibrate it against kernel timings).
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd


@dataclass(frozen=True)
class GPUModel:
    """Peak compute (FLOP/s by dtype) and memory bandwidth (bytes/s) of one GPU kind."""

    name: str
    flops: dict[str, float]
    memory_bandwidth: float


GPUS = {
    # NVIDIA datasheets, dense tensor-core throughput, SXM parts.
    "h100": GPUModel("H100 SXM", {"bf16": 989e12, "fp16": 989e12, "fp8": 1979e12}, 3.35e12),
    "h800": GPUModel("H800 SXM", {"bf16": 989e12, "fp16": 989e12, "fp8": 1979e12}, 3.35e12),
    "h200": GPUModel("H200 SXM", {"bf16": 989e12, "fp16": 989e12, "fp8": 1979e12}, 4.8e12),
    "a100": GPUModel("A100 SXM 80GB", {"bf16": 312e12, "fp16": 312e12}, 2.039e12),
    "b200": GPUModel("B200", {"bf16": 2250e12, "fp16": 2250e12, "fp8": 4500e12}, 8.0e12),
}


@dataclass(frozen=True)
class RooflineGEMM:
    """Expert compute time from the roofline.

    Attributes:
        gpu: the GPU kind.
        dtype: the GEMM input type (``bf16``, ``fp16``, ``fp8``).
        bytes_per_element: bytes of one weight/activation element for the memory term.
        efficiency: fraction of the roofline reached (0 < efficiency <= 1).
        launch: fixed cost of one grouped-GEMM launch, seconds.
    """

    gpu: GPUModel
    dtype: str = "bf16"
    bytes_per_element: int = 2
    efficiency: float = 0.7
    launch: float = 5e-6

    def __post_init__(self) -> None:
        if self.dtype not in self.gpu.flops:
            raise ValueError(f'dtype "{self.dtype}" is not supported on {self.gpu.name} (try bf16)')
        if not 0 < self.efficiency <= 1:
            raise ValueError(f"efficiency must be in (0, 1], got {self.efficiency}")

    def expert_time(self, tokens: np.ndarray, hidden: int, ffn: int) -> np.ndarray:
        """Seconds for one expert to process ``tokens`` tokens (array in, array out; 0 tokens = 0 s)."""
        t = np.asarray(tokens, dtype=np.float64)
        flops = 6.0 * t * hidden * ffn
        moved = (3.0 * hidden * ffn + t * (2.0 * hidden + 3.0 * ffn)) * self.bytes_per_element
        roof = np.maximum(flops / self.gpu.flops[self.dtype], moved / self.gpu.memory_bandwidth)
        return np.where(t > 0, roof / self.efficiency, 0.0)

    def gpu_time(self, tokens_per_expert: np.ndarray, hidden: int, ffn: int) -> float:
        """Seconds for one GPU to run all its experts (a grouped GEMM); 0 when it got no token."""
        times = self.expert_time(tokens_per_expert, hidden, ffn)
        return float(times.sum() + (self.launch if np.any(np.asarray(tokens_per_expert) > 0) else 0.0))

    def gemm_time(self, m: np.ndarray, n: np.ndarray, k: np.ndarray) -> np.ndarray:
        """Seconds for one GEMM kernel ``[m, k] x [k, n]`` (arrays in, array out; ``m = 0`` costs 0 s).

        ``launch + max(2 m n k / peak, (m k + k n + m n) * bytes_per_element / bandwidth) /
        efficiency``: one launch per kernel, every operand read or written once.
        """
        m, n, k = (np.asarray(x, dtype=np.float64) for x in (m, n, k))
        flops = 2.0 * m * n * k
        moved = (m * k + k * n + m * n) * self.bytes_per_element
        roof = np.maximum(flops / self.gpu.flops[self.dtype], moved / self.gpu.memory_bandwidth)
        return np.where(m > 0, self.launch + roof / self.efficiency, 0.0)


class KernelTableError(ValueError):
    """A malformed kernel-timing table; the message names the line."""


KERNEL_TABLE_COLUMNS = ("op", "m", "n", "k", "dtype", "time_us")
"""The columns of a kernel-timing CSV, in the order they are written."""


def read_kernel_table(path: str | Path) -> pd.DataFrame:
    """Read a kernel-timing CSV: one measured GEMM per row.

    Format: a header line naming the columns ``op,m,n,k,dtype,time_us`` (written in that order; any
    order is read), then one row per measured GEMM ``[m, k] x [k, n]``: ``op`` free text (such as
    ``gemm``), ``m``, ``n``, ``k`` positive whole numbers, ``dtype`` the input type (``bf16``,
    ``fp16``, ``fp8``, ...), ``time_us`` the kernel's time in **microseconds** (positive). Blank lines
    are skipped.

    Returns:
        A DataFrame with columns op, m, n, k (int64), dtype and time_us (float64, microseconds), in
        file order.

    Raises:
        KernelTableError: unreadable file, a header with unknown or missing columns, a row that is not
            six fields with whole m, n, k and a numeric time, a non-positive size or time, or no row.
            The message is one line naming the file and line.
    """
    try:
        with open(path, newline="", encoding="utf-8") as handle:
            lines = list(csv.reader(handle))
    except OSError as err:
        raise KernelTableError(f"{path}: cannot read the kernel table ({err.strerror})") from None
    except UnicodeDecodeError as err:
        raise KernelTableError(f"{path}: not UTF-8 text (byte {err.start})") from None
    expected = ",".join(KERNEL_TABLE_COLUMNS)
    header = [h.strip() for h in (lines[0] if lines else [])]
    unknown = [h for h in header if h not in KERNEL_TABLE_COLUMNS]
    missing = [c for c in KERNEL_TABLE_COLUMNS if c not in header]
    if unknown or missing or len(header) != len(KERNEL_TABLE_COLUMNS):
        what = "unknown " + ", ".join(unknown) if unknown else "missing " + ", ".join(missing)
        raise KernelTableError(
            f"{path}: line 1 must be the header {expected}, got {','.join(header)!r} "
            f"({what if unknown or missing else 'repeated columns'})"
        )
    where = [header.index(c) for c in KERNEL_TABLE_COLUMNS]
    records: list[tuple[str, int, int, int, str, float]] = []
    for number, row in enumerate(lines[1:], start=2):
        if not "".join(row).strip():
            continue
        try:
            if len(row) != len(header):
                raise ValueError
            op, m, n, k, kind, time_us = (row[i].strip() for i in where)
            m_, n_, k_, t_ = int(m), int(n), int(k), float(time_us)
        except ValueError:
            raise KernelTableError(
                f"{path}: line {number}: expected {expected} with whole m, n, k and a time, "
                f"got {','.join(row)!r}"
            ) from None
        if m_ <= 0 or n_ <= 0 or k_ <= 0 or not 0 < t_ < float("inf"):
            raise KernelTableError(f"{path}: line {number}: m, n, k and time_us must be positive")
        records.append((op, m_, n_, k_, kind, t_))
    if not records:
        raise KernelTableError(f"{path}: no timing rows")
    table = pd.DataFrame.from_records(records, columns=list(KERNEL_TABLE_COLUMNS))
    return table.astype({"m": "int64", "n": "int64", "k": "int64", "time_us": "float64"})


@dataclass(frozen=True)
class MeasuredGEMM:
    """Expert compute time interpolated from measured GEMM timings.

    The table is a CSV with the header ``op,m,n,k,dtype,time_us``: one measured GEMM ``[m, k] x
    [k, n]`` per row (``op`` is free text such as ``gemm``; ``time_us`` in microseconds). An expert on
    ``t`` tokens runs gate and up ``[t, hidden] x [hidden, ffn]`` and down ``[t, ffn] x [ffn,
    hidden]``; each is looked up by ``(n, k, dtype)`` and interpolated linearly in ``m`` between
    measured sizes (linearly extrapolated beyond the largest, held at the smallest measured time
    below it). A grouped GEMM costs the sum over a GPU's experts plus ``launch``.
    """

    rows: dict[tuple[int, int, str], tuple[np.ndarray, np.ndarray]]
    dtype: str = "bf16"
    launch: float = 5e-6

    @classmethod
    def from_csv(cls, path: str, dtype: str = "bf16", launch: float = 5e-6) -> MeasuredGEMM:
        """Read a kernel-timing CSV (format: :func:`read_kernel_table`)."""
        table = read_kernel_table(path)
        rows = {}
        for key, group in table.groupby(["n", "k", "dtype"], sort=True):
            group = group.sort_values(["m", "time_us"], kind="stable")
            n, k, kind = key
            rows[(int(n), int(k), str(kind))] = (
                group["m"].to_numpy(dtype=np.float64),
                group["time_us"].to_numpy(dtype=np.float64) * 1e-6,
            )
        return cls(rows, dtype, launch)

    def _gemm(self, tokens: np.ndarray, n: int, k: int) -> np.ndarray:
        key = (n, k, self.dtype)
        if key not in self.rows:
            have = ", ".join(f"n={a} k={b} {c}" for a, b, c in sorted(self.rows))
            raise KernelTableError(
                f"kernel table has no GEMM with n={n}, k={k}, dtype {self.dtype} (it has: {have})"
            )
        m, t = self.rows[key]
        inside = np.interp(tokens, m, t)
        if m.size > 1:
            slope = (t[-1] - t[-2]) / (m[-1] - m[-2])
            inside = np.where(tokens > m[-1], t[-1] + slope * (tokens - m[-1]), inside)
        return inside

    def expert_time(self, tokens: np.ndarray, hidden: int, ffn: int) -> np.ndarray:
        """Seconds for one expert on ``tokens`` tokens (0 tokens = 0 s)."""
        t = np.asarray(tokens, dtype=np.float64)
        time = 2.0 * self._gemm(t, ffn, hidden) + self._gemm(t, hidden, ffn)
        return np.where(t > 0, time, 0.0)

    def gpu_time(self, tokens_per_expert: np.ndarray, hidden: int, ffn: int) -> float:
        """Seconds for one GPU to run all its experts; 0 when it got no token."""
        tokens = np.asarray(tokens_per_expert)
        return float(
            self.expert_time(tokens, hidden, ffn).sum() + (self.launch if np.any(tokens > 0) else 0.0)
        )
