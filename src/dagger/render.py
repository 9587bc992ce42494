"""Drawing a restored experiment tree: Graphviz, notebook display and plain text.

Everything here reads slim states only (records, tags, result summaries); no payload is
loaded. The ``graphviz`` package is imported inside the functions that need it, so that
``import dagger`` works without it; drawing an image also needs Graphviz's ``dot`` program.

    to_graphviz(tree)       a graphviz.Digraph, one node per state, edges parent -> child
    to_dot(tree)            its DOT source (needs the package, not the ``dot`` program)
    to_svg(tree)            the SVG markup (needs ``dot``)
    draw(tree, "graph")     writes graph.png (or .svg, .pdf) and returns its path
    to_text(tree)           the tree as indented lines, for terminals (``dagger show``)
    mimebundle(tree)        what a notebook shows: SVG, or the text when ``dot`` is missing

Errors (defined in :mod:`dagger.errors`): GraphvizNotInstalledError (the graphviz package
is missing), GraphvizNotFoundError (the ``dot`` program is missing), UnknownFormatError
(draw() was asked for another format).
"""

from __future__ import annotations

import html
import logging
import math
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .errors import GraphvizNotFoundError, GraphvizNotInstalledError, UnknownFormatError
from .store import Results

if TYPE_CHECKING:
    import os

    import graphviz

    from .state import ExperimentState
    from .tree import StaticExperimentTree

__all__ = [
    "DRAW_FORMATS",
    "GraphvizNotFoundError",
    "GraphvizNotInstalledError",
    "UnknownFormatError",
    "draw",
    "format_value",
    "mimebundle",
    "state_line",
    "to_dot",
    "to_graphviz",
    "to_svg",
    "to_text",
]

logger = logging.getLogger("dagger")

#: The file formats :func:`draw` writes.
DRAW_FORMATS = ("png", "svg", "pdf")

# How much of a state a label shows; a drawing of a tree is read at a glance, the table
# (``tree.nodes.to_dataframe()``) has everything.
MAX_RESULTS = 6
VALUE_WIDTH = 40
PARAMS_WIDTH = 40
MESSAGE_WIDTH = 80
SHORT_ID = 12
# Laying out a large tree takes dot seconds to minutes; a notebook cell shows text instead.
MAX_INLINE_STATES = 300

_FAILED_COLOR = "#b00020"
_MUTED_COLOR = "#666666"
_TAG_COLOR = "#1f5fa8"

_INSTALL_DOT = (
    "Install Graphviz (`apt-get install graphviz`, `brew install graphviz` or "
    "`conda install graphviz`)"
)


# -- describing one state (shared by the drawing and the text) -------------------------------------


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


def _short_id(state: ExperimentState) -> str:
    return (state.sha() or "?")[:SHORT_ID]


def _step_name(state: ExperimentState) -> str:
    if state.recipe is not None:
        return str(state.recipe.name)
    return "root" if state.root_state else "state"


def _step_params(state: ExperimentState) -> list[str]:
    """``name=value`` for the recipe's parameters, or for a root's properties."""
    values = state.recipe.params if state.recipe is not None else state.dagger.properties
    # Parameters are part of the identity: shown by repr, not rounded like results.
    return [f"{name}={_shorten(repr(value), VALUE_WIDTH)}" for name, value in values.items()]


def _step(state: ExperimentState) -> str:
    params = _step_params(state)
    name = _step_name(state)
    return f"{name}({', '.join(params)})" if params or state.recipe is not None else name


def _error(state: ExperimentState) -> str | None:
    """``Type: first line of the message`` for a failed state, else None."""
    if state.dagger.status != "failed":
        return None
    error = state.dagger.error
    kind = error.type if error is not None else "Error"
    message = (error.message if error is not None else "").strip().splitlines()
    return _shorten(f"{kind}: {message[0]}" if message else kind, MESSAGE_WIDTH)


def _results(state: ExperimentState) -> tuple[list[tuple[str, str]], int]:
    """Up to MAX_RESULTS ``(name, shown value)`` of the recorded results, and how many more.

    Plain JSON values are shown formatted, one level of a dict flattened to ``name.key``;
    other values by the short repr stored with them. Nothing is loaded.
    """
    results = state.dagger.results
    items: list[tuple[str, str]] = []
    for name in results:
        inline, value = _summary(results, name)
        if not inline:
            items.append((name, _shorten(str(value or "?"), VALUE_WIDTH)))
            continue
        if isinstance(value, dict) and value and all(isinstance(key, str) for key in value):
            items.extend((f"{name}.{key}", format_value(item)) for key, item in value.items())
        else:
            items.append((name, format_value(value)))
    return items[:MAX_RESULTS], max(len(items) - MAX_RESULTS, 0)


