"""calibration.nccl_log on real nccl-tests logs as they come: older layouts with blank fields, repeated
size-0 rows, rank and host counts from the header (and refusing what it cannot settle), the
``--ranks`` / ``--hosts`` overrides of ``moesim calibrate``, and one-line errors."""

from __future__ import annotations

import re
from pathlib import Path

import pandas as pd
import pytest

import experiments.calibrate_command as calibrate_command
from calibration.nccl_log import NcclLog, NcclLogError, parse_nccl_log
from experiments.cli import main

ROOT = Path(__file__).resolve().parent.parent
NCCL = ROOT / "tests" / "data" / "nccl"
ALL_REDUCE = NCCL / "superbench_8xA100_all_reduce.txt"
ALL_GATHER = NCCL / "superbench_8xA100_all_gather.txt"
ALLTOALL = NCCL / "superbench_8xA100_alltoall.txt"
GB200 = NCCL / "oci_gb200_32x4_all_reduce_truncated.txt"
A3MEGA = NCCL / "gcp_a3mega_2x8xH100_all_reduce.txt"
TOPOLOGY = ROOT / "experiments" / "examples" / "gcp_a3mega.yaml"

HEADER_13 = (
    "#     size      count   type  redop  root     time  algbw  busbw #wrong     time  algbw  busbw #wrong\n"
)
ROW = "1024 256 float sum -1 20.5 0.05 0.09 0 20.1 0.05 0.10 0\n"
RUN_LINE = "# nThread {t} nGpus {g} minBytes 1024 maxBytes 1024 step: 2(factor) warmup iters: 5 iters: 20\n"


def write(tmp_path: Path, text: str, name: str = "log.txt") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def half(log: NcclLog, placement: str = "out_of_place") -> pd.DataFrame:
    return log.rows[log.rows["placement"] == placement].reset_index(drop=True)


def rank_lines(hosts: list[str], *, group: bool = True, gpu: str = "NVIDIA H100 80GB HBM3") -> str:
    """``# Rank`` lines, one per entry of ``hosts`` (its host), one process per rank."""
    tag = " Group  0" if group else ""
    return "".join(
        f"#  Rank {r:2d}{tag} Pid {100 + r:6d} on {host:>10s} device {r % 8:2d} [0x{r:02x}] {gpu}\n"
        for r, host in enumerate(hosts)
    )


# --------------------------------------------------------------------------------------------------
# every fixture: op, ranks, hosts, GPU, rows


@pytest.mark.parametrize(
    ("name", "kwargs", "expected"),
    [
        ("superbench_8xA100_all_reduce.txt", {}, ("all_reduce", 8, 1, "A100-SXM4-40GB", 66)),
        ("superbench_8xA100_all_gather.txt", {}, ("all_gather", 8, 1, "A100-SXM4-40GB", 60)),
        ("superbench_8xA100_alltoall.txt", {}, ("all_to_all", 8, 1, "A100-SXM4-40GB", 60)),
        ("gcp_a3mega_2x8xH100_all_reduce.txt", {}, ("all_reduce", 16, 2, None, 62)),
        (
            "oci_gb200_32x4_all_reduce_truncated.txt",
            {"nranks": 128, "hosts": 32},
            ("all_reduce", 128, 32, "NVIDIA GB200", 66),
        ),
    ],
)
def test_fixtures(name: str, kwargs: dict, expected: tuple) -> None:
    log = parse_nccl_log(NCCL / name, **kwargs)
    assert (log.op, log.nranks, log.hosts, log.gpu, len(log.rows)) == expected
    assert not log.rows.duplicated(["placement", "size"]).any()


# --------------------------------------------------------------------------------------------------
# 1. older layouts: no root, "error", blank redop


def test_superbench_all_reduce_without_root_with_error() -> None:
    log = parse_nccl_log(ALL_REDUCE)
    out, inp = half(log), half(log, "in_place")
    assert (log.rows["redop"] == "sum").all() and (log.rows["root"] == -1).all()
    assert log.rows["wrong"].isna().all()  # "error" column, N/A
    assert (out["size"].iloc[1], out["count"].iloc[1], out["time_us"].iloc[1]) == (4, 1, 34.73)
    assert (out["size"].iloc[-1], out["time_us"].iloc[-1], inp["time_us"].iloc[-1]) == (
        8589934592,
        63896,
        63959,
    )
    assert (out["busbw_gbps"].iloc[-1], inp["algbw_gbps"].iloc[-1]) == (235.26, 134.30)
    assert log.header["nGpus"] == "8" and log.header["Avg bus bandwidth"] == "68.4048"


