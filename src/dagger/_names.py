"""Names: how classes are written down in stored files and found again, short ids, and how a
value is shown to a person (tables, drawings, messages)."""

from __future__ import annotations

import functools
import importlib
import os
import re
import types
from typing import Any

__all__ = ["SHORT_ID", "class_path", "display", "import_class", "short_id"]

#: How many hex digits of an id tables, logs and messages show.
SHORT_ID = 12


def class_path(cls: type) -> str:
    """``module:qualname`` of a class, the form records and experiment.json store."""
    return f"{cls.__module__}:{cls.__qualname__}"


def import_class(path: str) -> type:
    """Import a class from its :func:`class_path`.

    Raises:
        Exception: Whatever importing the module raises (ImportError, or any error the
            module's own code raises at import), AttributeError if the name is not there,
            TypeError if it is not a class.
    """
    module_name, _, qualname = path.partition(":")
    target: Any = importlib.import_module(module_name)
    for part in qualname.split("."):
        target = getattr(target, part)
    if not isinstance(target, type):
        raise TypeError(f"{path} is not a class")
    return target


def short_id(state_id: str | None) -> str:
    """The first :data:`SHORT_ID` hex digits of an id (``?`` for none)."""
    return state_id[:SHORT_ID] if state_id else "?"


_ADDRESS = re.compile(r" at 0x[0-9a-fA-F]+")


def display(value: Any) -> str:
    """How a value is shown in tables, drawings and messages: its repr, except that functions,
    classes and partials are shown by name (a lambda with its file and line), containers show
    their items the same way, and no memory address is ever shown (it changes every run).
    """
    if isinstance(value, functools.partial):
        arguments = [display(item) for item in value.args]
        arguments += [f"{key}={display(item)}" for key, item in value.keywords.items()]
        return f"partial({', '.join([display(value.func), *arguments])})"
    if isinstance(value, types.MethodType):
        return f"{display(value.__func__)} of {display(value.__self__)}"
    if isinstance(value, types.FunctionType | types.BuiltinFunctionType | type):
        qualname = str(getattr(value, "__qualname__", None) or getattr(value, "__name__", "?"))
        module = getattr(value, "__module__", None)
        name = f"{module}.{qualname}" if module and module != "builtins" else qualname
        code = getattr(value, "__code__", None)
        if "<lambda>" in qualname and code is not None:
            name += f" ({os.path.basename(code.co_filename)}:{code.co_firstlineno})"
        return name
    if type(value) in (list, tuple):
        items = [display(item) for item in value]
        if isinstance(value, list):
            return f"[{', '.join(items)}]"
        return f"({items[0]},)" if len(items) == 1 else f"({', '.join(items)})"
    if type(value) is dict:
        return "{" + ", ".join(f"{display(k)}: {display(v)}" for k, v in value.items()) + "}"
    return _ADDRESS.sub("", repr(value))
