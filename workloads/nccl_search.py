"""The outcome of NCCL's topology search on standard NVSwitch boxes, as the tuner
(:mod:`workloads.nccl_tuning`) sees it: :func:`topology_for`.

Pinned to the same NCCL release as :mod:`workloads.nccl_tuning` (``src/graph/search.cc``,
``src/graph/connect.cc``, ``src/init.cc``, ``src/graph/topo.h``, ``src/transport/nvls.cc``);
an independent re-implementation of the search's speed walk with closed-form channel capacities,
not a run of the search.
"""

from __future__ import annotations

import math
from collections.abc import Callable

from workloads.nccl_tuning import MAX_CHANNELS, MAX_NVLS_ARITY, TuningTopology

# ---------------------------------------------------------------------------------------------
# topology_for: the outcome of NCCL's topology search on standard NVSwitch boxes.

_SPEEDS_INTRA = (40.0, 30.0, 20.0, 18.0, 15.0, 12.0, 10.0, 9.0, 7.0, 6.0, 5.0, 4.0, 3.0)
_SPEEDS_INTER = (48.0, 30.0, 28.0, 24.0, 20.0, 18.0, 15.0, 12.0, 10.0, 9.0, 7.0, 6.0, 5.0, 4.0, 3.0)
_SPEEDS_INTER += (2.4, 1.2, 0.24, 0.12)
_SM90_SPEEDS_INTRA = (60.0, 50.0, 40.0, 30.0, 24.0, 20.0, 15.0, 12.0, 11.0, 6.0, 3.0)
_SM90_SPEEDS_INTER = (48.0, 45.0, 42.0, 40.0, 30.0, 24.0, 22.0, 20.0, 17.5, 15.0, 12.0, 6.0, 3.0)
_SM90_SPEEDS_INTER += (2.4, 1.2, 0.24, 0.12)
_SM100_SPEEDS_INTRA = (90.0, 80.0, 70.0, 60.0, 50.0, 40.0, 30.0, 24.0, 20.0, 19.0)

# GPU -> (compute capability x10, GPU PCIe x16 link in NCCL GB/s, CPU vendor of the DGX box).
# PCIe: NCCL's width*GT/s rule gives 12 per Gen3 x16, so Gen4 x16 = 24, Gen5 x16 = 48.
_GPUS = {
    "A100": (80, 24.0, "amd"),  # DGX A100: AMD EPYC, PCIe Gen4
    "H100": (90, 48.0, "intel"),  # DGX H100: Intel Xeon, PCIe Gen5
    "H200": (90, 48.0, "intel"),  # DGX H200: as DGX H100
}

_EPS = 1e-3  # NCCL rounds link bandwidth bookkeeping to 1e-3 GB/s (SUB_ROUND)


def _fits(n: int, per_channel: float, capacity: float) -> bool:
    return n * per_channel <= capacity + _EPS


def _count(per_channel: float, capacity: float) -> int:
    return int(math.floor((capacity + _EPS) / per_channel))


