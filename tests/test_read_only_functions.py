"""Functions are read-only, checked (issue 16, item 4): a Function that changes the state it
reads is reported, recorded with its result, shown in tables, and undone before anything else
sees the state."""

from __future__ import annotations

import subprocess
import sys
from concurrent.futures import ProcessPoolExecutor

import numpy as np
import pytest
import torch
from helpers import (
    Add,
    CounterState,
    Multiply,
    NetState,
    SeededTrain,
    append_to_history,
    read_value,
)

import dagger as dg
from dagger.record import Notes, ResultEntry

BATCH = torch.linspace(-1, 1, 32).reshape(8, 4)


def nudge_weight(state):
    """In place, under no_grad: the kind of edit a careless evaluation makes."""
    with torch.no_grad():
        state.model[0].weight[0, 0] += 1.0
    return 0.0


def evaluate_in_train_mode(state):
    """A forgotten model.eval(): the batch-norm forward updates its running statistics."""
    state.model.train()
    with torch.no_grad():
        return float(state.model(BATCH).sum())


def evaluate(state):
    """Read-only: eval mode (as stored), no gradients."""
    with torch.no_grad():
        return float(state.model(BATCH).sum())


def first_weight(state):
    return float(state.model[0].weight[0, 0].detach())


def step_optimizer(state):
    """Training inside a Function: weights and momentum buffers change."""
    loss = state.model(BATCH).pow(2).mean()
    loss.backward()
    state.optimizer.step()
    return float(loss.detach())


def nudge_then_fail(state):
    nudge_weight(state)
    raise RuntimeError("failed after changing the weights")


def tensors(state):
    return {
        **{f"model.{k}": v.clone() for k, v in state.model.state_dict().items()},
        **{
            f"optimizer.{i}.{k}": v.clone()
            for i, per in state.optimizer.state_dict()["state"].items()
            for k, v in per.items()
        },
    }


def assert_same_tensors(first, second):
    assert first.keys() == second.keys()
    for key in first:
        assert torch.equal(first[key], second[key]), key


def clean_child():
    """What SeededTrain(1) gives from an untouched NetState(seed=0): no Function ran."""
    exp = dg.Experiment(dg.MemoryStore(), NetState)
    child = SeededTrain(1)(exp.spawn_new_tree(seed=0))
    exp.run(progress=False)
    return tensors(child.get())


