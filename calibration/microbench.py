"""GPU micro-benchmarks that calibrate the simulator: expert GEMMs, device copies, NCCL collectives.

Three measurements, each returning a :class:`pandas.DataFrame` (no file I/O here; the command in
:mod:`experiments.microbench_command` writes them):

* :func:`gemm_sweep` — GEMMs at MoE expert shapes. A weight is stored ``[n, k]`` as in
  ``nn.Linear`` and a GEMM computes ``[m, k] x [k, n]`` (``x @ W.T``). Rows ``op,m,n,k,dtype,time_us``
  as read by :class:`workloads.kernel_model.MeasuredGEMM`:

  - ``gemm``: one GEMM of ``m`` tokens; ``time_us`` is the median kernel time in microseconds.
  - ``grouped_gemm``: one grouped GEMM over ``experts`` experts of ``m`` tokens each, expert weights
    ``[n, k]``, reported as the equivalent single GEMM ``[m, k] x [k, experts * n]`` (same FLOPs,
    the experts' outputs side by side): the row's ``n`` is ``experts * n`` and ``time_us`` the whole
    grouped call (one launch). Its ``(n, k)`` is thus not an expert shape, so
    :class:`~workloads.kernel_model.MeasuredGEMM` (which looks GEMMs up by ``(n, k, dtype)``) never
    mixes it into per-expert lookups, and a roofline fit sees the right FLOPs and one launch (a row
    whose ``(n, k, dtype)`` would equal a ``gemm`` row's is dropped and noted). ``experts`` is
    recorded in system.json. It uses ``torch._grouped_mm`` where the device supports it, otherwise
    ``torch.bmm``.

  ``dtype`` is ``bf16``, ``fp16``, ``fp32`` or ``fp8`` (float8_e4m3fn inputs with per-tensor scales
  for ``gemm`` and row-wise scales for ``grouped_gemm``, bf16 output; quantisation not timed).
* :func:`copy_sweep` — ``dst.copy_(src)`` between two devices (or within one): rows
  ``src,dst,bytes,time_us,gbps`` with ``time_us`` the mean of back-to-back copies and ``gbps`` =
  bytes / time in 10^9 bytes per second (a same-device copy reads and writes ``bytes`` each).
* :func:`collective_sweep` — ``all_reduce``, ``all_gather``, ``all_to_all`` over the initialised
  ``torch.distributed`` group, as nccl-tests measures them (float32, out-of-place and in-place,
  mean of back-to-back calls averaged over ranks); rows in the layout of
  :func:`calibration.nccl_log.format_nccl_log`.

On CUDA, times come from CUDA events; elsewhere (tests on CPU, the gloo backend) from
``time.perf_counter``. GEMM timings flush the L2 cache before every iteration (a real layer does
not find its expert weights in L2).
"""

from __future__ import annotations

import contextlib
import statistics
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field

import pandas as pd
import torch

from calibration.nccl_log import ROW_COLUMNS, bus_factor

GEMM_COLUMNS = ["op", "m", "n", "k", "dtype", "time_us"]
COPY_COLUMNS = ["src", "dst", "bytes", "time_us", "gbps"]
NCCL_COLUMNS = list(ROW_COLUMNS)
COLLECTIVES = ("all_reduce", "all_gather", "all_to_all")

# Expert gated-MLP widths (hidden, ffn = moe_intermediate_size) from the models' configs.
MODELS: dict[str, tuple[int, int]] = {
    "mixtral-8x7b": (4096, 14336),
    "deepseek-v3": (7168, 2048),
    "qwen3-30b-a3b": (2048, 768),
    "olmoe": (2048, 1024),
}

DTYPES = {"bf16": "bfloat16", "fp16": "float16", "fp32": "float32", "fp8": "float8_e4m3fn"}
_ALIASES = {torch_name: short for short, torch_name in DTYPES.items()}
L2_FLUSH_BYTES = 256 * 2**20


