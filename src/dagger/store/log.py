"""The store's logs: one append-only file per writing process, and group commit.

Every process that writes to a store appends to its own log, ``log/<token>.<n>.log`` (the
token is its pid and random bits, :func:`~dagger.store.files.writer_token`; ``n`` counts the
runs of the process), and nobody else ever writes to that file: no two writers interleave, and
a log is never rewritten in place (only compaction, under the experiment lock, replaces whole
logs of writers that are gone). A writer
holds an exclusive ``flock`` on its log for as long as it lives; the kernel drops it when the
process dies, which is how others tell a live writer from a dead one.

An entry is appended with one ``write`` while the writer holds the state's lock, so a process
that waited for that lock reads it as soon as it gets the lock: visibility does not need
``fsync``. Durability does. With ``durability="safe"`` the log is fsynced in groups (*group
commit*): after an append, when the entries not yet synced represent at least
:data:`GROUP_SECONDS` of computation (the recipes' own time) or :data:`GROUP_ENTRIES` entries,
and always at the end of a run (:meth:`LogWriter.sync`). A power cut therefore loses at most
the last entries whose recipes took less than ``GROUP_SECONDS`` together (and never more than
``GROUP_ENTRIES``): they are recomputed by the next run. Payload files and blobs an entry
refers to are fsynced before the entry is written, so no entry is ever durable before what it
points at. With ``durability="fast"`` nothing is fsynced; writes stay atomic.

If an append fails part way (no space left, Ctrl-C between two writes), the writer cuts its log
back to where the entry began, so a reader never sees half an entry followed by whole ones.
"""

from __future__ import annotations

import contextlib
import errno
import itertools
import os
from pathlib import Path

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None  # type: ignore[assignment]

from .files import fsync_dir, writer_token

__all__ = [
    "GROUP_ENTRIES",
    "GROUP_SECONDS",
    "LOG_SUFFIX",
    "LogWriter",
    "log_names",
    "log_owner",
    "not_logs",
    "read_from",
    "read_range",
    "writer_alive",
]

#: A group commit fsyncs once the unsynced entries represent this much computation (seconds).
GROUP_SECONDS = 0.1
#: ... or this many entries, whichever comes first.
GROUP_ENTRIES = 1000

LOG_SUFFIX = ".log"
_O_CLOEXEC = getattr(os, "O_CLOEXEC", 0)


class _Numbers:
    """The ``n`` of this process's next log (restarted in a forked child, whose token is new)."""

    def __init__(self) -> None:
        self.renew()
        os.register_at_fork(after_in_child=self.renew)

    def renew(self) -> None:
        self.counter = itertools.count()


_NUMBERS = _Numbers()


def log_owner(name: str) -> str:
    """The writer token of a log's name (``<token>.<n>.log``)."""
    return name.split(".", 1)[0]


def log_names(folder: Path) -> list[str]:
    """The names of the logs in ``folder`` (none if it does not exist, or is not a folder).

    Only regular files count: something else under a log's name (a folder, a device) holds
    no records, and :func:`not_logs` names it for ``verify``.
    """
    return sorted(name for name, is_file in _log_entries(folder) if is_file)


def not_logs(folder: Path) -> list[str]:
    """What stands where logs should be but is no file: ``folder`` itself when it is not a
    folder (``"log"``, relative to the experiment), else each ``log/<name>.log`` that is not a
    regular file. The records such a path held are gone; their states count as absent."""
    if folder.exists() and not folder.is_dir():
        return [folder.name]
    return [f"{folder.name}/{name}" for name, is_file in _log_entries(folder) if not is_file]


def _log_entries(folder: Path) -> list[tuple[str, bool]]:
    try:
        with os.scandir(folder) as entries:
            return [
                (entry.name, entry.is_file())
                for entry in entries
                if entry.name.endswith(LOG_SUFFIX) and entry.name[0] != "."
            ]
    except (FileNotFoundError, NotADirectoryError):
        return []


def read_from(path: Path, offset: int) -> bytes:
    """The bytes of a log from ``offset`` to its current end.

    Raises:
        FileNotFoundError: The log is gone (compacted away).
    """
    with open(path, "rb", buffering=0) as handle:
        if offset:
            handle.seek(offset)
        return handle.read()


