"""Names: how classes are written down in stored files and found again, and short ids."""

from __future__ import annotations

import importlib
from typing import Any

__all__ = ["SHORT_ID", "class_path", "import_class", "short_id"]

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
