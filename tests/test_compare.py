"""Comparing two loaded states: what reproduces, what differs, and by how much."""

from __future__ import annotations

import dataclasses
import threading
import tracemalloc
import warnings

import numpy as np
import pytest
import torch
from torch import nn

import dagger as dg
from dagger.compare import StateComparison, compare_states
from dagger.errors import InvalidArgumentError


class ModelState(dg.ExperimentState):
    PROPERTIES = ["width"]

    def initialize_state(self, **arguments):
        torch.manual_seed(0)
        self.model = nn.Sequential(nn.Linear(8, self.width), nn.ReLU(), nn.Linear(self.width, 3))
        self.optimizer = torch.optim.SGD(self.model.parameters(), lr=0.1, momentum=0.9)
        self.losses = []


def train(state, generator):
    """A few SGD steps on data drawn from ``generator``: reproducible iff it is seeded."""
    inputs = torch.randn(64, 8, generator=generator)
    targets = torch.randint(0, 3, (64,), generator=generator)
    for _ in range(5):
        state.optimizer.zero_grad()
        loss = nn.functional.cross_entropy(state.model(inputs), targets)
        loss.backward()
        state.optimizer.step()
        state.losses.append(loss.item())
    return state


def trained(generator):
    state = ModelState()
    state.width = 16
    state.initialize_state(width=16)
    return train(state, generator)


def seeded(seed=0):
    return torch.Generator().manual_seed(seed)


def unseeded():
    generator = torch.Generator()
    generator.seed()  # from the operating system's entropy: differs on every call
    return generator


# -- reproduction of a computation -------------------------------------------------------------


def test_a_deterministic_computation_compares_equal():
    comparison = compare_states(trained(seeded()), trained(seeded()))
    assert comparison.equal, str(comparison)
    assert comparison.differences == ()
    assert str(comparison).startswith("equal: ")


def test_a_nondeterministic_computation_is_flagged_with_its_max_abs_diff():
    first, second = trained(unseeded()), trained(unseeded())
    comparison = compare_states(first, second)
    assert not comparison.equal
    weights_a = first.model.state_dict()["2.weight"].double()
    weights_b = second.model.state_dict()["2.weight"].double()
    difference = comparison["model.2.weight"]
    assert difference.kind == "values"
    assert difference.compared_by == "bitwise"
    assert difference.max_abs_diff == (weights_a - weights_b).abs().max().item()
    assert difference.fraction == (weights_a != weights_b).double().mean().item()
    # Every trained tensor, the optimizer's momentum and the loss history differ too.
    assert {"model.0.weight", "model.0.bias", "model.2.bias", "losses"} <= set(comparison.paths)
    assert "optimizer.state[0].momentum_buffer" in comparison.paths
    losses = comparison["losses"]
    expected = max(abs(a - b) for a, b in zip(first.losses, second.losses, strict=True))
    assert losses.max_abs_diff == expected
    # What did not change with the data is not reported.
    assert not any(path.startswith("optimizer.param_groups") for path in comparison.paths)
    assert "model.training" not in comparison.paths
    text = str(comparison)
    assert "model.2.weight" in text
    assert f"{difference.max_abs_diff:.4g}" in text


def test_a_tolerance_accepts_what_differs_by_less():
    first, second = trained(seeded()), trained(seeded())
    with torch.no_grad():
        second.model[0].weight.add_(1e-7)
    assert not compare_states(first, second).equal
    comparison = compare_states(first, second, atol=1e-5)
    assert comparison.equal, str(comparison)
    assert "within rtol=0, atol=1e-05" in str(comparison)


def test_bookkeeping_is_not_content():
    first, second = trained(seeded()), trained(seeded())
    first.dagger.tags, second.dagger.tags = ["a"], ["b"]
    first.dagger.id, second.dagger.id = "1" * 64, "2" * 64
    first.dagger.status, second.dagger.status = dg.Status.DONE, dg.Status.RUNNING
    assert compare_states(first, second).equal
    # A user attribute is content, whatever its name (``status`` is the user's own here).
    first.status, second.status = "done", "running"
    assert not compare_states(first, second).equal


# -- tolerance semantics -----------------------------------------------------------------------


