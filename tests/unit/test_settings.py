from __future__ import annotations

from pathlib import Path

import pytest

from schemas.errors import ConfigError
from streams.settings import Settings, StoreURL


def test_env_prefix_and_defaults(monkeypatch):
    for name in ("SPYGLASS_CLICKHOUSE_URL", "SPYGLASS_TOPIC_API_USAGE"):  # defaults, whatever the shell exports
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("SPYGLASS_KAFKA_BOOTSTRAP", "10.0.0.1:9092")
    monkeypatch.setenv("SPYGLASS_TOPIC_ALERTS", "x.alerts")
    s = Settings()
    assert s.kafka_bootstrap == "10.0.0.1:9092"
    assert s.topic_alerts == "x.alerts"
    assert s.topics()["api_usage"] == "spyglass.api-usage"
    assert s.store().scheme == "chdb"


def test_settings_are_frozen():
    with pytest.raises(Exception, match="frozen"):
        Settings().kafka_port = 1  # type: ignore[misc]


def test_server_url_parses_and_never_shows_the_password(monkeypatch):
    monkeypatch.setenv("SPYGLASS_CLICKHOUSE_URL", "clickhouse://writer:s%40cret@db.internal:9440/spy")
    s = Settings()
    u = s.store()
    assert (u.scheme, u.user, u.host, u.port, u.database) == ("clickhouse", "writer", "db.internal", 9440, "spy")
    assert u.password.get_secret_value() == "s@cret"
    for text in (repr(u), str(u), repr(s), str(s.model_dump())):
        assert "s@cret" not in text and "s%40cret" not in text


def test_chdb_url_paths():
    assert StoreURL.parse("chdb:///var/lib/spy").path == Path("/var/lib/spy")
    assert StoreURL.parse("chdb://.stack/chdb").path == Path(".stack/chdb")


@pytest.mark.parametrize("url", ["postgres://x@y/z", "chdb://", "clickhouse://h:notaport/db", "clickhouse://h/d-b"])
def test_bad_urls_name_the_variable(url):
    with pytest.raises(ConfigError, match="SPYGLASS_CLICKHOUSE_URL"):
        StoreURL.parse(url)
