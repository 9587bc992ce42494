"""NodeSet: an ordered selection of (slim) states, with filters that compose, and tables.

Every query reads dagger's facts about a state (``state.dagger``: recipe parameters, root
properties, status, timings, recorded results) and never loads a state's content, except
:attr:`NodeSet.iterator`, which loads each state in turn.

States of a restored tree are backed by the store's table (:class:`~dagger.state.SlimInfo`):
queries and tables read its columns directly instead of building each state's facts, so that
filtering or tabulating 100,000 states costs a pass over lists, not 100,000 objects.
"""

from __future__ import annotations

import difflib
import fnmatch
import functools
import logging
import math
from collections.abc import Callable, Iterable, Iterator
from typing import TYPE_CHECKING, Any

from ._names import display
from .environment import TABLE_KEYS
from .errors import ColumnNotFoundError, InvalidQueryError
from .record import Status, jsonable
from .state import ExperimentState, SlimInfo
from .store import Results
from .store.table import paused_gc

if TYPE_CHECKING:
    import pandas
    from matplotlib.figure import Figure

__all__ = ["NodeSet", "suggest"]

_MISSING = object()

logger = logging.getLogger("dagger")


class NodeSet(list[ExperimentState]):
    """An ordered list of slim states with filters that compose.

    ``nodes.filter("prune*") | nodes.filter("!baseline")``; ``&`` intersects, ``-`` removes.
    Each filter returns a new NodeSet and keeps the order of the nodes it was called on.
    """

    def filter(self, pattern: str) -> NodeSet:
        """States with a tag matching the glob ``pattern``; ``"!pattern"`` negates it.

        Raises:
            InvalidQueryError: ``pattern`` is not a string.
        """
        if not isinstance(pattern, str):
            raise InvalidQueryError(
                f"filter() takes a glob pattern string; got {pattern!r}.", value=repr(pattern)
            )
        negate = pattern.startswith("!")
        if negate:
            pattern = pattern[1:]
        # Most states share a few tag sets: match each distinct set once.
        matched: dict[tuple[str, ...], bool] = {}
        keep = []
        for node in self:
            tags = _tags(node)
            hit = matched.get(tags)
            if hit is None:
                hit = matched[tags] = any(fnmatch.fnmatchcase(tag, pattern) for tag in tags)
            if negate ^ hit:
                keep.append(node)
        if self and not any(matched.values()):
            every = {tag for tagset in matched for tag in tagset}
            logger.warning(
                "No state here has a tag matching %r%s. Tags: %s.",
                pattern,
                suggest(pattern, every),
                ", ".join(sorted(every)) or "none",
            )
        return NodeSet(keep)

    def where(self, **conditions: Any) -> NodeSet:
        """States whose recipe parameters or properties equal the given values.

        A value may also be a predicate: ``where(amount=lambda a: a > 0.5)``. A value is
        compared the way records keep it (:func:`dagger.record.jsonable`), so
        ``where(dtype=torch.float16)``, a ``Path`` or an enum find what they were recorded as.
        A name that no state has raises KeyError with the names that exist; a value that no
        state has logs a warning with the values that exist.
        """
        known: set[str] = set()
        seen: set[int] = set()
        for node in self:
            for names in _parameters(node):
                if id(names) not in seen:  # properties are shared between states
                    seen.add(id(names))
                    known.update(names)
        unknown = [name for name in conditions if name not in known]
        if unknown and self:
            raise ColumnNotFoundError(
                f"No state here has a parameter or property named {unknown[0]!r}"
                + suggest(unknown[0], known)
                + f". Known: {', '.join(sorted(known)) or 'none'}.",
                name=unknown[0],
            )

        recorded = {
            name: wanted if callable(wanted) else jsonable(wanted)
            for name, wanted in conditions.items()
        }

        def matches(node: ExperimentState) -> bool:
            for name, wanted in recorded.items():
                value = _param(node, name)
                if value is _MISSING:
                    return False
                if callable(wanted):
                    if not wanted(value):
                        return False
                elif value != wanted and value != conditions[name]:
                    return False
            return True

        found = NodeSet(node for node in self if matches(node))
        if self and not found:
            for name, wanted in recorded.items():
                if callable(wanted):
                    continue
                values = {_shown(_param(node, name)) for node in self} - {_shown(_MISSING)}
                if _shown(wanted) not in values:
                    logger.warning(
                        "No state here has %s=%s (recorded as %r). Values of %s: %s.",
                        name,
                        display(conditions[name]),
                        wanted,
                        name,
                        ", ".join(sorted(values)[:10]) or "none",
                    )
        return found

    def of_recipe(self, recipe: type | str) -> NodeSet:
        """States produced by a recipe class (or a class name)."""
        name = recipe if isinstance(recipe, str) else recipe.__qualname__
        return NodeSet(node for node in self if _recipe_name(node) == name)

    def select(self, predicate: Callable[[ExperimentState], bool]) -> NodeSet:
        """States for which ``predicate(state)`` is true (the state is slim)."""
        return NodeSet(node for node in self if predicate(node))

    @property
    def leaves(self) -> NodeSet:
        """States of this set that have no children."""
        return NodeSet(node for node in self if not _has_children(node))

    def sort_by(
        self, *keys: str | Callable[[ExperimentState], Any], reverse: bool = False
    ) -> NodeSet:
        """Sorted by parameters, properties, results (``result.acc`` or ``acc``, dotted into
        dict results), ``depth``/``seconds``/``created``/``status``, or functions of the
        state. Missing values sort last, also with ``reverse=True``."""

        def values(node: ExperimentState) -> list[Any]:
            return [item(node) if callable(item) else _column(node, item) for item in keys]

        def compare(left: list[Any], right: list[Any]) -> int:
            for a, b in zip(left, right, strict=True):
                a_missing, b_missing = a is _MISSING or a is None, b is _MISSING or b is None
                if a_missing or b_missing:
                    if a_missing != b_missing:
                        return 1 if a_missing else -1
                    continue
                a_key, b_key = _sortable(a), _sortable(b)
                if a_key != b_key:
                    order = -1 if a_key < b_key else 1
                    return -order if reverse else order
            return 0

        for item in keys:
            if (
                isinstance(item, str)
                and self
                and all(_column(node, item) is _MISSING for node in self)
            ):
                known = sorted(_known_columns(self))
                raise ColumnNotFoundError(
                    f"No state here has a column named {item!r}"
                    + suggest(item, known)
                    + f". Known: {', '.join(known)}.",
                    name=item,
                )

        def compare_rows(
            left: tuple[list[Any], ExperimentState], right: tuple[list[Any], ExperimentState]
        ) -> int:
            return compare(left[0], right[0])

        decorated = [(values(node), node) for node in self]
        decorated.sort(key=functools.cmp_to_key(compare_rows))
        return NodeSet(node for _, node in decorated)

    def __or__(self, other: Iterable[ExperimentState]) -> NodeSet:
        _check_nodeset(other)
        seen = {id(node) for node in self}
        return NodeSet([*self, *(node for node in other if id(node) not in seen)])

    def __and__(self, other: Iterable[ExperimentState]) -> NodeSet:
        _check_nodeset(other)
        keep = {id(node) for node in other}
        return NodeSet(node for node in self if id(node) in keep)

    def __sub__(self, other: Iterable[ExperimentState]) -> NodeSet:
        _check_nodeset(other)
        drop = {id(node) for node in other}
        return NodeSet(node for node in self if id(node) not in drop)

    @property
    def iterator(self) -> Iterator[ExperimentState]:
        """Each state fully loaded in turn, and deflated again before the next one.

        States with no stored content are skipped: failed ones, and ones whose files are
        missing or corrupt (a warning names each; the next run recomputes them).
        """
        for node in self:
            if node.dagger.status is Status.FAILED:
                continue
            try:
                context = node.lazy_load()
                context.__enter__()
            except LookupError:
                continue
            try:
                yield node
            finally:
                context.__exit__(None, None, None)

    @property
    def ids(self) -> list[str]:
        return [node.sha() or "" for node in self]

    def to_dataframe(self) -> pandas.DataFrame:
        """One row per state: id, parent, depth, recipe, parameters, tags, status, seconds,
        and recorded results flattened to columns (``param.<name>``, ``result.<name>``).

        Two columns appear when some state has them: ``mutated.<name>``, the attribute paths
        that Function ``<name>`` changed while computing its result on that state (a result
        computed on a state its Function mutated; empty elsewhere), and ``audit``, the
        outcome of the state's last audit (``reproduced``, ``differs`` or ``error``).

        When some state's record holds the environment it was computed in, the last columns
        are ``env.python``, ``env.torch``, ``env.cuda``, ``env.device`` (a CUDA device's
        name, or ``cpu``), ``env.dagger``, ``env.git_commit``, ``env.git_dirty`` and
        ``env.hostname``; missing (NaN) for states whose record does not hold one (failed
        states, states stored by a dagger that did not record it). The whole environment is
        ``state.dagger.environment``."""
        import pandas

        backed = _backing(self)
        if backed is not None and self:
            with paused_gc():
                return pandas.DataFrame(_columns(*backed))
        rows = [_row(node) for node in self]
        frame = pandas.DataFrame(rows)
        environment = [column for column in frame.columns if str(column).startswith("env.")]
        if environment:  # last, as the columns from a table have them
            frame = frame[[c for c in frame.columns if c not in environment] + environment]
        if not rows:
            frame = pandas.DataFrame(
                columns=["id", "parent", "depth", "recipe", "tags", "status", "seconds"]
            )
        return frame

    def plot(self, x: str, y: str, hue: str | None = None, **options: Any) -> Figure:
        """Plot column ``y`` against ``x`` of :meth:`to_dataframe`, one series per ``hue``;
        returns the matplotlib Figure (``path=`` also saves it). See
        :func:`dagger.plots.plot`."""
        from . import plots

        return plots.plot(self, x, y, hue, **options)

    def _repr_html_(self) -> str:
        frame = self.to_dataframe()
        return str(frame.to_html(index=False, max_rows=200))


