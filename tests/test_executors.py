"""Scale-out: executors for independent subtrees, and safe concurrent writers (issue 4)."""

from __future__ import annotations

import logging
import multiprocessing
import os
import signal
import subprocess
import sys
import textwrap
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import pytest
from helpers import Add, Boom, CounterState, Multiply, read_log

import dagger as dg


def three_levels(exp_dir):
    """root -> 2 x Add -> 3 x Multiply each -> Add: 1 + 2 + 6 + 6 = 15 states."""
    exp = dg.Experiment(exp_dir, CounterState)
    root = exp.spawn_new_tree(start=1)
    for first in (1, 2):
        a = Add(first)(root)
        with exp.tag(f"branch-{first}"):
            for factor in (2, 3, 4):
                Add(100)(Multiply(factor)(a))
    dg.Function(lambda state: state.value, name="value")(root)
    return exp


def store_contents(exp_dir):
    """id -> (parent, recipe, tags, results, loaded content) of every stored state.

    Not the payload bytes: a pickle of equal values may differ in how it shares objects (a
    parent loaded from disk versus one kept in memory), so contents are compared loaded.
    """
    contents = {}
    tree = dg.Experiment.restore(exp_dir).graph
    for state in tree.nodes.iterator:
        contents[state.sha()] = (
            state.parent_sha,
            state.dagger.record.recipe,
            sorted(state.tags),
            dict(state.dagger.results),
            state.value,
            state.history,
        )
    return contents


@pytest.fixture(scope="module")
def in_process_store(tmp_path_factory):
    exp_dir = tmp_path_factory.mktemp("inprocess") / "exp"
    three_levels(exp_dir).run(progress=False)
    return store_contents(exp_dir)


def test_process_pool_gives_the_same_store(tmp_path, in_process_store, call_log):
    exp = three_levels(tmp_path / "exp")
    with ProcessPoolExecutor(2, mp_context=multiprocessing.get_context("spawn")) as pool:
        report = exp.run(executor=pool, progress=False)
    assert (report.computed, report.failed, report.functions) == (15, 0, 1)
    assert store_contents(tmp_path / "exp") == in_process_store
    assert sorted(read_log(call_log)).count("root") == 1
    assert len(read_log(call_log)) == 15  # every state computed exactly once
    tree = dg.Experiment.restore(tmp_path / "exp").graph
    assert tree.root.dagger.results["value"] == 1
    # a rerun with the executor computes nothing
    exp = three_levels(tmp_path / "exp")
    with ProcessPoolExecutor(2) as pool:
        assert exp.run(executor=pool, progress=False).computed == 0


def test_dask_local_cluster_gives_the_same_store(tmp_path, in_process_store):
    distributed = pytest.importorskip("distributed")
    logging.getLogger("distributed").setLevel(logging.ERROR)
    with (
        distributed.LocalCluster(
            n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None
        ) as cluster,
        distributed.Client(cluster) as client,
    ):
        exp = three_levels(tmp_path / "exp")
        report = exp.run(executor=client, progress=False)
    assert report.computed == 15
    assert store_contents(tmp_path / "exp") == in_process_store


def test_submitit_local_executor(tmp_path, monkeypatch, subprocess_env):
    submitit = pytest.importorskip("submitit")
    # A Slurm job starts in the folder it was submitted from and imports the recipes' module
    # from there, as a user's job does (subprocess_env put helpers.py in tmp_path).
    monkeypatch.chdir(tmp_path)
    executor = submitit.LocalExecutor(folder=str(tmp_path / "jobs"))
    executor.update_parameters(timeout_min=5)
    exp = dg.Experiment(tmp_path / "exp", CounterState)
    root = exp.spawn_new_tree(start=2)
    a, b = Add(1)(root), Multiply(5)(root)
    report = exp.run(executor=executor, progress=False)
    assert report.computed == 3
    assert a.get().value == 3 and b.get().value == 10


def test_remote_failure_is_reported_like_a_local_one(tmp_path, call_log):
    exp = dg.Experiment(tmp_path / "exp", CounterState)
    root = exp.spawn_new_tree(start=1)
    bad = Boom()(root)
    Add(1)(bad)
    Add(2)(Add(3)(root))
    with ProcessPoolExecutor(2) as pool, pytest.raises(dg.RunError) as info:
        exp.run(executor=pool, progress=False)
    report = info.value.report
    assert (report.computed, report.failed, report.skipped) == (3, 1, 1)
    (failure,) = info.value.failures
    assert failure.state_id == bad.sha() and failure.error_type == "ValueError"
    assert 'raise ValueError("boom on purpose")' in failure.traceback
    assert dg.store.DirectoryStore(tmp_path / "exp").read_failure(bad.sha()) is not None


