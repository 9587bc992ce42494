"""Planning a run: a tree whose recipe or state class was edited in-process after it was
defined is refused before anything is computed (issue 15, found while speeding up definition)."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from helpers import Add, Blob, CounterState, read_log

import dagger as dg

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


def run_script(
    tmp_path, subprocess_env, edit: str, module=("study", MODULE), script=SCRIPT
) -> dict:
    """Write the user's module and script beside each other, run the script with ``edit``
    as a user does, and return the JSON it prints last."""
    name, source = module
    (tmp_path / f"{name}.py").write_text(textwrap.dedent(source))
    (tmp_path / "define.py").write_text(textwrap.dedent(script))
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


# -- a rerun's plan leaves stored leaves out (issue 15) -------------------------------------------
#
# A cached rerun of 100,000 states gives no plan node to a stored leaf with nothing to do: its
# parent's node counts it. Whatever is left out must still be counted, checked and, when its
# files are gone, computed again; a leaf that has something to do after all gets its node.


def sweep(exp_dir, leaves=(0, 1, 2), *, twice=False, tag_last=False):
    """root -> Add(1) -> Blob(1, seed) leaves (1 MiB each: their bytes are a blob file)."""
    exp = dg.Experiment(exp_dir, CounterState)
    middle = Add(1)(exp.spawn_new_tree(start=0))
    for seed in leaves:
        Blob(1, seed)(middle)
    if twice:  # the same states defined again, from a second promise of each
        for seed in leaves:
            Blob(1, seed)(middle)
    if tag_last:
        with exp.tag("chosen"):
            Blob(1, leaves[-1])(middle)
    return exp


def blob_sums(exp_dir):
    """The sums of the leaves' bytes, each state loaded from the store (three of them)."""
    exp = dg.Experiment.restore(exp_dir)
    sums = []
    for slim in exp.graph.nodes.iterator:
        state = exp.load_state(slim.sha())
        if hasattr(state, "blob"):
            sums.append(int(state.blob.sum()))
    assert len(sums) == 3
    return sorted(sums)


def test_a_cached_rerun_counts_every_state_once(exp_dir, call_log):
    first = sweep(exp_dir).run(progress=False)
    assert (first.computed, first.cached) == (5, 0)
    again = sweep(exp_dir, twice=True).run(progress=False)
    assert (again.computed, again.cached, again.skipped) == (0, 5, 0)
    assert read_log(call_log).count("blob:1") == 3  # nothing computed twice
    plan_rows = sweep(exp_dir, twice=True).plan().rows
    assert [row.action for row in plan_rows] == ["stored"] * 5  # a preview shows them all


def test_a_stored_leaf_whose_blob_is_gone_is_computed_again(exp_dir, call_log):
    sweep(exp_dir).run(progress=False)
    expected = blob_sums(exp_dir)
    blobs = sorted(p for p in (exp_dir / "blobs").rglob("*") if p.is_file())
    assert len(blobs) == 3
    blobs[1].unlink()
    report = sweep(exp_dir).run(progress=False)
    assert (report.computed, report.cached) == (1, 4)
    assert read_log(call_log).count("blob:1") == 4
    assert blob_sums(exp_dir) == expected
    for blob in blobs:
        blob.unlink()
    report = sweep(exp_dir, twice=True).run(progress=False)
    assert (report.computed, report.cached) == (3, 2)
    assert blob_sums(exp_dir) == expected


def test_a_stored_leaf_given_a_tag_or_a_function_later_gets_its_node(exp_dir):
    sweep(exp_dir).run(progress=False)
    exp = sweep(exp_dir, tag_last=True)  # first defined untagged, then again with a tag
    report = exp.run(progress=False)
    assert (report.computed, report.cached) == (0, 5)
    restored = dg.Experiment.restore(exp_dir)
    (tagged,) = restored.graph.nodes.filter("chosen")
    assert int(restored.load_state(tagged.sha()).blob.sum()) in blob_sums(exp_dir)
    assert len(restored.graph.nodes.filter("chosen")) == 1
    exp = sweep(exp_dir)
    dg.Function(lambda state: int(state.blob[:10].sum()), name="head")(exp.leaves[0])
    report = exp.run(progress=False)
    assert (report.computed, report.cached, report.functions) == (0, 5, 1)


class NumbersFromFile(dg.Recipe):
    """20,000 numbers from the one in a file (a payload file of its own, not kept in the log);
    raises once the file is gone."""

    def __init__(self, path):
        self.path = path

    def run(self, state):
        state.numbers = list(range(int(Path(self.path).read_text()), 20_000))
        return state


