"""Writes tests/data/format1/: a small store in dagger's store format 1 (one JSON file per
record under states/), as dagger wrote it at commit 95f0a37. Kept for reference: the store
itself is checked in, and tests/test_format1.py opens, reads and converts a copy of it.

    git worktree add /tmp/dagger-95f0a37 95f0a37
    python -m venv /tmp/old && /tmp/old/bin/pip install /tmp/dagger-95f0a37
    cp tests/data/make_format1.py tests/helpers.py /tmp/work/ && cd /tmp/work
    /tmp/old/bin/python make_format1.py OUT
"""

import sys

import numpy as np
from helpers import Add, Boom, CounterState, Multiply

import dagger as dg


class Widen(dg.Recipe):
    """Adds an 80 KB array to the state (above the 64 KiB blob threshold: a blob)."""

    VERSION = "1"

    def run(self, state):
        state.extra = np.arange(10_000, dtype=np.float64)
        return state


def evaluate(state):
    return {"value": state.value, "double": 2 * state.value}


def spectrum(state):
    return np.linspace(0.0, 1.0, 50) * state.value  # not plain JSON: a side file


out = sys.argv[1]
exp = dg.Experiment(out, CounterState)
root = exp.spawn_new_tree(start=1)
a = Add(1)(root)
with exp.tag("prune"):
    b = Multiply(3)(a)
    with exp.tag("big"):
        c = Multiply(5)(a)
with exp.tag("baseline"):
    d = Add(10)(root)
w = Widen()(d)
Boom()(root)
dg.Function(evaluate)(b)
dg.Function(spectrum)(c)
try:
    exp.run(progress=False)
except dg.RunError:
    pass
# a second run that only adds a tag to a stored state: a notes file
exp = dg.Experiment(out, CounterState)
root = exp.spawn_new_tree(start=1)
with exp.tag("late"):
    Add(1)(root)
exp.run(progress=False)
