"""The synthetic trace generator: calibrated imbalance and affinity, drift, determinism, CLI."""

from __future__ import annotations

import math
import time
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from experiments.trace_commands import synth_main as main
from workloads import synthetic_trace
from workloads.routing_trace import (
    affinity,
    affinity_noise,
    batch_imbalance,
    expert_load,
    imbalance,
    load_trace,
    split_by_batch,
)
from workloads.synthetic_trace import _sample_ranks, synth_trace, zipf_popularity

SMALL = dict(experts=16, top_k=2, layers=3, tokens_per_gpu=1024, gpus=4)  # 4096 tokens, 512 per expert


def affinity_tolerance(target: float) -> float:
    return max(0.03, 0.05 * target)


def uniform_noise(experts: int, top_k: int, tokens: int) -> float:
    """Typical (max − mean)/mean of a uniform router: sqrt(2 ln E) standard deviations of a load."""
    return math.sqrt(2 * math.log(experts)) * math.sqrt((experts - top_k) / (tokens * top_k))


@pytest.mark.parametrize("shape", [SMALL, dict(experts=32, top_k=4, layers=2, tokens_per_gpu=512, gpus=8)])
@pytest.mark.parametrize("target", [0.5, 1.0, 2.0, 4.0])
def test_imbalance_target_met_in_every_layer(shape: dict, target: float) -> None:
    trace = synth_trace(**shape, imbalance=target, seed=1)
    assert np.abs(imbalance(trace) / target - 1).max() <= 0.05


def test_imbalance_near_the_maximum() -> None:
    most = SMALL["experts"] / SMALL["top_k"] - 1  # every token picks the busiest expert
    trace = synth_trace(**SMALL, imbalance=most)
    assert np.abs(imbalance(trace) / most - 1).max() <= 0.05


def test_zero_imbalance_is_uniform_up_to_sampling_noise() -> None:
    trace = synth_trace(**SMALL, imbalance=0.0)
    noise = uniform_noise(16, 2, trace.tokens)  # about 0.1 here
    assert (imbalance(trace) <= 2 * noise).all()
    assert "zipf exponent per layer [0.0, 0.0, 0.0]" in trace.notes


@pytest.mark.parametrize(
    ("kwargs", "fragment"),
    [
        (dict(imbalance=7.5), "unreachable"),  # above experts/top_k - 1 = 7
        (dict(imbalance=0.02), "below the sampling noise"),
        (dict(imbalance=1.0, zipf=1.0), "not both"),
        (dict(top_k=17), "top_k=17 > experts=16"),
        (dict(affinity=1.5), "affinity must be a number in [0, 1]"),
        (dict(drift=-0.1), "drift must be a number in [0, 1]"),
        (dict(batches=2000), "batches=2000 > tokens_per_gpu=1024"),
        (dict(seed=-1), "seed must be a whole number >= 0"),
        (dict(gpus=0), "gpus must be a whole number >= 1"),
        (dict(experts=1, top_k=1, affinity=0.5), "affinity > 0 needs experts >= 2"),
    ],
)
def test_bad_arguments(kwargs: dict, fragment: str) -> None:
    with pytest.raises(ValueError) as info:
        synth_trace(**(SMALL | kwargs))
    assert fragment in str(info.value) and "\n" not in str(info.value)


@pytest.mark.parametrize("target", [0.0, 0.3, 0.6, 1.0])
def test_affinity_target_met(target: float) -> None:
    trace = synth_trace(**SMALL, imbalance=1.0, affinity=target, seed=2)
    u = affinity(trace)
    assert np.abs(u - target).max() <= affinity_tolerance(target)
    assert np.abs(imbalance(trace) - 1.0).max() <= 0.05  # affinity keeps the marginals


def test_affinity_extremes() -> None:
    independent = synth_trace(**SMALL, zipf=0.5, affinity=0.0)
    assert (affinity(independent) <= 3 * affinity_noise(independent)).all()  # bias only: about 0.005
    assert (affinity(independent) < 0.02).all()
    determined = synth_trace(**SMALL, zipf=0.5, affinity=1.0)
    assert (affinity(determined) == 1.0).all()
    # the next expert is a fixed permutation of this one, slot by slot
    for layer in range(determined.layers - 1):
        x, y = determined.experts[layer].ravel(), determined.experts[layer + 1].ravel()
        mapping = np.full(16, -1)
        mapping[x] = y
        assert (mapping[x] == y).all() and np.unique(mapping[mapping >= 0]).size == np.unique(x).size


