"""Identity: the ids of roots and children, and the code identity of the classes behind them.

A state's id is a SHA-256 of how it was produced (DESIGN.md section 3):

    root   digest("root", state class qualname, code identity, {argument: encoding})
    child  digest("child", parent id, recipe qualname, code identity, {property: encoding})

where an encoding is :func:`dagger.hashing.encode` of the value and a code identity is
``version:<VERSION>`` when the class pins one, else ``code:<fingerprint>`` of its code
(:mod:`dagger.fingerprint`). The inputs are classes and values; nothing here touches a store.
"""

from __future__ import annotations

import functools
import hashlib
import types
from collections.abc import Mapping
from typing import Any

from .errors import HashingError
from .fingerprint import class_fingerprint, code_digest, code_identity, function_fingerprint
from .hashing import digest, encode, encode_encodings, tuple_start

__all__ = [
    "child_id",
    "function_code_identity",
    "recipe_code_identity",
    "root_id",
    "state_code_identity",
]


def state_code_identity(state_class: type, base: type) -> str:
    """``version:<VERSION>`` if the state class pins one, else a fingerprint of the code it
    defines below ``base`` (:class:`dagger.ExperimentState`): ``initialize_state`` wherever it
    comes from (defined, inherited or patched) and everything that code reads
    (:func:`dagger.fingerprint.code_identity`)."""
    version = getattr(state_class, "VERSION", None)
    if version is not None:
        return f"version:{version}"
    return "code:" + class_fingerprint(state_class, base)


def recipe_code_identity(recipe_class: type, base: type) -> str:
    """``version:<VERSION>`` if the recipe class pins one, else a fingerprint of the code it
    defines below ``base`` (:class:`dagger.Recipe` or :class:`dagger.Function`), with ``run``
    counted wherever it comes from (the seed patches ``Recipe.run`` itself)."""
    version = getattr(recipe_class, "VERSION", None)
    if version is not None:
        return f"version:{version}"
    # class_fingerprint(recipe_class, base), one call shorter: this runs once per promise
    return "code:" + code_identity(recipe_class, base).fingerprint


def function_code_identity(op: Any, name: str) -> str:
    """Identity of a Function's analysis: its callable's name and code (partial arguments
    included); for a callable object, its class, the code of its ``__call__`` and its public
    attributes (``Scale(7)`` and ``Scale(11)`` are different analyses); for a bound method,
    the method's code and the public attributes of the object it is bound to.

    Raises:
        HashingError: An attribute of a callable object cannot be hashed.
    """
    bound: dict[str, Any] = {}
    if isinstance(op, types.MethodType):
        if not isinstance(op.__self__, type):
            bound = _public_attributes(op.__self__)
        op = op.__func__
    described: Any
    if isinstance(op, types.FunctionType | types.BuiltinFunctionType | functools.partial):
        described, code = op, function_fingerprint(op)
    else:  # a callable object: its class's code and its instance attributes
        described, code = type(op), function_fingerprint(op)
    if bound:
        return digest(
            "function", described, code, bound, what=f"Function `{name}`", code=code_digest
        )
    return digest("function", described, code, what=f"Function `{name}`", code=code_digest)


def _public_attributes(obj: Any) -> dict[str, Any]:
    """The public instance attributes of ``obj`` (as for a recipe without PROPERTIES)."""
    try:
        attributes = vars(obj)
    except TypeError:  # no __dict__ (slots, builtins)
        return {}
    return {key: value for key, value in attributes.items() if not key.startswith("_")}


def root_id(state_class: type, base: type, identity_arguments: Mapping[str, Any]) -> str:
    """The id of the root spawned from these arguments.

    Args:
        state_class: The experiment's state class.
        base: :class:`dagger.ExperimentState` (its code does not count).
        identity_arguments: The ``spawn_new_tree`` arguments that are part of the identity
            (all but the state class's NONHASHED_ATTRIBUTES).

    Raises:
        HashingError: An argument cannot be hashed; the message names it and the fix.
    """
    name = state_class.__name__
    encoded = {
        key: encode(
            value,
            what=f"spawn_new_tree() argument `{key}` (of {name})",
            fix=(
                f"List `{key}` in {name}.NONHASHED_ATTRIBUTES (stored, not part of the "
                "identity), pass a plain value that describes it instead, or register an "
                "encoder with `dagger.hashing.register`."
            ),
            code=code_digest,
        )
        for key, value in identity_arguments.items()
    }
    return digest(
        "root",
        state_class.__qualname__,
        state_code_identity(state_class, base),
        encoded,
        code=code_digest,
    )


def child_id(
    parent_id: str,
    recipe_name: str,
    code_identity: str,
    properties: Mapping[str, Any],
    *,
    kind: str | None = None,
) -> str:
    """The id of the state a recipe produces from the state ``parent_id``.

    Args:
        parent_id: The parent's id.
        recipe_name: The recipe class's qualified name.
        code_identity: Its code identity (:func:`recipe_code_identity`).
        properties: Its identity properties, by name.
        kind: How to name the recipe in an error (default: ``recipe_name``).

    Raises:
        HashingError: A property cannot be hashed; the message names the recipe and property.
    """
    try:
        # The error's sentences are written only when one is raised: a tree of 100,000
        # promises would otherwise format 200,000 of them for nothing.
        encoded = encode_encodings(properties, code=code_digest)
    except HashingError:
        who = kind or recipe_name.rsplit(".", 1)[-1]
        for key, value in properties.items():
            encode(
                value,
                what=f"Recipe `{who}` property `{key}`",
                fix=(
                    f"Declare PROPERTIES without `{key}` (a name starting with `_` is never "
                    "part of the identity), pass a plain value that describes it instead, or "
                    "register an encoder with `dagger.hashing.register`."
                ),
                code=code_digest,
            )
        raise
    # digest("child", parent_id, recipe_name, code_identity, encoded), with the hash of the
    # tuple's first four items kept for the next sibling (they share it).
    shared = (parent_id, recipe_name, code_identity)
    start = _CHILD_STARTS.get(shared)
    if start is None:
        if len(_CHILD_STARTS) >= _MAX_CHILD_STARTS:
            _CHILD_STARTS.clear()
        start = _CHILD_STARTS[shared] = hashlib.sha256(
            tuple_start(5, "child", parent_id, recipe_name, code_identity)
        )
    hasher = start.copy()
    hasher.update(encoded)
    return hasher.hexdigest()


# (parent id, recipe name, code identity) -> SHA-256 fed with the start of a child's id tuple.
# The keys are strings and the values their pure function: an entry can never be stale, and
# nothing of the user's is kept alive. Bounded: cleared when full (a rebuild costs 1 us).
_CHILD_STARTS: dict[tuple[str, str, str], Any] = {}
_MAX_CHILD_STARTS = 4096
