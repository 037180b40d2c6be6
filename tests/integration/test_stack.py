"""The local stack against real processes: a KRaft Kafka broker and a ClickHouse server."""

from __future__ import annotations

import argparse
import socket
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from clickhouse_driver import Client
from kafka import KafkaConsumer, KafkaProducer
from kafka.admin import KafkaAdminClient

from schemas.errors import StackError
from streams.cli.stack import cmd_status
from streams.kafka_security import kafka_client_config
from streams.settings import Settings, StoreURL
from streams.stack import Stack
from streams.stack.base import LOOPBACK, pid_alive, port_open
from streams.stack.kafka import delete_topics, ensure_topics

MakeSettings = Callable[[Path], Settings]


def _unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:12]}"


def _ch(settings: Settings) -> Client:
    return Client(**settings.store().driver_options(), connect_timeout=5, send_receive_timeout=30)


def test_kafka_produce_and_consume_100_messages(stack_settings: Settings) -> None:
    topic, group = _unique("test-roundtrip"), _unique("test-group")
    admin = KafkaAdminClient(bootstrap_servers=stack_settings.kafka_bootstrap, client_id="spyglass-test",
                             **kafka_client_config(stack_settings))
    try:
        admin.create_topics({topic: {"num_partitions": 2, "replication_factor": 1}}, wait_for_metadata=True)
    finally:
        admin.close()
    sent = [f"message-{i}".encode() for i in range(100)]
    producer = KafkaProducer(bootstrap_servers=stack_settings.kafka_bootstrap, acks="all", linger_ms=5,
                             **kafka_client_config(stack_settings))
    try:
        for i, value in enumerate(sent):
            producer.send(topic, key=str(i % 7).encode(), value=value)
        producer.flush(timeout=30)
    finally:
        producer.close(timeout=5)

    consumer = KafkaConsumer(
        topic,
        bootstrap_servers=stack_settings.kafka_bootstrap,
        group_id=group,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        **kafka_client_config(stack_settings),
    )
    received: list[bytes] = []
    try:
        deadline = time.monotonic() + 30
        while len(received) < len(sent) and time.monotonic() < deadline:
            for records in consumer.poll(timeout_ms=500).values():
                received.extend(r.value for r in records)
        consumer.commit()
    finally:
        consumer.close()
    try:
        assert sorted(received) == sorted(sent)
    finally:
        assert delete_topics(stack_settings, [topic]) == [topic]


def test_event_topics_exist_and_ensure_is_idempotent(stack_settings: Settings) -> None:
    expected = [*stack_settings.topics().values(), stack_settings.topic_alerts, stack_settings.topic_dead_letter,
                stack_settings.topic_risk_evidence, stack_settings.topic_feedback, stack_settings.topic_otlp_spans]
    assert ensure_topics(stack_settings) == expected  # created by Stack.up; a second call changes nothing
    admin = KafkaAdminClient(bootstrap_servers=stack_settings.kafka_bootstrap, client_id="spyglass-test",
                             **kafka_client_config(stack_settings))
    try:
        described = {t["name"]: t for t in admin.describe_topics(expected)}
    finally:
        admin.close()
    assert set(described) == set(expected)
    assert all(len(t["partitions"]) >= 1 for t in described.values())


def test_clickhouse_answers_version(stack_settings: Settings) -> None:
    client = _ch(stack_settings)
    try:
        (version,) = client.execute("SELECT version()")[0]
    finally:
        client.disconnect()
    parts = tuple(int(p) for p in str(version).split(".")[:3])
    assert len(parts) == 3 and parts[0] >= 18


