"""Recipe and Function: the transitions of the tree and the read-only analyses on its states.

A recipe's identity is its class's qualified name, its code (a fingerprint of the methods it
defines below :class:`Recipe`, ``run`` included wherever it comes from, or its ``VERSION``) and
the canonical values of its PROPERTIES (:mod:`dagger.identity`). Applying a recipe keeps a
snapshot of it, so changing the recipe object afterwards changes neither the id nor what runs.
"""

from __future__ import annotations

import copy
import functools
import logging
import weakref
from collections.abc import Callable, Mapping
from typing import Any, ClassVar

from ._names import display, import_class
from .errors import ExperimentDefinitionError
from .fingerprint import identity_check
from .hashing import register
from .identity import child_id, function_code_identity, recipe_code_identity
from .record import RecipeInfo, jsonable
from .state import ExperimentState

__all__ = [
    "Function",
    "Growable",
    "Recipe",
    "applied",
    "child_sha",
    "function",
    "rebuild_recipe",
]

logger = logging.getLogger("dagger")

Identity = tuple[str, str, dict[str, Any]]


class Growable:
    """A node the tree can grow from (a promise); recipes and functions are applied to it."""

    def add_child(self, recipe: Recipe) -> Any:
        """Define the child that ``recipe`` produces from this node."""
        raise NotImplementedError

    def add_function(self, function: Function) -> Any:
        """Run ``function`` on this node's state during the next run."""
        raise NotImplementedError


def _growable(target: Any, what: str) -> Growable:
    """The node to grow from: a promise, or a state of a restored experiment."""
    if isinstance(target, ExperimentState) and target.experiment_object is not None:
        target = target.to_promise()
    if isinstance(target, Growable):
        return target
    raise ExperimentDefinitionError(
        f"{what} was applied to a `{type(target).__name__}`. Apply recipes and functions to "
        "the promise returned by spawn_new_tree() or by another recipe, or to a state of a "
        "restored experiment.",
        value_type=type(target).__name__,
    )


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

    def __call__(self, parent: Any) -> Any:
        """Define the child of ``parent`` (a promise, or a restored state) that this recipe
        produces; nothing runs yet. Returns the child's promise."""
        if isinstance(parent, Growable):  # a promise: no message to write (100,000 calls)
            return parent.add_child(self)
        return _growable(parent, f"{type(self).__name__}(...)").add_child(self)

    def run(self, state: ExperimentState) -> ExperimentState:
        """Mutate ``state`` (a copy of the parent, or the parent itself) and return it."""
        raise NotImplementedError(
            f"{type(self).__name__}.run is not defined: subclass dagger.Recipe and implement "
            "run(self, state), returning the state."
        )

    # -- identity ------------------------------------------------------------------------------

    def property_names(self) -> list[str]:
        """The names of the attributes that make up the recipe's identity."""
        declared = type(self).PROPERTIES
        if declared is not None:
            return list(declared)
        return sorted([name for name in vars(self) if not name.startswith("_")])

    def properties(self) -> dict[str, Any]:
        """The values that make up the recipe's identity, by name.

        Raises:
            ExperimentDefinitionError: A declared property is not an attribute.
        """
        names = self.property_names()
        try:  # the common case in one comprehension (100,000 promises call this)
            return {name: getattr(self, name) for name in names}
        except AttributeError:
            pass  # find which one, for the message
        values = {}
        for name in names:
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
        """``version:<VERSION>`` or ``code:<fingerprint>`` of the recipe class."""
        return recipe_code_identity(cls, Function if issubclass(cls, Function) else Recipe)

    def identity(self) -> Identity:
        """``(qualified class name, code identity, property values)``."""
        return (type(self).__qualname__, type(self).code_identity(), self.properties())

    def info(self, identity: Identity | None = None) -> RecipeInfo:
        """The recipe as its states' records describe it (from ``identity`` if given)."""
        name, code, properties = identity or self.identity()
        params = {key: jsonable(value) for key, value in properties.items()}
        return RecipeInfo(name, type(self).__module__, params, code)

    def snapshot(self) -> Recipe:
        """An independent copy, taken when the recipe is applied: what will run.

        Falls back to a shallow copy (with a warning) for a recipe holding something that
        cannot be deep-copied.
        """
        plain = _plain_copy(self)
        if plain is not None:
            return plain
        try:
            return copy.deepcopy(self)
        except Exception as error:
            logger.warning(
                "Recipe %s cannot be deep-copied (%s: %s); a shallow copy is kept, so changing "
                "objects inside it after it was applied would change what runs.",
                type(self).__name__,
                type(error).__name__,
                error,
            )
            return copy.copy(self)

    def __repr__(self) -> str:
        try:
            params = ", ".join(f"{k}={display(v)}" for k, v in self.properties().items())
        except ExperimentDefinitionError:
            params = "?"
        return f"{type(self).__name__}({params})"


