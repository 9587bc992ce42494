"""A self-contained HTML report of a restored tree: drawing, table of states, plots.

    write_report(tree, "report.html")        (also ``tree.report(path)``, ``dagger report DIR``)

One file that works offline and needs nothing but a browser: the tree drawing as inline SVG
(every node clickable: recipe, parameters, tags, status, timings, results, error, lineage,
environment), a table of every state (sortable by any column, filtered by text, paginated so
that 2,000 states stay responsive), and plots as embedded SVG images. No CDN, no external
file: the CSS and a small vanilla script are inlined.

The page is rendered by Jinja2 with autoescaping from ``dagger/templates/report.html.j2``; the
data travel as one JSON document (``<script type="application/json">``), which the script
turns into DOM nodes with ``textContent`` only, so that no tag, parameter or result can inject
markup. The drawing comes from :mod:`dagger.render` (large trees folded); without Graphviz's
``dot`` the report says so and shows the tree as text instead. Plots come from
:mod:`dagger.plots`; without matplotlib the report says so and has none.

Errors: MissingDependencyError (Jinja2 is not installed), and those of the drawing and plot
options (ColumnNotFoundError, PlotError, StateNotFoundError).
"""

from __future__ import annotations

import base64
import dataclasses
import datetime as _dt
import io
import logging
import math
import os
import re
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy

from . import plots as plotting
from . import render
from ._version import __version__
from .errors import (
    GraphvizNotFoundError,
    GraphvizNotInstalledError,
    MissingDependencyError,
)

if TYPE_CHECKING:
    import pandas
    from matplotlib.figure import Figure

    from .tree import StaticExperimentTree

__all__ = ["MAX_SVG_POINTS", "PAGE_SIZE", "PlotSpec", "render_report", "write_report"]

logger = logging.getLogger("dagger")

#: Rows per page of the table of states (the page offers others, and "all").
PAGE_SIZE = 50
#: A plot with more points than this is embedded as PNG rather than SVG.
MAX_SVG_POINTS = 2000

#: A plot of a report: ``{"x": ..., "y": ..., "hue": ...}`` (as for :func:`dagger.plots.plot`,
#: ``hue``, ``kind`` and ``title`` optional), or a matplotlib Figure made by the caller.
PlotSpec = Mapping[str, Any] | Any

_TEMPLATE = "report.html.j2"
_XML_PROLOGUE = re.compile(r"^\s*(<\?xml[^>]*\?>\s*)?(<!DOCTYPE[^>]*>\s*)?(<!--.*?-->\s*)*", re.S)


def _jinja() -> Any:
    try:
        import jinja2
    except ImportError as error:
        raise MissingDependencyError(
            "Writing an HTML report needs the `Jinja2` package, which is not installed. "
            'Install it with `pip install "dagger[viz]"` (or `pip install Jinja2`).',
            package="Jinja2",
        ) from error
    return jinja2


def _jsonable(value: Any) -> Any:
    """A value the page's JSON can hold: NaN and infinities (missing cells) as null,
    numpy scalars as numbers, anything unknown as its text."""
    if value is None or isinstance(value, bool | int | str):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    item = getattr(value, "item", None)
    if callable(item) and getattr(value, "ndim", None) == 0:
        return _jsonable(item())
    if isinstance(value, list | tuple):
        return [_jsonable(item) for item in value]
    if isinstance(value, Mapping):
        return {str(key): _jsonable(item) for key, item in value.items()}
    try:
        import pandas

        if pandas.isna(value):
            return None
    except (TypeError, ValueError):
        pass
    return str(value)


def _state_document(fact: render.StateFacts) -> dict[str, Any]:
    # Field by field: dataclasses.asdict deep-copies, which costs more than the rest of a
    # report of 10,000 states.
    document = {
        field.name: _jsonable(getattr(fact, field.name)) for field in dataclasses.fields(fact)
    }
    document["result_reprs"] = sorted(fact.result_reprs)
    document["step"] = render.step_text(fact)
    return document


def _drawing(
    tree: StaticExperimentTree, table: pandas.DataFrame, options: Mapping[str, Any]
) -> tuple[str | None, str | None, dict[str, list[str]]]:
    """The SVG of the tree (None without Graphviz), a note saying why not, and the members
    of each folded node."""
    try:
        made = render.drawing(tree, table=table, **options)
    except GraphvizNotInstalledError as error:
        return None, str(error), {}
    groups = {node.key: list(node.members) for node in made.nodes if node.folded}
    try:
        svg = made.svg()
    except GraphvizNotFoundError as error:
        return None, str(error), groups
    # Inline SVG in HTML takes the <svg> element alone: no XML prologue or DOCTYPE.
    return _XML_PROLOGUE.sub("", svg, count=1), None, groups


def _points(figure: Figure) -> int:
    """How many points a figure plots (markers of lines, and scatter offsets)."""
    count = 0
    for axes in figure.axes:
        for line in axes.get_lines():
            count += len(numpy.asarray(line.get_xdata()))
        for collection in axes.collections:
            count += len(numpy.asarray(collection.get_offsets()))
    return count


