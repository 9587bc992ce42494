"""What a state holds is stored exactly, or refused with its path; storing and loading have no
side effects outside the process (issue 12)."""

from __future__ import annotations

import gc
import json
import logging
import multiprocessing
import os
import shutil
import socket
import sqlite3
import subprocess
import sys
import threading
import weakref
from pathlib import Path
from typing import Any

import cloudpickle
import dill
import numpy as np
import pytest
import torch
from payload_kinds import KINDS, Hold, KindState, difference, make

import dagger as dg
from dagger.store.blobs import Blobs
from dagger.store.payload import copy_payload, dumps_payload, dumps_state, loads_payload

TESTS = Path(__file__).parent


def run_script(script: Path, *args: Any, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """Run a script the way a user does: ``python script.py ...``, from its folder."""
    return subprocess.run(
        [sys.executable, str(script), *map(str, args)],
        env=env,
        cwd=script.parent,
        capture_output=True,
        text=True,
    )


# -- resources are refused at save time, with their path -----------------------------------------


class Meter:
    """A user object that guards its count with a lock (issue 12, case 3)."""

    def __init__(self) -> None:
        self.count = 0
        self.lock = threading.Lock()


class MeterState(dg.ExperimentState):
    def initialize_state(self, **arguments: Any) -> None:
        self.meter = Meter()
        self.weights = torch.ones(3)


class Train(dg.Recipe):
    def __init__(self, lr: float) -> None:
        self.lr = lr

    def run(self, state: Any) -> Any:
        state.weights = state.weights * self.lr
        state.saw_meter = state.meter is not None
        return state


def test_what_picklers_learn_of_classes_is_shared_and_keeps_no_class_alive(tmp_path):
    """Picklers share what they learnt of a class (resource or not) across payloads; that
    never keeps a class alive, and a class met first as a plain value's never hides a
    resource defined later, whatever id it gets."""
    from dagger.store import payload

    blobs = Blobs(tmp_path / "blobs", durable=False)
    refs, reused = [], 0
    for attempt in range(10):
        plain = type(f"Plain{attempt}", (), {})
        dumps_payload({"value": plain()}, blobs)
        assert id(plain) in payload._CLASS_KINDS
        refs.append((id(plain), weakref.ref(plain)))
        del plain
        gc.collect()
        # a resource class made now may reuse the plain class's id: it is refused all the same
        resource = type(f"Server{attempt}", (socket.socket,), {})
        reused += id(resource) == refs[-1][0]  # CPython mostly hands the id on
        with resource() as server:
            with pytest.raises(dg.SerializationError, match="socket"):
                dumps_payload({"server": server}, blobs)
        del resource, server
        gc.collect()
    assert reused  # the case this is about happened
    assert all(ref() is None for _, ref in refs)
    assert not any(key in payload._CLASS_KINDS for key, _ in refs)


@pytest.mark.parametrize("children", [1, 2])
def test_a_lock_in_the_root_is_refused_as_the_roots_failure_however_many_children(
    exp_dir, children
):
    """Case 3: with two children the first child used to fail with "cannot pickle
    '_thread.lock'", blamed on `Train(lr=0.1)`; with one child the lock was stored by dill."""
    exp = dg.Experiment(exp_dir, MeterState)
    root = exp.spawn_new_tree()
    for index in range(children):
        Train(lr=0.1 * (index + 1))(root)
    with pytest.raises(dg.RunError) as info:
        exp.run(progress=False)
    (failure,) = info.value.failures
    assert failure.state_id == root.sha()
    assert failure.error_type == "SerializationError"
    assert f"State `MeterState` ({root.sha()[:12]}) cannot be stored" in failure.message
    assert "`state.meter.lock` is a lock (`_thread.lock`)" in failure.message
    assert "MeterState.TRANSIENT_ATTRIBUTES" in failure.message
    assert "Train" not in failure.message
    assert info.value.report.skipped == children
    assert not exp.store.has_record(root.sha())


class TransientMeterState(MeterState):
    TRANSIENT_ATTRIBUTES = ["meter"]


def test_transient_attributes_are_not_stored_and_none_in_every_child(exp_dir):
    exp = dg.Experiment(exp_dir, TransientMeterState)
    root = exp.spawn_new_tree()
    children = [Train(lr=lr)(root) for lr in (0.1, 0.2, 0.3)]
    grandchild = Train(lr=0.5)(children[0])
    exp.run(progress=False)
    # Earlier children got copies, the last one the root itself: each saw it as a load gives it.
    for child in [*children, grandchild]:
        state = child.get()
        assert state.meter is None and state.saw_meter is False
    loaded = exp.load_state(root.sha())
    assert loaded is not None and loaded.meter is None
    assert loaded.weights.equal(torch.ones(3))
    assert children[1].get().weights.equal(torch.full((3,), 0.2))


def test_transient_attributes_must_be_a_list_of_names(tmp_path):
    class OneName(dg.ExperimentState):
        TRANSIENT_ATTRIBUTES = "log"  # type: ignore[assignment]

    state = OneName()
    blobs = Blobs(tmp_path / "blobs", durable=False)
    with pytest.raises(dg.SerializationError, match=r"TRANSIENT_ATTRIBUTES = \['log'\]"):
        dumps_state(state, blobs)
    with pytest.raises(dg.SerializationError, match=r"OneName.TRANSIENT_ATTRIBUTES is 'log'"):
        copy_payload(state)


class PlainState(dg.ExperimentState):
    def initialize_state(self, **arguments: Any) -> None:
        self.weights = torch.ones(3)


class Loggers:
    """A user's logging object holding a file handler among other things."""

    def __init__(self, path: Path) -> None:
        self.names = ["train", "eval"]
        self.handlers = [None, 3, logging.FileHandler(path)]


def _open_file(tmp_path: Path) -> Any:
    return open(tmp_path / "open.txt", "w")  # closed by the test


RESOURCES = {
    "open file": (_open_file, "state.held", "an open file or stream"),
    "socket": (lambda tmp_path: socket.socket(), "state.held", "a socket"),
    "generator": (lambda tmp_path: (step for step in range(3)), "state.held", "a generator"),
    "sqlite3 connection": (
        lambda tmp_path: sqlite3.connect(tmp_path / "db.sqlite"),
        "state.held",
        "a database connection",
    ),
    "thread": (lambda tmp_path: threading.Thread(target=print), "state.held", "a thread"),
    "multiprocessing lock": (
        lambda tmp_path: multiprocessing.get_context("spawn").Lock(),
        "state.held",
        "a multiprocessing lock",
    ),
    "rlock deep in containers": (
        lambda tmp_path: {"a": [1, {"b": threading.RLock()}]},
        "state.held['a'][1]['b']",
        "a lock",
    ),
    "logging.FileHandler in a logger object": (
        lambda tmp_path: Loggers(tmp_path / "train.log"),
        "state.held.handlers[2]",
        "a logging handler",
    ),
}


@pytest.mark.parametrize("name", list(RESOURCES))
def test_resources_are_refused_when_stored_naming_their_path_and_the_fix(exp_dir, tmp_path, name):
    make_resource, path, what = RESOURCES[name]
    resource = make_resource(tmp_path)
    files_before = {p: p.read_bytes() for p in tmp_path.iterdir() if p.is_file()}

    class Hold(dg.Recipe):
        def run(self, state: Any) -> Any:
            state.held = resource
            return state

    exp = dg.Experiment(exp_dir, PlainState)
    root = exp.spawn_new_tree()
    child = Hold()(root)
    with pytest.raises(dg.RunError) as info:
        exp.run(progress=False)
    (failure,) = info.value.failures
    assert failure.state_id == child.sha()
    assert f"`{path}` is {what}" in failure.message
    assert "List `held` in PlainState.TRANSIENT_ATTRIBUTES" in failure.message
    assert not exp.store.has_record(child.sha())
    for file, data in files_before.items():
        assert file.read_bytes() == data  # storing touched nothing outside the process
    if name in ("open file", "socket", "sqlite3 connection"):
        resource.close()
    if name == "logging.FileHandler in a logger object":
        resource.handlers[2].close()


def test_the_error_carries_the_path_attribute_type_and_state(tmp_path):
    state = MeterState()
    state.meter = Meter()
    blobs = Blobs(tmp_path / "blobs", durable=False)
    with pytest.raises(dg.SerializationError) as info:
        dumps_state(state, blobs, state_id="0123456789abcdef")
    error = info.value
    assert isinstance(error, TypeError)
    assert (error.path, error.attribute, error.value_type) == (
        "state.meter.lock",
        "meter",
        "_thread.lock",
    )
    assert (error.state_class, error.state_id) == ("MeterState", "0123456789abcdef")
    assert "give `test_payload.Meter` __getstate__/__setstate__ that leave `lock` out" in str(error)
    again = dill.loads(dill.dumps(error))  # crosses process boundaries intact
    assert (again.path, str(again)) == (error.path, str(error))


# -- one serializer: a save and a copy accept and refuse the same objects --------------------------


class Referent:
    pass


def _weakref_holder() -> dict[str, Any]:
    target = Referent()
    return {"target": target, "ref": weakref.ref(target)}


SAME_RULES = {
    "lock in an object": (Meter, "state.held.lock"),
    "open file": (_open_file, "state.held"),
    "socket": (lambda tmp_path: socket.socket(), "state.held"),
    "generator": (lambda tmp_path: (i for i in range(2)), "state.held"),
    "sqlite3 connection": (lambda tmp_path: sqlite3.connect(":memory:"), "state.held"),
    "logging.FileHandler in a logger object": (
        lambda tmp_path: Loggers(tmp_path / "x.log"),
        "state.held.handlers[2]",
    ),
    "torch.finfo": (lambda tmp_path: torch.finfo(torch.float32), "state.held"),
    "weakref (dill)": (lambda tmp_path: _weakref_holder(), None),
    "module of a custom type": (lambda tmp_path: torch.backends.cudnn, None),
    "sys.stdout": (lambda tmp_path: sys.stdout, None),
    "structured array": (lambda tmp_path: make("numpy-structured"), None),
}


@pytest.mark.parametrize("name", list(SAME_RULES))
def test_a_save_and_a_copy_accept_and_refuse_the_same_objects(tmp_path, name):
    make_value, path = SAME_RULES[name]
    value = make_value() if make_value is Meter else make_value(tmp_path)
    state = MeterState()
    state.held = value
    blobs = Blobs(tmp_path / "blobs", durable=False)
    outcomes = []
    for act in (lambda: dumps_state(state, blobs), lambda: copy_payload(state)):
        try:
            act()
        except dg.SerializationError as error:
            outcomes.append(error.path)
        else:
            outcomes.append(None)
    assert outcomes == [path, path]
    if name in ("open file", "socket", "sqlite3 connection"):
        value.close()
    if name == "logging.FileHandler in a logger object":
        value.handlers[2].close()


def test_a_copy_that_fails_names_the_state_and_path(tmp_path):
    state = MeterState()
    state.meter = Meter()
    with pytest.raises(dg.SerializationError) as info:
        copy_payload(state, state_id="fedcba9876543210")
    assert str(info.value).startswith("State `MeterState` (fedcba987654) cannot be copied")
    assert info.value.path == "state.meter.lock"


# -- the fallback pickler: only for what it can fix, under the same rules --------------------------


def test_dill_stores_only_what_the_standard_pickler_cannot_and_only_safely(tmp_path):
    blobs = Blobs(tmp_path / "blobs", durable=False)
    plain = MeterState()
    plain.held = {"weights": torch.randn(300, 300)}
    assert dumps_state(plain, blobs)[2] == "pickle"

    weak = MeterState()
    weak.held = _weakref_holder()
    data, _, kind = dumps_state(weak, blobs)
    assert kind == "dill"  # a weak reference: dill rebuilds it inside the process alone
    loaded = loads_payload(data, blobs)
    assert loaded.held["ref"]() is loaded.held["target"]

    both = MeterState()
    both.held = _weakref_holder()
    both.meter = Meter()  # dill could pickle the lock: it is never asked to
    with pytest.raises(dg.SerializationError, match=r"`state.meter.lock` is a lock"):
        dumps_state(both, blobs)


# -- loading never touches the outside world -------------------------------------------------------

LOG_STATE = '''
import dagger as dg

OPEN = []


class LogState(dg.ExperimentState):
    """A root that keeps its training log open (issue 12, case 2)."""

    PROPERTIES = ["log_path"]
    TRANSIENT_ATTRIBUTES = ["log"]

    def initialize_state(self, **arguments):
        self.log = open(self.log_path, "w")
        self.log.write("started\\n")
        self.log.flush()
        self.weights = [1.0, 2.0]


class Train(dg.Recipe):
    def __init__(self, lr):
        self.lr = lr

    def run(self, state):
        if state.log is None:  # not stored: reopen it where it is needed
            state.log = open(state.log_path, "a")
        state.log.write(f"train lr={self.lr}\\n")
        state.log.flush()
        state.weights = [w * self.lr for w in state.weights]
        return state
'''

RUN_LOG_STATE = """
import sys
import dagger as dg
from logstate import LogState, Train

exp = dg.Experiment(sys.argv[1], LogState)
root = exp.spawn_new_tree(log_path=sys.argv[2])
Train(0.2)(Train(0.1)(root))
try:
    exp.run(progress=False)
except dg.RunError as error:
    print(error.failures[0].message)
    sys.exit(3)
print("stored")
"""

LOAD_LOG_STATE = """
import sys
import dagger as dg

tree = dg.Experiment.restore(sys.argv[1]).graph
for node in tree.nodes:
    with node.lazy_load() as state:
        print(type(state.log).__name__, state.weights)
"""


def _log_scripts(tmp_path: Path, transient: bool) -> tuple[Path, Path]:
    module = LOG_STATE if transient else LOG_STATE.replace('TRANSIENT_ATTRIBUTES = ["log"]', "")
    (tmp_path / "logstate.py").write_text(module)
    run = tmp_path / "run.py"
    run.write_text(RUN_LOG_STATE)
    load = tmp_path / "load.py"
    load.write_text(LOAD_LOG_STATE)
    return run, load


def test_loading_a_state_never_truncates_the_log_file_it_kept_open(tmp_path, subprocess_env):
    """Case 2: loading the state for analysis used to truncate the log to 0 bytes (dill
    reopened the pickled file handle in write mode)."""
    run, load = _log_scripts(tmp_path, transient=True)
    log = tmp_path / "train.log"
    stored = run_script(run, tmp_path / "exp", log, env=subprocess_env)
    assert stored.returncode == 0, stored.stdout + stored.stderr
    before = log.read_bytes()
    assert before == b"started\ntrain lr=0.1\ntrain lr=0.2\n"
    loaded = run_script(load, tmp_path / "exp", env=subprocess_env)
    assert log.read_bytes() == before
    assert loaded.returncode == 0, loaded.stderr
    lines = loaded.stdout.strip().splitlines()
    assert len(lines) == 3  # the root and its two descendants, fully loaded
    assert all(line.startswith("NoneType ") for line in lines)


def test_an_open_file_that_is_not_transient_is_refused_and_untouched(tmp_path, subprocess_env):
    run, _ = _log_scripts(tmp_path, transient=False)
    log = tmp_path / "train.log"
    result = run_script(run, tmp_path / "exp", log, env=subprocess_env)
    assert result.returncode == 3, result.stdout + result.stderr
    assert "`state.log` is an open file or stream (`_io.TextIOWrapper`)" in result.stdout
    assert "List `log` in LogState.TRANSIENT_ATTRIBUTES" in result.stdout
    assert log.read_bytes() == b"started\n"


def test_a_payload_of_an_older_dagger_holding_a_file_loads_without_reopening_it(
    tmp_path, dagger_warnings
):
    """Older payloads fell back to dill, which pickled open files: loading one must not
    reopen (and truncate) the file."""
    log = tmp_path / "train.log"
    with open(log, "w") as handle:
        handle.write("epoch 1\n")
        handle.flush()
        data = dill.dumps({"log": handle, "value": 3}, protocol=5)
    loaded = loads_payload(data)
    assert loaded == {"log": None, "value": 3}
    assert log.read_bytes() == b"epoch 1\n"
    assert any("never reopens files" in r.getMessage() for r in dagger_warnings.records)


# -- exact round trips for every array kind, compared in a fresh process -------------------------

SAVE_KINDS = """
import json
import sys

import dagger as dg
from payload_kinds import KINDS, Hold, KindState

exp = dg.Experiment(sys.argv[1], KindState)
root = exp.spawn_new_tree()
ids = {kind: Hold(kind)(root).sha() for kind in KINDS}
try:
    exp.run(progress=False)
except dg.RunError:
    pass  # each kind is judged on its own by the comparison
print(json.dumps(ids))
"""

COMPARE_KINDS = """
import json
import sys
import warnings

import dagger as dg
from payload_kinds import difference, make

warnings.simplefilter("ignore")
tree = dg.Experiment.restore(sys.argv[1]).graph
report = {}
for kind, state_id in json.loads(sys.argv[2]).items():
    try:
        with tree.node(state_id).lazy_load() as state:
            report[kind] = difference(make(kind), state.value) or "ok"
    except Exception as error:
        report[kind] = f"{type(error).__name__}: {error}"
print(json.dumps(report))
"""


@pytest.fixture(scope="module")
def round_trips(tmp_path_factory) -> dict[str, str]:
    """Store a state per kind through a real Experiment in one process; in another, compare
    each with a freshly built value."""
    folder = tmp_path_factory.mktemp("kinds")
    shutil.copy(TESTS / "payload_kinds.py", folder / "payload_kinds.py")
    (folder / "save.py").write_text(SAVE_KINDS)
    (folder / "compare.py").write_text(COMPARE_KINDS)
    env = dict(os.environ)
    saved = run_script(folder / "save.py", folder / "exp", env=env)
    assert saved.returncode == 0, saved.stderr
    ids = saved.stdout.strip().splitlines()[-1]
    compared = run_script(folder / "compare.py", folder / "exp", ids, env=env)
    assert compared.returncode == 0, compared.stderr
    return json.loads(compared.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("kind", list(KINDS))
def test_round_trip_is_exact_in_a_fresh_process(round_trips, kind):
    assert round_trips.get(kind, "missing") == "ok"


# torch's own _rebuild_qtensor reads TypedStorage.device, which warns (torch.load does too).
@pytest.mark.filterwarnings("ignore:TypedStorage is deprecated:UserWarning")
@pytest.mark.parametrize("kind", list(KINDS))
def test_a_copy_for_a_sibling_is_exact(kind):
    state = KindState()
    state.kind = kind
    state.value = make(kind)
    copied = copy_payload(state)
    assert difference(make(kind), copied.value) is None


def test_a_structured_array_keeps_its_fields(exp_dir):
    """Case 4: an 80 KB training history came back as `|V8` bytes; history["loss"] raised."""
    exp = dg.Experiment(exp_dir, KindState)
    child = Hold("numpy-structured")(exp.spawn_new_tree())
    exp.run(progress=False)
    loaded = exp.load_state(child.sha())
    assert loaded is not None
    history = loaded.value
    assert history.dtype.names == ("epoch", "loss")
    assert history["loss"].dtype == np.float32
    assert np.array_equal(history["loss"], make("numpy-structured")["loss"])


def test_map_location_applies_to_every_tensor_however_small(tmp_path, exp_dir):
    blobs = Blobs(tmp_path / "blobs", durable=False)
    value = {"big": torch.randn(300, 300), "small": torch.arange(4), "view": None}
    value["view"] = value["small"][1:]
    data, refs, _ = dumps_payload(value, blobs)
    assert len(refs) == 1  # the small storage travels inside the payload
    seen = []

    def locate(storage, location):
        seen.append(location)
        return storage

    loads_payload(data, blobs, map_location=locate)
    assert seen == ["cpu", "cpu"]  # one call per storage, the small one included
    on_meta = loads_payload(data, blobs, map_location="meta")
    assert {t.device.type for t in on_meta.values()} == {"meta"}
    assert (
        on_meta["view"].untyped_storage().data_ptr()
        == on_meta["small"].untyped_storage().data_ptr()
    )

    # Payloads of older versions, whose small storages torch pickled itself, too.
    old = cloudpickle.dumps({"small": torch.arange(4)}, protocol=5)
    assert loads_payload(old, map_location="meta")["small"].device.type == "meta"

    exp = dg.Experiment(exp_dir, KindState)
    child = Hold("torch-views-sharing-small")(exp.spawn_new_tree())
    exp.run(progress=False)
    state = exp.load_state(child.sha(), map_location="meta")
    assert state is not None and {t.device.type for t in state.value} == {"meta"}


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_small_cuda_tensors_follow_map_location(tmp_path):
    blobs = Blobs(tmp_path / "blobs", durable=False)
    value = {"big": torch.randn(300, 300, device="cuda"), "small": torch.arange(4, device="cuda")}
    data, _, _ = dumps_payload(value, blobs)
    assert {t.device.type for t in loads_payload(data, blobs).values()} == {"cuda"}
    on_cpu = loads_payload(data, blobs, map_location="cpu")
    assert {t.device.type for t in on_cpu.values()} == {"cpu"}
    assert on_cpu["small"].equal(torch.arange(4))
    copied = copy_payload(value)
    assert copied["small"].device.type == "cuda" and copied["small"].equal(value["small"])


# -- classes of __main__ and modules of custom types ------------------------------------------------

NOTEBOOK_SCRIPT = '''
import sys

import torch

import dagger as dg
import settings


def make_reproducible(seed):
    """The usual helper: names torch.backends.cudnn, a module of type CudnnModule."""
    torch.manual_seed(seed)
    torch.backends.cudnn.deterministic = True
    torch.backends.cudnn.benchmark = False


class NotebookState(dg.ExperimentState):
    PROPERTIES = ["seed"]

    def initialize_state(self, **arguments):
        make_reproducible(self.seed)
        self.weights = torch.randn(4, 4)
        self.backend = torch.backends.cudnn
        self.settings = settings

    def describe(self):
        return f"seed {self.seed}, answer {self.settings.answer}"


class Scale(dg.Recipe):
    def __init__(self, factor):
        self.factor = factor

    def run(self, state):
        make_reproducible(state.seed)
        state.weights = state.weights * self.factor
        return state


if __name__ == "__main__":
    exp = dg.Experiment(sys.argv[1], NotebookState)
    root = exp.spawn_new_tree(seed=0)
    Scale(2.0)(root)
    Scale(3.0)(root)  # two children: the first gets a copy
    exp.run(progress=False)
    print("stored")
'''

SETTINGS_MODULE = """
import sys
import types


class Settings(types.ModuleType):
    @property
    def answer(self):
        return 42


sys.modules[__name__].__class__ = Settings
"""

LOAD_NOTEBOOK = """
import sys

import torch
import torch.backends.cudnn

import dagger as dg
import settings

tree = dg.Experiment.restore(sys.argv[1]).graph
for node in tree.nodes:
    with node.lazy_load() as state:
        assert state.backend is torch.backends.cudnn
        assert state.settings is settings
        torch.backends.cudnn.deterministic = False
        type(state).initialize_state(state)  # the stored code runs here, cudnn helper included
        assert torch.backends.cudnn.deterministic is True
        print(state.describe(), float(state.weights.sum()))
"""


def test_a_class_of_main_whose_code_names_cudnn_stores_and_loads_elsewhere(
    tmp_path, subprocess_env
):
    """Case 5: "cannot be saved: it, which cannot be pickled (PicklingError: Can't pickle
    sentinel ...)"; the real cause was `cannot pickle 'CudnnModule' object`."""
    script = tmp_path / "notebook.py"
    script.write_text(NOTEBOOK_SCRIPT)
    (tmp_path / "settings.py").write_text(SETTINGS_MODULE)
    stored = run_script(script, tmp_path / "exp", env=subprocess_env)
    assert stored.returncode == 0, stored.stderr
    assert stored.stdout.strip().endswith("stored")
    loader = tmp_path / "load.py"
    loader.write_text(LOAD_NOTEBOOK)
    loaded = run_script(loader, tmp_path / "exp", env=subprocess_env)
    assert loaded.returncode == 0, loaded.stderr
    torch.manual_seed(0)
    total = float(torch.randn(4, 4).sum())
    lines = loaded.stdout.strip().splitlines()
    assert [line.rsplit(" ", 1)[0] for line in lines] == ["seed 0, answer 42"] * 3
    # initialize_state ran again in the loader, so every state's weights are the root's.
    assert [float(line.rsplit(" ", 1)[1]) for line in lines] == pytest.approx([total] * 3)


def test_an_error_in_code_stored_by_value_names_the_primary_error_and_its_path(tmp_path):
    finfo = torch.finfo(torch.float32)  # no pickler can pickle it

    class Local(dg.ExperimentState):  # not importable by name: stored by value
        def initialize_state(self, **arguments: Any) -> None:
            self.eps = float(finfo.eps)

    state = Local()
    blobs = Blobs(tmp_path / "blobs", durable=False)
    with pytest.raises(dg.SerializationError) as info:
        dumps_state(state, blobs)
    error = info.value
    assert error.path.startswith("state.__class__.initialize_state")
    assert error.value_type == "torch.finfo"
    assert "(TypeError: cannot pickle 'torch.finfo' object)" in str(error)
    assert "importable module" in str(error)
    assert "sentinel" not in str(error)
