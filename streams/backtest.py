"""Backtest a detector configuration: replay stored events through the engine under the current configuration
and a new one, and say per detector and tenant which alerts the new one adds and removes.

``spyglass replay --config NEW --from-store --since 7d`` drives it. Events are read back from the store's
``events`` table (their raw payloads, in event-time order, a day at a time) and scored by two engines that
differ only in their :class:`~detectors.tuning.Tuning`. An alert counts when it would reach on-call: above
``info`` and in ``enforce`` mode; a shadow alert is counted apart. Alert ids are deterministic, so the same
episode has the same id under both configurations, and the difference is a set difference.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from detectors.engine import Engine
from detectors.tuning import Tuning
from schemas.alerts import Alert
from schemas.events import Event, decode

DAY_S = 86_400


def newest_event_s(store: Any) -> int | None:
    """Epoch seconds of the newest stored event, or None when there is none."""
    rows = store.query(f"SELECT toUInt32(max(ts)), count() FROM {store.database}.events")  # noqa: S608
    return int(rows[0][0]) if rows and int(rows[0][1]) else None


def stored_events(store: Any, since_s: int, until_s: int, chunk_s: int = DAY_S) -> Iterator[list[Event]]:
    """The stored events from ``since_s`` to ``until_s`` (inclusive), decoded, in event-time order, a chunk at a
    time (bounded memory). A payload that no longer decodes is skipped (it was valid when stored)."""
    db = store.database
    start = since_s
    while start <= until_s:
        end = min(start + chunk_s, until_s + 1)
        rows = store.query(f"SELECT payload, tenant FROM {db}.events FINAL "  # noqa: S608
                           f"WHERE ts >= toDateTime({int(start)}) AND ts < toDateTime({int(end)}) "
                           f"ORDER BY ts, ts_ms, event_id")
        events = [e for e in (decode(p, default_tenant=str(t)) for p, t in rows) if isinstance(e, Event)]
        if events:
            yield events
        start = end


@dataclass
class Side:
    """One configuration's alerts: on-call ones by id, and how many were shadow."""

    alerts: dict[str, Alert] = field(default_factory=dict)
    shadow: Counter = field(default_factory=Counter)  # (detector, tenant) -> shadow alerts above info


@dataclass
class Row:
    detector: str
    tenant: str
    current: int
    new: int
    added: list[str]
    removed: list[str]
    shadow_current: int
    shadow_new: int


def run_side(engine: Engine, alerts: list[Alert], side: Side) -> None:
    for a in alerts:
        if a.severity == "info":
            continue
        if engine.tuning.mode(a.detector, a.tenant) == "shadow":
            side.shadow[(a.detector, a.tenant)] += 1
        else:
            side.alerts[a.alert_id] = a


def backtest(batches: Iterator[list[Event]], engine_config: Any, current: Tuning, new: Tuning,
             on_batch: Callable[[int], None] | None = None,
             new_alerts: list[Alert] | None = None) -> tuple[list[Row], int]:
    """Rows per (detector, tenant) that differ or alert under either configuration, and the events replayed.

    ``new_alerts`` collects every alert the new configuration raised (for ``--format ocsf``)."""
    engines = (Engine(engine_config, tuning=current), Engine(engine_config, tuning=new))
    sides = (Side(), Side())
    n = 0
    for batch in batches:
        n += len(batch)
        for engine, side, keep in zip(engines, sides, (None, new_alerts), strict=True):
            alerts = engine.process(batch)
            run_side(engine, alerts, side)
            if keep is not None:
                keep.extend(alerts)
        if on_batch:
            on_batch(len(batch))
    cur, nxt = sides
    keys = {(a.detector, a.tenant) for s in sides for a in s.alerts.values()} | set(cur.shadow) | set(nxt.shadow)
    rows = []
    for det, tenant in sorted(keys):
        c = {i for i, a in cur.alerts.items() if (a.detector, a.tenant) == (det, tenant)}
        w = {i for i, a in nxt.alerts.items() if (a.detector, a.tenant) == (det, tenant)}
        rows.append(Row(det, tenant, len(c), len(w), sorted(w - c), sorted(c - w), cur.shadow[(det, tenant)],
                        nxt.shadow[(det, tenant)]))
    return rows, n
