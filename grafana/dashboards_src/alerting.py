"""Grafana alert rules for on-call, with their contact point and notification template, as provisioning YAML.

Two rule groups: Spyglass alerts to page (every open critical or high alert of the last week, one rule
instance per alert, labelled with its tenant, detector, severity, entity and id and annotated with its
explanation and investigation link; it fires until an analyst closes the alert, never by itself after a few
minutes) and pipeline stalls (a worker that stopped flushing, or lag that does not drain). They are sent to
Alertmanager (``SPYGLASS_ALERTMANAGER_URL`` in Grafana's environment), whose routing pages critical and sends
high to chat (streams/stack/alertmanager.yml); there a copy of an alert that ``spyglass notify`` delivered
too is inhibited by the notify one (``equal: [alert_id]``). Queries follow the same dialect rules as the
dashboards and are run by the same tests.
"""

from __future__ import annotations

from dataclasses import dataclass

import yaml

from .dashboards import INVESTIGATION_UID, NOT_CLOSED
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
    severity: str | None  # None: each instance's own, from the query's severity column
    summary: str
    description: str
    link: str | None = None  # an annotation: where to investigate


# the Grafana alert-investigation page of a rule instance's alert; the base URL comes from Grafana's environment
INVESTIGATE = ("${SPYGLASS_GRAFANA_URL}/d/" + INVESTIGATION_UID + "/alert-investigation"
               "?var-alert={{ $labels.alert_id }}&var-tenant={{ urlquery $labels.tenant }}")


RULES = (
    RuleSpec(
        uid="spyglass-critical-alert", title="Spyglass alert to page", group="spyglass-security",
        # one row (one rule instance) per open critical or high alert of the last week: it fires until an
        # analyst sets the alert's status, however long nobody looks
        sql=("SELECT alert_id, tenant, severity, detector, entity_type, entity,\n"
             "       substring(explanation, 1, 500) AS explanation, toUInt8(1) AS open_alert\n"
             "FROM alerts FINAL\n"
             f"WHERE severity IN ('critical', 'high') AND $__timeFilter(first_seen) AND {NOT_CLOSED}\n"
             "  AND mode = 'enforce' AND suppressed_by = ''"),  # shadow and suppressed alerts never page
        columns=("alert_id", "tenant", "severity", "detector", "entity_type", "entity", "explanation", "open_alert"),
        window_s=7 * 86400, threshold=0, for_="0s", no_data="OK", severity=None,
        summary="{{ $labels.severity }} {{ $labels.detector }} on {{ $labels.entity_type }} {{ $labels.entity }} "
                "in tenant {{ $labels.tenant }}",
        description="{{ $labels.explanation }}", link=INVESTIGATE),
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
severity: {{ .Labels.severity }}{{ if .Labels.tenant }} | tenant: {{ .Labels.tenant }}{{ end }}\
{{ if .Labels.entity }} | entity: {{ .Labels.entity_type }} {{ .Labels.entity }}{{ end }}
{{ .Annotations.description }}
{{ if .Annotations.investigate }}investigate: {{ .Annotations.investigate }}\
{{ else if .DashboardURL }}dashboard: {{ .DashboardURL }}{{ end }}
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
        "annotations": {"summary": r.summary, "description": r.description,
                        **({"investigate": r.link} if r.link else {})},
        # source: Alertmanager inhibits this copy of an alert that spyglass notify delivered itself
        "labels": {**({"severity": r.severity} if r.severity else {}), "team": "spyglass-oncall",
                   "source": "grafana"},
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
            # Alertmanager routes (critical pages, high to chat, grouping, inhibition, silences); its address
            # comes from Grafana's environment, never from the repository
            "uid": "spyglass-oncall-alertmanager", "type": "prometheus-alertmanager", "disableResolveMessage": False,
            "settings": {"url": "${SPYGLASS_ALERTMANAGER_URL}"}}]}],
        # for a contact point that formats messages itself (e-mail, Slack) instead of Alertmanager
        "templates": [{"orgId": 1, "name": TEMPLATE, "template": TEMPLATE_TEXT}],
        "policies": [{"orgId": 1, "receiver": CONTACT_POINT,
                      "group_by": ["grafana_folder", "alertname", "tenant", "entity"],
                      "group_wait": "30s", "group_interval": "5m", "repeat_interval": "4h"}],
    }


def alerting_yaml() -> str:
    head = ("# Generated by grafana/dashboards_src/alerting.py (python -m grafana.dashboards_src): do not edit.\n"
            "# Set SPYGLASS_ALERTMANAGER_URL (Alertmanager) and SPYGLASS_GRAFANA_URL (its own base URL, for\n"
            "# the investigation links) in Grafana's environment.\n")
    return head + yaml.safe_dump(provisioning(), sort_keys=False, width=110, allow_unicode=True)
