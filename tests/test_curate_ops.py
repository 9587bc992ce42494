"""Curating a store as a user does it (issue 16, items 1 and 2): ``exp.remove`` / ``dagger rm``
and ``exp.prune`` / ``dagger prune``, on real folders, with the command line run as a
subprocess and every check of what is stored made from a fresh process.

The store's own operations are tested in test_remove_prune.py; these tests cover choosing the
states, the refusals, the reports, and what a later run does.
"""

from __future__ import annotations

import hashlib
import json
import re
import shutil
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from helpers import Add, CounterState, Multiply, read_log

import dagger as dg
from dagger.record import IDENTITY_VERSION
from dagger.store import DirectoryStore

TESTS = Path(__file__).parent

# A study: two "methods" (Add(0), Add(1)) below one root, four factors each, every leaf
# evaluated. accuracy = the leaf's value = (1 + amount) * factor: all distinct,
#   amount 0: 2, 3, 4, 5      amount 1: 4, 6, 8, 10   (the Add states have no accuracy).
STUDY = textwrap.dedent(
    """
    import sys
    import dagger as dg
    from helpers import Add, Blob, Boom, CounterState, Multiply, log_call

    def evaluate(state):
        log_call(f"eval:{state.value}")
        return {"accuracy": float(state.value), "note": "ok"}

    def norm(state):
        log_call(f"norm:{state.value}")
        return abs(state.value)

    exp = dg.Experiment(sys.argv[1], CounterState)
    root = exp.spawn_new_tree(start=1)
    leaves = {}
    for amount in (0, 1):
        with exp.tag(f"method{amount}"):
            method = Add(amount)(root)
            for factor in (2, 3, 4, 5):
                leaves[amount, factor] = Multiply(factor)(method)
                dg.Function(evaluate)(leaves[amount, factor])
    extra = sys.argv[2:]
    if "big" in extra:  # two states holding the same 1 MiB (one blob), one holding another
        with exp.tag("big"):
            Blob(1, seed=0)(leaves[0, 2])
            Blob(1, seed=0)(leaves[0, 3])
            Blob(1, seed=1)(leaves[1, 2])
    if "boom" in extra:
        with exp.tag("broken"):
            Boom()(leaves[1, 3])
            Boom()(leaves[1, 4])
    if "grow" in extra:  # needs a pruned leaf's state: it is computed again
        Multiply(7)(leaves[0, 2])
    if "norm" in extra:  # a new Function on a pruned leaf: computed again, then analysed
        dg.Function(norm)(leaves[1, 3])
    try:
        exp.run(progress=False)
    except dg.RunError:
        if "boom" not in extra:
            raise
    """
)


@pytest.fixture
def study(tmp_path, subprocess_env, call_log):
    """Runs the study script (with options) in a subprocess; returns a runner."""
    (tmp_path / "study.py").write_text(STUDY)
    env = {**subprocess_env, "DAGGER_TEST_LOG": str(call_log)}

    def run(exp_dir: Path, *options: str) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(
            [sys.executable, "study.py", str(exp_dir), *options],
            cwd=tmp_path,
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert result.returncode == 0, result.stderr
        return result

    return run


@pytest.fixture
def cli(tmp_path, subprocess_env, call_log):
    """Runs ``python -m dagger ARGS`` in tmp_path."""
    env = {**subprocess_env, "DAGGER_TEST_LOG": str(call_log), "PYTHONIOENCODING": "utf-8"}

    def run(*args: object) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "dagger", *map(str, args)],
            cwd=tmp_path,
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
        )

    return run


def table(cli, exp_dir: Path) -> list[dict]:
    """``dagger ls --format json``, read by a fresh process."""
    listed = cli("ls", exp_dir, "--format", "json")
    assert listed.returncode == 0, listed.stderr
    return json.loads(listed.stdout)


def by_leaf(rows: list[dict]) -> dict[tuple[int, int], dict]:
    """The study's leaves by (amount, factor); its roots and methods by ("root",)/(amount,)."""
    found: dict = {}
    ids = {row["id"]: row for row in rows}
    for row in rows:
        if row["recipe"] == "root":
            found["root"] = row
        elif row["recipe"] == "Add":
            found[row["param.amount"]] = row
        elif row["recipe"] == "Multiply" and row["param.factor"] != 7:
            parent = ids[row["parent"]]
            found[parent["param.amount"], row["param.factor"]] = row
    return found