def _figure_uri(figure: Figure) -> str:
    """The figure as a data URI: SVG (sharp at any zoom), or PNG when it plots so many points
    that the SVG would weigh more than the rest of the page."""
    buffer = io.BytesIO()
    if _points(figure) > MAX_SVG_POINTS:
        figure.savefig(buffer, format="png", dpi=150)
        kind = "png"
    else:
        figure.savefig(buffer, format="svg", metadata={"Date": None})
        kind = "svg+xml"
    # An <img> of a data URI keeps each plot's SVG ids (clip paths, glyphs) apart from the
    # page's and from the other plots'.
    return f"data:image/{kind};base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def _plots(
    frame: pandas.DataFrame, specs: Sequence[PlotSpec] | None
) -> tuple[list[dict[str, str]], str | None]:
    chosen: Sequence[PlotSpec] = specs if specs is not None else plotting.default_plots(frame)
    shown: list[dict[str, str]] = []
    for spec in chosen:
        if isinstance(spec, Mapping):
            options = dict(spec)
            x, y = options.pop("x"), options.pop("y")
            hue = options.pop("hue", None)
            try:
                figure = plotting.plot(frame, x, y, hue, **options)
            except MissingDependencyError as error:
                return shown, str(error)
            title = str(options.get("title") or figure.axes[0].get_title())
        else:
            figure = spec
            axes = getattr(figure, "axes", None) or []
            title = str(axes[0].get_title()) if axes else "figure"
        shown.append({"title": title, "src": _figure_uri(figure)})
    return shown, None


def _column_order(columns: list[str]) -> list[str]:
    """What a reader scans first: the step (id, recipe, parameters), tags and status, the
    results; then the bookkeeping."""

    def rank(column: str) -> int:
        for index, prefix in enumerate(_COLUMN_ORDER):
            if column == prefix or (prefix.endswith(".") and column.startswith(prefix)):
                return index
        return len(_COLUMN_ORDER)

    return sorted(columns, key=rank)  # stable: the table's own order within a rank


_COLUMN_ORDER = (
    "id",
    "recipe",
    "param.",
    "tags",
    "status",
    "result.",
    "property.",
    "depth",
    "seconds",
    "created",
    "parent",
)


def render_report(
    tree: StaticExperimentTree,
    *,
    title: str | None = None,
    plots: Sequence[PlotSpec] | None = None,
    page_size: int = PAGE_SIZE,
    **drawing: Any,
) -> str:
    """The HTML of the report of ``tree`` (see :func:`write_report` for the arguments)."""
    jinja2 = _jinja()
    known = [render.facts(state) for state in tree.nodes]
    frame = tree.nodes.to_dataframe()
    columns = _column_order([str(column) for column in frame.columns])
    rows = [[_jsonable(value) for value in row] for row in frame[columns].itertuples(index=False)]
    svg, drawing_note, groups = _drawing(tree, frame, drawing)
    figures, plots_note = _plots(frame, plots)
    statuses = Counter(fact.status for fact in known)
    data = {
        "states": [_state_document(fact) for fact in known],
        "columns": columns,
        "rows": rows,
        "groups": groups,
        "page_size": int(page_size),
    }
    environment = jinja2.Environment(
        loader=jinja2.PackageLoader("dagger", "templates"),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    template = environment.get_template(_TEMPLATE)
    return str(
        template.render(
            title=title or "dagger experiment",
            generated=_dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
            version=__version__,
            count=len(known),
            roots=sum(1 for fact in known if fact.parent is None),
            depth=int(frame["depth"].max()) if len(frame) and "depth" in frame else 0,
            statuses=sorted(statuses.items()),
            svg=jinja2.utils.markupsafe.Markup(svg) if svg is not None else None,
            drawing_note=drawing_note,
            text_tree=render.to_text(tree) if svg is None else None,
            color=drawing.get("color"),
            plots=figures,
            plots_note=plots_note,
            data=data,
        )
    )


def write_report(
    tree: StaticExperimentTree,
    path: str | os.PathLike[str] = "report.html",
    *,
    title: str | None = None,
    plots: Iterable[PlotSpec] | None = None,
    page_size: int = PAGE_SIZE,
    **drawing: Any,
) -> Path:
    """Write one self-contained HTML file describing ``tree`` and return its path.

    Args:
        tree: A restored tree (``Experiment.restore(directory).graph``).
        path: The file to write (folders are created); an existing file is replaced.
        title: The page's title; default "dagger experiment".
        plots: The plots to show: ``{"x": ..., "y": ..., "hue": ...}`` dicts (any keyword of
            :func:`dagger.plots.plot` but ``path``) or matplotlib Figures. None picks
            sensible ones (:func:`dagger.plots.default_plots`: each numeric result against
            the parameter that varies most); ``[]`` shows none.
        page_size: Rows of the table per page.
        **drawing: Options of the drawing (``color``, ``cmap``, ``collapse``, ``expand``,
            ``max_nodes``, ``label``, ``node_args``): see :func:`dagger.render.to_graphviz`.

    Returns:
        The path written.

    Raises:
        MissingDependencyError: (an ImportError) Jinja2 is not installed.
        ColumnNotFoundError: ``color`` or a plot's column names no column.
        PlotError: A plot or drawing option cannot be honoured.
    """
    html = render_report(
        tree,
        title=title,
        plots=list(plots) if plots is not None else None,
        page_size=page_size,
        **drawing,
    )
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    temporary = target.with_name(f".{target.name}.tmp")
    temporary.write_text(html, encoding="utf-8")
    os.replace(temporary, target)  # a reader never sees half a report
    logger.info("Report of %d states written to %s", len(tree), target)
    return target
