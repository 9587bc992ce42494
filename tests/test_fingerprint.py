"""Code identity (issue 10): everything a recipe's code reads, found before it runs, explained.

The edit cases run as a user meets them: a script run, edited, and run again in a fresh
process, which must recompute and return the new value. The rest drive the engine in-process
with modules imported from real files (so that their source can be read).
"""

from __future__ import annotations

import gc
import importlib.metadata
import importlib.util
import json
import logging
import subprocess
import sys
import textwrap
import uuid
import weakref

import pytest
from helpers import CounterState

import dagger as dg
from dagger.fingerprint import (
    CodeIdentity,
    ManifestEntry,
    code_digest,
    code_identity,
    manifest_changes,
)
from dagger.recipe import child_sha

ROOT = CounterState.root_sha({"start": 1})


def load_module(tmp_path, source, name=None):
    """Import ``source`` as a fresh module from a real file (so its source can be read)."""
    name = name or f"mod_{uuid.uuid4().hex}"
    path = tmp_path / f"{name}.py"
    path.write_text(textwrap.dedent(source))
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def entries(identity: CodeIdentity) -> dict[tuple[str, str], ManifestEntry]:
    return {(entry.kind, entry.name): entry for entry in identity.manifest}


def recipe_identity(cls):
    return code_identity(cls, dg.Recipe)


# -- the edit cases, as a user meets them: edit the script, run it again ------------------

SCRIPT = """
import sys
import dagger as dg

{constants}


class Start(dg.ExperimentState):
    PROPERTIES = ["start"]

    def initialize_state(self, **arguments):
        self.value = self.start


class Smooth(dg.Recipe):
    {class_body}

    def __init__(self, amount):
        self.amount = amount

    def run(self, state):
        state.value = {expression}
        return state


exp = dg.Experiment(sys.argv[1], Start)
root = exp.spawn_new_tree(start=1.0)
leaf = Smooth(1.0)(root)
report = exp.run(progress=False)
print(report.computed, report.cached, leaf.get().value)
"""


