"""Depth-first execution of an experiment tree: cached, failure-isolated, interruptible.

The runner turns the experiment's promises into a plan (one node per distinct id, tags of
duplicate promises merged), finds what the store already holds with one directory read, and
walks the plan depth-first:

* a node whose whole subtree is stored costs nothing more: no record read, no payload load;
* a state is loaded or kept in memory only while some descendant must be computed from it or a
  Function must run on it; the last child computed from a parent takes the parent object
  itself, earlier ones get a copy, so memory holds the states of one root-to-leaf path;
* a recipe that raises is recorded as a failure (error and traceback), its subtree is skipped,
  and the rest of the tree still runs; :class:`~dagger.errors.RunError` lists the failures;
* every save is atomic, so Ctrl-C or a kill at any moment leaves a readable store;
* a per-state lock keeps two processes from computing one state: the second waits, then
  finds the record and uses it.

With an executor (``run(executor=...)``), the plan is cut into *segments*: chains of states
that must be computed one after the other, ending where the tree branches. Each segment is a
task: a worker loads the segment's parent from the store, computes the chain, stores it and
returns what it did; when a segment is done, the coordinator dispatches the segments below it.
Any ``concurrent.futures``-style executor works: a process pool, a ``dask.distributed``
client, a ``submitit`` executor.
"""

from __future__ import annotations

import datetime as _dt
import logging
import queue
import sys
import threading
import time
import traceback
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ._compat import call_method
from ._version import __version__
from .errors import DaggerError, ExperimentDefinitionError, RecipeResultError, RunError
from .state import ExperimentState, class_path
from .store import CorruptStateError
from .store.payload import clear_transient, copy_payload, dumps_payload, loads_payload
from .store.records import FORMAT_VERSION, jsonable

if TYPE_CHECKING:
    from .experiment import Experiment
    from .promise import ExperimentStatePromise
    from .recipe import Function, Recipe, RecipeInfo

__all__ = ["Failure", "RunReport", "Runner", "run_task"]

logger = logging.getLogger("dagger")


@dataclass
class Failure:
    """One state (or Function) that failed during a run."""

    state_id: str
    recipe: str
    error_type: str
    message: str
    traceback: str
    function: str | None = None

    def __str__(self) -> str:
        what = f"Function `{self.function}` on " if self.function else ""
        return f"{what}{self.state_id[:12]} {self.recipe}: {self.error_type}: {self.message}"


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


class _Node:
    """One distinct state of the plan."""

    __slots__ = (
        "arguments",
        "children",
        "consumers",
        "function_codes",
        "functions",
        "info",
        "is_root",
        "keep",
        "new_tags",
        "parent",
        "pending",
        "recipe",
        "sha",
        "stored",
        "tags",
        "work",
    )

    def __init__(
        self,
        sha: str,
        parent: _Node | None,
        recipe: Recipe | None = None,
        info: RecipeInfo | None = None,
        *,
        is_root: bool = False,
        arguments: dict[str, Any] | None = None,
    ) -> None:
        self.sha = sha
        self.parent = parent
        self.recipe = recipe
        self.info = info
        self.is_root = is_root
        self.arguments = arguments
        self.tags: list[str] = []
        self.functions: dict[str, Function] = {}
        self.function_codes: dict[str, str] = {}
        self.children: list[_Node] = []
        self.stored = False
        self.pending: list[Function] = []
        self.new_tags: list[str] = []
        self.work = False
        self.consumers = 0
        self.keep = False

    @classmethod
    def of(cls, promise: ExperimentStatePromise, sha: str, parent: _Node | None) -> _Node:
        return cls(
            sha,
            parent,
            promise.recipe,
            promise.recipe_info(),
            is_root=promise.is_root,
            arguments=promise.arguments,
        )

    def describe(self) -> str:
        if self.is_root:
            return "root"
        if self.recipe is None:
            return "stored state"
        return repr(self.recipe)

    def size(self) -> int:
        count, stack = 0, [self]
        while stack:
            node = stack.pop()
            count += 1
            stack.extend(node.children)
        return count


