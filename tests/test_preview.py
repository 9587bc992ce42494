"""Plan before running (issue 16, item 5): ``exp.plan()`` and ``exp.run(dry_run=True)`` say what a
run would do, with times estimated from recorded durations, and do none of it."""

from __future__ import annotations

import statistics
import subprocess
import sys
import textwrap
import threading

import pytest
from helpers import Add, Boom, CounterState, Multiply, Sleep, read_log, read_value

import dagger as dg
from dagger.plan_report import PlanReport


def double_value(state):
    return state.value * 2


def define(exp, *, extra=True):
    """root -> a=Add(1) [read_value] -> {Multiply(3), Boom() -> Add(2)};
    root -> Sleep(0.01); with ``extra``: root -> Sleep(0.02), root -> Add(7), a [double_value]."""
    root = exp.spawn_new_tree(start=1)
    a = dg.Function(read_value)(Add(1)(root))
    nodes = {"root": root, "a": a}
    nodes["boom"] = Boom()(a)
    nodes["below_boom"] = Add(2)(nodes["boom"])
    nodes["sleep1"] = Sleep(0.01)(root)
    if extra:
        dg.Function(double_value)(a)
        nodes["mul"] = Multiply(3)(a)
        nodes["sleep2"] = Sleep(0.02)(root)
        nodes["add7"] = Add(7)(root)
    return nodes


def run_first(exp_dir):
    exp = dg.Experiment(exp_dir, CounterState)
    nodes = define(exp, extra=False)
    with pytest.raises(dg.RunError):
        exp.run(progress=False)
    return nodes


def snapshot(folder):
    """Every file and folder under ``folder``: name, size and modification time."""
    if not folder.exists():
        return None
    return {
        str(path.relative_to(folder)): (path.is_dir(), path.stat().st_size, path.stat().st_mtime_ns)
        for path in sorted(folder.rglob("*"))
    }


def test_plan_shows_each_action_functions_and_estimates_from_recorded_durations(exp_dir):
    run_first(exp_dir)
    tree = dg.Experiment.restore(exp_dir).graph
    recorded = {
        name: statistics.median(
            node.dagger.seconds for node in tree.nodes if node.recipe and node.recipe.name == name
        )
        for name in ("Add", "Sleep")
    }

    exp = dg.Experiment(exp_dir, CounterState)
    nodes = define(exp)
    plan = exp.plan()

    assert isinstance(plan, PlanReport)
    # Run order: depth-first, children in the order they were defined.
    expected = [
        ("root", "stored", (), None),
        ("a", "stored", ("double_value",), None),  # read_value is recorded already
        ("boom", "failed before", (), None),  # tried again, never recorded: unknown
        ("below_boom", "skipped", (), None),
        ("mul", "compute", (), None),  # no Multiply was ever recorded
        ("sleep1", "stored", (), None),
        ("sleep2", "compute", (), recorded["Sleep"]),
        ("add7", "compute", (), recorded["Add"]),
    ]
    by_id = {promise.sha(): name for name, promise in nodes.items()}
    assert [
        (by_id[row.state_id], row.action, row.functions, row.estimated_seconds) for row in plan.rows
    ] == expected
    assert [row.recipe for row in plan.rows][:3] == [
        "CounterState (root)",
        "Add(amount=1)",
        "Boom(fail=True)",
    ]
    assert plan.rows[6].recipe_class == "helpers.Sleep"
    assert plan.estimated_seconds == recorded["Sleep"] + recorded["Add"]
    assert (plan.unknown, plan.functions) == (2, 1)
    assert plan.summary().startswith(
        "3 to compute, 3 stored, 1 failed before, 1 skipped, 1 Function to run, estimated ~"
    )
    assert plan.summary().endswith(" + 2 of unknown duration")
    text = str(plan)
    assert text.splitlines()[0].split() == ["state", "recipe", "action", "estimate", "functions"]
    assert "double_value" in text and "skipped" in text


def test_dry_run_returns_the_plan_and_writes_reads_and_computes_nothing(exp_dir, call_log):
    run_first(exp_dir)
    before = snapshot(exp_dir)
    calls = read_log(call_log)

    exp = dg.Experiment(exp_dir, CounterState)
    define(exp)
    plan = exp.plan()
    dry = exp.run(dry_run=True)

    assert isinstance(dry, PlanReport) and dry.rows == plan.rows
    assert snapshot(exp_dir) == before  # every file and folder, with its modification time
    assert read_log(call_log) == calls  # no recipe ran
    # The run afterwards does what the plan said.
    with pytest.raises(dg.RunError) as info:
        exp.run(progress=False)
    report = info.value.report
    assert (report.computed, report.failed, report.skipped, report.functions) == (3, 1, 1, 1)


