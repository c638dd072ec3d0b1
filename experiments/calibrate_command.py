"""``moesim calibrate``: fit a fabric to measured collectives and report how far it is from them.

::

    moesim calibrate LOG.txt [LOG.txt ...] [GEMM.csv] [TRACE.json] --topology EXPERIMENT.yaml
                     --out calibrated.yaml [--holdout alternate | sizes:1MiB,4MiB | file:NAME]
                     [--placement out_of_place|in_place] [--ranks N] [--hosts N] [--min-size 1MiB]
                     [--report calibrated.html] [--self-contained] [--gpu h100]

nccl-tests logs are fitted (:mod:`calibration.fit`); a kernel-timing CSV (``op,m,n,k,dtype,
time_us``) fits the roofline GEMM model's efficiency and launch time; a PyTorch profiler trace
has its GPU kernel durations summarised. The experiment file's topology is the starting point;
``calibrated.yaml`` is that experiment with the fitted topology, and a workload that replays the
first log's op over its sizes (so ``moesim run calibrated.yaml`` reproduces the comparison), with
the fit summarised in its comment header. The report (HTML) and a printed table show measured vs
simulated times per size, the errors and the error on held-out rows.
"""

from __future__ import annotations

import argparse
import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd
import yaml

from calibration.fit import FIT_OPS, Calibration, CalibrationError, calibrate, tier_values
from calibration.nccl_log import NcclLog, NcclLogError, parse_nccl_log
from experiments.arguments import Parser, UsageError, fail, help_status, whole
from experiments.config import ConfigError, load_experiment, parse_experiment
from experiments.output_dir import check_output_file
from experiments.units import UnitError, parse_size
from pages.files import write_atomic
from workloads.kernel_model import GPUS, KernelTableError, read_kernel_table
from workloads.kineto import KinetoError


def _parser() -> argparse.ArgumentParser:
    parser = Parser(
        prog="moesim calibrate",
        description="Fit the fabric's per-tier latency, bandwidth and efficiency curve to nccl-tests logs "
        "(and the GEMM model to kernel timings), and report the error.",
    )
    parser.add_argument("files", type=Path, nargs="+", help="nccl-tests logs, kernel CSVs, profiler traces")
    parser.add_argument("--topology", type=Path, required=True, help="experiment YAML: the starting fabric")
    parser.add_argument("--out", type=Path, required=True, help="calibrated experiment YAML to write")
    parser.add_argument(
        "--holdout",
        default="none",
        help="rows only scored, not fitted: none, alternate (every other size), sizes:1MiB,4MiB, file:NAME",
    )
    parser.add_argument(
        "--placement", choices=("out_of_place", "in_place"), default="out_of_place", help="which half"
    )
    parser.add_argument(
        "--ranks", type=whole(1), default=None, help="ranks of every log, over what the logs say"
    )
    parser.add_argument(
        "--hosts", type=whole(1), default=None, help="hosts of every log, over what the logs say"
    )
    parser.add_argument("--min-size", default="1MiB", help="smallest size in the headline MAPE (1MiB)")
    parser.add_argument("--report", type=Path, default=None, help="HTML report (default: OUT with .html)")
    parser.add_argument(
        "--self-contained",
        action="store_true",
        help="inline plotly.js in the report (one file to send) instead of plotly.min.js beside it",
    )
    parser.add_argument("--gpu", choices=sorted(GPUS), default="h100", help="GPU kind of kernel CSVs")
    return parser


