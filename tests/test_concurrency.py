"""Concurrent runs and crashes on large trees, with real processes (issues 11 and 15).

Every recipe appends one line naming the state it computes to an append-only file, so the
tests count computations across processes: each state must be computed exactly once however
many processes run the same tree, and a run killed at any moment must leave every state either
whole or absent, with the next run computing exactly the absent ones.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

import dagger as dg
from dagger.store import DirectoryStore

# The tree's classes live in a module beside the scripts, as a user's do (pickled by name).
TREE = textwrap.dedent(
    """
    import os

    import dagger as dg

    LOG = os.environ["CALLS"]


    def log(line):
        with open(LOG, "a") as handle:  # O_APPEND: lines from many processes never mix
            handle.write(line + "\\n")


    class Counter(dg.ExperimentState):
        PROPERTIES = ["start"]

        def initialize_state(self, **arguments):
            log("root")
            self.value = self.start


    class Add(dg.Recipe):
        def __init__(self, amount):
            self.amount = amount

        def run(self, state):
            log(f"add:{self.amount}")
            state.value += self.amount
            return state


    class Mul(dg.Recipe):
        def __init__(self, factor):
            self.factor = factor

        def run(self, state):
            log(f"mul:{state.value}:{self.factor}")
            state.value *= self.factor
            return state


    def build(directory, branches, leaves, durability):
        exp = dg.Experiment(directory, Counter, durability=durability)
        root = exp.spawn_new_tree(start=0)
        for amount in range(1, branches + 1):
            child = Add(amount)(root)
            for factor in range(2, leaves + 2):
                Mul(factor)(child)
        return exp


    def expected(branches, leaves):
        \"\"\"line of the call log -> the value its state holds\"\"\"
        values = {"root": 0}
        for amount in range(1, branches + 1):
            values[f"add:{amount}"] = amount
            for factor in range(2, leaves + 2):
                values[f"mul:{amount}:{factor}"] = amount * factor
        return values
    """
)

# Loads every stored state in a fresh process and checks its value (a state that is there must
# be whole); prints the ids it found.
CHECK = textwrap.dedent(
    """
    import json
    import sys

    import dagger as dg
    from tree import expected

    directory, branches, leaves = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    values = expected(branches, leaves)
    tree = dg.Experiment.restore(directory).graph
    wrong = []
    for state in tree.nodes:
        with state.lazy_load():
            recipe = state.recipe
            if recipe is None:
                line = "root"
            elif recipe.name == "Add":
                line = f"add:{recipe.params['amount']}"
            else:
                amount = state.dagger.parent.recipe.params["amount"]
                line = f"mul:{amount}:{recipe.params['factor']}"
            if state.dagger.status != "done" or state.value != values[line]:
                wrong.append(line)
    print(json.dumps({"stored": tree.nodes.ids, "wrong": wrong}))
    """
)

RUN = textwrap.dedent(
    """
    import json
    import sys

    from tree import build

    directory, branches, leaves, durability = sys.argv[1:5]
    exp = build(directory, int(branches), int(leaves), durability)
    report = exp.run(progress=False)
    print(json.dumps({"computed": report.computed_ids, "cached": report.cached}))
    """
)


def write_scripts(tmp_path: Path) -> Path:
    (tmp_path / "tree.py").write_text(TREE)
    (tmp_path / "check.py").write_text(CHECK)
    script = tmp_path / "run.py"
    script.write_text(RUN)
    return script


def calls(path: Path) -> list[str]:
    return path.read_text().split() if path.exists() else []


@pytest.mark.parametrize("processes", [2, 4])
def test_each_state_is_computed_once_however_many_processes_run_the_tree(
    tmp_path, subprocess_env, processes
):
    """20,001 states (root, 200 branches of 99 leaves), fast durability; the processes start
    a little apart, so each meets the others at another point of the tree."""
    script = write_scripts(tmp_path)
    exp_dir, log = tmp_path / "exp", tmp_path / "calls.log"
    env = {**subprocess_env, "CALLS": str(log)}
    started = []
    for index in range(processes):
        started.append(
            subprocess.Popen(
                [sys.executable, str(script), str(exp_dir), "200", "99", "fast"],
                env=env,
                cwd=tmp_path,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
        )
        time.sleep(0.7 * (index + 1))
    outcomes = [process.communicate(timeout=600) for process in started]
    for process, (_, stderr) in zip(started, outcomes, strict=True):
        assert process.returncode == 0, stderr
        assert "unusable" not in stderr and "damaged" not in stderr, stderr  # no false alarm
    lines = calls(log)
    assert len(lines) == 20_001, f"{len(lines)} computations for 20,001 states"
    assert len(set(lines)) == 20_001  # each state exactly once
    reports = [json.loads(stdout.strip().splitlines()[-1]) for stdout, _ in outcomes]
    computed = [sha for report in reports for sha in report["computed"]]
    assert len(computed) == len(set(computed)) == 20_001
    assert all(report["cached"] + len(report["computed"]) == 20_001 for report in reports)
    table = DirectoryStore(exp_dir).snapshot()
    assert len(table) == 20_001 and {str(status) for status in table.status} == {"done"}
    assert not (exp_dir / "quarantine").exists()
    report = dg.verify(exp_dir)
    assert report.ok, str(report)


def test_a_kill_during_group_commit_leaves_every_state_whole_or_absent(tmp_path, subprocess_env):
    """A 10,100-state run with the default durability (group commit) killed with SIGKILL part
    way: every state the store shows loads with the right value, and the rerun computes
    exactly the states that are absent."""
    script = write_scripts(tmp_path)
    exp_dir, log = tmp_path / "exp", tmp_path / "calls.log"
    env = {**subprocess_env, "CALLS": str(log)}
    process = subprocess.Popen(
        [sys.executable, str(script), str(exp_dir), "100", "100", "safe"], env=env, cwd=tmp_path
    )
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and process.poll() is None:
        if len(calls(log)) >= 3_000:
            process.send_signal(signal.SIGKILL)
            break
        time.sleep(0.01)
    process.wait(timeout=60)
    assert process.returncode == -signal.SIGKILL, "the run ended before it could be killed"
    killed_after = len(calls(log))
    assert killed_after < 10_101

    check = subprocess.run(
        [sys.executable, str(tmp_path / "check.py"), str(exp_dir), "100", "100"],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
    )
    assert check.returncode == 0, check.stderr
    found = json.loads(check.stdout.strip().splitlines()[-1])
    stored = set(found["stored"])
    assert found["wrong"] == []  # every state there is whole
    assert 0 < len(stored) <= killed_after
    problems = [str(problem) for problem in dg.verify(exp_dir).problems]
    assert all("unfinished entry" in problem for problem in problems), problems

    os.truncate(log, 0)
    rerun = subprocess.run(
        [sys.executable, str(script), str(exp_dir), "100", "100", "safe"],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
    )
    assert rerun.returncode == 0, rerun.stderr
    computed = set(json.loads(rerun.stdout.strip().splitlines()[-1])["computed"])
    everything = set(DirectoryStore(exp_dir).snapshot().ids)
    assert len(everything) == 10_101
    assert computed == everything - set(stored)  # exactly the absent ones
    assert len(calls(log)) == len(computed)
    assert dg.verify(exp_dir).ok
