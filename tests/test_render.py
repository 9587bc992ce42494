"""Drawing restored trees: DOT source, image files, notebook display, text, missing Graphviz."""

from __future__ import annotations

import base64
import os
import pickle
import re
import shutil
import sys
import time
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


@pytest.mark.requires_dot
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


@pytest.mark.requires_dot
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


@pytest.mark.requires_dot
def test_draw_keeps_a_matching_suffix(tree, tmp_path):
    path = tree.draw(tmp_path / "tree.svg", format="SVG")
    assert path == tmp_path / "tree.svg"
    assert path.read_bytes().lstrip().startswith(b"<?xml")


@pytest.mark.requires_dot
def test_draw_default_name_is_graph_png(tree, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    path = tree.draw()
    assert path.name == "graph.png"
    assert (tmp_path / "graph.png").read_bytes()[:8] == PNG_SIGNATURE


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


@pytest.mark.requires_dot
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


# -- what Graphviz cannot draw as written ----------------------------------------------------------


def png_size(data: bytes) -> tuple[int, int]:
    """Width and height of a PNG, from its IHDR chunk (the first, by the PNG specification)."""
    assert data[:8] == PNG_SIGNATURE
    assert data[12:16] == b"IHDR"
    return int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")


class Unreadable(dg.Recipe):
    """Fails with a Windows path in its message: backslashes that Graphviz would read as
    escapes (``\\N`` is the node's name, ``\\n`` a new line)."""

    def run(self, state):
        raise OSError(r"cannot open C:\Users\N\new.txt")


@pytest.mark.requires_dot
def test_tags_and_messages_graphviz_cannot_draw_as_written(exp_dir):
    exp = dg.Experiment(exp_dir, CounterState)
    root = exp.spawn_new_tree(start=1)
    with exp.tag(""):  # an empty tag made `<I></I>`, a syntax error for dot
        empty = Add(1)(root)
    with exp.tag("   ", "t" * 300, '<i>"q"</i> & \\N'):
        odd = Add(2)(root)
    with exp.tag("bad\udc80surrogate"):  # not encodable as UTF-8
        surrogate = Add(3)(root)
    broken = Unreadable()(root)
    with pytest.raises(dg.RunError):
        exp.run(progress=False)
    tree = dg.Experiment.restore(exp_dir).graph

    svg = render.to_svg(tree)
    document = ET.fromstring(svg)
    shown = svg_text(svg)
    assert "''" in node_text(document, empty.sha())  # the empty tag, visibly
    odd_text = node_text(document, odd.sha())
    assert "'   '" in odd_text
    assert "t" * 29 + "..." in odd_text and "t" * 40 not in odd_text  # cut, not 300 wide
    assert '<i>"q"</i> & \\N' in odd_text  # markup and backslash shown as written
    assert "bad\ufffdsurrogate" in node_text(document, surrogate.sha())
    # A tooltip is an escape string for Graphviz: the path must come back as written.
    assert r"OSError: cannot open C:\Users\N\new.txt" in tooltips(document)[broken.sha()]
    assert "ValueError" not in shown


def node_text(document: ET.Element, sha: str) -> str:
    """The text one node of an SVG drawing shows (Graphviz writes runs of spaces as
    no-break spaces)."""
    for group in document.iter(f"{SVG}g"):
        if group.get("id") == f"state-{sha}":
            return "\n".join(group.itertext()).replace("\xa0", " ")
    raise AssertionError(f"no node state-{sha[:12]} in the SVG")


def tooltips(document: ET.Element) -> dict[str, str]:
    """State id -> the tooltip of its node."""
    found = {}
    for group in document.iter(f"{SVG}g"):
        if (group.get("id") or "").startswith("state-"):
            link = next(group.iter(f"{SVG}a"))
            # A zero-width space keeps each backslash from Graphviz's escapes (\N).
            title = link.get(f"{XLINK}title").replace("\u200b", "")
            found[group.get("id")[len("state-") :]] = title
    return found


SVG = "{http://www.w3.org/2000/svg}"
XLINK = "{http://www.w3.org/1999/xlink}"


# -- siblings in tree order ------------------------------------------------------------------------


def node_centers(svg: str) -> dict[str, tuple[float, float]]:
    """State id -> centre of its node's first text line (x grows rightwards, y downwards)."""
    centers = {}
    for group in ET.fromstring(svg).iter(f"{SVG}g"):
        key = group.get("id") or ""
        if key.startswith(("state-", "group-")):
            text = next(group.iter(f"{SVG}text"))
            centers[key.split("-", 1)[1]] = (float(text.get("x")), float(text.get("y")))
    return centers


@pytest.mark.requires_dot
def test_siblings_are_laid_out_in_tree_order(exp_dir):
    exp = dg.Experiment(exp_dir, CounterState)
    root = exp.spawn_new_tree(start=1)
    trained = Add(1)(root)
    for factor in (9, 2, 7, 4, 8, 1):  # not sorted, by any measure
        Multiply(factor)(trained)
    Add(100)(root)
    exp.run(progress=False)
    tree = dg.Experiment.restore(exp_dir).graph
    order = tree.nodes.ids
    siblings = sorted(tree.edge_map[trained.sha()], key=order.index)

    dot = tree.to_dot()
    assert "ordering=out" in dot  # dot keeps each node's children in the order of its edges
    edges = re.findall(rf'^\t"?{trained.sha()}"? -> "?(\w+)"?', dot, flags=re.M)
    assert edges == siblings
    centers = node_centers(render.to_svg(tree))
    xs = [centers[sha][0] for sha in siblings]
    assert xs == sorted(xs), "siblings drawn out of the tree's order"
    assert len({centers[sha][1] for sha in siblings}) == 1  # one rank


# -- colour ----------------------------------------------------------------------------------------


def node_statements(dot: str) -> dict[str, str]:
    """Graphviz node name -> its attribute list, for every node statement of a DOT source."""
    return {
        name: attributes
        for name, attributes in re.findall(r'^\t"?([\w-]+)"? \[(.*?)\]$', dot, flags=re.M | re.S)
        if name not in ("graph", "node", "edge")  # default attributes, not nodes
    }


def attribute(attributes: str, name: str) -> str | None:
    match = re.search(rf'(?:^|\s){name}="?([^"\s]*)"?', attributes)
    return match.group(1) if match else None


@pytest.mark.requires_dot
def test_color_by_a_numeric_result(tree, stored, tmp_path):
    import matplotlib

    viridis = matplotlib.colormaps["viridis"]
    dot = tree.to_dot(color="result.measure.ratio")
    nodes = node_statements(dot)
    # Only `a` has measure.ratio (2/3), so it is the whole range: the middle of the map.
    assert attribute(nodes[stored["a"]], "fillcolor") == matplotlib.colors.to_hex(
        viridis(128 / 255)
    )
    for name in ("root", "b", "c", "d"):
        assert attribute(nodes[stored[name]], "fillcolor") == "#ffffff"  # no value
    legend = nodes["legend"]
    assert "result.measure.ratio" in legend and "no value" in legend and "0.6667" in legend

    dot = tree.to_dot(color="param.factor")  # b: 3, c: 5
    nodes = node_statements(dot)
    assert attribute(nodes[stored["b"]], "fillcolor") == "#440154"  # viridis at 0
    assert attribute(nodes[stored["c"]], "fillcolor") == "#fde725"  # viridis at 1
    assert attribute(nodes[stored["b"]], "fontcolor") == "#ffffff"  # dark fill, light text
    assert attribute(nodes[stored["c"]], "fontcolor") is None
    assert re.search(r"<B>param.factor</B>.*>3<.*>4<.*>5<", nodes["legend"], flags=re.S)

    # The image is the size the SVG says: points at 96 dpi.
    svg_path = tree.draw(tmp_path / "colored", format="svg", color="param.factor")
    png_path = tree.draw(tmp_path / "colored", format="png", color="param.factor")
    svg = ET.fromstring(svg_path.read_bytes())
    width_pt, height_pt = (float(svg.get(side).removesuffix("pt")) for side in ("width", "height"))
    width, height = png_size(png_path.read_bytes())
    assert abs(width - width_pt * 96 / 72) <= 2 and abs(height - height_pt * 96 / 72) <= 2
    assert width > 300 and height > 200


def test_color_by_a_category(tree, stored):
    from dagger.plots import OKABE_ITO

    nodes = node_statements(tree.to_dot(color="recipe"))
    recipes = {
        "root": "root",
        "a": "Add",
        "b": "Multiply",
        "c": "Multiply",
        "d": "Add",
        "e": "Boom",
    }
    palette = dict(zip(["Add", "Boom", "Multiply", "root"], OKABE_ITO, strict=False))
    for name, recipe in recipes.items():
        assert attribute(nodes[stored[name]], "fillcolor") == palette[recipe], name
    for recipe in palette:
        assert f"> {recipe}<" in nodes["legend"]
    # The failed state keeps its border and marks: not told apart by colour alone.
    failed = nodes[stored["e"]]
    assert "diagonals" in failed and "bold" in failed and 'color="#b00020"' in failed


def test_color_by_a_column_that_does_not_exist(tree):
    with pytest.raises(
        dg.ColumnNotFoundError,
        match=r"'result\.measure\.rato'.*did you mean 'result\.measure\.ratio'",
    ) as caught:
        tree.to_dot(color="result.measure.rato")
    assert isinstance(caught.value, KeyError)
    # A unique ending is enough.
    assert "<B>param.factor</B>" in tree.to_dot(color="factor")


def test_unknown_colour_map(tree):
    with pytest.raises(dg.PlotError, match=r"cmap='viridiss'.*did you mean 'viridis'"):
        tree.to_dot(color="param.factor", cmap="viridiss")


def test_pruned_state_has_a_dotted_border(exp_dir, stored):
    # A state whose payload was pruned away keeps its record with status "pruned" (`dagger
    # prune` sets it); the drawing reads the status from the slim state.
    tree = dg.Experiment.restore(exp_dir).graph
    tree.node(stored["c"]).dagger.status = dg.Status.PRUNED
    nodes = node_statements(tree.to_dot())
    assert "dotted" in attribute(nodes[stored["c"]], "style")
    assert "pruned" in nodes[stored["c"]]
    assert "dotted" not in nodes[stored["b"]]
    legend = node_statements(tree.to_dot(color="status"))["legend"]
    assert "pruned: dotted border" in legend and "failed: bold red border" in legend


# -- large trees fold ------------------------------------------------------------------------------


def sweep(exp_dir, width=70):
    """root -> Add(1) -> {Multiply(f) -> Add(2) -> Add(3) [measure]} for f < width; and one
    Boom under Add(1). 3 * width + 3 states."""
    exp = dg.Experiment(exp_dir, CounterState, durability="fast")
    root = exp.spawn_new_tree(start=1)
    trained = Add(1)(root)
    for factor in range(width):
        with exp.tag("sweep", f"factor:{factor}"):
            dg.Function(measure)(Add(3)(Add(2)(Multiply(factor)(trained))))
    Boom()(trained)
    with pytest.raises(dg.RunError):
        exp.run(progress=False)
    return dg.Experiment.restore(exp_dir).graph


@pytest.fixture
def big_tree(exp_dir):
    return sweep(exp_dir)


def test_a_large_tree_folds_its_sibling_groups(big_tree):
    tree = big_tree
    assert len(tree) == 213
    drawn = render.layout(tree)
    # Every state is drawn exactly once, alone or in a group.
    members = [sha for node in drawn for sha in node.members]
    assert sorted(members) == sorted(tree.node_map)
    assert [len(node.members) for node in drawn] == [1, 1, 70, 70, 70, 1]

    nodes = node_statements(tree.to_dot(color="result.measure.value"))
    assert len(nodes) == 7  # six drawn nodes and the key
    groups = {name: text for name, text in nodes.items() if name.startswith("group-")}
    assert len(groups) == 3

    def group_with(part):
        [found] = [text for text in groups.values() if part in text]
        return found

    multiply, add2, add3 = group_with("Multiply"), group_with("amount 2"), group_with("amount 3")
    assert (
        "70 \u00d7 Multiply" in multiply
        and "factor 0\u201369" in multiply
        and "70 done" in multiply
    )
    assert "sweep" in multiply and "+70 other tags" in multiply
    assert "70 \u00d7 Add" in add2 and "amount 2" in add2
    assert "70 \u00d7 Add" in add3 and "amount 3" in add3
    assert "measure.value: 5\u2013143" in add3  # (1 + 1) * f + 2 + 3 for f in 0..69
    assert "70 \u00d7 Add" in add2 and "measure" not in add2
    assert "peripheries=2" in multiply
    assert "siblings folded" in nodes["legend"]


@pytest.mark.requires_dot
def test_a_folded_drawing_is_a_small_image(big_tree, tmp_path):
    whole = big_tree.draw(tmp_path / "whole", format="png", collapse=None)
    folded = big_tree.draw(tmp_path / "folded", format="png")
    whole_width, _ = png_size(whole.read_bytes())
    folded_width, folded_height = png_size(folded.read_bytes())
    assert folded_width * 10 < whole_width  # 70 siblings side by side, or three groups
    assert folded_height > 200 and folded_width < 2000


def test_expand_draws_a_state_and_its_ancestors_alone(big_tree):
    tree = big_tree
    chosen = tree.nodes.of_recipe(Multiply).where(factor=5)[0]
    below = tree.edge_map[chosen.sha()]
    drawn = render.layout(tree, expand=[chosen.sha()[:10]])
    alone = {node.members[0] for node in drawn if not node.folded}
    assert chosen.sha() in alone
    assert below <= alone  # its child is not folded with the others either
    nodes = node_statements(tree.to_dot(expand=[chosen.sha()]))
    assert "69 \u00d7 Multiply" in "".join(nodes.values())
    assert "<B>Multiply</B>(factor=5)" in nodes[chosen.sha()]


def test_collapse_none_draws_every_state(big_tree):
    assert len(render.layout(big_tree, collapse=None)) == len(big_tree)
    assert len(render.layout(big_tree, max_nodes=1000)) == len(big_tree)
    # A small tree is never folded, whatever the threshold.
    assert all(not node.folded for node in render.layout(big_tree, collapse=1, max_nodes=213))


def test_many_small_groups_fold_until_the_drawing_is_small(exp_dir):
    # 15 x 15: no sibling group exceeds collapse=20, yet 241 states are too many.
    exp = dg.Experiment(exp_dir, CounterState, durability="fast")
    root = exp.spawn_new_tree(start=1)
    for amount in range(15):
        child = Add(amount)(root)
        for factor in range(15):
            Multiply(factor)(child)
    exp.run(progress=False)
    tree = dg.Experiment.restore(exp_dir).graph
    drawn = render.layout(tree)
    assert len(drawn) <= render.MAX_DRAWN_NODES
    assert sorted(sha for node in drawn for sha in node.members) == sorted(tree.node_map)


def test_bad_folding_options(big_tree):
    with pytest.raises(dg.StateNotFoundError, match="No state has an id starting with 'ffffzz'"):
        render.layout(big_tree, expand=["ffffzz"])
    for bad in (0, -1, 2.5, "20", True):
        with pytest.raises(dg.PlotError, match="collapse=") as caught:
            big_tree.to_dot(collapse=bad)
        assert isinstance(caught.value, ValueError)


# -- view=True -------------------------------------------------------------------------------------


@pytest.mark.requires_dot
def test_view_without_a_viewer_says_where_the_file_is(tree, tmp_path, monkeypatch, dagger_warnings):
    # A machine with Graphviz but no xdg-open (a server, a container): it used to raise
    # FileNotFoundError: 'xdg-open'.
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "dot").symlink_to(shutil.which("dot"))
    monkeypatch.setenv("PATH", str(bin_dir))
    path = tree.draw(tmp_path / "tree", format="png", view=True)
    assert png_size(path.read_bytes())[0] > 0
    assert str(path) in dagger_warnings.text
    assert "no program to open it" in dagger_warnings.text


