"""SlimTable: everything a store knows about its states except their content, as columns.

A restored tree starts from one snapshot of the store (``store.snapshot()``). For a tree of
100,000 states nothing per state is built beyond these columns: a slim state, a record or a
notes object is made only when someone asks for that state (``record(row)``, ``notes(row)``,
which read through to the store).

Rows hold the *visible* states: computed (``done``), failed, pruned and missing ones; removed
states and ids known only as someone's parent are not rows. Row order is the store's creation
order (``seq``, ties broken by id).
"""

from __future__ import annotations

import contextlib
import gc
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from ..record import Notes, RecipeInfo, StateRecord, Status

__all__ = ["ResultSummary", "SlimTable", "paused_gc"]


@contextlib.contextmanager
def paused_gc() -> Iterator[None]:
    """Pause the cyclic garbage collector while many objects are made at once (a catalog
    read from an index, a table, a tree's states, a table's columns).

    None of them forms a reference cycle, and every full collection that their number would
    trigger traverses every object already there: at 100,000 states, the collector took more
    time than the work. Reference counting frees memory as usual meanwhile.
    """
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


#: ``(summary, code identity, failed, inline)`` of one recorded Function result: the value
#: (plain JSON) or its short repr, the Function's code when it ran, whether it failed, and
#: whether the value is the summary itself.
ResultSummary = tuple[Any, str, bool, bool]


