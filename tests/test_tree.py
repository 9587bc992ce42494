"""Restoring a stored experiment slim, and inspecting it: the StaticExperimentTree."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest
from helpers import Add, CounterState, Multiply, read_log

import dagger as dg


@pytest.fixture
def stored(exp_dir):
    """root -> a(+1) -> {b(*3) [prune], c(*5) [prune, big]}; root -> d(+10) [baseline]."""
    exp = dg.Experiment(exp_dir, CounterState)
    root = exp.spawn_new_tree(start=1, note="not identity")
    a = Add(1)(root)
    with exp.tag("prune"):
        b = Multiply(3)(a)
        with exp.tag("big"):
            c = Multiply(5)(a)
    with exp.tag("baseline"):
        d = Add(10)(root)
    exp.run(progress=False)
    return {name: p.sha() for name, p in dict(root=root, a=a, b=b, c=c, d=d).items()}


def test_restore_reads_no_payload(exp_dir, stored, monkeypatch):
    from dagger.store import DirectoryStore

    def forbidden(*args, **kwargs):
        raise AssertionError("restore must not load payloads")

    monkeypatch.setattr(DirectoryStore, "load", forbidden)
    exp = dg.Experiment.restore(exp_dir)
    tree = exp.graph
    assert exp.state_class is CounterState  # imported from experiment.json
    assert len(tree) == 5
    assert all(state.slim_loaded for state in tree.nodes)
    assert not hasattr(tree.root, "value")


def test_tree_structure(exp_dir, stored):
    tree = dg.Experiment.restore(exp_dir).graph
    assert tree.root.sha() == stored["root"]
    assert tree.root.root_state and tree.root.recipe is None
    assert tree.edge_map[stored["root"]] == {stored["a"], stored["d"]}
    assert tree.edge_map[stored["a"]] == {stored["b"], stored["c"]}
    assert tree.toposort == {
        0: {stored["root"]},
        1: {stored["a"], stored["d"]},
        2: {stored["b"], stored["c"]},
    }
    assert set(tree.nodes_at_distance(2).ids) == {stored["b"], stored["c"]}
    assert tree.nodes_at_distance(7) == []
    assert set(tree.leaves.ids) == {stored["b"], stored["c"], stored["d"]}
    assert tree.nodes.ids[0] == stored["root"]
    b = tree.node(stored["b"])
    assert b.dagger.parent is tree.node(stored["a"])
    assert b in tree.node(stored["a"]).dagger.children
    assert b.parent_sha == stored["a"]
    assert b.recipe.name == "Multiply" and b.recipe.params == {"factor": 3}
    assert str(b.recipe) == "Multiply(factor=3)"
    assert b.dagger.properties == {"start": 1}


def test_node_by_unique_prefix(exp_dir, stored):
    tree = dg.Experiment.restore(exp_dir).graph
    assert tree.node(stored["c"][:10]).sha() == stored["c"]
    with pytest.raises(dg.StateNotFoundError, match="No state has an id starting with 'zzzz'"):
        tree.node("zzzz")
    with pytest.raises(dg.StateNotFoundError, match="matches 5 states"):
        tree.node("")


def test_tag_filters_compose(exp_dir, stored):
    nodes = dg.Experiment.restore(exp_dir).graph.nodes
    assert set(nodes.filter("prune").ids) == {stored["b"], stored["c"]}
    assert set(nodes.filter("pr*").ids) == {stored["b"], stored["c"]}
    assert set(nodes.filter("!prune").ids) == {stored["root"], stored["a"], stored["d"]}
    union = nodes.filter("big") | nodes.filter("baseline")
    assert set(union.ids) == {stored["c"], stored["d"]}
    both = nodes.filter("prune") & nodes.filter("big")
    assert both.ids == [stored["c"]]
    rest = nodes.filter("prune") - nodes.filter("big")
    assert rest.ids == [stored["b"]]
    with pytest.raises(TypeError):
        nodes.filter("prune") | {"not": "a nodeset"}
    with pytest.raises(TypeError):
        nodes.filter(3)


def test_lazy_load_and_iterator(exp_dir, stored):
    tree = dg.Experiment.restore(exp_dir).graph
    c = tree.node(stored["c"])
    with c.lazy_load() as state:
        assert state is c and not c.slim_loaded
        assert c.value == 10
        assert c.history[-1] == ("mul", 5)
    assert c.slim_loaded and not hasattr(c, "value")
    assert c.tags == ["prune", "big"]  # bookkeeping survives deflate
    values = {state.sha(): state.value for state in tree.nodes.filter("prune").iterator}
    assert values == {stored["b"]: 6, stored["c"]: 10}
    assert all(state.slim_loaded for state in tree.nodes)
    assert c.restore() is True and c.value == 10
    c.deflate()
    assert not hasattr(c, "value")


def test_restored_experiment_can_be_extended(exp_dir, stored, call_log):
    exp = dg.Experiment.restore(exp_dir)
    b = exp.graph.node(stored["b"])
    grown = Add(100)(b.to_promise())
    also = Add(100)(b)  # a state of a restored tree is accepted directly
    assert grown.sha() == also.sha()
    report = exp.run(progress=False)
    assert report.computed == 1
    assert read_log(call_log) == ["add:100"]
    assert grown.get().value == 106
    tree = dg.Experiment.restore(exp_dir).graph
    assert tree.node(grown.sha()).parent_sha == stored["b"]
    # the same growth from the original script gives the same id
    exp = dg.Experiment(exp_dir, CounterState)
    root = exp.spawn_new_tree(start=1, note="ignored")
    again = Add(100)(Multiply(3)(Add(1)(root)))
    assert again.sha() == grown.sha()


def test_restore_in_a_fresh_process(exp_dir, stored, subprocess_env, tmp_path):
    script = tmp_path / "show_values.py"
    script.write_text(
        textwrap.dedent(
            """
            import sys
            import dagger as dg
            tree = dg.Experiment.restore(sys.argv[1]).graph
            for state in tree.nodes.filter("prune").iterator:
                print(state.sha(), state.value)
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
    values = dict(line.split() for line in output.strip().splitlines())
    assert values == {stored["b"]: "6", stored["c"]: "10"}