def powers_of_two(low: int, high: int, factor: int = 2) -> list[int]:
    """``low, low * factor, ...`` up to and including ``high`` (sizes in bytes or token counts)."""
    if low < 1 or factor < 2:
        raise ValueError(f"need low >= 1 and factor >= 2, got {low} and {factor}")
    values = []
    value = low
    while value <= high:
        values.append(value)
        value *= factor
    return values


def expert_shapes(models: Iterable[str]) -> list[tuple[int, int]]:
    """The distinct ``(n, k)`` weight shapes of the experts of ``models`` (keys of :data:`MODELS`).

    Per model: gate and up ``(ffn, hidden)`` (``[t, hidden] x [hidden, ffn]``) and down ``(hidden,
    ffn)``.
    """
    shapes: list[tuple[int, int]] = []
    for name in models:
        hidden, ffn = MODELS[name]
        for shape in ((ffn, hidden), (hidden, ffn)):
            if shape not in shapes:
                shapes.append(shape)
    return shapes


def canonical_dtype(name: str) -> str:
    """``bf16``/``fp16``/``fp32``/``fp8`` from that or a torch name (``bfloat16``, ``float32``...)."""
    if name in DTYPES:
        return name
    if name in _ALIASES:
        return _ALIASES[name]
    raise ValueError(f'dtype "{name}" is not one of {", ".join(DTYPES)}')


def fp8_support(device: torch.device | str) -> tuple[bool, str]:
    """Whether fp8 GEMMs (``torch._scaled_mm`` on float8_e4m3fn) can run on ``device``, and why."""
    device = torch.device(device)
    if not hasattr(torch, "float8_e4m3fn") or not hasattr(torch, "_scaled_mm"):
        return False, f"torch {torch.__version__} has no float8_e4m3fn/_scaled_mm"
    if device.type != "cuda":
        return True, f"{device.type}: torch._scaled_mm"
    major, minor = torch.cuda.get_device_capability(device)
    if (major, minor) < (8, 9):
        return False, f"compute capability {major}.{minor} < 8.9"
    return True, f"compute capability {major}.{minor}"


# ----------------------------------------------------------------------------------------------
# timing


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def median_time_us(
    fn: Callable[[], object],
    device: torch.device | str,
    *,
    warmup: int,
    iters: int,
    before: Callable[[], object] | None = None,
) -> float:
    """Median over ``iters`` runs of ``fn`` in microseconds, after ``warmup`` untimed runs.

    ``before`` (e.g. an L2 flush) runs before every timed run, outside the timed interval.
    """
    device = torch.device(device)
    for _ in range(warmup):
        fn()
    _synchronize(device)
    times: list[float] = []
    if device.type == "cuda":
        events = [
            (torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)) for _ in range(iters)
        ]
        for start, end in events:
            if before is not None:
                before()
            start.record()
            fn()
            end.record()
        torch.cuda.synchronize(device)
        times = [start.elapsed_time(end) * 1e3 for start, end in events]
    else:
        for _ in range(iters):
            if before is not None:
                before()
            start_s = time.perf_counter()
            fn()
            times.append((time.perf_counter() - start_s) * 1e6)
    return float(statistics.median(times))


def mean_time_us(fn: Callable[[], object], device: torch.device | str, *, warmup: int, iters: int) -> float:
    """Mean time of one of ``iters`` back-to-back runs of ``fn`` in microseconds (as nccl-tests)."""
    device = torch.device(device)
    for _ in range(warmup):
        fn()
    _synchronize(device)
    if device.type == "cuda":
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        for _ in range(iters):
            fn()
        end.record()
        torch.cuda.synchronize(device)
        return start.elapsed_time(end) * 1e3 / iters
    start_s = time.perf_counter()
    for _ in range(iters):
        fn()
    return (time.perf_counter() - start_s) * 1e6 / iters


# ----------------------------------------------------------------------------------------------
# GEMMs


