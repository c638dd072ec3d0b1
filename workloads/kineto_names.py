"""What a GPU op of a Kineto trace is, from its name and args: :func:`classify`, :func:`nccl_kernel`.

DeepEP kernels live in a ``deep_ep::`` or ``dpsk::ep::`` ``intranode``/``internode`` namespace
(``dispatch``, ``combine``, ``notify_dispatch``, ``cached_notify``); NCCL (and RCCL) kernels start
with ``nccl``. NCCL kernel names carry the collective and, from the kernels specialised per
algorithm and protocol, both of them. The spellings seen in traces:

- ``ncclKernel_AllReduce_RING_LL_Sum_float``, ``ncclKernel_Broadcast_RING_LL_Sum_int8_t``: ring, LL
- ``ncclDevKernel_AllReduce_Sum_f32_TREE_LL128``: tree, LL128
- ``ncclDevKernel_AllGather_RING_LL``: ring, LL
- ``ncclDevKernel_ReduceScatter_Sum_bf16_RING_SIMPLE``: ring, Simple
- ``..._NVLS_SIMPLE``, ``..._NVLS_TREE_SIMPLE``: nvls, nvls_tree; Simple
- ``..._COLLNET_DIRECT_SIMPLE``, ``..._COLLNET_CHAIN_SIMPLE``: collnet_direct, collnet_chain; Simple
- ``..._COLLNET_...`` (older NCCL, one CollNet algorithm, the chain): collnet_chain
- ``..._PAT_SIMPLE``: pat, Simple
- ``ncclAllReduceRingLLKernel_sum_f32`` (older NCCL): ring, LL
- ``ncclDevKernel_SendRecv``, ``ncclDevKernel_Generic_4``: neither (None, None)

The first spelling, ``ncclKernel_<Op>_<ALGO>_<PROTO>_<redop>_<type>``, is NCCL 2.17.1's (the
HolisticTraceAnalysis trace); newer NCCL names kernels ``ncclDevKernel_<Op>[_<redop>_<type>]_<ALGO>_
<PROTO>`` and runs point-to-point work, and work several algorithms share, in
``ncclDevKernel_SendRecv`` and ``ncclDevKernel_Generic*``, whose names do not say.

The algorithm and protocol words are matched as whole ``_``-separated upper-case tokens (the
reduction and type tokens, ``Sum``, ``f32``, ``int8_t``, are never upper case), so a name that
does not say gives None, never a guess. In ``../shared/data/traces/hta_nccl_2rank_rank0.json.gz``
the NCCL kernels are ``ncclKernel_AllReduce_RING_LL_Sum_float`` (15) and
``ncclKernel_Broadcast_RING_LL_Sum_int8_t`` (6); the DeepSeek-V3 trace has none (DeepEP only).
"""

from __future__ import annotations

import re
from typing import NamedTuple

from workloads.kineto_types import is_number

NCCL_ALGORITHMS = ("ring", "tree", "nvls", "nvls_tree", "collnet_direct", "collnet_chain", "pat")
"""NCCL's algorithms in moesim's spelling (NCCL_ALGO names, lower case)."""
NCCL_PROTOCOLS = ("LL", "LL128", "Simple")
"""NCCL's protocols as NCCL_PROTO spells them."""

_DEEPEP = re.compile(r"\b(?:deep_ep|dpsk::ep)::(?:intranode|internode)\w*::(\w+)")
_NCCL = re.compile(r"(?:^|[^A-Za-z0-9])nccl", re.IGNORECASE)
_NCCL_OPS = (  # most specific first: "AllReduce" and "ReduceScatter" both contain "Reduce"
    ("reducescatter", "nccl_reduce_scatter"),
    ("allreduce", "nccl_all_reduce"),
    ("allgather", "nccl_all_gather"),
    ("alltoall", "nccl_all_to_all"),
    ("sendrecv", "nccl_send_recv"),
    ("send", "nccl_send_recv"),
    ("recv", "nccl_send_recv"),
    ("broadcast", "nccl_broadcast"),
    ("reduce", "nccl_reduce"),
)
_ALGORITHM_TOKENS = (  # two-token names first: NVLS_TREE is not NVLS
    (("NVLS", "TREE"), "nvls_tree"),
    (("COLLNET", "DIRECT"), "collnet_direct"),
    (("COLLNET", "CHAIN"), "collnet_chain"),
    (("RING",), "ring"),
    (("TREE",), "tree"),
    (("NVLS",), "nvls"),
    (("PAT",), "pat"),
    (("COLLNET",), "collnet_chain"),  # before NCCL 2.12 split it, CollNet was the chain algorithm
)
_PROTOCOL_TOKENS = {"LL": "LL", "LL128": "LL128", "SIMPLE": "Simple"}
_CAMEL = re.compile(r"(Ring|Tree|CollNet)(LL128|LL|Simple)Kernel")  # ncclAllReduceRingLLKernel_sum_f32
_CAMEL_ALGORITHMS = {"Ring": "ring", "Tree": "tree", "CollNet": "collnet_chain"}
_DTYPE_BYTES = {
    "float": 4, "float32": 4, "double": 8, "float64": 8, "half": 2, "float16": 2, "bfloat16": 2,
    "long": 8, "int64": 8, "int": 4, "int32": 4, "short": 2, "int16": 2, "char": 1, "int8": 1,
    "byte": 1, "uint8": 1, "bool": 1, "complexfloat": 8, "complexdouble": 16,
}  # fmt: skip


