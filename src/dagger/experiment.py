"""Experiment: builds the tree of promises, holds tags, and is the entry point of run/restore.

It delegates: identities to :mod:`dagger.state` and :mod:`dagger.recipe`, execution to
:mod:`dagger.runner`, storage to :mod:`dagger.store`, analysis to :mod:`dagger.tree`.
Constructing an Experiment touches no disk.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import importlib.metadata
import logging
import os
import platform
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ._compat import call_method
from ._version import __version__
from .errors import (
    ExperimentDefinitionError,
    StateClassMismatchError,
)
from .promise import ExperimentStatePromise
from .recipe import Function, Recipe
from .runner import Runner, RunReport
from .state import ExperimentState, class_path, import_class
from .store import CorruptStateError, DirectoryStore
from .store.blobs import DEFAULT_THRESHOLD
from .store.records import FORMAT_VERSION, jsonable

if TYPE_CHECKING:
    from .tree import StaticExperimentTree

__all__ = ["Experiment"]

logger = logging.getLogger("dagger")


class Experiment:
    """A tree of experiment states stored in one directory.

    Args:
        directory: Where states are stored (created on the first run, with parents).
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
    """

    def __init__(
        self,
        directory: str | os.PathLike[str],
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
        self.directory = Path(directory).absolute()
        self.state_class = state_class
        self.store = DirectoryStore(
            self.directory, durability=durability, blob_threshold=blob_threshold
        )
        self.tags: list[str] = []
        self.root: Any = None
        self.experiment_arguments: dict[str, Any] | None = None
        self.graph: StaticExperimentTree | None = None
        self._roots: list[ExperimentStatePromise] = []
        self._stored_promises: dict[str, ExperimentStatePromise] = {}

    def __repr__(self) -> str:
        return f"Experiment({str(self.directory)!r}, state_class={self.state_class.__name__})"

    # -- building the tree ---------------------------------------------------------------------

    @contextlib.contextmanager
    def tag(self, *tags: str | list[str]) -> Iterator[None]:
        """Label every state defined inside the block with ``tags`` (nests).

        Tags are labels, not identity: the same recipe on the same parent under two tag
        contexts is one state that carries both.
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

    def spawn_new_tree(self, **experiment_arguments: Any) -> ExperimentStatePromise:
        """Define the root state (nothing runs yet).

        Args:
            **experiment_arguments: Passed to ``initialize_state``. Those named in the state
                class's PROPERTIES are set as attributes and inherited by every state. All but
                those listed in NONHASHED_ATTRIBUTES make up the root's identity.

        Raises:
            MissingPropertyError: A PROPERTIES value is missing.
            ExperimentDefinitionError: This Experiment already has a root.
            HashingError: An identity argument cannot be hashed.
        """
        if any(promise.is_root for promise in self._roots):
            raise ExperimentDefinitionError(
                "This Experiment already has a root (spawn_new_tree was called before). One "
                "Experiment holds one tree: grow it from the promise spawn_new_tree returned, "
                "or create another Experiment with another directory for a second tree.",
            )
        self.state_class.check_arguments(experiment_arguments)
        promise = ExperimentStatePromise(
            self, None, None, self.tags, arguments=dict(experiment_arguments)
        )
        promise.sha()  # an unhashable argument is reported here, where it was passed
        self.root = promise
        self.experiment_arguments = dict(experiment_arguments)
        self._roots.append(promise)
        return promise

    def add_child(self, parent: ExperimentStatePromise, recipe: Recipe) -> ExperimentStatePromise:
        """Define the child of ``parent`` produced by ``recipe`` (what ``recipe(parent)`` does)."""
        self._check_own(parent, f"{type(recipe).__name__}(...)")
        if not isinstance(recipe, Recipe):
            raise ExperimentDefinitionError(
                f"Only dagger.Recipe instances define children; got a {type(recipe).__name__}.",
                value_type=type(recipe).__name__,
            )
        child = ExperimentStatePromise(self, parent, recipe, self.tags)
        child.sha()  # a property that is missing or cannot be hashed is reported here
        parent.children.append(child)
        return child

    def add_function(self, promise: ExperimentStatePromise, function: Function) -> None:
        """Run ``function`` on ``promise``'s state during the next run and record its result."""
        self._check_own(promise, repr(function))
        promise.functions.append(function)

    def _check_own(self, promise: ExperimentStatePromise, what: str) -> None:
        if promise.experiment is not self:
            raise ExperimentDefinitionError(
                f"{what} was applied to a promise of another Experiment "
                f"({promise.experiment.directory}); this one is {self.directory}. Grow each "
                "tree from its own Experiment's promises.",
            )

    def promise_of(self, state: ExperimentState) -> ExperimentStatePromise:
        """A promise standing for a stored state, to grow the tree from it."""
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
            RunError: Some recipes or functions failed; everything else was stored.
        """
        if not self._roots:
            raise ExperimentDefinitionError(
                "Nothing to run: call spawn_new_tree() first (or restore an experiment and "
                "grow it from state.to_promise())."
            )
        runner = Runner(self, keep_going=keep_going, progress=progress)
        plan = runner.plan(self._roots)
        self._prepare_store()
        runner.survey(plan)
        return runner.run(plan, executor)

    def get(self, promise: ExperimentStatePromise) -> ExperimentState:
        """Compute (or load) one state and what lies on its path; return it fully loaded."""
        self._check_own(promise, "get()")
        path: list[ExperimentStatePromise] = []
        cursor: ExperimentStatePromise | None = promise
        while cursor is not None:
            path.append(cursor)
            cursor = cursor.parent
        runner = Runner(self, keep_going=False, progress=False)
        plan = runner.plan([path[-1]], path={id(p) for p in path})
        target = plan[0]
        while target.children:
            target = target.children[0]
        target.keep = True
        self._prepare_store()
        runner.survey(plan)
        runner.run(plan)
        return runner.kept[target.sha]

    def _prepare_store(self) -> None:
        """Check the folder against this experiment; write experiment.json when it is new.

        A rerun of a known tree reads experiment.json once and writes nothing.
        """
        root = self.root if isinstance(self.root, ExperimentStatePromise) else None
        roots = [root.sha()] if root is not None else []
        if self.store.exists():
            stored = self.store.read_meta()
            self._check_state_class(stored)
            if all(sha in stored.get("roots", []) for sha in roots):
                return
        self.store.prepare(
            {
                "format": FORMAT_VERSION,
                "roots": roots,
                "state_class": class_path(self.state_class),
                "experiment_arguments": jsonable(self.experiment_arguments or {}),
                "dagger_version": __version__,
                "python_version": platform.python_version(),
                "torch_version": _torch_version(),
                "created": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
            }
        )

    def _check_state_class(self, stored: dict[str, Any]) -> None:
        stored_path = stored.get("state_class", "")
        if stored_path.partition(":")[2] != self.state_class.__qualname__:
            raise StateClassMismatchError(
                f"`{self.directory}` holds states of class `{stored_path}`, but this Experiment "
                f"was given `{class_path(self.state_class)}`. Pass state_class="
                f"{stored_path.partition(':')[2]}, or use another directory for this one.",
                stored=stored_path,
                given=class_path(self.state_class),
            )

    # -- loading -------------------------------------------------------------------------------

    def new_root_state(
        self, sha: str, arguments: dict[str, Any], tags: list[str]
    ) -> ExperimentState:
        """Create and initialise a root state (used by the runner)."""
        state = self.state_class()
        state._adopt(self, sha, None, list(tags), None)
        for name in self.state_class.PROPERTIES:
            setattr(state, name, arguments[name])
        for name in self.state_class.NONHASHED_ATTRIBUTES:
            if name in arguments:
                setattr(state, name, arguments[name])
        call_method(state, "initialize_state", **arguments)
        return state

    def load_state(self, sha: str, map_location: Any = None) -> ExperimentState | None:
        """Load a stored state fully (None, with one warning, if it is missing or corrupt).

        Args:
            sha: The state's id.
            map_location: Where to put tensors, as for ``torch.load``: a device, a dict
                from saved to wanted location, or a function. Default: where they were
                saved if that device exists here, else the CPU.
        """
        try:
            state = self.store.load(sha, self.state_class, map_location)
        except CorruptStateError:
            return None
        record = self.store.read_record(sha) or {"id": sha}
        notes = self.store.read_notes(sha)
        state._apply_record(self, record, notes, self.store.results_view(sha, notes))
        state.slim_loaded = False
        state.from_cache = True
        for hook in list(getattr(state, "load_post_hooks", [])):
            hook()
        return state

    def load_root(self, start: str | None = None) -> ExperimentState | None:
        """The root of the tree holding state ``start``, fully loaded (a fresh object).

        The root is found by following the stored records' parents, so this works in a
        worker process and in an experiment directory with several roots.
        """
        sha = start
        if sha is None:
            if self.root is None:
                return None
            sha = self.root.sha()
        seen: set[str] = set()
        while sha is not None and sha not in seen:
            seen.add(sha)
            record = self.store.read_record(sha)
            if record is None:
                return None
            if record.get("parent") is None:
                return self.load_state(sha)
            sha = record["parent"]
        return None

    # -- restoring -----------------------------------------------------------------------------

    @classmethod
    def restore(
        cls,
        directory: str | os.PathLike[str],
        state_class: type[ExperimentState] | None = None,
        *,
        durability: str = "safe",
        blob_threshold: int = DEFAULT_THRESHOLD,
    ) -> Experiment:
        """Reload a stored experiment in slim form: records only, no payload is read.

        Args:
            directory: The experiment's folder.
            state_class: The state class; imported from experiment.json when not given.

        Returns:
            An Experiment whose ``graph`` is the StaticExperimentTree of the stored states.
            It can be grown further: ``recipe(state.to_promise())`` then ``run()``.

        Raises:
            NotAnExperimentError: The folder holds no experiment.
            FormatVersionError: It was written by a newer dagger.
            StateClassMismatchError: ``state_class`` differs from the stored class.
        """
        from .tree import StaticExperimentTree

        store = DirectoryStore(
            Path(directory).absolute(), durability=durability, blob_threshold=blob_threshold
        )
        meta = store.read_meta()
        stored_path = meta.get("state_class", "")
        stand_in = False
        if state_class is None:
            try:
                state_class = import_class(stored_path)
            except (ImportError, AttributeError, ValueError, TypeError) as error:
                # A class defined in a script or notebook (__main__) cannot be imported here.
                # Slim states need nothing of it, and each payload carries the class by
                # value, so a fully loaded state gets its real class back.
                logger.debug("state class %s not importable (%s)", stored_path, error)
                state_class, stand_in = ExperimentState, True
        experiment = cls(
            directory, state_class, durability=durability, blob_threshold=blob_threshold
        )
        experiment.store = store
        if not stand_in:
            experiment._check_state_class(meta)
        experiment.experiment_arguments = meta.get("experiment_arguments")
        experiment.graph = StaticExperimentTree.from_store(experiment, store.slim_entries())
        if len(experiment.graph.roots) == 1:
            experiment.root = experiment.graph.roots[0]
        return experiment


def _torch_version() -> str | None:
    torch = sys.modules.get("torch")
    if torch is not None:
        return str(torch.__version__)
    try:  # without importing torch, which takes seconds
        return importlib.metadata.version("torch")
    except importlib.metadata.PackageNotFoundError:
        return None
