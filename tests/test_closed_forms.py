"""Collectives through the whole engine against their closed forms on non-blocking fabrics.

Every term (α, propagation, bytes / bandwidth) is made worth well over the 0.5 % tolerance, so a
missing or doubled term fails."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from conftest import make_spec, run_schedule

from topologies.compiled import compile_fabric
from topologies.leaf_spine import oversubscription
from workloads.collectives import collective_schedule

TOL = 5e-3
NIC = 50e9  # 400 Gb/s
NVLINK = 450e9
ALPHA = 4e-6  # message_latency
ALPHA_NV = 1.5e-6  # nvlink_message_latency
LAT = 1e-6  # link_latency per NIC-tier or spine-tier link
PROP = 4 * LAT  # the longest path: NIC up, leaf to spine, spine to leaf, NIC down
SIZE = float(2**20)

# 4 leaves x 4 spines x 2 hosts/leaf x 4 GPUs/host; spines * uplink = hosts_per_leaf * gpus_per_host * NIC.
ONE_TO_ONE = dict(
    leaves=4,
    spines=4,
    hosts_per_leaf=2,
    gpus_per_host=4,
    nic_bandwidth=NIC,
    uplink_bandwidth=2 * NIC,
    nvlink_bandwidth=NVLINK,
    link_latency=LAT,
    message_latency=ALPHA,
    nvlink_message_latency=ALPHA_NV,
)


@pytest.fixture(scope="module")
def fabric():
    spec = make_spec(**ONE_TO_ONE)
    assert oversubscription(spec) == 1.0
    return compile_fabric(spec)


def completion(fabric, op: str, size: float = SIZE, transport: str = "spray", seed: int = 0, **kw) -> float:
    schedule = collective_schedule(fabric.spec, op, size, **kw)
    return run_schedule(fabric, schedule, transport, seed).completion_time


def test_all_to_all(fabric) -> None:
    spec = fabric.spec
    p, g = spec.gpus, spec.gpus_per_host
    egress = SIZE * (p - g) / p  # the part for GPUs on the same host goes over NVLink
    # NVLink is not the bottleneck: the intra-host part is over long before.
    assert ALPHA_NV + SIZE * (g - 1) / p / NVLINK < 0.2 * egress / NIC
    expected = ALPHA + PROP + egress / NIC
    assert completion(fabric, "all_to_all") == pytest.approx(expected, rel=TOL)


def test_all_to_all_under_ethereal_matches_spray(fabric) -> None:
    spray = completion(fabric, "all_to_all")
    assert completion(fabric, "all_to_all", transport="ethereal") == pytest.approx(spray, rel=TOL)
    # ECMP collides on the spine tier and can only be slower.
    assert completion(fabric, "all_to_all", transport="ecmp") >= spray * (1 - 1e-9)


@pytest.mark.parametrize("transport", ["spray", "ecmp"])
def test_ring_all_reduce_across_hosts(fabric, transport: str) -> None:
    p = fabric.spec.hosts  # one GPU per host; one flow per leaf and direction, so no collisions
    expected = 2 * (p - 1) * (ALPHA + PROP) + 2 * SIZE * (p - 1) / p / NIC
    got = completion(fabric, "all_reduce", ranks="one_per_host", transport=transport)
    assert got == pytest.approx(expected, rel=TOL)


def test_ring_all_reduce_on_gpus_per_host_one() -> None:
    spec = make_spec(**{**ONE_TO_ONE, "gpus_per_host": 1, "hosts_per_leaf": 3, "uplink_bandwidth": NIC})
    p = spec.gpus
    expected = 2 * (p - 1) * (ALPHA + PROP) + 2 * SIZE * (p - 1) / p / NIC
    schedule = collective_schedule(spec, "all_reduce", SIZE)
    assert run_schedule(spec, schedule, "spray").completion_time == pytest.approx(expected, rel=TOL)


def test_ring_all_reduce_inside_one_host() -> None:
    spec = make_spec(**{**ONE_TO_ONE, "leaves": 1, "hosts_per_leaf": 1, "gpus_per_host": 8})
    p = 8
    expected = 2 * (p - 1) * ALPHA_NV + 2 * SIZE * (p - 1) / p / NVLINK
    schedule = collective_schedule(spec, "all_reduce", SIZE)
    result = run_schedule(spec, schedule, "ecmp")
    assert result.completion_time == pytest.approx(expected, rel=TOL)
    links = result.links()
    assert links.loc[links["kind"].str.startswith("nic"), "bytes"].sum() == 0


@pytest.mark.parametrize("op", ["all_gather", "reduce_scatter"])
def test_ring_all_gather_and_reduce_scatter(fabric, op: str) -> None:
    p = fabric.spec.hosts
    expected = (p - 1) * (ALPHA + PROP) + SIZE * (p - 1) / p / NIC
    assert completion(fabric, op, ranks="one_per_host") == pytest.approx(expected, rel=TOL)


def test_hierarchical_all_reduce(fabric) -> None:
    spec = fabric.spec
    g, h = spec.gpus_per_host, spec.hosts
    intra = 2 * (g - 1) * (ALPHA_NV + SIZE / g / NVLINK)
    inter = 2 * (h - 1) * (ALPHA + PROP + SIZE / (g * h) / NIC)
    got = completion(fabric, "all_reduce", algorithm="hierarchical")
    assert got == pytest.approx(intra + inter, rel=TOL)
    # Far below a flat ring over all 32 GPUs, whose every step waits for a NIC hop.
    assert got < completion(fabric, "all_reduce")


def test_send_recv(fabric) -> None:
    expected = ALPHA + PROP + SIZE / NIC
    assert completion(fabric, "send_recv", ranks="one_per_host") == pytest.approx(expected, rel=TOL)


def test_send_recv_inside_one_host() -> None:
    spec = make_spec(**{**ONE_TO_ONE, "leaves": 1, "hosts_per_leaf": 1, "gpus_per_host": 4})
    schedule = collective_schedule(spec, "send_recv", SIZE)
    expected = ALPHA_NV + SIZE / NVLINK
    assert run_schedule(spec, schedule).completion_time == pytest.approx(expected, rel=TOL)


def test_shift_one_rack_on(fabric) -> None:
    expected = ALPHA + PROP + SIZE / NIC
    spray = completion(fabric, "shift", k=fabric.spec.hosts_per_leaf)
    assert spray == pytest.approx(expected, rel=TOL)
    assert completion(fabric, "shift", transport="ethereal") == pytest.approx(expected, rel=TOL)
    ecmp = [completion(fabric, "shift", transport="ecmp", seed=seed) for seed in range(4)]
    assert min(ecmp) >= expected * (1 - 1e-9)
    # 8 flows per leaf on 4 uplinks that each fit 2: a hash puts 3 on one uplink sooner or later.
    assert max(ecmp) > expected * (1 + TOL)


def test_same_leaf_shift_has_no_spine_hops(fabric) -> None:
    """k = 1 with 2 hosts per leaf: half the hosts send within their leaf (2 links), half across."""
    expected = ALPHA + PROP + SIZE / NIC
    assert completion(fabric, "shift", k=1) == pytest.approx(expected, rel=TOL)
    spec = make_spec(**{**ONE_TO_ONE, "leaves": 1})
    schedule = collective_schedule(spec, "shift", SIZE, k=1)
    expected = ALPHA + 2 * LAT + SIZE / NIC
    assert run_schedule(spec, schedule, "ecmp").completion_time == pytest.approx(expected, rel=TOL)


# ------------------------------------------------------------------------------ determinism


@pytest.mark.parametrize("transport", ["ecmp", "spray", "split:3", "ethereal"])
def test_same_simulation_twice_is_identical(fabric, transport: str) -> None:
    schedule = collective_schedule(fabric.spec, "all_to_all", SIZE)
    a = run_schedule(fabric, schedule, transport, seed=5)
    b = run_schedule(compile_fabric(fabric.spec), schedule, transport, seed=5)
    assert a.completion_time == b.completion_time
    pd.testing.assert_frame_equal(a.flows(), b.flows())
    pd.testing.assert_frame_equal(a.messages(), b.messages())
    pd.testing.assert_frame_equal(a.links(), b.links())


def test_seed_changes_ecmp_paths(fabric) -> None:
    schedule = collective_schedule(fabric.spec, "all_to_all", SIZE)
    a = run_schedule(fabric, schedule, "ecmp", seed=0).flows()
    b = run_schedule(fabric, schedule, "ecmp", seed=1).flows()
    assert (a["link1"] != b["link1"]).any()
    # The seed only moves flows between spines: same messages, same bytes, same endpoints.
    pd.testing.assert_frame_equal(
        a[["message", "src", "dst", "bytes"]], b[["message", "src", "dst", "bytes"]]
    )
    # ... and never changes spray, which has no choice to make.
    c = run_schedule(fabric, schedule, "spray", seed=0)
    d = run_schedule(fabric, schedule, "spray", seed=1)
    assert c.completion_time == d.completion_time
    np.testing.assert_array_equal(c.flows()["link1"], d.flows()["link1"])
