"""The command line, run the way a user runs it: ``python -m dagger`` in a subprocess."""

from __future__ import annotations

import io
import json
import shutil
import subprocess
import sys
import xml.etree.ElementTree as ET

import pandas
import pytest
from helpers import Add, Boom, CounterState, Multiply

import dagger as dg

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def measure(state):
    return {"value": state.value, "ratio": state.value / 4}


@pytest.fixture
def stored(exp_dir):
    """root -> a(+1) [measure] -> {b(*3) [prune], c(*5) [prune, big]};
    root -> d(+10) [baseline] -> e(Boom) [baseline], which fails."""
    exp = dg.Experiment(exp_dir, CounterState)
    root = exp.spawn_new_tree(start=1)
    a = dg.Function(measure)(Add(1)(root))
    with exp.tag("prune"):
        b = Multiply(3)(a)
        with exp.tag("big"):
            c = Multiply(5)(a)
    with exp.tag("baseline"):
        d = Add(10)(root)
        e = Boom()(d)
    with pytest.raises(dg.RunError):
        exp.run(progress=False)
    return {name: p.sha() for name, p in dict(root=root, a=a, b=b, c=c, d=d, e=e).items()}


@pytest.fixture
def cli(subprocess_env, tmp_path):
    """Runs ``python -m dagger ARGS`` in tmp_path; returns the completed process."""

    def run(*args, env=None, encoding="utf-8", cwd=tmp_path):
        environment = dict(subprocess_env if env is None else env)
        environment.setdefault("PYTHONIOENCODING", encoding)
        return subprocess.run(
            [sys.executable, "-m", "dagger", *map(str, args)],
            cwd=cwd,
            env=environment,
            capture_output=True,
            text=True,
            encoding=encoding,
            timeout=120,
        )

    return run


def assert_one_line_error(result, *needles):
    assert result.returncode == 2, result.stderr
    assert result.stdout == ""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "Traceback" not in result.stderr
    for needle in needles:
        assert needle in lines[0]


# -- show ------------------------------------------------------------------------------------------


def test_show_prints_the_tree(cli, exp_dir, stored):
    result = cli("show", exp_dir)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    line = {name: next(text for text in lines if sha[:12] in text) for name, sha in stored.items()}
    assert lines[0] == line["root"] == f"root(start=1)  {stored['root'][:12]}  done"
    assert line["a"].startswith(("├─ Add(amount=1)", "└─ Add(amount=1)"))
    assert "measure.ratio=0.5, measure.value=2" in line["a"]
    assert line["c"].endswith("Multiply(factor=5)  " + stored["c"][:12] + "  [prune, big]  done")
    assert line["e"].endswith(
        f"Boom(fail=True)  {stored['e'][:12]}  [baseline]  FAILED ValueError: boom on purpose"
    )
    # Each child is below its parent, one level deeper.
    for name, parent in [("a", "root"), ("d", "root"), ("b", "a"), ("c", "a"), ("e", "d")]:
        assert lines.index(line[name]) > lines.index(line[parent])
    assert line["e"][:6] in ("│  └─ ", "   └─ ")
    assert lines[-1] == "6 states: 5 done, 1 failed"
    assert len(lines) == 7


def test_show_depth(cli, exp_dir, stored):
    result = cli("show", exp_dir, "--depth", "1")
    assert result.returncode == 0, result.stderr
    out = result.stdout
    for name in ("root", "a", "d"):
        assert stored[name][:12] in out
    for name in ("b", "c", "e"):
        assert stored[name][:12] not in out
    assert f"{stored['a'][:12]}  done  measure.ratio=0.5, measure.value=2  (+2 below)" in out
    assert f"{stored['d'][:12]}  [baseline]  done  (+1 below)" in out
    assert cli("show", exp_dir, "--depth", "-1").returncode == 2


def test_show_on_an_ascii_terminal(cli, exp_dir, stored):
    result = cli("show", exp_dir, encoding="ascii")
    assert result.returncode == 0, result.stderr
    assert "├" not in result.stdout and "└" not in result.stdout
    assert "`- Boom(fail=True)" in result.stdout
    assert "|- " in result.stdout


def test_show_without_the_state_class_importable(cli, exp_dir, stored, subprocess_env, tmp_path):
    # Run from elsewhere: helpers.py (where CounterState lives) is not importable there.
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    probe = subprocess.run([sys.executable, "-c", "import helpers"], cwd=elsewhere)
    assert probe.returncode != 0
    result = cli("show", exp_dir, cwd=elsewhere)
    assert result.returncode == 0, result.stderr
    assert "Multiply(factor=5)" in result.stdout
    assert "FAILED ValueError" in result.stdout


# -- ls --------------------------------------------------------------------------------------------


