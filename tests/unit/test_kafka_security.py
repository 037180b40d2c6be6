"""Kafka security settings: validation, secrets kept out of reprs and logs, each library's client configuration."""

from __future__ import annotations

import logging
import ssl
from pathlib import Path

import faust
import pytest
from pydantic import SecretStr

from schemas.errors import ConfigError
from streams.kafka_security import kafka_client_config
from streams.settings import Settings
from streams.stack.kafka_secure import EMITTER_USER, WORKER_USER, pipeline_acls

SECRET = "s3cret-Kafka-pw-7f1e"
KEY_SECRET = "key-pw-9d2c-secret"


@pytest.fixture(autouse=True)
def _no_kafka_env(monkeypatch):
    import os

    for name in list(os.environ):
        if name.startswith("SPYGLASS_KAFKA_"):
            monkeypatch.delenv(name)


def test_plaintext_is_the_default_and_needs_nothing():
    s = Settings()
    assert s.kafka_security_protocol == "PLAINTEXT"
    assert s.kafka_ssl_check_hostname is True
    assert kafka_client_config(s) == {"security_protocol": "PLAINTEXT"}
    assert kafka_client_config(s, "aiokafka") == {"security_protocol": "PLAINTEXT"}
    assert kafka_client_config(s, "faust") == {}


def test_sasl_settings_come_from_the_environment_and_a_password_file(monkeypatch, tmp_path: Path):
    pw = tmp_path / "pw"
    pw.write_text(SECRET + "\n")
    monkeypatch.setenv("SPYGLASS_KAFKA_SECURITY_PROTOCOL", "SASL_PLAINTEXT")
    monkeypatch.setenv("SPYGLASS_KAFKA_SASL_MECHANISM", "SCRAM-SHA-256")
    monkeypatch.setenv("SPYGLASS_KAFKA_SASL_USERNAME", "worker")
    monkeypatch.setenv("SPYGLASS_KAFKA_SASL_PASSWORD_FILE", str(pw))
    s = Settings()
    assert s.kafka_sasl_secret() == SecretStr(SECRET)
    assert kafka_client_config(s) == {"security_protocol": "SASL_PLAINTEXT", "sasl_mechanism": "SCRAM-SHA-256",
                                      "sasl_plain_username": "worker", "sasl_plain_password": SECRET}
    creds = kafka_client_config(s, "faust")["broker_credentials"]
    assert isinstance(creds, faust.SASLCredentials)
    assert (creds.protocol.value, creds.mechanism.value, creds.username, creds.password) == (
        "SASL_PLAINTEXT", "SCRAM-SHA-256", "worker", SECRET)


@pytest.mark.parametrize(("env", "names"), [
    ({"SPYGLASS_KAFKA_SECURITY_PROTOCOL": "SASL_SSL", "SPYGLASS_KAFKA_SASL_PASSWORD": "x"},
     "SPYGLASS_KAFKA_SASL_USERNAME"),
    ({"SPYGLASS_KAFKA_SECURITY_PROTOCOL": "SASL_SSL", "SPYGLASS_KAFKA_SASL_USERNAME": "u"},
     "SPYGLASS_KAFKA_SASL_PASSWORD"),
    ({"SPYGLASS_KAFKA_SECURITY_PROTOCOL": "SASL_SSL", "SPYGLASS_KAFKA_SASL_USERNAME": "u",
      "SPYGLASS_KAFKA_SASL_PASSWORD": "x", "SPYGLASS_KAFKA_SASL_PASSWORD_FILE": "/etc/hostname"},
     "SPYGLASS_KAFKA_SASL_PASSWORD_FILE"),
    ({"SPYGLASS_KAFKA_SECURITY_PROTOCOL": "SASL_SSL", "SPYGLASS_KAFKA_SASL_USERNAME": "u",
      "SPYGLASS_KAFKA_SASL_PASSWORD_FILE": "/nonexistent/pw"}, "cannot read /nonexistent/pw"),
    ({"SPYGLASS_KAFKA_SSL_KEY_FILE": "/k.pem"}, "SPYGLASS_KAFKA_SSL_CERT_FILE"),
])
def test_incomplete_security_settings_name_the_variable(monkeypatch, env: dict, names: str):
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    with pytest.raises(ConfigError, match=names):
        Settings()


def test_unknown_protocols_and_mechanisms_are_refused(monkeypatch):
    from pydantic import ValidationError

    monkeypatch.setenv("SPYGLASS_KAFKA_SECURITY_PROTOCOL", "SASL_TLS")
    with pytest.raises(ValidationError, match="kafka_security_protocol"):
        Settings()
    monkeypatch.setenv("SPYGLASS_KAFKA_SECURITY_PROTOCOL", "SASL_SSL")
    monkeypatch.setenv("SPYGLASS_KAFKA_SASL_MECHANISM", "GSSAPI")
    with pytest.raises(ValidationError, match="kafka_sasl_mechanism"):
        Settings()


