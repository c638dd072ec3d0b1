"""NCCL's algorithm/protocol cost model (the built-in tuner), re-implemented at one pinned release.

Pinned release: **NCCL 2.26.2-1**, NVIDIA/nccl commit ``f44ac759fee12ecb3cc6891e9e739a000f66fd70``
(its ``makefiles/version.mk`` reads 2.26.2, PKG_REVISION 1). Every constant and formula below
was read from that commit; this is an independent Python re-implementation (facts only):

* ``src/graph/tuning.cc`` -- ``ncclTopoTuneModel`` (bus/algorithm bandwidth and latency tables,
  protocol and algorithm enables, LL128 rules, thread thresholds) and ``ncclTopoGetAlgoTime``
  (tree correction factors, ring "plateau" latency factor, ``time = lat + nBytes/(1000*bw)``).
* ``src/enqueue.cc`` -- ``getAlgoInfo`` (``nBytes = typeSize * ncclFuncMaxSendRecvCount``),
  ``updateCollCostTable`` (which algorithms a collective may consider), ``topoGetAlgoInfo``
  (minimum-time pick, first-found wins ties; channel and thread reduction for small sizes).
* ``src/graph/search.cc`` (speed arrays, ``ncclTopoCompute``, ``ncclTopoDupChannels``),
  ``src/graph/connect.cc`` (``ncclTopoPostset`` channel doubling), ``src/init.cc`` (which graph
  each algorithm uses, min/max channels of each search), ``src/transport/nvls.cc``
  (``NVLS_NCHANNELS_SM90 = 16``), ``src/graph/topo.h`` (NVLink/PCI bandwidths per link),
  ``src/include/device.h`` (thread counts) and ``src/include/comm.h`` (thread thresholds).

Units. NCCL's tables are in GB/s (1e9 bytes/s) and microseconds; this module's public
functions take and return bytes, bytes/s and seconds. NCCL computes in float32; the tables and
the time are rounded to float32 where NCCL stores a ``float``, so results follow the C++
arithmetic closely (checked against the formulas, not against a running NCCL build).

Size convention. ``nbytes`` is nccl-tests' ``size`` column for every op: the buffer for
all_reduce / broadcast / reduce, the *total output* for all_gather and the *total input* for
reduce_scatter. That is exactly NCCL's tuner ``nBytes``: ``getAlgoInfo`` uses
``typeSize * ncclFuncMaxSendRecvCount(func, nRanks, count)``, which is ``nRanks * count`` for
all_gather (``count`` = per-rank send count) and reduce_scatter (``count`` = per-rank receive
count) and ``count`` otherwise. So no conversion is needed.

Cost model (per collective ``c``, algorithm ``a``, protocol ``p``; ``nc`` = channels of the
search graph ``a`` runs on, ``bw`` its per-channel bandwidth, ``nNodes`` hosts, ``nRanks`` GPUs):

* ``busBw = nc * bw`` with ``bw = bwIntra`` when ``nNodes <= 2`` else ``bwInter``; NVLS uses
  ``min(bwIntra, bwInter)``, NVLS-tree ``min(bwIntra, bwInter or bwInter/2 beyond 2 nodes)``.
* Refinements: ring LL ``min(llMaxBw, 0.5 busBw)``; ring LL128 ``min(0.92 busBw,
  nc*perChMaxRingLL128Bw)``; tree (all_reduce) ``min(0.92 busBw, nc*perChMaxTreeBw)``, then LL
  ``min(busBw/3.8, llMaxBw)``, LL128 ``min(busBw*(7/9 on one node, else 120/128),
  nc*perChMaxTreeLL128Bw)``, and ``x0.85`` if any node's tree fell back to the plain TREE
  pattern; PAT ``x0.75``.
* Algorithm bandwidth: ring ``busBw * nRanks/nsteps`` (``nsteps`` = 2(n-1) all_reduce, n-1
  all_gather / reduce_scatter, n otherwise); NVLS / NVLS-tree ``x5/6``; tree ``x0.5``; no
  conversion for non-ring all_gather / reduce_scatter (NVLS, PAT).
* Latency: ``baseLat[a][p]`` plus hardware latencies ``hwLat[NVLink|PCI|NET][a][p]``: ring
  ``(nsteps - nInterSteps)*max(intraLat, netOverhead) + nInterSteps*interLat``; tree
  ``2*((nRanks/nNodes-1)*intraLat + log2(nNodes)*interLat)``; NVLS ``intraLat (+ interLat)``;
  NVLS-tree ``intraLat + 2*log2(nNodes)*interLat``; PAT ``8 + log2(nNodes)*interLat/3.5 +
  2.8*nRanks``. ``netOverhead`` is 1 us on Intel / other CPUs and 2 us on AMD, x3 for Simple.
* Time (us): ``lat + nBytes/(1000*bw)``, where tree all_reduce ``bw`` is scaled by
  ``treeCorrectionFactor[p][log2(nBytes/64)]`` (64 B .. 256 MiB) and multi-node ring/Simple
  all_reduce latency by 1.4 (1.9 before SM80) once ``nBytes/(nChannels*nRanks) >= 64``.
* Enables: LL128 only if the graph's ``typeInter <= PXB`` (or ``<= PXN`` on SM90+),
  ``typeIntra <= NVB``, all GPUs of one compute capability in {70, 80, 90, 100, 120} (SM90 ring
  all_reduce on 2 ranks is off with CUDA 11.8); NVLS / NVLS-tree Simple only; NVLS-tree off on
  one node; CollNet off without CollNet support, which also turns multi-node NVLS off; NVLS
  all_gather / reduce_scatter single-node only and at most 32 ranks; PAT only for
  all_gather / reduce_scatter, Simple, one GPU per node (``NCCL_PAT_ENABLE`` default).

What is not modelled: CollNet (SHARP) bandwidth/latency formulas -- CollNet must be off
(``collnet_support=False``; it is off unless ``NCCL_COLLNET_ENABLE=1`` with a SHARP plugin),
tuner plugins, MNNVL, user env overrides other than the NCCL_ALGO / NCCL_PROTO restriction of
:func:`choose`, and the per-datatype rules (NVLS needs a sum/min/max the NVLS kernels support,
fp8 ring penalty, PAT reduce_scatter without PreMulSum): the model assumes a sum on a
NVLS-capable type such as float32/bf16. Aggregated (grouped) operations are not modelled: one
collective per launch (``numPipeOps = 1``).
"""

