"""Running one collective call on the fluid fabric: rank-by-rank steps, no object per message."""

from __future__ import annotations

import numpy as np
from simpy.core import Environment
from simpy.events import Event

from simulator.fabric import Fabric
from simulator.ops import Schedule


class CollectiveRun:
    """One execution of a :class:`~simulator.ops.Schedule`.

    Each member joins with :meth:`join` and gets an event that fires when its own part is over.
    When the last member has joined (and the call's launch latency has passed, see
    :meth:`Fabric.call_latency`), every member enters step 0. A member's step ``k`` is one
    fabric group counting its step-``k`` sends and receives, plus one for entering the step;
    when it empties, the member enters step ``k+1`` (sends its messages) or is done.
    """

    def __init__(self, env: Environment, fabric: Fabric, schedule: Schedule) -> None:
        self.env = env
        self.fabric = fabric
        self.schedule = schedule
        ranks = np.asarray(schedule.ranks, dtype=np.int64)
        self.size = ranks.shape[0]
        position = np.full(fabric.topology.n_gpus, -1, dtype=np.int64)
        position[ranks] = np.arange(self.size)
        steps = max(schedule.n_steps, 1)
        lanes = schedule.n_lanes
        if np.any(position[schedule.src] < 0) or np.any(position[schedule.dst] < 0):
            raise ValueError(f"{schedule.name}: a message's source or destination is not a member")
        lane = np.zeros(schedule.src.shape[0], np.int64) if schedule.lane is None else schedule.lane
        sender = (position[schedule.src] * lanes + lane) * steps + schedule.step
        receiver = (position[schedule.dst] * lanes + lane) * steps + schedule.step
        n_groups = self.size * lanes * steps
        counts = np.bincount(sender, minlength=n_groups) + np.bincount(receiver, minlength=n_groups) + 1
        self.steps = steps
        self.lanes = lanes
        self.base = fabric.new_groups(counts, self._group_done)
        order = np.argsort(sender, kind="stable")
        self._src = np.asarray(schedule.src, dtype=np.int64)[order]
        self._dst = np.asarray(schedule.dst, dtype=np.int64)[order]
        self._nbytes = np.asarray(schedule.nbytes, dtype=np.float64)[order]
        self._via = None if schedule.via is None else np.asarray(schedule.via, dtype=np.int64)[order]
        self._key = None if schedule.key is None else np.asarray(schedule.key, dtype=np.int64)[order]
        self._leg = None if schedule.leg is None else np.asarray(schedule.leg, dtype=np.int8)[order]
        # Bytes each member sends per step on each tier, all channels together: the size its
        # small-message efficiency applies to (see Fabric.send).
        host = fabric.topology.gpu_host
        tier = (host[self._src] != host[self._dst]).astype(np.int64)
        unit = (position[self._src] * steps + np.asarray(schedule.step, dtype=np.int64)[order]) * 2 + tier
        self._step_bytes = np.bincount(unit, weights=self._nbytes)[unit]
        self._sender = sender[order] + self.base
        self._receiver = receiver[order] + self.base
        self._offsets = np.searchsorted(sender[order], np.arange(n_groups + 1))
        self._position = position
        self._done = [env.event() for _ in range(self.size)]
        self._lanes_left = np.full(self.size, lanes, dtype=np.int64)
        self.joined = 0
        self.start_time: float | None = None

    def join(self, gpu: int) -> Event:
        """Member ``gpu`` reaches the collective; returns the event of its part being over."""
        index = int(self._position[gpu])
        if index < 0:
            raise ValueError(f"GPU {gpu} is not a member of {self.schedule.name}")
        self.joined += 1
        if self.joined == self.size:
            self.start_time = self.env.now
            delay = self.fabric.call_latency(self.schedule.launch)
            first = np.arange(self.size * self.lanes) * self.steps
            if delay > 0:
                self.env.timeout(delay).callbacks.append(lambda _event: self._enter(first))
            else:
                self._enter(first)
        return self._done[index]

    def _enter(self, groups: np.ndarray) -> None:
        """Members enter the steps ``groups`` (relative group ids): send, then release the entry count."""
        first, last = self._offsets[groups], self._offsets[groups + 1]
        sizes = last - first
        rows = np.repeat(first - np.cumsum(sizes) + sizes, sizes) + np.arange(int(sizes.sum()))
        schedule = self.schedule
        self.fabric.send(
            self._src[rows],
            self._dst[rows],
            self._nbytes[rows],
            self._sender[rows],
            self._receiver[rows],
            via=None if self._via is None else self._via[rows],
            key=None if self._key is None else self._key[rows],
            qps=schedule.qps,
            leg=None if self._leg is None else self._leg[rows],
            protocol=schedule.protocol,
            step_bytes=self._step_bytes[rows],
        )
        self.fabric.release(self.base + groups)

    def _group_done(self, groups: np.ndarray) -> None:
        """Groups (member-channel steps) completed together: each moves to its next step, or its
        channel is over; a member is done when all its channels are."""
        step = groups % self.steps
        more = step + 1 < self.steps
        if more.any():
            self._enter(groups[more] + 1)
        for index in groups[~more] // (self.steps * self.lanes):
            self._lanes_left[index] -= 1
            if self._lanes_left[index] == 0:
                self._done[int(index)].succeed()
