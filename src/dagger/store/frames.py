"""Framing of log entries: how one entry is laid out in a log file, and how a log is read back.

An entry (a *frame*) is a fixed 52-byte header followed by its body::

    offset  size  field
    0       4     magic  b"\\xd7DGR"
    4       1     kind   one ASCII letter (see :class:`Kind`)
    5       3     zero   reserved
    8       4     body length (little-endian u32)
    12      4     JSON length: the body is JSON (this many bytes), then raw bytes
    16      4     CRC-32 of bytes 0-15 (the header's own check)
    20      16    BLAKE2b-128 of the JSON
    36      16    BLAKE2b-128 of the raw bytes (an inline payload or value; zeros if none)
    52      ...   body

A frame counts only if its header checks and its JSON matches its BLAKE2b: a bit flip anywhere
in the header or the JSON makes the entry *damaged*, never wrong. The raw bytes have their own
checksum, checked whenever they are read: a flip there damages the content only (the record
stays readable, and the state is set aside and recomputed like one whose payload file is
damaged). The header has its own check so that a damaged length cannot hide the frames after
it: a reader that meets a damaged header looks for the next magic whose header checks and goes
on from there. A frame whose body extends past the end of the file is *incomplete*: the writer
is still writing it, or was killed while writing it; a reader stops there and reads it (or
what replaced it) later.

This module is pure: bytes in, frames out.
"""

from __future__ import annotations

import enum
import hashlib
import struct
import zlib
from dataclasses import dataclass

__all__ = [
    "HEADER_SIZE",
    "MAGIC",
    "Damage",
    "Frame",
    "Kind",
    "encode_frame",
    "frame_checksum",
    "parse_header",
    "raw_intact",
    "scan",
]

MAGIC = b"\xd7DGR"
HEADER_SIZE = 52
_NO_RAW = bytes(16)
_HEAD = struct.Struct("<4sc3xII")  # magic, kind, body length, JSON length
_CRC = struct.Struct("<I")
MAX_BODY = (1 << 32) - 1


class Kind(bytes, enum.Enum):
    """What an entry holds."""

    RECORD = b"R"  # a computed state's record (its payload inline when small)
    FAILURE = b"F"  # a failed state's record (its error)
    NOTES = b"N"  # a state's notes: tags gained, Function results (latest seq wins)
    MARKER = b"M"  # removed / pruned / quarantined
    PART = b"S"  # a shared part, stored once, referenced by its content key
    VALUE = b"V"  # the pickled side payload of a Function result, by its sha256


_KINDS = {kind.value: kind for kind in Kind}


def frame_checksum(data: bytes | memoryview) -> bytes:
    """The 16-byte BLAKE2b of a frame's JSON, or of its raw bytes (zeros for none)."""
    if not len(data):
        return _NO_RAW
    return hashlib.blake2b(data, digest_size=16).digest()


def encode_frame(kind: Kind, document: bytes, raw: bytes | memoryview = b"") -> bytes:
    """One frame: header, JSON ``document``, then ``raw`` bytes (an inline payload).

    Raises:
        ValueError: The body is larger than 4 GiB.
    """
    raw = bytes(raw)
    length = len(document) + len(raw)
    if length > MAX_BODY:
        raise ValueError(f"a log entry of {length} bytes is larger than 4 GiB")
    head = _HEAD.pack(MAGIC, kind.value, length, len(document))
    return b"".join(
        (
            head,
            _CRC.pack(zlib.crc32(head)),
            frame_checksum(document),
            frame_checksum(raw),
            document,
            raw,
        )
    )


@dataclass(frozen=True, slots=True)
class Frame:
    """A valid frame found in a log.

    Attributes:
        offset: Where the frame starts in its log file.
        kind: What it holds.
        document: Its JSON bytes.
        raw_offset: Where its raw bytes (an inline payload) start in the file.
        raw_size: How many raw bytes it has.
        length: Header and body, in bytes.
        checksum: The BLAKE2b of its JSON (16 bytes).
        raw_checksum: The BLAKE2b of its raw bytes (16 bytes; zeros if none).
    """

    offset: int
    kind: Kind
    document: bytes
    raw_offset: int
    raw_size: int
    length: int
    checksum: bytes
    raw_checksum: bytes


@dataclass(frozen=True, slots=True)
class Damage:
    """Bytes of a log that are not a valid frame (a flipped bit, a torn write)."""

    offset: int
    length: int
    reason: str


def parse_header(head: bytes | memoryview) -> tuple[Kind, int, int, bytes, bytes] | None:
    """``(kind, body length, JSON length, JSON checksum, raw checksum)`` of a header, or None
    if it does not check."""
    if len(head) < HEADER_SIZE or bytes(head[:4]) != MAGIC:
        return None
    (crc,) = _CRC.unpack_from(head, 16)
    if zlib.crc32(head[:16]) != crc:
        return None
    _, kind_byte, body_length, json_length = _HEAD.unpack_from(head, 0)
    kind = _KINDS.get(kind_byte)
    if kind is None or json_length > body_length:
        return None
    return kind, body_length, json_length, bytes(head[20:36]), bytes(head[36:52])


def scan(data: bytes, base: int = 0) -> tuple[list[Frame | Damage], int]:
    """Every frame and every damaged range in ``data`` (the bytes of a log from ``base`` on).

    Frames' raw bytes are not checked here (a restore does not need them); whoever reads
    them checks them against ``Frame.raw_checksum`` (:func:`raw_intact`).

    Returns:
        ``(items, consumed)``: the frames and damage in file order, and how many bytes of
        ``data`` they cover. Bytes after ``consumed`` are an incomplete frame (or nothing):
        read them again later.
    """
    items: list[Frame | Damage] = []
    view = memoryview(data)
    position, end = 0, len(data)
    while position < end:
        if end - position < HEADER_SIZE:
            break  # a header being written
        header = parse_header(view[position : position + HEADER_SIZE])
        if header is None:
            following = _next_header(data, view, position + 1)
            if following is None:
                # No valid frame after it: garbage up to the end. Where a frame is being
                # written its header already checks, so this is damage (a torn write of a
                # dead writer, or a flip); it is reported, and skipped.
                items.append(Damage(base + position, end - position, "not a valid entry"))
                position = end
                break
            items.append(Damage(base + position, following - position, "not a valid entry"))
            position = following
            continue
        kind, body_length, json_length, checksum, raw_checksum = header
        body_start = position + HEADER_SIZE
        body_end = body_start + body_length
        if body_end > end:
            break  # incomplete: being written, or torn by a kill
        document = view[body_start : body_start + json_length]
        if frame_checksum(document) != checksum:
            items.append(Damage(base + position, body_end - position, "checksum mismatch"))
        else:
            items.append(
                Frame(
                    offset=base + position,
                    kind=kind,
                    document=bytes(document),
                    raw_offset=base + body_start + json_length,
                    raw_size=body_length - json_length,
                    length=body_end - position,
                    checksum=checksum,
                    raw_checksum=raw_checksum,
                )
            )
        position = body_end
    return items, position


def raw_intact(frame: Frame, raw: bytes | memoryview) -> bool:
    """Whether a frame's raw bytes match their checksum."""
    return len(raw) == frame.raw_size and frame_checksum(raw) == frame.raw_checksum


def _next_header(data: bytes, view: memoryview, start: int) -> int | None:
    """The position of the next magic at or after ``start`` whose header checks."""
    position = data.find(MAGIC, start)
    while position != -1:
        if parse_header(view[position : position + HEADER_SIZE]) is not None:
            return position
        position = data.find(MAGIC, position + 1)
    return None
