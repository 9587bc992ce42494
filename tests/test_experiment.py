"""The Experiment API as a user meets it, bad input included, and the seed's quick start."""

from __future__ import annotations

import itertools
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import Add, CounterState, read_log

import dagger as dg

REPO = Path(__file__).parent.parent


def test_constructor_touches_no_disk(tmp_path):
    exp = dg.Experiment(tmp_path / "a" / "b", CounterState)
    assert not (tmp_path / "a").exists()
    assert exp.directory == (tmp_path / "a" / "b").absolute()


def test_missing_property_value(tmp_path):
    exp = dg.Experiment(tmp_path, CounterState)
    with pytest.raises(
        dg.MissingPropertyError, match=r"PROPERTIES lists 'start'.*Pass start=\.\.\."
    ):
        exp.spawn_new_tree(note="x")
    with pytest.raises(KeyError):  # also a KeyError, as in the reference implementation
        exp.spawn_new_tree()


def test_unhashable_experiment_argument_names_the_fix(tmp_path):
    exp = dg.Experiment(tmp_path, CounterState)
    with pytest.raises(dg.HashingError, match=r"argument `loader`.*NONHASHED_ATTRIBUTES"):
        exp.spawn_new_tree(start=1, loader=object())
    exp.spawn_new_tree(start=1, note=object())  # non-hashed: accepted


def test_nonhashed_arguments_are_stored_but_not_identity(tmp_path):
    one = dg.Experiment(tmp_path / "1", CounterState).spawn_new_tree(start=1, note="a")
    two = dg.Experiment(tmp_path / "2", CounterState).spawn_new_tree(start=1, note="b")
    other = dg.Experiment(tmp_path / "3", CounterState).spawn_new_tree(start=1, extra=2)
    assert one.sha() == two.sha() != other.sha()
    assert one.get().note == "a"


def test_promise_from_another_experiment(tmp_path):
    one = dg.Experiment(tmp_path / "1", CounterState)
    two = dg.Experiment(tmp_path / "2", CounterState)
    root = one.spawn_new_tree(start=1)
    two.spawn_new_tree(start=1)
    with pytest.raises(dg.ExperimentDefinitionError, match="promise of another Experiment"):
        two.add_child(root, Add(1))
    with pytest.raises(dg.ExperimentDefinitionError, match="was applied to a `int`"):
        Add(1)(3)


def test_tag_that_is_not_a_string(tmp_path):
    exp = dg.Experiment(tmp_path, CounterState)
    with pytest.raises(dg.ExperimentDefinitionError, match=r"A tag must be a string; got 3"):
        with exp.tag(3):
            pass
    with exp.tag(["a", "b"]):
        assert exp.tags == ["a", "b"]


def test_state_class_must_be_a_state(tmp_path):
    with pytest.raises(dg.ExperimentDefinitionError, match="state_class must be"):
        dg.Experiment(tmp_path, dict)


def test_nothing_to_run(tmp_path):
    with pytest.raises(dg.ExperimentDefinitionError, match="spawn_new_tree"):
        dg.Experiment(tmp_path, CounterState).run()


def test_errors_pickle_cleanly():
    import pickle

    error = dg.HashingError("message", what="x", value_type="y", path="")
    clone = pickle.loads(pickle.dumps(error))
    assert type(clone) is dg.HashingError and str(clone) == "message" and clone.what == "x"
    missing = pickle.loads(pickle.dumps(dg.MissingPropertyError("m", missing=["a"])))
    assert str(missing) == "m" and missing.missing == ["a"]


def test_seed_quickstart_runs_verbatim_in_an_empty_folder(tmp_path):
    script = tmp_path / "quickstart.py"
    shutil.copy(REPO / "tutorials" / "quickstart.py", script)
    seed = REPO.parent / "shared" / "seed" / "README.md"
    if seed.exists():  # the tutorial is the seed README's usage block, verbatim
        assert script.read_text() in seed.read_text()
    env = dict(os.environ)  # dagger as installed: a ./dagger folder must not shadow it
    subprocess.run([sys.executable, "quickstart.py"], cwd=tmp_path, env=env, check=True)
    store = tmp_path / "dagger" / "examples"
    assert len(dg.store.DirectoryStore(store).snapshot()) == 2  # two stored states
    before = {p: p.stat().st_mtime_ns for p in store.rglob("*") if p.is_file()}
    subprocess.run([sys.executable, "quickstart.py"], cwd=tmp_path, env=env, check=True)
    after = {p: p.stat().st_mtime_ns for p in store.rglob("*") if p.is_file()}
    assert after == before  # the second run computes and rewrites nothing
    tree = dg.Experiment.restore(store).graph
    child = tree.leaves[0]
    with child.lazy_load():
        assert float(child.model.fc.bias.detach().abs().sum()) == 0.0
    with tree.root.lazy_load():
        assert float(tree.root.model.fc.bias.detach().abs().sum()) > 0.0


