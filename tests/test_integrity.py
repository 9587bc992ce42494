"""The corruption suite (issue 11): damage every kind of file a store has, every way.

For each kind of file (experiment.json, the index, each kind of log entry, a payload file, a
blob, a result file) and each kind of damage (a bit flip, a flip that keeps JSON valid, a
truncation, emptying, deletion, replacement by another valid file), on a copy of one store:

* nothing raises a traceback: restore, loads, ``verify``, ``gc`` (and the CLI, in one test
  that damages every kind at once);
* nothing is silently wrong: every state the restored tree shows has exactly the facts it had
  (parent, recipe, parameters, tags, status, results), every state that loads has its value;
* every damaged thing is reported by ``verify`` with its path relative to the experiment, or
  recomputed by the next run; nothing intact is lost, and after the run every state loads
  with its value.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from helpers import Add, Boom, CounterState, Multiply, read_log

import dagger as dg
from dagger.store import DirectoryStore
from dagger.store.frames import Frame, Kind, scan


class Pad(dg.Recipe):
    """Adds ``size`` deterministic bytes: as ``bytes`` (inside the pickle: a payload file of
    its own above 16 KiB) or as an array (a blob at 64 KiB and more)."""

    VERSION = "1"

    def __init__(self, kind, size):
        self.kind = kind
        self.size = size

    def run(self, state):
        data = np.arange(self.size, dtype=np.uint8)
        state.pad = data.tobytes() if self.kind == "bytes" else data
        return state


def evaluate(state):
    return {"accuracy": 0.97, "value": state.value}  # plain JSON: inside the notes entry


def spectrum(state):
    return np.linspace(0.0, 1.0, 64) * state.value  # small, not JSON: a value entry


def wide(state):
    return np.full(3000, float(state.value))  # 24 KB: a result file


def define(exp, *, first):
    root = exp.spawn_new_tree(start=1)
    with exp.tag("base"):
        a = Add(1)(root)
    dg.Function(evaluate)(a)
    with exp.tag("x"):
        b = Multiply(3)(a)
    dg.Function(spectrum)(b)
    nodes = {"root": root, "a": a, "b": b}
    nodes["p"] = Pad("bytes", 20_000)(a)
    nodes["q"] = Pad("array", 100_000)(a)
    nodes["w"] = dg.Function(wide)(Add(5)(root))
    nodes["z"] = Add(7)(root)
    if first:
        Boom()(root)
    return nodes


def expected_value(name, state):
    values = {"root": 1, "a": 2, "b": 6, "p": 2, "q": 2, "w": 6, "z": 8}
    assert state.value == values[name], name
    if name in ("p", "q"):
        pad = np.arange(20_000 if name == "p" else 100_000, dtype=np.uint8)
        assert bytes(state.pad if name == "p" else state.pad.tobytes()) == pad.tobytes()


def facts(tree):
    """What a restored tree shows about each state, by id."""
    shown = {}
    for state in tree.nodes:
        results = state.dagger.results
        shown[state.sha()] = (
            state.parent_sha,
            state.recipe.name if state.recipe else None,
            dict(state.recipe.params) if state.recipe else {},
            tuple(state.tags),
            str(state.dagger.status),
            {name: results.summary(name) for name in results},
        )
    return shown


@pytest.fixture(scope="module")
def pristine(tmp_path_factory):
    """The store every case damages a copy of, and what it shows when intact."""
    exp_dir = tmp_path_factory.mktemp("pristine") / "exp"
    exp = dg.Experiment(exp_dir, CounterState)
    nodes = define(exp, first=True)
    with pytest.raises(dg.RunError):
        exp.run(progress=False)
    exp = dg.Experiment(exp_dir, CounterState)
    with exp.tag("late"):
        Add(1)(exp.spawn_new_tree(start=1))  # tags gained later: a notes entry
    exp.run(progress=False)
    DirectoryStore(exp_dir).prune([nodes["z"].sha()])  # a marker entry
    ids = {name: promise.sha() for name, promise in nodes.items()}
    tree = dg.Experiment.restore(exp_dir).graph
    assert dg.verify(exp_dir).ok
    return exp_dir, ids, facts(tree)


@pytest.fixture
def store(pristine, tmp_path):
    exp_dir, ids, shown = pristine
    copy = tmp_path / "exp"
    shutil.copytree(exp_dir, copy)
    return copy, ids, shown


# -- finding and damaging the bytes ---------------------------------------------------------------


def entries(exp_dir):
    """(log path, frame, JSON) of every entry of the store's logs."""
    found = []
    for path in sorted((exp_dir / "log").glob("*.log")):
        items, _ = scan(path.read_bytes())
        found += [
            (path, item, json.loads(item.document)) for item in items if isinstance(item, Frame)
        ]
    return found


