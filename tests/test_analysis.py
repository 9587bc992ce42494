"""Analysis: recorded results, queries, tables and lineage on a restored tree (issue 5)."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import numpy as np
import pandas
import pytest
from helpers import Add, Boom, CounterState, Multiply

import dagger as dg


def value_of(state):
    return {"value": state.value, "parity": state.value % 2}


def spectrum(state):
    """A result that is not JSON: stored beside the state, loaded on access."""
    return np.full(3, state.value, dtype=np.float32)


@pytest.fixture
def study(exp_dir):
    """root(1) -> a: Add(1) -> {Multiply(2), Multiply(3) [big]}, root -> Add(10) [base]."""
    exp = dg.Experiment(exp_dir, CounterState)
    root = exp.spawn_new_tree(start=1)
    a = Add(1)(root)
    with exp.tag("mul"):
        b = Multiply(2)(a)
        with exp.tag("big"):
            c = Multiply(3)(a)
    with exp.tag("base"):
        d = Add(10)(root)
    for node in (root, a, b, c, d):
        dg.Function(value_of)(node)
    dg.Function(spectrum, name="spectrum")(c)
    exp.run(progress=False)
    return {name: p.sha() for name, p in dict(root=root, a=a, b=b, c=c, d=d).items()}


def test_results_are_visible_after_restore_without_loading_weights(exp_dir, study, monkeypatch):
    from dagger.store import DirectoryStore

    loads = []
    original = DirectoryStore.load
    monkeypatch.setattr(
        DirectoryStore, "load", lambda self, *a, **k: loads.append(a) or original(self, *a, **k)
    )
    tree = dg.Experiment.restore(exp_dir).graph
    assert tree.node(study["c"]).dagger.results["value_of"] == {"value": 6, "parity": 0}
    assert np.array_equal(
        tree.node(study["c"]).dagger.results["spectrum"], np.full(3, 6, np.float32)
    )
    assert loads == []  # results come from the records and their side files, not payloads
    assert tree.node(study["c"]).dagger.results.summary("spectrum").startswith("array(")


def test_results_are_recomputed_when_the_function_changes(exp_dir, study):
    calls = []

    def value_of(state):  # same name, new code
        calls.append(state.sha())
        return {"value": state.value * 100}

    exp = dg.Experiment(exp_dir, CounterState)
    root = exp.spawn_new_tree(start=1)
    dg.Function(value_of)(root)
    report = exp.run(progress=False)
    assert report.functions == 1 and calls == [study["root"]]
    tree = dg.Experiment.restore(exp_dir).graph
    assert tree.root.dagger.results["value_of"] == {"value": 100}


def test_where_of_recipe_select_sort_by(exp_dir, study):
    nodes = dg.Experiment.restore(exp_dir).graph.nodes
    assert nodes.where(factor=3).ids == [study["c"]]
    assert set(nodes.where(factor=lambda f: f >= 2).ids) == {study["b"], study["c"]}
    assert set(nodes.where(start=1).ids) == set(study.values())  # a root property
    assert set(nodes.of_recipe(Multiply).ids) == {study["b"], study["c"]}
    assert set(nodes.of_recipe("Add").ids) == {study["a"], study["d"]}
    big = nodes.select(lambda s: s.dagger.results["value_of"]["value"] > 5)
    assert set(big.ids) == {study["c"], study["d"]}
    ordered = nodes.sort_by("result.value_of.value")
    assert [s.dagger.results["value_of"]["value"] for s in ordered] == [1, 2, 4, 6, 11]
    assert nodes.sort_by("factor", reverse=True).ids[:2] == [study["c"], study["b"]]
    assert nodes.leaves.ids == [s for s in nodes.ids if s in {study["b"], study["c"], study["d"]}]
    with pytest.raises(dg.ColumnNotFoundError, match=r"named 'factr'.*did you mean 'factor'"):
        nodes.where(factr=3)
    with pytest.raises(KeyError, match=r"column named 'result.valu_of.value'.*did you mean"):
        nodes.sort_by("result.valu_of.value")


def test_to_dataframe(exp_dir, study):
    frame = dg.Experiment.restore(exp_dir).graph.nodes.to_dataframe()
    assert isinstance(frame, pandas.DataFrame)
    assert len(frame) == 5
    for column in ("id", "parent", "depth", "recipe", "tags", "status", "seconds"):
        assert column in frame.columns
    row = frame.set_index("id").loc[study["c"]]
    assert row["parent"] == study["a"] and row["depth"] == 2 and row["recipe"] == "Multiply"
    assert row["param.factor"] == 3 and row["tags"] == ["mul", "big"] and row["status"] == "done"
    assert row["result.value_of.value"] == 6 and row["result.value_of.parity"] == 0
    assert row["property.start"] == 1
    assert frame.set_index("id").loc[study["root"], "recipe"] == "root"


def test_failed_states_in_the_table(exp_dir):
    exp = dg.Experiment(exp_dir, CounterState)
    bad = Boom()(exp.spawn_new_tree(start=1))
    with pytest.raises(dg.RunError):
        exp.run(progress=False)
    frame = dg.Experiment.restore(exp_dir).graph.nodes.to_dataframe().set_index("id")
    assert frame.loc[bad.sha(), "status"] == "failed"


def test_lineage_and_diff(exp_dir, study):
    tree = dg.Experiment.restore(exp_dir).graph
    lineage = tree.lineage(study["c"])
    assert lineage.ids == [study["root"], study["a"], study["c"]]
    assert str(lineage) == "root -> Add(amount=1) -> Multiply(factor=3)"
    assert [r.params if r else None for r in lineage.recipes] == [
        None,
        {"amount": 1},
        {"factor": 3},
    ]
    diff = tree.diff(study["b"], study["c"][:10])
    assert diff.ancestor.sha() == study["a"]
    assert diff.common.ids == [study["root"], study["a"]]
    assert diff.only_a.ids == [study["b"]] and diff.only_b.ids == [study["c"]]
    ((left, right, differing),) = diff.changes
    assert left.name == right.name == "Multiply" and differing == {"factor": (2, 3)}
    assert "Multiply differs in factor: 2 vs 3" in str(diff)
    other = tree.diff(study["d"], study["c"])
    assert other.ancestor.sha() == study["root"]
    assert len(other.changes) == 2
    with pytest.raises(dg.StateNotFoundError):
        tree.lineage("f" * 64)


def test_results_survive_a_fresh_process(exp_dir, study, subprocess_env, tmp_path):
    script = tmp_path / "table.py"
    script.write_text(
        textwrap.dedent(
            """
            import sys
            import dagger as dg
            frame = dg.Experiment.restore(sys.argv[1]).graph.nodes.to_dataframe()
            print(frame.sort_values("result.value_of.value")["result.value_of.value"].tolist())
            """
        )
    )
    output = subprocess.run(
        [sys.executable, str(script), str(exp_dir)],
        env=subprocess_env,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert output.strip() == "[1, 2, 4, 6, 11]"


def test_a_tag_pattern_that_matches_nothing_says_so(exp_dir, study, dagger_warnings):
    nodes = dg.Experiment.restore(exp_dir).graph.nodes
    assert nodes.filter("bigg") == []
    (warning,) = [r for r in dagger_warnings.records if "No state here has a tag" in r.getMessage()]
    assert "did you mean 'big'" in warning.getMessage()
    assert "base, big, mul" in warning.getMessage()
    dagger_warnings.clear()
    assert len(nodes.filter("b*")) == 2
    assert not [r for r in dagger_warnings.records if "No state here" in r.getMessage()]


# -- smaller truths (issue 14, item 11) -----------------------------------------------------------


def test_diff_says_when_a_step_is_the_same_recipe_after_different_ancestors(exp_dir):
    """Two branches that part at the first step and then apply the very same recipe: the
    second step is not "different in code"."""
    exp = dg.Experiment(exp_dir, CounterState)
    root = exp.spawn_new_tree(start=1)
    left = Multiply(2)(Add(1)(root))
    right = Multiply(2)(Add(2)(root))
    exp.run(progress=False)
    text = str(dg.Experiment.restore(exp_dir).graph.diff(left.sha(), right.sha()))
    assert "step 1: Add differs in amount: 1 vs 2" in text
    assert "step 2: the same Multiply(factor=2) on both (after different steps)" in text
    assert "differs in code" not in text


class Cast(dg.Recipe):
    """Recipe parameters that JSON does not have: a dtype, a path, a function, a partial."""

    def __init__(self, dtype, folder, op, scale):
        self.dtype = dtype
        self.folder = folder
        self.op = op
        self.scale = scale

    def run(self, state):
        state.cast = str(self.dtype)
        return state


def test_where_finds_values_json_does_not_have_and_no_value_shows_an_address(exp_dir, caplog):
    """``where(dtype=torch.float16)`` and ``where(folder=Path(...))`` find what they were
    recorded as (they silently matched nothing); a value no state has is a warning naming the
    values there are; functions, lambdas and partials show by name, never by memory address
    (which changes every run)."""
    import functools
    import operator
    from pathlib import Path

    torch = pytest.importorskip("torch")
    exp = dg.Experiment(exp_dir, CounterState)
    root = exp.spawn_new_tree(start=1)
    half = Cast(torch.float16, Path("/data/a"), lambda x: x + 1, functools.partial(max, 0))(root)
    Cast(torch.bfloat16, Path("/data/b"), operator.add, functools.partial(min, 1))(root)
    exp.run(progress=False)
    nodes = dg.Experiment.restore(exp_dir).graph.nodes

    assert nodes.where(dtype=torch.float16).ids == [half.sha()]
    assert nodes.where(folder=Path("/data/a")).ids == [half.sha()]
    caplog.set_level("WARNING", logger="dagger")
    assert nodes.where(dtype=torch.float32).ids == []
    assert "No state here has dtype=torch.float32" in caplog.text
    assert "torch.bfloat16" in caplog.text and "torch.float16" in caplog.text

    table = nodes.to_dataframe()
    shown = " ".join(str(value) for value in table.to_numpy().ravel())
    shown += " ".join(str(state.recipe) for state in nodes if state.recipe is not None)
    shown += str(half.recipe)
    assert " at 0x" not in shown
    assert "<lambda> (test_analysis.py:" in shown
    assert "_operator.add" in shown and "partial(max, 0)" in shown
