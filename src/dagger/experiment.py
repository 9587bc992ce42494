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
from typing import Any, Literal, overload

from . import audit as auditing
from . import curate as curating
from . import loading, plan
from ._names import class_path, import_class
from ._version import __version__
from .environment import capture_environment
from .errors import ExperimentDefinitionError, InvalidArgumentError, StateClassMismatchError
from .executors import dispatch
from .fingerprint import code_reads
from .identity import child_id
from .plan_report import PlanReport
from .preview import preview
from .progress import DEFAULT_INTERVAL
from .promise import ExperimentStatePromise, realise, warn_scheduler
from .recipe import Function, Recipe, applied
from .record import FORMAT_VERSION, IDENTITY_VERSION, ExperimentMeta, Status, jsonable, now
from .runner import Runner, RunReport
from .selection import ids_of, resolve_ids
from .state import ExperimentState
from .store import DirectoryStore, Store
from .store.blobs import DEFAULT_THRESHOLD
from .store.table import SlimTable
from .tree import StaticExperimentTree

__all__ = ["Experiment"]

logger = logging.getLogger("dagger")


class Experiment:
    """A tree (or a forest: one tree per distinct root) of experiment states stored in one
    directory.

    Args:
        directory: Where states are stored (created on the first run, with parents), or a
            :class:`~dagger.store.Store` (for example ``dagger.store.MemoryStore()``).
        state_class: The ExperimentState subclass of every state of this experiment.
            Default: the class stored in the folder when it holds an experiment and this
            Experiment only grows stored states; plain ExperimentState otherwise.
        durability: ``"safe"`` (default): every write is fsynced. ``"fast"``: writes stay
            atomic but are not fsynced, for scratch experiments.
        blob_threshold: Tensor storages, arrays and bytes of at least this many bytes
            (default 64 KiB) are stored once as content-addressed blobs, shared by every state
            that holds the same bytes.

    Attributes:
        tags: The tags active now (see :meth:`tag`).
        graph: The :class:`~dagger.tree.StaticExperimentTree` after :meth:`restore`.
        experiment_arguments: The first root's ``spawn_new_tree`` arguments.

    Raises:
        ExperimentDefinitionError: ``state_class`` is not an ExperimentState subclass, its
            ``__init__`` cannot be called the way dagger builds roots, or ``durability`` is
            not ``"safe"`` or ``"fast"``.
    """

    def __init__(
        self,
        directory: str | os.PathLike[str] | Store,
        state_class: type[ExperimentState] | None = None,
        *,
        durability: str = "safe",
        blob_threshold: int = DEFAULT_THRESHOLD,
    ) -> None:
        self._class_given = state_class is not None
        if state_class is None:
            state_class = ExperimentState
        if not (isinstance(state_class, type) and issubclass(state_class, ExperimentState)):
            raise ExperimentDefinitionError(
                f"state_class must be dagger.ExperimentState or a subclass of it; got "
                f"{state_class!r}.",
                value_type=type(state_class).__name__,
            )
        loading.check_constructible(state_class)
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
        self.experiment_arguments: dict[str, Any] | None = None
        self.graph: StaticExperimentTree | None = None
        # The tops of the trees being defined, in definition order: spawned roots and stored
        # states grown again after a restore.
        self._roots: list[ExperimentStatePromise] = []
        self._spawned: dict[str, ExperimentStatePromise] = {}
        self._ran = False  # exp.root is the root state, not its promise, after a run
        self._stored_promises: dict[str, ExperimentStatePromise] = {}

    def __repr__(self) -> str:
        return f"Experiment({self.store.location!r}, state_class={self.state_class.__name__})"

    def __deepcopy__(self, memo: dict[int, Any]) -> Experiment:
        # An Experiment is a handle, not a value: a recipe that keeps it (the original
        # tutorial's `self.experiment_object = state.experiment_object`) is snapshotted
        # without copying the experiment, its store and the states it holds.
        return self

    # -- the roots -----------------------------------------------------------------------------

    @property
    def roots(self) -> list[Any]:
        """The roots of this experiment, one per distinct root id: the stored roots after
        :meth:`restore` (slim states), then the roots spawned in this session (promises), in
        the order they were defined."""
        found: dict[str, Any] = {}
        if self.graph is not None:
            for state in self.graph.roots:
                found[state.sha() or ""] = state
        for sha, promise in self._spawned.items():
            found.setdefault(sha, promise)
        return list(found.values())

    @property
    def root(self) -> Any:
        """The root: None before :meth:`spawn_new_tree`; then its promise (reading an
        attribute of it computes or loads the root once, see
        :class:`~dagger.promise.ExperimentStatePromise`); after :meth:`restore`, the stored
        root state (slim).

        Raises:
            ExperimentDefinitionError: The experiment holds several roots (a forest): use
                :attr:`roots`, or ``promise.root`` / ``state.root`` for the root of a given
                state.
        """
        roots = self.roots
        if len(roots) > 1:
            listed = ", ".join(_describe_root(root) for root in roots[:5])
            more = f", and {len(roots) - 5} more" if len(roots) > 5 else ""
            raise ExperimentDefinitionError(
                f"This experiment holds {len(roots)} roots ({listed}{more}), so `exp.root` "
                "would be ambiguous. Use exp.roots, or the root of the state at hand: "
                "promise.root (or state.root for a stored state).",
                roots=[_root_sha(root) for root in roots],
            )
        if not roots:
            return None
        root = roots[0]
        # After a run, the root itself (loaded on first access, then kept): what the original
        # dagger's exp.root was. A root that failed stays a promise.
        if (
            self._ran
            and isinstance(root, ExperimentStatePromise)
            and root.is_root
            and self.store.has_record(root.sha())
        ):
            return realise(root, "exp.root")
        return root

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
        """Define a root state (nothing runs yet).

        An experiment holds a forest: each distinct root (``for seed in range(3):
        exp.spawn_new_tree(seed=seed)``) is the top of its own tree, stored in the same
        directory. Spawning a root that this Experiment already has (a notebook cell run
        again) returns the same promise: the current tags are added to it, and its non-hashed
        arguments take the new values.

        Args:
            **experiment_arguments: Passed to ``initialize_state``. Those named in the state
                class's PROPERTIES are set as attributes and inherited by every state. All but
                those listed in NONHASHED_ATTRIBUTES make up the root's identity.

        Returns:
            The root's promise.

        Raises:
            MissingPropertyError: A PROPERTIES value is missing.
            ExperimentDefinitionError: The state class's ``initialize_state`` cannot take
                these arguments.
            HashingError: An identity argument cannot be hashed.
        """
        self.state_class.check_arguments(experiment_arguments)
        self.state_class.check_initialize_signature(experiment_arguments)
        promise = ExperimentStatePromise(
            self, None, None, self.tags, arguments=dict(experiment_arguments)
        )
        sha = promise.sha()  # an unhashable argument is reported here, where it was passed
        known = self._spawned.get(sha)
        if known is not None:
            known.tags = tuple(dict.fromkeys([*known.tags, *self.tags]))
            known.arguments = dict(experiment_arguments)
            return known
        self._spawned[sha] = promise
        self._roots.append(promise)
        if self.experiment_arguments is None:
            self.experiment_arguments = dict(experiment_arguments)
        return promise

    @property
    def leaves(self) -> list[ExperimentStatePromise]:
        """The leaves of the trees being defined: one promise per distinct state that has no
        child, depth-first from the roots in definition order (Functions add none; a root
        with nothing grown from it is a leaf). Reading it computes nothing."""
        first: dict[str, ExperimentStatePromise] = {}
        parents: set[str] = set()
        stack = list(reversed(self._roots))
        while stack:
            promise = stack.pop()
            sha = promise.sha()
            first.setdefault(sha, promise)
            if promise.children:
                parents.add(sha)
            stack.extend(reversed(promise.children))
        return [promise for sha, promise in first.items() if sha not in parents]

    def add_child(self, parent: ExperimentStatePromise, recipe: Recipe) -> ExperimentStatePromise:
        """Define the child of ``parent`` produced by ``recipe`` (what ``recipe(parent)`` does).

        The recipe is copied as it is now: changing it afterwards changes neither this
        child's id nor what runs.

        Raises:
            ExperimentDefinitionError: ``parent`` belongs to another Experiment, or ``recipe``
                is not a Recipe.
            HashingError: A property of the recipe cannot be hashed.
        """
        if parent.experiment is not self:
            self._check_own(parent, f"{type(recipe).__name__}(...)")
        if not isinstance(recipe, Recipe):
            raise ExperimentDefinitionError(
                f"Only dagger.Recipe instances define children; got a {type(recipe).__name__}.",
                value_type=type(recipe).__name__,
            )
        snapshot, identity = applied(recipe)  # a missing property is reported here
        name, code, properties = identity
        reads = code_reads()
        # and a property that cannot be hashed here
        sha = child_id(parent.sha(), name, code, properties, kind=type(recipe).__name__)
        child = ExperimentStatePromise(
            self, parent, snapshot, self.tags, identity=identity, defined_sha=sha
        )
        if code_reads() != reads:  # a function, class or recipe among the properties
            child.reads_code = True
        parent.attach_child(child)
        return child

    def add_function(self, promise: ExperimentStatePromise, function: Function) -> None:
        """Run ``function`` on ``promise``'s state during the next run and record its result."""
        self._check_own(promise, repr(function))
        promise.attach_function(function)

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

    def save(self) -> None:
        """Write the experiment's description (``experiment.json``: the roots defined so far,
        the state class, the first root's arguments) without computing any state, as the
        original dagger's ``save()`` did. :meth:`run` does this too."""
        self._prepare_store()

    @overload
    def run(
        self,
        *,
        keep_going: bool = ...,
        progress: bool | str | None = ...,
        executor: Any = ...,
        check_read_only: bool = ...,
        dry_run: Literal[False] = ...,
        scheduler: Any = ...,
        log_interval: float = ...,
    ) -> RunReport: ...

    @overload
    def run(
        self,
        *,
        keep_going: bool = ...,
        progress: bool | str | None = ...,
        executor: Any = ...,
        check_read_only: bool = ...,
        dry_run: Literal[True],
        scheduler: Any = ...,
        log_interval: float = ...,
    ) -> PlanReport: ...

    def run(
        self,
        *,
        keep_going: bool = True,
        progress: bool | str | None = None,
        executor: Any = None,
        check_read_only: bool = True,
        dry_run: bool = False,
        scheduler: Any = None,
        log_interval: float = DEFAULT_INTERVAL,
    ) -> RunReport | PlanReport:
        """Compute and store every state of the tree that is not stored yet, depth-first.

        Args:
            keep_going: After a failure, run the rest of the tree (default); False stops at
                the first failure.
            progress: None (default): a progress bar when stderr is a terminal, else one
                ``logging`` line per computed state (id, recipe, seconds) and a summary every
                ``log_interval`` seconds, on the logger ``dagger.progress`` (printed to stderr
                when logging is not configured). True: a bar; ``"log"``: the lines; False:
                nothing.
            executor: Run independent branches on any ``concurrent.futures``-style executor
                (``ProcessPoolExecutor``, a ``dask.distributed.Client``, a ``submitit``
                executor). Workers read parents from and write children to this
                experiment's directory, which they must be able to reach. Default: compute
                everything in this process.
            check_read_only: Check that each Function leaves its state unchanged (content
                digests before and after; see ``RunReport.mutations``). False skips the
                check, for states so large that hashing them matters.
            dry_run: Do nothing; return :meth:`plan`'s report of what the run would do.
            scheduler: The original dagger's dask scheduler: accepted and ignored, with a
                DeprecationWarning naming ``executor``.
            log_interval: Seconds between two summaries in the log (progress as lines).

        Returns:
            A RunReport: computed, cached, failed, skipped, Function results and failures,
            states not attempted, Functions that changed their state, seconds (a PlanReport
            with ``dry_run=True``).

        Raises:
            RunError: Some recipes or functions failed; everything else was stored. Its
                ``__cause__`` is the first failure's exception (from a worker process too,
                when it can be pickled). Each failure is logged at the end of the run with a
                shortened traceback; the full one is stored with it (``dagger failures
                DIR``).
        """
        warn_scheduler(scheduler)
        if dry_run:
            return self.plan()
        if not self._roots:
            raise ExperimentDefinitionError(
                "Nothing to run: call spawn_new_tree() first (or restore an experiment and "
                "grow it from state.to_promise())."
            )
        # Stored leaves with nothing to do get no plan node (a cached rerun is mostly these).
        known = self.store.survey() if self.store.exists() else None
        roots = plan.build(self._roots, survey=known)
        self._prepare_store()
        failed_before = plan.survey(roots, self.store)
        runner = self._runner(keep_going, progress, failed_before, log_interval, check_read_only)
        strategy = None if executor is None else functools.partial(dispatch, executor=executor)
        try:
            return runner.run(roots, strategy)
        finally:
            self._ran = True

    def plan(self) -> PlanReport:
        """What :meth:`run` would do now, without doing any of it.

        One row per state of the tree, in run order: ``compute``, ``stored``, ``failed
        before`` (a run tries it again) or ``skipped`` (below a state that failed before), the
        Functions a run would run on it, and, for the states a run computes, an estimated time:
        the median recorded duration of the stored states of the same recipe class.
        ``print(exp.plan())`` shows the table; ``.to_dataframe()`` gives it to pandas.

        Nothing is written, no lock is taken, no state is computed or loaded: only the
        experiment's folder listing and records are read.

        Raises:
            ExperimentDefinitionError: The tree has no root yet.
            StateClassMismatchError: The folder holds states of another class.
            HashingError: A recipe property or argument cannot be hashed.
        """
        if not self._roots:
            raise ExperimentDefinitionError(
                "Nothing to plan: call spawn_new_tree() first (or restore an experiment and "
                "grow it from state.to_promise())."
            )
        roots = plan.build(self._roots)
        if self.store.exists():
            self._check_state_class(self.store.read_meta())
        failed_before = plan.survey(roots, self.store)
        return preview(roots, failed_before, self.store, self.state_class)

    def audit(
        self,
        states: Any = None,
        *,
        sample: int | None = 5,
        rtol: float = 0.0,
        atol: float = 0.0,
        seed: int | None = None,
        git_directory: str | os.PathLike[str] | None = None,
    ) -> auditing.AuditReport:
        """Check that stored states reproduce: recompute them and compare every attribute.

        Each audited state is recomputed from its stored parent (a root from its
        ``spawn_new_tree`` arguments) in a scratch area and compared with the stored state
        attribute by attribute (tensors and arrays bitwise, or within ``rtol``/``atol``; other
        values by their canonical encoding). Stored states are never replaced; the outcome
        (``reproduced``, ``differs``, ``error``) is recorded in each state's notes, and tables
        show it in an ``audit`` column. See :mod:`dagger.audit`.

        The recipes are the ones this Experiment's tree was defined with; a state outside it
        (an Experiment restored from a folder) has its recipe rebuilt from its record, which
        needs the recipe's module importable here and today's code equal to the code that
        computed the state.

        Args:
            states: What to audit: ids or unique id prefixes, states, promises, or a list or
                NodeSet of them; all of them are audited. None (the default) draws ``sample``
                stored states at random: from the tree this Experiment spawned when it spawned
                one (a script's tree), else (restored) from the whole store.
            sample: How many states to draw when ``states`` is None (None: all of them).
            rtol: Relative tolerance: ``|stored - recomputed| <= atol + rtol * |recomputed|``
                (0 with ``atol`` 0: bitwise).
            atol: Absolute tolerance, in the values' units.
            seed: Seed of the draw; None draws a seed, which the report shows so that the
                same sample can be audited again.
            git_directory: Where the user's git repository is, for the environment the report
                shows (default: the folder of the running script).

        Returns:
            An AuditReport; ``print()`` it for the table and the differences, ``.ok`` is True
            when every audited state reproduced.

        Raises:
            StateNotFoundError: An id or prefix matches no state of the store, or several.
            InvalidArgumentError: ``sample`` or a tolerance is not valid.
            NotAnExperimentError: Nothing was stored here yet.
        """
        meta = self.store.read_meta()
        self._check_state_class(meta)
        definitions = auditing.definitions(self._roots)
        found = self.store.snapshot()
        stored = set(found.ids_of(Status.DONE))
        if any(promise.is_root for promise in self._roots):  # the script's own tree
            candidates = [sha for sha in definitions if sha in stored]
        else:  # restored (and maybe grown): the whole store, in tree order where known
            in_tree = [node.sha() or "" for node in self.graph.nodes] if self.graph else []
            candidates = [sha for sha in in_tree if sha in stored]
            candidates += sorted(stored - set(candidates))
        chosen = None
        if states is not None:
            chosen = resolve_ids(ids_of(states), set(found.ids))
        return auditing.audit(
            self.store,
            self.state_class,
            definitions=definitions,
            candidates=candidates,
            states=chosen,
            sample=sample,
            rtol=rtol,
            atol=atol,
            seed=seed,
            environment=capture_environment(git_directory),
            class_importable=not self.stand_in,
        )

    # -- curating ------------------------------------------------------------------------------

    def remove(
        self, states: Any, *, descendants: bool = True, dry_run: bool = False
    ) -> curating.CurationReport:
        """Remove stored states, with everything below them by default.

        Each state is removed under its lock (a run going on in the same folder is not
        corrupted: one that needs a removed state computes it again); its record disappears
        from tables, lineage and drawings. Payload files are deleted at once; blobs that no
        remaining state refers to are then collected by :func:`dagger.store.maintenance.gc`
        (files a run going on may be about to use are kept for a later ``dagger gc``). A
        format-1 folder is converted to format 2 first (not on a dry run).

        Args:
            states: What to remove: ids or unique id prefixes, states, promises, or a list or
                NodeSet of them.
            descendants: Also remove their subtrees (default). False refuses, removing
                nothing, when a state has a child that is not removed with it.
            dry_run: Only report what would be removed and freed; nothing is written.

        Returns:
            A CurationReport: ``print()`` it for the states (id, recipe, status) and the bytes
            freed (``.bytes_freed``: payload files plus blobs no remaining state refers to).

        Raises:
            StateNotFoundError: An id or prefix matches no stored state, or several.
            ExperimentDefinitionError: ``descendants=False`` and a state has children.
            NotAnExperimentError: Nothing was stored here yet.
        """
        table = self._curation_table(dry_run)
        chosen = resolve_ids(ids_of(states, "remove()"), table.ids)
        report = curating.remove(
            self.store, table, chosen, descendants=descendants, dry_run=dry_run
        )
        if not dry_run and report.states:
            self._after_curation()
        return report

    def prune(
        self, keep: Any, *, per: str | None = None, dry_run: bool = False
    ) -> curating.CurationReport:
        """Keep the best states and all their ancestors; drop the payloads of all others.

        Which states: when this Experiment defined a tree (``spawn_new_tree`` in a script),
        the states of that tree only (as :meth:`audit`): a store that also holds states of
        earlier code or other settings keeps those as they are. An Experiment from
        :meth:`restore` (and ``dagger prune``) curates every state of the store.

        Every other stored state keeps its record with status ``pruned``: tables, lineage and
        drawings still show it (with its results), and a later run computes it again only
        when it needs it (a child or a Function to compute, ``get()``). Blobs no remaining
        state refers to are collected as by :meth:`remove`.

        Args:
            keep: ``"top K by COLUMN"`` or ``"bottom K by COLUMN"``, where COLUMN is a column
                of ``dagger ls`` / ``tree.nodes.to_dataframe()`` holding numbers (for example
                ``"top 3 by result.evaluate.accuracy"``); only states with a value there
                compete (states without one are never the best), ties keep the state stored
                first. Or the states to keep: ids or unique prefixes, states, promises, or a
                list or NodeSet of them.
            per: A column (``param.method``): the rule keeps the top K within each group of
                equal values; a state without a value there takes its nearest ancestor's.
                Only with a rule.
            dry_run: Only report what would be kept, pruned and freed; nothing is written.

        Returns:
            A CurationReport with ``kept`` (the chosen states), ``states`` (those pruned) and
            ``bytes_freed``; ``print()`` it.

        Raises:
            InvalidArgumentError: The rule is malformed, K < 1, or ``per`` comes with a list.
            ColumnNotFoundError: The rule's column or ``per`` is not a column of the table.
            InvalidQueryError: The rule's column holds values that are not numbers.
            StateNotFoundError: An id or prefix to keep matches no stored state, or several.
        """
        notes: list[str] = []
        rule: curating.KeepRule | None = None
        if isinstance(keep, str):
            rule = curating.parse_keep(keep)
        elif per is not None:
            raise InvalidArgumentError(
                f"per={per!r} groups the states of a keep rule, but keep is a list of states; "
                "pass keep='top K by COLUMN' with per, or drop per.",
                per=per,
            )
        table = self._curation_table(dry_run)
        scope = None
        if any(promise.is_root for promise in self._roots):  # the script's own tree, as audit
            scope = set(auditing.definitions(self._roots))
        if rule is not None:
            frame = StaticExperimentTree.from_store(
                self, self.state_class, self.store, table
            ).nodes.to_dataframe()
            if scope is not None:
                frame = frame[frame["id"].isin(scope)]
            chosen, notes = curating.choose_best(frame, rule, per)
        else:
            chosen = resolve_ids(ids_of(keep, "prune()"), table.ids)
        if not chosen:
            what = (
                f"no state{' of this tree' if scope is not None else ''} has a number in "
                f"{rule.column!r}"
                if rule is not None
                else f"keep={keep!r} names no state"
            )
            raise InvalidArgumentError(
                f"Nothing to keep: {what}, so pruning would drop the payload of every state. "
                "Nothing was pruned. Check the selection (dagger ls DIR shows the states and "
                "their columns).",
                keep=keep,
            )
        if scope is not None:
            notes.append(
                f"Only the {len(scope)} states of the tree this Experiment defined compete and "
                "may be pruned; the store's other states are left as they are (prune a "
                "restored Experiment, or run `dagger prune`, to curate the whole store)."
            )
        shown = None if rule is None else str(rule) + (f" per {per}" if per else "")
        report = curating.prune(
            self.store, table, chosen, dry_run=dry_run, rule=shown, notes=notes, scope=scope
        )
        if not dry_run and report.states:
            self._after_curation()
        return report

    def _curation_table(self, dry_run: bool) -> SlimTable:
        meta = self.store.read_meta()  # refuses a folder that holds no experiment
        if not dry_run:
            self.store.prepare(meta)  # converts a format-1 folder; writes nothing otherwise
        return self.store.snapshot()

    def _after_curation(self) -> None:
        """Forget identity schemes no state is left of; refresh a restored tree."""
        meta = self.store.read_meta()
        if meta.older_identities:
            left = curating.identities_left(self.store, self.store.snapshot())
            gone = [scheme for scheme in meta.older_identities if scheme not in left]
            if gone:
                self.store.forget_identities(gone)
                _warned_identities.discard(self.store.location)
        if self.graph is not None:
            self.graph = StaticExperimentTree.from_store(self, self.state_class, self.store)

    def _runner(
        self,
        keep_going: bool,
        progress: bool | str | None,
        failed_before: set[str],
        log_interval: float = DEFAULT_INTERVAL,
        check_read_only: bool = True,
    ) -> Runner:
        return Runner(
            self.store,
            self.state_class,
            self,
            keep_going=keep_going,
            progress=progress,
            failed_before=failed_before,
            log_interval=log_interval,
            check_read_only=check_read_only,
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
        roots = list(self._spawned)
        if self.store.exists():
            stored = self.store.read_meta()
            self._check_state_class(stored)
            warn_older_identities(self.store.location, stored)
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
        name = stored_path.partition(":")[2]
        if name == self.state_class.__qualname__:
            return
        if not self._class_given:
            if not self._spawned:
                # Growing stored states only: they are of the stored class, as in restore().
                self.state_class, self.stand_in = _stored_class(stored_path)
                return
            raise StateClassMismatchError(
                f"`{self.store.location}` holds states of class `{stored_path}`, and this "
                "Experiment was given no state_class, so the roots it spawned are plain "
                f"dagger.ExperimentState. Pass state_class={name} (the class itself) to "
                "Experiment(...), or grow the stored tree from dagger.Experiment.restore("
                "directory).",
                stored=stored_path,
                given=None,
            )
        raise StateClassMismatchError(
            f"`{self.store.location}` holds states of class `{stored_path}`, but this "
            f"Experiment was given `{class_path(self.state_class)}`. Pass state_class="
            f"{name}, or use another directory for this one.",
            stored=stored_path,
            given=class_path(self.state_class),
        )

    # -- loading -------------------------------------------------------------------------------

    def load_state(self, sha: str, map_location: Any = None) -> ExperimentState | None:
        """Load a stored state fully.

        Args:
            sha: The state's id, or a unique prefix of it (as ``dagger ls`` shows ids).
            map_location: Where to put tensors, as for ``torch.load``: a device, a dict
                from saved to wanted location, or a function. Default: where they were
                saved if that device exists here, else the CPU.

        Returns:
            The state; None, with one warning saying why, when the store has no content for
            it: it failed, was pruned, or its content is damaged (it is then set aside, and
            the next run recomputes it).

        Raises:
            StateNotFoundError: No state of the store has this id, or the prefix matches
                several (a ``KeyError``; the message names the nearest ids).
        """
        survey = self.store.survey()
        status = survey.status_of(sha)
        if status is None:  # a prefix, or an id the store does not hold
            sha = resolve_ids([sha], self.store.snapshot().ids)[0]
            status = self.store.survey().status_of(sha)
        if status is not Status.DONE:
            reasons: dict[Status | None, str] = {
                Status.FAILED: "failed when it was computed",
                Status.PRUNED: "was pruned (its payload dropped; a run recomputes it)",
                Status.MISSING: "was found damaged and set aside (a run recomputes it)",
            }
            why = reasons.get(status, f"has no stored content ({status})")
            logger.warning("State %s %s: it has no content to load.", sha[:12], why)
            return None
        return loading.load_state(
            self.store, sha, self.state_class, owner=self, map_location=map_location
        )

    def load_root(self, start: str | None = None) -> ExperimentState | None:
        """The root of the tree holding state ``start``, fully loaded (a fresh object)."""
        if start is None:
            root = self.root
            if root is None:
                return None
            start = root.sha()
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
        slim: bool = True,
        import_class: bool = True,
    ) -> Experiment:
        """Reload a stored experiment in slim form: records only, no payload is read.

        Args:
            directory: The experiment's folder (or its store).
            state_class: The state class; imported from experiment.json when not given. If
                it cannot be imported (it was defined in a script or notebook, or its module
                fails to import here), a stand-in is used for the slim states, with one
                warning; a full load brings the real class back from the payload.
            slim: False loads every state in full (as the original dagger's
                ``restore(directory, slim=False)`` did): memory for all of them at once.
                A state that failed, or whose files are damaged, stays slim.
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
            state_class,
            durability=durability,
            blob_threshold=blob_threshold,
        )
        meta = experiment.store.read_meta()
        warn_older_identities(experiment.store.location, meta)
        if state_class is None:
            experiment.state_class, experiment.stand_in = _stored_class(
                meta.state_class, import_class
            )
        experiment._check_state_class(meta)
        experiment.experiment_arguments = meta.experiment_arguments
        experiment.graph = StaticExperimentTree.from_store(
            experiment, experiment.state_class, experiment.store
        )
        if not slim:
            for state in experiment.graph.nodes:
                if state.dagger.status is not Status.FAILED:
                    state.restore()
        return experiment


def _root_sha(root: Any) -> str:
    return str(root.sha() or "")


def _describe_root(root: Any) -> str:
    """``3fa2c1d4e5f6 (seed=0)``: a root's short id and its identity arguments."""
    if isinstance(root, ExperimentStatePromise):
        arguments = root.arguments or {}
    else:
        arguments = dict(root.dagger.properties)
    shown = ", ".join(f"{key}={value!r}" for key, value in arguments.items())
    return f"{_root_sha(root)[:12]}" + (f" ({shown})" if shown else "")


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
        {
            "__module__": module or __name__,
            "__qualname__": qualname or "ExperimentState",
            # Its states take their real class from their payload when fully loaded.
            "__dagger_stand_in__": True,
        },
    )
    return stand_in, True


_warned_identities: set[str] = set()


def warn_older_identities(location: str, meta: ExperimentMeta) -> None:
    """Say once per process and store that it holds states of an older identity scheme."""
    older = meta.older_identities
    if not older or location in _warned_identities:
        return
    _warned_identities.add(location)
    schemes = ", ".join(map(str, older))
    logger.warning(
        "%s holds states identified by dagger's identity scheme %s; this dagger uses scheme %s "
        "(ids cover everything a recipe's code reads: globals, closures, helpers, library "
        "versions), so a run computes new ids for the same recipes and recomputes those states. "
        "The old ones stay readable (restore, show) until you remove them: dagger rm %s "
        "--identity %s.",
        location,
        schemes,
        IDENTITY_VERSION,
        location,
        older[0],
    )


def _torch_version() -> str | None:
    torch = sys.modules.get("torch")
    if torch is not None:
        return str(torch.__version__)
    try:  # without importing torch, which takes seconds
        return importlib.metadata.version("torch")
    except importlib.metadata.PackageNotFoundError:
        return None
