"""Execute a sweep: points on local processes or a Dask cluster, saved as they finish.

Only this process writes files: workers return each point's tables, and the points are saved
here in chunks (:mod:`experiments.point_store`), each within about two seconds of its first point
finishing. Ctrl-C or an error saves what has finished before stopping; a killed parent loses at
most those last seconds. ``resume=True`` verifies the saved chunks and skips points saved,
verified and succeeded with an unchanged config. Results do not depend on the executor, the
number of workers or where a run was interrupted: every point is simulated on its own.

Before anything runs the results directory is locked for this run
(:class:`~experiments.run_lock.RunLock`) and :func:`experiments.store.claim` makes sure it holds
no other experiment's results (:class:`~experiments.arguments.UsageError`, exit status 2). A
failure of the run itself (saving points, a lost worker or scheduler, a damaged chunk, writing
the combined tables) raises :class:`RunError` (exit status 3): finished points stay saved for
``--resume``.
"""

from __future__ import annotations

import itertools
import logging
import multiprocessing
import os
import shutil
import sys
import threading
import time
from collections.abc import Callable, Generator
from concurrent.futures import FIRST_COMPLETED, BrokenExecutor, ProcessPoolExecutor, wait
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
from tqdm import tqdm

from experiments.arguments import UsageError
from experiments.config import ConfigError, Experiment, Plan
from experiments.estimate import Estimate, available_memory, check_fits, check_workers_fit, needed_bytes
from experiments.placing import presolve
from experiments.point_store import TABLES, ChunkWriter, clean, discard, migrate_legacy, point_hash, scan
from experiments.run_lock import RunLock
from experiments.runner import PointResult, run_point
from experiments.store import StoreError, claim, combine, note_report

Task = tuple[int, dict[str, Any], Experiment]


class ExecutorError(RuntimeError):
    """The executor could not be started (e.g. Dask missing or a scheduler unreachable)."""


class RunError(RuntimeError):
    """The run failed part way (the message is one line); the points finished before it are saved."""

    def __init__(self, message: str, saved: int, resume: bool = True) -> None:
        super().__init__(message)
        self.saved = saved
        """Points saved in the results directory (this run's and earlier ones')."""
        self.resume = resume
        """Whether ``--resume`` is the way on (False: every point is saved, only a later step failed)."""


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
    """What a run did: the combined results table and how many points ran, were skipped, failed;
    the report page (None when not asked for) and the seconds the combine and report steps took."""

    results: pd.DataFrame
    ran: int
    skipped: int
    failed: int
    report: Path | None = None
    combine_s: float = 0.0
    report_s: float = 0.0


def _run(task: Task) -> PointResult:
    return run_point(*task)


Item = tuple[Task, PointResult] | None
"""What an executor yields: a finished point, or None when nothing finished for a while (a
chance for the caller to save what it buffered)."""
TICK_S = 1.0
"""How long an executor waits for a point before yielding None."""
IN_FLIGHT = 2
"""Points handed to each worker ahead of time: enough to keep it busy, few to cancel on an error."""


def _watch_parent(parent: int) -> None:
    """In a pool worker: exit as soon as the parent process is gone (killed, crashed), so no
    worker outlives the run and keeps computing (or holding memory) for nobody."""

    def watch() -> None:
        while True:
            if os.getppid() != parent:
                os._exit(1)
            time.sleep(0.5)

    threading.Thread(target=watch, name="moesim-parent-watch", daemon=True).start()


