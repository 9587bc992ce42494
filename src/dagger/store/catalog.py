"""The catalog: what a store's entries say about each state, merged, in columns.

A store's entries (records, failures, notes, markers; see :mod:`dagger.record`) arrive in any
order: several logs, read one after the other, and each log read in pieces as it grows. The
catalog keeps, for each state, the entry of each kind with the highest ``seq``, so applying an
entry twice, or entries out of order, gives the same result. What the state *is* follows:

* a ``removed`` marker newer than its record and failure hides the state (and its notes);
* a failure newer than its record: the state is ``failed``;
* a record: ``done``, unless a newer ``pruned`` or ``quarantined`` marker says that its
  payload was dropped (``pruned``) or found missing or damaged (``missing``).

Everything is kept in parallel lists indexed by row (one row per id ever mentioned, a parent's
included), so that 100,000 states cost 100,000 list items per column, not 100,000 objects, and
a snapshot (:meth:`Catalog.snapshot`) or an index (:meth:`Catalog.to_index`) copies lists.
"""

from __future__ import annotations

import itertools
import json
import operator
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

from ..record import Marker, Notes, StateRecord, Status
from .table import ResultSummary, SlimTable, paused_gc

__all__ = [
    "INDEX_SECTIONS",
    "NO_LOG",
    "PAYLOAD_FILE",
    "PAYLOAD_INLINE",
    "PAYLOAD_NONE",
    "Catalog",
]

NO_LOG = -1
PAYLOAD_NONE, PAYLOAD_INLINE, PAYLOAD_FILE = 0, 1, 2
_MARKS = {"removed": 1, "pruned": 2, "quarantined": 3}
_REMOVED, _PRUNED, _QUARANTINED = 1, 2, 3
_EMPTY: dict[str, Any] = {}

# Columns that hold one plain value per row (copied as they are into an index), and what a
# new row holds in each (Catalog.ensure).
_NEW_ROW: dict[str, Any] = {
    "parent": -1,
    "root": False,
    "rseq": -1,
    "rlog": NO_LOG,
    "roff": -1,
    "fseq": -1,
    "flog": NO_LOG,
    "foff": -1,
    "nseq": -1,
    "nlog": NO_LOG,
    "noff": -1,
    "mseq": -1,
    "mark": 0,
    "dseq": -1,
    "recipe": -1,
    "params": _EMPTY,
    "rtags": 0,
    "props": -1,
    "created": "",
    "seconds": None,
    "pkind": PAYLOAD_NONE,
    "psize": 0,
    "blobs": -1,
    "ntags": 0,
    "results": None,
    "env": -1,
}
_COLUMNS = tuple(_NEW_ROW)


# Integer columns: in an index, a column that mostly holds one value (-1: no failure, no
# notes, no marker; the one log most entries are in) is stored as that value and the
# exceptions, which makes the index a third smaller and faster to read.
_INT_COLUMNS = frozenset(
    {
        "parent",
        "rseq",
        "rlog",
        "roff",
        "fseq",
        "flog",
        "foff",
        "nseq",
        "nlog",
        "noff",
        "mseq",
        "mark",
        "dseq",
        "recipe",
        "rtags",
        "props",
        "pkind",
        "psize",
        "blobs",
        "ntags",
        "env",
    }
)

# Columns an index stores packed: the integer ones and the root flags (mostly False). The
# Function results are packed around None (most states have none; they cannot be hashed).
_PACKED_COLUMNS = _INT_COLUMNS | {"root"}

#: What an index keeps in sections of their own (see :mod:`dagger.store.index`), each decoded
#: the first time it is used: the state ids (decoded at once: they number the rows), every
#: per-row column and the per-row maps. The rest (interned values, positions) is the head.
INDEX_SECTIONS = ("ids", *_COLUMNS, "pfile", "mreason", "extras", "values")


_SAMPLED = object()  # _packed: find the usual value from a sample


