"""The index is a checked snapshot, never the only copy (issues 11, 14 and 15).

A restore from a store whose index is missing, stale, damaged or from another store gives the
same tree as one read from the logs alone; the index never contradicts the records after a
recovery; a failed state's record keeps its first cause.
"""

from __future__ import annotations

import shutil
import subprocess
import sys

import pytest
from helpers import Add, Boom, CounterState, Multiply

import dagger as dg
from dagger.store import DirectoryStore


def build(exp_dir, *, more=False):
    exp = dg.Experiment(exp_dir, CounterState)
    root = exp.spawn_new_tree(start=1)
    with exp.tag("base"):
        a = Add(1)(root)
    dg.Function(lambda state: {"value": state.value}, name="measure")(a)
    for factor in range(2, 6):
        Multiply(factor)(a)
    Boom()(root)
    if more:
        with exp.tag("more"):
            Multiply(10)(Add(2)(root))
            Add(1)(root)  # a tag gained by a stored state
    with pytest.raises(dg.RunError):
        exp.run(progress=False)


def shown(tree):
    """Everything a restored tree shows, in its order."""
    return [
        (
            state.sha(),
            state.parent_sha,
            state.dagger.depth,
            str(state.recipe) if state.recipe else None,
            tuple(state.tags),
            str(state.dagger.status),
            dict(state.dagger.results),
            sorted(tree.edge_map[state.sha()]),
        )
        for state in tree.nodes
    ]


def from_the_logs(exp_dir):
    """The tree as the logs alone say it (a copy of the store without its index)."""
    copy = exp_dir.parent / "logs-only"
    shutil.copytree(exp_dir, copy)
    (copy / "index.json").unlink(missing_ok=True)
    return shown(dg.Experiment.restore(copy).graph)


@pytest.mark.parametrize(
    "case", ["missing", "stale", "flipped bit", "truncated", "emptied", "another store's"]
)
def test_restore_with_a_bad_index_gives_the_tree_of_the_records(exp_dir, tmp_path, case):
    build(exp_dir)
    old_index = (exp_dir / "index.json").read_bytes()
    build(exp_dir, more=True)
    index = exp_dir / "index.json"
    if case == "missing":
        index.unlink()
    elif case == "stale":
        index.write_bytes(old_index)  # valid, but from before the second run
    elif case == "flipped bit":
        data = bytearray(index.read_bytes())
        data[len(data) // 2] ^= 0x04
        index.write_bytes(bytes(data))
    elif case == "truncated":
        index.write_bytes(index.read_bytes()[:1000])
    elif case == "emptied":
        index.write_bytes(b"")
    else:
        other = tmp_path / "other"
        build(other, more=True)
        shutil.copy(other / "index.json", index)  # valid, checksummed, about other logs
    expected = from_the_logs(exp_dir)
    assert len(expected) == 9
    assert shown(dg.Experiment.restore(exp_dir).graph) == expected
    assert shown(dg.Experiment.restore(exp_dir).graph) == expected  # and with the rewritten one
    assert dg.verify(exp_dir).ok


def test_an_index_with_a_wrong_id_inside_is_not_trusted(exp_dir, subprocess_env):
    """One hex digit of an id changed inside index.json (issue 11: restore, show and ls
    crashed; a wrong parent survived later runs)."""
    build(exp_dir)
    index = exp_dir / "index.json"
    data = index.read_text()
    table = DirectoryStore(exp_dir).snapshot()
    victim = table.ids[3]
    position = data.index(victim) + 10
    index.write_text(
        data[:position] + ("0" if data[position] != "0" else "1") + data[position + 1 :]
    )
    expected = from_the_logs(exp_dir)
    assert shown(dg.Experiment.restore(exp_dir).graph) == expected
    for command in ("show", "ls"):
        result = subprocess.run(
            [sys.executable, "-m", "dagger", command, str(exp_dir)],
            env=subprocess_env,
            capture_output=True,
            text=True,
        )
        assert result.returncode == 0 and "Traceback" not in result.stderr, result.stderr
        assert victim[:12] in result.stdout


def test_a_recomputed_state_is_shown_done_in_every_later_restore(exp_dir, subprocess_env):
    """Issue 14, item 6: a payload damaged on disk is quarantined and recomputed; restore and
    `dagger show` then show it done, not missing."""
    exp = dg.Experiment(DirectoryStore(exp_dir, inline_limit=0), CounterState)
    child = Add(1)(exp.spawn_new_tree(start=1))
    exp.run(progress=False)
    (payload,) = (exp_dir / "payloads").glob(f"{child.sha()}.*")
    payload.write_bytes(b"damaged")
    tree = dg.Experiment.restore(exp_dir).graph
    assert tree.node(child.sha()).restore() is False  # quarantined
    assert dg.Experiment.restore(exp_dir).graph.node(child.sha()).dagger.status == "missing"
    exp = dg.Experiment(exp_dir, CounterState)
    child = Add(1)(exp.spawn_new_tree(start=1))
    assert exp.run(progress=False).computed == 1
    for _ in range(2):
        tree = dg.Experiment.restore(exp_dir).graph
        assert tree.node(child.sha()).dagger.status == "done"
    result = subprocess.run(
        [sys.executable, "-m", "dagger", "show", str(exp_dir)],
        env=subprocess_env,
        capture_output=True,
        text=True,
    )
    assert "2 states: 2 done" in result.stdout and "missing" not in result.stdout
    assert child.get().value == 2


class BrokenRoot(dg.ExperimentState):
    PROPERTIES = ["start"]

    def initialize_state(self, **arguments):
        raise ValueError("the data folder is empty")


def test_a_failed_roots_record_keeps_its_first_cause(exp_dir):
    """Issue 14, item 8: a root that failed, grown from after a restore, keeps its failure
    record (the original cause, and that it is a root)."""
    exp = dg.Experiment(exp_dir, BrokenRoot)
    root = exp.spawn_new_tree(start=1)
    with pytest.raises(dg.RunError):
        exp.run(progress=False)
    restored = dg.Experiment.restore(exp_dir, BrokenRoot)
    (failed,) = restored.graph.roots
    assert failed.dagger.status == "failed"
    Add(1)(failed)  # grow the restored (failed) root
    with pytest.raises(dg.RunError, match="the data folder is empty"):
        restored.run(progress=False)
    record = DirectoryStore(exp_dir).read_failure(root.sha())
    assert record.root is True
    assert record.error.type == "ValueError" and "the data folder is empty" in record.error.message
    tree = dg.Experiment.restore(exp_dir, BrokenRoot).graph
    assert tree.root.dagger.error.message == "the data folder is empty"
