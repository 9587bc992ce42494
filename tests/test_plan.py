"""Planning a run: a tree whose recipe or state class was edited in-process after it was
defined is refused before anything is computed (issue 15, found while speeding up definition)."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import pytest

# The user's script: classes in a module beside it (as a notebook's cells define them), the
# tree defined, then one edit (argv[2]) made before exp.run(); prints what happened as JSON.
SCRIPT = """
import json, pathlib, sys
import dagger as dg
import study

def define(exp):
    root = exp.spawn_new_tree(seed=0)
    for angle in range(3):
        study.Twist(angle)(study.Step(1)(root))
    return exp

exp = define(dg.Experiment(sys.argv[1], study.Trivial))
before = sorted(promise.sha() for promise in exp.leaves)
edit = sys.argv[2]
if edit == "method":
    def run(self, state):
        state.value = -1
        return state
    study.Twist.run = run
elif edit == "attribute":
    study.Twist.FACTOR = 5
elif edit == "global":
    study.SCALE = 7
elif edit == "parent":
    study.Step.NOTE = "an attribute added to the middle recipe"
elif edit == "state":
    def initialize_state(self, **arguments):
        self.value = 100
    study.Trivial.initialize_state = initialize_state
out = {}
try:
    report = exp.run(progress=False)
except dg.ExperimentDefinitionError as error:
    out["error"] = str(error)
    folder = pathlib.Path(sys.argv[1])
    out["written_after_error"] = [str(p) for p in folder.rglob("*")] if folder.exists() else []
    exp = define(dg.Experiment(sys.argv[1], study.Trivial))   # the cell re-run
    out["redefined_ids_differ"] = sorted(p.sha() for p in exp.leaves) != before
    report = exp.run(progress=False)
out["computed"] = report.computed
values = {}
for state in dg.Experiment.restore(sys.argv[1]).graph.nodes.iterator:
    recipe = state.dagger.recipe
    if recipe is not None and recipe.name.endswith("Twist"):
        values[recipe.params["angle"]] = state.value
out["values"] = values
print(json.dumps(out))
"""

MODULE = """
import dagger as dg

SCALE = 1

class Trivial(dg.ExperimentState):
    PROPERTIES = ["seed"]

    def initialize_state(self, **arguments):
        self.value = 0

class Step(dg.Recipe):
    def __init__(self, index):
        self.index = index

    def run(self, state):
        state.value = state.value + self.index
        return state

class Twist(dg.Recipe):
    FACTOR = 2

    def __init__(self, angle):
        self.angle = angle

    def run(self, state):
        state.value = state.value * self.FACTOR * SCALE + self.angle
        return state
"""


def run_script(tmp_path, subprocess_env, edit: str) -> dict:
    (tmp_path / "study.py").write_text(textwrap.dedent(MODULE))
    (tmp_path / "define.py").write_text(textwrap.dedent(SCRIPT))
    output = subprocess.run(
        [sys.executable, str(tmp_path / "define.py"), str(tmp_path / "exp"), edit],
        env=subprocess_env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        check=False,
    )
    assert output.returncode == 0, output.stderr
    return json.loads(output.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize(
    ("edit", "culprit", "values"),
    [
        ("method", "Twist", {"0": -1, "1": -1, "2": -1}),
        ("attribute", "Twist", {"0": 5, "1": 6, "2": 7}),
        ("global", "Twist", {"0": 14, "1": 15, "2": 16}),
        ("state", "Trivial", {"0": 202, "1": 203, "2": 204}),
        ("parent", "Step", {"0": 2, "1": 3, "2": 4}),
    ],
)
def test_a_class_edited_between_definition_and_run_is_refused(
    tmp_path, subprocess_env, edit, culprit, values
):
    """The edited code would otherwise run and be stored under the ids (and manifests) of
    the code as it was when the recipes were applied: a wrong cache hit for the next run."""
    out = run_script(tmp_path, subprocess_env, edit)
    assert culprit in out["error"]
    assert "changed after" in out["error"]
    assert "Define the tree again" in out["error"]
    assert out["written_after_error"] == []  # nothing computed, nothing written
    # re-running the cell that applies the recipes gives new ids, and the run computes them
    assert out["redefined_ids_differ"]
    assert out["computed"] == 5
    assert out["values"] == values


def test_an_unedited_tree_runs(tmp_path, subprocess_env):
    out = run_script(tmp_path, subprocess_env, "none")
    assert "error" not in out
    assert out["computed"] == 5
    assert out["values"] == {"0": 2, "1": 3, "2": 4}
