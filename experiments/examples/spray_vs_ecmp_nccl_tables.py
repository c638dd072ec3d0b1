"""Tables of the transport study rerun with NCCL's schedules (channels, QPs, NCCL's algorithm choice).

Usage::

    moesim run experiments/examples/spray_vs_ecmp_nccl.yaml --out out/spray_vs_ecmp_nccl
    moesim run experiments/examples/spray_vs_ecmp_ring.yaml --out out/spray_vs_ecmp_ring
    python experiments/examples/spray_vs_ecmp_nccl_tables.py out/spray_vs_ecmp_nccl out/spray_vs_ecmp_ring

Prints one Markdown table per results directory: per op, size, QPs per connection and the
algorithm/protocol/channels NCCL's choice resolved to, spray's completion time and every other
transport's completion time divided by spray's at the same point and seed, mean over seeds [worst
seed], with the seed count and the most flows any link carried at once (ECMP, worst seed).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import pandas as pd

TRANSPORTS = ["ecmp", "split:2", "split:4", "ethereal"]


def table(out: Path) -> str:
    """Markdown table of one results directory's slowdowns against spray."""
    results = pd.read_parquet(out / "results.parquet")
    results = results[results["error"].isna()].copy()
    keys = [k for k in ("workload.op", "workload.size", "workload.qps_per_connection") if k in results]
    resolved = ["algorithm", "protocol", "channels"]
    group = keys + resolved
    spray = results[results["transport"] == "spray"].set_index(group + ["seed"])["completion_time_s"]
    index = pd.MultiIndex.from_frame(results[group + ["seed"]])
    results["slowdown"] = results["completion_time_s"].to_numpy() / spray.reindex(index).to_numpy()
    present = [t for t in TRANSPORTS if t in set(results["transport"])]
    lines = [
        "| op | size | QPs | algorithm/protocol | channels | seeds | spray (ms) | "
        + " | ".join(present)
        + " | ECMP max link flows |",
        "|---|---|---|---|---|---|---|" + "---|" * len(present) + "---|",
    ]
    for values, at in results.groupby(group, sort=True):
        row = dict(zip(group, values, strict=True))
        size = row.get("workload.size")
        size_text = f"{size / 2**20:g} MiB" if size is not None else ""
        cells = []
        for transport in present:
            s = at.loc[at["transport"] == transport, "slowdown"]
            cells.append(f"{s.mean():.3f} [{s.max():.3f}]" if len(s) else "")
        ecmp = at[at["transport"] == "ecmp"]
        spray_ms = at.loc[at["transport"] == "spray", "completion_time_s"].mean() * 1e3
        lines.append(
            f"| {row.get('workload.op', '')} | {size_text} | {row.get('workload.qps_per_connection', 1)} | "
            f"{row['algorithm']}/{row['protocol']} | {row['channels']} | {at['seed'].nunique()} | "
            f"{spray_ms:.4f} | " + " | ".join(cells) + f" | {ecmp['max_link_flows'].max()} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", nargs="+", type=Path, help="results directories of moesim run")
    for out in parser.parse_args().out:
        print(f"\n**{out}**\n")
        print(table(out))


if __name__ == "__main__":
    main()
