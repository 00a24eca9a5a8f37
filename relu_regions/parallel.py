"""Independent tasks here, on local processes or on a Dask cluster, shared by sweeps
(sweep/grid.py), tiled plane counts (analysis/tiles.py) and the tracker over checkpoints
(analysis/tracking.py). :func:`run_tasks` returns the results in task order; :func:`run_local`,
:func:`run_here_and_local` (this process one of the workers) and :func:`run_dask` report each task
through callbacks.

``fn`` is a top-level function (workers import it by name); it is called as ``fn(task)``, or
``fn(shared, task)`` when ``shared`` is given: data every task reads (a model's weights), sent
once per worker process (a pool initializer; on Dask, one scatter) rather than with every task.
Each task ends in exactly one callback: ``on_done(i, value)`` or ``on_error(i, err, why)`` with
``why`` one of RAISED (``fn`` raised; on Dask also a worker lost more often than the scheduler
retries), DIED (its worker process died while running it, e.g. out of memory) or NO_START (the
worker processes could not start).
"""

from __future__ import annotations

import concurrent.futures as cf
import contextlib
import multiprocessing
import os
from collections import deque
from collections.abc import Callable, Sequence
from typing import Any

from .errors import InputError
from .validation import check_int, env_defaults, one_line

RAISED, DIED, NO_START = "raised", "died", "cannot-start"
START_TRIES = 3  # rounds in which no worker finishes anything before giving up
# run_here_and_local: tasks queued per spawned worker, so that it finds its next task queued
# while this process is busy with its own
QUEUED_PER_WORKER = 2

