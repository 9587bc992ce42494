"""Canonical, type-tagged encoding of values, and the hashes built from it.

This module is pure: no I/O, no global state beyond caches and the encoder registry.

Every value is written as a one-byte type tag followed by its content; variable-length content
is length-prefixed. So ``1``, ``1.0``, ``"1"`` and ``True`` encode differently, floats are exact
(``1e-9`` and ``2e-9`` differ), dicts and sets do not depend on insertion order, and the result
does not depend on ``PYTHONHASHSEED``, the process or the machine.

Supported: None, bool, int, float, complex, str, bytes, bytearray, list, tuple, named tuples,
dict, set, frozenset, range, slice, pathlib paths, enums, dataclasses, numpy arrays, scalars and
dtypes, torch tensors, dtypes and devices, ``functools.partial``, functions, methods, classes,
modules, and Recipe instances (through :func:`register`). Anything else raises
:class:`~dagger.errors.HashingError`; there is no silent pickle fallback, because a pickle is not
canonical and would silently change identities.

Extend it with :func:`register`::

    dagger.hashing.register(MyConfig, lambda config: config.to_dict())
"""

from __future__ import annotations

import dataclasses
import enum
import functools
import hashlib
import logging
import math
import pathlib
import struct
import sys
import types
from collections.abc import Callable
from typing import Any

from .errors import HashingError

__all__ = [
    "digest",
    "encode",
    "qualified_name",
    "register",
    "set_function_fingerprinter",
]

logger = logging.getLogger("dagger")

Encoder = Callable[[Any], Any]

# User and library encoders, by type; looked up along the value's MRO.
_REGISTRY: dict[type, Encoder] = {}


def register(cls: type, encoder: Encoder) -> None:
    """Teach dagger to hash instances of ``cls``.

    Args:
        cls: The type (subclasses are covered too, unless they have their own encoder).
        encoder: Maps an instance to a value dagger can already encode (a tuple, a dict of
            plain values, ...). The type's qualified name is mixed in, so two types whose
            encoders return equal values still hash differently.
    """
    _REGISTRY[cls] = encoder


class _Unencodable(Exception):
    """Internal: carries the failing value and where it sits inside the top-level value."""

    def __init__(self, value: Any) -> None:
        super().__init__(value)
        self.value = value
        self.path: list[str] = []


def _length(buf: bytearray, n: int) -> None:
    buf += struct.pack(">Q", n)


def _text(buf: bytearray, s: str) -> None:
    raw = s.encode("utf-8", "surrogatepass")
    _length(buf, len(raw))
    buf += raw


def _string(buf: bytearray, value: str) -> None:
    buf += b"s"
    _text(buf, value)


def _int(buf: bytearray, value: int) -> None:
    buf += b"i"
    _text(buf, str(int(value)))


def _float(buf: bytearray, value: float) -> None:
    buf += b"f"
    # float.hex is exact and canonical; all NaNs are one value for identity purposes.
    _text(buf, "nan" if math.isnan(value) else float(value).hex())


def _sequence(tag: bytes, buf: bytearray, items: Any) -> None:
    buf += tag
    items = list(items)
    _length(buf, len(items))
    for index, item in enumerate(items):
        try:
            _encode(item, buf)
        except _Unencodable as error:
            error.path.insert(0, f"[{index}]")
            raise


def _unordered(tag: bytes, buf: bytearray, items: Any) -> None:
    parts = []
    for item in items:
        part = bytearray()
        try:
            _encode(item, part)
        except _Unencodable as error:
            error.path.insert(0, "{...}")
            raise
        parts.append(bytes(part))
    parts.sort()
    buf += tag
    _length(buf, len(parts))
    for encoded in parts:
        buf.extend(encoded)


def _mapping(buf: bytearray, value: dict[Any, Any]) -> None:
    pairs = []
    for key, item in value.items():
        key_part = bytearray()
        item_part = bytearray()
        try:
            _encode(key, key_part)
            _encode(item, item_part)
        except _Unencodable as error:
            error.path.insert(0, f"[{key!r}]")
            raise
        pairs.append((bytes(key_part), bytes(item_part)))
    pairs.sort()
    buf += b"d"
    _length(buf, len(pairs))
    for encoded_key, encoded_item in pairs:
        buf.extend(encoded_key)
        buf.extend(encoded_item)


