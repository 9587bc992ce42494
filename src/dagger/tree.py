"""StaticExperimentTree and NodeSet: the stored tree, slim, for filtering and inspection.

A restored tree holds *slim* states: ids, parents, recipes and their parameters, tags,
status, timings and recorded results, read from the records alone. Weights are loaded only on
request, one state at a time (:meth:`ExperimentState.lazy_load`, :attr:`NodeSet.iterator`).
"""

from __future__ import annotations

import difflib
import fnmatch
import functools
import logging
from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from .errors import ColumnNotFoundError, StateNotFoundError
from .state import ExperimentState
from .store import Results

if TYPE_CHECKING:
    import os
    from collections.abc import Mapping
    from pathlib import Path

    import graphviz
    import pandas
    from matplotlib.figure import Figure

    from .experiment import Experiment
    from .store import SlimEntry

__all__ = ["Lineage", "LineageDiff", "NodeSet", "StaticExperimentTree"]

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
            TypeError: ``pattern`` is not a string.
        """
        if not isinstance(pattern, str):
            raise TypeError(f"filter() takes a glob pattern string; got {pattern!r}.")
        negate = pattern.startswith("!")
        if negate:
            pattern = pattern[1:]
        tags = {tag for node in self for tag in node.tags}
        if self and not any(fnmatch.fnmatchcase(tag, pattern) for tag in tags):
            logger.warning(
                "No state here has a tag matching %r%s. Tags: %s.",
                pattern,
                _suggest(pattern, tags),
                ", ".join(sorted(tags)) or "none",
            )
        return NodeSet(
            node
            for node in self
            if negate ^ any(fnmatch.fnmatchcase(tag, pattern) for tag in node.tags)
        )

    def where(self, **conditions: Any) -> NodeSet:
        """States whose recipe parameters or properties equal the given values.

        A value may also be a predicate: ``where(amount=lambda a: a > 0.5)``. A name that no
        state has raises KeyError with the names that exist.
        """
        known: set[str] = set()
        for node in self:
            known.update(node.properties)
            if node.recipe is not None:
                known.update(node.recipe.params)
        unknown = [name for name in conditions if name not in known]
        if unknown and self:
            raise ColumnNotFoundError(
                f"No state here has a parameter or property named {unknown[0]!r}"
                + _suggest(unknown[0], known)
                + f". Known: {', '.join(sorted(known)) or 'none'}.",
                name=unknown[0],
            )

        def matches(node: ExperimentState) -> bool:
            for name, wanted in conditions.items():
                value = _param(node, name)
                if value is _MISSING:
                    return False
                if callable(wanted):
                    if not wanted(value):
                        return False
                elif value != wanted:
                    return False
            return True

        return NodeSet(node for node in self if matches(node))

    def of_recipe(self, recipe: type | str) -> NodeSet:
        """States produced by a recipe class (or a class name)."""
        name = recipe if isinstance(recipe, str) else recipe.__qualname__
        return NodeSet(
            node for node in self if node.recipe is not None and node.recipe.name == name
        )

    def select(self, predicate: Callable[[ExperimentState], bool]) -> NodeSet:
        """States for which ``predicate(state)`` is true (the state is slim)."""
        return NodeSet(node for node in self if predicate(node))

    @property
    def leaves(self) -> NodeSet:
        """States of this set that have no children."""
        return NodeSet(node for node in self if not node.children)

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
                    + _suggest(item, known)
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
            if node.status == "failed":
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
        and recorded results flattened to columns (``param.<name>``, ``result.<name>``)."""
        import pandas

        rows = [_row(node) for node in self]
        frame = pandas.DataFrame(rows)
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
        raise TypeError(f"A NodeSet composes with another NodeSet; got {type(other).__name__}.")


def _param(node: ExperimentState, name: str) -> Any:
    if node.recipe is not None and name in node.recipe.params:
        return node.recipe.params[name]
    if name in node.properties:
        return node.properties[name]
    return _MISSING


def _column(node: ExperimentState, name: str) -> Any:
    if name in ("depth", "seconds", "created", "status", "id"):
        if name == "id":
            return node.sha()
        if name == "depth":
            return getattr(node, "depth", None)
        if name == "status":
            return node.status
        return (node.record or {}).get(name)
    if name.startswith("result."):
        name = name[len("result.") :]
        return _result_summary(node, name)
    if name.startswith("param."):
        name = name[len("param.") :]
    value = _param(node, name)
    if value is _MISSING:
        value = _result_summary(node, name)
    return value


