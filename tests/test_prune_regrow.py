"""Growing a restored experiment below a state whose content is gone (pruned, or damaged).

A user builds and runs a tree in one script, prunes it, and grows it again in another script
from the restored tree (``Experiment.restore``): the run computes the pruned state again from
its stored parent with the recipe its record names (rebuilt from the record), then what grows
below it. When that cannot be done (the recipe's module is gone, its code changed) the error
says why and the state's record stays as it was; when the recomputation itself fails, the
failure record keeps the state's place in the tree (parent, recipe, tags).

Every script runs as a fresh subprocess, the way a user runs them.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import pytest

DEFS = """
import os
from pathlib import Path

import dagger as dg

LOG = Path(__file__).with_name("calls.log")


class Counter(dg.ExperimentState):
    def initialize_state(self, start=0):
        self.value = start


class Add(dg.Recipe):
    def __init__(self, amount):
        self.amount = amount

    def run(self, state):
        with LOG.open("a") as log:
            log.write(f"add:{self.amount}\\n")
        if Path(__file__).with_name("fail").exists():
            raise ValueError(f"Add({self.amount}) refuses to run")
        state.value += self.amount
        return state


def value(state):
    return state.value


def double(state):
    return 2 * state.value
"""

BUILD = """
import dagger as dg
from defs import Add, Counter, value

exp = dg.Experiment("runs/g", Counter)
root = exp.spawn_new_tree(start=0)
with exp.tag("branch"):
    for a in (1, 2):
        dg.Function(value)(Add(a)(root))
print(exp.run(progress=False))
print(exp.prune("top 1 by result.value"))  # Add(1) becomes `pruned`
"""

GROW = """
import json
import dagger as dg
from defs import Add

exp = dg.Experiment.restore("runs/g")
low = exp.graph.nodes.where(amount=1)[0]  # the pruned state
child = Add(10)(low)
report = exp.run(progress=False)
print(json.dumps({"computed": report.computed_ids, "child": child.sha(), "low": low.sha(),
                  "value": child.get().value}))
"""


def run(tmp_path, code: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    script = tmp_path / "script.py"
    script.write_text(textwrap.dedent(code))
    return subprocess.run(
        [sys.executable, str(script)], cwd=tmp_path, env=env, capture_output=True, text=True
    )


def ok(tmp_path, code: str, env: dict[str, str]) -> str:
    result = run(tmp_path, code, env)
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


def listing(tmp_path, env: dict[str, str]) -> dict[str, dict]:
    """``dagger ls --format json`` of the experiment, by state id."""
    result = subprocess.run(
        [sys.executable, "-m", "dagger", "ls", "runs/g", "--format", "json"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stderr
    return {row["id"]: row for row in json.loads(result.stdout)}


def calls(tmp_path) -> list[str]:
    log = tmp_path / "calls.log"
    return log.read_text().split() if log.exists() else []


@pytest.fixture
def built(tmp_path, subprocess_env):
    """The user's tree, run and pruned; returns the rows of ``dagger ls`` by id."""
    (tmp_path / "defs.py").write_text(DEFS)
    ok(tmp_path, BUILD, subprocess_env)
    (tmp_path / "calls.log").unlink()
    return listing(tmp_path, subprocess_env)


def pruned_row(rows: dict[str, dict]) -> dict:
    (row,) = [row for row in rows.values() if row["param.amount"] == 1]
    assert row["status"] == "pruned"
    return row


def lineage(row: dict) -> tuple:
    return (row["parent"], row["recipe"], row["param.amount"], row["tags"], row.get("result.value"))


def test_a_child_grown_below_a_pruned_state_recomputes_it(tmp_path, subprocess_env, built):
    before = pruned_row(built)
    out = json.loads(ok(tmp_path, GROW, subprocess_env).splitlines()[-1])
    # The pruned state comes back with its id and value, then its child; nothing else runs.
    assert out["low"] == before["id"]
    assert out["computed"] == [before["id"], out["child"]]
    assert out["value"] == 11
    assert calls(tmp_path) == ["add:1", "add:10"]
    rows = listing(tmp_path, subprocess_env)
    again = rows[before["id"]]
    assert again["status"] == "done"
    assert lineage(again) == lineage(before)
    child = rows[out["child"]]
    assert (child["status"], child["parent"], child["param.amount"]) == ("done", before["id"], 10)
    # Run again: all stored.
    again_out = json.loads(ok(tmp_path, GROW, subprocess_env).splitlines()[-1])
    assert again_out["computed"] == []


