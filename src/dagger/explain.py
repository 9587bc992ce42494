"""Explain: what a state's id is made of, and what changed when a state is computed again.

An :class:`Explanation` lists the ingredients of one id (DESIGN.md section 3): for a root, the
state class, its code identity and every identity argument; for a child, the parent's id, the
recipe class, its code identity and every identity property. The code identity is the
manifest of :func:`dagger.fingerprint.code_identity`: each method, global, closure, default,
library version the code reads, and the names it reads that are not part of the identity
(untracked). Values show as text and count by the digest of their canonical encoding, so two
values that print alike but differ (``0.1`` and ``np.float32(0.1)``) are told apart.

:meth:`Explanation.changes_from` compares two explanations (a stored state's and the one about
to be computed) and says, in one line each, what differs: ``parameter amount 0.25 -> 0.5``,
``global LABEL_SMOOTHING 0.1 -> 0.3``, ``code of Smooth.run changed``.

Each computed state's record keeps its :class:`~dagger.record.Ingredients` (built by
:func:`ingredients_of` when the runner writes the record); :func:`explain_record` turns a
stored record back into an Explanation (``state.explain()``, ``dagger explain DIR ID``). A
record written before dagger kept them explains as *not recorded*
(``Explanation.recorded`` is False): what the record holds (class, parent, parameters, code
identity) is listed, the manifest is not.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from .fingerprint import CodeIdentity, code_digest, code_identity, manifest_changes
from .hashing import encode
from .record import Ingredients, StateRecord, jsonable

__all__ = [
    "Explanation",
    "explain_child",
    "explain_record",
    "explain_root",
    "ingredients_of",
    "kept_digests",
    "value_digest",
]

# Values longer than this are cut in the printed listing (the digest still tells them apart).
_VALUE_WIDTH = 60


def value_digest(value: Any) -> str:
    """Hex SHA-256 of a value's canonical encoding as ids use it ("" if it cannot be encoded)."""
    try:
        return hashlib.sha256(encode(value, code=code_digest)).hexdigest()
    except Exception:  # an identity value always encodes; anything else just has no digest
        return ""


