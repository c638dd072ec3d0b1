"""Tests for GPU streams in the engine: ``(gpu, stream)`` program keys, Record/Wait events, overlap."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import make_spec

from simulator.engine import DeadlockError, simulate
from simulator.ops import Collective, Compute, Record, Wait
from simulator.transport import parse_transport
from topologies.compiled import compile_fabric
from workloads.collectives import all_to_all

ECMP = parse_transport("ecmp")


@pytest.fixture(scope="module")
def pair():
    """Two GPUs on two hosts (two leaves), 100 B/s everywhere, no latency."""
    return compile_fabric(make_spec())


def exchange(seconds: float) -> Collective:
    """An all-to-all between GPUs 0 and 1 taking ``seconds`` on ``pair`` (one 100 B/s hop each way)."""
    return Collective(all_to_all(np.arange(2), 2 * 100.0 * seconds), label="a2a")


def row(result, rank, stream, index):
    ops = result.ops
    hit = ops[(ops["rank"] == rank) & (ops["stream"] == stream) & (ops["index"] == index)]
    assert len(hit) == 1
    return hit.iloc[0]


def test_record_then_wait_orders_two_streams(pair) -> None:
    programs = {
        (0, "a"): [Compute(1.0), Record("e"), Compute(2.0)],
        (0, "b"): [Wait("e"), Compute(0.5), Wait("late"), Compute(0.25)],
        (0, "c"): [Compute(4.0), Record("late"), Wait("e"), Compute(1.0)],  # "e" long recorded: no wait
    }
    result = simulate(pair, programs, ECMP)
    assert row(result, 0, "b", 0)[["start", "end"]].tolist() == [0.0, 1.0]  # waited for "e"
    assert row(result, 0, "b", 1)[["start", "end"]].tolist() == [1.0, 1.5]
    assert row(result, 0, "b", 2)["end"] == 4.0  # waited for "late"
    assert row(result, 0, "b", 3)["end"] == 4.25
    assert row(result, 0, "c", 2)[["start", "end"]].tolist() == [4.0, 4.0]
    assert result.completion_time == 5.0
    assert row(result, 0, "a", 1)["label"] == "record"
    assert list(result.ops.columns) == ["rank", "stream", "index", "label", "start", "end"]
    assert len(result.ops) == 11


def test_record_before_wait_at_the_same_instant_and_twice(pair) -> None:
    programs = {
        (1, 0): [Compute(1.0), Record("x"), Record("x")],
        (1, 1): [Compute(1.0), Wait("x"), Compute(1.0)],
    }
    assert simulate(pair, programs, ECMP).completion_time == 2.0


@pytest.mark.parametrize(("comm", "compute", "expected"), [(1.0, 2.0, 2.5), (3.0, 2.0, 3.5)])
def test_collective_on_a_comm_stream_overlaps_compute(pair, comm: float, compute: float, expected) -> None:
    op = exchange(comm)
    programs = {}
    for gpu in (0, 1):
        programs[(gpu, "compute")] = [Compute(compute), Wait((gpu, "done")), Compute(0.5)]
        programs[(gpu, "comm")] = [op, Record((gpu, "done"))]
    result = simulate(pair, programs, ECMP)
    assert result.completion_time == pytest.approx(expected, rel=1e-12)  # max(comm, compute) + 0.5
    assert row(result, 1, "comm", 0)["end"] == pytest.approx(comm, rel=1e-12)
    serial = {gpu: [Compute(compute), exchange(comm), Compute(0.5)] for gpu in (0, 1)}
    serial[1][1] = serial[0][1]  # one shared collective object
    assert simulate(pair, serial, ECMP).completion_time == pytest.approx(comm + compute + 0.5, rel=1e-12)


def test_wait_for_an_event_never_recorded_is_a_deadlock(pair) -> None:
    programs = {(0, 7): [Compute(1.0), Record((0, "dep", 1))], (0, 27): [Wait((0, "dep", 2)), Compute(1.0)]}
    with pytest.raises(DeadlockError, match=r"programs \[\(0, 27\)\] never finished.*\(0, 'dep', 2\)"):
        simulate(pair, programs, ECMP)


def test_int_keys_unchanged(pair) -> None:
    op = exchange(1.0)
    result = simulate(pair, {1: [op, Compute(2.0)], 0: [Compute(0.5), op]}, ECMP)
    assert result.completion_time == pytest.approx(3.5, rel=1e-12)
    ops = result.ops
    assert ops["rank"].tolist() == [0, 0, 1, 1]
    assert ops["stream"].tolist() == [-1] * 4
    assert ops["index"].tolist() == [0, 1, 0, 1]
    assert ops["label"].tolist() == ["compute", "a2a", "a2a", "compute"]
    assert ops["end"].tolist() == pytest.approx([0.5, 1.5, 1.5, 3.5], rel=1e-12)
    with pytest.raises(DeadlockError, match=r"^ranks \[1\] never finished their programs"):
        simulate(pair, {0: [Compute(1.0)], 1: [exchange(1.0)]}, ECMP)


def test_mixed_keys_and_bad_keys(pair) -> None:
    op = exchange(1.0)
    result = simulate(pair, {0: [op], (1, "comm"): [op], (1, "compute"): [Compute(3.0)]}, ECMP)
    assert result.completion_time == pytest.approx(3.0)
    assert result.ops["stream"].tolist() == [-1, "comm", "compute"]
    with pytest.raises(ValueError, match="joins a2a a second time"):
        simulate(pair, {(0, 0): [op], (0, 1): [op], 1: [op]}, ECMP)
    with pytest.raises(TypeError, match="neither a GPU id"):
        simulate(pair, {"gpu0": [Compute(1.0)]}, ECMP)