def _result_summary(node: ExperimentState, name: str) -> Any:
    """A recorded result by name; ``name.key.subkey`` reaches into a dict result."""
    results = node.results
    head, *path = name.split(".")
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
        known.update(node.properties)
        if node.recipe is not None:
            known.update(node.recipe.params)
        for key in _row(node):
            if key.startswith(("result.", "param.")):
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
    record = node.record or {}
    row: dict[str, Any] = {
        "id": node.sha(),
        "parent": node.parent_sha,
        "depth": getattr(node, "depth", None),
        "recipe": node.recipe.name
        if node.recipe is not None
        else ("root" if node.root_state else None),
        "tags": list(node.tags),
        "status": node.status,
        "seconds": record.get("seconds"),
        "created": record.get("created"),
    }
    for name, value in node.properties.items():
        row[f"property.{name}"] = value
    if node.recipe is not None:
        for name, value in node.recipe.params.items():
            row[f"param.{name}"] = value
    results = node.results
    for name in results:
        summary = results.summary(name) if isinstance(results, Results) else results[name]
        _flatten(f"result.{name}", summary, row)
    return row


def _suggest(wanted: str, candidates: Iterable[str]) -> str:
    close = difflib.get_close_matches(wanted, list(candidates), n=3, cutoff=0.5)
    return f" (did you mean {', '.join(map(repr, close))}?)" if close else ""


def _step(state: ExperimentState) -> str:
    if state.recipe is None:
        return "root" if state.root_state else f"{(state.sha() or '')[:12]}"
    return str(state.recipe)


class Lineage(NodeSet):
    """A root-to-state path: a NodeSet whose ``str`` is the chain of recipes."""

    def __str__(self) -> str:
        return " -> ".join(_step(state) for state in self)

    @property
    def recipes(self) -> list[Any]:
        """The recipe of each step (None for the root)."""
        return [state.recipe for state in self]


@dataclass
class LineageDiff:
    """How two states' lineages compare.

    Attributes:
        common: The shared path, root to the last common ancestor.
        only_a: The steps after it that lead to the first state.
        only_b: The steps after it that lead to the second state.
    """

    common: Lineage
    only_a: Lineage
    only_b: Lineage

    @property
    def ancestor(self) -> ExperimentState | None:
        """The last state both lineages share (None if they share nothing)."""
        return self.common[-1] if self.common else None

    @property
    def changes(self) -> list[tuple[Any, Any, dict[str, tuple[Any, Any]]]]:
        """Step by step after the split: (recipe a, recipe b, {param: (value a, value b)}).

        A step one lineage lacks has None on that side.
        """
        rows = []
        for index in range(max(len(self.only_a), len(self.only_b))):
            left = self.only_a[index].recipe if index < len(self.only_a) else None
            right = self.only_b[index].recipe if index < len(self.only_b) else None
            left_params = left.params if left is not None else {}
            right_params = right.params if right is not None else {}
            differing = {
                name: (left_params.get(name), right_params.get(name))
                for name in sorted({*left_params, *right_params})
                if left_params.get(name, _MISSING) != right_params.get(name, _MISSING)
            }
            rows.append((left, right, differing))
        return rows

    def __str__(self) -> str:
        lines = [f"common: {self.common or '(nothing)'}"]
        lines.append(f"a:      ... -> {self.only_a}" if self.only_a else "a:      (the ancestor)")
        lines.append(f"b:      ... -> {self.only_b}" if self.only_b else "b:      (the ancestor)")
        for index, (left, right, differing) in enumerate(self.changes, start=1):
            if left is not None and right is not None and left.name == right.name:
                what = ", ".join(f"{k}: {va!r} vs {vb!r}" for k, (va, vb) in differing.items())
                lines.append(f"step {index}: {left.name} differs in {what or 'code'}")
            else:
                lines.append(f"step {index}: {left or '-'} vs {right or '-'}")
        return "\n".join(lines)


