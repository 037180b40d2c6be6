"""What the store holds already, so that records scored again are not stored again.

The next owner of a partition re-scores the records after its checkpoint: the alerts they raise
have the ids the first run gave them, and their events are the same events. An earlier owner may
have stored some of them before it died; an events or alerts insert retried after an error may have landed.
These queries ask the store which, so they are not inserted twice (``events`` and ``alerts`` would
dedupe the rows, but the per-minute views over them would count them twice).
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from schemas.block import EventBlock, concat_kinds
from streams.sinks.base import Store
from streams.sinks.clickhouse import sql_string

_SAFE_ID = re.compile(r"[A-Za-z0-9_.:@/+=-]{1,128}")  # ids safe to quote in a query (others: not checked)
EventKey = tuple[str, str, str]  # tenant, entity, event id: what identifies a stored event


def lookable(b: EventBlock) -> EventBlock:
    """The events whose id is safe to quote in a query: the only ones :func:`stored_event_keys` looks up."""
    ids = b.cols["event_id"]
    safe = [i for i, x in enumerate(ids) if _SAFE_ID.fullmatch(x)]
    return b if len(safe) == len(ids) else b.take(safe)


def stored_event_keys(store: Store, blocks: Sequence[EventBlock], chunk: int = 1_000) -> set[EventKey]:
    """The keys of the blocks' events that the ``events`` table holds already. Events whose id is not safe
    to quote are not looked up (so never reported stored): at worst such an event is inserted twice."""
    found: set[EventKey] = set()
    for b in concat_kinds(lookable(b) for b in blocks if len(b)):
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


def without(keys: set[EventKey], b: EventBlock) -> EventBlock:
    """The block's events (with their payloads and scores) whose keys are not in ``keys``."""
    return b.take([i for i, k in enumerate(b.event_keys()) if k not in keys])


def stored_alert_ids(store: Store, topic: str, partition: int, from_offset: int) -> set[str]:
    """Ids of the stored alerts raised from a partition's records at ``from_offset`` or later."""
    rows = store.query(
        f"SELECT alert_id FROM {store.database}.alerts WHERE source_topic = {sql_string(topic)} "  # noqa: S608
        f"AND source_partition = {int(partition)} AND source_offset >= {int(from_offset)}")
    return {r[0] for r in rows}


def stored_alert_ids_among(store: Store, alert_ids: Sequence[str], chunk: int = 1_000) -> set[str]:
    """Those of ``alert_ids`` the ``alerts`` table holds already (one query per ``chunk`` ids): what a failed
    alerts insert stored before its retry. Ids not safe to quote are not looked up (so never reported stored):
    at worst such an alert is inserted twice."""
    safe = [i for i in dict.fromkeys(alert_ids) if _SAFE_ID.fullmatch(i)]
    found: set[str] = set()
    for i in range(0, len(safe), chunk):
        quoted = ", ".join(sql_string(x) for x in safe[i:i + chunk])
        rows = store.query(
            f"SELECT alert_id FROM {store.database}.alerts WHERE alert_id IN ({quoted})")  # noqa: S608 - checked, quoted
        found.update(str(r[0]) for r in rows)
    return found
