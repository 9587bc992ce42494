"""The Store protocol: the handful of operations the runner, the loader and the tree use.

Two implementations: :class:`~dagger.store.directory.DirectoryStore` (a folder laid out as in
DESIGN.md section 4) and :class:`~dagger.store.memory.MemoryStore` (dicts in memory, for tests
and throwaway experiments). Anything that implements these methods can hold an experiment.

Errors: a store raises only :class:`~dagger.errors.DaggerError` subclasses:
:class:`~dagger.errors.CorruptStateError` for a state whose files are missing or damaged (it
has been quarantined), :class:`~dagger.errors.StoreError` for a store that cannot be used
(no space, no permission), :class:`~dagger.errors.SerializationError` for a state that cannot
be pickled.
"""

from __future__ import annotations

from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from typing import Any, NoReturn, Protocol

from ..record import AuditNote, ExperimentMeta, Notes, ResultEntry, StateRecord

__all__ = ["SlimEntry", "Store", "Survey"]


@dataclass
class Survey:
    """What a store holds, as one snapshot taken before a run: which states are committed
    (record and content), which have notes, which failed before."""

    stored: set[str] = field(default_factory=set)
    notes: set[str] = field(default_factory=set)
    failures: set[str] = field(default_factory=set)
    broken: set[str] = field(default_factory=set)


@dataclass
class SlimEntry:
    """Everything stored about one state except its content."""

    state_id: str
    record: StateRecord | None = None
    notes: Notes = field(default_factory=Notes)
    failure: StateRecord | None = None
    has_payload: bool = False


class Store(Protocol):
    """Where an experiment's states live.

    Attributes:
        location: How messages name the store (a folder's path, or ``<memory>``).
    """

    location: str

    # -- the experiment ---------------------------------------------------------------------

    def exists(self) -> bool:
        """Whether an experiment was stored here before."""
        ...

    def read_meta(self) -> ExperimentMeta:
        """The experiment's description.

        Raises:
            NotAnExperimentError: Nothing was stored here.
            FormatVersionError: A newer dagger wrote it.
        """
        ...

    def prepare(self, meta: ExperimentMeta) -> ExperimentMeta:
        """Create the store if needed and add ``meta.roots`` to the stored ones."""
        ...

    # -- states ------------------------------------------------------------------------------

    def survey(self) -> Survey:
        """Which states are stored, annotated, failed (one snapshot, before a run)."""
        ...

    def read_record(self, state_id: str) -> StateRecord | None:
        """A committed state's record, or None."""
        ...

    def has_record(self, state_id: str) -> bool:
        """Whether a state is committed now (another process may just have done it)."""
        ...

    def save(self, state_id: str, state: Any, record: StateRecord) -> StateRecord:
        """Store a state's content, then commit its record.

        Returns:
            The record now stored: this one, or the first writer's if another process
            committed the same state first.

        Raises:
            SerializationError: The state cannot be pickled (nothing is left behind).
        """
        ...

    def load(self, state_id: str, state_class: Any = None, map_location: Any = None) -> Any:
        """A committed state's content, unpickled.

        Raises:
            CorruptStateError: Its record or content is missing or damaged; it has been
                quarantined and counts as absent from now on.
        """
        ...

    def quarantine(self, state_id: str, reason: str) -> NoReturn:
        """Move a state's files aside, warn once, and raise CorruptStateError."""
        ...

    def write_failure(self, record: StateRecord) -> None:
        """Record why a state failed (replacing an earlier failure of it)."""
        ...

    def clear_failure(self, state_id: str) -> None:
        """Forget a failure (the state was computed since)."""
        ...

    # -- notes and results -------------------------------------------------------------------

    def read_notes(self, state_id: str) -> Notes:
        """Tags gained and results recorded after the state was stored (empty if none)."""
        ...

    def update_notes(
        self,
        state_id: str,
        *,
        tags: list[str] | tuple[str, ...] = (),
        results: dict[str, ResultEntry] | None = None,
        audit: AuditNote | None = None,
    ) -> Notes:
        """Merge tags, results and an audit's outcome into a state's notes (under its lock)."""
        ...

    def store_result(self, state_id: str, name: str, value: Any, code: str) -> ResultEntry:
        """Record a Function's result: inline if plain JSON, else as a side payload.

        Raises:
            SerializationError: The value cannot be pickled.
        """
        ...

    def load_result(self, entry: ResultEntry) -> Any:
        """The value of a recorded result.

        Raises:
            CorruptStateError: Its side payload is missing or damaged.
        """
        ...

    # -- concurrency and bulk ------------------------------------------------------------------

    def lock(self, state_id: str) -> AbstractContextManager[Any]:
        """The lock under which a state is computed or annotated (across processes)."""
        ...

    def batch(self) -> AbstractContextManager[Any]:
        """Group the writes of a run (the index is refreshed once at the end)."""
        ...

    def slim_entries(self) -> dict[str, SlimEntry]:
        """Every state's record, notes and failure (no content), for a restore."""
        ...

    def worker_spec(self) -> dict[str, Any] | None:
        """How a worker process opens this store (:func:`dagger.store.open_store`), or None
        if it cannot be reached from another process."""
        ...