def files(directory: Path) -> dict[str, tuple[int, str]]:
    """Every file of a folder: size and content digest (locks excepted: opening the store
    for reading may create the lock file, empty)."""
    return {
        str(path.relative_to(directory)): (
            path.stat().st_size,
            hashlib.sha256(path.read_bytes()).hexdigest(),
        )
        for path in sorted(directory.rglob("*"))
        if path.is_file() and path.parent.name != "locks"
    }


def statuses(rows: list[dict]) -> dict[str, str]:
    return {row["id"]: row["status"] for row in rows}


# -- prune -----------------------------------------------------------------------------------------


def test_prune_keeps_exactly_the_best_k_and_their_ancestors(cli, study, exp_dir):
    study(exp_dir)
    leaves = by_leaf(table(cli, exp_dir))
    result = cli("prune", exp_dir, "--keep", "top 2 by result.evaluate.accuracy")
    assert result.returncode == 0, result.stderr
    best = [leaves[1, 5]["id"], leaves[1, 4]["id"]]  # accuracies 10 and 8
    kept = {*best, leaves[1]["id"], leaves["root"]["id"]}  # and their ancestors
    assert "keeping 2 state(s) (top 2 by result.evaluate.accuracy) and their 2 ancestor(s)" in (
        result.stdout
    )
    assert "pruned 7 state(s)" in result.stdout
    assert f"  {leaves[1, 5]['id'][:12]}  done    Multiply(factor=5)\n" in result.stdout
    assert f"  {leaves[1, 4]['id'][:12]}  done    Multiply(factor=4)\n" in result.stdout
    assert "have no value in result.evaluate.accuracy: they never count as the best" in (
        result.stdout
    )
    after = table(cli, exp_dir)  # a fresh process's restore
    assert len(after) == 11  # every record stays
    assert statuses(after) == {
        row["id"]: ("done" if row["id"] in kept else "pruned") for row in after
    }
    # tables still show a pruned state's results and lineage
    pruned_leaf = next(row for row in after if row["id"] == leaves[0, 5]["id"])
    assert pruned_leaf["result.evaluate.accuracy"] == 5.0 and pruned_leaf["parent"]
    assert cli("verify", exp_dir).returncode == 0
    # bottom K is the other end
    again = cli("prune", exp_dir, "--keep", "bottom 1 by result.evaluate.accuracy", "--dry-run")
    assert again.returncode == 0, again.stderr
    assert (
        f"{leaves[0, 2]['id'][:12]}  pruned  Multiply(factor=2)"
        in (again.stdout.split("would prune")[0])
    )
    assert "1 of the states kept have no stored content" in again.stdout


def test_prune_per_group_keeps_the_best_of_each_group(cli, study, exp_dir):
    """--per param.amount: the leaves have no amount of their own (their Add parent has),
    so each leaf belongs to its nearest ancestor's group."""
    study(exp_dir)
    leaves = by_leaf(table(cli, exp_dir))
    result = cli(
        "prune", exp_dir, "--keep", "top 1 by result.evaluate.accuracy", "--per", "param.amount"
    )
    assert result.returncode == 0, result.stderr
    kept = {
        leaves[0, 5]["id"],  # the best of amount 0 (5)
        leaves[1, 5]["id"],  # the best of amount 1 (10)
        leaves[0]["id"],
        leaves[1]["id"],
        leaves["root"]["id"],
    }
    assert statuses(table(cli, exp_dir)) == {
        row["id"]: ("done" if row["id"] in kept else "pruned") for row in table(cli, exp_dir)
    }
    # per a column the leaves have themselves: the best of each factor
    result = cli(
        "prune", exp_dir, "--keep", "top 1 by result.evaluate.accuracy", "--per", "param.factor"
    )
    assert result.returncode == 0, result.stderr
    assert "keeping 4 state(s)" in result.stdout
    chosen = result.stdout.split("\npruned ")[0]
    for factor in (2, 3, 4, 5):
        assert leaves[1, factor]["id"][:12] in chosen  # amount 1 wins every factor


