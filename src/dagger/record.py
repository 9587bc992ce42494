"""The on-disk schema: typed records, statuses, builders, parsers and JSON conversion.

Every document dagger stores about a state is one of the types below; this module is the only
place that knows their JSON keys. Everyone else passes these objects around.

    StateRecord       how a state was made (committing it commits the state); a failed
                      state's record has status FAILED and an ``error``
    Notes             what was learned later (tags gained, Function results, the last audit)
    ResultEntry       one recorded Function result inside Notes
    AuditNote         the outcome of the last audit of a state, inside Notes
    ExperimentMeta    experiment.json: format, roots, state class, versions (checksummed)
    Ingredients       what a state's id was made of beyond the record's other fields: the
                      class, its code identity's manifest, and the digests of identity values
                      that their JSON view does not determine (``dagger explain``)

Two JSON forms exist. The *document* form (``to_json``/``from_json``) is format 1's: one
self-contained file per record (``states/<id>.json``), still read to open old stores. The *wire*
form (``record_to_wire``/``record_from_wire`` and friends) is format 2's: the body of an entry
in a store's log. In the wire form the parts that repeat across many states (the recipe's class,
module and code; the state class and dagger version; the PROPERTIES values; the blob list) are
*shared parts*: stored once, as their own entry, under a key that is a hash of their content
(:func:`shared_key`), and referenced by that key. A field added later that repeats the same way
(an environment) joins :data:`SHARED_FIELDS` and costs one key per state: the environment a
state was computed in (``environment``, see :mod:`dagger.environment`) is one, stored once per
distinct environment. The code manifest of :class:`Ingredients` is the same for every state of
one recipe class and code identity, as the recipe part is: it is kept inside the recipe part (no
key per state at all); a root's, in a ``manifest`` part of its own. Per state, only the few
digests a value's JSON view cannot give back are written (``digests``, usually absent).

Every entry about a state carries ``seq``: a number larger than that of every entry the writer
had seen when it wrote it (it writes under the state's lock, after reading everything about the
state). It orders a state's entries across processes and hosts without trusting clocks, and
orders states by creation.

Parsing validates the shape of a document (types of every field it uses) and raises
:class:`InvalidRecordError` for anything else, so that a damaged but valid-JSON document never
reaches the rest of dagger as a half-filled dict.

This module is pure: no I/O.
"""

from __future__ import annotations

import copy
import datetime as _dt
import enum
import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from ._names import display

__all__ = [
    "AUDIT_OUTCOMES",
    "FORMAT_VERSION",
    "IDENTITY_VERSION",
    "INLINE",
    "MAX_AUDIT_PATHS",
    "SHARED_FIELDS",
    "AuditNote",
    "ErrorInfo",
    "ExperimentMeta",
    "Ingredients",
    "InvalidRecordError",
    "Marker",
    "Notes",
    "PayloadInfo",
    "RecipeInfo",
    "ResultEntry",
    "StateRecord",
    "Status",
    "dumps",
    "jsonable",
    "loads",
    "marker_from_wire",
    "marker_to_wire",
    "notes_from_wire",
    "notes_to_wire",
    "now",
    "record_from_wire",
    "record_to_wire",
    "shared_key",
    "wire_refs",
]

#: Version of the on-disk format this dagger writes (and the newest it reads). Format 1: one
#: JSON file per record, notes and failure under ``states/``. Format 2: append-only logs of
#: checksummed entries (see :mod:`dagger.store.log`).
FORMAT_VERSION = 2

#: Version of the identity scheme: how ids are computed from classes, code and values
#: (:mod:`dagger.identity`). Scheme 1: a class's own methods and the values of its properties.
#: Scheme 2: everything the code reads (globals, closures, defaults, helpers, library
#: versions), every value kind by its exact value. States of an older scheme stay readable,
#: but a run computes other ids for the same recipes: it recomputes them.
IDENTITY_VERSION = 2

#: ``PayloadInfo.file`` (and ``ResultEntry.file``) of content kept inside the store's log,
#: in the same entry as its record, rather than in a file of its own.
INLINE = "@log"


class InvalidRecordError(ValueError):
    """A stored document is not valid JSON or does not have the shape of its type."""


class Status(enum.StrEnum):
    """Where a state stands. The values are what records and tables show."""

    PENDING = "pending"  # defined, not computed yet
    RUNNING = "running"  # being computed by this process
    DONE = "done"  # computed and stored
    FAILED = "failed"  # its recipe raised; the error is recorded
    MISSING = "missing"  # recorded, but its payload is gone or damaged: a run recomputes it
    PRUNED = "pruned"  # its payload was dropped on purpose; a run recomputes it when needed


# -- JSON ---------------------------------------------------------------------------------------


def dumps(document: Any) -> bytes:
    """Compact, key-sorted JSON bytes (the C encoder only runs without indent).

    Non-finite floats are written as ``NaN``, ``Infinity`` and ``-Infinity`` (Python's JSON
    extension, read back by :func:`loads`), so that a recorded infinity is a number, not text.
    """
    return json.dumps(document, sort_keys=True, separators=(",", ":")).encode()


def loads(data: bytes | str) -> Any:
    """Parse JSON bytes.

    Raises:
        InvalidRecordError: The bytes are not valid JSON.
    """
    try:
        return json.loads(data)
    except (ValueError, UnicodeDecodeError) as error:
        raise InvalidRecordError(f"not valid JSON ({error})") from None


