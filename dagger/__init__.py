"""dagger: reproducible machine-learning experiments as trees of cached, stored states."""

from ._version import __version__
from .errors import (
    DaggerError,
    ExperimentDefinitionError,
    FormatVersionError,
    HashingError,
    MissingPropertyError,
    NotAnExperimentError,
    RecipeResultError,
    RunError,
    SerializationError,
    StateClassMismatchError,
    StateNotFoundError,
    StoreError,
)
from .experiment import Experiment
from .promise import ExperimentStatePromise
from .recipe import Function, Recipe, function
from .runner import Failure, RunReport
from .state import ExperimentState
from .store.maintenance import gc, verify
from .tree import NodeSet, StaticExperimentTree

__all__ = [
    "DaggerError",
    "Experiment",
    "ExperimentDefinitionError",
    "ExperimentState",
    "ExperimentStatePromise",
    "Failure",
    "FormatVersionError",
    "Function",
    "HashingError",
    "MissingPropertyError",
    "NodeSet",
    "NotAnExperimentError",
    "Recipe",
    "RecipeResultError",
    "RunError",
    "RunReport",
    "SerializationError",
    "StateClassMismatchError",
    "StateNotFoundError",
    "StaticExperimentTree",
    "StoreError",
    "__version__",
    "function",
    "gc",
    "verify",
]
