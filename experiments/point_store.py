"""A run's finished points on disk: saved in chunks as they arrive, each chunk proving itself.

Layout (under ``DIR/points/``)::

    chunk-000017.data   the tables of a few points: one Parquet file per table, back to back
    chunk-000017.json   its record, written after the data (temporary name, then a rename):
                        {"format", "chunk", "index": [...], "hash": [...], "failed": [0/1 ...],
                         "tables": {name: {"offset", "length", "sha256",
                                           "rows": [per point, -1: the point has no such table],
                                           "schema": base64 Arrow schema}}}

A chunk exists only when its record does; a ``.data`` without one is a torn write, removed at the
next start. Points are buffered in the parent (:class:`ChunkWriter`) and written as one chunk
when :data:`CHUNK_SECONDS` have passed since the first of them finished, :data:`CHUNK_BYTES` are
buffered, or the run ends (also on Ctrl-C or an error): a killed parent loses at most the last
few seconds of finished points, and 10,000 tiny points make a few hundred files, not 60,000.

:func:`scan` verifies every chunk against its record (file size, each table's SHA-256, row
counts) and every point against the plan (index in range, hash of its resolved config); a point
is *saved* only when all of that holds. Damage is reported in one line per point it holds (per chunk
when its record is unreadable), and those points
run again. When a point is in several chunks (it was rerun), the newest chunk has it.
"""

from __future__ import annotations

import base64
import hashlib
import io
import json
import os
import re
import shutil
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from experiments.config import Experiment
from experiments.runner import PointResult
from pages.files import umask

FORMAT = 1
TABLES = ("results", "flows", "links", "ops", "timeline", "gpu_load")
"""Every table a point may have; ``results`` is its one row."""
CHUNK_SECONDS = 2.0
"""A buffered point waits at most about this long (seconds) before its chunk is written."""
CHUNK_BYTES = 8 << 20
"""A chunk is written when this many bytes of tables are buffered."""
_CHUNK = re.compile(r"chunk-(\d{6,})\.json")


def points_dir(out: Path) -> Path:
    return Path(out) / "points"


def point_key(point: Experiment) -> str:
    """What must be unchanged for a saved point to count as done: its resolved config."""
    return point.model_dump_json()


def point_hash(point: Experiment) -> str:
    """A short hash of :func:`point_key`."""
    return hashlib.sha256(point_key(point).encode()).hexdigest()[:16]


def _arrow(frame: Any) -> pa.Table:
    return pa.Table.from_pandas(frame, preserve_index=False).replace_schema_metadata(None)


def _parquet_bytes(table: pa.Table) -> bytes:
    sink = io.BytesIO()
    pq.write_table(table, sink, compression="zstd")
    return sink.getvalue()


def _schema_text(schema: pa.Schema) -> str:
    return base64.b64encode(schema.serialize().to_pybytes()).decode()


def schema_of(text: str) -> pa.Schema:
    """The Arrow schema a chunk record stores (see :func:`_schema_text`)."""
    return pa.ipc.read_schema(pa.py_buffer(base64.b64decode(text)))


