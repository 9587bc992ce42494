"""Explain, stored: each record keeps what its id was made of; a run says why it recomputes.

As a user runs things (issue 10, item 4): a script written into tmp_path, run in a fresh
process, edited, run again; ``dagger explain DIR ID`` as a subprocess; a restore in another
process. Records written before explanations existed (format 1) explain as "not recorded".
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import dagger as dg
from dagger.explain import Explanation

FORMAT1 = Path(__file__).parent / "data" / "format1"
FORMAT1_ADD = "a055d58f7c1aa9f029a1312136fcb5292d58a9739baa8a20bea06a0532cf19e6"

# A study as a user writes it: a module-level constant, a class attribute, a logger (which
# dagger cannot hash: untracked), a sweep. The test edits it between runs.
STUDY = """
import json
import logging
import sys

import dagger as dg

logging.basicConfig(level=logging.INFO, format="LOG %(name)s %(levelname)s %(message)s")
for noisy in ("dagger.progress",):
    logging.getLogger(noisy).setLevel(logging.WARNING)

LOG = logging.getLogger("study")
LABEL_SMOOTHING = 0.1


class Start(dg.ExperimentState):
    def initialize_state(self, start=1.0):
        self.value = start


class Smooth(dg.Recipe):
    FACTOR = 2.0

    def __init__(self, amount):
        self.amount = amount

    def run(self, state):
        LOG.info("smoothing")
        state.value = state.value * self.FACTOR * self.amount + LABEL_SMOOTHING
        return state


AMOUNTS = (0.25,)