def _packed(column: list[Any], usual: Any = _SAMPLED, *, steps: bool = False) -> Any:
    """A column as ``{"usual": value, "rows": [...], "values": [...]}`` (the usual value and
    the exceptions) when at most a third of its rows differ from the usual value; else, with
    ``steps``, as ``{"start": first, "runs": [step, count, step, count, ...]}`` (runs of equal
    differences between neighbours: sequence numbers, a parent's children in a row) when they
    are few; else as it is.

    Args:
        column: One value per row.
        usual: The value most rows hold; by default the most common one of a sample (the
            values must then be hashable).
        steps: Whether runs of steps may stand for the column (integers only).
    """
    if len(column) < 64:
        return column
    if usual is _SAMPLED:
        counts: dict[Any, int] = {}
        for value in column[:: max(1, len(column) // 256)]:  # a sample finds the usual value
            counts[value] = counts.get(value, 0) + 1
        usual = max(counts, key=counts.__getitem__)
    rows = [row for row, value in enumerate(column) if value != usual]
    if len(rows) * 3 <= len(column):
        return {"usual": usual, "rows": rows, "values": [column[row] for row in rows]}
    if steps:
        differences = list(map(operator.sub, column[1:], column[:-1]))
        if sum(map(operator.ne, differences[1:], differences[:-1])) * 6 <= len(column):
            runs: list[int] = []
            for step, group in itertools.groupby(differences):
                runs += (step, sum(1 for _ in group))
            return {"start": column[0], "runs": runs}
    return column


def _unpacked(packed: Any, count: int) -> list[Any]:
    """The column :func:`_packed` wrote (any form), of ``count`` rows.

    Raises:
        KeyError, TypeError, ValueError, IndexError: It is no such form, or not of ``count``
            rows.
    """
    if isinstance(packed, dict) and "runs" in packed:
        start, runs = packed["start"], packed["runs"]
        if type(start) is not int or not all(type(number) is int for number in runs):
            raise ValueError("runs of steps that are not integers")
        steps = itertools.chain.from_iterable(map(itertools.repeat, runs[::2], runs[1::2]))
        packed = list(itertools.accumulate(steps, initial=start))
    elif isinstance(packed, dict):
        column = [packed["usual"]] * count
        for row, value in zip(packed["rows"], packed["values"], strict=True):
            if row < 0:
                raise ValueError("a negative row")
            column[row] = value
        packed = column
    if not isinstance(packed, list) or len(packed) != count:
        raise ValueError(f"not a list of {count} rows")
    return packed


#: Statuses of the stored states a run compares a state it computes with (both have a record).
_SIBLING_STATUSES = (Status.DONE, Status.PRUNED)


def _params_key(params: Mapping[str, Any]) -> str:
    """The text two recipes' JSON-safe parameters are compared by (exact: ``1`` is not
    ``1.0``; a value JSON cannot write compares by its ``repr``)."""
    return json.dumps(params, sort_keys=True, default=repr)


def _loose_key(params: Mapping[str, Any]) -> Any:
    """A cheap stand-in for :func:`_params_key` that equal parameters share (and, rarely,
    unequal ones: ``1`` and ``1.0``); the exact text for values that cannot be hashed."""
    try:
        return frozenset(params.items())
    except TypeError:  # a list or dict value
        return _params_key(params)


class Catalog:
    """The merged view of a store's entries (see the module docstring).

    Attributes:
        max_seq: The highest ``seq`` seen: a writer numbers its next entry above it.
        positions: For each log read, how many of its bytes have been read.
        damage: ``(log, offset, length, reason)`` of every damaged range met.
        shared: Shared parts of records, by key.
        values: ``sha256 -> (log, offset, size)`` of Function results kept in the logs.
    """

    def __init__(self) -> None:
        self.ids: list[str] = []
        self.row_of: dict[str, int] = {}
        self.parent: list[int] = []
        self.root: list[bool] = []
        # the latest record, failure and notes entries: seq, log number, offset
        self.rseq: list[int] = []
        self.rlog: list[int] = []
        self.roff: list[int] = []
        self.fseq: list[int] = []
        self.flog: list[int] = []
        self.foff: list[int] = []
        self.nseq: list[int] = []
        self.nlog: list[int] = []
        self.noff: list[int] = []
        # the latest marker
        self.mseq: list[int] = []
        self.mark: list[int] = []
        self.mreason: dict[int, str] = {}
        # the description, from the newest of record and failure
        self.dseq: list[int] = []
        self.recipe: list[int] = []
        self.params: list[dict[str, Any]] = []
        self.rtags: list[int] = []
        self.props: list[int] = []
        self.created: list[str] = []
        self.seconds: list[float | None] = []
        # the record's payload and blobs
        self.pkind: list[int] = []
        self.psize: list[int] = []
        self.pfile: dict[int, str] = {}
        self.blobs: list[int] = []
        # the environment it was computed in (an index into envsets; -1: not recorded)
        self.env: list[int] = []
        # notes
        self.ntags: list[int] = []
        self.results: list[dict[str, list[Any]] | None] = []
        # facts of the notes few states have, by row: the last audit's outcome, the paths a
        # Function changed (sparse: most states have neither)
        self.extras: dict[int, dict[str, Any]] = {}
        # interned values
        self.recipes: list[tuple[str, str, str]] = []
        self._recipe_no: dict[tuple[str, str, str], int] = {}
        self.propsets: list[dict[str, Any]] = []
        self.prop_keys: list[str] = []
        self._prop_no: dict[str, int] = {}
        self.blobsets: list[dict[str, int]] = []
        self.blob_keys: list[str] = []
        self._blob_no: dict[str, int] = {}
        self.envsets: list[dict[str, Any]] = []
        self.env_keys: list[str] = []
        self._env_no: dict[str, int] = {}
        self.tagsets: list[tuple[str, ...]] = [()]
        self._tagset_no: dict[tuple[str, ...], int] = {(): 0}
        self.codes: list[str] = []
        self._code_no: dict[str, int] = {}
        self.logs: list[str] = []
        self.log_no: dict[str, int] = {}
        self.shared: dict[str, Any] = {}
        self.values: dict[str, tuple[int, int, int]] = {}
        self.positions: dict[str, int] = {}
        self.max_seq = 0
        self.damage: list[tuple[str, int, int, str]] = []
        # a catalog read from an index: the JSON text of each section not decoded yet, and
        # what gives the catalog the logs hold instead if one does not decode (from_index)
        self._pending: dict[str, bytes | memoryview] = {}
        self._fallback: Callable[[Catalog], Catalog] | None = None
        self._indexed_rows = 0  # the rows the index held (those its sections hold)

    def __len__(self) -> int:
        return len(self.ids)

    # -- sections of an index, decoded when first read ---------------------------------------

    @property
    def pending(self) -> tuple[str, ...]:
        """The names of the index sections this catalog has not decoded yet (see
        :meth:`from_index`); empty for a catalog read from the logs."""
        return tuple(self._pending)

    def decode_all(self) -> None:
        """Decode every section not decoded yet (see :meth:`from_index` for what happens to
        one that does not decode)."""
        for name in list(self._pending):
            if name in self._pending:  # (a fallback before it replaced every column)
                getattr(self, name)

    def _decode(self, name: str) -> Any:
        text = self._pending.get(name)
        if text is None:  # decoded meanwhile (by another thread)
            return object.__getattribute__(self, name)
        try:
            value = self._decoded(name, text)
        except (KeyError, TypeError, ValueError, AttributeError, IndexError) as error:
            self._recover(name, error)
            return getattr(self, name)
        setattr(self, name, value)  # (before it leaves _pending: no thread finds neither)
        self._pending.pop(name, None)
        if not self._pending:
            self._fallback = None
            self.__class__ = Catalog  # every column decoded: plain attributes from now on
        return value

    def _decoded(self, name: str, text: bytes | memoryview) -> Any:
        """The value of one section from its JSON text, checked as far as its shape goes.

        Raises:
            KeyError, TypeError, ValueError, AttributeError, IndexError: It is not what
                :meth:`to_index` writes for ``name``.
        """
        with paused_gc():
            value = json.loads(bytes(text))
            if name == "pfile":
                return {int(row): str(path) for row, path in value.items()}
            if name == "mreason":
                return {int(row): str(reason) for row, reason in value.items()}
            if name == "extras":
                return {int(row): dict(extra) for row, extra in value.items()}
            if name == "values":
                return {str(key): (int(a), int(b), int(c)) for key, (a, b, c) in value.items()}
            column = _unpacked(value, self._indexed_rows)
            column.extend([_NEW_ROW[name]] * (len(self.ids) - self._indexed_rows))
            return column

    def _recover(self, name: str, error: Exception) -> None:
        """A section that passed the index's checksum does not decode: become the catalog the
        logs hold (every column and map replaced, none kept from the index), or raise."""
        fallback, self._fallback = self._fallback, None
        if fallback is None:
            raise ValueError(f"index section {name!r} does not decode ({error})") from error
        rebuilt = fallback(self)
        rebuilt.settle_interned()
        vars(self).clear()
        vars(self).update(vars(rebuilt))
        self.__class__ = Catalog

    def blank_like(self) -> Catalog:
        """An empty catalog numbered as this one: the same rows (ids in the same order, no
        entries yet) and the same interned values under the same numbers, so that a row or an
        interned number taken from this catalog means the same state or value in the other.

        What a catalog read from an index is read again into from the logs when a section
        does not decode (:meth:`from_index`), so that whoever holds a row number across that
        does not find another state under it. Call :meth:`settle_interned` once it is read.
        """
        blank = Catalog()
        for state_id in self.ids:
            blank.ensure(state_id)
        blank.logs, blank.log_no = list(self.logs), dict(self.log_no)
        blank.recipes, blank._recipe_no = list(self.recipes), dict(self._recipe_no)
        blank.tagsets, blank._tagset_no = list(self.tagsets), dict(self._tagset_no)
        blank.codes, blank._code_no = list(self.codes), dict(self._code_no)
        blank.propsets, blank.prop_keys = list(self.propsets), list(self.prop_keys)
        blank._prop_no = dict(self._prop_no)
        blank.blobsets, blank.blob_keys = list(self.blobsets), list(self.blob_keys)
        blank._blob_no = dict(self._blob_no)
        blank.envsets, blank.env_keys = list(self.envsets), list(self.env_keys)
        blank._env_no = dict(self._env_no)
        return blank

    def settle_interned(self) -> None:
        """Take the interned properties, blob and environment sets from the shared parts the
        logs hold where they hold them (a catalog from :meth:`blank_like` started with those of
        the index); the ones only the index knew are kept, and no row refers to them."""
        for keys, items in (
            (self.prop_keys, self.propsets),
            (self.blob_keys, self.blobsets),
            (self.env_keys, self.envsets),
        ):
            for number, key in enumerate(keys):
                part = self.shared.get(key)
                if part is not None:
                    items[number] = part

    # -- interning -------------------------------------------------------------------------------

    def log_number(self, name: str | None) -> int:
        if name is None:
            return NO_LOG
        number = self.log_no.get(name)
        if number is None:
            number = self.log_no[name] = len(self.logs)
            self.logs.append(name)
        return number

    def _tagset(self, tags: tuple[str, ...]) -> int:
        number = self._tagset_no.get(tags)
        if number is None:
            number = self._tagset_no[tags] = len(self.tagsets)
            self.tagsets.append(tags)
        return number

    def _code(self, code: str) -> int:
        number = self._code_no.get(code)
        if number is None:
            number = self._code_no[code] = len(self.codes)
            self.codes.append(code)
        return number

    def _interned(
        self,
        key: str | None,
        value: Any,
        items: list[Any],
        keys: list[str],
        numbers: dict[str, int],
    ) -> int:
        if key is None:
            return -1
        number = numbers.get(key)
        if number is None:
            number = numbers[key] = len(items)
            items.append(value)
            keys.append(key)
        return number

    def ensure(self, state_id: str) -> int:
        """The row of a state id, added (empty) if new."""
        row = self.row_of.get(state_id)
        if row is not None:
            return row
        row = self.row_of[state_id] = len(self.ids)
        self.ids.append(state_id)
        if self._pending:
            # Only the decoded columns grow now; a section decoded later grows to the rows
            # there are then (_decoded): a tail of a few entries decodes what they touch.
            held = vars(self)
            for name, value in _NEW_ROW.items():
                if name in held:
                    held[name].append(value)
            return row
        # (the same as _NEW_ROW, unrolled: a full read of the logs passes here once per state)
        for column in (self.parent, self.rlog, self.roff, self.flog, self.foff, self.nlog):
            column.append(-1)
        for column in (self.noff, self.rseq, self.fseq, self.nseq, self.mseq, self.dseq):
            column.append(-1)
        for column in (self.recipe, self.props, self.blobs, self.env):
            column.append(-1)
        self.root.append(False)
        self.mark.append(0)
        self.params.append(_EMPTY)
        self.rtags.append(0)
        self.ntags.append(0)
        self.created.append("")
        self.seconds.append(None)
        self.pkind.append(PAYLOAD_NONE)
        self.psize.append(0)
        self.results.append(None)
        return row

    # -- applying entries ------------------------------------------------------------------------

    def _seen(self, seq: int) -> None:
        if seq > self.max_seq:
            self.max_seq = seq

    def apply_record(
        self, record: StateRecord, refs: Mapping[str, str], log: str | None, offset: int
    ) -> bool:
        """Take a state's record entry (if it is newer than the one known). Returns whether
        it was taken."""
        self._seen(record.seq)
        row = self.ensure(record.id)
        if record.seq <= self.rseq[row]:
            return False
        self.rseq[row] = record.seq
        self.rlog[row] = self.log_number(log)
        self.roff[row] = offset
        if record.seq > self.dseq[row]:
            self._describe(row, record, refs)
        info = record.payload
        self.pfile.pop(row, None)
        if info is None:
            self.pkind[row], self.psize[row] = PAYLOAD_NONE, 0
        elif info.inline:
            self.pkind[row], self.psize[row] = PAYLOAD_INLINE, info.size
        else:
            self.pkind[row], self.psize[row] = PAYLOAD_FILE, info.size
            self.pfile[row] = info.file
        self.blobs[row] = self._interned(
            refs.get("blobs"), record.blobs, self.blobsets, self.blob_keys, self._blob_no
        )
        self.env[row] = self._interned(
            refs.get("environment"), record.environment, self.envsets, self.env_keys, self._env_no
        )
        return True

    def apply_failure(
        self, record: StateRecord, refs: Mapping[str, str], log: str | None, offset: int
    ) -> bool:
        """Take a state's failure entry (if newer). Returns whether it was taken."""
        self._seen(record.seq)
        row = self.ensure(record.id)
        if record.seq <= self.fseq[row]:
            return False
        self.fseq[row] = record.seq
        self.flog[row] = self.log_number(log)
        self.foff[row] = offset
        if record.seq > self.dseq[row]:
            self._describe(row, record, refs)
        return True

    def _describe(self, row: int, record: StateRecord, refs: Mapping[str, str]) -> None:
        self.dseq[row] = record.seq
        parent = record.parent
        self.parent[row] = self.ensure(parent) if parent is not None else -1
        self.root[row] = record.root
        recipe = record.recipe
        if recipe is None:
            self.recipe[row], self.params[row] = -1, _EMPTY
        else:
            identity = (recipe.name, recipe.module, recipe.code)
            number = self._recipe_no.get(identity)
            if number is None:
                number = self._recipe_no[identity] = len(self.recipes)
                self.recipes.append(identity)
            self.recipe[row], self.params[row] = number, recipe.params
        self.rtags[row] = self._tagset(tuple(record.tags))
        self.created[row] = record.created
        self.seconds[row] = record.seconds
        if not record.failed or self.props[row] < 0:
            self.props[row] = self._interned(
                refs.get("properties"),
                record.properties,
                self.propsets,
                self.prop_keys,
                self._prop_no,
            )

    def apply_notes(
        self, state_id: str, seq: int, notes: Notes, log: str | None, offset: int
    ) -> bool:
        """Take a state's notes entry (if newer). Returns whether it was taken."""
        self._seen(seq)
        row = self.ensure(state_id)
        if seq <= self.nseq[row]:
            return False
        self.nseq[row], self.nlog[row], self.noff[row] = seq, self.log_number(log), offset
        self.ntags[row] = self._tagset(tuple(notes.tags))
        self.results[row] = {
            name: [entry.summary(), self._code(entry.code), entry.failed, entry.inline]
            for name, entry in notes.results.items()
        } or None
        extra: dict[str, Any] = {}
        mutated = {
            name: list(entry.mutated) for name, entry in notes.results.items() if entry.mutated
        }
        if mutated:
            extra["mutated"] = mutated
        if notes.audit is not None:
            extra["audit"] = notes.audit.outcome
        if extra:
            self.extras[row] = extra
        else:
            self.extras.pop(row, None)
        return True

    def apply_marker(self, marker: Marker) -> bool:
        """Take a marker (if newer than the state's last one). Returns whether it was taken."""
        self._seen(marker.seq)
        row = self.ensure(marker.state_id)
        if marker.seq <= self.mseq[row]:
            return False
        self.mseq[row], self.mark[row] = marker.seq, _MARKS[marker.kind]
        if marker.reason:
            self.mreason[row] = marker.reason
        else:
            self.mreason.pop(row, None)
        return True

    def add_part(self, key: str, part: Any) -> None:
        self.shared.setdefault(key, part)

    def add_value(self, digest: str, log: str, offset: int, size: int) -> None:
        self.values.setdefault(digest, (self.log_number(log), offset, size))

    # -- what a state is -------------------------------------------------------------------------

    def status(self, row: int) -> Status | None:
        """What the entries say the state of a row is; None if it is not a visible state."""
        rseq, fseq, mseq, mark = self.rseq[row], self.fseq[row], self.mseq[row], self.mark[row]
        if rseq < 0 and fseq < 0:
            return None
        if mark == _REMOVED and mseq > rseq and mseq > fseq:
            return None
        if fseq > rseq:
            return Status.FAILED
        if mseq > rseq:
            if mark == _PRUNED:
                return Status.PRUNED
            if mark == _QUARANTINED:
                return Status.MISSING
        return Status.DONE

    # -- the Survey a plan reads (see dagger.store.base.Survey) ---------------------------------

    def status_of(self, state_id: str) -> Status | None:
        row = self.row_of.get(state_id)
        if row is None:
            return None
        seq = self.rseq[row]
        if seq >= 0 and self.fseq[row] <= seq and self.mseq[row] <= seq:
            return Status.DONE  # the usual case, as statuses_of decides it (once per leaf)
        return self.status(row)

    def statuses_of(self, state_ids: Iterable[str]) -> list[Status | None]:
        """:meth:`status_of` of each of these states, in order: one call for a whole plan
        (a rerun asks about 100,000 states), with the usual case (a record and nothing
        newer: done) decided inline."""
        rseq, fseq, mseq, status = self.rseq, self.fseq, self.mseq, self.status
        done = Status.DONE
        out: list[Status | None] = []
        append = out.append
        for row in map(self.row_of.get, state_ids):
            if row is None:
                append(None)
            elif (seq := rseq[row]) >= 0 and fseq[row] <= seq and mseq[row] <= seq:
                append(done)  # what status(row) says when no failure or mark is newer
            else:
                append(status(row))
        return out

    def latest_children(
        self, parent_ids: Iterable[str], per_class: int = 3
    ) -> dict[tuple[str, str], list[str]]:
        """The newest stored (done or pruned) children of these parents: for each
        ``(parent id, recipe class name)``, the newest child of each distinct recipe code
        identity, newest first, at most ``per_class`` of them.

        One pass over the rows, whatever the number of parents asked about: a run asks once,
        for the parents of the states it is about to compute (to say why they are computed
        although a sibling is stored).
        """
        wanted = {row for state_id in parent_ids if (row := self.row_of.get(state_id)) is not None}
        if not wanted:
            return {}
        newest: dict[tuple[int, int], int] = {}  # (parent row, recipe number) -> row
        dseq, recipe, status = self.dseq, self.recipe, self.status
        for row, parent in enumerate(self.parent):
            if parent not in wanted or recipe[row] < 0:
                continue
            key = (parent, recipe[row])
            known = newest.get(key)
            if (known is None or dseq[row] > dseq[known]) and status(row) in _SIBLING_STATUSES:
                newest[key] = row
        grouped: dict[tuple[str, str], list[int]] = {}
        for (parent, number), row in newest.items():
            grouped.setdefault((self.ids[parent], self.recipes[number][0]), []).append(row)
        return {
            key: [self.ids[row] for row in sorted(rows, key=lambda r: -dseq[r])[:per_class]]
            for key, rows in grouped.items()
        }

    def same_params_children(
        self, queries: Sequence[tuple[str, str, Mapping[str, Any]]]
    ) -> list[str | None]:
        """For each ``(parent id, recipe class name, params)``, the newest stored (done or
        pruned) child of that parent made by that recipe class with exactly those parameter
        values (the record's ``recipe.params``, compared by their JSON text, so ``1``,
        ``1.0`` and ``True`` differ), or None. Whatever its code identity: a run names the
        state it recomputes after a code edit by this one.

        One pass over the rows, whatever the number of queries; the parameters of a row are
        looked at only when its parent and recipe class were asked about.

        Returns:
            One id or None per query, in the order of ``queries``.
        """
        wanted: dict[tuple[int, str, str], list[int]] = {}
        loose: set[tuple[int, str, Any]] = set()
        names: set[str] = set()
        for number, (parent_id, name, values) in enumerate(queries):
            parent = self.row_of.get(parent_id)
            if parent is None:
                continue
            names.add(name)
            loose.add((parent, name, _loose_key(values)))
            wanted.setdefault((parent, name, _params_key(values)), []).append(number)
        answers: list[str | None] = [None] * len(queries)
        if not wanted:
            return answers
        parents = {parent for parent, _, _ in loose}
        named = {n: identity[0] for n, identity in enumerate(self.recipes) if identity[0] in names}
        newest: dict[tuple[int, str, str], int] = {}
        dseq, recipe, params, status = self.dseq, self.recipe, self.params, self.status
        for row, parent in enumerate(self.parent):
            if parent not in parents or (found := named.get(recipe[row])) is None:
                continue
            # A hash of the values first (a sweep's siblings mostly differ); the exact text
            # only for the few that pass (1, 1.0 and True hash alike).
            if (parent, found, _loose_key(params[row])) not in loose:
                continue
            key = (parent, found, _params_key(params[row]))
            if key not in wanted:
                continue
            known = newest.get(key)
            if (known is None or dseq[row] > dseq[known]) and status(row) in _SIBLING_STATUSES:
                newest[key] = row
        for key, row in newest.items():
            for number in wanted[key]:
                answers[number] = self.ids[row]
        return answers

    def tags_of(self, state_id: str) -> tuple[str, ...]:
        row = self.row_of.get(state_id)
        return () if row is None else self.tags(row)

    def result_of(self, state_id: str, name: str) -> ResultSummary | None:
        row = self.row_of.get(state_id)
        if row is None:
            return None
        results = self.results[row]
        if results is None or not self.notes_visible(row):
            return None
        found = results.get(name)
        if found is None:
            return None
        return (found[0], self.codes[found[1]], found[2], found[3])

    def committed(self, state_id: str) -> bool:
        """Whether the entries say the state is stored with its content (``done``)."""
        row = self.row_of.get(state_id)
        return row is not None and self.status(row) is Status.DONE

    def notes_visible(self, row: int) -> bool:
        """Whether the row's notes still count (not older than its removal)."""
        if self.nseq[row] < 0:
            return False
        return not (self.mark[row] == _REMOVED and self.mseq[row] > self.nseq[row])

    def tags(self, row: int) -> tuple[str, ...]:
        tags = self.tagsets[self.rtags[row]]
        if not self.notes_visible(row):
            return tags
        gained = self.tagsets[self.ntags[row]]
        if not gained:
            return tags
        return tags + tuple(tag for tag in gained if tag not in tags)

    def result_summaries(self, row: int) -> dict[str, ResultSummary] | None:
        results = self.results[row]
        if results is None or not self.notes_visible(row):
            return None
        codes = self.codes
        return {name: (v[0], codes[v[1]], v[2], v[3]) for name, v in results.items()}

    def blob_refs(self, row: int) -> dict[str, int]:
        number = self.blobs[row]
        return self.blobsets[number] if number >= 0 else {}

    def marker_reason(self, row: int) -> str:
        """Why the row's last marker was written (empty if it has none, or none was said)."""
        return self.mreason.get(row, "")

    def payload_file(self, row: int) -> str | None:
        return self.pfile.get(row)

    def visible_rows(self) -> list[int]:
        """Rows of visible states, in creation order (seq, then id)."""
        status = self.status
        rows = [row for row in range(len(self.ids)) if status(row) is not None]
        dseq, ids = self.dseq, self.ids
        rows.sort(key=lambda row: (dseq[row], ids[row]))
        return rows

    def snapshot(self, reader: Any, file_present: Callable[[str], bool] | None = None) -> SlimTable:
        """A :class:`SlimTable` of the visible states.

        Args:
            reader: What the table reads full records and notes through (the store).
            file_present: Whether a payload file exists (states whose file is absent show as
                ``missing``); None skips the check.
        """
        with paused_gc():
            return self._snapshot(reader, file_present)

    def _snapshot(self, reader: Any, file_present: Callable[[str], bool] | None) -> SlimTable:
        status_of = self.status
        found = [(row, status) for row in range(len(self.ids)) if (status := status_of(row))]
        dseq, ids = self.dseq, self.ids
        found.sort(key=lambda item: (dseq[item[0]], ids[item[0]]))
        rows = [row for row, _ in found]
        position = {row: index for index, row in enumerate(rows)}
        table = SlimTable(reader=reader)
        table.ids = [self.ids[row] for row in rows]
        table.parent = [position.get(self.parent[row], -1) for row in rows]
        ids = self.ids
        table.parent_id = [ids[p] if (p := self.parent[row]) >= 0 else None for row in rows]
        table.root = [self.root[row] for row in rows]
        table.seq = [self.dseq[row] for row in rows]
        statuses = []
        for row, status in found:
            if (
                status is Status.DONE
                and file_present is not None
                and row in self.pfile
                and not file_present(self.pfile[row])
            ):
                status = Status.MISSING
            statuses.append(status)
        table.status = statuses
        table.recipe = [self.recipe[row] for row in rows]
        table.recipes = list(self.recipes)
        table.params = [self.params[row] for row in rows]
        table.tags = [self.tags(row) for row in rows]
        propsets = self.propsets
        table.properties = [propsets[p] if (p := self.props[row]) >= 0 else _EMPTY for row in rows]
        envsets = self.envsets
        table.environment = [envsets[e] if (e := self.env[row]) >= 0 else None for row in rows]
        table.seconds = [self.seconds[row] for row in rows]
        table.created = [self.created[row] for row in rows]
        table.results = [self.result_summaries(row) for row in rows]
        table.extras = {
            position[row]: extra
            for row, extra in self.extras.items()
            if row in position and self.notes_visible(row)
        }
        return table

    # -- the index -------------------------------------------------------------------------------

    def to_index(self) -> dict[str, Any]:
        """Everything in the catalog as plain JSON (see :mod:`dagger.store.index`): the items
        named in :data:`INDEX_SECTIONS`, each one section, and those of the head."""
        document: dict[str, Any] = {"ids": self.ids}
        for name in _COLUMNS:
            column = getattr(self, name)
            if name in _PACKED_COLUMNS:
                column = _packed(column, steps=name in _INT_COLUMNS)
            elif name == "results":
                column = _packed(column, None)
            document[name] = column
        document.update(
            pfile={str(row): path for row, path in self.pfile.items()},
            mreason={str(row): reason for row, reason in self.mreason.items()},
            extras={str(row): extra for row, extra in self.extras.items()},
            values={key: list(value) for key, value in self.values.items()},
            recipes=[list(item) for item in self.recipes],
            propsets=self.prop_keys,
            blobsets=self.blob_keys,
            envsets=self.env_keys,
            tagsets=[list(tags) for tags in self.tagsets],
            codes=self.codes,
            logs=self.logs,
            shared=self.shared,
            positions=self.positions,
            max_seq=self.max_seq,
            damage=[list(item) for item in self.damage],
        )
        return document

    @staticmethod
    def from_index(
        head: Mapping[str, Any],
        sections: Mapping[str, bytes | memoryview],
        fallback: Callable[[Catalog], Catalog] | None = None,
    ) -> Catalog:
        """A catalog from an index: what :meth:`to_index` gave, the sections apart.

        The ids and the head are decoded and checked at once; every other section the first
        time the catalog reads it (then an attribute like any other, no cost per access), so
        that a cached rerun, which reads a few columns, never decodes those only a restore
        shows. Rows added later (:meth:`ensure`) grow the decoded columns at once and the
        others when they are decoded.

        The index's checksum covers every section, so a section that does not decode (the
        wrong JSON, shape or length) was written so: by a writer's bug, or a hand edit that
        recomputed the checksum. Nothing of such an index is kept: the catalog calls
        ``fallback`` with itself, which reads the logs into :meth:`blank_like` (the same rows
        and interned numbers, so that a row or a number held across this still means the
        same) and returns it, and the catalog becomes it, every column and map replaced.
        Every entry a catalog is given is in the logs already (read from them, or applied
        after its write), so an entry being applied when this happens is in the new catalog.

        Args:
            head: Every item of :meth:`to_index` but the sections.
            sections: The JSON text of each item named in :data:`INDEX_SECTIONS`.
            fallback: Gives the catalog the logs hold, as above; None: a section that does
                not decode raises ValueError where it is read (:meth:`decode_all` reads all).

        Raises:
            KeyError, TypeError, ValueError: The head or the ids are not a complete index
                (the caller rebuilds the catalog from the logs instead).
        """
        with paused_gc():
            return Catalog._from_index(head, sections, fallback)

    @staticmethod
    def _from_index(
        head: Mapping[str, Any],
        sections: Mapping[str, bytes | memoryview],
        fallback: Callable[[Catalog], Catalog] | None,
    ) -> Catalog:
        catalog: Catalog = _IndexedCatalog()
        ids = json.loads(bytes(sections["ids"]))
        if not isinstance(ids, list) or len("".join(ids)) != 64 * len(ids):
            raise ValueError("index ids")
        count = len(ids)
        catalog.ids = ids
        catalog.row_of = dict(zip(ids, range(count), strict=True))
        if len(catalog.row_of) != count:
            raise ValueError("index ids repeat")
        later = INDEX_SECTIONS[1:]
        catalog._pending = {name: sections[name] for name in later}
        for name in later:
            delattr(catalog, name)  # read through _IndexedCatalog's _Section, decoded then
        catalog._fallback = fallback
        catalog._indexed_rows = count
        catalog.recipes = [(str(a), str(b), str(c)) for a, b, c in head["recipes"]]
        catalog._recipe_no = {item: number for number, item in enumerate(catalog.recipes)}
        shared = head["shared"]
        if not isinstance(shared, dict):
            raise ValueError("index shared")
        catalog.shared = shared
        catalog.prop_keys = list(head["propsets"])
        catalog.propsets = [shared[key] for key in catalog.prop_keys]
        catalog._prop_no = {key: number for number, key in enumerate(catalog.prop_keys)}
        catalog.blob_keys = list(head["blobsets"])
        catalog.blobsets = [shared[key] for key in catalog.blob_keys]
        catalog._blob_no = {key: number for number, key in enumerate(catalog.blob_keys)}
        catalog.env_keys = list(head["envsets"])
        catalog.envsets = [shared[key] for key in catalog.env_keys]
        catalog._env_no = {key: number for number, key in enumerate(catalog.env_keys)}
        catalog.tagsets = [tuple(tags) for tags in head["tagsets"]]
        catalog._tagset_no = {tags: number for number, tags in enumerate(catalog.tagsets)}
        catalog.codes = list(head["codes"])
        catalog._code_no = {code: number for number, code in enumerate(catalog.codes)}
        catalog.logs = list(head["logs"])
        catalog.log_no = {name: number for number, name in enumerate(catalog.logs)}
        catalog.positions = {str(name): int(size) for name, size in head["positions"].items()}
        catalog.max_seq = int(head["max_seq"])
        catalog.damage = [(str(a), int(b), int(c), str(d)) for a, b, c, d in head["damage"]]
        return catalog


class _Section:
    """A column or map of an :class:`_IndexedCatalog` that is decoded when first read (a
    non-data descriptor: once decoded, the instance's own attribute hides it)."""

    def __init__(self, name: str) -> None:
        self.name = name

    def __get__(self, catalog: Catalog | None, owner: type | None = None) -> Any:
        if catalog is None:
            return self
        return catalog._decode(self.name)


class _IndexedCatalog(Catalog):
    """A catalog read from an index with sections not decoded yet (:meth:`Catalog.from_index`).

    A subclass of its own, so that a plain :class:`Catalog` (and this one, once every section
    is decoded: its class becomes :class:`Catalog`) reads its attributes at full speed: Python
    specializes an attribute read less well on a class that has descriptors of these names or
    a ``__getattr__`` (a third of a restore's table building, measured on CPython 3.11).
    """


for _name in INDEX_SECTIONS[1:]:
    setattr(_IndexedCatalog, _name, _Section(_name))
del _name
