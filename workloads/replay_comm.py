"""What a replayed trace's communication kernels move: the DeepEP traffic model and NCCL kernels
as schedules (the assumptions are in :mod:`workloads.replay`'s docstring).

:func:`comm_schedule` turns one communication kernel into a :class:`~simulator.ops.Schedule`;
every NCCL op goes through ``_nccl_collective``, which lays it out with :mod:`workloads.nccl`.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterable
from dataclasses import dataclass
from fractions import Fraction

import numpy as np

from simulator.ops import Schedule
from topologies.leaf_spine import LeafSpine
from workloads import collectives, nccl
from workloads.kineto import COMM_LABELS
from workloads.moe import LayerTraffic, dispatch_schedule, reverse


class ReplayError(ValueError):
    """A trace, fabric and communication model that do not fit together (one-line message)."""


@dataclass(frozen=True)
class CommModel:
    """What the communication kernels of a trace move (see the module docstring). Data only.

    Attributes:
        hidden: model width (elements per token).
        tokens: tokens each rank dispatches per dispatch kernel.
        top_k: experts each token picks.
        experts: routed experts per MoE layer, spread evenly over the ranks.
        dispatch_bytes_per_element: bytes per hidden element in dispatch (FP8: 1).
        scale_bytes: bytes of one quantisation scale in dispatch (FP32: 4; 0 for none).
        scale_block: elements per scale (128).
        combine_bytes_per_element: bytes per hidden element in combine (BF16: 2).
        hierarchical: DeepEP internode (one copy per destination host over the NIC, then NVLink
            forwards) rather than one copy per destination GPU straight to it.
        notify_bytes: bytes per pair of the notify all-to-all.
        nccl_size: nccl-tests ``size`` (bytes) of NCCL kernels whose trace entry has none.
        nccl_algorithm: algorithm of NCCL kernels whose name gives none (or one that does not
            apply to the fabric): ``auto`` (NCCL's choice), an NCCL algorithm (where it applies)
            or ``hierarchical`` (moesim's own all-reduce).
    """

    hidden: int = 7168
    tokens: int = 4096
    top_k: int = 8
    experts: int = 256
    dispatch_bytes_per_element: float = 1.0
    scale_bytes: float = 4.0
    scale_block: int = 128
    combine_bytes_per_element: float = 2.0
    hierarchical: bool = True
    notify_bytes: float = 1024.0
    nccl_size: float | None = None
    nccl_algorithm: str = "auto"


@dataclass(frozen=True)
class CommBytes:
    """Bytes each of ``ranks`` GPUs sends in one communication kernel, by tier.

    Attributes:
        nic: ``(ranks,)`` bytes sent to GPUs on other hosts (through the NIC).
        nvlink: ``(ranks,)`` bytes sent to other GPUs of the same host (NVLink), forwards included.
    """

    nic: np.ndarray
    nvlink: np.ndarray


# --------------------------------------------------------------------------------------------------
# traffic


def hit_probability(experts: int, top_k: int, group: int) -> float:
    """Chance that ``top_k`` distinct experts picked uniformly out of ``experts`` include at least one
    of a given ``group`` of them: ``1 - C(experts - group, top_k) / C(experts, top_k)``.

    >>> round(hit_probability(256, 8, 4), 6)  # one of 64 ranks
    0.119934
    """
    return float(1 - Fraction(math.comb(experts - group, top_k), math.comb(experts, top_k)))


def token_bytes(comm: CommModel, label: str) -> float:
    """Bytes of one token copy in a dispatch (``deepep_dispatch``) or combine (``deepep_combine``)."""
    if label == "deepep_dispatch":
        scales = math.ceil(comm.hidden / comm.scale_block) * comm.scale_bytes if comm.scale_bytes else 0.0
        return comm.hidden * comm.dispatch_bytes_per_element + scales
    if label == "deepep_combine":
        return comm.hidden * comm.combine_bytes_per_element
    raise ValueError(f"{label!r} is not deepep_dispatch or deepep_combine")


def expected_copies(comm: CommModel, ranks: int, gpus_per_host: int) -> LayerTraffic:
    """Expected token copies under balanced routing (module docstring): ``dispatch[s, d]`` from rank
    s to rank d (diagonal: local) and ``host_copies[s, h]`` from rank s to host h."""
    per_rank = np.array([len(a) for a in np.array_split(np.arange(comm.experts), ranks)])
    hosts = -(-ranks // gpus_per_host)
    per_host = np.bincount(np.arange(ranks) // gpus_per_host, weights=per_rank, minlength=hosts)
    p_rank = np.array([hit_probability(comm.experts, comm.top_k, int(n)) for n in per_rank])
    p_host = np.array([hit_probability(comm.experts, comm.top_k, int(n)) for n in per_host])
    dispatch = np.broadcast_to(comm.tokens * p_rank, (ranks, ranks)).copy()
    host_copies = np.broadcast_to(comm.tokens * p_host, (ranks, hosts)).copy()
    return LayerTraffic(dispatch, host_copies, np.zeros(0))


DEEPEP_TRAFFIC = ("deepep_dispatch", "deepep_combine")
"""The DeepEP kernels whose traffic the MoE model sets (and which need whole hosts when hierarchical)."""


def check_comm(
    comm: CommModel, ranks: int, gpus_per_host: int, *, labels: Iterable[str] | None = None
) -> None:
    """Raise :class:`ReplayError` naming the first field of ``comm`` that cannot work on ``ranks``.

    With ``labels`` (the comm labels of the trace) only the fields those kernels use are checked:
    the DeepEP fields when there is a DeepEP kernel, whole hosts for ``hierarchical`` only when
    there is a dispatch or combine. Without, every field is.
    """
    used = None if labels is None else set(labels)
    if used is None or any(x.startswith("deepep") for x in used):
        for name in ("hidden", "tokens", "top_k", "experts", "scale_block"):
            value = getattr(comm, name)
            least = 0 if name == "tokens" else 1
            if isinstance(value, bool) or not isinstance(value, int) or value < least:
                raise ReplayError(f"{name}: must be a whole number >= {least}, got {value!r}")
        if comm.top_k > comm.experts:
            raise ReplayError(f"top_k: {comm.top_k} experts per token but only {comm.experts} experts")
        for name in (
            "dispatch_bytes_per_element",
            "scale_bytes",
            "combine_bytes_per_element",
            "notify_bytes",
        ):
            value = getattr(comm, name)
            if not (isinstance(value, int | float) and math.isfinite(value) and value >= 0):
                raise ReplayError(f"{name}: must be a number of bytes >= 0, got {value!r}")
    if comm.nccl_size is not None and not (math.isfinite(comm.nccl_size) and comm.nccl_size >= 0):
        raise ReplayError(f"nccl_size: must be a number of bytes >= 0, got {comm.nccl_size!r}")
    known = ("auto", "hierarchical", *nccl.ALGORITHMS["all_reduce"])
    if comm.nccl_algorithm not in known:
        raise ReplayError(f'nccl_algorithm: "{comm.nccl_algorithm}" is not one of {", ".join(known)}')
    dispatches = used is None or bool(used & set(DEEPEP_TRAFFIC))
    if comm.hierarchical and dispatches and ranks % gpus_per_host:
        raise ReplayError(
            f"hierarchical dispatch needs whole hosts: {ranks} ranks is not a multiple of "
            f"gpus_per_host={gpus_per_host} (use --direct or another --ranks)"
        )


_NCCL_OPS = {
    "nccl_all_reduce": "all_reduce",
    "nccl_all_gather": "all_gather",
    "nccl_reduce_scatter": "reduce_scatter",
    "nccl_all_to_all": "all_to_all",
    "nccl_send_recv": "send_recv",
    "nccl_broadcast": "broadcast",
    "nccl_reduce": "reduce",
    "nccl_other": "all_reduce",
}


def _nccl_collective(
    op: str,
    members: np.ndarray,
    size: float,
    algorithm: str | None,
    protocol: str | None,
    spec: LeafSpine,
    comm: CommModel,
) -> Schedule:
    """The one place an NCCL op becomes a schedule: ``op`` of nccl-tests ``size`` bytes over the
    GPUs ``members`` with the algorithm and protocol the kernel named (None: what NCCL's cost
    model picks, :func:`workloads.nccl.resolve`), on NCCL's channels; ``comm.nccl_algorithm``
    ``hierarchical`` keeps moesim's own all-reduce for kernels that name no algorithm."""
    if op == "send_recv":
        return collectives.send_recv(members, size)
    if op == "all_reduce" and algorithm is None and comm.nccl_algorithm == "hierarchical":
        return collectives.all_reduce(members, size, "hierarchical", spec.gpus_per_host)
    fabric = spec.describe()
    if algorithm is not None and not nccl.applies(fabric, op, members, algorithm):
        algorithm = None  # CollNet, or NVLS on a fabric without it: what NCCL would run there
    if (
        algorithm is None
        and comm.nccl_algorithm != "auto"
        and nccl.applies(fabric, op, members, comm.nccl_algorithm)
    ):
        algorithm = comm.nccl_algorithm
    try:
        chosen, proto, channels = nccl.resolve(
            fabric, op, members, size, algorithm or "auto", protocol or "auto", None
        )
        return nccl.nccl_schedule(fabric, op, members, size, chosen, proto, channels)
    except nccl.AlgorithmError as err:
        raise ReplayError(f"{op}: {err}") from None


def described_schedule(
    label: str,
    comm: CommModel,
    spec: LeafSpine,
    members: np.ndarray,
    nbytes: float | None,
    algorithm: str | None,
    protocol: str | None,
) -> tuple[Schedule, str]:
    """:func:`comm_schedule` and what it was built as (``all_reduce/ring``, ``dispatch/direct``)."""
    g = spec.gpus_per_host
    ranks = len(members)
    if label in DEEPEP_TRAFFIC:
        traffic = expected_copies(comm, ranks, g)
        how = "hierarchical" if comm.hierarchical else "direct"
        forward = dispatch_schedule(traffic, members, token_bytes(comm, label), g, comm.hierarchical, label)
        if label == "deepep_dispatch":
            return forward, f"dispatch/{how}"
        return reverse(forward, 1.0, label), f"combine/{how}"
    if label in ("deepep_notify", "deepep_other"):
        schedule = collectives.all_to_all(members, comm.notify_bytes * ranks)
        return dataclasses.replace(schedule, name=label), schedule.name
    if label in _NCCL_OPS:
        size = nbytes if nbytes is not None else comm.nccl_size
        if size is None:
            raise ReplayError(f"{label}: the trace gives no message size: give one (--nccl-size 64MiB)")
        schedule = _nccl_collective(_NCCL_OPS[label], members, float(size), algorithm, protocol, spec, comm)
        return dataclasses.replace(schedule, name=label), schedule.name
    raise ReplayError(f"{label!r} is not a communication label (one of {', '.join(COMM_LABELS)})")


def comm_schedule(
    label: str,
    comm: CommModel,
    spec: LeafSpine,
    ranks: int,
    nbytes: float | None = None,
    algorithm: str | None = None,
    protocol: str | None = None,
    *,
    members: np.ndarray | None = None,
) -> Schedule:
    """The schedule of one communication kernel with label ``label`` (:data:`COMM_LABELS`) over GPUs
    ``0 .. ranks-1`` of ``spec`` (or the GPU ids ``members``); ``nbytes`` is the kernel's NCCL size
    in bytes when the trace has one, ``algorithm`` and ``protocol`` what its name says
    (:attr:`Kernel.algorithm`, :attr:`Kernel.protocol`), None when it does not."""
    members = np.arange(ranks, dtype=np.int64) if members is None else np.asarray(members, dtype=np.int64)
    return described_schedule(label, comm, spec, members, nbytes, algorithm, protocol)[0]


def comm_bytes(
    label: str, comm: CommModel, spec: LeafSpine, ranks: int, nbytes: float | None = None
) -> CommBytes:
    """Bytes each rank sends in one ``label`` kernel (:func:`comm_schedule`), NIC and NVLink apart.

    Under the default model a DeepEP dispatch sends, per rank, ``T * b * (H - 1) * p_host`` bytes
    through its NIC (hierarchical; ``T * b * (R - G) * p_rank`` direct) and ``T * b * (G - 1) * H *
    p_rank`` over NVLink (direct: ``T * b * (G - 1) * p_rank``), with T tokens, b :func:`token_bytes`,
    R ranks on H hosts of G GPUs, and p the :func:`hit_probability` of a rank's or host's experts.
    """
    schedule = comm_schedule(label, comm, spec, ranks, nbytes)
    src, dst = np.asarray(schedule.src), np.asarray(schedule.dst)
    g = spec.gpus_per_host
    remote = src // g != dst // g
    nic = np.bincount(src[remote], weights=schedule.nbytes[remote], minlength=ranks)
    nvlink = np.bincount(src[~remote], weights=schedule.nbytes[~remote], minlength=ranks)
    return CommBytes(nic, nvlink)