def _fsync_dir(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


class ChunkWriter:
    """Buffers finished points and writes them as chunks (the parent is the only writer)."""

    def __init__(self, out: Path) -> None:
        self.folder = points_dir(out)
        self.folder.mkdir(parents=True, exist_ok=True)
        self.next = 1 + max(
            (int(m.group(1)) for m in map(_CHUNK.fullmatch, os.listdir(self.folder)) if m), default=-1
        )
        self._points: list[tuple[PointResult, str]] = []
        self._bytes = 0
        self._since: float | None = None

    @property
    def buffered(self) -> int:
        """Points finished but not yet on disk."""
        return len(self._points)

    def add(self, result: PointResult, point: Experiment) -> None:
        """Buffer a finished point (its chunk is written by :meth:`flush`)."""
        self._points.append((result, point_hash(point)))
        self._bytes += sum(int(t.memory_usage(index=False).sum()) for t in result.tables.values())
        if self._since is None:
            self._since = time.monotonic()

    def due(self) -> bool:
        """Whether the buffered points should be written now."""
        if not self._points:
            return False
        return self._bytes >= CHUNK_BYTES or time.monotonic() - (self._since or 0.0) >= CHUNK_SECONDS

    def flush(self) -> int:
        """Write the buffered points as one chunk; return how many were written. Raises OSError
        (disk full ...) with nothing half-visible: the chunk counts only once its record is in place."""
        if not self._points:
            return 0
        name = f"chunk-{self.next:06d}"
        data, final = self.folder / f"{name}.data", self.folder / f"{name}.json"
        tables: dict[str, Any] = {}
        parts: list[bytes] = []
        offset = 0
        for table in TABLES:
            pieces, rows = [], []
            for result, _ in self._points:
                frame = pd.DataFrame([result.row]) if table == "results" else result.tables.get(table)
                if frame is None:
                    rows.append(-1)  # the point has no such table
                    continue
                pieces.append(_arrow(frame))
                rows.append(len(frame))
            if not pieces:
                continue
            joined = pa.concat_tables(pieces, promote_options="permissive")
            body = _parquet_bytes(joined)
            tables[table] = {
                "offset": offset,
                "length": len(body),
                "sha256": hashlib.sha256(body).hexdigest(),
                "rows": rows,
                "schema": _schema_text(joined.schema),
            }
            parts.append(body)
            offset += len(body)
        record = {
            "format": FORMAT,
            "chunk": self.next,
            "index": [int(r.row["point"]) for r, _ in self._points],
            "hash": [h for _, h in self._points],
            "failed": [int(r.failed) for r, _ in self._points],
            "tables": tables,
        }
        text = json.dumps(record, separators=(",", ":"))
        mode = 0o666 & ~umask()
        try:
            with open(data, "wb") as handle:
                for body in parts:
                    handle.write(body)
                handle.flush()
                os.fsync(handle.fileno())
            os.chmod(data, mode)
            tmp = self.folder / f".{name}.json.partial"
            with open(tmp, "w") as handle:
                handle.write(text)
                handle.flush()
                os.fsync(handle.fileno())
            os.chmod(tmp, mode)
            os.replace(tmp, final)
            _fsync_dir(self.folder)
        except BaseException:
            for leftover in (data, self.folder / f".{name}.json.partial"):
                try:
                    leftover.unlink()
                except OSError:
                    pass
            raise
        written = len(self._points)
        self.next += 1
        self._points, self._bytes, self._since = [], 0, None
        return written


# ------------------------------------------------------------------------------------------ reading


@dataclass(frozen=True)
class SavedPoint:
    """Where a saved point's tables are: its chunk, its position in it, its rows per table."""

    index: int
    chunk: int
    position: int
    hash: str
    failed: bool


@dataclass
class Chunk:
    """A chunk's verified record."""

    number: int
    data: Path
    tables: dict[str, dict[str, Any]]
    points: list[dict[str, Any]]
    _starts: dict[str, list[int]] = field(default_factory=dict, repr=False)

    def row_range(self, table: str, position: int) -> tuple[int, int] | None:
        """(first row, rows) of the point at ``position`` in ``table``; None when it has none."""
        entry = self.tables.get(table)
        if entry is None or not entry["present"][position]:
            return None
        if table not in self._starts:
            starts, total = [], 0
            for rows in entry["rows"]:
                starts.append(total)
                total += rows
            self._starts[table] = starts
        return self._starts[table][position], entry["rows"][position]

    def read_bytes(self, table: str) -> bytes:
        """The chunk's ``table`` as Parquet bytes, checked against its SHA-256 (StoreDamage if not)."""
        entry = self.tables[table]
        with open(self.data, "rb") as handle:
            handle.seek(entry["offset"])
            body = handle.read(entry["length"])
        if len(body) != entry["length"] or hashlib.sha256(body).hexdigest() != entry["sha256"]:
            raise StoreDamage(f"{self.data.name}: its {table} table does not match its record")
        return body

    def read_table(self, table: str) -> pa.Table:
        """The chunk's ``table``, checked against its SHA-256 (:class:`StoreDamage` if not)."""
        return pq.read_table(pa.BufferReader(self.read_bytes(table)))


class StoreDamage(ValueError):
    """A chunk's data does not match its record (the message is one line)."""


@dataclass
class Scan:
    """What :func:`scan` found: the saved points (by index), the chunks holding them, and one
    line per problem (damaged chunks, points saved with another config)."""

    saved: dict[int, SavedPoint] = field(default_factory=dict)
    chunks: dict[int, Chunk] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)
    other_config: int = 0
    """Saved points whose resolved config differs from the plan's (they run again)."""
    discard: list[Path] = field(default_factory=list)
    """Records of damaged chunks and copies: :func:`discard` removes them with their data."""

    def done(self, index: int) -> bool:
        """Whether point ``index`` is saved and succeeded (``--resume`` skips it)."""
        point = self.saved.get(index)
        return point is not None and not point.failed


