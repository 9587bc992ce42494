"""Audit reproducibility (issue 16, item 3): recompute stored states from their stored parents in
a scratch area, compare every attribute, report and record the outcome."""

from __future__ import annotations

import random
import re
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from helpers import (
    Add,
    Boom,
    Config,
    CounterState,
    Multiply,
    NetState,
    NoisyNudge,
    ReadFile,
    Renamed,
    SeededTrain,
    UnseededNetState,
    WithConfig,
    WriteBeside,
)

import dagger as dg


def snapshot(folder):
    """Every file under ``folder`` (but the index, a cache) with its bytes and modification
    time."""
    return {
        str(path.relative_to(folder)): (path.read_bytes(), path.stat().st_mtime_ns)
        for path in sorted(folder.rglob("*"))
        if path.is_file() and path.name != "index.json"
    }


def kept(before, after):
    """Every file of ``before`` is in ``after`` unchanged, and the only new files are logs
    (a run's or an audit's notes: tags, results and audit outcomes are log entries)."""
    added = set(after) - set(before)
    return all(after.get(name) == value for name, value in before.items()) and all(
        name.startswith("log/") for name in added
    )


def net_tree(exp_dir, *, noisy=False):
    """NetState(seed=0) -> SeededTrain(1) -> SeededTrain(2); with ``noisy``, also
    root -> NoisyNudge(1e-3)."""
    exp = dg.Experiment(exp_dir, NetState)
    root = exp.spawn_new_tree(seed=0)
    first = SeededTrain(1)(root)
    second = SeededTrain(2)(first)
    nodes = {"root": root, "first": first, "second": second}
    if noisy:
        nodes["noisy"] = NoisyNudge(1e-3)(root)
    exp.run(progress=False)
    return exp, nodes


@pytest.fixture
def cli(subprocess_env, tmp_path):
    """Runs ``python -m dagger ARGS`` in tmp_path (beside helpers.py); returns the process."""

    def run(*args, program=(sys.executable, "-m", "dagger")):
        return subprocess.run(
            [*program, *map(str, args)],
            cwd=tmp_path,
            env=subprocess_env,
            capture_output=True,
            text=True,
            timeout=300,
        )

    return run


# -- in-process: the API -------------------------------------------------------------------------


def test_a_deterministic_recipe_reproduces_and_the_outcome_is_recorded(exp_dir):
    exp, nodes = net_tree(exp_dir)
    stored = snapshot(exp_dir)

    report = exp.audit(sample=None)

    assert report.ok
    assert [(s.state_id, s.outcome, s.recipe_source) for s in report.states] == [
        (nodes["root"].sha(), "reproduced", "script"),
        (nodes["first"].sha(), "reproduced", "script"),
        (nodes["second"].sha(), "reproduced", "script"),
    ]
    assert [s.recipe for s in report.states] == [
        "root (NetState)",
        "SeededTrain(seed=1, steps=2)",
        "SeededTrain(seed=2, steps=2)",
    ]
    assert all(s.comparison.equal and s.comparison.compared > 10 for s in report.states)
    assert report.summary() == "3 reproduced, 0 differ, 0 errors, 0 not audited"
    # Never replaced: every record and payload is the same file, untouched.
    assert kept(stored, snapshot(exp_dir))
    tree = dg.Experiment.restore(exp_dir).graph
    assert tree.nodes.to_dataframe()["audit"].tolist() == ["reproduced"] * 3
    note = tree.root.dagger.notes.audit
    assert (note.outcome, note.rtol, note.atol, note.differences) == ("reproduced", 0, 0, ())
    assert note.environment["python"] == report.environment["python"]


