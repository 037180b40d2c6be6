"""Kafka transport security on the real broker: ``spyglass stack up --secure`` (SASL_SSL, SCRAM users, ACLs).

A secure broker of its own is started for this module on free ports; the worker runs as a child process with
an embedded store (chDB), so no ClickHouse server is needed. Every client is built with
:func:`streams.kafka_security.kafka_client_config`, as the project's own clients are.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import socket
import ssl
import subprocess
import uuid
import warnings
from collections.abc import Iterator
from pathlib import Path

import msgspec
import pytest
from kafka import KafkaConsumer, KafkaProducer, TopicPartition
from kafka.errors import TopicAuthorizationFailedError
from pydantic import SecretStr

from schemas.errors import SpyglassError
from streams.kafka_security import kafka_client_config, kafka_ssl_context
from streams.settings import Settings
from streams.simulator.output import produce_kafka
from streams.simulator.run import Simulation
from streams.stack import Stack
from streams.stack.kafka import ensure_topics
from streams.stack.kafka_secure import ADMIN_USER, EMITTER_USER, WORKER_USER, grant_pipeline_acls
from tests.fault.harness import Run, WorkerProc, read_topic, reference_alert_ids, wait_committed


@pytest.fixture(scope="module")
def secure_stack(tmp_path_factory: pytest.TempPathFactory, make_stack_settings) -> Iterator[Stack]:
    """A Kafka broker started by ``Stack(..., secure_kafka=True)`` (what ``stack up --secure`` runs)."""
    stack = Stack(make_stack_settings(tmp_path_factory.mktemp("secure-stack")), secure_kafka=True)
    try:
        stack.up(("kafka",))
        yield stack
    finally:
        stack.down()


def _as(stack: Stack, user: str, **updates: object) -> Settings:
    """The stack's settings connecting as ``user`` (the stack's own password file and CA)."""
    return stack.kafka.secure_material.client_settings(stack.settings, user).model_copy(update=updates)


@pytest.fixture
def topics(secure_stack: Stack) -> Settings:
    """Fresh topics and group for one test, created by the admin, with the pipeline's ACLs; admin settings."""
    tag = uuid.uuid4().hex[:8]
    admin = _as(secure_stack, ADMIN_USER, **Settings.topic_names(f"s-{tag}"), worker_group=f"s-{tag}")
    ensure_topics(admin, partitions=2)
    assert grant_pipeline_acls(admin) > 0
    return admin


def _with_user(topics: Settings, user: str, **updates: object) -> Settings:
    """``topics``'s topic names and group, connecting as ``user``."""
    return topics.model_copy(update={"kafka_sasl_username": user,
                                     "kafka_sasl_password_file": topics.kafka_sasl_password_file.with_name(
                                         f"{user}.password"), **updates})


class _ChdbRun(Run):
    """A harness run whose worker stores into an embedded chDB directory instead of a ClickHouse server."""

    @property
    def store_url(self) -> str:
        return f"chdb://{self.tmp / 'chdb'}"


def test_the_stack_writes_credentials_owner_only_and_shows_none(secure_stack: Stack):
    material = secure_stack.kafka.secure_material
    for user in (ADMIN_USER, WORKER_USER, EMITTER_USER):
        assert material.password_file(user).stat().st_mode & 0o777 == 0o600
    assert material.dir.stat().st_mode & 0o777 == 0o700
    assert secure_stack.kafka.server_properties.stat().st_mode & 0o777 == 0o600  # holds the keystore password
    passwords = [material.password(u) for u in (ADMIN_USER, WORKER_USER, EMITTER_USER)]
    assert len(set(passwords)) == 3 and all(len(p) >= 32 for p in passwords)
    shown = (secure_stack.state_file.read_text() + repr(secure_stack.kafka.admin_settings)
             + str(material.client_env(WORKER_USER)))
    assert not any(p in shown for p in passwords)
    pid = secure_stack.kafka.pid()
    assert pid is not None
    cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace")
    assert not any(p in cmdline for p in passwords)


def test_the_worker_scores_what_an_emitter_sends_over_sasl_ssl(topics: Settings, tmp_path: Path):
    """Events from the emitter principal are consumed and scored by the worker principal (a real ``spyglass
    worker``, Faust over SASL_SSL), and the alerts reach the alerts topic."""
    emitter = _with_user(topics, EMITTER_USER)
    sim = Simulation(seed=11, events=6_000, days=1, instances=1)
    stats = produce_kafka(sim, emitter.kafka_bootstrap, emitter.topics(), client_config=kafka_client_config(emitter))
    assert stats.events == 6_000

    run = _ChdbRun(_with_user(topics, WORKER_USER), tmp_path)
    w = WorkerProc(run, "secure").start()
    try:
        wait_committed(run, 6_000, [w], timeout_s=180)
    finally:
        assert w.terminate() == 0, w.tail()
    expected = reference_alert_ids(run)
    assert expected  # the simulated attacks give alerts
    dec = msgspec.json.Decoder(dict)
    published = {dec.decode(m.value)["alert_id"] for m in read_topic(run, run.settings.topic_alerts)}
    assert published == expected


