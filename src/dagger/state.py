"""ExperimentState: one point of an experiment, its identity as a root, slim and full forms.

A state is an ordinary object: whatever a recipe sets on it (a model, an optimizer, metrics) is
stored with it. Besides that it carries bookkeeping that dagger fills in and keeps in the slim
record, not in the pickled payload: its id (:meth:`sha`), ``parent_sha``, ``tags``, ``recipe``,
``status``, ``results``; and, in a restored tree, ``parent`` and ``children``.

A *slim* state (``slim_loaded`` is True) holds only the bookkeeping; :meth:`restore` loads the
rest from the store, :meth:`deflate` drops it again, :meth:`lazy_load` does both around a block.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator, Mapping
from typing import TYPE_CHECKING, Any, ClassVar

from .errors import MissingPropertyError
from .fingerprint import class_fingerprint, code_digest
from .hashing import digest, encode

if TYPE_CHECKING:
    from .experiment import Experiment
    from .promise import ExperimentStatePromise

__all__ = ["BOOKKEEPING", "ExperimentState", "class_path", "import_class"]

logger = logging.getLogger("dagger")

# Attributes dagger manages. They are rebuilt from the record on load and never pickled.
BOOKKEEPING = frozenset(
    {
        "_sha",
        "parent_sha",
        "tags",
        "slim_loaded",
        "from_cache",
        "root_state",
        "recipe",
        "status",
        "results",
        "properties",
        "record",
        "experiment_object",
        "parent",
        "children",
        "depth",
    }
)


class ExperimentState:
    """A state of the experiment after the recipe that produced it finished.

    Subclass it to describe your experiment:

    Attributes:
        PROPERTIES: Names of ``spawn_new_tree`` arguments that are set as attributes on the
            root and inherited by every state; they are part of the root's identity.
        NONHASHED_ATTRIBUTES: Names of arguments (or attributes) that are stored and
            inherited but are not part of the identity (a data path, a device, a loader).
            Every other ``spawn_new_tree`` argument is part of the identity too.
        VERSION: Pins the identity of the root's code to this string instead of a fingerprint
            of ``initialize_state``.
    """

    PROPERTIES: ClassVar[list[str]] = []
    NONHASHED_ATTRIBUTES: ClassVar[list[str]] = []
    VERSION: ClassVar[str | None] = None

    _sha: str | None
    parent_sha: str | None
    experiment_object: Experiment | None
    tags: list[str]
    slim_loaded: bool
    from_cache: bool
    root_state: bool
    recipe: Any
    status: str
    results: Mapping[str, Any]
    properties: dict[str, Any]
    record: dict[str, Any] | None
    parent: ExperimentState | None
    children: set[ExperimentState]

    def __init__(
        self, parent_sha: str | None = None, experiment_object: Experiment | None = None
    ) -> None:
        self._reset_bookkeeping()
        self.parent_sha = parent_sha
        self.experiment_object = experiment_object
        self.save_pre_hooks: list[Any] = []
        self.save_post_hooks: list[Any] = []
        self.load_post_hooks: list[Any] = []
        for name in [*self.PROPERTIES, *self.NONHASHED_ATTRIBUTES]:
            setattr(self, name, None)

    def initialize_state(self, **experiment_arguments: Any) -> None:
        """Build the root's content (model, optimizer, data) from the experiment arguments.

        Override it in a subclass (or patch it, as the seed README does).
        """

    # -- identity ------------------------------------------------------------------------------

    def sha(self) -> str | None:
        """The state's id: a hash of how it was produced (None before it is part of a tree)."""
        return self._sha

    @classmethod
    def identity_arguments(cls, experiment_arguments: dict[str, Any]) -> dict[str, Any]:
        """The experiment arguments that make up the root's identity: all but the non-hashed."""
        excluded = set(cls.NONHASHED_ATTRIBUTES)
        return {k: v for k, v in experiment_arguments.items() if k not in excluded}

    @classmethod
    def check_arguments(cls, experiment_arguments: dict[str, Any]) -> None:
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
    def code_identity(cls) -> str:
        """VERSION if set, else the fingerprint of the class's code below ExperimentState
        (``initialize_state`` wherever it comes from, and what it calls)."""
        if cls.VERSION is not None:
            return f"version:{cls.VERSION}"
        return "code:" + class_fingerprint(cls, ExperimentState)

    @classmethod
    def root_sha(cls, experiment_arguments: dict[str, Any]) -> str:
        """The id of the root spawned from these arguments.

        Raises:
            HashingError: An identity argument cannot be hashed; the message names it.
        """
        encoded = {
            name: encode(
                value,
                what=f"spawn_new_tree() argument `{name}` (of {cls.__name__})",
                fix=(
                    f"List `{name}` in {cls.__name__}.NONHASHED_ATTRIBUTES (stored, not part "
                    "of the identity), pass a plain value that describes it instead, or "
                    "register an encoder with `dagger.hashing.register`."
                ),
                code=code_digest,
            )
            for name, value in cls.identity_arguments(experiment_arguments).items()
        }
        return digest("root", cls.__qualname__, cls.code_identity(), encoded)

    # -- tree links ------------------------------------------------------------------------------

    @property
    def root(self) -> ExperimentState | None:
        """The root state of this state's experiment, fully loaded (a fresh copy each time)."""
        if self.experiment_object is None:
            return None
        # While a recipe runs, the state already has its own id but no record yet.
        start = self.parent_sha if self._sha and self.parent_sha else self._sha
        return self.experiment_object.load_root(start)

    def to_promise(self) -> ExperimentStatePromise:
        """A promise for this stored state, to grow the tree from it and run again."""
        if self.experiment_object is None:
            raise ValueError(
                "This state belongs to no experiment; restore it with "
                "dagger.Experiment.restore(directory) first."
            )
        return self.experiment_object.promise_of(self)

    # -- slim and full -------------------------------------------------------------------------

    def restore(self) -> bool:
        """Load the full state from the store into this object.

        Returns:
            True if the state is now fully loaded; False if its payload is missing or corrupt
            (one warning says which; the next run recomputes it).
        """
        if not self.slim_loaded:
            return True
        if self.experiment_object is None or self._sha is None:
            return False
        loaded = self.experiment_object.load_state(self._sha)
        if loaded is None:
            return False
        keep = {name: value for name, value in self.__dict__.items() if name in BOOKKEEPING}
        if type(loaded) is not type(self) and isinstance(loaded, type(self)):
            # Restored without its class (defined in a script or notebook): the payload
            # brought the class by value, so the state gets its methods back.
            self.__class__ = type(loaded)
        self.__dict__.update(loaded.__dict__)
        self.__dict__.update(keep)
        self.slim_loaded = False
        self.from_cache = True
        return True

    def deflate(self) -> bool:
        """Drop everything but the bookkeeping, to free memory. Returns True."""
        for name in list(self.__dict__):
            if name not in BOOKKEEPING:
                delattr(self, name)
        self.slim_loaded = True
        return True

    @contextlib.contextmanager
    def lazy_load(self) -> Iterator[ExperimentState]:
        """Fully load the state for the duration of the block, then deflate it again."""
        was_slim = self.slim_loaded
        if self.status == "failed":
            error = (self.record or {}).get("error", {})
            raise LookupError(
                f"State {self._sha and self._sha[:12]} failed ({error.get('type')}: "
                f"{error.get('message')}); it has no stored content. Fix the recipe and run "
                "again."
            )
        if not self.restore():
            raise LookupError(
                f"State {self._sha and self._sha[:12]} could not be loaded (see the warning "
                "above); run the experiment again to recompute it."
            )
        try:
            yield self
        finally:
            if was_slim:
                self.deflate()

    # -- pickling --------------------------------------------------------------------------------

    def __getstate__(self) -> dict[str, Any]:
        return {name: value for name, value in self.__dict__.items() if name not in BOOKKEEPING}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self._reset_bookkeeping()
        self.__dict__.update(state)

    def _adopt(
        self,
        experiment: Experiment,
        sha: str,
        parent_sha: str | None,
        tags: list[str],
        recipe: Any,
    ) -> None:
        """Give a state being computed its place in the tree (before and after the recipe)."""
        self.__dict__.setdefault("save_pre_hooks", [])
        self.__dict__.setdefault("save_post_hooks", [])
        self.__dict__.setdefault("load_post_hooks", [])
        self.experiment_object = experiment
        self._sha = sha
        self.parent_sha = parent_sha
        self.tags = list(tags)
        self.recipe = recipe
        self.root_state = parent_sha is None and recipe is None
        self.slim_loaded = False
        self.from_cache = False
        self.status = "running"
        self.results = {}
        self.parent = None
        self.children = set()

    def _apply_record(
        self,
        experiment: Experiment | None,
        record: dict[str, Any],
        notes: dict[str, Any],
        results: Any,
    ) -> None:
        """Fill the bookkeeping from a stored record and its annotations."""
        from .recipe import RecipeInfo

        self.experiment_object = experiment
        self._sha = record["id"]
        self.parent_sha = record.get("parent")
        tags = list(record.get("tags", []))
        tags += [tag for tag in notes.get("tags", []) if tag not in tags]
        self.tags = tags
        self.recipe = RecipeInfo.from_record(record.get("recipe"))
        self.root_state = bool(record.get("root"))
        self.status = record.get("status", "done")
        self.properties = dict(record.get("properties", {}))
        self.record = record
        self.results = results

    def _reset_bookkeeping(self) -> None:
        self._sha = None
        self.parent_sha = None
        self.experiment_object = None
        self.tags = []
        self.slim_loaded = False
        self.from_cache = False
        self.root_state = False
        self.recipe = None
        self.status = "pending"
        self.results = {}
        self.properties = {}
        self.record = None
        self.parent = None
        self.children = set()

    def __repr__(self) -> str:
        full = self.__dict__.get("_sha")
        sha = full[:12] if full else None
        slim = ", slim" if self.__dict__.get("slim_loaded") else ""
        return f"{type(self).__name__}(sha={sha}, tags={self.__dict__.get('tags')}{slim})"

    def __hash__(self) -> int:
        return id(self)

    def __eq__(self, other: object) -> bool:
        return self is other


def class_path(cls: type) -> str:
    """``module:qualname`` of a class, the form experiment.json stores."""
    return f"{cls.__module__}:{cls.__qualname__}"


def import_class(path: str) -> type:
    """Import a class from its :func:`class_path`."""
    import importlib

    module_name, _, qualname = path.partition(":")
    target: Any = importlib.import_module(module_name)
    for part in qualname.split("."):
        target = getattr(target, part)
    if not isinstance(target, type):
        raise TypeError(f"{path} is not a class")
    return target
