"""The ``dagger`` command line: inspect and maintain stored experiments.

    dagger show DIR [--depth N]                  the tree, one line per state, indented
    dagger ls DIR [--tag PATTERN] [--format table|json|csv] [--env]
                                                 one row per state: ids, recipe, parameters,
                                                 tags, status, timings, results
    dagger draw DIR [-o FILE] [--color COLUMN]   draw the tree to FILE (.png, .svg or .pdf)
    dagger plot DIR --x COL --y COL [--hue COL] [--kind line|scatter] [--tag PATTERN] -o FILE
                                                 plot one column against another (.png, .svg,
                                                 .pdf)
    dagger report DIR [-o FILE] [--color COLUMN] [--plot X,Y[,HUE] ...]
                                                 one self-contained HTML page: the drawing,
                                                 a sortable table and plots
    dagger failures DIR [--id PREFIX]            every failed state and Function, with its
                                                 full traceback
    dagger explain DIR ID                        what a stored state's id was made of: recipe,
                                                 parameters, code, what the code read
    dagger verify DIR                            check every record, payload and blob against
                                                 its checksum, and every state's parent
    dagger gc DIR [--dry-run] [--repair]         remove blobs and files that nothing refers to
    dagger audit DIR [--sample N] [--seed S] [--rtol X] [--atol Y] [IDS...]
                                                 recompute stored states from their stored
                                                 parents and compare: do they reproduce?
    dagger rm DIR [IDS...] [--tag PATTERN] [--failed] [--identity N] [--no-descendants]
              [--dry-run]                        remove states with their subtrees; print
                                                 them and the bytes freed
    dagger prune DIR --keep "top K by COLUMN" [--per COLUMN] [--dry-run]
                                                 keep the best states and their ancestors,
                                                 drop the other states' payloads (records stay)

Also runs as ``python -m dagger``. Showing, listing and drawing read the records only (no
payload is loaded), and work where the experiment's state class cannot be imported.

``audit`` runs the user's recipes: they are imported from their modules as a run would, with
the current directory on the import path (as ``python -m``); a recipe defined in a script
cannot be rebuilt here (the audit says so; audit from the script with ``exp.audit()``).

Exit status: 0 on success; 1 when ``verify`` finds problems, ``gc`` refuses (damaged entries),
``ls --tag`` matches nothing or ``audit`` finds a state that does not reproduce (or cannot be
recomputed); 2 with a one-line error for a folder that is not an experiment, bad arguments
(a malformed keep rule, an unknown column, ``rm --no-descendants`` on a state with children)
or another dagger error.
"""

from __future__ import annotations

import argparse
import difflib
import fnmatch
import json
import math
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

from .errors import DaggerError, NotAnExperimentError
from .store.maintenance import DEFAULT_MIN_AGE, gc, verify

if TYPE_CHECKING:
    import pandas

    from .nodeset import NodeSet
    from .state import ExperimentState
    from .tree import StaticExperimentTree

__all__ = ["build_parser", "main"]

LIST_FORMATS = ("table", "json", "csv")
# Full ids are 64 hex digits; a table shows enough of them to pass to tree.node(prefix).
TABLE_ID_WIDTH = 12
TABLE_CELL_WIDTH = 40


def _verify(args: argparse.Namespace) -> int:
    report = verify(args.directory)
    print(report)
    return 0 if report.ok else 1


def _gc(args: argparse.Namespace) -> int:
    report = gc(args.directory, dry_run=args.dry_run, min_age=args.min_age, repair=args.repair)
    print(report)
    return 1 if report.refused else 0


def _age(seconds: float) -> str:
    if seconds >= 3600 and seconds % 3600 == 0:
        return f"{seconds / 3600:.0f} h"
    if seconds >= 60 and seconds % 60 == 0:
        return f"{seconds / 60:.0f} min"
    return f"{seconds:g} s"