def now() -> str:
    """The current UTC time as an ISO 8601 string to the microsecond (how records stamp
    times). To the microsecond because a restored tree lists states in creation order: states
    computed within one second must keep the order they were computed in (depth-first, in
    definition order), not fall back to the order of their ids."""
    return _dt.datetime.now(_dt.UTC).isoformat(timespec="microseconds")


#: How deep :func:`jsonable` follows nested lists and dicts before it shows the rest by repr.
JSONABLE_DEPTH = 64


def jsonable(value: Any) -> Any:
    """A JSON-safe view of a value for display and queries (never for identity).

    Plain JSON values pass through; tuples become lists; numpy scalars become the Python
    number they hold; floats stay floats, infinities and NaN included (see :func:`dumps`);
    anything else becomes its :func:`~dagger._names.display` text (functions and classes by
    name, never a memory address). A list or dict that contains itself shows the repeated
    part as ``"[...]"`` or ``"{...}"`` (as ``repr`` does), and nesting deeper than
    :data:`JSONABLE_DEPTH` levels is shown as text, so any value has a view.
    """
    return _jsonable(value, set(), 0)


def _jsonable(value: Any, seen: set[int], depth: int) -> Any:
    if value is None or isinstance(value, bool | int | str):
        return value if type(value) in (bool, int, str) or value is None else _builtin(value)
    if isinstance(value, float):
        return float(value)
    if isinstance(value, list | tuple | dict):
        if id(value) in seen:
            return "{...}" if isinstance(value, dict) else "[...]"
        if depth >= JSONABLE_DEPTH:
            return _safe_repr(value)
        seen.add(id(value))
        try:
            if isinstance(value, dict):
                return {
                    key if isinstance(key, str) else _safe_repr(key): _jsonable(v, seen, depth + 1)
                    for key, v in value.items()
                }
            return [_jsonable(item, seen, depth + 1) for item in value]
        finally:
            seen.discard(id(value))
    item = getattr(value, "item", None)
    if callable(item) and getattr(value, "shape", None) == () and type(value).__module__ == "numpy":
        try:
            return _jsonable(item(), seen, depth)
        except (TypeError, ValueError):
            pass
    return _safe_repr(value)


def _safe_repr(value: Any) -> str:
    try:
        return display(value)
    except RecursionError:
        return f"<{type(value).__name__} nested too deeply to show>"
    except Exception:
        return f"<{type(value).__name__}>"


def _builtin(value: Any) -> Any:
    # Subclasses (IntEnum, StrEnum, numpy's bool is not one) as the builtin value they hold.
    if isinstance(value, bool):
        return bool(value)
    if isinstance(value, int):
        return int(value)
    return str.__str__(value)


# -- validation helpers ---------------------------------------------------------------------------


def _expect(document: Any, kind: type | tuple[type, ...], what: str) -> Any:
    if not isinstance(document, kind):
        raise InvalidRecordError(f"{what} is a {type(document).__name__}")
    return document


def _field(document: Mapping[str, Any], key: str, kind: Any, what: str, default: Any = ...) -> Any:
    if key not in document:
        if default is ...:
            raise InvalidRecordError(f"{what} has no `{key}`")
        return default
    value = document[key]
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise InvalidRecordError(f"{what}: `{key}` is a {type(value).__name__}")
    return value


def _strings(value: Any, what: str) -> tuple[str, ...]:
    _expect(value, list, what)
    if not all(isinstance(item, str) for item in value):
        raise InvalidRecordError(f"{what} holds something other than strings")
    return tuple(value)


def _id(value: Any, what: str) -> str:
    if not (isinstance(value, str) and len(value) == 64 and _is_hex(value)):
        raise InvalidRecordError(f"{what} is not a state id (64 hex digits): {value!r:.80}")
    return value


def _is_hex(text: str) -> bool:
    try:
        int(text, 16)
    except ValueError:
        return False
    return text == text.lower()


# -- the types ------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class RecipeInfo:
    """What a state's record says about the recipe that produced it.

    Attributes:
        name: The recipe class's qualified name (``Train``, ``Outer.Prune``).
        module: The module the class was defined in (informative; not identity).
        params: The recipe's identity properties as JSON-safe values (see :func:`jsonable`).
        code: The code identity (``code:<fingerprint>`` or ``version:<VERSION>``).
    """

    name: str
    module: str = ""
    params: dict[str, Any] = field(default_factory=dict)
    code: str = ""

    def to_json(self) -> dict[str, Any]:
        return {"class": self.name, "module": self.module, "params": self.params, "code": self.code}

    @classmethod
    def from_json(cls, document: Any) -> RecipeInfo | None:
        if document is None:
            return None
        _expect(document, dict, "recipe")
        return cls(
            _field(document, "class", str, "recipe"),
            _field(document, "module", str, "recipe", ""),
            _field(document, "params", dict, "recipe", {}),
            _field(document, "code", str, "recipe", ""),
        )

    def __str__(self) -> str:
        params = ", ".join(f"{key}={value!r}" for key, value in self.params.items())
        return f"{self.name}({params})"


