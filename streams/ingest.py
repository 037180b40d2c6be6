"""Ingest: consume the event topics, validate, store, dead-letter what is bad.

The at-least-once core the detection worker builds on: records are decoded in batches,
good events go to the store in one columnar insert, bad records go to the dead-letter
topic with headers naming the source topic, partition, offset and the reason, and only
then are the offsets committed. A bad record never stops a partition.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from schemas.errors import EventError
from schemas.events import Event
from streams.kafka_security import kafka_client_config
from streams.records import bare_dead_letter, dead_letter, decode_record, record_refused
from streams.settings import Settings
from streams.sinks.clickhouse import EventsSink
from streams.step import TimeWindow, block_ts_us

log = logging.getLogger("spyglass.ingest")


@dataclass
class BatchResult:
    events: list[tuple[Event, bytes]] = field(default_factory=list)
    dead: list[tuple[str, int, int, EventError]] = field(default_factory=list)  # topic, partition, offset, error
    by_kind: Counter = field(default_factory=Counter)


class Ingestor:
    """One consumer of the three event topics feeding an :class:`EventsSink`."""

    name = "ingest"

    def __init__(self, settings: Settings, sink: EventsSink, *, group_id: str | None = "spyglass-ingest",
                 from_end: bool = False, client_id: str = "spyglass-ingest") -> None:
        from kafka import KafkaConsumer, KafkaProducer, TopicPartition

        self.settings = settings
        self.sink = sink
        self._window = TimeWindow(settings.event_max_future_s, settings.event_max_age_days)
        servers = settings.kafka_bootstrap.split(",")
        self.topics = list(settings.topics().values())
        self.consumer = KafkaConsumer(
            bootstrap_servers=servers, client_id=client_id, group_id=group_id, enable_auto_commit=False,
            auto_offset_reset="earliest", max_poll_records=5000, fetch_max_bytes=32 * 1024 * 1024,
            **kafka_client_config(settings),
        )
        if group_id is None:  # no group: read this run's records only, from the current end
            parts = [TopicPartition(t, p) for t in self.topics
                     for p in sorted(self.consumer.partitions_for_topic(t) or [])]
            self.consumer.assign(parts)
            if from_end:
                for tp, off in self.consumer.end_offsets(parts).items():
                    self.consumer.seek(tp, off)
        else:
            self.consumer.subscribe(self.topics)
        self.group_id = group_id
        self.producer = KafkaProducer(bootstrap_servers=servers, client_id=f"{client_id}-dlq", acks="all",
                                      **kafka_client_config(settings))

    def poll(self, timeout_ms: int = 250, on_event: Callable[[Event], Any] | None = None) -> BatchResult:
        """Consume one batch, store it, dead-letter the bad records, then commit."""
        records = self.consumer.poll(timeout_ms=timeout_ms, max_records=5000)
        out = BatchResult()
        now_s = time.time()
        lo, hi = self._window.bounds(now_s)
        for tp, msgs in records.items():
            for m in msgs:
                ev = decode_record(m.value, self.settings.default_tenant)
                if not isinstance(ev, EventError) and not lo <= block_ts_us(ev) < hi:
                    ev = EventError("$.ts", self._window.reason(block_ts_us(ev), now_s))
                if isinstance(ev, EventError):
                    out.dead.append((tp.topic, tp.partition, m.offset, ev))
                    self._dead_letter(tp.topic, tp.partition, m.offset, m.key, m.value, ev)
                    continue
                out.by_kind[type(ev).__struct_config__.tag] += 1
                out.events.append((ev, m.value))
                if on_event is not None:
                    on_event(ev)
        if out.events:
            self.sink.write(out.events)
            self.sink.flush()
        if out.dead:
            self.producer.flush()
        if records and self.group_id is not None:
            self.consumer.commit()  # only after the store and the dead-letter topic acknowledged
        return out

    def _dead_letter(self, topic: str, partition: int, offset: int, key: bytes | None, value: bytes | None,
                     err: EventError) -> None:
        log.warning("dead letter", extra={"topic": topic, "partition": partition, "offset": offset,
                                          "field": err.field, "reason": err.reason})
        letter = dead_letter(topic, partition, offset, key, value, err, self.name)
        try:
            self.producer.send(self.settings.topic_dead_letter, key=letter.key, value=letter.value,
                               headers=letter.headers)
        except Exception as exc:
            if not record_refused(exc):
                raise
            # a problem of this record: published without its value
            bare = bare_dead_letter(letter, repr(exc))
            self.producer.send(self.settings.topic_dead_letter, key=bare.key, value=bare.value, headers=bare.headers)

    def end_offsets(self) -> dict[Any, int]:
        """The broker's current end offset of every partition of the event topics."""
        from kafka import TopicPartition

        parts = [TopicPartition(t, p) for t in self.topics for p in sorted(self.consumer.partitions_for_topic(t) or [])]
        return self.consumer.end_offsets(parts)

    def close(self) -> None:
        self.consumer.close()
        self.producer.close(timeout=10)
