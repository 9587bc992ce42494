"""Curating a store: removing states, and pruning all but the best ones (issue 16, items 1-2).

The store does the writing (:meth:`~dagger.store.Store.remove` and
:meth:`~dagger.store.Store.prune`, each state under its lock, so that a run going on in the same
folder is never corrupted); this module decides *which* states, refuses what would be wrong
(orphaning children, a keep rule that names no column), counts the bytes, and reports.

Blobs: a removed or pruned state's payload file is deleted by the store; the blobs it referred
to may be shared with other states, so they are collected afterwards by
:func:`dagger.store.maintenance.gc` (the same collection as ``dagger gc``: it keeps files that a
run going on at the same time may be about to refer to, and collects them on a later ``gc``).
The report counts, as freed, the payload files deleted and the blobs that no remaining state
refers to and that are gone afterwards; a blob that gc had to keep is reported as left for a
later ``dagger gc``.

Keep rules (``prune``): ``"top K by COLUMN"`` or ``"bottom K by COLUMN"``, where COLUMN is a
column of ``dagger ls`` / ``tree.nodes.to_dataframe()`` (``result.evaluate.accuracy``,
``param.lr``). Only states with a numeric value in COLUMN compete; ties keep the state stored
first. With ``per=COLUMN2`` the rule applies within each group of equal COLUMN2 values; a state
without a COLUMN2 value takes its nearest ancestor's (a ``Finetune`` below a ``Prune(method=...)``
belongs to that method's group).
"""

from __future__ import annotations

import contextlib
import math
import numbers
import re
from collections.abc import Collection, Iterable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

from .errors import (
    ColumnNotFoundError,
    ExperimentDefinitionError,
    InvalidArgumentError,
    InvalidQueryError,
)
from .nodeset import suggest
from .record import IDENTITY_VERSION, INLINE, Status
from .store import DirectoryStore, Store
from .store.table import SlimTable

if TYPE_CHECKING:
    import pandas

__all__ = [
    "CuratedState",
    "CurationReport",
    "KeepRule",
    "choose_best",
    "identities_left",
    "parse_keep",
    "prune",
    "removal_order",
    "remove",
    "select",
]

_RULE = re.compile(r"^\s*(top|bottom)\s+(\S+)\s+by\s+(\S+)\s*$", re.IGNORECASE)
_EXAMPLE = '"top 3 by result.evaluate.accuracy" or "bottom 1 by result.loss"'


@dataclass(frozen=True)
class KeepRule:
    """A parsed keep expression: the ``k`` states with the highest (``top``) or lowest
    (``bottom``) value in ``column``."""

    direction: Literal["top", "bottom"]
    k: int
    column: str

    def __str__(self) -> str:
        return f"{self.direction} {self.k} by {self.column}"


def parse_keep(text: str) -> KeepRule:
    """Parse ``"top K by COLUMN"`` or ``"bottom K by COLUMN"`` (case-insensitive keywords).

    Raises:
        InvalidArgumentError: The text has another shape, or K is not a whole number >= 1.
    """
    found = _RULE.match(text)
    if found is None:
        raise InvalidArgumentError(
            f"The keep rule {text!r} is not of the form 'top K by COLUMN' or 'bottom K by "
            f"COLUMN'; write for example {_EXAMPLE} (COLUMN as `dagger ls DIR` names it).",
            value=text,
        )
    direction, count, column = found.groups()
    try:
        k = int(count)
    except ValueError:
        k = 0
        valid = False
    else:
        valid = k >= 1
    if not valid:
        raise InvalidArgumentError(
            f"The keep rule {text!r} keeps {count!r} states; K must be a whole number of at "
            f"least 1, as in {_EXAMPLE}.",
            value=text,
        )
    return KeepRule("top" if direction.lower() == "top" else "bottom", k, column)


@dataclass(frozen=True)
class CuratedState:
    """One state a removal or a prune touched (or would touch, on a dry run).

    Attributes:
        id: Its full id (64 hex digits).
        recipe: The recipe that made it with its parameters (``Train(lr=0.1)``; ``root`` for
            a root).
        status: Its status before the operation (``done``, ``failed``, ``pruned``, ...).
    """

    id: str
    recipe: str
    status: str

    def __str__(self) -> str:
        return f"{self.id[:12]}  {self.status:<7} {self.recipe}"