def entry(exp_dir, kind, test=lambda document: True):
    return next(
        (path, frame)
        for path, frame, document in entries(exp_dir)
        if frame.kind is kind and test(document)
    )


def flip(path: Path, position: int, mask: int = 0x01) -> None:
    data = bytearray(path.read_bytes())
    data[position] ^= mask
    path.write_bytes(bytes(data))


def json_valid_flip(path: Path, start: int, end: int, needle: bytes = b"") -> None:
    """Flip the lowest bit of a digit (0<->1, 2<->3, ...) after ``needle`` in bytes
    ``start:end``: the JSON stays valid, its meaning changes."""
    data = path.read_bytes()
    position = data.index(needle, start, end) + len(needle) if needle else start
    while not chr(data[position]).isdigit():
        position += 1
    assert position < end
    flip(path, position, 0x01)


def in_entry(kind, test, how):
    """A damage to one entry of the logs: ``how(path, frame)``; returns the damaged log."""

    def damage(exp_dir, ids):
        path, frame = entry(exp_dir, kind, lambda document: test(document, ids))
        how(path, frame)
        return f"log/{path.name}"

    return damage


def of(name):
    return lambda document, ids: document.get("id") == ids[name]


def json_part(needle=b""):
    return lambda path, frame: json_valid_flip(path, frame.offset + 52, frame.raw_offset, needle)


