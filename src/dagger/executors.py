"""Shipping chains of states to a ``concurrent.futures``-style executor.

The plan is cut into *segments*: chains of states that must be computed one after the other,
ending where the tree branches (:func:`dagger.plan.segment`). Each segment is a task: a worker
opens the store, loads the segment's parent, computes the chain, stores it and returns what it
did; when a segment is done, the coordinator dispatches the segments below it. Any executor
with ``submit(fn, *args)`` returning a future with a blocking ``result()`` works: a process
pool, a ``dask.distributed`` client, a ``submitit`` executor.

A worker that dies breaks a process pool under every task it runs: :func:`dispatch` tells the
dead worker's branch from the others (see there).

A worker receives everything as data (the store's location, the state class, the segment's
nodes, recipes by value through cloudpickle) and imports nothing above the runner.
"""

from __future__ import annotations

import contextlib
import faulthandler
import itertools
import logging
import os
import queue
import shutil
import signal
import tempfile
import threading
import traceback
from concurrent.futures import BrokenExecutor, ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .errors import ExperimentDefinitionError
from .loading import StoreOwner
from .plan import PlanNode, from_wire, segment, to_wire
from .record import StateRecord, Status, now
from .runner import Failure, Held, Runner, Stop
from .state import ExperimentState
from .store import open_store
from .store.payload import dumps_payload, loads_payload

__all__ = ["dispatch", "run_segment"]

_log = logging.getLogger("dagger")

# What a worker writes into its task's marker file (see run_segment).
_TERMINATED = "terminated"


def dispatch(runner: Runner, roots: list[PlanNode], executor: Any) -> None:
    """Run a surveyed plan as segment tasks on ``executor``; dispatch below each finished one.

    A worker process that dies (``os._exit``, a kill such as the out-of-memory killer's, a
    crash) breaks a ``ProcessPoolExecutor`` and every task on it fails alike. dagger tells the
    branch that was running in the dead process from the others: each task marks, in a file of
    its own, that it started (with its pid) and, when the pool terminates it, that it was
    terminated. The branch that started and was not terminated is reported as failed, with
    the exit cause; the others are resubmitted on a new pool of the same size (for a
    ``ProcessPoolExecutor``), or else reported as not attempted, never as failed.

    Raises:
        ExperimentDefinitionError: The store cannot be reached from another process.
    """
    spec = runner.store.worker_spec()
    if spec is None:
        raise ExperimentDefinitionError(
            f"The store {runner.store.location} lives in this process's memory; an executor's "
            "workers cannot reach it. Run without an executor, or use a directory."
        )
    dispatcher = _Dispatcher(runner, spec, executor)
    try:
        dispatcher.run(roots)
    finally:
        dispatcher.close()


@dataclass(eq=False)
class _Task:
    token: int
    chain: list[PlanNode]
    executor: Any
    handle: Any = None


@dataclass(eq=False)
class _Break:
    """The tasks an executor took down when it broke."""

    error: BaseException
    started: list[_Task] = field(default_factory=list)
    unstarted: list[_Task] = field(default_factory=list)


