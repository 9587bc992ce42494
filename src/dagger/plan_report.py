"""What a run would do, as a table: which states it computes, which are stored, and how long.

:func:`build_plan_report` turns the rows of a plan (plain dicts, one per state) and the recorded
durations of stored states into a :class:`PlanReport`: each row says what happens to the state
(``compute``, ``stored``, ``failed before``, ``skipped``) and, for those a run would compute,
an estimated time: the median recorded ``seconds`` of the stored states of the same recipe
class (unknown when none is stored). The median, not the mean, so that one state that ran on a
loaded machine or hit a cold cache does not skew the estimate.

A state that failed before is computed again by a run, so it is estimated like one to compute.
Each row may also list the Functions a run would run on the state (their time is not
estimated).
"""

from __future__ import annotations

import dataclasses
import math
import statistics
from collections.abc import Iterable, Mapping
from typing import Any, ClassVar, Literal, get_args

from .errors import InvalidArgumentError

__all__ = [
    "PlanAction",
    "PlanReport",
    "PlanRow",
    "build_plan_report",
    "format_seconds",
    "median_durations",
]

PlanAction = Literal["compute", "stored", "failed before", "skipped"]
ACTIONS: tuple[str, ...] = get_args(PlanAction)
# The actions a run spends time on.
RUNS = frozenset({"compute", "failed before"})


@dataclasses.dataclass(frozen=True)
class PlanRow:
    """One state of the plan.

    Attributes:
        state_id: The state's id (hex).
        recipe: How the state is made, for people: ``"Train(epochs=1, lr=0.1)"``, or the
            state class's name for a root.
        recipe_class: The key durations are grouped by: the recipe's class (for a root, the
            state class), e.g. ``"mymodule.Train"``.
        action: ``compute``, ``stored``, ``failed before`` or ``skipped``.
        estimated_seconds: Expected wall time of computing it, in seconds: None when the
            run will not compute it or no state of its recipe class was recorded.
        functions: Names of the Functions the run would run on it (results missing or
            outdated), in order.
    """

    state_id: str
    recipe: str
    recipe_class: str
    action: PlanAction
    estimated_seconds: float | None = None
    functions: tuple[str, ...] = ()


@dataclasses.dataclass(frozen=True)
class PlanReport:
    """A plan: its rows, in run order, and totals.

    ``str()`` is an aligned table with a totals line (at most ``MAX_ROWS`` rows; use
    :meth:`to_text` for all), :meth:`to_dataframe` a pandas DataFrame.
    """

    rows: tuple[PlanRow, ...]

    MAX_ROWS: ClassVar[int] = 50

    def count(self, action: str) -> int:
        """How many states the run would ``compute``, find ``stored``, and so on.

        Raises:
            InvalidArgumentError: ``action`` is not one of the four.
        """
        _check_action(action, "PlanReport.count()")
        return sum(1 for row in self.rows if row.action == action)

    @property
    def to_run(self) -> list[PlanRow]:
        """The rows a run would compute (``compute`` and ``failed before``)."""
        return [row for row in self.rows if row.action in RUNS]

    @property
    def estimated_seconds(self) -> float:
        """Sum of the known estimates of the rows to run, in seconds (see :attr:`unknown`)."""
        return math.fsum(
            row.estimated_seconds for row in self.to_run if row.estimated_seconds is not None
        )

    @property
    def functions(self) -> int:
        """How many Function results the run would compute, over all rows."""
        return sum(len(row.functions) for row in self.rows)

    @property
    def unknown(self) -> int:
        """How many rows to run have no estimate (no stored state of their recipe class)."""
        return sum(1 for row in self.to_run if row.estimated_seconds is None)

    def summary(self) -> str:
        """One line: ``"2 to compute, 5 stored, 1 failed before, 0 skipped, 3 Functions to run,
        estimated ~12 s + 1 of unknown duration"`` (the Functions part only when there are
        some; ``no estimate (N of unknown duration)`` when no state to run has one)."""
        parts = [
            f"{self.count('compute')} to compute",
            f"{self.count('stored')} stored",
            f"{self.count('failed before')} failed before",
            f"{self.count('skipped')} skipped",
        ]
        if self.functions:
            parts.append(f"{self.functions} Function{'s' if self.functions != 1 else ''} to run")
        if self.to_run and self.unknown == len(self.to_run):
            # "~0 ms" would read as a promise: nothing of these recipe classes was recorded.
            parts.append(f"no estimate ({self.unknown} of unknown duration)")
        elif self.to_run:
            estimate = f"~{format_seconds(self.estimated_seconds)}"
            if self.unknown:
                estimate += f" + {self.unknown} of unknown duration"
            parts.append(f"estimated {estimate}")
        return ", ".join(parts)

    def to_text(self, max_rows: int | None = None) -> str:
        """The table, then the summary line.

        Args:
            max_rows: Show at most this many rows (then a line saying how many are left
                out); None shows all.
        """
        shown = list(self.rows if max_rows is None else self.rows[:max_rows])
        header: tuple[str, ...] = ("state", "recipe", "action", "estimate")
        cells: list[tuple[str, ...]] = [
            (row.state_id[:12], row.recipe, row.action, _estimate_cell(row)) for row in shown
        ]
        if any(row.functions for row in self.rows):
            header += ("functions",)
            cells = [
                (*line, ", ".join(row.functions)) for line, row in zip(cells, shown, strict=True)
            ]
        widths = [max(len(line[i]) for line in [header, *cells]) for i in range(len(header))]
        lines = []
        for line in [header, *cells]:
            text = "  ".join(
                [
                    line[0].ljust(widths[0]),
                    line[1].ljust(widths[1]),
                    line[2].ljust(widths[2]),
                    line[3].rjust(widths[3]),
                    *(cell.ljust(width) for cell, width in zip(line[4:], widths[4:], strict=True)),
                ]
            )
            lines.append(text.rstrip())
        left_out = len(self.rows) - len(shown)
        if left_out:
            lines.append(f"... {left_out} more rows (PlanReport.to_text() shows all)")
        lines.append(self.summary())
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.to_text(self.MAX_ROWS)

    def to_dataframe(self) -> Any:
        """A ``pandas.DataFrame``, one row per state: ``state_id``, ``recipe``,
        ``recipe_class``, ``action``, ``estimated_seconds`` (NaN when unknown or not run),
        ``functions`` (a list of names)."""
        import pandas as pd

        columns = [
            "state_id",
            "recipe",
            "recipe_class",
            "action",
            "estimated_seconds",
            "functions",
        ]
        return pd.DataFrame(
            [
                {
                    **dataclasses.asdict(row),
                    "estimated_seconds": math.nan
                    if row.estimated_seconds is None
                    else row.estimated_seconds,
                    "functions": list(row.functions),
                }
                for row in self.rows
            ],
            columns=columns,
        )


