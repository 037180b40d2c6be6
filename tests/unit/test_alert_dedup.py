"""Alert de-duplication across owners and retries, without services: where a new owner's alerts-topic scan starts,
how far it reads, and a retried alerts insert that stores nothing twice."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from types import SimpleNamespace
from typing import NamedTuple

import msgspec

from detectors.engine import Engine
from streams import metrics as m
from streams.checkpoints import Checkpoint, CheckpointStore, Mark
from streams.partitions import ALERT_SCAN_MARGIN_S, alert_scan_start_ms
from streams.worker import alert_ids_up_to
from tests.unit.test_scorer import _acked, _raws, _Rec


def test_the_alerts_scan_starts_at_the_snapshot_time_not_the_save_time():
    taken, written = datetime(2026, 1, 1, 12, 0, tzinfo=UTC), datetime(2026, 1, 1, 12, 30, tzinfo=UTC)
    cp = Checkpoint("t", 0, 10, Engine(), written, None, taken)
    assert alert_scan_start_ms(cp) == (int(taken.timestamp()) - ALERT_SCAN_MARGIN_S) * 1000
    old = Checkpoint("t", 0, 10, Engine(), written)  # written before the snapshot time was recorded
    assert alert_scan_start_ms(old) == (int(written.timestamp()) - ALERT_SCAN_MARGIN_S) * 1000


def test_a_checkpoint_keeps_when_its_snapshot_was_taken(tmp_path):
    from schemas.migrate import migrate
    from streams.settings import StoreURL
    from streams.sinks.clickhouse import ChdbStore

    chdb = ChdbStore(StoreURL.parse(f"chdb://{tmp_path / 'chdb'}"), database="cp")
    try:
        migrate(chdb)
        cps = CheckpointStore(chdb, "g", b"k" * 32)
        taken = datetime(2026, 1, 1, 12, 0, 0, 250_000, tzinfo=UTC)
        cps.save_states([("t", 0, 5, Engine().state(), 0)], [Mark(4, "ab")], taken_at=[taken])
        got = cps.load("t", 0)
        assert got is not None and got.taken_at == taken and got.mark == Mark(4, "ab")
    finally:
        chdb.close()


class _TP(NamedTuple):
    topic: str
    partition: int


class _Consumer:
    """A stand-in for an assigned consumer: ``polls`` are what each poll returns, in turn (then nothing)."""

    def __init__(self, polls: list[dict]) -> None:
        self.polls = polls
        self.positions: dict = {}

    def poll(self, timeout_ms: int, max_records: int) -> dict:
        batch = self.polls.pop(0) if self.polls else {}
        for tp, msgs in batch.items():
            self.positions[tp] = msgs[-1].offset + 1
        return batch

    def position(self, tp) -> int:
        return self.positions.get(tp, 0)


def _alert(offset: int, alert_id: str) -> SimpleNamespace:
    return SimpleNamespace(offset=offset, value=msgspec.json.encode({"alert_id": alert_id}))


def test_the_scan_reads_to_the_end_offsets_past_an_empty_poll():
    tp = _TP("alerts", 0)
    consumer = _Consumer([{}, {tp: [_alert(0, "a")]}, {}, {tp: [_alert(1, "b"), _alert(2, "late")]}])
    before = m.ALERT_SCANS_PARTIAL._value.get()
    assert alert_ids_up_to(consumer, {tp: 2}, time_limit_s=60) == {"a", "b"}  # offset 2: published after the start
    assert m.ALERT_SCANS_PARTIAL._value.get() == before


def test_a_scan_short_of_the_end_at_its_time_limit_is_counted_partial():
    tp = _TP("alerts", 0)
    consumer = _Consumer([{tp: [_alert(0, "a")]}])
    ticks = iter(range(0, 1000, 10))
    before = m.ALERT_SCANS_PARTIAL._value.get()
    assert alert_ids_up_to(consumer, {tp: 5}, time_limit_s=30, clock=lambda: next(ticks)) == {"a"}
    assert m.ALERT_SCANS_PARTIAL._value.get() == before + 1


def test_a_retried_alerts_insert_stores_only_the_alerts_the_failed_try_did_not(tmp_path):
    from schemas.migrate import migrate
    from streams.scoring import Scorer
    from streams.settings import Settings, StoreURL
    from streams.sinks.base import StoreError
    from streams.sinks.clickhouse import ChdbStore

    settings = Settings(event_max_age_days=0, stack_dir=tmp_path, worker_insert_min_rows=1, worker_checkpoint_s=3600,
                        engine_learning_hours=0)
    topic = settings.topics()["agent_execution"]
    chdb = ChdbStore(StoreURL.parse(f"chdb://{tmp_path / 'chdb'}"), database="retry")
    alert_inserts: list[int] = []

    class LandsThenFails:  # the first alerts insert is stored, but its reply is lost
        database = "retry"

        def insert(self, table, columns):
            out = chdb.insert(table, columns)
            if table == "alerts":
                alert_inserts.append(len(columns["alert_id"]))
                if len(alert_inserts) == 1:
                    raise StoreError("connection reset after the insert")
            return out

        def query(self, sql):
            return chdb.query(sql)

    async def run() -> None:
        scorer = Scorer(settings, LandsThenFails(), CheckpointStore(chdb, "g", b"k" * 32), _acked,
                        ack=lambda *_a: None)
        try:
            await scorer.handle({(topic, 0): [_Rec(topic, 0, i, None, raw)
                                              for i, raw in enumerate(_raws("agent_execution", 300))]})
            await scorer.flush()
        finally:
            scorer.close()

    try:
        migrate(chdb)
        asyncio.run(run())
        rows = chdb.query("SELECT alert_id FROM retry.alerts")  # no FINAL: a row stored twice counts twice
        assert rows and len(rows) == len({r[0] for r in rows})
        assert alert_inserts == [len(rows)]  # the retry found every alert stored: nothing inserted again
    finally:
        chdb.close()