def test_top_k_ids_distinct_and_layout() -> None:
    trace = synth_trace(**SMALL, imbalance=4.0, affinity=0.5, batches=3)
    ordered = np.sort(trace.experts, axis=2)
    assert (ordered[:, :, 1:] != ordered[:, :, :-1]).all()
    assert trace.tokens_per_gpu.tolist() == [1024] * 4
    sizes = np.bincount(trace.batch)
    assert sizes.sum() == trace.tokens and sizes.max() - sizes.min() <= trace.gpus
    for b in range(3):  # batch-major, then GPU
        gpus = trace.source_gpu[trace.batch == b]
        assert (np.diff(gpus) >= 0).all() and np.unique(gpus).size == 4


def test_sampler_is_plackett_luce() -> None:
    """Slot frequencies of the sampler match sequential sampling without replacement, exactly computed."""
    p = zipf_popularity(1.2, 5)
    n = 200_000
    u = np.random.default_rng(0).random((2, n))
    ranks = _sample_ranks(p, u, key=7, prev=None, mapped=None)
    assert (ranks[0] != ranks[1]).all()
    second = np.array([sum(p[a] * p[b] / (1 - p[a]) for a in range(5) if a != b) for b in range(5)])
    for slot, expected in ((0, p), (1, second)):
        seen = np.bincount(ranks[slot], minlength=5) / n
        assert np.abs(seen - expected).max() < 5 * math.sqrt(0.25 / n)


def test_drift_zero_keeps_batches_alike() -> None:
    trace = synth_trace(**(SMALL | dict(tokens_per_gpu=2048)), imbalance=2.0, batches=4, drift=0.0)
    for layer in range(trace.layers):
        loads = np.stack(
            [np.bincount(trace.experts[layer][trace.batch == b].ravel(), minlength=16) for b in range(4)]
        )
        expected = loads.mean(axis=0)
        assert (np.abs(loads - expected) <= 5 * np.sqrt(expected) + 1).all()  # sampling noise only
        assert np.unique(loads.argmax(axis=1)).size == 1


def test_drift_moves_the_popular_experts() -> None:
    still = synth_trace(**SMALL, imbalance=2.0, batches=4, drift=0.0)
    moving = synth_trace(**SMALL, imbalance=2.0, batches=4, drift=1.0, affinity=0.5)
    per_batch = batch_imbalance(moving)
    assert np.abs(per_batch.mean(axis=0) / 2.0 - 1).max() <= 0.05  # the target holds within each batch
    assert (imbalance(moving) < 0.8 * per_batch.mean(axis=0)).all()  # the whole trace is flatter
    assert (imbalance(moving) < imbalance(still)).all()
    for layer in range(moving.layers):
        tops = [
            np.bincount(moving.experts[layer][moving.batch == b].ravel(), minlength=16).argmax()
            for b in range(4)
        ]
        assert len(set(tops)) > 1
    assert np.abs(affinity(moving) - 0.5).max() <= affinity_tolerance(0.5)


def test_partial_drift_changes_rankings_gradually() -> None:
    def changed(d: float) -> float:
        trace = synth_trace(**SMALL, zipf=1.0, batches=8, drift=d, seed=4)
        ranks = [
            np.argsort(-np.bincount(trace.experts[0][trace.batch == b].ravel(), minlength=16))
            for b in range(8)
        ]
        return np.mean([np.mean(ranks[b][:4] != ranks[b + 1][:4]) for b in range(7)])

    assert changed(0.0) == 0.0
    assert 0.0 < changed(0.3) < changed(1.0)


def test_deterministic() -> None:
    args = SMALL | dict(imbalance=1.0, affinity=0.4, drift=0.2, batches=2, seed=11)
    a, b = synth_trace(**args), synth_trace(**args)
    for name in ("experts", "source_gpu", "batch"):
        np.testing.assert_array_equal(getattr(a, name), getattr(b, name))
    assert a.notes == b.notes
    c = synth_trace(**(args | dict(seed=12)))
    assert not np.array_equal(a.experts, c.experts)


def test_fixed_zipf_and_metadata() -> None:
    trace = synth_trace(**SMALL, zipf=1.0, hidden=7168, bytes_per_element=1, model="m")
    assert (trace.hidden, trace.bytes_per_element, trace.model, trace.gates) == (7168, 1, "m", None)
    load = np.sort(expert_load(trace), axis=1)[:, ::-1]
    assert (load[:, 0] > 2 * load[:, -1]).all()  # skewed
    assert "zipf exponent per layer [1.0, 1.0, 1.0]" in trace.notes


