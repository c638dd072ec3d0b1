"""A fabric compiled once from its networkx graph to flat numpy arrays for the hot path.

Links get dense integer ids. Paths are rows of a fixed-width ``int32`` array padded with ``-1``
(``MAX_HOPS`` wide). Routing is vectorised: :meth:`CompiledFabric.route` turns arrays of
(source GPU, destination GPU, spine choice) into paths without touching networkx.

Besides the physical links the compiled fabric has one *trunk* link per leaf and direction,
whose capacity is the sum of that leaf's spine links. Ideal packet spraying spreads every
sprayed flow evenly over all spines, so every spine link of a leaf carries the same sprayed
load: the per-link constraints ``sum(rate)/S <= C`` are then exactly the single constraint
``sum(rate) <= S*C`` on the trunk. Routing a flow with choice ``SPRAY`` uses the trunks;
metrics spread trunk bytes evenly back over the physical links they stand for.
"""

from __future__ import annotations

from dataclasses import dataclass

import networkx as nx
import numpy as np

from topologies.leaf_spine import LeafSpine, build_graph

MAX_HOPS = 6
"""Longest path in links: NVLink to the proxy GPU and back down (PXN), then NIC up, leaf to spine,
spine to leaf, NIC down."""

LEG_FULL = 0
"""A message goes from its source GPU to its destination GPU."""
LEG_UP = 1
"""A message ends in the source's NVSwitch (NVLink SHARP reduction): its source's NVLink up only."""
LEG_DOWN = 2
"""A message starts in the destination's NVSwitch (NVLink SHARP multicast): its NVLink down only."""

SPRAY = -1
"""Spine choice meaning "spread evenly over all spines" (use the trunk links)."""


