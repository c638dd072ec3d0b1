"""Run GPU rank programs on a fluid fabric and collect what happened.

>>> from topologies.leaf_spine import LeafSpine
>>> from topologies.compiled import compile_fabric
>>> from simulator.transport import parse_transport
>>> from simulator.ops import Compute
>>> spec = LeafSpine(leaves=1, spines=1, hosts_per_leaf=1, gpus_per_host=2, nic_bandwidth=50e9,
...                  uplink_bandwidth=50e9, nvlink_bandwidth=450e9)
>>> result = simulate(compile_fabric(spec), {0: [Compute(1e-3)], 1: [Compute(2e-3)]}, parse_transport("ecmp"))
>>> result.completion_time
0.002
"""

from __future__ import annotations

from collections.abc import Generator, Hashable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
import simpy

from simulator.collective import CollectiveRun
from simulator.fabric import Fabric
from simulator.ops import Collective, Compute, Op, Record, Wait
from simulator.transport import Transport
from topologies.compiled import MAX_HOPS, CompiledFabric


class DeadlockError(RuntimeError):
    """Programs that cannot finish: a collective some member never reaches, or a wait for an event
    that no program records."""


@dataclass
class SimResult:
    """What one simulation produced. Times in seconds, sizes in bytes.

    Attributes:
        completion_time: when the last rank finished its program.
        ops: one row per (program, op): ``rank, stream, index, label, start, end`` (``stream`` is -1
            for programs keyed by GPU id alone).
        fabric: the fluid fabric, holding message and flow columns and link counters.
        wall_time: host seconds the simulation took.
    """

    completion_time: float
    ops: pd.DataFrame
    fabric: Fabric
    wall_time: float = 0.0

    @property
    def topology(self) -> CompiledFabric:
        return self.fabric.topology

    def links(self) -> pd.DataFrame:
        """Per physical link: ``link, name, kind, capacity_Bps, bytes, peak_flows, utilization``.

        Bytes on a leaf trunk (sprayed traffic) are spread evenly over its spine links, and each
        spine link counts every flow on its trunk (a sprayed flow crosses every spine).
        """
        topo = self.topology
        n = topo.n_physical
        nbytes = self.fabric.link_bytes[:n].copy()
        peak = self.fabric.link_peak_flows[:n].copy()
        if topo.trunk_members.size:
            trunk_bytes = self.fabric.link_bytes[n:]
            trunk_peak = self.fabric.link_peak_flows[n:]
            spines = topo.trunk_members.shape[1]
            for members, moved, flows in zip(topo.trunk_members, trunk_bytes, trunk_peak, strict=True):
                nbytes[members] += moved / spines
                peak[members] += flows
        capacity = topo.capacity[:n]
        span = self.completion_time
        return pd.DataFrame(
            {
                "link": np.arange(n),
                "name": topo.name[:n],
                "kind": topo.kind[:n],
                "capacity_Bps": capacity,
                "bytes": nbytes,
                "peak_flows": peak,
                "utilization": nbytes / (capacity * span) if span > 0 else np.zeros(n),
            }
        )

    def flows(self) -> pd.DataFrame:
        """One row per flow: ``flow, message, src, dst, bytes, start, end, link0..link5`` (-1 = none)."""
        flows, msgs = self.fabric.flows, self.fabric.messages
        message = flows["message"]
        table = {
            "flow": np.arange(len(flows)),
            "message": message,
            "src": msgs["src"][message],
            "dst": msgs["dst"][message],
            "bytes": flows["nbytes"],
            "start": flows["start"],
            "end": flows["end"],
        }
        for hop in range(MAX_HOPS):
            table[f"link{hop}"] = flows["path"][:, hop]
        return pd.DataFrame(table)

    def messages(self) -> pd.DataFrame:
        """One row per message: ``message, src, dst, bytes, submit, start, end``."""
        msgs = self.fabric.messages
        return pd.DataFrame(
            {
                "message": np.arange(len(msgs)),
                "src": msgs["src"],
                "dst": msgs["dst"],
                "bytes": msgs["nbytes"],
                "submit": msgs["submit"],
                "start": msgs["start"],
                "end": msgs["end"],
            }
        )

    def timeline(self, links: np.ndarray, bins: int) -> pd.DataFrame:
        """Average utilization of physical ``links`` in ``bins`` equal time bins over the run.

        Exact integration of the recorded piecewise-constant load (the simulation must have been
        run with ``record_timeline=True``); a spine link's load includes its share of its leaf
        trunk's (sprayed) load. Columns: ``link, name, kind, t_start, t_end, utilization``.
        """
        topo = self.topology
        links = np.asarray(links, dtype=np.int64)
        span = self.completion_time
        if span <= 0 or links.size == 0:
            return pd.DataFrame(columns=["link", "name", "kind", "t_start", "t_end", "utilization"])
        # weight[k, j]: how much of relevant link j's load counts on chosen link k
        trunk_of = {int(p): (topo.n_physical + t) for t, row in enumerate(topo.trunk_members) for p in row}
        relevant = sorted(set(links.tolist()) | {trunk_of[int(p)] for p in links if int(p) in trunk_of})
        column = {link: j for j, link in enumerate(relevant)}
        weight = np.zeros((links.size, len(relevant)))
        spines = max(topo.n_spines, 1)
        for k, link in enumerate(links):
            weight[k, column[int(link)]] = 1.0
            if int(link) in trunk_of:
                weight[k, column[trunk_of[int(link)]]] = 1.0 / spines
        times = [0.0]
        state = np.zeros(len(relevant))
        states = [state.copy()]
        lookup = np.full(topo.n_links, -1)
        lookup[relevant] = np.arange(len(relevant))
        for when, changed, values in self.fabric.load_log:
            idx = lookup[changed]
            keep = idx >= 0
            if not keep.any():
                continue
            state[idx[keep]] = values[keep]
            if when == times[-1]:
                states[-1] = state.copy()
            else:
                times.append(when)
                states.append(state.copy())
        times.append(max(span, times[-1]))
        load = np.asarray(states) @ weight.T  # (segments, chosen links), bytes/s
        area = np.vstack([np.zeros(links.size), np.cumsum(load * np.diff(times)[:, None], axis=0)])
        edges = np.linspace(0.0, span, bins + 1)
        at_edges = np.column_stack([np.interp(edges, times, area[:, k]) for k in range(links.size)])
        width = np.diff(edges)[:, None]
        util = np.diff(at_edges, axis=0) / (width * topo.capacity[links][None, :])
        return pd.DataFrame(
            {
                "link": np.repeat(links, bins),
                "name": np.repeat(np.asarray(topo.name)[links], bins),
                "kind": np.repeat(topo.kind[links], bins),
                "t_start": np.tile(edges[:-1], links.size),
                "t_end": np.tile(edges[1:], links.size),
                "utilization": util.T.reshape(-1),
            }
        )

    def summary(self) -> dict[str, float | int]:
        """The per-point metrics of the results contract, plus counts of work done."""
        links = self.links()
        return {
            "completion_time_s": self.completion_time,
            "max_link_utilization": float(links["utilization"].max()) if len(links) else 0.0,
            "max_link_flows": int(links["peak_flows"].max()) if len(links) else 0,
            "messages": len(self.fabric.messages),
            "flows": len(self.fabric.flows),
            "events": self.fabric.events,
            "solves": self.fabric.solves,
        }


