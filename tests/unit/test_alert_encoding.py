"""Every alert the engine raises encodes for the alerts topic, the evidence topic and the store: feature values
taken from numpy columns are plain floats (msgspec refuses numpy scalars, and one would stop the writer)."""

from __future__ import annotations

from datetime import UTC, datetime

import numpy as np

from detectors.correlation import encode_evidence, evidence_of
from detectors.engine import Engine
from schemas.alerts import encode_alert
from schemas.events import decode_batch
from schemas.rows import alert_columns
from streams.simulator.run import Simulation, encode_lines


def _numpy_values(alert) -> list[str]:
    bad = [f"{alert.detector}.{f.name}" for f in alert.evidence.features
           if any(isinstance(v, np.generic) for v in (f.value, f.baseline, f.contribution))]
    return bad + ([f"{alert.detector}.score"] if isinstance(alert.score, np.generic) else [])


def test_every_alert_of_a_varied_world_encodes():
    # world 1 raises agent.runaway and agent.tool_loop, whose features come from numpy arrays
    sim = Simulation(seed=1, world_seed=1, events=60_000, days=3, instances=2)
    engine, alerts = Engine(), []
    for chunk in sim.chunks():
        decoded, _ = decode_batch(encode_lines(chunk.rows).splitlines())
        alerts += engine.process(decoded)
    assert {a.detector for a in alerts} >= {"agent.runaway"}
    assert [x for a in alerts for x in _numpy_values(a)] == []
    for a in alerts:
        encode_alert(a)
        encode_evidence(evidence_of(a, "someone@example.com"))
    assert len(alert_columns(alerts, created_at=datetime.now(UTC))["alert_id"]) == len(alerts)


def test_a_numpy_number_in_an_alert_encodes_as_its_value_everywhere():
    """A detector that hands over a numpy scalar (the bug that once stopped the demo's writer) no longer stops
    anything: the alerts topic, the evidence topic and the store all get the plain number."""
    import msgspec

    from schemas.alerts import Alert, Evidence, Feature

    a = Alert(alert_id="a1", tenant="t", detector="agent.runaway", kind="agent_execution", entity_type="agent",
              entity="ag1", severity="high", score=np.float32(0.75), first_seen="2026-11-02T10:00:00Z",
              last_seen="2026-11-02T10:05:00Z", title="Runaway", explanation="x",
              evidence=Evidence(features=[Feature(name="per_min", value=np.int64(41), baseline=np.float32(0.5)),
                                          Feature(name="flag", value=np.bool_(True))], event_ids=["e1"]), tags=[])
    back = msgspec.json.decode(encode_alert(a))
    assert back["score"] == 0.75
    assert [(f["value"], f["baseline"]) for f in back["evidence"]["features"]] == [(41, 0.5), (True, None)]
    e = msgspec.json.decode(encode_evidence(evidence_of(a, "someone@example.com")))
    assert e["score"] == 0.75
    cols = alert_columns([a], created_at=datetime.now(UTC))
    assert msgspec.json.decode(cols["evidence"][0])["features"][0]["value"] == 41
    assert cols["feature_values"] == [[41.0, 1.0]]


def test_anything_else_in_an_alert_is_refused_naming_its_type():
    import pytest

    from schemas.alerts import Alert, Evidence, Feature

    a = Alert(alert_id="a1", tenant="t", detector="d", kind="api_usage", entity_type="api_key", entity="k",
              severity="low", score=0.3, first_seen="2026-11-02T10:00:00Z", last_seen="2026-11-02T10:00:00Z",
              title="t", explanation="x", evidence=Evidence(features=[Feature(name="f", value=object())],
                                                            event_ids=[]), tags=[])
    with pytest.raises(TypeError, match="object"):
        encode_alert(a)
