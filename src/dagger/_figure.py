"""A matplotlib Figure that shows itself inline in notebooks, whatever the backend.

Kept apart from :mod:`dagger.plots` because importing it imports matplotlib: ``dagger.plots``
(and the drawing code that resolves column names through it) must import without matplotlib.
"""

from __future__ import annotations

import io

from matplotlib.figure import Figure

__all__ = ["PlotFigure"]


class PlotFigure(Figure):
    """A :class:`matplotlib.figure.Figure` with a PNG rich display.

    dagger builds figures without pyplot (no global figure registry, no GUI backend), so a
    notebook that never imported pyplot has no image formatter for them; this one brings its
    own. Where IPython's matplotlib formatter is registered, that one is used instead (same
    picture).
    """

    def _repr_png_(self) -> bytes:
        buffer = io.BytesIO()
        self.savefig(buffer, format="png")
        return buffer.getvalue()
