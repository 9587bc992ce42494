"""Plots of the table of states: a result against a parameter, a line or a cloud per group.

    plot(nodes, x="param.amount", y="result.evaluate.accuracy", hue="param.method")

``nodes`` is a :class:`~dagger.tree.NodeSet` (``tree.nodes.filter("prune*")``), a whole tree,
or a :class:`pandas.DataFrame` of the same shape (``nodes.to_dataframe()`` with columns of your
own added). Column names are those of :meth:`NodeSet.to_dataframe`: ``id``, ``parent``,
``depth``, ``recipe``, ``tags``, ``status``, ``seconds``, ``created``, ``param.<name>``,
``property.<name>``, ``result.<function>[.<key>...]``; a name that is the unique ending of one
column (``accuracy`` for ``result.evaluate.accuracy``) is accepted too.

Figures are built with matplotlib's object API, not pyplot: no GUI backend is ever selected (a
script on a cluster node saves PNGs without a display), and notebooks show the returned figure
inline (:class:`dagger._figure.PlotFigure` carries a PNG rich display).

Errors: ColumnNotFoundError (a KeyError; the message names the nearest columns), PlotError (a
ValueError: unknown kind, nothing to plot), UnknownFormatError (a file suffix other than png,
svg, pdf), MissingDependencyError (matplotlib is not installed).
"""

from __future__ import annotations

import difflib
import math
import os
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .errors import ColumnNotFoundError, MissingDependencyError, PlotError, UnknownFormatError

if TYPE_CHECKING:
    import pandas
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

__all__ = [
    "OKABE_ITO",
    "PLOT_FORMATS",
    "PLOT_KINDS",
    "default_plots",
    "is_numeric",
    "plot",
    "resolve_column",
    "save_figure",
    "table_of",
]

#: The file formats :func:`save_figure` (and ``plot(path=...)``) writes.
PLOT_FORMATS = ("png", "svg", "pdf")
#: What ``kind=`` accepts; None chooses (see :func:`plot`).
PLOT_KINDS = ("line", "scatter")

#: A qualitative palette that stays distinguishable for the common colour-vision deficiencies
#: (Okabe & Ito, "Color Universal Design", 2008), black left out (it reads as text and as
#: failure); more groups use tab20.
OKABE_ITO = (
    "#0072B2",
    "#E69F00",
    "#009E73",
    "#CC79A7",
    "#56B4E9",
    "#D55E00",
    "#999999",
    "#F0E442",  # last: yellow is hard to see on white
)

# A numeric hue with more distinct values than this is drawn on a colour map, not as groups.
MAX_HUE_GROUPS = 10
# The default plots of a report: at most this many results, each against one column.
MAX_DEFAULT_PLOTS = 6
FIGSIZE = (6.4, 4.0)
DPI = 100

_INSTALL = 'Install it with `pip install "dagger[viz]"` (or `pip install matplotlib`).'


# -- the table -------------------------------------------------------------------------------------


def table_of(data: Any) -> pandas.DataFrame:
    """The table of states of ``data``: a DataFrame as it is, else ``data.to_dataframe()``
    (a NodeSet), else ``data.nodes.to_dataframe()`` (a tree).

    Raises:
        TypeError: ``data`` is none of those.
    """
    import pandas

    if isinstance(data, pandas.DataFrame):
        return data
    for source in (data, getattr(data, "nodes", None)):
        to_dataframe = getattr(source, "to_dataframe", None)
        if callable(to_dataframe):
            frame = to_dataframe()
            if isinstance(frame, pandas.DataFrame):
                return frame
    raise TypeError(
        "plot() takes a NodeSet (tree.nodes...), a StaticExperimentTree or a pandas DataFrame; "
        f"got {type(data).__name__}."
    )