def test_a_run_after_a_prune_recomputes_only_the_pruned_states_it_needs(
    cli, study, exp_dir, call_log
):
    study(exp_dir)
    leaves = by_leaf(table(cli, exp_dir))
    assert cli("prune", exp_dir, "--keep", "top 1 by result.evaluate.accuracy").returncode == 0
    # the same study again needs nothing: every state and result is recorded
    before = len(read_log(call_log))
    study(exp_dir)
    assert read_log(call_log)[before:] == []
    # a child below a pruned leaf needs its state: the pruned path is computed again, once
    study(exp_dir, "grow")
    assert read_log(call_log)[before:] == ["add:0", "mul:2", "mul:7"]
    # a new Function on another pruned leaf needs that leaf (its parent Add(1) was kept)
    before = len(read_log(call_log))
    study(exp_dir, "norm")
    assert read_log(call_log)[before:] == ["mul:3", "norm:6"]
    after = statuses(table(cli, exp_dir))
    assert after[leaves[0, 2]["id"]] == after[leaves[1, 3]["id"]] == "done"
    assert after[leaves[0, 3]["id"]] == after[leaves[1, 4]["id"]] == "pruned"  # not needed
    assert cli("verify", exp_dir).returncode == 0


def test_prune_keeps_a_list_of_states_through_the_api(study, exp_dir):
    study(exp_dir)
    exp = dg.Experiment.restore(exp_dir)
    leaf = exp.graph.nodes.where(factor=3).sort_by("result.evaluate.accuracy")[0]  # value 3
    report = exp.prune([leaf.sha()[:10]])
    assert report.kept[0].id == leaf.sha() and report.ancestors == 2
    tree = dg.Experiment.restore(exp_dir).graph
    done = {node.sha() for node in tree.nodes if node.dagger.status == "done"}
    assert done == {node.sha() for node in tree.lineage(tree.node(leaf.sha()))}
    with pytest.raises(dg.InvalidArgumentError, match="per='param.amount' groups"):
        exp.prune([leaf], per="param.amount")


# -- rm --------------------------------------------------------------------------------------------


def test_rm_removes_states_with_their_subtrees_and_frees_their_bytes(cli, study, exp_dir):
    study(exp_dir, "big")
    rows = table(cli, exp_dir)
    leaves = by_leaf(rows)
    blobs = sorted((exp_dir / "blobs").rglob("*"))
    blob_files = [path for path in blobs if path.is_file()]
    assert len(blob_files) == 2  # two Blob(seed=0) states share one blob
    big = {row["parent"]: row for row in rows if row["recipe"] == "Blob"}
    # Remove the leaf (0, 2) by a prefix: its Blob child goes with it; the shared blob stays.
    result = cli("rm", exp_dir, leaves[0, 2]["id"][:10])
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].startswith(f"removed 2 state(s) in {exp_dir}")
    assert lines[1].split() == [leaves[0, 2]["id"][:12], "done", "Multiply(factor=2)"]
    assert lines[2].split() == [
        big[leaves[0, 2]["id"]]["id"][:12],
        "done",
        "Blob(megabytes=1,",
        "seed=0)",
    ]
    assert "0 bytes of blobs no remaining state refers to" in result.stdout
    assert all(path.exists() for path in blob_files)
    # Removing the method Add(0) takes its whole subtree, the last holder of the shared blob.
    result = cli("rm", exp_dir, leaves[0]["id"])
    assert result.returncode == 0, result.stderr
    assert "removed 5 state(s)" in result.stdout  # Add(0), its 3 leaves left, one Blob
    assert "1.0 MiB of blobs no remaining state refers to (collected by gc)" in result.stdout
    assert sum(path.exists() for path in blob_files) == 1
    after = table(cli, exp_dir)
    assert len(after) == len(rows) - 7
    assert not {row["id"] for row in after} & {leaves[0]["id"], leaves[0, 5]["id"]}
    assert cli("verify", exp_dir).returncode == 0


