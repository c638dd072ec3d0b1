"""`moesim run` / `moesim validate`: the results contract, determinism and bad input."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import yaml

from experiments.cli import main

ROOT = Path(__file__).resolve().parents[1]
QUICKSTART = ROOT / "experiments" / "examples" / "quickstart.yaml"

SMALL = {
    "name": "small",
    "seed": 3,
    "topology": {
        "kind": "leaf_spine",
        "leaves": 2,
        "spines": 2,
        "hosts_per_leaf": 2,
        "gpus_per_host": 2,
        "nic_bandwidth": "400Gbps",
        "uplink_bandwidth": "400Gbps",
        "link_latency": "500ns",
    },
    "workload": {"kind": "collective", "op": "all_to_all", "size": "4MiB"},
    "transport": "ecmp",
}

CONTRACT = ["point", "seed", "completion_time_s", "max_link_utilization", "max_link_flows", "wall_time_s"]


def write(tmp_path: Path, data: dict, name: str = "exp.yaml") -> Path:
    path = tmp_path / name
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def edited(**changes: object) -> dict:
    """SMALL with dotted-path changes; a value of None deletes the key."""
    data = yaml.safe_load(yaml.safe_dump(SMALL))
    for dotted, value in changes.items():
        node = data
        *parents, last = dotted.split("__")
        for part in parents:
            node = node[part]
        if value is None:
            del node[last]
        else:
            node[last] = value
    return data


def test_quickstart_runs_and_writes_the_contract(tmp_path: Path) -> None:
    out = tmp_path / "qs"
    assert main(["run", str(QUICKSTART), "--out", str(out)]) == 0
    results = pd.read_parquet(out / "results.parquet")
    assert set(CONTRACT) <= set(results.columns)
    assert "transport" in results.columns
    assert list(results["point"]) == list(range(len(results)))
    assert (results["completion_time_s"] > 0).all()
    assert ((results["max_link_utilization"] > 0) & (results["max_link_utilization"] <= 1 + 1e-9)).all()
    by_transport = results.set_index("transport")["completion_time_s"]
    # Spraying balances a 1:1 fabric perfectly; ECMP collides, so it cannot be faster.
    assert by_transport["ecmp"] >= by_transport["spray"]
    for table in ("flows", "links", "ops"):
        detail = pd.read_parquet(out / f"{table}.parquet")
        assert "point" in detail.columns and len(detail) > 0
    resolved = yaml.safe_load((out / "experiment.yaml").read_text())
    assert "moesim_version" in resolved and resolved["name"] == "quickstart"


def test_validate_counts_points(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["validate", str(QUICKSTART)]) == 0
    assert "4 points" in capsys.readouterr().out


def test_same_file_and_seed_give_identical_results(tmp_path: Path) -> None:
    exp = write(tmp_path, SMALL)
    frames = []
    for run in ("a", "b"):
        assert main(["run", str(exp), "--out", str(tmp_path / run)]) == 0
        frames.append(
            {t: pd.read_parquet(tmp_path / run / f"{t}.parquet") for t in ("results", "flows", "links")}
        )
    # wall_time_s measures the host, not the simulation: everything else is bit-identical.
    pd.testing.assert_frame_equal(
        frames[0]["results"].drop(columns="wall_time_s"),
        frames[1]["results"].drop(columns="wall_time_s"),
        rtol=0,
    )
    pd.testing.assert_frame_equal(frames[0]["flows"], frames[1]["flows"], rtol=0)
    pd.testing.assert_frame_equal(frames[0]["links"], frames[1]["links"], rtol=0)


def test_another_seed_changes_ecmp_paths(tmp_path: Path) -> None:
    paths = []
    for seed in (1, 2):
        exp = write(tmp_path, edited(seed=seed), f"s{seed}.yaml")
        assert main(["run", str(exp), "--out", str(tmp_path / f"s{seed}")]) == 0
        flows = pd.read_parquet(tmp_path / f"s{seed}" / "flows.parquet")
        paths.append(flows[["src", "dst", "link1", "link2"]].sort_values(["src", "dst"]).to_numpy())
    assert (paths[0] != paths[1]).any()


BAD = [
    (edited(topology__nic_bw="400Gbps"), "topology.nic_bw: unknown key"),
    (edited(topology__nic_bandwidth="400Gbs"), 'topology.nic_bandwidth: "400Gbs" is not a bandwidth (try'),
    (edited(topology__nic_bandwidth=400), None),  # a plain number is bytes/s: valid
    (edited(topology__nic_bandwidth="-400Gbps"), "topology.nic_bandwidth: "),
    (edited(topology__link_latency="500"), None),  # plain number = seconds: valid
    (edited(topology__link_latency="5 parsecs"), "topology.link_latency: "),
    (edited(workload__size="16MB/s"), "workload.size: "),
    (edited(topology__leaves="two"), "topology.leaves: "),
    (edited(topology__leaves=0), "topology.leaves: "),
    (
        edited(topology__rail_optimized=True, topology__leaves=3),
        "topology.leaves: a rail-optimized fabric needs",
    ),
    (edited(topology__nic_bandwidth=None), "topology.nic_bandwidth: required key is missing"),
    (edited(workload__op="all_to_some"), "workload.op: "),
    (edited(workload__algorithm="hierarchical"), "workload.algorithm: hierarchical does not apply"),
    (
        edited(topology__gpu="A100", workload__op="all_reduce", workload__algorithm="nvls_tree"),
        "workload.algorithm: nvls_tree needs an NVLink domain with NVLink SHARP",
    ),
    (
        edited(workload__op="all_reduce", workload__algorithm="pat"),
        "workload.algorithm: pat does not apply to op all_reduce (try auto or ring or tree or nvls",
    ),
    (
        edited(workload__op="all_gather", workload__algorithm="pat"),
        "workload.algorithm: pat needs one rank per host (this communicator has 2; try ring)",
    ),
    (edited(workload__op="all_gather", workload__algorithm="pat", workload__ranks="one_per_host"), None),
    (
        edited(workload__op="permutation", workload__protocol="LL"),
        "workload.protocol: needs an NCCL algorithm",
    ),
    (edited(workload__protocol="LL"), None),  # the default algorithm is auto: LL pins NCCL's protocol
    (edited(workload__algorithm="direct", workload__protocol="LL64"), "workload.protocol: 'LL64' is not"),
    (edited(workload__algorithm="direct", workload__channels=0), "workload.channels: must be >= 1"),
    (edited(topology__gpu="V100"), "topology.gpu: 'V100' is not allowed"),
    (edited(transport="spray2"), 'transport: "spray2" is not a transport'),
    (edited(sweep={"transport": []}), "sweep.transport: empty list"),
    (edited(sweep={"workload.sise": ["1MiB"]}), "sweep.workload.sise: not a key of the experiment"),
    (edited(sweep={"workload.size": ["1MiB", "2Mib"]}), "sweep.workload.size: "),
]


@pytest.mark.parametrize(("data", "expected"), BAD)
def test_bad_input_is_one_line_naming_the_field(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], data: dict, expected: str | None
) -> None:
    exp = write(tmp_path, data)
    out = tmp_path / "out"
    status = main(["run", str(exp), "--out", str(out)])
    err = capsys.readouterr().err
    if expected is None:
        assert status == 0, err
        return
    assert status == 2
    assert err.count("\n") == 1 and err.startswith("moesim: error: ")
    assert expected in err, err
    assert not out.exists()
    assert not any(p.name.startswith(".out.partial") for p in tmp_path.iterdir())


def test_yaml_syntax_error_names_the_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    exp = tmp_path / "broken.yaml"
    exp.write_text("name: x\ntopology: {leaves: 2,\n  spines: [\nworkload: 3\n")
    assert main(["validate", str(exp)]) == 2
    err = capsys.readouterr().err
    assert "YAML syntax error at line" in err and err.count("\n") == 1


def test_missing_file_and_bad_command_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["run", str(tmp_path / "nope.yaml"), "--out", str(tmp_path / "o")]) == 2
    assert "cannot read the file" in capsys.readouterr().err
    assert main(["run", str(QUICKSTART)]) == 2
    assert "--out" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


def test_console_script_exits_2_without_traceback(tmp_path: Path) -> None:
    exp = write(tmp_path, edited(topology__uplink_bandwidth="fast"))
    proc = subprocess.run(
        [sys.executable, "-m", "experiments", "run", str(exp), "--out", str(tmp_path / "o")],
        capture_output=True,
        text=True,
        cwd=ROOT,
    )
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    assert proc.stderr.strip().startswith("moesim: error: topology.uplink_bandwidth:")
