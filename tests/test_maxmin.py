"""Max-min fair rates: the numba kernel against the numpy reference, the max-min property, the
incremental re-solve, and what the fluid engine makes of them (completion times, conserved bytes)."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import make_spec, one_step, run_schedule
from hypothesis import given, settings
from hypothesis import strategies as st

from simulator.maxmin import max_min_rates, max_min_rates_reference, remove_flows, resolve_above
from topologies.compiled import MAX_HOPS
from workloads.collectives import collective_schedule

FAST = settings(max_examples=80, deadline=None)
ENGINE = settings(max_examples=40, deadline=None)
REL = 1e-9

# Capacities: small whole numbers make ties between links (and between flows) common.
capacities = st.one_of(st.integers(1, 8).map(float), st.floats(0.5, 1000.0))


@st.composite
def instances(draw: st.DrawFn) -> tuple[np.ndarray, np.ndarray]:
    """Random links (1-30) with capacities and flows (1-60), each on 1-4 distinct links, padded with -1."""
    n_links = draw(st.integers(1, 30))
    capacity = np.array(draw(st.lists(capacities, min_size=n_links, max_size=n_links)))
    n_flows = draw(st.integers(1, 60))
    paths = np.full((n_flows, MAX_HOPS), -1, dtype=np.int32)
    hops = st.lists(st.integers(0, n_links - 1), min_size=1, max_size=min(MAX_HOPS, n_links), unique=True)
    for f in range(n_flows):
        links = draw(hops)
        paths[f, : len(links)] = links
    return paths, capacity


def link_sums(paths: np.ndarray, values: np.ndarray, n_links: int) -> tuple[np.ndarray, np.ndarray]:
    """Per link: the sum of ``values`` of the flows crossing it, and how many cross it."""
    rows, cols = np.nonzero(paths >= 0)
    links = paths[rows, cols]
    return (
        np.bincount(links, weights=values[rows], minlength=n_links),
        np.bincount(links, minlength=n_links),
    )


@FAST
@given(instances())
def test_kernel_matches_reference(instance: tuple[np.ndarray, np.ndarray]) -> None:
    paths, capacity = instance
    rate, load, count = max_min_rates(paths, capacity)
    ref_rate, ref_load, ref_count = max_min_rates_reference(paths, capacity)
    np.testing.assert_allclose(rate, ref_rate, rtol=REL, atol=0)
    np.testing.assert_allclose(load, ref_load, rtol=REL, atol=REL * capacity.max())
    np.testing.assert_array_equal(count, ref_count)


@FAST
@given(instances())
def test_load_and_count_are_sums_over_flows(instance: tuple[np.ndarray, np.ndarray]) -> None:
    paths, capacity = instance
    rate, load, count = max_min_rates(paths, capacity)
    expected_load, expected_count = link_sums(paths, rate, capacity.shape[0])
    np.testing.assert_allclose(load, expected_load, rtol=REL, atol=REL * capacity.max())
    np.testing.assert_array_equal(count, expected_count)


@FAST
@given(instances())
def test_no_link_above_capacity(instance: tuple[np.ndarray, np.ndarray]) -> None:
    paths, capacity = instance
    rate, load, _ = max_min_rates(paths, capacity)
    assert np.all(rate > 0)
    assert np.all(load <= capacity * (1 + REL))


def assert_max_min(paths: np.ndarray, capacity: np.ndarray, rate: np.ndarray) -> None:
    """Every flow crosses a saturated link on which no flow has a larger rate."""
    load, _ = link_sums(paths, rate, capacity.shape[0])
    saturated = load >= capacity * (1 - REL)
    top = np.zeros(capacity.shape[0])
    for f in range(paths.shape[0]):
        for link in paths[f][paths[f] >= 0]:
            top[link] = max(top[link], rate[f])
    for f in range(paths.shape[0]):
        links = paths[f][paths[f] >= 0]
        ok = saturated[links] & (rate[f] >= top[links] * (1 - REL))
        assert ok.any(), f"flow {f} (rate {rate[f]}) has no bottleneck on links {links.tolist()}"


@FAST
@given(instances())
def test_every_flow_has_a_bottleneck(instance: tuple[np.ndarray, np.ndarray]) -> None:
    paths, capacity = instance
    rate, _, _ = max_min_rates(paths, capacity)
    assert_max_min(paths, capacity, rate)


def test_known_instance() -> None:
    """Link 0 (cap 1) shared by flows a, b; link 1 (cap 3) shared by b, c: a = b = 0.5, c = 2.5."""
    paths = np.array([[0, -1, -1, -1], [0, 1, -1, -1], [1, -1, -1, -1]], dtype=np.int32)
    capacity = np.array([1.0, 3.0])
    for solve in (max_min_rates, max_min_rates_reference):
        rate, load, count = solve(paths, capacity)
        np.testing.assert_allclose(rate, [0.5, 0.5, 2.5], rtol=1e-12)
        np.testing.assert_allclose(load, [1.0, 3.0], rtol=1e-12)
        np.testing.assert_array_equal(count, [2, 2])


# ------------------------------------------------------------------------------ incremental solver


def solve_all(paths: np.ndarray, capacity: np.ndarray, size: np.ndarray) -> dict[str, np.ndarray]:
    """Engine-like state after a full solve (level 0) at time 0."""
    n = paths.shape[0]
    state = {
        "alive": np.ones(n, dtype=bool),
        "rate": np.zeros(n),
        "load": np.zeros(capacity.shape[0]),
        "count": link_sums(paths, np.zeros(n), capacity.shape[0])[1].astype(np.int64),
        "left": size.copy(),
        "anchor": np.zeros(n),
        "finish": np.full(n, np.inf),
    }
    assert resolve_state(paths, capacity, state, 0.0, 0.0) == n
    return state


def resolve_state(paths: np.ndarray, capacity: np.ndarray, state: dict, level: float, now: float) -> int:
    """:func:`resolve_above` on the arrays of ``state`` (changed in place)."""
    return resolve_above(
        paths,
        state["alive"],
        state["rate"],
        state["load"],
        capacity,
        level,
        state["left"],
        state["anchor"],
        state["finish"],
        now,
    )


@FAST
@given(instances(), st.data())
def test_remove_then_resolve_above_matches_full_solve(
    instance: tuple[np.ndarray, np.ndarray], data: st.DataObject
) -> None:
    paths, capacity = instance
    n, n_links = paths.shape[0], capacity.shape[0]
    size = np.array(data.draw(st.lists(st.floats(1.0, 100.0), min_size=n, max_size=n)))
    s = solve_all(paths, capacity, size)
    np.testing.assert_allclose(s["rate"], max_min_rates(paths, capacity)[0], rtol=REL)
    np.testing.assert_allclose(s["finish"], size / s["rate"], rtol=REL)
    now = then = 0.0
    expected_left = size.copy()
    for _ in range(3):
        alive = np.flatnonzero(s["alive"])
        if alive.size == 0:
            break
        gone = np.array(
            data.draw(
                st.lists(st.sampled_from(alive.tolist()), min_size=1, max_size=alive.size, unique=True)
            ),
            dtype=np.int64,
        )
        # Move time on, but not past any flow's finish, so bytes left stay positive.
        now += 0.5 * (float(s["finish"][alive].min()) - now)
        old_rate = s["rate"].copy()
        expected_left -= old_rate * (now - then)
        then = now
        level = remove_flows(paths, s["alive"], s["rate"], s["load"], s["count"], s["finish"], gone)
        assert level == old_rate[gone].min()
        assert not s["alive"][gone].any()
        assert np.all(s["rate"][gone] == 0) and np.all(np.isinf(s["finish"][gone]))
        resolve_above(
            paths,
            s["alive"],
            s["rate"],
            s["load"],
            capacity,
            level,
            s["left"],
            s["anchor"],
            s["finish"],
            now,
        )
        alive = s["alive"]
        if alive.any():
            expected = max_min_rates(paths[alive], capacity)[0]
            np.testing.assert_allclose(s["rate"][alive], expected, rtol=REL)
            # Flows below the level keep their rate.
            below = alive & (old_rate < level * (1 - 1e-9))
            np.testing.assert_array_equal(s["rate"][below], old_rate[below])
        load, count = link_sums(paths[alive], s["rate"][alive], n_links)
        np.testing.assert_allclose(s["load"], load, rtol=REL, atol=REL * capacity.max())
        np.testing.assert_array_equal(s["count"], count)
        # Bytes left: re-solved flows were re-anchored at `now` at their old rate, the others kept
        # their anchor and rate; either way the bytes left now match our own bookkeeping.
        remaining = s["left"] - old_rate * (now - s["anchor"])
        np.testing.assert_allclose(remaining[alive], expected_left[alive], rtol=REL, atol=REL * size.max())
        assert np.all(s["anchor"][alive] <= now)
        np.testing.assert_allclose(
            s["finish"][alive], s["anchor"][alive] + s["left"][alive] / s["rate"][alive], rtol=REL
        )


# ------------------------------------------------------------------------------ through the engine


@ENGINE
@given(
    leaves=st.integers(2, 4),
    spines=st.integers(1, 4),
    hosts_per_leaf=st.integers(1, 2),
    seed=st.integers(0, 2**31),
    size=st.sampled_from([1.0, 1e3, 7.5e6]),
    data=st.data(),
)
def test_equal_flows_finish_at_busiest_link(
    leaves: int, spines: int, hosts_per_leaf: int, seed: int, size: float, data: st.DataObject
) -> None:
    """Equal flows started together: completion = k_max * S / C under ECMP (all links capacity C)."""
    capacity = 25e9
    spec = make_spec(
        leaves=leaves,
        spines=spines,
        hosts_per_leaf=hosts_per_leaf,
        gpus_per_host=1,
        nic_bandwidth=capacity,
        uplink_bandwidth=capacity,
        nvlink_bandwidth=1e15,
    )
    gpu = st.integers(0, spec.gpus - 1)
    pairs = data.draw(st.lists(st.tuples(gpu, gpu).filter(lambda p: p[0] != p[1]), min_size=1, max_size=24))
    src, dst = np.array(pairs).T
    result = run_schedule(spec, one_step(spec, src, dst, size), "ecmp", seed)
    flows = result.flows()
    assert len(flows) == len(pairs)
    links = flows[[f"link{h}" for h in range(MAX_HOPS)]].to_numpy()
    k_max = int(np.bincount(links[links >= 0]).max())
    expected = k_max * size / capacity
    assert abs(result.completion_time - expected) < REL * expected


def gpu_host_leaf(result, gpus: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    topo = result.topology
    return topo.gpu_host[gpus], topo.gpu_leaf[gpus]


OVERSUBSCRIBED = dict(
    leaves=3,
    spines=2,
    hosts_per_leaf=2,
    gpus_per_host=2,
    nic_bandwidth=100.0,
    uplink_bandwidth=60.0,
    nvlink_bandwidth=300.0,
    link_latency=1e-3,
    message_latency=2e-3,
    nvlink_message_latency=5e-4,
)


@pytest.mark.parametrize("transport", ["ecmp", "spray", "split:3", "ethereal"])
@pytest.mark.parametrize("pattern", ["all_to_all", "unequal"])
def test_bytes_are_conserved(transport: str, pattern: str) -> None:
    spec = make_spec(**OVERSUBSCRIBED)
    if pattern == "all_to_all":
        schedule = collective_schedule(spec, "all_to_all", 1200.0)
    else:  # unequal sizes exercise ethereal's wrap-around splitting
        rng = np.random.default_rng(7)
        src = rng.integers(0, spec.gpus, 40)
        dst = (src + rng.integers(1, spec.gpus, 40)) % spec.gpus
        schedule = one_step(spec, src, dst, rng.uniform(10.0, 500.0, 40))
    result = run_schedule(spec, schedule, transport, seed=3)
    flows, messages, links = result.flows(), result.messages(), result.links()
    total = schedule.total_bytes
    assert messages["bytes"].sum() == pytest.approx(total, rel=1e-12)
    assert flows["bytes"].sum() == pytest.approx(total, rel=REL)
    per_message = flows.groupby("message")["bytes"].sum()
    np.testing.assert_allclose(per_message.to_numpy(), messages["bytes"].to_numpy(), rtol=REL)

    src, dst = messages["src"].to_numpy(), messages["dst"].to_numpy()
    (src_host, src_leaf), (dst_host, dst_leaf) = gpu_host_leaf(result, src), gpu_host_leaf(result, dst)
    nbytes = messages["bytes"].to_numpy()
    leaving = nbytes[src_host != dst_host].sum()
    inside = nbytes[src_host == dst_host].sum()
    crossing = nbytes[(src_host != dst_host) & (src_leaf != dst_leaf)].sum()
    by_kind = links.groupby("kind")["bytes"].sum()
    assert leaving > 0 and crossing > 0
    assert by_kind["nic_up"] == pytest.approx(leaving, rel=REL)
    assert by_kind["nic_down"] == pytest.approx(leaving, rel=REL)
    assert by_kind["nvlink_up"] == pytest.approx(inside, rel=REL)
    assert by_kind["uplink"] == pytest.approx(crossing, rel=REL)
    assert by_kind["downlink"] == pytest.approx(crossing, rel=REL)

    assert np.all(np.isfinite(messages["end"])) and np.all(messages["end"] >= messages["start"])
    assert np.all(np.isfinite(flows["end"])) and np.all(flows["end"] >= flows["start"])
    assert result.completion_time == pytest.approx(messages["end"].max(), rel=1e-12)


def test_resolve_above_a_level_no_flow_reaches_keeps_every_rate() -> None:
    """The fastest flow leaves and no other flow's rate is at its level: nothing is re-filled, the
    rates and finish times stand, and the load is what the general path computes (bit for bit)."""
    # links: 0 capacity 10 (flows 0, 1), 1 capacity 100 (flow 2 alone, the fastest)
    paths = np.array([[0, -1], [0, -1], [1, -1]], dtype=np.int32)
    capacity = np.array([10.0, 100.0])
    state = solve_all(paths, capacity, np.array([5.0, 5.0, 7.0]))
    assert state["rate"].tolist() == [5.0, 5.0, 100.0]
    fastest = np.array([2])
    level = remove_flows(
        paths, state["alive"], state["rate"], state["load"], state["count"], state["finish"], fastest
    )
    before = {k: v.copy() for k, v in state.items()}
    solved = resolve_state(paths, capacity, state, level, 0.07)
    assert solved == 0
    for key in ("rate", "finish", "left", "anchor", "alive"):
        np.testing.assert_array_equal(state[key], before[key])
    np.testing.assert_array_equal(state["load"], capacity - (capacity - before["load"]))