def _measurements(logs: list[NcclLog], placement: str, ranks: int | None) -> pd.DataFrame:
    frames = []
    for log in logs:
        name = Path(log.path).name
        if log.op not in FIT_OPS:
            raise UsageError(
                f"{name}: op {log.op or 'unknown'} cannot be fitted (logs of {', '.join(FIT_OPS)})"
            )
        nranks = log.nranks or ranks
        if nranks is None:
            raise UsageError(f"{name}: the log does not say how many ranks ran; pass --ranks N")
        # a size-0 collective moves nothing: its time is a launch, not the fabric's
        rows = log.rows[(log.rows["placement"] == placement) & (log.rows["size"] > 0)]
        if rows.empty:
            raise UsageError(f"{name}: no {placement} rows (try --placement)")
        frames.append(
            pd.DataFrame(
                {
                    "source": name,
                    "op": log.op,
                    "nranks": int(nranks),
                    "size": rows["size"].to_numpy(dtype=np.int64),
                    "time_s": rows["time_us"].to_numpy(dtype=np.float64) * 1e-6,
                }
            )
        )
    return pd.concat(frames, ignore_index=True)


def _holdout(spec: str, rows: pd.DataFrame) -> np.ndarray:
    """Per row, True when ``--holdout`` keeps it out of the fit."""
    if spec == "none":
        return np.zeros(len(rows), dtype=bool)
    if spec == "alternate":
        held = np.zeros(len(rows), dtype=bool)
        for _, group in rows.groupby("source", sort=False):
            order = group.sort_values("size").index.to_numpy()
            held[order[1::2]] = True
        return held
    if spec.startswith("sizes:"):
        try:
            sizes = {parse_size(part) for part in spec[6:].split(",") if part}
        except UnitError as err:
            raise UsageError(f"--holdout: {err}") from None
        missing = sizes - set(rows["size"].tolist())
        if missing:
            raise UsageError(
                f"--holdout: no measured row of size {min(missing)} B (give sizes the logs measured)"
            )
        return rows["size"].isin(sizes).to_numpy()
    if spec.startswith("file:"):
        name = spec[5:]
        held = (rows["source"] == name).to_numpy()
        if not held.any():
            names = ", ".join(dict.fromkeys(rows["source"]))
            raise UsageError(f"--holdout: {name} is not one of the logs given (give one of {names})")
        return held
    raise UsageError(f"--holdout {spec!r}: use none, alternate, sizes:1MiB,4MiB or file:NAME")


def _classify(files: list[Path]) -> tuple[list[Path], list[Path], list[Path]]:
    logs, tables, traces = [], [], []
    for path in files:
        if not path.is_file():
            raise UsageError(f"{path}: no such file (give nccl-tests logs, kernel CSVs or profiler traces)")
        name = path.name.lower()
        if name.endswith(".csv"):
            tables.append(path)
        elif name.endswith((".json", ".json.gz")):
            traces.append(path)
        else:
            logs.append(path)
    if not logs:
        raise UsageError("give at least one nccl-tests log to fit the fabric")
    return logs, tables, traces


def _calibrated_yaml(raw: dict, calibration: Calibration, header: list[str]) -> str:
    """The experiment with the fitted topology and a workload replaying the first log."""
    out = dict(raw)
    topology = dict(out["topology"])
    topology.update(tier_values(calibration.spec))
    out["topology"] = topology
    table = calibration.table
    first = table["source"].iloc[0]
    rows = table[table["source"] == first]
    op = rows["op"].iloc[0]
    workload: dict = {"kind": "collective", "op": op, "size": int(rows["size"].iloc[0])}
    if op != "send_recv":
        workload["algorithm"] = "auto"  # as the fit ran it: NCCL's choice per size
    out["workload"] = workload
    out["transport"] = "spray"
    out.pop("placement", None)
    out.pop("placement_fit", None)
    out.pop("ilp", None)
    out["sweep"] = {"workload.size": [int(size) for size in rows["size"]]}
    parse_experiment(out)  # what we write must load
    body = yaml.safe_dump(out, sort_keys=False, default_flow_style=None, width=100)
    return "".join(f"# {line}\n" if line else "#\n" for line in header) + body