# Values a deep copy would share anyway (immutable, and holding nothing mutable).
_ATOMS = frozenset({type(None), bool, int, float, complex, str, bytes, range, type})
_IS_ATOM = _ATOMS.__contains__
_OBJECT_HOOKS = {
    name: getattr(object, name, None)
    for name in ("__new__", "__reduce_ex__", "__reduce__", "__getstate__")
}


def _copies_plainly(cls: type) -> bool:
    if hasattr(cls, "__slots__") or hasattr(cls, "__deepcopy__") or hasattr(cls, "__setstate__"):
        return False
    return all(getattr(cls, name, None) is hook for name, hook in _OBJECT_HOOKS.items())


def _plain_copy(recipe: Recipe) -> Recipe | None:
    """A copy of a recipe whose attributes are all immutable atoms (or tuples of them), made
    without ``copy.deepcopy``: for such a recipe the two are the same, and this is ten times
    faster (a tree of 100,000 promises makes 100,000 snapshots). None when it does not apply
    (a mutable attribute, ``__slots__``, or a class that customises copying or pickling).
    """
    # Asked each time, not cached per class: a copy hook added to the class later counts.
    # (The short path of applied(), whose cache a code-identity check keeps valid, is the one
    # that avoids this for 100,000 recipes.)
    namespace = getattr(recipe, "__dict__", None)
    if namespace is None or not _copies_plainly(type(recipe)):
        return None
    values = namespace.values()
    # every value an atom, checked at C speed; else one by one (tuples of atoms also copy)
    if not all(map(_IS_ATOM, map(type, values))):
        for value in values:
            kind = type(value)
            if kind not in _ATOMS and not (
                kind is tuple and all(type(item) in _ATOMS for item in value)
            ):
                return None
    copied = object.__new__(type(recipe))
    copied.__dict__.update(namespace)
    return copied


def applied(recipe: Recipe) -> tuple[Recipe, Identity]:
    """What applying ``recipe`` keeps: its snapshot and the snapshot's identity, the same as
    ``(snapshot := recipe.snapshot(), snapshot.identity())``.

    A tree of 100,000 promises applies 100,000 recipes, so the common case takes one pass over
    the recipe's attributes: a recipe whose class overrides none of ``snapshot``,
    ``identity``, ``properties``, ``property_names`` and ``code_identity``, pins no
    ``VERSION``, copies plainly (no ``__slots__``, copy or pickle hooks) and whose identity
    properties are all immutable atoms held in its ``__dict__``. Its class's code identity is
    the one worked out for the previous such recipe for as long as the fingerprint cache's
    check says that the code it was computed from is unchanged
    (:func:`dagger.fingerprint.identity_check`); anything else takes the general path.

    Raises:
        ExperimentDefinitionError: A declared property is not an attribute.
        HashingError: The recipe class's code cannot be fingerprinted.
    """
    cls = type(recipe)
    entry = _SHORT_PATH.get(id(cls))
    holds = False
    if entry is not None and entry[0]() is cls:
        try:
            holds = entry[1]()
        except Exception:  # a slot that cannot be read as it was: the general path decides
            holds = False
        namespace = recipe.__dict__
        if holds and all(map(_IS_ATOM, map(type, namespace.values()))):
            declared = cls.PROPERTIES
            # without PROPERTIES: the public attributes, sorted (as property_names says)
            names = _public_names(tuple(namespace)) if declared is None else declared
            try:
                properties = {name: namespace[name] for name in names}
            except KeyError:  # a class attribute or property: the general path reads it
                pass
            else:
                copied = object.__new__(cls)
                copied.__dict__.update(namespace)
                return copied, (cls.__qualname__, entry[2], properties)
    snapshot = recipe.snapshot()
    identity = snapshot.identity()
    # (Re)learn the class only when its entry is missing or its check failed: a class whose
    # entry holds but whose recipe had a non-atom value took the general path just this once.
    if not holds and _short_path_applies(cls):
        check = identity_check(cls, Recipe)
        if check is not None:
            key = id(cls)
            ref = weakref.ref(cls, lambda ref: _forget_short_path(key, ref))
            _SHORT_PATH[key] = (ref, check, identity[1])
    return snapshot, identity