def test_a_nondeterministic_recipe_is_flagged_with_what_differs_and_by_how_much(exp_dir):
    exp, nodes = net_tree(exp_dir, noisy=True)
    noisy = nodes["noisy"].sha()

    report = exp.audit([noisy])

    assert not report.ok
    [audit] = report.states
    assert (audit.state_id, audit.outcome, audit.recipe) == (
        noisy,
        "differs",
        "NoisyNudge(scale=0.001)",
    )
    assert audit.comparison.paths == ["model.0.weight"]  # everything else reproduced
    difference = audit.comparison["model.0.weight"]
    # Two draws of rand() * 1e-3 differ by less than 1e-3, and in every element.
    assert 0 < difference.max_abs_diff < 1e-3
    assert difference.fraction == 1.0
    text = str(report)
    assert f"{noisy[:12]}  NoisyNudge(scale=0.001)  differs" in text
    assert "model.0.weight" in text and "100.00%" in text
    assert f"{difference.max_abs_diff:.6g}" in text
    frame = report.to_dataframe()
    assert frame.loc[0, "max_abs_diff"] == difference.max_abs_diff
    assert frame.loc[0, "paths"] == ["model.0.weight"]
    tree = dg.Experiment.restore(exp_dir).graph
    assert tree.node(noisy).dagger.notes.audit.differences == ("model.0.weight",)
    assert tree.node(noisy).dagger.notes.audit.outcome == "differs"
    # Within a tolerance larger than the noise it reproduces, and the note says so.
    assert exp.audit([noisy], atol=1e-3).ok
    assert dg.Experiment.restore(exp_dir).graph.node(noisy).dagger.notes.audit.atol == 1e-3


def test_an_unseeded_root_is_flagged(exp_dir):
    exp = dg.Experiment(exp_dir, UnseededNetState)
    root = exp.spawn_new_tree(width=3)
    exp.run(progress=False)
    [audit] = exp.audit(sample=None).states
    assert (audit.state_id, audit.outcome) == (root.sha(), "differs")
    assert audit.comparison.paths == ["model.weight", "model.bias"]


def test_order_in_the_process_does_not_hide_an_unseeded_draw(exp_dir):
    """Not listed: the unseeded draw follows the root's torch.manual_seed in the run; an audit
    that recomputes the root first would replay the same global generator state. Each
    recomputation starts from fresh generators, and the caller's are put back afterwards."""
    exp, nodes = net_tree(exp_dir, noisy=True)
    torch.manual_seed(123)
    random_state, torch_state = random.getstate(), torch.get_rng_state()
    report = exp.audit([nodes["root"], nodes["noisy"]])
    assert [s.outcome for s in report.states] == ["reproduced", "differs"]
    assert random.getstate() == random_state
    assert torch.equal(torch.get_rng_state(), torch_state)


def test_a_restored_experiment_rebuilds_recipes_from_their_records(exp_dir):
    exp = dg.Experiment(exp_dir, CounterState)
    root = exp.spawn_new_tree(start=1)
    add = Add(1)(root)
    renamed = Renamed(0.5)(add)  # stored as learning_rate, taken as lr: set as attributes
    configured = WithConfig(Config(width=3, lr=0.1))(add)  # a dataclass: only its repr is kept
    exp.run(progress=False)

    restored = dg.Experiment.restore(exp_dir)
    report = restored.audit(sample=None)
    outcomes = {s.state_id: (s.outcome, s.recipe_source) for s in report.states}
    assert outcomes == {
        root.sha(): ("reproduced", "record"),
        add.sha(): ("reproduced", "record"),
        renamed.sha(): ("reproduced", "record"),
        configured.sha(): ("not audited", "record"),
    }
    reason = report[configured.sha()].reason
    assert "cannot be rebuilt from the record's parameters" in reason
    assert "exp.audit()" in reason
    # What was not audited is not recorded.
    assert dg.Experiment.restore(exp_dir).graph.node(configured.sha()).dagger.notes.audit is None
    # From the script that defines the tree, it is audited with the script's recipe.
    exp = dg.Experiment(exp_dir, CounterState)
    configured = WithConfig(Config(width=3, lr=0.1))(Add(1)(exp.spawn_new_tree(start=1)))
    [audit] = exp.audit([configured]).states
    assert (audit.outcome, audit.recipe_source) == ("reproduced", "script")


def test_a_recipe_that_raises_when_recomputed_is_recorded_as_an_error(exp_dir, tmp_path):
    number = tmp_path / "number.txt"
    number.write_text("5")
    exp = dg.Experiment(exp_dir, CounterState)
    state = ReadFile(str(number))(exp.spawn_new_tree(start=1))
    exp.run(progress=False)
    number.unlink()

    [audit] = exp.audit([state.sha()[:10]]).states
    assert audit.outcome == "error"
    assert audit.reason.startswith("FileNotFoundError:")
    assert "read_text" in audit.traceback
    note = dg.Experiment.restore(exp_dir).graph.node(state.sha()).dagger.notes.audit
    assert (note.outcome, note.error) == ("error", audit.reason)


