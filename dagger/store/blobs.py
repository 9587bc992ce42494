"""Payload serialization: the state pickled with dill.

Large tensor and array buffers are routed to content-addressed blobs in a later step; this
module is the one place that turns a state into payload bytes and back.
"""

from __future__ import annotations

import io
from typing import Any

import dill

__all__ = ["dumps_payload", "loads_payload"]


def dumps_payload(obj: Any) -> bytes:
    """Pickle ``obj`` (a state or a recorded result) with dill."""
    return dill.dumps(obj, protocol=5)


def loads_payload(data: bytes | memoryview) -> Any:
    return dill.load(io.BytesIO(data))
