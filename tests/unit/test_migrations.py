"""Migrations, tables, views and row mapping on the embedded engine (chDB, current ClickHouse)."""

from __future__ import annotations

import json
import math
import uuid
from collections import Counter
from datetime import UTC, date, datetime

import pytest

from schemas.errors import SpyglassError
from schemas.migrate import (
    FEATURE_SINCE,
    Migration,
    MigrationError,
    apply_retention,
    load_migrations,
    migrate,
    pending,
    prune,
)
from schemas.rows import ALERT_COLUMNS, alert_columns, alert_status_columns, event_columns
from streams.settings import StoreURL
from streams.sinks.clickhouse import ChdbStore, EventsSink, apply_ddl, ddl_statements
from tests.unit.storage_contract import (
    CREATED,
    MEASURE_QUERY,
    MINUTE_TOTALS,
    check_contract,
    odd_events,
    sample_alerts,
    sample_events,
    write_events,
)

ALL = frozenset(FEATURE_SINCE)


@pytest.fixture(scope="module")
def session_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("chdb")


@pytest.fixture(scope="module")
def chdb_session(session_dir):
    store = ChdbStore(StoreURL.parse(f"chdb://{session_dir}"), database="bootstrap")
    yield store
    store.close()


@pytest.fixture
def store(chdb_session):
    """A fresh database in the module's chDB session (one session per process)."""
    chdb_session.database = f"u_{uuid.uuid4().hex[:8]}"
    yield chdb_session
    chdb_session.execute(f"DROP DATABASE IF EXISTS {chdb_session.database}")


def test_migration_files_are_numbered_and_render_on_both_servers():
    ms = load_migrations()
    assert [m.version for m in ms] == list(range(1, len(ms) + 1))
    for m in ms:
        plain = m.statements("spy")
        modern = m.statements("spy", ALL)
        assert plain and len(plain) == len(modern)
        for sql in plain + modern:
            assert "{" not in sql and "}" not in sql, sql
        for sql in plain:  # nothing 18.16 cannot parse
            assert "CODEC" not in sql and "TTL" not in sql and "DateTime64" not in sql
            assert "ADD COLUMN IF NOT EXISTS" not in sql
    assert any("CODEC(" in s for m in ms for s in m.statements("spy", ALL))
    assert ddl_statements("spy")[0][0] == "001_events.sql"


def test_role_statements_parse_on_current_clickhouse(store):
    """chDB's user may not run them, but the parser of the current release must accept every one."""
    roles = [m for m in load_migrations() if "rbac" in m.requires]
    assert [m.name for m in roles] == ["roles", "writer_reads", "row_policies", "partition_owners_grants"]
    stmts = roles[0].statements("spy", ALL)
    assert any(s.startswith("CREATE ROLE") for s in stmts) and any("SETTINGS PROFILE" in s for s in stmts)
    policies = roles[2].statements("spy", ALL)
    assert sum(s.startswith("CREATE ROW POLICY IF NOT EXISTS spyglass_every_tenant") for s in policies) == 5
    for sql in stmts + roles[1].statements("spy", ALL) + policies:
        store.query(f"EXPLAIN AST {sql}")
    with pytest.raises(SpyglassError, match="Syntax error"):
        store.query("EXPLAIN AST GRANT INSERT ON spy.events TO")


def test_unknown_placeholder_is_an_error():
    with pytest.raises(MigrationError, match="unknown placeholder"):
        Migration(99, "bad", "CREATE TABLE {db}.x (a String {codec_nope}) ENGINE = Log").statements("spy")


def test_migrate_creates_the_contract_and_is_idempotent(store):
    first = migrate(store)
    assert first.versions_applied == [m.version for m in load_migrations() if not m.requires]
    # chDB's user may not manage access
    assert [m.name for m, _why in first.skipped] == ["roles", "writer_reads", "row_policies",
                                                    "partition_owners_grants"]
    assert {"codecs", "ttl"} <= first.features and "rbac" not in first.features  # chDB: no access management
    assert check_contract(store) == []
    again = migrate(store)
    assert again.applied == [] and len(again.already) == len(first.applied)
    assert apply_ddl(store) == 0  # the old entry point runs the same migrations
    recorded = store.query(f"SELECT version, checksum FROM {store.database}.schema_migrations FINAL ORDER BY version")
    assert [(v, c) for v, c in recorded] == [(m.version, m.checksum) for m in load_migrations() if not m.requires]
    codec = store.query(f"SELECT compression_codec FROM system.columns WHERE database = '{store.database}' "
                        f"AND table = 'events' AND name = 'payload'")[0][0]
    assert "ZSTD" in codec


