"""Where a simulated run goes: a JSONL file (or stdout), or the Kafka topics at a target rate."""

from __future__ import annotations

import multiprocessing as mp
import os
import sys
import time
from collections.abc import Callable, Iterable
from concurrent.futures import ProcessPoolExecutor
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

import msgspec

from schemas.events import ENTITY_FIELD
from streams.simulator.run import Simulation, encode_lines

# The partition key of each kind is its entity (per-entity state and order live in one partition).
PARTITION_KEY = ENTITY_FIELD


@dataclass
class RunStats:
    events: int = 0
    bytes: int = 0
    seconds: float = 0.0
    by_kind: dict[str, int] = field(default_factory=dict)

    @property
    def rate(self) -> float:
        return self.events / self.seconds if self.seconds else 0.0


def _open(path: str) -> IO[bytes]:
    return sys.stdout.buffer if path == "-" else open(path, "wb")  # noqa: SIM115 - closed by the caller


def write_labels(sim: Simulation, path: str | Path) -> int:
    labels = sim.labels()
    with open(path, "wb") as f:
        f.write(msgspec.json.Encoder().encode_lines(labels))
    return len(labels)


_SIM: Simulation | None = None  # the run a forked worker encodes days of


def _encode_day(day: int) -> tuple[int, bytes]:
    assert _SIM is not None
    chunk = _SIM.day(day)
    return len(chunk.rows), encode_lines(chunk.rows)


def write_jsonl(sim: Simulation, out: str, on_chunk: Callable[[int], None] | None = None,
                workers: int | None = None) -> RunStats:
    """Write the run as JSONL; ``out`` is a path or ``-`` for stdout.

    Days are independent (each has its own seeded RNG), so ``workers`` processes generate and
    encode them in parallel while this one writes them in order: same bytes, any worker count.
    """
    global _SIM
    workers = min(workers or os.cpu_count() or 1, sim.days)
    stats = RunStats()
    t0 = time.perf_counter()
    f = _open(out)
    _SIM = sim
    try:
        with nullcontext(f) if out == "-" else f:
            if workers > 1 and "fork" in mp.get_all_start_methods():
                with ProcessPoolExecutor(workers, mp_context=mp.get_context("fork")) as pool:
                    encoded = pool.map(_encode_day, range(sim.days))
                    _write_all(f, encoded, stats, on_chunk)
            else:
                _write_all(f, map(_encode_day, range(sim.days)), stats, on_chunk)
    finally:
        _SIM = None
    stats.seconds = time.perf_counter() - t0
    return stats


def _write_all(f: IO[bytes], encoded: Iterable[tuple[int, bytes]], stats: RunStats,
               on_chunk: Callable[[int], None] | None) -> None:
    for n, data in encoded:
        f.write(data)
        stats.events += n
        stats.bytes += len(data)
        if on_chunk:
            on_chunk(n)


def produce_kafka(
    sim: Simulation,
    bootstrap: str,
    topics: dict[str, str],
    *,
    rate: float = 0.0,
    on_sent: Callable[[str, int], None] | None = None,
    client_id: str = "spyglass-simulator",
) -> RunStats:
    """Produce the run into the per-kind topics, paced at ``rate`` events/s (0 = as fast as possible).

    The message key is the entity (key, principal, agent) so per-entity order holds;
    the producer waits for every acknowledgement (acks=all) before returning.
    """
    from kafka import KafkaProducer  # imported here: file output needs no Kafka client

    producer = KafkaProducer(
        bootstrap_servers=bootstrap.split(","), client_id=client_id, acks="all", linger_ms=20,
        batch_size=256 * 1024, max_request_size=4 * 1024 * 1024, retries=10,
    )
    enc = msgspec.json.Encoder()
    stats = RunStats()
    t0 = time.perf_counter()
    try:
        for chunk in sim.chunks():
            for row in chunk.rows:
                kind = row["kind"]
                value = enc.encode(row)
                producer.send(topics[kind], key=row[PARTITION_KEY[kind]].encode(), value=value)
                stats.events += 1
                stats.bytes += len(value)
                stats.by_kind[kind] = stats.by_kind.get(kind, 0) + 1
                if on_sent:
                    on_sent(kind, 1)
                if rate > 0:
                    ahead = stats.events / rate - (time.perf_counter() - t0)
                    if ahead > 0.005:
                        time.sleep(ahead)
        producer.flush()
    finally:
        producer.close(timeout=30)
    stats.seconds = time.perf_counter() - t0
    return stats
