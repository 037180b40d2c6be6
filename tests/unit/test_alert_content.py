"""What an alert tells an analyst: each feature's share of the finding, an incident's members and severity, the
count of events past the evidence cut, grammatical explanations and human times to detect."""

from __future__ import annotations

import ast
import doctest
import inspect
import math
from datetime import UTC, datetime
from typing import get_args

import pytest

from detectors import alerting
from detectors.alerting import Finding, contributions, emit
from detectors.catalog import CATALOG
from detectors.engine import EngineConfig
from detectors.evaluation import metrics
from detectors.families import data
from detectors.families.risk import escalate
from detectors.registry import Context
from detectors.state import State
from schemas.alerts import SEVERITIES, Feature
from schemas.events import Operation

T0 = int(datetime(2026, 11, 2, tzinfo=UTC).timestamp() * 1000)
MIN = 60_000


def test_contributions_are_shares_of_the_departure_from_the_baselines():
    feats = contributions([Feature(name="rows", value=50_000.0, baseline=100.0),
                           Feature(name="rows_log_z", value=7.0, baseline=0.0),
                           Feature(name="tokens", value=12.0), Feature(name="odd", value=math.nan, baseline=1.0)])
    shares = [f.contribution for f in feats]
    assert shares[0] > shares[1] > 0 and shares[2] == shares[3] == 0.0
    assert sum(shares) == pytest.approx(1.0, abs=0.002)
    kept = [Feature(name="a", value=1.0, contribution=0.3), Feature(name="b", value=2.0, contribution=0.7)]
    assert contributions(kept) is kept  # a detector's own split is kept
    same = contributions([Feature(name="a", value=3.0, baseline=3.0), Feature(name="b", value=1.0, baseline=1.0)])
    assert [f.contribution for f in same] == [0.5, 0.5]


def _state() -> tuple[Context, int]:
    ctx = Context(EngineConfig(), State(), CATALOG)
    ctx.tables.vocabs.tenant.id("acme")
    return ctx, ctx.tables.vocabs.principal.id("acme\x1fana")


def _finding(detector: str, minute: float, surprise: float, pid: int, n: int, score: float | None = None) -> Finding:
    from detectors.calibration import score_of

    return Finding(detector, CATALOG[detector].kind, 0, f"ent-{detector}", T0 + int(minute * MIN), n, f"e{n}", pid,
                   score_of(surprise, 1) if score is None else score,
                   [Feature(name="x", value=10.0 * n, baseline=1.0), Feature(name="y", value=2.0, baseline=1.0)],
                   "An alert.", surprise=surprise)


def test_an_incident_lists_its_member_alerts_and_is_at_least_as_severe_as_the_worst():
    ctx, pid = _state()
    findings = [_finding("data.volume_spike", 0, 4.0, pid, 1), _finding("agent.approval_bypass", 30, 3.0, pid, 2),
                # a later hit of the first member in the same batch raises its alert to critical
                _finding("data.volume_spike", 40, 12.0, pid, 3, score=0.97)]
    alerts = emit(findings, ctx.tables, CATALOG, 5, [(ctx, escalate)], {})
    members = {a.alert_id: a for a in alerts if a.detector != "risk.incident"}
    [inc] = [a for a in alerts if a.detector == "risk.incident"]
    assert set(inc.evidence.alert_ids) == set(members) and len(members) == 2
    worst = max((a.severity for a in members.values()), key=SEVERITIES.index)
    assert worst == "critical" and inc.severity == "critical"
    shares = {f.name: f.contribution for f in inc.evidence.features}
    assert shares["combined_surprise"] == shares["families"] == 0.0
    assert math.isclose(sum(v for k, v in shares.items() if k.endswith(" surprise") and k != "combined_surprise"),
                        1.0, abs_tol=0.002)
    for a in members.values():  # a member's own features: shares, not 1.0 each
        assert [f.contribution for f in a.evidence.features] != [1.0, 1.0]


def test_cut_evidence_says_how_many_events_the_episode_had():
    ctx, pid = _state()
    hits = [_finding("data.volume_spike", i, 4.0, pid, i + 1) for i in range(7)]
    [a] = emit(hits, ctx.tables, CATALOG, 3, [], {})
    assert len(a.evidence.event_ids) == 3 and a.evidence.events_total == 7
    [b] = emit([_finding("data.off_hours", 0, 4.0, pid, 9)], ctx.tables, CATALOG, 3, [], {})
    assert b.evidence.events_total is None  # nothing cut, nothing to add


def test_every_data_operation_reads_in_the_past_tense_and_no_explanation_prints_the_raw_operation():
    assert {data.did(op) for op in get_args(Operation)} == {"read", "wrote", "deleted", "exported", "trained on"}
    tree = ast.parse(inspect.getsource(data))
    raw = [n for n in ast.walk(tree) if isinstance(n, ast.FormattedValue) and isinstance(n.value, ast.Attribute)
           and n.value.attr == "operation"]
    assert raw == [], "an explanation prints e.operation as is ('export 63 rows'); use did(e.operation)"


def test_doctests_of_alert_building_and_durations():
    assert doctest.testmod(alerting).failed == 0
    assert doctest.testmod(metrics).failed == 0
    assert metrics.human_duration(5400) == "90 min" and metrics.human_duration(3 * 86_400) == "3.0 d"
