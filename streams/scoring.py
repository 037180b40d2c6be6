"""The worker's core, free of Faust: score records per topic partition, publish, store, checkpoint.

Delivery promise (at-least-once from Kafka, exactly-once at the edges):

1. a batch's dead letters and new alerts are published and acknowledged by Kafka;
2. its events (with the score each got) and alerts are inserted into ClickHouse, retried
   until the store takes them (consumption waits meanwhile: no unbounded buffer, no drop);
3. every few seconds each partition's engine state is checkpointed with the offset it
   reflects, and only then are that partition's records acknowledged for commit.

Scoring and writing are two stages: :meth:`Scorer.handle` decodes and scores a batch on the
event loop and queues what it produced; one writer task publishes and stores the queued batches
strictly in order, on the store's I/O thread. While the writer waits on Kafka and ClickHouse
the next batch is being scored; the queue holds ``worker_write_ahead`` batches, so a slow or
absent store stops scoring (and so fetching) instead of filling memory. The alerts are
inserted at once; the events are held until ``worker_insert_min_rows`` of them wait,
``worker_insert_linger_s`` has passed, or a checkpoint or flush needs them, and go in one
insert (an insert costs the ClickHouse 18.16 server about 0.1 s of CPU whatever its size).
Those inserts run in the *events lane*: one at a time, in offset order, on a connection of
their own when the worker has one (the server's), so the next batches' alerts are stored
while a big events insert runs instead of waiting behind it. The checkpoints are queued in
the same lane (stored, on the writer's connection, once the events before them are). A checkpoint
is a snapshot of the engine's state taken right after the batch it covers was scored, queued
in the lane behind that batch's events and after its alerts were stored, so it is stored
only once they are.

After a crash the next owner of a partition restores its checkpoint, skips the records the
checkpoint already reflects and re-scores the rest. The engine gives the same alerts (same
deterministic ids) whatever the batching, rows and alerts are keyed by id in ReplacingMergeTree
tables, alerts already on the alerts topic are not published again, and alerts already in the
store are not written again (one the crashed owner published but never stored is stored now).
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from functools import partial
from itertools import repeat
from operator import attrgetter
from typing import Any, Protocol

import msgspec
from kafka.errors import KafkaError

from detectors.correlation import Correlator, RiskEvidence, decode_evidence, encode_evidence, evidence_of
from detectors.engine import Engine
from schemas.alerts import Alert, encode_alert
from schemas.block import EventBlock, blocks_of, concat_kinds, decode_block
from schemas.errors import EventError
from schemas.events import Event, decode_as
from schemas.rows import alert_columns, block_columns, block_packed
from streams import metrics as m
from streams.checkpoints import CheckpointError, CheckpointStore
from streams.records import dead_letter_headers
from streams.settings import Settings
from streams.sinks.base import Store, StoreError
from streams.sinks.clickhouse import sql_string

log = logging.getLogger("spyglass.worker")

_SAFE_ID = re.compile(r"[A-Za-z0-9_.:@/+=-]{1,128}")  # ids safe to quote in a query (others: not checked)
EventKey = tuple[str, str, str]  # tenant, entity, event id: what identifies a stored event


def _lookable(b: EventBlock) -> EventBlock:
    """The events whose id is safe to quote in a query: the only ones :func:`stored_event_keys` looks up."""
    ids = b.cols["event_id"]
    safe = [i for i, x in enumerate(ids) if _SAFE_ID.fullmatch(x)]
    return b if len(safe) == len(ids) else b.take(safe)


def stored_event_keys(store: Store, blocks: Sequence[EventBlock], chunk: int = 1_000) -> set[EventKey]:
    """The keys of the blocks' events that the ``events`` table holds already. Events whose id is not safe
    to quote are not looked up (so never reported stored): at worst such an event is inserted twice."""
    found: set[EventKey] = set()
    for b in concat_kinds(_lookable(b) for b in blocks if len(b)):
        if not len(b):
            continue
        kind, ids = b.kind, b.cols["event_id"]
        wanted = set(b.event_keys())
        secs = b.cols["ts"] // 1_000_000  # as stored: whole seconds
        lo, hi = int(secs.min()), int(secs.max())
        for i in range(0, len(ids), chunk):
            quoted = ", ".join(sql_string(x) for x in ids[i:i + chunk])
            rows = store.query(
                f"SELECT tenant, entity, event_id FROM {store.database}.events "  # noqa: S608 - ids checked, quoted
                f"WHERE kind = {sql_string(kind)} AND ts >= toDateTime({lo}) AND ts <= toDateTime({hi}) "
                f"AND event_id IN ({quoted})")
            found.update(k for k in ((str(t), str(e), str(i_)) for t, e, i_ in rows) if k in wanted)
    return found


def _without(keys: set[EventKey], b: EventBlock) -> EventBlock:
    """The block's events (with their payloads and scores) whose keys are not in ``keys``."""
    return b.take([i for i, k in enumerate(b.event_keys()) if k not in keys])


