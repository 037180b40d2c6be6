"""The scoring engine on simulated traffic: determinism, checkpoints, explanations, poisoning."""

from __future__ import annotations

import json

import msgspec
import pytest

from detectors.catalog import CATALOG
from detectors.engine import Engine
from detectors.evaluation.scenarios import score
from schemas.alerts import SEVERITIES, Alert
from schemas.events import decode
from streams.simulator.run import Simulation


@pytest.fixture(scope="module")
def run():
    sim = Simulation(seed=31, events=200_000, days=7, instances=1)
    rows = [r for c in sim.chunks() for r in c.rows]
    events = [decode(json.dumps(r).encode()) for r in rows]
    return sim, events


def process(events, engine=None, size=5_000):
    engine = engine or Engine()
    out: list[Alert] = []
    for i in range(0, len(events), size):
        out += engine.process(events[i: i + size])
    return engine, out


def test_same_input_same_alerts_and_ids(run):
    _, events = run
    _, a = process(events)
    _, b = process(events)
    assert a and msgspec.json.encode(a) == msgspec.json.encode(b)


def test_checkpoint_restore_gives_identical_alerts(run):
    _, events = run
    half = len(events) // 2
    eng, first = process(events[:half])
    restored = Engine.from_state(eng.state())
    _, rest_a = process(events[half:], eng)
    _, rest_b = process(events[half:], restored)
    assert rest_a, "the second half should raise alerts for this test to mean something"
    assert msgspec.json.encode(rest_a) == msgspec.json.encode(rest_b)


def _ids(alerts):
    return sorted((a.alert_id, a.detector, a.entity) for a in alerts)


@pytest.mark.parametrize("sizes", [(5_000, 997), (5_000, 123_457)])
def test_alerts_do_not_depend_on_where_the_stream_is_cut_into_batches(run, sizes):
    """A worker resuming from a checkpoint cuts batches elsewhere: same alert ids all the same."""
    _, events = run
    _, a = process(events, size=sizes[0])
    _, b = process(events, size=sizes[1])
    assert len(a) >= 15  # one alert per attack episode: enough for the comparison to mean something
    assert _ids(a) == _ids(b)


def test_alerts_do_not_depend_on_batches_when_kinds_arrive_separately(run):
    """The worker runs one engine per topic partition: each kind alone, cut differently, same ids."""
    _, events = run
    for kind in ("api_usage", "data_access", "agent_execution"):
        one = [e for e in events if type(e).__struct_config__.tag == kind]
        _, a = process(one, size=4_096)
        _, b = process(one, size=1_000)
        assert _ids(a) == _ids(b), kind


def test_input_events_are_not_mutated(run):
    _, events = run
    before = msgspec.json.encode(events[:2000])
    process(events[:2000])
    assert msgspec.json.encode(events[:2000]) == before


def test_alerts_follow_the_contract_and_explain_themselves(run):
    _, events = run
    _, alerts = process(events)
    assert alerts
    for a in alerts:
        assert a.detector in CATALOG
        assert a.severity in SEVERITIES and 0.0 <= a.score <= 1.0
        assert a.first_seen <= a.last_seen and a.first_seen.endswith("Z")
        assert a.explanation.endswith(".") and len(a.explanation) > 30
        assert a.evidence.event_ids and a.evidence.features
        assert a.tags and all(t.startswith(("atlas:", "owasp-llm:")) for t in a.tags)
    assert len({a.alert_id for a in alerts}) == len(alerts)


def test_every_scenario_is_caught_on_the_right_entity_with_few_false_alerts(run):
    sim, events = run
    _, alerts = process(events)
    results, false, benign = score(alerts, sim.labels(), len(events))
    missed = [r.instance for r in results if not r.caught]
    assert len(missed) <= 2, missed
    assert len(false) <= 3, [a.explanation for a in false]


def test_slow_drip_is_caught_and_its_events_are_not_learned(run):
    sim, events = run
    eng, alerts = process(events)
    lab = next(x for x in sim.labels() if x["scenario"] == "slow_drip_exfiltration")
    ids = set(lab["event_ids"])
    drift = [a for a in alerts if a.detector == "data.volume_drift" and ids & set(a.evidence.event_ids)]
    assert drift and drift[0].entity == lab["entities"][0]["id"]


def test_a_burst_does_not_teach_itself_in():
    """Poisoning resistance: the same burst twice is still a burst the second time."""
    from datetime import UTC, datetime, timedelta

    t0 = datetime(2026, 11, 2, tzinfo=UTC)

    def ev(i, t):
        return decode(json.dumps({
            "event_id": f"e{i}", "kind": "agent_execution", "ts": t.isoformat().replace("+00:00", "Z"),
            "agent_id": "agt-1", "agent_type": "t", "session_id": f"s{i // 5}", "principal": "p", "action": "a",
            "target_system": "x", "privilege": "read", "approval": "not_required", "triggered_by": "user",
            "outcome": "success"}).encode())

    eng = Engine()
    events = [ev(i, t0 + timedelta(minutes=10 * i)) for i in range(300)]  # 2 days of a calm agent
    burst1 = [ev(1000 + i, t0 + timedelta(days=2, seconds=i)) for i in range(200)]
    burst2 = [ev(2000 + i, t0 + timedelta(days=2, hours=3, seconds=i)) for i in range(200)]
    assert not [a for a in eng.process(events) if a.detector == "agent.runaway"]
    assert [a for a in eng.process(burst1) if a.detector == "agent.runaway"]
    assert [a for a in eng.process(burst2) if a.detector == "agent.runaway"]


def _budget_verdicts(alerts) -> list[tuple[str, bool]]:
    """Each alert's id and whether the false-alarm budget kept it at info."""
    return sorted((a.alert_id, "Kept at info by the alert budget" in a.explanation) for a in alerts)


@pytest.fixture(scope="module")
def varied():
    """A varied world (NAT pools, surges, untrusted work: world seed 6, a tune world) with findings of many
    detectors for the budget to learn."""
    sim = Simulation(seed=6, world_seed=6, events=100_000, days=5, instances=1)
    return [decode(json.dumps(r).encode()) for c in sim.chunks() for r in c.rows]


def test_the_alert_budget_judges_alike_whatever_the_batch_cuts_and_across_a_checkpoint(varied):
    """The budget's thresholds are taken as of each finding's event: the same verdicts for any cuts, and a
    restored checkpoint carries the budget on (its histograms and event counts identical)."""
    events = varied
    straight, want = process(events, size=5_000)
    # (that a held verdict is the same whatever the cuts: test_alert_budget, with a detector that is held often)
    assert sum(float(h.sum()) for h in straight.tables.budget.hist.values()) >= 10, "the budget learns episodes"
    _, other = process(events, size=997)
    assert _budget_verdicts(other) == _budget_verdicts(want)
    half = len(events) // 2
    eng, first = process(events[:half], size=3_000)
    restored = Engine.from_state(eng.state())
    _, rest = process(events[half:], restored, size=7_000)
    assert _budget_verdicts(first + rest) == _budget_verdicts(want)
    budget, again = straight.tables.budget, restored.tables.budget
    assert again.events == pytest.approx(budget.events) and again.above == budget.above
    assert again.hist.keys() == budget.hist.keys()
    assert all((again.hist[k] == h).all() for k, h in budget.hist.items())
