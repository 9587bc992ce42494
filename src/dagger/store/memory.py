"""An in-memory store: the Store protocol on dicts, for tests and throwaway experiments.

States are pickled on save and unpickled on load with the same serializer as the directory
store, so a state loaded from memory is an independent copy, exactly as one loaded from disk.
Nothing survives the process, and no other process can reach it (no executors).
"""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Iterator
from typing import Any, NoReturn

from ..errors import CorruptStateError, NotAnExperimentError
from ..record import AuditNote, ExperimentMeta, Notes, PayloadInfo, ResultEntry, StateRecord
from .base import SlimEntry, Survey
from .payload import dumps_payload, dumps_state, loads_payload
from .results import is_plain_json, short_repr

__all__ = ["MemoryStore"]

logger = logging.getLogger("dagger")


class MemoryStore:
    """A store in this process's memory.

    Attributes:
        loads: How many times a state's content was loaded (tests count them).
        saves: How many times a state's content was saved.
    """

    location = "<memory>"

    def __init__(self) -> None:
        self.meta: ExperimentMeta | None = None
        self.records: dict[str, StateRecord] = {}
        self.payloads: dict[str, bytes] = {}
        self.notes: dict[str, Notes] = {}
        self.failures: dict[str, StateRecord] = {}
        self.results: dict[str, bytes] = {}
        self.loads = 0
        self.saves = 0
        self._locks: dict[str, threading.RLock] = {}
        self._guard = threading.Lock()

    def __repr__(self) -> str:
        return f"MemoryStore({len(self.records)} states)"

    def worker_spec(self) -> None:
        return None

    # -- the experiment ---------------------------------------------------------------------

    def exists(self) -> bool:
        return self.meta is not None

    def read_meta(self) -> ExperimentMeta:
        if self.meta is None:
            raise NotAnExperimentError(
                "This in-memory store holds no experiment yet; run one into it first.",
                directory=self.location,
            )
        return self.meta

    def prepare(self, meta: ExperimentMeta) -> ExperimentMeta:
        if self.meta is None:
            self.meta = meta
        else:
            new_roots = [root for root in meta.roots if root not in self.meta.roots]
            if new_roots:
                self.meta = self.meta.with_roots([*self.meta.roots, *new_roots], meta.created)
        return self.meta

    # -- states ------------------------------------------------------------------------------

    def survey(self) -> Survey:
        return Survey(stored=set(self.records), notes=set(self.notes), failures=set(self.failures))

    def read_record(self, state_id: str) -> StateRecord | None:
        return self.records.get(state_id)

    def has_record(self, state_id: str) -> bool:
        return state_id in self.records

    def save(self, state_id: str, state: Any, record: StateRecord) -> StateRecord:
        existing = self.records.get(state_id)
        if existing is not None:
            return existing
        data, _, kind = dumps_state(state, None, state_id=state_id)
        self.saves += 1
        self.payloads[state_id] = data
        record = record.with_payload(
            PayloadInfo(f"{state_id}.memory", "", len(data), kind), blobs={}
        )
        self.records[state_id] = record
        return record

    def load(self, state_id: str, state_class: Any = None, map_location: Any = None) -> Any:
        data = self.payloads.get(state_id)
        if data is None or state_id not in self.records:
            raise CorruptStateError(
                f"State {state_id[:12]} is not in this in-memory store.",
                state_id=state_id,
                reason="missing",
            )
        self.loads += 1
        return loads_payload(data, None, map_location)

    def quarantine(self, state_id: str, reason: str) -> NoReturn:
        self.records.pop(state_id, None)
        self.payloads.pop(state_id, None)
        logger.warning("State %s is unusable: %s.", state_id[:12], reason)
        raise CorruptStateError(
            f"State {state_id[:12]} is unusable: {reason}.", state_id=state_id, reason=reason
        )

    def write_failure(self, record: StateRecord) -> None:
        self.failures[record.id] = record

    def clear_failure(self, state_id: str) -> None:
        self.failures.pop(state_id, None)

    # -- notes and results -------------------------------------------------------------------

    def read_notes(self, state_id: str) -> Notes:
        return self.notes.get(state_id, Notes())

    def update_notes(
        self,
        state_id: str,
        *,
        tags: list[str] | tuple[str, ...] = (),
        results: dict[str, ResultEntry] | None = None,
        audit: AuditNote | None = None,
    ) -> Notes:
        with self.lock(state_id):
            updated = self.read_notes(state_id).merged(tags, results or {}, audit)
            self.notes[state_id] = updated
        return updated

    def store_result(self, state_id: str, name: str, value: Any, code: str) -> ResultEntry:
        if is_plain_json(value):
            return ResultEntry(code=code, value=value)
        data, _, _ = dumps_payload(
            value, None, what=f"The result of Function `{name}`", label="result"
        )
        key = f"{state_id}.{name}"
        self.results[key] = data
        return ResultEntry(
            code=code,
            file=key,
            size=len(data),
            type=f"{type(value).__module__}.{type(value).__qualname__}",
            repr=short_repr(value),
        )

    def load_result(self, entry: ResultEntry) -> Any:
        if entry.inline:
            return entry.value
        data = self.results.get(entry.file or "")
        if data is None:
            raise CorruptStateError(
                f"The result {entry.file} is not in this in-memory store.",
                state_id=(entry.file or "")[:64],
                reason="missing",
            )
        return loads_payload(data, None)

    # -- concurrency and bulk ------------------------------------------------------------------

    def lock(self, state_id: str) -> contextlib.AbstractContextManager[Any]:
        with self._guard:
            return self._locks.setdefault(state_id, threading.RLock())

    def experiment_lock(self) -> contextlib.AbstractContextManager[Any]:
        return self.lock("experiment")

    @contextlib.contextmanager
    def batch(self) -> Iterator[None]:
        yield

    def slim_entries(self) -> dict[str, SlimEntry]:
        entries: dict[str, SlimEntry] = {}
        for state_id, record in self.records.items():
            entries[state_id] = SlimEntry(state_id, record, has_payload=True)
        for state_id, failure in self.failures.items():
            entries.setdefault(state_id, SlimEntry(state_id)).failure = failure
        for state_id, notes in self.notes.items():
            entries.setdefault(state_id, SlimEntry(state_id)).notes = notes
        return entries
