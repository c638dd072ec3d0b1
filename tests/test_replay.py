"""Tests for workloads.replay: Kineto traces replayed on a simulated fabric, and ``moesim replay``."""

from __future__ import annotations

import dataclasses
import json
import math
from itertools import combinations
from pathlib import Path

import numpy as np
import pytest
import yaml
from conftest import DEEPSEEK

from experiments.replay_command import main
from simulator.engine import simulate
from simulator.ops import Collective, Compute, Record, Wait
from simulator.transport import parse_transport
from topologies.compiled import compile_fabric
from topologies.leaf_spine import LeafSpine
from workloads.kineto import KinetoTrace, critical_path, load_kineto
from workloads.replay import build_replay, compute_only_programs, replay_programs, simulate_replay
from workloads.replay_comm import (
    CommModel,
    ReplayError,
    comm_bytes,
    comm_schedule,
    hit_probability,
    token_bytes,
)

REAL = DEEPSEEK
ECMP = parse_transport("ecmp")
US = 1e-6
DISPATCH = "void deep_ep::internode::dispatch<false, 8>(int4*, float*)"
ALL_REDUCE = "ncclDevKernel_AllReduce_Sum_bf16_RING_LL(ncclDevKernelArgsStorage<4096ul>)"

H800 = LeafSpine(  # 8 hosts x 8 GPUs, one 400 Gb/s NIC per GPU, NVLink 160 GB/s, 1:1 leaf-spine
    leaves=8,
    spines=8,
    hosts_per_leaf=1,
    gpus_per_host=8,
    nic_bandwidth=50e9,
    uplink_bandwidth=50e9,
    nvlink_bandwidth=160e9,
)
H800_YAML = {
    "name": "h800",
    "seed": 0,
    "topology": {
        "kind": "leaf_spine",
        "leaves": 8,
        "spines": 8,
        "hosts_per_leaf": 1,
        "gpus_per_host": 8,
        "nic_bandwidth": "400Gbps",
        "uplink_bandwidth": "400Gbps",
        "nvlink_bandwidth": "160GB/s",
    },
    "workload": {"kind": "collective", "op": "all_to_all", "size": "1MiB"},
    "transport": "ecmp",
}
PAIR = LeafSpine(  # two GPUs on two hosts, 100 B/s, no latency: times are easy to predict
    leaves=2,
    spines=1,
    hosts_per_leaf=1,
    gpus_per_host=1,
    nic_bandwidth=100.0,
    uplink_bandwidth=100.0,
    nvlink_bandwidth=100.0,
    link_latency=0.0,
    message_latency=0.0,
    nvlink_message_latency=0.0,
)
# each rank holds one of 2 experts, a token picks 1: half the tokens go to the peer, 100 bytes each
TINY = CommModel(
    hidden=100,
    tokens=2,
    top_k=1,
    experts=2,
    scale_bytes=0.0,
    combine_bytes_per_element=2.0,
    nccl_algorithm="ring",
)


# --------------------------------------------------------------------------------------------------
# a hand-made trace


def launched(name: str, stream: int, cpu: float, ts: float, dur: float, corr: int, **args) -> list[dict]:
    """A CUDA launch call at CPU time ``cpu`` and its kernel running ``[ts, ts + dur)`` (µs)."""
    call = {"ph": "X", "cat": "cuda_runtime", "name": "cudaLaunchKernel", "pid": 9, "tid": 1, "ts": cpu,
            "dur": 1, "args": {"correlation": corr}}  # fmt: skip
    kernel = {"ph": "X", "cat": "kernel", "name": name, "pid": 0, "tid": stream, "ts": ts, "dur": dur,
              "args": {"device": 0, "stream": stream, "correlation": corr, **args}}  # fmt: skip
    return [call, kernel]


def wait_call(cpu: float, corr: int) -> dict:
    return {"ph": "X", "cat": "cuda_runtime", "name": "cudaStreamWaitEvent", "pid": 9, "tid": 1, "ts": cpu,
            "dur": 1, "args": {"correlation": corr}}  # fmt: skip


