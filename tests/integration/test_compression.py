"""Record batches compressed by the producer, on the real broker: the worker scores and stores events that came in
snappy, lz4 or zstd batches (the default of many producers, e.g. franz-go's snappy), as it does gzip ones."""

from __future__ import annotations

import asyncio
import json
import struct
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
# Kafka's record batch v2 layout (the protocol's): the CRC-32C at byte 17 covers everything from the
# attributes (int16, the codec in its low 3 bits) at byte 21 on; the records follow the 61-byte header.
CRC_AT, ATTRIBUTES_AT, HEADER_SIZE = 17, 21, 61


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


def _raw_batch(codec: int, damage: str, rows: list[dict]) -> bytes:
    """A record batch of ``rows`` compressed with ``codec`` (Kafka's attribute bits), its compressed payload or
    its codec bits then damaged as ``damage`` says and its CRC recomputed, so only decompression can tell."""
    from aiokafka.record.default_records import DefaultRecordBatchBuilder
    from aiokafka.record.util import calc_crc32c_py

    builder = DefaultRecordBatchBuilder(magic=2, compression_type=codec, is_transactional=0, producer_id=-1,
                                        producer_epoch=-1, base_sequence=-1, batch_size=1 << 30)
    for i, row in enumerate(rows):
        value = json.dumps(row).encode()
        builder.append(i, timestamp=None, key=entity_of(decode(value)).encode(), value=value, headers=[])
    buf = builder.build()
    if damage == "payload":
        for i in range(HEADER_SIZE + 8, len(buf) - 8):
            buf[i] ^= 0x5A
    elif damage == "codec":  # 6 and 7: no codec of Kafka's
        attrs = struct.unpack_from(">h", buf, ATTRIBUTES_AT)[0]
        struct.pack_into(">h", buf, ATTRIBUTES_AT, (attrs & ~0x07) | 0x06)
    struct.pack_into(">I", buf, CRC_AT, calc_crc32c_py(bytes(buf[ATTRIBUTES_AT:])))
    return bytes(buf)


def test_the_broker_refuses_a_corrupt_or_unknown_codec_batch_so_no_consumer_ever_sees_one(fresh_topics: Settings):
    """A hostile producer's damaged batch (valid CRC) is refused at produce time; only the intact ones are read."""
    from aiokafka.client import AIOKafkaClient
    from aiokafka.errors import NoError, for_code
    from aiokafka.protocol.produce import ProduceRequest
    from aiokafka.structs import TopicPartition

    topic, rows = fresh_topics.topic_api_usage, [r for r in sample_stream(per_kind=5) if r["kind"] == "api_usage"]

    async def produce(batch: bytes) -> type:
        client = AIOKafkaClient(bootstrap_servers=fresh_topics.kafka_bootstrap,
                                **kafka_client_config(fresh_topics, "aiokafka"))
        await client.bootstrap()
        try:
            client.add_topic(topic)
            for _ in range(20):  # a new topic may not have its leader yet
                await client.force_metadata_update()
                leader = client.cluster.leader_for_partition(TopicPartition(topic, 0))
                if leader is not None and leader >= 0:
                    resp = await client.send(leader, ProduceRequest(
                        transactional_id=None, required_acks=-1, timeout=10_000, topics=[(topic, [(0, batch)])]))
                    error = for_code(resp.topics[0][1][0][1])
                    if not getattr(error, "retriable", False):
                        return error
                await asyncio.sleep(0.5)
            raise AssertionError("no leader for the topic")
        finally:
            await client.close()

    for codec in (2, 3, 4):  # snappy, lz4, zstd
        assert asyncio.run(produce(_raw_batch(codec, "none", rows))) is NoError
        for damage in ("payload", "codec"):
            assert asyncio.run(produce(_raw_batch(codec, damage, rows))) is not NoError, (codec, damage)
    got = consume_all(fresh_topics, [topic], 3 * len(rows), timeout_s=20)
    assert sorted(json.loads(m.value)["event_id"] for m in got) == sorted([r["event_id"] for r in rows] * 3)
