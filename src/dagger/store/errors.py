"""The one place where operating-system errors of a store become public dagger errors.

A store wraps every operation that writes in :func:`os_errors`; an ``OSError`` raised inside
becomes a :class:`~dagger.errors.StoreError` that names the operation, the file (relative to
the experiment folder), and the fix. Out of space (or quota, or over the file-size limit), it
also says how many bytes were being written and how many are free, and that what was stored
before is intact. A read-only folder gets one sentence saying which operation needs write
access. Errors that are already dagger's pass through unchanged.
"""

from __future__ import annotations

import contextlib
import errno
import os
from collections.abc import Iterator
from pathlib import Path

from ..errors import DaggerError, StoreError

__all__ = ["Writing", "free_bytes", "os_errors", "relative"]

_FULL = (errno.ENOSPC, errno.EDQUOT)
_TOO_BIG = (errno.EFBIG,)
_READ_ONLY = (errno.EACCES, errno.EPERM, errno.EROFS)


def relative(path: os.PathLike[str] | str, root: os.PathLike[str] | str | None) -> str:
    """``path`` relative to the experiment folder ``root`` when it is inside it."""
    if root is None:
        return str(path)
    try:
        inside = str(Path(path).relative_to(root))
    except ValueError:
        return str(path)
    return str(path) if inside == "." else inside


def free_bytes(path: os.PathLike[str] | str) -> int | None:
    """Bytes available to this user on the filesystem holding ``path`` (None if unknown)."""
    target = Path(path)
    while not target.exists() and target != target.parent:
        target = target.parent
    try:
        stats = os.statvfs(target)
    except (OSError, AttributeError):
        return None
    return stats.f_bavail * stats.f_frsize


class Writing:
    """What is being written right now, for the message of an out-of-space error.

    ``with os_errors(...) as writing: writing.set(path, nbytes); ...``.
    """

    def __init__(self) -> None:
        self.path: os.PathLike[str] | str | None = None
        self.nbytes: int | None = None

    def set(self, path: os.PathLike[str] | str, nbytes: int | None) -> None:
        self.path, self.nbytes = path, nbytes


def _size(nbytes: int | None) -> str:
    if nbytes is None:
        return "an unknown number of bytes"
    if nbytes < 1 << 20:
        return f"{nbytes:,} bytes"
    return f"{nbytes / (1 << 20):,.1f} MiB ({nbytes:,} bytes)"


@contextlib.contextmanager
def os_errors(
    operation: str,
    path: os.PathLike[str] | str,
    *,
    root: os.PathLike[str] | str | None = None,
) -> Iterator[Writing]:
    """Turn an ``OSError`` raised inside the block into a StoreError about ``operation``.

    Args:
        operation: What was being done, as a verb phrase (``"store state 3fa2c1d0e9b8"``).
        path: The file or folder concerned, when the error itself names none.
        root: The experiment folder: paths in the message are relative to it.

    Raises:
        StoreError: With ``operation``, ``path``, ``errno``, and for a full disk ``needed``
            and ``free`` (bytes), the original error as its cause.
    """
    writing = Writing()
    try:
        yield writing
    except DaggerError:
        raise
    except OSError as error:
        target = error.filename or writing.path or path
        shown = relative(target, root)
        details: dict[str, object] = {
            "operation": operation,
            "path": str(target),
            "errno": error.errno,
        }
        if error.errno in _FULL or error.errno in _TOO_BIG:
            free = free_bytes(target)
            needed = getattr(error, "needed", None)  # set by the store's writers
            if needed is None:
                needed = writing.nbytes
            details.update(needed=needed, free=free)
            what = "no space left" if error.errno in _FULL else "the file-size limit was reached"
            if error.errno == errno.EDQUOT:
                what = "your disk quota is used up"
            message = (
                f"Could not {operation}: {what} while writing `{shown}` "
                f"({_size(needed)} to write, "
                f"{_size(free) if free is not None else 'an unknown amount'} free). Nothing "
                "stored before is lost and the store is consistent: free some space (or run "
                "`dagger gc` on the experiment folder), then run again."
            )
        elif error.errno in _READ_ONLY:
            message = (
                f"Could not {operation}: `{shown}` is not writable by this process "
                f"({error.strerror}). Running needs write access to the experiment folder; "
                "reading it (restore, show, ls, verify) does not."
            )
        else:
            message = (
                f"Could not {operation} ({error.strerror or error}: `{shown}`). Nothing stored "
                "before is affected; fix the cause and run again."
            )
        raise StoreError(message, **details) from error