def small_trace(tmp_path: Path, extra: list[dict] | None = None) -> KinetoTrace:
    """Stream 7: A0 [0,20) A1 [20,40) A2 [40,50) A3 [140,160); stream 27: a DeepEP dispatch [40,140)
    that waits for A1, and A3 waits for it (µs)."""
    events = [
        *launched("A0", 7, -10, 0, 20, 1),
        *launched("A1", 7, -9, 20, 20, 2),
        wait_call(-8, 3),
        *launched(DISPATCH, 27, -7, 40, 100, 4),
        *launched("A2", 7, -6, 40, 10, 5),
        wait_call(-5, 6),
        *launched("A3", 7, -4, 140, 20, 7),
        *(extra or []),
    ]
    path = tmp_path / "small.json"
    path.write_text(json.dumps({"traceEvents": events, "distributedInfo": {"rank": 0, "world_size": 2}}))
    return load_kineto(path)


def test_small_trace_replays_with_record_wait_and_a_collective(tmp_path: Path) -> None:
    trace = small_trace(tmp_path)
    ids = {k.name: k.index for k in trace.kernels}
    replay = build_replay(trace, PAIR, ranks=2, comm=TINY)
    assert set(replay.programs) == {(0, 7), (0, 27), (1, 7), (1, 27)}
    ops = replay.programs[(1, 27)]
    assert [type(op) for op in ops] == [Wait, Collective, Record]
    assert ops[0].event == (1, "dep", ids["A1"]) and ops[2].event == (1, "dep", ids[DISPATCH])
    assert replay.programs[(0, 27)][1] is replay.programs[(1, 27)][1] is replay.collectives[ids[DISPATCH]]
    assert replay.kernels[(1, 7)] == [ids["A0"], ids["A1"], -1, ids["A2"], -1, ids["A3"]]
    assert comm_bytes("deepep_dispatch", TINY, PAIR, 2).nic.tolist() == [100.0, 100.0]
    result = simulate(compile_fabric(PAIR), replay.programs, ECMP)
    # A0, A1 (40 µs); the dispatch moves 100 bytes at 100 B/s each way (1 s); then A3 (20 µs)
    assert result.completion_time == pytest.approx(1.0 + 60 * US, rel=1e-12)
    alone = simulate(compile_fabric(PAIR), compute_only_programs(trace, ranks=2), ECMP)
    assert alone.completion_time == pytest.approx(critical_path(trace, lambda k: 0.0, respect_launch=False))
    assert alone.completion_time == pytest.approx(70 * US)
    cpu = compute_only_programs(trace, ranks=1, respect_launch=True)
    assert (0, "cpu") in cpu and isinstance(cpu[(0, "cpu")][-1], Record)


def test_nccl_kernels_use_the_trace_size_or_the_model(tmp_path: Path) -> None:
    meta = {"Collective name": "allreduce", "In msg nelems": 100, "dtype": "BFloat16"}  # 200 bytes
    trace = small_trace(tmp_path, launched(ALL_REDUCE, 27, -3, 170, 30, 8, **meta))
    (nccl,) = [k for k in trace.kernels if k.comm == "nccl_all_reduce"]
    assert nccl.nbytes == 200
    result = simulate(compile_fabric(PAIR), replay_programs(trace, PAIR, ranks=2, comm=TINY), ECMP)
    rows = result.ops[result.ops["label"] == "nccl_all_reduce"]
    # ring under LL (NCCL's choice for 200 B): 2 steps of 100 B, each twice that on the wire
    assert (rows["end"] - rows["start"]).tolist() == pytest.approx([4.0, 4.0], rel=1e-5)
    bare = small_trace(tmp_path, launched(ALL_REDUCE, 27, -3, 170, 30, 8))
    with pytest.raises(ReplayError, match="no message size"):
        replay_programs(bare, PAIR, ranks=2, comm=TINY)
    programs = replay_programs(bare, PAIR, ranks=2, comm=dataclasses.replace(TINY, nccl_size=400.0))
    assert simulate(compile_fabric(PAIR), programs, ECMP).completion_time > 4.0


