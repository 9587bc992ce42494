"""Executor benchmarks (issue 4).

    python benchmarks/bench_executors.py [--branches 8] [--seconds 1.0]

* 8 independent CPU-bound branches of about 1 s each on a 2-process pool: wall <= 0.6x the
  in-process run of the same tree (a fresh store each time);
* per-subtree dispatch overhead on a dask ``LocalCluster`` (2 worker processes): the wall time
  of N trivial branches through dask, minus the same run in-process, per branch (reported).
"""

from __future__ import annotations

import argparse
import logging
import multiprocessing
import os
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import dagger as dg

sys.path.insert(0, str(Path(__file__).parent))
from common import report


class Empty(dg.ExperimentState):
    PROPERTIES = ["seed"]

    def initialize_state(self, **arguments):
        self.done = []


class Busy(dg.Recipe):
    """About ``seconds`` of pure-Python CPU work (one core, holding the GIL)."""

    def __init__(self, index, seconds):
        self.index, self.seconds = index, seconds

    def run(self, state):
        started = time.process_time()
        total = 0
        while time.process_time() - started < self.seconds:
            for value in range(10_000):
                total += value * self.index
        state.done = [*state.done, self.index]
        return state


def build(directory: Path, branches: int, seconds: float) -> dg.Experiment:
    exp = dg.Experiment(directory, Empty)
    root = exp.spawn_new_tree(seed=0)
    for index in range(branches):
        Busy(index, seconds)(root)
    return exp


def timed_run(directory: Path, branches: int, seconds: float, executor=None) -> float:
    exp = build(directory, branches, seconds)
    started = time.perf_counter()
    result = exp.run(progress=False, executor=executor)
    elapsed = time.perf_counter() - started
    assert result.computed == branches + 1, result
    return elapsed


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--branches", type=int, default=8)
    parser.add_argument("--seconds", type=float, default=1.0)
    parser.add_argument("--trivial", type=int, default=40)
    parser.add_argument("--repeat", type=int, default=2)
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory(dir=os.environ.get("DAGGER_BENCH_DIR")) as scratch:
        scratch_dir = Path(scratch)
        local, pooled = [], []
        context = multiprocessing.get_context("spawn")
        with ProcessPoolExecutor(2, mp_context=context) as pool:
            pool.submit(sum, [1]).result()  # start the workers before timing
            for attempt in range(args.repeat):
                local.append(
                    timed_run(scratch_dir / f"local{attempt}", args.branches, args.seconds)
                )
                pooled.append(
                    timed_run(scratch_dir / f"pool{attempt}", args.branches, args.seconds, pool)
                )
        rows.append(
            {
                "measure": f"{args.branches} CPU-bound branches of {args.seconds:g} s, 2-process pool (s)",
                "value": min(pooled),
                "floor": min(local),
                "ratio": min(pooled) / min(local),
                "limit": 0.6,
            }
        )

        import distributed

        logging.getLogger("distributed").setLevel(logging.ERROR)
        with (
            distributed.LocalCluster(
                n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None
            ) as cluster,
            distributed.Client(cluster) as client,
        ):
            client.submit(sum, [1]).result()
            dask_times, local_times = [], []
            for attempt in range(args.repeat):
                local_times.append(timed_run(scratch_dir / f"tl{attempt}", args.trivial, 0.0))
                dask_times.append(
                    timed_run(scratch_dir / f"td{attempt}", args.trivial, 0.0, client)
                )
        per_branch = (min(dask_times) - min(local_times)) / args.trivial
        rows.append(
            {
                "measure": f"dask LocalCluster, {args.trivial} trivial branches (s)",
                "value": min(dask_times),
                "floor": min(local_times),
                "ratio": min(dask_times) / min(local_times),
                "limit": None,
            }
        )
        print(f"dask dispatch overhead per subtree: {per_branch * 1000:.1f} ms")
    ok = report("executors", rows)
    print(f"dask dispatch overhead per subtree: {per_branch * 1000:.1f} ms")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
