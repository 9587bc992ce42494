"""Running a tree: lazy, cached, depth-first, failure-isolated, interruptible."""

from __future__ import annotations

import pytest
from helpers import Add, Boom, CounterState, Multiply, read_log

import dagger as dg


def build(target, start=1):
    """An experiment on ``target``: a folder, or an in-memory store (most tests here)."""
    exp = dg.Experiment(target, CounterState)
    root = exp.spawn_new_tree(start=start)
    return exp, root


def stored_files(exp_dir):
    """Every file of the store (locks aside) and when it was last written."""
    return {
        path.relative_to(exp_dir): path.stat().st_mtime_ns
        for path in exp_dir.rglob("*")
        if path.is_file() and "locks" not in path.parts
    }


def test_building_is_lazy_and_touches_no_disk(exp_dir, call_log):
    exp, root = build(exp_dir)
    a = Add(1)(root)
    Multiply(3)(a)
    dg.Function(lambda s: s.value)(a)
    assert not exp_dir.exists()
    assert read_log(call_log) == []


def test_run_computes_each_state_once_and_rerun_computes_nothing(exp_dir, call_log):
    exp, root = build(exp_dir)
    a = Add(1)(root)
    Multiply(3)(a)
    Multiply(5)(a)
    report = exp.run(progress=False)
    assert (report.computed, report.cached, report.failed) == (4, 0, 0)
    assert sorted(read_log(call_log)) == ["add:1", "mul:3", "mul:5", "root"]
    before = stored_files(exp_dir)

    exp, root = build(exp_dir)
    a = Add(1)(root)
    Multiply(3)(a)
    Multiply(5)(a)
    report = exp.run(progress=False)
    assert (report.computed, report.cached) == (0, 4)
    assert len(read_log(call_log)) == 4
    assert stored_files(exp_dir) == before  # nothing rewritten


def test_values_flow_down_the_tree_and_siblings_are_independent(memory):
    exp, root = build(memory, start=2)
    a = Add(1)(root)
    b = Multiply(10)(a)
    c = Multiply(100)(a)
    d = Add(5)(a)
    exp.run(progress=False)
    assert b.get().value == 30
    assert c.get().value == 300
    assert d.get().value == 8
    assert c.get().history == [("root", 2), ("add", 1), ("mul", 100)]


def test_growing_the_tree_computes_only_the_new_states(memory, call_log):
    exp, root = build(memory)
    Add(1)(root)
    exp.run(progress=False)
    exp, root = build(memory)
    a = Add(1)(root)
    Multiply(2)(a)
    report = exp.run(progress=False)
    assert report.computed == 1
    assert read_log(call_log) == ["root", "add:1", "mul:2"]


def test_cached_subtree_costs_no_payload_load(memory):
    exp, root = build(memory)
    a = Add(1)(root)
    Multiply(2)(a)
    exp.run(progress=False)
    loads = memory.loads
    exp, root = build(memory)
    a = Add(1)(root)
    Multiply(2)(a)
    exp.run(progress=False)
    assert memory.loads == loads
    # a new child of a stored state loads only that parent
    exp, root = build(memory)
    a = Add(1)(root)
    Multiply(7)(a)
    exp.run(progress=False)
    assert memory.loads == loads + 1


def test_same_recipe_twice_is_one_state(memory, call_log):
    exp, root = build(memory)
    first = Add(1)(root)
    second = Add(1)(root)
    assert first.sha() == second.sha()
    report = exp.run(progress=False)
    assert report.computed == 2
    assert read_log(call_log) == ["root", "add:1"]


def test_tags_are_labels_not_identity(memory, call_log):
    exp, root = build(memory)
    with exp.tag("lr-sweep"):
        a = Add(1)(root)
    with exp.tag("baseline"):
        b = Add(1)(root)
    assert a.sha() == b.sha()
    exp.run(progress=False)
    assert read_log(call_log) == ["root", "add:1"]
    tree = dg.Experiment.restore(memory).graph
    assert sorted(tree.node(a.sha()).tags) == ["baseline", "lr-sweep"]

    # a later run under a new tag adds it to the stored state, computing nothing
    exp, root = build(memory)
    with exp.tag("revisited"):
        Add(1)(root)
    assert exp.run(progress=False).computed == 0
    tree = dg.Experiment.restore(memory).graph
    assert sorted(tree.node(a.sha()).tags) == ["baseline", "lr-sweep", "revisited"]
    assert tree.nodes.filter("revisited").ids == [a.sha()]


def test_tag_contexts_nest(memory):
    exp, root = build(memory)
    with exp.tag("outer"):
        with exp.tag("inner"):
            assert exp.tags == ["outer", "inner"]
            a = Add(1)(root)
        assert exp.tags == ["outer"]
    assert exp.tags == []
    assert a.tags == ("outer", "inner")


