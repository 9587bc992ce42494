"""The local depth-first walk of a surveyed plan: cached, failure-isolated, interruptible.

Given a plan (:mod:`dagger.plan`) and a store, the runner walks it depth-first:

* a node whose whole subtree is stored costs nothing more: no record read, no payload load;
* a state is loaded or kept in memory only while some descendant must be computed from it or a
  Function must run on it; the last child computed from a parent takes the parent object
  itself, earlier ones get a copy, so memory holds the states of one root-to-leaf path;
* a recipe that raises is recorded as a failure (error and traceback), its subtree is skipped,
  and the rest of the tree still runs; :class:`~dagger.errors.RunError` lists the failures;
* every save is atomic, so Ctrl-C or a kill at any moment leaves a readable store; Ctrl-C
  ends the run with one line saying what was stored (:class:`Interrupted`, exit status 130);
* a per-state lock keeps two processes from computing one state: the second waits, then
  finds the record and uses it; a stored state whose files turn out to be missing or
  truncated is set aside and computed again;
* the store cannot be written (disk full, read-only): the run stops with that StoreError
  (nothing stored before is lost), instead of recording every following state as failed.

The runner knows nothing of experiments: it gets a store, the state class and the object
states call back (``experiment_object``). Running on an executor is :mod:`dagger.executors`.
"""

from __future__ import annotations

import contextlib
import logging
import sys
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from ._compat import call_method
from ._names import class_path, short_id
from ._version import __version__
from .errors import CorruptStateError, DaggerError, RecipeResultError, RunError, StoreError
from .loading import damage_noter, load_state, new_root
from .plan import PlanNode, count
from .record import ErrorInfo, ResultEntry, StateRecord, Status, jsonable, now
from .state import ExperimentState, adopt
from .store import Results, Store
from .store.payload import copy_payload

__all__ = ["Failure", "Interrupted", "RunReport", "Runner"]

logger = logging.getLogger("dagger")


@dataclass
class Failure:
    """One state (or Function) that failed during a run.

    Attributes:
        state_id: The failed state's id.
        recipe: The recipe that was computing it (``root`` for a root).
        error_type: The exception's type name.
        message: The exception's message.
        traceback: The formatted traceback.
        function: The Function's name if a Function failed (the state itself is stored).
        exception: The exception itself, in the process that ran the recipe (not sent back
            from workers).
    """

    state_id: str
    recipe: str
    error_type: str
    message: str
    traceback: str
    function: str | None = None
    exception: BaseException | None = field(default=None, repr=False, compare=False)

    def __str__(self) -> str:
        what = f"Function `{self.function}` on " if self.function else ""
        return f"{what}{self.state_id[:12]} {self.recipe}: {self.error_type}: {self.message}"

    def error_info(self) -> ErrorInfo:
        return ErrorInfo(self.error_type, self.message, self.traceback)

    def __getstate__(self) -> dict[str, Any]:
        # The exception object may not pickle (and need not cross processes): its type,
        # message and traceback do.
        return {**self.__dict__, "exception": None}


@dataclass
class RunReport:
    """What a run did.

    Attributes:
        computed: States computed and stored by this run.
        cached: States of the tree that were already stored (or that another process stored
            while this run waited for them).
        failed: States whose recipe raised (their subtrees were skipped).
        skipped: States not attempted because an ancestor failed.
        functions: Function results computed by this run.
        seconds: Wall time of the run.
        failures: One entry per failed state or Function.
        computed_ids: Ids of the states computed by this run, in order.
    """

    computed: int = 0
    cached: int = 0
    failed: int = 0
    skipped: int = 0
    functions: int = 0
    seconds: float = 0.0
    failures: list[Failure] = field(default_factory=list)
    computed_ids: list[str] = field(default_factory=list)

    def __str__(self) -> str:
        return (
            f"{self.computed} computed, {self.cached} cached, {self.failed} failed, "
            f"{self.skipped} skipped, {self.functions} function results in "
            f"{self.seconds:.2f} s"
        )


class Interrupted(SystemExit, KeyboardInterrupt):
    """Ctrl-C stopped a run; the store was left consistent and everything computed is stored.

    Uncaught in a script, it ends the process with exit status 130 and no traceback (the one
    line that says what was stored is printed before); ``except KeyboardInterrupt`` still
    catches it. In an interactive session (IPython, Jupyter, ``python -i``) a plain
    KeyboardInterrupt carrying the same line is raised instead, so the session goes on.

    Attributes:
        report: What the run did before it was stopped.
    """

    def __init__(self, report: RunReport) -> None:
        super().__init__(130)
        self.report = report


