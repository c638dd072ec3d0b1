"""The results directory: Parquet tables and the resolved experiment, written atomically.

``DIR/results.parquet`` one row per point (the contract columns of DESIGN.md §5);
``DIR/flows.parquet``, ``DIR/links.parquet``, ``DIR/ops.parquet`` per-flow, per-link and per-op
detail with a ``point`` column; ``DIR/experiment.yaml`` the resolved experiment with the moesim
version. Everything is first written to a sibling temporary directory and moved into ``DIR``
only when complete, so a failed run leaves ``DIR`` as it was.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Sequence
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

import pandas as pd
import yaml

from experiments.runner import PointResult

TABLES = ("results", "flows", "links", "ops")


def moesim_version() -> str:
    """The installed moesim version, or ``"dev"`` when run from a source tree."""
    try:
        return version("moesim")
    except PackageNotFoundError:
        return "dev"


def write_results(out: Path, raw: dict[str, Any], results: Sequence[PointResult]) -> None:
    """Write every table and ``experiment.yaml`` into ``out`` (created if missing), atomically per run."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.partial-", dir=out.parent))
    umask = os.umask(0)
    os.umask(umask)
    staging.chmod(0o777 & ~umask)
    try:
        frames = {
            "results": pd.DataFrame([r.row for r in results]),
            "flows": pd.concat([r.flows for r in results], ignore_index=True),
            "links": pd.concat([r.links for r in results], ignore_index=True),
            "ops": pd.concat([r.ops for r in results], ignore_index=True),
        }
        for name, frame in frames.items():
            frame.to_parquet(staging / f"{name}.parquet", index=False)
        resolved = {"moesim_version": moesim_version(), **raw}
        (staging / "experiment.yaml").write_text(yaml.safe_dump(resolved, sort_keys=False))
        if not out.exists():
            os.replace(staging, out)
            return
        for item in staging.iterdir():
            os.replace(item, out / item.name)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
