"""Events from JSON Lines (a file, or ``-`` for stdin), decoded in batches.

Every offline driver of the engine (``spyglass replay``, ``spyglass report``, the scenario evaluation) reads
its input here, so a line counts as valid or invalid the same way for all of them. A bad line is data, not an
exception: it is counted, its :class:`~schemas.errors.EventError` (with the line number) kept for the report,
and reading goes on.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import BinaryIO

from schemas.errors import EventError
from schemas.events import DEFAULT_TENANT, Event, decode

BATCH = 20_000
KEPT_ERRORS = 100  # the first invalid lines kept for the report; the rest are only counted


@dataclass
class LineStats:
    """What reading a JSONL source found: lines read, lines that are not valid events, the first errors."""

    lines: int = 0
    invalid: int = 0
    errors: list[EventError] = field(default_factory=list)


def event_batches(f: BinaryIO, stats: LineStats, size: int = BATCH, default_tenant: str = DEFAULT_TENANT,
                  on_error: Callable[[EventError], None] | None = None) -> Iterator[list[Event]]:
    """Decoded events in batches of ``size`` lines; invalid lines are counted, reported and skipped."""
    batch: list[Event] = []
    for n, line in enumerate(f, start=1):
        stats.lines = n
        line = line.rstrip(b"\r\n")
        if not line.strip():
            continue
        ev = decode(line, default_tenant=default_tenant)
        if isinstance(ev, EventError):
            ev.line = n
            stats.invalid += 1
            if len(stats.errors) < KEPT_ERRORS:
                stats.errors.append(ev)
            if on_error:
                on_error(ev)
            continue
        batch.append(ev)
        if len(batch) >= size:
            yield batch
            batch = []
    if batch:
        yield batch


def open_in(path: str) -> BinaryIO:
    """The file at ``path`` to read, or stdin for ``-``."""
    return sys.stdin.buffer if path == "-" else open(path, "rb")  # noqa: SIM115 - closed by the caller


def open_out(path: str) -> BinaryIO:
    """The file at ``path`` to write, or stdout for ``-``."""
    return sys.stdout.buffer if path == "-" else open(path, "wb")  # noqa: SIM115 - closed by the caller
