"""A restored tree read from the store's columns (issue 15) behaves exactly like one whose states
are built one by one: same tables, same query results, same order; and a forest, a stable
creation order and an edge map with every state as a key.

Timings are in benchmarks/bench_scale.py; these tests check that the fast paths are right.
"""

from __future__ import annotations

import math

import numpy as np
import pandas
import pytest
from helpers import Add, Boom, CounterState, Multiply

import dagger as dg
from dagger.nodeset import NodeSet


def measure(state):
    return {"value": state.value, "half": state.value / 2, "nested": {"odd": state.value % 2}}


def curve(state):
    return np.arange(3) * state.value  # not JSON: a side value, shown by its repr


@pytest.fixture
def forest(exp_dir):
    """Two roots; tags, parameters of several recipes, results, a failure."""
    for start in (1, 2):
        exp = dg.Experiment(exp_dir, CounterState)
        root = exp.spawn_new_tree(start=start, note="n")
        with exp.tag("first"):
            a = Add(1)(root)
        dg.Function(measure)(a)
        for factor in (3, 5, 7):
            with exp.tag(f"f{factor}", "mul"):
                child = Multiply(factor)(a)
            dg.Function(measure)(child)
            if factor == 5:
                dg.Function(curve)(child)
        Add(math.inf)(root)
        Boom()(a)
        with pytest.raises(dg.RunError):
            exp.run(progress=False)
    return exp_dir


def state_by_state(tree_a, tree_b):
    """The same states as ``tree_a.nodes``, taken alternately from two restores of one store:
    not backed by one table, so every query and table is built one state at a time."""
    pairs = zip(tree_a.nodes, tree_b.nodes, strict=True)
    return NodeSet([a if index % 2 else b for index, (a, b) in enumerate(pairs)])


def test_tables_from_the_columns_equal_tables_built_state_by_state(forest):
    tree, other = (dg.Experiment.restore(forest).graph for _ in range(2))
    fast = tree.nodes.to_dataframe()
    slow = state_by_state(tree, other).to_dataframe()
    assert list(fast.columns) == list(slow.columns)
    pandas.testing.assert_frame_equal(fast, slow)
    assert {"param.amount", "param.factor", "property.start", "result.measure.nested.odd"} <= set(
        fast.columns
    )
    assert fast["result.curve"].dropna().str.startswith("array(").all()


@pytest.mark.parametrize(
    "query",
    [
        lambda nodes: nodes.filter("f*"),
        lambda nodes: nodes.filter("!mul"),
        lambda nodes: nodes.where(factor=5),
        lambda nodes: nodes.where(start=2, factor=lambda f: f > 3),
        lambda nodes: nodes.where(amount=math.inf),
        lambda nodes: nodes.of_recipe("Multiply"),
        lambda nodes: nodes.sort_by("result.measure.value", reverse=True),
        lambda nodes: nodes.sort_by("depth", "factor"),
        lambda nodes: nodes.leaves,
        lambda nodes: nodes.filter("mul") | nodes.where(amount=1),
        lambda nodes: nodes.filter("mul") & nodes.where(start=1),
        lambda nodes: nodes - nodes.filter("first"),
        lambda nodes: nodes.select(lambda state: state.dagger.status == "failed"),
    ],
)
def test_queries_from_the_columns_equal_queries_state_by_state(forest, query):
    tree, other = (dg.Experiment.restore(forest).graph for _ in range(2))
    assert query(tree.nodes).ids == query(state_by_state(tree, other)).ids


def test_a_forest_in_creation_order_with_every_state_in_the_edge_map(forest):
    tree = dg.Experiment.restore(forest).graph
    assert len(tree) == 14 and len(tree.roots) == 2
    first, second = tree.roots
    assert first.dagger.properties["start"] == 1 and second.dagger.properties["start"] == 2
    with pytest.raises(dg.StateNotFoundError, match="holds 2 roots"):
        _ = tree.root
    assert set(tree.edge_map) == set(tree.node_map)  # leaves too, with no children
    assert all(tree.edge_map[leaf.sha()] == set() for leaf in tree.leaves)
    # siblings in the order they were defined (and computed), the same in every restore
    (a,) = tree.nodes.where(start=1, amount=1)
    children = [child.recipe for child in a.dagger.children]
    assert [str(recipe) for recipe in children] == [
        "Multiply(factor=3)",
        "Multiply(factor=5)",
        "Multiply(factor=7)",
        "Boom(fail=True)",
    ]
    again = dg.Experiment.restore(forest).graph
    assert again.nodes.ids == tree.nodes.ids
    assert [state.dagger.depth for state in tree.nodes] == sorted(
        state.dagger.depth for state in tree.nodes
    )
    assert tree.toposort[0] == {first.sha(), second.sha()}


def test_slim_states_are_made_once_and_read_their_facts_when_asked(forest):
    tree = dg.Experiment.restore(forest).graph
    nodes = tree.nodes
    assert tree.nodes[5] is nodes[5]  # one object per state
    (state,) = nodes.where(start=1, factor=7)
    assert state.dagger.parent is tree.node(state.parent_sha)
    assert state in state.dagger.parent.dagger.children
    assert str(tree.lineage(state)).startswith("root -> Add(amount=1)")
    record = state.dagger.record  # read from the store on demand
    assert record.id == state.sha() and record.parent == state.parent_sha
    failed = nodes.select(lambda s: s.dagger.status == "failed")[0]
    assert failed.dagger.error.type == "ValueError" and "boom" in failed.dagger.error.traceback
    (five,) = nodes.where(start=1, factor=5)
    assert np.array_equal(five.dagger.results["curve"], np.arange(3) * 10)  # loaded on access
    assert five.dagger.results.entry("curve").type == "numpy.ndarray"