def _named(tag: bytes, buf: bytearray, name: str) -> None:
    buf += tag
    _text(buf, name)


def qualified_name(obj: Any) -> str:
    """``module.qualname`` of a function or class (``module`` alone for a module)."""
    if isinstance(obj, types.ModuleType):
        return obj.__name__
    module = getattr(obj, "__module__", None) or ""
    name = getattr(obj, "__qualname__", None) or getattr(obj, "__name__", None) or repr(obj)
    return f"{module}.{name}" if module else name


# How a function's code is fingerprinted: set by :mod:`dagger.fingerprint` when it is imported
# (``import dagger`` always does), so that this module never imports the code analysis.
_function_fingerprinter: Callable[[Any], str] | None = None


def set_function_fingerprinter(fingerprinter: Callable[[Any], str]) -> None:
    """Install the function that fingerprints code (lambdas and local functions as values)."""
    global _function_fingerprinter
    _function_fingerprinter = fingerprinter


def _function(func: Any, buf: bytearray) -> None:
    name = qualified_name(func)
    buf += b"F"
    _text(buf, name)
    # Two lambdas or two local functions of one module share a qualified name; their code
    # tells them apart.
    if ("<lambda>" in name or "<locals>" in name) and _function_fingerprinter is not None:
        _text(buf, _function_fingerprinter(func))
    else:
        _text(buf, "")


def _encode_bytes(buf: bytearray, tag: bytes, data: bytes | memoryview) -> None:
    buf += tag
    _length(buf, len(data))
    buf += data


# Exact-type fast path. bool must not fall through to int.
def _encode_none(value: Any, buf: bytearray) -> None:
    buf += b"N"


def _encode_bool(value: bool, buf: bytearray) -> None:
    buf += b"?1" if value else b"?0"


_EXACT: dict[type, Callable[[Any, bytearray], None]] = {
    type(None): _encode_none,
    bool: _encode_bool,
    int: lambda v, b: _int(b, v),
    float: lambda v, b: _float(b, v),
    str: lambda v, b: _string(b, v),
    bytes: lambda v, b: _encode_bytes(b, b"b", v),
    bytearray: lambda v, b: _encode_bytes(b, b"B", bytes(v)),
    list: lambda v, b: _sequence(b"l", b, v),
    tuple: lambda v, b: _sequence(b"t", b, v),
    dict: lambda v, b: _mapping(b, v),
    set: lambda v, b: _unordered(b"S", b, v),
    frozenset: lambda v, b: _unordered(b"Z", b, v),
}


def _encode_complex(value: complex, buf: bytearray) -> None:
    buf += b"c"
    _float(buf, value.real)
    _float(buf, value.imag)


def _encode_path(value: pathlib.PurePath, buf: bytearray) -> None:
    buf += b"p"
    _text(buf, value.as_posix())


def _encode_enum(value: enum.Enum, buf: bytearray) -> None:
    buf += b"e"
    _text(buf, qualified_name(type(value)))
    _text(buf, value.name)


def _encode_dataclass(value: Any, buf: bytearray) -> None:
    buf += b"D"
    _text(buf, qualified_name(type(value)))
    fields = dataclasses.fields(value)
    _length(buf, len(fields))
    for field in fields:
        _text(buf, field.name)
        try:
            _encode(getattr(value, field.name), buf)
        except _Unencodable as error:
            error.path.insert(0, f".{field.name}")
            raise


def _encode_partial(value: functools.partial[Any], buf: bytearray) -> None:
    buf += b"P"
    _encode(value.func, buf)
    _encode(tuple(value.args), buf)
    _encode(dict(value.keywords), buf)


def _encode_method(value: types.MethodType, buf: bytearray) -> None:
    buf += b"M"
    _encode(value.__self__, buf)
    _text(buf, value.__func__.__name__)


def _encode_range(value: range, buf: bytearray) -> None:
    buf += b"r"
    for part in (value.start, value.stop, value.step):
        _int(buf, part)


def _encode_slice(value: slice, buf: bytearray) -> None:
    buf += b"x"
    for part in (value.start, value.stop, value.step):
        _encode(part, buf)


def _encode_namedtuple(value: tuple[Any, ...], buf: bytearray) -> None:
    buf += b"n"
    _text(buf, qualified_name(type(value)))
    _sequence(b"t", buf, value)


def _encode_class(value: type, buf: bytearray) -> None:
    _named(b"C", buf, qualified_name(value))