class NcclKernelName(NamedTuple):
    """What an NCCL kernel's name says: the comm label (``nccl_all_reduce``, ...; ``nccl_other``
    when no collective is named), and the algorithm and protocol, None when not named."""

    op: str
    algorithm: str | None
    protocol: str | None


def _head(name: str) -> str:
    """The function of a demangled kernel name, without its argument list."""
    return name.replace("(anonymous namespace)", "").split("(", 1)[0]


def nccl_kernel(name: str) -> NcclKernelName | None:
    """The ``(op, algorithm, protocol)`` of an NCCL kernel from its name, None if it is not NCCL's.

    >>> nccl_kernel("ncclKernel_AllReduce_RING_LL_Sum_float(ncclDevComm*, unsigned long, ncclWork*)")
    NcclKernelName(op='nccl_all_reduce', algorithm='ring', protocol='LL')
    >>> nccl_kernel("ncclDevKernel_AllReduce_Sum_bf16_NVLS_TREE_SIMPLE(ncclDevKernelArgsStorage<4096ul>)")
    NcclKernelName(op='nccl_all_reduce', algorithm='nvls_tree', protocol='Simple')
    >>> nccl_kernel("ncclDevKernel_SendRecv(ncclDevKernelArgsStorage<4096ul>)")
    NcclKernelName(op='nccl_send_recv', algorithm=None, protocol=None)
    """
    head = _head(name)
    if not _NCCL.search(head) or _DEEPEP.search(head):
        return None
    lower = head.lower()
    op = next((label for token, label in _NCCL_OPS if token in lower), "nccl_other")
    camel = _CAMEL.search(head)
    if camel:
        return NcclKernelName(op, _CAMEL_ALGORITHMS[camel.group(1)], camel.group(2))
    tokens = [t for t in re.split(r"[^A-Za-z0-9]+", head) if t]
    algorithm = protocol = None
    for i in range(len(tokens)):
        if algorithm is None:
            for words, value in _ALGORITHM_TOKENS:
                if tuple(tokens[i : i + len(words)]) == words:
                    algorithm = value
                    break
        if protocol is None and tokens[i] in _PROTOCOL_TOKENS:
            protocol = _PROTOCOL_TOKENS[tokens[i]]
    return NcclKernelName(op, algorithm, protocol)


def classify(name: str) -> tuple[str, str | None]:
    """The ``(kind, comm)`` of a GPU op from its name alone.

    ``kind`` is ``communication`` for DeepEP kernels in an ``intranode``/``internode``/
    ``internode_ll`` namespace (``deep_ep::`` or ``dpsk::ep::``; ``get_dispatch_layout`` is local
    compute) and for NCCL/RCCL kernels (see :func:`nccl_kernel` for their algorithm and protocol);
    ``memcpy``/``memset`` for ``Memcpy ...``/``Memset ...``; otherwise ``compute``.

    >>> classify("void dpsk::ep::internode::combine<false, 8>(int4*, float*)")
    ('communication', 'deepep_combine')
    >>> classify("ncclDevKernel_AllGather_RING_LL(ncclDevKernelArgsStorage<4096ul>)")
    ('communication', 'nccl_all_gather')
    >>> classify("Memcpy DtoD (Device -> Device)")
    ('memcpy', None)
    """
    if name.startswith("Memcpy"):
        return "memcpy", None
    if name.startswith("Memset"):
        return "memset", None
    head = _head(name)
    match = _DEEPEP.search(head)
    if match:
        func = match.group(1)
        if func == "get_dispatch_layout":
            return "compute", None
        if func == "dispatch":
            return "communication", "deepep_dispatch"
        if func == "combine":
            return "communication", "deepep_combine"
        if "notify" in func or "barrier" in func or "clean" in func:
            return "communication", "deepep_notify"
        return "communication", "deepep_other"
    nccl = nccl_kernel(name)
    if nccl is not None:
        return "communication", nccl.op
    return "compute", None


def nccl_label(collective: str) -> str | None:
    """Label from PyTorch's ``Collective name`` arg (``all_reduce``, ``_allgather_base``, ...)."""
    key = collective.lower().replace("_", "")
    if key.startswith("barrier"):
        return "nccl_all_reduce"
    for token, label in _NCCL_OPS:
        if token in key:
            return label
    return None


def nccl_nbytes(args: dict, label: str | None) -> int | None:
    """nccl-tests ``size`` (bytes) of an NCCL kernel from its message metadata, None when absent:
    ``Out msg nelems`` for an all-gather, else ``In msg nelems``, times the ``dtype``'s bytes."""
    elem = _DTYPE_BYTES.get(str(args.get("dtype", "")).lower())
    if elem is None and str(args.get("dtype", "")).lower().startswith("float8"):
        elem = 1
    key = "Out msg nelems" if label == "nccl_all_gather" else "In msg nelems"
    nelems = args.get(key)
    if elem is None or not is_number(nelems) or nelems < 0:
        return None
    return int(nelems) * elem