MAIN_SCRIPT = textwrap.dedent(
    """
    import multiprocessing
    import sys
    from concurrent.futures import ProcessPoolExecutor

    import dagger as dg


    class Notebook(dg.ExperimentState):      # defined in __main__, as in a notebook
        def initialize_state(self, **arguments):
            self.values = [arguments["start"]]


    class Append(dg.Recipe):
        def __init__(self, value):
            self.value = value

        def run(self, state):
            state.values = state.values + [self.value]
            return state


    if __name__ == "__main__":
        exp = dg.Experiment(sys.argv[1], Notebook)
        root = exp.spawn_new_tree(start=0)
        leaves = [Append(2)(Append(1)(root)), Append(3)(root)]
        dg.Function(lambda state: len(state.values), name="length")(leaves[0])
        context = multiprocessing.get_context("spawn")  # workers never see __main__
        with ProcessPoolExecutor(2, mp_context=context) as pool:
            report = exp.run(executor=pool, progress=False)
        print(report.computed, [leaf.get().values for leaf in leaves])
    """
)


def test_classes_defined_in_main_work_in_workers(tmp_path, subprocess_env):
    script = tmp_path / "study.py"
    script.write_text(MAIN_SCRIPT)
    result = subprocess.run(
        [sys.executable, str(script), str(tmp_path / "exp")],
        env=subprocess_env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "4 [[0, 1, 2], [0, 3]]"
    tree = dg.Experiment.restore(tmp_path / "exp").graph  # the state class comes by value
    (leaf,) = [state for state in tree.leaves if state.dagger.results]
    assert leaf.dagger.results["length"] == 3
    with leaf.lazy_load():
        assert leaf.values == [0, 1, 2]


class KillOnce(dg.Recipe):
    """SIGKILLs its own process the first time it runs (a worker lost mid-recipe)."""

    def __init__(self, marker):
        self.marker = marker

    def run(self, state):
        if not os.path.exists(self.marker):
            Path(self.marker).touch()
            os.kill(os.getpid(), signal.SIGKILL)
        return state


def test_a_worker_killed_mid_recipe_is_reported_and_a_rerun_completes(tmp_path):
    marker = str(tmp_path / "killed-once")

    def build():
        exp = dg.Experiment(tmp_path / "exp", CounterState)
        root = exp.spawn_new_tree(start=1)
        victim = KillOnce(marker)(root)
        Add(1)(victim)
        return exp, victim

    exp, victim = build()
    with ProcessPoolExecutor(1) as pool, pytest.raises(dg.RunError) as info:
        exp.run(executor=pool, progress=False)
    assert any(failure.state_id == victim.sha() for failure in info.value.failures)
    assert "worker" in str(info.value)
    exp, victim = build()
    with ProcessPoolExecutor(1) as pool:
        report = exp.run(executor=pool, progress=False)
    assert report.computed == 2 and report.failed == 0


# -- concurrent writers into one folder -----------------------------------------------------------

WRITER = textwrap.dedent(
    """
    import sys, time, os
    import dagger as dg
    from helpers import Add, CounterState, Multiply

    folder, go = sys.argv[1], sys.argv[2]
    while not os.path.exists(go):
        time.sleep(0.001)
    exp = dg.Experiment(folder, CounterState, durability="fast")
    root = exp.spawn_new_tree(start=1)
    for branch in range(7):
        node = Add(branch)(root)
        for step in range(6):
            node = Multiply(step + 2)(node)
    exp.run(progress=False)   # 1 + 7 * 7 = 50 states
    """
)


@pytest.mark.parametrize("processes", [2, 4])
def test_concurrent_runs_compute_every_state_exactly_once(tmp_path, subprocess_env, processes):
    script = tmp_path / "writer.py"
    script.write_text(WRITER)
    for trial in range(20):
        folder, go = tmp_path / f"exp{trial}", tmp_path / f"go{trial}"
        log = tmp_path / f"calls{trial}.log"
        env = {**subprocess_env, "DAGGER_TEST_LOG": str(log)}
        writers = [
            subprocess.Popen(
                [sys.executable, str(script), str(folder), str(go)],
                env=env,
                stderr=subprocess.PIPE,
                text=True,
            )
            for _ in range(processes)
        ]
        time.sleep(0.05)
        go.touch()
        for writer in writers:
            _, err = writer.communicate(timeout=120)
            assert writer.returncode == 0, err
        calls = read_log(log)
        assert len(calls) == 50, f"trial {trial}: {len(calls)} computations for 50 states"
        tree = dg.Experiment.restore(folder).graph
        assert len(tree) == 50
        for state in tree.leaves.iterator:
            assert state.value > 0
        assert dg.verify(folder).ok


def test_a_lock_left_by_a_killed_process_is_recovered(tmp_path, subprocess_env):
    exp = dg.Experiment(tmp_path / "exp", CounterState)
    root = exp.spawn_new_tree(start=1)
    child = Add(1)(root)
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys, time; from dagger.store import DirectoryStore;"
            "lock = DirectoryStore(sys.argv[1]).lock(sys.argv[2]); lock.__enter__();"
            "print('locked', flush=True); time.sleep(600)",
            str(tmp_path / "exp"),
            child.sha(),
        ],
        env=subprocess_env,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert holder.stdout.readline().strip() == "locked"
    holder.send_signal(signal.SIGKILL)
    holder.wait()
    holder.stdout.close()
    assert exp.run(progress=False).computed == 2