@dataclass
class GemmSweep:
    """GEMM timings (:data:`GEMM_COLUMNS`) and one note per skipped measurement or fallback."""

    rows: pd.DataFrame
    skipped: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def _random(shape: tuple[int, ...], dtype: str, device: torch.device) -> torch.Tensor:
    if dtype == "fp8":
        return torch.randn(shape, device=device, dtype=torch.bfloat16).to(torch.float8_e4m3fn)
    return torch.randn(shape, device=device, dtype=getattr(torch, DTYPES[dtype]))


def _gemm_call(m: int, n: int, k: int, dtype: str, device: torch.device) -> Callable[[], object]:
    a = _random((m, k), dtype, device)
    b = _random((n, k), dtype, device).t()  # [k, n], column-major: the nn.Linear weight layout
    if dtype == "fp8":
        one = torch.ones((), device=device, dtype=torch.float32)
        return lambda: torch._scaled_mm(a, b, scale_a=one, scale_b=one, out_dtype=torch.bfloat16)
    return lambda: torch.mm(a, b)


def _grouped_call(
    experts: int, m: int, n: int, k: int, dtype: str, device: torch.device
) -> tuple[Callable[[], object], str]:
    """A grouped GEMM over ``experts`` experts of ``m`` tokens each, and the implementation used."""
    a = _random((experts * m, k), dtype, device)
    b = _random((experts, n, k), dtype, device).transpose(-2, -1)  # [E, k, n], column-major
    offs = torch.arange(1, experts + 1, device=device, dtype=torch.int32) * m
    if dtype == "fp8":
        scale_a = torch.ones(experts * m, device=device, dtype=torch.float32)
        scale_b = torch.ones(experts, n, device=device, dtype=torch.float32)

        def fp8() -> object:
            return torch._scaled_grouped_mm(a, b, scale_a, scale_b, offs=offs, out_dtype=torch.bfloat16)

        fp8()  # raises where unsupported: no fallback for fp8
        return fp8, "torch._scaled_grouped_mm"
    if hasattr(torch, "_grouped_mm"):
        try:
            torch._grouped_mm(a, b, offs=offs)
            return (lambda: torch._grouped_mm(a, b, offs=offs)), "torch._grouped_mm"
        except (RuntimeError, NotImplementedError):
            pass
    a3 = a.view(experts, m, k)
    return (lambda: torch.bmm(a3, b)), "torch.bmm"


def _first_line(err: BaseException) -> str:
    text = str(err).strip().splitlines()
    return f"{type(err).__name__}: {text[0][:160] if text else ''}"