def _failures(args: argparse.Namespace) -> int:
    """Every failed state and Function, with its full stored traceback."""
    tree = _tree(args.directory)
    nodes = tree.nodes if args.id is None else [tree.node(args.id)]
    shown = 0
    for state in nodes:
        info = state.dagger
        what = str(state.recipe) if state.recipe is not None else "root"
        if info.error is not None:
            shown += 1
            print(f"== state {state.sha()} {what} failed ({info.created or '?'})")
            print(info.error.traceback.rstrip() or f"{info.error.type}: {info.error.message}")
            print()
        for name, entry in info.notes.results.items():
            if entry.error is not None:
                shown += 1
                print(f"== Function `{name}` on state {state.sha()} {what} failed")
                print(
                    entry.error.traceback.rstrip() or f"{entry.error.type}: {entry.error.message}"
                )
                print()
    if not shown:
        print("no failures recorded")
    return 0


def _explain(args: argparse.Namespace) -> int:
    """What a stored state's id was made of (ID: the id or a unique prefix of it)."""
    print(_tree(args.directory).node(args.id).dagger.explain())
    return 0


def _audit(args: argparse.Namespace) -> int:
    from .experiment import Experiment

    # The user's recipes are imported as a run imports them: `python -m dagger` puts the
    # current directory first on the path; the `dagger` console script does not, so add it.
    here = os.getcwd()
    if here not in sys.path and "" not in sys.path:
        sys.path.insert(0, here)
    experiment = Experiment.restore(args.directory)
    report = experiment.audit(
        args.ids or None,
        sample=None if args.sample == 0 else args.sample,
        rtol=args.rtol,
        atol=args.atol,
        seed=args.seed,
        git_directory=Path.cwd(),
    )
    print(report)
    return 0 if report.ok else 1


def _rm(args: argparse.Namespace) -> int:
    from . import curate
    from .experiment import Experiment
    from .selection import resolve_ids

    if not (args.ids or args.tag is not None or args.failed or args.identity is not None):
        print(
            "dagger rm: name the states to remove: ids (or unique prefixes), --tag PATTERN, "
            "--failed or --identity N (`dagger ls DIR` lists them).",
            file=sys.stderr,
        )
        return 2
    experiment = Experiment.restore(args.directory, import_class=False)
    table = experiment.store.snapshot()
    chosen = resolve_ids(args.ids, table.ids)
    matched = curate.select(
        experiment.store, table, tag=args.tag, failed=args.failed, identity=args.identity
    )
    chosen += [state_id for state_id in matched if state_id not in chosen]
    if not chosen:
        wanted = [
            *([f"a tag matching {args.tag!r}"] if args.tag is not None else []),
            *(["failed"] if args.failed else []),
            *([f"of identity scheme {args.identity}"] if args.identity is not None else []),
        ]
        print(f"no state is {' or '.join(wanted)}; nothing removed.")
        return 0
    report = experiment.remove(chosen, descendants=not args.no_descendants, dry_run=args.dry_run)
    print(report)
    return 0


def _prune(args: argparse.Namespace) -> int:
    from .experiment import Experiment

    experiment = Experiment.restore(args.directory, import_class=False)
    print(experiment.prune(args.keep, per=args.per, dry_run=args.dry_run))
    return 0


# -- restoring -------------------------------------------------------------------------------------


def _tree(directory: str) -> StaticExperimentTree:
    """The stored tree of the experiment in ``directory``, slim.

    Showing, listing and drawing read records only, so the user's code is not imported (none
    of it runs): the states are of a stand-in class named like theirs.
    """
    from .experiment import Experiment

    tree = Experiment.restore(directory, import_class=False).graph
    if tree is None:  # restore() always builds one; this keeps the type checker informed
        raise NotAnExperimentError(f"`{directory}` holds no experiment tree.", directory=directory)
    return tree


# -- show ------------------------------------------------------------------------------------------