from __future__ import annotations

import math
import struct
from dataclasses import dataclass
from functools import lru_cache

__all__ = [
    "ALGORITHMS",
    "NCCL_COMMIT",
    "NCCL_VERSION",
    "OPS",
    "PROTOCOLS",
    "TuningTopology",
    "channels_used",
    "choose",
    "predicted_time",
    "switch_points",
]

NCCL_VERSION = "2.26.2-1"
NCCL_COMMIT = "f44ac759fee12ecb3cc6891e9e739a000f66fd70"

#: NCCL's algorithms, in NCCL's index order (``NCCL_ALGO_TREE`` = 0 ... ``NCCL_ALGO_PAT`` = 6).
ALGORITHMS = ("tree", "ring", "collnet_direct", "collnet_chain", "nvls", "nvls_tree", "pat")
#: NCCL's protocols, in NCCL's index order.
PROTOCOLS = ("LL", "LL128", "Simple")
#: Collectives, in NCCL's ``ncclFunc_t`` order.
OPS = ("broadcast", "reduce", "all_gather", "reduce_scatter", "all_reduce")

_TREE, _RING, _CN_DIRECT, _CN_CHAIN, _NVLS, _NVLS_TREE, _PAT = range(7)
_LL, _LL128, _SIMPLE = range(3)
_BCAST, _REDUCE, _AG, _RS, _AR = range(5)
_HW_NVLINK, _HW_PCI, _HW_NET = range(3)

# NCCL path types (src/graph/topo.h). "nvlink" and "pci" are accepted aliases of NVL and PIX.
_PATH = {
    "loc": 0,
    "nvl": 1,
    "nvlink": 1,
    "nvb": 2,
    "c2c": 3,
    "pix": 4,
    "pci": 4,
    "pxb": 5,
    "pxn": 6,
    "phb": 7,
    "sys": 8,
    "net": 9,
}
_PATH_NVL, _PATH_NVB, _PATH_PXB, _PATH_PXN = 1, 2, 5, 6

# Tree patterns (src/include/graph.h values): balanced tree 1, split tree 2, tree 3.
_TREE_PATTERNS = {"balanced_tree": 1, "split_tree": 2, "tree": 3}


def _f32(x: float) -> float:
    """Round to the nearest float32, as a C++ store to ``float`` does."""
    return struct.unpack("f", struct.pack("f", x))[0]


def _log2i(n: int) -> int:
    """NCCL's host ``log2i``: floor(log2(n)), and -1 for 0."""
    return n.bit_length() - 1


def _f32_table(rows: list[list[float]]) -> list[list[float]]:
    return [[_f32(v) for v in row] for row in rows]


