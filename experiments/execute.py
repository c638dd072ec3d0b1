"""Execute a sweep: points on local processes or a Dask cluster, saved as they finish.

Only this process writes files: workers return each point's tables, and the point is saved
atomically here the moment it arrives. Interrupting a run (Ctrl-C, a crash) loses no finished
point; ``resume=True`` skips saved points whose config is unchanged. Results do not depend on
the executor or the number of workers: every point is simulated on its own.

Before anything runs, :func:`experiments.store.claim` makes sure the results directory holds no
other experiment's results (:class:`~experiments.arguments.UsageError`, exit status 2). A failure
of the run itself (saving a point, a lost worker or scheduler, reading the saved points back)
raises :class:`RunError` (exit status 3): finished points stay saved for ``--resume``.
"""

from __future__ import annotations

import multiprocessing
import os
import shutil
import sys
from collections.abc import Callable, Generator
from concurrent.futures import FIRST_COMPLETED, BrokenExecutor, ProcessPoolExecutor, wait
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
from tqdm import tqdm

from experiments.config import ConfigError, Experiment, Plan
from experiments.estimate import Estimate, available_memory, check_fits, check_workers_fit, needed_bytes
from experiments.placing import presolve
from experiments.runner import PointResult, run_point
from experiments.store import StoreError, claim, combine, save_point, saved_ok

Task = tuple[int, dict[str, Any], Experiment]


class ExecutorError(RuntimeError):
    """The executor could not be started (e.g. Dask missing or a scheduler unreachable)."""


class RunError(RuntimeError):
    """The run failed part way (the message is one line); the points finished before it are saved."""

    def __init__(self, message: str, saved: int) -> None:
        super().__init__(message)
        self.saved = saved
        """Points saved in the results directory (this run's and earlier ones')."""


class _WorkerLost(RuntimeError):
    """A point's result never came back: its worker process, Dask worker or scheduler failed."""


@dataclass(frozen=True)
class PointDone:
    """A point just saved: its result, swept values and the run's progress counting it."""

    result: PointResult
    swept: dict[str, Any]
    done: int
    """Points finished so far, skipped ones (``--resume``) included, this one included."""
    total: int


def _reason(err: BaseException) -> str:
    text = " ".join(str(err).split())[:200]
    return f"{type(err).__name__}: {text}" if text else type(err).__name__


@dataclass
class RunOutcome:
    """What a run did: the combined results table and how many points ran, were skipped, failed."""

    results: pd.DataFrame
    ran: int
    skipped: int
    failed: int


def _run(task: Task) -> PointResult:
    return run_point(*task)


def _local(tasks: list[Task], workers: int) -> Generator[tuple[Task, PointResult], None, None]:
    if workers <= 1 or len(tasks) <= 1:
        for task in tasks:
            yield task, _run(task)
        return
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=workers, mp_context=context) as pool:
        running = {pool.submit(_run, task): task for task in tasks}
        try:
            while running:
                done, _ = wait(running, return_when=FIRST_COMPLETED)
                for future in sorted(done, key=lambda f: running[f][0]):
                    task = running.pop(future)
                    try:  # run_point records a point's own errors: any raised here is the pool's
                        result = future.result()
                    except (BrokenExecutor, OSError, EOFError) as err:
                        raise _WorkerLost(f"a worker process was lost ({_reason(err)})") from err
                    yield task, result
        finally:
            for future in running:
                future.cancel()


def _check_dask() -> None:
    try:
        import dask.distributed  # noqa: F401
    except ImportError:
        raise ExecutorError("--executor dask needs dask.distributed (pip install 'moesim[dask]')") from None


class _DaskCluster:
    """A Dask client (and the LocalCluster it started, if any), open before any work so that a
    scheduler that cannot be reached or workers too small for the points stop the run first."""

    def __init__(self, workers: int, scheduler: str | None) -> None:
        _check_dask()
        from dask.distributed import Client, LocalCluster

        self.cluster = None
        try:
            if scheduler:
                self.client = Client(scheduler, timeout="20s")
            else:
                self.cluster = LocalCluster(
                    n_workers=max(workers, 1), threads_per_worker=1, processes=True, dashboard_address=None
                )
                self.client = Client(self.cluster)
        except OSError as err:
            raise ExecutorError(f"--scheduler {scheduler}: cannot connect ({err})") from None

    def memory_per_point(self) -> int | None:
        """Bytes one point may use on the smallest Dask worker: its memory limit ÷ its threads
        (each thread runs a point); None when no worker has a limit."""
        limits = [
            int(w["memory_limit"]) // max(int(w.get("nthreads", 1)), 1)
            for w in self.client.scheduler_info()["workers"].values()
            if w.get("memory_limit")
        ]
        return min(limits) if limits else None

    def results(self, tasks: list[Task]) -> Generator[tuple[Task, PointResult], None, None]:
        from dask.distributed import as_completed

        try:  # run_point records a point's own errors: any raised here is Dask's
            futures = {self.client.submit(_run, task, pure=False): task for task in tasks}
            for future in as_completed(futures):
                yield futures[future], future.result()
        except Exception as err:  # KilledWorker, CommClosedError, CancelledError, TimeoutError
            raise _WorkerLost(f"the Dask cluster lost a point ({_reason(err)})") from err

    def close(self) -> None:
        self.client.close()
        if self.cluster is not None:
            self.cluster.close()


