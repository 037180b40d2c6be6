"""Record batches compressed by the producer, on the real broker: the worker scores and stores events that came in
snappy, lz4 or zstd batches (the default of many producers, e.g. franz-go's snappy), as it does gzip ones."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

from schemas.events import decode, entity_of
from schemas.samples import sample_stream
from streams.checkpoints import Mark
from streams.kafka_security import kafka_client_config
from streams.settings import Settings
from streams.worker import RecordReader
from tests.fault.harness import Run, WorkerProc, dead_letters, stored_event_ids, wait_committed
from tests.integration.test_pipeline import consume_all

CODECS = ("snappy", "lz4", "zstd", "gzip")


def produce_compressed(settings: Settings, codec: str, rows: list[dict]) -> int:
    """Send ``rows`` to their kinds' topics in ``codec``-compressed batches (aiokafka's producer); how many."""
    from aiokafka import AIOKafkaProducer

    topics = settings.topics()

    async def go() -> int:
        producer = AIOKafkaProducer(bootstrap_servers=settings.kafka_bootstrap, compression_type=codec, acks="all",
                                    linger_ms=50, **kafka_client_config(settings, "aiokafka"))
        await producer.start()
        try:
            sent = []
            for row in rows:
                value = json.dumps(row).encode()
                sent.append(await producer.send(topics[row["kind"]], value, key=entity_of(decode(value)).encode()))
            await producer.flush()
            return sum(1 for f in sent if f.result().offset >= 0)
        finally:
            await producer.stop()

    return asyncio.run(go())


def test_the_worker_scores_and_stores_events_from_snappy_lz4_zstd_and_gzip_batches(stack_settings: Settings,
                                                                                    tmp_path: Path):
    run = Run.create(stack_settings, tmp_path)
    try:
        total = 0
        for codec in CODECS:
            rows = [{**r, "event_id": f"{codec}-{r['event_id']}"} for r in sample_stream(per_kind=10)]
            total += produce_compressed(run.settings, codec, rows)
        assert total == 30 * len(CODECS)
        w = WorkerProc(run, "codecs").start()
        try:
            wait_committed(run, total, [w], timeout_s=180)
            assert w.alive(), w.tail()
        finally:
            assert w.terminate() == 0, w.tail()
        assert stored_event_ids(run) == total
        assert dead_letters(run) == []
    finally:
        run.cleanup()


def test_the_kafka_python_consumers_read_snappy_lz4_and_zstd_batches(fresh_topics: Settings):
    """kafka-python reads event topics too: ``spyglass ingest`` and the worker's record check on restore."""
    rows = sample_stream(per_kind=10)
    codec_of = dict(zip(fresh_topics.topics(), ("snappy", "lz4", "zstd"), strict=True))
    for kind, codec in codec_of.items():
        assert produce_compressed(fresh_topics, codec, [r for r in rows if r["kind"] == kind]) == 10
    got = consume_all(fresh_topics, list(fresh_topics.topics().values()), 30, timeout_s=30)
    assert sorted(json.loads(m.value)["event_id"] for m in got) == sorted(r["event_id"] for r in rows)
    reader = RecordReader(fresh_topics)
    try:
        for m in got:
            if m.offset == 0:
                assert reader(m.topic, m.partition, 0) == Mark.of(0, m.key, m.value), m.topic
    finally:
        reader.close()
