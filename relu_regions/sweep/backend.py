"""Running independent tasks in parallel: in this process, in local spawn processes, or on a Dask
cluster, with the results in task order whatever the scheduling. The sweeps' cells and the
tracker's checkpoints (``relu-regions track``) run through it.

A task is plain data handed to a top-level function ``fn`` (both must pickle: spawn workers and
Dask workers import ``fn`` by name). A task that raises, or whose worker dies, becomes
``failed(task, error)`` with ``error`` the one-line text of what happened, and the rest go on.
"""

from __future__ import annotations

import concurrent.futures as cf
import multiprocessing
import os
from collections.abc import Callable, Sequence
from typing import Any

from ..errors import InputError
from ..validation import check_int, env_defaults, one_line
from .config import show

DIED = ("BrokenProcessPool: the worker process died while running this cell (a crash or out "
        "of memory)")
BROKEN_POOL = ("BrokenProcessPool: a worker process died; if every cell failed so, the workers "
               "could not start: call run_sweep from a script file under "
               "`if __name__ == '__main__':` (spawn re-imports it), or use workers=0")

Failed = Callable[[Any, str], Any]


def run_tasks(fn: Callable[[Any], Any], tasks: Sequence, failed: Failed, *,
              workers: int | None = None, scheduler: Any = None,
              bar: Any = None) -> tuple[list, str, int | None]:
    """``[fn(task) for task in tasks]``, run as asked; returns (results, mode, workers).

    ``scheduler`` (an address "tcp://host:8786", a ``dask.distributed`` Client, or a cluster with
    ``scheduler_address``): mode "dask". Else ``workers=0``: one by one here, mode "inline";
    else a spawn pool of ``workers`` processes (default: all cores, at most one per task), one
    BLAS thread each, mode "local". ``bar`` (anything with ``update(n)``, e.g. tqdm) is advanced
    once per finished task.
    """
    if scheduler is not None and workers is not None:
        raise InputError("workers applies to local runs; a Dask cluster's workers are set by "
                         "the cluster")
    if workers is not None:
        check_int(workers, "workers", low=0)
    if scheduler is not None:
        return run_dask(fn, tasks, scheduler, failed, bar), "dask", None
    if workers == 0:
        results = []
        for task in tasks:
            results.append(fn(task))
            if bar:
                bar.update(1)
        return results, "inline", 0
    n_workers = max(1, min(workers or os.cpu_count() or 1, len(tasks)))
    return run_local(fn, tasks, n_workers, failed, bar), "local", n_workers


def run_local(fn, tasks, n_workers, failed: Failed, bar=None) -> list:
    """Tasks in spawn process pools; results in task order.

    A task's exception comes back as ``failed(task, its one-line text)``. A worker that dies
    (segfault, out of memory) breaks the whole pool and every unfinished task with it, so those
    are run again in a fresh pool; a round that finishes nothing is rerun with one worker, where
    the tasks run in order and the first unfinished one is the task that killed it: that task
    is reported as failed (``DIED``), the rest go on. If workers never finish anything (they
    cannot start), every task is reported failed (``BROKEN_POOL``) after a few tries.
    """
    results = [None] * len(tasks)
    todo = list(range(len(tasks)))
    width, ever_done, culprits = n_workers, False, 0
    # One BLAS/OpenMP thread per worker (read by the children at start-up): n workers on n cores.
    with env_defaults(OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1", MKL_NUM_THREADS="1"):
        while todo:
            done, broken = _pool_round(fn, tasks, todo, width, results, bar)
            ever_done = ever_done or bool(done)
            dead = cf.process.BrokenProcessPool
            for i in [i for i, e in broken.items() if not isinstance(e, dead)]:
                results[i] = failed(tasks[i], one_line(broken.pop(i)))  # e.g. unpicklable
                if bar:
                    bar.update(1)
            if not broken:
                break
            todo = sorted(broken)
            if width > 1:
                width = n_workers if done else 1
                continue
            culprits += 1
            if not ever_done and culprits >= 3:  # the workers cannot start at all
                for i in todo:
                    results[i] = failed(tasks[i], BROKEN_POOL)
                    if bar:
                        bar.update(1)
                break
            i = todo.pop(0)  # one worker, tasks in order: the first unfinished one killed it
            results[i] = failed(tasks[i], DIED if ever_done else BROKEN_POOL)
            if bar:
                bar.update(1)
            width = n_workers
    return results


def _pool_round(fn, tasks, todo, width, results, bar):
    """Submit ``todo`` to a fresh pool of ``width`` workers; fill results; return (done,
    errors)."""
    done, broken = [], {}
    ctx = multiprocessing.get_context("spawn")
    with cf.ProcessPoolExecutor(max_workers=min(width, len(todo)), mp_context=ctx) as pool:
        futures = {pool.submit(fn, tasks[i]): i for i in todo}
        for fut in cf.as_completed(futures):
            i = futures[fut]
            try:
                results[i] = fut.result()
            except Exception as err:  # BrokenProcessPool, pickling, ...
                broken[i] = err
                continue
            done.append(i)
            if bar:
                bar.update(1)
    return done, broken


def run_dask(fn, tasks, scheduler, failed: Failed, bar=None) -> list:
    """Tasks on a Dask cluster (``scheduler`` as in :func:`run_tasks`); results in task order.
    The workers need relu-regions installed."""
    try:
        from dask.distributed import Client, as_completed
    except ImportError:
        raise InputError("Dask mode needs dask[distributed]: pip install 'relu-regions[sweep]'") \
            from None
    own = False
    if isinstance(scheduler, Client):
        client = scheduler
    else:
        address = getattr(scheduler, "scheduler_address", scheduler)
        if not isinstance(address, str) or not address.strip():
            raise InputError(f"scheduler must be an address like tcp://host:8786, got "
                             f"{show(scheduler)}")
        try:
            client = Client(address.strip(), timeout="20s")
        except (OSError, TimeoutError, ValueError) as err:
            raise InputError(f"cannot connect to the Dask scheduler {address.strip()!r}: "
                             f"{one_line(err)}") from None
        own = True
    try:
        results = [None] * len(tasks)
        # pure=False: every task is its own even if two tasks' arguments were equal.
        futures = client.map(fn, tasks, pure=False)
        index = {f.key: i for i, f in enumerate(futures)}
        for fut in as_completed(futures):
            i = index[fut.key]
            try:
                results[i] = fut.result()
            except Exception as err:  # e.g. KilledWorker: this task only
                results[i] = failed(tasks[i], one_line(err))
            if bar:
                bar.update(1)
        return results
    finally:
        if own:
            client.close()
