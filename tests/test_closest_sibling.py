"""The recompute line and ``tree.diff`` name what changed against the right stored state.

As a user meets it (a new user's report): a sweep script in tmp_path, run in a fresh process,
its code or a global edited, run again. Each state computed again is compared with the stored
sibling that has the same parameters (not with the newest sibling), and ``tree.diff`` between
an old-code and a new-code state names the ingredient that changed, from the records.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

SWEEP = """
import json
import sys

import dagger as dg

FACTOR = 1


class C(dg.ExperimentState):
    def initialize_state(self, start=0):
        self.value = start


class Add(dg.Recipe):
    def __init__(self, amount):
        self.amount = amount

    def run(self, state):
        state.value += self.amount * FACTOR
        return state


class Double(dg.Recipe):
    def run(self, state):
        state.value *= 2
        return state


AMOUNTS = (1, 2, 3)

exp = dg.Experiment(sys.argv[1], C)
root = exp.spawn_new_tree(start=0)
leaves = [Add(amount)(root) for amount in AMOUNTS]
report = exp.run(progress=False)
json.dump(
    {
        "ids": {str(amount): leaf.sha() for amount, leaf in zip(AMOUNTS, leaves)},
        "recomputes": {
            entry.recipe: [entry.sibling_id, list(entry.changes)]
            for entry in report.recomputes
        },
    },
    open(sys.argv[2], "w"),
)
"""

# Restored in a fresh process, as in a notebook: the lineage diff of two states, by id.
DIFF = """
import sys

import dagger as dg

tree = dg.Experiment.restore(sys.argv[1]).graph
print(tree.diff(sys.argv[2], sys.argv[3]))
"""

FORMAT1 = Path(__file__).parent / "data" / "format1"
FORMAT1_ADD = "a055d58f7c1aa9f029a1312136fcb5292d58a9739baa8a20bea06a0532cf19e6"

# Add(1) computed again on an old store (today's ids), diffed with the old one.
AGAIN = """
import sys

import dagger as dg
from helpers import Add, CounterState

exp = dg.Experiment(sys.argv[1], CounterState)
new = Add(1)(exp.spawn_new_tree(start=1))
exp.run(progress=False)
print(dg.Experiment.restore(sys.argv[1]).graph.diff(sys.argv[2], new.sha()))
"""


def _edit(script: Path, old: str, new: str) -> None:
    text = script.read_text()
    assert old in text
    script.write_text(text.replace(old, new))


def _python(cwd: Path, env: dict[str, str], *args: str) -> str:
    done = subprocess.run(
        [sys.executable, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


@pytest.fixture
def sweep(tmp_path, subprocess_env):
    script = tmp_path / "sweep.py"
    script.write_text(SWEEP)
    store, out = tmp_path / "store", tmp_path / "out.json"

    def run() -> dict:
        _python(tmp_path, subprocess_env, script.name, str(store), str(out))
        return json.loads(out.read_text())

    def diff(a: str, b: str) -> str:
        (tmp_path / "diff.py").write_text(DIFF)
        return _python(tmp_path, subprocess_env, "diff.py", str(store), a, b)

    return script, run, diff


def test_a_sweep_rerun_after_a_code_edit_is_compared_with_the_same_amount(sweep):
    script, run, _ = sweep
    first = run()
    _edit(script, "state.value += self.amount * FACTOR", "state.value += self.amount * FACTOR + 0")
    second = run()
    assert second["recomputes"] == {
        f"Add(amount={amount})": [first["ids"][str(amount)], ["code of Add.run changed"]]
        for amount in (1, 2, 3)
    }


def test_a_new_amount_after_the_edit_names_its_parameter_and_the_code(sweep):
    """No stored sibling has amount 4: it is compared with one that exists, and both
    differences are said (the same-parameter preference must not hide them)."""
    script, run, _ = sweep
    first = run()
    _edit(script, "state.value += self.amount * FACTOR", "state.value += self.amount * FACTOR + 0")
    _edit(script, "AMOUNTS = (1, 2, 3)", "AMOUNTS = (1, 2, 3, 4)")
    second = run()
    sibling, changes = second["recomputes"]["Add(amount=4)"]
    assert sibling in first["ids"].values()
    old_amount = next(amount for amount, sha in first["ids"].items() if sha == sibling)
    assert changes == [f"parameter amount {old_amount} -> 4", "code of Add.run changed"]
    assert second["recomputes"]["Add(amount=1)"] == [
        first["ids"]["1"],
        ["code of Add.run changed"],
    ]


def test_the_same_amount_is_found_behind_newer_code_versions(sweep):
    """Not listed in the issue, same kind: a global edited several times, each version run on
    another amount; amount 1 run again is compared with the amount-1 state of the first
    version, although newer code versions (the newest few a run looks at) hold other
    amounts."""
    script, run, _ = sweep
    _edit(script, "AMOUNTS = (1, 2, 3)", "AMOUNTS = (1,)")
    first = run()
    for version in (2, 3, 4):  # FACTOR 2 on amount 2, 3 on 3, 4 on 4
        _edit(script, f"FACTOR = {version - 1}\n", f"FACTOR = {version}\n")
        _edit(script, f"AMOUNTS = ({version - 1},)", f"AMOUNTS = ({version},)")
        run()
    _edit(script, "FACTOR = 4\n", "FACTOR = 5\n")
    _edit(script, "AMOUNTS = (4,)", "AMOUNTS = (1, 4)")
    last = run()
    assert last["recomputes"]["Add(amount=1)"] == [first["ids"]["1"], ["global FACTOR 1 -> 5"]]
    # amount 4 was stored by the newest version: one change, the global
    assert last["recomputes"]["Add(amount=4)"][1] == ["global FACTOR 4 -> 5"]


def test_tree_diff_names_the_changed_global(sweep):
    script, run, diff = sweep
    first = run()
    _edit(script, "FACTOR = 1\n", "FACTOR = 2\n")
    second = run()
    text = diff(first["ids"]["1"], second["ids"]["1"])
    assert "step 1: Add differs in global FACTOR 1 -> 2" in text.splitlines()
    assert "differs in code" not in text


def test_tree_diff_names_parameters_and_code_and_ignores_the_parents(sweep):
    """Same kind, not listed: a step that differs in a parameter and in its code says both;
    the step after it (the same recipe, same code, on different parents) is the same."""
    script, run, diff = sweep
    _edit(script, "leaves = [Add(amount)(root)", "leaves = [Double()(Add(amount)(root))")
    first = run()
    _edit(script, "state.value += self.amount * FACTOR", "state.value += self.amount * FACTOR + 0")
    second = run()
    lines = diff(first["ids"]["1"], second["ids"]["2"]).splitlines()
    assert "step 1: Add differs in amount: 1 vs 2; code of Add.run changed" in lines
    assert "step 2: the same Double() on both (after different steps)" in lines


def test_tree_diff_says_only_code_for_a_state_stored_without_ingredients(tmp_path, subprocess_env):
    """A format-1 store keeps no ingredients: its Add(1) diffed with a new Add(1) falls back
    to "differs in code" (nothing recorded to name), rather than guessing."""
    store = tmp_path / "old"
    shutil.copytree(FORMAT1, store)
    (tmp_path / "again.py").write_text(AGAIN)
    text = _python(tmp_path, subprocess_env, "again.py", str(store), FORMAT1_ADD)
    assert "step 2: Add differs in code" in text.splitlines()
