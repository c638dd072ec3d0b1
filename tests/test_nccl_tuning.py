"""NCCL 2.26.2 tuner re-implementation: switch points, hand-computed times, disables, restrictions.

The expected switch tables are re-derived here, independently of ``workloads.nccl_tuning``, from
the constants and formulas of NVIDIA/nccl ``src/graph/tuning.cc`` / ``src/enqueue.cc`` at
v2.26.2-1 (commit f44ac759), in plain float64, for the two reference systems:

(a) one host, 8 x A100 on NVSwitch: ring and tree graphs 12 channels x 20 GB/s (balanced tree),
    no NVLS, comm->nChannels 24;
(b) 2 hosts of 8 x H100 + 8 x 400 Gb/s NICs: ring 8 x 48 GB/s, tree 8 x 48 GB/s with the TREE
    pattern (x0.85), NVLS graph 8 heads at 40/48 GB/s, comm->nChannels 16, Intel CPUs.
"""

import math

import pytest

from workloads.nccl_search import topology_for
from workloads.nccl_tuning import (
    ALGORITHMS,
    NCCL_COMMIT,
    PROTOCOLS,
    TuningTopology,
    channels_used,
    choose,
    predicted_time,
    switch_points,
)

SIZES = [2**k for k in range(3, 34)]  # 8 B .. 8 GiB
OPS3 = ("all_reduce", "all_gather", "reduce_scatter")


@pytest.fixture(scope="module")
def a100() -> TuningTopology:
    return topology_for(1, 8, 8, "A100", nic_bandwidth=25e9, nvlink_bandwidth=240e9)


@pytest.fixture(scope="module")
def h100x2() -> TuningTopology:
    return topology_for(2, 8, 8, "H100", nic_bandwidth=50e9, nvlink_bandwidth=370.8e9)


# --------------------------------------------------------------------------------------------
# Independent compact re-derivation (float64), only what the two systems need.

# tuning.cc constants (us): baseLat and hwLat[NVLink|NET] for tree / ring / NVLS-tree, LL/LL128/Simple.
BASE = {"tree": (6.8, 14.0, 8.4), "ring": (6.6, 14.0, 8.4), "nvls": (0, 0, 0), "nvls_tree": (0, 0, 0)}
HW_NVL = {"tree": (0.6, 1.25, 4.0), "ring": (0.6, 1.9, 3.4), "nvls": (0, 0, 25), "nvls_tree": (0, 0, 25)}
HW_NET = {"tree": (5.0, 8.5, 14), "ring": (2.7, 4.0, 14.0), "nvls": (0, 0, 18), "nvls_tree": (0, 0, 14)}
TREE_CORR = {
    "LL": [1, 1, 1, 1, 0.9, 0.8, 0.7, 0.7, 0.7, 0.7, 0.6, 0.5, 0.4, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1, 1, 1, 1],
    "LL128": [1, 1, 1, 1, 1, 0.9, 0.8, 0.8, 0.8, 0.7, 0.6, 0.6, 0.6, 0.6, 0.6, 0.6, 0.8, 0.9, 0.9, 0.9]
    + [0.9, 1, 1],
    "Simple": [0.9, 0.9, 0.9, 0.9, 0.9, 0.9, 0.9, 0.8, 0.7, 0.6, 0.6, 0.5, 0.5, 0.5, 0.5, 0.6, 0.7, 0.8]
    + [0.7, 0.7, 0.8, 0.9, 0.9],
}

# The two systems: ranks, nodes, ring/tree (channels, GB/s), NVLS (heads, intra, inter), the
# [compute-capability][node-count] row picks of llMaxBws / perChMax*Bws, net overhead, ...
CFG = {
    "a": dict(
        ranks=8,
        nodes=1,
        ch=12,
        bw=20.0,
        tree_bw=20.0,
        tree_is_tree=False,
        nvls=None,
        comm_ch=24,
        ll_max=87.7,
        tree_max=24.0,
        ring_ll128_max=20.0,
        tree_ll128_max=20.0,
        net_oh=0.0,
        sm=80,
    ),
    "b": dict(
        ranks=16,
        nodes=2,
        ch=8,
        bw=48.0,
        tree_bw=48.0,
        tree_is_tree=True,
        nvls=(8, 40.0, 48.0),
        comm_ch=16,
        ll_max=39.0,
        tree_max=41.4,
        ring_ll128_max=36.7,
        tree_ll128_max=36.7,
        net_oh=1.0,
        sm=90,
    ),
}