def median_durations(records: Iterable[Mapping[str, Any]]) -> dict[str, float]:
    """Median recorded duration per recipe class.

    Args:
        records: One mapping per stored state, with ``recipe_class`` (str) and ``seconds``
            (wall time of computing it, in seconds). Records without a finite, non-negative
            ``seconds`` (failed states, records of an older format) are left out.

    Returns:
        ``{recipe_class: median seconds}``, for the classes that have at least one duration.
    """
    samples: dict[str, list[float]] = {}
    for record in records:
        seconds = record.get("seconds")
        recipe_class = record.get("recipe_class")
        if not isinstance(recipe_class, str) or isinstance(seconds, bool):
            continue
        if not isinstance(seconds, int | float) or not math.isfinite(seconds) or seconds < 0:
            continue
        samples.setdefault(recipe_class, []).append(float(seconds))
    return {name: statistics.median(values) for name, values in samples.items()}


def build_plan_report(
    rows: Iterable[Mapping[str, Any]], history: Iterable[Mapping[str, Any]] = ()
) -> PlanReport:
    """A :class:`PlanReport` from plain rows and the recorded durations of stored states.

    Args:
        rows: One mapping per planned state, in run order, with ``state_id`` (str),
            ``recipe`` (str, for people), ``recipe_class`` (str) and ``action``
            (``"compute"``, ``"stored"``, ``"failed before"`` or ``"skipped"``); optionally
            ``functions`` (the names of the Functions to run on it).
        history: Records of stored states, as :func:`median_durations` takes them.

    Raises:
        InvalidArgumentError: A row lacks a key, or its ``action`` is not one of the four.
    """
    durations = median_durations(history)
    built = []
    for index, row in enumerate(rows):
        missing = [
            key for key in ("state_id", "recipe", "recipe_class", "action") if key not in row
        ]
        if missing:
            raise InvalidArgumentError(
                f"Plan row {index} lacks {', '.join(map(repr, missing))} (it has "
                f"{', '.join(map(repr, row)) or 'no keys'}). Give every row state_id, recipe, "
                "recipe_class and action.",
                row=dict(row),
                missing=missing,
            )
        action = row["action"]
        _check_action(action, f"Plan row {index} (state {str(row['state_id'])[:12]})")
        estimate = durations.get(row["recipe_class"]) if action in RUNS else None
        built.append(
            PlanRow(
                state_id=str(row["state_id"]),
                recipe=str(row["recipe"]),
                recipe_class=str(row["recipe_class"]),
                action=action,
                estimated_seconds=estimate,
                functions=tuple(str(name) for name in row.get("functions", ())),
            )
        )
    return PlanReport(tuple(built))


def format_seconds(seconds: float) -> str:
    """A duration for people: ``"850 ms"``, ``"12.3 s"``, ``"4 min 10 s"``, ``"2 h 05 min"``."""
    if seconds < 1:
        return f"{seconds * 1000:.0f} ms"
    if seconds < 60:
        return f"{seconds:.3g} s"
    if seconds < 3600:
        minutes, rest = divmod(round(seconds), 60)
        return f"{minutes} min {rest:02d} s"
    hours, rest = divmod(round(seconds) // 60, 60)
    return f"{hours} h {rest:02d} min"


def _estimate_cell(row: PlanRow) -> str:
    if row.estimated_seconds is not None:
        return format_seconds(row.estimated_seconds)
    return "unknown" if row.action in RUNS else ""


def _check_action(action: Any, where: str) -> None:
    if action not in ACTIONS:
        raise InvalidArgumentError(
            f"{where}: action {action!r} is not one of "
            f"{', '.join(map(repr, ACTIONS))}. Use one of those.",
            action=action,
        )
