"""Least privilege on the real ClickHouse 18.16 server: the users.d file the stack writes, enforced."""

from __future__ import annotations

import secrets
import stat
import time
import uuid

import pytest
from pydantic import SecretStr

from schemas.migrate import migrate
from schemas.rows import alert_columns
from schemas.users import users_xml
from streams.settings import Settings, StoreURL
from streams.sinks.base import StoreError
from streams.sinks.clickhouse import EventsSink, NativeStore
from streams.stack.clickhouse import ClickHouseServerService
from tests.unit.storage_contract import CREATED, sample_alerts, sample_events


def _as(settings: Settings, user: str, password: str, database: str) -> StoreURL:
    """The session's server (its TLS, if any) as ``user``."""
    url = settings.store().with_database(database)
    url.user, url.password = user, SecretStr(password)
    return url


def _login(settings: Settings, user: str, password: str, database: str, timeout_s: float = 30.0) -> NativeStore:
    """A store as ``user``; waits for the server to reload users.d (it polls its config files)."""
    url = _as(settings, user, password, database)
    deadline = time.monotonic() + timeout_s
    while True:
        store = NativeStore(url)
        try:
            store.query("SELECT 1")
            return store
        except StoreError:
            store.close()
            if time.monotonic() > deadline:
                raise
            time.sleep(0.5)


def test_the_stack_writes_hashed_users_and_a_private_credentials_file(stack_settings: Settings):
    svc = ClickHouseServerService(stack_settings)
    if not svc.users_d_file.is_file():
        pytest.skip("this stack was started by a version of spyglass without least-privilege users")
    creds = svc.credentials()
    assert stat.S_IMODE(svc.credentials_file.stat().st_mode) == 0o600
    assert stat.S_IMODE(svc.users_d_file.stat().st_mode) == 0o600
    text = svc.users_d_file.read_text()
    for password in creds.values():
        assert len(password) >= 16 and password not in text
    for user, password in creds.items():
        store = _login(stack_settings, user, password, svc.users_database)
        store.close()
    wrong = NativeStore(_as(stack_settings, "spyglass_grafana", "nope", svc.users_database))
    try:
        with pytest.raises(StoreError, match="[Ww]rong password|Authentication failed"):
            wrong.query("SELECT 1")
    finally:
        wrong.close()


@pytest.fixture
def users(stack_settings: Settings):
    """A migrated database with its own writer and Grafana users (users.d written by schemas/users.py)."""
    tag = uuid.uuid4().hex[:8]
    db, writer, grafana = f"ru_{tag}", f"w_{tag}", f"g_{tag}"
    admin = NativeStore(stack_settings.store().with_database(db))
    migrate(admin)
    other = f"ru_other_{tag}"
    admin.execute(f"CREATE DATABASE {other}")
    admin.execute(f"CREATE TABLE {other}.secrets (a String) ENGINE = MergeTree ORDER BY a")
    pw = {writer: secrets.token_hex(16), grafana: secrets.token_hex(16)}
    path = ClickHouseServerService(stack_settings).users_d_file.with_name(f"test_{tag}.xml")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(users_xml(db, pw, writer=writer, grafana=grafana))
    w = _login(stack_settings, writer, pw[writer], db)
    g = _login(stack_settings, grafana, pw[grafana], db)
    try:
        yield admin, w, g, other
    finally:
        w.close()
        g.close()
        path.unlink()
        admin.execute(f"DROP DATABASE IF EXISTS {db}")
        admin.execute(f"DROP DATABASE IF EXISTS {other}")
        admin.close()


def test_native_store_connects_as_a_restricted_user(users):
    """A user restricted to one database (allow_databases) can log in: no database is named at connect."""
    admin, w, _g, _other = users
    store = NativeStore(w.url)
    try:
        assert store.query("SELECT 1") == [(1,)]
    finally:
        store.close()


def _denied(store: NativeStore, sql: str, why: str) -> None:
    with pytest.raises(StoreError, match=why):
        store.execute(sql)


def test_writer_inserts_and_reads_checkpoints_but_no_ddl_and_no_other_database(users):
    admin, w, _g, other = users
    db = admin.database
    EventsSink(w).write(sample_events(3000)[:500])
    w.insert("alerts", alert_columns(sample_alerts(), CREATED))
    w.insert("engine_checkpoints", {"group_id": ["g"], "topic": ["t"], "partition": [0], "offset": [7],
                                    "state": ["blob"], "digest": ["d"], "entities": [1], "bytes": [4],
                                    "worker": ["w1"], "written_at": [CREATED]})
    assert w.query(f"SELECT argMax(offset, offset) FROM {db}.engine_checkpoints WHERE group_id = 'g'") == [(7,)]
    # the views were fed by the writer's inserts
    assert admin.query(f"SELECT sum(events) FROM {db}.events_minute")[0][0] == 500
    assert admin.query(f"SELECT sum(alerts) FROM {db}.entity_risk_minute")[0][0] == 3
    for sql in (f"DROP TABLE {db}.alerts", f"ALTER TABLE {db}.events DELETE WHERE 1",
                f"CREATE TABLE {db}.x (a String) ENGINE = Log", f"TRUNCATE TABLE {db}.events",
                f"ALTER TABLE {db}.events ADD COLUMN y String"):
        _denied(w, sql, "DDL queries are prohibited")
    _denied(w, "SET allow_ddl = 1", "Cannot modify 'allow_ddl'")
    assert migrate(w).applied == []  # a worker may check a current schema without DDL rights
    with pytest.raises(StoreError, match="Access denied to database"):
        w.query(f"SELECT * FROM {other}.secrets")
    # 18.16 has no table-level grants: inside its own database the writer can still read other tables
    assert w.query(f"SELECT count() FROM {db}.alert_status") == [(0,)]


def test_grafana_reads_within_limits_and_cannot_write_alter_or_drop(users):
    admin, w, g, other = users
    db = admin.database
    EventsSink(w).write(sample_events(3000)[:200])
    assert g.query(f"SELECT sum(events) FROM {db}.events_minute")[0][0] == 200
    settings = dict(g.query("SELECT name, value FROM system.settings WHERE name IN "
                            "('readonly', 'max_execution_time', 'max_memory_usage')"))
    assert settings == {"readonly": "1", "max_execution_time": "60", "max_memory_usage": "2000000000"}
    with pytest.raises(StoreError, match="readonly mode"):
        g.insert("alert_status", {"alert_id": ["a"], "tenant": ["t"], "status": ["resolved"],
                                  "updated_at": [CREATED], "updated_by": ["g"], "note": [""]})
    for sql in (f"DROP TABLE {db}.alerts", f"ALTER TABLE {db}.events DELETE WHERE 1",
                f"CREATE TABLE {db}.x (a String) ENGINE = Log", f"ALTER TABLE {db}.events ADD COLUMN y String",
                f"TRUNCATE TABLE {db}.events", "SET max_execution_time = 0", f"DROP DATABASE {db}"):
        _denied(g, sql, "readonly mode")
    with pytest.raises(StoreError, match="Access denied to database"):
        g.query(f"SELECT * FROM {other}.secrets")
    assert admin.query(f"SELECT count() FROM {db}.alert_status") == [(0,)]
