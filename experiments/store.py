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
    DIR/manifest.json      written last by :func:`combine`: the combined tables with their rows,
                           bytes and SHA-256, and the report; a folder without it is not finished
    DIR/points/            the finished points in chunks, each with its record
                           (:mod:`experiments.point_store`)
    DIR/.moesim-run.json   which experiment the directory holds (name, hash of its config), written
                           before the first point
    DIR/.moesim-lock       held (``flock``) by the run writing the directory (:mod:`experiments.run_lock`)

:func:`combine` rebuilds the combined tables from the verified chunks in point order, streaming
(a few chunks in memory at a time), each table to a temporary file and renamed; it removes the
manifest first and writes it last, so the tables of a folder with a manifest are one finished set.

A directory holds one experiment: :func:`claim` refuses one that holds another experiment's
results unless told to replace them (``--force``), and one that holds the same experiment's
unless told to continue it (``--resume``).
"""

from __future__ import annotations

import hashlib
import json
import shutil
from collections.abc import Callable, Iterator
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import yaml

from experiments.arguments import UsageError
from experiments.config import Plan
from experiments.point_store import TABLES, Scan, StoreDamage, iter_rows, point_hash, scan, schema_of
from experiments.results_schema import ResultsSchema, describe_columns, write_results
from experiments.run_lock import LOCK
from pages.files import write_atomic

MARKER = ".moesim-run.json"
"""The file naming the experiment a results directory holds."""
MANIFEST = "manifest.json"
"""Written last by :func:`combine`: the folder's tables are complete and verified."""
OWNED = ("points", "placements", "experiment.yaml", "report.html", "plotly.min.js", MARKER, MANIFEST)
"""What ``--force`` removes (with every top-level ``*.parquet`` and moesim's temporary files)."""
_ROWS_PER_WRITE = 1 << 16


class StoreError(RuntimeError):
    """Saved results cannot be read back (the message is one line)."""


def moesim_version() -> str:
    """The installed moesim version, or ``"dev"`` when run from a source tree."""
    try:
        return version("moesim")
    except PackageNotFoundError:
        return "dev"


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
        if name == LOCK:
            continue  # held by this run
        if name in OWNED or name.endswith(".parquet") or temporary:
            if entry.is_dir() and not entry.is_symlink():
                shutil.rmtree(entry)
            else:
                entry.unlink()


def claim(
    out: Path,
    name: str,
    raw: dict[str, Any],
    resume: bool = False,
    force: bool = False,
    check_only: bool = False,
) -> None:
    """Make ``out`` the results directory of experiment ``name`` (file data ``raw``) before it runs.

    A missing or empty directory is taken as it is. One holding results of the same experiment
    (same name and config hash) needs ``resume`` (continue) or ``force`` (start over); one holding
    another experiment's needs ``force``, which removes the old results first. A non-empty
    directory without moesim results is refused even with ``force``: it is not moesim's to delete.
    Point directories of an unnamed experiment (written before markers existed) can be resumed:
    each saved point's own config decides whether it is done.

    ``check_only`` raises what it would raise but writes and removes nothing (run before the
    directory is locked, so a refused run leaves no trace in it).

    Raises:
        UsageError: the directory cannot be used (one line naming ``--out`` and the fix).
    """
    out = Path(out)
    digest = config_hash(raw)
    if out.is_dir() and any(entry.name != LOCK for entry in out.iterdir()):
        held = _held(out)
        if held is None:
            raise UsageError(
                f"--out {out}: holds files that are not moesim results (give an empty or new directory)"
            )
        same = held["name"] == name and held["hash"] == digest
        unknown = held["name"] is None
        if force and check_only:
            pass
        elif force:
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
    if check_only:
        return
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


def _conform(table: pa.Table, schema: pa.Schema) -> pa.Table:
    """``table`` with exactly ``schema``'s columns (missing ones null, types promoted)."""
    columns = []
    for f in schema:
        if f.name in table.column_names:
            column = table.column(f.name)
            columns.append(column if column.type == f.type else column.cast(f.type))
        else:
            columns.append(pa.nulls(table.num_rows, f.type))
    return pa.Table.from_arrays(columns, schema=schema)


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _stream_table(target: Path, pieces: Iterator[pa.Table], schema: pa.Schema) -> None:
    def write(tmp: Path) -> None:
        with pq.ParquetWriter(tmp, schema) as writer:
            pending: list[pa.Table] = []
            rows, wrote = 0, False
            for piece in pieces:
                pending.append(_conform(piece, schema))
                rows += piece.num_rows
                if rows >= _ROWS_PER_WRITE:
                    writer.write_table(pa.concat_tables(pending))
                    pending, rows, wrote = [], 0, True
            if pending or not wrote:
                writer.write_table(pa.concat_tables(pending) if pending else schema.empty_table())

    write_atomic(target, write)


