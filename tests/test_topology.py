"""Leaf-spine graphs, their validation, and the compiled fabric's routes and trunks against networkx."""

from __future__ import annotations

import math

import networkx as nx
import numpy as np
import pytest
from conftest import make_spec

from topologies.compiled import LEG_DOWN, LEG_UP, MAX_HOPS, SPRAY, compile_fabric
from topologies.leaf_spine import TopologyError, build_graph, leaf_of_gpu, oversubscription, validate

LAT = 5e-7
SPECS = {
    "plain": make_spec(leaves=3, spines=2, hosts_per_leaf=2, gpus_per_host=2, link_latency=LAT),
    "rail": make_spec(
        leaves=4, spines=3, hosts_per_leaf=2, gpus_per_host=2, rail_optimized=True, link_latency=LAT
    ),
    "rail4": make_spec(
        leaves=4, spines=2, hosts_per_leaf=1, gpus_per_host=4, rail_optimized=True, link_latency=LAT
    ),
    "single_leaf": make_spec(leaves=1, spines=3, hosts_per_leaf=3, gpus_per_host=2, link_latency=LAT),
    "one_gpu": make_spec(leaves=2, spines=4, hosts_per_leaf=2, gpus_per_host=1, link_latency=LAT),
}

KIND_ENDS = {
    "nvlink_up": ("gpu", "nvswitch"),
    "nvlink_down": ("nvswitch", "gpu"),
    "nic_up": ("gpu", "leaf"),
    "nic_down": ("leaf", "gpu"),
    "uplink": ("leaf", "spine"),
    "downlink": ("spine", "leaf"),
}


# ------------------------------------------------------------------------------ the graph


@pytest.mark.parametrize(
    "params, nodes, edges",
    [
        # The module docstring's example.
        (dict(leaves=2, spines=2, hosts_per_leaf=1, gpus_per_host=2), 10, 24),
        # 32 GPUs + 8 NVSwitches + 4 leaves + 4 spines; 4 links per GPU + 2 per leaf-spine pair.
        (dict(leaves=4, spines=4, hosts_per_leaf=2, gpus_per_host=4), 48, 160),
        (dict(leaves=4, spines=4, hosts_per_leaf=2, gpus_per_host=4, rail_optimized=True), 48, 160),
        # A single leaf has no spine tier at all.
        (dict(leaves=1, spines=8, hosts_per_leaf=3, gpus_per_host=2), 6 + 3 + 1, 24),
        (dict(leaves=16, spines=16, hosts_per_leaf=2, gpus_per_host=8), 256 + 32 + 32, 1024 + 512),
    ],
)
def test_node_and_edge_counts(params: dict, nodes: int, edges: int) -> None:
    spec = make_spec(**params)
    graph = build_graph(spec)
    assert graph.is_directed()
    assert (graph.number_of_nodes(), graph.number_of_edges()) == (nodes, edges)
    kinds = {}
    for _, _, kind in graph.edges(data="kind"):
        kinds[kind] = kinds.get(kind, 0) + 1
    for kind in ("nvlink_up", "nvlink_down", "nic_up", "nic_down"):
        assert kinds[kind] == spec.gpus
    cross = spec.leaves * spec.spines if spec.leaves > 1 else 0
    assert kinds.get("uplink", 0) == kinds.get("downlink", 0) == cross
    assert sum(1 for n in graph if n[0] == "spine") == (spec.spines if spec.leaves > 1 else 0)