def resolve_column(frame: pandas.DataFrame, name: str) -> str:
    """The column of ``frame`` that ``name`` means: itself, or the one column it ends
    (``amount`` for ``param.amount``, ``accuracy`` for ``result.evaluate.accuracy``).

    Raises:
        ColumnNotFoundError: (a KeyError) No column matches; the message names the nearest
            ones and lists them all. Also when the short name ends several columns.
    """
    if not isinstance(name, str):
        raise TypeError(f"A column name is a string; got {name!r}.")
    columns = [str(column) for column in frame.columns]
    if name in columns:
        return name
    endings = [column for column in columns if column.endswith("." + name)]
    if len(endings) == 1:
        return endings[0]
    if endings:
        raise ColumnNotFoundError(
            f"The column name {name!r} is ambiguous here: it ends {', '.join(endings)}. "
            "Give the full name.",
            name=name,
            candidates=endings,
        )
    # Nearest by the full name, and by the last part (a typo in `acuracy`).
    close = difflib.get_close_matches(name, columns, n=3, cutoff=0.5)
    tails = {column.rsplit(".", 1)[-1]: column for column in columns}
    close += [
        tails[tail]
        for tail in difflib.get_close_matches(name.rsplit(".", 1)[-1], list(tails), n=3)
        if tails[tail] not in close
    ]
    hint = f" (did you mean {', '.join(map(repr, close[:3]))}?)" if close else ""
    raise ColumnNotFoundError(
        f"No column named {name!r} in the table of these {len(frame)} states{hint}. "
        f"Columns: {', '.join(columns) or 'none'}.",
        name=name,
        candidates=close[:3],
    )


def _scalar(value: Any) -> Any:
    """A cell as one plottable value: None for missing, lists and dicts as text."""
    if value is None:
        return None
    if isinstance(value, list | tuple):
        return ", ".join(map(str, value))
    if isinstance(value, dict):
        return str(value)
    if isinstance(value, float) and math.isnan(value):
        return None
    item = getattr(value, "item", None)
    if callable(item) and getattr(value, "ndim", None) == 0:  # numpy scalars
        return _scalar(item())
    try:
        import pandas

        if pandas.isna(value):
            return None
    except (TypeError, ValueError):
        pass
    return value


def is_numeric(values: Iterable[Any]) -> bool:
    """Whether every present value is a real number (booleans are categories, not numbers),
    and at least one is present."""
    seen = False
    for value in values:
        value = _scalar(value)
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, int | float):
            return False
        seen = True
    return seen