def raw_part(path, frame):
    flip(path, frame.raw_offset + frame.raw_size // 2)


def header(path, frame):
    flip(path, frame.offset + 9)  # the length: the header's own check fails


def cut_inside(path, frame):
    os.truncate(path, frame.offset + frame.length // 2)


def on_file(locate: Callable[[Path, dict], Path], how: str):
    def damage(exp_dir, ids):
        path = locate(exp_dir, ids)
        data = path.read_bytes()
        if how == "flip":
            flip(path, len(data) // 2)
        elif how == "json-valid flip":
            json_valid_flip(path, 0, len(data), b'"created":"')
        elif how == "truncate":
            path.write_bytes(data[: len(data) // 2])
        elif how == "empty":
            path.write_bytes(b"")
        elif how == "delete":
            path.unlink()
        elif how == "folder":  # a file replaced by a folder (a careless copy, a sync tool)
            path.unlink()
            path.mkdir()
            (path / "inner").write_bytes(data[:100])
        elif how == "replace":
            donor = sorted(p for p in path.parent.iterdir() if p != path and p.is_file())[0]
            path.write_bytes(donor.read_bytes())
        return str(path.relative_to(exp_dir))

    return damage


def payload_file(exp_dir, ids):
    (path,) = (exp_dir / "payloads").glob(f"{ids['p']}.*.pkl")
    return path


def blob_file(exp_dir, ids):
    (path,) = [p for p in (exp_dir / "blobs").rglob("*") if p.is_file()]
    return path


def result_file(exp_dir, ids):
    (path,) = (exp_dir / "results").iterdir()
    return path


def first_log(exp_dir, ids):
    return sorted((exp_dir / "log").glob("*.log"), key=lambda p: p.stat().st_size)[-1]


DAMAGES = {
    # experiment.json: rebuilt from the records, one warning
    "experiment.json json-valid flip": on_file(
        lambda d, i: d / "experiment.json", "json-valid flip"
    ),
    "experiment.json truncate": on_file(lambda d, i: d / "experiment.json", "truncate"),
    "experiment.json delete": on_file(lambda d, i: d / "experiment.json", "delete"),
    # the index: a cache, checked and rebuilt
    "index flip": on_file(lambda d, i: d / "index.json", "flip"),
    "index json-valid flip of an id": lambda d, i: _index_id_flip(d, i),
    "index truncate": on_file(lambda d, i: d / "index.json", "truncate"),
    "index empty": on_file(lambda d, i: d / "index.json", "empty"),
    "index delete": on_file(lambda d, i: d / "index.json", "delete"),
    # entries of the logs: each kind, in its JSON, its header, its inline bytes
    "record json-valid flip of a parameter": in_entry(
        Kind.RECORD, of("b"), json_part(b'"params":')
    ),
    "record json-valid flip of the parent": in_entry(
        Kind.RECORD, of("b"), json_part(b'"parent":"')
    ),
    "record header flip": in_entry(Kind.RECORD, of("a"), header),
    "record inline payload flip": in_entry(Kind.RECORD, of("a"), raw_part),
    "failure json-valid flip": in_entry(Kind.FAILURE, lambda d, i: True, json_part(b'"seq":')),
    "notes json-valid flip of a result": in_entry(Kind.NOTES, of("a"), json_part(b'"accuracy":')),
    "marker json-valid flip": in_entry(Kind.MARKER, lambda d, i: True, json_part(b'"seq":')),
    "shared part json-valid flip": in_entry(Kind.PART, lambda d, i: True, json_part(b'"key":"')),
    "value flip": in_entry(Kind.VALUE, lambda d, i: True, raw_part),
    "log cut inside an entry": in_entry(Kind.RECORD, of("b"), cut_inside),
    "log empty": on_file(first_log, "empty"),
    "log delete": on_file(first_log, "delete"),
    "log replaced by a folder": on_file(first_log, "folder"),
    # files named by their content
    "payload flip": on_file(payload_file, "flip"),
    "payload truncate": on_file(payload_file, "truncate"),
    "payload delete": on_file(payload_file, "delete"),
    "blob flip": on_file(blob_file, "flip"),
    "blob truncate": on_file(blob_file, "truncate"),
    "blob delete": on_file(blob_file, "delete"),
    "result flip": on_file(result_file, "flip"),
    "result truncate": on_file(result_file, "truncate"),
    "result empty": on_file(result_file, "empty"),
}


def _index_id_flip(exp_dir, ids):
    """One hex digit of an id inside index.json (issue 11: restore, show and ls crashed)."""
    path = exp_dir / "index.json"
    data = path.read_bytes()
    position = data.index(ids["b"][:20].encode()) + 5
    digit = chr(data[position])
    replacement = "0" if digit != "0" else "1"
    path.write_bytes(data[:position] + replacement.encode() + data[position + 1 :])
    return "index.json"


# Damage that loses nothing stored and that verify need not report (a cache, or the state is
# simply absent until the run recomputes it).
QUIET = {"index delete", "log delete", "log empty", "log cut inside an entry"}


@pytest.mark.parametrize("case", sorted(DAMAGES))
def test_damage_is_reported_or_recomputed_never_wrong(store, case, call_log):
    exp_dir, ids, shown = store
    damaged = DAMAGES[case](exp_dir, ids)

    # reported by path, before anything is done about it
    report = dg.verify(exp_dir)
    if case not in QUIET:
        assert not report.ok, case
        assert any(problem.path == damaged for problem in report.problems), str(report)

    # shown: never wrong (states may be absent or `missing`, never different)
    tree = dg.Experiment.restore(exp_dir).graph
    now = facts(tree)
    for sha, seen in now.items():
        parent, recipe, params, tags, status, results = seen
        then = shown[sha]
        assert (parent, recipe, params) == then[:3], (case, sha)
        assert set(tags) <= set(then[3]), (case, sha)
        # a lost `pruned` marker shows the state done again: its content is still whole
        allowed = {then[4], "missing", *(["done"] if then[4] == "pruned" else [])}
        assert status in allowed, (case, sha, status)
        assert all(results[name] == then[5][name] for name in results), (case, sha)
    # results that are loaded: right or refused (and a refused one is recomputed by the run)
    for state in tree.nodes:
        for name in state.dagger.results:
            try:
                value = state.dagger.results[name]
            except dg.CorruptStateError:
                continue
            if name == "spectrum":
                assert np.array_equal(value, np.linspace(0, 1, 64) * 6), case
            elif name == "wide":
                assert np.array_equal(value, np.full(3000, 6.0)), case
    # loads: right or refused
    names = {sha: name for name, sha in ids.items()}
    for state in tree.nodes:
        name = names.get(state.sha())
        if name is None or state.dagger.status != "done":
            continue
        loaded = dg.Experiment.restore(exp_dir).load_state(state.sha())
        if loaded is not None:
            expected_value(name, loaded)

    # gc never deletes while an entry is damaged; it says which
    collected = dg.gc(exp_dir, dry_run=True)
    if collected.refused:
        assert "removed nothing" in str(collected)

    # the next run recomputes what was lost, and loses nothing intact
    exp = dg.Experiment(exp_dir, CounterState)
    nodes = define(exp, first=False)
    before = len(read_log(call_log))
    exp.run(progress=False)
    for name, promise in nodes.items():
        expected_value(name, promise.get())
    assert len(read_log(call_log)) - before <= 8, read_log(call_log)[before:]
    tree = dg.Experiment.restore(exp_dir).graph
    assert tree.node(ids["a"]).dagger.results["evaluate"] == {"accuracy": 0.97, "value": 2}
    assert np.array_equal(tree.node(ids["b"]).dagger.results["spectrum"], np.linspace(0, 1, 64) * 6)
    assert np.array_equal(tree.node(ids["w"]).dagger.results["wide"], np.full(3000, 6.0))
    after = dg.verify(exp_dir)
    assert after.ok or all(problem.path == damaged for problem in after.problems), str(after)


def test_every_kind_of_damage_at_once_through_the_command_line(store, subprocess_env):
    exp_dir, ids, _ = store
    paths = {
        DAMAGES["experiment.json json-valid flip"](exp_dir, ids),
        DAMAGES["index json-valid flip of an id"](exp_dir, ids),
        DAMAGES["record json-valid flip of a parameter"](exp_dir, ids),
        DAMAGES["notes json-valid flip of a result"](exp_dir, ids),
        DAMAGES["payload flip"](exp_dir, ids),
        DAMAGES["blob truncate"](exp_dir, ids),
        DAMAGES["result flip"](exp_dir, ids),
    }
    outputs = {}
    for command in (["show"], ["ls", "--format", "csv"], ["verify"], ["gc", "--dry-run"]):
        result = subprocess.run(
            [sys.executable, "-m", "dagger", *command, str(exp_dir)],
            env=subprocess_env,
            capture_output=True,
            text=True,
            cwd=exp_dir.parent,
        )
        assert "Traceback" not in result.stderr, result.stderr
        assert result.returncode in (0, 1), result.stderr
        outputs[command[0]] = result.stdout
    assert "1.97" not in outputs["show"] + outputs["ls"]  # the flipped result is not shown
    assert "0.97" in outputs["show"]  # ... the recorded one is
    for path in paths - {"index.json"}:
        assert path in outputs["verify"], (path, outputs["verify"])
    assert "removed nothing" in outputs["gc"]


def test_a_log_folder_replaced_by_a_file_is_reported(store, subprocess_env):
    exp_dir, ids, _ = store
    shutil.rmtree(exp_dir / "log")
    (exp_dir / "log").write_text("junk\n")
    result = subprocess.run(
        [sys.executable, "-m", "dagger", "verify", str(exp_dir)],
        env=subprocess_env,
        capture_output=True,
        text=True,
        cwd=exp_dir.parent,
    )
    assert result.returncode == 1, result.stdout + result.stderr
    assert "Traceback" not in result.stderr
    assert "  - log: is a file, not dagger's folder of logs" in result.stdout
    assert "no problems" not in result.stdout
    # a run says what is in the way, and where (relative to the experiment folder)
    exp = dg.Experiment(exp_dir, CounterState)
    define(exp, first=False)
    with pytest.raises(dg.StoreError, match=r"`log` is a file, where dagger keeps its folder"):
        exp.run(progress=False)


@pytest.mark.parametrize("fix", ["load", "gc --repair"])
@pytest.mark.parametrize(
    ("damage", "name"),
    [("record inline payload flip", "a"), ("payload flip", "p"), ("blob flip", "q")],
)
def test_damaged_content_is_recomputed_as_verify_says(
    store, subprocess_env, call_log, fix, damage, name
):
    exp_dir, ids, _ = store
    damaged = DAMAGES[damage](exp_dir, ids)

    def dagger(*command):
        return subprocess.run(
            [sys.executable, "-m", "dagger", *command, str(exp_dir)],
            env=subprocess_env,
            capture_output=True,
            text=True,
            cwd=exp_dir.parent,
        )

    said = dagger("verify").stdout
    assert f"state {ids[name][:12]}: {damaged}: " in said, said
    assert "`dagger gc --repair` (or loading the state) sets it aside" in said
    # a run that does not need the state leaves it be (its children are stored)
    exp = dg.Experiment(exp_dir, CounterState)
    define(exp, first=False)
    exp.run(progress=False)
    if fix == "load":
        assert dg.Experiment.restore(exp_dir).load_state(ids[name]) is None
    else:
        repaired = dagger("gc", "--repair")
        assert repaired.returncode == 0, repaired.stdout + repaired.stderr
        assert "set aside 1 state(s) whose content is damaged" in repaired.stdout
        assert ids[name][:12] in repaired.stdout
    before = len(read_log(call_log))
    exp = dg.Experiment(exp_dir, CounterState)
    nodes = define(exp, first=False)
    report = exp.run(progress=False)
    assert report.computed == 1  # recomputed once, nothing else
    assert read_log(call_log)[before:] == (["add:1"] if name == "a" else [])
    expected_value(name, nodes[name].get())
    assert dg.verify(exp_dir).ok
    exp = dg.Experiment(exp_dir, CounterState)
    define(exp, first=False)
    assert exp.run(progress=False).computed == 0


@pytest.mark.parametrize(
    "damage",
    ["experiment.json json-valid flip", "experiment.json truncate", "experiment.json delete"],
)
def test_a_run_that_computes_nothing_rewrites_a_damaged_experiment_json(
    store, subprocess_env, damage
):
    exp_dir, ids, _ = store
    DAMAGES[damage](exp_dir, ids)
    script = exp_dir.parent / "rerun.py"
    script.write_text(
        "import sys\n"
        "import dagger as dg\n"
        "from helpers import Add, CounterState\n"
        "exp = dg.Experiment(sys.argv[1], CounterState)\n"
        "Add(1)(exp.spawn_new_tree(start=1))\n"
        "print(exp.run(progress=False).computed)\n"
    )
    result = subprocess.run(
        [sys.executable, str(script), str(exp_dir)],
        env=subprocess_env,
        capture_output=True,
        text=True,
        cwd=exp_dir.parent,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["0"]  # all cached: nothing computed...
    assert "The next run writes the rebuilt file" in result.stderr
    # ... and yet the rebuilt file is written, as the warning said
    written = json.loads((exp_dir / "experiment.json").read_text())
    assert ids["root"] in written["roots"]
    assert dg.verify(exp_dir).ok, str(dg.verify(exp_dir))
    if damage != "experiment.json delete":
        assert list((exp_dir / "quarantine").glob("experiment.json.*"))  # the evidence


# -- smaller cases (issue 11) -----------------------------------------------------------------------


class DictLoader(dg.ExperimentState):
    """Saved by a save_hook whose load_hook gives back a dict, not a state."""

    def initialize_state(self, **arguments):
        self.text = "hello"

    def save_hook(self, path):
        Path(path).write_text(self.text)

    @classmethod
    def load_hook(cls, path):
        return {"text": Path(path).read_text()}


def test_a_payload_that_is_not_a_state_is_treated_as_corrupt(exp_dir, dagger_warnings):
    exp = dg.Experiment(exp_dir, DictLoader)
    root = exp.spawn_new_tree()
    exp.run(progress=False)
    assert exp.load_state(root.sha()) is None  # refused, not handed out as a state
    assert any("not an ExperimentState" in r.getMessage() for r in dagger_warnings.records)
    tree = dg.Experiment.restore(exp_dir, DictLoader).graph
    assert tree.root.dagger.status == "missing"  # and a run computes it again
    assert "its payload holds a dict" in str(dg.verify(exp_dir))  # why it was set aside


def test_infinities_and_nan_are_recorded_as_numbers(exp_dir):
    import math

    class Scale(dg.Recipe):
        def __init__(self, factor):
            self.factor = factor

        def run(self, state):
            return state

    exp = dg.Experiment(exp_dir, CounterState)
    root = exp.spawn_new_tree(start=1)
    Scale(math.inf)(root)
    Scale(2.0)(root)
    nan_state = Scale(math.nan)(root)
    dg.Function(lambda state: {"loss": math.inf, "gap": math.nan}, name="metrics")(nan_state)
    exp.run(progress=False)
    nodes = dg.Experiment.restore(exp_dir).graph.nodes
    (infinite,) = nodes.where(factor=math.inf)
    assert infinite.recipe.params["factor"] == math.inf
    (stored_nan,) = nodes.where(factor=lambda value: isinstance(value, float) and math.isnan(value))
    assert stored_nan.dagger.results["metrics"]["loss"] == math.inf
    frame = nodes.to_dataframe()
    assert frame["param.factor"].dtype == float and math.isinf(frame["param.factor"].max())


def test_a_self_referencing_argument_that_is_not_identity_is_stored(exp_dir):
    loop: list = [1]
    loop.append(loop)
    exp = dg.Experiment(exp_dir, CounterState)
    root = exp.spawn_new_tree(start=1, note=loop)  # `note` is a NONHASHED_ATTRIBUTE
    exp.run(progress=False)
    note = root.get().note
    assert note[1] is note  # the state keeps the cycle
    record = DirectoryStore(exp_dir).read_record(root.sha())
    assert record.arguments["note"] == [1, "[...]"]  # the record shows it, like repr does


def test_python_m_dagger_show_does_not_import_the_working_directory(tmp_path, subprocess_env):
    work = tmp_path / "project"
    work.mkdir()
    (work / "model.py").write_text(
        "import pathlib\n"
        "pathlib.Path('imported').write_text('the working directory was imported')\n"
        "import dagger as dg\n"
        "class Study(dg.ExperimentState):\n"
        "    def initialize_state(self, **arguments):\n"
        "        self.value = 1\n"
    )
    subprocess.run(
        [
            sys.executable,
            "-c",
            "import dagger as dg, model; e = dg.Experiment('exp', model.Study); "
            "e.spawn_new_tree(); e.run(progress=False)",
        ],
        cwd=work,
        env=subprocess_env,
        check=True,
    )
    (work / "imported").unlink()
    shown = subprocess.run(
        [sys.executable, "-m", "dagger", "show", "exp"],
        cwd=work,
        env=subprocess_env,
        capture_output=True,
        text=True,
    )
    assert shown.returncode == 0, shown.stderr
    assert "1 state: 1 done" in shown.stdout
    assert not (work / "imported").exists()


def test_gc_refuses_while_an_entry_is_damaged_and_repair_sets_it_aside(store, subprocess_env):
    exp_dir, ids, _ = store
    orphan = exp_dir / "blobs" / "ab" / ("ab" * 32)
    orphan.parent.mkdir(parents=True, exist_ok=True)
    orphan.write_bytes(b"nothing refers to me")
    damaged = DAMAGES["record json-valid flip of a parameter"](exp_dir, ids)

    def gc(*flags):
        return subprocess.run(
            [sys.executable, "-m", "dagger", "gc", str(exp_dir), *flags],
            env=subprocess_env,
            capture_output=True,
            text=True,
        )

    refused = gc()
    assert refused.returncode == 1 and "removed nothing" in refused.stdout
    assert damaged in refused.stdout and "--repair" in refused.stdout
    assert orphan.exists()
    repaired = gc("--repair")
    assert repaired.returncode == 0, repaired.stdout + repaired.stderr
    assert "blobs/ab/" in repaired.stdout and not orphan.exists()
    assert list((exp_dir / "quarantine" / "log").iterdir())  # the evidence
    report = dg.verify(exp_dir)
    assert report.ok, str(report)
    tree = dg.Experiment.restore(exp_dir).graph
    assert ids["b"] not in tree.node_map and ids["a"] in tree.node_map  # b: lost, recomputed
    exp = dg.Experiment(exp_dir, CounterState)
    nodes = define(exp, first=False)
    assert exp.run(progress=False).computed == 1
    expected_value("b", nodes["b"].get())


def test_verify_reports_orphans_and_dead_writers_temporary_files_and_gc_takes_them(exp_dir):
    exp = dg.Experiment(exp_dir, CounterState)
    a = Add(1)(exp.spawn_new_tree(start=1))
    exp.run(progress=False)
    (first,) = (exp_dir / "log").glob("*.log")
    exp = dg.Experiment(exp_dir, CounterState)
    b = Multiply(3)(Add(1)(exp.spawn_new_tree(start=1)))
    exp.run(progress=False)
    first.unlink()  # the log holding the root and `a` is lost: `b` is left without its parent
    temp = exp_dir / "payloads" / ".x.pkl.tmp-424242-deadbeef-3"  # of a writer long gone
    temp.parent.mkdir(exist_ok=True)
    temp.write_bytes(b"\0" * 1000)
    report = dg.verify(exp_dir)
    problems = {problem.path: problem for problem in report.problems}
    assert "payloads/.x.pkl.tmp-424242-deadbeef-3" in problems
    assert "temporary file left by a writer that is gone" in str(report)
    (orphan,) = [p for p in report.problems if p.state_id == b.sha()]
    assert f"orphaned: its parent {a.sha()[:12]} is not in the store" in orphan.message
    collected = dg.gc(exp_dir)  # no grace period: no process owns it
    assert "payloads/.x.pkl.tmp-424242-deadbeef-3" in collected.removed and not temp.exists()
    exp = dg.Experiment(exp_dir, CounterState)
    b = Multiply(3)(Add(1)(exp.spawn_new_tree(start=1)))
    assert exp.run(progress=False).computed == 2  # the parent and root again; b was there
    assert dg.verify(exp_dir).ok
