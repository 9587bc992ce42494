"""ExperimentState: one point of an experiment, and dagger's facts about it.

A state is an ordinary object: whatever the user's code sets on it (a model, an optimizer,
metrics, an attribute called ``results`` or ``depth``) is the user's and is stored with it.
dagger keeps its own facts about the state apart, in one place: ``state.dagger``, a
:class:`StateInfo` (its id, status, record, recorded Function results, depth, parent and
children in a restored tree). The seed's documented names stay as they were: ``sha()``,
``parent_sha``, ``tags``, ``recipe``, ``experiment_object``, ``slim_loaded``, ``from_cache``,
``root_state`` and the hook lists; they read through to ``state.dagger``.

Those names, and the methods below, are reserved: setting one from user code raises
:class:`~dagger.errors.ReservedAttributeError` at once, naming the alternative. Two of the
original's names are defaults rather than reserved: ``directory`` (the experiment's folder) and
``path``; a state that sets its own ``directory`` or ``path`` attribute keeps it. ``explain()``
(what the state's id was made of) is a default too, so that a state whose code already has an
``explain`` attribute keeps it; ``state.dagger.explain()`` always answers.

A *slim* state (``slim_loaded`` is True) holds only dagger's facts; :meth:`restore` loads the
rest from the store, :meth:`deflate` drops it again, :meth:`lazy_load` does both around a block.
"""

from __future__ import annotations

import contextlib
import inspect
import logging
import types
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, ClassVar, Protocol

from ._names import short_id
from .errors import (
    ExperimentDefinitionError,
    MissingPropertyError,
    RemovedAPIError,
    ReservedAttributeError,
    StateNotFoundError,
    StateUnavailableError,
)
from .explain import Explanation, explain_record
from .identity import root_id
from .record import Notes, RecipeInfo, StateRecord, Status
from .store import Results, SlimTable
from .store.results import summary_entries

__all__ = [
    "HOOKS",
    "RESERVED",
    "ExperimentState",
    "SlimInfo",
    "SlimSource",
    "StateInfo",
    "StateOwner",
    "adopt",
    "apply_record",
    "attach_info",
]

logger = logging.getLogger("dagger")

#: The hook lists a state carries (stored with it, like the original dagger's).
HOOKS = ("save_pre_hooks", "save_post_hooks", "load_post_hooks")

# Where a state keeps its StateInfo (never pickled, never shown to the user's attributes).
_INFO = "__dagger__"
_NOTHING = object()


class StateOwner(Protocol):
    """What a state needs from the experiment it belongs to (an Experiment provides it).

    Declared here, below the experiment, so that a state can load itself, find its root and
    become a promise again without this module importing the experiment.
    """

    def load_state(self, sha: str, map_location: Any = None) -> ExperimentState | None: ...

    def load_root(self, start: str | None = None) -> ExperimentState | None: ...

    def promise_of(self, state: ExperimentState) -> Any: ...


