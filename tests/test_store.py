"""The directory store: atomic files, checksums, quarantine, crashes, format and bad folders.

Store format 2: entries in per-writer logs (``log/``), payloads too large for an entry in
``payloads/``, blobs in ``blobs/`` (see ``dagger/store/records.py``). Tests that damage a payload
use ``inline_limit=0`` so that it is a file of its own; ``test_integrity.py`` damages entries
inside the logs.
"""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest
from helpers import Add, Blob, CounterState, read_log

import dagger as dg
from dagger.store import DirectoryStore
from dagger.store.files import write_atomic
from dagger.store.frames import Frame, Kind, scan


def run_tree(exp_dir, start=1, inline_limit=0):
    """root -> +1 -> +2; payloads in files of their own unless ``inline_limit`` allows."""
    exp = dg.Experiment(DirectoryStore(exp_dir, inline_limit=inline_limit), CounterState)
    root = exp.spawn_new_tree(start=start)
    child = Add(1)(root)
    grandchild = Add(2)(child)
    report = exp.run(progress=False)
    return report, root, child, grandchild


def payload_of(exp_dir, sha):
    (name,) = [n for n in os.listdir(exp_dir / "payloads") if n.startswith(sha)]
    return exp_dir / "payloads" / name


def log_frames(exp_dir):
    """(log path, frame) of every valid entry in the store's logs."""
    found = []
    for path in sorted((exp_dir / "log").glob("*.log")):
        items, _ = scan(path.read_bytes())
        found += [(path, item) for item in items if isinstance(item, Frame)]
    return found


def test_layout_matches_the_design(exp_dir):
    _, root, child, _ = run_tree(exp_dir, inline_limit=16 * 1024)
    meta = json.loads((exp_dir / "experiment.json").read_text())
    assert meta["format"] == 2
    assert meta["roots"] == [root.sha()]
    assert meta["state_class"] == "helpers:CounterState"
    assert meta["experiment_arguments"] == {"start": 1}
    for key in ("dagger_version", "python_version", "torch_version", "created", "checksum"):
        assert meta[key]
    # one log, written by the one process that ran; small payloads inside their entries
    (log,) = (exp_dir / "log").iterdir()
    assert not (exp_dir / "payloads").exists()
    records = {
        json.loads(frame.document)["id"]: (frame, json.loads(frame.document))
        for _, frame in log_frames(exp_dir)
        if frame.kind is Kind.RECORD
    }
    frame, record = records[child.sha()]
    assert record["parent"] == root.sha() and record["params"] == {"amount": 1}
    assert record["status"] == "done" and record["seconds"] >= 0
    assert record["payload"] == {"size": frame.raw_size, "format": "pickle"}  # inline
    assert record["seq"] > records[root.sha()][1]["seq"]  # creation order
    # repeated parts are stored once and referred to by key
    parts = {
        json.loads(frame.document)["key"]: json.loads(frame.document)["part"]
        for _, frame in log_frames(exp_dir)
        if frame.kind is Kind.PART
    }
    assert parts[record["recipe"]]["class"] == "Add"
    assert parts[record["properties"]] == {"start": 1}
    assert record["properties"] == records[root.sha()][1]["properties"]
    stored = DirectoryStore(exp_dir).read_record(child.sha())
    assert stored.recipe.name == "Add" and stored.properties == {"start": 1}
    assert (exp_dir / "index.json").exists()
    # a payload above the inline limit is a file named by its state and digest
    big_dir = exp_dir.parent / "big"
    run_tree(big_dir, inline_limit=0)
    payload = payload_of(big_dir, child.sha())
    record = DirectoryStore(big_dir).read_record(child.sha())
    assert record.payload.file == f"payloads/{payload.name}"
    assert record.payload.size == payload.stat().st_size