@dataclass(frozen=True, slots=True)
class PayloadInfo:
    """Where a state's pickled content is and how to check it.

    Attributes:
        file: Where the payload is: a path relative to the experiment folder
            (``payloads/<id>.<digest>.pkl``; ``states/...`` in a format-1 store), or
            :data:`INLINE` for a small payload kept in its record's log entry, whose
            checksum covers it.
        sha256: Hex SHA-256 of the payload's bytes (empty for an inline payload).
        size: Its size in bytes.
        format: ``"pickle"``, ``"dill"`` or ``"save_hook"`` (how it was written).
    """

    file: str
    sha256: str
    size: int
    format: str = "pickle"

    @property
    def inline(self) -> bool:
        """Whether the payload is kept in its record's log entry."""
        return self.file == INLINE

    def to_json(self) -> dict[str, Any]:
        return {"file": self.file, "sha256": self.sha256, "size": self.size, "format": self.format}

    @classmethod
    def from_json(cls, document: Any) -> PayloadInfo:
        _expect(document, dict, "payload")
        return cls(
            _field(document, "file", str, "payload"),
            _field(document, "sha256", str, "payload"),
            _field(document, "size", int, "payload"),
            _field(document, "format", str, "payload", "pickle"),
        )


@dataclass(frozen=True, slots=True)
class ErrorInfo:
    """The first cause of a failure: exception type, message and formatted traceback."""

    type: str
    message: str
    traceback: str = ""

    def to_json(self) -> dict[str, Any]:
        return {"type": self.type, "message": self.message, "traceback": self.traceback}

    @classmethod
    def from_json(cls, document: Any) -> ErrorInfo:
        _expect(document, dict, "error")
        return cls(
            _field(document, "type", str, "error"),
            _field(document, "message", str, "error", ""),
            _field(document, "traceback", str, "error", ""),
        )

    @classmethod
    def of(cls, error: BaseException, traceback: str = "") -> ErrorInfo:
        return cls(type(error).__name__, str(error), traceback)


@dataclass(frozen=True, slots=True)
class Ingredients:
    """What a state's id was made of, beyond what the rest of its record holds (issue 10).

    The parent's id, the recipe's parameters (or a root's arguments) are in the record already;
    this adds the class and its code identity's manifest (the same for every state of one class
    and code version: a shared part in the wire form) and, per state, the digests that the
    JSON view of the values cannot give back.

    Attributes:
        name: The recipe class (child) or state class (root), by qualified name.
        code: Its code identity (``code:<fingerprint>`` or ``version:<VERSION>``).
        manifest: The code identity's manifest entries (``kind``, ``name``, ``digest``,
            ``value``; see :mod:`dagger.fingerprint`); empty when ``VERSION`` pins the code.
        digests: Hex SHA-256 of the canonical encoding of each identity value whose JSON view
            (:func:`jsonable`) encodes differently (a tuple, a ``float32``); the others are
            computed again from the view. For a root: every identity argument's digest (its
            keys say which arguments are identity).
    """

    name: str
    code: str
    manifest: tuple[dict[str, str], ...] = ()
    digests: dict[str, str] = field(default_factory=dict)

    def shared_part(self) -> dict[str, Any]:
        """The part common to every state of one class and code (stored once)."""
        return {"name": self.name, "code": self.code, "manifest": list(self.manifest)}

    def to_json(self) -> dict[str, Any]:
        return {**self.shared_part(), "digests": self.digests}

    @classmethod
    def from_json(cls, document: Any, digests: Any = None) -> Ingredients:
        """Parse (``digests`` given apart for the wire form, where they are per state).

        Raises:
            InvalidRecordError: A field is missing or of the wrong type.
        """
        what = "ingredients"
        _expect(document, dict, what)
        manifest = _field(document, "manifest", list, what, [])
        entries = []
        for entry in manifest:
            _expect(entry, dict, "manifest entry")
            if not all(isinstance(v, str) for v in entry.values()):
                raise InvalidRecordError("manifest entry holds something other than strings")
            entries.append(dict(entry))
        found = digests if digests is not None else document.get("digests", {})
        _expect(found, dict, "ingredients `digests`")
        if not all(isinstance(v, str) for v in found.values()):
            raise InvalidRecordError("ingredients `digests` are not strings")
        return cls(
            _field(document, "name", str, what),
            _field(document, "code", str, what, ""),
            tuple(entries),
            dict(found),
        )


