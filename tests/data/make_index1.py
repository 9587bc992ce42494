"""Writes tests/data/index1/: a small store (store format 2) whose index.json is in the layout
dagger wrote before its sections were decoded lazily (``dagger-index``: one JSON document
under one blake2b checksum), as dagger wrote it at commit 3968173. Kept for reference: the
store itself is checked in, and tests/test_index.py restores a copy of it.

    git worktree add /tmp/dagger-3968173 3968173
    python -m venv /tmp/old && /tmp/old/bin/pip install /tmp/dagger-3968173
    cp tests/data/make_index1.py tests/helpers.py /tmp/work/ && cd /tmp/work
    /tmp/old/bin/python make_index1.py OUT
"""

import sys

import numpy as np
from helpers import Add, Boom, CounterState, Multiply

import dagger as dg


def evaluate(state):
    return {"value": state.value, "double": 2 * state.value}


def spectrum(state):
    return np.linspace(0.0, 1.0, 50) * state.value  # not plain JSON: a value in the log


out = sys.argv[1]
exp = dg.Experiment(out, CounterState)
root = exp.spawn_new_tree(start=1)
with exp.tag("base"):
    a = Add(1)(root)
dg.Function(evaluate)(a)
for factor in range(2, 6):
    Multiply(factor)(a)
dg.Function(spectrum)(Multiply(2)(a))
Boom()(root)
try:
    exp.run(progress=False)
except dg.RunError:
    pass
# a second run that adds a tag to a stored state and a state: notes, and the index rewritten
exp = dg.Experiment(out, CounterState)
root = exp.spawn_new_tree(start=1)
with exp.tag("late"):
    Add(1)(root)
    Add(7)(root)
exp.run(progress=False)