# ---------------------------------------------------------------------------------------------
# Constants of src/graph/tuning.cc at the pinned commit (us for latencies, GB/s for bandwidths).
# baseLat / hwLat are float arrays in NCCL; the PAT rows are not initialised there, hence 0.
_BASE_LAT = _f32_table(
    [
        [6.8, 14.0, 8.4],  # tree
        [6.6, 14.0, 8.4],  # ring
        [0, 0, 0],  # collnet direct
        [0, 0, 0],  # collnet chain
        [0, 0, 0],  # nvls
        [0, 0, 0],  # nvls tree
        [0, 0, 0],  # pat
    ]
)
_HW_LAT = [
    _f32_table(  # NVLink
        [[0.6, 1.25, 4.0], [0.6, 1.9, 3.4], [0, 0, 3.7], [0, 0, 2.8], [0, 0, 25], [0, 0, 25], [0, 0, 0]]
    ),
    _f32_table(  # PCI
        [[1.0, 1.9, 4.0], [1.0, 2.5, 5.7], [0, 0, 3.7], [0, 0, 2.8], [0, 0, 0], [0, 0, 0], [0, 0, 0]]
    ),
    _f32_table(  # network
        [[5.0, 8.5, 14], [2.7, 4.0, 14.0], [0, 0, 31], [0, 0, 30], [0, 0, 18], [0, 0, 14], [0, 0, 0]]
    ),
]
# Rows: Volta, Ampere, Hopper, Blackwell. Columns: 1 node, 2 nodes, more nodes. For llMaxBws the
# row is the GPU generation on one node and the CPU (0 Intel/other, 1 AMD) on several nodes.
_LL_MAX_BWS = [[39.0, 39.0, 20.4], [87.7, 22.5, 19.0], [141.0, 45.0, 35.0], [282.0, 90.0, 70.0]]
_PER_CH_MAX_RING_LL128_BWS = [[20.0] * 3, [20.0] * 3, [36.7] * 3, [2 * 36.7] * 3]
_PER_CH_MAX_TREE_LL128_BWS = [
    [20.0, 20.0, 20.0],
    [20.0, 20.0, 20.0],
    [36.7, 36.7, 29.0],
    [2 * 36.7, 2 * 36.7, 2 * 29.0],
]
_PER_CH_MAX_TREE_BWS = [
    [26.5, 18.5, 10.0],
    [24.0, 23.6, 17.8],
    [38.7, 41.4, 36.0],
    [2 * 38.7, 2 * 41.4, 2 * 36.0],
]
# ncclTopoGetAlgoTime: tree all_reduce bandwidth factor by log2(nBytes/64), 64 B .. 256 MiB.
_TREE_CORRECTION = _f32_table(
    [
        [1.0, 1.0, 1.0, 1.0, 0.9, 0.8, 0.7, 0.7, 0.7, 0.7, 0.6, 0.5]
        + [0.4, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0, 1.0, 1.0, 1.0],
        [1.0, 1.0, 1.0, 1.0, 1.0, 0.9, 0.8, 0.8, 0.8, 0.7, 0.6, 0.6]
        + [0.6, 0.6, 0.6, 0.6, 0.8, 0.9, 0.9, 0.9, 0.9, 1.0, 1.0],
        [0.9, 0.9, 0.9, 0.9, 0.9, 0.9, 0.9, 0.8, 0.7, 0.6, 0.6, 0.5]
        + [0.5, 0.5, 0.5, 0.6, 0.7, 0.8, 0.7, 0.7, 0.8, 0.9, 0.9],
    ]
)

# src/include/device.h and src/include/comm.h.
_WARP_SIZE = 32
_MAX_NTHREADS = 640
_SIMPLE_MAX_NTHREADS = 512
_LL_MAX_NTHREADS = 512
_LL128_MAX_NTHREADS = 640
_THREAD_THRESHOLD = (8, 8, 64)  # LL, LL128, Simple
MAX_CHANNELS = 64
MAX_NVLS_ARITY = 32
_MAX_DIRECT_ARITY = 7
_PCI_BW = 12.0  # GB/s, PCIe Gen3 x16 (topo.h); below it Simple rings get 256 threads


