from __future__ import annotations

import json
from collections import Counter
from datetime import datetime

import numpy as np
import pytest

from schemas.errors import EventError, SpyglassError
from schemas.events import decode
from streams.simulator.attacks import SCENARIOS
from streams.simulator.output import write_jsonl, write_labels
from streams.simulator.run import Simulation
from streams.simulator.world import TENANTS, TRANSITIONS

REQUIRED_SCENARIOS = {
    "leaked_api_key", "credential_stuffing", "model_extraction", "new_scope_use", "bulk_exfiltration",
    "cross_department_restricted", "off_hours_confidential", "training_data_poisoning", "prompt_injection",
    "approval_bypassed", "runaway_agent", "slow_drip_exfiltration",
}


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    d = tmp_path_factory.mktemp("sim")
    sim = Simulation(seed=11, events=60_000, days=4)
    write_jsonl(sim, str(d / "e.jsonl"))
    write_labels(sim, d / "l.jsonl")
    events = [json.loads(x) for x in (d / "e.jsonl").read_bytes().splitlines()]
    labels = [json.loads(x) for x in (d / "l.jsonl").read_bytes().splitlines()]
    return d, events, labels


def test_exact_event_count_and_unique_ids(run):
    _, events, _ = run
    assert len(events) == 60_000
    assert len({e["event_id"] for e in events}) == 60_000


def test_every_event_decodes_under_the_contract(run):
    d, _, _ = run
    for n, line in enumerate((d / "e.jsonl").read_bytes().splitlines(), 1):
        r = decode(line)
        assert not isinstance(r, EventError), f"line {n}: {r}"


def test_events_are_in_event_time_order(run):
    _, events, _ = run
    ts = [datetime.fromisoformat(e["ts"].replace("Z", "+00:00")) for e in events]
    assert all(a <= b for a, b in zip(ts, ts[1:], strict=False))


def test_same_seed_same_bytes_other_seed_other_bytes(tmp_path):
    paths = []
    for i, seed in enumerate((3, 3, 4)):
        p = tmp_path / f"{i}.jsonl"
        write_jsonl(Simulation(seed=seed, events=15_000, days=2), str(p))
        paths.append(p.read_bytes())
    assert paths[0] == paths[1]
    assert paths[0] != paths[2]


def test_labels_cover_every_scenario_and_point_at_real_events(run):
    _, events, labels = run
    assert {lab["scenario"] for lab in labels} >= REQUIRED_SCENARIOS
    assert set(SCENARIOS) == {lab["scenario"] for lab in labels}
    by_id = {e["event_id"]: e for e in events}
    for lab in labels:
        assert lab["event_ids"], lab["instance"]
        assert lab["event_count"] == len(lab["event_ids"])
        assert lab["entities"] and lab["speed"] in ("burst", "slow")
        for eid in lab["event_ids"]:
            e = by_id[eid]
            assert lab["start"] <= e["ts"] <= lab["end"]
            assert e["tenant"] == lab["tenant"]


def test_labelled_entities_appear_in_their_events(run):
    _, events, labels = run
    by_id = {e["event_id"]: e for e in events}
    field = {"api_key": "api_key_id", "principal": "principal", "agent": "agent_id", "client_ip": "client_ip",
             "dataset": "dataset"}
    for lab in labels:
        for ent in lab["entities"]:
            seen = {by_id[eid].get(field[ent["type"]]) for eid in lab["event_ids"]}
            assert ent["id"] in seen, (lab["instance"], ent)


def test_human_traffic_follows_working_hours(run):
    _, events, _ = run
    offsets = {t.name: t.utc_offset_h for t in TENANTS}
    hours = Counter()
    for e in events:
        if e["kind"] == "data_access" and not e["principal"].startswith("svc-"):
            ts = datetime.fromisoformat(e["ts"].replace("Z", "+00:00"))
            hours[(ts.hour + offsets[e["tenant"]]) % 24] += 1
    office = sum(hours[h] for h in range(10, 16))
    night = sum(hours[h] for h in range(0, 6))
    assert office > 8 * night


def test_volumes_are_heavy_tailed(run):
    _, events, _ = run
    per_key = np.array(sorted(Counter(e["api_key_id"] for e in events if e["kind"] == "api_usage").values()))[::-1]
    top = per_key[: max(1, len(per_key) // 10)].sum()
    assert top > 0.3 * per_key.sum()


def test_benign_agent_sessions_follow_normal_tool_sequences(run):
    _, events, labels = run
    attack = {eid for lab in labels for eid in lab["event_ids"]}
    sessions: dict[str, list[dict]] = {}
    for e in events:
        if e["kind"] == "agent_execution" and e["event_id"] not in attack:
            sessions.setdefault(e["session_id"], []).append(e)
    assert len(sessions) > 100
    for steps in sessions.values():
        chain = TRANSITIONS[steps[0]["agent_type"]]
        assert steps[0]["action"] in chain[None]
        assert "parent_event_id" not in steps[0]
        for a, b in zip(steps, steps[1:], strict=False):
            assert b["action"] in chain[a["action"]]
            assert b["parent_event_id"] == a["event_id"]


def test_slow_drip_grows_day_over_day(run):
    _, events, labels = run
    by_id = {e["event_id"]: e for e in events}
    lab = next(lab for lab in labels if lab["scenario"] == "slow_drip_exfiltration")
    per_day = Counter()
    for eid in lab["event_ids"]:
        per_day[by_id[eid]["ts"][:10]] += by_id[eid]["rows"]
    days = [per_day[d] for d in sorted(per_day)]
    assert len(days) >= 3
    assert days[-1] > 1.8 * days[0]


def test_too_few_events_is_a_clear_error():
    with pytest.raises(SpyglassError, match="--events"):
        Simulation(seed=1, events=500)


def test_naive_start_is_rejected():
    with pytest.raises(SpyglassError, match="--start"):
        Simulation(seed=1, events=50_000, start=datetime(2026, 1, 1))  # noqa: DTZ001



def test_a_relative_start_dates_the_run_up_to_the_clock():
    from datetime import UTC, timedelta

    from streams.simulator.run import parse_start

    clock = datetime(2026, 12, 7, 11, 30, 42, tzinfo=UTC)
    assert parse_start("now", now=clock) == datetime(2026, 12, 7, 11, 30, tzinfo=UTC)
    assert parse_start("now-6h", now=clock) == datetime(2026, 12, 7, 5, 30, tzinfo=UTC)
    assert parse_start("now-7d", now=clock) == datetime(2026, 11, 30, 11, 30, tzinfo=UTC)
    assert parse_start("2026-11-02T00:00:00+01:00") == datetime(2026, 11, 1, 23, tzinfo=UTC)
    before_ms = datetime.now(UTC).timestamp() * 1000  # the clock as parse_start reads it, or a moment before
    sim = Simulation(seed=1, events=50_000, days=7, start=parse_start("now-7d"))
    last = max(int(c.ts_ms.max()) for c in sim.chunks())
    now_ms = datetime.now(UTC).timestamp() * 1000
    assert before_ms - timedelta(days=7).total_seconds() * 1000 - 60_000 <= sim.start_ms and last <= now_ms
    for bad in ("yesterday", "now-7w", "now+1d", "2026-11-02T00:00:00"):
        with pytest.raises(SpyglassError, match="--start"):
            parse_start(bad)