def _encode_module(value: types.ModuleType, buf: bytearray) -> None:
    _named(b"m", buf, value.__name__)


# Builtins whose subclasses should encode like the builtin, looked up along the MRO after
# enums, dataclasses and registered types had their chance.
_BASES: dict[type, Callable[[Any, bytearray], None]] = {
    bool: _encode_bool,
    int: lambda v, b: _int(b, int(v)),
    float: lambda v, b: _float(b, float(v)),
    complex: _encode_complex,
    str: lambda v, b: _string(b, str(v)),
    bytes: lambda v, b: _encode_bytes(b, b"b", bytes(v)),
    bytearray: lambda v, b: _encode_bytes(b, b"B", bytes(v)),
    list: lambda v, b: _sequence(b"l", b, v),
    tuple: lambda v, b: _sequence(b"t", b, v),
    dict: lambda v, b: _mapping(b, dict(v)),
    set: lambda v, b: _unordered(b"S", b, v),
    frozenset: lambda v, b: _unordered(b"Z", b, v),
    pathlib.PurePath: _encode_path,
    functools.partial: _encode_partial,
    range: _encode_range,
    slice: _encode_slice,
    types.FunctionType: _function,
    types.BuiltinFunctionType: _function,
    types.MethodType: _encode_method,
    types.ModuleType: _encode_module,
}
for _kind in (types.BuiltinMethodType, types.WrapperDescriptorType, types.MethodDescriptorType):
    _BASES.setdefault(_kind, _function)


# Optional libraries register their encoders the first time one of their values is seen, so
# importing dagger never imports numpy or torch.
def _install_numpy() -> None:
    import numpy as np

    def array(value: Any, buf: bytearray) -> None:
        if value.dtype.hasobject:
            buf += b"A"
            _text(buf, str(value.shape))
            _encode(value.tolist(), buf)
            return
        buf += b"a"
        _text(buf, value.dtype.str)
        _text(buf, repr(tuple(value.shape)))
        _encode_bytes(buf, b"b", np.ascontiguousarray(value).tobytes())

    def scalar(value: Any, buf: bytearray) -> None:
        buf += b"g"
        _text(buf, value.dtype.str)
        _encode_bytes(buf, b"b", value.tobytes())

    def dtype(value: Any, buf: bytearray) -> None:
        _named(b"y", buf, value.str if value.fields is None else str(value.descr))

    _NATIVE[np.ndarray] = array
    _NATIVE[np.generic] = scalar
    _NATIVE[np.dtype] = dtype


def _install_torch() -> None:
    import torch

    def tensor(value: Any, buf: bytearray) -> None:
        value = value.detach()
        buf += b"X"
        _text(buf, str(value.dtype))
        _text(buf, repr(tuple(value.shape)))
        if value.layout != torch.strided:
            if value.layout != torch.sparse_coo:
                raise _Unencodable(value)
            value = value.coalesce()
            _text(buf, "sparse_coo")
            tensor(value.indices(), buf)
            tensor(value.values(), buf)
            return
        if value.is_quantized:
            raise _Unencodable(value)
        flat = value.to("cpu").contiguous().reshape(-1)
        _text(buf, "strided")
        _encode_bytes(buf, b"b", flat.view(torch.uint8).numpy().tobytes())

    _NATIVE[torch.Tensor] = tensor
    _NATIVE[torch.dtype] = lambda v, b: _named(b"y", b, str(v))
    _NATIVE[torch.device] = lambda v, b: _named(b"v", b, str(v))
    _NATIVE[torch.Size] = lambda v, b: _sequence(b"t", b, v)


_NATIVE: dict[type, Callable[[Any, bytearray], None]] = {}
_INSTALLERS: dict[str, Callable[[], None]] = {"numpy": _install_numpy, "torch": _install_torch}


def _lookup(kind: type) -> Callable[[Any, bytearray], None] | None:
    for attempt in range(2):
        for klass in kind.__mro__:
            found = _NATIVE.get(klass)
            if found is not None:
                return found
        if attempt == 0:
            # A value of a library not installed yet may be its type or a subclass of it:
            # install every library that has been imported, then look again.
            for name in [name for name in _INSTALLERS if name in sys.modules]:
                _INSTALLERS.pop(name)()
    return None