# a topic's decoded records: what the engine scores (a block, or structs of several kinds), the blocks to
# store, the indices of the records decoded, [(index, error)] of the others
Decoded = tuple[EventBlock | list[Event], list[EventBlock], list[int], list[tuple[int, EventError]]]


def _decode(values: list[bytes | None], tenant: str, kind: str | None) -> Decoded:
    """Decode a batch of one topic's records: straight into a block's columns when the topic has one kind."""
    if kind is not None:
        block, ok, bad = decode_block(values, kind, tenant)
        return block, [block], ok, bad
    decs = [decode_as(v, tenant) for v in values]
    ok = [i for i, ev in enumerate(decs) if not isinstance(ev, EventError)]
    events: list[Event] = [decs[i] for i in ok]  # type: ignore[misc]
    blocks = [b for b, _ in blocks_of(events, [values[i] for i in ok], tenant)] if events else []  # type: ignore[misc]
    return events, blocks, ok, [(i, ev) for i, ev in enumerate(decs) if isinstance(ev, EventError)]


def _event_ids(events: EventBlock | list[Event]) -> list[str]:
    return events.cols["event_id"] if isinstance(events, EventBlock) else list(map(_EVENT_ID, events))


TP = tuple[str, int]
_OFFSET, _VALUE, _EVENT_ID = attrgetter("offset"), attrgetter("value"), attrgetter("event_id")
Publish = Callable[[str, bytes | None, bytes, list[tuple[str, bytes]] | None], Awaitable[Awaitable[Any]]]


class Record(Protocol):
    """One Kafka record as the worker sees it: the record aiokafka parsed, not copied
    (:class:`streams.transport.RawPartitionRecords`). Its topic and partition are the fetch's key."""

    offset: int
    key: bytes | None
    value: bytes | None


@dataclass
class Part:
    """One topic partition this worker scores: an event topic's (an Engine) or the risk-evidence topic's
    (a Correlator, which has the same small interface: state, entities, memory_bytes, evicted)."""

    topic: str
    partition: int
    engine: Engine | Correlator
    offset: int  # next offset the engine has not seen
    checkpoint_offset: int  # next offset the stored checkpoint has not seen
    checkpoint_at: float = field(default_factory=time.monotonic)  # when the last checkpoint was stored
    snapshot_at: float = field(default_factory=time.monotonic)  # when the last checkpoint was taken
    pending: list[int] = field(default_factory=list)  # offsets scored, not yet in a checkpoint (acked after it)
    stored_alerts: set[str] = field(default_factory=set)  # stored by an earlier owner: neither published nor stored
    published_alerts: set[str] = field(default_factory=set)  # on the alerts topic already: stored, not published
    highwater: int = -1
    # an earlier owner may have stored events past the checkpoint before it died: until a batch shows one
    # that is not stored (its writes were in offset order), check which are, and do not insert those again
    # (``events`` would dedupe them, but its per-minute view would count them twice)
    recheck_stored: bool = True


@dataclass
class Snapshot:
    """A partition's engine state right after its records below ``offset`` were scored."""

    part: Part
    offset: int
    state: bytes
    entities: int
    offsets: list[int]  # acked once the snapshot is stored


