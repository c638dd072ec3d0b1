"""Output you can trust and the terminal: results directories, unusable --out, exit statuses,
one-line errors, help and version, progress lines."""

from __future__ import annotations

import errno
import os
import re
import subprocess
import sys
import tempfile
from concurrent.futures import Future, wait
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
import yaml

from experiments import cli, execute, point_store, runner, store
from experiments.arguments import UsageError
from experiments.cli import main
from experiments.config import load_experiment
from experiments.output_dir import check_output_dir, check_output_file

ROOT = Path(__file__).resolve().parents[1]

TINY = {
    "name": "tiny",
    "seed": 3,
    "topology": {
        "kind": "leaf_spine",
        "leaves": 2,
        "spines": 2,
        "hosts_per_leaf": 1,
        "gpus_per_host": 2,
        "nic_bandwidth": "400Gbps",
        "uplink_bandwidth": "400Gbps",
        "link_latency": "500ns",
    },
    "workload": {"kind": "collective", "op": "all_to_all", "size": "1MiB", "algorithm": None},
    "transport": "ecmp",
}


def experiment(tmp_path: Path, name: str = "tiny", file: str = "exp.yaml", **changes: Any) -> Path:
    """TINY with top-level ``changes`` (e.g. ``sweep=...``), written to ``tmp_path/file``."""
    path = tmp_path / file
    path.write_text(yaml.safe_dump({**TINY, "name": name, **changes}, sort_keys=False))
    return path


SWEEP2 = {"transport": ["ecmp", "spray"]}
SWEEP3 = {"transport": ["ecmp", "spray", "ethereal"]}


def run(exp: Path, out: Path, *extra: str) -> int:
    return main(["run", str(exp), "--out", str(out), "--workers", "1", *extra])


def saved(out: Path, exp: Path) -> list[int]:
    """The points of ``exp`` saved (and verified) in ``out``."""
    hashes = [point_store.point_hash(point) for _, point in load_experiment(exp).points]
    return sorted(point_store.scan(out, hashes).saved)


