"""Compare two loaded states attribute by attribute: are they the same, and where do they differ.

:func:`compare_states` walks both states with :func:`dagger.contents.iter_parts` (containers,
modules through ``state_dict``, optimizers through ``state_dict``, dataclasses, plain objects),
matches the parts by path, and compares each pair:

* **Tensors and arrays**: bitwise by default; with ``rtol`` or ``atol`` above zero, element
  ``a`` is close to ``b`` when ``|a - b| <= atol + rtol * |b|``, the rule of
  ``torch.isclose``/``torch.allclose`` and ``numpy.isclose`` (both documented with this
  formula), evaluated in float64 (complex128 for complex values) so that float16 and bfloat16
  inputs are not rounded further. NaN equals NaN, in both modes, because a computation that
  reproduces gives NaN in the same places (``equal_nan=True`` in torch's and numpy's terms);
  bitwise, ``-0.0`` and ``0.0`` differ. A difference reports the largest absolute difference
  over the differing elements (``inf`` where one side is NaN or an infinity the other side
  does not match) and the fraction of elements that differ. Tensors are read piece by piece
  (about a million elements at a time): a large state is never copied whole, and a tensor on
  another device (a GPU) is brought to the CPU one piece at a time. A tensor's device and
  ``requires_grad`` are not compared, only its type, layout, shape, dtype and values. Sparse
  tensors compare by value (an explicitly stored zero equals an absent one); quantized tensors
  by their dequantized values.
* **Numbers** (``int``, ``float``, ``complex``, numpy numbers): exactly (NaN equal to NaN), or
  by the same tolerance rule.
* **Everything else**: by canonical encoding (:func:`dagger.hashing.encode`), which is exact,
  type-tagged and order-free for dicts and sets; where a value has no encoding and no attributes
  to walk, by ``==``: such paths are listed in :attr:`StateComparison.compared_with_eq`. A
  value whose type has no ``==`` of its own (identity only) cannot be compared: it is reported
  as ``uncomparable``.
"""

from __future__ import annotations

import dataclasses
import math
import sys
from collections.abc import Iterable, Iterator, Sequence
from typing import Any, Literal

from .contents import Part, flat_pieces, iter_parts
from .errors import InvalidArgumentError

__all__ = ["Difference", "DifferenceKind", "StateComparison", "compare_states"]

DifferenceKind = Literal["missing", "type", "dtype", "shape", "values", "uncomparable"]

# Elements read at once from a tensor or array: bounds the memory a comparison adds (a few
# float64 copies of one piece) whatever the size of the state.
PIECE_ELEMENTS = 1 << 20


@dataclasses.dataclass(frozen=True)
class Difference:
    """One attribute path at which two states differ.

    Attributes:
        path: The attribute path (``model.fc.weight``, ``history[3]``, ``""`` for the state).
        kind: ``missing`` (only one state has it), ``type``, ``dtype``, ``shape``,
            ``values``, or ``uncomparable`` (no encoding, no attributes, no ``==``).
        detail: One human sentence: what differs, e.g. ``"12 of 5,120 elements differ"``.
        max_abs_diff: Largest ``|a - b|`` over the differing elements, in the values' units;
            ``inf`` when a NaN or infinity is unmatched; None where there is no numeric
            difference (types, shapes, strings, missing values).
        fraction: Fraction of elements that differ, in [0, 1]; None where not element-wise.
        compared_by: ``bitwise``, ``tolerance``, ``encoding`` (canonical encoding), ``==``,
            or ``structure`` (types, shapes and presence).
    """

    path: str
    kind: DifferenceKind
    detail: str
    max_abs_diff: float | None = None
    fraction: float | None = None
    compared_by: str = "structure"


@dataclasses.dataclass(frozen=True)
class StateComparison:
    """The result of :func:`compare_states`: equal, or the differences path by path.

    Attributes:
        differences: One :class:`Difference` per differing path, in the order of the second
            state's attributes, then what only the first state has.
        compared: How many parts (leaves and containers) were compared.
        rtol: Relative tolerance used (0 for bitwise).
        atol: Absolute tolerance used (0 for bitwise).
        compared_with_eq: Paths compared with ``==`` because their values have no canonical
            encoding (equal or not): weaker than an encoding, so listed.
    """

    differences: tuple[Difference, ...]
    compared: int
    rtol: float = 0.0
    atol: float = 0.0
    compared_with_eq: tuple[str, ...] = ()

    @property
    def equal(self) -> bool:
        """True when no path differs."""
        return not self.differences

    @property
    def paths(self) -> list[str]:
        """The differing paths."""
        return [difference.path for difference in self.differences]

    def __getitem__(self, path: str) -> Difference:
        """The difference at ``path``.

        Raises:
            KeyError: ``path`` does not differ.
        """
        for difference in self.differences:
            if difference.path == path:
                return difference
        raise KeyError(f"{path!r} does not differ; differing paths: {self.paths}")

    def __str__(self) -> str:
        how = (
            "bitwise"
            if self.rtol == 0 and self.atol == 0
            else f"within rtol={self.rtol:g}, atol={self.atol:g}"
        )
        lines = []
        if self.equal:
            lines.append(f"equal: {self.compared} parts compared {how} (NaN equals NaN)")
        else:
            count = len(self.differences)
            lines.append(
                f"{count} difference{'s' if count != 1 else ''} in {self.compared} parts "
                f"compared {how} (NaN equals NaN)"
            )
            header = ("path", "kind", "max abs diff", "differ", "detail")
            rows = [
                (
                    difference.path or "(state)",
                    difference.kind,
                    _format_float(difference.max_abs_diff),
                    "" if difference.fraction is None else f"{difference.fraction:.2%}",
                    difference.detail,
                )
                for difference in self.differences
            ]
            lines.extend(_table(header, rows))
        if self.compared_with_eq:
            lines.append(
                "compared with == (no canonical encoding): " + ", ".join(self.compared_with_eq)
            )
        return "\n".join(lines)


def compare_states(
    first: Any,
    second: Any,
    *,
    rtol: float = 0.0,
    atol: float = 0.0,
    exclude: Iterable[str] = (),
) -> StateComparison:
    """Compare two loaded states attribute by attribute (see the module docstring for how).

    Args:
        first: A loaded state (or any object with attributes, or a mapping of names to values).
        second: The state to compare it with; ``|first - second| <= atol + rtol * |second|``.
        rtol: Relative tolerance for tensors, arrays and numbers; 0 (with ``atol`` 0) compares
            bitwise.
        atol: Absolute tolerance, in the values' units.
        exclude: Top-level attribute names to leave out of the comparison.

    Returns:
        A :class:`StateComparison`; ``.equal`` says whether they match, ``str()`` is a table.

    Raises:
        InvalidArgumentError: A tolerance is negative, NaN or not a number, or a state has no
            attributes.
    """
    rtol = _tolerance("rtol", rtol)
    atol = _tolerance("atol", atol)
    excluded = list(exclude)
    first_parts: dict[str, Part] = {}
    for part in iter_parts(first, exclude=excluded):
        first_parts.setdefault(part.path, part)
    differences: list[Difference] = []
    only_second: list[Part] = []
    compared_with_eq: list[str] = []
    retyped: list[str] = []
    compared = 0
    for part in iter_parts(second, exclude=excluded):
        counterpart = first_parts.pop(part.path, None)
        if counterpart is None:
            only_second.append(part)
            continue
        compared += 1
        if counterpart.kind == "opaque" and part.kind == "opaque":
            compared_with_eq.append(part.path)
        difference = _compare_parts(counterpart, part, rtol, atol)
        if difference is not None:
            differences.append(difference)
            if difference.kind == "type" and part.path and "node" in (part.kind, counterpart.kind):
                # What a container of another type holds is reported once, by its type.
                retyped.append(part.path)
    differences.extend(_missing(only_second, "only the second state has it", retyped))
    differences.extend(_missing(list(first_parts.values()), "only the first state has it", retyped))
    return StateComparison(
        differences=tuple(differences),
        compared=compared,
        rtol=rtol,
        atol=atol,
        compared_with_eq=tuple(compared_with_eq),
    )


def _tolerance(name: str, value: Any) -> float:
    try:
        number = float(value)
    except (TypeError, ValueError):
        number = math.nan
    if isinstance(value, bool) or math.isnan(number) or number < 0:
        raise InvalidArgumentError(
            f"{name}={value!r} is not a tolerance: pass a number >= 0 (0 for a bitwise "
            "comparison).",
            name=name,
            value=value,
        )
    return number


def _missing(parts: list[Part], detail: str, retyped: list[str]) -> Iterator[Difference]:
    """One difference per missing path, leaving out what lies inside a missing container or
    inside a container whose type differs (``retyped``)."""
    containers: list[str] = list(retyped)
    for part in sorted(parts, key=lambda part: part.path):
        if any(_inside(part.path, container) for container in containers):
            continue
        if part.kind == "node":
            containers.append(part.path)
        yield Difference(part.path, "missing", f"{detail} ({_type(part.type_name)})")


def _inside(path: str, container: str) -> bool:
    if container == "":
        return True
    return path.startswith(container) and path[len(container) : len(container) + 1] in (".", "[")


def _compare_parts(first: Part, second: Part, rtol: float, atol: float) -> Difference | None:
    path = first.path
    if first.type_name != second.type_name:
        return Difference(path, "type", f"{_type(first.type_name)} vs {_type(second.type_name)}")
    if first.kind != second.kind:
        # One type, walked two ways: a sequence of only numbers and one of mixed items.
        return Difference(path, "type", f"{_kind_text(first)} vs {_kind_text(second)}")
    if first.kind == "node":
        return None
    if first.kind == "tensor":
        return _compare_tensors(path, first.value, second.value, rtol, atol)
    if first.kind == "array":
        return _compare_arrays(path, first.value, second.value, rtol, atol)
    if first.kind == "number":
        return _compare_numbers(path, first.value, second.value, rtol, atol)
    if first.kind == "encoded":
        if first.encoded == second.encoded:
            return None
        return Difference(
            path,
            "values",
            f"{_short(first.value)} vs {_short(second.value)}",
            None,
            None,
            "encoding",
        )
    return _compare_opaque(path, first.value, second.value)


def _compare_opaque(path: str, first: Any, second: Any) -> Difference | None:
    kind = type(first)
    if first is second:
        return None
    if kind.__eq__ is object.__eq__:
        return Difference(
            path,
            "uncomparable",
            f"`{kind.__qualname__}` has no canonical encoding, no attributes and no `==` of "
            "its own; register an encoder with `dagger.hashing.register` to compare it",
        )
    try:
        result = first == second
    except Exception as error:
        return Difference(path, "uncomparable", f"`==` raised {type(error).__name__}: {error}")
    if not isinstance(result, bool):
        return Difference(
            path, "uncomparable", f"`==` returned a {type(result).__name__}, not a bool"
        )
    if result:
        return None
    return Difference(path, "values", f"{_short(first)} vs {_short(second)}", None, None, "==")


# -- numbers -------------------------------------------------------------------------------------


def _compare_numbers(
    path: str, first: Any, second: Any, rtol: float, atol: float
) -> Difference | None:
    exact = rtol == 0 and atol == 0
    a, b = _python_number(first), _python_number(second)
    both_nan = _is_nan(a) and _is_nan(b)
    if both_nan:
        return None
    if exact:
        same = a == b and _same_zero_signs(a, b)
    else:
        try:
            same = abs(a - b) <= atol + rtol * abs(b)
        except OverflowError:
            same = False
    if same:
        return None
    try:
        gap = float(abs(a - b))
    except OverflowError:
        gap = math.inf
    if math.isnan(gap):
        gap = math.inf
    return Difference(
        path,
        "values",
        f"{first!r} vs {second!r}",
        gap,
        1.0,
        "bitwise" if exact else "tolerance",
    )


def _python_number(value: Any) -> int | float | complex:
    if isinstance(value, int | float | complex):
        return value
    # A numpy scalar: its exact Python equivalent (float64 holds float16/32 exactly).
    converted: int | float | complex = value.item()
    return converted


def _is_nan(value: int | float | complex) -> bool:
    if isinstance(value, complex):
        return math.isnan(value.real) or math.isnan(value.imag)
    return isinstance(value, float) and math.isnan(value)


def _same_zero_signs(a: int | float | complex, b: int | float | complex) -> bool:
    # Bitwise, -0.0 and 0.0 differ even though they compare equal.
    parts_a = (a.real, a.imag) if isinstance(a, complex) else (a,)
    parts_b = (b.real, b.imag) if isinstance(b, complex) else (b,)
    return all(
        math.copysign(1, x) == math.copysign(1, y)
        for x, y in zip(parts_a, parts_b, strict=True)
        if isinstance(x, float) and isinstance(y, float)
    )


# -- tensors and arrays --------------------------------------------------------------------------


@dataclasses.dataclass
class _Tally:
    """Running counts over the pieces of one tensor or array."""

    differing: int = 0
    max_abs_diff: float | None = None

    def add(self, differing: int, gap: float | None) -> None:
        self.differing += differing
        if gap is not None:
            self.max_abs_diff = gap if self.max_abs_diff is None else max(self.max_abs_diff, gap)


def _compare_tensors(
    path: str, first: Any, second: Any, rtol: float, atol: float
) -> Difference | None:
    torch = sys.modules["torch"]
    if first.layout != second.layout:
        return Difference(
            path, "type", f"{_layout(first.layout)} tensor vs {_layout(second.layout)} tensor"
        )
    if tuple(first.shape) != tuple(second.shape):
        return Difference(path, "shape", f"shape {tuple(first.shape)} vs {tuple(second.shape)}")
    dtype_note = (
        f"{_dtype(first.dtype)} vs {_dtype(second.dtype)}" if first.dtype != second.dtype else ""
    )
    if first.is_meta or second.is_meta:
        # Meta tensors have a shape and a dtype but no values.
        return Difference(path, "dtype", dtype_note) if dtype_note else None
    if first.is_quantized or second.is_quantized:
        first = first.dequantize() if first.is_quantized else first
        second = second.dequantize() if second.is_quantized else second
    numel = first.numel()
    if first.layout != torch.strided:
        pairs = _sparse_value_pairs(torch, first, second)
    else:
        pairs = zip(
            flat_pieces(first, PIECE_ELEMENTS), flat_pieces(second, PIECE_ELEMENTS), strict=True
        )
    tally = _Tally()
    for piece_a, piece_b in pairs:
        _tally_pair(
            tally, _tensor_to_numpy(torch, piece_a), _tensor_to_numpy(torch, piece_b), rtol, atol
        )
    return _difference(path, tally, numel, dtype_note, rtol, atol)


def _compare_arrays(
    path: str, first: Any, second: Any, rtol: float, atol: float
) -> Difference | None:
    if first.shape != second.shape:
        return Difference(path, "shape", f"shape {first.shape} vs {second.shape}")
    dtype_note = f"{first.dtype} vs {second.dtype}" if first.dtype != second.dtype else ""
    numeric = "biufc"
    if dtype_note and not (first.dtype.kind in numeric and second.dtype.kind in numeric):
        return Difference(path, "dtype", dtype_note)
    tally = _Tally()
    for piece_a, piece_b in zip(
        flat_pieces(first, PIECE_ELEMENTS), flat_pieces(second, PIECE_ELEMENTS), strict=True
    ):
        _tally_pair(tally, piece_a, piece_b, rtol, atol)
    return _difference(path, tally, first.size, dtype_note, rtol, atol)


def _difference(
    path: str, tally: _Tally, numel: int, dtype_note: str, rtol: float, atol: float
) -> Difference | None:
    if tally.differing == 0 and not dtype_note:
        return None
    counted = f"{tally.differing:,} of {numel:,} elements differ"
    detail = f"{dtype_note}; {counted}" if dtype_note else counted
    return Difference(
        path,
        "dtype" if dtype_note else "values",
        detail,
        tally.max_abs_diff,
        tally.differing / numel if numel else 0.0,
        "bitwise" if rtol == 0 and atol == 0 else "tolerance",
    )


def _sparse_value_pairs(torch: Any, first: Any, second: Any) -> Iterator[tuple[Any, Any]]:
    """Pieces of the values of two sparse tensors over the union of their stored positions."""
    first = _as_coo(torch, first).coalesce()
    second = _as_coo(torch, second).coalesce()
    if first.indices().shape != second.indices().shape or not torch.equal(
        first.indices(), second.indices()
    ):
        # Put both on the union of their positions: adding a zero keeps every value (NaN too).
        first, second = (
            (first + _zeros_at(torch, second)).coalesce(),
            (second + _zeros_at(torch, first)).coalesce(),
        )
    return zip(
        flat_pieces(first.values(), PIECE_ELEMENTS),
        flat_pieces(second.values(), PIECE_ELEMENTS),
        strict=True,
    )


def _zeros_at(torch: Any, sparse: Any) -> Any:
    """A sparse tensor of zeros at the stored positions of ``sparse`` (valid by construction,
    so torch's invariant checks are not needed)."""
    return torch.sparse_coo_tensor(
        sparse.indices(), torch.zeros_like(sparse.values()), sparse.shape, check_invariants=False
    )


def _as_coo(torch: Any, tensor: Any) -> Any:
    if tensor.layout == torch.sparse_coo:
        return tensor
    return tensor.to_sparse_coo()


def _tensor_to_numpy(torch: Any, piece: Any) -> Any:
    piece = piece.detach()
    if piece.device.type != "cpu":
        piece = piece.cpu()
    piece = piece.resolve_conj().resolve_neg()
    if piece.dtype in (torch.bfloat16,) or "float8" in str(piece.dtype):
        # numpy has no such dtype; float32 holds every value exactly (bit patterns map 1:1).
        piece = piece.to(torch.float32)
    elif piece.dtype == torch.complex32:
        piece = piece.to(torch.complex64)
    return piece.numpy()


def _tally_pair(tally: _Tally, first: Any, second: Any, rtol: float, atol: float) -> None:
    """Count the differing elements of two 1-D numpy pieces of one length."""
    import numpy as np

    exact = rtol == 0 and atol == 0
    if first.dtype != second.dtype:
        common = np.result_type(first.dtype, second.dtype)
        first, second = first.astype(common), second.astype(common)
    kind = first.dtype.kind
    with np.errstate(invalid="ignore", over="ignore"):
        if kind not in "biufc":
            same = _bytes_equal(first, second)
        elif exact:
            same = _bits_equal(np, first, second)
        else:
            wide = np.complex128 if kind == "c" else np.float64
            same = np.isclose(
                first.astype(wide), second.astype(wide), rtol=rtol, atol=atol, equal_nan=True
            )
        differing = int(same.size - np.count_nonzero(same))
        if differing == 0:
            tally.add(0, None)
            return
        gap = None
        if kind in "biufc":
            wide = np.complex128 if kind == "c" else np.float64
            mask = ~same
            gaps = np.abs(first[mask].astype(wide) - second[mask].astype(wide))
            gaps[np.isnan(gaps)] = np.inf
            gap = float(gaps.max())
    tally.add(differing, gap)


def _bits_equal(np: Any, first: Any, second: Any) -> Any:
    kind = first.dtype.kind
    if kind in "biu":
        return first == second
    if kind == "c":
        real_a = first.view(first.real.dtype).reshape(-1, 2)
        real_b = second.view(second.real.dtype).reshape(-1, 2)
        return _bits_equal(np, real_a.reshape(-1), real_b.reshape(-1)).reshape(-1, 2).all(axis=1)
    unsigned = {2: np.uint16, 4: np.uint32, 8: np.uint64}.get(first.dtype.itemsize)
    both_nan = np.isnan(first) & np.isnan(second)
    if unsigned is None:
        # long double: its padding bytes are not part of the value.
        return (first == second) & (np.signbit(first) == np.signbit(second)) | both_nan
    return (first.view(unsigned) == second.view(unsigned)) | both_nan


def _bytes_equal(first: Any, second: Any) -> Any:
    import numpy as np

    size = first.dtype.itemsize
    if size == 0:
        return np.ones(first.shape, dtype=bool)
    rows_a = np.ascontiguousarray(first).view(np.uint8).reshape(-1, size)
    rows_b = np.ascontiguousarray(second).view(np.uint8).reshape(-1, size)
    return (rows_a == rows_b).all(axis=1)


# -- formatting ----------------------------------------------------------------------------------


def _kind_text(part: Part) -> str:
    name = _type(part.type_name)
    if part.kind == "array" and name in ("list", "tuple"):
        return f"{name} of {part.value.dtype} numbers"
    if part.kind == "node":
        return f"{name} of mixed items"
    return f"{name} ({part.kind})"


def _type(type_name: str) -> str:
    return type_name.removeprefix("builtins.")


def _layout(layout: Any) -> str:
    return str(layout).removeprefix("torch.")


def _dtype(dtype: Any) -> str:
    return str(dtype).removeprefix("torch.")


def _short(value: Any, limit: int = 60) -> str:
    try:
        text = repr(value)
    except Exception:
        text = f"<{type(value).__qualname__}>"
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _format_float(value: float | None) -> str:
    if value is None:
        return ""
    return f"{value:.4g}"


def _table(header: tuple[str, ...], rows: Sequence[tuple[str, ...]]) -> list[str]:
    widths = [max(len(row[column]) for row in [header, *rows]) for column in range(len(header))]
    right = {2, 3}

    def line(row: tuple[str, ...]) -> str:
        cells = [
            cell.rjust(width) if column in right else cell.ljust(width)
            for column, (cell, width) in enumerate(zip(row, widths, strict=True))
        ]
        return "  ".join(cells).rstrip()

    return [line(header), *(line(row) for row in rows)]