@pytest.mark.parametrize("name", sorted(SPECS))
def test_link_kinds_capacities_latencies(name: str) -> None:
    spec = make_spec(
        **{**SPECS[name].__dict__, "nic_bandwidth": 50e9, "uplink_bandwidth": 70e9, "nvlink_bandwidth": 450e9}
    )
    graph = build_graph(spec)
    expected = {
        "nvlink_up": (450e9, 0.0),
        "nvlink_down": (450e9, 0.0),
        "nic_up": (50e9, LAT),
        "nic_down": (50e9, LAT),
        "uplink": (70e9, LAT),
        "downlink": (70e9, LAT),
    }
    for u, v, attrs in graph.edges(data=True):
        kind = attrs["kind"]
        assert (u[0], v[0]) == KIND_ENDS[kind]
        assert (attrs["capacity"], attrs["latency"]) == expected[kind]
        assert graph.has_edge(v, u)  # full duplex: one link each way
        if kind in ("nvlink_up", "nvlink_down"):
            gpu, switch = (u, v) if kind == "nvlink_up" else (v, u)
            assert switch[1] == gpu[1] // spec.gpus_per_host
        if kind == "nic_up":
            assert v[1] == leaf_of_gpu(spec, u[1])
    # Every leaf has hosts_per_leaf * gpus_per_host host ports, in both layouts.
    for leaf in range(spec.leaves):
        ports = [u for u in graph.predecessors(("leaf", leaf)) if u[0] == "gpu"]
        assert len(ports) == spec.hosts_per_leaf * spec.gpus_per_host


@pytest.mark.parametrize(
    "params, ratio",
    [
        (dict(hosts_per_leaf=2, gpus_per_host=8, nic_bandwidth=50e9, spines=16, uplink_bandwidth=50e9), 1.0),
        (dict(hosts_per_leaf=2, gpus_per_host=8, nic_bandwidth=50e9, spines=4, uplink_bandwidth=50e9), 4.0),
        (dict(hosts_per_leaf=2, gpus_per_host=4, nic_bandwidth=50e9, spines=4, uplink_bandwidth=100e9), 1.0),
        (dict(hosts_per_leaf=3, gpus_per_host=1, nic_bandwidth=100.0, spines=2, uplink_bandwidth=100.0), 1.5),
        (dict(hosts_per_leaf=1, gpus_per_host=2, nic_bandwidth=25e9, spines=4, uplink_bandwidth=50e9), 0.25),
    ],
)
def test_oversubscription(params: dict, ratio: float) -> None:
    spec = make_spec(leaves=2, **params)
    assert oversubscription(spec) == pytest.approx(ratio, rel=1e-12)
    # It is the leaf's host-facing capacity over its spine-facing capacity, read off the graph.
    graph = build_graph(spec)
    down = sum(graph.edges[e]["capacity"] for e in graph.in_edges(("leaf", 0)) if e[0][0] == "gpu")
    up = sum(graph.edges[e]["capacity"] for e in graph.out_edges(("leaf", 0)) if e[1][0] == "spine")
    assert down / up == pytest.approx(ratio, rel=1e-12)


