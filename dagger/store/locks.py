"""Per-state locks, so that no two processes compute or annotate one state at once.

A lock is a ``filelock.FileLock`` on ``<directory>/locks/<id>.lock``: an ``flock`` on POSIX,
which the kernel releases when the holding process dies, so a lock left by a killed process is
recovered by the next process that asks for it. Lock files are never deleted (deleting a lock
file that another process is about to lock would let two processes hold "the" lock).

On network filesystems (NFS, SMB, sshfs, ...) ``flock`` may be emulated per client or not at
all, so locks there cannot be trusted. dagger then says so once and does not lock: concurrent
runs may compute a state twice, but never corrupt the store, because every file is published
atomically and the first record written for a state wins.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Iterator
from pathlib import Path

from filelock import FileLock

__all__ = ["UNTRUSTED_FILESYSTEMS", "filesystem_type", "locks_trustworthy", "state_lock"]

logger = logging.getLogger("dagger")

UNTRUSTED_FILESYSTEMS = frozenset(
    {"nfs", "nfs4", "cifs", "smb", "smb2", "smb3", "smbfs", "fuse.sshfs", "sshfs", "9p", "afs"}
)

_verdicts: dict[Path, bool] = {}


def filesystem_type(path: Path) -> str | None:
    """The type of the filesystem holding ``path`` (Linux, from /proc/self/mountinfo)."""
    try:
        with open("/proc/self/mountinfo") as handle:
            lines = handle.read().splitlines()
    except OSError:
        return None
    target = os.path.realpath(path)
    best, kind = "", None
    for line in lines:
        left, _, right = line.partition(" - ")
        fields = left.split()
        if len(fields) < 5 or not right:
            continue
        mount_point = fields[4].replace("\\040", " ")
        inside = target == mount_point or target.startswith(mount_point.rstrip("/") + "/")
        if inside and len(mount_point) >= len(best):
            best, kind = mount_point, right.split()[0]
    return kind


def locks_trustworthy(directory: Path) -> bool:
    """Whether file locks in ``directory`` exclude other processes (warns once if not)."""
    verdict = _verdicts.get(directory)
    if verdict is None:
        existing = directory
        while not existing.exists() and existing != existing.parent:
            existing = existing.parent
        kind = filesystem_type(existing)
        verdict = kind not in UNTRUSTED_FILESYSTEMS
        if not verdict:
            logger.warning(
                "%s is on a %s filesystem, where file locks cannot be trusted; dagger will not "
                "lock states there. Concurrent runs into this folder may compute a state twice, "
                "but the store stays correct (every write is atomic and the first record wins).",
                directory,
                kind,
            )
        _verdicts[directory] = verdict
    return verdict


@contextlib.contextmanager
def state_lock(locks_dir: Path, name: str, *, enabled: bool = True) -> Iterator[None]:
    """Hold the lock ``name`` (a state id, or "experiment") for the duration of the block."""
    if not enabled:
        yield
        return
    try:
        lock = FileLock(locks_dir / f"{name}.lock")
        lock.acquire()
    except FileNotFoundError:
        locks_dir.mkdir(parents=True, exist_ok=True)
        lock = FileLock(locks_dir / f"{name}.lock")
        lock.acquire()
    try:
        yield
    finally:
        lock.release()