def test_stored_states_below_a_failing_parent_are_skipped(exp_dir, tmp_path):
    """A stored state whose payload is gone is computed again; when that fails, the stored
    leaves below it (left out of the plan) are counted as skipped, as before."""
    number = tmp_path / "number.txt"
    number.write_text("1")

    def define():
        exp = dg.Experiment(exp_dir, CounterState)
        middle = NumbersFromFile(str(number))(exp.spawn_new_tree(start=0))
        for amount in (1, 2, 3):
            Add(amount)(middle)
        return exp, middle

    exp, middle = define()
    assert exp.run(progress=False).computed == 5
    record = dg.Experiment.restore(exp_dir).store.read_record(middle.sha())
    assert record.payload.file is not None
    (exp_dir / record.payload.file).unlink()
    number.unlink()  # the middle state now fails when computed again
    exp, middle = define()
    with pytest.raises(dg.RunError) as info:
        exp.run(progress=False)
    report = info.value.report
    assert (report.failed, report.skipped, report.computed, report.cached) == (1, 3, 0, 4)


# -- code held as a value: a function, class or recipe among the properties (found by a user
# trying the tool: it was a wrong cache hit, the new code's result stored under the old id) ----

VALUES_MODULE = """
import dagger as dg

SCALE = 1


def scale():
    return SCALE


def make_shift(amount):
    def shift(value):
        return value + amount

    return shift


shift = make_shift(0)


class Doubler:
    FACTOR = 2


class Add(dg.Recipe):
    def __init__(self, amount):
        self.amount = amount

    def run(self, state):
        state.value = state.value + self.amount
        return state


class Root(dg.ExperimentState):
    PROPERTIES = ["init", "sizes"]

    def initialize_state(self, **arguments):
        self.value = self.init() + sum(self.sizes)


class Apply(dg.Recipe):
    def __init__(self, held):
        self.held = held

    def run(self, state):
        held = self.held
        if isinstance(held, dg.Recipe):
            return held.run(state)
        if isinstance(held, type):
            state.value = state.value * held.FACTOR
        else:
            state.value = held(state.value) if held is shift else state.value * held()
        return state
"""

VALUES_SCRIPT = """
import json, pathlib, sys
import dagger as dg
import held

def define(exp, sizes):
    root = exp.spawn_new_tree(init=held.scale, sizes=sizes)
    value = {"function": held.scale, "closure": held.shift, "class": held.Doubler,
             "recipe": held.Add(5), "argument": held.scale, "list": held.scale}[sys.argv[2]]
    return root, held.Apply(value)(root)

sizes = [1, 2]
exp = dg.Experiment(sys.argv[1], held.Root)
root, leaf = define(exp, sizes)
before = leaf.sha()
edit = sys.argv[2]
if edit in ("function", "argument"):
    held.SCALE = 7
elif edit == "closure":
    held.shift.__closure__[0].cell_contents = 100
elif edit == "class":
    held.Doubler.FACTOR = 3
elif edit == "recipe":
    def run(self, state):
        state.value = -1
        return state
    held.Add.run = run
elif edit == "list":
    sizes.append(1000)  # a root argument changed in place
out = {}
try:
    exp.run(progress=False)
except dg.ExperimentDefinitionError as error:
    out["error"] = str(error)
    folder = pathlib.Path(sys.argv[1])
    out["written"] = [str(p) for p in folder.rglob("*")] if folder.exists() else []
exp = dg.Experiment(sys.argv[1], held.Root)
root, leaf = define(exp, list(sizes))
out["ids_differ"] = leaf.sha() != before
out["computed"] = exp.run(progress=False).computed
out["value"] = leaf.get().value
print(json.dumps(out))
"""


@pytest.mark.parametrize(
    ("edit", "value"),
    [
        ("function", 7 * (7 + 3)),  # the root: scale() + sum(sizes), then * scale()
        ("closure", 100 + 4),
        ("class", 3 * 4),
        ("recipe", -1),
        ("argument", 7 * (7 + 3)),
        ("list", 1 + 1003),
    ],
)
def test_code_or_objects_held_as_values_and_edited_after_definition_are_refused(
    tmp_path, subprocess_env, edit, value
):
    """A function, closure, class or recipe held by a recipe (or passed to spawn_new_tree),
    edited after definition, or a root argument changed in place: the run refuses before
    writing anything, and the tree defined again computes the new values under new ids."""
    out = run_script(
        tmp_path, subprocess_env, edit, module=("held", VALUES_MODULE), script=VALUES_SCRIPT
    )
    # the held value's own message, or the recipe class's when its code reaches what was
    # edited (Apply.run reads .run and .FACTOR of what it holds)
    assert "defined from values that changed since" in out["error"] or (
        "changed after states were defined" in out["error"]
    )
    assert "Define the tree again" in out["error"]
    assert out["written"] == []
    assert out["ids_differ"]
    assert out["computed"] == 2
    assert out["value"] == value
