"""Writes the small Kineto trace fixtures of ``tests/data/traces/`` (synthetic, not measured).

``python tests/trace_fixtures.py`` rewrites them; ``test_replay_nccl.py`` checks that the files in the
repository are what this script writes. Times in the events are µs, as in a real trace.

- ``launch_bound.json``: one GPU whose kernels each start 5 µs after their launch call ends, the
  CPU launching one every 50 µs: the GPU is busy about a fifth of the time.
- ``gpu_bound.json``: the same kernels, all launched up front, running back to back.
- ``ranks4/``: a 4-rank job, one file per rank, named as HolisticTraceAnalysis users name them
  (``worker-a.json`` carries its rank only in ``distributedInfo``; ``trace_rank2.json`` and
  ``rank-3.json.gz`` only in the name). Rank r: ``gemm_fwd`` (100 + 20 r µs) on stream 7, an NCCL
  ring/LL all-reduce of 4 MiB on stream 20 (process group ``0``), ``gemm_bwd`` (200 - 30 r µs) on
  7, an NCCL all-to-all of (r + 1) · 128 KiB on 20, ``optimizer`` (50 + 10 r µs) on 7, each
  stream switch guarded by a ``cudaStreamWaitEvent``.
- ``hta_nccl_kernels.json`` is an excerpt of a real trace, cut by :func:`hta_excerpt` (see
  ``tests/data/README.md``); it is not rewritten unless its source is given.
"""

from __future__ import annotations

import gzip
import json
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent / "data" / "traces"
T0 = 5_000_000.0  # absolute µs of the first GPU op
ALL_REDUCE = "ncclDevKernel_AllReduce_Sum_f32_RING_LL(ncclDevKernelArgsStorage<4096ul>)"
ALL_TO_ALL = "ncclDevKernel_SendRecv(ncclDevKernelArgsStorage<4096ul>)"


def runtime(name: str, ts: float, dur: float, corr: int) -> dict:
    """A CUDA runtime call on the main CPU thread (µs)."""
    return {"ph": "X", "cat": "cuda_runtime", "name": name, "pid": 100, "tid": 100, "ts": T0 + ts,
            "dur": dur, "args": {"correlation": corr, "cbid": 211}}  # fmt: skip


def kernel(name: str, stream: int, ts: float, dur: float, corr: int, device: int = 0, **args: object) -> dict:
    """A GPU kernel event (µs)."""
    return {"ph": "X", "cat": "kernel", "name": name, "pid": device, "tid": stream, "ts": T0 + ts, "dur": dur,
            "args": {"device": device, "stream": stream, "correlation": corr, **args}}  # fmt: skip


def launch_trace(bound: bool) -> dict:
    """``launch_bound.json`` (``bound``) or ``gpu_bound.json``: 20 kernels of 10 µs on stream 7 and
    two NCCL all-reduces of 1 MiB on stream 20."""
    events: list[dict] = []
    gpu_free = 0.0
    for i in range(22):
        nccl = i in (7, 15)
        name = ALL_REDUCE if nccl else f"elementwise_kernel_{i}"
        if bound:
            call, start = 50.0 * i, 50.0 * i + 5.0 + 5.0  # 5 µs call, then 5 µs to start
        else:
            call, start = -200.0 + 5.0 * i, gpu_free
        dur = 30.0 if nccl else 10.0
        meta = {}
        if nccl:
            meta = {"Collective name": "allreduce", "In msg nelems": 262144, "Out msg nelems": 262144,
                    "dtype": "Float", "Process Group Name": "0", "Process Group Ranks": "[0, 1]"}  # fmt: skip
        events.append(runtime("cudaLaunchKernel", call, 5.0, i + 1))
        events.append(kernel(name, 20 if nccl else 7, start, dur, i + 1, **meta))
        gpu_free = start + dur + 1.0
    return {"schemaVersion": 1, "distributedInfo": {"backend": "nccl", "rank": 0, "world_size": 2},
            "traceEvents": events}  # fmt: skip


RANK_FILES = ("worker-a.json", "rank_1.json", "trace_rank2.json", "rank-3.json.gz")


