"""Format 1 stores (one JSON file per record under ``states/``): read them, and convert them.

A format-1 store opens as it is for reading (restore, show, ls, verify, loads): its records,
notes and failures are read from their files into a catalog, in memory. The first run that
writes to it converts it, under the experiment lock: every record, failure and notes file
becomes an entry of one log, with sequence numbers in the order the states were created;
payload and result files stay where they are (records point at ``states/...``); then
``experiment.json`` says format 2, and only then are the old JSON files deleted. A crash at any
point leaves a store that opens: before the new ``experiment.json`` it is still format 1 (the
next run converts it again, writing the same entries), after it, the old files are ignored
leftovers that the next conversion step or ``gc`` removes.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from pathlib import Path

from ..record import (
    InvalidRecordError,
    Notes,
    ResultEntry,
    StateRecord,
    record_to_wire,
    wire_refs,
)
from . import records as rec
from .catalog import Catalog

__all__ = ["Legacy", "read_legacy"]

logger = logging.getLogger("dagger")


@dataclass
class Legacy:
    """A format-1 store read into memory.

    Attributes:
        catalog: Its catalog (entries have no log; ``seq`` follows creation time).
        records: Records by id (payload paths made relative to the experiment folder).
        failures: Failure records by id.
        notes: Notes by id (result file paths made relative to the experiment folder).
        damaged: ``(path relative to the folder, reason)`` of files that could not be read.
    """

    catalog: Catalog = field(default_factory=Catalog)
    records: dict[str, StateRecord] = field(default_factory=dict)
    failures: dict[str, StateRecord] = field(default_factory=dict)
    notes: dict[str, Notes] = field(default_factory=dict)
    seqs: dict[str, int] = field(default_factory=dict)
    damaged: list[tuple[str, str]] = field(default_factory=list)


def _read(path: Path, legacy: Legacy, what: str) -> object | None:
    try:
        return rec.read_json(path)
    except FileNotFoundError:
        return None
    except (OSError, InvalidRecordError) as error:
        legacy.damaged.append((f"states/{path.name}", f"unreadable {what} ({error})"))
        return None


def read_legacy(directory: Path) -> Legacy:
    """Read a format-1 store's ``states/`` into memory."""
    legacy = Legacy()
    states = directory / "states"
    listing = rec.scan(states)
    described: list[StateRecord] = []
    for state_id in sorted(listing.records):
        document = _read(states / rec.record_name(state_id), legacy, "record")
        if document is None:
            continue
        try:
            record = StateRecord.from_json(document, expected_id=state_id)
        except InvalidRecordError as error:
            legacy.damaged.append((f"states/{rec.record_name(state_id)}", f"damaged ({error})"))
            continue
        if record.payload is not None:
            payload = record.payload
            record = record.with_payload(
                type(payload)(
                    f"states/{payload.file}", payload.sha256, payload.size, payload.format
                ),
                record.blobs,
            )
        legacy.records[state_id] = record
        described.append(record)
    for state_id in sorted(listing.failures):
        document = _read(states / rec.failure_name(state_id), legacy, "failure record")
        if document is None:
            continue
        try:
            failure = StateRecord.from_json(document, expected_id=state_id)
        except InvalidRecordError as error:
            legacy.damaged.append((f"states/{rec.failure_name(state_id)}", f"damaged ({error})"))
            continue
        legacy.failures[state_id] = failure
        described.append(failure)
    # Creation order: format 1 stamped records to the second, so ties go by id.
    described.sort(key=lambda record: (record.created, not record.failed, record.id))
    seq = 0
    catalog = legacy.catalog
    for record in described:
        seq += 1
        numbered = record.with_seq(seq)
        document, parts = record_to_wire(numbered)
        for key, part in parts.items():
            catalog.add_part(key, part)
        if record.failed:
            legacy.failures[record.id] = numbered
            catalog.apply_failure(numbered, wire_refs(document), None, -1)
        else:
            legacy.records[record.id] = numbered
            catalog.apply_record(numbered, wire_refs(document), None, -1)
    for state_id in sorted(listing.notes):
        document = _read(states / rec.notes_name(state_id), legacy, "notes")
        if document is None:
            continue
        try:
            notes = Notes.from_json(document)
        except InvalidRecordError as error:
            legacy.damaged.append((f"states/{rec.notes_name(state_id)}", f"damaged ({error})"))
            continue
        results = {name: _relocated(entry) for name, entry in notes.results.items()}
        notes = Notes(notes.tags, results)
        seq += 1
        legacy.notes[state_id] = notes
        legacy.seqs[state_id] = seq
        catalog.apply_notes(state_id, seq, notes, None, -1)
    return legacy


def _relocated(entry: ResultEntry) -> ResultEntry:
    if entry.file is None:
        return entry
    values = {name: getattr(entry, name) for name in ResultEntry.__dataclass_fields__}
    values["file"] = f"states/{entry.file}"
    return ResultEntry(**values)


def old_files(directory: Path) -> list[Path]:
    """The format-1 JSON files a converted store no longer reads (records, notes, failures,
    the old index)."""
    states = directory / "states"
    listing = rec.scan(states)
    paths = [states / rec.record_name(state_id) for state_id in listing.records]
    paths += [states / rec.notes_name(state_id) for state_id in listing.notes]
    paths += [states / rec.failure_name(state_id) for state_id in listing.failures]
    old_index = directory / "index.json"
    if old_index.exists():
        try:
            with open(old_index, "rb") as handle:
                head = handle.read(1)
        except OSError:
            head = b""
        if head == b"{":  # format 1's index was plain JSON; format 2's starts otherwise
            paths.append(old_index)
    return paths


def remove_old_files(directory: Path) -> None:
    """Delete the format-1 JSON files of a converted store (see :func:`old_files`)."""
    for path in old_files(directory):
        try:
            os.unlink(path)
        except FileNotFoundError:
            pass
        except OSError as error:
            logger.debug("could not remove %s: %s", path, error)