@dataclass(frozen=True)
class CompiledFabric:
    """Flat-array view of a leaf-spine fabric.

    Attributes (capacities in bytes/s, latencies in seconds; link ids index ``capacity``):
        spec: the parameters it was built from.
        capacity, latency: per link, physical links first, then trunk links.
        kind: per link, a short string (``nic_up``, ``uplink``, ``trunk_up`` ...).
        name: per link, ``"src->dst"`` of the graph nodes (trunks: ``"leaf3=>spines"``).
        n_physical: number of physical links (ids ``0 .. n_physical-1``).
        gpu_host, gpu_leaf: per GPU.
        nic_up, nic_down, nvl_up, nvl_down: per GPU, link ids.
        leaf_up: ``[leaf, spine]`` link id leaf to spine; spine_down: ``[spine, leaf]``.
        trunk_up, trunk_down: per leaf, trunk link ids.
        trunk_members: per trunk link (index ``id - n_physical``), its physical link ids.
    """

    spec: LeafSpine
    capacity: np.ndarray
    latency: np.ndarray
    kind: np.ndarray
    name: list[str]
    n_physical: int
    gpu_host: np.ndarray
    gpu_leaf: np.ndarray
    nic_up: np.ndarray
    nic_down: np.ndarray
    nvl_up: np.ndarray
    nvl_down: np.ndarray
    leaf_up: np.ndarray
    spine_down: np.ndarray
    trunk_up: np.ndarray
    trunk_down: np.ndarray
    trunk_members: np.ndarray

    @property
    def n_links(self) -> int:
        """Physical plus trunk links."""
        return int(self.capacity.shape[0])

    @property
    def n_gpus(self) -> int:
        return int(self.gpu_host.shape[0])

    @property
    def n_spines(self) -> int:
        """Number of spines a cross-leaf flow can choose from (0 for a single-leaf fabric)."""
        return int(self.leaf_up.shape[1])

    def crosses_spine(self, src: np.ndarray, dst: np.ndarray) -> np.ndarray:
        """Per pair, whether traffic goes through the spine tier (source and destination leaves differ
        and the two GPUs are on different hosts)."""
        src, dst = np.asarray(src), np.asarray(dst)
        return (self.gpu_leaf[src] != self.gpu_leaf[dst]) & (self.gpu_host[src] != self.gpu_host[dst])

    def n_equal_cost_paths(self, src: np.ndarray, dst: np.ndarray) -> np.ndarray:
        """Number of equal-cost paths per (src, dst) pair: the spine count across leaves, else 1."""
        return np.where(self.crosses_spine(src, dst), self.n_spines, 1)

    def route(
        self,
        src: np.ndarray,
        dst: np.ndarray,
        choice: np.ndarray,
        via: np.ndarray | None = None,
        leg: np.ndarray | None = None,
    ) -> tuple[np.ndarray, np.ndarray]:
        """Paths for flows from GPU ``src`` to GPU ``dst`` through spine ``choice``.

        ``choice`` is a spine index in ``[0, n_spines)`` or :data:`SPRAY`; it is ignored for pairs
        that do not cross the spine tier. Same host: NVLink (GPU to NVSwitch to GPU). Same leaf:
        NIC up, NIC down. Otherwise: NIC up, leaf to spine, spine to leaf, NIC down.

        ``via`` (per flow, -1 for none) is the GPU of ``src``'s host whose NIC the flow leaves
        through (NCCL's PXN): the path starts with NVLink from ``src`` to ``via``, then goes on from
        ``via`` as above (``choice`` then refers to ``via``'s leaf). ``leg`` (per flow,
        :data:`LEG_FULL` by default) cuts a path at the NVSwitch: :data:`LEG_UP` is ``src``'s NVLink
        up alone, :data:`LEG_DOWN` ``dst``'s NVLink down alone.

        Returns ``(paths, latency)``: an ``(n, MAX_HOPS)`` int32 array padded with -1 and the
        per-path propagation latency in seconds.
        """
        src = np.asarray(src, dtype=np.int64)
        dst = np.asarray(dst, dtype=np.int64)
        choice = np.asarray(choice, dtype=np.int64)
        n = src.shape[0]
        paths = np.full((n, MAX_HOPS), -1, dtype=np.int32)
        proxied = np.zeros(n, dtype=bool) if via is None else np.asarray(via, dtype=np.int64) >= 0
        start = np.where(proxied, via, src) if via is not None else src
        same_host = self.gpu_host[start] == self.gpu_host[dst]
        cross = self.crosses_spine(start, dst)
        paths[:, 0] = np.where(same_host, self.nvl_up[start], self.nic_up[start])
        paths[:, 1] = np.where(same_host, self.nvl_down[dst], self.nic_down[dst])
        if cross.any():
            s, d, c = start[cross], dst[cross], choice[cross]
            ls, ld = self.gpu_leaf[s], self.gpu_leaf[d]
            sprayed = c == SPRAY
            if np.any((c < SPRAY) | (c >= self.n_spines)):
                raise ValueError(f"spine choice out of range [0, {self.n_spines})")
            cc = np.where(sprayed, 0, c)
            mid = np.full((s.shape[0], MAX_HOPS), -1, dtype=np.int32)
            mid[:, 0] = self.nic_up[s]
            mid[:, 1] = np.where(sprayed, self.trunk_up[ls], self.leaf_up[ls, cc])
            mid[:, 2] = np.where(sprayed, self.trunk_down[ld], self.spine_down[cc, ld])
            mid[:, 3] = self.nic_down[d]
            paths[cross] = mid
        if proxied.any():
            rows = np.flatnonzero(proxied)
            paths[rows, 2:] = paths[rows, :-2]
            paths[rows, 0] = self.nvl_up[src[rows]]
            paths[rows, 1] = self.nvl_down[start[rows]]
        if leg is not None:
            leg = np.asarray(leg)
            up, down = leg == LEG_UP, leg == LEG_DOWN
            paths[up | down, 1:] = -1
            paths[up, 0] = self.nvl_up[src[up]]
            paths[down, 0] = self.nvl_down[dst[down]]
        lat = np.where(paths >= 0, self.latency[np.maximum(paths, 0)], 0.0).sum(axis=1)
        return paths, lat


