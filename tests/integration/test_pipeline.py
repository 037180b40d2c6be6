"""Events through the real broker and into the real stores (ClickHouse server and chDB)."""

from __future__ import annotations

import json
import uuid

import pytest
from kafka import KafkaConsumer, TopicPartition

from schemas.errors import EventError
from schemas.events import ENTITY_FIELD, decode
from streams.ingest import Ingestor
from streams.settings import Settings, StoreURL
from streams.simulator.output import produce_kafka
from streams.simulator.run import Simulation
from streams.sinks.clickhouse import ChdbStore, EventsSink, NativeStore, apply_ddl, open_store
from streams.stack.kafka import delete_topics, ensure_topics


@pytest.fixture
def fresh_topics(stack_settings: Settings):
    """A fresh set of event/alert/dead-letter topics for one test, deleted afterwards."""
    tag = uuid.uuid4().hex[:8]
    settings = stack_settings.model_copy(update={
        "topic_api_usage": f"t-{tag}.api-usage", "topic_data_access": f"t-{tag}.data-access",
        "topic_agent_execution": f"t-{tag}.agent-execution", "topic_alerts": f"t-{tag}.alerts",
        "topic_dead_letter": f"t-{tag}.dead-letter",
    })
    names = ensure_topics(settings, partitions=3)
    yield settings
    delete_topics(settings, names)


def consume_all(settings: Settings, topics: list[str], expected: int, timeout_s: float = 60) -> list:
    consumer = KafkaConsumer(bootstrap_servers=settings.kafka_bootstrap, enable_auto_commit=False,
                             auto_offset_reset="earliest", group_id=None)
    parts = [TopicPartition(t, p) for t in topics for p in sorted(consumer.partitions_for_topic(t) or [])]
    consumer.assign(parts)
    consumer.seek_to_beginning(*parts)
    out = []
    import time

    deadline = time.monotonic() + timeout_s
    while len(out) < expected and time.monotonic() < deadline:
        for msgs in consumer.poll(timeout_ms=500, max_records=10_000).values():
            out.extend(msgs)
    consumer.close()
    return out


def test_simulated_traffic_round_trips_through_the_broker(fresh_topics: Settings):
    sim = Simulation(seed=5, events=12_000, days=2)
    stats = produce_kafka(sim, fresh_topics.kafka_bootstrap, fresh_topics.topics())
    assert stats.events == 12_000
    msgs = consume_all(fresh_topics, list(fresh_topics.topics().values()), 12_000)
    assert len(msgs) == 12_000
    topic_of = {v: k for k, v in fresh_topics.topics().items()}
    ids = set()
    for m in msgs:
        ev = decode(m.value)
        assert not isinstance(ev, EventError), ev
        kind = type(ev).__struct_config__.tag
        assert topic_of[m.topic] == kind  # each kind on its own topic
        assert m.key.decode() == getattr(ev, ENTITY_FIELD[kind])  # keyed by entity
        ids.add(ev.event_id)
    assert len(ids) == 12_000
    # per-entity order: within a partition, one entity's events are in event-time order
    last: dict[tuple, object] = {}
    for m in sorted(msgs, key=lambda m: (m.topic, m.partition, m.offset)):
        ev = decode(m.value)
        k = (m.topic, m.key)
        assert last.get(k, ev.ts) <= ev.ts
        last[k] = ev.ts


def _stores(stack_settings: Settings, tmp_path) -> list:
    return [
        NativeStore(StoreURL.parse(f"clickhouse://default@127.0.0.1:{stack_settings.clickhouse_tcp_port}/"
                                   f"it_{uuid.uuid4().hex[:8]}")),
        ChdbStore(StoreURL.parse(f"chdb://{tmp_path / 'chdb'}"), database=f"it_{uuid.uuid4().hex[:8]}"),
    ]


