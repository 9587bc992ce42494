from __future__ import annotations

import logging
import os
import shutil
import sys
from pathlib import Path

import pytest

TESTS = Path(__file__).parent
REPO = TESTS.parent
sys.path.insert(0, str(TESTS))

NO_DOT = "Graphviz's `dot` program is not on PATH (apt-get install graphviz)"


def pytest_configure(config):
    config.addinivalue_line(
        "markers", f"requires_dot: the test lays out drawings; skipped when {NO_DOT}"
    )


def pytest_runtest_setup(item):
    # Checked at setup, before a test changes PATH on purpose (the no-dot tests).
    if item.get_closest_marker("requires_dot") is not None and shutil.which("dot") is None:
        pytest.skip(NO_DOT)


@pytest.fixture
def call_log(tmp_path, monkeypatch):
    """A file each recipe appends its name to; read it with helpers.read_log."""
    path = tmp_path / "calls.log"
    monkeypatch.setenv("DAGGER_TEST_LOG", str(path))
    return path


@pytest.fixture
def memory():
    """An in-memory store: the runner's tests run against it (no files, no patching)."""
    import dagger as dg

    return dg.MemoryStore()


@pytest.fixture
def exp_dir(tmp_path):
    return tmp_path / "exp"


@pytest.fixture
def subprocess_env(tmp_path):
    """Environment for scripts run in a subprocess, as a user runs them.

    dagger comes from the installed package, never from the checkout; the tests' shared
    classes (helpers.py) are copied into tmp_path, beside the scripts a test writes there,
    the way a user's own modules sit beside their scripts.
    """
    shutil.copy(TESTS / "helpers.py", tmp_path / "helpers.py")
    return dict(os.environ)


@pytest.fixture
def dagger_warnings(caplog):
    """Records what dagger logs at WARNING and above."""
    caplog.set_level(logging.WARNING, logger="dagger")
    return caplog
