"""risk.cross_kind: the worker's correlator of risk evidence across event kinds."""

from __future__ import annotations

import json
import random
from datetime import timedelta

import numpy as np
import pytest

from detectors.catalog import CATALOG
from detectors.correlation import (
    DAY,
    HOUR,
    Correlator,
    RiskEvidence,
    decode_evidence,
    encode_evidence,
    evidence_of,
)
from detectors.engine import Engine
from schemas.alerts import alert_id
from schemas.events import decode
from tests.unit.test_detectors import T0 as T0_DT
from tests.unit.test_detectors import Stream, _agent_history, _reads

T0 = 1_793_577_600_000  # 2026-11-02T00:00:00Z, a window boundary for 6-hour windows


def ev(n: int, detector: str, ts: int, principal: str = "ana", tenant: str = "acme") -> RiskEvidence:
    return RiskEvidence(alert_id=f"al-{n}", tenant=tenant, principal=principal, detector=detector,
                        kind=CATALOG[detector].kind, score=0.8, ts=ts, event_id=f"e-{n}")


def ids(alerts) -> set[str]:
    return {a.alert_id for a in alerts}


def test_two_kinds_for_one_principal_in_one_window_make_one_alert():
    c = Correlator()
    alerts = c.process([ev(1, "data.volume_spike", T0 + HOUR), ev(2, "data.denied_burst", T0 + 2 * HOUR),
                        ev(3, "agent.approval_bypass", T0 + 3 * HOUR), ev(4, "api.new_client", T0 + 4 * HOUR)])
    assert len(alerts) == 1
    a = alerts[0]
    assert a.alert_id == alert_id("risk.cross_kind", "acme", "ana", f"bucket-{T0 // (6 * HOUR)}")
    assert (a.detector, a.kind, a.entity_type, a.entity, a.tenant) == ("risk.cross_kind", "cross", "principal",
                                                                       "ana", "acme")
    assert a.evidence.event_ids == ["e-1", "e-2", "e-3"]  # the evidence when it fired
    assert 0.0 <= a.score <= 1.0 and a.explanation.endswith(".")
    assert "data_access" in a.explanation and "agent_execution" in a.explanation


def test_one_kind_only_or_two_principals_or_two_windows_make_none():
    c = Correlator()
    assert c.process([ev(1, "data.volume_spike", T0), ev(2, "data.denied_burst", T0 + HOUR),
                      ev(3, "data.off_hours", T0 + 2 * HOUR)]) == []
    assert c.process([ev(4, "agent.runaway", T0, principal="bob")]) == []  # another principal
    assert c.process([ev(5, "agent.runaway", T0 + 7 * HOUR)]) == []  # ana's next window
    assert c.process([ev(6, "agent.runaway", T0, tenant="other")]) == []  # another tenant


def test_incidents_are_not_evidence_of_a_kind():
    c = Correlator()
    assert c.process([ev(1, "data.volume_spike", T0), ev(2, "risk.incident", T0), ev(3, "risk.cross_kind", T0)]) == []


def _stream(rng: random.Random) -> list[RiskEvidence]:
    dets = ["data.volume_spike", "agent.runaway", "api.new_client", "data.denied_burst", "agent.approval_bypass"]
    return [ev(i, rng.choice(dets), T0 + rng.randrange(0, 3 * DAY), principal=f"p{rng.randrange(6)}")
            for i in range(300)]


def test_order_and_redelivery_do_not_change_the_alert_ids():
    rng = random.Random(7)
    stream = _stream(rng)
    reference = ids(Correlator().process(stream))
    assert len(reference) > 3
    for _ in range(5):
        shuffled = stream + rng.sample(stream, 100)  # re-delivered records, anywhere
        rng.shuffle(shuffled)
        alerts = Correlator().process(shuffled)
        assert len(alerts) == len(reference) and ids(alerts) == reference


def test_state_round_trips_mid_stream():
    rng = random.Random(11)
    stream = _stream(rng)
    whole = ids(Correlator().process(stream))
    c = Correlator()
    first = c.process(stream[:137])
    restored = Correlator.from_state(c.state())
    assert restored.entities() == c.entities() and restored.memory_bytes() == c.memory_bytes()
    second = restored.process(stream[137:] + stream[:50])  # and a re-delivery after the restore
    assert ids(first) | ids(second) == whole
    assert len(first) + len(second) == len(whole)
    with pytest.raises(ValueError):
        Correlator.from_state(Engine().state())