def _finite(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


# -- plotting --------------------------------------------------------------------------------------


def _matplotlib() -> Any:
    try:
        import matplotlib
    except ImportError as error:
        raise MissingDependencyError(
            f"Plotting needs the `matplotlib` package, which is not installed. {_INSTALL}",
            package="matplotlib",
        ) from error
    return matplotlib


def _new_figure(figsize: tuple[float, float], dpi: float) -> Figure:
    _matplotlib()
    from ._figure import PlotFigure

    return PlotFigure(figsize=figsize, dpi=dpi, layout="constrained")


def _palette(count: int) -> list[str]:
    if count <= len(OKABE_ITO):
        return list(OKABE_ITO[:count])
    matplotlib = _matplotlib()
    cmap = matplotlib.colormaps["tab20"]
    return [matplotlib.colors.to_hex(cmap(index % 20)) for index in range(count)]


def _sort_key(value: Any) -> tuple[int, Any]:
    return (0, value) if _finite(value) else (1, str(value))


def plot(
    data: Any,
    x: str,
    y: str,
    hue: str | None = None,
    *,
    kind: str | None = None,
    path: str | os.PathLike[str] | None = None,
    title: str | None = None,
    ax: Axes | None = None,
    figsize: tuple[float, float] = FIGSIZE,
    dpi: float = DPI,
) -> Figure:
    """Plot column ``y`` against column ``x`` of a table of states, one series per ``hue``.

    States that lack ``x`` or ``y`` (NaN, None) are left out. With ``kind=None`` the plot is
    a line with markers when ``x`` is numeric and no two states of a series share an ``x``
    (a sweep: accuracy by pruning amount), otherwise a scatter plot (repeated seeds, a
    categorical ``x``). A numeric ``hue`` with more than ten distinct values colours a scatter
    on viridis with a colour bar; otherwise each hue value is a series with its own colour
    (Okabe-Ito palette) in the legend.

    Args:
        data: A NodeSet, a StaticExperimentTree, or a DataFrame shaped like
            ``NodeSet.to_dataframe()``.
        x: The column along the horizontal axis (``param.amount``, ``depth``...).
        y: The column along the vertical axis (``result.evaluate.accuracy``...).
        hue: A column that splits the states into series (``param.method``), or None.
        kind: ``"line"`` or ``"scatter"`` to force one; None chooses as above.
        path: Also write the figure there (``.png``, ``.svg`` or ``.pdf``; no suffix: png).
        title: The title; default ``"<y> by <x>"``.
        ax: Draw into this matplotlib Axes instead of a new figure (its figure is returned).
        figsize: Width and height of a new figure, in inches.
        dpi: Dots per inch of a new figure (a PNG is ``figsize * dpi`` pixels).

    Returns:
        The matplotlib Figure. In a notebook it displays inline.

    Raises:
        ColumnNotFoundError: (a KeyError) ``x``, ``y`` or ``hue`` is not a column; the message
            names the nearest.
        PlotError: (a ValueError) ``kind`` is unknown, or no state has both ``x`` and ``y``.
        UnknownFormatError: (a ValueError) ``path`` ends in a suffix other than png/svg/pdf.
        MissingDependencyError: (an ImportError) matplotlib is not installed.
    """
    import pandas

    if kind is not None and kind not in PLOT_KINDS:
        raise PlotError(
            f"plot() draws kind {' or '.join(map(repr, PLOT_KINDS))}; got kind={kind!r}. "
            "Pass one of those, or None to let it choose.",
            kind=kind,
        )
    if path is not None:
        _check_suffix(path)  # before the work, so that a typo costs nothing
    frame = table_of(data)
    x_column = resolve_column(frame, x)
    y_column = resolve_column(frame, y)
    hue_column = resolve_column(frame, hue) if hue is not None else None

    points = pandas.DataFrame(
        {
            "x": [_scalar(value) for value in frame[x_column]],
            "y": [_scalar(value) for value in frame[y_column]],
            "hue": [_scalar(value) for value in frame[hue_column]]
            if hue_column is not None
            else [None] * len(frame),
        }
    )
    points = points[points["x"].notna() & points["y"].notna()]
    if points.empty:
        has_x = int(frame[x_column].map(_scalar).notna().sum())
        has_y = int(frame[y_column].map(_scalar).notna().sum())
        raise PlotError(
            f"No state has both {x_column!r} and {y_column!r} ({has_x} of {len(frame)} have "
            f"{x_column!r}, {has_y} have {y_column!r}), so there is nothing to plot. Choose "
            "columns that the same states have (tree.nodes.to_dataframe() shows them all).",
            x=x_column,
            y=y_column,
        )
    numeric_x = is_numeric(points["x"])
    numeric_hue = hue_column is not None and is_numeric(points["hue"])
    continuous_hue = numeric_hue and points["hue"].nunique() > MAX_HUE_GROUPS and kind != "line"
    groups = _groups(points) if not continuous_hue else [(None, points)]
    if kind is None:
        function_like = all(not group["x"].duplicated().any() for _, group in groups)
        several = any(len(group) > 1 for _, group in groups)
        kind = (
            "line" if numeric_x and function_like and several and not continuous_hue else "scatter"
        )

    if ax is None:
        figure = _new_figure(figsize, dpi)
        axes = figure.add_subplot()
    else:
        axes = ax
        figure = ax.figure  # type: ignore[assignment]
    if continuous_hue:
        cloud = axes.scatter(
            points["x"].astype(float),
            points["y"],
            c=points["hue"].astype(float),
            cmap="viridis",
            s=28,
            edgecolors="none",
        )
        figure.colorbar(cloud, ax=axes, label=hue_column)
    else:
        colors = _palette(len(groups))
        for (label, group), color in zip(groups, colors, strict=True):
            shown = None if hue_column is None else ("(none)" if label is None else str(label))
            if kind == "line":
                ordered = group.sort_values("x", key=lambda column: column.map(_sort_key))
                axes.plot(ordered["x"], ordered["y"], marker="o", color=color, label=shown)
            else:
                axes.scatter(
                    group["x"],
                    group["y"],
                    color=color,
                    label=shown,
                    s=28,
                    alpha=0.85 if len(points) < 200 else 0.6,
                    edgecolors="none",
                )
        if hue_column is not None:
            axes.legend(title=hue_column, fontsize="small", title_fontsize="small")
    axes.set_xlabel(x_column)
    axes.set_ylabel(y_column)
    axes.set_title(title if title is not None else f"{y_column} by {x_column}")
    axes.grid(True, alpha=0.3)
    if path is not None:
        save_figure(figure, path)
    return figure


def _groups(points: pandas.DataFrame) -> list[tuple[Any, pandas.DataFrame]]:
    """The rows split by hue, in the order of the hue values (numbers by value, then text)."""
    labels = sorted({value for value in points["hue"] if value is not None}, key=_sort_key)
    groups: list[tuple[Any, pandas.DataFrame]] = [
        (label, points[points["hue"] == label]) for label in labels
    ]
    missing = points[points["hue"].isna()]
    if not missing.empty:
        groups.append((None, missing))
    return groups


# -- files -----------------------------------------------------------------------------------------


def _check_suffix(path: str | os.PathLike[str]) -> tuple[Path, str]:
    target = Path(path)
    suffix = target.suffix.lower().lstrip(".")
    if not suffix:
        return target.with_name(f"{target.name}.png"), "png"
    if suffix not in PLOT_FORMATS:
        raise UnknownFormatError(
            f"A plot is written as {', '.join(PLOT_FORMATS)}; got the file name "
            f"{target.name!r}. End it in .png, .svg or .pdf.",
            format=suffix,
        )
    return target, suffix


def save_figure(figure: Figure, path: str | os.PathLike[str]) -> Path:
    """Write ``figure`` to ``path`` in the format its suffix names (none: ``.png`` is added).

    SVG and PDF files carry no creation date, so that the same plot writes the same bytes.

    Returns:
        The path written.

    Raises:
        UnknownFormatError: (a ValueError) The suffix is not .png, .svg or .pdf.
    """
    target, file_format = _check_suffix(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    metadata: dict[str, Any] = {"Date": None} if file_format == "svg" else {}
    if file_format == "pdf":
        metadata = {"CreationDate": None}
    figure.savefig(target, format=file_format, metadata=metadata)
    return target


# -- the default plots of a report -----------------------------------------------------------------


def default_plots(frame: pandas.DataFrame, limit: int = MAX_DEFAULT_PLOTS) -> list[dict[str, str]]:
    """Sensible plots of a table of states when nobody named any.

    Each numeric result (up to ``limit``) against the numeric parameter or property that
    varies most among the states that have that result (``depth`` when none varies), split
    by the categorical parameter with the most values (2 to 10) among them, if any.

    Returns:
        A list of ``{"x": ..., "y": ..., "hue": ...}`` (``hue`` only when chosen), in column
        order; empty when no result is numeric.
    """
    plots: list[dict[str, str]] = []
    columns = [str(column) for column in frame.columns]
    for y in columns:
        if len(plots) >= limit:
            break
        if not y.startswith("result.") or not is_numeric(frame[y]):
            continue
        rows = frame[frame[y].map(_scalar).notna()]
        if len(rows) < 2:
            continue
        x = _most_varying(rows, columns, numeric=True) or "depth"
        spec = {"x": x, "y": y}
        hue = _most_varying(rows, columns, numeric=False, exclude=x, most=MAX_HUE_GROUPS)
        if hue is not None:
            spec["hue"] = hue
        plots.append(spec)
    return plots


def _most_varying(
    rows: pandas.DataFrame,
    columns: Sequence[str],
    numeric: bool,
    exclude: str | None = None,
    most: int | None = None,
) -> str | None:
    best: tuple[int, str] | None = None
    for column in columns:
        if column == exclude or not column.startswith(("param.", "property.")):
            continue
        values = [_scalar(value) for value in rows[column]]
        present = [value for value in values if value is not None]
        if len(present) < 2 or is_numeric(present) != numeric:
            continue
        distinct = len({str(value) for value in present})
        if distinct < 2 or (most is not None and distinct > most):
            continue
        if best is None or distinct > best[0]:
            best = (distinct, column)
    return best[1] if best else None