def test_bad_replays_are_one_line_errors(tmp_path: Path) -> None:
    trace = small_trace(tmp_path)
    with pytest.raises(ReplayError, match="only 2 GPUs"):
        replay_programs(trace, PAIR, ranks=3, comm=TINY)
    with pytest.raises(ReplayError, match="whole hosts"):
        replay_programs(trace, H800, ranks=12, comm=CommModel())
    with pytest.raises(ReplayError, match="top_k"):
        replay_programs(trace, PAIR, ranks=2, comm=dataclasses.replace(TINY, top_k=3))
    two = dataclasses.replace(trace, streams={**trace.streams, (1, 7): []})
    with pytest.raises(ReplayError, match="one device"):
        replay_programs(two, PAIR, ranks=2, comm=TINY)


def test_hit_probability_is_exact() -> None:
    experts, top_k, group = 9, 3, 2
    picks = list(combinations(range(experts), top_k))
    hits = sum(any(e < group for e in p) for p in picks)
    assert hit_probability(experts, top_k, group) == pytest.approx(hits / len(picks), rel=1e-15)
    assert hit_probability(256, 8, 4) == pytest.approx(1 - math.comb(252, 8) / math.comb(256, 8), rel=1e-15)


def test_comm_bytes_match_the_hand_formula() -> None:
    comm = CommModel()
    tokens, b = 4096, 7168 + 7168 / 128 * 4  # FP8 elements plus one FP32 scale per 128
    assert token_bytes(comm, "deepep_dispatch") == b and token_bytes(comm, "deepep_combine") == 2 * 7168
    p_rank = 1 - math.comb(252, 8) / math.comb(256, 8)  # 4 of 256 experts on a rank
    p_host = 1 - math.comb(224, 8) / math.comb(256, 8)  # 32 on a host
    hier = comm_bytes("deepep_dispatch", comm, H800, 64)
    assert hier.nic == pytest.approx(np.full(64, tokens * b * 7 * p_host), rel=1e-12)
    assert hier.nvlink == pytest.approx(np.full(64, tokens * b * 7 * 8 * p_rank), rel=1e-12)
    direct = comm_bytes("deepep_dispatch", dataclasses.replace(comm, hierarchical=False), H800, 64)
    assert direct.nic == pytest.approx(np.full(64, tokens * b * 56 * p_rank), rel=1e-12)
    assert direct.nvlink == pytest.approx(np.full(64, tokens * b * 7 * p_rank), rel=1e-12)
    combine = comm_bytes("deepep_combine", comm, H800, 64)
    assert combine.nic == pytest.approx(hier.nic * 2 * 7168 / b, rel=1e-12)
    notify = comm_schedule("deepep_notify", comm, H800, 64)
    assert notify.nbytes.tolist() == [1024.0] * 64 * 63


# --------------------------------------------------------------------------------------------------
# the real DeepSeek-V3 trace, 64 ranks on an H800-like fabric


@pytest.fixture(scope="module")
def real() -> KinetoTrace:
    return load_kineto(REAL)


@pytest.fixture(scope="module")
def outcomes(real: KinetoTrace) -> dict[str, object]:
    half = dataclasses.replace(H800, nic_bandwidth=H800.nic_bandwidth / 2)
    return {
        "ecmp": simulate_replay(real, H800, ranks=64, transport="ecmp"),
        "spray": simulate_replay(real, H800, ranks=64, transport="spray"),
        "half": simulate_replay(real, half, ranks=64, transport="ecmp"),
    }


def test_real_every_kernel_in_stream_order(real: KinetoTrace) -> None:
    replay = build_replay(real, H800, ranks=64, comm=CommModel())
    assert set(replay.programs) == {(gpu, stream) for gpu in range(64) for stream in (7, 23, 27)}
    for (gpu, stream), which in replay.kernels.items():
        assert [i for i in which if i >= 0] == real.streams[(0, stream)]
        ops = replay.programs[(gpu, stream)]
        for i, op in zip(which, ops, strict=True):
            if i < 0:
                assert isinstance(op, Record | Wait) and op.event[0] == gpu
            elif real.kernels[i].kind == "communication":
                assert isinstance(op, Collective) and op is replay.collectives[i]
                assert op.label == real.kernels[i].comm and op.schedule.ranks.tolist() == list(range(64))
            else:
                assert isinstance(op, Compute) and op.duration == real.kernels[i].duration
    waits = sum(isinstance(op, Wait) for op in replay.programs[(5, 7)] + replay.programs[(5, 23)])
    waits += sum(isinstance(op, Wait) for op in replay.programs[(5, 27)])
    assert waits == len(real.dependencies)
    assert len(replay.collectives) == 32


