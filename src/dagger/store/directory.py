"""The directory store: an experiment kept in one folder (format 2; see ``records.py``).

Everything known about a state (its record, a failure, its notes, a marker saying it was
removed, pruned or quarantined) is an entry appended to a log (``log.py``); small payloads and
small Function results are kept inside their entries, larger ones in files named by their
content. Each process keeps a catalog of what the logs say (``catalog.py``) and brings it up
to date by reading only what the logs gained (:meth:`DirectoryStore.refresh`); an index
(``index.py``) lets a new process start from a snapshot instead of every log.

Rules that keep concurrent processes from harming each other (issue 11):

* a state is *stored* when its record entry is in a log with a valid checksum; a directory
  listing is never evidence that a state is there, or that it is not;
* a state is judged missing or damaged only from direct evidence (a stat or a read of its own
  payload, blobs and entry), and a decision that changes the store (quarantining it) is taken
  under the state's lock, after a refresh, against the state's *latest* record: a process never
  acts on a stale copy of another process's record;
* entries about one state are written under its lock after a refresh, numbered above
  everything seen (``seq``), so they are ordered without clocks.

Constructing a store touches no disk.
"""

from __future__ import annotations

import atexit
import contextlib
import dataclasses
import hashlib
import logging
import os
import time
import weakref
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any, NoReturn

from ..errors import (
    CorruptStateError,
    ExperimentDefinitionError,
    NotAnExperimentError,
    StateNotFoundError,
    StoreError,
)
from ..record import (
    FORMAT_VERSION,
    IDENTITY_VERSION,
    INLINE,
    AuditNote,
    ErrorInfo,
    ExperimentMeta,
    InvalidRecordError,
    Marker,
    Notes,
    PayloadInfo,
    ResultEntry,
    StateRecord,
    Status,
    dumps,
    loads,
    marker_from_wire,
    marker_to_wire,
    notes_from_wire,
    notes_to_wire,
    record_from_wire,
    record_to_wire,
    shared_key,
    wire_refs,
)
from . import records as rec
from .blobs import DEFAULT_THRESHOLD, BlobError, Blobs
from .catalog import NO_LOG, PAYLOAD_FILE, PAYLOAD_INLINE, Catalog
from .errors import os_errors, relative
from .files import fsync_dir, hash_file, publish, write_temp
from .frames import (
    HEADER_SIZE,
    Damage,
    Frame,
    Kind,
    encode_frame,
    frame_checksum,
    parse_header,
    scan,
)
from .index import INDEX_NAME, read_index, write_index
from .legacy import Legacy, read_legacy, remove_old_files
from .locks import experiment_lock, locks_trustworthy, state_lock
from .log import LogWriter, log_names, read_from, read_range
from .payload import dumps_payload, dumps_state, loads_payload
from .results import is_plain_json, short_repr
from .table import SlimTable

__all__ = ["DURABILITY", "INLINE_LIMIT", "DirectoryStore"]

logger = logging.getLogger("dagger")

#: The durability settings a directory store takes.
DURABILITY = ("safe", "fast")

#: Payloads and Function results up to this many bytes are kept inside their log entry; larger
#: ones get a file of their own. A state whose tensors went to blobs pickles to a few KiB.
INLINE_LIMIT = 16 * 1024

#: How many records a store keeps in memory once read (the most recent).
RECORDS_CACHED = 4096

#: The index is rewritten once the entries read or written past it reach this fraction of the
#: states it holds (a restore then reads that many entries from the logs' tails, besides the
#: index); small stores rewrite it whenever it lags.
INDEX_STALE_FRACTION = 0.01
INDEX_SMALL = 10_000
_INDEX_MISSING = 1 << 62

_WRITERS: weakref.WeakSet[LogWriter] = weakref.WeakSet()


@atexit.register
def _sync_writers_at_exit() -> None:
    # A process that ends without closing its run (a worker, an interrupted script) still
    # makes its entries durable: group commit never holds back more than this.
    for writer in list(_WRITERS):
        with contextlib.suppress(Exception):
            writer.close()


