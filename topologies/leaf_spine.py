"""Two-tier leaf-spine (folded Clos) fabrics of GPU hosts, built as networkx graphs.

A host holds ``gpus_per_host`` GPUs joined by an NVSwitch domain and one NIC per GPU. Each NIC
connects to a leaf; every leaf connects to every spine with one link of ``uplink_bandwidth``.
All links are directed (full duplex = one link each way) and carry two attributes: ``capacity``
in bytes per second and ``latency`` (propagation) in seconds.

Host and GPU numbering: GPU ``g`` sits on host ``g // gpus_per_host`` with local index
``g % gpus_per_host``. The fabric has ``leaves * hosts_per_leaf`` hosts either way:

- not rail-optimized: host ``h`` hangs off leaf ``h // hosts_per_leaf`` with all its NICs;
- rail-optimized: leaves form rail groups of ``gpus_per_host`` leaves; group ``p`` serves
  hosts ``p*hosts_per_leaf*gpus_per_host`` onwards, and NIC ``i`` of each of them connects to
  leaf ``p*gpus_per_host + i`` (rail ``i``). A leaf has the same number of host ports in both
  layouts (``hosts_per_leaf * gpus_per_host``).

Oversubscription is not a parameter: it follows from the counts and speeds and is reported by
:func:`oversubscription`.

Example
-------
>>> spec = LeafSpine(leaves=2, spines=2, hosts_per_leaf=1, gpus_per_host=2,
...                  nic_bandwidth=50e9, uplink_bandwidth=50e9, link_latency=5e-7,
...                  nvlink_bandwidth=450e9)
>>> graph = build_graph(spec)
>>> graph.number_of_nodes(), graph.number_of_edges()
(10, 24)
>>> oversubscription(spec)
1.0
"""

from __future__ import annotations

from dataclasses import dataclass

import networkx as nx
import numpy as np

from topologies.description import FabricDescription

DEFAULT_LINK_LATENCY = 5e-7
"""Propagation latency per link, seconds (about 100 m of fibre plus a switch hop)."""
DEFAULT_MESSAGE_LATENCY = 5e-6
"""Per-message α across the network, seconds: NCCL's software and NIC cost of one step (Simple protocol)."""
DEFAULT_NVLINK_MESSAGE_LATENCY = 2e-6
"""Per-message α inside a host over NVLink, seconds."""
DEFAULT_LL_MESSAGE_LATENCY = 0.96e-6
"""Per-message α across the network under NCCL's LL protocol, seconds: the Simple default scaled by
NCCL's ring network hardware latencies (LL 2.7 µs vs Simple 14 µs in ``src/graph/tuning.cc``)."""
DEFAULT_LL128_MESSAGE_LATENCY = 1.4e-6
"""Per-message α across the network under LL128, seconds (NCCL's ring ratio 4.0 / 14)."""
DEFAULT_LL_NVLINK_MESSAGE_LATENCY = 0.35e-6
"""Per-message α over NVLink under LL, seconds (NCCL's ring NVLink ratio 0.6 / 3.4)."""
DEFAULT_LL128_NVLINK_MESSAGE_LATENCY = 1.1e-6
"""Per-message α over NVLink under LL128, seconds (NCCL's ring NVLink ratio 1.9 / 3.4)."""
DEFAULT_LL_SHARE = 0.5
"""Share of a link's bandwidth that carries data under LL: 4 data bytes in every 8-byte line."""
DEFAULT_LL128_SHARE = 120.0 / 128.0
"""Share under LL128: 120 data bytes in every 128-byte line."""
GPU_KINDS = ("A100", "H100", "H200", "H800", "B200", "GB200")
"""GPU generations a fabric may name; Hopper and later NVSwitch domains support NVLink SHARP."""
DEFAULT_NVLINK_BANDWIDTH = 450e9
"""NVLink bandwidth per GPU and direction, bytes/s (H100 SXM: 900 GB/s both directions)."""


Efficiency = tuple[tuple[float, float], ...]
"""A small-message efficiency curve: ``((message_bytes, efficiency), ...)`` knots, sizes increasing."""