def test_ls_table(cli, exp_dir, stored):
    result = cli("ls", exp_dir)
    assert result.returncode == 0, result.stderr
    header, *rows = result.stdout.splitlines()
    assert header.split()[:7] == ["id", "parent", "depth", "recipe", "tags", "status", "seconds"]
    assert "param.amount" in header and "result.measure.value" in header
    assert len(rows) == 6
    row = {
        name: next(text for text in rows if text.startswith(sha[:12]))
        for name, sha in stored.items()
    }
    assert row["c"].split()[:6] == [
        stored["c"][:12],
        stored["a"][:12],
        "2",
        "Multiply",
        "prune,",
        "big",
    ]
    assert "failed" in row["e"].split()
    # Aligned: every column starts at the same offset on every line.
    start = header.index("status")
    assert all(text[start:].startswith(("done", "failed")) for text in rows)


def test_ls_json(cli, exp_dir, stored):
    result = cli("ls", exp_dir, "--format", "json")
    assert result.returncode == 0, result.stderr
    rows = json.loads(result.stdout)
    by_id = {row["id"]: row for row in rows}
    assert set(by_id) == set(stored.values())
    assert rows[0]["id"] == stored["root"] and rows[0]["parent"] is None
    c = by_id[stored["c"]]
    assert c["parent"] == stored["a"]
    assert c["recipe"] == "Multiply" and c["param.factor"] == 5
    assert c["tags"] == ["prune", "big"]
    a = by_id[stored["a"]]
    assert a["result.measure.value"] == 2 and a["result.measure.ratio"] == 0.5
    assert a["param.amount"] == 1 and a["param.factor"] is None
    assert by_id[stored["e"]]["status"] == "failed"
    assert by_id[stored["e"]]["seconds"] is None


def test_ls_csv(cli, exp_dir, stored):
    result = cli("ls", exp_dir, "--format", "csv")
    assert result.returncode == 0, result.stderr
    frame = pandas.read_csv(io.StringIO(result.stdout))
    assert len(frame) == 6
    assert set(frame["id"]) == set(stored.values())
    c = frame.set_index("id").loc[stored["c"]]
    assert json.loads(c["tags"]) == ["prune", "big"]
    assert c["param.factor"] == 5 and c["status"] == "done"


@pytest.mark.parametrize(
    ("pattern", "expected"),
    [("prune", {"b", "c"}), ("pr*", {"b", "c"}), ("!prune", {"root", "a", "d", "e"})],
)
def test_ls_tag(cli, exp_dir, stored, pattern, expected):
    result = cli("ls", exp_dir, "--tag", pattern, "--format", "json")
    assert result.returncode == 0, result.stderr
    assert {row["id"] for row in json.loads(result.stdout)} == {stored[n] for n in expected}


def test_ls_tag_that_matches_nothing(cli, exp_dir, stored):
    result = cli("ls", exp_dir, "--tag", "prun")
    assert result.returncode == 1
    assert result.stdout == ""
    assert "Traceback" not in result.stderr
    (line,) = result.stderr.strip().splitlines()
    assert "'prun'" in line
    tags = line.split("tags here: ")[1].rstrip(".").split(", ")
    assert tags[0] == "prune"  # the nearest first
    assert sorted(tags) == ["baseline", "big", "prune"]


# -- draw ------------------------------------------------------------------------------------------


@pytest.mark.requires_dot
def test_draw_png(cli, exp_dir, stored, tmp_path):
    result = cli("draw", exp_dir, "-o", tmp_path / "out" / "tree.png")
    assert result.returncode == 0, result.stderr
    path = tmp_path / "out" / "tree.png"
    assert result.stdout.strip() == str(path)
    assert path.read_bytes()[:8] == PNG_SIGNATURE
    assert [p.name for p in path.parent.iterdir()] == ["tree.png"]


@pytest.mark.requires_dot
def test_draw_svg_from_the_suffix(cli, exp_dir, stored, tmp_path):
    result = cli("draw", exp_dir, "--output", "tree.svg")
    assert result.returncode == 0, result.stderr
    svg = ET.parse(tmp_path / "tree.svg").getroot()
    text = "\n".join(svg.itertext())
    assert stored["e"][:12] in text and "ValueError: boom on purpose" in text


@pytest.mark.requires_dot
def test_draw_without_suffix_is_png(cli, exp_dir, stored, tmp_path):
    result = cli("draw", exp_dir, "-o", "tree")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "tree.png"
    assert (tmp_path / "tree.png").read_bytes()[:8] == PNG_SIGNATURE


