"""Offline replay: the same engine as the worker, over a JSONL file (or stdin), deterministic."""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import IO, BinaryIO

from detectors.engine import Engine
from schemas.alerts import Alert, encode_alert
from schemas.errors import EventError
from schemas.events import DEFAULT_TENANT, Event, decode

BATCH = 20_000


@dataclass
class ReplayStats:
    lines: int = 0
    events: int = 0
    invalid: int = 0
    alerts: int = 0
    seconds: float = 0.0
    errors: list[EventError] = field(default_factory=list)  # the first ones, for the report

    @property
    def rate(self) -> float:
        return self.events / self.seconds if self.seconds else 0.0


def batches(f: BinaryIO, stats: ReplayStats, size: int = BATCH, default_tenant: str = DEFAULT_TENANT,
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
            if len(stats.errors) < 100:
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


def replay(src: BinaryIO, out: IO[bytes] | None, engine: Engine | None = None, *, size: int = BATCH,
           on_batch: Callable[[int], None] | None = None, on_error: Callable[[EventError], None] | None = None,
           collect: list[Alert] | None = None) -> ReplayStats:
    """Run the engine over every event of ``src``; alerts as JSONL to ``out`` (and/or into ``collect``)."""
    engine = engine or Engine()
    stats = ReplayStats()
    t0 = time.perf_counter()
    for batch in batches(src, stats, size, on_error=on_error):
        alerts = engine.process(batch)
        stats.events += len(batch)
        stats.alerts += len(alerts)
        if out is not None and alerts:
            out.write(b"".join(encode_alert(a) + b"\n" for a in alerts))
        if collect is not None:
            collect.extend(alerts)
        if on_batch:
            on_batch(len(batch))
    stats.seconds = time.perf_counter() - t0
    return stats


def open_in(path: str) -> BinaryIO:
    return sys.stdin.buffer if path == "-" else open(path, "rb")  # noqa: SIM115 - closed by the caller


def open_out(path: str) -> BinaryIO:
    return sys.stdout.buffer if path == "-" else open(path, "wb")  # noqa: SIM115 - closed by the caller