def gemm_sweep(
    shapes: Sequence[tuple[int, int]],
    tokens: Sequence[int],
    *,
    device: torch.device | str = "cuda",
    dtypes: Sequence[str] = ("bf16",),
    experts: int = 0,
    warmup: int = 10,
    iters: int = 50,
    flush_l2: bool = True,
    on_row: Callable[[dict[str, object]], None] | None = None,
) -> GemmSweep:
    """Time GEMMs ``[m, k] x [k, n]`` for every weight shape ``(n, k)``, ``m`` in ``tokens`` and dtype.

    With ``experts`` > 0 each shape is also timed as a grouped GEMM over that many experts (reported
    as ``[m, k] x [k, experts * n]``, the whole call; see the module docstring). An fp8 request on a
    device without fp8 support, and any measurement that fails (out of memory, unsupported op), is
    skipped and noted in ``skipped``; which grouped-GEMM implementation ran is noted in ``notes``.
    ``on_row`` is called with every row as it is measured (progress).
    """
    device = torch.device(device)
    wanted = [canonical_dtype(d) for d in dtypes]
    kinds = []
    skipped: list[str] = []
    for dtype in wanted:
        if dtype == "fp8":
            ok, why = fp8_support(device)
            if not ok:
                skipped.append(f"fp8: {why}")
                continue
        kinds.append(dtype)
    flush = None
    if flush_l2 and device.type == "cuda":
        scratch = torch.empty(L2_FLUSH_BYTES, dtype=torch.uint8, device=device)
        flush = scratch.zero_
    rows: list[dict[str, object]] = []
    impls: dict[str, str] = {}
    failures: dict[tuple[str, str, str], list[str]] = {}  # (op, dtype, error) -> shapes
    ops = [("gemm", 1)] + ([("grouped_gemm", experts)] if experts > 0 else [])
    for dtype in kinds:
        for n, k in shapes:
            for m in tokens:
                for op, count in ops:
                    if any(
                        o == op and d == dtype and e.startswith("NotImplementedError") for o, d, e in failures
                    ):
                        continue  # the op does not exist for this dtype on this device: say so once
                    try:
                        if op == "gemm":
                            call = _gemm_call(m, n, k, dtype, device)
                        else:
                            call, impls[dtype] = _grouped_call(count, m, n, k, dtype, device)
                        elapsed = median_time_us(call, device, warmup=warmup, iters=iters, before=flush)
                    except (RuntimeError, NotImplementedError, TypeError) as err:
                        failures.setdefault((op, dtype, _first_line(err)), []).append(f"m={m} n={n} k={k}")
                        continue
                    finally:
                        call = None  # free the operands before the next shape
                        if device.type == "cuda":
                            torch.cuda.empty_cache()
                    row = {"op": op, "m": m, "n": n * count, "k": k, "dtype": dtype, "time_us": elapsed}
                    rows.append(row)
                    if on_row is not None:
                        on_row(row)
    plain = {(r["n"], r["k"], r["dtype"]) for r in rows if r["op"] == "gemm"}
    clashes = [r for r in rows if r["op"] == "grouped_gemm" and (r["n"], r["k"], r["dtype"]) in plain]
    if clashes:
        rows = [r for r in rows if not any(r is c for c in clashes)]
        first = clashes[0]
        skipped.append(
            f"grouped_gemm ({len(clashes)} rows, first n={first['n']} k={first['k']} {first['dtype']}): "
            f"experts x n equals a gemm shape, dropped so that the table stays unambiguous"
        )
    for (op, dtype, error), where in failures.items():
        skipped.append(f"{op} {dtype} ({len(where)} shapes, first {where[0]}): {error}")
    notes = [f"grouped_gemm {dtype}: {impl}" for dtype, impl in impls.items()]
    return GemmSweep(pd.DataFrame(rows, columns=GEMM_COLUMNS), skipped, notes)


# ----------------------------------------------------------------------------------------------
# device-to-device copies


def copy_sweep(
    pairs: Sequence[tuple[torch.device | str, torch.device | str]],
    sizes: Sequence[int],
    *,
    warmup: int = 5,
    iters: int = 20,
) -> pd.DataFrame:
    """Time ``dst.copy_(src)`` of ``sizes`` bytes for every ``(src, dst)`` device pair (:data:`COPY_COLUMNS`).

    Timed on the source device (CUDA copies between devices run on the source's stream).
    """
    rows = []
    for src, dst in pairs:
        src_dev, dst_dev = torch.device(src), torch.device(dst)
        for size in sizes:
            a = torch.empty(size, dtype=torch.uint8, device=src_dev).fill_(1)
            b = torch.empty(size, dtype=torch.uint8, device=dst_dev)
            with torch.cuda.device(src_dev) if src_dev.type == "cuda" else contextlib.nullcontext():
                elapsed = mean_time_us(lambda a=a, b=b: b.copy_(a), src_dev, warmup=warmup, iters=iters)
            _synchronize(dst_dev)
            rows.append(
                {
                    "src": str(src_dev),
                    "dst": str(dst_dev),
                    "bytes": size,
                    "time_us": elapsed,
                    "gbps": size / elapsed / 1e3,
                }
            )
            del a, b
    return pd.DataFrame(rows, columns=COPY_COLUMNS)


# ----------------------------------------------------------------------------------------------
# collectives (torch.distributed)


