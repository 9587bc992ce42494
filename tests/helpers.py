"""State classes and recipes shared by the tests and by the scripts they run in subprocesses.

Kept in an importable module (not conftest) so that a subprocess can import the same classes
and so that pickled states refer to a stable module path.
"""

from __future__ import annotations

import dataclasses
import enum
import os
import time
from pathlib import Path

import numpy as np

import dagger as dg

# Each recipe run appends a line here when DAGGER_TEST_LOG is set, so a test can count
# exactly which states were computed, across processes.
LOG_ENV = "DAGGER_TEST_LOG"


def log_call(what: str) -> None:
    path = os.environ.get(LOG_ENV)
    if path:
        with open(path, "a") as handle:
            handle.write(f"{what}\n")


def read_log(path: Path) -> list[str]:
    return path.read_text().split() if path.exists() else []


class CounterState(dg.ExperimentState):
    PROPERTIES = ["start"]
    NONHASHED_ATTRIBUTES = ["note"]

    def initialize_state(self, **arguments):
        log_call("root")
        self.value = self.start
        self.history = [("root", self.start)]


class Add(dg.Recipe):
    PROPERTIES = ["amount"]

    def __init__(self, amount):
        self.amount = amount

    def run(self, state):
        log_call(f"add:{self.amount}")
        state.value = state.value + self.amount
        state.history = [*state.history, ("add", self.amount)]
        return state


class Multiply(dg.Recipe):
    def __init__(self, factor):
        self.factor = factor

    def run(self, state):
        log_call(f"mul:{self.factor}")
        state.value = state.value * self.factor
        state.history = [*state.history, ("mul", self.factor)]
        return state


class Boom(dg.Recipe):
    """Fails (with ValueError) when ``fail`` is set."""

    def __init__(self, fail=True):
        self.fail = fail

    def run(self, state):
        log_call("boom")
        if self.fail:
            raise ValueError("boom on purpose")
        return state


class Sleep(dg.Recipe):
    def __init__(self, seconds):
        self.seconds = seconds

    def run(self, state):
        log_call(f"sleep:{self.seconds}")
        time.sleep(self.seconds)
        return state


class Blob(dg.Recipe):
    """Adds ``megabytes`` of deterministic bytes to the state (as a bytearray)."""

    def __init__(self, megabytes, seed=0):
        self.megabytes = megabytes
        self.seed = seed

    def run(self, state):
        log_call(f"blob:{self.megabytes}")
        import numpy as np

        rng = np.random.default_rng(self.seed)
        state.blob = rng.integers(0, 255, self.megabytes << 20, dtype=np.uint8)
        return state


# Values of stable module path for the golden hashes in test_hashing.py.
class Color(enum.Enum):
    RED = 1
    BLUE = 2


@dataclasses.dataclass
class Config:
    width: int
    lr: float


def relu(x):
    return x


# Pinned by the golden ids in test_hashing.py: editing their code changes those ids, on purpose.
class GoldenState(dg.ExperimentState):
    PROPERTIES = ["start"]

    def initialize_state(self, **arguments):
        self.value = self.start


class GoldenAdd(dg.Recipe):
    PROPERTIES = ["amount"]

    def __init__(self, amount):
        self.amount = amount

    def run(self, state):
        state.value += self.amount
        return state


# Every dtype a tensor can have that the store must bring back bitwise (test_blobs.py).
DTYPE_NAMES = [
    "float32",
    "float64",
    "float16",
    "bfloat16",
    "bool",
    "int8",
    "uint8",
    "int16",
    "int32",
    "int64",
    "complex64",
    "complex128",
]


class TensorState(dg.ExperimentState):
    def initialize_state(self, **arguments):
        import torch  # here, so that the scripts that import helpers do not pay for torch

        generator = torch.Generator().manual_seed(0)
        self.tensors = {}
        for dtype in (getattr(torch, name) for name in DTYPE_NAMES):
            base = torch.randn(64, 300, generator=generator, dtype=torch.float64)
            if dtype.is_complex:
                value = torch.complex(base, base.flip(0)).to(dtype)
            elif dtype == torch.bool:
                value = base > 0
            elif dtype.is_floating_point:
                value = base.to(dtype)
            else:
                value = (base * 50).to(dtype)
            self.tensors[str(dtype)] = value
        self.small = torch.arange(10)  # under the threshold: stays inline
        self.sparse = torch.eye(200).to_sparse()
        self.array_c = np.arange(40_000, dtype=np.float32).reshape(200, 200)
        self.array_f = np.asfortranarray(self.array_c * 2)
        self.raw = bytes(range(256)) * 400
        self.rng = torch.get_rng_state()