def test_rm_refuses_to_orphan_children(cli, study, exp_dir):
    study(exp_dir)
    leaves = by_leaf(table(cli, exp_dir))
    before = files(exp_dir)
    result = cli("rm", exp_dir, leaves[1]["id"][:12], "--no-descendants")
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1 and "Traceback" not in result.stderr
    assert f"State {leaves[1]['id'][:12]} (Add) has 4 child state(s)" in result.stderr
    assert "would orphan them. Nothing was removed" in result.stderr
    assert "without --no-descendants" in result.stderr
    assert files(exp_dir) == before
    # a leaf has no children: removed alone; so is a parent named with all its children
    assert cli("rm", exp_dir, leaves[1, 2]["id"], "--no-descendants").returncode == 0
    children = [leaves[0, factor]["id"] for factor in (2, 3, 4, 5)]
    result = cli("rm", exp_dir, leaves[0]["id"], *children, "--no-descendants")
    assert result.returncode == 0, result.stderr
    assert len(table(cli, exp_dir)) == 11 - 6
    # the API raises the same refusal
    exp = dg.Experiment.restore(exp_dir)
    with pytest.raises(dg.ExperimentDefinitionError, match="would orphan them"):
        exp.remove(exp.graph.node(leaves[1]["id"]), descendants=False)


def test_rm_failed_removes_the_failed_states_only(cli, study, exp_dir):
    study(exp_dir, "boom")
    rows = table(cli, exp_dir)
    failed = {row["id"] for row in rows if row["status"] == "failed"}
    assert len(failed) == 2
    result = cli("rm", exp_dir, "--failed")
    assert result.returncode == 0, result.stderr
    assert (
        "removed 2 state(s)" in result.stdout
        and result.stdout.count("failed  Boom(fail=True)") == 2
    )
    after = table(cli, exp_dir)
    assert {row["id"] for row in after} == {row["id"] for row in rows} - failed
    assert cli("failures", exp_dir).stdout.strip() == "no failures recorded"
    again = cli("rm", exp_dir, "--failed")
    assert again.returncode == 0 and "no state is failed; nothing removed." in again.stdout


def test_rm_tag_removes_the_states_with_a_matching_tag(cli, study, exp_dir):
    study(exp_dir)
    rows = table(cli, exp_dir)
    tagged = {row["id"] for row in rows if "method1" in row["tags"]}
    assert len(tagged) == 5
    result = cli("rm", exp_dir, "--tag", "meth*1")
    assert result.returncode == 0, result.stderr
    assert "removed 5 state(s)" in result.stdout
    assert {row["id"] for row in table(cli, exp_dir)} == {row["id"] for row in rows} - tagged
    nothing = cli("rm", exp_dir, "--tag", "nope*")
    assert nothing.returncode == 0 and "nothing removed" in nothing.stdout


def test_rm_identity_1_does_what_the_warning_says_on_a_format1_store(
    cli, study, tmp_path, call_log
):
    """A store of an older dagger: a run warns and tells how to remove the old states; that
    exact command removes them (converting the folder first), and the warning stops."""
    old_store = tmp_path / "old"
    shutil.copytree(TESTS / "data" / "format1", old_store)
    old_ids = {row["id"] for row in table(cli, old_store)}
    assert len(old_ids) == 7
    ran = study(old_store)  # scheme-2 ids: its 11 states are new
    warning = [line for line in ran.stderr.splitlines() if "identity scheme 1" in line]
    assert len(warning) == 1
    command = re.search(r"dagger rm (\S+) --identity 1", warning[0])
    assert command is not None and Path(command.group(1)) == old_store
    result = cli("rm", command.group(1), "--identity", "1")
    assert result.returncode == 0, result.stderr
    assert "removed 7 state(s)" in result.stdout
    after = table(cli, old_store)
    assert len(after) == 11 and not {row["id"] for row in after} & old_ids
    assert all(row["status"] == "done" for row in after)
    meta = json.loads((old_store / "experiment.json").read_text())
    assert meta["format"] == 2 and meta["identities"] == [2]
    shown = cli("show", old_store)
    assert shown.returncode == 0 and "identity scheme" not in shown.stderr
    before = len(read_log(call_log))
    again = study(old_store)
    assert "identity scheme" not in again.stderr
    assert read_log(call_log)[before:] == []  # nothing recomputed
    assert cli("verify", old_store).returncode == 0


