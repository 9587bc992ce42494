"""Errors raised by dagger.

Every error dagger raises on purpose derives from :class:`DaggerError`, and also from the
builtin exception it means, so ``except TypeError`` keeps working for code that does not know
dagger::

    DaggerError(Exception)
    ├── HashingError(DaggerError, TypeError)          a value cannot be part of an identity
    ├── MissingPropertyError(DaggerError, KeyError)    spawn_new_tree lacks a PROPERTIES value
    ├── ExperimentDefinitionError(DaggerError, ValueError)
    │                                                  a tree built wrongly: second root, foreign
    │                                                  promise, non-string tag, bad option
    ├── RecipeResultError(DaggerError, TypeError)      Recipe.run returned something not a state
    ├── SerializationError(DaggerError, TypeError)     a state attribute cannot be pickled
    ├── StoreError(DaggerError, OSError)               the directory cannot be used as a store
    │   ├── NotAnExperimentError(StoreError)           no experiment.json where one is needed
    │   ├── FormatVersionError(StoreError)             written by a newer dagger
    │   ├── StateClassMismatchError(StoreError)        the stored state class differs
    │   └── CorruptStateError(StoreError)              a stored state's files are missing or
    │                                                  damaged (moved to quarantine/; a run
    │                                                  recomputes it)
    ├── StateNotFoundError(DaggerError, KeyError)      an id or prefix matches no stored state
    ├── StateUnavailableError(DaggerError, LookupError)
    │                                                  a state has no stored content to load
    │                                                  (it failed, or its files are damaged)
    ├── ColumnNotFoundError(DaggerError, KeyError)     a parameter, property or result name
    │                                                  that no state has
    ├── InvalidQueryError(DaggerError, TypeError)      a query given the wrong kind of value
    ├── ReservedAttributeError(DaggerError, AttributeError)
    │                                                  user code set a name dagger manages on
    │                                                  a state (``tags``, ``dagger``, ...)
    ├── GraphvizNotInstalledError(DaggerError, ImportError)
    │                                                  drawing without the graphviz package
    ├── GraphvizNotFoundError(DaggerError, RuntimeError)
    │                                                  drawing without Graphviz's `dot`
    ├── UnknownFormatError(DaggerError, ValueError)    draw() asked for another file format
    ├── InvalidArgumentError(DaggerError, ValueError)  an argument outside what it allows: a
    │                                                  negative tolerance, an unknown plan action
    ├── MissingDependencyError(DaggerError, ImportError)
    │                                                  plots or reports without matplotlib/Jinja2
    ├── PlotError(DaggerError, ValueError)             a plot or drawing asked for wrongly: unknown
    │                                                  kind or colour map, no state with both values
    ├── RemovedAPIError(DaggerError, NotImplementedError)
    │                                                  a call of the original dagger that this one
    │                                                  replaced (state.save(), new_state, path)
    └── RunError(DaggerError, RuntimeError)            one or more recipes failed during run()

Errors carry the offending values as attributes and pickle cleanly, because they cross process
boundaries when states are computed by an executor.
"""

from __future__ import annotations

from typing import Any

__all__ = [
    "ColumnNotFoundError",
    "CorruptStateError",
    "DaggerError",
    "ExperimentDefinitionError",
    "FormatVersionError",
    "GraphvizNotFoundError",
    "GraphvizNotInstalledError",
    "HashingError",
    "InvalidArgumentError",
    "InvalidQueryError",
    "MissingDependencyError",
    "MissingPropertyError",
    "NotAnExperimentError",
    "PlotError",
    "RecipeResultError",
    "RemovedAPIError",
    "ReservedAttributeError",
    "RunError",
    "SerializationError",
    "StateClassMismatchError",
    "StateNotFoundError",
    "StateUnavailableError",
    "StoreError",
    "UnknownFormatError",
]


