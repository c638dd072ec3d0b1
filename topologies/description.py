"""What a collective algorithm may know of a fabric: hosts, GPUs, NICs and NVLink domains.

Collective schedules (:mod:`workloads.nccl`) read only this, never a fabric kind's own fields, so
every fabric kind that can say these things runs NCCL's algorithms. GPU ``g`` is local GPU
``g % gpus_per_host`` of host ``g // gpus_per_host``; a NIC is named by its index in its host.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import numpy as np

NVLS_GPUS = ("H100", "H200", "H800", "B200", "GB200")
"""GPU generations whose NVSwitch has NVLink SHARP (in-switch reduction and multicast)."""


@dataclass(frozen=True)
class FabricDescription:
    """The parts of a fabric collective algorithms depend on (bandwidths in bytes/s, times in s).

    Attributes:
        hosts, gpus_per_host: counts.
        nic_of_gpu: per local GPU, the NIC that serves it (its rail).
        nic_port: per NIC, the local GPU whose network port carries that NIC's traffic in the
            simulator (traffic of another GPU through that NIC goes over NVLink first: PXN).
        nvlink_domain_hosts: hosts per NVLink domain (1: NVSwitch inside each host).
        gpu: GPU generation (``A100``, ``H100`` ...).
        nic_bandwidth: per NIC and direction. nvlink_bandwidth: per GPU and direction.
        nic_line_rate: the NIC's port speed (what NCCL's tuner sees), bytes/s.
        message_latency, nvlink_message_latency: per-message α (Simple) across the network and over
            NVLink; they set pipeline depths.
        hosts_per_leaf: hosts under one leaf switch (for NCCL-style tuning and tests).
    """

    hosts: int
    gpus_per_host: int
    nic_of_gpu: tuple[int, ...]
    nic_port: tuple[int, ...]
    nvlink_domain_hosts: int
    gpu: str
    nic_bandwidth: float
    nvlink_bandwidth: float
    message_latency: float
    nvlink_message_latency: float
    hosts_per_leaf: int = 1
    nic_line_rate: float = 0.0

    @property
    def nics_per_host(self) -> int:
        """NICs in each host."""
        return len(self.nic_port)

    @property
    def gpus(self) -> int:
        """GPUs in the fabric."""
        return self.hosts * self.gpus_per_host

    @property
    def nvls(self) -> bool:
        """Whether the NVLink domain reduces in the switch (NVLink SHARP): Hopper-class NVSwitch
        with more than one GPU in the domain."""
        return self.gpu in NVLS_GPUS and self.gpus_per_host * self.nvlink_domain_hosts > 1

    def host_of(self, gpus: np.ndarray) -> np.ndarray:
        """Host index per GPU id."""
        return np.asarray(gpus, dtype=np.int64) // self.gpus_per_host

    def nic_of(self, gpus: np.ndarray) -> np.ndarray:
        """The NIC (index in its host) that serves each GPU id."""
        return np.asarray(self.nic_of_gpu, dtype=np.int64)[
            np.asarray(gpus, dtype=np.int64) % self.gpus_per_host
        ]

    def port_gpu(self, host: np.ndarray, nic: np.ndarray) -> np.ndarray:
        """GPU id whose network port carries NIC ``nic`` of host ``host``."""
        ports = np.asarray(self.nic_port, dtype=np.int64)
        return np.asarray(host, dtype=np.int64) * self.gpus_per_host + ports[np.asarray(nic, dtype=np.int64)]


class DescribedFabric(Protocol):
    """A fabric kind: anything that can describe itself (:meth:`LeafSpine.describe`)."""

    def describe(self) -> FabricDescription: ...


def as_description(fabric: FabricDescription | DescribedFabric) -> FabricDescription:
    """``fabric`` itself if it is a description, else what it says of itself."""
    return fabric if isinstance(fabric, FabricDescription) else fabric.describe()
