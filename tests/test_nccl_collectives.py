"""NCCL-style collectives (:mod:`workloads.nccl`) through the engine against their closed forms on
non-blocking fabrics, and their structure: channels over rails, connections and QPs, PXN, trees.

Every closed form is written out here from the algorithm's definition, not taken from the module.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from conftest import make_spec, run_schedule

from topologies.compiled import compile_fabric
from workloads.collectives import collective_schedule, pipeline_chunks
from workloads.nccl import AlgorithmError, btree_parent, double_tree, nccl_schedule, over_channels, resolve

TOL = 5e-3
NIC = 50e9
NVLINK = 450e9
ALPHA = 4e-6
ALPHA_NV = 1.5e-6
SIZE = float(2**24)

# Two hosts of 4 GPUs under one leaf: no spine, every NIC a full-rate port.
TWO_HOSTS = dict(
    leaves=1,
    spines=1,
    hosts_per_leaf=2,
    gpus_per_host=4,
    nic_bandwidth=NIC,
    uplink_bandwidth=NIC,
    nvlink_bandwidth=NVLINK,
    message_latency=ALPHA,
    nvlink_message_latency=ALPHA_NV,
)


def run(spec, op: str, algorithm: str, channels: int, protocol: str = "Simple", qps: int = 1, **kw):
    schedule = collective_schedule(
        spec,
        op,
        kw.pop("size", SIZE),
        algorithm=algorithm,
        protocol=protocol,
        channels=channels,
        qps=qps,
        **kw,
    )
    return schedule, run_schedule(compile_fabric(spec), schedule, kw.pop("transport", "ecmp"))


@pytest.mark.parametrize("op", ["all_gather", "reduce_scatter", "all_to_all", "all_reduce"])
def test_one_channel_one_qp_simple_is_the_legacy_schedule(op: str) -> None:
    spec = make_spec(**{**TWO_HOSTS, "leaves": 2, "spines": 2, "hosts_per_leaf": 1, "link_latency": 1e-6})
    algorithm = "direct" if op == "all_to_all" else "ring"
    legacy = collective_schedule(spec, op, SIZE)
    ported = collective_schedule(spec, op, SIZE, algorithm=algorithm, protocol="Simple", channels=1, qps=1)
    for field in ("ranks", "src", "dst", "nbytes", "step"):
        np.testing.assert_array_equal(getattr(legacy, field), getattr(ported, field))
    assert legacy.n_steps == ported.n_steps
    fabric = compile_fabric(spec)
    for seed in (0, 1, 2):
        a = run_schedule(fabric, legacy, "ecmp", seed)
        b = run_schedule(fabric, ported, "ecmp", seed)
        assert a.completion_time == b.completion_time
        assert a.messages().equals(b.messages()) and a.flows().equals(b.flows())


@pytest.mark.parametrize("channels", [1, 2, 4, 8])
@pytest.mark.parametrize("op", ["all_gather", "all_reduce"])
def test_multi_channel_ring_has_the_bandwidth_of_the_rails_it_uses(op: str, channels: int) -> None:
    spec = make_spec(**TWO_HOSTS)
    p, n_nics = spec.gpus, spec.gpus_per_host
    rails = min(channels, n_nics)  # C >= N channels use every NIC, no more
    steps = 2 * (p - 1) if op == "all_reduce" else p - 1
    # Every step waits for the network edge: α + that channel's chunk over its NIC share.
    chunk = SIZE / (channels * p)
    per_nic = channels / rails  # channels sharing one NIC
    expected = steps * (ALPHA + chunk * per_nic / NIC)
    assert expected == pytest.approx(steps * ALPHA + steps * SIZE / p / (rails * NIC))
    schedule, result = run(spec, op, "ring", channels)
    assert schedule.channels == channels and schedule.n_lanes == channels
    assert result.completion_time == pytest.approx(expected, rel=TOL)


def test_ring_channels_are_rail_aligned_and_use_pxn() -> None:
    spec = make_spec(**TWO_HOSTS)
    fabric = compile_fabric(spec)
    _, result = run(spec, "all_gather", "ring", 4)
    flows = result.flows()
    remote = flows[flows["src"] // 4 != flows["dst"] // 4]
    rail_of_nic_up = {int(link): gpu % 4 for gpu, link in enumerate(fabric.nic_up)}
    nvlink_up = set(fabric.nvl_up.tolist())
    for _, row in remote.iterrows():
        hops = [int(row[f"link{h}"]) for h in range(6) if row[f"link{h}"] >= 0]
        nic = [rail_of_nic_up[h] for h in hops if h in rail_of_nic_up]
        # leaves through the NIC of the destination's rail: same NIC index on both hosts
        assert nic == [int(row["dst"]) % 4]
        # the channel's last GPU on the host is not on that rail: NVLink to it first (PXN)
        assert (hops[0] in nvlink_up) == (int(row["src"]) % 4 != int(row["dst"]) % 4)
    assert sorted(set((remote["dst"] % 4).tolist())) == [0, 1, 2, 3]
    links = result.links()
    assert (links[links["kind"] == "nic_up"]["bytes"] > 0).all()  # every NIC carries a channel


@pytest.mark.parametrize(("channels", "qps"), [(1, 1), (2, 3), (4, 2), (8, 1)])
def test_c_times_q_flows_cross_each_host_boundary(channels: int, qps: int) -> None:
    spec = make_spec(**{**TWO_HOSTS, "leaves": 2, "spines": 4, "hosts_per_leaf": 1})
    schedule, result = run(spec, "all_gather", "ring", channels, qps=qps, size=float(2**20))
    flows = result.flows()
    msgs = result.messages()
    out = flows[(flows["src"] // 4 == 0) & (flows["dst"] // 4 == 1)]
    steps = schedule.n_steps
    # C channels x Q QPs per step, and each connection hashes the same way in every step
    assert len(out) == channels * qps * steps
    assert len(msgs[(msgs["src"] // 4 == 0) & (msgs["dst"] // 4 == 1)]) == channels * steps
    if channels * qps > 1:  # (one channel, one QP is the legacy schedule: a fresh hash per message)
        per_connection = out.groupby(["src", "dst"])["link1"].nunique()
        assert (per_connection <= qps).all()


def test_tree_closed_form_two_hosts_one_gpu_each() -> None:
    spec = make_spec(**{**TWO_HOSTS, "gpus_per_host": 1})
    chunks = pipeline_chunks(2, SIZE / NIC, ALPHA)
    piece = SIZE / chunks
    # child sends chunk j up at step j, the root sends it back down at step j+1: k+1 steps
    expected = (chunks + 1) * (ALPHA + piece / NIC)
    schedule, result = run(spec, "all_reduce", "tree", 1)
    assert schedule.n_steps == chunks + 1
    assert result.completion_time == pytest.approx(expected, rel=TOL)


def test_tree_moves_each_share_once_up_and_once_down() -> None:
    spec = make_spec(**{**TWO_HOSTS, "hosts_per_leaf": 5})
    channels = 4
    schedule, _ = run(spec, "all_reduce", "tree", channels, size=1e6)
    members = spec.gpus
    sent = np.bincount(schedule.src, weights=schedule.nbytes, minlength=members)
    received = np.bincount(schedule.dst, weights=schedule.nbytes, minlength=members)
    # every GPU but each channel's root sends its share up once and receives it down once
    total = 2 * 1e6 * (members - 1)
    assert sent.sum() == pytest.approx(total) and received.sum() == pytest.approx(total)


@pytest.mark.parametrize("n", range(2, 12))
def test_double_binary_tree(n: int) -> None:
    parent = btree_parent(n)
    assert (parent[0] == -1) and np.all(parent[1:] >= 0) and np.all(parent[1:] < n)
    for tree in double_tree(n):
        assert (tree == -1).sum() == 1  # one root, every node reaches it
        for node in range(n):
            seen, up = 0, node
            while tree[up] >= 0:
                up, seen = tree[up], seen + 1
                assert seen <= n
        children = np.bincount(tree[tree >= 0], minlength=n)
        assert children.max() <= 2
    first, second = double_tree(n)
    leaves = [set(np.flatnonzero(np.bincount(t[t >= 0], minlength=n) == 0)) for t in (first, second)]
    if n > 2:
        # a host that is a leaf of one tree is inner in the other (all but one at odd n)
        assert len(leaves[0] & leaves[1]) <= (n % 2)


def test_nvls_closed_form_in_one_host() -> None:
    g = 8
    spec = make_spec(**{**TWO_HOSTS, "hosts_per_leaf": 1, "gpus_per_host": g, "gpu": "H100"})
    bandwidth, alpha = NVLINK, ALPHA_NV
    share = SIZE
    chunks = pipeline_chunks(2, share * (1 + 1 / g) / bandwidth, alpha)
    piece = share / chunks
    # step 0: pull chunk 0 (piece up per GPU); steps 1..k-1: pull chunk j and push chunk j-1
    # (piece + piece/g each way); step k: multicast the last chunk (piece down).
    expected = (chunks + 1) * alpha + 2 * piece / bandwidth + (chunks - 1) * piece * (1 + 1 / g) / bandwidth
    _, result = run(spec, "all_reduce", "nvls", 1)
    assert result.completion_time == pytest.approx(expected, rel=TOL)
    # NVLS beats the ring inside the host: about size per GPU each way instead of 2(g-1)/g size
    _, ring = run(spec, "all_reduce", "ring", 1)
    assert result.completion_time < 0.7 * ring.completion_time


@pytest.mark.parametrize("p", [2, 3, 4, 5, 8])
@pytest.mark.parametrize("op", ["all_gather", "reduce_scatter"])
def test_pat_closed_form(op: str, p: int) -> None:
    spec = make_spec(**{**TWO_HOSTS, "hosts_per_leaf": p, "gpus_per_host": 2})
    rounds = math.ceil(math.log2(p))
    block = SIZE / p
    blocks = [min(2**s, p - 2**s) for s in range(rounds)]
    assert sum(blocks) == p - 1
    expected = rounds * ALPHA + sum(blocks) * block / NIC
    _, result = run(spec, op, "pat", 1, ranks="one_per_host")
    assert result.completion_time == pytest.approx(expected, rel=TOL)


@pytest.mark.parametrize("op", ["broadcast", "reduce"])
def test_broadcast_and_reduce_pipeline_closed_form(op: str) -> None:
    g = 6
    spec = make_spec(**{**TWO_HOSTS, "hosts_per_leaf": 1, "gpus_per_host": g})
    chunks = pipeline_chunks(g - 1, SIZE / NVLINK, ALPHA_NV)
    piece = SIZE / chunks
    expected = (chunks + g - 2) * (ALPHA_NV + piece / NVLINK)
    schedule, result = run(spec, op, "ring", 1)
    assert result.completion_time == pytest.approx(expected, rel=TOL)
    root = 0
    if op == "broadcast":
        assert not np.any(schedule.dst == root)
        assert np.bincount(schedule.dst, weights=schedule.nbytes)[1:] == pytest.approx(SIZE)
    else:
        assert not np.any(schedule.src == root)
        assert np.bincount(schedule.src, weights=schedule.nbytes, minlength=g)[1:] == pytest.approx(SIZE)


def test_protocol_sets_alpha_and_wire_bytes() -> None:
    spec = make_spec(**{**TWO_HOSTS, "ll_message_latency": 1e-6, "ll128_message_latency": 2e-6})
    p = spec.gpus
    for protocol, alpha, wire in (("Simple", ALPHA, 1.0), ("LL128", 2e-6, 128 / 120), ("LL", 1e-6, 2.0)):
        expected = (p - 1) * (alpha + wire * SIZE / (4 * p) / NIC)
        _, result = run(spec, "all_gather", "ring", 4, protocol=protocol)
        assert result.completion_time == pytest.approx(expected, rel=TOL), protocol


def test_all_to_all_channels_and_qps_conserve_bytes() -> None:
    spec = make_spec(**{**TWO_HOSTS, "leaves": 2, "spines": 2, "hosts_per_leaf": 1})
    schedule, result = run(spec, "all_to_all", "direct", 2, qps=2, size=8e6)
    p = spec.gpus
    assert schedule.nbytes.sum() == pytest.approx(8e6 * (p - 1))
    flows = result.flows()
    remote = flows[flows["src"] // 4 != flows["dst"] // 4]
    assert len(remote) == (p * (p - 4)) * 2 * 2  # pairs across hosts x channels x QPs
    assert flows["bytes"].sum() == pytest.approx(8e6 * (p - 1))


def test_pxn_keeps_cross_rail_traffic_off_the_spines() -> None:
    # rail-optimized: NIC i of every host on leaf i; cross-rail traffic needs the spine unless PXN
    spec = make_spec(**{**TWO_HOSTS, "leaves": 4, "spines": 2, "rail_optimized": True})
    _, direct = run(spec, "all_to_all", "direct", 1, size=1e6)
    _, pxn = run(spec, "all_to_all", "pxn", 1, size=1e6)

    def spine_bytes(result) -> float:
        links = result.links()
        return float(links[links["kind"] == "uplink"]["bytes"].sum())

    assert spine_bytes(direct) > 0 and spine_bytes(pxn) == 0
    nvl = lambda r: float(r.links().query("kind == 'nvlink_up'")["bytes"].sum())  # noqa: E731
    assert nvl(pxn) > nvl(direct)  # the proxy hop crosses NVLink


@pytest.mark.parametrize(
    ("overrides", "op", "algorithm", "ranks", "match"),
    [
        ({"gpu": "A100"}, "all_reduce", "nvls", "all", "nvls needs an NVLink domain"),
        ({}, "all_reduce", "pat", "all", "pat does not apply to all_reduce"),
        ({}, "all_gather", "pat", "all", "pat needs one rank per host"),
        ({}, "all_gather", "tree", "all", "tree does not apply to all_gather"),
        ({}, "all_reduce", "nvls", "all", "across hosts try nvls_tree"),
    ],
)
def test_algorithms_that_do_not_apply(overrides, op, algorithm, ranks, match) -> None:
    spec = make_spec(**{**TWO_HOSTS, **overrides})
    with pytest.raises(AlgorithmError, match=match) as err:
        collective_schedule(spec, op, SIZE, algorithm=algorithm, protocol="Simple", channels=2, ranks=ranks)
    assert err.value.field == "algorithm" and "\n" not in str(err.value)


def test_nccl_schedule_refuses_bad_protocol_and_channels() -> None:
    fabric = make_spec(**TWO_HOSTS).describe()
    with pytest.raises(AlgorithmError, match="protocol"):
        nccl_schedule(fabric, "all_gather", np.arange(8), SIZE, "ring", "LL64", 1)
    with pytest.raises(AlgorithmError, match="channels"):
        nccl_schedule(fabric, "all_gather", np.arange(8), SIZE, "ring", "LL", 0)


def test_over_channels_cuts_messages_and_keeps_bytes() -> None:
    spec = make_spec(**{**TWO_HOSTS, "leaves": 2, "spines": 2, "hosts_per_leaf": 1})
    base = collective_schedule(spec, "all_to_all", 8e6)
    cut = over_channels(base, 3, 2, spec.gpus)
    assert over_channels(base, 1, 1, spec.gpus) is base
    assert cut.n_lanes == 3 and cut.qps == 2 and len(cut.src) == 3 * len(base.src)
    assert cut.nbytes.sum() == pytest.approx(base.nbytes.sum())
    result = run_schedule(compile_fabric(spec), cut, "ecmp")
    flows = result.flows()
    remote = (flows["src"] // 4) != (flows["dst"] // 4)
    assert remote.sum() == 3 * 2 * ((base.src // 4) != (base.dst // 4)).sum()
    # on a non-blocking fabric the cut changes nothing but the flow count
    baseline = run_schedule(compile_fabric(spec), base, "spray").completion_time
    assert run_schedule(compile_fabric(spec), cut, "spray").completion_time == pytest.approx(
        baseline, rel=1e-9
    )


# ------------------------------------------------------------------------- auto: NCCL's own choice
A100_HOST = dict(
    leaves=1,
    spines=1,
    hosts_per_leaf=1,
    gpus_per_host=8,
    nic_bandwidth=25e9,
    uplink_bandwidth=25e9,
    nvlink_bandwidth=300e9,
    gpu="A100",
)
H100_TWO_HOSTS = dict(
    leaves=1,
    spines=1,
    hosts_per_leaf=2,
    gpus_per_host=8,
    nic_bandwidth=50e9,
    uplink_bandwidth=50e9,
    nvlink_bandwidth=450e9,
    gpu="H100",
)


@pytest.mark.parametrize("op", ["all_reduce", "all_gather", "reduce_scatter"])
@pytest.mark.parametrize(("fabric", "cfg"), [(A100_HOST, "a"), (H100_TWO_HOSTS, "b")])
def test_auto_picks_what_nccls_cost_model_picks(fabric: dict, cfg: str, op: str) -> None:
    # the expected table is the independent re-derivation of the cost model in test_nccl_tuning
    from test_nccl_tuning import CFG, SIZES, _expected_switches

    spec = make_spec(**fabric)
    switches = _expected_switches(CFG[cfg], op)
    got, previous = [], None
    for size in SIZES:
        resolved = resolve(spec.describe(), op, np.arange(spec.gpus), float(size), "auto", None, None)
        if resolved[:2] != previous:
            got.append((size, *resolved[:2]))
            previous = resolved[:2]
    assert got == switches
    assert len(got) >= 3  # the protocol changes at least twice over 8 B .. 8 GiB


def test_auto_schedule_says_what_it_chose() -> None:
    spec = make_spec(**H100_TWO_HOSTS)
    small = collective_schedule(spec, "all_reduce", 4096.0, algorithm="auto")
    large = collective_schedule(spec, "all_reduce", float(2**30), algorithm="auto")
    assert (small.algorithm, small.protocol) == ("tree", "LL")
    assert (large.algorithm, large.protocol) == ("nvls_tree", "Simple")
    assert small.channels <= large.channels == 16
    pinned = collective_schedule(spec, "all_reduce", float(2**30), algorithm="ring", protocol="auto")
    assert (pinned.algorithm, pinned.protocol) == ("ring", "Simple")
    assert collective_schedule(spec, "all_reduce", 4096.0, algorithm="ring", protocol="auto").protocol == "LL"


def test_auto_refuses_fabrics_whose_search_it_cannot_emulate() -> None:
    spec = make_spec(**{**H100_TWO_HOSTS, "gpu": "A100"})
    with pytest.raises(AlgorithmError, match="auto cannot emulate NCCL's search here"):
        collective_schedule(spec, "all_reduce", 1e6, algorithm="auto")


def test_call_latency_comes_once_before_the_first_step() -> None:
    spec = make_spec(**TWO_HOSTS)
    _, plain = run(spec, "all_gather", "ring", 4)
    _, called = run(
        make_spec(**{**TWO_HOSTS, "collective_latency": 30e-6, "p2p_latency": 70e-6}), "all_gather", "ring", 4
    )
    assert called.completion_time == pytest.approx(plain.completion_time + 30e-6, rel=1e-9)
    _, a2a = run(spec, "all_to_all", "direct", 2)
    _, a2a_called = run(make_spec(**{**TWO_HOSTS, "p2p_latency": 70e-6}), "all_to_all", "direct", 2)
    assert a2a_called.completion_time == pytest.approx(a2a.completion_time + 70e-6, rel=1e-9)
