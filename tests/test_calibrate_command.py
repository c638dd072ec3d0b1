"""``moesim calibrate``: the a3mega log end to end (fitted YAML that reproduces the comparison,
report, table) and bad input (exit 2, one line, nothing written)."""

from __future__ import annotations

import contextlib
import io
from pathlib import Path

import pandas as pd
import pytest
import yaml

from calibration.nccl_log import format_nccl_log, parse_nccl_log
from experiments.cli import main
from experiments.config import load_experiment

ROOT = Path(__file__).resolve().parent.parent
A3MEGA = ROOT / "tests" / "data" / "nccl" / "gcp_a3mega_2x8xH100_all_reduce.txt"
TOPOLOGY = ROOT / "experiments" / "examples" / "gcp_a3mega.yaml"


@pytest.fixture(scope="module")
def calibrated(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    out = tmp_path_factory.mktemp("cal") / "a3mega.yaml"
    argv = [
        "calibrate",
        str(A3MEGA),
        "--topology",
        str(TOPOLOGY),
        "--out",
        str(out),
        "--holdout",
        "alternate",
    ]
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        assert main(argv) == 0
    return out, printed.getvalue()


def test_calibrate_writes_a_runnable_experiment_and_a_report(calibrated: tuple[Path, str]) -> None:
    out, printed = calibrated
    assert "MAPE, size >= 1 MiB, holdout" in printed and "nic (16 fitted rows)" in printed
    assert out.with_suffix(".html").is_file()
    plan = load_experiment(out)  # loads: the fitted parameters are valid topology fields
    topology = plan.experiment.topology
    assert 20e9 < topology.nic_bandwidth < 26.25e9
    assert 50e-6 < topology.collective_latency < 200e-6
    assert topology.nic_line_rate == 25e9  # the starting NIC's, which NCCL's choice depends on
    assert topology.nic_efficiency and topology.nic_efficiency[-1][1] == 1.0
    assert plan.experiment.workload.algorithm == "auto"
    assert len(plan.points) == 31  # one per measured size
    text = out.read_text()
    assert text.startswith("# Calibrated by moesim calibrate") and "held out" in text


def test_the_written_experiment_reproduces_the_reported_times(
    calibrated: tuple[Path, str], tmp_path: Path
) -> None:
    out, printed = calibrated
    raw = yaml.safe_load(out.read_text())
    raw["sweep"] = {"workload.size": [1048576, 16777216, 1073741824]}
    small = tmp_path / "three.yaml"
    small.write_text(yaml.safe_dump(raw))
    assert main(["run", str(small), "--out", str(tmp_path / "run"), "--workers", "1"]) == 0
    results = pd.read_parquet(tmp_path / "run" / "results.parquet").sort_values("workload.size")
    table = {line.split()[3] + line.split()[4]: float(line.split()[7]) for line in printed.splitlines()
             if line.startswith("gcp_a3mega")}  # fmt: skip
    expected = [table["1MiB"], table["16MiB"], table["1GiB"]]
    assert (results["completion_time_s"] * 1e6).round(2).tolist() == pytest.approx(expected, abs=0.011)


def _gather_log(tmp_path: Path) -> Path:
    rows = parse_nccl_log(A3MEGA).rows.head(4)
    path = tmp_path / "gather.txt"
    path.write_text(format_nccl_log("gather", rows, nranks=16))
    return path


@pytest.mark.parametrize(
    ("case", "message"),
    [
        ("gather", "gather cannot be fitted"),
        ("malformed", "line"),
        ("holdout", "--holdout 'bogus'"),
        ("holdout_all", "keeps every row out of the fit"),
        ("holdout_size", "no measured row of size"),
        ("no_log", "give at least one nccl-tests log"),
        ("missing", "no such file"),
        ("min_size", "--min-size"),
    ],
)
def test_bad_input_exits_2_with_one_line_and_writes_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture, case: str, message: str
) -> None:
    out = tmp_path / "out.yaml"
    files = [str(A3MEGA)]
    extra: list[str] = []
    if case == "gather":
        files = [str(_gather_log(tmp_path))]
    elif case == "malformed":
        bad = tmp_path / "bad_all_reduce.txt"
        bad.write_text(A3MEGA.read_text().replace(" 135.8 ", " fast  ", 1))
        files = [str(bad)]
    elif case == "holdout":
        extra = ["--holdout", "bogus"]
    elif case == "holdout_all":
        extra = ["--holdout", f"file:{A3MEGA.name}"]
    elif case == "holdout_size":
        extra = ["--holdout", "sizes:3MiB"]
    elif case == "no_log":
        table = tmp_path / "gemm.csv"
        table.write_text("op,m,n,k,dtype,time_us\ngemm,64,64,64,bf16,5\n")
        files = [str(table)]
    elif case == "missing":
        files = [str(tmp_path / "nope.txt")]
    elif case == "min_size":
        extra = ["--min-size", "big"]
    argv = ["calibrate", *files, "--topology", str(TOPOLOGY), "--out", str(out), *extra]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1, err
    assert not out.exists() and not out.with_suffix(".html").exists()


def test_logs_without_a_rank_count_need_ranks(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    text = "\n".join(line for line in A3MEGA.read_text().splitlines() if "cmd:" not in line)
    log = tmp_path / "all_reduce.txt"
    log.write_text(text)
    out = tmp_path / "out.yaml"
    assert main(["calibrate", str(log), "--topology", str(TOPOLOGY), "--out", str(out)]) == 2
    assert "--ranks" in capsys.readouterr().err
    assert not out.exists()