def _check_nodeset(other: Any) -> None:
    if not isinstance(other, list):
        raise InvalidQueryError(
            f"A NodeSet composes with another NodeSet; got {type(other).__name__}.",
            value_type=type(other).__name__,
        )


def _shown(value: Any) -> str:
    return "?" if value is _MISSING else repr(value)


# -- facts, from the table where a state is backed by one ---------------------------------------


def _slim(node: ExperimentState) -> SlimInfo | None:
    info = node.dagger
    return info if type(info) is SlimInfo else None


def _tags(node: ExperimentState) -> tuple[str, ...]:
    info = _slim(node)
    if info is not None:
        return info.source.table.tags[info.row]
    return tuple(node.tags)


def _parameters(node: ExperimentState) -> tuple[dict[str, Any], ...]:
    """The recipe's parameters and the properties of a state (dicts, not copies)."""
    info = _slim(node)
    if info is not None:
        table = info.source.table
        return table.params[info.row], table.properties[info.row]
    params = node.recipe.params if node.recipe is not None else {}
    return params, node.dagger.properties


def _recipe_name(node: ExperimentState) -> str | None:
    info = _slim(node)
    if info is not None:
        return info.source.table.recipe_name(info.row)
    return node.recipe.name if node.recipe is not None else None


def _has_children(node: ExperimentState) -> bool:
    info = _slim(node)
    if info is not None:
        return bool(info.source.child_rows(info.row))
    return bool(node.dagger.children)


