"""The scoring step without a broker or a store: one partition's records in, what to write out."""

from __future__ import annotations

from dataclasses import dataclass

from detectors.correlation import DAY, HOUR, Correlator, RiskEvidence, encode_evidence
from detectors.engine import Engine, EngineConfig
from streams.settings import Settings
from streams.step import correlate, decode, score_events
from tests.unit.test_correlation import T0, ev
from tests.unit.test_scorer import _raws


@dataclass
class _Rec:
    offset: int
    key: bytes | None
    value: bytes | None


def _records(kind: str, n: int, bad_at: tuple[int, ...] = ()) -> list[_Rec]:
    """``n`` simulated records of ``kind`` at offsets 100.., with records that are not events at ``bad_at``."""
    raws = _raws(kind, n)
    for i in bad_at:
        raws.insert(i, b'{"not": "an event"}')
    return [_Rec(100 + i, None, raw) for i, raw in enumerate(raws)]


def test_events_give_dead_letters_alerts_at_their_records_and_scored_events():
    tenant = Settings().default_tenant
    recs = _records("agent_execution", 300, bad_at=(0, 150))
    engine = Engine(EngineConfig(learning_hours=0))  # the records are a first day: no learning period, evidence
    out = score_events(engine, recs, "agent_execution", tenant)

    assert [r.offset for r, _ in out.dead] == [100, 250]
    assert all(err.reason for _, err in out.dead)
    assert out.events_in == 300 == engine.events_seen
    assert sum(map(len, out.events)) == 300
    scores = [s for b in out.events for s in b.scores]
    assert max(scores) > 0.0
    assert out.alerts, "the simulated run raises alerts in its first 300 agent records"
    event_offsets: dict[str, int] = {}
    for r in recs[1:150] + recs[151:]:
        event_offsets.setdefault(_event_id(r.value), r.offset)
    for a, offset, principal in out.alerts:
        assert offset == event_offsets[a.evidence.event_ids[0]]  # the record of its first evidence event
        # the principal its risk evidence names; none for the engine's own cross-detector alerts, nor for info
        # alerts (a learning period's, a control that worked, a finding the budget kept at info)
        assert principal == (None if a.kind == "cross" or a.severity == "info" else engine.alert_principals[a.alert_id])
    assert any(principal for _, _, principal in out.alerts)
    assert not out.past_stored  # nothing looked up in the store: nothing said about it


def _event_id(raw: bytes | None) -> str:
    from schemas.events import decode as decode_event

    return decode_event(raw).event_id


def test_events_an_earlier_owner_stored_are_scored_but_not_returned_to_store():
    tenant = Settings().default_tenant
    recs = _records("api_usage", 200)
    decoded = decode([r.value for r in recs], tenant, "api_usage")
    keys = list(decoded[1][0].event_keys())

    first = score_events(Engine(), recs, "api_usage", tenant, decoded, stored=set(keys[:120]))
    assert sum(map(len, first.events)) == 80 and first.events_in == 200
    assert first.past_stored  # some were not stored: the earlier owner's writes end here

    again = score_events(Engine(), recs, "api_usage", tenant, stored=set(keys))
    assert again.events == [] and again.events_in == 200
    assert not again.past_stored  # every one stored: the next batch may hold stored ones too

    scores = [s for b in first.events for s in b.scores]
    assert scores == [s for b in score_events(Engine(), recs, "api_usage", tenant).events for s in b.scores][120:]


def test_evidence_gives_the_correlators_alert_and_dead_letters_for_refused_records():
    records = [_Rec(0, None, b"not json"),
               _Rec(1, None, encode_evidence(ev(1, "data.volume_spike", T0 + HOUR))),
               _Rec(2, None, encode_evidence(RiskEvidence(alert_id="far", tenant="acme", principal="ana",
                                                          detector="data.volume_spike", kind="data_access",
                                                          score=0.5, ts=T0 + 400 * DAY, event_id="e-far"))),
               _Rec(3, None, encode_evidence(ev(3, "agent.approval_bypass", T0 + 2 * HOUR)))]
    out = correlate(Correlator(clock=lambda: T0 / 1000), records)

    assert [(r.offset, err.reason.split(":")[0]) for r, err in out.dead] == [
        (0, "not a risk evidence record"), (2, "risk evidence refused")]
    assert [(a.detector, offset, principal) for a, offset, principal in out.alerts] == [("risk.cross_kind", 3, None)]
    assert out.events == [] and out.events_in == 0
