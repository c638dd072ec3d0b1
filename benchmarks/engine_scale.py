"""What an event costs: pinned collective and MoE points, wall time over events, before and after.

Usage::

    python benchmarks/engine_scale.py                          # every quick case, this checkout
    python benchmarks/engine_scale.py --cases ring256 hier256  # some cases
    git worktree add /tmp/before <commit>                      # before and after in the same run:
    python benchmarks/engine_scale.py --roots /tmp/before .
    python benchmarks/engine_scale.py --cases hier1024 a2a1024 moe256 --repeat 1   # the big ones

Each case is one experiment point (:data:`CASES`: fabric, workload, algorithm, channels, QPs and
record settings pinned here), run by ``experiments.runner.run_point`` in a fresh process with
the moesim checkout given by ``--roots`` first on ``sys.path``, after a warm-up point on a tiny
fabric (so numba's compile or cache load is not timed). Printed per case and checkout: the
results' ``events`` (admission and completion batches) and ``flows``, the simulated completion
time (which must agree between checkouts), the point's wall time (``wall_time_s``, the median of
``--repeat`` runs), the cost per event (wall ÷ events) and the process's peak RSS.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _fabric(leaves: int, hosts: int, gpus: int, spines: int) -> dict:
    return {
        "kind": "leaf_spine",
        "leaves": leaves,
        "spines": spines,
        "hosts_per_leaf": hosts,
        "gpus_per_host": gpus,
        "nic_bandwidth": "400Gbps",
        "uplink_bandwidth": "400Gbps",
        "nvlink_bandwidth": "450GB/s",
        "link_latency": "500ns",
        "message_latency": "5us",
        "nvlink_message_latency": "2us",
        "rail_optimized": False,
    }


def _collective(op: str, algorithm: str | None, size: str = "128MiB", **extra: object) -> dict:
    return {"kind": "collective", "op": op, "size": size, "algorithm": algorithm, **extra}


T256 = _fabric(16, 2, 8, 16)  # the transport study's fabric
T1024 = _fabric(32, 4, 8, 32)
MOE = {
    "kind": "moe",
    "hidden": 4096,
    "ffn_hidden": 1408,
    "bytes_per_element": 2,
    "dispatch": "direct",
    "gpu": "h100",
    "synth": {
        "experts": 256,
        "top_k": 8,
        "layers": 4,
        "tokens_per_gpu": 4096,
        "imbalance": 1.0,
        "batches": 1,
    },
}
OFF = {"flows": False, "timeline": False}
CASES: dict[str, dict] = {
    # moesim's own single-channel schedules (algorithm: null), as the transport study runs them
    "ring256": {"topology": T256, "workload": _collective("all_reduce", None), "record": OFF},
    "hier256": {"topology": T256, "workload": _collective("all_reduce", "hierarchical"), "record": OFF},
    "a2a256": {"topology": T256, "workload": _collective("all_to_all", None, "16MiB"), "record": OFF},
    # NCCL's own choice and default channels
    "ring256-nccl": {
        "topology": T256,
        "workload": _collective("all_reduce", "ring", channels=16),
        "record": OFF,
    },
    # the big ones (minutes today)
    "hier1024": {"topology": T1024, "workload": _collective("all_reduce", "hierarchical"), "record": OFF},
    "ring1024": {"topology": T1024, "workload": _collective("all_reduce", None), "record": OFF},
    "a2a1024": {"topology": T1024, "workload": _collective("all_to_all", None, "16MiB"), "record": OFF},
    "moe256": {"topology": T256, "workload": MOE, "record": OFF},
}
QUICK = ["ring256", "hier256", "a2a256"]

CHILD = """
import json, resource, sys, time
from experiments.config import parse_experiment
from experiments.runner import run_point
case, repeat = json.loads(sys.argv[1]), int(sys.argv[2])
warm = dict(case, topology=dict(case["topology"], leaves=2, spines=2, hosts_per_leaf=1, gpus_per_host=2))
run_point(0, {}, parse_experiment({"name": "warm", "transport": "ecmp", **warm}))
walls, row = [], None
for _ in range(repeat):
    result = run_point(0, {}, parse_experiment({"name": "bench", "transport": "ecmp", **case}))
    row = result.row
    if row.get("error"):
        raise SystemExit(row["error"])
    walls.append(row["wall_time_s"])
print(json.dumps({"walls": walls, "events": int(row["events"]), "flows": int(row["flows"]),
                  "completion_s": row["completion_time_s"],
                  "peak_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""


def _commit(root: Path) -> str:
    done = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=root)
    dirty = subprocess.run(
        ["git", "status", "--porcelain", "--untracked-files=no"], capture_output=True, text=True, cwd=root
    )
    return (done.stdout.strip() or str(root)) + ("+changes" if dirty.stdout.strip() else "")


def run_case(name: str, root: Path, repeat: int) -> dict:
    done = subprocess.run(
        [sys.executable, "-c", CHILD, json.dumps(CASES[name]), str(repeat)],
        capture_output=True,
        text=True,
        cwd=root,
    )
    if done.returncode != 0:
        raise SystemExit(f"{name} at {root}: {done.stderr.strip()[-400:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", nargs="+", default=QUICK, choices=sorted(CASES))
    parser.add_argument("--roots", type=Path, nargs="+", default=[ROOT], help="moesim checkouts to run")
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    heads = [
        "case",
        "code",
        "events",
        "flows",
        "completion (ms)",
        "wall (s)",
        "µs per event",
        "peak RSS (MiB)",
    ]
    print("| " + " | ".join(heads) + " |")
    print("|" + "---|" * len(heads))
    for name in args.cases:
        for root in args.roots:
            r = run_case(name, root.resolve(), args.repeat)
            wall = statistics.median(r["walls"])
            cells = [name, _commit(root.resolve()), f"{r['events']:,}", f"{r['flows']:,}"]
            cells += [f"{r['completion_s'] * 1e3:.6f}", f"{wall:.2f}", f"{wall / r['events'] * 1e6:.0f}"]
            cells += [f"{r['peak_mib']:.0f}"]
            print("| " + " | ".join(cells) + " |", flush=True)


if __name__ == "__main__":
    main()
