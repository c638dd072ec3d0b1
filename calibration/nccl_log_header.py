"""What an nccl-tests preamble says about the run: ``# Rank`` lines, the launch command, and from
them the rank count, host count and GPU model (used by :func:`calibration.nccl_log.parse_nccl_log`).

Rules (the one place they are decided; the module docstring of :mod:`calibration.nccl_log` repeats
them for readers of logs):

- A ``# Rank`` line (``#  Rank  0 Group  0 Pid 1234 on host-a device  0 [0000:18:00] NVIDIA H100
  80GB HBM3``, or without ``Group`` in older versions) names one rank, its process, host and GPU.
  nccl-tests prints one per rank, so the lines are *complete* when their ranks are exactly 0..n-1
  and number at least the processes shown × ``nThread`` × ``nGpus``; then they give n ranks and the
  distinct host names give the hosts. Otherwise (an excerpt: only rank 127 shown) they only say
  "at least max rank + 1".
- A launch command gives launcher processes × ranks per process (``nThread`` × ``nGpus`` of the
  ``# nThread`` line, else ``-t`` × ``-g`` of the command) and hosts (``-npernode``, ``-N``...);
  one process on one host without an MPI or Slurm launcher.
- A ``# nranks: N`` comment (written by :func:`calibration.nccl_log.format_nccl_log`) gives N.
- The caller's ``nranks`` and ``hosts`` win over all of these. Otherwise the ranks are those of the
  launch command or the comment (which must agree, and not be below the largest rank shown plus
  one: the Rank lines may be the first of many), else the count of complete Rank lines, else None
  (the log does not say), except that partial Rank lines with nothing else to go by are refused:
  :class:`calibration.nccl_log.NcclLogError` asks for ``nranks`` (``moesim calibrate --ranks N``).
  The hosts are the distinct host names of complete Rank lines that show every rank, else the
  launch command's, else None; where both say, they must agree.
"""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass
from pathlib import Path

RANK_LINE = re.compile(
    r"#?\s*Rank\s+(\d+)\s+(?:Group\s+\d+\s+)?Pid\s+(\d+)\s+on\s+(\S+)\s+device\s+(\d+)"
    r"(?:\s+\[[^\]]*\])?[ \t]*(.*)$"
)
"""A ``# Rank`` line: groups rank, pid, host, device, GPU name (the rest of the line)."""
BINARY = re.compile(r"^(?:.*/)?(\w+_perf)(?:_mpi)?$")
"""An nccl-tests binary as a command word: group 1 is its name without ``_mpi``."""
LAUNCHERS = {"mpirun", "mpiexec", "mpiexec.hydra", "orterun", "srun"}
WRAPPERS = {"env", "timeout", "numactl", "taskset", "nsys", "sudo"}


@dataclass(frozen=True)
class RankLine:
    """One ``# Rank`` line: ``rank``, process ``pid``, ``host`` name, ``device`` index, ``gpu``
    name (``""`` when the line has none)."""

    rank: int
    pid: int
    host: str
    device: int
    gpu: str


def read_rank_line(text: str) -> RankLine | None:
    """The ``# Rank`` line in ``text``, or None if ``text`` is not one."""
    match = RANK_LINE.search(text)
    if match is None:
        return None
    rank, pid, host, device, gpu = match.groups()
    return RankLine(int(rank), int(pid), host, int(device), gpu.strip())


def words(text: str) -> list[str]:
    """``text`` split as a shell would, or on white space where its quotes do not pair up."""
    try:
        return shlex.split(text)
    except ValueError:
        return text.split()


def option(tokens: list[str], names: tuple[str, ...]) -> int | None:
    """The whole-number value of the first of ``names`` in ``tokens`` (``-g 8``, ``-g8``, ``--ngpus=8``)."""
    for i, token in enumerate(tokens):
        for name in names:
            if token == name and i + 1 < len(tokens):
                value = tokens[i + 1]
            elif token.startswith(name + "="):
                value = token[len(name) + 1 :]
            elif len(name) == 2 and token.startswith(name) and token[2:].isdigit():
                value = token[2:]
            else:
                continue
            if value.isascii() and value.isdigit():
                return int(value)
    return None


