"""The memory estimate against measured peak RSS, for growing points.

Usage::

    python benchmarks/footprint.py                 # the default cases (a few minutes on 2 cores)
    python benchmarks/footprint.py --quick         # the smaller half

Each point runs in a fresh process (``tests/test_footprint.py``'s measurement): after the imports
and a tiny warm-up point (numba compiles), the peak RSS is reset (``/proc/self/clear_refs``) and
the point is run with :func:`experiments.runner.run_point`; "measured" is the peak RSS (VmHWM)
above the RSS right before. "estimated" is :func:`experiments.estimate.estimate_point`'s peak. The
table shows how the cost grows with flows (bytes per flow) and how close the estimate stays.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def _topo(leaves: int, hosts_per_leaf: int, spines: int) -> dict:
    return {
        "leaves": leaves,
        "spines": spines,
        "hosts_per_leaf": hosts_per_leaf,
        "gpus_per_host": 8,
        "nic_bandwidth": "400Gbps",
        "uplink_bandwidth": "400Gbps",
    }


A2A = {"kind": "collective", "op": "all_to_all", "size": "16MiB", "algorithm": None}
RING = {"kind": "collective", "op": "all_reduce", "size": "64MiB", "algorithm": "ring", "channels": 2}
OFF = {"flows": False, "timeline": False}


def _moe(tokens: int, experts: int = 64, dispatch: str = "direct") -> dict:
    return {
        "kind": "moe",
        "hidden": 4096,
        "dispatch": dispatch,
        "synth": {"experts": experts, "top_k": 8, "layers": 2, "tokens_per_gpu": tokens},
    }


def cases(quick: bool) -> list[tuple[str, dict]]:
    """(name, experiment) pairs, smaller first within each family."""
    found = [
        ("a2a 128 GPUs", _topo(4, 4, 4), A2A, {}),
        ("a2a 256 GPUs", _topo(8, 4, 8), A2A, {}),
        ("a2a 512 GPUs", _topo(16, 4, 16), A2A, {}),
        ("a2a 512 GPUs, no records", _topo(16, 4, 16), A2A, {"record": OFF}),
        ("a2a 256, 4 QPs, split:2", _topo(8, 4, 8), {**A2A, "algorithm": "direct", "qps_per_connection": 4},
         {"transport": "split:2"}),
        ("ring 32 GPUs, timeline", _topo(2, 2, 2), RING, {}),
        ("ring 64 GPUs, timeline", _topo(4, 2, 8), RING, {}),
        ("ring 64 GPUs, no records", _topo(4, 2, 8), RING, {"record": OFF}),
        ("moe 64 GPUs, 512 tok/GPU", _topo(4, 2, 8), _moe(512), {}),
        ("moe 64 GPUs, 2048 tok/GPU", _topo(4, 2, 8), _moe(2048), {}),
        ("moe 128 GPUs hierarchical", _topo(8, 2, 8), _moe(1024, 128, "hierarchical"), {"record": OFF}),
    ]  # fmt: skip
    if not quick:
        found += [
            ("a2a 1024 GPUs, no records", _topo(32, 4, 32), A2A, {"record": OFF}),
            ("ring 128 GPUs spray, timeline", _topo(4, 4, 8), RING, {"transport": "spray"}),
        ]
    return [(name, {"name": "fp", "topology": t, "workload": w, **more}) for name, t, w, more in found]


def main() -> None:
    from experiments.config import parse_experiment
    from experiments.estimate import estimate_point
    from simulator.footprint import format_bytes
    from tests.test_footprint import measure_growth

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="skip the two largest cases")
    args = parser.parse_args()
    head = (
        f"{'case':32s} {'flows':>9s} {'estimated':>10s} {'measured':>10s} {'ratio':>6s} "
        f"{'B/flow':>7s} {'wall':>6s}"
    )
    print(head)
    print("-" * len(head))
    for name, data in cases(args.quick):
        estimate = estimate_point(parse_experiment(data))
        wall = time.perf_counter()
        result = measure_growth(data)
        wall = time.perf_counter() - wall
        growth = result["growth"]
        flows = int(result["flows"])
        print(
            f"{name:32s} {flows:9,d} {format_bytes(estimate.peak_bytes):>10s} {format_bytes(growth):>10s} "
            f"{estimate.peak_bytes / growth:6.2f} {growth / max(flows, 1):7.0f} {wall:5.1f}s",
            flush=True,
        )


if __name__ == "__main__":
    main()