class _Dispatcher:
    """The coordinator's loop: submit segments, fold results in, expand below finished ones,
    and recover from an executor broken by a dead worker."""

    def __init__(self, runner: Runner, spec: dict[str, Any], executor: Any) -> None:
        self.runner = runner
        self.spec = spec
        self.executor = executor
        self.owned: list[Any] = []  # executors dagger created to replace a broken one
        self.done: queue.Queue[tuple[int, Any, BaseException | None]] = queue.Queue()
        self.inflight: dict[int, _Task] = {}
        self.tokens = itertools.count()
        self.markers = Path(tempfile.mkdtemp(prefix="dagger-tasks-"))
        self.breaks: dict[int, _Break] = {}  # id(executor) -> what it took down
        self.worker_pids: set[int] = set()
        self.stopping = False

    # -- the loop ------------------------------------------------------------------------------

    def run(self, roots: list[PlanNode]) -> None:
        try:
            for root in roots:
                if root.work:
                    self.expand(root)
            while self.inflight:
                token, outcome, error = self.done.get()
                task = self.inflight.pop(token)
                self._read_marker(task)
                if error is not None and isinstance(error, BrokenExecutor):
                    self._broken(task, error)
                else:
                    self._finished(task, _merge(self.runner, task.chain, outcome, error))
                self._settle_breaks()
        except BaseException:
            for task in self.inflight.values():
                cancel = getattr(task.handle, "cancel", None)
                if callable(cancel):
                    cancel()
            raise

    def close(self) -> None:
        for executor in self.owned:
            executor.shutdown(wait=True, cancel_futures=True)
        shutil.rmtree(self.markers, ignore_errors=True)

    def expand(self, start: PlanNode) -> None:
        stack = [start]
        while stack:
            node = stack.pop()
            if node.stored and not node.pending:
                # Nothing to compute here: only tags to add; go on below.
                if node.new_tags:
                    self.runner.store.update_notes(node.sha, tags=node.new_tags)
                stack.extend(child for child in reversed(node.children) if child.work)
                continue
            self.submit(segment(node))

    def submit(self, chain: list[PlanNode]) -> None:
        token = next(self.tokens)
        task = _Task(token, chain, self.executor)
        try:
            task.handle = self.executor.submit(
                run_segment, _task(self.runner, self.spec, chain, self._marker(token))
            )
        except BrokenExecutor as error:  # broken before this task could be queued
            self._break_of(task.executor, error).unstarted.append(task)
            return
        self.inflight[token] = task
        threading.Thread(target=_await, args=(token, task.handle, self.done), daemon=True).start()

    def _finished(self, task: _Task, last_ok: bool) -> None:
        if self.runner.report.failures and not self.runner.keep_going:
            self.stopping = True
        if last_ok and not self.stopping:
            for child in task.chain[-1].children:
                if child.work:
                    self.expand(child)

    # -- a broken executor ---------------------------------------------------------------------

    def _marker(self, token: int) -> str:
        return str(self.markers / f"task-{token}")

    def _read_marker(self, task: _Task) -> None:
        with contextlib.suppress(OSError, ValueError):
            pid = Path(self._marker(task.token)).read_text().split("\n", 1)[0]
            self.worker_pids.add(int(pid))

    def _break_of(self, executor: Any, error: BaseException) -> _Break:
        found = self.breaks.get(id(executor))
        if found is None:
            found = self.breaks[id(executor)] = _Break(error)
        return found

    def _broken(self, task: _Task, error: BaseException) -> None:
        record = self._break_of(task.executor, error)
        started = os.path.exists(self._marker(task.token))
        (record.started if started else record.unstarted).append(task)

    def _settle_breaks(self) -> None:
        """Resolve each broken executor once no task of it is in flight any more."""
        for key, record in list(self.breaks.items()):
            executor = next((task.executor for task in [*record.started, *record.unstarted]), None)
            if any(id(task.executor) == key for task in self.inflight.values()):
                continue
            del self.breaks[key]
            # Every process of the pool has ended once it is shut down: the tasks it
            # terminated have written so in their markers by then.
            if executor is not None:
                with contextlib.suppress(Exception):
                    executor.shutdown(wait=True)
            self._resolve(executor, record)

    def _resolve(self, executor: Any, record: _Break) -> None:
        terminated = [task for task in record.started if self._was_terminated(task)]
        culprits = [task for task in record.started if task not in terminated]
        innocent = record.unstarted + terminated
        if len(culprits) == 1:
            self._blame(culprits[0], record.error)
        else:
            # None (the worker left without a trace) or several (several workers died at
            # once): dagger cannot tell which branch did it, so it blames none of them.
            innocent += culprits
        replacement = self._replacement(executor)
        for task in innocent:
            if replacement is None or self.stopping:
                self._not_attempted(task, record.error, len(culprits))
            else:
                self._resubmit(task)

    def _was_terminated(self, task: _Task) -> bool:
        try:
            return _TERMINATED in Path(self._marker(task.token)).read_text()
        except OSError:
            return False

    def _replacement(self, executor: Any) -> Any:
        """The executor to resubmit on: a new process pool in place of a broken one that
        dagger knows how to rebuild, the current one if it still works, else None."""
        if executor is not self.executor:
            return self.executor
        if type(executor) is not ProcessPoolExecutor:
            return None
        # As many processes as the broken pool was seen to run (its size is not public).
        replacement = ProcessPoolExecutor(max_workers=max(1, len(self.worker_pids)))
        self.owned.append(replacement)
        self.executor = replacement
        return replacement

    def _resubmit(self, task: _Task) -> None:
        """Submit a task's chain again, from its first state not stored yet."""
        runner = self.runner
        remaining = list(task.chain)
        while remaining and runner.store.has_record(remaining[0].sha):
            node = remaining.pop(0)
            if not node.stored:  # stored by the task before its pool broke
                node.stored = True
                runner.report.computed += 1
                runner.report.computed_ids.append(node.sha)
                runner.tick()
        if remaining:
            self.submit(remaining)
        else:
            self._finished(task, True)

    def _blame(self, task: _Task, error: BaseException) -> None:
        marker = ""
        with contextlib.suppress(OSError):
            marker = Path(self._marker(task.token)).read_text()
        pid, _, dump = marker.partition("\n")
        cause = (
            f"its worker process{f' (pid {pid})' if pid else ''} died while computing it, "
            "without a Python exception: it was killed by a signal (the out-of-memory killer "
            "sends SIGKILL), called os._exit(), or crashed in native code"
        )
        if dump.strip():
            cause += f". Its last words:\n{dump.strip()}"
        self._finished(task, _merge(self.runner, task.chain, None, error, cause=cause))

    def _not_attempted(self, task: _Task, error: BaseException, suspects: int) -> None:
        runner = self.runner
        chain = task.chain
        states = sum(1 for node in chain if not node.stored) + chain[-1].size() - 1
        runner.report.not_attempted += states
        runner.tick(sum(1 for node in chain if not node.stored))
        why = (
            "one of the branches running beside it killed its worker process"
            if suspects != 1
            else "another branch killed its worker process"
        )
        logger_message = (
            f"{states} state(s) from {chain[0].sha[:12]} ({chain[0].describe()}) were not "
            f"attempted: {why} and the executor ({type(error).__name__}) could not be "
            "replaced. They are not failed: run again to compute them."
        )
        _log.warning(logger_message)