def test_insert_and_select_on_the_server_and_on_chdb(stack_settings: Settings, tmp_path):
    sim = Simulation(seed=9, events=5_000, days=1, instances=1)
    rows = [r for chunk in sim.chunks() for r in chunk.rows]
    batch = [(decode(json.dumps(r).encode()), json.dumps(r).encode()) for r in rows]
    answers = []
    for store in _stores(stack_settings, tmp_path):
        try:
            apply_ddl(store)
            apply_ddl(store)  # idempotent
            sink = EventsSink(store)
            sink.write(batch[:3000])
            sink.write(batch[3000:])
            sink.write(batch[:100])  # a re-delivery
            db = store.database
            total = store.query(f"SELECT count() FROM {db}.events FINAL")[0][0]
            per_kind = store.query(f"SELECT kind, count() FROM {db}.events FINAL GROUP BY kind ORDER BY kind")
            sample = store.query(
                f"SELECT event_id, toString(ts), ts_ms, tenant, entity FROM {db}.events FINAL "
                f"WHERE event_id = '{rows[17]['event_id']}'")
            answers.append((total, per_kind, sample))
            if isinstance(store, NativeStore):
                assert store.version().startswith("18.")
        finally:
            if isinstance(store, NativeStore):
                store.execute(f"DROP DATABASE IF EXISTS {store.database}")
            store.close()
    server, embedded = answers
    assert server == embedded
    assert server[0] == 5_000
    r = rows[17]
    eid, ts, ms, tenant, entity = server[2][0]
    assert (eid, tenant) == (r["event_id"], r["tenant"])
    assert f"{ts.replace(' ', 'T')}.{ms:03d}Z" == r["ts"]
    assert entity == r[ENTITY_FIELD[r["kind"]]]


def test_ingest_stores_good_events_and_dead_letters_bad_ones(fresh_topics: Settings, tmp_path):
    from kafka import KafkaProducer

    sim = Simulation(seed=2, events=3_000, days=1, instances=1)
    good = [json.dumps(r).encode() for c in sim.chunks() for r in c.rows]
    bad = [b"not json", b'{"kind":"api_usage","event_id":"x"}', b"\xff\xfe\xfd",
           json.dumps({**json.loads(good[0]), "ts": "2026-11-02T10:00:00"}).encode()]
    producer = KafkaProducer(bootstrap_servers=fresh_topics.kafka_bootstrap)
    topic = fresh_topics.topic_api_usage
    for v in good[:1500] + bad + good[1500:]:
        producer.send(topic, v, partition=0)
    producer.flush()
    producer.close()

    store = open_store(StoreURL.parse(f"chdb://{tmp_path / 'chdb'}"))
    apply_ddl(store)
    ingest = Ingestor(fresh_topics, EventsSink(store), group_id=f"g-{uuid.uuid4().hex[:8]}")
    n_good = n_bad = 0
    for _ in range(200):
        b = ingest.poll(timeout_ms=300)
        n_good += len(b.events)
        n_bad += len(b.dead)
        if n_good + n_bad >= len(good) + len(bad):
            break
    ingest.close()
    assert (n_good, n_bad) == (len(good), len(bad))
    assert store.query(f"SELECT count() FROM {store.database}.events FINAL")[0][0] == len(good)
    store.close()

    dead = consume_all(fresh_topics, [fresh_topics.topic_dead_letter], len(bad))
    dead.sort(key=lambda m: int(dict(m.headers)["spyglass.source.offset"]))
    assert [m.value for m in dead] == bad
    for i, m in enumerate(dead):
        h = dict(m.headers)
        assert h["spyglass.source.topic"].decode() == topic
        assert (int(h["spyglass.source.partition"]), int(h["spyglass.source.offset"])) == (0, 1500 + i)
        assert h["spyglass.error.reason"]
    fields = [dict(m.headers)["spyglass.error.field"].decode() for m in dead]
    assert fields == ["$", "$.api_key_id", "$", "$.ts"]