def _summary(results: Mapping[str, Any], name: str) -> tuple[bool, Any]:
    """``(True, value)`` for a plain value, ``(False, short repr)`` for one in a side file.

    A state's Results knows the recorded entry without loading anything; a plain mapping
    (a state of a live run) holds values.
    """
    if isinstance(results, Results):
        entry = results.entry(name)
        return entry.inline, entry.summary()
    return True, results[name]


def _function_errors(state: ExperimentState) -> list[tuple[str, str]]:
    """``(function name, error type)`` for each recorded Function that failed on the state."""
    errors = getattr(state.dagger.results, "errors", None) or {}
    return [(name, error.type or "Error") for name, error in sorted(errors.items())]


def state_line(state: ExperimentState) -> str:
    """One line describing a state: recipe and parameters, short id, tags, status, results.

    Example: ``Train(lr=0.1)  3f2a9c0d1b7e  [baseline]  done  accuracy=0.9312``.
    """
    parts = [_step(state), _short_id(state)]
    if state.tags:
        parts.append("[" + ", ".join(state.tags) + "]")
    error = _error(state)
    if error is not None:
        parts.append(f"FAILED {error}")
    elif state.dagger.status == "missing":
        parts.append("missing (payload file gone; a run recomputes it)")
    else:
        parts.append(str(state.dagger.status))
    shown, hidden = _results(state)
    if shown:
        parts.append(", ".join(f"{name}={value}" for name, value in shown))
    if hidden:
        parts.append(f"(+{hidden} more results)")
    for name, kind in _function_errors(state):
        parts.append(f"{name}: FAILED {kind}")
    return "  ".join(parts)


# -- plain text ------------------------------------------------------------------------------------

_UNICODE_BRANCHES = ("├─ ", "└─ ", "│  ", "   ")
_ASCII_BRANCHES = ("|- ", "`- ", "|  ", "   ")


def _children(tree: StaticExperimentTree, order: dict[str, int], sha: str) -> list[str]:
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
    nodes = tree.nodes
    order = {sha: index for index, sha in enumerate(nodes.ids)}
    lines: list[str] = []
    # An explicit stack, not recursion: a long chain of recipes is a deep tree.
    # Items: (id, prefix of this line, prefix of its children's lines, level).
    stack: list[tuple[str, str, str, int]] = [(sha, "", "", 0) for sha in reversed(tree.roots.ids)]
    while stack:
        sha, prefix, child_prefix, level = stack.pop()
        line = prefix + state_line(tree.node_map[sha])
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
    lines.append(_status_counts(nodes))
    return "\n".join(lines)


def _count_below(tree: StaticExperimentTree, sha: str) -> int:
    count, pending = 0, list(tree.edge_map.get(sha, ()))
    while pending:
        count += 1
        pending.extend(tree.edge_map.get(pending.pop(), ()))
    return count


def _status_counts(states: Iterable[ExperimentState]) -> str:
    counts: dict[str, int] = {}
    for state in states:
        status = str(state.dagger.status)
        counts[status] = counts.get(status, 0) + 1
    total = sum(counts.values())
    noun = "state" if total == 1 else "states"
    if not counts:
        return "0 states"
    return f"{total} {noun}: " + ", ".join(f"{n} {status}" for status, n in sorted(counts.items()))


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


def _escape(text: str) -> str:
    # HTML-like labels are parsed as XML: escape markup, and drop control characters, which
    # XML does not allow at all.
    cleaned = "".join(char if char >= " " or char == "\t" else " " for char in text)
    return html.escape(cleaned, quote=True)


def _html_label(state: ExperimentState) -> str:
    """The default label: an HTML-like table, one row per line."""
    rows: list[str] = []
    name = f"<B>{_escape(_step_name(state))}</B>"
    params = _step_params(state)
    joined = ", ".join(params)
    if len(joined) <= PARAMS_WIDTH:
        rows.append(name + (f"({_escape(joined)})" if params or state.recipe else ""))
    else:
        rows.append(name)
        rows.extend(_escape(param) for param in params)
    status_color = _FAILED_COLOR if state.dagger.status == "failed" else _MUTED_COLOR
    rows.append(
        f'<FONT FACE="Courier" POINT-SIZE="9" COLOR="{_MUTED_COLOR}">'
        f"{_escape(_short_id(state))}</FONT>"
        f'<FONT COLOR="{status_color}">  {_escape(str(state.dagger.status))}</FONT>'
    )
    if state.tags:
        rows.append(f'<FONT COLOR="{_TAG_COLOR}"><I>{_escape(", ".join(state.tags))}</I></FONT>')
    error = _error(state)
    if error is not None:
        rows.append(f'<FONT COLOR="{_FAILED_COLOR}"><B>FAILED</B> {_escape(error)}</FONT>')
    shown, hidden = _results(state)
    rows.extend(f"{_escape(name)}: {_escape(value)}" for name, value in shown)
    if hidden:
        rows.append(f'<FONT COLOR="{_MUTED_COLOR}">+{hidden} more results</FONT>')
    rows.extend(
        f'<FONT COLOR="{_FAILED_COLOR}">{_escape(name)}: FAILED {_escape(kind)}</FONT>'
        for name, kind in _function_errors(state)
    )
    cells = "".join(f'<TR><TD ALIGN="LEFT">{row}</TD></TR>' for row in rows)
    return f'<<TABLE BORDER="0" CELLBORDER="0" CELLSPACING="0" CELLPADDING="1">{cells}</TABLE>>'