def _interrupted_line(report: RunReport) -> str:
    return (
        f"Interrupted: {report.computed} state(s) computed and stored by this run "
        f"({report.cached} were stored before); the store is consistent. Run the same code "
        "again to resume: what is stored is not computed again."
    )


def _interactive() -> bool:
    if hasattr(sys, "ps1") or sys.flags.interactive:
        return True
    ipython = sys.modules.get("IPython")
    get = getattr(ipython, "get_ipython", None)
    return callable(get) and get() is not None


class Stop(Exception):
    """keep_going=False and a failure happened: unwind the walk (caught by :meth:`Runner.run`)."""


class Failed(Exception):
    """A node failed; carries its Failure (raised inside the walk, handled by it)."""

    def __init__(self, failure: Failure) -> None:
        super().__init__(str(failure))
        self.failure = failure


class Held:
    """The in-memory state of a node while its children run.

    Children computed from it call :meth:`take`: all but the last get a copy (as a save and a
    load would give), the last gets the object itself. If it was not in memory (the node was
    stored), it is loaded the first time it is needed.
    """

    __slots__ = ("consumers", "node", "runner", "state")

    def __init__(self, runner: Runner, node: PlanNode, state: ExperimentState | None) -> None:
        self.runner = runner
        self.node = node
        self.state = state
        self.consumers = node.consumers

    def peek(self) -> ExperimentState:
        if self.state is None:
            self.state = self.runner.materialize(self.node)
        return self.state

    def take(self) -> ExperimentState:
        state = self.peek()
        self.consumers -= 1
        if self.consumers <= 0:
            self.state = None
            return state
        copied: ExperimentState = copy_payload(state)
        return copied


