"""``moesim microbench`` without a GPU: the refusal, argument errors, and the tables on CPU.

The measurement functions run on CPU with tiny shapes (``time.perf_counter`` timing), and the
NCCL sweep runs on torch.distributed's gloo backend in two spawned processes, so that everything
but the CUDA calls is exercised in CI.
"""

from __future__ import annotations

import math
import multiprocessing
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

torch = pytest.importorskip("torch")

from calibration import microbench as mb  # noqa: E402
from calibration.nccl_log import bus_factor, parse_nccl_log  # noqa: E402
from experiments import microbench_command as cmd  # noqa: E402
from experiments.arguments import UsageError  # noqa: E402
from workloads.kernel_model import MeasuredGEMM  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def _one_line(err: str) -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("moesim: error: ") and not lines[0].startswith("moesim: error: moesim")
    return lines[0]


def _plan(**overrides: object) -> cmd.Settings:
    base = dict(
        parts=cmd.PARTS,
        models=("olmoe",),
        tokens=(16, 32),
        dtypes=("bf16",),
        experts=2,
        max_size=4096,
        warmup=1,
        iters=2,
        quick=True,
    )
    return cmd.Settings(**{**base, **overrides})  # type: ignore[arg-type]


# ------------------------------------------------------------------------------ the command line


def test_no_gpu_exits_2_with_one_line_and_writes_nothing(tmp_path: Path, monkeypatch, capsys) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    out = tmp_path / "mb"
    assert cmd.main(["--out", str(out), "--quick"]) == 2
    line = _one_line(capsys.readouterr().err)
    assert "no CUDA GPU is visible (torch.cuda.is_available() is False)" in line
    assert not out.exists()


def test_no_torch_exits_2(tmp_path: Path, monkeypatch, capsys) -> None:
    monkeypatch.setitem(sys.modules, "torch", None)  # "import torch" raises ImportError
    assert cmd.main(["--out", str(tmp_path / "mb")]) == 2
    assert "no CUDA GPU is visible (torch is not installed)" in _one_line(capsys.readouterr().err)
    assert not (tmp_path / "mb").exists()


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        ([], "the following arguments are required: --out"),
        (["--only", "gemm,foo"], "--only: 'foo' is not one of gemm,copy,nccl"),
        (["--models", "gpt4"], "--models: 'gpt4' is not one of mixtral-8x7b"),
        (["--dtypes", "fp4"], "--dtypes: 'fp4' is not one of bf16,fp16,fp8"),
        (["--tokens", "16,0"], "--tokens: '0' is not a whole number >= 1"),
        (["--tokens", "16,x"], "--tokens: 'x' is not a whole number >= 1"),
        (["--max-size", "1Gbps"], "--max-size:"),
        (["--max-size", "4"], "--max-size: '4' is below 8 bytes"),
        (["--experts", "-1"], "argument --experts: '-1' is not a whole number >= 0"),
        (["--iters", "0"], "argument --iters: '0' is not a whole number >= 1"),
        (["--bogus"], "unrecognized arguments: --bogus"),
    ],
)
def test_bad_arguments_exit_2_with_one_line(tmp_path: Path, argv: list[str], message: str, capsys) -> None:
    out = ["--out", str(tmp_path / "mb")] if argv else []
    assert cmd.main([*out, *argv]) == 2
    assert message in _one_line(capsys.readouterr().err)
    assert not (tmp_path / "mb").exists()


def test_settings_defaults_and_quick() -> None:
    full = cmd.settings(cmd._parser().parse_args(["--out", "x"]))
    assert full.tokens == tuple(2**i for i in range(4, 15)) and full.max_size == 2**30
    assert full.parts == ("gemm", "copy", "nccl") and full.dtypes == ("bf16", "fp8") and full.experts == 8
    quick = cmd.settings(
        cmd._parser().parse_args(["--out", "x", "--quick", "--iters", "3", "--max-size", "1MiB"])
    )
    assert (
        quick.tokens == (64, 512, 4096) and quick.iters == 3 and quick.warmup == 3 and quick.max_size == 2**20
    )
    tokens = cmd.settings(cmd._parser().parse_args(["--out", "x", "--tokens", "64,16,64"]))
    assert tokens.tokens == (16, 64)


