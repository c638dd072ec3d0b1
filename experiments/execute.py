"""Execute a sweep: points on local processes or a Dask cluster, saved as they finish.

Only this process writes files: workers return each point's tables, and the point is saved
atomically here the moment it arrives. Interrupting a run (Ctrl-C, a crash) loses no finished
point; ``resume=True`` skips saved points whose config is unchanged. Results do not depend on
the executor or the number of workers: every point is simulated on its own.
"""

from __future__ import annotations

import multiprocessing
import os
import sys
from collections.abc import Callable, Iterator
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
from tqdm import tqdm

from experiments.config import Experiment, Plan
from experiments.placing import presolve
from experiments.runner import PointResult, run_point
from experiments.store import combine, save_point, saved_ok

Task = tuple[int, dict[str, Any], Experiment]


class ExecutorError(RuntimeError):
    """The executor could not be started (e.g. Dask missing or a scheduler unreachable)."""


@dataclass
class RunOutcome:
    """What a run did: the combined results table and how many points ran, were skipped, failed."""

    results: pd.DataFrame
    ran: int
    skipped: int
    failed: int


def _run(task: Task) -> PointResult:
    return run_point(*task)


def _local(tasks: list[Task], workers: int) -> Iterator[tuple[Task, PointResult]]:
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
                    yield running.pop(future), future.result()
        finally:
            for future in running:
                future.cancel()


def _dask(tasks: list[Task], workers: int, scheduler: str | None) -> Iterator[tuple[Task, PointResult]]:
    try:
        from dask.distributed import Client, LocalCluster, as_completed
    except ImportError:
        raise ExecutorError("--executor dask needs dask.distributed (pip install 'moesim[dask]')") from None
    cluster = None
    try:
        if scheduler:
            client = Client(scheduler, timeout="20s")
        else:
            cluster = LocalCluster(
                n_workers=max(workers, 1), threads_per_worker=1, processes=True, dashboard_address=None
            )
            client = Client(cluster)
    except OSError as err:
        raise ExecutorError(f"--scheduler {scheduler}: cannot connect ({err})") from None
    try:
        futures = {client.submit(_run, task, pure=False): task for task in tasks}
        for future in as_completed(futures):
            yield futures[future], future.result()
    finally:
        client.close()
        if cluster is not None:
            cluster.close()


def run_experiment(
    plan: Plan,
    out: Path,
    workers: int | None = None,
    executor: str = "local",
    scheduler: str | None = None,
    resume: bool = False,
    on_point: Callable[[PointResult], None] | None = None,
) -> RunOutcome:
    """Run every point of ``plan`` into ``out`` and combine the tables.

    Args:
        plan: the validated experiment and its points.
        out: the results directory (created when the first point is saved).
        workers: processes to use (default: the machine's core count).
        executor: ``local`` (processes on this machine) or ``dask``.
        scheduler: a Dask scheduler address; without one, ``dask`` starts a LocalCluster.
        resume: skip points already saved with the same config.
        on_point: called with each point's result as it is saved.
    """
    out = Path(out)
    workers = workers or os.cpu_count() or 1
    todo: list[Task] = []
    skipped = 0
    for index, (swept, point) in enumerate(plan.points):
        if resume and saved_ok(out, index, point):
            skipped += 1
        else:
            todo.append((index, swept, point))
    if todo:
        points = presolve([point for _, _, point in todo], out)
        todo = [(index, swept, point) for (index, swept, _), point in zip(todo, points, strict=True)]
    stream = _dask(todo, workers, scheduler) if executor == "dask" else _local(todo, workers)
    failed = 0
    bar = tqdm(
        total=len(plan.points), initial=skipped, unit="point", desc=plan.experiment.name, file=sys.stderr
    )
    try:
        for (_, _, point), result in stream:
            save_point(out, result, point)
            failed += result.failed
            bar.update(1)
            if on_point is not None:
                on_point(result)
    finally:
        bar.close()
    results = combine(out, plan.raw, len(plan.points))
    return RunOutcome(results, len(todo), skipped, failed)
