"""The local depth-first walk of a surveyed plan: cached, failure-isolated, interruptible.

Given a plan (:mod:`dagger.plan`) and a store, the runner walks it depth-first:

* a node whose whole subtree is stored costs nothing more: no record read, no payload load;
* a state is loaded or kept in memory only while some descendant must be computed from it or a
  Function must run on it; the last child computed from a parent takes the parent object
  itself, earlier ones get a copy, so memory holds the states of one root-to-leaf path;
* a recipe that raises is recorded as a failure (the first cause of its exception, and the
  whole traceback), its subtree is skipped, and the rest of the tree still runs; at the end
  each failure is logged with a shortened traceback and :class:`~dagger.errors.RunError` lists
  them, states and Functions counted apart;
* every save is atomic, so Ctrl-C or a kill at any moment leaves a readable store; Ctrl-C
  ends the run with one line saying what was stored (:class:`Interrupted`, exit status 130);
* a per-state lock keeps two processes from computing one state: the second waits, then
  finds the record and uses it; a stored state whose files turn out to be missing or
  truncated is set aside and computed again;
* the store cannot be written (disk full, read-only): the run stops with that StoreError
  (nothing stored before is lost), instead of recording every following state as failed;
* Functions are checked to be read-only: the state's content digest
  (:func:`dagger.digest.state_digest`) is taken before the first Function on a state and after
  each one; a Function that changed the state is reported (:class:`Mutation`) and recorded on
  its result (``ResultEntry.mutated``), and the state is loaded again from the store (where it
  was saved before any Function ran), so the Functions and children after it never see the
  change.

The runner knows nothing of experiments: it gets a store, the state class and the object
states call back (``experiment_object``). Running on an executor is :mod:`dagger.executors`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
import pickle
import re
import sys
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from ._compat import call_method
from ._names import class_path, short_id
from ._version import __version__
from .digest import StateDigest, digest_changes, state_digest
from .environment import capture_environment, device_name, git_facts
from .errors import CorruptStateError, DaggerError, RecipeResultError, RunError, StoreError
from .explain import Explanation, explain_record, ingredients_of, kept_digests
from .identity import state_code_identity
from .loading import damage_noter, load_state, new_root
from .plan import PlanNode, tally
from .progress import DEFAULT_INTERVAL, Progress, progress_mode
from .recipe import Function, Recipe, rebuild_recipe
from .record import ErrorInfo, Ingredients, ResultEntry, StateRecord, Status, jsonable, now
from .state import ExperimentState, adopt
from .store import Results, Store
from .store.payload import clear_transient, copy_payload

__all__ = [
    "Failure",
    "Interrupted",
    "Mutation",
    "Recompute",
    "RunReport",
    "Runner",
    "first_cause",
    "shorten_traceback",
]

logger = logging.getLogger("dagger")

# Why a stored state grown again after a restore is computed again.
_GONE = "its content is no longer stored: pruned, or damaged"


@dataclass
class Failure:
    """One state (or Function) that failed during a run.

    Attributes:
        state_id: The failed state's id.
        recipe: The recipe that was computing it (``root`` for a root).
        error_type: The type name of the failure's first cause (:func:`first_cause`).
        message: That first cause's message.
        traceback: The whole formatted traceback, every exception of the chain.
        function: The Function's name if a Function failed (the state itself is stored).
        exception: The exception the recipe raised. From a worker process it comes back
            pickled (without its traceback, which :attr:`traceback` keeps); None when it
            cannot cross processes.
        raised: ``Type: message`` of the exception as raised, when it is not the first cause.
    """

    state_id: str
    recipe: str
    error_type: str
    message: str
    traceback: str
    function: str | None = None
    exception: BaseException | None = field(default=None, repr=False, compare=False)
    raised: str | None = None

    @classmethod
    def of(
        cls,
        error: BaseException,
        *,
        state_id: str,
        recipe: str,
        function: str | None = None,
        message: str | None = None,
    ) -> Failure:
        """The failure of ``error`` (being handled now, or with its own traceback)."""
        cause = first_cause(error)
        return cls(
            state_id=state_id,
            recipe=recipe,
            error_type=type(cause).__name__,
            message=message if message is not None else str(cause),
            traceback="".join(traceback.format_exception(error)),
            function=function,
            exception=error,
            raised=None if cause is error else f"{type(error).__name__}: {error}",
        )

    def __str__(self) -> str:
        what = f"Function `{self.function}` on " if self.function else ""
        text = f"{what}{self.state_id[:12]} {self.recipe}: {self.error_type}: {self.message}"
        if self.raised:
            text += f" (raised as {self.raised.splitlines()[0] if self.raised else ''})"
        return text

    def error_info(self) -> ErrorInfo:
        return ErrorInfo(self.error_type, self.message, self.traceback)

    def __getstate__(self) -> dict[str, Any]:
        # The exception crosses processes as bytes, unpickled on arrival only if that works
        # there: an exception that does not pickle (or whose class cannot be rebuilt) must
        # not lose the rest of the worker's report.
        return {**self.__dict__, "exception": _exception_bytes(self.exception)}

    def __setstate__(self, state: dict[str, Any]) -> None:
        state = dict(state)
        data = state.get("exception")
        state["exception"] = _exception_from(data) if isinstance(data, bytes) else data
        self.__dict__.update(state)


def first_cause(error: BaseException) -> BaseException:
    """What a failure records as its cause: the exception itself, unless it is a
    :class:`~dagger.errors.RunError` (a recipe that got a state with ``promise.get()`` or read
    an attribute of a promise whose computation failed), whose own cause is the first one.

    Exceptions the user chained (``raise ... from ...``) are kept as raised: the chain is in
    the stored traceback.
    """
    seen = {id(error)}
    while isinstance(error, RunError) and error.__cause__ is not None:
        if id(error.__cause__) in seen:
            break
        error = error.__cause__
        seen.add(id(error))
    return error


_FRAME = re.compile(r'^  File "(?P<file>[^"]+)", line \d+, in ')
_PACKAGE = os.path.dirname(os.path.abspath(__file__))


def shorten_traceback(text: str, frames: int = 4) -> str:
    """A formatted traceback cut for a summary: its last exception only, without dagger's own
    frames, at most ``frames`` frames (the innermost), and the exception's first lines.

    Args:
        text: A traceback as ``traceback.format_exception`` writes it (chained ones too).
        frames: How many frames to keep.

    Returns:
        The shortened text (the full one stays on disk with the failure).
    """
    chained = re.split(
        r"\n\n(?:The above exception was the direct cause of the following exception:"
        r"|During handling of the above exception, another exception occurred:)\n\n",
        text.strip("\n"),
    )
    last = chained[-1].splitlines()
    kept: list[list[str]] = []
    tail: list[str] = []
    index = 0
    while index < len(last):
        line = last[index]
        match = _FRAME.match(line)
        if match:
            block = [line]
            index += 1
            while index < len(last) and last[index].startswith("    "):
                block.append(last[index])
                index += 1
            if not os.path.abspath(match.group("file")).startswith(_PACKAGE + os.sep):
                kept.append(block)
            continue
        if line.startswith("Traceback") or not line.strip():
            index += 1
            continue
        tail = last[index:]
        break
    lines = [line for block in kept[-frames:] for line in block]
    omitted = len(kept) - min(len(kept), frames)
    head = [f"  ... {omitted} more frame(s)"] if omitted else []
    more = len(tail) - 5
    tail = tail[:5] + ([f"  ... {more} more line(s)"] if more > 0 else [])
    chain = []
    if len(chained) > 1:
        chain = [f"  (after {len(chained) - 1} earlier exception(s) in the chain)"]
    return "\n".join(chain + head + lines + tail)


def _exception_bytes(error: BaseException | None) -> bytes | None:
    if error is None:
        return None
    try:
        data = pickle.dumps(error)
        pickle.loads(data)  # an exception class whose __init__ does not match its args fails here
    except Exception:
        return None
    return data


def _exception_from(data: bytes) -> BaseException | None:
    try:
        error = pickle.loads(data)
    except Exception:
        return None
    return error if isinstance(error, BaseException) else None


@dataclass
class Mutation:
    """A Function that changed the state it was given (it should only read it).

    Attributes:
        state_id: The state's id.
        recipe: The recipe that made the state (``root`` for a root).
        function: The Function's result name.
        paths: The attribute paths whose content changed (``model.bn1.running_mean``,
            ``model.training``), sorted.
    """

    state_id: str
    recipe: str
    function: str
    paths: tuple[str, ...]

    def __str__(self) -> str:
        shown = ", ".join(self.paths[:MUTATION_PATHS_SHOWN])
        more = len(self.paths) - MUTATION_PATHS_SHOWN
        if more > 0:
            shown += f" and {more} more"
        return f"Function `{self.function}` changed {self.state_id[:12]} {self.recipe}: {shown}"


# How many changed paths a Mutation's text names (all are in ``paths`` and in the record).
MUTATION_PATHS_SHOWN = 5


@dataclass(frozen=True)
class Recompute:
    """A state a run computed although a stored state of the same parent and recipe class
    exists: what differs between the two (issue 10).

    Attributes:
        state_id: The state computed.
        recipe: Its recipe, as ``repr`` shows it.
        sibling_id: The stored sibling it was compared with: the newest with the same
            parameter values if any (a code or global edit), else, of the newest ones, the
            one with the fewest differences.
        changes: One line per differing ingredient: ``global LABEL_SMOOTHING 0.1 -> 0.3``,
            ``code of Smooth.run changed``, ``parameter amount 0.25 -> 0.5``.
    """

    state_id: str
    recipe: str
    sibling_id: str
    changes: tuple[str, ...]

    @property
    def parameters_only(self) -> bool:
        """Whether only parameter values differ (a new point of a sweep, not an edit)."""
        return all(line.startswith("parameter ") for line in self.changes)

    def __str__(self) -> str:
        return (
            f"computing {self.state_id[:12]} ({self.recipe}) although a stored sibling "
            f"{self.sibling_id[:12]} exists: {'; '.join(self.changes)}"
        )


@dataclass
class RunReport:
    """What a run did.

    Attributes:
        computed: States computed and stored by this run.
        cached: States of the tree that were already stored (or that another process stored
            while this run waited for them).
        failed: States whose recipe raised, or whose worker process died (their subtrees
            were skipped).
        skipped: States not attempted because an ancestor failed.
        functions: Function results computed by this run.
        function_failures: Functions that raised (their states are stored; each failure is
            in :attr:`failures` and recorded with the state).
        not_attempted: States not attempted because the executor broke under another branch
            and could not be replaced (never counted as failed: run again).
        seconds: Wall time of the run.
        failures: One entry per failed state or Function.
        computed_ids: Ids of the states computed by this run, in order.
        mutated: Function results computed on a state that the Function changed.
        mutations: One entry per such Function: state, Function, changed paths.
        recomputes: One entry per computed state whose parent has a stored child of the
            same recipe class: what differs from it (:class:`Recompute`).
    """

    computed: int = 0
    cached: int = 0
    failed: int = 0
    skipped: int = 0
    functions: int = 0
    seconds: float = 0.0
    failures: list[Failure] = field(default_factory=list)
    computed_ids: list[str] = field(default_factory=list)
    function_failures: int = 0
    not_attempted: int = 0
    mutated: int = 0
    mutations: list[Mutation] = field(default_factory=list)
    recomputes: list[Recompute] = field(default_factory=list)

    def __str__(self) -> str:
        text = (
            f"{self.computed} computed, {self.cached} cached, {self.failed} failed, "
            f"{self.skipped} skipped, {self.functions} function results"
        )
        if self.function_failures:
            text += f", {self.function_failures} function(s) failed"
        if self.not_attempted:
            text += f", {self.not_attempted} not attempted"
        if self.mutated:
            one = self.mutated == 1
            text += (
                f", {self.mutated} Function{'' if one else 's'} changed the state "
                f"{'it' if one else 'they'} read"
            )
        return text + f" in {self.seconds:.2f} s"


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
            clear_transient(state)  # as in the copies its earlier siblings got
            return state
        copied: ExperimentState = copy_payload(state, state_id=self.node.sha)
        return copied


class Runner:
    """Computes what a surveyed plan needs, against a store.

    Args:
        store: Where states are read from and written to.
        state_class: The experiment's state class.
        owner: What the states call back (``state.experiment_object``): the Experiment.
        keep_going: Run the rest of the tree after a failure (default); False stops at the
            first failure.
        progress: A tqdm bar (True), log lines (``"log"``), nothing (False), or None: a bar
            when stderr is a terminal, log lines otherwise (:mod:`dagger.progress`).
        failed_before: Ids of the plan's states that failed in an earlier run.
        log_interval: Seconds between two summaries in the log.
        check_read_only: Digest each state before and after each Function that runs on it,
            to catch and undo a Function that changes it (default). False skips the digests.
        git: The user's git facts (:func:`dagger.environment.git_facts`) as the coordinator
            of a run on an executor found them; None (in the process that runs the script):
            found here, once per process.
    """

    def __init__(
        self,
        store: Store,
        state_class: type[ExperimentState],
        owner: Any,
        *,
        keep_going: bool = True,
        progress: bool | str | None = None,
        failed_before: set[str] | None = None,
        log_interval: float = DEFAULT_INTERVAL,
        check_read_only: bool = True,
        git: dict[str, Any] | None = None,
    ) -> None:
        self.store = store
        self.state_class = state_class
        self.owner = owner
        self.keep_going = keep_going
        self.mode = progress_mode(progress)
        self.log_interval = log_interval
        self.report = RunReport()
        self.held: dict[str, Held] = {}
        self.kept: dict[str, ExperimentState] = {}
        self.saved: set[str] = set()
        self.failed_before = failed_before or set()
        self.progress = Progress(None, 0, self._counts)
        #: (id, recipe, seconds) of each state this runner computed, for a coordinator's log.
        self.computed_lines: list[tuple[str, str, float]] = []
        self.check_read_only = check_read_only
        #: Code manifests by (recipe class, code identity), for the records of this run.
        self._manifests: dict[tuple[type, str], tuple[dict[str, str], ...]] = {}
        self.git = git
        # The environment states are computed in, captured when the first one is recorded
        # (after its recipe ran: settings it made count) and reused, once per device, for
        # the rest of the run: one dict shared by every record (stored once, as a shared part).
        self._environments: dict[str, dict[str, Any]] = {}

    def git_facts(self) -> dict[str, Any]:
        """The user's git facts for this run (found once per process), to hand to workers."""
        if self.git is None:
            self.git = git_facts()
        return self.git

    def environment(self) -> dict[str, Any]:
        """The environment of the state being recorded (:mod:`dagger.environment`)."""
        device = device_name()
        found = self._environments.get(device)
        if found is None:
            found = self._environments[device] = capture_environment(git=self.git_facts())
        return found

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
        self.report.cached, to_compute, functions = tally(roots)
        self._note_recomputes(roots)
        self.progress = Progress(self.mode, to_compute + functions, self._counts, self.log_interval)
        self.progress.open()
        finished = False
        try:
            with self.store.batch():
                if strategy is None:
                    for root in roots:
                        if root.work:
                            self.walk(root)
                else:
                    strategy(self, roots)
            finished = True
        except Stop:
            finished = True
        except KeyboardInterrupt:
            # The store's batch has ended (entries synced, log closed): say so in one line.
            self.report.seconds = time.perf_counter() - started
            self.progress.close(None)
            line = _interrupted_line(self.report)
            if _interactive():
                raise KeyboardInterrupt(line) from None
            print(line, file=sys.stderr, flush=True)
            raise Interrupted(self.report) from None
        finally:
            self.report.seconds = time.perf_counter() - started
            self.progress.close(self.report if finished else None)
        if self.report.failures:
            self._log_failures()
            raise RunError(
                self._failure_message(), failures=self.report.failures, report=self.report
            ) from self.report.failures[0].exception
        return self.report

    def _note_recomputes(self, roots: list[PlanNode]) -> None:
        """Log, and list in the report, what differs between each state about to be computed
        and the closest stored sibling (same parent, same recipe class): the newest one with
        the same parameter values when there is one (a code or global edit), else the one
        with the fewest differences among the newest of each code identity.

        Only states to compute are looked at, each against at most
        :data:`dagger.plan.SIBLINGS_COMPARED` siblings (whose records are read once per run): linear
        in the states computed, whatever the number of stored siblings. Changed code or
        globals log a warning; a new parameter value (a new point of a sweep) logs at INFO.
        """
        stored: dict[str, Explanation | None] = {}
        stack = list(roots)
        while stack:
            node = stack.pop()
            if not node.work:
                continue
            stack.extend(reversed(node.children))
            if node.stored or not node.siblings or node.promise is None:
                continue
            try:
                explained = node.promise.explain()
            except Exception:  # never fail a run for want of an explanation
                continue
            best: tuple[list[str], str] | None = None
            for sibling in node.siblings:
                if sibling not in stored:
                    record = self.store.read_record(sibling)
                    stored[sibling] = explain_record(record) if record is not None else None
                before = stored[sibling]
                if before is None:
                    continue
                changes = explained.changes_from(before)
                if sibling == node.twin:  # the same parameters: the one it replaces
                    best = (changes, sibling)
                    break
                if best is None or len(changes) < len(best[0]):
                    best = (changes, sibling)
            if best is None:
                continue
            changes, sibling = best
            entry = Recompute(
                node.sha,
                node.describe(),
                sibling,
                tuple(changes or ["nothing recorded differs (another identity scheme?)"]),
            )
            self.report.recomputes.append(entry)
            logger.log(logging.INFO if entry.parameters_only else logging.WARNING, "%s", entry)

    def _ingredients(self, node: PlanNode) -> Ingredients | None:
        """What the record of a state being computed keeps about its id."""
        try:
            if node.is_root:
                state_class = self.state_class
                return ingredients_of(
                    state_class,
                    ExperimentState,
                    state_code_identity(state_class, ExperimentState),
                    state_class.identity_arguments(node.arguments or {}),
                    root=True,
                )
            recipe, info = node.recipe, node.info
            assert info is not None  # a recipe's node always has its RecipeInfo
            properties = recipe.properties()
            # One manifest per recipe class and code for the whole run: the code cannot change
            # while it runs, so fingerprint's validity checks need not run for every state.
            manifest = self._manifests.get((type(recipe), info.code))
            if manifest is None:
                base = Function if isinstance(recipe, Function) else Recipe
                made = ingredients_of(type(recipe), base, info.code, properties, root=False)
                self._manifests[(type(recipe), info.code)] = made.manifest
                return made
            return Ingredients(
                type(recipe).__qualname__,
                info.code,
                manifest,
                kept_digests(properties, root=False),
            )
        except Exception as error:  # the state is fine; only its explanation is lost
            logger.warning(
                "State %s: what its id is made of could not be recorded (%s: %s); "
                "`dagger explain` will say it was not recorded.",
                short_id(node.sha),
                type(error).__name__,
                error,
            )
            return None

    def _counts(self) -> tuple[int, int, int, int]:
        report = self.report
        return report.computed, report.failed, report.functions, report.function_failures

    def tick(self, amount: int = 1) -> None:
        """Advance the progress display (if there is one)."""
        self.progress.tick(amount)

    # -- the report of failures --------------------------------------------------------------------

    def _log_failures(self) -> None:
        """Print each failure with a shortened traceback (the full one is stored)."""
        failures = self.report.failures
        for number, failure in enumerate(failures, start=1):
            logger.error(
                "failure %d of %d: %s\n%s",
                number,
                len(failures),
                failure,
                shorten_traceback(failure.traceback),
            )

    def _failure_message(self) -> str:
        report = self.report
        failures = report.failures
        lines = "\n".join(f"  - {failure}" for failure in failures)
        parts = []
        if report.failed:
            parts.append(
                f"{report.failed} state(s) failed (their {report.skipped} descendant(s) were "
                "skipped)"
            )
        if report.function_failures:
            parts.append(
                f"{report.function_failures} Function(s) failed (their states are stored; each "
                "error is recorded with its state's results)"
            )
        if report.not_attempted:
            parts.append(
                f"{report.not_attempted} state(s) were not attempted (their executor broke "
                "under another branch)"
            )
        directory = getattr(self.store, "directory", None)
        where = (
            f"`dagger failures {directory}` prints them, "
            if directory is not None and self.store.exists()
            else ""
        )
        return (
            f"{len(failures)} failure(s) during the run ({report}):\n{lines}\n"
            f"{'; '.join(parts)}. The healthy branches were run and stored. Full tracebacks "
            f"are stored with each failure: {where}or read error.failures[i].traceback. Fix "
            "the cause and run again: only what is missing is computed."
        )

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
            if node.recipe is None and not node.is_root:
                # A stored state grown again after a restore, which must be computed again
                # (pruned, or its files damaged): its record says how it was made.
                parent_id, parent_held = self._from_record(node)
            if node.is_root:
                state = new_root(
                    self.state_class,
                    owner=self.owner,
                    sha=node.sha,
                    arguments=node.arguments or {},
                    tags=node.tags,
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
                ingredients=self._ingredients(node),
                environment=self.environment(),
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
        seconds = state.dagger.record.seconds or 0.0
        self.computed_lines.append((node.sha, node.describe(), seconds))
        self.tick()
        self.progress.computed(node.sha, node.describe(), seconds)
        return state

    def _from_record(self, node: PlanNode) -> tuple[str | None, Held | None]:
        """Fill in, from its record, how a stored state grown again after a restore is made
        (its node knows only its id), to compute it again: pruned, or its files damaged.

        Sets the node's recipe (rebuilt from the record: :func:`dagger.recipe.rebuild_recipe`),
        its recipe description and its tags (the record's and this run's); a root gets its
        recorded ``spawn_new_tree`` arguments instead.

        Returns:
            The parent's id and a Held that loads it (or computes it again the same way, if it
            is pruned too); ``(None, None)`` for a root.

        Raises:
            DaggerError: The record is gone (the state was removed) or cannot say how to make
                the state again: its recipe's class cannot be imported, its code changed
                since, or its parameters do not give back the id. Nothing is recorded as a
                failure of the state then: its record stays as it is.
        """
        sha = short_id(node.sha)
        record = self.store.read_record(node.sha)
        if record is None:
            previous = self.store.read_failure(node.sha)
            cause = ""
            if previous is not None and previous.error is not None:
                cause = (
                    f" It failed when it was computed ({previous.error.type}: "
                    f"{previous.error.message}); that first cause stays recorded."
                )
            raise DaggerError(
                f"State {sha} is not in the store any more and this Experiment does not know "
                f"the recipe that made it.{cause} Run the script that built it again to "
                "recompute it."
            )
        tags = list(dict.fromkeys([*record.tags, *node.tags]))
        if record.parent is None:
            arguments = record.arguments
            try:
                same = arguments is not None and self.state_class.root_sha(arguments) == node.sha
            except Exception:
                same = False
            if not same or arguments is None:
                raise DaggerError(
                    f"Root {sha} must be computed again ({_GONE}), but its "
                    f"spawn_new_tree arguments cannot be rebuilt from its record (the record "
                    f"keeps a JSON view of each), or the code of `{record.state_class}` changed "
                    "since. Run the script that built it (exp.spawn_new_tree(...) there) to "
                    "recompute it; its record stays as it is."
                )
            node.is_root, node.arguments, node.tags = True, dict(arguments), tags
            return None, None
        if record.recipe is None:
            raise DaggerError(
                f"State {sha} must be computed again ({_GONE}), but its record "
                "names no recipe. Run the script that built it again to recompute it."
            )
        recipe, why = rebuild_recipe(
            record.recipe,
            record.parent,
            node.sha,
            fix=(
                "Run the script that defines it (or import its module before run()) to "
                "recompute the state; its record stays as it is."
            ),
            changed_fix=(
                "Recompute it with the code that computed it (check out that commit), or "
                "run the script that defines the tree as it is now (a new state); its record "
                "stays as it is."
            ),
        )
        if recipe is None:
            raise DaggerError(
                f"State {sha} ({record.recipe.name}) must be computed again "
                f"({_GONE}) from its parent {short_id(record.parent)}, but {why}"
            )
        node.recipe, node.tags = recipe, tags
        node.info = record.recipe
        parent = PlanNode(record.parent, None, stored=True, consumers=1)
        self.report.cached += 1  # it is not in the plan; a failed load takes this back
        return record.parent, Held(self, parent, None)

    def _failed(self, node: PlanNode, parent_id: str | None, error: Exception) -> Failed:
        """Record why a state failed and return the Failed to raise (called in its ``except``).

        The failure record never loses what the store knew of the state: a state with a
        record (pruned, stored but damaged) keeps its parent, recipe, tags, properties and
        identity in its failure record. A stored state whose recipe could not be found (it
        was not run) gets no failure record at all: its record, or its first failure, stays
        (and a state removed since stays removed).
        """
        failure = Failure.of(error, state_id=node.sha, recipe=node.describe())
        # A stored state whose recipe could not be found was not run: recording a failure
        # would only put a row without parent, recipe or tags over what the store knew.
        if node.recipe is not None or node.is_root:
            known = self.store.read_record(node.sha)
            record = StateRecord(
                id=node.sha,
                parent=parent_id,
                root=node.is_root,
                recipe=node.info,
                tags=tuple(node.tags),
                created=now(),
                status=Status.FAILED,
                error=failure.error_info(),
            )
            if known is not None:
                record = _failure_keeping(known, record)
            self.store.write_failure(record)
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
        before = self._digest(node, state)
        for name in node.pending:
            function = node.functions[name]
            started = time.perf_counter()
            # The identity computed where the tree was defined: a worker that received the
            # function by value may not see its source.
            code = node.function_codes[name]
            try:
                value = function.op(state)
                entry = self.store.store_result(node.sha, name, value, code)
                seconds = time.perf_counter() - started
            except Exception as error:
                if isinstance(error, StoreError) and not isinstance(error, CorruptStateError):
                    raise  # the store cannot be written: stop the run
                seconds = time.perf_counter() - started
                failure = Failure.of(
                    error, state_id=node.sha, recipe=node.describe(), function=name
                )
                entry = ResultEntry(code=code, error=failure.error_info())
                self.report.failures.append(failure)
                self.report.function_failures += 1
                logger.error("Function %s on %s failed: %s", name, short_id(node.sha), error)
            else:
                self.report.functions += 1
            entry = entry.with_timing(seconds, now())
            after = self._digest(node, state) if before is not None else None
            if before is not None and after is not None:
                # Checked whether the Function raised or not: one that trained half an epoch
                # and then failed changed the state just as much.
                changed = tuple(digest_changes(before, after))
                entry = entry.with_mutated(changed)
                if changed:
                    self._mutated(node, name, changed)
                    try:
                        state = self._reload(held)
                    except Failed as failed:
                        results[name] = entry
                        self.tick()
                        self._fail(node, failed)
                        break
                    after = self._digest(node, state)
                before = after
            results[name] = entry
            self.tick()
            if not entry.failed:
                self.progress.function(name, node.sha, seconds)
        notes = self.store.update_notes(node.sha, tags=node.new_tags, results=results)
        state.dagger.notes = notes
        state.dagger.results = Results(
            notes.results, self.store.load_result, on_damage=damage_noter(self.store, node.sha)
        )
        if any(entry.failed for entry in results.values()) and not self.keep_going:
            raise Stop()

    def _digest(self, node: PlanNode, state: ExperimentState) -> StateDigest | None:
        """The state's content digest, or None when not checking (or it cannot be taken)."""
        if not self.check_read_only:
            return None
        try:
            return state_digest(state)
        except Exception as error:
            logger.warning(
                "Cannot check that Functions leave state %s unchanged (%s: %s); its results "
                "are recorded as unchecked.",
                short_id(node.sha),
                type(error).__name__,
                error,
            )
            return None

    def _mutated(self, node: PlanNode, name: str, paths: tuple[str, ...]) -> None:
        mutation = Mutation(node.sha, node.describe(), name, paths)
        self.report.mutated += 1
        self.report.mutations.append(mutation)
        logger.warning(
            "%s. A Function must only read the state: its result is recorded as computed on a "
            "state it changed (ResultEntry.mutated, the `mutated.%s` column), and the state is "
            "loaded again from the store, so what runs after it sees it unchanged. Make the "
            "Function read-only: evaluate in eval mode under torch.no_grad() and set back any "
            "mode it changes, or work on a copy (copy.deepcopy(state.model)).",
            mutation,
            name,
        )

    def _reload(self, held: Held) -> ExperimentState:
        """The state as stored, in place of an in-memory copy that a Function changed.

        Functions run after the state is saved, so the store holds it as it was before them.
        """
        held.state = None
        return held.peek()


def _failure_keeping(known: StateRecord, failure: StateRecord) -> StateRecord:
    """``failure`` with what the state's stored record ``known`` knew: its parent, root,
    recipe, properties, arguments, state class and identity, and its tags merged with the
    failing run's (a failure must not make a state lose its place in the tree or its tags)."""
    return dataclasses.replace(
        failure,
        parent=known.parent,
        root=known.root,
        recipe=known.recipe if known.recipe is not None else failure.recipe,
        tags=tuple(dict.fromkeys([*known.tags, *failure.tags])),
        properties=dict(known.properties),
        arguments=known.arguments,
        state_class=known.state_class or failure.state_class,
        identity=known.identity,
    )