class StateInfo:
    """dagger's facts about one state: ``state.dagger``.

    Attributes:
        id: The state's id (None before it is part of a tree).
        parent_id: The parent's id (None for a root).
        status: A :class:`~dagger.record.Status`: pending, running, done, failed or missing.
        record: The stored record (None before the state is stored).
        notes: Tags gained and Function results recorded after it was stored.
        results: Recorded Function results by name: ``state.dagger.results["evaluate"]``.
            Plain values are read from the record; other values load on first access.
        properties: The state class's PROPERTIES values as recorded.
        depth: Steps below its root in a restored tree (None elsewhere).
        parent: The parent state in a restored tree (None for a root or elsewhere).
        children: The child states in a restored tree, in the order they were created.
        experiment: The experiment the state belongs to (``experiment_object``).
        tags: The state's tags (``state.tags``).
        recipe: How the recipe that made it is recorded (``state.recipe``), None for a root.
        root: Whether it is a root (``state.root_state``).
        slim: Whether only these facts are loaded (``state.slim_loaded``).
        from_cache: Whether its content was loaded from the store (``state.from_cache``).
        environment: Where it was computed (a dict: python, torch, cuda, device, dagger,
            git commit and dirtiness, hostname, ...; see :mod:`dagger.environment`), or None
            when its record does not say (not computed yet, failed, or stored by a dagger
            that did not record it).
    """

    __slots__ = (
        "children",
        "depth",
        "experiment",
        "from_cache",
        "id",
        "notes",
        "parent",
        "parent_id",
        "properties",
        "recipe",
        "record",
        "results",
        "root",
        "slim",
        "status",
        "tags",
    )

    def __init__(self) -> None:
        self.id: str | None = None
        self.parent_id: str | None = None
        self.status: Status = Status.PENDING
        self.record: StateRecord | None = None
        self.notes: Notes = Notes()
        self.results: Mapping[str, Any] = {}
        self.properties: dict[str, Any] = {}
        self.depth: int | None = None
        self.parent: ExperimentState | None = None
        self.children: list[ExperimentState] = []
        self.experiment: Any = None
        self.tags: list[str] = []
        self.recipe: Any = None
        self.root = False
        self.slim = False
        self.from_cache = False

    @property
    def error(self) -> Any:
        """Why the state failed (a :class:`~dagger.record.ErrorInfo`), or None."""
        return self.record.error if self.record is not None else None

    @property
    def seconds(self) -> float | None:
        """Wall time of the recipe that made it, in seconds (None if not recorded)."""
        return self.record.seconds if self.record is not None else None

    @property
    def created(self) -> str | None:
        """When it was computed (ISO 8601, UTC), or None."""
        return self.record.created if self.record is not None else None

    def explain(self) -> Explanation:
        """What the state's id was made of, as its record keeps it: the recipe (or state
        class) and its parameters (or arguments), the code identity with every ingredient the
        code read, and the names it read that are not part of the id. ``print()`` lists them.
        Reads the record only (a slim state stays slim).

        A state stored by a dagger that did not record this explains with ``recorded``
        False (no manifest) rather than raising.

        Raises:
            StateNotFoundError: The state has no record (it is being computed, or it was
                never stored): explain its promise instead (``promise.explain()``).
        """
        record = self.record
        if record is None:
            raise StateNotFoundError(
                f"State {short_id(self.id)} has no stored record to explain (it is not stored "
                "yet). Explain its promise instead: promise.explain().",
                state_id=self.id,
            )
        return explain_record(record)

    @property
    def environment(self) -> dict[str, Any] | None:
        """Where it was computed (see :mod:`dagger.environment`), or None if not recorded.
        A copy: records share one environment."""
        found = self.record.environment if self.record is not None else None
        return dict(found) if found is not None else None

    def __repr__(self) -> str:
        return f"StateInfo(id={short_id(self.id)}, status={self.status.value}, depth={self.depth})"


def _info(state: ExperimentState) -> StateInfo:
    found = state.__dict__.get(_INFO)
    if found is None:
        found = state.__dict__[_INFO] = StateInfo()
    return found


def _reads_info(name: str, attribute: str, doc: str) -> property:
    def get(self: ExperimentState) -> Any:
        return getattr(_info(self), attribute)

    get.__name__ = name
    return property(get, doc=doc)


