"""The plan table: what a run would do, with times estimated from recorded durations."""

from __future__ import annotations

import math

import pytest

from dagger.errors import InvalidArgumentError
from dagger.plan_report import PlanReport, build_plan_report, format_seconds, median_durations

ROWS = [
    {
        "state_id": "a" * 64,
        "recipe": "LeNetState",
        "recipe_class": "study.LeNetState",
        "action": "stored",
    },
    {
        "state_id": "b" * 64,
        "recipe": "Train(epochs=1, lr=0.1)",
        "recipe_class": "study.Train",
        "action": "compute",
    },
    {
        "state_id": "c" * 64,
        "recipe": "Prune(amount=0.5)",
        "recipe_class": "study.Prune",
        "action": "compute",
    },
    {
        "state_id": "d" * 64,
        "recipe": "Train(epochs=2, lr=0.1)",
        "recipe_class": "study.Train",
        "action": "failed before",
    },
    {
        "state_id": "e" * 64,
        "recipe": "Train(epochs=3, lr=0.1)",
        "recipe_class": "study.Train",
        "action": "skipped",
    },
]
HISTORY = [
    {"recipe_class": "study.Train", "seconds": 30.0},
    {"recipe_class": "study.Train", "seconds": 2000.0},  # one slow outlier: the median ignores it
    {"recipe_class": "study.Train", "seconds": 40.0},
    {"recipe_class": "study.LeNetState", "seconds": 0.5},
]


@pytest.fixture
def report():
    return build_plan_report(ROWS, HISTORY)


def test_estimates_are_the_median_of_the_same_recipe_class(report):
    estimates = {row.state_id[0]: row.estimated_seconds for row in report.rows}
    assert estimates == {"a": None, "b": 40.0, "c": None, "d": 40.0, "e": None}


def test_totals(report):
    assert [
        report.count(action) for action in ("compute", "stored", "failed before", "skipped")
    ] == [2, 1, 1, 1]
    assert [row.state_id[0] for row in report.to_run] == ["b", "c", "d"]
    assert report.estimated_seconds == 80.0
    assert report.unknown == 1
    assert report.summary() == (
        "2 to compute, 1 stored, 1 failed before, 1 skipped, estimated ~1 min 20 s + 1 of unknown duration"
    )


def test_the_table_is_aligned(report):
    lines = str(report).splitlines()
    assert lines[0].split() == ["state", "recipe", "action", "estimate"]
    assert lines[1].split() == ["aaaaaaaaaaaa", "LeNetState", "stored"]
    assert lines[2].endswith(" 40 s")
    assert lines[3].endswith(" unknown")
    assert lines[4].endswith(" 40 s")
    assert lines[5].split()[-1] == "skipped"  # not run: no estimate
    # Columns line up: each action starts where the header's does.
    column = lines[0].index("action")
    assert [line[column:].split()[0] for line in lines[1:6]] == [
        "stored",
        "compute",
        "compute",
        "failed",
        "skipped",
    ]
    assert lines[-1] == report.summary()


def test_a_long_plan_is_cut_in_print_but_not_in_to_text():
    rows = [
        {"state_id": f"{i:064x}", "recipe": "Train()", "recipe_class": "Train", "action": "compute"}
        for i in range(PlanReport.MAX_ROWS + 7)
    ]
    report = build_plan_report(rows)
    assert "... 7 more rows (PlanReport.to_text() shows all)" in str(report)
    assert len(report.to_text().splitlines()) == 1 + len(rows) + 1


def test_to_dataframe(report):
    frame = report.to_dataframe()
    assert list(frame.columns) == [
        "state_id",
        "recipe",
        "recipe_class",
        "action",
        "estimated_seconds",
        "functions",
    ]
    assert frame["functions"].tolist() == [[], [], [], [], []]
    assert frame["action"].tolist() == ["stored", "compute", "compute", "failed before", "skipped"]
    assert frame["estimated_seconds"].tolist()[1] == 40.0
    assert math.isnan(frame["estimated_seconds"].tolist()[2])
    assert frame["estimated_seconds"].sum() == report.estimated_seconds


def test_unusable_durations_are_left_out():
    durations = median_durations(
        [
            {"recipe_class": "T", "seconds": 1.0},
            {"recipe_class": "T", "seconds": None},  # failed state
            {"recipe_class": "T", "seconds": float("nan")},
            {"recipe_class": "T", "seconds": -3.0},
            {"recipe_class": "T", "seconds": True},
            {"recipe_class": "T"},  # record of an older format
            {"seconds": 5.0},
            {"recipe_class": "T", "seconds": 3},
        ]
    )
    assert durations == {"T": 2.0}


def test_an_empty_plan():
    report = build_plan_report([])
    assert report.summary() == "0 to compute, 0 stored, 0 failed before, 0 skipped"
    assert report.to_dataframe().empty


def test_an_unknown_action_is_refused():
    rows = [{**ROWS[0], "action": "cached"}]
    with pytest.raises(
        InvalidArgumentError,
        match=r"Plan row 0 \(state aaaaaaaaaaaa\): action 'cached' is not one of 'compute', 'stored', 'failed before', 'skipped'",
    ):
        build_plan_report(rows)
    with pytest.raises(ValueError, match="action 'done' is not one of"):
        build_plan_report(ROWS).count("done")


def test_a_row_without_its_keys_is_refused():
    with pytest.raises(InvalidArgumentError, match=r"Plan row 1 lacks 'recipe_class', 'action'"):
        build_plan_report([ROWS[0], {"state_id": "x", "recipe": "Train()"}])


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        (0.0123, "12 ms"),
        (0.85, "850 ms"),
        (12.34, "12.3 s"),
        (250, "4 min 10 s"),
        (7500, "2 h 05 min"),
    ],
)
def test_format_seconds(seconds, text):
    assert format_seconds(seconds) == text


def test_functions_to_run_are_listed_per_row_and_counted():
    rows = [
        {**ROWS[0], "functions": ("evaluate",)},
        {**ROWS[1], "functions": ["evaluate", "sparsity"]},
        ROWS[2],
    ]
    report = build_plan_report(rows, HISTORY)
    assert [row.functions for row in report.rows] == [
        ("evaluate",),
        ("evaluate", "sparsity"),
        (),
    ]
    assert report.functions == 3
    assert "3 Functions to run" in report.summary()
    lines = report.to_text().splitlines()
    assert lines[0].split() == ["state", "recipe", "action", "estimate", "functions"]
    assert lines[1].endswith("evaluate")
    assert lines[2].endswith("evaluate, sparsity")
    assert report.to_dataframe()["functions"].tolist() == [
        ["evaluate"],
        ["evaluate", "sparsity"],
        [],
    ]
    # Without any Function the column is left out of the text.
    assert "functions" not in build_plan_report(ROWS, HISTORY).to_text().splitlines()[0]


def test_a_plan_with_no_known_duration_says_so_rather_than_zero():
    report = build_plan_report([ROWS[1], ROWS[2]], [])
    assert report.summary() == (
        "2 to compute, 0 stored, 0 failed before, 0 skipped, no estimate (2 of unknown duration)"
    )