def _can_print(stream: TextIO, text: str) -> bool:
    try:
        text.encode(stream.encoding or "ascii")
    except (UnicodeEncodeError, LookupError):
        return False
    return True


def _show(args: argparse.Namespace) -> int:
    from .render import to_text

    tree = _tree(args.directory)
    # Box-drawing characters where the terminal can print them (not on an ASCII-only one).
    print(to_text(tree, depth=args.depth, unicode=_can_print(sys.stdout, "├─│└")))
    return 0


# -- ls --------------------------------------------------------------------------------------------


def _has_tag(node: ExperimentState, pattern: str) -> bool:
    """Whether NodeSet.filter(pattern) keeps ``node``: a glob, negated by a leading ``!``."""
    negate = pattern.startswith("!")
    glob = pattern[1:] if negate else pattern
    return negate ^ any(fnmatch.fnmatchcase(tag, glob) for tag in node.tags)


def _no_match(pattern: str, nodes: NodeSet) -> str:
    tags = sorted({tag for node in nodes for tag in node.tags})
    if not tags:
        return f"no state has a tag matching {pattern!r}: this experiment has no tags."
    # Every tag, the most similar to the pattern first.
    wanted = pattern.lstrip("!")
    nearest = difflib.get_close_matches(wanted, tags, n=len(tags), cutoff=0.0)
    nearest += [tag for tag in tags if tag not in nearest]
    return f"no state has a tag matching {pattern!r}; tags here: {', '.join(nearest)}."


def _plain(value: Any) -> Any:
    """A cell as a plain Python value: missing values (NaN, NA) as None, numpy scalars unboxed."""
    if value is None or isinstance(value, list | dict | str | bool):
        return value
    item = getattr(value, "item", None)
    if callable(item) and getattr(value, "ndim", None) == 0:
        value = item()
    try:
        import pandas

        if pandas.isna(value):
            return None
    except (TypeError, ValueError):  # array-likes: not a missing scalar
        pass
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def _records(frame: pandas.DataFrame) -> list[dict[str, Any]]:
    columns = [str(column) for column in frame.columns]
    return [
        {column: _plain(value) for column, value in zip(columns, row, strict=True)}
        for row in frame.itertuples(index=False, name=None)
    ]


def _table_cell(column: str, value: Any) -> str:
    from .render import format_value

    if value is None:
        return ""
    if column in ("id", "parent") and isinstance(value, str):
        return value[:TABLE_ID_WIDTH]
    if column == "tags" and isinstance(value, list):
        return ", ".join(map(str, value))
    if isinstance(value, str):
        return value if len(value) <= TABLE_CELL_WIDTH else value[: TABLE_CELL_WIDTH - 3] + "..."
    return format_value(value, TABLE_CELL_WIDTH)


def _table(rows: list[dict[str, Any]], columns: list[str]) -> str:
    """Aligned plain text: numbers to the right, everything else to the left."""
    cells = [[_table_cell(column, row[column]) for column in columns] for row in rows]
    widths = [
        max([len(column), *(len(line[index]) for line in cells)])
        for index, column in enumerate(columns)
    ]
    numeric = [
        any(row[column] is not None for row in rows)
        and all(
            isinstance(row[column], int | float) and not isinstance(row[column], bool)
            for row in rows
            if row[column] is not None
        )
        for column in columns
    ]

    def join(parts: list[str]) -> str:
        padded = [
            part.rjust(width) if right else part.ljust(width)
            for part, width, right in zip(parts, widths, numeric, strict=True)
        ]
        return "  ".join(padded).rstrip()

    return "\n".join([join(columns), *(join(line) for line in cells)])


def _json_cell(value: Any) -> str:
    # Lists and dicts (tags, list-valued results) as JSON, so that a CSV reader can parse them.
    return json.dumps(value) if isinstance(value, list | dict) else value


