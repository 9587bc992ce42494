"""``index.json``: a snapshot of every slim record, so that a restore reads one file.

The index is never the only copy of anything: records, notes and failures stay in their own
files. A restore reads the index once, then only the records it lacks and the notes and failure
files that changed since it was written (compared by inode, size and modification time), and
rewrites it when it was stale. A missing, unreadable or older-format index is rebuilt from the
files (best effort: a read-only folder keeps working without it).
"""

from __future__ import annotations

import logging
import os
from typing import TYPE_CHECKING, Any

from ..record import FORMAT_VERSION, InvalidRecordError, Notes, StateRecord
from . import records as rec
from .base import SlimEntry

if TYPE_CHECKING:
    from .directory import DirectoryStore

__all__ = ["read_slim_entries"]

logger = logging.getLogger("dagger")


def read_slim_entries(store: DirectoryStore) -> dict[str, SlimEntry]:
    """Every state's record, notes and failure in ``store``, refreshing its index."""
    listing = rec.scan(store.states_dir)
    index = _read_index(store)
    stale = index is None
    index = index or {"records": {}, "notes": {}, "failures": {}}
    entries: dict[str, SlimEntry] = {}
    indexed_records = index["records"]
    for state_id in listing.records:
        record = _parse_record(indexed_records.get(state_id), state_id)
        if record is None:
            stale = True
            record = store.read_record(state_id)
            if record is None:
                continue
        entry = entries[state_id] = SlimEntry(state_id, record)
        entry.has_payload = record.payload is not None and listing.has_payload(
            state_id, record.payload.file
        )
    stale |= len(indexed_records) != len(entries)
    new_index: dict[str, Any] = {"format": FORMAT_VERSION, "records": {}, "notes": {}}
    new_index["failures"] = {}
    for kind, ids, name_of in (
        ("notes", listing.notes, rec.notes_name),
        ("failures", listing.failures, rec.failure_name),
    ):
        known = index.get(kind, {})
        for state_id in ids:
            path = store.states_dir / name_of(state_id)
            try:
                stat = os.stat(path)
            except FileNotFoundError:
                continue
            stamp = [stat.st_ino, stat.st_size, stat.st_mtime_ns]
            cached = known.get(state_id)
            document = None
            if cached is not None and cached.get("stamp") == stamp:
                document = cached.get("doc")
            if document is None:
                stale = True
                try:
                    document = rec.read_json(path)
                except (FileNotFoundError, InvalidRecordError):
                    continue
            try:
                if kind == "notes":
                    notes = Notes.from_json(document)
                else:
                    failure = StateRecord.from_json(document, expected_id=state_id)
            except InvalidRecordError as error:
                logger.warning("states/%s is damaged (%s); it is ignored.", path.name, error)
                continue
            new_index[kind][state_id] = {"stamp": stamp, "doc": document}
            entry = entries.get(state_id) or entries.setdefault(state_id, SlimEntry(state_id))
            if kind == "notes":
                entry.notes = notes
            else:
                entry.failure = failure
        stale |= len(known) != len(new_index[kind])
    if stale:
        new_index["records"] = {
            state_id: entry.record.to_json() for state_id, entry in entries.items() if entry.record
        }
        _write_index(store, new_index)
    return entries


def _parse_record(document: Any, state_id: str) -> StateRecord | None:
    if document is None:
        return None
    try:
        return StateRecord.from_json(document, expected_id=state_id)
    except InvalidRecordError:
        return None


def _read_index(store: DirectoryStore) -> dict[str, Any] | None:
    try:
        index = rec.read_json(store.index_path)
    except (FileNotFoundError, InvalidRecordError, OSError):
        return None
    if not isinstance(index, dict) or index.get("format") != FORMAT_VERSION:
        return None
    if not all(isinstance(index.get(kind), dict) for kind in ("records", "notes", "failures")):
        return None
    return index


def _write_index(store: DirectoryStore, index: dict[str, Any]) -> None:
    if not store.directory.is_dir():
        return
    try:
        rec.write_json(store.index_path, index, durable=False)
    except OSError as error:
        logger.debug("index.json not written: %s", error)
