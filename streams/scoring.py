"""The worker's core, free of Faust: score records per topic partition, publish, store, checkpoint.

Delivery promise (at-least-once from Kafka, exactly-once at the edges):

1. a batch's dead letters and new alerts are published and acknowledged by Kafka;
2. its events (with the score each got) and alerts are inserted into ClickHouse, retried
   until the store takes them (consumption waits meanwhile: no unbounded buffer, no drop);
3. every few seconds each partition's engine state is checkpointed with the offset it
   reflects, and only then are that partition's records acknowledged for commit.

After a crash the next owner of a partition restores its checkpoint, skips the records the
checkpoint already reflects and re-scores the rest. The engine gives the same alerts (same
deterministic ids) whatever the batching, rows and alerts are keyed by id in ReplacingMergeTree
tables, and alerts already in the store are not published again.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from detectors.alerts import Alert, encode_alert
from detectors.engine import Engine
from schemas.errors import EventError
from schemas.events import Event
from schemas.rows import alert_columns, event_columns
from streams import metrics as m
from streams.checkpoints import CheckpointError, CheckpointStore
from streams.records import dead_letter_headers, decode_record
from streams.settings import Settings
from streams.sinks.clickhouse import Store, StoreError, sql_string

log = logging.getLogger("spyglass.worker")

TP = tuple[str, int]
Publish = Callable[[str, bytes | None, bytes, list[tuple[str, bytes]] | None], Awaitable[Awaitable[Any]]]


@dataclass
class Record:
    """One Kafka record as the worker sees it; ``handle`` is what the transport acks."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    timestamp: float | None = None  # producer timestamp, seconds
    handle: Any = None


@dataclass
class Part:
    """One topic partition this worker scores."""

    topic: str
    partition: int
    engine: Engine
    offset: int  # next offset the engine has not seen
    checkpoint_offset: int  # next offset the stored checkpoint has not seen
    checkpoint_at: float = field(default_factory=time.monotonic)
    pending: list[Record] = field(default_factory=list)  # scored and stored, not yet checkpointed
    known_alerts: set[str] = field(default_factory=set)  # already stored by an earlier owner
    highwater: int = -1


@dataclass
class BatchReport:
    events: int = 0
    dead: int = 0
    alerts: int = 0
    skipped: int = 0
    seconds: float = 0.0
    ack: list[Record] = field(default_factory=list)


