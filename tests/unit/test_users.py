"""The least-privilege users file and the local stack's credentials (no server needed)."""

from __future__ import annotations

import stat
import xml.etree.ElementTree as ET

from pydantic import SecretStr

from schemas.users import GRAFANA, WRITER, password_sha256, users_xml
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
