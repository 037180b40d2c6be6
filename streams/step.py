"""One partition's new records through its engine: the scoring step, without I/O.

In: the records of one topic partition that its engine has not seen, in offset order. Out
(:class:`Scored`): the dead letters (records that do not decode, evidence the correlator refuses),
the alerts with the offset of the record each came from and the principal its risk evidence names,
and the events to store with the score each got. The engine learns the records (its state
changes, as it must); nothing is published, stored or acked here: the scorer
(:mod:`streams.scoring`) decides what of it is written, and the writer (:mod:`streams.writer`)
writes it. Stage times and counts go to the metrics.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from itertools import repeat
from operator import attrgetter

import msgspec

from detectors.base import EventEngine, EvidenceEngine
from detectors.correlation import decode_evidence
from schemas.alerts import Alert
from schemas.block import EventBlock, blocks_of, decode_block
from schemas.errors import EventError
from schemas.events import Event, decode_as
from streams import metrics as m
from streams.dedup import EventKey, lookable, without
from streams.records import Record

_VALUE, _EVENT_ID = attrgetter("value"), attrgetter("event_id")

# a topic's decoded records: what the engine scores (a block, or structs of several kinds), the blocks to
# store, the indices of the records decoded, [(index, error)] of the others
Decoded = tuple[EventBlock | list[Event], list[EventBlock], list[int], list[tuple[int, EventError]]]


def decode(values: list[bytes | None], tenant: str, kind: str | None) -> Decoded:
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


@dataclass
class Scored:
    """What one partition's new records gave."""

    dead: list[tuple[Record, EventError]] = field(default_factory=list)  # the record, why it was refused
    # each alert, the offset of its record, the principal its risk evidence names (None: no evidence)
    alerts: list[tuple[Alert, int, str | None]] = field(default_factory=list)
    events: list[EventBlock] = field(default_factory=list)  # to store: the events, their raw JSON and scores
    events_in: int = 0  # events decoded and scored
    past_stored: bool = False  # an event looked up was not stored by an earlier owner (see Part.recheck_stored)


def score_events(engine: EventEngine, records: list[Record], kind: str | None, tenant: str,
                 decoded: Decoded | None = None, stored: set[EventKey] | None = None) -> Scored:
    """Records of an event topic through its engine.

    ``decoded``: the records decoded already (by :func:`decode`); ``stored``: the keys of those of their
    events an earlier owner stored (looked up in the store), scored again (the state needs them) but
    not returned to be stored again.
    """
    out = Scored()
    m.ENGINE_BATCH.observe(len(records))
    t_dec = time.perf_counter()
    events, blocks, ok, bad = decoded or decode(list(map(_VALUE, records)), tenant, kind)
    out.dead = [(records[i], err) for i, err in bad]
    good = records if len(ok) == len(records) else [records[i] for i in ok]
    out.events_in = len(ok)
    t_eng = time.perf_counter()
    evicted = dict(engine.evicted)
    alerts = engine.process(events) if out.events_in else []
    m.count_evictions(evicted, engine.evicted)
    t_end = time.perf_counter()
    m.STAGE_SECONDS.labels("decode").inc(t_eng - t_dec)
    m.STAGE_SECONDS.labels("score").inc(t_end - t_eng)
    score_of, zero = engine.scores.get, repeat(0.0)
    for b in blocks:
        b.scores = list(map(score_of, b.cols["event_id"], zero))
    if stored is not None:
        looked_up = {k for b in blocks for k in lookable(b).event_keys()}
        out.past_stored = not looked_up <= stored
        if stored:
            blocks = [without(stored, b) for b in blocks]
    out.events = [b for b in blocks if len(b)]
    if alerts:  # an alert's record: its first evidence event's (the first record with that id)
        by_id: dict[str, int] = {}
        for eid, r in zip(_event_ids(events), good, strict=True):
            by_id.setdefault(eid, r.offset)
    principals = engine.alert_principals
    out.alerts = [(a, by_id.get(a.evidence.event_ids[0], records[0].offset),
                   None if a.kind == "cross" else principals.get(a.alert_id)) for a in alerts]
    if kind:
        m.EVENTS_IN.labels(kind).inc(out.events_in)
    return out


def correlate(correlator: EvidenceEngine, records: list[Record]) -> Scored:
    """Records of the risk-evidence topic through its correlator (they are not events: none to store)."""
    out = Scored()
    t0 = time.perf_counter()
    evicted = dict(correlator.evicted)
    for r in records:
        try:
            ev = decode_evidence(r.value)
        except (msgspec.DecodeError, msgspec.ValidationError) as exc:
            out.dead.append((r, EventError("$", f"not a risk evidence record: {exc}")))
            continue
        try:
            a = correlator.add(ev)
        except (ValueError, OverflowError) as exc:  # never a poison pill: the record is refused, the stream goes on
            out.dead.append((r, EventError("$", f"risk evidence refused: {exc}")))
            continue
        if a is not None:
            out.alerts.append((a, r.offset, None))
    m.count_evictions(evicted, correlator.evicted)
    m.STAGE_SECONDS.labels("correlate").inc(time.perf_counter() - t0)
    return out
