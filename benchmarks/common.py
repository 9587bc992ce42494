"""Shared helpers for the benchmarks: timing, subprocess phases, result tables.

Every benchmark reports a *ratio* to a floor measured in the same run on the same machine, so
that a noisy or slow machine does not change the verdict. Each figure is the best of a few
repetitions (the least disturbed one).
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

HERE = Path(__file__).parent
RESULTS = HERE / "results"


def best_of(repeat: int, action: Callable[[], float | None]) -> float:
    """Best wall time of ``repeat`` calls; ``action`` may return its own measured seconds."""
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        measured = action()
        times.append(measured if measured is not None else time.perf_counter() - started)
    return min(times)


def run_phase(script: Path, *args: str) -> dict:
    """Run ``script --phase ...`` in a fresh interpreter; it prints one JSON line last."""
    # dagger as installed (`pip install -e .`); the benchmark's own modules (common, scale_tree)
    # sit beside the script, which Python puts first on sys.path.
    output = subprocess.run(
        [sys.executable, str(script), *args], capture_output=True, text=True, check=False
    )
    if output.returncode != 0:
        raise RuntimeError(f"{script.name} {' '.join(args)} failed:\n{output.stderr}")
    return json.loads(output.stdout.strip().splitlines()[-1])


def report(name: str, rows: list[dict]) -> bool:
    """Print a table of rows (name, value, floor, ratio, limit) and save it; True if all pass."""
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / f"{name}.json").write_text(json.dumps(rows, indent=1))
    ok = True
    print(f"\n{name}")
    print(f"| {'measure':<58} | {'dagger':>10} | {'floor':>10} | {'ratio':>6} | {'limit':>6} |")
    print(f"|{'-' * 60}|{'-' * 12}|{'-' * 12}|{'-' * 8}|{'-' * 8}|")
    for row in rows:
        limit = row.get("limit")
        passed = limit is None or row["ratio"] <= limit
        ok &= passed
        mark = "" if passed else "  FAIL"
        print(
            f"| {row['measure']:<58} | {row['value']:>10.4g} | {row['floor']:>10.4g} "
            f"| {row['ratio']:>6.3f} | {limit if limit is not None else '-':>6} |{mark}"
        )
    return ok
