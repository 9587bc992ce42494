"""Content digests of a state, cheap enough to take before and after every Function.

A Function is meant to read a state, not change it. :func:`state_digest` hashes every part of a
state's content (:func:`dagger.contents.iter_parts`: tensors, arrays, numbers, encoded values,
the types of containers, each module's train/eval mode) and :func:`digest_changes` lists the
paths whose digest differs between two digests, so a Function that trained the model, stepped
the optimizer or ran a forward pass in training mode (which updates batch-norm running
statistics) is caught, by attribute path.

How each part is hashed (SHA-256, FIPS 180-4, through :mod:`hashlib`):

* tensors and arrays: a header (type, dtype, shape, layout) then their raw bytes in C order, fed
  to the hash straight from memory: no pickling, and no copy for a contiguous CPU tensor or
  array (a strided one is copied a piece at a time, a GPU tensor brought to the CPU one tensor
  at a time); sparse tensors by their coalesced indices and values, quantized ones by their
  integer representation and quantization parameters;
* numbers and other values: their canonical encoding (:func:`dagger.hashing.encode`);
* values with no canonical encoding and nothing to walk: their pickle, which is stable for an
  unchanged object within one process (all a before/after check needs); a value that cannot be
  pickled either is listed in :attr:`StateDigest.untracked`, and a change to it goes unseen.

Large tensors and arrays (:data:`PARALLEL_BYTES` and more, when there are several) are hashed
on a few threads at once: :mod:`hashlib` releases the GIL while it hashes a large buffer, so a
state of many large tensors is digested about as many times faster as there are free cores
(up to :data:`MAX_THREADS`). The digest is the same either way.

Digests are for comparing a state with itself within one process, not identities: use
:func:`dagger.hashing.digest` for those.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import os
import pickle
import sys
from collections.abc import Iterable, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

from .contents import Part, encode, flat_pieces, iter_parts

__all__ = ["StateDigest", "digest_changes", "state_digest"]

# Elements hashed at once from a strided tensor or array (the contiguous ones need no copy).
PIECE_ELEMENTS = 1 << 22

# Tensors and arrays of at least this many bytes are hashed on worker threads, when a state
# holds two or more of them; smaller ones are not worth a thread's hand-over.
PARALLEL_BYTES = 1 << 20
# At most this many hashing threads (SHA-256 runs at about 1.5 GB/s per core; more threads
# than this mostly wait for memory).
MAX_THREADS = 8


@dataclasses.dataclass(frozen=True)
class StateDigest:
    """The content digest of one state, part by part.

    Attributes:
        parts: Hex SHA-256 digest of each part, by attribute path (``model.fc.weight``,
            ``optimizer.state[0].momentum_buffer``, ``model.training``); JSON-ready.
        untracked: Paths of values that could be neither encoded nor pickled; changes to them
            are not detected.
    """

    parts: Mapping[str, str]
    untracked: tuple[str, ...] = ()

    @property
    def hexdigest(self) -> str:
        """One hex SHA-256 over every part's path and digest: equal iff all parts are equal."""
        combined = hashlib.sha256()
        for path in sorted(self.parts):
            combined.update(encode((path, self.parts[path])))
        return combined.hexdigest()

    def to_json(self) -> dict[str, Any]:
        """A JSON-serialisable dict: ``{"digest": ..., "parts": {...}, "untracked": [...]}``."""
        return {
            "digest": self.hexdigest,
            "parts": dict(self.parts),
            "untracked": list(self.untracked),
        }


def state_digest(state: Any, *, exclude: Iterable[str] = ()) -> StateDigest:
    """Digest every part of ``state``'s content (see the module docstring).

    Args:
        state: A loaded state, any object with attributes, or a mapping of names to values.
        exclude: Top-level attribute names to leave out.

    Returns:
        A :class:`StateDigest`; compare two with :func:`digest_changes`.

    Raises:
        InvalidArgumentError: ``state`` has no attributes to walk.
    """
    parts: dict[str, str] = {}
    untracked: list[str] = []
    walked = list(iter_parts(state, exclude=exclude))
    large = [part for part in walked if _nbytes(part) >= PARALLEL_BYTES]
    threads = min(len(large), MAX_THREADS, _cores())
    futures: dict[int, Future[str | None]] = {}
    # Too few large parts (or cores) to share out: everything on this thread.
    with ThreadPoolExecutor(threads) if threads > 1 else contextlib.nullcontext() as pool:
        if pool is not None:
            futures = {id(part): pool.submit(_part_digest, part) for part in large}
        for part in walked:
            future = futures.get(id(part))
            hexdigest = future.result() if future is not None else _part_digest(part)
            if hexdigest is None:
                untracked.append(part.path)
            else:
                parts.setdefault(part.path, hexdigest)
    return StateDigest(parts, tuple(untracked))


