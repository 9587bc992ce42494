"""Experiment: the facade users hold. Defines the tree, runs it, gets states, restores it.

It delegates: ids to :mod:`dagger.identity` (through promises), planning to
:mod:`dagger.plan`, the walk to :mod:`dagger.runner`, executors to :mod:`dagger.executors`,
building states to :mod:`dagger.loading`, storage to a :class:`~dagger.store.Store`, analysis
to :mod:`dagger.tree`. Constructing an Experiment touches no disk.
"""

from __future__ import annotations

import contextlib
import functools
import importlib.metadata
import logging
import os
import platform
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from . import loading, plan
from ._names import class_path, import_class
from ._version import __version__
from .errors import ExperimentDefinitionError, StateClassMismatchError
from .executors import dispatch
from .promise import ExperimentStatePromise
from .recipe import Function, Recipe
from .record import FORMAT_VERSION, ExperimentMeta, jsonable, now
from .runner import Runner, RunReport
from .state import ExperimentState
from .store import DirectoryStore, Store
from .store.blobs import DEFAULT_THRESHOLD
from .tree import StaticExperimentTree

__all__ = ["Experiment"]

logger = logging.getLogger("dagger")


class Experiment:
    """A tree of experiment states stored in one directory.

    Args:
        directory: Where states are stored (created on the first run, with parents), or a
            :class:`~dagger.store.Store` (for example ``dagger.store.MemoryStore()``).
        state_class: The ExperimentState subclass of every state of this experiment.
        durability: ``"safe"`` (default): every write is fsynced. ``"fast"``: writes stay
            atomic but are not fsynced, for scratch experiments.
        blob_threshold: Tensor storages, arrays and bytes of at least this many bytes
            (default 64 KiB) are stored once as content-addressed blobs, shared by every state
            that holds the same bytes.

    Attributes:
        tags: The tags active now (see :meth:`tag`).
        root: The root promise once :meth:`spawn_new_tree` was called; after
            :meth:`restore`, the root state of the stored tree.
        graph: The :class:`~dagger.tree.StaticExperimentTree` after :meth:`restore`.

    Raises:
        ExperimentDefinitionError: ``state_class`` is not an ExperimentState subclass, or
            ``durability`` is not ``"safe"`` or ``"fast"``.
    """

    def __init__(
        self,
        directory: str | os.PathLike[str] | Store,
        state_class: type[ExperimentState] = ExperimentState,
        *,
        durability: str = "safe",
        blob_threshold: int = DEFAULT_THRESHOLD,
    ) -> None:
        if not (isinstance(state_class, type) and issubclass(state_class, ExperimentState)):
            raise ExperimentDefinitionError(
                f"state_class must be dagger.ExperimentState or a subclass of it; got "
                f"{state_class!r}.",
                value_type=type(state_class).__name__,
            )
        self.store: Store
        if isinstance(directory, str | os.PathLike):
            self.directory: Path | None = Path(directory).absolute()
            self.store = DirectoryStore(
                self.directory, durability=durability, blob_threshold=blob_threshold
            )
        else:
            self.store = directory
            self.directory = getattr(directory, "directory", None)
        self.state_class = state_class
        self.stand_in = False
        self.tags: list[str] = []
        self.root: Any = None
        self.experiment_arguments: dict[str, Any] | None = None
        self.graph: StaticExperimentTree | None = None
        self._roots: list[ExperimentStatePromise] = []
        self._stored_promises: dict[str, ExperimentStatePromise] = {}

    def __repr__(self) -> str:
        return f"Experiment({self.store.location!r}, state_class={self.state_class.__name__})"

    # -- building the tree ---------------------------------------------------------------------

    @contextlib.contextmanager
    def tag(self, *tags: str | list[str]) -> Iterator[None]:
        """Label every state defined inside the block with ``tags`` (nests).

        Tags are labels, not identity: the same recipe on the same parent under two tag
        contexts is one state that carries both.

        Raises:
            ExperimentDefinitionError: A tag is not a string.
        """
        flat: list[str] = []
        for tag in tags:
            flat.extend(tag if isinstance(tag, list | tuple) else [tag])
        for tag in flat:
            if not isinstance(tag, str):
                raise ExperimentDefinitionError(
                    f"A tag must be a string; got {tag!r} (a {type(tag).__name__}). Use "
                    f"exp.tag({str(tag)!r}) for example.",
                    value=repr(tag),
                )
        saved = self.tags[:]
        self.tags.extend(tag for tag in flat if tag not in self.tags)
        try:
            yield
        finally:
            self.tags = saved

    def spawn_new_tree(self, /, **experiment_arguments: Any) -> ExperimentStatePromise:
        """Define the root state (nothing runs yet).

        Args:
            **experiment_arguments: Passed to ``initialize_state``. Those named in the state
                class's PROPERTIES are set as attributes and inherited by every state. All but
                those listed in NONHASHED_ATTRIBUTES make up the root's identity.

        Raises:
            MissingPropertyError: A PROPERTIES value is missing.
            ExperimentDefinitionError: This Experiment already has a root, or the state
                class's ``initialize_state`` cannot take these arguments.
            HashingError: An identity argument cannot be hashed.
        """
        if any(promise.is_root for promise in self._roots):
            raise ExperimentDefinitionError(
                "This Experiment already has a root (spawn_new_tree was called before). One "
                "Experiment holds one tree: grow it from the promise spawn_new_tree returned, "
                "or create another Experiment with another directory for a second tree.",
            )
        self.state_class.check_arguments(experiment_arguments)
        self.state_class.check_initialize_signature(experiment_arguments)
        promise = ExperimentStatePromise(
            self, None, None, self.tags, arguments=dict(experiment_arguments)
        )
        promise.sha()  # an unhashable argument is reported here, where it was passed
        self.root = promise
        self.experiment_arguments = dict(experiment_arguments)
        self._roots.append(promise)
        return promise

    def add_child(self, parent: ExperimentStatePromise, recipe: Recipe) -> ExperimentStatePromise:
        """Define the child of ``parent`` produced by ``recipe`` (what ``recipe(parent)`` does).

        The recipe is copied as it is now: changing it afterwards changes neither this
        child's id nor what runs.

        Raises:
            ExperimentDefinitionError: ``parent`` belongs to another Experiment, or ``recipe``
                is not a Recipe.
            HashingError: A property of the recipe cannot be hashed.
        """
        self._check_own(parent, f"{type(recipe).__name__}(...)")
        if not isinstance(recipe, Recipe):
            raise ExperimentDefinitionError(
                f"Only dagger.Recipe instances define children; got a {type(recipe).__name__}.",
                value_type=type(recipe).__name__,
            )
        child = ExperimentStatePromise(self, parent, recipe.snapshot(), self.tags)
        child.sha()  # a property that is missing or cannot be hashed is reported here
        parent.children.append(child)
        return child

    def add_function(self, promise: ExperimentStatePromise, function: Function) -> None:
        """Run ``function`` on ``promise``'s state during the next run and record its result."""
        self._check_own(promise, repr(function))
        promise.functions.append(function)

    def _check_own(self, promise: ExperimentStatePromise, what: str) -> None:
        if promise.experiment is not self:
            other = getattr(promise.experiment, "store", None)
            raise ExperimentDefinitionError(
                f"{what} was applied to a promise of another Experiment "
                f"({getattr(other, 'location', '?')}); this one is {self.store.location}. "
                "Grow each tree from its own Experiment's promises.",
            )

    def promise_of(self, state: ExperimentState) -> ExperimentStatePromise:
        """A promise standing for a stored state, to grow the tree from it.

        Raises:
            ExperimentDefinitionError: The state was never stored.
        """
        sha = state.sha()
        if sha is None:
            raise ExperimentDefinitionError("This state has no id yet; it was never stored.")
        promise = self._stored_promises.get(sha)
        if promise is None:
            promise = ExperimentStatePromise(self, None, None, (), known_sha=sha)
            self._stored_promises[sha] = promise
            self._roots.append(promise)
        return promise

    # -- running -------------------------------------------------------------------------------

    def run(
        self,
        *,
        keep_going: bool = True,
        progress: bool | None = None,
        executor: Any = None,
    ) -> RunReport:
        """Compute and store every state of the tree that is not stored yet, depth-first.

        Args:
            keep_going: After a failure, run the rest of the tree (default); False stops at
                the first failure.
            progress: Show a progress bar (default: when stderr is a terminal).
            executor: Run independent branches on any ``concurrent.futures``-style executor
                (``ProcessPoolExecutor``, a ``dask.distributed.Client``, a ``submitit``
                executor). Workers read parents from and write children to this
                experiment's directory, which they must be able to reach. Default: compute
                everything in this process.

        Returns:
            A RunReport: computed, cached, failed, skipped, seconds.

        Raises:
            RunError: Some recipes or functions failed; everything else was stored. Its
                ``__cause__`` is the first failure's exception (in this process).
        """
        if not self._roots:
            raise ExperimentDefinitionError(
                "Nothing to run: call spawn_new_tree() first (or restore an experiment and "
                "grow it from state.to_promise())."
            )
        roots = plan.build(self._roots)
        self._prepare_store()
        failed_before = plan.survey(roots, self.store)
        runner = self._runner(keep_going, progress, failed_before)
        strategy = None if executor is None else functools.partial(dispatch, executor=executor)
        return runner.run(roots, strategy)

    def _runner(self, keep_going: bool, progress: bool | None, failed_before: set[str]) -> Runner:
        return Runner(
            self.store,
            self.state_class,
            self,
            keep_going=keep_going,
            progress=progress,
            failed_before=failed_before,
        )

    def get(self, promise: ExperimentStatePromise) -> ExperimentState:
        """Compute (or load) one state and what lies on its path; return it fully loaded.

        Raises:
            RunError: The state (or one on its path) failed.
        """
        self._check_own(promise, "get()")
        path: list[ExperimentStatePromise] = []
        cursor: ExperimentStatePromise | None = promise
        while cursor is not None:
            path.append(cursor)
            cursor = cursor.parent
        roots = plan.build([path[-1]], path={id(p) for p in path})
        target = roots[0]
        while target.children:
            target = target.children[0]
        target.keep = True
        self._prepare_store()
        failed_before = plan.survey(roots, self.store)
        runner = self._runner(False, False, failed_before)
        runner.run(roots)
        return runner.kept[target.sha]

    def _prepare_store(self) -> None:
        """Check the store against this experiment; write experiment.json when it is new.

        A rerun of a known tree reads experiment.json once and writes nothing.
        """
        root = self.root if isinstance(self.root, ExperimentStatePromise) else None
        roots = [root.sha()] if root is not None else []
        if self.store.exists():
            stored = self.store.read_meta()
            self._check_state_class(stored)
            if all(sha in stored.roots for sha in roots):
                return
        self.store.prepare(
            ExperimentMeta(
                format=FORMAT_VERSION,
                roots=tuple(roots),
                state_class=class_path(self.state_class),
                experiment_arguments=jsonable(self.experiment_arguments or {}),
                dagger_version=__version__,
                python_version=platform.python_version(),
                torch_version=_torch_version(),
                created=now(),
            )
        )

    def _check_state_class(self, stored: ExperimentMeta) -> None:
        if self.stand_in:
            return
        stored_path = stored.state_class
        if stored_path.partition(":")[2] != self.state_class.__qualname__:
            raise StateClassMismatchError(
                f"`{self.store.location}` holds states of class `{stored_path}`, but this "
                f"Experiment was given `{class_path(self.state_class)}`. Pass state_class="
                f"{stored_path.partition(':')[2]}, or use another directory for this one.",
                stored=stored_path,
                given=class_path(self.state_class),
            )

    # -- loading -------------------------------------------------------------------------------

    def load_state(self, sha: str, map_location: Any = None) -> ExperimentState | None:
        """Load a stored state fully (None, with one warning, if it is missing or corrupt).

        Args:
            sha: The state's id.
            map_location: Where to put tensors, as for ``torch.load``: a device, a dict
                from saved to wanted location, or a function. Default: where they were
                saved if that device exists here, else the CPU.
        """
        return loading.load_state(
            self.store, sha, self.state_class, owner=self, map_location=map_location
        )

    def load_root(self, start: str | None = None) -> ExperimentState | None:
        """The root of the tree holding state ``start``, fully loaded (a fresh object)."""
        if start is None:
            if self.root is None:
                return None
            start = self.root.sha()
        return loading.load_root(self.store, start, self.state_class, owner=self)

    # -- restoring -----------------------------------------------------------------------------

    @classmethod
    def restore(
        cls,
        directory: str | os.PathLike[str] | Store,
        state_class: type[ExperimentState] | None = None,
        *,
        durability: str = "safe",
        blob_threshold: int = DEFAULT_THRESHOLD,
        import_class: bool = True,
    ) -> Experiment:
        """Reload a stored experiment in slim form: records only, no payload is read.

        Args:
            directory: The experiment's folder (or its store).
            state_class: The state class; imported from experiment.json when not given. If
                it cannot be imported (it was defined in a script or notebook, or its module
                fails to import here), a stand-in is used for the slim states, with one
                warning; a full load brings the real class back from the payload.
            import_class: False leaves the state class's module alone (not imported: no code
                of it runs) and uses the stand-in, quietly: for tools that read records only
                (``dagger show``, ``ls``, ``draw``).

        Returns:
            An Experiment whose ``graph`` is the StaticExperimentTree of the stored states.
            It can be grown further: ``recipe(state.to_promise())`` then ``run()``.

        Raises:
            NotAnExperimentError: The folder holds no experiment.
            FormatVersionError: It was written by a newer dagger.
            StateClassMismatchError: ``state_class`` differs from the stored class.
        """
        experiment = cls(
            directory,
            state_class or ExperimentState,
            durability=durability,
            blob_threshold=blob_threshold,
        )
        meta = experiment.store.read_meta()
        if state_class is None:
            experiment.state_class, experiment.stand_in = _stored_class(
                meta.state_class, import_class
            )
        experiment._check_state_class(meta)
        experiment.experiment_arguments = meta.experiment_arguments
        experiment.graph = StaticExperimentTree.from_store(
            experiment, experiment.state_class, experiment.store
        )
        if len(experiment.graph.roots) == 1:
            experiment.root = experiment.graph.roots[0]
        return experiment


def _stored_class(stored_path: str, importing: bool = True) -> tuple[type[ExperimentState], bool]:
    """The stored state class, or a stand-in named like it if it cannot (or must not) be
    imported here."""
    reason = ""
    if importing:
        try:
            found = import_class(stored_path)
            if issubclass(found, ExperimentState):
                return found, False
            reason = "it is not an ExperimentState subclass"
        except (Exception, SystemExit) as error:  # whatever the user's module raises at import
            reason = f"{type(error).__name__}: {error}"
    module, _, qualname = stored_path.partition(":")
    if importing and module != "__main__":
        logger.warning(
            "The state class %s cannot be imported here (%s); slim states work, and a full "
            "load brings the class back from the stored state.",
            stored_path,
            reason,
        )
    stand_in = type(
        qualname.rsplit(".", 1)[-1] or "ExperimentState",
        (ExperimentState,),
        {"__module__": module or __name__, "__qualname__": qualname or "ExperimentState"},
    )
    return stand_in, True


def _torch_version() -> str | None:
    torch = sys.modules.get("torch")
    if torch is not None:
        return str(torch.__version__)
    try:  # without importing torch, which takes seconds
        return importlib.metadata.version("torch")
    except importlib.metadata.PackageNotFoundError:
        return None