def _local(tasks: list[Task], workers: int) -> Generator[Item, None, None]:
    if workers <= 1 or len(tasks) <= 1:
        for task in tasks:
            yield task, _run(task)
        return
    context = multiprocessing.get_context("spawn")
    pool = ProcessPoolExecutor(
        max_workers=workers, mp_context=context, initializer=_watch_parent, initargs=(os.getpid(),)
    )
    waiting = iter(tasks)
    running: dict[Any, Task] = {}
    finished = False

    def submit(task: Task) -> None:
        try:
            running[pool.submit(_run, task)] = task
        except BrokenExecutor as err:  # a worker died since the last result came back
            raise _WorkerLost(f"a worker process was lost ({_reason(err)})") from err

    try:
        for task in itertools.islice(waiting, workers * IN_FLIGHT):
            submit(task)
        while running:
            done, _ = wait(running, timeout=TICK_S, return_when=FIRST_COMPLETED)
            if not done:
                yield None
                continue
            for future in sorted(done, key=lambda f: running[f][0]):
                task = running.pop(future)
                try:  # run_point records a point's own errors: any raised here is the pool's
                    result = future.result()
                except (BrokenExecutor, OSError, EOFError) as err:
                    raise _WorkerLost(f"a worker process was lost ({_reason(err)})") from err
                following = next(waiting, None)
                if following is not None:
                    submit(following)
                yield task, result
        finished = True
    finally:
        if finished:
            pool.shutdown(wait=True)
        else:  # an error or an interrupt: stop now, computing nothing more for nobody
            pool.shutdown(wait=False, cancel_futures=True)
            for process in list((getattr(pool, "_processes", None) or {}).values()):
                process.terminate()


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

        # A lost worker or scheduler is reported in one line (RunError): Dask's own log lines and
        # tracebacks for it would bury that line.
        loggers = [name for name in logging.root.manager.loggerDict if name.startswith("distributed.")]
        for name in ("distributed", "tornado", *loggers):
            logging.getLogger(name).setLevel(logging.CRITICAL + 1)

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

    def results(self, tasks: list[Task]) -> Generator[Item, None, None]:
        """Each finished point, in about the order given; a point's result is released on the
        cluster as soon as it is here, so a lost worker costs only points not yet returned."""
        from dask.distributed import wait as dask_wait

        threads = sum(int(w.get("nthreads", 1)) for w in self.client.scheduler_info()["workers"].values())
        waiting = iter(tasks)
        running: dict[Any, Task] = {}
        try:  # run_point records a point's own errors: any raised here is Dask's
            for task in itertools.islice(waiting, max(threads, 1) * IN_FLIGHT):
                running[self.client.submit(_run, task, pure=False)] = task
            while running:
                try:
                    done, _ = dask_wait(list(running), timeout=TICK_S, return_when="FIRST_COMPLETED")
                except TimeoutError:
                    yield None
                    continue
                for future in sorted(done, key=lambda f: running[f][0]):
                    task = running.pop(future)
                    result = future.result()
                    future.release()
                    following = next(waiting, None)
                    if following is not None:
                        running[self.client.submit(_run, following, pure=False)] = following
                    yield task, result
        except (GeneratorExit, KeyboardInterrupt):
            raise
        except Exception as err:  # KilledWorker, CommClosedError, CancelledError, TimeoutError
            raise _WorkerLost(f"the Dask cluster lost a point ({_reason(err)})") from err
        finally:
            for future in running:
                future.cancel()

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
    report: bool = False,
    notes: Callable[[str], None] | None = None,
) -> RunOutcome:
    """Run every point of ``plan`` into ``out`` and combine the tables.

    Args:
        plan: the validated experiment and its points.
        out: the results directory: locked for this run (:class:`~experiments.run_lock.RunLock`)
            and claimed for this experiment before anything runs.
        workers: processes to use (default: the machine's core count).
        executor: ``local`` (processes on this machine) or ``dask``.
        scheduler: a Dask scheduler address; without one, ``dask`` starts a LocalCluster.
        resume: continue the same experiment in ``out``: skip points saved, verified and
            succeeded with the same config.
        force: remove the results ``out`` holds (of this or another experiment) first.
        on_point: called as each point finishes; a line it returns is printed above the
            progress bar (on stdout).
        estimates: each point's :func:`experiments.estimate.estimate_point`; given, the points are
            checked against the memory they will get (the local workers together, or a Dask
            worker's limit) before any work.
        report: also write ``DIR/report.html`` (noted in the manifest).
        notes: told one-line notes (a stale lock taken over, damaged chunks rerun); default stderr.

    Raises:
        UsageError: another run holds ``out``, or ``out`` holds results it may not use (see
            :func:`experiments.store.claim`).
        ConfigError: the points do not fit in the memory they would get; nothing ran.
        ExecutorError: the executor could not start; nothing ran.
        RunError: the run failed part way; finished points are saved.
    """
    out = Path(out)
    say = notes or (lambda line: print(f"moesim: {line}", file=sys.stderr))
    if executor == "dask":
        _check_dask()  # before the directory is touched
    lock = RunLock(out)
    lock.check()  # a run writing ``out`` now is named first
    claim(out, plan.experiment.name, plan.raw, resume=resume, force=force, check_only=True)
    created = not out.exists()
    try:
        lock.acquire()
    except BaseException:
        if created:
            shutil.rmtree(out, ignore_errors=True)
        raise
    try:
        if lock.note:
            say(lock.note)
        claim(out, plan.experiment.name, plan.raw, resume=resume, force=force)
        lock.announce()
        moved = migrate_legacy(out, [point for _, point in plan.points]) if resume else None
        if moved:
            say(moved)
        for line in clean(out):
            say(line)
        return _execute(plan, out, workers, executor, scheduler, resume, on_point, estimates, report, say)
    except (ExecutorError, ConfigError, UsageError):
        if created:  # nothing ran: leave nothing behind
            lock.release()
            shutil.rmtree(out, ignore_errors=True)
        raise
    finally:
        lock.release()


