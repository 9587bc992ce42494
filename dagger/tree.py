"""StaticExperimentTree and NodeSet: the stored tree, slim, for filtering and inspection.

A restored tree holds *slim* states: ids, parents, recipes and their parameters, tags,
status, timings and recorded results, read from the records alone. Weights are loaded only on
request, one state at a time (:meth:`ExperimentState.lazy_load`, :attr:`NodeSet.iterator`).
"""

from __future__ import annotations

import difflib
import fnmatch
from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator
from typing import TYPE_CHECKING, Any

from .errors import StateNotFoundError
from .state import ExperimentState
from .store import Results

if TYPE_CHECKING:
    import pandas

    from .experiment import Experiment
    from .store import SlimEntry

__all__ = ["NodeSet", "StaticExperimentTree"]

_MISSING = object()


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
            raise StateNotFoundError(
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
        """Sorted by parameters, properties, results or ``depth``/``seconds``/``created``,
        or by functions of the state. Missing values sort last."""

        def key(node: ExperimentState) -> tuple[Any, ...]:
            parts = []
            for item in keys:
                value = item(node) if callable(item) else _column(node, item)
                parts.append((value is _MISSING or value is None, _sortable(value)))
            return tuple(parts)

        return NodeSet(sorted(self, key=key, reverse=reverse))

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
        """Each state fully loaded in turn, and deflated again before the next one."""
        for node in self:
            with node.lazy_load():
                yield node

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
    results = node.results
    if isinstance(results, Results):
        return results.summary(name) if name in results else _MISSING
    return results.get(name, _MISSING) if isinstance(results, dict) else _MISSING


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

    def __len__(self) -> int:
        return len(self.node_map)

    def __repr__(self) -> str:
        return f"StaticExperimentTree({len(self.node_map)} states, depth {len(self.toposort) - 1})"