def _candidates(cfg: dict, op: str) -> list[tuple[str, str, float, float]]:
    """(algorithm, protocol, algBw GB/s, latency us) in NCCL's (algorithm, protocol) order."""
    n, nodes, ch = cfg["ranks"], cfg["nodes"], cfg["ch"]
    out = []
    nsteps = 2 * (n - 1) if op == "all_reduce" else n - 1
    for pi, proto in enumerate(PROTOCOLS):
        if op != "all_reduce":
            break
        bus = min(ch * cfg["tree_bw"] * 0.92, ch * cfg["tree_max"])
        if proto == "LL":
            bus = min(bus / 3.8, cfg["ll_max"])
        if proto == "LL128":
            bus = min(bus * (7 / 9 if nodes == 1 else 120 / 128), ch * cfg["tree_ll128_max"])
        if cfg["tree_is_tree"]:
            bus *= 0.85
        hops = (n // nodes - 1) * HW_NVL["tree"][pi] + int(math.log2(nodes)) * HW_NET["tree"][pi]
        out.append(("tree", proto, bus * 0.5, BASE["tree"][pi] + 2 * hops))
    for pi, proto in enumerate(PROTOCOLS):
        bus = ch * cfg["bw"]
        if proto == "LL":
            bus = min(cfg["ll_max"], bus * 0.5)
        if proto == "LL128":
            bus = min(bus * 0.92, ch * cfg["ring_ll128_max"])
        oh = cfg["net_oh"] * (3 if proto == "Simple" else 1)
        inter_steps = 0 if nodes == 1 else (2 * (nodes - 1) if op == "all_reduce" else nodes - 1)
        lat = BASE["ring"][pi] + (nsteps - inter_steps) * max(HW_NVL["ring"][pi], oh)
        lat += inter_steps * HW_NET["ring"][pi]
        out.append(("ring", proto, bus * n / nsteps, lat))
    if cfg["nvls"] is not None:
        heads, intra, inter = cfg["nvls"]
        if nodes == 1:  # NVLS (single node only without CollNet), Simple only
            bw = heads * min(intra, inter) * (5 / 6 if op == "all_reduce" else 1)
            out.append(("nvls", "Simple", bw, HW_NVL["nvls"][2]))
        elif op == "all_reduce":  # NVLS-tree (multi-node all_reduce only)
            bw = heads * min(intra, inter) * 5 / 6
            lat = HW_NVL["nvls_tree"][2] + 2 * int(math.log2(nodes)) * HW_NET["nvls_tree"][2]
            out.append(("nvls_tree", "Simple", bw, lat))
    return out


def _time_us(cfg: dict, op: str, algo: str, proto: str, bw: float, lat: float, nbytes: int) -> float:
    log_size = (nbytes >> 6).bit_length() - 1
    if algo == "tree" and 0 <= log_size < 23:
        bw *= TREE_CORR[proto][log_size]
    if algo == "ring" and proto == "Simple" and cfg["nodes"] > 1 and op == "all_reduce":
        if nbytes // (cfg["comm_ch"] * cfg["ranks"]) >= 64:
            lat *= 1.4
    return lat + nbytes / (1000 * bw)


def _expected_switches(cfg: dict, op: str) -> list[tuple[int, str, str]]:
    out, prev = [], None
    for size in SIZES:
        best = min(
            enumerate(_candidates(cfg, op)),
            key=lambda ic: (_time_us(cfg, op, ic[1][0], ic[1][1], ic[1][2], ic[1][3], size), ic[0]),
        )[1]
        if best[:2] != prev:
            out.append((size, best[0], best[1]))
            prev = best[:2]
    return out


# --------------------------------------------------------------------------------------------


def test_pinned_release_is_named() -> None:
    assert NCCL_COMMIT == "f44ac759fee12ecb3cc6891e9e739a000f66fd70"
    assert ALGORITHMS == ("tree", "ring", "collnet_direct", "collnet_chain", "nvls", "nvls_tree", "pat")
    assert PROTOCOLS == ("LL", "LL128", "Simple")


def test_topology_for_reference_systems(a100: TuningTopology, h100x2: TuningTopology) -> None:
    assert (a100.n_ranks, a100.n_channels, a100.bw_intra, a100.bw_inter) == (8, 12, 20e9, 20e9)
    assert (a100.tree_bw_intra, a100.tree_pattern, a100.comm_channels) == (20e9, "balanced_tree", 24)
    assert not a100.nvls_support and a100.sm == 80
    assert (h100x2.n_ranks, h100x2.n_channels, h100x2.bw_intra, h100x2.bw_inter) == (16, 8, 48e9, 48e9)
    assert (h100x2.tree_bw_intra, h100x2.tree_pattern, h100x2.comm_channels) == (48e9, "tree", 16)
    assert h100x2.nvls_support and (h100x2.nvls_channels, h100x2.nvls_bw_intra, h100x2.nvls_bw_inter) == (
        8,
        40e9,
        48e9,
    )
    assert (h100x2.nvls_comm_channels, h100x2.cpu_vendor, h100x2.sm) == (16, "intel", 90)


@pytest.mark.parametrize("op", OPS3)
def test_switch_points_a100_single_host(a100: TuningTopology, op: str) -> None:
    got = switch_points(op, a100, SIZES)
    print(f"\nA100 x8 {op}: {got}")
    assert got == _expected_switches(CFG["a"], op)


@pytest.mark.parametrize("op", OPS3)
def test_switch_points_h100_two_hosts(h100x2: TuningTopology, op: str) -> None:
    got = switch_points(op, h100x2, SIZES)
    print(f"\n2 x H100 x8 {op}: {got}")
    assert got == _expected_switches(CFG["b"], op)


def test_switch_tables_are_not_trivial(a100: TuningTopology, h100x2: TuningTopology) -> None:
    # Pin the shape too, so a shared mistake in both derivations cannot pass silently.
    assert [x[1:] for x in switch_points("all_reduce", a100, SIZES)] == [
        ("ring", "LL"),
        ("ring", "LL128"),
        ("ring", "Simple"),
    ]
    assert [x[1:] for x in switch_points("all_reduce", h100x2, SIZES)] == [
        ("tree", "LL"),
        ("tree", "LL128"),
        ("nvls_tree", "Simple"),
    ]
    assert [x[1:] for x in switch_points("all_gather", h100x2, SIZES)] == [
        ("ring", "LL"),
        ("ring", "LL128"),
        ("ring", "Simple"),
    ]


def test_hand_computed_times(a100: TuningTopology, h100x2: TuningTopology) -> None:
    us = 1e-6
    # A100 ring/Simple all_reduce, 1 MiB: bw = 12*20 * 8/14 GB/s, lat = 8.4 + 14*3.4 us.
    t = 8.4 + 14 * 3.4 + 2**20 / (1000 * (240 * 8 / 14))
    assert predicted_time("all_reduce", "ring", "Simple", 2**20, a100) == pytest.approx(t * us, rel=1e-6)
    # A100 tree/LL all_reduce, 4 KiB: bus min(240*.92, 12*24) = 220.8, LL /3.8 (< 87.7), x0.5,
    # tree correction LL[log2(4096/64) = 6] = 0.7; lat = 6.8 + 2*(7*0.6).
    t = 6.8 + 2 * 7 * 0.6 + 4096 / (1000 * (220.8 / 3.8 * 0.5 * 0.7))
    assert predicted_time("all_reduce", "tree", "LL", 4096, a100) == pytest.approx(t * us, rel=1e-6)
    # A100 ring/LL all_gather, 8 B: bus min(87.7, 240/2) x 8/7; lat = 6.6 + 7*0.6.
    t = 6.6 + 7 * 0.6 + 8 / (1000 * 87.7 * 8 / 7)
    assert predicted_time("all_gather", "ring", "LL", 8, a100) == pytest.approx(t * us, rel=1e-6)
    # 2xH100 ring/Simple all_reduce, 64 MiB: bw 8*48 * 16/30; lat (8.4 + 28*max(3.4, 3*1) +
    # 2*14) x1.4 plateau (64 MiB / (16 ch * 16 ranks) >= 64).
    t = (8.4 + 28 * 3.4 + 2 * 14.0) * 1.4 + 2**26 / (1000 * 384 * 16 / 30)
    assert predicted_time("all_reduce", "ring", "Simple", 2**26, h100x2) == pytest.approx(t * us, rel=1e-6)
    # 2xH100 NVLS-tree all_reduce, 1 GiB: bw 8*min(40, 48) * 5/6; lat 25 + 2*log2(2)*14.
    t = 25 + 2 * 14 + 2**30 / (1000 * 320 * 5 / 6)
    assert predicted_time("all_reduce", "nvls_tree", "Simple", 2**30, h100x2) == pytest.approx(
        t * us, rel=1e-6
    )
    # 2xH100 tree/LL128 all_reduce, 1 MiB: bus min(384*.92, 8*41.4) = 331.2 -> min(x120/128,
    # 8*36.7) = 293.6 -> x0.85 (TREE pattern) x0.5; correction LL128[14] = 0.6;
    # lat 14 + 2*(7*1.25 + 1*8.5).
    t = 14 + 2 * (7 * 1.25 + 8.5) + 2**20 / (1000 * (293.6 * 0.85 * 0.5 * 0.6))
    assert predicted_time("all_reduce", "tree", "LL128", 2**20, h100x2) == pytest.approx(t * us, rel=1e-6)
    # 2xH100 ring/LL128 reduce_scatter, 2 MiB: min(384*.92, 8*36.7) x16/15; lat 14 + 14*1.9 + 4.
    t = 14 + 14 * 1.9 + 4.0 + 2**21 / (1000 * 293.6 * 16 / 15)
    assert predicted_time("reduce_scatter", "ring", "LL128", 2**21, h100x2) == pytest.approx(t * us, rel=1e-6)


def test_choose_is_the_minimum(h100x2: TuningTopology) -> None:
    for size in (8, 2**16, 2**22, 2**30):
        algo, proto, t = choose("all_reduce", size, h100x2)
        times = {
            (a, p): predicted_time("all_reduce", a, p, size, h100x2) for a in ALGORITHMS for p in PROTOCOLS
        }
        assert t == min(times.values()) == times[(algo, proto)]


def test_disabled_combinations_are_inf(a100: TuningTopology, h100x2: TuningTopology) -> None:
    inf = math.inf
    for op in OPS3:
        assert predicted_time(op, "nvls", "Simple", 2**20, a100) == inf  # no NVLS on A100
        # PAT: never for all_reduce, and only with one GPU per node otherwise.
        assert predicted_time(op, "pat", "Simple", 2**20, h100x2) == inf
        assert predicted_time(op, "collnet_direct", "Simple", 2**20, h100x2) == inf
    assert predicted_time("all_reduce", "nvls_tree", "Simple", 2**20, a100) == inf  # single node
    assert predicted_time("all_reduce", "nvls", "Simple", 2**20, h100x2) == inf  # multi-node needs CollNet
    assert predicted_time("all_gather", "nvls", "Simple", 2**20, h100x2) == inf  # single-node only
    assert predicted_time("all_reduce", "nvls_tree", "LL", 2**20, h100x2) == inf  # Simple only
    assert predicted_time("all_gather", "tree", "LL", 2**20, h100x2) == inf  # tree is all_reduce only
    h100 = topology_for(1, 8, 8, "H100", 50e9, 370.8e9)
    assert predicted_time("all_gather", "nvls", "Simple", 2**20, h100) < inf
    assert predicted_time("all_reduce", "nvls_tree", "Simple", 2**20, h100) == inf
    # LL128 default rule: SM86 is not in the LL128 list; a PHB inter path disables it too.
    sm86 = TuningTopology(8, 1, 8, 0, 86, False, 12, 12e9, 12e9)
    assert predicted_time("all_reduce", "ring", "LL128", 2**20, sm86) == inf
    assert predicted_time("all_reduce", "ring", "LL", 2**20, sm86) < inf
    phb = TuningTopology(8, 1, 8, 0, 80, False, 12, 20e9, 20e9, type_inter="phb")
    assert predicted_time("all_reduce", "ring", "LL128", 2**20, phb) == inf
    pxn = TuningTopology(16, 2, 8, 8, 90, False, 8, 48e9, 48e9, type_inter="pxn")
    assert predicted_time("all_reduce", "ring", "LL128", 2**20, pxn) < inf  # PXN is fine on SM90


def test_pat_on_one_gpu_per_node() -> None:
    topo = topology_for(4, 1, 1, "H100", 50e9, 0.0)
    assert predicted_time("all_gather", "pat", "Simple", 2**20, topo) < math.inf
    assert predicted_time("all_gather", "pat", "LL", 2**20, topo) == math.inf
    assert predicted_time("all_reduce", "pat", "Simple", 2**20, topo) == math.inf


def test_restrictions(a100: TuningTopology, h100x2: TuningTopology) -> None:
    assert choose("all_reduce", 2**30, h100x2)[:2] == ("nvls_tree", "Simple")
    assert choose("all_reduce", 2**30, h100x2, algorithms=("ring",))[:2] == ("ring", "Simple")
    assert choose("all_reduce", 8, h100x2, algorithms=("ring", "nvls_tree"))[:2] == ("ring", "LL")
    assert choose("all_reduce", 2**30, h100x2, protocols=("LL", "LL128"))[:2] == ("ring", "LL128")
    assert choose("all_gather", 8, a100, protocols=("Simple",))[:2] == ("ring", "Simple")
    restricted = choose("all_reduce", 2**30, h100x2, algorithms=("tree",))
    assert restricted[2] == predicted_time("all_reduce", "tree", "Simple", 2**30, h100x2)
    with pytest.raises(ValueError):
        choose("all_reduce", 2**20, h100x2, algorithms=("pat",))
    # Listing LL128 in NCCL_PROTO forces it on past the default safety rule.
    sm86 = TuningTopology(8, 1, 8, 0, 86, False, 12, 12e9, 12e9)
    assert choose("all_reduce", 2**20, sm86, protocols=("LL128",))[1] == "LL128"
    assert [p for _, _, p in switch_points("all_reduce", a100, SIZES, protocols=("LL", "Simple"))] == [
        "LL",
        "Simple",
    ]


def test_channels_used(a100: TuningTopology, h100x2: TuningTopology) -> None:
    # Ring LL: threshold 8 B x 8 ranks per thread, 512 threads -> 32 KiB per channel.
    assert channels_used("all_reduce", "ring", "LL", 8, a100) == 1
    assert channels_used("all_reduce", "ring", "LL", 2**18, a100) == 8
    assert channels_used("all_reduce", "ring", "LL", 2**20, a100) == 24
    # Ring Simple: 64 B x 512 threads; tree LL128: 8 B x 640 threads.
    assert channels_used("all_gather", "ring", "Simple", 5 * 2**15, a100) == 5
    assert channels_used("all_reduce", "tree", "LL128", 2**16, h100x2) == 12
    assert channels_used("all_reduce", "nvls_tree", "Simple", 8, h100x2) == 16


def test_bad_names(a100: TuningTopology) -> None:
    with pytest.raises(ValueError):
        predicted_time("alltoall", "ring", "LL", 8, a100)
    with pytest.raises(ValueError):
        predicted_time("all_reduce", "ring", "LL64", 8, a100)
    with pytest.raises(ValueError):
        TuningTopology(8, 1, 8, 0, 80, False, 12, 20e9, 20e9, type_inter="pcie")