@pytest.mark.parametrize(("rtol", "atol"), [(1e-3, 0.0), (0.0, 0.05), (1e-2, 1e-2), (0.5, 0.0)])
def test_tolerance_is_torch_isclose(rtol, atol):
    generator = seeded(3)
    a = torch.randn(1000, dtype=torch.float64, generator=generator)
    b = a + torch.randn(1000, dtype=torch.float64, generator=generator) * 0.05
    a[::97] = float("nan")
    b[::97] = float("nan")
    b[5] = float("nan")
    b[6] = float("inf")
    comparison = compare_states({"x": a}, {"x": b}, rtol=rtol, atol=atol)
    differing = (~torch.isclose(a, b, rtol=rtol, atol=atol, equal_nan=True)).sum().item()
    assert comparison["x"].fraction == differing / 1000
    assert comparison["x"].max_abs_diff == float("inf")  # the unmatched NaN and infinity


@pytest.mark.parametrize(("rtol", "atol"), [(1e-3, 0.0), (0.0, 0.05), (1e-2, 1e-2)])
def test_tolerance_is_numpy_isclose(rtol, atol):
    rng = np.random.default_rng(4)
    a = rng.normal(size=(40, 25))
    b = a + rng.normal(size=(40, 25)) * 0.05
    comparison = compare_states({"x": a}, {"x": b}, rtol=rtol, atol=atol)
    close = np.isclose(a, b, rtol=rtol, atol=atol, equal_nan=True)
    assert comparison["x"].fraction == (~close).sum() / a.size
    assert comparison["x"].max_abs_diff == np.abs(a - b)[~close].max()
    assert comparison["x"].compared_by == "tolerance"


@pytest.mark.parametrize("bad", [-1e-3, float("nan"), "a lot", True])
def test_a_bad_tolerance_is_refused(bad):
    with pytest.raises(
        InvalidArgumentError, match=r"rtol=.* is not a tolerance: pass a number >= 0"
    ):
        compare_states({}, {}, rtol=bad)
    with pytest.raises(ValueError, match="atol"):
        compare_states({}, {}, atol=bad)


def test_something_without_attributes_is_refused():
    with pytest.raises(InvalidArgumentError, match=r"got a `int`.*Pass the loaded state itself"):
        compare_states(3, {})


# -- NaN, signed zeros, dtypes -----------------------------------------------------------------


def test_nan_equals_nan_and_an_unmatched_nan_is_an_infinite_difference():
    a = torch.tensor([1.0, float("nan"), 3.0, float("inf")])
    assert compare_states({"x": a}, {"x": a.clone()}).equal
    b = torch.tensor([1.0, 2.0, 3.0, float("inf")])
    difference = compare_states({"x": a}, {"x": b})["x"]
    assert difference.max_abs_diff == float("inf")
    assert difference.fraction == 0.25
    # A NaN with another payload is still NaN.
    other_nan = torch.tensor([0x7FC00001], dtype=torch.int32).view(torch.float32)
    assert torch.isnan(other_nan).all()
    assert compare_states({"x": torch.tensor([float("nan")])}, {"x": other_nan}).equal
    assert compare_states({"x": float("nan")}, {"x": float("nan")}).equal


def test_signed_zeros_differ_bitwise_only():
    a, b = torch.tensor([0.0, 1.0]), torch.tensor([-0.0, 1.0])
    difference = compare_states({"x": a}, {"x": b})["x"]
    assert (difference.max_abs_diff, difference.fraction) == (0.0, 0.5)
    assert compare_states({"x": a}, {"x": b}, atol=1e-12).equal
    assert not compare_states({"x": 0.0}, {"x": -0.0}).equal


@pytest.mark.parametrize(
    ("dtype", "bump"),
    [
        (torch.bfloat16, 0.5),
        (torch.float16, 0.25),
        (torch.float32, 1e-3),
        (torch.float64, 1e-9),
        (torch.complex64, 2j),
        (torch.complex128, 1e-3 + 1e-3j),
        (torch.int64, 7),
        (torch.int8, 3),
        (torch.uint8, 9),
    ],
)
def test_each_dtype_reports_its_max_abs_diff(dtype, bump):
    a = (torch.arange(24) % 5).to(dtype).reshape(4, 6)
    b = a.clone()
    b[2, 3] += bump
    difference = compare_states({"x": a}, {"x": b})["x"]
    expected = (b[2, 3].to(torch.complex128) - a[2, 3].to(torch.complex128)).abs().item()
    assert difference.max_abs_diff == pytest.approx(expected, rel=1e-12)
    assert difference.fraction == 1 / 24
    assert difference.detail == "1 of 24 elements differ"