@dataclass
class Writes:
    """What one scored batch leaves to the writer, in the order the writer carries it out."""

    dead: list[tuple[TP, Record, EventError]] = field(default_factory=list)  # its partition, the record, why
    alerts: list[tuple[Alert, TP, int]] = field(default_factory=list)  # to store (not stored before), its source
    publish: list[Alert] = field(default_factory=list)  # to publish (not on the alerts topic before)
    evidence: list[RiskEvidence] = field(default_factory=list)  # to the risk-evidence topic, with the alerts
    events: list[EventBlock] = field(default_factory=list)  # to store: the events, their raw JSON and scores
    touched: list[tuple[Part, int, int, int]] = field(default_factory=list)  # part, events, dead, alerts
    snapshots: list[Snapshot] = field(default_factory=list)
    where: dict[str, Any] = field(default_factory=dict)
    scored_s: float = 0.0
    flush: bool = False  # store the events held back for a bigger insert now (see Scorer._write)

    @classmethod
    def merge(cls, jobs: list[Writes]) -> Writes:
        """Several queued batches as one: an insert costs ClickHouse the same for 10 rows as for
        thousands (tens of milliseconds on 18.16), so a writer that fell behind catches up in one."""
        if len(jobs) == 1:
            return jobs[0]
        out = cls(where=jobs[0].where)
        for j in jobs:  # in queue order: each checkpoint still follows the writes it covers
            out.dead += j.dead
            out.alerts += j.alerts
            out.publish += j.publish
            out.evidence += j.evidence
            out.events += j.events
            out.touched += j.touched
            out.snapshots += j.snapshots
            out.scored_s = max(out.scored_s, j.scored_s)
            out.flush |= j.flush
        return out


