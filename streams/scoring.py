"""The worker's core, free of Faust: score records per topic partition, publish, store, checkpoint.

Delivery promise (at-least-once from Kafka, exactly-once at the edges):

1. a batch's dead letters and new alerts are published and acknowledged by Kafka;
2. its events (with the score each got) and alerts are inserted into ClickHouse, retried
   while the store's errors are transient (consumption waits meanwhile: no unbounded buffer, no
   drop); rows the store refuses for their data are dead-lettered (:mod:`streams.quarantine`);
3. every few seconds each partition's engine state is checkpointed with the offset it
   reflects, and only then are that partition's records acknowledged for commit.

Scoring and writing are two stages: :meth:`Scorer.handle` decodes and scores a batch on the
event loop and queues what it produced; the writer (:mod:`streams.writer`) publishes and stores
the queued batches strictly in order, while the next batch is being scored, and stores each
checkpoint only once the writes it covers are done. A checkpoint is a snapshot of the engine's
state taken right after the batch it covers was scored.

After a crash the next owner of a partition restores its checkpoint, skips the records the
checkpoint already reflects and re-scores the rest. The engine gives the same alerts (same
deterministic ids) whatever the batching, rows and alerts are keyed by id in ReplacingMergeTree
tables, alerts already on the alerts topic are not published again, and alerts already in the
store are not written again (one the crashed owner published but never stored is stored now).

The parts: :mod:`streams.partitions` (the partitions owned, restore, checkpoints, acks),
:mod:`streams.step` (one partition's records through its engine, no I/O), :mod:`streams.writer`
(the writer stage and the events lane), :mod:`streams.storeio` (the I/O threads, retries and the
worker's failure) and :mod:`streams.dedup` (what the store holds already). :class:`Scorer` wires
them and is the worker's one entry point.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from functools import partial
from operator import attrgetter
from typing import Any, cast

from detectors.base import EventEngine, EvidenceEngine
from detectors.correlation import evidence_of
from schemas.alerts import Alert
from schemas.errors import EventError
from schemas.feedback import FeedbackMark, decode_mark
from streams import metrics as m
from streams.checkpoints import CheckpointStore, Mark
from streams.dedup import EventKey, stored_event_keys
from streams.detector_config import load as load_tuning
from streams.fencing import LEASE_FRACTION, OwnerEpochs
from streams.otlp import Expanded, SpanSource, load_mapping
from streams.partitions import Part, Partitions
from streams.records import TP, Record
from streams.settings import Settings
from streams.sinks.base import Store
from streams.step import Decoded, Scored, TimeWindow, correlate, decode, score_events
from streams.storeio import StoreIO
from streams.suppression import Suppressor
from streams.writer import Publish, Writer, Writes

log = logging.getLogger("spyglass.worker")

_OFFSET = attrgetter("offset")


class Scorer:
    """Owns one engine per assigned topic partition and drives the sinks for each batch."""

    def __init__(self, settings: Settings, store: Store, checkpoints: CheckpointStore, publish: Publish,
                 *, ack: Callable[[str, int, list[int]], None], worker: str = "worker",
                 on_failure: Callable[[BaseException], Any] | None = None,
                 clock: Callable[[], float] = time.monotonic,
                 published_alerts: Callable[[int], set[str]] | None = None,
                 events_store: Store | None = None,
                 log_bounds: Callable[[str, int], Awaitable[tuple[int, int]]] | None = None,
                 record_at: Callable[[str, int, int], Mark | None] | None = None) -> None:
        self.settings = settings
        self.store = store
        self.health = m.Health()
        self.io = StoreIO(self.health, events_thread=events_store is not None, on_failure=on_failure)
        # owner epochs: a check holds for a quarter of the session timeout (streams.fencing)
        self.owners = OwnerEpochs(store, checkpoints.group_id, worker,
                                  lease_s=settings.worker_session_timeout_s * LEASE_FRACTION, clock=clock)
        self.partitions = Partitions(settings, store, checkpoints, self.io, ack=ack, clock=clock,
                                     published_alerts=published_alerts, log_bounds=log_bounds, record_at=record_at,
                                     owners=self.owners)
        self.writer = Writer(settings, store, self.io, self.partitions, publish, worker=worker, clock=clock,
                             events_store=events_store)
        self._lock = asyncio.Lock()  # one batch, revoke or checkpoint at a time
        self._kinds = {t: k for k, t in settings.topics().items()}
        self._window = TimeWindow(settings.event_max_future_s, settings.event_max_age_days)
        # the OTLP spans topic: its records expand into one contract record per GenAI span (streams.otlp)
        self._otlp_topic = settings.topic_otlp_spans or None
        self._spans = SpanSource(load_mapping(settings.otlp_mapping_file)) if self._otlp_topic else None
        # analysts' marks for partitions this worker owns but has not taken on yet (no fetch of theirs so far):
        # target (topic, partition) -> (mark, the feedback record's (topic, partition), its offset)
        self._waiting: dict[TP, list[tuple[FeedbackMark, TP, int]]] = {}
        self.suppressor = Suppressor(settings.suppressions_file)  # streams.suppression: rules as code
        self.tuning = load_tuning(settings.detectors_file)  # streams.detector_config: modes and parameters
        self.partitions.tuning = self.tuning

    @property
    def parts(self) -> dict[TP, Part]:
        """The partitions this worker owns, by (topic, partition)."""
        return self.partitions.parts

    @property
    def stopping(self) -> bool:
        return self.io.stopping

    @stopping.setter
    def stopping(self, value: bool) -> None:  # shutting down: failing store calls are given up, not retried
        self.io.stopping = value

    @property
    def failed(self) -> BaseException | None:
        """Why the writer failed, for good (nothing more is stored, checkpointed or acked), or None."""
        return self.io.failed

    async def handle(self, batches: Mapping[TP, Sequence[Record]]) -> None:
        """Score a fetch (records by topic partition) and queue its writes; its records are acked once a
        checkpoint covers them."""
        async with self._lock:
            self.io.check()
            w = await self._score(batches)
            if w.events or w.dead or w.snapshots or w.touched:
                try:
                    await self.writer.enqueue(w)
                except asyncio.CancelledError:  # shutdown while the writer was behind: this batch is lost here
                    self.io.fail(RuntimeError("a scored batch was cancelled before its writes were queued; "
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
        spans: dict[TP, Expanded] = {}  # the OTLP spans topic's partitions: their records' spans
        tenant = self.settings.default_tenant
        window, now_s = self._window, time.time()  # the event times taken: as of one wall clock reading a batch
        for (topic, partition), batch in batches.items():  # every await before any state changes: a cancel
            if not batch:                                   # here leaves no partition half scored
                continue
            recs = sorted(batch, key=_OFFSET)
            part = await self.partitions.get(topic, partition, recs[0].offset, recs)
            if self.partitions.fenced((topic, partition)):  # another worker's now: its records are not ours
                continue
            by_tp[(topic, partition)], parts[(topic, partition)] = recs, part
            for mark, ftp, offset in self._waiting.pop((topic, partition), ()):
                self._teach(part, mark, ftp, offset)
            kind = self._kinds.get(topic)
            if topic == self._otlp_topic and self._spans is not None:  # mapping changes no state either
                spans[(topic, partition)] = self._spans.expand([r for r in recs if r.offset >= part.offset])
            if part.recheck_stored and (kind or (topic, partition) in spans):  # decoding changes no state: done
                values = ([r.value for r in spans[(topic, partition)].records] if (topic, partition) in spans  # here,
                          else [r.value for r in recs if r.offset >= part.offset])                        # used below
                dec = decoded[(topic, partition)] = decode(values, tenant, kind, window, now_s)
                if len(dec[0]):
                    stored[(topic, partition)] = await self.io.call(
                        partial(stored_event_keys, self.store, dec[1]), "events.known",
                        {"topic": topic, "partition": partition, "offset": recs[0].offset})
        for tp, recs in by_tp.items():
            part = parts[tp]
            fresh = recs if recs[0].offset >= part.offset else [r for r in recs if r.offset >= part.offset]
            self.partitions.ack_checkpointed(part, recs)
            if not fresh:
                continue
            expanded = spans.get(tp)
            if part.correlates:  # the risk-evidence topic's: nothing to store
                out = correlate(cast(EvidenceEngine, part.engine), fresh)
            elif expanded is not None and not expanded.records:  # no GenAI span to score
                out = Scored()
            else:
                known = stored.get(tp)
                out = score_events(cast(EventEngine, part.engine),
                                   fresh if expanded is None else expanded.records,  # type: ignore[arg-type]
                                   self._kinds.get(part.topic), tenant, decoded.get(tp), known, window, now_s)
                if out.past_stored:
                    part.recheck_stored = False  # past what the earlier owner stored (it wrote in offset order)
                if known:
                    log.info("events already stored by an earlier owner are not inserted again",
                             extra={"topic": part.topic, "partition": part.partition, "offset": fresh[0].offset,
                                    "events": len(known)})
            if expanded is not None:  # spans that could not be mapped, records that are no OTLP export
                out.dead = expanded.dead + out.dead
            w.dead += [(tp, r, err) for r, err in out.dead]
            w.events += out.events
            w.event_tps += [tp] * len(out.events)
            alerts_out += [(a, tp, offset, principal) for a, offset, principal in out.alerts]
            part.scored(fresh)
            w.touched.append((part, out.events_in, len(out.dead), len(out.alerts)))
        # after a crash, an alert the earlier owner published but did not store is stored, not published again
        # its evidence goes out again with it (re-delivered evidence is ignored by the correlator)
        self.suppressor.refresh()  # the rules file, re-read when it changed (at most once a second)
        for a, tp, offset, principal in alerts_out:
            part = parts[tp]
            if a.alert_id not in part.stored_alerts:
                w.alerts.append((a, tp, offset))
                held = self._withheld(a)
                if held is not None:  # stored with why, never published, routed or counted as risk evidence
                    w.dispositions[a.alert_id] = held
                    continue
                if a.alert_id not in part.published_alerts:
                    w.publish.append(a)
                if principal:
                    w.evidence.append(evidence_of(a, principal))
        w.snapshots = self.partitions.due([part for part, *_ in w.touched])
        w.scored_s = time.perf_counter() - t0
        return w

    def _withheld(self, a: Alert) -> tuple[str, str] | None:
        """(mode, suppressing rule id) of an alert that is stored but not published, or None."""
        mode = self.tuning.mode(a.detector, a.tenant)
        rule = self.suppressor.match(a)
        if rule is None and mode == "enforce":
            return None
        m.ALERTS_WITHHELD.labels("shadow" if mode == "shadow" else "suppressed").inc()
        return (mode, rule or "")

    async def feedback(self, tp: TP, records: Sequence[Record]) -> None:
        """Analysts' marks from the feedback topic's partition ``tp``: each teaches the engine of the partition
        its alert came from (``source_topic``, the same partition number; the group assigns the two together).
        A record is acked once a checkpoint holds what it taught; one that teaches nothing is acked at once, a
        bad one is logged with the field and acked (it never stops the stream)."""
        async with self._lock:
            for r in sorted(records, key=_OFFSET):
                where = {"topic": tp[0], "partition": tp[1], "offset": r.offset}
                try:
                    mark = decode_mark(r.value)
                    if mark.source_topic not in self._kinds:
                        raise EventError("$.source_topic", f"{mark.source_topic!r} is not an event topic of this "
                                         "worker")
                except EventError as exc:
                    m.FEEDBACK.labels("invalid").inc()
                    log.error("feedback record refused", extra={**where, "field": exc.field, "reason": exc.reason})
                    self.partitions.ack(tp[0], tp[1], [r.offset])
                    continue
                target = (mark.source_topic, tp[1])
                part = self.parts.get(target)
                if part is None:  # taken on at its first fetch: applied then, before its records are scored
                    self._waiting.setdefault(target, []).append((mark, tp, r.offset))
                else:
                    self._teach(part, mark, tp, r.offset)

    def _teach(self, part: Part, mark: FeedbackMark, ftp: TP, offset: int) -> None:
        engine = part.engine
        taught = not part.correlates and cast(EventEngine, engine).apply_feedback(mark)
        m.FEEDBACK.labels(mark.status if taught else "no_effect").inc()
        if taught:
            part.feedback.append((ftp[0], ftp[1], offset))
            part.snapshot_at = min(part.snapshot_at, self.partitions.clock() - self.settings.worker_checkpoint_s)
        else:
            self.partitions.ack(ftp[0], ftp[1], [offset])
        log.info("feedback applied" if taught else "feedback taught nothing",
                 extra={"alert_id": mark.alert_id, "status": mark.status, "detector": mark.detector,
                        "topic": part.topic, "partition": part.partition, "marked_at": mark.at})

    async def revoke(self, tps: Sequence[TP]) -> None:
        """Partitions leave this worker: write and checkpoint what they scored, then forget them."""
        # the rebalance waits for this; past half the session timeout (store down, say) this worker gives
        # up its writes instead of finishing them later for partitions it lost. The wait for the scorer's
        # lock is bounded the same way: the batch holding it may be retrying a store call.
        timeout = max(self.settings.worker_session_timeout_s / 2, 1.0)
        try:
            await asyncio.wait_for(self._lock.acquire(), timeout=timeout)
        except TimeoutError:  # the batch still holds its partitions: fail (no later checkpoint), never pull them
            self.io.fail(TimeoutError("a batch was still being scored or queued when partitions were revoked; "
                                      "given up so the new owners re-score it"))
            return
        try:
            await asyncio.wait_for(self.flush(), timeout=timeout)
            snaps = self.partitions.pending_of(tps)
            if snaps:
                await self.partitions.save(snaps)
        except TimeoutError:
            self.io.fail(TimeoutError("writes still pending when partitions were revoked; given up so the new "
                                      "owners re-score them"))
        except Exception as exc:  # no checkpoint past writes that did not happen: the next owner re-scores
            log.error("writes or checkpoint before revoke failed; the next owner re-scores from the last "
                      "stored checkpoint", extra={"error": repr(exc)})
        finally:
            gone = set(tps)  # their unacked feedback records go to the partitions' new owners
            self._waiting = {t: kept for t, marks in self._waiting.items()
                             if (kept := [x for x in marks if x[1] not in gone])}
            self.partitions.forget(tps)
            self._lock.release()

    async def checkpoint_all(self) -> None:
        """Checkpoint every partition with pending records and wait until stored (clean shutdown)."""
        await self.checkpoint_due(min_age_s=0.0)
        await self.flush()

    async def checkpoint_due(self, min_age_s: float | None = None) -> None:
        """Queue checkpoints of partitions whose pending records waited ``min_age_s`` (default: the interval)."""
        async with self._lock:
            snaps = self.partitions.due(list(self.parts.values()), min_age_s)
            if snaps:
                await self.writer.enqueue(Writes(snapshots=snaps))

    async def flush(self) -> None:
        """Wait until every queued batch is published, stored and its checkpoints saved."""
        await self.writer.flush()

    def lag(self) -> int:
        return self.partitions.lag()

    def close(self) -> None:
        self.writer.close()
        self.io.close()