def test_bool_tensors_and_arrays():
    a = torch.tensor([True, False, True, True])
    difference = compare_states({"x": a}, {"x": ~a})["x"]
    assert (difference.max_abs_diff, difference.fraction) == (1.0, 1.0)
    mask = np.array([True, False])
    assert compare_states({"m": mask}, {"m": mask.copy()}).equal
    assert compare_states({"m": mask}, {"m": ~mask})["m"].fraction == 1.0


def test_structured_and_string_arrays_compare_bitwise():
    records = np.array([(1, 2.0), (3, 4.0)], dtype=[("a", "i4"), ("b", "f8")])
    changed = records.copy()
    changed["b"][1] = 5.0
    difference = compare_states({"r": records}, {"r": changed})["r"]
    assert difference.fraction == 0.5
    assert difference.max_abs_diff is None  # no arithmetic on records
    words = np.array(["a", "bc"])
    assert compare_states({"w": words}, {"w": np.array(["a", "bd"])})["w"].fraction == 0.5


def test_dtype_shape_type_and_missing():
    first = {
        "weights": torch.ones(3),
        "grid": np.zeros((2, 3)),
        "pair": [1, "a"],
        "table": {"kept": 1, "dropped": {"deep": 2, "deeper": [3, "x"]}},
        "gone": torch.ones(2),
    }
    second = {
        "weights": torch.ones(3, dtype=torch.float64),
        "grid": np.zeros((3, 2)),
        "pair": (1, "a"),
        "table": {"kept": 1, "added": 5},
        "new": "text",
    }
    comparison = compare_states(first, second)
    assert comparison["weights"].kind == "dtype"
    assert comparison["weights"].detail == "float32 vs float64; 0 of 3 elements differ"
    assert comparison["grid"].kind == "shape"
    assert comparison["grid"].detail == "shape (2, 3) vs (3, 2)"
    assert comparison["pair"].kind == "type"
    assert comparison["pair"].detail == "list vs tuple"
    assert comparison["new"].kind == "missing"
    assert comparison["new"].detail == "only the second state has it (str)"
    assert comparison["gone"].detail == "only the first state has it (torch.Tensor)"
    assert comparison["table['added']"].kind == "missing"
    # One line for a missing container, none for what it holds.
    assert comparison["table['dropped']"].kind == "missing"
    assert not [path for path in comparison.paths if path.startswith("table['dropped'][")]


def test_masked_arrays_compare_data_and_mask():
    data = np.ma.masked_array([1.0, 2.0, 3.0], mask=[False, True, False])
    remasked = np.ma.masked_array([1.0, 2.0, 3.0], mask=[False, False, False])
    comparison = compare_states({"m": data}, {"m": remasked})
    assert comparison.paths == ["m.mask"]
    first, second = np.array([1, 2]).view(Tagged), np.array([1, 3]).view(Tagged)
    assert compare_states({"m": first}, {"m": second})["m"].fraction == 0.5


class Tagged(np.ndarray):
    """An ndarray subclass, as libraries define them."""


def test_a_container_of_another_type_is_one_difference():
    comparison = compare_states(
        {"history": [0.5, 0.25], "table": {"a": 1, "b": 2}},
        {"history": [0.5, "diverged"], "table": [1, 2]},
    )
    assert comparison.paths == ["history", "table"]
    assert comparison["history"].detail == "list of float64 numbers vs list of mixed items"
    assert comparison["table"].detail == "dict vs list"


def test_a_state_of_another_class_still_compares_its_attributes():
    class Other(dg.ExperimentState):
        pass

    first, second = ModelState(), Other()
    first.value, second.value, second.extra = 1, 2, 3
    comparison = compare_states(first, second)
    assert comparison[""].kind == "type"
    assert {"value", "extra"} <= set(comparison.paths)


def test_a_tensor_and_an_array_differ_in_type():
    difference = compare_states({"x": torch.zeros(2)}, {"x": np.zeros(2)})["x"]
    assert difference.kind == "type"
    assert difference.detail == "torch.Tensor vs numpy.ndarray"


# -- sparse, strided, large --------------------------------------------------------------------