@pytest.mark.requires_dot
def test_draw_colored_by_a_column(cli, exp_dir, stored, tmp_path):
    result = cli("draw", exp_dir, "-o", "tree.svg", "--color", "result.measure.value")
    assert result.returncode == 0, result.stderr
    text = "\n".join(ET.parse(tmp_path / "tree.svg").getroot().itertext())
    assert "result.measure.value" in text and "no value" in text  # the colour key
    result = cli("draw", exp_dir, "-o", "tree2.svg", "--color", "result.measure.valeu")
    assert_one_line_error(
        result, "dagger draw: No column named 'result.measure.valeu'", "did you mean"
    )
    assert not (tmp_path / "tree2.svg").exists()


def test_draw_unknown_suffix(cli, exp_dir, stored, tmp_path):
    result = cli("draw", exp_dir, "-o", "tree.jpg")
    assert_one_line_error(result, "tree.jpg", ".png, .svg, .pdf")
    assert not (tmp_path / "tree.jpg").exists()


def test_draw_without_dot(cli, exp_dir, stored, tmp_path, subprocess_env):
    empty = tmp_path / "empty-bin"
    empty.mkdir()
    result = cli("draw", exp_dir, "-o", "tree.png", env={**subprocess_env, "PATH": str(empty)})
    assert_one_line_error(result, "apt-get install graphviz", "tree.to_dot()")
    assert not (tmp_path / "tree.png").exists()


# -- errors, and the commands that were there before -----------------------------------------------


@pytest.mark.parametrize(
    "args",
    [
        ["show"],
        ["ls"],
        ["ls", "--format", "json"],
        ["draw", "-o", "x.png"],
        ["plot", "--x", "depth", "--y", "seconds"],
        ["report"],
        ["verify"],
        ["failures"],
    ],
)
def test_not_an_experiment(cli, tmp_path, args):
    folder = tmp_path / "just-a-folder"
    folder.mkdir()
    (folder / "notes.txt").write_text("hello")
    command, *options = args
    result = cli(command, folder, *options)
    assert_one_line_error(result, f"dagger {command}:", "is not a dagger experiment")


def test_missing_folder(cli, tmp_path):
    assert_one_line_error(cli("show", tmp_path / "nowhere"), "does not exist")


def test_verify_and_gc_still_work(cli, exp_dir, stored):
    result = cli("verify", exp_dir)
    assert result.returncode == 0, result.stderr
    assert "no problems" in result.stdout
    result = cli("gc", exp_dir, "--dry-run")
    assert result.returncode == 0, result.stderr


def test_verify_notices_a_missing_parent_and_gc_says_what_it_kept(cli, exp_dir, stored):
    """(Issue 14, item 11.) States lost from the middle of the tree (the log of the run that
    stored them is gone): verify names each state cut off from its root; gc --dry-run says
    what it would remove and hides nothing for being young when no run is going on."""
    exp = dg.Experiment(exp_dir, CounterState)
    later = Multiply(7)(Add(1)(exp.spawn_new_tree(start=1)))  # a child of `a`, another log
    exp.run(progress=False)
    logs = sorted((exp_dir / "log").glob("*.log"), key=lambda path: path.stat().st_mtime_ns)
    logs[0].unlink()  # the first run's log: the root, a, b, c, d, e
    result = cli("verify", exp_dir)
    assert result.returncode == 1, result.stderr
    assert f"state {later.sha()[:12]}" in result.stdout
    assert f"orphaned: its parent {stored['a'][:12]} is not in the store" in result.stdout

    result = cli("gc", exp_dir, "--dry-run")
    assert result.returncode == 0, result.stderr
    assert "younger" not in result.stdout  # nothing is kept for its age when nothing runs


def test_failures_of_one_state(cli, exp_dir, stored):
    result = cli("failures", exp_dir, "--id", stored["e"][:10])
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith(f"== state {stored['e']} Boom(fail=True) failed")
    assert 'raise ValueError("boom on purpose")' in result.stdout
    result = cli("failures", exp_dir, "--id", stored["b"])
    assert result.stdout.strip() == "no failures recorded"


def test_help_lists_every_command(cli):
    result = cli("--help")
    assert result.returncode == 0
    for command in ("show", "ls", "draw", "plot", "report", "failures", "verify", "gc"):
        assert command in result.stdout


def test_console_script(exp_dir, stored, subprocess_env, tmp_path):
    script = shutil.which("dagger")
    if script is None:
        pytest.skip("dagger is not installed as a console script here")
    result = subprocess.run(
        [script, "show", str(exp_dir)],
        cwd=tmp_path,
        env={**subprocess_env, "PYTHONIOENCODING": "utf-8"},
        capture_output=True,
        text=True,
        encoding="utf-8",
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert stored["c"][:12] in result.stdout


def test_main_in_process(exp_dir, stored, capsys):
    from dagger.cli import main

    assert main(["ls", str(exp_dir), "--tag", "big", "--format", "json"]) == 0
    (row,) = json.loads(capsys.readouterr().out)
    assert row["id"] == stored["c"]
