"""The canonical encoding and the hashes built on it (DESIGN.md section 3)."""

from __future__ import annotations

import enum
import functools
import math
import os
import pathlib
import subprocess
import sys
from collections import namedtuple

import numpy as np
import pytest
import torch
from helpers import Color, Config, relu
from hypothesis import given, settings
from hypothesis import strategies as st

import dagger as dg
from dagger import hashing
from dagger.hashing import digest, encode


class Size(enum.IntEnum):
    SMALL = 1


Point = namedtuple("Point", "x y")


# Golden values: if one of these changes, every stored experiment's ids change with it.
# Change them only together with the store format version.
GOLDEN = {
    "none": (None, "e2ab2b2eaba3063fe2b359af486029b6af8f853b9f7093cae3ab07ccbf468fa5"),
    "int": (1, "cb1e05996d5c99a68cc524571bb32f59706b1ffbb9feb2a96a51ceca0b66d998"),
    "float": (1.0, "6e57bb39c27e642206faf601a18ae5bb148009590a1036730d34dbf2b7c35e2b"),
    "str": ("1", "13ceee0fee178602ebb1e87622b41703a5843dc0791aadc91d7784bea823470a"),
    "true": (True, "866cef431f593a72cab75a6426acd3cbdb55f721066aca2833baec7252d871d2"),
    "tiny": (1e-9, "982cdfc91d9db9762401f0280d02a02719b6b15b15cd39831d5ce7e5fa3ad02c"),
    "nested": (
        {"b": [1, 2.5, "x"], "a": (None, False)},
        "b57405f7f2bc8c58b09bddadbe85790a7b83d6880335bb1b0d16750d2341aa8d",
    ),
    "set": ({3, 1, 2}, "6820e214fc06cf70997fb42d521ae5853ce0a99e3e08197b812263aa8f05f663"),
    "path": (
        pathlib.PurePosixPath("data/train"),
        "a99ef3980f13b6b58b5682f272731d9bf216618498b25ca1d026f45c09b3b5ee",
    ),
    "enum": (Color.RED, "07b4ed1eedbb28d51e78a14cd82620c29cb94c5cdec4afdadea7598df6b82a6e"),
    "dataclass": (
        Config(64, 0.1),
        "59484c77f33a0ff873f08f30b88cdcda73bea9e7227939734ed4e14a1323810e",
    ),
    "array": (
        np.arange(6, dtype=np.float32).reshape(2, 3),
        "571c3b5433da1ec9a73c15285e38bfc21a585b6469e8f0f2aaf3c261481f2d78",
    ),
    "tensor": (
        torch.arange(6, dtype=torch.float32).reshape(2, 3),
        "e3ac88e94c554a00063d8176306b04c5e26a90011e0638297794c70216bc6826",
    ),
    "bf16": (
        torch.ones(3, dtype=torch.bfloat16),
        "279ca831b1197ac7edf1e64a9581c1f0d38c7005fb97a92d9f02ea0f1d660eca",
    ),
    "partial": (
        functools.partial(relu, 3),
        "dc1c7c37a78a343ee766b4ca8a5e874652cfaabc85dfc04c5b71fd83a343e49d",
    ),
    "class": (Config, "732f440c83e26faf7b74b8321c531f3114acb6abedd901f73087422ebc8b4582"),
}


@pytest.mark.parametrize("name", sorted(GOLDEN))
def test_golden_values(name):
    value, expected = GOLDEN[name]
    assert digest(value) == expected


def test_golden_root_and_child_ids():
    from helpers import GoldenAdd, GoldenState

    root = GoldenState.root_sha({"start": 1})
    child = dg.recipe.child_sha(root, GoldenAdd(2))
    assert (root, child) == (
        "ebbd89a71b23be5b5f58aa91cca1da8e6c6293fcd1b4f89d8ed238c10b4d8e80",
        "0da9badfb23892e5201b955e44edd2e7e6d6c48708c9c316aa1f61fe77ac7a0d",
    )


def test_types_are_part_of_the_encoding():
    values = [1, 1.0, "1", True, b"1", [1], (1,), {1}, frozenset({1}), {"1": 1}, np.int64(1)]
    encodings = {encode(v) for v in values}
    assert len(encodings) == len(values)


def test_floats_are_exact():
    assert digest(1e-9) != digest(2e-9)
    assert digest(0.1 + 0.2) != digest(0.3)
    assert digest(-0.0) != digest(0.0)
    assert digest(float("nan")) == digest(float("nan"))
    assert digest(math.inf) != digest(-math.inf)


def test_dict_and_set_order_does_not_matter():
    assert digest({"a": 1, "b": 2}) == digest({"b": 2, "a": 1})
    assert digest({3, 1, 2}) == digest({1, 2, 3})
    assert digest([1, 2]) != digest([2, 1])


