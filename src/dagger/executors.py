"""Shipping chains of states to a ``concurrent.futures``-style executor.

The plan is cut into *segments*: chains of states that must be computed one after the other,
ending where the tree branches (:func:`dagger.plan.segment`). Each segment is a task: a worker
opens the store, loads the segment's parent, computes the chain, stores it and returns what it
did; when a segment is done, the coordinator dispatches the segments below it. Any executor
with ``submit(fn, *args)`` returning a future with a blocking ``result()`` works: a process
pool, a ``dask.distributed`` client, a ``submitit`` executor.

A worker receives everything as data (the store's location, the state class, the segment's
nodes, recipes by value through cloudpickle) and imports nothing above the runner.
"""

from __future__ import annotations

import queue
import threading
import traceback
from typing import Any

from .errors import ExperimentDefinitionError
from .loading import StoreOwner
from .plan import PlanNode, from_wire, segment, to_wire
from .runner import Failure, Held, Runner, Stop
from .state import ExperimentState
from .store import open_store
from .store.payload import dumps_payload, loads_payload

__all__ = ["dispatch", "run_segment"]


def dispatch(runner: Runner, roots: list[PlanNode], executor: Any) -> None:
    """Run a surveyed plan as segment tasks on ``executor``; dispatch below each finished one.

    Raises:
        ExperimentDefinitionError: The store cannot be reached from another process.
    """
    spec = runner.store.worker_spec()
    if spec is None:
        raise ExperimentDefinitionError(
            f"The store {runner.store.location} lives in this process's memory; an executor's "
            "workers cannot reach it. Run without an executor, or use a directory."
        )
    done: queue.Queue[tuple[int, Any, BaseException | None]] = queue.Queue()
    inflight: dict[int, tuple[list[PlanNode], Any]] = {}
    counter = iter(range(1 << 62))

    def expand(start: PlanNode) -> None:
        stack = [start]
        while stack:
            node = stack.pop()
            if node.stored and not node.pending:
                # Nothing to compute here: only tags to add; go on below.
                if node.new_tags:
                    runner.store.update_notes(node.sha, tags=node.new_tags)
                stack.extend(child for child in reversed(node.children) if child.work)
                continue
            chain = segment(node)
            token = next(counter)
            handle = executor.submit(run_segment, _task(runner, spec, chain))
            inflight[token] = (chain, handle)
            threading.Thread(target=_await, args=(token, handle, done), daemon=True).start()

    stopping = False
    try:
        for root in roots:
            if root.work:
                expand(root)
        while inflight:
            token, outcome, error = done.get()
            chain, _ = inflight.pop(token)
            last_ok = _merge(runner, chain, outcome, error)
            if runner.report.failures and not runner.keep_going:
                stopping = True
            if last_ok and not stopping:
                for child in chain[-1].children:
                    if child.work:
                        expand(child)
    except BaseException:
        for _, handle in inflight.values():
            cancel = getattr(handle, "cancel", None)
            if callable(cancel):
                cancel()
        raise


def _task(runner: Runner, store_spec: dict[str, Any], chain: list[PlanNode]) -> bytes:
    """The bytes a worker needs to compute a segment (classes of __main__ by value)."""
    shas = {node.sha for node in chain}
    spec = {
        "store": store_spec,
        "state_class": runner.state_class,
        "keep_going": runner.keep_going,
        "failed_before": sorted(sha for sha in runner.failed_before if sha in shas),
        "segment": to_wire(chain),
    }
    data, _, _ = dumps_payload(spec, None)
    return data


def _merge(
    runner: Runner, chain: list[PlanNode], outcome: Any, error: BaseException | None
) -> bool:
    """Fold a finished task into the report; True if its last state is stored."""
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
            message=f"the worker computing this branch failed: {error}",
            traceback="".join(traceback.format_exception(error)),
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
    report.cached += outcome["cached"]
    report.failures.extend(outcome["failures"])
    runner.tick(len(outcome["computed"]) + outcome["failed"] + outcome["functions"])
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
    store = open_store(spec["store"])
    state_class: type[ExperimentState] = spec["state_class"]
    runner = Runner(
        store,
        state_class,
        StoreOwner(store, state_class),
        keep_going=spec["keep_going"],
        progress=False,
        failed_before=set(spec["failed_before"]),
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
        "cached": runner.report.cached,
        "failures": runner.report.failures,
        "last_ok": last_ok,
    }
