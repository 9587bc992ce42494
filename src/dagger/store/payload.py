"""Payload serialization: one set of pickling rules for storing, copying and loading a state.

A payload is a pickle in which every tensor storage, and every numpy array or bytes object of
at least ``threshold`` bytes, is replaced by a reference: large buffers go to content-addressed
blobs (see :mod:`dagger.store.blobs`), small storages travel inside the reference. Tensors that
shared a storage when saved share one after loading; each load builds new storages, so two
loads are independent of each other and of the files. Because every storage comes back through
:func:`loads_payload`, ``map_location`` applies to every tensor, however small.

The rules, the same for a save (:func:`dumps_state`), a copy for a sibling
(:func:`copy_payload`) and a recorded result (:func:`dumps_payload`):

* **The primary pickler** is the standard C pickler through cloudpickle, which stores by value
  (in the same stream, so references stay shared) what cannot be referenced by name: classes
  and functions defined in ``__main__`` or a notebook, lambdas, local functions. A payload thus
  loads in a process that never defined them.
* **Modules** of any type (``torch.backends.cudnn`` is a ``CudnnModule``) are stored by
  reference when they are importable by name, and imported again on load.
* **Resources are refused**: open files and streams (but ``sys.stdout``, ``sys.stderr`` and
  ``sys.stdin``, stored by reference), sockets, locks and other thread or process
  synchronisation objects, threads, processes, pools and executors, pipes, shared memory,
  generators and coroutines, frames and tracebacks, database connections, memory maps, logging
  handlers, event loops. A load could not bring them back as they were, and pickling some of
  them would have side effects now or at load time (dill reopens a pickled file, in write mode
  if it was written, which truncates it). They raise :class:`~dagger.errors.SerializationError`
  naming the attribute path (``state.meter.lock``) and the fix.
* **Transient attributes**: the names a state class lists in ``TRANSIENT_ATTRIBUTES`` are not
  stored; they are None after a load and in a copy (use :func:`clear_transient` to give the
  same view of a state that is handed on without a copy).
* **The fallback pickler**, dill, is used only when the primary one failed on an object whose
  type dill rebuilds without touching anything outside the process: a weak reference, a
  ``super`` object, a class-method descriptor, an ``lru_cache`` wrapper that is not importable
  by name (``_DILL_FIXES``). Anything else the primary pickler refuses, dill is not asked. dill
  runs under the same rules (resources refused, modules by reference, transient attributes).

When pickling fails, the object that caused it is located by pickling the parts of the state
(no blob is written while looking), and the error names its path and the primary pickler's
error, never the fallback's. Loading opens no file for writing: a payload written by an older
dagger that holds a file handle gets None there (with a warning) instead of reopening the file.
"""

from __future__ import annotations

import copyreg
import functools
import importlib
import io
import logging
import pickle
import sys
import types
import weakref
from collections.abc import Callable, Iterator
from typing import Any

import cloudpickle
import dill

from ..errors import SerializationError
from .blobs import DEFAULT_THRESHOLD, BlobError, Blobs

__all__ = [
    "PROTOCOL",
    "clear_transient",
    "copy_payload",
    "dumps_payload",
    "dumps_state",
    "loads_payload",
    "transient_attributes",
]

logger = logging.getLogger("dagger")

PROTOCOL = 5

MapLocation = Any

# -- what an object is, for the pickler ----------------------------------------------------------

# Kinds of types, as the pickler's hooks see them (decided once per type and pickler).
_PLAIN, _CODE, _MODULE, _RESOURCE = range(4)
# Kinds of buffers, for persistent_id.
_NOT_A_BUFFER, _STORAGE, _ARRAY, _BYTES = range(4)

# (module, name, what it is): resources refused at save time. Looked up only in modules already
# imported (an object of a type from a module that is not imported cannot exist).
_RESOURCE_TYPES: tuple[tuple[str, str, str], ...] = (
    ("io", "IOBase", "an open file or stream"),
    ("socket", "socket", "a socket"),
    ("_thread", "LockType", "a lock"),
    ("_thread", "RLock", "a lock"),
    ("threading", "Condition", "a thread synchronisation object"),
    ("threading", "Semaphore", "a thread synchronisation object"),
    ("threading", "Event", "a thread synchronisation object"),
    ("threading", "Barrier", "a thread synchronisation object"),
    ("threading", "Thread", "a thread"),
    ("_thread", "_local", "thread-local storage"),
    ("multiprocessing.synchronize", "SemLock", "a multiprocessing lock"),
    ("multiprocessing.synchronize", "Condition", "a multiprocessing synchronisation object"),
    ("multiprocessing.synchronize", "Event", "a multiprocessing synchronisation object"),
    ("multiprocessing.synchronize", "Barrier", "a multiprocessing synchronisation object"),
    ("multiprocessing.process", "BaseProcess", "a process"),
    ("multiprocessing.connection", "Connection", "a pipe"),
    ("multiprocessing.queues", "Queue", "a multiprocessing queue"),
    ("multiprocessing.pool", "Pool", "a process pool"),
    ("multiprocessing.managers", "BaseManager", "a multiprocessing manager"),
    ("multiprocessing.managers", "BaseProxy", "a proxy to a multiprocessing manager"),
    ("multiprocessing.shared_memory", "SharedMemory", "a shared memory block"),
    ("concurrent.futures", "Executor", "an executor"),
    ("subprocess", "Popen", "a subprocess"),
    ("types", "GeneratorType", "a generator"),
    ("types", "AsyncGeneratorType", "a generator"),
    ("types", "CoroutineType", "a coroutine"),
    ("types", "FrameType", "a stack frame"),
    ("types", "TracebackType", "a traceback"),
    ("sqlite3", "Connection", "a database connection"),
    ("sqlite3", "Cursor", "a database cursor"),
    ("mmap", "mmap", "a memory map"),
    ("logging", "Handler", "a logging handler"),
    ("selectors", "BaseSelector", "a selector"),
    ("asyncio", "AbstractEventLoop", "an event loop"),
)
# In-memory streams: io.IOBase subclasses that hold only values, and pickle as such.
_IN_MEMORY_STREAMS = (io.BytesIO, io.StringIO)

