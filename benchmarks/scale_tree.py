"""The trees the scale benchmarks build (an importable module, as a user's classes are)."""

from __future__ import annotations

import dagger as dg


class Trivial(dg.ExperimentState):
    PROPERTIES = ["seed"]

    def initialize_state(self, **arguments):
        self.value = 0


class Step(dg.Recipe):
    def __init__(self, index):
        self.index = index

    def run(self, state):
        state.value = self.index
        return state


class Twist(dg.Recipe):
    def __init__(self, angle):
        self.angle = angle

    def run(self, state):
        state.value = state.value * 1000 + self.angle
        return state


def two_levels(directory, states: int, durability: str = "fast") -> dg.Experiment:
    """root -> about sqrt(n) branches -> leaves under each: ``states`` states in all."""
    exp = dg.Experiment(directory, Trivial, durability=durability)
    root = exp.spawn_new_tree(seed=0)
    branches = max(1, int((states - 1) ** 0.5))
    per_branch, extra = divmod(states - 1 - branches, branches)
    for branch in range(branches):
        child = Step(branch)(root)
        for leaf in range(per_branch + (1 if branch < extra else 0)):
            Twist(leaf)(child)
    return exp


def wide(directory, states: int, durability: str = "fast") -> dg.Experiment:
    """root -> ``states - 1`` children (the cold-run benchmark's tree)."""
    exp = dg.Experiment(directory, Trivial, durability=durability)
    root = exp.spawn_new_tree(seed=0)
    for index in range(states - 1):
        Step(index)(root)
    return exp


def trivial(index):
    """The joblib.Memory counterpart of one trivial state: the same work."""
    return index
