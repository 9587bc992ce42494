"""Every error a user can meet through the public API is a DaggerError (issue 9).

Each case drives one failure path the way a user would and checks the error's type, that it
is also the builtin it means, and that its message names the problem.
"""

from __future__ import annotations

import json
import pickle

import pytest
from helpers import Add, Boom, CounterState

import dagger as dg
from dagger.store import DirectoryStore


def _stored(exp_dir):
    exp = dg.Experiment(exp_dir, CounterState)
    root = exp.spawn_new_tree(start=1)
    good = Add(1)(root)
    bad = Boom()(root)
    with pytest.raises(dg.RunError):
        exp.run(progress=False)
    return exp, root, good, bad


def _cases(tmp_path):
    """(description, callable, expected type, builtin, message fragment)."""
    exp_dir = tmp_path / "exp"
    exp, root, good, bad = _stored(exp_dir)
    tree = dg.Experiment.restore(exp_dir).graph
    a_file = tmp_path / "a_file"
    a_file.write_text("not a folder")
    newer = tmp_path / "newer"
    newer.mkdir()
    (newer / "experiment.json").write_text(json.dumps({"format": 999, "state_class": "x:Y"}))

    def ambiguous_root():
        forest = dg.Experiment(tmp_path / "two", CounterState)
        forest.spawn_new_tree(start=1)
        forest.spawn_new_tree(start=2)
        return forest.root

    class NeedsWidth(dg.ExperimentState):
        def __init__(self, width):
            super().__init__()

    def foreign_promise():
        other = dg.Experiment(tmp_path / "other", CounterState)
        Add(1)(other.spawn_new_tree(start=1))
        exp2 = dg.Experiment(tmp_path / "third", CounterState)
        exp2.add_child(other.root, Add(2))

    def failing_state_loaded():
        with tree.node(bad.sha()).lazy_load():
            pass

    def missing_result():
        return tree.node(good.sha()).dagger.results["accuracy"]

    def reserved():
        state = tree.node(good.sha())
        state.tags = ["mine"]

    def store_under_a_file():
        blocked = dg.Experiment(a_file / "exp", CounterState)
        Add(1)(blocked.spawn_new_tree(start=1))
        blocked.run(progress=False)

    return [
        (
            "state class",
            lambda: dg.Experiment(tmp_path, int),
            dg.ExperimentDefinitionError,
            ValueError,
            "state_class",
        ),
        (
            "durability",
            lambda: dg.Experiment(tmp_path, durability="maybe"),
            dg.ExperimentDefinitionError,
            ValueError,
            "durability",
        ),
        (
            "missing property",
            lambda: dg.Experiment(tmp_path / "p", CounterState).spawn_new_tree(),
            dg.MissingPropertyError,
            KeyError,
            "start",
        ),
        (
            "unhashable argument",
            lambda: dg.Experiment(tmp_path / "h", CounterState).spawn_new_tree(start=object()),
            dg.HashingError,
            TypeError,
            "start",
        ),
        (
            "exp.root of a forest",
            ambiguous_root,
            dg.ExperimentDefinitionError,
            ValueError,
            "exp.roots",
        ),
        (
            "a state __init__ dagger cannot call",
            lambda: dg.Experiment(tmp_path / "w", NeedsWidth),
            dg.ExperimentDefinitionError,
            ValueError,
            "parent_sha",
        ),
        (
            "the original's state.save()",
            lambda: CounterState().save(),
            dg.RemovedAPIError,
            NotImplementedError,
            "Recipe",
        ),
        (
            "recipe on a non-promise",
            lambda: Add(1)(3),
            dg.ExperimentDefinitionError,
            ValueError,
            "int",
        ),
        (
            "foreign promise",
            foreign_promise,
            dg.ExperimentDefinitionError,
            ValueError,
            "another Experiment",
        ),
        (
            "tag",
            lambda: exp.tag(3).__enter__(),
            dg.ExperimentDefinitionError,
            ValueError,
            "tag must be a string",
        ),
        (
            "nothing to run",
            lambda: dg.Experiment(tmp_path / "n").run(),
            dg.ExperimentDefinitionError,
            ValueError,
            "Nothing to run",
        ),
        (
            "function not callable",
            lambda: dg.Function(3),
            dg.ExperimentDefinitionError,
            ValueError,
            "callable",
        ),
        ("get of a failing state", lambda: bad.get(), dg.RunError, RuntimeError, "boom"),
        (
            "restore: no folder",
            lambda: dg.Experiment.restore(tmp_path / "nope"),
            dg.NotAnExperimentError,
            OSError,
            "does not exist",
        ),
        (
            "restore: a file",
            lambda: dg.Experiment.restore(a_file),
            dg.NotAnExperimentError,
            OSError,
            "experiment",
        ),
        (
            "restore: newer format",
            lambda: dg.Experiment.restore(newer),
            dg.FormatVersionError,
            OSError,
            "format 999",
        ),
        (
            "restore: another class",
            lambda: dg.Experiment.restore(exp_dir, dg.ExperimentState),
            dg.StateClassMismatchError,
            OSError,
            "CounterState",
        ),
        ("unknown id", lambda: tree.node("ffffffff"), dg.StateNotFoundError, KeyError, "ffffffff"),
        (
            "filter of a non-string",
            lambda: tree.nodes.filter(3),
            dg.InvalidQueryError,
            TypeError,
            "glob",
        ),
        (
            "composing with a non-NodeSet",
            lambda: tree.nodes | 3,
            dg.InvalidQueryError,
            TypeError,
            "NodeSet",
        ),
        (
            "unknown column",
            lambda: tree.nodes.where(nope=1),
            dg.ColumnNotFoundError,
            KeyError,
            "nope",
        ),
        (
            "unknown sort key",
            lambda: tree.nodes.sort_by("nope"),
            dg.ColumnNotFoundError,
            KeyError,
            "nope",
        ),
        (
            "loading a failed state",
            failing_state_loaded,
            dg.StateUnavailableError,
            LookupError,
            "failed",
        ),
        (
            "a result that was not recorded",
            missing_result,
            dg.ColumnNotFoundError,
            KeyError,
            "accuracy",
        ),
        (
            "setting a reserved attribute",
            reserved,
            dg.ReservedAttributeError,
            AttributeError,
            "exp.tag",
        ),
        (
            "draw format",
            lambda: tree.draw(tmp_path / "t", format="gif"),
            dg.UnknownFormatError,
            ValueError,
            "gif",
        ),
        (
            "verify of a non-experiment",
            lambda: dg.verify(tmp_path / "nope"),
            dg.NotAnExperimentError,
            OSError,
            "does not exist",
        ),
        (
            "gc of a non-experiment",
            lambda: dg.gc(tmp_path / "nope"),
            dg.NotAnExperimentError,
            OSError,
            "does not exist",
        ),
        ("a store that cannot be created", store_under_a_file, dg.StoreError, OSError, "a_file"),
        (
            "to_promise without experiment",
            lambda: dg.ExperimentState().to_promise(),
            dg.ExperimentDefinitionError,
            ValueError,
            "restore",
        ),
    ]


