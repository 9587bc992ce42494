"""Drawing restored trees: DOT source, image files, notebook display, text, missing Graphviz."""

from __future__ import annotations

import pickle
import re
import sys
import xml.etree.ElementTree as ET

import pytest
from helpers import Add, Boom, CounterState, Multiply

import dagger as dg
from dagger import render
from dagger.store import DirectoryStore

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def measure(state):
    return {"value": state.value, "ratio": state.value / 3}


def score(state):
    return state.value / 81


def gone_wrong(state):
    raise KeyError("no such metric")


@pytest.fixture
def stored(exp_dir):
    """root -> a(+1) [measure] -> {b(*3) [prune], c(*5) [prune, big]};
    root -> d(+10) [baseline, score, gone_wrong] -> e(Boom) [baseline, bad], which fails."""
    # payloads in files of their own, so that one can be deleted (a missing state)
    exp = dg.Experiment(DirectoryStore(exp_dir, inline_limit=0), CounterState)
    root = exp.spawn_new_tree(start=1, note="not identity")
    a = dg.Function(measure)(Add(1)(root))
    with exp.tag("prune"):
        b = Multiply(3)(a)
        with exp.tag("big"):
            c = Multiply(5)(a)
    with exp.tag("baseline"):
        d = dg.Function(gone_wrong)(dg.Function(score)(Add(10)(root)))
        with exp.tag("bad"):
            e = Boom()(d)
    with pytest.raises(dg.RunError):
        exp.run(progress=False)
    return {name: p.sha() for name, p in dict(root=root, a=a, b=b, c=c, d=d, e=e).items()}


@pytest.fixture
def tree(exp_dir, stored):
    return dg.Experiment.restore(exp_dir).graph


def node_attributes(dot: str, sha: str) -> str:
    """The attribute list of one node statement of a DOT source."""
    match = re.search(rf'^\t"?{sha}"? \[(.*?)\]$', dot, flags=re.M | re.S)
    assert match is not None, f"no node {sha[:12]} in the DOT source"
    return match.group(1)


def svg_text(svg: str) -> str:
    """All the text an SVG shows, joined by newlines."""
    return "\n".join(ET.fromstring(svg).itertext())


def test_dot_shows_each_state(tree, stored):
    dot = tree.to_dot()
    root = node_attributes(dot, stored["root"])
    assert "<B>root</B>(start=1)" in root
    assert "note" not in root  # not a property: not part of the root's identity
    a = node_attributes(dot, stored["a"])
    assert "<B>Add</B>(amount=1)" in a
    assert stored["a"][:12] in a
    assert "done" in a
    assert "measure.value: 2" in a and "measure.ratio: 0.6667" in a  # rounded
    assert "<B>Multiply</B>(factor=3)" in node_attributes(dot, stored["b"])
    c = node_attributes(dot, stored["c"])
    assert "<B>Multiply</B>(factor=5)" in c
    assert "prune, big" in c
    d = node_attributes(dot, stored["d"])
    assert "baseline" in d
    assert "score: 0.1358" in d and "0.135802" not in d  # 11 / 81, rounded
    assert "gone_wrong: FAILED KeyError" in d  # a failed Function shows on its state
    # Plain states are filled grey, the root blue; none is styled as failed.
    for name in ("root", "a", "b", "c", "d"):
        assert ' color="#b00020"' not in node_attributes(dot, stored[name])


def test_failed_state_stands_out(tree, stored):
    dot = tree.to_dot()
    failed = node_attributes(dot, stored["e"])
    assert "<B>Boom</B>(fail=True)" in failed
    assert "<B>FAILED</B> ValueError: boom on purpose" in failed
    assert 'color="#b00020"' in failed
    assert 'fillcolor="#fde8ea"' in failed
    assert "penwidth=2" in failed
    assert "bad" in failed
    assert re.search(rf'"?{stored["d"]}"? -> "?{stored["e"]}"? \[color="#b00020"\]', dot)


