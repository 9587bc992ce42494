"""The one place where operating-system errors of a store become public dagger errors.

A store wraps every operation that writes in :func:`os_errors`; an ``OSError`` raised inside
(no space left, a read-only folder, no permission) becomes a
:class:`~dagger.errors.StoreError` that names the operation, the path and the fix. Errors
that are already dagger's pass through unchanged.
"""

from __future__ import annotations

import contextlib
import errno
import os
from collections.abc import Iterator

from ..errors import DaggerError, StoreError

__all__ = ["os_errors"]


def _advice(error: OSError, path: os.PathLike[str] | str) -> str:
    if error.errno in (errno.ENOSPC, errno.EDQUOT):
        return (
            "The disk (or your quota) is full. Free some space, or run `dagger gc` on the "
            "experiment folder, then run again: what was stored before is intact."
        )
    if error.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        return (
            f"`{path}` is not writable by this process. Use a folder you can write to, or "
            "fix its permissions; reading (restore, show, ls) works without write access."
        )
    return "Nothing stored before is affected; fix the cause and run again."


@contextlib.contextmanager
def os_errors(operation: str, path: os.PathLike[str] | str) -> Iterator[None]:
    """Turn an ``OSError`` raised inside the block into a StoreError about ``operation``.

    Raises:
        StoreError: With ``operation``, ``path``, ``errno`` and the original error as cause.
    """
    try:
        yield
    except DaggerError:
        raise
    except OSError as error:
        raise StoreError(
            f"Could not {operation} ({error.strerror or error}: "
            f"{error.filename or path}). {_advice(error, path)}",
            operation=operation,
            path=str(error.filename or path),
            errno=error.errno,
        ) from error