def rank_trace(rank: int, ranks: int = 4) -> dict:
    """Rank ``rank``'s trace of the ``ranks4/`` job (see the module docstring)."""
    fwd, bwd, opt = 100.0 + 20 * rank, 200.0 - 30 * rank, 50.0 + 10 * rank
    slowest_fwd = 100.0 + 20 * (ranks - 1)
    ar_end = slowest_fwd + 40.0
    a2a_start = max(ar_end + 200.0 - 30 * r for r in range(ranks))
    a2a_end = a2a_start + 25.0
    group = {"Process Group Name": "0", "Process Group Description": "default_pg",
             "Process Group Ranks": str(list(range(ranks))), "Group size": ranks}  # fmt: skip
    ar = {"Collective name": "allreduce", "In msg nelems": 1 << 20, "Out msg nelems": 1 << 20,
          "dtype": "Float", **group}  # fmt: skip
    nelems = (rank + 1) * 65536
    a2a = {"Collective name": "all_to_all", "In msg nelems": nelems, "Out msg nelems": nelems,
           "dtype": "BFloat16", **group}  # fmt: skip
    events = [
        runtime("cudaLaunchKernel", -100.0, 4.0, 1),
        kernel("gemm_fwd", 7, 0.0, fwd, 1, rank),
        runtime("cudaStreamWaitEvent", -95.0, 1.0, 2),
        runtime("cudaLaunchKernel", -94.0, 4.0, 3),
        kernel(ALL_REDUCE, 20, fwd, ar_end - fwd, 3, rank, **ar),
        runtime("cudaStreamWaitEvent", -89.0, 1.0, 4),
        runtime("cudaLaunchKernel", -88.0, 4.0, 5),
        kernel("gemm_bwd", 7, ar_end, bwd, 5, rank),
        runtime("cudaStreamWaitEvent", -83.0, 1.0, 6),
        runtime("cudaLaunchKernel", -82.0, 4.0, 7),
        kernel(ALL_TO_ALL, 20, ar_end + bwd, a2a_end - ar_end - bwd, 7, rank, **a2a),
        runtime("cudaStreamWaitEvent", -77.0, 1.0, 8),
        runtime("cudaLaunchKernel", -76.0, 4.0, 9),
        kernel("optimizer", 7, a2a_end, opt, 9, rank),
    ]
    data: dict = {"schemaVersion": 1, "traceEvents": events}
    if RANK_FILES[rank] in ("worker-a.json", "rank_1.json"):  # the others carry the rank in the name only
        data["distributedInfo"] = {"backend": "nccl", "rank": rank, "world_size": ranks}
    return data


def encode(data: dict, name: str) -> bytes:
    """The bytes of a fixture file: compact JSON, gzipped (with no time stamp) for ``.gz`` names."""
    raw = (json.dumps(data, separators=(",", ":")) + "\n").encode()
    return gzip.compress(raw, mtime=0) if name.endswith(".gz") else raw


def fixtures() -> dict[str, bytes]:
    """Relative path under ``tests/data/traces/`` -> file bytes, for every synthetic fixture."""
    out = {
        "launch_bound.json": encode(launch_trace(True), "launch_bound.json"),
        "gpu_bound.json": encode(launch_trace(False), "gpu_bound.json"),
    }
    for rank, name in enumerate(RANK_FILES):
        out[f"ranks4/{name}"] = encode(rank_trace(rank), name)
    return out


def hta_excerpt(source: Path) -> dict:
    """The NCCL kernels of a HolisticTraceAnalysis trace with the runtime calls that launched them,
    and its ``distributedInfo``; every other event is dropped."""
    data = json.loads(gzip.decompress(source.read_bytes()))
    events = data["traceEvents"]
    nccl = [e for e in events if e.get("cat") == "kernel" and e["name"].startswith("nccl")]
    corrs = {e["args"]["correlation"] for e in nccl}
    calls = [e for e in events if e.get("cat") == "cuda_runtime" and e["args"].get("correlation") in corrs]
    return {"schemaVersion": data.get("schemaVersion", 1), "distributedInfo": data["distributedInfo"],
            "traceEvents": calls + nccl}  # fmt: skip


def main(argv: list[str]) -> int:
    """Write the fixtures; with an argument, also cut ``hta_nccl_kernels.json`` from that trace."""
    for rel, blob in fixtures().items():
        path = HERE / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(blob)
    if argv:
        (HERE / "hta_nccl_kernels.json").write_bytes(encode(hta_excerpt(Path(argv[0])), "x.json"))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
