"""Drawing a restored experiment tree: Graphviz, notebook display and plain text.

Everything here reads slim states only (records, tags, result summaries); no payload is
loaded. What is shown of a state is read in one place, :func:`facts`; tables of many states
come from ``NodeSet.to_dataframe()``. The ``graphviz`` package is imported inside the
functions that need it, so that ``import dagger`` works without it; drawing an image also needs
Graphviz's ``dot`` program, and colouring by a numeric column needs matplotlib (its colour maps).

    to_graphviz(tree)       a graphviz.Digraph, one node per state, edges parent -> child
    to_dot(tree)            its DOT source (needs the package, not the ``dot`` program)
    to_svg(tree)            the SVG markup (needs ``dot``)
    draw(tree, "graph")     writes graph.png (or .svg, .pdf) and returns its path
    to_text(tree)           the tree as indented lines, for terminals (``dagger show``)
    mimebundle(tree)        what a notebook shows: SVG, or the text when ``dot`` is missing
    layout(tree)            which states are drawn as one node each, which folded in groups
    color_scale(tree, col)  the colour of each state for ``color=col``

The drawing options shared by to_graphviz, to_dot, to_svg and draw:

    color="result.evaluate.accuracy"   fill each state by a table column: numbers on a
                                       perceptually uniform map (viridis) with a colour bar,
                                       anything else in a qualitative palette with a key
    collapse=20, max_nodes=200         a tree of more than ``max_nodes`` states folds each
                                       group of more than ``collapse`` siblings made by one
                                       recipe into one node ("48 x Prune, amount 0.1-0.95,
                                       ..."); collapse=None draws every state
    expand=[id, ...]                   these states (ids or prefixes) and their ancestors are
                                       never folded

Errors (defined in :mod:`dagger.errors`): GraphvizNotInstalledError (the graphviz package
is missing), GraphvizNotFoundError (the ``dot`` program is missing), UnknownFormatError
(draw() was asked for another format), ColumnNotFoundError (``color`` names no column),
PlotError (an unknown colour map or a bad ``collapse``), StateNotFoundError (``expand`` names
no state), MissingDependencyError (matplotlib is missing for a numeric ``color``).
"""

from __future__ import annotations

import difflib
import html
import logging
import math
import os
import re
import shutil
import statistics
import subprocess
import sys
import threading
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .errors import (
    GraphvizNotFoundError,
    GraphvizNotInstalledError,
    MissingDependencyError,
    PlotError,
    UnknownFormatError,
)
from .plots import OKABE_ITO, is_numeric, resolve_column
from .store import Results

if TYPE_CHECKING:
    import graphviz
    import pandas

    from .state import ExperimentState
    from .tree import StaticExperimentTree

__all__ = [
    "DEFAULT_COLLAPSE",
    "DRAW_FORMATS",
    "MAX_DRAWN_NODES",
    "ColorScale",
    "Drawing",
    "DrawnNode",
    "GraphvizNotFoundError",
    "GraphvizNotInstalledError",
    "StateFacts",
    "UnknownFormatError",
    "color_scale",
    "draw",
    "drawing",
    "facts",
    "format_value",
    "layout",
    "mimebundle",
    "state_line",
    "step_text",
    "to_dot",
    "to_graphviz",
    "to_svg",
    "to_text",
]

logger = logging.getLogger("dagger")

#: The file formats :func:`draw` writes.
DRAW_FORMATS = ("png", "svg", "pdf")
#: A tree with more states than this is drawn with its large sibling groups folded.
MAX_DRAWN_NODES = 200
#: Sibling groups larger than this are folded (when the tree is larger than MAX_DRAWN_NODES).
DEFAULT_COLLAPSE = 20

# How much of a state a label shows; a drawing of a tree is read at a glance, the table
# (``tree.nodes.to_dataframe()``) has everything.
MAX_RESULTS = 6
VALUE_WIDTH = 40
PARAMS_WIDTH = 40
MESSAGE_WIDTH = 80
TAG_WIDTH = 32
MAX_TAGS = 6
SHORT_ID = 12
# Laying out a large tree takes dot seconds to minutes; folding keeps the drawing small, but
# reading every state still costs: past this a notebook cell shows text instead.
MAX_INLINE_STATES = 2000
# A folded group lists at most this many distinct values of a text parameter.
GROUP_VALUES = 3
# Entries of a categorical colour key.
MAX_KEY_ENTRIES = 20

_FAILED_COLOR = "#b00020"
_MUTED_COLOR = "#666666"
_TAG_COLOR = "#1f5fa8"
_NO_VALUE_FILL = "#ffffff"
# Typography of folded groups: "48 x Prune, amount 0.1-0.95" with a multiplication sign and
# an en dash.
_TIMES = "\u00d7"
_DASH = "\u2013"

_INSTALL_DOT = (
    "Install Graphviz (`apt-get install graphviz`, `brew install graphviz` or "
    "`conda install graphviz`)"
)


# -- what is shown of one state: read in this one place --------------------------------------------


@dataclass(frozen=True)
class StateFacts:
    """What drawings, text and reports show of one state, read from its slim form.

    Attributes:
        id: The state's full id (64 hex digits).
        parent: The parent's id, None for a root.
        name: The recipe's class name; ``root`` for a root, ``state`` when unknown.
        has_recipe: Whether a recipe produced the state (False for a root).
        params: The recipe's parameters, or a root's properties, as recorded.
        tags: The state's tags, in order.
        status: ``done``, ``failed``, ``missing`` (payload gone), ``pruned``, ...
        seconds: How long the recipe ran, in seconds, if recorded.
        created: When the state was stored (ISO 8601, UTC), if recorded.
        error: ``{"type", "message", "traceback"}`` of a failed state, else None.
        results: Function results by name: the value when it is plain JSON, else its short
            repr (the names of those are in ``result_reprs``).
        result_reprs: The names in ``results`` whose value is a repr, not the value.
        function_errors: ``{name: {"type", "message", ...}}`` of Functions that failed.
        environment: What the record says about where the state was computed, if anything.
        mutated: ``{name: changed paths}`` of the Functions whose result was computed on the
            state while they changed it.
        audit: The outcome of the state's last audit (``reproduced``, ``differs``,
            ``error``), or None.
    """

    id: str
    parent: str | None
    name: str
    has_recipe: bool
    params: dict[str, Any]
    tags: tuple[str, ...]
    status: str
    seconds: float | None = None
    created: str | None = None
    error: dict[str, Any] | None = None
    results: dict[str, Any] = field(default_factory=dict)
    result_reprs: frozenset[str] = frozenset()
    function_errors: dict[str, dict[str, Any]] = field(default_factory=dict)
    environment: dict[str, Any] | None = None
    mutated: dict[str, tuple[str, ...]] = field(default_factory=dict)
    audit: str | None = None


