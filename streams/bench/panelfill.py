"""A database the dashboards can be tested and timed on: simulated traffic through the real engine into a store.

:func:`fill` simulates labelled traffic (attacks included), runs the detection engine over it in batches as the
worker does, and writes the events (``EventsSink``), the alerts, and — since no worker runs here — realistic
``pipeline_health``, ``engine_checkpoints`` and a few ``alert_status`` rows derived from that same replay
(throughput, lag draining, batch latency, a checkpoint per partition, analysts acknowledging alerts).
:func:`run_panel` expands a panel's macros and variables and runs it.
"""

from __future__ import annotations

import time
import zlib
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import msgspec

from grafana.dashboards_src.kit import PanelSpec, expand

PARTITIONS = 4
TOPICS = ("spyglass.api-usage", "spyglass.data-access", "spyglass.agent-execution")


@dataclass
class Filled:
    start: datetime
    end: datetime
    events: int
    alerts: int
    tenant: str  # a tenant with data, to exercise the variable
    alert_id: str  # the highest-scoring alert, for the investigation dashboard
    seconds: float


def ensure_tables(store: Any) -> None:
    """The storage migrations (schemas/clickhouse/migrations), applied as the worker applies them."""
    from streams.sinks.clickhouse import apply_ddl

    apply_ddl(store)