def test_no_settings_dump_or_log_line_shows_a_secret(monkeypatch, caplog):
    monkeypatch.setenv("SPYGLASS_KAFKA_SECURITY_PROTOCOL", "SASL_SSL")
    monkeypatch.setenv("SPYGLASS_KAFKA_SASL_USERNAME", "worker")
    monkeypatch.setenv("SPYGLASS_KAFKA_SASL_PASSWORD", SECRET)
    monkeypatch.setenv("SPYGLASS_KAFKA_SSL_KEY_PASSWORD", KEY_SECRET)
    monkeypatch.setenv("SPYGLASS_KAFKA_SSL_CHECK_HOSTNAME", "false")
    s = Settings()
    assert s.kafka_sasl_secret().get_secret_value() == SECRET  # it is there, only hidden
    assert s.kafka_ssl_check_hostname is False
    with caplog.at_level(logging.INFO):
        logging.getLogger("spyglass.test").info("settings %s %r", s, s, extra={"settings": s.model_dump()})
    creds = kafka_client_config(s, "faust")["broker_credentials"]
    shown = [repr(s), str(s), s.model_dump_json(), str(s.model_dump()), caplog.text,
             str([r.__dict__ for r in caplog.records]), repr(creds)]
    for text in shown:
        assert SECRET not in text and KEY_SECRET not in text
    # what a child process gets, it gets in its environment (never in its arguments)
    env = s.child_env()
    assert env["SPYGLASS_KAFKA_SASL_PASSWORD"] == SECRET
    assert env["SPYGLASS_KAFKA_SECURITY_PROTOCOL"] == "SASL_SSL"


def test_tls_uses_one_verifying_context_for_every_library(tmp_path: Path):
    s = Settings(kafka_security_protocol="SASL_SSL", kafka_sasl_username="u", kafka_sasl_password=SECRET)
    for library in ("kafka-python", "aiokafka"):
        config = kafka_client_config(s, library)
        context = config["ssl_context"]
        assert config["security_protocol"] == "SASL_SSL"
        assert context.verify_mode == ssl.CERT_REQUIRED and context.check_hostname
        assert context.minimum_version >= ssl.TLSVersion.TLSv1_2
    creds = kafka_client_config(s, "faust")["broker_credentials"]
    assert creds.protocol.value == "SASL_SSL" and creds.ssl_context.verify_mode == ssl.CERT_REQUIRED
    ssl_only = Settings(kafka_security_protocol="SSL", kafka_ssl_check_hostname=False)
    config = kafka_client_config(ssl_only)
    assert set(config) == {"security_protocol", "ssl_context"}
    assert config["ssl_context"].verify_mode == ssl.CERT_REQUIRED and not config["ssl_context"].check_hostname
    assert isinstance(kafka_client_config(ssl_only, "faust")["broker_credentials"], faust.SSLCredentials)
    with pytest.raises(FileNotFoundError):  # a CA file that is not there is an error, not the system's CAs
        kafka_client_config(ssl_only.model_copy(update={"kafka_ssl_ca_file": tmp_path / "missing.pem"}))


def test_the_acls_let_only_the_worker_write_the_evidence_topic():
    from kafka.admin import ACLOperation, ResourceType

    s = Settings()
    acls = pipeline_acls(s)
    grants = {(a.principal, a.operation, a.resource_pattern.resource_type, a.resource_pattern.resource_name)
              for a in acls}
    worker, emitter = f"User:{WORKER_USER}", f"User:{EMITTER_USER}"
    writers = {(p, name) for p, op, kind, name in grants if op == ACLOperation.WRITE}
    assert {p for p, name in writers if name == s.topic_risk_evidence} == {worker}
    assert {name for p, name in writers if p == emitter} == {*s.topics().values(), s.topic_otlp_spans}
    assert {name for p, name in writers if p == worker} == {s.topic_alerts, s.topic_dead_letter,
                                                           s.topic_risk_evidence}
    readers = {(p, name) for p, op, kind, name in grants if op == ACLOperation.READ}
    assert not any(p == emitter for p, _ in readers)
    assert {name for p, name in readers if p == worker} == {*s.topics().values(), s.topic_risk_evidence,
                                                           s.topic_alerts, s.topic_otlp_spans, s.topic_feedback,
                                                           s.worker_group}
    assert not any(name == s.topic_feedback for _p, name in writers)  # marks come from an administrator only
    assert (worker, ACLOperation.READ, ResourceType.GROUP, s.worker_group) in grants


def _properties(service) -> dict[str, str]:
    service.write_config()
    text = service.server_properties.read_text()
    return dict(line.split("=", 1) for line in text.splitlines() if not line.startswith("#"))


def test_secure_broker_properties(tmp_path: Path):
    from streams.stack.kafka import KafkaService

    s = Settings(kafka_port=19092, kafka_controller_port=19093, stack_dir=tmp_path)
    service = KafkaService(s, secure=True)
    material = service.secure_material
    material.dir.mkdir(parents=True)
    for name in ("keystore", "spyglass-admin", "spyglass-worker", "spyglass-emitter"):
        (material.dir / f"{name}.password").write_text(f"pw-{name}\n")
    props = _properties(service)
    assert service.server_properties.stat().st_mode & 0o777 == 0o600
    assert props["listeners"] == "SASL_SSL://127.0.0.1:19092,CONTROLLER://127.0.0.1:19093"
    assert props["listener.security.protocol.map"] == "SASL_SSL:SASL_SSL,CONTROLLER:SSL"
    assert props["listener.name.controller.ssl.client.auth"] == "required"
    assert props["allow.everyone.if.no.acl.found"] == "false"
    assert props["super.users"] == "User:spyglass-admin;User:CN=spyglass-broker"
    plain = _properties(KafkaService(s, secure=False))
    assert plain["listeners"].startswith("PLAINTEXT://127.0.0.1:19092") and "authorizer.class.name" not in plain
    args = material.scram_format_args()
    assert args.count("--add-scram") == 3
    assert "SCRAM-SHA-512=[name=spyglass-worker,password=pw-spyglass-worker]" in args