# -- a forest: several roots in one experiment (issue 14, item 4) ---------------------------------


def test_a_seed_sweep_is_a_forest(tmp_path, call_log):
    """``for seed in ...: exp.spawn_new_tree(seed=seed)``: one root per distinct identity, each
    grown and stored; experiment.json lists them in the order they were defined; the restored
    tree has them as ``roots``, each state under its own root."""
    exp = dg.Experiment(tmp_path / "exp", CounterState)
    roots = [exp.spawn_new_tree(start=seed) for seed in (2, 0, 1)]
    children = [Add(10)(root) for root in roots]
    report = exp.run(progress=False)
    assert (report.computed, report.failed) == (6, 0)
    meta = json.loads((tmp_path / "exp" / "experiment.json").read_text())
    assert meta["roots"] == [root.sha() for root in roots]
    tree = dg.Experiment.restore(tmp_path / "exp").graph
    assert [root.dagger.properties["start"] for root in tree.roots] == [2, 0, 1]
    for root, child in zip(roots, children, strict=True):
        stored = tree.node(child.sha())
        assert stored.dagger.parent.sha() == root.sha()
        with stored.lazy_load():
            assert stored.value == root.arguments["start"] + 10
    assert sorted(read_log(call_log)) == ["add:10"] * 3 + ["root"] * 3


def test_root_of_a_forest_says_which_roots_there_are(tmp_path):
    """``tree.root`` and ``exp.root`` are unambiguous or an error that lists the roots (short
    id and identity) and names ``roots``; ``promise.root`` and ``state.root`` reach the root of
    the tree a state belongs to."""
    exp = dg.Experiment(tmp_path / "exp", CounterState)
    first = exp.spawn_new_tree(start=1)
    second = exp.spawn_new_tree(start=2)
    child = Add(5)(second)
    assert child.root is second
    with pytest.raises(
        dg.ExperimentDefinitionError, match=r"2 roots.*start=1.*start=2.*exp\.roots"
    ):
        _ = exp.root
    exp.run(progress=False)
    restored = dg.Experiment.restore(tmp_path / "exp")
    with pytest.raises(
        dg.StateNotFoundError,
        match=rf"2 roots.*{first.sha()[:12]} start=1; {second.sha()[:12]} start=2.*tree\.roots",
    ):
        _ = restored.graph.root
    with pytest.raises(dg.ExperimentDefinitionError, match=r"2 roots.*exp\.roots"):
        _ = restored.root
    assert [root.sha() for root in restored.roots] == [first.sha(), second.sha()]
    assert restored.graph.node(child.sha()).root.value == 2


def test_spawning_the_same_root_again_returns_its_promise(tmp_path, call_log):
    """A notebook cell that spawns the root, run twice: the same promise, tags merged, the
    newest non-hashed arguments kept; one root is stored."""
    exp = dg.Experiment(tmp_path / "exp", CounterState)
    first = exp.spawn_new_tree(start=1, note="first")
    with exp.tag("again"):
        second = exp.spawn_new_tree(start=1, note="second")
    assert second is first
    assert first.tags == ("again",)
    assert first.arguments == {"start": 1, "note": "second"}
    assert exp.root is first
    exp.run(progress=False)
    tree = dg.Experiment.restore(tmp_path / "exp").graph
    assert tree.root.tags == ["again"]
    with tree.root.lazy_load():
        assert tree.root.note == "second"
    assert read_log(call_log) == ["root"]


def test_a_second_experiment_on_the_folder_adds_its_root(tmp_path):
    """Two sessions (or two scripts) spawning different roots into one folder: the second root
    is added to experiment.json, both trees are restored."""
    one = dg.Experiment(tmp_path / "exp", CounterState)
    Add(1)(one.spawn_new_tree(start=1))
    one.run(progress=False)
    two = dg.Experiment(tmp_path / "exp", CounterState)
    Add(1)(two.spawn_new_tree(start=2))
    two.run(progress=False)
    meta = json.loads((tmp_path / "exp" / "experiment.json").read_text())
    assert meta["roots"] == [one.root.sha(), two.root.sha()]
    tree = dg.Experiment.restore(tmp_path / "exp").graph
    assert [root.sha() for root in tree.roots] == meta["roots"]
    assert len(tree.nodes) == 4


# -- definition order for promises (issue 14, item 3) ---------------------------------------------