class DaggerError(Exception):
    """Root of every error dagger raises on purpose.

    Args:
        message: A full sentence naming the problem and the fix.
        **details: Offending values, kept as attributes of the same name.
    """

    def __init__(self, message: str, **details: Any) -> None:
        super().__init__(message)
        self.message = message
        self.details = details
        for name, value in details.items():
            setattr(self, name, value)

    def __str__(self) -> str:
        # KeyError would otherwise print the repr of the message, quotes and escapes included.
        return self.message

    def __reduce__(self) -> tuple[Any, ...]:
        return (_rebuild, (type(self), self.message, self.details))


def _rebuild(cls: type[DaggerError], message: str, details: dict[str, Any]) -> DaggerError:
    error = cls.__new__(cls)
    DaggerError.__init__(error, message, **details)
    return error


class HashingError(DaggerError, TypeError):
    """A value that is part of an identity cannot be encoded canonically."""


class MissingPropertyError(DaggerError, KeyError):
    """``spawn_new_tree`` was not given a value for one of the state's PROPERTIES."""


class ExperimentDefinitionError(DaggerError, ValueError):
    """The tree of promises was built in a way dagger cannot run."""


class RecipeResultError(DaggerError, TypeError):
    """A recipe's ``run`` returned something that is not an ExperimentState."""


class SerializationError(DaggerError, TypeError):
    """A state (or a recorded result) cannot be pickled."""


class StoreError(DaggerError, OSError):
    """The experiment directory cannot be used as asked."""


class NotAnExperimentError(StoreError):
    """The directory holds no dagger experiment."""


class FormatVersionError(StoreError):
    """The directory was written by a newer dagger, in a format this one cannot read."""


class StateClassMismatchError(StoreError):
    """The state class given differs from the one the experiment was stored with."""


class CorruptStateError(StoreError):
    """A stored state's record or content is missing or does not match its checksum.

    Its files have been moved to ``quarantine/``; the state counts as absent and the next run
    recomputes it.

    Attributes:
        state_id: The state's id.
        reason: What was wrong.
    """


class StateNotFoundError(DaggerError, KeyError):
    """No stored state matches the id or prefix asked for."""


class StateUnavailableError(DaggerError, LookupError):
    """A state has no stored content to load: it failed, or its files are damaged."""


class ReservedAttributeError(DaggerError, AttributeError):
    """User code set (or deleted) an attribute of a state that dagger manages."""


class InvalidQueryError(DaggerError, TypeError):
    """A query (filter, composition of NodeSets) was given the wrong kind of value."""


class ColumnNotFoundError(DaggerError, KeyError):
    """A query names a parameter, property or result that no state has."""


class GraphvizNotInstalledError(DaggerError, ImportError):
    """The ``graphviz`` Python package, needed to build a drawing, is not installed."""


class GraphvizNotFoundError(DaggerError, RuntimeError):
    """Graphviz's ``dot`` program, needed to lay out and write an image, is not on PATH."""


class UnknownFormatError(DaggerError, ValueError):
    """``draw()`` was asked for a file format it does not write."""


class InvalidArgumentError(DaggerError, ValueError):
    """An argument is outside what the function allows (a negative tolerance, an unknown plan
    action); the message names the value and what is allowed."""


class MissingDependencyError(DaggerError, ImportError):
    """An optional package a feature needs (matplotlib, Jinja2) is not installed."""


class PlotError(DaggerError, ValueError):
    """A plot or drawing cannot be made as asked: an unknown kind or colour map, a bad
    ``collapse``, or no state that holds both plotted values."""


class RemovedAPIError(DaggerError, NotImplementedError):
    """A call of the original facebookresearch/dagger that this dagger replaced on purpose
    (``state.save()``, ``state.new_state(recipe)``, ``state.path``); the message names what to
    use instead."""


class RunError(DaggerError, RuntimeError):
    """One or more recipes or functions failed during ``Experiment.run``.

    Attributes:
        failures: One :class:`dagger.runner.Failure` per failed state or function.
        report: The :class:`dagger.runner.RunReport` of the run, healthy branches included.
    """
