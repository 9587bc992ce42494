"""The architecture holds: arrows point down (import-linter), every module has a layer, and
the store can be swapped (issue 9)."""

from __future__ import annotations

import ast
import subprocess
import sys
import textwrap
import tomllib
from pathlib import Path

import pytest

import dagger as dg

REPO = Path(__file__).resolve().parent.parent
PACKAGE = Path(dg.__file__).parent


def _contracts() -> list[dict]:
    config = tomllib.loads((REPO / "pyproject.toml").read_text())
    return config["tool"]["importlinter"]["contracts"]


def test_import_linter_contracts_are_kept():
    # The installed interpreter's import-linter, so that it finds the installed package.
    code = "import sys; from importlinter.cli import lint_imports_command as c; sys.exit(c())"
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 broken" in result.stdout


def test_every_module_is_in_a_layer():
    """A module outside every layer would escape the contract: each one must be named."""
    layers = next(c for c in _contracts() if c["type"] == "layers")["layers"]
    named = {name.strip() for layer in layers for name in layer.split("|")}
    modules = set()
    for path in PACKAGE.glob("*.py"):
        if path.stem != "__init__":
            modules.add(f"dagger.{path.stem}")
    for path in PACKAGE.iterdir():
        if path.is_dir() and (path / "__init__.py").exists():
            modules.add(f"dagger.{path.name}")
    assert modules <= named, f"modules without a layer: {sorted(modules - named)}"


def test_no_module_calls_another_modules_private_names():
    """``from .x import _name`` or ``module._name`` across modules of the package."""
    offenders = []
    for path in sorted(PACKAGE.rglob("*.py")):
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.level and node.module != "_version":
                for alias in node.names:
                    if alias.name.startswith("_") and not alias.name.startswith("__"):
                        offenders.append(f"{path.relative_to(PACKAGE)}: imports {alias.name}")
    assert not offenders, offenders


def test_any_argument_name_reaches_initialize_state(memory):
    """``spawn_new_tree(name=...)`` once collided with the call shim's own parameter."""

    class Named(dg.ExperimentState):
        def initialize_state(self, /, **arguments):
            self.arguments = dict(arguments)

    exp = dg.Experiment(memory, Named)
    root = exp.spawn_new_tree(name="r18", obj=1, self=2, method=3, cls=4, args=5, kwargs=6)
    exp.run(progress=False)
    assert root.get().arguments == {
        "name": "r18",
        "obj": 1,
        "self": 2,
        "method": 3,
        "cls": 4,
        "args": 5,
        "kwargs": 6,
    }


def test_the_seed_style_patched_initialize_state_takes_any_name_too(memory):
    from types import MethodType

    class Patched(dg.ExperimentState):
        pass

    def initialize_state(state, /, **arguments):
        state.arguments = dict(arguments)

    Patched.initialize_state = MethodType(initialize_state, Patched)
    exp = dg.Experiment(memory, Patched)
    root = exp.spawn_new_tree(name="n", obj="o")
    exp.run(progress=False)
    assert root.get().arguments == {"name": "n", "obj": "o"}


def test_a_name_initialize_state_cannot_take_is_reported_where_the_root_is_defined(memory):
    class Plain(dg.ExperimentState):
        def initialize_state(self, **arguments):
            pass

    exp = dg.Experiment(memory, Plain)
    with pytest.raises(dg.ExperimentDefinitionError, match=r"initialize_state\(self, /"):
        exp.spawn_new_tree(self=1)


def test_show_when_the_state_module_raises_at_import(tmp_path):
    """The experiment's state class lives in a module that now fails to import: `dagger
    show` still prints the tree. It reads records only, so it does not import the module at
    all (none of its code runs, issue 11): nothing to warn about."""
    project = tmp_path / "project"
    project.mkdir()
    (project / "study.py").write_text(
        textwrap.dedent(
            """
            import dagger as dg

            class Study(dg.ExperimentState):
                def initialize_state(self, **arguments):
                    self.value = 1

            class Step(dg.Recipe):
                def __init__(self, amount):
                    self.amount = amount

                def run(self, state):
                    state.value += self.amount
                    return state
            """
        )
    )
    (project / "make.py").write_text(
        "import sys\nimport dagger as dg\nfrom study import Study, Step\n"
        "exp = dg.Experiment(sys.argv[1], Study)\n"
        "Step(2)(exp.spawn_new_tree())\nexp.run(progress=False)\n"
    )
    store = tmp_path / "exp"
    subprocess.run([sys.executable, "make.py", str(store)], cwd=project, check=True)
    # The module breaks (a renamed dependency, a syntax error in progress, ...).
    (project / "study.py").write_text(
        "import pathlib\npathlib.Path('imported').touch()\nraise RuntimeError('broken on purpose')\n"
    )
    shown = subprocess.run(
        [
            sys.executable,
            "-c",
            "import sys; sys.path.insert(0, '.'); from dagger.cli import main;"
            f" sys.exit(main(['show', {str(store)!r}]))",
        ],
        cwd=project,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert shown.returncode == 0, shown.stderr
    assert "Step(amount=2)" in shown.stdout and "2 states" in shown.stdout
    assert shown.stderr.strip() == ""
    assert not (project / "imported").exists()  # the module was not imported