AMOUNTS = [5, 3, 0, 4, 1, 2]


def test_leaves_are_listed_in_definition_order(tmp_path):
    exp = dg.Experiment(tmp_path / "exp", CounterState)
    root = exp.spawn_new_tree(start=1)
    branches = [Add(amount)(root) for amount in AMOUNTS]
    ids = [branch.sha() for branch in branches]
    assert sorted(ids) != ids  # the ids alone would give another order
    assert [leaf.recipe.amount for leaf in exp.leaves] == AMOUNTS
    Add(100)(branches[2])
    assert [leaf.recipe.amount for leaf in exp.leaves] == [5, 3, 100, 4, 1, 2]


# -- a state class that lived in __main__ (issue 14, item 11) ------------------------------------

STORE_IN_MAIN = """
import dagger as dg

class Notebook(dg.ExperimentState):          # defined in a script or a notebook
    PROPERTIES = ["start"]

    def initialize_state(self, **arguments):
        self.value = self.start

exp = dg.Experiment("exp", Notebook)
exp.spawn_new_tree(start=1)
exp.run(progress=False)
"""

GROW_ELSEWHERE = """
import dagger as dg


class Add(dg.Recipe):
    def __init__(self, amount):
        self.amount = amount

    def run(self, state):
        state.value += self.amount
        return state


stored = dg.Experiment.restore("exp").graph.root
exp = dg.Experiment("exp")                   # no state class: this script does not have it
Add(5)(exp.promise_of(stored))
print(exp.run(progress=False))
spawning = dg.Experiment("exp")
spawning.spawn_new_tree(start=2)
try:
    spawning.run(progress=False)
except dg.StateClassMismatchError as error:
    print(error)
"""


def test_growing_a_stored_tree_without_its_class(tmp_path, subprocess_env):
    """An Experiment given no class grows the states of a folder whose class lived in another
    script's ``__main__``; spawning a root there instead says that no class was given (the
    message used to claim the user passed ``dagger.state:ExperimentState``)."""
    for name, text in (("store.py", STORE_IN_MAIN), ("grow.py", GROW_ELSEWHERE)):
        (tmp_path / name).write_text(text)
        process = subprocess.run(
            [sys.executable, name],
            cwd=tmp_path,
            env=subprocess_env,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert process.returncode == 0, process.stderr
    assert "1 computed, 1 cached, 0 failed" in process.stdout
    assert "this Experiment was given no state_class" in process.stdout
    assert "dagger.state:ExperimentState" not in process.stdout
    assert "Pass state_class=Notebook" in process.stdout


# -- load_state: ids, prefixes, and states without content --------------------------------------


def test_load_state_takes_a_unique_prefix_and_names_the_nearest_ids_otherwise(exp_dir):
    exp = dg.Experiment(exp_dir, CounterState)
    root = exp.spawn_new_tree(start=1)
    children = [Add(amount)(root) for amount in range(40)]
    exp.run(progress=False)
    restored = dg.Experiment.restore(exp_dir, CounterState)
    target = children[7].sha()
    loaded = restored.load_state(target[:12])  # as `dagger ls` shows it
    assert loaded is not None and loaded.value == 8 and loaded.sha() == target
    unknown = "f" * 64 if not target.startswith("f") else "0" * 64
    with pytest.raises(dg.errors.StateNotFoundError) as caught:
        restored.load_state(unknown)
    assert isinstance(caught.value, LookupError)
    assert repr(unknown) in str(caught.value) and "nearest: " in str(caught.value)
    typo = target[:11] + ("0" if target[11] != "0" else "1")
    with pytest.raises(dg.errors.StateNotFoundError, match=rf"nearest: .*{target[:12]}"):
        restored.load_state(typo)
    ids = sorted(child.sha() for child in children)
    shared = next(a[0] for a, b in itertools.pairwise(ids) if a[0] == b[0])
    with pytest.raises(dg.errors.StateNotFoundError, match="give more digits"):
        restored.load_state(shared)


def test_load_state_of_a_failed_state_warns_once_and_returns_none(exp_dir, dagger_warnings):
    from helpers import Boom

    exp = dg.Experiment(exp_dir, CounterState)
    failed = Boom()(exp.spawn_new_tree(start=1))
    with pytest.raises(dg.RunError):
        exp.run(progress=False)
    dagger_warnings.clear()
    assert dg.Experiment.restore(exp_dir, CounterState).load_state(failed.sha()) is None
    said = [record.getMessage() for record in dagger_warnings.records]
    assert len(said) == 1 and f"State {failed.sha()[:12]} failed when it was computed" in said[0]