class _Held:
    """The in-memory state of a node while its children run.

    Children computed from it call :meth:`take`: all but the last get a copy (as a save and a
    load would give), the last gets the object itself. If it was not in memory (the node was
    stored), it is loaded the first time it is needed.
    """

    __slots__ = ("consumers", "node", "runner", "state")

    def __init__(self, runner: Runner, node: _Node, state: ExperimentState | None) -> None:
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
        return copy_payload(state, state_id=self.node.sha)


class _Stop(Exception):
    """Internal: keep_going=False and a failure happened."""


class Runner:
    """Computes what an experiment's promises need, against the experiment's store.

    Args:
        experiment: The experiment whose promises to run.
        keep_going: Run the rest of the tree after a failure (default); False stops at the
            first failure.
        progress: Show a tqdm bar: True, False, or None for "when stderr is a terminal".
    """

    def __init__(
        self, experiment: Experiment, *, keep_going: bool = True, progress: bool | None = None
    ) -> None:
        self.experiment = experiment
        self.store = experiment.store
        self.keep_going = keep_going
        self.progress = sys.stderr.isatty() if progress is None else progress
        self.report = RunReport()
        self.held: dict[str, _Held] = {}
        self.kept: dict[str, ExperimentState] = {}
        self.saved: set[str] = set()
        self.failed_before: set[str] = set()
        self._bar: Any = None

    # -- planning ----------------------------------------------------------------------------

    def plan(
        self, roots: list[ExperimentStatePromise], path: set[int] | None = None
    ) -> list[_Node]:
        """One node per distinct id under ``roots`` (only promises in ``path`` if given)."""
        nodes: dict[str, _Node] = {}
        plan_roots: list[_Node] = []
        stack: list[tuple[ExperimentStatePromise, _Node | None]] = [
            (root, None) for root in reversed(roots)
        ]
        while stack:
            promise, parent = stack.pop()
            sha = promise.sha()
            node = nodes.get(sha)
            if node is None:
                node = nodes[sha] = _Node.of(promise, sha, parent)
                (parent.children if parent else plan_roots).append(node)
            for tag in promise.tags:
                if tag not in node.tags:
                    node.tags.append(tag)
            if path is None:
                for function in promise.functions:
                    code = function.code_identity()
                    known = node.function_codes.get(function.name)
                    if known is not None and known != code:
                        raise ExperimentDefinitionError(
                            f"Two different Functions named `{function.name}` were applied to "
                            f"state {sha[:12]}. Give them distinct names with "
                            "Function(op, name=...).",
                            name=function.name,
                        )
                    node.functions[function.name] = function
                    node.function_codes[function.name] = code
            for child in reversed(promise.children):
                if path is None or id(child) in path:
                    stack.append((child, node))
        return plan_roots

    def survey(self, roots: list[_Node]) -> None:
        """Decide, for every node, whether it is stored and what work lies in its subtree."""
        listing = self.store.scan()
        self.failed_before = listing.failures
        order: list[_Node] = []
        stack = list(roots)
        while stack:
            node = stack.pop()
            order.append(node)
            stack.extend(node.children)
            sha = node.sha
            if sha in listing.records:
                if listing.has_payload(sha):
                    node.stored = True
                else:
                    self._drop_broken_record(sha)
            if node.tags and node.stored:
                node.new_tags = self._new_tags(node, sha in listing.notes)
            if node.functions:
                self._find_pending_functions(node, sha in listing.notes)
        for node in reversed(order):  # children before parents
            must_compute = not node.stored
            node.consumers = sum(1 for child in node.children if not child.stored)
            node.consumers += int(node.keep)
            node.work = (
                must_compute
                or bool(node.pending)
                or bool(node.new_tags)
                or node.keep
                or any(child.work for child in node.children)
            )

    def _drop_broken_record(self, sha: str) -> None:
        try:
            self.store.quarantine(sha, "its record has no payload file")
        except CorruptStateError:
            pass

    def _new_tags(self, node: _Node, has_notes: bool) -> list[str]:
        record = self.store.read_record(node.sha) or {}
        known = set(record.get("tags", []))
        if has_notes:
            known.update(self.store.read_notes(node.sha).get("tags", []))
        return [tag for tag in node.tags if tag not in known]

    def _find_pending_functions(self, node: _Node, has_notes: bool) -> None:
        results = self.store.read_notes(node.sha).get("results", {}) if has_notes else {}
        for name, function in node.functions.items():
            known = results.get(name)
            if (
                not node.stored
                or known is None
                or "error" in known
                or known.get("code") != node.function_codes[name]
            ):
                node.pending.append(function)

    # -- running -----------------------------------------------------------------------------

    def run(self, roots: list[_Node], executor: Any = None) -> RunReport:
        """Execute a surveyed plan, in this process or on ``executor``.

        Raises:
            RunError: At the end, if anything failed (everything else was stored).
        """
        started = time.perf_counter()
        self.report.cached = self._count_all(roots, lambda node: node.stored)
        to_compute = self._count(roots, lambda node: not node.stored)
        functions = self._count(roots, lambda node: len(node.pending))
        self._open_bar(to_compute + functions)
        try:
            with self.store.batch():
                if executor is None:
                    for root in roots:
                        if root.work:
                            self._walk(root)
                else:
                    self._dispatch(roots, executor)
        except _Stop:
            pass
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
            )
        return self.report

    @staticmethod
    def _count_all(roots: list[_Node], measure: Any) -> int:
        count, stack = 0, list(roots)
        while stack:
            node = stack.pop()
            count += measure(node)
            stack.extend(node.children)
        return count

    @staticmethod
    def _count(roots: list[_Node], measure: Any) -> int:
        count, stack = 0, list(roots)
        while stack:
            node = stack.pop()
            if node.work:
                count += measure(node)
                stack.extend(node.children)
        return count

    def _walk(self, root: _Node, parent_held: _Held | None = None) -> None:
        stack: list[tuple[_Node, _Held | None, bool]] = [(root, parent_held, False)]
        while stack:
            node, parent_held, leaving = stack.pop()
            if leaving:
                self.held.pop(node.sha, None)
                continue
            held = self._enter(node, parent_held)
            if held is None:
                continue
            stack.append((node, None, True))
            for child in reversed(node.children):
                if child.work:
                    stack.append((child, held, False))

    def _enter(self, node: _Node, parent_held: _Held | None) -> _Held | None:
        state: ExperimentState | None = None
        if not node.stored:
            try:
                state = self._compute(node, parent_held)
            except _Failed as failed:
                self._fail(node, failed)
                return None
        if node.stored and node.new_tags and not node.pending:
            self.store.update_notes(node.sha, tags=node.new_tags)
        held = _Held(self, node, state)
        self.held[node.sha] = held
        if node.pending:
            self._run_functions(node, held)
        if node.keep:
            try:
                self.kept[node.sha] = held.take()
            except _Failed as failed:
                self._fail(node, failed)
                return None
        if held.consumers <= 0:
            held.state = None
        return held

    def _fail(self, node: _Node, failed: _Failed) -> None:
        self.report.failed += 1
        self.report.skipped += node.size() - 1
        self.report.failures.append(failed.failure)
        if self._bar is not None:
            self._bar.update(1)
        if not self.keep_going:
            raise _Stop()

    # -- computing a state ---------------------------------------------------------------------

    def materialize(self, node: _Node) -> ExperimentState:
        """The full state of a node: loaded from the store, or recomputed if it is unusable."""
        if node.stored or node.sha in self.saved:
            state = self.experiment.load_state(node.sha)
            if state is not None:
                return state
            if node.stored:  # counted as cached; it is computed again instead
                self.report.cached -= 1
            node.stored = False
            self.saved.discard(node.sha)
        parent_held = self.held.get(node.parent.sha) if node.parent else None
        if node.parent is not None and parent_held is None:
            parent_held = _Held(self, node.parent, None)
            parent_held.consumers = 1
        state = self._compute(node, parent_held)
        return state if state is not None else self.materialize(node)

    def _compute(self, node: _Node, parent_held: _Held | None) -> ExperimentState | None:
        """Compute and store one state, under its lock.

        Returns:
            The state, or None if another process stored it meanwhile (it is then marked
            stored, and loaded only if something needs it).
        """
        with self.store.lock(node.sha):
            if self.store.has_record(node.sha):
                # Another process stored it meanwhile: use its record, add this run's tags.
                node.stored = True
                node.new_tags = list(node.tags)
                self.report.cached += 1
                return None
            return self._compute_unlocked(node, parent_held)

    def _compute_unlocked(self, node: _Node, parent_held: _Held | None) -> ExperimentState:
        experiment = self.experiment
        started = time.perf_counter()
        parent_sha = node.parent.sha if node.parent else None
        try:
            if node.is_root:
                state = experiment.new_root_state(node.sha, node.arguments or {}, node.tags)
            elif node.recipe is None:
                raise DaggerError(
                    f"State {node.sha[:12]} is not in the store any more and this Experiment "
                    "does not know the recipe that made it. Run the script that built it "
                    "again to recompute it."
                )
            else:
                assert parent_held is not None
                parent_state = parent_held.take()
                parent_state._adopt(experiment, node.sha, parent_sha, node.tags, node.info)
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
                state._adopt(experiment, node.sha, parent_sha, node.tags, node.info)
            seconds = time.perf_counter() - started
            for hook in list(state.save_pre_hooks):
                hook()
            record = self._record(node, state, seconds)
            state.record = self.store.save(node.sha, state, record)
            for hook in list(state.save_post_hooks):
                hook()
        except _Failed:
            raise
        except Exception as error:
            failure = Failure(
                state_id=node.sha,
                recipe=node.describe(),
                error_type=type(error).__name__,
                message=str(error),
                traceback=traceback.format_exc(),
            )
            self.store.write_failure(node.sha, self._failure_record(node, failure))
            logger.error("State %s (%s) failed: %s", node.sha[:12], node.describe(), error)
            raise _Failed(failure) from error
        state.status = "done"
        if node.sha in self.failed_before:
            self.store.clear_failure(node.sha)
        self.saved.add(node.sha)
        self.report.computed += 1
        self.report.computed_ids.append(node.sha)
        if self._bar is not None:
            self._bar.update(1)
        return state

    def _record(self, node: _Node, state: ExperimentState, seconds: float) -> dict[str, Any]:
        """The slim record of a freshly computed state (its payload is added by the store)."""
        record = self._record_base(node)
        record.update(
            status="done",
            seconds=round(seconds, 6),
            state_class=class_path(type(state)),
            properties={name: jsonable(getattr(state, name, None)) for name in state.PROPERTIES},
            dagger_version=__version__,
        )
        if node.is_root:
            record["arguments"] = jsonable(node.arguments)
        return record

    def _record_base(self, node: _Node) -> dict[str, Any]:
        return {
            "format": FORMAT_VERSION,
            "id": node.sha,
            "parent": node.parent.sha if node.parent else None,
            "root": node.is_root,
            "recipe": node.info.to_record() if node.info else None,
            "tags": list(node.tags),
            "created": _now(),
        }

    def _failure_record(self, node: _Node, failure: Failure) -> dict[str, Any]:
        return {
            **self._record_base(node),
            "status": "failed",
            "error": {
                "type": failure.error_type,
                "message": failure.message,
                "traceback": failure.traceback,
            },
        }

    # -- executors -----------------------------------------------------------------------------

    def _dispatch(self, roots: list[_Node], executor: Any) -> None:
        """Run the plan as segment tasks on ``executor``; dispatch below each finished one."""
        done: queue.Queue[tuple[int, Any, BaseException | None]] = queue.Queue()
        inflight: dict[int, tuple[list[_Node], Any]] = {}
        counter = iter(range(1 << 62))

        def expand(start: _Node) -> None:
            stack = [start]
            while stack:
                node = stack.pop()
                if node.stored and not node.pending:
                    # Nothing to compute here: only tags to add; go on below.
                    if node.new_tags:
                        self.store.update_notes(node.sha, tags=node.new_tags)
                    stack.extend(child for child in reversed(node.children) if child.work)
                    continue
                segment = _segment(node)
                token = next(counter)
                handle = executor.submit(run_task, self._task(segment))
                inflight[token] = (segment, handle)
                threading.Thread(target=_await, args=(token, handle, done), daemon=True).start()

        stopping = False
        try:
            for root in roots:
                if root.work:
                    expand(root)
            while inflight:
                token, outcome, error = done.get()
                segment, _ = inflight.pop(token)
                last_ok = self._merge(segment, outcome, error)
                if self.report.failures and not self.keep_going:
                    stopping = True
                if last_ok and not stopping:
                    for child in segment[-1].children:
                        if child.work:
                            expand(child)
        except BaseException:
            for _, handle in inflight.values():
                cancel = getattr(handle, "cancel", None)
                if callable(cancel):
                    cancel()
            raise

    def _task(self, segment: list[_Node]) -> bytes:
        """The bytes a worker needs to compute a segment (classes of __main__ by value)."""
        first = segment[0]
        store = self.store
        spec = {
            "directory": str(store.directory),
            "durability": store.durability,
            "blob_threshold": store.blobs.threshold,
            "state_class": self.experiment.state_class,
            "keep_going": self.keep_going,
            "failed_before": sorted(sha for sha in self.failed_before if sha in _shas(segment)),
            "parent": first.parent.sha if first.parent else None,
            "nodes": [
                {
                    "sha": node.sha,
                    "recipe": node.recipe,
                    "info": node.info,
                    "is_root": node.is_root,
                    "arguments": node.arguments,
                    "tags": node.tags,
                    "functions": node.functions,
                    "function_codes": node.function_codes,
                    "pending": [function.name for function in node.pending],
                    "new_tags": node.new_tags,
                    "stored": node.stored,
                    "subtree": node.size() if node is segment[-1] else 0,
                }
                for node in segment
            ],
        }
        data, _, _ = dumps_payload(spec, None)
        return data

    def _merge(self, segment: list[_Node], outcome: Any, error: BaseException | None) -> bool:
        """Fold a finished task into the report; True if its last state is stored."""
        if error is not None:
            # The worker itself failed (killed, out of memory, lost): what it stored stays;
            # the failure belongs to the first state of the segment it did not store.
            for node in segment:
                if node.stored or not self.store.has_record(node.sha):
                    if not node.stored:
                        break
                    continue
                node.stored = True
                self.report.computed += 1
                self.report.computed_ids.append(node.sha)
            else:
                return True
            failure = Failure(
                state_id=node.sha,
                recipe=node.describe(),
                error_type=type(error).__name__,
                message=f"the worker computing this branch failed: {error}",
                traceback="".join(traceback.format_exception(error)),
            )
            self.report.failures.append(failure)
            self.report.failed += 1
            self.report.skipped += node.size() - 1
            if self._bar is not None:
                self._bar.update(1)
            return False
        report = outcome
        self.report.computed += len(report["computed"])
        self.report.computed_ids.extend(report["computed"])
        self.report.failed += report["failed"]
        self.report.skipped += report["skipped"]
        self.report.functions += report["functions"]
        self.report.cached += report["cached"]
        self.report.failures.extend(report["failures"])
        if self._bar is not None:
            self._bar.update(len(report["computed"]) + report["failed"] + report["functions"])
        return bool(report["last_ok"])

    # -- functions -----------------------------------------------------------------------------

    def _run_functions(self, node: _Node, held: _Held) -> None:
        try:
            state = held.peek()
        except _Failed as failed:
            self._fail(node, failed)
            return
        results: dict[str, Any] = {}
        for function in node.pending:
            started = time.perf_counter()
            # The identity computed where the tree was defined: a worker that received the
            # function by value may not see its source.
            entry: dict[str, Any] = {"code": node.function_codes[function.name]}
            try:
                value = function.op(state)
                entry.update(self.store.result_entry(node.sha, function.name, value))
            except Exception as error:
                failure = Failure(
                    state_id=node.sha,
                    recipe=node.describe(),
                    error_type=type(error).__name__,
                    message=str(error),
                    traceback=traceback.format_exc(),
                    function=function.name,
                )
                entry["error"] = {
                    "type": failure.error_type,
                    "message": failure.message,
                    "traceback": failure.traceback,
                }
                self.report.failures.append(failure)
                logger.error("Function %s on %s failed: %s", function.name, node.sha[:12], error)
            else:
                self.report.functions += 1
            entry["seconds"] = time.perf_counter() - started
            entry["created"] = _now()
            results[function.name] = entry
            if self._bar is not None:
                self._bar.update(1)
        notes = self.store.update_notes(node.sha, tags=node.new_tags, results=results)
        state.results = self.store.results_view(node.sha, notes)
        if any("error" in entry for entry in results.values()) and not self.keep_going:
            raise _Stop()

    # -- progress ------------------------------------------------------------------------------

    def _open_bar(self, total: int) -> None:
        if not self.progress or total == 0:
            return
        from tqdm.auto import tqdm

        self._bar = tqdm(total=total, desc="dagger", unit="state", leave=False)

    def _close_bar(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None


class _Failed(Exception):
    """Internal: a node failed; carries its Failure."""

    def __init__(self, failure: Failure) -> None:
        super().__init__(str(failure))
        self.failure = failure


def _now() -> str:
    return _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds")


def _segment(start: _Node) -> list[_Node]:
    """The chain from ``start`` down to the first state where the work branches (or ends)."""
    segment = [start]
    while True:
        working = [child for child in segment[-1].children if child.work]
        if len(working) != 1:
            return segment
        segment.append(working[0])


def _shas(nodes: list[_Node]) -> set[str]:
    return {node.sha for node in nodes}


def _await(
    token: int, handle: Any, done: queue.Queue[tuple[int, Any, BaseException | None]]
) -> None:
    """Wait for a task in a thread (futures of every kind have a blocking ``result()``)."""
    try:
        done.put((token, handle.result(), None))
    except BaseException as error:
        done.put((token, None, error))


def run_task(spec_bytes: bytes) -> dict[str, Any]:
    """Worker entry point: compute one segment into the store; return what happened.

    Runs in the worker process (a pool process, a dask worker, a Slurm job). The segment's
    parent is loaded from the store; each state is computed under its lock, so a state that
    another process is computing is waited for, then used.
    """
    from .experiment import Experiment

    spec = loads_payload(spec_bytes)
    experiment = Experiment(
        spec["directory"],
        spec["state_class"],
        durability=spec["durability"],
        blob_threshold=spec["blob_threshold"],
    )
    runner = Runner(experiment, keep_going=spec["keep_going"], progress=False)
    runner.failed_before = set(spec["failed_before"])
    parent = _Node(spec["parent"], None) if spec["parent"] else None
    if parent is not None:
        parent.stored = True
    nodes: list[_Node] = []
    for item in spec["nodes"]:
        node = _Node(
            item["sha"],
            nodes[-1] if nodes else parent,
            item["recipe"],
            item["info"],
            is_root=item["is_root"],
            arguments=item["arguments"],
        )
        node.tags = list(item["tags"])
        node.functions = dict(item["functions"])
        node.function_codes = dict(item["function_codes"])
        node.pending = [node.functions[name] for name in item["pending"]]
        node.new_tags = list(item["new_tags"])
        node.stored = item["stored"]
        node.work = True
        if nodes:
            nodes[-1].children.append(node)
        nodes.append(node)
    for node in nodes:
        node.consumers = sum(1 for child in node.children if not child.stored)
    held = None
    if parent is not None:
        held = _Held(runner, parent, None)
        held.consumers = 1
    try:
        runner._walk(nodes[0], held)
    except _Stop:
        pass
    failed_shas = {failure.state_id for failure in runner.report.failures if not failure.function}
    # States below the segment were not part of this task: count them as skipped if the
    # failure cut them off.
    below = spec["nodes"][-1]["subtree"] - 1
    last_ok = not failed_shas.intersection(_shas(nodes)) and (
        nodes[-1].stored or nodes[-1].sha in runner.saved
    )
    skipped = runner.report.skipped + (0 if last_ok else below)
    return {
        "computed": runner.report.computed_ids,
        "failed": runner.report.failed,
        "skipped": skipped,
        "functions": runner.report.functions,
        "cached": runner.report.cached,
        "failures": runner.report.failures,
        "last_ok": last_ok,
    }