def test_rm_identity_matching_nothing_changes_nothing(cli, study, exp_dir):
    study(exp_dir)
    before = files(exp_dir)
    result = cli("rm", exp_dir, "--identity", "1")
    assert result.returncode == 0, result.stderr
    assert "no state is of identity scheme 1; nothing removed." in result.stdout
    assert files(exp_dir) == before


# -- dry runs and bad arguments --------------------------------------------------------------------


@pytest.mark.parametrize(
    "args",
    [
        ["rm", "{leaf}"],
        ["rm", "--failed", "--tag", "big"],
        ["prune", "--keep", "top 1 by result.evaluate.accuracy"],
        ["prune", "--keep", "bottom 2 by result.evaluate.accuracy", "--per", "param.amount"],
    ],
)
def test_a_dry_run_writes_nothing(cli, study, exp_dir, args):
    study(exp_dir, "big", "boom")
    leaf = by_leaf(table(cli, exp_dir))[0, 2]["id"]
    before = files(exp_dir)
    argv = [arg.format(leaf=leaf) for arg in args]
    result = cli(argv[0], exp_dir, *argv[1:], "--dry-run")
    assert result.returncode == 0, result.stderr
    assert "would " in result.stdout and "Dry run: nothing was changed." in result.stdout
    assert "would free" in result.stdout
    assert files(exp_dir) == before
    # ... and says what the real one then does
    real = cli(argv[0], exp_dir, *argv[1:])
    assert real.returncode == 0, real.stderr
    dry_ids = re.findall(r"^  ([0-9a-f]{12})  ", result.stdout.split("state(s) in")[-1], re.M)
    real_ids = re.findall(r"^  ([0-9a-f]{12})  ", real.stdout.split("state(s) in")[-1], re.M)
    assert dry_ids == real_ids and dry_ids


def test_a_dry_run_of_a_format1_store_writes_nothing(cli, tmp_path):
    old_store = tmp_path / "old"
    shutil.copytree(TESTS / "data" / "format1", old_store)
    before = files(old_store)
    result = cli("rm", old_store, "--identity", "1", "--dry-run")
    assert result.returncode == 0, result.stderr
    assert "would remove 7 state(s)" in result.stdout
    assert files(old_store) == before


@pytest.mark.parametrize(
    ("args", "needles"),
    [
        (
            ["prune", "--keep", "best 3 by result.evaluate.accuracy"],
            ["'best 3 by result.evaluate.accuracy' is not of the form 'top K by COLUMN'"],
        ),
        (["prune", "--keep", "top 3"], ["'top 3' is not of the form", "dagger ls DIR"]),
        (
            ["prune", "--keep", "top 0 by result.evaluate.accuracy"],
            ["keeps '0' states; K must be a whole number of at least 1"],
        ),
        (
            ["prune", "--keep", "top three by result.evaluate.accuracy"],
            ["keeps 'three' states; K must be a whole number"],
        ),
        (
            ["prune", "--keep", "top 3 by result.evaluate.acuracy"],
            [
                "The keep rule's column 'result.evaluate.acuracy' is not a column",
                "did you mean 'result.evaluate.accuracy'",
            ],
        ),
        (
            ["prune", "--keep", "top 3 by result.evaluate.note"],
            ["'result.evaluate.note' holds 'ok' (a str)", "a keep rule needs numbers"],
        ),
        (
            ["prune", "--keep", "top 3 by result.evaluate.accuracy", "--per", "param.method"],
            ["The per column 'param.method' is not a column"],
        ),
        (["rm"], ["name the states to remove"]),
        (["rm", "ffffffffff"], ["The id 'ffffffffff' matches no state of this experiment"]),
    ],
)
def test_bad_arguments_give_one_clear_line_exit_2_and_change_nothing(
    cli, study, exp_dir, args, needles
):
    study(exp_dir)
    before = files(exp_dir)
    result = cli(args[0], exp_dir, *args[1:])
    assert result.returncode == 2, result.stdout + result.stderr
    assert result.stdout == "" and "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    for needle in needles:
        assert needle in result.stderr
    assert files(exp_dir) == before


