"""Checking a stored experiment as a tree: every state's parent is stored.

:func:`dagger.store.maintenance.verify` checks the store's files against their checksums; a
store is also a tree, and a record whose parent has no record (deleted by hand, lost with a
disk, never copied) leaves a state that ``restore`` shows as a second root and that no run can
recompute. :func:`verify` reports both kinds of problem in one report and repairs nothing.
"""

from __future__ import annotations

import os

from ._names import short_id
from .store import DirectoryStore
from .store.maintenance import Problem, VerifyReport
from .store.maintenance import verify as verify_files

__all__ = ["verify"]


def verify(target: DirectoryStore | str | os.PathLike[str]) -> VerifyReport:
    """Check every record, payload, blob and result file against its checksum, and every
    state's link to its parent.

    Args:
        target: An experiment directory (or its store).

    Returns:
        A report; ``report.ok`` is False if anything is wrong, ``report.problems`` says what,
        naming the state and the file (or the missing parent).

    Raises:
        NotAnExperimentError: The folder holds no experiment.
    """
    report = verify_files(target)
    store = target if isinstance(target, DirectoryStore) else DirectoryStore(target)
    found = store.survey()
    for state_id in sorted(found.stored | found.broken):
        record = store.read_record(state_id)
        if record is None or record.parent is None:
            continue
        if not store.has_record(record.parent):
            report.problems.append(
                Problem(
                    state_id,
                    f"parent {short_id(record.parent)}",
                    f"its parent {record.parent} has no record: the state is cut off from "
                    "its root (restore shows it as a root of its own) and cannot be computed "
                    "again. Restore the parent's files, or run the script that built the tree "
                    "to recompute it.",
                )
            )
    return report