def test_plan_loads_no_state(memory):
    exp = dg.Experiment(memory, CounterState)
    define(exp, extra=False)
    with pytest.raises(dg.RunError):
        exp.run(progress=False)
    loads, saves, notes = memory.loads, memory.saves, dict(memory.notes)
    exp = dg.Experiment(memory, CounterState)
    define(exp)
    exp.plan()
    assert (memory.loads, memory.saves, memory.notes) == (loads, saves, notes)


def test_plan_of_a_folder_never_run_creates_nothing(exp_dir, call_log):
    exp = dg.Experiment(exp_dir, CounterState)
    define(exp, extra=False)
    plan = exp.run(dry_run=True)
    assert [row.action for row in plan.rows] == ["compute"] * 5
    assert plan.summary().endswith("no estimate (5 of unknown duration)")
    assert not exp_dir.exists()
    assert read_log(call_log) == []


def test_plan_leaves_a_damaged_state_for_the_run_to_quarantine(exp_dir):
    # Payloads as files of their own (not inside the log), so that one can go missing.
    exp = dg.Experiment(dg.store.DirectoryStore(exp_dir, inline_limit=0), CounterState)
    nodes = define(exp, extra=False)
    with pytest.raises(dg.RunError):
        exp.run(progress=False)
    [payload] = (exp_dir / "payloads").glob(f"{nodes['sleep1'].sha()}.*.pkl")
    payload.unlink()
    before = snapshot(exp_dir)
    exp = dg.Experiment(exp_dir, CounterState)
    define(exp, extra=False)
    actions = {row.state_id: row.action for row in exp.plan().rows}
    assert actions[nodes["sleep1"].sha()] == "compute"  # its record stays, its content is gone
    assert snapshot(exp_dir) == before  # not moved to quarantine/ by the plan


def test_plan_takes_no_lock(exp_dir, subprocess_env, tmp_path):
    """Another process holds the experiment's lock and the lock of a state the plan lists to
    compute: the plan does not wait for them."""
    nodes = run_first(exp_dir)
    exp = dg.Experiment(exp_dir, CounterState)
    nodes = define(exp)
    ready, release = tmp_path / "ready", tmp_path / "release"
    holder = tmp_path / "hold.py"
    holder.write_text(
        textwrap.dedent(
            f"""
            import pathlib, time
            from dagger.store import DirectoryStore
            store = DirectoryStore({str(exp_dir)!r})
            with store.experiment_lock(), store.lock({nodes["mul"].sha()!r}):
                pathlib.Path({str(ready)!r}).touch()
                while not pathlib.Path({str(release)!r}).exists():
                    time.sleep(0.05)
            """
        )
    )
    process = subprocess.Popen([sys.executable, str(holder)], env=subprocess_env)
    try:
        while not ready.exists():
            assert process.poll() is None, "the lock holder exited"
            threading.Event().wait(0.05)
        plans: list[PlanReport] = []
        planner = threading.Thread(target=lambda: plans.append(exp.plan()), daemon=True)
        planner.start()
        planner.join(timeout=120)  # a liveness bound: it would wait forever on a lock
        assert not planner.is_alive(), "plan() waited for a lock"
        assert plans[0].count("compute") == 3
    finally:
        release.touch()
        process.wait(timeout=60)


def test_plan_of_a_restored_experiment_grown_further(exp_dir):
    run_first(exp_dir)
    restored = dg.Experiment.restore(exp_dir)
    leaf = restored.graph.node(
        next(n.sha() for n in restored.graph.nodes if n.recipe and n.recipe.name == "Sleep")
    )
    new = Multiply(2)(leaf)
    plan = restored.plan()
    assert [(row.state_id, row.action) for row in plan.rows] == [
        (leaf.sha(), "stored"),
        (new.sha(), "compute"),
    ]
    assert plan.rows[0].recipe == "stored state"


def test_plan_checks_the_state_class_and_the_tree(exp_dir):
    run_first(exp_dir)

    class Other(dg.ExperimentState):
        PROPERTIES = ["start"]

        def initialize_state(self, **arguments):
            self.value = 0

    before = snapshot(exp_dir)
    other = dg.Experiment(exp_dir, Other)
    other.spawn_new_tree(start=1)
    with pytest.raises(dg.StateClassMismatchError, match="holds states of class"):
        other.plan()
    with pytest.raises(dg.ExperimentDefinitionError, match="Nothing to plan"):
        dg.Experiment(exp_dir, CounterState).plan()
    assert snapshot(exp_dir) == before


def test_plan_dataframe_lists_functions(exp_dir):
    run_first(exp_dir)
    exp = dg.Experiment(exp_dir, CounterState)
    nodes = define(exp)
    frame = exp.plan().to_dataframe()
    assert list(frame.columns) == [
        "state_id",
        "recipe",
        "recipe_class",
        "action",
        "estimated_seconds",
        "functions",
    ]
    row = frame[frame.state_id == nodes["a"].sha()].iloc[0]
    assert (row.action, row.functions) == ("stored", ["double_value"])