def test_out_holding_results_is_refused_unless_forced(tmp_path: Path) -> None:
    cmd.check_out(tmp_path / "new", force=False)  # absent: fine
    (tmp_path / "notes.txt").write_text("x")
    cmd.check_out(tmp_path, force=False)  # other files: fine
    (tmp_path / "gemm.csv").write_text("x")
    with pytest.raises(UsageError, match=r"already holds results \(gemm.csv\); use --force"):
        cmd.check_out(tmp_path, force=False)
    cmd.check_out(tmp_path, force=True)
    cmd._prepare_out(tmp_path)  # --force: stale results go, other files stay
    assert not (tmp_path / "gemm.csv").exists() and (tmp_path / "notes.txt").exists()
    with pytest.raises(UsageError, match="is a file, not a directory"):
        cmd.check_out(tmp_path / "notes.txt", force=True)


def test_module_runs_standalone_without_gpu(tmp_path: Path) -> None:
    code = "import torch; torch.cuda.is_available = lambda: False; import runpy; "
    code += "runpy.run_module('experiments.microbench_command', run_name='__main__')"
    done = subprocess.run(
        [sys.executable, "-c", code, "--out", str(tmp_path / "mb")],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 2
    assert "no CUDA GPU is visible" in _one_line(done.stderr)
    assert not (tmp_path / "mb").exists()


# ------------------------------------------------------------------------------ GEMMs


def test_gemm_sweep_on_cpu_rows() -> None:
    sweep = mb.gemm_sweep(
        shapes=[(48, 32), (32, 48)], tokens=[16, 64], device="cpu", dtypes=("float32",), experts=2, iters=2
    )
    rows = sweep.rows
    assert list(rows.columns) == ["op", "m", "n", "k", "dtype", "time_us"]
    assert len(rows) == 2 * 2 * 2 and set(rows["dtype"]) == {"fp32"} and (rows["time_us"] > 0).all()
    # grouped rows: m tokens per expert, n = experts x expert n, the whole call
    assert sorted(set(zip(rows["op"], rows["n"], rows["k"], strict=True))) == [
        ("gemm", 32, 48),
        ("gemm", 48, 32),
        ("grouped_gemm", 64, 48),
        ("grouped_gemm", 96, 32),
    ]
    assert sweep.skipped == [] and sweep.notes and "grouped_gemm fp32" in sweep.notes[0]


def test_grouped_rows_that_would_look_like_a_gemm_shape_are_dropped() -> None:
    # 2 experts of n=16 make n=32: the same (n, k) as the plain GEMM (32, 32)
    sweep = mb.gemm_sweep([(16, 32), (32, 32)], [16], device="cpu", dtypes=("fp32",), experts=2, iters=1)
    assert ("grouped_gemm", 32) not in set(zip(sweep.rows["op"], sweep.rows["n"], strict=True))
    assert len(sweep.rows) == 3 and "experts x n equals a gemm shape" in sweep.skipped[0]


def test_gemm_sweep_skips_fp8_where_unsupported(monkeypatch) -> None:
    monkeypatch.setattr(mb, "fp8_support", lambda device: (False, "compute capability 8.0 < 8.9"))
    sweep = mb.gemm_sweep([(32, 32)], [16], device="cpu", dtypes=("fp32", "fp8"), iters=1, warmup=0)
    assert set(sweep.rows["dtype"]) == {"fp32"}
    assert sweep.skipped == ["fp8: compute capability 8.0 < 8.9"]


def test_expert_shapes_are_gate_up_and_down() -> None:
    assert mb.expert_shapes(["mixtral-8x7b", "olmoe", "mixtral-8x7b"]) == [
        (14336, 4096),
        (4096, 14336),
        (1024, 2048),
        (2048, 1024),
    ]
    assert cmd.MODELS == tuple(mb.MODELS)  # the command lists them without importing torch
    assert mb.powers_of_two(16, 100) == [16, 32, 64] and mb.powers_of_two(4, 64, 4) == [4, 16, 64]


def test_gemm_csv_is_read_by_measured_gemm(tmp_path: Path) -> None:
    record: dict = {"files": []}
    cmd._gemm_part(tmp_path, _plan(), torch.device("cpu"), record)
    path = tmp_path / "gemm.csv"
    assert path.read_text().splitlines()[0] == "op,m,n,k,dtype,time_us"
    table = pd.read_csv(path)
    assert set(table["op"]) == {"gemm", "grouped_gemm"} and set(table["dtype"]) == {"bf16"}
    hidden, ffn = mb.MODELS["olmoe"]
    assert sorted(set(zip(table["op"], table["n"], table["k"], strict=True))) == [
        ("gemm", ffn, hidden),
        ("gemm", hidden, ffn),
        ("grouped_gemm", 2 * ffn, hidden),
        ("grouped_gemm", 2 * hidden, ffn),
    ]
    # MeasuredGEMM looks experts up by (n, k): an expert at a measured size is its three GEMMs.
    model = MeasuredGEMM.from_csv(str(path), dtype="bf16", launch=0.0)
    plain = table[table["op"] == "gemm"].set_index(["m", "n", "k"])["time_us"]
    for t in (16, 32):
        expected = (2 * plain[(t, ffn, hidden)] + plain[(t, hidden, ffn)]) * 1e-6
        assert model.expert_time(np.array([t]), hidden, ffn)[0] == pytest.approx(expected, rel=1e-3)
    assert np.isfinite(model.expert_time(np.array([24, 100]), hidden, ffn)).all()
    assert record["gemm"]["experts"] == 2
    assert record["files"] == ["gemm.csv"] and record["gemm"]["skipped"] == []


# ------------------------------------------------------------------------------ copies


def test_copy_table(tmp_path: Path) -> None:
    rows = mb.copy_sweep([("cpu", "cpu")], [4096, 65536], warmup=1, iters=3)
    assert list(rows.columns) == ["src", "dst", "bytes", "time_us", "gbps"]
    assert list(rows["bytes"]) == [4096, 65536] and (rows["src"] == "cpu").all()
    assert np.allclose(rows["gbps"], rows["bytes"] / rows["time_us"] / 1e3)
    record: dict = {"files": []}
    cmd._copy_part(tmp_path, _plan(max_size=2**16), torch.device("cpu"), record)
    written = pd.read_csv(tmp_path / "copy.csv")
    assert list(written.columns) == ["src", "dst", "bytes", "time_us", "gbps"]
    assert list(written["bytes"]) == [4096, 16384, 65536]  # --quick: factor 4
    assert record["copy"]["pairs"] == ["cpu->cpu"]


# ------------------------------------------------------------------------------ collectives


def test_collective_counts_follow_nccl_tests() -> None:
    assert mb.collective_counts("all_reduce", 8, 8) == (8, 2)
    assert mb.collective_counts("all_gather", 8, 8) == (0, 0)  # a rank's part rounds to nothing
    assert mb.collective_counts("all_gather", 2**20, 8) == (2**20, 2**15)  # count: one rank's part
    assert mb.collective_counts("all_to_all", 2**20, 16) == (2**20, 2**14)  # count: one peer's part
    assert mb.collective_counts("all_to_all", 1000, 3) == (960, 80)  # parts of 16-byte multiples
    with pytest.raises(ValueError, match="not one of"):
        mb.collective_counts("broadcast", 8, 2)


def test_nccl_table_from_fake_timings_parses_back(tmp_path: Path) -> None:
    from calibration.nccl_log import format_nccl_log

    nranks = 8
    rows = []
    for size in (2**20, 2**24):
        for placement, time_us in (("out_of_place", 100.0), ("in_place", 80.0)):
            s, count = mb.collective_counts("all_reduce", size, nranks)
            rows.append(
                mb.collective_row("all_reduce", s, count, nranks, placement, time_us * size / 2**20, 0)
            )
    frame = pd.DataFrame(rows, columns=mb.NCCL_COLUMNS)
    lines = [
        f"#  Rank {r:2d} Group  0 Pid {100 + r:6d} on  host-a device {r:2d} [0x{r:02x}] GPU" for r in range(8)
    ]
    path = tmp_path / "nccl_all_reduce.txt"
    path.write_text(format_nccl_log("all_reduce", frame, nranks=nranks, rank_lines=lines))
    log = parse_nccl_log(path)
    assert log.op == "all_reduce" and log.nranks == nranks and log.hosts == 1
    assert np.allclose(log.rows["algbw_gbps"], log.rows["size"] / log.rows["time_us"] / 1e3)
    assert np.allclose(log.rows["busbw_gbps"], log.rows["algbw_gbps"] * 2 * 7 / 8)


def _nccl_worker(rank: int, world: int, init: str, out: str) -> None:
    import torch.distributed as dist

    dist.init_process_group("gloo", init_method=init, rank=rank, world_size=world)
    try:
        record: dict = {"files": []}
        cmd._nccl_part(Path(out), _plan(max_size=1024), torch.device("cpu"), rank, world, record)
    finally:
        dist.destroy_process_group()


def test_nccl_sweep_on_gloo_writes_logs_that_parse_back(tmp_path: Path) -> None:
    world = 2
    context = multiprocessing.get_context("spawn")
    init = f"file://{tmp_path / 'rendezvous'}"
    procs = [context.Process(target=_nccl_worker, args=(r, world, init, str(tmp_path))) for r in range(world)]
    for proc in procs:
        proc.start()
    for proc in procs:
        proc.join(timeout=120)
    assert [proc.exitcode for proc in procs] == [0, 0]
    for op in mb.COLLECTIVES:
        log = parse_nccl_log(tmp_path / f"nccl_{op}.txt")
        assert log.op == op and log.nranks == world and log.header["iters"] == "2"
        rows = log.rows
        assert set(rows["placement"]) == {"out_of_place", "in_place"} and rows["size"].max() <= 1024
        assert np.allclose(rows["algbw_gbps"], rows["size"] / rows["time_us"] / 1e3, rtol=1e-6)
        assert np.allclose(rows["busbw_gbps"], rows["algbw_gbps"] * bus_factor(op, world), rtol=1e-6)
        checked = rows if op != "all_to_all" else rows[rows["placement"] == "out_of_place"]
        assert (checked["wrong"] == 0).all()
        if op == "all_to_all":  # in place races, as in nccl-tests: N/A
            assert rows[rows["placement"] == "in_place"]["wrong"].map(math.isnan).all()
    assert parse_nccl_log(tmp_path / "nccl_all_gather.txt").rows["size"].min() == 32  # 8, 16 B round to 0


def test_whole_run_on_cpu_writes_tables_and_system_json(tmp_path: Path, monkeypatch, capsys) -> None:
    import json

    for name in ("RANK", "WORLD_SIZE", "LOCAL_RANK"):
        monkeypatch.delenv(name, raising=False)
    out = tmp_path / "mb"
    argv = ["--out", str(out), "--quick", "--models", "olmoe", "--tokens", "16", "--max-size", "8KiB"]
    args = cmd._parser().parse_args(argv)
    assert cmd._measure(args, cmd.settings(args), argv, device=torch.device("cpu")) == 0
    assert sorted(p.name for p in out.iterdir()) == ["copy.csv", "gemm.csv", "system.json"]
    system = json.loads((out / "system.json").read_text())
    assert system["command"] == ["moesim", "microbench", *argv] and system["world_size"] == 1
    assert system["sweep"]["tokens"] == [16] and system["sweep"]["max_size"] == 8192
    assert system["files"] == ["gemm.csv", "copy.csv", "system.json"]
    assert "torchrun" in system["nccl_skipped"] and system["gemm"]["experts"] == 8
    assert {"torch", "cuda", "nccl", "driver", "gpus", "gpu_count", "hostname", "date"} <= set(system)
    assert "nccl: skipped" in capsys.readouterr().out
    with pytest.raises(UsageError, match="already holds results"):  # a second run needs --force
        cmd._measure(args, cmd.settings(args), argv, device=torch.device("cpu"))


def test_system_info_on_cpu() -> None:
    info = mb.system_info()
    assert info["torch"] == torch.__version__ and info["hostname"]
    assert info["gpu_count"] == len(info["gpus"])