def _verify(folder: Path, record: Path) -> Chunk:
    """Read and check one chunk (raises StoreDamage or OSError, one line)."""
    try:
        meta = json.loads(record.read_text())
        if meta.get("format") != FORMAT:
            raise StoreDamage(f"{record.name}: written by another moesim (format {meta.get('format')!r})")
        number, tables = int(meta["chunk"]), dict(meta["tables"])
        fields = zip(meta["index"], meta["hash"], meta["failed"], strict=True)
        points = [{"index": int(i), "hash": str(h), "failed": bool(f)} for i, h, f in fields]
        for entry in tables.values():
            entry["present"] = [r >= 0 for r in entry["rows"]]
            entry["rows"] = [max(int(r), 0) for r in entry["rows"]]
    except (ValueError, KeyError, TypeError, AttributeError) as err:
        if isinstance(err, StoreDamage):
            raise
        raise StoreDamage(f"{record.name}: its record cannot be read") from None
    data = folder / record.name.replace(".json", ".data")
    size = data.stat().st_size
    expected = sum(int(t["length"]) for t in tables.values())
    if size != expected:
        raise StoreDamage(f"{data.name}: {size} bytes where its record says {expected}")
    chunk = Chunk(number, data, tables, points)
    n = len(points)
    for name, entry in tables.items():
        if name not in TABLES or len(entry["rows"]) != n or len(entry["present"]) != n:
            raise StoreDamage(f"{record.name}: its {name} entry does not fit its points")
        chunk.read_bytes(name)  # checks the SHA-256
    if "results" not in tables or not all(tables["results"]["present"]):
        raise StoreDamage(f"{record.name}: a point without its results row")
    results = chunk.read_table("results")
    if results.column("point").to_pylist() != [int(p["index"]) for p in points]:
        raise StoreDamage(f"{data.name}: its rows belong to other points than its record says")
    return chunk


def _damage_lines(record: Path, reason: str) -> list[str]:
    """One line per point of a damaged chunk, as its record names them; one line for the chunk
    when the record itself cannot be read."""
    name = record.name.replace(".json", "")
    try:
        indices = sorted(int(i) for i in json.loads(record.read_text())["index"])
    except (OSError, ValueError, KeyError, TypeError):
        indices = []
    if not indices:
        return [f"{name} is damaged ({reason}); its points run again"]
    return [
        f"point {index}: {name}, which holds it, is damaged ({reason}); running it again" for index in indices
    ]


def scan(out: Path, hashes: Sequence[str]) -> Scan:
    """Verify every chunk under ``DIR/points/`` and every point against the plan (``hashes``: the
    :func:`point_hash` of each point, by index)."""
    folder = points_dir(out)
    found = Scan()
    if not folder.is_dir():
        return found
    records = sorted(
        (int(m.group(1)), folder / m.group(0)) for m in map(_CHUNK.fullmatch, os.listdir(folder)) if m
    )
    stale: set[int] = set()
    for number, record in records:
        try:
            chunk = _verify(folder, record)
        except (StoreDamage, OSError) as err:
            reason = err.strerror if isinstance(err, OSError) and err.strerror else str(err)
            found.problems.extend(_damage_lines(record, reason))
            found.discard.append(record)
            continue
        if chunk.number != number:
            name = record.name.replace(".json", "")
            found.problems.append(f"{name} is a copy of chunk {chunk.number}; ignored")
            found.discard.append(record)
            continue
        found.chunks[number] = chunk
        for position, point in enumerate(chunk.points):
            index = int(point["index"])
            if not 0 <= index < len(hashes):
                continue  # a point the plan no longer has
            if point["hash"] != hashes[index]:
                stale.add(index)
                continue  # saved with another config: an older chunk may still hold this one's
            found.saved[index] = SavedPoint(index, number, position, point["hash"], bool(point["failed"]))
    found.other_config = len(stale - found.saved.keys())
    return found


