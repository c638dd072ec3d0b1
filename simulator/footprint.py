"""How much memory a simulation takes, from counts alone: the formulas, in bytes, in one place.

Every function here turns counts (GPUs, links, messages, flows, events, ...) into the bytes the
structures of :mod:`topologies.compiled`, :mod:`simulator.fabric`, :mod:`simulator.collective`
and :mod:`simulator.engine` allocate for them, without allocating anything. The per-row constants
are the column dtypes of those structures (e.g. a flow row of :attr:`Fabric.flows` is four 8-byte
columns and a ``MAX_HOPS`` path of int32: 56 bytes); the constants for Python objects (the
networkx graph, link names, op records) and for the transient arrays of an admission or a table
build were measured (``benchmarks/footprint.py``). :func:`peak_bytes` combines them: what stays
allocated for the whole run plus the largest of the transient phases, as they do not overlap.

Counts are the workload's; :mod:`experiments.estimate` derives them from an experiment without
building large arrays. This module imports nothing above :mod:`simulator`.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from topologies.compiled import MAX_HOPS

I8, I32, I64, F64 = 1, 4, 8, 8
"""Bytes per element of the dtypes the engine uses."""

PATH_ROW = MAX_HOPS * I32
"""Bytes of one flow's path: ``MAX_HOPS`` int32 link ids (24)."""

# ------------------------------------------------------------------ compiled fabric (per row)
GRAPH_EDGE = 460
"""Bytes per link of the networkx ``DiGraph`` :func:`~topologies.leaf_spine.build_graph` makes
(adjacency entries in both directions, the attribute dict, nodes amortised; measured, networkx 3)."""
LINK_NAME = 72
"""Bytes per link of :attr:`CompiledFabric.name` (a ~20-character str and its list slot)."""
KIND_CHARS = 11
"""Width of the :attr:`CompiledFabric.kind` unicode array (``nvlink_down``): 4 bytes per char."""
COMPILE_LISTS = 4 * I64
"""Bytes per link of the Python lists compile_fabric fills before making arrays (4 slots)."""
LINK_ARRAYS = 2 * F64 + 4 * KIND_CHARS
"""Bytes per link of the compiled per-link arrays: capacity, latency (float64), kind (<U11)."""
GPU_ARRAYS = 2 * I64 + 4 * I32
"""Bytes per GPU of the compiled per-GPU arrays: gpu_host, gpu_leaf (int64), nic_up, nic_down,
nvl_up, nvl_down (int32)."""
ENGINE_LINK = 4 * F64 + F64
"""Bytes per link :class:`~simulator.fabric.Fabric` keeps: link_bytes, link_peak_flows, _load,
_count, and the timeline's _logged."""

# ------------------------------------------------------------------- messages, groups, flows
MESSAGE_ROW = 13 * I64 + I8
"""Bytes per message of :attr:`Fabric.messages` (13 eight-byte columns and the int8 leg)."""
SCHEDULE_ROW = 7 * I64 + I8
"""Bytes per message of a :class:`~simulator.ops.Schedule` with lanes, via, key and leg (src, dst,
nbytes, step, lane, via, key, leg); a plain one has src, dst, nbytes, step only (32)."""
RUN_ROW = 8 * I64 + I8
"""Bytes per message of a :class:`~simulator.collective.CollectiveRun`'s sorted copies (src, dst,
nbytes, via, key, step_bytes, sender, receiver, leg)."""
GROUP_ROW = I64 + F64 + I64
"""Bytes per group (a member's step on one channel): remaining, latest, and the run's offsets."""
FLOW_ROW = 4 * I64 + PATH_ROW
"""Bytes per flow of :attr:`Fabric.flows` (message, nbytes, start, end, path): kept to the end."""
SLOT_ROW = I64 + PATH_ROW + I8 + 4 * F64
"""Bytes per flow alive in the fabric's slots (_flow, _paths, _alive, _rate, _left, _anchor,
_finish)."""
ADMIT_ROW = 180
"""Transient bytes per flow admitted in one batch: transport and routing temporaries, the slot
arrays concatenated (old and new alive together), the max-min kernel's per-link member lists
(measured: a 512-GPU all-to-all admits 261,632 flows at once)."""
TABLE_GROWTH = 1.5
"""Mean over-allocation of a :class:`~simulator.columns.Columns` table that grows by doubling
(between 1 and 2; exactly 1 when all rows come in one batch)."""

# ---------------------------------------------------------------------------- results
OP_ROW = 300
"""Bytes per op run: the engine's record tuple (Python objects) and its ops-table row."""
FLOW_RECORD_ROW = 2 * (7 * I64 + MAX_HOPS * I32) + 2 * I64
"""Bytes per flow of ``SimResult.flows()`` as the runner keeps it: 7 eight-byte columns and six
int32 links, twice (the point column is added by a copy), plus src/dst gathers."""
LOG_ENTRY = 300
"""Bytes per load-log entry of a timeline run (a tuple, two small arrays, a time), besides the
changed links' 12 bytes each."""
LOG_LINKS = 8
"""Links whose load changes in a typical solve (the changed links of a log entry)."""
TIMELINE_SEGMENT = 600
"""Bytes per load-log entry while ``SimResult.timeline`` integrates it (a state copy per segment,
the stacked states, the load and area of each chosen link), besides the per-link columns."""


