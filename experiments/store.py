"""The results directory.

Layout::

    DIR/results.parquet    one row per point (the contract columns of DESIGN.md §5, plus error),
                           what every column is in its schema metadata (experiments.results_schema)
    DIR/flows.parquet      per flow  (point, flow, message, src, dst, bytes, start, end, link0..5)
    DIR/links.parquet      per link  (point, link, name, kind, capacity_Bps, bytes, peak_flows, utilization)
    DIR/ops.parquet        per op    (point, rank, index, label, start, end)
    DIR/timeline.parquet   per busiest link and time bin
                           (point, link, name, kind, t_start, t_end, utilization)
    DIR/gpu_load.parquet   per MoE point, layer and GPU (point, layer, gpu, tokens)
    DIR/experiment.yaml    the experiment as run, with the moesim version
    DIR/points/NNNNN/      each point's own tables and its resolved config, written as it finishes
    DIR/.moesim-run.json   which experiment the directory holds (name, hash of its config), written
                           before the first point

A point's directory is written under a temporary name and renamed when complete, so it exists
only whole: ``--resume`` skips points whose directory exists and whose config is unchanged. The
combined tables are rebuilt from the point directories at the end of a run, each written to a
temporary file and renamed.

A directory holds one experiment: :func:`claim` refuses one that holds another experiment's
results unless told to replace them (``--force``), and one that holds the same experiment's
unless told to continue it (``--resume``).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow.parquet as pq
import yaml

from experiments.arguments import UsageError
from experiments.config import Experiment, Plan
from experiments.results_schema import ResultsSchema, describe_columns, write_results
from experiments.runner import PointResult
from pages.files import umask, write_atomic

TABLES = ("results", "flows", "links", "ops", "timeline", "gpu_load")
MARKER = ".moesim-run.json"
"""The file naming the experiment a results directory holds."""
OWNED = ("points", "placements", "experiment.yaml", "report.html", "plotly.min.js", MARKER)
"""What ``--force`` removes (with every top-level ``*.parquet`` and moesim's temporary files)."""


class StoreError(RuntimeError):
    """Saved results cannot be read back (the message is one line)."""


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
    """Whether point ``index`` is saved whole and readable, succeeded and was run with the same config."""
    folder = point_dir(out, index)
    try:
        key = json.loads((folder / "point.json").read_text())["key"]
        row = pd.read_parquet(folder / "results.parquet")
        for table in folder.glob("*.parquet"):  # a damaged table makes the point run again
            pq.read_metadata(table)
    except (OSError, ValueError, KeyError):  # pyarrow's errors are ValueError or OSError
        return False
    return key == point_key(point) and row["error"].isna().all()


def config_hash(raw: dict[str, Any]) -> str:
    """A short hash of an experiment file's data (keys sorted, so formatting does not count)."""
    text = json.dumps(raw, sort_keys=True, default=str, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _held(out: Path) -> dict[str, Any] | None:
    """Name and config hash of the experiment ``out`` holds; None when it holds no moesim results.

    Read from the marker, else (a directory written before markers existed) from
    ``experiment.yaml``; ``{"name": None}`` when only point directories say it is moesim's.
    """
    try:
        marker = json.loads((out / MARKER).read_text())
        return {"name": marker.get("name"), "hash": marker.get("hash")}
    except (OSError, ValueError, AttributeError):
        pass
    try:
        raw = yaml.safe_load((out / "experiment.yaml").read_text())
        raw = {key: value for key, value in raw.items() if key != "moesim_version"}
        return {"name": raw.get("name"), "hash": config_hash(raw)}
    except (OSError, yaml.YAMLError, AttributeError):
        pass
    if (out / "points").is_dir() or (out / "results.parquet").exists():
        return {"name": None, "hash": None}
    return None


def _remove_results(out: Path) -> None:
    """Delete what moesim wrote in ``out`` (``--force``); other files stay."""
    for entry in out.iterdir():
        name = entry.name
        temporary = name.startswith(".") and any(name.startswith(f".{owned}") for owned in (*OWNED, *TABLES))
        if name in OWNED or name.endswith(".parquet") or temporary:
            if entry.is_dir() and not entry.is_symlink():
                shutil.rmtree(entry)
            else:
                entry.unlink()


def claim(out: Path, name: str, raw: dict[str, Any], resume: bool = False, force: bool = False) -> None:
    """Make ``out`` the results directory of experiment ``name`` (file data ``raw``) before it runs.

    A missing or empty directory is taken as it is. One holding results of the same experiment
    (same name and config hash) needs ``resume`` (continue) or ``force`` (start over); one holding
    another experiment's needs ``force``, which removes the old results first. A non-empty
    directory without moesim results is refused even with ``force``: it is not moesim's to delete.
    Point directories of an unnamed experiment (written before markers existed) can be resumed:
    each saved point's own config decides whether it is done.

    Raises:
        UsageError: the directory cannot be used (one line naming ``--out`` and the fix).
    """
    out = Path(out)
    digest = config_hash(raw)
    if out.is_dir() and any(out.iterdir()):
        held = _held(out)
        if held is None:
            raise UsageError(
                f"--out {out}: holds files that are not moesim results (give an empty or new directory)"
            )
        same = held["name"] == name and held["hash"] == digest
        unknown = held["name"] is None
        if force:
            try:
                _remove_results(out)
            except OSError as err:
                raise UsageError(
                    f"--out {out}: cannot remove the old results ({err.strerror or err}; remove them by hand)"
                ) from None
        elif resume and not (same or unknown):
            raise UsageError(
                f"--out {out}: holds results of {_which(held, name)}, so --resume cannot continue them "
                "(use --force to replace them, or another --out)"
            )
        elif not resume:
            what = "this experiment" if same else _which(held, name)
            raise UsageError(
                f"--out {out}: already holds results of {what} "
                "(use --resume to continue the same experiment, or --force to replace them)"
            )
    out.mkdir(parents=True, exist_ok=True)
    marker = {"name": name, "hash": digest, "moesim_version": moesim_version()}
    write_atomic(out / MARKER, lambda tmp: tmp.write_text(json.dumps(marker) + "\n"))


def _which(held: dict[str, Any], name: str) -> str:
    if held["name"] is None:
        return "an unnamed experiment"
    if held["name"] == name:
        return f"experiment {name!r} run from a different config"
    return f"another experiment ({held['name']!r})"


def results_schema(plan: Plan, columns: list[str]) -> ResultsSchema:
    """What each column of a results table of ``plan`` is (swept paths, units, baseline)."""
    swept = [dotted for axis in plan.axes for dotted in axis]
    return ResultsSchema(
        describe_columns(columns, swept, plan.units), plan.axes, plan.baseline, plan.experiment.name
    )


def combine(out: Path, plan: Plan) -> pd.DataFrame:
    """Rebuild the combined tables and ``experiment.yaml`` from the point directories; the results
    table carries its schema (:func:`results_schema`).

    Raises:
        StoreError: a saved point's table cannot be read.
    """
    out = Path(out)
    raw, n_points = plan.raw, len(plan.points)
    parts: dict[str, list[pd.DataFrame]] = {name: [] for name in TABLES}
    for index in range(n_points):
        folder = point_dir(out, index)
        for name in TABLES:
            path = folder / f"{name}.parquet"
            if path.exists():
                try:
                    parts[name].append(pd.read_parquet(path))
                except (OSError, ValueError) as err:  # pyarrow's ArrowInvalid is a ValueError
                    reason = " ".join(str(err).split())[:200] or type(err).__name__
                    raise StoreError(f"cannot read the saved point {path} ({reason})") from None
    for name, frames in parts.items():
        target = out / f"{name}.parquet"
        if frames and name == "results":
            table = pd.concat(frames, ignore_index=True)
            schema = results_schema(plan, list(table.columns))
            write_atomic(target, lambda tmp, table=table, schema=schema: write_results(table, tmp, schema))
        elif frames:
            table = pd.concat(frames, ignore_index=True)
            write_atomic(target, lambda tmp, table=table: table.to_parquet(tmp, index=False))
        elif target.exists():
            target.unlink()
    resolved = {"moesim_version": moesim_version(), **raw}
    write_atomic(
        out / "experiment.yaml", lambda tmp: tmp.write_text(yaml.safe_dump(resolved, sort_keys=False))
    )
    return pd.read_parquet(out / "results.parquet")