def test_real_infinitely_fast_network_reproduces_the_critical_path(real: KinetoTrace) -> None:
    expected = critical_path(real, lambda k: 0.0, respect_launch=False)
    fabric = compile_fabric(H800)
    alone = simulate(fabric, compute_only_programs(real, ranks=64), ECMP)
    assert alone.completion_time == pytest.approx(expected, rel=1e-6)
    infinite = dataclasses.replace(
        H800, nic_bandwidth=1e30, uplink_bandwidth=1e30, nvlink_bandwidth=1e30,
        link_latency=0.0, message_latency=0.0, nvlink_message_latency=0.0,
    )  # fmt: skip
    programs = replay_programs(real, infinite, ranks=64, comm=CommModel())
    assert simulate(compile_fabric(infinite), programs, ECMP).completion_time == pytest.approx(
        expected, rel=1e-6
    )
    launch = simulate(fabric, compute_only_programs(real, ranks=2, respect_launch=True), ECMP)
    assert launch.completion_time == pytest.approx(
        critical_path(real, lambda k: 0.0, respect_launch=True), rel=1e-6
    )


def test_real_comm_model_on_the_h800_fabric(real: KinetoTrace, outcomes: dict) -> None:
    ecmp, spray, half = outcomes["ecmp"], outcomes["spray"], outcomes["half"]
    compute_only = critical_path(real, lambda k: 0.0, respect_launch=False)
    for outcome in (ecmp, spray, half):
        assert math.isfinite(outcome.simulated_span)
        assert outcome.compute_only_span == pytest.approx(compute_only, rel=1e-6)
        assert outcome.simulated_span >= outcome.compute_only_span * (1 - 1e-9)
        assert outcome.exposed >= -1e-9 * outcome.simulated_span
        assert outcome.measured_span == real.span and outcome.dag_compute_only == compute_only
    assert half.simulated_span >= ecmp.simulated_span * (1 - 1e-9)  # half the NIC bandwidth: no faster
    assert spray.simulated_span <= ecmp.simulated_span * (1 + 1e-9)  # spraying: no slower than ECMP
    # every dispatch must at least push its NIC bytes through a 400 Gb/s NIC
    floor = comm_bytes("deepep_dispatch", CommModel(), H800, 64).nic[0] / H800.nic_bandwidth
    times = {t.label: t for t in spray.labels}
    assert set(times) == {"deepep_dispatch", "deepep_combine", "deepep_notify"}
    assert times["deepep_dispatch"].count == 8 and times["deepep_notify"].count == 16
    assert floor < times["deepep_dispatch"].simulated < 2 * floor + 2e-3
    assert times["deepep_combine"].simulated > times["deepep_dispatch"].simulated  # BF16 vs FP8
    assert times["deepep_dispatch"].measured == pytest.approx(
        np.mean([k.duration for k in real.kernels if k.comm == "deepep_dispatch"])
    )


# --------------------------------------------------------------------------------------------------
# moesim replay


