"""nccl-tests stdout: read its result table into a DataFrame, and write one back.

What nccl-tests prints (``src/common.cu``; checked on the logs in ``../shared/data/nccl``)
------------------------------------------------------------------------------------------
- Preamble comment lines: ``# nccl-tests version 2.18.3 nccl-headers=23003 nccl-library=23003``
  (newer versions), ``# Collective test starting: alltoall_perf``, ``# nThread 1 nGpus 1 minBytes 8
  maxBytes 8589934592 step: 2(factor) warmup iters: 5 iters: 20 agg iters: 1 validation: 1 graph: 0``
  (``unalign: 0`` in newer versions), ``# Using devices`` and one ``#  Rank  0 Group  0 Pid 1234 on
  host-a device  0 [0000:18:00] NVIDIA H100 80GB HBM3`` line per rank.
- A column header: a line naming the placements (``out-of-place`` then ``in-place``), the column
  names ``size count type redop root | time algbw busbw #wrong | time algbw busbw #wrong`` and a
  units line (``(B) (elements) (us) (GB/s) (GB/s)``). Older versions lack ``root`` and say ``error``
  for ``#wrong`` (the oldest say ``bytes N type op ... res``); some tests lacked ``redop``. Newer ones
  may add per-placement columns (``#bitdiff``, ``i_min i_max i_p99 i_cv%``), a trailing ``timestamp``
  (two fields in a row) and say ``cputime`` for ``time`` with ``-C``.
- One row per message size: ``size`` in bytes, ``count`` in elements, then per placement ``time``
  in microseconds, ``algbw`` = size / time and ``busbw`` = algbw × :func:`bus_factor`, both in GB/s
  (10^9 bytes/s), and ``#wrong`` (wrong elements, ``N/A`` without validation).
- Footer: ``# Out of bounds values : 0 OK``, ``# Avg bus bandwidth    : 40.6043`` (the mean busbw of
  every row and placement), ``# Collective test concluded: alltoall_perf``.

Logs found in the wild also carry the launch command (``mpirun -np 16 -npernode 8 all_reduce_perf -b
8 -e 8G -f 2 -g 1``, sometimes as a ``# cmd:`` comment), MPI and ``NCCL INFO`` chatter (ignored), or
the same table twice (identical rows are read once).

How :func:`parse_nccl_log` reads them
-------------------------------------
- Columns are found by name in the column header, so a missing ``root``, ``error`` for ``#wrong``
  or extra columns read the same; a table without a header is read by its number of fields (13: the
  current layout, 12: without ``root``, 11: without ``redop`` and ``root``).
- Blank fields: older nccl-tests print ``redop`` in the header but an empty field in the rows of
  ops without a reduction (``alltoall_perf``: 11 fields under 12 names). A row one or two fields
  short leaves ``redop`` and/or ``root`` blank: the one the op lacks (no reduction: redop; a
  reduction and no root: root), else (``reduce``, or op unknown) the one whose field does not fit
  (a redop is a word). Blank reads as redop ``none``, root -1. Any other short row is an error.
- Repeated sizes: nccl-tests rounds each requested size down to whole elements (whole elements per
  rank for all_gather, alltoall...), so small requests print the same size on consecutive lines,
  mostly 0 B (superbench's 8-rank alltoall prints five ``0 0 float`` rows for 1 to 16 B, its
  all_reduce two for 1 and 2 B), each a new measurement. The first of
  such a run of lines is kept, the rest dropped. Size 0 stays in :attr:`NcclLog.rows` (one row per
  placement); it is a no-op collective whose time is launch overhead only, so a fit of latency or
  bandwidth should drop it (``rows[rows["size"] > 0]``). The same size again on a later line must
  repeat the values (a table printed twice, read once), else it is an error.
- Ranks, hosts, GPU (rules in :mod:`calibration.nccl_log_header`): ``nranks=`` and ``hosts=``
  arguments win. Otherwise ranks are launcher processes × ranks per process (``nThread`` ×
  ``nGpus`` of the ``# nThread`` line, else ``-t`` × ``-g`` of the command; one process without a
  launcher), or a ``# nranks: N`` comment, or the count of the ``# Rank`` lines (the ``# Using
  devices`` block; with or without ``Group``) when they are complete: ranks 0..n-1 and ``nThread``
  × ``nGpus`` of them per process shown. Rank lines that are not complete (an excerpt showing only
  rank 127) only say "at least 128": then another source must give the count, else the log is
  refused. Hosts are the distinct host names of complete Rank lines, else the launch command's
  (``-npernode``, ``srun -N``), else None. :attr:`NcclLog.gpu` is the device name of the Rank lines.
- Bad input raises :class:`NcclLogError`, one line naming the file, the line or field, and what to
  fix (``pass nranks= (moesim calibrate --ranks N)`` where the log cannot settle the rank count).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from calibration.nccl_log_header import (
    BINARY,
    LAUNCHERS,
    RANK_LINE,
    WRAPPERS,
    RankLine,
    gpu_name,
    launch_counts,
    read_rank_line,
    run_counts,
    words,
)

OPS: dict[str, str] = {
    "all_reduce_perf": "all_reduce",
    "all_gather_perf": "all_gather",
    "reduce_scatter_perf": "reduce_scatter",
    "alltoall_perf": "all_to_all",
    "sendrecv_perf": "send_recv",
    "broadcast_perf": "broadcast",
    "reduce_perf": "reduce",
    "gather_perf": "gather",
    "scatter_perf": "scatter",
    "hypercube_perf": "hypercube",
}
"""nccl-tests binary -> moesim op name."""

_BINARIES = {op: binary for binary, op in OPS.items()}
_FACTORS = {
    "all_reduce": lambda n: 2.0 * (n - 1) / n,
    "all_gather": lambda n: (n - 1) / n,
    "reduce_scatter": lambda n: (n - 1) / n,
    "all_to_all": lambda n: (n - 1) / n,
    "gather": lambda n: (n - 1) / n,
    "scatter": lambda n: (n - 1) / n,
    "hypercube": lambda n: (n - 1) / n,
    "send_recv": lambda n: 1.0,
    "broadcast": lambda n: 1.0,
    "reduce": lambda n: 1.0,
}
# Op names in file names, most specific first ("allreduce" and "reducescatter" contain "reduce").
_FILE_OPS = (
    ("allreduce", "all_reduce"),
    ("allgather", "all_gather"),
    ("reducescatter", "reduce_scatter"),
    ("alltoall", "all_to_all"),
    ("sendrecv", "send_recv"),
    ("broadcast", "broadcast"),
    ("hypercube", "hypercube"),
    ("gather", "gather"),
    ("scatter", "scatter"),
    ("reduce", "reduce"),
)

PLACEMENTS = ("out_of_place", "in_place")
"""Placement labels of :attr:`NcclLog.rows`, in the order nccl-tests prints them."""
ROW_COLUMNS = (
    "size",
    "count",
    "type",
    "redop",
    "root",
    "placement",
    "time_us",
    "algbw_gbps",
    "busbw_gbps",
    "wrong",
)
"""Columns of :attr:`NcclLog.rows` and of the ``rows`` given to :func:`format_nccl_log`."""

# Column names as printed (lower case) -> the field they hold.
_NAMES = {
    "size": "size",
    "bytes": "size",
    "count": "count",
    "n": "count",
    "type": "type",
    "redop": "redop",
    "op": "redop",
    "root": "root",
    "time": "time",
    "cputime": "time",
    "algbw": "algbw",
    "busbw": "busbw",
    "#wrong": "wrong",
    "wrong": "wrong",
    "error": "wrong",
    "res": "wrong",
}
# Column headers assumed for a table printed without one, by number of fields.
_HEADERLESS = {
    13: "size count type redop root time algbw busbw #wrong time algbw busbw #wrong",
    12: "size count type redop time algbw busbw error time algbw busbw error",
    11: "size count type time algbw busbw error time algbw busbw error",
}
# Keys of the "# nThread 1 nGpus 1 minBytes ..." line, in the order nccl-tests prints them.
_RUN_KEYS = (
    "nThread",
    "nGpus",
    "minBytes",
    "maxBytes",
    "step",
    "warmup iters",
    "iters",
    "agg iters",
    "validation",
    "graph",
    "unalign",
)
_FOOTER_KEYS = ("Out of bounds values", "Avg bus bandwidth")
# Ops with a reduction (a redop in every row) and with a root (a root in every row).
_REDUCING = {"all_reduce", "reduce_scatter", "reduce"}
_ROOTED = {"broadcast", "reduce", "gather", "scatter"}

_STARTING = re.compile(r"Collective test (?:starting|concluded):\s*(\S+)")
_TESTS_VERSION = re.compile(r"\b(\w+-tests) version (\S+)")
_NCCL_VERSION = re.compile(r"\bNCCL version (\S+)")
_KEY_VALUE = re.compile(r"^([A-Za-z][\w .()/-]{0,40}?)\s*:\s*(.*)$")
_ENV = re.compile(r"^\w+=")
_PROMPT = re.compile(r"^(?:cmd:\s*|\S*[#$]\s+|>\s*)")  # "# cmd: ...", "$ ...", "user@host:~# ..."


class NcclLogError(ValueError):
    """An nccl-tests log that cannot be read; the message is one line naming the file and line."""


@dataclass(frozen=True)
class NcclLog:
    """One nccl-tests result table.

    Attributes:
        path: the file read.
        op: moesim op name (values of :data:`OPS`), None if the log does not say.
        command: the command line found in the log (or the test binary named by ``# Collective
            test starting``), None if none.
        nranks: ranks in the communicator (the ``nranks`` argument, else from the log: see
            "Ranks, hosts, GPU" above), None if the log does not say.
        hosts: hosts of the run, likewise: the argument, else distinct host names of complete
            ``# Rank`` lines, else the launch command's, else None.
        header: preamble and footer values as printed (strings), e.g. ``nThread``, ``nGpus``,
            ``minBytes``, ``maxBytes``, ``step``, ``warmup iters``, ``iters``, ``agg iters``,
            ``validation``, ``graph``, ``nccl-tests version``, ``NCCL version``, ``Out of bounds
            values``, ``Avg bus bandwidth``, and ``key: value`` comment lines (``cmd``, ``source``).
        rows: one row per (size, placement) (and type, redop, root, when a log has several), columns
            :data:`ROW_COLUMNS`: ``size`` bytes and ``count`` elements (int), ``type``, ``redop``
            (``none`` when the log has no such column or leaves it blank), ``root`` (int, -1 when
            absent or blank), ``placement`` (``out_of_place`` or ``in_place``), ``time_us`` (µs),
            ``algbw_gbps`` and ``busbw_gbps`` (GB/s, 10^9 bytes/s), ``wrong`` (float, NaN for
            ``N/A`` or absent).
            Sorted by placement (out-of-place first), then size. Rows of one size on consecutive
            lines are read as their first (see "Repeated sizes" above).
        gpu: GPU model named by the ``# Rank`` lines (``A100-SXM4-40GB``, ``NVIDIA H100 80GB
            HBM3``; distinct names joined by ``", "``), None without them.
    """

    path: str
    op: str | None
    command: str | None
    nranks: int | None
    hosts: int | None
    header: dict[str, str]
    rows: pd.DataFrame = field(compare=False)
    gpu: str | None = None


def bus_factor(op: str, nranks: int) -> float:
    """nccl-tests' busbw / algbw for ``op`` (a moesim op name or an nccl-tests binary) on ``nranks``.

    all_reduce 2(n-1)/n; all_gather, reduce_scatter, all_to_all, gather, scatter, hypercube (n-1)/n;
    send_recv, broadcast, reduce 1.
    """
    name = OPS.get(op, op)
    if name not in _FACTORS:
        raise ValueError(f'unknown op "{op}" (valid: {", ".join(sorted(_FACTORS))})')
    if nranks < 1:
        raise ValueError(f"nranks must be at least 1, got {nranks}")
    return float(_FACTORS[name](nranks))


# --------------------------------------------------------------------------------------------------
# reading


@dataclass(frozen=True)
class _Layout:
    """Where a table's fields are: ``names`` as printed, ``width`` fields per row."""

    names: tuple[str, ...]
    width: int
    prefix: dict[str, int]
    groups: tuple[tuple[str, dict[str, int]], ...]


