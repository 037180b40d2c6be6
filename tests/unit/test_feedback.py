"""Analyst feedback teaches the engine: a false positive's behaviour is normal afterwards, a true positive raises
its entity's risk, and both survive a checkpoint."""

from __future__ import annotations

import json

import pytest

from detectors.engine import Engine, EngineConfig
from schemas.alerts import Alert
from schemas.errors import EventError
from schemas.events import decode
from schemas.feedback import FeedbackMark, decode_mark, encode_mark

WHO = ("mallory", "bob")


def read(who: str, tag: str, day: int, hour: int, minute: int, rows: int) -> dict:
    """One read of ``rows`` rows of sales/pipeline by ``who``."""
    return {"event_id": f"v-{who}-{tag}", "kind": "data_access",
            "ts": f"2026-11-{day:02d}T{hour:02d}:{minute:02d}:00.000Z", "tenant": "acme", "principal": who,
            "principal_department": "sales", "dataset": "sales/pipeline", "dataset_owner_department": "sales",
            "sensitivity": "internal", "operation": "read", "rows": rows, "granted": True}


def usual_reads() -> list[dict]:
    """Two days of small reads (10 to 16 rows every 30 minutes) by each of ``WHO``."""
    return [read(who, f"b{k}", 1 + k // 48, (k % 48) // 2, (k % 2) * 30, 10 + k % 7) for k in range(96) for who in WHO]


def big_reads(tag: str, day: int, hour: int, rows: int = 5000) -> list[dict]:
    """One read of ``rows`` rows by each of ``WHO`` (a volume spike for them)."""
    return [read(who, tag, day, hour, 0, rows) for who in WHO]


def events(rows: list[dict]) -> list:
    return [decode(json.dumps(r).encode()) for r in rows]


def mark(alert: Alert, status: str) -> FeedbackMark:
    return FeedbackMark(alert_id=alert.alert_id, status=status, tenant=alert.tenant, detector=alert.detector,
                        entity=alert.entity, entity_type=alert.entity_type, score=alert.score, analyst="ana")


@pytest.fixture
def engine() -> Engine:
    e = Engine(EngineConfig(learning_hours=0))
    assert e.process(events(usual_reads())) == []
    return e


def spikes(alerts: list[Alert]) -> dict[str, Alert]:
    return {a.entity: a for a in alerts if a.detector == "data.volume_spike"}


def test_a_false_positive_is_learned_as_normal_for_its_entity_only(engine: Engine):
    first = spikes(engine.process(events(big_reads("x", 3, 10))))
    assert set(first) == set(WHO)
    assert engine.apply_feedback(mark(first["mallory"], "false_positive"))
    again = spikes(engine.process(events(big_reads("y", 4, 10))))
    assert set(again) == {"bob"}  # the same behaviour: bob (not marked) alerts again, mallory does not
    assert engine.scores.get("v-mallory-y", 0.0) == 0.0  # learned as normal: it scores as an ordinary event
    assert engine.feedback.learned == 1


def test_far_more_unusual_behaviour_still_alerts_after_a_false_positive():
    e = Engine(EngineConfig(learning_hours=0, feedback_widen_decades=0.0))
    e.process(events(usual_reads()))
    first = spikes(e.process(events(big_reads("x", 3, 10, rows=400))))
    assert "mallory" in first
    e.apply_feedback(mark(first["mallory"], "false_positive"))
    assert "mallory" not in spikes(e.process(events(big_reads("y", 4, 10, rows=400))))
    assert "mallory" in spikes(e.process(events(big_reads("z", 5, 10, rows=500_000))))


def test_feedback_survives_a_checkpoint(engine: Engine):
    first = spikes(engine.process(events(big_reads("x", 3, 10))))
    engine.apply_feedback(mark(first["mallory"], "false_positive"))
    restored = Engine.from_state(engine.state())
    assert set(spikes(restored.process(events(big_reads("y", 4, 10))))) == {"bob"}


def test_a_true_positive_raises_its_entitys_risk(engine: Engine):
    twin = Engine.from_state(engine.state())
    first = spikes(engine.process(events(big_reads("x", 3, 10))))
    twin.process(events(big_reads("x", 3, 10)))
    assert engine.apply_feedback(mark(first["bob"], "true_positive"))
    raised = spikes(engine.process(events(big_reads("y", 4, 10))))
    plain = spikes(twin.process(events(big_reads("y", 4, 10))))
    assert raised["bob"].score > plain["bob"].score
    assert "true positive" in raised["bob"].explanation
    assert raised["mallory"].score == plain["mallory"].score  # only the confirmed entity


def test_triage_statuses_and_re_deliveries_teach_nothing(engine: Engine):
    first = spikes(engine.process(events(big_reads("x", 3, 10))))
    assert not engine.apply_feedback(mark(first["mallory"], "acknowledged"))
    assert engine.apply_feedback(mark(first["mallory"], "false_positive"))
    assert not engine.apply_feedback(mark(first["mallory"], "false_positive"))  # re-delivered: a no-op
    assert set(spikes(engine.process(events(big_reads("y", 4, 10))))) == {"bob"}


def test_a_mark_round_trips_and_bad_marks_name_the_field():
    m = FeedbackMark(alert_id="a1", status="true_positive", tenant="acme", detector="d", entity="e", score=0.5)
    assert decode_mark(encode_mark(m)) == m
    for value, field in ((b"{", "$"), (b'{"alert_id": "a", "status": "maybe", "tenant": "t", "detector": "d", '
                                       b'"entity": "e"}', "$.status"),
                         (b'{"alert_id": "", "status": "resolved", "tenant": "t", "detector": "d", "entity": "e"}',
                          "$.alert_id"),
                         (b'{"alert_id": "a", "status": "resolved", "tenant": "t", "detector": "d", "entity": "e", '
                          b'"score": 7}', "$.score"), (None, "$")):
        with pytest.raises(EventError) as err:
            decode_mark(value)
        assert err.value.field == field
