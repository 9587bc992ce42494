"""An in-memory store: the Store protocol on dicts, for tests and throwaway experiments.

States are pickled on save and unpickled on load with the same serializer as the directory
store, so a state loaded from memory is an independent copy, exactly as one loaded from disk.
What it knows about its states is kept in the same :class:`~dagger.store.catalog.Catalog` as
the directory store's, so a survey or a restored tree behaves the same. Nothing survives the
process, and no other process can reach it (no executors).
"""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Iterable, Iterator
from typing import Any, NoReturn

from ..errors import (
    CorruptStateError,
    ExperimentDefinitionError,
    NotAnExperimentError,
    StateNotFoundError,
)
from ..record import (
    IDENTITY_VERSION,
    AuditNote,
    ErrorInfo,
    ExperimentMeta,
    Marker,
    Notes,
    PayloadInfo,
    ResultEntry,
    StateRecord,
    Status,
    record_to_wire,
    wire_refs,
)
from .catalog import Catalog
from .payload import dumps_payload, dumps_state, loads_payload
from .results import is_plain_json, short_repr
from .table import SlimTable

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
        self.catalog = Catalog()
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
            if not set(meta.identities) <= set(self.meta.identities):
                self.meta = self.meta.with_identities([*self.meta.identities, *meta.identities])
        return self.meta

    def forget_identities(self, schemes: Iterable[int]) -> ExperimentMeta:
        meta = self.read_meta()
        dropped = set(schemes) - {IDENTITY_VERSION}
        left = [scheme for scheme in meta.identities if scheme not in dropped]
        if tuple(left) != meta.identities:
            self.meta = meta.with_identities(left or [IDENTITY_VERSION])
        return self.read_meta()

    # -- states ------------------------------------------------------------------------------

    def _seq(self) -> int:
        return self.catalog.max_seq + 1

    def survey(self) -> Catalog:
        return self.catalog

    def snapshot(self) -> SlimTable:
        return self.catalog.snapshot(self)

    def read_record(self, state_id: str) -> StateRecord | None:
        row = self.catalog.row_of.get(state_id)
        if row is None or self.catalog.status(row) is None:
            return None
        return self.records.get(state_id)

    def read_failure(self, state_id: str) -> StateRecord | None:
        row = self.catalog.row_of.get(state_id)
        if row is None or self.catalog.status(row) is not Status.FAILED:
            return None
        return self.failures.get(state_id)

    def has_record(self, state_id: str) -> bool:
        return self.catalog.committed(state_id)

    def check(self, state_ids: Iterable[str]) -> dict[str, str]:
        return {
            state_id: "its payload is missing"
            for state_id in state_ids
            if self.catalog.committed(state_id) and state_id not in self.payloads
        }

    def save(self, state_id: str, state: Any, record: StateRecord) -> StateRecord:
        existing = self.records.get(state_id)
        if existing is not None and self.catalog.committed(state_id):
            return existing
        data, _, kind = dumps_state(state, None, state_id=state_id)
        self.saves += 1
        self.payloads[state_id] = data
        record = record.with_payload(
            PayloadInfo(f"{state_id}.memory", "", len(data), kind), blobs={}
        ).with_seq(self._seq())
        self.records[state_id] = record
        document, _ = record_to_wire(record)
        self.catalog.apply_record(record, wire_refs(document), None, -1)
        return record

    def load(self, state_id: str, state_class: Any = None, map_location: Any = None) -> Any:
        data = self.payloads.get(state_id)
        if data is None or not self.catalog.committed(state_id):
            row = self.catalog.row_of.get(state_id)
            pruned = row is not None and self.catalog.status(row) is Status.PRUNED
            reason = "was pruned (its payload dropped)" if pruned else "is not in this store"
            raise CorruptStateError(
                f"State {state_id[:12]} {reason}.", state_id=state_id, reason=reason
            )
        self.loads += 1
        return loads_payload(data, None, map_location)

    def quarantine(self, state_id: str, reason: str) -> NoReturn:
        self.payloads.pop(state_id, None)
        if self.catalog.committed(state_id):
            self.catalog.apply_marker(Marker(state_id, self._seq(), "quarantined", reason))
        logger.warning("State %s is unusable: %s.", state_id[:12], reason)
        raise CorruptStateError(
            f"State {state_id[:12]} is unusable: {reason}.", state_id=state_id, reason=reason
        )

    def write_failure(self, record: StateRecord) -> None:
        record = record.with_seq(self._seq())
        self.failures[record.id] = record
        document, _ = record_to_wire(record)
        self.catalog.apply_failure(record, wire_refs(document), None, -1)

    def clear_failure(self, state_id: str) -> None:
        """Nothing to do: a record newer than a failure supersedes it."""

    def remove(self, state_ids: Iterable[str], *, descendants: bool = True) -> list[str]:
        table = self.snapshot()
        children = table.children()
        order: list[str] = []
        for state_id in state_ids:
            row = table.row(state_id)
            if row is None:
                raise StateNotFoundError(
                    f"State {state_id[:12]} is not in this in-memory store; nothing was removed.",
                    sha=state_id,
                )
            if not descendants and children[row]:
                raise ExperimentDefinitionError(
                    f"State {state_id[:12]} has {len(children[row])} child state(s); removing "
                    "it alone would orphan them. Pass descendants=True to remove its subtree.",
                    state_id=state_id,
                )
            stack = [row]
            while stack:
                current = stack.pop()
                if table.ids[current] not in order:
                    order.append(table.ids[current])
                    stack.extend(reversed(children[current]))
        for state_id in reversed(order):  # children first, as the directory store
            self.payloads.pop(state_id, None)
            self.catalog.apply_marker(Marker(state_id, self._seq(), "removed", "removed"))
        return order

    def prune(self, state_ids: Iterable[str]) -> list[str]:
        pruned = []
        for state_id in dict.fromkeys(state_ids):
            if self.catalog.committed(state_id):
                self.payloads.pop(state_id, None)
                self.catalog.apply_marker(Marker(state_id, self._seq(), "pruned", "pruned"))
                pruned.append(state_id)
        return pruned

    # -- notes and results -------------------------------------------------------------------

    def read_notes(self, state_id: str) -> Notes:
        row = self.catalog.row_of.get(state_id)
        if row is None or not self.catalog.notes_visible(row):
            return Notes()
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
            self.catalog.apply_notes(state_id, self._seq(), updated, None, -1)
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

    def forget_result(self, state_id: str, name: str, reason: str) -> None:
        entry = self.read_notes(state_id).results.get(name)
        if entry is not None and not entry.failed:
            failed = ResultEntry(code=entry.code, error=ErrorInfo("CorruptStateError", reason))
            self.update_notes(state_id, results={name: failed})

    def result_problem(self, entry: ResultEntry) -> str | None:
        if entry.inline or entry.file in self.results:
            return None
        return "its value is missing"

    # -- concurrency and bulk ------------------------------------------------------------------

    def lock(self, state_id: str) -> contextlib.AbstractContextManager[Any]:
        with self._guard:
            return self._locks.setdefault(state_id, threading.RLock())

    def experiment_lock(self) -> contextlib.AbstractContextManager[Any]:
        return self.lock("experiment")

    @contextlib.contextmanager
    def batch(self) -> Iterator[None]:
        yield

    def flush(self) -> None:
        """Nothing to make durable."""
