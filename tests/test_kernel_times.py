"""Tests for calibration.kernel_times and workloads.kernel_model.read_kernel_table."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import DEEPSEEK

from calibration.kernel_times import DTYPE_BYTES, fit_roofline, kineto_kernel_durations
from workloads.kernel_model import GPUS, KernelTableError, MeasuredGEMM, RooflineGEMM, read_kernel_table
from workloads.kineto import load_kineto

SHAPES = [
    (m, n, k) for m in (1, 8, 64, 512, 4096, 16384) for n, k in ((4096, 7168), (7168, 2048), (1408, 2048))
]


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "gemm.csv"
    path.write_text(text)
    return path


def synthetic(gpu: str, truth: dict[str, float], launch: float) -> pd.DataFrame:
    """Kernel times made by RooflineGEMM itself with the given efficiencies and launch."""
    rows = []
    for dtype, efficiency in truth.items():
        model = RooflineGEMM(GPUS[gpu], dtype, DTYPE_BYTES[dtype], efficiency, launch)
        for m, n, k in SHAPES:
            rows.append(("gemm", m, n, k, dtype, float(model.gemm_time(m, n, k)) * 1e6))
    return pd.DataFrame(rows, columns=["op", "m", "n", "k", "dtype", "time_us"])


# --------------------------------------------------------------------------------------------------
# the kernel-timing CSV


def test_read_kernel_table(tmp_path: Path) -> None:
    path = write(
        tmp_path, "op,m,n,k,dtype,time_us\ngemm,64,256,512,bf16,12.5\n\ngrouped_gemm,128,256,512,fp8,7\n"
    )
    table = read_kernel_table(path)
    assert list(table.columns) == ["op", "m", "n", "k", "dtype", "time_us"]
    assert table.values.tolist() == [
        ["gemm", 64, 256, 512, "bf16", 12.5],
        ["grouped_gemm", 128, 256, 512, "fp8", 7.0],
    ]
    assert table["m"].dtype == np.int64 and table["time_us"].dtype == np.float64
    reordered = write(tmp_path, "dtype,time_us,op,m,n,k\nbf16,12.5,gemm,64,256,512\n")
    assert read_kernel_table(reordered).values.tolist() == [["gemm", 64, 256, 512, "bf16", 12.5]]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("op,m,n,k,dtype,time_us\ngemm,64,256,512,bf16,abc\n", "line 2: expected op,m,n,k,dtype,time_us"),
        ("op,m,n,k,dtype,time_us\ngemm,64,256,512,bf16,3\ngemm,6.5,256,512,bf16,3\n", "line 3: expected op"),
        ("op,m,n,k,dtype,time_us\ngemm,64,256,512,bf16\n", "line 2: expected op,m,n,k,dtype,time_us"),
        ("op,m,n,k,dtype,time_us\ngemm,64,256,512,bf16,-3\n", "line 2: m, n, k and time_us must be positive"),
        (
            "op,m,n,k,dtype,time_us\n\ngemm,64,256,512,bf16,0\n",
            "line 3: m, n, k and time_us must be positive",
        ),
        ("op,m,n,k,dtype,time_us\ngemm,0,256,512,bf16,3\n", "line 2: m, n, k and time_us must be positive"),
        (
            "op,m,n,k,dtype,time_us,gpu\ngemm,1,2,3,bf16,3,h100\n",
            "line 1 must be the header op,m,n,k,dtype,time_us",
        ),
        ("op,m,n,k,dtype,time_us,gpu\n", "(unknown gpu)"),
        ("op,m,n,k,time_us\n", "(missing dtype)"),
        ("op,m,n,k,dtype,time_us\n", "no timing rows"),
        ("", "line 1 must be the header"),
    ],
)
def test_kernel_table_errors(tmp_path: Path, text: str, message: str) -> None:
    path = write(tmp_path, text)
    with pytest.raises(KernelTableError) as err:
        read_kernel_table(path)
    assert str(err.value).startswith(f"{path}: ") and message in str(err.value) and "\n" not in str(err.value)


def test_unreadable_kernel_table(tmp_path: Path) -> None:
    with pytest.raises(KernelTableError, match="cannot read the kernel table"):
        read_kernel_table(tmp_path / "missing.csv")


def test_measured_gemm_reads_through_read_kernel_table(tmp_path: Path) -> None:
    path = write(tmp_path, "op,m,n,k,dtype,time_us\ngemm,128,256,512,bf16,20\ngemm,64,256,512,bf16,10\n")
    model = MeasuredGEMM.from_csv(str(path))
    m, t = model.rows[(256, 512, "bf16")]
    assert m.tolist() == [64.0, 128.0] and t.tolist() == pytest.approx([10e-6, 20e-6])
    with pytest.raises(KernelTableError, match="line 2: m, n, k and time_us must be positive"):
        MeasuredGEMM.from_csv(str(write(tmp_path, "op,m,n,k,dtype,time_us\ngemm,1,2,3,bf16,-1\n")))


# --------------------------------------------------------------------------------------------------
# the roofline fit


def test_gemm_time_is_the_roofline() -> None:
    model = RooflineGEMM(GPUS["h100"], "bf16", 2, 0.5, 4e-6)
    m, n, k = 4096, 7168, 2048
    compute = 2 * m * n * k / 989e12
    memory = (m * k + k * n + m * n) * 2 / 3.35e12
    assert float(model.gemm_time(m, n, k)) == pytest.approx(4e-6 + max(compute, memory) / 0.5, rel=1e-12)
    small = (1 * k + k * n + 1 * n) * 2 / 3.35e12  # one token: memory bound
    assert float(model.gemm_time(1, n, k)) == pytest.approx(4e-6 + small / 0.5, rel=1e-12)
    assert model.gemm_time(np.array([0, 1]), n, k)[0] == 0.0


@pytest.mark.parametrize(
    ("gpu", "truth", "launch"),
    [
        ("h100", {"bf16": 0.62}, 7e-6),
        ("h800", {"bf16": 0.71, "fp8": 0.48}, 3.5e-6),
        ("a100", {"bf16": 0.85, "fp16": 0.8}, 0.0),
        ("b200", {"fp8": 1.0}, 12e-6),
    ],
)
def test_fit_recovers_the_roofline(gpu: str, truth: dict[str, float], launch: float) -> None:
    fit = fit_roofline(synthetic(gpu, truth, launch), gpu)
    assert fit.gpu == gpu and set(fit.efficiency) == set(truth)
    for dtype, efficiency in truth.items():
        assert fit.efficiency[dtype] == pytest.approx(efficiency, rel=0.01)
    assert fit.launch == pytest.approx(launch, rel=0.01, abs=1e-9)
    assert fit.mape < 0.01
    assert list(fit.per_row.columns) == [
        "op",
        "m",
        "n",
        "k",
        "dtype",
        "measured_us",
        "predicted_us",
        "rel_error",
    ]
    assert len(fit.per_row) == len(SHAPES) * len(truth)
    model = fit.model(next(iter(truth)))
    assert isinstance(model, RooflineGEMM) and model.launch == fit.launch


def test_fit_with_noise_and_bounds() -> None:
    table = synthetic("h100", {"bf16": 0.6}, 5e-6)
    noise = np.random.default_rng(0).lognormal(0.0, 0.05, len(table))
    fit = fit_roofline(table.assign(time_us=table["time_us"] * noise), "h100")
    assert fit.efficiency["bf16"] == pytest.approx(0.6, rel=0.05) and 1.0 < fit.mape < 10.0
    assert np.allclose(fit.per_row["rel_error"], fit.per_row["predicted_us"] / fit.per_row["measured_us"] - 1)
    fast = fit_roofline(table.assign(time_us=table["time_us"] * 0.2), "h100")  # faster than the datasheet
    assert fast.efficiency["bf16"] == 1.0 and fast.launch >= 0.0


def test_fit_errors() -> None:
    table = synthetic("h100", {"bf16": 0.6}, 5e-6)
    with pytest.raises(ValueError, match=r'unknown gpu "h1000" \(valid: a100, b200, h100, h200, h800\)'):
        fit_roofline(table, "h1000")
    with pytest.raises(
        ValueError, match=r'dtype "fp8" is not supported on A100 SXM 80GB \(valid: bf16, fp16\)'
    ):
        fit_roofline(table.assign(dtype="fp8"), "a100")
    with pytest.raises(ValueError, match="lacks columns time_us"):
        fit_roofline(table.drop(columns="time_us"), "h100")
    with pytest.raises(ValueError, match="no rows"):
        fit_roofline(table.iloc[:0], "h100")


def test_fit_a_csv_file(tmp_path: Path) -> None:
    table = synthetic("h200", {"bf16": 0.55}, 6e-6)
    path = tmp_path / "gemm.csv"
    table.to_csv(path, index=False, float_format="%.9g")
    fit = fit_roofline(read_kernel_table(path), "h200")
    assert fit.efficiency["bf16"] == pytest.approx(0.55, rel=1e-6) and fit.launch == pytest.approx(
        6e-6, rel=1e-5
    )


# --------------------------------------------------------------------------------------------------
# kernel durations of a profile


def test_kineto_kernel_durations_deepseek() -> None:
    path = DEEPSEEK
    table = kineto_kernel_durations(path)
    assert list(table.columns) == [
        "name",
        "kind",
        "count",
        "total_us",
        "mean_us",
        "median_us",
        "min_us",
        "max_us",
    ]
    kernels = [k for k in load_kineto(path).kernels if k.kind in ("compute", "communication")]
    assert table["count"].sum() == len(kernels) == 963
    assert (table["total_us"] > 0).all() and table["total_us"].is_monotonic_decreasing
    assert table["total_us"].sum() == pytest.approx(sum(k.duration for k in kernels) * 1e6, rel=1e-9)
    assert (table["min_us"] <= table["median_us"]).all() and (table["median_us"] <= table["max_us"]).all()
    assert np.allclose(table["mean_us"] * table["count"], table["total_us"])
    assert not table.duplicated(["name", "kind"]).any()
    kinds = set(table["kind"])
    assert {"compute", "deepep_dispatch", "deepep_combine", "deepep_notify"} <= kinds
    assert table.iloc[0]["kind"] == "deepep_combine" and table.iloc[0]["count"] == 8