@dataclass(frozen=True, slots=True)
class StateRecord:
    """The slim record of a state: everything about it except its content.

    A computed state's record has status DONE and a ``payload``; a failed one's has status
    FAILED and an ``error`` (it lives in ``<id>.failed.json``).

    Attributes:
        id: The state's id (64 hex digits).
        parent: The parent's id (None for a root).
        root: Whether the state is a root.
        recipe: The recipe that produced it (None for a root).
        tags: Labels given when it was defined (more may be in its Notes).
        created: When it was computed (ISO 8601, UTC).
        status: DONE or FAILED.
        seconds: Wall time of its recipe (or ``initialize_state``).
        state_class: ``module:qualname`` of its class.
        properties: The state class's PROPERTIES values, JSON-safe.
        arguments: A root's ``spawn_new_tree`` arguments, JSON-safe.
        dagger_version: The dagger that computed it.
        payload: Its content's file and checksum.
        blobs: Digests and sizes of the blobs its payload refers to.
        error: Why it failed (failed records only).
        environment: Where it was computed (:func:`dagger.environment.capture_environment`'s
            dict, with ``device``); None for a record written before dagger recorded it
            (format 1, or an older format 2).
        format: The format version the record was written in.
        seq: The store's sequence number of the entry (see the module docstring): orders
            states by creation, and a state's entries among themselves.
        identity: The identity scheme its id was computed with.
        ingredients: What its id was made of (:class:`Ingredients`); None in records
            written before dagger recorded it.
    """

    id: str
    parent: str | None
    root: bool
    recipe: RecipeInfo | None
    tags: tuple[str, ...]
    created: str
    status: Status = Status.DONE
    seconds: float | None = None
    state_class: str = ""
    properties: dict[str, Any] = field(default_factory=dict)
    arguments: dict[str, Any] | None = None
    dagger_version: str = ""
    payload: PayloadInfo | None = None
    blobs: dict[str, int] = field(default_factory=dict)
    error: ErrorInfo | None = None
    format: int = FORMAT_VERSION
    seq: int = 0
    identity: int = IDENTITY_VERSION
    ingredients: Ingredients | None = None
    environment: dict[str, Any] | None = None

    @property
    def failed(self) -> bool:
        return self.status is Status.FAILED

    def with_seq(self, seq: int) -> StateRecord:
        """This record with the sequence number the store gave its entry."""
        return _replace(self, seq=seq)

    def with_payload(self, payload: PayloadInfo, blobs: dict[str, int]) -> StateRecord:
        """This record with its content's file and blobs filled in (by the store)."""
        return _replace(self, payload=payload, blobs=dict(blobs))

    def to_json(self) -> dict[str, Any]:
        document: dict[str, Any] = {
            "format": self.format,
            "id": self.id,
            "parent": self.parent,
            "root": self.root,
            "recipe": self.recipe.to_json() if self.recipe is not None else None,
            "tags": list(self.tags),
            "created": self.created,
            "status": self.status.value,
        }
        if self.error is not None:
            document["error"] = self.error.to_json()
            return document
        document.update(
            seconds=self.seconds,
            state_class=self.state_class,
            properties=self.properties,
            dagger_version=self.dagger_version,
            blobs=self.blobs,
        )
        if self.payload is not None:
            document["payload"] = self.payload.to_json()
        if self.arguments is not None:
            document["arguments"] = self.arguments
        if self.ingredients is not None:
            document["ingredients"] = self.ingredients.to_json()
        if self.environment is not None:
            document["environment"] = self.environment
        return document

    @classmethod
    def from_json(cls, document: Any, expected_id: str | None = None) -> StateRecord:
        """Parse and validate a record.

        Args:
            document: The parsed JSON.
            expected_id: The id the file is named by; a record of another id is invalid.

        Raises:
            InvalidRecordError: A field is missing or of the wrong type.
        """
        what = "record"
        _expect(document, dict, what)
        state_id = _id(document.get("id"), "record `id`")
        if expected_id is not None and state_id != expected_id:
            raise InvalidRecordError(f"record of {state_id[:12]} stored as {expected_id[:12]}")
        parent = document.get("parent")
        if parent is not None:
            _id(parent, "record `parent`")
        status_text = _field(document, "status", str, what, Status.DONE.value)
        try:
            status = Status(status_text)
        except ValueError:
            raise InvalidRecordError(f"record status {status_text!r} is unknown") from None
        error = document.get("error")
        payload = document.get("payload")
        seconds = _field(document, "seconds", (int, float, type(None)), what, None)
        blobs = _field(document, "blobs", dict, what, {})
        if not all(isinstance(size, int) for size in blobs.values()):
            raise InvalidRecordError("record `blobs` sizes are not integers")
        arguments = document.get("arguments")
        if arguments is not None:
            _expect(arguments, dict, "record `arguments`")
        environment = document.get("environment")
        if environment is not None:
            _expect(environment, dict, "record `environment`")
        return cls(
            id=state_id,
            parent=parent,
            root=bool(_field(document, "root", bool, what, parent is None)),
            recipe=RecipeInfo.from_json(document.get("recipe")),
            tags=_strings(document.get("tags", []), "record `tags`"),
            created=_field(document, "created", str, what, ""),
            status=status,
            seconds=float(seconds) if seconds is not None else None,
            state_class=_field(document, "state_class", str, what, ""),
            properties=_field(document, "properties", dict, what, {}),
            arguments=arguments,
            dagger_version=_field(document, "dagger_version", str, what, ""),
            payload=PayloadInfo.from_json(payload) if payload is not None else None,
            blobs=blobs,
            error=ErrorInfo.from_json(error) if error is not None else None,
            format=_field(document, "format", int, what, FORMAT_VERSION),
            identity=_field(document, "identity", int, what, 1),  # format 1: scheme 1
            ingredients=(
                Ingredients.from_json(document["ingredients"])
                if document.get("ingredients") is not None
                else None
            ),
            environment=environment,
        )


def _replace(record: StateRecord, **changes: Any) -> StateRecord:
    values = {name: getattr(record, name) for name in StateRecord.__dataclass_fields__}
    values.update(changes)
    return StateRecord(**values)


