"""The topic partitions a worker owns: each one's engine, where it stands, and its checkpoints.

A partition is taken on at its first records: its next owner epoch is claimed (:mod:`streams.fencing`; a
partition another worker claims later is *fenced* here: nothing more is scored, written or acked for
it), its newest checkpoint is restored (a correlator's for the risk-evidence topic, an engine's for an
event topic) or, without one, it starts cold. The records below the checkpoint's offset are acked at
once (the state reflects them); the others are scored, and what an earlier owner did with them is looked
up first: the alerts it stored and those it published are neither stored nor published again (see
:mod:`streams.dedup`).

A scored record's offset is *pending* until a checkpoint covers it: a snapshot of the engine's
state is taken every ``worker_checkpoint_s`` (right after the batch it covers was scored), stored
by the writer behind that batch's writes, and only then are its offsets acked for commit. When
partitions are revoked their pending records are checkpointed and they are forgotten.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from functools import partial
from typing import Any

from kafka.errors import KafkaError

from detectors.base import EventEngine, EvidenceEngine
from detectors.correlation import Correlator
from detectors.engine import Engine
from detectors.tuning import Tuning
from schemas.errors import SpyglassError
from streams import metrics as m
from streams.checkpoints import Checkpoint, CheckpointError, CheckpointStore, Mark
from streams.dedup import stored_alert_ids
from streams.fencing import Fenced, OwnerEpochs
from streams.records import TP, Record
from streams.settings import Settings
from streams.sinks.base import Store
from streams.storeio import StoreIO

log = logging.getLogger("spyglass.worker")


class CheckpointOutOfRange(SpyglassError):
    """A partition's checkpoint (or a running engine's position) lies outside the partition's log."""


@dataclass
class Part:
    """One topic partition this worker scores: an event topic's (an engine) or the risk-evidence topic's
    (a correlator)."""

    topic: str
    partition: int
    engine: EventEngine | EvidenceEngine
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
    correlates: bool = field(init=False)  # the engine is a correlator (of the risk-evidence topic)
    mark: Mark | None = None  # the last record the engine has seen (a checkpoint keeps it: see Partitions.get)
    feedback: list[tuple[str, int, int]] = field(default_factory=list)  # feedback records (topic, partition,
    #                                                                     offset) applied, acked after a checkpoint

    def __post_init__(self) -> None:
        self.correlates = isinstance(self.engine, EvidenceEngine)  # once: a protocol check is slow for a hot path

    def scored(self, records: list[Record]) -> None:
        """The engine has seen ``records`` (in offset order): their offsets wait for a checkpoint."""
        last = records[-1]
        self.offset = last.offset + 1
        self.pending += [r.offset for r in records]
        self.mark = Mark.of(last.offset, last.key, last.value)


@dataclass
class Snapshot:
    """A partition's engine state right after its records below ``offset`` were scored."""

    part: Part
    offset: int
    state: bytes
    entities: int
    offsets: list[int]  # acked once the snapshot is stored
    mark: Mark | None = None  # the last record it covers
    taken_at: datetime = field(default_factory=lambda: datetime.now(UTC))  # wall clock: where an alerts scan starts
    feedback: list[tuple[str, int, int]] = field(default_factory=list)  # feedback records it covers, acked with it


ALERT_SCAN_MARGIN_S = 120  # the alerts' producer timestamps come from other hosts' clocks: this much skew is allowed


def alert_scan_start_ms(cp: Checkpoint) -> int:
    """Where (producer time, ms) a new owner's scan of the alerts topic starts: the time the checkpoint's snapshot
    was taken, less a margin for clock skew. Every alert of a record after the checkpoint was raised (and
    published) after that; the save time can be a whole store outage later, so it is used only for a checkpoint
    that did not record when its snapshot was taken."""
    taken = cp.taken_at if cp.taken_at is not None else cp.written_at
    return int(taken.timestamp() - ALERT_SCAN_MARGIN_S) * 1000


def wall_clock_limit_ms(max_future_s: float) -> int:
    """The latest event time (ms) an engine's watermark may reach now: the wall clock plus the allowed skew."""
    return int((time.time() + max_future_s) * 1000)


