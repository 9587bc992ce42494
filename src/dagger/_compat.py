"""Call shims for the seed's customisation style (methods patched onto classes).

The seed README customises dagger with ``ExperimentState.initialize_state = MethodType(f,
ExperimentState)``; :func:`call_method` makes such a method receive the instance.
"""

from __future__ import annotations

import inspect
import types
from typing import Any

__all__ = ["call_method"]


def call_method(obj: Any, name: str, /, *args: Any, **kwargs: Any) -> Any:
    """Call ``obj.name(...)``, treating a method bound to a class as meant for the instance.

    The seed README customises dagger with ``ExperimentState.initialize_state =
    MethodType(f, ExperimentState)``, which binds ``f`` to the class: called normally, ``f``
    would set attributes on the class and nothing would be stored with the state. Calling
    ``f`` with the instance does what that code means.

    ``obj`` and ``name`` are positional-only, so any keyword of the user's (``name=``,
    ``obj=``) reaches the method.
    """
    method = getattr(obj, name)
    if (
        isinstance(method, types.MethodType)
        and isinstance(method.__self__, type)
        and isinstance(obj, method.__self__)
        and not isinstance(inspect.getattr_static(method.__self__, name), classmethod)
    ):
        return method.__func__(obj, *args, **kwargs)
    return method(*args, **kwargs)
