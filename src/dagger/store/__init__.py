"""Stores: where an experiment's states, records and blobs live.

:class:`Store` is the protocol the rest of dagger uses (``base.py``);
:class:`DirectoryStore` keeps an experiment in a folder (``directory.py``) and
:class:`MemoryStore` in memory (``memory.py``). The other modules are the directory store's
parts: ``log.py`` (one append-only log per writing process, group commit), ``frames.py`` (how
an entry is laid out and checked), ``catalog.py`` (what the entries say, merged, in columns),
``table.py`` (the snapshot a plan or a tree reads), ``index.py`` (the restore snapshot on disk),
``legacy.py`` (format-1 stores), ``records.py`` (file names, experiment.json),
``results.py`` (recorded Function results), ``payload.py`` (pickling), ``blobs.py``
(content-addressed buffers), ``files.py`` (atomic writes), ``locks.py``, ``errors.py`` (OS
errors to dagger errors) and ``maintenance.py`` (``verify``, ``gc``, compaction).

Nothing here knows about experiments, recipes or promises: a store keeps records and content.
"""

from __future__ import annotations

from typing import Any

from ..errors import ExperimentDefinitionError
from .base import Store, Survey
from .directory import DirectoryStore
from .memory import MemoryStore
from .results import Results
from .table import ResultSummary, SlimTable

__all__ = [
    "DirectoryStore",
    "MemoryStore",
    "ResultSummary",
    "Results",
    "SlimTable",
    "Store",
    "Survey",
    "open_store",
]


def open_store(spec: dict[str, Any]) -> Store:
    """Open the store a :meth:`Store.worker_spec` describes (in a worker process).

    Raises:
        ExperimentDefinitionError: The spec names a kind of store that cannot be reopened.
    """
    if spec.get("kind") == "directory":
        return DirectoryStore(
            spec["directory"],
            durability=spec["durability"],
            blob_threshold=spec["blob_threshold"],
        )
    raise ExperimentDefinitionError(
        f"A store of kind {spec.get('kind')!r} cannot be opened in another process.",
        value=repr(spec.get("kind")),
    )
