"""A job's Kineto traces, one file per rank, and the collectives their communication kernels form.

HolisticTraceAnalysis (and ``torch.profiler`` with one ``on_trace_ready`` handler per rank) leaves
one trace per rank in a directory. :func:`load_trace_set` reads every ``*.json`` / ``*.json.gz``
file there; a file's rank is its ``distributedInfo.rank``, else the number after ``rank`` in its
name (``rank-0.json.gz``, ``rank_1.json``, ``trace_rank3.json``). The ranks must be ``0 .. n-1``,
each once, and agree with any ``distributedInfo.world_size``.

:func:`match_collectives` pairs the communication kernels of the ranks: the i-th NCCL kernel of a
communication group on each rank that has the group is one collective. The group of an NCCL kernel
is its process group (the ``Process Group Name`` arg that newer PyTorch records, else ``Process
Group Description``), else its stream; DeepEP kernels form one group. Each rank keeps its own
kernel, so its own message size. Ranks whose sequences differ (count, or the op at some position)
are an error naming the file and the kernel.

Times are seconds, each trace relative to its own origin (the ranks' clocks are not compared).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from workloads.kineto import load_kineto
from workloads.kineto_types import Kernel, KinetoError, KinetoTrace

TRACE_SUFFIXES = (".json", ".json.gz")
"""File name endings read as traces in a trace-set directory."""

_RANK_IN_NAME = re.compile(r"(?<![a-z])rank[-_]?(\d+)", re.IGNORECASE)


@dataclass
class TraceSet:
    """The traces of one job, ``traces[r]`` rank r's.

    Attributes:
        traces: per rank, its trace.
        paths: per rank, the file it was read from.
        directory: the directory read.
        rank_from: per rank, where its rank came from: ``distributedInfo`` or ``file name``.
    """

    traces: list[KinetoTrace]
    paths: list[Path]
    directory: Path
    rank_from: list[str]

    @property
    def ranks(self) -> int:
        """Number of ranks (files)."""
        return len(self.traces)


@dataclass(frozen=True)
class CollectiveCall:
    """One collective of a multi-rank job: the kernel each member rank ran for it.

    Attributes:
        group: the communication group, e.g. ``process group '0'``, ``stream 20``, ``DeepEP``.
        position: which of the group's collectives it is, from 0.
        label: the comm label (:data:`workloads.kineto.COMM_LABELS`) all members agree on.
        kernels: member rank -> its kernel, in rank order.
    """

    group: str
    position: int
    label: str
    kernels: dict[int, Kernel]

    @property
    def members(self) -> list[int]:
        """Member ranks, ascending."""
        return sorted(self.kernels)


def rank_from_name(name: str) -> int | None:
    """The rank a trace file's name carries (``rank-0.json.gz``, ``trace_rank3.json``), or None.

    >>> rank_from_name("worker0_rank12.1716400000.pt.trace.json")
    12
    """
    found = _RANK_IN_NAME.findall(name)
    return int(found[-1]) if found else None


def trace_files(directory: Path) -> list[Path]:
    """The trace files of a trace-set directory (:data:`TRACE_SUFFIXES`), sorted by name."""
    return sorted(p for p in directory.iterdir() if p.is_file() and p.name.endswith(TRACE_SUFFIXES))


def load_trace_set(directory: str | Path) -> TraceSet:
    """Read the per-rank traces in ``directory`` (see the module docstring).

    Raises:
        KinetoError: no trace file, a file that is not a usable trace, a file without a rank, a
            rank twice, a missing rank, or a ``world_size`` other than the number of files. The
            message is one line naming the file and the fix.
        OSError: the directory or a file cannot be read.
    """
    directory = Path(directory)
    files = trace_files(directory)
    if not files:
        raise KinetoError(f"{directory}: no trace files ({', '.join('*' + s for s in TRACE_SUFFIXES)})")
    by_rank: dict[int, tuple[KinetoTrace, Path, str]] = {}
    for path in files:
        trace = load_kineto(path)
        rank, source = trace.rank, "distributedInfo"
        if rank is None:
            rank, source = rank_from_name(path.name), "file name"
        if rank is None:
            raise KinetoError(
                f"{path}: no distributedInfo.rank and no rank in the file name (name it rank-N.json)"
            )
        if rank in by_rank:
            raise KinetoError(f"{path}: rank {rank} again (also {by_rank[rank][1].name}): one trace per rank")
        by_rank[rank] = (trace, path, source)
    n = len(by_rank)
    missing = sorted(set(range(n)) - set(by_rank))
    if missing:
        raise KinetoError(
            f"{directory}: ranks {sorted(by_rank)} but not rank {missing[0]}: a set of {n} traces needs "
            f"ranks 0..{n - 1} (add rank {missing[0]}'s trace, or fix distributedInfo.rank / the file names)"
        )
    for trace, path, _ in by_rank.values():
        if trace.world_size is not None and trace.world_size != n:
            raise KinetoError(
                f"{path}: distributedInfo.world_size is {trace.world_size} but {directory} holds {n} "
                f"rank traces (add the missing ranks' traces, or replay one file alone)"
            )
    ordered = [by_rank[r] for r in range(n)]
    return TraceSet(
        traces=[t for t, _, _ in ordered],
        paths=[p for _, p, _ in ordered],
        directory=directory,
        rank_from=[s for _, _, s in ordered],
    )


def comm_group(kernel: Kernel) -> str:
    """The communication group of a communication kernel (module docstring)."""
    if kernel.comm is not None and kernel.comm.startswith("deepep"):
        return "DeepEP"
    for key in ("Process Group Name", "Process Group Description"):
        value = kernel.args.get(key)
        if isinstance(value, str | int) and not isinstance(value, bool) and str(value) != "":
            return f"process group {str(value)!r}"
    return f"stream {kernel.stream}"


def _listed_ranks(kernel: Kernel) -> list[int] | None:
    """``Process Group Ranks`` (``"[0, 1]"``) as a list, None when absent or not a plain list."""
    text = kernel.args.get("Process Group Ranks")
    if not isinstance(text, str):
        return None
    inner = text.strip()
    if not (inner.startswith("[") and inner.endswith("]")):
        return None
    parts = [p.strip() for p in inner[1:-1].split(",") if p.strip()]
    if not parts or not all(p.isascii() and p.isdigit() for p in parts):
        return None
    return [int(p) for p in parts]


def match_collectives(traces: TraceSet) -> list[CollectiveCall]:
    """The collectives of a trace set: per group, the i-th communication kernel of every rank that
    has the group (module docstring), sorted by group, then position.

    Raises:
        KinetoError: ranks whose kernel sequences of a group differ in length or in the op at some
            position, a group on only one rank of several, or a ``Process Group Ranks`` list that
            names other ranks than those whose traces have the group. One line naming the file, the
            group and the kernel.
    """
    groups: dict[str, dict[int, list[Kernel]]] = {}
    for rank, trace in enumerate(traces.traces):
        for k in sorted(trace.communication, key=lambda k: (k.start, k.index)):
            groups.setdefault(comm_group(k), {}).setdefault(rank, []).append(k)
    calls: list[CollectiveCall] = []
    for group in sorted(groups):
        per_rank = groups[group]
        members = sorted(per_rank)
        ref = members[0]
        ref_name = traces.paths[ref].name
        listed = _listed_ranks(per_rank[ref][0])
        if listed is not None and sorted(listed) != members:
            raise KinetoError(
                f"{traces.paths[ref]}: {group} lists ranks {listed}, but only the traces of ranks "
                f"{members} have its kernels (add the missing ranks' traces)"
            )
        if len(members) == 1 and traces.ranks > 1 and listed is None:
            others = sorted(
                {comm_group(k) for r, t in enumerate(traces.traces) if r != ref for k in t.communication}
            )
            raise KinetoError(
                f"{traces.paths[ref]}: communication kernels of {group} (kernel {per_rank[ref][0].index}) "
                f"match no other rank's (they have {', '.join(others) or 'none'}); without a process group "
                f"name kernels are matched by stream"
            )
        for rank in members[1:]:
            mine, theirs = per_rank[rank], per_rank[ref]
            path = traces.paths[rank]
            for i, (a, b) in enumerate(zip(mine, theirs, strict=False)):
                if a.comm != b.comm:
                    raise KinetoError(
                        f"{path}: communication kernel {i} of {group} (trace kernel {a.index}) is "
                        f"{a.comm}, rank {ref} ({ref_name}) has {b.comm} there: the traces must cover "
                        f"the same steps on every rank"
                    )
            if len(mine) != len(theirs):
                longer, which = (mine, rank) if len(mine) > len(theirs) else (theirs, ref)
                extra = longer[min(len(mine), len(theirs))]
                raise KinetoError(
                    f"{path}: {group} has {len(mine)} communication kernels, rank {ref} ({ref_name}) has "
                    f"{len(theirs)}: kernel {min(len(mine), len(theirs))} (trace kernel {extra.index} of "
                    f"rank {which}, {extra.comm}) has no match (profile the same steps on every rank)"
                )
        for i in range(len(per_rank[ref])):
            kernels = {rank: per_rank[rank][i] for rank in members}
            calls.append(CollectiveCall(group, i, str(per_rank[ref][i].comm), kernels))
    return calls
