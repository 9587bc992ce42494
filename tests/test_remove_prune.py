"""The store's primitives for curating it (issue 16, items 1 and 2): removing states with their
subtrees, and pruning a state's payload while keeping its record.

Both are Store protocol operations (the directory store and the in-memory one); the commands
built on them (``exp.remove``, ``dagger rm``, ``dagger prune``) come later.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
import time

import pytest
from helpers import Add, CounterState, Multiply, read_log

import dagger as dg
from dagger.store import DirectoryStore


def build(target):
    exp = dg.Experiment(target, CounterState)
    root = exp.spawn_new_tree(start=1)
    a = Add(1)(root)
    b, c = Multiply(3)(a), Multiply(5)(a)
    d = Add(10)(b)
    e = Add(2)(root)
    return exp, {"root": root, "a": a, "b": b, "c": c, "d": d, "e": e}


@pytest.fixture(params=["directory", "memory"])
def target(request, exp_dir):
    if request.param == "memory":
        return dg.MemoryStore()
    return DirectoryStore(exp_dir, inline_limit=0)  # payloads in files: their removal shows


def test_remove_takes_the_subtree_and_a_run_recomputes_it(target, call_log):
    exp, nodes = build(target)
    exp.run(progress=False)
    ids = {name: promise.sha() for name, promise in nodes.items()}
    removed = target.remove([ids["a"]])
    assert removed == [ids["a"], ids["b"], ids["d"], ids["c"]]  # parents before children
    table = target.snapshot()
    assert set(table.ids) == {ids["root"], ids["e"]}
    assert target.read_record(ids["b"]) is None and not target.has_record(ids["d"])
    if isinstance(target, DirectoryStore):
        files = {path.name.split(".")[0] for path in (target.directory / "payloads").iterdir()}
        assert files == {ids["root"], ids["e"]}  # their payload files are gone
        assert dg.verify(target.directory).ok
        tree = dg.Experiment.restore(target.directory).graph
        assert set(tree.node_map) == {ids["root"], ids["e"]}
    before = len(read_log(call_log))
    exp, nodes = build(target)
    assert exp.run(progress=False).computed == 4
    assert sorted(read_log(call_log)[before:]) == ["add:1", "add:10", "mul:3", "mul:5"]
    assert nodes["d"].get().value == 16


def test_remove_refuses_to_orphan_children_and_unknown_ids(target):
    exp, nodes = build(target)
    exp.run(progress=False)
    with pytest.raises(dg.ExperimentDefinitionError, match="would orphan them"):
        target.remove([nodes["b"].sha()], descendants=False)
    assert target.has_record(nodes["b"].sha())
    assert target.remove([nodes["d"].sha()], descendants=False) == [nodes["d"].sha()]
    with pytest.raises(dg.StateNotFoundError, match="nothing was removed"):
        target.remove(["f" * 64])


def test_prune_keeps_the_record_and_recomputes_only_on_demand(target, call_log):
    exp, nodes = build(target)
    exp.run(progress=False)
    ids = {name: promise.sha() for name, promise in nodes.items()}
    assert target.prune([ids["b"], ids["b"], "0" * 64]) == [ids["b"]]
    table = target.snapshot()
    assert str(table.status_of(ids["b"])) == "pruned"
    assert target.read_record(ids["b"]).recipe.params == {"factor": 3}  # the record stays
    with pytest.raises(dg.CorruptStateError, match="was pruned"):
        target.load(ids["b"])
    if isinstance(target, DirectoryStore):
        assert not list((target.directory / "payloads").glob(f"{ids['b']}.*"))
        tree = dg.Experiment.restore(target.directory).graph
        pruned = tree.node(ids["b"])
        assert pruned.dagger.status == "pruned" and str(tree.lineage(pruned)).endswith(
            "Multiply(factor=3)"
        )
        assert tree.nodes.to_dataframe().set_index("id").loc[ids["b"], "status"] == "pruned"
        assert dg.verify(target.directory).ok
    # a rerun of the same tree needs nothing from it: nothing is computed
    before = len(read_log(call_log))
    exp, nodes = build(target)
    assert exp.run(progress=False).computed == 0
    assert read_log(call_log)[before:] == []
    # growing below it needs its state: it is computed again, once
    exp, nodes = build(target)
    Multiply(7)(nodes["b"])
    report = exp.run(progress=False)
    assert read_log(call_log)[before:] == ["mul:3", "mul:7"]
    assert report.computed == 2
    assert str(target.snapshot().status_of(ids["b"])) == "done"
    assert nodes["b"].get().value == 6


REMOVER = textwrap.dedent(
    """
    import sys
    from dagger.store import DirectoryStore

    store = DirectoryStore(sys.argv[1])
    print(len(store.remove(sys.argv[2:])))
    """
)

SLOW_RUN = textwrap.dedent(
    """
    import sys
    import dagger as dg
    from helpers import Add, CounterState, Multiply, Sleep

    exp = dg.Experiment(sys.argv[1], CounterState)
    root = exp.spawn_new_tree(start=1)
    for amount in range(12):
        Multiply(2)(Sleep(0.15)(Add(amount)(root)))
    exp.run(progress=False)
    """
)


def test_a_removal_during_a_run_corrupts_nothing(tmp_path, subprocess_env, call_log):
    exp_dir = tmp_path / "exp"
    (tmp_path / "run.py").write_text(SLOW_RUN)
    (tmp_path / "remove.py").write_text(REMOVER)
    env = {**subprocess_env, "DAGGER_TEST_LOG": str(call_log)}
    run = subprocess.Popen(
        [sys.executable, "run.py", str(exp_dir)], cwd=tmp_path, env=env, stderr=subprocess.PIPE
    )
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and read_log(call_log).count("sleep:0.15") < 4:
        time.sleep(0.02)
    # remove the first branches (the run is past them, or in them) while it goes on
    branch_ids = DirectoryStore(exp_dir).snapshot()
    firsts = [
        sha
        for row, sha in enumerate(branch_ids.ids)
        if branch_ids.recipe_name(row) == "Add" and branch_ids.params[row]["amount"] < 3
    ]
    removed = subprocess.run(
        [sys.executable, "remove.py", str(exp_dir), *firsts],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
    )
    assert removed.returncode == 0, removed.stderr
    assert int(removed.stdout) >= len(firsts)
    _, stderr = run.communicate(timeout=120)
    assert run.returncode == 0, stderr.decode()
    assert dg.verify(exp_dir).ok
    # a rerun computes exactly what the removal took and the run did not put back
    table = DirectoryStore(exp_dir).snapshot()
    before = len(read_log(call_log))
    rerun = subprocess.run([sys.executable, "run.py", str(exp_dir)], cwd=tmp_path, env=env)
    assert rerun.returncode == 0
    after = DirectoryStore(exp_dir).snapshot()
    assert len(after) == 37 and all(str(status) == "done" for status in after.status)
    assert len(read_log(call_log)) - before == 37 - len(table)


def test_statuses_of_agrees_with_status_of_for_every_status(target):
    """A plan asks for every state's status in one call (issue 15); its inline fast path must
    answer as status_of does: done, pruned, failed, removed and unknown states."""
    from helpers import Boom

    exp, nodes = build(target)
    Boom()(nodes["e"])
    with pytest.raises(dg.RunError):
        exp.run(progress=False)
    ids = {name: promise.sha() for name, promise in nodes.items()}
    target.prune([ids["b"]])
    target.remove([ids["c"]])
    asked = [*ids.values(), Boom()(nodes["e"]).sha(), "0" * 64]
    for table in (target.survey(), target.snapshot()):
        statuses = table.statuses_of(asked)
        assert statuses == [table.status_of(state_id) for state_id in asked]
        assert {str(status) for status in statuses} == {"done", "pruned", "failed", "None"}