class ExperimentState:
    """A state of the experiment after the recipe that produced it finished.

    Subclass it to describe your experiment. A subclass may define its own
    ``__init__(self, parent_sha=None, experiment_object=None)`` (as in the original dagger);
    it must call ``super().__init__(parent_sha, experiment_object)``.

    Attributes:
        PROPERTIES: Names of ``spawn_new_tree`` arguments that are set as attributes on the
            root and inherited by every state; they are part of the root's identity.
        NONHASHED_ATTRIBUTES: Names of arguments (or attributes) that are stored and
            inherited but are not part of the identity (a data path, a device, a loader).
            Every other ``spawn_new_tree`` argument is part of the identity too.
        VERSION: Pins the identity of the root's code to this string instead of a fingerprint
            of ``initialize_state``.
        TRANSIENT_ATTRIBUTES: Names of attributes that are never stored (an open log file, a
            lock, a connection): they are None after a load and in the copy of a parent each
            child recipe gets. Everything else a state holds must be picklable.
        dagger: dagger's facts about this state (:class:`StateInfo`): id, status, record,
            recorded results, depth, parent, children.
    """

    PROPERTIES: ClassVar[list[str]] = []
    NONHASHED_ATTRIBUTES: ClassVar[list[str]] = []
    VERSION: ClassVar[str | None] = None
    TRANSIENT_ATTRIBUTES: ClassVar[list[str]] = []

    save_pre_hooks: list[Any]
    save_post_hooks: list[Any]
    load_post_hooks: list[Any]

    def __init__(self, parent_sha: str | None = None, experiment_object: Any = None) -> None:
        info = _info(self)
        info.parent_id = parent_sha
        info.experiment = experiment_object
        for hook in HOOKS:
            self.__dict__.setdefault(hook, [])
        for name in [*self.PROPERTIES, *self.NONHASHED_ATTRIBUTES]:
            setattr(self, name, None)

    def initialize_state(self, /, **experiment_arguments: Any) -> None:
        """Build the root's content (model, optimizer, data) from the experiment arguments.

        Override it in a subclass (or patch it, as the seed README does). Declared as
        ``def initialize_state(self, /, **arguments)``, it accepts any argument name, ``self``
        included.
        """

    # -- dagger's facts ------------------------------------------------------------------------

    @property
    def dagger(self) -> StateInfo:
        """dagger's facts about this state: id, status, record, results, depth, tree links."""
        return _info(self)

    parent_sha = _reads_info("parent_sha", "parent_id", "The parent state's id (None for a root).")
    experiment_object = _reads_info(
        "experiment_object", "experiment", "The Experiment this state belongs to (or None)."
    )
    tags = _reads_info("tags", "tags", "The state's tags (labels; set them with exp.tag()).")
    recipe = _reads_info(
        "recipe", "recipe", "The recipe that produced the state, as recorded (None for a root)."
    )
    root_state = _reads_info("root_state", "root", "Whether the state is a root.")
    slim_loaded = _reads_info(
        "slim_loaded", "slim", "Whether only dagger's facts are loaded (no content)."
    )
    from_cache = _reads_info(
        "from_cache", "from_cache", "Whether the content was loaded from the store."
    )

    def sha(self) -> str | None:
        """The state's id: a hash of how it was produced (None before it is part of a tree)."""
        return _info(self).id

    # -- identity as a root ------------------------------------------------------------------

    @classmethod
    def identity_arguments(cls, experiment_arguments: Mapping[str, Any]) -> dict[str, Any]:
        """The experiment arguments that make up the root's identity: all but the non-hashed."""
        excluded = set(cls.NONHASHED_ATTRIBUTES)
        return {k: v for k, v in experiment_arguments.items() if k not in excluded}

    @classmethod
    def check_arguments(cls, experiment_arguments: Mapping[str, Any]) -> None:
        """Raise MissingPropertyError if a PROPERTIES value is missing."""
        missing = [name for name in cls.PROPERTIES if name not in experiment_arguments]
        if missing:
            given = ", ".join(sorted(experiment_arguments)) or "none"
            raise MissingPropertyError(
                f"{cls.__name__}.PROPERTIES lists {', '.join(map(repr, missing))}, but "
                f"spawn_new_tree() was not given {'it' if len(missing) == 1 else 'them'} "
                f"(given: {given}). Pass "
                + ", ".join(f"{name}=..." for name in missing)
                + " to spawn_new_tree().",
                missing=missing,
            )

    @classmethod
    def check_initialize_signature(cls, experiment_arguments: Mapping[str, Any]) -> None:
        """Raise ExperimentDefinitionError if ``initialize_state`` cannot take these arguments
        (checked where the root is defined, not when it runs)."""
        raw = inspect.getattr_static(cls, "initialize_state")
        lead: tuple[Any, ...]
        if isinstance(raw, staticmethod):
            function, lead = raw.__func__, ()
        elif isinstance(raw, classmethod):
            function, lead = raw.__func__, (cls,)
        elif isinstance(raw, types.MethodType):  # the seed's MethodType patch gets the state
            function, lead = raw.__func__, (None,)
        elif isinstance(raw, types.FunctionType):
            function, lead = raw, (None,)
        else:
            return
        try:
            signature = inspect.signature(function)
        except (TypeError, ValueError):
            return
        try:
            signature.bind(*lead, **experiment_arguments)
        except TypeError as error:
            hint = ""
            if "multiple values" in str(error):
                hint = (
                    " An argument has the name of one of initialize_state's own parameters: "
                    "declare it as `def initialize_state(self, /, **arguments)` so that every "
                    "name reaches it, or rename the argument."
                )
            raise ExperimentDefinitionError(
                f"{cls.__name__}.initialize_state cannot be called with the arguments given "
                f"to spawn_new_tree() ({error}).{hint}",
                arguments=sorted(experiment_arguments),
            ) from None

    @classmethod
    def root_sha(cls, experiment_arguments: Mapping[str, Any]) -> str:
        """The id of the root spawned from these arguments.

        Raises:
            HashingError: An identity argument cannot be hashed; the message names it.
        """
        return root_id(cls, ExperimentState, cls.identity_arguments(experiment_arguments))

    # -- tree links ------------------------------------------------------------------------------

    @property
    def root(self) -> ExperimentState | None:
        """The root state of this state's experiment, fully loaded (a fresh copy each time)."""
        info = _info(self)
        if info.experiment is None:
            return None
        # While a recipe runs, the state already has its own id but no record yet.
        start = info.parent_id if info.id and info.parent_id else info.id
        loaded: ExperimentState | None = info.experiment.load_root(start)
        return loaded

    def explain(self) -> Explanation:
        """What this stored state's id was made of (``state.dagger.explain()``; see there).

        A default, not a reserved name: a state class that defines its own ``explain`` (or
        sets the attribute) keeps it, and ``state.dagger.explain()`` still answers.

        Raises:
            StateNotFoundError: The state is not stored (explain its promise instead).
        """
        return _info(self).explain()

    def to_promise(self) -> Any:
        """A promise for this stored state, to grow the tree from it and run again.

        Raises:
            ExperimentDefinitionError: The state belongs to no experiment.
        """
        experiment = _info(self).experiment
        if experiment is None:
            raise ExperimentDefinitionError(
                "This state belongs to no experiment; restore it with "
                "dagger.Experiment.restore(directory) first."
            )
        return experiment.promise_of(self)

    # -- the original dagger's file-level names --------------------------------------------------

    @property
    def directory(self) -> Any:
        """The experiment's folder (an absolute Path; the working directory when the state
        belongs to no experiment or to one kept in memory), as in the original dagger.

        A state may set its own ``directory`` attribute (a data folder, say): that value is
        then the state's, stored and loaded with it.
        """
        if "directory" in self.__dict__:
            return self.__dict__["directory"]
        experiment = _info(self).experiment
        found = getattr(experiment, "directory", None)
        return Path(found).absolute() if found is not None else Path(".").absolute()

    @directory.setter
    def directory(self, value: Any) -> None:
        self.__dict__["directory"] = value

    @directory.deleter
    def directory(self) -> None:
        if self.__dict__.pop("directory", _NOTHING) is _NOTHING:
            raise AttributeError("directory")

    @property
    def path(self) -> Any:
        """The original dagger's file of this state: there is none here (a state is a record,
        a payload and shared blobs, and the store decides their layout).

        A state may set its own ``path`` attribute (a data file, say): that value is then the
        state's, stored and loaded with it.

        Raises:
            RemovedAPIError: The state has no ``path`` of its own; the message says what to
                use instead.
        """
        if "path" in self.__dict__:
            return self.__dict__["path"]
        raise RemovedAPIError(
            f"A state is not one file here, so {type(self).__name__} {short_id(self.sha())} has "
            "no `path`: the store keeps its record, payload and blobs. Use state.directory for "
            "the experiment's folder, state.dagger.status to know whether it is stored, "
            "state.lazy_load() or exp.load_state(id) to load it, and `dagger verify DIR` to "
            "check its files.",
            name="path",
        )

    @path.setter
    def path(self, value: Any) -> None:
        self.__dict__["path"] = value

    @path.deleter
    def path(self) -> None:
        if self.__dict__.pop("path", _NOTHING) is _NOTHING:
            raise AttributeError("path")

    def save(self) -> None:
        """The original dagger's ``state.save()``: replaced by :meth:`dagger.Experiment.run`.

        Raises:
            RemovedAPIError: Always. A state's id says how it was produced, so saving a state
                changed by hand under that id would store a lie; ``run()`` stores each state
                its recipe computes.
        """
        raise RemovedAPIError(
            "state.save() is gone: dagger stores a state when run() computes it, under an id "
            "that says how it was produced, so a state changed by hand cannot be saved under "
            "that id. Express the change as a Recipe, apply it (Recipe(...)(state)) and call "
            "exp.run().",
            name="save",
        )

    def new_state(self, recipe: Any = None) -> None:
        """The original dagger's ``state.new_state(recipe)``: replaced by applying the recipe.

        Raises:
            RemovedAPIError: Always; the message says to apply the recipe and run().
        """
        raise RemovedAPIError(
            "state.new_state(recipe) is gone: define the child by applying the recipe to the "
            f"state ({type(recipe).__name__ if recipe is not None else 'Recipe'}(...)(state)), "
            "which returns its promise, and call exp.run() to compute it.",
            name="new_state",
        )

    # -- slim and full -------------------------------------------------------------------------

    def restore(self) -> bool:
        """Load the full state from the store into this object.

        Returns:
            True if the state is now fully loaded; False if its payload is missing or corrupt
            (one warning says which; the next run recomputes it).
        """
        info = _info(self)
        if not info.slim:
            return True
        if info.experiment is None or info.id is None:
            return False
        loaded = info.experiment.load_state(info.id)
        if loaded is None:
            return False
        stand_in = getattr(type(self), "__dagger_stand_in__", False)
        if type(loaded) is not type(self) and (stand_in or isinstance(loaded, type(self))):
            # Restored without its class (defined in a script or notebook, or its module
            # does not import here): the payload brought the class by value, so the state
            # gets its methods back.
            self.__class__ = type(loaded)
        content = {name: value for name, value in loaded.__dict__.items() if name != _INFO}
        self.__dict__.update(content)
        info.slim = False
        info.from_cache = True
        return True

    def deflate(self) -> bool:
        """Drop everything but dagger's facts, to free memory. Returns True."""
        for name in list(self.__dict__):
            if name != _INFO:
                del self.__dict__[name]
        _info(self).slim = True
        return True

    @contextlib.contextmanager
    def lazy_load(self) -> Iterator[ExperimentState]:
        """Fully load the state for the duration of the block, then deflate it again.

        Raises:
            StateUnavailableError: The state failed (it has no content), or its files are
                missing or damaged (the next run recomputes it).
        """
        info = _info(self)
        was_slim = info.slim
        if info.status is Status.FAILED:
            error = info.error
            raise StateUnavailableError(
                f"State {short_id(info.id)} failed "
                f"({error.type if error else 'Error'}: {error.message if error else ''}); it "
                "has no stored content. Fix the recipe and run again.",
                state_id=info.id,
            )
        if not self.restore():
            raise StateUnavailableError(
                f"State {short_id(info.id)} could not be loaded (see the warning above); run "
                "the experiment again to recompute it.",
                state_id=info.id,
            )
        try:
            yield self
        finally:
            if was_slim:
                self.deflate()

    # -- attributes and pickling ---------------------------------------------------------------

    def __setattr__(self, name: str, value: Any) -> None:
        if name in RESERVED:
            raise ReservedAttributeError(_reserved_message(type(self).__name__, name), name=name)
        object.__setattr__(self, name, value)

    def __delattr__(self, name: str) -> None:
        if name in RESERVED:
            raise ReservedAttributeError(_reserved_message(type(self).__name__, name), name=name)
        object.__delattr__(self, name)

    def __getstate__(self) -> dict[str, Any]:
        return {name: value for name, value in self.__dict__.items() if name != _INFO}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self.__dict__.pop(_INFO, None)
        for hook in HOOKS:
            self.__dict__.setdefault(hook, [])

    def __repr__(self) -> str:
        info = _info(self)
        slim = ", slim" if info.slim else ""
        return f"{type(self).__name__}(sha={info.id and info.id[:12]}, tags={info.tags}{slim})"

    def __hash__(self) -> int:
        return id(self)

    def __eq__(self, other: object) -> bool:
        return self is other