@pytest.fixture
def chunk_per_point(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every finished point is written at once, in its own chunk."""
    monkeypatch.setattr(point_store, "CHUNK_SECONDS", 0.0)


def one_error_line(err: str) -> str:
    """The single stderr line of a failed command, checked for the one clean prefix."""
    assert err.count("\n") == 1, err
    assert err.startswith("moesim: error: "), err
    assert err.count("error:") == 1 and "error: moesim" not in err, err
    return err.strip()


def listing(folder: Path) -> dict[str, int]:
    """Every file below ``folder`` with its modification time (to show nothing changed)."""
    return {str(p.relative_to(folder)): p.stat().st_mtime_ns for p in sorted(folder.rglob("*"))}


# ------------------------------------------------------------------------------------------------
# requirement 1: a results directory holds one experiment


def test_out_holding_another_experiment_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "out"
    assert run(experiment(tmp_path, "first", sweep=SWEEP2), out) == 0
    capsys.readouterr()
    before = listing(out)
    other = experiment(tmp_path, "second", "other.yaml")
    assert run(other, out) == 2
    line = one_error_line(capsys.readouterr().err)
    assert f"--out {out}" in line and "'first'" in line
    assert "--resume to continue the same experiment" in line and "--force to replace" in line
    assert listing(out) == before  # nothing touched
    # the same name run from a different config is another experiment too
    changed = experiment(tmp_path, "first", "changed.yaml", sweep=SWEEP2, seed=4)
    assert run(changed, out) == 2
    assert "different config" in one_error_line(capsys.readouterr().err)
    assert listing(out) == before


def test_resume_on_another_experiment_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "out"
    assert run(experiment(tmp_path, "first"), out) == 0
    capsys.readouterr()
    before = listing(out)
    assert run(experiment(tmp_path, "second", "other.yaml"), out, "--resume") == 2
    line = one_error_line(capsys.readouterr().err)
    assert "--out" in line and "--resume cannot continue" in line and "--force" in line
    assert listing(out) == before


def test_same_experiment_again_needs_resume(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "out"
    exp = experiment(tmp_path, sweep=SWEEP2)
    assert run(exp, out) == 0
    capsys.readouterr()
    assert run(exp, out) == 2
    line = one_error_line(capsys.readouterr().err)
    assert "already holds results of this experiment" in line and "--resume" in line and "--force" in line
    assert run(exp, out, "--resume") == 0
    assert "2 points: 0 run, 2 already done, 0 failed" in capsys.readouterr().out


def test_force_removes_the_old_results(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "out"
    assert run(experiment(tmp_path, "first", sweep=SWEEP3), out) == 0
    (out / "notes.txt").write_text("mine")  # not moesim's: kept
    (out / "points" / "00042").mkdir()  # a stale point of an older moesim
    other = experiment(tmp_path, "second", "other.yaml")
    assert run(other, out, "--force") == 0
    assert sorted(p.name for p in (out / "points").iterdir()) == ["chunk-000000.data", "chunk-000000.json"]
    assert saved(out, other) == [0]
    results = pd.read_parquet(out / "results.parquet")
    assert results["point"].tolist() == [0]
    assert yaml.safe_load((out / "experiment.yaml").read_text())["name"] == "second"
    assert pd.read_parquet(out / "links.parquet")["point"].unique().tolist() == [0]
    assert (out / "notes.txt").read_text() == "mine"
    assert "1 point: 1 run, 0 already done, 0 failed" in capsys.readouterr().out


def test_resume_and_force_together_are_refused(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    assert run(experiment(tmp_path), tmp_path / "out", "--resume", "--force") == 2
    assert "not allowed with argument" in one_error_line(capsys.readouterr().err)
    assert not (tmp_path / "out").exists()


def test_empty_existing_out_is_fine(tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    assert run(experiment(tmp_path), out) == 0
    assert (out / "results.parquet").exists()


def test_out_with_files_moesim_did_not_write_is_refused_even_with_force(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    out = tmp_path / "home"
    out.mkdir()
    (out / "thesis.tex").write_text("x")
    for extra in ((), ("--force",), ("--resume",)):
        assert run(experiment(tmp_path), out, *extra) == 2
        assert "not moesim results" in one_error_line(capsys.readouterr().err)
    assert [p.name for p in out.iterdir()] == ["thesis.tex"]


def test_directory_written_before_markers_is_recognised_by_its_experiment_yaml(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    out = tmp_path / "out"
    exp = experiment(tmp_path, "first")
    assert run(exp, out) == 0
    (out / store.MARKER).unlink()  # as an older moesim left it
    capsys.readouterr()
    assert run(experiment(tmp_path, "second", "other.yaml"), out, "--resume") == 2
    assert "'first'" in one_error_line(capsys.readouterr().err)
    assert run(exp, out, "--resume") == 0
    assert (out / store.MARKER).exists()


# ------------------------------------------------------------------------------------------------
# requirement 2: an unusable --out is found before any work


def _read_only(monkeypatch: pytest.MonkeyPatch) -> None:
    """Make every new file fail as on a read-only mount (root ignores permission bits)."""

    def refuse(*args: Any, **kwargs: Any) -> Any:
        raise OSError(errno.EROFS, os.strerror(errno.EROFS))

    monkeypatch.setattr(tempfile, "mkstemp", refuse)


def _argv(command: str, out: Path, tmp_path: Path) -> list[str]:
    """A command line of ``command`` writing ``out``, that would get further were ``out`` fine."""
    exp = experiment(tmp_path)
    dummy = tmp_path / "log.txt"
    dummy.write_text("not looked at")
    return {
        "run": ["run", str(exp), "--out", str(out)],
        "calibrate": ["calibrate", str(dummy), "--topology", str(exp), "--out", str(out)],
        "place": [
            "place",
            "--trace",
            str(dummy),
            "--topology",
            str(exp),
            "--method",
            "greedy",
            "--out",
            str(out),
        ],
        "microbench": ["microbench", "--out", str(out), "--quick"],
        "trace synth": ["trace", "synth", "--out", str(out), "--tokens-per-gpu", "8", "--gpus", "2"],
    }[command]


COMMANDS = ["run", "calibrate", "place", "microbench", "trace synth"]
WRITES_A_DIRECTORY = {"run", "microbench"}


@pytest.mark.parametrize("how", ["below a file", "wrong kind", "read-only"])
@pytest.mark.parametrize("command", COMMANDS)
def test_unusable_out_exits_2_before_any_work(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture, command: str, how: str
) -> None:
    blocker = tmp_path / "blocker"
    blocker.write_text("a regular file")
    name = "results" if command in WRITES_A_DIRECTORY else "out.file"
    if how == "below a file":
        out = blocker / "sub" / name
    elif how == "wrong kind":  # a file where a directory goes, a directory where a file goes
        out = blocker if command in WRITES_A_DIRECTORY else tmp_path
    else:
        out = tmp_path / "ro" / name
    argv = _argv(command, out, tmp_path)
    before = listing(tmp_path)
    if how == "read-only":
        _read_only(monkeypatch)
    monkeypatch.setattr(cli, "preflight", lambda point: pytest.fail("work started"))
    assert main(argv) == 2
    line = one_error_line(capsys.readouterr().err)
    assert f"--out {out}" in line
    expected = {"below a file": "is a file, not a directory", "read-only": "Read-only file system"}
    if how == "wrong kind":
        expected[how] = "is a file" if command in WRITES_A_DIRECTORY else "is a directory"
    assert expected[how] in line
    assert listing(tmp_path) == before  # nothing written


@pytest.mark.skipif(not Path("/sys").is_dir(), reason="needs /sys")
def test_a_place_even_root_cannot_write(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    target = Path("/sys/moesim-test-out")
    try:
        check_output_dir(target)
    except UsageError:
        pass
    else:
        pytest.skip("/sys takes files here")
    assert run(experiment(tmp_path), target) == 2
    assert "cannot write in /sys" in one_error_line(capsys.readouterr().err)
    assert not target.exists()


def test_output_checks_leave_nothing_behind(tmp_path: Path) -> None:
    check_output_dir(tmp_path / "a" / "b")
    check_output_file(tmp_path / "c" / "d.json")
    check_output_file(tmp_path / "e.json")
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(UsageError, match="--report"):
        check_output_file(tmp_path, flag="--report")


# ------------------------------------------------------------------------------------------------
# requirement 3: exit statuses


def _fail_second_save(monkeypatch: pytest.MonkeyPatch, error: BaseException) -> None:
    """The second chunk written raises ``error`` (with one chunk per point: the second point)."""
    monkeypatch.setattr(point_store, "CHUNK_SECONDS", 0.0)
    real = point_store.ChunkWriter.flush
    calls = []

    def flush(self: point_store.ChunkWriter) -> int:
        if self.buffered:
            calls.append(1)
            if len(calls) >= 2:  # and stays so (a full disk)
                raise error
        return real(self)

    monkeypatch.setattr(point_store.ChunkWriter, "flush", flush)


def test_disk_full_exits_3_and_keeps_finished_points(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    out = tmp_path / "out"
    exp = experiment(tmp_path, sweep=SWEEP3)
    _fail_second_save(monkeypatch, OSError(errno.ENOSPC, os.strerror(errno.ENOSPC)))
    assert run(exp, out) == 3
    line = one_error_line(capsys.readouterr().err)
    assert f"cannot save points in {out}" in line and "No space left on device" in line
    assert "1 of 3 points are saved" in line and "--resume" in line
    assert saved(out, exp) == [0]
    assert not (out / "results.parquet").exists() and not (out / store.MANIFEST).exists()
    monkeypatch.undo()
    assert run(exp, out, "--resume") == 0
    assert "3 points: 2 run, 1 already done, 0 failed" in capsys.readouterr().out


class _BrokenPool:
    """A process pool whose second point never comes back (its worker died)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self.submitted = 0

    def __enter__(self) -> _BrokenPool:
        return self

    def __exit__(self, *exc: object) -> None:
        pass

    def shutdown(self, wait: bool = True, cancel_futures: bool = False) -> None:
        pass

    def submit(self, fn: Any, task: Any) -> Future:
        future: Future = Future()
        self.submitted += 1
        if self.submitted == 2:
            future.set_exception(BrokenProcessPool("A process in the process pool was terminated abruptly"))
        else:
            future.set_result(fn(task))
        return future


def test_a_lost_worker_exits_3(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    monkeypatch.setattr(execute, "ProcessPoolExecutor", _BrokenPool)
    out = tmp_path / "out"
    exp = experiment(tmp_path, sweep=SWEEP3)
    assert main(["run", str(exp), "--out", str(out), "--workers", "2"]) == 3
    line = one_error_line(capsys.readouterr().err)
    assert "a worker process was lost (BrokenProcessPool" in line and "--resume" in line
    assert "1 of 3 points are saved" in line and saved(out, exp) == [0]


class _DaskFuture(Future):
    """A finished future with Dask's ``release``."""

    def release(self) -> None:
        pass


class _FakeDaskClient:
    """A Dask client whose scheduler connection drops after the first point."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self.submitted = 0

    def scheduler_info(self) -> dict:
        return {"workers": {}}

    def submit(self, fn: Any, task: Any, pure: bool = True) -> Future:
        from distributed.comm import CommClosedError

        future: Future = _DaskFuture()
        self.submitted += 1
        if self.submitted == 2:
            future.set_exception(CommClosedError("in <TCP (closed) ConnectionPool.gather>: Stream is closed"))
        else:
            future.set_result(fn(task))
        return future

    def close(self) -> None:
        pass


def test_a_lost_dask_scheduler_exits_3(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    distributed = pytest.importorskip("dask.distributed")
    monkeypatch.setattr(distributed, "Client", _FakeDaskClient)
    monkeypatch.setattr(distributed, "wait", lambda fs, timeout, return_when: wait(fs, timeout, return_when))
    out = tmp_path / "out"
    exp = experiment(tmp_path, sweep=SWEEP3)
    argv = ["run", str(exp), "--out", str(out), "--executor", "dask", "--scheduler", "tcp://nowhere:8786"]
    assert main(argv) == 3
    line = one_error_line(capsys.readouterr().err)
    assert "the Dask cluster lost a point (CommClosedError" in line and "--resume" in line
    assert "1 of 3 points are saved" in line and saved(out, exp) == [0]


def test_an_unreadable_saved_point_exits_3_and_resume_reruns_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    monkeypatch.setattr(point_store, "CHUNK_SECONDS", 0.0)
    real = point_store.ChunkWriter.flush

    def flush_then_damage_the_first_chunk(self: point_store.ChunkWriter) -> int:
        written = real(self)
        if self.next == 2 and written:  # the second chunk is written: damage the first
            with open(self.folder / "chunk-000000.data", "r+b") as data:
                data.seek(100)
                data.write(b"garbage")
        return written

    monkeypatch.setattr(point_store.ChunkWriter, "flush", flush_then_damage_the_first_chunk)
    out = tmp_path / "out"
    exp = experiment(tmp_path, sweep=SWEEP2)
    assert run(exp, out) == 3
    line = one_error_line(capsys.readouterr().err)
    assert "cannot combine the results" in line and "chunk-000000, which holds it, is damaged" in line
    assert "--resume" in line
    assert not (out / store.MANIFEST).exists()
    monkeypatch.undo()
    assert run(exp, out, "--resume") == 0  # the damaged point does not count as done
    captured = capsys.readouterr()
    assert "2 points: 1 run, 1 already done, 0 failed" in captured.out
    assert "point 0: chunk-000000, which holds it, is damaged (" in captured.err
    assert len(pd.read_parquet(out / "links.parquet")["point"].unique()) == 2


def test_interrupt_exits_130_naming_resume(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    _fail_second_save(monkeypatch, KeyboardInterrupt())
    out = tmp_path / "out"
    exp = experiment(tmp_path, sweep=SWEEP2)
    assert run(exp, out) == 130
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--resume" in err
    assert saved(out, exp) == [0]


def test_a_failed_point_exits_1(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    real = runner.simulate_point

    def flaky(point: Any, placement: Any = None, programs: Any = None) -> Any:
        if point.transport == "spray":
            raise RuntimeError("injected failure")
        return real(point, placement, programs)

    monkeypatch.setattr(runner, "simulate_point", flaky)
    assert run(experiment(tmp_path, sweep=SWEEP2), tmp_path / "out") == 1
    printed = capsys.readouterr().out
    assert "[2/2] point 1 [transport=spray]: FAILED: RuntimeError: injected failure" in printed
    assert "2 points: 2 run, 0 already done, 1 failed" in printed


def test_readme_documents_every_exit_status() -> None:
    readme = (ROOT / "README.md").read_text()
    section = readme.split("## Exit statuses", 1)[1].split("\n## ", 1)[0]
    for status in cli.EXIT_STATUSES:
        assert re.search(rf"^\| `?{status}`? +\|", section, re.M), status


# ------------------------------------------------------------------------------------------------
# requirement 4: one clean error line


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["run"], "the following arguments are required: experiment, --out (see 'moesim run --help')"),
        (["bogus"], "invalid choice: 'bogus'"),
        (["validate"], "(see 'moesim validate --help')"),
        (["report"], "(see 'moesim report --help')"),
        (["run", "x.yaml", "--out", "o", "--workers", "0"], "--workers: '0' is not a whole number >= 1"),
        (["place"], "(see 'moesim place --help')"),
        (["place", "--trace", "t", "--topology", "x", "--method", "bogus", "--out", "p.json"], "--method"),
        (["calibrate"], "(see 'moesim calibrate --help')"),
        (["replay"], "(see 'moesim replay --help')"),
        (["trace", "bogus"], "(see 'moesim trace --help')"),
        (["trace", "synth", "--bogus"], "(see 'moesim trace synth --help')"),
        (["trace", "collect"], "(see 'moesim trace collect --help')"),
        (["microbench", "--bogus"], "(see 'moesim microbench --help')"),
        (["run", "x.yaml", "--out", "o", "--scheduler", "tcp://h:8786"], "needs --executor dask"),
    ],
)
def test_errors_are_one_line_with_one_prefix(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture,
    argv: list[str],
    message: str,
) -> None:
    monkeypatch.chdir(tmp_path)
    assert main(argv) == 2
    assert message in one_error_line(capsys.readouterr().err)
    assert list(tmp_path.iterdir()) == []


# ------------------------------------------------------------------------------------------------
# requirement 5: help and version


def test_no_command_prints_the_help_and_exits_0(capsys: pytest.CaptureFixture) -> None:
    assert main([]) == 0
    captured = capsys.readouterr()
    assert captured.out.startswith("usage: moesim") and captured.err == ""
    for command in ("run", "validate", "report", "trace", "replay", "place", "calibrate", "microbench"):
        assert re.search(rf"^ +{command}\b", captured.out, re.M), command


def test_trace_alone_prints_its_help(capsys: pytest.CaptureFixture) -> None:
    assert main(["trace"]) == 0
    assert capsys.readouterr().out.startswith("usage: moesim trace")


def test_version(capsys: pytest.CaptureFixture) -> None:
    assert main(["--version"]) == 0
    assert capsys.readouterr().out == f"moesim {store.moesim_version()}\n"


def test_console_script_without_a_command() -> None:
    done = subprocess.run([sys.executable, "-m", "experiments"], cwd=ROOT, capture_output=True, text=True)
    assert done.returncode == 0 and done.stdout.startswith("usage: moesim") and not done.stderr


@pytest.mark.parametrize(
    "command",
    [
        "run",
        "validate",
        "report",
        "trace",
        "trace synth",
        "trace collect",
        "replay",
        "place",
        "calibrate",
        "microbench",
    ],
)
def test_every_command_has_help(capsys: pytest.CaptureFixture, command: str) -> None:
    assert main([*command.split(), "--help"]) == 0
    captured = capsys.readouterr()
    assert captured.out.startswith(f"usage: moesim {command}"), captured.out[:200]
    assert captured.err == ""


# ------------------------------------------------------------------------------------------------
# requirement 6: progress


class _RecordingBar(execute.tqdm):  # type: ignore[misc, name-defined]
    made: list[_RecordingBar] = []

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        _RecordingBar.made.append(self)


def test_progress_lines_go_above_one_bar_and_end_with_a_summary(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    writes: list[str] = []
    monkeypatch.setattr(_RecordingBar, "made", [])
    monkeypatch.setattr(_RecordingBar, "write", classmethod(lambda cls, line, file=None: writes.append(line)))
    monkeypatch.setattr(execute, "tqdm", _RecordingBar)
    out = tmp_path / "out"
    exp = experiment(tmp_path, sweep={"transport": ["ecmp", "spray"], "seed": [1, 2]})
    assert run(exp, out) == 0
    assert len(_RecordingBar.made) == 1  # one bar
    assert len(writes) == 4  # every point line through the bar, none printed past it
    pattern = (
        r"\[(\d)/4\] point (\d) \[transport=(ecmp|spray), seed=([12])\]: completion [\d.]+ ms, "
        r"max link utilization [\d.]+, max link flows \d+, \d+ flows, [\d.]+ s"
    )
    assert [int(re.fullmatch(pattern, line).group(1)) for line in writes] == [1, 2, 3, 4]  # type: ignore[union-attr]
    summary = capsys.readouterr().out.strip().splitlines()[-1]
    assert re.fullmatch(
        rf"4 points: 4 run, 0 already done, 0 failed in [\d.]+ s \(combine [\d.]+ s, report [\d.]+ s\); "
        rf"report {out}/report.html",
        summary,
    )


def test_point_lines_and_bar_on_the_real_terminal_streams(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    out = tmp_path / "out"
    assert run(experiment(tmp_path, sweep=SWEEP2), out) == 0
    captured = capsys.readouterr()
    lines = captured.out.splitlines()
    assert lines[0].startswith("[1/2] point 0 [transport=ecmp]: completion ")
    assert lines[1].startswith("[2/2] point 1 [transport=spray]: completion ")
    assert lines[2].startswith("2 points: 2 run, 0 already done, 0 failed in ")
    assert captured.err == ""  # the bar is off when stderr is not a terminal


def test_big_sweeps_print_only_failed_points(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    monkeypatch.setattr(cli, "PRINT_EVERY_POINT", 1)
    real = runner.simulate_point

    def flaky(point: Any, placement: Any = None, programs: Any = None) -> Any:
        if point.transport == "spray":
            raise RuntimeError("injected failure")
        return real(point, placement, programs)

    monkeypatch.setattr(runner, "simulate_point", flaky)
    assert run(experiment(tmp_path, sweep=SWEEP3), tmp_path / "out") == 1
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == "[2/3] point 1 [transport=spray]: FAILED: RuntimeError: injected failure"
    assert lines[1].startswith("3 points: 3 run, 0 already done, 1 failed in ") and len(lines) == 2


def test_durations() -> None:
    assert [cli.duration(s) for s in (0.04, 12.34, 59.96, 123, 3725)] == [
        "0.0 s",
        "12.3 s",
        "1 min 0 s",
        "2 min 3 s",
        "1 h 2 min",
    ]
