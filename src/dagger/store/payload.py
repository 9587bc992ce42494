"""Payload serialization: pickling with large buffers routed to content-addressed blobs.

A payload is a pickle in which every large buffer (a torch storage, a numpy array, a bytes
object of at least ``threshold`` bytes) is replaced by a reference to a blob (see
:mod:`dagger.store.blobs`). Tensors that shared a storage when saved share one after loading;
each load builds new storages, so two loads are independent of each other and of the files.

Pickling uses the standard (C) pickler, which is fast and handles what torch provides, through
cloudpickle, which stores by value (in the same stream, so references stay shared) the classes
and functions that cannot be referenced by name: those defined in ``__main__`` or a notebook,
lambdas and local functions. A payload thus loads in a process that never defined them. What
the standard pickler cannot pickle at all (file handles, locks, ...) falls back to dill.
"""

from __future__ import annotations

import io
import sys
from typing import Any

import cloudpickle
import dill

from ..errors import SerializationError
from .blobs import BlobError, Blobs

__all__ = ["copy_payload", "dumps_payload", "dumps_state", "loads_payload"]

PROTOCOL = 5


class _BlobWriteFailed(Exception):
    """Internal: writing a blob failed (an OSError of the store, not of pickling)."""

    def __init__(self, error: OSError) -> None:
        super().__init__(str(error))
        self.error = error


# -- pickling ----------------------------------------------------------------------------------


class _BlobRouting:
    """persistent_id for a pickler: large buffers become blob references."""

    blobs: Blobs | None
    refs: dict[str, int]
    storage_ids: dict[int, tuple[Any, ...]]

    def _setup(self, blobs: Blobs | None, refs: dict[str, int]) -> None:
        self.blobs = blobs
        self.refs = refs
        self.storage_ids = {}
        self.torch = sys.modules.get("torch")
        self.numpy = sys.modules.get("numpy")

    def persistent_id(self, obj: Any) -> Any:
        blobs = self.blobs
        if blobs is None:
            return None
        torch = self.torch
        if torch is not None and isinstance(obj, torch.storage.TypedStorage | torch.UntypedStorage):
            return self._storage_id(obj)
        numpy = self.numpy
        if (
            numpy is not None
            and type(obj) is numpy.ndarray
            and obj.nbytes >= blobs.threshold
            and not obj.dtype.hasobject
        ):
            order = "F" if obj.flags.f_contiguous and not obj.flags.c_contiguous else "C"
            data = numpy.asarray(obj, order=order)
            digest = self._put(memoryview(data.reshape(-1, order=order).view(numpy.uint8)))
            return ("numpy", digest, data.nbytes, data.dtype.str, data.shape, order)
        if type(obj) in (bytes, bytearray) and len(obj) >= blobs.threshold:
            digest = self._put(memoryview(obj))
            return ("bytes", digest, len(obj), type(obj).__name__)
        return None

    def _storage_id(self, obj: Any) -> Any:
        torch = self.torch
        assert torch is not None and self.blobs is not None
        if isinstance(obj, torch.storage.TypedStorage):
            untyped, dtype = obj._untyped_storage, str(obj.dtype).removeprefix("torch.")
        else:
            untyped, dtype = obj, None
        if untyped.device.type == "meta" or untyped.nbytes() < self.blobs.threshold:
            return None
        key = untyped._cdata
        known = self.storage_ids.get(key)
        if known is None:
            cpu = untyped if untyped.device.type == "cpu" else untyped.cpu()
            raw = torch.empty(0, dtype=torch.uint8).set_(cpu, 0, (cpu.nbytes(),), (1,))
            digest = self._put(memoryview(raw.numpy()))
            known = (digest, untyped.nbytes(), str(untyped.device))
            self.storage_ids[key] = known
        digest, nbytes, location = known
        return ("torch", digest, nbytes, dtype, location)

    def _put(self, data: memoryview) -> str:
        assert self.blobs is not None
        try:
            digest = self.blobs.put(data)
        except OSError as error:
            raise _BlobWriteFailed(error) from error
        self.refs[digest] = data.nbytes
        return digest


class _Pickler(_BlobRouting, cloudpickle.Pickler):
    """The standard C pickler, with cloudpickle's by-value classes and functions."""

    def __init__(self, file: io.BytesIO, blobs: Blobs | None, refs: dict[str, int]) -> None:
        cloudpickle.Pickler.__init__(self, file, protocol=PROTOCOL)
        self._setup(blobs, refs)


class _DillPickler(_BlobRouting, dill.Pickler):
    """dill's pickler, for what the standard one cannot pickle (file handles, locks, ...)."""

    def __init__(self, file: io.BytesIO, blobs: Blobs | None, refs: dict[str, int]) -> None:
        dill.Pickler.__init__(self, file, protocol=PROTOCOL)
        self._setup(blobs, refs)