@dataclass(frozen=True, slots=True)
class ResultEntry:
    """One recorded Function result.

    Exactly one of ``value`` (plain JSON, inline), ``file`` (a side payload, checked by
    ``sha256`` and ``size``) or ``error`` describes it.

    Attributes:
        code: The Function's code identity when it ran (a changed one is run again).
        value: The result itself when it is plain JSON.
        file: Where the side payload of any other result is: a path relative to the
            experiment folder (``results/<sha256>.res``; ``states/...`` in a format-1
            store), or :data:`INLINE` for one kept in the store's log under its ``sha256``.
        sha256: Its checksum.
        size: Its size in bytes.
        blobs: Blobs the side payload refers to.
        type: ``module.qualname`` of the result's type (side payloads).
        repr: A short repr of the result, for tables (side payloads).
        error: Why the Function failed.
        seconds: How long it ran.
        created: When it ran.
        mutated: The attribute paths of the state that the Function changed while it ran
            (``("model.bn1.running_mean", "model.training")``): its result was computed on
            a state it mutated. Empty when the state was checked and found unchanged; None
            when it was not checked (a record written before the check existed, or a run
            with ``check_read_only=False``).
    """

    code: str
    value: Any = None
    file: str | None = None
    sha256: str | None = None
    size: int | None = None
    blobs: dict[str, int] = field(default_factory=dict)
    type: str | None = None
    repr: str | None = None
    error: ErrorInfo | None = None
    seconds: float | None = None
    created: str = ""
    mutated: tuple[str, ...] | None = None

    @property
    def failed(self) -> bool:
        return self.error is not None

    @property
    def inline(self) -> bool:
        """Whether the value is stored in the entry itself (plain JSON)."""
        return self.error is None and self.file is None

    def summary(self) -> Any:
        """The value if it is inline, else its short repr (for tables; loads nothing)."""
        return self.value if self.inline else self.repr

    def with_timing(self, seconds: float, created: str) -> ResultEntry:
        values = {name: getattr(self, name) for name in ResultEntry.__dataclass_fields__}
        values.update(seconds=seconds, created=created)
        return ResultEntry(**values)

    def with_mutated(self, paths: tuple[str, ...] | list[str] | None) -> ResultEntry:
        """This entry with the paths its Function changed (empty: checked, unchanged)."""
        values = {name: getattr(self, name) for name in ResultEntry.__dataclass_fields__}
        values.update(mutated=None if paths is None else tuple(paths))
        return ResultEntry(**values)

    def to_json(self) -> dict[str, Any]:
        document: dict[str, Any] = {"code": self.code}
        if self.error is not None:
            document["error"] = self.error.to_json()
        elif self.file is not None:
            document.update(
                file=self.file,
                sha256=self.sha256,
                size=self.size,
                blobs=self.blobs,
                type=self.type,
                repr=self.repr,
            )
        else:
            document["value"] = self.value
        if self.seconds is not None:
            document["seconds"] = self.seconds
        if self.created:
            document["created"] = self.created
        if self.mutated is not None:
            document["mutated"] = list(self.mutated)
        return document

    @classmethod
    def from_json(cls, document: Any) -> ResultEntry:
        what = "result"
        _expect(document, dict, what)
        error = document.get("error")
        file = _field(document, "file", (str, type(None)), what, None)
        if error is None and file is None and "value" not in document:
            raise InvalidRecordError("result has neither `value`, `file` nor `error`")
        seconds = _field(document, "seconds", (int, float, type(None)), what, None)
        mutated = document.get("mutated")
        return cls(
            code=_field(document, "code", str, what, ""),
            value=document.get("value"),
            file=file,
            sha256=_field(document, "sha256", (str, type(None)), what, None),
            size=_field(document, "size", (int, type(None)), what, None),
            blobs=_field(document, "blobs", dict, what, {}),
            type=_field(document, "type", (str, type(None)), what, None),
            repr=_field(document, "repr", (str, type(None)), what, None),
            error=ErrorInfo.from_json(error) if error is not None else None,
            seconds=float(seconds) if seconds is not None else None,
            created=_field(document, "created", str, what, ""),
            mutated=_strings(mutated, "result `mutated`") if mutated is not None else None,
        )


#: The outcomes an audit records on a state (:class:`AuditNote`).
AUDIT_OUTCOMES = ("reproduced", "differs", "error")


@dataclass(frozen=True, slots=True)
class AuditNote:
    """The outcome of the last audit of a state (``dagger audit``, ``Experiment.audit``).

    Attributes:
        outcome: ``reproduced`` (recomputed from its stored parent, every attribute equal
            within the tolerances), ``differs`` (some attribute differs: see
            ``differences``) or ``error`` (the recipe raised when it was recomputed).
        created: When the audit ran (ISO 8601, UTC).
        rtol: The relative tolerance it compared with (0 with ``atol`` 0: bitwise).
        atol: The absolute tolerance, in the values' units.
        differences: The attribute paths that differ (``outcome == "differs"``), at most
            :data:`MAX_AUDIT_PATHS` of them.
        error: What the recipe raised (``outcome == "error"``): ``Type: message``.
        environment: Where the audit ran (:func:`dagger.environment.capture_environment`).
    """

    outcome: str
    created: str
    rtol: float = 0.0
    atol: float = 0.0
    differences: tuple[str, ...] = ()
    error: str = ""
    environment: dict[str, Any] | None = None

    def to_json(self) -> dict[str, Any]:
        document: dict[str, Any] = {
            "outcome": self.outcome,
            "created": self.created,
            "rtol": self.rtol,
            "atol": self.atol,
            "differences": list(self.differences),
        }
        if self.error:
            document["error"] = self.error
        if self.environment is not None:
            document["environment"] = self.environment
        return document

    @classmethod
    def from_json(cls, document: Any) -> AuditNote:
        what = "audit"
        _expect(document, dict, what)
        outcome = _field(document, "outcome", str, what)
        if outcome not in AUDIT_OUTCOMES:
            raise InvalidRecordError(f"audit outcome {outcome!r} is unknown")
        environment = document.get("environment")
        if environment is not None:
            _expect(environment, dict, "audit `environment`")
        return cls(
            outcome=outcome,
            created=_field(document, "created", str, what, ""),
            rtol=_field(document, "rtol", float, what, 0.0),
            atol=_field(document, "atol", float, what, 0.0),
            differences=_strings(document.get("differences", []), "audit `differences`"),
            error=_field(document, "error", str, what, ""),
            environment=environment,
        )


