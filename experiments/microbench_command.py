"""``moesim microbench``: measure a GPU machine for calibration (GEMMs, copies, NCCL collectives).

::

    moesim microbench --out DIR [--quick] [--force] [--only PARTS] [--models LIST] [--tokens LIST]
                      [--dtypes LIST] [--experts E] [--max-size SIZE] [--warmup N] [--iters N]
    torchrun --nproc_per_node=N -m experiments.microbench_command --out DIR ...

Writes ``DIR/gemm.csv`` (``op,m,n,k,dtype,time_us``, readable by
:class:`workloads.kernel_model.MeasuredGEMM`), ``DIR/copy.csv`` (``src,dst,bytes,time_us,gbps``),
under torchrun with ``WORLD_SIZE >= 2`` also ``DIR/nccl_all_reduce.txt``, ``nccl_all_gather.txt``
and ``nccl_all_to_all.txt`` in nccl-tests format (rank 0 writes, the other ranks only take part),
and ``DIR/system.json`` (hardware, versions, command line, sweep parameters, what was skipped).
The measurements are in :mod:`calibration.microbench`; this module parses arguments, checks the
machine and writes the files (each whole or not at all).

Without a CUDA GPU, with bad arguments, or with ``DIR`` already holding results (without
``--force``) it prints one line on stderr and exits 2, writing nothing.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from experiments.arguments import Parser, UsageError, fail, help_status, positive, whole
from experiments.output_dir import check_output_dir
from experiments.units import UnitError, parse_size
from pages.files import write_atomic

PARTS = ("gemm", "copy", "nccl")
COLLECTIVES = ("all_reduce", "all_gather", "all_to_all")
MODELS = ("mixtral-8x7b", "deepseek-v3", "qwen3-30b-a3b", "olmoe")  # calibration.microbench.MODELS
DTYPE_CHOICES = ("bf16", "fp16", "fp8")
RESULT_FILES = ("system.json", "gemm.csv", "copy.csv") + tuple(f"nccl_{op}.txt" for op in COLLECTIVES)
PROG = "moesim microbench"


class _RankError(UsageError):
    """A problem of one torchrun rank (printed by that rank, not only by rank 0)."""


@dataclass(frozen=True)
class Settings:
    """One microbench run: what to measure and how long (sizes in bytes)."""

    parts: tuple[str, ...]
    models: tuple[str, ...]
    tokens: tuple[int, ...]
    dtypes: tuple[str, ...]
    experts: int
    max_size: int
    warmup: int
    iters: int
    quick: bool


FULL = {"tokens": tuple(2**i for i in range(4, 15)), "max_size": 2**30, "warmup": 10, "iters": 50}
QUICK = {"tokens": (64, 512, 4096), "max_size": 64 * 2**20, "warmup": 3, "iters": 10}


def _parser() -> argparse.ArgumentParser:
    parser = Parser(
        prog=PROG,
        description="Measure this GPU machine for calibration: expert GEMMs and grouped GEMMs, "
        "device-to-device copies and, under torchrun with 2 or more ranks, NCCL collectives "
        "(nccl-tests format).",
    )
    parser.add_argument("--out", type=Path, required=True, metavar="DIR", help="results directory (created)")
    parser.add_argument(
        "--quick", action="store_true", help="a short sweep (tokens 64,512,4096; up to 64MiB)"
    )
    parser.add_argument("--force", action="store_true", help="overwrite results already in DIR")
    parser.add_argument(
        "--only", default=",".join(PARTS), metavar="PARTS", help=f"parts to run, of {','.join(PARTS)} (all)"
    )
    parser.add_argument(
        "--models",
        default=",".join(MODELS),
        metavar="LIST",
        help=f"expert shapes of {','.join(MODELS)} (all)",
    )
    parser.add_argument(
        "--tokens", default=None, metavar="LIST", help="tokens per GEMM, comma-separated (16,32,...,16384)"
    )
    parser.add_argument(
        "--dtypes",
        default="bf16,fp8",
        metavar="LIST",
        help="GEMM types of bf16,fp16,fp8 (bf16,fp8; fp8 where supported)",
    )
    parser.add_argument(
        "--experts", type=whole(0), default=8, metavar="E", help="experts per grouped GEMM, 0 for none (8)"
    )
    parser.add_argument(
        "--max-size", default=None, metavar="SIZE", help="largest copy and collective, e.g. 256MiB (1GiB)"
    )
    parser.add_argument(
        "--warmup", type=whole(0), default=None, metavar="N", help="untimed runs per measurement (10)"
    )
    parser.add_argument(
        "--iters", type=positive, default=None, metavar="N", help="timed runs per measurement (50)"
    )
    return parser


def _choices(option: str, text: str, allowed: Sequence[str]) -> tuple[str, ...]:
    items = tuple(dict.fromkeys(part.strip() for part in text.split(",")))
    bad = [item for item in items if item not in allowed]
    if not items or bad:
        raise UsageError(f"{option}: {bad[0] if bad else text!r} is not one of {','.join(allowed)}")
    return items


def _tokens(text: str) -> tuple[int, ...]:
    values = []
    for part in text.split(","):
        part = part.strip()
        if not (part.isascii() and part.isdigit()) or int(part) < 1:
            raise UsageError(f"--tokens: {part!r} is not a whole number >= 1")
        values.append(int(part))
    return tuple(sorted(set(values)))


def settings(args: argparse.Namespace) -> Settings:
    """Check the parsed arguments and fill in the defaults of a full or ``--quick`` sweep."""
    base = QUICK if args.quick else FULL
    max_size = base["max_size"]
    if args.max_size is not None:
        try:
            max_size = parse_size(args.max_size)
        except UnitError as err:
            raise UsageError(f"--max-size: {err}") from None
        if max_size < 8:
            raise UsageError(f"--max-size: {args.max_size!r} is below 8 bytes")
    return Settings(
        parts=_choices("--only", args.only, PARTS),
        models=_choices("--models", args.models, MODELS),
        tokens=_tokens(args.tokens) if args.tokens is not None else base["tokens"],
        dtypes=_choices("--dtypes", args.dtypes, DTYPE_CHOICES),
        experts=args.experts,
        max_size=max_size,
        warmup=args.warmup if args.warmup is not None else base["warmup"],
        iters=args.iters if args.iters is not None else base["iters"],
        quick=args.quick,
    )


def no_cuda_reason() -> str | None:
    """Why no CUDA GPU can be measured here (torch missing or no device visible), or None."""
    try:
        import torch
    except ImportError:
        return "torch is not installed"
    if not torch.cuda.is_available():
        return "torch.cuda.is_available() is False"
    return None


def check_out(out: Path, force: bool) -> None:
    """Refuse an ``--out`` that is a file or cannot be written, or that holds results unless ``force``."""
    check_output_dir(out)  # a file, a file as parent, a read-only place
    held = [name for name in RESULT_FILES if (out / name).exists()]
    if held and not force:
        raise UsageError(
            f"--out {out}: already holds results ({', '.join(held)}); "
            "use --force to overwrite (or another --out)"
        )


def _prepare_out(out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    for name in RESULT_FILES:  # stale results of an earlier run (only reached with --force)
        (out / name).unlink(missing_ok=True)


def _write_text(path: Path, text: str) -> None:
    write_atomic(path, lambda tmp: tmp.write_text(text))


def _write_csv(path: Path, frame: Any) -> None:
    write_atomic(path, lambda tmp: frame.to_csv(tmp, index=False, float_format="%.4f"))


def _log(message: str) -> None:
    print(message, flush=True)


# ----------------------------------------------------------------------------------------------
# the measurements (CUDA present)


def _distributed_env() -> tuple[int, int, int]:
    """(rank, world size, local rank) from torchrun's environment; (0, 1, 0) outside torchrun."""
    values = []
    for name, default in (("RANK", "0"), ("WORLD_SIZE", "1"), ("LOCAL_RANK", "0")):
        text = os.environ.get(name, default)
        if not (text.isascii() and text.isdigit()):
            raise UsageError(f"environment variable {name}={text!r} is not a whole number")
        values.append(int(text))
    return values[0], values[1], values[2]


