"""A user's tree script has one identity whether it runs as ``__main__`` or is imported.

``python tree.py`` names the script's module ``__main__``; a notebook or another script that
does ``import tree`` names it ``tree``. The code is the same, so the ids, the Function results
and the names they are stored under must be too: nothing may be recomputed when a user
switches between the two (found by an attacker and by a new user).
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

from helpers import read_log

TREE = '''
import enum
import json
import os
import sys

import dagger as dg
from helpers import log_call


class Mode(enum.Enum):
    FAST = "fast"
    SLOW = "slow"


class Counter(dg.ExperimentState):
    PROPERTIES = ["start"]

    def initialize_state(self, **arguments):
        log_call("root")
        self.value = self.start


class Add(dg.Recipe):
    def __init__(self, amount, mode=None):
        self.amount = amount
        self.mode = mode

    def run(self, state):
        log_call(f"add:{self.amount}:{self.mode.value if self.mode else '-'}")
        state.value = state.value + self.amount
        return state


def evaluate(state):
    log_call("evaluate")
    return {"accuracy": state.value}


class Scale:
    """A callable object used as a Function: its automatic name digests its code."""

    def __init__(self, factor):
        self.factor = factor

    def __call__(self, state):
        log_call(f"scale:{self.factor}")
        return state.value * self.factor


def build(directory, with_mode=False):
    exp = dg.Experiment(directory, Counter)
    root = exp.spawn_new_tree(start=1)
    children = []
    for amount in (1, 2, 3):
        child = Add(amount, Mode.SLOW)(root) if with_mode else Add(amount)(root)
        dg.Function(evaluate)(child)
        dg.Function(Scale(2))(child)
        children.append(child)
    return exp, children


def main(directory, with_mode):
    exp, children = build(directory, with_mode)
    print(exp.run(progress=False))
    if os.environ.get("DUMP_RESULTS"):
        # The state ids and the names their Function results are stored under
        found = {child.sha(): sorted(child.get().dagger.results) for child in children}
        with open(os.environ["DUMP_RESULTS"], "w") as handle:
            json.dump(found, handle)


if __name__ == "__main__":
    main(sys.argv[1], with_mode=len(sys.argv) > 2)
'''

# Another script (or a notebook) that imports the tree script under its file's name.
OTHER = """
import sys

import tree

tree.main(sys.argv[1], with_mode=len(sys.argv) > 2)
"""


def _write(folder: Path) -> None:
    (folder / "tree.py").write_text(textwrap.dedent(TREE))
    (folder / "other.py").write_text(textwrap.dedent(OTHER))


def _run(
    folder: Path, env: dict[str, str], log: Path, *args: str, dump: Path | None = None
) -> list[str]:
    """Run ``python ARGS`` in ``folder`` as a user does; return what it computed. With
    ``dump``, the script writes its children's ids and result names there (see _results)."""
    log.unlink(missing_ok=True)
    extra = {"DUMP_RESULTS": str(dump)} if dump else {}
    completed = subprocess.run(
        [sys.executable, *args],
        cwd=folder,
        env={**env, "DAGGER_TEST_LOG": str(log), **extra},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert completed.returncode == 0, completed.stderr
    return read_log(log)


def _results(dump: Path) -> dict[str, list[str]]:
    """The names of the Function results on each child state, by state id, as a script
    wrote them."""
    found: dict[str, list[str]] = json.loads(dump.read_text())
    return found


def test_script_then_import_then_script_recomputes_nothing(tmp_path, subprocess_env):
    _write(tmp_path)
    log, dump = tmp_path / "calls.log", tmp_path / "results.json"
    first = _run(tmp_path, subprocess_env, log, "tree.py", "runs", dump=dump)
    assert sorted(first) == sorted(
        ["root", *(f"add:{n}:-" for n in (1, 2, 3)), *["evaluate"] * 3, *["scale:2"] * 3]
    )
    stored = _results(dump)
    assert len(stored) == 3
    for names in stored.values():
        assert len(names) == 2 and names[1] == "evaluate" and names[0].startswith("Scale_")

    # The same tree through `import tree`: no state and no Function result is computed,
    assert _run(tmp_path, subprocess_env, log, "other.py", "runs", dump=dump) == []
    # the ids are the same and the results keep their names (Scale(2)'s automatic one too),
    assert _results(dump) == stored
    # and back: the script finds everything too.
    assert _run(tmp_path, subprocess_env, log, "tree.py", "runs", dump=dump) == []
    assert _results(dump) == stored


def test_import_then_script_recomputes_nothing(tmp_path, subprocess_env):
    _write(tmp_path)
    log = tmp_path / "calls.log"
    assert len(_run(tmp_path, subprocess_env, log, "other.py", "runs")) == 10
    assert _run(tmp_path, subprocess_env, log, "tree.py", "runs") == []


def test_pruned_tree_run_through_import_recomputes_nothing(tmp_path, subprocess_env):
    _write(tmp_path)
    log = tmp_path / "calls.log"
    assert len(_run(tmp_path, subprocess_env, log, "tree.py", "runs")) == 10
    keep = "top 1 by result.evaluate.accuracy"
    assert (
        _run(tmp_path, subprocess_env, log, "-m", "dagger", "prune", "runs", "--keep", keep) == []
    )
    # The pruned states' results are stored: nothing needs the states again, so none
    # retrains, whichever way the tree is run.
    assert _run(tmp_path, subprocess_env, log, "other.py", "runs") == []
    assert _run(tmp_path, subprocess_env, log, "tree.py", "runs") == []


def test_enum_of_the_script_in_a_recipe_keeps_the_state_ids(tmp_path, subprocess_env):
    # A recipe argument whose type the script defines (an enum here) is part of the ids: the
    # ids must not name its module `__main__` in one process and `tree` in the other.
    _write(tmp_path)
    log, dump = tmp_path / "calls.log", tmp_path / "results.json"
    first = _run(tmp_path, subprocess_env, log, "tree.py", "runs", "mode", dump=dump)
    assert sorted(entry for entry in first if entry.startswith("add")) == [
        f"add:{n}:slow" for n in (1, 2, 3)
    ]
    stored = _results(dump)
    assert _run(tmp_path, subprocess_env, log, "other.py", "runs", "mode", dump=dump) == []
    assert _results(dump) == stored


def test_module_run_with_dash_m_matches_its_import(tmp_path, subprocess_env):
    # `python -m pkg.tree` names the module `__main__` too; importing it gives `pkg.tree`.
    package = tmp_path / "pkg"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "tree.py").write_text(textwrap.dedent(TREE))
    (tmp_path / "other.py").write_text(textwrap.dedent(OTHER).replace("tree", "pkg.tree"))
    log, dump = tmp_path / "calls.log", tmp_path / "results.json"
    assert len(_run(tmp_path, subprocess_env, log, "-m", "pkg.tree", "runs", dump=dump)) == 10
    stored = _results(dump)
    assert _run(tmp_path, subprocess_env, log, "other.py", "runs", dump=dump) == []
    assert _results(dump) == stored
    assert _run(tmp_path, subprocess_env, log, "-m", "pkg.tree", "runs", dump=dump) == []
