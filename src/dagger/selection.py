"""Naming stored states: what ``audit()``, ``remove()`` and ``prune()`` accept as "these states".

A user names states by id or unique id prefix (as ``dagger ls`` shows them), by a state or a
promise, or by a list or NodeSet of those. :func:`ids_of` turns any of these into ids or
prefixes, :func:`resolve_ids` into full ids of a store's states.
"""

from __future__ import annotations

import bisect
import difflib
from collections.abc import Iterable
from typing import Any

from .errors import ExperimentDefinitionError, StateNotFoundError
from .promise import ExperimentStatePromise
from .state import ExperimentState

__all__ = ["ids_of", "resolve_ids"]


def ids_of(states: Any, what: str = "audit()") -> list[str]:
    """The ids (or prefixes) named by states, promises, strings, or an iterable of them.

    Args:
        states: An id or prefix, a state, a promise, or an iterable (list, NodeSet) of them.
        what: The operation, as error messages name it (``"remove()"``).

    Raises:
        ExperimentDefinitionError: Something else was given, or a state has no id.
    """
    items: Iterable[Any] = (
        [states] if isinstance(states, str | ExperimentState | ExperimentStatePromise) else states
    )
    if not isinstance(items, Iterable):
        raise ExperimentDefinitionError(
            f"{what} takes ids, states or promises (or a list of them); got a "
            f"{type(states).__name__}.",
            value_type=type(states).__name__,
        )
    ids = []
    for item in items:
        if isinstance(item, str):
            ids.append(item)
        elif isinstance(item, ExperimentState | ExperimentStatePromise):
            sha = item.sha()
            if sha is None:
                raise ExperimentDefinitionError("This state has no id yet; it was never stored.")
            ids.append(sha)
        else:
            raise ExperimentDefinitionError(
                f"{what} takes ids, states or promises (or a list of them); got a "
                f"{type(item).__name__}.",
                value_type=type(item).__name__,
            )
    return ids


def resolve_ids(wanted: Iterable[str], known: Iterable[str]) -> list[str]:
    """Full ids for ids or unique prefixes, in the order given (duplicates dropped).

    Raises:
        StateNotFoundError: A prefix matches no state, or several.
    """
    known_ids = sorted(set(known))
    resolved: list[str] = []
    for text in wanted:
        prefix = str(text).strip().lower()
        matches = (
            [state_id for state_id in known_ids if state_id.startswith(prefix)] if prefix else []
        )
        if len(matches) != 1:
            if matches:
                problem = (
                    f"matches {len(matches)} states ({', '.join(m[:12] for m in matches[:5])}"
                    f"{', ...' if len(matches) > 5 else ''}); give more digits"
                )
            else:
                near = _nearest(prefix, known_ids)
                hint = f" (nearest: {', '.join(near)})" if near else ""
                problem = (
                    f"matches no state of this experiment{hint}; `dagger ls DIR` lists the ids"
                )
            raise StateNotFoundError(f"The id {text!r} {problem}.", state_id=str(text))
        if matches[0] not in resolved:
            resolved.append(matches[0])
    return resolved


def _nearest(prefix: str, known_ids: list[str]) -> list[str]:
    """Up to three ids (12 characters) closest to ``prefix``: its neighbours in sorted order,
    and those whose first characters are most alike (a typo)."""
    if not prefix or not known_ids:
        return []
    start = bisect.bisect_left(known_ids, prefix)
    heads = {state_id[: len(prefix)]: state_id for state_id in known_ids}
    close = difflib.get_close_matches(prefix, list(heads), n=3, cutoff=0.5)
    found = [heads[head] for head in close]
    found += known_ids[max(start - 1, 0) : start + 1]
    return [state_id[:12] for state_id in dict.fromkeys(found)][:3]