@dataclass(frozen=True)
class Counts:
    """What a simulation holds, counted (all counts are numbers of rows, not bytes).

    Attributes:
        gpus, hosts, leaves, spines: the fabric (``spines`` is 0 for a single leaf).
        messages: messages of every schedule of the run (all are built before it starts).
        flows: flows created over the whole run (the flow table keeps them all).
        alive: the most flows alive at once. batch: the most flows admitted in one event.
        groups: groups of every collective run (members × channels × steps, summed).
        ops: ops run (rows of the ops table).
        events: simulation events (admissions and completions; load-log entries when timed).
        record_flows: the flows table is built for results. timeline: the link load is logged.
        timeline_links, timeline_bins: the timeline's chosen links and bins.
        plain_schedules: schedules carry src, dst, nbytes and step only (no lanes, via, key).
        one_batch: every table grows in one append (no doubling slack).
        workload_bytes: bytes the workload builder holds or needs while making the programs
            (e.g. MoE routing matrices), added as their own phase.
    """

    gpus: int
    hosts: int
    leaves: int
    spines: int
    messages: int = 0
    flows: int = 0
    alive: int = 0
    batch: int = 0
    groups: int = 0
    ops: int = 0
    events: int = 0
    record_flows: bool = False
    timeline: bool = False
    timeline_links: int = 48
    timeline_bins: int = 60
    plain_schedules: bool = False
    one_batch: bool = False
    workload_bytes: int = 0


def fabric_links(gpus: int, leaves: int, spines: int) -> tuple[int, int]:
    """``(physical, trunk)`` link counts of a leaf-spine fabric: 4 per GPU (NIC and NVLink, each
    way), 2 per leaf-spine pair, and 2 trunks per leaf when there is a spine tier."""
    tier = spines if leaves > 1 else 0
    return 4 * gpus + 2 * leaves * tier, (2 * leaves if tier else 0)


def compiled_array_bytes(gpus: int, leaves: int, spines: int) -> int:
    """Bytes of the numpy arrays of :func:`~topologies.compiled.compile_fabric`'s result (exact:
    the sum of their ``nbytes``): per-link capacity, latency and kind, per-GPU tables,
    ``leaf_up``/``spine_down`` (leaves × spines int32 each), trunk ids and trunk members."""
    physical, trunk = fabric_links(gpus, leaves, spines)
    tier = spines if leaves > 1 else 0
    links = physical + trunk
    tables = 2 * leaves * tier * I32 + 2 * leaves * I32 + (2 * leaves * tier * I32 if tier else 0)
    return links * LINK_ARRAYS + gpus * GPU_ARRAYS + tables


def compile_bytes(gpus: int, hosts: int, leaves: int, spines: int) -> int:
    """Peak bytes of building and compiling the fabric: the networkx graph, the compile lists, the
    link names and the arrays (the graph is garbage afterwards, but collected late)."""
    del hosts  # nodes are amortised into GRAPH_EDGE
    physical, trunk = fabric_links(gpus, leaves, spines)
    links = physical + trunk
    graph = physical * GRAPH_EDGE
    return graph + links * (LINK_NAME + COMPILE_LISTS) + compiled_array_bytes(gpus, leaves, spines)


def message_bytes(messages: int, plain: bool = False, one_batch: bool = False) -> int:
    """Bytes per run of ``messages`` messages: their schedules, the collective runs' sorted copies
    and the fabric's message table."""
    schedule = 4 * I64 if plain else SCHEDULE_ROW
    growth = 1.0 if one_batch else TABLE_GROWTH
    return int(messages * (schedule + RUN_ROW + MESSAGE_ROW * growth))


def group_bytes(groups: int) -> int:
    """Bytes of the fabric's group table and the runs' step offsets for ``groups`` groups."""
    return int(groups * GROUP_ROW * TABLE_GROWTH)


def flow_bytes(flows: int, alive: int, one_batch: bool = False) -> int:
    """Bytes the flow table (every flow of the run) and the alive slots hold at their largest."""
    growth = 1.0 if one_batch else TABLE_GROWTH
    return int(flows * FLOW_ROW * growth + alive * SLOT_ROW)


def admit_bytes(batch: int) -> int:
    """Transient bytes of admitting ``batch`` flows in one event (routing, solve)."""
    return batch * ADMIT_ROW


def result_bytes(flows: int, ops: int, links: int, record_flows: bool) -> int:
    """Transient bytes of the runner's result tables: ops, links and (when recorded) flows."""
    return ops * OP_ROW + links * 8 * F64 + (flows * FLOW_RECORD_ROW if record_flows else 0)


