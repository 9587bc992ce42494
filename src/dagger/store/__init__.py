"""The directory store: what the runner and the tree read from and write to.

The runner talks to a store through a handful of methods (``prepare``, ``scan``, ``save``,
``load``, ``read_record``, ``update_notes``, ``write_failure``, ``slim_entries``, ``lock``);
:class:`DirectoryStore` implements them on a folder laid out as in ``DESIGN.md`` §4::

    <directory>/experiment.json
    <directory>/states/...        records, payloads, annotations (see ``records.py``)
    <directory>/blobs/..          content-addressed buffers
    <directory>/quarantine/       payloads that failed their checksum, kept as evidence
    <directory>/index.json        snapshot of the slim records, for fast restore

Constructing a store touches no disk.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import math
import os
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import StoreError
from . import records as rec
from .blobs import DEFAULT_THRESHOLD, BlobError, Blobs
from .files import fsync_dir, hash_file, publish, write_temp
from .locks import experiment_lock, locks_trustworthy, state_lock
from .payload import dumps_payload, dumps_state, loads_payload

__all__ = ["CorruptStateError", "DirectoryStore", "Results", "SlimEntry"]

logger = logging.getLogger("dagger")

DURABILITY = ("safe", "fast")


class CorruptStateError(Exception):
    """Internal: a record's payload is missing or does not match its checksum."""

    def __init__(self, state_id: str, reason: str) -> None:
        super().__init__(f"state {state_id[:12]}: {reason}")
        self.state_id = state_id
        self.reason = reason


@dataclass
class SlimEntry:
    """Everything stored about one state except its payload."""

    state_id: str
    record: dict[str, Any] | None = None
    notes: dict[str, Any] = field(default_factory=dict)
    failure: dict[str, Any] | None = None
    has_payload: bool = False