def _bootstrap_error(settings: Settings, caplog: pytest.LogCaptureFixture) -> str:
    """Start an aiokafka producer with these settings; return what the failed bootstrap logged."""
    from aiokafka import AIOKafkaProducer
    from aiokafka.errors import KafkaConnectionError

    async def start() -> None:
        producer = AIOKafkaProducer(bootstrap_servers=settings.kafka_bootstrap, request_timeout_ms=5000,
                                    **kafka_client_config(settings, "aiokafka"))
        try:
            await producer.start()
        finally:
            await producer.stop()

    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="aiokafka"), pytest.raises(KafkaConnectionError), \
            warnings.catch_warnings():
        # aiokafka closes the refused connection but never awaits its close (AIOKafkaConnection.close returns
        # a future its connect and bootstrap drop), so asyncio.run may close the loop before the TLS
        # shutdown has closed the socket, and the garbage collector then warns. In a long-lived loop the
        # close completes; collect the leftovers here, where that one warning is expected, not at session end.
        warnings.filterwarnings("ignore", r"unclosed (transport <_SelectorSocketTransport|<socket\.socket)",
                                ResourceWarning)
        try:
            asyncio.run(start())
        finally:
            gc.collect()
    return caplog.text


def test_a_client_without_credentials_or_with_a_wrong_password_is_refused(topics: Settings, caplog):
    emitter = _with_user(topics, EMITTER_USER)
    asyncio.run(_producer_starts(emitter))  # the control: the right password gets in
    for no_credentials in (emitter.model_copy(update={"kafka_security_protocol": "PLAINTEXT"}),
                           emitter.model_copy(update={"kafka_security_protocol": "SSL"})):
        assert "closed" in _bootstrap_error(no_credentials, caplog)
    wrong = emitter.model_copy(update={"kafka_sasl_password_file": None, "kafka_sasl_password": SecretStr("wrong")})
    logged = _bootstrap_error(wrong, caplog)
    assert "SaslAuthenticationFailed" in logged and "invalid credentials" in logged


async def _producer_starts(settings: Settings) -> None:
    from aiokafka import AIOKafkaProducer

    producer = AIOKafkaProducer(bootstrap_servers=settings.kafka_bootstrap, **kafka_client_config(settings, "aiokafka"))
    await producer.start()
    await producer.stop()


def _send(settings: Settings, topic: str, value: bytes) -> int:
    """Produce one record to partition 0 as ``settings`` say and wait for the broker's answer; its offset."""
    producer = KafkaProducer(bootstrap_servers=settings.kafka_bootstrap, acks="all", **kafka_client_config(settings))
    try:
        return producer.send(topic, value, partition=0).get(timeout=30).offset
    finally:
        producer.close()


def _poll_partition(settings: Settings, tp: TopicPartition) -> list:
    """The records of one partition from offset 0 that ``settings``' principal is given (a few polls)."""
    consumer = KafkaConsumer(bootstrap_servers=settings.kafka_bootstrap, group_id=None, enable_auto_commit=False,
                             **kafka_client_config(settings))
    try:
        consumer.assign([tp])
        consumer.seek(tp, 0)
        out: list = []
        for _ in range(10):
            for records in consumer.poll(timeout_ms=500).values():
                out.extend(records)
            if out:
                break
        return out
    finally:
        consumer.close()


def test_an_emitter_can_write_events_but_cannot_read_alerts(topics: Settings):
    emitter, worker = _with_user(topics, EMITTER_USER), _with_user(topics, WORKER_USER)
    assert _send(emitter, emitter.topic_api_usage, b"{}") == 0
    alerts = TopicPartition(topics.topic_alerts, 0)
    assert _send(worker, alerts.topic, b'{"alert_id": "a1"}') == 0
    assert [m.value for m in _poll_partition(worker, alerts)] == [b'{"alert_id": "a1"}']  # there is one to read
    assert _poll_partition(emitter, alerts) == []
    consumer = KafkaConsumer(bootstrap_servers=emitter.kafka_bootstrap, group_id=None, enable_auto_commit=False,
                             **kafka_client_config(emitter))
    try:
        with pytest.raises(TopicAuthorizationFailedError):
            consumer.end_offsets([alerts])
    finally:
        consumer.close()


