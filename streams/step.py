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
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime
from itertools import repeat
from operator import attrgetter

import msgspec
import numpy as np

from detectors.base import EventEngine, EvidenceEngine
from detectors.correlation import decode_evidence
from schemas.alerts import Alert
from schemas.block import EventBlock, blocks_of, decode_block, ts_us
from schemas.errors import EventError
from schemas.events import Event, decode_as
from streams import metrics as m
from streams.dedup import EventKey, lookable, without
from streams.records import Record

_VALUE, _EVENT_ID = attrgetter("value"), attrgetter("event_id")

# a topic's decoded records: what the engine scores (a block, or structs of several kinds), the blocks to
# store, the indices of the records decoded, [(index, error)] of the others
Decoded = tuple[EventBlock | list[Event], list[EventBlock], list[int], list[tuple[int, EventError]]]


# the store's DateTime range (UInt32 seconds), in µs: event times outside it cannot be stored
STORE_MIN_US, STORE_END_US = 0, 2**32 * 1_000_000


@dataclass(frozen=True)
class TimeWindow:
    """The event times the worker takes at the edge: inside the store's ``DateTime`` range, at most
    ``max_future_s`` ahead of the wall clock and at most ``max_age_days`` behind it (0: that bound is off).

    An event dated far ahead would move its engine's watermark, from which idle entities are evicted, and so
    wipe a partition's state; events spread over many past days would make the store a partition each.
    """

    max_future_s: float = 3600.0
    max_age_days: float = 0.0

    def bounds(self, now_s: float) -> tuple[int, int]:
        """[lo, hi) in µs since the epoch for the wall clock ``now_s``."""
        lo, hi = STORE_MIN_US, STORE_END_US
        if self.max_age_days > 0:
            lo = max(lo, int((now_s - self.max_age_days * 86_400) * 1_000_000))
        if self.max_future_s > 0:
            hi = min(hi, int((now_s + self.max_future_s) * 1_000_000) + 1)
        return lo, hi

    def reason(self, ts_us: int, now_s: float) -> str:
        """Why an event time outside :meth:`bounds` is refused."""
        when = _iso_us(ts_us)
        if ts_us < STORE_MIN_US or ts_us >= STORE_END_US:
            return f"event time {when} is outside the store's DateTime range (1970-01-01 to 2106-02-07)"
        if ts_us >= self.bounds(now_s)[1]:
            return (f"event time {when} is more than {self.max_future_s:g} s ahead of the wall clock "
                    "(SPYGLASS_EVENT_MAX_FUTURE_S)")
        return f"event time {when} is more than {self.max_age_days:g} days old (SPYGLASS_EVENT_MAX_AGE_DAYS)"


def _iso_us(ts_us: int) -> str:
    try:
        return datetime.fromtimestamp(ts_us / 1_000_000, UTC).isoformat().replace("+00:00", "Z")
    except (OverflowError, ValueError, OSError):
        return f"{ts_us} µs"


def _within(block: EventBlock, ok: list[int], bad: list[tuple[int, EventError]], window: TimeWindow,
            now_s: float) -> tuple[EventBlock, list[int], list[tuple[int, EventError]]]:
    """The block without its events outside the window (one vectorised test over the ts column); those
    become errors naming ``$.ts``, in the order of ``bad`` (by record index)."""
    ts = np.asarray(block.cols["ts"])
    lo, hi = window.bounds(now_s)
    out = (ts < lo) | (ts >= hi)
    if not out.any():
        return block, ok, bad
    rows = np.flatnonzero(out).tolist()
    refused = [(ok[r], EventError("$.ts", window.reason(int(ts[r]), now_s))) for r in rows]
    keep = np.flatnonzero(~out)
    return block.take(keep), [ok[r] for r in keep.tolist()], sorted(bad + refused, key=lambda e: e[0])


def decode(values: list[bytes | None], tenant: str, kind: str | None, window: TimeWindow | None = None,
           now_s: float | None = None) -> Decoded:
    """Decode a batch of one topic's records: straight into a block's columns when the topic has one kind.

    ``window``: event times it refuses (errors naming ``$.ts``) as of the wall clock ``now_s`` (default: now).
    """
    now = datetime.now(UTC).timestamp() if now_s is None else now_s
    if kind is not None:
        block, ok, bad = decode_block(values, kind, tenant)
        if window is not None and len(block):
            block, ok, bad = _within(block, ok, bad, window, now)
        return block, [block], ok, bad
    decs = [decode_as(v, tenant) for v in values]
    ok = [i for i, ev in enumerate(decs) if not isinstance(ev, EventError)]
    bad = [(i, ev) for i, ev in enumerate(decs) if isinstance(ev, EventError)]
    if window is not None and ok:
        lo, hi = window.bounds(now)
        for i in ok:
            ts_us = block_ts_us(decs[i])  # type: ignore[arg-type]
            if not lo <= ts_us < hi:
                decs[i] = EventError("$.ts", window.reason(ts_us, now))
        ok = [i for i in ok if not isinstance(decs[i], EventError)]
        bad = [(i, ev) for i, ev in enumerate(decs) if isinstance(ev, EventError)]
    events: list[Event] = [decs[i] for i in ok]  # type: ignore[misc]
    blocks = [b for b, _ in blocks_of(events, [values[i] for i in ok], tenant)] if events else []  # type: ignore[misc]
    return events, blocks, ok, bad


def block_ts_us(ev: Event) -> int:
    """An event's time in µs since the epoch, as a block's ``ts`` column holds it."""
    return ts_us(ev.ts)


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
                 decoded: Decoded | None = None, stored: set[EventKey] | None = None,
                 window: TimeWindow | None = None, now_s: float | None = None) -> Scored:
    """Records of an event topic through its engine.

    ``decoded``: the records decoded already (by :func:`decode`); ``stored``: the keys of those of their
    events an earlier owner stored (looked up in the store), scored again (the state needs them) but
    not returned to be stored again; ``window``: the event times taken (see :class:`TimeWindow`) as of the wall
    clock ``now_s`` (default: now).
    """
    out = Scored()
    m.ENGINE_BATCH.observe(len(records))
    t_dec = time.perf_counter()
    events, blocks, ok, bad = decoded or decode(list(map(_VALUE, records)), tenant, kind, window, now_s)
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
    # risk evidence (for risk.cross_kind) from alerts above info only: a learning period's, a control that
    # worked, or a finding the false-alarm budget kept at info is not evidence against anyone
    out.alerts = [(a, by_id.get(a.evidence.event_ids[0], records[0].offset),
                   None if a.kind == "cross" or a.severity == "info" else principals.get(a.alert_id)) for a in alerts]
    if kind:
        m.EVENTS_IN.labels(kind).inc(out.events_in)
    elif out.events_in and not isinstance(events, EventBlock):  # a topic of several kinds (OTLP spans): by kind
        for k, n in Counter(type(e).__struct_config__.tag for e in events).items():
            m.EVENTS_IN.labels(k).inc(n)
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
