"""The fluid network: messages become flows whose max-min fair rates change only when a flow
starts or finishes.

What happens in simulated time:

1. :meth:`Fabric.send` queues a batch of messages. Each starts after the per-message latency α of
   its tier (``nvlink_message_latency`` inside a host, ``message_latency`` otherwise), plus the
   wait of its tier's small-message efficiency curve if the fabric has one (see
   :class:`~topologies.leaf_spine.LeafSpine`).
2. All messages that start at one instant are admitted together by a :class:`Flush` event that
   fires after every other event of that instant: the transport turns them into flows, every
   active flow is advanced by ``rate * dt``, and rates are solved once (:func:`max_min_rates`).
3. The next completion is scheduled for the earliest finishing flow; every flow finishing within
   ``RTOL`` of it (relative) finishes in the same event. Admission in between makes the pending
   completion stale (a version number), and it is rescheduled after the new solve.
4. A message is delivered when its last flow finishes, plus its path's propagation latency.
5. Messages count down *groups* (a rank's part of a collective step, typically): a group fires
   its callback when its count reaches zero, at the latest delivery time of its messages.

State is struct-of-arrays: no Python object per message or flow.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import simpy
from simpy.core import Environment
from simpy.events import NORMAL

from simulator.columns import Columns
from simulator.maxmin import remove_flows, resolve_above
from simulator.transport import Transport, to_flows
from topologies.compiled import MAX_HOPS, CompiledFabric
from topologies.leaf_spine import LeafSpine, efficiency_at

RTOL = 1e-9
"""Flows finishing within this relative time of the earliest one finish in the same event."""

LATE = NORMAL + 1
"""Event priority that sorts after every normal event of the same instant."""


class Flush(simpy.events.Event):
    """Fires at ``delay`` from now, after every normal-priority event scheduled for that instant, and
    calls ``callback``. Used to admit all messages that start at one instant in one batch."""

    def __init__(
        self, env: Environment, delay: float, callback: Callable[[simpy.events.Event], None]
    ) -> None:
        super().__init__(env)
        self._ok = True
        self._value = None
        self.callbacks.append(callback)
        env.schedule(self, LATE, delay)


def _unique(values: np.ndarray) -> np.ndarray:
    """``np.unique(values)`` (sorted distinct values), without its sort when there are 0 or 1
    distinct values, the usual case per event (one group, one owner, one start time)."""
    if values.size <= 1:
        return values
    first = values[0]
    if (values == first).all():
        return values[:1]
    return np.unique(values)


def _unique_counts(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``np.unique(values, return_counts=True)``, with the same fast path as :func:`_unique`."""
    if values.size <= 1 or (values == values[0]).all():
        return values[:1], np.full(min(values.size, 1), values.size, dtype=np.int64)
    return np.unique(values, return_counts=True)


def _efficiency_wait(
    spec: LeafSpine, same_host: np.ndarray, nbytes: np.ndarray, protocol: str | None
) -> np.ndarray:
    """Seconds each message waits for its tier's small-message efficiency under ``protocol``:
    ``M/B · (1/η(M) − 1)``, ``M`` the bytes its sender sends in the same step on the tier
    (``nbytes``: the message's own when it is alone)."""
    nbytes = np.broadcast_to(nbytes, same_host.shape)
    bandwidth = np.where(same_host, spec.nvlink_bandwidth, spec.nic_bandwidth)
    inside, across = spec.efficiency_curves(protocol)
    eta = np.where(same_host, efficiency_at(inside, nbytes), efficiency_at(across, nbytes))
    return nbytes / bandwidth * (1.0 / eta - 1.0)