class Runner:
    """Computes what a surveyed plan needs, against a store.

    Args:
        store: Where states are read from and written to.
        state_class: The experiment's state class.
        owner: What the states call back (``state.experiment_object``): the Experiment.
        keep_going: Run the rest of the tree after a failure (default); False stops at the
            first failure.
        progress: Show a tqdm bar: True, False, or None for "when stderr is a terminal".
        failed_before: Ids of the plan's states that failed in an earlier run.
    """

    def __init__(
        self,
        store: Store,
        state_class: type[ExperimentState],
        owner: Any,
        *,
        keep_going: bool = True,
        progress: bool | None = None,
        failed_before: set[str] | None = None,
    ) -> None:
        self.store = store
        self.state_class = state_class
        self.owner = owner
        self.keep_going = keep_going
        self.progress = sys.stderr.isatty() if progress is None else progress
        self.report = RunReport()
        self.held: dict[str, Held] = {}
        self.kept: dict[str, ExperimentState] = {}
        self.saved: set[str] = set()
        self.failed_before = failed_before or set()
        self.bar: Any = None

    # -- the run as a whole ----------------------------------------------------------------------

    def run(
        self,
        roots: list[PlanNode],
        strategy: Callable[[Runner, list[PlanNode]], None] | None = None,
    ) -> RunReport:
        """Execute a surveyed plan: the local walk, or ``strategy(runner, roots)`` (an executor).

        Raises:
            RunError: At the end, if anything failed (everything else was stored).
        """
        started = time.perf_counter()
        self.report.cached = count(roots, lambda node: int(node.stored), all=True)
        to_compute = count(roots, lambda node: int(not node.stored), all=False)
        functions = count(roots, lambda node: len(node.pending), all=False)
        self._open_bar(to_compute + functions)
        try:
            with self.store.batch():
                if strategy is None:
                    for root in roots:
                        if root.work:
                            self.walk(root)
                else:
                    strategy(self, roots)
        except Stop:
            pass
        except KeyboardInterrupt:
            # The store's batch has ended (entries synced, log closed): say so in one line.
            self._close_bar()
            self.report.seconds = time.perf_counter() - started
            line = _interrupted_line(self.report)
            if _interactive():
                raise KeyboardInterrupt(line) from None
            print(line, file=sys.stderr, flush=True)
            raise Interrupted(self.report) from None
        finally:
            self._close_bar()
            self.report.seconds = time.perf_counter() - started
        if self.report.failures:
            failures = self.report.failures
            lines = "\n".join(f"  - {failure}" for failure in failures)
            raise RunError(
                f"{len(failures)} failure(s) during the run ({self.report}):\n{lines}\n"
                "Each failed state's error and traceback are stored in "
                "states/<id>.failed.json; the healthy branches were run and stored. Fix the "
                "cause and run again: only what is missing is computed.",
                failures=failures,
                report=self.report,
            ) from failures[0].exception
        return self.report

    def tick(self, amount: int = 1) -> None:
        """Advance the progress bar (if there is one)."""
        if self.bar is not None:
            self.bar.update(amount)

    # -- the walk ------------------------------------------------------------------------------

    def walk(self, root: PlanNode, parent_held: Held | None = None) -> None:
        """Depth-first over the nodes below ``root`` that have work left."""
        stack: list[tuple[PlanNode, Held | None, bool]] = [(root, parent_held, False)]
        while stack:
            node, held_parent, leaving = stack.pop()
            if leaving:
                self.held.pop(node.sha, None)
                continue
            held = self._enter(node, held_parent)
            if held is None:
                continue
            stack.append((node, None, True))
            for child in reversed(node.children):
                if child.work:
                    stack.append((child, held, False))

    def _enter(self, node: PlanNode, parent_held: Held | None) -> Held | None:
        state: ExperimentState | None = None
        if not node.stored:
            try:
                state = self._compute(node, parent_held)
            except Failed as failed:
                self._fail(node, failed)
                return None
        if node.stored and node.new_tags and not node.pending:
            self.store.update_notes(node.sha, tags=node.new_tags)
        held = Held(self, node, state)
        self.held[node.sha] = held
        if node.pending:
            self._run_functions(node, held)
        if node.keep:
            try:
                self.kept[node.sha] = held.take()
            except Failed as failed:
                self._fail(node, failed)
                return None
        if held.consumers <= 0:
            held.state = None
        return held

    def _fail(self, node: PlanNode, failed: Failed) -> None:
        self.report.failed += 1
        self.report.skipped += node.size() - 1
        self.report.failures.append(failed.failure)
        self.tick()
        if not self.keep_going:
            raise Stop()

    # -- computing a state ---------------------------------------------------------------------

    def materialize(self, node: PlanNode) -> ExperimentState:
        """The full state of a node: loaded from the store, or recomputed if it is unusable."""
        if node.stored or node.sha in self.saved:
            state = load_state(self.store, node.sha, self.state_class, owner=self.owner)
            if state is not None:
                return state
            if node.stored:  # counted as cached; it is computed again instead
                self.report.cached -= 1
            node.stored = False
            self.saved.discard(node.sha)
        parent_held = self.held.get(node.parent.sha) if node.parent else None
        if node.parent is not None and parent_held is None:
            parent_held = Held(self, node.parent, None)
            parent_held.consumers = 1
        state = self._compute(node, parent_held)
        return state if state is not None else self.materialize(node)

    def _compute(self, node: PlanNode, parent_held: Held | None) -> ExperimentState | None:
        """Compute and store one state, under its lock.

        Returns:
            The state, or None if another process stored it meanwhile (it is then marked
            stored, and loaded only if something needs it).
        """
        with self.store.lock(node.sha):
            if self.store.has_record(node.sha):
                problem = self.store.check([node.sha]).get(node.sha)
                if problem is None:
                    # Another process stored it meanwhile: use its record, add this run's tags.
                    node.stored = True
                    node.new_tags = list(node.tags)
                    self.report.cached += 1
                    return None
                # Stored, but its files are missing or truncated: set it aside (under its
                # lock, on direct evidence) and compute it again.
                with contextlib.suppress(CorruptStateError):
                    self.store.quarantine(node.sha, problem)
            return self._compute_unlocked(node, parent_held)

    def _compute_unlocked(self, node: PlanNode, parent_held: Held | None) -> ExperimentState:
        started = time.perf_counter()
        parent_id = node.parent.sha if node.parent else None
        try:
            if node.is_root:
                state = new_root(
                    self.state_class,
                    owner=self.owner,
                    sha=node.sha,
                    arguments=node.arguments or {},
                    tags=node.tags,
                )
            elif node.recipe is None:
                previous = self.store.read_failure(node.sha)
                cause = ""
                if previous is not None and previous.error is not None:
                    cause = (
                        f" It failed when it was computed ({previous.error.type}: "
                        f"{previous.error.message}); that first cause stays recorded."
                    )
                raise DaggerError(
                    f"State {node.sha[:12]} is not in the store any more and this Experiment "
                    f"does not know the recipe that made it.{cause} Run the script that built "
                    "it again to recompute it."
                )
            else:
                assert parent_held is not None
                parent_state = parent_held.take()
                self._adopt(parent_state, node, parent_id)
                state = call_method(node.recipe, "run", parent_state)
                if not isinstance(state, ExperimentState):
                    raise RecipeResultError(
                        f"Recipe `{type(node.recipe).__name__}.run` returned a "
                        f"`{type(state).__name__}`; it must return an ExperimentState (the "
                        "state it was given, modified, or a new one). Add `return state` at "
                        "the end of run().",
                        recipe=type(node.recipe).__name__,
                        value_type=type(state).__name__,
                    )
                self._adopt(state, node, parent_id)
            seconds = time.perf_counter() - started
            for hook in list(state.save_pre_hooks):
                hook()
            record = StateRecord(
                id=node.sha,
                parent=parent_id,
                root=node.is_root,
                recipe=node.info,
                tags=tuple(node.tags),
                created=now(),
                status=Status.DONE,
                seconds=round(seconds, 6),
                state_class=class_path(type(state)),
                properties={
                    name: jsonable(getattr(state, name, None)) for name in state.PROPERTIES
                },
                arguments=jsonable(node.arguments) if node.is_root else None,
                dagger_version=__version__,
            )
            state.dagger.record = self.store.save(node.sha, state, record)
            for hook in list(state.save_post_hooks):
                hook()
        except Failed:
            raise
        except StoreError as error:
            if not isinstance(error, CorruptStateError):
                raise  # the store cannot be written: stop the run; nothing stored is lost
            raise self._failed(node, parent_id, error) from error
        except Exception as error:
            raise self._failed(node, parent_id, error) from error
        state.dagger.status = Status.DONE
        state.dagger.properties = dict(state.dagger.record.properties)
        if node.sha in self.failed_before:
            self.store.clear_failure(node.sha)
        self.saved.add(node.sha)
        self.report.computed += 1
        self.report.computed_ids.append(node.sha)
        self.tick()
        return state

    def _failed(self, node: PlanNode, parent_id: str | None, error: Exception) -> Failed:
        """Record why a state failed and return the Failed to raise (called in its ``except``).

        A stored state this Experiment cannot recompute (its recipe is unknown here) keeps the
        failure record it has: the first cause is what matters.
        """
        failure = Failure(
            state_id=node.sha,
            recipe=node.describe(),
            error_type=type(error).__name__,
            message=str(error),
            traceback=traceback.format_exc(),
            exception=error,
        )
        unknown = node.recipe is None and not node.is_root
        if not (unknown and self.store.read_failure(node.sha) is not None):
            self.store.write_failure(
                StateRecord(
                    id=node.sha,
                    parent=parent_id,
                    root=node.is_root,
                    recipe=node.info,
                    tags=tuple(node.tags),
                    created=now(),
                    status=Status.FAILED,
                    error=failure.error_info(),
                )
            )
        logger.error("State %s (%s) failed: %s", short_id(node.sha), node.describe(), error)
        return Failed(failure)

    def _adopt(self, state: ExperimentState, node: PlanNode, parent_id: str | None) -> None:
        adopt(
            state,
            experiment=self.owner,
            sha=node.sha,
            parent_id=parent_id,
            tags=node.tags,
            recipe=node.info,
        )

    # -- functions -----------------------------------------------------------------------------

    def _run_functions(self, node: PlanNode, held: Held) -> None:
        try:
            state = held.peek()
        except Failed as failed:
            self._fail(node, failed)
            return
        results: dict[str, ResultEntry] = {}
        for name in node.pending:
            function = node.functions[name]
            started = time.perf_counter()
            # The identity computed where the tree was defined: a worker that received the
            # function by value may not see its source.
            code = node.function_codes[name]
            try:
                value = function.op(state)
                entry = self.store.store_result(node.sha, name, value, code)
            except Exception as error:
                if isinstance(error, StoreError) and not isinstance(error, CorruptStateError):
                    raise  # the store cannot be written: stop the run
                failure = Failure(
                    state_id=node.sha,
                    recipe=node.describe(),
                    error_type=type(error).__name__,
                    message=str(error),
                    traceback=traceback.format_exc(),
                    function=name,
                    exception=error,
                )
                entry = ResultEntry(code=code, error=failure.error_info())
                self.report.failures.append(failure)
                logger.error("Function %s on %s failed: %s", name, short_id(node.sha), error)
            else:
                self.report.functions += 1
            results[name] = entry.with_timing(time.perf_counter() - started, now())
            self.tick()
        notes = self.store.update_notes(node.sha, tags=node.new_tags, results=results)
        state.dagger.notes = notes
        state.dagger.results = Results(
            notes.results, self.store.load_result, on_damage=damage_noter(self.store, node.sha)
        )
        if any(entry.failed for entry in results.values()) and not self.keep_going:
            raise Stop()

    # -- progress ------------------------------------------------------------------------------

    def _open_bar(self, total: int) -> None:
        if not self.progress or total == 0:
            return
        from tqdm.auto import tqdm

        self.bar = tqdm(total=total, desc="dagger", unit="state", leave=False)

    def _close_bar(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None
