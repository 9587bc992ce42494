"""A state's attributes are the user's; dagger's facts live in ``state.dagger`` (issue 12)."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest
from helpers import Evaluate, Net

import dagger as dg

# Names dagger used to overwrite silently on every state (issue 12, case 1 and its kind).
FORMERLY_OVERWRITTEN = ["depth", "results", "status", "record", "properties", "children", "parent"]


def accuracy(state):
    return state.results["accuracy"]


def test_user_attributes_named_like_dagger_facts_survive_run_and_load(exp_dir):
    exp = dg.Experiment(exp_dir, Net)
    root = exp.spawn_new_tree(depth=18)
    evaluated = Evaluate(0.93)(root)
    dg.Function(accuracy)(evaluated)
    exp.run(progress=False)

    computed = evaluated.get()
    assert computed.depth == 18
    assert computed.results == {"accuracy": 0.93}
    tree = dg.Experiment.restore(exp_dir).graph
    with tree.node(evaluated.sha()).lazy_load() as loaded:
        assert loaded.depth == 18
        assert loaded.results == {"accuracy": 0.93}
        assert loaded.status == "converged"
        assert loaded.record == ["epoch 1", "epoch 2"]
        assert loaded.properties == {"width": 64}
        assert loaded.children == ["not the tree's"]
        assert loaded.parent == "my own"
        # dagger's own facts are where they always are, untouched by the user's values.
        assert loaded.dagger.status == dg.Status.DONE
        assert loaded.dagger.results["accuracy"] == 0.93
        assert loaded.dagger.depth == 1
        assert loaded.dagger.parent is tree.node(root.sha())
        assert loaded.dagger.properties == {"depth": 18}


def test_the_analysis_api_reads_dagger_facts_not_user_attributes(exp_dir):
    exp = dg.Experiment(exp_dir, Net)
    root = exp.spawn_new_tree(depth=18)
    for value in (0.5, 0.93):
        dg.Function(accuracy)(Evaluate(value)(root))
    exp.run(progress=False)
    nodes = dg.Experiment.restore(exp_dir).graph.nodes
    frame = nodes.to_dataframe()
    assert sorted(frame["result.accuracy"].dropna()) == [0.5, 0.93]
    assert set(frame["status"]) == {"done"}
    best = nodes.select(lambda s: s.dagger.results.get("accuracy", 0) > 0.9)
    assert [s.recipe.params["accuracy"] for s in best] == [0.93]
    assert nodes.where(depth=18) == nodes  # the root property, inherited
    assert [s.recipe.params["accuracy"] for s in nodes.sort_by("accuracy")[:2]] == [0.5, 0.93]


@pytest.mark.parametrize(
    ("name", "hint"),
    [
        ("tags", "exp.tag"),
        ("parent_sha", "parent"),
        ("recipe", "recipe"),
        ("experiment_object", "dagger sets it"),
        ("dagger", "another name"),
        ("sha", "methods"),
        ("restore", "methods"),
        ("root", "methods"),
    ],
)
def test_setting_a_reserved_name_raises_at_once_naming_it(name, hint):
    state = dg.ExperimentState()
    with pytest.raises(dg.ReservedAttributeError, match=rf"`{name}` is reserved.*{hint}"):
        setattr(state, name, 1)
    with pytest.raises(AttributeError):  # also the builtin it means
        delattr(state, name)


def test_a_recipe_that_sets_a_reserved_name_fails_clearly(memory):
    class Retag(dg.Recipe):
        def run(self, state):
            state.tags = ["mine"]
            return state

    exp = dg.Experiment(memory, Net)
    child = Retag()(exp.spawn_new_tree(depth=2))
    with pytest.raises(dg.RunError) as caught:
        exp.run(progress=False)
    assert isinstance(caught.value.__cause__, dg.ReservedAttributeError)
    assert "`tags` is reserved" in str(caught.value)
    assert child.sha() in str(caught.value)[:4000] or child.sha()[:12] in str(caught.value)


def test_a_property_named_like_a_dagger_fact_is_inherited_and_in_the_identity(memory):
    class Tree(dg.ExperimentState):
        PROPERTIES = ["depth", "status", "results"]

    exp = dg.Experiment(memory, Tree)
    a = exp.spawn_new_tree(depth=1, status="draft", results=None)
    other = dg.Experiment(dg.MemoryStore(), Tree).spawn_new_tree(
        depth=2, status="draft", results=None
    )
    assert a.sha() != other.sha()
    exp.run(progress=False)
    root = a.get()
    assert (root.depth, root.status, root.results) == (1, "draft", None)


def test_user_attributes_survive_a_fresh_process(exp_dir, tmp_path, subprocess_env):
    exp = dg.Experiment(exp_dir, Net)
    Evaluate(0.93)(exp.spawn_new_tree(depth=18))
    exp.run(progress=False)
    script = tmp_path / "load.py"
    script.write_text(
        textwrap.dedent(
            """
            import sys
            import dagger as dg
            tree = dg.Experiment.restore(sys.argv[1]).graph
            for state in tree.nodes.iterator:
                print(state.depth, getattr(state, "results", None))
            """
        )
    )
    result = subprocess.run(
        [sys.executable, str(script), str(exp_dir)],
        env=subprocess_env,
        capture_output=True,
        text=True,
        timeout=120,
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.split("\n")[:2] == ["18 None", "18 {'accuracy': 0.93}"]
