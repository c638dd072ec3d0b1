"""The ops a GPU rank's program is made of. A program is a list of ops run in order.

A :class:`Collective` op is shared: the same object appears in the program of every member rank,
and the members meet in it. :class:`Record` and :class:`Wait` order programs against each other
(typically the streams of one GPU, as ``cudaEventRecord``/``cudaStreamWaitEvent`` do) through
named events. Ops are data; :mod:`simulator.engine` gives them behaviour.
"""

from __future__ import annotations

from collections.abc import Hashable
from dataclasses import dataclass, field

import numpy as np


@dataclass(frozen=True, eq=False)
class Schedule:
    """The messages of one collective call, in steps.

    A member rank starts its step ``k+1`` messages once everything it sent and received in step
    ``k`` is delivered; step 0 starts when every member has reached the collective.

    Attributes:
        ranks: GPU ids of the members (the communicator), in rank order.
        src, dst: GPU ids per message (both members).
        nbytes: bytes per message.
        step: step index per message, ``0 .. n_steps-1``.
        n_steps: number of steps.
        name: what it is, e.g. ``"all_reduce/ring"``.
        lane: per message, the channel it belongs to (None: one channel). A member's channels
            step on their own: step ``k+1`` of channel ``c`` waits only for step ``k`` of ``c``.
        via: per message, the GPU whose NIC it leaves through (NCCL's PXN), -1 for its own.
        key: per message, the connection ECMP hashes (None: every message hashes on its own).
        leg: per message, a path cut at the NVSwitch (:data:`topologies.compiled.LEG_UP` /
            ``LEG_DOWN``: NVLink SHARP reduction into and multicast out of the switch).
        qps: flows per message between hosts (queue pairs per connection).
        protocol: NCCL protocol (``LL``, ``LL128``, ``Simple``) that sets the per-message α and
            the share of a link's bandwidth that carries data (the fabric's, per tier); None: the
            fabric's tier α and all of the bandwidth, as Simple.
        algorithm, channels: what the schedule is, for results (``ring``, 8).
        launch: ``collective`` or ``p2p``: the call pays the fabric's per-call latency of that
            kind before its first step (:attr:`topologies.leaf_spine.LeafSpine.collective_latency`,
            ``p2p_latency``); None: no call latency.
    """

    ranks: np.ndarray
    src: np.ndarray
    dst: np.ndarray
    nbytes: np.ndarray
    step: np.ndarray
    n_steps: int
    name: str = "collective"
    lane: np.ndarray | None = None
    via: np.ndarray | None = None
    key: np.ndarray | None = None
    leg: np.ndarray | None = None
    qps: int = 1
    protocol: str | None = None
    algorithm: str | None = None
    channels: int = 1
    launch: str | None = None

    @property
    def n_lanes(self) -> int:
        """Number of channels (independent step sequences per member)."""
        return 1 if self.lane is None or self.lane.size == 0 else int(self.lane.max()) + 1

    @property
    def total_bytes(self) -> float:
        """Bytes moved by all messages, network and NVLink together."""
        return float(np.sum(self.nbytes))


@dataclass(frozen=True, eq=False)
class Compute:
    """Keep the GPU busy for ``duration`` seconds."""

    duration: float
    label: str = "compute"


@dataclass(frozen=True, eq=False)
class Collective:
    """Take part in the collective ``schedule`` with the other member ranks (same object)."""

    schedule: Schedule
    label: str = field(default="")

    def __post_init__(self) -> None:
        if not self.label:
            object.__setattr__(self, "label", self.schedule.name)


@dataclass(frozen=True, eq=False)
class Record:
    """Mark the event named ``event`` as happened, now (when the program reaches this op).

    Takes no time. Event names are per simulation and may be any hashable value, e.g.
    ``(gpu, "dep", 12)``; recording an event that has already happened changes nothing.
    """

    event: Hashable
    label: str = "record"


@dataclass(frozen=True, eq=False)
class Wait:
    """Block until the event named ``event`` has been recorded by some program (at once if it has).

    A wait on an event that no program ever records never ends: the simulation reports it as a
    deadlock.
    """

    event: Hashable
    label: str = "wait"


Op = Compute | Collective | Record | Wait
