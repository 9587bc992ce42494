"""Core benchmarks (issue 2): cold run, rerun in a fresh process, and restore.

    python benchmarks/bench_core.py [--states 10000] [--small 1000]

Targets, each a ratio to a floor measured in the same run:

* cold run of a wide tree of trivial states <= 1.3x a plain loop that hashes, dill-dumps and
  json-dumps each state with the same durability (temp file, fsync, rename, folder fsync);
* rerun of that tree, everything stored, in a fresh process <= 3x a loop of hash +
  ``os.path.exists`` per state, at 1,000 and at 10,000 states (so: linear);
* ``Experiment.restore`` of it <= 1x a loop of glob + ``json.load`` over the same records
  (one JSON file per state, as the floor loop of the cold run writes them).
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import dill

import dagger as dg
from dagger.hashing import digest

sys.path.insert(0, str(Path(__file__).parent))
from common import best_of, report, run_phase


class TrivialState(dg.ExperimentState):
    PROPERTIES = ["seed"]

    def initialize_state(self, **arguments):
        self.value = 0


class Step(dg.Recipe):
    def __init__(self, index):
        self.index = index

    def run(self, state):
        state.value = self.index
        return state


def build(directory: Path, states: int, durability: str = "safe") -> dg.Experiment:
    exp = dg.Experiment(directory, TrivialState, durability=durability)
    root = exp.spawn_new_tree(seed=0)
    for index in range(states - 1):
        Step(index)(root)
    return exp


# -- floors ------------------------------------------------------------------------------------


def _write_durably(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    try:
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)


def floor_cold(directory: Path, states: int) -> float:
    """Hash, dill-dump and json-dump each state, each file temp + fsync + rename."""
    folder = directory / "states"
    folder.mkdir(parents=True)
    state = TrivialState()
    state.value = 0
    started = time.perf_counter()
    root_id = digest("root", "TrivialState", {"seed": 0})
    for index in range(states):
        sha = digest("child", root_id, "Step", {"index": index})
        state.value = index
        _write_durably(folder / f"{sha}.pkl", dill.dumps(state))
        record = {"id": sha, "parent": root_id, "recipe": {"index": index}, "tags": []}
        _write_durably(folder / f"{sha}.json", json.dumps(record).encode())
        dir_fd = os.open(folder, os.O_RDONLY)
        os.fsync(dir_fd)
        os.close(dir_fd)
    return time.perf_counter() - started


def floor_rerun(directory: Path, states: int) -> float:
    """Hash + os.path.exists per state."""
    folder = directory / "states"
    started = time.perf_counter()
    root_id = digest("root", "TrivialState", {"seed": 0})
    found = 0
    for index in range(states):
        sha = digest("child", root_id, "Step", {"index": index})
        found += os.path.exists(folder / f"{sha}.json")
    return time.perf_counter() - started


def floor_restore(directory: Path) -> float:
    """glob + json.load over every record (the files floor_cold wrote)."""
    started = time.perf_counter()
    records = []
    for path in glob.glob(str(directory / "states" / "*.json")):
        with open(path) as handle:
            records.append(json.load(handle))
    return time.perf_counter() - started


# -- phases run in fresh processes ---------------------------------------------------------------


def phase(args: argparse.Namespace) -> None:
    directory = Path(args.directory)
    if args.phase == "rerun":
        started = time.perf_counter()
        exp = build(directory, args.states)
        result = exp.run(progress=False)
        seconds = time.perf_counter() - started
        assert result.computed == 0 and result.cached == args.states, result
    elif args.phase == "floor-rerun":
        seconds = floor_rerun(directory, args.states)
    elif args.phase == "restore":
        started = time.perf_counter()
        exp = dg.Experiment.restore(directory, TrivialState)
        seconds = time.perf_counter() - started
        assert len(exp.graph) == args.states
    elif args.phase == "floor-restore":
        seconds = floor_restore(directory)
    print(json.dumps({"seconds": seconds}))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--states", type=int, default=10_000)
    parser.add_argument("--small", type=int, default=1_000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--phase")
    parser.add_argument("--directory")
    args = parser.parse_args()
    if args.phase:
        phase(args)
        return 0

    script = Path(__file__)
    rows = []
    with tempfile.TemporaryDirectory(dir=os.environ.get("DAGGER_BENCH_DIR")) as scratch:
        scratch_dir = Path(scratch)
        stores = {}
        floor_dirs: dict[int, Path] = {}
        for states in sorted({args.small, args.states}):
            cold_runs, floors = [], []
            for attempt in range(args.repeat if states == args.states else 1):
                store = scratch_dir / f"dagger-{states}-{attempt}"
                exp = build(store, states)
                started = time.perf_counter()
                exp.run(progress=False)
                cold_runs.append(time.perf_counter() - started)
                floor_dir = scratch_dir / f"floor-{states}-{attempt}"
                floors.append(floor_cold(floor_dir, states))
                floor_dirs[states] = floor_dir  # its record files are the restore floor's
                stores[states] = store
            if states == args.states:
                rows.append(
                    row(f"cold run, {states} trivial states (s)", min(cold_runs), min(floors), 1.3)
                )

        def timed(phase_name: str, states: int) -> float:
            folder = floor_dirs[states] if phase_name == "floor-restore" else stores[states]

            def once() -> float:
                return run_phase(
                    script,
                    "--phase",
                    phase_name,
                    "--directory",
                    str(folder),
                    "--states",
                    str(states),
                )["seconds"]

            return best_of(args.repeat, once)

        for states in sorted({args.small, args.states}):
            value, floor = timed("rerun", states), timed("floor-rerun", states)
            rows.append(
                row(f"rerun, all stored, fresh process, {states} states (s)", value, floor, 3.0)
            )
        value, floor = timed("restore", args.states), timed("floor-restore", args.states)
        rows.append(row(f"restore, {args.states} states, fresh process (s)", value, floor, 1.0))
    return 0 if report("core", rows) else 1


def row(measure: str, value: float, floor: float, limit: float | None) -> dict:
    return {
        "measure": measure,
        "value": value,
        "floor": floor,
        "ratio": value / floor,
        "limit": limit,
    }


if __name__ == "__main__":
    sys.exit(main())