def _run(argv: Sequence[str] | None) -> int:
    from calibration.report import format_table, write_calibration_report

    args = _parser().parse_args(argv)
    report = args.report or args.out.with_suffix(".html")
    check_output_file(args.out)
    check_output_file(report, "--report" if args.report else "--out")
    try:
        min_size = parse_size(args.min_size)
    except UnitError as err:
        raise UsageError(f"--min-size: {err}") from None
    log_paths, tables, traces = _classify(list(args.files))
    plan = load_experiment(args.topology)
    spec = plan.experiment.topology.spec()
    logs = [parse_nccl_log(path, nranks=args.ranks, hosts=args.hosts) for path in log_paths]
    rows = _measurements(logs, args.placement, args.ranks)
    held = _holdout(args.holdout, rows)
    if held.all():
        raise UsageError("--holdout keeps every row out of the fit; nothing to fit (hold out fewer rows)")
    calibration = calibrate(spec, rows, held)
    notes = _kernel_notes(tables, traces, args.gpu)
    summary = _summary(calibration, min_size)
    header = [
        f"Calibrated by moesim calibrate from {', '.join(path.name for path in log_paths)}",
        f"(starting topology: {args.topology.name}; {args.placement} rows; holdout: {args.holdout}).",
        *summary,
        *(f"FLAG {flag}" for flag in calibration.flags),
        *notes,
        "The workload replays the first log's op over its sizes: swap it for any other workload.",
    ]
    text = _calibrated_yaml(plan.raw, calibration, header)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(args.out, lambda tmp: tmp.write_text(text))
    write_calibration_report(
        calibration,
        report,
        title=f"Calibration: {args.out.name}",
        min_size=min_size,
        notes=summary + notes,
        self_contained=args.self_contained,
    )
    print(format_table(calibration, min_size))
    for flag in calibration.flags:
        print(f"FLAG {flag}")
    for line in notes:
        print(line)
    print(f"wrote {args.out} and {report}")
    return 0


def _summary(calibration: Calibration, min_size: float) -> list[str]:
    def pct(value: float) -> str:
        return "n/a" if math.isnan(value) else f"{value:.2f}%"

    lines = [
        f"MAPE, sizes >= {min_size:,} B: all {pct(calibration.mape(None, min_size))}, "
        f"fitted {pct(calibration.mape('fit', min_size))}, "
        f"held out {pct(calibration.mape('holdout', min_size))}"
    ]
    for tier in calibration.tiers:
        lines.append(
            f"{tier.tier}: alpha {tier.alpha * 1e6:.2f} us{'' if tier.alpha_fitted else ' (kept)'}, "
            f"bandwidth {tier.bandwidth / 1e9:.2f} GB/s per GPU, {len(tier.efficiency)} efficiency knots"
        )
    return lines


def _kernel_notes(tables: list[Path], traces: list[Path], gpu: str) -> list[str]:
    from calibration.kernel_times import fit_roofline, kineto_kernel_durations

    notes = []
    for path in tables:
        fit = fit_roofline(read_kernel_table(path), gpu)
        effs = ", ".join(f"{dtype} {value:.3f}" for dtype, value in fit.efficiency.items())
        notes.append(
            f"{path.name}: roofline GEMM on {gpu}: efficiency {effs}, launch {fit.launch * 1e6:.2f} us, "
            f"MAPE {fit.mape:.1f}% over {len(fit.per_row)} GEMMs"
        )
    for path in traces:
        kernels = kineto_kernel_durations(path)
        top = kernels.head(3)
        listed = "; ".join(
            f"{row.name[:40]} x{row.count} {row.total_us / 1e3:.2f} ms" for row in top.itertuples()
        )
        notes.append(f"{path.name}: {int(kernels['count'].sum())} GPU kernels; most time: {listed}")
    return notes


def main(argv: Sequence[str] | None = None) -> int:
    """``moesim calibrate ...``; returns the exit status (2 with one line on stderr for bad input)."""
    try:
        return _run(argv)
    except (
        CalibrationError,
        ConfigError,
        KernelTableError,
        KinetoError,
        NcclLogError,
        UsageError,
    ) as err:
        return fail(err)
    except SystemExit as done:  # --help
        return help_status(done)
