"""A results store that never loses, duplicates or mixes a point: every test ends with tables
identical to an uninterrupted run (wall time aside), after kills of the parent at random moments,
a killed worker, a lost Dask worker and scheduler, a full disk during points and during combine,
every kind of damage to the saved chunks, and a second run into the same folder (refused).
No output of any run holds a traceback."""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
import yaml

from experiments import point_store, store
from experiments.cli import main
from experiments.config import load_experiment
from experiments.point_store import point_hash, scan
from experiments.run_lock import LOCK

ROOT = Path(__file__).resolve().parents[1]
TABLES = ("results", "links", "ops", "timeline", "flows")

SLOW = {  # about 0.5-1 s a point: runs can be killed part way
    "name": "robust",
    "seed": 0,
    "topology": {
        "kind": "leaf_spine",
        "leaves": 4,
        "spines": 2,
        "hosts_per_leaf": 4,
        "gpus_per_host": 4,
        "nic_bandwidth": "400Gbps",
        "uplink_bandwidth": "400Gbps",
        "link_latency": "500ns",
    },
    "workload": {"kind": "collective", "op": "all_reduce", "size": "1MiB", "algorithm": None},
    "transport": "ecmp",
    "record": {"flows": False},
    "sweep": {"transport": ["ecmp", "spray", "split:2"], "seed": [0, 1, 2, 3]},
}
FAST = {  # milliseconds a point: for damage, many small runs
    **SLOW,
    "name": "robust-fast",
    "topology": {**SLOW["topology"], "hosts_per_leaf": 1, "gpus_per_host": 2},
    "workload": {"kind": "collective", "op": "all_to_all", "size": "1MiB", "algorithm": None},
    "record": {"flows": True},
    "sweep": {"transport": ["ecmp", "spray"], "seed": [0, 1, 2]},
}


def write(tmp: Path, data: dict, name: str = "exp.yaml") -> Path:
    path = tmp / name
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def tables(out: Path) -> dict[str, pd.DataFrame]:
    found = {}
    for name in TABLES:
        path = out / f"{name}.parquet"
        if path.exists():
            frame = pd.read_parquet(path)
            found[name] = frame.drop(columns=[c for c in ("wall_time_s",) if c in frame])
    return found


def assert_same(out: Path, reference: Path) -> None:
    """``out`` is a finished run whose tables equal ``reference``'s, wall time aside."""
    assert store.read_manifest(out) is not None, f"{out} has no valid manifest"
    got, want = tables(out), tables(reference)
    assert sorted(got) == sorted(want)
    for name in want:
        pd.testing.assert_frame_equal(got[name], want[name], check_exact=True, obj=name)


def moesim(*argv: str, **kw: Any) -> subprocess.Popen:
    """``python -m experiments ARGV`` as a process of its own (its own session: killing it kills
    only it, not its workers, as a crash would)."""
    return subprocess.Popen(
        [sys.executable, "-m", "experiments", *argv],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
        **kw,
    )


def finish(proc: subprocess.Popen, timeout: float = 300) -> tuple[int, str, str]:
    out, err = proc.communicate(timeout=timeout)
    assert "Traceback" not in out + err, err
    return proc.returncode, out, err


def saved(out: Path, exp: Path) -> dict[int, Any]:
    return scan(out, [point_hash(p) for _, p in load_experiment(exp).points]).saved


def children(pid: int) -> list[int]:
    """Every descendant process of ``pid`` (from /proc)."""
    found, todo = [], [pid]
    while todo:
        parent = todo.pop()
        try:
            tasks = os.listdir(f"/proc/{parent}/task")
        except OSError:
            continue
        for task in tasks:
            try:
                kids = Path(f"/proc/{parent}/task/{task}/children").read_text().split()
            except OSError:
                continue
            for kid in map(int, kids):
                found.append(kid)
                todo.append(kid)
    return found


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


