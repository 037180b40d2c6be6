"""The least-privilege users (file, SQL statements, ``db users``) and the local stack's credentials."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
import xml.etree.ElementTree as ET

import pytest
from pydantic import SecretStr

from schemas.users import (
    GRAFANA,
    RBAC_USERS,
    TENANT_GRAFANA,
    TENANT_TABLES,
    WRITER,
    password_sha256,
    rbac_user_statements,
    sql_string,
    tenant_grafana_statements,
    users_xml,
)
from streams.settings import Settings
from streams.stack.clickhouse import ClickHouseServerService


def test_users_xml_has_hashes_limits_and_one_database():
    text = users_xml("spy", {WRITER: "w-secret-1", GRAFANA: "g-secret-2"})
    assert "w-secret-1" not in text and "g-secret-2" not in text
    root = ET.fromstring(text)
    assert root.findtext(f"users/{WRITER}/password_sha256_hex") == password_sha256("w-secret-1")
    assert root.findtext(f"users/{GRAFANA}/allow_databases/database") == "spy"
    assert root.findtext(f"profiles/{WRITER}/allow_ddl") == "0"
    g = root.find(f"profiles/{GRAFANA}")
    assert g.findtext("readonly") == "1"
    assert int(g.findtext("max_execution_time")) > 0 and int(g.findtext("max_memory_usage")) > 0


def test_stack_generates_private_credentials_once_and_honours_the_environment(tmp_path):
    svc = ClickHouseServerService(Settings(stack_dir=tmp_path))
    svc.write_users()
    first = svc.credentials()
    assert stat.S_IMODE(svc.credentials_file.stat().st_mode) == 0o600
    assert stat.S_IMODE(svc.users_d_file.stat().st_mode) == 0o600
    assert svc.users_database == "spyglass"
    assert ClickHouseServerService(Settings(stack_dir=tmp_path)).credentials() == first  # reused, not regenerated
    given = ClickHouseServerService(Settings(stack_dir=tmp_path, clickhouse_grafana_password=SecretStr("from-env-123"),
                                             clickhouse_url="clickhouse://default@127.0.0.1:9000/spy2"))
    given.write_users()
    assert given.credentials()[GRAFANA] == "from-env-123" and given.credentials()[WRITER] == first[WRITER]
    text = given.users_d_file.read_text()
    assert password_sha256("from-env-123") in text and "from-env-123" not in text
    assert "from-env-123" not in svc.credentials_file.read_text()
    assert given.users_database == "spy2"


def test_rbac_user_statements_carry_hashes_and_parse_on_current_clickhouse(tmp_path):
    """chDB's user may not manage access, so this checks what can be checked here: the current parser
    accepts every statement, each user gets its role, and no plain password is in them."""
    from streams.settings import StoreURL
    from streams.sinks.clickhouse import ChdbStore

    passwords = {WRITER: "w-secret-1", GRAFANA: "g-secret-2"}
    stmts = rbac_user_statements("spyglass", passwords)
    text = "\n".join(stmts)
    assert "w-secret-1" not in text and "g-secret-2" not in text
    assert password_sha256("w-secret-1") in text and password_sha256("g-secret-2") in text
    for user, role in RBAC_USERS.items():
        assert f"GRANT {role} TO {user}" in stmts and f"ALTER USER {user} DEFAULT ROLE {role}" in stmts
    store = ChdbStore(StoreURL.parse(f"chdb://{tmp_path / 'chdb'}"), database="spyglass")
    try:
        for sql in stmts:
            store.query(f"EXPLAIN AST {sql}")
    finally:
        store.close()


def _db_users(tmp_path, **env: str) -> subprocess.CompletedProcess:
    base = {k: v for k, v in os.environ.items() if not k.startswith("SPYGLASS_")}
    return subprocess.run([sys.executable, "-m", "streams.cli", "db", "users"], capture_output=True, text=True,
                          timeout=120, check=False,
                          env={**base, "SPYGLASS_CLICKHOUSE_URL": f"chdb://{tmp_path / 'chdb'}", **env})


def test_db_users_wants_both_passwords_from_the_environment(tmp_path):
    r = _db_users(tmp_path, SPYGLASS_CLICKHOUSE_GRAFANA_PASSWORD="g-secret-2")
    assert r.returncode == 1 and "SPYGLASS_CLICKHOUSE_WRITER_PASSWORD" in r.stderr, r.stderr
    assert "GRAFANA_PASSWORD" not in r.stderr and "g-secret-2" not in r.stderr + r.stdout


def test_db_users_refuses_a_store_without_access_management(tmp_path):
    r = _db_users(tmp_path, SPYGLASS_CLICKHOUSE_WRITER_PASSWORD="w-secret-1",
                  SPYGLASS_CLICKHOUSE_GRAFANA_PASSWORD="g-secret-2")
    assert r.returncode == 1 and "no SQL access control" in r.stderr, r.stderr
    assert "secret" not in r.stderr + r.stdout


def test_tenant_grafana_user_gets_a_row_policy_per_table_and_parses_on_current_clickhouse(tmp_path):
    """The statements a per-tenant Grafana user needs (migration 013's role and policies on RBAC servers); chDB's
    user may not run them, so: the parser accepts each, a hostile tenant stays one literal, no plain password."""
    from streams.settings import StoreURL
    from streams.sinks.clickhouse import ChdbStore

    hostile = "acme\\' OR 1 = 1 OR tenant = '"
    stmts = tenant_grafana_statements("spyglass", hostile, "grafana_acme", "t-secret-3")
    assert "t-secret-3" not in "\n".join(stmts) and password_sha256("t-secret-3") in stmts[0]
    assert f"GRANT {TENANT_GRAFANA} TO grafana_acme" in stmts
    policies = [s for s in stmts if s.startswith("CREATE ROW POLICY")]
    assert [p.split(" ON ")[1].split()[0] for p in policies] == [f"spyglass.{t}" for t in TENANT_TABLES]
    with pytest.raises(ValueError, match="not a valid ClickHouse name"):
        tenant_grafana_statements("spyglass", "acme", "grafana acme", "pw")
    store = ChdbStore(StoreURL.parse(f"chdb://{tmp_path / 'chdb'}"), database="spyglass")
    try:
        for sql in stmts:
            store.query(f"EXPLAIN AST {sql}")
        for tenant in (hostile, "a\\", "'", "zoë\n例え", "\\\\'\\"):
            assert store.query(f"SELECT {sql_string(tenant)}") == [(tenant,)]
    finally:
        store.close()