def test_a_function_added_on_a_pruned_state_recomputes_it(tmp_path, subprocess_env, built):
    before = pruned_row(built)
    out = ok(
        tmp_path,
        """
        import dagger as dg
        from defs import double

        exp = dg.Experiment.restore("runs/g")
        low = exp.graph.nodes.where(amount=1)[0]
        dg.Function(double)(low)
        report = exp.run(progress=False)
        print(report.computed_ids, report.functions)
        """,
        subprocess_env,
    )
    assert out.split("\n")[-2] == f"['{before['id']}'] 1"
    assert calls(tmp_path) == ["add:1"]
    row = listing(tmp_path, subprocess_env)[before["id"]]
    assert row["status"] == "done" and row["result.double"] == 2
    assert lineage(row) == lineage(before)


def test_a_chain_of_pruned_states_is_recomputed_from_the_first_stored_one(tmp_path, subprocess_env):
    (tmp_path / "defs.py").write_text(DEFS)
    ids = json.loads(
        ok(
            tmp_path,
            """
            import json
            import dagger as dg
            from defs import Add, Counter

            exp = dg.Experiment("runs/g", Counter)
            with exp.tag("chain"):
                a = Add(1)(exp.spawn_new_tree(start=0))
                b = Add(2)(a)
                c = Add(3)(b)
            exp.run(progress=False)
            exp.store.prune([a.sha(), b.sha()])  # the store primitive: c stays stored
            print(json.dumps([a.sha(), b.sha(), c.sha()]))
            """,
            subprocess_env,
        ).splitlines()[-1]
    )
    (tmp_path / "calls.log").unlink()
    before = listing(tmp_path, subprocess_env)
    assert [before[i]["status"] for i in ids] == ["pruned", "pruned", "done"]
    out = ok(
        tmp_path,
        """
        import dagger as dg
        from defs import Add

        exp = dg.Experiment.restore("runs/g")
        b = exp.graph.nodes.where(amount=2)[0]
        child = Add(100)(b)
        report = exp.run(progress=False)
        print(report.computed_ids, child.sha(), child.get().value)
        """,
        subprocess_env,
    )
    computed, child, value = out.splitlines()[-1].rsplit(" ", 2)
    assert computed == str([ids[0], ids[1], child])
    assert value == "103"
    assert calls(tmp_path) == ["add:1", "add:2", "add:100"]
    rows = listing(tmp_path, subprocess_env)
    for state_id in ids[:2]:
        assert rows[state_id]["status"] == "done"
        assert lineage(rows[state_id]) == lineage(before[state_id])
        assert rows[state_id]["tags"] == ["chain"]


GROW_WITHOUT_DEFS = """
import dagger as dg

class Mul(dg.Recipe):
    def __init__(self, factor):
        self.factor = factor

    def run(self, state):
        state.value *= self.factor
        return state

exp = dg.Experiment.restore("runs/g")
low = exp.graph.node({low!r})
Mul(3)(low)
try:
    exp.run(progress=False)
except dg.RunError as error:
    print("RunError:", error)
"""


def test_a_recipe_whose_module_is_gone_is_named_and_the_record_stays(
    tmp_path, subprocess_env, built
):
    before = pruned_row(built)
    (tmp_path / "defs.py").rename(tmp_path / "old_defs.py")
    out = ok(tmp_path, GROW_WITHOUT_DEFS.format(low=before["id"]), subprocess_env)
    assert "RunError:" in out
    assert "`Add`" in out and "module `defs`, which cannot be imported" in out
    assert "Run the script that defines it" in out
    after = listing(tmp_path, subprocess_env)[before["id"]]
    assert after["status"] == "pruned"  # no failure recorded over it
    assert lineage(after) == lineage(before)


def test_a_recipe_whose_code_changed_since_is_refused_and_the_record_stays(
    tmp_path, subprocess_env, built
):
    before = pruned_row(built)
    defs = tmp_path / "defs.py"
    defs.write_text(defs.read_text().replace("state.value += self.amount", "state.value -= 1"))
    result = run(tmp_path, GROW, subprocess_env)
    assert result.returncode != 0
    assert "the code of `Add` changed since the state was computed" in result.stderr
    assert calls(tmp_path) == []  # the changed recipe never ran in place of the old one
    after = listing(tmp_path, subprocess_env)[before["id"]]
    assert after["status"] == "pruned"
    assert lineage(after) == lineage(before)