def test_superbench_all_gather_without_redop_and_with_chatter() -> None:
    log = parse_nccl_log(ALL_GATHER)  # "hostname:3442:3442 [0] NCCL INFO ..." inside the table
    out = half(log)
    assert (log.rows["redop"] == "none").all() and (log.rows["root"] == -1).all()
    assert list(out["size"]) == [0] + [32 * 2**i for i in range(29)]
    assert (out["time_us"].iloc[1], out["time_us"].iloc[-1]) == (35.03, 33646)


def test_superbench_alltoall_blank_redop() -> None:
    # header "size count type redop time ...", rows without a redop value: 11 fields under 12 names
    log = parse_nccl_log(ALLTOALL)
    out, inp = half(log), half(log, "in_place")
    assert (log.rows["redop"] == "none").all() and (log.rows["root"] == -1).all()
    assert (out["size"].iloc[1], out["count"].iloc[1], out["time_us"].iloc[1], inp["time_us"].iloc[1]) == (
        32,
        1,
        89.00,
        85.13,
    )
    last = out.iloc[-1]
    assert (last["size"], last["time_us"], last["algbw_gbps"], last["busbw_gbps"]) == (
        8589934592,
        33508,
        256.36,
        224.31,
    )


@pytest.mark.parametrize(
    ("first", "row", "redop", "root"),
    [
        ("# Collective test starting: alltoall_perf\n", "1024 64 float -1", "none", -1),  # no reduction
        ("# Collective test starting: all_gather_perf\n", "1024 32 float -1", "none", -1),
        ("# Collective test starting: broadcast_perf\n", "1024 256 float 3", "none", 3),  # rooted
        ("# Collective test starting: all_reduce_perf\n", "1024 256 float sum", "sum", -1),  # no root
        ("# Collective test starting: reduce_perf\n", "1024 256 float max", "max", -1),  # both: by shape
        ("# Collective test starting: reduce_perf\n", "1024 256 float 2", "none", 2),
        ("", "1024 256 float sum", "sum", -1),  # op unknown: by shape
        ("", "1024 256 float", "none", -1),  # both blank
    ],
)
def test_short_rows_leave_redop_or_root_blank(
    tmp_path: Path, first: str, row: str, redop: str, root: int
) -> None:
    text = first + HEADER_13 + f"{row}  20.50  0.05  0.09  0  20.10  0.05  0.10  0\n"
    log = parse_nccl_log(write(tmp_path, text))
    assert log.rows[["redop", "root"]].drop_duplicates().values.tolist() == [[redop, root]]
    assert log.rows["time_us"].tolist() == [20.5, 20.1]


def test_short_rows_that_do_not_fit_are_errors(tmp_path: Path) -> None:
    # alltoall has no reduction, so the blank one would be redop; but "sum" is there: a field is lost
    text = "# Collective test starting: alltoall_perf\n" + HEADER_13
    path = write(tmp_path, text + "1024 64 float sum  20.50  0.05  0.09  0  20.10  0.05  0.10  0\n")
    with pytest.raises(NcclLogError, match=r"log.txt: line 3: expected 13 columns \(size count .*\), got 12"):
        parse_nccl_log(path)
    path = write(tmp_path, text + "1024 64 float  20.50  0.05  0.09  0  20.10  0.05  0.10\n")  # 3 short
    with pytest.raises(NcclLogError, match="line 3: expected 13 columns"):
        parse_nccl_log(path)


def test_headerless_rows_of_the_old_layout(tmp_path: Path) -> None:
    rows = "".join(line for line in ALLTOALL.read_text().splitlines(keepends=True) if line[:1] == " ")
    log = parse_nccl_log(write(tmp_path, rows, "alltoall.log"))  # 11 fields: no redop, no root
    pd.testing.assert_frame_equal(log.rows, parse_nccl_log(ALLTOALL).rows)


# --------------------------------------------------------------------------------------------------
# 2. repeated sizes


def test_repeated_size_zero_rows_keep_the_first() -> None:
    log = parse_nccl_log(ALLTOALL)  # five "0 0 float" rows with other times
    zero = log.rows[log.rows["size"] == 0]
    assert zero[["placement", "time_us"]].values.tolist() == [["out_of_place", 1.63], ["in_place", 1.38]]
    zero = parse_nccl_log(ALL_REDUCE).rows.query("size == 0")  # two
    assert zero["time_us"].tolist() == [35.20, 34.05]