@pytest.mark.parametrize("damage", ["flip", "truncate", "delete"])
def test_damaged_payload_is_absent_warned_once_and_recomputed(
    exp_dir, call_log, damage, dagger_warnings
):
    _, root, child, grandchild = run_tree(exp_dir)
    path = payload_of(exp_dir, child.sha())
    if damage == "flip":
        data = bytearray(path.read_bytes())
        data[len(data) // 2] ^= 0x01
        path.write_bytes(bytes(data))
    elif damage == "truncate":
        path.write_bytes(path.read_bytes()[:10])
    else:
        path.unlink()

    # a full load of the damaged state fails cleanly, with one warning, and never unpickles it
    tree = dg.Experiment.restore(exp_dir).graph
    node = tree.node(child.sha())
    if damage != "delete":
        assert node.restore() is False
        warnings = [r for r in dagger_warnings.records if child.sha()[:12] in r.getMessage()]
        assert len(warnings) == 1
        assert (exp_dir / "quarantine").is_dir()  # evidence kept

    before = len(read_log(call_log))
    report, root, child, grandchild = run_tree(exp_dir)
    assert report.computed == 1 and read_log(call_log)[before:] == ["add:1"]
    assert grandchild.get().value == 4
    assert child.get().value == 2


def test_leftover_temp_files_never_break_a_run(exp_dir):
    run_tree(exp_dir)
    (exp_dir / "payloads" / ".x.pkl.tmp-2-ef01-0").write_bytes(b"\x80\x04partial")
    (exp_dir / "log" / ".y.log.tmp-3-ab12-4").write_bytes(b"partial")
    (exp_dir / ".experiment.json.tmp-1-abcd-0").write_bytes(b"{partial")
    report, *_ = run_tree(exp_dir)
    assert report.computed == 0
    assert len(dg.Experiment.restore(exp_dir).graph) == 3


def test_fast_durability_writes_the_same_store(tmp_path):
    safe, fast = tmp_path / "safe", tmp_path / "fast"
    run_tree(safe)
    exp = dg.Experiment(DirectoryStore(fast, durability="fast", inline_limit=0), CounterState)
    root = exp.spawn_new_tree(start=1)
    Add(2)(Add(1)(root))
    exp.run(progress=False)
    assert sorted(os.listdir(safe / "payloads")) == sorted(os.listdir(fast / "payloads"))
    tables = [DirectoryStore(folder).snapshot() for folder in (safe, fast)]
    assert tables[0].ids == tables[1].ids and tables[0].params == tables[1].params
    with pytest.raises(ValueError, match="durability='sloppy' is not one of"):
        dg.Experiment(tmp_path / "x", CounterState, durability="sloppy")


def test_index_is_a_snapshot_never_the_only_copy(exp_dir):
    _, root, child, grandchild = run_tree(exp_dir)
    (exp_dir / "index.json").unlink()
    assert len(dg.Experiment.restore(exp_dir).graph) == 3
    assert (exp_dir / "index.json").exists()  # rewritten by the restore
    (exp_dir / "index.json").write_text("{not json")
    assert len(dg.Experiment.restore(exp_dir).graph) == 3
    # a record the index does not know is still found
    exp = dg.Experiment(exp_dir, CounterState)
    Add(9)(exp.spawn_new_tree(start=1))
    index_before = (exp_dir / "index.json").read_bytes()
    exp.run(progress=False)
    (exp_dir / "index.json").write_bytes(index_before)
    assert len(dg.Experiment.restore(exp_dir).graph) == 4


def test_concurrent_writers_of_one_state_first_wins(exp_dir):
    _, root, child, _ = run_tree(exp_dir)
    store = DirectoryStore(exp_dir)
    record = store.read_record(child.sha())
    state = child.get()
    state.value = "a different value"
    loser = dataclasses.replace(record, payload=None, blobs={})
    winner = store.save(child.sha(), state, loser)
    assert winner == record
    assert child.get().value == 2
    assert [n for n in os.listdir(exp_dir / "payloads") if n.startswith(child.sha())] == [
        payload_of(exp_dir, child.sha()).name
    ]
    assert len([f for _, f in log_frames(exp_dir) if f.kind is Kind.RECORD]) == 3


def test_atomic_write_replaces_or_publishes_once(tmp_path):
    path = tmp_path / "file.json"
    assert write_atomic(path, b"one", durable=True) is True
    assert write_atomic(path, b"two", durable=True, replace=False) is False
    assert path.read_bytes() == b"one"
    assert write_atomic(path, b"three", durable=False) is True
    assert path.read_bytes() == b"three"
    assert os.listdir(tmp_path) == ["file.json"]


def test_folder_that_is_not_an_experiment(tmp_path):
    with pytest.raises(
        dg.NotAnExperimentError, match="is not a dagger experiment: it has no experiment.json"
    ):
        dg.Experiment.restore(tmp_path)
    with pytest.raises(dg.NotAnExperimentError, match="does not exist"):
        dg.Experiment.restore(tmp_path / "nowhere")
    (tmp_path / "experiment.json").write_text("[1, 2]")
    with pytest.raises(dg.NotAnExperimentError, match="not a dagger experiment.json"):
        dg.Experiment.restore(tmp_path)  # damaged, and no record to rebuild it from


def test_newer_format_is_refused_and_left_untouched(exp_dir):
    run_tree(exp_dir)
    meta_path = exp_dir / "experiment.json"
    meta = json.loads(meta_path.read_text())
    meta["format"] = 99
    meta_path.write_text(json.dumps(meta))
    snapshot = {p: p.read_bytes() for p in exp_dir.rglob("*") if p.is_file()}
    with pytest.raises(dg.FormatVersionError, match="format 99"):
        dg.Experiment.restore(exp_dir)
    with pytest.raises(dg.FormatVersionError, match="Upgrade dagger"):
        run_tree(exp_dir)
    assert snapshot == {p: p.read_bytes() for p in exp_dir.rglob("*") if p.is_file()}


def test_mismatched_state_class_is_refused(exp_dir):
    run_tree(exp_dir)

    class OtherState(dg.ExperimentState):
        pass

    with pytest.raises(
        dg.StateClassMismatchError, match="holds states of class `helpers:CounterState`"
    ):
        dg.Experiment.restore(exp_dir, state_class=OtherState)
    exp = dg.Experiment(exp_dir, OtherState)
    Add(1)(exp.spawn_new_tree())
    with pytest.raises(dg.StateClassMismatchError, match="Pass state_class=CounterState"):
        exp.run(progress=False)


def test_a_file_where_the_directory_should_be(tmp_path):
    target = tmp_path / "file"
    target.write_text("hello")
    exp = dg.Experiment(target, CounterState)
    exp.spawn_new_tree(start=1)
    with pytest.raises(dg.StoreError, match="is a file, not a folder"):
        exp.run(progress=False)
    assert target.read_text() == "hello"


def test_save_and_load_hooks(exp_dir):
    class HookState(dg.ExperimentState):
        def initialize_state(self, **arguments):
            self.c = 5
            self.save_pre_hooks = [lambda: setattr(self, "c", 6)]
            self.save_post_hooks = [lambda: setattr(self, "c", 7)]
            self.load_post_hooks = [lambda: setattr(self, "loaded", True)]

    exp = dg.Experiment(exp_dir, HookState)
    root = exp.spawn_new_tree()
    computed = root.get()
    assert computed.c == 7  # after saving, the post-hook ran on the object in memory
    loaded = root.get()  # stored now: loaded from disk
    assert loaded.c == 6  # what the pre-hook set before saving
    assert loaded.loaded is True


class FileState(dg.ExperimentState):
    """Stores itself as a plain text file through the seed's save_hook/load_hook."""

    def initialize_state(self, **arguments):
        self.text = "hello"

    def save_hook(self, path):
        with open(path, "w") as handle:
            handle.write(self.text)

    @classmethod
    def load_hook(cls, path):
        state = cls()
        with open(path) as handle:
            state.text = handle.read()
        return state


def test_custom_save_hook_and_load_hook(exp_dir):
    exp = dg.Experiment(exp_dir, FileState)
    root = exp.spawn_new_tree()
    exp.run(progress=False)
    assert payload_of(exp_dir, root.sha()).read_text() == "hello"  # always a file
    loaded = dg.Experiment.restore(exp_dir, FileState).graph.root
    with loaded.lazy_load():
        assert loaded.text == "hello"


def _sizes(folder, temporary):
    """Sizes of the (temporary or final) files anywhere under ``folder``."""
    sizes = []
    for parent, _, names in os.walk(folder):
        for name in names:
            if name.startswith(".") == temporary:
                try:
                    sizes.append(os.path.getsize(os.path.join(parent, name)))
                except FileNotFoundError:
                    pass
    return sizes


KILL_SCRIPT = textwrap.dedent(
    """
    import sys
    import dagger as dg
    from helpers import Add, Blob, CounterState

    exp = dg.Experiment(sys.argv[1], CounterState)
    root = exp.spawn_new_tree(start=1)
    big = Blob(200, seed=7)(root)
    Add(1)(big)
    exp.run(progress=False)
    """
)


@pytest.mark.parametrize("moment", ["payload", "record"])
def test_sigkill_while_saving_a_200mb_state(tmp_path, subprocess_env, moment):
    exp_dir = tmp_path / "exp"
    script = tmp_path / "kill.py"
    script.write_text(KILL_SCRIPT)
    process = subprocess.Popen([sys.executable, str(script), str(exp_dir)], env=subprocess_env)
    deadline = time.monotonic() + 120
    killed = False
    while time.monotonic() < deadline and process.poll() is None:
        if moment == "payload":
            # the 200 MB buffer is being written to its temporary file
            trigger = any(size > 10 << 20 for size in _sizes(exp_dir, temporary=True))
        else:
            # the 200 MB buffer is in place, the record (the commit marker) not yet
            trigger = any(size > 100 << 20 for size in _sizes(exp_dir, temporary=False))
        if trigger:
            process.send_signal(signal.SIGKILL)
            killed = True
            break
        time.sleep(0.0005)
    process.wait(timeout=60)
    assert killed, "the writer finished before it could be killed"

    # the store is readable, and the rerun completes with correct values
    tree = dg.Experiment.restore(exp_dir).graph
    if moment == "payload":
        assert len(tree) == 1  # the root; the big state was never committed
    else:  # the kill may land just after the record was committed
        assert len(tree) in (1, 2)
    exp = dg.Experiment(exp_dir, CounterState)
    root = exp.spawn_new_tree(start=1)
    big = Blob(200, seed=7)(root)
    leaf = Add(1)(big)
    exp.run(progress=False)
    expected = np.random.default_rng(7).integers(0, 255, 200 << 20, dtype=np.uint8)
    state = big.get()
    assert np.array_equal(state.blob, expected)
    assert leaf.get().value == 2
    assert len(dg.Experiment.restore(exp_dir).graph) == 3


def test_a_damaged_record_entry_is_recomputed_and_set_aside(exp_dir, call_log, dagger_warnings):
    from helpers import Multiply

    _, root, child, grandchild = run_tree(exp_dir)
    (path, frame) = next(
        (path, frame)
        for path, frame in log_frames(exp_dir)
        if frame.kind is Kind.RECORD and json.loads(frame.document)["id"] == child.sha()
    )
    data = bytearray(path.read_bytes())
    data[frame.offset + 60] ^= 0xFF  # inside its JSON: the entry no longer checks
    path.write_bytes(bytes(data))

    def grow():
        exp = dg.Experiment(exp_dir, CounterState)
        new = Multiply(5)(Add(1)(exp.spawn_new_tree(start=1)))  # needs the damaged state
        return exp, new

    before = len(read_log(call_log))
    exp, new = grow()
    report = exp.run(progress=False)
    assert report.computed == 2 and read_log(call_log)[before:] == ["add:1", "mul:5"]
    assert any("damaged entry" in r.getMessage() for r in dagger_warnings.records)
    assert new.get().value == 10
    exp, new = grow()
    assert exp.run(progress=False).computed == 0
    assert dg.verify(exp_dir).ok  # the damaged log was set aside (evidence kept)
    assert list((exp_dir / "quarantine" / "log").iterdir())


def test_restore_refuses_an_explicit_class_that_does_not_match(exp_dir):
    run_tree(exp_dir)
    with pytest.raises(dg.StateClassMismatchError):
        dg.Experiment.restore(exp_dir, state_class=dg.ExperimentState)