# Types the primary pickler refuses and dill rebuilds inside the process alone (see the module
# docstring). KeyedRef (a weakref subclass, in WeakValueDictionary) is not: dill refuses it.
_DILL_FIXES: frozenset[type] = frozenset(
    {
        weakref.ReferenceType,
        super,
        types.ClassMethodDescriptorType,
        type(functools.lru_cache(maxsize=None)(lambda: None)),
    }
)


def _resource_kind(cls: type) -> str | None:
    """What a resource type is ("a lock"), or None if the type is not a resource."""
    if issubclass(cls, _IN_MEMORY_STREAMS):
        return None
    for module_name, name, what in _RESOURCE_TYPES:
        module = sys.modules.get(module_name)
        base = getattr(module, name, None) if module is not None else None
        if isinstance(base, type) and issubclass(cls, base):
            return what
    return None


def _kind_of(cls: type, classify: Callable[[type], int], cache: dict[int, Any]) -> int:
    """``classify(cls)``, remembered across picklers in ``cache`` (one payload after another
    meets the same few classes; classifying one looks at every resource type, ~8 us). Keyed
    by id with a weak reference: an entry never keeps a class alive and goes with it. A class's
    bases never change, and a resource or buffer type cannot be subclassed before its module
    is imported, so an answer stays true."""
    key = id(cls)
    entry = cache.get(key)
    if entry is not None and entry[0]() is cls:
        kind: int = entry[1]
        return kind
    kind = classify(cls)

    def forget(ref: weakref.ref[type]) -> None:
        found = cache.get(key)
        if found is not None and found[0] is ref:
            del cache[key]

    cache[key] = (weakref.ref(cls, forget), kind)
    return kind


# id(class) -> (weak reference to the class, its kind): _classify's and _buffer_kind's answers
_CLASS_KINDS: dict[int, tuple[weakref.ref[type], int]] = {}
_BUFFER_KINDS: dict[int, tuple[weakref.ref[type], int]] = {}


def _classify(cls: type) -> int:
    if issubclass(cls, type) or cls is types.FunctionType:
        return _CODE
    if issubclass(cls, types.ModuleType):
        return _MODULE
    if _resource_kind(cls) is not None:
        return _RESOURCE
    return _PLAIN


def _buffer_kind(cls: type) -> int:
    """Whether a class is a torch storage, a numpy array or bytes (else not a buffer)."""
    torch = sys.modules.get("torch")
    if torch is not None and issubclass(cls, torch.storage.TypedStorage | torch.UntypedStorage):
        return _STORAGE
    numpy = sys.modules.get("numpy")
    if numpy is not None and cls is numpy.ndarray:
        return _ARRAY
    if cls is bytes or cls is bytearray:
        return _BYTES
    return _NOT_A_BUFFER


class _Refused(pickle.PicklingError):
    """Internal: a resource was met while pickling."""

    def __init__(self, obj: Any, what: str) -> None:
        cls = type(obj)
        super().__init__(f"{what} (`{cls.__module__}.{cls.__qualname__}`) is never stored")
        self.what = what


class _BlobWriteFailed(Exception):
    """Internal: writing a blob failed (an OSError of the store, not of pickling)."""

    def __init__(self, error: OSError) -> None:
        super().__init__(str(error))
        self.error = error


_STD_STREAMS = ("stdout", "stderr", "stdin", "__stdout__", "__stderr__", "__stdin__")


def transient_attributes(state: Any) -> tuple[str, ...]:
    """The names a state's class lists in ``TRANSIENT_ATTRIBUTES`` (empty if none).

    Raises:
        SerializationError: ``TRANSIENT_ATTRIBUTES`` is not a list of attribute names.
    """
    names = getattr(type(state), "TRANSIENT_ATTRIBUTES", None)
    if not names:
        return ()
    if isinstance(names, str) or not all(isinstance(name, str) for name in names):
        cls = type(state).__name__
        raise SerializationError(
            f"{cls}.TRANSIENT_ATTRIBUTES is {names!r}; it must be a list of attribute names, "
            f"for example TRANSIENT_ATTRIBUTES = [{names!r}] for one name.",
            state_class=cls,
            value=repr(names),
        )
    return tuple(names)