def dumps_payload(obj: Any, blobs: Blobs | None = None) -> tuple[bytes, dict[str, int], str]:
    """Pickle ``obj``; large buffers go to ``blobs`` (inline if None).

    Returns:
        The pickle bytes, the blobs it refers to (digest -> size), and the pickler used
        (``"pickle"``, or ``"dill"`` when the standard pickler could not do it).

    Raises:
        OSError: A blob could not be written (no space left, no permission).
        Exception: Whatever dill raises when neither pickler can pickle ``obj``.
    """
    for kind, pickler in (("pickle", _Pickler), ("dill", _DillPickler)):
        file = io.BytesIO()
        refs: dict[str, int] = {}
        try:
            pickler(file, blobs, refs).dump(obj)
        except _BlobWriteFailed as failed:
            raise failed.error from None
        except Exception:
            if kind == "dill":
                raise
            continue
        return file.getvalue(), refs, kind
    raise AssertionError("unreachable")


MapLocation = Any


class _KeepLiveClasses:
    """find_class hook: a class stored by value that already lives in this process is reused
    as it is.

    cloudpickle, unpickling a class of ``__main__`` in the process that defined it, returns the
    live class but then resets its attributes from the pickle, replacing its methods with
    rebuilt copies. Those have no readable source, so the class's code fingerprint, and every
    id computed from it afterwards, would change in the middle of a session.
    """

    _live_classes: set[int]

    def find_class(self, module: str, name: str) -> Any:
        found = super().find_class(module, name)  # type: ignore[misc]
        if module.startswith("cloudpickle"):
            if name in ("_make_skeleton_class", "_make_skeleton_enum"):
                return self._tracking(found)
            if name == "_class_setstate":
                return self._guarded_setstate(found)
        return found

    def _tracking(self, make: Any) -> Any:
        live = self.__dict__.setdefault("_live_classes", set())

        def make_skeleton(*args: Any) -> Any:
            tracker = cloudpickle.cloudpickle._DYNAMIC_CLASS_TRACKER_BY_ID
            class_tracker_id = args[4] if make.__name__ == "_make_skeleton_class" else args[5]
            existed = class_tracker_id in tracker
            skeleton = make(*args)
            if existed:
                live.add(id(skeleton))
            return skeleton

        return make_skeleton

    def _guarded_setstate(self, setstate: Any) -> Any:
        live = self.__dict__.setdefault("_live_classes", set())

        def class_setstate(obj: Any, state: Any) -> Any:
            return obj if id(obj) in live else setstate(obj, state)

        return class_setstate


class _PayloadUnpickler(_KeepLiveClasses, dill.Unpickler):
    def __init__(
        self, file: io.BytesIO, blobs: Blobs | None, map_location: MapLocation = None
    ) -> None:
        super().__init__(file)
        self.blobs = blobs
        self.map_location = map_location
        self.loaded: dict[tuple[Any, ...], Any] = {}

    def persistent_load(self, pid: Any) -> Any:
        kind, digest, nbytes = pid[0], pid[1], pid[2]
        if self.blobs is None:
            raise BlobError(digest, "no blob folder to read it from")
        if kind == "torch":
            return self._storage(digest, nbytes, pid[3], pid[4])
        data = self.blobs.read(digest, nbytes)
        if kind == "numpy":
            import numpy

            dtype, shape, order = pid[3], pid[4], pid[5]
            flat = numpy.frombuffer(data, dtype=numpy.dtype(dtype))
            return flat.reshape(shape, order=order)
        if kind == "bytes":
            return bytes(data) if pid[3] == "bytes" else bytearray(data)
        raise BlobError(digest, f"unknown reference kind {kind!r}")

    def _storage(self, digest: str, nbytes: int, dtype: str | None, location: str) -> Any:
        import torch

        key = (digest, location)
        untyped = self.loaded.get(key)
        if untyped is None:
            data = self.blobs.read(digest, nbytes)  # type: ignore[union-attr]
            if nbytes:
                untyped = torch.frombuffer(data, dtype=torch.uint8).untyped_storage()
            else:
                untyped = torch.UntypedStorage(0)
            untyped = _place(untyped, location, self.map_location)
            self.loaded[key] = untyped
        if dtype is None:
            return untyped
        return torch.storage.TypedStorage(
            wrap_storage=untyped, dtype=getattr(torch, dtype), _internal=True
        )


def _place(untyped: Any, location: str, map_location: MapLocation) -> Any:
    """Move a loaded storage to where it was saved (if that device exists) or as mapped."""
    import torch

    target: Any = location
    if callable(map_location):
        moved = map_location(untyped, location)
        return untyped if moved is None else moved
    if isinstance(map_location, dict):
        target = map_location.get(location, location)
    elif map_location is not None:
        target = map_location
    device = torch.device(target)
    if device.type == "cpu":
        return untyped
    if device.type == "cuda" and not (
        torch.cuda.is_available() and (device.index or 0) < torch.cuda.device_count()
    ):
        return untyped
    raw = torch.empty(0, dtype=torch.uint8).set_(untyped, 0, (untyped.nbytes(),), (1,))
    return raw.to(device).untyped_storage()


