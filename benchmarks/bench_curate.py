"""Curation benchmarks (issue 16): content digests around a Function, state comparison, and
the environment capture, on a resnet18 state.

    python benchmarks/bench_curate.py [--repeat 5]

The state is what a lottery-ticket or fine-tuning study stores: ``torchvision``'s resnet18 and
an SGD optimizer with momentum after one step (11.7 M parameters, their momentum buffers and
the batch-norm statistics: 94 MB of tensors). Targets, each a ratio to a floor measured in the
same run:

* a digest before and after a Function (what checking that Functions are read-only adds to
  each Function) <= 3x one ``torch.save`` of the model's and optimizer's state_dicts to memory,
  and <= 0.25x evaluating the model on one batch of 32 images of 224x224 (a Function evaluates
  many such batches, so this is the overhead's upper bound);
* what the read-only check adds to a whole run (the run of a Function that costs nothing on the
  stored state, with the check, less the same run with ``check_read_only=False``: the two
  digests, which read every byte of the state where a run that maps the state's blobs may
  not) <= 0.25x a run (unchecked) of a Function evaluating one batch of 32 images; the
  no-cost run's own ratio, the check's relative worst case, is reported without a limit;
* comparing two such states bitwise (what an audit adds to each recomputed state) <= 3x the
  same ``torch.save``;
* ``capture_environment()`` once cached (what each state's record pays) <= 0.1x writing that
  record: ``json.dumps`` of a small record to a temporary file and a rename, no fsync
  (dagger's own writes also fsync, so the real share is smaller);
* its first call in a fresh process (``git status`` and the version look-ups) <= 0.5x the
  ``import dagger`` of that same process (torch already imported, as in a user's script).
"""

from __future__ import annotations

import argparse
import io
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
from torchvision.models import resnet18

import dagger as dg
from dagger.compare import compare_states
from dagger.digest import digest_changes, state_digest
from dagger.environment import capture_environment

sys.path.insert(0, str(Path(__file__).parent))
from common import best_of, report


class ResNetState:
    """A state's content as dagger stores it: a model and its optimizer."""

    def __init__(self, seed: int) -> None:
        torch.manual_seed(seed)
        self.model = resnet18()
        self.optimizer = torch.optim.SGD(self.model.parameters(), lr=0.1, momentum=0.9)
        self.epoch = 1
        loss = self.model(torch.randn(2, 3, 64, 64)).sum()
        loss.backward()
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        self.model.eval()


class StoredResNet(dg.ExperimentState):
    """The same content as a stored experiment state."""

    PROPERTIES = ["seed"]

    def initialize_state(self, **arguments):
        content = ResNetState(self.seed)
        self.model = content.model
        self.optimizer = content.optimizer
        self.epoch = content.epoch


IMAGES = torch.randn(32, 3, 224, 224, generator=torch.Generator().manual_seed(0))


def evaluate(state: StoredResNet) -> float:
    with torch.no_grad():
        return float(state.model(IMAGES).sum())


def weight_norm(state: StoredResNet) -> float:
    """A Function that costs next to nothing: the check's worst case, relatively."""
    return float(state.model.fc.weight.detach().norm())


def run_function(directory: Path, function: Any, name: str, check: bool) -> float:
    """Wall time of a run that only evaluates a new Function on the stored root."""
    exp = dg.Experiment(directory, StoredResNet)
    root = exp.spawn_new_tree(seed=0)
    dg.Function(function, name=name)(root)
    started = time.perf_counter()
    report = exp.run(progress=False, check_read_only=check)
    seconds = time.perf_counter() - started
    assert (report.computed, report.functions, report.mutated) == (0, 1, 0), report
    return seconds


def state_bytes(state: ResNetState) -> int:
    tensors = list(state.model.state_dict().values())
    tensors += [
        value
        for per_parameter in state.optimizer.state.values()
        for value in per_parameter.values()
        if isinstance(value, torch.Tensor)
    ]
    return sum(tensor.numel() * tensor.element_size() for tensor in tensors)


def save_floor(state: ResNetState) -> None:
    buffer = io.BytesIO()
    torch.save(
        {"model": state.model.state_dict(), "optimizer": state.optimizer.state_dict()}, buffer
    )


# Run in a fresh interpreter, as a user's script would: torch first (the user's code imports
# it), then dagger, then the first capture.
FIRST_CAPTURE = """
import json, time
import torch
started = time.perf_counter()
import dagger
imported = time.perf_counter()
from dagger.environment import capture_environment
capture_environment()
captured = time.perf_counter()
print(json.dumps({"import": imported - started, "first": captured - imported}))
"""


