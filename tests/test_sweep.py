"""Sweeps: expansion (grid and zip), parallel and Dask execution, resume after a kill, failing points."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
import yaml

import experiments.runner as runner
from experiments.cli import main
from experiments.config import ConfigError, load_experiment, parse_experiment, points
from experiments.execute import run_experiment

ROOT = Path(__file__).resolve().parents[1]

BASE = {
    "name": "sweep",
    "seed": 0,
    "topology": {
        "leaves": 4,
        "spines": 4,
        "hosts_per_leaf": 2,
        "gpus_per_host": 2,
        "nic_bandwidth": "400Gbps",
        "uplink_bandwidth": "400Gbps",
    },
    "workload": {"kind": "collective", "op": "all_to_all", "size": "1MiB"},
    "transport": "ecmp",
}


def expand(sweep: dict) -> list[dict]:
    raw = {**BASE, "sweep": sweep}
    return [swept for swept, _ in points(parse_experiment(raw), raw)]


def write(tmp_path: Path, sweep: dict, name: str = "exp.yaml", **extra: object) -> Path:
    path = tmp_path / name
    path.write_text(yaml.safe_dump({**BASE, **extra, "sweep": sweep}, sort_keys=False))
    return path


def same_results(a: pd.DataFrame, b: pd.DataFrame) -> None:
    pd.testing.assert_frame_equal(
        a.drop(columns="wall_time_s").reset_index(drop=True),
        b.drop(columns="wall_time_s").reset_index(drop=True),
        rtol=0,
    )


def test_grid_is_the_product_in_file_order_last_fastest() -> None:
    got = expand({"transport": ["ecmp", "spray"], "workload.size": ["1MiB", "2MiB", "4MiB"]})
    assert len(got) == 6
    assert [g["transport"] for g in got] == ["ecmp"] * 3 + ["spray"] * 3
    assert [g["workload.size"] for g in got[:3]] == ["1MiB", "2MiB", "4MiB"]


def test_zip_varies_together_and_multiplies_with_the_grid() -> None:
    got = expand(
        {
            "seed": [1, 2],
            "zip": {
                "workload.op": ["all_reduce", "all_to_all"],
                "workload.algorithm": ["hierarchical", "direct"],
            },
        }
    )
    assert len(got) == 4
    assert {(g["workload.op"], g["workload.algorithm"]) for g in got} == {
        ("all_reduce", "hierarchical"),
        ("all_to_all", "direct"),
    }
    two_groups = expand({"zip": [{"seed": [1, 2]}, {"transport": ["ecmp", "spray", "ethereal"]}]})
    assert len(two_groups) == 6


def test_swept_values_are_validated_and_resolved_to_base_units() -> None:
    raw = {**BASE, "sweep": {"workload.size": ["1KiB", "1MiB"]}}
    pts = points(parse_experiment(raw), raw)
    assert [p.workload.size for _, p in pts] == [1024, 2**20]


@pytest.mark.parametrize(
    ("sweep", "message"),
    [
        ({"zip": {"seed": [1, 2], "transport": ["ecmp"]}}, "sweep.zip: lists must have equal lengths"),
        ({"zip": {"seed": []}}, "sweep.zip.seed: empty list"),
        ({"transport": "ecmp"}, "sweep.transport: expected a list"),
        ({"topology.leaves": [2, 0]}, "sweep.topology.leaves: must be >= 1"),
        ({"workload.ranks": ["rail:7"]}, "sweep.workload.ranks: rail:7 needs rail < gpus_per_host=2"),
        ({"topology.fabric.leaves": [2]}, "sweep.topology.fabric.leaves: fabric is not a section"),
    ],
)
def test_bad_sweeps(sweep: dict, message: str) -> None:
    with pytest.raises(ConfigError) as err:
        expand(sweep)
    assert str(err.value).startswith(message), str(err.value)


def test_workers_and_dask_give_identical_results(tmp_path: Path) -> None:
    pytest.importorskip("dask.distributed")
    exp = write(tmp_path, {"transport": ["ecmp", "split:2"], "seed": [0, 1]})
    assert main(["run", str(exp), "--out", str(tmp_path / "w1"), "--workers", "1"]) == 0
    assert main(["run", str(exp), "--out", str(tmp_path / "w2"), "--workers", "2"]) == 0
    assert main(["run", str(exp), "--out", str(tmp_path / "dk"), "--workers", "2", "--executor", "dask"]) == 0
    one = pd.read_parquet(tmp_path / "w1" / "results.parquet")
    assert len(one) == 4 and one["error"].isna().all()
    for other in ("w2", "dk"):
        same_results(one, pd.read_parquet(tmp_path / other / "results.parquet"))
        pd.testing.assert_frame_equal(
            pd.read_parquet(tmp_path / "w1" / "flows.parquet"),
            pd.read_parquet(tmp_path / other / "flows.parquet"),
        )


def test_a_failing_point_is_recorded_and_the_others_run(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    real = runner.simulate_point

    def flaky(point, placement=None, programs=None):  # noqa: ANN001, ANN202
        if point.transport == "spray":
            raise RuntimeError("injected failure")
        return real(point, placement, programs)

    monkeypatch.setattr(runner, "simulate_point", flaky)
    exp = write(tmp_path, {"transport": ["ecmp", "spray", "ethereal"]})
    assert main(["run", str(exp), "--out", str(tmp_path / "o"), "--workers", "1"]) == 1
    results = pd.read_parquet(tmp_path / "o" / "results.parquet").set_index("transport")
    assert results.loc["spray", "error"] == "RuntimeError: injected failure"
    assert pd.isna(results.loc["spray", "completion_time_s"])
    assert results.loc[["ecmp", "ethereal"], "error"].isna().all()
    assert (results.loc[["ecmp", "ethereal"], "completion_time_s"] > 0).all()
    assert "1 failed" in capsys.readouterr().out
    # --resume reruns only the failed point
    monkeypatch.setattr(runner, "simulate_point", real)
    outcome = run_experiment(load_experiment(exp), tmp_path / "o", workers=1, resume=True)
    assert (outcome.ran, outcome.skipped, outcome.failed) == (1, 2, 0)


def test_timeline_integrates_to_link_bytes(tmp_path: Path) -> None:
    exp = write(
        tmp_path, {"transport": ["ecmp", "spray"]}, record={"timeline_links": 500, "timeline_bins": 17}
    )
    assert main(["run", str(exp), "--out", str(tmp_path / "o"), "--workers", "1"]) == 0
    timeline = pd.read_parquet(tmp_path / "o" / "timeline.parquet")
    links = pd.read_parquet(tmp_path / "o" / "links.parquet").set_index(["point", "link"])
    timeline["bytes"] = (
        timeline["utilization"]
        * (timeline["t_end"] - timeline["t_start"])
        * links.loc[list(zip(timeline["point"], timeline["link"], strict=True)), "capacity_Bps"].to_numpy()
    )
    moved = timeline.groupby(["point", "link"])["bytes"].sum()
    expected = links.loc[moved.index, "bytes"]
    assert ((moved - expected).abs() <= 1e-9 * expected.clip(lower=1)).all()
    assert timeline.groupby("point").size().tolist() == [17 * len(links.loc[0]), 17 * len(links.loc[1])]
    assert timeline["utilization"].max() <= 1 + 1e-9