def compile_fabric(spec: LeafSpine, graph: nx.DiGraph | None = None) -> CompiledFabric:
    """Compile ``spec`` (and its graph, built if not given) into a :class:`CompiledFabric`.

    Link ids follow the graph's edge order, which :func:`~topologies.leaf_spine.build_graph`
    makes deterministic; trunk links are appended after the physical ones.
    """
    if graph is None:
        graph = build_graph(spec)
    n_gpus, n_leaves, n_spines = spec.gpus, spec.leaves, (spec.spines if spec.leaves > 1 else 0)
    capacity: list[float] = []
    latency: list[float] = []
    kinds: list[str] = []
    names: list[str] = []
    nic_up = np.full(n_gpus, -1, dtype=np.int32)
    nic_down = np.full(n_gpus, -1, dtype=np.int32)
    nvl_up = np.full(n_gpus, -1, dtype=np.int32)
    nvl_down = np.full(n_gpus, -1, dtype=np.int32)
    gpu_leaf = np.full(n_gpus, -1, dtype=np.int64)
    leaf_up = np.full((n_leaves, n_spines), -1, dtype=np.int32)
    spine_down = np.full((n_spines, n_leaves), -1, dtype=np.int32)
    for link, (u, v, attrs) in enumerate(graph.edges(data=True)):
        capacity.append(float(attrs["capacity"]))
        latency.append(float(attrs["latency"]))
        kinds.append(attrs["kind"])
        names.append(f"{u[0]}{u[1]}->{v[0]}{v[1]}")
        kind = attrs["kind"]
        if kind == "nic_up":
            nic_up[u[1]] = link
            gpu_leaf[u[1]] = v[1]
        elif kind == "nic_down":
            nic_down[v[1]] = link
        elif kind == "nvlink_up":
            nvl_up[u[1]] = link
        elif kind == "nvlink_down":
            nvl_down[v[1]] = link
        elif kind == "uplink":
            leaf_up[u[1], v[1]] = link
        elif kind == "downlink":
            spine_down[u[1], v[1]] = link
    n_physical = len(capacity)
    trunk_up = np.full(n_leaves, -1, dtype=np.int32)
    trunk_down = np.full(n_leaves, -1, dtype=np.int32)
    members: list[np.ndarray] = []
    if n_spines:
        for leaf in range(n_leaves):
            trunk_up[leaf] = len(capacity)
            capacity.append(spec.uplink_bandwidth * n_spines)
            latency.append(spec.link_latency)
            kinds.append("trunk_up")
            names.append(f"leaf{leaf}=>spines")
            members.append(leaf_up[leaf, :].copy())
        for leaf in range(n_leaves):
            trunk_down[leaf] = len(capacity)
            capacity.append(spec.uplink_bandwidth * n_spines)
            latency.append(spec.link_latency)
            kinds.append("trunk_down")
            names.append(f"spines=>leaf{leaf}")
            members.append(spine_down[:, leaf].copy())
    return CompiledFabric(
        spec=spec,
        capacity=np.asarray(capacity, dtype=np.float64),
        latency=np.asarray(latency, dtype=np.float64),
        kind=np.asarray(kinds),
        name=names,
        n_physical=n_physical,
        gpu_host=np.arange(n_gpus, dtype=np.int64) // spec.gpus_per_host,
        gpu_leaf=gpu_leaf,
        nic_up=nic_up,
        nic_down=nic_down,
        nvl_up=nvl_up,
        nvl_down=nvl_down,
        leaf_up=leaf_up,
        spine_down=spine_down,
        trunk_up=trunk_up,
        trunk_down=trunk_down,
        trunk_members=np.asarray(members, dtype=np.int32).reshape(len(members), n_spines),
    )
