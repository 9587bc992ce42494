"""ExperimentStatePromise: a lazy node of the tree, before it is computed.

A promise is its parent promise, the recipe applied to it (a snapshot taken when it was
applied), and the tags active when it was defined. Building promises touches no disk and runs
nothing; :meth:`sha` hashes how the state will be produced, :meth:`get` computes (or loads)
just this state and the ones on its path.

Reading an attribute the promise itself does not have (``exp.root.model``, as code written for
the original dagger does right after ``spawn_new_tree``) realises the promise once, the way
:meth:`ExperimentStatePromise.get` does, logs one line, keeps the state and forwards the
attribute to it. Names starting with ``_`` never realise anything (IPython, ``copy`` and
``pickle`` probe those).
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Iterable
from typing import Any, Protocol

from ._names import short_id
from .errors import ExperimentDefinitionError
from .explain import Explanation, explain_child, explain_root
from .identity import child_id, state_code_identity
from .recipe import Function, Growable, Recipe
from .record import RecipeInfo
from .state import ExperimentState

__all__ = [
    "ExperimentStatePromise",
    "TreeBuilder",
    "code_now",
    "realise",
    "warn_scheduler",
]

logger = logging.getLogger("dagger")


def warn_scheduler(scheduler: Any, stacklevel: int = 3) -> None:
    """Warn that the original dagger's ``scheduler=`` argument is ignored (if it was given)."""
    if scheduler is not None:
        warnings.warn(
            f"scheduler={scheduler!r} is ignored: dagger no longer builds dask graphs. Pass "
            "executor=... to run() to compute independent branches in parallel (a "
            "ProcessPoolExecutor, a dask.distributed Client, a submitit executor).",
            DeprecationWarning,
            stacklevel=stacklevel,
        )


class TreeBuilder(Protocol):
    """What a promise needs from the experiment that defines it (an Experiment provides it)."""

    state_class: type[ExperimentState]

    def add_child(
        self, parent: ExperimentStatePromise, recipe: Recipe
    ) -> ExperimentStatePromise: ...

    def add_function(self, promise: ExperimentStatePromise, function: Function) -> None: ...

    def get(self, promise: ExperimentStatePromise) -> ExperimentState: ...