def _ls(args: argparse.Namespace) -> int:
    nodes = _tree(args.directory).nodes
    if args.tag is not None:
        # Checked here first, so that an empty selection gets this command's one-line message
        # (and exit status 1) rather than NodeSet.filter's logged hint as well.
        if not any(_has_tag(node, args.tag) for node in nodes):
            print(f"dagger ls: {_no_match(args.tag, nodes)}", file=sys.stderr)
            return 1
        nodes = nodes.filter(args.tag)
    frame = nodes.to_dataframe()
    if args.format == "table" and not args.env:
        # The environment columns are wide (a commit, a host name): the table shows them on
        # request; JSON and CSV always hold them.
        frame = frame.drop(columns=[c for c in frame.columns if str(c).startswith("env.")])
    # Whole-number columns that pandas made float because some rows lack them read as ints.
    frame = frame.convert_dtypes()
    if args.format == "csv":
        frame = frame.apply(lambda column: column.map(_json_cell))
        frame.to_csv(sys.stdout, index=False)
        return 0
    rows = _records(frame)
    if args.format == "json":
        print(json.dumps(rows, indent=2, default=str))
        return 0
    if not rows:
        print("no states")
        return 0
    print(_table(rows, [str(column) for column in frame.columns]))
    return 0


# -- draw ------------------------------------------------------------------------------------------


def _draw(args: argparse.Namespace) -> int:
    from .render import DRAW_FORMATS, draw

    output = Path(args.output)
    suffix = output.suffix.lower().lstrip(".")
    # No suffix means PNG; a suffix that is not a format fails before the tree is read.
    file_format = suffix if suffix in DRAW_FORMATS else "png"
    if suffix and suffix not in DRAW_FORMATS:
        print(
            f"dagger draw: cannot write {output.name!r}: the file name must end in "
            + ", ".join(f".{name}" for name in DRAW_FORMATS)
            + " (or have no suffix, for png).",
            file=sys.stderr,
        )
        return 2
    tree = _tree(args.directory)
    print(draw(tree, output, format=file_format, color=args.color))
    return 0


# -- plot and report -------------------------------------------------------------------------------


def _plot(args: argparse.Namespace) -> int:
    from .plots import PLOT_FORMATS, plot

    output = Path(args.output)
    suffix = output.suffix.lower().lstrip(".")
    if suffix and suffix not in PLOT_FORMATS:
        print(
            f"dagger plot: cannot write {output.name!r}: the file name must end in "
            + ", ".join(f".{name}" for name in PLOT_FORMATS)
            + " (or have no suffix, for png).",
            file=sys.stderr,
        )
        return 2
    nodes = _tree(args.directory).nodes
    if args.tag is not None:
        if not any(_has_tag(node, args.tag) for node in nodes):
            print(f"dagger plot: {_no_match(args.tag, nodes)}", file=sys.stderr)
            return 1
        nodes = nodes.filter(args.tag)
    figure = plot(nodes, args.x, args.y, args.hue, kind=args.kind, title=args.title)
    from .plots import save_figure

    print(save_figure(figure, output))
    return 0


def _plot_spec(text: str) -> dict[str, str]:
    parts = [part.strip() for part in text.split(",")]
    if len(parts) not in (2, 3) or not all(parts):
        raise argparse.ArgumentTypeError(
            f"expected X,Y or X,Y,HUE (column names separated by commas), got {text!r}"
        )
    spec = {"x": parts[0], "y": parts[1]}
    if len(parts) == 3:
        spec["hue"] = parts[2]
    return spec


def _report(args: argparse.Namespace) -> int:
    from .report import write_report

    tree = _tree(args.directory)
    title = args.title or f"dagger experiment {Path(args.directory).absolute().name}"
    print(write_report(tree, args.output, title=title, plots=args.plot, color=args.color))
    return 0


