"""The cross-op calibration table of docs/calibration.md: fit the superbench 8×A100 logs on one,
two or all three ops and score every op, fitted and held out, per size range.

    python experiments/examples/cross_op_calibration.py [--data tests/data/nccl]
    python experiments/examples/cross_op_calibration.py --a3mega

Prints a Markdown table: per fit set and op, the MAPE (%) for sizes >= 1 MiB and for
8 KiB <= size < 1 MiB, and whether the op was fitted or held out. ``--a3mega`` instead fits the
GCP a3-mega all-reduce log (2 hosts x 8 H100) and prints what the fit predicts for all-gather,
reduce-scatter and all-to-all there: predictions with no measurement to hold them against.
"""

from __future__ import annotations

import argparse
import itertools
import math
from pathlib import Path

import numpy as np
import pandas as pd

from calibration.fit import calibrate, collective_for, simulated_times
from calibration.nccl_log import bus_factor, parse_nccl_log
from experiments.config import load_experiment

ROOT = Path(__file__).resolve().parents[2]
LOGS = {
    "all_reduce": "superbench_8xA100_all_reduce.txt",
    "all_gather": "superbench_8xA100_all_gather.txt",
    "all_to_all": "superbench_8xA100_alltoall.txt",
}
MIB, KIB = 2**20, 2**13


def rows_of(data: Path) -> pd.DataFrame:
    """Out-of-place rows of the three logs (size 0 dropped), as ``moesim calibrate`` reads them."""
    frames = []
    for op, name in LOGS.items():
        log = parse_nccl_log(data / name)
        rows = log.rows[(log.rows["placement"] == "out_of_place") & (log.rows["size"] > 0)]
        frames.append(
            pd.DataFrame(
                {
                    "source": name,
                    "op": op,
                    "nranks": int(log.nranks),
                    "size": rows["size"].to_numpy(np.int64),
                    "time_s": rows["time_us"].to_numpy(float) * 1e-6,
                }
            )
        )
    return pd.concat(frames, ignore_index=True)


def mape(table: pd.DataFrame, low: float, high: float) -> float:
    rows = table[(table["size"] >= low) & (table["size"] < high)]
    return float(rows["rel_error"].abs().mean() * 100) if len(rows) else math.nan


def a3mega(data: Path) -> None:
    """Fit the a3-mega all-reduce, then predict the other ops (unvalidated) on the fitted fabric."""
    log = parse_nccl_log(data / "gcp_a3mega_2x8xH100_all_reduce.txt")
    rows = log.rows[(log.rows["placement"] == "out_of_place") & (log.rows["size"] > 0)]
    fit_rows = pd.DataFrame(
        {
            "source": "a3mega",
            "op": "all_reduce",
            "nranks": 16,
            "size": rows["size"].to_numpy(np.int64),
            "time_s": rows["time_us"].to_numpy(float) * 1e-6,
        }
    )
    spec = load_experiment(ROOT / "experiments/examples/gcp_a3mega.yaml").experiment.topology.spec()
    cal = calibrate(spec, fit_rows)
    print(f"fitted: MAPE >= 1 MiB {cal.mape('fit', MIB):.1f}%, 8 KiB-1 MiB {mape(cal.table, KIB, MIB):.1f}%")
    ops = ("all_reduce", "all_gather", "reduce_scatter", "all_to_all")
    print("| size | " + " | ".join(f"{op}: us, busbw GB/s, algorithm/protocol" for op in ops) + " |")
    print("|---|" + "---|" * len(ops))
    for size in [2**k for k in range(13, 34, 2)]:  # 8 KiB .. 8 GiB
        cells = []
        for op in ops:
            schedule = collective_for(op, float(size), 16, cal.spec)
            one = pd.DataFrame({"op": [op], "size": [size], "nranks": [16]})
            t = float(simulated_times(cal.spec, one)[0])
            busbw = size / t * bus_factor(op, 16) / 1e9
            cells.append(f"{t * 1e6:.1f}, {busbw:.1f}, {schedule.algorithm}/{schedule.protocol}")
        print(f"| {size} | " + " | ".join(cells) + " |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", type=Path, default=ROOT / "tests" / "data" / "nccl")
    parser.add_argument(
        "--topology", type=Path, default=ROOT / "experiments/examples/a100_8x_superbench.yaml"
    )
    parser.add_argument("--a3mega", action="store_true", help="predict other ops from the a3mega fit")
    args = parser.parse_args()
    if args.a3mega:
        a3mega(args.data)
        return
    spec = load_experiment(args.topology).experiment.topology.spec()
    rows = rows_of(args.data)
    print("| fitted on | op | role | MAPE >= 1 MiB | MAPE 8 KiB-1 MiB |")
    print("|---|---|---|---|---|")
    worst = {"held >=1MiB": 0.0, "held 8K-1M": 0.0, "fit >=1MiB": 0.0}
    for k in (1, 2, 3):
        for fitted in itertools.combinations(LOGS, k):
            held = ~rows["op"].isin(fitted).to_numpy()
            table = calibrate(spec, rows, held).table
            for op in LOGS:
                mine = table[table["op"] == op]
                role = "fit" if op in fitted else "held out"
                big, mid = mape(mine, MIB, math.inf), mape(mine, KIB, MIB)
                print(f"| {' + '.join(fitted)} | {op} | {role} | {big:.1f} | {mid:.1f} |")
                if role == "held out":
                    worst["held >=1MiB"] = max(worst["held >=1MiB"], big)
                    worst["held 8K-1M"] = max(worst["held 8K-1M"], mid)
                else:
                    worst["fit >=1MiB"] = max(worst["fit >=1MiB"], big)
    print()
    print(
        f"worst held-out op: {worst['held >=1MiB']:.1f}% (>= 1 MiB), {worst['held 8K-1M']:.1f}% "
        f"(8 KiB-1 MiB); worst fitted op >= 1 MiB: {worst['fit >=1MiB']:.1f}%"
    )


if __name__ == "__main__":
    main()
