"""The memory estimate: formulas against real arrays, counts against simulated runs, the peak
against measured RSS, and `moesim validate` / `moesim run` refusing what cannot fit."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
import tracemalloc
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
import yaml

from experiments.cli import main
from experiments.config import parse_experiment
from experiments.estimate import (
    SAFETY,
    available_memory,
    check_fits,
    estimate_point,
    needed_bytes,
    workers_that_fit,
)
from experiments.runner import run_point
from simulator import footprint as fp
from simulator.fabric import Fabric
from simulator.transport import parse_transport
from topologies.compiled import compile_fabric
from topologies.leaf_spine import LeafSpine

ROOT = Path(__file__).resolve().parents[1]


def topo(leaves: int, hosts_per_leaf: int, gpus_per_host: int, spines: int, **more: object) -> dict:
    return {
        "leaves": leaves,
        "spines": spines,
        "hosts_per_leaf": hosts_per_leaf,
        "gpus_per_host": gpus_per_host,
        "nic_bandwidth": "400Gbps",
        "uplink_bandwidth": "400Gbps",
        **more,
    }


def experiment(topology: dict, workload: dict, **more: object) -> dict:
    return {"name": "fp", "topology": topology, "workload": workload, **more}


A2A = {"kind": "collective", "op": "all_to_all", "size": "16MiB", "algorithm": None}
RING = {"kind": "collective", "op": "all_reduce", "size": "64MiB", "algorithm": "ring", "channels": 2}
MOE = {
    "kind": "moe",
    "hidden": 4096,
    "synth": {"experts": 64, "top_k": 8, "layers": 2, "tokens_per_gpu": 1024},
}
OFF = {"flows": False, "timeline": False}


# ------------------------------------------------------------------------ formulas vs arrays

FABRICS = [
    LeafSpine(leaves=1, spines=1, hosts_per_leaf=2, gpus_per_host=4, nic_bandwidth=5e10,
              uplink_bandwidth=5e10, nvlink_bandwidth=4.5e11),
    LeafSpine(leaves=4, spines=3, hosts_per_leaf=2, gpus_per_host=8, nic_bandwidth=5e10,
              uplink_bandwidth=5e10, nvlink_bandwidth=4.5e11),
    LeafSpine(leaves=8, spines=16, hosts_per_leaf=1, gpus_per_host=8, nic_bandwidth=5e10,
              uplink_bandwidth=5e10, nvlink_bandwidth=4.5e11, rail_optimized=True),
]  # fmt: skip


@pytest.mark.parametrize("spec", FABRICS, ids=["one-leaf", "4x3", "rail"])
def test_compiled_array_bytes_equal_the_arrays(spec: LeafSpine) -> None:
    fabric = compile_fabric(spec)
    physical, trunk = fp.fabric_links(spec.gpus, spec.leaves, spec.spines)
    assert (physical, physical + trunk) == (fabric.n_physical, fabric.n_links)
    arrays = [value for value in vars(fabric).values() if isinstance(value, np.ndarray)]
    assert fp.compiled_array_bytes(spec.gpus, spec.leaves, spec.spines) == sum(a.nbytes for a in arrays)


def test_compile_bytes_bound_the_traced_peak() -> None:
    spec = LeafSpine(leaves=16, spines=16, hosts_per_leaf=4, gpus_per_host=8, nic_bandwidth=5e10,
                     uplink_bandwidth=5e10, nvlink_bandwidth=4.5e11)  # fmt: skip
    tracemalloc.start()
    compile_fabric(spec)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    estimate = fp.compile_bytes(spec.gpus, spec.hosts, spec.leaves, spec.spines)
    # within 2x either way (the target); the traced peak moves by ~0.1% with what ran before
    assert peak / 2 <= estimate <= 2 * peak


def _row_bytes(table: object) -> int:
    return sum(column.itemsize * int(np.prod(column.shape[1:])) for column in table._data.values())


def test_row_constants_are_the_engine_columns() -> None:
    import simpy

    net = Fabric(simpy.Environment(), compile_fabric(FABRICS[1]), parse_transport("ecmp"))
    assert fp.MESSAGE_ROW == _row_bytes(net.messages)
    assert fp.FLOW_ROW == _row_bytes(net.flows)
    assert fp.GROUP_ROW - fp.I64 == _row_bytes(net._groups)  # plus the run's offsets
    slots = (net._flow, net._paths, net._alive, net._rate, net._left, net._anchor, net._finish)
    assert fp.SLOT_ROW == sum(a.itemsize * int(np.prod(a.shape[1:])) for a in slots)


def test_table_formulas_bound_a_run() -> None:
    point = parse_experiment(experiment(topo(2, 2, 4, 2), A2A, transport="split:2"))
    result = run_point(0, {}, point)
    assert result.row["error"] is None
    estimate = estimate_point(point)
    assert (estimate.messages, estimate.flows) == (result.row["messages"], result.row["flows"])
    assert estimate.footprint.kept["flows"] >= len(result.tables["flows"]) * fp.FLOW_ROW
    assert fp.result_bytes(estimate.flows, 0, 0, True) >= result.tables["flows"].memory_usage().sum()


@pytest.mark.parametrize(
    ("workload", "transport"),
    [
        (A2A, "ecmp"),
        ({**A2A, "algorithm": "pxn", "channels": 2, "qps_per_connection": 2}, "split:3"),
        (RING, "spray"),
        ({"kind": "collective", "op": "all_reduce", "size": "8MiB", "algorithm": "tree"}, "ecmp"),
        ({"kind": "collective", "op": "all_reduce", "size": "8MiB", "algorithm": "hierarchical"}, "ecmp"),
        ({"kind": "collective", "op": "shift", "size": "8MiB"}, "ecmp"),
    ],
    ids=["a2a", "pxn-qps-split", "ring-spray", "tree", "hierarchical", "shift"],
)
def test_exact_counts_match_the_simulation(workload: dict, transport: str) -> None:
    point = parse_experiment(experiment(topo(2, 2, 4, 2), workload, transport=transport, record=OFF))
    estimate = estimate_point(point)
    row = run_point(0, {}, point).row
    assert estimate.exact
    assert (estimate.messages, estimate.flows) == (row["messages"], row["flows"])


def test_ethereal_and_moe_counts_bound_the_simulation() -> None:
    point = parse_experiment(experiment(topo(2, 2, 4, 3), A2A, transport="ethereal", record=OFF))
    row = run_point(0, {}, point).row
    estimate = estimate_point(point)
    assert estimate.messages == row["messages"] and row["flows"] <= estimate.flows <= 2 * row["flows"]
    moe = {**MOE, "synth": {**MOE["synth"], "tokens_per_gpu": 64}}
    point = parse_experiment(experiment(topo(2, 2, 4, 2), moe, record=OFF))
    row = run_point(0, {}, point).row
    estimate = estimate_point(point)
    assert row["messages"] <= estimate.messages and row["flows"] <= estimate.flows


def test_formula_bounds_the_built_schedule() -> None:
    """The formula used past EXACT_GPUS bounds what the schedule has, here where both are known."""
    from experiments.estimate import _collective_bound

    for workload, transport in ((A2A, "split:2"), (RING, "ecmp"), ({**A2A, "algorithm": "auto"}, "ecmp")):
        point = parse_experiment(experiment(topo(4, 2, 4, 2), workload, transport=transport))
        exact = estimate_point(point)
        messages, flows, *_ = _collective_bound(point)
        assert exact.messages <= messages and exact.flows <= flows


# --------------------------------------------------------------------- estimate vs peak RSS

MEASURE = """
import json, sys
def status(field):
    for line in open("/proc/self/status"):
        if line.startswith(field):
            return int(line.split()[1]) * 1024