def test_state_root_loads_the_root(exp_dir):
    class Rewind(dg.Recipe):
        def run(self, state):
            state.value = state.root.value
            return state

    exp = dg.Experiment(exp_dir, CounterState)
    root = exp.spawn_new_tree(start=4)
    rewound = Rewind()(Add(1)(root))
    assert rewound.get().value == 4


# -- a stable order (issue 14, item 3) ------------------------------------------------------------

AMOUNTS = [5, 3, 0, 4, 1, 2]


def test_stored_states_keep_the_order_they_were_defined_and_computed_in(exp_dir):
    """Siblings computed in one run (within the same second) are listed in the order they
    were defined, not in the order of their ids or of a directory listing: children, nodes at
    a depth, leaves, the whole node list and the table."""
    exp = dg.Experiment(exp_dir, CounterState)
    root = exp.spawn_new_tree(start=1)
    branches = [Add(amount)(root) for amount in AMOUNTS]
    for branch in branches:
        Multiply(2)(branch)
    ids = [branch.sha() for branch in branches]
    assert sorted(ids) != ids  # the ids alone would give another order
    exp.run(progress=False)

    tree = dg.Experiment.restore(exp_dir).graph
    assert [child.recipe.params["amount"] for child in tree.root.dagger.children] == AMOUNTS
    assert [state.sha() for state in tree.nodes_at_distance(1)] == ids
    assert [leaf.dagger.parent.sha() for leaf in tree.leaves] == ids
    assert tree.nodes.ids == [root.sha(), *ids, *(leaf.sha() for leaf in tree.leaves)]
    assert list(tree.nodes.to_dataframe()["id"]) == tree.nodes.ids
    # the same order in another restore
    assert dg.Experiment.restore(exp_dir).graph.nodes.ids == tree.nodes.ids
