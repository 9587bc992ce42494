"""Checking and cleaning a store: ``verify`` reports, ``gc`` removes what nothing refers to.

``verify`` reads every record, payload, blob, annotation and result file, compares each with
the checksum that names or describes it, and reports what is wrong, by state and file. It never
repairs anything: what to do with a damaged experiment is the user's call (a rerun recomputes
what is missing or corrupt).

``gc`` removes blobs that no record or result refers to, payload and result files no record
or annotation points at (left by interrupted saves), and temporary files; all only when older
than a grace period, so that the files of a save in progress are never taken.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from ..record import InvalidRecordError, Notes, StateRecord
from . import records as rec
from .files import hash_file, is_temp

if TYPE_CHECKING:
    from .directory import DirectoryStore

__all__ = ["GcReport", "Problem", "VerifyReport", "gc", "verify"]

DEFAULT_MIN_AGE = 3600.0


@dataclass
class Problem:
    """One thing wrong in a store."""

    state_id: str | None
    path: str
    message: str

    def __str__(self) -> str:
        who = f"state {self.state_id[:12]}: " if self.state_id else ""
        return f"{who}{self.path}: {self.message}"


@dataclass
class VerifyReport:
    """What ``verify`` checked and what it found wrong."""

    states: int = 0
    payloads: int = 0
    blobs: int = 0
    results: int = 0
    problems: list[Problem] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    def __str__(self) -> str:
        head = (
            f"checked {self.states} records, {self.payloads} payloads, {self.blobs} blobs, "
            f"{self.results} result files: "
        )
        if self.ok:
            return head + "no problems"
        return (
            head
            + f"{len(self.problems)} problem(s)\n"
            + "\n".join(f"  - {problem}" for problem in self.problems)
        )


def _as_store(target: DirectoryStore | str | os.PathLike[str]) -> DirectoryStore:
    from .directory import DirectoryStore

    return target if isinstance(target, DirectoryStore) else DirectoryStore(target)


def verify(target: DirectoryStore | str | os.PathLike[str]) -> VerifyReport:
    """Check every record, payload, blob and result file against its checksum.

    Args:
        target: An experiment directory (or its store).

    Returns:
        A report; ``report.ok`` is False if anything is wrong, ``report.problems`` says what,
        naming the state and the file.
    """
    store = _as_store(target)
    report = VerifyReport()
    directory = store.directory
    rec.read_experiment(directory)  # a folder that is not an experiment is an error, not a report
    listing = rec.scan(store.states_dir)
    checked_blobs: dict[str, str | None] = {}

    def check_blob(state_id: str, digest: str, size: int) -> None:
        if digest not in checked_blobs:
            checked_blobs[digest] = _blob_problem(store.blobs.path(digest), digest, size)
        problem = checked_blobs[digest]
        if problem:
            relative = store.blobs.path(digest).relative_to(directory)
            report.problems.append(Problem(state_id, str(relative), problem))

    for state_id in sorted(listing.records):
        report.states += 1
        name = f"states/{rec.record_name(state_id)}"
        try:
            document = rec.read_json(store.states_dir / rec.record_name(state_id))
            record = StateRecord.from_json(document, expected_id=state_id)
        except (OSError, InvalidRecordError) as error:
            report.problems.append(Problem(state_id, name, f"unreadable record ({error})"))
            continue
        info = record.payload
        report.payloads += 1
        if info is None:
            report.problems.append(Problem(state_id, name, "the record names no payload"))
            continue
        problem = _file_problem(store.states_dir / info.file, info.size, info.sha256)
        if problem:
            report.problems.append(Problem(state_id, f"states/{info.file}", problem))
        for digest, size in record.blobs.items():
            check_blob(state_id, digest, size)
    for state_id in sorted(listing.notes):
        name = f"states/{rec.notes_name(state_id)}"
        try:
            notes = Notes.from_json(rec.read_json(store.states_dir / rec.notes_name(state_id)))
        except (OSError, InvalidRecordError) as error:
            report.problems.append(Problem(state_id, name, f"unreadable annotations ({error})"))
            continue
        for result_name, entry in notes.results.items():
            if entry.file is None:
                continue
            report.results += 1
            problem = _file_problem(store.states_dir / entry.file, entry.size, entry.sha256)
            if problem:
                report.problems.append(
                    Problem(state_id, f"states/{entry.file}", f"result `{result_name}`: {problem}")
                )
            for digest, size in entry.blobs.items():
                check_blob(state_id, digest, size)
    for state_id in sorted(listing.failures):
        try:
            StateRecord.from_json(
                rec.read_json(store.states_dir / rec.failure_name(state_id)),
                expected_id=state_id,
            )
        except (OSError, InvalidRecordError) as error:
            name = f"states/{rec.failure_name(state_id)}"
            report.problems.append(Problem(state_id, name, f"unreadable failure record ({error})"))
    report.blobs = len(checked_blobs)
    return report


def _file_problem(path: Path, expected_size: int | None, expected_digest: str | None) -> str | None:
    try:
        digest, size = hash_file(path)
    except FileNotFoundError:
        return "missing"
    if size != expected_size:
        return f"has {size} bytes, its record says {expected_size}"
    if digest != expected_digest:
        return "content does not match the checksum in its record"
    return None


def _blob_problem(path: Path, digest: str, size: int) -> str | None:
    try:
        actual, actual_size = hash_file(path)
    except FileNotFoundError:
        return "blob missing"
    if actual_size != size:
        return f"blob has {actual_size} bytes, {size} expected"
    if actual != digest:
        return "blob content does not match its name (checksum)"
    return None


@dataclass
class GcReport:
    """What ``gc`` removed (or would remove, on a dry run)."""

    dry_run: bool
    removed: list[str] = field(default_factory=list)
    bytes: int = 0

    def __str__(self) -> str:
        verb = "would remove" if self.dry_run else "removed"
        lines = [f"{verb} {len(self.removed)} file(s), {self.bytes / 2**20:.1f} MiB"]
        lines += [f"  - {path}" for path in self.removed[:50]]
        if len(self.removed) > 50:
            lines.append(f"  ... and {len(self.removed) - 50} more")
        return "\n".join(lines)


def gc(
    target: DirectoryStore | str | os.PathLike[str],
    *,
    dry_run: bool = False,
    min_age: float = DEFAULT_MIN_AGE,
) -> GcReport:
    """Remove blobs, payloads and results that nothing refers to, and temporary files.

    Args:
        target: An experiment directory (or its store).
        dry_run: Only report what would be removed.
        min_age: Leave alone anything modified less than this many seconds ago (a save in
            progress writes its blobs and payload before the record that refers to them).
    """
    store = _as_store(target)
    rec.read_experiment(store.directory)  # refuse a folder that is not an experiment
    report = GcReport(dry_run=dry_run)
    cutoff = time.time() - min_age
    listing = rec.scan(store.states_dir)
    wanted_blobs: set[str] = set()
    wanted_files: set[str] = set()
    for state_id in listing.records:
        record = store.read_record(state_id)
        if record is None:
            continue
        if record.payload is not None:
            wanted_files.add(record.payload.file)
        wanted_blobs.update(record.blobs)
    for state_id in listing.notes:
        for entry in store.read_notes(state_id).results.values():
            if entry.file is not None:
                wanted_files.add(entry.file)
                wanted_blobs.update(entry.blobs)

    def remove(path: Path) -> None:
        try:
            stat = path.stat()
        except FileNotFoundError:
            return
        if stat.st_mtime > cutoff:
            return
        report.removed.append(str(path.relative_to(store.directory)))
        report.bytes += stat.st_size
        if not dry_run:
            try:
                os.unlink(path)
            except FileNotFoundError:
                pass

    for names in listing.payloads.values():
        for name in names:
            if name not in wanted_files:
                remove(store.states_dir / name)
    for name in listing.results:
        if name not in wanted_files:
            remove(store.states_dir / name)
    for name in listing.temps:
        remove(store.states_dir / name)
    for parent, _, names in os.walk(store.blobs_dir):
        for name in names:
            if is_temp(name) or name not in wanted_blobs:
                remove(Path(parent) / name)
    for name in os.listdir(store.directory):
        if is_temp(name):
            remove(store.directory / name)
    return report