def _task(
    runner: Runner, store_spec: dict[str, Any], chain: list[PlanNode], marker: str | None = None
) -> bytes:
    """The bytes a worker needs to compute a segment (classes of __main__ by value)."""
    shas = {node.sha for node in chain}
    spec = {
        "store": store_spec,
        "state_class": runner.state_class,
        "keep_going": runner.keep_going,
        "check_read_only": runner.check_read_only,
        "git": runner.git_facts(),
        "failed_before": sorted(sha for sha in runner.failed_before if sha in shas),
        "segment": to_wire(chain),
        "marker": marker,
    }
    data, _, _ = dumps_payload(spec, None, what="The task sent to the executor")
    return data


def _merge(
    runner: Runner,
    chain: list[PlanNode],
    outcome: Any,
    error: BaseException | None,
    cause: str | None = None,
) -> bool:
    """Fold a finished task into the report; True if its last state is stored.

    Args:
        runner: The coordinator's runner (its report and store).
        chain: The task's segment.
        outcome: What :func:`run_segment` returned (None if the task itself failed).
        error: Why the task itself failed (its worker died, was lost, ...).
        cause: What is known of that failure beyond ``error`` (a dead worker's exit cause).
    """
    report = runner.report
    if error is not None:
        # The worker itself failed (killed, out of memory, lost): what it stored stays; the
        # failure belongs to the first state of the segment it did not store.
        for node in chain:
            if node.stored or not runner.store.has_record(node.sha):
                if not node.stored:
                    break
                continue
            node.stored = True
            report.computed += 1
            report.computed_ids.append(node.sha)
        else:
            return True
        failure = Failure(
            state_id=node.sha,
            recipe=node.describe(),
            error_type=type(error).__name__,
            message=(
                f"{cause} (the executor said: {error})"
                if cause
                else f"the worker computing this branch failed: {error}"
            ),
            traceback="".join(traceback.format_exception(error)),
            exception=error,
        )
        with contextlib.suppress(Exception):  # a store the coordinator cannot write to
            runner.store.write_failure(
                StateRecord(
                    id=node.sha,
                    parent=node.parent.sha if node.parent else None,
                    root=node.is_root,
                    recipe=node.info,
                    tags=tuple(node.tags),
                    created=now(),
                    status=Status.FAILED,
                    error=failure.error_info(),
                )
            )
        report.failures.append(failure)
        report.failed += 1
        report.skipped += node.size() - 1
        runner.tick()
        return False
    report.computed += len(outcome["computed"])
    report.computed_ids.extend(outcome["computed"])
    report.failed += outcome["failed"]
    report.skipped += outcome["skipped"]
    report.functions += outcome["functions"]
    report.function_failures += outcome.get("function_failures", 0)
    report.cached += outcome["cached"]
    report.failures.extend(outcome["failures"])
    report.mutated += len(outcome["mutations"])
    report.mutations.extend(outcome["mutations"])
    runner.tick(len(outcome["computed"]) + outcome["failed"] + outcome["functions"])
    for sha, recipe, seconds in outcome.get("lines", ()):
        runner.progress.computed(sha, recipe, seconds)
    return bool(outcome["last_ok"])