exp = dg.Experiment(sys.argv[1], Start)
root = exp.spawn_new_tree(start=1.0)
leaves = [Smooth(amount)(root) for amount in AMOUNTS]
report = exp.run(progress=False)
json.dump(
    {
        "recomputes": [str(entry) for entry in report.recomputes],
        "changes": [list(entry.changes) for entry in report.recomputes],
        "siblings": [entry.sibling_id for entry in report.recomputes],
        "ids": [leaf.sha() for leaf in leaves],
        "root": root.sha(),
        "explained": {leaf.sha(): leaf.explain().to_json() for leaf in [root, *leaves]},
    },
    open(sys.argv[2], "w"),
)
"""


def _run(script: Path, store: Path, out: Path, env: dict[str, str]) -> tuple[dict, str]:
    done = subprocess.run(
        [sys.executable, script.name, str(store), str(out)],
        cwd=script.parent,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    return json.loads(out.read_text()), done.stderr


def _edit(script: Path, old: str, new: str) -> None:
    text = script.read_text()
    assert old in text
    script.write_text(text.replace(old, new))


@pytest.fixture
def study(tmp_path, subprocess_env):
    script = tmp_path / "study.py"
    script.write_text(STUDY)
    store = tmp_path / "store"

    def run() -> tuple[dict, str]:
        return _run(script, store, tmp_path / "out.json", subprocess_env)

    first, _ = run()
    assert first["recomputes"] == []  # nothing was stored before
    return script, store, first, run


def _dagger(*args: str, cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "dagger", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


# -- the recompute line --------------------------------------------------------------------------


def test_an_edited_global_is_named_when_the_state_is_computed_again(study):
    script, _, first, run = study
    _edit(script, "LABEL_SMOOTHING = 0.1", "LABEL_SMOOTHING = 0.3")
    second, stderr = run()
    line = (
        f"computing {second['ids'][0][:12]} (Smooth(amount=0.25)) although a stored sibling "
        f"{first['ids'][0][:12]} exists: global LABEL_SMOOTHING 0.1 -> 0.3"
    )
    assert second["recomputes"] == [line]
    assert second["siblings"] == first["ids"]
    assert f"LOG dagger WARNING {line}" in stderr.splitlines()


def test_an_edited_class_attribute_is_named(study):
    script, _, _, run = study
    _edit(script, "FACTOR = 2.0", "FACTOR = 5.0")
    second, stderr = run()
    assert second["changes"] == [["class attribute Smooth.FACTOR 2.0 -> 5.0"]]
    assert "class attribute Smooth.FACTOR 2.0 -> 5.0" in stderr


def test_edited_code_of_run_is_named(study):
    script, _, _, run = study
    _edit(script, "* self.amount + LABEL_SMOOTHING", "* self.amount - LABEL_SMOOTHING")
    second, stderr = run()
    assert second["changes"] == [["code of Smooth.run changed"]]
    assert "exists: code of Smooth.run changed" in stderr


def test_a_new_sweep_value_names_the_parameter_at_info(study):
    script, _, first, run = study
    _edit(script, "AMOUNTS = (0.25,)", "AMOUNTS = (0.25, 0.5)")
    second, stderr = run()
    assert second["ids"][0] == first["ids"][0]  # cached, not compared with anything
    assert second["changes"] == [["parameter amount 0.25 -> 0.5"]]
    # A new point of a sweep is intended: INFO, not a warning.
    assert any(
        line.startswith("LOG dagger INFO computing") and line.endswith("amount 0.25 -> 0.5")
        for line in stderr.splitlines()
    )


def test_the_closest_of_several_stored_siblings_is_named(study):
    """Two stored siblings (0.25 with the old code, 0.5 with the new): a new 0.25 with the new
    code is one change from each; a new 0.75 is one change from 0.5 (same code), not two."""
    script, _, _, run = study
    _edit(script, "LABEL_SMOOTHING = 0.1", "LABEL_SMOOTHING = 0.3")
    _edit(script, "AMOUNTS = (0.25,)", "AMOUNTS = (0.5,)")
    second, _ = run()
    assert second["changes"] == [
        ["parameter amount 0.25 -> 0.5", "global LABEL_SMOOTHING 0.1 -> 0.3"]
    ]
    _edit(script, "AMOUNTS = (0.5,)", "AMOUNTS = (0.75,)")
    third, _ = run()
    assert third["changes"] == [["parameter amount 0.5 -> 0.75"]]
    assert third["siblings"] == second["ids"]


def test_a_cached_rerun_lists_no_recompute(study):
    _, _, first, run = study
    again, stderr = run()
    assert again["recomputes"] == [] and again["ids"] == first["ids"]
    assert "although" not in stderr


def test_an_edited_helper_in_another_module_is_named(tmp_path, subprocess_env):
    """Not listed in the issue, same kind: the ingredient that changed lives in the user's
    own helper module, which run() reaches through a function call."""
    (tmp_path / "mathutil.py").write_text("def shrink(x):\n    return x * 0.5\n")
    script = tmp_path / "study.py"
    script.write_text(
        STUDY.replace(
            "import dagger as dg\n", "import dagger as dg\nfrom mathutil import shrink\n"
        ).replace("state.value = state.value", "state.value = shrink(state.value)")
    )
    store, out = tmp_path / "store", tmp_path / "out.json"
    _run(script, store, out, subprocess_env)
    (tmp_path / "mathutil.py").write_text("def shrink(x):\n    return x * 0.25\n")
    second, _ = _run(script, store, out, subprocess_env)
    assert second["changes"] == [["code of mathutil.shrink changed"]]


# -- what is stored, and reading it back ---------------------------------------------------------


def test_dagger_explain_prints_the_stored_manifest(study, tmp_path, subprocess_env):
    _, store, first, _ = study
    leaf = first["ids"][0]
    done = _dagger("explain", str(store), leaf[:10], cwd=tmp_path, env=subprocess_env)
    assert done.returncode == 0, done.stderr
    text = done.stdout
    assert text.startswith(f"state {leaf[:12]}: Smooth applied to {first['root'][:12]}")
    assert "parameter          amount = 0.25" in text
    assert "method             Smooth.run" in text
    assert "global             LABEL_SMOOTHING 0.1" in text
    assert "class attribute    Smooth.FACTOR 2.0" in text
    assert "untracked (read by the code, not part of the id):" in text
    assert "LOG (logging.Logger)" in text
    assert text.strip() == str(Explanation.from_json(first["explained"][leaf]))
    root = _dagger("explain", str(store), first["root"][:8], cwd=tmp_path, env=subprocess_env)
    assert "root of Start" in root.stdout and "argument           start = 1.0" in root.stdout
    # An id copied in capitals (from a report, a spreadsheet) is the same hexadecimal id.
    upper = _dagger("explain", str(store), leaf[:10].upper(), cwd=tmp_path, env=subprocess_env)
    assert upper.returncode == 0, upper.stderr
    assert upper.stdout == done.stdout


def test_dagger_explain_refuses_an_unknown_or_ambiguous_prefix(study, tmp_path, subprocess_env):
    _, store, first, _ = study
    known = {first["root"][0], first["ids"][0][0]}
    unknown = next(digit for digit in "0123456789abcdef" if digit not in known)
    done = _dagger("explain", str(store), unknown, cwd=tmp_path, env=subprocess_env)
    assert done.returncode == 2
    assert "dagger explain: No state has an id starting with" in done.stderr
    done = _dagger("explain", str(store), "", cwd=tmp_path, env=subprocess_env)
    assert done.returncode == 2 and "matches 2 states" in done.stderr
    done = _dagger("explain", str(tmp_path / "nowhere"), "ab", cwd=tmp_path, env=subprocess_env)
    assert done.returncode == 2 and done.stderr.startswith("dagger explain: ")


def test_a_restored_state_explains_as_its_promise_did(study, tmp_path, subprocess_env):
    _, store, first, _ = study
    reader = tmp_path / "reader.py"
    reader.write_text(
        textwrap.dedent(
            """
            import json, sys
            import dagger as dg

            tree = dg.Experiment.restore(sys.argv[1]).graph
            found = {}
            for state in tree.nodes:
                found[state.sha()] = state.explain().to_json()
                assert state.slim_loaded  # read from the record: nothing was loaded
                assert state.dagger.explain() == state.explain()
            json.dump(found, open(sys.argv[2], "w"))
            """
        )
    )
    restored, _ = _run(reader, store, tmp_path / "restored.json", subprocess_env)
    assert restored == first["explained"]
    assert all(item["recorded"] for item in restored.values())


def test_a_state_from_a_run_explains_from_its_record(memory):
    import numpy as np
    from helpers import Add, CounterState

    exp = dg.Experiment(memory, CounterState)
    root = exp.spawn_new_tree(start=1, note="not identity")
    # A float32: its JSON view is a Python float, so the record keeps its digest.
    child = Add(np.float32(0.5))(root)
    state = child.get()
    assert not state.slim_loaded
    assert state.explain() == child.explain()
    assert state.explain().changes_from(Add(0.5)(root).explain()) == [
        "parameter amount changed (0.5, a value of another type or precision)"
    ]
    assert exp.root.explain() == root.explain()
    assert exp.root.explain().values == {"start": 1}  # the non-hashed argument left out


def test_explain_is_a_default_a_state_may_override(memory):
    class Annotated(dg.ExperimentState):
        def initialize_state(self, **arguments):
            self.explain = "my own notes"  # not reserved: the state keeps it

    exp = dg.Experiment(memory, Annotated)
    root = exp.spawn_new_tree(seed=1)
    exp.run(progress=False)
    state = root.get()
    assert state.explain == "my own notes"
    assert state.dagger.explain().values == {"seed": 1}


def test_a_state_not_stored_yet_cannot_be_explained(memory):
    from helpers import CounterState

    state = CounterState()
    with pytest.raises(dg.errors.StateNotFoundError, match="promise.explain"):
        state.explain()


# -- stores written before explanations ----------------------------------------------------------


def test_a_format1_state_explains_as_not_recorded(tmp_path, subprocess_env):
    store = tmp_path / "old"
    shutil.copytree(FORMAT1, store)
    done = _dagger("explain", str(store), FORMAT1_ADD[:10], cwd=tmp_path, env=subprocess_env)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith(f"state {FORMAT1_ADD[:12]}: Add applied to")
    assert "parameter          amount = 1" in done.stdout
    assert "not recorded" in done.stdout
    explained = dg.Experiment.restore(store).graph.node(FORMAT1_ADD).explain()
    assert explained.recorded is False and explained.manifest == ()


def test_a_sibling_stored_without_ingredients_is_compared_by_its_record(memory):
    """The format-1 record of ``Add(1)``, next to a new ``Add(2)`` on its parent: the change is
    named from what the old record has (parameters, code identity), without a manifest."""
    from helpers import Add, CounterState

    from dagger.explain import explain_record
    from dagger.record import StateRecord, loads

    path = FORMAT1 / "states" / f"{FORMAT1_ADD}.json"
    old = explain_record(StateRecord.from_json(loads(path.read_bytes())))
    assert old.recorded is False
    exp = dg.Experiment(memory, CounterState)
    new = Add(2)(exp.spawn_new_tree(start=1)).explain()
    # The old root has another id under today's identity scheme: the parent differs too.
    assert new.changes_from(old) == [
        f"parent {old.parent_id[:12]} -> {new.parent_id[:12]}",
        "parameter amount 1 -> 2",
        "code of Add changed (the stored state's was not recorded)",
    ]


def test_a_root_whose_manifest_part_is_gone_still_reads(memory):
    """A root's manifest is a shared part of its own; a store collected by a dagger that did
    not know that field loses it. The record must still read (the state is usable) and
    explain as not recorded."""
    from helpers import CounterState

    from dagger.explain import explain_record
    from dagger.record import record_from_wire, record_to_wire

    exp = dg.Experiment(memory, CounterState)
    root = exp.spawn_new_tree(start=1)
    exp.run(progress=False)
    record = memory.read_record(root.sha())
    document, parts = record_to_wire(record)
    assert record_from_wire(document, parts).ingredients == record.ingredients
    del parts[document["manifest"]]
    damaged = record_from_wire(document, parts)
    assert damaged.ingredients is None and damaged.arguments == {"start": 1}
    assert explain_record(damaged).recorded is False