def launch_counts(command: str, binary: str, per_process: int | None) -> tuple[int | None, int | None]:
    """(ranks, hosts) that ``command`` launches: launcher processes × ``per_process`` ranks (None: the
    command's ``-g`` × ``-t``, 1 each by default); one process on one host without a launcher.
    Either is None where the command does not say."""
    tokens = words(command)
    at = next(i for i, t in enumerate(tokens) if (m := BINARY.match(t)) and m.group(1) == binary)
    args = tokens[at + 1 :]
    if per_process is None:
        per_process = (option(args, ("-g", "--ngpus")) or 1) * (option(args, ("-t", "--nthreads")) or 1)
    start = next((i for i, t in enumerate(tokens[:at]) if Path(t).name in LAUNCHERS), None)
    if start is None:
        return per_process, 1
    launcher = tokens[start:at]
    if Path(launcher[0]).name == "srun":
        procs = option(launcher, ("-n", "--ntasks"))
        hosts = option(launcher, ("-N", "--nodes"))
        per_host = option(launcher, ("--ntasks-per-node",))
        if procs is None and hosts and per_host:
            procs = hosts * per_host
    else:  # mpirun, mpiexec, orterun and look-alikes
        procs = option(launcher, ("-np", "-n", "--np", "-c"))
        per_host = option(launcher, ("-npernode", "--npernode", "-N"))
        ppr = re.search(r"ppr:(\d+):node", " ".join(launcher))
        per_host = per_host or (int(ppr.group(1)) if ppr else None)
        hosts = -(-procs // per_host) if procs and per_host else None
    return (procs * per_process if procs else None), hosts


def gpu_name(ranks: dict[int, RankLine]) -> str | None:
    """The GPU model of the Rank lines (distinct names joined by ``", "``), None without any."""
    names = sorted({line.gpu for line in ranks.values() if line.gpu})
    return ", ".join(names) if names else None


_FIX = "pass nranks= (moesim calibrate --ranks N)"


def run_counts(
    ranks: dict[int, RankLine],
    per_process: int | None,
    launched: tuple[int | None, int | None],
    note: int | None,
    *,
    nranks: int | None = None,
    hosts: int | None = None,
) -> tuple[int | None, int | None] | str:
    """(ranks, hosts) of the run by the rules of this module, or a one-line reason to refuse.

    Args:
        ranks: the Rank lines by rank.
        per_process: ``nThread`` × ``nGpus`` of the ``# nThread`` line, None if the log lacks it.
        launched: (ranks, hosts) of the launch command (:func:`launch_counts`), (None, None) without one.
        note: N of a ``# nranks: N`` comment, else None.
        nranks, hosts: the caller's values; each wins over the log.
    """
    shown = len(ranks)
    floor = max(ranks, default=-1) + 1  # rank 127 shown: at least 128 ranks
    processes = len({(line.host, line.pid) for line in ranks.values()})
    complete = shown > 0 and floor == shown and (per_process is None or shown >= processes * per_process)
    if nranks is None:
        said = {name: value for name, value in (("launch command", launched[0]), ("# nranks", note)) if value}
        if len(set(said.values())) > 1:
            listed = ", ".join(f"{name} {value}" for name, value in said.items())
            return f"the log gives two rank counts ({listed}): {_FIX}"
        if said:
            (name, nranks), *_ = said.items()
            if nranks < floor:
                return f"the Rank lines name rank {floor - 1}, but the {name} says {nranks} ranks: {_FIX}"
        elif complete:
            nranks = shown
        elif shown:
            return (
                f"only {shown} of the Rank lines are shown (up to rank {floor - 1}, so at least {floor} "
                f"ranks) and nothing else in the log says how many ranks ran: {_FIX} and hosts= (--hosts N)"
            )
    if hosts is None:
        listed = len({line.host for line in ranks.values()}) if complete and shown == nranks else None
        if listed and launched[1] and listed != launched[1]:
            return (
                f"the log gives two host counts (Rank lines {listed}, launch command {launched[1]}): "
                "pass hosts= (moesim calibrate --hosts N)"
            )
        hosts = listed or launched[1]
    return nranks, hosts