#: How many differing paths an AuditNote keeps (the audit's report lists them all).
MAX_AUDIT_PATHS = 50


@dataclass(frozen=True, slots=True)
class Notes:
    """What was learned about a state after it was stored: tags gained, Function results, and
    the outcome of its last audit (None if it was never audited)."""

    tags: tuple[str, ...] = ()
    results: dict[str, ResultEntry] = field(default_factory=dict)
    audit: AuditNote | None = None

    def merged(
        self,
        tags: tuple[str, ...] | list[str] = (),
        results: Mapping[str, ResultEntry] = {},
        audit: AuditNote | None = None,
    ) -> Notes:
        """These notes with more tags (kept in order, no duplicates), results (replacing) and
        the latest audit (replacing, when given)."""
        merged_tags = self.tags + tuple(tag for tag in dict.fromkeys(tags) if tag not in self.tags)
        return Notes(merged_tags, {**self.results, **results}, audit or self.audit)

    def to_json(self) -> dict[str, Any]:
        document: dict[str, Any] = {
            "tags": list(self.tags),
            "results": {name: entry.to_json() for name, entry in self.results.items()},
        }
        if self.audit is not None:
            document["audit"] = self.audit.to_json()
        return document

    @classmethod
    def from_json(cls, document: Any) -> Notes:
        _expect(document, dict, "notes")
        results = _field(document, "results", dict, "notes", {})
        audit = document.get("audit")
        return cls(
            _strings(document.get("tags", []), "notes `tags`"),
            {str(name): ResultEntry.from_json(entry) for name, entry in results.items()},
            AuditNote.from_json(audit) if audit is not None else None,
        )


@dataclass(frozen=True, slots=True)
class ExperimentMeta:
    """``experiment.json``: what the folder holds and who wrote it.

    Its JSON carries a ``checksum`` (SHA-256 of the canonical JSON of every other field), so a
    damaged file is told apart from a valid one; format 1 files have none.

    Attributes:
        format: The format version of the store.
        roots: Ids of the roots spawned into the folder, in order.
        state_class: ``module:qualname`` of the experiment's state class.
        experiment_arguments: The first root's ``spawn_new_tree`` arguments, JSON-safe.
        dagger_version, python_version, torch_version: Who wrote it.
        created: When the folder was first used; ``updated``: when a root was last added.
    """

    format: int
    roots: tuple[str, ...]
    state_class: str
    experiment_arguments: dict[str, Any] = field(default_factory=dict)
    dagger_version: str = ""
    python_version: str = ""
    torch_version: str | None = None
    created: str = ""
    updated: str | None = None
    identities: tuple[int, ...] = (IDENTITY_VERSION,)

    def with_roots(self, roots: tuple[str, ...] | list[str], updated: str) -> ExperimentMeta:
        values = {name: getattr(self, name) for name in ExperimentMeta.__dataclass_fields__}
        values.update(roots=tuple(roots), updated=updated)
        return ExperimentMeta(**values)

    def with_identities(self, identities: tuple[int, ...] | list[int]) -> ExperimentMeta:
        """This description with ``identities`` (the schemes of the states stored)."""
        values = {name: getattr(self, name) for name in ExperimentMeta.__dataclass_fields__}
        values.update(identities=tuple(sorted(set(identities))))
        return ExperimentMeta(**values)

    @property
    def older_identities(self) -> tuple[int, ...]:
        """The identity schemes older than this dagger's of which the store holds states."""
        return tuple(scheme for scheme in self.identities if scheme < IDENTITY_VERSION)

    def to_json(self) -> dict[str, Any]:
        document: dict[str, Any] = {
            "format": self.format,
            "roots": list(self.roots),
            "state_class": self.state_class,
            "experiment_arguments": self.experiment_arguments,
            "dagger_version": self.dagger_version,
            "python_version": self.python_version,
            "torch_version": self.torch_version,
            "created": self.created,
        }
        if self.updated is not None:
            document["updated"] = self.updated
        document["identities"] = list(self.identities)
        if self.format >= 2:
            document["checksum"] = _checksum(document)
        return document

    @classmethod
    def from_json(cls, document: Any) -> ExperimentMeta:
        """Parse and validate experiment.json.

        Raises:
            InvalidRecordError: A field is missing or of the wrong type, or (format 2 and
                later) the checksum is missing or does not match the content.
        """
        what = "experiment.json"
        _expect(document, dict, what)
        fmt = document.get("format")
        if isinstance(fmt, int) and fmt >= 2 and fmt <= FORMAT_VERSION:
            stated = document.get("checksum")
            rest = {key: value for key, value in document.items() if key != "checksum"}
            if stated != _checksum(rest):
                raise InvalidRecordError(
                    "experiment.json does not match its checksum"
                    if stated
                    else "experiment.json has no checksum"
                )
        return cls(
            format=_field(document, "format", int, what),
            roots=_strings(document.get("roots", []), "experiment.json `roots`"),
            state_class=_field(document, "state_class", str, what, ""),
            experiment_arguments=_field(document, "experiment_arguments", dict, what, {}),
            dagger_version=_field(document, "dagger_version", str, what, ""),
            python_version=_field(document, "python_version", str, what, ""),
            torch_version=_field(document, "torch_version", (str, type(None)), what, None),
            created=_field(document, "created", str, what, ""),
            updated=_field(document, "updated", (str, type(None)), what, None),
            # A store written before identity scheme 2 does not say: its states are scheme 1.
            identities=_identities(document.get("identities", [1])),
        )