def collective_counts(op: str, size: int, nranks: int, elem: int = 4) -> tuple[int, int]:
    """``(size, count)`` as nccl-tests reports them for a requested size in bytes.

    ``all_reduce``: ``size`` is each rank's buffer, ``count = size / elem``. ``all_gather`` and
    ``all_to_all``: ``size`` is the whole output (all_gather) or send buffer (all_to_all) and
    ``count`` the elements of one rank's part (all_gather) or one peer's part (all_to_all), rounded
    down to a multiple of 16 bytes. ``(0, 0)`` when the part rounds to nothing.
    """
    if op not in COLLECTIVES:
        raise ValueError(f'collective "{op}" is not one of {", ".join(COLLECTIVES)}')
    count = size // elem
    if op == "all_reduce":
        return count * elem, count
    part = (count // nranks) // max(1, 16 // elem) * max(1, 16 // elem)
    return part * nranks * elem, part


def collective_row(
    op: str, size: int, count: int, nranks: int, placement: str, time_us: float, wrong: int | str
) -> dict[str, object]:
    """One nccl-tests row: algbw = size / time (GB/s, 10^9 bytes/s), busbw = algbw × bus factor."""
    algbw = size / time_us / 1e3 if time_us > 0 else 0.0
    return {
        "size": size,
        "count": count,
        "type": "float",
        "redop": "sum" if op == "all_reduce" else "none",
        "root": -1,
        "placement": placement,
        "time_us": time_us,
        "algbw_gbps": algbw,
        "busbw_gbps": algbw * bus_factor(op, nranks),
        "wrong": wrong,
    }


def _buffers(
    op: str, count: int, rank: int, nranks: int, device: torch.device, in_place: bool
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(input, output, expected output) filled so that every element's result is known exactly.

    ``count`` as :func:`collective_counts`: per rank (all_reduce, all_gather) or per peer (all_to_all).
    """
    f32 = torch.float32
    if op == "all_reduce":
        data = torch.full((count,), float(rank + 1), dtype=f32, device=device)
        expected = torch.full((count,), float(nranks * (nranks + 1) // 2), dtype=f32, device=device)
        return data, (data if in_place else torch.empty_like(data)), expected
    chunks = torch.arange(nranks, dtype=f32, device=device).repeat_interleave(count)
    if op == "all_gather":
        out = torch.empty(count * nranks, dtype=f32, device=device)
        inp = (
            out[rank * count : (rank + 1) * count]
            if in_place
            else torch.empty(count, dtype=f32, device=device)
        )
        inp.fill_(float(rank + 1))
        return inp, out, chunks + 1
    inp = chunks + float(rank * nranks + 1)  # to peer j: rank * n + j + 1
    expected = chunks * nranks + float(rank + 1)  # from peer j: j * n + rank + 1
    return inp, (inp if in_place else torch.empty_like(inp)), expected


def _launcher(op: str, inp: torch.Tensor, out: torch.Tensor, group: object) -> Callable[[], object]:
    import torch.distributed as dist

    if op == "all_reduce":  # torch.distributed's all_reduce is in place: run it on the output buffer
        return lambda: dist.all_reduce(out, group=group)
    if op == "all_gather":
        gather = getattr(dist, "all_gather_single", None) or dist.all_gather_into_tensor  # renamed in 2.13
        return lambda: gather(out, inp, group=group)
    return lambda: dist.all_to_all_single(out, inp, group=group)


def collective_sweep(
    op: str,
    sizes: Sequence[int],
    *,
    device: torch.device | str,
    warmup: int = 5,
    iters: int = 20,
    group: object = None,
    on_row: Callable[[dict[str, object]], None] | None = None,
) -> pd.DataFrame:
    """Time collective ``op`` at each requested size (bytes), out of place then in place, on every rank.

    Every rank must call this with the same arguments; every rank returns the same table
    (:data:`NCCL_COLUMNS`): sizes and counts as :func:`collective_counts` (sizes that round to
    nothing, and repeats, are dropped), ``time_us`` the mean of ``iters`` back-to-back calls
    averaged over ranks, ``wrong`` the elements (summed over ranks) that differ from the exact
    result of one checked call before timing. torch.distributed's all_reduce has no out-of-place
    form, so the out-of-place all_reduce half runs in place on a separate output buffer.
    """
    import torch.distributed as dist

    device = torch.device(device)
    rank, nranks = dist.get_rank(group), dist.get_world_size(group)
    rows: list[dict[str, object]] = []
    seen: set[int] = set()
    for requested in sizes:
        size, count = collective_counts(op, requested, nranks)
        if count == 0 or size in seen:
            continue
        seen.add(size)
        for placement in ("out_of_place", "in_place"):
            inp, out, expected = _buffers(op, count, rank, nranks, device, placement == "in_place")
            if op == "all_reduce" and placement == "out_of_place":
                out.copy_(inp)
            call = _launcher(op, inp, out, group)
            call()
            wrong = torch.tensor([float((out != expected).sum().item())], dtype=torch.float64, device=device)
            checked = not (op == "all_to_all" and placement == "in_place")  # races, as in nccl-tests
            out.zero_()
            elapsed = mean_time_us(call, device, warmup=warmup, iters=iters)
            totals = torch.tensor([elapsed], dtype=torch.float64, device=device)
            dist.all_reduce(totals, group=group)
            dist.all_reduce(wrong, group=group)
            row = collective_row(
                op,
                size,
                count,
                nranks,
                placement,
                totals.item() / nranks,
                int(wrong.item()) if checked else "N/A",
            )
            rows.append(row)
            if on_row is not None:
                on_row(row)
            del inp, out, expected
    return pd.DataFrame(rows, columns=NCCL_COLUMNS)


# ----------------------------------------------------------------------------------------------
# the machine


def _driver_version() -> str | None:
    import subprocess

    try:
        done = subprocess.run(
            ["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
            capture_output=True,
            text=True,
            timeout=20,
            check=True,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    lines = done.stdout.strip().splitlines()
    return lines[0].strip() if lines else None


def nccl_version() -> str | None:
    """The NCCL version torch was built with (``2.21.5``), or None."""
    try:
        version = torch.cuda.nccl.version()
    except (AttributeError, RuntimeError):
        return None
    return ".".join(str(v) for v in version) if isinstance(version, tuple) else str(version)


def gpu_info(index: int) -> dict[str, object]:
    """Name, compute capability, memory (bytes), SM count and PCI bus of CUDA device ``index``."""
    props = torch.cuda.get_device_properties(index)
    return {
        "index": index,
        "name": props.name,
        "compute_capability": f"{props.major}.{props.minor}",
        "memory_bytes": int(props.total_memory),
        "multiprocessors": int(props.multi_processor_count),
        "pci_bus_id": getattr(props, "pci_bus_id", None),
    }


def system_info() -> dict[str, object]:
    """Hardware and software of this machine: GPUs, driver, CUDA, torch, NCCL, host, date (UTC)."""
    import datetime
    import platform
    import socket

    count = torch.cuda.device_count() if torch.cuda.is_available() else 0
    peer = {
        f"{i}->{j}": bool(torch.cuda.can_device_access_peer(i, j))
        for i in range(count)
        for j in range(count)
        if i != j
    }
    return {
        "hostname": socket.gethostname(),
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "nccl": nccl_version() if count else None,
        "driver": _driver_version() if count else None,
        "gpu_count": count,
        "gpus": [gpu_info(i) for i in range(count)],
        "peer_access": peer,
    }


def rank_line(rank: int, device: torch.device) -> str:
    """This rank's line of an nccl-tests header: pid, host, device index, PCI bus and name."""
    import os
    import socket

    if device.type == "cuda":
        index = device.index if device.index is not None else torch.cuda.current_device()
        info = gpu_info(index)
        bus, name = info["pci_bus_id"], info["name"]
    else:
        index, bus, name = 0, None, device.type
    where = f" [0x{int(bus):02x}]" if isinstance(bus, int) else ""
    return (
        f"#  Rank {rank:2d} Group  0 Pid {os.getpid():6d} on {socket.gethostname():>10s} "
        f"device {index:2d}{where} {name}"
    )