def _param(node: ExperimentState, name: str) -> Any:
    params, properties = _parameters(node)
    if name in params:
        return params[name]
    if name in properties:
        return properties[name]
    return _MISSING


def _column(node: ExperimentState, name: str) -> Any:
    if name in ("depth", "seconds", "created", "status", "id"):
        if name == "id":
            return node.sha()
        if name == "depth":
            return node.dagger.depth
        if name == "status":
            return node.dagger.status.value
        return getattr(node.dagger, name)
    if name.startswith("result."):
        name = name[len("result.") :]
        return _result_summary(node, name)
    if name == "audit" or name.startswith(("mutated.", "env.")):
        return _row(node).get(name, _MISSING)
    if name.startswith("param."):
        name = name[len("param.") :]
    value = _param(node, name)
    if value is _MISSING:
        value = _result_summary(node, name)
    return value


def _result_summary(node: ExperimentState, name: str) -> Any:
    """A recorded result by name; ``name.key.subkey`` reaches into a dict result."""
    head, *path = name.split(".")
    info = _slim(node)
    if info is not None:
        summaries = info.source.table.results[info.row] or {}
        found = summaries.get(head)
        if found is None or found[2]:
            return _MISSING
        value = found[0]
    else:
        results = node.dagger.results
        if head not in results:
            return _MISSING
        value = results.summary(head) if isinstance(results, Results) else results[head]
    for key in path:
        if not isinstance(value, dict) or key not in value:
            return _MISSING
        value = value[key]
    return value


