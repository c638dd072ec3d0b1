"""Shared helpers for the simulator tests: small fabrics and one-call simulation."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from simulator.engine import SimResult, simulate
from simulator.ops import Schedule
from simulator.transport import parse_transport
from topologies.compiled import CompiledFabric, compile_fabric
from topologies.leaf_spine import LeafSpine
from workloads.collectives import collective_programs

DEFAULTS = dict(
    leaves=2,
    spines=2,
    hosts_per_leaf=1,
    gpus_per_host=1,
    nic_bandwidth=100.0,
    uplink_bandwidth=100.0,
    nvlink_bandwidth=1e6,
    link_latency=0.0,
    message_latency=0.0,
    nvlink_message_latency=0.0,
)


def make_spec(**overrides: object) -> LeafSpine:
    """A small leaf-spine fabric with zero latencies unless ``overrides`` say otherwise."""
    return LeafSpine(**{**DEFAULTS, **overrides})


def run_schedule(
    spec: LeafSpine | CompiledFabric, schedule: Schedule, transport: str = "ecmp", seed: int = 0
) -> SimResult:
    """Simulate the one collective ``schedule`` on ``spec`` under ``transport``."""
    fabric = spec if isinstance(spec, CompiledFabric) else compile_fabric(spec)
    return simulate(fabric, collective_programs(schedule), parse_transport(transport), seed)


def one_step(spec: LeafSpine, src: np.ndarray, dst: np.ndarray, nbytes: float | np.ndarray) -> Schedule:
    """A one-step schedule: every message in step 0, every GPU a member."""
    src = np.asarray(src, dtype=np.int64)
    dst = np.asarray(dst, dtype=np.int64)
    return Schedule(
        ranks=np.arange(spec.gpus, dtype=np.int64),
        src=src,
        dst=dst,
        nbytes=np.broadcast_to(np.asarray(nbytes, dtype=np.float64), src.shape).copy(),
        step=np.zeros(src.shape[0], dtype=np.int64),
        n_steps=1,
        name="one_step",
    )


DATA = Path(__file__).resolve().parent / "data"
"""The repository's own fixtures (``tests/data``; its README says where each came from)."""

DEEPSEEK = DATA / "traces" / "deepseek_profile_train.json.gz"
"""The DeepSeek-V3 H800 profiler trace (``../shared/data/deepseek_profile_train.json``, gzipped)."""

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
"""The project's shared reference data (``../shared/data`` beside the checkout, as in CI)."""


def shared_data(name: str) -> Path:
    """Path of a file in ``../shared/data``; skip the test when it is missing, except under CI
    (``CI=true``), where the data is always beside the checkout and a skip would hide the test."""
    path = SHARED_DATA / name
    if not path.exists():
        if os.environ.get("CI") == "true":
            pytest.fail(f"{path} is missing: CI runs with ../shared beside the checkout")
        pytest.skip(f"{path} not available (needs ../shared/data beside the checkout)")
    return path


def balanced_assignments(items: int, groups: int) -> np.ndarray:
    """Every item -> group map with ``items / groups`` items in each group, one row each.

    8 experts on 4 GPUs: 2,520 rows; used to brute-force placements and partition bounds.
    """
    per_group = items // groups
    out: list[list[int]] = []

    def extend(prefix: list[int], counts: list[int]) -> None:
        if len(prefix) == items:
            out.append(prefix.copy())
            return
        for g in range(groups):
            if counts[g] < per_group:
                counts[g] += 1
                prefix.append(g)
                extend(prefix, counts)
                prefix.pop()
                counts[g] -= 1

    extend([], [0] * groups)
    return np.array(out)