def test_a_forged_evidence_record_from_an_emitter_is_refused_by_the_broker(topics: Settings):
    emitter, worker = _with_user(topics, EMITTER_USER), _with_user(topics, WORKER_USER)
    with pytest.raises(TopicAuthorizationFailedError):
        _send(emitter, emitter.topic_risk_evidence, b'{"principal": "mallory", "forged": true}')
    # the worker principal may write it: the refusal is the ACL on the evidence topic, not a broken producer
    assert _send(worker, worker.topic_risk_evidence, b"{}") == 0
    assert [m.value for m in _poll_partition(worker, TopicPartition(worker.topic_risk_evidence, 0))] == [b"{}"]


def test_the_simulator_says_so_when_the_broker_refuses_its_events(topics: Settings):
    """The worker principal may not write event topics; the simulator reports the refusal instead of a count."""
    worker = _with_user(topics, WORKER_USER)
    sim = Simulation(seed=3, events=6_000, days=1, instances=1)
    with pytest.raises(SpyglassError, match="Kafka refused 6,000 of 6,000 events .*TopicAuthorizationFailed"):
        produce_kafka(sim, worker.kafka_bootstrap, worker.topics(), client_config=kafka_client_config(worker))


def _handshake(settings: Settings, server_hostname: str) -> None:
    host, port = settings.kafka_bootstrap.rsplit(":", 1)
    with socket.create_connection((host, int(port)), timeout=10) as raw, \
            kafka_ssl_context(settings).wrap_socket(raw, server_hostname=server_hostname) as tls:
        assert tls.version() is not None


def test_tls_verification_fails_against_a_wrong_ca_or_hostname(topics: Settings, tmp_path: Path, caplog):
    _handshake(topics, "127.0.0.1")  # the control: the stack's CA verifies the broker for its address
    other_ca = tmp_path / "other-ca.crt"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(tmp_path / "k"),  # noqa: S607
                    "-out", str(other_ca), "-days", "1", "-subj", "/CN=not the stack's CA"],
                   check=True, capture_output=True)
    with pytest.raises(ssl.SSLCertVerificationError, match="certificate verify failed"):
        _handshake(topics.model_copy(update={"kafka_ssl_ca_file": other_ca}), "127.0.0.1")
    with pytest.raises(ssl.SSLCertVerificationError, match="Hostname mismatch|doesn't match"):
        _handshake(topics, "kafka.example.com")
    _handshake(topics.model_copy(update={"kafka_ssl_check_hostname": False}), "kafka.example.com")
    # and a client of the project refuses the broker signed by another CA
    wrong_ca = _with_user(topics, EMITTER_USER, kafka_ssl_ca_file=other_ca)
    assert "CERTIFICATE_VERIFY_FAILED" in _bootstrap_error(wrong_ca, caplog)


def test_produce_and_the_go_example_send_as_the_emitter_over_sasl_ssl(topics: Settings, tmp_path: Path):
    """``spyglass produce`` and the Go example producer connect with the SPYGLASS_KAFKA_* settings (SCRAM over
    TLS, the stack's CA) as the emitter principal, which may write the event topics."""
    import json
    import sys

    from schemas.samples import sample_stream
    from tests.integration.examples import build_go_example, example_env

    emitter = _with_user(topics, EMITTER_USER)
    path = tmp_path / "events.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in sample_stream(per_kind=5)))
    r = subprocess.run([sys.executable, "-m", "streams.cli", "produce", "--input", str(path)],
                       env=example_env(emitter), capture_output=True, text=True, timeout=120, check=False)
    assert r.returncode == 0, r.stderr
    assert "sent 15 events" in r.stdout
    go = subprocess.run([str(build_go_example(topics)), "-n", "4"], env=example_env(emitter),  # noqa: S603
                        capture_output=True, text=True, timeout=120, check=False)
    assert go.returncode == 0, go.stderr
    assert json.loads(go.stdout)["stored"] == {"api_usage": 4, "data_access": 4, "agent_execution": 4}
    consumer = KafkaConsumer(bootstrap_servers=topics.kafka_bootstrap, group_id=None, enable_auto_commit=False,
                             **kafka_client_config(topics))
    try:
        for kind, topic in topics.topics().items():
            ends = consumer.end_offsets([TopicPartition(topic, p) for p in range(2)])
            assert sum(ends.values()) == 5 + 4, kind
    finally:
        consumer.close()
    # a wrong password is refused: the settings, not an open listener, let them in
    wrong = tmp_path / "wrong.password"
    wrong.write_text("not-the-password\n")
    wrong.chmod(0o600)
    bad = subprocess.run([sys.executable, "-m", "streams.cli", "produce", "--input", str(path)],
                         env=example_env(emitter.model_copy(update={"kafka_sasl_password_file": wrong})),
                         capture_output=True, text=True, timeout=120, check=False)
    assert bad.returncode != 0
    assert "not-the-password" not in bad.stdout + bad.stderr
    assert "Traceback" not in bad.stderr and bad.stderr.startswith("spyglass: "), bad.stderr[-2000:]