def clear_transient(state: Any) -> None:
    """Set a state's transient attributes to None, as a load or a copy gives them.

    For a state handed on without a copy (the last child of a parent gets the parent object
    itself), so that every child sees its parent the same way.
    """
    for name in transient_attributes(state):
        setattr(state, name, None)


# -- the rules, shared by every pickler ----------------------------------------------------------


class _Rules:
    """reducer_override and persistent_id hooks common to every pickler of a payload.

    Subclasses choose what becomes of buffers (:meth:`_route`) and, through ``_code_reduce``,
    how code is pickled (cloudpickle's by-value classes and functions, or dill's).
    """

    def _init_rules(self, root: Any, transient: tuple[str, ...]) -> None:
        self._transient_root = root if transient else _NOTHING
        self._transient = transient
        self._kinds: dict[type, int] = {}
        self._buffer_kinds: dict[type, int] = {}
        self.torch = sys.modules.get("torch")
        self.numpy = sys.modules.get("numpy")

    # reducer_override is called for every object that is not of a builtin container or atomic
    # type (by the C pickler) or for every object (by dill's pure-Python one).
    def reducer_override(self, obj: Any) -> Any:
        if obj is self._transient_root:
            return self._without_transient(obj)
        cls = type(obj)
        try:
            kind = self._kinds[cls]
        except KeyError:
            kind = self._kinds[cls] = _kind_of(cls, _classify, _CLASS_KINDS)
        if kind == _PLAIN:
            return NotImplemented
        if kind == _CODE:
            return self._code_reduce(obj)
        if kind == _MODULE:
            name = getattr(obj, "__name__", None)
            if isinstance(name, str) and sys.modules.get(name) is obj:
                return importlib.import_module, (name,)
            return NotImplemented
        for stream in _STD_STREAMS:
            if obj is getattr(sys, stream, None):
                return getattr, (sys, stream)
        raise _Refused(obj, _resource_kind(cls) or "a resource")

    def _code_reduce(self, obj: Any) -> Any:
        return NotImplemented

    def _without_transient(self, obj: Any) -> Any:
        reduced = obj.__reduce_ex__(PROTOCOL)
        cleared = dict.fromkeys(self._transient)
        if isinstance(reduced, tuple) and len(reduced) >= 3:
            state = reduced[2]
            if isinstance(state, dict):
                return (reduced[0], reduced[1], {**state, **cleared}, *reduced[3:])
            if isinstance(state, tuple) and len(state) == 2 and isinstance(state[0], dict):
                return (reduced[0], reduced[1], ({**state[0], **cleared}, state[1]), *reduced[3:])
        cls = type(obj).__name__
        raise SerializationError(
            f"{cls} lists TRANSIENT_ATTRIBUTES, but its instances do not pickle their "
            "attributes as a dict (a custom __reduce__ or __getstate__), so dagger cannot leave "
            f"them out. Let {cls}.__getstate__ return a dict, or leave those attributes out in "
            "__getstate__ yourself and drop TRANSIENT_ATTRIBUTES.",
            state_class=cls,
        )

    def persistent_id(self, obj: Any) -> Any:
        cls = type(obj)
        try:
            kind = self._buffer_kinds[cls]
        except KeyError:
            kind = self._buffer_kinds[cls] = _kind_of(cls, _buffer_kind, _BUFFER_KINDS)
        if kind == _NOT_A_BUFFER:
            return None
        return self._route(kind, obj)

    def _route(self, kind: int, obj: Any) -> Any:
        raise NotImplementedError

    # helpers for _route

    def _untyped(self, obj: Any) -> tuple[Any, str | None]:
        """The untyped storage behind a storage, and its dtype name (None if untyped)."""
        torch = self.torch
        assert torch is not None
        if isinstance(obj, torch.UntypedStorage):
            return obj, None
        return obj._untyped_storage, str(obj.dtype).removeprefix("torch.")

    def _routable_array(self, obj: Any) -> bool:
        """Arrays whose raw bytes are their value (not objects, not numpy's StringDType)."""
        return not obj.dtype.hasobject


_NOTHING = object()


def _array_order(array: Any) -> str:
    # As numpy's own pickling: Fortran order kept, anything else made C-contiguous.
    return "F" if array.flags.f_contiguous and not array.flags.c_contiguous else "C"


def _storage_bytes(torch: Any, untyped: Any) -> memoryview:
    """The raw bytes of a storage, as a memoryview (copied to the CPU if it is elsewhere)."""
    cpu = untyped if untyped.device.type == "cpu" else untyped.cpu()
    if cpu.nbytes() == 0:
        return memoryview(b"")
    raw = torch.empty(0, dtype=torch.uint8).set_(cpu, 0, (cpu.nbytes(),), (1,))
    return memoryview(raw.numpy())


