"""The tutorials run as a newcomer would run them: the study as a script, the notebook in a kernel.

Both train real (small) networks on scikit-learn's digits, so this file takes a minute or so.
It also checks that the execution diagram of the README is there.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
TUTORIALS = REPO / "tutorials"
STUDY = TUTORIALS / "pruning_study.py"
NOTEBOOK = TUTORIALS / "Tutorial.ipynb"
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"

METHODS = {"random", "l1"}
LEVELS = {"0.5", "0.8", "0.95"}
BRANCHES = ["pruned", "finetune", "rewind"]

pytest.importorskip("torch")
pytest.importorskip("sklearn")


def _env() -> dict[str, str]:
    """The environment a user runs the study in: dagger as installed by the README."""
    return dict(os.environ)


def run_study(directory: Path, *options: str) -> subprocess.CompletedProcess[str]:
    process = subprocess.run(
        [sys.executable, str(STUDY), "--directory", str(directory), *options],
        cwd=REPO,
        env=_env(),
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert process.returncode == 0, f"stdout:\n{process.stdout}\nstderr:\n{process.stderr}"
    return process


def parse_table(stdout: str) -> dict[tuple[str, str], dict[str, float]]:
    """The accuracy table the study prints: (method, level) -> {branch: accuracy}."""
    lines = stdout.splitlines()
    header = next(i for i, line in enumerate(lines) if line.split()[:2] == ["method", "level"])
    assert lines[header].split() == ["method", "level", *BRANCHES]
    table = {}
    for line in lines[header + 1 :]:
        if not line.strip():
            break
        method, level, *accuracies = line.split()
        table[method, level] = dict(zip(BRANCHES, map(float, accuracies), strict=True))
    return table


def snapshot(directory: Path, ignore: set[Path]) -> dict[str, int]:
    """Every file under ``directory`` (but ``ignore``) with its modification time."""
    return {
        str(path.relative_to(directory)): path.stat().st_mtime_ns
        for path in sorted(directory.rglob("*"))
        if path.is_file() and path not in ignore
    }


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    """The study run once with one epoch per training: its store and what it printed."""
    directory = tmp_path_factory.mktemp("study") / "pruning_study"
    process = run_study(directory, "--epochs", "1")
    # Its Functions only read the states they evaluate: dagger checks it and would say so.
    assert "changed the state" not in process.stdout + process.stderr
    return directory, process.stdout


def test_study_help():
    process = subprocess.run(
        [sys.executable, str(STUDY), "--help"],
        env=_env(),
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    for option in ("--directory", "--epochs", "--workers"):
        assert option in process.stdout


def test_study_prints_one_accuracy_per_method_level_and_branch(study):
    _, stdout = study
    assert "Computed 26 states" in stdout
    table = parse_table(stdout)
    assert set(table) == {(method, level) for method in METHODS for level in LEVELS}
    for row in table.values():
        assert list(row) == BRANCHES
        assert all(0.0 <= accuracy <= 1.0 for accuracy in row.values())
    dense = re.search(r"trained dense network: ([\d.]+)", stdout)
    assert dense is not None and 0.0 <= float(dense.group(1)) <= 1.0


def png_size(data: bytes) -> tuple[int, int]:
    """Width and height of a PNG, from its IHDR chunk (the first, by the PNG specification)."""
    assert data[:8] == PNG_SIGNATURE and data[12:16] == b"IHDR"
    return int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")


# Written next to the store on every run; not part of it.
# Rewritten on every run (tree.dot instead of tree.png where Graphviz's dot is missing).
PICTURES = ("tree.png", "tree.dot", "accuracy.png", "report.html")


@pytest.mark.requires_dot
def test_study_draws_the_tree_next_to_the_store(study):
    directory, stdout = study
    drawing = directory / "tree.png"
    assert str(drawing) in stdout
    width, height = png_size(drawing.read_bytes())
    assert width > 1000 and height > 300  # 26 labelled states, four levels
    assert "result.test.accuracy" in (directory / "report.html").read_text()


def test_study_plots_accuracy_and_writes_a_report(study):
    directory, stdout = study
    plot = directory / "accuracy.png"
    assert f"Accuracy against sparsity is plotted in {plot}" in stdout
    assert png_size(plot.read_bytes()) == (1000, 400)  # two panels, 10 x 4 inches at 100 dpi
    report = directory / "report.html"
    assert f"Everything in one page: {report}" in stdout
    text = report.read_text(encoding="utf-8")
    assert "<title>Pruning study: fine-tuning or rewinding?</title>" in text
    assert text.count("<figure>") == 2
    assert text.count('"step": "FineTune(epochs=1, lr=0.003)"') == 6


def test_second_study_run_is_served_from_the_store(study):
    directory, first_stdout = study
    pictures = {directory / name for name in PICTURES}  # rewritten on every run
    before = snapshot(directory, ignore=pictures)
    assert any(name.startswith("log/") for name in before)

    stdout = run_study(directory, "--epochs", "1").stdout

    assert "Nothing to compute: all 26 states were served from the store." in stdout
    assert snapshot(directory, ignore=pictures) == before  # no file written, none removed
    assert parse_table(stdout) == parse_table(first_stdout)
    assert (directory / "accuracy.png").read_bytes()[:8] == PNG_SIGNATURE


def test_study_in_worker_processes_gives_the_same_results(study, tmp_path):
    _, in_process = study
    stdout = run_study(tmp_path / "pruning_study", "--epochs", "1", "--workers", "2").stdout
    assert "Computed 26 states" in stdout
    # Every step seeds itself, so where a state is computed does not change it.
    assert parse_table(stdout) == parse_table(in_process)


def test_study_without_graphviz_still_gives_the_table(study, tmp_path):
    directory, first_stdout = study
    copy = tmp_path / "pruning_study"
    shutil.copytree(directory, copy)
    for name in PICTURES:
        (copy / name).unlink(missing_ok=True)
    no_dot = tmp_path / "bin"  # a PATH without Graphviz's `dot`
    no_dot.mkdir()
    process = subprocess.run(
        [sys.executable, str(STUDY), "--directory", str(copy), "--epochs", "1"],
        cwd=REPO,
        env={**_env(), "PATH": str(no_dot)},
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert process.returncode == 0, process.stderr
    assert parse_table(process.stdout) == parse_table(first_stdout)
    assert "apt-get install graphviz" in process.stdout
    assert (copy / "tree.dot").read_text().startswith("digraph")
    assert not (copy / "tree.png").exists()
    # The plot and the report need no Graphviz; the report says why it has no drawing.
    assert png_size((copy / "accuracy.png").read_bytes()) == (1000, 400)
    text = (copy / "report.html").read_text(encoding="utf-8")
    assert "No drawing: Drawing the tree needs Graphviz" in text
    assert '<pre class="text-tree">' in text


def test_notebook_is_stored_without_outputs():
    nbformat = pytest.importorskip("nbformat")
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    nbformat.validate(notebook)
    assert notebook.nbformat == 4
    code_cells = [cell for cell in notebook.cells if cell.cell_type == "code"]
    assert code_cells
    for cell in code_cells:
        assert cell.outputs == [], cell.source
        assert cell.execution_count is None, cell.source


def test_notebook_runs_from_top_to_bottom(tmp_path, monkeypatch):
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    directory = tmp_path / "tutorial"
    # The kernel inherits this process's environment: the notebook's first cell reads it.
    monkeypatch.setenv("DAGGER_TUTORIAL_DIR", str(directory))
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    client = nbclient.NotebookClient(
        notebook,
        kernel_name="python3",
        timeout=600,  # per cell; the longest one trains the whole tree
        resources={"metadata": {"path": str(TUTORIALS)}},  # cwd, where digits.py is
    )
    client.execute()  # raises CellExecutionError, with the traceback, if a cell fails

    outputs = [output for cell in notebook.cells for output in cell.get("outputs", [])]
    assert not [output for output in outputs if output.output_type == "error"]
    # The tree displayed itself as a drawing (as text where Graphviz's dot is missing), and
    # the states are in the directory asked for.
    shown = "image/svg+xml" if shutil.which("dot") else "text/plain"
    assert any(shown in output.get("data", {}) for output in outputs)
    assert (directory / "experiment.json").is_file()


def test_execution_diagram_is_rendered():
    source = REPO / "extras" / "web-sequence.txt"
    text = source.read_text()
    assert "plantuml -tpng extras/web-sequence.txt" in text  # the render command, on top
    assert "@startuml" in text and "@enduml" in text
    assert (REPO / "extras" / "web-sequence.png").read_bytes()[:8] == PNG_SIGNATURE


def test_the_study_with_other_settings_in_the_same_store(study, tmp_path):
    """A researcher edits the settings and runs again into the same store: the analysis is of
    the tree the run defined, the other setting's states stay beside it."""
    directory, first_stdout = study
    copy = tmp_path / "pruning_study"
    shutil.copytree(directory, copy)

    stdout = run_study(copy, "--epochs", "2").stdout

    assert "Computed 25 states (1 already stored)" in stdout  # the root is shared
    table = parse_table(stdout)
    assert set(table) == {(method, level) for method in METHODS for level in LEVELS}
    # The first setting's table is still what a run with its settings prints.
    again = run_study(copy, "--epochs", "1").stdout
    assert "Nothing to compute: all 26 states were served from the store." in again
    assert parse_table(again) == parse_table(first_stdout)