@pytest.fixture(scope="module")
def slow(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """The slow experiment and its uninterrupted run (2 workers)."""
    base = tmp_path_factory.mktemp("slow")
    exp = write(base, SLOW)
    code, _, _ = finish(moesim("run", str(exp), "--out", str(base / "ref"), "--workers", "2"))
    assert code == 0
    return exp, base / "ref"


@pytest.fixture(scope="module")
def fast(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    base = tmp_path_factory.mktemp("fast")
    exp = write(base, FAST)
    assert main(["run", str(exp), "--out", str(base / "ref"), "--workers", "1"]) == 0
    return exp, base / "ref"


# ------------------------------------------------------------------------ kills of the parent


def test_parent_killed_at_random_moments_then_resumed(slow: tuple[Path, Path], tmp_path: Path) -> None:
    exp, reference = slow
    out = tmp_path / "out"
    rng = random.Random(20261207)
    orphans: list[int] = []
    for attempt in range(3):
        extra = ("--resume",) if attempt else ()
        proc = moesim("run", str(exp), "--out", str(out), "--workers", "2", *extra)
        time.sleep(rng.uniform(1.0, 4.0))
        orphans += children(proc.pid)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        assert "Traceback" not in proc.stderr.read()
    deadline = time.monotonic() + 10  # the workers follow their parent
    while time.monotonic() < deadline and any(alive(pid) for pid in orphans):
        time.sleep(0.1)
    assert orphans and not [pid for pid in orphans if alive(pid)], "workers outlived their parent"
    code, printed, _ = finish(moesim("run", str(exp), "--out", str(out), "--workers", "2", "--resume"))
    assert code == 0 and "12 points:" in printed
    assert_same(out, reference)
    assert not [p for p in (out / "points").iterdir() if p.name.startswith(".")]  # nothing torn left


def _worker_pids(pid: int) -> list[int]:
    """The pool workers among ``pid``'s children (not the resource tracker)."""
    pids = []
    for kid in children(pid):
        try:
            cmdline = Path(f"/proc/{kid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        if "spawn_main" in cmdline:
            pids.append(kid)
    return pids


def test_a_killed_worker_exits_3_and_resume_completes(slow: tuple[Path, Path], tmp_path: Path) -> None:
    exp, reference = slow
    out = tmp_path / "out"
    proc = moesim("run", str(exp), "--out", str(out), "--workers", "2")
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and not (out / "points").is_dir():
        time.sleep(0.05)
    time.sleep(1.5)
    workers = _worker_pids(proc.pid)
    assert workers, "no pool worker to kill"
    os.kill(workers[0], signal.SIGKILL)
    code, _, err = finish(proc)
    assert code == 3, err
    (line,) = err.strip().splitlines()
    assert "a worker process was lost" in line and "--resume" in line
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and any(alive(pid) for pid in workers):
        time.sleep(0.1)
    assert not [pid for pid in workers if alive(pid)], "the pool kept computing after the error"
    code, _, _ = finish(moesim("run", str(exp), "--out", str(out), "--workers", "2", "--resume"))
    assert code == 0
    assert_same(out, reference)


# ---------------------------------------------------------------------------------------- Dask


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class _DaskProcesses:
    """A scheduler and workers, each a process of its own (so each can be killed)."""

    def __init__(self, workers: int) -> None:
        self.port = _free_port()
        self.address = f"tcp://127.0.0.1:{self.port}"
        quiet = {"stdout": subprocess.DEVNULL, "stderr": subprocess.DEVNULL, "cwd": ROOT}
        self.scheduler = subprocess.Popen(
            [sys.executable, "-m", "distributed.cli.dask_scheduler", "--host", "127.0.0.1",
             "--port", str(self.port), "--dashboard-address", ":0"], **quiet,
        )  # fmt: skip
        self.workers = [
            subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "distributed.cli.dask_worker",
                    self.address,
                    "--nthreads",
                    "1",
                    "--no-nanny",
                    "--no-dashboard",
                    "--memory-limit",
                    "4GiB",
                ],
                **quiet,
            )  # fmt: skip
            for _ in range(workers)
        ]
        from dask.distributed import Client

        with Client(self.address, timeout="30s") as client:
            client.wait_for_workers(workers, timeout=60)

    def close(self) -> None:
        for proc in [*self.workers, self.scheduler]:
            if proc.poll() is None:
                proc.kill()
            proc.wait()


def _wait_for_a_saved_point(out: Path, exp: Path, timeout: float = 120) -> None:
    """Until the run into ``out`` has saved its first chunk (so a kill lands part way)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and not saved(out, exp):
        time.sleep(0.05)
    assert 0 < len(saved(out, exp)) < len(load_experiment(exp).points), "the kill must land part way"


def test_dask_lost_worker_then_lost_scheduler(slow: tuple[Path, Path], tmp_path: Path) -> None:
    pytest.importorskip("dask.distributed")
    exp, reference = slow
    # a worker dies: the scheduler reruns its unsaved points on the other one; the run completes
    cluster = _DaskProcesses(2)
    try:
        out = tmp_path / "worker"
        proc = moesim(
            "run", str(exp), "--out", str(out), "--executor", "dask", "--scheduler", cluster.address
        )
        _wait_for_a_saved_point(out, exp)
        cluster.workers[0].kill()
        code, _, err = finish(proc)
        assert code == 0, err
        assert_same(out, reference)
        # the scheduler dies: one line, exit 3, and --resume on a new cluster completes
        out = tmp_path / "scheduler"
        proc = moesim(
            "run", str(exp), "--out", str(out), "--executor", "dask", "--scheduler", cluster.address
        )
        _wait_for_a_saved_point(out, exp)
        cluster.scheduler.kill()
        code, _, err = finish(proc)
    finally:
        cluster.close()
    assert code == 3, err
    (line,) = err.strip().splitlines()
    assert "the Dask cluster lost a point" in line and "--resume" in line
    cluster = _DaskProcesses(1)
    try:
        argv = ("run", str(exp), "--out", str(out), "--executor", "dask", "--scheduler", cluster.address)
        code, _, err = finish(moesim(*argv, "--resume"))
    finally:
        cluster.close()
    assert code == 0, err
    assert_same(out, reference)


# ------------------------------------------------------------------------------------ full disk


def _mount_tmpfs(where: Path, size: str) -> bool:
    where.mkdir(parents=True, exist_ok=True)
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(where)], capture_output=True
    )
    return done.returncode == 0


def test_a_disk_that_fills_on_a_real_tmpfs(fast: tuple[Path, Path], tmp_path: Path) -> None:
    exp, reference = fast
    disk = tmp_path / "disk"
    if os.geteuid() != 0 or not _mount_tmpfs(disk, "600k"):
        pytest.skip("cannot mount a tmpfs here (needs root); the injected ENOSPC tests cover it")
    try:
        out = disk / "out"
        code, _, err = finish(moesim("run", str(exp), "--out", str(out), "--workers", "1"))
        assert code == 3, err
        (line,) = err.strip().splitlines()
        assert "No space left on device" in line
        manifest = store.read_manifest(out)  # not finished, and it does not look finished
        assert manifest is None or (manifest["report"] is None and "the results are complete" in line)
        subprocess.run(["mount", "-o", "remount,size=64m", str(disk)], check=True)
        code, _, err = finish(moesim("run", str(exp), "--out", str(out), "--workers", "1", "--resume"))
        assert code == 0, err
        assert_same(out, reference)
    finally:
        subprocess.run(["umount", "-l", str(disk)], capture_output=True)


def _enospc() -> OSError:
    import errno

    return OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


def test_a_disk_that_fills_during_points(
    fast: tuple[Path, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    exp, reference = fast
    monkeypatch.setattr(point_store, "CHUNK_SECONDS", 0.0)
    real = point_store.ChunkWriter.flush
    written: list[int] = []

    def flush(self: point_store.ChunkWriter) -> int:
        if self.buffered and len(written) >= 2:
            raise _enospc()
        count = real(self)
        written.append(count) if count else None
        return count

    monkeypatch.setattr(point_store.ChunkWriter, "flush", flush)
    out = tmp_path / "out"
    assert main(["run", str(exp), "--out", str(out), "--workers", "1"]) == 3
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert "No space left on device" in line and "2 of 6 points are saved" in line and "--resume" in line
    assert sorted(saved(out, exp)) == [0, 1] and store.read_manifest(out) is None
    monkeypatch.undo()
    assert main(["run", str(exp), "--out", str(out), "--workers", "1", "--resume"]) == 0
    assert_same(out, reference)


def test_a_disk_that_fills_during_combine(
    fast: tuple[Path, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    exp, reference = fast
    real = store.write_atomic

    def write_atomic(path: Path, write: Any) -> None:
        if path.name == "links.parquet":
            raise _enospc()
        real(path, write)

    monkeypatch.setattr(store, "write_atomic", write_atomic)
    out = tmp_path / "out"
    assert main(["run", str(exp), "--out", str(out), "--workers", "1"]) == 3
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert "cannot write the combined tables" in line and "No space left on device" in line
    assert "6 of 6 points are saved" in line
    assert store.read_manifest(out) is None and not (out / "report.html").exists()
    assert main(["report", str(out)]) == 2  # an unfinished folder is not reported as if finished
    assert "did not finish" in capsys.readouterr().err
    monkeypatch.undo()
    assert main(["run", str(exp), "--out", str(out), "--workers", "1", "--resume"]) == 0
    assert "6 points: 0 run, 6 already done" in capsys.readouterr().out
    assert_same(out, reference)


# --------------------------------------------------------------------------------------- damage


def _chunk(out: Path, n: int, suffix: str) -> Path:
    return out / "points" / f"chunk-{n:06d}.{suffix}"


def _truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def _garbage(path: Path) -> None:
    with open(path, "r+b") as handle:
        handle.seek(40)
        handle.write(os.urandom(64))


DAMAGE = {
    "missing data": lambda out: _chunk(out, 2, "data").unlink(),
    "truncated data": lambda out: _truncate(_chunk(out, 2, "data")),
    "garbage data": lambda out: _garbage(_chunk(out, 2, "data")),
    "another point's data": lambda out: shutil.copy(_chunk(out, 3, "data"), _chunk(out, 2, "data")),
    "another point's chunk": lambda out: [
        shutil.copy(_chunk(out, 3, s), _chunk(out, 2, s)) for s in ("data", "json")
    ],
    "a copy of a chunk": lambda out: [
        shutil.copy(_chunk(out, 3, s), _chunk(out, 9, s)) for s in ("data", "json")
    ],
    "garbage record": lambda out: _chunk(out, 2, "json").write_text("{"),
    "torn write (data, no record)": lambda out: _chunk(out, 2, "json").unlink(),
    "torn record": lambda out: (out / "points" / ".chunk-000006.json.partial").write_text('{"form'),
    "a combined table lost": lambda out: (out / "flows.parquet").unlink(),
}


@pytest.mark.parametrize("kind", list(DAMAGE))
def test_damage_is_found_and_rerun(
    kind: str,
    fast: tuple[Path, Path],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture,
) -> None:
    exp, reference = fast
    monkeypatch.setattr(point_store, "CHUNK_SECONDS", 0.0)  # one chunk per point
    out = tmp_path / "out"
    assert main(["run", str(exp), "--out", str(out), "--workers", "1"]) == 0
    capsys.readouterr()
    DAMAGE[kind](out)
    if kind in ("a combined table lost",):
        assert main(["report", str(out)]) == 2
        assert "did not finish" in capsys.readouterr().err
    assert main(["run", str(exp), "--out", str(out), "--workers", "1", "--resume"]) == 0
    captured = capsys.readouterr()
    assert "Traceback" not in captured.err
    reruns = {"a copy of a chunk": 0, "torn record": 0, "a combined table lost": 0}.get(kind, 1)
    assert f"6 points: {reruns} run, {6 - reruns} already done, 0 failed" in captured.out
    if kind in ("truncated data", "garbage data", "another point's data", "garbage record", "missing data"):
        if kind == "garbage record":
            assert "chunk-000002 is damaged (" in captured.err and "its points run again" in captured.err
        else:
            assert "point 2: chunk-000002, which holds it, is damaged (" in captured.err
            assert captured.err.count("\n") == 1  # one line per point (one point in this chunk)
    if kind.startswith("torn"):
        assert "removed 1 unfinished write of an interrupted run" in captured.err
    assert_same(out, reference)


# ---------------------------------------------------------------------------- one run per folder


def test_a_second_run_into_the_same_folder_is_refused(slow: tuple[Path, Path], tmp_path: Path) -> None:
    exp, reference = slow
    other = write(tmp_path, {**FAST, "name": "other"}, "other.yaml")
    out = tmp_path / "out"
    first = moesim("run", str(exp), "--out", str(out), "--workers", "2")
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and not ((out / LOCK).exists() and (out / LOCK).read_text()):
        time.sleep(0.05)
    for experiment, extra in ((other, ()), (exp, ("--resume",)), (other, ("--force",))):
        code, _, err = finish(moesim("run", str(experiment), "--out", str(out), *extra))
        assert code == 2
        (line,) = err.strip().splitlines()
        assert f"another moesim run (pid {first.pid} on {socket.gethostname()}" in line, line
    code, _, err = finish(first)
    assert code == 0, err
    assert_same(out, reference)  # the first run's results only, whole


def test_a_dead_runs_lock_is_taken_over_with_one_line(
    fast: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    exp, reference = fast
    out = tmp_path / "out"
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time\nfrom experiments.run_lock import RunLock\n"
         "RunLock(sys.argv[1]).acquire().announce()\nprint('held', flush=True)\ntime.sleep(60)", str(out)],
        cwd=ROOT, stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    assert holder.stdout.readline().strip() == "held"
    assert main(["run", str(exp), "--out", str(out), "--workers", "1"]) == 2
    assert f"another moesim run (pid {holder.pid}" in capsys.readouterr().err
    holder.kill()
    holder.wait()
    assert main(["run", str(exp), "--out", str(out), "--workers", "1"]) == 0
    err = capsys.readouterr().err
    assert f"the run of pid {holder.pid} on {socket.gethostname()}" in err and "taking over" in err
    assert json.loads((out / LOCK).read_text() or "{}") == {}  # let go at the end: empty again
    assert_same(out, reference)


def test_points_of_an_older_moesim_are_moved_into_chunks_on_resume(
    fast: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    """A folder of the one-folder-per-point layout (``points/NNNNN/`` with ``point.json``) resumes
    without running its points again, and its tables come out the same."""
    exp, reference = fast
    out = tmp_path / "out"
    shutil.copytree(reference, out)
    shutil.rmtree(out / "points")
    (out / store.MANIFEST).unlink()
    whole = {name: pd.read_parquet(reference / f"{name}.parquet") for name in TABLES}
    for index, (_, point) in enumerate(load_experiment(exp).points):
        folder = out / "points" / f"{index:05d}"
        folder.mkdir(parents=True)
        for name, frame in whole.items():
            frame[frame["point"] == index].to_parquet(folder / f"{name}.parquet", index=False)
        (folder / "point.json").write_text(json.dumps({"key": point_store.point_key(point)}))
    assert main(["run", str(exp), "--out", str(out), "--workers", "1", "--resume"]) == 0
    captured = capsys.readouterr()
    assert "moved 6 points saved by an older moesim into chunks" in captured.err
    assert "6 points: 0 run, 6 already done, 0 failed" in captured.out
    assert not [p for p in (out / "points").iterdir() if p.is_dir()]
    assert_same(out, reference)
