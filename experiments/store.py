"""The results directory.

Layout::

    DIR/results.parquet    one row per point (the contract columns of DESIGN.md §5, plus error)
    DIR/flows.parquet      per flow  (point, flow, message, src, dst, bytes, start, end, link0..5)
    DIR/links.parquet      per link  (point, link, name, kind, capacity_Bps, bytes, peak_flows, utilization)
    DIR/ops.parquet        per op    (point, rank, index, label, start, end)
    DIR/timeline.parquet   per busiest link and time bin
                           (point, link, name, kind, t_start, t_end, utilization)
    DIR/experiment.yaml    the experiment as run, with the moesim version
    DIR/points/NNNNN/      each point's own tables and its resolved config, written as it finishes

A point's directory is written under a temporary name and renamed when complete, so it exists
only whole: ``--resume`` skips points whose directory exists and whose config is unchanged. The
combined tables are rebuilt from the point directories at the end of a run, each written to a
temporary file and renamed.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

import pandas as pd
import yaml

from experiments.config import Experiment
from experiments.runner import PointResult
from pages.files import umask, write_atomic

TABLES = ("results", "flows", "links", "ops", "timeline")


def moesim_version() -> str:
    """The installed moesim version, or ``"dev"`` when run from a source tree."""
    try:
        return version("moesim")
    except PackageNotFoundError:
        return "dev"


def point_dir(out: Path, index: int) -> Path:
    return Path(out) / "points" / f"{index:05d}"


def point_key(point: Experiment) -> str:
    """What must be unchanged for a saved point to count as done: its resolved config."""
    return point.model_dump_json()


def save_point(out: Path, result: PointResult, point: Experiment) -> None:
    """Write one point's row and tables to ``DIR/points/NNNNN/``, atomically."""
    final = point_dir(out, int(result.row["point"]))
    final.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{final.name}.partial-", dir=final.parent))
    try:
        pd.DataFrame([result.row]).to_parquet(staging / "results.parquet", index=False)
        for name, table in result.tables.items():
            table.to_parquet(staging / f"{name}.parquet", index=False)
        (staging / "point.json").write_text(json.dumps({"key": point_key(point)}))
        staging.chmod(0o777 & ~umask())
        if final.exists():
            shutil.rmtree(final)
        os.replace(staging, final)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def saved_ok(out: Path, index: int, point: Experiment) -> bool:
    """Whether point ``index`` is saved, succeeded and was run with the same config."""
    folder = point_dir(out, index)
    try:
        key = json.loads((folder / "point.json").read_text())["key"]
        row = pd.read_parquet(folder / "results.parquet")
    except (OSError, ValueError, KeyError):
        return False
    return key == point_key(point) and row["error"].isna().all()


def combine(out: Path, raw: dict[str, Any], n_points: int) -> pd.DataFrame:
    """Rebuild the combined tables and ``experiment.yaml`` from the point directories."""
    out = Path(out)
    parts: dict[str, list[pd.DataFrame]] = {name: [] for name in TABLES}
    for index in range(n_points):
        folder = point_dir(out, index)
        for name in TABLES:
            path = folder / f"{name}.parquet"
            if path.exists():
                parts[name].append(pd.read_parquet(path))
    for name, frames in parts.items():
        target = out / f"{name}.parquet"
        if frames:
            table = pd.concat(frames, ignore_index=True)
            write_atomic(target, lambda tmp, table=table: table.to_parquet(tmp, index=False))
        elif target.exists():
            target.unlink()
    resolved = {"moesim_version": moesim_version(), **raw}
    write_atomic(
        out / "experiment.yaml", lambda tmp: tmp.write_text(yaml.safe_dump(resolved, sort_keys=False))
    )
    return pd.read_parquet(out / "results.parquet")
