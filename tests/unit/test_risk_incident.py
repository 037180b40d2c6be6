"""risk.incident: a principal's alerts of different detectors, each episode once, weighed by how unusual it was.

The hook is driven directly with findings (what ``emit`` hands it after each new alert above info), so each
rule is tested on its own: two families or one very surprising finding, one count per detector, decay, the
conservative credit of a score-only finding, and what the incident says.
"""

from __future__ import annotations

import math
from datetime import UTC, datetime

import pytest

from detectors.alerting import Finding
from detectors.calibration import score_of, surprise_from_score
from detectors.catalog import CATALOG
from detectors.engine import EngineConfig
from detectors.families.risk import ESTIMATED_CAP, escalate
from detectors.registry import Context
from detectors.state import State

T0 = int(datetime(2026, 11, 2, tzinfo=UTC).timestamp() * 1000)
MIN = 60_000


class Principal:
    """One principal of tenant acme and the risk hook's context; ``alert`` hands the hook a new alert."""

    def __init__(self) -> None:
        self.ctx = Context(EngineConfig(), State(), CATALOG)
        self.ctx.tables.vocabs.tenant.id("acme")
        self.pid = self.ctx.tables.vocabs.principal.id("acme\x1fana")
        self.n = 0

    def alert(self, detector: str, minute: float, surprise: float | None, score: float | None = None):
        self.n += 1
        score = score_of(surprise or 0.0) if score is None else score
        f = Finding(detector, CATALOG[detector].kind, 0, "x", T0 + int(minute * MIN), self.n, f"e{self.n}",
                    self.pid, score, [], "An alert.", surprise=surprise)
        return escalate(self.ctx, f)


def test_two_families_unusual_together_make_an_incident_that_names_each_member():
    p = Principal()
    assert p.alert("data.volume_spike", 0, 4.0) is None  # one alert alone is not an incident
    raised = p.alert("agent.approval_bypass", 30, 3.0)
    assert raised is not None
    inc, tags = raised
    assert (inc.detector, inc.entity, inc.kind) == ("risk.incident", "ana", "cross")
    assert "data.volume_spike (about 1 in 10,000)" in inc.explanation
    assert "agent.approval_bypass (about 1 in 1,000)" in inc.explanation
    assert inc.related == ["e1"] and inc.event_id == "e2"  # both members' events are its evidence
    assert inc.surprise == pytest.approx(4.0 * math.exp(-30 / 360) + 3.0)  # the spike decayed for half an hour
    assert inc.score >= score_of(4.0)
    assert set(CATALOG["data.volume_spike"].tags) | set(CATALOG["agent.approval_bypass"].tags) == set(tags)


def test_two_detectors_of_one_family_are_not_an_incident_unless_one_is_very_surprising():
    p = Principal()
    p.alert("data.off_hours", 0, 4.0)
    assert p.alert("data.volume_spike", 10, 4.0) is None  # 8 decades, but one family and none very surprising
    q = Principal()
    q.alert("data.off_hours", 0, 1.5)
    assert q.alert("data.volume_spike", 10, 7.0) is not None  # one very surprising finding plus another


def test_a_detector_counts_once_however_often_it_fired():
    p = Principal()
    for i in range(12):  # a noisy detector's episodes, one an hour
        assert p.alert("data.off_hours", 60 * i, 2.5) is None
    assert p.alert("api.new_client", 720, 2.0) is None  # about 2.1 + 2 < 6: summed per episode it would be 32
    assert p.alert("api.new_client", 730, 4.5) is not None  # its stronger episode replaces the weaker one


def test_weak_evidence_of_two_families_is_not_an_incident():
    p = Principal()
    p.alert("data.off_hours", 0, 2.0)
    assert p.alert("api.rate_burst", 5, 2.0) is None


def test_old_alerts_decay_out_of_an_incident():
    p = Principal()
    p.alert("data.volume_spike", 0, 4.0)
    assert p.alert("agent.approval_bypass", 2 * 24 * 60, 3.0) is None  # two days later: the spike has decayed
    assert p.ctx.tables.risk[p.pid][2].keys() == {"agent.approval_bypass"}


def test_a_score_only_finding_is_credited_conservatively():
    p = Principal()
    p.alert("data.volume_spike", 0, None, score=1.0)  # a detector that reports no surprise, at its top score
    assert p.ctx.tables.risk[p.pid][0] == pytest.approx(ESTIMATED_CAP)
    inc, _ = p.alert("agent.approval_bypass", 1, None, score=0.6)
    assert "data.volume_spike (score 1.00, counted as 1 in 100,000)" in inc.explanation
    assert inc.surprise == pytest.approx(ESTIMATED_CAP + surprise_from_score(0.6), abs=0.02)


def test_an_incident_is_raised_once_per_cooldown():
    p = Principal()
    p.alert("data.volume_spike", 0, 4.0)
    assert p.alert("agent.approval_bypass", 1, 3.0) is not None
    assert p.alert("api.rate_burst", 2, 3.0) is None  # within risk.incident's cooldown


def test_a_ledger_written_before_weighted_members_is_read_as_empty():
    p = Principal()
    p.ctx.tables.risk[p.pid] = (3.0, T0, {"data.volume_spike", "api.new_client"})  # the old (risk, ts, detectors)
    assert p.alert("agent.approval_bypass", 1, 3.0) is None
    assert p.ctx.tables.risk[p.pid][2].keys() == {"agent.approval_bypass"}


def test_a_checkpoint_with_the_old_risk_options_restores():
    """risk_threshold and risk_min_detectors were replaced; a checkpoint that names them still restores."""
    import pickle

    from detectors.engine import Engine

    blob = pickle.loads(Engine().state())  # noqa: S301 - the test's own checkpoint
    blob["config"] |= {"risk_threshold": 2.5, "risk_min_detectors": 2}
    restored = Engine.from_state(pickle.dumps(blob))
    assert restored.config.risk_min_surprise == EngineConfig().risk_min_surprise
