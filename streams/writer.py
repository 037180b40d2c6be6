"""The writer stage: publishes and stores what scoring produced, batch after batch, strictly in order.

Scoring queues a :class:`Writes` per batch; one writer task carries them out while the next batch
is scored. The queue holds ``worker_write_ahead`` batches, so a slow or absent store stops scoring
(and so fetching) instead of filling memory. For each batch, in this order:

1. its dead letters, new alerts and their risk evidence are published, and acknowledged by Kafka;
2. its alerts are inserted into ClickHouse at once (what on-call waits for), retried while the
   store's errors are transient (consumption waits meanwhile: no unbounded buffer, no drop); rows
   it refuses for their data are isolated and dead-lettered (:mod:`streams.quarantine`);
3. its events (with the score each got) are held until ``worker_insert_min_rows`` of them wait,
   ``worker_insert_linger_s`` has passed, or a checkpoint or flush needs them, and go in one
   insert (an insert costs the server about the same whatever its size).

Those inserts run in the *events lane*: one at a time, in offset order, on a connection of their
own when the worker has one, so the next batches' alerts are stored while a big events insert runs
instead of waiting behind it. The checkpoints are queued in the same lane, behind the events they
cover and after their alerts were stored, so a checkpoint is stored (and its records acked) only
once everything before it is. A write that fails for good fails the worker (:meth:`StoreIO.fail`):
nothing after it is written, checkpointed or acked. A dead letter Kafka refuses for what it is (its
size) is a problem of that record, never of the worker (:meth:`Writer._publish_dead_letters`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import partial
from typing import Any

from detectors.correlation import RiskEvidence, encode_evidence
from schemas.alerts import Alert, encode_alert
from schemas.block import EventBlock
from schemas.errors import EventError
from schemas.rows import ColumnRangeError, alert_columns, block_columns, block_packed
from streams import metrics as m
from streams.dedup import stored_alert_ids_among, stored_event_keys, without
from streams.fencing import Fenced
from streams.partitions import Part, Partitions, Snapshot
from streams.quarantine import Isolating, halves_of_blocks, halves_of_list, rows_of_blocks
from streams.records import TP, DeadLetter, Record, bare_dead_letter, dead_letter, record_refused
from streams.settings import Settings
from streams.sinks.base import Store, StoreDataError, StoreError
from streams.storeio import StoreIO

log = logging.getLogger("spyglass.worker")

Publish = Callable[[str, bytes | None, bytes, list[tuple[str, bytes]] | None], Awaitable[Awaitable[Any]]]


@dataclass
class _Quarantined:
    """A row the store refused, as a record to dead-letter: its source offset (-1: an event's is not kept after
    scoring, its source topic and event id name it), key and value."""

    offset: int
    key: bytes | None
    value: bytes


@dataclass
class Writes:
    """What one scored batch leaves to the writer, in the order the writer carries it out."""

    dead: list[tuple[TP, Record, EventError]] = field(default_factory=list)  # its partition, the record, why
    alerts: list[tuple[Alert, TP, int]] = field(default_factory=list)  # to store (not stored before), its source
    publish: list[Alert] = field(default_factory=list)  # to publish (not on the alerts topic before)
    dispositions: dict[str, tuple[str, str]] = field(default_factory=dict)  # alert id -> (mode, suppressing rule)
    #                                                                         of alerts stored but not published
    evidence: list[RiskEvidence] = field(default_factory=list)  # to the risk-evidence topic, with the alerts
    events: list[EventBlock] = field(default_factory=list)  # to store: the events, their raw JSON and scores
    event_tps: list[TP] = field(default_factory=list)  # the partition of each of ``events`` (fencing)
    touched: list[tuple[Part, int, int, int]] = field(default_factory=list)  # part, events, dead, alerts
    snapshots: list[Snapshot] = field(default_factory=list)
    where: dict[str, Any] = field(default_factory=dict)
    scored_s: float = 0.0
    flush: bool = False  # store the events held back for a bigger insert now (see Writer._write)

    @classmethod
    def merge(cls, jobs: list[Writes]) -> Writes:
        """Several queued batches as one: an insert costs ClickHouse about the same whatever its size, so a
        writer that fell behind catches up in one."""
        if len(jobs) == 1:
            return jobs[0]
        out = cls(where=jobs[0].where)
        for j in jobs:  # in queue order: each checkpoint still follows the writes it covers
            out.dead += j.dead
            out.alerts += j.alerts
            out.publish += j.publish
            out.dispositions.update(j.dispositions)
            out.evidence += j.evidence
            out.events += j.events
            out.event_tps += j.event_tps
            out.touched += j.touched
            out.snapshots += j.snapshots
            out.scored_s = max(out.scored_s, j.scored_s)
            out.flush |= j.flush
        return out


class Writer:
    """The writer task, its queue and the events lane."""

    def __init__(self, settings: Settings, store: Store, io: StoreIO, partitions: Partitions, publish: Publish, *,
                 worker: str = "worker", clock: Callable[[], float] = time.monotonic,
                 events_store: Store | None = None) -> None:
        self.settings = settings
        self.store = store
        self.io = io
        self.partitions = partitions
        self.publish = publish
        self.worker = worker
        self.clock = clock
        # the events inserts on a connection (and I/O thread, see StoreIO) of their own when given one: an alert
        # never waits behind them. Without one (the embedded store: one session per process) they share it.
        self.events_store = events_store if events_store is not None else store
        self._evidence_topic = settings.topic_risk_evidence
        self._queue: asyncio.Queue[Writes] | None = None
        self._writer: asyncio.Task | None = None
        self._lane: asyncio.Queue[tuple[Callable[[], Awaitable[Any]], dict[str, Any]]] | None = None
        self._lane_task: asyncio.Task | None = None
        self._held = Writes()  # events scored and not stored yet, held for one bigger insert
        self._held_since = 0.0
        self._health_rows: dict[str, list[Any]] = {}
        self._health_at = 0.0
        self.owners = partitions.owners  # the partitions' owner epochs (streams.fencing), None: not fenced

    async def enqueue(self, w: Writes) -> None:
        """Queue a batch's writes; waits while the writer is ``worker_write_ahead`` batches behind."""
        self.io.check()
        if self._queue is None:
            self._queue = asyncio.Queue(maxsize=self.settings.worker_write_ahead)
            self._writer = asyncio.get_running_loop().create_task(self._write_loop(), name="spyglass-writer")
        t0 = time.perf_counter()
        await self._queue.put(w)  # waits while the writer is behind: backpressure (scoring and fetching wait)
        m.STAGE_SECONDS.labels("backpressure").inc(time.perf_counter() - t0)

    async def flush(self) -> None:
        """Wait until every queued batch is published, stored (held events too) and its checkpoints saved
        (the events lane drained: see :meth:`_write`)."""
        if self._queue is not None:
            await self._queue.put(Writes(flush=True))
            await self._queue.join()
        self.io.check()

    async def _write_loop(self) -> None:
        assert self._queue is not None
        while True:
            if self._held.events and self.io.failed is None:  # held events wait for more, up to the linger time
                wait = self._held_since + self.settings.worker_insert_linger_s - time.monotonic()
                try:
                    jobs = [await asyncio.wait_for(self._queue.get(), timeout=max(wait, 0.0))]
                except TimeoutError:  # nothing came: store them (a write of nothing but the flush)
                    jobs = []
            else:
                jobs = [await self._queue.get()]
            while not self._queue.empty():  # every batch already waiting goes out in the same inserts
                jobs.append(self._queue.get_nowait())
            w = Writes.merge(jobs) if jobs else Writes(where=self._held.where)  # _write sees they lingered
            try:
                await self._unless_failed(partial(self._write, w), w.where)
            finally:
                for _ in jobs:
                    self._queue.task_done()

    async def _unless_failed(self, step: Callable[[], Awaitable[Any]], where: dict[str, Any]) -> None:
        """One step of the writer or the events lane, skipped once either failed; a step that fails fails the
        worker (nothing after it is written, checkpointed or acked)."""
        try:
            if self.io.failed is None:
                await step()
        except BaseException as exc:
            self.io.fail(exc, where)
            if isinstance(exc, asyncio.CancelledError):
                raise

    def _fenced(self, tp: TP) -> bool:
        return self.owners is not None and self.owners.is_fenced(tp)

    async def _owned(self, w: Writes) -> Writes:
        """``w`` without what belongs to partitions another worker claimed since this one did (checked on the
        writer's connection, once the last check's lease ran out: see :mod:`streams.fencing`)."""
        if self.owners is None:
            return w
        source = {a.alert_id: tp for a, tp, _ in w.alerts}
        tps = {tp for tp, _, _ in w.dead} | set(source.values()) | set(w.event_tps) | {
            (s.part.topic, s.part.partition) for s in w.snapshots}
        owners = self.owners
        if not owners.trusted():  # else the store would not be asked: no hop to the I/O thread
            with contextlib.suppress(Fenced):  # the fenced ones are marked: filtered out below
                await self.io.call(lambda: owners.check(tps, self.store), "fence.check", w.where)
        if not any(map(self._fenced, tps)):
            return w
        keep = Writes(where=w.where, scored_s=w.scored_s, flush=w.flush)
        keep.dead = [d for d in w.dead if not self._fenced(d[0])]
        keep.alerts = [a for a in w.alerts if not self._fenced(a[1])]
        keep.publish = [a for a in w.publish if not self._fenced(source.get(a.alert_id, ("", -1)))]
        keep.evidence = [e for e in w.evidence if not self._fenced(source.get(e.alert_id, ("", -1)))]
        pairs = [(b, tp) for b, tp in zip(w.events, w.event_tps, strict=False) if not self._fenced(tp)]
        keep.events, keep.event_tps = [b for b, _ in pairs], [tp for _, tp in pairs]
        keep.touched = [t for t in w.touched if not self._fenced((t[0].topic, t[0].partition))]
        keep.snapshots = [s for s in w.snapshots if not self._fenced((s.part.topic, s.part.partition))]
        return keep

    def _headers(self, tp: TP | None, principal: str | None = None) -> list[tuple[str, bytes]] | None:
        """An alert's record headers: the owner epoch it was published under (its partition's) and the
        principal behind it (for routing by ``spyglass notify``)."""
        headers = [("principal", principal.encode())] if principal else []
        if self.owners is not None and tp is not None:
            headers.append(("spyglass.owner.epoch", str(self.owners.epoch(tp)).encode()))
        return headers or None

    async def _write(self, w: Writes) -> None:
        t0 = time.perf_counter()
        w = await self._owned(w)
        source = {a.alert_id: tp for a, tp, _ in w.alerts}
        # 1. Kafka: dead letters and new alerts, acknowledged before anything is stored
        await self._publish_dead_letters(w.dead)
        whose = {e.alert_id: e.principal for e in w.evidence}  # the principal header: routing (spyglass notify)
        futs = [await self.publish(self.settings.topic_alerts, f"{a.tenant}/{a.entity}".encode(), encode_alert(a),
                                    self._headers(source.get(a.alert_id), whose.get(a.alert_id))) for a in w.publish]
        futs += [await self.publish(self._evidence_topic, f"{e.tenant}/{e.principal}".encode(), encode_evidence(e),
                                    None) for e in w.evidence]
        if futs:
            await asyncio.gather(*futs)
        t1 = time.perf_counter()
        m.STAGE_SECONDS.labels("publish").inc(t1 - t0)
        for (topic, partition), r, err in w.dead:
            log.warning("dead letter", extra={"topic": topic, "partition": partition, "offset": r.offset,
                                              "field": err.field, "reason": err.reason})
            m.DEAD_LETTERS.labels(topic).inc()
        # 2. ClickHouse: the alerts at once (what on-call waits for), on this writer's connection
        self.io.check()  # the events lane failed meanwhile
        created = datetime.now(UTC).replace(microsecond=0)
        while w.alerts:  # again without the partitions found fenced meanwhile, if any were

            def insert_alerts(piece: list[tuple[Alert, TP, int]]) -> None:
                self._check_owned({tp for _, tp, _ in piece}, self.store)  # right before the write
                self.store.insert("alerts", alert_columns(
                    [a for a, _, _ in piece], created, [(topic, partition, offset) for _, (topic, partition), offset
                                                        in piece], w.dispositions))

            alerts = Isolating(w.alerts, insert_alerts, len, halves_of_list,
                               before_retry=self._alerts_not_stored)  # a failed try may have landed
            try:
                await self.io.call(alerts.run, "alerts.insert", w.where)
            except Fenced:
                w.alerts = [a for a in w.alerts if not self._fenced(a[1])]
                continue
            m.STORE_INSERTS.labels("alerts").inc(alerts.pieces)
            if alerts.refused:
                await self._quarantine("alerts", [
                    ((topic, partition), _Quarantined(offset, f"{a.tenant}/{a.entity}".encode(), encode_alert(a)),
                     EventError("$", f"alert {a.alert_id}: the store refused it: {exc}"))
                    for [(a, (topic, partition), offset)], exc in alerts.refused])
            break
        for a in w.publish:
            m.ALERTS.labels(a.detector, a.severity).inc()
        t2 = time.perf_counter()
        m.STAGE_SECONDS.labels("store").inc(t2 - t1)
        # 3. the events lane (one at a time, in offset order, on its own connection when there is one): the
        # events wait for more (an insert costs the server about the same whatever its size), up to
        # worker_insert_min_rows or worker_insert_linger_s; a checkpoint or a flush sends them first. The
        # checkpoints taken after this batch was scored follow them (its alerts are stored by now), and their
        # records are acked once they are stored.
        if w.events:
            if not self._held.events:
                self._held_since = time.monotonic()
                self._held.where = w.where
            self._held.events += w.events
            self._held.event_tps += w.event_tps
        s = self.settings
        if self._held.events and (w.snapshots or w.flush or sum(map(len, self._held.events)) >= s.worker_insert_min_rows
                                  or time.monotonic() - self._held_since >= s.worker_insert_linger_s):
            held, self._held = self._held, Writes()
            await self._to_lane(partial(self._store_events, held), held.where)
        if w.snapshots:
            await self._to_lane(partial(self.partitions.save, w.snapshots), w.where)
        if w.flush and self._lane is not None:
            await self._lane.join()
            self.io.check()
        m.STAGE_SECONDS.labels("checkpoint").inc(time.perf_counter() - t2)  # waits for the lane included
        if w.touched and self.io.failed is None:
            seconds = w.scored_s + time.perf_counter() - t0
            m.BATCH_SECONDS.observe(seconds)
            self.io.health.last_batch = time.monotonic()
            await self._health(w.touched, seconds)

    async def _publish_dead_letters(self, dead: list[tuple[TP, Record, EventError]], stage: str = "worker") -> None:
        """Publish dead letters (bounded: :func:`streams.records.dead_letter`) and wait for the broker's acks.

        A dead letter the producer or the broker refuses for what it is (too large, say) is a problem of that
        record, never of the worker: it is published again without its value, and if even that is refused it
        is logged and counted (``spyglass_dead_letters_unpublished_total``) and the stream goes on. Any other
        error (the broker away) fails the writer as before: the records are re-scored by the next owner."""
        if not dead:
            return
        topic_dl = self.settings.topic_dead_letter
        letters = [dead_letter(topic, partition, r.offset, r.key, r.value, err, stage)
                   for (topic, partition), r, err in dead]

        async def send(letter: DeadLetter) -> Any:
            return await self.publish(topic_dl, letter.key, letter.value, letter.headers)

        refused: list[tuple[int, BaseException]] = []
        futs: list[tuple[int, Awaitable[Any]]] = []
        for i, letter in enumerate(letters):
            try:
                futs.append((i, await send(letter)))
            except Exception as exc:
                if not record_refused(exc):
                    raise
                refused.append((i, exc))
        for (i, _), res in zip(futs, await asyncio.gather(*(f for _, f in futs), return_exceptions=True),
                               strict=True):
            if isinstance(res, BaseException):
                if not record_refused(res):
                    raise res
                refused.append((i, res))
        for i, exc in sorted(refused, key=lambda x: x[0]):
            (topic, partition), r, err = dead[i]
            where = {"topic": topic, "partition": partition, "offset": r.offset, "error": repr(exc)}
            try:
                await (await send(bare_dead_letter(letters[i], repr(exc))))
                log.error("dead letter refused by Kafka; published without its value", extra=where)
            except Exception as again:
                if not record_refused(again):
                    raise
                log.error("dead letter refused by Kafka, even without its value; not published", extra=where)
                m.DEAD_LETTERS_UNPUBLISHED.labels(topic).inc()

    async def _to_lane(self, op: Callable[[], Awaitable[Any]], where: dict[str, Any]) -> None:
        """Queue ``op`` in the events lane, behind the inserts and checkpoints already there; waits while
        the lane is one op behind (backpressure, as the writer's own queue)."""
        if self._lane is None:
            self._lane = asyncio.Queue(maxsize=1)
            self._lane_task = asyncio.get_running_loop().create_task(self._lane_loop(), name="spyglass-events-lane")
        await self._lane.put((op, where))

    async def _lane_loop(self) -> None:
        assert self._lane is not None
        while True:
            op, where = await self._lane.get()
            try:
                await self._unless_failed(op, where)
            finally:
                self._lane.task_done()

    def _check_owned(self, tps: set[TP], store: Store) -> None:
        """Raise :class:`~streams.fencing.Fenced` if another worker claimed any of ``tps`` (blocking: on the I/O
        thread of ``store``, right before a write)."""
        if self.owners is not None:
            self.owners.check(tps, store)

    async def _store_events(self, w: Writes) -> None:
        """Insert held events (one insert; a retry first asks which of them the failed try stored). Events the
        store refuses for their data are isolated and dead-lettered (:mod:`streams.quarantine`). Events of a
        partition found fenced meanwhile are dropped (its new owner stores them)."""
        t0 = time.perf_counter()
        now = datetime.now(UTC)
        pairs = list(zip(w.events, w.event_tps, strict=False))
        owned: set[TP] = set(w.event_tps)  # the partitions of what is left to insert (pieces are new blocks)

        def insert_events(blocks: list[EventBlock]) -> None:  # the columns are built on the I/O thread too
            self._check_owned(owned, self.events_store)  # right before the write
            insert_packed = getattr(self.events_store, "insert_packed", None)  # the server's store has it
            try:
                packed = block_packed(blocks, now) if insert_packed is not None else None  # None: no native module
                if packed is not None:
                    insert_packed("events", packed)
                else:
                    self.events_store.insert("events", block_columns(blocks, now))
            except ColumnRangeError as exc:
                raise StoreDataError(str(exc)) from None

        while True:
            events = Isolating(w.events, insert_events, rows_of_blocks, halves_of_blocks,
                               before_retry=self._not_stored)  # a failed try may have landed
            # on a transient error the call is retried; on any other the writer fails: no later checkpoint, so
            # the next owner re-scores these events
            try:
                await self.io.call(events.run, "events.insert", w.where, events=True)
                break
            except Fenced:
                pairs = [(b, tp) for b, tp in pairs if not self._fenced(tp)]
                w.events, owned = [b for b, _ in pairs], {tp for _, tp in pairs}
        m.STORE_INSERTS.labels("events").inc(events.pieces)
        if events.refused:
            topics = self.settings.topics()
            await self._quarantine("events", [
                ((topics.get(b.kind, b.kind), -1), _Quarantined(-1, None, (b.raws or [b""])[0]),
                 EventError("$", f"event {b.cols['event_id'][0]}: the store refused it: {exc}"))
                for [b], exc in events.refused])
        m.EVENTS_STORED.inc(sum(map(len, w.events)) - len(events.refused))
        m.STAGE_SECONDS.labels("store.events").inc(time.perf_counter() - t0)

    def _not_stored(self, blocks: list[EventBlock]) -> list[EventBlock]:
        """The events (with payloads and scores) ``events`` does not hold yet (an insert retried after an error)."""
        known = stored_event_keys(self.events_store, blocks)
        return [without(known, b) for b in blocks]

    def _alerts_not_stored(self, piece: list[tuple[Alert, TP, int]]) -> list[tuple[Alert, TP, int]]:
        """The alerts (with their sources) ``alerts`` does not hold yet (an insert retried after an error)."""
        known = stored_alert_ids_among(self.store, [a.alert_id for a, _, _ in piece])
        return [row for row in piece if row[0].alert_id not in known]

    async def _quarantine(self, table: str, dead: list[tuple[TP, Record, EventError]]) -> None:
        """Rows the store refused for their data: logged, counted and dead-lettered with the reason (stage
        ``store``), before any checkpoint that covers them is stored."""
        for (topic, partition), r, err in dead:
            log.error("the store refused a row for its data; dead-lettered", extra={
                "table": table, "topic": topic, "partition": partition, "offset": r.offset, "reason": err.reason})
        m.QUARANTINED.labels(table).inc(len(dead))
        await self._publish_dead_letters(dead, stage="store")

    async def _health(self, touched: list[tuple[Part, int, int, int]], seconds: float) -> None:
        """Per-partition health rows, written at most once a second (best effort, never holds the stream)."""
        now = self.clock()
        ts = datetime.now(UTC).replace(microsecond=0)
        cols = self._health_rows
        for part, n_ev, n_dead, n_alerts in touched:
            lag = max(part.highwater - part.offset, 0) if part.highwater >= 0 else 0
            age = now - part.checkpoint_at
            for k, v in (("ts", ts), ("worker", self.worker), ("topic", part.topic), ("partition", part.partition),
                         ("events", n_ev), ("dead_letters", n_dead), ("alerts", n_alerts), ("lag", lag),
                         ("batch_latency_ms", round(seconds * 1000, 3)), ("checkpoint_age_s", round(age, 3))):
                cols.setdefault(k, []).append(v)
            m.LAG.labels(part.topic, str(part.partition)).set(lag)
            m.CHECKPOINT_AGE.labels(part.topic, str(part.partition)).set(age)
        parts = self.partitions.parts.values()
        m.ENTITIES.set(sum(p.engine.entities() for p in parts))
        m.STATE_BYTES.set(sum(p.engine.memory_bytes() for p in parts))
        if now - self._health_at < 1.0:
            return
        self._health_rows, self._health_at = {}, now
        try:
            await self.io.once(lambda: self.store.insert("pipeline_health", cols))
        except StoreError as exc:
            log.warning("pipeline_health insert failed", extra={"error": str(exc)})

    def close(self) -> None:
        """Cancel the writer and the events lane (what they had not done is re-scored by the next owner)."""
        for task in (self._writer, self._lane_task):
            if task is not None:
                task.cancel()