def test_untrusted_filesystem_warns_once_and_stays_correct(tmp_path, monkeypatch, dagger_warnings):
    from dagger.store import locks

    monkeypatch.setattr(locks, "filesystem_type", lambda path: "nfs")
    monkeypatch.setattr(locks, "_verdicts", {})
    exp = dg.Experiment(tmp_path / "exp", CounterState)
    Add(1)(exp.spawn_new_tree(start=1))
    exp.run(progress=False)
    warnings = [r for r in dagger_warnings.records if "cannot be trusted" in r.getMessage()]
    assert len(warnings) == 1
    assert not (tmp_path / "exp" / "locks").exists()
    assert dg.verify(tmp_path / "exp").ok


def test_progress_and_report_include_remote_work(tmp_path, monkeypatch):
    import tqdm.auto

    bars = []

    class RecordingBar:
        def __init__(self, total, **options):
            self.total, self.n = total, 0
            bars.append(self)

        def update(self, count):
            self.n += count

        def close(self):
            pass

    monkeypatch.setattr(tqdm.auto, "tqdm", RecordingBar)
    exp = dg.Experiment(tmp_path / "exp", CounterState)
    root = exp.spawn_new_tree(start=1)
    for amount in range(4):
        Add(amount)(root)
    with ProcessPoolExecutor(2) as pool:
        report = exp.run(executor=pool, progress=True)
    assert report.computed == 5 and len(report.computed_ids) == 5
    ((bar),) = bars
    assert bar.total == 5 and bar.n == 5  # every remote state moved the bar


# -- a worker that dies (issue 14, item 7) --------------------------------------------------------


class WaitUntilRerun(dg.Recipe):
    """Marks that it started; the first time it then waits (its pool breaks and terminates it
    long before the wait ends); run again, it finishes at once."""

    def __init__(self, folder, name):
        self.folder = folder
        self.name = name

    def run(self, state):
        started = Path(self.folder) / f"started-{self.name}"
        if not started.exists():
            started.touch()
            time.sleep(120)
        state.value += 1
        return state


class DieBesideOthers(dg.Recipe):
    """Once every waiting branch runs, ends its worker process without a Python exception, as
    the out-of-memory killer does; once the folder holds `fixed`, it works."""

    def __init__(self, folder, others):
        self.folder = folder
        self.others = others

    def run(self, state):
        folder = Path(self.folder)
        if (folder / "fixed").exists():
            return state
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if all((folder / f"started-{name}").exists() for name in self.others):
                break
            time.sleep(0.01)
        os._exit(3)


class SubclassedPool(ProcessPoolExecutor):
    """A pool dagger does not know how to rebuild (its constructor could be anything)."""


