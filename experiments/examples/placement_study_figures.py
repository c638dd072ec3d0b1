"""Figures and tables of the placement study from its results directory.

Usage::

    moesim run experiments/examples/placement_study.yaml --out out/placement_study
    python experiments/examples/placement_study_figures.py out/placement_study --transitions
    python experiments/examples/placement_study_figures.py out/placement_study --png out/figures

Prints Markdown tables (MoE forward time of every placement method against ``round_robin`` per
trace, fabric and transport; cross-host bytes; GPU load balance; all-to-all tail; the ILP
solver's reports from ``DIR/placements/``; with ``--transitions`` each placement's inter-layer
transitions on fitted and held-out tokens) and, with ``--png``, writes PNG figures through
kaleido, which drives a local Chromium (``pip install 'kaleido>=1'``;
``BROWSER_PATH=/usr/bin/chromium``).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import plotly.graph_objects as go
import yaml
from plotly.subplots import make_subplots

METHODS = ["round_robin", "random", "greedy", "eplb", "ilp"]
COLORS = dict(zip(METHODS, ["#7f7f7f", "#bcbd22", "#1f77b4", "#ff7f0e", "#2ca02c"], strict=True))
TRACES = ["uniform", "skewed", "skewed+affinity"]
TRANSPORTS = ["ecmp", "spray"]
PHASES = {
    "dispatch_time_s": "dispatch",
    "expert_time_s": "experts (slowest GPU)",
    "combine_time_s": "combine",
}


def trace_name(imbalance: float, affinity: float) -> str:
    """The study's name of a synthetic trace from its target skew and inter-layer affinity."""
    if imbalance == 0 and affinity == 0:
        return "uniform"
    return "skewed+affinity" if affinity > 0 else "skewed"


def fabric_name(hosts: int, gpus_per_host: int) -> str:
    return f"{hosts} host{'s' if hosts > 1 else ''} × {gpus_per_host} GPUs"


def gpus_per_host(out: Path) -> int:
    """GPUs per host of the run, from its ``experiment.yaml`` (not swept in this study)."""
    raw = yaml.safe_load((out / "experiment.yaml").read_text())
    return int(raw["topology"]["gpus_per_host"])


def load(out: Path) -> pd.DataFrame:
    """The study's results with trace and fabric labels and ratios against round_robin of the same
    trace, fabric and transport."""
    results = pd.read_parquet(out / "results.parquet")
    failed = results[results["error"].notna()]
    if len(failed):
        print(f"warning: {len(failed)} failed points left out: {sorted(set(failed['error']))}")
    results = results[results["error"].isna()].copy()
    results["trace"] = [
        trace_name(i, a)
        for i, a in zip(results["workload.synth.imbalance"], results["workload.synth.affinity"], strict=True)
    ]
    per_host = gpus_per_host(out)
    results["hosts"] = results["topology.leaves"] * results["topology.hosts_per_leaf"]
    results["fabric"] = [fabric_name(h, per_host) for h in results["hosts"]]
    nic = busiest_nic(out, per_host)
    results = results.merge(nic, on="point", how="left")
    key = ["trace", "fabric", "transport"]
    base = results[results["placement"] == "round_robin"].set_index(key)
    index = pd.MultiIndex.from_frame(results[key])
    for column in ("completion_time_s", "cross_host_bytes", "busiest_nic_bytes"):
        with np.errstate(invalid="ignore"):  # one host: 0 bytes ÷ 0 bytes
            results[f"{column}_vs_rr"] = results[column].to_numpy() / base[column].reindex(index).to_numpy()
    return results