def efficiency_at(curve: Efficiency, nbytes: np.ndarray) -> np.ndarray:
    """The efficiency of messages of ``nbytes`` bytes: linear in log2(size) between the knots of
    ``curve``, the end knots' values beyond them, 1.0 for an empty curve."""
    nbytes = np.asarray(nbytes, dtype=np.float64)
    if not curve:
        return np.ones_like(nbytes)
    sizes = np.log2([size for size, _ in curve])
    values = np.array([value for _, value in curve])
    return np.interp(np.log2(np.maximum(nbytes, 1.0)), sizes, values)


class TopologyError(ValueError):
    """A fabric that cannot be built. ``field`` names the offending parameter."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field


@dataclass(frozen=True)
class LeafSpine:
    """Parameters of a two-tier leaf-spine fabric, in base units (bytes/s and seconds).

    ``message_latency`` is the per-message latency α (software and NIC) of traffic that leaves
    the host; ``nvlink_message_latency`` the α of traffic inside a host. ``link_latency`` is
    the propagation latency of each NIC-tier and spine-tier link; NVLink hops add none (their
    cost is inside ``nvlink_message_latency``).

    ``nic_efficiency`` and ``nvlink_efficiency`` are small-message efficiency curves of the two
    tiers (:data:`Efficiency`, empty = 1 everywhere): a message of ``m`` bytes whose tier
    bandwidth is ``B`` and efficiency ``η(m)`` waits ``m/B · (1/η − 1)`` longer before it moves,
    so alone on an idle path it takes exactly ``α + m/(η·B)``. The wait occupies no link: under
    contention it does not take bandwidth from other flows (protocol and pipeline overheads,
    not a slower wire). Fitted by ``moesim calibrate``.

    ``nic_line_rate`` is the NIC's port speed (bytes/s; None: ``nic_bandwidth``), what NCCL's tuner
    sees; a calibrated ``nic_bandwidth`` is what a GPU gets, at most the line rate.
    ``ll_nic_efficiency``, ``ll128_nic_efficiency``, ``ll_nvlink_efficiency`` and
    ``ll128_nvlink_efficiency`` are the small-message efficiency curves of messages sent with LL
    and LL128 (empty: the tier's curve, as Simple messages use). ``ll_share``, ``ll128_share``
    (network) and ``ll_nvlink_share``, ``ll128_nvlink_share`` are the shares of a link's bandwidth
    that carry data under LL and LL128 (the framing's share by default; fitted, they also hold the
    protocols' GPU-side limits).
    ``collective_latency`` and ``p2p_latency`` are the per-call costs of an NCCL collective and of
    a grouped send/recv (all-to-all): the launch and setup before the first message moves (the
    host launching one kernel per GPU, for a single-process multi-GPU run). Fitted by ``moesim
    calibrate``; 0 by default. The ``ll*_message_latency`` fields are α under the LL and LL128
    protocols (see :meth:`latencies`).
    """

    leaves: int
    spines: int
    hosts_per_leaf: int
    gpus_per_host: int
    nic_bandwidth: float
    uplink_bandwidth: float
    nvlink_bandwidth: float
    link_latency: float = DEFAULT_LINK_LATENCY
    message_latency: float = DEFAULT_MESSAGE_LATENCY
    nvlink_message_latency: float = DEFAULT_NVLINK_MESSAGE_LATENCY
    rail_optimized: bool = False
    nic_efficiency: Efficiency = ()
    nvlink_efficiency: Efficiency = ()
    gpu: str = "H100"
    ll_message_latency: float = DEFAULT_LL_MESSAGE_LATENCY
    ll128_message_latency: float = DEFAULT_LL128_MESSAGE_LATENCY
    ll_nvlink_message_latency: float = DEFAULT_LL_NVLINK_MESSAGE_LATENCY
    ll128_nvlink_message_latency: float = DEFAULT_LL128_NVLINK_MESSAGE_LATENCY
    collective_latency: float = 0.0
    p2p_latency: float = 0.0
    nic_line_rate: float | None = None
    ll_nic_efficiency: Efficiency = ()
    ll128_nic_efficiency: Efficiency = ()
    ll_nvlink_efficiency: Efficiency = ()
    ll128_nvlink_efficiency: Efficiency = ()
    ll_share: float = DEFAULT_LL_SHARE
    ll128_share: float = DEFAULT_LL128_SHARE
    ll_nvlink_share: float = DEFAULT_LL_SHARE
    ll128_nvlink_share: float = DEFAULT_LL128_SHARE

    def efficiency_curves(self, protocol: str | None) -> tuple[Efficiency, Efficiency]:
        """``(NVLink, network)`` small-message efficiency curves under ``protocol``: the LL and LL128
        ones where given, else the tier's own (``nvlink_efficiency``, ``nic_efficiency``)."""
        own = {"LL": (self.ll_nvlink_efficiency, self.ll_nic_efficiency)}
        own["LL128"] = (self.ll128_nvlink_efficiency, self.ll128_nic_efficiency)
        inside, across = own.get(protocol or "Simple", ((), ()))
        return inside or self.nvlink_efficiency, across or self.nic_efficiency

    def protocol_share(self, protocol: str) -> tuple[float, float]:
        """``(inside a host, across the network)`` share of a link's bandwidth that carries data
        under an NCCL protocol (Simple: 1; LL and LL128: the ``*_share`` fields)."""
        if protocol == "Simple":
            return 1.0, 1.0
        if protocol == "LL128":
            return self.ll128_nvlink_share, self.ll128_share
        if protocol == "LL":
            return self.ll_nvlink_share, self.ll_share
        raise ValueError(f'"{protocol}" is not a protocol (try LL, LL128 or Simple)')

    def latencies(self, protocol: str) -> tuple[float, float]:
        """``(inside a host, across the network)`` per-message α in seconds under an NCCL protocol
        (``LL``, ``LL128`` or ``Simple``; Simple is ``nvlink_message_latency`` and ``message_latency``)."""
        if protocol == "Simple":
            return self.nvlink_message_latency, self.message_latency
        if protocol == "LL128":
            return self.ll128_nvlink_message_latency, self.ll128_message_latency
        if protocol == "LL":
            return self.ll_nvlink_message_latency, self.ll_message_latency
        raise ValueError(f'"{protocol}" is not a protocol (try LL, LL128 or Simple)')

    def describe(self) -> FabricDescription:
        """What collective algorithms may know of this fabric (:mod:`topologies.description`):
        one NIC per GPU (NIC ``i`` of a host serves local GPU ``i`` and is its rail), one NVLink
        domain per host."""
        g = self.gpus_per_host
        return FabricDescription(
            hosts=self.hosts,
            gpus_per_host=g,
            nic_of_gpu=tuple(range(g)),
            nic_port=tuple(range(g)),
            nvlink_domain_hosts=1,
            gpu=self.gpu,
            nic_bandwidth=self.nic_bandwidth,
            nic_line_rate=self.nic_line_rate or self.nic_bandwidth,
            nvlink_bandwidth=self.nvlink_bandwidth,
            message_latency=self.message_latency,
            nvlink_message_latency=self.nvlink_message_latency,
            hosts_per_leaf=self.hosts_per_leaf,
        )

    @property
    def hosts(self) -> int:
        """Number of hosts in the fabric."""
        return self.leaves * self.hosts_per_leaf

    @property
    def gpus(self) -> int:
        """Number of GPUs (ranks) in the fabric."""
        return self.hosts * self.gpus_per_host


def validate(spec: LeafSpine) -> None:
    """Raise :class:`TopologyError` naming the first parameter that makes ``spec`` unbuildable."""
    for name in ("leaves", "spines", "hosts_per_leaf", "gpus_per_host"):
        value = getattr(spec, name)
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise TopologyError(name, f"must be a whole number >= 1, got {value!r}")
    if spec.nic_line_rate is not None and not spec.nic_line_rate > 0:
        raise TopologyError("nic_line_rate", f"must be a positive bandwidth, got {spec.nic_line_rate!r} B/s")
    for name in ("nic_bandwidth", "uplink_bandwidth", "nvlink_bandwidth"):
        value = getattr(spec, name)
        if not value > 0:
            raise TopologyError(name, f"must be a positive bandwidth, got {value!r} B/s")
    if spec.gpu not in GPU_KINDS:
        raise TopologyError("gpu", f"{spec.gpu!r} is not a GPU kind (try one of {', '.join(GPU_KINDS)})")
    latencies = (
        "link_latency",
        "message_latency",
        "nvlink_message_latency",
        "ll_message_latency",
        "ll128_message_latency",
        "ll_nvlink_message_latency",
        "ll128_nvlink_message_latency",
        "collective_latency",
        "p2p_latency",
    )
    for name in latencies:
        value = getattr(spec, name)
        if not value >= 0:
            raise TopologyError(name, f"must be a non-negative time, got {value!r} s")
    for name in ("ll_share", "ll128_share", "ll_nvlink_share", "ll128_nvlink_share"):
        value = getattr(spec, name)
        if not 0 < value <= 1:
            raise TopologyError(name, f"must be a share of the bandwidth in (0, 1], got {value!r}")
    curves = ("nic_efficiency", "nvlink_efficiency", "ll_nic_efficiency", "ll128_nic_efficiency")
    for name in (*curves, "ll_nvlink_efficiency", "ll128_nvlink_efficiency"):
        curve = getattr(spec, name)
        sizes = [size for size, _ in curve]
        if any(not size > 0 for size in sizes) or any(np.diff(sizes) <= 0):
            raise TopologyError(name, f"knot sizes must be positive and increasing, got {sizes}")
        for size, value in curve:
            if not 0 < value <= 1:
                raise TopologyError(name, f"efficiency at {size:g} B must be in (0, 1], got {value!r}")
    if spec.rail_optimized and spec.leaves % spec.gpus_per_host != 0:
        raise TopologyError(
            "leaves",
            f"a rail-optimized fabric needs a multiple of gpus_per_host={spec.gpus_per_host} leaves "
            f"(one per rail in each rail group), got {spec.leaves}",
        )


def leaf_of_gpu(spec: LeafSpine, gpu: int) -> int:
    """The leaf that GPU ``gpu``'s NIC connects to."""
    host, local = divmod(gpu, spec.gpus_per_host)
    if not spec.rail_optimized:
        return host // spec.hosts_per_leaf
    group = host // (spec.hosts_per_leaf * spec.gpus_per_host)
    return group * spec.gpus_per_host + local


def oversubscription(spec: LeafSpine) -> float:
    """Host-facing over spine-facing bandwidth of one leaf (1.0 = non-blocking)."""
    down = spec.hosts_per_leaf * spec.gpus_per_host * spec.nic_bandwidth
    up = spec.spines * spec.uplink_bandwidth
    return down / up


def build_graph(spec: LeafSpine) -> nx.DiGraph:
    """Build the directed link graph of ``spec``.

    Nodes are tuples ``("gpu", g)``, ``("nvswitch", h)``, ``("leaf", l)``, ``("spine", s)``.
    Each edge has ``capacity`` (bytes/s), ``latency`` (s) and ``kind`` — one of ``nic_up``,
    ``nic_down``, ``nvlink_up``, ``nvlink_down``, ``uplink`` (leaf to spine) and ``downlink``
    (spine to leaf). A single-leaf fabric has no spine tier.
    """
    validate(spec)
    graph = nx.DiGraph(name="leaf_spine")
    nic, up, nvl = spec.nic_bandwidth, spec.uplink_bandwidth, spec.nvlink_bandwidth
    lat = spec.link_latency
    for gpu in range(spec.gpus):
        host = gpu // spec.gpus_per_host
        graph.add_edge(("gpu", gpu), ("nvswitch", host), capacity=nvl, latency=0.0, kind="nvlink_up")
        graph.add_edge(("nvswitch", host), ("gpu", gpu), capacity=nvl, latency=0.0, kind="nvlink_down")
        leaf = ("leaf", leaf_of_gpu(spec, gpu))
        graph.add_edge(("gpu", gpu), leaf, capacity=nic, latency=lat, kind="nic_up")
        graph.add_edge(leaf, ("gpu", gpu), capacity=nic, latency=lat, kind="nic_down")
    if spec.leaves > 1:
        for leaf in range(spec.leaves):
            for spine in range(spec.spines):
                graph.add_edge(("leaf", leaf), ("spine", spine), capacity=up, latency=lat, kind="uplink")
                graph.add_edge(("spine", spine), ("leaf", leaf), capacity=up, latency=lat, kind="downlink")
    return graph
