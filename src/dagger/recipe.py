"""Recipe and Function: the transitions of the tree and the read-only analyses on its states.

A recipe's identity is its class's qualified name, its code (a fingerprint of the methods it
defines below :class:`Recipe`, ``run`` included wherever it comes from, or its ``VERSION``) and
the canonical values of its PROPERTIES. A child's id hashes its parent's id with that identity.
"""

from __future__ import annotations

import functools
import types
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar

from .errors import ExperimentDefinitionError
from .fingerprint import class_fingerprint, code_digest, function_fingerprint
from .hashing import digest, encode, register
from .store.records import jsonable

if TYPE_CHECKING:
    from .promise import ExperimentStatePromise
    from .state import ExperimentState

__all__ = ["Function", "Recipe", "RecipeInfo", "child_sha", "function"]


@dataclass(frozen=True)
class RecipeInfo:
    """What a state's record says about the recipe that produced it."""

    name: str
    module: str
    params: dict[str, Any] = field(default_factory=dict)
    code: str = ""

    def to_record(self) -> dict[str, Any]:
        return {"class": self.name, "module": self.module, "params": self.params, "code": self.code}

    @classmethod
    def from_record(cls, recipe: dict[str, Any] | None) -> RecipeInfo | None:
        if not recipe:
            return None
        return cls(
            recipe["class"],
            recipe.get("module", ""),
            recipe.get("params", {}),
            recipe.get("code", ""),
        )

    def __str__(self) -> str:
        params = ", ".join(f"{key}={value!r}" for key, value in self.params.items())
        return f"{self.name}({params})"


class Recipe:
    """A transition from a state to a new (child) state.

    Subclass it, store the recipe's parameters as attributes in ``__init__``, and implement
    :meth:`run`. Applying a recipe to a state promise (``Train(lr=0.1)(root)``) lazily defines
    the child; :meth:`dagger.Experiment.run` computes it.

    Attributes:
        PROPERTIES: Names of the attributes that make up the recipe's identity. When not
            declared, every public instance attribute does.
        VERSION: Pins the identity of the recipe's code to this string instead of a
            fingerprint of its methods (bump it when the logic changes in a helper that the
            fingerprint cannot see).
    """

    PROPERTIES: ClassVar[list[str] | None] = None
    VERSION: ClassVar[str | None] = None

    def __call__(self, parent: ExperimentStatePromise | ExperimentState) -> ExperimentStatePromise:
        """Define the child of ``parent`` that this recipe produces (nothing runs yet)."""
        from .promise import as_promise

        promise = as_promise(parent, f"{type(self).__name__}(...)")
        return promise.experiment.add_child(promise, self)

    def run(self, state: ExperimentState) -> ExperimentState:
        """Mutate ``state`` (a copy of the parent, or the parent itself) and return it."""
        raise NotImplementedError(
            f"{type(self).__name__}.run is not defined: subclass dagger.Recipe and implement "
            "run(self, state), returning the state."
        )

    # -- identity ------------------------------------------------------------------------------

    def property_names(self) -> list[str]:
        declared = type(self).PROPERTIES
        if declared is not None:
            return list(declared)
        return sorted(name for name in vars(self) if not name.startswith("_"))

    def properties(self) -> dict[str, Any]:
        """The values that make up the recipe's identity, by name."""
        values = {}
        for name in self.property_names():
            try:
                values[name] = getattr(self, name)
            except AttributeError:
                raise ExperimentDefinitionError(
                    f"Recipe `{type(self).__name__}` lists `{name}` in PROPERTIES but has no "
                    f"attribute `{name}`. Set self.{name} in __init__, or remove it from "
                    "PROPERTIES.",
                    recipe=type(self).__name__,
                    attribute=name,
                ) from None
        return values

    @classmethod
    def code_identity(cls) -> str:
        if cls.VERSION is not None:
            return f"version:{cls.VERSION}"
        return "code:" + class_fingerprint(cls, _recipe_base(cls), always=("run",))

    def identity(self) -> tuple[str, str, dict[str, Any]]:
        """``(qualified class name, code identity, property values)``."""
        return (type(self).__qualname__, type(self).code_identity(), self.properties())

    def info(self, identity: tuple[str, str, dict[str, Any]] | None = None) -> RecipeInfo:
        """The recipe as its states' records describe it (from ``identity`` if given)."""
        name, code, properties = identity or self.identity()
        params = {key: jsonable(value) for key, value in properties.items()}
        return RecipeInfo(name, type(self).__module__, params, code)

    def __repr__(self) -> str:
        try:
            params = ", ".join(f"{k}={v!r}" for k, v in self.properties().items())
        except ExperimentDefinitionError:
            params = "?"
        return f"{type(self).__name__}({params})"


def _recipe_base(cls: type) -> type:
    return Function if issubclass(cls, Function) else Recipe


def child_sha(
    parent_sha: str, recipe: Recipe, identity: tuple[str, str, dict[str, Any]] | None = None
) -> str:
    """The id of the state ``recipe`` produces from the state ``parent_sha``.

    Args:
        parent_sha: The parent state's id.
        recipe: The recipe.
        identity: ``recipe.identity()``, if the caller has it already.

    Raises:
        HashingError: A property cannot be hashed; the message names the recipe and property.
    """
    name, code, properties = identity or recipe.identity()
    kind = type(recipe).__name__
    encoded = {
        key: encode(
            value,
            what=f"Recipe `{kind}` property `{key}`",
            fix=(
                f"Declare PROPERTIES without `{key}` (a name starting with `_` is never part "
                "of the identity), pass a plain value that describes it instead, or register "
                "an encoder with `dagger.hashing.register`."
            ),
            code=code_digest,
        )
        for key, value in properties.items()
    }
    return digest("child", parent_sha, name, code, encoded)


def _encode_recipe(recipe: Recipe) -> tuple[Any, ...]:
    return recipe.identity()


register(Recipe, _encode_recipe)


class Function:
    """A read-only analysis of a state, whose return value is recorded on that state.

    ``Function(evaluate)(promise)`` runs ``evaluate(state)`` during the next run and records the
    result under ``name`` (default: the function's name). The result is reused until the state
    or the function's code changes. Returns the promise it was applied to.

    Args:
        op: ``op(state) -> result``; it must not modify the state.
        name: The name of the result (default: ``op.__name__``).
    """

    def __init__(self, op: Any, name: str | None = None) -> None:
        if not callable(op):
            raise ExperimentDefinitionError(
                f"Function needs a callable taking the state; got a {type(op).__name__}.",
                value_type=type(op).__name__,
            )
        self.op = op
        default = getattr(op, "__name__", type(op).__name__)
        self.name = name or ("lambda" if default == "<lambda>" else default)

    def __call__(self, target: ExperimentStatePromise | ExperimentState) -> ExperimentStatePromise:
        from .promise import as_promise

        promise = as_promise(target, f"Function({self.name})")
        promise.experiment.add_function(promise, self)
        return promise

    def code_identity(self) -> str:
        """Identity of the analysis: its op's name and code (and partial arguments)."""
        op = self.op
        if isinstance(op, types.MethodType):
            op = op.__func__
        described: Any
        if isinstance(op, types.FunctionType | types.BuiltinFunctionType | functools.partial):
            described, code = op, function_fingerprint(op)
        else:  # a callable object: its class's code and its instance attributes
            described, code = type(op), function_fingerprint(op)
        return digest("function", described, code, what=f"Function `{self.name}`", code=code_digest)

    def __repr__(self) -> str:
        return f"Function({self.name})"


# Decorator style: ``@dagger.function`` turns an analysis into a Function.
function = Function