def _layout(tokens: list[str], placements: list[str]) -> _Layout | str:
    """The layout of a column header, or what is wrong with it."""
    prefix: dict[str, int] = {}
    groups: list[dict[str, int]] = []
    for i, token in enumerate(tokens):
        name = _NAMES.get(token.lower())
        if name == "time":
            groups.append({"time": i})
        elif not groups and name in ("size", "count", "type", "redop", "root"):
            prefix.setdefault(name, i)
        elif groups and name in ("algbw", "busbw", "wrong"):
            groups[-1].setdefault(name, i)
    missing = [c for c in ("size", "count", "type") if c not in prefix]
    if missing or not groups or any("algbw" not in g or "busbw" not in g for g in groups):
        return "expected a column header with size, count, type and time, algbw, busbw per placement"
    order = placements if len(placements) >= len(groups) else list(PLACEMENTS)
    if len(groups) > len(order):
        return f"expected at most {len(order)} placements (out-of-place, in-place), got {len(groups)}"
    width = len(tokens) + (1 if tokens[-1].lower() == "timestamp" else 0)  # "2025-01-01 12:00:00"
    return _Layout(tuple(tokens), width, prefix, tuple(zip(order, groups, strict=False)))


class _Reader:
    """State while reading one log, line by line."""

    def __init__(self, path: str, op: str | None) -> None:
        self.path = path
        self.op = op  # the caller's, else found as we read (see op_now)
        self.named = _op_from_name(path)
        self.layout: _Layout | None = None
        self.placements: list[str] = []
        self.header: dict[str, str] = {}
        self.ranks: dict[int, RankLine] = {}
        self.previous: tuple | None = None  # (size, type, redop, root) of the last row line
        self.tested: str | None = None
        self.command: str | None = None
        self.binary: str | None = None
        self.nranks_note: int | None = None
        self.rows: dict[tuple, tuple[int, tuple]] = {}

    def fail(self, number: int, what: str) -> NcclLogError:
        return NcclLogError(f"{self.path}: line {number}: {what}")

    def op_now(self) -> str | None:
        """The op as known so far: argument, ``# Collective test starting``, command, file name."""
        binary = self.tested if self.tested in OPS else self.binary
        return self.op or (OPS[binary] if binary else self.named)

    def blanks(self, fields: list[str], layout: _Layout) -> list[int] | None:
        """Positions (in the header) of the ``redop`` / ``root`` columns a short row leaves blank,
        None if the row cannot be read that way. Older nccl-tests print an empty redop for ops
        that do not reduce (alltoall, all_gather): the blank column is the one the op lacks; for
        ``reduce`` (it has both) or an unknown op, the one whose field does not fit (a redop is a
        word, a root or a time a number)."""
        short = layout.width - len(fields)
        optional = [c for c in ("redop", "root") if c in layout.prefix]
        if not 0 < short <= len(optional):
            return None
        at = layout.prefix.get("redop")
        if short < len(optional):  # one of redop and root (both in the header) is blank
            op = self.op_now()
            if op is not None and op not in _REDUCING:
                optional = ["redop"]
            elif op is not None and op not in _ROOTED:
                optional = ["root"]
            else:
                optional = ["redop"] if _numeric(fields[at]) else ["root"]
        if at is not None and _numeric(fields[at]) != ("redop" in optional):  # the row says otherwise
            return None
        return sorted(layout.prefix[c] for c in optional)

    def line(self, number: int, raw: str) -> None:
        text = raw.strip()
        if not text:
            return
        if text.startswith("#"):
            self.comment(number, text)
            return
        fields = text.split()
        if fields[0].isascii() and fields[0].isdigit():
            self.row(number, fields)
            return
        self.comment(number, text, pairs=False)  # header lines that lost their "#", or chatter

    def find_command(self, text: str) -> None:
        """Take ``text`` as the command if it runs a test binary: first word (after ``VAR=value``
        settings) the binary itself or a launcher or wrapper (``mpirun``, ``srun``, ``timeout``...)."""
        plain = [t for t in words(text) if not _ENV.match(t)]
        if not plain:
            return
        match = BINARY.match(plain[0])
        if not (match or Path(plain[0]).name in LAUNCHERS | WRAPPERS):
            return
        for token in plain:
            match = BINARY.match(token)
            if match and match.group(1) in OPS:
                self.command, self.binary = text, match.group(1)
                return

    def comment(self, number: int, text: str, *, pairs: bool = True) -> None:
        """A line outside the table; ``pairs``: keep ``key: value`` lines in the header."""
        rank = read_rank_line(text)
        if rank:
            self.ranks.setdefault(rank.rank, rank)
            return
        body = text.lstrip("#").strip()
        tokens = body.split()
        if not tokens:
            return
        lower = [t.lower() for t in tokens]
        if lower[0] in ("size", "bytes") and ({"time", "cputime"} & set(lower)):
            layout = _layout(tokens, self.placements)
            if isinstance(layout, str):
                raise self.fail(number, layout)
            self.layout, self.placements, self.previous = layout, [], None
            return
        if "out-of-place" in body or "in-place" in body:
            self.placements = [
                "out_of_place" if t.startswith("out-of-place") else "in_place"
                for t in tokens
                if t.startswith(("out-of-place", "in-place"))
            ]
            return
        if tokens[0].startswith("("):  # the units line
            return
        if "minBytes" in tokens:
            self.run_line(tokens)
            return
        starting = _STARTING.search(body)
        if starting:
            self.tested = self.tested or starting.group(1)
            return
        version = _TESTS_VERSION.search(body)
        if version:
            self.header.setdefault(f"{version.group(1)} version", version.group(2))
            for key, value in re.findall(r"([\w-]+)=(\S+)", body):
                self.header.setdefault(key, value)
            return
        version = _NCCL_VERSION.search(body)
        if version:
            self.header.setdefault("NCCL version", version.group(1))
            return
        pair = _KEY_VALUE.match(body) if pairs else None
        if pair:
            key, value = pair.group(1).strip(), pair.group(2).strip()
            self.header.setdefault(key, value)
            if key == "nranks" and value.isascii() and value.isdigit():
                self.nranks_note = self.nranks_note or int(value)
        if self.command is None:
            self.find_command(_PROMPT.sub("", body))

    def run_line(self, tokens: list[str]) -> None:
        """``nThread 1 nGpus 1 minBytes 8 ... warmup iters: 5 iters: 20``: words, then a value."""
        words: list[str] = []
        for token in tokens:
            if words and re.match(r"^[-+]?\d", token):
                self.header.setdefault(" ".join(words).rstrip(":"), token)
                words = []
            else:
                words.append(token)

    def row(self, number: int, fields: list[str]) -> None:
        layout = self.layout
        if layout is None:
            if len(fields) not in _HEADERLESS:
                raise self.fail(
                    number,
                    f"expected a column header before the table, or 13 fields "
                    f"({_HEADERLESS[13]}), got {len(fields)}",
                )
            found = _layout(_HEADERLESS[len(fields)].split(), [])
            assert not isinstance(found, str)
            layout = found
        if len(fields) != layout.width:
            blanks = self.blanks(fields, layout)
            if blanks is None:
                raise self.fail(
                    number, f"expected {layout.width} columns ({' '.join(layout.names)}), got {len(fields)}"
                )
            for at in blanks:
                fields.insert(at, "")
        p = layout.prefix
        size = self.whole(number, fields[p["size"]], "size")
        count = self.whole(number, fields[p["count"]], "count")
        kind = fields[p["type"]]
        redop = fields[p["redop"]] if "redop" in p and fields[p["redop"]] else "none"
        root = -1
        if "root" in p and fields[p["root"]]:
            root = self.whole(number, fields[p["root"]], "root", signed=True)
        repeat, self.previous = self.previous == (size, kind, redop, root), (size, kind, redop, root)
        for placement, g in layout.groups:
            where = placement.replace("_", "-")
            time = self.number(number, fields[g["time"]], f"time ({where})", positive=True)
            algbw = self.number(number, fields[g["algbw"]], f"algbw ({where})")
            busbw = self.number(number, fields[g["busbw"]], f"busbw ({where})")
            wrong = math.nan
            if "wrong" in g and fields[g["wrong"]].upper() != "N/A":
                wrong = self.number(number, fields[g["wrong"]], f"#wrong ({where})")
            key = (placement, size, kind, redop, root)
            values = (count, time, algbw, busbw, wrong)
            if key in self.rows:
                first, seen = self.rows[key]
                if not (repeat or _same(seen, values)):  # a repeat on the next line: keep the first
                    raise self.fail(
                        number,
                        f"size {size} ({where}) has other values than line {first} "
                        f"(count, time, algbw, busbw, #wrong {values} against {seen}): "
                        "two runs in one file; split it into one log per run",
                    )
                continue
            self.rows[key] = (number, values)

    def whole(self, number: int, text: str, what: str, *, signed: bool = False) -> int:
        digits = text[1:] if signed and text.startswith("-") else text
        if not (digits.isascii() and digits.isdigit()):
            raise self.fail(number, f"expected a whole number for {what}, got {text!r}")
        return int(text)

    def number(self, number: int, text: str, what: str, *, positive: bool = False) -> float:
        try:
            value = float(text)
        except ValueError:
            value = math.nan
        if not math.isfinite(value) or value < 0 or (positive and value == 0):
            kind = "a positive number" if positive else "a number >= 0"
            raise self.fail(number, f"expected {kind} for {what}, got {text!r}")
        return value

    def frame(self) -> pd.DataFrame:
        order = {p: i for i, p in enumerate(PLACEMENTS)}
        keys = sorted(self.rows, key=lambda k: (order[k[0]], k[1], k[2], k[3], k[4]))
        records = []
        for key in keys:
            placement, size, kind, redop, root = key
            count, *measured = self.rows[key][1]
            records.append((size, count, kind, redop, root, placement, *measured))
        frame = pd.DataFrame.from_records(records, columns=list(ROW_COLUMNS))
        return frame.astype(
            {
                "size": "int64",
                "count": "int64",
                "type": object,
                "redop": object,
                "root": "int64",
                "placement": object,
                "time_us": "float64",
                "algbw_gbps": "float64",
                "busbw_gbps": "float64",
                "wrong": "float64",
            }
        )


