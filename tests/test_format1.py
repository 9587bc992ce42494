"""A store written in format 1 (one JSON file per record) opens, and the first run converts it.

``tests/data/format1`` was written by dagger at commit 95f0a37 (``tests/data/make_format1.py``):
root -> Add(1) [later tagged `late`] -> {Multiply(3) [prune] + Function evaluate,
Multiply(5) [prune, big] + Function spectrum (a side file)}; root -> Add(10) [baseline] ->
Widen (an 80 KB array: a blob); root -> Boom (failed).
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from helpers import Add, CounterState, Multiply

import dagger as dg
from dagger.store import DirectoryStore

FIXTURE = Path(__file__).parent / "data" / "format1"
ROOT = "d9f1fe5a1ceaaa61c43ba0e67f79323ad590df109627f36793086fba2b79f529"
A = "a055d58f7c1aa9f029a1312136fcb5292d58a9739baa8a20bea06a0532cf19e6"
B = "1a29ea5d35993bd7d08a1df778754f85eb805ff0c4e44725d5b599ddcd2438f5"
C = "c3a3a35d9470cd1313503653f0e4194aeadd65418967fa2305a32b9b4cc1c7ec"
D = "1a8cf463b1d643b0ab372dde8ec399030a611c84efc0e7feb3baeeaa88a6da28"
WIDE = "13d482c130ab8f4fcc1690b5f894729411ea558f46214a9b177faf6446799fc0"
FAILED = "ff233989aabac69163ee387095e88204bdd6c7b81cf2d92ca55e35388ce513ed"


class Widen(dg.Recipe):
    """As in make_format1.py (its VERSION pins its identity)."""

    VERSION = "1"

    def run(self, state):
        state.extra = np.arange(10_000, dtype=np.float64)
        return state


@pytest.fixture
def old_store(tmp_path):
    target = tmp_path / "old"
    shutil.copytree(FIXTURE, target)
    return target


def files(folder):
    return {
        path.relative_to(folder): path.read_bytes() for path in folder.rglob("*") if path.is_file()
    }


def check_tree(directory):
    """The fixture's tree, as restored from ``directory`` (format 1 or converted)."""
    tree = dg.Experiment.restore(directory).graph
    assert set(tree.node_map) == {ROOT, A, B, C, D, WIDE, FAILED}
    assert tree.root.sha() == ROOT
    assert tree.edge_map[ROOT] == {A, D, FAILED}
    assert tree.edge_map[A] == {B, C} and tree.edge_map[B] == set()
    assert tree.node(FAILED).dagger.status == "failed"
    assert tree.node(FAILED).dagger.error.type == "ValueError"
    assert tree.node(B).tags == ["prune"] and tree.node(C).tags == ["prune", "big"]
    assert tree.node(A).tags == ["late"]  # gained by a later run (a notes file)
    assert tree.node(B).dagger.results["evaluate"] == {"value": 6, "double": 12}
    spectrum = tree.node(C).dagger.results["spectrum"]  # a side file, loaded on access
    assert np.array_equal(spectrum, np.linspace(0.0, 1.0, 50) * 10)
    frame = tree.nodes.to_dataframe().set_index("id")
    assert frame.loc[B, "result.evaluate.double"] == 12
    assert frame.loc[D, "param.amount"] == 10
    with tree.node(WIDE).lazy_load() as wide:  # the array is a blob
        assert wide.value == 11 and np.array_equal(wide.extra, np.arange(10_000.0))
    with tree.node(B).lazy_load() as state:
        assert state.value == 6
    return tree


def test_a_format1_store_opens_and_reads_without_writing(old_store, subprocess_env):
    before = files(old_store)
    check_tree(old_store)
    report = dg.verify(old_store)
    assert report.ok, str(report)
    assert report.states == 7
    for command in (["show"], ["ls", "--format", "json"]):
        result = subprocess.run(
            [sys.executable, "-m", "dagger", *command, str(old_store)],
            env=subprocess_env,
            capture_output=True,
            text=True,
            cwd=old_store.parent,
        )
        assert result.returncode == 0, result.stderr
        assert "Traceback" not in result.stderr
    assert "7 states: 6 done, 1 failed" in result.stdout or json.loads(result.stdout)
    after = files(old_store)
    assert after.keys() - before.keys() <= {Path("locks/states.lock")}
    assert {path: after[path] for path in before} == before  # nothing written


def test_the_first_run_converts_it_and_warns_that_older_ids_are_recomputed(
    old_store, call_log, dagger_warnings
):
    """The fixture's ids were made by identity scheme 1: the same script computes scheme-2
    ids, so its states are computed again (once), with one warning that says so and how to
    remove the old ones; the old states stay readable."""
    exp = dg.Experiment(old_store, CounterState)
    root = exp.spawn_new_tree(start=1)
    a = Add(1)(root)
    with exp.tag("prune"):
        b = Multiply(3)(a)
        with exp.tag("big"):
            Multiply(5)(a)
    with exp.tag("baseline"):
        Widen()(Add(10)(root))
    report = exp.run(progress=False)
    assert (report.computed, report.cached) == (6, 0)
    warnings = [
        r.getMessage() for r in dagger_warnings.records if "identity scheme" in r.getMessage()
    ]
    assert len(warnings) == 1
    assert (
        "identity scheme 1" in warnings[0] and f"dagger rm {old_store} --identity 1" in warnings[0]
    )
    assert b.get().value == 6
    meta = json.loads((old_store / "experiment.json").read_text())
    assert meta["format"] == 2 and meta["roots"] == [ROOT, root.sha()] and meta["checksum"]
    assert meta["identities"] == [1, 2]
    states = sorted(path.name for path in (old_store / "states").iterdir())
    assert states and all(name.endswith((".pkl", ".res")) for name in states)  # kept in place
    assert list((old_store / "log").glob("*.log"))
    assert dg.verify(old_store).ok
    assert dg.gc(old_store, dry_run=True).removed == []  # every kept file is referred to
    # A second run computes nothing, and the old states are still all there.
    exp = dg.Experiment(old_store, CounterState)
    Multiply(3)(Add(1)(exp.spawn_new_tree(start=1)))
    assert exp.run(progress=False).computed == 0
    assert len(DirectoryStore(old_store).snapshot()) == 7 + 6


def test_a_damaged_format1_record_is_reported_and_left_out(old_store):
    record = old_store / "states" / f"{B}.json"
    record.write_text(record.read_text().replace('"class"', '"chass"'))  # still valid JSON
    report = dg.verify(old_store)
    assert not report.ok
    assert any(problem.path == f"states/{B}.json" for problem in report.problems)
    tree = dg.Experiment.restore(old_store).graph  # no traceback; the state is absent
    assert B not in tree.node_map and A in tree.node_map