def test_bad_keep_rules_raise_the_documented_errors(study, exp_dir):
    study(exp_dir)
    exp = dg.Experiment.restore(exp_dir)
    with pytest.raises(dg.InvalidArgumentError, match="not of the form"):
        exp.prune("top by accuracy")
    with pytest.raises(dg.errors.ColumnNotFoundError, match="did you mean"):
        exp.prune("top 1 by result.evaluate.acc")
    with pytest.raises(dg.errors.InvalidQueryError, match="needs numbers"):
        exp.prune("top 1 by recipe")


# -- the API, and a removal during a run -----------------------------------------------------------


@pytest.mark.parametrize("where", ["directory", "memory"])
def test_remove_takes_promises_states_and_nodesets(exp_dir, where, call_log):
    target = dg.MemoryStore() if where == "memory" else exp_dir
    exp = dg.Experiment(target, CounterState)
    root = exp.spawn_new_tree(start=1)
    a = Add(1)(root)
    b, c = Multiply(3)(a), Multiply(5)(a)
    e = Add(2)(root)
    exp.run(progress=False)
    report = exp.remove(b, dry_run=True)
    assert report.ids == [b.sha()] and report.dry_run
    assert exp.store.snapshot().status_of(b.sha()) is not None
    assert exp.remove([b]).ids == [b.sha()]
    restored = dg.Experiment.restore(target)
    nodes = restored.graph.nodes.of_recipe("Multiply")
    assert [node.sha() for node in nodes] == [c.sha()]
    assert restored.remove(nodes).ids == [c.sha()]
    assert restored.graph is not None and set(restored.graph.node_map) == {
        root.sha(),
        a.sha(),
        e.sha(),
    }
    with pytest.raises(dg.StateNotFoundError, match="matches no state"):
        restored.remove(c.sha())
    with pytest.raises(dg.ExperimentDefinitionError, match="takes ids, states or promises"):
        restored.remove(3.5)


GATED_RUN = textwrap.dedent(
    """
    import os
    import sys
    import time
    import dagger as dg
    from helpers import Add, CounterState, Multiply, Sleep, log_call

    class Gate(dg.Recipe):
        \"\"\"Waits until a file exists: the run is surely going on until the test opens it.\"\"\"

        def __init__(self, path):
            self.path = path

        def run(self, state):
            log_call("gate")
            while not os.path.exists(self.path):
                time.sleep(0.02)
            return state

    exp = dg.Experiment(sys.argv[1], CounterState)
    root = exp.spawn_new_tree(start=1)
    for amount in range(12):
        with exp.tag(f"branch{amount}"):
            state = Add(amount)(root)
            if amount == 6:
                state = Gate(sys.argv[2])(state)
            Multiply(2)(Sleep(0.01)(state))
    exp.run(progress=False)
    """
)


def test_dagger_rm_during_a_run_corrupts_nothing(cli, tmp_path, subprocess_env, call_log):
    exp_dir, gate = tmp_path / "exp", tmp_path / "gate"
    (tmp_path / "run.py").write_text(GATED_RUN)
    env = {**subprocess_env, "DAGGER_TEST_LOG": str(call_log)}
    command = [sys.executable, "run.py", str(exp_dir), str(gate)]
    run = subprocess.Popen(command, cwd=tmp_path, env=env, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and "gate" not in read_log(call_log):
            time.sleep(0.02)
        # the run is in branch 6, past branches 0-5: remove three of them while it waits
        removed = cli("rm", exp_dir, "--tag", "branch[012]")
        assert removed.returncode == 0, removed.stderr
        assert "removed 9 state(s)" in removed.stdout
        assert run.poll() is None  # the run was going on all along
    finally:
        gate.touch()
    _, stderr = run.communicate(timeout=120)
    assert run.returncode == 0, stderr.decode()
    assert cli("verify", exp_dir).returncode == 0
    # a rerun computes exactly what the removal took: 3 branches of 3 states
    before = len(read_log(call_log))
    rerun = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True)
    assert rerun.returncode == 0, rerun.stderr
    assert sorted(read_log(call_log)[before:]) == sorted(
        [f"add:{amount}" for amount in range(3)] + ["sleep:0.01"] * 3 + ["mul:2"] * 3
    )
    after = DirectoryStore(exp_dir).snapshot()
    assert len(after) == 1 + 12 * 3 + 1 and all(str(status) == "done" for status in after.status)
    assert cli("verify", exp_dir).returncode == 0
    exp = dg.Experiment(exp_dir, CounterState)
    root = exp.spawn_new_tree(start=1)
    assert exp.get(Multiply(2)(Add(1)(root))).value == 4