def test_files_a_recipe_writes_beside_the_experiment_go_to_a_scratch_folder(exp_dir):
    exp = dg.Experiment(exp_dir, CounterState)
    WriteBeside("side.txt")(exp.spawn_new_tree(start=1))
    exp.run(progress=False)
    written = (exp_dir / "side.txt").read_text()
    before = snapshot(exp_dir)

    report = exp.audit(sample=None)

    assert report.ok
    assert (exp_dir / "side.txt").read_text() == written
    assert kept(before, snapshot(exp_dir))


def test_states_that_cannot_be_recomputed_say_why(exp_dir):
    exp = dg.Experiment(exp_dir, CounterState)
    root = exp.spawn_new_tree(start=1)
    parent = Add(1)(root)
    child = Multiply(3)(parent)
    failed = Boom()(root)
    with pytest.raises(dg.RunError):
        exp.run(progress=False)
    dg.store.DirectoryStore(exp_dir).prune([parent.sha()])  # its payload dropped

    report = exp.audit([child, failed.sha(), parent])
    reasons = {s.state_id: (s.outcome, s.reason) for s in report.states}
    assert reasons[child.sha()][0] == "not audited"
    assert f"its parent {parent.sha()[:12]} cannot be loaded" in reasons[child.sha()][1]
    assert reasons[failed.sha()] == (
        "not audited",
        "it is not stored (it failed, was never computed, or its payload is missing): run the "
        "experiment first",
    )
    assert reasons[parent.sha()][0] == "not audited"
    assert report.summary() == "0 reproduced, 0 differ, 0 errors, 3 not audited"
    assert not report.ok


def test_samples_are_drawn_from_the_tree_with_a_seed_that_repeats_them(exp_dir):
    exp = dg.Experiment(exp_dir, CounterState)
    root = exp.spawn_new_tree(start=1)
    for amount in range(6):
        Add(amount)(root)
    exp.run(progress=False)
    # Another tree in the same folder is not this script's: not drawn from.
    other = dg.Experiment(exp_dir, CounterState)
    Multiply(9)(other.spawn_new_tree(start=2))
    other.run(progress=False)

    first = exp.audit(sample=3, seed=11)
    again = exp.audit(sample=3, seed=11)
    assert first.seed == 11 and first.candidates == 7
    assert [s.state_id for s in first.states] == [s.state_id for s in again.states]
    assert len(first.states) == 3
    drawn = exp.audit(sample=2)
    assert isinstance(drawn.seed, int)
    assert [s.state_id for s in exp.audit(sample=2, seed=drawn.seed).states] == [
        s.state_id for s in drawn.states
    ]
    assert f"2 of 7 stored states, drawn with seed={drawn.seed}" in str(drawn)
    # A restored experiment draws from the whole store, grown further or not.
    restored = dg.Experiment.restore(exp_dir)
    assert restored.audit(sample=None).candidates == 9
    grown = Multiply(2)(restored.graph.leaves[0])
    restored.run(progress=False)
    report = restored.audit(sample=None)
    assert report.candidates == 10 and report.ok
    assert report.states[-1].state_id == grown.sha()


@pytest.mark.parametrize(
    ("arguments", "error", "match"),
    [
        ({"sample": 0}, dg.InvalidArgumentError, r"sample=0 is not a number of states"),
        ({"sample": 2.5}, dg.InvalidArgumentError, r"sample=2.5"),
        ({"rtol": -1}, dg.InvalidArgumentError, r"rtol=-1 is not a tolerance"),
        ({"atol": float("nan")}, dg.InvalidArgumentError, r"atol=nan is not a tolerance"),
        ({"states": "ffffff"}, dg.StateNotFoundError, r"'ffffff' matches no state"),
        ({"states": [3]}, dg.ExperimentDefinitionError, r"takes ids, states or promises"),
    ],
)
def test_bad_arguments_are_named(exp_dir, arguments, error, match):
    exp, _ = net_tree(exp_dir)
    before = snapshot(exp_dir)
    with pytest.raises(error, match=match):
        exp.audit(**arguments)
    assert snapshot(exp_dir) == before  # nothing was audited, nothing recorded


