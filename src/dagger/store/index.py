"""``index.json``: a snapshot of the catalog, so that a restore does not re-read every log.

The index is never the only copy of anything: it is what the logs said up to known positions
(for each log: how many bytes were read, and where and with what checksum its last frame was),
written atomically with a checksum of its own. A reader trusts it only if

* its checksum matches (a flipped bit, a truncation, a hand edit: rebuilt), and it is of this
  layout and format (an index an older dagger wrote, ``dagger-index``: rebuilt);
* every log it covers still exists, is at least as long as it was, and still has the same
  frame at the recorded place (a log compacted away or replaced: rebuilt);

and then reads only what the logs gained since (their tails), plus logs it does not know. A
missing, damaged or stale index costs one full read of the logs, after which it is rewritten
(best effort: a read-only folder works without it). ``dagger verify`` also rebuilds the catalog
from the logs alone and reports an index that disagrees with it.

Layout (``dagger-index-2``)::

    dagger-index-2\n
    <SHA-256 of the body, hex, first 32 digits>\n
    <body>:  <head: one line of JSON>\n<section><section>...

The head holds the format, the tails, the catalog's small items (interned values, positions)
and ``sections``: ``[name, length in bytes]`` of each section, in the order they follow it.
Each section is one JSON text: the state ids, one per-row column (a list, or packed: the usual
value and the exceptions, or runs of equal steps) or one per-row map
(:data:`~dagger.store.catalog.INDEX_SECTIONS`). The
checksum covers the whole body and is checked before anything is used; the head and the ids
are decoded at once, every other section when the catalog first reads it
(:meth:`Catalog.from_index <dagger.store.catalog.Catalog.from_index>`: a cached rerun reads a
few columns, a restore all). A section that does not decode although the checksum matched is
not half-trusted: the catalog becomes the one read from the logs (the store's ``fallback``),
and the store drops the index so that it is written again.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Callable
from pathlib import Path

from ..record import FORMAT_VERSION
from .catalog import INDEX_SECTIONS, Catalog
from .files import write_atomic
from .frames import HEADER_SIZE, parse_header
from .log import read_range

__all__ = ["INDEX_NAME", "index_damage", "read_index", "write_index"]

logger = logging.getLogger("dagger")

INDEX_NAME = "index.json"
_MAGIC = b"dagger-index-2\n"
_OLD_MAGIC = b"dagger-index\n"  # the one-document layout of dagger before lazy sections
_CHECKSUM_DIGITS = 32


def _checksum(body: bytes | memoryview) -> bytes:
    # SHA-256: hardware accelerated (SHA extensions) where blake2b is not: about twice as
    # fast on a 16 MB index here (10 ms), and the whole body is checked on every read
    return hashlib.sha256(body).hexdigest()[:_CHECKSUM_DIGITS].encode()


def write_index(directory: Path, catalog: Catalog, tails: dict[str, tuple[int, str]]) -> bool:
    """Write ``catalog`` as the index (atomically; errors are ignored: it is a cache).

    Args:
        directory: The experiment folder.
        catalog: The catalog, read up to ``catalog.positions``.
        tails: For each log, the offset and hex checksum of the last frame read.

    Returns:
        Whether the index was written.
    """
    document = catalog.to_index()
    sections = [
        json.dumps(document.pop(name), separators=(",", ":")).encode() for name in INDEX_SECTIONS
    ]
    head = {
        "format": FORMAT_VERSION,
        "tails": {name: list(value) for name, value in tails.items()},
        "sections": [
            [name, len(text)] for name, text in zip(INDEX_SECTIONS, sections, strict=True)
        ],
        "catalog": document,
    }
    body = b"".join([json.dumps(head, separators=(",", ":")).encode(), b"\n", *sections])
    data = b"".join([_MAGIC, _checksum(body), b"\n", body])
    try:
        write_atomic(directory / INDEX_NAME, data, durable=False)
    except OSError as error:
        logger.debug("%s not written: %s", INDEX_NAME, error)
        return False
    return True


class _Unreadable(Exception):
    """Why an index cannot be used at all (internal)."""


def _parse(
    data: bytes, fallback: Callable[[Catalog], Catalog] | None
) -> tuple[Catalog, dict[str, tuple[int, str]]]:
    """The catalog (sections not decoded yet) and the tails of an index file's bytes.

    Raises:
        _Unreadable: Not an index of this layout and format, its checksum, or its head or ids.
    """
    if not data.startswith(_MAGIC):
        raise _Unreadable("not a dagger index")
    view = memoryview(data)
    start = len(_MAGIC) + _CHECKSUM_DIGITS + 1
    if data[start - 1 : start] != b"\n" or _checksum(view[start:]) != data[len(_MAGIC) : start - 1]:
        raise _Unreadable("does not match its checksum")
    try:
        end = data.index(b"\n", start)
        head = json.loads(data[start:end])
        if head.get("format") != FORMAT_VERSION:
            raise _Unreadable(f"of format {head.get('format')!r}, not {FORMAT_VERSION}")
        tails = {
            str(name): (int(offset), str(checksum))
            for name, (offset, checksum) in head["tails"].items()
        }
        sections: dict[str, memoryview] = {}
        position = end + 1
        for name, length in head["sections"]:
            if not isinstance(length, int) or length < 0 or name in sections:
                raise ValueError(f"section {name!r}")
            sections[str(name)] = view[position : position + length]
            position += length
        if position != len(data) or set(sections) != set(INDEX_SECTIONS):
            raise ValueError("sections do not cover the body")
        catalog = Catalog.from_index(head["catalog"], sections, fallback)
    except (KeyError, TypeError, ValueError, AttributeError) as error:
        raise _Unreadable(f"malformed ({error})") from error
    return catalog, tails


def index_damage(directory: Path) -> str | None:
    """Why the index file is damaged (not a dagger index, checksum, format, a section that does
    not decode), or None if it is intact or absent. An intact index behind the logs is not
    damaged: it is out of date; nor is one an older dagger wrote (it is rewritten when used)."""
    try:
        with open(directory / INDEX_NAME, "rb") as handle:
            data = handle.read()
    except FileNotFoundError:
        return None
    except OSError as error:
        return f"cannot be read ({error.strerror})"
    if data.startswith(_OLD_MAGIC):
        return None
    try:
        catalog, _ = _parse(data, None)
        catalog.decode_all()
    except _Unreadable as error:
        return str(error)
    except ValueError as error:
        return f"malformed ({error})"
    return None


def read_index(
    directory: Path, logs: Path, fallback: Callable[[Catalog], Catalog] | None = None
) -> tuple[Catalog, dict[str, tuple[int, str]]] | None:
    """The catalog of a valid, current index, and its tails; None if there is none.

    The catalog decodes its sections when it first reads them (see
    :meth:`Catalog.from_index <dagger.store.catalog.Catalog.from_index>`).

    Args:
        directory: The experiment folder.
        logs: The folder of the logs.
        fallback: What the catalog calls if one of its sections does not decode although the
            checksum matched: it returns the catalog the logs hold, read into
            :meth:`Catalog.blank_like(catalog) <dagger.store.catalog.Catalog.blank_like>`.
            None: such a section raises ValueError when it is read.
    """
    try:
        with open(directory / INDEX_NAME, "rb") as handle:
            data = handle.read()
    except OSError:
        return None
    try:
        catalog, tails = _parse(data, fallback)
    except _Unreadable:
        return None
    for name, consumed in catalog.positions.items():
        if not _still_there(logs / name, consumed, tails.get(name)):
            return None
    return catalog, tails


def _still_there(path: Path, consumed: int, tail: tuple[int, str] | None) -> bool:
    try:
        size = os.stat(path).st_size
    except OSError:
        return False
    if size < consumed:
        return False
    if tail is None or tail[0] < 0:
        return consumed == 0 or tail is not None
    offset, checksum = tail
    try:
        header = parse_header(read_range(path, offset, HEADER_SIZE))
    except OSError:
        return False
    return header is not None and header[3].hex() == checksum
