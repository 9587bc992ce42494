"""Content digests: a Function that changes the state it reads is caught, by attribute path."""

from __future__ import annotations

import json
import threading
import tracemalloc

import numpy as np
import pytest
import torch
from torch import nn

import dagger as dg
from dagger.digest import StateDigest, digest_changes, state_digest


class NetState(dg.ExperimentState):
    PROPERTIES = ["seed"]

    def initialize_state(self, **arguments):
        torch.manual_seed(self.seed)
        self.model = nn.Sequential(
            nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 6 * 6, 2)
        )
        self.optimizer = torch.optim.SGD(self.model.parameters(), lr=0.1, momentum=0.9)
        self.images = torch.randn(5, 3, 8, 8)
        self.scores = np.zeros(4)
        self.notes = {"stage": "trained", "epochs": [1, 2]}
        self.model.eval()


@pytest.fixture
def state():
    state = NetState()
    state.seed = 0
    state.initialize_state(seed=0)
    return state


# Functions as a user writes them: the first reads only; the others change the state.


def evaluate(state):
    with torch.no_grad():
        return state.model(state.images).argmax(1).tolist()


def nudge_one_weight(state):
    with torch.no_grad():
        state.model[4].weight[0, 0] += 1e-3
    return evaluate(state)


def evaluate_in_training_mode(state):
    state.model.train()  # forgotten: batch norm now updates its running statistics
    with torch.no_grad():
        return state.model(state.images).argmax(1).tolist()


def train_while_evaluating(state):
    loss = state.model(state.images).sum()
    loss.backward()
    state.optimizer.step()
    return loss.item()


def write_through_a_numpy_view(state):
    # Bypasses autograd and the tensor's version counter: only the bytes tell.
    state.images.numpy()[0, 0, 0, 0] = 42.0


def checked(function, state):
    before = state_digest(state)
    function(state)
    return digest_changes(before, state_digest(state))


def test_a_read_only_function_changes_nothing(state):
    assert checked(evaluate, state) == []


def test_changing_one_weight_in_place_is_caught(state):
    assert checked(nudge_one_weight, state) == ["model.4.weight"]


def test_a_forward_pass_in_training_mode_is_caught(state):
    assert checked(evaluate_in_training_mode, state) == [
        "model.1.num_batches_tracked",
        "model.1.running_mean",
        "model.1.running_var",
        "model.training",
    ]


def test_training_inside_a_function_is_caught(state):
    changes = checked(train_while_evaluating, state)
    assert {"model.0.weight", "model.4.bias", "optimizer.state[0].momentum_buffer"} <= set(changes)
    assert "images" not in changes


def test_a_write_through_a_numpy_view_is_caught(state):
    assert checked(write_through_a_numpy_view, state) == ["images"]


@pytest.mark.parametrize(
    ("mutation", "changed"),
    [
        (lambda s: s.scores.__setitem__(2, 1.0), ["scores"]),
        (lambda s: s.notes["epochs"].append(3), ["notes['epochs']"]),
        (lambda s: s.notes.update(stage="evaluated"), ["notes['stage']"]),
        (lambda s: setattr(s, "extra", 1), ["extra"]),
        (lambda s: delattr(s, "scores"), ["scores"]),
        (lambda s: setattr(s, "notes", dict(s.notes)), []),  # a new but equal object
        (lambda s: s.optimizer.param_groups[0].update(lr=0.5), ["optimizer.param_groups[0].lr"]),
        (lambda s: s.images.resize_(5, 3, 64), ["images"]),
    ],
)
def test_other_mutations(state, mutation, changed):
    assert checked(mutation, state) == changed


@pytest.mark.parametrize(
    "tensor",
    [
        torch.arange(12.0).reshape(3, 4).t(),  # strided
        torch.ones(6, dtype=torch.bfloat16),
        torch.ones(6, dtype=torch.float16),
        torch.ones(6, dtype=torch.complex64),
        torch.ones(6, dtype=torch.bool),
        torch.ones(6, dtype=torch.int8),
        torch.eye(3).to_sparse(),
    ],
    ids=["strided", "bfloat16", "float16", "complex64", "bool", "int8", "sparse"],
)
def test_a_change_to_any_kind_of_tensor_is_caught(tensor):
    state = {"t": tensor}
    before = state_digest(state)
    assert digest_changes(before, state_digest(state)) == []
    if tensor.is_sparse:
        tensor.values()[1] = 0.5
    elif tensor.dtype == torch.bool:
        tensor[-1] = False
    else:
        tensor[-1] = 0
    assert digest_changes(before, state_digest(state)) == ["t"]


def test_equal_content_has_equal_digests_whatever_the_memory_layout():
    base = torch.arange(12.0).reshape(3, 4)
    assert state_digest({"t": base.t()}).parts == state_digest({"t": base.t().contiguous()}).parts
    array = np.arange(12.0).reshape(3, 4)
    assert (
        state_digest({"a": array.T}).parts
        == state_digest({"a": np.ascontiguousarray(array.T)}).parts
    )
    # ... but not across dtypes or shapes with the same bytes.
    assert state_digest({"t": base}).parts != state_digest({"t": base.reshape(4, 3)}).parts
    assert state_digest({"t": base.view(torch.int32)}).parts != state_digest({"t": base}).parts


def test_a_large_strided_array_is_hashed_piece_by_piece():
    base = np.zeros((4000, 5000))  # 160 MB
    strided = base[:, ::2]
    tracemalloc.start()
    try:
        state_digest({"a": strided})
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < strided.nbytes / 2, f"peak {peak / 1e6:.1f} MB while hashing"


def test_an_unpicklable_value_without_encoding_is_reported_untracked():
    digest = state_digest({"lock": threading.Lock(), "x": 1})
    assert digest.untracked == ("lock",)
    assert "x" in digest.parts


def test_the_digest_is_json_and_one_hex_string(state):
    digest = state_digest(state)
    assert isinstance(digest, StateDigest)
    assert json.loads(json.dumps(digest.to_json()))["digest"] == digest.hexdigest
    assert len(digest.hexdigest) == 64
    assert state_digest(state).hexdigest == digest.hexdigest
    nudge_one_weight(state)
    assert state_digest(state).hexdigest != digest.hexdigest


def test_bookkeeping_is_not_content(state):
    before = state_digest(state)
    state.dagger.tags = ["new"]
    state.dagger.status = dg.Status.DONE
    assert digest_changes(before, state_digest(state)) == []
    # A user attribute is content, whatever its name.
    state.status = "done"
    assert digest_changes(before, state_digest(state)) == ["status"]


def test_large_tensors_hashed_together_digest_as_when_hashed_alone():
    """Several large tensors and arrays are hashed on threads; each part's digest is the one
    it has alone in a state (hashed on the calling thread), and a change to one is caught."""
    generator = torch.Generator().manual_seed(0)
    large = {f"t{i}": torch.randn(512, 1024, generator=generator) for i in range(4)}  # 2 MiB each
    large["strided"] = torch.randn(1024, 1024, generator=generator)[:, ::2]
    large["array"] = np.arange(600_000, dtype=np.float32)
    together = state_digest(large)
    for name, value in large.items():
        assert together.parts[name] == state_digest({name: value}).parts[name], name
    large["t2"][100, 7] += 1.0
    assert digest_changes(together, state_digest(large)) == ["t2"]
