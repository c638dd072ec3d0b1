"""Transports: Ethereal's splitting rule, its per-uplink bytes in the engine against spraying, ECMP
hashing and parsing transport names."""

from __future__ import annotations

import math

import numpy as np
import pytest
from conftest import make_spec, one_step, run_schedule
from hypothesis import given, settings
from hypothesis import strategies as st

from simulator.transport import Transport, ecmp_hash, ecmp_path, ethereal_assignment, parse_transport
from topologies.compiled import compile_fabric
from workloads.collectives import collective_schedule

FAST = settings(max_examples=100, deadline=None)


def per_path(flow: np.ndarray, nbytes: np.ndarray, path: np.ndarray, s: int) -> np.ndarray:
    assert np.all((path >= 0) & (path < s))
    return np.bincount(path, weights=nbytes, minlength=s)


# ------------------------------------------------------------------------------ ethereal_assignment


@FAST
@given(n=st.integers(1, 40), s=st.integers(1, 16), size=st.sampled_from([1.0, 3.0, 1e6, 7.3e7, 0.1]))
def test_ethereal_equal_sizes(n: int, s: int, size: float) -> None:
    sizes = np.full(n, size)
    flow, nbytes, path = ethereal_assignment(sizes, s)
    total = sizes.sum()
    np.testing.assert_allclose(per_path(flow, nbytes, path, s), total / s, rtol=1e-12)
    np.testing.assert_allclose(np.bincount(flow, weights=nbytes, minlength=n), sizes, rtol=1e-12)
    assert np.all(nbytes > 0)
    q, r = divmod(n, s)
    g = math.gcd(r, s)
    pieces = q * s + (r * (s // g) if r else 0)
    assert flow.shape[0] == pieces
    # q whole flows per uplink; each leftover flow in s/g equal pieces on distinct uplinks, r/g per uplink.
    whole = np.bincount(flow, minlength=n) == 1
    assert whole.sum() == q * s
    np.testing.assert_array_equal(np.bincount(path[whole[flow]], minlength=s), np.full(s, q))
    for f in np.flatnonzero(~whole):
        mine = flow == f
        assert mine.sum() == s // g
        assert np.unique(path[mine]).shape[0] == s // g
        np.testing.assert_allclose(nbytes[mine], size * g / s, rtol=1e-12)
    if r:
        np.testing.assert_array_equal(np.bincount(path[~whole[flow]], minlength=s), np.full(s, r // g))


def test_ethereal_examples() -> None:
    # 6 flows on 4 uplinks: 4 whole flows, 2 leftovers cut in halves (g = 2).
    flow, nbytes, path = ethereal_assignment(np.full(6, 8.0), 4)
    assert flow.tolist() == [0, 1, 2, 3, 4, 4, 5, 5]
    assert path.tolist() == [0, 1, 2, 3, 0, 1, 2, 3]
    assert nbytes.tolist() == [8.0] * 4 + [4.0] * 4
    # Fewer flows than uplinks: 3 flows on 4 uplinks (g = 1): every flow in 4 quarters.
    flow, nbytes, path = ethereal_assignment(np.full(3, 4.0), 4)
    assert flow.shape[0] == 12 and np.all(nbytes == 1.0)
    np.testing.assert_array_equal(np.bincount(path), [3, 3, 3, 3])
    empty = ethereal_assignment(np.zeros(0), 4)
    assert all(part.shape == (0,) for part in empty)


@st.composite
def unequal_sizes(draw: st.DrawFn) -> np.ndarray:
    n = draw(st.integers(2, 40))
    sizes = draw(
        st.lists(st.one_of(st.integers(1, 5).map(float), st.floats(1e-3, 1e9)), min_size=n, max_size=n)
    )
    if len(set(sizes)) == 1:
        sizes[0] *= 2.0
    return np.array(sizes)


@FAST
@given(sizes=unequal_sizes(), s=st.integers(1, 16))
def test_ethereal_unequal_sizes(sizes: np.ndarray, s: int) -> None:
    flow, nbytes, path = ethereal_assignment(sizes, s)
    n = sizes.shape[0]
    np.testing.assert_allclose(per_path(flow, nbytes, path, s), sizes.sum() / s, rtol=1e-9)
    np.testing.assert_allclose(np.bincount(flow, weights=nbytes, minlength=n), sizes, rtol=1e-9)
    assert np.all(nbytes > 0)
    assert np.all(np.bincount(flow, minlength=n) >= 1)
    assert flow.shape[0] - n <= s - 1


# ------------------------------------------------------------------------------ in the engine

ONE_TO_ONE = dict(
    leaves=4,
    spines=4,
    hosts_per_leaf=2,
    gpus_per_host=1,
    nic_bandwidth=100.0,
    uplink_bandwidth=100.0,
    nvlink_bandwidth=1e6,
    link_latency=1e-3,
    message_latency=1e-3,
)


def bytes_by_kind(spec, schedule, transport: str, kind: str, seed: int = 0) -> np.ndarray:
    links = run_schedule(spec, schedule, transport, seed).links()
    return links.loc[links["kind"] == kind, "bytes"].to_numpy()


PATTERNS = [("all_to_all", {}), ("shift", {}), ("shift", {"k": 3}), ("permutation", {"seed": 5})]


def unequal_messages(spec):
    """40 random messages of random sizes, all in one step (MoE-like all-to-all traffic)."""
    rng = np.random.default_rng(11)
    src = rng.integers(0, spec.gpus, 40)
    dst = (src + rng.integers(1, spec.gpus, 40)) % spec.gpus
    return one_step(spec, src, dst, rng.uniform(100.0, 5000.0, 40))


@pytest.mark.parametrize("op, extra", [*PATTERNS, ("unequal", {})])
def test_ethereal_uplinks_match_spray(op: str, extra: dict) -> None:
    spec = make_spec(**ONE_TO_ONE)
    if op == "unequal":
        schedule = unequal_messages(spec)
    else:
        schedule = collective_schedule(spec, op, 4096.0, **extra)
    for kind in ("uplink", "downlink"):
        spray = bytes_by_kind(spec, schedule, "spray", kind)
        ethereal = bytes_by_kind(spec, schedule, "ethereal", kind)
        assert spray.sum() > 0
        np.testing.assert_allclose(ethereal, spray, rtol=1e-9)


@pytest.mark.parametrize("hosts_per_leaf, spines", [(2, 4), (3, 4), (3, 2), (1, 3)])
def test_ethereal_cuts_per_leaf_pair_in_the_engine(hosts_per_leaf: int, spines: int) -> None:
    """All messages of a leaf pair that start together are split as one batch: q*s + r*s/g flows."""
    spec = make_spec(**{**ONE_TO_ONE, "leaves": 3, "hosts_per_leaf": hosts_per_leaf, "spines": spines})
    schedule = collective_schedule(spec, "all_to_all", 4096.0)
    result = run_schedule(spec, schedule, "ethereal")
    flows, topo = result.flows(), result.topology
    src_leaf, dst_leaf = topo.gpu_leaf[flows["src"]], topo.gpu_leaf[flows["dst"]]
    n = hosts_per_leaf * hosts_per_leaf  # messages per (source leaf, destination leaf) pair
    q, r = divmod(n, spines)
    pieces = q * spines + (r * (spines // math.gcd(r, spines)) if r else 0)
    for a in range(spec.leaves):
        for b in range(spec.leaves):
            mine = (src_leaf == a) & (dst_leaf == b)
            assert mine.sum() == (pieces if a != b else hosts_per_leaf * (hosts_per_leaf - 1))


@pytest.mark.parametrize("op, extra", PATTERNS)
def test_split_by_spine_count_is_not_spray(op: str, extra: dict) -> None:
    """split:K hashes its K subflows independently, so uplinks collide and end up unbalanced."""
    spec = make_spec(**ONE_TO_ONE)
    schedule = collective_schedule(spec, op, 4096.0, **extra)
    spray = bytes_by_kind(spec, schedule, "spray", "uplink")
    split = bytes_by_kind(spec, schedule, f"split:{spec.spines}", "uplink", seed=1)
    assert split.sum() == pytest.approx(spray.sum(), rel=1e-9)
    assert np.abs(split - spray).max() > 1e-6 * spray.max()


def test_spray_balances_uplinks() -> None:
    """A shift one rack on: every leaf's uplinks each carry the leaf's outgoing bytes / spines."""
    spec = make_spec(**ONE_TO_ONE)
    size = 4096.0
    schedule = collective_schedule(spec, "shift", size)
    uplinks = bytes_by_kind(spec, schedule, "spray", "uplink")
    expected = spec.hosts_per_leaf * spec.gpus_per_host * size / spec.spines
    np.testing.assert_allclose(uplinks, expected, rtol=1e-9)


# ------------------------------------------------------------------------------ ECMP hashing


def test_ecmp_path_is_deterministic_and_seeded() -> None:
    rng = np.random.default_rng(0)
    n, n_paths = 2000, 8
    src, dst, fid = rng.integers(0, 512, n), rng.integers(0, 512, n), np.arange(n)
    a = ecmp_path(src, dst, fid, 0, n_paths)
    assert a.dtype == np.int64 and a.shape == (n,)
    assert np.all((a >= 0) & (a < n_paths))
    np.testing.assert_array_equal(a, ecmp_path(src.copy(), dst.copy(), fid.copy(), 0, n_paths))
    b = ecmp_path(src, dst, fid, 1, n_paths)
    assert np.all((b >= 0) & (b < n_paths))
    assert np.mean(a != b) > 0.5  # an independent hash agrees 1/8 of the time
    # Roughly uniform over the paths, and every input takes part in the hash.
    assert np.bincount(a, minlength=n_paths).min() > n / n_paths / 2
    for changed in (ecmp_path(src + 1, dst, fid, 0, n_paths), ecmp_path(src, dst, fid + 1, 0, n_paths)):
        assert np.mean(a != changed) > 0.5
    assert ecmp_hash(src, dst, fid, 0).dtype == np.uint64


@FAST
@given(seed=st.integers(-(2**63), 2**64 - 1), n_paths=st.integers(1, 64))
def test_ecmp_path_in_range(seed: int, n_paths: int) -> None:
    choice = ecmp_path(np.arange(50), np.arange(50)[::-1], np.arange(50), seed, n_paths)
    assert np.all((choice >= 0) & (choice < n_paths))
    again = ecmp_path(np.arange(50), np.arange(50)[::-1], np.arange(50), seed, n_paths)
    np.testing.assert_array_equal(choice, again)


def test_ecmp_seed_changes_engine_paths_only_across_spines() -> None:
    spec = make_spec(**ONE_TO_ONE)
    fabric = compile_fabric(spec)
    schedule = collective_schedule(spec, "all_to_all", 4096.0)
    a = run_schedule(fabric, schedule, "ecmp", seed=0).flows()
    b = run_schedule(fabric, schedule, "ecmp", seed=1).flows()
    assert (a["link1"] != b["link1"]).any()
    cross = fabric.crosses_spine(a["src"].to_numpy(), a["dst"].to_numpy())
    assert (a["link1"] == b["link1"])[~cross].all()


# ------------------------------------------------------------------------------ parsing


@pytest.mark.parametrize(
    "text, expected",
    [
        ("ecmp", Transport("ecmp")),
        ("spray", Transport("spray")),
        ("ethereal", Transport("ethereal")),
        ("split:4", Transport("split", 4)),
        ("split:1", Transport("split", 1)),
        (" split:16 ", Transport("split", 16)),
    ],
)
def test_parse_transport(text: str, expected: Transport) -> None:
    parsed = parse_transport(text)
    assert parsed == expected
    assert str(parsed) == text.strip()
    assert parse_transport(str(parsed)) == parsed


@pytest.mark.parametrize(
    "text",
    [
        "split:0",
        "split:x",
        "split:",
        "split:-2",
        "split:2.5",
        "foo",
        "",
        "ECMP",
        "split",
        "split:\u00b2",  # superscript two: isdigit() but not int()
        "split:\u0663",  # Arabic-Indic three: must not pass as split:3
    ],
)
def test_parse_transport_rejects(text: str) -> None:
    with pytest.raises(ValueError) as info:
        parse_transport(text)
    message = str(info.value)
    assert "split:4" in message
    if not text.startswith("split:"):
        for name in ("ecmp", "spray", "ethereal"):
            assert name in message
