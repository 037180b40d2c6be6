"""The storage contract (notes shared by the worker, storage and dashboards) as data the tests check.

Unit tests check it on chDB; integration tests check it on the ClickHouse 18.16 server.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime

from schemas.alerts import Alert, Evidence, Feature
from schemas.rows import FIELDS

# table -> [(column, type)] exactly as the contract fixes them (extra columns are allowed).
CONTRACT: dict[str, list[tuple[str, str]]] = {
    "events": [
        ("event_id", "String"), ("kind", "String"), ("ts", "DateTime"), ("ts_ms", "UInt16"), ("tenant", "String"),
        ("source", "String"), ("entity", "String"), ("principal", "String"), ("payload", "String"),
        ("ingested_at", "DateTime"), ("score", "Float32"), ("flags", "UInt8"), ("rows", "UInt64"),
        ("bytes", "UInt64"), ("request_bytes", "UInt64"), ("response_bytes", "UInt64"), ("tokens_in", "UInt64"),
        ("tokens_out", "UInt64"), *((name, "String") for name in FIELDS[:-1]), ("scopes_granted", "Array(String)"),
    ],
    "alerts": [
        ("alert_id", "String"), ("tenant", "String"), ("detector", "String"), ("kind", "String"),
        ("entity_type", "String"), ("entity", "String"), ("severity", "String"), ("score", "Float32"),
        ("first_seen", "DateTime"), ("last_seen", "DateTime"), ("title", "String"), ("explanation", "String"),
        ("evidence", "String"), ("feature_names", "Array(String)"), ("feature_values", "Array(Float64)"),
        ("feature_baselines", "Array(Float64)"), ("event_ids", "Array(String)"), ("tags", "Array(String)"),
        ("source_topic", "String"), ("source_partition", "UInt16"), ("source_offset", "UInt64"),
        ("created_at", "DateTime"), ("mode", "String"), ("suppressed_by", "String"),
    ],
    "engine_checkpoints": [
        ("group_id", "String"), ("topic", "String"), ("partition", "UInt16"), ("offset", "UInt64"),
        ("state", "String"), ("digest", "String"), ("entities", "UInt32"), ("bytes", "UInt64"),
        ("worker", "String"), ("written_at", "DateTime"), ("epoch", "UInt64"),
    ],
    "partition_owners": [
        ("group_id", "String"), ("topic", "String"), ("partition", "UInt16"), ("epoch", "UInt64"),
        ("claim_id", "String"), ("worker", "String"), ("claimed_at", "DateTime"),
    ],
    "pipeline_health": [
        ("ts", "DateTime"), ("worker", "String"), ("topic", "String"), ("partition", "Int32"), ("events", "UInt64"),
        ("dead_letters", "UInt64"), ("alerts", "UInt64"), ("lag", "Int64"), ("batch_latency_ms", "Float32"),
        ("checkpoint_age_s", "Float32"),
    ],
    "alert_status": [
        ("alert_id", "String"), ("tenant", "String"), ("status", "String"), ("updated_at", "DateTime"),
        ("updated_by", "String"), ("note", "String"),
    ],
    "schema_migrations": [("version", "UInt32"), ("name", "String"), ("checksum", "String"),
                          ("applied_at", "DateTime")],
}
ENGINES = {
    "events": "ReplacingMergeTree", "alerts": "ReplacingMergeTree", "engine_checkpoints": "ReplacingMergeTree",
    "pipeline_health": "MergeTree", "alert_status": "ReplacingMergeTree", "events_minute": "SummingMergeTree",
    "entity_risk_minute": "SummingMergeTree", "events_minute_mv": "MaterializedView",
    "entity_risk_minute_mv": "MaterializedView", "schema_migrations": "ReplacingMergeTree",
    "partition_owners": "MergeTree",
}


def check_contract(store) -> list[str]:
    """Differences between ``store``'s database and the contract ([] when it conforms)."""
    db = store.database
    problems = []
    cols: dict[str, dict[str, str]] = {}
    for table, name, typ in store.query(
            f"SELECT table, name, type FROM system.columns WHERE database = '{db}'"):
        cols.setdefault(table, {})[name] = typ
    for table, want in CONTRACT.items():
        have = cols.get(table, {})
        for name, typ in want:
            if have.get(name) != typ:
                problems.append(f"{table}.{name}: want {typ}, have {have.get(name)}")
    engines = dict(store.query(f"SELECT name, engine FROM system.tables WHERE database = '{db}'"))
    for table, engine in ENGINES.items():
        if engines.get(table) != engine:
            problems.append(f"{table}: engine {engines.get(table)}, want {engine}")
    return problems


