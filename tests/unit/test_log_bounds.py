"""A checkpoint outside its partition's log (topic recreated, records deleted unscored) is never a silent skip."""

from __future__ import annotations

import asyncio
import logging

import pytest

from detectors.engine import Engine
from schemas.events import decode
from schemas.migrate import migrate
from streams.checkpoints import CheckpointStore, Mark
from streams.partitions import CheckpointOutOfRange
from streams.scoring import Scorer
from streams.settings import Settings, StoreURL
from streams.sinks.clickhouse import ChdbStore
from tests.unit.test_scorer import _acked, _raws, _Rec

KEY = b"k" * 32


@pytest.fixture
def store(tmp_path):
    st = ChdbStore(StoreURL.parse(f"chdb://{tmp_path / 'chdb'}"), database="lb")
    migrate(st)
    yield st
    st.close()


def _run(settings: Settings, store, bounds: tuple[int, int], first: int, n: int,
         record_at=None) -> tuple[Scorer, list[int]]:
    """Score ``n`` records from offset ``first`` of api-usage[0], whose log is ``bounds``; returns the acked offsets."""
    topic = settings.topics()["api_usage"]
    acked: list[int] = []
    failures: list[BaseException] = []

    async def log_bounds(_t: str, _p: int) -> tuple[int, int]:
        return bounds

    async def go() -> Scorer:
        scorer = Scorer(settings, store, CheckpointStore(store, "g", KEY), _acked, log_bounds=log_bounds,
                        record_at=record_at,
                        ack=lambda _t, _p, offs: acked.extend(offs), on_failure=failures.append)
        raws = _raws("api_usage", first + n)[first:]  # the log's records at those offsets
        try:
            await scorer.handle({(topic, 0): [_Rec(topic, 0, first + i, None, r) for i, r in enumerate(raws)]})
            await scorer.checkpoint_all()
        except CheckpointOutOfRange:
            pass
        finally:
            scorer.close()
        return scorer

    return asyncio.run(go()), acked


def _events(store) -> int:
    return int(store.query("SELECT count() FROM lb.events")[0][0])


def test_a_checkpoint_past_the_log_end_restarts_the_partition_cold_and_loudly(store, tmp_path, caplog):
    settings = Settings(event_max_age_days=0, stack_dir=tmp_path)
    topic = settings.topics()["api_usage"]
    CheckpointStore(store, "g", KEY).save(topic, 0, 1000, Engine())  # the old topic's: 1000 records seen
    with caplog.at_level(logging.ERROR, "spyglass.worker"):
        scorer, acked = _run(settings, store, (0, 300), 0, 300)  # the recreated topic holds 300
    assert scorer.failed is None
    assert _events(store) == 300, "before: every record below the old offset was skipped and acked, unscored"
    assert sorted(acked) == list(range(300))
    assert any("past the log end 300" in r.getMessage() for r in caplog.records)
    # the next owner restores the new checkpoint (300), not the old one past the end, and says nothing more
    caplog.clear()
    with caplog.at_level(logging.ERROR, "spyglass.worker"):
        scorer, acked = _run(settings, store, (0, 350), 300, 50)
    assert scorer.failed is None and _events(store) == 350 and sorted(acked) == list(range(300, 350))
    assert not [r for r in caplog.records if "log end" in r.getMessage()]


def test_a_checkpoint_before_the_log_start_is_an_error_and_the_policy_applies(store, tmp_path, caplog):
    settings = Settings(event_max_age_days=0, stack_dir=tmp_path)
    topic = settings.topics()["api_usage"]
    CheckpointStore(store, "g", KEY).save(topic, 0, 50, Engine())
    with caplog.at_level(logging.ERROR, "spyglass.worker"):
        scorer, _ = _run(settings, store, (100, 400), 100, 300)
    assert scorer.failed is None and _events(store) == 300
    assert any("before the log start 100" in r.getMessage() for r in caplog.records)


def test_the_fail_policy_stops_the_worker_before_anything_is_stored_or_acked(store, tmp_path):
    settings = Settings(event_max_age_days=0, stack_dir=tmp_path, worker_checkpoint_out_of_range="fail")
    topic = settings.topics()["api_usage"]
    CheckpointStore(store, "g", KEY).save(topic, 0, 1000, Engine())
    scorer, acked = _run(settings, store, (0, 300), 0, 300)
    assert isinstance(scorer.failed, CheckpointOutOfRange) and "SPYGLASS_WORKER_CHECKPOINT_OUT_OF_RANGE" in str(
        scorer.failed)
    assert acked == [] and _events(store) == 0


def test_a_checkpoint_inside_the_log_is_restored(store, tmp_path):
    settings = Settings(event_max_age_days=0, stack_dir=tmp_path)
    topic = settings.topics()["api_usage"]
    CheckpointStore(store, "g", KEY).save(topic, 0, 100, Engine())
    scorer, acked = _run(settings, store, (0, 300), 0, 300)
    assert scorer.failed is None and _events(store) == 200, "the records the checkpoint reflects are not stored again"
    assert sorted(acked) == list(range(300))


def _mark(offset: int, raw: bytes) -> Mark:
    return Mark.of(offset, None, raw)


def test_a_recreated_topic_grown_past_the_old_offset_is_told_by_the_record_at_it(store, tmp_path, caplog):
    """Offsets alone cannot tell: the new log holds 300 records, the old checkpoint is at 100. The record it
    covered last (offset 99, another run's) is not the one the log holds there."""
    settings = Settings(event_max_age_days=0, stack_dir=tmp_path)
    topic = settings.topics()["api_usage"]
    other = _raws("data_access", 1)[0]
    CheckpointStore(store, "g", KEY).save(topic, 0, 100, Engine(), _mark(99, other))
    with caplog.at_level(logging.ERROR, "spyglass.worker"):
        scorer, acked = _run(settings, store, (0, 300), 0, 300)  # the fetch holds offset 99: compared there
    assert scorer.failed is None and _events(store) == 300 and sorted(acked) == list(range(300))
    assert any("not the one the checkpoint covered" in r.getMessage() for r in caplog.records)


@pytest.mark.parametrize("same", [True, False])
def test_a_checkpoints_last_record_is_read_from_the_broker_when_the_fetch_starts_after_it(store, tmp_path, same):
    settings = Settings(event_max_age_days=0, stack_dir=tmp_path)
    topic = settings.topics()["api_usage"]
    raws = _raws("api_usage", 100)
    raw99 = raws[99]
    seen = Engine()
    seen.process([decode(r) for r in raws])  # the state after offsets 0..99
    CheckpointStore(store, "g", KEY).save(topic, 0, 100, seen, _mark(99, raw99))
    asked: list[tuple[str, int, int]] = []

    def record_at(t: str, p: int, offset: int) -> Mark:
        asked.append((t, p, offset))
        return _mark(offset, raw99 if same else b"another record")

    scorer, acked = _run(settings, store, (0, 300), 100, 200, record_at)
    assert asked == [(topic, 0, 99)]
    assert scorer.failed is None and _events(store) == 200 and sorted(acked) == list(range(100, 300))
    assert scorer.parts[(topic, 0)].engine.events_seen == (300 if same else 200), "restored, or cold"
    rows = store.query("SELECT count() FROM lb.engine_checkpoints WHERE offset = 300")  # noqa: S608
    assert rows == [(1,)]
