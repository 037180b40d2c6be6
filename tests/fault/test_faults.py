"""Kill workers, stop ClickHouse, restart the broker: no event lost, no alert twice, same alerts."""

from __future__ import annotations

import time

import msgspec

from streams.settings import Settings
from streams.simulator.output import produce_kafka
from streams.simulator.run import Simulation
from streams.stack import Stack
from tests.fault.harness import (
    Run,
    WorkerProc,
    check_accounting_and_alerts,
    cross_kind_rows,
    dead_letters,
    next_second,
    owns_partitions,
    produce_in_background,
    produce_rows,
    reference_alert_ids,
    stored_event_ids,
    wait_checkpointed,
    wait_committed,
)

N = 24_000


def _sim(seed: int = 13) -> Simulation:
    return Simulation(seed=seed, events=N, days=3, instances=1)


def test_kill_9_repeatedly_loses_nothing_and_duplicates_nothing(run: Run):
    # kill -9 the worker three times while the simulator produces the labelled run
    producer = produce_in_background(run, _sim(), rate=1_500)
    w = WorkerProc(run, "victim").start()
    try:
        for _ in range(3):
            time.sleep(6)
            w.kill9()
            w.start()
        producer.wait(120)
        wait_committed(run, N, [w])
    finally:
        w.terminate()
    assert w.starts == 4
    reference = reference_alert_ids(run)
    killed = check_accounting_and_alerts(run, N, reference)

    # a fault-free run of the same input, in its own group, alerts topic and database
    clean = run.for_group("clean")
    w0 = WorkerProc(clean, "clean").start()
    try:
        wait_committed(clean, N, [w0])
    finally:
        assert w0.terminate() == 0, w0.tail()
    try:
        assert check_accounting_and_alerts(clean, N, reference) == killed
    finally:
        clean.cleanup()


def test_cross_kind_risk_after_kill_9_equals_the_fault_free_alerts(run: Run):
    """risk.cross_kind comes from evidence that interleaves differently on every run and is re-delivered after
    crashes: the alert ids must still be exactly the fault-free ones."""
    # a mass attack of 180 principals in one tenant: the false-alarm budget would keep most of it at info, and each
    # agent engine's first day is a learning period; this test is about delivery, so its workers (and the
    # reference) run without either
    run.worker_settings = {"engine_alert_budget_per_100k": 0, "engine_learning_hours": 0}
    rows = cross_kind_rows(180)
    producer = produce_rows(run, rows, rate=120)  # about 33 s
    started = next_second()
    w = WorkerProc(run, "victim").start()
    try:
        for _ in range(2):
            deadline = time.monotonic() + 120  # start-up takes about 6 s on a quiet machine, far more on a busy one
            while not owns_partitions(w) and time.monotonic() < deadline:
                time.sleep(0.2)
            time.sleep(6)  # then a few checkpoints (every 2 s here)
            wait_checkpointed(run, w, since=started)  # at least one of this start (a busy machine scores late)
            w.kill9()
            started = next_second()
            w.start()
        producer.wait(120)
        wait_committed(run, len(rows), [w])
    finally:
        w.terminate()
    restored = [line for line in w.log.read_text().splitlines() if "state restored" in line and "risk-evidence" in line]
    assert restored, "a correlator must have been restored from its checkpoint, not only started cold"
    reference = reference_alert_ids(run)
    stored = check_accounting_and_alerts(run, len(rows), reference)
    st = run.store()
    try:
        cross = st.query(f"SELECT count() FROM {run.db}.alerts FINAL WHERE detector = 'risk.cross_kind'")  # noqa: S608
    finally:
        st.close()
    # two in three principals show two kinds (the refund, and a denied burst unusual for their tenant), but not
    # those whose two alerts fall either side of a 6-hour window: the offline engine raises 82 of them
    assert cross[0][0] >= 60 and len(stored) > 180


def test_two_workers_one_killed_its_partitions_move_and_state_follows(run: Run):
    producer = produce_in_background(run, _sim(17), rate=1_500)
    a = WorkerProc(run, "a").start()
    b = WorkerProc(run, "b").start()
    try:
        deadline = time.monotonic() + 90  # both own partitions (startup is slower on a busy machine)
        while time.monotonic() < deadline and not all(owns_partitions(w) for w in (a, b)):
            time.sleep(0.5)
        assert all(owns_partitions(w) for w in (a, b)), (a.tail(), b.tail())
        time.sleep(6)  # a scores and checkpoints (every 2 s here) its share
        wait_checkpointed(run, a)  # a busy machine scores the first batches late
        assert a.alive() and b.alive()
        a.kill9()
        producer.wait(120)
        wait_committed(run, N, [a, b])
        assert b.alive()
        owned: list[str] = []
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:  # the group notices a's death after its session timeout
            owned = [line for line in b.metrics().splitlines() if line.startswith("spyglass_partitions_owned ")]
            if owned == [f"spyglass_partitions_owned {run.scored_partitions:.1f}"]:  # every partition is b's
                break
            time.sleep(1)
        assert owned == [f"spyglass_partitions_owned {run.scored_partitions:.1f}"], owned
    finally:
        b.terminate()
    log = b.log.read_text()
    assert "state restored" in log, "b must restore a's checkpoints, not start a's partitions cold"
    check_accounting_and_alerts(run, N, reference_alert_ids(run))