def _identities(value: Any) -> tuple[int, ...]:
    if not (
        isinstance(value, list)
        and value
        and all(isinstance(item, int) and not isinstance(item, bool) for item in value)
    ):
        raise InvalidRecordError("experiment.json `identities` is not a list of integers")
    return tuple(sorted(set(value)))


def _checksum(document: Any) -> str:
    return hashlib.sha256(dumps(document)).hexdigest()


# -- the wire form (format 2): entries of a store's log ------------------------------------------

#: Record fields stored as shared parts (once per distinct content, referenced by key).
SHARED_FIELDS = ("recipe", "origin", "properties", "blobs", "manifest", "environment")

#: Characters of a shared part's key: 96 bits of SHA-256, so that distinct parts never collide.
SHARED_KEY_CHARS = 24


def shared_key(part: Any) -> str:
    """The key a shared part is stored under: a hash of its canonical JSON."""
    return hashlib.sha256(dumps(part)).hexdigest()[:SHARED_KEY_CHARS]


# The last environment's key: a run records thousands of states in one environment, and
# hashing its canonical JSON cost more than the rest of a record's wire form; comparing it
# with a copy of the last one costs a twentieth of that.
_last_environment: tuple[dict[str, Any], str] | None = None


def _environment_key(environment: dict[str, Any]) -> str:
    global _last_environment
    last = _last_environment
    if last is not None and last[0] == environment:
        return last[1]
    key = shared_key(environment)
    _last_environment = (copy.deepcopy(environment), key)
    return key


def record_to_wire(record: StateRecord) -> tuple[dict[str, Any], dict[str, Any]]:
    """The wire form of a record, and the shared parts it refers to, by key.

    Returns:
        ``(document, parts)``: ``document`` holds the keys of its shared parts; ``parts`` maps
        each key to the part's JSON (the store writes each part once).
    """
    parts: dict[str, Any] = {}

    def share(part: Any) -> str:
        key = shared_key(part)
        parts[key] = part
        return key

    document: dict[str, Any] = {
        "id": record.id,
        "parent": record.parent,
        "seq": record.seq,
        "created": record.created,
        "status": record.status.value,
        "identity": record.identity,
    }
    if record.root != (record.parent is None):
        document["root"] = record.root
    ingredients = record.ingredients
    if record.recipe is not None:
        recipe = record.recipe
        if ingredients is not None:
            key, part = _recipe_part(recipe, ingredients)
            parts[key] = part
            document["recipe"] = key
        else:
            document["recipe"] = share(
                {"class": recipe.name, "module": recipe.module, "code": recipe.code}
            )
        document["params"] = recipe.params
    if record.tags:
        document["tags"] = list(record.tags)
    if record.error is not None:
        document["error"] = record.error.to_json()
        return document, parts
    document["seconds"] = record.seconds
    document["origin"] = share(
        {"state_class": record.state_class, "dagger_version": record.dagger_version}
    )
    document["properties"] = share(record.properties)
    if record.arguments is not None:
        document["arguments"] = record.arguments
    if record.blobs:
        document["blobs"] = share(record.blobs)
    if ingredients is not None:
        if record.recipe is None:  # a root: its state class's manifest, in a part of its own
            document["manifest"] = share(ingredients.shared_part())
        if ingredients.digests:
            document["digests"] = ingredients.digests
    if record.environment is not None:
        key = _environment_key(record.environment)
        parts[key] = record.environment
        document["environment"] = key
    if record.payload is not None:
        info = record.payload
        payload: dict[str, Any] = {"size": info.size, "format": info.format}
        if not info.inline:
            payload.update(file=info.file, sha256=info.sha256)
        document["payload"] = payload
    return document, parts


# (recipe name, module, code, id(manifest)) -> (manifest, key, part): the recipe part with its
# manifest is the same for every state of one recipe class and code, and its key (a hash of
# its JSON, which a manifest makes long) is worked out once per run rather than per state.
# Bounded; it holds JSON values only.
_RECIPE_PARTS: dict[tuple[str, str, str, int], tuple[Any, str, dict[str, Any]]] = {}
_RECIPE_PARTS_KEPT = 256


def _recipe_part(recipe: RecipeInfo, ingredients: Ingredients) -> tuple[str, dict[str, Any]]:
    memo = (recipe.name, recipe.module, recipe.code, id(ingredients.manifest))
    cached = _RECIPE_PARTS.get(memo)
    if cached is not None and cached[0] is ingredients.manifest:
        return cached[1], cached[2]
    part = {
        "class": recipe.name,
        "module": recipe.module,
        "code": recipe.code,
        "manifest": list(ingredients.manifest),
    }
    key = shared_key(part)
    if len(_RECIPE_PARTS) >= _RECIPE_PARTS_KEPT:
        _RECIPE_PARTS.clear()
    _RECIPE_PARTS[memo] = (ingredients.manifest, key, part)
    return key, part


def wire_refs(document: Mapping[str, Any]) -> dict[str, str]:
    """The keys of the shared parts a record's wire form refers to, by field."""
    return {name: document[name] for name in SHARED_FIELDS if isinstance(document.get(name), str)}