def test_repeat_of_any_size_on_the_next_line_keeps_the_first(tmp_path: Path) -> None:
    rows = (
        "1024 256 float sum -1  20.50 0.05 0.09 0  20.10 0.05 0.10 0\n"
        "1024 256 float sum -1  21.50 0.05 0.09 0  21.10 0.05 0.10 0\n"  # -i stepping rounds to 1024 again
        "2048 512 float sum -1  22.00 0.09 0.17 0  22.10 0.09 0.17 0\n"
    )
    log = parse_nccl_log(write(tmp_path, HEADER_13 + rows))
    assert half(log)["time_us"].tolist() == [20.5, 22.0]


def test_a_table_printed_twice_is_read_once(tmp_path: Path) -> None:
    text = ALLTOALL.read_text()
    log = parse_nccl_log(write(tmp_path, text + text, "twice_alltoall.txt"))
    pd.testing.assert_frame_equal(log.rows, parse_nccl_log(ALLTOALL).rows)


def test_other_values_on_a_later_line_are_an_error(tmp_path: Path) -> None:
    text = ALLTOALL.read_text()
    other = text.replace("    89.00    0.00", "    99.00    0.00")
    path = write(tmp_path, text + other, "two_runs_alltoall.txt")
    with pytest.raises(NcclLogError, match=r"size 32 \(out-of-place\) .* split it into one log per run$"):
        parse_nccl_log(path)


# --------------------------------------------------------------------------------------------------
# 3. ranks, hosts and GPU from the header


def test_rank_lines_with_group_give_ranks_hosts_and_gpu(tmp_path: Path) -> None:
    text = rank_lines(["host-a"] * 4 + ["host-b"] * 4) + HEADER_13
    log = parse_nccl_log(write(tmp_path, text + ROW))
    assert (log.nranks, log.hosts, log.gpu) == (8, 2, "NVIDIA H100 80GB HBM3")


def test_rank_lines_without_group() -> None:
    log = parse_nccl_log(ALL_REDUCE)  # "#   Rank  0 Pid 112424 on localhost device  0 [0x00] A100-SXM4-40GB"
    assert (log.nranks, log.hosts, log.gpu) == (8, 1, "A100-SXM4-40GB")


def test_gpu_names_differ_or_are_absent(tmp_path: Path) -> None:
    lines = rank_lines(["a"], gpu="NVIDIA A100-SXM4-80GB").replace("Rank  0", "Rank  1") + rank_lines(["a"])
    log = parse_nccl_log(write(tmp_path, lines + HEADER_13 + ROW))
    assert log.gpu == "NVIDIA A100-SXM4-80GB, NVIDIA H100 80GB HBM3" and log.nranks == 2
    assert parse_nccl_log(write(tmp_path, HEADER_13 + ROW)).gpu is None


@pytest.mark.parametrize(
    ("preamble", "nranks", "hosts"),
    [
        # nGpus of the "# nThread" line x processes of the launcher (it wins over -g)
        ("# cmd: mpirun -np 2 -npernode 1 ./all_reduce_perf -g 1\n" + RUN_LINE.format(t=1, g=4), 8, 2),
        ("# cmd: mpirun -np 4 ./all_reduce_perf\n" + RUN_LINE.format(t=2, g=2), 16, None),
        ("./build/all_reduce_perf -b 8 -e 1G -g 8\n", 8, 1),  # -g N, one process
        (RUN_LINE.format(t=1, g=8), None, None),  # nGpus alone: the processes are unknown
        # first 8 Rank lines of a 16-rank run: the command says how many
        ("# cmd: mpirun -np 16 -npernode 8 all_reduce_perf -g 1\n" + rank_lines(["a"] * 8), 16, 2),
        ("# nranks: 16\n" + rank_lines(["a"] * 8), 16, None),
    ],
)
def test_ranks_and_hosts_from_the_header(tmp_path: Path, preamble: str, nranks: int, hosts: int) -> None:
    log = parse_nccl_log(write(tmp_path, preamble + HEADER_13 + ROW, "all_reduce.txt"))
    assert (log.nranks, log.hosts) == (nranks, hosts)


def test_truncated_rank_lines_are_refused() -> None:
    with pytest.raises(NcclLogError) as err:
        parse_nccl_log(GB200)  # only "#  Rank 127 ...": at least 128 ranks, hosts unknown
    message = str(err.value)
    assert message == (
        f"{GB200}: only 1 of the Rank lines are shown (up to rank 127, so at least 128 ranks) and "
        "nothing else in the log says how many ranks ran: pass nranks= (moesim calibrate --ranks N) "
        "and hosts= (--hosts N)"
    )
    log = parse_nccl_log(GB200, nranks=128)
    assert (log.op, log.nranks, log.hosts, log.gpu) == ("all_reduce", 128, None, "NVIDIA GB200")