def test_clickhouse_down_30s_and_broker_restart_mid_run(run: Run, stack_settings: Settings):
    stack = Stack(stack_settings)
    sim = _sim(19)
    w = WorkerProc(run, "survivor").start()
    try:
        producer = produce_in_background(run, sim, rate=3_000)
        deadline = time.monotonic() + 120  # mid-run: the worker has started and owns partitions (a busy
        while not owns_partitions(w) and time.monotonic() < deadline:  # machine starts it slower)
            time.sleep(0.5)
        assert owns_partitions(w), w.tail()
        time.sleep(2)
        stack.down(("clickhouse",))
        try:
            time.sleep(30)
            assert w.alive(), w.tail()
            assert "store write failed; retrying" in w.log.read_text()
            health = w.metrics()
            assert "spyglass_store_up 0.0" in health
        finally:
            stack.up(("clickhouse",))
        producer.wait(120)
        stack.down(("kafka",))
        try:
            time.sleep(3)
        finally:
            stack.up(("kafka",))
        wait_committed(run, N, [w], timeout_s=300)
        assert w.alive(), w.tail()
    finally:
        w.terminate()
    check_accounting_and_alerts(run, N, reference_alert_ids(run))


BAD = [
    (b'{"kind": "api_usage", "event_id": ', "$"),  # invalid JSON
    (b'\xff\xfe{"kind": "api_usage"}', "$"),  # invalid UTF-8
    (b'{"kind":"data_access","event_id":"x1","ts":"2026-11-02T10:00:00Z","principal":"p","principal_department":"d",'
     b'"dataset":"s","dataset_owner_department":"d","sensitivity":"internal","operation":"read","granted":"yes"}',
     "$.granted"),  # wrong type
    (b'{"kind":"api_usage","event_id":"x2","ts":"2026-11-02T10:00:00Z"}', "$.api_key_id"),  # missing fields
    (b'{"kind":"agent_execution","event_id":"x3","ts":"2026-11-02T10:00:00","agent_id":"a","agent_type":"t",'
     b'"session_id":"s","principal":"p","action":"x","target_system":"y","privilege":"read","approval":"approved",'
     b'"triggered_by":"user","outcome":"success"}', "$.ts"),  # naive timestamp
    (b'{"kind":"api_usage","event_id":"x4","pad":"' + b"x" * 200_000 + b'"}', "$"),  # huge payload
    (b'{"kind":"api_usage","x":' + b"[" * 30_000 + b"]" * 30_000 + b"}", "$"),  # deeply nested (under 64 KiB)
    (None, "$"),  # null value (tombstone)
]


def test_bad_input_goes_to_dead_letters_with_reasons_and_the_stream_goes_on(run: Run):
    from kafka import KafkaProducer

    topics = run.event_topics()
    producer = KafkaProducer(bootstrap_servers=run.settings.kafka_bootstrap, acks="all",
                             max_request_size=2 * 1024 * 1024)
    expected_dead = []
    for i, (value, field) in enumerate(BAD * 3):
        producer.send(topics[i % 3], key=f"bad-{i}".encode(), value=value)
        expected_dead.append(field)
    # a flood of new entity keys: 20,000 api keys never seen before, each used once (valid events)
    enc = msgspec.json.Encoder()
    for i in range(20_000):
        producer.send(run.settings.topic_api_usage, key=f"k{i}".encode(), value=enc.encode({
            "kind": "api_usage", "event_id": f"flood-{i}", "ts": f"2026-11-02T10:{i // 1000 % 60:02d}:00Z",
            "api_key_id": f"flood-key-{i}", "principal": f"p{i}", "client_ip": f"10.{i % 250}.{i // 250 % 250}.9",
            "method": "POST", "endpoint": "/v1/chat", "status": 200, "auth_result": "ok"}))
    producer.flush()
    producer.close()
    # and ordinary traffic after all of that: the stream must go on
    produce_kafka(Simulation(seed=23, events=6_000, days=1), run.settings.kafka_bootstrap, run.settings.topics())
    total = len(expected_dead) + 20_000 + 6_000
    w = WorkerProc(run, "sturdy").start()
    try:
        wait_committed(run, total, [w])
        assert w.alive()
        peak_mb = w.rss_mb()
    finally:
        assert w.terminate() == 0
    dead = dead_letters(run)
    assert len(dead) == len(expected_dead)
    fields = sorted(dict(m.headers)["spyglass.error.field"].decode() for m in dead)
    assert fields == sorted(expected_dead)
    for m in dead:
        h = dict(m.headers)
        assert h["spyglass.error.reason"], "every dead letter says why"
        assert h["spyglass.source.topic"].decode() in topics
        assert int(h["spyglass.source.offset"]) >= 0
    assert stored_event_ids(run) == 20_000 + 6_000
    # memory: the worker's peak RSS with 20,000 extra keys stays under the budget
    assert peak_mb < 1_024, f"peak RSS {peak_mb:.0f} MB"
