"""Canonical, type-tagged encoding of values, and the hashes built from it.

This module is pure: no I/O, no global state beyond the encoder registry and lazily installed
encoders for numpy and torch.

Every value is written as a one-byte type tag followed by its content; variable-length content
is length-prefixed. So ``1``, ``1.0``, ``"1"`` and ``True`` encode differently, floats are exact
(``1e-9`` and ``2e-9`` differ), dicts and sets do not depend on insertion order, and the result
does not depend on ``PYTHONHASHSEED``, the process or the machine.

Supported: None, bool, int, float, complex, str, bytes, bytearray, list, tuple, named tuples,
dict, set, frozenset, range, slice, pathlib paths, every enum value (flags with no bits set and
aliases included), dataclasses, numpy arrays, scalars and dtypes, torch tensors of every layout
(views, conjugate and negative bits, sparse COO/CSR/CSC/BSR/BSC, quantized, nested), torch
dtypes, devices and sizes, ``functools.partial``, and, given a ``code`` callback, functions,
methods, classes and modules; plus any type taught with :func:`register`. Anything else raises
:class:`~dagger.errors.HashingError`; there is no silent pickle fallback, because a pickle is not
canonical and would silently change identities.

Value rules worth knowing:

* numpy scalars whose Python equivalent holds the same value exactly encode as that Python
  value (``np.float64(0.5)`` as ``0.5``, every ``np.int*``/``np.uint*`` as ``int``,
  ``np.bool_`` as ``bool``, ``np.complex128`` as ``complex``, ``np.str_``/``np.bytes_`` as
  ``str``/``bytes``), so a sweep over ``np.linspace(...)`` and one over a tuple of floats give
  the same ids; ``float32``, ``float16``, ``longdouble``, ``complex64`` and dates keep their type.
* arrays and tensors encode their full dtype (byte order, structured fields, units), shape and
  values; a structured array field by field (padding bytes never count); a tensor by its
  values whatever its memory form (strides, storage offset, conjugate or negative bit, device),
  a sparse tensor by its layout and its coalesced COO entries without explicit zeros, a
  quantized one by its scheme, scales, zero points and integer values. A tensor without values
  (``device="meta"``) raises :class:`~dagger.errors.HashingError`.
* enum members encode as their class and value (``Flag(0)``, combined flags and aliases are
  values like any other).

Functions, classes and modules as values
-----------------------------------------
A function used as a value (``Apply(make_scale(2))``, ``activation=my_relu``) must encode what
it computes, closures and globals included, and that is the job of the code analysis in
:mod:`dagger.fingerprint`, a module above this one. So :func:`encode` takes the analysis as an
explicit argument, ``code``: a callable mapping a function, method, class or module to a hex
digest of its code identity (:func:`dagger.fingerprint.code_digest`). The encoding of such a
value is its qualified name plus that digest. Without ``code``, meeting a function, class or
module raises :class:`~dagger.errors.HashingError`: hashing it by name alone would make
``make_scale(2)`` and ``make_scale(3)`` one value. There is no global hook to install.
Encodings that compare contents rather than identify code (is this attribute the same
function?) may pass :func:`by_name` instead.

Dagger's own classes are named ``dagger.<qualname>`` in every encoding, whatever submodule
defines them, so moving code inside dagger never changes an id.

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
import os
import pathlib
import struct
import sys
import types
from collections.abc import Callable, Mapping
from typing import Any

from .errors import HashingError

__all__ = [
    "CodeDigest",
    "by_name",
    "digest",
    "encode",
    "encode_encodings",
    "identity_name",
    "module_identity",
    "qualified_name",
    "register",
    "tuple_start",
]

logger = logging.getLogger("dagger")

Encoder = Callable[[Any], Any]

CodeDigest = Callable[[Any], str]
"""Maps a function, method, class or module to the hex digest of its code identity."""

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

    def __init__(self, value: Any, reason: str | None = None) -> None:
        super().__init__(value)
        self.value = value
        self.reason = reason
        self.path: list[str] = []


class _Buffer(bytearray):
    """The bytes being written, and the code-identity callback of this encoding.

    The callback rides on the buffer so that every nested encoder sees it without a parameter
    of its own (and so that the hot path for plain values costs nothing more).
    """

    __slots__ = ("code",)
    code: CodeDigest | None

    # No __init__ of its own: bytearray's, in C, is what a hot path can afford.
    def child(self) -> _Buffer:
        part = _Buffer()
        part.code = self.code
        return part


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


def _sequence(tag: bytes, buf: _Buffer, items: Any) -> None:
    buf += tag
    items = list(items)
    _length(buf, len(items))
    for index, item in enumerate(items):
        try:
            _encode(item, buf)
        except _Unencodable as error:
            error.path.insert(0, f"[{index}]")
            raise


def _unordered(tag: bytes, buf: _Buffer, items: Any) -> None:
    parts = []
    for item in items:
        part = buf.child()
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


def _mapping(buf: _Buffer, value: dict[Any, Any]) -> None:
    pairs = []
    for key, item in value.items():
        key_part = buf.child()
        item_part = buf.child()
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


# The importable name of the running __main__ module, once per main module: the ids a process
# computes must not change while it runs (a script that edits sys.path later).
_MAIN_NAME: tuple[types.ModuleType | None, str] | None = None


def module_identity(name: str) -> str:
    """The name module ``name`` goes by in identities, digests and manifests.

    ``name`` itself, except ``"__main__"``: a script's code is the same whether it runs as
    ``python tree.py`` (its module is ``__main__``) or is imported by another script or a
    notebook (``import tree``), so it goes by the name its file has when imported. That is
    ``__spec__.name`` when it runs as ``python -m pkg.tree`` (``pkg.tree``), else its file's
    stem when the file's folder is on ``sys.path`` (``python tree.py`` puts it first). Code
    with no such name (a notebook, ``python -c``, ``python -P tree.py``) stays ``__main__``.

    Args:
        name: A module's ``__name__`` (or an object's ``__module__``).

    Returns:
        The module name to write into identities.
    """
    if name != "__main__":
        return name
    global _MAIN_NAME
    main = sys.modules.get("__main__")
    if _MAIN_NAME is None or _MAIN_NAME[0] is not main:
        _MAIN_NAME = (main, _importable_name(main))
    return _MAIN_NAME[1]


def _importable_name(main: types.ModuleType | None) -> str:
    spec = getattr(main, "__spec__", None)
    spec_name = getattr(spec, "name", None)
    if isinstance(spec_name, str) and spec_name and spec_name != "__main__":
        return spec_name
    path = getattr(main, "__file__", None)
    if not isinstance(path, str) or not path.endswith(".py"):
        return "__main__"
    folder, file_name = os.path.split(os.path.realpath(path))
    stem = file_name[: -len(".py")]
    if not stem.isidentifier():
        return "__main__"
    for entry in list(sys.path):
        if isinstance(entry, str) and os.path.realpath(entry or os.curdir) == folder:
            return stem
    return "__main__"


def qualified_name(obj: Any) -> str:
    """``module.qualname`` of a function or class (``module`` alone for a module); a script's
    module by its importable name (:func:`module_identity`)."""
    if isinstance(obj, types.ModuleType):
        return module_identity(obj.__name__)
    module = getattr(obj, "__module__", None) or ""
    if module == "__main__":
        module = module_identity(module)
    name = getattr(obj, "__qualname__", None) or getattr(obj, "__name__", None) or repr(obj)
    return f"{module}.{name}" if module else name


def identity_name(obj: Any) -> str:
    """The name of a function, class or type inside encodings.

    :func:`qualified_name`, except that dagger's own objects are ``dagger.<qualname>``
    wherever dagger defines them, so that reorganising dagger's modules changes no id.
    """
    module = getattr(obj, "__module__", None) or ""
    if (module == "dagger" or module.startswith("dagger.")) and not isinstance(
        obj, types.ModuleType
    ):
        name = getattr(obj, "__qualname__", None) or getattr(obj, "__name__", None) or repr(obj)
        return f"dagger.{name}"
    return qualified_name(obj)


_NEEDS_CODE = (
    "a {kind}, which is hashed by its code identity, and this encoding was given no way to "
    "compute one (pass `code=dagger.fingerprint.code_digest` to `dagger.hashing.encode`)"
)


def by_name(obj: Any) -> str:
    """A ``code`` callback that hashes functions, classes and modules by their name alone.

    For encodings that compare contents (is this attribute the same function as that one?),
    never for identities: two closures of one function, or a function whose code changed,
    share a name.
    """
    return hashlib.sha256(("name:" + identity_name(obj)).encode()).hexdigest()


def _code_of(value: Any, buf: _Buffer, kind: str) -> str:
    if buf.code is None:
        raise _Unencodable(value, _NEEDS_CODE.format(kind=kind))
    return buf.code(value)


def _function(func: Any, buf: _Buffer) -> None:
    code = _code_of(func, buf, "function")
    buf += b"F"
    _text(buf, identity_name(func))
    _text(buf, code)


def _encode_bytes(buf: bytearray, tag: bytes, data: bytes | memoryview) -> None:
    buf += tag
    _length(buf, len(data))
    buf += data


# Exact-type fast path. bool must not fall through to int.
def _encode_none(value: Any, buf: bytearray) -> None:
    buf += b"N"


def _encode_bool(value: bool, buf: bytearray) -> None:
    buf += b"?1" if value else b"?0"


_EXACT: dict[type, Callable[[Any, _Buffer], None]] = {
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


def _encode_enum(value: enum.Enum, buf: _Buffer) -> None:
    # By value, not name: a flag with no bits set or a combination of flags has no name (or a
    # made-up one), and an alias is the same member anyway.
    buf += b"e"
    _text(buf, identity_name(type(value)))
    try:
        _encode(value._value_, buf)
    except _Unencodable as error:
        error.path.insert(0, f".{value._name_ or 'value'}")
        raise


def _encode_dataclass(value: Any, buf: _Buffer) -> None:
    buf += b"D"
    _text(buf, identity_name(type(value)))
    fields = dataclasses.fields(value)
    _length(buf, len(fields))
    for field in fields:
        _text(buf, field.name)
        try:
            _encode(getattr(value, field.name), buf)
        except _Unencodable as error:
            error.path.insert(0, f".{field.name}")
            raise


def _encode_partial(value: functools.partial[Any], buf: _Buffer) -> None:
    buf += b"P"
    _encode(value.func, buf)
    _encode(tuple(value.args), buf)
    _encode(dict(value.keywords), buf)


def _encode_method(value: types.MethodType, buf: _Buffer) -> None:
    code = _code_of(value.__func__, buf, "method")
    buf += b"M"
    _encode(value.__self__, buf)
    _text(buf, value.__func__.__name__)
    _text(buf, code)


def _encode_range(value: range, buf: bytearray) -> None:
    buf += b"r"
    for part in (value.start, value.stop, value.step):
        _int(buf, part)


def _encode_slice(value: slice, buf: _Buffer) -> None:
    buf += b"x"
    for part in (value.start, value.stop, value.step):
        _encode(part, buf)


def _encode_namedtuple(value: tuple[Any, ...], buf: _Buffer) -> None:
    buf += b"n"
    _text(buf, identity_name(type(value)))
    _sequence(b"t", buf, value)


def _encode_class(value: type, buf: _Buffer) -> None:
    code = _code_of(value, buf, "class")
    _named(b"C", buf, identity_name(value))
    _text(buf, code)


def _encode_module(value: types.ModuleType, buf: _Buffer) -> None:
    code = _code_of(value, buf, "module")
    _named(b"m", buf, module_identity(value.__name__))
    _text(buf, code)


# Builtins whose subclasses should encode like the builtin, looked up along the MRO after
# enums, dataclasses and registered types had their chance.
_BASES: dict[type, Callable[[Any, _Buffer], None]] = {
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

    def dtype_text(value: Any) -> str:
        """Canonical text of a dtype: byte order, units, fields, offsets, subarrays."""
        if value.subdtype is not None:
            base, shape = value.subdtype
            return f"({dtype_text(base)},{tuple(shape)!r})"
        if value.names is not None:
            fields = ",".join(
                f"{name!r}:{dtype_text(value.fields[name][0])}@{value.fields[name][1]}"
                for name in value.names
            )
            return f"{{{fields}}}/{value.itemsize}"
        return str(value.str)

    def array(value: Any, buf: _Buffer) -> None:
        if value.dtype.hasobject:
            buf += b"A"
            _text(buf, str(value.shape))
            _encode(value.tolist(), buf)
            return
        buf += b"a"
        _text(buf, dtype_text(value.dtype))
        _text(buf, repr(tuple(value.shape)))
        if value.dtype.names is not None:
            # Field by field: the padding bytes between fields may hold anything.
            for name in value.dtype.names:
                array(value[name], buf)
            return
        _encode_bytes(buf, b"b", np.ascontiguousarray(value).tobytes())

    def scalar(value: Any, buf: _Buffer) -> None:
        # Exactly a Python value: encode as that value (np.float64(0.5) is 0.5).
        if isinstance(value, np.bool_):
            _encode_bool(bool(value), buf)
        elif isinstance(value, np.integer):
            _int(buf, int(value))
        elif isinstance(value, np.float64):
            _float(buf, float(value))
        elif isinstance(value, np.complex128):
            _encode_complex(complex(value), buf)
        elif isinstance(value, np.str_):
            _string(buf, str(value))
        elif isinstance(value, np.bytes_):
            _encode_bytes(buf, b"b", bytes(value))
        elif isinstance(value, np.void) or value.dtype.hasobject:
            array(np.asarray(value), buf)
        else:
            buf += b"g"
            _text(buf, dtype_text(value.dtype))
            if isinstance(value, np.floating) and value.dtype.itemsize > 8:
                # longdouble: its storage has padding bytes that may hold anything.
                numerator, denominator = value.as_integer_ratio()
                _text(buf, f"{numerator}/{denominator}")
            else:
                _encode_bytes(buf, b"b", value.tobytes())

    def dtype(value: Any, buf: bytearray) -> None:
        _named(b"y", buf, dtype_text(value))

    _NATIVE[np.ndarray] = array
    _NATIVE[np.generic] = scalar
    _NATIVE[np.dtype] = dtype


def _install_torch() -> None:
    import torch

    sparse_layouts = {
        torch.sparse_coo,
        torch.sparse_csr,
        torch.sparse_csc,
        torch.sparse_bsr,
        torch.sparse_bsc,
    }

    def strided_bytes(value: Any, buf: bytearray) -> None:
        # The values, whatever the memory form: strides, offset, lazy conjugate or negation.
        flat = value.resolve_conj().resolve_neg().to("cpu").contiguous().reshape(-1)
        if flat.numel() and flat.stride(0) != 1:
            # A tensor of one element counts as contiguous whatever its stride (the real part
            # of a complex one has stride 2), and view(uint8) needs a stride of 1.
            flat = torch.empty_like(flat, memory_format=torch.contiguous_format).copy_(flat)
        _encode_bytes(buf, b"b", flat.view(torch.uint8).numpy().tobytes())

    def sparse(value: Any, buf: _Buffer) -> None:
        coo = value if value.layout == torch.sparse_coo else value.to_sparse_coo()
        coo = coo.coalesce()
        indices, values = coo.indices(), coo.values()
        if values.numel():
            # Explicit zeros (block layouts store many) are not values: drop them.
            nonzero = values.reshape(values.shape[0], -1).ne(0).any(dim=1)
            indices, values = indices[:, nonzero], values[nonzero]
        tensor(indices, buf)
        tensor(values, buf)

    def tensor(value: Any, buf: _Buffer) -> None:
        value = value.detach()
        if value.is_meta:
            raise _Unencodable(value, "a tensor on the meta device, which has no values to hash")
        buf += b"X"
        _text(buf, str(value.dtype))
        try:
            if value.is_nested:
                parts = value.unbind()
                _text(buf, "nested")
                _length(buf, len(parts))
                for part in parts:
                    tensor(part, buf)
                return
            _text(buf, repr(tuple(value.shape)))
            layout = value.layout
            if layout in sparse_layouts:
                _text(buf, str(layout).removeprefix("torch."))
                sparse(value, buf)
            elif value.is_quantized:
                scheme = value.qscheme()
                _text(buf, f"quantized:{scheme}".replace("torch.", ""))
                if scheme in (torch.per_tensor_affine, torch.per_tensor_symmetric):
                    _float(buf, value.q_scale())
                    _int(buf, value.q_zero_point())
                else:
                    tensor(value.q_per_channel_scales(), buf)
                    tensor(value.q_per_channel_zero_points(), buf)
                    _int(buf, value.q_per_channel_axis())
                strided_bytes(value.int_repr(), buf)
            elif layout == torch.strided:
                _text(buf, "strided")
                strided_bytes(value, buf)
            else:  # mkldnn and layouts to come: by their dense values
                _text(buf, str(layout).removeprefix("torch."))
                strided_bytes(value.to_dense(), buf)
        except (RuntimeError, NotImplementedError, TypeError) as error:
            raise _Unencodable(
                value, f"a tensor whose values dagger cannot read ({error})"
            ) from None

    _NATIVE[torch.Tensor] = tensor
    _NATIVE[torch.dtype] = lambda v, b: _named(b"y", b, str(v))
    _NATIVE[torch.device] = lambda v, b: _named(b"v", b, str(v))
    _NATIVE[torch.Size] = lambda v, b: _sequence(b"t", b, v)


_NATIVE: dict[type, Callable[[Any, _Buffer], None]] = {}
_INSTALLERS: dict[str, Callable[[], None]] = {"numpy": _install_numpy, "torch": _install_torch}


def _lookup(kind: type) -> Callable[[Any, _Buffer], None] | None:
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


def _encode(value: Any, buf: _Buffer) -> None:
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
            _text(buf, identity_name(klass))
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
    # Strings and bytes inside containers (ids, names, encoded properties: most of what an id
    # hashes) are written in place, without a call each.
    if kind is tuple or kind is list:
        parts = [b"t" if kind is tuple else b"l", _Q(len(value))]
        for item in value:
            item_kind = type(item)
            if item_kind is str:
                raw = item.encode("utf-8", "surrogatepass")
                parts.append(b"s" + _Q(len(raw)) + raw)
            elif item_kind is bytes:
                parts.append(b"b" + _Q(len(item)) + item)
            else:
                encoded = _plain(item, depth + 1)
                if encoded is None:
                    return None
                parts.append(encoded)
        return b"".join(parts)
    if kind is dict:
        pairs = []
        for key, item in value.items():
            if type(key) is str:
                raw = key.encode("utf-8", "surrogatepass")
                encoded_key: bytes | None = b"s" + _Q(len(raw)) + raw
            else:
                encoded_key = _plain(key, depth + 1)
            item_kind = type(item)
            if item_kind is bytes:
                encoded_item: bytes | None = b"b" + _Q(len(item)) + item
            elif item_kind is str:
                raw = item.encode("utf-8", "surrogatepass")
                encoded_item = b"s" + _Q(len(raw)) + raw
            else:
                encoded_item = _plain(item, depth + 1)
            if encoded_key is None or encoded_item is None:
                return None
            pairs.append(encoded_key + encoded_item)
        # Sorting the joined pairs orders them as sorting (key, item) does: no encoding is a
        # prefix of another (each is tagged and length-prefixed), so two keys first differ
        # at a byte inside both.
        pairs.sort()
        return b"d" + _Q(len(pairs)) + b"".join(pairs)
    return None


def encode(
    value: Any,
    *,
    what: str = "value",
    fix: str = _DEFAULT_FIX,
    code: CodeDigest | None = None,
) -> bytes:
    """Canonical bytes of ``value``.

    Args:
        value: Anything of a supported type, nested arbitrarily.
        what: How to name the value in an error (``"Recipe `Prune` property `amount`"``).
        fix: The sentence of the error that says what to do instead.
        code: How to hash functions, methods, classes and modules found in ``value``: a
            callable returning the hex digest of one's code identity (dagger's identities pass
            :func:`dagger.fingerprint.code_digest`). Without it such a value raises.

    Raises:
        HashingError: Some part of ``value`` has a type dagger cannot encode, is a tensor
            without values (meta), or is a function or class and ``code`` was not given.
    """
    quick = _plain(value, 0)
    if quick is not None:
        return quick
    buf = _Buffer()
    buf.code = code
    try:
        _encode(value, buf)
    except _Unencodable as error:
        bad = error.value
        where = "".join(error.path)
        inside = f" at `{where}`" if where else ""
        reason = error.reason or "which dagger cannot hash"
        raise HashingError(
            f"{what} holds{inside} a `{qualified_name(type(bad))}`, {reason}. " + fix,
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


def encode_encodings(mapping: Mapping[str, Any], *, code: CodeDigest | None = None) -> bytes:
    """``encode({key: encode(value, code=code) for key, value in mapping.items()})``, the same
    bytes in one pass: a dict of names to the encodings of their values (a recipe's properties
    in a child's id, 100,000 times for a large tree).

    Args:
        mapping: Values by name.
        code: As for :func:`encode`.

    Raises:
        HashingError: As for :func:`encode`, for the first value that cannot be encoded.
    """
    pairs = []
    lengths = _LENGTHS
    for key, value in mapping.items():
        if type(key) is not str:  # not a name: the general path, which sorts any keys
            return encode({k: encode(v, code=code) for k, v in mapping.items()})
        start = _NAME_STARTS.get(key)
        if start is None:
            if len(_NAME_STARTS) >= 4096:
                _NAME_STARTS.clear()
            raw = key.encode("utf-8", "surrogatepass")
            start = _NAME_STARTS[key] = b"s" + _Q(len(raw)) + raw + b"b"
        # a str key, then the inner encoding as bytes: what _plain writes for each pair
        kind = type(value)
        if kind is int and (size := len(text := b"%d" % value)) < _SHORT:
            # b"i" + length + digits, itself as bytes: 9 + size bytes
            pairs.append(start + lengths[size + 9] + b"i" + lengths[size] + text)
            continue
        if kind is str:
            raw = value.encode("utf-8", "surrogatepass")
            inner = b"s" + _Q(len(raw)) + raw
        else:
            inner = _plain(value, 0) or encode(value, code=code)
        pairs.append(start + _Q(len(inner)) + inner)
    if len(pairs) > 1:
        pairs.sort()
    return b"d" + _Q(len(pairs)) + b"".join(pairs)


# _Q(n) for the lengths of short encodings, looked up rather than packed (an int property's
# pair takes two; 100,000 promises of a sweep have one or more each).
_SHORT = 240
_LENGTHS = tuple(_Q(length) for length in range(_SHORT + 16))


# name -> the encoding of the name, then the tag of a bytes value (the start of each pair of
# encode_encodings). Keys and values are immutable builtins: an entry is never stale.
_NAME_STARTS: dict[str, bytes] = {}


def tuple_start(length: int, *items: Any, code: CodeDigest | None = None) -> bytes:
    """The first bytes of the canonical encoding of a ``length``-tuple that begins with
    ``items``: ``tuple_start(3, a, b) + encode(c) == encode((a, b, c))``.

    For hashing many tuples that share their first items (the ids of one parent's children)
    without encoding those items again.

    Args:
        length: How many items the whole tuple has.
        *items: Its first items.
        code: As for :func:`encode`.

    Raises:
        ValueError: More items than ``length``.
        HashingError: As for :func:`encode`.
    """
    if len(items) > length:
        raise ValueError(f"tuple_start() got {len(items)} items for a tuple of {length}.")
    return b"t" + _Q(length) + b"".join([encode(item, code=code) for item in items])


def digest(*parts: Any, what: str = "value", code: CodeDigest | None = None) -> str:
    """Hex SHA-256 of the canonical encoding of ``parts`` (a tuple).

    Args:
        *parts: The values, encoded together as one tuple.
        what: How to name the value in an error.
        code: As for :func:`encode`.

    Raises:
        HashingError: As for :func:`encode`.
    """
    return hashlib.sha256(encode(parts, what=what, code=code)).hexdigest()
