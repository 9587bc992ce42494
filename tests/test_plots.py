"""Plots of the table of states: NodeSet.plot, dagger.plots.plot, `dagger plot`, notebooks."""

from __future__ import annotations

import base64
import re
import subprocess
import sys
import xml.etree.ElementTree as ET

import pandas
import pytest
from helpers import CounterState

import dagger as dg
from dagger import plots

matplotlib = pytest.importorskip("matplotlib")
from matplotlib.figure import Figure  # noqa: E402

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
AMOUNTS = (0.1, 0.3, 0.5, 0.7, 0.9)


class Sparsify(dg.Recipe):
    """Keeps 1 - amount of the value (l1) or (1 - amount) squared of it (random)."""

    def __init__(self, method, amount):
        self.method = method
        self.amount = amount

    def run(self, state):
        kept = 1 - self.amount
        state.value = state.value * (kept if self.method == "l1" else kept**2)
        return state


def evaluate(state):
    return {"accuracy": state.value / 100, "loss": 1 - state.value / 100}


def expected_accuracy(method, amount):
    return (1 - amount) if method == "l1" else (1 - amount) ** 2


@pytest.fixture
def study_dir(exp_dir):
    """root(start=100) [evaluate] -> Sparsify(method, amount) [evaluate], two methods by five
    amounts, tagged method:<name>."""
    exp = dg.Experiment(exp_dir, CounterState)
    root = exp.spawn_new_tree(start=100)
    dg.Function(evaluate)(root)
    for method in ("random", "l1"):
        for amount in AMOUNTS:
            with exp.tag(f"method:{method}"):
                dg.Function(evaluate)(Sparsify(method, amount)(root))
    exp.run(progress=False)
    return exp_dir


@pytest.fixture
def tree(study_dir):
    return dg.Experiment.restore(study_dir).graph


def png_size(data: bytes) -> tuple[int, int]:
    """Width and height of a PNG, from its IHDR chunk (the first, by the PNG specification)."""
    assert data[:8] == PNG_SIGNATURE
    assert data[12:16] == b"IHDR"
    return int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")


def test_one_line_per_hue_sorted_along_x(tree):
    figure = tree.nodes.plot(x="param.amount", y="result.evaluate.accuracy", hue="param.method")
    assert isinstance(figure, Figure)
    [axes] = figure.axes
    lines = axes.get_lines()
    assert [line.get_label() for line in lines] == ["l1", "random"]  # sorted hue values
    for line in lines:
        assert list(line.get_xdata()) == list(AMOUNTS)
        method = line.get_label()
        assert list(line.get_ydata()) == pytest.approx(
            [expected_accuracy(method, amount) for amount in AMOUNTS]
        )
        assert line.get_marker() == "o"
    assert lines[0].get_color() != lines[1].get_color()
    assert axes.get_xlabel() == "param.amount"
    assert axes.get_ylabel() == "result.evaluate.accuracy"
    assert axes.get_legend().get_title().get_text() == "param.method"
    assert axes.get_title() == "result.evaluate.accuracy by param.amount"


def test_short_names_that_end_one_column(tree):
    figure = tree.nodes.plot(x="amount", y="accuracy", hue="method")
    assert figure.axes[0].get_xlabel() == "param.amount"
    assert figure.axes[0].get_ylabel() == "result.evaluate.accuracy"


@pytest.mark.parametrize("suffix", ["png", "svg", "pdf"])
def test_saves_an_image_of_the_figure_size(tree, tmp_path, suffix):
    path = tmp_path / "plots" / f"accuracy.{suffix}"
    figure = tree.nodes.plot(x="param.amount", y="result.evaluate.accuracy", path=path)
    data = path.read_bytes()
    width_in, height_in = figure.get_size_inches()
    assert (width_in, height_in) == plots.FIGSIZE
    if suffix == "png":
        assert png_size(data) == (round(width_in * plots.DPI), round(height_in * plots.DPI))
    elif suffix == "svg":
        svg = ET.fromstring(data)
        assert svg.tag == "{http://www.w3.org/2000/svg}svg"
        assert (
            svg.get("width") == f"{width_in * 72:g}pt"
            and svg.get("height") == f"{height_in * 72:g}pt"
        )
        assert b"<dc:date>" not in data  # no date: the same plot writes the same bytes
    else:
        assert data[:5] == b"%PDF-"
        box = re.search(rb"/MediaBox \[ *0 0 ([\d.]+) ([\d.]+) *\]", data)
        assert box is not None
        assert (float(box.group(1)), float(box.group(2))) == (width_in * 72, height_in * 72)