def sample_alerts() -> list[Alert]:
    """Three alerts on two entities, one feature without a baseline."""
    def one(i: int, entity: str, severity: str, score: float, detector: str) -> Alert:
        return Alert(
            alert_id=f"alert-{i}", tenant="acme", detector=detector, kind="api_usage", entity_type="api_key",
            entity=entity, severity=severity, score=score, first_seen=f"2026-11-02T10:0{i}:30.500Z",
            last_seen=f"2026-11-02T10:0{i}:59Z", title=f"t{i}", explanation=f"Key {entity} did thing {i}.",
            evidence=Evidence(features=[Feature(name="rate", value=10.0 + i, baseline=2.0),
                                        Feature(name="new_ip", value=1.0)], event_ids=[f"e{i}a", f"e{i}b"]),
            tags=["ATLAS:AML.T0024", "OWASP:LLM10"])
    return [one(1, "k1", "high", 0.8, "api.rate_burst"), one(2, "k1", "critical", 0.95, "api.new_client"),
            one(3, "k2", "low", 0.3, "api.rate_burst")]


CREATED = datetime(2026, 11, 2, 11, 0, 0, tzinfo=UTC)


# the columns a writer may leave to their DEFAULT expressions (migrations 010 and 012)
MEASURE_QUERY = ("SELECT event_id, kind, flags, rows, bytes, request_bytes, response_bytes, tokens_in, tokens_out, "
                 f"{', '.join(FIELDS)} FROM {{db}}.events ORDER BY event_id, kind")
MINUTE_TOTALS = (
    "SELECT kind, sum(events), sum(auth_failures), sum(denied), sum(sensitive), sum(cross_department), "
    "sum(privileged), sum(bypassed), sum(untrusted), sum(agent_failures), sum(rows), sum(bytes), sum(request_bytes), "
    "sum(response_bytes), sum(tokens_in), sum(tokens_out) FROM {db}.events_minute GROUP BY kind ORDER BY kind")


def write_events(store, batch: list[tuple[object, bytes]], *, with_measures: bool) -> None:
    """Insert ``batch`` into ``events`` as the worker does, or as an older writer that omits the measures."""
    from schemas.rows import event_columns

    store.insert("events", event_columns([e for e, _ in batch], [r for _, r in batch], [0.0] * len(batch), CREATED,
                                         measures=with_measures))


def sample_events(n: int = 3000, seed: int = 9, days: int = 1) -> list[tuple[object, bytes]]:
    """(decoded event, raw JSON) pairs from the simulator; raw JSON has spaces after colons (json.dumps)."""
    from schemas.events import decode
    from streams.simulator.run import Simulation

    sim = Simulation(seed=seed, events=n, days=days, instances=1, scenarios=["credential_stuffing"])
    rows = [r for chunk in sim.chunks() for r in chunk.rows]
    return [(decode(json.dumps(r).encode()), json.dumps(r).encode()) for r in rows]



def odd_events() -> list[tuple[object, bytes]]:
    """Events for every ``flags`` bit and for absent optional fields, half with spaces after colons, half without."""
    from schemas.events import decode

    base = {json.loads(raw)["kind"]: json.loads(raw) for _e, raw in sample_events(n=600)}
    assert set(base) == {"api_usage", "data_access", "agent_execution"}
    changes = [
        ("api_usage", {"auth_result": "expired"}, ("tokens_in", "tokens_out", "request_bytes")),
        ("api_usage", {"auth_result": "ok", "tokens_in": 7, "response_bytes": 2**40}, ()),
        ("data_access", {"granted": False, "sensitivity": "restricted", "principal_department": "hr",
                         "dataset_owner_department": "finance"}, ("rows", "bytes")),
        ("data_access", {"granted": True, "sensitivity": "confidential", "principal_department": "hr",
                         "dataset_owner_department": "hr", "rows": 5, "bytes": 0}, ()),
        ("agent_execution", {"privilege": "admin", "approval": "bypassed", "untrusted_input": True,
                             "outcome": "blocked", "tokens_in": 3}, ("tokens_out",)),
        ("agent_execution", {"privilege": "read", "approval": "approved", "outcome": "success"},
         ("untrusted_input", "tokens_in", "tokens_out")),
    ]
    out = []
    for i, (kind, set_, drop) in enumerate(changes):
        for compact in (False, True):
            r = {k: v for k, v in base[kind].items() if k not in drop} | set_
            r["event_id"] = f"odd-{i}-{int(compact)}"
            raw = json.dumps(r, separators=(",", ":") if compact else None).encode()
            out.append((decode(raw), raw))
    return out