def record_from_wire(document: Any, parts: Mapping[str, Any]) -> StateRecord:
    """Parse and validate a record's wire form.

    Args:
        document: The entry's JSON.
        parts: Shared parts by key (a missing one makes the record unreadable).

    Raises:
        InvalidRecordError: A field is missing or of the wrong type, or a shared part it
            refers to is unknown or malformed.
    """
    what = "record"
    _expect(document, dict, what)
    state_id = _id(document.get("id"), "record `id`")
    parent = document.get("parent")
    if parent is not None:
        _id(parent, "record `parent`")

    def part(name: str, kind: type) -> Any:
        key = document.get(name)
        if key is None:
            return None
        if not isinstance(key, str) or key not in parts:
            raise InvalidRecordError(f"record {state_id[:12]}: shared part `{name}` is unknown")
        return _expect(parts[key], kind, f"shared part `{name}`")

    status_text = _field(document, "status", str, what)
    try:
        status = Status(status_text)
    except ValueError:
        raise InvalidRecordError(f"record status {status_text!r} is unknown") from None
    recipe_part = part("recipe", dict)
    recipe = None
    if recipe_part is not None:
        recipe = RecipeInfo(
            _field(recipe_part, "class", str, "recipe"),
            _field(recipe_part, "module", str, "recipe", ""),
            _field(document, "params", dict, what, {}),
            _field(recipe_part, "code", str, "recipe", ""),
        )
    origin = part("origin", dict) or {}
    blobs = part("blobs", dict) or {}
    if not all(isinstance(size, int) for size in blobs.values()):
        raise InvalidRecordError("record `blobs` sizes are not integers")
    payload_doc = document.get("payload")
    payload = None
    if payload_doc is not None:
        _expect(payload_doc, dict, "record `payload`")
        payload = PayloadInfo(
            _field(payload_doc, "file", str, "payload", INLINE),
            _field(payload_doc, "sha256", str, "payload", ""),
            _field(payload_doc, "size", int, "payload"),
            _field(payload_doc, "format", str, "payload", "pickle"),
        )
    error = document.get("error")
    arguments = document.get("arguments")
    if arguments is not None:
        _expect(arguments, dict, "record `arguments`")
    seconds = _field(document, "seconds", (int, float, type(None)), what, None)
    digests = document.get("digests") or {}
    # A root's manifest part. Unlike the others it is not needed to use the state: one that is
    # gone (collected by a dagger that did not know the field) makes it explain as "not
    # recorded" rather than making the record unreadable.
    manifest_key = document.get("manifest")
    manifest = parts.get(manifest_key) if isinstance(manifest_key, str) else None
    ingredients = None
    if isinstance(manifest, dict):
        ingredients = Ingredients.from_json(manifest, digests)
    elif recipe is not None and recipe_part is not None and "manifest" in recipe_part:
        ingredients = Ingredients.from_json(
            {"name": recipe.name, "code": recipe.code, "manifest": recipe_part["manifest"]},
            digests,
        )
    return StateRecord(
        id=state_id,
        parent=parent,
        root=bool(_field(document, "root", bool, what, parent is None)),
        recipe=recipe,
        tags=_strings(document.get("tags", []), "record `tags`"),
        created=_field(document, "created", str, what, ""),
        status=status,
        seconds=float(seconds) if seconds is not None else None,
        state_class=_field(origin, "state_class", str, "origin", ""),
        properties=part("properties", dict) or {},
        arguments=arguments,
        dagger_version=_field(origin, "dagger_version", str, "origin", ""),
        payload=payload,
        blobs=blobs,
        error=ErrorInfo.from_json(error) if error is not None else None,
        format=FORMAT_VERSION,
        seq=_field(document, "seq", int, what),
        identity=_field(document, "identity", int, what, IDENTITY_VERSION),
        ingredients=ingredients,
        environment=part("environment", dict),
    )


def notes_to_wire(state_id: str, seq: int, notes: Notes) -> dict[str, Any]:
    """The wire form of a state's notes (all of them: the entry with the highest ``seq``
    is the state's notes)."""
    return {"id": state_id, "seq": seq, **notes.to_json()}


def notes_from_wire(document: Any) -> tuple[str, int, Notes]:
    """``(state id, seq, notes)`` of a notes entry.

    Raises:
        InvalidRecordError: The entry is malformed.
    """
    _expect(document, dict, "notes")
    state_id = _id(document.get("id"), "notes `id`")
    return state_id, _field(document, "seq", int, "notes"), Notes.from_json(document)


@dataclass(frozen=True, slots=True)
class Marker:
    """An entry that changes what a state's record means, without replacing it.

    Attributes:
        state_id: The state.
        seq: Its sequence number (it applies to entries with a lower one).
        kind: ``removed`` (the state is gone), ``pruned`` (its payload was dropped on purpose)
            or ``quarantined`` (its content was found missing or damaged).
        reason: Why, for the people reading ``verify`` or a warning.
    """

    state_id: str
    seq: int
    kind: str
    reason: str = ""

    KINDS = ("removed", "pruned", "quarantined")


def marker_to_wire(marker: Marker) -> dict[str, Any]:
    return {"id": marker.state_id, "seq": marker.seq, "kind": marker.kind, "reason": marker.reason}


def marker_from_wire(document: Any) -> Marker:
    """Parse a marker entry.

    Raises:
        InvalidRecordError: The entry is malformed or of an unknown kind.
    """
    _expect(document, dict, "marker")
    kind = _field(document, "kind", str, "marker")
    if kind not in Marker.KINDS:
        raise InvalidRecordError(f"marker kind {kind!r} is unknown")
    return Marker(
        _id(document.get("id"), "marker `id`"),
        _field(document, "seq", int, "marker"),
        kind,
        _field(document, "reason", str, "marker", ""),
    )