def test_subsample_calibration_path(monkeypatch: pytest.MonkeyPatch) -> None:
    """Traces larger than CALIBRATION_TOKENS are fitted on a prefix of tokens, then checked in full."""
    monkeypatch.setattr(synthetic_trace, "CALIBRATION_TOKENS", 1024)
    args = SMALL | dict(imbalance=1.0, affinity=0.5, drift=0.3, batches=2, seed=5)
    trace = synth_trace(**(args | dict(drift=0.0)))
    assert np.abs(imbalance(trace) - 1.0).max() <= 0.05
    assert np.abs(affinity(trace) - 0.5).max() <= affinity_tolerance(0.5)
    drifting = synth_trace(**args)
    np.testing.assert_array_equal(drifting.experts, synth_trace(**args).experts)
    assert np.abs(affinity(drifting) - 0.5).max() <= affinity_tolerance(0.5)


def test_split_synthetic_by_batch() -> None:
    trace = synth_trace(**SMALL, batches=4)
    fit, held = split_by_batch(trace, 0.75)
    assert set(fit.batch.tolist()) == {0, 1, 2} and set(held.batch.tolist()) == {3}


@settings(max_examples=12, deadline=None)
@given(
    experts=st.integers(2, 24),
    data=st.data(),
    layers=st.integers(1, 3),
    affinity_target=st.sampled_from([0.0, 0.5, 1.0]),
    drift=st.sampled_from([0.0, 0.5]),
    seed=st.integers(0, 1000),
)
def test_valid_for_any_small_shape(
    experts: int, data: st.DataObject, layers: int, affinity_target: float, drift: float, seed: int
) -> None:
    top_k = data.draw(st.integers(1, experts))
    trace = synth_trace(
        experts=experts,
        top_k=top_k,
        layers=layers,
        tokens_per_gpu=256,
        gpus=2,
        zipf=data.draw(st.sampled_from([0.0, 0.7, 3.0])),
        affinity=affinity_target,
        drift=drift,
        batches=2,
        seed=seed,
    )  # the constructor validated ranges and distinctness
    assert trace.experts.shape == (layers, 512, top_k)
    if affinity_target == 1.0 and layers > 1:
        assert (affinity(trace) == 1.0).all()


# ----------------------------------------------------------------------------------------------
# command line


def test_cli_writes_and_prints(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "t.npz"
    argv = ["--out", str(out), "--experts", "16", "--top-k", "2", "--layers", "2", "--tokens-per-gpu", "512"]
    argv += ["--gpus", "4", "--imbalance", "1", "--affinity", "0.5", "--batches", "2", "--seed", "3"]
    assert main(argv) == 0
    trace = load_trace(out)
    assert trace.tokens == 2048 and trace.num_experts == 16 and np.unique(trace.batch).tolist() == [0, 1]
    assert np.abs(imbalance(trace) - 1).max() <= 0.05
    printed = capsys.readouterr().out
    assert f"wrote {out}" in printed and "imbalance" in printed and "affinity" in printed


@pytest.mark.parametrize(
    "extra",
    [
        ["--imbalance", "1", "--zipf", "1"],
        ["--experts", "0"],
        ["--affinity", "nan"],
        ["--imbalance", "99"],
        ["--bogus"],
    ],
)
def test_cli_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str], extra: list[str]) -> None:
    argv = ["--out", str(tmp_path / "t.npz"), "--tokens-per-gpu", "64", "--gpus", "2"] + extra
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("moesim: error:") and err.count("\n") == 1
    assert not (tmp_path / "t.npz").exists()


def test_cli_missing_directory(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--out", str(tmp_path / "no" / "t.npz")]) == 2
    assert "does not exist" in capsys.readouterr().err


@pytest.mark.slow
def test_full_size_is_fast_and_accurate() -> None:
    """The reference size: 64 experts, top-8, 8 layers, 4096 tokens on each of 16 GPUs."""
    start = time.perf_counter()
    trace = synth_trace(
        experts=64, top_k=8, layers=8, tokens_per_gpu=4096, gpus=16, imbalance=1.0, affinity=0.5, batches=4
    )
    elapsed = time.perf_counter() - start
    assert np.abs(imbalance(trace) - 1).max() <= 0.05
    assert np.abs(affinity(trace) - 0.5).max() <= affinity_tolerance(0.5)
    assert elapsed < 10.0
