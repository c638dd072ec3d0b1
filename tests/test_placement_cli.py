"""Placement in experiments and on the command line: ``moesim place``, ``placement: ilp`` solved once
per run, fit/held-out splits, and ExFlow-style token homes that make inter-layer affinity pay."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from experiments.cli import main
from placement.layout import round_robin
from simulator.engine import simulate
from simulator.transport import parse_transport
from topologies.compiled import compile_fabric
from topologies.leaf_spine import LeafSpine
from workloads.kernel_model import GPUS, RooflineGEMM
from workloads.moe import MoEError, moe_programs
from workloads.routing_trace import RoutingTrace, save_trace
from workloads.synthetic_trace import synth_trace

COLLECTIVE = "workload: {kind: collective, op: all_reduce, size: 1MiB}\n"
TOPOLOGY = (
    "topology: {kind: leaf_spine, leaves: 2, spines: 2, hosts_per_leaf: 1, gpus_per_host: 4,\n"
    "           nic_bandwidth: 400Gbps, uplink_bandwidth: 800Gbps}\n"
)


def write_experiment(path: Path, body: str) -> Path:
    path.write_text(f"name: t\n{TOPOLOGY}{body}")
    return path


@pytest.fixture(scope="module")
def trace_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    trace = synth_trace(
        experts=16,
        top_k=2,
        layers=3,
        tokens_per_gpu=128,
        gpus=8,
        imbalance=1.0,
        affinity=0.6,
        batches=4,
        hidden=256,
        bytes_per_element=2,
        seed=3,
    )
    path = tmp_path_factory.mktemp("trace") / "t.npz"
    save_trace(trace, path)
    return path


def test_place_writes_a_placement_that_experiments_read(
    tmp_path: Path, trace_file: Path, capsys: pytest.CaptureFixture
) -> None:
    topo = write_experiment(
        tmp_path / "topo.yaml", "workload: {kind: collective, op: all_reduce, size: 1MiB}\n"
    )
    out = tmp_path / "ilp.json"
    argv = ["place", "--trace", str(trace_file), "--topology", str(topo), "--method", "ilp"]
    assert main([*argv, "--time-limit", "5s", "--fit", "0.5", "--solver", "cbc", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "gap" in printed and "held out:" in printed and "fit:" in printed
    document = json.loads(out.read_text())
    assert document["method"] == "ilp" and document["ilp"]["objective"] <= document["ilp"]["warm_objective"]
    assert document["fit"]["tokens"] == 512  # the first 2 of 4 batches of 1024 tokens
    experiment = write_experiment(
        tmp_path / "moe.yaml",
        f"workload: {{kind: moe, trace: {trace_file}, hidden: 256}}\nplacement: {out}\n",
    )
    assert main(["run", str(experiment), "--out", str(tmp_path / "run"), "--workers", "1"]) == 0
    results = pd.read_parquet(tmp_path / "run" / "results.parquet")
    assert results["error"].isna().all() and results["layer_time_s"].iloc[0] > 0


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--method", "bogus"], "--method 'bogus' is not a method"),
        (["--method", "ilp", "--time-limit", "0s"], "--time-limit must be > 0"),
        (["--method", "ilp", "--time-limit", "fast"], "--time-limit"),
        (["--method", "greedy", "--fit", "1.5"], "--fit must be between 0 and 1"),
        (["--method", "eplb:x"], "is not a method"),
    ],
)
def test_place_bad_arguments_exit_2_with_one_line(
    tmp_path: Path, trace_file: Path, capsys: pytest.CaptureFixture, extra: list[str], message: str
) -> None:
    topo = write_experiment(
        tmp_path / "topo.yaml", "workload: {kind: collective, op: all_reduce, size: 1MiB}\n"
    )
    out = tmp_path / "p.json"
    assert (
        main(["place", "--trace", str(trace_file), "--topology", str(topo), *extra, "--out", str(out)]) == 2
    )
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1
    assert not out.exists()


def test_place_infeasible_request_names_the_constraint(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    trace = synth_trace(
        experts=12, top_k=2, layers=2, tokens_per_gpu=32, gpus=8, hidden=64, bytes_per_element=2, seed=0
    )
    path = tmp_path / "t12.npz"
    save_trace(trace, path)
    topo = write_experiment(
        tmp_path / "topo.yaml", "workload: {kind: collective, op: all_reduce, size: 1MiB}\n"
    )
    for method in ("ilp", "greedy", "round_robin"):
        argv = ["place", "--trace", str(path), "--topology", str(topo), "--method", method]
        assert main([*argv, "--out", str(tmp_path / "p.json")]) == 2
        err = capsys.readouterr().err.strip()
        assert "12 experts" in err and "8 GPUs" in err and len(err.splitlines()) == 1
    assert not (tmp_path / "p.json").exists()


def test_ilp_in_a_sweep_is_solved_once_and_shared(tmp_path: Path) -> None:
    experiment = write_experiment(
        tmp_path / "moe.yaml",
        "workload:\n  kind: moe\n  hidden: 256\n  token_home: top_expert\n"
        "  synth: {experts: 16, top_k: 2, layers: 3, tokens_per_gpu: 64, imbalance: 1.0, affinity: 0.6,"
        " batches: 2}\n"
        "placement_fit: 0.5\nilp: {time_limit: 3s, solver: cbc}\n"
        "record: {flows: false, timeline: false}\n"
        "sweep: {placement: [round_robin, ilp], transport: [ecmp, spray]}\n",
    )
    out = tmp_path / "run"
    assert main(["run", str(experiment), "--out", str(out), "--workers", "2"]) == 0
    saved = sorted((out / "placements").glob("ilp-*.json"))
    assert len(saved) == 1  # one trace and fabric: the two transports share one solve
    before = saved[0].read_bytes()
    results = pd.read_parquet(out / "results.parquet").sort_values("point")
    assert results["error"].isna().all()
    assert (results["fit_tokens"] == 256).all() and (results["run_tokens"] == 256).all()
    for column in ("layer_time_s", "dispatch_time_s", "combine_time_s", "a2a_tail_s", "cross_host_bytes"):
        assert (results[column] > 0).all(), column
    assert (results["load_ratio"] >= 1).all()
    # --resume reuses the saved placement rather than solving again
    for chunk in (out / "points").glob("chunk-*"):  # every point runs again
        chunk.unlink()
    assert main(["run", str(experiment), "--out", str(out), "--resume"]) == 0
    assert saved[0].read_bytes() == before
    again = pd.read_parquet(out / "results.parquet").sort_values("point")
    assert again["completion_time_s"].tolist() == results["completion_time_s"].tolist()


def test_validate_rejects_top_expert_with_hierarchical_dispatch(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    experiment = write_experiment(
        tmp_path / "moe.yaml",
        "workload:\n  kind: moe\n  hidden: 256\n  token_home: top_expert\n  dispatch: hierarchical\n"
        "  synth: {experts: 16, top_k: 2, layers: 2, tokens_per_gpu: 16}\n",
    )
    assert main(["validate", str(experiment)]) == 2
    err = capsys.readouterr().err
    assert "token_home" in err and "dispatch: direct" in err


def test_placement_fit_needs_two_tokens(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    experiment = write_experiment(
        tmp_path / "moe.yaml",
        "workload:\n  kind: moe\n  hidden: 256\n"
        "  synth: {experts: 8, top_k: 1, layers: 1, tokens_per_gpu: 1}\nplacement_fit: 1.5\n",
    )
    assert main(["validate", str(experiment)]) == 2
    assert "placement_fit" in capsys.readouterr().err


# ---------------------------------------------------------------------------------------------
# token homes


def _two_gpu_trace(experts: list[list[int]]) -> RoutingTrace:
    """Top-1 routing of tokens that all start on GPU 0, ``experts[layer][token]``."""
    ids = np.asarray(experts, dtype=np.int64)[:, :, None]
    return RoutingTrace(
        experts=ids,
        source_gpu=np.zeros(ids.shape[1], dtype=np.int32),
        num_experts=4,
        top_k=1,
        layers=ids.shape[0],
        gpus=2,
        hidden=1024,
        bytes_per_element=2,
    )


def _network_bytes(trace: RoutingTrace, token_home: str) -> tuple[float, float]:
    spec = LeafSpine(
        leaves=1, spines=1, hosts_per_leaf=2, gpus_per_host=1, nic_bandwidth=1e9, uplink_bandwidth=1e9,
        nvlink_bandwidth=1e10, link_latency=0.0, message_latency=0.0, nvlink_message_latency=0.0,
    )  # fmt: skip
    programs = moe_programs(
        trace,
        round_robin(4, 2, trace.layers),  # experts 0, 1 on GPU 0; experts 2, 3 on GPU 1
        spec,
        RooflineGEMM(GPUS["h100"]),
        hidden=1024,
        ffn_hidden=1024,
        bytes_per_element=2,
        token_home=token_home,
    )
    result = simulate(compile_fabric(spec), programs, parse_transport("ecmp"))
    messages = result.messages()
    return float(messages["bytes"].sum()), result.completion_time


def test_top_expert_home_keeps_affine_tokens_where_their_experts_are() -> None:
    # three tokens from GPU 0: every layer's expert lives on GPU 1
    trace = _two_gpu_trace([[2, 3, 2], [3, 2, 3], [2, 2, 3]])
    token = 1024 * 2
    source_bytes, source_time = _network_bytes(trace, "source")
    home_bytes, home_time = _network_bytes(trace, "top_expert")
    assert source_bytes == pytest.approx(3 * 2 * 3 * token)  # out and back, 3 layers, 3 tokens
    assert home_bytes == pytest.approx(2 * 3 * token)  # out at layer 0, back after layer 2
    assert home_time < source_time


def test_top_expert_home_pays_for_tokens_that_change_gpu() -> None:
    # alternate GPUs every layer: the token goes GPU 1 -> GPU 0 -> GPU 1 -> back to its source GPU 0
    trace = _two_gpu_trace([[2], [0], [3]])
    token = 1024 * 2
    home_bytes, _ = _network_bytes(trace, "top_expert")
    assert home_bytes == pytest.approx(4 * token)
    with pytest.raises(MoEError, match="token_home"):
        moe_programs(
            trace,
            round_robin(4, 2, 3),
            LeafSpine(
                leaves=1,
                spines=1,
                hosts_per_leaf=2,
                gpus_per_host=1,
                nic_bandwidth=1e9,
                uplink_bandwidth=1e9,
                nvlink_bandwidth=1e10,
            ),  # fmt: skip
            RooflineGEMM(GPUS["h100"]),
            hidden=1024,
            ffn_hidden=1024,
            bytes_per_element=2,
            token_home="elsewhere",
        )


def test_home_transitions_count_first_expert_to_every_next_expert() -> None:
    from placement.stats import placement_stats
    from workloads.routing_trace import home_transitions, transitions

    trace = RoutingTrace(
        experts=np.array([[[0, 1], [2, 3]], [[2, 3], [0, 1]]]),
        source_gpu=np.array([0, 1], dtype=np.int32),
        num_experts=4,
        top_k=2,
        layers=2,
        gpus=2,
        hidden=8,
        bytes_per_element=2,
    )
    home = home_transitions(trace, 0)
    assert home[0].tolist() == [0, 0, 1, 1] and home[2].tolist() == [1, 1, 0, 0]
    assert home[1].sum() == 0 and home[3].sum() == 0  # only first experts are homes
    assert transitions(trace, 0)[1].tolist() == [0, 0, 0, 1]  # slot-matched: 1 -> 3
    assert placement_stats(trace, "home").transitions[0].tolist() == home.tolist()
    with pytest.raises(ValueError, match="slot or home"):
        placement_stats(trace, "nearest")