class StaticExperimentTree:
    """The stored tree of an experiment, slim.

    Attributes:
        node_map: id -> slim state.
        edge_map: id -> set of the ids of its children.
        toposort: depth -> set of the ids at that distance from the root.
    """

    def __init__(
        self,
        node_map: dict[str, ExperimentState],
        edge_map: dict[str, set[str]],
        toposort: dict[int, set[str]],
    ) -> None:
        self.node_map = node_map
        self.edge_map = edge_map
        self.toposort = toposort

    @classmethod
    def from_store(
        cls, experiment: Experiment, entries: dict[str, SlimEntry]
    ) -> StaticExperimentTree:
        """Build the tree from the store's slim entries (records, annotations, failures)."""
        state_class = experiment.state_class
        store = experiment.store
        node_map: dict[str, ExperimentState] = {}
        for sha, entry in entries.items():
            document = entry.record
            if document is None:
                if entry.failure is None:
                    continue
                document = entry.failure
            state = state_class.__new__(state_class)
            state._reset_bookkeeping()
            state._apply_record(
                experiment, document, entry.notes, Results(store, entry.notes.get("results", {}))
            )
            state.slim_loaded = True
            if entry.record is not None and not entry.has_payload:
                state.status = "missing"
            node_map[sha] = state
        edge_map: dict[str, set[str]] = defaultdict(set)
        for sha, state in node_map.items():
            parent: ExperimentState | None = (
                node_map.get(state.parent_sha) if state.parent_sha else None
            )
            if parent is not None:
                state.parent = parent
                parent.children.add(state)
                edge_map[parent.sha() or ""].add(sha)
        toposort: dict[int, set[str]] = defaultdict(set)
        level = [s for s in node_map.values() if s.parent is None]
        depth = 0
        while level:
            following: list[ExperimentState] = []
            for state in level:
                state.__dict__["depth"] = depth
                toposort[depth].add(state.sha() or "")
                following.extend(state.children)
            level = following
            depth += 1
        return cls(node_map, edge_map, dict(toposort))

    # -- access --------------------------------------------------------------------------------

    def _ordered(self, ids: Iterable[str]) -> NodeSet:
        states = [self.node_map[sha] for sha in ids]
        states.sort(
            key=lambda s: (getattr(s, "depth", 0), (s.record or {}).get("created", ""), s.sha())
        )
        return NodeSet(states)

    @property
    def nodes(self) -> NodeSet:
        """Every state, root first, then by depth and creation time."""
        return self._ordered(self.node_map)

    @property
    def roots(self) -> NodeSet:
        return self._ordered(self.toposort.get(0, ()))

    @property
    def root(self) -> ExperimentState:
        """The root state.

        Raises:
            StateNotFoundError: The directory holds no tree, or several (see :attr:`roots`).
        """
        roots = self.roots
        if len(roots) != 1:
            raise StateNotFoundError(
                f"This experiment holds {len(roots)} roots, not one"
                + (f" ({', '.join(roots.ids)}); use tree.roots." if roots else ".")
            )
        return roots[0]

    @property
    def leaves(self) -> NodeSet:
        return self.nodes.leaves

    def node(self, sha: str) -> ExperimentState:
        """The state with this id, or with this unique id prefix.

        Raises:
            StateNotFoundError: No state matches, or the prefix is ambiguous.
        """
        state = self.node_map.get(sha)
        if state is not None:
            return state
        matches = [key for key in self.node_map if key.startswith(sha)]
        if len(matches) == 1:
            return self.node_map[matches[0]]
        if matches:
            raise StateNotFoundError(
                f"The id prefix {sha!r} matches {len(matches)} states ("
                + ", ".join(m[:16] for m in sorted(matches)[:5])
                + "); give more characters.",
                sha=sha,
            )
        prefixes = {key[: len(sha)]: key for key in self.node_map}
        close = difflib.get_close_matches(sha, list(prefixes), n=3)
        hint = f" Nearest: {', '.join(prefixes[p][:12] for p in close)}." if close else ""
        raise StateNotFoundError(
            f"No state has an id starting with {sha!r} in this experiment "
            f"({len(self.node_map)} states).{hint}",
            sha=sha,
        )

    def nodes_at_distance(self, distance: int) -> NodeSet:
        """States ``distance`` steps below the root (empty if there are none)."""
        return self._ordered(self.toposort.get(distance, ()))

    def _resolve(self, state: ExperimentState | str) -> ExperimentState:
        if isinstance(state, str):
            return self.node(state)
        sha = state.sha()
        if sha is None or sha not in self.node_map:
            raise StateNotFoundError(f"{state!r} is not a state of this tree.", sha=sha)
        return self.node_map[sha]

    def lineage(self, state: ExperimentState | str) -> Lineage:
        """The path from the root to ``state`` (a state, an id or a unique prefix).

        Each element is a slim state; ``element.recipe`` is the recipe (and its parameters)
        that produced it. ``str(lineage)`` reads ``root -> Train(lr=0.1) -> Prune(...)``.
        """
        path = []
        cursor: ExperimentState | None = self._resolve(state)
        while cursor is not None:
            path.append(cursor)
            cursor = cursor.parent
        return Lineage(reversed(path))

    def diff(self, a: ExperimentState | str, b: ExperimentState | str) -> LineageDiff:
        """Where the lineages of two states part, and what differs after that."""
        first, second = self.lineage(a), self.lineage(b)
        shared = 0
        while shared < min(len(first), len(second)) and first[shared].sha() == second[shared].sha():
            shared += 1
        return LineageDiff(
            common=Lineage(first[:shared]),
            only_a=Lineage(first[shared:]),
            only_b=Lineage(second[shared:]),
        )

    # -- display (drawing lives in dagger/render.py, imported only when asked) ----------------

    def to_graphviz(
        self,
        label: Callable[[ExperimentState], str] | None = None,
        node_args: Mapping[str, Any] | None = None,
        **options: Any,
    ) -> graphviz.Digraph:
        """A Graphviz drawing: one node per state (recipe, parameters, short id, tags,
        status, results; failed states red), edges parent -> child.

        Args:
            label: ``label(state) -> str`` used instead of the default label.
            node_args: Graphviz node attributes applied to every node.
            **options: ``color="result.evaluate.accuracy"`` (fill by a table column, with a
                key), ``cmap``, ``collapse=20``, ``expand=[ids]``, ``max_nodes=200`` (fold
                large sibling groups of large trees): see :func:`dagger.render.to_graphviz`.

        Raises:
            GraphvizNotInstalledError: The graphviz package is missing (``pip install
                "dagger[viz]"``).
        """
        from . import render

        return render.to_graphviz(self, label=label, node_args=node_args, **options)

    def to_dot(
        self,
        label: Callable[[ExperimentState], str] | None = None,
        node_args: Mapping[str, Any] | None = None,
        **options: Any,
    ) -> str:
        """The DOT source of :meth:`to_graphviz` (needs no Graphviz program)."""
        from . import render

        return render.to_dot(self, label=label, node_args=node_args, **options)

    def draw(
        self,
        filename: str | os.PathLike[str] = "graph",
        format: str = "png",
        label: Callable[[ExperimentState], str] | None = None,
        node_args: Mapping[str, Any] | None = None,
        view: bool = False,
        **options: Any,
    ) -> Path:
        """Write the drawing to ``filename.format`` (png, svg or pdf) and return its path.

        ``view=True`` shows it inline in Jupyter, else in the system's viewer if there is one.
        ``**options`` as for :meth:`to_graphviz` (``color=``, ``collapse=``, ``expand=``).

        Raises:
            UnknownFormatError: (a ValueError) another format was asked for.
            GraphvizNotFoundError: Graphviz's ``dot`` program is not installed; the message
                says how to install it. :meth:`to_dot` works without it.
        """
        from . import render

        return render.draw(
            self, filename, format=format, label=label, node_args=node_args, view=view, **options
        )

    def report(self, path: str | os.PathLike[str] = "report.html", **options: Any) -> Path:
        """Write a self-contained HTML report of the tree (drawing, table, plots) to ``path``.

        ``**options``: see :func:`dagger.report.write_report` (``title``, ``color``, ``plots``).
        """
        from .report import write_report

        return write_report(self, path, **options)

    def _repr_mimebundle_(
        self, include: Iterable[str] | None = None, exclude: Iterable[str] | None = None
    ) -> dict[str, str]:
        # Jupyter shows the tree drawn as SVG, or as text when Graphviz is missing.
        from . import render

        return render.mimebundle(self)

    def __len__(self) -> int:
        return len(self.node_map)

    def __repr__(self) -> str:
        return f"StaticExperimentTree({len(self.node_map)} states, depth {len(self.toposort) - 1})"
