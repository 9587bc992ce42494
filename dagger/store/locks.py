"""Per-state locks, so that no two processes compute or annotate one state at once.

A lock is a ``filelock.FileLock`` on ``<directory>/locks/<id>.lock``. On POSIX it is an
``flock``, which the kernel releases when the holding process dies, so a lock left by a killed
process is recovered by the next process that asks for it.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

from filelock import FileLock

__all__ = ["state_lock"]


@contextlib.contextmanager
def state_lock(locks_dir: Path, state_id: str) -> Iterator[None]:
    """Hold the lock of one state for the duration of the block."""
    locks_dir.mkdir(parents=True, exist_ok=True)
    with FileLock(locks_dir / f"{state_id}.lock"):
        yield