def test_clickhouse_columnar_insert_select_roundtrip(stack_settings: Settings, ch_server_url: str) -> None:
    assert StoreURL.parse(ch_server_url).port == stack_settings.clickhouse_tcp_port
    table = _unique("t_roundtrip").replace("-", "_")
    base = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)
    ids = list(range(1000))
    names = [f"key-{i % 10}" for i in ids]
    stamps = [base + timedelta(seconds=i) for i in ids]
    client = _ch(stack_settings)
    try:
        client.execute(
            f"CREATE TABLE {table} (id UInt32, name String, ts DateTime) ENGINE = MergeTree() ORDER BY id"
        )
        n = client.execute(f"INSERT INTO {table} (id, name, ts) VALUES", [ids, names, stamps], columnar=True)
        assert n == 1000
        rows = client.execute(f"SELECT id, name, toUnixTimestamp(ts) FROM {table} ORDER BY id")
        assert [r[0] for r in rows] == ids
        assert [r[1] for r in rows] == names
        assert [r[2] for r in rows] == [int(s.timestamp()) for s in stamps]
        (agg,) = client.execute(f"SELECT count(), uniqExact(name), sum(id) FROM {table}")
        assert agg == (1000, 10, sum(ids))
    finally:
        client.execute(f"DROP TABLE IF EXISTS {table}")
        client.disconnect()


def test_stack_status_reports_both_running(stack_settings: Settings, capsys: pytest.CaptureFixture[str]) -> None:
    by_name = {st.name: st for st in Stack(stack_settings).status()}
    assert by_name["kafka"].running and by_name["kafka"].pid is not None
    assert by_name["clickhouse"].running and by_name["clickhouse"].detail.startswith("ClickHouse ")
    assert cmd_status(argparse.Namespace(), stack_settings) == 0
    out = capsys.readouterr().out
    assert "kafka" in out and "clickhouse" in out and "running" in out


def test_up_again_reuses_running_services(stack_settings: Settings) -> None:
    stack = Stack(stack_settings)
    before = {st.name: st.pid for st in stack.status(("kafka", "clickhouse"))}
    ready = stack.up(("kafka", "clickhouse"))
    assert set(ready) == {"kafka", "clickhouse"} and all(s < 10 for s in ready.values())
    assert {st.name: st.pid for st in stack.status(("kafka", "clickhouse"))} == before


def test_port_taken_by_another_process_is_a_clear_error(tmp_path: Path, make_stack_settings: MakeSettings) -> None:
    with socket.socket() as squatter:
        squatter.bind((LOOPBACK, 0))
        squatter.listen()
        port = squatter.getsockname()[1]
        settings = make_stack_settings(tmp_path / "stack")
        settings = settings.model_copy(update={"clickhouse_tcp_port": port})
        with pytest.raises(StackError, match=rf"port {port}.*SPYGLASS_CLICKHOUSE_TCP_PORT"):
            Stack(settings).up(("clickhouse",))
    assert not Stack(settings).status(("clickhouse",))[0].running


def test_down_stops_a_stack_of_its_own(tmp_path: Path, make_stack_settings: MakeSettings) -> None:
    stack = Stack(make_stack_settings(tmp_path / "stack"))
    try:
        ready = stack.up(("kafka", "clickhouse"))
        assert set(ready) == {"kafka", "clickhouse"}
        pids = {st.name: st.pid for st in stack.status(("kafka", "clickhouse"))}
        assert all(pids.values())
    finally:
        stopped = stack.down()
    assert set(stopped) == {"kafka", "clickhouse"}
    statuses = stack.status(("kafka", "clickhouse"))
    assert not any(st.running for st in statuses)
    assert not any(pid_alive(pid) for pid in pids.values())
    for port in [*stack.kafka.ports().values(), *stack.clickhouse.ports().values()]:
        assert not port_open(LOOPBACK, port)


def test_kafka_storage_formats_with_a_cluster_id_that_starts_with_a_dash(tmp_path, make_stack_settings, monkeypatch):
    """Regression: a random base64 cluster id beginning with '-' was parsed as an option."""
    from streams.stack import kafka as kafka_mod

    monkeypatch.setattr(kafka_mod, "_cluster_id", lambda: "-AbCdEfGhIjKlMnOpQrStU")
    svc = kafka_mod.KafkaService(make_stack_settings(tmp_path))
    svc.provision()
    svc.write_config()
    svc.format_storage()
    props = list((tmp_path / "kafka").rglob("meta.properties"))
    assert props and "cluster.id=-AbCdEfGhIjKlMnOpQrStU" in props[0].read_text()