def test_an_ambiguous_prefix_is_an_error(memory):
    exp = dg.Experiment(memory, CounterState)
    root = exp.spawn_new_tree(start=1)
    for amount in range(40):
        Add(amount)(root)
    exp.run(progress=False)
    prefixes = [state.sha()[0] for state in dg.Experiment.restore(memory).graph.nodes]
    shared = max(set(prefixes), key=prefixes.count)
    with pytest.raises(dg.StateNotFoundError, match="give more digits"):
        exp.audit(shared)


# -- the command line ----------------------------------------------------------------------------


def test_cli_flags_a_nondeterministic_state_and_passes_the_others(cli, exp_dir):
    _, nodes = net_tree(exp_dir, noisy=True)
    noisy = nodes["noisy"].sha()

    result = cli("audit", exp_dir, "--sample", "0")
    assert result.returncode == 1, result.stderr
    assert "3 reproduced, 1 differs, 0 errors, 0 not audited" in result.stdout
    lines = result.stdout.splitlines()
    assert [noisy[:12], "NoisyNudge(scale=0.001)", "differs"] in [
        line.split()[:3] for line in lines
    ]
    assert any(line.split()[:2] == ["model.0.weight", "values"] for line in lines)
    assert "audited in: python" in result.stdout

    # The others, by id prefix: exit 0.
    result = cli("audit", exp_dir, nodes["first"].sha()[:10], nodes["second"].sha())
    assert result.returncode == 0, result.stdout + result.stderr
    assert "2 reproduced, 0 differ, 0 errors, 0 not audited" in result.stdout

    # Within a tolerance: exit 0; the outcome shows in `dagger ls`.
    result = cli("audit", exp_dir, noisy[:8], "--atol", "1e-3")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "within rtol=0, atol=0.001" in result.stdout
    shown = cli("show", exp_dir).stdout.splitlines()
    assert next(line for line in shown if noisy[:12] in line).endswith("audit: reproduced")
    listing = cli("ls", exp_dir, "--format", "csv")
    assert listing.stdout.splitlines()[0].split(",").count("audit") == 1
    assert listing.stdout.count(",reproduced") == 4


def test_cli_sample_and_seed(cli, exp_dir):
    net_tree(exp_dir)
    first = cli("audit", exp_dir, "--sample", "2", "--seed", "4")
    again = cli("audit", exp_dir, "--sample", "2", "--seed", "4")
    assert first.returncode == 0, first.stderr
    assert "audit of 2 of 3 stored states, drawn with seed=4" in first.stdout
    table = [line.split()[0] for line in first.stdout.splitlines()[2:4]]
    assert table == [line.split()[0] for line in again.stdout.splitlines()[2:4]]


def test_cli_errors_are_one_line(cli, exp_dir, tmp_path):
    net_tree(exp_dir)
    for arguments, message in [
        (
            (exp_dir, "ffffffff"),
            "dagger audit: The id 'ffffffff' matches no state of this experiment (nearest: ",
        ),
        (
            (exp_dir, "--rtol", "-1"),
            "dagger audit: rtol=-1.0 is not a tolerance: pass a number >= 0 (0 for a bitwise "
            "comparison).",
        ),
        ((tmp_path / "nothing",), f"dagger audit: `{tmp_path / 'nothing'}` does not exist"),
    ]:
        result = cli("audit", *arguments)
        assert result.returncode == 2, result.stdout + result.stderr
        assert result.stdout == ""
        [line] = result.stderr.strip().splitlines()
        assert line.startswith(message)
        if "(nearest: " in message:  # the nearest stored ids, then where to see them all
            assert re.fullmatch(
                r".*\(nearest: [0-9a-f]{12}(, [0-9a-f]{12}){0,2}\); `dagger ls DIR` lists the ids\.",
                line,
            ), line


def test_the_console_script_imports_recipes_from_the_current_folder(cli, exp_dir):
    net_tree(exp_dir, noisy=True)
    script = Path(sys.executable).parent / "dagger"
    if not script.exists():
        script = Path(shutil.which("dagger") or "dagger")
    result = cli("audit", exp_dir, "--sample", "0", program=(str(script),))
    assert "3 reproduced, 1 differs" in result.stdout, result.stdout + result.stderr
    assert result.returncode == 1