def test_sparse_tensors_compare_by_value():
    dense = torch.tensor([[0.0, 1.0, 0.0], [2.0, 0.0, 3.0]])
    sparse = dense.to_sparse()
    with_explicit_zero = torch.sparse_coo_tensor(
        torch.tensor([[0, 0, 1, 1], [0, 1, 0, 2]]),
        torch.tensor([0.0, 1.0, 2.0, 3.0]),
        (2, 3),
        check_invariants=True,
    )
    assert compare_states({"s": sparse}, {"s": with_explicit_zero}).equal
    moved = torch.tensor([[0.0, 1.0, 0.0], [2.0, 3.0, 0.0]]).to_sparse()
    difference = compare_states({"s": sparse}, {"s": moved})["s"]
    assert (difference.fraction, difference.max_abs_diff) == (2 / 6, 3.0)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", "Sparse CSR tensor support is in beta", UserWarning)
        csr = dense.to_sparse_csr()
    assert compare_states({"s": csr}, {"s": dense.to_sparse()}).equal is False  # layouts differ
    assert compare_states({"s": csr}, {"s": csr.clone()}).equal
    assert compare_states({"s": sparse}, {"s": dense})["s"].kind == "type"


def test_strided_views_compare_by_their_values():
    base = torch.arange(12.0).reshape(3, 4)
    assert compare_states({"x": base.t()}, {"x": base.t().contiguous()}).equal
    assert compare_states({"x": base[:, ::2]}, {"x": base[:, ::2].clone()}).equal
    conjugated = torch.tensor([1 + 2j, 3 - 1j]).conj()
    assert compare_states({"x": conjugated}, {"x": conjugated.resolve_conj()}).equal


def test_a_large_strided_tensor_is_read_piece_by_piece_and_every_element_counted():
    # More than a million elements per row, not contiguous: the pieces follow rows.
    base = torch.zeros(3, 2_100_000)
    first = base[:, ::2]
    second = base.clone()[:, ::2]
    second[0, 0] = 1.0
    second[2, -1] = -2.0
    difference = compare_states({"x": first}, {"x": second})["x"]
    assert difference.detail == f"2 of {first.numel():,} elements differ"
    assert difference.max_abs_diff == 2.0


def test_a_large_array_is_not_copied_whole():
    rng = np.random.default_rng(0)
    base = rng.normal(size=(4000, 2 * 2500))  # 160 MB of float64
    first = base[:, ::2]  # 80 MB, not contiguous
    second = first.copy()
    second[1234, 17] += 1.0
    tracemalloc.start()
    try:
        difference = compare_states({"x": first}, {"x": second})["x"]
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert difference.fraction == 1 / first.size
    assert peak < first.nbytes / 4, f"peak {peak / 1e6:.1f} MB while comparing"


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_tensors_on_different_devices_compare_by_value():
    a = torch.randn(1000, generator=seeded())
    assert compare_states({"x": a}, {"x": a.cuda()}).equal
    b = a.clone().cuda()
    b[10] += 1
    assert compare_states({"x": a}, {"x": b})["x"].fraction == 1 / 1000


def test_meta_tensors_compare_by_shape_and_dtype():
    assert compare_states(
        {"x": torch.empty(3, device="meta")}, {"x": torch.empty(3, device="meta")}
    ).equal
    assert (
        compare_states({"x": torch.empty(3, device="meta")}, {"x": torch.empty(4, device="meta")})[
            "x"
        ].kind
        == "shape"
    )


# -- modules, optimizers, generators, other objects --------------------------------------------


def test_train_and_eval_mode_is_part_of_a_module():
    first, second = trained(seeded()), trained(seeded())
    second.model.eval()
    difference = compare_states(first, second)["model.training"]
    assert difference.detail == "True vs False"
    second.model.train()
    second.model[0].eval()
    assert compare_states(first, second)["model.training"].detail == "True vs ('', '1', '2')"


def test_an_optimizer_compares_through_its_state_dict():
    first, second = trained(seeded()), trained(seeded())
    for group in second.optimizer.param_groups:
        group["lr"] = 0.01
    difference = compare_states(first, second)["optimizer.param_groups[0].lr"]
    assert (difference.max_abs_diff, difference.detail) == (pytest.approx(0.09), "0.1 vs 0.01")


def test_a_learning_rate_scheduler_compares_through_its_state_dict():
    def with_scheduler(steps):
        state = trained(seeded())
        state.scheduler = torch.optim.lr_scheduler.StepLR(state.optimizer, step_size=1)
        for _ in range(steps):
            state.optimizer.step()
            state.scheduler.step()
        return state

    comparison = compare_states(with_scheduler(1), with_scheduler(2))
    assert "scheduler.last_epoch" in comparison.paths


