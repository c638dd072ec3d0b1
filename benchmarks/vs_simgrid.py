"""moesim against SimGrid on identical paths: the same fabric, flows and routes, both max-min.

Usage::

    apt-get install python3-simgrid                       # Debian's SimGrid 3.32 (system Python)
    python benchmarks/vs_simgrid.py                       # 64 and 256 GPUs
    python benchmarks/vs_simgrid.py --gpus 64 --model LV08

The case is a one-shot all-to-all of ``--size`` bytes per GPU (moesim's own direct schedule: one
message, hence one flow, per ordered GPU pair) on the leaf-spine of ``benchmarks/fabric_scale.py``
(8 GPUs per host, one 400 Gbps NIC per GPU, 1:1 spines), routed by ECMP with seed 0. moesim runs
it with every latency zero (link, α), so its result is pure max-min fluid sharing; its flow table
gives each flow's links. SimGrid then gets one host per GPU, one link per moesim link with the
same capacity and zero latency, one route per GPU pair with those links, and one
``Comm.sendto_async`` per flow, all at t = 0, under ``network/model:CM02`` with
``network/crosstraffic:0`` (CM02 weighs a flow by its route's latency, so with zero latencies it
is plain max-min). With ``--model LV08`` (SimGrid's default, with its TCP corrections) it is not.

Printed per fabric: flows, both completion times and their relative difference, the largest
relative difference of a flow's finish time, and the wall time of each simulation (moesim: its
``simulate``, SimGrid: ``Engine.run``; building the platform is not counted for either) and their
ratio. SimGrid runs in the system Python (``/usr/bin/python3``, ``--python``) where Debian
installs it; without it the benchmark says so and exits 0.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

FABRICS = {64: (4, 2), 256: (16, 2), 1024: (32, 4)}  # GPUs -> (leaves, hosts per leaf)

SIMGRID_CHILD = r"""
import json, sys, time
import simgrid as sg
case = json.load(open(sys.argv[1]))
engine = sg.Engine(["vs_simgrid", f"--cfg=network/model:{sys.argv[2]}", "--cfg=network/crosstraffic:0",
                    "--log=root.thres:critical"])
zone = sg.NetZone.create_full_zone("fabric")
hosts = [zone.create_host(f"gpu{i}", 1e9) for i in range(case["gpus"])]
links = [zone.create_link(f"link{i}", float(c)).set_latency(0).seal() for i, c in enumerate(case["capacity"])]
for (src, dst), path in zip(case["pairs"], case["paths"]):
    zone.add_route(hosts[src].netpoint, hosts[dst].netpoint, None, None,
                   [sg.LinkInRoute(links[l]) for l in path], False)
zone.seal()
finish = []
def sender():
    comms = [sg.Comm.sendto_async(hosts[s], hosts[d], b) for (s, d), b in zip(case["pairs"], case["bytes"])]
    sg.Comm.wait_all(comms)
    finish.extend(c.finish_time for c in comms)