def busiest_nic(out: Path, per_host: int) -> pd.DataFrame:
    """Per point, from ``flows.parquet``: the cross-host bytes of the busiest NIC (the larger of
    what a GPU sends to and receives from other hosts) in each dispatch or combine, and the mean
    over GPUs, both averaged over the all-to-alls. A flow belongs to the all-to-all that last
    started before it (the ops' ``moeN/dispatch`` and ``moeN/combine`` labels)."""
    flows = pd.read_parquet(out / "flows.parquet", columns=["point", "src", "dst", "bytes", "start"])
    flows = flows[flows["src"] // per_host != flows["dst"] // per_host]
    ops = pd.read_parquet(out / "ops.parquet", columns=["point", "label", "start"])
    ops = ops[ops["label"].str.contains(r"^moe\d+/(?:dispatch|combine)$", regex=True)]
    gpus = int(max(flows["src"].max(), flows["dst"].max()) + 1) if len(flows) else 1
    rows = []
    for point, sub in flows.groupby("point"):
        starts = ops[ops["point"] == point].groupby("label")["start"].min().sort_values()
        phase = np.searchsorted(starts.to_numpy(), sub["start"].to_numpy(), side="right") - 1
        sub = sub.assign(phase=phase)
        sent = sub.groupby(["phase", "src"])["bytes"].sum().groupby("phase").max()
        received = sub.groupby(["phase", "dst"])["bytes"].sum().groupby("phase").max()
        busiest = pd.concat([sent, received], axis=1).max(axis=1)
        mean = sub.groupby("phase")["bytes"].sum() / gpus
        rows.append({"point": point, "busiest_nic_bytes": busiest.mean(), "mean_nic_bytes": mean.mean()})
    return pd.DataFrame(rows, columns=["point", "busiest_nic_bytes", "mean_nic_bytes"])


def fabrics(results: pd.DataFrame) -> list[str]:
    return list(results.sort_values("hosts")["fabric"].unique())


def _pct(ratio: float) -> str:
    """A ratio to round_robin as a signed change in percent (negative = faster / fewer bytes)."""
    if pd.isna(ratio):
        return "–"
    return f"{(ratio - 1) * 100:+.1f}%"


def _mb(nbytes: float) -> str:
    return "0" if pd.isna(nbytes) else f"{nbytes / 1e6:.1f}"


def _row(results: pd.DataFrame, trace: str, fabric: str, method: str) -> pd.DataFrame:
    at = results[
        (results["trace"] == trace) & (results["fabric"] == fabric) & (results["placement"] == method)
    ]
    return at.set_index("transport")


def forward_tables(results: pd.DataFrame) -> str:
    """Markdown: per fabric, each trace and method's forward time and change against round_robin."""
    lines = []
    for fabric in fabrics(results):
        lines.append(f"\n**{fabric}**: MoE forward time (8 layers), change against round_robin\n")
        lines.append("| trace | method | ecmp (ms) | vs rr | spray (ms) | vs rr | mean vs rr |")
        lines.append("|---|---|---|---|---|---|---|")
        for trace in TRACES:
            for method in METHODS:
                at = _row(results, trace, fabric, method)
                if at.empty:
                    continue
                ms = [at["completion_time_s"].get(t, float("nan")) * 1e3 for t in TRANSPORTS]
                ratio = [at["completion_time_s_vs_rr"].get(t, float("nan")) for t in TRANSPORTS]
                mean = sum(ratio) / len(ratio)
                lines.append(
                    f"| {trace} | {method} | {ms[0]:.3f} | {_pct(ratio[0])} | {ms[1]:.3f} | "
                    f"{_pct(ratio[1])} | {_pct(mean)} |"
                )
    return "\n".join(lines)


def detail_tables(results: pd.DataFrame) -> str:
    """Markdown: per fabric, cross-host bytes, GPU load balance, per-layer phases and all-to-all tail."""
    lines = []
    for fabric in fabrics(results):
        lines.append(
            f"\n**{fabric}**: per forward pass: bytes into the network (NIC up), change against "
            "round_robin; per all-to-all (means): cross-host bytes of the busiest NIC and of the "
            "mean GPU; per layer (means): busiest GPU's tokens ÷ mean (load ratio, held-out "
            "tokens), slowest ÷ mean GPU expert time, dispatch, experts and combine time, "
            "all-to-all tail (last rank out − median rank out); times ecmp / spray\n"
        )
        lines.append(
            "| trace | method | cross-host GB | vs rr | busiest NIC (MB) | mean NIC (MB) | load ratio "
            "| expert time ratio | dispatch (µs) | experts (µs) | combine (µs) | a2a tail (µs) |"
        )
        lines.append("|---|---|---|---|---|---|---|---|---|---|---|---|")
        for trace in TRACES:
            for method in METHODS:
                at = _row(results, trace, fabric, method)
                if at.empty:
                    continue
                first = at.iloc[0]

                def both(column: str, at: pd.DataFrame = at) -> str:
                    values = [at[column].get(t, float("nan")) * 1e6 for t in TRANSPORTS]
                    return " / ".join(f"{v:.0f}" for v in values)

                lines.append(
                    f"| {trace} | {method} | {first['cross_host_bytes'] / 1e9:.3f} | "
                    f"{_pct(first['cross_host_bytes_vs_rr'])} | {_mb(first['busiest_nic_bytes'])} | "
                    f"{_mb(first['mean_nic_bytes'])} | {first['load_ratio']:.3f} | "
                    f"{first['expert_time_ratio']:.3f} | {both('dispatch_time_s')} | "
                    f"{both('expert_time_s')} | {both('combine_time_s')} | {both('a2a_tail_s')} |"
                )
    return "\n".join(lines)


def key_table(results: pd.DataFrame, trace: str = "skewed+affinity") -> str:
    """Markdown: the headline comparison on ``trace`` across the largest fabric."""
    fabric = fabrics(results)[-1]
    lines = [
        f"\n**{trace}, {fabric}**\n",
        "| method | ecmp (ms) | vs rr | spray (ms) | vs rr | cross-host GB | vs rr | load ratio |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for method in METHODS:
        at = _row(results, trace, fabric, method)
        if at.empty:
            continue
        ms = [at["completion_time_s"].get(t, float("nan")) * 1e3 for t in TRANSPORTS]
        ratio = [at["completion_time_s_vs_rr"].get(t, float("nan")) for t in TRANSPORTS]
        first = at.iloc[0]
        lines.append(
            f"| {method} | {ms[0]:.3f} | {_pct(ratio[0])} | {ms[1]:.3f} | {_pct(ratio[1])} | "
            f"{first['cross_host_bytes'] / 1e9:.3f} | {_pct(first['cross_host_bytes_vs_rr'])} | "
            f"{first['load_ratio']:.3f} |"
        )
    return "\n".join(lines)


def _moesim_on_path() -> None:
    """Make moesim importable: the source tree this script lives in, when it is not installed."""
    try:
        import experiments  # noqa: F401
    except ModuleNotFoundError:
        sys.path.insert(0, str(Path(__file__).resolve().parents[2]))


def _points(out: Path) -> list:
    """The run's points (``Experiment`` objects), expanded again from its ``experiment.yaml``."""
    _moesim_on_path()
    from experiments.config import parse_experiment, points

    raw = yaml.safe_load((out / "experiment.yaml").read_text())
    raw.pop("moesim_version", None)
    return [point for _, point in points(parse_experiment(raw, out), raw, out)]


def ilp_reports(out: Path) -> pd.DataFrame:
    """The saved ILP placements of the run, each labelled with its trace and fabric.

    A placement file is named by :func:`experiments.placing.ilp_placement_key` of the points that use it, so
    the run's points are expanded again from ``experiment.yaml`` to match them."""
    _moesim_on_path()
    from experiments.config import placement_method
    from experiments.placing import ilp_placement_key

    labels = {}
    for point in _points(out):
        if point.workload.kind == "moe" and placement_method(point.placement) == ("ilp", None):
            synth = point.workload.synth
            hosts = point.topology.leaves * point.topology.hosts_per_leaf
            labels[ilp_placement_key(point)] = (
                trace_name(synth.imbalance, synth.affinity),
                fabric_name(hosts, point.topology.gpus_per_host),
                hosts,
            )
    rows = []
    for path in sorted((out / "placements").glob("ilp-*.json")):
        document = json.loads(path.read_text())
        trace, fabric, hosts = labels.get(
            path.stem.removeprefix("ilp-"), ("?", f"{document['gpus']} GPUs", 0)
        )
        rows.append({"trace": trace, "fabric": fabric, "hosts": hosts, **document["ilp"], **document["fit"]})
    table = pd.DataFrame(rows)
    if table.empty:
        return table
    table["trace"] = pd.Categorical(table["trace"], categories=[*TRACES, "?"], ordered=True)
    return table.sort_values(["hosts", "trace"])


def ilp_table(reports: pd.DataFrame, results: pd.DataFrame) -> str:
    """Markdown: how each ILP solve went (objective in tokens per GPU, see placement.ilp), and its
    placement's load ratio on the tokens it was fitted on and on the held-out ones."""
    lines = [
        "\n**ILP solves** (objective and bound in token-equivalents per GPU; warm start = greedy; "
        "load ratio = busiest GPU's tokens ÷ mean, per layer, on the fitted / held-out tokens)\n",
        "| fabric | trace | solver | decomposition | warm start | objective | best bound | gap | status "
        "| returned | seconds | load ratio fit / held out |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    ilp = results[results["placement"] == "ilp"]
    for _, r in reports.iterrows():
        held = ilp.loc[(ilp["trace"] == r["trace"]) & (ilp["fabric"] == r["fabric"]), "load_ratio"]
        held_out = f"{held.iloc[0]:.3f}" if len(held) else "–"
        lines.append(
            f"| {r['fabric']} | {r['trace']} | {r['solver']} | {r['decomposition']} | "
            f"{r['warm_objective']:.0f} | {r['objective']:.0f} | {r['best_bound']:.0f} | {r['gap']:.1%} | "
            f"{r['status']} | {r['returned']} | {r['solve_seconds']:.1f} | "
            f"{r['mean_load_ratio']:.3f} / {held_out} |"
        )
    return "\n".join(lines)


def affinity_table(out: Path) -> str:
    """Markdown: per trace, fabric and method, what the placement does to the fitted and the
    held-out tokens by :func:`placement.stats.evaluate`: token copies that change GPU / host
    between consecutive layers (home transitions, as the ILP counts them under token_home:
    top_expert, and slot-matched ones), the busiest GPU's tokens ÷ mean, the busiest GPU's tokens
    summed over layers, and the ILP objective split into its terms with lower_bound's values.
    Rebuilds every point's traces and placements (the ILP's from ``DIR/placements/``)."""
    _moesim_on_path()
    from experiments.placing import point_traces, presolve
    from experiments.runner import point_placement
    from placement.ilp import lower_bound, placement_objective
    from placement.stats import evaluate, gpu_cost, placement_stats

    lines = [
        "\n**Inter-layer moves** (fitted → held-out tokens, all layer pairs): home transitions "
        "(first expert to each next expert: the moves of token_home: top_expert) and slot-matched "
        "pairs (i-th expert to i-th) that change GPU / host; load ratio; busiest-GPU tokens\n",
        "| fabric | trace | method | home cross-GPU | home cross-host | all home moves | slot cross-GPU "
        "| slot cross-host | load ratio | Σ busiest-GPU tokens |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    objective = [
        "\n**ILP objective on the fitted tokens** (home transitions, λ = 1): total, busiest-GPU term, "
        "move term, and lower_bound's values for each (token-equivalents per GPU)\n",
        "| fabric | trace | method | objective | busiest-GPU term | move term | bound | busiest-GPU bound "
        "| move bound |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    points = [p for p in _points(out) if p.transport == TRANSPORTS[0]]
    for point in presolve(points, out):  # only reads the saved ILP placements
        fit, held_out = point_traces(point)
        placement = point_placement(point, fit)
        spec = point.topology.spec()
        home = [placement_stats(t, affinity="home") for t in (fit, held_out)]
        slot = [evaluate(placement, placement_stats(t), spec) for t in (fit, held_out)]
        scores = [evaluate(placement, stats, spec) for stats in home]
        synth = point.workload.synth
        cells = [" → ".join(f"{s[key]:.0f}" for s in scores) for key in ("total_affinity_cross_gpu",)]
        cells.append(" → ".join(f"{s['total_affinity_cross_host']:.0f}" for s in scores))
        cells.append(" → ".join(f"{float(stats.transitions.sum()):.0f}" for stats in home))
        cells += [
            " → ".join(f"{s[key]:.0f}" for s in slot)
            for key in ("total_affinity_cross_gpu", "total_affinity_cross_host")
        ]
        cells.append(" → ".join(f"{s['mean_load_ratio']:.3f}" for s in scores))
        cells.append(" → ".join(f"{sum(s['max_gpu_load']):.0f}" for s in scores))
        fabric = fabric_name(spec.hosts, spec.gpus_per_host)
        trace = trace_name(synth.imbalance, synth.affinity)
        lines.append(f"| {fabric} | {trace} | {point.placement} | " + " | ".join(cells) + " |")
        if point.placement in ("round_robin", "random", "greedy", "ilp"):
            cost = gpu_cost(spec, fit.gpus)
            whole, tail = (placement_objective(placement, home[0], cost, lam) for lam in (1.0, 0.0))
            bound, tail_bound = (lower_bound(home[0], cost, lam) for lam in (1.0, 0.0))
            values = (whole, tail, whole - tail, bound, tail_bound, bound - tail_bound)
            objective.append(
                f"| {fabric} | {trace} | {point.placement} | "
                + " | ".join(f"{v:,.0f}" for v in values)
                + " |"
            )
    return "\n".join(lines + objective)


def forward_figure(results: pd.DataFrame) -> go.Figure:
    """Forward time ÷ round_robin's, grouped by trace, one panel per fabric and transport."""
    names = fabrics(results)
    titles = [f"{fabric}, {transport}" for fabric in names for transport in TRANSPORTS]
    fig = make_subplots(
        rows=len(names), cols=len(TRANSPORTS), subplot_titles=titles, shared_yaxes=True, vertical_spacing=0.13
    )
    for row, fabric in enumerate(names, start=1):
        for col, transport in enumerate(TRANSPORTS, start=1):
            sub = results[(results["fabric"] == fabric) & (results["transport"] == transport)]
            for method in METHODS:
                at = sub[sub["placement"] == method].set_index("trace").reindex(TRACES)
                fig.add_trace(
                    go.Bar(
                        x=TRACES,
                        y=at["completion_time_s_vs_rr"],
                        name=method,
                        legendgroup=method,
                        showlegend=row == 1 and col == 1,
                        marker_color=COLORS[method],
                        text=[f"{v:.2f}" for v in at["completion_time_s_vs_rr"]],
                        textposition="outside",
                        textfont={"size": 9},
                    ),
                    row=row,
                    col=col,
                )
            fig.add_hline(y=1.0, line={"color": "black", "width": 1, "dash": "dot"}, row=row, col=col)
        fig.update_yaxes(title_text="forward time ÷ round_robin's", row=row, col=1)
    fig.update_yaxes(range=[0.6, 1.3])
    fig.update_layout(
        barmode="group",
        width=1100,
        height=820,
        template="plotly_white",
        title="MoE forward time (8 layers, held-out tokens) against round_robin",
    )
    return fig


def traffic_figure(results: pd.DataFrame) -> go.Figure:
    """On the multi-host fabric: bytes into the network and the busiest NIC against round_robin;
    on every fabric: the busiest GPU's share of the tokens."""
    names = fabrics(results)
    multi = names[-1]
    titles = [
        f"bytes into the network ÷ round_robin's, {multi}",
        f"busiest NIC per all-to-all ÷ round_robin's, {multi}",
    ] + [f"busiest GPU's tokens ÷ mean, {f}" for f in names]
    fig = make_subplots(rows=2, cols=2, subplot_titles=titles, vertical_spacing=0.14)
    one = results[results["transport"] == TRANSPORTS[0]]
    panels = [(multi, "cross_host_bytes_vs_rr"), (multi, "busiest_nic_bytes_vs_rr")]
    panels += [(fabric, "load_ratio") for fabric in names]
    for i, (fabric, column) in enumerate(panels):
        row, col = divmod(i, 2)
        for method in METHODS:
            at = one[(one["placement"] == method) & (one["fabric"] == fabric)].set_index("trace")
            at = at.reindex(TRACES)
            fig.add_trace(
                go.Bar(
                    x=TRACES,
                    y=at[column],
                    name=method,
                    legendgroup=method,
                    showlegend=i == 0,
                    marker_color=COLORS[method],
                    text=[f"{v:.2f}" for v in at[column]],
                    textposition="outside",
                    textfont={"size": 9},
                ),
                row=row + 1,
                col=col + 1,
            )
    fig.update_yaxes(range=[0.5, 1.12], row=1, col=1)
    fig.update_yaxes(range=[0.5, 1.12], row=1, col=2)
    fig.update_yaxes(range=[0.9, None], row=2)
    fig.update_layout(
        barmode="group",
        width=1100,
        height=820,
        template="plotly_white",
        title=f"What the placements change (held-out tokens, {TRANSPORTS[0]})",
    )
    return fig


def phases_figure(results: pd.DataFrame, trace: str = "skewed+affinity") -> go.Figure:
    """Per-layer dispatch, expert and combine time of every method on ``trace``, one panel per
    fabric and transport, stacked, with the layer time as a marker. Each phase spans first rank in
    to last rank out, so phases overlap when ranks are uneven and the stack can exceed the layer."""
    names = fabrics(results)
    titles = [f"{fabric}, {transport}" for fabric in names for transport in TRANSPORTS]
    fig = make_subplots(rows=1, cols=len(titles), subplot_titles=titles, shared_yaxes=True)
    shades = dict(zip(PHASES, ["#1f77b4", "#ff7f0e", "#2ca02c"], strict=True))
    col = 0
    for fabric in names:
        for transport in TRANSPORTS:
            col += 1
            sub = results[
                (results["fabric"] == fabric)
                & (results["transport"] == transport)
                & (results["trace"] == trace)
            ].set_index("placement")
            sub = sub.reindex([m for m in METHODS if m in sub.index])
            for column, label in PHASES.items():
                fig.add_trace(
                    go.Bar(
                        x=sub.index,
                        y=sub[column] * 1e6,
                        name=label,
                        legendgroup=label,
                        showlegend=col == 1,
                        marker_color=shades[column],
                    ),
                    row=1,
                    col=col,
                )
            fig.add_trace(
                go.Scatter(
                    x=sub.index,
                    y=sub["layer_time_s"] * 1e6,
                    name="layer time",
                    legendgroup="layer time",
                    showlegend=col == 1,
                    mode="markers",
                    marker={"symbol": "diamond", "size": 10, "color": "black"},
                ),
                row=1,
                col=col,
            )
    fig.update_yaxes(title_text="µs per layer (mean of 8)", row=1, col=1)
    fig.update_layout(
        barmode="stack",
        width=1300,
        height=480,
        template="plotly_white",
        title=f"Where a layer's time goes, {trace} trace (phases: first rank in to last out; they overlap)",
    )
    return fig


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path, help="results directory of placement_study.yaml")
    parser.add_argument("--png", type=Path, help="write PNG figures into this directory")
    parser.add_argument(
        "--transitions",
        action="store_true",
        help="also score every placement's inter-layer transitions on fitted and held-out tokens",
    )
    args = parser.parse_args()
    results = load(args.out)
    print(key_table(results))
    print(forward_tables(results))
    print(detail_tables(results))
    reports = ilp_reports(args.out)
    if not reports.empty:
        print(ilp_table(reports, results))
    if args.transitions:
        print(affinity_table(args.out))
    if args.png:
        args.png.mkdir(parents=True, exist_ok=True)
        figures = {
            "placement_forward.png": forward_figure(results),
            "placement_traffic.png": traffic_figure(results),
            "placement_phases.png": phases_figure(results),
        }
        for name, figure in figures.items():
            figure.write_image(args.png / name, scale=1)
        print(f"\nwrote {', '.join(str(args.png / name) for name in figures)}")


if __name__ == "__main__":
    main()