from experiments.config import parse_experiment
from experiments.runner import run_point
warm = {"name": "w", "topology": {"leaves": 2, "spines": 2, "hosts_per_leaf": 1, "gpus_per_host": 2,
        "nic_bandwidth": "400Gbps", "uplink_bandwidth": "400Gbps"},
        "workload": {"kind": "collective", "op": "all_to_all", "size": "1MiB"}}
run_point(0, {}, parse_experiment(warm))  # imports, numba compiles, first allocations
point = parse_experiment(json.loads(sys.argv[1]))
with open("/proc/self/clear_refs", "w") as refs:
    refs.write("5")  # reset the peak (VmHWM) to the current RSS
base = status("VmRSS:")
row = run_point(0, {}, point).row
print(json.dumps({"growth": status("VmHWM:") - base, "error": row["error"], "flows": row["flows"]}))
"""


def measure_growth(data: dict) -> dict:
    """Peak RSS growth of running the point in a fresh process, above its post-import baseline."""
    out = subprocess.run(
        [sys.executable, "-c", MEASURE, json.dumps(data)],
        capture_output=True,
        text=True,
        cwd=ROOT,
        check=True,
        timeout=300,
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


CASES = {
    "all_to_all 512 GPUs, flows and timeline": experiment(topo(16, 4, 8, 16), A2A),
    "all_to_all 512 GPUs, nothing recorded": experiment(topo(16, 4, 8, 16), A2A, record=OFF),
    "ring all_reduce 64 GPUs x 2 channels, timeline": experiment(topo(4, 2, 8, 8), RING),
    "moe 64 GPUs, 2 layers, flows recorded": experiment(topo(4, 2, 8, 8), MOE),
}
SLOW_CASES = {
    "all_to_all 256 GPUs, 4 QPs, split:2": experiment(
        topo(8, 4, 8, 8), {**A2A, "algorithm": "direct", "qps_per_connection": 4}, transport="split:2"
    ),
    "ring all_reduce 128 GPUs, spray, timeline": experiment(topo(4, 4, 8, 8), RING, transport="spray"),
    "moe 128 GPUs hierarchical, nothing recorded": experiment(
        topo(8, 2, 8, 8),
        {**MOE, "dispatch": "hierarchical", "synth": {**MOE["synth"], "experts": 128}},
        record=OFF,
    ),
}


@pytest.fixture(scope="module")
def measured() -> dict[str, dict]:
    """The default cases measured two at a time (one per core of a small machine)."""
    with ThreadPoolExecutor(max_workers=2) as pool:
        return dict(zip(CASES, pool.map(measure_growth, CASES.values()), strict=True))


def _within_twice(name: str, data: dict, result: dict) -> None:
    assert result["error"] is None
    estimate = estimate_point(parse_experiment(data))
    growth = result["growth"]
    assert growth > 20 * 2**20, f"{name}: {growth} bytes is too small a case to compare"
    ratio = estimate.peak_bytes / growth
    assert 0.5 <= ratio <= 2.0, f"{name}: estimated {estimate.peak_bytes}, measured {growth} ({ratio:.2f})"


@pytest.mark.parametrize("name", list(CASES))
def test_estimate_within_twice_the_measured_peak(name: str, measured: dict[str, dict]) -> None:
    _within_twice(name, CASES[name], measured[name])


@pytest.mark.slow
@pytest.mark.parametrize("name", list(SLOW_CASES))
def test_estimate_within_twice_the_measured_peak_slow(name: str) -> None:
    _within_twice(name, SLOW_CASES[name], measure_growth(SLOW_CASES[name]))


# ------------------------------------------------------------------------ validate and run

HUGE = experiment(
    topo(100000, 2, 2, 2, link_latency="500ns"),
    {"kind": "collective", "op": "all_to_all", "size": "4MiB"},
    seed=3,
    transport="ecmp",
)


def write(tmp_path: Path, data: dict) -> Path:
    path = tmp_path / "exp.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def test_huge_fabric_is_refused_without_allocating(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write(tmp_path, HUGE)
    tracemalloc.start()
    wall = time.perf_counter()
    status = main(["validate", str(path)])
    wall = time.perf_counter() - wall
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    err = capsys.readouterr().err
    assert status == 2
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert err.startswith("moesim: error: topology.leaves: point 0 needs ~")
    assert "TiB" in err and "flows" in err and "is available; use a smaller fabric" in err
    assert peak < 64 * 2**20 and wall < 5


def test_run_refuses_the_huge_fabric_too(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["run", str(write(tmp_path, HUGE)), "--out", str(tmp_path / "out")]) == 2
    assert "topology.leaves: point 0 needs ~" in capsys.readouterr().err
    assert not (tmp_path / "out" / "results.parquet").exists()


def test_sweep_point_refusal_names_the_point(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = {**HUGE, "topology": topo(2, 2, 2, 2), "sweep": {"topology.leaves": [2, 100000]}}
    assert main(["validate", str(write(tmp_path, data))]) == 2
    err = capsys.readouterr().err
    assert "point 1 needs" in err and "(sweep point 1: {'topology.leaves': 100000})" in err


def test_small_experiment_passes_and_prints_the_estimate(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = experiment(topo(2, 2, 2, 2), {"kind": "collective", "op": "all_to_all", "size": "4MiB"})
    data["sweep"] = {"transport": ["ecmp", "split:4"]}
    assert main(["validate", str(write(tmp_path, data))]) == 0
    out = capsys.readouterr().out
    assert re.search(
        r"valid, 2 points; largest point [\d,]+ flows, peak ~\d+ KiB \(MemAvailable [\d.]+ GiB\)", out
    )


def test_margin_and_available_memory() -> None:
    point = parse_experiment(experiment(topo(2, 2, 2, 2), A2A, record=OFF))
    estimate = estimate_point(point)
    assert needed_bytes(estimate) >= SAFETY * estimate.peak_bytes
    check_fits(0, estimate, needed_bytes(estimate))  # exactly enough: passes
    with pytest.raises(ValueError, match="topology.leaves: point 0 needs"):
        check_fits(0, estimate, needed_bytes(estimate) - 1)
    assert 0 < available_memory() and available_memory(limit=2**30) <= 2**30


def test_culprit_fields() -> None:
    timeline = parse_experiment(experiment(topo(4, 2, 8, 8), RING))
    assert estimate_point(timeline).field == "record.timeline"
    moe = parse_experiment(experiment(topo(4, 2, 8, 8), MOE, record=OFF))
    assert estimate_point(moe).field == "workload.synth.tokens_per_gpu"


def test_format_bytes() -> None:
    assert fp.format_bytes(512) == "512 B"
    assert fp.format_bytes(85 * 2**20) == "85 MiB"
    assert fp.format_bytes(1.2 * 2**40) == "1.2 TiB"


# -------------------------------------------------------- memory the points get when they run

TWO_POINTS = {
    **experiment(topo(2, 2, 2, 2), {"kind": "collective", "op": "all_to_all", "size": "4MiB"}),
    "sweep": {"transport": ["ecmp", "spray"]},
}


def test_workers_that_fit() -> None:
    assert workers_that_fit([5, 3, 4], 3, 12) == 3
    assert workers_that_fit([5, 3, 4], 3, 9) == 2  # 5 + 4 fit, 5 + 4 + 3 do not
    assert workers_that_fit([5, 3, 4], 2, 100) == 2
    assert workers_that_fit([5], 4, 4) == 0


def _needs(path: Path) -> list[int]:
    from experiments.config import load_experiment

    return [needed_bytes(estimate_point(point)) for _, point in load_experiment(path).points]


def test_local_workers_together_must_fit(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from experiments import execute

    path = write(tmp_path, TWO_POINTS)
    needs = _needs(path)
    monkeypatch.setattr(execute, "available_memory", lambda limit=None: int(max(needs) * 1.5))
    out = tmp_path / "out"
    argv = ["run", str(path), "--out", str(out)]
    assert main([*argv, "--workers", "2"]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert err.startswith("moesim: error: --workers 2: 2 of the largest points at once need ~")
    assert err.rstrip().endswith("use --workers 1")
    assert not out.exists()  # refused before any work: nothing written
    assert main([*argv, "--workers", "1"]) == 0  # one at a time fits


class _SmallDaskClient:
    """A Dask client whose one worker has 100 MiB for its 2 threads."""

    def __init__(self, *args: object, **kwargs: object) -> None:
        self.submitted = 0

    def scheduler_info(self) -> dict:
        return {"workers": {"tcp://w:1": {"memory_limit": 100 * 2**20, "nthreads": 2}}}

    def submit(self, *args: object, **kwargs: object) -> None:
        self.submitted += 1
        raise AssertionError("nothing may be submitted")

    def close(self) -> None:
        pass


def test_a_dask_worker_too_small_is_refused_before_any_work(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    distributed = pytest.importorskip("dask.distributed")
    monkeypatch.setattr(distributed, "Client", _SmallDaskClient)
    out = tmp_path / "out"
    argv = ["run", str(write(tmp_path, TWO_POINTS)), "--out", str(out), "--executor", "dask"]
    assert main([*argv, "--scheduler", "tcp://sched:8786"]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert "point 0 needs ~" in err and "but 50 MiB is available per point on a Dask worker" in err
    assert not out.exists()