class _SaveRouting(_Rules):
    """Large buffers to blobs; small storages inline in their reference (``blobs`` None: all
    storages inline, arrays and bytes pickled as they are)."""

    blobs: Blobs | None
    refs: dict[str, int]

    def _init_routing(self, blobs: Blobs | None, refs: dict[str, int]) -> None:
        self.blobs = blobs
        self.refs = refs
        self.threshold = blobs.threshold if blobs is not None else None
        self.storage_ids: dict[int, Any] = {}
        self.buffer_ids: dict[int, tuple[Any, tuple[Any, ...]]] = {}

    def _route(self, kind: int, obj: Any) -> Any:
        threshold = self.threshold
        if kind == _STORAGE:
            return self._storage_id(obj)
        if threshold is None:
            return None
        if kind == _ARRAY:
            if obj.nbytes < threshold or not self._routable_array(obj):
                return None
        elif len(obj) < threshold:
            return None
        # An array or bytearray referenced twice is one object again after loading: its
        # reference is one tuple, which the pickler memoizes, and the loader caches by it.
        known = self.buffer_ids.get(id(obj))
        if known is not None:
            return known[1]
        if kind == _ARRAY:
            numpy = self.numpy
            assert numpy is not None
            order = _array_order(obj)
            data = numpy.asarray(obj, order=order)
            digest = self._put(memoryview(data.reshape(-1, order=order).view(numpy.uint8)))
            # The dtype itself, not its string: ``dtype.str`` of a structured dtype is "|V8".
            pid: tuple[Any, ...] = ("numpy", digest, data.nbytes, data.dtype, data.shape, order)
        else:
            digest = self._put(memoryview(obj))
            pid = ("bytes", digest, len(obj), type(obj).__name__)
        self.buffer_ids[id(obj)] = (obj, pid)
        return pid

    def _storage_id(self, obj: Any) -> Any:
        torch = self.torch
        assert torch is not None
        untyped, dtype = self._untyped(obj)
        device = untyped.device
        if device.type == "meta":
            return ("torch-meta", untyped.nbytes(), dtype)
        key = untyped._cdata
        known: tuple[Any, ...] | None = self.storage_ids.get(key)
        if known is None:
            nbytes = untyped.nbytes()
            if self.threshold is not None and nbytes >= self.threshold:
                digest = self._put(_storage_bytes(torch, untyped))
                known = ("blob", digest, nbytes, str(device))
            else:
                # One bytes object per storage: the pickler memoizes it, so a storage shared
                # by several tensors is written once and shared again on load.
                known = ("inline", bytes(_storage_bytes(torch, untyped)), str(device))
            self.storage_ids[key] = known
        if known[0] == "blob":
            return ("torch", known[1], known[2], dtype, known[3])
        return ("torch-bytes", known[1], dtype, known[2])

    def _put(self, data: memoryview) -> str:
        assert self.blobs is not None
        try:
            digest = self.blobs.put(data)
        except OSError as error:
            raise _BlobWriteFailed(error) from error
        self.refs[digest] = data.nbytes
        return digest


class _CopyRouting(_Rules):
    """Buffers kept aside by reference, copied once each when the copy is unpickled."""

    def _init_routing(self, buffers: list[Any]) -> None:
        self.buffers = buffers
        self.storage_index: dict[int, int] = {}
        self.buffer_index: dict[int, int] = {}

    def _route(self, kind: int, obj: Any) -> Any:
        if kind == _STORAGE:
            untyped, dtype = self._untyped(obj)
            if untyped.device.type == "meta":
                return ("torch-meta", untyped.nbytes(), dtype)
            index = self.storage_index.get(untyped._cdata)
            if index is None:
                index = self.storage_index[untyped._cdata] = len(self.buffers)
                self.buffers.append(untyped)
            return ("storage", index, dtype)
        if kind == _ARRAY:
            if not self._routable_array(obj):
                return None
        elif len(obj) < DEFAULT_THRESHOLD:
            return None
        index = self.buffer_index.get(id(obj))
        if index is None:
            index = self.buffer_index[id(obj)] = len(self.buffers)
            self.buffers.append(obj)
        return ("array" if kind == _ARRAY else "bytes", index)


class _DryRouting(_Rules):
    """Every buffer becomes a placeholder: for locating a failure without writing anything."""

    def _init_routing(self) -> None:
        pass

    def _route(self, kind: int, obj: Any) -> Any:
        if kind == _ARRAY and not self._routable_array(obj):
            return None
        return ("dry",)


class _CloudRules(_Rules):
    def _code_reduce(self, obj: Any) -> Any:
        # cloudpickle's own hook: classes and functions by value when not importable by name.
        return cloudpickle.Pickler.reducer_override(self, obj)


class _SavePickler(_SaveRouting, _CloudRules, cloudpickle.Pickler):
    def __init__(self, file: io.BytesIO, root: Any, transient: tuple[str, ...], blobs: Any) -> None:
        cloudpickle.Pickler.__init__(self, file, protocol=PROTOCOL)
        self._init_rules(root, transient)
        self._init_routing(blobs, {})