class DirectoryStore:
    """A folder holding one experiment.

    Args:
        directory: The experiment folder (created by :meth:`prepare`, not here).
        durability: ``"safe"`` (default): payloads and blobs are fsynced before the entry that
            refers to them, and entries are fsynced in groups (see :mod:`dagger.store.log`),
            so a power loss loses at most the last fraction of a second of computation and
            never leaves an entry pointing at missing bytes. ``"fast"`` skips the fsyncs for
            scratch experiments: writes stay atomic (a crash of the process loses nothing
            already written), only a machine crash may lose recent states.
        blob_threshold: Buffers (tensor storages, arrays, bytes) of at least this many bytes
            are stored once, as content-addressed blobs, and shared between states.
        use_mmap: Load blobs as private copy-on-write memory maps (default) rather than
            reading them into fresh memory.
        inline_limit: Payloads and results up to this size stay inside their log entry.

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
        inline_limit: int = INLINE_LIMIT,
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
        self.inline_limit = inline_limit
        self.log_dir = self.directory / "log"
        self.payloads_dir = self.directory / "payloads"
        self.results_dir = self.directory / "results"
        self.blobs_dir = self.directory / "blobs"
        self.quarantine_dir = self.directory / "quarantine"
        self.locks_dir = self.directory / "locks"
        self.meta_path = self.directory / "experiment.json"
        self.index_path = self.directory / INDEX_NAME
        self.blobs = Blobs(
            self.blobs_dir, durable=self.durable, threshold=blob_threshold, use_mmap=use_mmap
        )
        self.writer = LogWriter(self.log_dir, durable=self.durable)
        self.catalog: Catalog | None = None
        self.legacy: Legacy | None = None
        self._tails: dict[str, tuple[int, str]] = {}
        self._parts_written: set[str] = set()
        self._values_written: set[str] = set()
        self._records: dict[str, tuple[int, StateRecord]] = {}
        self._warned: set[tuple[str, int]] = set()
        self._meta: ExperimentMeta | None = None
        self._meta_warned = False
        self._meta_damaged: str | None = None
        self._locking: bool | None = None
        self._entries_since_index = 0
        self._fresh: str | None = None

    def __repr__(self) -> str:
        return f"DirectoryStore({str(self.directory)!r}, durability={self.durability!r})"

    def worker_spec(self) -> dict[str, Any]:
        return {
            "kind": "directory",
            "directory": str(self.directory),
            "durability": self.durability,
            "blob_threshold": self.blobs.threshold,
        }

    def _rel(self, path: os.PathLike[str] | str) -> str:
        return relative(path, self.directory)

    # -- experiment.json ---------------------------------------------------------------------

    def exists(self) -> bool:
        if self.meta_path.exists():
            return True
        # experiment.json lost, the states are not: the store still exists (and is rebuilt)
        return bool(log_names(self.log_dir)) or any(rec.scan(self.directory / "states").records)

    def read_meta(self) -> ExperimentMeta:
        """The experiment's description; rebuilt from the records (one warning) when
        ``experiment.json`` is missing or damaged but records exist.

        Raises:
            NotAnExperimentError: Nothing was stored here.
            FormatVersionError: A newer dagger wrote it.
        """
        try:
            meta = rec.read_experiment(self.directory)
        except rec.DamagedMetaError as damaged:
            meta = self._rebuilt_meta(f"it is damaged ({damaged.reason})")
        except NotAnExperimentError:
            if not self.exists():
                raise
            meta = self._rebuilt_meta("it is missing")
        self._meta = meta
        return meta

    def _rebuilt_meta(self, why: str) -> ExperimentMeta:
        """experiment.json's content, from the stored records (for a damaged or lost one)."""
        fmt = 2 if log_names(self.log_dir) else 1
        self._meta = ExperimentMeta(format=fmt, roots=(), state_class="")  # let refresh run
        table = self.snapshot()
        roots = [
            state_id
            for row, state_id in enumerate(table.ids)
            if table.root[row] and table.status[row] is not Status.FAILED
        ]
        first = table.record(table.row_of[roots[0]]) if roots else None
        if first is None:
            self._meta = None
            raise NotAnExperimentError(
                f"`{self.meta_path}` {why.replace('it is', 'is')}, and the folder holds no "
                "stored state to rebuild it from: this is not a dagger experiment.json. Pass "
                "the folder an Experiment was run in.",
                directory=str(self.directory),
            )
        meta = ExperimentMeta(
            format=fmt,
            roots=tuple(roots),
            state_class=first.state_class,
            experiment_arguments=dict(first.arguments or {}),
            dagger_version=first.dagger_version,
            created=first.created,
        )
        if not self._meta_warned:
            self._meta_warned = True
            logger.warning(
                "experiment.json in %s %s; it was rebuilt from the %d stored states (state "
                "class %s, %d root(s)). The next run writes the rebuilt file.",
                self.directory,
                why,
                len(table),
                meta.state_class,
                len(roots),
            )
        self._meta_damaged = why
        return meta

    def prepare(self, meta: ExperimentMeta) -> ExperimentMeta:
        """Create the folders and write or extend experiment.json before a run; convert a
        format-1 store, and rewrite a damaged experiment.json.

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
        with os_errors("prepare the experiment folder", self.directory, root=self.directory):
            self.directory.mkdir(parents=True, exist_ok=True)
            with self.experiment_lock():  # concurrent runs must not drop each other's roots
                stored: ExperimentMeta | None = None
                converted_from: int | None = None
                rewrite = False
                if self.exists():
                    self._meta_damaged = None
                    stored = self.read_meta()
                    if self._meta_damaged is not None:
                        self._set_aside(self.meta_path)
                        rewrite = True
                    if stored.format < FORMAT_VERSION:
                        self._convert()
                        converted_from = stored.format
                        stored = dataclasses.replace(stored, format=FORMAT_VERSION)
                        rewrite = True
                if stored is None:
                    merged = meta
                    rewrite = True
                else:
                    new_roots = [root for root in meta.roots if root not in stored.roots]
                    merged = stored
                    if new_roots:
                        merged = stored.with_roots([*stored.roots, *new_roots], meta.created)
                        rewrite = True
                    if not set(meta.identities) <= set(merged.identities):
                        merged = merged.with_identities([*merged.identities, *meta.identities])
                        rewrite = True
                if rewrite:
                    rec.write_experiment(self.directory, merged, durable=self.durable)
                    self._meta = merged
                    self._meta_damaged = None
                    if converted_from is not None:
                        remove_old_files(self.directory)

        self._meta = merged
        return merged

    def forget_identities(self, schemes: Iterable[int]) -> ExperimentMeta:
        """Drop identity schemes from experiment.json (the caller checked that no state of
        them is left, after a removal), so that opening the store stops warning about them.
        This dagger's own scheme is never dropped."""
        dropped = set(schemes) - {IDENTITY_VERSION}
        with (
            os_errors("update experiment.json", self.directory, root=self.directory),
            self.experiment_lock(),
        ):
            stored = self.read_meta()
            left = [scheme for scheme in stored.identities if scheme not in dropped]
            if tuple(left) == stored.identities:
                return stored
            updated = stored.with_identities(left or [IDENTITY_VERSION])
            rec.write_experiment(self.directory, updated, durable=self.durable)
            self._meta = updated
        return updated

    def _set_aside(self, path: Path) -> None:
        """Move a damaged file into ``quarantine/`` (evidence), keeping its relative path."""
        with contextlib.suppress(FileNotFoundError):
            target = self.quarantine_dir / f"{self._rel(path)}.{time.strftime('%Y%m%dT%H%M%S')}"
            target.parent.mkdir(parents=True, exist_ok=True)
            os.replace(path, target)

    def _convert(self) -> None:
        """Write a format-1 store's records, failures and notes as entries of one log (the
        caller holds the experiment lock)."""
        legacy = read_legacy(self.directory)
        for path, reason in legacy.damaged:
            logger.warning("%s in %s is %s; it is not converted.", path, self.directory, reason)
        chunks: list[bytes] = []
        for record in sorted(
            [*legacy.records.values(), *legacy.failures.values()], key=lambda r: r.seq
        ):
            document, parts = record_to_wire(record)
            chunks.extend(self._part_frames(parts))
            kind = Kind.FAILURE if record.failed else Kind.RECORD
            chunks.append(encode_frame(kind, dumps(document)))
        for state_id, notes in legacy.notes.items():
            document = notes_to_wire(state_id, legacy.seqs[state_id], notes)
            chunks.append(encode_frame(Kind.NOTES, dumps(document)))
        if chunks:
            self.writer.open()
            _WRITERS.add(self.writer)
            self.writer.append(b"".join(chunks))
            self.writer.sync()
        self.legacy = None
        self._meta = None
        self.catalog = None
        self._parts_written.clear()

    # -- reading the logs ----------------------------------------------------------------------

    def format(self) -> int:
        """The store's format version (2 for a new folder)."""
        if self._meta is None:
            try:
                self.read_meta()
            except NotAnExperimentError:
                return FORMAT_VERSION
        assert self._meta is not None
        return self._meta.format

    def refresh(self) -> Catalog:
        """Bring the catalog up to date with the logs (reading only what they gained).

        Returns:
            The catalog.
        """
        if self.format() < FORMAT_VERSION:
            if self.legacy is None:
                self.legacy = read_legacy(self.directory)
                for path, reason in self.legacy.damaged:
                    self._warn_once(
                        path,
                        0,
                        f"{path} is {reason}; the state it describes counts as absent and a "
                        "run recomputes it",
                    )
            self.catalog = self.legacy.catalog
            return self.catalog
        names = log_names(self.log_dir)
        catalog = self.catalog
        if catalog is not None and any(name not in names for name in catalog.positions):
            catalog = None  # a log was compacted away: its entries now live elsewhere
        if catalog is None:
            self._records.clear()
            found = read_index(self.directory, self.log_dir, self._read_again)
            if found is not None:
                catalog, self._tails = found
            else:
                catalog, self._tails = Catalog(), {}
                self._entries_since_index = _INDEX_MISSING  # write one when we can
            self.catalog = catalog
        self.read_logs(catalog, names, self._tails)
        return catalog

    def _read_again(self, seed: Catalog) -> Catalog:
        """The catalog the logs hold, numbered as ``seed`` (a catalog from the index, one of
        whose sections does not decode although its checksum matched; see
        :meth:`Catalog.from_index`): read from every log's start, the index dropped."""
        self._warn_once(
            INDEX_NAME,
            0,
            f"{INDEX_NAME} holds a section that does not decode although its checksum matches; "
            "it was ignored (the logs were read instead) and is written again",
        )
        catalog = seed.blank_like()
        tails: dict[str, tuple[int, str]] = {}
        self.read_logs(catalog, log_names(self.log_dir), tails)
        self._tails.clear()  # (in place: a read of the logs may be going on with it)
        self._tails.update(tails)
        with contextlib.suppress(OSError):
            os.unlink(self.index_path)
        self._entries_since_index = _INDEX_MISSING
        return catalog

    def rebuild(self) -> tuple[Catalog, dict[str, tuple[int, str]]]:
        """A catalog read from every log from its start (no index), and the logs' last
        frames; this store's own catalog is left as it is."""
        catalog: Catalog = Catalog()
        tails: dict[str, tuple[int, str]] = {}
        if self.format() < FORMAT_VERSION:
            return read_legacy(self.directory).catalog, tails
        self.read_logs(catalog, log_names(self.log_dir), tails, warn=False)
        return catalog, tails

    def read_logs(
        self,
        catalog: Catalog,
        names: list[str],
        tails: dict[str, tuple[int, str]],
        *,
        warn: bool = True,
    ) -> None:
        """Read what the logs ``names`` gained past ``catalog.positions`` into ``catalog``
        (and the last frame of each into ``tails``); warn once about damage if ``warn``."""
        gained: list[tuple[str, list[Frame | Damage]]] = []
        for name in names:
            consumed = catalog.positions.get(name, 0)
            path = self.log_dir / name
            try:
                size = os.stat(path).st_size
            except FileNotFoundError:
                continue  # compacted away between the listing and now; seen next time
            if size <= consumed:
                catalog.positions.setdefault(name, consumed)
                continue
            try:
                data = read_from(path, consumed)
            except FileNotFoundError:
                continue
            items, read = scan(data, consumed)
            catalog.positions[name] = consumed + read
            if items:
                gained.append((name, items))
        if gained:
            self._apply(catalog, gained, tails, warn=warn)

    def _apply(
        self,
        catalog: Catalog,
        gained: list[tuple[str, list[Frame | Damage]]],
        tails: dict[str, tuple[int, str]],
        *,
        warn: bool = True,
    ) -> None:
        # Shared parts and values first: a record may refer to a part another log holds.
        for name, items in gained:
            for item in items:
                if isinstance(item, Frame) and item.kind in (Kind.PART, Kind.VALUE):
                    self._apply_frame(catalog, name, item, warn)
        for name, items in gained:
            last: Frame | None = None
            for item in items:
                if isinstance(item, Damage):
                    catalog.damage.append((name, item.offset, item.length, item.reason))
                    if warn:
                        self._warn_once(
                            f"log/{name}",
                            item.offset,
                            f"log/{name} has a damaged entry at byte {item.offset} "
                            f"({item.reason}, {item.length} bytes); what it held counts as "
                            "absent and a run recomputes it",
                        )
                    continue
                last = item
                if item.kind not in (Kind.PART, Kind.VALUE):
                    self._apply_frame(catalog, name, item, warn)
            if last is not None:
                tails[name] = (last.offset, last.checksum.hex())
            self._entries_since_index += len(items)

    def _apply_frame(self, catalog: Catalog, log: str, frame: Frame, warn: bool = True) -> None:
        try:
            document = loads(frame.document)
            kind = frame.kind
            if kind is Kind.RECORD or kind is Kind.FAILURE:
                record = record_from_wire(document, catalog.shared)
                if (record.status is Status.FAILED) != (kind is Kind.FAILURE):
                    raise InvalidRecordError("record status does not match its entry")
                payload = record.payload
                if payload is not None and payload.inline and payload.size != frame.raw_size:
                    raise InvalidRecordError("inline payload size does not match")
                refs = wire_refs(document)
                if kind is Kind.RECORD:
                    catalog.apply_record(record, refs, log, frame.offset)
                else:
                    catalog.apply_failure(record, refs, log, frame.offset)
            elif kind is Kind.NOTES:
                state_id, seq, notes = notes_from_wire(document)
                catalog.apply_notes(state_id, seq, notes, log, frame.offset)
            elif kind is Kind.MARKER:
                catalog.apply_marker(marker_from_wire(document))
            elif kind is Kind.PART:
                key, part = document["key"], document["part"]
                if not isinstance(key, str) or shared_key(part) != key:
                    raise InvalidRecordError("shared part does not match its key")
                catalog.add_part(key, part)
            elif kind is Kind.VALUE:
                digest = document["sha256"]
                if not isinstance(digest, str):
                    raise InvalidRecordError("value entry has no sha256")
                catalog.add_value(digest, log, frame.offset, frame.raw_size)
        except (InvalidRecordError, KeyError, TypeError, AttributeError) as error:
            catalog.damage.append((log, frame.offset, frame.length, f"invalid entry ({error})"))
            if warn:
                self._warn_once(
                    f"log/{log}",
                    frame.offset,
                    f"log/{log} has an invalid entry at byte {frame.offset} ({error}); what it "
                    "held counts as absent and a run recomputes it",
                )

    def _damaged_since_index(self, log: str, offset: int) -> None:
        """An entry the catalog took from the index (or read earlier) no longer checks: note
        it, and drop the index so that the next reader reads every log again and sees it (a
        run then sets the damaged log aside)."""
        catalog = self.catalog
        if catalog is not None and not any(
            item[0] == log and item[1] == offset for item in catalog.damage
        ):
            catalog.damage.append((log, offset, 0, "checksum mismatch (found on reading)"))
            self._warn_once(
                f"log/{log}",
                offset,
                f"log/{log} has a damaged entry at byte {offset} (checksum mismatch); what it "
                "held counts as absent and a run recomputes it",
            )
        with contextlib.suppress(OSError):
            os.unlink(self.index_path)
        self._entries_since_index = _INDEX_MISSING

    def _warn_once(self, path: str, offset: int, message: str) -> None:
        if (path, offset) in self._warned:
            return
        self._warned.add((path, offset))
        logger.warning("%s (in %s).", message, self.directory)

    def _frame(self, log_no: int, offset: int) -> tuple[dict[str, Any], bytes | None] | None:
        """``(JSON, raw bytes)`` of the frame at a location, checked: None if it is gone or its
        JSON does not check; raw bytes None if only they do not."""
        catalog = self.catalog
        if catalog is None or log_no < 0:
            return None
        path = self.log_dir / catalog.logs[log_no]
        try:
            header = parse_header(read_range(path, offset, HEADER_SIZE))
            body = b""
            if header is not None:
                body = read_range(path, offset + HEADER_SIZE, header[1])
        except FileNotFoundError:
            return None
        if (
            header is None
            or len(body) != header[1]
            or frame_checksum(body[: header[2]]) != header[3]
        ):
            self._damaged_since_index(catalog.logs[log_no], offset)
            return None
        json_length, raw_checksum = header[2], header[4]
        try:
            document = loads(body[:json_length])
        except InvalidRecordError:
            return None
        if not isinstance(document, dict):
            return None
        raw = body[json_length:]
        if frame_checksum(raw) != raw_checksum:
            return document, None
        return document, raw

    # -- reading what a state is ---------------------------------------------------------------

    def survey(self) -> Catalog:
        """What the store holds now, for a plan (the catalog, refreshed: it answers
        :class:`~dagger.store.base.Survey`'s questions without copying anything)."""
        return self.refresh()

    def snapshot(self) -> SlimTable:
        """A snapshot of every state's slim facts, in creation order (one refresh).

        When the index was missing, damaged or far behind the logs, it is rewritten (best
        effort), so that the next process starts from it.
        """
        catalog = self.refresh()
        # A snapshot reads every column: a section of the index that does not decode shows
        # now (the logs are read instead), in time for the index to be rewritten below.
        catalog.decode_all()
        if self._entries_since_index >= _INDEX_MISSING and self.writer.fd is None:
            with contextlib.suppress(Exception):
                self.save_index()
        present: Any = None
        if catalog.pfile:
            listed: set[str] = set()
            for folder in {path.rpartition("/")[0] for path in catalog.pfile.values()}:
                with contextlib.suppress(OSError):
                    names = os.listdir(self.directory / folder)
                    listed.update(f"{folder}/{name}" for name in names)
            present = listed.__contains__
        return catalog.snapshot(self, present)

    def _current(self) -> Catalog:
        return self.catalog if self.catalog is not None else self.refresh()

    def read_record(self, state_id: str) -> StateRecord | None:
        """A state's latest record (done, pruned or missing), or None (unknown, removed, or
        only a failure)."""
        catalog = self._current()
        row = catalog.row_of.get(state_id)
        if row is None or catalog.rseq[row] < 0 or catalog.status(row) is None:
            return None
        seq = catalog.rseq[row]
        cached = self._records.get(state_id)
        if cached is not None and cached[0] == seq:
            return cached[1]
        if catalog.rlog[row] == NO_LOG:
            record = self.legacy.records.get(state_id) if self.legacy is not None else None
        else:
            record = self._record_at(catalog.rlog[row], catalog.roff[row])
        if record is None:
            return None
        self._remember(state_id, record)
        return record

    def _remember(self, state_id: str, record: StateRecord) -> None:
        """Keep a record read or written (a bounded cache: a run of 100,000 states must not
        hold 100,000 records)."""
        records = self._records
        records[state_id] = (record.seq, record)
        if len(records) > RECORDS_CACHED:
            del records[next(iter(records))]  # the oldest

    def _record_at(self, log_no: int, offset: int) -> StateRecord | None:
        found = self._frame(log_no, offset)
        if found is None or self.catalog is None:
            return None
        try:
            return record_from_wire(found[0], self.catalog.shared)
        except InvalidRecordError:
            return None

    def read_failure(self, state_id: str) -> StateRecord | None:
        """The record of a state's last failure, if it is newer than its record."""
        catalog = self._current()
        row = catalog.row_of.get(state_id)
        if row is None or catalog.fseq[row] <= catalog.rseq[row]:
            return None
        if catalog.status(row) is None:
            return None
        if catalog.flog[row] == NO_LOG:
            return self.legacy.failures.get(state_id) if self.legacy is not None else None
        return self._record_at(catalog.flog[row], catalog.foff[row])

    def has_record(self, state_id: str) -> bool:
        """Whether a state is stored with its content now, as the logs say (after a refresh:
        another process may just have stored it, or removed it)."""
        catalog = self.refresh()
        self._fresh = state_id
        return catalog.committed(state_id)

    def check(self, state_ids: Iterable[str]) -> dict[str, str]:
        """Which of these stored states lack their files at the recorded sizes, and why.

        A stat per payload file and blob (each once), no reads. A state kept inside a log
        costs nothing more than one stat of that log: a log as long as it was read is whole
        (its entries' own checksums are checked when they are read). States that are not
        stored are left out.
        """
        catalog = self._current()
        problems: dict[str, str] = {}
        log_short: dict[int, int] = {}  # log -> its size, for logs shorter than read
        for number, name in enumerate(catalog.logs):
            try:
                size = os.stat(self.log_dir / name).st_size
            except OSError:
                size = -1
            if size < catalog.positions.get(name, 0):
                log_short[number] = size
        blob_ok: dict[str, str | None] = {}
        status, pkind = catalog.status, catalog.pkind
        # Only rows with something to stat: a payload file, blobs, or a record in a log that is
        # shorter than read (a tree of small states kept in the logs has none).
        candidates = set(catalog.pfile)
        if catalog.blobsets:
            candidates.update(row for row, number in enumerate(catalog.blobs) if number >= 0)
        if log_short:
            candidates.update(row for row, log in enumerate(catalog.rlog) if log in log_short)
        if not candidates:
            return problems
        requested = state_ids if isinstance(state_ids, set | frozenset) else set(state_ids)
        for row in sorted(candidates):
            state_id = catalog.ids[row]
            if state_id not in requested or status(row) is not Status.DONE:
                continue
            kind = pkind[row]
            problem = None
            if kind == PAYLOAD_FILE:
                relative_path = catalog.pfile[row]
                problem = _size_problem(
                    self.directory / relative_path, catalog.psize[row], relative_path
                )
            elif kind == PAYLOAD_INLINE and catalog.rlog[row] in log_short:
                log_no = catalog.rlog[row]
                if log_short[log_no] < catalog.roff[row] + HEADER_SIZE + catalog.psize[row]:
                    problem = f"its log log/{catalog.logs[log_no]} was truncated"
            if problem is None:
                for digest, size in catalog.blob_refs(row).items():
                    if digest not in blob_ok:
                        blob = self.blobs.path(digest)
                        blob_ok[digest] = _size_problem(blob, size, self._rel(blob))
                    problem = blob_ok[digest]
                    if problem is not None:
                        break
            if problem is not None:
                problems[state_id] = problem
        return problems

    # -- writing entries -----------------------------------------------------------------------

    def _part_frames(self, parts: dict[str, Any]) -> list[bytes]:
        return [
            encode_frame(Kind.PART, dumps({"key": key, "part": part}))
            for key, part in parts.items()
            if key not in self._parts_written
        ]

    def _append(
        self, frames: list[tuple[Kind, bytes, bytes]], parts: dict[str, Any], seconds: float = 0.0
    ) -> list[int]:
        """Append frames (after the shared parts they need) with one write and return each
        frame's offset; the caller applies them to the catalog."""
        catalog = self._current()
        encoded = self._part_frames(parts)
        part_bytes = sum(len(frame) for frame in encoded)
        bodies = [encode_frame(kind, document, raw) for kind, document, raw in frames]
        start = self.writer.append(b"".join([*encoded, *bodies]), seconds=seconds)
        name = self.writer.name
        catalog.positions[name] = self.writer.size
        self._parts_written.update(parts)
        for key, part in parts.items():
            catalog.add_part(key, part)
        offsets = []
        position = start + part_bytes
        for body in bodies:
            offsets.append(position)
            self._tails[name] = (position, body[20:36].hex())  # the JSON checksum
            position += len(body)
        self._entries_since_index += len(frames)
        return offsets

    def _next_seq(self) -> int:
        return self._current().max_seq + 1

    def open_writer(self) -> None:
        """Open this process's log, as a run's first write does (created under the experiment
        lock, so that ``gc`` never judges a starting writer dead); the store must be in this
        format (a run converts an older one first).

        Raises:
            StoreError: The store is in an older format, or its folder cannot be written.
        """
        if self.writer.fd is not None and self.writer.pid == os.getpid():
            return
        if self.format() < FORMAT_VERSION:
            raise StoreError(
                f"`{self.directory}` is a format-1 store; it is converted by the first run "
                "(Experiment.run), not by this operation. Run the experiment once, then retry.",
                directory=str(self.directory),
            )
        if self.log_dir.exists() and not self.log_dir.is_dir():
            raise StoreError(
                f"Could not open the experiment's log: `{self._rel(self.log_dir)}` is a file, "
                "where dagger keeps its folder of logs (the states' records). Move it out of "
                "the experiment folder (keep it if it holds anything of yours) and run again; "
                "`dagger verify` lists what else is wrong.",
                path=str(self.log_dir),
            )
        with (
            os_errors("open the experiment's log", self.log_dir, root=self.directory),
            self.experiment_lock(),
        ):
            self.writer.open()
        _WRITERS.add(self.writer)
        self._parts_written.clear()
        self._values_written.clear()
        self._current().positions[self.writer.name] = 0

    def save(self, state_id: str, state: Any, record: StateRecord) -> StateRecord:
        """Write a state's payload (inline or a file), then its record entry (the commit).

        The caller holds the state's lock. If the state is stored already (another process
        committed it), nothing is written and that record is returned.

        Raises:
            SerializationError: The state cannot be pickled (nothing is left on disk).
            StoreError: The folder cannot be written (no space, no permission).
        """
        if self._fresh != state_id:
            self.refresh()
        self._fresh = None
        catalog = self._current()
        if catalog.committed(state_id):
            existing = self.read_record(state_id)
            if existing is not None:
                return existing
        self.open_writer()
        with os_errors(
            f"store state {state_id[:12]}", self.directory, root=self.directory
        ) as writing:
            save_hook = getattr(state, "save_hook", None)
            data: bytes = b""
            refs: dict[str, int] = {}
            if callable(save_hook):
                info = self._save_with_hook(state_id, save_hook, writing)
            else:
                data, refs, kind = dumps_state(state, self.blobs, state_id=state_id)
                self.blobs.sync()
                if len(data) <= self.inline_limit:
                    info = PayloadInfo(INLINE, "", len(data), kind)
                else:
                    digest = hashlib.sha256(data).hexdigest()
                    relative_path = rec.payload_path(state_id, digest)
                    path = self.directory / relative_path
                    writing.set(path, len(data))
                    self._publish(path, [data], replace=True)
                    info = PayloadInfo(relative_path, digest, len(data), kind)
                    data = b""
            record = record.with_payload(info, refs).with_seq(self._next_seq())
            document, parts = record_to_wire(record)
            encoded = dumps(document)
            writing.set(self.writer.path or self.log_dir, len(data) + len(encoded))
            (offset,) = self._append(
                [(Kind.RECORD, encoded, data)], parts, seconds=record.seconds or 0.0
            )
        self._current().apply_record(record, wire_refs(document), self.writer.name, offset)
        self._remember(state_id, record)
        return record

    def _publish(self, path: Path, chunks: list[bytes], *, replace: bool) -> bool:
        folder = path.parent
        if not folder.is_dir():
            folder.mkdir(parents=True, exist_ok=True)
            if self.durable:
                fsync_dir(folder.parent)
        published = publish(write_temp(path, chunks, durable=self.durable), path, replace=replace)
        if self.durable:
            fsync_dir(folder)  # the payload is durable before the entry that names it
        return published

    def _save_with_hook(self, state_id: str, save_hook: Any, writing: Any) -> PayloadInfo:
        self.payloads_dir.mkdir(parents=True, exist_ok=True)
        probe = self.payloads_dir / f"{state_id}.payload"
        tmp = write_temp(probe, [], durable=False)
        try:
            save_hook(tmp)
            if self.durable:
                with open(tmp, "rb+") as handle:
                    os.fsync(handle.fileno())
            digest, size = hash_file(tmp)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
            raise
        relative_path = rec.payload_path(state_id, digest)
        writing.set(self.directory / relative_path, size)
        publish(tmp, self.directory / relative_path, replace=True)
        if self.durable:
            fsync_dir(self.payloads_dir)
        return PayloadInfo(relative_path, digest, size, "save_hook")

    def write_failure(self, record: StateRecord) -> None:
        """Record why a state failed (the caller holds its lock)."""
        self.open_writer()
        record = record.with_seq(self._next_seq())
        document, parts = record_to_wire(record)
        with os_errors(
            f"record the failure of state {record.id[:12]}", self.log_dir, root=self.directory
        ):
            (offset,) = self._append([(Kind.FAILURE, dumps(document), b"")], parts)
        self._current().apply_failure(record, wire_refs(document), self.writer.name, offset)

    def clear_failure(self, state_id: str) -> None:
        """Nothing to do: a record newer than a failure supersedes it."""

    def _mark(self, state_id: str, kind: str, reason: str) -> None:
        self.open_writer()
        marker = Marker(state_id, self._next_seq(), kind, reason)
        with os_errors(f"mark state {state_id[:12]} {kind}", self.log_dir, root=self.directory):
            self._append([(Kind.MARKER, dumps(marker_to_wire(marker)), b"")], {})
        self._current().apply_marker(marker)

    # -- loading -----------------------------------------------------------------------------

    def load(self, state_id: str, state_class: Any = None, map_location: Any = None) -> Any:
        """Read, verify and unpickle a state's payload.

        A payload (or blob, or entry) that does not match its checksum is never unpickled.
        Before the state is declared damaged, its lock is taken and the store re-read: if
        another process recomputed it meanwhile, that copy is loaded instead.

        Raises:
            CorruptStateError: The state is not stored (absent, removed, pruned, failed), or
                its content is missing or damaged (it is then quarantined: moved aside, one
                warning, and the next run recomputes it).
        """
        catalog = self._current()
        outcome = self._try_load(state_id, state_class, map_location)
        if not isinstance(outcome, _Problem):
            return outcome
        problem = outcome
        if not problem.quiet:
            seen = self._record_seq(catalog, state_id)
            with self.lock(state_id):
                catalog = self.refresh()
                if self._record_seq(catalog, state_id) != seen:
                    # Another process stored (or removed) it since: judge the latest only.
                    again = self._try_load(state_id, state_class, map_location)
                    if not isinstance(again, _Problem):
                        return again
                    problem = again
                if not problem.quiet:
                    if problem.blob is not None:
                        self._quarantine_file(self.blobs.path(problem.blob))
                    self.quarantine(state_id, problem.reason)
        raise CorruptStateError(
            f"State {state_id[:12]} {problem.reason}.", state_id=state_id, reason=problem.reason
        )

    def _record_seq(self, catalog: Catalog, state_id: str) -> tuple[int, int]:
        row = catalog.row_of.get(state_id)
        return (-1, -1) if row is None else (catalog.rseq[row], catalog.mseq[row])

    def _try_load(self, state_id: str, state_class: Any, map_location: Any) -> Any:
        catalog = self._current()
        row = catalog.row_of.get(state_id)
        status = catalog.status(row) if row is not None else None
        if status is None:
            return _Problem("is not in the store (its record is missing)", quiet=True)
        if status is Status.FAILED:
            return _Problem("failed when it was computed; it has no content", quiet=True)
        if status is Status.PRUNED:
            return _Problem("was pruned (its payload dropped); a run recomputes it", quiet=True)
        if status is Status.MISSING:
            return _Problem("was found damaged before; a run recomputes it", quiet=True)
        assert row is not None
        record = self.read_record(state_id)
        if record is None:
            return _Problem("its record entry cannot be read")
        info = record.payload
        if info is None:
            return _Problem("its record names no payload")
        data: bytes
        if info.inline:
            found = self._frame(catalog.rlog[row], catalog.roff[row])
            if found is None:
                return _Problem("its record entry does not match its checksum")
            if found[1] is None or len(found[1]) != info.size:
                log = catalog.logs[catalog.rlog[row]]
                return _Problem(
                    f"its payload (inside log/{log} at byte {catalog.roff[row]}) does not "
                    "match its checksum"
                )
            data = found[1]
        elif info.format == "save_hook":
            path = self.directory / info.file
            problem = _file_problem(path, info.size, info.sha256, self._rel(path))
            if problem is not None:
                return _Problem(f"its payload {problem}")
            load_hook = getattr(state_class, "load_hook", None)
            if not callable(load_hook):
                return _Problem("it was saved by a save_hook and its class has no load_hook")
            return load_hook(path)
        else:
            path = self.directory / info.file
            try:
                with open(path, "rb") as handle:
                    data = handle.read()
            except FileNotFoundError:
                return _Problem(f"its payload file {self._rel(path)} is missing")
            if len(data) != info.size or hashlib.sha256(data).hexdigest() != info.sha256:
                return _Problem(
                    f"its payload file {self._rel(path)} does not match the checksum in its record"
                )
        try:
            return loads_payload(data, self.blobs, map_location)
        except BlobError as error:
            relative_path = self._rel(self.blobs.path(error.digest))
            return _Problem(
                f"the blob {relative_path} it refers to {error.reason}",
                blob=error.digest if error.reason != "missing" else None,
            )

    def _quarantine_file(self, path: Path) -> str | None:
        """Move a file into ``quarantine/`` under its relative path; return where it went."""
        if not path.exists():
            return None
        target = self.quarantine_dir / f"{self._rel(path)}.{time.strftime('%Y%m%dT%H%M%S')}"
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
            os.replace(path, target)
        except OSError:
            return None
        return self._rel(target)

    def quarantine(self, state_id: str, reason: str) -> NoReturn:
        """Declare a state's content unusable: move its payload file aside, append a
        ``quarantined`` marker, warn once, and raise CorruptStateError.

        Takes the state's lock (reentrant: callers may hold it) and acts on its latest record.
        The state then counts as absent: the next run (or this one) recomputes it.
        """
        moved = None
        with self.lock(state_id):
            catalog = self.refresh()
            row = catalog.row_of.get(state_id)
            if row is not None and catalog.status(row) is Status.DONE:
                path = catalog.payload_file(row)
                if path is not None:
                    moved = self._quarantine_file(self.directory / path)
                with contextlib.suppress(StoreError):
                    self._mark(state_id, "quarantined", reason)
        where = f" (moved to {moved})" if moved else ""
        message = (
            f"State {state_id[:12]} is unusable: {reason}{where}. It counts as absent and "
            "will be recomputed on the next run."
        )
        logger.warning("%s", message)
        raise CorruptStateError(message, state_id=state_id, reason=reason)

    def payload_problem(self, state_id: str) -> tuple[str, str] | None:
        """``(file, what is wrong)`` if a stored state's payload (inline or a file) does not
        match its checksum; None if it does (a full read, no unpickling)."""
        catalog = self._current()
        row = catalog.row_of.get(state_id)
        record = self.read_record(state_id)
        if row is None or record is None or record.payload is None:
            return ("log", "its record entry cannot be read")
        info = record.payload
        if info.inline:
            log = f"log/{catalog.logs[catalog.rlog[row]]}" if catalog.rlog[row] >= 0 else "log"
            found = self._frame(catalog.rlog[row], catalog.roff[row])
            if found is None or found[1] is None or len(found[1]) != info.size:
                return (log, f"the payload at byte {catalog.roff[row]} does not match its checksum")
            return None
        path = self.directory / info.file
        problem = _file_problem(path, info.size, info.sha256, info.file)
        return None if problem is None else (info.file, problem)

    # -- notes and results -------------------------------------------------------------------

    def read_notes(self, state_id: str) -> Notes:
        catalog = self._current()
        row = catalog.row_of.get(state_id)
        if row is None or not catalog.notes_visible(row):
            return Notes()
        if catalog.nlog[row] == NO_LOG:
            return self.legacy.notes.get(state_id, Notes()) if self.legacy is not None else Notes()
        found = self._frame(catalog.nlog[row], catalog.noff[row])
        if found is None:
            return Notes()
        try:
            return notes_from_wire(found[0])[2]
        except InvalidRecordError:
            return Notes()

    def update_notes(
        self,
        state_id: str,
        *,
        tags: list[str] | tuple[str, ...] = (),
        results: dict[str, ResultEntry] | None = None,
        audit: AuditNote | None = None,
    ) -> Notes:
        """Merge tags, results and an audit into a state's notes: a new notes entry, under its
        lock."""
        with self.lock(state_id):
            self.refresh()
            notes = self.read_notes(state_id)
            updated = notes.merged(tags, results or {}, audit)
            if updated != notes:
                self.open_writer()
                seq = self._next_seq()
                with os_errors(
                    f"annotate state {state_id[:12]}", self.log_dir, root=self.directory
                ):
                    document = dumps(notes_to_wire(state_id, seq, updated))
                    (offset,) = self._append([(Kind.NOTES, document, b"")], {})
                self._current().apply_notes(state_id, seq, updated, self.writer.name, offset)
        return updated

    def store_result(self, state_id: str, name: str, value: Any, code: str) -> ResultEntry:
        """How a Function's result is recorded: inline if plain JSON, else pickled into the
        log (small) or a file named by its digest (large).

        Raises:
            SerializationError: The value cannot be pickled.
            StoreError: The folder cannot be written.
        """
        if is_plain_json(value):
            return ResultEntry(code=code, value=value)
        self.open_writer()
        operation = f"record the result `{name}` of state {state_id[:12]}"
        with os_errors(operation, self.directory, root=self.directory) as writing:
            data, refs, _ = dumps_payload(
                value, self.blobs, what=f"The result of Function `{name}`", label="result"
            )
            self.blobs.sync()
            digest = hashlib.sha256(data).hexdigest()
            if len(data) <= self.inline_limit:
                location = INLINE
                catalog = self.refresh()
                if digest not in catalog.values or not self._value_ok(digest):
                    (offset,) = self._append([(Kind.VALUE, dumps({"sha256": digest}), data)], {})
                    number = catalog.log_number(self.writer.name)
                    catalog.values[digest] = (number, offset, len(data))
            else:
                location = rec.result_path(digest)
                path = self.directory / location
                writing.set(path, len(data))
                if _file_problem(path, len(data), digest, location) is not None:
                    self._publish(path, [data], replace=True)  # absent or damaged: (re)write
        return ResultEntry(
            code=code,
            file=location,
            sha256=digest,
            size=len(data),
            blobs=refs,
            type=f"{type(value).__module__}.{type(value).__qualname__}",
            repr=short_repr(value),
        )

    def _value_ok(self, digest: str) -> bool:
        try:
            self._value_bytes(digest)
        except CorruptStateError:
            return False
        return True

    def _value_bytes(self, digest: str) -> bytes:
        catalog = self._current()
        where = catalog.values.get(digest)
        if where is None:
            raise CorruptStateError(
                f"A recorded result ({digest[:12]}) is not in the store's logs any more; run "
                "the experiment again to recompute it.",
                state_id=None,
                reason="result missing",
            )
        log_no, offset, _ = where
        found = self._frame(log_no, offset)
        data = found[1] if found is not None else None
        if data is None or hashlib.sha256(data).hexdigest() != digest:
            raise CorruptStateError(
                f"A recorded result ({digest[:12]}) in log/{catalog.logs[log_no]} does not "
                "match its checksum; run the experiment again to recompute it.",
                state_id=None,
                reason="result corrupt",
            )
        return data

    def load_result(self, entry: ResultEntry) -> Any:
        """The value of a recorded result (side payloads verified before unpickling).

        Raises:
            CorruptStateError: The side payload is missing or does not match its checksum.
        """
        if entry.inline:
            return entry.value
        assert entry.file is not None
        if entry.file == INLINE:
            data = self._value_bytes(entry.sha256 or "")
        else:
            path = self.directory / entry.file
            shown = self._rel(path)
            try:
                with open(path, "rb") as handle:
                    data = handle.read()
            except FileNotFoundError:
                raise CorruptStateError(
                    f"The result file {shown} is missing; run the experiment again to "
                    "recompute it.",
                    state_id=None,
                    reason="result file missing",
                ) from None
            if hashlib.sha256(data).hexdigest() != entry.sha256:
                raise CorruptStateError(
                    f"The result file {shown} does not match its checksum; run the "
                    "experiment again to recompute it.",
                    state_id=None,
                    reason="result file corrupt",
                )
        try:
            return loads_payload(data, self.blobs)
        except BlobError as error:
            raise CorruptStateError(
                f"A blob of a recorded result ({self._rel(self.blobs.path(error.digest))}) "
                f"{error.reason}; run the experiment again to recompute it.",
                state_id=None,
                reason=error.reason,
            ) from None

    def forget_result(self, state_id: str, name: str, reason: str) -> None:
        """Record that a state's result ``name`` cannot be loaded: it counts as failed (with
        ``reason``), so the next run computes it again and replaces the damaged copy."""
        with self.lock(state_id):
            self.refresh()
            entry = self.read_notes(state_id).results.get(name)
            if entry is None or entry.failed:
                return
            failed = ResultEntry(code=entry.code, error=ErrorInfo("CorruptStateError", reason))
            self.update_notes(state_id, results={name: failed})

    def result_problem(self, entry: ResultEntry) -> str | None:
        """Why a recorded side-payload result cannot be loaded (a checked read of a small
        one, a stat of a large one; no unpickling), or None."""
        if entry.inline or entry.file is None:
            return None
        if entry.file == INLINE:
            try:
                self._value_bytes(entry.sha256 or "")
            except CorruptStateError as error:
                return str(error)
            return None
        path = self.directory / entry.file
        problem = _size_problem(path, entry.size or 0, self._rel(path))
        if problem is None:
            for digest, blob_size in entry.blobs.items():
                blob = self.blobs.path(digest)
                problem = _size_problem(blob, blob_size, self._rel(blob))
                if problem is not None:
                    break
        return problem

    # -- removing and pruning ----------------------------------------------------------------

    def remove(self, state_ids: Iterable[str], *, descendants: bool = True) -> list[str]:
        """Remove states (and, by default, everything below them) from the store.

        Each state is removed under its lock with a ``removed`` marker, children before
        parents; its payload file is deleted. Blobs are left to ``gc``. A run going on at the
        same time that needs a removed state recomputes it.

        Args:
            state_ids: The states to remove.
            descendants: Also remove their descendants; False refuses to remove a state that
                has children (it would orphan them).

        Returns:
            The ids removed, parents before children.

        Raises:
            StateNotFoundError: An id is not a stored state.
            ExperimentDefinitionError: ``descendants=False`` and a state has children.
        """
        targets = self._closure(self.refresh(), state_ids, descendants)
        removed = []
        # Children before parents: a removal stopped half-way (Ctrl-C, a kill) leaves whole
        # subtrees, never a child without its parent, and the same removal can be run again.
        for state_id in reversed(targets):
            with self.lock(state_id):
                catalog = self.refresh()
                row = catalog.row_of.get(state_id)
                if row is None or catalog.status(row) is None:
                    continue
                path = catalog.payload_file(row)
                self._mark(state_id, "removed", "removed by the user")
                if path is not None:
                    with contextlib.suppress(FileNotFoundError):
                        os.unlink(self.directory / path)
                removed.append(state_id)
        self.flush()
        removed.reverse()
        return removed

    def prune(self, state_ids: Iterable[str]) -> list[str]:
        """Drop the payloads of stored states, keeping their records (status ``pruned``).

        A later run recomputes a pruned state only when it needs it (a child to compute, a
        Function to run, ``get()``). Blobs are left to ``gc``.

        Returns:
            The ids pruned (stored states only; others are skipped).
        """
        pruned = []
        for state_id in dict.fromkeys(state_ids):
            with self.lock(state_id):
                catalog = self.refresh()
                row = catalog.row_of.get(state_id)
                if row is None or catalog.status(row) is not Status.DONE:
                    continue
                path = catalog.payload_file(row)
                self._mark(state_id, "pruned", "payload dropped by the user")
                if path is not None:
                    with contextlib.suppress(FileNotFoundError):
                        os.unlink(self.directory / path)
                pruned.append(state_id)
        self.flush()
        return pruned

    def _closure(self, catalog: Catalog, state_ids: Iterable[str], descendants: bool) -> list[str]:
        children: dict[int, list[int]] = {}
        for row in range(len(catalog.ids)):
            parent = catalog.parent[row]
            if parent >= 0 and catalog.status(row) is not None:
                children.setdefault(parent, []).append(row)
        order: list[str] = []
        seen: set[int] = set()
        for state_id in state_ids:
            found = catalog.row_of.get(state_id)
            if found is None or catalog.status(found) is None:
                raise StateNotFoundError(
                    f"State {state_id[:12]} is not in {self.location}; nothing was removed.",
                    sha=state_id,
                )
            row = found
            if not descendants and children.get(row):
                raise ExperimentDefinitionError(
                    f"State {state_id[:12]} has {len(children[row])} child state(s); removing "
                    "it alone would orphan them. Pass descendants=True to remove its subtree.",
                    state_id=state_id,
                )
            stack = [row]
            while stack:
                current = stack.pop()
                if current in seen:
                    continue
                seen.add(current)
                order.append(catalog.ids[current])
                stack.extend(reversed(children.get(current, [])))
        return order

    # -- locks ---------------------------------------------------------------------------------

    @contextlib.contextmanager
    def lock(self, state_id: str) -> Iterator[None]:
        """The inter-process lock of a state (reentrant within a thread).

        A no-op where file locks cannot be trusted (network filesystems; warned once).

        Raises:
            StoreError: The lock file cannot be opened (a read-only folder, a folder in its
                place).
        """
        held = state_lock(self.locks_dir, state_id, enabled=self._locks_trusted())
        # Only taking the lock is the store's business: an OSError of the block is not.
        with os_errors(f"lock state {state_id[:12]}", self.locks_dir, root=self.directory):
            held.__enter__()
        try:
            yield
        finally:
            held.__exit__(None, None, None)

    def experiment_lock(self) -> contextlib.AbstractContextManager[Any]:
        """The lock around experiment.json, conversion, compaction and gc."""
        return experiment_lock(self.locks_dir, enabled=self._locks_trusted())

    def locks_trusted(self) -> bool:
        """Whether file locks exclude other processes here (not on network filesystems)."""
        return self._locks_trusted()

    def _locks_trusted(self) -> bool:
        if self._locking is None:
            self._locking = locks_trustworthy(self.directory)
        return self._locking

    # -- runs ----------------------------------------------------------------------------------

    def flush(self) -> None:
        """Make every entry this process wrote durable now (the group commit's end)."""
        with os_errors("make the stored states durable", self.log_dir, root=self.directory):
            self.writer.sync()

    @contextlib.contextmanager
    def batch(self) -> Iterator[None]:
        """A run. At its start, where no other process is writing, the temporary files of
        writers that are gone are removed, damaged entries set aside and many small logs
        merged (:func:`~dagger.store.maintenance.tidy`). At its end, every entry is made
        durable, this process's log is closed (so ``gc`` can tell that no run is going on), and
        the index rewritten if it is stale."""
        if self._meta_damaged is not None:
            # experiment.json was found damaged or missing and rebuilt from the records (the
            # warning promised it): write it now, even in a run that computes nothing.
            self.prepare(self.read_meta())
        if self.meta_path.exists() and self.format() < FORMAT_VERSION:
            self.prepare(self.read_meta())  # converts it (a run that writes nothing too)
        if self.meta_path.exists() and self.format() >= FORMAT_VERSION:
            from .maintenance import tidy, tidy_needed

            if tidy_needed(self):
                with contextlib.suppress(OSError), self.experiment_lock():
                    tidy(self)
        try:
            yield
        finally:
            try:
                if self.writer.fd is not None and self.writer.pid == os.getpid():
                    self.flush()
            finally:
                with contextlib.suppress(OSError):
                    self.writer.close()
                with contextlib.suppress(Exception):
                    self.save_index()

    def index_stale(self) -> bool:
        """Whether the index is missing, damaged, or lags the logs by enough to rewrite it."""
        lag = self._entries_since_index
        if self.catalog is None or lag == 0:
            return False
        size = len(self.catalog)
        return lag >= _INDEX_MISSING or size < INDEX_SMALL or lag >= size * INDEX_STALE_FRACTION

    def save_index(self, *, force: bool = False) -> bool:
        """Rewrite the index if it is stale (best effort: the index is a cache)."""
        if self.format() < FORMAT_VERSION:
            return False
        if self.catalog is None:
            self.refresh()
        if not force and not self.index_stale():
            return False
        if not self.directory.is_dir():
            return False
        catalog = self.refresh()
        if not len(catalog) and not force:
            return False
        written = write_index(self.directory, catalog, dict(self._tails))
        if written:
            self._entries_since_index = 0
        return written


class _Problem:
    """Why a load failed (internal): a reason, whether it is news, and a blob to move aside."""

    def __init__(self, reason: str, *, quiet: bool = False, blob: str | None = None) -> None:
        self.reason = reason
        self.quiet = quiet
        self.blob = blob


def _size_problem(path: Path, size: int, shown: str) -> str | None:
    try:
        actual = os.stat(path).st_size
    except FileNotFoundError:
        return f"{shown} is missing"
    except OSError as error:
        return f"{shown} cannot be read ({error.strerror})"
    if actual != size:
        return f"{shown} has {actual} bytes, {size} expected"
    return None


def _file_problem(path: Path, size: int | None, digest: str | None, shown: str) -> str | None:
    try:
        actual_digest, actual_size = hash_file(path)
    except FileNotFoundError:
        return f"{shown} is missing"
    if actual_size != size:
        return f"{shown} has {actual_size} bytes, {size} expected"
    if actual_digest != digest:
        return f"{shown} does not match its checksum"
    return None
