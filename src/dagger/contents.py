"""The parts of a state's content, by attribute path: what comparisons and digests look at.

:func:`iter_parts` walks a state attribute by attribute (the attributes it pickles, through
``__getstate__``, so dagger's own bookkeeping is left out) and each value recursively, and
yields one :class:`Part` per leaf, in a deterministic order, each named by a Python-like path:

======================================  =================================================
value                                   parts
======================================  =================================================
``dict`` (any ``Mapping``)              a ``node``, then each entry at ``path[key!r]``
``list``, ``tuple``, named tuples       a ``node``, then each item at ``path[i]``; a
                                        sequence of only floats, only ints (within int64)
                                        or only bools is one ``array`` part instead
dataclass instances, plain objects      a ``node``, then each field or attribute at
                                        ``path.name``
``torch.nn.Module``                     a ``node``, each ``state_dict()`` entry at
                                        ``path.<key>`` (``model.layer1.0.bn1.running_mean``)
                                        and the train/eval mode at ``path.training``
``torch.optim.Optimizer``               a ``node``, its ``state_dict()`` at
                                        ``path.state[<param index>].<key>`` and
                                        ``path.param_groups[<i>].<key>``
other objects with ``state_dict()``     a ``node``, then each entry at ``path.<key>``
(LR schedulers, ``GradScaler``)
random generators (``torch``,           their state: a ``tensor`` part or a walked value
``numpy``, ``random.Random``)
``torch.Tensor``                        one ``tensor`` part (detached, not copied)
``numpy.ndarray`` (not ``object``)      one ``array`` part (not copied)
``int``, ``float``, ``complex``,        one ``number`` part
numpy numeric scalars
anything else                           one ``encoded`` part holding its canonical
                                        encoding (:func:`dagger.hashing.encode`), or, when
                                        it has none and no attributes to walk, one
                                        ``opaque`` part holding the value itself
======================================  =================================================

A module's attributes outside its ``state_dict`` (hooks, plain Python attributes) are not parts:
``state_dict`` is what PyTorch itself saves and loads. A value met again inside itself (a
reference cycle) becomes an ``encoded`` part naming the path where it was first met.

This module imports neither numpy nor torch: it recognises their types only when the user's
code has imported them already.
"""

from __future__ import annotations

import dataclasses
import math
import random
import sys
import types
from collections.abc import Iterable, Iterator, Mapping
from typing import Any, Literal

from .errors import HashingError, InvalidArgumentError
from .hashing import by_name, qualified_name
from .hashing import encode as _encode_with

__all__ = ["Part", "PartKind", "encode", "flat_pieces", "iter_parts", "state_attributes"]


def encode(value: Any) -> bytes:
    """The canonical encoding of a value for comparing contents: functions, classes and
    modules by their name (two states holding the same function compare equal)."""
    return _encode_with(value, code=by_name)


PartKind = Literal["node", "tensor", "array", "number", "encoded", "opaque"]

# int64 bounds: a list of Python ints inside them is exactly an int64 array.
_INT64_MIN, _INT64_MAX = -(2**63), 2**63 - 1


@dataclasses.dataclass(frozen=True, slots=True)
class Part:
    """One leaf (or one container's marker) of a state's content.

    Attributes:
        path: Where it sits, Python-like: ``model.fc.weight``, ``history[3]``,
            ``metrics['accuracy']``, ``optimizer.state[0].momentum_buffer``; ``""`` is the
            state itself.
        kind: ``node`` (a container or walked object: only its type counts; its content
            follows as further parts), ``tensor`` (``value`` is a detached ``torch.Tensor``),
            ``array`` (a ``numpy.ndarray``), ``number`` (``int``, ``float``, ``complex`` or a
            numpy number), ``encoded`` (``encoded`` holds the canonical bytes of ``value``),
            ``opaque`` (``value`` has no canonical encoding: only ``==`` can compare it).
        type_name: The qualified name of the value's type (``builtins.list``,
            ``torch.Tensor``, ``torchvision.models.resnet.ResNet``).
        value: The value itself (None for a ``node``).
        encoded: The canonical encoding, for ``encoded`` parts only.
    """

    path: str
    kind: PartKind
    type_name: str
    value: Any = None
    encoded: bytes | None = None


def state_attributes(state: Any) -> dict[str, Any]:
    """The attributes of ``state`` that are its content, by name.

    A mapping is taken as the attributes themselves. Otherwise what the object pickles
    (``__getstate__``; for a :class:`dagger.ExperimentState` that leaves out the id, tags,
    results and other bookkeeping dagger keeps in the record), falling back to ``vars()``.

    Raises:
        InvalidArgumentError: ``state`` is neither a mapping nor an object with attributes.
    """
    if isinstance(state, Mapping):
        return dict(state)
    getstate = getattr(state, "__getstate__", None)
    if callable(getstate):
        try:
            got = getstate()
        except Exception:
            # Objects that refuse to be pickled (open files, iterators over worker
            # processes) still have attributes to look at.
            got = None
        if isinstance(got, dict):
            return dict(got)
        # object.__getstate__ of a class with __slots__ returns (dict or None, slots dict).
        if isinstance(got, tuple) and len(got) == 2 and isinstance(got[1], dict):
            return {**(got[0] or {}), **got[1]}
    if hasattr(state, "__dict__"):
        return dict(vars(state))
    type_name = qualified_name(type(state)).removeprefix("builtins.")
    raise InvalidArgumentError(
        f"Expected a state (an object with attributes) or a mapping of attribute names to "
        f"values, got a `{type_name}`. Pass the loaded state itself, or a dict of its "
        "attributes.",
        value_type=qualified_name(type(state)),
    )