def test_arrays_and_tensors_by_dtype_shape_and_bytes():
    a = np.zeros((2, 3), dtype=np.float32)
    assert digest(a) == digest(np.zeros((2, 3), dtype=np.float32))
    assert digest(a) != digest(np.zeros((3, 2), dtype=np.float32))
    assert digest(a) != digest(np.zeros((2, 3), dtype=np.float64))
    assert digest(np.asfortranarray(a)) == digest(a)
    t = torch.zeros(2, 3)
    assert digest(t) == digest(torch.zeros(2, 3, requires_grad=True))
    assert digest(t) != digest(torch.zeros(3, 2))
    assert digest(t) != digest(torch.zeros(2, 3, dtype=torch.float64))
    assert digest(t.t()) == digest(t.t().contiguous())
    for dtype in (torch.bfloat16, torch.bool, torch.int8, torch.complex64, torch.float16):
        x = torch.ones(4, dtype=dtype)
        assert digest(x) == digest(x.clone())
        assert digest(x) != digest(torch.zeros(4, dtype=dtype))
    sparse = torch.eye(3).to_sparse()
    assert digest(sparse) == digest(torch.eye(3).to_sparse())
    assert digest(sparse) != digest(torch.eye(3))
    assert digest(torch.float32) != digest(torch.float64)
    assert digest(torch.device("cpu")) != digest("cpu")


def test_functions_classes_and_partials():
    assert digest(relu) == digest(relu)
    assert digest(functools.partial(relu, 1)) != digest(functools.partial(relu, 2))
    assert digest(Config) != digest(Point)
    assert digest(torch.nn.functional.relu) != digest(torch.nn.functional.gelu)
    # two lambdas of one module share a qualified name; their code tells them apart
    assert digest(lambda x: x + 1) != digest(lambda x: x + 2)


def test_enums_dataclasses_namedtuples():
    assert digest(Color.RED) != digest(Color.BLUE)
    assert digest(Size.SMALL) != digest(1)
    assert digest(Config(1, 0.1)) != digest(Config(1, 0.2))
    assert digest(Point(1, 2)) != digest((1, 2))


def test_unencodable_value_raises_hashing_error_naming_the_place():
    class Opaque:
        pass

    with pytest.raises(dg.HashingError, match=r"holds at `\['k'\]\[1\]` a `.*Opaque`") as info:
        encode({"k": [1, Opaque()]}, what="Recipe `X` property `p`")
    assert isinstance(info.value, TypeError)
    assert "dagger.hashing.register" in str(info.value)


def test_register_extends_the_encoder():
    class Schedule:
        def __init__(self, steps):
            self.steps = steps

    with pytest.raises(dg.HashingError):
        encode(Schedule(3))
    hashing.register(Schedule, lambda s: {"steps": s.steps})
    try:
        assert digest(Schedule(3)) == digest(Schedule(3))
        assert digest(Schedule(3)) != digest(Schedule(4))
        assert digest(Schedule(3)) != digest({"steps": 3})
    finally:
        hashing._REGISTRY.pop(Schedule)


def test_hash_does_not_depend_on_the_process_or_hash_seed():
    code = (
        "import sys; sys.path.insert(0, 'tests');"
        "from dagger.hashing import digest;"
        "print(digest({'a': {1, 2, 'x'}, 'b': frozenset({'p', 'q'}), 'c': 1e-9}))"
    )
    outputs = set()
    for seed in ("0", "1", "12345"):
        env = {**os.environ, "PYTHONHASHSEED": seed}
        result = subprocess.run(
            [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True
        )
        outputs.add(result.stdout.strip())
    assert outputs == {digest({"a": {1, 2, "x"}, "b": frozenset({"p", "q"}), "c": 1e-9})}


# -- hypothesis: equal inputs give equal hashes, distinct inputs distinct ones ------------------

scalars = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False)
    | st.text(max_size=8)
    | st.binary(max_size=8)
)
values = st.recursive(
    scalars,
    lambda inner: (
        st.lists(inner, max_size=4)
        | st.tuples(inner, inner)
        | st.dictionaries(st.text(max_size=4), inner, max_size=4)
        | st.frozensets(st.integers() | st.text(max_size=4), max_size=4)
    ),
    max_leaves=12,
)


def _typed(value):
    """A structural key that is equal exactly when two values should hash equal."""
    if isinstance(value, float):
        return ("float", value.hex())
    if isinstance(value, list | tuple):
        return (type(value).__name__, tuple(_typed(v) for v in value))
    if isinstance(value, dict):
        return ("dict", frozenset((_typed(k), _typed(v)) for k, v in value.items()))
    if isinstance(value, frozenset):
        return ("frozenset", frozenset(_typed(v) for v in value))
    return (type(value).__name__, value)


@given(values)
def test_equal_values_hash_equal(value):
    import copy

    assert digest(value) == digest(copy.deepcopy(value))


@given(values, values)
def test_distinct_typed_values_hash_distinct(a, b):
    if _typed(a) == _typed(b):
        assert digest(a) == digest(b)
    else:
        assert digest(a) != digest(b)


@given(st.dictionaries(st.text(max_size=5), st.integers(), min_size=2, max_size=6), st.randoms())
def test_dict_insertion_order_never_matters(mapping, rng):
    items = list(mapping.items())
    rng.shuffle(items)
    assert digest(dict(items)) == digest(mapping)


# The fast path for plain values (hashing._plain) writes exactly what the general encoder does.
_plain_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text()
    | st.binary(max_size=16),
    lambda children: (
        st.lists(children, max_size=4)
        | st.lists(children, max_size=4).map(tuple)
        | st.dictionaries(st.text(max_size=4) | st.integers(), children, max_size=4)
    ),
    max_leaves=20,
)


@settings(max_examples=300, deadline=None)
@given(_plain_values)
def test_the_fast_path_for_plain_values_writes_the_same_bytes(value):
    from dagger import hashing

    general = bytearray()
    hashing._encode(value, general)
    assert hashing.encode(value) == bytes(general)