# A state and a recipe whose attributes have the names dagger once overwrote (test_state.py).
class Net(dg.ExperimentState):
    PROPERTIES = ["depth"]  # a ResNet hyperparameter

    def initialize_state(self, **arguments):
        self.layers = list(range(self.depth))


class Evaluate(dg.Recipe):
    def __init__(self, accuracy):
        self.accuracy = accuracy

    def run(self, state):
        state.results = {"accuracy": self.accuracy}
        state.status = "converged"
        state.record = ["epoch 1", "epoch 2"]
        state.properties = {"width": 64}
        state.children = ["not the tree's"]
        state.parent = "my own"
        return state


# -- curating (issue 16): audits and read-only Functions ---------------------------------------


class NetState(dg.ExperimentState):
    """A small network with batch-norm and its SGD optimizer, initialised from ``seed``."""

    PROPERTIES = ["seed"]

    def initialize_state(self, **arguments):
        import torch

        torch.manual_seed(self.seed)
        self.model = torch.nn.Sequential(
            torch.nn.Linear(4, 8), torch.nn.BatchNorm1d(8), torch.nn.Linear(8, 2)
        )
        self.model.eval()
        self.optimizer = torch.optim.SGD(self.model.parameters(), lr=0.1, momentum=0.9)


class UnseededNetState(dg.ExperimentState):
    """A network initialised from the global generator, never seeded: not reproducible."""

    PROPERTIES = ["width"]

    def initialize_state(self, **arguments):
        import torch

        self.model = torch.nn.Linear(4, self.width)


class SeededTrain(dg.Recipe):
    """Steps of SGD on data from a generator seeded by ``seed``: it reproduces bitwise."""

    def __init__(self, seed, steps=2):
        self.seed = seed
        self.steps = steps

    def run(self, state):
        import torch

        log_call(f"train:{self.seed}")
        generator = torch.Generator().manual_seed(self.seed)
        state.model.train()
        for _ in range(self.steps):
            loss = state.model(torch.randn(16, 4, generator=generator)).pow(2).mean()
            state.optimizer.zero_grad()
            loss.backward()
            state.optimizer.step()
        state.model.eval()
        return state


class NoisyNudge(dg.Recipe):
    """Adds ``torch.rand(...) * scale`` to the first layer's weight, from the global generator
    that nothing seeds: recomputing it gives other values."""

    def __init__(self, scale=1e-3):
        self.scale = scale

    def run(self, state):
        import torch

        with torch.no_grad():
            state.model[0].weight.add_(torch.rand(state.model[0].weight.shape) * self.scale)
        return state


class Renamed(dg.Recipe):
    """Stores its argument under another name: ``Renamed(**params)`` cannot rebuild it."""

    def __init__(self, lr):
        self.learning_rate = lr

    def run(self, state):
        state.value = state.value * 2 + self.learning_rate
        return state


class WithConfig(dg.Recipe):
    """A parameter that is no plain JSON value: the record keeps only its repr."""

    def __init__(self, config):
        self.config = config

    def run(self, state):
        state.value = state.value + self.config.width
        return state


class WriteBeside(dg.Recipe):
    """Writes a file beside the experiment (``experiment_object.directory``)."""

    def __init__(self, name):
        self.name = name

    def run(self, state):
        directory = state.experiment_object.directory
        (Path(directory) / self.name).write_text(f"written at {time.time_ns()}")
        state.value = state.value + 1
        return state


class ReadFile(dg.Recipe):
    """Adds the number in the file at ``path`` (it raises once the file is gone)."""

    def __init__(self, path):
        self.path = path

    def run(self, state):
        state.value = state.value + int(Path(self.path).read_text())
        return state


def append_to_history(state):
    """A Function that changes the state it reads (a list grows in place)."""
    state.history.append(("function", 0))
    return len(state.history)


def read_value(state):
    """A read-only Function."""
    return state.value