def iter_parts(state: Any, *, exclude: Iterable[str] = ()) -> Iterator[Part]:
    """Every part of ``state``'s content, in a deterministic order (see the module docstring).

    Nothing large is copied: tensors and arrays are yielded as they are (tensors detached).

    Args:
        state: A loaded state, any object with attributes, or a mapping of names to values.
        exclude: Top-level attribute names to leave out.

    Raises:
        InvalidArgumentError: ``state`` has no attributes to walk.
    """
    attributes = state_attributes(state)
    excluded = set(exclude)
    yield Part("", "node", qualified_name(type(state)))
    walker = _Walker()
    for name, value in attributes.items():
        if name not in excluded:
            yield from walker.walk(value, str(name))


class _Walker:
    """Walks one value; remembers the containers on the current path to stop at cycles."""

    def __init__(self) -> None:
        self._active: dict[int, str] = {}

    def walk(self, value: Any, path: str) -> Iterator[Part]:
        kind = type(value)
        if kind is int or kind is float or kind is complex:
            yield Part(path, "number", qualified_name(kind), value)
            return
        if value is None or kind is bool or kind is str or kind is bytes:
            yield Part(path, "encoded", qualified_name(kind), value, encode(value))
            return
        special = self._library_value(value, path)
        if special is not None:
            yield from special
            return
        if isinstance(value, types.MethodType):
            # A bound method (a hook) is its function: encoding its object would walk the
            # state again, and `==` would compare the objects by identity.
            name = ("method", qualified_name(value.__func__))
            yield Part(path, "encoded", "builtins.method", value, encode(name))
            return
        if id(value) in self._active:
            marker = ("reference cycle", self._active[id(value)])
            yield Part(path, "encoded", qualified_name(kind), marker, encode(marker))
            return
        self._active[id(value)] = path
        try:
            yield from self._structured(value, path)
        finally:
            del self._active[id(value)]

    def _structured(self, value: Any, path: str) -> Iterator[Part]:
        kind = type(value)
        type_name = qualified_name(kind)
        if isinstance(value, Mapping):
            yield Part(path, "node", type_name)
            for key, item in value.items():
                yield from self.walk(item, f"{path}[{key!r}]")
            return
        if isinstance(value, list | tuple):
            numeric = _numeric_array(value)
            if numeric is not None:
                yield Part(path, "array", type_name, numeric)
                return
            yield Part(path, "node", type_name)
            for index, item in enumerate(value):
                yield from self.walk(item, f"{path}[{index}]")
            return
        if dataclasses.is_dataclass(value) and not isinstance(value, type):
            yield Part(path, "node", type_name)
            for field in dataclasses.fields(value):
                yield from self.walk(getattr(value, field.name), f"{path}.{field.name}")
            return
        if isinstance(value, random.Random):
            yield Part(path, "node", type_name)
            yield from self.walk(value.getstate(), f"{path}.state")
            return
        try:
            encoded = encode(value)
        except HashingError:
            pass
        else:
            yield Part(path, "encoded", type_name, value, encoded)
            return
        walked = self._state_dict_parts(value, path, type_name)
        if walked is not None:
            yield from walked
            return
        try:
            attributes = state_attributes(value)
        except InvalidArgumentError:
            yield Part(path, "opaque", type_name, value)
            return
        if not attributes and kind.__eq__ is not object.__eq__:
            # Nothing to walk, but the type says how its values compare.
            yield Part(path, "opaque", type_name, value)
            return
        yield Part(path, "node", type_name)
        for name, item in attributes.items():
            yield from self.walk(item, f"{path}.{name}")

    def _state_dict_parts(self, value: Any, path: str, type_name: str) -> Iterator[Part] | None:
        state_dict = getattr(value, "state_dict", None)
        if isinstance(value, type) or not callable(state_dict):
            return None
        try:
            content = state_dict()
        except Exception:
            # A state_dict that needs arguments or fails is no description of the value:
            # its attributes are walked instead.
            return None
        if not isinstance(content, Mapping):
            return None
        return self._entries(content, path, type_name)

    def _entries(self, content: Mapping[Any, Any], path: str, type_name: str) -> Iterator[Part]:
        yield Part(path, "node", type_name)
        for key, item in content.items():
            yield from self.walk(item, f"{path}.{key}")

    def _library_value(self, value: Any, path: str) -> Iterator[Part] | None:
        """Parts of a torch or numpy value, or None when it is neither."""
        torch = sys.modules.get("torch")
        if torch is not None:
            if isinstance(value, torch.Tensor):
                return iter([Part(path, "tensor", qualified_name(type(value)), value.detach())])
            if isinstance(value, torch.nn.Module):
                return self._module_parts(value, path)
            if isinstance(value, torch.optim.Optimizer):
                return self._optimizer_parts(value, path)
            if isinstance(value, torch.Generator):
                return iter([Part(path, "tensor", "torch.Generator", value.get_state())])
        numpy = sys.modules.get("numpy")
        if numpy is not None:
            if isinstance(value, numpy.ndarray):
                type_name = qualified_name(type(value))
                if isinstance(value, numpy.ma.MaskedArray):
                    # Its values are data and mask together; either alone would miss changes.
                    masked = {"data": value.data, "mask": numpy.ma.getmaskarray(value)}
                    return self._entries(masked, path, type_name)
                if value.dtype.hasobject:
                    return self._object_array_parts(value, path, type_name)
                # Subclasses (np.matrix, memmap) compare and hash by their values as arrays.
                plain = value if type(value) is numpy.ndarray else value.view(numpy.ndarray)
                return iter([Part(path, "array", type_name, plain)])
            if isinstance(value, numpy.number):
                return iter([Part(path, "number", qualified_name(type(value)), value)])
            if isinstance(value, numpy.random.Generator):
                return self._entries(
                    {"bit_generator": value.bit_generator.state}, path, "numpy.random.Generator"
                )
            if isinstance(value, numpy.random.RandomState):
                return self._entries(
                    {"state": value.get_state(legacy=False)}, path, "numpy.random.RandomState"
                )
        return None

    def _object_array_parts(self, value: Any, path: str, type_name: str) -> Iterator[Part]:
        yield Part(path, "node", f"{type_name}[object]")
        yield from self.walk(list(value.shape), f"{path}.shape")
        for index, item in enumerate(value.reshape(-1).tolist()):
            yield from self.walk(item, f"{path}.flat[{index}]")

    def _module_parts(self, module: Any, path: str) -> Iterator[Part]:
        yield Part(path, "node", qualified_name(type(module)))
        for key, item in module.state_dict(keep_vars=False).items():
            yield from self.walk(item, f"{path}.{key}")
        # The mode changes what a forward pass does (dropout, batch-norm statistics) but is not
        # in the state_dict. True or False when every submodule agrees, else the names of the
        # submodules in training mode ("" is the module itself).
        modes = [(name, sub.training) for name, sub in module.named_modules()]
        training: bool | tuple[str, ...]
        if all(flag for _, flag in modes):
            training = True
        elif not any(flag for _, flag in modes):
            training = False
        else:
            training = tuple(name for name, flag in modes if flag)
        yield Part(f"{path}.training", "encoded", "training mode", training, encode(training))

    def _optimizer_parts(self, optimizer: Any, path: str) -> Iterator[Part]:
        yield Part(path, "node", qualified_name(type(optimizer)))
        content = optimizer.state_dict()
        for key, item in content.items():
            if key == "state" and isinstance(item, Mapping):
                for index, per_parameter in item.items():
                    for name, value in per_parameter.items():
                        yield from self.walk(value, f"{path}.state[{index}].{name}")
            elif key == "param_groups" and isinstance(item, list):
                for index, group in enumerate(item):
                    for name, value in group.items():
                        yield from self.walk(value, f"{path}.param_groups[{index}].{name}")
            else:
                yield from self.walk(item, f"{path}.{key}")