class DirectoryStore:
    """A folder holding one experiment.

    Args:
        directory: The experiment folder (created by :meth:`prepare`, not here).
        durability: ``"safe"`` (default) fsyncs every file and folder it writes, so a power
            loss cannot lose a state that was reported saved; ``"fast"`` skips the fsyncs for
            scratch experiments: writes stay atomic (a crash of the process loses nothing
            already written), only a machine crash may lose recent states.
        blob_threshold: Buffers (tensor storages, arrays, bytes) of at least this many bytes
            are stored once, as content-addressed blobs, and shared between states.
        use_mmap: Load blobs as private copy-on-write memory maps (default) rather than
            reading them into fresh memory.
    """

    def __init__(
        self,
        directory: str | os.PathLike[str],
        *,
        durability: str = "safe",
        blob_threshold: int = DEFAULT_THRESHOLD,
        use_mmap: bool = True,
    ) -> None:
        if durability not in DURABILITY:
            raise ValueError(
                f"durability={durability!r} is not one of {DURABILITY}: use 'safe' (fsync, "
                "the default) or 'fast' (no fsync, for scratch experiments)."
            )
        self.directory = Path(directory)
        self.durability = durability
        self.durable = durability == "safe"
        self.states_dir = self.directory / "states"
        self.blobs_dir = self.directory / "blobs"
        self.quarantine_dir = self.directory / "quarantine"
        self.meta_path = self.directory / "experiment.json"
        self.index_path = self.directory / "index.json"
        self.blobs = Blobs(
            self.blobs_dir, durable=self.durable, threshold=blob_threshold, use_mmap=use_mmap
        )
        self._records: dict[str, dict[str, Any]] = {}
        self._locking: bool | None = None
        self.changed = False

    def __repr__(self) -> str:
        return f"DirectoryStore({str(self.directory)!r}, durability={self.durability!r})"

    # -- experiment.json ---------------------------------------------------------------------

    def exists(self) -> bool:
        return self.meta_path.exists()

    def read_meta(self) -> dict[str, Any]:
        return rec.read_experiment(self.directory)

    def prepare(self, meta: dict[str, Any]) -> dict[str, Any]:
        """Create the folders and write or extend experiment.json before a run.

        Args:
            meta: This run's description; its ``roots`` are added to the stored list.

        Returns:
            The experiment.json now on disk.
        """
        if self.directory.exists() and not self.directory.is_dir():
            raise StoreError(
                f"`{self.directory}` is a file, not a folder; pass a folder for the experiment.",
                directory=str(self.directory),
            )
        self.directory.mkdir(parents=True, exist_ok=True)
        with self.experiment_lock():  # concurrent runs must not drop each other's roots
            if self.exists():
                stored = self.read_meta()
                roots = list(stored.get("roots", []))
                new_roots = [root for root in meta["roots"] if root not in roots]
                if not new_roots:
                    return stored
                merged = {**stored, "roots": roots + new_roots, "updated": meta["created"]}
            else:
                merged = dict(meta)
            for folder in (self.states_dir, self.blobs_dir):
                folder.mkdir(parents=True, exist_ok=True)
            rec.write_json(self.meta_path, merged, durable=self.durable)
        return merged

    # -- listing and records -------------------------------------------------------------------

    def scan(self) -> rec.Listing:
        return rec.scan(self.states_dir)

    def read_record(self, state_id: str) -> dict[str, Any] | None:
        cached = self._records.get(state_id)
        if cached is not None:
            return cached
        try:
            record = rec.read_json(self.states_dir / rec.record_name(state_id))
        except FileNotFoundError:
            return None
        except ValueError:
            return None
        self._records[state_id] = record
        return record

    # -- saving ------------------------------------------------------------------------------

    def save(self, state_id: str, state: Any, record: dict[str, Any]) -> dict[str, Any]:
        """Write a state's payload, then its record (the commit marker).

        Args:
            state_id: The state's id.
            state: The state object.
            record: The record without its ``payload`` field.

        Returns:
            The record that is now stored: this one, or the first writer's if another process
            stored the same state first.

        Raises:
            SerializationError: The state cannot be pickled (nothing is left on disk).
        """
        payload_tmp, payload_info, blob_refs = self._write_payload(state_id, state)
        payload_path = self.states_dir / payload_info["file"]
        # The payload is named by its content digest, so replacing one with the same name
        # replaces identical bytes: a plain rename is safe.
        publish(payload_tmp, payload_path, replace=True)
        record = {**record, "payload": payload_info, "blobs": blob_refs}
        record_path = self.states_dir / rec.record_name(state_id)
        # Interrupted here, the payload stays without a record: invisible to readers (only a
        # record commits a state) and swept by gc. Deleting it could delete another writer's
        # identical, committed payload.
        record_tmp = write_temp(record_path, [rec.to_json_bytes(record)], durable=self.durable)
        won = publish(record_tmp, record_path, replace=False)
        if self.durable:
            fsync_dir(self.states_dir)
        self.changed = True
        if not won:
            winner = self.read_record(state_id) or record
            # A payload no record points at is this writer's own; one with the winner's name
            # holds the winner's bytes and stays.
            if winner.get("payload", {}).get("file") != payload_info["file"]:
                _unlink(payload_path)
            return winner
        self._records[state_id] = record
        return record

    def _write_payload(
        self, state_id: str, state: Any
    ) -> tuple[Path, dict[str, Any], dict[str, int]]:
        probe = self.states_dir / f"{state_id}.payload"
        save_hook = getattr(state, "save_hook", None)
        if callable(save_hook):
            tmp = write_temp(probe, [], durable=False)
            try:
                save_hook(tmp)
                if self.durable:
                    with open(tmp, "rb+") as handle:
                        os.fsync(handle.fileno())
                digest, size = hash_file(tmp)
            except BaseException:
                _unlink(tmp)
                raise
            kind, refs = "save_hook", dict[str, int]()
        else:
            data, refs, kind = dumps_state(state, self.blobs, state_id=state_id)
            digest, size = hashlib.sha256(data).hexdigest(), len(data)
            tmp = write_temp(probe, [data], durable=self.durable)
        if refs and self.durable:
            fsync_dir(self.blobs_dir)
        name = rec.payload_name(state_id, digest)
        return tmp, {"file": name, "sha256": digest, "size": size, "format": kind}, refs

    # -- loading -----------------------------------------------------------------------------

    def load(self, state_id: str, state_class: Any = None, map_location: Any = None) -> Any:
        """Read, verify and unpickle a state's payload.

        Raises:
            CorruptStateError: The record or payload is missing, or the payload does not match
                its checksum; the bad files have been moved to ``quarantine/``.
        """
        record = self.read_record(state_id)
        if record is None:
            if self.has_record(state_id):  # there, but not valid JSON: move it aside
                self.quarantine(state_id, "its record is not valid JSON")
            raise CorruptStateError(state_id, "its record is missing")
        info = record.get("payload") or {}
        path = self.states_dir / info.get("file", "")
        if info.get("format") == "save_hook":
            load_hook = getattr(state_class, "load_hook", None)
            self._verify_file(state_id, path, info)
            if not callable(load_hook):
                raise CorruptStateError(
                    state_id, "it was saved by a save_hook and its class has no load_hook"
                )
            return load_hook(path)
        try:
            with open(path, "rb") as handle:
                data = handle.read()
        except FileNotFoundError:
            self.quarantine(state_id, "its payload file is missing")
        if len(data) != info.get("size") or hashlib.sha256(data).hexdigest() != info.get("sha256"):
            self.quarantine(state_id, "its payload does not match the checksum in its record")
        try:
            return loads_payload(data, self.blobs, map_location)
        except BlobError as error:
            if error.reason != "missing":
                self._quarantine_blob(error.digest)
            self.quarantine(state_id, f"blob {error.digest[:16]} {error.reason}")

    def _quarantine_blob(self, digest: str) -> None:
        """Move a corrupt blob aside: every state that refers to it must be recomputed."""
        target = self.quarantine_dir / "blobs"
        target.mkdir(parents=True, exist_ok=True)
        with contextlib.suppress(FileNotFoundError):
            os.replace(self.blobs.path(digest), target / digest)

    def _verify_file(self, state_id: str, path: Path, info: dict[str, Any]) -> None:
        try:
            digest, size = hash_file(path)
        except FileNotFoundError:
            self.quarantine(state_id, "its payload file is missing")
        if size != info.get("size") or digest != info.get("sha256"):
            self.quarantine(state_id, "its payload does not match the checksum in its record")

    def quarantine(self, state_id: str, reason: str) -> None:
        """Move a state's record and payloads aside, warn once, and raise CorruptStateError.

        The state then counts as absent: the next run recomputes it.
        """
        target = self.quarantine_dir / f"{state_id}-{time.strftime('%Y%m%dT%H%M%S')}"
        moved = []
        listing = self.scan()
        names = [rec.record_name(state_id), *listing.payloads.get(state_id, [])]
        for name in names:
            source = self.states_dir / name
            if not source.exists():
                continue
            target.mkdir(parents=True, exist_ok=True)
            with contextlib.suppress(FileNotFoundError):
                os.replace(source, target / name)
                moved.append(name)
        self._records.pop(state_id, None)
        self.changed = True
        where = f" (moved to {target})" if moved else ""
        logger.warning(
            "State %s is unusable: %s%s. It counts as absent and will be recomputed on the "
            "next run.",
            state_id[:12],
            reason,
            where,
        )
        raise CorruptStateError(state_id, reason)

    # -- annotations and failures -------------------------------------------------------------

    def read_notes(self, state_id: str) -> dict[str, Any]:
        try:
            notes = rec.read_json(self.states_dir / rec.notes_name(state_id))
        except (FileNotFoundError, ValueError):
            return {}
        return notes if isinstance(notes, dict) else {}

    def update_notes(
        self,
        state_id: str,
        *,
        tags: list[str] | tuple[str, ...] = (),
        results: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        """Merge tags and results into a state's annotation file (read, merge, replace)."""
        with self.lock(state_id):
            notes = self.read_notes(state_id)
            known_tags = list(notes.get("tags", []))
            merged_tags = known_tags + [tag for tag in tags if tag not in known_tags]
            merged_results = {**notes.get("results", {}), **(results or {})}
            updated = {"tags": merged_tags, "results": merged_results}
            if updated != {"tags": known_tags, "results": notes.get("results", {})}:
                rec.write_json(
                    self.states_dir / rec.notes_name(state_id), updated, durable=self.durable
                )
                self.changed = True
        return updated

    def write_failure(self, state_id: str, failure: dict[str, Any]) -> None:
        self.states_dir.mkdir(parents=True, exist_ok=True)
        rec.write_json(self.states_dir / rec.failure_name(state_id), failure, durable=self.durable)
        self.changed = True

    def clear_failure(self, state_id: str) -> None:
        if _unlink(self.states_dir / rec.failure_name(state_id)):
            self.changed = True

    # -- recorded results --------------------------------------------------------------------

    def result_entry(self, state_id: str, name: str, value: Any) -> dict[str, Any]:
        """How a Function's result is recorded: inline if plain JSON, else a side payload."""
        if _is_plain_json(value):
            return {"value": value}
        data, refs, _ = dumps_payload(
            value, self.blobs, what=f"The result of Function `{name}`", label="result"
        )
        digest = hashlib.sha256(data).hexdigest()
        path = self.states_dir / rec.result_name(state_id, name, digest)
        publish(write_temp(path, [data], durable=self.durable), path, replace=False)
        return {
            "file": path.name,
            "sha256": digest,
            "size": len(data),
            "blobs": refs,
            "type": f"{type(value).__module__}.{type(value).__qualname__}",
            "repr": _short_repr(value),
        }

    def load_result(self, entry: dict[str, Any]) -> Any:
        """The value of a recorded result (side payloads verified before unpickling)."""
        if "value" in entry:
            return entry["value"]
        path = self.states_dir / entry["file"]
        with open(path, "rb") as handle:
            data = handle.read()
        if hashlib.sha256(data).hexdigest() != entry["sha256"]:
            raise CorruptStateError(
                path.name[: rec.ID_LENGTH], f"result file {path.name} is corrupt"
            )
        return loads_payload(data, self.blobs)

    def results_view(self, state_id: str, notes: dict[str, Any]) -> Results:
        return Results(self, notes.get("results", {}))

    def lock(self, state_id: str) -> contextlib.AbstractContextManager[Any]:
        """The inter-process lock of a state.

        A no-op where file locks cannot be trusted (network filesystems; warned once).
        """
        return state_lock(self.directory / "locks", state_id, enabled=self._locks_trusted())

    def experiment_lock(self) -> contextlib.AbstractContextManager[Any]:
        """The lock around read-modify-write of experiment.json."""
        return experiment_lock(self.directory / "locks", enabled=self._locks_trusted())

    def _locks_trusted(self) -> bool:
        if self._locking is None:
            self._locking = locks_trustworthy(self.directory)
        return self._locking

    def has_record(self, state_id: str) -> bool:
        """Whether a record exists now (another process may have just written it)."""
        return os.path.exists(self.states_dir / rec.record_name(state_id))

    # -- bulk reads for restore ----------------------------------------------------------------

    def slim_entries(self) -> dict[str, SlimEntry]:
        """Every state's record, annotations and failure, helped by the index snapshot.

        Reads ``index.json`` once, then only the records the index lacks and the annotation
        and failure files that changed since it was written. Rewrites the index when it was
        stale (best effort: a read-only folder keeps working without it).
        """
        listing = self.scan()
        index = self._read_index()
        stale = index is None
        index = index or {"records": {}, "notes": {}, "failures": {}}
        entries: dict[str, SlimEntry] = {}
        indexed_records = index["records"]
        for state_id in listing.records:
            record = indexed_records.get(state_id) or self._records.get(state_id)
            if record is None:
                stale = True
                record = self.read_record(state_id)
                if record is None:
                    continue
            entry = entries[state_id] = SlimEntry(state_id, record)
            info = record.get("payload") or {}
            entry.has_payload = listing.has_payload(state_id, info.get("file"))
        stale |= len(indexed_records) != len(entries)
        new_index: dict[str, Any] = {"format": rec.FORMAT_VERSION, "records": {}, "notes": {}}
        new_index["failures"] = {}
        for kind, ids, name_of in (
            ("notes", listing.notes, rec.notes_name),
            ("failures", listing.failures, rec.failure_name),
        ):
            known = index.get(kind, {})
            for state_id in ids:
                path = self.states_dir / name_of(state_id)
                try:
                    stat = os.stat(path)
                except FileNotFoundError:
                    continue
                stamp = [stat.st_ino, stat.st_size, stat.st_mtime_ns]
                cached = known.get(state_id)
                if cached is not None and cached["stamp"] == stamp:
                    document = cached["doc"]
                else:
                    stale = True
                    try:
                        document = rec.read_json(path)
                    except (FileNotFoundError, ValueError):
                        continue
                new_index[kind][state_id] = {"stamp": stamp, "doc": document}
                entry = entries.get(state_id) or entries.setdefault(state_id, SlimEntry(state_id))
                if kind == "notes":
                    entry.notes = document
                else:
                    entry.failure = document
            stale |= len(known) != len(new_index[kind])
        if stale:
            new_index["records"] = {
                state_id: entry.record for state_id, entry in entries.items() if entry.record
            }
            self._write_index(new_index)
        return entries

    def _read_index(self) -> dict[str, Any] | None:
        try:
            index = rec.read_json(self.index_path)
        except (FileNotFoundError, ValueError, OSError):
            return None
        if not isinstance(index, dict) or index.get("format") != rec.FORMAT_VERSION:
            return None
        return index

    def _write_index(self, index: dict[str, Any]) -> None:
        if not self.directory.is_dir():
            return
        try:
            rec.write_json(self.index_path, index, durable=False)
        except OSError as error:
            logger.debug("index.json not written: %s", error)

    @contextlib.contextmanager
    def batch(self) -> Iterator[None]:
        """Group writes (a run); refresh the index once at the end if anything changed."""
        self.changed = False
        try:
            yield
        finally:
            if self.changed and self.directory.is_dir():
                self.slim_entries()


class Results(Mapping[str, Any]):
    """A state's recorded Function results, by name; non-JSON values load on first access.

    Results whose Function failed are left out; :meth:`entry` shows the raw record of any.
    """

    def __init__(self, store: DirectoryStore | None, entries: dict[str, Any]) -> None:
        self._store = store
        self._entries = {k: v for k, v in entries.items() if "error" not in v}
        self._errors = {k: v for k, v in entries.items() if "error" in v}
        self._values: dict[str, Any] = {}

    def __getitem__(self, name: str) -> Any:
        if name not in self._values:
            entry = self._entries[name]
            if "value" in entry:
                return entry["value"]
            if self._store is None:
                raise KeyError(name)
            self._values[name] = self._store.load_result(entry)
        return self._values[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._entries)

    def __len__(self) -> int:
        return len(self._entries)

    def entry(self, name: str) -> dict[str, Any]:
        """The stored record of a result: value or file, code identity, seconds, error."""
        return {**self._errors, **self._entries}[name]

    @property
    def errors(self) -> dict[str, Any]:
        return {name: entry["error"] for name, entry in self._errors.items()}

    def summary(self, name: str) -> Any:
        """The value if plain JSON, else its short repr (for tables; loads nothing)."""
        entry = self._entries[name]
        return entry["value"] if "value" in entry else entry.get("repr")

    def __repr__(self) -> str:
        inner = ", ".join(f"{name!r}: {self.summary(name)!r}" for name in self._entries)
        return "{" + inner + "}"


def _is_plain_json(value: Any, depth: int = 0) -> bool:
    if depth > 50:
        return False
    if value is None or (isinstance(value, bool | int | str) and type(value) in (bool, int, str)):
        return True
    if type(value) is float:
        return math.isfinite(value)
    if type(value) is list:
        return all(_is_plain_json(item, depth + 1) for item in value)
    if type(value) is dict:
        return all(
            type(key) is str and _is_plain_json(item, depth + 1) for key, item in value.items()
        )
    return False


def _short_repr(value: Any) -> str:
    try:
        text = repr(value)
    except Exception:
        text = f"<{type(value).__name__}>"
    return text if len(text) <= 120 else text[:117] + "..."


def _unlink(path: Path) -> bool:
    try:
        os.unlink(path)
        return True
    except FileNotFoundError:
        return False
