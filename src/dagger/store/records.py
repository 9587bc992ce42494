"""File names in ``states/``, listing them, and reading and writing the typed records as files.

The records' schema lives in :mod:`dagger.record`; this module only knows where each document
is and how it is read from and written to disk.

Layout of ``states/`` (format version 1)::

    <id>.json               the record: how the state was made; written last, never changed
    <id>.<digest>.pkl       the payload the record points at (immutable, content-named)
    <id>.notes.json         annotations learned later: tags, Function results (replaced whole)
    <id>.failed.json        the last failure to compute the state (removed once it succeeds)
    <id>.<name>.<digest>.res  a Function result that is not JSON (immutable, content-named)

Names that start with a dot are temporary files and are never read.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import FormatVersionError, NotAnExperimentError
from ..record import FORMAT_VERSION, ExperimentMeta, InvalidRecordError, dumps, loads
from .files import is_temp, write_atomic

__all__ = [
    "ID_LENGTH",
    "Listing",
    "failure_name",
    "notes_name",
    "payload_name",
    "read_experiment",
    "read_json",
    "record_name",
    "result_name",
    "scan",
    "write_json",
]

ID_LENGTH = 64


def record_name(state_id: str) -> str:
    return f"{state_id}.json"


def notes_name(state_id: str) -> str:
    return f"{state_id}.notes.json"


def failure_name(state_id: str) -> str:
    return f"{state_id}.failed.json"


def payload_name(state_id: str, digest: str) -> str:
    return f"{state_id}.{digest[:32]}.pkl"


def result_name(state_id: str, name: str, digest: str) -> str:
    safe = "".join(c if c.isalnum() or c in "-_" else "_" for c in name)[:64]
    return f"{state_id}.{safe}.{digest[:32]}.res"


@dataclass
class Listing:
    """What one read of ``states/`` found, by kind of file."""

    records: set[str] = field(default_factory=set)
    payloads: dict[str, list[str]] = field(default_factory=dict)
    notes: set[str] = field(default_factory=set)
    failures: set[str] = field(default_factory=set)
    results: list[str] = field(default_factory=list)
    temps: list[str] = field(default_factory=list)

    def has_payload(self, state_id: str, name: str | None = None) -> bool:
        names = self.payloads.get(state_id, ())
        return bool(names) if name is None else name in names


def scan(states_dir: Path) -> Listing:
    """Sort the names in ``states/`` by kind, with one directory read."""
    listing = Listing()
    try:
        names = os.listdir(states_dir)
    except FileNotFoundError:
        return listing
    for name in names:
        if name[0] == "." or len(name) < ID_LENGTH + 5 or name[ID_LENGTH] != ".":
            if is_temp(name):
                listing.temps.append(name)
            continue
        state_id, rest = name[:ID_LENGTH], name[ID_LENGTH + 1 :]
        if rest == "json":
            listing.records.add(state_id)
        elif rest.endswith(".pkl"):
            listing.payloads.setdefault(state_id, []).append(name)
        elif rest == "notes.json":
            listing.notes.add(state_id)
        elif rest == "failed.json":
            listing.failures.add(state_id)
        elif rest.endswith(".res"):
            listing.results.append(name)
    return listing


def read_json(path: Path) -> Any:
    """Parse a JSON file.

    Raises:
        FileNotFoundError: It does not exist.
        InvalidRecordError: It is not valid JSON.
    """
    with open(path, "rb") as handle:
        return loads(handle.read())


def write_json(path: Path, document: Any, *, durable: bool, replace: bool = True) -> bool:
    """Write a JSON document atomically (see :func:`~dagger.store.files.write_atomic`)."""
    return write_atomic(path, dumps(document), durable=durable, replace=replace)


def read_experiment(directory: Path) -> ExperimentMeta:
    """Read and check ``experiment.json``.

    Raises:
        NotAnExperimentError: The folder has no (readable) experiment.json.
        FormatVersionError: It was written in a newer format.
    """
    path = directory / "experiment.json"
    try:
        meta = read_json(path)
    except FileNotFoundError:
        what = "does not exist" if not directory.exists() else "is not a dagger experiment"
        raise NotAnExperimentError(
            f"`{directory}` {what}: it has no experiment.json. Pass the folder an "
            "Experiment was run in (the `directory=` of `dagger.Experiment`).",
            directory=str(directory),
        ) from None
    except (OSError, InvalidRecordError) as error:
        raise NotAnExperimentError(
            f"`{path}` cannot be read as a dagger experiment ({error}). Pass the folder an "
            "Experiment was run in.",
            directory=str(directory),
        ) from None
    try:
        parsed = ExperimentMeta.from_json(meta)
    except InvalidRecordError as error:
        raise NotAnExperimentError(
            f"`{path}` is not a dagger experiment.json ({error}).",
            directory=str(directory),
        ) from None
    if parsed.format > FORMAT_VERSION:
        raise FormatVersionError(
            f"`{directory}` was written in dagger store format {parsed.format} (by dagger "
            f"{parsed.dagger_version or '?'}); this dagger reads format {FORMAT_VERSION} "
            "and older. Upgrade dagger (`pip install -U dagger`) to read it.",
            directory=str(directory),
            found=parsed.format,
            supported=FORMAT_VERSION,
        )
    return parsed
