"""The Store protocol: the handful of operations the runner, the loader and the tree use.

Two implementations: :class:`~dagger.store.directory.DirectoryStore` (a folder, format 2:
append-only logs of checksummed entries) and :class:`~dagger.store.memory.MemoryStore` (dicts
in memory, for tests and throwaway experiments). Anything that implements these methods can hold
an experiment.

Errors: a store raises only :class:`~dagger.errors.DaggerError` subclasses:
:class:`~dagger.errors.CorruptStateError` for a state whose files are missing or damaged (it
has been quarantined) or that has no content to load, :class:`~dagger.errors.StoreError` for a
store that cannot be used (no space, no permission), :class:`~dagger.errors.SerializationError`
for a state that cannot be pickled.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from contextlib import AbstractContextManager
from typing import Any, NoReturn, Protocol

from ..record import AuditNote, ExperimentMeta, Notes, ResultEntry, StateRecord, Status
from .table import ResultSummary, SlimTable

__all__ = ["Store", "Survey"]


class Survey(Protocol):
    """What a plan asks a store about its states before a run (one snapshot; a
    :class:`~dagger.store.table.SlimTable` is one, and so is a store's catalog)."""

    def status_of(self, state_id: str) -> Status | None:
        """A state's status, or None if it is not in the store (or was removed)."""
        ...

    def statuses_of(self, state_ids: Iterable[str]) -> list[Status | None]:
        """:meth:`status_of` of each of these states, in order (one call for a whole plan)."""
        ...

    def tags_of(self, state_id: str) -> tuple[str, ...]:
        """The tags of a state's record and its notes."""
        ...

    def result_of(self, state_id: str, name: str) -> ResultSummary | None:
        """``(summary, code identity, failed, inline)`` of a recorded result, or None."""
        ...

    def latest_children(
        self, parent_ids: Iterable[str], per_class: int = ...
    ) -> dict[tuple[str, str], list[str]]:
        """The newest stored children of these parents, by ``(parent id, recipe class)``."""
        ...

    def same_params_children(
        self, queries: Sequence[tuple[str, str, Mapping[str, Any]]]
    ) -> list[str | None]:
        """For each ``(parent id, recipe class, params)``, the newest stored child of that
        parent made by that recipe class with those parameter values (any code), or None."""
        ...


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

    def forget_identities(self, schemes: Iterable[int]) -> ExperimentMeta:
        """Drop identity schemes of which no state is left from the experiment's description
        (this dagger's own scheme stays); returns the description now stored."""
        ...

    # -- states ------------------------------------------------------------------------------

    def survey(self) -> Survey:
        """What the store holds now, for a plan to check before a run (statuses, tags,
        result code identities): cheap, whatever the store's size."""
        ...

    def snapshot(self) -> SlimTable:
        """Every state's slim facts, in creation order: what a restored tree is made of."""
        ...

    def read_record(self, state_id: str) -> StateRecord | None:
        """A state's record (done, pruned or missing), or None."""
        ...

    def read_failure(self, state_id: str) -> StateRecord | None:
        """The record of a state's last failure if it failed after (or without) being
        stored, else None."""
        ...

    def has_record(self, state_id: str) -> bool:
        """Whether a state is stored with its content now (another process may just have
        stored it). Called under the state's lock before computing it."""
        ...

    def check(self, state_ids: Iterable[str]) -> dict[str, str]:
        """Which of these stored states lack their files at the recorded sizes (a stat each,
        no reads), with the reason for each. States not stored are left out."""
        ...

    def save(self, state_id: str, state: Any, record: StateRecord) -> StateRecord:
        """Store a state's content, then commit its record (the caller holds its lock).

        Returns:
            The record now stored: this one, or the first writer's if another process
            committed the same state first.

        Raises:
            SerializationError: The state cannot be pickled (nothing is left behind).
            StoreError: The store cannot be written.
        """
        ...

    def load(self, state_id: str, state_class: Any = None, map_location: Any = None) -> Any:
        """A committed state's content, unpickled.

        Raises:
            CorruptStateError: It has no content (absent, failed, pruned), or its content is
                missing or damaged: it has been quarantined and counts as absent from now on.
        """
        ...

    def quarantine(self, state_id: str, reason: str) -> NoReturn:
        """Set a state's content aside as unusable, warn once, and raise CorruptStateError."""
        ...

    def write_failure(self, record: StateRecord) -> None:
        """Record why a state failed (the caller holds its lock)."""
        ...

    def clear_failure(self, state_id: str) -> None:
        """Forget a failure (the state was computed since)."""
        ...

    def remove(self, state_ids: Iterable[str], *, descendants: bool = True) -> list[str]:
        """Remove states (with their subtrees by default); returns the ids removed.

        Raises:
            StateNotFoundError: An id is not a stored state.
            ExperimentDefinitionError: ``descendants=False`` and a state has children.
        """
        ...

    def prune(self, state_ids: Iterable[str]) -> list[str]:
        """Drop stored states' content, keeping their records (status ``pruned``); a later
        run recomputes one when it needs it. Returns the ids pruned."""
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

    def forget_result(self, state_id: str, name: str, reason: str) -> None:
        """Record that a state's result ``name`` cannot be loaded (its side payload is missing
        or damaged): it counts as failed, so the next run computes it again."""
        ...

    def result_problem(self, entry: ResultEntry) -> str | None:
        """Why a recorded result's side payload cannot be loaded (checked, not unpickled),
        or None: a run recomputes a result that has a problem."""
        ...

    # -- concurrency and bulk ------------------------------------------------------------------

    def lock(self, state_id: str) -> AbstractContextManager[Any]:
        """The lock under which a state is computed or annotated (across processes)."""
        ...

    def batch(self) -> AbstractContextManager[Any]:
        """A run: at its end everything written is made durable (group commit)."""
        ...

    def flush(self) -> None:
        """Make everything written so far durable."""
        ...

    def worker_spec(self) -> dict[str, Any] | None:
        """How a worker process opens this store (:func:`dagger.store.open_store`), or None
        if it cannot be reached from another process."""
        ...