def test_prune_from_a_script_curates_only_the_tree_it_defined(
    cli, study, exp_dir, tmp_path, subprocess_env, call_log
):
    """A store that also holds another tree (older code, other settings): a script's
    exp.prune ranks and prunes its own tree, as exp.audit audits it; the rest is untouched."""
    study(exp_dir)  # the first tree: root start=1, best leaf accuracy 10
    first = {row["id"] for row in table(cli, exp_dir)}
    other = STUDY.replace("start=1", "start=0").replace(
        "exp.run(progress=False)",
        'exp.run(progress=False)\n    print(exp.prune("top 1 by result.evaluate.accuracy"))',
    )
    (tmp_path / "other.py").write_text(other)
    process = subprocess.run(
        [sys.executable, "other.py", str(exp_dir)],
        cwd=tmp_path,
        env={**subprocess_env, "DAGGER_TEST_LOG": str(call_log)},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert process.returncode == 0, process.stderr
    assert "left as they are" in process.stdout
    rows = table(cli, exp_dir)
    ids = {row["id"]: row for row in rows}
    second = [row for row in rows if row["id"] not in first]
    assert len(first) == len(second) == 11
    assert all(ids[state_id]["status"] == "done" for state_id in first)  # its 10 did not compete
    kept = {row["id"] for row in second if row["status"] == "done"}
    best = max(second, key=lambda row: row.get("result.evaluate.accuracy") or -1)
    assert best["result.evaluate.accuracy"] == 5.0
    assert kept == {best["id"], best["parent"], ids[best["parent"]]["parent"]}


def test_rm_refuses_the_current_identity_scheme(cli, study, exp_dir):
    """--identity names an older scheme to clear out; the current one is every state runs
    reuse, so asking for it is a mistake, refused before anything is touched."""
    study(exp_dir)
    before = files(exp_dir)
    result = cli("rm", exp_dir, "--identity", str(IDENTITY_VERSION))
    assert result.returncode == 2
    assert "is the one this dagger computes ids with" in result.stderr
    assert "Traceback" not in result.stderr
    assert files(exp_dir) == before


@pytest.mark.parametrize("keep", ["empty", "typo"])
def test_prune_refuses_to_keep_nothing(study, exp_dir, keep):
    """An empty selection (a typo in a query) would prune every state: refused."""
    study(exp_dir)
    before = files(exp_dir)
    exp = dg.Experiment.restore(exp_dir)
    nodes = exp.graph.nodes
    selection = nodes.where(factor=99) if keep == "typo" else []
    with pytest.raises(dg.InvalidArgumentError, match="Nothing to keep"):
        exp.prune(selection)
    assert files(exp_dir) == before


def test_a_removal_marks_children_before_parents(study, exp_dir):
    """Stopped half-way (Ctrl-C, a kill), a removal leaves whole subtrees: every state's
    marker is written after those of its descendants, so none is left without its parent."""
    from dagger.store.frames import Kind, scan

    study(exp_dir)
    exp = dg.Experiment.restore(exp_dir)
    method = exp.graph.nodes.of_recipe("Add")[0]
    exp.remove(method)
    order = []
    for log in sorted((exp_dir / "log").glob("*.log")):
        frames, _ = scan(log.read_bytes())
        for frame in frames:
            if getattr(frame, "kind", None) is Kind.MARKER:
                entry = json.loads(frame.document)
                if entry["kind"] == "removed":
                    order.append(entry["id"])
    assert len(order) == 5 and order[-1] == method.sha()  # four leaves, then their parent