ProgramKey = int | tuple[int, Hashable]
"""A program's key: a GPU id (one program per GPU) or a ``(gpu, stream)`` pair (one per GPU stream)."""


def _gpu_of(key: object) -> int:
    """The GPU a program key runs on; TypeError for anything but an int or a ``(gpu, stream)`` pair."""
    gpu = key[0] if isinstance(key, tuple) and len(key) == 2 else key
    if isinstance(gpu, bool) or not isinstance(gpu, int | np.integer):
        raise TypeError(f"program key {key!r} is neither a GPU id nor a (gpu, stream) pair")
    return int(gpu)


def simulate(
    fabric: CompiledFabric,
    programs: Mapping[ProgramKey, Sequence[Op]],
    transport: Transport,
    seed: int = 0,
    record_timeline: bool = False,
) -> SimResult:
    """Run every program to the end on ``fabric`` and return what happened.

    Each program is one SimPy process that runs its ops in order. Keyed by a GPU id, it is that
    GPU's only program (a rank); keyed by ``(gpu, stream)``, it is one stream of that GPU, running
    concurrently with the GPU's other streams (they share nothing but the collectives' GPU and the
    events they record and wait for). Both kinds of key may be mixed.

    In simulated time: :class:`Compute` takes its duration; :class:`Collective` starts when every
    member GPU has joined it and ends when the joining GPU's own part is delivered (it is joined
    with the key's GPU, so one GPU may join a given collective from one program only);
    :class:`Record` marks its event as happened and takes no time; :class:`Wait` blocks until its
    event has been recorded (not at all if it already has). Events are per simulation, created on
    first use, and named by any hashable value.

    Args:
        fabric: compiled topology.
        programs: GPU id or ``(gpu, stream)`` -> list of ops, run in order. A :class:`Collective`
            op object must appear in one program of every member GPU of its schedule.
        transport: how messages become flows.
        seed: ECMP hash seed (nothing else is random here).
        record_timeline: keep the link load history for :meth:`SimResult.timeline`.

    Returns:
        A :class:`SimResult` whose ``ops`` table has one row per op run:
        ``rank`` (the GPU), ``stream`` (-1 for GPU-id keys), ``index`` (position in its program),
        ``label``, ``start``, ``end``; rows sorted by rank, then program (in ``programs`` order),
        then index.

    Raises:
        DeadlockError: some program waits forever (a collective that not all members reach, or a
            :class:`Wait` for an event never recorded); the message names the stuck programs.
    """
    import time

    wall = time.perf_counter()
    env = simpy.Environment()
    net = Fabric(env, fabric, transport, seed, record_timeline)
    runs: dict[int, CollectiveRun] = {}
    joined: dict[int, set[int]] = {}
    events: dict[Hashable, simpy.events.Event] = {}
    records: list[tuple[int, Hashable, int, int, str, float, float]] = []
    finished: set[int] = set()
    where: dict[int, int] = {}  # program ordinal -> index of the op it is in

    def event(name: Hashable) -> simpy.events.Event:
        found = events.get(name)
        if found is None:
            found = events[name] = env.event()
        return found

    def run_program(
        ordinal: int, key: ProgramKey, gpu: int, stream: Hashable, program: Sequence[Op]
    ) -> Generator[simpy.events.Event, None, None]:
        who = f"rank {gpu}" if stream == -1 else f"program {key!r}"
        for index, op in enumerate(program):
            begin = env.now
            where[ordinal] = index
            if isinstance(op, Compute):
                yield env.timeout(op.duration)
            elif isinstance(op, Collective):
                run = runs.get(id(op))
                if run is None:
                    run = runs[id(op)] = CollectiveRun(env, net, op.schedule)
                    joined[id(op)] = set()
                if gpu in joined[id(op)]:
                    raise ValueError(f"{who}: op {index}: GPU {gpu} joins {op.label} a second time")
                joined[id(op)].add(gpu)
                yield run.join(gpu)
            elif isinstance(op, Record):
                happened = event(op.event)
                if not happened.triggered:
                    happened.succeed()
            elif isinstance(op, Wait):
                happened = event(op.event)
                if not happened.processed:
                    yield happened
            else:
                raise TypeError(f"{who}: op {index} is not an op: {op!r}")
            records.append((gpu, stream, ordinal, index, op.label, begin, env.now))
        finished.add(ordinal)

    keys = list(programs)
    gpus = [_gpu_of(key) for key in keys]
    order = sorted(range(len(keys)), key=gpus.__getitem__)  # by GPU, then as given
    for ordinal in order:
        key = keys[ordinal]
        stream = key[1] if isinstance(key, tuple) else -1
        env.process(run_program(ordinal, key, gpus[ordinal], stream, programs[key]))
    env.run()
    stuck = [ordinal for ordinal in order if ordinal not in finished]
    if stuck:
        raise DeadlockError(
            _deadlock_message(
                [keys[o] for o in stuck], [programs[keys[o]][where.get(o, 0)] for o in stuck], runs
            )
        )
    ops = pd.DataFrame(records, columns=["rank", "stream", "program", "index", "label", "start", "end"])
    ops = ops.sort_values(["rank", "program", "index"], kind="stable").reset_index(drop=True)
    ops = ops.drop(columns="program")
    completion = float(ops["end"].max()) if len(ops) else 0.0
    return SimResult(completion, ops, net, time.perf_counter() - wall)


def _deadlock_message(
    keys: list[ProgramKey],
    blocked: list[Op],
    runs: dict[int, CollectiveRun],
) -> str:
    """One line: the stuck programs, and what the first few of them wait for."""
    shown = ", ".join(repr(k) for k in keys[:8]) + (", ..." if len(keys) > 8 else "")
    if all(not isinstance(k, tuple) for k in keys):
        head = f"ranks [{shown}] never finished their programs"
    else:
        head = f"programs [{shown}] never finished"
    reasons = []
    for key, op in list(zip(keys, blocked, strict=True))[:3]:
        if isinstance(op, Wait):
            reasons.append(f"{key!r} waits for event {op.event!r}, never recorded")
        elif isinstance(op, Collective):
            run = runs.get(id(op))
            reached = run.joined if run is not None else 0
            size = len(op.schedule.ranks)
            reasons.append(f"{key!r} is in collective {op.label!r}, reached by {reached} of {size} members")
    return head + (f" ({'; '.join(reasons)})" if reasons else "")