def test_every_public_failure_path_raises_a_dagger_error(tmp_path):
    for description, action, expected, builtin, fragment in _cases(tmp_path):
        with pytest.raises(dg.DaggerError) as caught:
            action()
        error = caught.value
        assert type(error) is expected or isinstance(error, expected), (description, error)
        assert isinstance(error, builtin), description
        assert fragment in str(error), (description, str(error))
        # Errors cross process boundaries (executors): they must pickle.
        clone = pickle.loads(pickle.dumps(error))
        assert type(clone) is type(error) and str(clone) == str(error), description


def test_a_corrupt_payload_is_reported_as_a_dagger_error_by_lazy_load(exp_dir, dagger_warnings):
    exp = dg.Experiment(DirectoryStore(exp_dir, inline_limit=0), CounterState)
    good = Add(1)(exp.spawn_new_tree(start=1))
    exp.run(progress=False)
    payload = exp_dir / DirectoryStore(exp_dir).read_record(good.sha()).payload.file
    payload.write_bytes(b"damaged")
    state = dg.Experiment.restore(exp_dir).graph.node(good.sha())
    with pytest.raises(dg.StateUnavailableError, match="could not be loaded"):
        with state.lazy_load():
            pass
    assert any("does not match the checksum" in r.getMessage() for r in dagger_warnings.records)
