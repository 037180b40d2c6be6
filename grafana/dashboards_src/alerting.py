"""Grafana alert rules for on-call, with their contact point and notification template, as provisioning YAML.

Two rule groups: critical Spyglass alerts (a new, still-open critical alert in the last 5 minutes) and
pipeline stalls (a worker that stopped flushing, or lag that does not drain). Queries follow the same
dialect rules as the dashboards and are run by the same tests.
"""

from __future__ import annotations

from dataclasses import dataclass

import yaml

from .dashboards import NOT_CLOSED
from .kit import DATASOURCE_TYPE, DATASOURCE_UID, FORMAT_TABLE

FOLDER = "Spyglass"
CONTACT_POINT = "spyglass-oncall"
TEMPLATE = "spyglass"


@dataclass(frozen=True)
class RuleSpec:
    uid: str
    title: str
    group: str
    sql: str
    columns: tuple[str, ...]
    window_s: int
    threshold: float
    for_: str
    no_data: str
    severity: str
    summary: str
    description: str


RULES = (
    RuleSpec(
        uid="spyglass-critical-alert", title="Critical Spyglass alert", group="spyglass-security",
        sql=("SELECT tenant, detector, count() AS open_critical\n"
             "FROM alerts FINAL\n"
             f"WHERE severity = 'critical' AND $__timeFilter(created_at) AND {NOT_CLOSED}\n"
             "  AND mode = 'enforce' AND suppressed_by = ''\n"  # shadow and suppressed alerts never page
             "GROUP BY tenant, detector"),
        columns=("tenant", "detector", "open_critical"), window_s=300, threshold=0, for_="0s", no_data="OK",
        severity="critical",
        summary="{{ $values.A }} new critical alert(s) from {{ $labels.detector }} in tenant {{ $labels.tenant }}",
        description="Open the Security overview, then the alert's investigation page from the alert table."),
    RuleSpec(
        uid="spyglass-worker-stalled", title="Spyglass worker stopped flushing", group="spyglass-pipeline",
        # workers seen in the last day ($__fromTime .. now), and how long each has been silent
        sql=("SELECT worker, dateDiff('second', max(ts), least(now(), $__toTime)) AS seconds_since_flush\n"
             "FROM pipeline_health\n"
             "WHERE $__timeFilter(ts)\n"
             "GROUP BY worker"),
        columns=("worker", "seconds_since_flush"), window_s=86400, threshold=300, for_="2m", no_data="NoData",
        severity="high",
        summary="Worker {{ $labels.worker }} has not flushed a batch for {{ $values.A }} s",
        description="Check the worker process and its consumer group; see the Pipeline health dashboard."),
    RuleSpec(
        uid="spyglass-lag-not-draining", title="Spyglass consumer lag not draining", group="spyglass-pipeline",
        sql=("SELECT worker, topic, if(sum(events) = 0, max(lag), 0) AS stuck_lag\n"
             "FROM pipeline_health\n"
             "WHERE $__timeFilter(ts)\n"
             "GROUP BY worker, topic"),
        columns=("worker", "topic", "stuck_lag"), window_s=600, threshold=0, for_="5m", no_data="OK",
        severity="high",
        summary="{{ $labels.worker }} consumed nothing from {{ $labels.topic }} for 10 min with lag {{ $values.A }}",
        description="Records are waiting but the worker processes none: a stuck batch, a poison record or a "
                    "store outage. See the Pipeline health dashboard."),
)

TEMPLATE_TEXT = """\
{{ define "spyglass.title" }}[{{ .Status | toUpper }}] {{ .CommonLabels.alertname }}{{ end }}
{{ define "spyglass.message" }}{{ range .Alerts }}
{{ .Annotations.summary }}
severity: {{ .Labels.severity }}{{ if .Labels.tenant }} | tenant: {{ .Labels.tenant }}{{ end }}
{{ .Annotations.description }}
{{ if .DashboardURL }}dashboard: {{ .DashboardURL }}{{ end }}
{{ end }}{{ end }}
"""


def rule(r: RuleSpec) -> dict:
    """One rule in the provisioning format (also the body the HTTP provisioning API takes)."""
    return {
        "uid": r.uid,
        "title": r.title,
        "condition": "C",
        "data": [
            {"refId": "A", "relativeTimeRange": {"from": r.window_s, "to": 0}, "datasourceUid": DATASOURCE_UID,
             "model": {"datasource": {"type": DATASOURCE_TYPE, "uid": DATASOURCE_UID}, "editorType": "sql",
                       "format": FORMAT_TABLE, "queryType": "table", "rawSql": r.sql, "refId": "A"}},
            {"refId": "C", "datasourceUid": "__expr__",
             "model": {"type": "threshold", "expression": "A", "refId": "C",
                       "conditions": [{"evaluator": {"type": "gt", "params": [r.threshold]}}]}},
        ],
        "noDataState": r.no_data,
        "execErrState": "Error",
        "for": r.for_,
        "annotations": {"summary": r.summary, "description": r.description},
        "labels": {"severity": r.severity, "team": "spyglass-oncall"},
    }


def provisioning() -> dict:
    groups: dict[str, list[dict]] = {}
    for r in RULES:
        groups.setdefault(r.group, []).append(rule(r))
    return {
        "apiVersion": 1,
        "groups": [{"orgId": 1, "name": g, "folder": FOLDER, "interval": "1m", "rules": rules}
                   for g, rules in groups.items()],
        "contactPoints": [{"orgId": 1, "name": CONTACT_POINT, "receivers": [{
            "uid": "spyglass-oncall-webhook", "type": "webhook", "disableResolveMessage": False,
            # the on-call endpoint comes from Grafana's environment, never from the repository
            "settings": {"url": "${SPYGLASS_ONCALL_WEBHOOK_URL}", "httpMethod": "POST",
                         "title": '{{ template "spyglass.title" . }}',
                         "message": '{{ template "spyglass.message" . }}'}}]}],
        "templates": [{"orgId": 1, "name": TEMPLATE, "template": TEMPLATE_TEXT}],
        "policies": [{"orgId": 1, "receiver": CONTACT_POINT, "group_by": ["grafana_folder", "alertname"],
                      "group_wait": "30s", "group_interval": "5m", "repeat_interval": "4h"}],
    }


def alerting_yaml() -> str:
    head = ("# Generated by grafana/dashboards_src/alerting.py (python -m grafana.dashboards_src): do not edit.\n"
            "# Set SPYGLASS_ONCALL_WEBHOOK_URL in Grafana's environment to the on-call webhook.\n")
    return head + yaml.safe_dump(provisioning(), sort_keys=False, width=110, allow_unicode=True)