class Partitions:
    """The partitions this worker owns, by (topic, partition)."""

    def __init__(self, settings: Settings, store: Store, checkpoints: CheckpointStore, io: StoreIO, *,
                 ack: Callable[[str, int, list[int]], None], clock: Callable[[], float] = time.monotonic,
                 published_alerts: Callable[[int], set[str]] | None = None,
                 log_bounds: Callable[[str, int], Awaitable[tuple[int, int]]] | None = None,
                 record_at: Callable[[str, int, int], Mark | None] | None = None,
                 owners: OwnerEpochs | None = None) -> None:
        self.settings = settings
        self.owners = owners  # claims and fences (streams.fencing); None: this worker is not fenced
        self._log_bounds = log_bounds  # a partition's log start and end offsets, asked when it is taken on
        self._record_at = record_at  # the mark of the record at an offset (blocking: on the I/O thread), or None
        self.store = store
        self.checkpoints = checkpoints
        self.io = io
        self.clock = clock
        self.parts: dict[TP, Part] = {}
        self._ack = ack
        self._evidence_topic = settings.topic_risk_evidence
        self._published_alerts = published_alerts
        self._scan_cache: tuple[int, float, set[str]] | None = None
        self.tuning = Tuning()  # the detector configuration every engine runs with (streams.detector_config)

    async def get(self, topic: str, partition: int, first_offset: int,
                  records: Sequence[Record] = ()) -> Part:
        """The partition, restored from its checkpoint (or started cold) when this is its first fetch
        (``records``: that fetch's, in offset order)."""
        tp = (topic, partition)
        part = self.parts.get(tp)
        where = {"topic": topic, "partition": partition, "offset": first_offset}
        if part is not None:
            if 0 <= part.highwater < part.offset:  # the log ends before what this engine saw: recreated under us
                exc = CheckpointOutOfRange(f"{topic}[{partition}]: the log ends at {part.highwater}, before offset "
                                           f"{part.offset} this worker scored up to (topic deleted and recreated?)")
                self.io.fail(exc, where)  # nothing more stored or acked; the restart applies the policy
                raise exc
            return part
        await self._claim(tp, where)
        evidence = topic == self._evidence_topic
        restore = Correlator.from_state if evidence else Engine.from_state
        bounds = await self._log_bounds_of(topic, partition, where)
        at_most = None if bounds is None else bounds[1]
        try:
            cp = await self.io.call(lambda: self.checkpoints.load(topic, partition, restore, at_most=at_most),
                                    "checkpoint.load", where)
        except CheckpointError as exc:
            log.error("checkpoint refused; this partition starts cold", extra={**where, "error": str(exc)})
            cp = None
        if bounds is not None:
            cp = await self._within_log(cp, bounds, where)
        if cp is not None and cp.mark is not None:
            cp = await self._same_log(cp, records, where)
        if cp is None:
            s = self.settings
            fresh = (Correlator(s.correlation_window_hours, s.correlation_horizon_days) if evidence
                     else Engine(s.engine_config(), tuning=self.tuning))
            part = Part(topic, partition, fresh, offset=first_offset, checkpoint_offset=first_offset)
            since = 0
        else:
            if isinstance(cp.engine, Engine):
                # the state bounds follow the settings, not the checkpoint: an operator can tighten them
                cp.engine.config = replace(cp.engine.config, max_entities=self.settings.engine_max_entities,
                                           idle_evict_days=self.settings.engine_idle_evict_days,
                                           learning_hours=self.settings.engine_learning_hours,
                                           alert_budget_per_100k=self.settings.engine_alert_budget_per_100k)
                cp.engine.retune(self.tuning)  # and the detector configuration follows the file
            part = Part(topic, partition, cp.engine, offset=cp.offset, checkpoint_offset=cp.offset)
            since = alert_scan_start_ms(cp)
        # alerts an earlier owner raised from the records about to be re-scored: stored ones, and
        # published ones it crashed before storing. Neither is published or stored again.
        part.stored_alerts = await self.io.call(
            lambda: stored_alert_ids(self.store, topic, partition, part.offset), "alerts.known", where)
        part.published_alerts = await self._published_since(since, where)
        if isinstance(part.engine, Engine) and self.settings.event_max_future_s > 0:
            part.engine.watermark_limit = partial(wall_clock_limit_ms, self.settings.event_max_future_s)
        log.info("partition assigned, " + ("no checkpoint: starting cold" if cp is None else "state restored"),
                 extra={**where, "checkpoint_offset": part.offset, "entities": part.engine.entities(),
                        "alerts_already_stored": len(part.stored_alerts),
                        "alerts_already_published": len(part.published_alerts)})
        self.parts[tp] = part
        return part

    async def _claim(self, tp: TP, where: dict[str, Any]) -> None:
        """Claim the partition's next owner epoch before anything is read or written for it (a racing claim that
        won is found by the first check, before any write: the partition is then fenced here)."""
        owners = self.owners
        if owners is not None:
            where["epoch"] = await self.io.call(lambda: owners.claim(tp), "partition.claim", where)

    def fenced(self, tp: TP) -> bool:
        """Another worker claimed ``tp`` since this one did: nothing more is scored, written or acked for it."""
        return self.owners is not None and self.owners.is_fenced(tp)

    async def _log_bounds_of(self, topic: str, partition: int, where: dict[str, Any]) -> tuple[int, int] | None:
        """The partition's log start and end offsets, or None when this worker cannot ask (no seam given)."""
        if self._log_bounds is None:
            return None
        delay = 0.5
        for _ in range(8):  # the broker may be restarting: about a minute, then the worker fails and restarts
            try:
                return await self._log_bounds(topic, partition)
            except Exception as exc:  # noqa: BLE001 - the consumer's errors (KafkaError, timeouts) vary
                log.error("asking the partition's log start and end failed; retrying",
                          extra={**where, "error": repr(exc), "retry_in_s": delay})
                await asyncio.sleep(delay)
                delay = min(delay * 2, 10.0)
        return await self._log_bounds(topic, partition)

    async def _within_log(self, cp: Checkpoint | None, bounds: tuple[int, int],
                          where: dict[str, Any]) -> Checkpoint | None:
        """The checkpoint if it lies inside the partition's log; else the policy
        (``worker_checkpoint_out_of_range``): ``cold`` (None: the partition starts cold, from the first record
        fetched, which is the log start, the group's committed offset being out of range too) or ``fail``.

        A checkpoint past the log's end means the topic was deleted and recreated (or truncated): its offsets
        name other records. One before the log's start means records were deleted before they were scored.
        Checkpoints past the end written before the one restored are leftovers of a case handled already."""
        start, end = bounds
        topic, partition = where["topic"], where["partition"]
        newest = await self.io.call(lambda: self.checkpoints.newest(topic, partition), "checkpoint.newest", where)
        problem = None
        # written_at has one-second resolution: a tie goes to the checkpoint inside the log (the new log's)
        if newest is not None and newest[0] > end and (cp is None or cp.written_at < newest[1]):
            problem = (f"the checkpoint's offset {newest[0]} is past the log end {end}: the topic was deleted and "
                       "recreated, or truncated; its offsets name other records")
        elif cp is not None and cp.offset < start:
            problem = (f"the checkpoint's offset {cp.offset} is before the log start {start}: records "
                       f"{cp.offset}..{start - 1} were deleted before they were scored")
        if problem is None:
            return cp
        return self._out_of_range(problem, {**where, "log_start": start, "log_end": end})

    def _out_of_range(self, problem: str, where: dict[str, Any]) -> None:
        """A checkpoint that does not fit the partition's log: logged, counted, and the policy applied (None: the
        partition starts cold; ``fail``: the worker fails, raising)."""
        topic, partition = where["topic"], where["partition"]
        m.CHECKPOINTS_OUT_OF_RANGE.labels(topic).inc()
        if self.settings.worker_checkpoint_out_of_range == "fail":
            exc = CheckpointOutOfRange(f"{topic}[{partition}]: {problem} (SPYGLASS_WORKER_CHECKPOINT_OUT_OF_RANGE="
                                       "fail)")
            self.io.fail(exc, where)
            raise exc
        log.error(problem + "; the partition restarts cold from the log start "
                  "(SPYGLASS_WORKER_CHECKPOINT_OUT_OF_RANGE=cold)", extra=where)
        return None

    async def _same_log(self, cp: Checkpoint, records: Sequence[Record], where: dict[str, Any]) -> Checkpoint | None:
        """The checkpoint if the log still holds, at its mark's offset, the record it covered last (looked up in
        the fetch, else read from the broker); else the policy, as for a checkpoint outside the log: a topic
        deleted and recreated that has grown past the old offsets has other records at them."""
        assert cp.mark is not None
        offset, want = cp.mark
        found = next((r for r in records if r.offset == offset), None)
        if found is not None:
            got: Mark | None = Mark.of(found.offset, found.key, found.value)
        elif self._record_at is not None:
            read = self._record_at
            got = await self.io.call(lambda: read(where["topic"], where["partition"], offset),
                                     "checkpoint record check", where, retry=(KafkaError,))
        else:
            return cp
        if got is None or got.sha256 == want:  # None: not readable (deleted meanwhile), nothing to tell
            return cp
        return self._out_of_range(f"the record at offset {offset} is not the one the checkpoint covered: the topic "
                                  "was deleted and recreated; its offsets name other records", where)

    async def _published_since(self, since_ms: int, where: dict[str, Any]) -> set[str]:
        published_alerts = self._published_alerts
        if published_alerts is None:
            return set()
        cached = self._scan_cache
        if cached is not None and cached[0] <= since_ms and self.clock() - cached[1] < 10.0:
            return cached[2]  # partitions assigned together share one scan
        # the scan must finish before re-scoring (no alert twice): retried while the broker is away
        ids = await self.io.call(lambda: published_alerts(since_ms), "alerts topic scan", where, retry=(KafkaError,))
        self._scan_cache = (since_ms, self.clock(), ids)
        return ids

    def ack_checkpointed(self, part: Part, records: list[Record]) -> None:
        """Ack the records (in offset order) the partition's stored checkpoint reflects already."""
        if records[0].offset < part.checkpoint_offset and not self.fenced((part.topic, part.partition)):
            self._ack(part.topic, part.partition, [r.offset for r in records if r.offset < part.checkpoint_offset])

    def snapshot(self, part: Part) -> Snapshot:
        """The partition's state now, with the offsets it covers (no longer pending)."""
        t0 = time.perf_counter()
        snap = Snapshot(part, part.offset, part.engine.state(), part.engine.entities(), part.pending, part.mark,
                        feedback=part.feedback)
        m.STAGE_SECONDS.labels("snapshot").inc(time.perf_counter() - t0)
        part.pending, part.feedback = [], []
        part.snapshot_at = self.clock()
        return snap

    def due(self, parts: Iterable[Part], min_age_s: float | None = None) -> list[Snapshot]:
        """Snapshots of those of ``parts`` whose pending records waited ``min_age_s`` (default: the interval)."""
        age = self.settings.worker_checkpoint_s if min_age_s is None else min_age_s
        now = self.clock()
        return [self.snapshot(p) for p in parts if (p.pending or p.feedback) and now - p.snapshot_at >= age
                and not self.fenced((p.topic, p.partition))]

    def pending_of(self, tps: Sequence[TP]) -> list[Snapshot]:
        """Snapshots of those of ``tps`` that have pending records, whatever their age."""
        parts = [(tp, self.parts.get(tp)) for tp in tps]
        return [self.snapshot(part) for tp, part in parts
                if part is not None and (part.pending or part.feedback) and not self.fenced(tp)]

    async def save(self, snaps: list[Snapshot]) -> None:
        """Store checkpoints (one insert), then ack the records each one covers. Called once every write
        the snapshots cover is done; a failure meanwhile (the other connection) stores or acks nothing."""
        self.io.check()  # writes before these snapshots may be missing: never store them
        first = snaps[0].part
        where = {"topic": first.topic, "partition": first.partition, "offset": snaps[0].offset}
        owners = self.owners
        while True:  # again without the partitions found fenced (another worker's now), if any were
            snaps = [s for s in snaps if not self.fenced((s.part.topic, s.part.partition))]
            if not snaps:
                return

            def save(snaps: list[Snapshot] = snaps) -> list[int]:
                tps = {(s.part.topic, s.part.partition) for s in snaps}
                if owners is not None:  # right before the write, on the connection that writes it
                    owners.check(tps, self.checkpoints.store)
                return self.checkpoints.save_states(
                    [(s.part.topic, s.part.partition, s.offset, s.state, s.entities) for s in snaps],
                    [s.mark for s in snaps], taken_at=[s.taken_at for s in snaps],
                    epochs=[owners.epoch((s.part.topic, s.part.partition)) if owners else 0 for s in snaps])

            try:
                sizes = await self.io.call(save, "checkpoint.save", where)
                break
            except Fenced:
                continue
        self.io.check()  # failed meanwhile: ack nothing more
        now = self.clock()
        for snap, size in zip(snaps, sizes, strict=True):
            part = snap.part
            part.checkpoint_offset = max(part.checkpoint_offset, snap.offset)
            part.checkpoint_at = now
            log.debug("checkpoint", extra={"topic": part.topic, "partition": part.partition, "offset": snap.offset,
                                           "bytes": size, "entities": snap.entities})
            self._ack(part.topic, part.partition, snap.offsets)
            for topic, partition, offset in snap.feedback:
                self._ack(topic, partition, [offset])

    def ack(self, topic: str, partition: int, offsets: list[int]) -> None:
        """Ack records no checkpoint needs to cover (feedback that teaches nothing)."""
        self._ack(topic, partition, offsets)

    def forget(self, tps: Sequence[TP]) -> None:
        for tp in tps:
            self.parts.pop(tp, None)
        if self.owners is not None:
            self.owners.release(tps)

    def lag(self) -> int:
        return sum(max(p.highwater - p.offset, 0) for p in self.parts.values() if p.highwater >= 0)