def test_an_edited_applied_migration_is_refused(store):
    ms = load_migrations()[:1]
    migrate(store, migrations=ms)
    edited = [Migration(ms[0].version, ms[0].name, ms[0].text + "\n-- edited\n")]
    with pytest.raises(MigrationError, match="must not be edited"):
        migrate(store, migrations=edited)


def test_target_stops_early_and_the_rest_applies_later(store):
    assert migrate(store, target=1).versions_applied == [1]
    cols = {r[0] for r in store.query(
        f"SELECT name FROM system.columns WHERE database = '{store.database}' AND table = 'events'")}
    assert "score" not in cols
    assert migrate(store).versions_applied[0] == 2
    assert check_contract(store) == []


def test_migration_that_needs_a_missing_feature_is_skipped_not_recorded(store):
    ms = [*load_migrations()[:1], Migration(50, "needs_x", "-- requires: rbac\nCREATE ROLE IF NOT EXISTS x")]
    rep = migrate(store, migrations=ms)
    assert [m.version for m, _ in rep.skipped] == [50] and "lacks rbac" in rep.skipped[0][1]
    assert 50 not in {r[0] for r in store.query(f"SELECT version FROM {store.database}.schema_migrations")}


def _expected_minute_totals(batch):
    want: dict[str, Counter] = {}
    for _ev, raw in batch:
        r = json.loads(raw)
        c = want.setdefault(r["kind"], Counter())
        c["events"] += 1
        if r["kind"] == "api_usage":
            c["auth_failures"] += r["auth_result"] != "ok"
        if r["kind"] == "data_access":
            c["denied"] += not r["granted"]
            c["cross_department"] += r["principal_department"] != r["dataset_owner_department"]
            c["sensitive"] += r["sensitivity"] in ("confidential", "restricted")
            c["rows"] += r.get("rows") or 0
            c["bytes"] += r.get("bytes") or 0
        if r["kind"] == "agent_execution":
            c["privileged"] += r["privilege"] == "admin"
            c["bypassed"] += r["approval"] == "bypassed"
            c["untrusted"] += bool(r.get("untrusted_input"))
            c["agent_failures"] += r["outcome"] != "success"
        c["tokens_in"] += r.get("tokens_in") or 0
        c["tokens_out"] += r.get("tokens_out") or 0
    return want


MINUTE_COLS = ("events", "auth_failures", "denied", "cross_department", "sensitive", "rows", "bytes", "privileged",
               "bypassed", "untrusted", "agent_failures", "tokens_in", "tokens_out")


def test_events_minute_view_matches_the_raw_events(store):
    migrate(store)
    batch = sample_events()
    sink = EventsSink(store)
    sink.write(batch[:700])
    sink.write(batch[700:])
    db = store.database
    rows = store.query(f"SELECT kind, {', '.join(f'sum({c})' for c in MINUTE_COLS)}, "
                       f"maxMerge(score_max), quantilesMerge(0.5, 0.9, 0.99)(score_quantiles) "
                       f"FROM {db}.events_minute GROUP BY kind ORDER BY kind")
    want = _expected_minute_totals(batch)
    assert [r[0] for r in rows] == sorted(want)
    for r in rows:
        got = dict(zip(MINUTE_COLS, r[1:1 + len(MINUTE_COLS)], strict=True))
        assert got == {c: want[r[0]][c] for c in MINUTE_COLS}, r[0]
        assert r[-2] == 0 and list(r[-1]) == [0, 0, 0]  # EventsSink writes no score: default 0
    assert sum(want["data_access"].values()) > 0 and want["api_usage"]["auth_failures"] > 0
    per_minute = store.query(f"SELECT count() FROM (SELECT minute FROM {db}.events_minute GROUP BY minute)")[0][0]
    assert per_minute == len({json.loads(raw)["ts"][:16] for _e, raw in batch})


def test_measures_the_worker_writes_equal_the_ones_the_server_computes_without_them(store):
    """Migrations 010 and 012: the worker's ``event_measures`` and ``event_fields``, and the DEFAULT expressions
    for writers that omit them (equal on payloads without nested decoys)."""
    batch = sample_events() + odd_events()
    flags = [f for f in event_columns([e for e, _ in batch], [r for _, r in batch], [0.0] * len(batch),
                                      CREATED)["flags"]]
    assert all(any(f >> bit & 1 for f in flags) for bit in range(8))  # the sample sets every bit
    migrate(store)
    got = {}
    for with_measures in (True, False):
        store.database = f"{store.database}_{int(with_measures)}"
        try:
            migrate(store)
            write_events(store, batch, with_measures=with_measures)
            got[with_measures] = (store.query(MEASURE_QUERY.format(db=store.database)),
                                  store.query(MINUTE_TOTALS.format(db=store.database)))
        finally:
            store.execute(f"DROP DATABASE IF EXISTS {store.database}")
            store.database = store.database.rsplit("_", 1)[0]
    assert len(got[True][0]) == len(batch) and len(got[True][1]) == 3
    assert got[True] == got[False]