def dying_worker_tree(exp_dir, folder):
    exp = dg.Experiment(exp_dir, CounterState)
    root = exp.spawn_new_tree(start=1)
    waiting = [Add(1)(WaitUntilRerun(folder, "a")(root)), WaitUntilRerun(folder, "b")(root)]
    culprit = DieBesideOthers(folder, ["a", "b"])(root)
    below = Add(2)(culprit)
    queued = Add(7)(root)  # waits for a free worker: not started when the pool breaks
    return exp, culprit, below, [*waiting, queued]


def test_a_dead_worker_fails_its_own_branch_only_and_the_others_run(tmp_path):
    """Three branches run on a pool of three and a fourth waits; one worker process dies. Only
    its branch is failed, with the exit cause (stored with the state too); the two branches
    its pool terminated and the one that never started are run on a new pool; a rerun
    computes only the dead branch."""
    folder = tmp_path / "signals"
    folder.mkdir()
    exp, culprit, below, healthy = dying_worker_tree(tmp_path / "exp", str(folder))
    with ProcessPoolExecutor(3) as pool, pytest.raises(dg.RunError) as caught:
        exp.run(executor=pool, progress=False)
    report = caught.value.report
    (failure,) = caught.value.failures
    assert failure.state_id == culprit.sha()
    assert "worker process" in failure.message and "died" in failure.message
    assert "os._exit" in failure.message and "BrokenProcessPool" in failure.error_type
    assert (report.computed, report.failed, report.skipped) == (5, 1, 1)
    assert report.not_attempted == 0
    assert sorted(report.computed_ids) == sorted(
        [exp.root.sha(), *(promise.sha() for promise in healthy), healthy[0].parent.sha()]
    )
    stored = dg.Experiment.restore(tmp_path / "exp").graph
    assert stored.node(culprit.sha()).dagger.status is dg.Status.FAILED
    assert "died" in stored.node(culprit.sha()).dagger.error.message

    (folder / "fixed").touch()
    exp, culprit, below, healthy = dying_worker_tree(tmp_path / "exp", str(folder))
    with ProcessPoolExecutor(3) as pool:
        report = exp.run(executor=pool, progress=False)
    assert sorted(report.computed_ids) == sorted([culprit.sha(), below.sha()])
    assert report.cached == 5


def test_a_dead_worker_in_a_pool_dagger_cannot_rebuild_leaves_the_others_not_attempted(
    tmp_path, dagger_warnings
):
    """The same, on an executor dagger does not know how to replace: the branches it took
    down with it are reported as not attempted (never as failed), and a rerun computes them."""
    folder = tmp_path / "signals"
    folder.mkdir()
    exp, culprit, below, healthy = dying_worker_tree(tmp_path / "exp", str(folder))
    with SubclassedPool(3) as pool, pytest.raises(dg.RunError) as caught:
        exp.run(executor=pool, progress=False)
    report = caught.value.report
    assert [failure.state_id for failure in caught.value.failures] == [culprit.sha()]
    assert (report.computed, report.failed, report.skipped, report.not_attempted) == (1, 1, 1, 4)
    assert "4 state(s) were not attempted" in str(caught.value)
    assert any("not attempted" in record.getMessage() for record in dagger_warnings.records)

    (folder / "fixed").touch()
    exp, culprit, below, healthy = dying_worker_tree(tmp_path / "exp", str(folder))
    with ProcessPoolExecutor(3) as pool:
        report = exp.run(executor=pool, progress=False)
    assert (report.computed, report.cached, report.failed) == (6, 1, 0)


def test_progress_lines_include_remote_work(tmp_path, caplog):
    """(Issue 14, item 10.) As log lines, a run on an executor reports every state its workers
    computed: one line each, with the state's recipe."""
    caplog.set_level(logging.INFO, logger="dagger.progress")
    exp = dg.Experiment(tmp_path / "exp", CounterState)
    root = exp.spawn_new_tree(start=1)
    children = [Add(amount)(root) for amount in range(3)]
    with ProcessPoolExecutor(2) as pool:
        exp.run(executor=pool, progress="log")
    lines = [r.getMessage() for r in caplog.records if r.name == "dagger.progress"]
    for promise in [root, *children]:
        what = "root" if promise is root else repr(promise.recipe)
        assert sum(f"computed {promise.sha()[:12]} {what} in " in line for line in lines) == 1
    assert lines[-1].startswith("run finished: 4 computed")