class Fabric:
    """Fluid model of a compiled fabric inside a SimPy environment.

    Args:
        env: the SimPy environment (time in seconds).
        fabric: the compiled topology.
        transport: how messages become flows.
        seed: ECMP hash seed.
    """

    def __init__(
        self,
        env: Environment,
        fabric: CompiledFabric,
        transport: Transport,
        seed: int = 0,
        record_timeline: bool = False,
    ) -> None:
        self.env = env
        self.topology = fabric
        self.transport = transport
        self.seed = seed
        self.messages = Columns(
            {
                "src": (np.int64, ()),
                "dst": (np.int64, ()),
                "nbytes": (np.float64, ()),
                "submit": (np.float64, ()),
                "start": (np.float64, ()),
                "end": (np.float64, ()),
                "latency": (np.float64, ()),
                "group_a": (np.int64, ()),
                "group_b": (np.int64, ()),
                "pending": (np.int64, ()),
                "via": (np.int64, ()),
                "key": (np.int64, ()),
                "qps": (np.int64, ()),
                "leg": (np.int8, ()),
            }
        )
        self.flows = Columns(
            {
                "message": (np.int64, ()),
                "nbytes": (np.float64, ()),
                "start": (np.float64, ()),
                "end": (np.float64, ()),
                "path": (np.int32, (MAX_HOPS,)),
            }
        )
        self._groups = Columns({"remaining": (np.int64, ()), "latest": (np.float64, ())})
        self._owner_start = np.zeros(0, dtype=np.int64)
        self._owner_done: list[Callable[[np.ndarray], None]] = []
        n_links = fabric.n_links
        self.link_bytes = np.zeros(n_links)
        self.link_peak_flows = np.zeros(n_links, dtype=np.int64)
        self._load = np.zeros(n_links)
        self._count = np.zeros(n_links, dtype=np.int64)
        # Flow slots (struct of arrays, dead slots compacted lazily).
        self._flow = np.zeros(0, dtype=np.int64)
        self._paths = np.zeros((0, MAX_HOPS), dtype=np.int32)
        self._alive = np.zeros(0, dtype=bool)
        self._rate = np.zeros(0)
        self._left = np.zeros(0)
        self._anchor = np.zeros(0)
        self._finish = np.zeros(0)
        self._dead = 0
        # Link load history (sparse: only links whose load changed), when asked for.
        self.record_timeline = record_timeline
        self.load_log: list[tuple[float, np.ndarray, np.ndarray]] = []
        self._logged = np.zeros(n_links)
        self._pending: dict[float, list[np.ndarray]] = {}
        self._clock = env.now
        self._version = 0
        self.solves = 0
        self.events = 0

    # ----------------------------------------------------------------- groups
    def new_groups(self, counts: np.ndarray, on_done: Callable[[np.ndarray], None]) -> int:
        """Create ``len(counts)`` groups with initial counts; return the first group's id.

        ``on_done(indices)`` is called with the indices (relative to the first group) of groups whose
        count reached zero, at the latest delivery time of the messages that counted them down;
        groups that complete at the same instant come in one call.
        """
        counts = np.asarray(counts, dtype=np.int64)
        rows = self._groups.append(remaining=counts, latest=np.full(counts.shape[0], -np.inf))
        self._owner_start = np.append(self._owner_start, rows.start)
        self._owner_done.append(on_done)
        return rows.start

    def release(self, groups: np.ndarray) -> None:
        """Count each of ``groups`` down by one now (e.g. its rank has entered the step)."""
        groups = np.asarray(groups, dtype=np.int64)
        self._count_down(groups, np.full(groups.shape[0], self.env.now))

    def _count_down(self, groups: np.ndarray, times: np.ndarray) -> None:
        keep = groups >= 0
        groups, times = groups[keep], times[keep]
        if groups.size == 0:
            return
        latest = self._groups["latest"]
        remaining = self._groups["remaining"]
        np.maximum.at(latest, groups, times)
        ids, counts = _unique_counts(groups)
        remaining[ids] -= counts
        empty = ids[remaining[ids] == 0]
        if empty.size == 0:
            return
        when = latest[empty]
        now = self.env.now
        self._dispatch(empty[when <= now])
        later = when > now
        for moment in _unique(when[later]):
            batch = empty[later][when[later] == moment]
            self.env.timeout(float(moment) - now).callbacks.append(lambda _event, b=batch: self._dispatch(b))

    def _dispatch(self, groups: np.ndarray) -> None:
        """Hand completed groups to their owners, one call per owner."""
        if groups.size == 0:
            return
        owner = np.searchsorted(self._owner_start, groups, side="right") - 1
        for index in _unique(owner):
            start = int(self._owner_start[index])
            self._owner_done[index](groups[owner == index] - start)

    def call_latency(self, launch: str | None) -> float:
        """Seconds a collective call of kind ``launch`` (``collective``, ``p2p``, None) waits
        between its last member joining and its first step (the fabric's calibrated launch cost)."""
        if launch is None:
            return 0.0
        spec = self.topology.spec
        return spec.p2p_latency if launch == "p2p" else spec.collective_latency

    # --------------------------------------------------------------- messages
    def send(
        self,
        src: np.ndarray,
        dst: np.ndarray,
        nbytes: np.ndarray,
        group_a: np.ndarray,
        group_b: np.ndarray,
        via: np.ndarray | None = None,
        key: np.ndarray | None = None,
        qps: int = 1,
        leg: np.ndarray | None = None,
        protocol: str | None = None,
        step_bytes: np.ndarray | None = None,
    ) -> None:
        """Queue messages from GPU ``src`` to GPU ``dst`` of ``nbytes`` bytes each.

        Each message counts down ``group_a`` and ``group_b`` (-1 for none) when delivered. It
        starts moving after its tier's α and is delivered after its last flow finishes plus the
        propagation latency of its path.

        Optional, per message: ``via`` the GPU whose NIC it leaves through (PXN, -1 none), ``key``
        the connection id ECMP hashes (default: the message's own id, a fresh hash per message),
        ``leg`` a path cut at the NVSwitch (:data:`~topologies.compiled.LEG_UP` / ``LEG_DOWN``).
        ``qps`` flows per message between hosts (queue pairs per connection). ``protocol`` (``LL``,
        ``LL128``, ``Simple``; None = the fabric's tier α, as Simple) picks the per-message α of
        :meth:`~topologies.leaf_spine.LeafSpine.latencies`, and the message moves ``nbytes /
        efficiency`` on the wire (:meth:`~topologies.leaf_spine.LeafSpine.protocol_share`).
        ``step_bytes`` (per message): what its sender sends in the same step on the same tier, all
        channels and peers together; the small-message efficiency is that of this amount, and the
        wait is the one that makes the sender's whole step take ``M/(η(M)·B)`` alone (default: the
        message's own bytes, as for a lone message).
        """
        src = np.asarray(src, dtype=np.int64)
        dst = np.asarray(dst, dtype=np.int64)
        if src.size == 0:
            return
        spec = self.topology.spec
        n = src.shape[0]
        same_host = self.topology.gpu_host[src] == self.topology.gpu_host[dst]
        nbytes = np.asarray(nbytes, dtype=np.float64)
        if protocol is None:
            alpha = np.where(same_host, spec.nvlink_message_latency, spec.message_latency)
        else:
            inside, across = spec.latencies(protocol)
            alpha = np.where(same_host, inside, across)
            eff_inside, eff_across = spec.protocol_share(protocol)
            if eff_inside != 1.0 or eff_across != 1.0:  # framing and flags take link bandwidth
                nbytes = nbytes / np.where(same_host, eff_inside, eff_across)
        inside, across = spec.efficiency_curves(protocol)
        if inside or across:
            amount = nbytes if step_bytes is None else np.asarray(step_bytes, dtype=np.float64)
            alpha = alpha + _efficiency_wait(spec, same_host, amount, protocol)
        now = self.env.now
        start = now + alpha
        rows = self.messages.append(
            src=src,
            dst=dst,
            nbytes=np.asarray(nbytes, dtype=np.float64),
            submit=np.full(n, now),
            start=start,
            end=np.full(n, np.nan),
            latency=np.zeros(n),
            group_a=np.asarray(group_a, dtype=np.int64),
            group_b=np.asarray(group_b, dtype=np.int64),
            pending=np.zeros(n, dtype=np.int64),
            via=np.full(n, -1, dtype=np.int64) if via is None else np.asarray(via, dtype=np.int64),
            key=np.zeros(n, dtype=np.int64) if key is None else np.asarray(key, dtype=np.int64),
            qps=np.full(n, qps, dtype=np.int64),
            leg=np.zeros(n, dtype=np.int8) if leg is None else np.asarray(leg, dtype=np.int8),
        )
        ids = np.arange(rows.start, rows.stop, dtype=np.int64)
        if key is None:
            self.messages["key"][ids] = ids
        for when in _unique(start):
            batch = ids[start == when]
            when = float(when)
            if when not in self._pending:
                self._pending[when] = []
                Flush(self.env, when - now, lambda _event, when=when: self._admit(when))
            self._pending[when].append(batch)

    def _admit(self, when: float) -> None:
        ids = np.concatenate(self._pending.pop(when))
        self.events += 1
        self._advance()
        now = self.env.now
        msgs = self.messages
        nbytes = msgs["nbytes"][ids]
        empty = ids[nbytes <= 0]
        ids = ids[nbytes > 0]
        if ids.size:
            src, dst, via = msgs["src"][ids], msgs["dst"][ids], msgs["via"][ids]
            qps = msgs["qps"][ids]
            flows = to_flows(
                self.topology,
                self.transport,
                src,
                dst,
                msgs["nbytes"][ids],
                msgs["key"][ids],
                self.seed,
                via=via,
                qps=qps if np.any(qps > 1) else None,
            )
            m = flows.message
            paths, latency = self.topology.route(
                src[m], dst[m], flows.choice, via=via[m], leg=msgs["leg"][ids][m]
            )
            owner = ids[flows.message]
            np.maximum.at(msgs["latency"], owner, latency)
            np.add.at(msgs["pending"], owner, 1)
            n = owner.shape[0]
            rows = self.flows.append(
                message=owner,
                nbytes=flows.nbytes,
                start=np.full(n, now),
                end=np.full(n, np.nan),
                path=paths,
            )
            self._compact()
            self._flow = np.concatenate([self._flow, np.arange(rows.start, rows.stop, dtype=np.int64)])
            self._paths = np.concatenate([self._paths, paths])
            self._alive = np.concatenate([self._alive, np.ones(n, dtype=bool)])
            self._rate = np.concatenate([self._rate, np.zeros(n)])
            self._left = np.concatenate([self._left, flows.nbytes])
            self._anchor = np.concatenate([self._anchor, np.full(n, now)])
            self._finish = np.concatenate([self._finish, np.full(n, np.inf)])
            used = paths[paths >= 0]
            self._count += np.bincount(used, minlength=self._count.shape[0])
            np.maximum(self.link_peak_flows, self._count, out=self.link_peak_flows)
            self._solve(0.0)
        if empty.size:
            _, latency = self.topology.route(
                msgs["src"][empty],
                msgs["dst"][empty],
                np.zeros(empty.size),
                via=msgs["via"][empty],
                leg=msgs["leg"][empty],
            )
            msgs["latency"][empty] = latency
            self._deliver(empty)

    # ------------------------------------------------------------------ flows
    def _advance(self) -> None:
        """Count the bytes every link carried since the last event at the rates in force."""
        dt = self.env.now - self._clock
        if dt > 0:
            self.link_bytes += self._load * dt
        self._clock = self.env.now

    def _compact(self) -> None:
        """Drop dead flow slots."""
        if self._dead == 0:
            return
        keep = self._alive
        self._flow, self._paths, self._alive = self._flow[keep], self._paths[keep], self._alive[keep]
        self._rate, self._left = self._rate[keep], self._left[keep]
        self._anchor, self._finish = self._anchor[keep], self._finish[keep]
        self._dead = 0

    def _solve(self, level: float) -> None:
        """Re-solve rates (from ``level`` up; 0 = all) and schedule the next completion."""
        self._version += 1
        self.solves += 1
        resolve_above(
            self._paths,
            self._alive,
            self._rate,
            self._load,
            self.topology.capacity,
            level,
            self._left,
            self._anchor,
            self._finish,
            self.env.now,
        )
        self._log_load()
        self._schedule_completion()

    def _log_load(self) -> None:
        """Append the links whose load changed since the last entry to :attr:`load_log`."""
        if not self.record_timeline:
            return
        changed = np.flatnonzero(self._load != self._logged)
        if changed.size:
            values = self._load[changed].copy()
            self.load_log.append((self.env.now, changed.astype(np.int32), values))
            self._logged[changed] = values

    def _schedule_completion(self) -> None:
        if self._alive.size == self._dead:
            return
        first = float(self._finish.min())
        version = self._version
        since = self.env.now
        self.env.timeout(max(first - since, 0.0)).callbacks.append(
            lambda _event: self._complete(version, first + (first - since) * RTOL)
        )

    def _complete(self, version: int, cutoff: float) -> None:
        if version != self._version:
            return
        self.events += 1
        self._advance()
        done = np.flatnonzero(self._finish <= cutoff)
        level = remove_flows(
            self._paths, self._alive, self._rate, self._load, self._count, self._finish, done
        )
        self._dead += done.size
        finished = self._flow[done]
        self.flows["end"][finished] = self.env.now
        owners, counts = _unique_counts(self.flows["message"][finished])
        pending = self.messages["pending"]
        pending[owners] -= counts
        if 2 * self._dead > self._alive.size:
            self._compact()
        if self._alive.size > self._dead:
            self._solve(level)
        else:
            self._version += 1
            self._load[:] = 0.0  # no flow left: clear rounding residue
            self._log_load()
        self._deliver(owners[pending[owners] == 0])

    def _deliver(self, ids: np.ndarray) -> None:
        msgs = self.messages
        end = self.env.now + msgs["latency"][ids]
        msgs["end"][ids] = end
        self._count_down(
            np.concatenate([msgs["group_a"][ids], msgs["group_b"][ids]]), np.concatenate([end, end])
        )

    @property
    def active_flows(self) -> int:
        """Number of flows moving now."""
        return int(self._alive.size - self._dead)

    @property
    def link_load(self) -> np.ndarray:
        """Current total rate per link, bytes/s."""
        return self._load

    def rates(self) -> tuple[np.ndarray, np.ndarray]:
        """Global ids and current rates (bytes/s) of the flows moving now."""
        return self._flow[self._alive], self._rate[self._alive]
