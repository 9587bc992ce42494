"""The directory store: an experiment kept in one folder (DESIGN.md section 4).

    <directory>/experiment.json
    <directory>/states/...        records, payloads, notes, failures (see ``records.py``)
    <directory>/blobs/..          content-addressed buffers (see ``blobs.py``)
    <directory>/quarantine/       files that failed their checksum, kept as evidence
    <directory>/index.json        snapshot of the slim records, for fast restore (``index.py``)
    <directory>/locks/            per-state and experiment locks (``locks.py``)

Constructing a store touches no disk.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, NoReturn

from ..errors import CorruptStateError, ExperimentDefinitionError, StoreError
from ..record import (
    AuditNote,
    ExperimentMeta,
    InvalidRecordError,
    Notes,
    PayloadInfo,
    ResultEntry,
    StateRecord,
)
from . import records as rec
from .base import SlimEntry, Survey
from .blobs import DEFAULT_THRESHOLD, BlobError, Blobs
from .errors import os_errors
from .files import fsync_dir, hash_file, publish, write_temp
from .index import read_slim_entries
from .locks import experiment_lock, locks_trustworthy, state_lock
from .payload import dumps_payload, dumps_state, loads_payload
from .results import is_plain_json, short_repr

__all__ = ["DURABILITY", "DirectoryStore"]

logger = logging.getLogger("dagger")

#: The durability settings a directory store takes.
DURABILITY = ("safe", "fast")


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

    Raises:
        ExperimentDefinitionError: ``durability`` is not one of ``"safe"``, ``"fast"``.
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
            raise ExperimentDefinitionError(
                f"durability={durability!r} is not one of {DURABILITY}: use 'safe' (fsync, "
                "the default) or 'fast' (no fsync, for scratch experiments).",
                value=durability,
            )
        self.directory = Path(directory)
        self.location = str(self.directory)
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
        self._records: dict[str, StateRecord] = {}
        self._locking: bool | None = None
        self.changed = False

    def __repr__(self) -> str:
        return f"DirectoryStore({str(self.directory)!r}, durability={self.durability!r})"

    def worker_spec(self) -> dict[str, Any]:
        return {
            "kind": "directory",
            "directory": str(self.directory),
            "durability": self.durability,
            "blob_threshold": self.blobs.threshold,
        }

    # -- experiment.json ---------------------------------------------------------------------

    def exists(self) -> bool:
        return self.meta_path.exists()

    def read_meta(self) -> ExperimentMeta:
        return rec.read_experiment(self.directory)

    def prepare(self, meta: ExperimentMeta) -> ExperimentMeta:
        """Create the folders and write or extend experiment.json before a run.

        Args:
            meta: This run's description; its ``roots`` are added to the stored list.

        Returns:
            The experiment.json now on disk.

        Raises:
            StoreError: The folder is a file, or cannot be written.
        """
        if self.directory.exists() and not self.directory.is_dir():
            raise StoreError(
                f"`{self.directory}` is a file, not a folder; pass a folder for the experiment.",
                directory=str(self.directory),
            )
        with os_errors("create the experiment folder", self.directory):
            self.directory.mkdir(parents=True, exist_ok=True)
            with self.experiment_lock():  # concurrent runs must not drop each other's roots
                if self.exists():
                    stored = self.read_meta()
                    new_roots = [root for root in meta.roots if root not in stored.roots]
                    if not new_roots:
                        return stored
                    merged = stored.with_roots([*stored.roots, *new_roots], meta.created)
                else:
                    merged = meta
                for folder in (self.states_dir, self.blobs_dir):
                    folder.mkdir(parents=True, exist_ok=True)
                rec.write_json(self.meta_path, merged.to_json(), durable=self.durable)
        return merged

    # -- records -----------------------------------------------------------------------------

    def survey(self) -> Survey:
        listing = rec.scan(self.states_dir)
        stored = {state_id for state_id in listing.records if listing.has_payload(state_id)}
        return Survey(
            stored=stored,
            notes=set(listing.notes),
            failures=set(listing.failures),
            broken=listing.records - stored,
        )

    def read_record(self, state_id: str) -> StateRecord | None:
        cached = self._records.get(state_id)
        if cached is not None:
            return cached
        try:
            document = rec.read_json(self.states_dir / rec.record_name(state_id))
            record = StateRecord.from_json(document, expected_id=state_id)
        except FileNotFoundError:
            return None
        except InvalidRecordError:
            return None
        self._records[state_id] = record
        return record

    def _record_problem(self, state_id: str) -> str | None:
        """Why a record that exists cannot be read (None if it does not exist or reads fine)."""
        try:
            document = rec.read_json(self.states_dir / rec.record_name(state_id))
            StateRecord.from_json(document, expected_id=state_id)
        except FileNotFoundError:
            return None
        except InvalidRecordError as error:
            return f"is damaged ({error})"
        return None

    def has_record(self, state_id: str) -> bool:
        return os.path.exists(self.states_dir / rec.record_name(state_id))

    # -- saving ------------------------------------------------------------------------------

    def save(self, state_id: str, state: Any, record: StateRecord) -> StateRecord:
        """Write a state's payload, then its record (the commit marker).

        Raises:
            SerializationError: The state cannot be pickled (nothing is left on disk).
            StoreError: The folder cannot be written (no space, no permission).
        """
        with os_errors(f"store state {state_id[:12]}", self.states_dir):
            payload_tmp, payload, blob_refs = self._write_payload(state_id, state)
            payload_path = self.states_dir / payload.file
            # The payload is named by its content digest, so replacing one with the same name
            # replaces identical bytes: a plain rename is safe.
            publish(payload_tmp, payload_path, replace=True)
            record = record.with_payload(payload, blob_refs)
            record_path = self.states_dir / rec.record_name(state_id)
            # Interrupted here, the payload stays without a record: invisible to readers
            # (only a record commits a state) and swept by gc. Deleting it could delete
            # another writer's identical, committed payload.
            record_tmp = write_temp(
                record_path, [rec.dumps(record.to_json())], durable=self.durable
            )
            won = publish(record_tmp, record_path, replace=False)
            if self.durable:
                fsync_dir(self.states_dir)
        self.changed = True
        if not won:
            winner = self.read_record(state_id) or record
            # A payload no record points at is this writer's own; one with the winner's name
            # holds the winner's bytes and stays.
            if winner.payload is None or winner.payload.file != payload.file:
                _unlink(payload_path)
            return winner
        self._records[state_id] = record
        return record

    def _write_payload(self, state_id: str, state: Any) -> tuple[Path, PayloadInfo, dict[str, int]]:
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
        return tmp, PayloadInfo(name, digest, size, kind), refs

    # -- loading -----------------------------------------------------------------------------

    def load(self, state_id: str, state_class: Any = None, map_location: Any = None) -> Any:
        """Read, verify and unpickle a state's payload.

        Raises:
            CorruptStateError: The record or payload is missing, or the payload does not match
                its checksum; the bad files have been moved to ``quarantine/``.
        """
        record = self.read_record(state_id)
        if record is None:
            problem = self._record_problem(state_id)
            if problem is not None:  # there, but damaged: move it aside
                self.quarantine(state_id, f"its record {problem}")
            raise CorruptStateError(
                f"State {state_id[:12]} is not in {self.location} (its record is missing).",
                state_id=state_id,
                reason="its record is missing",
            )
        info = record.payload
        if info is None:
            self.quarantine(state_id, "its record names no payload")
        path = self.states_dir / info.file
        if info.format == "save_hook":
            load_hook = getattr(state_class, "load_hook", None)
            self._verify_file(state_id, path, info)
            if not callable(load_hook):
                self.quarantine(
                    state_id, "it was saved by a save_hook and its class has no load_hook"
                )
            return load_hook(path)
        try:
            with open(path, "rb") as handle:
                data = handle.read()
        except FileNotFoundError:
            self.quarantine(state_id, "its payload file is missing")
        if len(data) != info.size or hashlib.sha256(data).hexdigest() != info.sha256:
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

    def _verify_file(self, state_id: str, path: Path, info: PayloadInfo) -> None:
        try:
            digest, size = hash_file(path)
        except FileNotFoundError:
            self.quarantine(state_id, "its payload file is missing")
        if size != info.size or digest != info.sha256:
            self.quarantine(state_id, "its payload does not match the checksum in its record")

    def quarantine(self, state_id: str, reason: str) -> NoReturn:
        """Move a state's record and payloads aside, warn once, and raise CorruptStateError.

        The state then counts as absent: the next run recomputes it.
        """
        target = self.quarantine_dir / f"{state_id}-{time.strftime('%Y%m%dT%H%M%S')}"
        moved = []
        listing = rec.scan(self.states_dir)
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
        where = f" (moved to {target.relative_to(self.directory)})" if moved else ""
        logger.warning(
            "State %s is unusable: %s%s. It counts as absent and will be recomputed on the "
            "next run.",
            state_id[:12],
            reason,
            where,
        )
        raise CorruptStateError(
            f"State {state_id[:12]} is unusable: {reason}{where}. It counts as absent and will "
            "be recomputed on the next run.",
            state_id=state_id,
            reason=reason,
        )

    # -- notes and failures --------------------------------------------------------------------

    def read_notes(self, state_id: str) -> Notes:
        try:
            return Notes.from_json(rec.read_json(self.states_dir / rec.notes_name(state_id)))
        except (FileNotFoundError, InvalidRecordError):
            return Notes()

    def update_notes(
        self,
        state_id: str,
        *,
        tags: list[str] | tuple[str, ...] = (),
        results: dict[str, ResultEntry] | None = None,
        audit: AuditNote | None = None,
    ) -> Notes:
        """Merge tags, results and an audit into a state's notes file (read, merge, replace)."""
        with self.lock(state_id), os_errors(f"annotate state {state_id[:12]}", self.states_dir):
            notes = self.read_notes(state_id)
            updated = notes.merged(tags, results or {}, audit)
            if updated != notes:
                rec.write_json(
                    self.states_dir / rec.notes_name(state_id),
                    updated.to_json(),
                    durable=self.durable,
                )
                self.changed = True
        return updated

    def write_failure(self, record: StateRecord) -> None:
        with os_errors(f"record the failure of state {record.id[:12]}", self.states_dir):
            self.states_dir.mkdir(parents=True, exist_ok=True)
            rec.write_json(
                self.states_dir / rec.failure_name(record.id),
                record.to_json(),
                durable=self.durable,
            )
        self.changed = True

    def clear_failure(self, state_id: str) -> None:
        if _unlink(self.states_dir / rec.failure_name(state_id)):
            self.changed = True

    # -- recorded results --------------------------------------------------------------------

    def store_result(self, state_id: str, name: str, value: Any, code: str) -> ResultEntry:
        """How a Function's result is recorded: inline if plain JSON, else a side payload.

        Raises:
            SerializationError: The value cannot be pickled.
        """
        if is_plain_json(value):
            return ResultEntry(code=code, value=value)
        data, refs, _ = dumps_payload(
            value, self.blobs, what=f"The result of Function `{name}`", label="result"
        )
        digest = hashlib.sha256(data).hexdigest()
        path = self.states_dir / rec.result_name(state_id, name, digest)
        with os_errors(f"record the result `{name}` of state {state_id[:12]}", path):
            publish(write_temp(path, [data], durable=self.durable), path, replace=False)
        return ResultEntry(
            code=code,
            file=path.name,
            sha256=digest,
            size=len(data),
            blobs=refs,
            type=f"{type(value).__module__}.{type(value).__qualname__}",
            repr=short_repr(value),
        )

    def load_result(self, entry: ResultEntry) -> Any:
        """The value of a recorded result (side payloads verified before unpickling).

        Raises:
            CorruptStateError: The side payload is missing or does not match its checksum.
        """
        if entry.inline:
            return entry.value
        assert entry.file is not None
        path = self.states_dir / entry.file
        state_id = entry.file[: rec.ID_LENGTH]
        try:
            with open(path, "rb") as handle:
                data = handle.read()
        except FileNotFoundError:
            raise CorruptStateError(
                f"The result file states/{entry.file} is missing; run the experiment again "
                "to recompute it.",
                state_id=state_id,
                reason="result file missing",
            ) from None
        if hashlib.sha256(data).hexdigest() != entry.sha256:
            raise CorruptStateError(
                f"The result file states/{entry.file} does not match its checksum; run the "
                "experiment again to recompute it.",
                state_id=state_id,
                reason="result file corrupt",
            )
        try:
            return loads_payload(data, self.blobs)
        except BlobError as error:
            raise CorruptStateError(
                f"A blob of the result file states/{entry.file} {error.reason}.",
                state_id=state_id,
                reason=error.reason,
            ) from None

    # -- locks ---------------------------------------------------------------------------------

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

    # -- bulk reads for restore ----------------------------------------------------------------

    def slim_entries(self) -> dict[str, SlimEntry]:
        """Every state's record, notes and failure, helped by the index snapshot."""
        return read_slim_entries(self)

    @contextlib.contextmanager
    def batch(self) -> Iterator[None]:
        """Group writes (a run); refresh the index once at the end if anything changed."""
        self.changed = False
        try:
            yield
        finally:
            if self.changed and self.directory.is_dir():
                self.slim_entries()


def _unlink(path: Path) -> bool:
    try:
        os.unlink(path)
        return True
    except FileNotFoundError:
        return False