def _nbytes(part: Part) -> int:
    if part.kind == "tensor":
        return int(part.value.numel()) * int(part.value.element_size())
    if part.kind == "array":
        return int(part.value.nbytes)
    return 0


def _cores() -> int:
    """The cores this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        return os.cpu_count() or 1


def digest_changes(before: StateDigest, after: StateDigest) -> list[str]:
    """Paths whose content changed from ``before`` to ``after``: changed, added or removed.

    Returns:
        Sorted attribute paths (``["model.bn1.running_mean", "model.training"]``); empty when
        the state is unchanged (as far as its tracked parts show).
    """
    paths = set(before.parts) | set(after.parts)
    return sorted(path for path in paths if before.parts.get(path) != after.parts.get(path))


def _part_digest(part: Part) -> str | None:
    hasher = hashlib.sha256()
    hasher.update(encode((part.kind, part.type_name)))
    if part.kind == "node":
        pass
    elif part.kind == "tensor":
        _feed_tensor(hasher, part.value)
    elif part.kind == "array":
        _feed_array(hasher, part.value)
    elif part.kind == "encoded":
        assert part.encoded is not None
        hasher.update(part.encoded)
    elif part.kind == "number":
        hasher.update(encode(part.value))
    else:
        try:
            hasher.update(pickle.dumps(part.value, protocol=pickle.HIGHEST_PROTOCOL))
        except Exception:
            return None
    return hasher.hexdigest()


def _feed_tensor(hasher: Any, tensor: Any) -> None:
    torch = sys.modules["torch"]
    hasher.update(encode((str(tensor.dtype), tuple(tensor.shape), str(tensor.layout))))
    if tensor.is_meta:
        return
    if tensor.is_quantized:
        if tensor.qscheme() in (torch.per_tensor_affine, torch.per_tensor_symmetric):
            hasher.update(encode((float(tensor.q_scale()), int(tensor.q_zero_point()))))
        else:
            _feed_tensor(hasher, tensor.q_per_channel_scales())
            _feed_tensor(hasher, tensor.q_per_channel_zero_points())
            hasher.update(encode(int(tensor.q_per_channel_axis())))
        _feed_tensor(hasher, tensor.int_repr())
        return
    if tensor.layout != torch.strided:
        coalesced = (
            tensor if tensor.layout == torch.sparse_coo else tensor.to_sparse_coo()
        ).coalesce()
        _feed_tensor(hasher, coalesced.indices())
        _feed_tensor(hasher, coalesced.values())
        return
    tensor = tensor.resolve_conj().resolve_neg()
    if tensor.device.type != "cpu":
        tensor = tensor.cpu()
    if tensor.is_contiguous():
        _feed_contiguous_tensor(hasher, torch, tensor.reshape(-1))
        return
    for piece in flat_pieces(tensor, PIECE_ELEMENTS):
        _feed_contiguous_tensor(hasher, torch, piece.contiguous())


def _feed_contiguous_tensor(hasher: Any, torch: Any, flat: Any) -> None:
    if flat.numel():
        hasher.update(flat.view(torch.uint8).numpy())


def _feed_array(hasher: Any, array: Any) -> None:
    import numpy as np

    dtype = array.dtype.str if array.dtype.fields is None else str(array.dtype.descr)
    hasher.update(encode((dtype, tuple(array.shape))))
    if array.size == 0 or array.dtype.itemsize == 0:
        return
    if array.flags.c_contiguous:
        hasher.update(array.reshape(-1).view(np.uint8))
        return
    for piece in flat_pieces(array, PIECE_ELEMENTS):
        hasher.update(np.ascontiguousarray(piece).view(np.uint8))