def _shown(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= _VALUE_WIDTH else text[: _VALUE_WIDTH - 3] + "..."


@dataclass(frozen=True)
class Explanation:
    """The ingredients of one state's id.

    Attributes:
        state_id: The id they make (None if unknown).
        kind: ``"root"`` or ``"child"``.
        name: The state class (root) or recipe class (child), by qualified name.
        parent_id: The parent's id (children only).
        values: The identity arguments (root) or properties (child), as JSON-safe values.
        value_digests: Each value's digest (hex SHA-256 of its canonical encoding).
        code: The class's code identity: ``version:<VERSION>`` or ``code:<fingerprint>``.
        manifest: The code identity's manifest (empty when ``VERSION`` pins it).
        recorded: False for a stored state whose record predates explanations (format 1,
            or a record written before dagger kept its ingredients): ``manifest`` and
            ``value_digests`` are then unknown, not empty.
    """

    state_id: str | None
    kind: str
    name: str
    parent_id: str | None = None
    values: dict[str, Any] = field(default_factory=dict)
    value_digests: dict[str, str] = field(default_factory=dict)
    code: str = ""
    manifest: tuple[dict[str, str], ...] = ()
    recorded: bool = True

    @property
    def untracked(self) -> list[dict[str, str]]:
        """The names the code reads that are not part of the identity (a logger, ...)."""
        return [entry for entry in self.manifest if entry.get("kind") == "untracked"]

    def changes_from(self, stored: Explanation) -> list[str]:
        """What differs from ``stored`` (the other state's explanation), one line each.

        Returns:
            Lines such as ``parameter amount 0.25 -> 0.5``, ``global LABEL_SMOOTHING 0.1 ->
            0.3``, ``code of Smooth.run changed``; empty if the ingredients are the same.
        """
        lines: list[str] = []
        if stored.name != self.name:
            lines.append(f"{self._noun()} {stored.name} -> {self.name}")
        if stored.parent_id != self.parent_id and self.kind == "child":
            old, new = (stored.parent_id or "?")[:12], (self.parent_id or "?")[:12]
            lines.append(f"parent {old} -> {new}")
        word = "argument" if self.kind == "root" else "parameter"
        # Without recorded digests, the stored side's values count by their JSON view.
        theirs = stored.value_digests if stored.recorded else _view_digests(stored.values)
        for key in sorted({*theirs, *self.value_digests}):
            before, after = theirs.get(key), self.value_digests.get(key)
            if before == after:
                continue
            if before is None:
                lines.append(f"{word} {key} added ({_shown(self.values.get(key))})")
            elif after is None:
                lines.append(f"{word} {key} removed (was {_shown(stored.values.get(key))})")
            else:
                old, new = _shown(stored.values.get(key)), _shown(self.values.get(key))
                lines.append(
                    f"{word} {key} {old} -> {new}"
                    if old != new
                    else f"{word} {key} changed ({new}, a value of another type or precision)"
                )
        if stored.code != self.code:
            changes = manifest_changes(stored.manifest, self.manifest) if stored.recorded else []
            if stored.code.startswith("version:") or self.code.startswith("version:"):
                changes = [f"VERSION of {self.name}: {stored.code} -> {self.code}"]
            elif not stored.recorded:
                changes = [f"code of {self.name} changed (the stored state's was not recorded)"]
            lines.extend(changes or [f"code of {self.name} changed"])
        return lines

    def _noun(self) -> str:
        return "state class" if self.kind == "root" else "recipe"

    def to_json(self) -> dict[str, Any]:
        return {
            "state_id": self.state_id,
            "kind": self.kind,
            "name": self.name,
            "parent_id": self.parent_id,
            "values": self.values,
            "value_digests": self.value_digests,
            "code": self.code,
            "manifest": list(self.manifest),
            "recorded": self.recorded,
        }

    @classmethod
    def from_json(cls, document: Mapping[str, Any]) -> Explanation:
        return cls(
            state_id=document.get("state_id"),
            kind=str(document.get("kind", "child")),
            name=str(document.get("name", "")),
            parent_id=document.get("parent_id"),
            values=dict(document.get("values") or {}),
            value_digests=dict(document.get("value_digests") or {}),
            code=str(document.get("code", "")),
            manifest=tuple(dict(entry) for entry in document.get("manifest") or ()),
            recorded=bool(document.get("recorded", True)),
        )

    def __str__(self) -> str:
        head = f"state {self.state_id[:12] if self.state_id else '?'}: " + (
            f"root of {self.name}"
            if self.kind == "root"
            else f"{self.name} applied to {(self.parent_id or '?')[:12]}"
        )
        lines = [head]
        word = "argument" if self.kind == "root" else "parameter"
        for key in sorted(self.values):
            lines.append(f"  {word:<18} {key} = {_shown(self.values[key])}")
        lines.append(f"  {'code identity':<18} {self.code}")
        if not self.recorded:
            lines.append(
                "  not recorded: what the code read was not kept with this state (it was "
                "stored by an earlier dagger)"
            )
        for entry in self.manifest:
            if entry.get("kind") == "untracked":
                continue
            shown = f" {entry['value']}" if entry.get("value") else ""
            lines.append(f"  {entry.get('kind', ''):<18} {entry.get('name', '')}{shown}")
        untracked = self.untracked
        if untracked:
            lines.append("  untracked (read by the code, not part of the id):")
            for entry in untracked:
                shown = f" ({entry['value']})" if entry.get("value") else ""
                lines.append(f"  {'':<18} {entry.get('name', '')}{shown}")
        return "\n".join(lines)

    def _repr_pretty_(self, printer: Any, cycle: bool) -> None:  # IPython shows the listing
        printer.text(str(self))


def _code(cls: type, base: type, code: str) -> tuple[dict[str, str], ...]:
    if code.startswith("version:"):
        return ()
    return _manifest_json(code_identity(cls, base))


def explain_root(
    state_class: type, base: type, arguments: Mapping[str, Any], code: str, state_id: str | None
) -> Explanation:
    """The explanation of a root's id from its class and identity arguments."""
    return Explanation(
        state_id=state_id,
        kind="root",
        name=state_class.__qualname__,
        values={key: jsonable(value) for key, value in arguments.items()},
        value_digests={key: value_digest(value) for key, value in arguments.items()},
        code=code,
        manifest=_code(state_class, base, code),
    )


def explain_child(
    recipe_class: type,
    base: type,
    parent_id: str,
    properties: Mapping[str, Any],
    code: str,
    state_id: str | None,
) -> Explanation:
    """The explanation of a child's id from its parent's id and its recipe."""
    return Explanation(
        state_id=state_id,
        kind="child",
        name=recipe_class.__qualname__,
        parent_id=parent_id,
        values={key: jsonable(value) for key, value in properties.items()},
        value_digests={key: value_digest(value) for key, value in properties.items()},
        code=code,
        manifest=_code(recipe_class, base, code),
    )


def _view_digests(values: Mapping[str, Any]) -> dict[str, str]:
    return {key: value_digest(value) for key, value in values.items()}


# id(CodeIdentity) -> (that identity, its manifest as JSON entries). The identities come from
# fingerprint's cache (one object per class and code version), so a run that computes many
# states of one recipe converts its manifest once; bounded, and it holds no user object.
_MANIFESTS: dict[int, tuple[CodeIdentity, tuple[dict[str, str], ...]]] = {}
_MANIFESTS_KEPT = 256


def _manifest_json(identity: CodeIdentity) -> tuple[dict[str, str], ...]:
    cached = _MANIFESTS.get(id(identity))
    if cached is not None and cached[0] is identity:
        return cached[1]
    entries = tuple(entry.to_json() for entry in identity.manifest)
    if len(_MANIFESTS) >= _MANIFESTS_KEPT:
        _MANIFESTS.clear()
    _MANIFESTS[id(identity)] = (identity, entries)
    return entries


def ingredients_of(
    cls: type, base: type, code: str, values: Mapping[str, Any], *, root: bool
) -> Ingredients:
    """What a state's record keeps about its id (built only for states being computed).

    Args:
        cls: The recipe class (child) or state class (root).
        base: The dagger class it extends (``Recipe``, ``Function``, ``ExperimentState``).
        code: Its code identity as the id used it.
        values: The identity properties (child) or identity arguments (root), as Python
            values.
        root: Whether the state is a root: then every argument's digest is kept (their keys
            say which of the recorded arguments are identity); for a child only the digests
            that the JSON view of the value does not give back.
    """
    manifest = () if code.startswith("version:") else _manifest_json(code_identity(cls, base))
    return Ingredients(cls.__qualname__, code, manifest, kept_digests(values, root=root))


# Values whose JSON view is the value itself: their digest is always the view's.
_PLAIN = (int, float, str, bool, type(None))


def kept_digests(values: Mapping[str, Any], *, root: bool) -> dict[str, str]:
    """The value digests a record keeps (see :class:`~dagger.record.Ingredients`)."""
    digests: dict[str, str] = {}
    for key, value in values.items():
        if not root and type(value) in _PLAIN:
            continue
        exact = value_digest(value)
        if root or exact != value_digest(jsonable(value)):
            digests[key] = exact
    return digests


def explain_record(record: StateRecord) -> Explanation:
    """The explanation of a stored state, from its record (no payload is read).

    A record without :class:`~dagger.record.Ingredients` (written before dagger kept them)
    gives an Explanation with ``recorded`` False: class, parent, parameters and code identity
    as the record has them, no manifest.
    """
    ingredients = record.ingredients
    kind = "child" if record.recipe is not None else "root"
    if record.recipe is not None:
        name, code, values = record.recipe.name, record.recipe.code, dict(record.recipe.params)
    else:
        name = record.state_class.rpartition(":")[2] or record.state_class
        code, values = "", dict(record.arguments or {})
    if ingredients is None:
        return Explanation(
            state_id=record.id,
            kind=kind,
            name=name,
            parent_id=record.parent,
            values=values,
            value_digests={},
            code=code,
            manifest=(),
            recorded=False,
        )
    if kind == "root":  # the digests name the identity arguments
        values = {key: values.get(key) for key in ingredients.digests}
    digests = {
        key: ingredients.digests.get(key) or value_digest(value) for key, value in values.items()
    }
    return Explanation(
        state_id=record.id,
        kind=kind,
        name=ingredients.name,
        parent_id=record.parent,
        values=values,
        value_digests=digests,
        code=ingredients.code,
        manifest=ingredients.manifest,
    )
