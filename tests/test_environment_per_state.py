"""Each state's record holds the environment it was computed in (issue 16, item 6).

Python, torch, CUDA and the device, dagger, the user's git commit and whether the tree was
dirty, the host: stored once per distinct environment (a shared part), shown by tables
(``env.*`` columns), ``dagger ls``, ``tree.diff`` and ``state.dagger.environment``, and compared
by ``audit``. Scripts run as a user runs them: in a git repository made here, in fresh
processes.
"""

from __future__ import annotations

import json
import math
import os
import platform
import shutil
import socket
import stat
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from helpers import Add, CounterState

import dagger as dg
from dagger import __version__

GIT = shutil.which("git")
needs_git = pytest.mark.skipif(GIT is None, reason="needs git")
FORMAT1 = Path(__file__).parent / "data" / "format1"
ENV_COLUMNS = [
    "env.python",
    "env.torch",
    "env.cuda",
    "env.device",
    "env.dagger",
    "env.git_commit",
    "env.git_dirty",
    "env.hostname",
]

# A study: one root and `Add(amount)` children for the amounts given on the command line.
STUDY = """
import sys
import dagger as dg
from helpers import Add, CounterState

exp = dg.Experiment(sys.argv[1], CounterState)
root = exp.spawn_new_tree(start=1)
for amount in sys.argv[2:]:
    Add(int(amount))(root)
exp.run(progress=False)
"""

# What a fresh process restores: the env columns of every state, by id.
RESTORE = """
import json, sys
import dagger as dg

frame = dg.Experiment.restore(sys.argv[1]).graph.nodes.to_dataframe()
columns = [column for column in frame.columns if column.startswith("env.")]
rows = json.loads(frame.set_index("id")[columns].to_json(orient="index"))  # missing: null
print(json.dumps({"columns": columns, "rows": rows}))
"""