sg.Actor.create("sender", hosts[0], sender)
start = time.perf_counter()
engine.run()
print(json.dumps({"wall_s": time.perf_counter() - start, "finish": finish, "clock": engine.clock}))
"""


def moesim_case(gpus: int, size: float) -> tuple[dict, dict]:
    """Simulate the all-to-all in moesim; return its timing and the case SimGrid needs."""
    from simulator.engine import simulate
    from simulator.transport import parse_transport
    from topologies.compiled import compile_fabric
    from topologies.leaf_spine import LeafSpine
    from workloads.collectives import collective_programs, collective_schedule

    def fabric(leaves: int, hosts: int) -> LeafSpine:
        return LeafSpine(
            leaves=leaves,
            spines=hosts * 8,
            hosts_per_leaf=hosts,
            gpus_per_host=8,
            nic_bandwidth=50e9,
            uplink_bandwidth=50e9,
            nvlink_bandwidth=450e9,
            link_latency=0.0,
            message_latency=0.0,
            nvlink_message_latency=0.0,
        )

    warm = fabric(2, 1)
    simulate(
        compile_fabric(warm),
        collective_programs(collective_schedule(warm, "all_to_all", 1e6)),
        parse_transport("ecmp"),
    )
    spec = fabric(*FABRICS[gpus])
    compiled = compile_fabric(spec)
    programs = collective_programs(collective_schedule(spec, "all_to_all", size))
    start = time.perf_counter()
    result = simulate(compiled, programs, parse_transport("ecmp"), seed=0)
    wall = time.perf_counter() - start
    flows = result.flows()
    hops = [c for c in flows.columns if c.startswith("link")]
    paths = [[int(x) for x in row if x >= 0] for row in flows[hops].to_numpy()]
    pairs = [[int(s), int(d)] for s, d in zip(flows["src"], flows["dst"], strict=True)]
    if len({tuple(p) for p in pairs}) != len(pairs):
        raise SystemExit("two flows share a GPU pair: SimGrid has one route per pair")
    case = {
        "gpus": spec.gpus,
        "capacity": [float(c) for c in compiled.capacity[: compiled.n_physical]],
        "pairs": pairs,
        "paths": paths,
        "bytes": [int(b) for b in flows["bytes"]],  # SimGrid takes whole bytes
    }
    mine = {
        "wall_s": wall,
        "completion_s": result.completion_time,
        "finish": [float(e) for e in flows["end"]],
    }
    return mine, case


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--gpus", type=int, nargs="+", default=[64, 256], choices=sorted(FABRICS))
    parser.add_argument(
        "--size", type=int, default=16 * 2**20, help="all-to-all bytes per GPU (a multiple of GPUs)"
    )
    parser.add_argument("--model", default="CM02", help="SimGrid network model (CM02: max-min)")
    parser.add_argument("--python", default="/usr/bin/python3", help="a Python with SimGrid's module")
    args = parser.parse_args()
    probe = subprocess.run([args.python, "-c", "import simgrid"], capture_output=True, text=True)
    if probe.returncode != 0:
        print(f"SimGrid does not import in {args.python} (apt-get install python3-simgrid); skipped")
        return
    heads = ["GPUs", "flows", "moesim (ms)", "SimGrid (ms)", "completion diff", "max flow diff"]
    heads += ["moesim wall (s)", "SimGrid wall (s)", "SimGrid ÷ moesim"]
    print(f"SimGrid model {args.model}\n")
    print("| " + " | ".join(heads) + " |")
    print("|" + "---|" * len(heads))
    for gpus in args.gpus:
        mine, case = moesim_case(gpus, args.size)
        with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as handle:
            json.dump(case, handle)
        done = subprocess.run(
            [args.python, "-c", SIMGRID_CHILD, handle.name, args.model], capture_output=True, text=True
        )
        Path(handle.name).unlink()
        if done.returncode != 0:
            raise SystemExit(f"SimGrid failed: {done.stderr.strip()[-400:]}")
        theirs = json.loads(done.stdout.strip().splitlines()[-1])
        completion = max(theirs["finish"])
        flow_diff = max(abs(a - b) / b for a, b in zip(mine["finish"], theirs["finish"], strict=True))
        cells = [f"{gpus:,}", f"{len(case['pairs']):,}", f"{mine['completion_s'] * 1e3:.6f}"]
        cells += [f"{completion * 1e3:.6f}", f"{abs(mine['completion_s'] - completion) / completion:.1e}"]
        cells += [f"{flow_diff:.1e}", f"{mine['wall_s']:.3f}", f"{theirs['wall_s']:.2f}"]
        cells += [f"{theirs['wall_s'] / mine['wall_s']:.0f}×"]
        print("| " + " | ".join(cells) + " |", flush=True)


if __name__ == "__main__":
    main()
