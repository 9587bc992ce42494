"""Errors that say what happened (issue 11): Ctrl-C, a full disk, a read-only folder, bad lock
paths; real processes and real filesystems (a small tmpfs, mounted when the tests run as root).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time
import uuid
from pathlib import Path

import pytest
from helpers import Add, CounterState, Multiply, read_log

import dagger as dg
from dagger.store import DirectoryStore

INTERRUPTED = textwrap.dedent(
    """
    import sys
    import dagger as dg
    from helpers import Add, CounterState, Sleep

    exp = dg.Experiment(sys.argv[1], CounterState)
    root = exp.spawn_new_tree(start=1)
    for amount in range(20):
        Sleep(0.2)(Add(amount)(root))
    exp.run(progress=False)
    """
)


def test_ctrl_c_prints_one_line_and_exits_130(tmp_path, subprocess_env, call_log):
    script = tmp_path / "interrupted.py"
    script.write_text(INTERRUPTED)
    exp_dir = tmp_path / "exp"
    env = {**subprocess_env, "DAGGER_TEST_LOG": str(call_log)}
    process = subprocess.Popen(
        [sys.executable, str(script), str(exp_dir)],
        env=env,
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and read_log(call_log).count("sleep:0.2") < 3:
        time.sleep(0.02)
    process.send_signal(signal.SIGINT)
    stdout, stderr = process.communicate(timeout=60)
    assert process.returncode == 130, stderr
    lines = stderr.strip().splitlines()
    assert len(lines) == 1, stderr  # no traceback
    assert lines[0].startswith("Interrupted: ")
    assert "stored by this run" in lines[0] and "the store is consistent" in lines[0]
    assert "Run the same code again to resume" in lines[0]
    stored = len(DirectoryStore(exp_dir).snapshot())
    assert 4 <= stored < 41
    assert dg.verify(exp_dir).ok
    before = len(read_log(call_log))
    rerun = subprocess.run(
        [sys.executable, str(script), str(exp_dir)], env=env, cwd=tmp_path, capture_output=True
    )
    assert rerun.returncode == 0, rerun.stderr
    assert len(read_log(call_log)) - before == 41 - stored  # only what was missing


def test_ctrl_c_in_an_interactive_session_is_a_keyboard_interrupt(memory):
    class Interrupting(dg.Recipe):
        def run(self, state):
            raise KeyboardInterrupt

    exp = dg.Experiment(memory, CounterState)
    root = exp.spawn_new_tree(start=1)
    Interrupting()(Add(1)(root))
    with pytest.raises(KeyboardInterrupt) as caught:  # Interrupted is one (and a SystemExit)
        exp.run(progress=False)
    assert caught.value.code == 130 and caught.value.report.computed == 2


# -- a full disk and a read-only folder: a real, small filesystem ---------------------------------


@contextlib.contextmanager
def tmpfs(path: Path, size: str):
    """A tmpfs of ``size`` mounted at ``path`` (skips the test unless it runs as root)."""
    if not sys.platform.startswith("linux") or os.geteuid() != 0 or not shutil.which("mount"):
        pytest.skip("mounting a small tmpfs needs root on Linux")
    path.mkdir(parents=True)
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size}", f"dagger-{uuid.uuid4().hex[:8]}", str(path)],
        capture_output=True,
        text=True,
    )
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.strip()}")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False)


class Heavy(dg.Recipe):
    """Adds 400 KB of distinct bytes (a blob) to the state."""

    def __init__(self, seed):
        self.seed = seed

    def run(self, state):
        import numpy as np

        state.payload = np.random.default_rng(self.seed).bytes(400_000)
        return state


def test_a_full_disk_stops_the_run_with_a_store_error_and_loses_nothing(tmp_path):
    with tmpfs(tmp_path / "small", "2m") as small:
        exp_dir = small / "exp"
        exp = dg.Experiment(exp_dir, CounterState)
        root = exp.spawn_new_tree(start=1)
        heavy = [Heavy(seed)(root) for seed in range(8)]  # 3.2 MB of blobs in 2 MB
        with pytest.raises(dg.StoreError) as caught:
            exp.run(progress=False)
        error = caught.value
        assert not isinstance(error, dg.RunError | dg.SerializationError)
        message = str(error)
        assert "no space left while writing `blobs/" in message  # relative to the folder
        assert "400,000 bytes to write" in message and "free" in message
        assert "Nothing stored before is lost" in message
        assert error.needed == 400_000 and error.free is not None and error.free < 400_000
        # what was stored is intact, and nothing half-written is left behind
        stored = DirectoryStore(exp_dir).snapshot()
        assert 1 <= len(stored) < 9
        report = dg.verify(exp_dir)
        assert report.ok, str(report)
        assert not [p for p in exp_dir.rglob("*") if p.name.startswith(".")]
        # with space again (the store moved to a bigger disk), the run goes on
        moved = tmp_path / "moved"
        shutil.copytree(exp_dir, moved)
    exp = dg.Experiment(moved, CounterState)
    root = exp.spawn_new_tree(start=1)
    heavy = [Heavy(seed)(root) for seed in range(8)]
    report = exp.run(progress=False)
    assert report.computed == 9 - len(stored) and report.cached == len(stored)
    assert heavy[7].get().payload == __import__("numpy").random.default_rng(7).bytes(400_000)


def test_a_full_disk_while_committing_a_record_keeps_the_log_whole(tmp_path, call_log):
    with tmpfs(tmp_path / "small", "1m") as small:
        exp_dir = small / "exp"
        exp = dg.Experiment(exp_dir, CounterState, durability="fast")
        root = exp.spawn_new_tree(start=1)
        Add(1)(root)
        exp.run(progress=False)
        # fill the disk to the last few bytes: the next record entry cannot be appended
        filler = small / "filler"
        with open(filler, "wb", buffering=0) as handle, contextlib.suppress(OSError):
            while True:
                handle.write(b"\0" * 4096)
        exp = dg.Experiment(exp_dir, CounterState, durability="fast")
        root = exp.spawn_new_tree(start=1)
        grown = Multiply(3)(Add(1)(root))
        with pytest.raises(dg.StoreError, match=r"no space left while writing `log/") as caught:
            exp.run(progress=False)
        assert "Nothing stored before is lost" in str(caught.value)
        filler.unlink()
        assert dg.verify(exp_dir).ok  # no half entry in the log
        assert exp.run(progress=False).computed == 1
        assert grown.get().value == 6


FIRST_RUN = textwrap.dedent(
    """
    import sys
    import dagger as dg
    from helpers import Add, CounterState

    exp = dg.Experiment(sys.argv[1], CounterState)
    Add(1)(exp.spawn_new_tree(start=1))
    exp.run(progress=False)
    """
)


def test_a_read_only_folder_reads_and_says_what_needs_write_access(tmp_path, subprocess_env):
    with tmpfs(tmp_path / "ro", "4m") as folder:
        exp_dir = folder / "exp"
        # stored by another process: this one holds no file of the folder open for writing
        script = tmp_path / "first.py"
        script.write_text(FIRST_RUN)
        subprocess.run(
            [sys.executable, str(script), str(exp_dir)],
            env=subprocess_env,
            cwd=tmp_path,
            check=True,
        )
        (exp_dir / "index.json").unlink()  # a reader would like to rewrite it
        remount = subprocess.run(
            ["mount", "-o", "remount,ro", str(folder)], capture_output=True, text=True
        )
        assert remount.returncode == 0, remount.stderr
        try:
            tree = dg.Experiment.restore(exp_dir).graph  # reading needs no write access
            assert len(tree) == 2
            for command in ("show", "ls", "verify"):
                result = subprocess.run(
                    [sys.executable, "-m", "dagger", command, str(exp_dir)],
                    env=subprocess_env,
                    capture_output=True,
                    text=True,
                    cwd=tmp_path,
                )
                assert result.returncode == 0, result.stderr
                assert "Traceback" not in result.stderr
            exp = dg.Experiment(exp_dir, CounterState)
            Multiply(2)(Add(1)(exp.spawn_new_tree(start=1)))
            with pytest.raises(dg.StoreError) as caught:
                exp.run(progress=False)
            message = str(caught.value)
            assert "is not writable by this process" in message
            assert "Running needs write access" in message and "\n" not in message
        finally:
            subprocess.run(["mount", "-o", "remount,rw", str(folder)], check=False)


@pytest.mark.parametrize("locks", ["locks folder copied", "no locks folder"])
def test_gc_on_a_read_only_folder_says_it_needs_write_access(tmp_path, subprocess_env, locks):
    with tmpfs(tmp_path / "ro", "4m") as folder:
        exp_dir = folder / "exp"
        script = tmp_path / "first.py"
        script.write_text(FIRST_RUN)
        subprocess.run(
            [sys.executable, str(script), str(exp_dir)],
            env=subprocess_env,
            cwd=tmp_path,
            check=True,
        )
        if locks == "no locks folder":  # as after copying the store, or a fresh checkout
            shutil.rmtree(exp_dir / "locks")
        (exp_dir / "payloads").mkdir(exist_ok=True)
        (exp_dir / "payloads" / "orphan").write_bytes(b"left by nothing")
        remount = subprocess.run(
            ["mount", "-o", "remount,ro", str(folder)], capture_output=True, text=True
        )
        assert remount.returncode == 0, remount.stderr

        def gc(*options):
            return subprocess.run(
                [sys.executable, "-m", "dagger", "gc", str(exp_dir), *options],
                env=subprocess_env,
                capture_output=True,
                text=True,
                cwd=tmp_path,
            )

        try:
            # a dry run writes nothing: it needs no write access (and takes no lock)
            dry = gc("--dry-run")
            assert dry.returncode == 0, dry.stderr
            assert "would remove 1 file(s)" in dry.stdout and "payloads/orphan" in dry.stdout
            real = gc()
            assert real.returncode != 0
            assert "Traceback" not in real.stderr
            assert real.stderr.count("\n") == 1, real.stderr
            assert "Could not collect garbage: `locks" in real.stderr
            assert "is not writable by this process" in real.stderr
            assert "needs write access" in real.stderr
        finally:
            subprocess.run(["mount", "-o", "remount,rw", str(folder)], check=False)
        assert (exp_dir / "payloads" / "orphan").exists()


# -- lock paths ------------------------------------------------------------------------------------


@pytest.mark.parametrize("what", ["states.lock is a folder", "locks is a file"])
def test_a_lock_path_in_the_way_is_a_clear_error(exp_dir, what):
    exp = dg.Experiment(exp_dir, CounterState)
    Add(1)(exp.spawn_new_tree(start=1))
    exp.run(progress=False)
    if what == "locks is a file":
        shutil.rmtree(exp_dir / "locks")
        (exp_dir / "locks").write_text("not a folder")
        expected = r"`.*locks` is a file, but dagger keeps its lock files in a folder there"
    else:
        (exp_dir / "locks" / "states.lock").unlink()
        (exp_dir / "locks" / "states.lock").mkdir()
        expected = r"states.lock` is a folder, not dagger's lock file. Remove it"
    exp = dg.Experiment(exp_dir, CounterState)
    Multiply(2)(Add(1)(exp.spawn_new_tree(start=1)))
    with pytest.raises(dg.StoreError, match=expected):
        exp.run(progress=False)