@dataclass
class CurationReport:
    """What ``remove`` or ``prune`` did, or would do on a dry run; ``print()`` it.

    Attributes:
        action: ``"remove"`` or ``"prune"``.
        location: The store.
        dry_run: Nothing was written.
        states: The states removed (parents before children) or pruned.
        kept: ``prune`` only: the states its rule or list chose (their ancestors are kept too).
        ancestors: ``prune`` only: how many ancestors of the chosen states are kept.
        rule: ``prune`` only: the keep rule, as text.
        payload_bytes: Bytes of the payload files deleted (would be, on a dry run).
        log_bytes: Bytes of small payloads kept inside the store's log (not counted as
            freed): reclaimed when ``gc`` compacts the log, with no run going on.
        blob_bytes: Bytes of blobs that no remaining state refers to and that are gone
            (would be, on a dry run).
        blob_bytes_left: Bytes of such blobs still on disk (``gc`` kept them because a run is
            going on, or refused because of damaged entries): ``dagger gc DIR`` collects them.
        notes: Further remarks (states without a value in the rule's column, ...).
    """

    action: Literal["remove", "prune"]
    location: str
    dry_run: bool
    states: list[CuratedState] = field(default_factory=list)
    kept: list[CuratedState] = field(default_factory=list)
    ancestors: int = 0
    rule: str | None = None
    payload_bytes: int = 0
    log_bytes: int = 0
    blob_bytes: int = 0
    blob_bytes_left: int = 0
    notes: list[str] = field(default_factory=list)

    @property
    def ids(self) -> list[str]:
        """The ids removed or pruned."""
        return [state.id for state in self.states]

    @property
    def bytes_freed(self) -> int:
        """Payload files and blobs freed (would be, on a dry run), in bytes."""
        return self.payload_bytes + self.blob_bytes

    def __str__(self) -> str:
        verb = {"remove": "remove", "prune": "prune"}[self.action]
        done = {"remove": "removed", "prune": "pruned"}[self.action]
        lines: list[str] = []
        if self.action == "prune":
            lines.append(
                f"keeping {len(self.kept)} state(s)"
                + (f" ({self.rule})" if self.rule else "")
                + f" and their {self.ancestors} ancestor(s):"
            )
            lines += [f"  {state}" for state in self.kept]
        head = f"would {verb}" if self.dry_run else done
        lines.append(f"{head} {len(self.states)} state(s) in {self.location}:")
        lines += [f"  {state}" for state in self.states]
        if not self.states:
            lines[-1] = f"{'would ' + verb if self.dry_run else done} nothing in {self.location}."
        freed = "would free" if self.dry_run else "freed"
        lines.append(
            f"{freed} {_size(self.bytes_freed)}: {_size(self.payload_bytes)} of payload files, "
            f"{_size(self.blob_bytes)} of blobs no remaining state refers to"
            + (" (collected by gc)" if not self.dry_run and self.blob_bytes else "")
            + "."
        )
        if self.log_bytes:
            lines.append(
                f"{_size(self.log_bytes)} of small payloads inside the store's log are "
                "reclaimed when `dagger gc DIR` compacts it."
            )
        if self.blob_bytes_left:
            lines.append(
                f"{_size(self.blob_bytes_left)} of blobs nothing refers to any more are still "
                "on disk (a run is going on, or the store has damaged entries): `dagger gc DIR` "
                "collects them later."
            )
        if self.action == "prune" and self.states:
            lines.append(
                "Pruned states keep their records (status pruned): tables, lineage and "
                "drawings still show them, and a run recomputes one when it needs it."
            )
        if self.dry_run:
            lines.append("Dry run: nothing was changed.")
        lines += self.notes
        return "\n".join(lines)