def test_parent_copies_the_last_child_takes_the_object(memory):
    seen = []

    class Record(dg.Recipe):
        def __init__(self, index):
            self.index = index

        def run(self, state):
            seen.append(state)
            return state

    exp, root = build(memory)
    for index in range(3):
        Record(index)(root)
    exp.run(progress=False)
    assert len({id(state) for state in seen}) == 3  # each child got its own object


def test_a_failure_is_recorded_and_the_rest_of_the_tree_runs(exp_dir, call_log):
    exp, root = build(exp_dir)
    bad = Boom()(root)
    Add(100)(bad)  # skipped: its parent failed
    good = Add(1)(root)
    Multiply(2)(good)
    with pytest.raises(dg.RunError) as info:
        exp.run(progress=False)
    error = info.value
    assert isinstance(error, RuntimeError)
    report = error.report
    assert (report.computed, report.failed, report.skipped) == (3, 1, 1)
    assert len(error.failures) == 1
    failure = error.failures[0]
    assert failure.state_id == bad.sha()
    assert failure.error_type == "ValueError"
    assert "boom on purpose" in failure.traceback
    assert "Boom" in str(error) and "boom on purpose" in str(error)
    record = dg.store.DirectoryStore(exp_dir).read_failure(bad.sha())  # a fresh reader
    assert record.error.type == "ValueError"
    assert "raise ValueError" in record.error.traceback
    assert "add:100" not in read_log(call_log)

    # the failed state shows in the restored tree
    tree = dg.Experiment.restore(exp_dir).graph
    assert tree.node(bad.sha()).dagger.status == "failed"
    assert tree.node(good.sha()).dagger.status == "done"


def test_a_fixed_failure_is_recomputed_and_its_failure_record_cleared(exp_dir):
    class Flaky(dg.Recipe):
        VERSION = "1"
        fail = True

        def run(self, state):
            if Flaky.fail:
                raise RuntimeError("transient")
            return state

    exp, root = build(exp_dir)
    flaky = Flaky()(root)
    with pytest.raises(dg.RunError):
        exp.run(progress=False)
    Flaky.fail = False
    exp, root = build(exp_dir)
    flaky = Flaky()(root)
    assert exp.run(progress=False).computed == 1
    assert dg.store.DirectoryStore(exp_dir).read_failure(flaky.sha()) is None
    assert dg.Experiment.restore(exp_dir).graph.node(flaky.sha()).dagger.status == "done"


def test_keep_going_false_stops_at_the_first_failure(memory, call_log):
    exp, root = build(memory)
    Boom()(root)
    Add(1)(root)
    with pytest.raises(dg.RunError) as info:
        exp.run(keep_going=False, progress=False)
    assert info.value.report.failed == 1
    assert "add:1" not in read_log(call_log)


def test_run_returning_not_a_state_is_a_clear_failure(memory):
    class Forgetful(dg.Recipe):
        def run(self, state):
            state.value = 0  # forgot `return state`

    exp, root = build(memory)
    Forgetful()(root)
    with pytest.raises(dg.RunError, match=r"Forgetful.run` returned a `NoneType`") as info:
        exp.run(progress=False)
    assert info.value.failures[0].error_type == "RecipeResultError"
    assert "return state" in info.value.failures[0].message


def test_unpicklable_attribute_is_named_and_leaves_no_files(exp_dir):
    class Locky(dg.Recipe):
        def run(self, state):
            state.lock = (step for step in range(3))  # generators cannot be pickled
            return state

    exp, root = build(exp_dir)
    child = Locky()(root)
    with pytest.raises(dg.RunError) as info:
        exp.run(progress=False)
    failure = info.value.failures[0]
    assert failure.error_type == "SerializationError"
    assert "attribute `lock`" in failure.message and "generator" in failure.message
    store = dg.store.DirectoryStore(exp_dir)
    assert store.read_record(child.sha()) is None
    assert store.read_failure(child.sha()).error.type == "SerializationError"
    files = [path.name for path in exp_dir.rglob("*") if path.is_file()]
    assert not [name for name in files if name.startswith(child.sha())]  # no payload file
    assert not [name for name in files if name.startswith(".")]  # no temporary file


def test_get_computes_only_the_path(memory, call_log):
    exp, root = build(memory)
    a = Add(1)(root)
    b = Multiply(3)(a)
    Multiply(100)(a)
    Add(7)(root)
    state = b.get()
    assert isinstance(state, CounterState)
    assert state.value == 6
    assert not state.slim_loaded
    assert state.sha() == b.sha()
    assert read_log(call_log) == ["root", "add:1", "mul:3"]
    again = b.get()  # stored now: loaded, not recomputed
    assert again.value == 6 and again is not state
    assert read_log(call_log) == ["root", "add:1", "mul:3"]