def test_random_generators_compare_by_their_state():
    assert compare_states({"g": seeded(1)}, {"g": seeded(1)}).equal
    assert compare_states({"g": seeded(1)}, {"g": seeded(2)})["g"].kind == "values"
    rng_a, rng_b = np.random.default_rng(5), np.random.default_rng(5)
    assert compare_states({"g": rng_a}, {"g": rng_b}).equal
    rng_b.random()
    assert not compare_states({"g": rng_a}, {"g": rng_b}).equal


@dataclasses.dataclass
class Metrics:
    accuracy: float
    per_class: torch.Tensor


class Holder:
    def __init__(self, weights):
        self.weights = weights
        self.name = "holder"


class Tolerant:
    """No canonical encoding, no attributes to walk, an equality of its own."""

    __slots__ = ()

    def __eq__(self, other):
        return isinstance(other, Tolerant)

    __hash__ = object.__hash__


def test_dataclasses_and_plain_objects_are_walked():
    first = {"metrics": Metrics(0.5, torch.ones(3)), "holder": Holder(torch.zeros(2))}
    second = {
        "metrics": Metrics(0.5, torch.tensor([1.0, 2.0, 1.0])),
        "holder": Holder(torch.ones(2)),
    }
    comparison = compare_states(first, second)
    assert comparison.paths == ["metrics.per_class", "holder.weights"]


class Unpicklable:
    def __init__(self, value):
        self.value = value

    def __getstate__(self):
        raise TypeError("Unpicklable objects cannot be pickled")


def test_an_object_that_refuses_pickling_is_walked_through_its_attributes():
    comparison = compare_states({"u": Unpicklable(1)}, {"u": Unpicklable(2)})
    assert comparison.paths == ["u.value"]


def test_values_without_an_encoding_compare_with_eq_and_say_so():
    comparison = compare_states({"t": Tolerant()}, {"t": Tolerant()})
    assert comparison.equal
    assert comparison.compared_with_eq == ("t",)
    assert "compared with == (no canonical encoding): t" in str(comparison)


def test_values_without_an_encoding_or_equality_are_uncomparable():
    comparison = compare_states({"lock": threading.Lock()}, {"lock": threading.Lock()})
    difference = comparison["lock"]
    assert difference.kind == "uncomparable"
    assert "register an encoder with `dagger.hashing.register`" in difference.detail


def test_numbers_compare_exactly_or_within_tolerance():
    assert not compare_states({"n": 1.0}, {"n": 1.0 + 1e-12}).equal
    assert compare_states({"n": 1.0}, {"n": 1.0 + 1e-12}, rtol=1e-9).equal
    assert compare_states({"n": 1}, {"n": 1.0})["n"].detail == "int vs float"
    assert compare_states({"n": np.float32(0.5)}, {"n": np.float32(0.5)}).equal
    assert compare_states({"n": 10**30}, {"n": 10**30 + 1})["n"].max_abs_diff == 1.0


def test_reference_cycles_end():
    a, b = [1], [1]
    a.append(a)
    b.append(b)
    assert compare_states({"loop": a}, {"loop": b}).equal


def test_hooks_that_are_bound_methods_compare_by_function():
    first, second = trained(seeded()), trained(seeded())
    first.save_pre_hooks.append(first.initialize_state)
    second.save_pre_hooks.append(second.initialize_state)
    assert compare_states(first, second).equal


def test_the_table_lists_each_difference_once():
    comparison = compare_states(
        {"a": torch.zeros(4), "b": "x", "c": 1}, {"a": torch.tensor([0.0, 0.0, 0.5, 0.0]), "b": "y"}
    )
    assert isinstance(comparison, StateComparison)
    lines = str(comparison).splitlines()
    assert lines[0] == "3 differences in 3 parts compared bitwise (NaN equals NaN)"
    assert lines[1].split() == ["path", "kind", "max", "abs", "diff", "differ", "detail"]
    assert lines[2].split()[:4] == ["a", "values", "0.5", "25.00%"]
    assert "'x' vs 'y'" in lines[3]
    assert lines[4].split()[:2] == ["c", "missing"]
    with pytest.raises(KeyError, match="'z' does not differ"):
        comparison["z"]
