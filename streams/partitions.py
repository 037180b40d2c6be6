"""The topic partitions a worker owns: each one's engine, where it stands, and its checkpoints.

A partition is taken on at its first records: its newest checkpoint is restored (a correlator's for
the risk-evidence topic, an engine's for an event topic) or, without one, it starts cold. The
records below the checkpoint's offset are acked at once (the state reflects them); the others are
scored, and what an earlier owner did with them is looked up first: the alerts it stored and those
it published are neither stored nor published again (see :mod:`streams.dedup`).

A scored record's offset is *pending* until a checkpoint covers it: a snapshot of the engine's
state is taken every ``worker_checkpoint_s`` (right after the batch it covers was scored), stored
by the writer behind that batch's writes, and only then are its offsets acked for commit. When
partitions are revoked their pending records are checkpointed and they are forgotten.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field, replace
from functools import partial
from typing import Any

from kafka.errors import KafkaError

from detectors.base import EventEngine, EvidenceEngine
from detectors.correlation import Correlator
from detectors.engine import Engine
from streams import metrics as m
from streams.checkpoints import CheckpointError, CheckpointStore
from streams.dedup import stored_alert_ids
from streams.records import TP, Record
from streams.settings import Settings
from streams.sinks.base import Store
from streams.storeio import StoreIO

log = logging.getLogger("spyglass.worker")


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

    def __post_init__(self) -> None:
        self.correlates = isinstance(self.engine, EvidenceEngine)  # once: a protocol check is slow for a hot path

    def scored(self, records: list[Record]) -> None:
        """The engine has seen ``records`` (in offset order): their offsets wait for a checkpoint."""
        self.offset = records[-1].offset + 1
        self.pending += [r.offset for r in records]


@dataclass
class Snapshot:
    """A partition's engine state right after its records below ``offset`` were scored."""

    part: Part
    offset: int
    state: bytes
    entities: int
    offsets: list[int]  # acked once the snapshot is stored


def wall_clock_limit_ms(max_future_s: float) -> int:
    """The latest event time (ms) an engine's watermark may reach now: the wall clock plus the allowed skew."""
    return int((time.time() + max_future_s) * 1000)


class Partitions:
    """The partitions this worker owns, by (topic, partition)."""

    def __init__(self, settings: Settings, store: Store, checkpoints: CheckpointStore, io: StoreIO, *,
                 ack: Callable[[str, int, list[int]], None], clock: Callable[[], float] = time.monotonic,
                 published_alerts: Callable[[int], set[str]] | None = None) -> None:
        self.settings = settings
        self.store = store
        self.checkpoints = checkpoints
        self.io = io
        self.clock = clock
        self.parts: dict[TP, Part] = {}
        self._ack = ack
        self._evidence_topic = settings.topic_risk_evidence
        self._published_alerts = published_alerts
        self._scan_cache: tuple[int, float, set[str]] | None = None

    async def get(self, topic: str, partition: int, first_offset: int) -> Part:
        """The partition, restored from its checkpoint (or started cold) when this is its first fetch."""
        tp = (topic, partition)
        part = self.parts.get(tp)
        if part is not None:
            return part
        where = {"topic": topic, "partition": partition, "offset": first_offset}
        evidence = topic == self._evidence_topic
        restore = Correlator.from_state if evidence else Engine.from_state
        try:
            cp = await self.io.call(lambda: self.checkpoints.load(topic, partition, restore), "checkpoint.load", where)
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
        if records[0].offset < part.checkpoint_offset:
            self._ack(part.topic, part.partition, [r.offset for r in records if r.offset < part.checkpoint_offset])

    def snapshot(self, part: Part) -> Snapshot:
        """The partition's state now, with the offsets it covers (no longer pending)."""
        t0 = time.perf_counter()
        snap = Snapshot(part, part.offset, part.engine.state(), part.engine.entities(), part.pending)
        m.STAGE_SECONDS.labels("snapshot").inc(time.perf_counter() - t0)
        part.pending = []
        part.snapshot_at = self.clock()
        return snap

    def due(self, parts: Iterable[Part], min_age_s: float | None = None) -> list[Snapshot]:
        """Snapshots of those of ``parts`` whose pending records waited ``min_age_s`` (default: the interval)."""
        age = self.settings.worker_checkpoint_s if min_age_s is None else min_age_s
        now = self.clock()
        return [self.snapshot(p) for p in parts if p.pending and now - p.snapshot_at >= age]

    def pending_of(self, tps: Sequence[TP]) -> list[Snapshot]:
        """Snapshots of those of ``tps`` that have pending records, whatever their age."""
        return [self.snapshot(part) for part in (self.parts.get(tp) for tp in tps) if part is not None and part.pending]

    async def save(self, snaps: list[Snapshot]) -> None:
        """Store checkpoints (one insert), then ack the records each one covers. Called once every write
        the snapshots cover is done; a failure meanwhile (the other connection) stores or acks nothing."""
        self.io.check()  # writes before these snapshots may be missing: never store them
        first = snaps[0].part
        where = {"topic": first.topic, "partition": first.partition, "offset": snaps[0].offset}
        sizes = await self.io.call(lambda: self.checkpoints.save_states(
            [(s.part.topic, s.part.partition, s.offset, s.state, s.entities) for s in snaps]),
            "checkpoint.save", where)
        self.io.check()  # failed meanwhile: ack nothing more
        now = self.clock()
        for snap, size in zip(snaps, sizes, strict=True):
            part = snap.part
            part.checkpoint_offset = max(part.checkpoint_offset, snap.offset)
            part.checkpoint_at = now
            log.debug("checkpoint", extra={"topic": part.topic, "partition": part.partition, "offset": snap.offset,
                                           "bytes": size, "entities": snap.entities})
            self._ack(part.topic, part.partition, snap.offsets)

    def forget(self, tps: Sequence[TP]) -> None:
        for tp in tps:
            self.parts.pop(tp, None)

    def lag(self) -> int:
        return sum(max(p.highwater - p.offset, 0) for p in self.parts.values() if p.highwater >= 0)