def _nccl_part(out: Path, plan: Settings, device: Any, rank: int, world: int, record: dict[str, Any]) -> None:
    import torch.distributed as dist

    from calibration import microbench as mb
    from calibration.nccl_log import format_nccl_log

    lines: list[Any] = [None] * world
    dist.all_gather_object(lines, mb.rank_line(rank, device))
    sizes = mb.powers_of_two(8, plan.max_size)
    header = {
        "nThread": "1",
        "nGpus": "1",
        "minBytes": "8",
        "maxBytes": str(plan.max_size),
        "step": "2(factor)",
        "warmup iters": str(plan.warmup),
        "iters": str(plan.iters),
        "agg iters": "1",
        "validation": "1",
        "graph": "0",
        "source": "moesim microbench (torch.distributed, nccl backend; time = mean over ranks)",
    }
    if mb.nccl_version():
        header["NCCL version"] = str(mb.nccl_version())
    for op in COLLECTIVES:
        start = time.perf_counter()
        rows = mb.collective_sweep(op, sizes, device=device, warmup=plan.warmup, iters=plan.iters)
        if rank == 0:
            path = out / f"nccl_{op}.txt"
            _write_text(path, format_nccl_log(op, rows, nranks=world, header=header, rank_lines=lines))
            record["files"].append(path.name)
            _log(
                f"nccl {op}: {len(rows)} rows on {world} ranks "
                f"in {time.perf_counter() - start:.1f} s -> {path}"
            )