def verified_points(out: Path, plan: Plan) -> Scan:
    """Every point of ``plan`` saved, verified; raises :class:`StoreError` (one line) when one is
    missing or a chunk holding one is damaged."""
    found = scan(out, [point_hash(point) for _, point in plan.points])
    missing = [index for index in range(len(plan.points)) if index not in found.saved]
    if missing:
        problem = found.problems[0] if found.problems else f"point {missing[0]} is not saved"
        more = f" ({len(missing)} points not saved)" if len(missing) > 1 else ""
        raise StoreError(f"cannot combine the results in {out}: {problem}{more}")
    return found


def combine(out: Path, plan: Plan, progress: Callable[[str], None] | None = None) -> pd.DataFrame:
    """Rebuild the combined tables, ``experiment.yaml`` and the manifest from the verified chunks,
    in point order; the results table carries its schema (:func:`results_schema`).

    ``progress`` is told each table's name as it starts. Raises :class:`StoreError` when a point is
    not saved or its chunk is damaged (nothing is written then), OSError when a write fails (the
    manifest is absent until everything is written).
    """
    out = Path(out)
    found = verified_points(out, plan)
    order = [found.saved[index] for index in range(len(plan.points))]
    used = {saved.chunk for saved in order}
    (out / MANIFEST).unlink(missing_ok=True)
    results = None
    for name in TABLES:
        if progress is not None:
            progress(name)
        target = out / f"{name}.parquet"
        schemas = [
            schema_of(found.chunks[c].tables[name]["schema"])
            for c in sorted(used)
            if name in found.chunks[c].tables
        ]
        if not schemas:
            target.unlink(missing_ok=True)
            continue
        schema = pa.unify_schemas(schemas, promote_options="permissive")
        try:
            pieces = iter_rows(found.chunks, iter(order), name)
            if name == "results":
                table = pa.concat_tables([_conform(piece, schema) for piece in pieces])
                results = table.to_pandas()
                meta = results_schema(plan, list(results.columns))
                write_atomic(target, lambda tmp, frame=results, meta=meta: write_results(frame, tmp, meta))
            else:
                _stream_table(target, pieces, schema)
        except StoreDamage as err:  # changed on disk since the scan
            raise StoreError(f"cannot combine the results in {out}: {err}") from None
    resolved = {"moesim_version": moesim_version(), **plan.raw}
    write_atomic(
        out / "experiment.yaml", lambda tmp: tmp.write_text(yaml.safe_dump(resolved, sort_keys=False))
    )
    tables = {}
    for name in TABLES:
        path = out / f"{name}.parquet"
        if path.exists():
            tables[name] = {
                "rows": pq.read_metadata(path).num_rows,
                "bytes": path.stat().st_size,
                "sha256": _sha256(path),
            }
    manifest = {
        "format": 1,
        "experiment": plan.experiment.name,
        "hash": config_hash(plan.raw),
        "moesim_version": moesim_version(),
        "points": len(order),
        "failed": sum(saved.failed for saved in order),
        "tables": tables,
        "report": None,
    }
    _write_manifest(out, manifest)
    pa.default_memory_pool().release_unused()  # give the streamed tables' memory back
    assert results is not None
    return results


def _write_manifest(out: Path, manifest: dict[str, Any]) -> None:
    write_atomic(out / MANIFEST, lambda tmp: tmp.write_text(json.dumps(manifest, indent=1) + "\n"))


def read_manifest(out: Path) -> dict[str, Any] | None:
    """The folder's manifest when its run finished and its tables are the ones it lists (by size);
    None otherwise."""
    try:
        manifest = json.loads((Path(out) / MANIFEST).read_text())
        for name, entry in manifest["tables"].items():
            if (Path(out) / f"{name}.parquet").stat().st_size != entry["bytes"]:
                return None
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return None
    return manifest


def note_report(out: Path, report: Path) -> None:
    """Record in the manifest that ``report`` was written from these tables."""
    manifest = read_manifest(out)
    if manifest is not None:
        manifest["report"] = Path(report).name
        _write_manifest(out, manifest)
