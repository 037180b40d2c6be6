"""Store errors that know what they are, on the real ClickHouse server: a data error is never retried forever,
the rows at fault are quarantined (dead-lettered with the reason) and every other row is stored.

The scorer publishes (dead letters, alerts) through a real aiokafka producer to the session's broker, as the
worker's Faust producer does, and the dead letters are read back from the topic."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime

import pytest

from schemas.migrate import migrate
from schemas.rows import alert_columns
from streams.checkpoints import CheckpointStore
from streams.kafka_security import kafka_client_config
from streams.quarantine import Isolating, halves_of_list
from streams.scoring import Scorer
from streams.settings import Settings
from streams.sinks.base import StoreDataError, StoreError
from streams.sinks.clickhouse import NativeStore
from tests.fault.harness import Run, read_topic
from tests.unit.test_scorer import _raws
from tests.unit.test_store_errors import _spread_over_days


@pytest.fixture
def server_store(stack_settings: Settings):
    store = NativeStore(stack_settings.store().with_database(f"se_{uuid.uuid4().hex[:8]}"))
    migrate(store)
    yield store
    store.execute(f"DROP DATABASE IF EXISTS {store.database}")
    store.close()


@pytest.fixture
def run(stack_settings: Settings, tmp_path):
    """Fresh topics (events, alerts, dead letters, evidence) for one test on the session's broker."""
    r = Run.create(stack_settings, tmp_path, partitions=1)
    yield r
    r.cleanup()


@contextlib.asynccontextmanager
async def _publisher(settings: Settings) -> AsyncIterator:
    """The scorer's ``publish`` over a real aiokafka producer (acks=all), as the worker's Faust producer."""
    from aiokafka import AIOKafkaProducer

    producer = AIOKafkaProducer(bootstrap_servers=settings.kafka_bootstrap, acks="all",
                                **kafka_client_config(settings, "aiokafka"))
    await producer.start()

    async def publish(topic: str, key: bytes | None, value: bytes, headers: list | None):
        return await producer.send(topic, value, key=key, headers=headers)

    try:
        yield publish
    finally:
        await producer.stop()


@dataclass
class _Rec:
    offset: int
    key: bytes | None
    value: bytes | None


def test_an_event_time_out_of_range_is_quarantined_never_wrapped_and_the_writer_goes_on(server_store, run, tmp_path):
    """A time before the store's DateTime range is refused by name, never wrapped by ``astype('<u4')`` (which
    would store 1969-12-31T23:59:59 as 2106-02-07T06:28:15)."""
    from schemas.block import decode_block
    from streams.writer import Writes

    raws = _raws("api_usage", 50)
    block, _, _ = decode_block(raws, "api_usage", "default")
    block.cols["ts"] = block.cols["ts"].copy()
    block.cols["ts"][17] = -1_000_000  # one second before 1970: past the edge check (a replayed block, a bug)
    block.scores = [0.0] * len(block)
    bad_id = block.cols["event_id"][17]
    settings = run.settings.model_copy(update={"event_max_age_days": 0, "stack_dir": tmp_path})

    async def score() -> Scorer:
        async with _publisher(settings) as publish:
            scorer = Scorer(settings, server_store, CheckpointStore(server_store, "g", b"k" * 32), publish,
                            ack=lambda *_a: None)
            try:
                await scorer.writer.enqueue(Writes(events=[block], flush=True))
                await asyncio.wait_for(scorer.flush(), timeout=120)
            finally:
                scorer.close()
        return scorer

    assert asyncio.run(score()).failed is None
    db = server_store.database
    stored = server_store.query(f"SELECT event_id, toUnixTimestamp(ts) FROM {db}.events")  # noqa: S608
    assert len(stored) == 49 and bad_id not in {r[0] for r in stored}
    assert max(r[1] for r in stored) < 2**32 - 1, "no time wrapped around"
    dead = read_topic(run, settings.topic_dead_letter)
    assert [m.value for m in dead] == [raws[17]]  # on the broker: the one record, whole
    headers = dict(dead[0].headers)
    assert headers["spyglass.stage"] == b"store" and bad_id.encode() in headers["spyglass.error.reason"]
    assert b"out of range" in headers["spyglass.error.reason"]


def test_the_writer_stores_an_insert_of_150_days(server_store, run, tmp_path):
    """18.16 takes any number of partitions in one insert; later servers refuse more than 100 (code 252, a data
    error: see tests/unit/test_store_errors.py), and the writer then stores the insert in pieces."""
    raws = _spread_over_days(_raws("api_usage", 600), 150)
    settings = run.settings.model_copy(update={"event_max_age_days": 0, "stack_dir": tmp_path,
                                               "worker_insert_min_rows": 1, "worker_checkpoint_s": 3600})
    topic = settings.topics()["api_usage"]
    failures: list[BaseException] = []

    async def score() -> Scorer:
        async with _publisher(settings) as publish:
            scorer = Scorer(settings, server_store, CheckpointStore(server_store, "g", b"k" * 32), publish,
                            ack=lambda *_a: None, on_failure=failures.append)
            try:
                await scorer.handle({(topic, 0): [_Rec(i, None, r) for i, r in enumerate(raws)]})
                await asyncio.wait_for(scorer.flush(), timeout=120)
            finally:
                scorer.close()
        return scorer

    scorer = asyncio.run(score())
    assert scorer.failed is None and failures == []
    assert read_topic(run, settings.topic_dead_letter) == []  # nothing quarantined: stored in pieces
    db = server_store.database
    assert server_store.query(f"SELECT count(), uniqExact(toDate(ts)) FROM {db}.events") == [(600, 150)]  # noqa: S608


def test_an_alert_the_server_cannot_store_is_quarantined_and_the_others_are_stored(server_store):
    from schemas.alerts import Alert, Evidence, Feature

    def alert(i: int, first_seen: str) -> Alert:
        return Alert(alert_id=f"a{i}", tenant="t", detector="api.new_client", kind="api_usage",
                     entity_type="api_key", entity=f"k{i}", severity="high", score=0.8, first_seen=first_seen,
                     last_seen="2026-11-02T10:05:00Z", title="New client", explanation="x",
                     evidence=Evidence(features=[Feature(name="ip_new", value=1.0)], event_ids=["e1"]), tags=[])

    alerts = [alert(i, "2026-11-02T10:00:00Z") for i in range(7)]
    alerts.insert(4, alert(99, "9999-01-01T00:00:00Z"))  # outside DateTime: the driver cannot write it
    created = datetime(2026, 11, 2, 11, tzinfo=UTC)

    def insert(piece: list[Alert]) -> None:
        server_store.insert("alerts", alert_columns(piece, created, [("t", 0, i) for i in range(len(piece))]))

    with pytest.raises(StoreError) as whole:
        insert(alerts)
    assert isinstance(whole.value, StoreDataError), whole.value
    job = Isolating(alerts, insert, len, halves_of_list)
    job.run()
    assert [[a.alert_id for a in piece] for piece, _ in job.refused] == [["a99"]]
    rows = server_store.query(f"SELECT alert_id FROM {server_store.database}.alerts ORDER BY alert_id")  # noqa: S608
    assert [r[0] for r in rows] == [f"a{i}" for i in range(7)]
