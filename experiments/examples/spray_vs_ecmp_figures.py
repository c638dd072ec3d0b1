"""Figures and tables of the transport study from its results directory.

Usage::

    moesim run experiments/examples/spray_vs_ecmp.yaml --out out/spray_vs_ecmp
    python experiments/examples/spray_vs_ecmp_figures.py out/spray_vs_ecmp --png docs/figures

Prints Markdown tables (completion time and slowdown against ideal spraying, per collective,
transport and size, over seeds) and, with ``--png``, writes PNG figures through kaleido, which
drives a local Chromium (``pip install 'kaleido>=1'``; ``BROWSER_PATH=/usr/bin/chromium``).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots

COLLECTIVES = {
    ("all_reduce", "ring"): "ring all-reduce (all GPUs)",
    ("all_reduce", "hierarchical"): "hierarchical all-reduce",
    ("all_to_all", "direct"): "all-to-all",
    ("shift", None): "shift to the next rack",
}
TRANSPORTS = ["ecmp", "split:2", "split:4", "split:8", "ethereal", "spray"]
COLORS = dict(
    zip(TRANSPORTS, ["#d62728", "#ff7f0e", "#bcbd22", "#2ca02c", "#1f77b4", "#7f7f7f"], strict=True)
)


def load(out: Path) -> pd.DataFrame:
    """The study's results with a collective label and the slowdown against spray of the same point."""
    results = pd.read_parquet(out / "results.parquet")
    results = results[results["error"].isna()].copy()
    # what each point ran (the YAML pins null, moesim's own schedule, so the resolved column says)
    algorithm = [
        None if op == "shift" else a
        for op, a in zip(results["workload.op"], results["algorithm"], strict=True)
    ]
    results["collective"] = [COLLECTIVES[key] for key in zip(results["workload.op"], algorithm, strict=True)]
    results["size_mib"] = results["workload.size"] / 2**20
    spray = results[results["transport"] == "spray"].set_index(["collective", "size_mib", "seed"])[
        "completion_time_s"
    ]
    key = list(zip(results["collective"], results["size_mib"], results["seed"], strict=True))
    results["slowdown"] = results["completion_time_s"].to_numpy() / spray.loc[key].to_numpy()
    return results


def tables(results: pd.DataFrame) -> str:
    """Markdown: per collective and size, each transport's mean [worst seed] slowdown against spray."""
    lines = []
    for collective in COLLECTIVES.values():
        sub = results[results["collective"] == collective]
        lines.append(
            f"\n**{collective}**: completion time against ideal spraying, mean over seeds [worst seed]\n"
        )
        lines.append("| size | spray (ms) | " + " | ".join(t for t in TRANSPORTS if t != "spray") + " |")
        lines.append("|---|---|" + "---|" * (len(TRANSPORTS) - 1))
        for size, at in sub.groupby("size_mib"):
            spray_ms = at.loc[at["transport"] == "spray", "completion_time_s"].mean() * 1e3
            cells = []
            for transport in TRANSPORTS:
                if transport == "spray":
                    continue
                s = at.loc[at["transport"] == transport, "slowdown"]
                cells.append(f"{s.mean():.3f} [{s.max():.3f}]")
            lines.append(f"| {size:g} MiB | {spray_ms:.3f} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def completion_figure(results: pd.DataFrame) -> go.Figure:
    """Completion time against size, one panel per collective, mean over seeds with min-max bars."""
    names = list(COLLECTIVES.values())
    fig = make_subplots(rows=2, cols=2, subplot_titles=names, horizontal_spacing=0.09, vertical_spacing=0.14)
    for i, collective in enumerate(names):
        row, col = divmod(i, 2)
        sub = results[results["collective"] == collective]
        for transport in TRANSPORTS:
            t = (
                sub[sub["transport"] == transport]
                .groupby("size_mib")["completion_time_s"]
                .agg(["mean", "min", "max"])
            )
            fig.add_trace(
                go.Scatter(
                    x=t.index,
                    y=t["mean"] * 1e3,
                    name=transport,
                    legendgroup=transport,
                    showlegend=i == 0,
                    mode="lines+markers",
                    line={"color": COLORS[transport], "dash": "dash" if transport == "spray" else "solid"},
                    error_y={
                        "type": "data",
                        "symmetric": False,
                        "array": (t["max"] - t["mean"]) * 1e3,
                        "arrayminus": (t["mean"] - t["min"]) * 1e3,
                    },
                ),
                row=row + 1,
                col=col + 1,
            )
        fig.update_xaxes(type="log", title_text="size per GPU (MiB)", row=row + 1, col=col + 1)
        fig.update_yaxes(type="log", title_text="completion time (ms)", row=row + 1, col=col + 1)
    fig.update_layout(
        width=1100,
        height=820,
        template="plotly_white",
        title="Completion time (mean over seeds, bars: fastest to slowest seed)",
    )
    return fig


def slowdown_figure(results: pd.DataFrame) -> go.Figure:
    """Slowdown against spray of every (size, seed) point, one box per transport and collective."""
    fig = go.Figure()
    for transport in TRANSPORTS:
        if transport == "spray":
            continue
        sub = results[results["transport"] == transport]
        fig.add_trace(
            go.Box(
                x=sub["collective"],
                y=sub["slowdown"],
                name=transport,
                marker_color=COLORS[transport],
                boxpoints="outliers",
            )
        )
    fig.update_layout(
        boxmode="group",
        width=1100,
        height=520,
        template="plotly_white",
        yaxis_title="completion time ÷ spray's (same size and seed)",
        title="How much slower than ideal spraying (all sizes and seeds)",
    )
    return fig


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path, help="results directory of spray_vs_ecmp.yaml")
    parser.add_argument("--png", type=Path, help="write PNG figures into this directory")
    args = parser.parse_args()
    results = load(args.out)
    print(tables(results))
    if args.png:
        args.png.mkdir(parents=True, exist_ok=True)
        completion_figure(results).write_image(args.png / "transport_completion.png", scale=1)
        slowdown_figure(results).write_image(args.png / "transport_slowdown.png", scale=1)
        print(f"\nwrote {args.png / 'transport_completion.png'} and {args.png / 'transport_slowdown.png'}")


if __name__ == "__main__":
    main()
