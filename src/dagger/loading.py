"""Building states: a new root, a full load from the store, a slim state from a record.

Every ExperimentState dagger hands out is made here, whoever asks: the experiment, the runner
(in this process or in a worker) and the restored tree. :class:`StoreOwner` is what a state
calls back to load itself or its root (an Experiment is one; a worker uses this one directly).
"""

from __future__ import annotations

import contextlib
import inspect
import logging
from collections.abc import Sequence
from typing import Any

from ._compat import call_method
from .errors import CorruptStateError, ExperimentDefinitionError
from .state import ExperimentState, SlimInfo, SlimSource, adopt, apply_record, attach_info
from .store import Results, Store

__all__ = [
    "StoreOwner",
    "check_constructible",
    "damage_noter",
    "load_root",
    "load_state",
    "new_root",
    "slim_state",
]

logger = logging.getLogger("dagger")


def _init_keywords(state_class: type[ExperimentState]) -> dict[str, Any] | None:
    """The keywords dagger passes to the state class's ``__init__`` (None: its signature is
    unknown, and it is called without arguments)."""
    try:
        parameters = inspect.signature(state_class.__init__).parameters
    except (TypeError, ValueError):
        return None
    names = list(parameters)[1:]
    takes_keywords = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters.values())
    if takes_keywords or ("parent_sha" in names and "experiment_object" in names):
        return {"parent_sha": None, "experiment_object": None}
    return {}


def check_constructible(state_class: type[ExperimentState]) -> None:
    """Raise ExperimentDefinitionError if dagger cannot call the state class's ``__init__``
    the way it builds roots (checked where the Experiment is defined, not when a root runs).
    """
    keywords = _init_keywords(state_class)
    if keywords is None:
        return
    try:
        inspect.signature(state_class).bind(**keywords)
    except TypeError as error:
        name = state_class.__name__
        raise ExperimentDefinitionError(
            f"dagger cannot build states of {name}: its __init__"
            f"{inspect.signature(state_class)} cannot be called as {name}(parent_sha=None, "
            f"experiment_object=<the Experiment>), the way dagger (like the original dagger) "
            f"builds a root ({error}). Declare it as `def __init__(self, parent_sha=None, "
            "experiment_object=None)` calling `super().__init__(parent_sha, "
            "experiment_object)`, or set the state up in initialize_state(**arguments).",
            state_class=name,
        ) from None


def _construct(state_class: type[ExperimentState], owner: Any) -> ExperimentState:
    """An instance of the user's state class, built the way its ``__init__`` expects.

    The original dagger built states as ``state_class(parent_sha=..., experiment_object=...)``
    and user classes that define ``__init__(self, parent_sha, experiment_object)`` rely on
    it; a class whose ``__init__`` takes no arguments gets none. Only roots are constructed:
    a child starts as a copy of its parent, so ``__init__`` does not run for it.
    """
    keywords = _init_keywords(state_class)
    if not keywords:
        return state_class()
    return state_class(parent_sha=None, experiment_object=owner)


def new_root(
    state_class: type[ExperimentState],
    *,
    owner: Any,
    sha: str,
    arguments: dict[str, Any],
    tags: Sequence[str],
) -> ExperimentState:
    """Create and initialise a root state: PROPERTIES and non-hashed arguments set as
    attributes, then ``initialize_state(**arguments)``."""
    state = _construct(state_class, owner)
    adopt(state, experiment=owner, sha=sha, parent_id=None, tags=tags, recipe=None)
    for name in state_class.PROPERTIES:
        setattr(state, name, arguments[name])
    for name in state_class.NONHASHED_ATTRIBUTES:
        if name in arguments:
            setattr(state, name, arguments[name])
    call_method(state, "initialize_state", **arguments)
    return state


def load_state(
    store: Store,
    sha: str,
    state_class: type[ExperimentState],
    *,
    owner: Any,
    map_location: Any = None,
) -> ExperimentState | None:
    """Load a stored state fully (None, with one warning, if it is missing or corrupt).

    Args:
        store: Where it is.
        sha: The state's id.
        state_class: The experiment's state class (for a ``load_hook``).
        owner: What the state calls back (``experiment_object``).
        map_location: Where to put tensors, as for ``torch.load``.
    """
    try:
        state = store.load(sha, state_class, map_location)
    except CorruptStateError:
        return None
    if not isinstance(state, ExperimentState):
        try:
            store.quarantine(
                sha, f"its payload holds a {type(state).__name__}, not an ExperimentState"
            )
        except CorruptStateError:
            return None
    record = store.read_record(sha)
    notes = store.read_notes(sha)
    if record is None:  # quarantined by another process since
        return None
    apply_record(
        state,
        experiment=owner,
        record=record,
        notes=notes,
        results=Results(notes.results, store.load_result, on_damage=damage_noter(store, sha)),
        slim=False,
    )
    for hook in list(getattr(state, "load_post_hooks", [])):
        hook()
    return state


def damage_noter(store: Store, sha: str) -> Any:
    """What a state's Results call when a recorded result turns out damaged: the store marks
    it failed, so that the next run computes it again (and replaces the damaged copy)."""

    def note(name: str, error: Exception) -> None:
        with contextlib.suppress(Exception):  # a read-only folder: the error is raised anyway
            store.forget_result(sha, name, str(error))

    return note


def load_root(
    store: Store,
    start: str,
    state_class: type[ExperimentState],
    *,
    owner: Any,
) -> ExperimentState | None:
    """The root of the tree holding state ``start``, fully loaded (a fresh object).

    The root is found by following the stored records' parents, so this works in a worker
    process and in a store with several roots.
    """
    sha: str | None = start
    seen: set[str] = set()
    while sha is not None and sha not in seen:
        seen.add(sha)
        record = store.read_record(sha)
        if record is None:
            return None
        if record.parent is None:
            return load_state(store, sha, state_class, owner=owner)
        sha = record.parent
    return None


def slim_state(state_class: type[ExperimentState], source: SlimSource, row: int) -> ExperimentState:
    """A slim state (dagger's facts only, no content) of row ``row`` of a restored tree.

    Nothing is read or built beyond the object itself: its facts come from the tree's table
    when first asked for (:class:`~dagger.state.SlimInfo`). ``__init__`` is not called (the
    state was made by its recipe, not by this process).
    """
    state = state_class.__new__(state_class)
    attach_info(state, SlimInfo(source, row))
    return state


class StoreOwner:
    """What states of a store call back to load themselves and their root.

    An Experiment does this for the states it hands out; a worker process, which has no
    Experiment, uses this directly.

    Args:
        store: The store.
        state_class: The experiment's state class.
    """

    def __init__(self, store: Store, state_class: type[ExperimentState]) -> None:
        self.store = store
        self.state_class = state_class
        #: The experiment's folder, for recipes that write files beside it (None in memory).
        self.directory = getattr(store, "directory", None)

    def load_state(self, sha: str, map_location: Any = None) -> ExperimentState | None:
        return load_state(self.store, sha, self.state_class, owner=self, map_location=map_location)

    def load_root(self, start: str | None = None) -> ExperimentState | None:
        if start is None:
            return None
        return load_root(self.store, start, self.state_class, owner=self)

    def promise_of(self, state: ExperimentState) -> Any:
        raise ExperimentDefinitionError(
            "A state computed in a worker process cannot grow the tree: define children in "
            "the process that runs the experiment."
        )
