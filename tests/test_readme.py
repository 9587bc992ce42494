"""The README's code blocks run as written: a user copies them first.

Every ```python block of README.md is extracted with pytest-examples and run as a script of its
own, in order, in one empty folder, against the installed package (no PYTHONPATH), twice: the
blocks after the walkthrough read the store it wrote, and a second run of each must work on
what the first left. A block needs Graphviz's `dot` only where the README says so just above
it; every other block runs with `dot` hidden from PATH.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).parent.parent
README = REPO / "README.md"
# How the README says that the block below needs Graphviz's dot.
NEEDS_DOT = re.compile(r"need Graphviz's `dot`")


def python_examples():
    from pytest_examples import find_examples

    return [example for example in find_examples(README) if "python" in example.prefix_tags()]


def needs_dot(example) -> bool:
    """Whether the README says, in the three lines above the block, that it needs `dot`."""
    lines = README.read_text().splitlines()
    above = "\n".join(lines[max(0, example.start_line - 4) : example.start_line])
    return bool(NEEDS_DOT.search(above))


def path_without_dot(shadows: Path) -> str:
    """PATH with each folder that holds `dot` replaced by links to everything else in it."""
    folders = []
    for number, folder in enumerate(os.environ.get("PATH", "").split(os.pathsep)):
        if folder and os.path.exists(os.path.join(folder, "dot")):
            shadow = shadows / str(number)
            shadow.mkdir(parents=True)
            for name in os.listdir(folder):
                if name != "dot":
                    os.symlink(os.path.join(folder, name), shadow / name)
            folder = str(shadow)
        folders.append(folder)
    return os.pathsep.join(folders)


@pytest.fixture(scope="module")
def readme_runs(tmp_path_factory):
    """Each block run twice in one empty folder: [(pass, example, completed process)]."""
    folder = tmp_path_factory.mktemp("readme")
    # dagger as the README installs it: never from the checkout through PYTHONPATH.
    env = {key: value for key, value in os.environ.items() if key != "PYTHONPATH"}
    no_dot = {**env, "PATH": path_without_dot(tmp_path_factory.mktemp("no-dot"))}
    runs = []
    for attempt in (1, 2):
        for number, example in enumerate(python_examples()):
            drawing = needs_dot(example)
            if drawing and shutil.which("dot") is None:
                continue
            script = folder / f"readme_block_{number}.py"
            script.write_text(example.source)
            process = subprocess.run(
                [sys.executable, script.name],
                cwd=folder,
                env=env if drawing else no_dot,
                capture_output=True,
                text=True,
                timeout=600,
            )
            runs.append((attempt, example, process))
    return folder, runs


def test_the_readme_has_its_blocks():
    examples = python_examples()
    assert len(examples) >= 6
    assert "exp.run()" in examples[0].source
    assert sum(needs_dot(example) for example in examples) == 1


def test_every_python_block_runs_twice_in_an_empty_folder(readme_runs):
    _, runs = readme_runs
    failed = [
        f"README.md line {example.start_line} (pass {attempt}):\n{process.stderr[-3000:]}"
        for attempt, example, process in runs
        if process.returncode != 0
    ]
    assert not failed, "\n\n".join(failed)
    assert {attempt for attempt, _, _ in runs} == {1, 2}


def test_the_walkthrough_computes_nothing_the_second_time(readme_runs):
    _, runs = readme_runs
    first, second = [process for _, example, process in runs if "class Study(" in example.source]
    assert "8 computed, 0 cached, 0 failed" in first.stdout
    assert "0 computed, 8 cached, 0 failed" in second.stdout


def test_the_analysis_block_answers_on_the_walkthrough_store(readme_runs):
    _, runs = readme_runs
    (first, _), *_ = [
        (process, attempt)
        for attempt, example, process in runs
        if 'harsh = nodes.filter("pruned")' in example.source
    ]
    lines = first.stdout.splitlines()
    assert lines[:3] == ["4", "1", "3"]
    assert "step 2: the same Train(epochs=1) on both (after different steps)" in first.stdout


@pytest.mark.requires_dot
def test_the_drawing_block_draws(readme_runs):
    folder, _ = readme_runs
    assert (folder / "runs" / "study" / "tree.svg").read_text().lstrip().startswith("<?xml")
    assert (folder / "runs" / "study" / "tree-by-accuracy.png").read_bytes()[:4] == b"\x89PNG"


def test_the_readme_starts_with_the_two_commands():
    text = README.read_text()
    first_block = re.search(r"```bash\n(.*?)```", text, flags=re.S).group(1)
    commands = [line for line in first_block.splitlines() if line and not line.startswith("#")]
    assert commands == [
        'pip install -e ".[tutorials]" && python tutorials/pruning_study.py',
        'pip install -e ".[all]" && python -m pytest',
    ]
    ci = (REPO / ".ci" / "run").read_text()
    assert commands[1] in ci  # CI runs exactly the README's test command
    assert ".ci/without-dot python -m pytest" in ci  # and again without Graphviz's dot