def discard(found: Scan) -> None:
    """Remove the damaged chunks and copies that ``found`` lists (their points run again)."""
    for record in found.discard:
        for path in (record, record.with_suffix(".data")):
            try:
                path.unlink()
            except OSError:
                pass


def migrate_legacy(out: Path, points: Sequence[Experiment]) -> str | None:
    """Move the points an older moesim saved one folder each (``DIR/points/NNNNN/``: its tables
    and ``point.json`` with the point's config) into chunks when their config is this plan's, and
    remove those folders; return a line saying so (None when there were none). A folder that does
    not read, or holds another config, is dropped: its point runs again."""
    folder = points_dir(out)
    if not folder.is_dir():
        return None
    legacy = sorted(e for e in folder.iterdir() if e.is_dir() and e.name.isdigit())
    if not legacy:
        return None
    writer = ChunkWriter(out)
    moved = 0
    for entry in legacy:
        index = int(entry.name)
        try:
            key = json.loads((entry / "point.json").read_text())["key"]
            if index >= len(points) or key != point_key(points[index]):
                continue
            row = pd.read_parquet(entry / "results.parquet").iloc[0].to_dict()
            tables = {
                t: pd.read_parquet(entry / f"{t}.parquet")
                for t in TABLES[1:]
                if (entry / f"{t}.parquet").exists()
            }
        except (OSError, ValueError, KeyError, TypeError, IndexError):
            continue
        row = {k: (None if isinstance(v, float) and v != v and k == "error" else v) for k, v in row.items()}
        writer.add(PointResult(row, tables), points[index])
        moved += 1
        if writer.due():
            writer.flush()
    writer.flush()
    for entry in legacy:
        shutil.rmtree(entry, ignore_errors=True)
    dropped = len(legacy) - moved
    return f"moved {moved} point{'s' if moved != 1 else ''} saved by an older moesim into chunks" + (
        f"; {dropped} that did not read or had another config run again" if dropped else ""
    )


def clean(out: Path) -> list[str]:
    """Remove torn writes (``.data`` without a record, temporary records, partial folders of older
    moesim versions) and point folders of the older one-folder-per-point layout; return one line
    per kind of thing removed (empty when nothing was)."""
    folder = points_dir(out)
    if not folder.is_dir():
        return []
    torn = legacy = 0
    records = {m.group(0) for m in map(_CHUNK.fullmatch, os.listdir(folder)) if m}
    for entry in list(folder.iterdir()):
        name = entry.name
        if name.startswith("."):
            torn += 1
        elif name.endswith(".data") and name.replace(".data", ".json") not in records:
            torn += 1
        elif entry.is_dir() and name.isdigit():
            legacy += 1
        else:
            continue
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry, ignore_errors=True)
        else:
            entry.unlink(missing_ok=True)
    lines = []
    if torn:
        lines.append(
            f"removed {torn} unfinished write{'s' if torn != 1 else ''} of an interrupted run from {folder}"
        )
    if legacy:
        lines.append(
            f"{legacy} point{'s' if legacy != 1 else ''} saved by an older moesim "
            "(one folder per point) run again"
        )
    return lines


def iter_rows(chunks: dict[int, Chunk], where: Iterator[SavedPoint], table: str) -> Iterator[pa.Table]:
    """Each point's rows of ``table`` in the order ``where`` gives, read chunk by chunk with a
    small cache (points of one chunk usually come together)."""
    cache: dict[int, pa.Table] = {}
    for saved in where:
        chunk = chunks[saved.chunk]
        span = chunk.row_range(table, saved.position)
        if span is None:
            continue
        if saved.chunk not in cache:
            if len(cache) >= 2:
                cache.pop(next(iter(cache)))
            cache[saved.chunk] = chunk.read_table(table)
        yield cache[saved.chunk].slice(*span)