def _spread(g: int, per_channel: float, capacity: float, cap: int) -> int:
    """Most channels when each of ``g`` GPUs sits at the chain's open end ``n//g`` times."""
    n = 0
    while n < cap and _fits((n + 1) - (n + 1) // g, per_channel, capacity):
        n += 1
    return n


def _better(
    pattern: str, n: int, intra: float, inter: float, ref: tuple[int, float, float] | None, g: int
) -> bool:
    """ncclTopoCompareGraphs (min channels checked by the caller)."""
    if ref is None:
        return True
    if pattern == "nvls":
        return (n > ref[0] and n <= g) or n * inter > ref[0] * ref[2]
    return n * intra > ref[0] * ref[1]


def _search(
    pattern: str,
    speeds: tuple[float, ...],
    max_bw: float,
    total_bw: float,
    min_ch: int,
    max_ch: int,
    sm: int,
    g: int,
    capacity: Callable[[float, float], int],
) -> tuple[int, float, float] | None:
    """The speed walk of ncclTopoCompute, with ``capacity(bwIntra, bwInter)`` giving how many
    channels the recursive search places at those speeds (best placement assumed found).

    Returns ``(nChannels, bwIntra, bwInter)`` in GB/s, or None when nothing is found.
    """
    start_total = total_bw * g / (g - 1) if (g > 1 and pattern != "ring") else total_bw
    i = 0
    while (speeds[i] > max_bw or speeds[i] * min_ch > start_total) and i < len(speeds) - 1:
        i += 1
    best: tuple[int, float, float] | None = None
    while True:  # pass 1: decrease speed until a solution is found
        s = speeds[i]
        n = min(max_ch, capacity(s, s))
        if n >= max(min_ch, 1) and _better(pattern, n, s, s, best, g):
            best = (n, s, s)
            if n == max_ch:
                break  # "perfect" solution
        if best is not None and best[0] * best[2] >= total_bw:
            break
        if i < len(speeds) - 1 and (best is None or speeds[i + 1] / best[2] > 0.49):
            i += 1
            continue
        break
    if best is None:
        return None
    n, bw_intra, bw_inter = best
    # ncclTopoDupChannels
    if pattern != "nvls" and bw_intra >= 25.0 and not (sm > 80 and bw_intra < 50.0 and n > 4):
        dup = min(2 * n, max_ch)
        div = -(-dup // n)
        n, bw_intra, bw_inter = dup, bw_intra / div, bw_inter / div
    # pass 2: try to raise the speed, keeping at least as many channels
    i = 0
    while speeds[i] > bw_inter and i < len(speeds) - 1:
        i += 1
    tmp_intra = tmp_inter = speeds[i]
    while i > 0:
        if pattern == "ring":
            i -= 1
            s = speeds[i]
            m = min(max_ch, capacity(s, s))
            if m >= n and m * s > n * bw_intra:
                n, bw_intra, bw_inter = m, s, s
        elif pattern == "nvls":
            if not (tmp_inter == bw_inter and tmp_inter < tmp_intra * 2):
                break
            i -= 1
            tmp_inter = speeds[i]
            if min(n, capacity(tmp_intra, tmp_inter)) >= n and n * tmp_inter > n * bw_inter:
                bw_intra, bw_inter = tmp_intra, tmp_inter
        else:
            if not (tmp_intra == bw_intra and tmp_intra < tmp_inter * 2):
                break
            i -= 1
            tmp_intra = speeds[i]
            m = min(max_ch, capacity(tmp_intra, tmp_inter))
            if m >= n and m * tmp_intra > n * bw_intra:
                n, bw_intra, bw_inter = m, tmp_intra, tmp_inter
    return n, bw_intra, bw_inter


def topology_for(
    n_hosts: int,
    gpus_per_host: int,
    nics_per_host: int,
    gpu: str,
    nic_bandwidth: float,
    nvlink_bandwidth: float,
    cpu_vendor: str | None = None,
    pcie_bandwidth: float | None = None,
) -> TuningTopology:
    """The tuner's view of ``n_hosts`` NVSwitch boxes, as NCCL 2.26.2's search would find it.

    Covers DGX-like boxes: every GPU on one NVSwitch fabric, and across hosts one NIC per GPU
    behind the GPU's own PCIe switch (rail-optimised DGX H100). The search itself is not run;
    :func:`_search` replays ``ncclTopoCompute``'s speed walk (speed arrays, ``.49`` rule,
    channel duplication, pass-2 speed increase) with closed-form channel capacities:

    * ring, one host: each channel crosses every GPU's NVSwitch link once per direction, so
      ``floor(nvlink/s)`` channels at speed ``s`` (search.cc).
    * ring, several hosts: rings enter at one GPU's NIC and leave through another GPU's local
      NIC (``crossNic`` alternation, PIX paths); NIC limit ``G*floor(min(nic, pcie)/s)``,
      NVLink limit ``(n - n//G)*s <= nvlink``.
    * tree: NCCL's balanced tree needs two GPUs near one NIC; with one NIC per GPU that fails
      and SM90+ falls back to the plain TREE pattern (x0.85 in the model); one host keeps the
      balanced tree. Tree channels equal the ring's (init.cc sets tree min = max = ring).
    * NVLS (SM90+, more than 2 GPUs): head ``h`` loads its own NVSwitch link twice, so
      ``floor(nvlink/s) - 1`` heads, at most ``G``; across hosts each head also needs its NIC.

    On the two reference systems this gives (NCCL GB/s):

    * DGX A100 (8 x A100, NVLink3 12 x 20 = 240): ring 12 x 20 (6 x 40 found, then
      duplicated), balanced tree 12 x 20, no NVLS, ``comm->nChannels`` 24.
    * 2 x DGX H100 (8 x H100, NVLink4 18 x 20.6 = 370.8, 8 x 400 Gb/s NICs = 50, PCIe Gen5 48):
      ring 8 x 48 (no duplication on SM90 below 50 GB/s), TREE-pattern tree 8 x 48,
      NVLS 8 heads at 40/48, ``comm->nChannels`` 16, ``nvlsChannels`` 16, Intel CPU.

    Args:
        n_hosts: nodes.
        gpus_per_host: GPUs per node, all on one NVSwitch.
        nics_per_host: NICs per node; must equal ``gpus_per_host`` when ``n_hosts > 1``
            (ignored on one host: NCCL drops the NICs when the communicator fits one node).
        gpu: ``"A100"``, ``"H100"`` or ``"H200"``.
        nic_bandwidth: per NIC, bytes/s, as NCCL sees it (port speed in Mb/s / 8000 GB/s:
            400 Gb/s -> 50e9).
        nvlink_bandwidth: per GPU and direction, bytes/s, NCCL's sum of NVLink link
            bandwidths (``SM80_NVLINK_BW`` 20 GB/s x 12 = 240e9 on A100,
            ``SM90_NVLINK_BW`` 20.6 x 18 = 370.8e9 on H100).
        cpu_vendor: ``"intel"``, ``"amd"``, ...; default the DGX box's (A100 AMD, H100 Intel).
        pcie_bandwidth: GPU-NIC PCIe path, bytes/s; default x16 of the GPU's PCIe generation.

    Returns:
        The :class:`TuningTopology`.

    Raises:
        NotImplementedError: for layouts this helper does not emulate (PCIe-only boxes, NIC
            counts other than one per GPU across hosts, multi-host pre-Hopper boxes whose trees
            depend on the PCIe switch layout); build a :class:`TuningTopology` by hand then.
    """
    if gpu not in _GPUS:
        raise ValueError(f"gpu must be one of {sorted(_GPUS)}")
    if n_hosts < 1 or gpus_per_host < 1:
        raise ValueError("n_hosts and gpus_per_host must be >= 1")
    sm, default_pci, default_vendor = _GPUS[gpu]
    vendor = cpu_vendor or default_vendor
    pci = default_pci if pcie_bandwidth is None else pcie_bandwidth * 1e-9
    nvl = nvlink_bandwidth * 1e-9
    nic = nic_bandwidth * 1e-9
    g, multi = gpus_per_host, n_hosts > 1
    n_ranks = n_hosts * g
    if g > 1 and nvl <= 0:
        raise NotImplementedError("only NVSwitch boxes are emulated (nvlink_bandwidth > 0)")
    if multi and nics_per_host != g:
        raise NotImplementedError("across hosts only one NIC per GPU is emulated")
    if multi and g > 1 and sm < 90:
        raise NotImplementedError("multi-host pre-Hopper trees depend on the PCIe switch layout")
    if n_ranks == 1:
        return TuningTopology(1, 1, 1, nics_per_host, sm, False, 1, 0.0, 0.0, cpu_vendor=vendor)

    speeds_intra = _SM100_SPEEDS_INTRA if sm >= 100 else _SM90_SPEEDS_INTRA if sm >= 90 else _SPEEDS_INTRA
    speeds_inter = _SM90_SPEEDS_INTER if sm >= 90 else _SPEEDS_INTER
    speeds = speeds_inter if multi else speeds_intra
    total_bw = max(nvl, pci)
    net_path = min(nic, pci)
    max_bw = net_path if multi else nvl

    if not multi:

        def ring_cap(si: float, se: float) -> int:
            return _count(si, nvl)

        def tree_cap(si: float, se: float) -> int:
            return _spread(g, si, nvl, MAX_CHANNELS)

    elif g == 1:

        def ring_cap(si: float, se: float) -> int:
            return _count(se, net_path)

        tree_cap = ring_cap
    else:

        def ring_cap(si: float, se: float) -> int:
            return min(g * _count(se, net_path), _spread(g, si, nvl, MAX_CHANNELS))

        tree_cap = ring_cap

    ring = _search("ring", speeds, max_bw, total_bw, 1, MAX_CHANNELS // 2, sm, g, ring_cap)
    if ring is None:
        raise NotImplementedError("the emulated ring search found nothing")
    tree = _search("tree", speeds, max_bw, total_bw, ring[0], ring[0], sm, g, tree_cap)
    if tree is None:
        raise NotImplementedError("the emulated tree search found nothing")
    n_ch = min(ring[0], tree[0])
    tree_pattern = "tree" if (multi and (g == 1 or sm >= 90)) else "balanced_tree"

    nvls = None
    if sm >= 90 and g > 2:
        heads = min(g, MAX_NVLS_ARITY)

        def nvls_cap(si: float, se: float) -> int:
            if multi and se > net_path + _EPS:
                return 0
            return max(0, min(heads, _count(si, nvl) - 1))

        min_nvls = 1 if multi else heads
        nvls = _search("nvls", speeds, max_bw, total_bw, min_nvls, heads, sm, g, nvls_cap)
    nvls_comm = (32 if sm >= 100 else 16) if nvls else 0

    # ncclTopoPostset: channels doubled, doubled again on SM90+ multi-node rings > 45 GB/s
    # under 16 channels, then raised to nvlsChannels.
    comm = min(MAX_CHANNELS, 2 * n_ch)
    if sm >= 90 and multi and ring[1] > 45.0 and comm < 16:
        comm = min(MAX_CHANNELS, 2 * comm)
    comm = max(comm, nvls_comm)

    return TuningTopology(
        n_ranks=n_ranks,
        n_hosts=n_hosts,
        gpus_per_host=g,
        nics_per_host=nics_per_host,
        sm=sm,
        nvls_support=nvls is not None,
        n_channels=n_ch,
        bw_intra=ring[1] * 1e9,
        bw_inter=ring[2] * 1e9,
        type_intra="nvl" if g > 1 else "loc",
        type_inter="pix",
        tree_bw_intra=tree[1] * 1e9,
        tree_bw_inter=tree[2] * 1e9,
        tree_pattern=tree_pattern,
        nvls_channels=nvls[0] if nvls else 0,
        nvls_bw_intra=nvls[1] * 1e9 if nvls else 0.0,
        nvls_bw_inter=nvls[2] * 1e9 if nvls else 0.0,
        comm_channels=comm,
        nvls_comm_channels=nvls_comm,
        cpu_vendor=vendor,
        ring_same_channels=not (multi and g > 1),
    )