# Names user code may not set on a state: the seed's bookkeeping and dagger's own methods.
_ALTERNATIVES = {
    "tags": "Label states where they are defined, with `with exp.tag(...)`.",
    "recipe": "dagger records the recipe that made the state; read it as state.recipe.",
    "parent_sha": "dagger records the parent; read it as state.parent_sha.",
    "experiment_object": "dagger sets it when the state is computed or loaded.",
    "dagger": "It holds dagger's facts about the state; store your data under another name.",
}
RESERVED: frozenset[str] = frozenset(
    name
    for name in vars(ExperimentState)
    if not name.startswith("_")
    and name
    not in {
        "PROPERTIES",
        "NONHASHED_ATTRIBUTES",
        "VERSION",
        "TRANSIENT_ATTRIBUTES",
        "initialize_state",
        *HOOKS,
        # Defaults a state may override with its own value (a data folder, a file, its own
        # explain); state.dagger.explain() is the name that always answers.
        "directory",
        "path",
        "explain",
    }
)


def _reserved_message(class_name: str, name: str) -> str:
    alternative = _ALTERNATIVES.get(
        name, f"`{name}` is one of the ExperimentState's own methods and properties."
    )
    return (
        f"`{name}` is reserved on {class_name} (dagger manages it), so it cannot be set or "
        f"deleted. {alternative} Store your own value under another attribute name; every "
        f"other name is yours (reserved: {', '.join(sorted(RESERVED))})."
    )


