"""Offline replay: the same engine as the worker, over a JSONL file (or stdin), deterministic."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import IO, BinaryIO

from detectors.engine import Engine
from schemas.alerts import Alert, encode_alert
from schemas.errors import EventError
from schemas.jsonl import BATCH, LineStats, event_batches


@dataclass
class ReplayStats(LineStats):
    events: int = 0
    alerts: int = 0
    seconds: float = 0.0

    @property
    def rate(self) -> float:
        return self.events / self.seconds if self.seconds else 0.0


def replay(src: BinaryIO, out: IO[bytes] | None, engine: Engine | None = None, *, size: int = BATCH,
           on_batch: Callable[[int], None] | None = None, on_error: Callable[[EventError], None] | None = None,
           collect: list[Alert] | None = None) -> ReplayStats:
    """Run the engine over every event of ``src``; alerts as JSONL to ``out`` (and/or into ``collect``)."""
    engine = engine or Engine()
    stats = ReplayStats()
    t0 = time.perf_counter()
    for batch in event_batches(src, stats, size, on_error=on_error):
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