def _style(state: ExperimentState) -> dict[str, str]:
    """Node attributes by status: failed states red and heavier, missing ones dashed."""
    if state.dagger.status == "failed":
        return {
            "style": "rounded,filled,bold",
            "color": _FAILED_COLOR,
            "fillcolor": "#fde8ea",
            "penwidth": "2",
        }
    if state.dagger.status == "missing":
        return {"style": "rounded,dashed", "color": "#888888", "fontcolor": "#555555"}
    fill = "#e8eef7" if state.recipe is None else "#f7f7f7"
    return {"style": "rounded,filled", "color": "#444444", "fillcolor": fill}


def _tooltip(state: ExperimentState) -> str:
    # Shown on hover in SVG (notebooks): the full id, and the error of a failed state.
    error = state.dagger.error
    return (state.sha() or "") + (f"\n{error.type}: {error.message}" if error else "")


def to_graphviz(
    tree: StaticExperimentTree,
    label: Callable[[ExperimentState], str] | None = None,
    node_args: Mapping[str, Any] | None = None,
) -> graphviz.Digraph:
    """A Graphviz drawing of the tree: one node per state, an edge from parent to child.

    By default a node shows the recipe and its parameters (``root`` and the experiment's
    properties for a root), the short id, tags, status and up to six recorded results;
    failed states are red with their error, states whose payload is gone are dashed.

    Args:
        tree: A restored tree (``Experiment.restore(directory).graph``).
        label: ``label(state) -> str`` used instead of the default label (the state is slim).
            Plain text; a string in ``<...>`` is an HTML-like Graphviz label.
        node_args: Graphviz node attributes applied to every node, after the status styling
            (``{"shape": "ellipse", "fontsize": "10"}``).

    Returns:
        A ``graphviz.Digraph``, top to bottom, nodes and edges in a stable order.

    Raises:
        GraphvizNotInstalledError: The graphviz Python package is not installed.
    """
    graphviz = _graphviz()
    graph = graphviz.Digraph(
        "experiment",
        graph_attr={"rankdir": "TB", "nodesep": "0.25", "ranksep": "0.35"},
        node_attr={"shape": "box", "fontname": "Helvetica", "fontsize": "11", "margin": "0.1"},
        edge_attr={"color": "#555555", "arrowsize": "0.7"},
    )
    nodes = tree.nodes
    order = {sha: index for index, sha in enumerate(nodes.ids)}
    extra = {str(key): str(value) for key, value in (node_args or {}).items()}
    for state in nodes:
        text = str(label(state)) if label is not None else _html_label(state)
        attributes = {**_style(state), "tooltip": _tooltip(state), **extra}
        graph.node(state.sha() or "", label=text, **attributes)
    # Siblings in the order they were created, so that a redraw puts them in the same place.
    for parent in sorted(tree.edge_map, key=lambda sha: order.get(sha, 0)):
        for child in _children(tree, order, parent):
            failed = tree.node_map[child].dagger.status == "failed"
            graph.edge(parent, child, **({"color": _FAILED_COLOR} if failed else {}))
    return graph


def to_dot(
    tree: StaticExperimentTree,
    label: Callable[[ExperimentState], str] | None = None,
    node_args: Mapping[str, Any] | None = None,
) -> str:
    """The DOT source of :func:`to_graphviz`; needs no ``dot`` program.

    Raises:
        GraphvizNotInstalledError: The graphviz Python package is not installed.
    """
    return str(to_graphviz(tree, label=label, node_args=node_args).source)


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
) -> str:
    """The drawing as SVG markup.

    Raises:
        GraphvizNotInstalledError: The graphviz Python package is not installed.
        GraphvizNotFoundError: The ``dot`` program is not on PATH.
    """
    graph = to_graphviz(tree, label=label, node_args=node_args)
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
        view: Open the file with the system's viewer afterwards.

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
    # pipe() rather than render(): render writes the DOT source next to the image first, which
    # would overwrite (then delete) a user's file of that name.
    data = _pipe(to_graphviz(tree, label=label, node_args=node_args), file_format)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    if view:
        _graphviz().view(str(path))
    return path


# -- notebooks -------------------------------------------------------------------------------------


def mimebundle(tree: StaticExperimentTree) -> dict[str, str]:
    """What a notebook shows for a tree: ``image/svg+xml`` and ``text/plain``.

    Never raises (a notebook display must not): without Graphviz, for a tree too large to lay
    out inline, or if drawing fails, only the text is returned, with a note saying why.
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