class _DillSavePickler(_SaveRouting, dill.Pickler):
    def __init__(self, file: io.BytesIO, root: Any, transient: tuple[str, ...], blobs: Any) -> None:
        # recurse: a function's globals are pickled as far as it uses them, as cloudpickle
        # does, rather than by reference to the __main__ of the loading process.
        dill.Pickler.__init__(self, file, protocol=PROTOCOL, recurse=True)
        self._init_rules(root, transient)
        self._init_routing(blobs, {})


class _CopyPickler(_CopyRouting, _CloudRules, cloudpickle.Pickler):
    def __init__(
        self, file: io.BytesIO, root: Any, transient: tuple[str, ...], buffers: Any
    ) -> None:
        cloudpickle.Pickler.__init__(self, file, protocol=PROTOCOL)
        self._init_rules(root, transient)
        self._init_routing(buffers)


class _DillCopyPickler(_CopyRouting, dill.Pickler):
    def __init__(
        self, file: io.BytesIO, root: Any, transient: tuple[str, ...], buffers: Any
    ) -> None:
        dill.Pickler.__init__(self, file, protocol=PROTOCOL, recurse=True)
        self._init_rules(root, transient)
        self._init_routing(buffers)


class _DryPickler(_DryRouting, _CloudRules, cloudpickle.Pickler):
    def __init__(self, file: io.BytesIO, root: Any, transient: tuple[str, ...]) -> None:
        cloudpickle.Pickler.__init__(self, file, protocol=PROTOCOL)
        self._init_rules(root, transient)


class _DillDryPickler(_DryRouting, dill.Pickler):
    def __init__(self, file: io.BytesIO, root: Any, transient: tuple[str, ...]) -> None:
        dill.Pickler.__init__(self, file, protocol=PROTOCOL, recurse=True)
        self._init_rules(root, transient)


# -- pickling with the fallback, and the error when it fails -----------------------------------


class _Subject:
    """What is being pickled, for the error message: a state, a result, a value."""

    def __init__(self, obj: Any, label: str, describe: str | None, state_id: str | None) -> None:
        self.obj = obj
        self.label = label
        self.is_state = describe is None and hasattr(type(obj), "TRANSIENT_ATTRIBUTES")
        cls = type(obj).__name__
        if describe is None:
            short = f" ({state_id[:12]})" if state_id else ""
            describe = f"State `{cls}`{short}" if self.is_state else f"A `{cls}`"
        self.describe = describe
        self.state_id = state_id


def _pickle(
    subject: _Subject,
    primary: Callable[[io.BytesIO], Any],
    fallback: Callable[[io.BytesIO], Any],
    verb: str,
) -> tuple[bytes, Any, str]:
    """Pickle with the primary pickler, falling back to dill only for what it can fix.

    Returns:
        The pickle, the pickler object that wrote it, and ``"pickle"`` or ``"dill"``.
    """
    file = io.BytesIO()
    pickler = primary(file)
    try:
        pickler.dump(subject.obj)
    except _BlobWriteFailed as failed:
        raise failed.error from None
    except SerializationError:
        raise
    except Exception as error:
        found = _locate(subject, _DryPickler)
        path, culprit, culprit_error = found or (subject.label, subject.obj, error)
        if type(culprit) not in _DILL_FIXES:
            raise _error(subject, verb, path, culprit, culprit_error) from error
        file = io.BytesIO()
        pickler = fallback(file)
        try:
            pickler.dump(subject.obj)
        except _BlobWriteFailed as failed:
            raise failed.error from None
        except SerializationError:
            raise
        except Exception as dill_error:
            found = _locate(subject, _DillDryPickler)
            path, culprit, culprit_error = found or (subject.label, subject.obj, dill_error)
            raise _error(subject, verb, path, culprit, culprit_error) from dill_error
        return file.getvalue(), pickler, "dill"
    return file.getvalue(), pickler, "pickle"


def dumps_payload(
    obj: Any, blobs: Blobs | None = None, *, what: str | None = None, label: str = "value"
) -> tuple[bytes, dict[str, int], str]:
    """Pickle ``obj`` under the payload rules; large buffers go to ``blobs``.

    With ``blobs`` None, arrays and bytes are pickled inline and tensor storages inline in
    their references (so ``map_location`` still applies to them on load).

    Args:
        obj: What to pickle.
        blobs: The blob folder, or None.
        what: How an error message names ``obj`` ("The result of Function `f`"); default:
            "State `Cls`" for a state, else "A `Cls`".
        label: The root of attribute paths in error messages (``"result"`` gives
            ``result['key'].lock``).

    Returns:
        The pickle bytes, the blobs it refers to (digest -> size), and the pickler used
        (``"pickle"``, or ``"dill"`` for what only dill can pickle, see the module docstring).

    Raises:
        SerializationError: ``obj`` holds a resource, or something neither pickler can pickle
            (or that only an unsafe one could); its ``path`` attribute names where.
        OSError: A blob could not be written.
    """
    subject = _Subject(obj, label, what, None)
    return _dumps(subject, blobs, "stored")