def test_edges_parent_to_child_top_to_bottom(tree, stored):
    dot = tree.to_dot()
    edges = re.findall(r"^\t\"?(\w+)\"? -> \"?(\w+)\"?", dot, flags=re.M)
    assert sorted(edges) == sorted(
        [
            (stored["root"], stored["a"]),
            (stored["root"], stored["d"]),
            (stored["a"], stored["b"]),
            (stored["a"], stored["c"]),
            (stored["d"], stored["e"]),
        ]
    )
    assert "rankdir=TB" in dot


def test_dot_is_the_same_for_every_restore(exp_dir, tree):
    again = dg.Experiment.restore(exp_dir).graph
    assert again.to_dot() == tree.to_dot()
    assert render.to_dot(tree) == tree.to_dot()


def test_missing_payload_is_dashed(exp_dir, stored):
    (payload,) = (exp_dir / "payloads").glob(f"{stored['b']}.*.pkl")
    payload.unlink()
    tree = dg.Experiment.restore(exp_dir).graph
    assert tree.node(stored["b"]).dagger.status == "missing"
    dot = tree.to_dot()
    assert 'style="rounded,dashed"' in node_attributes(dot, stored["b"])
    assert "dashed" not in node_attributes(dot, stored["c"])
    assert "missing (payload file gone" in render.to_text(tree)


def test_markup_in_tags_and_results_is_escaped(exp_dir):
    def label(state):
        return "<b> & 'quotes'"

    exp = dg.Experiment(exp_dir, CounterState)
    root = exp.spawn_new_tree(start=1)
    with exp.tag('a<b&c>"'):
        dg.Function(label)(Add(1)(root))
    exp.run(progress=False)
    tree = dg.Experiment.restore(exp_dir).graph
    dot = tree.to_dot()
    assert "a&lt;b&amp;c&gt;&quot;" in dot
    assert "&lt;b&gt; &amp; &#x27;quotes&#x27;" in dot
    assert "<b> &" not in dot
    # dot accepts it, and the drawing shows the text as written.
    shown = svg_text(render.to_svg(tree))
    assert 'a<b&c>"' in shown
    assert "label: \"<b> & 'quotes'\"" in shown


def test_custom_label_and_node_args(tree, stored):
    dot = tree.to_dot(
        label=lambda state: f"custom {state.sha()[:6]} {len(state.tags)}",
        node_args={"shape": "ellipse", "fontsize": 20},
    )
    assert "<TABLE" not in dot
    for name, sha in stored.items():
        attributes = node_attributes(dot, sha)
        tags = {"c": 2, "e": 2}.get(name, 0 if name in ("root", "a") else 1)
        assert f'label="custom {sha[:6]} {tags}"' in attributes
        assert "shape=ellipse" in attributes
        assert "fontsize=20" in attributes
    # Status styling stays under a custom label; node_args override it.
    assert 'color="#b00020"' in node_attributes(dot, stored["e"])
    red = tree.to_dot(node_args={"fillcolor": "yellow"})
    assert "fillcolor=yellow" in node_attributes(red, stored["e"])
    graph = tree.to_graphviz(node_args={"shape": "ellipse"})
    assert graph.source == tree.to_dot(node_args={"shape": "ellipse"})


@pytest.mark.parametrize("file_format", ["png", "svg", "pdf"])
def test_draw_writes_the_file(tree, stored, tmp_path, file_format):
    out = tmp_path / "drawings"
    path = tree.draw(out / "tree", format=file_format)
    assert path == out / f"tree.{file_format}"
    data = path.read_bytes()
    if file_format == "png":
        assert data[:8] == PNG_SIGNATURE
    elif file_format == "pdf":
        assert data[:5] == b"%PDF-"
    else:
        svg = ET.fromstring(data)
        assert svg.tag.endswith("svg")
        shown = svg_text(data.decode())
        assert "Multiply" in shown and "(factor=5)" in shown
        assert "ValueError: boom on purpose" in shown
    # Only the image: no DOT source file left next to it.
    assert [p.name for p in out.iterdir()] == [path.name]