def adopt(
    state: ExperimentState,
    *,
    experiment: Any,
    sha: str,
    parent_id: str | None,
    tags: Sequence[str],
    recipe: RecipeInfo | None,
    status: Status = Status.RUNNING,
) -> None:
    """Give a state being computed its place in the tree (used before and after its recipe)."""
    for hook in HOOKS:
        state.__dict__.setdefault(hook, [])
    info = _info(state)
    info.experiment = experiment
    info.id = sha
    info.parent_id = parent_id
    info.tags = list(tags)
    info.recipe = recipe
    info.root = parent_id is None and recipe is None
    info.slim = False
    info.from_cache = False
    info.status = status
    info.parent = None
    info.children = []


def apply_record(
    state: ExperimentState,
    *,
    experiment: Any,
    record: StateRecord,
    notes: Notes,
    results: Mapping[str, Any],
    slim: bool,
) -> None:
    """Fill a state's facts from its stored record and notes."""
    info = _info(state)
    info.experiment = experiment
    info.id = record.id
    info.parent_id = record.parent
    info.tags = list(record.tags) + [tag for tag in notes.tags if tag not in record.tags]
    info.recipe = record.recipe
    info.root = record.root
    info.status = record.status
    info.properties = dict(record.properties)
    info.record = record
    info.notes = notes
    info.results = results
    info.slim = slim
    info.from_cache = not slim