def dumps_state(
    state: Any, blobs: Blobs | None, *, state_id: str | None = None
) -> tuple[bytes, dict[str, int], str]:
    """Pickle a state for saving (see :func:`dumps_payload`); transient attributes left out.

    ``blobs`` None (an in-memory store) keeps every buffer inside the pickle.

    Raises:
        SerializationError: The state cannot be stored; the message names the state (class
            and ``state_id`` when given), the attribute path and the fix, and the error has
            ``path``, ``attribute``, ``value_type``, ``state_class`` and ``state_id``.
        OSError: A blob could not be written.
    """
    return _dumps(_Subject(state, "state", None, state_id), blobs, "stored")


def _dumps(subject: _Subject, blobs: Blobs | None, verb: str) -> tuple[bytes, dict[str, int], str]:
    transient = transient_attributes(subject.obj)
    root = subject.obj
    data, pickler, kind = _pickle(
        subject,
        lambda file: _SavePickler(file, root, transient, blobs),
        lambda file: _DillSavePickler(file, root, transient, blobs),
        verb,
    )
    return data, pickler.refs, kind


def copy_payload(obj: Any, *, state_id: str | None = None) -> Any:
    """An independent copy of ``obj``, as a save and a load would give, without the disk.

    Used to give a parent's state to each of its children but the last. It follows the rules
    of :func:`dumps_state` (the same objects are accepted and refused, transient attributes are
    None in the copy) and, unlike ``copy.deepcopy``, copies what pickling can (a pruned
    module's computed weight, which is not a graph leaf, refuses deepcopy), keeps closures
    pointing into the copy, and copies tensor and array buffers once each, directly (shared
    storages stay shared).

    Args:
        obj: The state (or any object) to copy.
        state_id: The state's id, for the error message.

    Raises:
        SerializationError: ``obj`` cannot be copied by those rules; the error names the state
            and the attribute path, as :func:`dumps_state` does.
    """
    subject = _Subject(obj, "state", None, state_id)
    if not subject.is_state:
        subject.label = "value"
    transient = transient_attributes(obj)
    buffers: list[Any] = []
    data, _, _ = _pickle(
        subject,
        lambda file: _CopyPickler(file, obj, transient, buffers),
        lambda file: _DillCopyPickler(file, obj, transient, buffers),
        "copied",
    )
    return _CopyUnpickler(io.BytesIO(data), buffers).load()


# -- locating a failure --------------------------------------------------------------------------


def _locate(subject: _Subject, flavor: Any) -> tuple[str, Any, BaseException] | None:
    """The path of the deepest part of ``subject.obj`` that fails to pickle on its own.

    Pickles parts with ``flavor`` (a dry pickler, which writes no blob): from the root down,
    each step takes the first child that fails on its own, until no child fails.
    """
    transient = transient_attributes(subject.obj)

    def failure(obj: Any) -> BaseException | None:
        try:
            flavor(io.BytesIO(), subject.obj, transient).dump(obj)
        except SerializationError:
            raise
        except Exception as error:
            return error
        return None

    error = failure(subject.obj)
    if error is None:
        return None
    path, current = subject.label, subject.obj
    ancestors = {id(current)}
    reducer = flavor(io.BytesIO(), subject.obj, transient)
    while True:
        children = [(label, child) for label, child in _children(reducer, current)]
        children = [(label, child) for label, child in children if id(child) not in ancestors]
        found = _first_failing(children, failure)
        if found is None:
            return path, current, error
        (label, current), error = found
        path += label
        ancestors.add(id(current))


def _first_failing(
    children: list[tuple[str, Any]], failure: Callable[[Any], BaseException | None]
) -> tuple[tuple[str, Any], BaseException] | None:
    """The first child that fails on its own, found by halves in long lists."""
    while len(children) > 8:
        half = len(children) // 2
        if failure([child for _, child in children[:half]]) is not None:
            children = children[:half]
        else:
            children = children[half:]
    for entry in children:
        error = failure(entry[1])
        if error is not None:
            return entry, error
    return None


