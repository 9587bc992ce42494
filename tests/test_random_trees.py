"""Hypothesis: random trees built, run, restored and compared, and rerun for free."""

from __future__ import annotations

import tempfile

from helpers import Add, CounterState, Multiply
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import dagger as dg

steps = st.tuples(st.sampled_from(["add", "mul"]), st.integers(-3, 3))
trees = st.recursive(
    st.builds(lambda step: (step, []), steps),
    lambda children: st.builds(
        lambda step, kids: (step, kids), steps, st.lists(children, max_size=3)
    ),
    max_leaves=12,
)


def grow(exp, parent, subtree, value, expected):
    (op, amount), children = subtree
    recipe = Add(amount) if op == "add" else Multiply(amount)
    child = recipe(parent)
    value = value + amount if op == "add" else value * amount
    expected[child.sha()] = value
    for grandchild in children:
        grow(exp, child, grandchild, value, expected)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.integers(-5, 5), st.lists(trees, max_size=3))
def test_random_tree_round_trip(start, subtrees):
    with tempfile.TemporaryDirectory() as folder:
        exp = dg.Experiment(folder, CounterState, durability="fast")
        root = exp.spawn_new_tree(start=start)
        expected = {root.sha(): start}
        for subtree in subtrees:
            grow(exp, root, subtree, start, expected)
        report = exp.run(progress=False)
        assert report.computed == len(expected)

        tree = dg.Experiment.restore(folder).graph
        assert set(tree.node_map) == set(expected)
        for state in tree.nodes.iterator:
            assert state.value == expected[state.sha()]
            if state.dagger.parent is not None:
                assert state.parent_sha in expected

        exp = dg.Experiment(folder, CounterState, durability="fast")
        root = exp.spawn_new_tree(start=start)
        for subtree in subtrees:
            grow(exp, root, subtree, start, {})
        again = exp.run(progress=False)
        assert (again.computed, again.cached) == (0, len(expected))