def test_a_schema_upgraded_under_old_writers_keeps_every_count(store):
    """Events written before migration 010 (no measure columns), and after it by old and new writers alike,
    all reach the per-minute view with the same counts as the raw events give."""
    batch = sample_events() + odd_events()
    migrate(store, target=9)
    assert [m.version for m in pending(store)][:1] == [10]
    write_events(store, batch[:1000], with_measures=False)  # an old worker, old schema
    migrate(store)
    assert pending(store) == []
    write_events(store, batch[1000:2000], with_measures=False)  # an old worker, new schema
    write_events(store, batch[2000:], with_measures=True)  # a new worker
    db = store.database
    rows = store.query(f"SELECT kind, {', '.join(f'sum({c})' for c in MINUTE_COLS)} "
                       f"FROM {db}.events_minute GROUP BY kind ORDER BY kind")
    want = _expected_minute_totals(batch)
    for r in rows:
        assert dict(zip(MINUTE_COLS, r[1:], strict=True)) == {c: want[r[0]][c] for c in MINUTE_COLS}, r[0]
    assert [r[0] for r in rows] == sorted(want)
    before = store.query(f"SELECT sum(flags > 0), sum(tokens_in) FROM {db}.events WHERE event_id IN "
                         f"({', '.join(repr(json.loads(r)['event_id']) for _, r in batch[:1000])})")[0]
    assert before[0] > 0 and before[1] > 0  # rows stored before the upgrade read their measures from payload


def test_alerts_round_trip_and_feed_entity_risk(store):
    migrate(store)
    alerts = sample_alerts()
    sources = [("spyglass.api-usage", 2, 100 + i) for i in range(3)]
    store.insert("alerts", alert_columns(alerts, CREATED, sources))
    store.insert("alerts", alert_columns(alerts[:1], CREATED, sources[:1]))  # a retried insert
    db = store.database
    got = store.query(f"SELECT alert_id, toString(first_seen), feature_names, feature_values, feature_baselines, "
                      f"event_ids, source_offset, evidence FROM {db}.alerts FINAL ORDER BY alert_id")
    assert [g[0] for g in got] == ["alert-1", "alert-2", "alert-3"]
    a1 = got[0]
    assert a1[1] == "2026-11-02 10:01:30"
    assert list(a1[2]) == ["rate", "new_ip"] and list(a1[3]) == [11.0, 1.0]
    assert a1[4][0] == 2.0 and (a1[4][1] is None or math.isnan(float(a1[4][1])))  # JSON renders NaN as null
    assert list(a1[5]) == ["e1a", "e1b"] and a1[6] == 100
    assert json.loads(a1[7])["event_ids"] == ["e1a", "e1b"]
    risk = store.query(
        f"SELECT entity, sum(alerts), sum(critical), round(sum(score_sum), 3), maxMerge(severity_max), "
        f"arraySort(groupUniqArrayMerge(detectors)) FROM {db}.entity_risk_minute GROUP BY entity ORDER BY entity")
    # the view counts inserts: the retried alert-1 is counted twice (documented limit)
    assert [tuple(r[:5]) for r in risk] == [("k1", 3, 1, 2.55, 4), ("k2", 1, 0, 0.3, 1)]
    assert list(risk[0][5]) == ["api.new_client", "api.rate_burst"]


def test_alert_columns_maps_the_contract():
    alerts = sample_alerts()
    cols = alert_columns(alerts, CREATED)
    assert tuple(cols) == ALERT_COLUMNS
    assert all(len(v) == 3 for v in cols.values())
    assert cols["first_seen"][0] == datetime(2026, 11, 2, 10, 1, 30, tzinfo=UTC)
    assert cols["source_topic"] == ["", "", ""] and cols["source_offset"] == [0, 0, 0]
    assert math.isnan(cols["feature_baselines"][0][1])
    with pytest.raises(SpyglassError, match="3 alerts but 1 sources"):
        alert_columns(alerts, CREATED, [("t", 0, 0)])
    with pytest.raises(SpyglassError, match="naive"):
        alert_columns(alerts, datetime(2026, 1, 1))  # noqa: DTZ001