def _children(reducer: Any, obj: Any) -> Iterator[tuple[str, Any]]:
    """The parts a pickler saves for ``obj``, each with its path label."""
    if type(obj) in (list, tuple):
        for index, item in enumerate(obj):
            yield f"[{index}]", item
        return
    if type(obj) is dict:
        yield from _dict_children(obj)
        return
    if type(obj) in (set, frozenset):
        for item in obj:
            yield f" (element {item!r:.40})", item
        return
    try:
        reduced = reducer.reducer_override(obj)
        if reduced is NotImplemented:
            table = getattr(reducer, "dispatch_table", copyreg.dispatch_table)
            custom = table.get(type(obj))
            if custom is not None:
                reduced = custom(obj)
            elif isinstance(obj, type):
                return
            else:
                reduced = obj.__reduce_ex__(PROTOCOL)
    except Exception:
        return
    if not isinstance(reduced, tuple):
        return
    function, arguments = reduced[0], reduced[1] if len(reduced) > 1 else ()
    state = reduced[2] if len(reduced) > 2 else None
    if getattr(function, "__name__", "") in ("__newobj__", "__newobj_ex__") and arguments:
        yield ".__class__", arguments[0]
        arguments = arguments[1:]
    else:
        yield " (its reconstructor)", function
    for index, argument in enumerate(arguments or ()):
        yield f" (argument {index})", argument
    if isinstance(state, tuple) and len(state) == 2 and isinstance(state[1], dict | None):
        for part in state:
            if isinstance(part, dict):
                yield from _attribute_children(part)
    elif isinstance(state, dict):
        yield from _attribute_children(state)
    elif state is not None:
        yield " (its state)", state
    if len(reduced) > 3 and reduced[3] is not None:
        for index, item in enumerate(reduced[3]):
            yield f"[{index}]", item
    if len(reduced) > 4 and reduced[4] is not None:
        for key, value in reduced[4]:
            yield f"[{key!r}]", value


def _dict_children(mapping: dict[Any, Any]) -> Iterator[tuple[str, Any]]:
    for key, value in mapping.items():
        yield f"[{key!r}]", value
        if not isinstance(key, str | int | float | bool | None):
            yield f" (key {key!r:.40})", key


def _attribute_children(mapping: dict[Any, Any]) -> Iterator[tuple[str, Any]]:
    for key, value in mapping.items():
        if isinstance(key, str) and key.isidentifier():
            yield f".{key}", value
        else:
            yield f"[{key!r}]", value


def _type_name(obj: Any) -> str:
    cls = type(obj)
    return (
        cls.__qualname__ if cls.__module__ == "builtins" else f"{cls.__module__}.{cls.__qualname__}"
    )


def _error(
    subject: _Subject, verb: str, path: str, culprit: Any, error: BaseException
) -> SerializationError:
    """The public error for a failure at ``path`` (``error`` is the primary pickler's)."""
    value_type = _type_name(culprit)
    if isinstance(error, _Refused):
        problem = (
            f"`{path}` is {error.what} (`{value_type}`), which dagger never stores: a load "
            "could not bring it back as it was, and pickling it could act on the world outside "
            "the process"
        )
    else:
        problem = (
            f"`{path}` holds a `{value_type}`, which cannot be pickled "
            f"({type(error).__name__}: {error})"
        )
    rest = path[len(subject.label) :]
    attribute = _first_attribute(rest)
    cls = type(subject.obj).__name__
    if rest.startswith(".__class__"):
        fix = (
            f"Class `{cls}` is not importable by name (defined in __main__, a notebook or a "
            "function), so its code is stored by value with the globals it uses, and that "
            "path is one of them. Move the code that uses it into an importable module (a .py "
            "file beside the script or notebook), which dagger stores by reference."
        )
    elif subject.is_state and attribute is not None:
        owner = _owner_fix(subject.obj, rest)
        fix = (
            f"List `{attribute}` in {cls}.TRANSIENT_ATTRIBUTES: it is then not stored, and is "
            "None after a load and in the copy each child recipe gets (recreate it there if "
            f"needed){owner}, or remove it before the state is stored (`del state.{attribute}` "
            "in the recipe, or a save_pre_hook)."
        )
    else:
        fix = (
            "Store something picklable that describes it instead, or give its class "
            "__getstate__/__setstate__ that leave it out and recreate it."
        )
    return SerializationError(
        f"{subject.describe} cannot be {verb}: {problem}. {fix}",
        path=path,
        attribute=attribute,
        value_type=value_type,
        state_class=cls,
        state_id=subject.state_id,
        reason=f"{type(error).__name__}: {error}",
    )


def _first_attribute(rest: str) -> str | None:
    """``meter`` for ``.meter.lock``; None when the path does not start with an attribute."""
    if not rest.startswith("."):
        return None
    name = rest[1:]
    for stop in ".[ ":
        name = name.split(stop, 1)[0]
    return name or None


def _owner_fix(state: Any, rest: str) -> str:
    """ ", or give `Meter` __getstate__/..." when the culprit sits inside a user object."""
    parts = rest.split(".")
    if len(parts) < 3 or "[" in rest or " " in rest:
        return ""
    owner: Any = state
    try:
        for name in parts[1:-1]:
            owner = getattr(owner, name)
    except AttributeError:
        return ""
    return (
        f", or give `{_type_name(owner)}` __getstate__/__setstate__ that leave "
        f"`{parts[-1]}` out and recreate it"
    )


# -- loading -------------------------------------------------------------------------------------


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


def _no_reopen(name: str, mode: str, *rest: Any) -> None:
    logger.warning(
        "A stored state held an open file %r (mode %r), pickled by an older dagger. dagger "
        "never reopens files when loading, so that attribute is None. List it in the state "
        "class's TRANSIENT_ATTRIBUTES and recompute the state to store it without the file.",
        name,
        mode,
    )


