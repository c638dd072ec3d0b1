"""Routing traces: the .npz format, its validation, token selection and the statistics."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from workloads.routing_trace import (
    RoutingTrace,
    TraceError,
    affinity,
    affinity_noise,
    batch_imbalance,
    expert_load,
    format_summary,
    gpu_expert_tokens,
    imbalance,
    load_trace,
    save_trace,
    slice_tokens,
    split_by_batch,
    summary,
    transitions,
    uncertainty_coefficient,
)

META = dict(num_experts=8, top_k=2, layers=3, gpus=2, hidden=16, bytes_per_element=2)


def random_trace(
    tokens: int = 40, seed: int = 0, gates: bool = True, batch: bool = True, **meta: int
) -> RoutingTrace:
    """A valid random trace: distinct ids per token, batches 0, 0, ..., 1, 1, ..."""
    m = META | meta
    rng = np.random.default_rng(seed)
    keys = rng.random((m["layers"], tokens, m["num_experts"]))
    experts = np.argsort(keys, axis=2)[:, :, : m["top_k"]]
    return RoutingTrace(
        experts=experts,
        source_gpu=rng.integers(0, m["gpus"], tokens),
        gates=np.sort(rng.random(experts.shape), axis=2)[:, :, ::-1].astype(np.float32) if gates else None,
        batch=np.arange(tokens) * 4 // max(tokens, 1) if batch else None,
        model="tiny",
        source="test",
        notes="hand-made",
        **m,
    )


def raw_arrays(trace: RoutingTrace) -> dict[str, np.ndarray]:
    """What save_trace writes, as plain arrays we can break one at a time."""
    meta = {
        "format": "moesim-routing-trace",
        "version": 1,
        "model": trace.model,
        "experts": trace.num_experts,
        "top_k": trace.top_k,
        "layers": trace.layers,
        "hidden": trace.hidden,
        "bytes_per_element": trace.bytes_per_element,
        "gpus": trace.gpus,
    }
    return {
        "experts": np.array(trace.experts),
        "source_gpu": np.array(trace.source_gpu),
        "gates": np.array(trace.gates),
        "batch": np.array(trace.batch),
        "meta": np.array(json.dumps(meta)),
    }


def write_raw(path: Path, arrays: dict[str, np.ndarray]) -> Path:
    with open(path, "wb") as handle:
        np.savez_compressed(handle, **arrays)
    return path


def assert_same(a: RoutingTrace, b: RoutingTrace) -> None:
    for name in (
        "num_experts",
        "top_k",
        "layers",
        "gpus",
        "hidden",
        "bytes_per_element",
        "model",
        "source",
        "notes",
    ):
        assert getattr(a, name) == getattr(b, name), name
    for name in ("experts", "source_gpu", "gates", "batch"):
        x, y = getattr(a, name), getattr(b, name)
        assert (x is None) == (y is None), name
        if x is not None:
            np.testing.assert_array_equal(x, y, err_msg=name)


# ----------------------------------------------------------------------------------------------
# round trip


@pytest.mark.parametrize("gates", [True, False])
@pytest.mark.parametrize("batch", [True, False])
def test_round_trip(tmp_path: Path, gates: bool, batch: bool) -> None:
    trace = random_trace(gates=gates, batch=batch)
    path = save_trace(trace, tmp_path / "t.npz")
    back = load_trace(path)
    assert_same(trace, back)
    assert back.experts.dtype == np.int16 and back.source_gpu.dtype == np.int32
    assert back.gates is None or back.gates.dtype == np.float32
    assert back.batch is None or back.batch.dtype == np.int32
    assert [p.name for p in tmp_path.iterdir()] == ["t.npz"]  # no temporary file left behind


def test_save_replaces_atomically_and_keeps_name(tmp_path: Path) -> None:
    path = tmp_path / "trace"  # no .npz appended
    save_trace(random_trace(seed=1), path)
    save_trace(random_trace(seed=2, tokens=10), path)
    assert load_trace(path).tokens == 10
    assert sorted(p.name for p in tmp_path.iterdir()) == ["trace"]


def test_arrays_are_read_only_and_caller_arrays_untouched() -> None:
    experts = np.array([[[0, 1], [2, 3]]])
    trace = RoutingTrace(experts=experts, source_gpu=np.array([0, 1]), **(META | dict(layers=1)))
    with pytest.raises(ValueError):
        trace.experts[0, 0, 0] = 5
    experts[0, 0, 0] = 7  # the caller's array is still writable
    assert trace.tokens == 2 and trace.tokens_per_gpu.tolist() == [1, 1]
    assert "tokens=2" in repr(trace)


def test_empty_trace_is_valid() -> None:
    trace = random_trace(tokens=0)
    assert trace.tokens == 0
    assert np.isnan(imbalance(trace)).all()
    assert (affinity(trace) == 0).all()


# ----------------------------------------------------------------------------------------------
# loader errors: one line, naming the file and the field


def _broken(edit: str) -> dict[str, np.ndarray]:
    arrays = raw_arrays(random_trace(tokens=120))
    meta = json.loads(str(arrays["meta"]))
    experts = arrays["experts"].astype(np.int64)
    if edit == "2d":
        arrays["experts"] = experts[0, :100, :].T.copy()
    elif edit == "id_high":
        experts[2, 5, 1] = 8
        arrays["experts"] = experts
    elif edit == "id_negative":
        experts[1, 3, 0] = -1
        arrays["experts"] = experts
    elif edit == "repeat":
        experts[0, 17] = [3, 3]
        arrays["experts"] = experts
    elif edit == "float_ids":
        arrays["experts"] = experts.astype(np.float64)
    elif edit == "layers_mismatch":
        meta["layers"] = 4
    elif edit == "source_len":
        arrays["source_gpu"] = arrays["source_gpu"][:100]
    elif edit == "source_range":
        arrays["source_gpu"][7] = 2
    elif edit == "gates_shape":
        arrays["gates"] = arrays["gates"][:, :50]
    elif edit == "batch_order":
        arrays["batch"] = arrays["batch"][::-1].copy()
    elif edit == "missing_hidden":
        del meta["hidden"]
    elif edit == "hidden_type":
        meta["hidden"] = "4096"
    elif edit == "format":
        meta["format"] = "something-else"
    elif edit == "version":
        meta["version"] = 2
    elif edit == "missing_experts":
        del arrays["experts"]
    elif edit == "unknown_array":
        arrays["gate"] = arrays.pop("gates")
    if edit != "not_json":
        arrays["meta"] = np.array(json.dumps(meta))
    else:
        arrays["meta"] = np.array("{not json")
    return arrays


CASES = {
    "2d": "experts has shape (2, 100) but must be (layers, tokens, top_k) = 3-D",
    "id_high": "experts: id 8 >= experts=8 in layer 2, token 5 (ids must be below meta.experts)",
    "id_negative": "experts: id -1 < 0 in layer 1, token 3",
    "repeat": "experts: token 17 of layer 0 repeats expert 3 (top-k ids must be distinct)",
    "float_ids": "experts has dtype float64 but must hold integer expert ids",
    "layers_mismatch": "experts has shape (3, 120, 2) but meta says (layers, tokens, top_k) = (4, tokens, 2)",
    "source_len": "source_gpu: 100 entries but experts has 120 tokens",
    "source_range": "source_gpu: GPU 2 >= gpus=2 at token 7",
    "gates_shape": "gates has shape (3, 50, 2) but must equal experts' shape",
    "batch_order": "batch: decreases at token",
    "missing_hidden": 'meta: missing key "hidden"',
    "hidden_type": 'meta: "hidden" must be a whole number',
    "format": "meta: format is 'something-else', not \"moesim-routing-trace\"",
    "version": "meta: version 2 is not supported (this moesim reads version 1",
    "not_json": "meta: not valid JSON",
    "missing_experts": 'missing array "experts"',
    "unknown_array": 'unknown array "gate"',
}


@pytest.mark.parametrize("edit", sorted(CASES))
def test_loader_errors(tmp_path: Path, edit: str) -> None:
    path = write_raw(tmp_path / "trace.npz", _broken(edit))
    with pytest.raises(TraceError) as info:
        load_trace(path)
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith(f"{path}: ")
    assert CASES[edit] in message


def test_unreadable_files(tmp_path: Path) -> None:
    text = tmp_path / "notes.npz"
    text.write_text("hello, not a zip\n")
    npy = tmp_path / "one.npy"
    np.save(npy, np.zeros(3))
    truncated = tmp_path / "cut.npz"
    good = save_trace(random_trace(tokens=2000), tmp_path / "good.npz").read_bytes()
    truncated.write_bytes(good[: len(good) // 2])
    expected = {
        tmp_path / "missing.npz": "no such file",
        text: "not an .npz routing trace",
        npy: "is a single .npy array",
        truncated: "",
    }
    for path, fragment in expected.items():
        with pytest.raises(TraceError) as info:
            load_trace(path)
        assert "\n" not in str(info.value) and str(info.value).startswith(str(path))
        assert fragment in str(info.value)
    assert isinstance(TraceError("x"), ValueError)


def test_constructor_validates_too() -> None:
    good = dict(experts=np.array([[[0, 1], [1, 2]]]), source_gpu=np.array([0, 1]), **(META | dict(layers=1)))
    RoutingTrace(**good)
    bad = {
        "top_k": ({"top_k": 9}, "meta.top_k: 9 > meta.experts=8"),
        "gpus": ({"gpus": 0}, "meta.gpus: must be a whole number >= 1"),
        "experts": ({"num_experts": True}, "meta.experts: must be a whole number >= 1"),
        "model": ({"model": 3}, "meta.model: must be a string"),
        "ids": ({"experts": np.array([[[0, 1], [1, 1]]])}, "token 1 of layer 0 repeats expert 1"),
        "gates": ({"gates": np.array([[[0.5, np.nan], [0.5, 0.5]]])}, "gates: non-finite weight"),
        "batch": ({"batch": np.array([[0, 1]])}, "batch has shape (1, 2) but must be (tokens,) = 1-D"),
    }
    for change, fragment in bad.values():
        with pytest.raises(TraceError, match=None) as info:
            RoutingTrace(**(good | change))
        assert fragment in str(info.value) and "\n" not in str(info.value)


# ----------------------------------------------------------------------------------------------
# selecting tokens


def test_slice_tokens_mask_and_indices() -> None:
    trace = random_trace(tokens=12)
    mask = np.arange(12) % 3 == 0
    by_mask = slice_tokens(trace, mask)
    by_index = slice_tokens(trace, [0, 3, 6, 9])
    assert_same(by_mask, by_index)
    np.testing.assert_array_equal(by_mask.experts, trace.experts[:, mask])
    np.testing.assert_array_equal(by_mask.gates, trace.gates[:, mask])
    with pytest.raises(TraceError, match="mask has shape"):
        slice_tokens(trace, np.ones(5, dtype=bool))
    with pytest.raises(TraceError, match="out of range"):
        slice_tokens(trace, [12])
    with pytest.raises(TraceError, match="batch: decreases"):
        slice_tokens(trace, [11, 0])


def test_split_by_batch() -> None:
    trace = random_trace(tokens=40)  # batches 0..3, 10 tokens each
    fit, held = split_by_batch(trace, 0.5)
    assert set(fit.batch.tolist()) == {0, 1} and set(held.batch.tolist()) == {2, 3}
    assert fit.tokens + held.tokens == trace.tokens
    fit, held = split_by_batch(trace, 0.01)  # at least one batch on each side
    assert set(fit.batch.tolist()) == {0} and set(held.batch.tolist()) == {1, 2, 3}
    fit, held = split_by_batch(trace, 0.99)
    assert set(held.batch.tolist()) == {3}


def test_split_without_batch_is_by_token_order() -> None:
    trace = random_trace(tokens=10, batch=False)
    fit, held = split_by_batch(trace, 0.3)
    np.testing.assert_array_equal(fit.experts, trace.experts[:, :3])
    np.testing.assert_array_equal(held.experts, trace.experts[:, 3:])
    for fraction in (0.0, 1.0, -1.0):
        with pytest.raises(ValueError, match="fraction"):
            split_by_batch(trace, fraction)


# ----------------------------------------------------------------------------------------------
# statistics on hand-made traces


def hand(
    layers: list[list[list[int]]], experts: int = 4, gpus: int = 1, source: list[int] | None = None
) -> RoutingTrace:
    ids = np.array(layers)
    return RoutingTrace(
        experts=ids,
        source_gpu=np.array(source if source is not None else [0] * ids.shape[1]),
        num_experts=experts,
        top_k=ids.shape[2],
        layers=ids.shape[0],
        gpus=gpus,
        hidden=8,
        bytes_per_element=2,
    )


def test_load_and_imbalance_known_values() -> None:
    trace = hand([[[0], [0], [0], [1]], [[0], [1], [2], [3]]])
    np.testing.assert_array_equal(expert_load(trace), [[3, 1, 0, 0], [1, 1, 1, 1]])
    np.testing.assert_allclose(imbalance(trace), [2.0, 0.0])  # mean 1: (3 - 1) / 1


def test_affinity_known_values() -> None:
    same = hand([[[0, 1], [2, 3], [1, 0]], [[0, 1], [2, 3], [1, 0]]])
    relabelled = hand([[[0, 1], [2, 3], [1, 0]], [[3, 2], [1, 0], [2, 3]]])
    constant = hand([[[0], [1], [2]], [[3], [3], [3]]])
    independent = hand([[[0], [0], [1], [1]], [[0], [1], [0], [1]]])
    assert affinity(same)[0] == 1.0 and affinity(relabelled)[0] == 1.0
    assert affinity(constant)[0] == 0.0  # H(next) = 0
    assert affinity(independent)[0] == pytest.approx(0.0, abs=1e-15)
    # pairs (0,0) (0,1) (1,1) (1,1): H(Y) = H(1/4, 3/4), H(Y|X) = ln 2 / 2
    partial = hand([[[0], [0], [1], [1]], [[0], [1], [1], [1]]])
    h_y = -(0.25 * math.log(0.25) + 0.75 * math.log(0.75))
    assert affinity(partial)[0] == pytest.approx(1 - 0.5 * math.log(2) / h_y, rel=1e-12)


def test_transitions_and_gpu_tokens() -> None:
    trace = hand([[[0, 1], [2, 3], [0, 2]], [[1, 0], [2, 3], [1, 2]]], gpus=2, source=[0, 1, 1])
    t = transitions(trace, 0)
    assert t.sum() == 6
    assert t[0, 1] == 2 and t[1, 0] == 1 and t[2, 2] == 2 and t[3, 3] == 1
    g = gpu_expert_tokens(trace, 1)
    np.testing.assert_array_equal(g, [[1, 1, 0, 0], [0, 1, 2, 1]])
    with pytest.raises(ValueError, match="out of range"):
        transitions(trace, 1)
    with pytest.raises(ValueError, match="out of range"):
        gpu_expert_tokens(trace, 2)


def test_batch_imbalance() -> None:
    trace = RoutingTrace(
        experts=np.array([[[0], [0], [1], [1]]]),
        source_gpu=np.zeros(4, dtype=int),
        batch=np.array([0, 0, 5, 5]),
        num_experts=2,
        top_k=1,
        layers=1,
        gpus=1,
        hidden=1,
        bytes_per_element=1,
    )
    np.testing.assert_allclose(batch_imbalance(trace), [[1.0], [1.0]])  # each batch uses one expert
    np.testing.assert_allclose(imbalance(trace), [0.0])


def test_summary_and_table() -> None:
    trace = random_trace(tokens=200)
    stats = summary(trace)
    json.dumps(stats)
    assert stats["tokens"] == 200 and stats["batches"] == 4 and stats["gates"] is True
    assert stats["dispatch_bytes_per_layer"] == 200 * 2 * 16 * 2
    assert len(stats["imbalance"]) == 3 and len(stats["affinity"]) == 2
    np.testing.assert_allclose(stats["imbalance"], imbalance(trace))
    table = format_summary(stats)
    assert table == format_summary(trace)
    assert len(table.splitlines()) == 3 + trace.layers and "model tiny" in table


def test_affinity_noise_matches_independent_layers() -> None:
    rng = np.random.default_rng(3)
    tokens = 20_000
    ids = rng.integers(0, 16, (2, tokens, 1))
    trace = hand(ids.tolist(), experts=16)
    noise = affinity_noise(trace)[0]
    assert noise == pytest.approx(15 * 15 / (2 * tokens * math.log(16)), rel=0.05)
    assert affinity(trace)[0] == pytest.approx(noise, abs=4 * noise)


# ----------------------------------------------------------------------------------------------
# properties on random traces


@st.composite
def traces(draw: st.DrawFn) -> RoutingTrace:
    experts = draw(st.integers(1, 12))
    top_k = draw(st.integers(1, experts))
    layers = draw(st.integers(1, 4))
    tokens = draw(st.integers(0, 60))
    gpus = draw(st.integers(1, 4))
    seed = draw(st.integers(0, 2**16))
    return random_trace(
        tokens=tokens,
        seed=seed,
        num_experts=experts,
        top_k=top_k,
        layers=layers,
        gpus=gpus,
        gates=draw(st.booleans()),
    )


@settings(max_examples=40, deadline=None)
@given(traces(), st.integers(0, 2**16))
def test_statistics_invariants(trace: RoutingTrace, seed: int) -> None:
    load = expert_load(trace)
    assert (load.sum(axis=1) == trace.tokens * trace.top_k).all()
    for layer in range(trace.layers):
        assert (gpu_expert_tokens(trace, layer).sum(axis=0) == load[layer]).all()
    for layer in range(trace.layers - 1):
        t = transitions(trace, layer)
        assert (t.sum(axis=1) == load[layer]).all() and (t.sum(axis=0) == load[layer + 1]).all()
    u = affinity(trace)
    assert ((u >= 0) & (u <= 1)).all()
    if trace.layers > 1:  # U does not depend on the experts' names
        perm = np.random.default_rng(seed).permutation(trace.num_experts)
        renamed = np.array(trace.experts)
        renamed[1:] = perm[renamed[1:]]
        x, y = renamed[0], renamed[1]
        assert uncertainty_coefficient(x, y, trace.num_experts) == pytest.approx(u[0], abs=1e-12)


@settings(max_examples=25, deadline=None)
@given(traces())
def test_round_trip_property(tmp_path_factory: pytest.TempPathFactory, trace: RoutingTrace) -> None:
    path = tmp_path_factory.mktemp("rt") / "t.npz"
    assert_same(trace, load_trace(save_trace(trace, path)))
