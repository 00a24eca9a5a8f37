"""parallel.run_here_and_local: this process is one of the workers, and every task ends in
exactly one callback, also when a task raises here or a spawned worker dies."""

import os

import pytest

from relu_regions import parallel

TASKS = '''
import multiprocessing
import os


def where(task):
    return task, os.getpid()


def dies_in_a_worker(task):
    if task == 0 and multiprocessing.parent_process() is not None:
        os._exit(3)  # like a segfault or the OOM killer
    return task, os.getpid()


def raises_on_two(task):
    if task == 2:
        raise ValueError("task two")
    return task, os.getpid()
'''


@pytest.fixture
def funcs(tmp_path, monkeypatch):
    (tmp_path / "parallel_tasks.py").write_text(TASKS)
    monkeypatch.syspath_prepend(str(tmp_path))  # spawned workers get the parent's sys.path
    import parallel_tasks

    return parallel_tasks


def run(fn, n_tasks, n_workers):
    done, errors = {}, {}

    def on_done(i, value):
        assert i not in done and i not in errors
        done[i] = value

    def on_error(i, err, why):
        assert i not in done and i not in errors
        errors[i] = (type(err).__name__, why)

    parallel.run_here_and_local(fn, list(range(n_tasks)), n_workers, on_done, on_error)
    return done, errors


def test_tasks_run_here_and_in_the_workers(funcs):
    done, errors = run(funcs.where, 8, 2)
    assert not errors
    assert sorted(done) == list(range(8))
    assert all(done[i][0] == i for i in done)
    here = {i for i, (_, pid) in done.items() if pid == os.getpid()}
    # Tasks 0 and 1 are queued for the spawned worker, and this process takes task 2 at once.
    assert 2 in here and not {0, 1} & here
    assert len(here) < 8


def test_a_task_raising_here_is_reported_and_the_rest_run(funcs):
    done, errors = run(funcs.raises_on_two, 6, 2)
    assert errors == {2: ("ValueError", parallel.RAISED)}
    assert sorted(done) == [0, 1, 3, 4, 5]


def test_a_dying_worker_is_retried_then_reported_and_the_rest_run(funcs):
    done, errors = run(funcs.dies_in_a_worker, 6, 2)
    # Task 0 kills every spawned worker that runs it: it is reported, never counted as done.
    assert errors == {0: ("BrokenProcessPool", parallel.DIED)}
    assert sorted(done) == [1, 2, 3, 4, 5]
    assert all(done[i][0] == i for i in done)