def attach_info(state: ExperimentState, info: StateInfo) -> None:
    """Give a state built without ``__init__`` (a slim state) its facts object."""
    state.__dict__[_INFO] = info


class SlimSource(Protocol):
    """What a slim state of a restored tree reads its facts from (the tree provides it).

    Attributes:
        table: The store's snapshot the tree was built from.
        owner: What the states call back to load themselves (the Experiment).
    """

    table: SlimTable
    owner: Any

    def state(self, row: int) -> ExperimentState: ...

    def depth(self, row: int) -> int: ...

    def child_rows(self, row: int) -> list[int]: ...


def _lazy(name: str, compute: Any) -> property:
    """A StateInfo attribute that a SlimInfo computes from its table on first access and keeps
    (in the slot of the same name), and that can be set like any other."""
    slot = StateInfo.__dict__[name]

    def get(self: SlimInfo) -> Any:
        try:
            return slot.__get__(self, StateInfo)
        except AttributeError:
            value = compute(self)
            slot.__set__(self, value)
            return value

    def set_(self: SlimInfo, value: Any) -> None:
        slot.__set__(self, value)

    return property(get, set_, doc=f"The state's `{name}` (from the store's table).")


def _results(info: SlimInfo) -> Results:
    table, row = info.source.table, info.row
    summaries = table.results[row]
    if not summaries:
        return Results({}, table.loader())
    return Results(
        summary_entries(summaries),
        table.loader(),
        resolve=lambda: table.notes(row).results,
        on_damage=table.damage_noter(row),
    )