@dataclass
class SlimTable:
    """A snapshot of a store's slim facts, one row per visible state.

    Attributes:
        ids: Each row's state id.
        parent: The parent's row (-1 for a root, or a parent that is not in the table).
        parent_id: The parent's id as recorded (None for a root).
        root: Whether the state is a root.
        seq: Its creation sequence number (rows are in this order).
        status: :class:`~dagger.record.Status` of each row.
        recipe: Index into :attr:`recipes` (-1 for a root).
        recipes: ``(class name, module, code identity)`` of each distinct recipe.
        params: The recipe's parameters (JSON-safe), by row (empty for roots).
        tags: Tags of the record and tags gained since, merged, by row.
        properties: The state class's PROPERTIES values, by row (shared between rows).
        seconds: Wall time of the recipe, by row (None if not recorded).
        created: When the state was computed (ISO 8601), by row.
        environment: The environment it was computed in (the record's ``environment``), by
            row; shared between rows; None where not recorded (failed states, records
            written before dagger recorded it).
        results: Recorded Function results by name (see :data:`ResultSummary`), or None.
        extras: By row, the facts of the notes few states have: ``audit`` (the outcome of
            the last audit) and ``mutated`` (result name -> the attribute paths its Function
            changed).
        reader: Reads a state's full record and notes from the store, by id (None for a
            table that was not made by a store).
    """

    ids: list[str] = field(default_factory=list)
    parent: list[int] = field(default_factory=list)
    parent_id: list[str | None] = field(default_factory=list)
    root: list[bool] = field(default_factory=list)
    seq: list[int] = field(default_factory=list)
    status: list[Status] = field(default_factory=list)
    recipe: list[int] = field(default_factory=list)
    recipes: list[tuple[str, str, str]] = field(default_factory=list)
    params: list[dict[str, Any]] = field(default_factory=list)
    tags: list[tuple[str, ...]] = field(default_factory=list)
    properties: list[dict[str, Any]] = field(default_factory=list)
    seconds: list[float | None] = field(default_factory=list)
    created: list[str] = field(default_factory=list)
    environment: list[dict[str, Any] | None] = field(default_factory=list)
    results: list[dict[str, ResultSummary] | None] = field(default_factory=list)
    extras: dict[int, dict[str, Any]] = field(default_factory=dict)
    reader: Any = None
    _row_of: dict[str, int] | None = None

    def __len__(self) -> int:
        return len(self.ids)

    @property
    def row_of(self) -> dict[str, int]:
        """Row by state id."""
        if self._row_of is None:
            self._row_of = dict(zip(self.ids, range(len(self.ids)), strict=True))
        return self._row_of

    def row(self, state_id: str) -> int | None:
        """The row of a state, or None if the table has no such (visible) state."""
        return self.row_of.get(state_id)

    # -- what a plan asks -----------------------------------------------------------------------

    def status_of(self, state_id: str) -> Status | None:
        """A state's status, or None if it is not in the store (or was removed)."""
        row = self.row_of.get(state_id)
        return None if row is None else self.status[row]

    def statuses_of(self, state_ids: Iterable[str]) -> list[Status | None]:
        """:meth:`status_of` of each of these states, in order."""
        status = self.status
        return [None if row is None else status[row] for row in map(self.row_of.get, state_ids)]

    def ids_of(self, *statuses: Status) -> list[str]:
        """The ids of the states with one of these statuses, in creation order."""
        wanted = set(statuses)
        return [
            state_id
            for state_id, status in zip(self.ids, self.status, strict=True)
            if status in wanted
        ]

    def tags_of(self, state_id: str) -> tuple[str, ...]:
        row = self.row_of.get(state_id)
        return () if row is None else self.tags[row]

    def result_of(self, state_id: str, name: str) -> ResultSummary | None:
        """The recorded result ``name`` of a state, or None."""
        row = self.row_of.get(state_id)
        if row is None:
            return None
        results = self.results[row]
        return None if results is None else results.get(name)

    # -- what a tree asks -----------------------------------------------------------------------

    def recipe_info(self, row: int) -> RecipeInfo | None:
        """The recipe of a row as its record describes it (None for a root)."""
        index = self.recipe[row]
        if index < 0:
            return None
        name, module, code = self.recipes[index]
        return RecipeInfo(name, module, self.params[row], code)

    def recipe_name(self, row: int) -> str | None:
        index = self.recipe[row]
        return None if index < 0 else self.recipes[index][0]

    def record(self, row: int) -> StateRecord | None:
        """The full record of a row's state (its failure record for a failed state)."""
        if self.reader is None:
            return None
        state_id = self.ids[row]
        if self.status[row] is Status.FAILED:
            return self.reader.read_failure(state_id) or self.reader.read_record(state_id)
        return self.reader.read_record(state_id) or self.reader.read_failure(state_id)

    def notes(self, row: int) -> Notes:
        """The notes of a row's state (tags gained, full result entries)."""
        if self.reader is None:
            return Notes()
        notes: Notes = self.reader.read_notes(self.ids[row])
        return notes

    def loader(self) -> Callable[[Any], Any] | None:
        """What loads a side-payload result of this store (None without a store)."""
        return None if self.reader is None else self.reader.load_result

    def damage_noter(self, row: int) -> Callable[[str, Exception], None] | None:
        """What a row's Results call when a result's side payload turns out damaged."""
        if self.reader is None:
            return None
        reader, state_id = self.reader, self.ids[row]

        def note(name: str, error: Exception) -> None:
            try:
                reader.forget_result(state_id, name, str(error))
            except Exception:  # a read-only folder: the error is raised to the caller anyway
                return

        return note

    def children(self) -> list[list[int]]:
        """Each row's child rows, in row (creation) order."""
        children: list[list[int]] = [[] for _ in self.ids]
        for row, parent in enumerate(self.parent):
            if parent >= 0:
                children[parent].append(row)
        return children

    def depths(self) -> list[int]:
        """Each row's distance from its root (a state whose parent is not in the table counts
        as a root)."""
        depth = [-1] * len(self.ids)
        parent = self.parent
        # Rows are in creation order, so a parent almost always comes before its children:
        # one pass settles those; the others (a parent recomputed after its child) follow.
        later = []
        for row, up in enumerate(parent):
            if up < 0:
                depth[row] = 0
            elif up < row and depth[up] >= 0:
                depth[row] = depth[up] + 1
            else:
                later.append(row)
        for row in later:
            if depth[row] >= 0:
                continue
            path: list[int] = []
            seen: set[int] = set()
            cursor = row
            while cursor >= 0 and depth[cursor] < 0 and cursor not in seen:
                path.append(cursor)
                seen.add(cursor)
                cursor = parent[cursor]
            # A cycle cannot be written (ids are hashes of parents); if one is read, its
            # first state counts as a root rather than looping forever.
            level = depth[cursor] + 1 if cursor >= 0 and depth[cursor] >= 0 else 0
            for item in reversed(path):
                depth[item] = level
                level += 1
        return depth


def summaries(results: Mapping[str, Any]) -> dict[str, ResultSummary]:
    """:data:`ResultSummary` of every entry of a Notes' results."""
    return {
        name: (entry.summary(), entry.code, entry.failed, entry.inline)
        for name, entry in results.items()
    }