def git(directory, *args):
    return subprocess.run(
        [GIT, "-C", str(directory), "-c", "user.name=t", "-c", "user.email=t@example.com", *args],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()


@pytest.fixture
def project(tmp_path, subprocess_env):
    """A git repository (tmp_path): the study script, the shared helpers and a committed data
    file; the experiment folder inside it stays untracked."""
    (tmp_path / "study.py").write_text(STUDY)
    (tmp_path / "restore.py").write_text(RESTORE)
    (tmp_path / "notes.txt").write_text("first\n")
    git(tmp_path, "init", "-q")
    git(tmp_path, "add", "study.py", "restore.py", "helpers.py", "notes.txt")
    git(tmp_path, "commit", "-q", "-m", "first")
    return tmp_path


@pytest.fixture
def run_python(subprocess_env, tmp_path):
    """Runs ``python ARGS`` in tmp_path, as a user would; returns stdout."""

    def run(*args, env=None):
        environment = {
            **subprocess_env,
            # no repository above tmp_path counts (the checkout this test runs from)
            "GIT_CEILING_DIRECTORIES": str(tmp_path.parent),
            **(env or {}),
        }
        result = subprocess.run(
            [sys.executable, *map(str, args)],
            cwd=tmp_path,
            env=environment,
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
        )
        assert result.returncode == 0, result.stderr
        return result.stdout

    return run


def restored_columns(run_python, directory):
    return json.loads(run_python("restore.py", directory).strip().splitlines()[-1])


@needs_git
def test_a_run_in_a_dirty_repository_records_commit_and_dirty_and_tables_show_them(
    project, run_python
):
    commit = git(project, "rev-parse", "HEAD")
    (project / "notes.txt").write_text("changed, not committed\n")  # a tracked file: dirty
    run_python("study.py", "runs", "1", "2")
    found = restored_columns(run_python, "runs")  # a fresh process
    assert found["columns"] == ENV_COLUMNS
    assert len(found["rows"]) == 3
    for row in found["rows"].values():
        assert row["env.git_commit"] == commit
        assert row["env.git_dirty"] is True
        assert row["env.python"] == platform.python_version()
        assert row["env.torch"] == torch.__version__.split("+")[0]
        assert row["env.device"] == "cpu"
        assert row["env.cuda"] is None
        assert row["env.dagger"] == __version__
        assert row["env.hostname"] == socket.gethostname()
    # The whole environment is on the state (no payload loaded).
    tree = dg.Experiment.restore(project / "runs").graph
    environment = tree.root.dagger.environment
    assert environment["git_commit"] == commit and environment["git_dirty"] is True
    assert environment["platform"] == platform.platform()
    assert tree.root.slim_loaded


@needs_git
def test_dagger_ls_shows_the_environment_on_request_and_always_in_json(project, run_python):
    commit = git(project, "rev-parse", "HEAD")
    run_python("study.py", "runs", "1")
    table = run_python("-m", "dagger", "ls", "runs", "--env")
    header = table.splitlines()[0].split()
    assert header[-len(ENV_COLUMNS) :] == ENV_COLUMNS
    assert all(commit[:20] in line for line in table.splitlines()[1:])
    assert "env." not in run_python("-m", "dagger", "ls", "runs").splitlines()[0]  # too wide
    rows = json.loads(run_python("-m", "dagger", "ls", "runs", "--format", "json"))
    assert [row["env.git_commit"] for row in rows] == [commit, commit]
    assert [row["env.git_dirty"] for row in rows] == [False, False]
    csv = run_python("-m", "dagger", "ls", "runs", "--format", "csv").splitlines()
    assert csv[0].split(",")[-len(ENV_COLUMNS) :] == ENV_COLUMNS


def test_outside_a_repository_there_is_no_commit(tmp_path, run_python):
    (tmp_path / "study.py").write_text(STUDY)
    (tmp_path / "restore.py").write_text(RESTORE)
    run_python("study.py", "runs", "1")
    found = restored_columns(run_python, "runs")
    assert {row["env.git_commit"] for row in found["rows"].values()} == {None}
    environment = dg.Experiment.restore(tmp_path / "runs").graph.root.dagger.environment
    assert "no git repository" in environment["git_error"]


def log_bytes(directory):
    return b"".join(path.read_bytes() for path in sorted((directory / "log").glob("*.log")))


def test_the_environment_is_stored_once_for_a_thousand_states(tmp_path):
    exp = dg.Experiment(tmp_path / "runs", CounterState)
    root = exp.spawn_new_tree(start=0)
    for amount in range(999):
        Add(amount)(root)
    assert exp.run(progress=False).computed == 1000
    # The platform string is in the environment and nowhere else in a record.
    assert log_bytes(tmp_path / "runs").count(json.dumps(platform.platform()).encode()) == 1
    frame = dg.Experiment.restore(tmp_path / "runs").graph.nodes.to_dataframe()
    assert frame["env.hostname"].tolist() == [socket.gethostname()] * 1000


def test_git_runs_once_per_run_however_many_states(tmp_path, run_python):
    """A `git` on PATH that counts its calls: one `git status` for a run of 50 states."""
    calls = tmp_path / "git-calls"
    shim = tmp_path / "bin" / "git"
    shim.parent.mkdir()
    shim.write_text(f'#!/bin/sh\necho "$@" >> {calls}\nexec {GIT or "false"} "$@"\n')
    shim.chmod(shim.stat().st_mode | stat.S_IEXEC)
    (tmp_path / "study.py").write_text(STUDY)
    path = f"{shim.parent}{os.pathsep}{os.environ.get('PATH', '')}"
    run_python("study.py", "runs", *map(str, range(49)), env={"PATH": path})
    assert len(calls.read_text().splitlines()) == 1
    assert len(dg.Experiment.restore(tmp_path / "runs").graph.nodes) == 50


@needs_git
def test_diff_shows_that_two_states_were_computed_at_different_commits(project, run_python):
    first = git(project, "rev-parse", "HEAD")
    run_python("study.py", "runs", "1")
    (project / "notes.txt").write_text("second\n")
    git(project, "commit", "-q", "-am", "second")
    second = git(project, "rev-parse", "HEAD")
    run_python("study.py", "runs", "1", "2")  # computes Add(2) only
    tree = dg.Experiment.restore(project / "runs").graph
    one, two = (tree.nodes.where(amount=amount)[0] for amount in (1, 2))
    diff = tree.diff(one, two)
    assert diff.environment == (f"git {first[:12]} -> {second[:12]}",)
    assert f"environment: git {first[:12]} -> {second[:12]}" in str(diff)
    assert tree.diff(tree.root, one).environment == ()  # computed in the same run


def test_diff_of_a_state_without_an_environment_says_so(tmp_path):
    old = tmp_path / "old"
    shutil.copytree(FORMAT1, old)
    exp = dg.Experiment(old, CounterState)
    Add(1)(exp.spawn_new_tree(start=1))
    exp.run(progress=False)  # converts the store; scheme-2 ids: two new states
    tree = dg.Experiment.restore(old).graph
    new = next(node for node in tree.nodes if node.dagger.environment is not None)
    stored = next(node for node in tree.nodes if node.dagger.environment is None)
    assert tree.diff(stored, new).environment == ("environment not recorded for the first state",)


@needs_git
def test_audit_reports_the_environment_difference_next_to_the_values(project, run_python):
    first = git(project, "rev-parse", "HEAD")
    (project / "notes.txt").write_text("dirty\n")
    run_python("study.py", "runs", "1")
    git(project, "commit", "-q", "-am", "second")
    second = git(project, "rev-parse", "HEAD")
    output = subprocess.run(
        [sys.executable, "-m", "dagger", "audit", "runs", "--sample", "0"],
        cwd=project,
        env={**os.environ, "GIT_CEILING_DIRECTORIES": str(project.parent)},
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert output.returncode == 0, output.stdout + output.stderr
    change = f"git {first[:12]} (dirty) -> {second[:12]}"
    lines = [line for line in output.stdout.splitlines() if "environment (stored -> audit)" in line]
    assert len(lines) == 2 and all(change in line for line in lines), output.stdout
    report = dg.Experiment.restore(project / "runs").audit(sample=None, git_directory=project)
    assert report.ok
    # This process imported torch (the script did not): its settings differ too.
    assert all(change in state.environment_changes for state in report.states)


def test_audit_in_the_same_environment_reports_no_change(tmp_path):
    exp = dg.Experiment(tmp_path / "runs", CounterState)
    Add(3)(exp.spawn_new_tree(start=1))
    exp.run(progress=False)
    report = exp.audit(sample=None)
    assert report.ok
    assert [state.environment_changes for state in report.states] == [(), ()]
    assert "environment (stored -> audit)" not in str(report)


def test_a_format1_store_has_no_environment_and_shows_it_missing(tmp_path, run_python):
    old = tmp_path / "old"
    shutil.copytree(FORMAT1, old)
    (tmp_path / "restore.py").write_text(RESTORE)
    tree = dg.Experiment.restore(old).graph
    assert len(tree.nodes) == 7
    assert all(node.dagger.environment is None for node in tree.nodes)
    assert tree.diff(tree.nodes[1], tree.nodes[2]).environment == ()
    assert restored_columns(run_python, old)["columns"] == []  # a fresh process: no crash
    listing = run_python("-m", "dagger", "ls", str(old), "--env")
    assert len(listing.splitlines()) == 8
    # A run converts the store and adds states that have one; the old ones show missing.
    exp = dg.Experiment(old, CounterState)
    Add(1)(exp.spawn_new_tree(start=1))
    exp.run(progress=False)
    frame = dg.Experiment.restore(old).graph.nodes.to_dataframe().set_index("id")
    assert list(frame.columns[-len(ENV_COLUMNS) :]) == ENV_COLUMNS
    has = frame["env.python"].notna()
    assert has.sum() == 2 and frame.loc[has, "env.python"].eq(platform.python_version()).all()
    assert all(math.isnan(value) for value in frame.loc[~has, "env.python"])
    json_rows = json.loads(run_python("-m", "dagger", "ls", str(old), "--format", "json"))
    assert sorted(row["env.device"] is None for row in json_rows) == [False] * 2 + [True] * 7


def _set_threads_variable():
    os.environ["OMP_NUM_THREADS"] = "3"


def test_states_computed_on_an_executor_record_the_workers_environment(tmp_path):
    """The worker's own environment (here: a variable only the workers set), and the
    coordinator's git facts (the worker's __main__ is not the user's script)."""
    from concurrent.futures import ProcessPoolExecutor

    exp = dg.Experiment(tmp_path / "runs", CounterState)
    root = exp.spawn_new_tree(start=1)
    for amount in (1, 2):
        Add(amount)(root)
    with ProcessPoolExecutor(2, initializer=_set_threads_variable) as pool:
        assert exp.run(progress=False, executor=pool).computed == 3
    tree = dg.Experiment.restore(tmp_path / "runs").graph
    here = dg.environment.capture_environment()
    for node in tree.nodes:
        environment = node.dagger.environment
        assert environment["env"]["OMP_NUM_THREADS"] == "3"
        assert {key: environment[key] for key in ("git_commit", "git_dirty", "git_error")} == {
            key: here[key] for key in ("git_commit", "git_dirty", "git_error")
        }


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_a_state_computed_on_a_gpu_names_the_device(tmp_path, run_python):
    script = textwrap.dedent(
        """
        import sys, torch
        import dagger as dg
        from helpers import Add, CounterState

        class ToGpu(dg.Recipe):
            def run(self, state):
                state.weights = torch.ones(3, device="cuda")
                return state

        exp = dg.Experiment(sys.argv[1], CounterState)
        ToGpu()(exp.spawn_new_tree(start=1))
        exp.run(progress=False)
        """
    )
    (tmp_path / "gpu.py").write_text(script)
    run_python("gpu.py", "runs")
    tree = dg.Experiment.restore(tmp_path / "runs").graph
    frame = tree.nodes.to_dataframe().set_index("recipe")
    assert frame.loc["root", "env.device"] == "cpu"  # before CUDA was initialised
    assert frame.loc["ToGpu", "env.device"] == torch.cuda.get_device_name(0)
    assert frame.loc["ToGpu", "env.cuda"] == torch.version.cuda
