"""Tests for calibration.nccl_log: reading nccl-tests logs, writing them back, bus factors."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import DATA
from hypothesis import given, settings
from hypothesis import strategies as st

from calibration.nccl_log import (
    OPS,
    ROW_COLUMNS,
    NcclLog,
    NcclLogError,
    bus_factor,
    format_nccl_log,
    parse_nccl_log,
)

A3MEGA = Path(__file__).parent / "data" / "nccl" / "gcp_a3mega_2x8xH100_all_reduce.txt"

COLUMN_HEADER = """\
#                                              out-of-place                 in-place
#     size      count   type  redop  root     time  algbw  busbw #wrong     time  algbw  busbw #wrong
#      (B) (elements)                         (us) (GB/s) (GB/s)            (us) (GB/s) (GB/s)
"""
ROW_1K = (
    "     1024        256  float    sum    -1    20.50   0.05   0.09      0    20.10   0.05   0.10      0\n"
)
ROW_2K = (
    "     2048        512  float    sum    -1    21.00   0.10   0.18      0    20.90   0.10   0.18      0\n"
)


def write(tmp_path: Path, text: str, name: str = "log.txt") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def half(log: NcclLog, placement: str) -> pd.DataFrame:
    return log.rows[log.rows["placement"] == placement].reset_index(drop=True)


# --------------------------------------------------------------------------------------------------
# the real logs


def check_a3mega(log: NcclLog) -> None:
    assert (log.op, log.nranks, log.hosts) == ("all_reduce", 16, 2)
    assert log.command == "mpirun -np 16 -npernode 8 all_reduce_perf -b 8 -e 8G -f 2 -g 1"
    assert log.header["nGpus"] == "1" and log.header["iters"] == "20" and log.header["warmup iters"] == "5"
    assert log.header["maxBytes"] == "8589934592" and log.header["Avg bus bandwidth"] == "70.742"
    assert list(log.rows.columns) == list(ROW_COLUMNS) and len(log.rows) == 62
    out, inp = half(log, "out_of_place"), half(log, "in_place")
    assert list(log.rows["placement"]) == ["out_of_place"] * 31 + ["in_place"] * 31
    assert (out["size"].iloc[0], out["time_us"].iloc[0], inp["time_us"].iloc[0]) == (8, 135.8, 123.5)
    assert (out["size"].iloc[-1], out["count"].iloc[-1]) == (8589934592, 2147483648)
    assert (out["time_us"].iloc[-1], inp["time_us"].iloc[-1]) == (47535.0, 47743.0)
    assert (out["busbw_gbps"].iloc[-1], inp["algbw_gbps"].iloc[-1]) == (338.82, 179.92)
    assert (out["root"] == -1).all() and (out["redop"] == "sum").all() and (out["type"] == "float").all()
    assert (log.rows["wrong"] == 0).all()
    assert list(out["size"]) == [8 * 2**i for i in range(31)]


def test_a3mega_fixture_in_the_tree() -> None:
    check_a3mega(parse_nccl_log(A3MEGA))


def test_a3mega_shared() -> None:
    check_a3mega(parse_nccl_log(DATA / "nccl/gcp_a3mega_2x8xH100_all_reduce.txt"))


def test_a3high_all_gather() -> None:
    log = parse_nccl_log(DATA / "nccl/gcp_a3high_2x8xH100_all_gather.txt")
    assert (log.op, log.command, log.nranks, log.hosts) == ("all_gather", None, None, None)
    assert log.header["validation"] == "0" and log.header["iters"] == "200"
    out, inp = half(log, "out_of_place"), half(log, "in_place")
    assert len(out) == len(inp) == 11
    assert (out["size"].iloc[0], out["time_us"].iloc[0], inp["time_us"].iloc[0]) == (8388608, 784.9, 775.9)
    assert (out["size"].iloc[-1], out["time_us"].iloc[-1], inp["time_us"].iloc[-1]) == (
        8589934592,
        160505,
        160117,
    )
    assert (log.rows["redop"] == "none").all()


def test_a100_sendrecv() -> None:
    log = parse_nccl_log(DATA / "nccl/a100_8x_nvlink_sendrecv.txt")
    assert (log.op, log.nranks, log.hosts) == ("send_recv", 8, 1)  # one process, -g 8
    assert log.command == "./build/sendrecv_perf -b 128M -e 1G -f 2 -g 8"
    out, inp = half(log, "out_of_place"), half(log, "in_place")
    assert len(out) == len(inp) == 4
    assert (out["size"].iloc[0], out["time_us"].iloc[0], inp["time_us"].iloc[0]) == (
        134217728,
        1211.2,
        1211.8,
    )
    assert (out["size"].iloc[-1], out["time_us"].iloc[-1], inp["time_us"].iloc[-1]) == (
        1073741824,
        5503.4,
        5490.5,
    )
    assert (out["wrong"] == 0).all() and inp["wrong"].isna().all()  # N/A -> NaN
    assert out["busbw_gbps"].equals(out["algbw_gbps"])  # send/recv: bus factor 1


def test_gb300_alltoall() -> None:
    log = parse_nccl_log(DATA / "nccl/oci_gb300_4gpu_alltoall_truncated.txt")
    assert (log.op, log.command, log.nranks) == ("all_to_all", "alltoall_perf", None)
    out, inp = half(log, "out_of_place"), half(log, "in_place")
    assert list(out["size"]) == list(inp["size"]) == [8589934592, 17179869184]
    assert (out["time_us"].iloc[0], inp["time_us"].iloc[0]) == (10308.0, 9568.2)
    assert (out["time_us"].iloc[-1], inp["time_us"].iloc[-1]) == (20527.0, 18929.0)
    assert (out["wrong"] == 0).all() and inp["wrong"].isna().all()


def test_duplicated_table_is_read_once(tmp_path: Path) -> None:
    text = A3MEGA.read_text()
    log = parse_nccl_log(write(tmp_path, text + text, "twice_all_reduce.txt"))
    assert len(log.rows) == 62
    pd.testing.assert_frame_equal(log.rows, parse_nccl_log(A3MEGA).rows)


# --------------------------------------------------------------------------------------------------
# layout variants


def test_old_layout_without_root_and_with_error(tmp_path: Path) -> None:
    text = (
        "#                                     out-of-place                  in-place\n"
        "#     size      count   type  redop     time  algbw  busbw  error     time  algbw  busbw  error\n"
        "#      (B) (elements)                   (us) (GB/s) (GB/s)            (us) (GB/s) (GB/s)\n"
        "      1024        256  float    sum    20.50   0.05   0.09  0e+00    20.10   0.05   0.10  0e+00\n"
        "      2048        512  float    sum    21.00   0.10   0.18  1e-07    20.90   0.10   0.18    N/A\n"
    )
    log = parse_nccl_log(write(tmp_path, text))
    assert (log.rows["root"] == -1).all() and len(log.rows) == 4
    assert log.rows["wrong"].tolist()[:3] == [0.0, 1e-07, 0.0] and math.isnan(log.rows["wrong"].iloc[3])
    assert (log.op, log.nranks, log.hosts) == (None, None, None)


def test_extra_columns_are_found_by_name(tmp_path: Path) -> None:
    text = (
        "# Collective test starting: reduce_scatter_perf\n"
        "#       size   count  type  redop  root  time  algbw  busbw  #wrong  #bitdiff  i_min  i_max"
        "  time  algbw  busbw  #wrong  #bitdiff  i_min  i_max  timestamp\n"
        "        1024     256 float    sum    -1  20.5   0.05   0.09       0         0   19.0   22.0"
        "  20.1   0.05   0.10       0         0   19.5   21.0  2025-01-01 12:00:00\n"
    )
    log = parse_nccl_log(write(tmp_path, text))
    assert log.op == "reduce_scatter" and log.command == "reduce_scatter_perf"
    assert half(log, "out_of_place")["time_us"].tolist() == [20.5]
    assert half(log, "in_place")[["time_us", "busbw_gbps"]].values.tolist() == [[20.1, 0.10]]


def test_rank_lines_give_nranks_and_hosts(tmp_path: Path) -> None:
    ranks = "".join(
        f"#  Rank {r:2d} Group  0 Pid {1000 + r:6d} on {'host-a' if r < 4 else 'host-b':>10s} "
        f"device {r % 4:2d} [0x{r + 16:02x}] NVIDIA H100 80GB HBM3\n"
        for r in range(8)
    )
    text = (
        "# nccl-tests version 2.18.3 nccl-headers=23003 nccl-library=23003\n"
        "# Collective test starting: alltoall_perf\n"
        "# nThread 1 nGpus 1 minBytes 1024 maxBytes 2048 step: 2(factor) warmup iters: 1 iters: 20 "
        "agg iters: 1 validation: 1 graph: 0 unalign: 0\n#\n# Using devices\n"
        + ranks
        + "host-a:1000:1000 [0] NCCL INFO NCCL version 2.23.4+cuda12.6\n"
        + COLUMN_HEADER
        + ROW_1K
        + ROW_2K
    )
    log = parse_nccl_log(write(tmp_path, text), nranks=None)
    assert (log.op, log.nranks, log.hosts) == ("all_to_all", 8, 2)
    assert log.header["nccl-tests version"] == "2.18.3" and log.header["nccl-library"] == "23003"
    assert log.header["unalign"] == "0" and log.header["NCCL version"] == "2.23.4+cuda12.6"
    assert parse_nccl_log(write(tmp_path, text), nranks=4, op="all_gather_perf").nranks == 4


def test_arguments_override_the_log(tmp_path: Path) -> None:
    log = parse_nccl_log(A3MEGA, op="all_to_all", nranks=32)
    assert (log.op, log.nranks) == ("all_to_all", 32)
    with pytest.raises(ValueError, match='unknown op "nope"'):
        parse_nccl_log(A3MEGA, op="nope")


@pytest.mark.parametrize(
    ("command", "nranks", "hosts"),
    [
        ("$ mpirun -np 16 -npernode 8 ./build/all_reduce_perf -b 8 -e 8G -g 1", 16, 2),
        ("srun -N 4 --ntasks-per-node=8 /opt/nccl-tests/build/all_reduce_perf -b 8 -e 1G", 32, 4),
        ("root@node:~/nccl-tests# ./build/all_reduce_perf --minbytes 1G -g4 -t 2", 8, 1),
        ("NCCL_DEBUG=INFO mpirun -n 2 -x NCCL_DEBUG all_reduce_perf_mpi -g 8", 16, None),
    ],
)
def test_nranks_from_the_command(tmp_path: Path, command: str, nranks: int, hosts: int | None) -> None:
    log = parse_nccl_log(write(tmp_path, command + "\n" + COLUMN_HEADER + ROW_1K))
    assert (log.op, log.nranks, log.hosts) == ("all_reduce", nranks, hosts)


def test_no_column_header(tmp_path: Path) -> None:
    log = parse_nccl_log(write(tmp_path, ROW_1K + ROW_2K, "run_sendrecv.log"))
    assert log.op == "send_recv" and len(log.rows) == 4
    assert half(log, "in_place")["time_us"].tolist() == [20.1, 20.9]
    old = "  1024  256  float  sum  20.5  0.05  0.09  0  20.1  0.05  0.10  0\n"  # 12 fields: no root
    log = parse_nccl_log(write(tmp_path, old))
    assert len(log.rows) == 2 and (log.rows["root"] == -1).all() and (log.rows["redop"] == "sum").all()


def test_header_lines_without_hash(tmp_path: Path) -> None:
    stripped = "".join(line.lstrip("#") + "\n" for line in A3MEGA.read_text().splitlines())
    text = "[host-a:01234] MCA warning: ignored\nSource of value: environment\n" + stripped
    log = parse_nccl_log(write(tmp_path, text))
    pd.testing.assert_frame_equal(log.rows, parse_nccl_log(A3MEGA).rows)
    assert (log.op, log.nranks, log.hosts, log.header["iters"]) == ("all_reduce", 16, 2, "20")
    assert "Source of value" not in log.header  # only "# key: value" comments are kept


def test_op_from_file_name(tmp_path: Path) -> None:
    body = COLUMN_HEADER + ROW_1K
    names = {
        "x_allreduce.txt": "all_reduce",
        "alltoall-64.txt": "all_to_all",
        "reduce_scatter.out": "reduce_scatter",
        "AllGather.log": "all_gather",
        "bcast.txt": None,
    }
    for name, op in names.items():
        assert parse_nccl_log(write(tmp_path, body, name)).op == op, name


# --------------------------------------------------------------------------------------------------
# errors


def test_conflicting_rows_name_both_lines(tmp_path: Path) -> None:
    other = ROW_1K.replace("20.50", "30.50")
    path = write(tmp_path, COLUMN_HEADER + ROW_1K + ROW_2K + other)
    with pytest.raises(NcclLogError, match=r"log.txt: line 6: size 1024 \(out-of-place\) .*than line 4"):
        parse_nccl_log(path)


def test_non_numeric_field_names_the_line(tmp_path: Path) -> None:
    path = write(tmp_path, COLUMN_HEADER + ROW_1K + ROW_2K.replace("20.90", "2O.90"))
    with pytest.raises(NcclLogError) as err:
        parse_nccl_log(path)
    message = str(err.value)
    assert message == f"{path}: line 5: expected a positive number for time (in-place), got '2O.90'"
    path = write(tmp_path, COLUMN_HEADER + ROW_1K.replace(" 256 ", " 2.5 "))
    with pytest.raises(NcclLogError, match="line 4: expected a whole number for count, got '2.5'"):
        parse_nccl_log(path)
    path = write(tmp_path, COLUMN_HEADER + ROW_1K.replace("20.50", "0.00"))
    with pytest.raises(NcclLogError, match=r"line 4: expected a positive number for time \(out-of-place\)"):
        parse_nccl_log(path)


def test_wrong_number_of_fields(tmp_path: Path) -> None:
    path = write(tmp_path, COLUMN_HEADER + "  1024  256  float  sum  -1  20.5  0.05\n")
    with pytest.raises(NcclLogError) as err:
        parse_nccl_log(path)
    assert str(err.value) == (
        f"{path}: line 4: expected 13 columns (size count type redop root time algbw busbw #wrong "
        "time algbw busbw #wrong), got 7"
    )
    with pytest.raises(NcclLogError, match="line 1: expected a column header before the table"):
        parse_nccl_log(write(tmp_path, "  1024  256  float  sum  -1  20.5  0.05\n"))


def test_empty_table(tmp_path: Path) -> None:
    text = "# nThread 1 nGpus 1 minBytes 8 maxBytes 8\n" + COLUMN_HEADER + "# Out of bounds values : 0 OK\n"
    with pytest.raises(NcclLogError, match="log.txt: no data rows"):
        parse_nccl_log(write(tmp_path, text))


def test_unreadable_path(tmp_path: Path) -> None:
    with pytest.raises(NcclLogError, match="missing.txt: cannot read the log"):
        parse_nccl_log(tmp_path / "missing.txt")
    with pytest.raises(NcclLogError, match="cannot read the log"):
        parse_nccl_log(tmp_path)


# --------------------------------------------------------------------------------------------------
# writing


def test_format_real_log_round_trip(tmp_path: Path) -> None:
    log = parse_nccl_log(A3MEGA)
    lines = [
        f"#  Rank {r:2d} Group  0 Pid {r:6d} on {'h' + str(r // 8):>10s} device {r % 8:2d} [0x18] H100"
        for r in range(16)
    ]
    text = format_nccl_log("all_reduce", log.rows, nranks=16, header=log.header, rank_lines=lines)
    assert "# Collective test starting: all_reduce_perf" in text and "# Out of bounds values : 0 OK" in text
    back = parse_nccl_log(write(tmp_path, text, "out.txt"))
    pd.testing.assert_frame_equal(back.rows, log.rows)
    assert (back.op, back.nranks, back.hosts) == ("all_reduce", 16, 2)
    for key in ("nThread", "nGpus", "minBytes", "maxBytes", "step", "warmup iters", "iters", "source", "cmd"):
        assert back.header[key] == log.header[key], key
    assert float(back.header["Avg bus bandwidth"]) == pytest.approx(log.rows["busbw_gbps"].mean(), rel=1e-5)
    # as nccl-tests prints: the same columns under the same header
    assert "#       size         count      type   redop    root     time   algbw   busbw  #wrong" in text
    assert "           8             2     float     sum      -1   135.80    0.00    0.00       0" in text


def test_format_without_rank_lines_keeps_nranks(tmp_path: Path) -> None:
    rows = parse_nccl_log(A3MEGA).rows
    back = parse_nccl_log(write(tmp_path, format_nccl_log("all_reduce_perf", rows, nranks=16)))
    assert (back.nranks, back.hosts, back.op) == (16, None, "all_reduce")


def test_format_one_placement_and_na(tmp_path: Path) -> None:
    rows = pd.DataFrame(
        {
            "size": [1024, 4096],
            "count": [256, 1024],
            "type": "float",
            "redop": "none",
            "root": -1,
            "placement": "out_of_place",
            "time_us": [12.345678, 20.0],
            "algbw_gbps": [0.0829, 0.2048],
            "busbw_gbps": [0.0725, 0.1792],
            "wrong": ["N/A", 0],
        }
    )
    back = parse_nccl_log(write(tmp_path, format_nccl_log("all_to_all", rows, nranks=8)))
    assert list(back.rows["placement"]) == ["out_of_place"] * 2
    assert back.rows["time_us"].tolist() == [12.345678, 20.0]
    assert math.isnan(back.rows["wrong"].iloc[0]) and back.rows["wrong"].iloc[1] == 0


def test_format_rejects_bad_rows() -> None:
    rows = parse_nccl_log(A3MEGA).rows
    with pytest.raises(ValueError, match="lack columns wrong"):
        format_nccl_log("all_reduce", rows.drop(columns="wrong"), nranks=16)
    with pytest.raises(ValueError, match="lacks"):
        format_nccl_log("all_reduce", rows.iloc[1:], nranks=16)
    with pytest.raises(ValueError, match="time_us must be positive"):
        format_nccl_log("all_reduce", rows.assign(time_us=0.0), nranks=16)
    with pytest.raises(ValueError, match='unknown op "allreduce"'):
        format_nccl_log("allreduce", rows, nranks=16)
    with pytest.raises(ValueError, match="rank_lines name 1 ranks, but nranks is 16"):
        format_nccl_log(
            "all_reduce", rows, nranks=16, rank_lines=["#  Rank  0 Group  0 Pid 1 on a device 0 x"]
        )


ROW_VALUES = st.fixed_dictionaries(
    {
        "count": st.integers(0, 2**40),
        "type": st.sampled_from(["float", "half", "bfloat16", "int8", "f8e4m3"]),
        "redop": st.sampled_from(["sum", "none", "max"]),
        "root": st.integers(-1, 64),
        "time_us": st.floats(1e-3, 1e9, allow_nan=False, allow_infinity=False),
        "algbw_gbps": st.floats(0.0, 1e5, allow_nan=False, allow_infinity=False),
        "busbw_gbps": st.floats(0.0, 1e5, allow_nan=False, allow_infinity=False),
        "wrong": st.one_of(st.just(math.nan), st.integers(0, 10**6).map(float), st.floats(0, 1)),
    }
)


@settings(max_examples=60, deadline=None)
@given(
    sizes=st.lists(st.integers(0, 2**44), min_size=1, max_size=12, unique=True),
    values=st.data(),
    placements=st.sampled_from([("out_of_place", "in_place"), ("out_of_place",), ("in_place",)]),
    op=st.sampled_from(sorted(OPS.values())),
    nranks=st.integers(1, 4096),
)
def test_format_parse_round_trip(
    tmp_path_factory: pytest.TempPathFactory,
    sizes: list[int],
    values: st.DataObject,
    placements: tuple[str, ...],
    op: str,
    nranks: int,
) -> None:
    records = []
    for size in sizes:
        common = values.draw(ROW_VALUES)
        for placement in placements:
            measured = values.draw(ROW_VALUES)
            records.append(
                {"size": size, "count": common["count"], "type": common["type"], "redop": common["redop"]}
                | {"root": common["root"], "placement": placement}
                | {k: measured[k] for k in ("time_us", "algbw_gbps", "busbw_gbps", "wrong")}
            )
    rows = pd.DataFrame.from_records(records, columns=list(ROW_COLUMNS)).sample(frac=1.0, random_state=0)
    text = format_nccl_log(op, rows, nranks=nranks)
    path = tmp_path_factory.mktemp("round") / "log.txt"
    path.write_text(text)
    back = parse_nccl_log(path)
    assert (back.op, back.nranks) == (op, nranks)
    order = {"out_of_place": 0, "in_place": 1}
    expected = rows.sort_values(
        ["placement", "size"], key=lambda c: c.map(order) if c.name == "placement" else c
    )
    expected = expected.reset_index(drop=True).astype(back.rows.dtypes.to_dict())
    pd.testing.assert_frame_equal(back.rows, expected)


# --------------------------------------------------------------------------------------------------
# bus factors


def test_bus_factor() -> None:
    assert bus_factor("all_reduce", 16) == pytest.approx(2 * 15 / 16)
    for op in ("all_gather", "reduce_scatter", "all_to_all", "alltoall_perf"):
        assert bus_factor(op, 8) == pytest.approx(7 / 8)
    for op in ("send_recv", "broadcast", "reduce"):
        assert bus_factor(op, 8) == 1.0
    assert bus_factor("all_reduce", 1) == 0.0
    with pytest.raises(ValueError, match='unknown op "p2p"'):
        bus_factor("p2p", 8)
    with pytest.raises(ValueError, match="at least 1"):
        bus_factor("all_reduce", 0)


def test_bus_factor_matches_the_logs() -> None:
    for name, nranks in (("gcp_a3mega_2x8xH100_all_reduce.txt", 16), ("a100_8x_nvlink_sendrecv.txt", 8)):
        log = parse_nccl_log(DATA / f"nccl/{name}")
        big = log.rows[log.rows["algbw_gbps"] > 10]
        ratio = big["busbw_gbps"] / big["algbw_gbps"]
        np.testing.assert_allclose(ratio, bus_factor(log.op, nranks), rtol=2e-3)
    log = parse_nccl_log(DATA / "nccl/gcp_a3high_2x8xH100_all_gather.txt")
    ratio = (log.rows["busbw_gbps"] / log.rows["algbw_gbps"]).to_numpy()
    np.testing.assert_allclose(ratio, bus_factor("all_gather", 16), rtol=3e-3)  # 2 hosts x 8 GPUs
