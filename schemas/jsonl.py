"""Events from JSON Lines (a file, or ``-`` for stdin), decoded in batches.

Every offline driver of the engine (``spyglass replay``, ``spyglass report``, the scenario evaluation) reads
its input here, so a line counts as valid or invalid the same way for all of them. A bad line is data, not an
exception: it is counted, its :class:`~schemas.errors.EventError` (with the line number) kept for the report,
and reading goes on.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field
from typing import BinaryIO

from schemas.errors import EventError, SpyglassError
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


class PathError(SpyglassError):
    """A file named on the command line cannot be opened; the message names it and says why, in one line."""


def _open(path: str, mode: str, doing: str) -> BinaryIO:
    try:
        return open(path, mode)  # noqa: SIM115 - closed by the caller
    except OSError as exc:
        raise PathError(f"cannot {doing} {path}: {exc.strerror or exc}") from None


def open_in(path: str) -> AbstractContextManager[BinaryIO]:
    """The file at ``path`` to read, or stdin for ``-`` (left open when the block ends)."""
    return nullcontext(sys.stdin.buffer) if path == "-" else _open(path, "rb", "read")


def open_out(path: str) -> AbstractContextManager[BinaryIO]:
    """The file at ``path`` to write, or stdout for ``-`` (flushed, left open when the block ends)."""
    return _Stdout() if path == "-" else _open(path, "wb", "write")


class _Stdout(AbstractContextManager):
    def __enter__(self) -> BinaryIO:
        return sys.stdout.buffer

    def __exit__(self, *exc: object) -> None:
        sys.stdout.buffer.flush()