@dataclass(frozen=True)
class TuningTopology:
    """What NCCL's tuner sees of a system once its topology search is done.

    Bandwidths are per channel, in bytes/s, as NCCL's ``graph->bwIntra`` / ``graph->bwInter``
    (NCCL's GB/s times 1e9). Path types use NCCL's names: ``"nvl"`` (alias ``"nvlink"``),
    ``"nvb"``, ``"c2c"``, ``"pix"`` (alias ``"pci"``), ``"pxb"``, ``"pxn"``, ``"phb"``, ``"sys"``,
    ``"net"``; NCCL's default ``typeInter`` on a single host is ``"pix"``.

    Attributes:
        n_ranks: GPUs in the communicator.
        n_hosts: nodes (NCCL ``nNodes``).
        gpus_per_host: GPUs per node.
        nics_per_host: NICs per node (informational; the graphs carry what NCCL uses).
        sm: compute capability x10 of every GPU (80 A100, 90 H100).
        nvls_support: NVSwitch with NVLink SHARP multicast (Hopper+) and an NVLS graph.
        n_channels: channels of the ring search graph (tree has as many: NCCL aligns both).
        bw_intra, bw_inter: ring graph per-channel bandwidths, bytes/s.
        type_intra, type_inter: ring graph path types.
        tree_bw_intra, tree_bw_inter: tree graph per-channel bandwidths, bytes/s (PAT uses the
            tree graph too). ``None`` means same as the ring graph.
        tree_pattern: the widest tree pattern over nodes (``comm->maxTreePattern``):
            ``"balanced_tree"``, ``"split_tree"`` or ``"tree"`` (the latter costs x0.85).
        tree_type_intra, tree_type_inter: tree graph path types (``None``: as the ring graph).
        nvls_channels: channels (NVLS heads) of the NVLS search graph, 0 without NVLS.
        nvls_bw_intra, nvls_bw_inter: NVLS graph per-channel bandwidths, bytes/s.
        comm_channels: ``comm->nChannels`` after ``ncclTopoPostset`` (runtime channels).
        nvls_comm_channels: ``comm->nvlsChannels`` (16 on SM90), channels NVLS kernels use.
        cpu_arch: ``"x86"``, ``"arm"`` or ``"power"``.
        cpu_vendor: ``"intel"``, ``"amd"``, ``"other"`` or ``"mixed"``.
        ring_same_channels: ring graph ``sameChannels`` (broadcast/reduce latency only).
        latency_inter: network latency from the net plugin, seconds (IB reports 0).
        collnet_support: CollNet (SHARP); must be False (not modelled).
        cuda_runtime: CUDART_VERSION NCCL was built with (only the SM90/11.8 LL128 quirk).
    """

    n_ranks: int
    n_hosts: int
    gpus_per_host: int
    nics_per_host: int
    sm: int
    nvls_support: bool
    n_channels: int
    bw_intra: float
    bw_inter: float
    type_intra: str = "nvl"
    type_inter: str = "pix"
    tree_bw_intra: float | None = None
    tree_bw_inter: float | None = None
    tree_pattern: str = "balanced_tree"
    tree_type_intra: str | None = None
    tree_type_inter: str | None = None
    nvls_channels: int = 0
    nvls_bw_intra: float = 0.0
    nvls_bw_inter: float = 0.0
    comm_channels: int = 0
    nvls_comm_channels: int = 0
    cpu_arch: str = "x86"
    cpu_vendor: str = "intel"
    ring_same_channels: bool = True
    latency_inter: float = 0.0
    collnet_support: bool = False
    cuda_runtime: int = 12080

    def __post_init__(self) -> None:
        if self.n_ranks < 1 or self.n_hosts < 1 or self.n_channels < 0:
            raise ValueError("n_ranks and n_hosts must be >= 1 and n_channels >= 0")
        for t in (self.type_intra, self.type_inter, self.tree_type_intra, self.tree_type_inter):
            if t is not None and t not in _PATH:
                raise ValueError(f"unknown NCCL path type {t!r}; one of {sorted(_PATH)}")
        if self.tree_pattern not in _TREE_PATTERNS:
            raise ValueError(f"tree_pattern must be one of {sorted(_TREE_PATTERNS)}")
        if self.cpu_arch not in ("x86", "arm", "power"):
            raise ValueError("cpu_arch must be 'x86', 'arm' or 'power'")
        if self.cpu_vendor not in ("intel", "amd", "other", "mixed"):
            raise ValueError("cpu_vendor must be 'intel', 'amd', 'other' or 'mixed'")
        if self.collnet_support:
            raise NotImplementedError("CollNet (SHARP) is not modelled; use collnet_support=False")


# ---------------------------------------------------------------------------------------------
# The tuning tables (ncclTopoTuneModel).


@dataclass(frozen=True)
class _Graph:
    n_channels: int
    bw_intra: float  # GB/s, float32
    bw_inter: float
    type_intra: int
    type_inter: int
    same_channels: bool
    latency_inter: float  # us


def _graphs(topo: TuningTopology) -> list[_Graph]:
    """The search graph each algorithm runs on (init.cc: tree, ring, collnet x2, nvls x2, tree)."""
    gb = 1e-9
    lat_us = _f32(topo.latency_inter * 1e6)
    ring = _Graph(
        topo.n_channels,
        _f32(topo.bw_intra * gb),
        _f32(topo.bw_inter * gb),
        _PATH[topo.type_intra],
        _PATH[topo.type_inter],
        topo.ring_same_channels,
        lat_us,
    )
    tree = _Graph(
        topo.n_channels,
        _f32((topo.bw_intra if topo.tree_bw_intra is None else topo.tree_bw_intra) * gb),
        _f32((topo.bw_inter if topo.tree_bw_inter is None else topo.tree_bw_inter) * gb),
        _PATH[topo.tree_type_intra or topo.type_intra],
        _PATH[topo.tree_type_inter or topo.type_inter],
        topo.ring_same_channels,
        lat_us,
    )
    collnet = _Graph(0, 0.0, 0.0, _PATH["sys"], _PATH["sys"], False, lat_us)
    nvls_ch = topo.nvls_channels if topo.nvls_support else 0
    nvls = _Graph(
        nvls_ch,
        _f32(topo.nvls_bw_intra * gb),
        _f32(topo.nvls_bw_inter * gb),
        _PATH["nvl"],
        _PATH[topo.type_inter],
        False,
        lat_us,
    )
    return [tree, ring, collnet, collnet, nvls, nvls, tree]