def test_draw_keeps_a_matching_suffix(tree, tmp_path):
    path = tree.draw(tmp_path / "tree.svg", format="SVG")
    assert path == tmp_path / "tree.svg"
    assert path.read_bytes().lstrip().startswith(b"<?xml")


def test_draw_default_name_is_graph_png(tree, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    path = tree.draw()
    assert path.name == "graph.png"
    assert (tmp_path / "graph.png").read_bytes()[:8] == PNG_SIGNATURE


def test_draw_view_opens_the_file(tree, tmp_path, monkeypatch):
    import graphviz

    opened = []
    monkeypatch.setattr(graphviz, "view", opened.append)
    path = tree.draw(tmp_path / "tree", format="svg", view=True)
    assert opened == [str(path)]


def test_unknown_format_is_a_value_error(tree, tmp_path):
    out = tmp_path / "drawings"
    with pytest.raises(ValueError, match=r"draw\(\) writes png, svg, pdf; got format 'jpg'"):
        tree.draw(out / "tree", format="jpg")
    with pytest.raises(render.UnknownFormatError):
        render.draw(tree, out / "tree", format="gif")
    assert not out.exists()


@pytest.fixture
def no_dot(tmp_path, monkeypatch):
    """Graphviz's programs are not on PATH (the Python package still is)."""
    empty = tmp_path / "empty-bin"
    empty.mkdir()
    monkeypatch.setenv("PATH", str(empty))


def test_without_dot_draw_says_how_to_install(tree, tmp_path, no_dot):
    with pytest.raises(render.GraphvizNotFoundError) as caught:
        tree.draw(tmp_path / "tree", format="png")
    message = str(caught.value)
    for hint in ("apt-get install graphviz", "brew install graphviz", "conda install graphviz"):
        assert hint in message
    assert "tree.to_dot()" in message
    assert isinstance(caught.value, dg.DaggerError) and isinstance(caught.value, RuntimeError)
    assert not (tmp_path / "tree.png").exists()
    # The DOT source needs no program.
    assert "Multiply" in tree.to_dot()


def test_without_dot_the_notebook_shows_text(tree, stored, no_dot):
    bundle = tree._repr_mimebundle_()
    assert set(bundle) == {"text/plain"}
    text = bundle["text/plain"]
    assert stored["e"][:12] in text and "FAILED ValueError" in text
    assert "apt-get install graphviz" in text


def test_without_the_graphviz_package(tree, monkeypatch):
    monkeypatch.setitem(sys.modules, "graphviz", None)  # import graphviz now fails
    with pytest.raises(render.GraphvizNotInstalledError, match=r'pip install "dagger\[viz\]"'):
        tree.to_dot()
    with pytest.raises(ImportError):
        tree.draw()
    bundle = tree._repr_mimebundle_()
    assert set(bundle) == {"text/plain"}
    assert 'pip install "dagger[viz]"' in bundle["text/plain"]


def test_errors_pickle(tmp_path, tree, no_dot):
    with pytest.raises(render.GraphvizNotFoundError) as caught:
        tree.draw(tmp_path / "tree")
    copy = pickle.loads(pickle.dumps(caught.value))
    assert type(copy) is render.GraphvizNotFoundError
    assert str(copy) == str(caught.value)
    assert copy.program == "dot"


def test_notebook_shows_svg(tree, stored):
    from IPython.core.formatters import DisplayFormatter

    data, _ = DisplayFormatter().format(tree)  # what Jupyter does with the last expression
    svg = data["image/svg+xml"]
    shown = svg_text(svg)
    assert "Add" in shown and "(amount=10)" in shown
    assert stored["c"][:12] in shown
    assert stored["b"][:12] in data["text/plain"]


def test_notebook_display_never_raises(tree, monkeypatch):
    def broken(*args, **kwargs):
        raise RuntimeError("dot crashed")

    monkeypatch.setattr(render, "to_svg", broken)
    bundle = tree._repr_mimebundle_()
    assert set(bundle) == {"text/plain"}
    assert "Multiply(factor=5)" in bundle["text/plain"]


def test_notebook_shows_text_for_a_huge_tree(tree, monkeypatch):
    monkeypatch.setattr(render, "MAX_INLINE_STATES", 3)
    bundle = tree._repr_mimebundle_()
    assert set(bundle) == {"text/plain"}
    assert "6 states, too many to draw inline" in bundle["text/plain"]


def test_nodeset_displays_as_a_table(tree, stored):
    from IPython.core.formatters import DisplayFormatter

    data, _ = DisplayFormatter().format(tree.nodes.filter("prune"))
    table = data["text/html"]
    assert table.lstrip().startswith("<table")
    assert stored["b"] in table and stored["c"] in table
    assert stored["d"] not in table  # neither a row nor the parent of one
    assert "param.factor" in table


def test_text_of_a_chain_exactly(exp_dir):
    exp = dg.Experiment(exp_dir, CounterState)
    root = exp.spawn_new_tree(start=2)
    a = dg.Function(measure)(Add(1)(root))
    with exp.tag("bad"):
        b = Boom()(a)
    with pytest.raises(dg.RunError):
        exp.run(progress=False)
    tree = dg.Experiment.restore(exp_dir).graph
    r, a_id, b_id = root.sha()[:12], a.sha()[:12], b.sha()[:12]
    assert render.to_text(tree) == (
        f"root(start=2)  {r}  done\n"
        f"└─ Add(amount=1)  {a_id}  done  measure.ratio=1, measure.value=3\n"
        f"   └─ Boom(fail=True)  {b_id}  [bad]  FAILED ValueError: boom on purpose\n"
        "3 states: 2 done, 1 failed"
    )
    assert render.to_text(tree, depth=0, unicode=False) == (
        f"root(start=2)  {r}  done  (+2 below)\n3 states: 2 done, 1 failed"
    )


def test_text_of_branches(tree, stored):
    lines = render.to_text(tree).splitlines()
    assert lines[-1] == "6 states: 5 done, 1 failed"
    by_state = {
        name: next(line for line in lines if sha[:12] in line) for name, sha in stored.items()
    }
    assert lines[0] == by_state["root"]
    # Children under their parent, indented by depth, the last sibling with a corner.
    for name, parent, depth in [("a", "root", 1), ("d", "root", 1), ("b", "a", 2), ("c", "a", 2)]:
        line = by_state[name]
        assert lines.index(line) > lines.index(by_state[parent])
        assert re.match(rf"^(│  |   ){{{depth - 1}}}[├└]─ \w", line), line
    assert sum(line.startswith("└─ ") for line in lines) == 1
    assert sum(line.startswith("├─ ") for line in lines) == 1
    assert "[prune, big]" in by_state["c"]
    assert "FAILED ValueError: boom on purpose" in by_state["e"]
    assert "gone_wrong: FAILED KeyError" in by_state["d"]
    assert "score=0.1358" in by_state["d"]


@pytest.mark.parametrize(
    ("value", "shown"),
    [
        (0.123456789, "0.1235"),
        (2.0, "2"),
        (12345.678, "12346"),
        (1.5e-7, "1.5e-07"),
        (float("nan"), "nan"),
        (True, "True"),
        (None, "None"),
        ("text", "'text'"),
        ([0.11111, 2], "[0.1111, 2]"),
        ({"a": 1.23456}, "{a: 1.235}"),
        (list(range(100)), "[0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11..."),
    ],
)
def test_format_value(value, shown):
    assert render.format_value(value) == shown
    assert len(render.format_value(value)) <= render.VALUE_WIDTH


def test_results_are_capped(exp_dir):
    def many(state):
        return {f"metric{i}": i for i in range(10)}

    exp = dg.Experiment(exp_dir, CounterState)
    dg.Function(many)(exp.spawn_new_tree(start=1))
    exp.run(progress=False)
    tree = dg.Experiment.restore(exp_dir).graph
    dot = tree.to_dot()
    assert "many.metric5: 5" in dot and "many.metric6" not in dot
    assert "+4 more results" in dot
    assert "(+4 more results)" in render.to_text(tree)
