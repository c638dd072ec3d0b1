"""Replay with NCCL's algorithm and protocol: kernel names, one NCCL routing point, DeepEP options
only for DeepEP traces, per-rank trace sets and the launch-bound verdict."""

from __future__ import annotations

import dataclasses
import gzip
import json
import shutil
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import trace_fixtures
import yaml
from conftest import DEEPSEEK, shared_data

import workloads.replay_comm as replay_module
from experiments.replay_command import main
from simulator.ops import Collective, Compute
from simulator.transport import parse_transport
from topologies.leaf_spine import LeafSpine
from workloads.kineto import KinetoError, KinetoTrace, classify, load_kineto, nccl_kernel, summary
from workloads.kineto_launch import launch_profile
from workloads.kineto_ranks import TraceSet, load_trace_set, match_collectives, rank_from_name
from workloads.replay import build_replay, simulate_replay
from workloads.replay_comm import CommModel, ReplayError, comm_schedule

DATA = Path(__file__).resolve().parent / "data" / "traces"
RANKS4 = DATA / "ranks4"
US = 1e-6
ECMP = parse_transport("ecmp")
QUAD = LeafSpine(  # 2 hosts x 2 GPUs
    leaves=2, spines=1, hosts_per_leaf=1, gpus_per_host=2,
    nic_bandwidth=50e9, uplink_bandwidth=50e9, nvlink_bandwidth=300e9,
)  # fmt: skip
QUAD_YAML = {
    "name": "quad",
    "seed": 0,
    "topology": {"kind": "leaf_spine", "leaves": 2, "spines": 1, "hosts_per_leaf": 1, "gpus_per_host": 2,
                 "nic_bandwidth": "400Gbps", "uplink_bandwidth": "400Gbps", "nvlink_bandwidth": "300GB/s"},
    "workload": {"kind": "collective", "op": "all_reduce", "size": "1MiB"},
    "transport": "ecmp",
}  # fmt: skip


def infinite(spec: LeafSpine) -> LeafSpine:
    """``spec`` with unbounded bandwidth and every latency 0: communication takes no time."""
    names = {f.name for f in dataclasses.fields(LeafSpine)}
    fast = {k: 1e30 for k in ("nic_bandwidth", "uplink_bandwidth", "nvlink_bandwidth")}
    zero = {k: 0.0 for k in names if k.endswith("latency")}
    return dataclasses.replace(spec, **fast, **zero)


def topology(tmp_path: Path) -> Path:
    path = tmp_path / "quad.yaml"
    path.write_text(yaml.safe_dump(QUAD_YAML, sort_keys=False))
    return path