def loads_payload(
    data: bytes | memoryview, blobs: Blobs | None = None, map_location: MapLocation = None
) -> Any:
    """Unpickle a payload, reading (and verifying) the blobs it refers to.

    Raises:
        BlobError: A blob it needs is missing or corrupt.
    """
    return _PayloadUnpickler(io.BytesIO(data), blobs, map_location).load()


# -- copying -----------------------------------------------------------------------------------


class _CopyPickler(cloudpickle.Pickler):
    """Pickles the structure of an object, keeping its large buffers aside by reference."""

    def __init__(self, file: io.BytesIO, buffers: list[Any]) -> None:
        super().__init__(file, protocol=PROTOCOL)
        self.buffers = buffers
        self.keys: dict[int, int] = {}
        self.torch = sys.modules.get("torch")
        self.numpy = sys.modules.get("numpy")

    def persistent_id(self, obj: Any) -> Any:
        torch = self.torch
        if torch is not None and isinstance(obj, torch.storage.TypedStorage | torch.UntypedStorage):
            untyped = obj._untyped_storage if isinstance(obj, torch.storage.TypedStorage) else obj
            if untyped.device.type == "meta":
                return None
            index = self.keys.get(untyped._cdata)
            if index is None:
                index = self.keys[untyped._cdata] = len(self.buffers)
                self.buffers.append(untyped)
            dtype = obj.dtype if isinstance(obj, torch.storage.TypedStorage) else None
            return ("storage", index, dtype)
        numpy = self.numpy
        if numpy is not None and type(obj) is numpy.ndarray and not obj.dtype.hasobject:
            self.buffers.append(obj)
            return ("array", len(self.buffers) - 1, None)
        return None


class _CopyUnpickler(_KeepLiveClasses, dill.Unpickler):
    def __init__(self, file: io.BytesIO, buffers: list[Any]) -> None:
        super().__init__(file)
        self.buffers = buffers
        self.copies: dict[int, Any] = {}

    def persistent_load(self, pid: Any) -> Any:
        kind, index, dtype = pid
        if kind == "array":
            return self.buffers[index].copy()
        import torch

        untyped = self.copies.get(index)
        if untyped is None:
            untyped = self.copies[index] = self.buffers[index].clone()
        if dtype is None:
            return untyped
        return torch.storage.TypedStorage(wrap_storage=untyped, dtype=dtype, _internal=True)


def copy_payload(obj: Any) -> Any:
    """An independent copy of ``obj``, as a save and a load would give, without the disk.

    Used to give a parent's state to each of its children but the last. Unlike
    ``copy.deepcopy`` it copies what pickling can (a pruned module's computed weight, which
    is not a graph leaf, refuses deepcopy), keeps closures pointing into the copy, and copies
    tensor and array buffers once each, directly (shared storages stay shared).
    """
    file = io.BytesIO()
    buffers: list[Any] = []
    try:
        _CopyPickler(file, buffers).dump(obj)
    except Exception:
        import copy

        return copy.deepcopy(obj)  # what the standard pickler refuses (locks, files, ...)
    return _CopyUnpickler(io.BytesIO(file.getvalue()), buffers).load()


def dumps_state(state: Any, blobs: Blobs | None) -> tuple[bytes, dict[str, int], str]:
    """Pickle a state for saving (see :func:`dumps_payload`).

    Raises:
        SerializationError: The state cannot be pickled; the message names the attribute.
        OSError: A blob could not be written (no space left, no permission).
    """
    try:
        return dumps_payload(state, blobs)
    except OSError:
        raise  # a blob could not be written: the store reports that, not "unpicklable"
    except Exception as error:
        culprit = _find_unpicklable(state)
        what = f"attribute `{culprit[0]}` holds a `{culprit[1]}`" if culprit else "it"
        raise SerializationError(
            f"State {type(state).__name__} cannot be saved: {what}, which cannot be pickled "
            f"({type(error).__name__}: {error}). Remove it from the state before it is saved "
            "(a save_pre_hook, or del in the recipe), store something picklable that describes "
            "it instead, or give the state class __getstate__/__setstate__ that leave it out.",
            attribute=culprit[0] if culprit else None,
            value_type=culprit[1] if culprit else None,
        ) from error


def _find_unpicklable(state: Any) -> tuple[str, str] | None:
    getstate = getattr(state, "__getstate__", None)
    try:
        attributes = getstate() if callable(getstate) else vars(state)
    except Exception:
        return None
    if not isinstance(attributes, dict):
        return None
    for name, value in attributes.items():
        try:
            dumps_payload(value, None)
        except Exception:
            return name, f"{type(value).__module__}.{type(value).__qualname__}"
    return None
