"""dagger: reproducible machine-learning experiments as trees of cached, stored states."""

from ._version import __version__
from .errors import (
    ColumnNotFoundError,
    DaggerError,
    ExperimentDefinitionError,
    FormatVersionError,
    GraphvizNotFoundError,
    GraphvizNotInstalledError,
    HashingError,
    MissingDependencyError,
    MissingPropertyError,
    NotAnExperimentError,
    PlotError,
    RecipeResultError,
    RunError,
    SerializationError,
    StateClassMismatchError,
    StateNotFoundError,
    StoreError,
    UnknownFormatError,
)
from .experiment import Experiment
from .promise import ExperimentStatePromise
from .recipe import Function, Recipe, function
from .runner import Failure, RunReport
from .state import ExperimentState
from .store.maintenance import gc, verify
from .tree import NodeSet, StaticExperimentTree

__all__ = [
    "ColumnNotFoundError",
    "DaggerError",
    "Experiment",
    "ExperimentDefinitionError",
    "ExperimentState",
    "ExperimentStatePromise",
    "Failure",
    "FormatVersionError",
    "Function",
    "GraphvizNotFoundError",
    "GraphvizNotInstalledError",
    "HashingError",
    "MissingDependencyError",
    "MissingPropertyError",
    "NodeSet",
    "NotAnExperimentError",
    "PlotError",
    "Recipe",
    "RecipeResultError",
    "RunError",
    "RunReport",
    "SerializationError",
    "StateClassMismatchError",
    "StateNotFoundError",
    "StaticExperimentTree",
    "StoreError",
    "UnknownFormatError",
    "__version__",
    "function",
    "gc",
    "verify",
]
