"""How the results store scales with the number of points: a sweep of tiny points run end to end.

Usage::

    python benchmarks/store_scale.py                      # 10,000 points, 2 workers
    python benchmarks/store_scale.py --points 2000 500    # several sizes, one row each
    git worktree add /tmp/before <commit>                 # before and after in the same run:
    python benchmarks/store_scale.py --roots /tmp/before .

The experiment (:func:`tiny_experiment`) is a ring all-reduce of 4 KiB over 2 GPUs on a 2-leaf,
1-spine fabric, every table recorded, swept over ``seed`` (each point costs a few milliseconds, so
the store, not the simulation, is what is measured). For each size it prints one row:

* ``wall``: ``moesim run`` from start to exit (run, combine and report);
* ``parent peak``: the peak RSS of the ``moesim run`` process itself (``VmHWM``, read from its
  ``/proc`` entry by a launcher that wraps the CLI; the worker processes are not counted);
* ``files`` and ``bytes on disk``: everything under the results directory (file sizes summed);
* ``tables``: the bytes of the combined top-level ``*.parquet`` tables, and ``disk ÷ tables``;
* ``combine``: the combine step alone, timed in this process on the finished directory.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

LAUNCHER = """
import atexit, sys
def peak():
    with open('/proc/self/status') as status:
        for line in status:
            if line.startswith('VmHWM:'):
                print('PEAK_RSS_KB', line.split()[1], file=sys.stderr)
atexit.register(peak)
from experiments.cli import main
sys.exit(main(sys.argv[1:]))
"""


def tiny_experiment(points: int) -> dict:
    """A sweep of ``points`` tiny points (seeds 0 … points−1), every table recorded."""
    return {
        "name": f"store-scale-{points}",
        "seed": 0,
        "topology": {
            "kind": "leaf_spine",
            "leaves": 2,
            "spines": 1,
            "hosts_per_leaf": 1,
            "gpus_per_host": 1,
            "nic_bandwidth": "100Gbps",
            "uplink_bandwidth": "100Gbps",
            "nvlink_bandwidth": "100GB/s",
        },
        "workload": {"kind": "collective", "op": "all_reduce", "size": "4KiB", "algorithm": None},
        "transport": "ecmp",
        "sweep": {"seed": list(range(points))},
    }


def disk_usage(folder: Path) -> tuple[int, int]:
    """(files, bytes) under ``folder``."""
    files = size = 0
    for root, _, names in os.walk(folder):
        for name in names:
            files += 1
            size += (Path(root) / name).stat().st_size
    return files, size


COMBINE = """
import sys, time
from experiments.config import load_experiment
from experiments.store import combine
plan = load_experiment(sys.argv[1])
started = time.perf_counter()
combine(sys.argv[2], plan)
print(time.perf_counter() - started)
"""


def _commit(root: Path) -> str:
    done = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=root)
    dirty = subprocess.run(
        ["git", "status", "--porcelain", "--untracked-files=no"], capture_output=True, text=True, cwd=root
    )
    return (done.stdout.strip() or str(root)) + ("+changes" if dirty.stdout.strip() else "")


def measure(points: int, workers: int, base: Path, root: Path) -> dict:
    """Run the tiny sweep of ``points`` points with the moesim checkout at ``root``."""
    path = base / f"tiny_{points}.yaml"
    path.write_text(yaml.safe_dump(tiny_experiment(points), sort_keys=False))
    out = base / f"out_{points}"
    shutil.rmtree(out, ignore_errors=True)
    argv = [sys.executable, "-c", LAUNCHER, "run", str(path), "--out", str(out), "--workers", str(workers)]
    started = time.perf_counter()
    done = subprocess.run(argv, capture_output=True, text=True, cwd=root)
    wall = time.perf_counter() - started
    if done.returncode != 0:
        raise SystemExit(f"moesim run exited {done.returncode}: {done.stderr.strip()[-500:]}")
    peak = next(int(line.split()[1]) for line in done.stderr.splitlines() if line.startswith("PEAK_RSS_KB"))
    files, size = disk_usage(out)
    tables = sum(p.stat().st_size for p in out.glob("*.parquet"))
    timed = subprocess.run(
        [sys.executable, "-c", COMBINE, str(path), str(out)], capture_output=True, text=True, cwd=root
    )
    combine_s = float(timed.stdout.strip().splitlines()[-1])
    return {
        "code": _commit(root),
        "points": points,
        "wall_s": wall,
        "peak_mib": peak / 1024,
        "files": files,
        "disk_mb": size / 1e6,
        "tables_mb": tables / 1e6,
        "ratio": size / tables,
        "combine_s": combine_s,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--points", type=int, nargs="+", default=[10_000])
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--keep", type=Path, default=None, help="keep the results under this folder")
    parser.add_argument("--roots", type=Path, nargs="+", default=[ROOT], help="moesim checkouts to run")
    args = parser.parse_args()
    heads = ["code", "points", "wall (s)", "parent peak (MiB)", "files", "bytes on disk (MB)", "tables (MB)"]
    heads += ["disk ÷ tables", "combine (s)"]
    print("| " + " | ".join(heads) + " |")
    print("|" + "---|" * len(heads))
    with tempfile.TemporaryDirectory() as tmp:
        base = args.keep or Path(tmp)
        base.mkdir(parents=True, exist_ok=True)
        for points in args.points:
            for root in args.roots:
                r = measure(points, args.workers, base, root.resolve())
                cells = [r["code"], f"{r['points']:,}", f"{r['wall_s']:.1f}", f"{r['peak_mib']:.0f}"]
                cells += [f"{r['files']:,}", f"{r['disk_mb']:.1f}", f"{r['tables_mb']:.2f}"]
                cells += [f"{r['ratio']:.1f}×", f"{r['combine_s']:.1f}"]
                print("| " + " | ".join(cells) + " |", flush=True)


if __name__ == "__main__":
    main()