def _execute(
    plan: Plan,
    out: Path,
    workers: int | None,
    executor: str,
    scheduler: str | None,
    resume: bool,
    on_point: Callable[[PointDone], str | None] | None,
    estimates: list[Estimate] | None,
    report: bool,
    say: Callable[[str], None],
) -> RunOutcome:
    workers = workers or os.cpu_count() or 1
    total = len(plan.points)
    found = scan(out, [point_hash(point) for _, point in plan.points]) if resume else None
    if found is not None:
        for line in found.problems:
            say(line)
        discard(found)
        if found.other_config:
            n = found.other_config
            say(f"{n} saved point{'s were' if n != 1 else ' was'} run with another config; running again")
    todo: list[Task] = []
    skipped = 0
    for index, (swept, point) in enumerate(plan.points):
        if found is not None and found.done(index):
            skipped += 1
        else:
            todo.append((index, swept, point))
    failed = finished = 0
    writer = ChunkWriter(out)

    def broken(what: str) -> RunError:
        saved = skipped + finished - writer.buffered
        return RunError(f"{what}; {saved} of {total} points are saved in {out}", saved)

    def save() -> None:
        try:
            writer.flush()
        except OSError as err:
            raise broken(f"cannot save points in {out} ({err.strerror or _reason(err)})") from None

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
    lost: _WorkerLost | None = None
    try:
        for item in stream:
            if item is not None:
                (index, swept, point), result = item
                writer.add(result, point)
                finished += 1
                failed += result.failed
                bar.update(1)
                if on_point is not None:
                    line = on_point(PointDone(result, swept, skipped + finished, total))
                    if line is not None:
                        bar.write(line, file=sys.stdout)
            if writer.due():
                save()
    except _WorkerLost as err:
        lost = err
    except BaseException:
        bar.close()
        raise
    finally:
        stream.close()  # stops the executor now: cancels what has not started
        if dask is not None:
            dask.close()
        save()  # whatever finished is kept, also on Ctrl-C or an error
    if lost is not None:
        bar.close()
        raise broken(str(lost))
    return _finish(plan, out, RunOutcome(pd.DataFrame(), len(todo), skipped, failed), report, broken, bar)


def _finish(
    plan: Plan,
    out: Path,
    outcome: RunOutcome,
    report: bool,
    broken: Callable[[str], RunError],
    steps: tqdm,
) -> RunOutcome:
    """Combine the verified points (then the manifest), and write the report if asked; the run's
    one progress bar (``steps``) now counts those steps."""
    steps.reset(total=len(TABLES) + report)
    steps.unit = "step"
    steps.set_description(f"{plan.experiment.name}: combine")
    started = time.perf_counter()
    try:
        outcome.results = combine(
            out, plan, progress=lambda name: (steps.set_postfix_str(name), steps.update(1))
        )
    except StoreError as err:
        steps.close()
        raise broken(str(err)) from None
    except OSError as err:
        steps.close()
        raise broken(f"cannot write the combined tables in {out} ({err.strerror or _reason(err)})") from None
    finally:
        outcome.combine_s = time.perf_counter() - started
    if report:
        from experiments.report import ReportError, write_report

        steps.set_postfix_str("report")
        started = time.perf_counter()
        try:
            outcome.report = write_report(out)
            note_report(out, outcome.report)
        except (ReportError, OSError) as err:
            steps.close()
            message = f"cannot write the report ({err}); the results are complete in {out}"
            raise RunError(
                f"{message} (rerun 'moesim report {out}')", len(plan.points), resume=False
            ) from None
        finally:
            outcome.report_s = time.perf_counter() - started
            steps.update(1)
    steps.close()
    return outcome