def run_cli(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    code = main(argv)
    captured = capsys.readouterr()
    return code, captured.out, captured.err


# --------------------------------------------------------------------------------------------------
# 1. kernel names


NAMES = [
    ("ncclKernel_AllReduce_RING_LL_Sum_float(ncclDevComm*, unsigned long, ncclWork*)",
     "nccl_all_reduce", "ring", "LL"),
    ("ncclDevKernel_AllGather_RING_LL(ncclDevKernelArgsStorage<4096ul>)", "nccl_all_gather", "ring", "LL"),
    ("ncclDevKernel_AllReduce_Sum_f32_TREE_LL128(ncclDevKernelArgsStorage<4096ul>)",
     "nccl_all_reduce", "tree", "LL128"),
    ("ncclDevKernel_ReduceScatter_Sum_bf16_RING_SIMPLE(ncclDevKernelArgsStorage<4096ul>)",
     "nccl_reduce_scatter", "ring", "Simple"),
    ("ncclDevKernel_AllReduce_Sum_bf16_NVLS_SIMPLE(ncclDevKernelArgsStorage<4096ul>)",
     "nccl_all_reduce", "nvls", "Simple"),
    ("ncclDevKernel_AllReduce_Sum_f32_NVLS_TREE_SIMPLE(ncclDevKernelArgsStorage<4096ul>)",
     "nccl_all_reduce", "nvls_tree", "Simple"),
    ("ncclDevKernel_AllReduce_Sum_f16_COLLNET_DIRECT_SIMPLE(ncclDevKernelArgsStorage<4096ul>)",
     "nccl_all_reduce", "collnet_direct", "Simple"),
    ("ncclDevKernel_AllReduce_Sum_f16_COLLNET_CHAIN_SIMPLE(ncclDevKernelArgsStorage<4096ul>)",
     "nccl_all_reduce", "collnet_chain", "Simple"),
    ("ncclDevKernel_ReduceScatter_Sum_f32_PAT_SIMPLE(ncclDevKernelArgsStorage<4096ul>)",
     "nccl_reduce_scatter", "pat", "Simple"),
    ("ncclDevKernel_AllGather_PAT_SIMPLE(ncclDevKernelArgsStorage<4096ul>)",
     "nccl_all_gather", "pat", "Simple"),
    ("ncclDevKernel_SendRecv(ncclDevKernelArgsStorage<4096ul>)", "nccl_send_recv", None, None),
    ("ncclDevKernel_Generic_4(ncclDevKernelArgsStorage<4096ul>)", "nccl_other", None, None),
    ("ncclDevKernel_Generic(ncclDevKernelArgsStorage<4096ul>)", "nccl_other", None, None),
    ("ncclKernel_Broadcast_RING_LL_Sum_int8_t(ncclDevComm*, unsigned long, ncclWork*)",
     "nccl_broadcast", "ring", "LL"),
    ("ncclAllReduceRingLLKernel_sum_f32(CollectiveArgs)", "nccl_all_reduce", "ring", "LL"),
    ("ncclAllReduceTreeLL128Kernel_sum_f16(CollectiveArgs)", "nccl_all_reduce", "tree", "LL128"),
]  # fmt: skip


@pytest.mark.parametrize(("name", "op", "algorithm", "protocol"), NAMES)
def test_nccl_kernel_names(name: str, op: str, algorithm: str | None, protocol: str | None) -> None:
    assert nccl_kernel(name) == (op, algorithm, protocol)
    assert classify(name) == ("communication", op)


@pytest.mark.parametrize(
    "name",
    ["void dpsk::ep::internode::dispatch<false, 8, true, 8>(int4*)", "sm90_xmma_gemm_RING_LL", "Memcpy DtoD"],
)
def test_other_kernels_are_not_nccl(name: str) -> None:
    assert nccl_kernel(name) is None


def test_real_names_in_the_hta_excerpt() -> None:
    trace = load_kineto(DATA / "hta_nccl_kernels.json")
    comm = trace.communication
    assert {k.name.split("(")[0] for k in comm} == {
        "ncclKernel_AllReduce_RING_LL_Sum_float",
        "ncclKernel_Broadcast_RING_LL_Sum_int8_t",
    }
    assert sum(k.comm == "nccl_all_reduce" for k in comm) == 15
    assert sum(k.comm == "nccl_broadcast" for k in comm) == 6
    assert {(k.algorithm, k.protocol) for k in comm} == {("ring", "LL")}
    assert all(k.launch_end is not None and k.launch_end > k.launch for k in comm)
    assert {k.nbytes for k in comm if k.comm == "nccl_broadcast"} == {212480, 424}  # Float and Long


def test_real_names_in_the_full_traces() -> None:
    hta = load_kineto(shared_data("traces/hta_nccl_2rank_rank0.json.gz"))
    assert {(k.comm, k.algorithm, k.protocol) for k in hta.communication} == {
        ("nccl_all_reduce", "ring", "LL"),
        ("nccl_broadcast", "ring", "LL"),
    }
    deepseek = load_kineto(DEEPSEEK)
    assert {k.comm for k in deepseek.communication} == {"deepep_dispatch", "deepep_combine", "deepep_notify"}
    assert all(k.algorithm is None and k.protocol is None for k in deepseek.kernels)


# --------------------------------------------------------------------------------------------------
# 2. one NCCL routing point, algorithm and protocol in the outcome


def nccl_trace(tmp_path: Path, names: list[str], nbytes: int = 1 << 20, world: int = 4) -> KinetoTrace:
    """One stream of NCCL kernels named ``names``, each ``nbytes`` (float32), launched up front."""
    events = []
    for i, name in enumerate(names):
        meta = {"In msg nelems": nbytes // 4, "Out msg nelems": nbytes // 4, "dtype": "Float"}
        events.append(trace_fixtures.runtime("cudaLaunchKernel", -100.0 + i, 1.0, i + 1))
        events.append(trace_fixtures.kernel(name, 20, 100.0 * i, 50.0, i + 1, **meta))
    path = tmp_path / "nccl.json"
    data = {"distributedInfo": {"rank": 0, "world_size": world}, "traceEvents": events}
    path.write_text(json.dumps(data))
    return load_kineto(path)


ALL_OPS = [
    "ncclKernel_AllReduce_RING_LL_Sum_float(x)",
    "ncclDevKernel_AllReduce_Sum_f32_TREE_LL128(x)",
    "ncclDevKernel_AllGather_RING_LL(x)",
    "ncclDevKernel_ReduceScatter_Sum_bf16_RING_SIMPLE(x)",
    "ncclDevKernel_SendRecv(x)",
    "ncclKernel_Broadcast_RING_LL_Sum_int8_t(x)",
    "ncclKernel_Reduce_RING_LL_Sum_float(x)",
    "ncclDevKernel_Generic_4(x)",
]


def test_every_nccl_kernel_goes_through_one_function(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    trace = nccl_trace(tmp_path, ALL_OPS)
    calls = []
    real = replay_module._nccl_collective

    def spy(op, members, size, algorithm, protocol, spec, comm):  # noqa: ANN001, ANN202
        calls.append((op, tuple(members), size, algorithm, protocol))
        return real(op, members, size, algorithm, protocol, spec, comm)

    monkeypatch.setattr(replay_module, "_nccl_collective", spy)
    build_replay(trace, QUAD, ranks=4, comm=CommModel())
    assert Counter(calls) == Counter(
        [
            ("all_reduce", (0, 1, 2, 3), 1048576.0, "ring", "LL"),
            ("all_reduce", (0, 1, 2, 3), 1048576.0, "tree", "LL128"),
            ("all_gather", (0, 1, 2, 3), 1048576.0, "ring", "LL"),
            ("reduce_scatter", (0, 1, 2, 3), 1048576.0, "ring", "Simple"),
            ("send_recv", (0, 1, 2, 3), 1048576.0, None, None),
            ("broadcast", (0, 1, 2, 3), 1048576.0, "ring", "LL"),
            ("reduce", (0, 1, 2, 3), 1048576.0, "ring", "LL"),
            ("all_reduce", (0, 1, 2, 3), 1048576.0, None, None),
        ]
    )


def test_all_reduce_algorithm_and_protocol_follow_the_kernel() -> None:
    comm = CommModel()
    for algorithm, protocol in (("ring", "LL"), ("tree", "LL128"), ("ring", "Simple")):
        schedule = comm_schedule("nccl_all_reduce", comm, QUAD, 4, 1 << 20, algorithm, protocol)
        assert (schedule.algorithm, schedule.protocol) == (algorithm, protocol)
        assert schedule.name == "nccl_all_reduce"
    # NVLS needs NVLink SHARP inside one domain: on two hosts the kernel's choice cannot run, so
    # the replay runs what NCCL would choose there
    there = comm_schedule("nccl_all_reduce", comm, QUAD, 4, 1 << 20, "nvls", "Simple")
    assert there.algorithm != "nvls"
    # no name: NCCL's choice (auto), or moesim's own hierarchical all-reduce when asked for
    auto = comm_schedule("nccl_all_reduce", comm, QUAD, 4, 1 << 20, None, None)
    assert auto.algorithm in ("ring", "tree", "nvls_tree") and auto.protocol in ("LL", "LL128", "Simple")
    hier = comm_schedule("nccl_all_reduce", CommModel(nccl_algorithm="hierarchical"), QUAD, 4, 1 << 20)
    assert hier.algorithm is None and hier.n_steps == 2 * (2 - 1) + 2 * (2 - 1)


def test_outcome_says_which_algorithm_and_protocol(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    names = [
        "ncclKernel_AllReduce_RING_LL_Sum_float(x)",
        "ncclDevKernel_AllReduce_Sum_f32_TREE_LL128(x)",
        "ncclDevKernel_AllGather_RING_LL(x)",
        "ncclDevKernel_AllGather_RING_SIMPLE(x)",
        "ncclDevKernel_ReduceScatter_Sum_bf16_RING_SIMPLE(x)",
        "ncclDevKernel_Generic_4(x)",
    ]
    trace = nccl_trace(tmp_path, names)
    outcome = simulate_replay(trace, QUAD, ranks=4)
    named = {t.label: (t.algorithm, t.protocol, t.algo_proto, t.simulated_as) for t in outcome.labels}
    assert named == {
        "nccl_all_reduce": ("mixed", "mixed", "mixed", "all_reduce/ring+all_reduce/tree"),
        "nccl_all_gather": ("ring", "mixed", "ring/mixed", "all_gather/ring"),
        "nccl_reduce_scatter": ("ring", "Simple", "ring/Simple", "reduce_scatter/ring"),
        "nccl_other": (None, None, "?/?", "all_reduce/ring"),
    }
    code, out, _ = run_cli([str(tmp_path / "nccl.json"), "--topology", str(topology(tmp_path))], capsys)
    assert code == 0
    header = next(line for line in out.splitlines() if line.startswith("communication kernel"))
    assert "algo/proto" in header and "simulated as" in header
    row = next(line for line in out.splitlines() if line.startswith("nccl_reduce_scatter"))
    assert "ring/Simple" in row and "reduce_scatter/ring" in row


def test_hta_replay_names_ring_ll_and_is_launch_bound(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    path = shared_data("traces/hta_nccl_2rank_rank0.json.gz")
    code, out, err = run_cli([str(path), "--topology", str(topology(tmp_path))], capsys)  # no --direct
    assert code == 0, err
    rows = {line.split()[0]: line for line in out.splitlines() if line.startswith("nccl_")}
    assert "ring/LL" in rows["nccl_all_reduce"] and "all_reduce/ring" in rows["nccl_all_reduce"]
    assert "ring/LL" in rows["nccl_broadcast"]
    verdict = next(line for line in out.splitlines() if "bound:" in line)
    assert verdict.startswith("launch-bound: GPU busy 23.8% of the 660.551 ms span")
    assert "--respect-launch" in verdict


# --------------------------------------------------------------------------------------------------
# 3. DeepEP options only for DeepEP traces


def test_deepep_options_matter_only_with_deepep_kernels(tmp_path: Path) -> None:
    trace = nccl_trace(tmp_path, ["ncclKernel_AllReduce_RING_LL_Sum_float(x)"], world=3)
    silly = CommModel(top_k=999, experts=4, hidden=0, hierarchical=True)  # unusable for DeepEP
    build_replay(trace, QUAD, ranks=3, comm=silly)  # 3 ranks are not whole hosts of 2: fine without DeepEP
    events = [
        *json.loads((tmp_path / "nccl.json").read_text())["traceEvents"],
        trace_fixtures.runtime("cudaLaunchKernel", -10.0, 1.0, 99),
        trace_fixtures.kernel("void deep_ep::internode::dispatch<false, 8>(int4*)", 27, 500.0, 20.0, 99),
    ]
    (tmp_path / "deepep.json").write_text(json.dumps({"traceEvents": events}))
    deepep = load_kineto(tmp_path / "deepep.json")
    with pytest.raises(ReplayError, match="hidden"):
        build_replay(deepep, QUAD, ranks=3, comm=silly)
    with pytest.raises(ReplayError, match="whole hosts"):
        build_replay(deepep, QUAD, ranks=3, comm=CommModel(experts=6, top_k=2))
    build_replay(deepep, QUAD, ranks=3, comm=CommModel(experts=6, top_k=2, hierarchical=False))


# --------------------------------------------------------------------------------------------------
# 4. trace sets, one file per rank


@pytest.fixture
def ranks4() -> TraceSet:
    return load_trace_set(RANKS4)


def test_trace_set_ranks_from_distributed_info_then_names(ranks4: TraceSet) -> None:
    assert [p.name for p in ranks4.paths] == list(trace_fixtures.RANK_FILES)
    assert ranks4.rank_from == ["distributedInfo", "distributedInfo", "file name", "file name"]
    assert rank_from_name("rank-0.json.gz") == 0 and rank_from_name("trace_rank3.json") == 3
    assert rank_from_name("rank_12.json") == 12 and rank_from_name("worker-a.json") is None
    calls = match_collectives(ranks4)
    assert [(c.group, c.position, c.label) for c in calls] == [
        ("process group '0'", 0, "nccl_all_reduce"),
        ("process group '0'", 1, "nccl_all_to_all"),
    ]
    assert [k.nbytes for k in calls[1].kernels.values()] == [r * 131072 for r in (1, 2, 3, 4)]


def test_trace_set_replays_each_ranks_own_kernels_and_sizes(ranks4: TraceSet) -> None:
    replay = build_replay(ranks4, QUAD, comm=CommModel())
    for gpu, trace in enumerate(ranks4.traces):
        assert replay.traces[gpu] is trace
        for stream in (7, 20):
            ops, which = replay.programs[(gpu, stream)], replay.kernels[(gpu, stream)]
            for op, i in zip(ops, which, strict=True):
                if i >= 0 and trace.kernels[i].kind == "compute":
                    assert isinstance(op, Compute) and op.duration == trace.kernels[i].duration
    by_name = [{k.name: k.index for k in t.kernels} for t in ranks4.traces]
    assert [ranks4.traces[r].kernels[by_name[r]["gemm_fwd"]].duration for r in range(4)] == pytest.approx(
        [100 * US, 120 * US, 140 * US, 160 * US]
    )
    ar = [replay.member_collectives[(r, by_name[r][trace_fixtures.ALL_REDUCE])] for r in range(4)]
    a2a = [replay.member_collectives[(r, by_name[r][trace_fixtures.ALL_TO_ALL])] for r in range(4)]
    assert all(op is ar[0] for op in ar) and all(op is a2a[0] for op in a2a) and ar[0] is not a2a[0]
    assert isinstance(ar[0], Collective) and ar[0].schedule.ranks.tolist() == [0, 1, 2, 3]
    schedule = a2a[0].schedule  # each rank sends its own size, a quarter to each of 3 peers
    sent = np.bincount(schedule.src, weights=schedule.nbytes, minlength=4)
    assert sent == pytest.approx([size * 3 / 4 for size in (131072, 262144, 393216, 524288)])
    sent_ar = np.bincount(ar[0].schedule.src, weights=ar[0].schedule.nbytes, minlength=4)
    assert sent_ar == pytest.approx([2 * 4194304 * 3 / 4] * 4)  # ring all-reduce: equal sizes, unscaled


def test_trace_set_simulated_spans_follow_each_ranks_kernels(ranks4: TraceSet) -> None:
    outcome = simulate_replay(ranks4, infinite(QUAD), comm=CommModel())
    # communication takes no time: the all-reduce waits for the slowest gemm_fwd (160 µs), the
    # all-to-all for the slowest gemm_bwd (160 + 200 µs), then rank r's optimizer, 50 + 10 r µs
    simulated = [s for _, s in outcome.rank_spans]
    assert simulated == pytest.approx([(360 + 50 + 10 * r) * US for r in range(4)], abs=1e-12)
    measured = [m for m, _ in outcome.rank_spans]
    assert measured == pytest.approx([(425 + 50 + 10 * r) * US for r in range(4)])
    assert outcome.measured_span == pytest.approx(max(measured))
    assert outcome.compute_only_span == pytest.approx(max(simulated))
    ops = outcome.result.ops
    for r in range(4):
        rows = ops[(ops["rank"] == r) & (ops["label"] == "nccl_all_reduce")]
        assert rows["start"].tolist() == pytest.approx([(100 + 20 * r) * US])  # joins after its own gemm_fwd
        assert rows["end"].tolist() == pytest.approx([160 * US])
    real = simulate_replay(ranks4, QUAD, comm=CommModel())
    assert all(s > i for (_, s), (_, i) in zip(real.rank_spans, outcome.rank_spans, strict=True))


def test_trace_set_cli_prints_every_rank(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    code, out, err = run_cli([str(RANKS4), "--topology", str(topology(tmp_path))], capsys)
    assert code == 0, err
    assert "replay of ranks4/ (4 rank traces" in out and "on 4 of 4 GPUs" in out
    assert "measured span (longest rank)" in out
    table = out[out.index("rank  file") :].splitlines()[1:]
    assert [line.split()[:3] for line in table] == [
        [str(r), n, "5"] for r, n in enumerate(trace_fixtures.RANK_FILES)
    ]
    assert "ring/LL" in next(line for line in out.splitlines() if line.startswith("nccl_all_reduce"))
    assert "?/?" in next(line for line in out.splitlines() if line.startswith("nccl_all_to_all"))


def copy_set(tmp_path: Path) -> Path:
    target = tmp_path / "set"
    shutil.copytree(RANKS4, target)
    return target


def edit(path: Path, change) -> None:  # noqa: ANN001
    """Rewrite the trace at ``path`` (JSON or gzipped) with ``change(data)`` applied."""
    gz = path.name.endswith(".gz")
    data = json.loads(gzip.decompress(path.read_bytes()) if gz else path.read_text())
    change(data)
    path.write_bytes(trace_fixtures.encode(data, path.name))


def drop_all_to_all(data: dict) -> None:
    data["traceEvents"] = [e for e in data["traceEvents"] if e["name"] != trace_fixtures.ALL_TO_ALL]


def rename_all_reduce(data: dict) -> None:
    for e in data["traceEvents"]:
        if e["name"] == trace_fixtures.ALL_REDUCE:
            e["args"]["Collective name"] = "broadcast"


def world_eight(data: dict) -> None:
    data["distributedInfo"]["world_size"] = 8


def test_bad_trace_sets_are_one_line_errors(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    yaml_path = str(topology(tmp_path))
    cases = []

    def case(name: str, build, expected: list[str], extra: tuple[str, ...] = ()) -> None:  # noqa: ANN001
        directory = copy_set(tmp_path / name)
        build(directory)
        cases.append(([str(directory), "--topology", yaml_path, *extra], expected))

    case(
        "count",
        lambda d: edit(d / "trace_rank2.json", drop_all_to_all),
        ["trace_rank2.json", "process group '0' has 1 communication kernels", "kernel 1"],
    )
    case(
        "op",
        lambda d: edit(d / "rank_1.json", rename_all_reduce),
        ["rank_1.json", "communication kernel 0 of process group '0'", "nccl_broadcast"],
    )
    case("missing", lambda d: (d / "rank_1.json").unlink(), ["ranks [0, 2, 3] but not rank 1", "add rank 1"])
    case("twice", lambda d: shutil.copy(d / "rank_1.json", d / "copy.json"), ["rank 1 again"])
    case("world", lambda d: edit(d / "worker-a.json", world_eight), ["worker-a.json", "world_size is 8"])
    case(
        "unnamed",
        lambda d: (d / "trace_rank2.json").rename(d / "mystery.json"),
        ["mystery.json", "no distributedInfo.rank", "rank-N.json"],
    )
    case("empty", lambda d: [p.unlink() for p in d.iterdir()], ["no trace files"])
    case("ranks", lambda d: None, ["--ranks", "drop --ranks 2"], ("--ranks", "2"))  # fmt: skip
    for argv, expected in cases:
        code, out, err = run_cli(argv, capsys)
        assert code == 2 and out == "", (argv, err)
        assert err.startswith("moesim: error: ") and err.count("\n") == 1, err
        for needle in expected:
            assert needle in err, (needle, err)


def no_group(stream: int):  # noqa: ANN201
    def change(data: dict) -> None:
        for e in data["traceEvents"]:
            if e["cat"] == "kernel" and e["name"].startswith("nccl"):
                for key in ("Process Group Name", "Process Group Description", "Process Group Ranks"):
                    e["args"].pop(key, None)
                e["args"]["stream"] = e["tid"] = stream

    return change


def test_without_process_groups_kernels_match_by_stream(tmp_path: Path) -> None:
    directory = copy_set(tmp_path)
    for name in trace_fixtures.RANK_FILES:
        edit(directory / name, no_group(20))
    calls = match_collectives(load_trace_set(directory))
    assert [(c.group, c.label, c.members) for c in calls] == [
        ("stream 20", "nccl_all_reduce", [0, 1, 2, 3]),
        ("stream 20", "nccl_all_to_all", [0, 1, 2, 3]),
    ]
    edit(directory / "rank-3.json.gz", no_group(24))
    with pytest.raises(
        KinetoError, match=r"rank-3.json.gz: communication kernels of stream 24 .* match no other"
    ):
        match_collectives(load_trace_set(directory))


def test_missing_trace_and_unknown_nccl_size_are_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    yaml_path = str(topology(tmp_path))
    code, _, err = run_cli([str(tmp_path / "nope"), "--topology", yaml_path], capsys)
    assert code == 2 and "cannot read the trace" in err and err.count("\n") == 1
    events = [trace_fixtures.runtime("cudaLaunchKernel", 0.0, 1.0, 1),
              trace_fixtures.kernel("ncclDevKernel_Generic_4(x)", 20, 10.0, 5.0, 1)]  # fmt: skip
    (tmp_path / "bare.json").write_text(json.dumps({"traceEvents": events}))
    code, _, err = run_cli([str(tmp_path / "bare.json"), "--topology", yaml_path, "--ranks", "2"], capsys)
    assert code == 2 and "nccl_other: the trace gives no message size" in err and "--nccl-size" in err


# --------------------------------------------------------------------------------------------------
# 5. launch-bound traces


def test_launch_profile_of_the_fixtures() -> None:
    bound = launch_profile(load_kineto(DATA / "launch_bound.json"))
    assert (
        bound.launch_bound
        and bound.busy == pytest.approx(260 * US)
        and bound.span == pytest.approx(1060 * US)
    )
    assert bound.launch_wait == pytest.approx(800 * US) and (bound.launch_gaps, bound.gaps) == (21, 21)
    assert (
        summary(load_kineto(DATA / "launch_bound.json")).splitlines()[-1].startswith("launch-bound: GPU busy")
    )
    free = launch_profile(load_kineto(DATA / "gpu_bound.json"))
    assert not free.launch_bound and free.launch_wait == 0.0 and free.busy_fraction > 0.9


def test_cli_says_whether_the_trace_is_launch_bound(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    yaml_path = str(topology(tmp_path))
    code, out, _ = run_cli([str(DATA / "launch_bound.json"), "--topology", yaml_path], capsys)
    assert code == 0
    (verdict,) = [line for line in out.splitlines() if "bound:" in line]
    assert verdict.startswith("launch-bound: GPU busy 24.5% of the 1.060 ms span; it waited 0.800 ms")
    assert verdict.endswith("rerun with --respect-launch")
    error = float(out.split("error, simulated vs measured span")[1].split("%")[0])
    assert error < -70  # the GPU-bound replay drops the 0.8 ms the GPU waited
    code, out, _ = run_cli(
        [str(DATA / "launch_bound.json"), "--topology", yaml_path, "--respect-launch"], capsys
    )
    assert "this replay respects launch times" in out
    code, out, _ = run_cli([str(DATA / "gpu_bound.json"), "--topology", yaml_path], capsys)
    (verdict,) = [line for line in out.splitlines() if "bound:" in line]
    assert verdict.startswith("GPU-bound: GPU busy 92.5%") and "--respect-launch" not in verdict


# --------------------------------------------------------------------------------------------------
# fixtures


def test_fixtures_are_what_the_generator_writes() -> None:
    for rel, blob in trace_fixtures.fixtures().items():
        path = DATA / rel
        if rel.endswith(".gz"):
            assert gzip.decompress(path.read_bytes()) == gzip.decompress(blob), rel
        else:
            assert path.read_bytes() == blob, rel


def test_trace_set_directory_with_a_broken_file_names_it(tmp_path: Path) -> None:
    directory = copy_set(tmp_path)
    (directory / "rank_1.json").write_text('{"traceEvents": [')
    with pytest.raises(KinetoError, match="rank_1.json: not JSON"):
        load_trace_set(directory)
