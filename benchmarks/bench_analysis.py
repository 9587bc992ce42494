"""Analysis benchmark (issue 5): restoring and tabulating a tree reads no weights.

    python benchmarks/bench_analysis.py [--states 6] [--megabytes 100]

A tree whose states each hold ``--megabytes`` of tensors (distinct content, so the blobs total
states x megabytes) is restored in a fresh process and turned into a DataFrame. The bytes that
process reads (``rchar`` of /proc/self/io, imports done beforehand) are compared with the size
of the slim records on disk: the target is <= 1.5x the records, i.e. no weights at all.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path

import dagger as dg

sys.path.insert(0, str(Path(__file__).parent))
from common import report, run_phase


class Heavy(dg.ExperimentState):
    PROPERTIES = ["megabytes"]

    def initialize_state(self, **arguments):
        import torch

        self.weights = torch.randn(self.megabytes * (1 << 20) // 4)


class Perturb(dg.Recipe):
    def __init__(self, step):
        self.step = step

    def run(self, state):
        state.weights = state.weights + self.step
        return state


def accuracy(state):
    return {"accuracy": float(state.weights[:1000].mean()), "step": len(state.weights)}


def read_bytes() -> int:
    with open("/proc/self/io") as handle:
        for line in handle:
            if line.startswith("rchar:"):
                return int(line.split()[1])
    raise RuntimeError("no /proc/self/io")


def phase(directory: str) -> None:
    import pandas  # noqa: F401  (imports are not the experiment's bytes)

    before = read_bytes()
    tree = dg.Experiment.restore(directory, Heavy).graph
    frame = tree.nodes.to_dataframe()
    after = read_bytes()
    assert frame["result.accuracy.accuracy"].notna().all()
    print(json.dumps({"read": after - before, "rows": len(frame)}))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--states", type=int, default=6)
    parser.add_argument("--megabytes", type=int, default=100)
    parser.add_argument("--phase")
    parser.add_argument("--directory")
    args = parser.parse_args()
    if args.phase:
        phase(args.directory)
        return 0
    with tempfile.TemporaryDirectory(dir=os.environ.get("DAGGER_BENCH_DIR")) as scratch:
        directory = Path(scratch) / "heavy"
        exp = dg.Experiment(directory, Heavy, durability="fast")
        node = exp.spawn_new_tree(megabytes=args.megabytes)
        dg.Function(accuracy)(node)
        for step in range(1, args.states):
            node = Perturb(step)(node)
            dg.Function(accuracy)(node)
        exp.run(progress=False)
        # the slim records: the entries of the logs (the small payloads inside them included)
        records = sum(path.stat().st_size for path in (directory / "log").glob("*.log"))
        weights = sum(p.stat().st_size for p in (directory / "blobs").rglob("*") if p.is_file())
        result = run_phase(Path(__file__), "--phase", "x", "--directory", str(directory))
        assert result["rows"] == args.states
    rows = [
        {
            "measure": f"restore + DataFrame of {args.states} states of {args.megabytes} MB: bytes read",
            "value": result["read"],
            "floor": records,
            "ratio": result["read"] / records,
            "limit": 1.5,
        }
    ]
    ok = report("analysis", rows)
    print(f"weights on disk: {weights / 2**20:.0f} MiB; slim records: {records / 1024:.1f} KiB")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
