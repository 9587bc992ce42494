"""Scale benchmarks (issue 15): 100,000-state trees, cold runs against joblib.Memory, disk.

    python benchmarks/bench_scale.py [--states 100001] [--small 10001] [--cold 10000]
                                     [--repeat 3]

Each phase runs in a fresh process (imports done, then timed); each figure is the median of
``--repeat`` runs. Targets:

* 100,001-state tree (root, 316 branches, leaves): defining it and a cached rerun together
  <= 2 s; ``Experiment.restore(d).graph`` <= 1 s; ``tree.nodes.to_dataframe()`` <= 1 s
  (pandas imported beforehand, as a notebook has it); restore at 100k / restore at 10k <= 12
  (linear: 10x the states in at most 12x the time);
* cold run of 10,000 trivial states with ``durability="fast"`` <= 1.0x joblib.Memory's cold
  run of 10,000 trivial cached calls (``pip install -e ".[bench]"``), same machine, same run;
* the same cold run with the default durability (group commit) <= 1.0x the per-file fsync
  floor of ``bench_core.py`` (a loop that writes each state's pickle and record to a temp
  file, fsyncs, renames and fsyncs the folder);
* disk per trivial state at 100,001 states <= 1 KB, as ``du`` counts it (allocated blocks);
* reading ``index.json`` at 100,001 states as a cached rerun does (the ids and the few
  columns it reads; the rest is decoded when a restore reads it) <= 0.5x reading all of it
  as a restore does (every section decoded), in one fresh process.

Absolute seconds are printed next to the ratios; the README's table records them for the
2-core machine the project runs on.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from bench_core import floor_cold
from common import report, run_phase


def phase(args: argparse.Namespace) -> None:
    """One measurement in this (fresh) process; prints one JSON line."""
    import scale_tree

    import dagger as dg

    directory = Path(args.directory)
    out: dict[str, float | int] = {}
    if args.phase == "build":
        exp = scale_tree.two_levels(directory, args.states)
        out["computed"] = exp.run(progress=False).computed
    elif args.phase == "rerun":
        started = time.perf_counter()
        exp = scale_tree.two_levels(directory, args.states)
        defined = time.perf_counter()
        result = exp.run(progress=False)
        out.update(define=defined - started, rerun=time.perf_counter() - defined)
        out["seconds"] = time.perf_counter() - started
        assert result.computed == 0 and result.cached == args.states, result
    elif args.phase == "restore":
        import pandas  # noqa: F401 (a notebook has it imported; its import is not the table)

        started = time.perf_counter()
        tree = dg.Experiment.restore(directory, scale_tree.Trivial).graph
        restored = time.perf_counter()
        frame = tree.nodes.to_dataframe()
        out.update(seconds=restored - started, dataframe=time.perf_counter() - restored)
        assert len(tree) == args.states and len(frame) == args.states
    elif args.phase == "index":
        out.update(index_read(directory))
    elif args.phase == "cold":
        started = time.perf_counter()
        exp = scale_tree.wide(directory, args.states, args.durability)
        result = exp.run(progress=False)
        out["seconds"] = time.perf_counter() - started
        assert result.computed == args.states
    elif args.phase == "joblib":
        import joblib

        memory = joblib.Memory(str(directory), verbose=0)
        cached = memory.cache(scale_tree.trivial)
        started = time.perf_counter()
        for index in range(args.states):
            cached(index)
        out["seconds"] = time.perf_counter() - started
    print(json.dumps(out))


#: The catalog columns a cached rerun reads (statuses, the payload check, tags, results).
RERUN_COLUMNS = ("rseq", "fseq", "mseq", "mark", "pkind", "blobs", "rlog")
RERUN_COLUMNS += ("rtags", "ntags", "nseq", "results")


def index_read(directory: Path) -> dict[str, float]:
    """Seconds to read ``index.json`` as a cached rerun does (the ids, the columns it reads),
    and the floor: reading all of it, as a restore does (every section decoded)."""
    from dagger.store.index import read_index

    def read(columns: tuple[str, ...] | None) -> float:
        started = time.perf_counter()
        found = read_index(directory, directory / "log")
        assert found is not None, "no current index"
        catalog = found[0]
        if columns is None:
            catalog.decode_all()
        for name in columns or ():
            getattr(catalog, name)
        return time.perf_counter() - started

    # The least disturbed of three reads each, alternated (this machine is shared).
    pairs = [(read(RERUN_COLUMNS), read(None)) for _ in range(3)]
    return {"seconds": min(pair[0] for pair in pairs), "floor": min(pair[1] for pair in pairs)}


def du(path: Path) -> int:
    """Bytes allocated on disk under ``path`` (blocks, as ``du`` counts them)."""
    total = 0
    for parent, _, names in os.walk(path):
        for name in [*names, "."]:
            total += os.lstat(os.path.join(parent, name)).st_blocks * 512
    return total


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--states", type=int, default=100_001)
    parser.add_argument("--small", type=int, default=10_001)
    parser.add_argument("--cold", type=int, default=10_000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--phase")
    parser.add_argument("--directory")
    parser.add_argument("--durability", default="fast")
    args = parser.parse_args()
    if args.phase:
        phase(args)
        return 0

    script = Path(__file__)

    def measure(
        name: str, directory: Path, states: int, *, fresh: bool = False, **extra: str
    ) -> list[dict]:
        """``--repeat`` runs of a phase; ``fresh``: each in a new folder (a cold run)."""
        options = [f"--{key}={value}" for key, value in extra.items()]
        return [
            run_phase(
                script,
                "--phase",
                name,
                "--directory",
                str(directory / f"run-{attempt}" if fresh else directory),
                "--states",
                str(states),
                *options,
            )
            for attempt in range(args.repeat)
        ]

    def median(runs: list[dict], key: str = "seconds") -> float:
        return statistics.median(run[key] for run in runs)

    rows = []
    with tempfile.TemporaryDirectory(dir=os.environ.get("DAGGER_BENCH_DIR")) as scratch:
        scratch_dir = Path(scratch)
        big, small = scratch_dir / "big", scratch_dir / "small"
        run_phase(script, "--phase", "build", "--directory", str(big), "--states", str(args.states))
        run_phase(
            script, "--phase", "build", "--directory", str(small), "--states", str(args.small)
        )

        reruns = measure("rerun", big, args.states)
        rows.append(
            row(
                f"define + cached rerun, {args.states} states (s)",
                median(reruns),
                1.0,
                2.0,
                note=f"define {median(reruns, 'define'):.2f} s + rerun {median(reruns, 'rerun'):.2f} s",
            )
        )
        restores = measure("restore", big, args.states)
        small_restores = measure("restore", small, args.small)
        rows.append(row(f"restore, {args.states} states (s)", median(restores), 1.0, 1.0))
        rows.append(
            row(
                f"tree.nodes.to_dataframe(), {args.states} states (s)",
                median(restores, "dataframe"),
                1.0,
                1.0,
            )
        )
        rows.append(
            row(
                f"restore {args.states} / restore {args.small} (linear: <= 12)",
                median(restores),
                median(small_restores),
                12.0,
            )
        )
        indexes = measure("index", big, args.states)
        rows.append(
            row(
                f"read index.json as a rerun does, {args.states} states (s) vs all",
                median(indexes),
                median(indexes, "floor"),
                0.5,
            )
        )
        disk = du(big)
        rows.append(
            row("disk per trivial state, bytes (du, blocks)", disk / args.states, 1.0, 1024.0)
        )

        cold_fast = measure(
            "cold", scratch_dir / "cold-fast", args.cold, fresh=True, durability="fast"
        )
        jl = measure("joblib", scratch_dir / "joblib", args.cold, fresh=True)
        rows.append(
            row(
                f"cold run, {args.cold} trivial states, fast (s) vs joblib.Memory",
                median(cold_fast),
                median(jl),
                1.0,
            )
        )
        cold_safe = measure(
            "cold", scratch_dir / "cold-safe", args.cold, fresh=True, durability="safe"
        )
        floors = []
        for attempt in range(args.repeat):
            folder = scratch_dir / f"floor-{attempt}"
            floors.append(floor_cold(folder, args.cold))
            shutil.rmtree(folder)
        rows.append(
            row(
                f"cold run, {args.cold} trivial states, safe (s) vs per-file fsync floor",
                median(cold_safe),
                statistics.median(floors),
                1.0,
            )
        )
    ok = report("scale", rows)
    for item in rows:
        if item.get("note"):
            print(f"{item['measure']}: {item['note']}")
    return 0 if ok else 1


def row(measure: str, value: float, floor: float, limit: float | None, note: str = "") -> dict:
    """A table row; with ``floor=1.0`` the ratio is the value itself (an absolute target)."""
    return {
        "measure": measure,
        "value": value,
        "floor": floor,
        "ratio": value / floor,
        "limit": limit,
        "note": note,
    }


if __name__ == "__main__":
    sys.exit(main())