def _await(
    token: int, handle: Any, done: queue.Queue[tuple[int, Any, BaseException | None]]
) -> None:
    """Wait for a task in a thread (futures of every kind have a blocking ``result()``)."""
    try:
        done.put((token, handle.result(), None))
    except BaseException as error:
        done.put((token, None, error))


def run_segment(spec_bytes: bytes) -> dict[str, Any]:
    """Worker entry point: compute one segment into the store; return what happened.

    Runs in the worker process (a pool process, a dask worker, a Slurm job). The segment's
    parent is loaded from the store; each state is computed under its lock, so a state that
    another process is computing is waited for, then used.
    """
    spec = loads_payload(spec_bytes)
    with _marked(spec.get("marker")):
        return _run_segment(spec)


def _run_segment(spec: dict[str, Any]) -> dict[str, Any]:
    store = open_store(spec["store"])
    state_class: type[ExperimentState] = spec["state_class"]
    runner = Runner(
        store,
        state_class,
        StoreOwner(store, state_class),
        keep_going=spec["keep_going"],
        progress=False,
        failed_before=set(spec["failed_before"]),
        check_read_only=spec["check_read_only"],
        git=spec.get("git"),
    )
    parent, chain = from_wire(spec["segment"])
    held = None
    if parent is not None:
        held = Held(runner, parent, None)
        held.consumers = 1
    try:
        runner.walk(chain[0], held)
    except Stop:
        pass
    finally:
        store.flush()  # what the coordinator is told is stored is durable
    failed = {failure.state_id for failure in runner.report.failures if not failure.function}
    shas = {node.sha for node in chain}
    last_ok = not failed & shas and (chain[-1].stored or chain[-1].sha in runner.saved)
    # States below the segment were not part of this task: count them as skipped if the
    # failure cut them off.
    skipped = runner.report.skipped + (0 if last_ok else spec["segment"]["below"])
    return {
        "computed": runner.report.computed_ids,
        "failed": runner.report.failed,
        "skipped": skipped,
        "functions": runner.report.functions,
        "function_failures": runner.report.function_failures,
        "cached": runner.report.cached,
        "failures": runner.report.failures,
        "mutations": runner.report.mutations,
        "last_ok": last_ok,
        "lines": runner.computed_lines,
    }


@contextlib.contextmanager
def _marked(marker: str | None) -> Any:
    """Mark, in the task's own file, that this worker started it (its pid), where a crash
    dumps its Python stack (faulthandler), and whether the executor terminated this process
    (SIGTERM, as a broken ``ProcessPoolExecutor`` does to its other workers).

    The file lives on the coordinator's machine; a worker elsewhere (a dask or Slurm node)
    does not see its folder and marks nothing. A SIGTERM handler someone else installed (a
    Slurm helper that checkpoints) is left alone, and so is a worker thread that is not the
    main one (signals cannot be handled there).
    """
    if not marker or not os.path.isdir(os.path.dirname(marker)):
        yield
        return
    with open(marker, "w", buffering=1) as handle:
        handle.write(f"{os.getpid()}\n")
        handle.flush()
        main = threading.current_thread() is threading.main_thread()
        was_enabled = faulthandler.is_enabled()
        if main:  # faulthandler is per process: a worker thread must not take it over
            faulthandler.enable(file=handle)
        previous = None
        if main:
            with contextlib.suppress(ValueError, OSError):
                if signal.getsignal(signal.SIGTERM) is signal.SIG_DFL:

                    def terminated(signum: int, frame: Any) -> None:
                        handle.write(f"{_TERMINATED}\n")
                        handle.flush()
                        signal.signal(signal.SIGTERM, signal.SIG_DFL)
                        os.kill(os.getpid(), signal.SIGTERM)

                    previous = signal.signal(signal.SIGTERM, terminated)
        try:
            yield
        finally:
            if previous is not None:
                signal.signal(signal.SIGTERM, previous)
            if main:
                faulthandler.disable()
                if was_enabled:
                    faulthandler.enable()
