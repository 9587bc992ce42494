"""Checking and cleaning a store: ``verify`` reports, ``gc`` collects, ``compact`` merges logs.

``verify`` re-reads every log from its start (checking every entry's checksum), checks every
payload file, blob and result file against its checksum, and reports what is wrong by path
relative to the experiment folder: damaged entries, unfinished entries left by killed writers,
missing or damaged files, states whose parent is not in the store (orphans) or whose latest
entry lost its parent (not a root, yet no parent), temporary files of writers that are gone,
a damaged ``experiment.json``, an index that disagrees with the logs. It never repairs
anything.

``gc`` is conservative. It deletes nothing while any entry is damaged (a damaged record could
refer to any file; it says which entries, and how to resolve it: ``repair=True`` sets them
aside first). Otherwise it removes payload, result and blob files that no current record or
result refers to, leftovers of format 1, and the temporary files of writers that are gone
(decided by whether their process still holds its log, not by age). While a run is going on
(a live writer), files it may be about to refer to are kept if younger than ``min_age``.

``compact`` rewrites the logs of writers that are gone as one log holding only current entries
(no superseded record, no removed state, no damaged bytes); the old logs are deleted after the
new one is durable, damaged ones moved to ``quarantine/`` as evidence.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from ..errors import CorruptStateError, NotAnExperimentError
from ..record import INLINE, Status, dumps, loads, wire_refs
from . import records as rec
from .catalog import Catalog
from .errors import os_errors
from .files import fsync_dir, hash_file, is_temp, temp_owner, writer_token
from .frames import Frame, Kind, encode_frame, scan
from .index import INDEX_NAME, index_damage, read_index, write_index
from .legacy import old_files, read_legacy
from .log import log_names, log_owner, not_logs, read_from, writer_alive

if TYPE_CHECKING:
    from .directory import DirectoryStore

__all__ = ["DEFAULT_MIN_AGE", "GcReport", "Problem", "VerifyReport", "compact", "gc", "verify"]

logger = logging.getLogger("dagger")

#: While a run is going on, unreferenced files younger than this are kept by ``gc``.
DEFAULT_MIN_AGE = 3600.0

#: A run compacts the logs of writers that are gone once there are this many.
COMPACT_LOGS = 16


@dataclass
class Problem:
    """One thing wrong in a store.

    Attributes:
        state_id: The state concerned (None for a file that belongs to no one state).
        path: The file, relative to the experiment folder.
        message: What is wrong, and what happens to it.
    """

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
    logs: int = 0
    problems: list[Problem] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    def __str__(self) -> str:
        head = (
            f"checked {self.states} records, {self.payloads} payloads, {self.blobs} blobs, "
            f"{self.results} result files, {self.logs} logs: "
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


def _live_tokens(store: DirectoryStore) -> set[str]:
    """Writer tokens of the processes that hold a log of this store now (and this process's:
    its own temporary files are never a dead writer's)."""
    live = {
        log_owner(name) for name in log_names(store.log_dir) if writer_alive(store.log_dir / name)
    }
    live.add(writer_token())
    return live


def _temp_files(store: DirectoryStore) -> list[Path]:
    """Every temporary file under the store (dagger's names only), quarantine excluded."""
    found = []
    for folder in (
        store.directory,
        store.log_dir,
        store.payloads_dir,
        store.results_dir,
        store.directory / "states",
    ):
        with contextlib.suppress(OSError):
            found += [folder / name for name in os.listdir(folder) if is_temp(name)]
    for parent, _, names in os.walk(store.blobs_dir):
        found += [Path(parent) / name for name in names if is_temp(name)]
    return found


def _dead_temps(store: DirectoryStore, live: set[str]) -> list[Path]:
    return [path for path in _temp_files(store) if temp_owner(path.name) not in live]


def verify(target: DirectoryStore | str | os.PathLike[str]) -> VerifyReport:
    """Check every entry, payload, blob and result file against its checksum.

    Args:
        target: An experiment directory (or its store).

    Returns:
        A report; ``report.ok`` is False if anything is wrong, ``report.problems`` says what,
        naming the state and the file (relative to the experiment folder).

    Raises:
        NotAnExperimentError: The folder holds no experiment.
    """
    store = _as_store(target)
    report = VerifyReport()
    directory = store.directory
    try:
        rec.read_experiment(directory)
    except rec.DamagedMetaError as damaged:
        report.problems.append(
            Problem(
                None,
                "experiment.json",
                f"damaged ({damaged.reason}); it is rebuilt from the records (a run rewrites it)",
            )
        )
    except NotAnExperimentError:
        if not store.exists():
            raise
        report.problems.append(
            Problem(None, "experiment.json", "missing; a run rewrites it from the records")
        )
    legacy = store.format() < 2
    catalog, _ = store.rebuild()
    if legacy:
        store.legacy = read_legacy(directory)
        catalog = store.legacy.catalog
        for path, reason in store.legacy.damaged:
            report.problems.append(Problem(_state_of(path), path, reason))
    names = log_names(store.log_dir)
    report.logs = len(names)
    for path in not_logs(store.log_dir):
        what = (
            "is a file, not dagger's folder of logs"
            if path == store.log_dir.name
            else "is not a file (each log of records is one)"
        )
        report.problems.append(
            Problem(
                None,
                path,
                f"{what}: every state recorded there counts as absent and a run recomputes it; "
                "move it out of the experiment folder (keep it if it holds anything of yours)",
            )
        )
    live = _live_tokens(store)
    for log, offset, length, reason in catalog.damage:
        report.problems.append(
            Problem(
                None,
                f"log/{log}",
                f"a damaged entry at byte {offset} ({length} bytes, {reason}); what it held "
                "counts as absent and a run recomputes it; `dagger gc --repair` sets it aside",
            )
        )
    for name in names:
        with contextlib.suppress(OSError):
            size = os.stat(store.log_dir / name).st_size
            if size > catalog.positions.get(name, 0) and log_owner(name) not in live:
                report.problems.append(
                    Problem(
                        None,
                        f"log/{name}",
                        f"an unfinished entry at byte {catalog.positions.get(name, 0)}, left by "
                        "a writer that was killed (harmless: it never counted; gc removes it)",
                    )
                )
    checked_blobs: dict[str, str | None] = {}

    def check_blob(state_id: str, digest: str, size: int) -> None:
        if digest not in checked_blobs:
            path = store.blobs.path(digest)
            checked_blobs[digest] = _content_problem(path, size, digest)
        problem = checked_blobs[digest]
        if problem:
            shown = str(store.blobs.path(digest).relative_to(directory))
            report.problems.append(Problem(state_id, shown, problem + _SET_ASIDE))

    store.catalog = catalog
    visible = set()
    for row in range(len(catalog.ids)):
        status = catalog.status(row)
        if status is None:
            continue
        state_id = catalog.ids[row]
        visible.add(row)
        report.states += 1
        if status is Status.MISSING:
            report.problems.append(
                Problem(
                    state_id,
                    "log",
                    f"its content was found unusable ({catalog.marker_reason(row) or 'damaged'}) "
                    "and set aside; a run recomputes it",
                )
            )
        if status is Status.DONE:
            report.payloads += 1
            found = store.payload_problem(state_id)
            if found is not None:
                report.problems.append(Problem(state_id, found[0], found[1] + _SET_ASIDE))
            for digest, size in catalog.blob_refs(row).items():
                check_blob(state_id, digest, size)
        parent = catalog.parent[row]
        if parent >= 0 and catalog.status(parent) is None:
            report.problems.append(
                Problem(
                    state_id,
                    "log",
                    f"orphaned: its parent {catalog.ids[parent][:12]} is not in the store (a "
                    "run that defines the parent recomputes it; or remove this state)",
                )
            )
        elif parent < 0 and not catalog.root[row]:
            report.problems.append(
                Problem(
                    state_id,
                    "log",
                    "lost its lineage: its latest entry names no parent, yet it is not a root "
                    "(an older dagger recorded a failure over its record without its parent, "
                    "recipe and tags); run the script that defines it so that a run computes "
                    "it again with its lineage, or remove it (dagger rm)",
                )
            )
    for row in visible:
        if not catalog.notes_visible(row) or not catalog.results[row]:
            continue
        if all(value[3] for value in (catalog.results[row] or {}).values()):
            continue
        notes = store.read_notes(catalog.ids[row])
        if notes is None:
            continue
        state_id = catalog.ids[row]
        for name, entry in notes.results.items():
            if entry.inline or entry.file is None:
                continue
            report.results += 1
            if entry.file == INLINE:
                problem = store.result_problem(entry)
                if problem is not None:
                    where = catalog.values.get(entry.sha256 or "")
                    shown = f"log/{catalog.logs[where[0]]}" if where else "log"
                    report.problems.append(Problem(state_id, shown, f"result `{name}`: {problem}"))
            else:
                problem = _content_problem(directory / entry.file, entry.size, entry.sha256)
                if problem:
                    report.problems.append(
                        Problem(state_id, entry.file, f"result `{name}`: {problem}")
                    )
            for digest, size in entry.blobs.items():
                check_blob(state_id, digest, size)
    for temp in _dead_temps(store, live):
        report.problems.append(
            Problem(
                None,
                str(temp.relative_to(directory)),
                "a temporary file left by a writer that is gone (gc removes it)",
            )
        )
    if not legacy and not catalog.damage and (directory / INDEX_NAME).exists():
        # (where entries are damaged, the index may well hold what they held: no news)
        report.problems.extend(_index_problems(store, catalog))
    report.blobs = len(checked_blobs)
    return report


def _state_of(path: str) -> str | None:
    name = path.rpartition("/")[2]
    return name[: rec.ID_LENGTH] if len(name) > rec.ID_LENGTH else None


def _index_problems(store: DirectoryStore, truth: Catalog) -> list[Problem]:
    damage = index_damage(store.directory)
    if damage is not None:
        return [
            Problem(
                None,
                INDEX_NAME,
                f"damaged ({damage}); ignored, and rewritten by the next run or restore (it is "
                "only a cache)",
            )
        ]
    found = read_index(store.directory, store.log_dir)
    if found is None:
        return []  # intact but behind the logs (they were compacted): rewritten when used
    indexed, tails = found
    store.read_logs(indexed, log_names(store.log_dir), tails, warn=False)
    problems = []
    ours, theirs = indexed.snapshot(None), truth.snapshot(None)
    if ours.ids != theirs.ids:
        missing = set(theirs.ids) - set(ours.ids)
        extra = set(ours.ids) - set(theirs.ids)
        problems.append(
            Problem(
                None,
                INDEX_NAME,
                f"disagrees with the logs ({len(missing)} state(s) missing, {len(extra)} extra); "
                "ignored, and rewritten by the next run or restore",
            )
        )
        return problems
    for column in ("parent_id", "status", "tags", "params", "results", "seq", "properties"):
        if getattr(ours, column) != getattr(theirs, column):
            problems.append(
                Problem(
                    None,
                    INDEX_NAME,
                    f"disagrees with the logs (`{column}`); ignored once it is detected, and "
                    "rewritten by the next run or restore",
                )
            )
            break
    return problems


# What makes a state whose content is damaged count as absent, so that a run recomputes it:
# verify itself only reads.
_SET_ASIDE = (
    "; `dagger gc --repair` (or loading the state) sets it aside, and the next run recomputes it"
)


def _unusable(store: DirectoryStore, catalog: Catalog) -> list[Problem]:
    """Stored (done) states whose payload, or a blob it refers to, is missing or does not
    match its checksum: a full read of every payload and blob."""
    found = []
    blobs: dict[str, str | None] = {}
    for row in range(len(catalog.ids)):
        if catalog.status(row) is not Status.DONE:
            continue
        state_id = catalog.ids[row]
        problem = store.payload_problem(state_id)
        # (A record entry that cannot be read is a damaged entry: gc refuses, or repairs it.)
        if problem is not None and problem[1] != "its record entry cannot be read":
            found.append(Problem(state_id, problem[0], problem[1]))
            continue
        for digest, size in catalog.blob_refs(row).items():
            if digest not in blobs:
                blobs[digest] = _content_problem(store.blobs.path(digest), size, digest)
            if blobs[digest]:
                shown = str(store.blobs.path(digest).relative_to(store.directory))
                found.append(Problem(state_id, shown, f"blob {blobs[digest]}"))
                break
    return found


def _content_problem(
    path: Path, expected_size: int | None, expected_digest: str | None
) -> str | None:
    try:
        digest, size = hash_file(path)
    except FileNotFoundError:
        return "missing"
    if size != expected_size:
        return f"has {size} bytes, its record says {expected_size}"
    if expected_digest is not None and digest != expected_digest:
        return "content does not match its checksum"
    return None


@dataclass
class GcReport:
    """What ``gc`` removed (or would remove, on a dry run), kept, or refused to touch.

    Attributes:
        dry_run: Nothing was removed.
        removed: Files removed (relative to the experiment folder).
        bytes: Their total size.
        kept_young: Unreferenced files kept because a run is going on and they are younger
            than ``min_age`` (they may be about to be referred to).
        refused: Why nothing was removed (damaged entries), if so.
        compacted: Logs merged into one.
        set_aside: With ``repair``, the states whose content was damaged: each was set
            aside (marked ``quarantined``), so that the next run recomputes it.
    """

    dry_run: bool
    removed: list[str] = field(default_factory=list)
    bytes: int = 0
    kept_young: int = 0
    refused: list[Problem] = field(default_factory=list)
    compacted: int = 0
    set_aside: list[Problem] = field(default_factory=list)

    def __str__(self) -> str:
        if self.refused:
            lines = [
                "removed nothing: the store has damaged entries, and a damaged record could "
                "refer to any file:"
            ]
            lines += [f"  - {problem}" for problem in self.refused]
            lines.append(
                "Run the experiment again (it recomputes what those entries held), then "
                "`dagger gc DIR --repair` to move the damaged entries to quarantine/ and collect."
            )
            return "\n".join(lines)
        verb = "would remove" if self.dry_run else "removed"
        lines = [f"{verb} {len(self.removed)} file(s), {self.bytes / 2**20:.1f} MiB"]
        if self.compacted:
            lines[0] += f"; {'would merge' if self.dry_run else 'merged'} {self.compacted} logs"
        if self.kept_young:
            lines.append(
                f"kept {self.kept_young} unreferenced file(s) younger than the grace period "
                "because a run is going on (they may be about to be used); run gc again after"
            )
        lines += [f"  - {path}" for path in self.removed[:50]]
        if len(self.removed) > 50:
            lines.append(f"  ... and {len(self.removed) - 50} more")
        if self.set_aside:
            verb = "would set aside" if self.dry_run else "set aside"
            lines.append(
                f"{verb} {len(self.set_aside)} state(s) whose content is damaged "
                "(the next run recomputes them):"
            )
            lines += [f"  - {problem}" for problem in self.set_aside]
        return "\n".join(lines)


def gc(
    target: DirectoryStore | str | os.PathLike[str],
    *,
    dry_run: bool = False,
    min_age: float = DEFAULT_MIN_AGE,
    repair: bool = False,
) -> GcReport:
    """Remove files that no current record or result refers to, and dead writers' temporary
    files; merge the logs of writers that are gone.

    Args:
        target: An experiment directory (or its store).
        dry_run: Only report what would be removed.
        min_age: While a run is going on, leave unreferenced files younger than this many
            seconds alone (it may be about to refer to them). Where locks cannot be trusted
            (network filesystems), it applies to every file.
        repair: Set damaged entries aside (their logs rewritten without them, the damaged
            logs moved to ``quarantine/``) instead of refusing to collect.

    Raises:
        NotAnExperimentError: The folder holds no experiment.
    """
    store = _as_store(target)
    store.read_meta()  # refuse a folder that is not an experiment
    operation = "collect garbage" + (" (dry run)" if dry_run else "")
    # A folder gc may not write to is the StoreError a run gives there, never a traceback.
    with os_errors(operation, store.directory, root=store.directory):
        return _collect(store, dry_run=dry_run, min_age=min_age, repair=repair)


# What a folder this process may not write to raises (a read-only mount, another user's folder).
_NOT_WRITABLE = (errno.EACCES, errno.EPERM, errno.EROFS)


@contextlib.contextmanager
def _gc_lock(store: DirectoryStore, *, dry_run: bool) -> Iterator[None]:
    """The experiment lock; for a dry run of a folder this process cannot write to, none: a
    dry run writes nothing, so it needs no lock to be safe, and its report says what gc would
    remove as the folder is now."""
    with contextlib.ExitStack() as stack:
        try:
            stack.enter_context(store.experiment_lock())
        except OSError as error:
            if not (dry_run and error.errno in _NOT_WRITABLE):
                raise
        yield


def _collect(store: DirectoryStore, *, dry_run: bool, min_age: float, repair: bool) -> GcReport:
    report = GcReport(dry_run=dry_run)
    with _gc_lock(store, dry_run=dry_run):
        trusted = store.locks_trusted()
        live = _live_tokens(store) if trusted else set()
        running = bool(live - {writer_token()}) or not trusted or store.writer.pending
        catalog, _ = store.rebuild()
        legacy = store.format() < 2
        if legacy:
            store.legacy = read_legacy(store.directory)
            catalog = store.legacy.catalog
            damaged = [Problem(_state_of(p), p, reason) for p, reason in store.legacy.damaged]
        else:
            damaged = [
                Problem(None, f"log/{log}", f"a damaged entry at byte {offset} ({reason})")
                for log, offset, _, reason in catalog.damage
            ]
        if damaged and not (repair and not legacy and not running):
            report.refused = damaged
            if repair:
                report.refused.append(
                    Problem(
                        None,
                        "log",
                        "cannot repair now: a run is going on, or this store "
                        "is format 1 (run it once to convert it)",
                    )
                )
            return report
        names = log_names(store.log_dir)
        if (
            not legacy
            and not running
            and (len(names) > 1 or catalog.damage or _torn(store, catalog, names))
        ):
            report.compacted = len(names)
            if not dry_run:
                compact(store)
                catalog, _ = store.rebuild()
        store.catalog = catalog
        if repair and not legacy and not running:
            report.set_aside = _unusable(store, catalog)
            if report.set_aside and not dry_run:
                for problem in report.set_aside:
                    with contextlib.suppress(CorruptStateError):  # it always raises
                        store.quarantine(problem.state_id or "", problem.message)
                catalog, _ = store.rebuild()
                store.catalog = catalog
        wanted_files, wanted_blobs = _wanted(store, catalog)
        cutoff = time.time() - min_age

        def remove(path: Path, *, young_matters: bool = True) -> None:
            try:
                stat = path.stat()
            except FileNotFoundError:
                return
            if young_matters and running and stat.st_mtime > cutoff:
                report.kept_young += 1
                return
            report.removed.append(str(path.relative_to(store.directory)))
            report.bytes += stat.st_size
            if not dry_run:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(path)

        for folder in ("payloads", "results"):
            with contextlib.suppress(OSError):
                for name in os.listdir(store.directory / folder):
                    if not is_temp(name) and f"{folder}/{name}" not in wanted_files:
                        remove(store.directory / folder / name)
        with contextlib.suppress(OSError):
            for name in os.listdir(store.directory / "states"):
                if is_temp(name) or f"states/{name}" in wanted_files:
                    continue
                if name.endswith((".pkl", ".res")):
                    remove(store.directory / "states" / name)
        if not legacy:
            for path in old_files(store.directory):
                remove(path, young_matters=False)
        for parent, _, files in os.walk(store.blobs_dir):
            for name in files:
                if not is_temp(name) and name not in wanted_blobs:
                    remove(Path(parent) / name)
        for path in _dead_temps(store, live) if trusted else _temp_files(store):
            remove(path, young_matters=not trusted)
        if report.compacted and not dry_run:
            store.catalog = None
            store.save_index(force=True)  # the old one covered logs that are gone
    return report


def _torn(store: DirectoryStore, catalog: Catalog, names: list[str]) -> bool:
    for name in names:
        with contextlib.suppress(OSError):
            if os.stat(store.log_dir / name).st_size > catalog.positions.get(name, 0):
                return True
    return False


def _wanted(store: DirectoryStore, catalog: Catalog) -> tuple[set[str], set[str]]:
    """Files (relative paths) and blobs that current records and results refer to."""
    files: set[str] = set()
    blobs: set[str] = set()
    for row in range(len(catalog.ids)):
        status = catalog.status(row)
        if status is None:
            continue
        if status is Status.DONE:
            path = catalog.payload_file(row)
            if path is not None:
                files.add(path)
            blobs.update(catalog.blob_refs(row))
        if not catalog.notes_visible(row) or not catalog.results[row]:
            continue
        if all(value[3] for value in (catalog.results[row] or {}).values()):
            continue
        notes = store.read_notes(catalog.ids[row])
        if notes is None:
            continue
        for entry in notes.results.values():
            if entry.file is not None and not entry.inline:
                if entry.file != INLINE:
                    files.add(entry.file)
                blobs.update(entry.blobs)
    return files, blobs


def compact(store: DirectoryStore) -> int:
    """Rewrite the logs of a store as one log of its current entries (the caller holds the
    experiment lock and has checked that no writer is alive). Returns the logs replaced."""
    names = log_names(store.log_dir)
    if not names:
        return 0
    catalog, _ = store.rebuild()
    keep: dict[tuple[str, int], None] = {}
    wanted_parts: set[str] = set()
    wanted_values: set[str] = set()
    logs = catalog.logs
    for row in range(len(catalog.ids)):
        if catalog.status(row) is None:
            continue
        for log_no, offset, seq in (
            (catalog.rlog[row], catalog.roff[row], catalog.rseq[row]),
            (catalog.flog[row], catalog.foff[row], catalog.fseq[row]),
        ):
            if seq >= 0 and log_no >= 0:
                keep[(logs[log_no], offset)] = None
        if catalog.notes_visible(row) and catalog.nlog[row] >= 0:
            keep[(logs[catalog.nlog[row]], catalog.noff[row])] = None
    pruned = {
        catalog.ids[row] for row in range(len(catalog.ids)) if catalog.status(row) is Status.PRUNED
    }
    markers: dict[str, int] = {
        catalog.ids[row]: catalog.mseq[row]
        for row in range(len(catalog.ids))
        if catalog.status(row) is not None and catalog.mseq[row] >= 0
    }
    chunks: list[bytes] = []
    frames_by_log: dict[str, list[tuple[Frame, bytes]]] = {}
    for name in names:
        data = read_from(store.log_dir / name, 0)
        items, _ = scan(data)
        frames_by_log[name] = [
            (item, data[item.offset : item.offset + item.length])
            for item in items
            if isinstance(item, Frame)
        ]
    kept: list[tuple[Frame, bytes]] = []
    for name, frames in frames_by_log.items():
        for frame, raw in frames:
            if frame.kind is Kind.MARKER:
                document = loads(frame.document)
                if markers.get(document.get("id")) == document.get("seq"):
                    kept.append((frame, raw))
                continue
            if (name, frame.offset) not in keep:
                continue
            document = loads(frame.document)
            if frame.kind is Kind.RECORD and frame.raw_size and document.get("id") in pruned:
                # a pruned state's payload goes (what pruning is for); its record stays
                document.pop("payload", None)
                raw = encode_frame(Kind.RECORD, dumps(document))
            kept.append((frame, raw))
            wanted_parts.update(wire_refs(document).values())
            if frame.kind is Kind.NOTES:
                for entry in (document.get("results") or {}).values():
                    if isinstance(entry, dict) and entry.get("file") == INLINE:
                        wanted_values.add(str(entry.get("sha256")))
    written_parts: set[str] = set()
    written_values: set[str] = set()
    for frames in frames_by_log.values():
        for frame, raw in frames:
            document = None
            if frame.kind is Kind.PART:
                document = loads(frame.document)
                key = document.get("key")
                if key in wanted_parts and key not in written_parts:
                    written_parts.add(key)
                    chunks.append(raw)
            elif frame.kind is Kind.VALUE:
                document = loads(frame.document)
                digest = document.get("sha256")
                if digest in wanted_values and digest not in written_values:
                    written_values.add(digest)
                    chunks.append(raw)
    chunks.extend(raw for _, raw in kept)
    target = store.log_dir / f"{writer_token()}.compact-{int(time.time())}.log"
    from .files import publish, write_temp

    publish(write_temp(target, chunks, durable=True), target, replace=False)
    fsync_dir(store.log_dir)
    damaged_logs = {log for log, *_ in catalog.damage}
    for name in names:
        path = store.log_dir / name
        if name in damaged_logs or os.stat(path).st_size > catalog.positions.get(name, 0):
            destination = store.quarantine_dir / "log" / f"{name}.{time.strftime('%Y%m%dT%H%M%S')}"
            destination.parent.mkdir(parents=True, exist_ok=True)
            os.replace(path, destination)
        else:
            os.unlink(path)
    fsync_dir(store.log_dir)
    return len(names)


def tidy_needed(store: DirectoryStore) -> bool:
    """Whether :func:`tidy` has anything to do (checked without any lock: a run that finds a
    tidy store writes nothing, not even a lock file)."""
    if not store.locks_trusted():
        return False
    catalog = store.refresh()
    return bool(
        catalog.damage
        or len(log_names(store.log_dir)) >= COMPACT_LOGS
        or any(temp_owner(path.name) != writer_token() for path in _temp_files(store))
    )


def tidy(store: DirectoryStore) -> int:
    """At the start of a run (under the experiment lock), where no other writer is alive:
    remove the temporary files of writers that are gone, set damaged entries aside and merge
    many small logs. Returns the logs replaced."""
    if not store.locks_trusted():
        return 0
    live = _live_tokens(store)
    for path in _dead_temps(store, live):
        with contextlib.suppress(OSError):
            os.unlink(path)
    names = log_names(store.log_dir)
    catalog = store.refresh()
    if len(names) < COMPACT_LOGS and not catalog.damage:
        return 0
    if live - {writer_token()}:
        return 0
    replaced = compact(store)
    if catalog.damage:
        logger.warning(
            "The damaged entries of %s were moved to quarantine/log/ (the states they held are "
            "recomputed).",
            store.directory,
        )
    store.catalog = None
    store.save_index(force=True)
    return replaced


def write_fresh_index(store: DirectoryStore) -> bool:
    """Rebuild the index from the logs alone and write it."""
    catalog, tails = store.rebuild()
    return write_index(store.directory, catalog, tails)