SCRIPT = """
import sys
import dagger as dg
from helpers import CounterState


class Bump(dg.Recipe):
    def __init__(self, amount):
        self.amount = amount

    def run(self, state):
        state.value = state.value + self.amount
        return state


exp = dg.Experiment("exp", CounterState)
bumped = Bump(2)(exp.spawn_new_tree(start=1))
if sys.argv[1] == "run":
    exp.run(progress=False)
else:
    report = exp.audit(sample=None)
    print(report)
    sys.exit(0 if report.ok else 1)
"""


def test_a_recipe_defined_in_a_script_is_audited_from_that_script(cli, tmp_path, subprocess_env):
    (tmp_path / "study.py").write_text(SCRIPT)

    def script(mode):
        return subprocess.run(
            [sys.executable, "study.py", mode],
            cwd=tmp_path,
            env=subprocess_env,
            capture_output=True,
            text=True,
            timeout=300,
        )

    assert script("run").returncode == 0
    result = cli("audit", tmp_path / "exp", "--sample", "0")
    assert result.returncode == 1
    assert "1 reproduced, 0 differ, 0 errors, 1 not audited" in result.stdout
    assert "defined in a script (`__main__`)" in result.stdout
    assert "call exp.audit()" in result.stdout

    result = script("audit")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "2 reproduced, 0 differ, 0 errors, 0 not audited" in result.stdout


def test_a_recipe_whose_code_changed_since_is_not_audited(cli, tmp_path, subprocess_env):
    module = tmp_path / "bumps.py"
    module.write_text(
        textwrap.dedent(
            """
            import dagger as dg

            class Bump(dg.Recipe):
                def __init__(self, amount):
                    self.amount = amount

                def run(self, state):
                    state.value = state.value + self.amount
                    return state
            """
        )
    )
    (tmp_path / "study.py").write_text(
        "import dagger as dg\nfrom bumps import Bump\nfrom helpers import CounterState\n"
        "exp = dg.Experiment('exp', CounterState)\n"
        "Bump(2)(exp.spawn_new_tree(start=1))\nexp.run(progress=False)\n"
    )
    done = subprocess.run(
        [sys.executable, "study.py"], cwd=tmp_path, env=subprocess_env, capture_output=True
    )
    assert done.returncode == 0, done.stderr
    result = cli("audit", tmp_path / "exp", "--sample", "0")
    assert result.returncode == 0, result.stdout + result.stderr  # same code: reproduced

    module.write_text(module.read_text().replace("state.value + self.amount", "state.value * 2"))
    result = cli("audit", tmp_path / "exp", "--sample", "0")
    assert result.returncode == 1
    assert "the code of `Bump` changed since the state was computed" in result.stdout


def test_the_audit_column_sorts_and_filters_like_the_others(exp_dir):
    exp, nodes = net_tree(exp_dir, noisy=True)
    exp.audit([nodes["noisy"], nodes["first"]])
    restored = dg.Experiment.restore(exp_dir).graph.nodes
    ordered = restored.sort_by("audit")
    assert [node.dagger.notes.audit.outcome for node in ordered[:2]] == ["differs", "reproduced"]
    assert ordered[2].dagger.notes.audit is None  # never audited: last
    frame = restored.to_dataframe()
    assert sorted(frame["audit"].dropna()) == ["differs", "reproduced"]


def test_the_scratch_folder_is_removed_after_the_audit(exp_dir, tmp_path, subprocess_env):
    """Recomputed states and the files recipes write go under TMPDIR, removed afterwards."""
    exp = dg.Experiment(exp_dir, CounterState)
    WriteBeside("side.txt")(exp.spawn_new_tree(start=1))
    exp.run(progress=False)
    written = (exp_dir / "side.txt").read_text()
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    result = subprocess.run(
        [sys.executable, "-m", "dagger", "audit", str(exp_dir), "--sample", "0"],
        cwd=tmp_path,
        env={**subprocess_env, "TMPDIR": str(scratch)},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "2 reproduced" in result.stdout
    assert list(scratch.iterdir()) == []
    assert (exp_dir / "side.txt").read_text() == written