def _cc_index(sm: int) -> int:
    return 3 if sm >= 100 else 2 if sm >= 90 else 1 if sm >= 80 else 0


def _pat_enabled(topo: TuningTopology) -> bool:
    # ncclPatEnable with NCCL_PAT_ENABLE unset: SM60+, one GPU per node, host network device.
    return topo.sm >= 60 and topo.n_hosts == topo.n_ranks


def _nsteps(coll: int, n_ranks: int) -> int:
    if coll == _AR:
        return 2 * (n_ranks - 1)
    if coll in (_RS, _AG):
        return n_ranks - 1
    return n_ranks


def _net_overhead(topo: TuningTopology) -> float:
    if topo.cpu_arch == "x86" and topo.cpu_vendor == "amd":
        return 2.0
    return 1.0


def _ll128_default(topo: TuningTopology, g: _Graph, coll: int, algo: int) -> bool:
    ok = g.type_inter <= _PATH_PXB or (topo.sm >= 90 and g.type_inter <= _PATH_PXN)
    ok = ok and g.type_intra <= _PATH_NVB
    if topo.sm in (70, 80, 100, 120):
        return ok
    if topo.sm == 90:
        return ok and not (topo.cuda_runtime == 11080 and coll == _AR and algo == _RING and topo.n_ranks == 2)
    return False


Table = tuple[tuple[tuple[float, ...], ...], ...]