def _rebuild_tensor_v3(storage: Any, *args: Any) -> Any:
    """torch's rebuild for the newer dtypes (uint16, float8, ...), given an untyped storage."""
    import torch

    if isinstance(storage, torch.UntypedStorage):
        storage = torch.storage.TypedStorage(
            wrap_storage=storage, dtype=torch.uint8, _internal=True
        )
    return torch._utils._rebuild_tensor_v3(storage, *args)


class _SafeUnpickler(_KeepLiveClasses, dill.Unpickler):
    """The unpickler of payloads and copies: no file is reopened, every storage is placed."""

    map_location: MapLocation = None

    def find_class(self, module: str, name: str) -> Any:
        if name == "_create_filehandle" and module in ("dill._dill", "dill.dill"):
            return _no_reopen
        if module == "torch._utils" and name == "_rebuild_tensor_v3":
            return _rebuild_tensor_v3
        if module == "torch.storage" and name == "_load_from_bytes":
            # A small storage pickled by torch itself (payloads of older dagger versions).
            return self._torch_load_storage
        return super().find_class(module, name)

    def _torch_load_storage(self, data: bytes) -> Any:
        import torch

        map_location = self.map_location

        def place(storage: Any, location: str) -> Any:
            return _place(storage, location, map_location)

        return torch.load(io.BytesIO(data), map_location=place, weights_only=False)

    def _typed(self, untyped: Any, dtype: str | None) -> Any:
        if dtype is None:
            return untyped
        import torch

        return torch.storage.TypedStorage(
            wrap_storage=untyped, dtype=getattr(torch, dtype), _internal=True
        )


class _PayloadUnpickler(_SafeUnpickler):
    def __init__(
        self, file: io.BytesIO, blobs: Blobs | None, map_location: MapLocation = None
    ) -> None:
        super().__init__(file)
        self.blobs = blobs
        self.map_location = map_location
        self.loaded: dict[tuple[Any, ...], Any] = {}

    def persistent_load(self, pid: Any) -> Any:
        kind = pid[0]
        if kind == "torch-bytes":
            return self._inline_storage(pid[1], pid[2], pid[3])
        if kind == "torch-meta":
            return self._typed(_meta_storage(pid[1]), pid[2])
        digest, nbytes = pid[1], pid[2]
        if self.blobs is None:
            raise BlobError(digest, "no blob folder to read it from")
        if kind == "torch":
            return self._storage(digest, nbytes, pid[3], pid[4])
        known = self.loaded.get((id(pid),))
        if known is not None:
            return known[0]
        data = self.blobs.read(digest, nbytes)
        if kind == "numpy":
            import numpy

            dtype, shape, order = pid[3], pid[4], pid[5]
            flat = numpy.frombuffer(data, dtype=numpy.dtype(dtype))
            value: Any = flat.reshape(shape, order=order)
        elif kind == "bytes":
            value = bytes(data) if pid[3] == "bytes" else bytearray(data)
        else:
            raise BlobError(digest, f"unknown reference kind {kind!r}")
        self.loaded[(id(pid),)] = (value, pid)
        return value

    def _inline_storage(self, data: bytes, dtype: str | None, location: str) -> Any:
        import torch

        # The same bytes object for every reference to one storage (the pickler memoized it).
        key = (id(data), location)
        entry = self.loaded.get(key)
        if entry is None:
            if data:
                untyped = torch.frombuffer(bytearray(data), dtype=torch.uint8).untyped_storage()
            else:
                untyped = torch.UntypedStorage(0)
            entry = self.loaded[key] = (_place(untyped, location, self.map_location), data)
        return self._typed(entry[0], dtype)

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
        return self._typed(untyped, dtype)


def _meta_storage(nbytes: int) -> Any:
    import torch

    return torch.UntypedStorage(nbytes, device="meta")


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

    Args:
        data: The pickle.
        blobs: The blob folder (None for a payload written without one).
        map_location: Where tensors go, as for ``torch.load``: a device, a dict from saved to
            wanted location, or a function ``(storage, location) -> storage``. Applied to
            every storage. Default: where it was saved if that device exists here, else CPU.

    Raises:
        BlobError: A blob it needs is missing or corrupt.
    """
    return _PayloadUnpickler(io.BytesIO(data), blobs, map_location).load()


class _CopyUnpickler(_SafeUnpickler):
    def __init__(self, file: io.BytesIO, buffers: list[Any]) -> None:
        super().__init__(file)
        self.buffers = buffers
        self.copies: dict[int, Any] = {}

    def persistent_load(self, pid: Any) -> Any:
        kind = pid[0]
        if kind == "torch-meta":
            return self._typed(_meta_storage(pid[1]), pid[2])
        index = pid[1]
        copied = self.copies.get(index)
        if copied is None:
            original = self.buffers[index]
            if kind == "array":
                import numpy

                order: Any = _array_order(original)
                copied = numpy.array(original, order=order, copy=True)
            elif kind == "bytes":
                copied = original if type(original) is bytes else bytearray(original)
            else:
                copied = original.clone()
            self.copies[index] = copied
        return copied if kind != "storage" else self._typed(copied, pid[2])
