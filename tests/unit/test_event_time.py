"""Event times at the edge: the worker refuses times too far ahead, too old or outside the store's range, and
no engine's watermark moves past the wall clock plus the allowed skew."""

from __future__ import annotations

from datetime import UTC, datetime

import msgspec

from detectors.engine import Engine
from schemas.events import decode as decode_event
from streams.settings import Settings
from streams.step import TimeWindow, decode
from tests.unit.test_scorer import _raws

NOW = datetime(2026, 11, 2, 12, tzinfo=UTC).timestamp()  # the simulated run (seed 5, one day) is this day's


def _dated(raw: bytes, ts: str, event_id: str) -> bytes:
    row = msgspec.json.decode(raw)
    row["ts"], row["event_id"] = ts, event_id
    return msgspec.json.encode(row)


def test_times_too_far_ahead_too_old_or_outside_the_store_are_refused_naming_ts():
    raws = _raws("api_usage", 50)
    odd = {3: ("2030-01-01T00:00:00Z", "ahead"), 5: ("9999-12-31T23:59:59Z", "DateTime range"),
           7: ("2026-11-02T13:30:00Z", "ahead"),
           11: ("2026-09-01T00:00:00Z", "days old"), 13: ("0001-01-01T00:00:00Z", "DateTime range"),
           17: ("1969-12-31T23:59:59Z", "DateTime range")}
    for i, (ts, _) in odd.items():
        raws[i] = _dated(raws[i], ts, f"odd-{i}")
    window = TimeWindow(max_future_s=3600, max_age_days=30)
    events, blocks, ok, bad = decode(raws, "default", "api_usage", window, NOW)
    assert [i for i, _ in bad] == sorted(odd)
    for i, err in bad:
        assert err.field == "$.ts" and odd[i][1] in err.reason, err.reason
    assert len(events) == len(ok) == 44 and ok == [i for i in range(50) if i not in odd]
    assert [b.cols["event_id"] for b in blocks] == [[decode_event(raws[i]).event_id for i in ok]]
    # the same records with the bounds off: only the store's range is enforced
    _, _, ok_off, bad_off = decode(raws, "default", "api_usage", TimeWindow(0, 0), NOW)
    assert [i for i, _ in bad_off] == [5, 13, 17] and len(ok_off) == 47
    # without a window (replay, eval) nothing is refused
    assert decode(raws, "default", "api_usage")[3] == []


def test_an_event_time_just_inside_the_skew_is_taken():
    raws = [_dated(_raws("api_usage", 1)[0], "2026-11-02T12:59:59Z", "edge")]
    assert decode(raws, "default", "api_usage", TimeWindow(3600, 30), NOW)[3] == []


def test_the_worker_defaults_check_event_time():
    s = Settings()
    assert s.event_max_future_s == 3600 and s.event_max_age_days == 30


def _entities_after(raws: list[bytes], limit_ms: int | None) -> tuple[int, int]:
    eng = Engine()
    if limit_ms is not None:
        eng.watermark_limit = lambda: limit_ms
    alerts = 0
    for i in range(0, len(raws), 500):
        alerts += len(eng.process([decode_event(r) for r in raws[i:i + 500]]))
    return eng.entities(), alerts


def _all_kinds(n: int) -> list[bytes]:
    from streams.simulator.run import Simulation

    enc = msgspec.json.Encoder()
    return [enc.encode(row) for ch in Simulation(seed=5, events=6000, days=1).chunks() for row in ch.rows][:n]


def test_one_event_dated_9999_does_not_wipe_the_state_when_the_watermark_is_bounded():
    raws = _all_kinds(3000)
    poisoned = [*raws[:2900], _dated(raws[0], "9999-01-01T00:00:00Z", "far-future"), *raws[2900:]]
    clean = _entities_after(raws, None)
    unbounded = _entities_after(poisoned, None)
    assert unbounded[0] < clean[0] / 2, "reproduces the finding: the far-future event evicts the state"
    bounded = _entities_after(poisoned, int((NOW + 3600) * 1000))
    assert bounded[0] >= clean[0] and bounded[1] >= clean[1]