def _size(count: int) -> str:
    value = float(count)
    for unit in ("bytes", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{count} bytes" if unit == "bytes" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{count} bytes"  # pragma: no cover - the loop always returns


def _describe(table: SlimTable, row: int) -> CuratedState:
    info = table.recipe_info(row)
    return CuratedState(
        table.ids[row], "root" if info is None else str(info), str(table.status[row])
    )


# -- removing ------------------------------------------------------------------------------------


def removal_order(table: SlimTable, state_ids: Sequence[str], *, descendants: bool) -> list[str]:
    """The states a removal takes: each one and (with ``descendants``) its subtree, parents
    before children.

    Args:
        table: The store's snapshot.
        state_ids: Full ids of states in ``table``.
        descendants: Take the subtrees; False refuses a state with children.

    Raises:
        ExperimentDefinitionError: ``descendants`` is False and a state has children that
            are not removed with it.
    """
    children = table.children()
    wanted = set(state_ids)
    if not descendants:
        for state_id in state_ids:
            row = table.row_of[state_id]
            orphans = [table.ids[child] for child in children[row]]
            orphans = [child for child in orphans if child not in wanted]
            if orphans:
                raise ExperimentDefinitionError(
                    f"State {state_id[:12]} ({table.recipe_name(row) or 'root'}) has "
                    f"{len(orphans)} child state(s) ({', '.join(c[:12] for c in orphans[:5])}"
                    f"{', ...' if len(orphans) > 5 else ''}); removing it alone would orphan "
                    f"them. Nothing was removed. Remove its subtree (descendants=True; `dagger rm` "
                    "without --no-descendants), or name its children too.",
                    state_id=state_id,
                )
    order: list[str] = []
    seen: set[int] = set()
    for state_id in state_ids:
        stack = [table.row_of[state_id]]
        while stack:
            row = stack.pop()
            if row in seen:
                continue
            seen.add(row)
            order.append(table.ids[row])
            if descendants:
                stack.extend(reversed(children[row]))
    # Parents before children even when a child was named before its parent.
    depth = table.depths()
    position = {state_id: index for index, state_id in enumerate(order)}
    order.sort(key=lambda state_id: (depth[table.row_of[state_id]], position[state_id]))
    return order


def remove(
    store: Store,
    table: SlimTable,
    state_ids: Sequence[str],
    *,
    descendants: bool = True,
    dry_run: bool = False,
) -> CurationReport:
    """Remove states (with their subtrees by default) through the store, and report.

    Args:
        store: The store (a format-1 folder must have been converted by the caller).
        table: Its snapshot, from which ``state_ids`` were resolved.
        state_ids: Full ids of the states to remove.
        descendants: Also remove their subtrees; False refuses to orphan children.
        dry_run: Only report what would be removed and freed.

    Raises:
        ExperimentDefinitionError: ``descendants`` is False and a state has children.
    """
    order = removal_order(table, state_ids, descendants=descendants)
    report = CurationReport("remove", store.location, dry_run)
    report.states = [_describe(table, table.row_of[state_id]) for state_id in order]
    blobs = _account(store, table, set(order), report)
    if dry_run or not order:
        return report
    with _batch(store):
        if descendants:
            # The store takes each subtree again under its locks: a child a run going on
            # adds meanwhile goes with its parent instead of being orphaned.
            removed = store.remove(order, descendants=True)
        else:
            # Children first, each on its own: the store refuses (orphaning nothing) if a run
            # going on gave one of them a child meanwhile.
            removed = []
            for state_id in reversed(order):
                removed += store.remove([state_id], descendants=False)
    described = {state.id: state for state in report.states}
    rank = {state_id: index for index, state_id in enumerate(order)}
    report.states = [
        # A child that a run going on stored meanwhile went with its parent: after the others.
        described.get(state_id, CuratedState(state_id, "(stored during the removal)", "done"))
        for state_id in sorted(removed, key=lambda state_id: rank.get(state_id, len(order)))
    ]
    _collect(store, blobs, report)
    return report


# -- pruning -------------------------------------------------------------------------------------


def choose_best(
    frame: pandas.DataFrame, rule: KeepRule, per: str | None = None
) -> tuple[list[str], list[str]]:
    """The ids of the states a keep rule chooses, and remarks for the report.

    Args:
        frame: ``tree.nodes.to_dataframe()`` of the store's states (columns ``id``,
            ``parent``, ``param.*``, ``result.*``, ...).
        rule: The parsed rule.
        per: A column to group by (the rule applies within each group); a state without a
            value there takes its nearest ancestor's.

    Returns:
        The chosen ids (best first within each group), and remarks.

    Raises:
        ColumnNotFoundError: ``rule.column`` or ``per`` is not a column of the table.
        InvalidQueryError: ``rule.column`` holds a value that is not a number.
    """
    _check_column(frame, rule.column, "The keep rule's column")
    if per is not None:
        _check_column(frame, per, "The per column")
    values: dict[str, float] = {}
    for state_id, value in zip(frame["id"], frame[rule.column], strict=True):
        if _missing(value):
            continue
        if not _number(value):
            raise InvalidQueryError(
                f"The column {rule.column!r} holds {value!r} (a {type(value).__name__}) for "
                f"state {str(state_id)[:12]}; a keep rule needs numbers. Choose a numeric "
                "column of `dagger ls DIR`, or record the metric as a number.",
                column=rule.column,
                value=repr(value),
            )
        if math.isnan(float(value)):
            continue
        values[str(state_id)] = float(value)
    notes = []
    without = len(frame) - len(values)
    if without:
        notes.append(
            f"{without} state(s) have no value in {rule.column}: they never count as the "
            "best (their ancestors and descendants still can)."
        )
    groups: dict[Any, list[str]] = {}
    if per is None:
        groups[None] = list(values)
    else:
        own = dict(zip(frame["id"].map(str), frame[per], strict=True))
        parent = dict(zip(frame["id"].map(str), frame["parent"], strict=True))
        for state_id in values:
            cursor: Any = state_id
            key: Any = None
            while cursor is not None and not _missing(cursor) and cursor in own:
                if not _missing(own[cursor]):
                    key = own[cursor]
                    break
                cursor = parent[cursor]
            groups.setdefault(_hashable(key), []).append(state_id)
        if None in groups:
            notes.append(
                f"{len(groups[None])} state(s) with a value have no {per} (nor an ancestor "
                "with one): they form a group of their own."
            )
    chosen: list[str] = []
    sign = -1.0 if rule.direction == "top" else 1.0
    for members in groups.values():
        # Stable: ties keep the state stored first (the table's order).
        ranked = sorted(members, key=lambda state_id: sign * values[state_id])
        chosen += ranked[: rule.k]
    return chosen, notes


def _check_column(frame: pandas.DataFrame, column: str, what: str) -> None:
    if column in frame.columns:
        return
    known = [str(name) for name in frame.columns if str(name) not in ("tags",)]
    raise ColumnNotFoundError(
        f"{what} {column!r} is not a column of this experiment's table"
        f"{suggest(column, known)}. Columns here (as `dagger ls DIR` shows them): "
        f"{', '.join(known)}.",
        column=column,
    )


def _missing(value: Any) -> bool:
    """Whether a table cell is empty (None, NaN, pandas' NA)."""
    if value is None:
        return True
    if isinstance(value, list | tuple | dict | set | str | bytes):
        return False
    import pandas

    try:
        return bool(pandas.isna(value))
    except (TypeError, ValueError):  # an array-like cell: not a missing scalar
        return False


def _number(value: Any) -> bool:
    # numpy's bool_ is no numbers.Real; Python's bool is, and is not a metric either.
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def _hashable(value: Any) -> Any:
    try:
        hash(value)
    except TypeError:
        return repr(value)
    item = getattr(value, "item", None)
    return item() if callable(item) and getattr(value, "ndim", None) == 0 else value


def prune(
    store: Store,
    table: SlimTable,
    chosen: Sequence[str],
    *,
    dry_run: bool = False,
    rule: str | None = None,
    notes: Iterable[str] = (),
    scope: Collection[str] | None = None,
) -> CurationReport:
    """Keep ``chosen`` and all their ancestors; prune the payload of every other stored state
    (of ``scope`` only, when given; states outside it are left as they are).

    Args:
        store: The store (a format-1 folder must have been converted by the caller).
        table: Its snapshot.
        chosen: Full ids of the states to keep.
        dry_run: Only report.
        rule: The keep rule, for the report.
        notes: Remarks for the report.
        scope: The ids that may be pruned (None: every state of the store).
    """
    kept: set[str] = set()
    for state_id in chosen:
        row: int | None = table.row_of[state_id]
        while row is not None and row >= 0 and table.ids[row] not in kept:
            kept.add(table.ids[row])
            row = table.parent[row]
    targets = [
        state_id
        for state_id, status in zip(table.ids, table.status, strict=True)
        if status is Status.DONE and state_id not in kept and (scope is None or state_id in scope)
    ]
    notes = list(notes)
    idle = [state_id for state_id in chosen if table.status_of(state_id) is not Status.DONE]
    if idle:
        shown = ", ".join(f"{state_id[:12]} {table.status_of(state_id)}" for state_id in idle[:5])
        notes.append(
            f"{len(idle)} of the states kept have no stored content ({shown}"
            f"{', ...' if len(idle) > 5 else ''}): keeping them changes nothing; a run computes "
            "one again when it needs it."
        )
    report = CurationReport("prune", store.location, dry_run, rule=rule, notes=notes)
    report.kept = [_describe(table, table.row_of[state_id]) for state_id in chosen]
    report.ancestors = len(kept) - len(set(chosen))
    report.states = [_describe(table, table.row_of[state_id]) for state_id in targets]
    blobs = _account(store, table, set(targets), report)
    if dry_run or not targets:
        return report
    with _batch(store):
        pruned = set(store.prune(targets))
    # A state another process removed or pruned meanwhile was not pruned by this one.
    report.states = [state for state in report.states if state.id in pruned]
    _collect(store, blobs, report)
    return report


# -- bytes ---------------------------------------------------------------------------------------


def _account(
    store: Store, table: SlimTable, targets: set[str], report: CurationReport
) -> dict[str, int]:
    """Count the payload files of ``targets``; return the blobs (digest -> bytes) that only
    they refer to."""
    target_blobs: dict[str, int] = {}
    for state_id in targets:
        record = store.read_record(state_id)
        if record is None or table.status_of(state_id) is not Status.DONE:
            continue  # a failed or pruned state has no content left
        if record.payload is not None:
            if record.payload.file == INLINE:
                report.log_bytes += record.payload.size
            else:
                report.payload_bytes += record.payload.size
        target_blobs.update(record.blobs)
    if target_blobs:
        for state_id in table.ids_of(Status.DONE):
            if state_id in targets:
                continue
            record = store.read_record(state_id)
            if record is not None:
                for digest in record.blobs:
                    target_blobs.pop(digest, None)
            if not target_blobs:
                break
    report.blob_bytes = sum(target_blobs.values())
    return target_blobs


@contextlib.contextmanager
def _batch(store: Store) -> Any:
    # A batch ends by closing this process's log, so that gc afterwards can tell that no run
    # of this process is going on (and may compact the logs).
    with store.batch():
        yield


def _collect(store: Store, blobs: dict[str, int], report: CurationReport) -> None:
    """Collect the blobs nothing refers to any more (gc), and count those still there."""
    if not isinstance(store, DirectoryStore):
        return  # an in-memory store holds no blob files
    from .store.maintenance import gc

    if blobs:
        gc(store)
    left = sum(size for digest, size in blobs.items() if store.blobs.path(digest).exists())
    report.blob_bytes -= left
    report.blob_bytes_left = left


# -- choosing what to remove (the command line's filters) ----------------------------------------


def select(
    store: Store,
    table: SlimTable,
    *,
    tag: str | None = None,
    failed: bool = False,
    identity: int | None = None,
) -> list[str]:
    """The ids of the states matching any of the filters given, in the table's order.

    Args:
        store: The store (records are read for ``identity``).
        table: Its snapshot.
        tag: A glob (:func:`fnmatch.fnmatchcase`) that one of a state's tags matches.
        failed: States whose last computation failed.
        identity: States whose ids were computed by this identity scheme
            (:attr:`dagger.record.StateRecord.identity`; 1 for states stored before scheme 2).
    """
    import fnmatch

    if identity is not None and identity >= IDENTITY_VERSION:
        raise InvalidArgumentError(
            f"identity={identity}: scheme {IDENTITY_VERSION} is the one this dagger computes "
            "ids with, so its states are the ones runs reuse; removing by identity is for "
            f"older schemes ({', '.join(map(str, range(1, IDENTITY_VERSION)))}). Nothing was "
            "removed. To empty the store, remove its folder.",
            identity=identity,
        )
    chosen = []
    for row, state_id in enumerate(table.ids):
        if (
            (failed and table.status[row] is Status.FAILED)
            or (tag is not None and any(fnmatch.fnmatchcase(t, tag) for t in table.tags[row]))
            or (identity is not None and _identity_of(store, table, row) == identity)
        ):
            chosen.append(state_id)
    return chosen


def _identity_of(store: Store, table: SlimTable, row: int) -> int | None:
    state_id = table.ids[row]
    record = store.read_record(state_id) or store.read_failure(state_id)
    return None if record is None else record.identity


def identities_left(store: Store, table: SlimTable) -> set[int]:
    """The identity schemes of the states a store holds (one record read per state)."""
    found = {_identity_of(store, table, row) for row in range(len(table))}
    return {scheme for scheme in found if scheme is not None}