class Scorer:
    """Owns one engine per assigned topic partition and drives the sinks for each batch."""

    def __init__(self, settings: Settings, store: Store, checkpoints: CheckpointStore, publish: Publish,
                 *, ack: Callable[[str, int, list[int]], None], worker: str = "worker",
                 on_failure: Callable[[BaseException], Any] | None = None,
                 clock: Callable[[], float] = time.monotonic,
                 published_alerts: Callable[[int], set[str]] | None = None,
                 events_store: Store | None = None) -> None:
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
        # the events inserts on a connection (and I/O thread) of their own when given one: an alert never
        # waits behind them. Without one (the embedded store: one session per process) they share the thread.
        self.events_store = events_store if events_store is not None else store
        self._events_io = (ThreadPoolExecutor(max_workers=1, thread_name_prefix="spyglass-store-events")
                           if events_store is not None else self._io)
        self._lane: asyncio.Queue[tuple[Callable[[], Awaitable[Any]], dict[str, Any]]] | None = None
        self._lane_task: asyncio.Task | None = None
        self._lock = asyncio.Lock()
        self._kinds = {t: k for k, t in settings.topics().items()}
        self._evidence_topic = settings.topic_risk_evidence
        self._published_alerts = published_alerts
        self._scan_cache: tuple[int, float, set[str]] | None = None
        self._ack = ack
        self._queue: asyncio.Queue[Writes] | None = None
        self._writer: asyncio.Task | None = None
        self._failed: BaseException | None = None
        self._on_failure = on_failure
        self._health_rows: dict[str, list[Any]] = {}
        self._health_at = 0.0
        self._held = Writes()  # events scored and not stored yet, held for one bigger insert
        self._held_since = 0.0
        self._store_errors: dict[bool, str] = {}  # by connection (True: the events lane's): the last error

    # -- blocking calls on one I/O thread, retried while the store (or broker) is away --------
    async def _io_call(self, fn: Callable[[], Any], what: str, where: dict[str, Any] | None = None,
                       retry: tuple[type[Exception], ...] = (StoreError,), *, events: bool = False) -> Any:
        """``fn()`` on the I/O thread (``events``: the events lane's), retried with backoff on ``retry`` errors
        (consumption waits meanwhile)."""
        loop = asyncio.get_running_loop()
        store = StoreError in retry
        delay = 0.2
        while True:
            try:
                out = await loop.run_in_executor(self._events_io if events else self._io, fn)
            except retry as exc:
                if self.stopping or self._failed is not None:  # give up: the next owner re-scores
                    raise
                if isinstance(exc, StoreError):
                    self._store_errors[events] = f"{what}: {exc}"
                    self._store_health()
                log.error(("store write" if isinstance(exc, StoreError) else what) + " failed; retrying "
                          "(consumption paused)",
                          extra={"stage": what, "error": str(exc), "retry_in_s": delay, **(where or {})})
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)
                continue
            if store:
                if self._store_errors.pop(events, None) is not None:
                    log.info("store is back", extra={"stage": what})
                self._store_health()
            return out

    def _store_health(self) -> None:
        """The store is up once both connections are (the writer's and the events lane's)."""
        self.health.store_error = "; ".join(self._store_errors.values()) or None
        m.STORE_UP.set(0 if self._store_errors else 1)

    # -- partitions ------------------------------------------------------------------------
    async def _part(self, topic: str, partition: int, first_offset: int) -> Part:
        tp = (topic, partition)
        part = self.parts.get(tp)
        if part is not None:
            return part
        where = {"topic": topic, "partition": partition, "offset": first_offset}
        evidence = topic == self._evidence_topic
        restore = Correlator.from_state if evidence else Engine.from_state
        try:
            cp = await self._io_call(lambda: self.checkpoints.load(topic, partition, restore), "checkpoint.load",
                                     where)
        except CheckpointError as exc:
            log.error("checkpoint refused; this partition starts cold", extra={**where, "error": str(exc)})
            cp = None
        if cp is None:
            s = self.settings
            fresh = (Correlator(s.correlation_window_hours, s.correlation_horizon_days) if evidence
                     else Engine(s.engine_config()))
            part = Part(topic, partition, fresh, offset=first_offset, checkpoint_offset=first_offset)
            since = 0
        else:
            if isinstance(cp.engine, Engine):
                # the state bounds follow the settings, not the checkpoint: an operator can tighten them
                cp.engine.config = replace(cp.engine.config, max_entities=self.settings.engine_max_entities,
                                           idle_evict_days=self.settings.engine_idle_evict_days)
            part = Part(topic, partition, cp.engine, offset=cp.offset, checkpoint_offset=cp.offset)
            since = int(cp.written_at.timestamp() - 120) * 1000
        # alerts an earlier owner raised from the records about to be re-scored: stored ones, and
        # published ones it crashed before storing. Neither is published or stored again.
        known = await self._io_call(lambda: self.store.query(
            f"SELECT alert_id FROM {self.store.database}.alerts WHERE source_topic = {sql_string(topic)} "  # noqa: S608
            f"AND source_partition = {int(partition)} AND source_offset >= {int(part.offset)}"),
            "alerts.known", where)
        part.stored_alerts = {r[0] for r in known}
        part.published_alerts = await self._published_since(since, where)
        log.info("partition assigned, " + ("no checkpoint: starting cold" if cp is None else "state restored"),
                 extra={**where, "checkpoint_offset": part.offset, "entities": part.engine.entities(),
                        "alerts_already_stored": len(part.stored_alerts),
                        "alerts_already_published": len(part.published_alerts)})
        self.parts[tp] = part
        return part

    async def _published_since(self, since_ms: int, where: dict[str, Any]) -> set[str]:
        if self._published_alerts is None:
            return set()
        cached = self._scan_cache
        if cached is not None and cached[0] <= since_ms and self.clock() - cached[1] < 10.0:
            return cached[2]  # partitions assigned together share one scan
        # the scan must finish before re-scoring (no alert twice): retried while the broker is away
        ids = await self._io_call(lambda: self._published_alerts(since_ms), "alerts topic scan", where,
                                  retry=(KafkaError,))
        self._scan_cache = (since_ms, self.clock(), ids)
        return ids

    def _not_stored(self, w: Writes) -> list[EventBlock]:
        """The events (with payloads and scores) ``events`` does not hold yet (an insert retried after an error)."""
        known = stored_event_keys(self.events_store, w.events)
        return [_without(known, b) for b in w.events]

    async def revoke(self, tps: Sequence[TP]) -> None:
        """Partitions leave this worker: write and checkpoint what they scored, then forget them."""
        # the rebalance waits for this; past half the session timeout (store down, say) this worker gives
        # up its writes instead of finishing them later for partitions it lost. The wait for the scorer's
        # lock is bounded the same way: the batch holding it may be retrying a store call.
        timeout = max(self.settings.worker_session_timeout_s / 2, 1.0)
        try:
            await asyncio.wait_for(self._lock.acquire(), timeout=timeout)
        except TimeoutError:  # the batch still holds its partitions: fail (no later checkpoint), never pull them
            self._fail(TimeoutError("a batch was still being scored or queued when partitions were revoked; "
                                    "given up so the new owners re-score it"))
            return
        try:
            await asyncio.wait_for(self.flush(), timeout=timeout)
            snaps = [self._snapshot(part) for part in (self.parts.get(tp) for tp in tps)
                     if part is not None and part.pending]
            if snaps:
                await self._save(snaps)
        except TimeoutError:
            self._fail(TimeoutError("writes still pending when partitions were revoked; given up so the new "
                                    "owners re-score them"))
        except Exception as exc:  # no checkpoint past writes that did not happen: the next owner re-scores
            log.error("writes or checkpoint before revoke failed; the next owner re-scores from the last "
                      "stored checkpoint", extra={"error": repr(exc)})
        finally:
            for tp in tps:
                self.parts.pop(tp, None)
            self._lock.release()

    async def checkpoint_all(self) -> None:
        """Checkpoint every partition with pending records and wait until stored (clean shutdown)."""
        await self.checkpoint_due(min_age_s=0.0)
        await self.flush()

    async def checkpoint_due(self, min_age_s: float | None = None) -> None:
        """Queue checkpoints of partitions whose pending records waited ``min_age_s`` (default: the interval)."""
        age = self.settings.worker_checkpoint_s if min_age_s is None else min_age_s
        async with self._lock:
            now = self.clock()
            snaps = [self._snapshot(p) for p in list(self.parts.values()) if p.pending and now - p.snapshot_at >= age]
            if snaps:
                await self._enqueue(Writes(snapshots=snaps))

    def _snapshot(self, part: Part) -> Snapshot:
        t0 = time.perf_counter()
        snap = Snapshot(part, part.offset, part.engine.state(), part.engine.entities(), part.pending)
        m.STAGE_SECONDS.labels("snapshot").inc(time.perf_counter() - t0)
        part.pending = []
        part.snapshot_at = self.clock()
        return snap

    async def _save(self, snaps: list[Snapshot]) -> None:
        """Store checkpoints (one insert), then ack the records each one covers."""
        if self._failed is not None:  # writes before these snapshots may be missing: never store them
            raise self._failed
        first = snaps[0].part
        where = {"topic": first.topic, "partition": first.partition, "offset": snaps[0].offset}
        sizes = await self._io_call(lambda: self.checkpoints.save_states(
            [(s.part.topic, s.part.partition, s.offset, s.state, s.entities) for s in snaps]),
            "checkpoint.save", where)
        if self._failed is not None:  # failed meanwhile (the other connection): ack nothing more
            raise self._failed
        now = self.clock()
        for snap, size in zip(snaps, sizes, strict=True):
            part = snap.part
            part.checkpoint_offset = max(part.checkpoint_offset, snap.offset)
            part.checkpoint_at = now
            log.debug("checkpoint", extra={"topic": part.topic, "partition": part.partition, "offset": snap.offset,
                                           "bytes": size, "entities": snap.entities})
            self._ack(part.topic, part.partition, snap.offsets)

    # -- the writer stage --------------------------------------------------------------------
    async def _enqueue(self, w: Writes) -> None:
        if self._failed is not None:
            raise self._failed
        if self._queue is None:
            self._queue = asyncio.Queue(maxsize=self.settings.worker_write_ahead)
            self._writer = asyncio.get_running_loop().create_task(self._write_loop(), name="spyglass-writer")
        t0 = time.perf_counter()
        await self._queue.put(w)  # waits while the writer is behind: backpressure (scoring and fetching wait)
        m.STAGE_SECONDS.labels("backpressure").inc(time.perf_counter() - t0)

    def _fail(self, exc: BaseException, where: dict[str, Any] | None = None) -> None:
        """Stop storing and checkpointing for good; the worker is crashed (if it said how) and restarts.

        Records are acked only by stored checkpoints, so the next owner of each partition re-scores
        everything after the last one: nothing is lost, at the price of re-scoring.
        """
        if self._failed is not None:
            return
        if isinstance(exc, asyncio.CancelledError):  # raised again by flush() and _enqueue: not a cancel there
            exc = RuntimeError("the writer was cancelled (shutdown) with writes pending")
        self._failed = exc
        self.health.failed = repr(exc)
        log.error("the writer failed; nothing more is stored or checkpointed by this worker",
                  extra={"error": repr(exc), **(where or {})})
        if self._on_failure is not None:
            self._on_failure(exc)

    async def flush(self) -> None:
        """Wait until every queued batch is published, stored (held events too) and its checkpoints saved
        (the events lane drained: see :meth:`_write`)."""
        if self._queue is not None:
            await self._queue.put(Writes(flush=True))
            await self._queue.join()
        if self._failed is not None:
            raise self._failed

    async def _write_loop(self) -> None:
        assert self._queue is not None
        while True:
            if self._held.events and self._failed is None:  # held events wait for more, up to the linger time
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
        scorer (nothing after it is written, checkpointed or acked)."""
        try:
            if self._failed is None:
                await step()
        except BaseException as exc:
            self._fail(exc, where)
            if isinstance(exc, asyncio.CancelledError):
                raise

    async def _write(self, w: Writes) -> None:
        t0 = time.perf_counter()
        # 1. Kafka: dead letters and new alerts, acknowledged before anything is stored
        futs = [await self.publish(self.settings.topic_dead_letter, r.key, r.value or b"",
                                   dead_letter_headers(topic, partition, r.offset, err, "worker"))
                for (topic, partition), r, err in w.dead]
        futs += [await self.publish(self.settings.topic_alerts, f"{a.tenant}/{a.entity}".encode(), encode_alert(a),
                                    None) for a in w.publish]
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
        if self._failed is not None:  # the events lane failed meanwhile
            raise self._failed
        if w.alerts:
            acols = alert_columns([a for a, _, _ in w.alerts], datetime.now(UTC).replace(microsecond=0),
                                  [(topic, partition, offset) for _, (topic, partition), offset in w.alerts])
            await self._io_call(lambda: self.store.insert("alerts", acols), "alerts.insert", w.where)
            m.STORE_INSERTS.labels("alerts").inc()
        for a in w.publish:
            m.ALERTS.labels(a.detector, a.severity).inc()
        t2 = time.perf_counter()
        m.STAGE_SECONDS.labels("store").inc(t2 - t1)
        # 3. the events lane (one at a time, in offset order, on its own connection when there is one): the
        # events wait for more (an insert costs the 18.16 server about 0.1 s of CPU whatever its size), up to
        # worker_insert_min_rows or worker_insert_linger_s; a checkpoint or a flush sends them first. The
        # checkpoints taken after this batch was scored follow them (its alerts are stored by now), and their
        # records are acked once they are stored.
        if w.events:
            if not self._held.events:
                self._held_since = time.monotonic()
                self._held.where = w.where
            self._held.events += w.events
        s = self.settings
        if self._held.events and (w.snapshots or w.flush or sum(map(len, self._held.events)) >= s.worker_insert_min_rows
                                  or time.monotonic() - self._held_since >= s.worker_insert_linger_s):
            held, self._held = self._held, Writes()
            await self._to_lane(partial(self._store_events, held), held.where)
        if w.snapshots:
            await self._to_lane(partial(self._save, w.snapshots), w.where)
        if w.flush and self._lane is not None:
            await self._lane.join()
            if self._failed is not None:
                raise self._failed
        m.STAGE_SECONDS.labels("checkpoint").inc(time.perf_counter() - t2)  # waits for the lane included
        if w.touched and self._failed is None:
            seconds = w.scored_s + time.perf_counter() - t0
            m.BATCH_SECONDS.observe(seconds)
            self.health.last_batch = time.monotonic()
            await self._health(w.touched, seconds)

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

    async def _store_events(self, w: Writes) -> None:
        """Insert held events (one insert; a retry first asks which of them the failed try stored)."""
        t0 = time.perf_counter()
        now = datetime.now(UTC)
        tries = [0]

        def insert_events() -> None:  # the columns are built on the I/O thread too, off the event loop
            blocks = w.events if tries[0] == 0 else self._not_stored(w)  # a failed try may have landed
            tries[0] += 1
            if not any(map(len, blocks)):
                return
            insert_packed = getattr(self.events_store, "insert_packed", None)  # the server's store has it
            packed = block_packed(blocks, now) if insert_packed is not None else None  # None: no native module
            if packed is not None:
                insert_packed("events", packed)
            else:
                self.events_store.insert("events", block_columns(blocks, now))

        # on an error the writer fails: no later checkpoint, so the next owner re-scores these events
        await self._io_call(insert_events, "events.insert", w.where, events=True)
        m.STORE_INSERTS.labels("events").inc()
        m.EVENTS_STORED.inc(sum(map(len, w.events)))
        m.STAGE_SECONDS.labels("store.events").inc(time.perf_counter() - t0)

    # -- one batch -------------------------------------------------------------------------
    async def handle(self, batches: Mapping[TP, Sequence[Record]]) -> None:
        """Score a fetch (records by topic partition) and queue its writes; its records are acked once a
        checkpoint covers them."""
        async with self._lock:
            if self._failed is not None:
                raise self._failed
            w = await self._score(batches)
            if w.events or w.dead or w.snapshots or w.touched:
                try:
                    await self._enqueue(w)
                except asyncio.CancelledError:  # shutdown while the writer was behind: this batch is lost here
                    self._fail(RuntimeError("a scored batch was cancelled before its writes were queued; "
                                            "no later checkpoint is stored, its records are re-scored"), w.where)
                    raise

    async def _score(self, batches: Mapping[TP, Sequence[Record]]) -> Writes:
        t0 = time.perf_counter()
        (topic, partition), batch = next(iter(batches.items()))
        w = Writes(where={"topic": topic, "partition": partition, "offset": batch[0].offset})
        alerts_out: list[tuple[Alert, TP, int, str | None]] = []  # alert, its record's partition and offset, its
        #                                                             principal (evidence)
        parts = {}
        by_tp: dict[TP, list[Record]] = {}
        stored: dict[TP, set[EventKey]] = {}  # events an earlier owner stored already (see Part.recheck_stored)
        decoded: dict[TP, Decoded] = {}
        tenant = self.settings.default_tenant
        for (topic, partition), batch in batches.items():  # every await before any state changes: a cancel
            if not batch:                                   # here leaves no partition half scored
                continue
            recs = by_tp[(topic, partition)] = sorted(batch, key=_OFFSET)
            part = parts[(topic, partition)] = await self._part(topic, partition, recs[0].offset)
            kind = self._kinds.get(topic)
            if part.recheck_stored and kind:  # decoding changes no state: done here, used below
                dec = decoded[(topic, partition)] = _decode([r.value for r in recs if r.offset >= part.offset],
                                                            tenant, kind)
                if len(dec[0]):
                    stored[(topic, partition)] = await self._io_call(
                        partial(stored_event_keys, self.store, dec[1]), "events.known",
                        {"topic": topic, "partition": partition, "offset": recs[0].offset})
        for (topic, partition), recs in by_tp.items():
            part = parts[(topic, partition)]
            fresh = recs if recs[0].offset >= part.offset else [r for r in recs if r.offset >= part.offset]
            if recs[0].offset < part.checkpoint_offset:  # a stored checkpoint reflects these already
                self._ack(topic, partition, [r.offset for r in recs if r.offset < part.checkpoint_offset])
            if not fresh:
                continue
            if isinstance(part.engine, Correlator):
                self._correlate(part, fresh, w, alerts_out)
                continue
            kind = self._kinds.get(topic)
            m.ENGINE_BATCH.observe(len(fresh))
            t_dec = time.perf_counter()
            events, blocks, ok, bad = decoded.get((topic, partition)) or _decode(list(map(_VALUE, fresh)), tenant,
                                                                                    kind)
            for i, err in bad:
                w.dead.append(((topic, partition), fresh[i], err))
            good = fresh if len(ok) == len(fresh) else [fresh[i] for i in ok]
            n_dead, n = len(bad), len(ok)
            t_eng = time.perf_counter()
            evicted = dict(part.engine.evicted)
            alerts = part.engine.process(events) if n else []
            m.count_evictions(evicted, part.engine.evicted)
            t_end = time.perf_counter()
            m.STAGE_SECONDS.labels("decode").inc(t_eng - t_dec)
            m.STAGE_SECONDS.labels("score").inc(t_end - t_eng)
            known = stored.get((topic, partition))
            score_of, zero = part.engine.scores.get, repeat(0.0)
            for b in blocks:
                b.scores = list(map(score_of, b.cols["event_id"], zero))
            if known is not None:  # scored again (the state needs them), not stored again
                looked_up = {k for b in blocks for k in _lookable(b).event_keys()}
                if not looked_up <= known:
                    part.recheck_stored = False  # past what the earlier owner stored (it wrote in offset order)
                if known:
                    log.info("events already stored by an earlier owner are not inserted again",
                             extra={"topic": topic, "partition": partition, "offset": fresh[0].offset,
                                    "events": len(known)})
                    blocks = [_without(known, b) for b in blocks]
            w.events += [b for b in blocks if len(b)]
            if alerts:  # an alert's record: its first evidence event's (the first record with that id)
                by_id: dict[str, int] = {}
                for eid, r in zip(_event_ids(events), good, strict=True):
                    by_id.setdefault(eid, r.offset)
            principals = part.engine.alert_principals
            for a in alerts:
                alerts_out.append((a, (topic, partition), by_id.get(a.evidence.event_ids[0], fresh[0].offset),
                                   None if a.kind == "cross" else principals.get(a.alert_id)))
            part.offset = fresh[-1].offset + 1
            part.pending += [r.offset for r in fresh]
            w.touched.append((part, n, n_dead, len(alerts)))
            if kind:
                m.EVENTS_IN.labels(kind).inc(n)
        # after a crash, an alert the earlier owner published but did not store is stored, not published again
        # its evidence goes out again with it (re-delivered evidence is ignored by the correlator)
        for a, tp, offset, principal in alerts_out:
            part = self.parts[tp]
            if a.alert_id not in part.stored_alerts:
                w.alerts.append((a, tp, offset))
                if a.alert_id not in part.published_alerts:
                    w.publish.append(a)
                if principal:
                    w.evidence.append(evidence_of(a, principal))
        now = self.clock()
        w.snapshots = [self._snapshot(part) for part, *_ in w.touched
                       if now - part.snapshot_at >= self.settings.worker_checkpoint_s]
        w.scored_s = time.perf_counter() - t0
        return w

    def _correlate(self, part: Part, fresh: list[Record], w: Writes,
                   alerts_out: list[tuple[Alert, TP, int, str | None]]) -> None:
        """Records of a risk-evidence partition: to its correlator (they are not events, nothing is stored)."""
        corr, tp = part.engine, (part.topic, part.partition)
        assert isinstance(corr, Correlator)
        n_dead = n_alerts = 0
        t0 = time.perf_counter()
        evicted = dict(corr.evicted)
        for r in fresh:
            try:
                ev = decode_evidence(r.value)
            except (msgspec.DecodeError, msgspec.ValidationError) as exc:
                w.dead.append((tp, r, EventError("$", f"not a risk evidence record: {exc}")))
                n_dead += 1
                continue
            try:
                a = corr.add(ev)
            except (ValueError, OverflowError) as exc:  # never a poison pill: the record is refused, the stream goes on
                w.dead.append((tp, r, EventError("$", f"risk evidence refused: {exc}")))
                n_dead += 1
                continue
            if a is not None:
                alerts_out.append((a, tp, r.offset, None))
                n_alerts += 1
        m.count_evictions(evicted, corr.evicted)
        m.STAGE_SECONDS.labels("correlate").inc(time.perf_counter() - t0)
        part.offset = fresh[-1].offset + 1
        part.pending += [r.offset for r in fresh]
        w.touched.append((part, 0, n_dead, n_alerts))

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
        m.ENTITIES.set(sum(p.engine.entities() for p in self.parts.values()))
        m.STATE_BYTES.set(sum(p.engine.memory_bytes() for p in self.parts.values()))
        if now - self._health_at < 1.0:
            return
        self._health_rows, self._health_at = {}, now
        try:
            await asyncio.get_running_loop().run_in_executor(self._io, lambda: self.store.insert("pipeline_health",
                                                                                                   cols))
        except StoreError as exc:
            log.warning("pipeline_health insert failed", extra={"error": str(exc)})

    def lag(self) -> int:
        return sum(max(p.highwater - p.offset, 0) for p in self.parts.values() if p.highwater >= 0)

    def close(self) -> None:
        for task in (self._writer, self._lane_task):
            if task is not None:
                task.cancel()
        self._io.shutdown(wait=True)
        self._events_io.shutdown(wait=True)
