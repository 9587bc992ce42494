"""Per-state locks, so that no two processes compute or annotate one state at once.

A state's lock is a POSIX byte-range lock (``fcntl.lockf``) on one byte of
``<directory>/locks/states.lock``, at an offset taken from the state's id, plus a thread lock
for threads of the same process (POSIX locks belong to a process). Taking one costs two
system calls and creates no file: a lock file per state cost about 2 ms each on a slow disk,
a fifth of a cold run of trivial states. The kernel drops a process's locks when it dies, so a
lock left by a killed process is recovered by the next process that asks for it. The file
descriptor stays open for the life of the process, because closing any descriptor of a file
drops all of the process's locks on it.

State locks are reentrant within a thread (a state's lock may be taken again while held, say
to quarantine a state whose load failed while computing it), and a state's byte is locked
only once however deep the nesting.

The experiment-wide lock (experiment.json, conversion, compaction) is a ``filelock.FileLock``.
Where ``fcntl`` does not exist (Windows), state locks are FileLocks too. A lock path that is
not a regular file (replaced by a folder, ``locks/`` replaced by a file) is a
:class:`~dagger.errors.StoreError` naming it and the fix.

On network filesystems (NFS, SMB, sshfs, ...) locks may be emulated per client or not at all,
so they cannot be trusted. dagger then says so once and does not lock: concurrent runs may
compute a state twice, but never corrupt the store, because every file is published
atomically and the first record written for a state wins.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
from collections.abc import Iterator
from pathlib import Path

from filelock import FileLock

from ..errors import StoreError

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None  # type: ignore[assignment]

__all__ = [
    "UNTRUSTED_FILESYSTEMS",
    "experiment_lock",
    "filesystem_type",
    "locks_trustworthy",
    "state_lock",
]

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


def _check_lock_path(path: Path) -> None:
    """Raise a clear StoreError if ``path`` (or its folder) is in the way of a lock file."""
    folder = path.parent
    if folder.exists() and not folder.is_dir():
        raise StoreError(
            f"`{folder}` is a file, but dagger keeps its lock files in a folder there. Remove "
            "it (dagger recreates the folder; no stored state is in it) and run again.",
            path=str(folder),
        )
    if path.exists() and not path.is_file():
        raise StoreError(
            f"`{path}` is a {'folder' if path.is_dir() else 'special file'}, not dagger's lock "
            "file. Remove it (dagger recreates it; no stored state is in it) and run again.",
            path=str(path),
        )


class _RangeLocks:
    """One open descriptor of a folder's ``states.lock`` and this process's thread locks."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.fd: int | None = None
        self.pid = -1
        self.guard = threading.Lock()
        self.threads: dict[int, threading.RLock] = {}
        self.depth: dict[int, int] = {}

    def descriptor(self) -> int:
        with self.guard:
            if self.fd is not None and self.pid == os.getpid() and not self._same_file():
                # states.lock was deleted or replaced: locking the old file would exclude no
                # process that opens the new one.
                os.close(self.fd)
                self.fd = None
            if self.fd is None or self.pid != os.getpid():
                _check_lock_path(self.path)
                try:
                    self.path.parent.mkdir(parents=True, exist_ok=True)
                    self.fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
                except (IsADirectoryError, NotADirectoryError, FileExistsError):
                    _check_lock_path(self.path)
                    raise
                self.pid = os.getpid()
                self.depth = {}
            return self.fd

    def _same_file(self) -> bool:
        assert self.fd is not None
        try:
            now = os.stat(self.path)
        except OSError:
            return False
        held = os.fstat(self.fd)
        return (now.st_ino, now.st_dev) == (held.st_ino, held.st_dev)

    def thread_lock(self, offset: int) -> threading.RLock:
        with self.guard:
            found = self.threads.get(offset)
            if found is None:
                found = self.threads[offset] = threading.RLock()
            return found


_RANGES: dict[Path, _RangeLocks] = {}
_RANGES_GUARD = threading.Lock()


@contextlib.contextmanager
def state_lock(locks_dir: Path, state_id: str, *, enabled: bool = True) -> Iterator[None]:
    """Hold the lock of one state for the duration of the block."""
    if not enabled:
        yield
        return
    if fcntl is None:  # pragma: no cover - Windows
        with _file_lock(locks_dir, state_id):
            yield
        return
    with _RANGES_GUARD:
        ranges = _RANGES.get(locks_dir)
        if ranges is None:
            ranges = _RANGES[locks_dir] = _RangeLocks(locks_dir / "states.lock")
    offset = int(state_id[:15], 16)  # 60 bits of the id: distinct states, distinct bytes
    with ranges.thread_lock(offset):
        fd = ranges.descriptor()
        # The RLock makes this thread the only one touching depth[offset] now.
        depth = ranges.depth.get(offset, 0)
        if depth == 0:
            fcntl.lockf(fd, fcntl.LOCK_EX, 1, offset, os.SEEK_SET)
        ranges.depth[offset] = depth + 1
        try:
            yield
        finally:
            ranges.depth[offset] = depth
            if depth == 0:
                fcntl.lockf(fd, fcntl.LOCK_UN, 1, offset, os.SEEK_SET)


@contextlib.contextmanager
def experiment_lock(locks_dir: Path, *, enabled: bool = True) -> Iterator[None]:
    """Hold the experiment-wide lock (around read-modify-write of experiment.json)."""
    if not enabled:
        yield
        return
    with _file_lock(locks_dir, "experiment"):
        yield


# One FileLock per path and process: a FileLock counts its own nesting, so the experiment lock
# can be taken again inside itself (two instances on one path would deadlock each other).
_FILE_LOCKS: dict[tuple[int, Path], FileLock] = {}


@contextlib.contextmanager
def _file_lock(locks_dir: Path, name: str) -> Iterator[None]:
    path = locks_dir / f"{name}.lock"
    _check_lock_path(path)
    locks_dir.mkdir(parents=True, exist_ok=True)
    key = (os.getpid(), path)
    with _RANGES_GUARD:
        lock = _FILE_LOCKS.get(key)
        if lock is None:
            lock = _FILE_LOCKS[key] = FileLock(path)
    with lock:
        yield
