"""Content-addressed blobs: the raw bytes of large buffers, stored once each.

A blob is a file under ``blobs/<h[:2]>/<h>`` named by the SHA-256 of its bytes. A buffer that
several states hold (a parent's weights kept by its children, tied weights, a frozen backbone)
is stored once. Blobs are raw bytes, read back without unpickling anything and verified
against their name before use. :mod:`dagger.store.payload` decides which buffers become blobs.

A blob that already exists is reused only after its size matches (and, below
:data:`VERIFY_LIMIT`, its digest too); a damaged one is rewritten, so a new state is never
committed on top of bad bytes. With ``durable`` every new blob is fsynced, and
:meth:`Blobs.sync` fsyncs the folders that got new names, before the record that refers to
them is written.
"""

from __future__ import annotations

import hashlib
import mmap
import os
from dataclasses import dataclass
from pathlib import Path

from .files import CHUNK, fsync_dir, hash_file, publish, write_temp

__all__ = ["DEFAULT_THRESHOLD", "VERIFY_LIMIT", "BlobError", "Blobs"]

DEFAULT_THRESHOLD = 64 * 1024
#: Existing blobs up to this size are re-hashed before they are reused; larger ones are
#: checked by size (reading 1 GiB to save writing it would cost as much as writing it).
VERIFY_LIMIT = 1 << 20


class BlobError(Exception):
    """Internal: a blob is missing or does not match its name."""

    def __init__(self, digest: str, reason: str) -> None:
        super().__init__(f"blob {digest[:16]}: {reason}")
        self.digest = digest
        self.reason = reason


@dataclass
class Blobs:
    """The blob folder of a store.

    Args:
        folder: ``<directory>/blobs``.
        durable: fsync each new blob (and its folder).
        threshold: Buffers of at least this many bytes become blobs.
        use_mmap: Load blobs as private (copy-on-write) memory maps instead of reading them.
    """

    folder: Path
    durable: bool = True
    threshold: int = DEFAULT_THRESHOLD
    use_mmap: bool = True

    def __post_init__(self) -> None:
        self.unsynced: set[Path] = set()

    def path(self, digest: str) -> Path:
        return self.folder / digest[:2] / digest

    def put(self, data: memoryview) -> str:
        """Store bytes (once per distinct content); return their digest.

        Raises:
            OSError: The blob could not be written (no space left, no permission).
        """
        digest = hashlib.sha256(data).hexdigest()
        path = self.path(digest)
        if self._reusable(path, digest, data.nbytes):
            return digest
        folder = path.parent
        if not folder.is_dir():
            folder.mkdir(parents=True, exist_ok=True)
            self.unsynced.add(self.folder)
        publish(write_temp(path, [data], durable=self.durable), path, replace=True)
        self.unsynced.add(folder)
        return digest

    def _reusable(self, path: Path, digest: str, nbytes: int) -> bool:
        try:
            size = os.stat(path).st_size
        except FileNotFoundError:
            return False
        if size != nbytes:
            return False
        if nbytes <= VERIFY_LIMIT and hash_file(path)[0] != digest:
            return False
        # Refresh its time: gc leaves recently used blobs alone while a run is in progress.
        os.utime(path)
        return True

    def sync(self) -> None:
        """fsync the folders that got new blobs (a no-op unless ``durable``)."""
        if not self.durable:
            self.unsynced.clear()
            return
        while self.unsynced:
            fsync_dir(self.unsynced.pop())

    def read(self, digest: str, nbytes: int) -> memoryview | mmap.mmap:
        """The verified bytes of a blob: a private memory map, or a fresh bytearray.

        Raises:
            BlobError: The blob is missing, of the wrong size, or does not hash to its name.
        """
        path = self.path(digest)
        try:
            handle = open(path, "rb", buffering=0)  # noqa: SIM115 (closed by the with below)
        except FileNotFoundError:
            raise BlobError(digest, "missing") from None
        with handle:
            size = os.fstat(handle.fileno()).st_size
            if size != nbytes:
                raise BlobError(digest, f"has {size} bytes, {nbytes} expected")
            if nbytes == 0:
                return memoryview(b"")
            data: memoryview | mmap.mmap
            if self.use_mmap:
                data = mmap.mmap(handle.fileno(), nbytes, access=mmap.ACCESS_COPY)
            else:
                buffer = bytearray(nbytes)
                view = memoryview(buffer)
                read = 0
                while read < nbytes:
                    chunk = handle.readinto(view[read : read + CHUNK])
                    if not chunk:
                        raise BlobError(digest, "is shorter than its size")
                    read += chunk
                data = view
        if hashlib.sha256(data).hexdigest() != digest:
            raise BlobError(digest, "does not match its checksum")
        return data
