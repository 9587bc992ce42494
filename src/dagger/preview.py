"""What a run would do, without doing it: the rows of a surveyed plan and their estimated times.

:func:`preview` turns a plan that :func:`dagger.plan.survey` has marked (what is stored, which
Functions are pending, which states failed before) into a
:class:`~dagger.plan_report.PlanReport`, in the order a run walks the tree. Each state is:

* ``stored``: in the store; a run loads it only if something below it or a pending Function
  needs it;
* ``compute``: not stored; a run computes and stores it;
* ``failed before``: its recipe raised in an earlier run; a run tries it again (same id: same
  recipe, parameters, code and parent);
* ``skipped``: below a state that failed before. A run computes it only if that state
  succeeds this time; since nothing that makes up its id changed, the likely outcome is the same
  failure, so it is not counted in the estimate.

Estimates are the median recorded ``seconds`` of the stored states of the same recipe class
(for a root, the same state class), read from the store's records: every stored record is read
once, and nothing is written. Functions are listed per state; their time is not estimated.
"""

from __future__ import annotations

from typing import Any

from ._names import class_path
from .plan import PlanNode
from .plan_report import PlanReport, build_plan_report
from .record import RecipeInfo, StateRecord, Status
from .store import Store

__all__ = ["preview", "recipe_class_key"]


def recipe_class_key(recipe: RecipeInfo | None, state_class: str) -> str:
    """What durations are grouped by: ``module.Recipe``, or for a root ``module.StateClass``.

    Args:
        recipe: The recipe as a record describes it (None for a root).
        state_class: The state class's ``module:qualname`` (used for a root).
    """
    if recipe is None:
        return state_class.replace(":", ".")
    return f"{recipe.module}.{recipe.name}" if recipe.module else recipe.name


def preview(
    roots: list[PlanNode], failed_before: set[str], store: Store, state_class: type
) -> PlanReport:
    """The plan report of a surveyed plan (see the module docstring).

    Args:
        roots: The plan's roots, surveyed.
        failed_before: Ids of its states that failed in an earlier run (what ``survey``
            returned).
        store: The store the plan was surveyed against (only read).
        state_class: The experiment's state class.
    """
    root_class = class_path(state_class)
    rows: list[dict[str, Any]] = []
    stack: list[tuple[PlanNode, bool]] = [(root, False) for root in reversed(roots)]
    while stack:
        node, below_failure = stack.pop()
        if node.stored:
            action = "stored"
        elif below_failure:
            action = "skipped"
        elif node.sha in failed_before:
            action = "failed before"
        else:
            action = "compute"
        rows.append(
            {
                "state_id": node.sha,
                "recipe": f"{state_class.__name__} (root)" if node.is_root else node.describe(),
                "recipe_class": recipe_class_key(node.info, root_class)
                if node.is_root or node.info is not None
                else "",
                "action": action,
                "functions": tuple(node.pending) if action != "skipped" else (),
            }
        )
        failed = below_failure or action == "failed before"
        stack.extend((child, failed) for child in reversed(node.children))
    runs = any(row["action"] in ("compute", "failed before") for row in rows)
    return build_plan_report(rows, _history(store) if runs else ())


def _history(store: Store) -> list[dict[str, Any]]:
    """The recorded durations of every stored state, by recipe class (records only)."""
    history = []
    for state_id in store.snapshot().ids_of(Status.DONE):
        record: StateRecord | None = store.read_record(state_id)
        if record is not None:
            history.append(
                {
                    "recipe_class": recipe_class_key(record.recipe, record.state_class),
                    "seconds": record.seconds,
                }
            )
    return history
