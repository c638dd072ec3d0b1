"""A small, realistic results directory for the report tests, fabricated with numpy (no simulator).

The fabric is a 2-leaf, 2-spine leaf-spine with 2 hosts per leaf and 2 GPUs per host (8 GPUs,
40 links: per GPU an NVLink and a NIC link each way, and 4 leaf->spine and 4 spine->leaf links).
Each point is an all-to-all-like burst of flows; the tables follow the results contract of
DESIGN.md §5 (times in s, sizes in bytes, bandwidths in B/s). Everything is deterministic.
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import yaml

from experiments.results_schema import ResultsSchema, describe_columns, write_results

MIB = 1 << 20
LEAVES, SPINES, HOSTS_PER_LEAF, GPUS_PER_HOST = 2, 2, 2, 2
GPUS = LEAVES * HOSTS_PER_LEAF * GPUS_PER_HOST
NIC_BPS = 50e9  # 400 Gbit/s
UPLINK_BPS = 50e9
NVLINK_BPS = 450e9
TIMELINE_LINKS = 16
TIMELINE_BINS = 48
UNITS = {"workload.size": "B", "topology.uplink_bandwidth": "B/s", "topology.link_latency": "s"}
"""Base units of the swept paths the tests use (what the experiment's field types say)."""
FAILED_ERROR = "DeadlockError: ranks [3, 5] never finished their programs"

DEFAULT_SWEEP: dict[str, list[Any]] = {
    "transport": ["ecmp", "spray"],
    "workload.size": [1 * MIB, 16 * MIB],
    "seed": [0, 1],
}


def default_points() -> list[dict[str, Any]]:
    """The swept values of every point of the default grid (transport x workload.size x seed)."""
    keys = list(DEFAULT_SWEEP)
    return [dict(zip(keys, values, strict=True)) for values in itertools.product(*DEFAULT_SWEEP.values())]


def _links() -> pd.DataFrame:
    """The 40 physical links: ``link, name, kind, capacity_Bps`` and endpoints for routing."""
    rows: list[tuple[str, str, float]] = []
    for gpu in range(GPUS):
        host, leaf = gpu // GPUS_PER_HOST, gpu // (GPUS_PER_HOST * HOSTS_PER_LEAF)
        rows.append((f"gpu{gpu}->nvswitch{host}", "nvlink_up", NVLINK_BPS))
        rows.append((f"nvswitch{host}->gpu{gpu}", "nvlink_down", NVLINK_BPS))
        rows.append((f"gpu{gpu}->leaf{leaf}", "nic_up", NIC_BPS))
        rows.append((f"leaf{leaf}->gpu{gpu}", "nic_down", NIC_BPS))
    for leaf in range(LEAVES):
        for spine in range(SPINES):
            rows.append((f"leaf{leaf}->spine{spine}", "uplink", UPLINK_BPS))
            rows.append((f"spine{spine}->leaf{leaf}", "downlink", UPLINK_BPS))
    frame = pd.DataFrame(rows, columns=["name", "kind", "capacity_Bps"])
    frame.insert(0, "link", np.arange(len(frame), dtype=np.int64))
    return frame


def _link_id(links: pd.DataFrame, name: str) -> int:
    return int(links.index[links["name"] == name][0])


def _routes(links: pd.DataFrame, src: np.ndarray, dst: np.ndarray, spine: np.ndarray) -> np.ndarray:
    """Paths as ``(n, 4)`` link ids padded with -1: NVLink inside a host, else NIC [uplink, downlink] NIC."""
    by_name = {name: i for i, name in enumerate(links["name"])}
    paths = np.full((src.size, 4), -1, dtype=np.int32)
    for i, (s, d, sp) in enumerate(zip(src.tolist(), dst.tolist(), spine.tolist(), strict=True)):
        s_host, d_host = s // GPUS_PER_HOST, d // GPUS_PER_HOST
        s_leaf, d_leaf = s_host // HOSTS_PER_LEAF, d_host // HOSTS_PER_LEAF
        if s_host == d_host:
            hops = [f"gpu{s}->nvswitch{s_host}", f"nvswitch{d_host}->gpu{d}"]
        elif s_leaf == d_leaf:
            hops = [f"gpu{s}->leaf{s_leaf}", f"leaf{d_leaf}->gpu{d}"]
        else:
            hops = [f"gpu{s}->leaf{s_leaf}", f"leaf{s_leaf}->spine{sp}", f"spine{sp}->leaf{d_leaf}"]
            hops.append(f"leaf{d_leaf}->gpu{d}")
        paths[i, : len(hops)] = [by_name[h] for h in hops]
    return paths


def _flows(
    rng: np.random.Generator, links: pd.DataFrame, transport: str, size: float, n: int
) -> pd.DataFrame:
    """``n`` flows of an all-to-all-like burst; ECMP gets a heavier tail than spraying."""
    src = rng.integers(0, GPUS, n)
    dst = (src + rng.integers(1, GPUS, n)) % GPUS
    spine = rng.integers(0, SPINES, n)
    nbytes = np.full(n, size / (GPUS - 1))
    start = 2e-6 + rng.exponential(0.05, n) * size / NIC_BPS
    spread = 0.5 if transport == "ecmp" else 0.05  # ECMP collisions slow some flows down a lot
    rate = NIC_BPS / (GPUS - 1) / (1.0 + rng.gamma(2.0, spread, n))
    end = start + 5e-6 + nbytes / rate
    paths = _routes(links, src, dst, spine)
    # Stretch the burst so that no link is busier than a transport-dependent share of the time.
    load = np.zeros(len(links))
    for hop in range(4):
        used = paths[:, hop] >= 0
        np.add.at(load, paths[used, hop], nbytes[used])
    need = float((load / links["capacity_Bps"].to_numpy()).max()) / (0.6 if transport == "ecmp" else 0.85)
    if need > end.max():
        end = start + (end - start) * need / (end.max() - start.min())
    table = {
        "flow": np.arange(n, dtype=np.int64),
        "message": np.arange(n, dtype=np.int64),
        "src": src.astype(np.int64),
        "dst": dst.astype(np.int64),
        "bytes": nbytes,
        "start": start,
        "end": end,
    }
    for hop in range(4):
        table[f"link{hop}"] = paths[:, hop]
    return pd.DataFrame(table)


def _link_table(links: pd.DataFrame, flows: pd.DataFrame, completion: float) -> pd.DataFrame:
    """Per-link bytes, peak concurrent flows and utilization of one point's flows."""
    nbytes = np.zeros(len(links))
    peak = np.zeros(len(links), dtype=np.int64)
    for hop in range(4):
        ids = flows[f"link{hop}"].to_numpy()
        used = ids >= 0
        np.add.at(nbytes, ids[used], flows["bytes"].to_numpy()[used])
    # Peak concurrency per link: +1 at each start, -1 at each end, ends first at equal times.
    ids, times, deltas = [], [], []
    for hop in range(4):
        hop_ids = flows[f"link{hop}"].to_numpy()
        used = hop_ids >= 0
        for column, delta in (("start", 1), ("end", -1)):
            ids.append(hop_ids[used])
            times.append(flows[column].to_numpy()[used])
            deltas.append(np.full(used.sum(), delta))
    link_id, time, delta = np.concatenate(ids), np.concatenate(times), np.concatenate(deltas)
    order = np.lexsort((delta, time, link_id))
    link_id, running = link_id[order], np.cumsum(delta[order])
    np.maximum.at(peak, link_id, running)  # a link's count starts from 0: the earlier links net to 0
    frame = links.copy()
    frame["bytes"] = nbytes
    frame["peak_flows"] = peak
    frame["utilization"] = nbytes / (frame["capacity_Bps"].to_numpy() * completion)
    return frame


def _timeline(links: pd.DataFrame, flows: pd.DataFrame, completion: float) -> pd.DataFrame:
    """Average utilization per time bin of the busiest links, each flow at its mean rate."""
    edges = np.linspace(0.0, completion, TIMELINE_BINS + 1)
    start, end = flows["start"].to_numpy(), flows["end"].to_numpy()
    rate = flows["bytes"].to_numpy() / (end - start)
    overlap = np.clip(
        np.minimum(end[:, None], edges[None, 1:]) - np.maximum(start[:, None], edges[None, :-1]), 0.0, None
    )
    moved = overlap * rate[:, None]
    load = np.zeros((len(links), TIMELINE_BINS))
    for hop in range(4):
        ids = flows[f"link{hop}"].to_numpy()
        used = ids >= 0
        np.add.at(load, ids[used], moved[used])
    util = load / (links["capacity_Bps"].to_numpy()[:, None] * np.diff(edges)[None, :])
    busiest = np.argsort(-load.sum(axis=1), kind="stable")[:TIMELINE_LINKS]
    return pd.DataFrame(
        {
            "link": np.repeat(busiest, TIMELINE_BINS),
            "name": links["name"].to_numpy()[busiest].repeat(TIMELINE_BINS),
            "kind": links["kind"].to_numpy()[busiest].repeat(TIMELINE_BINS),
            "t_start": np.tile(edges[:-1], busiest.size),
            "t_end": np.tile(edges[1:], busiest.size),
            "utilization": np.clip(util[busiest], 0.0, 1.0).ravel(),
        }
    )


def _ops(rng: np.random.Generator, flows: pd.DataFrame, compute: float) -> pd.DataFrame:
    """Per rank: compute, the all-to-all (until its last flow in or out ends), compute."""
    last = np.full(GPUS, compute)
    np.maximum.at(last, flows["src"].to_numpy(), flows["end"].to_numpy())
    np.maximum.at(last, flows["dst"].to_numpy(), flows["end"].to_numpy())
    tail = last + compute * (0.5 + 0.5 * rng.random(GPUS))
    ranks = np.arange(GPUS)
    return pd.DataFrame(
        {
            "rank": np.repeat(ranks, 3),
            "index": np.tile([0, 1, 2], GPUS),
            "label": np.tile(["compute", "all_to_all/direct", "compute"], GPUS),
            "start": np.stack([np.zeros(GPUS), np.full(GPUS, compute), last], axis=1).ravel(),
            "end": np.stack([np.full(GPUS, compute), last, tail], axis=1).ravel(),
        }
    )


def experiment_yaml(points: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """The experiment that the points were swept from (human units, as a user writes it)."""
    sweep: dict[str, list[Any]] = {}
    for point in points:
        for key, value in point.items():
            if value not in sweep.setdefault(key, []):
                sweep[key].append(value)
    human = {
        "workload.size": lambda v: f"{v // MIB}MiB",
        "topology.uplink_bandwidth": lambda v: f"{v * 8e-9:g}Gbps",
    }
    sweep = {k: [human.get(k, lambda v: v)(v) for v in vs] for k, vs in sweep.items()}
    return {
        "moesim_version": "0.1.0",
        "name": "fixture-spray-vs-ecmp",
        "seed": 0,
        "topology": {
            "kind": "leaf_spine",
            "leaves": LEAVES,
            "spines": SPINES,
            "hosts_per_leaf": HOSTS_PER_LEAF,
            "gpus_per_host": GPUS_PER_HOST,
            "nic_bandwidth": "400Gbps",
            "uplink_bandwidth": "400Gbps",
            "nvlink_bandwidth": "450GB/s",
            "link_latency": "500ns",
        },
        "workload": {"kind": "collective", "op": "all_to_all", "size": "16MiB"},
        "transport": "ecmp",
        "sweep": sweep,
    }


def make_results_dir(
    path: Path,
    points: Sequence[Mapping[str, Any]] | None = None,
    *,
    flows_per_point: int = 300,
    failed: int | None = -1,
    flows: bool = True,
    timeline: bool = True,
    seed: int = 7,
) -> Path:
    """Write a results directory into ``path`` (created) and return it.

    Args:
        path: the directory.
        points: one mapping per sweep point of swept YAML path -> value in base units, e.g.
            ``{"transport": "spray", "workload.size": 16 * MIB, "seed": 1}``; ``transport`` and
            ``seed`` default to ``"ecmp"`` and 0. Default: :func:`default_points` (8 points).
        flows_per_point: flows fabricated per successful point.
        failed: index (into ``points``) of a point that failed (error set, NaN metrics, no detail
            rows); ``None`` for none. Default: the last point.
        flows: write ``flows.parquet``.
        timeline: write ``timeline.parquet``.
        seed: seed of the fabricated numbers.
    """
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    points = list(points) if points is not None else default_points()
    failed_index = None if failed is None else range(len(points))[failed]
    links = _links()
    rng = np.random.default_rng(seed)
    rows, flow_frames, link_frames, op_frames, timeline_frames = [], [], [], [], []
    for index, point in enumerate(points):
        transport = str(point.get("transport", "ecmp"))
        size = float(point.get("workload.size", 16 * MIB))
        row: dict[str, Any] = {"point": index, "seed": int(point.get("seed", 0))}
        row.update({k: v for k, v in point.items() if k != "seed"})
        row["transport"] = transport
        if index == failed_index:
            metrics = ("completion_time_s", "max_link_utilization", "max_link_flows", "messages", "flows")
            row.update({key: np.nan for key in metrics})
            row.update(events=np.nan, solves=np.nan, wall_time_s=0.004, error=FAILED_ERROR)
            rows.append(row)
            continue
        point_flows = _flows(rng, links, transport, size, flows_per_point)
        compute = 20e-6
        point_flows[["start", "end"]] += compute
        point_ops = _ops(rng, point_flows, compute)
        completion = float(point_ops["end"].max())
        point_links = _link_table(links, point_flows, completion)
        row.update(
            completion_time_s=completion,
            max_link_utilization=float(point_links["utilization"].max()),
            max_link_flows=int(point_links["peak_flows"].max()),
            wall_time_s=0.01 + 1e-5 * flows_per_point * float(rng.random()),
            messages=flows_per_point,
            flows=flows_per_point,
            events=2 * flows_per_point,
            solves=2 * flows_per_point - 1,
            error=None,
        )
        rows.append(row)
        flow_frames.append(point_flows.assign(point=index))
        link_frames.append(point_links.assign(point=index))
        op_frames.append(point_ops.assign(point=index))
        timeline_frames.append(_timeline(links, point_flows, completion).assign(point=index))
    results = pd.DataFrame(rows)
    metrics = ["completion_time_s", "max_link_utilization", "max_link_flows", "wall_time_s"]
    metrics += ["messages", "flows", "events", "solves", "error"]
    params = [c for c in results.columns if c not in {"point", "seed", "transport", *metrics}]
    results = results[["point", "seed", *params, "transport", *metrics]]
    swept = [*params, "transport"] + (["seed"] if results["seed"].nunique() > 1 else [])
    units = {name: UNITS[name] for name in params if name in UNITS}
    baseline = {"transport": results["transport"].iloc[0]}
    schema = ResultsSchema(
        describe_columns(results.columns, swept, units), [[name] for name in swept], baseline, "fixture"
    )
    write_results(results, path / "results.parquet", schema)

    def write(name: str, frames: list[pd.DataFrame], columns: list[str]) -> None:
        table = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=columns)
        table[columns].to_parquet(path / f"{name}.parquet", index=False)

    flow_cols = ["point", "flow", "message", "src", "dst", "bytes", "start", "end"]
    if flows:
        write("flows", flow_frames, [*flow_cols, "link0", "link1", "link2", "link3"])
    link_cols = ["point", "link", "name", "kind", "capacity_Bps", "bytes", "peak_flows", "utilization"]
    write("links", link_frames, link_cols)
    write("ops", op_frames, ["point", "rank", "index", "label", "start", "end"])
    if timeline:
        timeline_cols = ["point", "link", "name", "kind", "t_start", "t_end", "utilization"]
        write("timeline", timeline_frames, timeline_cols)
    (path / "experiment.yaml").write_text(yaml.safe_dump(experiment_yaml(points), sort_keys=False))
    return path
