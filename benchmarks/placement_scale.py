"""How the ILP placement scales: solve time, gap and quality against round_robin and greedy.

Usage::

    python benchmarks/placement_scale.py                 # 64x16x8 (60 s) and 256x64x4 (120 s)
    python benchmarks/placement_scale.py --only 64x16x8  # one instance
    python benchmarks/placement_scale.py --solver cbc    # one solver (default: cbc, and highs if installed)
    python benchmarks/placement_scale.py --time-scale 0.1  # quick look at a tenth of the time limits

Instances are synthetic traces (``synth_trace``) with imbalance 1.0 (the busiest expert gets
twice the mean load) and layer-to-layer affinity U = 0.5, 256 tokens per GPU, on leaf-spine
fabrics with 8 GPUs per host (NVLink 450 GB/s, NIC 50 GB/s). Targets: 64 experts x 16 GPUs x 8
layers, gap <= 2 % within 60 s; 256 experts x 64 GPUs x 4 layers, no worse than greedy within
120 s. ``objective`` is :func:`placement.ilp.placement_objective` (λ = 1): Σ_l max GPU tokens +
mean per-GPU affinity token-equivalents over the slowest tier; ``tail`` and ``traffic`` are its
two parts. ``bound`` is a valid lower bound on the optimum (the ILP's report; the combinatorial
:func:`placement.ilp.lower_bound` for the baselines) and ``gap = (objective − bound) /
objective``. ``load`` is max/mean GPU tokens, averaged over layers; ``xhost`` the affinity
tokens that change host between consecutive layers (:func:`placement.stats.evaluate`), and its
ratio to round_robin's and greedy's; ``vs greedy`` the objective's ratio to greedy's. The ILP
runs once per solver (``ilp/<decomposition>/<solver>``): CBC always, HiGHS when ``highspy`` is
installed. Its ``seconds`` are the whole call's wall time (bound, start and solver). The load
average at the start and end tells how busy the machine was.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

INSTANCES = {  # name: (experts, gpus, layers, top_k, time limit s)
    "64x16x8": (64, 16, 8, 2, 60.0),
    "256x64x4": (256, 64, 4, 8, 120.0),
}


def run(name: str, time_scale: float, solvers: list[str]) -> list[dict]:
    from placement.ilp import ilp_placement, lower_bound, placement_objective
    from placement.layout import round_robin
    from placement.methods import greedy
    from placement.stats import evaluate, gpu_cost, placement_stats
    from topologies.leaf_spine import LeafSpine
    from workloads.synthetic_trace import synth_trace

    experts, gpus, layers, top_k, limit = INSTANCES[name]
    trace = synth_trace(
        experts=experts, top_k=top_k, layers=layers, tokens_per_gpu=256, gpus=gpus,
        imbalance=1.0, affinity=0.5, seed=1,
    )  # fmt: skip
    stats = placement_stats(trace)
    spec = LeafSpine(
        leaves=gpus // 8, spines=1, hosts_per_leaf=1, gpus_per_host=8,
        nic_bandwidth=50e9, uplink_bandwidth=50e9, nvlink_bandwidth=450e9,
    )  # fmt: skip
    cost = gpu_cost(spec, gpus)
    bound = lower_bound(stats, cost)
    rows = []
    for method in ("round_robin", "greedy", *(f"ilp:{solver}" for solver in solvers)):
        start = time.perf_counter()
        if method == "round_robin":
            placement, report = round_robin(experts, gpus, layers), None
        elif method == "greedy":
            placement, report = greedy(stats), None
        else:
            solver = method.split(":")[1]
            placement, report = ilp_placement(stats, cost, time_limit=limit * time_scale, solver=solver)
        seconds = time.perf_counter() - start
        value = placement_objective(placement, stats, cost)
        tail = placement_objective(placement, stats, cost, lam=0.0)  # Σ_l busiest GPU's tokens
        scored = evaluate(placement, stats, cost, gpus_per_host=8)
        low = report.best_bound if report else bound
        rows.append(
            {
                "instance": name,
                "method": method if report is None else f"ilp/{report.decomposition}/{report.solver}",
                "objective": value,
                "tail": tail,
                "bound": low,
                "gap": (value - low) / value,
                "seconds": seconds,
                "limit": limit * time_scale,
                "load": scored["mean_load_ratio"],
                "xhost": scored["total_affinity_cross_host"],
                "report": report,
            }
        )
    rr, gr, gr_objective = rows[0]["xhost"], rows[1]["xhost"], rows[1]["objective"]
    for row in rows:
        row["vs_rr"] = row["xhost"] / rr if rr else float("nan")
        row["vs_greedy"] = row["xhost"] / gr if gr else float("nan")
        row["obj_vs_greedy"] = row["objective"] / gr_objective if gr_objective else float("nan")
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", choices=sorted(INSTANCES), action="append", help="run only this instance")
    parser.add_argument("--time-scale", type=float, default=1.0, help="multiply the ILP time limits (1.0)")
    parser.add_argument(
        "--solver", choices=("cbc", "highs"), action="append", help="ILP solver (default: cbc and highs)"
    )
    args = parser.parse_args()
    from placement.ilp import highs_available

    solvers = args.solver or (["cbc", "highs"] if highs_available() else ["cbc"])
    if "highs" in solvers and not highs_available():
        parser.error("highs is not installed (pip install highspy)")
    load = os.getloadavg()
    print(f"# {os.cpu_count()} CPUs, load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f} at start")
    print(f"# solvers: {', '.join(solvers)}")
    header = (
        f"{'instance':<10} {'method':<18} {'objective':>10} {'tail':>8} {'traffic':>8} {'bound':>10} "
        f"{'gap':>7} {'seconds':>8} "
        f"{'obj/greedy':>10} {'load':>6} {'xhost':>9} {'vs rr':>6} {'vs greedy':>9}"
    )
    print(header)
    print("-" * len(header))
    for name in args.only or list(INSTANCES):
        for row in run(name, args.time_scale, solvers):
            print(
                f"{row['instance']:<10} {row['method']:<18} {row['objective']:>10.1f} "
                f"{row['tail']:>8.1f} {row['objective'] - row['tail']:>8.1f} {row['bound']:>10.1f} "
                f"{row['gap']:>7.2%} {row['seconds']:>8.1f} "
                f"{row['obj_vs_greedy']:>10.4f} {row['load']:>6.3f} {row['xhost']:>9.0f} "
                f"{row['vs_rr']:>6.3f} {row['vs_greedy']:>9.3f}",
                flush=True,
            )
            if row["report"] is not None:
                report = row["report"]
                print(f"#   {report.summary()}; {report.subproblems} ILPs; limit {row['limit']:.0f} s")
    load = os.getloadavg()
    print(f"# load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f} at the end")


if __name__ == "__main__":
    main()