def _known_columns(nodes: Iterable[ExperimentState]) -> set[str]:
    known = {"depth", "seconds", "created", "status", "id"}
    for node in nodes:
        known.update(node.dagger.properties)
        if node.recipe is not None:
            known.update(node.recipe.params)
        for key in _row(node):
            if key.startswith(("result.", "param.", "mutated.", "env.")) or key == "audit":
                known.add(key)
    return known


def _sortable(value: Any) -> Any:
    if value is _MISSING or value is None:
        return (0, "")
    if isinstance(value, bool | int | float):
        return (1, value)
    return (2, str(value))


def _flatten(prefix: str, value: Any, row: dict[str, Any]) -> None:
    if isinstance(value, dict) and value and all(isinstance(k, str) for k in value):
        for key, item in value.items():
            _flatten(f"{prefix}.{key}", item, row)
    else:
        row[prefix] = value


def _row(node: ExperimentState) -> dict[str, Any]:
    info = node.dagger
    row: dict[str, Any] = {
        "id": info.id,
        "parent": info.parent_id,
        "depth": info.depth,
        "recipe": node.recipe.name if node.recipe is not None else ("root" if info.root else None),
        "tags": list(info.tags),
        "status": info.status.value,
        "seconds": info.seconds,
        "created": info.created,
    }
    for name, value in info.properties.items():
        row[f"property.{name}"] = value
    if node.recipe is not None:
        for name, value in node.recipe.params.items():
            row[f"param.{name}"] = value
    results = info.results
    for name in results:
        summary = results.summary(name) if isinstance(results, Results) else results[name]
        _flatten(f"result.{name}", summary, row)
        entry = results.entry(name) if isinstance(results, Results) else None
        if entry is not None and entry.mutated:
            # Beside the result: it was computed on a state its Function changed.
            row[f"mutated.{name}"] = list(entry.mutated)
    if info.notes.audit is not None:
        row["audit"] = info.notes.audit.outcome
    environment = info.environment
    if environment is not None:
        for key in TABLE_KEYS:
            row[f"env.{key}"] = environment.get(key)
    return row


def suggest(wanted: str, candidates: Iterable[str]) -> str:
    """`` (did you mean 'a', 'b'?)`` for the candidates closest to ``wanted``, or ``""``."""
    close = difflib.get_close_matches(wanted, list(candidates), n=3, cutoff=0.5)
    return f" (did you mean {', '.join(map(repr, close))}?)" if close else ""


# -- tables from the columns ----------------------------------------------------------------------


def _backing(nodes: list[ExperimentState]) -> tuple[Any, list[int]] | None:
    """The tree and rows behind ``nodes`` if every one is a slim state of one tree."""
    source = None
    rows = []
    for node in nodes:
        info = _slim(node)
        if info is None or (source is not None and info.source is not source):
            return None
        source = info.source
        rows.append(info.row)
    return (source, rows) if source is not None else None