# -- the parser ------------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="dagger", description="Inspect and maintain dagger experiment folders."
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    show = commands.add_parser("show", help="print the tree, one line per state")
    show.add_argument("directory", metavar="DIR")
    show.add_argument(
        "--depth",
        type=_non_negative,
        default=None,
        metavar="N",
        help="show states at most N steps below the root",
    )
    show.set_defaults(handler=_show)

    listing = commands.add_parser("ls", help="list the states as a table, JSON or CSV")
    listing.add_argument("directory", metavar="DIR")
    listing.add_argument(
        "--tag",
        metavar="PATTERN",
        help="only states with a tag matching this glob (a leading ! negates it)",
    )
    listing.add_argument(
        "--format", choices=LIST_FORMATS, default="table", help="output format (default table)"
    )
    listing.add_argument(
        "--env",
        action="store_true",
        help="also show the environment columns (env.python, env.torch, env.device, "
        "env.git_commit, ...) in the table; JSON and CSV always have them",
    )
    listing.set_defaults(handler=_ls)

    drawing = commands.add_parser("draw", help="draw the tree to a PNG, SVG or PDF file")
    drawing.add_argument("directory", metavar="DIR")
    drawing.add_argument(
        "-o",
        "--output",
        default="graph.png",
        metavar="FILE",
        help="the file to write; its suffix (.png, .svg, .pdf) sets the format (default graph.png)",
    )
    drawing.add_argument(
        "--color",
        metavar="COLUMN",
        help="fill states by this column of `dagger ls` (result.evaluate.accuracy, param.method)",
    )
    drawing.set_defaults(handler=_draw)

    plotting = commands.add_parser("plot", help="plot one column of the states against another")
    plotting.add_argument("directory", metavar="DIR")
    plotting.add_argument("--x", required=True, metavar="COLUMN", help="horizontal axis")
    plotting.add_argument("--y", required=True, metavar="COLUMN", help="vertical axis")
    plotting.add_argument("--hue", metavar="COLUMN", help="one series per value of this column")
    plotting.add_argument(
        "--kind", choices=("line", "scatter"), help="force a line or a scatter plot"
    )
    plotting.add_argument(
        "--tag",
        metavar="PATTERN",
        help="only states with a tag matching this glob (a leading ! negates it)",
    )
    plotting.add_argument("--title", help="the plot's title")
    plotting.add_argument(
        "-o",
        "--output",
        default="plot.png",
        metavar="FILE",
        help="the file to write; its suffix (.png, .svg, .pdf) sets the format (default plot.png)",
    )
    plotting.set_defaults(handler=_plot)

    reporting = commands.add_parser(
        "report", help="write one self-contained HTML page: drawing, table, plots"
    )
    reporting.add_argument("directory", metavar="DIR")
    reporting.add_argument(
        "-o", "--output", default="report.html", metavar="FILE", help="default report.html"
    )
    reporting.add_argument("--title", help="the page's title (default: the folder's name)")
    reporting.add_argument(
        "--color", metavar="COLUMN", help="fill the drawing's states by this column"
    )
    reporting.add_argument(
        "--plot",
        action="append",
        type=_plot_spec,
        metavar="X,Y[,HUE]",
        help="a plot to show (repeatable); without any, sensible ones are chosen",
    )
    reporting.set_defaults(handler=_report)

    failing = commands.add_parser(
        "failures", help="print every failed state and Function with its full traceback"
    )
    failing.add_argument("directory", metavar="DIR")
    failing.add_argument("--id", metavar="PREFIX", help="only the state with this id (prefix)")
    failing.set_defaults(handler=_failures)

    explaining = commands.add_parser(
        "explain",
        help="print what a stored state's id was made of: recipe, parameters, code it read",
    )
    explaining.add_argument("directory", metavar="DIR")
    explaining.add_argument("id", metavar="ID", help="the state's id or a unique prefix of it")
    explaining.set_defaults(handler=_explain)

    check = commands.add_parser(
        "verify",
        help="check every record, payload and blob against its checksum, and every parent",
    )
    check.add_argument("directory", metavar="DIR")
    check.set_defaults(handler=_verify)

    clean = commands.add_parser("gc", help="remove blobs and files that nothing refers to")
    clean.add_argument("directory", metavar="DIR")
    clean.add_argument("--dry-run", action="store_true", help="only list what would go")
    clean.add_argument(
        "--min-age",
        type=float,
        default=DEFAULT_MIN_AGE,
        metavar="SECONDS",
        help=(
            "while a run is going on, leave unreferenced files younger than this alone "
            f"(default {DEFAULT_MIN_AGE:.0f})"
        ),
    )
    clean.add_argument(
        "--repair",
        action="store_true",
        help="move damaged log entries to quarantine/ first, instead of refusing to collect",
    )
    clean.set_defaults(handler=_gc)

    removing = commands.add_parser(
        "rm", help="remove states (with everything below them) and the bytes they hold"
    )
    removing.add_argument("directory", metavar="DIR")
    removing.add_argument(
        "ids", nargs="*", metavar="IDS", help="ids or unique id prefixes of states to remove"
    )
    removing.add_argument(
        "--tag", metavar="PATTERN", help="also every state with a tag matching this glob"
    )
    removing.add_argument("--failed", action="store_true", help="also every failed state")
    removing.add_argument(
        "--identity",
        type=_non_negative,
        metavar="N",
        help="also every state whose id was computed by identity scheme N (1: older dagger)",
    )
    removing.add_argument(
        "--no-descendants",
        action="store_true",
        help="remove only the states named; refuse (removing nothing) if one has children",
    )
    removing.add_argument(
        "--dry-run", action="store_true", help="only list what would go; change nothing"
    )
    removing.set_defaults(handler=_rm)

    pruning = commands.add_parser(
        "prune",
        help="keep the best states and their ancestors; drop the payloads of the others",
    )
    pruning.add_argument("directory", metavar="DIR")
    pruning.add_argument(
        "--keep",
        required=True,
        metavar="RULE",
        help="'top K by COLUMN' or 'bottom K by COLUMN', COLUMN as `dagger ls` names it "
        "(e.g. 'top 3 by result.evaluate.accuracy')",
    )
    pruning.add_argument(
        "--per", metavar="COLUMN", help="keep the top K within each group of this column"
    )
    pruning.add_argument(
        "--dry-run", action="store_true", help="only list what would be pruned; change nothing"
    )
    pruning.set_defaults(handler=_prune)

    auditing = commands.add_parser(
        "audit",
        help="recompute stored states from their stored parents and compare: do they reproduce?",
    )
    auditing.add_argument("directory", metavar="DIR")
    auditing.add_argument(
        "ids",
        nargs="*",
        metavar="IDS",
        help="ids or unique id prefixes to audit (default: a random sample of the stored states)",
    )
    auditing.add_argument(
        "--sample",
        type=_non_negative,
        default=5,
        metavar="N",
        help="how many stored states to draw when no ids are given (default 5; 0: all)",
    )
    auditing.add_argument(
        "--seed", type=int, default=None, metavar="S", help="seed of the draw (default: random)"
    )
    auditing.add_argument(
        "--rtol",
        type=float,
        default=0.0,
        metavar="X",
        help="relative tolerance (default 0: bitwise with --atol 0)",
    )
    auditing.add_argument(
        "--atol", type=float, default=0.0, metavar="Y", help="absolute tolerance (default 0)"
    )
    auditing.set_defaults(handler=_audit)
    return parser


def _non_negative(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected 0 or more, got {value}")
    return value


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``dagger`` console script; returns the exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.handler(args))
    except DaggerError as error:
        print(f"dagger {args.command}: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        # The reader left (``dagger ls DIR | head``): not an error. Point stdout at devnull so
        # that Python's flush at exit does not complain a second time.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 141


if __name__ == "__main__":
    sys.exit(main())
