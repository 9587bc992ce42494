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
    assert "`state.lock` is a generator" in failure.message
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


# -- what a run prints outside a terminal (issue 14, items 9 and 10) ------------------------------

PROGRESS_SCRIPT = """
import sys
import dagger as dg
from helpers import Add, CounterState

exp = dg.Experiment("exp", CounterState)
root = exp.spawn_new_tree(start=1)
dg.Function(lambda state: state.value, name="value")(Add(2)(Add(1)(root)))
exp.run({options})
print("done")
"""


def run_script(tmp_path, env, text):
    import subprocess
    import sys

    script = tmp_path / "study.py"
    script.write_text(text)
    return subprocess.run(
        [sys.executable, str(script)],
        cwd=tmp_path,
        env=env,
        capture_output=True,  # stderr is a pipe, as under nohup or in a Slurm log
        text=True,
        timeout=120,
    )


def test_outside_a_terminal_each_computed_state_is_a_log_line(tmp_path, subprocess_env):
    """A plain script (no logging configured) whose stderr is not a terminal: one line per
    computed state with its id, recipe and seconds, one per Function result, summaries (every
    line here: log_interval=0) and the report as the last line."""
    process = run_script(tmp_path, subprocess_env, PROGRESS_SCRIPT.format(options="log_interval=0"))
    assert process.returncode == 0, process.stderr
    tree = dg.Experiment.restore(tmp_path / "exp").graph
    lines = process.stderr.splitlines()
    for state in tree.nodes:
        what = "root" if state.recipe is None else f"Add(amount={state.recipe.params['amount']})"
        assert any(f"computed {state.sha()[:12]} {what} in " in line for line in lines), lines
    assert any(f"Function value on {tree.leaves[0].sha()[:12]}" in line for line in lines)
    assert sum("of 4 done" in line for line in lines) >= 4  # 3 states and 1 Function result
    assert "run finished: 3 computed, 0 cached, 0 failed" in lines[-1]
    assert all(" dagger: " in line for line in lines)  # one handler, one format, no repeats

    again = run_script(tmp_path, subprocess_env, PROGRESS_SCRIPT.format(options=""))
    assert again.returncode == 0, again.stderr
    assert "computed" not in again.stderr  # nothing to do, nothing to say


def test_progress_lines_follow_the_logging_configuration(tmp_path, subprocess_env):
    """Where the script configured logging, the lines go through it (and its level applies);
    progress=False prints nothing."""
    configured = "import logging\nlogging.basicConfig(level=logging.WARNING)\n"
    process = run_script(tmp_path, subprocess_env, configured + PROGRESS_SCRIPT.format(options=""))
    assert process.returncode == 0, process.stderr
    assert process.stderr == ""
    verbose = (
        "import logging\nlogging.basicConfig(level=logging.INFO, format='%(name)s %(message)s')\n"
    )
    process = run_script(
        tmp_path,
        subprocess_env,
        verbose + PROGRESS_SCRIPT.format(options="").replace('"exp"', '"exp2"'),
    )
    assert process.returncode == 0, process.stderr
    assert process.stderr.count("dagger.progress computed ") == 3
    silent = run_script(
        tmp_path,
        subprocess_env,
        PROGRESS_SCRIPT.format(options="progress=False").replace('"exp"', '"exp3"'),
    )
    assert silent.returncode == 0 and silent.stderr == ""


FAILING_SCRIPT = """
import dagger as dg
from helpers import Add, Boom, CounterState

exp = dg.Experiment("exp", CounterState)
root = exp.spawn_new_tree(start=1)
Add(1)(Boom()(root))
dg.Function(lambda state: 1 / 0, name="ratio")(Add(2)(root))
try:
    exp.run()
except dg.RunError as error:
    print(error)
    print("report:", error.report)
"""


def test_failures_are_printed_shortened_counted_apart_and_kept_in_full(
    tmp_path, subprocess_env, exp_dir
):
    """At the end of a run each failure is printed with a shortened traceback (the user's
    frames, not dagger's); the message counts failed states and failed Functions apart and
    points to a command that prints the full tracebacks, which are stored."""
    import subprocess
    import sys

    process = run_script(tmp_path, subprocess_env, FAILING_SCRIPT)
    assert process.returncode == 0, process.stderr
    assert 'raise ValueError("boom on purpose")' in process.stderr
    assert "helpers.py" in process.stderr and "in run" in process.stderr
    assert "return 1 / 0" in process.stderr or "1 / 0" in process.stderr
    assert "dagger/runner.py" not in process.stderr  # shortened: dagger's own frames left out
    message = process.stdout
    assert "1 state(s) failed (their 1 descendant(s) were skipped)" in message
    assert "1 Function(s) failed" in message
    assert f"`dagger failures {exp_dir}` prints them" in message
    assert "failed.json" not in message
    assert "report: 2 computed, 0 cached, 1 failed, 1 skipped, 0 function results, " in message
    assert "1 function(s) failed" in message

    full = subprocess.run(
        [sys.executable, "-m", "dagger", "failures", str(exp_dir)],
        cwd=tmp_path,
        env=subprocess_env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert full.returncode == 0, full.stderr
    assert full.stdout.count("== ") == 2
    assert "Boom(fail=True) failed" in full.stdout and "Function `ratio`" in full.stdout
    assert "dagger/runner.py" in full.stdout  # the full traceback, dagger's frames included
    assert "ZeroDivisionError: division by zero" in full.stdout


class ReadsAnother(dg.Recipe):
    """Gets another state of the tree while it runs (``promise.get()`` inside ``run``)."""

    PROPERTIES = []

    def __init__(self, other):
        self._other = other

    def run(self, state):
        state.value += self._other.get().value
        return state


def test_a_failure_keeps_its_first_cause(exp_dir):
    """A recipe that got another state whose recipe failed fails with that first cause (not
    with the RunError that carried it); the RunError is still named, and the whole chain is in
    the stored traceback."""
    exp, root = build(exp_dir)
    broken = Boom()(root)
    reader = ReadsAnother(broken)(root)
    with pytest.raises(dg.RunError) as caught:
        exp.run(progress=False)
    failure = next(f for f in caught.value.failures if f.state_id == reader.sha())
    assert (failure.error_type, failure.message) == ("ValueError", "boom on purpose")
    assert failure.raised.startswith("RunError: 1 failure(s)")
    error = dg.Experiment.restore(exp_dir).graph.node(reader.sha()).dagger.error
    assert (error.type, error.message) == ("ValueError", "boom on purpose")
    assert "RunError" in error.traceback and "boom on purpose" in error.traceback