def read_range(path: Path, offset: int, length: int) -> bytes:
    """``length`` bytes of a log at ``offset`` (fewer if the file is shorter).

    Raises:
        FileNotFoundError: The log is gone (compacted away).
    """
    fd = os.open(path, os.O_RDONLY | _O_CLOEXEC)
    try:
        return os.pread(fd, length, offset)
    finally:
        os.close(fd)


def writer_alive(path: Path) -> bool:
    """Whether a live process still holds (and may append to) the log at ``path``."""
    if fcntl is None:  # pragma: no cover - Windows: assume the worst
        return True
    try:
        fd = os.open(path, os.O_RDONLY | _O_CLOEXEC)
    except FileNotFoundError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as error:
        if error.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
            return True
        raise
    else:
        fcntl.flock(fd, fcntl.LOCK_UN)
        return False
    finally:
        os.close(fd)


class LogWriter:
    """This process's log in one store: appends entries, fsyncs them in groups.

    Constructing one touches no disk; the log file is created by the first :meth:`open`.

    Args:
        folder: ``<directory>/log``.
        durable: fsync (group commit) as described in the module docstring.
    """

    def __init__(self, folder: Path, *, durable: bool) -> None:
        self.folder = folder
        self.durable = durable
        self.name = ""
        self.path: Path | None = None
        self.fd: int | None = None
        self.pid = -1
        self.size = 0
        self.unsynced_entries = 0
        self.unsynced_seconds = 0.0
        self.syncs = 0

    def open(self) -> str:
        """Create this process's log (once; again in a forked child) and return its name."""
        if self.fd is not None and self.pid == os.getpid():
            return self.name
        self.folder.mkdir(parents=True, exist_ok=True)
        name = f"{writer_token()}.{next(_NUMBERS.counter)}{LOG_SUFFIX}"
        path = self.folder / name
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_EXCL | _O_CLOEXEC, 0o644)
        try:
            if fcntl is not None:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            if self.durable:
                fsync_dir(self.folder)  # the new name itself must survive a power cut
        except BaseException:
            os.close(fd)
            with contextlib.suppress(OSError):
                os.unlink(path)
            raise
        # A forked child drops the parent's descriptor from its view: the parent keeps
        # appending to it (and keeps its lock); the child writes its own log.
        self.fd, self.pid, self.name, self.path, self.size = fd, os.getpid(), name, path, 0
        self.unsynced_entries, self.unsynced_seconds = 0, 0.0
        return name

    def append(self, data: bytes, *, seconds: float = 0.0) -> int:
        """Append one or more whole frames with one write; return the offset they start at.

        Args:
            data: Encoded frames (:func:`~dagger.store.frames.encode_frame`).
            seconds: The computation the entries stand for (drives the group commit).

        Raises:
            OSError: The write failed; the log was cut back to where it was, so nothing of
                ``data`` is visible.
        """
        self.open()
        assert self.fd is not None
        start = self.size
        try:
            view = memoryview(data)
            while view:
                written = os.write(self.fd, view)
                view = view[written:]
        except BaseException as error:
            # Half an entry must not stay in the log: a reader would wait for its end forever
            # (or, after a later entry, see it as damage).
            with contextlib.suppress(OSError):
                os.ftruncate(self.fd, start)
            if isinstance(error, OSError):
                if error.filename is None and self.path is not None:
                    error.filename = str(self.path)
                error.needed = len(data)  # type: ignore[attr-defined]
            raise
        self.size = start + len(data)
        if self.durable:
            self.unsynced_entries += 1
            self.unsynced_seconds += seconds
            if self.unsynced_seconds >= GROUP_SECONDS or self.unsynced_entries >= GROUP_ENTRIES:
                self.sync()
        return start

    def sync(self) -> None:
        """Make every entry appended so far durable (one fsync)."""
        if self.fd is None or self.pid != os.getpid() or not self.unsynced_entries:
            return
        os.fsync(self.fd)
        self.syncs += 1
        self.unsynced_entries, self.unsynced_seconds = 0, 0.0

    @property
    def pending(self) -> bool:
        """Whether entries are waiting for a group commit."""
        return bool(self.unsynced_entries) and self.pid == os.getpid()

    def close(self) -> None:
        """Sync and close the log (this process appends no more to it)."""
        if self.fd is None or self.pid != os.getpid():
            self.fd = None
            return
        try:
            if self.durable:
                self.sync()
        finally:
            os.close(self.fd)
            self.fd = None