def test_a_failing_recomputation_keeps_the_records_lineage(tmp_path, subprocess_env, built):
    before = pruned_row(built)
    (tmp_path / "fail").touch()
    result = run(tmp_path, GROW, subprocess_env)
    assert result.returncode != 0 and "Add(1) refuses to run" in result.stderr
    assert calls(tmp_path) == ["add:1"]  # the rebuilt recipe did run
    rows = listing(tmp_path, subprocess_env)
    after = rows[before["id"]]
    assert after["status"] == "failed"
    assert lineage(after) == lineage(before)
    shown = subprocess.run(
        [sys.executable, "-m", "dagger", "show", "runs/g"],
        cwd=tmp_path,
        env=subprocess_env,
        capture_output=True,
        text=True,
    ).stdout
    assert "└─ Add(amount=1)" in shown or "├─ Add(amount=1)" in shown  # still under its root
    # Tag filters still find it, and once the cause is gone a run recomputes it.
    (tmp_path / "fail").unlink()
    out = json.loads(ok(tmp_path, GROW, subprocess_env).splitlines()[-1])
    assert out["computed"] == [before["id"], out["child"]]
    assert lineage(listing(tmp_path, subprocess_env)[before["id"]]) == lineage(before)


def test_a_damaged_state_of_a_restored_experiment_is_recomputed_with_its_lineage(
    tmp_path, subprocess_env
):
    (tmp_path / "defs.py").write_text(DEFS)
    low = ok(
        tmp_path,
        """
        import dagger as dg
        from dagger.store import DirectoryStore
        from defs import Add, Counter, value

        exp = dg.Experiment(DirectoryStore("runs/g", inline_limit=0), Counter)
        root = exp.spawn_new_tree(start=0)
        with exp.tag("branch"):
            low = Add(1)(root)
            dg.Function(value)(low)
        exp.run(progress=False)
        print(low.sha())
        """,
        subprocess_env,
    ).split()[-1]
    (tmp_path / "calls.log").unlink()
    before = listing(tmp_path, subprocess_env)[low]
    (payload,) = (tmp_path / "runs" / "g" / "payloads").glob(f"{low}*")
    payload.unlink()  # its content is lost: the run quarantines it and computes it again
    (tmp_path / "fail").touch()
    result = run(tmp_path, GROW, subprocess_env)
    assert result.returncode != 0 and "Add(1) refuses to run" in result.stderr
    after = listing(tmp_path, subprocess_env)[low]
    assert after["status"] == "failed"
    assert lineage(after) == lineage(before)
    (tmp_path / "fail").unlink()
    out = json.loads(ok(tmp_path, GROW, subprocess_env).splitlines()[-1])
    assert out["computed"] == [low, out["child"]]
    after = listing(tmp_path, subprocess_env)[low]
    assert after["status"] == "done" and lineage(after) == lineage(before)


def test_verify_reports_a_state_that_lost_its_lineage(tmp_path, subprocess_env, built):
    """What an older dagger left: a failure recorded over a pruned state's record, without its
    parent, recipe or tags (written here through the store, as that dagger's run did)."""
    before = pruned_row(built)
    ok(
        tmp_path,
        f"""
        from dagger.record import ErrorInfo, StateRecord, Status, now
        from dagger.store import DirectoryStore

        store = DirectoryStore("runs/g")
        with store.lock({before["id"]!r}):
            store.write_failure(StateRecord(
                id={before["id"]!r}, parent=None, root=False, recipe=None, tags=(),
                created=now(), status=Status.FAILED, error=ErrorInfo("DaggerError", "gone"),
            ))
        """,
        subprocess_env,
    )
    result = subprocess.run(
        [sys.executable, "-m", "dagger", "verify", "runs/g"],
        cwd=tmp_path,
        env=subprocess_env,
        capture_output=True,
        text=True,
    )
    assert result.returncode != 0
    assert before["id"][:12] in result.stdout + result.stderr
    assert "lost its lineage" in result.stdout + result.stderr


def test_children_grown_below_a_pruned_state_on_worker_processes(tmp_path, subprocess_env, built):
    """Two branches below the pruned state run on two worker processes: it is computed once
    (the second worker loads what the first stored), with its lineage."""
    before = pruned_row(built)
    out = ok(
        tmp_path,
        """
        from concurrent.futures import ProcessPoolExecutor

        import dagger as dg
        from defs import Add

        if __name__ == "__main__":
            exp = dg.Experiment.restore("runs/g")
            low = exp.graph.nodes.where(amount=1)[0]
            ten, twenty = Add(10)(low), Add(20)(low)
            with ProcessPoolExecutor(2) as executor:
                report = exp.run(progress=False, executor=executor)
            print(report.computed, ten.get().value, twenty.get().value)
        """,
        subprocess_env,
    )
    assert out.splitlines()[-1] == "3 11 21"
    assert sorted(calls(tmp_path)) == ["add:1", "add:10", "add:20"]
    row = listing(tmp_path, subprocess_env)[before["id"]]
    assert row["status"] == "done" and lineage(row) == lineage(before)