def _public_names(names: tuple[str, ...]) -> tuple[str, ...]:
    """Those of ``names`` not starting with ``_``, sorted (once per distinct tuple: a sweep's
    recipes of one class have the same attribute names)."""
    public = _PUBLIC_NAMES.get(names)
    if public is None:
        if len(_PUBLIC_NAMES) >= 4096:
            _PUBLIC_NAMES.clear()
        public = _PUBLIC_NAMES[names] = tuple(
            sorted(name for name in names if not name.startswith("_"))
        )
    return public


# attribute names -> the public ones, sorted: a pure function of immutable keys, never stale
_PUBLIC_NAMES: dict[tuple[str, ...], tuple[str, ...]] = {}


# Recipe classes that take applied()'s one pass: id(class) -> (weak reference to the class,
# the fingerprint cache's check of its code identity, that code identity). Keyed by id with a
# weak reference: the cache never keeps a class alive, and an entry is dropped with its class
# (a plain dict keyed by id is looked up at C speed; a WeakKeyDictionary made a weak
# reference per lookup, per promise).
_SHORT_PATH: dict[int, tuple[weakref.ref[type], Callable[[], bool], str]] = {}


def _forget_short_path(key: int, ref: weakref.ref[type]) -> None:
    entry = _SHORT_PATH.get(key)
    if entry is not None and entry[0] is ref:
        del _SHORT_PATH[key]


def _short_path_applies(cls: type) -> bool:
    """Whether applying recipes of ``cls`` can skip the general path (see :func:`applied`).
    The class's namespace, its bases and Recipe's own are part of the check that keeps the
    entry valid: an override added later fails the check, and the general path decides."""
    return (
        not issubclass(cls, Function)
        and getattr(cls, "VERSION", None) is None
        and all(
            getattr(cls, name) is getattr(Recipe, name)
            for name in ("snapshot", "identity", "properties", "property_names")
        )
        # a classmethod: its function is what an override would replace
        and getattr(getattr(cls, "code_identity", None), "__func__", None)
        is getattr(Recipe.code_identity, "__func__", None)
        and _copies_plainly(cls)
    )


def child_sha(parent_sha: str, recipe: Recipe, identity: Identity | None = None) -> str:
    """The id of the state ``recipe`` produces from the state ``parent_sha``.

    Args:
        parent_sha: The parent state's id.
        recipe: The recipe.
        identity: ``recipe.identity()``, if the caller has it already.

    Raises:
        HashingError: A property cannot be hashed; the message names the recipe and property.
    """
    name, code, properties = identity or recipe.identity()
    return child_id(parent_sha, name, code, properties, kind=type(recipe).__name__)


def _encode_recipe(recipe: Recipe) -> Identity:
    return recipe.identity()


register(Recipe, _encode_recipe)


class Function:
    """A read-only analysis of a state, whose return value is recorded on that state.

    ``Function(evaluate)(promise)`` runs ``evaluate(state)`` during the next run and records the
    result under ``name`` (default: the function's name). The result is reused until the state
    or the function's code changes. Returns the promise it was applied to.

    An anonymous analysis (a lambda, a ``functools.partial``, a callable object) is named after
    what it is and a digest of its code identity: ``lambda_3fa2c1d4``, ``scaled_9b0e77aa``,
    ``Scale_51c2d0e8``. The name is the same in every process that defines the same code, so
    several lambdas on one state give several results, and a rerun finds them stored.

    Args:
        op: ``op(state) -> result``; it must not modify the state.
        name: The name of the result (default: ``op.__name__``, or the automatic name above).

    Raises:
        ExperimentDefinitionError: ``op`` is not callable.
        HashingError: ``op`` is a callable object with an attribute that cannot be hashed
            (pass ``name=`` and a plain function instead, or register an encoder).
    """

    def __init__(self, op: Any, name: str | None = None) -> None:
        if not callable(op):
            raise ExperimentDefinitionError(
                f"Function needs a callable taking the state; got a {type(op).__name__}.",
                value_type=type(op).__name__,
            )
        self.op = op
        base, anonymous = _base_name(op)
        self.name = name or base
        if name is None and anonymous:
            # code_identity reads self.name (for its messages): set the base first.
            self.name = f"{base}_{self.code_identity()[:8]}"

    def __call__(self, target: Any) -> Any:
        """Run this analysis on ``target``'s state (a promise or a restored state) during the
        next run. Returns the promise it was applied to."""
        promise = _growable(target, f"Function({self.name})")
        promise.add_function(self)
        return promise

    def code_identity(self) -> str:
        """Identity of the analysis: its op's name and code (and partial arguments)."""
        return function_code_identity(self.op, self.name)

    def __repr__(self) -> str:
        return f"Function({self.name})"


