"""StaticExperimentTree: the stored tree, slim, for navigation, lineage and drawings.

A restored tree holds *slim* states: ids, parents, recipes and their parameters, tags,
status, timings and recorded results, read from the records alone. Weights are loaded only on
request, one state at a time (:meth:`ExperimentState.lazy_load`, :attr:`NodeSet.iterator`).
"""

from __future__ import annotations

import bisect
import dataclasses
import difflib
import logging
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ._names import short_id
from .environment import environment_changes
from .errors import StateNotFoundError
from .loading import slim_state
from .nodeset import NodeSet
from .state import ExperimentState
from .store import SlimTable, Store
from .store.table import paused_gc

if TYPE_CHECKING:
    import os
    from pathlib import Path

    import graphviz

__all__ = ["Lineage", "LineageDiff", "StaticExperimentTree"]

_MISSING = object()

logger = logging.getLogger("dagger")


def _creation_order(state: ExperimentState) -> tuple[str, str]:
    """When a state was created (records stamp it to the microsecond), its id breaking ties:
    a stable order, never the order of a directory listing or of a hash."""
    return (state.dagger.created or "", state.sha() or "")


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
        environment: What differs between the environments the two states were computed in,
            one line each (``"torch 2.13.0 -> 2.14.1"``, ``"git 1a2b3c4d5e6f -> 4d5e6f7a8b9c
            (dirty)"``; see :func:`dagger.environment.environment_changes`); empty when they
            match or neither record holds one.
        ingredients: For each step after the split (as in :attr:`changes`), what else the two
            states' recorded ingredients differ in besides the parameters that differ (code,
            globals, defaults, library versions: :meth:`dagger.explain.Explanation.changes_from`
            lines, such as ``"global LR 0.1 -> 0.05"``); None where a side is missing, the
            recipes differ, or either record predates ingredients (then only "differs in
            code" can be said).
    """

    common: Lineage
    only_a: Lineage
    only_b: Lineage
    environment: tuple[str, ...] = ()
    ingredients: tuple[tuple[str, ...] | None, ...] = ()

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
                recorded = self.ingredients[index - 1] if index <= len(self.ingredients) else None
                if recorded:
                    what = "; ".join([what, *recorded] if what else recorded)
                if what:
                    lines.append(f"step {index}: {left.name} differs in {what}")
                elif left.code != right.code:
                    lines.append(f"step {index}: {left.name} differs in code")
                else:
                    # The same recipe with the same parameters and code: these states differ
                    # only because the states they were computed from differ.
                    lines.append(f"step {index}: the same {left} on both (after different steps)")
            else:
                lines.append(f"step {index}: {left or '-'} vs {right or '-'}")
        lines.extend(f"environment: {change}" for change in self.environment)
        return "\n".join(lines)


def _ingredient_changes(left: ExperimentState, right: ExperimentState) -> tuple[str, ...] | None:
    """What two states made by the same recipe differ in besides their parameters, from the
    ingredients their records keep (records only, no payload); None when not recorded.

    Their parents and differing parameters are taken as equal before comparing: the parents
    differ after the first step by construction, and :attr:`LineageDiff.changes` already
    names the parameters.
    """
    recipe_a, recipe_b = left.dagger.recipe, right.dagger.recipe
    if recipe_a is None or recipe_b is None or recipe_a.name != recipe_b.name:
        return None
    try:
        before, after = left.dagger.explain(), right.dagger.explain()
    except StateNotFoundError:  # a state without a record (being computed, never stored)
        return None
    if not (before.recorded and after.recorded):
        return None
    values, digests = dict(after.values), dict(after.value_digests)
    for key in {*before.values, *after.values}:
        if before.values.get(key, _MISSING) == after.values.get(key, _MISSING):
            continue  # equal views: a digest difference (0.1 vs float32 0.1) is worth a line
        for mine, theirs in ((values, before.values), (digests, before.value_digests)):
            if key in theirs:
                mine[key] = theirs[key]
            else:
                mine.pop(key, None)
    aligned = dataclasses.replace(
        after, parent_id=before.parent_id, values=values, value_digests=digests
    )
    return tuple(aligned.changes_from(before))


class _NodeMap(Mapping[str, ExperimentState]):
    """id -> slim state, made on first access (the tree's states in creation order)."""

    def __init__(self, tree: StaticExperimentTree) -> None:
        self._tree = tree

    def __getitem__(self, sha: str) -> ExperimentState:
        row = self._tree.table.row(sha)
        if row is None:
            raise KeyError(sha)
        return self._tree.state(row)

    def __iter__(self) -> Iterator[str]:
        return iter(self._tree.table.ids)

    def __len__(self) -> int:
        return len(self._tree.table)

    def __contains__(self, sha: object) -> bool:
        return isinstance(sha, str) and self._tree.table.row(sha) is not None


class _EdgeMap(Mapping[str, set[str]]):
    """id -> set of its children's ids; every state is a key (a leaf maps to an empty set)."""

    def __init__(self, tree: StaticExperimentTree) -> None:
        self._tree = tree

    def __getitem__(self, sha: str) -> set[str]:
        tree = self._tree
        row = tree.table.row(sha)
        if row is None:
            raise KeyError(sha)
        ids = tree.table.ids
        return {ids[child] for child in tree.child_rows(row)}

    def __iter__(self) -> Iterator[str]:
        return iter(self._tree.table.ids)

    def __len__(self) -> int:
        return len(self._tree.table)

    def __contains__(self, sha: object) -> bool:
        return isinstance(sha, str) and self._tree.table.row(sha) is not None

    def __eq__(self, other: object) -> bool:
        if isinstance(other, Mapping):
            return dict(self.items()) == dict(other.items())
        return NotImplemented

    def __repr__(self) -> str:
        return repr(dict(self.items()))


class StaticExperimentTree:
    """The stored tree of an experiment, slim: a forest when the experiment has several roots.

    Built from one snapshot of the store (a :class:`~dagger.store.SlimTable`); its states are
    made when first used, so restoring 100,000 states builds none of them until asked.

    Order: states are in creation order (the store's sequence numbers; ties by id), so siblings
    are in the order they were computed, which for one run is the order they were defined.
    ``nodes`` lists them root first, level by level.

    Attributes:
        table: The snapshot the tree is built from.
        node_map: id -> slim state.
        edge_map: id -> set of the ids of its children (every state is a key).
        toposort: depth -> set of the ids at that distance from their root.
    """

    def __init__(self, table: SlimTable, owner: Any, state_class: type[ExperimentState]) -> None:
        self.table = table
        self.owner = owner
        self.state_class = state_class
        self._states: list[ExperimentState | None] = [None] * len(table)
        self._depths: list[int] | None = None
        self._children: list[list[int]] | None = None
        self._order: list[int] | None = None
        self._sorted_ids: list[str] | None = None
        self.node_map: Mapping[str, ExperimentState] = _NodeMap(self)
        self.edge_map: Mapping[str, set[str]] = _EdgeMap(self)

    @classmethod
    def from_store(
        cls,
        owner: Any,
        state_class: type[ExperimentState],
        store: Store,
        table: SlimTable | None = None,
    ) -> StaticExperimentTree:
        """The tree of what ``store`` holds now (one snapshot: ``store.snapshot()``).

        Args:
            owner: What the slim states call back to load themselves (the Experiment).
            state_class: The class the slim states are made of.
            store: The store.
            table: A snapshot already taken (default: take one).
        """
        return cls(table if table is not None else store.snapshot(), owner, state_class)

    # -- rows (SlimSource) -----------------------------------------------------------------------

    def state(self, row: int) -> ExperimentState:
        """The slim state of a row (made once, then the same object)."""
        state = self._states[row]
        if state is None:
            state = self._states[row] = slim_state(self.state_class, self, row)
        return state

    def depth(self, row: int) -> int:
        if self._depths is None:
            self._depths = self.table.depths()
        return self._depths[row]

    def child_rows(self, row: int) -> list[int]:
        if self._children is None:
            self._children = self.table.children()
        return self._children[row]

    def _rows_in_order(self) -> list[int]:
        """Every row, root first, level by level, creation order within a level."""
        if self._order is None:
            if self._depths is None:
                self._depths = self.table.depths()
            depths = self._depths
            self._order = sorted(range(len(self.table)), key=depths.__getitem__)
        return self._order

    def _nodeset(self, rows: Iterable[int]) -> NodeSet:
        state = self.state
        with paused_gc():  # (see paused_gc: many objects at once, none in a cycle)
            return NodeSet([state(row) for row in rows])

    @property
    def toposort(self) -> dict[int, set[str]]:
        """depth -> set of the ids at that distance from their root."""
        found: dict[int, set[str]] = {}
        ids = self.table.ids
        for row in self._rows_in_order():
            found.setdefault(self.depth(row), set()).add(ids[row])
        return found

    # -- access --------------------------------------------------------------------------------

    @property
    def nodes(self) -> NodeSet:
        """Every state, root first, then level by level in creation order."""
        return self._nodeset(self._rows_in_order())

    @property
    def roots(self) -> NodeSet:
        """The roots, in creation order (a state whose parent is not stored counts as one)."""
        depth = self.depth
        return self._nodeset(row for row in range(len(self.table)) if depth(row) == 0)

    @property
    def root(self) -> ExperimentState:
        """The root state, when the experiment has exactly one.

        Raises:
            StateNotFoundError: The directory holds no tree, or several (see :attr:`roots`).
        """
        roots = self.roots
        if len(roots) != 1:
            listed = "; ".join(
                f"{short_id(state.sha())}"
                + "".join(f" {key}={value!r}" for key, value in state.dagger.properties.items())
                for state in roots[:5]
            )
            more = f"; and {len(roots) - 5} more" if len(roots) > 5 else ""
            raise StateNotFoundError(
                f"This experiment holds {len(roots)} roots, not one"
                + (
                    f" (a forest: {listed}{more}), so tree.root would be ambiguous. Use "
                    "tree.roots, or state.root for the root of a given state."
                    if roots
                    else ": nothing is stored yet."
                ),
                roots=roots.ids,
            )
        return roots[0]

    @property
    def leaves(self) -> NodeSet:
        """States without children, in the order of :attr:`nodes`."""
        child_rows = self.child_rows
        return self._nodeset(row for row in self._rows_in_order() if not child_rows(row))

    def node(self, sha: str) -> ExperimentState:
        """The state with this id, or with this unique id prefix (ids are hexadecimal: any
        case matches, as ``dagger rm`` takes them).

        Raises:
            StateNotFoundError: No state matches, or the prefix is ambiguous.
        """
        sha = sha.strip().lower() if isinstance(sha, str) else sha
        row = self.table.row(sha)
        if row is not None:
            return self.state(row)
        if self._sorted_ids is None:
            self._sorted_ids = sorted(self.table.ids)
        ordered = self._sorted_ids
        start = bisect.bisect_left(ordered, sha)
        matches = []
        for key in ordered[start:]:
            if not key.startswith(sha):
                break
            matches.append(key)
            if len(matches) > 5:
                break
        if len(matches) == 1:
            return self.node_map[matches[0]]
        if matches:
            total = bisect.bisect_left(ordered, sha + "\uffff") - start if sha else len(ordered)
            raise StateNotFoundError(
                f"The id prefix {sha!r} matches {total} states ("
                + ", ".join(m[:16] for m in matches[:5])
                + "); give more characters.",
                sha=sha,
            )
        neighbours = ordered[max(start - 3, 0) : start + 3]
        prefixes = {key[: len(sha)]: key for key in neighbours}
        close = difflib.get_close_matches(sha, list(prefixes), n=3)
        hint = f" Nearest: {', '.join(prefixes[p][:12] for p in close)}." if close else ""
        raise StateNotFoundError(
            f"No state has an id starting with {sha!r} in this experiment "
            f"({len(self.table)} states).{hint}",
            sha=sha,
        )

    def nodes_at_distance(self, distance: int) -> NodeSet:
        """States ``distance`` steps below their root (empty if there are none)."""
        depth = self.depth
        return self._nodeset(row for row in self._rows_in_order() if depth(row) == distance)

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
        start = self._resolve(state)
        row = self.table.row(start.sha() or "")
        rows: list[int] = []
        parent = self.table.parent
        seen: set[int] = set()
        while row is not None and row >= 0 and row not in seen:
            rows.append(row)
            seen.add(row)
            row = parent[row]
        return Lineage(self.state(item) for item in reversed(rows))

    def diff(self, a: ExperimentState | str, b: ExperimentState | str) -> LineageDiff:
        """Where the lineages of two states part, and what differs after that."""
        first, second = self.lineage(a), self.lineage(b)
        shared = 0
        while shared < min(len(first), len(second)) and first[shared].sha() == second[shared].sha():
            shared += 1
        only_a, only_b = first[shared:], second[shared:]
        return LineageDiff(
            common=Lineage(first[:shared]),
            only_a=Lineage(only_a),
            only_b=Lineage(only_b),
            environment=tuple(
                environment_changes(first[-1].dagger.environment, second[-1].dagger.environment)
            ),
            ingredients=tuple(
                _ingredient_changes(left, right)
                for left, right in zip(only_a, only_b, strict=False)
            ),
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
        return len(self.table)

    def __repr__(self) -> str:
        depth = max((self.depth(row) for row in range(len(self.table))), default=-1)
        return f"StaticExperimentTree({len(self.table)} states, depth {depth})"
