"""File names in a store, format 1's ``states/`` listing, and ``experiment.json`` as a file.

The records' schema lives in :mod:`dagger.record`; this module only knows where each file is
and how it is read from and written to disk.

Format 2 (this dagger writes it)::

    experiment.json                  what the folder holds (checksummed)
    log/<writer>.log                 records, failures, notes, markers (see ``log.py``)
    payloads/<id>.<digest>.pkl       payloads too large to keep in their log entry
    results/<sha256>.res             Function results too large to keep in the log
    blobs/<h[:2]>/<h>                content-addressed buffers (``blobs.py``)
    index.json                       a snapshot of the catalog, for a fast restore

Format 1 (read, and converted on the first run): ``states/`` holds ``<id>.json`` (the record),
``<id>.<digest>.pkl`` (the payload), ``<id>.notes.json``, ``<id>.failed.json`` and
``<id>.<name>.<digest>.res``. Names that start with a dot are temporary files, never read.
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
    "DamagedMetaError",
    "Listing",
    "failure_name",
    "notes_name",
    "payload_path",
    "read_experiment",
    "read_json",
    "record_name",
    "result_path",
    "scan",
    "write_experiment",
    "write_json",
]

ID_LENGTH = 64


def payload_path(state_id: str, digest: str) -> str:
    """Where a payload too large for the log is kept, relative to the experiment folder."""
    return f"payloads/{state_id}.{digest[:32]}.pkl"


def result_path(digest: str) -> str:
    """Where a Function result too large for the log is kept, relative to the folder."""
    return f"results/{digest}.res"


# -- format 1 ------------------------------------------------------------------------------------


def record_name(state_id: str) -> str:
    return f"{state_id}.json"


def notes_name(state_id: str) -> str:
    return f"{state_id}.notes.json"


def failure_name(state_id: str) -> str:
    return f"{state_id}.failed.json"


@dataclass
class Listing:
    """What one read of format 1's ``states/`` found, by kind of file."""

    records: set[str] = field(default_factory=set)
    payloads: dict[str, list[str]] = field(default_factory=dict)
    notes: set[str] = field(default_factory=set)
    failures: set[str] = field(default_factory=set)
    results: list[str] = field(default_factory=list)
    temps: list[str] = field(default_factory=list)


def scan(states_dir: Path) -> Listing:
    """Sort the names in ``states/`` by kind, with one directory read."""
    listing = Listing()
    try:
        names = os.listdir(states_dir)
    except (FileNotFoundError, NotADirectoryError):
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


# -- JSON files ----------------------------------------------------------------------------------


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


class DamagedMetaError(Exception):
    """Internal: experiment.json exists but cannot be trusted (the store rebuilds it)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def read_experiment(directory: Path) -> ExperimentMeta:
    """Read and check ``experiment.json``.

    Raises:
        NotAnExperimentError: The folder has no experiment.json.
        DamagedMetaError: It exists but is not valid JSON, fails its checksum, or does not
            have the shape of one (the caller rebuilds it from the records, or reports it).
        FormatVersionError: It was written in a newer format.
    """
    path = directory / "experiment.json"
    try:
        document = read_json(path)
    except FileNotFoundError:
        what = "does not exist" if not directory.exists() else "is not a dagger experiment"
        raise NotAnExperimentError(
            f"`{directory}` {what}: it has no experiment.json. Pass the folder an "
            "Experiment was run in (the `directory=` of `dagger.Experiment`).",
            directory=str(directory),
        ) from None
    except IsADirectoryError:
        raise DamagedMetaError("it is a folder") from None
    except InvalidRecordError as error:
        raise DamagedMetaError(str(error)) from None
    except OSError as error:
        raise NotAnExperimentError(
            f"`{path}` cannot be read as a dagger experiment ({error.strerror or error}). Pass "
            "the folder an Experiment was run in.",
            directory=str(directory),
        ) from None
    if isinstance(document, dict):
        found = document.get("format")
        if isinstance(found, int) and found > FORMAT_VERSION:
            raise FormatVersionError(
                f"`{directory}` was written in dagger store format {found} (by dagger "
                f"{document.get('dagger_version') or '?'}); this dagger reads format "
                f"{FORMAT_VERSION} and older. Upgrade dagger (`pip install -U dagger`) to read "
                "it.",
                directory=str(directory),
                found=found,
                supported=FORMAT_VERSION,
            )
    try:
        return ExperimentMeta.from_json(document)
    except InvalidRecordError as error:
        raise DamagedMetaError(str(error)) from None


def write_experiment(directory: Path, meta: ExperimentMeta, *, durable: bool) -> None:
    """Write ``experiment.json`` atomically (with its checksum)."""
    write_json(directory / "experiment.json", meta.to_json(), durable=durable)
