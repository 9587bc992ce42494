"""dagger: reproducible machine-learning experiments as trees of cached, stored states."""

from ._version import __version__
from .errors import (
    ColumnNotFoundError,
    CorruptStateError,
    DaggerError,
    ExperimentDefinitionError,
    FormatVersionError,
    GraphvizNotFoundError,
    GraphvizNotInstalledError,
    HashingError,
    InvalidArgumentError,
    InvalidQueryError,
    MissingDependencyError,
    MissingPropertyError,
    NotAnExperimentError,
    PlotError,
    RecipeResultError,
    RemovedAPIError,
    ReservedAttributeError,
    RunError,
    SerializationError,
    StateClassMismatchError,
    StateNotFoundError,
    StateUnavailableError,
    StoreError,
    UnknownFormatError,
)
from .experiment import Experiment
from .nodeset import NodeSet
from .promise import ExperimentStatePromise
from .recipe import Function, Recipe, function
from .record import Status
from .runner import Failure, RunReport
from .state import ExperimentState, StateInfo
from .store import MemoryStore
from .store.maintenance import gc, verify
from .tree import StaticExperimentTree

__all__ = [
    "ColumnNotFoundError",
    "CorruptStateError",
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
    "InvalidArgumentError",
    "InvalidQueryError",
    "MemoryStore",
    "MissingDependencyError",
    "MissingPropertyError",
    "NodeSet",
    "NotAnExperimentError",
    "PlotError",
    "Recipe",
    "RecipeResultError",
    "RemovedAPIError",
    "ReservedAttributeError",
    "RunError",
    "RunReport",
    "SerializationError",
    "StateClassMismatchError",
    "StateInfo",
    "StateNotFoundError",
    "StateUnavailableError",
    "StaticExperimentTree",
    "Status",
    "StoreError",
    "UnknownFormatError",
    "__version__",
    "function",
    "gc",
    "verify",
]
