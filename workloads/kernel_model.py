"""How long a GPU takes to run its experts: a roofline model of the expert feed-forward GEMMs.

An expert is a gated MLP (SwiGLU, as in Mixtral, Qwen-MoE, DeepSeek-MoE): for ``t`` tokens of
width ``hidden`` and an expert width ``ffn``, three GEMMs (gate and up ``[t, hidden] x [hidden,
ffn]``, down ``[t, ffn] x [ffn, hidden]``) do ``6 * t * hidden * ffn`` FLOPs and move at least
the weights ``3 * hidden * ffn`` plus the activations ``t * (2 * hidden + 3 * ffn)`` elements.
The roofline time is ``max(flops / peak, bytes / bandwidth) / efficiency``; a grouped GEMM over a
GPU's experts costs the sum over its experts plus one launch overhead. An expert with no token
costs nothing.

Peak numbers are the vendors' dense (no sparsity) datasheet figures per GPU; ``efficiency`` is
the fraction of the roofline a real kernel reaches (calibrate it against kernel timings).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class GPUModel:
    """Peak compute (FLOP/s by dtype) and memory bandwidth (bytes/s) of one GPU kind."""

    name: str
    flops: dict[str, float]
    memory_bandwidth: float


GPUS = {
    # NVIDIA datasheets, dense tensor-core throughput, SXM parts.
    "h100": GPUModel("H100 SXM", {"bf16": 989e12, "fp16": 989e12, "fp8": 1979e12}, 3.35e12),
    "h800": GPUModel("H800 SXM", {"bf16": 989e12, "fp16": 989e12, "fp8": 1979e12}, 3.35e12),
    "h200": GPUModel("H200 SXM", {"bf16": 989e12, "fp16": 989e12, "fp8": 1979e12}, 4.8e12),
    "a100": GPUModel("A100 SXM 80GB", {"bf16": 312e12, "fp16": 312e12}, 2.039e12),
    "b200": GPUModel("B200", {"bf16": 2250e12, "fp16": 2250e12, "fp8": 4500e12}, 8.0e12),
}


@dataclass(frozen=True)
class RooflineGEMM:
    """Expert compute time from the roofline.

    Attributes:
        gpu: the GPU kind.
        dtype: the GEMM input type (``bf16``, ``fp16``, ``fp8``).
        bytes_per_element: bytes of one weight/activation element for the memory term.
        efficiency: fraction of the roofline reached (0 < efficiency <= 1).
        launch: fixed cost of one grouped-GEMM launch, seconds.
    """

    gpu: GPUModel
    dtype: str = "bf16"
    bytes_per_element: int = 2
    efficiency: float = 0.7
    launch: float = 5e-6

    def __post_init__(self) -> None:
        if self.dtype not in self.gpu.flops:
            raise ValueError(f'dtype "{self.dtype}" is not supported on {self.gpu.name} (try bf16)')
        if not 0 < self.efficiency <= 1:
            raise ValueError(f"efficiency must be in (0, 1], got {self.efficiency}")

    def expert_time(self, tokens: np.ndarray, hidden: int, ffn: int) -> np.ndarray:
        """Seconds for one expert to process ``tokens`` tokens (array in, array out; 0 tokens = 0 s)."""
        t = np.asarray(tokens, dtype=np.float64)
        flops = 6.0 * t * hidden * ffn
        moved = (3.0 * hidden * ffn + t * (2.0 * hidden + 3.0 * ffn)) * self.bytes_per_element
        roof = np.maximum(flops / self.gpu.flops[self.dtype], moved / self.gpu.memory_bandwidth)
        return np.where(t > 0, roof / self.efficiency, 0.0)

    def gpu_time(self, tokens_per_expert: np.ndarray, hidden: int, ffn: int) -> float:
        """Seconds for one GPU to run all its experts (a grouped GEMM); 0 when it got no token."""
        times = self.expert_time(tokens_per_expert, hidden, ffn)
        return float(times.sum() + (self.launch if np.any(np.asarray(tokens_per_expert) > 0) else 0.0))