def test_get_of_a_failing_state_raises(memory):
    exp, root = build(memory)
    bad = Boom()(root)
    with pytest.raises(dg.RunError, match="boom on purpose"):
        bad.get()


def test_keyboard_interrupt_leaves_a_consistent_store(exp_dir, call_log):
    class Interrupt(dg.Recipe):
        VERSION = "1"
        armed = True

        def run(self, state):
            if Interrupt.armed:
                raise KeyboardInterrupt
            return state

    exp, root = build(exp_dir)
    a = Add(1)(root)
    Interrupt()(a)
    Add(2)(root)
    with pytest.raises(KeyboardInterrupt):
        exp.run(progress=False)
    tree = dg.Experiment.restore(exp_dir).graph
    assert set(tree.node_map) == {root.sha(), a.sha()}
    Interrupt.armed = False
    exp, root = build(exp_dir)
    a = Add(1)(root)
    Interrupt()(a)
    Add(2)(root)
    report = exp.run(progress=False)
    assert report.computed == 2 and report.cached == 2


def test_functions_record_results_and_are_reused(memory, call_log):
    calls = []

    def value_of(state):
        calls.append(state.sha())
        return {"value": state.value, "double": 2 * state.value}

    exp, root = build(memory, start=3)
    a = Add(1)(root)
    assert dg.Function(value_of)(a) is a
    report = exp.run(progress=False)
    assert report.functions == 1
    tree = dg.Experiment.restore(memory).graph
    assert tree.node(a.sha()).dagger.results["value_of"] == {"value": 4, "double": 8}

    exp, root = build(memory, start=3)
    a = Add(1)(root)
    dg.Function(value_of)(a)
    report = exp.run(progress=False)
    assert report.functions == 0 and calls == [a.sha()]


def test_function_failure_is_reported_and_does_not_stop_the_tree(memory):
    def broken(state):
        raise ZeroDivisionError("nope")

    exp, root = build(memory)
    a = Add(1)(root)
    dg.Function(broken)(a)
    Multiply(2)(a)
    with pytest.raises(dg.RunError) as info:
        exp.run(progress=False)
    assert info.value.failures[0].function == "broken"
    assert info.value.report.computed == 3


def test_a_run_report_counts_and_times(memory):
    exp, root = build(memory)
    Add(1)(root)
    report = exp.run(progress=False)
    assert report.seconds > 0
    assert report.computed_ids == [root.sha(), Add(1)(root).sha()]
    assert "2 computed" in str(report)


def test_progress_bar_only_when_asked_or_on_a_terminal(exp_dir, capsys):
    exp, root = build(exp_dir)
    Add(1)(root)
    exp.run()  # stderr is not a terminal under pytest: no bar
    assert "dagger" not in capsys.readouterr().err
    exp, root = build(exp_dir)
    Add(2)(root)
    exp.run(progress=True)
    assert "dagger" in capsys.readouterr().err


def test_siblings_of_a_pruned_model_get_independent_copies(exp_dir):
    """A pruned module's weight is not a graph leaf, so copy.deepcopy refuses it."""
    import torch
    from torch.nn.utils import prune

    class ModelState(dg.ExperimentState):
        def initialize_state(self, **arguments):
            torch.manual_seed(0)
            self.model = torch.nn.Linear(300, 300)

    class Prune(dg.Recipe):
        def run(self, state):
            prune.l1_unstructured(state.model, "weight", amount=0.5)
            return state

    class Mark(dg.Recipe):
        def __init__(self, value):
            self.value = value

        def run(self, state):
            with torch.no_grad():
                state.model.weight_orig[0, 0] = self.value
            return state

    exp = dg.Experiment(exp_dir, ModelState)
    pruned = Prune()(exp.spawn_new_tree())
    marks = [Mark(value)(pruned) for value in (1.0, 2.0, 3.0)]
    assert exp.run(progress=False).computed == 5
    assert [m.get().model.weight_orig[0, 0].item() for m in marks] == [1.0, 2.0, 3.0]
    original = pruned.get().model.weight_orig[0, 0].item()
    assert original not in (1.0, 2.0, 3.0)


def test_ids_stay_the_same_after_a_run_in_the_same_session(exp_dir):
    """A state class defined in a notebook is stored by value; running must not alter it."""

    class NotebookState(dg.ExperimentState):  # local: pickled by value, like __main__
        def initialize_state(self, **arguments):
            self.value = arguments["start"]
            self.history = []

    def build():
        exp = dg.Experiment(exp_dir, NotebookState)
        root = exp.spawn_new_tree(start=1)
        for amount in (1, 2, 3):  # siblings: the parent is copied for the first two
            Add(amount)(root)
        return exp, root

    exp, root = build()
    first_id = root.sha()
    assert exp.run(progress=False).computed == 4
    exp, root = build()
    assert root.sha() == first_id
    assert exp.run(progress=False).computed == 0
