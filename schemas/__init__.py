"""JSON Schema files (draft 2020-12), the source of truth for every event contract.

Files are package data named ``<contract>.v<N>.json``; they are read through
:mod:`importlib.resources`, so they work from a source tree and from an installed wheel.
"""

from __future__ import annotations

import json
from importlib.resources import files
from importlib.resources.abc import Traversable
from typing import Any

from stream_app.errors import ContractError

_SUFFIX = ".json"


def schema_names() -> list[str]:
    """Names of every shipped schema, e.g. ``["alert.v1", "label.v1", "transaction.v1"]``."""
    return sorted(
        entry.name.removesuffix(_SUFFIX)
        for entry in files(__name__).iterdir()
        if entry.name.endswith(_SUFFIX)
    )


def schema_path(name: str) -> Traversable:
    """The schema file of contract ``name`` (e.g. ``"transaction.v1"``; ``.json`` optional)."""
    stem = name.removesuffix(_SUFFIX)
    path = files(__name__).joinpath(stem + _SUFFIX)
    if not path.is_file():
        raise ContractError(
            "$.schema",
            f"no schema named {name!r}; use one of {', '.join(schema_names())}",
        )
    return path


def load_schema(name: str) -> dict[str, Any]:
    """The parsed JSON Schema of contract ``name`` (a fresh dict on every call)."""
    loaded: dict[str, Any] = json.loads(schema_path(name).read_text(encoding="utf-8"))
    return loaded