def _gemm_part(out: Path, plan: Settings, device: Any, record: dict[str, Any]) -> None:
    from calibration import microbench as mb

    start = time.perf_counter()
    shapes = mb.expert_shapes(plan.models)
    grouped = f" and grouped over {plan.experts} experts" if plan.experts else ""
    _log(
        f"gemm: {len(shapes)} shapes x {len(plan.tokens)} token counts x {','.join(plan.dtypes)}{grouped} "
        f"on {device}"
    )
    sweep = mb.gemm_sweep(
        shapes,
        plan.tokens,
        device=device,
        dtypes=plan.dtypes,
        experts=plan.experts,
        warmup=plan.warmup,
        iters=plan.iters,
    )
    path = out / "gemm.csv"
    _write_csv(path, sweep.rows)
    fp8, why = mb.fp8_support(device)
    record["gemm"] = {
        "shapes_nk": [list(s) for s in shapes],
        "fp8_supported": fp8,
        "fp8_reason": why,
        "skipped": sweep.skipped,
        "notes": sweep.notes,
        "l2_flush_bytes": mb.L2_FLUSH_BYTES,
        "experts": plan.experts,
        "timing": "median of iters CUDA-event timings, L2 flushed before each",
        "grouped_gemm_rows": "m = tokens per expert, n = experts x expert n, k = expert k, "
        "time_us = the whole grouped call",
    }
    record["files"].append(path.name)
    _log(
        f"gemm: {len(sweep.rows)} timings, {len(sweep.skipped)} skipped, "
        f"in {time.perf_counter() - start:.1f} s -> {path}"
    )


