from __future__ import annotations

import re
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


def test_clickhouses_url_verifies_the_server_with_the_given_ca():
    u = StoreURL.parse("clickhouses://writer:pw@db.internal/spy?ca_certs=/etc/spy/ca.pem&certfile=/c.pem&keyfile=/k.pem")
    assert (u.scheme, u.secure, u.port, u.ca_certs) == ("clickhouse", True, 9440, Path("/etc/spy/ca.pem"))
    options = u.driver_options()
    assert options["secure"] is True and options["verify"] is True and options["check_hostname"] is True
    assert (options["ca_certs"], options["certfile"], options["keyfile"]) == ("/etc/spy/ca.pem", "/c.pem", "/k.pem")
    assert "pw" not in repr(u) and repr(u).startswith("StoreURL(clickhouses://writer:***@db.internal:9440/spy?")
    again = StoreURL.parse(u.secret_url())  # what a child process gets back
    assert again.driver_options() == options
    assert u.with_database("other").driver_options() == {**options}
    assert u.with_database("other").database == "other"


def test_secure_true_is_the_same_as_clickhouses_and_plain_stays_plain():
    assert StoreURL.parse("clickhouse://h/db?secure=true").driver_options() == \
        StoreURL.parse("clickhouses://h:9440/db").driver_options()
    plain = StoreURL.parse("clickhouse://h/db").driver_options()
    assert plain == {"host": "h", "port": 9000, "user": "default", "password": ""}


@pytest.mark.parametrize(("url", "named"), [
    ("clickhouse://h/db?ca_certs=/ca.pem", "need TLS"),
    ("clickhouses://h/db?verify=false", "unknown parameter 'verify'"),
    ("clickhouses://h/db?secure=false", "secure=false"),
    ("clickhouse://h/db?secure=maybe", "secure='maybe'"),
    ("clickhouses://h/db?keyfile=/k.pem", "keyfile needs certfile"),
    ("clickhouses://h/db?ca_certs=", "'ca_certs' needs a file path"),
    ("clickhouses://h/db?ca_certs=/a&ca_certs=/b", "given twice"),
])
def test_bad_tls_parameters_name_themselves(url, named):
    with pytest.raises(ConfigError, match=f"SPYGLASS_CLICKHOUSE_URL: .*{re.escape(named)}"):
        StoreURL.parse(url)


def test_the_store_password_comes_from_a_file(tmp_path, monkeypatch):
    secret = tmp_path / "ch.password"
    secret.write_text("f1le-s3cret\n")
    monkeypatch.setenv("SPYGLASS_CLICKHOUSE_URL", "clickhouses://default@127.0.0.1:9440/default?ca_certs=/ca.pem")
    monkeypatch.setenv("SPYGLASS_CLICKHOUSE_PASSWORD_FILE", str(secret))
    s = Settings()
    assert s.store().password.get_secret_value() == "f1le-s3cret"
    assert "f1le-s3cret" not in repr(s) + repr(s.store())
    # a child given the URL with the password and the same file agrees; another password in the URL is refused
    assert Settings(clickhouse_url=s.store().secret_url()).store().password.get_secret_value() == "f1le-s3cret"
    with pytest.raises(ConfigError, match="in one place"):
        Settings(clickhouse_url="clickhouse://default:other@h/db")
    secret.write_text("")
    with pytest.raises(ConfigError, match="SPYGLASS_CLICKHOUSE_PASSWORD_FILE: .* is empty"):
        Settings()
    secret.unlink()
    with pytest.raises(ConfigError, match="SPYGLASS_CLICKHOUSE_PASSWORD_FILE: cannot read"):
        Settings()