def test_path_without_suffix_is_png_and_a_wrong_one_is_refused(tree, tmp_path):
    tree.nodes.plot(x="param.amount", y="result.evaluate.accuracy", path=tmp_path / "plain")
    assert png_size((tmp_path / "plain.png").read_bytes())[0] > 0
    with pytest.raises(dg.UnknownFormatError, match=r"'plot\.jpg'.*\.png, \.svg or \.pdf"):
        tree.nodes.plot(x="param.amount", y="result.evaluate.accuracy", path=tmp_path / "plot.jpg")
    assert not (tmp_path / "plot.jpg").exists()


def test_scatter_where_states_share_an_x(tree):
    # Without a hue, both methods have each amount: a line would zigzag between them.
    axes = tree.nodes.plot(x="param.amount", y="result.evaluate.accuracy").axes[0]
    assert axes.get_lines() == []
    [points] = axes.collections
    assert len(points.get_offsets()) == 10
    # Text along x: a scatter over the categories.
    axes = tree.nodes.plot(x="param.method", y="result.evaluate.accuracy").axes[0]
    assert axes.get_lines() == [] and len(axes.collections[0].get_offsets()) == 10
    # kind= forces it.
    axes = tree.nodes.plot(
        x="param.amount", y="result.evaluate.accuracy", hue="param.method", kind="scatter"
    ).axes[0]
    assert axes.get_lines() == [] and len(axes.collections) == 2
    axes = tree.nodes.plot(x="param.amount", y="result.evaluate.accuracy", kind="line").axes[0]
    assert len(axes.get_lines()) == 1


def test_many_numeric_hues_share_a_colour_bar(tree):
    frame = tree.nodes.to_dataframe()
    shifted = frame.assign(**{"result.evaluate.loss": frame["result.evaluate.loss"] + 0.5})
    both = pandas.concat([frame, shifted], ignore_index=True)  # 20 distinct losses
    figure = plots.plot(
        both, x="param.amount", y="result.evaluate.accuracy", hue="result.evaluate.loss"
    )
    assert len(figure.axes) == 2  # the plot and its colour bar
    assert figure.axes[1].get_ylabel() == "result.evaluate.loss"
    assert figure.axes[0].get_lines() == []  # a cloud on a colour map, not 20 lines


def test_unknown_kind(tree):
    with pytest.raises(dg.PlotError, match=r"kind 'line' or 'scatter'; got kind='bar'") as caught:
        tree.nodes.plot(x="param.amount", y="result.evaluate.accuracy", kind="bar")
    assert isinstance(caught.value, ValueError)


def test_a_column_that_does_not_exist_names_the_nearest(tree):
    with pytest.raises(
        dg.ColumnNotFoundError,
        match=r"No column named 'result\.evaluate\.acuracy' in the table of these 11 states "
        r"\(did you mean 'result\.evaluate\.accuracy'",
    ) as caught:
        tree.nodes.plot(x="param.amount", y="result.evaluate.acuracy")
    assert isinstance(caught.value, KeyError)
    with pytest.raises(dg.ColumnNotFoundError, match=r"'param\.amount'"):
        tree.nodes.plot(x="amonut", y="accuracy")
    with pytest.raises(dg.ColumnNotFoundError, match=r"'param\.method'"):
        tree.nodes.plot(x="amount", y="accuracy", hue="param.methd")


def test_an_ambiguous_short_name(tree):
    frame = tree.nodes.to_dataframe()
    frame["result.other.accuracy"] = frame["result.evaluate.accuracy"]
    with pytest.raises(
        dg.ColumnNotFoundError,
        match=r"'accuracy' is ambiguous here: it ends result\.evaluate\.accuracy, "
        r"result\.other\.accuracy",
    ):
        plots.plot(frame, x="amount", y="accuracy")


def test_nothing_to_plot(tree):
    frame = tree.nodes.to_dataframe()
    # The accuracy of the pruned states was lost: only the root, which has no amount, has one.
    frame.loc[frame["param.amount"].notna(), "result.evaluate.accuracy"] = None
    with pytest.raises(
        dg.PlotError,
        match=r"No state has both 'param\.amount' and 'result\.evaluate\.accuracy' "
        r"\(10 of 11 have 'param\.amount', 1 have 'result\.evaluate\.accuracy'\)",
    ) as caught:
        plots.plot(frame, x="param.amount", y="result.evaluate.accuracy")
    assert isinstance(caught.value, ValueError)
    # Where the column itself is missing, the error says that instead.
    with pytest.raises(dg.ColumnNotFoundError, match=r"No column named 'param\.amount'"):
        tree.nodes.filter("!method:*").plot(x="param.amount", y="result.evaluate.accuracy")


