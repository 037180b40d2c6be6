"""Where a simulated run goes: a JSONL file (or stdout), or the Kafka topics at a target rate."""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Callable, Mapping
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import msgspec

from schemas.errors import SpyglassError
from schemas.events import ENTITY_FIELD
from schemas.jsonl import open_out
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
    with open_out(str(path)) as f:
        f.write(msgspec.json.Encoder().encode_lines(labels))
    return len(labels)


def write_jsonl(sim: Simulation, out: str, on_chunk: Callable[[int], None] | None = None) -> RunStats:
    """Write the run as JSONL, a day at a time; ``out`` is a path or ``-`` for stdout.

    (Generating days in parallel processes was measured slower on 2 cores: shipping the
    encoded bytes back costs more than the generation it spreads.)
    """
    stats = RunStats()
    t0 = time.perf_counter()
    f = _open(out)
    with nullcontext(f) if out == "-" else f:
        for chunk in sim.chunks():
            data = encode_lines(chunk.rows)
            f.write(data)
            stats.events += len(chunk.rows)
            stats.bytes += len(data)
            if on_chunk:
                on_chunk(len(chunk.rows))
    stats.seconds = time.perf_counter() - t0
    return stats


def produce_kafka(
    sim: Simulation,
    bootstrap: str,
    topics: dict[str, str],
    *,
    rate: float = 0.0,
    on_sent: Callable[[str, int], None] | None = None,
    client_id: str = "spyglass-simulator",
    client_config: Mapping[str, Any] | None = None,
    stop: threading.Event | None = None,
) -> RunStats:
    """Produce the run into the per-kind topics, paced at ``rate`` events/s (0 = as fast as possible).

    The message key is the entity (key, principal, agent) so per-entity order holds;
    the producer waits for every acknowledgement (acks=all) before returning, and raises
    :class:`~schemas.errors.SpyglassError` naming the broker's reason if any record was refused (e.g. a
    principal without WRITE on a topic). ``client_config``: how to connect
    (:func:`streams.kafka_security.kafka_client_config`; PLAINTEXT when None). ``stop``: once set, no further
    record is sent; what was sent is still flushed and the producer closed (a caller ending early).
    """
    from kafka import KafkaProducer  # imported here: file output needs no Kafka client

    producer = KafkaProducer(
        bootstrap_servers=bootstrap.split(","), client_id=client_id, acks="all", linger_ms=20,
        batch_size=256 * 1024, max_request_size=4 * 1024 * 1024, retries=10, **(client_config or {}),
    )
    enc = msgspec.json.Encoder()
    stats = RunStats()
    refused: list[BaseException] = []  # the producer reports failed sends only to their futures
    pause = stop.wait if stop is not None else time.sleep
    t0 = time.perf_counter()
    try:
        for chunk in sim.chunks():
            if stop is not None and stop.is_set():
                break
            for row in chunk.rows:
                if stop is not None and stop.is_set():
                    break
                kind = row["kind"]
                value = enc.encode(row)
                sent = producer.send(topics[kind], key=row[PARTITION_KEY[kind]].encode(), value=value)
                sent.add_errback(refused.append)
                stats.events += 1
                stats.bytes += len(value)
                stats.by_kind[kind] = stats.by_kind.get(kind, 0) + 1
                if on_sent:
                    on_sent(kind, 1)
                if rate > 0:
                    ahead = stats.events / rate - (time.perf_counter() - t0)
                    if ahead > 0.005:
                        pause(ahead)
        producer.flush()
    finally:
        producer.close(timeout=30)
    if refused:
        raise SpyglassError(f"Kafka refused {len(refused):,} of {stats.events:,} events "
                            f"(first: {type(refused[0]).__name__}: {refused[0]})")
    stats.seconds = time.perf_counter() - t0
    return stats
