"""The index is a checked snapshot, never the only copy (issues 11, 14 and 15).

A restore from a store whose index is missing, stale, damaged or from another store gives the
same tree as one read from the logs alone; the index never contradicts the records after a
recovery; a failed state's record keeps its first cause.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from helpers import Add, Boom, CounterState, Multiply, read_log

import dagger as dg
from dagger.store import DirectoryStore


def build(exp_dir, *, more=False):
    exp = dg.Experiment(exp_dir, CounterState)
    root = exp.spawn_new_tree(start=1)
    with exp.tag("base"):
        a = Add(1)(root)
    dg.Function(lambda state: {"value": state.value}, name="measure")(a)
    for factor in range(2, 6):
        Multiply(factor)(a)
    Boom()(root)
    if more:
        with exp.tag("more"):
            Multiply(10)(Add(2)(root))
            Add(1)(root)  # a tag gained by a stored state
    with pytest.raises(dg.RunError):
        exp.run(progress=False)


def shown(tree):
    """Everything a restored tree shows, in its order."""
    return [
        (
            state.sha(),
            state.parent_sha,
            state.dagger.depth,
            str(state.recipe) if state.recipe else None,
            tuple(state.tags),
            str(state.dagger.status),
            {
                name: value.tolist() if isinstance(value, np.ndarray) else value
                for name, value in state.dagger.results.items()
            },
            sorted(tree.edge_map[state.sha()]),
        )
        for state in tree.nodes
    ]


def from_the_logs(exp_dir):
    """The tree as the logs alone say it (a copy of the store without its index)."""
    copy = exp_dir.parent / "logs-only"
    shutil.copytree(exp_dir, copy)
    (copy / "index.json").unlink(missing_ok=True)
    return shown(dg.Experiment.restore(copy).graph)


@pytest.mark.parametrize(
    "case", ["missing", "stale", "flipped bit", "truncated", "emptied", "another store's"]
)
def test_restore_with_a_bad_index_gives_the_tree_of_the_records(exp_dir, tmp_path, case):
    build(exp_dir)
    old_index = (exp_dir / "index.json").read_bytes()
    build(exp_dir, more=True)
    index = exp_dir / "index.json"
    if case == "missing":
        index.unlink()
    elif case == "stale":
        index.write_bytes(old_index)  # valid, but from before the second run
    elif case == "flipped bit":
        data = bytearray(index.read_bytes())
        data[len(data) // 2] ^= 0x04
        index.write_bytes(bytes(data))
    elif case == "truncated":
        index.write_bytes(index.read_bytes()[:1000])
    elif case == "emptied":
        index.write_bytes(b"")
    else:
        other = tmp_path / "other"
        build(other, more=True)
        shutil.copy(other / "index.json", index)  # valid, checksummed, about other logs
    expected = from_the_logs(exp_dir)
    assert len(expected) == 9
    assert shown(dg.Experiment.restore(exp_dir).graph) == expected
    assert shown(dg.Experiment.restore(exp_dir).graph) == expected  # and with the rewritten one
    assert dg.verify(exp_dir).ok


def test_an_index_with_a_wrong_id_inside_is_not_trusted(exp_dir, subprocess_env):
    """One hex digit of an id changed inside index.json (issue 11: restore, show and ls
    crashed; a wrong parent survived later runs)."""
    build(exp_dir)
    index = exp_dir / "index.json"
    data = index.read_text()
    table = DirectoryStore(exp_dir).snapshot()
    victim = table.ids[3]
    position = data.index(victim) + 10
    index.write_text(
        data[:position] + ("0" if data[position] != "0" else "1") + data[position + 1 :]
    )
    expected = from_the_logs(exp_dir)
    assert shown(dg.Experiment.restore(exp_dir).graph) == expected
    for command in ("show", "ls"):
        result = subprocess.run(
            [sys.executable, "-m", "dagger", command, str(exp_dir)],
            env=subprocess_env,
            capture_output=True,
            text=True,
        )
        assert result.returncode == 0 and "Traceback" not in result.stderr, result.stderr
        assert victim[:12] in result.stdout


def test_a_recomputed_state_is_shown_done_in_every_later_restore(exp_dir, subprocess_env):
    """Issue 14, item 6: a payload damaged on disk is quarantined and recomputed; restore and
    `dagger show` then show it done, not missing."""
    exp = dg.Experiment(DirectoryStore(exp_dir, inline_limit=0), CounterState)
    child = Add(1)(exp.spawn_new_tree(start=1))
    exp.run(progress=False)
    (payload,) = (exp_dir / "payloads").glob(f"{child.sha()}.*")
    payload.write_bytes(b"damaged")
    tree = dg.Experiment.restore(exp_dir).graph
    assert tree.node(child.sha()).restore() is False  # quarantined
    assert dg.Experiment.restore(exp_dir).graph.node(child.sha()).dagger.status == "missing"
    exp = dg.Experiment(exp_dir, CounterState)
    child = Add(1)(exp.spawn_new_tree(start=1))
    assert exp.run(progress=False).computed == 1
    for _ in range(2):
        tree = dg.Experiment.restore(exp_dir).graph
        assert tree.node(child.sha()).dagger.status == "done"
    result = subprocess.run(
        [sys.executable, "-m", "dagger", "show", str(exp_dir)],
        env=subprocess_env,
        capture_output=True,
        text=True,
    )
    assert "2 states: 2 done" in result.stdout and "missing" not in result.stdout
    assert child.get().value == 2


class BrokenRoot(dg.ExperimentState):
    PROPERTIES = ["start"]

    def initialize_state(self, **arguments):
        raise ValueError("the data folder is empty")


def test_a_failed_roots_record_keeps_its_first_cause(exp_dir):
    """Issue 14, item 8: a root that failed, grown from after a restore, keeps its failure
    record (the original cause, and that it is a root)."""
    exp = dg.Experiment(exp_dir, BrokenRoot)
    root = exp.spawn_new_tree(start=1)
    with pytest.raises(dg.RunError):
        exp.run(progress=False)
    restored = dg.Experiment.restore(exp_dir, BrokenRoot)
    (failed,) = restored.graph.roots
    assert failed.dagger.status == "failed"
    Add(1)(failed)  # grow the restored (failed) root
    with pytest.raises(dg.RunError, match="the data folder is empty"):
        restored.run(progress=False)
    record = DirectoryStore(exp_dir).read_failure(root.sha())
    assert record.root is True
    assert record.error.type == "ValueError" and "the data folder is empty" in record.error.message
    tree = dg.Experiment.restore(exp_dir, BrokenRoot).graph
    assert tree.root.dagger.error.message == "the data folder is empty"


# -- the layout's own failure modes (issue 15: sections decoded when first read) -----------------

INDEX1 = Path(__file__).parent / "data" / "index1"


def sections_of(data):
    """``(first line, head, {name: JSON text})`` of an index in the ``dagger-index-2`` layout
    (see dagger/store/index.py's docstring)."""
    magic, _, rest = data.split(b"\n", 2)
    head_text, _, tail = rest.partition(b"\n")
    head = json.loads(head_text)
    sections, position = {}, 0
    for name, length in head["sections"]:
        sections[name] = tail[position : position + length]
        position += length
    assert position == len(tail)
    return magic, head, sections


def section_span(index, name):
    """Where a section's text lies in the index file: ``(start, end)`` byte offsets."""
    data = index.read_bytes()
    start = data.index(b"\n", data.index(b"\n", data.index(b"\n") + 1) + 1) + 1
    _, head, _ = sections_of(data)
    for other, length in head["sections"]:
        if other == name:
            return start, start + length
        start += length
    raise AssertionError(name)


def forge(index, name, text):
    """Replace one section's text and write the index with its head and checksum made to
    match (a hand edit that recomputes the checksum: the one way a section that does not
    decode gets past it)."""
    magic, head, sections = sections_of(index.read_bytes())
    sections[name] = text
    head["sections"] = [[other, len(sections[other])] for other, _ in head["sections"]]
    body = b"".join(
        [json.dumps(head, separators=(",", ":")).encode(), b"\n"]
        + [sections[other] for other, _ in head["sections"]]
    )
    checksum = hashlib.sha256(body).hexdigest()[:32].encode()
    index.write_bytes(magic + b"\n" + checksum + b"\n" + body)


def a_row_short(text):
    value = json.loads(text)
    if isinstance(value, dict) and "usual" in value:  # packed: an exception past the end
        value = {"usual": value["usual"], "rows": [10**6], "values": [value["usual"]]}
    elif isinstance(value, dict) and "runs" in value:  # runs of steps: the last one shorter
        value["runs"][-1] -= 1
    elif isinstance(value, dict):
        value = {"x": 1}  # a per-row map: a key that is not a row
    else:
        value = value[:-1]
    return json.dumps(value).encode()


DAMAGED_SECTIONS = {
    "not JSON": lambda text: text[: len(text) // 2],
    "a row short": a_row_short,
    "another shape": lambda text: b'"a string"',
}


def index_written_again(exp_dir):
    data = (exp_dir / "index.json").read_bytes()
    assert data.startswith(b"dagger-index-2\n")
    return data


@pytest.mark.parametrize("damage", sorted(DAMAGED_SECTIONS))
@pytest.mark.parametrize("section", ["rseq", "params", "results", "pfile", "created"])
def test_a_section_that_does_not_decode_is_replaced_by_the_logs(
    exp_dir, dagger_warnings, section, damage
):
    """A section whose checksum matches but whose text does not decode (the wrong JSON, a
    row short, another shape) is found only when it is first read: the catalog then becomes
    the one the logs hold, nothing of the index kept, and the index is written again."""
    build(exp_dir, more=True)
    expected = from_the_logs(exp_dir)
    index = exp_dir / "index.json"
    _, _, sections = sections_of(index.read_bytes())
    forge(index, section, DAMAGED_SECTIONS[damage](sections[section]))
    forged = index.read_bytes()
    report = dg.verify(exp_dir)
    assert [problem.path for problem in report.problems] == ["index.json"]
    assert "malformed" in report.problems[0].message
    assert shown(dg.Experiment.restore(exp_dir).graph) == expected
    assert any("does not decode" in record.message for record in dagger_warnings.records)
    assert index_written_again(exp_dir) != forged
    dagger_warnings.clear()
    assert shown(dg.Experiment.restore(exp_dir).graph) == expected
    assert not dagger_warnings.records  # the rewritten index decodes
    assert dg.verify(exp_dir).ok


def simple_tree(exp_dir, *, more=False):
    exp = dg.Experiment(DirectoryStore(exp_dir, inline_limit=0), CounterState)
    root = exp.spawn_new_tree(start=1)
    a = Add(1)(root)
    dg.Function(lambda state: {"value": state.value}, name="measure")(a)
    Multiply(2)(a)
    Multiply(3)(a)
    if more:
        Multiply(7)(Add(2)(root))
    return exp


@pytest.mark.parametrize("section", ["rseq", "mark", "pkind", "created"])
def test_a_rerun_with_a_section_that_does_not_decode_recomputes_nothing(
    exp_dir, call_log, dagger_warnings, section
):
    """The section fails while a cached rerun surveys the store (``rseq``, ``mark``: its
    statuses; ``pkind``: its check of the payloads) or, for ``created``, when a run that
    computes new states adds them: the run goes on from the logs, computes only what is new."""
    assert simple_tree(exp_dir).run(progress=False).computed == 4
    index = exp_dir / "index.json"
    _, _, sections = sections_of(index.read_bytes())
    forge(index, section, DAMAGED_SECTIONS["not JSON"](sections[section]))
    before = len(read_log(call_log))
    report = simple_tree(exp_dir, more=section == "created").run(progress=False)
    assert report.computed == (2 if section == "created" else 0)
    assert len(read_log(call_log)) - before == report.computed
    assert any("does not decode" in record.message for record in dagger_warnings.records)
    expected = from_the_logs(exp_dir)
    assert shown(dg.Experiment.restore(exp_dir).graph) == expected
    index_written_again(exp_dir)
    assert dg.verify(exp_dir).ok


@pytest.mark.parametrize("section", ["params", "created", "seconds", "results"])
def test_a_flipped_byte_inside_a_section_read_later_is_caught_by_the_checksum(
    exp_dir, dagger_warnings, section
):
    """The checksum covers every section and is checked before anything is used: a byte
    flipped inside one that only a restore reads makes the whole index ignored up front."""
    build(exp_dir, more=True)
    expected = from_the_logs(exp_dir)
    index = exp_dir / "index.json"
    start, end = section_span(index, section)
    data = bytearray(index.read_bytes())
    data[(start + end) // 2] ^= 0x01
    index.write_bytes(bytes(data))
    report = dg.verify(exp_dir)
    assert [problem.path for problem in report.problems] == ["index.json"]
    assert "does not match its checksum" in report.problems[0].message
    assert shown(dg.Experiment.restore(exp_dir).graph) == expected
    assert not any("does not decode" in record.message for record in dagger_warnings.records)
    index_written_again(exp_dir)
    assert shown(dg.Experiment.restore(exp_dir).graph) == expected
    assert dg.verify(exp_dir).ok


@pytest.mark.parametrize("where", ["inside the head", "inside a section", "the last byte"])
def test_a_truncated_index_is_ignored_and_written_again(exp_dir, where):
    build(exp_dir, more=True)
    expected = from_the_logs(exp_dir)
    index = exp_dir / "index.json"
    data = index.read_bytes()
    start, end = section_span(index, "created")
    cut = {"inside the head": 60, "inside a section": (start + end) // 2, "the last byte": -1}
    index.write_bytes(data[: cut[where]])
    assert "does not match its checksum" in str(dg.verify(exp_dir))
    assert shown(dg.Experiment.restore(exp_dir).graph) == expected
    assert index_written_again(exp_dir) == data or dg.verify(exp_dir).ok
    assert shown(dg.Experiment.restore(exp_dir).graph) == expected


def test_an_index_an_older_dagger_wrote_is_read_from_the_logs_and_rewritten(tmp_path):
    """tests/data/index1 (tests/data/make_index1.py) holds an index in the one-document
    layout of commit 3968173: not misread, not reported as damage, rewritten by a restore."""
    exp_dir = tmp_path / "index1"
    shutil.copytree(INDEX1, exp_dir)
    assert (exp_dir / "index.json").read_bytes().startswith(b"dagger-index\n")
    expected = from_the_logs(exp_dir)
    assert len(expected) == 8
    assert dg.verify(exp_dir).ok
    assert shown(dg.Experiment.restore(exp_dir).graph) == expected
    index_written_again(exp_dir)
    assert shown(dg.Experiment.restore(exp_dir).graph) == expected
    assert dg.verify(exp_dir).ok


def test_a_cached_rerun_decodes_only_the_columns_it_reads(exp_dir):
    """What only a restore shows (creation times, parameters, durations, results) stays
    undecoded through a cached rerun; a restore then decodes it and shows the same tree."""
    simple_tree(exp_dir).run(progress=False)
    store = DirectoryStore(exp_dir)
    exp = dg.Experiment(store, CounterState)
    root = exp.spawn_new_tree(start=1)
    Multiply(2)(Add(1)(root))
    assert exp.run(progress=False).computed == 0
    assert store.catalog is not None
    assert {"created", "params", "seconds", "roff", "extras"} <= set(store.catalog.pending)
    assert "rseq" not in store.catalog.pending
    table = store.snapshot()
    assert store.catalog.pending == ()
    assert len(table.ids) == 4
    assert shown(dg.Experiment.restore(exp_dir).graph) == from_the_logs(exp_dir)


def test_entries_past_the_index_decode_only_what_they_change(exp_dir):
    """An index a few entries behind the logs (a tag gained: a notes entry) is read, the
    entries past it applied, and the columns they do not change are still not decoded."""
    simple_tree(exp_dir).run(progress=False)
    index = exp_dir / "index.json"
    behind = index.read_bytes()
    exp = dg.Experiment(exp_dir, CounterState)
    with exp.tag("late"):
        a = Add(1)(exp.spawn_new_tree(start=1))
    exp.run(progress=False)
    index.write_bytes(behind)
    store = DirectoryStore(exp_dir)
    assert store.survey().tags_of(a.sha()) == ("late",)
    assert {"created", "params", "seconds", "roff"} <= set(store.catalog.pending)
    assert shown(dg.Experiment.restore(exp_dir).graph) == from_the_logs(exp_dir)


def test_an_index_holding_every_kind_of_entry_reads_back_as_the_logs(exp_dir, dagger_warnings):
    """Payload files, a pruned and a removed state, a quarantined payload, a failure,
    Function results kept in the log (a value) and as JSON, gained tags: every section."""
    simple_tree(exp_dir, more=True).run(progress=False)  # payload files
    exp = dg.Experiment(exp_dir, CounterState)  # payloads and results inside the log
    root = exp.spawn_new_tree(start=1)
    dg.Function(lambda state: np.arange(5) * state.value, name="spectrum")(Add(5)(root))
    Boom()(root)
    with pytest.raises(dg.RunError):
        exp.run(progress=False)
    tree = dg.Experiment.restore(exp_dir).graph
    restored = dg.Experiment.restore(exp_dir)
    victims = [state.sha() for state in tree.nodes if str(state.recipe).startswith("Multiply(7")]
    restored.prune([state.sha() for state in tree.nodes if state.sha() not in victims])
    restored.remove([state.sha() for state in tree.nodes if str(state.recipe) == "Multiply(3)"])
    (payload,) = (exp_dir / "payloads").glob(f"{tree.root.sha()}.*")
    payload.write_bytes(b"damaged")
    assert dg.Experiment.restore(exp_dir).graph.root.restore() is False  # quarantined
    DirectoryStore(exp_dir).save_index(force=True)
    data = (exp_dir / "index.json").read_bytes()
    _, _, sections = sections_of(data)
    for name in ("pfile", "mreason", "values"):
        assert sections[name] != b"{}", name
    expected = from_the_logs(exp_dir)
    assert shown(dg.Experiment.restore(exp_dir).graph) == expected
    assert (exp_dir / "index.json").read_bytes() == data  # read, not rewritten
    assert not any("does not decode" in record.message for record in dagger_warnings.records)


@pytest.mark.parametrize("section", ["params", "rtags"])
def test_the_command_line_reads_the_logs_past_a_section_that_does_not_decode(
    exp_dir, subprocess_env, section
):
    """A fresh process (``dagger ls``) with a forged section shows what the logs hold."""
    build(exp_dir, more=True)
    copy = exp_dir.parent / "logs-only"
    shutil.copytree(exp_dir, copy)
    (copy / "index.json").unlink()
    index = exp_dir / "index.json"
    _, _, sections = sections_of(index.read_bytes())
    forge(index, section, DAMAGED_SECTIONS["a row short"](sections[section]))
    results = [
        subprocess.run(
            [sys.executable, "-m", "dagger", "ls", "--format", "csv", str(folder)],
            env=subprocess_env,
            capture_output=True,
            text=True,
        )
        for folder in (exp_dir, copy)
    ]
    for result in results:
        assert result.returncode == 0 and "Traceback" not in result.stderr, result.stderr
    assert results[0].stdout == results[1].stdout and results[0].stdout.count("\n") >= 9
    assert "does not decode" in results[0].stderr


def wide_tree(exp_dir):
    """Enough states (over 64) for the index to pack its columns: 4 branches of 30 leaves, a
    Function on every fifth leaf of the last branch."""
    exp = dg.Experiment(DirectoryStore(exp_dir, durability="fast"), CounterState)
    root = exp.spawn_new_tree(start=1)
    for branch in range(4):
        child = Add(branch)(root)
        for leaf in range(30):
            state = Multiply(leaf)(child)
            if branch == 3 and leaf % 5 == 0:
                dg.Function(lambda state: {"value": state.value}, name="measure")(state)
    return exp


@pytest.mark.parametrize("damage", [None, "a row short", "not JSON"])
@pytest.mark.parametrize(
    ("section", "form"), [("rseq", "runs"), ("parent", "runs"), ("results", "usual")]
)
def test_packed_columns_read_back_as_the_logs(exp_dir, dagger_warnings, section, form, damage):
    """Sequence numbers and parents are written as runs of steps, results around None (the
    forms only columns of 64 rows and more take); intact or damaged, a restore shows what the
    logs hold."""
    assert wide_tree(exp_dir).run(progress=False).computed == 125
    index = exp_dir / "index.json"
    _, _, sections = sections_of(index.read_bytes())
    assert form in json.loads(sections[section])
    if damage is not None:
        forge(index, section, DAMAGED_SECTIONS[damage](sections[section]))
    assert shown(dg.Experiment.restore(exp_dir).graph) == from_the_logs(exp_dir)
    warned = any("does not decode" in record.message for record in dagger_warnings.records)
    assert warned == (damage is not None)
    assert wide_tree(exp_dir).run(progress=False).computed == 0
    assert dg.verify(exp_dir).ok