def _numeric(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def _same(a: tuple, b: tuple) -> bool:
    """Equal values, NaN equal to NaN."""
    return all(x == y or (x != x and y != y) for x, y in zip(a, b, strict=True))  # NaN != NaN


def _op_from_name(path: str) -> str | None:
    name = re.sub(r"[^a-z0-9]", "", Path(path).name.lower())
    return next((op for token, op in _FILE_OPS if token in name), None)


def _moesim_op(op: str) -> str:
    name = OPS.get(op, op)
    if name not in _BINARIES:
        raise ValueError(f'unknown op "{op}" (valid: {", ".join(sorted(_BINARIES))})')
    return name


def parse_nccl_log(
    path: str | Path, *, op: str | None = None, nranks: int | None = None, hosts: int | None = None
) -> NcclLog:
    """Read an nccl-tests log (stdout) into an :class:`NcclLog`, as the module docstring describes.

    Args:
        path: the log.
        op: moesim op name or nccl-tests binary; None: the test binary of the ``# Collective test
            starting`` line or of the command line, else an op named in the file name
            (``all_reduce``, ``alltoall``, ``sendrecv``, ...), else None.
        nranks: ranks of the run (>= 1), over what the log says; None: from the log.
        hosts: hosts of the run (>= 1), over what the log says; None: from the log.

    Raises:
        NcclLogError: unreadable file, a row with the wrong number of fields or a field that is not a
            number (sizes whole, times positive), the same size printed twice with other values, no
            row at all, or (without ``nranks``) rank or host counts the log cannot settle. One line
            naming the file, the line or field, and the fix.
        ValueError: an unknown ``op``, or ``nranks`` or ``hosts`` below 1.
    """
    name = _moesim_op(op) if op is not None else None
    for what, value in (("nranks", nranks), ("hosts", hosts)):
        if value is not None and value < 1:
            raise ValueError(f"{what} must be at least 1, got {value}")
    where = str(path)
    try:
        text = Path(path).read_text(encoding="utf-8", errors="replace")
    except OSError as err:
        raise NcclLogError(f"{where}: cannot read the log ({err.strerror or err})") from None
    reader = _Reader(where, name)
    for number, raw in enumerate(text.splitlines(), start=1):
        reader.line(number, raw)
    if not reader.rows:
        raise NcclLogError(
            f"{where}: no data rows (expected an nccl-tests table: size count type redop root time algbw "
            f"busbw #wrong ...)"
        )
    per_process = None  # ranks per process: nThread x nGpus of the "# nThread" line
    threads, gpus = reader.header.get("nThread", "1"), reader.header.get("nGpus")
    if gpus is not None and (threads + gpus).isascii() and (threads + gpus).isdigit():
        per_process = int(threads) * int(gpus)
    launched: tuple[int | None, int | None] = (None, None)
    if reader.command is not None and reader.binary is not None:
        launched = launch_counts(reader.command, reader.binary, per_process)
    counts = run_counts(reader.ranks, per_process, launched, reader.nranks_note, nranks=nranks, hosts=hosts)
    if isinstance(counts, str):
        raise NcclLogError(f"{where}: {counts}")
    return NcclLog(
        path=where,
        op=reader.op_now(),
        command=reader.command or reader.tested,
        nranks=counts[0],
        hosts=counts[1],
        header=reader.header,
        rows=reader.frame(),
        gpu=gpu_name(reader.ranks),
    )


# --------------------------------------------------------------------------------------------------
# writing


def _num(value: float, width: int) -> str:
    """``value`` right-aligned in ``width``: two decimals as nccl-tests prints when that reads back
    exactly, else the shortest text that does."""
    text = f"{value:.2f}"
    if float(text) != value:
        text = repr(float(value))
    return text.rjust(width)


def _wrong(value: object) -> str:
    """``#wrong`` as printed: a count, or ``N/A`` for NaN, None or ``"N/A"``."""
    if value is None:
        return "N/A"
    if isinstance(value, str):
        if value.strip().upper() == "N/A":
            return "N/A"
        value = float(value)
    value = float(value)  # type: ignore[arg-type]
    if math.isnan(value):
        return "N/A"
    if value < 0 or math.isinf(value):
        raise ValueError(f"wrong must be a count >= 0 or N/A, got {value}")
    return str(int(value)) if value.is_integer() else repr(value)


def _check_rows(rows: pd.DataFrame) -> None:
    missing = [c for c in ROW_COLUMNS if c not in rows.columns]
    if missing:
        raise ValueError(f"rows lack columns {', '.join(missing)} (need {', '.join(ROW_COLUMNS)})")
    if rows.empty:
        raise ValueError("rows is empty: nothing to write")
    bad = sorted(set(rows["placement"]) - set(PLACEMENTS))
    if bad:
        raise ValueError(f"placement must be out_of_place or in_place, got {bad}")
    for column in ("type", "redop"):
        if any(not str(v) or any(c.isspace() for c in str(v)) for v in rows[column]):
            raise ValueError(f"{column} values must be single words")
    for column in ("size", "count"):
        if (rows[column] < 0).any():
            raise ValueError(f"{column} must be >= 0")
    times = rows["time_us"].astype(float)
    if not (times > 0).all() or not times.map(math.isfinite).all():
        raise ValueError("time_us must be positive and finite (nccl-tests cannot print anything else)")
    for column in ("algbw_gbps", "busbw_gbps"):
        values = rows[column].astype(float)
        if not (values >= 0).all() or not values.map(math.isfinite).all():
            raise ValueError(f"{column} must be finite and >= 0")


def format_nccl_log(
    op: str,
    rows: pd.DataFrame,
    *,
    nranks: int,
    header: dict[str, str] | None = None,
    rank_lines: list[str] | None = None,
) -> str:
    """nccl-tests stdout (current layout) for ``rows``, which :func:`parse_nccl_log` reads back.

    Args:
        op: moesim op name or nccl-tests binary (names the test: ``# Collective test starting``).
        rows: columns :data:`ROW_COLUMNS` (``wrong`` may be NaN or ``"N/A"``); every size has the
            same placements (both, or only one of them, which then is the only result group).
        nranks: ranks of the run, written as a ``# nranks: N`` comment.
        header: values for the preamble: the ``# nThread ...`` keys (``nThread``, ``nGpus``,
            ``minBytes``, ``maxBytes``, ``step``, ``warmup iters``, ``iters``, ...; ``minBytes`` and
            ``maxBytes`` default to the sizes of ``rows``), ``nccl-tests version``, ``NCCL version``;
            any other key is written as a ``# key: value`` comment. The footer is computed.
        rank_lines: ``#  Rank  0 Group  0 Pid ... on HOST device  0 [...] NAME`` lines, one per rank.

    Numbers are printed as nccl-tests does (two decimals) when that reads back exactly, otherwise
    with every digit, so that parsing the text gives ``rows`` back (sorted as :attr:`NcclLog.rows`).
    """
    binary = _BINARIES[_moesim_op(op)]
    _check_rows(rows)
    if nranks < 1:
        raise ValueError(f"nranks must be at least 1, got {nranks}")
    listed = {int(m.group(1)) for line in rank_lines or [] if (m := RANK_LINE.search(line))}
    if listed and len(listed) != nranks:
        raise ValueError(f"rank_lines name {len(listed)} ranks, but nranks is {nranks}")
    header = dict(header or {})
    placements = [p for p in PLACEMENTS if p in set(rows["placement"])]
    table: dict[tuple, dict[str, pd.Series]] = {}
    for _, r in rows.iterrows():
        key = (int(r["size"]), str(r["type"]), str(r["redop"]), int(r["root"]))
        if r["placement"] in table.setdefault(key, {}):
            raise ValueError(f"rows has size {key[0]} ({r['placement']}) twice")
        table[key][r["placement"]] = r
    for key, byp in table.items():
        if len(byp) != len(placements):
            raise ValueError(f"size {key[0]} lacks {set(placements) - set(byp)}: every size needs them all")
        if len({int(r["count"]) for r in byp.values()}) != 1:
            raise ValueError(f"size {key[0]}: count differs between placements")

    out: list[str] = []
    if "nccl-tests version" in header:
        extra = "".join(f" {k}={header[k]}" for k in ("nccl-headers", "nccl-library") if k in header)
        out.append(f"# nccl-tests version {header['nccl-tests version']}{extra}")
    out.append(f"# Collective test starting: {binary}")
    sizes = [key[0] for key in table]
    run = {"minBytes": str(min(sizes)), "maxBytes": str(max(sizes))} | header
    plain = ("nThread", "nGpus", "minBytes", "maxBytes")  # printed without a colon
    words = [f"{key} {run[key]}" if key in plain else f"{key}: {run[key]}" for key in _RUN_KEYS if key in run]
    out.append("# " + " ".join(words))
    if "NCCL version" in header:
        out.append(f"# NCCL version {header['NCCL version']}")
    skip = {*_RUN_KEYS, *_FOOTER_KEYS, "nccl-tests version", "nccl-headers", "nccl-library", "NCCL version"}
    for key, value in header.items():
        if key not in skip and key != "nranks":
            out.append(f"# {key}: {value}")
    out.append(f"# nranks: {nranks}")
    out.append("#")
    out.append("# Using devices")
    for line in rank_lines or []:
        out.append(line if line.lstrip().startswith("#") else f"# {line}")
    out.append("#")
    labels = {"out_of_place": "out-of-place", "in_place": "in-place"}
    out.append(
        f"# {'':>10}  {'':>12}  {'':>8}  {'':>6}  {'':>6}  "
        + "".join(f"{labels[p]:^33}" for p in placements).rstrip()
    )
    out.append(
        f"# {'size':>10}  {'count':>12}  {'type':>8}  {'redop':>6}  {'root':>6}"
        + "".join(f"  {'time':>7}  {'algbw':>6}  {'busbw':>6}  {'#wrong':>6}" for _ in placements)
    )
    out.append(
        f"# {'(B)':>10}  {'(elements)':>12}  {'':>8}  {'':>6}  {'':>6}"
        + "".join(f"  {'(us)':>7}  {'(GB/s)':>6}  {'(GB/s)':>6}  {'':>6}" for _ in placements).rstrip()
    )
    wrong_total = 0.0
    for key in sorted(table):
        size, kind, redop, root = key
        first = table[key][placements[0]]
        line = f"{size:12d}  {int(first['count']):12d}  {kind:>8}  {redop:>6}  {root:6d}"
        for p in placements:
            r = table[key][p]
            wrong = _wrong(r["wrong"])
            wrong_total += 0.0 if wrong == "N/A" else float(wrong)
            line += (
                f"  {_num(float(r['time_us']), 7)}  {_num(float(r['algbw_gbps']), 6)}"
                f"  {_num(float(r['busbw_gbps']), 6)}  {wrong:>6}"
            )
        out.append(line)
    bad = int(wrong_total)
    out.append(f"# {'Out of bounds values':<20} : {bad} {'FAILED' if bad else 'OK'}")
    out.append(f"# {'Avg bus bandwidth':<20} : {float(rows['busbw_gbps'].astype(float).mean()):g}")
    out.append("#")
    out.append(f"# Collective test concluded: {binary}")
    return "\n".join(out) + "\n"
