"""Hostile input and a recreated topic, on the real broker and ClickHouse server: no record can stop or blind
the worker, and no offset is silently skipped."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta

import msgspec

from streams.simulator.output import produce_kafka
from streams.simulator.run import Simulation
from streams.stack.kafka import delete_topics, ensure_topics
from tests.fault.harness import (
    Run,
    WorkerProc,
    check_accounting_and_alerts,
    dead_letters,
    end_offsets,
    produce_rows,
    reference_alert_ids,
    score_with_one_worker,
    stored_alerts,
    stored_event_ids,
    wait_committed,
)


def test_a_1_mb_and_a_5_mb_compressed_record_are_dead_lettered_bounded_and_the_worker_never_crashes(run: Run):
    """Before: the 1 MB record went to the dead-letter topic whole, the producer refused it (over its 1 MB
    limit), the writer failed and the worker crashed, restarting on the same record."""
    from kafka import KafkaProducer

    big = b'{"kind":"api_usage","event_id":"big","pad":"' + b"x" * 1_000_000 + b'"}'
    huge = b'{"kind":"data_access","event_id":"huge","pad":"' + b"y" * 5_000_000 + b'"}'
    plain = KafkaProducer(bootstrap_servers=run.settings.kafka_bootstrap, acks="all", max_request_size=2_000_000)
    plain.send(run.settings.topic_api_usage, key=b"big", value=big).get(30)  # the broker's default takes ~1 MB
    plain.close()
    gzip = KafkaProducer(bootstrap_servers=run.settings.kafka_bootstrap, acks="all", compression_type="gzip",
                         max_request_size=8_000_000)
    gzip.send(run.settings.topic_data_access, key=b"huge", value=huge).get(30)  # compressed: about 5 KB
    gzip.close()
    produce_kafka(Simulation(seed=23, events=6_000, days=1), run.settings.kafka_bootstrap, run.settings.topics())
    w = WorkerProc(run, "sturdy").start()
    try:
        wait_committed(run, 6_002, [w], timeout_s=180)
        assert w.alive(), w.tail()
    finally:
        assert w.terminate() == 0, w.tail()
    assert w.starts == 1
    dead = {dict(m.headers)["spyglass.source.topic"].decode(): m for m in dead_letters(run)}
    assert set(dead) == {run.settings.topic_api_usage, run.settings.topic_data_access}
    for topic, value in ((run.settings.topic_api_usage, big), (run.settings.topic_data_access, huge)):
        h = dict(dead[topic].headers)
        assert len(dead[topic].value) == 4096 and value.startswith(dead[topic].value)
        assert int(h["spyglass.value.size"]) == len(value) and h["spyglass.value.truncated"] == b"true"
        assert b"above the 65536-byte limit" in h["spyglass.error.reason"]
    assert stored_event_ids(run) == 6_000


def _redated(rows: list[dict], to: datetime) -> list[dict]:
    """The rows moved in time so that the first is at ``to`` (the run keeps its shape)."""
    first = datetime.fromisoformat(rows[0]["ts"].replace("Z", "+00:00"))
    out = []
    for r in rows:
        ts = datetime.fromisoformat(r["ts"].replace("Z", "+00:00")) - first + to
        out.append({**r, "ts": ts.isoformat(timespec="milliseconds").replace("+00:00", "Z")})
    return out


def test_far_future_and_far_past_times_are_dead_lettered_and_change_no_alert(run: Run):
    """Before: one valid event dated 9999 moved its engine's watermark and idle eviction wiped the partition's
    state (fewer alerts on the traffic after it); an event dated 2030 was taken."""
    run.worker_settings = {"event_max_future_s": 3600, "event_max_age_days": 30}
    now = datetime.now(UTC).replace(microsecond=0)
    rows = _redated([r for ch in Simulation(seed=29, events=8_000, days=1).chunks() for r in ch.rows],
                    now - timedelta(days=2))
    rows.sort(key=lambda r: r["ts"])
    odd_times = ["9999-12-31T23:59:59Z", "2030-01-01T00:00:00Z", (now + timedelta(hours=3)).isoformat(),
                 "2001-01-01T00:00:00Z", (now - timedelta(days=45)).isoformat(), "1969-07-20T20:17:00Z"]
    odd = []
    for i, ts in enumerate(odd_times):  # valid events of busy entities, re-dated, in the first third of the run
        row = {**rows[1_000 + i * 400], "event_id": f"odd-{i}", "ts": ts.replace("+00:00", "Z")}
        odd.append(row)
        rows.insert(1_001 + i * 400, row)
    produce_rows(run, rows, rate=100_000).wait(120)
    score_with_one_worker(run, "edge", len(rows))
    dead = dead_letters(run)
    assert sorted(msgspec.json.decode(m.value)["event_id"] for m in dead) == sorted(r["event_id"] for r in odd)
    assert {dict(m.headers)["spyglass.error.field"] for m in dead} == {b"$.ts"}
    assert stored_event_ids(run) == len(rows) - len(odd)
    odd_ids = {r["event_id"] for r in odd}
    reference = reference_alert_ids(run, keep=lambda ev: ev.event_id not in odd_ids)
    assert reference and set(stored_alerts(run)) == reference


def _recreate(run: Run, topic: str, timeout_s: float = 60) -> None:
    """Delete ``topic`` and create it again, empty (deletion is asynchronous: wait until it is gone)."""
    from kafka.errors import KafkaError

    delete_topics(run.settings, [topic])
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            if topic in ensure_topics(run.settings, partitions=3) and end_offsets(run, [topic]) and \
                    sum(end_offsets(run, [topic]).values()) == 0:
                return
        except KafkaError:
            pass
        if time.monotonic() > deadline:
            raise AssertionError(f"{topic} was not recreated in {timeout_s}s")
        time.sleep(1.0)


def test_a_topic_deleted_and_recreated_is_scored_from_its_start_never_skipped(run: Run):
    """Before: the restored checkpoint's offset (past the new log's end) made the worker skip and ack every
    record of the recreated topic below it."""
    topic = run.settings.topic_api_usage
    produce_kafka(Simulation(seed=31, events=9_000, days=1), run.settings.kafka_bootstrap, run.settings.topics())
    before = sum(end_offsets(run, run.event_topics()).values())
    w = WorkerProc(run, "first").start()
    try:
        wait_committed(run, before, [w])
    finally:
        assert w.terminate() == 0, w.tail()
    old_api = sum(end_offsets(run, [topic]).values())
    stored_before = stored_event_ids(run)

    _recreate(run, topic)
    rows = [r for ch in Simulation(seed=37, events=6_000, days=1).chunks() for r in ch.rows
            if r["kind"] == "api_usage"][: old_api // 2]  # fewer than the old topic held: every offset is "old"
    produce_rows(run, rows, rate=100_000).wait(60)
    w2 = WorkerProc(run, "second").start()
    try:
        wait_committed(run, sum(end_offsets(run, run.event_topics()).values()), [w2])
    finally:
        assert w2.terminate() == 0, w2.tail()
    assert stored_event_ids(run) == stored_before + len(rows), "records of the recreated topic were skipped"
    log = w2.log.read_text(errors="replace")
    assert "past the log end" in log and "restarts cold" in log


def test_an_insert_the_server_refuses_for_one_row_is_split_the_row_dead_lettered_the_rest_stored(run: Run):
    """The server refuses an events insert for the data of a few rows (here: a MATERIALIZED column of the test's
    own database that cannot parse those rows' ids, code 6). Before: every store error was retried forever and the
    writer stalled every partition; now the insert is split until each refused row is alone, those rows are
    dead-lettered with the server's reason, the others stored, and the worker goes on."""
    from schemas.migrate import migrate

    st = run.store()
    try:
        migrate(st)
        st.execute(f"ALTER TABLE {run.db}.events ADD COLUMN trap UInt32 "
                   "MATERIALIZED toUInt32(if(event_id LIKE 'poison-%', event_id, '0'))")
    finally:
        st.close()
    rows = [r for ch in Simulation(seed=47, events=6_000, days=1).chunks() for r in ch.rows]
    poison = [{**rows[500 + i * 1_500], "event_id": f"poison-{i}"} for i in range(3)]
    for i, row in enumerate(poison):  # valid events, of busy entities, between the others
        rows.insert(501 + i * 1_500, row)
    produce_rows(run, rows, rate=100_000).wait(120)
    w = score_with_one_worker(run, "picky", len(rows))
    assert w.starts == 1
    dead = dead_letters(run)
    assert sorted(msgspec.json.decode(m.value)["event_id"] for m in dead) == [r["event_id"] for r in poison]
    for m in dead:
        h = dict(m.headers)
        assert h["spyglass.stage"] == b"store" and b"Cannot parse" in h["spyglass.error.reason"], h
    assert stored_event_ids(run) == len(rows) - len(poison)
    check_accounting_and_alerts(run, len(rows), reference_alert_ids(run))
