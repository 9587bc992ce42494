"""The README's walkthrough runs as written (a user copies it first)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).parent.parent


def python_blocks():
    return re.findall(r"```python\n(.*?)```", (REPO / "README.md").read_text(), flags=re.S)


def test_the_walkthrough_runs_and_a_second_run_computes_nothing(tmp_path):
    walkthrough = python_blocks()[0]
    assert "exp.run()" in walkthrough
    script = tmp_path / "walkthrough.py"
    script.write_text(walkthrough)
    env = dict(os.environ)  # dagger as installed by the README's command
    first = subprocess.run(
        [sys.executable, str(script)], cwd=tmp_path, env=env, capture_output=True, text=True
    )
    assert first.returncode == 0, first.stderr
    assert "8 computed, 0 cached, 0 failed" in first.stdout
    assert (tmp_path / "runs" / "study" / "tree.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    second = subprocess.run(
        [sys.executable, str(script)], cwd=tmp_path, env=env, capture_output=True, text=True
    )
    assert second.returncode == 0, second.stderr
    assert "0 computed, 8 cached, 0 failed" in second.stdout


def test_the_readme_starts_with_the_two_commands():
    text = (REPO / "README.md").read_text()
    first_block = re.search(r"```bash\n(.*?)```", text, flags=re.S).group(1)
    commands = [line for line in first_block.splitlines() if line and not line.startswith("#")]
    assert commands == [
        'pip install -e ".[tutorials]" && python tutorials/pruning_study.py',
        'pip install -e ".[all]" && python -m pytest',
    ]
    ci = (REPO / ".ci" / "run").read_text()
    assert commands[1] in ci  # CI runs exactly the README's test command


def test_the_curating_example_runs_after_the_walkthrough(tmp_path):
    blocks = python_blocks()
    [curating] = [block for block in blocks if "exp.audit(" in block]
    script = tmp_path / "curating.py"
    script.write_text(blocks[0] + "\n" + curating)
    result = subprocess.run(
        [sys.executable, str(script)],
        cwd=tmp_path,
        env=dict(os.environ),
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stderr
    # The walkthrough ends on a restored experiment grown by one state, run: both stored.
    assert "0 to compute, 2 stored, 0 failed before, 0 skipped" in result.stdout
    assert "3 reproduced, 0 differ, 0 errors, 0 not audited" in result.stdout