def _parent(info: SlimInfo) -> ExperimentState | None:
    parent = info.source.table.parent[info.row]
    return info.source.state(parent) if parent >= 0 else None


class SlimInfo(StateInfo):
    """dagger's facts about a state of a restored tree, read from the store's table when first
    asked for: a tree of 100,000 states builds none of them until they are used.

    Attributes:
        source: The tree (its table, its states).
        row: The state's row in the table.
    """

    __slots__ = ("row", "source")

    def __init__(self, source: SlimSource, row: int) -> None:  # no super(): slots stay unset
        # Cheap facts are set now (read at C speed afterwards); the others on first access.
        table = source.table
        self.source = source
        self.row = row
        self.slim = True
        self.from_cache = False
        self.experiment = source.owner
        self.id = table.ids[row]
        self.parent_id = table.parent_id[row]
        self.status = table.status[row]
        self.root = table.root[row]

    record = _lazy("record", lambda info: info.source.table.record(info.row))
    notes = _lazy("notes", lambda info: info.source.table.notes(info.row))
    results = _lazy("results", _results)
    properties = _lazy("properties", lambda info: dict(info.source.table.properties[info.row]))
    depth = _lazy("depth", lambda info: info.source.depth(info.row))
    parent = _lazy("parent", _parent)
    children = _lazy(
        "children", lambda info: [info.source.state(r) for r in info.source.child_rows(info.row)]
    )
    tags = _lazy("tags", lambda info: list(info.source.table.tags[info.row]))
    recipe = _lazy("recipe", lambda info: info.source.table.recipe_info(info.row))

    @property
    def seconds(self) -> float | None:
        """Wall time of the recipe that made it, in seconds (None if not recorded)."""
        return self.source.table.seconds[self.row]

    @property
    def created(self) -> str | None:
        """When it was computed (ISO 8601, UTC), or None."""
        return self.source.table.created[self.row] or None

    @property
    def environment(self) -> dict[str, Any] | None:
        """Where it was computed, read from the table (no record is read), or None."""
        found = self.source.table.environment[self.row]
        return dict(found) if found is not None else None