@pytest.mark.requires_dot
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="xdg-open is the Linux viewer")
def test_view_opens_the_system_viewer(tree, tmp_path, monkeypatch):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    opened = tmp_path / "opened.txt"
    viewer = bin_dir / "xdg-open"
    viewer.write_text(f'#!/bin/sh\nprintf "%s" "$1" > {opened}.tmp && mv {opened}.tmp {opened}\n')
    viewer.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    path = tree.draw(tmp_path / "tree", format="svg", view=True)
    # The viewer is started, not awaited: wait for what it wrote.
    for _ in range(600):
        if opened.exists():
            break
        time.sleep(0.05)
    assert opened.read_text() == str(path)


@pytest.mark.requires_dot
def test_view_in_a_notebook_shows_the_drawing_inline(exp_dir, stored, tmp_path):
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    cells = [
        f"import dagger as dg\ntree = dg.Experiment.restore({str(exp_dir)!r}).graph",
        f"tree.draw({str(tmp_path / 'inline')!r}, format='png', view=True)",
        f"tree.draw({str(tmp_path / 'inline')!r}, format='svg', view=True, color='param.factor')",
        f"tree.draw({str(tmp_path / 'inline')!r}, format='pdf', view=True)",
    ]
    notebook = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(c) for c in cells])
    nbclient.NotebookClient(notebook, kernel_name="python3", timeout=300).execute()
    displayed = [
        [output for output in cell.outputs if output.output_type == "display_data"]
        for cell in notebook.cells
    ]
    assert displayed[0] == []
    png = base64.b64decode(displayed[1][0].data["image/png"])
    assert png == (tmp_path / "inline.png").read_bytes()
    assert "<B>" not in displayed[2][0].data["image/svg+xml"]
    assert "param.factor" in svg_text(displayed[2][0].data["image/svg+xml"])
    assert "Multiply" in svg_text(displayed[3][0].data["image/svg+xml"])  # a PDF shown as SVG
    assert (tmp_path / "inline.pdf").read_bytes()[:5] == b"%PDF-"


def test_notebook_shows_a_large_tree_folded(big_tree):
    bundle = big_tree._repr_mimebundle_()
    if "image/svg+xml" not in bundle:  # no dot here: the text says why
        assert "apt-get install graphviz" in bundle["text/plain"]
        return
    shown = svg_text(bundle["image/svg+xml"])
    assert "70 \u00d7 Multiply" in shown
