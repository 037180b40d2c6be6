"""Migrations, views, retention and triage on the real ClickHouse 18.16 server (and the same on chDB)."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from datetime import UTC, date, datetime
from pathlib import Path

import pytest

from schemas.migrate import load_migrations, migrate, pending, prune
from schemas.rows import Packed, alert_columns, block_columns, block_packed
from streams.settings import Settings, StoreURL
from streams.sinks.base import StoreError
from streams.sinks.clickhouse import ChdbStore, EventsSink, NativeStore
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

PLAIN = [m for m in load_migrations() if not m.requires]  # what 18.16 gets (no roles: no RBAC)
MINUTE_QUERY = (
    "SELECT kind, tenant, toString(minute), sum(events), sum(auth_failures), sum(denied), sum(rows), sum(bytes), "
    "sum(tokens_in), sum(tokens_out), sum(privileged), sum(untrusted), sum(cross_department), "
    "maxMerge(score_max) FROM {db}.events_minute GROUP BY kind, tenant, minute ORDER BY kind, tenant, minute")
RISK_QUERY = (
    "SELECT tenant, entity_type, entity, toString(minute), sum(alerts), sum(critical), round(sum(score_sum), 3), "
    "maxMerge(severity_max), arraySort(groupUniqArrayMerge(detectors)) FROM {db}.entity_risk_minute "
    "GROUP BY tenant, entity_type, entity, minute ORDER BY entity, minute")


@pytest.fixture
def server_store(stack_settings: Settings):
    store = NativeStore(stack_settings.store().with_database(f"st_{uuid.uuid4().hex[:8]}"))
    yield store
    store.execute(f"DROP DATABASE IF EXISTS {store.database}")
    store.close()


def _fill_and_read(store) -> tuple[list, list]:
    EventsSink(store).write(sample_events())
    store.insert("alerts", alert_columns(sample_alerts(), CREATED, [("t", 0, i) for i in range(3)]))
    norm = [tuple(list(x) if isinstance(x, list | tuple) else x for x in r)
            for r in store.query(MINUTE_QUERY.format(db=store.database))]
    risk = [tuple(list(x) if isinstance(x, list | tuple) else x for x in r)
            for r in store.query(RISK_QUERY.format(db=store.database))]
    return norm, risk


def test_migrations_on_the_server_give_the_contract_and_the_views_agree_with_chdb(server_store, tmp_path):
    rep = migrate(server_store, retention={"events": 30, "aggregates": 90})
    assert rep.server.startswith("18.16") and rep.features == frozenset()
    assert rep.versions_applied == [m.version for m in load_migrations() if not m.requires]
    assert [m.name for m, _why in rep.skipped] == ["roles", "writer_reads", "row_policies",
                                                  "partition_owners_grants"]
    assert rep.ttl_changes == []
    assert check_contract(server_store) == []
    assert migrate(server_store).applied == []
    server = _fill_and_read(server_store)

    chdb = ChdbStore(StoreURL.parse(f"chdb://{tmp_path / 'chdb'}"), database="st")
    try:
        migrate(chdb, retention={"events": 30, "aggregates": 90})
        assert check_contract(chdb) == []
        embedded = _fill_and_read(chdb)
    finally:
        chdb.close()
    assert len(server[0]) > 100 and len(server[1]) == 3
    assert server == embedded  # same statements' results on 18.16 and on current ClickHouse


def _measured(store, batches: list[tuple[list, bool]]) -> tuple[list, list]:
    for batch, with_measures in batches:
        write_events(store, batch, with_measures=with_measures)
    return (store.query(MEASURE_QUERY.format(db=store.database)),
            store.query(MINUTE_TOTALS.format(db=store.database)))


def _measured_on_chdb(tmp_path, batch: list) -> tuple[list, list]:
    """:func:`_measured` of ``batch`` written as the worker writes it, on a fresh chDB database."""
    chdb = ChdbStore(StoreURL.parse(f"chdb://{tmp_path / 'chdb'}"), database="st")
    try:
        migrate(chdb)
        return _measured(chdb, [(batch, True)])
    finally:
        chdb.close()


def test_measures_on_the_server_equal_its_defaults_and_chdb(server_store, stack_settings: Settings, tmp_path):
    """Migration 010 on 18.16: the worker's measures, the DEFAULT expressions (for writers that omit them) and chDB
    agree."""
    batch = sample_events() + odd_events()
    migrate(server_store)
    worker = _measured(server_store, [(batch, True)])
    other = NativeStore(stack_settings.store().with_database(f"st_{uuid.uuid4().hex[:8]}"))
    try:
        migrate(other)
        defaults = _measured(other, [(batch, False)])
    finally:
        other.execute(f"DROP DATABASE IF EXISTS {other.database}")
        other.close()
    embedded = _measured_on_chdb(tmp_path, batch)
    assert len(worker[0]) == len(batch) and len(worker[1]) == 3
    assert worker == defaults == embedded


def test_upgrade_to_the_measure_columns_on_the_server(server_store, stack_settings: Settings, tmp_path):
    """A worker refuses a schema it cannot write; events written before, during and after the upgrade all count."""
    batch = sample_events() + odd_events()
    migrate(server_store, target=9)
    assert [m.version for m in pending(server_store)][:1] == [10]
    url = stack_settings.store().with_database(server_store.database).secret_url()
    r = subprocess.run([sys.executable, "-m", "streams.cli", "worker", "--no-migrate"], capture_output=True,
                       text=True, timeout=120, check=False, env={**os.environ, "SPYGLASS_CLICKHOUSE_URL": url,
                                                             "SPYGLASS_CHECKPOINT_KEY": "k" * 32})
    assert r.returncode == 1 and "010_events_measures" in r.stderr and "spyglass db migrate" in r.stderr, r.stderr
    write_events(server_store, batch[:1000], with_measures=False)  # an old worker, old schema
    migrate(server_store)
    assert pending(server_store) == []
    upgraded = _measured(server_store, [(batch[1000:2000], False), (batch[2000:], True)])  # old and new workers
    assert upgraded == _measured_on_chdb(tmp_path, batch)


def test_packed_events_insert_stores_what_the_driver_writers_store(server_store, stack_settings: Settings):
    """The worker's events insert in Native form (block_packed, insert_packed) gives 18.16 the same rows, and the
    per-minute view the same aggregates, as clickhouse-driver's own writers given block_columns; a packed column
    of the wrong type is refused, naming it, and the connection goes on."""
    from tests.unit.test_packed import _blocks

    pytest.importorskip("spyglass_native")
    blocks = _blocks(True)
    other = NativeStore(stack_settings.store().with_database(f"st_{uuid.uuid4().hex[:8]}"))
    try:
        migrate(server_store)
        migrate(other)
        server_store.insert("events", block_columns(blocks, CREATED))
        packed = block_packed(blocks, CREATED)
        assert packed is not None and other.insert_packed("events", packed) == packed.rows
        def read(store: NativeStore, sql: str) -> list[tuple]:  # NaN scores as text: NaN != NaN
            return [tuple("NaN" if x != x else x for x in r) for r in store.query(sql.format(db=store.database))]

        every = "SELECT * FROM {db}.events ORDER BY kind, entity, event_id"
        rows = read(server_store, every)
        assert len(rows) == packed.rows and any(r[7] == "zoë@例え.jp" for r in rows) and any("NaN" in r for r in rows)
        assert read(other, every) == rows
        assert read(other, MINUTE_QUERY) == read(server_store, MINUTE_QUERY)
        wrong = Packed([(n, "UInt32" if n == "ts_ms" else t, d) for n, t, d in packed.columns], packed.rows)
        with pytest.raises(StoreError, match=r"\('ts_ms', 'UInt32'\) packed, the server expects \('ts_ms', 'UInt16'\)"):
            other.insert_packed("events", wrong)
        assert other.query(f"SELECT count() FROM {other.database}.events") == [(packed.rows,)]
    finally:
        other.execute(f"DROP DATABASE IF EXISTS {other.database}")
        other.close()


def _migrate_cli(settings: Settings, url: str) -> subprocess.Popen:
    env = {**os.environ, "SPYGLASS_CLICKHOUSE_URL": url, "SPYGLASS_STACK_DIR": str(settings.stack_dir)}
    return subprocess.Popen([sys.executable, "-m", "streams.cli", "db", "migrate"], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


@pytest.mark.parametrize("round_", range(3))
def test_two_processes_migrating_at_once_end_in_one_schema(stack_settings: Settings, round_: int):
    db = f"race_{uuid.uuid4().hex[:8]}"
    url = stack_settings.store().with_database(db).secret_url()
    procs = [_migrate_cli(stack_settings, url) for _ in range(2)]
    outs = [p.communicate(timeout=120) for p in procs]
    store = NativeStore(StoreURL.parse(url))
    try:
        assert [p.returncode for p in procs] == [0, 0], outs
        applied = sum(int(o.strip().splitlines()[-1].split()[0]) for o, _e in outs)
        assert applied >= len(PLAIN)  # between them they applied everything (maybe both did)
        assert check_contract(store) == []
        versions = store.query(f"SELECT version FROM {db}.schema_migrations FINAL ORDER BY version")
        assert [v for (v,) in versions] == [m.version for m in PLAIN]
        assert migrate(store).applied == []
    finally:
        store.execute(f"DROP DATABASE IF EXISTS {db}")
        store.close()


def test_prune_drops_expired_day_partitions_on_the_server(server_store):
    migrate(server_store)
    days = [datetime(2026, 11, d, 12, 0, tzinfo=UTC) for d in (1, 2, 3)]
    server_store.insert("pipeline_health", {
        "ts": days, "worker": ["w"] * 3, "topic": ["t"] * 3, "partition": [0] * 3, "events": [1] * 3,
        "dead_letters": [0] * 3, "alerts": [0] * 3, "lag": [0] * 3, "batch_latency_ms": [1.0] * 3,
        "checkpoint_age_s": [1.0] * 3})
    dropped = prune(server_store, {"events": 30, "aggregates": 1}, today=date(2026, 11, 3))
    assert [(d.table, d.partition) for d in dropped] == [("pipeline_health", "20261101")]
    left = server_store.query(f"SELECT toString(toDate(ts)) FROM {server_store.database}.pipeline_health ORDER BY ts")
    assert [r[0] for r in left] == ["2026-11-02", "2026-11-03"]
    assert prune(server_store, {"events": 30, "aggregates": 1}, today=date(2026, 11, 3)) == []


def test_set_status_cli_on_the_server(server_store, stack_settings: Settings):
    migrate(server_store)
    from kafka.admin import NewTopic

    from schemas.feedback import decode_mark
    from streams.stack.kafka import admin_client, delete_topics
    from tests.fault.harness import Run, read_topic

    topics = stack_settings.model_copy(update={"topic_feedback": f"fb-{uuid.uuid4().hex[:8]}"})
    server_store.insert("alerts", alert_columns(sample_alerts()[:1], CREATED, [(topics.topic_api_usage, 1, 7)]))
    url = stack_settings.store().with_database(server_store.database).secret_url()
    admin = admin_client(topics.kafka_bootstrap)
    admin.create_topics([NewTopic(topics.topic_feedback, 2, 1)])
    admin.close()
    env = {**os.environ, **topics.child_env(clickhouse_url=url)}
    for status in ("acknowledged", "false_positive"):
        r = subprocess.run([sys.executable, "-m", "streams.cli", "alerts", "set-status", "alert-1", status,
                            "--note", f"n-{status}", "--by", "ana"], env=env, capture_output=True, text=True,
                           check=False)
        assert r.returncode == 0, r.stderr
    r = subprocess.run([sys.executable, "-m", "streams.cli", "alerts", "set-status", "nope", "resolved"], env=env,
                       capture_output=True, text=True, check=False)
    assert r.returncode == 1 and "no alert 'nope'" in r.stderr
    got = server_store.query(f"SELECT tenant, argMax(status, updated_at), argMax(note, updated_at), count() "
                             f"FROM {server_store.database}.alert_status GROUP BY alert_id, tenant")
    # two changes within one second share updated_at: ReplacingMergeTree then keeps the last inserted
    assert len(got) == 1 and got[0][0] == "acme" and got[0][3] == 2
    final = server_store.query(f"SELECT status, note FROM {server_store.database}.alert_status FINAL")
    assert [tuple(r) for r in final] == [("false_positive", "n-false_positive")]
    # the false positive (not the acknowledgement) went to the feedback topic, on the alert's partition
    marks = read_topic(Run(topics, Path()), topics.topic_feedback)
    assert [(m.partition, decode_mark(m.value).status, decode_mark(m.value).entity) for m in marks] == [
        (1, "false_positive", "k1")]
    mark = decode_mark(marks[0].value)
    assert (mark.source_topic, mark.analyst, mark.detector) == (topics.topic_api_usage, "ana", "api.rate_burst")
    delete_topics(topics, [topics.topic_feedback])