_SHARED: Any = None  # ``shared`` in a local worker process, set by its initializer
# A spawned worker's BLAS / OpenMP threads (n workers on n cores), unless the user set them
ONE_THREAD = {"OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}

# run_tasks: what a task whose worker died, or whose workers never started, reports
DIED_TEXT = ("BrokenProcessPool: the worker process died while running this task (a crash or "
             "out of memory)")
NO_START_TEXT = ("BrokenProcessPool: a worker process died; if every task failed so, the workers "
                 "could not start: run from a script file under `if __name__ == '__main__':` "
                 "(spawn re-imports it), or use workers=0")


def run_tasks(fn: Callable[[Any], Any], tasks: Sequence, failed: Callable[[Any, str], Any], *,
              workers: int | None = None, scheduler: Any = None, bar: Any = None,
              texts: dict | None = None) -> tuple[list, str, int | None]:
    """``[fn(task) for task in tasks]``, run as asked; returns (results, mode, workers).

    ``scheduler`` (as in :func:`run_dask`): mode "dask". Else ``workers=0``: one by one here,
    mode "inline"; else a spawn pool of ``workers`` processes (default: all cores, at most one
    per task), mode "local". A task that raises or whose worker dies gives ``failed(task,
    text)``, the one-line error (``texts`` maps DIED / NO_START to the caller's wording), and the
    rest go on. ``bar`` (anything with ``update(n)``) advances once per finished task.
    """
    if scheduler is not None and workers is not None:
        raise InputError("workers applies to local runs; a Dask cluster's workers are set by "
                         "the cluster")
    if workers is not None:
        check_int(workers, "workers", low=0)
    texts = {DIED: DIED_TEXT, NO_START: NO_START_TEXT, **(texts or {})}
    results = [None] * len(tasks)

    def done(i, value):
        results[i] = value
        if bar:
            bar.update(1)

    def error(i, err, why):
        done(i, failed(tasks[i], texts.get(why) or one_line(err)))

    if scheduler is not None:
        run_dask(fn, tasks, scheduler, done, error)
        return results, "dask", None
    if workers == 0:
        for i, task in enumerate(tasks):
            done(i, fn(task))
        return results, "inline", 0
    n_workers = max(1, min(workers or os.cpu_count() or 1, len(tasks)))
    run_local(fn, tasks, n_workers, done, error)
    return results, "local", n_workers


def run_local(fn: Callable, tasks: Sequence, n_workers: int, on_done: Callable,
              on_error: Callable, shared: Any = None, started: bool = False) -> None:
    """Tasks in spawn process pools of ``n_workers``, one BLAS thread each (n workers on n
    cores).

    A task's exception goes to ``on_error(i, err, RAISED)``. A worker that dies (segfault, out of
    memory) breaks the pool and every unfinished task with it, so those run again in a fresh
    pool; a round that finishes nothing is run again with one worker, where tasks run in order
    and the first unfinished one is the task that killed it (DIED); the others go on. If workers
    never finish anything (they cannot start), every task ends in NO_START after a few rounds.
    ``started``: workers are known to start (one has finished a task before).
    """
    todo = list(range(len(tasks)))
    width, ever_done, culprits = n_workers, started, []
    with env_defaults(**ONE_THREAD):
        while todo:
            done, broken = _pool_round(fn, tasks, todo, width, on_done, shared)
            ever_done = ever_done or bool(done)
            dead = cf.process.BrokenProcessPool
            for i in [i for i, e in broken.items() if not isinstance(e, dead)]:
                on_error(i, broken.pop(i), RAISED)  # e.g. an unpicklable argument
            if not broken:
                break
            todo = sorted(broken)
            if width > 1:
                width = n_workers if done else 1
                continue
            if not ever_done and len(culprits) + 1 >= START_TRIES:
                for i in todo:
                    on_error(i, broken[i], NO_START)
                break
            i = todo.pop(0)  # one worker, tasks in order: the first unfinished one killed it
            culprits.append((i, broken[i]))
            width = n_workers
    for i, err in culprits:  # reported last: a later round may show that workers do start
        on_error(i, err, DIED if ever_done else NO_START)


def run_here_and_local(fn: Callable, tasks: Sequence, n_workers: int, on_done: Callable,
                       on_error: Callable, shared: Any = None,
                       here: Callable = contextlib.nullcontext) -> None:
    """:func:`run_local` with this process as one of the ``n_workers`` (>= 2): ``n_workers - 1``
    spawned workers, and this process runs tasks too (each inside ``here()``, e.g. one torch
    thread, as the workers have), so the count starts at once while the spawned ones import
    and load. Tasks go out in order: QUEUED_PER_WORKER queued per spawned worker, the next one
    taken here. A task that raises here ends in ``on_error(i, err, RAISED)``. When a spawned
    worker dies, its pool's unfinished tasks and those not handed out yet go to
    :func:`run_local`, which reruns them and reports the one that kills its worker (DIED)."""
    pending = deque(range(len(tasks)))
    inflight: dict = {}
    lost: list[int] = []
    started = [False]  # a spawned worker has finished a task

    def call(i):
        return fn(tasks[i]) if shared is None else fn(shared, tasks[i])

    def collect(futures):
        for fut in futures:
            i = inflight.pop(fut)
            try:
                value = fut.result()
            except cf.process.BrokenProcessPool:
                lost.append(i)
            except Exception as err:  # the task's own error, or pickling
                on_error(i, err, RAISED)
            else:
                started[0] = True
                on_done(i, value)

    def hand_out(pool) -> bool:  # False once the pool is broken (a worker died)
        while pending and len(inflight) < QUEUED_PER_WORKER * (n_workers - 1):
            try:
                inflight[_submit(pool, fn, tasks[pending[0]], shared)] = pending[0]
            except cf.process.BrokenProcessPool:
                return False
            pending.popleft()
        return True

    with env_defaults(**ONE_THREAD), _spawn_pool(n_workers - 1, shared) as pool:
        try:
            while pending and not lost and hand_out(pool):
                if pending:
                    i = pending.popleft()
                    try:
                        with here():
                            value = call(i)
                    except Exception as err:
                        on_error(i, err, RAISED)
                    else:
                        on_done(i, value)
                collect([f for f in list(inflight) if f.done()])
            collect(cf.as_completed(list(inflight)))
        except BaseException:  # e.g. Ctrl-C here: do not wait for the queued tasks
            pool.shutdown(wait=False, cancel_futures=True)
            raise
    lost += pending
    if lost:
        lost.sort()
        run_local(fn, [tasks[i] for i in lost], n_workers, lambda j, v: on_done(lost[j], v),
                  lambda j, err, why: on_error(lost[j], err, why), shared, started[0])


def _init_worker(shared):
    global _SHARED
    _SHARED = shared


def _call_shared(fn, task):
    return fn(_SHARED, task)


def _spawn_pool(width, shared) -> cf.ProcessPoolExecutor:
    """A spawn pool of ``width`` workers, each given ``shared`` once (the initializer)."""
    extra = {} if shared is None else {"initializer": _init_worker, "initargs": (shared,)}
    return cf.ProcessPoolExecutor(max_workers=width, mp_context=multiprocessing.get_context(
        "spawn"), **extra)


def _submit(pool, fn, task, shared) -> cf.Future:
    return pool.submit(fn, task) if shared is None else pool.submit(_call_shared, fn, task)


def _pool_round(fn, tasks, todo, width, on_done, shared):
    """Submit ``todo`` to a fresh pool of ``width`` workers; return (done, errors by task)."""
    done, broken = [], {}
    with _spawn_pool(min(width, len(todo)), shared) as pool:
        futures = {_submit(pool, fn, tasks[i], shared): i for i in todo}
        for fut in cf.as_completed(futures):
            i = futures[fut]
            try:
                value = fut.result()
            except Exception as err:  # BrokenProcessPool, pickling, the task's own error
                broken[i] = err
                continue
            done.append(i)
            on_done(i, value)
    return done, broken


def _call_with(task, fn, shared):
    return fn(shared, task)


def run_dask(fn: Callable, tasks: Sequence, scheduler: Any, on_done: Callable,
             on_error: Callable, shared: Any = None) -> None:
    """Tasks on a Dask cluster: ``scheduler`` an address ("tcp://host:8786"), a
    ``dask.distributed`` Client, or a cluster object with ``scheduler_address``. The scheduler
    reruns a task whose worker died (its ``allowed-failures`` setting) before reporting it."""
    client, own = connect(scheduler)
    try:
        # pure=False: every task is its own, even if two tasks' arguments were equal.
        if shared is None:
            futures = client.map(fn, tasks, pure=False)
        else:
            data = client.scatter(shared, broadcast=True)
            futures = client.map(_call_with, tasks, fn=fn, shared=data, pure=False)
        index = {f.key: i for i, f in enumerate(futures)}
        from dask.distributed import as_completed

        for fut in as_completed(futures):
            i = index[fut.key]
            try:
                value = fut.result()
            except Exception as err:  # e.g. KilledWorker: this task only
                on_error(i, err, RAISED)
                continue
            on_done(i, value)
    finally:
        if own:
            client.close()


def connect(scheduler: Any):
    """(a dask.distributed Client for ``scheduler``, whether we opened it and must close it)."""
    try:
        from dask.distributed import Client
    except ImportError:
        raise InputError("Dask mode needs dask[distributed]: pip install 'relu-regions[sweep]'") \
            from None
    if isinstance(scheduler, Client):
        return scheduler, False
    address = getattr(scheduler, "scheduler_address", scheduler)
    if not isinstance(address, str) or not address.strip():
        shown = repr(scheduler) if len(repr(scheduler)) <= 60 else repr(scheduler)[:57] + "..."
        raise InputError(f"scheduler must be an address like tcp://host:8786, got {shown}")
    try:
        return Client(address.strip(), timeout="20s"), True
    except (OSError, TimeoutError, ValueError) as err:
        raise InputError(f"cannot connect to the Dask scheduler {address.strip()!r}: "
                         f"{one_line(err)}") from None