@pytest.mark.parametrize(
    ("preamble", "message"),
    [
        # 4 processes of 8 GPUs each show 4 Rank lines: partial although they start at 0
        (RUN_LINE.format(t=1, g=8) + rank_lines(["a"] * 4), "only 4 of"),
        ("# cmd: mpirun -np 8 all_reduce_perf\n" + rank_lines(["a"] * 16), "name rank 15, but the launch"),
        ("# cmd: mpirun -np 16 all_reduce_perf\n# nranks: 8\n", "two rank counts (launch command 16"),
        (
            "# cmd: mpirun -np 16 -npernode 8 all_reduce_perf\n" + rank_lines(["a", "b", "c", "d"] * 4),
            "two host counts (Rank lines 4, launch command 2): pass hosts=",
        ),
    ],
)
def test_counts_the_log_cannot_settle_are_refused(tmp_path: Path, preamble: str, message: str) -> None:
    path = write(tmp_path, preamble + HEADER_13 + ROW, "all_reduce.txt")
    with pytest.raises(NcclLogError, match=re.escape(message)) as err:
        parse_nccl_log(path)
    text = str(err.value)
    assert len(text.splitlines()) == 1 and ("--ranks N" in text or "--hosts N" in text)


def test_partial_rank_lines_of_one_process(tmp_path: Path) -> None:
    lines = "".join(
        f"#   Rank {r:2d} Pid 7 on localhost device {r:2d} [0x00] A100-SXM4-40GB\n" for r in range(4)
    )
    path = write(tmp_path, RUN_LINE.format(t=1, g=8) + lines + HEADER_13 + ROW)
    with pytest.raises(NcclLogError, match="only 4 of the Rank lines"):
        parse_nccl_log(path)
    assert parse_nccl_log(path, nranks=8).nranks == 8


# --------------------------------------------------------------------------------------------------
# 4. overrides: arguments and moesim calibrate --ranks / --hosts


def test_arguments_win_over_the_header() -> None:
    log = parse_nccl_log(ALL_REDUCE, nranks=16, hosts=2)
    assert (log.nranks, log.hosts) == (16, 2)
    log = parse_nccl_log(A3MEGA, hosts=4)  # the command says 2 hosts
    assert (log.nranks, log.hosts) == (16, 4)
    with pytest.raises(ValueError, match="hosts must be at least 1"):
        parse_nccl_log(A3MEGA, hosts=0)


def test_calibrate_threads_ranks_and_hosts(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    seen: list[NcclLog] = []

    def spy(path: Path, **kwargs: int | None) -> NcclLog:
        seen.append(parse_nccl_log(path, **kwargs))
        return seen[-1]

    monkeypatch.setattr(calibrate_command, "parse_nccl_log", spy)
    out = tmp_path / "out.yaml"
    argv = ["calibrate", str(A3MEGA), "--topology", str(TOPOLOGY), "--out", str(out)]
    assert main([*argv, "--ranks", "8", "--hosts", "1"]) == 0
    assert [(log.nranks, log.hosts) for log in seen] == [(8, 1)]  # the header says 16 on 2
    printed = capsys.readouterr().out
    assert "gcp_a3mega_2x8xH100_all_reduce.txt  all_reduce      8 " in printed  # the fit used 8 ranks


def test_calibrate_refuses_a_truncated_log_without_ranks(tmp_path: Path, capsys) -> None:
    out = tmp_path / "out.yaml"
    argv = ["calibrate", str(GB200), "--topology", str(TOPOLOGY), "--out", str(out)]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err, err
    assert err.startswith("moesim: error: ") and "at least 128 ranks" in err and "--ranks N" in err
    assert not out.exists()
    assert main([*argv, "--hosts", "0"]) == 2
    assert "--hosts" in capsys.readouterr().err


# --------------------------------------------------------------------------------------------------
# 5. bad input: one line naming the field and the fix


def test_errors_are_one_line_naming_the_field(tmp_path: Path) -> None:
    text = ALLTOALL.read_text()
    cases = {
        text.replace(
            "    85.13    0.00", "    fast    0.00"
        ): "line 21: expected a positive number for time (in-place), got 'fast'",
        text.replace(
            "          32             1", "          32           1.5"
        ): "line 21: expected a whole number for count, got '1.5'",
        text.replace(
            "    1.38    0.00", "    0.00    0.00", 1
        ): "expected a positive number for time (in-place), got '0.00'",
    }
    for bad, message in cases.items():
        with pytest.raises(NcclLogError) as err:
            parse_nccl_log(write(tmp_path, bad, "alltoall.txt"))
        assert message in str(err.value) and len(str(err.value).splitlines()) == 1