def test_a_dataframe_with_columns_of_ones_own(tree, tmp_path):
    frame = tree.nodes.filter("method:*").to_dataframe()
    frame["kept"] = 1 - frame["param.amount"]
    figure = plots.plot(frame, x="kept", y="result.evaluate.accuracy", hue="param.method")
    assert [list(line.get_xdata()) for line in figure.axes[0].get_lines()] == [
        pytest.approx([0.1, 0.3, 0.5, 0.7, 0.9])
    ] * 2
    with pytest.raises(TypeError, match="NodeSet.*DataFrame; got int"):
        plots.plot(3, x="a", y="b")


def test_default_plots_of_a_table(tree):
    frame = tree.nodes.to_dataframe()
    assert plots.default_plots(frame) == [
        {"x": "param.amount", "y": "result.evaluate.accuracy", "hue": "param.method"},
        {"x": "param.amount", "y": "result.evaluate.loss", "hue": "param.method"},
    ]
    assert (
        plots.default_plots(
            frame.drop(columns=["result.evaluate.accuracy", "result.evaluate.loss"])
        )
        == []
    )


def test_a_figure_displays_itself_as_png(tree):
    figure = tree.nodes.plot(x="param.amount", y="result.evaluate.accuracy")
    assert png_size(figure._repr_png_()) == (640, 400)


def test_a_notebook_shows_the_plot_inline(study_dir):
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    source = (
        "import dagger as dg\n"
        f"tree = dg.Experiment.restore({str(study_dir)!r}).graph\n"
        "tree.nodes.plot(x='param.amount', y='result.evaluate.accuracy', hue='param.method')"
    )
    notebook = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(source)])
    nbclient.NotebookClient(notebook, kernel_name="python3", timeout=300).execute()
    [output] = [o for o in notebook.cells[0].outputs if "image/png" in o.get("data", {})]
    assert png_size(base64.b64decode(output.data["image/png"]))[0] > 100


# -- the command line ------------------------------------------------------------------------------


@pytest.fixture
def cli(subprocess_env, tmp_path):
    """Runs ``python -m dagger ARGS`` in tmp_path; returns the completed process."""

    def run(*args, env=None):
        return subprocess.run(
            [sys.executable, "-m", "dagger", *map(str, args)],
            cwd=tmp_path,
            env={**subprocess_env, **(env or {})},
            capture_output=True,
            text=True,
            timeout=120,
        )

    return run


def test_cli_plot_writes_the_image(cli, study_dir, tmp_path):
    out = tmp_path / "out" / "fig.png"
    # An interactive backend named in the environment, and no display: the CLI never uses one.
    env = {"MPLBACKEND": "TkAgg", "DISPLAY": ""}
    process = cli(
        "plot", study_dir, "--x", "param.amount", "--y", "result.evaluate.accuracy",
        "--hue", "param.method", "-o", out, env=env,
    )  # fmt: skip
    assert process.returncode == 0, process.stderr
    assert process.stdout.strip() == str(out)
    assert png_size(out.read_bytes()) == (640, 400)


def test_cli_plot_of_tagged_states_as_svg(cli, study_dir, tmp_path):
    out = tmp_path / "fig.svg"
    process = cli(
        "plot", study_dir, "--x", "amount", "--y", "accuracy", "--tag", "method:l1",
        "--kind", "scatter", "--title", "l1 only", "-o", out,
    )  # fmt: skip
    assert process.returncode == 0, process.stderr
    svg = out.read_text()
    assert ET.fromstring(svg).tag.endswith("svg")
    assert "l1 only" in svg  # the title, in the SVG's own description of its text
    assert len(re.findall(r'<g id="PathCollection_\d+">', svg)) == 1  # one scatter, l1's


def test_cli_plot_errors(cli, study_dir, tmp_path):
    process = cli("plot", study_dir, "--x", "param.amount", "--y", "result.evaluate.acuracy")
    assert process.returncode == 2
    assert process.stderr.startswith("dagger plot: No column named 'result.evaluate.acuracy'")
    assert "did you mean 'result.evaluate.accuracy'" in process.stderr
    assert len(process.stderr.strip().splitlines()) == 1

    process = cli("plot", study_dir, "--x", "amount", "--y", "accuracy", "-o", "fig.gif")
    assert process.returncode == 2
    assert "must end in .png, .svg, .pdf" in process.stderr

    process = cli("plot", study_dir, "--x", "amount", "--y", "accuracy", "--tag", "metod:*")
    assert process.returncode == 1
    assert (
        "no state has a tag matching 'metod:*'; tags here: method:l1, method:random"
        in process.stderr
    )
    assert not (tmp_path / "plot.png").exists()


def test_frame_helpers_accept_what_to_dataframe_gives():
    frame = pandas.DataFrame({"id": ["a", "b"], "param.x": [1.0, None], "tags": [["t"], []]})
    assert plots.is_numeric(frame["param.x"])
    assert not plots.is_numeric(frame["tags"])
    assert not plots.is_numeric([True, False])  # booleans are categories
    assert plots.resolve_column(frame, "x") == "param.x"
