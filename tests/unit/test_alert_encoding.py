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
