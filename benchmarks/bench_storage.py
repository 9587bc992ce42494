"""Storage benchmarks (issue 3): bytes on disk, save and load speed, rerun, peak memory.

    python benchmarks/bench_storage.py [--big-mb 500] [--memory-mb 200]

Targets, each a ratio to a floor measured in the same run:

* chain of 10 resnet18 states changing only ``fc.bias``: bytes on disk <= 1.05x one
  ``torch.save(state_dict)`` of resnet18;
* resnet18 root + 4 children that each prune a different layer 50%: bytes <= 1.1x the root's
  ``torch.save`` plus each child's masks and changed layers saved the same way;
* save of a 500 MB state <= 1.2x ``torch.save`` of its tensors (both fsynced, same disk);
  full load <= 1.2x ``torch.load`` of them;
* rerun of the fully stored resnet18 chain in a fresh process <= 0.1x the cold run;
* peak memory of a run over a root holding a 200 MB tensor with 20 children that each change
  a slice <= 2.2x the tensor, above the import floor.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.utils.prune as prune
from torchvision.models import resnet18

import dagger as dg

sys.path.insert(0, str(Path(__file__).parent))
from common import report, run_phase


def du(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def saved_size(obj, folder: Path, name: str) -> int:
    path = folder / name
    torch.save(obj, path)
    return path.stat().st_size


# -- the experiments ---------------------------------------------------------------------------


class ModelState(dg.ExperimentState):
    PROPERTIES = ["seed"]

    def initialize_state(self, **arguments):
        torch.manual_seed(self.seed)
        self.model = resnet18()


class SetBias(dg.Recipe):
    def __init__(self, value):
        self.value = value

    def run(self, state):
        with torch.no_grad():
            state.model.fc.bias.fill_(self.value)
        return state


class PruneLayer(dg.Recipe):
    def __init__(self, layer, amount):
        self.layer, self.amount = layer, amount

    def run(self, state):
        prune.l1_unstructured(state.model.get_submodule(self.layer), "weight", self.amount)
        return state


PRUNED_LAYERS = ["layer1.0.conv1", "layer2.0.conv1", "layer3.0.conv1", "layer4.0.conv1"]


def build_chain(directory: Path) -> dg.Experiment:
    exp = dg.Experiment(directory, ModelState)
    node = exp.spawn_new_tree(seed=0)
    for step in range(9):
        node = SetBias(float(step))(node)
    return exp


class BigState(dg.ExperimentState):
    PROPERTIES = ["megabytes"]

    def initialize_state(self, **arguments):
        generator = torch.Generator().manual_seed(0)
        count = 5
        numel = self.megabytes * (1 << 20) // 4 // count
        self.tensors = [torch.randn(numel, generator=generator) for _ in range(count)]


class ChangeSlice(dg.Recipe):
    def __init__(self, index):
        self.index = index

    def run(self, state):
        state.tensor[self.index * 1000 : (self.index + 1) * 1000] = float(self.index)
        return state


class MemoryState(dg.ExperimentState):
    PROPERTIES = ["megabytes"]

    def initialize_state(self, **arguments):
        self.tensor = torch.zeros(self.megabytes * (1 << 20) // 4)


# -- measures ----------------------------------------------------------------------------------


def disk_chain(scratch: Path) -> dict:
    exp = build_chain(scratch / "chain")
    exp.run(progress=False)
    floor = saved_size(resnet18().state_dict(), scratch, "resnet18.pt")
    return row(
        "disk, chain of 10 resnet18 changing fc.bias (MiB)",
        du(scratch / "chain") / 2**20,
        floor / 2**20,
        1.05,
    )


def disk_pruned(scratch: Path) -> dict:
    exp = dg.Experiment(scratch / "pruned", ModelState)
    root = exp.spawn_new_tree(seed=0)
    for layer in PRUNED_LAYERS:
        PruneLayer(layer, 0.5)(root)
    exp.run(progress=False)
    torch.manual_seed(0)
    model = resnet18()
    floor = saved_size(model.state_dict(), scratch, "root.pt")
    for layer in PRUNED_LAYERS:
        module = resnet18().get_submodule(layer)
        module.load_state_dict(model.get_submodule(layer).state_dict())
        prune.l1_unstructured(module, "weight", 0.5)
        floor += saved_size(
            {"mask": module.weight_mask, "weight": module.weight}, scratch, "child.pt"
        )
    return row(
        "disk, resnet18 + 4 children pruning a layer 50% (MiB)",
        du(scratch / "pruned") / 2**20,
        floor / 2**20,
        1.1,
    )


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    os.fsync(fd)
    os.close(fd)


def save_and_load(scratch: Path, megabytes: int, repeat: int) -> list[dict]:
    state_exp = dg.Experiment(scratch / "tmp-big", BigState, durability="fast")
    root = state_exp.spawn_new_tree(megabytes=megabytes)
    state = state_exp.new_root_state(root.sha(), root.arguments, [])
    saves, floors, loads, read_loads, floor_loads = [], [], [], [], []
    for attempt in range(repeat):
        exp = dg.Experiment(scratch / f"big-{attempt}", BigState)
        exp.spawn_new_tree(megabytes=megabytes)
        exp._prepare_store()
        record = {"id": state.sha(), "tags": []}
        started = time.perf_counter()
        exp.store.save(state.sha(), state, record)
        saves.append(time.perf_counter() - started)

        path = scratch / f"big-{attempt}.pt"
        started = time.perf_counter()
        torch.save(state.tensors, path)
        _fsync(path)
        floors.append(time.perf_counter() - started)

        started = time.perf_counter()
        loaded = exp.store.load(state.sha())
        touched = sum(float(t[-1]) for t in loaded.tensors)
        loads.append(time.perf_counter() - started)
        del loaded
        exp.store.blobs.use_mmap = False  # the alternative: read the blobs into fresh memory
        started = time.perf_counter()
        loaded = exp.store.load(state.sha())
        touched = sum(float(t[-1]) for t in loaded.tensors)
        read_loads.append(time.perf_counter() - started)
        del loaded
        started = time.perf_counter()
        tensors = torch.load(path)
        touched = sum(float(t[-1]) for t in tensors)  # noqa: F841
        floor_loads.append(time.perf_counter() - started)
        del tensors
    return [
        row(f"save of a {megabytes} MB state, fsynced (s)", min(saves), min(floors), 1.2),
        row(f"full load of a {megabytes} MB state, mmap (s)", min(loads), min(floor_loads), 1.2),
        row(
            f"full load of a {megabytes} MB state, read (s)",
            min(read_loads),
            min(floor_loads),
            None,
        ),
    ]


def rerun_chain(scratch: Path) -> dict:
    script = Path(__file__)
    directory = scratch / "rerun-chain"
    cold = run_phase(script, "--phase", "chain", "--directory", str(directory))["seconds"]
    warm = min(
        run_phase(script, "--phase", "chain", "--directory", str(directory))["seconds"]
        for _ in range(3)
    )
    return row("rerun of the stored resnet18 chain, fresh process (s)", warm, cold, 0.1)


def peak_memory(scratch: Path, megabytes: int) -> dict:
    script = Path(__file__)
    result = run_phase(
        script,
        "--phase",
        "memory",
        "--directory",
        str(scratch / "memory"),
        "--megabytes",
        str(megabytes),
    )
    return row(
        f"peak memory, {megabytes} MB root + 20 children changing a slice (MB)",
        result["peak_above_floor"] / 2**20,
        megabytes,
        2.2,
    )


def phase(args: argparse.Namespace) -> None:
    if args.phase == "chain":
        started = time.perf_counter()
        exp = build_chain(Path(args.directory))
        result = exp.run(progress=False)
        print(json.dumps({"seconds": time.perf_counter() - started, "computed": result.computed}))
    elif args.phase == "memory":
        floor = _rss_now()
        exp = dg.Experiment(args.directory, MemoryState, durability="fast")
        root = exp.spawn_new_tree(megabytes=args.megabytes)
        for index in range(20):
            ChangeSlice(index)(root)
        exp.run(progress=False)
        print(json.dumps({"peak_above_floor": _peak_rss() - floor}))


def _peak_rss() -> int:
    """This process's peak resident memory (VmHWM). Not ru_maxrss: Linux keeps that across
    exec, so a subprocess started by a big parent would report the parent's size."""
    with open("/proc/self/status") as handle:
        for line in handle:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("no VmHWM in /proc/self/status")


def _rss_now() -> int:
    with open("/proc/self/statm") as handle:
        return int(handle.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def row(measure: str, value: float, floor: float, limit: float | None) -> dict:
    return {
        "measure": measure,
        "value": value,
        "floor": floor,
        "ratio": value / floor,
        "limit": limit,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--big-mb", type=int, default=500)
    parser.add_argument("--memory-mb", type=int, default=200)
    parser.add_argument("--megabytes", type=int, default=200)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--phase")
    parser.add_argument("--directory")
    args = parser.parse_args()
    if args.phase:
        phase(args)
        return 0
    rows = []
    with tempfile.TemporaryDirectory(dir=os.environ.get("DAGGER_BENCH_DIR")) as scratch:
        scratch_dir = Path(scratch)
        rows.append(disk_chain(scratch_dir))
        rows.append(disk_pruned(scratch_dir))
        rows.extend(save_and_load(scratch_dir, args.big_mb, args.repeat))
        rows.append(rerun_chain(scratch_dir))
        rows.append(peak_memory(scratch_dir, args.memory_mb))
    return 0 if report("storage", rows) else 1


if __name__ == "__main__":
    sys.exit(main())