def _numeric_array(items: list[Any] | tuple[Any, ...]) -> Any:
    """A numpy array of a sequence of only floats, ints in int64 or bools; None otherwise."""
    if not items:
        return None
    first = type(items[0])
    if first not in (float, int, bool) or any(type(item) is not first for item in items):
        return None
    if first is int and not all(_INT64_MIN <= item <= _INT64_MAX for item in items):
        return None
    import numpy

    dtype = {float: numpy.float64, int: numpy.int64, bool: numpy.bool_}[first]
    return numpy.asarray(items, dtype=dtype)


def flat_pieces(values: Any, max_elements: int) -> Iterator[Any]:
    """1-D pieces of a tensor or array, in C order, each at most ``max_elements`` long (or
    one row of the last dimension, whichever is longer).

    The cuts depend only on the shape, so two values of one shape are cut alike. A piece of a
    contiguous value is a view; a piece of a strided one is a copy of that piece only, so a
    large value is never copied whole.

    Args:
        values: A ``torch.Tensor`` (strided) or a ``numpy.ndarray``.
        max_elements: The most elements a piece should hold (>= 1).
    """
    if values.ndim == 0:
        yield values.reshape(1)
        return
    rows = values.shape[0]
    total = math.prod(values.shape)
    if total == 0:
        return
    per_row = total // rows
    if per_row > max_elements and values.ndim > 1:
        for row in range(rows):
            yield from flat_pieces(values[row], max_elements)
        return
    step = max(1, max_elements // per_row)
    for start in range(0, rows, step):
        yield values[start : start + step].reshape(-1)
