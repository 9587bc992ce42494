"""Recipe and Function identity: class, code fingerprint or VERSION, and PROPERTIES."""

from __future__ import annotations

import importlib.util
import logging
import sys
import textwrap
import uuid

import pytest
import torch
from helpers import Add, CounterState

import dagger as dg
from dagger.recipe import child_sha

ROOT = CounterState.root_sha({"start": 0})


def load_module(tmp_path, source):
    """Import ``source`` as a fresh module from a real file (so its source can be read)."""
    name = f"mod_{uuid.uuid4().hex}"
    path = tmp_path / f"{name}.py"
    path.write_text(textwrap.dedent(source))
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


RECIPE = """
import dagger as dg

class Scale(dg.Recipe):
    def __init__(self, factor):
        self.factor = factor

    def run(self, state):
        {body}
        return state
"""


def scale_id(tmp_path, body):
    module = load_module(tmp_path, RECIPE.format(body=body))
    return child_sha(ROOT, module.Scale(2))


def test_comments_docstrings_and_layout_do_not_change_the_id(tmp_path):
    base = scale_id(tmp_path, "state.value = state.value * self.factor")
    assert scale_id(tmp_path, "state.value = state.value * self.factor  # scale it") == base
    assert (
        scale_id(tmp_path, "state.value = (state.value\n                       * self.factor)")
        == base
    )
    assert (
        scale_id(tmp_path, '"""Scale."""\n        state.value = state.value * self.factor') == base
    )


def test_editing_the_logic_changes_the_id(tmp_path):
    base = scale_id(tmp_path, "state.value = state.value * self.factor")
    assert scale_id(tmp_path, "state.value = state.value * self.factor + 1") != base


def test_helper_methods_below_recipe_count_and_version_pins(tmp_path):
    source = """
    import dagger as dg

    class Base(dg.Recipe):
        def helper(self):
            return {value}

    class Child(Base):
        {version}
        def __init__(self):
            self.x = 1

        def run(self, state):
            return state
    """
    one = load_module(tmp_path, source.format(value=1, version=""))
    two = load_module(tmp_path, source.format(value=2, version=""))
    assert child_sha(ROOT, one.Child()) != child_sha(ROOT, two.Child())
    pinned_one = load_module(tmp_path, source.format(value=1, version='VERSION = "3"'))
    pinned_two = load_module(tmp_path, source.format(value=2, version='VERSION = "3"'))
    assert child_sha(ROOT, pinned_one.Child()) == child_sha(ROOT, pinned_two.Child())
    pinned_four = load_module(tmp_path, source.format(value=1, version='VERSION = "4"'))
    assert child_sha(ROOT, pinned_four.Child()) != child_sha(ROOT, pinned_one.Child())


def test_two_recipe_classes_with_equal_properties_differ():
    class Prune(dg.Recipe):
        def __init__(self, amount):
            self.amount = amount

        def run(self, state):
            return state

    class Quantize(dg.Recipe):
        def __init__(self, amount):
            self.amount = amount

        def run(self, state):
            return state

    assert child_sha(ROOT, Prune(0.5)) != child_sha(ROOT, Quantize(0.5))


def test_exact_float_properties_differ():
    assert child_sha(ROOT, Add(1e-9)) != child_sha(ROOT, Add(2e-9))
    assert child_sha(ROOT, Add(1)) != child_sha(ROOT, Add(1.0))
    assert child_sha(ROOT, Add(1)) != child_sha(ROOT, Add(True))


def test_properties_default_to_public_attributes():
    class Train(dg.Recipe):
        def __init__(self, lr, loader=None):
            self.lr = lr
            self._loader = loader  # private: not identity

        def run(self, state):
            return state

    assert Train(0.1).properties() == {"lr": 0.1}
    assert child_sha(ROOT, Train(0.1, loader=object())) == child_sha(ROOT, Train(0.1))
    assert child_sha(ROOT, Train(0.1)) != child_sha(ROOT, Train(0.2))


def test_declared_properties_limit_the_identity():
    class Train(dg.Recipe):
        PROPERTIES = ["lr"]

        def __init__(self, lr, workers):
            self.lr, self.workers = lr, workers

        def run(self, state):
            return state

    assert child_sha(ROOT, Train(0.1, 2)) == child_sha(ROOT, Train(0.1, 8))


def test_parent_is_part_of_the_id():
    other_root = CounterState.root_sha({"start": 1})
    assert child_sha(ROOT, Add(1)) != child_sha(other_root, Add(1))


def test_unhashable_property_is_named_with_the_fix(tmp_path):
    class Train(dg.Recipe):
        def __init__(self, loader):
            self.loader = loader

        def run(self, state):
            return state

    exp = dg.Experiment(tmp_path / "e", CounterState)
    root = exp.spawn_new_tree(start=0)
    loader = torch.utils.data.DataLoader([1, 2, 3])
    with pytest.raises(dg.HashingError) as info:
        Train(loader)(root)
    message = str(info.value)
    assert "Recipe `Train` property `loader`" in message
    assert "torch.utils.data.dataloader.DataLoader" in message
    assert "Declare PROPERTIES without `loader`" in message
    assert not (tmp_path / "e").exists()


def test_missing_declared_property_is_reported_where_the_recipe_is_applied(tmp_path):
    class Train(dg.Recipe):
        PROPERTIES = ["lr", "epochs"]

        def __init__(self, lr):
            self.lr = lr

        def run(self, state):
            return state

    exp = dg.Experiment(tmp_path / "e", CounterState)
    root = exp.spawn_new_tree(start=0)
    with pytest.raises(dg.ExperimentDefinitionError, match="lists `epochs` in PROPERTIES"):
        Train(0.1)(root)


def test_recipe_inside_properties_hashes_by_identity():
    class Repeat(dg.Recipe):
        def __init__(self, inner, times):
            self.inner, self.times = inner, times

        def run(self, state):
            return state

    assert child_sha(ROOT, Repeat(Add(1), 2)) == child_sha(ROOT, Repeat(Add(1), 2))
    assert child_sha(ROOT, Repeat(Add(1), 2)) != child_sha(ROOT, Repeat(Add(2), 2))


def test_source_less_code_falls_back_with_one_warning(caplog):
    namespace: dict = {}
    exec(
        "import dagger as dg\n"
        "class Exec(dg.Recipe):\n"
        "    VERSION = None\n"
        "    def run(self, state):\n"
        "        return state\n",
        namespace,
    )
    from dagger import fingerprint

    fingerprint._warned_no_source = False
    caplog.set_level(logging.WARNING, logger="dagger")
    first = child_sha(ROOT, namespace["Exec"]())
    assert first == child_sha(ROOT, namespace["Exec"]())
    warnings = [r for r in caplog.records if "could not read the source" in r.message]
    assert len(warnings) == 1


def test_function_identity_follows_its_code():
    def accuracy(state):
        return 1

    def accuracy_v2(state):
        return 2

    assert dg.Function(accuracy).name == "accuracy"
    assert dg.Function(accuracy, name="acc").name == "acc"
    assert dg.Function(accuracy).code_identity() == dg.Function(accuracy).code_identity()
    assert dg.Function(accuracy).code_identity() != dg.Function(accuracy_v2).code_identity()
    with pytest.raises(dg.ExperimentDefinitionError, match="needs a callable"):
        dg.Function(3)