def test_an_in_place_weight_change_is_flagged_recorded_and_shown(
    exp_dir, dagger_warnings, subprocess_env, tmp_path
):
    exp = dg.Experiment(exp_dir, NetState)
    root = exp.spawn_new_tree(seed=0)
    dg.Function(nudge_weight)(root)
    report = exp.run(progress=False)

    assert report.mutated == 1
    [mutation] = report.mutations
    assert (mutation.state_id, mutation.function, mutation.paths) == (
        root.sha(),
        "nudge_weight",
        ("model.0.weight",),
    )
    assert ", 1 Function changed the state it read in " in str(report)
    assert "Function `nudge_weight` changed" in dagger_warnings.text
    assert "model.0.weight" in dagger_warnings.text

    # Recorded with the result, in the state's notes, and read back by a restore.
    notes = dg.store.DirectoryStore(exp_dir).read_notes(root.sha())
    assert notes.results["nudge_weight"].mutated == ("model.0.weight",)
    tree = dg.Experiment.restore(exp_dir).graph
    assert tree.root.dagger.results.entry("nudge_weight").mutated == ("model.0.weight",)
    frame = tree.nodes.to_dataframe()
    assert frame["mutated.nudge_weight"].tolist() == [["model.0.weight"]]
    assert frame["result.nudge_weight"].tolist() == [0.0]
    shown = subprocess.run(
        [sys.executable, "-m", "dagger", "show", str(exp_dir)],
        cwd=tmp_path,
        env=subprocess_env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert shown.returncode == 0, shown.stderr
    assert "nudge_weight: CHANGED THE STATE (model.0.weight)" in shown.stdout


def test_a_batch_norm_forward_in_training_mode_is_flagged(memory):
    exp = dg.Experiment(memory, NetState)
    root = exp.spawn_new_tree(seed=0)
    dg.Function(evaluate_in_train_mode)(root)
    report = exp.run(progress=False)
    [mutation] = report.mutations
    assert mutation.paths == (
        "model.1.num_batches_tracked",
        "model.1.running_mean",
        "model.1.running_var",
        "model.training",
    )
    # The stored state keeps its statistics and its mode.
    stored = root.get()
    assert not stored.model.training
    assert stored.model[1].num_batches_tracked.item() == 0


def test_a_read_only_function_is_not_flagged(exp_dir, dagger_warnings):
    exp = dg.Experiment(exp_dir, NetState)
    root = exp.spawn_new_tree(seed=0)
    dg.Function(evaluate)(root)
    dg.Function(first_weight)(root)
    report = exp.run(progress=False)
    assert (report.mutated, report.mutations, report.functions) == (0, [], 2)
    assert "changed" not in str(report)
    assert "changed" not in dagger_warnings.text
    tree = dg.Experiment.restore(exp_dir).graph
    # Checked and found unchanged: an empty list, not "unchecked" (None).
    assert tree.root.dagger.results.entry("evaluate").mutated == ()
    assert not any(c.startswith("mutated.") for c in tree.nodes.to_dataframe().columns)


def test_the_change_never_reaches_children_or_later_functions_of_the_same_run(memory):
    exp = dg.Experiment(memory, NetState)
    root = exp.spawn_new_tree(seed=0)
    dg.Function(nudge_weight)(root)
    dg.Function(first_weight)(root)  # runs after the mutating one, on the same state
    child = SeededTrain(1)(root)  # computed from the root in the same run, after both
    report = exp.run(progress=False)

    assert [m.function for m in report.mutations] == ["nudge_weight"]
    untouched = NetState.__new__(NetState)
    untouched.seed = 0
    untouched.initialize_state(seed=0)
    results = memory.read_notes(root.sha()).results
    assert results["first_weight"].value == first_weight(untouched)
    assert results["first_weight"].mutated == ()
    assert_same_tensors(tensors(child.get()), clean_child())
    assert_same_tensors(tensors(root.get()), tensors(untouched))


def test_a_function_that_fails_after_changing_the_state_is_flagged_and_undone(memory):
    exp = dg.Experiment(memory, NetState)
    root = exp.spawn_new_tree(seed=0)
    dg.Function(nudge_then_fail)(root)
    child = SeededTrain(1)(root)
    with pytest.raises(dg.RunError) as info:
        exp.run(progress=False)
    report = info.value.report
    assert [f.function for f in report.failures] == ["nudge_then_fail"]
    assert [(m.function, m.paths) for m in report.mutations] == [
        ("nudge_then_fail", ("model.0.weight",))
    ]
    entry = memory.read_notes(root.sha()).results["nudge_then_fail"]
    assert entry.failed and entry.mutated == ("model.0.weight",)
    assert_same_tensors(tensors(child.get()), clean_child())


def test_training_inside_a_function_is_flagged_on_a_stored_state_in_a_later_run(exp_dir):
    """Not listed in the issue: the optimizer's state changes too, and the state was loaded
    from the store (stored by an earlier run) rather than just computed."""
    exp = dg.Experiment(exp_dir, NetState)
    exp.spawn_new_tree(seed=0)
    exp.run(progress=False)
    payloads = {path: path.read_bytes() for path in (exp_dir / "states").glob("*.pkl")}

    exp = dg.Experiment(exp_dir, NetState)
    root = exp.spawn_new_tree(seed=0)
    dg.Function(step_optimizer)(root)
    child = SeededTrain(1)(root)
    report = exp.run(progress=False)
    [mutation] = report.mutations
    assert {"model.0.weight", "model.2.bias"} <= set(mutation.paths)
    assert any(path.startswith("optimizer.state[") for path in mutation.paths)
    assert_same_tensors(tensors(child.get()), clean_child())
    assert all(path.read_bytes() == data for path, data in payloads.items())  # not replaced


def test_a_list_grown_in_place_is_flagged_and_children_see_the_stored_list(memory):
    """Not listed in the issue: plain Python containers, not tensors."""
    exp = dg.Experiment(memory, CounterState)
    root = exp.spawn_new_tree(start=1)
    a = Add(1)(root)
    dg.Function(append_to_history)(a)
    dg.Function(read_value)(a)
    b = Multiply(3)(a)
    report = exp.run(progress=False)
    assert [(m.function, m.paths) for m in report.mutations] == [
        ("append_to_history", ("history[2]", "history[2][0]", "history[2][1]"))
    ]
    assert b.get().history == [("root", 1), ("add", 1), ("mul", 3)]
    assert memory.read_notes(a.sha()).results["read_value"].mutated == ()


def test_a_write_through_a_numpy_view_is_flagged(memory):
    class ArrayState(dg.ExperimentState):
        def initialize_state(self, **arguments):
            self.array = np.zeros((4, 4))

    def write_through_view(state):
        view = state.array[1:3]
        view[0, 0] = 7.0
        return 0

    exp = dg.Experiment(memory, ArrayState)
    root = exp.spawn_new_tree()
    dg.Function(write_through_view)(root)
    report = exp.run(progress=False)
    assert [m.paths for m in report.mutations] == [("array",)]
    assert root.get().array.sum() == 0.0


def test_mutations_come_back_from_executor_workers(exp_dir):
    exp = dg.Experiment(exp_dir, CounterState)
    root = exp.spawn_new_tree(start=1)
    a = Add(1)(root)
    dg.Function(append_to_history)(a)
    Multiply(3)(a)
    Multiply(5)(a)
    with ProcessPoolExecutor(2) as pool:
        report = exp.run(progress=False, executor=pool)
    assert [(m.state_id, m.function) for m in report.mutations] == [(a.sha(), "append_to_history")]
    assert report.mutated == 1
    restored = dg.Experiment.restore(exp_dir)
    node = restored.graph.node(a.sha())
    assert node.dagger.results.entry("append_to_history").mutated == (
        "history[2]",
        "history[2][0]",
        "history[2][1]",
    )
    children = node.dagger.children
    assert len(children) == 2
    for child in children:
        assert ("function", 0) not in restored.load_state(child.sha()).history


def test_the_check_can_be_turned_off(memory, dagger_warnings):
    exp = dg.Experiment(memory, NetState)
    root = exp.spawn_new_tree(seed=0)
    dg.Function(nudge_weight)(root)
    report = exp.run(progress=False, check_read_only=False)
    assert (report.mutated, report.mutations) == (0, [])
    assert memory.read_notes(root.sha()).results["nudge_weight"].mutated is None
    assert "changed" not in dagger_warnings.text


def test_results_recorded_before_the_check_still_parse():
    old = {"code": "c", "value": 1, "seconds": 0.5, "created": "2024-01-01T00:00:00+00:00"}
    entry = ResultEntry.from_json(old)
    assert entry.mutated is None
    assert "mutated" not in entry.to_json()
    checked = entry.with_mutated(["model.fc.weight"])
    assert ResultEntry.from_json(checked.to_json()) == checked
    assert ResultEntry.from_json(entry.with_mutated([]).to_json()).mutated == ()
    notes = Notes.from_json({"tags": ["a"], "results": {"f": old}})
    assert notes.audit is None and notes.results["f"].mutated is None
