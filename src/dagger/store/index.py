"""``index.json``: a snapshot of the catalog, so that a restore does not re-read every log.

The index is never the only copy of anything: it is what the logs said up to known positions
(for each log: how many bytes were read, and where and with what checksum its last frame was),
written atomically with a checksum of its own. A reader trusts it only if

* its checksum matches (a flipped bit, a truncation, a hand edit: rebuilt), and it is of this
  format;
* every log it covers still exists, is at least as long as it was, and still has the same
  frame at the recorded place (a log compacted away or replaced: rebuilt);

and then reads only what the logs gained since (their tails), plus logs it does not know. A
missing, damaged or stale index costs one full read of the logs, after which it is rewritten
(best effort: a read-only folder works without it). ``dagger verify`` also rebuilds the catalog
from the logs alone and reports an index that disagrees with it.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from pathlib import Path

from ..record import FORMAT_VERSION
from .catalog import Catalog
from .files import write_atomic
from .frames import HEADER_SIZE, parse_header
from .log import read_range
from .table import paused_gc

__all__ = ["INDEX_NAME", "index_damage", "read_index", "write_index"]

logger = logging.getLogger("dagger")

INDEX_NAME = "index.json"
_MAGIC = b"dagger-index\n"


def write_index(directory: Path, catalog: Catalog, tails: dict[str, tuple[int, str]]) -> bool:
    """Write ``catalog`` as the index (atomically; errors are ignored: it is a cache).

    Args:
        directory: The experiment folder.
        catalog: The catalog, read up to ``catalog.positions``.
        tails: For each log, the offset and hex checksum of the last frame read.

    Returns:
        Whether the index was written.
    """
    document = {
        "format": FORMAT_VERSION,
        "tails": {name: list(value) for name, value in tails.items()},
        "catalog": catalog.to_index(),
    }
    body = json.dumps(document, separators=(",", ":")).encode()
    data = _MAGIC + hashlib.blake2b(body, digest_size=16).hexdigest().encode() + b"\n" + body
    try:
        write_atomic(directory / INDEX_NAME, data, durable=False)
    except OSError as error:
        logger.debug("%s not written: %s", INDEX_NAME, error)
        return False
    return True


def index_damage(directory: Path) -> str | None:
    """Why the index file is damaged (not a dagger index, checksum, format), or None if it is
    intact or absent. An intact index behind the logs is not damaged: it is out of date."""
    try:
        with open(directory / INDEX_NAME, "rb") as handle:
            data = handle.read()
    except FileNotFoundError:
        return None
    except OSError as error:
        return f"cannot be read ({error.strerror})"
    if not data.startswith(_MAGIC):
        return "not a dagger index"
    head, _, body = data[len(_MAGIC) :].partition(b"\n")
    if hashlib.blake2b(body, digest_size=16).hexdigest().encode() != head:
        return "does not match its checksum"
    try:
        document = json.loads(body)
        Catalog.from_index(document["catalog"])
    except (KeyError, TypeError, ValueError, AttributeError) as error:
        return f"malformed ({error})"
    return None


def read_index(directory: Path, logs: Path) -> tuple[Catalog, dict[str, tuple[int, str]]] | None:
    """The catalog of a valid, current index, and its tails; None if there is none.

    Args:
        directory: The experiment folder.
        logs: The folder of the logs.
    """
    try:
        with open(directory / INDEX_NAME, "rb") as handle:
            data = handle.read()
    except OSError:
        return None
    if not data.startswith(_MAGIC):
        return None
    head, _, body = data[len(_MAGIC) :].partition(b"\n")
    if hashlib.blake2b(body, digest_size=16).hexdigest().encode() != head:
        return None
    try:
        with paused_gc():
            document = json.loads(body)
        if document.get("format") != FORMAT_VERSION:
            return None
        tails = {
            str(name): (int(offset), str(checksum))
            for name, (offset, checksum) in document["tails"].items()
        }
        catalog = Catalog.from_index(document["catalog"])
    except (KeyError, TypeError, ValueError, AttributeError):
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
