"""The Experiment API as a user meets it, bad input included, and the seed's quick start."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import Add, CounterState

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


def test_second_root(tmp_path):
    exp = dg.Experiment(tmp_path, CounterState)
    exp.spawn_new_tree(start=1)
    with pytest.raises(dg.ExperimentDefinitionError, match="already has a root"):
        exp.spawn_new_tree(start=2)


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
