"""Events through the real broker and into the real stores (ClickHouse server and chDB)."""

from __future__ import annotations

import contextlib
import json
import uuid

from kafka import KafkaConsumer, TopicPartition

from schemas.errors import EventError
from schemas.events import ENTITY_FIELD, decode
from streams.ingest import Ingestor
from streams.kafka_security import kafka_client_config
from streams.settings import Settings, StoreURL
from streams.simulator.output import produce_kafka
from streams.simulator.run import Simulation
from streams.sinks.clickhouse import ChdbStore, EventsSink, NativeStore, apply_ddl, open_store


def consume_all(settings: Settings, topics: list[str], expected: int, timeout_s: float = 60) -> list:
    consumer = KafkaConsumer(bootstrap_servers=settings.kafka_bootstrap, enable_auto_commit=False,
                             auto_offset_reset="earliest", group_id=None, **kafka_client_config(settings))
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
    stats = produce_kafka(sim, fresh_topics.kafka_bootstrap, fresh_topics.topics(),
                          client_config=kafka_client_config(fresh_topics))
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


def test_a_stopped_producer_flushes_what_it_sent_and_sends_no_more(fresh_topics: Settings):
    """The fault tests end a failed test's background producer this way, before its topics are deleted."""
    import threading

    stop = threading.Event()
    sent = 0

    def count(_kind: str, n: int) -> None:
        nonlocal sent
        sent += n
        if sent == 1_000:
            stop.set()

    stats = produce_kafka(Simulation(seed=5, events=12_000, days=2), fresh_topics.kafka_bootstrap,
                          fresh_topics.topics(), on_sent=count, stop=stop,
                          client_config=kafka_client_config(fresh_topics))
    assert stats.events == 1_000
    assert len(consume_all(fresh_topics, list(fresh_topics.topics().values()), 12_000, timeout_s=5)) == 1_000


def _stores(stack_settings: Settings, tmp_path) -> list:
    return [
        NativeStore(stack_settings.store().with_database(f"it_{uuid.uuid4().hex[:8]}")),
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
    producer = KafkaProducer(bootstrap_servers=fresh_topics.kafka_bootstrap, **kafka_client_config(fresh_topics))
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


def _cross_kind_rows() -> tuple[list[dict], list[dict]]:
    """mallory: a burst of denied reads (data_access), then an agent acting for her runs a high-risk refund
    without approval (agent_execution) an hour later; bob: the same denials only (one kind). Both read as usual
    the day before, so the denials are unusual for them and their tenant."""
    usual = [{"event_id": f"x-{who}-b{k}", "kind": "data_access",
              "ts": f"2026-11-01T{k * 20 // 60:02d}:{k * 20 % 60:02d}:00.000Z", "tenant": "acme", "principal": who,
              "principal_department": "sales", "dataset": "sales/pipeline", "dataset_owner_department": "sales",
              "sensitivity": "internal", "operation": "read", "rows": 10, "granted": True}
             for k in range(30) for who in ("mallory", "bob")]
    data = usual + [{"event_id": f"x-{who}-d{i}", "kind": "data_access", "ts": f"2026-11-02T10:00:{i * 5:02d}.000Z",
             "tenant": "acme", "principal": who, "principal_department": "sales", "dataset": f"hr/file{i}",
             "dataset_owner_department": "hr", "sensitivity": "restricted", "operation": "read", "rows": 0,
             "granted": False} for who in ("mallory", "bob") for i in range(8)]
    agent = [{"event_id": "x-g1", "kind": "agent_execution", "ts": "2026-11-02T11:00:00.000Z", "tenant": "acme",
              "agent_id": "agt-x", "agent_type": "helper", "session_id": "sx", "principal": "mallory",
              "action": "refund", "target_system": "billing", "privilege": "write", "risk_level": "high",
              "approval": "bypassed", "triggered_by": "user", "outcome": "success"}]
    return data, agent


def test_the_worker_raises_cross_kind_risk_from_alerts_of_two_event_topics(stack_settings: Settings, tmp_path):
    """One engine per topic partition never sees both kinds: the risk-evidence topic and the correlator do."""
    from kafka import KafkaProducer

    from detectors.correlation import HOUR, decode_evidence
    from schemas.alerts import alert_id
    from tests.fault.harness import Run, WorkerProc, read_topic, wait_committed

    run = Run.create(stack_settings, tmp_path)
    run.worker_settings = {"engine_learning_hours": 0}  # the agent engine's one event would fall in its first day
    try:
        data, agent = _cross_kind_rows()
        producer = KafkaProducer(bootstrap_servers=run.settings.kafka_bootstrap, acks="all",
                                 **kafka_client_config(run.settings))
        for r in data:
            producer.send(run.settings.topic_data_access, key=r["principal"].encode(), value=json.dumps(r).encode())
        for r in agent:
            producer.send(run.settings.topic_agent_execution, key=r["agent_id"].encode(), value=json.dumps(r).encode())
        producer.flush()
        producer.close()
        w = WorkerProc(run, "correlating").start()
        try:
            wait_committed(run, len(data) + len(agent), [w], timeout_s=120)
        finally:
            assert w.terminate() == 0, w.tail()

        evidence = [decode_evidence(m.value) for m in read_topic(run, run.settings.topic_risk_evidence)]
        # each engine alert's record names its principal (a header), so Alertmanager can route and inhibit on it
        from streams.notify.stage import PRINCIPAL_HEADER, decode_alert

        whose = {(a.detector, a.entity): dict(m.headers or ()).get(PRINCIPAL_HEADER) for m in
                 read_topic(run, run.settings.topic_alerts) for a in [decode_alert(m.value)]}
        assert whose[("agent.approval_bypass", "agt-x")] == b"mallory"
        assert whose[("data.denied_burst", "bob")] == b"bob"
        assert {(e.principal, e.kind, e.detector) for e in evidence} >= {
            ("mallory", "data_access", "data.denied_burst"), ("mallory", "agent_execution", "agent.approval_bypass"),
            ("bob", "data_access", "data.denied_burst")}
        st = run.store()
        try:
            rows = st.query(f"SELECT alert_id, detector, kind, entity_type, entity, tenant, source_topic "  # noqa: S608
                            f"FROM {run.db}.alerts FINAL WHERE detector = 'risk.cross_kind'")
            within = st.query(f"SELECT detector, entity FROM {run.db}.alerts FINAL "  # noqa: S608
                              f"WHERE detector != 'risk.cross_kind' ORDER BY detector, entity")
        finally:
            st.close()
        window = 1_793_613_600_000 // (6 * HOUR)  # 2026-11-02T10:00Z, in 6-hour windows
        assert [tuple(r) for r in rows] == [(alert_id("risk.cross_kind", "acme", "mallory", f"bucket-{window}"),
                                             "risk.cross_kind", "cross", "principal", "mallory", "acme",
                                             run.settings.topic_risk_evidence)]
        # the engines' own alerts are unchanged: each kind's, nothing across kinds from them
        assert [tuple(r) for r in within] == [("agent.approval_bypass", "agt-x"), ("data.denied_burst", "bob"),
                                              ("data.denied_burst", "mallory")]
    finally:
        run.cleanup()
        with contextlib.suppress(Exception):
            st = run.store()
            st.execute(f"DROP DATABASE IF EXISTS {run.db}")
            st.close()