@lru_cache(maxsize=256)
def _tune(
    topo: TuningTopology, algo_enable: tuple[bool, ...], proto_enable: tuple[int, ...]
) -> tuple[Table, Table]:
    """Bandwidths (GB/s) and latencies (us) per [coll][algo][proto], as ncclTopoTuneModel.

    ``proto_enable`` holds NCCL's per-protocol enable values: 1 on, 0 off, 2 "LL128 by default
    only where safe" (NCCL's default for LL128 when NCCL_PROTO is not set).
    """
    n_nodes, n_ranks = topo.n_hosts, topo.n_ranks
    bws = [[[0.0] * 3 for _ in range(7)] for _ in range(5)]
    lats = [[[0.0] * 3 for _ in range(7)] for _ in range(5)]
    if n_ranks <= 1:
        return _freeze(bws), _freeze(lats)

    cci = _cc_index(topo.sm)
    index2 = n_nodes - 1 if n_nodes <= 2 else 2
    if n_nodes == 1:
        index1 = cci
    else:
        index1 = 1 if topo.cpu_vendor in ("amd", "mixed") else 0
    ll_max_bw = _LL_MAX_BWS[index1][index2]
    per_ch_tree = _PER_CH_MAX_TREE_BWS[cci][index2]
    per_ch_ring_ll128 = _PER_CH_MAX_RING_LL128_BWS[cci][index2]
    per_ch_tree_ll128 = _PER_CH_MAX_TREE_LL128_BWS[cci][index2]
    hw_lat = [[list(row) for row in hw] for hw in _HW_LAT]
    if topo.cpu_arch == "power":
        hw_lat[_HW_PCI][_TREE][_SIMPLE] = hw_lat[_HW_PCI][_RING][_SIMPLE]
    ppn = _f32(n_ranks / n_nodes)
    graphs = _graphs(topo)
    intra_hw = [_HW_NVLINK if g.type_intra == _PATH_NVL else _HW_PCI for g in graphs]
    hw = [ih if n_nodes == 1 else _HW_NET for ih in intra_hw]
    tree_pattern_is_tree = _TREE_PATTERNS[topo.tree_pattern] == _TREE_PATTERNS["tree"]
    pat_on = _pat_enabled(topo)

    for coll in range(5):
        nsteps = _nsteps(coll, n_ranks)
        for a in range(7):
            if coll in (_BCAST, _REDUCE) and a != _RING:
                continue
            if coll in (_RS, _AG) and a not in (_PAT, _RING, _NVLS, _CN_DIRECT):
                continue
            if coll == _AR and a == _PAT:
                continue
            if a in (_CN_DIRECT, _CN_CHAIN):
                continue  # CollNet off: NCCL zeroes these bandwidths anyway.
            g = graphs[a]
            for p in range(3):
                if a in (_NVLS, _NVLS_TREE) and p != _SIMPLE:
                    continue
                if coll in (_RS, _AG) and a == _PAT and (p != _SIMPLE or not pat_on):
                    continue
                bw = g.bw_intra if n_nodes <= 2 else g.bw_inter
                if a == _NVLS:
                    bw = min(g.bw_intra, g.bw_inter)
                if a == _NVLS_TREE:
                    bw = min(g.bw_intra, g.bw_inter if n_nodes <= 2 else _f32(g.bw_inter / 2))
                bus = _f32(g.n_channels * bw)
                if a == _RING and p == _LL:
                    bus = _f32(min(ll_max_bw, bus * 0.5))
                if a == _RING and p == _LL128:
                    bus = _f32(min(bus * 0.92, g.n_channels * per_ch_ring_ll128))
                if a == _TREE and coll == _AR:
                    bus = _f32(min(bus * 0.92, g.n_channels * per_ch_tree))
                if a == _TREE and p == _LL:
                    bus = _f32(min(bus * 1.0 / 3.8, ll_max_bw))
                if a == _TREE and p == _LL128:
                    factor = 7.0 / 9.0 if n_nodes == 1 else 120.0 / 128.0
                    bus = _f32(min(bus * factor, g.n_channels * per_ch_tree_ll128))
                if a == _TREE and tree_pattern_is_tree:
                    bus = _f32(bus * 0.85)
                if a == _PAT:
                    bus = _f32(bus * 0.75)
                if not (a != _RING and coll in (_AG, _RS)):
                    if a == _RING:
                        ratio = _f32(1.0 * n_ranks / nsteps)
                    elif a in (_NVLS, _NVLS_TREE):
                        ratio = _f32(5.0 / 6.0)
                    else:
                        ratio = 0.5
                    bus = _f32(bus * ratio)
                bws[coll][a][p] = bus

                lat = _BASE_LAT[a][p]
                intra_lat = hw_lat[intra_hw[a]][a][p]
                inter_lat = hw_lat[_HW_NET][_TREE][p] if ppn == 1 else hw_lat[_HW_NET][a][p]
                inter_lat = _f32(inter_lat + g.latency_inter)
                if p == _SIMPLE:
                    inter_lat = _f32(inter_lat + g.latency_inter)
                if a == _RING:
                    if coll in (_REDUCE, _BCAST):
                        step_lat = hw_lat[hw[a]][a][p]
                        if g.same_channels:
                            lat = _f32(lat + step_lat)
                        else:
                            if p == _SIMPLE:
                                step_lat = hw_lat[hw[a]][_TREE][p]
                            lat = _f32(lat + _f32(nsteps * step_lat))
                    else:
                        overhead = 0.0
                        if n_nodes > 1:
                            overhead = _net_overhead(topo)
                            if p == _SIMPLE:
                                overhead *= 3
                        intra_lat = max(intra_lat, overhead)
                        n_inter = 0 if n_nodes == 1 else (2 * (n_nodes - 1) if coll == _AR else n_nodes - 1)
                        lat = _f32(
                            lat + _f32(_f32((nsteps - n_inter) * intra_lat) + _f32(n_inter * inter_lat))
                        )
                elif a == _TREE:
                    if coll == _AR:
                        hops = _f32(
                            _f32((n_ranks // n_nodes - 1) * intra_lat) + _f32(_log2i(n_nodes) * inter_lat)
                        )
                        lat = _f32(lat + _f32(2 * hops))
                elif a == _NVLS:
                    lat = intra_lat
                    if n_nodes > 1:
                        lat = _f32(lat + inter_lat)
                elif a == _NVLS_TREE:
                    lat = _f32(lat + _f32(intra_lat + _f32(2 * _log2i(n_nodes) * inter_lat)))
                elif a == _PAT and coll in (_AG, _RS):
                    lat = _f32(8 + _log2i(n_nodes) * (inter_lat / 3.5) + n_ranks * 2.8)
                lats[coll][a][p] = lat

    # Protocol / algorithm enables, user restrictions, then NCCL's own disables.
    algo_on = list(algo_enable)
    if n_nodes == 1:
        algo_on[_NVLS_TREE] = False
    algo_on[_CN_DIRECT] = algo_on[_CN_CHAIN] = False  # no CollNet support
    if n_nodes > 1:
        algo_on[_NVLS] = False  # multi-node NVLS needs CollNet
    for c in range(5):
        for a in range(7):
            for p in range(3):
                enable = proto_enable[p]
                if enable == 2 and p == _LL128:
                    enable = int(_ll128_default(topo, graphs[a], c, a))
                if enable == 0 or not algo_on[a]:
                    bws[c][a][p] = 0.0
    return _freeze(bws), _freeze(lats)


def _freeze(t: list[list[list[float]]]) -> Table:
    return tuple(tuple(tuple(row) for row in plane) for plane in t)


_DEFAULT_ALGOS = (True,) * 7
_DEFAULT_PROTOS = (1, 2, 1)


def _op_index(op: str) -> int:
    try:
        return OPS.index(op)
    except ValueError:
        raise ValueError(f"unknown op {op!r}; one of {OPS}") from None


def _algo_index(algorithm: str) -> int:
    try:
        return ALGORITHMS.index(algorithm)
    except ValueError:
        raise ValueError(f"unknown algorithm {algorithm!r}; one of {ALGORITHMS}") from None


def _proto_index(protocol: str) -> int:
    try:
        return PROTOCOLS.index(protocol)
    except ValueError:
        raise ValueError(f"unknown protocol {protocol!r}; one of {PROTOCOLS}") from None


def _considered(topo: TuningTopology, coll: int, a: int) -> bool:
    """updateCollCostTable's filters (enqueue.cc), for a sum on an NVLS-capable datatype."""
    if a in (_CN_DIRECT, _CN_CHAIN):
        return False  # collNetSupport != 1
    nvls_ok = topo.nvls_support and topo.nvls_channels > 0
    if a in (_NVLS, _NVLS_TREE) and not nvls_ok and coll != _AG:
        return False
    if a == _NVLS and topo.n_hosts > 1:
        return False  # needs CollNet across nodes
    if a == _NVLS and coll in (_AG, _RS) and (topo.n_hosts > 1 or topo.n_ranks > MAX_NVLS_ARITY):
        return False
    return True


def _time_us(
    topo: TuningTopology, coll: int, a: int, p: int, nbytes: int, tables: tuple[Table, Table]
) -> float:
    """ncclTopoGetAlgoTime in us (float32), or -1 where the bandwidth is 0."""
    bw = tables[0][coll][a][p]
    lat = tables[1][coll][a][p]
    if bw == 0:
        return -1.0
    log_size = _log2i(nbytes >> 6)
    if a == _TREE and coll == _AR and 0 <= log_size < 23:
        bw = _f32(bw * _TREE_CORRECTION[p][log_size])
    if (
        a == _RING
        and p == _SIMPLE
        and topo.n_hosts > 1
        and coll == _AR
        and nbytes // (_comm_channels(topo) * topo.n_ranks) >= 64
    ):
        lat = _f32(lat * (1.9 if topo.sm < 80 else 1.4))
    return _f32(lat + _f32(_f32(float(nbytes)) / _f32(1000 * bw)))


def _comm_channels(topo: TuningTopology) -> int:
    """comm->nChannels; when not given, twice the search channels (ncclTopoPostset)."""
    return topo.comm_channels or min(MAX_CHANNELS, 2 * max(1, topo.n_channels))


def _nvls_comm_channels(topo: TuningTopology) -> int:
    """comm->nvlsChannels; when not given, NVLS_NCHANNELS_SM90 / _SM100 (nvls.cc)."""
    if topo.nvls_comm_channels:
        return topo.nvls_comm_channels
    return (32 if topo.sm >= 100 else 16) if topo.nvls_support else 0


def _nbytes(nbytes: float) -> int:
    if nbytes < 0 or not math.isfinite(nbytes):
        raise ValueError("nbytes must be a finite non-negative number")
    return int(nbytes)


def predicted_time(op: str, algorithm: str, protocol: str, nbytes: float, topo: TuningTopology) -> float:
    """NCCL's predicted time of one collective, in seconds (NCCL's default environment).

    Args:
        op: ``"all_reduce"``, ``"all_gather"``, ``"reduce_scatter"``, ``"broadcast"``, ``"reduce"``.
        algorithm: one of :data:`ALGORITHMS`.
        protocol: one of :data:`PROTOCOLS`.
        nbytes: nccl-tests ``size`` in bytes (total output for all_gather, total input for
            reduce_scatter, the buffer otherwise) -- NCCL's tuner ``nBytes``.
        topo: the tuner's view of the system.

    Returns:
        ``lat + nBytes / bw`` in seconds, or ``math.inf`` where NCCL would not consider or has
        disabled the combination (zero bandwidth, filtered algorithm, disabled protocol).
    """
    coll, a, p = _op_index(op), _algo_index(algorithm), _proto_index(protocol)
    n = _nbytes(nbytes)
    if topo.n_ranks <= 1:
        return 0.0 if (a, p) == (_RING, _SIMPLE) else math.inf
    if not _considered(topo, coll, a):
        return math.inf
    t = _time_us(topo, coll, a, p, n, _tune(topo, _DEFAULT_ALGOS, _DEFAULT_PROTOS))
    return math.inf if t < 0 else t * 1e-6


def _enables(
    algorithms: tuple[str, ...] | None, protocols: tuple[str, ...] | None
) -> tuple[tuple[bool, ...], tuple[int, ...]]:
    algo = _DEFAULT_ALGOS
    if algorithms is not None:
        wanted = {_algo_index(x) for x in algorithms}
        algo = tuple(i in wanted for i in range(7))
    proto = _DEFAULT_PROTOS
    if protocols is not None:
        wanted = {_proto_index(x) for x in protocols}
        # NCCL_PROTO sets listed protocols to 1: LL128 is then forced on, past its safety rule.
        proto = tuple(1 if i in wanted else 0 for i in range(3))
    return algo, proto


def _choose_indices(
    op: str,
    nbytes: float,
    topo: TuningTopology,
    algorithms: tuple[str, ...] | None,
    protocols: tuple[str, ...] | None,
) -> tuple[int, int, float]:
    coll = _op_index(op)
    n = _nbytes(nbytes)
    if topo.n_ranks <= 1:
        return _RING, _SIMPLE, 0.0
    tables = _tune(topo, *_enables(algorithms, protocols))
    best = (-1, -1, 3600000000.0)
    for a in range(7):
        if not _considered(topo, coll, a):
            continue
        for p in range(3):
            t = _time_us(topo, coll, a, p, n, tables)
            if 0.0 <= t < best[2]:
                best = (a, p, t)
    if best[0] < 0:
        raise ValueError(f"no algorithm/protocol available for {op} (NCCL_ALGO/NCCL_PROTO restriction?)")
    return best


def choose(
    op: str,
    nbytes: float,
    topo: TuningTopology,
    algorithms: tuple[str, ...] | None = None,
    protocols: tuple[str, ...] | None = None,
) -> tuple[str, str, float]:
    """The (algorithm, protocol, predicted seconds) NCCL's tuner picks for one collective.

    NCCL takes the minimum predicted time, scanning algorithms then protocols in index order
    and keeping the first strictly smaller time, so ties go to the lower (algorithm, protocol)
    index. ``algorithms`` / ``protocols`` restrict the choice as ``NCCL_ALGO`` / ``NCCL_PROTO``
    would (listed ones enabled, others disabled; listing LL128 forces it on even where NCCL
    would not enable it by default). NCCL's own disables still apply.

    Args:
        op: collective name (see :func:`predicted_time`).
        nbytes: nccl-tests ``size`` in bytes.
        topo: the tuner's view of the system.
        algorithms: allowed algorithms, or None for all.
        protocols: allowed protocols, or None for NCCL's default set.

    Returns:
        ``(algorithm, protocol, seconds)``.

    Raises:
        ValueError: if the restriction leaves nothing NCCL could run (NCCL errors out too).
    """
    a, p, t = _choose_indices(op, nbytes, topo, algorithms, protocols)
    return ALGORITHMS[a], PROTOCOLS[p], t * 1e-6


def switch_points(
    op: str,
    topo: TuningTopology,
    sizes: list[float] | tuple[float, ...],
    algorithms: tuple[str, ...] | None = None,
    protocols: tuple[str, ...] | None = None,
) -> list[tuple[float, str, str]]:
    """Sizes of ``sizes`` (bytes, scanned in the order given) where NCCL's choice changes.

    The first size is always listed with its choice, then every size whose
    ``(algorithm, protocol)`` differs from the previous size's.

    Returns:
        ``[(size, algorithm, protocol), ...]``.
    """
    out: list[tuple[float, str, str]] = []
    prev: tuple[str, str] | None = None
    for size in sizes:
        a, p, _ = choose(op, size, topo, algorithms, protocols)
        if (a, p) != prev:
            out.append((size, a, p))
            prev = (a, p)
    return out


def channels_used(op: str, algorithm: str, protocol: str, nbytes: float, topo: TuningTopology) -> int:
    """Channels (CTAs) NCCL allows the collective, ``nMaxChannels`` from ``topoGetAlgoInfo``.

    Ring / tree / PAT start from ``comm->nChannels`` and drop one channel while
    ``nBytes < nc * nThreads * threadThreshold`` (thresholds 8 B per thread for LL -- times
    nRanks for ring LL -- and LL128, 64 B for Simple; nThreads 512 for LL and Simple, 640 for
    LL128, 256 for Simple rings slower than 12 GB/s). PAT has no thread count in the tuner, so
    it keeps all channels. NVLS / NVLS-tree always use ``comm->nvlsChannels``. The scheduler
    (``scheduleCollTasksToPlan``) then splits the bytes over at most this many channels in
    16 KiB-of-traffic cells, so a very small collective may occupy fewer.

    Args:
        op, algorithm, protocol, nbytes, topo: as :func:`predicted_time`.

    Returns:
        The channel count.
    """
    _op_index(op)
    a, p = _algo_index(algorithm), _proto_index(protocol)
    if a in (_CN_DIRECT, _CN_CHAIN):
        raise NotImplementedError("CollNet is not modelled")
    n = _nbytes(nbytes)
    if a in (_NVLS, _NVLS_TREE):
        return _nvls_comm_channels(topo)
    nc = _comm_channels(topo)
    nt = _max_threads(topo, a, p)
    threshold = _THREAD_THRESHOLD[p] * (topo.n_ranks if (a, p) == (_RING, _LL) else 1)
    while n < nc * nt * threshold and nc >= 2:
        nc -= 1
    return nc


def _max_threads(topo: TuningTopology, a: int, p: int) -> int:
    """comm->maxThreads[a][p] with NCCL_NTHREADS / NCCL_LL128_NTHREADS unset."""
    if a == _PAT:
        return 0  # ncclTopoTuneModel never sets PAT's entry
    if p == _SIMPLE:
        if a == _RING:
            return 256 if topo.bw_intra * 1e-9 * topo.n_channels <= _PCI_BW else _SIMPLE_MAX_NTHREADS
        if a == _TREE:
            return _SIMPLE_MAX_NTHREADS
        return _MAX_NTHREADS
    if a in (_RING, _TREE):
        return _LL_MAX_NTHREADS if p == _LL else _LL128_MAX_NTHREADS
    return 0