def fill(store: Any, *, events: int = 60_000, seed: int = 7, days: int = 3, batch: int = 5_000,
         on_progress: Any = None) -> Filled:
    """Simulate ``events`` events, score them with the engine, and store events, alerts and pipeline rows."""
    from detectors.engine import Engine
    from schemas.events import decode
    from schemas.rows import alert_columns
    from streams.simulator.run import Simulation
    from streams.sinks.clickhouse import EventsSink

    t0 = time.perf_counter()
    ensure_tables(store)
    sim = Simulation(seed=seed, events=events, days=days)
    enc = msgspec.json.Encoder()
    engine = Engine()
    sink = EventsSink(store)
    offsets = dict.fromkeys(((t, p) for t in TOPICS for p in range(PARTITIONS)), 0)
    topic_of = dict(zip(("api_usage", "data_access", "agent_execution"), TOPICS, strict=True))
    health: dict[str, list] = {k: [] for k in ("ts", "worker", "topic", "partition", "events", "dead_letters",
                                               "alerts", "lag", "batch_latency_ms", "checkpoint_age_s")}
    n_events = n_alerts = 0
    best: tuple[float, str, str] = (-1.0, "", "")
    per_entity: dict[tuple[str, str], int] = {}
    tenants: dict[str, int] = {}
    first_ts = last_ts = None
    pending: list[tuple[Any, bytes]] = []
    scored: list[tuple[float, str, str, str]] = []

    def flush(pending: list[tuple[Any, bytes]]) -> None:
        nonlocal n_events, n_alerts, best, first_ts, last_ts
        evs = [e for e, _ in pending]
        b0 = time.perf_counter()
        alerts = engine.process(evs)
        latency_ms = (time.perf_counter() - b0) * 1000
        sink.write(pending)
        sources = []
        per_part: dict[tuple[str, int], int] = {}
        for e in evs:
            kind = type(e).__struct_config__.tag
            key = (topic_of[kind], zlib.crc32(e.principal.encode()) % PARTITIONS)
            per_part[key] = per_part.get(key, 0) + 1
            tenants[e.tenant] = tenants.get(e.tenant, 0) + 1
        for a in alerts:
            # cross-stream alerts (risk.incident) are attributed to the first event topic's partition
            key = (topic_of.get(a.kind, TOPICS[0]), zlib.crc32(a.entity.encode()) % PARTITIONS)
            sources.append((key[0], key[1], offsets[key]))
            per_entity[(a.tenant, a.entity)] = per_entity.get((a.tenant, a.entity), 0) + 1
            if a.score > best[0]:
                best = (a.score, a.alert_id, a.tenant)
            scored.append((a.score, a.alert_id, a.tenant, a.entity))
        end = max(e.ts for e in evs).astimezone(UTC).replace(microsecond=0)
        first_ts = first_ts or min(e.ts for e in evs).astimezone(UTC).replace(microsecond=0)
        last_ts = end
        if alerts:
            store.insert("alerts", alert_columns(alerts, end, sources))
        # one health row per partition per flush, stamped in event time so the replay reads as live traffic;
        # lag: what the batch left behind in the partition (the next batch's share), draining to 0 at the end
        for (topic, part), n in sorted(per_part.items()):
            offsets[(topic, part)] += n
            for k, v in (("ts", end), ("worker", f"worker-{part % 2}"), ("topic", topic), ("partition", part),
                         ("events", n), ("dead_letters", 1 if n_events == 0 and part == 0 else 0),
                         ("alerts", sum(1 for s in sources if s[:2] == (topic, part))),
                         ("lag", max(0, events - n_events - len(evs)) // (PARTITIONS * len(TOPICS))),
                         ("batch_latency_ms", round(latency_ms, 3)), ("checkpoint_age_s", 30.0)):
                health[k].append(v)
        n_events += len(evs)
        n_alerts += len(alerts)
        if on_progress:
            on_progress(n_events)

    for chunk in sim.chunks():
        for row in chunk.rows:
            raw = enc.encode(row)
            ev = decode(raw)
            pending.append((ev, raw))
            if len(pending) >= batch:
                flush(pending)
                pending = []
    if pending:
        flush(pending)
    store.insert("pipeline_health", health)
    # the alert to investigate: the highest-scoring one on an entity with other alerts too (else the best)
    siblings = [x for x in scored if per_entity[(x[2], x[3])] > 1]
    if siblings:
        top = max(siblings, key=lambda x: (x[0], x[1]))
        best = (top[0], top[1], top[2])
    assert first_ts is not None and last_ts is not None
    state = engine.state()
    ck: dict[str, list] = {k: [] for k in ("group_id", "topic", "partition", "offset", "state", "digest",
                                           "entities", "bytes", "worker", "written_at")}
    for (topic, part), off in sorted(offsets.items()):
        for k, v in (("group_id", "spyglass-worker"), ("topic", topic), ("partition", part), ("offset", off),
                     ("state", ""), ("digest", ""), ("entities", engine.entities()), ("bytes", len(state)),
                     ("worker", f"worker-{part % 2}"), ("written_at", last_ts)):
            ck[k].append(v)
    store.insert("engine_checkpoints", ck)
    # an analyst acknowledged then resolved the best alert; the status panels read the latest row
    store.insert("alert_status", {
        "alert_id": [best[1], best[1]], "tenant": [best[2]] * 2,
        "status": ["acknowledged", "resolved"], "updated_at": [last_ts, last_ts + timedelta(minutes=5)],
        "updated_by": ["analyst@example.invalid"] * 2, "note": ["looking", "confirmed, key rotated"]})
    return Filled(start=first_ts, end=last_ts + timedelta(minutes=1), events=n_events, alerts=n_alerts,
                  tenant=max(tenants, key=tenants.get), alert_id=best[1], seconds=time.perf_counter() - t0)


def query_named(store: Any, sql: str) -> tuple[list[str], list[tuple]]:
    """Column names and rows of a query, on either store (the Store protocol returns rows only)."""
    from streams.sinks.base import StoreError

    try:
        if hasattr(store, "_session"):  # chDB
            res = store._session.query(sql, "JSONCompact")
            raw = res.bytes() if hasattr(res, "bytes") else bytes(res)
            doc = msgspec.json.decode(raw) if raw.strip() else {"meta": [], "data": []}
            return [m["name"] for m in doc["meta"]], [tuple(r) for r in doc["data"]]
        rows, types = store._client.execute(sql, with_column_types=True)
        return [n for n, _ in types], [tuple(r) for r in rows]
    except Exception as exc:
        raise StoreError(f"{store.url}: {exc}") from None


def run_panel(store: Any, spec: PanelSpec | str, *, start: datetime, end: datetime, variables: dict[str, str],
              interval_s: int = 300) -> tuple[list[str], list[tuple]]:
    """Run a panel's query as Grafana would for this range, interval and variables: (column names, rows)."""
    sql = spec if isinstance(spec, str) else spec.sql
    return query_named(store, expand(sql, start=start, end=end, interval_s=interval_s, variables=variables))