def _columns(source: Any, rows: list[int]) -> dict[str, list[Any]]:
    """:meth:`NodeSet.to_dataframe`'s columns, read from the table behind a tree's states:
    the same columns, in the same order, as building one row per state would give."""
    table = source.table
    count = len(rows)
    recipes = table.recipes
    status_text = {status: status.value for status in set(table.status)}
    columns: dict[str, list[Any]] = {
        "id": [table.ids[row] for row in rows],
        "parent": [table.parent_id[row] for row in rows],
        "depth": [source.depth(row) for row in rows],
        "recipe": [
            recipes[index][0]
            if (index := table.recipe[row]) >= 0
            else ("root" if table.root[row] else None)
            for row in rows
        ],
        "tags": [list(table.tags[row]) for row in rows],
        "status": [status_text[table.status[row]] for row in rows],
        "seconds": [table.seconds[row] for row in rows],
        "created": [table.created[row] or None for row in rows],
    }
    # Columns of parameters, properties and results, in the order they first appear (the
    # order a frame built row by row has); each name is formatted once, not once per row.
    ordered: dict[str, list[Any]] = {}
    missing = math.nan  # what a missing key becomes in a frame built row by row
    by_kind: dict[str, dict[str, list[Any]]] = {"property": {}, "param": {}, "result": {}}

    def column(kind: str, name: str) -> list[Any]:
        found = by_kind[kind].get(name)
        if found is None:
            found = by_kind[kind][name] = ordered[f"{kind}.{name}"] = [missing] * count
        return found

    def flatten(prefix: str, position: int, value: Any) -> None:
        if isinstance(value, dict) and value and all(isinstance(key, str) for key in value):
            for key, item in value.items():
                flatten(f"{prefix}.{key}", position, item)
        else:
            column("result", prefix)[position] = value

    properties_seen: dict[int, list[tuple[list[Any], Any]]] = {}
    params_columns = by_kind["param"]
    for position, row in enumerate(rows):
        properties = table.properties[row]
        targets = properties_seen.get(id(properties))
        if targets is None:
            targets = properties_seen[id(properties)] = [
                (column("property", name), value) for name, value in properties.items()
            ]
        for target, value in targets:
            target[position] = value
        for name, value in table.params[row].items():
            found = params_columns.get(name)
            (found if found is not None else column("param", name))[position] = value
        summaries = table.results[row]
        if summaries:
            for name, (summary, _, failed, _) in summaries.items():
                if not failed:
                    flatten(name, position, summary)
    extras = table.extras
    if extras:
        # Beside the results: what a Function changed on the state it computed a result on,
        # and the outcome of the state's last audit (few states have either).
        audit: list[Any] | None = None
        for position, row in enumerate(rows):
            extra = extras.get(row)
            if extra is None:
                continue
            for name, paths in extra.get("mutated", {}).items():
                key = f"mutated.{name}"
                if key not in ordered:
                    ordered[key] = [missing] * count
                ordered[key][position] = list(paths)
            if "audit" in extra:
                if audit is None:
                    audit = [missing] * count
                audit[position] = extra["audit"]
        if audit is not None:
            ordered["audit"] = audit
    environments = table.environment
    if any(environments[row] is not None for row in rows):
        # Last: where each state was computed (missing where its record does not say). Rows
        # share a few environments: each one's values are read once, then transposed.
        unknown = (missing,) * len(TABLE_KEYS)
        values: dict[int, tuple[Any, ...]] = {id(None): unknown}
        for environment in {id(e): e for e in map(environments.__getitem__, rows)}.values():
            if environment is not None:
                values[id(environment)] = tuple(environment.get(key) for key in TABLE_KEYS)
        by_row = [values[id(environments[row])] for row in rows]
        for key, column_values in zip(TABLE_KEYS, zip(*by_row, strict=True), strict=True):
            ordered[f"env.{key}"] = list(column_values)
    columns.update(ordered)
    return columns
