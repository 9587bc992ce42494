"""Explain: what an id is made of, and what changed when a state is computed again (issue 10)."""

from __future__ import annotations

import numpy as np
from helpers import Add, CounterState

import dagger as dg
from dagger.explain import Explanation


def test_a_promise_lists_the_ingredients_of_its_id(memory):
    exp = dg.Experiment(memory, CounterState)
    root = exp.spawn_new_tree(start=1, note="not identity")
    child = Add(2)(root)
    explained = child.explain()
    assert explained.state_id == child.sha() and explained.parent_id == root.sha()
    assert explained.kind == "child" and explained.name == "Add"
    assert explained.values == {"amount": 2}
    text = str(explained)
    assert "parameter          amount = 2" in text
    assert "method             Add.run" in text
    assert explained.code.startswith("code:")
    rooted = root.explain()
    assert rooted.kind == "root" and rooted.values == {"start": 1}  # NONHASHED left out
    assert "CounterState.initialize_state" in str(rooted)


def test_changes_name_each_ingredient_that_differs(memory):
    exp = dg.Experiment(memory, CounterState)
    root = exp.spawn_new_tree(start=1)
    before = Add(2)(root).explain()
    assert Add(2)(root).explain().changes_from(before) == []
    assert Add(3)(root).explain().changes_from(before) == ["parameter amount 2 -> 3"]
    # Same printed value, another type: the digest tells them apart.
    lines = Add(np.float32(2))(root).explain().changes_from(before)
    assert lines == ["parameter amount 2 -> 2.0"]
    # np.float64 holds the same value as the Python float exactly: the same ingredient.
    assert Add(np.float64(2.5))(root).explain().changes_from(Add(2.5)(root).explain()) == []
    # A float32 that prints like the float it approximates is still another value.
    lines = Add(np.float32(0.5))(root).explain().changes_from(Add(0.5)(root).explain())
    assert lines == ["parameter amount changed (0.5, a value of another type or precision)"]


def test_untracked_names_are_listed_not_hashed(memory):
    import logging

    namespace = {"dg": dg, "logging": logging}
    exec(  # a recipe reading a logger: a value dagger cannot encode
        "LOG = logging.getLogger('study')\n"
        "class Noisy(dg.Recipe):\n"
        "    VERSION = None\n"
        "    def __init__(self, amount):\n"
        "        self.amount = amount\n"
        "    def run(self, state):\n"
        "        LOG.info('running')\n"
        "        return state\n",
        namespace,
    )
    exp = dg.Experiment(memory, CounterState)
    explained = namespace["Noisy"](1)(exp.spawn_new_tree(start=1)).explain()
    assert [entry["name"] for entry in explained.untracked] == ["LOG"]
    assert "untracked (read by the code, not part of the id):" in str(explained)


def test_an_explanation_round_trips_through_json(memory):
    exp = dg.Experiment(memory, CounterState)
    explained = Add(2)(exp.spawn_new_tree(start=1)).explain()
    assert Explanation.from_json(explained.to_json()) == explained
