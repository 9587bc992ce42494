"""StaticExperimentTree: the stored tree, slim, for navigation, lineage and drawings.

A restored tree holds *slim* states: ids, parents, recipes and their parameters, tags,
status, timings and recorded results, read from the records alone. Weights are loaded only on
request, one state at a time (:meth:`ExperimentState.lazy_load`, :attr:`NodeSet.iterator`).
"""

from __future__ import annotations

import difflib
import logging
from collections import defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ._names import short_id
from .errors import StateNotFoundError
from .loading import slim_state
from .nodeset import NodeSet
from .state import ExperimentState
from .store import SlimEntry, Store

if TYPE_CHECKING:
    import os
    from collections.abc import Mapping
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
        return "\n".join(lines)


class StaticExperimentTree:
    """The stored tree of an experiment, slim.

    Attributes:
        node_map: id -> slim state.
        edge_map: id -> set of the ids of its children, with a key for every node (a leaf
            maps to an empty set).
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
        cls,
        owner: Any,
        state_class: type[ExperimentState],
        store: Store,
        entries: dict[str, SlimEntry],
    ) -> StaticExperimentTree:
        """Build the tree from a store's slim entries (records, notes, failures).

        Args:
            owner: What the slim states call back to load themselves (the Experiment).
            state_class: The class the slim states are made of.
            store: The store they come from (recorded results load from it).
            entries: ``store.slim_entries()``.
        """
        node_map: dict[str, ExperimentState] = {}
        for sha, entry in entries.items():
            record = entry.record if entry.record is not None else entry.failure
            if record is None:
                continue
            node_map[sha] = slim_state(
                state_class,
                owner=owner,
                store=store,
                record=record,
                notes=entry.notes,
                has_payload=entry.has_payload,
            )
        # A key for every node (a leaf maps to an empty set), as the original's edge_map had.
        edge_map: dict[str, set[str]] = {sha: set() for sha in node_map}
        for sha, state in node_map.items():
            parent_id = state.dagger.parent_id
            parent = node_map.get(parent_id) if parent_id else None
            if parent is not None:
                state.dagger.parent = parent
                parent.dagger.children.append(state)
                edge_map[parent.sha() or ""].add(sha)
        for state in node_map.values():
            state.dagger.children.sort(key=_creation_order)
        toposort: dict[int, set[str]] = defaultdict(set)
        level = [s for s in node_map.values() if s.dagger.parent is None]
        depth = 0
        while level:
            following: list[ExperimentState] = []
            for state in level:
                state.dagger.depth = depth
                toposort[depth].add(state.sha() or "")
                following.extend(state.dagger.children)
            level = following
            depth += 1
        return cls(node_map, edge_map, dict(toposort))

    # -- access --------------------------------------------------------------------------------

    def _ordered(self, ids: Iterable[str]) -> NodeSet:
        states = [self.node_map[sha] for sha in ids]
        states.sort(key=lambda state: (state.dagger.depth or 0, *_creation_order(state)))
        return NodeSet(states)

    @property
    def nodes(self) -> NodeSet:
        """Every state: roots first, then by depth; at one depth, in creation order (which,
        for states one run computed, is the order they were defined in), then by id.

        The order is the same in every process and every restore of the same store.
        """
        return self._ordered(self.node_map)

    @property
    def roots(self) -> NodeSet:
        """The roots (several in a forest: one per distinct root, e.g. one per seed)."""
        return self._ordered(self.toposort.get(0, ()))

    @property
    def root(self) -> ExperimentState:
        """The root state.

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
            cursor = cursor.dagger.parent
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