def first_capture() -> dict:
    output = subprocess.run(
        [sys.executable, "-c", FIRST_CAPTURE], capture_output=True, text=True, check=True
    )
    return json.loads(output.stdout.strip().splitlines()[-1])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()

    torch.set_grad_enabled(True)
    state, twin = ResNetState(0), ResNetState(0)
    images = torch.randn(32, 3, 224, 224)
    print(f"state: {state_bytes(state) / 1e6:.1f} MB of tensors")

    def function_check() -> None:
        before = state_digest(state)
        after = state_digest(state)
        assert digest_changes(before, after) == []

    def forward() -> None:
        with torch.no_grad():
            state.model(images)

    assert compare_states(state, twin).equal
    digest_seconds = best_of(args.repeat, function_check)
    save_seconds = best_of(args.repeat, lambda: save_floor(state))
    forward_seconds = best_of(max(2, args.repeat // 2), forward)

    def compare() -> None:
        compare_states(state, twin)

    compare_seconds = best_of(args.repeat, compare)

    capture_environment()  # the first call is measured below, in a fresh process
    calls = 1000

    def capture_many() -> None:
        for _ in range(calls):
            capture_environment()

    cached_seconds = best_of(args.repeat, capture_many) / calls
    with tempfile.TemporaryDirectory() as scratch:
        record = {
            "id": "0" * 64,
            "status": "done",
            "seconds": 1.0,
            "environment": capture_environment(),
        }

        def write_record() -> None:
            for index in range(calls):
                path = Path(scratch) / f"{index}.json.tmp"
                path.write_text(json.dumps(record))
                os.replace(path, Path(scratch) / f"{index}.json")

        record_seconds = best_of(args.repeat, write_record) / calls
    with tempfile.TemporaryDirectory() as scratch:
        directory = Path(scratch) / "exp"
        exp = dg.Experiment(directory, StoredResNet)
        exp.spawn_new_tree(seed=0)
        exp.run(progress=False)
        runs: dict[tuple[str, bool], list[float]] = {}
        for index in range(args.repeat):  # alternated, so that drift hits both alike
            for function, checks in ((evaluate, (False,)), (weight_norm, (True, False))):
                for check in checks:
                    name = f"{function.__name__}_{check}_{index}"
                    seconds = run_function(directory, function, name, check)
                    runs.setdefault((function.__name__, check), []).append(seconds)
        best = {key: min(values) for key, values in runs.items()}
    first = [first_capture() for _ in range(args.repeat)]
    first_seconds = min(item["first"] for item in first)
    import_seconds = min(item["import"] for item in first)

    rows = [
        row(
            "digest before + after a Function, resnet18 + SGD (s)",
            digest_seconds,
            save_seconds,
            "torch.save state_dicts",
            3.0,
        ),
        row(
            "same, against evaluating one batch of 32 images (s)",
            digest_seconds,
            forward_seconds,
            "resnet18 forward, 32x3x224x224",
            0.25,
        ),
        row(
            "run of a no-cost Function on a stored resnet18, checked (s)",
            best["weight_norm", True],
            best["weight_norm", False],
            "the same run, check_read_only=False",
            None,
        ),
        row(
            "what the check adds to that run (s)",
            best["weight_norm", True] - best["weight_norm", False],
            best["evaluate", False],
            "a run evaluating 32 images, unchecked",
            0.25,
        ),
        row(
            "compare_states of two resnet18 + SGD states, bitwise (s)",
            compare_seconds,
            save_seconds,
            "torch.save state_dicts",
            3.0,
        ),
        row(
            "capture_environment(), cached (s)",
            cached_seconds,
            record_seconds,
            "write a record (tmp + rename)",
            0.1,
        ),
        row(
            "capture_environment(), first call in a process (s)",
            first_seconds,
            import_seconds,
            "import dagger",
            0.5,
        ),
    ]
    for item in rows:
        print(
            f"  {item['measure']}: {item['value'] * 1e3:.3f} ms against {item['floor_name']} {item['floor'] * 1e3:.3f} ms"
        )
    return 0 if report("curate", rows) else 1


def row(measure: str, value: float, floor: float, floor_name: str, limit: float | None) -> dict:
    return {
        "measure": measure,
        "value": value,
        "floor": floor,
        "floor_name": floor_name,
        "ratio": value / floor,
        "limit": limit,
    }


if __name__ == "__main__":
    sys.exit(main())