def run_script(tmp_path, env, store, **parts):
    script = tmp_path / "study.py"
    fields = {"constants": "", "class_body": "", "expression": "state.value"} | parts
    script.write_text(SCRIPT.format(**fields))
    result = subprocess.run(
        [sys.executable, str(script), str(store)],
        env=env,
        capture_output=True,
        text=True,
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr
    computed, cached, value = result.stdout.split()
    return int(computed), int(cached), float(value)


def test_editing_a_class_attribute_the_recipe_reads_recomputes(tmp_path, subprocess_env):
    """Issue 10, case 2: FACTOR = 2.0 on the class, edited to 5.0 between two runs."""
    store = tmp_path / "exp"
    expression = "state.value * self.FACTOR + self.amount"
    first = run_script(
        tmp_path, subprocess_env, store, class_body="FACTOR = 2.0", expression=expression
    )
    assert first == (2, 0, 3.0)
    again = run_script(
        tmp_path, subprocess_env, store, class_body="FACTOR = 2.0", expression=expression
    )
    assert again == (0, 2, 3.0)
    edited = run_script(
        tmp_path, subprocess_env, store, class_body="FACTOR = 5.0", expression=expression
    )
    assert edited == (1, 1, 6.0)


def test_editing_a_module_constant_the_recipe_reads_recomputes(tmp_path, subprocess_env):
    """Issue 10, case 3: LABEL_SMOOTHING = 0.1 at module level, edited to 0.3."""
    store = tmp_path / "exp"
    expression = "state.value * (1 - LABEL_SMOOTHING)"
    first = run_script(
        tmp_path,
        subprocess_env,
        store,
        constants="LABEL_SMOOTHING = 0.5",
        expression=expression,
    )
    assert first == (2, 0, 0.5)
    edited = run_script(
        tmp_path,
        subprocess_env,
        store,
        constants="LABEL_SMOOTHING = 0.75",
        expression=expression,
    )
    assert edited == (1, 1, 0.25)


def test_editing_a_constant_two_calls_deep_in_another_module_recomputes(tmp_path, subprocess_env):
    """Same kind: the recipe calls scale() in the user's module, which calls deep(), which
    reads a constant; only that constant is edited."""
    store = tmp_path / "exp"
    library = tmp_path / "mylib.py"
    source = textwrap.dedent(
        """
        OFFSET = {offset}

        def deep(x):
            return x + OFFSET

        def scale(x):
            return deep(x) * 2
        """
    )
    parts = {"constants": "import mylib", "expression": "mylib.scale(state.value)"}
    library.write_text(source.format(offset=1.0))
    assert run_script(tmp_path, subprocess_env, store, **parts) == (2, 0, 4.0)
    library.write_text(source.format(offset=2.0))
    assert run_script(tmp_path, subprocess_env, store, **parts) == (1, 1, 6.0)


def test_comments_and_docstrings_in_a_helper_do_not_recompute(tmp_path, subprocess_env):
    store = tmp_path / "exp"
    library = tmp_path / "mylib.py"
    parts = {"constants": "from mylib import scale", "expression": "scale(state.value)"}
    library.write_text("def scale(x):\n    return x * 3\n")
    assert run_script(tmp_path, subprocess_env, store, **parts) == (2, 0, 3.0)
    library.write_text(
        'def scale(x):\n    """Triple."""\n    return (x *\n            3)  # triple\n'
    )
    assert run_script(tmp_path, subprocess_env, store, **parts) == (0, 2, 3.0)
    library.write_text("def scale(x):\n    return x * 4\n")
    assert run_script(tmp_path, subprocess_env, store, **parts) == (1, 1, 4.0)


# -- issue case 1: a closure as a recipe property -------------------------------------------------


class Apply(dg.Recipe):
    def __init__(self, op):
        self.op = op

    def run(self, state):
        state.value = self.op(state.value)
        return state


def make_scale(k):
    return lambda x: x * k


def test_closures_as_properties_are_told_apart_by_their_cells(tmp_path):
    """Issue 10, case 1: Apply(make_scale(2)) and Apply(make_scale(3)) are two states."""
    assert child_sha(ROOT, Apply(make_scale(2))) != child_sha(ROOT, Apply(make_scale(3)))
    assert child_sha(ROOT, Apply(make_scale(2))) == child_sha(ROOT, Apply(make_scale(2)))
    exp = dg.Experiment(tmp_path / "exp", CounterState)
    root = exp.spawn_new_tree(start=1)
    double, triple = Apply(make_scale(2))(root), Apply(make_scale(3))(root)
    report = exp.run(progress=False)
    assert report.computed == 3
    assert (double.get().value, triple.get().value) == (2, 3)


def test_functions_as_values_follow_their_code_and_globals(tmp_path):
    source = """
    RATE = {rate}

    def relu(x):
        return max(x, 0) * RATE
    """
    one = load_module(tmp_path, source.format(rate=1))
    two = load_module(tmp_path, source.format(rate=2))
    assert child_sha(ROOT, Apply(one.relu)) != child_sha(ROOT, Apply(two.relu))
    # a partial of a closure: the cells and the bound arguments count
    import functools

    assert child_sha(ROOT, Apply(functools.partial(make_scale(2)))) != child_sha(
        ROOT, Apply(functools.partial(make_scale(3)))
    )


# -- what a class's code identity covers ----------------------------------------------------------

RECIPE = """
import functools
import logging
import math

import numpy as np
import torch

import dagger as dg

LABEL_SMOOTHING = 0.1
logger = logging.getLogger("study")
CALLS = 0


def timed(fn):
    def wrapper(*args, **kwargs):
        return fn(*args, **kwargs)
    return wrapper


TIMES = 2


def repeat(times):
    def decorate(fn):
        @functools.wraps(fn)
        def wrapper(*args, **kwargs):
            for _ in range(times - 1):
                fn(*args, **kwargs)
            return fn(*args, **kwargs)
        return wrapper
    return decorate


EPS = 1e-8


def smooth(x, eps=EPS):
    return x * (1 - LABEL_SMOOTHING) + eps


class Smooth(dg.Recipe):
    FACTOR = 2.0

    def __init__(self, amount):
        self.amount = amount

    @timed
    def run(self, state):
        global CALLS
        CALLS += 1
        logger.info("smoothing")
        state.value = smooth(state.value) * self.FACTOR + math.pi + np.pi
        return state

    @repeat(times=TIMES)
    def never_called(self):
        return torch.zeros(1)

    @property
    def size(self):
        return 3
"""


def test_manifest_lists_every_kind_of_ingredient(tmp_path):
    module = load_module(tmp_path, RECIPE)
    found = entries(recipe_identity(module.Smooth))
    assert found[("class", "Smooth")].value == "Smooth(dagger.Recipe)"
    assert found[("class attribute", "Smooth.FACTOR")].value == "2.0"
    for method in ("Smooth.__init__", "Smooth.run", "Smooth.never_called"):
        assert ("method", method) in found
    assert ("property", "Smooth.size") in found
    # the decorated run without functools.wraps: the wrapper, and the function in its cell
    assert ("function", "Smooth.run.fn") in found
    # with functools.wraps: the wrapped function, its wrapper's closure
    assert ("function", "Smooth.never_called.__wrapped__") in found
    assert found[("global", "LABEL_SMOOTHING")].value == "0.1"
    assert ("function", "smooth") in found
    assert found[("default", "smooth.eps")].value == "1e-08"
    assert found[("module", "math")].value == f"python {sys.version_info[0]}.{sys.version_info[1]}"
    assert found[("module", "numpy")].value == f"numpy {importlib.metadata.version('numpy')}"
    assert found[("module", "torch")].value == f"torch {importlib.metadata.version('torch')}"
    assert found[("global", "np")].value == "= numpy"
    assert found[("untracked", "logger")].value == "logging.Logger"
    assert found[("untracked", "CALLS")].value == "global the code changes"
    # dagger's own code counts by nothing version-dependent
    assert not any(entry.name.startswith("dagger") for entry in found.values())
    assert not any("dagger.recipe" in entry.value for entry in found.values())


def test_each_ingredient_changes_the_fingerprint(tmp_path):
    base = recipe_identity(load_module(tmp_path, RECIPE).Smooth)
    edits = {
        "global": ("LABEL_SMOOTHING = 0.1", "LABEL_SMOOTHING = 0.3"),
        "class attribute": ("FACTOR = 2.0", "FACTOR = 5.0"),
        "default": ("EPS = 1e-8", "EPS = 1e-6"),
        "decorator argument": ("TIMES = 2", "TIMES = 3"),
        "uncalled method": ("torch.zeros(1)", "torch.ones(1)"),
        "property": ("return 3", "return 4"),
        "wrapper without wraps": (
            "def wrapper(*args, **kwargs):\n        return fn(",
            "def wrapper(*args, **kwargs):\n        return 2 * fn(",
        ),
        "helper": ("+ eps", "- eps"),
    }
    expected = {
        "global": ["global LABEL_SMOOTHING 0.1 -> 0.3"],
        "class attribute": ["class attribute Smooth.FACTOR 2.0 -> 5.0"],
        "default": ["default smooth.eps 1e-08 -> 1e-06"],
        "decorator argument": ["closure Smooth.never_called.times 2 -> 3"],
        "uncalled method": ["code of Smooth.never_called.__wrapped__ changed"],
        "property": ["code of Smooth.size changed"],
        "wrapper without wraps": ["code of Smooth.run changed"],
        "helper": ["code of smooth changed"],
    }
    for name, (old, new) in edits.items():
        assert RECIPE.count(old) == 1, name
        edited = recipe_identity(load_module(tmp_path, RECIPE.replace(old, new)).Smooth)
        assert edited.fingerprint != base.fingerprint, name
        assert manifest_changes(base.manifest, edited.manifest) == expected[name], name


def test_layout_comments_and_docstrings_do_not_count(tmp_path):
    base = recipe_identity(load_module(tmp_path, RECIPE).Smooth)
    reformatted = RECIPE.replace(
        "def smooth(x, eps=EPS):\n    return x * (1 - LABEL_SMOOTHING) + eps",
        'def smooth(x, eps=EPS):\n    """Smooth."""\n    # the label smoothing\n'
        "    return (x * (1 - LABEL_SMOOTHING)\n            + eps)",
    )
    assert reformatted != RECIPE
    assert recipe_identity(load_module(tmp_path, reformatted).Smooth).fingerprint == (
        base.fingerprint
    )


def test_untracked_names_never_raise_and_do_not_change_the_id(tmp_path):
    module = load_module(tmp_path, RECIPE)
    before = recipe_identity(module.Smooth)
    module.logger = logging.getLogger("another")
    after = recipe_identity(module.Smooth)
    assert sorted(entry.name for entry in after.untracked) == ["CALLS", "logger"]
    assert after.fingerprint == before.fingerprint
    # a name that becomes encodable is tracked from then on
    module.logger = 0.5
    assert recipe_identity(module.Smooth).fingerprint != before.fingerprint
    # a container is untracked for what it holds, which may change in place
    module.logger = [logging.getLogger("held")]
    held = recipe_identity(module.Smooth)
    assert ("untracked", "logger") in entries(held)
    module.logger[0] = 0.25
    assert entries(recipe_identity(module.Smooth))[("global", "logger")].value == "[0.25]"


def test_values_are_read_again_on_every_call(tmp_path):
    """A notebook re-runs a cell; a process edits Train.FACTOR: both are seen at once."""
    module = load_module(
        tmp_path,
        """
        import dagger as dg

        SIZES = [1, 2]
        SCALE = 1.0

        class Train(dg.Recipe):
            FACTOR = 2.0

            def run(self, state):
                state.value = state.value * self.FACTOR * SCALE * len(SIZES)
                return state
        """,
    )
    first = recipe_identity(module.Train)
    assert recipe_identity(module.Train) is first  # nothing changed: the cached identity
    module.Train.FACTOR = 5.0
    factor = recipe_identity(module.Train)
    assert manifest_changes(first.manifest, factor.manifest) == [
        "class attribute Train.FACTOR 2.0 -> 5.0"
    ]
    module.SCALE = 3.0
    scale = recipe_identity(module.Train)
    assert manifest_changes(factor.manifest, scale.manifest) == ["global SCALE 1.0 -> 3.0"]
    module.SIZES.append(3)  # mutated in place: same object, new value
    sizes = recipe_identity(module.Train)
    assert manifest_changes(scale.manifest, sizes.manifest) == ["global SIZES [1, 2] -> [1, 2, 3]"]

    def run(self, state):
        return state

    module.Train.extra = run  # a method added later
    assert ("method", "Train.extra") in entries(recipe_identity(module.Train))


def test_functions_read_through_modules_imports_and_aliases(tmp_path):
    helper_name = f"helper_{uuid.uuid4().hex}"
    helper = load_module(
        tmp_path,
        """
        EPS = 0.5

        def shift(x):
            return x + EPS
        """,
        name=helper_name,
    )
    module = load_module(
        tmp_path,
        f"""
        import {helper_name} as helper
        import dagger as dg

        def inner_import(x):
            from {helper_name} import EPS
            return x * EPS

        class Train(dg.Recipe):
            def run(self, state):
                state.value = helper.shift(inner_import(state.value))
                return state
        """,
    )
    found = entries(recipe_identity(module.Train))
    assert found[("function", f"{helper_name}.shift")].value.endswith(".py:4")
    assert found[("global", f"{helper_name}.EPS")].value == "0.5"
    before = recipe_identity(module.Train)
    helper.EPS = 0.25
    assert manifest_changes(before.manifest, recipe_identity(module.Train).manifest) == [
        f"global {helper_name}.EPS 0.5 -> 0.25"
    ]


def test_recursion_terminates(tmp_path):
    module = load_module(
        tmp_path,
        """
        import dagger as dg

        def even(n):
            return n == 0 or odd(n - 1)

        def odd(n):
            return n != 0 and even(n - 1)

        class Node:
            def children(self):
                return [Node()]

        REGISTRY = {}

        def registered(x):
            return REGISTRY[x]

        REGISTRY["self"] = registered

        class Walk(dg.Recipe):
            def run(self, state):
                state.value = even(4) and Node().children() and registered("self")
                return state
        """,
    )
    identity = recipe_identity(module.Walk)
    found = entries(identity)
    assert {("function", "even"), ("function", "odd"), ("class", "Node")} <= set(found)
    assert ("method", "Node.children") in found
    assert code_digest(module.registered) == code_digest(module.registered)


def test_a_recipe_reading_an_instance_of_itself_terminates(tmp_path):
    """The global's encoding asks for the recipe's identity while it is being computed."""
    source = """
    import dagger as dg

    class Train(dg.Recipe):
        def __init__(self, lr):
            self.lr = lr

        def run(self, state):
            state.value = DEFAULT.lr * {factor}
            return state

    DEFAULT = Train(0.1)
    """
    one = load_module(tmp_path, source.format(factor=1))
    two = load_module(tmp_path, source.format(factor=2))
    assert recipe_identity(one.Train).fingerprint == recipe_identity(one.Train).fingerprint
    assert child_sha(ROOT, one.Train(0.5)) != child_sha(ROOT, two.Train(0.5))


def test_version_pins_the_code_identity(tmp_path):
    source = """
    import dagger as dg

    CONSTANT = {constant}

    class Pinned(dg.Recipe):
        VERSION = "{version}"

        def run(self, state):
            state.value = CONSTANT
            return state
    """
    one = recipe_identity(load_module(tmp_path, source.format(constant=1, version="1")).Pinned)
    two = recipe_identity(load_module(tmp_path, source.format(constant=2, version="1")).Pinned)
    bumped = recipe_identity(load_module(tmp_path, source.format(constant=2, version="2")).Pinned)
    assert one.fingerprint == two.fingerprint
    assert [(e.kind, e.name, e.value) for e in one.manifest] == [("version", "Pinned", "1")]
    assert manifest_changes(two.manifest, bumped.manifest) == ["VERSION of Pinned 1 -> 2"]


def test_callable_object_counts_its_class_code_and_instance_attributes(tmp_path):
    module = load_module(
        tmp_path,
        """
        class Threshold:
            def __init__(self, cutoff):
                self.cutoff = cutoff

            def __call__(self, state):
                return state.value > self.cutoff
        """,
    )
    low, high = module.Threshold(1), module.Threshold(2)
    assert code_identity(low).fingerprint != code_identity(high).fingerprint
    assert entries(code_identity(low))[("instance attribute", "Threshold().cutoff")].value == "1"
    assert dg.Function(low).code_identity() != dg.Function(high).code_identity()


def test_state_class_code_counts_for_the_root(tmp_path):
    source = """
    import dagger as dg

    START = {start}

    class Root(dg.ExperimentState):
        def initialize_state(self, **arguments):
            self.value = START
    """
    one = load_module(tmp_path, source.format(start=1)).Root
    two = load_module(tmp_path, source.format(start=2)).Root
    assert one.root_sha({}) != two.root_sha({})


def test_state_class_code_counts_what_initialize_state_calls_on_self(tmp_path):
    """initialize_state calls a method of its own class, which reads a constant: reached
    through the class, not through initialize_state's bytecode (self.build is an attribute)."""
    source = """
    import dagger as dg

    WIDTH = {width}

    class Root(dg.ExperimentState):
        def initialize_state(self, **arguments):
            self.model = self.build()

        def build(self):
            return [0.0] * WIDTH
    """
    one = load_module(tmp_path, source.format(width=1)).Root
    two = load_module(tmp_path, source.format(width=2)).Root
    assert one.root_sha({}) != two.root_sha({})


def test_seed_style_patches_on_dagger_classes_count(tmp_path):
    """The seed README patches Recipe.run with MethodType: that function is the recipe's code."""
    module = load_module(
        tmp_path,
        """
        def run(recipe, state):
            state.value = 1
            return state
        """,
    )
    from types import MethodType

    original = vars(dg.Recipe)["run"]
    try:
        dg.Recipe.run = MethodType(module.run, dg.Recipe)
        found = entries(recipe_identity(dg.Recipe))
        assert ("method", "dagger.Recipe.run") in found
    finally:
        dg.Recipe.run = original


def test_a_sibling_defined_after_an_in_process_edit_gets_a_new_id(tmp_path):
    """Defining a tree checks the cached code identity once per promise and shares the hash
    of (parent, recipe, code) between siblings (issue 15): neither may give a promise defined
    after an edit the id of one defined before it, and undoing the edit gives the old id."""
    module = load_module(
        tmp_path,
        """
        import dagger as dg

        SCALE = 1.0

        class Twist(dg.Recipe):
            FACTOR = 2.0

            def __init__(self, angle):
                self.angle = angle

            def run(self, state):
                state.value = state.value * self.FACTOR * SCALE + self.angle
                return state
        """,
    )
    exp = dg.Experiment(tmp_path / "exp", CounterState)
    root = exp.spawn_new_tree(start=1)
    before = [module.Twist(angle)(root).sha() for angle in range(3)]
    assert len(set(before)) == 3

    def sibling() -> str:
        return module.Twist(0)(root).sha()

    assert sibling() == before[0]
    module.Twist.FACTOR = 5.0
    factor = sibling()
    module.SCALE = 3.0
    scale = sibling()
    original_run = module.Twist.run

    def run(self, state):
        return state

    module.Twist.run = run
    method = sibling()
    assert len({before[0], factor, scale, method}) == 4
    module.Twist.run = original_run
    module.SCALE = 1.0
    module.Twist.FACTOR = 2.0
    assert sibling() == before[0]


def test_the_cached_check_sees_every_kind_of_in_process_edit(tmp_path):
    """The check of a cached code identity is generated code for plain classes (issue 15);
    each slot it reads must still catch an edit: a method's code, defaults and closure, a
    base class, a global the code reads (changed or deleted), and a patch of dagger's Recipe."""
    module = load_module(
        tmp_path,
        """
        import dagger as dg

        SCALE = 1

        class Base(dg.Recipe):
            pass

        class Other(dg.Recipe):
            pass

        class Twist(Base):
            def __init__(self, angle):
                self.angle = angle

            def run(self, state):
                state.value = state.value * SCALE + self.angle
                return state

        def other_run(self, state, extra=1):
            return state
        """,
    )
    twist = module.Twist
    seen = {code_identity(twist, dg.Recipe).fingerprint}

    def changed() -> bool:
        fingerprint = code_identity(twist, dg.Recipe).fingerprint
        new = fingerprint not in seen
        seen.add(fingerprint)
        return new

    assert not changed()  # the cached check holds when nothing changed
    module.SCALE = 2
    assert changed()
    del module.SCALE
    assert changed()
    twist.__bases__ = (module.Other,)
    assert changed()
    run = twist.run
    run.__code__ = module.other_run.__code__
    assert changed()
    run.__defaults__ = (2,)
    assert changed()
    original = dg.Recipe.run
    try:
        dg.Recipe.extra = staticmethod(lambda: 1)  # a patch of dagger's own class
        assert changed()
    finally:
        del dg.Recipe.extra
        dg.Recipe.run = original
    assert not changed()


def test_caches_keep_nothing_alive(tmp_path):
    module = load_module(
        tmp_path,
        """
        import dagger as dg

        def make():
            class Local(dg.Recipe):
                SIZES = [1, 2, 3]

                def run(self, state):
                    return state

            class Plain(dg.Recipe):
                def __init__(self, factor=1):
                    self.factor = factor

                def run(self, state):
                    return state

            return Local, Plain, lambda x: x
        """,
    )
    local, plain, function = module.make()
    code_identity(local, dg.Recipe)
    code_identity(function)
    child_sha(ROOT, Apply(function))
    exp = dg.Experiment(tmp_path / "exp", CounterState)
    root = exp.spawn_new_tree(start=0)
    local()(root)
    plain()(root)  # applying it: the short path's cache learns the class
    assert id(plain) in dg.recipe._SHORT_PATH
    key = id(plain)
    refs = [weakref.ref(local), weakref.ref(plain), weakref.ref(function)]
    del local, plain, function, exp, root
    gc.collect()
    assert [ref() for ref in refs] == [None, None, None]
    assert key not in dg.recipe._SHORT_PATH  # and its entry went with it


def test_manifest_is_json_and_round_trips(tmp_path):
    identity = recipe_identity(load_module(tmp_path, RECIPE).Smooth)
    text = json.dumps(identity.to_json())
    again = CodeIdentity.from_json(json.loads(text))
    assert again == identity
    assert manifest_changes(json.loads(text)["manifest"], identity.manifest) == []


def test_manifest_changes_reads_like_an_explanation():
    old = [
        ManifestEntry("method", "Smooth.run", "a", "study.py:3"),
        ManifestEntry("global", "LABEL_SMOOTHING", "b", "0.1"),
        ManifestEntry("module", "torch", "c", "torch 2.14.1"),
        ManifestEntry("global", "GONE", "d", "1"),
        ManifestEntry("untracked", "logger", "", "logging.Logger"),
    ]
    new = [
        ManifestEntry("method", "Smooth.run", "a2", "study.py:3"),
        ManifestEntry("global", "LABEL_SMOOTHING", "b2", "0.3"),
        ManifestEntry("module", "torch", "c2", "torch 2.15.0"),
        ManifestEntry("global", "NEW", "e", "2"),
    ]
    assert manifest_changes(old, new) == [
        "code of Smooth.run changed",
        "global LABEL_SMOOTHING 0.1 -> 0.3",
        "module torch: torch 2.14.1 -> torch 2.15.0",
        "global NEW added (2)",
        "global GONE removed (1)",
    ]


def test_values_named_like_secrets_are_not_written_out(tmp_path):
    module = load_module(
        tmp_path,
        """
        API_KEY = "sk-live-0123456789"

        def fetch(url):
            return url + API_KEY
        """,
    )
    before = code_identity(module.fetch)
    assert entries(before)[("global", "API_KEY")].value == "<hidden>"
    assert "sk-live" not in json.dumps(before.to_json())
    module.API_KEY = "sk-live-9876543210"
    assert code_identity(module.fetch).fingerprint != before.fingerprint


def test_a_torch_reference_records_its_installed_version(tmp_path):
    module = load_module(
        tmp_path,
        """
        from torch.nn.functional import relu

        def activate(x):
            return relu(x)
        """,
    )
    found = entries(code_identity(module.activate))
    version = importlib.metadata.version("torch")
    assert found[("module", "torch")].value == f"torch {version}"
    assert found[("global", "relu")].value == "= torch.nn.functional.relu"


def test_source_less_functions_fall_back_to_their_code(caplog):
    namespace: dict = {"__name__": "__main__"}
    exec("def f(x):\n    return x + 1\n\ndef g(x):\n    return x + 2\n", namespace)
    from dagger import fingerprint

    fingerprint._warned_no_source = False
    caplog.set_level(logging.WARNING, logger="dagger")
    assert code_digest(namespace["f"]) != code_digest(namespace["g"])
    warnings = [r for r in caplog.records if "could not read the source" in r.message]
    assert len(warnings) == 1


@pytest.mark.parametrize(
    "line",
    [
        "pair = (lambda x: x + 1, lambda x: x + 2)",
        "pair = [lambda x: x + 1,\n        lambda x: x + 2]",
    ],
)
def test_lambdas_sharing_a_line_are_told_apart_by_source(tmp_path, line, caplog):
    caplog.set_level(logging.WARNING, logger="dagger")
    module = load_module(tmp_path, line + "\n")
    first, second = module.pair
    assert code_digest(first) != code_digest(second)
    assert not [r for r in caplog.records if "could not read the source" in r.message]


def test_what_python_caches_on_a_class_later_does_not_count(tmp_path):
    """Pickling a recipe makes copyreg cache ``__slotnames__`` on its class: not code."""
    import pickle

    module = load_module(
        tmp_path,
        """
        import dagger as dg

        class Train(dg.Recipe):
            def __init__(self, lr):
                self.lr = lr

            def run(self, state):
                return state
        """,
    )
    before = recipe_identity(module.Train)
    pickle.dumps(module.Train(0.1))
    assert "__slotnames__" in vars(module.Train)
    assert recipe_identity(module.Train).fingerprint == before.fingerprint


def test_state_the_code_keeps_is_untracked_not_configuration(tmp_path):
    """A closure appending to a list, a global cache filled in place, a global counter: what
    the code changes is state it keeps, so filling it never changes the id."""
    module = load_module(
        tmp_path,
        """
        CACHE = {}
        SEEN = []

        def make_collector():
            calls = []

            def collect(state):
                calls.append(state)
                return len(calls)

            return collect

        def cached(key):
            CACHE[key] = key * 2
            SEEN.append(key)
            return CACHE[key]
        """,
    )
    collect = module.make_collector()
    before = code_identity(collect)
    assert entries(before)[("untracked", "make_collector.<locals>.collect.calls")].value == (
        "closure variable the code changes"
    )
    collect(1)
    assert code_identity(collect).fingerprint == before.fingerprint
    cached_before = code_identity(module.cached)
    assert {entry.name for entry in cached_before.untracked} == {"CACHE", "SEEN"}
    module.cached(3)
    assert code_identity(module.cached).fingerprint == cached_before.fingerprint


def test_every_slot_the_cached_identity_depends_on_is_read_again(tmp_path):
    """The cached identity is reused only while every slot its walk read holds the same
    thing: defaults, keyword defaults, closure cells, code, globals, and names not yet
    defined."""
    module = load_module(
        tmp_path,
        """
        def make(step):
            def advance(x, by=1, *, scale=2):
                return (x + by) * scale * step * LATER
            def set_step(value):
                nonlocal step
                step = value
            return advance, set_step

        def make_other(step):
            def other(x, by=1, *, scale=2):
                return x - step
            return other
        """,
    )
    advance, set_step = module.make(3)
    seen = [code_identity(advance)]

    def changed() -> list[str]:
        seen.append(code_identity(advance))
        return manifest_changes(seen[-2].manifest, seen[-1].manifest)

    assert entries(seen[0])[("global", "LATER")].value == "undefined"
    module.LATER = 1.5
    assert changed() == ["global LATER undefined -> 1.5"]
    advance.__defaults__ = (5,)
    assert changed() == ["default make.<locals>.advance.by 1 -> 5"]
    advance.__kwdefaults__ = {"scale": 4}
    assert changed() == ["default make.<locals>.advance.scale 2 -> 4"]
    set_step(7)
    assert changed() == ["closure make.<locals>.advance.step 3 -> 7"]
    advance.__code__ = module.make_other(1).__code__
    assert "code of make.<locals>.advance changed" in changed()
    assert code_identity(advance) is seen[-1]  # nothing changed since: the cached identity


LIBRARY_DECORATORS = """
import functools

import torch
from torch import nn

import dagger as dg


@functools.lru_cache(maxsize=8)
def square(x):
    return x * {square}


class Net(nn.Module):
    def forward(self, x):
        return x


MODEL = Net()


class Evaluate(dg.Recipe):
    helper = staticmethod(square)

    @torch.no_grad()
    def run(self, state):
        state.value = square(MODEL(state.value))
        return state

    @torch.no_grad()
    def score(self, state):
        return state.value * {score}
"""


def test_library_decorators_and_wrappers_lead_to_the_users_code(tmp_path):
    """torch.no_grad() and functools.lru_cache wrap the user's functions in library code
    (a wrapper function copying the names; a C object): what they wrap is followed, each
    under its own name, and a model held in a global is untracked, not walked."""
    base = recipe_identity(
        load_module(tmp_path, LIBRARY_DECORATORS.format(square="x", score=1)).Evaluate
    )
    found = entries(base)
    assert found[("method", "Evaluate.run")].value.startswith("torch.")
    assert ("function", "Evaluate.run.__wrapped__") in found
    assert ("function", "Evaluate.score.__wrapped__") in found
    assert found[("untracked", "MODEL")].value.endswith("Net")
    edited_square = recipe_identity(
        load_module(tmp_path, LIBRARY_DECORATORS.format(square="2", score=1)).Evaluate
    )
    assert manifest_changes(base.manifest, edited_square.manifest) == [
        "code of Evaluate.helper changed"
    ]
    edited_score = recipe_identity(
        load_module(tmp_path, LIBRARY_DECORATORS.format(square="x", score=2)).Evaluate
    )
    assert manifest_changes(base.manifest, edited_score.manifest) == [
        "code of Evaluate.score.__wrapped__ changed"
    ]


def test_a_file_edited_after_import_never_lends_its_text_to_the_running_code(tmp_path, caplog):
    """A notebook imported a module; the module is edited on disk but not reloaded: the old
    code runs, so its states must not take the id of the edited text."""
    import linecache

    caplog.set_level(logging.WARNING, logger="dagger")
    name = f"stale_{uuid.uuid4().hex}"
    running = load_module(tmp_path, "def scale(x):\n    return x * 2\n", name=name)
    path = tmp_path / f"{name}.py"
    path.write_text("def scale(x):\n    return x * 3\n")
    linecache.checkcache(str(path))
    edited = load_module(tmp_path, "def scale(x):\n    return x * 3\n")
    assert code_digest(running.scale) != code_digest(edited.scale)
    stale = [r.message for r in caplog.records if "changed after it was imported" in r.message]
    assert len(stale) == 1 and name in stale[0]
    assert not [r for r in caplog.records if "could not read the source" in r.message]
