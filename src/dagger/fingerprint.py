"""Code fingerprints: a recipe's identity follows its logic, not its comments.

A function's fingerprint hashes its normalised source (the syntax tree unparsed: comments,
docstrings and layout do not count), or its compiled code where no source can be read. A
class's fingerprint hashes the fingerprints of the code it adds below a dagger base class.

This module is pure (no I/O besides reading source files through :mod:`inspect`); its caches
are keyed by the function objects they describe.
"""

from __future__ import annotations

import ast
import functools
import hashlib
import inspect
import logging
import textwrap
import types
from typing import Any

from .hashing import qualified_name, set_function_fingerprinter

__all__ = ["class_fingerprint", "function_fingerprint"]

logger = logging.getLogger("dagger")


_FINGERPRINTS: dict[Any, str] = {}
_warned_no_source = False


def _strip_docstrings(tree: ast.AST) -> ast.AST:
    for node in ast.walk(tree):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef | ast.Module):
            body = node.body
            if (
                body
                and isinstance(body[0], ast.Expr)
                and isinstance(body[0].value, ast.Constant)
                and isinstance(body[0].value.value, str)
            ):
                node.body = body[1:] or [ast.Pass()]
    return tree


def _source_fingerprint(func: Any) -> str | None:
    try:
        source = inspect.getsource(func)
    except (OSError, TypeError):
        return None
    try:
        tree = ast.parse(textwrap.dedent(source))
    except SyntaxError:
        return None
    node: ast.AST = tree
    if func.__name__ == "<lambda>":
        lambdas = [found for found in ast.walk(tree) if isinstance(found, ast.Lambda)]
        if len(lambdas) != 1:
            return None
        node = lambdas[0]
    # ast.unparse gives one canonical text for a syntax tree (comments, layout and quoting
    # gone) and, unlike ast.dump, does not change when a Python release adds node fields.
    normalised = ast.unparse(_strip_docstrings(node))
    return hashlib.sha256(normalised.encode()).hexdigest()


def _code_parts(code: types.CodeType) -> tuple[Any, ...]:
    consts = tuple(
        _code_parts(const) if isinstance(const, types.CodeType) else repr(const)
        for const in code.co_consts
    )
    return (code.co_code, consts, code.co_names, code.co_varnames, code.co_freevars)


def _code_fingerprint(func: Any) -> str:
    global _warned_no_source
    if not _warned_no_source:
        _warned_no_source = True
        logger.warning(
            "dagger could not read the source of `%s` (defined in a REPL or by exec?); its "
            "compiled code stands in for it, so ids built from it may change with the Python "
            "version. Set VERSION on the class to pin them.",
            qualified_name(func),
        )
    return hashlib.sha256(repr(_code_parts(func.__code__)).encode()).hexdigest()


def _unwrap_callable(member: Any) -> list[Any]:
    """The plain functions behind a class member (empty if it holds no code)."""
    if isinstance(member, staticmethod | classmethod):
        member = member.__func__
    if isinstance(member, types.MethodType):
        member = member.__func__
    if isinstance(member, property):
        return [f for f in (member.fget, member.fset, member.fdel) if f is not None]
    if isinstance(member, functools.partial):
        return _unwrap_callable(member.func)
    if isinstance(member, types.FunctionType):
        return [inspect.unwrap(member)]
    return []


def function_fingerprint(func: Any) -> str:
    """Hash of a function's normalised source: docstrings, comments and layout do not count.

    Falls back to the compiled code (with one warning) when no source can be found.
    """
    functions = _unwrap_callable(func)
    if not functions:
        return hashlib.sha256(qualified_name(func).encode()).hexdigest()
    parts = []
    for function in functions:
        cached = _FINGERPRINTS.get(function)
        if cached is None:
            cached = _source_fingerprint(function) or _code_fingerprint(function)
            _FINGERPRINTS[function] = cached
        parts.append(cached)
    if len(parts) == 1:
        return parts[0]
    return hashlib.sha256("".join(parts).encode()).hexdigest()


def _static_member(cls: type, name: str) -> Any:
    for klass in cls.__mro__:
        if name in vars(klass):
            return vars(klass)[name]
    return None


# cls -> (snapshot of the class namespaces, fingerprint). The snapshot holds the member objects
# themselves, so a later monkeypatch (``Train.run = new_run``) is seen by identity.
_CLASS_FINGERPRINTS: dict[tuple[type, type, tuple[str, ...]], tuple[tuple[Any, ...], str]] = {}


def class_fingerprint(cls: type, base: type, always: tuple[str, ...] = ()) -> str:
    """Hash of the code a class adds below ``base``.

    Args:
        cls: The class (a Recipe or ExperimentState subclass).
        base: The dagger class it extends; its own methods (and those above it) do not count.
        always: Method names included wherever they come from, ``base`` too (``run`` for a
            recipe, so the seed's ``Recipe.run = MethodType(...)`` patching counts).
    """
    klasses = [k for k in reversed(cls.__mro__) if k is not object and not issubclass(base, k)]
    snapshot = (
        *(tuple(vars(klass).values()) for klass in klasses),
        tuple(_static_member(cls, name) for name in always),
    )
    key = (cls, base, always)
    cached = _CLASS_FINGERPRINTS.get(key)
    if cached is not None and _same_objects(cached[0], snapshot):
        return cached[1]
    members: dict[str, Any] = {}
    for klass in klasses:
        for name, member in vars(klass).items():
            if _unwrap_callable(member):
                members[name] = member
    for name in always:
        member = _static_member(cls, name)
        if member is not None:
            members[name] = member
    listing = sorted((name, function_fingerprint(member)) for name, member in members.items())
    fingerprint = hashlib.sha256(repr(listing).encode()).hexdigest()
    _CLASS_FINGERPRINTS[key] = (snapshot, fingerprint)
    return fingerprint


def _same_objects(old: tuple[Any, ...], new: tuple[Any, ...]) -> bool:
    return len(old) == len(new) and all(
        len(a) == len(b) and all(x is y for x, y in zip(a, b, strict=True))
        for a, b in zip(old, new, strict=True)
    )


set_function_fingerprinter(function_fingerprint)