def test_alert_status_latest_wins(store):
    migrate(store)
    t0 = datetime(2026, 11, 2, 12, 0, tzinfo=UTC)
    store.insert("alert_status", alert_status_columns("alert-1", "acme", "acknowledged", updated_at=t0,
                                                     updated_by="ana"))
    store.insert("alert_status", alert_status_columns("alert-1", "acme", "resolved", updated_at=t0.replace(hour=13),
                                                     updated_by="bo", note="rotated key"))
    got = store.query(f"SELECT argMax(status, updated_at), argMax(note, updated_at) FROM {store.database}.alert_status "
                      f"WHERE alert_id = 'alert-1'")
    assert [tuple(g) for g in got] == [("resolved", "rotated key")]
    with pytest.raises(SpyglassError, match="not one of"):
        alert_status_columns("a", "t", "closed", updated_at=t0, updated_by="x")


def test_retention_sets_and_updates_ttl(store):
    rep = migrate(store, retention={"events": 30, "aggregates": 90})
    assert "events: TTL ts + toIntervalDay(30)" in rep.ttl_changes and len(rep.ttl_changes) == 4
    assert migrate(store, retention={"events": 30, "aggregates": 90}).ttl_changes == []
    assert apply_retention(store, {"events": 7}) == ["events: TTL ts + toIntervalDay(7)"]
    engine = store.query(f"SELECT engine_full FROM system.tables WHERE database = '{store.database}' "
                         f"AND name = 'events'")[0][0]
    assert "TTL ts + toIntervalDay(7)" in engine
    with pytest.raises(MigrationError, match="at least 1 day"):
        apply_retention(store, {"events": 0})


def test_prune_drops_only_expired_day_partitions(store):
    migrate(store)
    batch = sample_events(1500, days=2)
    EventsSink(store).write(batch)
    days = sorted({json.loads(raw)["ts"][:10].replace("-", "") for _e, raw in batch})
    assert len(days) >= 2
    first = date(int(days[0][:4]), int(days[0][4:6]), int(days[0][6:]))
    # keep 1 day as of the day after the first: only the first day's partitions are fully expired
    today = date.fromordinal(first.toordinal() + 2)
    planned = prune(store, {"events": 1, "aggregates": 1}, today=today, dry_run=True)
    assert {(d.table, d.partition) for d in planned} == {("events", days[0]), ("events_minute", days[0])}
    assert store.query(f"SELECT count() FROM {store.database}.events")[0][0] == len(batch)  # dry run
    prune(store, {"events": 1, "aggregates": 1}, today=today)
    left = store.query(f"SELECT DISTINCT toYYYYMMDD(ts) FROM {store.database}.events ORDER BY 1")
    assert [str(r[0]) for r in left] == days[1:]
    assert prune(store, {"events": 1, "aggregates": 1}, today=today) == []


def test_stored_event_keys_match_tenant_entity_and_id_not_the_id_alone(store):
    """The worker's re-delivery check (``Part.recheck_stored``): which events of a batch are stored already."""
    from datetime import UTC, datetime

    from schemas.block import blocks_of
    from schemas.events import decode
    from schemas.rows import event_columns
    from streams.dedup import stored_event_keys

    apply_ddl(store)

    def ev(event_id: str, tenant: str, principal: str, ts: str = "2026-11-21T10:00:05.750Z"):
        raw = (f'{{"kind":"data_access","event_id":"{event_id}","tenant":"{tenant}","ts":"{ts}",'
               f'"principal":"{principal}","principal_department":"hr","dataset":"d","dataset_owner_department":"hr",'
               f'"sensitivity":"internal","operation":"read","granted":true}}').encode()
        e = decode(raw)
        assert not hasattr(e, "field"), e
        return e, raw

    stored = [ev("e-1", "acme", "ana"), ev("e-2", "acme", "ana", "2026-11-21T10:00:00Z")]
    store.insert("events", event_columns([e for e, _ in stored], [raw for _, raw in stored], [0.0, 0.0],
                                         datetime.now(UTC)))
    batch = stored + [
        ev("e-1", "globex", "ana"),  # the same id from another tenant: a different event
        ev("e-1", "acme", "bob"),  # ... or another entity
        ev("e-3", "acme", "ana"),  # not stored
        ev("it's", "acme", "ana"),  # not safe to quote: never looked up
    ]
    [(block, _)] = blocks_of([e for e, _ in batch], [r for _, r in batch])
    assert stored_event_keys(store, [block], chunk=2) == {("acme", "ana", "e-1"), ("acme", "ana", "e-2")}
