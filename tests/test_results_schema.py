"""The results table knows what it is: every column classified in its Parquet metadata, the
baseline and the sweep's axes stored with it, and the report reading that instead of guessing."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
import yaml

from experiments.cli import main
from experiments.config import ConfigError, load_experiment
from experiments.report_data import load_results
from experiments.report_headline import compare, group_columns, summary_table
from experiments.results_schema import ROLES, SchemaError, describe_columns, read_results

TOPOLOGY = {
    "leaves": 2,
    "spines": 2,
    "hosts_per_leaf": 1,
    "gpus_per_host": 4,
    "nic_bandwidth": "400Gbps",
    "uplink_bandwidth": "400Gbps",
}
COLLECTIVE = {
    "name": "zipped",
    "topology": TOPOLOGY,
    "workload": {"kind": "collective", "op": "all_reduce", "size": "1MiB"},
    "record": {"flows": False, "timeline": False},
    "report": {"baseline": {"transport": "spray"}},
    "sweep": {
        "zip": {"workload.op": ["all_reduce", "all_to_all"], "workload.algorithm": ["ring", "direct"]},
        "workload.size": ["256KiB", "1MiB"],
        "transport": ["ecmp", "spray"],
        "seed": [0, 1],
    },
}
MOE = {
    "name": "moe",
    "topology": TOPOLOGY,
    "workload": {
        "kind": "moe",
        "hidden": 512,
        "synth": {"experts": 16, "top_k": 2, "layers": 2, "tokens_per_gpu": 64, "imbalance": 1.0},
    },
    "record": {"flows": False, "timeline": False},
    "sweep": {"placement": ["round_robin", "greedy"], "transport": ["ecmp", "spray"]},
}


def run(tmp_path: Path, experiment: dict, name: str) -> Path:
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(experiment, sort_keys=False))
    out = tmp_path / name
    assert main(["run", str(path), "--out", str(out), "--workers", "1"]) == 0
    return out


@pytest.fixture(scope="module")
def collective(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return run(tmp_path_factory.mktemp("schema"), COLLECTIVE, "zipped")


@pytest.fixture(scope="module")
def moe(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return run(tmp_path_factory.mktemp("schema"), MOE, "moe")


@pytest.mark.parametrize("which", ["collective", "moe"])
def test_every_column_is_classified(which: str, request: pytest.FixtureRequest) -> None:
    out = request.getfixturevalue(which)
    table, schema = read_results(out / "results.parquet")
    assert list(schema.columns) == list(table.columns)
    assert {column.role for column in schema.columns.values()} <= set(ROLES)
    for name, column in schema.columns.items():
        if column.role == "metric":
            assert column.unit, f"metric {name} has no unit"
    assert schema.columns["point"].role == "id" and schema.columns["seed"].role == "id"
    assert schema.columns["transport"].role == "parameter"
    assert schema.columns["error"].role == "status"
    assert schema.columns["completion_time_s"].unit == "s"


def test_collective_schema_axes_baseline_and_units(collective: Path) -> None:
    table, schema = read_results(collective / "results.parquet")
    assert schema.experiment == "zipped"
    assert schema.axes == [["workload.op", "workload.algorithm"], ["workload.size"], ["transport"], ["seed"]]
    assert schema.baseline == {"transport": "spray"}
    assert schema.columns["workload.size"].unit == "B"
    assert schema.columns["workload.size"].label == "message size"
    assert schema.columns["algorithm"].role == "setting"
    assert schema.parameters == ["workload.op", "workload.algorithm", "workload.size", "transport"]


def test_moe_summary_has_completion_time_and_no_metric_groups(moe: Path) -> None:
    res = load_results(moe)
    assert set(res.params) == {"placement"}
    for metric in ("layer_time_s", "cross_host_bytes", "load_ratio", "expert_time_ratio"):
        assert res.schema.columns[metric].role == "metric"
        assert metric not in group_columns(res)
    html = summary_table(res)
    assert "completion time" in html and "MoE layer time" in html
    header = html.split("</thead>")[0]
    assert header.count("<th>") >= 4
    # one row per (placement, transport): 4 rows, never one per metric value
    assert html.split("<tbody>")[1].count("<tr>") == 4
    assert "busiest / mean expert time" in header


def test_headline_compares_within_groups(collective: Path) -> None:
    res = load_results(collective)
    table = compare(res)
    # groups: (op, algorithm) x size; compared: ecmp against spray; 2 seeds each
    assert len(table) == 4 and set(table["transport"]) == {"ecmp"} and set(table["seeds"]) == {2}
    ok = res.ok
    for _, row in table.iterrows():
        at = ok[(ok["workload.op"] == row["workload.op"]) & (ok["workload.size"] == row["workload.size"])]
        ecmp = at[at["transport"] == "ecmp"].set_index("seed")["completion_time_s"]
        spray = at[at["transport"] == "spray"].set_index("seed")["completion_time_s"]
        ratio = ecmp / spray
        assert row["completion_time_s/ratio"] == pytest.approx(ratio.mean(), rel=1e-12)
        assert row["completion_time_s/ratio_max"] == pytest.approx(ratio.max(), rel=1e-12)


def test_report_page_has_headline_and_explorer(collective: Path) -> None:
    text = (collective / "report.html").read_text()
    assert "Headline" in text and "spray" in text and "Explorer" in text
    assert (collective / "plotly.min.js").is_file()
    assert "src='plotly.min.js'" in text
    assert len(text.encode()) < 1_000_000


def test_unknown_column_has_no_role() -> None:
    with pytest.raises(SchemaError, match="'mystery'"):
        describe_columns(["point", "mystery"], swept=[])


def test_legacy_file_without_schema_is_inferred(tmp_path: Path) -> None:
    pd.DataFrame(
        {
            "point": [0],
            "seed": [0],
            "transport": ["ecmp"],
            "workload.size": [1.0],
            "completion_time_s": [1e-3],
        }
    ).to_parquet(tmp_path / "results.parquet", index=False)
    _, schema = read_results(tmp_path / "results.parquet")
    assert schema.columns["workload.size"].role == "parameter"
    assert schema.columns["completion_time_s"].role == "metric"


def _write(tmp_path: Path, report: dict) -> Path:
    path = tmp_path / "e.yaml"
    path.write_text(yaml.safe_dump({**COLLECTIVE, "report": report}, sort_keys=False))
    return path


def test_default_baseline_is_the_first_zip_tuple(tmp_path: Path) -> None:
    plan = load_experiment(_write(tmp_path, {}))
    assert plan.baseline == {"workload.op": "all_reduce", "workload.algorithm": "ring"}


@pytest.mark.parametrize(
    ("baseline", "message"),
    [
        ({"transport": "ideal"}, "report.baseline.transport: 'ideal' is not one of its swept values"),
        ({"topology.leaves": 2}, "report.baseline.topology.leaves: not a swept parameter"),
        ({"workload.op": "all_reduce"}, "report.baseline: workload.op is in a zip: group"),
        ({"seed": 0}, "report.baseline.seed: not a swept parameter"),
    ],
)
def test_bad_baseline_is_refused(tmp_path: Path, baseline: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message.replace(".", r"\.").replace("(", r"\(")):
        load_experiment(_write(tmp_path, {"baseline": baseline}))


def test_moe_gpu_load_and_placement_objective(moe: Path) -> None:
    load = pd.read_parquet(moe / "gpu_load.parquet")
    results, _ = read_results(moe / "results.parquet")
    assert list(load.columns) == ["layer", "gpu", "tokens", "point"]
    per_layer = load.groupby(["point", "layer"])["tokens"].sum()
    run_tokens = results.set_index("point")["run_tokens"]
    for (point, _), copies in per_layer.items():
        assert copies == pytest.approx(run_tokens[point] * 2)  # top-2: two copies per token
    assert results["placement_objective"].gt(0).all() and results["ilp_bound"].isna().all()
    # greedy balances tokens at least as well as round-robin on the same trace
    by = results.groupby("placement")["load_ratio"].mean()
    assert by["greedy"] <= by["round_robin"] + 1e-9
    text = (moe / "report.html").read_text()
    for title in ("MoE layer phases per GPU", "Per-GPU token load", "Cross-host bytes per placement"):
        assert f">{title}</h2>" in text
