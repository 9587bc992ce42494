"""Applying a recipe: a tree of 100,000 promises applies 100,000 recipes, so applying takes a
short path for plain recipes (issue 15). Whatever path it takes, a promise's id and snapshot
must be exactly what the general path gives (``recipe.snapshot()``, then its ``identity()``),
and must follow every edit of the recipe's class made between two applications.

Each case applies recipes of one class several times first (the short path is taken from the
second application on), then edits, then applies again and compares with the general path.
"""

from __future__ import annotations

import importlib.util
import sys
import textwrap
import uuid

import pytest
from helpers import CounterState

import dagger as dg
from dagger.recipe import child_sha

SOURCE = """
import dagger as dg

OFFSET = 1


def make_shift(amount):
    def shift(self, value):
        return value + amount

    return shift


class Scale(dg.Recipe):
    def __init__(self, factor, label="x"):
        self.factor = factor
        self.label = label

    shift = make_shift(0)

    def scaled(self, value, *, by=1):
        return value * self.factor * by

    def run(self, state):
        state.value = self.shift(self.scaled(state.value)) + OFFSET
        return state
"""


@pytest.fixture
def module(tmp_path):
    """The recipe's module, imported from a real file (its source can be read)."""
    name = f"applying_{uuid.uuid4().hex}"
    path = tmp_path / f"{name}.py"
    path.write_text(textwrap.dedent(SOURCE))
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    loaded = importlib.util.module_from_spec(spec)
    sys.modules[name] = loaded
    spec.loader.exec_module(loaded)
    yield loaded
    sys.modules.pop(name, None)


@pytest.fixture
def root(tmp_path):
    exp = dg.Experiment(tmp_path / "exp", CounterState)
    return exp.spawn_new_tree(start=0)


def apply_many(recipe_class, root, count=5, **kwargs):
    """Apply ``count`` recipes (enough for the short path to be in use); return the last id."""
    promises = [recipe_class(factor, **kwargs)(root) for factor in range(count)]
    for factor, promise in enumerate(promises):
        assert promise.sha() == child_sha(root.sha(), recipe_class(factor, **kwargs))
    return promises[-1].sha()


def general_id(root, recipe):
    """The id the general path gives: the snapshot's identity."""
    return child_sha(root.sha(), recipe.snapshot())


def test_plain_recipes_get_the_general_paths_ids_and_independent_snapshots(module, root):
    apply_many(module.Scale, root)
    recipe = module.Scale(7, label="seven")
    promise = recipe(root)
    assert promise.sha() == general_id(root, recipe)
    assert promise.recipe is not recipe
    assert vars(promise.recipe) == vars(recipe)
    recipe.factor = 8  # changing the applied recipe afterwards changes neither id nor run
    assert promise.recipe.factor == 7
    assert promise.sha() == general_id(root, module.Scale(7, label="seven"))
    assert promise.sha() != general_id(root, recipe)


@pytest.mark.parametrize(
    "edit",
    [
        "method",
        "global",
        "class attribute",
        "default argument",
        "keyword default",
        "closure cell",
        "base class",
    ],
)
def test_an_edit_between_applications_gives_the_new_codes_id(module, root, edit):
    before = apply_many(module.Scale, root)
    if edit == "method":

        def run(self, state):
            state.value = state.value * self.factor - 1
            return state

        module.Scale.run = run
    elif edit == "global":
        module.OFFSET = 2
    elif edit == "class attribute":
        module.Scale.SPEED = "fast"
    elif edit == "default argument":  # read by the code identity, not a property
        module.Scale.__init__.__defaults__ = ("y",)
    elif edit == "keyword default":
        module.Scale.scaled.__kwdefaults__ = {"by": 2}
    elif edit == "closure cell":
        module.Scale.shift.__closure__[0].cell_contents = 5
    else:  # the seed's way: patching dagger's own Recipe class

        def helper(self):
            return "patched"

        dg.Recipe.helper = helper
    try:
        after = module.Scale(4)(root).sha()
        assert after != before
        assert after == general_id(root, module.Scale(4))
    finally:
        if edit == "base class":
            del dg.Recipe.helper


def test_an_override_of_properties_added_later_is_used(module, root):
    apply_many(module.Scale, root)

    def properties(self):
        return {"factor": self.factor}  # the label no longer counts

    module.Scale.properties = properties
    assert module.Scale(3, label="a")(root).sha() == module.Scale(3, label="b")(root).sha()
    assert module.Scale(3, label="a")(root).sha() == general_id(root, module.Scale(3))


def test_declared_properties_follow_the_class_and_may_name_a_property(module, root):
    module.Scale.PROPERTIES = ["factor"]
    apply_many(module.Scale, root)
    assert module.Scale(3, label="a")(root).sha() == module.Scale(3, label="b")(root).sha()
    module.Scale.PROPERTIES.append("label")  # edited in place: the label counts again
    assert module.Scale(3, label="a")(root).sha() != module.Scale(3, label="b")(root).sha()
    assert module.Scale(3, label="a")(root).sha() == general_id(root, module.Scale(3, label="a"))
    module.Scale.double = property(lambda self: self.factor * 2)
    module.Scale.PROPERTIES = ["double"]
    assert module.Scale(3)(root).sha() == general_id(root, module.Scale(3))
    assert module.Scale(3)(root).sha() != module.Scale(4)(root).sha()


def test_a_version_pinned_later_is_used(module, root):
    before = apply_many(module.Scale, root)
    module.Scale.VERSION = "2"
    after = module.Scale(4)(root).sha()
    assert after != before
    assert after == general_id(root, module.Scale(4))


def test_mutable_attributes_and_copy_hooks_take_the_deep_copy(module, root):
    apply_many(module.Scale, root)
    factors = [1, 2]
    recipe = module.Scale(factors)
    promise = recipe(root)
    factors.append(3)  # the applied snapshot holds its own list
    assert promise.recipe.factor == [1, 2]
    assert promise.sha() == general_id(root, module.Scale([1, 2]))
    copies = []

    def deepcopy(self, memo):
        copies.append(self)
        copied = object.__new__(type(self))
        copied.__dict__.update(self.__dict__)
        return copied

    module.Scale.__deepcopy__ = deepcopy
    plain = module.Scale(5)
    promise = plain(root)
    assert copies == [plain]  # the class's own copy hook made the snapshot
    assert promise.sha() == general_id(root, module.Scale(5))