def _encode(value: Any, buf: bytearray) -> None:
    kind = type(value)
    fast = _EXACT.get(kind)
    if fast is not None:
        fast(value, buf)
        return
    if isinstance(value, enum.Enum):
        _encode_enum(value, buf)
        return
    for klass in kind.__mro__:
        encoder = _REGISTRY.get(klass)
        if encoder is not None:
            buf += b"R"
            _text(buf, qualified_name(klass))
            try:
                _encode(encoder(value), buf)
            except _Unencodable as error:
                error.path.insert(0, f"<{klass.__name__} encoder>")
                raise
            return
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        _encode_dataclass(value, buf)
        return
    if isinstance(value, type):
        _encode_class(value, buf)
        return
    native = _lookup(kind)
    if native is not None:
        native(value, buf)
        return
    if isinstance(value, tuple) and hasattr(kind, "_fields"):
        _encode_namedtuple(value, buf)
        return
    for klass in kind.__mro__:
        base = _BASES.get(klass)
        if base is not None:
            base(value, buf)
            return
    raise _Unencodable(value)


_DEFAULT_FIX = (
    "Leave it out of the identity, pass a plain value that describes it instead, or register "
    "an encoder with `dagger.hashing.register`."
)


# -- the same encoding, faster, for plain values -----------------------------------------------
#
# Ids are hashed for every promise of a tree (100,000 of them in a large sweep), mostly of plain
# values: strings, numbers, tuples and dicts of them. _plain writes exactly the bytes _encode
# writes for those (exact types only; subclasses, enums and everything else take the general
# path), in one pass without a buffer per level; the golden values in tests/test_hashing.py pin
# that the two agree.

_Q = struct.Struct(">Q").pack
_PLAIN_DEPTH = 16


def _plain(value: Any, depth: int) -> bytes | None:
    kind = type(value)
    if kind is str:
        raw = value.encode("utf-8", "surrogatepass")
        return b"s" + _Q(len(raw)) + raw
    if kind is int:
        text = str(value).encode()
        return b"i" + _Q(len(text)) + text
    if kind is bytes:
        return b"b" + _Q(len(value)) + value
    if value is None:
        return b"N"
    if kind is bool:
        return b"?1" if value else b"?0"
    if kind is float:
        text = ("nan" if math.isnan(value) else value.hex()).encode()
        return b"f" + _Q(len(text)) + text
    if depth >= _PLAIN_DEPTH:
        return None
    if kind is tuple or kind is list:
        items = [_plain(item, depth + 1) for item in value]
        if None in items:
            return None
        return (b"t" if kind is tuple else b"l") + _Q(len(items)) + b"".join(items)  # type: ignore[arg-type]
    if kind is dict:
        pairs = []
        for key, item in value.items():
            encoded_key = _plain(key, depth + 1)
            encoded_item = _plain(item, depth + 1)
            if encoded_key is None or encoded_item is None:
                return None
            pairs.append((encoded_key, encoded_item))
        pairs.sort()
        return b"d" + _Q(len(pairs)) + b"".join(key + item for key, item in pairs)
    return None


def encode(value: Any, *, what: str = "value", fix: str = _DEFAULT_FIX) -> bytes:
    """Canonical bytes of ``value``.

    Args:
        value: Anything of a supported type, nested arbitrarily.
        what: How to name the value in an error (``"Recipe `Prune` property `amount`"``).
        fix: The sentence of the error that says what to do instead.

    Raises:
        HashingError: Some part of ``value`` has a type dagger cannot encode.
    """
    quick = _plain(value, 0)
    if quick is not None:
        return quick
    buf = bytearray()
    try:
        _encode(value, buf)
    except _Unencodable as error:
        bad = error.value
        where = "".join(error.path)
        inside = f" at `{where}`" if where else ""
        raise HashingError(
            f"{what} holds{inside} a `{qualified_name(type(bad))}`, which dagger cannot hash. "
            + fix,
            what=what,
            value_type=qualified_name(type(bad)),
            path=where,
        ) from None
    except RecursionError:
        raise HashingError(
            f"{what} is nested too deeply (or refers to itself), so dagger cannot hash it. " + fix,
            what=what,
            value_type=qualified_name(type(value)),
            path="",
        ) from None
    return bytes(buf)


def digest(*parts: Any, what: str = "value") -> str:
    """Hex SHA-256 of the canonical encoding of ``parts`` (a tuple)."""
    return hashlib.sha256(encode(parts, what=what)).hexdigest()