def write_yaml(tmp_path: Path, data: dict, name: str = "h800.yaml") -> Path:
    path = tmp_path / name
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def test_cli_prints_the_table(real: KinetoTrace, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    topology = write_yaml(tmp_path, H800_YAML)
    assert main([str(REAL), "--topology", str(topology), "--transport", "spray", "--seed", "1"]) == 0
    out = capsys.readouterr().out
    needles = [
        "measured span (trace)", "129.012 ms", "DAG critical path, measured times", "simulated span",
        "error, simulated vs measured span", "simulated compute-only span", "exposed communication",
        "deepep_dispatch", "deepep_combine", "deepep_notify", "transport spray", "64 of 64 GPUs",
        "hierarchical DeepEP",
    ]  # fmt: skip
    for needle in needles:
        assert needle in out


def test_cli_errors_are_one_line(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    topology = write_yaml(tmp_path, H800_YAML)
    bad = tmp_path / "bad.json"
    bad.write_text('{"traceEvents": [')
    small = tmp_path / "small.json"
    small.write_text(json.dumps({"traceEvents": launched("A0", 7, 0, 0, 5, 1)}))
    deepep = tmp_path / "deepep.json"
    deepep.write_text(
        json.dumps({"traceEvents": [*launched("A0", 7, 0, 0, 5, 1), *launched(DISPATCH, 7, 1, 5, 5, 2)]})
    )
    broken = write_yaml(
        tmp_path, {**H800_YAML, "topology": {**H800_YAML["topology"], "leaves": 0}}, "bad.yaml"
    )
    cases = [
        ([str(tmp_path / "missing.json"), "--topology", str(topology)], "cannot read the trace"),
        ([str(bad), "--topology", str(topology)], "not JSON"),
        ([str(small), "--topology", str(topology), "--ranks", "65"], "only 64 GPUs"),
        ([str(small), "--topology", str(broken)], "topology.leaves"),
        ([str(small), "--topology", str(topology), "--transport", "tcp"], "not a transport"),
        ([str(small), "--topology", str(topology), "--nic-bandwidth", "400Gbs"], "--nic-bandwidth"),
        ([str(deepep), "--topology", str(topology), "--ranks", "4"], "whole hosts"),
        ([str(small)], "--topology"),
    ]
    for argv, expected in cases:
        assert main(argv) == 2, argv
        err = capsys.readouterr().err
        assert err.startswith("moesim: error: ") and expected in err, (argv, err)
        assert err.count("\n") == 1
    assert main([str(deepep), "--topology", str(topology), "--ranks", "4", "--direct"]) == 0
    assert "4 of 64 GPUs" in capsys.readouterr().out
    # without DeepEP kernels the DeepEP options do not matter: no --direct needed on 4 of 8 GPUs
    assert main([str(small), "--topology", str(topology), "--ranks", "4"]) == 0
    out = capsys.readouterr().out
    assert "4 of 64 GPUs" in out and "DeepEP" not in out


# ------------------------------------------------------------------- as an experiment workload


def test_replay_workload_sweeps_like_any_other(tmp_path: Path) -> None:
    import pandas as pd
    import yaml

    from experiments.cli import main

    exp = tmp_path / "replay.yaml"
    exp.write_text(
        yaml.safe_dump(
            {
                "name": "replay",
                "topology": H800_YAML["topology"],
                "workload": {"kind": "replay", "trace": str(REAL)},
                "record": {"flows": False, "timeline": False},
                "sweep": {"transport": ["ecmp", "spray"]},
            }
        )
    )
    assert main(["run", str(exp), "--out", str(tmp_path / "o"), "--workers", "1"]) == 0
    results = pd.read_parquet(tmp_path / "o" / "results.parquet").set_index("transport")
    trace = load_kineto(REAL)
    compute_only = critical_path(trace, comm_time=lambda k: 0.0, respect_launch=False)
    assert results.loc["spray", "completion_time_s"] >= compute_only * (1 - 1e-9)
    assert results.loc["ecmp", "completion_time_s"] >= results.loc["spray", "completion_time_s"]
    ops = pd.read_parquet(tmp_path / "o" / "ops.parquet")
    assert set(ops["stream"]) >= {7, 23, 27}


def test_replay_workload_with_too_many_ranks_exits_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import yaml

    from experiments.cli import main

    exp = tmp_path / "replay.yaml"
    small = {
        "leaves": 2,
        "spines": 2,
        "hosts_per_leaf": 1,
        "gpus_per_host": 8,
        "nic_bandwidth": "400Gbps",
        "uplink_bandwidth": "400Gbps",
    }
    exp.write_text(
        yaml.safe_dump({"name": "r", "topology": small, "workload": {"kind": "replay", "trace": str(REAL)}})
    )
    assert main(["validate", str(exp)]) == 2
    assert "workload.ranks: 64 ranks but the fabric has 16 GPUs" in capsys.readouterr().err
