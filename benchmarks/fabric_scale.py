"""How the fluid fabric scales: a one-shot all-to-all on 1:1 leaf-spine fabrics, and the max-min solve.

Usage::

    python benchmarks/fabric_scale.py            # 64, 256, 1024 GPUs x ecmp, spray; solver table
    python benchmarks/fabric_scale.py --gpus 64 256 --transports ecmp spray split:4 ethereal

Each fabric point runs in its own process so that its peak RSS is its own. Fabrics have 8 GPUs
per host, one NIC per GPU, and as many spines as a leaf has host ports (1:1):
64 GPUs = 4 leaves x 2 hosts, 256 = 16 x 2, 1024 = 32 x 4. Links 400 Gbps, 500 ns.
Wall seconds include building the fabric and the schedule, not Python start-up or numba's
first compile (the kernels are warmed on a tiny fabric first, as the cache would do).
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

FABRICS = {64: (4, 2), 256: (16, 2), 1024: (32, 4)}  # GPUs -> (leaves, hosts per leaf)


def one_point(gpus: int, transport: str, size: int) -> dict:
    """Simulate one all-to-all point in this process and report its cost."""
    from simulator.engine import simulate
    from simulator.transport import parse_transport
    from topologies.compiled import compile_fabric
    from topologies.leaf_spine import LeafSpine
    from workloads.collectives import collective_programs, collective_schedule

    def fabric(leaves: int, hosts_per_leaf: int) -> LeafSpine:
        return LeafSpine(
            leaves=leaves,
            spines=hosts_per_leaf * 8,
            hosts_per_leaf=hosts_per_leaf,
            gpus_per_host=8,
            nic_bandwidth=50e9,
            uplink_bandwidth=50e9,
            nvlink_bandwidth=450e9,
            link_latency=5e-7,
        )

    warm = fabric(2, 1)  # load or compile the numba kernels outside the timing
    simulate(
        compile_fabric(warm),
        collective_programs(collective_schedule(warm, "all_to_all", 1e6)),
        parse_transport(transport),
    )
    start = time.perf_counter()
    spec = fabric(*FABRICS[gpus])
    compiled = compile_fabric(spec)
    programs = collective_programs(collective_schedule(spec, "all_to_all", size))
    result = simulate(compiled, programs, parse_transport(transport), seed=0)
    wall = time.perf_counter() - start
    summary = result.summary()
    return {
        "gpus": gpus,
        "transport": transport,
        "flows": summary["flows"],
        "events": summary["events"],
        "completion_ms": summary["completion_time_s"] * 1e3,
        "wall_s": wall,
        "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }


def solver_point(flows: int, links: int, hops: int, repeat: int) -> dict:
    """Time one full max-min solve of random flows (``hops`` distinct links each)."""
    from simulator.maxmin import max_min_rates

    rng = np.random.default_rng(0)
    paths = (
        np.argsort(rng.random((flows, links)), axis=1)[:, :hops]
        if links <= 64
        else (rng.choice(links, size=(flows, hops), replace=True))
    )
    paths = np.asarray(paths, dtype=np.int32)
    capacity = rng.uniform(1e9, 5e10, size=links)
    max_min_rates(paths[:10], capacity)
    best = np.inf
    for _ in range(repeat):
        t0 = time.perf_counter()
        max_min_rates(paths, capacity)
        best = min(best, time.perf_counter() - t0)
    return {"flows": flows, "links": links, "hops": hops, "solve_ms": best * 1e3}


def table(rows: list[dict], columns: list[tuple[str, str, str]]) -> str:
    head = " | ".join(title for _, title, _ in columns)
    rule = "|".join("---" for _ in columns)
    body = ["| " + " | ".join(format(row[key], fmt) for key, _, fmt in columns) + " |" for row in rows]
    return "\n".join([f"| {head} |", f"|{rule}|", *body])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--gpus", type=int, nargs="+", default=[64, 256, 1024], choices=sorted(FABRICS))
    parser.add_argument("--transports", nargs="+", default=["ecmp", "spray"])
    parser.add_argument("--size", type=int, default=16 * 2**20, help="all-to-all bytes per rank")
    parser.add_argument("--skip-solver", action="store_true")
    parser.add_argument("--one", nargs=2, metavar=("GPUS", "TRANSPORT"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        print(json.dumps(one_point(int(args.one[0]), args.one[1], args.size)))
        return
    rows = []
    for gpus in args.gpus:
        for transport in args.transports:
            out = subprocess.run(
                [sys.executable, __file__, "--one", str(gpus), transport, "--size", str(args.size)],
                capture_output=True,
                text=True,
                check=True,
            )
            rows.append(json.loads(out.stdout.strip().splitlines()[-1]))
            print(f"  done {gpus} GPUs {transport}: {rows[-1]['wall_s']:.2f} s", file=sys.stderr)
    print(f"One-shot all-to-all, {args.size / 2**20:g} MiB per GPU, 1:1 leaf-spine, 8 GPUs/host\n")
    print(
        table(
            rows,
            [
                ("gpus", "GPUs", "d"),
                ("transport", "transport", "s"),
                ("flows", "flows", ",d"),
                ("events", "events", ",d"),
                ("completion_ms", "simulated ms", ".4f"),
                ("wall_s", "wall s", ".2f"),
                ("peak_rss_mib", "peak RSS MiB", ",.0f"),
            ],
        )
    )
    if args.skip_solver:
        return
    solves = [
        solver_point(f, links, 4, 3 if f < 10**6 else 1)
        for f in (10**3, 10**4, 10**5, 10**6)
        for links in (64, 1024, 8192)
    ]
    print("\nOne full max-min solve (numba), random 4-hop paths\n")
    print(
        table(solves, [("flows", "flows", ",d"), ("links", "links", ",d"), ("solve_ms", "solve ms", ".2f")])
    )


if __name__ == "__main__":
    main()