def _check_memory(
    todo: list[Task], estimates: list[Estimate], workers: int, dask: _DaskCluster | None
) -> None:
    """Refuse (ConfigError, before any work) points that cannot run in the memory they will get:
    under Dask, each point against a worker's memory limit ÷ threads; locally, the ``workers``
    largest points at once against MemAvailable."""
    if dask is not None:
        limit = dask.memory_per_point()
        if limit is not None:
            for index, _, _ in todo:
                where = " per point on a Dask worker (memory limit ÷ threads)"
                check_fits(index, estimates[index], limit, where)
        return
    if workers > 1 and len(todo) > 1:
        needs = [needed_bytes(estimates[index]) for index, _, _ in todo]
        check_workers_fit(needs, workers, available_memory())


def run_experiment(
    plan: Plan,
    out: Path,
    workers: int | None = None,
    executor: str = "local",
    scheduler: str | None = None,
    resume: bool = False,
    force: bool = False,
    on_point: Callable[[PointDone], str | None] | None = None,
    estimates: list[Estimate] | None = None,
) -> RunOutcome:
    """Run every point of ``plan`` into ``out`` and combine the tables.

    Args:
        plan: the validated experiment and its points.
        out: the results directory (claimed for this experiment before anything runs).
        workers: processes to use (default: the machine's core count).
        executor: ``local`` (processes on this machine) or ``dask``.
        scheduler: a Dask scheduler address; without one, ``dask`` starts a LocalCluster.
        resume: continue the same experiment in ``out``: skip points saved with the same config.
        force: remove the results ``out`` holds (of this or another experiment) first.
        on_point: called as each point is saved; a line it returns is printed above the
            progress bar (on stdout).
        estimates: each point's :func:`experiments.estimate.estimate_point`; given, the points are
            checked against the memory they will get (the local workers together, or a Dask
            worker's limit) before any work.

    Raises:
        UsageError: ``out`` holds results it may not use (see :func:`experiments.store.claim`).
        ConfigError: the points do not fit in the memory they would get; nothing ran.
        ExecutorError: the executor could not start; nothing ran.
        RunError: the run failed part way; finished points are saved.
    """
    out = Path(out)
    if executor == "dask":
        _check_dask()  # before the directory is touched
    created = not out.exists()
    claim(out, plan.experiment.name, plan.raw, resume=resume, force=force)
    try:
        return _execute(plan, out, workers, executor, scheduler, resume, on_point, estimates)
    except (ExecutorError, ConfigError):
        if created:  # the executor never started: leave nothing behind
            shutil.rmtree(out, ignore_errors=True)
        raise


def _execute(
    plan: Plan,
    out: Path,
    workers: int | None,
    executor: str,
    scheduler: str | None,
    resume: bool,
    on_point: Callable[[PointDone], str | None] | None,
    estimates: list[Estimate] | None,
) -> RunOutcome:
    workers = workers or os.cpu_count() or 1
    todo: list[Task] = []
    skipped = 0
    for index, (swept, point) in enumerate(plan.points):
        if resume and saved_ok(out, index, point):
            skipped += 1
        else:
            todo.append((index, swept, point))
    failed = saved = 0
    total = len(plan.points)

    def broken(what: str) -> RunError:
        return RunError(f"{what}; {skipped + saved} of {total} points are saved in {out}", skipped + saved)

    dask = _DaskCluster(workers, scheduler) if executor == "dask" and todo else None
    try:
        if estimates is not None:
            _check_memory(todo, estimates, workers, dask)
        if todo:
            try:
                points = presolve([point for _, _, point in todo], out)
            except OSError as err:
                reason = err.strerror or _reason(err)
                raise broken(f"cannot save the placements in {out} ({reason})") from None
            todo = [(index, swept, point) for (index, swept, _), point in zip(todo, points, strict=True)]
    except BaseException:
        if dask is not None:
            dask.close()
        raise
    stream = dask.results(todo) if dask is not None else _local(todo, workers)

    # one bar on stderr, off when stderr is not a terminal; point lines go above it (bar.write)
    bar = tqdm(
        total=total, initial=skipped, unit="point", desc=plan.experiment.name, file=sys.stderr, disable=None
    )
    try:
        for (index, swept, point), result in stream:
            try:
                save_point(out, result, point)
            except OSError as err:
                raise broken(f"cannot save point {index} in {out} ({err.strerror or _reason(err)})") from None
            saved += 1
            failed += result.failed
            bar.update(1)
            if on_point is not None:
                line = on_point(PointDone(result, swept, skipped + saved, total))
                if line is not None:
                    bar.write(line, file=sys.stdout)
    except _WorkerLost as err:
        raise broken(str(err)) from None
    finally:
        stream.close()  # stops the executor now: cancels what has not started
        if dask is not None:
            dask.close()
        bar.close()
    try:
        results = combine(out, plan)
    except StoreError as err:
        raise broken(str(err)) from None
    except OSError as err:
        raise broken(f"cannot write the combined tables in {out} ({err.strerror or _reason(err)})") from None
    return RunOutcome(results, len(todo), skipped, failed)