def test_old_windows_are_pruned_and_late_evidence_is_dropped():
    c = Correlator(window_hours=6, horizon_days=2)
    c.process([ev(1, "data.volume_spike", T0)])
    assert c.entities() == 1
    c.process([ev(2, "data.volume_spike", T0 + 3 * DAY)])  # the newest evidence moves on 3 days
    assert c.entities() == 1 and c.evicted["idle"] == 1
    assert c.process([ev(3, "agent.runaway", T0 + HOUR)]) == []  # its window is gone: not judged
    assert c.evicted["late"] == 1
    assert len(c.process([ev(4, "agent.runaway", T0 + 3 * DAY + HOUR)])) == 1


def test_evidence_records_round_trip_and_bad_ones_are_refused():
    e = ev(1, "data.volume_spike", T0)
    assert decode_evidence(encode_evidence(e)) == e
    for bad in (None, b"not json", b"{}", json.dumps({**json.loads(encode_evidence(e)), "principal": ""}).encode(),
                b'{"x":' + b"[" * 5_000 + b"]" * 5_000 + b"}", b"\xff\xfe", b" " * 20_000):
        with pytest.raises(Exception) as exc:
            decode_evidence(bad)
        assert exc.type.__module__ == "msgspec"


def test_the_engine_names_the_principal_of_its_alerts():
    """ana's bulk read, then an agent's bypassed refund for her (the risk.incident pattern)."""
    rng = np.random.default_rng(21)
    s = Stream()
    _reads(s, rng, "ana", "finance/ledger")
    _agent_history(s)
    t = T0_DT + timedelta(days=5, hours=10)
    s.data(t, "ana", "finance/ledger", 400_000)
    s.agent(t + timedelta(minutes=30), "agt1", "x5", "refund", principal="ana", target="billing",
            privilege="write", risk_level="high", approval="bypassed")
    events = [decode(json.dumps(r).encode()) for _, r in sorted(s.rows, key=lambda x: x[0])]
    eng = Engine()
    alerts: list = []
    principals: dict[str, str] = {}
    for i in range(0, len(events), 997):
        got = eng.process(events[i: i + 997])
        assert set(eng.alert_principals) == {a.alert_id for a in got}  # this batch's alerts, each named
        alerts += got
        principals |= eng.alert_principals
    by_det = {a.detector: a for a in alerts}
    assert {"data.volume_spike", "agent.approval_bypass", "risk.incident"} <= set(by_det)
    assert principals[by_det["data.volume_spike"].alert_id] == "ana"
    assert principals[by_det["agent.approval_bypass"].alert_id] == "ana"  # an agent alert: the agent's principal
    assert principals[by_det["risk.incident"].alert_id] == "ana"
    bypass = by_det["agent.approval_bypass"]
    e = evidence_of(bypass, "ana")
    assert (e.kind, e.principal, e.event_id, e.alert_id) == ("agent_execution", "ana", bypass.evidence.event_ids[0],
                                                             bypass.alert_id)
    assert e.ts == int((t + timedelta(minutes=30)).timestamp() * 1000)


def test_evidence_from_a_wrong_clock_is_refused_and_a_flood_of_windows_is_capped():
    c = Correlator(clock=lambda: T0 / 1000)
    with pytest.raises(ValueError, match="ahead of this worker's clock"):
        c.add(ev(1, "data.volume_spike", T0 + 2 * 86_400_000))
    assert c.newest == -1  # the horizon did not move
    capped = Correlator(max_windows=100, clock=lambda: T0 / 1000)
    for i in range(150):  # 150 principals, one window each
        capped.add(RiskEvidence(alert_id=f"a{i}", tenant="t", principal=f"p{i}", detector="data.volume_spike",
                                kind="data_access", score=0.5, ts=T0 - i * 60_000, event_id=f"e{i}"))
    assert len(capped.windows) <= 100
    assert capped.evicted["cap"] >= 50
