"""Crash-safe file primitives: atomic writes, exclusive publication, checksums.

A file is written to a temporary name in its final folder (created exclusively), flushed,
fsynced, and then moved into place; the folder is fsynced after. Readers therefore see either
nothing or the whole file, whatever happens to the writer (SIGKILL, power loss, Ctrl-C).

Temporary names start with a dot and contain ``.tmp-``, so listings skip them and ``gc`` can
sweep the ones a killed writer left behind.
"""

from __future__ import annotations

import ctypes
import errno
import hashlib
import itertools
import os
import secrets
import sys
from collections.abc import Iterable
from pathlib import Path
from typing import Any

__all__ = [
    "CHUNK",
    "TEMP_MARK",
    "fsync_dir",
    "hash_file",
    "is_temp",
    "publish",
    "temp_owner",
    "temp_path",
    "write_atomic",
    "write_temp",
    "writer_token",
]

CHUNK = 1 << 22
TEMP_MARK = ".tmp-"
_O_CLOEXEC = getattr(os, "O_CLOEXEC", 0)

Data = bytes | bytearray | memoryview


class _TempNames:
    """Unique temporary-name suffixes without a system call per name.

    A process token (pid and random bits, renewed after fork) plus a counter; creating the file
    with O_EXCL still guards against any collision (say, two hosts sharing a folder).
    """

    def __init__(self) -> None:
        self.renew()
        os.register_at_fork(after_in_child=self.renew)

    def renew(self) -> None:
        self.token = f"{os.getpid()}-{secrets.token_hex(4)}"
        self.counter = itertools.count()

    def next(self) -> str:
        return f"{self.token}-{next(self.counter)}"


_NAMES = _TempNames()


def writer_token() -> str:
    """This process's writer token (pid and random bits, new after a fork).

    It names the process's log (``log/<token>.log``) and is part of every temporary name it
    creates, so that ``gc`` can tell a live writer's temporary file from a dead one's.
    """
    return _NAMES.token


def temp_owner(name: str) -> str | None:
    """The writer token inside a temporary file's name (None if it is not one of ours)."""
    if not is_temp(name):
        return None
    token, _, counter = name.rpartition(TEMP_MARK)[2].rpartition("-")
    return token if token and counter.isdigit() else None


def temp_path(path: Path) -> Path:
    """A fresh temporary name beside ``path``, unique across processes and threads."""
    return path.with_name(f".{path.name}{TEMP_MARK}{_NAMES.next()}")


def is_temp(name: str) -> bool:
    """Whether a file name is one of dagger's temporary names."""
    return name.startswith(".") and TEMP_MARK in name


def fsync_dir(folder: Path) -> None:
    """Make the folder's entries (renames, links, unlinks) durable."""
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_temp(path: Path, chunks: Iterable[Data], *, durable: bool) -> Path:
    """Write ``chunks`` to a new temporary file beside ``path``; return the temporary path.

    The file is created exclusively and fsynced when ``durable``. On any error the temporary
    file is removed before the error propagates.
    """
    tmp = temp_path(path)
    chunks = list(chunks)
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | _O_CLOEXEC, 0o644)
    except OSError as error:
        raise _about(error, path, chunks) from None
    try:
        for chunk in chunks:
            view = memoryview(chunk).cast("B")
            while view:
                written = os.write(fd, view[:CHUNK])
                view = view[written:]
        if durable:
            os.fsync(fd)
    except BaseException as error:
        os.close(fd)
        _unlink_quietly(tmp)
        if isinstance(error, OSError):
            raise _about(error, path, chunks) from None
        raise
    os.close(fd)
    return tmp


def _about(error: OSError, path: Path, chunks: list[Data]) -> OSError:
    """The error of a failed write, naming the file meant (not its temporary name) and, as
    ``error.needed``, how many bytes were being written (for the store's error message)."""
    if error.filename is None or TEMP_MARK in str(error.filename):
        error.filename = str(path)
    error.needed = sum(memoryview(chunk).nbytes for chunk in chunks)  # type: ignore[attr-defined]
    return error


def publish(tmp: Path, path: Path, *, replace: bool) -> bool:
    """Move a finished temporary file into place.

    Args:
        tmp: The temporary file (always gone afterwards).
        path: The final name.
        replace: Replace an existing file atomically (``os.replace``). Otherwise never
            replace: if ``path`` exists already, the existing file wins.

    Returns:
        True if ``path`` now holds this file, False if another file was there first.
    """
    if replace:
        try:
            os.replace(tmp, path)
        except BaseException:
            _unlink_quietly(tmp)
            raise
        return True
    try:
        renamed = _rename_noreplace(tmp, path)
    except FileExistsError:
        _unlink_quietly(tmp)
        return False
    except BaseException:
        _unlink_quietly(tmp)
        raise
    if renamed:
        return True
    try:
        os.link(tmp, path)
        return True
    except FileExistsError:
        return False
    except OSError as error:
        # Some filesystems (FAT, some FUSE and SMB mounts) have no hard links. An exclusive
        # rename is not available everywhere either; check-then-rename keeps "first wins"
        # except under a race, where the content-addressed names keep the damage to a
        # duplicate of identical bytes.
        if error.errno not in (errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EXDEV):
            raise
        if path.exists():
            return False
        os.replace(tmp, path)
        return True
    finally:
        _unlink_quietly(tmp)


def _load_renameat2() -> Any:
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        function = libc.renameat2
    except (OSError, AttributeError):
        return None
    function.argtypes = [
        ctypes.c_int,
        ctypes.c_char_p,
        ctypes.c_int,
        ctypes.c_char_p,
        ctypes.c_uint,
    ]
    function.restype = ctypes.c_int
    return function


_RENAMEAT2 = _load_renameat2()
_AT_FDCWD = -100
_RENAME_NOREPLACE = 1


def _rename_noreplace(tmp: Path, path: Path) -> bool:
    """Linux ``renameat2(RENAME_NOREPLACE)``: one atomic, never-replacing rename.

    Returns False where it is not available (other systems, filesystems without it), so the
    caller falls back to a hard link. Raises FileExistsError if ``path`` exists.
    """
    if _RENAMEAT2 is None:
        return False
    result = _RENAMEAT2(
        _AT_FDCWD, os.fsencode(tmp), _AT_FDCWD, os.fsencode(path), _RENAME_NOREPLACE
    )
    if result == 0:
        return True
    code = ctypes.get_errno()
    if code == errno.EEXIST:
        raise FileExistsError(code, os.strerror(code), str(path))
    if code in (errno.EINVAL, errno.ENOSYS, errno.ENOTSUP):
        return False
    raise OSError(code, os.strerror(code), str(path))


def write_atomic(
    path: Path, data: Data | Iterable[Data], *, durable: bool, replace: bool = True
) -> bool:
    """Write a whole file atomically (see :func:`publish` for ``replace`` and the result).

    The folder is fsynced afterwards when ``durable``.
    """
    chunks = [data] if isinstance(data, bytes | bytearray | memoryview) else data
    published = publish(write_temp(path, chunks, durable=durable), path, replace=replace)
    if durable:
        fsync_dir(path.parent)
    return published


def hash_file(path: Path) -> tuple[str, int]:
    """SHA-256 hex digest and size of a file, read in chunks."""
    sha = hashlib.sha256()
    size = 0
    with open(path, "rb", buffering=0) as handle:
        buffer = bytearray(CHUNK)
        view = memoryview(buffer)
        while True:
            read = handle.readinto(buffer)
            if not read:
                break
            sha.update(view[:read])
            size += read
    return sha.hexdigest(), size


def _unlink_quietly(path: Path) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass
