"""Every kind of array and tensor a state may hold, built deterministically, and an exact
comparison (test_payload.py).

Importable by name, beside the scripts the tests run in fresh processes, so that a process
that stores a state and another that loads it build the same expected values.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from typing import Any

import numpy as np
import torch

import dagger as dg

BIG = 20_000  # elements: large enough to be a blob for every dtype (>= 64 KiB at 4 bytes)


def _rng() -> np.random.Generator:
    return np.random.default_rng(12345)


def _gen() -> torch.Generator:
    return torch.Generator().manual_seed(12345)


def _structured(count: int) -> np.ndarray:
    # The case: a training history, 8 bytes a row (80 KB for 10 000 rows).
    history = np.zeros(count, dtype=[("epoch", "<i4"), ("loss", "<f4")])
    history["epoch"] = np.arange(count)
    history["loss"] = _rng().random(count, dtype=np.float32)
    return history


def _nested_structured() -> np.ndarray:
    dtype = np.dtype([("pos", "<f8", (3,)), ("meta", [("id", "<i8"), ("flag", "?")])])
    value = np.zeros(5_000, dtype=dtype)
    value["pos"] = _rng().random((5_000, 3))
    value["meta"]["id"] = np.arange(5_000)
    value["meta"]["flag"] = np.arange(5_000) % 3 == 0
    return value


def _aligned_structured() -> np.ndarray:
    dtype = np.dtype([("a", "u1"), ("b", "<f8")], align=True)
    value = np.zeros(BIG, dtype=dtype)
    value["a"] = np.arange(BIG) % 251
    value["b"] = _rng().random(BIG)
    return value


def _mixed_endian_structured() -> np.ndarray:
    value = np.zeros(BIG, dtype=[("big", ">i4"), ("little", "<f8")])
    value["big"] = np.arange(BIG)
    value["little"] = _rng().random(BIG)
    return value


def _object_array() -> np.ndarray:
    value = np.empty(6, dtype=object)
    value[:] = [1, "two", None, _rng().random(BIG), {"k": [3.5]}, np.float32(2.5)]
    return value


def _big_float() -> np.ndarray:
    return _rng().random((200, 300))


def _masked() -> np.ma.MaskedArray:
    data = _rng().random(BIG)
    return np.ma.masked_array(data, mask=data > 0.7, fill_value=-1.0)


def _same_array_twice() -> list[Any]:
    array = _rng().random(BIG)
    small = np.arange(5)
    return [array, array, small, small]


def _datetimes() -> np.ndarray:
    start = np.datetime64("2020-01-01T00:00:00", "s")
    return start + np.arange(BIG).astype("timedelta64[s]") * 37


NUMPY_KINDS: dict[str, Callable[[], Any]] = {
    "numpy-structured": lambda: _structured(10_000),
    "numpy-structured-small": lambda: _structured(100),
    "numpy-structured-nested": _nested_structured,
    "numpy-structured-aligned": _aligned_structured,
    "numpy-structured-mixed-endian": _mixed_endian_structured,
    "numpy-record-array": lambda: np.rec.fromarrays(
        [np.arange(10_000, dtype="<i4"), _rng().random(10_000, dtype=np.float32)],
        names="epoch,loss",
    ),
    "numpy-object": _object_array,
    "numpy-non-contiguous": lambda: _big_float()[::2, ::3],
    "numpy-negative-strides": lambda: _big_float()[::-1],
    "numpy-fortran": lambda: np.asfortranarray(_big_float()),
    "numpy-fortran-small": lambda: np.asfortranarray(np.arange(12.0).reshape(3, 4)),
    "numpy-0d": lambda: np.array(3.5),
    "numpy-0d-structured": lambda: np.array((7, 2.5), dtype=[("a", "<i4"), ("b", "<f4")]),
    "numpy-empty": lambda: np.zeros((0, 7), dtype="<f4"),
    "numpy-datetime64": _datetimes,
    "numpy-timedelta64": lambda: np.arange(BIG).astype("timedelta64[ms]"),
    "numpy-datetime64-scalar": lambda: np.datetime64("2024-02-29T12:00", "m"),
    "numpy-big-endian": lambda: np.arange(BIG, dtype=">f8"),
    "numpy-big-endian-small": lambda: np.arange(10, dtype=">i4"),
    "numpy-big-endian-complex": lambda: (_rng().random(BIG) * 1j).astype(">c16"),
    "numpy-float16": lambda: _rng().random(BIG * 2).astype(np.float16),
    "numpy-unicode": lambda: np.array(["alpha", "beta", "gamma-δ"] * 3_000, dtype="<U8"),
    "numpy-bytes-dtype": lambda: np.array([b"ab", b"cde", b""] * 10_000, dtype="S3"),
    "numpy-void": lambda: np.frombuffer(bytes(range(256)) * 400, dtype="V4").copy(),
    "numpy-string-dtype": lambda: np.array(
        ["a", "much longer string", ""] * 100, dtype=np.dtypes.StringDType()
    ),
    "numpy-masked": _masked,
    "numpy-same-array-twice": _same_array_twice,
}


def _base(rows: int = 200, columns: int = 300) -> torch.Tensor:
    return torch.randn(rows, columns, generator=_gen())


def _views_sharing(rows: int) -> list[torch.Tensor]:
    base = _base(rows, 30)
    return [base, base[3:], base.t(), base[1:5, 2:7]]


def _quantized_per_channel() -> torch.Tensor:
    return torch.quantize_per_channel(
        _base(),
        torch.rand(200, generator=_gen(), dtype=torch.float64) + 0.01,
        torch.arange(200) % 5,
        0,
        torch.quint8,
    )


def _uncoalesced() -> torch.Tensor:
    indices = torch.tensor([[0, 1, 1, 0], [2, 0, 0, 2]])
    return torch.sparse_coo_tensor(indices, torch.tensor([1.0, 2.0, 3.0, 4.0]), (3, 3))


def _nested() -> torch.Tensor:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # nested tensors are a prototype feature
        return torch.nested.nested_tensor([_base(300, 50), _base(100, 50)])


def _parameter() -> torch.nn.Parameter:
    return torch.nn.Parameter(_base())


def _typed(dtype: torch.dtype, count: int) -> torch.Tensor:
    base = torch.randn(count, generator=_gen(), dtype=torch.float64)
    if dtype == torch.bool:
        return base > 0
    if dtype.is_complex:
        return torch.complex(base, base.flip(0)).to(dtype)
    if dtype.is_floating_point:
        return base.to(dtype)
    high = 200 if dtype in (torch.uint8, torch.int8) else 30_000
    return (base.abs() * high).to(torch.int64).clamp(max=high).to(dtype)


TORCH_DTYPES = [
    torch.float32,
    torch.float64,
    torch.float16,
    torch.bfloat16,
    torch.bool,
    torch.int8,
    torch.uint8,
    torch.int16,
    torch.int32,
    torch.int64,
    torch.uint16,
    torch.uint32,
    torch.uint64,
    torch.complex32,
    torch.complex64,
    torch.complex128,
    torch.float8_e4m3fn,
    torch.float8_e5m2,
    torch.float8_e4m3fnuz,
    torch.float8_e5m2fnuz,
]

TORCH_KINDS: dict[str, Callable[[], Any]] = {
    "torch-view-with-offset": lambda: _base()[10:20, 5:],
    "torch-view-with-offset-small": lambda: _base(4, 5)[1:3, 2:],
    "torch-transposed": lambda: _base().t(),
    "torch-expanded": lambda: torch.arange(3.0).expand(BIG, 3),
    "torch-channels-last": lambda: torch.randn(8, 16, 16, 16, generator=_gen()).to(
        memory_format=torch.channels_last
    ),
    "torch-views-sharing": lambda: _views_sharing(2_000),
    "torch-views-sharing-small": lambda: _views_sharing(4),
    "torch-0d": lambda: torch.tensor(3.5),
    "torch-empty": lambda: torch.empty(0, 5),
    "torch-meta": lambda: torch.empty(100, 100, device="meta"),
    "torch-parameter": _parameter,
    "torch-sparse-coo": lambda: torch.eye(300).to_sparse(),
    "torch-sparse-coo-uncoalesced": _uncoalesced,
    "torch-sparse-csr": lambda: torch.eye(300).to_sparse_csr(),
    "torch-sparse-csc": lambda: torch.eye(300).to_sparse_csc(),
    "torch-sparse-bsr": lambda: torch.eye(300).to_sparse_bsr((3, 3)),
    "torch-sparse-bsc": lambda: torch.eye(300).to_sparse_bsc((3, 3)),
    "torch-quantized": lambda: torch.quantize_per_tensor(_base(), 0.05, 3, torch.qint8),
    "torch-quantized-per-channel": _quantized_per_channel,
    "torch-conj": lambda: _typed(torch.complex64, BIG).conj(),
    "torch-conj-small": lambda: _typed(torch.complex64, 4).conj(),
    "torch-neg": lambda: _typed(torch.complex64, BIG).conj().imag,
    "torch-nested": _nested,
    **{
        f"torch-{str(dtype)[6:]}": (lambda dtype=dtype: _typed(dtype, BIG))
        for dtype in TORCH_DTYPES
    },
    "torch-dtypes-small": lambda: {str(dtype): _typed(dtype, 5) for dtype in TORCH_DTYPES},
}

KINDS: dict[str, Callable[[], Any]] = {**NUMPY_KINDS, **TORCH_KINDS}


def make(kind: str) -> Any:
    """The value of a kind, the same in every process."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # sparse CSR/BSR and quantization warn on first use
        return KINDS[kind]()


class KindState(dg.ExperimentState):
    """A root whose children each hold the value of one kind."""

    def initialize_state(self, **arguments: Any) -> None:
        self.kind = None
        self.value = None


class Hold(dg.Recipe):
    """Sets ``state.value`` to the value of ``kind``."""

    def __init__(self, kind: str) -> None:
        self.kind = kind

    def run(self, state: Any) -> Any:
        state.kind = self.kind
        state.value = make(self.kind)
        return state


# -- exact comparison ----------------------------------------------------------------------------


def difference(expected: Any, got: Any, where: str = "value") -> str | None:
    """None if ``got`` is exactly ``expected`` (type, dtype, shape, layout, strides, bits,
    sharing); else what differs."""
    if type(got) is not type(expected):
        return f"{where}: type {type(got).__name__}, expected {type(expected).__name__}"
    if isinstance(expected, torch.Tensor):
        return _tensor_difference(expected, got, where)
    if isinstance(expected, np.ma.MaskedArray):
        return (
            _array_difference(expected.data, got.data, f"{where}.data")
            or _array_difference(expected.mask, got.mask, f"{where}.mask")
            or _plain_difference(expected.fill_value, got.fill_value, f"{where}.fill_value")
        )
    if isinstance(expected, np.ndarray):
        return _array_difference(expected, got, where)
    if isinstance(expected, np.generic):
        if expected.dtype != got.dtype or expected.tobytes() != got.tobytes():
            return f"{where}: {got!r} ({got.dtype}), expected {expected!r} ({expected.dtype})"
        return None
    if isinstance(expected, list | tuple):
        if len(expected) != len(got):
            return f"{where}: length {len(got)}, expected {len(expected)}"
        for i, (a, b) in enumerate(zip(expected, got, strict=True)):
            problem = difference(a, b, f"{where}[{i}]")
            if problem:
                return problem
        return _sharing_difference(list(expected), list(got), where)
    if isinstance(expected, dict):
        if list(expected) != list(got):
            return f"{where}: keys {list(got)}, expected {list(expected)}"
        for key in expected:
            problem = difference(expected[key], got[key], f"{where}[{key!r}]")
            if problem:
                return problem
        return _sharing_difference(list(expected.values()), list(got.values()), where)
    return _plain_difference(expected, got, where)


def _plain_difference(expected: Any, got: Any, where: str) -> str | None:
    return None if got == expected else f"{where}: {got!r}, expected {expected!r}"


def _array_difference(expected: np.ndarray, got: np.ndarray, where: str) -> str | None:
    if got.dtype != expected.dtype or got.dtype.descr != expected.dtype.descr:
        return f"{where}: dtype {got.dtype.descr}, expected {expected.dtype.descr}"
    if got.shape != expected.shape:
        return f"{where}: shape {got.shape}, expected {expected.shape}"
    # Where strides matter: Fortran order is kept; anything else comes back C-contiguous,
    # as numpy's own pickling gives it.
    fortran = expected.flags.f_contiguous and not expected.flags.c_contiguous
    if fortran and not got.flags.f_contiguous:
        return f"{where}: not Fortran-ordered any more (strides {got.strides})"
    if not fortran and not got.flags.c_contiguous:
        return f"{where}: strides {got.strides}, expected C-contiguous"
    if expected.dtype.hasobject:
        if expected.dtype.kind == "O":
            for index in np.ndindex(expected.shape):
                problem = difference(expected[index], got[index], f"{where}[{index}]")
                if problem:
                    return problem
            return None
        return _plain_difference(expected.tolist(), got.tolist(), where)
    if expected.dtype.names:
        # Field by field: the padding between fields of an aligned dtype holds no value.
        for name in expected.dtype.names:
            problem = _array_difference(
                np.ascontiguousarray(expected[name]), np.ascontiguousarray(got[name]), where
            )
            if problem:
                return f"{problem} (field {name!r})"
        return None
    if np.ascontiguousarray(expected).tobytes() != np.ascontiguousarray(got).tobytes():
        return f"{where}: values differ"
    return None


def _storage_bytes(tensor: torch.Tensor) -> bytes:
    storage = tensor.untyped_storage().cpu()
    return bytes(torch.empty(0, dtype=torch.uint8).set_(storage).numpy().tobytes())


def _tensor_difference(expected: torch.Tensor, got: torch.Tensor, where: str) -> str | None:
    facts = ("dtype", "layout", "requires_grad", "is_quantized", "is_nested")
    if not expected.is_nested:  # a nested tensor has no single shape; its parts are compared
        facts += ("shape",)
    for fact in facts:
        if getattr(got, fact) != getattr(expected, fact):
            return f"{where}: {fact} {getattr(got, fact)}, expected {getattr(expected, fact)}"
    if got.device.type != expected.device.type:
        return f"{where}: on {got.device}, expected {expected.device}"
    if expected.is_nested:
        for i, (a, b) in enumerate(zip(expected.unbind(), got.unbind(), strict=True)):
            problem = _tensor_difference(a, b, f"{where}.unbind()[{i}]")
            if problem:
                return problem
        return None
    if expected.layout == torch.sparse_coo:
        if got.is_coalesced() != expected.is_coalesced():
            return f"{where}: coalesced {got.is_coalesced()}, expected {expected.is_coalesced()}"
        return _tensor_difference(
            expected._indices(), got._indices(), f"{where}.indices"
        ) or _tensor_difference(expected._values(), got._values(), f"{where}.values")
    if expected.layout in (torch.sparse_csr, torch.sparse_bsr):
        parts = ("crow_indices", "col_indices", "values")
    elif expected.layout in (torch.sparse_csc, torch.sparse_bsc):
        parts = ("ccol_indices", "row_indices", "values")
    else:
        parts = ()
    if parts:
        for part in parts:
            problem = _tensor_difference(
                getattr(expected, part)(), getattr(got, part)(), f"{where}.{part}()"
            )
            if problem:
                return problem
        return None
    if expected.is_quantized:
        if got.qscheme() != expected.qscheme():
            return f"{where}: qscheme {got.qscheme()}, expected {expected.qscheme()}"
        if expected.qscheme() == torch.per_tensor_affine:
            same = (got.q_scale(), got.q_zero_point()) == (
                expected.q_scale(),
                expected.q_zero_point(),
            )
        else:
            same = (
                got.q_per_channel_axis() == expected.q_per_channel_axis()
                and got.q_per_channel_scales().equal(expected.q_per_channel_scales())
                and got.q_per_channel_zero_points().equal(expected.q_per_channel_zero_points())
            )
        if not same:
            return f"{where}: quantization parameters differ"
        return _tensor_difference(expected.int_repr(), got.int_repr(), f"{where}.int_repr()")
    for fact in ("stride", "storage_offset", "is_conj", "is_neg"):
        if getattr(got, fact)() != getattr(expected, fact)():
            return f"{where}: {fact} {getattr(got, fact)()}, expected {getattr(expected, fact)()}"
    if got.untyped_storage().nbytes() != expected.untyped_storage().nbytes():
        return f"{where}: storage of {got.untyped_storage().nbytes()} bytes"
    if expected.device.type != "meta" and _storage_bytes(got) != _storage_bytes(expected):
        return f"{where}: values differ"
    return None


def _sharing_difference(expected: list[Any], got: list[Any], where: str) -> str | None:
    """Objects (and tensor storages) shared in ``expected`` are shared in ``got``, and only
    those."""
    for i in range(len(expected)):
        for j in range(i + 1, len(expected)):
            if (expected[i] is expected[j]) != (got[i] is got[j]):
                return f"{where}[{i}] and [{j}]: identity not kept"
            a, b = expected[i], expected[j]
            if isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor) and a.layout == b.layout:
                if a.layout != torch.strided or a.device.type == "meta":
                    continue
                shared = a.untyped_storage().data_ptr() == b.untyped_storage().data_ptr()
                got_shared = (
                    got[i].untyped_storage().data_ptr() == got[j].untyped_storage().data_ptr()
                )
                if shared != got_shared:
                    return f"{where}[{i}] and [{j}]: storage sharing not kept"
    return None
