"""Tensor-aware storage: blobs stored once, loaded without pickle, exactly (issue 3)."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import torch
import torch.nn.utils.prune
from helpers import TensorState
from torch import nn

import dagger as dg
from dagger.store import DirectoryStore
from dagger.store.blobs import Blobs
from dagger.store.frames import Frame, Kind, scan
from dagger.store.payload import dumps_payload, loads_payload


def blob_files(exp_dir: Path) -> list[Path]:
    return sorted(p for p in (exp_dir / "blobs").rglob("*") if p.is_file())


def du(exp_dir: Path) -> int:
    return sum(p.stat().st_size for p in exp_dir.rglob("*") if p.is_file())


def test_round_trip_bitwise_in_a_fresh_process(exp_dir, subprocess_env, tmp_path):
    exp = dg.Experiment(exp_dir, TensorState)
    root = exp.spawn_new_tree()
    original = root.get()
    expected = tmp_path / "expected.pt"
    torch.save({k: v for k, v in original.__getstate__().items() if "hooks" not in k}, expected)
    assert blob_files(exp_dir), "large buffers must be blobs"
    script = tmp_path / "compare.py"
    script.write_text(
        textwrap.dedent(
            """
            import sys
            import numpy as np
            import torch
            import dagger as dg
            from helpers import TensorState

            tree = dg.Experiment.restore(sys.argv[1], TensorState).graph
            expected = torch.load(sys.argv[2], weights_only=False)
            with tree.root.lazy_load() as state:
                for name, value in expected["tensors"].items():
                    got = state.tensors[name]
                    assert got.dtype == value.dtype and got.shape == value.shape, name
                    assert got.view(-1).view(torch.uint8).equal(value.view(-1).view(torch.uint8)), name
                assert state.small.equal(expected["small"])
                assert state.sparse.is_sparse and state.sparse.to_dense().equal(expected["sparse"].to_dense())
                assert np.array_equal(state.array_c, expected["array_c"])
                assert state.array_f.flags.f_contiguous and np.array_equal(state.array_f, expected["array_f"])
                assert state.raw == expected["raw"]
                assert state.rng.equal(expected["rng"])
            print("ok")
            """
        )
    )
    env = subprocess_env
    result = subprocess.run(
        [sys.executable, str(script), str(exp_dir), str(expected)],
        env=env,
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "ok"


def test_shared_storages_stay_shared_and_loads_are_independent(tmp_path):
    blobs = Blobs(tmp_path / "blobs", durable=False)
    base = torch.randn(200, 200)  # 160 KB, above the 64 KiB threshold
    model = nn.Sequential(nn.Linear(200, 200), nn.Linear(200, 200))
    model[1].weight = model[0].weight  # tied weights
    obj = {"base": base, "view": base[10:20], "t": base.t(), "model": model}
    data, refs, kind = dumps_payload(obj, blobs)
    assert kind == "pickle"
    assert len(data) < 10_000  # the buffers are not in the pickle
    first = loads_payload(data, blobs)
    second = loads_payload(data, blobs)
    for loaded in (first, second):
        assert (
            loaded["view"].untyped_storage().data_ptr()
            == loaded["base"].untyped_storage().data_ptr()
        )
        assert (
            loaded["t"].untyped_storage().data_ptr() == loaded["base"].untyped_storage().data_ptr()
        )
        assert loaded["model"][1].weight is loaded["model"][0].weight
        assert loaded["base"].equal(base)
    first["base"].add_(1)
    assert first["view"].equal(base[10:20] + 1)  # a view follows its base
    assert second["base"].equal(base)  # the other load is independent
    assert loads_payload(data, blobs)["base"].equal(base)  # and the blob unchanged


@pytest.mark.parametrize("use_mmap", [True, False])
def test_mmap_and_read_loading_give_the_same_writable_tensors(tmp_path, use_mmap):
    blobs = Blobs(tmp_path / "blobs", durable=False, use_mmap=use_mmap)
    value = torch.randn(300, 300)
    data, _, _ = dumps_payload({"x": value}, blobs)
    loaded = loads_payload(data, blobs)["x"]
    assert loaded.equal(value)
    loaded.mul_(2)  # writable: copy-on-write, the file is untouched
    assert loads_payload(data, blobs)["x"].equal(value)
    del loaded
    import gc

    gc.collect()


def test_map_location(tmp_path):
    blobs = Blobs(tmp_path / "blobs", durable=False)
    data, _, _ = dumps_payload({"x": torch.randn(200, 200)}, blobs)
    seen = []

    def locate(storage, location):
        seen.append(location)
        return storage

    assert loads_payload(data, blobs, map_location="cpu")["x"].device.type == "cpu"
    assert loads_payload(data, blobs, map_location={"cpu": "cpu"})["x"].device.type == "cpu"
    loads_payload(data, blobs, map_location=locate)
    assert seen == ["cpu"]


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_tensors_come_back_on_their_device(tmp_path):
    blobs = Blobs(tmp_path / "blobs", durable=False)
    value = torch.randn(300, 300, device="cuda")
    data, _, _ = dumps_payload({"x": value}, blobs)
    assert loads_payload(data, blobs)["x"].device == value.device
    assert loads_payload(data, blobs, map_location="cpu")["x"].device.type == "cpu"
    assert loads_payload(data, blobs)["x"].equal(value)


def test_threshold_is_configurable(tmp_path):
    small = Blobs(tmp_path / "a", durable=False, threshold=16)
    _, refs, _ = dumps_payload({"x": torch.arange(10)}, small)
    assert len(refs) == 1
    large = Blobs(tmp_path / "b", durable=False, threshold=1 << 30)
    _, refs, _ = dumps_payload({"x": torch.randn(300, 300)}, large)
    assert refs == {}


# -- modules, optimizers, schedulers, RNG ------------------------------------------------------


class TrainState(dg.ExperimentState):
    def initialize_state(self, **arguments):
        torch.manual_seed(0)
        self.model = nn.Sequential(
            nn.Conv2d(3, 16, 3),
            nn.BatchNorm2d(16),
            nn.ReLU(),
            nn.Flatten(),
            nn.Linear(16 * 30 * 30, 10),
        )
        self.optimizer = torch.optim.SGD(self.model.parameters(), lr=0.1, momentum=0.9)
        self.scheduler = torch.optim.lr_scheduler.StepLR(self.optimizer, step_size=1, gamma=0.5)
        self.data = torch.randn(8, 3, 32, 32)
        self.target = torch.randint(0, 10, (8,))


def train_step(state):
    state.optimizer.zero_grad()
    loss = nn.functional.cross_entropy(state.model(state.data), state.target)
    loss.backward()
    state.optimizer.step()
    state.scheduler.step()
    return loss.item()


class Step(dg.Recipe):
    def run(self, state):
        train_step(state)
        state.rng = torch.get_rng_state()
        return state


class Prune(dg.Recipe):
    def __init__(self, amount):
        self.amount = amount

    def run(self, state):
        torch.nn.utils.prune.l1_unstructured(state.model[4], "weight", self.amount)
        return state


def test_model_optimizer_scheduler_round_trip_exactly(exp_dir):
    exp = dg.Experiment(exp_dir, TrainState)
    trained = Step()(exp.spawn_new_tree())
    in_memory = trained.get()
    loaded = trained.get()
    assert loaded is not in_memory
    assert loaded.optimizer.param_groups[0]["params"][0] is next(loaded.model.parameters())
    assert loaded.scheduler.optimizer is loaded.optimizer
    assert (
        loaded.optimizer.state_dict()["state"].keys()
        == in_memory.optimizer.state_dict()["state"].keys()
    )
    # continuing training from the loaded state is bit for bit the same as from the original
    assert train_step(loaded) == train_step(in_memory)
    for a, b in zip(
        loaded.model.state_dict().values(), in_memory.model.state_dict().values(), strict=True
    ):
        assert a.equal(b)
    assert loaded.scheduler.get_last_lr() == in_memory.scheduler.get_last_lr()


def test_pruned_and_quantized_modules_round_trip(exp_dir):
    exp = dg.Experiment(exp_dir, TrainState)
    pruned = Prune(0.5)(exp.spawn_new_tree())
    original = pruned.get()
    loaded = pruned.get()
    layer = loaded.model[4]
    assert hasattr(layer, "weight_orig") and hasattr(layer, "weight_mask")
    assert layer.weight_mask.equal(original.model[4].weight_mask)
    assert float((layer.weight == 0).float().mean()) == pytest.approx(0.5, abs=0.01)
    assert loaded.model(loaded.data).equal(original.model(original.data))

    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        quantized = torch.ao.quantization.quantize_dynamic(
            nn.Sequential(nn.Linear(256, 256)), {nn.Linear}, dtype=torch.qint8
        )
        blobs = Blobs(exp_dir / "qblobs", durable=False)
        data, _, _ = dumps_payload(quantized, blobs)
        again = loads_payload(data, blobs)
        x = torch.randn(4, 256)
        assert again(x).equal(quantized(x))


# -- dedupe across states ------------------------------------------------------------------------


class BigState(dg.ExperimentState):
    def initialize_state(self, **arguments):
        self.weights = torch.randn(512, 512)  # 1 MiB
        self.head = torch.zeros(512)


class ChangeHead(dg.Recipe):
    def __init__(self, value):
        self.value = value

    def run(self, state):
        state.head = state.head + self.value
        return state


def test_a_chain_that_keeps_the_weights_stores_them_once(exp_dir):
    exp = dg.Experiment(exp_dir, BigState)
    node = exp.spawn_new_tree()
    for step in range(10):
        node = ChangeHead(step)(node)
    exp.run(progress=False)
    assert len(blob_files(exp_dir)) == 1
    assert du(exp_dir) < 1.1 * 512 * 512 * 4
    assert node.get().weights.equal(exp.store.load(exp.root.sha()).weights)


# -- damaged blobs, verify and gc ------------------------------------------------------------------


@pytest.mark.parametrize("damage", ["flip", "delete"])
def test_damaged_blob_means_absent_and_recomputed(exp_dir, damage, dagger_warnings):
    exp = dg.Experiment(exp_dir, BigState)
    child = ChangeHead(1)(exp.spawn_new_tree())
    exp.run(progress=False)
    (blob,) = blob_files(exp_dir)
    if damage == "flip":
        data = bytearray(blob.read_bytes())
        data[1000] ^= 0x10
        blob.write_bytes(bytes(data))
    else:
        blob.unlink()
    problems = dg.verify(exp_dir).problems
    assert {p.state_id for p in problems} == {exp.root.sha(), child.sha()}
    assert all(blob.name in p.path for p in problems)

    tree = dg.Experiment.restore(exp_dir).graph
    assert tree.node(child.sha()).restore() is False  # never loaded wrong
    assert any("unusable" in r.getMessage() for r in dagger_warnings.records)

    exp = dg.Experiment(exp_dir, BigState)
    child = ChangeHead(1)(exp.spawn_new_tree())
    report = exp.run(progress=False)
    assert report.computed >= 1
    state = child.get()
    assert state.head.equal(torch.ones(512))
    assert dg.verify(exp_dir).ok


def test_verify_names_the_state_and_file_of_a_flipped_bit(exp_dir):
    exp = dg.Experiment(exp_dir, BigState)
    child = ChangeHead(1)(exp.spawn_new_tree())
    exp.run(progress=False)
    assert dg.verify(exp_dir).ok
    # The weights are a blob; the rest of the state is small, so its payload is kept inside
    # its record's entry in the log.
    (log,) = (exp_dir / "log").glob("*.log")
    items, _ = scan(log.read_bytes())
    (frame,) = [
        item
        for item in items
        if isinstance(item, Frame)
        and item.kind is Kind.RECORD
        and json.loads(item.document)["id"] == child.sha()
    ]
    data = bytearray(log.read_bytes())
    data[frame.raw_offset + frame.raw_size // 2] ^= 0x01
    log.write_bytes(bytes(data))
    report = dg.verify(exp_dir)
    assert not report.ok
    (problem,) = report.problems
    assert problem.state_id == child.sha()
    assert problem.path == f"log/{log.name}"
    assert "checksum" in problem.message
    assert log.read_bytes() == bytes(data)  # verify never repairs


def test_gc_removes_only_what_nothing_refers_to(exp_dir, tmp_path, subprocess_env):
    exp = dg.Experiment(DirectoryStore(exp_dir, inline_limit=0), BigState)
    ChangeHead(1)(exp.spawn_new_tree())
    exp.run(progress=False)
    before = {p.relative_to(exp_dir) for p in exp_dir.rglob("*") if p.is_file()}
    orphan_blob = exp_dir / "blobs" / "ab" / ("ab" + "0" * 62)
    orphan_blob.parent.mkdir(parents=True, exist_ok=True)
    orphan_blob.write_bytes(b"x" * 100)
    orphan_payload = exp_dir / "payloads" / (exp.root.sha() + "." + "f" * 32 + ".pkl")
    orphan_payload.write_bytes(b"left by an interrupted save")
    temp = exp_dir / "payloads" / ".something.pkl.tmp-1-2"  # of writer "1", long gone
    temp.write_bytes(b"{")

    # While a run is going on in another process, unreferenced files it may be about to
    # refer to are kept (and said so); a dead writer's temporary file goes at once.
    running = subprocess.Popen(
        [sys.executable, "-c", _hold_a_run(exp_dir)], env=subprocess_env, cwd=tmp_path
    )
    try:
        _wait_for_a_live_log(exp_dir)
        during = dg.gc(exp_dir, dry_run=True)
        assert during.kept_young == 2 and during.removed == ["payloads/.something.pkl.tmp-1-2"]
        assert "a run is going on" in str(during)
    finally:
        running.kill()
        running.wait()
    dry = dg.gc(exp_dir, dry_run=True)  # no run now: nothing to wait for, whatever the age
    assert len(dry.removed) == 3 and orphan_blob.exists()
    done = dg.gc(exp_dir)
    assert sorted(done.removed) == sorted(dry.removed)
    after = {p.relative_to(exp_dir) for p in exp_dir.rglob("*") if p.is_file()}
    assert {p for p in after if p.parts[0] != "log"} == {p for p in before if p.parts[0] != "log"}
    assert dg.verify(exp_dir).ok
    assert len(dg.Experiment.restore(exp_dir).graph) == 2


def _hold_a_run(exp_dir):
    """A process that opens its log in ``exp_dir`` (as a run's first write does) and waits."""
    return textwrap.dedent(
        f"""
        import time
        from dagger.store import DirectoryStore

        store = DirectoryStore({str(exp_dir)!r})
        store.open_writer()
        time.sleep(120)
        """
    )


def _wait_for_a_live_log(exp_dir):
    from dagger.store.log import log_names, writer_alive

    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if any(writer_alive(exp_dir / "log" / name) for name in log_names(exp_dir / "log")):
            return
        time.sleep(0.05)
    raise AssertionError("the other process never opened its log")


def test_cli_verify_and_gc(exp_dir, subprocess_env):
    exp = dg.Experiment(exp_dir, BigState)
    ChangeHead(1)(exp.spawn_new_tree())
    exp.run(progress=False)
    run = lambda *args: subprocess.run(  # noqa: E731
        [sys.executable, "-m", "dagger", *args], env=subprocess_env, capture_output=True, text=True
    )
    ok = run("verify", str(exp_dir))
    assert ok.returncode == 0 and "no problems" in ok.stdout
    (blob,) = blob_files(exp_dir)
    blob.write_bytes(b"garbage")
    bad = run("verify", str(exp_dir))
    assert bad.returncode == 1 and blob.name in bad.stdout
    gc = run("gc", str(exp_dir), "--dry-run", "--min-age", "0")
    assert gc.returncode == 0 and "would remove 0 file(s)" in gc.stdout
    missing = run("verify", str(exp_dir / "nope"))
    assert missing.returncode == 2
    assert missing.stderr.count("\n") == 1 and "does not exist" in missing.stderr


def test_a_class_stored_by_value_keeps_its_methods_in_the_defining_process(tmp_path):
    """Loading a payload must not swap the live class's methods for rebuilt copies, which
    would change its code fingerprint, and so the ids, in the middle of a session."""
    from dagger.identity import state_code_identity
    from dagger.store.payload import copy_payload

    class Local(dg.ExperimentState):  # not importable by name: pickled by value
        def initialize_state(self, **arguments):
            self.x = torch.zeros(3)

    method, identity = Local.initialize_state, state_code_identity(Local, dg.ExperimentState)
    state = Local()
    state.x = torch.ones(100_000)
    blobs = Blobs(tmp_path / "blobs", durable=False)
    data, _, _ = dumps_payload(state, blobs)
    assert type(loads_payload(data, blobs)) is Local
    assert type(copy_payload(state)) is Local
    assert Local.initialize_state is method
    assert state_code_identity(Local, dg.ExperimentState) == identity