def facts(state: ExperimentState) -> StateFacts:
    """What is shown of ``state`` (slim or full; nothing is loaded).

    This is the one function here that reads a state's bookkeeping (``state.dagger``);
    everything else works on its result.
    """
    info = state.dagger
    recipe = state.recipe
    if recipe is not None:
        name, params = str(recipe.name), dict(recipe.params)
    else:
        name = "root" if info.root else "state"
        params = dict(info.properties)
    stored_results = info.results
    results: dict[str, Any] = {}
    reprs: set[str] = set()
    mutated: dict[str, tuple[str, ...]] = {}
    for result_name in stored_results:
        if isinstance(stored_results, Results):
            entry = stored_results.entry(result_name)
            results[result_name] = entry.summary() if entry.inline else str(entry.repr or "?")
            if not entry.inline:
                reprs.add(result_name)
            if entry.mutated:
                mutated[result_name] = entry.mutated
        else:  # a state of a live run holds plain values
            results[result_name] = stored_results[result_name]
    errors = stored_results.errors if isinstance(stored_results, Results) else {}
    status = info.status.value
    error = info.error
    environment = info.environment  # from the table for a restored state: no record is read
    return StateFacts(
        id=state.sha() or "",
        parent=info.parent_id,
        name=name,
        has_recipe=recipe is not None,
        params=params,
        tags=tuple(str(tag) for tag in info.tags),
        status=status,
        seconds=info.seconds,
        created=info.created,
        error=error.to_json() if error is not None else ({} if status == "failed" else None),
        results=results,
        result_reprs=frozenset(reprs),
        function_errors={str(key): value.to_json() for key, value in errors.items()},
        environment=environment,
        mutated=mutated,
        audit=info.notes.audit.outcome if info.notes.audit is not None else None,
    )


def _facts_of(tree: StaticExperimentTree) -> dict[str, StateFacts]:
    return {fact.id: fact for fact in map(facts, tree.nodes)}


# -- formatting ------------------------------------------------------------------------------------


def _shorten(text: str, width: int) -> str:
    return text if len(text) <= width else text[: max(width - 3, 1)] + "..."


def _format_float(value: float) -> str:
    if not math.isfinite(value):
        return str(value)
    # Mid-sized magnitudes read better whole than in exponent form (12346, not 1.235e+04).
    if 1e4 <= abs(value) < 1e7:
        return f"{value:.0f}"
    return f"{value:.4g}"


