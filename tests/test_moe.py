"""MoE layer programs: closed forms, local tokens, hierarchical dispatch, replicas, placements."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from placement.layout import Placement, PlacementError, load_placement, round_robin
from simulator.engine import simulate
from simulator.transport import parse_transport
from topologies.compiled import compile_fabric
from topologies.leaf_spine import LeafSpine
from workloads.kernel_model import GPUS, RooflineGEMM
from workloads.moe import MoEError, moe_programs, route_layer
from workloads.routing_trace import RoutingTrace

SHARED = Path(__file__).resolve().parent / "data"
KERNEL = RooflineGEMM(GPUS["h100"])
HIDDEN = 4096


def fabric(gpus_per_host: int = 4, hosts: int = 2, latency: float = 0.0) -> LeafSpine:
    return LeafSpine(
        leaves=hosts,
        spines=4,
        hosts_per_leaf=1,
        gpus_per_host=gpus_per_host,
        nic_bandwidth=50e9,
        uplink_bandwidth=50e9 * gpus_per_host / 4,
        nvlink_bandwidth=450e9,
        link_latency=latency,
        message_latency=latency * 4,
        nvlink_message_latency=latency * 2,
    )


def make_trace(experts: np.ndarray, source_gpu: np.ndarray, num_experts: int, gpus: int) -> RoutingTrace:
    experts = np.asarray(experts, dtype=np.int64)
    if experts.ndim == 2:
        experts = experts[None]
    return RoutingTrace(
        experts=experts,
        source_gpu=np.asarray(source_gpu, dtype=np.int32),
        num_experts=num_experts,
        top_k=experts.shape[2],
        layers=experts.shape[0],
        gpus=gpus,
        hidden=HIDDEN,
        bytes_per_element=2,
    )


def uniform_trace(gpus: int = 8, per_gpu: int = 64, layers: int = 1) -> RoutingTrace:
    """Top-1 routing where every GPU sends the same number of tokens to every expert."""
    tokens = gpus * per_gpu
    layer = (np.arange(tokens) % gpus)[:, None]
    return make_trace(np.stack([layer] * layers), np.repeat(np.arange(gpus), per_gpu), gpus, gpus)


def run(trace: RoutingTrace, placement: Placement, spec: LeafSpine, transport: str = "spray", **kw):
    programs = moe_programs(
        trace, placement, spec, KERNEL, hidden=HIDDEN, ffn_hidden=HIDDEN, bytes_per_element=2, **kw
    )
    return simulate(compile_fabric(spec), programs, parse_transport(transport))


@pytest.mark.parametrize("layers", [1, 3])
def test_uniform_routing_matches_closed_form(layers: int) -> None:
    latency = 5e-7
    spec = fabric(latency=latency)
    trace = uniform_trace(layers=layers)
    result = run(trace, round_robin(8, 8, layers), spec)
    per_pair = 64 / 8 * HIDDEN * 2  # tokens from one GPU to one expert x bytes per token
    remote = 4  # GPUs on the other host
    alpha = (
        spec.message_latency + 4 * latency
    )  # NIC tier: alpha + propagation over NIC, leaf, spine, leaf, NIC
    a2a = alpha + remote * per_pair / spec.nic_bandwidth
    compute = KERNEL.gpu_time(np.array([64]), HIDDEN, HIDDEN)
    assert result.completion_time == pytest.approx(layers * (2 * a2a + compute), rel=1e-9)


def test_tokens_whose_expert_is_local_cost_no_network() -> None:
    gpus = 8
    source = np.repeat(np.arange(gpus), 32)
    trace = make_trace(source[:, None], source, gpus, gpus)  # every token's expert is on its own GPU
    result = run(trace, round_robin(gpus, gpus, 1), fabric())
    assert len(result.fabric.messages) == 0
    assert result.links()["bytes"].sum() == 0
    assert result.completion_time == pytest.approx(KERNEL.gpu_time(np.array([32]), HIDDEN, HIDDEN), rel=1e-12)


def test_one_copy_per_destination_gpu_and_host() -> None:
    # token 0 on GPU 0 picks experts 4 and 5: both on GPU 2 (2 experts per GPU), then 4 and 6 (GPUs 2, 3)
    trace = make_trace([[4, 5], [4, 6]], [0, 0], 8, 4)
    traffic = route_layer(trace, round_robin(8, 4, 1), 0, gpus_per_host=2)
    assert traffic.dispatch[0].tolist() == [0, 0, 2, 1]  # token 0 once to GPU 2; token 1 to GPUs 2 and 3
    assert traffic.host_copies[0].tolist() == [0, 2]  # one copy per token to host 1
    assert traffic.slot_tokens.tolist() == [0, 0, 0, 0, 2, 1, 1, 0]


def test_hierarchical_dispatch_sends_one_copy_per_host_over_the_nic() -> None:
    spec = fabric(gpus_per_host=4)
    rng = np.random.default_rng(0)
    tokens = 8 * 50
    experts = np.stack([rng.choice(16, size=4, replace=False) for _ in range(tokens)])
    trace = make_trace(experts, np.repeat(np.arange(8), 50), 16, 8)
    placement = round_robin(16, 8, 1)
    direct = run(trace, placement, spec, hierarchical=False)
    hier = run(trace, placement, spec, hierarchical=True)
    nic = lambda r: r.links().query("kind == 'nic_up'")["bytes"].sum()  # noqa: E731
    traffic = route_layer(trace, placement, 0, 4)
    host = np.arange(8) // 4
    remote_hosts = sum(traffic.host_copies[s, h] for s in range(8) for h in range(2) if h != host[s])
    assert nic(hier) == pytest.approx(2 * remote_hosts * HIDDEN * 2)  # dispatch + combine
    assert nic(hier) < nic(direct)
    assert hier.completion_time > 0


def test_replicas_split_tokens_by_weight() -> None:
    # expert 0 has two replicas (slots on GPU 0 and GPU 1) with shares 1/4 and 3/4
    phy2log = np.array([[0, 1, 0, 2, 3, 3]])
    weight = np.array([[0.25, 1.0, 0.75, 1.0, 0.5, 0.5]])
    placement = Placement(phy2log, gpus=3, experts=4, weight=weight)
    tokens = 4000
    trace = make_trace(np.zeros((tokens, 1), dtype=np.int64), np.zeros(tokens), 4, 3)
    slots = route_layer(trace, placement, 0, gpus_per_host=3).slot_tokens
    assert slots[0] + slots[2] == tokens
    assert slots[0] / tokens == pytest.approx(0.25, abs=2e-3)


def test_placement_validation() -> None:
    with pytest.raises(PlacementError, match="places no slot for expert 3"):
        Placement(np.array([[0, 1, 2, 2]]), gpus=2, experts=4)
    with pytest.raises(PlacementError, match="cannot be split equally"):
        Placement(np.array([[0, 1, 2]]), gpus=2, experts=3)
    with pytest.raises(PlacementError, match="shares sum to"):
        Placement(np.array([[0, 0, 1, 2]]), gpus=2, experts=3, weight=np.array([[0.5, 0.4, 1, 1]]))
    with pytest.raises(PlacementError, match="without replicas"):
        round_robin(experts=6, gpus=4, layers=1)


def test_exflow_csv_placement_loads() -> None:
    path = next(SHARED.glob("solution_intra4_inter1_*.csv"))
    placement = load_placement(path, experts=8, layers=32, gpus=4)
    assert placement.layers == 32 and placement.slots_per_gpu == 2
    assert all((placement.replicas(layer) == 1).all() for layer in range(32))
    with pytest.raises(PlacementError, match="placement is for 4 GPUs but the trace has 8"):
        load_placement(path, experts=8, layers=32, gpus=8)


def test_placement_json_round_trip(tmp_path: Path) -> None:
    import json

    original = Placement(np.array([[0, 1, 0, 2], [2, 1, 0, 1]]), gpus=2, experts=3, method="test")
    path = tmp_path / "p.json"
    path.write_text(json.dumps(original.to_json()))
    loaded = load_placement(path, experts=3, layers=2, gpus=2)
    assert (loaded.phy2log == original.phy2log).all() and np.allclose(loaded.weight, original.weight)
    path.write_text("{not json")
    with pytest.raises(PlacementError, match="not JSON"):
        load_placement(path, experts=3, layers=2, gpus=2)


def test_trace_larger_than_fabric_is_an_error() -> None:
    trace = uniform_trace(gpus=16)
    with pytest.raises(MoEError, match="16 GPUs but the fabric has 8"):
        run(trace, round_robin(16, 16, 1), fabric())


# ------------------------------------------------------------------------------- from the command line

MOE_YAML = {
    "name": "moe",
    "topology": {
        "leaves": 2,
        "spines": 4,
        "hosts_per_leaf": 1,
        "gpus_per_host": 4,
        "nic_bandwidth": "400Gbps",
        "uplink_bandwidth": "400Gbps",
    },
    "workload": {
        "kind": "moe",
        "hidden": 512,
        "ffn_hidden": 256,
        "synth": {"experts": 16, "top_k": 2, "layers": 2, "tokens_per_gpu": 64, "imbalance": 0.5},
    },
}


def _yaml(tmp_path: Path, data: dict, name: str = "moe.yaml") -> Path:
    import yaml

    path = tmp_path / name
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def test_moe_experiment_runs_from_synth_and_from_a_trace_file(tmp_path: Path) -> None:
    import copy

    import pandas as pd

    from experiments.cli import main

    exp = _yaml(tmp_path, {**MOE_YAML, "sweep": {"workload.dispatch": ["direct", "hierarchical"]}})
    assert main(["run", str(exp), "--out", str(tmp_path / "synth"), "--workers", "1"]) == 0
    synth = pd.read_parquet(tmp_path / "synth" / "results.parquet")
    assert len(synth) == 2 and (synth["completion_time_s"] > 0).all() and synth["error"].isna().all()
    ops = pd.read_parquet(tmp_path / "synth" / "ops.parquet")
    assert {"moe0/dispatch", "moe0/experts", "moe1/combine"} <= set(ops["label"])

    # the same trace written to a file and read back (path relative to the experiment file) gives the same run
    trace_dir = tmp_path / "traces"
    trace_dir.mkdir()
    assert (
        main(
            [
                "trace",
                "synth",
                "--out",
                str(trace_dir / "t.npz"),
                "--experts",
                "16",
                "--top-k",
                "2",
                "--layers",
                "2",
                "--tokens-per-gpu",
                "64",
                "--gpus",
                "8",
                "--imbalance",
                "0.5",
                "--hidden",
                "512",
                "--seed",
                "0",
            ]
        )
        == 0
    )
    from_file = copy.deepcopy(MOE_YAML)
    del from_file["workload"]["synth"]
    from_file["workload"]["trace"] = "traces/t.npz"
    exp2 = _yaml(
        tmp_path, {**from_file, "sweep": {"workload.dispatch": ["direct", "hierarchical"]}}, "file.yaml"
    )
    assert main(["run", str(exp2), "--out", str(tmp_path / "file"), "--workers", "1"]) == 0
    read = pd.read_parquet(tmp_path / "file" / "results.parquet")
    assert read["completion_time_s"].tolist() == synth["completion_time_s"].tolist()


def test_moe_experiment_with_an_exflow_placement_file(tmp_path: Path) -> None:
    import pandas as pd

    from experiments.cli import main

    csv = next(SHARED.glob("solution_intra4_inter1_*.csv"))  # Mixtral: 32 layers x 8 experts on 4 GPUs
    data = {
        **MOE_YAML,
        "topology": {**MOE_YAML["topology"], "leaves": 1, "spines": 1},
        "workload": {
            "kind": "moe",
            "hidden": 512,
            "synth": {"experts": 8, "top_k": 2, "layers": 3, "tokens_per_gpu": 32},
        },
        "placement": str(csv),
    }
    assert main(["run", str(_yaml(tmp_path, data)), "--out", str(tmp_path / "o"), "--workers", "1"]) == 0
    assert pd.read_parquet(tmp_path / "o" / "results.parquet")["completion_time_s"].iloc[0] > 0


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (
            {"synth": {"experts": 6, "top_k": 2, "layers": 2, "tokens_per_gpu": 8}},
            "placement: round_robin: 6 experts",
        ),
        ({"trace": "missing.npz", "synth": None}, "workload.trace: missing.npz does not exist"),
        (
            {"synth": {"experts": 16, "top_k": 20, "layers": 2, "tokens_per_gpu": 8}},
            "workload.synth.top_k: 20 is more",
        ),
        ({"dispatch": "tree"}, "workload.dispatch: 'tree' is not allowed"),
    ],
)
def test_bad_moe_experiments_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], change: dict, message: str
) -> None:
    from experiments.cli import main

    workload = {k: v for k, v in {**MOE_YAML["workload"], **change}.items() if v is not None}
    exp = _yaml(tmp_path, {**MOE_YAML, "workload": workload})
    assert main(["run", str(exp), "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and message in err, err
    assert not (tmp_path / "o").exists()


def test_placement_that_does_not_fit_the_trace_exits_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from experiments.cli import main

    csv = next(SHARED.glob("solution_intra4_inter1_*.csv"))  # made for 4 GPUs
    data = {**MOE_YAML, "placement": str(csv)}  # the trace spreads tokens over the fabric's 8 GPUs
    assert main(["validate", str(_yaml(tmp_path, data))]) == 2
    assert "placement is for 4 GPUs but the trace has 8" in capsys.readouterr().err


def test_placement_methods_by_name_from_an_experiment(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import pandas as pd

    from experiments.cli import main

    data = {**MOE_YAML, "sweep": {"placement": ["round_robin", "random", "greedy", "eplb", "eplb:8"]}}
    assert main(["run", str(_yaml(tmp_path, data)), "--out", str(tmp_path / "o"), "--workers", "1"]) == 0
    results = pd.read_parquet(tmp_path / "o" / "results.parquet")
    assert results["error"].isna().all() and (results["completion_time_s"] > 0).all()
    assert list(results["placement"]) == ["round_robin", "random", "greedy", "eplb", "eplb:8"]
    bad = {**MOE_YAML, "placement": "ilpp"}
    assert main(["validate", str(_yaml(tmp_path, bad, "bad.yaml"))]) == 2
    assert 'placement: "ilpp" is neither a placement method' in capsys.readouterr().err


# ------------------------------------------------------------------------------- measured kernel tables


def _table(tmp_path: Path, rows: list[str]) -> Path:
    path = tmp_path / "gemm.csv"
    path.write_text("op,m,n,k,dtype,time_us\n" + "\n".join(rows) + "\n")
    return path


def test_measured_table_interpolates_and_extrapolates(tmp_path: Path) -> None:
    from workloads.kernel_model import MeasuredGEMM

    # gate/up: n=ffn=256, k=hidden=512; down: n=512, k=256. Times linear in m: a + b*m.
    rows = [f"gemm,{m},256,512,bf16,{10 + 0.5 * m}" for m in (64, 128, 512)]
    rows += [f"gemm,{m},512,256,bf16,{8 + 0.25 * m}" for m in (64, 128, 512)]
    table = MeasuredGEMM.from_csv(str(_table(tmp_path, rows)), launch=0.0)
    for t in (64, 100, 300, 1024):  # inside, between and beyond the measured sizes
        expected = (2 * (10 + 0.5 * t) + (8 + 0.25 * t)) * 1e-6
        assert table.expert_time(np.array([t]), 512, 256)[0] == pytest.approx(expected, rel=1e-12)
    assert table.expert_time(np.array([0]), 512, 256)[0] == 0.0
    assert table.gpu_time(np.array([64, 0, 128]), 512, 256) == pytest.approx(
        (2 * 42 + 24 + 2 * 74 + 40) * 1e-6, rel=1e-12
    )


@pytest.mark.parametrize(
    ("rows", "message"),
    [
        (["gemm,64,256,512,bf16,abc"], "line 2: expected op,m,n,k,dtype,time_us"),
        (["gemm,0,256,512,bf16,3"], "line 2: m, n, k and time_us must be positive"),
        (["gemm,64,999,512,bf16,3"], "no GEMM with n=256, k=512"),
    ],
)
def test_bad_kernel_tables_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], rows: list[str], message: str
) -> None:
    from experiments.cli import main

    table = _table(tmp_path, rows)
    data = {**MOE_YAML, "workload": {**MOE_YAML["workload"], "kernel_table": str(table)}}
    assert main(["validate", str(_yaml(tmp_path, data))]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "workload.kernel_table:" in err and message in err, err


def test_experiment_with_a_kernel_table(tmp_path: Path) -> None:
    import pandas as pd

    from experiments.cli import main

    rows = [
        f"gemm,{m},{n},{k},bf16,{t}" for m in (16, 256) for (n, k, t) in ((256, 512, 20.0), (512, 256, 15.0))
    ]
    data = {**MOE_YAML, "workload": {**MOE_YAML["workload"], "kernel_table": str(_table(tmp_path, rows))}}
    assert main(["run", str(_yaml(tmp_path, data)), "--out", str(tmp_path / "o"), "--workers", "1"]) == 0
    ops = pd.read_parquet(tmp_path / "o" / "ops.parquet")
    experts = ops[ops["label"] == "moe0/experts"]
    assert ((experts["end"] - experts["start"]) > 0).all()
