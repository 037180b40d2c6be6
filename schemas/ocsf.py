"""Alerts as OCSF Detection Findings (class 2004, OCSF 1.7.0), for SIEMs that speak OCSF.

``detection_finding(alert)`` maps one alert (the alert contract, ``schemas.alerts``) to a plain JSON
object: ``finding_info`` (uid = the alert id, title, desc = the explanation, the analytic = the
detector, attacks = the ATLAS techniques of its tags, first and last seen), ``severity_id``,
``status_id`` from the analyst's status (or suppression), the evidence (event ids, their total) in
``evidences`` and each evidence feature against its baseline in ``anomaly_analyses``. The tests
validate the output with models built from the official OCSF schema (``pydantic-ocsf``) and with
``py-ocsf-models``, not only with this module's own idea of the schema.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from schemas.alerts import Alert

OCSF_VERSION = "1.7.0"
CLASS_UID, CATEGORY_UID, ACTIVITY_CREATE = 2004, 2, 1
SEVERITY_ID = {"info": 1, "low": 2, "medium": 3, "high": 4, "critical": 5}
# the analyst's status -> OCSF finding status (1 New, 2 In Progress, 3 Suppressed, 4 Resolved)
STATUS_ID = {"open": 1, "acknowledged": 2, "true_positive": 2, "false_positive": 3, "resolved": 4}
STATUS_NAME = {1: "New", 2: "In Progress", 3: "Suppressed", 4: "Resolved"}
ENTITY_OBSERVABLE = {"client_ip": 2, "api_key": 99, "principal": 4, "agent": 99, "dataset": 99}  # 2 IP, 4 user
ANALYTIC_STATISTICAL = 3


def _ms(ts: str) -> int:
    return int(datetime.fromisoformat(ts.replace("Z", "+00:00")).timestamp() * 1000)


def _attacks(tags: list[str]) -> list[dict[str, Any]]:
    """ATLAS techniques of an alert's tags (``atlas:AML.T0024``) as OCSF attack objects."""
    out = []
    for tag in tags:
        scheme, _, uid = tag.partition(":")
        if scheme.lower() == "atlas" and uid:
            out.append({"technique": {"uid": uid, "name": uid,
                                      "src_url": f"https://atlas.mitre.org/techniques/{uid.split('.', 1)[-1]}"
                                      if uid.startswith("AML.") else None}})
    for a in out:
        if a["technique"]["src_url"] is None:
            del a["technique"]["src_url"]
    return out


def detection_finding(a: Alert, *, status: str = "open", mode: str = "enforce", suppressed_by: str = "",
                      product_version: str = "") -> dict[str, Any]:
    """The OCSF Detection Finding of alert ``a`` (``status``: the analyst's; ``mode`` and ``suppressed_by``:
    what became of it, ``alerts.mode`` and ``alerts.suppressed_by``)."""
    first, last = _ms(a.first_seen), _ms(a.last_seen)
    status_id = 3 if suppressed_by else STATUS_ID.get(status, 1)
    feats = a.evidence.features
    anomalies = [{"observation_parameter": f.name, "observation_type": "value",
                  "observations": [{"value": repr(float(f.value)), "count": 1}]} for f in feats]
    baselines = [{"observation_parameter": f.name, "observation_type": "baseline",
                  "observations": [{"value": repr(float(f.baseline))}]} for f in feats if f.baseline is not None]
    analysis: dict[str, Any] = {"analysis_targets": [{"name": a.entity, "type": a.entity_type}],
                                "anomalies": anomalies}
    if baselines:
        analysis["baselines"] = baselines
    types = [t for t in a.tags if not t.lower().startswith("atlas:")]
    info: dict[str, Any] = {
        "uid": a.alert_id, "title": a.title, "desc": a.explanation,
        "analytic": {"uid": a.detector, "name": a.detector, "type_id": ANALYTIC_STATISTICAL,
                     "type": "Statistical"},
        "first_seen_time": first, "last_seen_time": last, "created_time": first,
        "data_sources": [a.kind], "related_events_count": len(a.evidence.event_ids),
    }
    attacks = _attacks(a.tags)
    if attacks:
        info["attacks"] = attacks
    if types:
        info["types"] = types
    product: dict[str, Any] = {"name": "Spyglass", "vendor_name": "Spyglass", "feature": {"name": a.detector}}
    if product_version:
        product["version"] = product_version
    return {
        "class_uid": CLASS_UID, "class_name": "Detection Finding", "category_uid": CATEGORY_UID,
        "category_name": "Findings", "activity_id": ACTIVITY_CREATE, "activity_name": "Create",
        "type_uid": CLASS_UID * 100 + ACTIVITY_CREATE, "type_name": "Detection Finding: Create",
        "time": last, "start_time": first, "end_time": last,
        "severity_id": SEVERITY_ID[a.severity], "severity": a.severity.capitalize() if a.severity != "info"
        else "Informational",
        "status_id": status_id, "status": STATUS_NAME[status_id], "status_code": status,
        "is_alert": a.severity != "info" and mode == "enforce" and not suppressed_by,
        "risk_score": round(a.score * 100), "message": a.explanation,
        "metadata": {"version": OCSF_VERSION, "product": product, "tenant_uid": a.tenant, "uid": a.alert_id,
                     "log_name": "spyglass.alerts"},
        "finding_info": info,
        "resources": [{"uid": a.entity, "name": a.entity, "type": a.entity_type}],
        "observables": [{"name": a.entity_type, "type_id": ENTITY_OBSERVABLE.get(a.entity_type, 99),
                         "value": a.entity}],
        "evidences": [{"name": "triggering events", "uid": a.alert_id,
                       "data": {"event_ids": list(a.evidence.event_ids),
                                "features": {f.name: {"value": f.value, "baseline": f.baseline,
                                                      "contribution": f.contribution} for f in feats}}}],
        "anomaly_analyses": [analysis],
        "unmapped": {"spyglass": {"detector": a.detector, "score": a.score, "mode": mode,
                                  "suppressed_by": suppressed_by, "tags": list(a.tags)}},
    }
