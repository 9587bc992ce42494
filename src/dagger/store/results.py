"""Recorded Function results: how a value is recorded, and the mapping a state shows.

A result that is plain JSON (numbers, strings, booleans, None, lists, dicts with string keys)
is stored inline in the state's notes; anything else is pickled to a side payload, checked by
its checksum before it is unpickled, and loaded on first access.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from typing import Any

from ..errors import ColumnNotFoundError, CorruptStateError
from ..record import ErrorInfo, ResultEntry

__all__ = ["Results", "is_plain_json", "short_repr", "summary_entries"]


def is_plain_json(value: Any, depth: int = 0) -> bool:
    """Whether a value is stored inline: JSON types only (any float), string keys."""
    if depth > 50:
        return False
    if value is None or (isinstance(value, bool | int | str) and type(value) in (bool, int, str)):
        return True
    if type(value) is float:
        return True  # NaN and infinities too: records write them as JSON numbers
    if type(value) is list:
        return all(is_plain_json(item, depth + 1) for item in value)
    if type(value) is dict:
        return all(
            type(key) is str and is_plain_json(item, depth + 1) for key, item in value.items()
        )
    return False


def short_repr(value: Any, width: int = 120) -> str:
    """A repr of at most ``width`` characters (tables show it for side-payload results)."""
    try:
        text = repr(value)
    except Exception:
        text = f"<{type(value).__name__}>"
    return text if len(text) <= width else text[: width - 3] + "..."


class Results(Mapping[str, Any]):
    """A state's recorded Function results, by name; non-JSON values load on first access.

    Results whose Function failed are left out; :meth:`entry` shows the recorded entry of any
    and :attr:`errors` the failures.

    Args:
        entries: The recorded entries, by Function name.
        loader: Loads a side payload's value (``store.load_result``); None where nothing
            can be loaded.
        resolve: Where ``entries`` are summaries (a restored tree's, built from a store's
            columns without reading each state's notes), returns the full entries when one
            is needed (a side value to load, an error's traceback).
        on_damage: Called with a result's name and the error when its side payload turns out
            missing or damaged, before the error is raised (the store then records it, so
            that the next run computes the result again).
    """

    def __init__(
        self,
        entries: Mapping[str, ResultEntry],
        loader: Callable[[ResultEntry], Any] | None = None,
        resolve: Callable[[], Mapping[str, ResultEntry]] | None = None,
        on_damage: Callable[[str, Exception], None] | None = None,
    ) -> None:
        self._entries = {name: entry for name, entry in entries.items() if not entry.failed}
        self._errors = {name: entry for name, entry in entries.items() if entry.failed}
        self._loader = loader
        self._resolve = resolve
        self._on_damage = on_damage
        self._values: dict[str, Any] = {}

    def _full(self) -> None:
        """Replace summary entries by the full ones (once)."""
        if self._resolve is None:
            return
        entries = self._resolve()
        self._resolve = None
        self._entries = {name: entry for name, entry in entries.items() if not entry.failed}
        self._errors = {name: entry for name, entry in entries.items() if entry.failed}

    def __getitem__(self, name: str) -> Any:
        entry = self._entries.get(name)
        if entry is None:
            raise ColumnNotFoundError(self._missing(name), name=name)
        if entry.inline:
            return entry.value
        if name not in self._values:
            if self._loader is None:
                raise ColumnNotFoundError(
                    f"The result `{name}` is stored in a side file, and this state was not "
                    "loaded from a store that can read it.",
                    name=name,
                )
            self._full()
            try:
                self._values[name] = self._loader(self._entries.get(name, entry))
            except CorruptStateError as error:
                if self._on_damage is not None:
                    self._on_damage(name, error)
                raise
        return self._values[name]

    def _missing(self, name: str) -> str:
        if name in self._errors:
            self._full()
            error = self._errors[name].error
            kind = error.type if error is not None else "an error"
            return (
                f"The Function `{name}` failed on this state ({kind}); it has no result. "
                f"Its error is in results.errors[{name!r}]."
            )
        known = ", ".join(sorted(self._entries)) or "none"
        return (
            f"This state has no recorded result named `{name}` (recorded: {known}). Use "
            f"`results.get({name!r})` where some states lack it."
        )

    def __iter__(self) -> Iterator[str]:
        return iter(self._entries)

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def entry(self, name: str) -> ResultEntry:
        """The recorded entry of a result (value or file, code identity, seconds, error).

        Raises:
            ColumnNotFoundError: No Function of that name ran on this state.
        """
        self._full()
        found = self._entries.get(name) or self._errors.get(name)
        if found is None:
            raise ColumnNotFoundError(self._missing(name), name=name)
        return found

    def inline(self, name: str) -> bool:
        """Whether a result's value is plain JSON, kept in the record (nothing to load).

        Raises:
            KeyError: No successful result of that name.
        """
        return self._entries[name].inline

    @property
    def errors(self) -> dict[str, ErrorInfo]:
        """The failures of the Functions that failed on this state, by name."""
        if self._errors:
            self._full()
        return {name: entry.error for name, entry in self._errors.items() if entry.error}

    def summary(self, name: str) -> Any:
        """The value if plain JSON, else its short repr (for tables; loads nothing)."""
        return self._entries[name].summary()

    def __repr__(self) -> str:
        inner = ", ".join(f"{name!r}: {self.summary(name)!r}" for name in self._entries)
        return "{" + inner + "}"


def summary_entries(summaries: Mapping[str, tuple[Any, str, bool, bool]]) -> dict[str, ResultEntry]:
    """Entries standing for results known only by their summary (``(summary, code, failed,
    inline)``, a :data:`~dagger.store.table.ResultSummary`): enough for tables and queries;
    :class:`Results` fetches the full entries (``resolve``) when more is needed."""
    entries = {}
    for name, (summary, code, failed, inline) in summaries.items():
        if failed:
            entries[name] = ResultEntry(code=code, error=ErrorInfo("Error", ""))
        elif inline:
            entries[name] = ResultEntry(code=code, value=summary)
        else:
            entries[name] = ResultEntry(code=code, file="?", repr=summary)
    return entries