class ExperimentStatePromise(Growable):
    """A state the experiment will produce.

    Attributes:
        experiment: The Experiment this promise belongs to.
        parent: The parent promise (None for a root or for a stored state grown again).
        recipe: The recipe producing this state from the parent (None for a root): the
            snapshot taken when it was applied.
        tags: Tags active when the promise was defined.
        arguments: A root's ``spawn_new_tree`` arguments (None otherwise).
        children: Promises defined from this one, in the order they were defined (an empty
            tuple until there is one: most promises of a large tree are leaves).
        functions: Functions to run on the state once it exists (an empty tuple until one
            is applied).
        stored: Whether the promise stands for an already stored state (grown again after a
            restore), whose recipe this process does not know.
        reads_code: Whether its id depends on code held in its recipe's properties (a
            function, a class, another recipe): a run works its id out again, to see that
            code unchanged (a root's arguments are always looked at again).

    Any other public attribute is read from the state the promise stands for: the first such
    read computes (or loads) it like :meth:`get`, logs one INFO line naming its id, and keeps
    the state on the promise for later reads.
    """

    # What most promises of a large tree keep as it is, as class attributes: a promise sets
    # only what differs (100,000 promises are built in a loop of the user's).
    arguments: dict[str, Any] | None = None
    # Empty tuples until something is added: no list per leaf for the collector to traverse
    # (a tree of 100,000 promises is mostly leaves).
    children: list[ExperimentStatePromise] | tuple[()] = ()
    functions: list[Function] | tuple[()] = ()
    _sha: str | None = None
    # The recipe's identity when it was applied, kept as three attributes rather than one
    # tuple: a tuple holding a dict stays tracked by the collector, one per promise.
    _recipe_name: str | None = None
    _code: str | None = None
    _properties: dict[str, Any] | None = None
    _info: RecipeInfo | None = None
    stored = False
    reads_code = False
    _realised: ExperimentState | None = None

    def __init__(
        self,
        experiment: TreeBuilder,
        parent: ExperimentStatePromise | None,
        recipe: Recipe | None,
        tags: Iterable[str],
        *,
        arguments: dict[str, Any] | None = None,
        known_sha: str | None = None,
        identity: tuple[str, str, dict[str, Any]] | None = None,
        defined_sha: str | None = None,
    ) -> None:
        self.experiment = experiment
        self.parent = parent
        self.recipe = recipe
        self.tags = tags if type(tags) is tuple else tuple(tags)
        if arguments is not None:
            self.arguments = arguments
        if known_sha is not None:
            self._sha = known_sha
            self.stored = True
        if identity is not None:  # the recipe's identity, taken with its snapshot
            self._recipe_name, self._code, self._properties = identity
            if defined_sha is not None:  # and the id it gives, worked out by the caller
                self._sha = defined_sha

    @property
    def experiment_object(self) -> TreeBuilder:
        """The seed's name for :attr:`experiment`."""
        return self.experiment

    @property
    def is_root(self) -> bool:
        return self.parent is None and self.recipe is None and not self.stored

    @property
    def root(self) -> ExperimentStatePromise:
        """The promise at the top of this one's path: its tree's root (or the stored state it
        was grown from). Reading an attribute of it realises that root."""
        cursor = self
        while cursor.parent is not None:
            cursor = cursor.parent
        return cursor

    def sha(self) -> str:
        """The id the state will have (computed once, from identities only; no disk access).

        Raises:
            HashingError: A recipe property or experiment argument cannot be hashed.
        """
        if self._sha is None:
            if self.parent is None or self.recipe is None:
                assert self.arguments is not None
                state_class = self.experiment.state_class
                # the code identity it is made of, kept for defined_code() (the next call
                # answers from the fingerprint cache)
                self._code = state_code_identity(state_class, ExperimentState)
                self._sha = state_class.root_sha(self.arguments)
            else:
                name, code, properties = self._recipe_name, self._code, self._properties
                if name is None or code is None or properties is None:
                    name, code, properties = self.recipe.identity()
                    self._recipe_name, self._code, self._properties = name, code, properties
                # child_sha(parent, recipe, identity), one call shorter (once per promise)
                kind = type(self.recipe).__name__
                self._sha = child_id(self.parent.sha(), name, code, properties, kind=kind)
        return self._sha

    def id_now(self) -> str | None:
        """The id this promise's definition gives now: its root arguments, or its recipe's
        identity as applied, hashed again (functions and classes among them by their code as
        it is now). Differs from :meth:`sha` when such code, a global it reads, or an object
        among the values was changed after definition. None for a stored state grown again.

        Raises:
            HashingError: A value cannot be hashed any more.
        """
        if self.parent is None or self.recipe is None:
            if self.arguments is None:
                return None
            return self.experiment.state_class.root_sha(self.arguments)
        identity = self._identity()
        if identity is None:
            return self.sha()
        name, code, properties = identity
        kind = type(self.recipe).__name__
        return child_id(self.parent.sha(), name, code, properties, kind=kind)

    def defined_code(self) -> tuple[type, str] | None:
        """The class whose code this promise's state runs (the recipe's class, or the state
        class for a root) and its code identity when the promise was defined: part of the
        id. None for a promise standing for a stored state, and before :meth:`sha`."""
        if self._code is None:
            return None
        if self.recipe is not None:
            return type(self.recipe), self._code
        return self.experiment.state_class, self._code

    def _identity(self) -> tuple[str, str, dict[str, Any]] | None:
        """The recipe's identity as it was when applied (None before :meth:`sha`)."""
        if self._recipe_name is None or self._code is None or self._properties is None:
            return None
        return (self._recipe_name, self._code, self._properties)

    def attach_child(self, child: ExperimentStatePromise) -> None:
        """Record ``child`` as defined from this promise (the experiment calls it)."""
        if isinstance(self.children, list):
            self.children.append(child)
        else:
            self.children = [child]

    def attach_function(self, function: Function) -> None:
        """Record ``function`` to run on this promise's state (the experiment calls it)."""
        if isinstance(self.functions, list):
            self.functions.append(function)
        else:
            self.functions = [function]

    def explain(self) -> Explanation:
        """What this state's id is made of: the recipe (or state class) and its parameters (or
        arguments), the code identity with every ingredient the code reads, and the names it
        reads that are not part of the id. ``print(promise.explain())`` lists them.

        Raises:
            ExperimentDefinitionError: The promise stands for a stored state grown again
                after a restore: explain that state (``state.explain()``) instead.
        """
        sha = self.sha()
        if self.parent is None or self.recipe is None:
            if self.arguments is None:
                raise ExperimentDefinitionError(
                    f"Promise {short_id(sha)} stands for a stored state; explain the restored "
                    "state instead: tree.node(id).explain()."
                )
            state_class = self.experiment.state_class
            arguments = state_class.identity_arguments(self.arguments)
            return explain_root(
                state_class,
                ExperimentState,
                arguments,
                state_code_identity(state_class, ExperimentState),
                sha,
            )
        _, code, properties = self._identity() or self.recipe.identity()
        base = Function if isinstance(self.recipe, Function) else Recipe
        return explain_child(type(self.recipe), base, self.parent.sha(), properties, code, sha)

    def recipe_info(self) -> RecipeInfo | None:
        """How the record will describe this promise's recipe (None for a root)."""
        if self.recipe is None:
            return None
        if self._info is None:
            self.sha()
            self._info = self.recipe.info(self._identity())
        return self._info

    def add_child(self, recipe: Recipe) -> ExperimentStatePromise:
        """Define the child ``recipe`` produces from this state (what ``recipe(self)`` does)."""
        return self.experiment.add_child(self, recipe)

    def add_function(self, function: Function) -> ExperimentStatePromise:
        """Run ``function`` on this state during the next run (what ``function(self)`` does)."""
        self.experiment.add_function(self, function)
        return self

    def get(self, scheduler: Any = None) -> ExperimentState:
        """Compute (or load) this state and only what lies on its path; return it fully loaded.

        Args:
            scheduler: The original dagger's dask scheduler: accepted and ignored, with a
                DeprecationWarning (there is no dask graph any more).

        Raises:
            RunError: The state (or one on its path) failed; its ``__cause__`` is the
                recipe's exception.
        """
        warn_scheduler(scheduler)
        return self.experiment.get(self)

    def __getattr__(self, name: str) -> Any:
        # Called only for names the promise itself lacks: the realised state's attributes.
        if name.startswith("_") or "experiment" not in self.__dict__:
            raise AttributeError(f"'{type(self).__name__}' object has no attribute '{name}'")
        state = realise(self, f"`{name}`")
        try:
            return getattr(state, name)
        except AttributeError:
            raise AttributeError(
                f"{type(state).__name__} {short_id(state.sha())} (read through its promise) has "
                f"no attribute '{name}'."
            ) from None

    def __repr__(self) -> str:
        what = "root" if self.is_root else repr(self.recipe) if self.recipe else "stored"
        sha = self._sha[:12] if self._sha else "?"
        return f"ExperimentStatePromise({what}, sha={sha}, tags={list(self.tags)})"


def code_now(cls: type) -> str:
    """The code identity ``cls`` (a Recipe or ExperimentState subclass) has now, as a promise
    defined now would record it (:meth:`ExperimentStatePromise.defined_code`)."""
    if issubclass(cls, Recipe):
        code: str = cls.code_identity()
        return code
    return state_code_identity(cls, ExperimentState)


def realise(promise: ExperimentStatePromise, wanted: str) -> ExperimentState:
    """The state ``promise`` stands for, computed (and stored) or loaded once, then kept.

    Args:
        promise: The promise.
        wanted: What is being read, for the log line (``"`model`"``, ``"exp.root"``).

    Raises:
        RunError: The state (or one on its path) failed.
    """
    if promise._realised is None:
        state = promise.experiment.get(promise)
        promise._realised = state
        logger.info(
            "Reading %s of %s: %s state %s.",
            wanted,
            "the root"
            if promise.is_root
            else repr(promise.recipe)
            if promise.recipe
            else "a state",
            "loaded stored" if state.from_cache else "computed and stored",
            short_id(promise.sha()),
        )
    return promise._realised
