"""Publishing the contract: JSON Schema files for emitters, and a JSONL checker."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

from schemas.errors import EventError
from schemas.events import CONTRACT_VERSION, DEFAULT_TENANT, KINDS, json_schema
from schemas.jsonl import open_in
from schemas.validate import errors_of

SCHEMA_DIR = Path(__file__).parent / "json"


def schema_path(kind: str, directory: Path | None = None) -> Path:
    return (directory or SCHEMA_DIR) / f"{kind}.v{CONTRACT_VERSION}.schema.json"


def render(kind: str) -> str:
    """The committed text of one kind's schema (stable key order, trailing newline)."""
    return json.dumps(json_schema(kind), indent=2, sort_keys=False) + "\n"


def export(directory: Path | None = None) -> list[Path]:
    """Write every kind's JSON Schema; returns the paths written."""
    out = []
    for kind in KINDS:
        path = schema_path(kind, directory)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(render(kind), encoding="utf-8")
        out.append(path)
    return out


def check_jsonl(path: str, *, default_tenant: str = DEFAULT_TENANT) -> Iterator[tuple[int, list[EventError]]]:
    """Decode each line of a JSONL file (``-``: stdin): yields (line number, every error of the line, ``[]`` if
    valid). Blank lines are skipped."""
    with open_in(path) as f:
        for n, line in enumerate(f, start=1):
            if not line.strip():
                continue
            errors = errors_of(line.rstrip(b"\r\n"), default_tenant=default_tenant)
            for e in errors:
                e.line = n
            yield n, errors