@pytest.mark.parametrize(
    "hosts_per_leaf, gpus_per_host, groups", [(2, 2, 2), (1, 4, 1), (3, 2, 2), (2, 4, 2)]
)
def test_rail_optimized_leaf_of_nic(hosts_per_leaf: int, gpus_per_host: int, groups: int) -> None:
    spec = make_spec(
        leaves=groups * gpus_per_host,
        hosts_per_leaf=hosts_per_leaf,
        gpus_per_host=gpus_per_host,
        rail_optimized=True,
    )
    graph = build_graph(spec)
    per_group = hosts_per_leaf * gpus_per_host  # hosts in one rail group
    assert spec.hosts == groups * per_group
    for gpu in range(spec.gpus):
        host, nic = divmod(gpu, gpus_per_host)
        leaf = (host // per_group) * gpus_per_host + nic
        assert leaf_of_gpu(spec, gpu) == leaf
        assert graph.has_edge(("gpu", gpu), ("leaf", leaf)) and graph.has_edge(("leaf", leaf), ("gpu", gpu))
    # The GPUs of one host are on as many different leaves as it has NICs.
    for host in range(spec.hosts):
        leaves = {leaf_of_gpu(spec, g) for g in range(host * gpus_per_host, (host + 1) * gpus_per_host)}
        assert len(leaves) == gpus_per_host


def test_not_rail_optimized_leaf_of_nic() -> None:
    spec = make_spec(leaves=3, hosts_per_leaf=2, gpus_per_host=4)
    for gpu in range(spec.gpus):
        assert leaf_of_gpu(spec, gpu) == gpu // 4 // 2


def test_rail_optimized_with_one_gpu_is_the_plain_layout() -> None:
    plain = make_spec(leaves=3, hosts_per_leaf=2, gpus_per_host=1)
    rail = make_spec(leaves=3, hosts_per_leaf=2, gpus_per_host=1, rail_optimized=True)
    assert list(build_graph(plain).edges(data=True)) == list(build_graph(rail).edges(data=True))


# ------------------------------------------------------------------------------ validation


@pytest.mark.parametrize(
    "field, value",
    [
        ("leaves", 0),
        ("leaves", -2),
        ("spines", 0),
        ("hosts_per_leaf", -1),
        ("gpus_per_host", 0),
        ("gpus_per_host", 2.0),
        ("spines", True),
        ("nic_bandwidth", 0.0),
        ("nic_bandwidth", -1e9),
        ("uplink_bandwidth", 0),
        ("nvlink_bandwidth", -5.0),
        ("nvlink_bandwidth", math.nan),
        ("link_latency", -1e-9),
        ("message_latency", -1.0),
        ("nvlink_message_latency", -1e-6),
        ("message_latency", math.nan),
    ],
)
def test_invalid_fields_are_named(field: str, value: object) -> None:
    spec = make_spec(**{field: value})
    for call in (validate, build_graph, compile_fabric):
        with pytest.raises(TopologyError) as info:
            call(spec)
        assert info.value.field == field
        assert str(info.value).startswith(f"{field}:")
        assert isinstance(info.value, ValueError)


@pytest.mark.parametrize("leaves, gpus_per_host", [(3, 2), (6, 4), (1, 2), (2, 8)])
def test_rail_optimized_needs_whole_rail_groups(leaves: int, gpus_per_host: int) -> None:
    spec = make_spec(leaves=leaves, gpus_per_host=gpus_per_host, rail_optimized=True)
    with pytest.raises(TopologyError) as info:
        build_graph(spec)
    assert info.value.field == "leaves"
    assert str(gpus_per_host) in str(info.value)
    # The same counts are fine without rails, and with whole rail groups.
    build_graph(make_spec(leaves=leaves, gpus_per_host=gpus_per_host))
    build_graph(make_spec(leaves=gpus_per_host, gpus_per_host=gpus_per_host, rail_optimized=True))


def test_zero_latencies_and_defaults_are_valid() -> None:
    validate(make_spec())
    validate(make_spec(link_latency=0.0, message_latency=0.0, nvlink_message_latency=0.0))


# ------------------------------------------------------------------------------ compiled routes


def gpu_endpoints_only(graph: nx.DiGraph, src: int, dst: int) -> nx.DiGraph:
    """The graph without GPUs other than ``src`` and ``dst``: GPUs are endpoints, not routers."""
    keep = {("gpu", src), ("gpu", dst)}
    return nx.subgraph_view(graph, filter_node=lambda node: node[0] != "gpu" or node in keep)


@pytest.mark.parametrize("name", sorted(SPECS))
def test_routes_are_the_networkx_shortest_paths(name: str) -> None:
    spec = SPECS[name]
    graph = build_graph(spec)
    fabric = compile_fabric(spec, graph)
    link_id = {edge: i for i, edge in enumerate(graph.edges())}
    assert fabric.n_physical == len(link_id)
    n = spec.gpus
    src, dst = (a.ravel() for a in np.meshgrid(np.arange(n), np.arange(n), indexing="ij"))
    src, dst = src[src != dst], dst[src != dst]
    choices = range(max(fabric.n_spines, 1))
    routed = [fabric.route(src, dst, np.full(src.shape[0], c)) for c in choices]
    for paths, latency in routed:
        assert paths.shape == (src.shape[0], MAX_HOPS) and paths.dtype == np.int32
        assert np.all(paths[:, :2] >= 0) and np.all(paths < fabric.n_physical)
        hops = (paths >= 0).sum(axis=1)
        np.testing.assert_allclose(latency, fabric.latency[np.maximum(paths, 0)].sum(1, where=paths >= 0))
        assert np.all(np.isin(hops, (2, 4)))
    for i, (s, d) in enumerate(zip(src.tolist(), dst.tolist(), strict=True)):
        ours = {tuple(int(x) for x in paths[i] if x >= 0) for paths, _ in routed}
        view = gpu_endpoints_only(graph, s, d)
        theirs = {
            tuple(link_id[(u, v)] for u, v in zip(p, p[1:], strict=False))
            for p in nx.all_shortest_paths(view, ("gpu", s), ("gpu", d))
        }
        same_host = s // spec.gpus_per_host == d // spec.gpus_per_host
        if same_host:
            # NVLink only, even where the NICs share a leaf (another 2-hop path).
            nvlink = (
                link_id[(("gpu", s), ("nvswitch", s // spec.gpus_per_host))],
                link_id[(("nvswitch", d // spec.gpus_per_host), ("gpu", d))],
            )
            assert ours == {nvlink}
            assert nvlink in theirs
            assert fabric.n_equal_cost_paths(np.array([s]), np.array([d]))[0] == 1
        else:
            assert ours == theirs, (s, d)
            assert fabric.n_equal_cost_paths(np.array([s]), np.array([d]))[0] == len(theirs)
            same_leaf = leaf_of_gpu(spec, s) == leaf_of_gpu(spec, d)
            assert len(theirs) == (1 if same_leaf else spec.spines)
            assert bool(fabric.crosses_spine(np.array([s]), np.array([d]))[0]) == (not same_leaf)


def _hops(row: np.ndarray) -> list[int]:
    """The links of one padded path row."""
    return [int(link) for link in row if link >= 0]


def test_route_latency_by_path() -> None:
    spec = SPECS["plain"]  # 3 leaves, 2 hosts per leaf, 2 GPUs per host
    fabric = compile_fabric(spec)
    src = np.array([0, 0, 0])
    dst = np.array([1, 2, 4])  # same host, same leaf, next leaf
    for choice in (0, 1, SPRAY):
        paths, latency = fabric.route(src, dst, np.full(3, choice))
        np.testing.assert_allclose(latency, [0.0, 2 * LAT, 4 * LAT], rtol=1e-12)
        assert paths.shape[1] == MAX_HOPS and np.all(paths[:, 4:] == -1)
        assert _hops(paths[0]) == [fabric.nvl_up[0], fabric.nvl_down[1]]
        assert _hops(paths[1]) == [fabric.nic_up[0], fabric.nic_down[2]]
    up, down = fabric.nic_up[0], fabric.nic_down[4]
    paths, _ = fabric.route(src, dst, np.array([0, 0, SPRAY]))
    assert _hops(paths[2]) == [up, fabric.trunk_up[0], fabric.trunk_down[1], down]
    paths, _ = fabric.route(src, dst, np.array([0, 0, 1]))
    assert _hops(paths[2]) == [up, fabric.leaf_up[0, 1], fabric.spine_down[1, 1], down]


def test_route_through_a_proxy_and_to_the_switch() -> None:
    fabric = compile_fabric(SPECS["plain"])
    # GPU 1 sends to GPU 4 (next leaf) through GPU 0's NIC (PXN): NVLink 1 -> 0 first.
    paths, latency = fabric.route(np.array([1, 1]), np.array([4, 5]), np.array([1, 0]), via=np.array([0, -1]))
    assert _hops(paths[0]) == [
        fabric.nvl_up[1],
        fabric.nvl_down[0],
        fabric.nic_up[0],
        fabric.leaf_up[0, 1],
        fabric.spine_down[1, 1],
        fabric.nic_down[4],
    ]
    assert _hops(paths[1]) == [
        fabric.nic_up[1],
        fabric.leaf_up[0, 0],
        fabric.spine_down[0, 1],
        fabric.nic_down[5],
    ]
    np.testing.assert_allclose(latency, [4 * LAT, 4 * LAT], rtol=1e-12)
    # NVLink SHARP legs end or start in the switch.
    paths, _ = fabric.route(np.array([1, 2]), np.array([1, 2]), np.zeros(2), leg=np.array([LEG_UP, LEG_DOWN]))
    assert _hops(paths[0]) == [fabric.nvl_up[1]] and _hops(paths[1]) == [fabric.nvl_down[2]]


@pytest.mark.parametrize("choice", [-2, 2, 7])
def test_route_rejects_spine_out_of_range(choice: int) -> None:
    fabric = compile_fabric(SPECS["plain"])
    with pytest.raises(ValueError, match="spine choice"):
        fabric.route(np.array([0]), np.array([4]), np.array([choice]))
    # Ignored where the pair does not cross the spine tier.
    paths, _ = fabric.route(np.array([0]), np.array([2]), np.array([choice]))
    assert (paths[0] >= 0).sum() == 2


# ------------------------------------------------------------------------------ trunks


@pytest.mark.parametrize("name", ["plain", "rail", "one_gpu"])
def test_trunk_links(name: str) -> None:
    spec = make_spec(**{**SPECS[name].__dict__, "uplink_bandwidth": 37.5})
    fabric = compile_fabric(spec)
    leaves, spines = spec.leaves, spec.spines
    assert fabric.n_spines == spines
    assert fabric.n_links == fabric.n_physical + 2 * leaves
    trunks = np.arange(fabric.n_physical, fabric.n_links)
    np.testing.assert_array_equal(np.sort(np.concatenate([fabric.trunk_up, fabric.trunk_down])), trunks)
    np.testing.assert_allclose(fabric.capacity[trunks], spines * 37.5, rtol=1e-12)
    np.testing.assert_allclose(fabric.latency[trunks], spec.link_latency)
    assert fabric.trunk_members.shape == (2 * leaves, spines)
    for leaf in range(leaves):
        assert fabric.kind[fabric.trunk_up[leaf]] == "trunk_up"
        assert fabric.kind[fabric.trunk_down[leaf]] == "trunk_down"
        up = fabric.trunk_members[fabric.trunk_up[leaf] - fabric.n_physical]
        down = fabric.trunk_members[fabric.trunk_down[leaf] - fabric.n_physical]
        # The leaf's uplinks to every spine, and every spine's downlink to the leaf.
        assert set(fabric.name[i] for i in up) == {f"leaf{leaf}->spine{s}" for s in range(spines)}
        assert set(fabric.name[i] for i in down) == {f"spine{s}->leaf{leaf}" for s in range(spines)}
        assert np.all(fabric.kind[up] == "uplink") and np.all(fabric.kind[down] == "downlink")
        assert fabric.capacity[up].sum() == pytest.approx(fabric.capacity[fabric.trunk_up[leaf]], rel=1e-12)
    # Physical links are the graph's, in the graph's edge order.
    graph = build_graph(spec)
    for i, (u, v, kind) in enumerate(graph.edges(data="kind")):
        assert fabric.kind[i] == kind and fabric.name[i] == f"{u[0]}{u[1]}->{v[0]}{v[1]}"


def test_single_leaf_has_no_trunks_or_spines() -> None:
    fabric = compile_fabric(SPECS["single_leaf"])
    assert fabric.n_spines == 0 and fabric.n_links == fabric.n_physical
    assert fabric.trunk_members.size == 0
    assert not fabric.crosses_spine(np.arange(6), np.arange(6)[::-1]).any()
