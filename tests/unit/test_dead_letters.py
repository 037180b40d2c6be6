"""Dead letters are bounded, and one Kafka refuses is a problem of its record, never of the worker."""

from __future__ import annotations

import asyncio
import hashlib

from aiokafka.errors import MessageSizeTooLargeError
from faust.exceptions import ProducerSendError

from schemas.errors import EventError
from schemas.events import MAX_RECORD_BYTES
from streams import metrics as m
from streams.checkpoints import CheckpointStore
from streams.records import DEAD_LETTER_KEY_BYTES, DEAD_LETTER_PREFIX_BYTES, dead_letter
from streams.scoring import Scorer
from streams.settings import Settings, StoreURL
from streams.sinks.clickhouse import ChdbStore
from tests.unit.test_scorer import _raws, _Rec


def test_an_oversized_value_leaves_a_prefix_its_size_and_hash_never_the_whole_record():
    value = b'{"kind":"api_usage","pad":"' + b"x" * 1_000_000 + b'"}'
    key = b"k" * 100_000
    letter = dead_letter("t", 2, 7, key, value, EventError("$", "too big"), "worker")
    h = dict(letter.headers)
    assert letter.value == value[:DEAD_LETTER_PREFIX_BYTES]
    assert int(h["spyglass.value.size"]) == len(value)
    assert h["spyglass.value.sha256"].decode() == hashlib.sha256(value).hexdigest()
    assert h["spyglass.value.truncated"] == b"true"
    assert letter.key == key[:DEAD_LETTER_KEY_BYTES] and int(h["spyglass.key.size"]) == len(key)
    assert h["spyglass.source.offset"] == b"7" and h["spyglass.error.field"] == b"$"
    small = b'{"not": "an event"}'
    whole = dead_letter("t", 0, 1, b"k", small, EventError("$", "no kind"), "worker")
    assert whole.value == small and "spyglass.value.size" not in dict(whole.headers)
    at_limit = b"x" * MAX_RECORD_BYTES
    assert dead_letter("t", 0, 1, None, at_limit, EventError("$", "x"), "w").value == at_limit


def _score_with(tmp_path, publish) -> tuple[Scorer, list]:
    settings = Settings(event_max_age_days=0, stack_dir=tmp_path, worker_insert_min_rows=1, worker_checkpoint_s=3600)
    topic = settings.topics()["api_usage"]
    store = ChdbStore(StoreURL.parse(f"chdb://{tmp_path / 'chdb'}"), database="dl")
    from schemas.migrate import migrate

    migrate(store)
    failures: list[BaseException] = []
    raws = _raws("api_usage", 20)
    recs = [_Rec(topic, 0, i, None, raw) for i, raw in enumerate(raws)]
    recs[5] = _Rec(topic, 0, 5, b"key", b'{"kind":"api_usage","pad":"' + b"x" * 1_000_000 + b'"}')
    recs[9] = _Rec(topic, 0, 9, None, b'{"not": "an event"}')

    async def run() -> Scorer:
        scorer = Scorer(settings, store, CheckpointStore(store, "g", b"k"), publish, ack=lambda *_a: None,
                        on_failure=failures.append)
        try:
            await scorer.handle({(topic, 0): recs})
            await scorer.flush()
        finally:
            scorer.close()
        return scorer

    scorer = asyncio.run(run())
    n = store.query("SELECT count() FROM dl.events")[0][0]
    store.close()
    assert scorer.failed is None and failures == [], failures
    assert n == 18, "the other records are stored"
    return scorer, failures


def test_a_dead_letter_kafka_refuses_is_published_without_its_value_and_the_worker_goes_on(tmp_path):
    sent: list[tuple[str, bytes | None, bytes, dict]] = []

    async def publish(topic, key, value, headers):
        if headers and value and "spyglass.error.reason" in dict(headers):  # every dead letter with a value
            try:  # as Faust's producer raises it
                raise MessageSizeTooLargeError("the producer's limit")
            except MessageSizeTooLargeError as exc:
                raise ProducerSendError(f"Error while sending: {exc!r}") from exc
        sent.append((topic, key, value, dict(headers or ())))
        fut = asyncio.get_running_loop().create_future()
        fut.set_result(None)
        return fut

    _score_with(tmp_path, publish)
    dead = [(v, h) for t, _k, v, h in sent if t.endswith("dead-letter")]
    assert len(dead) == 2 and all(v == b"" and "spyglass.value.dropped" in h for v, h in dead)
    assert sorted(int(h["spyglass.value.size"]) for _, h in dead) == [19, 1_000_029]


def test_a_dead_letter_kafka_refuses_even_bare_is_counted_and_the_worker_goes_on(tmp_path):
    before = m.DEAD_LETTERS_UNPUBLISHED.labels("spyglass.api-usage")._value.get()

    async def publish(topic, key, value, headers):
        if headers and "spyglass.error.reason" in dict(headers):
            fut = asyncio.get_running_loop().create_future()
            fut.set_exception(MessageSizeTooLargeError("refused"))  # refused by the broker, on the future
            return fut
        fut = asyncio.get_running_loop().create_future()
        fut.set_result(None)
        return fut

    _score_with(tmp_path, publish)
    assert m.DEAD_LETTERS_UNPUBLISHED.labels("spyglass.api-usage")._value.get() == before + 2