def format_value(value: Any, width: int = VALUE_WIDTH) -> str:
    """A short, readable rendering of a recorded value: floats to 4 significant digits,
    containers element by element, everything cut to ``width`` characters.

    Args:
        value: A JSON value (or any object, shown by its repr).
        width: The most characters returned.

    Returns:
        The text, ending in ``...`` when it was cut.
    """
    if value is None or isinstance(value, bool | int):
        text = str(value)
    elif isinstance(value, float):
        text = _format_float(value)
    elif isinstance(value, str):
        text = repr(value)
    elif isinstance(value, list | tuple):
        # Format only what can fit: a list of a million floats must not cost a million calls.
        items = [format_value(item, width) for item in value[: width // 2]]
        more = ", ..." if len(value) > len(items) else ""
        text = "[" + ", ".join(items) + more + "]"
    elif isinstance(value, Mapping):
        pairs = list(value.items())[: width // 4]
        text = "{" + ", ".join(f"{key}: {format_value(item, width)}" for key, item in pairs)
        text += ", ...}" if len(value) > len(pairs) else "}"
    else:
        try:
            text = repr(value)
        except Exception:  # a broken __repr__ must not break a drawing
            text = f"<{type(value).__name__}>"
    return _shorten(text, width)


def _short_id(fact: StateFacts) -> str:
    return (fact.id or "?")[:SHORT_ID]


def _params_shown(fact: StateFacts) -> list[str]:
    """``name=value`` for the recipe's parameters, or for a root's properties."""
    # Parameters are part of the identity: shown by repr, not rounded like results.
    return [f"{name}={_shorten(repr(value), VALUE_WIDTH)}" for name, value in fact.params.items()]


def step_text(fact: StateFacts) -> str:
    """The step that made a state: ``Prune(method='l1', amount=0.5)``, ``root(seed=0)``."""
    params = _params_shown(fact)
    return f"{fact.name}({', '.join(params)})" if params or fact.has_recipe else fact.name


def _error_line(fact: StateFacts) -> str | None:
    """``Type: first line of the message`` for a failed state, else None."""
    if fact.status != "failed":
        return None
    error = fact.error or {}
    kind = str(error.get("type") or "Error")
    message = str(error.get("message") or "").strip().splitlines()
    return _shorten(f"{kind}: {message[0]}" if message else kind, MESSAGE_WIDTH)


def _flat_results(fact: StateFacts) -> list[tuple[str, Any, bool]]:
    """``(name, value, is_repr)`` of every result, one level of a dict flattened to
    ``name.key``."""
    items: list[tuple[str, Any, bool]] = []
    for name, value in fact.results.items():
        if name in fact.result_reprs:
            items.append((name, value, True))
        elif isinstance(value, dict) and value and all(isinstance(key, str) for key in value):
            items.extend((f"{name}.{key}", item, False) for key, item in value.items())
        else:
            items.append((name, value, False))
    return items


def _results_shown(fact: StateFacts) -> tuple[list[tuple[str, str]], int]:
    """Up to MAX_RESULTS ``(name, shown value)`` of the recorded results, and how many more.

    Plain JSON values are shown formatted; other values by the short repr stored with them.
    """
    items = [
        (name, _shorten(str(value), VALUE_WIDTH) if is_repr else format_value(value))
        for name, value, is_repr in _flat_results(fact)
    ]
    return items[:MAX_RESULTS], max(len(items) - MAX_RESULTS, 0)


def _function_errors(fact: StateFacts) -> list[tuple[str, str]]:
    """``(function name, error type)`` for each recorded Function that failed on the state."""
    return [
        (name, str(error.get("type") or "Error"))
        for name, error in sorted(fact.function_errors.items())
    ]


def _tag_shown(tag: str) -> str:
    # An empty or blank tag is shown quoted, so that it is visible at all.
    return repr(tag) if not tag.strip() else _shorten(tag, TAG_WIDTH)


def _tags_shown(tags: Sequence[str]) -> str:
    shown = ", ".join(_tag_shown(tag) for tag in tags[:MAX_TAGS])
    return shown + (f" +{len(tags) - MAX_TAGS} more" if len(tags) > MAX_TAGS else "")


def state_line(state: ExperimentState) -> str:
    """One line describing a state: recipe and parameters, short id, tags, status, results.

    Example: ``Train(lr=0.1)  3f2a9c0d1b7e  [baseline]  done  accuracy=0.9312``.
    """
    return _line(facts(state))


def _line(fact: StateFacts) -> str:
    parts = [step_text(fact), _short_id(fact)]
    if fact.tags:
        parts.append("[" + ", ".join(fact.tags) + "]")
    error = _error_line(fact)
    if error is not None:
        parts.append(f"FAILED {error}")
    elif fact.status == "missing":
        parts.append("missing (payload file gone; a run recomputes it)")
    else:
        parts.append(fact.status)
    shown, hidden = _results_shown(fact)
    if shown:
        parts.append(", ".join(f"{name}={value}" for name, value in shown))
    if hidden:
        parts.append(f"(+{hidden} more results)")
    for name, kind in _function_errors(fact):
        parts.append(f"{name}: FAILED {kind}")
    for name, paths in fact.mutated.items():
        parts.append(f"{name}: CHANGED THE STATE ({_shorten(', '.join(paths), VALUE_WIDTH)})")
    if fact.audit is not None:
        parts.append(f"audit: {fact.audit}")
    return "  ".join(parts)


# -- plain text ------------------------------------------------------------------------------------

_UNICODE_BRANCHES = ("├─ ", "└─ ", "│  ", "   ")
_ASCII_BRANCHES = ("|- ", "`- ", "|  ", "   ")


def _children(tree: StaticExperimentTree, order: dict[str, int], sha: str) -> list[str]:
    # Siblings in the order the tree gives its nodes (the order they were defined in).
    return sorted(tree.edge_map.get(sha, ()), key=lambda child: order.get(child, 0))


def to_text(tree: StaticExperimentTree, depth: int | None = None, unicode: bool = True) -> str:
    """The tree as text: one line per state (see :func:`state_line`), children indented
    under their parent with box-drawing characters, and a count of states by status.

    Args:
        tree: A restored tree (``Experiment.restore(directory).graph``).
        depth: Show states at most this many steps below a root; a cut branch ends in
            ``(+N below)``. None shows everything.
        unicode: Draw branches with ``├─ └─ │``; False uses ``|- `- |`` for terminals that
            cannot print them.

    Returns:
        The lines, joined by newlines, without a trailing newline.
    """
    tee, corner, bar, blank = _UNICODE_BRANCHES if unicode else _ASCII_BRANCHES
    known = _facts_of(tree)
    order = {sha: index for index, sha in enumerate(known)}
    lines: list[str] = []
    # An explicit stack, not recursion: a long chain of recipes is a deep tree.
    # Items: (id, prefix of this line, prefix of its children's lines, level).
    stack: list[tuple[str, str, str, int]] = [(sha, "", "", 0) for sha in reversed(tree.roots.ids)]
    while stack:
        sha, prefix, child_prefix, level = stack.pop()
        line = prefix + _line(known[sha])
        children = _children(tree, order, sha)
        if depth is not None and level >= depth and children:
            lines.append(f"{line}  (+{_count_below(tree, sha)} below)")
            continue
        lines.append(line)
        for index in reversed(range(len(children))):
            last = index == len(children) - 1
            stack.append(
                (
                    children[index],
                    child_prefix + (corner if last else tee),
                    child_prefix + (blank if last else bar),
                    level + 1,
                )
            )
    lines.append(_status_counts(fact.status for fact in known.values()))
    return "\n".join(lines)


def _count_below(tree: StaticExperimentTree, sha: str) -> int:
    count, pending = 0, list(tree.edge_map.get(sha, ()))
    while pending:
        count += 1
        pending.extend(tree.edge_map.get(pending.pop(), ()))
    return count


def _status_counts(statuses: Iterable[str]) -> str:
    counts = Counter(statuses)
    total = sum(counts.values())
    noun = "state" if total == 1 else "states"
    if not counts:
        return "0 states"
    return f"{total} {noun}: " + ", ".join(f"{n} {status}" for status, n in sorted(counts.items()))


# -- folding large trees ---------------------------------------------------------------------------


@dataclass(frozen=True)
class DrawnNode:
    """One node of a drawing: a single state, or a folded group of sibling states.

    Attributes:
        key: The Graphviz node name: the state's id, or ``group-<id of the first member>``.
        members: The ids of the states it stands for, in tree order (one for a plain node).
        parent: The key of the drawn node it hangs from, None for a root.
    """

    key: str
    members: tuple[str, ...]
    parent: str | None

    @property
    def folded(self) -> bool:
        """Whether the node stands for several states."""
        return len(self.members) > 1


def _check_collapse(collapse: int | None, max_nodes: int) -> None:
    if collapse is not None and (
        isinstance(collapse, bool) or not isinstance(collapse, int) or collapse < 1
    ):
        raise PlotError(
            f"collapse={collapse!r}: give the size above which sibling groups are folded "
            "(a whole number, 1 or more), or None to draw every state.",
            collapse=collapse,
        )
    if isinstance(max_nodes, bool) or not isinstance(max_nodes, int) or max_nodes < 0:
        raise PlotError(
            f"max_nodes={max_nodes!r}: give the number of states above which a tree is "
            "folded (a whole number, 0 or more).",
            max_nodes=max_nodes,
        )


def layout(
    tree: StaticExperimentTree,
    collapse: int | None = DEFAULT_COLLAPSE,
    expand: Iterable[str] = (),
    max_nodes: int = MAX_DRAWN_NODES,
) -> list[DrawnNode]:
    """Which nodes a drawing of ``tree`` has: every state, or, for a tree of more than
    ``max_nodes`` states, large sibling groups folded into one node each.

    Folding: the children of a state, when there are more than ``collapse`` of them, are
    grouped by the recipe that made them; a group of two or more is one node. The children of
    a folded group are grouped by recipe in turn, so a sweep of 48 ``Prune`` states each
    followed by ``FineTune`` draws as ``48 x Prune -> 48 x FineTune``. If the drawing still
    has more than ``max_nodes`` nodes, smaller groups are folded too (the threshold halves
    down to 1). The states in ``expand`` and their ancestors are never folded.

    Args:
        tree: A restored tree.
        collapse: Fold sibling groups larger than this; None never folds.
        expand: Ids (or unique prefixes) of states to draw one by one.
        max_nodes: Fold only trees with more states than this.

    Returns:
        The drawn nodes, depth first, each after its parent, siblings in tree order.

    Raises:
        PlotError: (a ValueError) ``collapse`` or ``max_nodes`` is not a valid number.
        StateNotFoundError: (a KeyError) An ``expand`` entry matches no state.
    """
    _check_collapse(collapse, max_nodes)
    return _layout(tree, _facts_of(tree), collapse, expand, max_nodes)


def _layout(
    tree: StaticExperimentTree,
    known: dict[str, StateFacts],
    collapse: int | None,
    expand: Iterable[str],
    max_nodes: int,
) -> list[DrawnNode]:
    order = {sha: index for index, sha in enumerate(known)}
    if isinstance(expand, str):  # one id, not its characters
        expand = [expand]
    pinned: set[str] = set()
    for wanted in expand:
        pinned.update(tree.lineage(tree.node(str(wanted)).sha() or "").ids)
    roots = tree.roots.ids
    if collapse is None or len(known) <= max_nodes:
        return _fold(tree, known, order, roots, None, pinned)
    threshold = collapse
    while True:
        drawn = _fold(tree, known, order, roots, threshold, pinned)
        if len(drawn) <= max_nodes or threshold == 1:
            return drawn
        threshold = max(1, threshold // 2)


def _fold(
    tree: StaticExperimentTree,
    known: dict[str, StateFacts],
    order: dict[str, int],
    roots: list[str],
    threshold: int | None,
    pinned: set[str],
) -> list[DrawnNode]:
    def group(ids: list[str], under_group: bool) -> list[tuple[str, ...]]:
        if threshold is None or (not under_group and len(ids) <= threshold):
            return [(sha,) for sha in ids]
        loose = [(sha,) for sha in ids if sha in pinned]
        free = [sha for sha in ids if sha not in pinned]
        buckets: dict[Any, list[str]] = {}
        if under_group:
            # Below a folded sweep, the same step with the same parameters is one group
            # (60 x Prune -> 60 x Add(2) and 60 x Add(3)), unless that makes too many.
            for sha in free:
                fact = known[sha]
                buckets.setdefault((fact.name, repr(sorted(fact.params.items()))), []).append(sha)
        if not under_group or len(buckets) > threshold:
            buckets = {}
            for sha in free:
                buckets.setdefault(known[sha].name, []).append(sha)
        groups = loose + [tuple(members) for members in buckets.values()]
        return sorted(groups, key=lambda members: order[members[0]])

    drawn: list[DrawnNode] = []
    stack: list[tuple[tuple[str, ...], str | None]] = [
        (members, None) for members in reversed(group(list(roots), False))
    ]
    while stack:
        members, parent = stack.pop()
        key = members[0] if len(members) == 1 else f"group-{members[0]}"
        drawn.append(DrawnNode(key, members, parent))
        children = sorted(
            (child for sha in members for child in tree.edge_map.get(sha, ())),
            key=lambda child: order[child],
        )
        stack.extend((child, key) for child in reversed(group(children, len(members) > 1)))
    return drawn


# -- colour ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ColorScale:
    """The fill colour of each state for ``color=<column>``.

    Attributes:
        column: The table column (``result.evaluate.accuracy``).
        numeric: Whether values are numbers on a colour map (else categories in a palette).
        values: State id -> its value in the column (states without one are absent).
        low: The smallest value (numeric).
        high: The largest value (numeric).
        cmap: The matplotlib colour map's name (numeric).
        ramp: 256 colours sampled along the map, low to high (numeric).
        categories: The distinct values, as text, in sorted order (categorical).
        palette: One colour per category (categorical).
    """

    column: str
    numeric: bool
    values: dict[str, Any]
    low: float = 0.0
    high: float = 0.0
    cmap: str = "viridis"
    ramp: tuple[str, ...] = ()
    categories: tuple[str, ...] = ()
    palette: tuple[str, ...] = ()

    def color(self, value: Any) -> str | None:
        """The colour of a value (``#rrggbb``), None for a missing one."""
        if value is None:
            return None
        if self.numeric:
            if not _real(value):
                return None
            span = self.high - self.low
            position = 0.5 if span == 0 else (float(value) - self.low) / span
            return self.ramp[min(max(round(position * 255), 0), 255)]
        text = _category(value)
        if text not in self.categories:
            return None
        index = self.categories.index(text)
        return self.palette[index] if index < len(self.palette) else "#bbbbbb"

    def of_states(self, ids: Iterable[str]) -> str | None:
        """The colour of a group: the median value's (numbers), the commonest category's."""
        present = [self.values[sha] for sha in ids if sha in self.values]
        if not present:
            return None
        if self.numeric:
            return self.color(statistics.median(present))
        return self.color(Counter(_category(value) for value in present).most_common(1)[0][0])


def _real(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _category(value: Any) -> str:
    if isinstance(value, list | tuple):
        return ", ".join(map(str, value))
    return str(value)


def _present(value: Any) -> bool:
    if value is None:
        return False
    if isinstance(value, float) and math.isnan(value):
        return False
    try:
        import pandas

        return not bool(pandas.isna(value))
    except (TypeError, ValueError):  # a list: present
        return True


def _matplotlib() -> Any:
    try:
        import matplotlib
    except ImportError as error:
        raise MissingDependencyError(
            "Colouring a drawing by a numeric column needs the `matplotlib` package (its "
            'colour maps), which is not installed. Install it with `pip install "dagger[viz]"` '
            "(or `pip install matplotlib`).",
            package="matplotlib",
        ) from error
    return matplotlib


def color_scale(
    tree: StaticExperimentTree,
    column: str,
    cmap: str = "viridis",
    table: pandas.DataFrame | None = None,
) -> ColorScale:
    """How :func:`to_graphviz` colours states by ``column`` (any column of
    ``tree.nodes.to_dataframe()``, or the unique ending of one).

    Numbers (NaN and infinities count as missing) map linearly from the smallest to the
    largest onto ``cmap`` (a matplotlib colour map; the default, viridis, is perceptually
    uniform and readable in grey and by colour-blind readers). Anything else (text, booleans,
    lists) is a category, coloured from the Okabe-Ito palette (tab20 past eight).

    ``table`` is ``tree.nodes.to_dataframe()`` when the caller has it already.

    Raises:
        ColumnNotFoundError: (a KeyError) No such column; the message names the nearest.
        PlotError: (a ValueError) ``cmap`` is not a matplotlib colour map.
        MissingDependencyError: (an ImportError) The column is numeric and matplotlib is not
            installed.
    """
    frame = table if table is not None else tree.nodes.to_dataframe()
    name = resolve_column(frame, column)
    values: dict[str, Any] = {}
    for sha, value in zip(frame["id"], frame[name], strict=True):
        item = getattr(value, "item", None)
        if callable(item) and getattr(value, "ndim", None) == 0:
            value = item()  # numpy scalars as Python numbers
        if _present(value):
            values[str(sha)] = value
    if is_numeric(values.values()):
        values = {sha: value for sha, value in values.items() if _real(value)}
        matplotlib = _matplotlib()
        try:
            colormap = matplotlib.colormaps[cmap]
        except (KeyError, ValueError):
            close = difflib.get_close_matches(str(cmap), list(matplotlib.colormaps), n=3)
            hint = f" (did you mean {', '.join(map(repr, close))}?)" if close else ""
            raise PlotError(
                f"cmap={cmap!r} is not a matplotlib colour map{hint}. Perceptually uniform "
                "ones: viridis, cividis, plasma, magma, inferno.",
                cmap=cmap,
            ) from None
        ramp = tuple(matplotlib.colors.to_hex(colormap(index / 255)) for index in range(256))
        present = list(values.values())
        return ColorScale(
            column=name,
            numeric=True,
            values=values,
            low=float(min(present)) if present else 0.0,
            high=float(max(present)) if present else 0.0,
            cmap=str(cmap),
            ramp=ramp,
        )
    categories = tuple(sorted({_category(value) for value in values.values()}))
    if len(categories) <= len(OKABE_ITO):
        palette: tuple[str, ...] = OKABE_ITO[: len(categories)]
    else:
        matplotlib = _matplotlib()
        tab20 = matplotlib.colormaps["tab20"]
        palette = tuple(matplotlib.colors.to_hex(tab20(index)) for index in range(20))
    return ColorScale(
        column=name, numeric=False, values=values, categories=categories, palette=palette
    )


def _luminance(color: str) -> float:
    """Relative luminance of ``#rrggbb`` (WCAG 2.x definition, sRGB linearised)."""
    channels = [int(color[index : index + 2], 16) / 255 for index in (1, 3, 5)]
    linear = [c / 12.92 if c <= 0.03928 else ((c + 0.055) / 1.055) ** 2.4 for c in channels]
    return 0.2126 * linear[0] + 0.7152 * linear[1] + 0.0722 * linear[2]


@dataclass(frozen=True)
class _Ink:
    """Text colours of a label, readable on its fill."""

    text: str = "#000000"
    muted: str = _MUTED_COLOR
    tag: str = _TAG_COLOR
    failed: str = _FAILED_COLOR


# On a colour-map fill, hues of their own (blue tags, grey ids) lose contrast: labels turn
# black or white, whichever contrasts more with the fill (WCAG: equal at luminance ~0.18).
_LIGHT_FILL_INK = _Ink(text="#000000", muted="#262626", tag="#000000", failed="#000000")
_DARK_FILL_INK = _Ink(text="#ffffff", muted="#f0f0f0", tag="#ffffff", failed="#ffffff")


def _ink(fill: str | None, colored: bool) -> _Ink:
    if not colored or fill is None:
        return _Ink()
    return _DARK_FILL_INK if _luminance(fill) < 0.18 else _LIGHT_FILL_INK


# -- graphviz --------------------------------------------------------------------------------------


def _graphviz() -> Any:
    try:
        import graphviz
    except ImportError as error:
        raise GraphvizNotInstalledError(
            "Drawing an experiment tree needs the `graphviz` Python package, which is not "
            'installed. Install it with `pip install "dagger[viz]"` (or `pip install graphviz`).',
            package="graphviz",
        ) from error
    return graphviz


_SURROGATE = re.compile("[\ud800-\udfff]")


def _escape(text: str) -> str:
    """Text for an HTML-like Graphviz label, shown as written: markup escaped, backslashes
    doubled (Graphviz expands ``\\N`` to the node's name even in HTML labels, also when written
    as ``&#92;``), control characters (which XML does not allow) and unencodable surrogates
    replaced."""
    cleaned = "".join(char if char >= " " or char == "\t" else " " for char in text)
    cleaned = _SURROGATE.sub("\ufffd", cleaned).replace("\\", "\\\\")
    return html.escape(cleaned, quote=True)


def _font(text: str, color: str | None = None, face: str | None = None, size: int = 0) -> str:
    """``text`` (already escaped) in a FONT element; nothing for empty text, because Graphviz
    refuses empty elements (``<I></I>`` is a syntax error)."""
    if not text:
        return ""
    attributes = "".join(
        f' {name}="{value}"'
        for name, value in (("FACE", face), ("POINT-SIZE", size or None), ("COLOR", color))
        if value
    )
    return f"<FONT{attributes}>{text}</FONT>"


def _table(rows: Iterable[str]) -> str:
    cells = "".join(f'<TR><TD ALIGN="LEFT">{row}</TD></TR>' for row in rows if row)
    return f'<<TABLE BORDER="0" CELLBORDER="0" CELLSPACING="0" CELLPADDING="1">{cells}</TABLE>>'


def _html_label(fact: StateFacts, ink: _Ink) -> str:
    """The default label of one state: an HTML-like table, one row per line."""
    rows: list[str] = []
    name = f"<B>{_escape(fact.name)}</B>"
    params = _params_shown(fact)
    joined = ", ".join(params)
    if len(joined) <= PARAMS_WIDTH:
        rows.append(name + (f"({_escape(joined)})" if params or fact.has_recipe else ""))
    else:
        rows.append(name)
        rows.extend(_escape(param) for param in params)
    status_color = ink.failed if fact.status == "failed" else ink.muted
    rows.append(
        _font(_escape(_short_id(fact)), ink.muted, face="Courier", size=9)
        + _font(_escape(f"  {fact.status}"), status_color)
    )
    if fact.tags:
        rows.append(_font(f"<I>{_escape(_tags_shown(fact.tags))}</I>", ink.tag))
    error = _error_line(fact)
    if error is not None:
        rows.append(_font(f"<B>FAILED</B> {_escape(error)}", ink.failed))
    shown, hidden = _results_shown(fact)
    rows.extend(f"{_escape(name)}: {_escape(value)}" for name, value in shown)
    if hidden:
        rows.append(_font(f"+{hidden} more results", ink.muted))
    rows.extend(
        _font(f"{_escape(name)}: FAILED {_escape(kind)}", ink.failed)
        for name, kind in _function_errors(fact)
    )
    return _table(rows)


def _range(values: Sequence[Any]) -> str:
    """``0.1-0.95`` (an en dash) for numbers, ``'l1', 'random'`` for a few others,
    ``5 values`` for many."""
    if values and all(_real(value) for value in values):
        low, high = min(values), max(values)
        return (
            _format_float(low)
            if low == high
            else f"{_format_float(low)}{_DASH}{_format_float(high)}"
        )
    distinct = sorted({format_value(value, VALUE_WIDTH) for value in values})
    if len(distinct) <= GROUP_VALUES:
        return ", ".join(distinct)
    return f"{len(distinct)} values"


def _group_label(members: list[StateFacts], ink: _Ink) -> str:
    """A folded group: ``48 x Prune`` (a multiplication sign), the range of each parameter
    and result, statuses."""
    rows = [f"<B>{len(members)} {_TIMES} {_escape(members[0].name)}</B>"]
    params: dict[str, list[Any]] = {}
    for fact in members:
        for name, value in fact.params.items():
            params.setdefault(name, []).append(value)
    rows.extend(f"{_escape(name)} {_escape(_range(values))}" for name, values in params.items())
    statuses = Counter(fact.status for fact in members)
    rows.append(
        _font(
            ", ".join(f"{count} {_escape(status)}" for status, count in sorted(statuses.items())),
            ink.failed if statuses.get("failed") else ink.muted,
        )
    )
    common = [tag for tag in members[0].tags if all(tag in fact.tags for fact in members)]
    others = len({tag for fact in members for tag in fact.tags} - set(common))
    if common:
        tags = _tags_shown(common) + (f" +{others} other tags" if others else "")
    else:
        tags = f"{others} different tags" if others else ""
    if tags:
        rows.append(_font(f"<I>{_escape(tags)}</I>", ink.tag))
    results: dict[str, list[Any]] = {}
    for fact in members:
        for name, value, is_repr in _flat_results(fact):
            if not is_repr:
                results.setdefault(name, []).append(value)
    shown = list(results.items())
    rows.extend(
        f"{_escape(name)}: {_escape(_range(values))}" for name, values in shown[:MAX_RESULTS]
    )
    if len(shown) > MAX_RESULTS:
        rows.append(_font(f"+{len(shown) - MAX_RESULTS} more results", ink.muted))
    return _table(rows)


# Borders tell statuses apart without relying on colour: failed states are bold with marked
# corners (``diagonals``), missing ones dashed, pruned ones dotted; folded groups are doubled.
def _style(status: str, fill: str | None, has_recipe: bool) -> dict[str, str]:
    if status == "failed":
        return {
            "style": "filled,bold,diagonals",
            "color": _FAILED_COLOR,
            "fillcolor": fill or "#fde8ea",
            "penwidth": "2",
        }
    if status in ("missing", "pruned"):
        line = "dashed" if status == "missing" else "dotted"
        style = {"color": "#888888" if status == "missing" else "#444444", "penwidth": "1.5"}
        if fill is None:
            return {"style": f"rounded,{line}", **style, "fontcolor": "#555555"}
        return {"style": f"rounded,filled,{line}", **style, "fillcolor": fill}
    default = "#e8eef7" if not has_recipe else "#f7f7f7"
    return {"style": "rounded,filled", "color": "#444444", "fillcolor": fill or default}


def _tooltip(text: str) -> str:
    # Tooltips are Graphviz escape strings, read twice: "\\\\" becomes "\\", and then "\\N"
    # becomes the node's name. A zero-width space after each (doubled) backslash survives both
    # readings and shows the backslash as written. Newlines become Graphviz's "\\n".
    escaped = text.replace("\r", "").replace("\\", "\\\\\u200b")
    return escaped.replace("\n", "\\n")


def _state_tooltip(fact: StateFacts) -> str:
    error = fact.error or {}
    message = str(error.get("message") or "")
    suffix = f"\n{error.get('type')}: {message}" if fact.status == "failed" else ""
    return _tooltip(fact.id + suffix)


def _key_rows(scale: ColorScale, missing_values: bool) -> list[str]:
    """The colour key: a bar with its ends and middle for numbers, swatches for categories."""
    blocks: list[str] = [f"<B>{_escape(scale.column)}</B>"]
    if scale.numeric and scale.values:
        steps, step_width = 10, 20
        stops = [scale.ramp[round(index * 255 / steps)] for index in range(steps + 1)]
        # Each cell a linear gradient between two samples of the map: a smooth bar. The table
        # has a fixed size because Graphviz stretches a nested table to the widest row.
        bar = "".join(
            f'<TD BGCOLOR="{stops[index]}:{stops[index + 1]}" WIDTH="{step_width}" HEIGHT="12" '
            'FIXEDSIZE="TRUE"></TD>'
            for index in range(steps)
        )
        middle = (scale.low + scale.high) / 2
        ticks = "".join(
            f'<TD COLSPAN="{span}" ALIGN="{align}">{_escape(_format_float(value))}</TD>'
            for span, align, value in (
                (3, "LEFT", scale.low),
                (4, "CENTER", middle),
                (3, "RIGHT", scale.high),
            )
        )
        blocks.append(
            '<TABLE BORDER="0" CELLBORDER="0" CELLSPACING="0" CELLPADDING="0" ALIGN="LEFT" '
            f'FIXEDSIZE="TRUE" WIDTH="{steps * step_width}" HEIGHT="28">'
            f"<TR>{bar}</TR><TR>{ticks}</TR></TABLE>"
        )
    if not scale.numeric:
        # A coloured square glyph beside the text: nested tables would be stretched.
        for index, category in enumerate(scale.categories[:MAX_KEY_ENTRIES]):
            color = scale.palette[index] if index < len(scale.palette) else "#bbbbbb"
            text = _escape(_shorten(category, VALUE_WIDTH)) or "&#39;&#39;"
            blocks.append(_font("■", color, size=14) + f" {text}")
        if len(scale.categories) > MAX_KEY_ENTRIES:
            more = len(scale.categories) - MAX_KEY_ENTRIES
            blocks.append(_font("■", "#bbbbbb", size=14) + f" {more} more values")
    if missing_values:
        blocks.append(_font("□", "#444444", size=14) + " no value")
    return blocks


def _legend(
    scale: ColorScale | None,
    statuses: set[str],
    folded: bool,
    missing_values: bool,
) -> str | None:
    """An HTML-like table explaining colours, borders and folding; None if nothing to say."""
    blocks = _key_rows(scale, missing_values) if scale is not None else []
    notes = []
    if "failed" in statuses:
        notes.append("failed: bold red border, marked corners")
    if "missing" in statuses:
        notes.append("missing payload: dashed border")
    if "pruned" in statuses:
        notes.append("pruned: dotted border")
    if folded:
        notes.append(f"N {_TIMES} Recipe: siblings folded into one node (double border)")
    blocks.extend(_font(_escape(note), _MUTED_COLOR) for note in notes)
    if not blocks:
        return None
    return _table(blocks)


def to_graphviz(
    tree: StaticExperimentTree,
    label: Callable[[ExperimentState], str] | None = None,
    node_args: Mapping[str, Any] | None = None,
    *,
    color: str | None = None,
    cmap: str = "viridis",
    collapse: int | None = DEFAULT_COLLAPSE,
    expand: Iterable[str] = (),
    max_nodes: int = MAX_DRAWN_NODES,
) -> graphviz.Digraph:
    """A Graphviz drawing of the tree: one node per state, an edge from parent to child.

    By default a node shows the recipe and its parameters (``root`` and the experiment's
    properties for a root), the short id, tags, status and up to six recorded results;
    failed states are red, bold, with marked corners and their error; states whose payload is
    gone are dashed, pruned ones dotted. Siblings are laid out left to right in the order
    the tree gives them. The SVG of a node has the id ``state-<id>`` (``group-<id>`` for a
    folded group), so that a page can find it.

    Args:
        tree: A restored tree (``Experiment.restore(directory).graph``).
        label: ``label(state) -> str`` used instead of the default label (the state is slim;
            folded groups keep their summary). Plain text; a string in ``<...>`` is an
            HTML-like Graphviz label.
        node_args: Graphviz node attributes applied to every node, after the status styling
            (``{"shape": "ellipse", "fontsize": "10"}``).
        color: Fill states by this column of ``tree.nodes.to_dataframe()``
            (``"result.evaluate.accuracy"``, ``"param.method"``, ``"status"``), with a key;
            see :func:`color_scale`. None: fill by kind (roots blue, others grey).
        cmap: The matplotlib colour map for a numeric ``color``.
        collapse: Fold sibling groups larger than this when the tree has more than
            ``max_nodes`` states (see :func:`layout`); None draws every state.
        expand: Ids (or prefixes) of states never folded, nor their ancestors.
        max_nodes: Trees with at most this many states are drawn whole.

    Returns:
        A ``graphviz.Digraph``, top to bottom, nodes and edges in a stable order.

    Raises:
        GraphvizNotInstalledError: The graphviz Python package is not installed.
        ColumnNotFoundError: ``color`` names no column (the nearest are named).
        PlotError: ``cmap`` is unknown, or ``collapse``/``max_nodes`` is not a valid number.
        StateNotFoundError: An ``expand`` entry matches no state.
    """
    return drawing(
        tree,
        label,
        node_args,
        color=color,
        cmap=cmap,
        collapse=collapse,
        expand=expand,
        max_nodes=max_nodes,
    ).graph


@dataclass(frozen=True)
class Drawing:
    """A drawing of a tree and the layout it was made from.

    Attributes:
        graph: The ``graphviz.Digraph`` (what :func:`to_graphviz` returns).
        nodes: Its nodes: which states each stands for (see :func:`layout`).
    """

    graph: graphviz.Digraph
    nodes: list[DrawnNode]

    def svg(self) -> str:
        """The drawing laid out as SVG markup.

        Raises:
            GraphvizNotFoundError: The ``dot`` program is not on PATH.
        """
        return _pipe(self.graph, "svg").decode("utf-8")


def drawing(
    tree: StaticExperimentTree,
    label: Callable[[ExperimentState], str] | None = None,
    node_args: Mapping[str, Any] | None = None,
    *,
    color: str | None = None,
    cmap: str = "viridis",
    collapse: int | None = DEFAULT_COLLAPSE,
    expand: Iterable[str] = (),
    max_nodes: int = MAX_DRAWN_NODES,
    table: pandas.DataFrame | None = None,
) -> Drawing:
    """The drawing of :func:`to_graphviz` (same arguments) with the layout it was made from,
    for callers that need to know which states a folded node stands for (the HTML report).
    ``table`` is ``tree.nodes.to_dataframe()`` when the caller has it already.
    """
    graphviz = _graphviz()
    _check_collapse(collapse, max_nodes)
    known = _facts_of(tree)
    drawn = _layout(tree, known, collapse, expand, max_nodes)
    scale = color_scale(tree, color, cmap, table) if color is not None else None
    graph = graphviz.Digraph(
        "experiment",
        # ordering=out keeps each node's children left to right in the order of their edges.
        graph_attr={"rankdir": "TB", "nodesep": "0.25", "ranksep": "0.35", "ordering": "out"},
        node_attr={"shape": "box", "fontname": "Helvetica", "fontsize": "11", "margin": "0.1"},
        edge_attr={"color": "#555555", "arrowsize": "0.7"},
    )
    extra = {str(key): str(value) for key, value in (node_args or {}).items()}
    statuses: set[str] = set()
    missing_values = False
    for node in drawn:
        members = [known[sha] for sha in node.members]
        fill: str | None = None
        ink = _Ink()
        if scale is not None:
            fill = scale.of_states(node.members)
            missing_values = missing_values or fill is None
            ink = _ink(fill, True)  # a state without a value keeps the usual colours
            fill = fill or _NO_VALUE_FILL
        if node.folded:
            member_statuses = {fact.status for fact in members}
            statuses.update(member_statuses)
            worst = next(
                (s for s in ("failed", "missing", "pruned") if s in member_statuses), "done"
            )
            attributes = {
                **_style(worst, fill, True),
                "peripheries": "2",
                "tooltip": _tooltip(
                    f"{len(members)} states:\n"
                    + "\n".join(f.id[:SHORT_ID] for f in members[:20])
                    + ("\n..." if len(members) > 20 else "")
                ),
                "id": f"group-{node.members[0]}",
                "class": "group",
            }
            text = _group_label(members, ink)
        else:
            fact = members[0]
            statuses.add(fact.status)
            attributes = {
                **_style(fact.status, fill, fact.has_recipe),
                "tooltip": _state_tooltip(fact),
                "id": f"state-{fact.id}",
                "class": "state " + re.sub(r"[^A-Za-z0-9_-]", "-", fact.status),
            }
            if label is not None:
                text = str(label(tree.node_map[fact.id]))
            else:
                text = _html_label(fact, ink)
        if ink is _DARK_FILL_INK:
            attributes["fontcolor"] = ink.text
        graph.node(node.key, label=text, **{**attributes, **extra})
    for node in drawn:
        if node.parent is None:
            continue
        failed = not node.folded and known[node.members[0]].status == "failed"
        graph.edge(node.parent, node.key, **({"color": _FAILED_COLOR} if failed else {}))
    legend = _legend(scale, statuses, any(node.folded for node in drawn), missing_values)
    if legend is not None and (scale is not None or any(node.folded for node in drawn)):
        graph.node("legend", label=legend, shape="plaintext", id="legend", **{"class": "legend"})
    return Drawing(graph, drawn)


def to_dot(
    tree: StaticExperimentTree,
    label: Callable[[ExperimentState], str] | None = None,
    node_args: Mapping[str, Any] | None = None,
    **options: Any,
) -> str:
    """The DOT source of :func:`to_graphviz` (same options); needs no ``dot`` program.

    Raises:
        GraphvizNotInstalledError: The graphviz Python package is not installed.
    """
    return str(to_graphviz(tree, label=label, node_args=node_args, **options).source)


def _pipe(graph: graphviz.Digraph, file_format: str) -> bytes:
    graphviz = _graphviz()
    try:
        return bytes(graph.pipe(format=file_format))
    except graphviz.ExecutableNotFound as error:
        raise GraphvizNotFoundError(
            "Drawing the tree needs Graphviz's `dot` program, which is not on PATH. "
            f"{_INSTALL_DOT}; `tree.to_dot()` still gives the DOT source without it.",
            program="dot",
        ) from error


def to_svg(
    tree: StaticExperimentTree,
    label: Callable[[ExperimentState], str] | None = None,
    node_args: Mapping[str, Any] | None = None,
    **options: Any,
) -> str:
    """The drawing as SVG markup (options as for :func:`to_graphviz`).

    Raises:
        GraphvizNotInstalledError: The graphviz Python package is not installed.
        GraphvizNotFoundError: The ``dot`` program is not on PATH.
    """
    graph = to_graphviz(tree, label=label, node_args=node_args, **options)
    return _pipe(graph, "svg").decode("utf-8")


def _check_format(file_format: str) -> str:
    normalized = str(file_format).lower().lstrip(".")
    if normalized not in DRAW_FORMATS:
        raise UnknownFormatError(
            f"draw() writes {', '.join(DRAW_FORMATS)}; got format {file_format!r}. "
            f"Pass one of those (for anything else, render `tree.to_dot()` with Graphviz).",
            format=file_format,
        )
    return normalized


def draw(
    tree: StaticExperimentTree,
    filename: str | os.PathLike[str] = "graph",
    format: str = "png",
    label: Callable[[ExperimentState], str] | None = None,
    node_args: Mapping[str, Any] | None = None,
    view: bool = False,
    **options: Any,
) -> Path:
    """Write a drawing of the tree to ``filename.format`` and return its path.

    ``draw(tree, "runs/tree")`` writes ``runs/tree.png``; a filename that already ends in
    ``.<format>`` is used as it is. No DOT source file is left behind.

    Args:
        tree: A restored tree.
        filename: Where to write, with or without the suffix; folders are created.
        format: ``png``, ``svg`` or ``pdf``.
        label: As for :func:`to_graphviz`.
        node_args: As for :func:`to_graphviz`.
        view: Show the drawing: inline when running in a Jupyter kernel, else with the
            system's viewer when there is one (``xdg-open``, ``open``); otherwise a log line
            says where the file is.
        **options: ``color``, ``cmap``, ``collapse``, ``expand``, ``max_nodes``: as for
            :func:`to_graphviz`.

    Returns:
        The path of the written file.

    Raises:
        UnknownFormatError: (a ValueError) ``format`` is not one of png, svg, pdf.
        GraphvizNotInstalledError: The graphviz Python package is not installed.
        GraphvizNotFoundError: The ``dot`` program is not on PATH.
    """
    file_format = _check_format(format)
    path = Path(filename)
    if path.suffix.lower() != f".{file_format}":
        path = path.with_name(f"{path.name}.{file_format}")
    graph = to_graphviz(tree, label=label, node_args=node_args, **options)
    # pipe() rather than render(): render writes the DOT source next to the image first, which
    # would overwrite (then delete) a user's file of that name.
    data = _pipe(graph, file_format)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    if view:
        _view(path, file_format, graph)
    return path


def _in_notebook() -> bool:
    """Whether this process is a Jupyter kernel (IPython with a kernel attached)."""
    ipython = sys.modules.get("IPython")
    if ipython is None:
        return False
    shell = ipython.get_ipython()
    return shell is not None and getattr(shell, "kernel", None) is not None


def _system_viewer() -> str | None:
    """The program that opens a file with its usual application here, if there is one
    (the choice graphviz.view makes)."""
    if sys.platform.startswith("win"):
        return "os.startfile"
    program = "open" if sys.platform == "darwin" else "xdg-open"
    return shutil.which(program)


def _view(path: Path, file_format: str, graph: graphviz.Digraph) -> None:
    if _in_notebook():
        from IPython.display import SVG, Image, display

        if file_format == "png":
            display(Image(filename=str(path)))
        elif file_format == "svg":
            display(SVG(filename=str(path)))
        else:  # a notebook cannot show a PDF inline: show the same drawing as SVG
            display(SVG(data=_pipe(graph, "svg").decode("utf-8")))
        return
    viewer = _system_viewer()
    if viewer is None:
        logger.warning(
            "The drawing is in %s; no program to open it was found here (xdg-open on Linux, "
            "open on macOS), so it was not opened.",
            path,
        )
        return
    if viewer == "os.startfile":
        os.startfile(path)  # type: ignore[attr-defined]  # Windows only
        return
    # Not awaited (a viewer may stay open), but reaped by a thread when it ends, so that no
    # zombie process or "still running" ResourceWarning is left behind.
    process = subprocess.Popen(
        [viewer, str(path)],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    threading.Thread(target=process.wait, name="dagger-viewer", daemon=True).start()


# -- notebooks -------------------------------------------------------------------------------------


def mimebundle(tree: StaticExperimentTree) -> dict[str, str]:
    """What a notebook shows for a tree: ``image/svg+xml`` and ``text/plain``.

    Large trees are drawn folded (see :func:`layout`). Never raises (a notebook display must
    not): without Graphviz, for a tree too large to read inline, or if drawing fails, only the
    text is returned, with a note saying why.
    """
    try:
        text = to_text(tree)
    except Exception:  # a display must not raise; the short repr always works
        logger.debug("Describing the tree as text failed.", exc_info=True)
        text = repr(tree)
    if len(tree) > MAX_INLINE_STATES:
        note = f"({len(tree)} states, too many to draw inline; tree.draw() writes a file.)"
        return {"text/plain": f"{text}\n{note}"}
    try:
        svg = to_svg(tree)
    except (GraphvizNotFoundError, GraphvizNotInstalledError) as error:
        return {"text/plain": f"{text}\n({error})"}
    except Exception:
        logger.debug("Drawing the tree failed; showing it as text.", exc_info=True)
        return {"text/plain": text}
    return {"image/svg+xml": svg, "text/plain": text}
