"""Store errors are classified: the data's (never retried; the rows isolated) or transient (retried)."""

from __future__ import annotations

import struct
from datetime import UTC, datetime, timedelta

import msgspec
import pytest
from clickhouse_driver.errors import NetworkError, ServerException, SocketTimeoutError

from schemas.migrate import migrate
from schemas.rows import event_columns
from streams.quarantine import Isolating, halves_of_list
from streams.settings import StoreURL
from streams.sinks.base import StoreDataError, StoreError, classify
from streams.sinks.clickhouse import ChdbStore
from tests.unit.test_scorer import _raws


def _spread_over_days(raws: list[bytes], days: int) -> list[bytes]:
    """The records re-dated one day apart (each its own day partition of ``events``), ids kept unique."""
    t0 = datetime(2026, 1, 1, tzinfo=UTC)
    out = []
    for i, raw in enumerate(raws):
        row = msgspec.json.decode(raw)
        row["ts"] = (t0 + timedelta(days=i % days, seconds=i)).isoformat().replace("+00:00", "Z")
        out.append(msgspec.json.encode(row))
    return out


@pytest.mark.parametrize(("exc", "data"), [
    (ServerException("DB::Exception: Too many partitions for single INSERT block (more than 100).", 252), True),
    (ServerException("DB::Exception: Too many parts (300). Merges are processing significantly slower", 252), False),
    (ServerException("DB::Exception: Value is out of range", 321), True),
    (ServerException("DB::Exception: Cannot parse DateTime", 41), True),
    (ServerException("DB::Exception: Memory limit exceeded", 241), False),
    (ServerException("DB::Exception: Table is in readonly mode", 242), False),
    (NetworkError("Connection refused"), False),
    (SocketTimeoutError("timed out"), False),
    (TimeoutError("timed out"), False),
    (ConnectionResetError("reset"), False),
    (struct.error("'I' format requires 0 <= number <= 4294967295"), True),
    (OverflowError("timestamp out of range"), True),
    (RuntimeError("Code: 53. DB::Exception: Type mismatch in IN or VALUES section"), True),  # chDB's form
    (RuntimeError("Code: 209. DB::NetException: Timeout exceeded"), False),
])
def test_errors_are_classified_by_code_and_kind(exc: BaseException, data: bool):
    err = classify(exc, "store: insert into events")
    assert isinstance(err, StoreError) and isinstance(err, StoreDataError) == data and err.transient != data


def test_an_insert_spanning_more_than_100_days_is_a_data_error_on_a_current_clickhouse(tmp_path):
    from schemas.events import decode

    store = ChdbStore(StoreURL.parse(f"chdb://{tmp_path / 'chdb'}"), database="parts")
    try:
        migrate(store)
        events = [decode(r) for r in _spread_over_days(_raws("api_usage", 150), 150)]
        cols = event_columns(events, [b"{}"] * len(events), [0.0] * len(events), datetime.now(UTC))
        with pytest.raises(StoreDataError) as refused:
            store.insert("events", cols)
        assert refused.value.code == 252
    finally:
        store.close()


def test_isolating_stores_every_good_row_once_and_resumes_after_a_transient_error():
    stored: list[int] = []
    calls = {"n": 0}

    def insert(piece: list[int]) -> None:
        calls["n"] += 1
        if calls["n"] == 4:
            raise StoreError("connection reset")  # transient, after some pieces were stored
        if 13 in piece or 42 in piece:
            raise StoreDataError("value out of range")
        stored.extend(piece)

    retried: list[list[int]] = []

    def before_retry(piece: list[int]) -> list[int]:
        retried.append(piece)
        return [x for x in piece if x not in stored]

    job = Isolating(list(range(64)), insert, len, halves_of_list, before_retry)
    with pytest.raises(StoreError):
        job.run()
    job.run()  # what StoreIO.call does after a transient error
    assert sorted(stored) == [x for x in range(64) if x not in (13, 42)]
    assert len(stored) == len(set(stored)), "no row stored twice"
    assert [piece for piece, _ in job.refused] == [[13], [42]]
    assert len(retried) == 1