def _copy_part(out: Path, plan: Settings, device: Any, record: dict[str, Any]) -> None:
    import torch

    from calibration import microbench as mb

    start = time.perf_counter()
    others = [i for i in range(torch.cuda.device_count()) if i != device.index]
    pairs = [(device, device)] + [(device, torch.device("cuda", i)) for i in others]
    sizes = mb.powers_of_two(4096, plan.max_size, 4 if plan.quick else 2)
    rows = mb.copy_sweep(pairs, sizes, warmup=plan.warmup, iters=plan.iters)
    path = out / "copy.csv"
    _write_csv(path, rows)
    record["copy"] = {"pairs": [f"{a}->{b}" for a, b in pairs], "timing": "mean of iters back-to-back copies"}
    record["files"].append(path.name)
    _log(
        f"copy: {len(rows)} timings over {len(pairs)} device pairs "
        f"in {time.perf_counter() - start:.1f} s -> {path}"
    )


def _measure(args: argparse.Namespace, plan: Settings, argv: Sequence[str], device: Any = None) -> int:
    """Run the measurements and write DIR (rank 0); ``device`` overrides ``cuda:LOCAL_RANK`` (tests)."""
    import torch
    import torch.distributed as dist

    rank, world, local = _distributed_env()
    if device is None:
        if local >= torch.cuda.device_count():
            raise _RankError(
                f"rank {rank}: LOCAL_RANK {local} but only {torch.cuda.device_count()} GPUs are visible"
            )
        device = torch.device("cuda", local)
        torch.cuda.set_device(device)
    refusal = None
    if rank == 0:
        try:
            check_out(args.out, args.force)
            _prepare_out(args.out)
        except UsageError as err:
            refusal = err
        except OSError as err:
            refusal = UsageError(
                f"--out {args.out}: cannot create it ({err.strerror or err}; give a writable path)"
            )
    distributed = world >= 2
    if distributed:
        try:
            dist.init_process_group("nccl", device_id=device)
        except TypeError:  # torch < 2.3 has no device_id
            dist.init_process_group("nccl")
        flag = torch.tensor([1 if refusal else 0], device=device)
        dist.broadcast(flag, src=0)
        if flag.item():
            dist.destroy_process_group()
            if rank == 0:
                raise refusal  # type: ignore[misc]
            return 2
    elif refusal is not None:
        raise refusal
    record: dict[str, Any] = {"files": []}
    started = time.perf_counter()
    try:
        if distributed and "nccl" in plan.parts:
            _nccl_part(args.out, plan, device, rank, world, record)
    finally:
        if distributed:
            dist.destroy_process_group()
    if rank != 0:
        return 0
    if not distributed and "nccl" in plan.parts:
        record["nccl_skipped"] = "not under torchrun with WORLD_SIZE >= 2"
        _log(
            "nccl: skipped (run under 'torchrun --nproc_per_node=N -m experiments.microbench_command' "
            "with N >= 2)"
        )
    if "gemm" in plan.parts:
        _gemm_part(args.out, plan, device, record)
    if "copy" in plan.parts:
        _copy_part(args.out, plan, device, record)
    from calibration.microbench import system_info

    system = {
        **system_info(),
        "command": ["moesim", "microbench", *argv],
        "world_size": world,
        "device": str(device),
        "sweep": asdict(plan),
        **record,
        "elapsed_s": round(time.perf_counter() - started, 1),
    }
    system["files"].append("system.json")
    path = args.out / "system.json"
    _write_text(path, json.dumps(system, indent=2) + "\n")
    _log(f"wrote {path}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """``moesim microbench``: measure this GPU machine; returns the exit status (2: bad input or no GPU)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    talk = os.environ.get("RANK", "0") == "0"
    try:
        args = _parser().parse_args(argv)
        plan = settings(args)
        if os.environ.get("WORLD_SIZE", "1") in ("0", "1"):  # under torchrun rank 0 checks, in _measure
            check_out(args.out, args.force)
        reason = no_cuda_reason()
        if reason is not None:
            raise UsageError(f"no CUDA GPU is visible ({reason}); run it on a GPU machine")
        return _measure(args, plan, argv)
    except SystemExit as done:  # --help
        return help_status(done)
    except UsageError as err:
        if talk or isinstance(err, _RankError):
            fail(err)
        return 2


if __name__ == "__main__":
    sys.exit(main())
