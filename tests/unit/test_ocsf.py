"""Alerts as OCSF Detection Findings (class 2004), validated by two external OCSF model libraries: pydantic-ocsf
(models built from the official OCSF 1.7.0 schema, anomaly_analyses included) and py-ocsf-models (1.5.0 core)."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import msgspec
import pytest
from ocsf.v1_7_0.events import DetectionFinding
from py_ocsf_models.events.findings.detection_finding import DetectionFinding as CoreDetectionFinding
from pydantic import BaseModel, ValidationError

from schemas.ocsf import detection_finding
from schemas.rows import alert_columns, alert_status_columns
from streams.cli import main
from streams.cli.alerts import stored_alerts
from streams.settings import StoreURL
from streams.sinks.clickhouse import ChdbStore, apply_ddl
from tests.unit.storage_contract import CREATED, sample_alerts
from tests.unit.test_feedback import big_reads, usual_reads


def unknown_fields(m: BaseModel, path: str = "$") -> list[str]:
    """Every field of ``m`` (recursively) the OCSF models did not know: a misspelt or misplaced one (``unmapped``
    is OCSF's place for data it has no attribute for: free-form by design)."""
    out = [f"{path}.{k}" for k in (m.model_extra or {})]
    for name in type(m).model_fields:
        if name == "unmapped":
            continue
        v = getattr(m, name)
        for i, x in enumerate(v if isinstance(v, list) else [v]):
            if isinstance(x, BaseModel):
                out += unknown_fields(x, f"{path}.{name}" + (f"[{i}]" if isinstance(v, list) else ""))
    return out


def validate(finding: dict) -> DetectionFinding:
    """The finding through both libraries; fails on any error or any field the schema does not have."""
    m = DetectionFinding.model_validate(finding)
    assert unknown_fields(m) == []
    core = CoreDetectionFinding.model_validate(finding)
    assert int(core.class_uid) == 2004 and core.finding_info.uid == finding["finding_info"]["uid"]
    return m


def test_alerts_map_to_valid_detection_findings():
    a1, a2, a3 = sample_alerts()
    a1.tags = ["atlas:AML.T0024", "owasp:LLM10"]
    f = detection_finding(a1, status="false_positive")
    m = validate(f)
    assert (m.class_uid, m.category_uid, m.type_uid, int(m.severity_id), int(m.status_id)) == (2004, 2, 200401, 4, 3)
    info = f["finding_info"]
    assert (info["uid"], info["title"], info["desc"], info["analytic"]["uid"]) == (
        "alert-1", "t1", "Key k1 did thing 1.", "api.rate_burst")
    assert [x["technique"]["uid"] for x in info["attacks"]] == ["AML.T0024"] and info["types"] == ["owasp:LLM10"]
    assert info["first_seen_time"] == int(datetime(2026, 11, 2, 10, 1, 30, 500_000, tzinfo=UTC).timestamp() * 1000)
    analysis = f["anomaly_analyses"][0]
    assert [(x["observation_parameter"], x["observations"][0]["value"]) for x in analysis["anomalies"]] == [
        ("rate", "11.0"), ("new_ip", "1.0")]
    assert [x["observation_parameter"] for x in analysis["baselines"]] == ["rate"]  # new_ip has no baseline
    assert f["evidences"][0]["data"]["event_ids"] == ["e1a", "e1b"]
    for a, status, want in ((a2, "open", 1), (a3, "resolved", 4), (a3, "acknowledged", 2)):
        assert int(validate(detection_finding(a, status=status)).status_id) == want
    held = detection_finding(a2, suppressed_by="sup-1")
    assert held["status_id"] == 3 and held["is_alert"] is False
    assert detection_finding(a2, mode="shadow")["is_alert"] is False and validate(held)


def test_the_validators_would_refuse_a_wrong_finding():
    f = detection_finding(sample_alerts()[0])
    for broken in ({**f, "severity_id": 42}, {**f, "finding_info": {"title": "no uid"}}, {**f, "time": "noon"}):
        with pytest.raises(ValidationError):
            DetectionFinding.model_validate(broken)
    misspelt = DetectionFinding.model_validate({**f, "finding_info": {**f["finding_info"], "descr": "x"}})
    assert unknown_fields(misspelt) == ["$.finding_info.descr"]


def test_replay_writes_findings(tmp_path, monkeypatch):
    src = tmp_path / "events.jsonl"
    src.write_bytes(b"".join(msgspec.json.encode(r) + b"\n" for r in usual_reads() + big_reads("x", 3, 10)))
    monkeypatch.setenv("SPYGLASS_ENGINE_LEARNING_HOURS", "0")
    monkeypatch.setenv("SPYGLASS_DETECTORS_FILE", str(tmp_path / "none.yaml"))
    assert main(["replay", "--input", str(src), "--output", str(tmp_path / "a.jsonl")]) == 0
    assert main(["replay", "--input", str(src), "--output", str(tmp_path / "f.jsonl"), "--format", "ocsf"]) == 0
    alerts = [json.loads(x) for x in (tmp_path / "a.jsonl").read_text().splitlines()]
    findings = [json.loads(x) for x in (tmp_path / "f.jsonl").read_text().splitlines()]
    assert alerts and [f["finding_info"]["uid"] for f in findings] == [a["alert_id"] for a in alerts]
    for f in findings:
        validate(f)


def test_stored_alerts_export_as_findings_with_their_status(tmp_path):
    s = ChdbStore(StoreURL.parse(f"chdb://{tmp_path}"), database="ocsf_export")
    try:
        apply_ddl(s)
        s.insert("alerts", alert_columns(sample_alerts(), CREATED, None, {"alert-3": ("shadow", "")}))
        s.insert("alert_status", alert_status_columns("alert-1", "acme", "resolved", updated_at=CREATED,
                                                      updated_by="ana"))
        found = stored_alerts(s, ["1"], 100)
    finally:
        s.close()
    assert [(a.alert_id, st, mode) for a, st, mode, _ in found] == [
        ("alert-1", "resolved", "enforce"), ("alert-2", "open", "enforce"), ("alert-3", "open", "shadow")]
    findings = [detection_finding(a, status=st, mode=mode, suppressed_by=rule) for a, st, mode, rule in found]
    assert [int(validate(f).status_id) for f in findings] == [4, 1, 1]
    assert [f["is_alert"] for f in findings] == [True, True, False]