def _base_name(op: Any) -> tuple[str, bool]:
    """What to call a Function's result, and whether that name alone is ambiguous (a lambda,
    a partial or a callable object: many different analyses share it)."""
    if isinstance(op, functools.partial):
        inner = op.func
        while isinstance(inner, functools.partial):
            inner = inner.func
        return _base_name(inner)[0], True
    name = getattr(op, "__name__", None)
    if not isinstance(name, str):
        return type(op).__name__, True
    if name == "<lambda>":
        return "lambda", True
    return name, False


# Decorator style: ``@dagger.function`` turns an analysis into a Function.
function = Function


# -- rebuilding a recipe from its record -----------------------------------------------------


def rebuild_recipe(
    info: RecipeInfo,
    parent_id: str,
    state_id: str,
    *,
    fix: str = "",
    changed_fix: str = "",
) -> tuple[Recipe | None, str]:
    """The recipe a record describes, rebuilt so that it gives back the state's id.

    Imports ``info.module:info.name``, checks that its code identity today is the recorded
    one, then tries ``cls(**params)``, then ``cls.__new__(cls)`` with the recorded parameters
    set as attributes; accepts one only if ``child_sha(parent_id, recipe) == state_id`` (same
    class, code and parameters). What an audit runs, and what a run recomputes a pruned or
    damaged state of a restored experiment with.

    Args:
        info: The record's description of the recipe (class, module, parameters, code).
        parent_id: The recorded parent's id.
        state_id: The state's id.
        fix: What the caller advises when the recipe cannot be imported or rebuilt, appended
            to the reason.
        changed_fix: What it advises when the recipe's code changed since, appended likewise.

    Returns:
        ``(recipe, "")``, or ``(None, why it cannot be rebuilt)``.
    """
    path = f"{info.module}:{info.name}"
    fix = f" {fix}" if fix else ""
    changed_fix = f" {changed_fix}" if changed_fix else ""
    try:
        cls = import_class(path)
    except Exception as error:
        where = (
            "a script (`__main__`), which this process is not"
            if info.module == "__main__"
            else f"module `{info.module}`, which cannot be imported here"
        )
        return None, (
            f"its recipe `{info.name}` was defined in {where} ({type(error).__name__}: "
            f"{error}).{fix}"
        )
    if not (isinstance(cls, type) and issubclass(cls, Recipe)):
        return None, f"`{path}` is not a dagger.Recipe here.{fix}"
    try:
        code = cls.code_identity()
    except Exception as error:
        return None, f"the code identity of `{path}` cannot be computed ({error}).{fix}"
    if info.code and code != info.code:
        return None, (
            f"the code of `{info.name}` changed since the state was computed (module "
            f"`{info.module}`; recorded {info.code[:20]}, now {code[:20]}): today's recipe "
            f"makes another state.{changed_fix}"
        )
    tried: list[str] = []
    for build in (_by_init, _by_attributes):
        try:
            recipe = build(cls, info.params)
            if child_sha(parent_id, recipe) == state_id:
                return recipe, ""
            tried.append(f"{build.__doc__}: another id")
        except Exception as error:
            tried.append(f"{build.__doc__}: {type(error).__name__}: {error}")
    return None, (
        f"its recipe `{info.name}` cannot be rebuilt from the record's parameters "
        f"({'; '.join(tried)}); the record keeps a JSON view of each parameter, which loses "
        f"what is not a plain JSON value.{fix}"
    )


def _by_init(cls: type[Recipe], params: Mapping[str, Any]) -> Recipe:
    """cls(**params)"""
    return cls(**params)


def _by_attributes(cls: type[Recipe], params: Mapping[str, Any]) -> Recipe:
    """parameters set as attributes"""
    recipe = cls.__new__(cls)
    for name, value in params.items():
        setattr(recipe, name, value)
    return recipe