class Scorer:
    """Owns one engine per assigned topic partition and drives the sinks for each batch."""

    def __init__(self, settings: Settings, store: Store, checkpoints: CheckpointStore, publish: Publish,
                 *, worker: str = "worker", clock: Callable[[], float] = time.monotonic,
                 published_alerts: Callable[[int], set[str]] | None = None) -> None:
        self.settings = settings
        self.store = store
        self.checkpoints = checkpoints
        self.publish = publish
        self.worker = worker
        self.clock = clock
        self.parts: dict[TP, Part] = {}
        self.health = m.Health()
        self.stopping = False
        self._io = ThreadPoolExecutor(max_workers=1, thread_name_prefix="spyglass-store")
        self._lock = asyncio.Lock()
        self._kinds = {t: k for k, t in settings.topics().items()}
        self._published_alerts = published_alerts
        self._scan_cache: tuple[int, float, set[str]] | None = None

    # -- store access (blocking calls on one I/O thread, retried while the store is down) -----
    async def _io_call(self, fn: Callable[[], Any], what: str, where: dict[str, Any] | None = None) -> Any:
        loop = asyncio.get_running_loop()
        delay = 0.2
        while True:
            try:
                out = await loop.run_in_executor(self._io, fn)
            except StoreError as exc:
                if self.stopping:
                    raise
                self.health.store_error = f"{what}: {exc}"
                m.STORE_UP.set(0)
                log.error("store write failed; retrying (consumption paused)",
                          extra={"stage": what, "error": str(exc), "retry_in_s": delay, **(where or {})})
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)
                continue
            if self.health.store_error is not None:
                log.info("store is back", extra={"stage": what})
            self.health.store_error = None
            m.STORE_UP.set(1)
            return out

    # -- partitions ------------------------------------------------------------------------
    async def _part(self, topic: str, partition: int, first_offset: int) -> Part:
        tp = (topic, partition)
        part = self.parts.get(tp)
        if part is not None:
            return part
        where = {"topic": topic, "partition": partition, "offset": first_offset}
        try:
            cp = await self._io_call(lambda: self.checkpoints.load(topic, partition), "checkpoint.load", where)
        except CheckpointError as exc:
            log.error("checkpoint refused; this partition starts cold", extra={**where, "error": str(exc)})
            cp = None
        if cp is None:
            part = Part(topic, partition, Engine(), offset=first_offset, checkpoint_offset=first_offset)
            since = 0
        else:
            part = Part(topic, partition, cp.engine, offset=cp.offset, checkpoint_offset=cp.offset)
            since = int(cp.written_at.timestamp() - 120) * 1000
        # alerts an earlier owner raised from the records about to be re-scored: stored ones, and
        # published ones it crashed before storing. Neither is published or stored again.
        known = await self._io_call(lambda: self.store.query(
            f"SELECT alert_id FROM {self.store.database}.alerts WHERE source_topic = {sql_string(topic)} "  # noqa: S608
            f"AND source_partition = {int(partition)} AND source_offset >= {int(part.offset)}"),
            "alerts.known", where)
        part.known_alerts = {r[0] for r in known} | await self._published_since(since, where)
        log.info("partition assigned, " + ("no checkpoint: starting cold" if cp is None else "state restored"),
                 extra={**where, "checkpoint_offset": part.offset, "entities": part.engine.entities(),
                        "alerts_already_out": len(part.known_alerts)})
        self.parts[tp] = part
        return part

    async def _published_since(self, since_ms: int, where: dict[str, Any]) -> set[str]:
        if self._published_alerts is None:
            return set()
        cached = self._scan_cache
        if cached is not None and cached[0] <= since_ms and self.clock() - cached[1] < 10.0:
            return cached[2]  # partitions assigned together share one scan
        ids = await self._io_call(lambda: self._published_alerts(since_ms), "alerts.scan", where)
        self._scan_cache = (since_ms, self.clock(), ids)
        return ids

    async def revoke(self, tps: Sequence[TP]) -> None:
        """Partitions leave this worker: checkpoint what they scored, then forget them."""
        async with self._lock:
            for tp in tps:
                part = self.parts.get(tp)
                if part is None:
                    continue
                if part.pending:
                    try:
                        await self._checkpoint(part)
                    except StoreError:
                        log.warning("checkpoint on revoke failed; the next owner re-scores from the last one",
                                    extra={"topic": tp[0], "partition": tp[1]})
                del self.parts[tp]

    async def checkpoint_all(self) -> list[Record]:
        """Checkpoint every partition with pending records (clean shutdown); returns what may be acked."""
        return await self.checkpoint_due(min_age_s=0.0)

    async def checkpoint_due(self, min_age_s: float | None = None) -> list[Record]:
        """Checkpoint partitions whose pending records waited ``min_age_s`` (default: the checkpoint interval)."""
        age = self.settings.worker_checkpoint_s if min_age_s is None else min_age_s
        async with self._lock:
            out: list[Record] = []
            now = self.clock()
            for part in list(self.parts.values()):
                if part.pending and now - part.checkpoint_at >= age:
                    out += await self._checkpoint(part)
            return out

    async def _checkpoint(self, part: Part) -> list[Record]:
        offset, engine = part.offset, part.engine
        where = {"topic": part.topic, "partition": part.partition, "offset": offset}
        size = await self._io_call(lambda: self.checkpoints.save(part.topic, part.partition, offset, engine),
                                   "checkpoint.save", where)
        part.checkpoint_offset = offset
        part.checkpoint_at = self.clock()
        done, part.pending = part.pending, []
        log.debug("checkpoint", extra={**where, "bytes": size, "entities": engine.entities()})
        return done

    # -- one batch -------------------------------------------------------------------------
    async def handle(self, records: Sequence[Record]) -> BatchReport:
        """Score, publish, store; returns the records that may now be acked (checkpointed)."""
        async with self._lock:
            return await self._handle(records)

    async def _handle(self, records: Sequence[Record]) -> BatchReport:
        t0 = time.perf_counter()
        rep = BatchReport()
        by_tp: dict[TP, list[Record]] = {}
        for r in records:
            by_tp.setdefault((r.topic, r.partition), []).append(r)
        ev_rows: list[tuple[Event, bytes, float]] = []
        alerts_out: list[tuple[Alert, Record]] = []
        dead: list[tuple[Record, EventError]] = []
        touched: list[tuple[Part, int, int, int]] = []  # part, events, dead, alerts
        for (topic, partition), recs in by_tp.items():
            recs.sort(key=lambda r: r.offset)
            part = await self._part(topic, partition, recs[0].offset)
            fresh = [r for r in recs if r.offset >= part.offset]
            rep.skipped += len(recs) - len(fresh)
            rep.ack += [r for r in recs if r.offset < part.checkpoint_offset]
            if not fresh:
                continue
            kind = self._kinds.get(topic)
            events: list[Event] = []
            by_id: dict[str, Record] = {}
            raws: list[bytes] = []
            n_dead = 0
            for r in fresh:
                ev = decode_record(r.value, self.settings.default_tenant, kind)
                if isinstance(ev, EventError):
                    dead.append((r, ev))
                    n_dead += 1
                    continue
                events.append(ev)
                raws.append(r.value or b"")
                by_id.setdefault(ev.event_id, r)
            evicted = dict(part.engine.evicted)
            alerts = part.engine.process(events) if events else []
            m.count_evictions(evicted, part.engine.evicted)
            scores = part.engine.scores
            ev_rows += [(ev, raw, scores.get(ev.event_id, 0.0)) for ev, raw in zip(events, raws, strict=True)]
            for a in alerts:
                src = by_id.get(a.evidence.event_ids[0], fresh[0])
                alerts_out.append((a, src))
            part.offset = fresh[-1].offset + 1
            part.pending += fresh
            touched.append((part, len(events), n_dead, len(alerts)))
            if kind:
                m.EVENTS_IN.labels(kind).inc(len(events))
        new_alerts = [(a, r) for a, r in alerts_out
                      if a.alert_id not in self.parts[(r.topic, r.partition)].known_alerts]
        # 1. Kafka: dead letters and new alerts, acknowledged before anything is stored
        futs = [await self.publish(self.settings.topic_dead_letter, r.key, r.value or b"",
                                   dead_letter_headers(r.topic, r.partition, r.offset, err, "worker"))
                for r, err in dead]
        futs += [await self.publish(self.settings.topic_alerts, f"{a.tenant}/{a.entity}".encode(), encode_alert(a),
                                    None) for a, _ in new_alerts]
        if futs:
            await asyncio.gather(*futs)
        for r, err in dead:
            log.warning("dead letter", extra={"topic": r.topic, "partition": r.partition, "offset": r.offset,
                                              "field": err.field, "reason": err.reason})
            m.DEAD_LETTERS.labels(r.topic).inc()
        # 2. ClickHouse: events with their scores, then the alerts
        where = {"topic": records[0].topic, "partition": records[0].partition, "offset": records[0].offset}
        if ev_rows:
            cols = event_columns(ev_rows, datetime.now(UTC))
            await self._io_call(lambda: self.store.insert("events", cols), "events.insert", where)
        if new_alerts:
            acols = alert_columns([a for a, _ in new_alerts], datetime.now(UTC).replace(microsecond=0),
                                  [(r.topic, r.partition, r.offset) for _, r in new_alerts])
            await self._io_call(lambda: self.store.insert("alerts", acols), "alerts.insert", where)
        for a, _ in new_alerts:
            m.ALERTS.labels(a.detector, a.severity).inc()
        # 3. checkpoints that are due, then acks
        now = self.clock()
        for part, *_ in touched:
            if now - part.checkpoint_at >= self.settings.worker_checkpoint_s:
                rep.ack += await self._checkpoint(part)
        rep.events = len(ev_rows)
        rep.dead = len(dead)
        rep.alerts = len(new_alerts)
        rep.seconds = time.perf_counter() - t0
        self.health.last_batch = time.monotonic()
        m.BATCH_SECONDS.observe(rep.seconds)
        await self._health(touched, rep.seconds)
        return rep

    async def _health(self, touched: list[tuple[Part, int, int, int]], seconds: float) -> None:
        if not touched:
            return
        now = self.clock()
        ts = datetime.now(UTC).replace(microsecond=0)
        cols: dict[str, list[Any]] = {k: [] for k in ("ts", "worker", "topic", "partition", "events", "dead_letters",
                                                      "alerts", "lag", "batch_latency_ms", "checkpoint_age_s")}
        for part, n_ev, n_dead, n_alerts in touched:
            lag = max(part.highwater - part.offset, 0) if part.highwater >= 0 else 0
            age = now - part.checkpoint_at
            for k, v in (("ts", ts), ("worker", self.worker), ("topic", part.topic), ("partition", part.partition),
                         ("events", n_ev), ("dead_letters", n_dead), ("alerts", n_alerts), ("lag", lag),
                         ("batch_latency_ms", round(seconds * 1000, 3)), ("checkpoint_age_s", round(age, 3))):
                cols[k].append(v)
            m.LAG.labels(part.topic, str(part.partition)).set(lag)
            m.CHECKPOINT_AGE.labels(part.topic, str(part.partition)).set(age)
        m.ENTITIES.set(sum(p.engine.entities() for p in self.parts.values()))
        m.STATE_BYTES.set(sum(p.engine.memory_bytes() for p in self.parts.values()))
        try:  # health rows are best effort: never hold the stream for them
            await asyncio.get_running_loop().run_in_executor(self._io, lambda: self.store.insert("pipeline_health",
                                                                                                   cols))
        except StoreError as exc:
            log.warning("pipeline_health insert failed", extra={"error": str(exc)})

    def lag(self) -> int:
        return sum(max(p.highwater - p.offset, 0) for p in self.parts.values() if p.highwater >= 0)

    def close(self) -> None:
        self._io.shutdown(wait=True)