def timeline_bytes(events: int, links: int, bins: int) -> tuple[int, int]:
    """``(kept, transient)`` bytes of a timeline: the load log of ``events`` entries during the
    run, and integrating it for ``links`` links into ``bins`` bins afterwards."""
    kept = events * (LOG_ENTRY + LOG_LINKS * (I32 + F64))
    transient = events * (TIMELINE_SEGMENT + 4 * links * F64) + links * bins * 6 * F64
    return kept, transient


@dataclass(frozen=True)
class Footprint:
    """Estimated bytes by part, and the peak: ``kept`` parts live all run, the largest ``phase``
    (transient) part adds to them."""

    kept: dict[str, int] = field(default_factory=dict)
    phases: dict[str, int] = field(default_factory=dict)
    detail: dict[str, int] = field(default_factory=dict)
    """What the ``results`` phase holds: ``flow records`` and ``timeline`` (integration) bytes."""

    @property
    def peak(self) -> int:
        """Estimated peak bytes: every kept part plus the largest transient phase."""
        return sum(self.kept.values()) + max(self.phases.values(), default=0)

    def breakdown(self, parts: int = 3) -> str:
        """The largest ``parts`` parts, e.g. ``flows 1.2 GiB, messages 300 MiB, admit 80 MiB``."""
        every = {**self.kept, **self.phases}
        top = sorted(every.items(), key=lambda item: -item[1])[:parts]
        return ", ".join(f"{name} {format_bytes(value)}" for name, value in top if value > 0)


def footprint(counts: Counts) -> Footprint:
    """The estimated memory of simulating ``counts`` (see the module docstring)."""
    physical, trunk = fabric_links(counts.gpus, counts.leaves, counts.spines)
    links = physical + trunk
    log_kept, log_transient = (
        timeline_bytes(counts.events, counts.timeline_links, counts.timeline_bins)
        if counts.timeline
        else (0, 0)
    )
    kept = {
        "fabric": compiled_array_bytes(counts.gpus, counts.leaves, counts.spines)
        + links * (LINK_NAME + ENGINE_LINK),
        "messages": message_bytes(counts.messages, counts.plain_schedules, counts.one_batch),
        "groups": group_bytes(counts.groups),
        "flows": flow_bytes(counts.flows, counts.alive, counts.one_batch),
        "timeline log": log_kept,
    }
    phases = {
        "compile": compile_bytes(counts.gpus, counts.hosts, counts.leaves, counts.spines)
        - kept["fabric"]
        + links * ENGINE_LINK,
        "admission": admit_bytes(counts.batch),
        "results": result_bytes(counts.flows, counts.ops, links, counts.record_flows) + log_transient,
        "workload": counts.workload_bytes,
    }
    detail = {
        "flow records": counts.flows * FLOW_RECORD_ROW if counts.record_flows else 0,
        "timeline": log_transient,
    }
    return Footprint(kept, phases, detail)


def peak_bytes(counts: Counts) -> int:
    """Estimated peak bytes the engine and compile_fabric allocate for ``counts``."""
    return footprint(counts).peak


def format_bytes(value: float) -> str:
    """``value`` bytes in binary units: ``85 MiB``, ``1.2 TiB``."""
    for unit in ("B", "KiB", "MiB", "GiB", "TiB", "PiB"):
        if abs(value) < 1024 or unit == "PiB":
            return f"{value:.0f} {unit}" if unit in ("B", "KiB", "MiB") else f"{value:.1f} {unit}"
        value /= 1024
    return f"{value:.1f} PiB"


# ------------------------------------------------------------------ workload builders
TRACE_CHOICE = 2 * I8 + 36
"""Bytes per (token, choice, layer) of a synthetic routing trace: the int16 expert ids it keeps,
plus (per token and choice, once) the generator's transients (measured, workloads.synthetic_trace)."""
ROUTE_CHOICE = 72
"""Transient bytes per (token, choice) of routing one MoE layer: token, expert, slot and GPU ids,
the low-discrepancy draw and search (workloads.moe.route_layer)."""
PAIR_MATRICES = 5
"""Dense int64 GPU × GPU matrices a MoE layer holds at once (dispatch, combine; hierarchical: NIC,
own-host and forward steps)."""


def moe_routing_bytes(
    gpus: int, hosts: int, tokens: int, top_k: int, layers: int, synth: bool, hierarchical: bool
) -> int:
    """Peak bytes of making a MoE point's programs besides their schedules: the routing trace
    (generated when ``synth``) and one layer's routing: per (token, choice) ids, the token ×
    destination presence bitmaps (GPUs and hosts) and the dense GPU × GPU copy matrices."""
    choices = tokens * top_k
    trace = choices * layers * 2 * I8 + tokens * I64
    generate = choices * (TRACE_CHOICE - 2 * I8) if synth else 0
    matrices = (PAIR_MATRICES if hierarchical else 2) * gpus * gpus * I64
    route = choices * ROUTE_CHOICE + tokens * (gpus + hosts) + matrices
    return trace + max(generate, route)
